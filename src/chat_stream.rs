//! The chat-completion stream layer (contract section 6b, C92–C105): assembles OpenAI and Azure
//! `chat.completion.chunk` objects into one completion, on top of [`crate::sse`].
//!
//! [`ChatStream::push`] takes the data of each dispatched event in order; [`ChatStream::finish`]
//! gives the assembled object (C105). The layer keeps only the assembled message, never the
//! chunks themselves, so memory grows with the completion, not with the stream.
//!
//! Choices rules that the contract leaves open and this module fixes (chosen):
//! - An `index` (of a choice or a tool call) counts only when it is a JSON number with a
//!   non-negative integer value up to 2^53 (`1` and `1.0` alike); otherwise the default applies
//!   (0 for a choice, the position in the array for a tool call).
//! - A `delta` that is not an object counts as absent; so do `choices` and `tool_calls` that are
//!   not arrays, and elements that are not objects.
//! - A choice appears in the result once an element for it carries a `delta` or a non-null
//!   `finish_reason`.
//! - `id`, `type`, `function.name`, `role` take the first non-empty *string*; other types are
//!   ignored. A tool call whose id or name never arrived gets `""`.
//! - `"{}"` replaces empty `arguments` of the legacy `function_call` too.

use std::collections::BTreeMap;

use crate::json::{Number, Object, ParseError, Value};
use crate::usage::TokenUsage;

/// Why the stream ended in failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Event data that is neither `[DONE]`, blank nor JSON (C95).
    #[error("Failed to parse stream event data as JSON: {0}")]
    InvalidJson(ParseError),
    /// A chunk with a non-null `error` member (C96). The text is `error.message`, the string
    /// `error`, or the compact JSON of `error`; executions report it as `Stream error: <text>`.
    #[error("{0}")]
    Provider(String),
}

/// What [`ChatStream::push`] made of one event's data.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to deliver: blank data (C94), a JSON value that is not an object (C95), or data
    /// after the end marker or an error (C92).
    Skipped,
    /// A chunk object, merged into the completion; delivered as received by
    /// `invokeAsyncIterator` (C42).
    Chunk(Chunk),
    /// The end marker `[DONE]` (C93); nothing after it is processed.
    Done,
}

/// One parsed chunk: a JSON object exactly as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk(Value);

impl Chunk {
    /// The chunk object as received.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// The chunk object as received, by value.
    pub fn into_value(self) -> Value {
        self.0
    }

    /// The chunk's delta lines, `{"index":<i>,"delta":<delta as received>}`, one per `choices`
    /// element that carries a `delta` object, in array order (C105): the same text as
    /// [`Delta::to_json`] of each of [`deltas`](Self::deltas), without copying the deltas.
    pub fn delta_lines(&self) -> Vec<String> {
        choice_elements(&self.0)
            .filter_map(|element| {
                let delta = element.get("delta").filter(|d| d.as_object().is_some())?;
                Some(delta_line(choice_index(element), delta))
            })
            .collect()
    }

    /// The chunk's deltas, one per `choices` element that carries a `delta` object, in array
    /// order (C105).
    pub fn deltas(&self) -> Vec<Delta> {
        choice_elements(&self.0)
            .filter_map(|element| {
                let delta = element.get("delta").filter(|d| d.as_object().is_some())?;
                Some(Delta {
                    index: choice_index(element),
                    delta: delta.clone(),
                })
            })
            .collect()
    }
}

/// One `delta` of a chunk, with the index of the choice it belongs to (C98): a delta line of
/// `sse decode --chat` (C105).
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// The choice index (0 when absent).
    pub index: u64,
    /// The `delta` object as received.
    pub delta: Value,
}

impl Delta {
    /// The delta line `{"index":<i>,"delta":<delta as received>}` (C105).
    pub fn to_json(&self) -> String {
        delta_line(self.index, &self.delta)
    }
}

/// `{"index":<index>,"delta":<delta>}` (C105).
fn delta_line(index: u64, delta: &Value) -> String {
    let mut out = format!("{{\"index\":{index},\"delta\":");
    delta.write_json(&mut out);
    out.push('}');
    out
}

