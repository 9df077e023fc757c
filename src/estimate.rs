//! What a token estimate is computed from (contract section 7, C110–C112).
//!
//! When a streaming execution got no usage chunk from the provider (C109), the usage is
//! estimated: the component chooses the encoding and builds the prompt and completion texts
//! here; the host counts their tokens (the vocabularies are too large to ship in the component).
//!
//! Points the contract leaves open and this module fixes (chosen):
//! - A `model` that is not a string counts as absent, like an empty one.
//! - `messages` that is not an array counts as "no `messages`" (C112: empty prompt text, tools
//!   and functions included); an empty array is a body *with* messages, so its tools and
//!   functions are still counted.
//! - A message without a string `role` has the empty role; a message that is not an object has
//!   an empty role and text, and still counts as a message.
//! - In a content array, every element with a string `text` member contributes it; other parts
//!   (images, audio) contribute nothing.
//! - A `tools` entry counts when its `function` member is an object, a `functions` entry when it
//!   is an object itself. A missing or non-string `name` or `description` is empty; a missing
//!   `parameters` is empty (not `null`).

use crate::chat_stream::ChatStream;
use crate::json::Value;
use crate::responses_api::FunctionCall;

/// A tiktoken encoding that estimates use (C110).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the `o` series and gpt-oss.
    O200kBase,
    /// `cl100k_base`: everything else, including no model at all.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's tiktoken name, as the host's tokenizer and the event log know it (C117).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }
}

/// Model name prefixes (after the last `/`, lower-cased) that select `o200k_base` (C110).
const O200K_PREFIXES: [&str; 9] = [
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "gpt-oss",
];

/// The encoding for a model (C110): the name after its last `/`, lower-cased, is matched
/// against the `o200k_base` prefixes; anything else, and no model, is `cl100k_base`.
///
/// ```
/// use openai_connector::estimate::{encoding_for_model, Encoding};
///
/// assert_eq!(encoding_for_model(Some("openai/GPT-4o-mini")), Encoding::O200kBase);
/// assert_eq!(encoding_for_model(Some("gpt-4")), Encoding::Cl100kBase);
/// assert_eq!(encoding_for_model(None), Encoding::Cl100kBase);
/// ```
pub fn encoding_for_model(model: Option<&str>) -> Encoding {
    let Some(model) = model else {
        return Encoding::Cl100kBase;
    };
    let name = model.rsplit('/').next().unwrap_or(model).to_lowercase();
    if O200K_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
        Encoding::O200kBase
    } else {
        Encoding::Cl100kBase
    }
}

/// The prompt text of a sent body (C111, C112): for each message
/// `<|start|>` + role + `\n` + text + `<|end|>`, joined with `\n`; then for each function in
/// `tools` and each entry of `functions`
/// `\n<|start|>` + name + `\n` + description + `\n` + compact JSON of `parameters` + `<|end|>`.
/// A body that is not JSON or has no `messages` array gives the empty text.
///
/// ```
/// use openai_connector::estimate::prompt_text;
///
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
/// assert_eq!(prompt_text(body), "<|start|>user\nHi<|end|>");
/// assert_eq!(prompt_text(b"not json"), "");
/// ```
pub fn prompt_text(sent_body: &[u8]) -> String {
    match Value::parse(sent_body) {
        Ok(body) => prompt_text_of(&body),
        Err(_) => String::new(),
    }
}

/// Everything the host needs to count an estimate (C110–C112).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstimationInput {
    /// The encoding chosen from the model (C110).
    pub encoding: Encoding,
    /// The prompt text (C111).
    pub prompt_text: String,
    /// The completion text (C111).
    pub completion_text: String,
}

impl EstimationInput {
    /// The estimate input for a stream that carried no usage chunk (C110, C111, C113):
    /// `sent_body` is the request body as sent, `stream` what was decoded of the response
    /// (complete or not), `default_model` the config `defaultModel`. The body is parsed once.
    pub(crate) fn from_stream(
        sent_body: &[u8],
        stream: &ChatStream,
        default_model: Option<&str>,
    ) -> Self {
        let body = Value::parse(sent_body).ok();
        let model = model_choice(body.as_ref(), stream.first_model(), default_model);
        EstimationInput {
            encoding: encoding_for_model(model),
            prompt_text: body.as_ref().map(prompt_text_of).unwrap_or_default(),
            completion_text: stream.completion_text(),
        }
    }
}

