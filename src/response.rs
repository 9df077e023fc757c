//! Responses and error mapping (contract C39–C40, C69–C78, C32, C107–C108).
//!
//! - [`map_success`]: a non-streaming 2xx body → the execution's `data` and its usage.
//! - [`http_error_message`]: a non-2xx response → `Status code: <code>. Message: <detail>`.
//! - [`transport_error_message`]: a failure without a response (C74).
//! - [`crate::failure`] renders every message of C70–C74 into a typed failure (C75, C32).
//!
//! All messages here fail an execution with `retry: true` (C77); only params failures
//! ([`crate::params::ParamsError`]) carry `retry: false`.

use crate::json::{Number, Object, Value};
use crate::params::{Api, SubAction};
use crate::schema::{Expected, Problem, join_path, join_problems};
use crate::usage::TokenUsage;

/// `invokeAI`'s message when the response has no usable content (C39).
pub(crate) const UNRECOGNIZED_FORMAT_MESSAGE: &str = "An error occurred sending your message. \n\nAPI Error: The response from OpenAI was in an unrecognized format.";

/// The error text that marks an Azure `api-version` without function support (C73).
const AZURE_FUNCTIONS_ERROR: &str = "Unrecognized request argument supplied: functions";

/// The detail that replaces it (C73), white space exact.
const AZURE_FUNCTIONS_DETAIL: &str = "API Error: 404 Unrecognized request argument supplied: functions\n        \n\nFunction support with Azure OpenAI API was added in 2023-07-01-preview. Update the API version of the Azure OpenAI connector in use\n      ";

/// Maps a non-streaming 2xx response body to the execution's `data` and usage.
///
/// The body is validated by C69. `run`, `test` and `stream` (with `stream:false`) return the
/// response object as received (C40); `invokeAI` returns `{"message", "usage"}` (C39). The
/// usage is `reported` when the response has a `usage` object, else `unavailable` (C107,
/// C108). The streaming Invoke sub-actions, should they get a plain JSON answer (C115), are
/// treated like `run`.
///
/// The error is the service message `Response validation failed (<problems>)`, every problem
/// listed in the order of C69's table; it names fields and types, never values.
///
/// `responses` and `embeddings` are mapped by [`crate::responses_api`] and
/// [`crate::embeddings`].
pub fn map_success(sub_action: SubAction, body: &[u8]) -> Result<(Value, TokenUsage), String> {
    match sub_action.api() {
        Api::Responses => return crate::responses_api::map(body),
        Api::Embeddings => return crate::embeddings::map(body),
        Api::ChatCompletions => {}
    }
    // Not JSON at all reads as a string that is not an object (C69).
    let response = Value::parse(body).unwrap_or(Value::String(String::new()));
    let problems = validate_response(&response);
    if !problems.is_empty() {
        return Err(format!(
            "Response validation failed ({})",
            join_problems(&problems)
        ));
    }
    let usage = reported_usage(&response);
    let data = if sub_action == SubAction::InvokeAi {
        invoke_ai_data(&response)
    } else {
        response
    };
    Ok((data, usage))
}

/// The usage of a validated response: its `usage` numbers as `reported`, or `unavailable` when
/// it has none (C107, C108). Counts that are not non-negative integers are read as whole
/// numbers (fractions dropped, negatives 0).
pub(crate) fn reported_usage(response: &Value) -> TokenUsage {
    let Some(usage) = response.get("usage").and_then(Value::as_object) else {
        return TokenUsage::UNAVAILABLE;
    };
    let count = |key: &str| match usage.get(key) {
        Some(Value::Number(n)) => number_to_count(n),
        _ => 0,
    };
    TokenUsage::reported(
        count("prompt_tokens"),
        count("completion_tokens"),
        count("total_tokens"),
    )
}

/// A body that must be a JSON object, parsed; the error is the service message
/// `Response validation failed (expected value of type [object] but got [<type>])` (C69's
/// wording; not JSON at all reads as a string).
pub(crate) fn json_object(body: &[u8]) -> Result<Value, String> {
    match Value::parse(body).unwrap_or(Value::String(String::new())) {
        object @ Value::Object(_) => Ok(object),
        other => Err(format!(
            "Response validation failed ({})",
            Problem::wrong_type("", Expected::Object, &other)
        )),
    }
}