/// One tool call or legacy function call being assembled (C100, C101).
#[derive(Clone, Debug, Default)]
struct CallState {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl CallState {
    /// Merges `function`'s `name` and `arguments` (C100, C101).
    fn merge_function(&mut self, function: &Value) {
        set_first(&mut self.name, function.get("name"));
        if let Some(Value::String(fragment)) = function.get("arguments") {
            self.arguments.push_str(fragment);
        }
    }

    /// C101: empty arguments become `{}`.
    fn arguments(&self) -> &str {
        if self.arguments.is_empty() {
            "{}"
        } else {
            &self.arguments
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// `{"name":…,"arguments":…}`.
    fn function_json(&self) -> Value {
        let mut function = Object::default();
        function.insert("name".into(), self.name().into());
        function.insert("arguments".into(), self.arguments().into());
        function.into()
    }
}

/// One choice being assembled (C98–C102).
#[derive(Clone, Debug, Default)]
struct ChoiceState {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, CallState>,
    function_call: Option<CallState>,
    finish_reason: Option<Value>,
}

impl ChoiceState {
    /// Merges one `delta` object (C99–C101).
    fn merge_delta(&mut self, delta: &Value) {
        // C99: first non-empty role; every string content and refusal, concatenated.
        set_first(&mut self.role, delta.get("role"));
        if let Some(Value::String(text)) = delta.get("content") {
            self.content.get_or_insert_default().push_str(text);
        }
        if let Some(Value::String(text)) = delta.get("refusal") {
            self.refusal.get_or_insert_default().push_str(text);
        }
        // C100: tool calls merge by their index, or their position when it is absent.
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for (position, call) in calls.iter().enumerate() {
                if call.as_object().is_none() {
                    continue;
                }
                let index = call
                    .get("index")
                    .and_then(as_index)
                    .unwrap_or(position as u64);
                let state = self.tool_calls.entry(index).or_default();
                set_first(&mut state.id, call.get("id"));
                set_first(&mut state.kind, call.get("type"));
                if let Some(function @ Value::Object(_)) = call.get("function") {
                    state.merge_function(function);
                }
            }
        }
        // C101: the legacy `function_call` merges the same way.
        if let Some(function @ Value::Object(_)) = delta.get("function_call") {
            self.function_call
                .get_or_insert_default()
                .merge_function(function);
        }
    }

    /// `{"role":…,"content":…,("tool_calls"),("function_call"),("refusal")}` (C105).
    fn message_json(&self) -> Value {
        let mut message = Object::default();
        message.insert(
            "role".into(),
            self.role.as_deref().unwrap_or("assistant").into(),
        );
        message.insert(
            "content".into(),
            self.content.clone().map_or(Value::Null, Value::String),
        );
        if !self.tool_calls.is_empty() {
            // C101: a BTreeMap iterates in index order and has no gaps.
            let calls = self
                .tool_calls
                .values()
                .map(|call| {
                    let mut json = Object::default();
                    json.insert("id".into(), call.id.as_deref().unwrap_or("").into());
                    json.insert(
                        "type".into(),
                        call.kind.as_deref().unwrap_or("function").into(),
                    );
                    json.insert("function".into(), call.function_json());
                    Value::Object(json)
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(call) = &self.function_call {
            message.insert("function_call".into(), call.function_json());
        }
        if let Some(refusal) = &self.refusal {
            message.insert("refusal".into(), refusal.as_str().into());
        }
        Value::Object(message)
    }
}

/// The chat-completion accumulator (C92–C105).
///
/// ```
/// use openai_connector::chat_stream::{ChatStream, Step};
///
/// let mut stream = ChatStream::new();
/// stream.push(r#"{"id":"c1","choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
/// assert_eq!(stream.push(" [DONE] ").unwrap(), Step::Done);
/// assert_eq!(
///     stream.finish().to_json(),
///     r#"{"id":"c1","model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":null}],"usage":null,"done":true,"error":null}"#
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct ChatStream {
    id: Option<Value>,
    model: Option<Value>,
    created: Option<Value>,
    system_fingerprint: Option<Value>,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Option<Object>,
    done: bool,
    error: Option<StreamError>,
}

impl ChatStream {
    /// An empty accumulator.
    pub fn new() -> Self {
        ChatStream::default()
    }

    /// Processes the data of the next event (C92: the event type is not looked at).
    ///
    /// Returns the error once when the stream fails (C95, C96); after that, or after
    /// `[DONE]`, every push returns [`Step::Skipped`] and changes nothing (C92).
    pub fn push(&mut self, data: &str) -> Result<Step, StreamError> {
        if self.ended() {
            return Ok(Step::Skipped);
        }
        // C93, C94: ASCII white space (the WHATWG set: tab, LF, FF, CR, space) is trimmed.
        let trimmed = data.trim_ascii();
        if trimmed == "[DONE]" {
            self.done = true;
            return Ok(Step::Done);
        }
        if trimmed.is_empty() {
            return Ok(Step::Skipped);
        }
        // C95: parse failure is an error; a value that is not an object is skipped.
        let chunk = match Value::parse(data.as_bytes()) {
            Ok(chunk @ Value::Object(_)) => chunk,
            Ok(_) => return Ok(Step::Skipped),
            Err(error) => return Err(self.fail(StreamError::InvalidJson(error))),
        };
        // C96: a non-null `error` member ends the stream; nothing else of that chunk counts.
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let text = match error {
                Value::String(text) => text.clone(),
                _ => match error.get("message") {
                    Some(Value::String(message)) => message.clone(),
                    _ => error.to_json(),
                },
            };
            return Err(self.fail(StreamError::Provider(text)));
        }
        self.merge(&chunk);
        Ok(Step::Chunk(Chunk(chunk)))
    }

    fn fail(&mut self, error: StreamError) -> StreamError {
        self.error = Some(error.clone());
        error
    }

    /// Merges one chunk object (C97–C104).
    fn merge(&mut self, chunk: &Value) {
        // C104: the first non-empty value of each. "Empty" is JavaScript falsiness, so that
        // Azure's first chunk (`"id":""`, `"created":0`) does not count.
        for (slot, key) in [
            (&mut self.id, "id"),
            (&mut self.model, "model"),
            (&mut self.created, "created"),
            (&mut self.system_fingerprint, "system_fingerprint"),
        ] {
            if slot.is_none()
                && let Some(value) = chunk.get(key).filter(|v| v.is_truthy())
            {
                *slot = Some(value.clone());
            }
        }
        // C97: never filtered by `object`; absent, null or empty `choices` is normal.
        for element in choice_elements(chunk) {
            // C98: the element belongs to the choice named by its index.
            let delta = element.get("delta").filter(|d| d.as_object().is_some());
            let finish_reason = element.get("finish_reason").filter(|f| !f.is_null());
            if delta.is_none() && finish_reason.is_none() {
                continue;
            }
            let choice = self.choices.entry(choice_index(element)).or_default();
            if let Some(delta) = delta {
                choice.merge_delta(delta);
            }
            // C102: the last non-null finish reason.
            if let Some(reason) = finish_reason {
                choice.finish_reason = Some(reason.clone());
            }
        }
        // C103: every non-null usage object replaces the stored one.
        if let Some(Value::Object(usage)) = chunk.get("usage") {
            self.usage = Some(usage.clone());
        }
    }

    /// `true` once `[DONE]` arrived or the stream failed: nothing more is processed (C92).
    pub fn ended(&self) -> bool {
        self.done || self.error.is_some()
    }

    /// `true` once `[DONE]` arrived (C93).
    pub fn done(&self) -> bool {
        self.done
    }

    /// The error that ended the stream, if any (C95, C96).
    pub fn error(&self) -> Option<&StreamError> {
        self.error.as_ref()
    }

    /// The last usage object received (C103), as received.
    pub fn usage(&self) -> Option<&Object> {
        self.usage.as_ref()
    }

    /// Reported token usage (C109): `None` when no usage object arrived. A missing count is 0
    /// and a missing `total_tokens` is the sum of the other two; a count that is not a
    /// non-negative integer counts as missing (chosen).
    pub fn token_usage(&self) -> Option<TokenUsage> {
        let usage = self.usage.as_ref()?;
        let count = |key: &str| match usage.get(key) {
            Some(Value::Number(n)) => number_as_u64(n),
            _ => None,
        };
        let prompt = count("prompt_tokens").unwrap_or(0);
        let completion = count("completion_tokens").unwrap_or(0);
        let total = count("total_tokens").unwrap_or(prompt.saturating_add(completion));
        Some(TokenUsage::reported(prompt, completion, total))
    }

    /// The first non-empty `model` of the stream, when it is a string (C104, C110).
    pub fn first_model(&self) -> Option<&str> {
        self.model.as_ref().and_then(Value::as_str)
    }

    /// The completion text for token estimation (C111): for each choice in index order, joined
    /// with `\n`, its content followed by `\n` + name + `\n` + arguments for each tool call
    /// (in index order) and then the function call. Arguments are as in [`finish`](Self::finish).
    pub fn completion_text(&self) -> String {
        let mut text = String::new();
        for (i, choice) in self.choices.values().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(choice.content.as_deref().unwrap_or(""));
            for call in choice.tool_calls.values().chain(&choice.function_call) {
                text.push('\n');
                text.push_str(call.name());
                text.push('\n');
                text.push_str(call.arguments());
            }
        }
        text
    }

    /// The assembled completion (C105):
    /// `{"id","model","created","system_fingerprint","choices":[{"index","message","finish_reason"}],"usage","done","error"}`,
    /// where each of the first four is the first non-empty value received or `null`, `usage`
    /// is the last usage object or `null`, and `error` is the error text or `null`.
    pub fn finish(&self) -> Value {
        let mut result = Object::default();
        for (key, value) in [
            ("id", &self.id),
            ("model", &self.model),
            ("created", &self.created),
            ("system_fingerprint", &self.system_fingerprint),
        ] {
            result.insert(key.into(), value.clone().unwrap_or(Value::Null));
        }
        let choices = self
            .choices
            .iter()
            .map(|(&index, choice)| {
                let mut json = Object::default();
                json.insert("index".into(), index.into());
                json.insert("message".into(), choice.message_json());
                json.insert(
                    "finish_reason".into(),
                    choice.finish_reason.clone().unwrap_or(Value::Null),
                );
                Value::Object(json)
            })
            .collect();
        result.insert("choices".into(), Value::Array(choices));
        result.insert(
            "usage".into(),
            self.usage.clone().map_or(Value::Null, Value::Object),
        );
        result.insert("done".into(), self.done.into());
        result.insert(
            "error".into(),
            self.error
                .as_ref()
                .map_or(Value::Null, |e| e.to_string().into()),
        );
        Value::Object(result)
    }
}

/// The object elements of a chunk's `choices` array (C97, C98).
fn choice_elements(chunk: &Value) -> impl Iterator<Item = &Value> {
    chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|element| element.as_object().is_some())
}

/// C98: the element's `index`, 0 when absent or unusable (chosen).
fn choice_index(element: &Value) -> u64 {
    element.get("index").and_then(as_index).unwrap_or(0)
}

/// An index: a JSON number whose value is a non-negative integer up to 2^53.
fn as_index(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => number_as_u64(n).filter(|&i| i <= 1 << 53),
        _ => None,
    }
}

/// A number's value when it is a non-negative integer: exactly for integer spellings that fit,
/// through `f64` for others (`1.0`, `1e2`) up to 2^53, where `f64` is still exact.
fn number_as_u64(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64();
        (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
    })
}