impl EstimationInput {
    /// The estimate input for a `responses` call that reported no usage (a whole response, or
    /// what arrived of a stream): `sent_body` is the request body as sent, `output_text` and
    /// `calls` what the response produced, `response_model` the model it names. The model is chosen as C110
    /// says; the prompt text is [`responses_prompt_text`]'s; the completion text is the output
    /// text, then `\n` + name + `\n` + arguments for each function call (as C111 counts tool
    /// calls).
    pub(crate) fn from_responses(
        sent_body: &[u8],
        output_text: &str,
        calls: &[FunctionCall],
        response_model: Option<&str>,
        default_model: Option<&str>,
    ) -> Self {
        let body = Value::parse(sent_body).ok();
        let model = model_choice(body.as_ref(), response_model, default_model);
        let mut completion_text = output_text.to_owned();
        for call in calls {
            completion_text.push('\n');
            completion_text.push_str(&call.name);
            completion_text.push('\n');
            completion_text.push_str(&call.arguments);
        }
        EstimationInput {
            encoding: encoding_for_model(model),
            prompt_text: body
                .as_ref()
                .map(responses_prompt_text_of)
                .unwrap_or_default(),
            completion_text,
        }
    }
}

/// The prompt text of a Responses API request body, in C111's form (chosen, since C111 speaks
/// of chat messages): `instructions` as a `system` message, then `input`, a string as a `user`
/// message or each item of an array: a message (an item with a `role`) as its role and text
/// (a string `content`, or the `text` members of its parts joined with `\n`), a
/// `function_call` as an `assistant` message of its name and arguments on two lines, a
/// `function_call_output` as a `tool` message of its `output` string; other items count
/// nothing. Messages are joined with `\n`; then each `function` tool as C111 counts tools
/// (`\n<|start|>` + name + `\n` + description + `\n` + compact JSON of `parameters` +
/// `<|end|>`). A body that is not JSON gives the empty text.
///
/// ```
/// use openai_connector::estimate::responses_prompt_text;
///
/// let body = br#"{"model":"gpt-4.1","instructions":"Be brief.","input":"Hi"}"#;
/// assert_eq!(
///     responses_prompt_text(body),
///     "<|start|>system\nBe brief.<|end|>\n<|start|>user\nHi<|end|>"
/// );
/// ```
pub fn responses_prompt_text(sent_body: &[u8]) -> String {
    match Value::parse(sent_body) {
        Ok(body) => responses_prompt_text_of(&body),
        Err(_) => String::new(),
    }
}

fn responses_prompt_text_of(body: &Value) -> String {
    let mut text = String::new();
    let mut message = |role: &str, content: &mut dyn FnMut(&mut String)| {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str("<|start|>");
        text.push_str(role);
        text.push('\n');
        content(&mut text);
        text.push_str("<|end|>");
    };
    if let Some(instructions) = body.get("instructions").and_then(Value::as_str) {
        message("system", &mut |out| out.push_str(instructions));
    }
    match body.get("input") {
        Some(Value::String(input)) => message("user", &mut |out| out.push_str(input)),
        Some(Value::Array(items)) => {
            for item in items {
                let kind = item.get("type").and_then(Value::as_str);
                if let Some(role) = item.get("role").and_then(Value::as_str) {
                    message(role, &mut |out| push_message_text(item.get("content"), out));
                } else if kind == Some("function_call") {
                    message("assistant", &mut |out| {
                        out.push_str(str_member(item, "name"));
                        out.push('\n');
                        out.push_str(str_member(item, "arguments"));
                    });
                } else if kind == Some("function_call_output") {
                    message("tool", &mut |out| out.push_str(str_member(item, "output")));
                }
            }
        }
        _ => {}
    }
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for tool in tools.filter(|t| t.get("type").and_then(Value::as_str) == Some("function")) {
        text.push_str("\n<|start|>");
        text.push_str(str_member(tool, "name"));
        text.push('\n');
        text.push_str(str_member(tool, "description"));
        text.push('\n');
        if let Some(parameters) = tool.get("parameters") {
            parameters.write_json(&mut text);
        }
        text.push_str("<|end|>");
    }
    text
}

