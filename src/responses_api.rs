//! OpenAI's Responses API answered whole (the `responses` sub-action without `"stream": true`):
//! the response object is passed through as `data`, its usage read from `usage.input_tokens`,
//! `output_tokens` and `total_tokens` (input → prompt, output → completion), and, when it has
//! none, its output text and function calls are what a usage estimate counts.
//!
//! Points fixed here (chosen):
//! - The body must be a JSON object (as C69 says of chat completions); nothing else of its
//!   shape is checked, so that new fields and item types pass through.
//! - Usage is reported when `usage` is an object with numeric `input_tokens` and
//!   `output_tokens`; `total_tokens` is their sum when it is not a number. Counts are read as
//!   whole numbers (fractions dropped, negatives 0), as for chat.
//! - The output text is the `text` of every `output_text` part of every `message` item, back to
//!   back; `refusal` parts count as text too. A function call is a `function_call` item's
//!   `call_id`, `name` and `arguments` (each `""` when missing or not a string).

use crate::json::Value;
use crate::response::{self, number_to_count};
use crate::usage::TokenUsage;

/// One function call of a response's output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionCall {
    /// `call_id`: what the `function_call_output` answering it names.
    pub call_id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, JSON text as the model wrote it.
    pub arguments: String,
}

/// What a response produced: its text and function calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The output text, every text part back to back.
    pub text: String,
    /// The function calls, in output order.
    pub calls: Vec<FunctionCall>,
}

/// Maps a 2xx Responses API body: the response object as received and its usage (`reported`,
/// else `unavailable`: the caller estimates it). The error is the service message of a body
/// that is not a JSON object.
pub(crate) fn map(body: &[u8]) -> Result<(Value, TokenUsage), String> {
    response::object_with_usage(body, reported_usage)
}

/// The usage a Responses API `usage` object reports, if it reports one.
pub(crate) fn reported_usage(usage: &Value) -> Option<TokenUsage> {
    usage_from(|key| match usage.get(key) {
        Some(Value::Number(n)) => Some(number_to_count(n)),
        _ => None,
    })
}

/// The usage of a `usage` object whose numeric members `count` reads (`None`: missing or not
/// a number): `input_tokens` and `output_tokens` are required, `total_tokens` defaults to
/// their sum. Whole responses and streams ([`crate::responses_stream`]) read usage with it.
pub(crate) fn usage_from(count: impl Fn(&str) -> Option<u64>) -> Option<TokenUsage> {
    let (input, output) = (count("input_tokens")?, count("output_tokens")?);
    let total = count("total_tokens").unwrap_or(input.saturating_add(output));
    Some(TokenUsage::reported(input, output, total))
}

/// The output text and function calls of a response object.
pub(crate) fn output_of(response: &Value) -> Output {
    let mut output = Output::default();
    let items = response.get("output").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let parts = item.get("content").and_then(Value::as_array);
                for part in parts.into_iter().flatten() {
                    let key = match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => "text",
                        Some("refusal") => "refusal",
                        _ => continue,
                    };
                    output.text.push_str(str_member(part, key));
                }
            }
            Some("function_call") => output.calls.push(FunctionCall {
                call_id: str_member(item, "call_id").to_owned(),
                name: str_member(item, "name").to_owned(),
                arguments: str_member(item, "arguments").to_owned(),
            }),
            _ => {}
        }
    }
    output
}

fn str_member<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::UsageSource;

    const RESPONSE: &str = r#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14",
        "output":[
          {"type":"reasoning","id":"rs_1","summary":[]},
          {"type":"message","id":"msg_1","role":"assistant","content":[
            {"type":"output_text","text":"Hello","annotations":[]},
            {"type":"output_text","text":" world","annotations":[]}]},
          {"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"}],
        "usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":7,"total_tokens":19}}"#;

    #[test]
    fn usage_input_and_output_tokens_are_prompt_and_completion() {
        let (data, usage) = map(RESPONSE.as_bytes()).unwrap();
        assert_eq!(usage, TokenUsage::reported(12, 7, 19));
        // Passed through as received.
        assert_eq!(data, Value::parse(RESPONSE.as_bytes()).unwrap());
    }

    #[test]
    fn usage_total_defaults_to_the_sum_and_partial_usage_is_not_reported() {
        let (_, usage) = map(br#"{"usage":{"input_tokens":3,"output_tokens":4.9}}"#).unwrap();
        assert_eq!(usage, TokenUsage::reported(3, 4, 7));
        for body in [
            r#"{"output":[]}"#,
            r#"{"usage":null}"#,
            r#"{"usage":{"input_tokens":3}}"#,
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            r#"{"usage":{"input_tokens":"3","output_tokens":4}}"#,
        ] {
            let (_, usage) = map(body.as_bytes()).unwrap();
            assert_eq!(usage.source, UsageSource::Unavailable, "{body}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_invalid() {
        for (body, got) in [("not json", "string"), ("[]", "Array"), ("null", "null")] {
            assert_eq!(
                map(body.as_bytes()).unwrap_err(),
                format!(
                    "Response validation failed (expected value of type [object] but got [{got}])"
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn output_text_and_function_calls() {
        let response = Value::parse(RESPONSE.as_bytes()).unwrap();
        assert_eq!(
            output_of(&response),
            Output {
                text: "Hello world".to_owned(),
                calls: vec![FunctionCall {
                    call_id: "call_1".to_owned(),
                    name: "get_weather".to_owned(),
                    arguments: r#"{"city":"Paris"}"#.to_owned(),
                }],
            }
        );
        let odd = br#"{"output":[{"type":"message","content":[{"type":"refusal","refusal":"No."},{"type":"input_image"},{"text":"untyped"}]},{"type":"function_call","name":7},"x"]}"#;
        assert_eq!(
            output_of(&Value::parse(odd).unwrap()),
            Output {
                text: "No.".to_owned(),
                calls: vec![FunctionCall::default()],
            }
        );
        assert_eq!(output_of(&Value::parse(b"{}").unwrap()), Output::default());
    }
}