/// Sets `slot` to `value` when `slot` is still unset and `value` is a non-empty string.
fn set_first(slot: &mut Option<String>, value: Option<&Value>) {
    if slot.is_none()
        && let Some(Value::String(text)) = value
        && !text.is_empty()
    {
        *slot = Some(text.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Decoder, MAX_SSE_EVENT_BYTES};

    /// Pushes every line of `lines` as one event's data; returns the steps (errors as text).
    fn push_all(stream: &mut ChatStream, lines: &str) -> Vec<Result<Step, String>> {
        lines
            .lines()
            .map(|line| stream.push(line).map_err(|e| e.to_string()))
            .collect()
    }

    fn assembled(lines: &str) -> String {
        let mut stream = ChatStream::new();
        push_all(&mut stream, lines);
        stream.finish().to_json()
    }

    const AZURE: &str = r#"{"id":"","model":"","object":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}
{"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}
{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}
{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}
{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
{"choices":[{"index":0,"finish_reason":null,"content_filter_offsets":{"start_offset":0,"end_offset":5}}]}
{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}
[DONE]"#;

    const TOOL_CALLS: &str = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}
{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}
{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}
{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;

    // C97, C98, C99, C102, C103, C104, C105: the contract's Azure example.
    #[test]
    fn c105_azure_example() {
        let mut stream = ChatStream::new();
        let steps = push_all(&mut stream, AZURE);
        assert_eq!(steps.len(), 8);
        assert!(steps[..7].iter().all(|s| matches!(s, Ok(Step::Chunk(_)))));
        assert_eq!(steps[7], Ok(Step::Done));
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":"chatcmpl-1","model":"gpt-4o","created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"done":true,"error":null}"#
        );
        assert_eq!(stream.token_usage(), Some(TokenUsage::reported(9, 2, 11)));
        assert_eq!(stream.first_model(), Some("gpt-4o"));
        assert_eq!(stream.completion_text(), "Hello");
        assert!(stream.done() && stream.error().is_none());
    }

    // C105: the contract's first example, with created and delta lines.
    #[test]
    fn c105_openai_example_and_delta_lines() {
        let mut stream = ChatStream::new();
        let input = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut events = Vec::new();
        let mut decoder = Decoder::new();
        decoder.feed(input.as_bytes(), &mut events).unwrap();
        decoder.finish(&mut events).unwrap();
        let mut delta_lines = Vec::new();
        for event in &events {
            if let Step::Chunk(chunk) = stream.push(&event.data).unwrap() {
                delta_lines.extend(chunk.delta_lines());
            }
        }
        assert_eq!(
            delta_lines,
            [
                r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}"#,
                r#"{"index":0,"delta":{"content":"Hello"}}"#,
                r#"{"index":0,"delta":{}}"#,
            ]
        );
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":"chatcmpl-1","model":"gpt-4o","created":1767225600,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11},"done":true,"error":null}"#
        );
    }

    // C100, C101, C105: the contract's tool-call example (no [DONE]: done is false, C93).
    #[test]
    fn c101_tool_call_example() {
        let mut stream = ChatStream::new();
        push_all(&mut stream, TOOL_CALLS);
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":null,"done":false,"error":null}"#
        );
        assert_eq!(
            stream.completion_text(),
            "\nget_weather\n{\"city\":\"Paris\"}"
        );
        assert_eq!(stream.token_usage(), None);
    }

    // C100, C101: index order, no gaps, position when index is absent, first non-empty
    // id/type/name, "{}" for empty arguments, "function" for a missing type.
    #[test]
    fn c101_tool_call_merging() {
        let lines = r#"{"choices":[{"delta":{"tool_calls":[{"index":5,"id":"b","function":{"name":"second"}},{"index":2,"id":"","type":"","function":{"name":"","arguments":"{\"x\""}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":2,"id":"a","type":"custom","function":{"name":"first","arguments":":1}"}},{"index":5,"id":"late","function":{"name":"late"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"id":"p0"},{"id":"p1","function":{"name":"third","arguments":"[]"}}]}}]}"#;
        assert_eq!(
            assembled(lines),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"p0","type":"function","function":{"name":"","arguments":"{}"}},{"id":"p1","type":"function","function":{"name":"third","arguments":"[]"}},{"id":"a","type":"custom","function":{"name":"first","arguments":"{\"x\":1}"}},{"id":"b","type":"function","function":{"name":"second","arguments":"{}"}}]},"finish_reason":null}],"usage":null,"done":false,"error":null}"#
        );
    }

    // C101: the legacy function_call.
    #[test]
    fn c101_legacy_function_call() {
        let lines = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"function_call":{"name":"lookup","arguments":""}}}]}
{"choices":[{"index":0,"delta":{"function_call":{"name":"ignored","arguments":"{\"q\":"}}}]}
{"choices":[{"index":0,"delta":{"function_call":{"arguments":"1}"}}}]}
{"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}
[DONE]"#;
        let mut stream = ChatStream::new();
        push_all(&mut stream, lines);
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"lookup","arguments":"{\"q\":1}"}},"finish_reason":"function_call"}],"usage":null,"done":true,"error":null}"#
        );
        assert_eq!(stream.completion_text(), "\nlookup\n{\"q\":1}");
    }

    // C98, C99, C102, C111: several choices, interleaved, reported in index order.
    #[test]
    fn c98_multiple_choices() {
        let lines = r#"{"id":"x","choices":[{"index":1,"delta":{"role":"assistant","content":"B"}},{"index":0,"delta":{"content":"A"}}]}
{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":"length"},{"index":0,"delta":{"content":"a","refusal":"no"}}]}
{"choices":[{"index":0,"delta":{"refusal":"pe"},"finish_reason":"stop"},{"index":1,"finish_reason":null}]}
{"choices":[{"index":2,"finish_reason":null}]}
[DONE]"#;
        let mut stream = ChatStream::new();
        push_all(&mut stream, lines);
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":"x","model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"Aa","refusal":"nope"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"Bb"},"finish_reason":"length"}],"usage":null,"done":true,"error":null}"#
        );
        assert_eq!(stream.completion_text(), "Aa\nBb");
    }

    // C98: an element without delta contributes only a non-null finish_reason; the index
    // defaults to 0.
    #[test]
    fn c98_element_without_delta() {
        let lines = r#"{"choices":[{"delta":{"content":"x"}}]}
{"choices":[{"finish_reason":"content_filter","content_filter_results":{}}]}
{"choices":[{"index":0,"delta":null,"finish_reason":null}]}"#;
        assert!(assembled(lines).contains(
            r#""choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"content_filter"}]"#
        ));
    }

    // C93, C94, C95: end marker with white space, blank data, non-objects, invalid JSON.
    #[test]
    fn c93_c95_markers_blank_and_invalid() {
        let mut stream = ChatStream::new();
        assert_eq!(stream.push(""), Ok(Step::Skipped));
        assert_eq!(stream.push(" \t\r\n\x0c"), Ok(Step::Skipped));
        assert_eq!(stream.push("[1,2]"), Ok(Step::Skipped));
        assert_eq!(stream.push("\"text\""), Ok(Step::Skipped));
        assert_eq!(stream.push("null"), Ok(Step::Skipped));
        assert_eq!(stream.push("\n [DONE]\t"), Ok(Step::Done));
        assert!(stream.done());
        // C92: nothing after [DONE].
        assert_eq!(stream.push("not json"), Ok(Step::Skipped));
        assert_eq!(
            stream.push(r#"{"choices":[{"delta":{"content":"x"}}]}"#),
            Ok(Step::Skipped)
        );
        assert!(stream.finish().to_json().contains(r#""choices":[]"#));

        // Not the marker: "[DONE]" must be the whole trimmed data.
        let mut stream = ChatStream::new();
        assert_eq!(
            stream.push("[DONE] x").map_err(|e| e.to_string()),
            Err("Failed to parse stream event data as JSON: unexpected token at position 1".into())
        );
        let mut stream = ChatStream::new();
        stream
            .push(r#"{"choices":[{"delta":{"content":"par"}}]}"#)
            .unwrap();
        let error = stream.push(r#"{"choices":"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Failed to parse stream event data as JSON: unexpected end of JSON input at position 11"
        );
        assert!(matches!(error, StreamError::InvalidJson(_)));
        // C92: nothing after an error; the error is reported once.
        assert_eq!(stream.push("[DONE]"), Ok(Step::Skipped));
        assert!(!stream.done());
        assert_eq!(stream.completion_text(), "par");
        assert_eq!(
            stream.finish().to_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"par"},"finish_reason":null}],"usage":null,"done":false,"error":"Failed to parse stream event data as JSON: unexpected end of JSON input at position 11"}"#
        );
    }

    // C96: the three forms of an in-stream error, mid-stream.
    #[test]
    fn c96_provider_error() {
        let cases = [
            (
                r#"{"error":{"message":"Rate limit","type":"x"}}"#,
                "Rate limit",
            ),
            (r#"{"error":"overloaded"}"#, "overloaded"),
            (
                r#"{"error":{"code":500,"message":7}}"#,
                r#"{"code":500,"message":7}"#,
            ),
            (r#"{"error":false}"#, "false"),
        ];
        for (chunk, text) in cases {
            let mut stream = ChatStream::new();
            stream
                .push(r#"{"model":"m","choices":[{"delta":{"content":"a"}}]}"#)
                .unwrap();
            assert_eq!(stream.push(chunk), Err(StreamError::Provider(text.into())));
            assert_eq!(stream.error().map(ToString::to_string), Some(text.into()));
            assert_eq!(
                stream.push(r#"{"choices":[{"delta":{"content":"b"}}]}"#),
                Ok(Step::Skipped)
            );
            assert_eq!(stream.completion_text(), "a");
            assert_eq!(stream.first_model(), Some("m"));
            let result = stream.finish();
            assert_eq!(result.get("error"), Some(&Value::from(text)));
            assert_eq!(result.get("done"), Some(&Value::Bool(false)));
        }
        // A null error member is no error.
        let mut stream = ChatStream::new();
        assert!(matches!(
            stream.push(r#"{"error":null}"#),
            Ok(Step::Chunk(_))
        ));
    }

    // C103, C109: the last usage object wins; counts as received; missing counts.
    #[test]
    fn c103_usage() {
        let mut stream = ChatStream::new();
        stream
            .push(r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#)
            .unwrap();
        stream.push(r#"{"choices":[],"usage":null}"#).unwrap();
        stream.push(r#"{"usage":5}"#).unwrap();
        assert_eq!(stream.token_usage(), Some(TokenUsage::reported(1, 1, 2)));
        stream
            .push(r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2.0,"extra":{"a":1e2}}}"#)
            .unwrap();
        assert_eq!(stream.token_usage(), Some(TokenUsage::reported(9, 2, 11)));
        assert!(
            stream.finish().to_json().contains(
                r#""usage":{"prompt_tokens":9,"completion_tokens":2.0,"extra":{"a":1e2}}"#
            )
        );
        stream
            .push(r#"{"usage":{"prompt_tokens":-1,"total_tokens":"3"}}"#)
            .unwrap();
        assert_eq!(stream.token_usage(), Some(TokenUsage::reported(0, 0, 0)));
    }

    // C104: first non-empty id/model/created/system_fingerprint.
    #[test]
    fn c104_first_non_empty_metadata() {
        let lines = r#"{"id":"","model":"","created":0,"system_fingerprint":null,"choices":[]}
{"id":"a","model":"m1","created":12,"system_fingerprint":"","choices":[]}
{"id":"b","model":"m2","created":13,"system_fingerprint":"fp","choices":[]}"#;
        assert!(assembled(lines).starts_with(
            r#"{"id":"a","model":"m1","created":12,"system_fingerprint":"fp","choices":[]"#
        ));
    }

    // C99: role default and first non-empty; content null vs "" ; refusal only if it arrived.
    #[test]
    fn c99_role_content_refusal() {
        let lines = r#"{"choices":[{"delta":{"role":"","content":null,"refusal":null}}]}
{"choices":[{"delta":{"role":"tool"}}]}
{"choices":[{"delta":{"role":"assistant","content":5}}]}"#;
        assert!(assembled(lines).contains(r#""message":{"role":"tool","content":null}"#));
        assert!(
            assembled(r#"{"choices":[{"delta":{"content":""}}]}"#)
                .contains(r#""message":{"role":"assistant","content":""}"#)
        );
    }

    // C98: index forms (chosen): integral numbers count, anything else is the default.
    #[test]
    fn c98_index_forms() {
        let chunk = r#"{"choices":[{"index":1.0,"delta":{"content":"a"}},{"index":"2","delta":{"content":"b"}},{"index":-1,"delta":{"content":"c"}},{"index":1e0,"delta":{"content":"d"}}]}"#;
        let mut stream = ChatStream::new();
        let Ok(Step::Chunk(parsed)) = stream.push(chunk) else {
            panic!("not a chunk")
        };
        let indices: Vec<u64> = parsed.deltas().iter().map(|d| d.index).collect();
        assert_eq!(indices, [1, 0, 0, 1]);
        assert_eq!(stream.completion_text(), "bc\nad");
        assert_eq!(
            parsed.into_value().to_json(),
            chunk,
            "the chunk is delivered as received"
        );
    }

    // C79, C92: the full path from SSE bytes, with the event type ignored.
    #[test]
    fn c92_through_the_decoder() {
        let input = "event: other\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n: c\n\ndata: [DONE]\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"y\"}}]}\n\n";
        let mut decoder = Decoder::with_max_event_bytes(MAX_SSE_EVENT_BYTES);
        let mut events = Vec::new();
        let mut stream = ChatStream::new();
        for byte in input.as_bytes().chunks(1) {
            decoder.feed(byte, &mut events).unwrap();
        }
        for event in &events {
            stream.push(&event.data).unwrap();
        }
        assert_eq!(stream.completion_text(), "x");
        assert!(stream.done());
    }
}