/// C110's order of choice, over an already parsed body.
fn model_choice<'a>(
    body: Option<&'a Value>,
    stream_model: Option<&'a str>,
    default_model: Option<&'a str>,
) -> Option<&'a str> {
    let sent = body.and_then(|b| b.get("model")).and_then(Value::as_str);
    [sent, stream_model, default_model]
        .into_iter()
        .flatten()
        .find(|model| !model.is_empty())
}

/// C111's prompt text over an already parsed body (empty without a `messages` array, C112).
fn prompt_text_of(body: &Value) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let mut text = String::new();
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str("<|start|>");
        text.push_str(str_member(message, "role"));
        text.push('\n');
        push_message_text(message.get("content"), &mut text);
        text.push_str("<|end|>");
    }
    let tool_functions = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| tool.get("function"));
    let legacy_functions = body
        .get("functions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for function in tool_functions.chain(legacy_functions) {
        if function.as_object().is_none() {
            continue;
        }
        text.push_str("\n<|start|>");
        text.push_str(str_member(function, "name"));
        text.push('\n');
        text.push_str(str_member(function, "description"));
        text.push('\n');
        if let Some(parameters) = function.get("parameters") {
            parameters.write_json(&mut text);
        }
        text.push_str("<|end|>");
    }
    text
}

/// A message's text (C111): the string content, the `text` members of a content array joined
/// with `\n`, or nothing.
fn push_message_text(content: Option<&Value>, out: &mut String) {
    match content {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(parts)) => {
            let texts = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str));
            for (i, part) in texts.enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(part);
            }
        }
        _ => {}
    }
}