/// A 2xx body that must be a JSON object, as received, with the usage `reported` reads from
/// its `usage` member (`unavailable` without one): the Responses API and embeddings.
pub(crate) fn object_with_usage(
    body: &[u8],
    reported: fn(&Value) -> Option<TokenUsage>,
) -> Result<(Value, TokenUsage), String> {
    let response = json_object(body)?;
    let usage = response
        .get("usage")
        .and_then(reported)
        .unwrap_or(TokenUsage::UNAVAILABLE);
    Ok((response, usage))
}

/// A usage count read as a whole number: fractions dropped, negatives 0, saturating.
pub(crate) fn number_to_count(n: &Number) -> u64 {
    n.as_u64().unwrap_or_else(|| {
        let f = n.as_f64();
        if f.is_nan() || f <= 0.0 {
            0
        } else {
            // `as` saturates for values beyond u64.
            f.floor() as u64
        }
    })
}

/// `{"message": M, "usage": U}` of C39.
fn invoke_ai_data(response: &Value) -> Value {
    let content = response
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .and_then(|choice| choice.get("message"))
        .and_then(|message| message.get("content"))
        .and_then(Value::as_str)
        .filter(|content| !content.is_empty());
    let message = match content {
        Some(content) => js_trim(content).to_owned(),
        None => UNRECOGNIZED_FORMAT_MESSAGE.to_owned(),
    };
    let usage = match response.get("usage") {
        Some(usage @ Value::Object(_)) => usage.clone(),
        _ => {
            let mut zeros = Object::default();
            for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
                zeros.insert(key.to_owned(), Value::from(0u64));
            }
            Value::Object(zeros)
        }
    };
    let mut data = Object::default();
    data.insert("message".to_owned(), Value::String(message));
    data.insert("usage".to_owned(), usage);
    Value::Object(data)
}

/// Trims `s` as JavaScript's `String.prototype.trim` does: ECMAScript white space (tab, VT,
/// FF, space, U+00A0, U+FEFF, Unicode `Zs`) and line terminators (LF, CR, U+2028, U+2029).
/// U+0085 and U+180E are not trimmed (C39).
pub(crate) fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_white_space)
}

fn is_js_white_space(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{B}' | '\u{C}' | '\u{D}' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// The response schema of C69. Unknown keys are allowed at every level and kept.
fn validate_response(response: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let Value::Object(obj) = response else {
        out.push(Problem::wrong_type("", Expected::Object, response));
        return out;
    };
    match obj.get("choices") {
        None => out.push(Problem::missing("choices", Expected::Array)),
        Some(Value::Array(choices)) => {
            for (i, choice) in choices.iter().enumerate() {
                check_choice(choice, &join_path("choices", &i.to_string()), &mut out);
            }
        }
        Some(other) => out.push(Problem::wrong_type("choices", Expected::Array, other)),
    }
    match obj.get("usage") {
        None | Some(Value::Null) => {}
        Some(Value::Object(usage)) => {
            for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
                let path = join_path("usage", key);
                match usage.get(key) {
                    None => out.push(Problem::missing(path, Expected::Number)),
                    Some(Value::Number(_)) => {}
                    Some(other) => out.push(Problem::wrong_type(path, Expected::Number, other)),
                }
            }
        }
        Some(other) => out.push(Problem::wrong_type("usage", Expected::Object, other)),
    }
    for key in ["id", "object", "model"] {
        optional(obj, key, "", Expected::String, &mut out);
    }
    optional(obj, "created", "", Expected::Number, &mut out);
    out
}

/// One element of `choices` (C69).
fn check_choice(choice: &Value, path: &str, out: &mut Vec<Problem>) {
    let Value::Object(choice) = choice else {
        out.push(Problem::wrong_type(path, Expected::Object, choice));
        return;
    };
    let message_path = join_path(path, "message");
    match choice.get("message") {
        None => out.push(Problem::missing(message_path, Expected::Object)),
        Some(Value::Object(message)) => {
            match message.get("role") {
                None => out.push(Problem::missing(
                    join_path(&message_path, "role"),
                    Expected::String,
                )),
                Some(Value::String(_)) => {}
                Some(other) => out.push(Problem::wrong_type(
                    join_path(&message_path, "role"),
                    Expected::String,
                    other,
                )),
            }
            match message.get("content") {
                None | Some(Value::Null | Value::String(_)) => {}
                Some(other) => out.push(Problem::wrong_type(
                    join_path(&message_path, "content"),
                    Expected::String,
                    other,
                )),
            }
        }
        Some(other) => out.push(Problem::wrong_type(message_path, Expected::Object, other)),
    }
    optional(choice, "finish_reason", path, Expected::String, out);
    optional(choice, "index", path, Expected::Number, out);
}

/// An optional field of a simple type; `null` is a wrong type (C3).
fn optional(obj: &Object, key: &str, parent: &str, expected: Expected, out: &mut Vec<Problem>) {
    let Some(value) = obj.get(key) else {
        return;
    };
    let ok = match expected {
        Expected::String => matches!(value, Value::String(_)),
        Expected::Number => matches!(value, Value::Number(_)),
        Expected::Boolean => matches!(value, Value::Bool(_)),
        Expected::Object => matches!(value, Value::Object(_)),
        Expected::Array => matches!(value, Value::Array(_)),
    };
    if !ok {
        out.push(Problem::wrong_type(join_path(parent, key), expected, value));
    }
}

/// The message for an HTTP error response (C70–C73), rendered by [`crate::failure`].
pub(crate) fn http_error_message(status: u16, body: &[u8]) -> String {
    let text = error_text(body);
    let detail = match (status, text.as_deref()) {
        (404, Some(AZURE_FUNCTIONS_ERROR)) => AZURE_FUNCTIONS_DETAIL.to_owned(),
        _ => {
            let head = if status == 401 {
                "Unauthorized API Error".to_owned()
            } else {
                format!("API Error: {}", reason_phrase(status).unwrap_or("Unknown"))
            };
            match text {
                Some(text) => format!("{head} - {text}"),
                None => head,
            }
        }
    };
    format!("Status code: {status}. Message: {detail}")
}

/// The error text E of C71, from the body's `error` member; `None` when there is none.
fn error_text(body: &[u8]) -> Option<String> {
    let Ok(Value::Object(obj)) = Value::parse(body) else {
        return None;
    };
    let text = match obj.get("error")? {
        Value::Null | Value::Bool(false) => return None,
        Value::Object(error) => match error.get("message") {
            Some(Value::String(message)) => message.clone(),
            // A null `message` counts as no message: the object is shown (D6).
            None | Some(Value::Null) => Value::Object(error.clone()).to_json(),
            Some(other) => other.to_json(),
        },
        Value::String(s) => s.clone(),
        other => other.to_json(),
    };
    (!text.is_empty()).then_some(text)
}

/// The standard reason phrase of `status` (C72), spelled as Node's `http.STATUS_CODES`;
/// `None` for a code without one.
pub(crate) fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a Teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        509 => "Bandwidth Limit Exceeded",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => return None,
    })
}

/// `Status code: undefined. Message: Unexpected API Error: <code> - <message>` (C74), for a
/// failure without an HTTP response, rendered by [`crate::failure`]. The codes and
/// messages of C64–C68 and C74 (`ECONNABORTED` / `timeout of 200000ms exceeded`, ...) are the
/// caller's.
pub(crate) fn transport_error_message(code: &str, message: &str) -> String {
    format!("Status code: undefined. Message: Unexpected API Error: {code} - {message}")
}

#[cfg(test)]
mod tests {
    // The mapping of whole responses (C39, C40, C69–C73, C107, C108) is checked by the shared
    // vectors in tests/vectors/responses and tests/vectors/errors (tests/vectors.rs).
    use super::*;

    fn success(sub: SubAction, body: &str) -> (String, TokenUsage) {
        let (data, usage) = map_success(sub, body.as_bytes()).unwrap();
        (data.to_json(), usage)
    }

    #[test]
    fn c39_js_trim_semantics() {
        assert_eq!(
            js_trim("\u{FEFF} a b \u{3000}\u{2028}\t\n\r\u{B}\u{C}\u{A0}"),
            "a b"
        );
        assert_eq!(
            js_trim("\u{2000}\u{200A}\u{202F}\u{205F}\u{1680}x\u{2029}"),
            "x"
        );
        // Not JS white space: U+0085, U+180E, U+200B.
        assert_eq!(js_trim("\u{85}x\u{85}"), "\u{85}x\u{85}");
        assert_eq!(js_trim("\u{180E}x\u{200B}"), "\u{180E}x\u{200B}");
        // White space only: trimmed to "" (content was non-empty).
        let (data, _) = success(
            SubAction::InvokeAi,
            r#"{"choices":[{"message":{"role":"assistant","content":" \n "}}],"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}"#,
        );
        assert!(data.starts_with(r#"{"message":"","#), "{data}");
        let (data, _) = success(
            SubAction::InvokeAi,
            "{\"choices\":[{\"message\":{\"role\":\"a\",\"content\":\"\\ufeffhi\\u0085\"}}]}",
        );
        assert!(data.starts_with("{\"message\":\"hi\u{85}\""), "{data}");
    }
}