/// The string member `key` of `value`, or `""`.
fn str_member<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model an estimate is made for (C110), as [`EstimationInput::from_stream`] picks it.
    fn estimation_model(
        sent_body: &[u8],
        stream_model: Option<&str>,
        default_model: Option<&str>,
    ) -> Option<String> {
        let body = Value::parse(sent_body).ok();
        model_choice(body.as_ref(), stream_model, default_model).map(str::to_owned)
    }

    fn enc(model: &str) -> Encoding {
        encoding_for_model(Some(model))
    }

    // C110: every row of the table.
    #[test]
    fn o200k_prefixes() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4o-2024-08-06",
            "chatgpt-4o-latest",
            "gpt-4.1",
            "gpt-4.1-nano",
            "gpt-4.5-preview",
            "gpt-5",
            "gpt-5-mini",
            "o1",
            "o1-preview",
            "o3-mini",
            "o4-mini",
            "gpt-oss-20b",
            "gpt-oss-120b",
        ] {
            assert_eq!(enc(model), Encoding::O200kBase, "{model}");
        }
    }

    // C110: "anything else", including gpt-4, gpt-3.5, gpt-35, non-OpenAI models, no model.
    #[test]
    fn cl100k_for_everything_else() {
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-32k",
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "llama3",
            "mistral-large",
            "claude-3-5-sonnet",
            "text-davinci-003",
            "",
            "openai/",
        ] {
            assert_eq!(enc(model), Encoding::Cl100kBase, "{model:?}");
        }
        assert_eq!(encoding_for_model(None), Encoding::Cl100kBase);
    }

    // C110: the name after the last `/`, lower-cased.
    #[test]
    fn name_after_last_slash_lower_cased() {
        assert_eq!(enc("openai/gpt-4o-mini"), Encoding::O200kBase);
        assert_eq!(enc("GPT-4.1"), Encoding::O200kBase);
        assert_eq!(enc("Azure/OpenAI/O3"), Encoding::O200kBase);
        assert_eq!(enc("gpt-4o/llama3"), Encoding::Cl100kBase);
        assert_eq!(enc("meta/GPT-4"), Encoding::Cl100kBase);
        // Prefix match on the whole name, not a substring search.
        assert_eq!(enc("my-gpt-4o"), Encoding::Cl100kBase);
    }

    // C110, C117: tokenizer names.
    #[test]
    fn encoding_names() {
        assert_eq!(Encoding::O200kBase.as_str(), "o200k_base");
        assert_eq!(Encoding::Cl100kBase.as_str(), "cl100k_base");
    }

    // C110: model choice order.
    #[test]
    fn model_choice_order() {
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        assert_eq!(
            estimation_model(body, Some("llama3"), Some("gpt-4.1")).as_deref(),
            Some("gpt-4o")
        );
        for body in [
            &br#"{"model":"","messages":[]}"#[..],
            br#"{"messages":[]}"#,
            br#"{"model":null}"#,
            br#"{"model":42}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(
                estimation_model(body, Some("llama3"), Some("gpt-4.1")).as_deref(),
                Some("llama3")
            );
            assert_eq!(
                estimation_model(body, Some(""), Some("gpt-4.1")).as_deref(),
                Some("gpt-4.1")
            );
            assert_eq!(
                estimation_model(body, None, Some("gpt-4.1")).as_deref(),
                Some("gpt-4.1")
            );
            assert_eq!(estimation_model(body, None, Some("")), None);
            assert_eq!(estimation_model(body, None, None), None);
        }
    }

    // C111: string content; messages joined with `\n`.
    #[test]
    fn prompt_with_string_content() {
        let body = br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}]}"#;
        assert_eq!(
            prompt_text(body),
            "<|start|>system\nBe brief.<|end|>\n<|start|>user\nHello<|end|>"
        );
    }

    // C111: `text` members of a content array joined with `\n`; other parts contribute nothing.
    #[test]
    fn prompt_with_content_array() {
        let body = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"https://example.invalid/a.png"}},{"type":"text","text":"two"}]}]}"#;
        assert_eq!(prompt_text(body), "<|start|>user\none\ntwo<|end|>");
        let empty = br#"{"messages":[{"role":"user","content":[]}]}"#;
        assert_eq!(prompt_text(empty), "<|start|>user\n<|end|>");
    }

    // C111: missing, null or other content is empty; a missing role is empty.
    #[test]
    fn prompt_with_missing_content() {
        let body = br#"{"messages":[{"role":"assistant","tool_calls":[]},{"role":"assistant","content":null},{"content":"x"},{"role":"user","content":7},"odd"]}"#;
        assert_eq!(
            prompt_text(body),
            "<|start|>assistant\n<|end|>\n<|start|>assistant\n<|end|>\n<|start|>\nx<|end|>\n<|start|>user\n<|end|>\n<|start|>\n<|end|>"
        );
    }

    // C111: tools with description and parameters as compact JSON (exact number spelling, D12).
    #[test]
    fn prompt_with_tools() {
        let body = br#"{"messages":[{"role":"user","content":"Weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather","parameters":{ "type" : "object", "properties":{"city":{"type":"string"},"n":{"type":"number","maximum":1e2}}}}},{"type":"function","function":{"name":"now"}},{"type":"other"}]}"#;
        assert_eq!(
            prompt_text(body),
            "<|start|>user\nWeather?<|end|>\
             \n<|start|>get_weather\nCurrent weather\n{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"n\":{\"type\":\"number\",\"maximum\":1e2}}}<|end|>\
             \n<|start|>now\n\n<|end|>"
        );
    }

    // C111: legacy `functions`, after the tools.
    #[test]
    fn prompt_with_legacy_functions() {
        let body = br#"{"functions":[{"name":"f","description":"d","parameters":{}},"skip"],"tools":[{"function":{"name":"t","parameters":null}}],"messages":[{"role":"user","content":"q"}]}"#;
        assert_eq!(
            prompt_text(body),
            "<|start|>user\nq<|end|>\n<|start|>t\n\nnull<|end|>\n<|start|>f\nd\n{}<|end|>"
        );
    }

    // C112: not JSON or no `messages` → empty prompt text, tools included.
    #[test]
    fn prompt_empty_without_messages() {
        assert_eq!(prompt_text(b"not json"), "");
        assert_eq!(prompt_text(b""), "");
        assert_eq!(prompt_text(br#"{"prompt":"hi"}"#), "");
        assert_eq!(
            prompt_text(br#"{"tools":[{"function":{"name":"t"}}],"functions":[{"name":"f"}]}"#),
            ""
        );
        assert_eq!(prompt_text(br#"{"messages":"hi"}"#), "");
        assert_eq!(prompt_text(br#"[{"role":"user","content":"hi"}]"#), "");
        // An empty `messages` array is still a body with messages.
        assert_eq!(
            prompt_text(br#"{"messages":[],"functions":[{"name":"f"}]}"#),
            "\n<|start|>f\n\n<|end|>"
        );
    }

    // C112: special-token strings inside content are passed through as text.
    #[test]
    fn prompt_keeps_special_token_strings() {
        let body = br#"{"messages":[{"role":"user","content":"<|endoftext|><|end|>"}]}"#;
        assert_eq!(
            prompt_text(body),
            "<|start|>user\n<|endoftext|><|end|><|end|>"
        );
    }

    #[test]
    fn responses_prompt_text_counts_instructions_input_items_and_function_tools() {
        let body = br#"{"model":"gpt-4.1","instructions":"Be brief.","input":[
            {"role":"user","content":"Weather in Paris?"},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"one"},{"type":"input_image","image_url":"x"},{"type":"input_text","text":"two"}]},
            {"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
            {"type":"function_call_output","call_id":"c1","output":"18C"},
            {"type":"reasoning","summary":[]},
            "odd"],
          "tools":[{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object"}},{"type":"web_search"}]}"#;
        assert_eq!(
            responses_prompt_text(body),
            "<|start|>system\nBe brief.<|end|>\n<|start|>user\nWeather in Paris?<|end|>\n<|start|>user\none\ntwo<|end|>\n<|start|>assistant\nget_weather\n{\"city\":\"Paris\"}<|end|>\n<|start|>tool\n18C<|end|>\n<|start|>get_weather\nWeather\n{\"type\":\"object\"}<|end|>"
        );
        assert_eq!(
            responses_prompt_text(br#"{"input":"Hi"}"#),
            "<|start|>user\nHi<|end|>"
        );
        assert_eq!(responses_prompt_text(b"not json"), "");
        assert_eq!(responses_prompt_text(b"{}"), "");
    }

    #[test]
    fn responses_estimate_counts_output_text_then_calls_and_picks_the_model() {
        let calls = [FunctionCall {
            call_id: "c".to_owned(),
            name: "f".to_owned(),
            arguments: "{}".to_owned(),
        }];
        let input = EstimationInput::from_responses(
            br#"{"input":"Hi"}"#,
            "Hello",
            &calls,
            Some("gpt-4o-2024-08-06"),
            Some("gpt-4"),
        );
        assert_eq!(
            input,
            EstimationInput {
                encoding: Encoding::O200kBase,
                prompt_text: "<|start|>user\nHi<|end|>".to_owned(),
                completion_text: "Hello\nf\n{}".to_owned(),
            }
        );
        let input = EstimationInput::from_responses(
            br#"{"model":"gpt-4","input":"Hi"}"#,
            "",
            &[],
            Some("gpt-4o"),
            None,
        );
        assert_eq!(input.encoding, Encoding::Cl100kBase);
    }

    // C110, C111, C113: the combined input from a (possibly partial) stream.
    #[test]
    fn input_from_stream() {
        let body = br#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
        let mut stream = ChatStream::new();
        stream
            .push(r#"{"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#)
            .unwrap();
        stream
            .push(r#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#)
            .unwrap();
        let input = EstimationInput::from_stream(body, &stream, Some("gpt-4"));
        assert_eq!(
            input,
            EstimationInput {
                encoding: Encoding::O200kBase,
                prompt_text: "<|start|>user\nHi<|end|>".to_owned(),
                completion_text: "Hello".to_owned(),
            }
        );

        let empty = ChatStream::new();
        let input = EstimationInput::from_stream(b"{}", &empty, Some("gpt-4"));
        assert_eq!(input.encoding, Encoding::Cl100kBase);
        assert_eq!(input.prompt_text, "");
        assert_eq!(input.completion_text, "");

        let body = br#"{"model":"gpt-5","messages":[]}"#;
        let input = EstimationInput::from_stream(body, &stream, Some("gpt-4"));
        assert_eq!(input.encoding, Encoding::O200kBase);
    }
}
