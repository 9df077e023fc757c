//! The chat-completion stream layer (contract section 6b, C92–C105): assembles OpenAI and Azure
//! `chat.completion.chunk` objects into one completion, on top of [`crate::sse`].
//!
//! [`ChatStream::push_event`] takes the type and data of each dispatched event in order (the
//! type matters only for C96a; [`ChatStream::push`] is a `message` event);
//! [`ChatStream::finish`] gives the assembled object (C105). [`ChatDecoder`] does both layers at
//! once: bytes in, delta lines out. The layer keeps only the assembled message, never the chunks
//! themselves, so memory grows with the completion, not with the stream.
//!
//! Each chunk is parsed onto a reused [`Tape`] and only the members the completion keeps are
//! copied out, so a chunk costs no allocation once the buffers have grown.
//!
//! Choices rules that the contract leaves open and this module fixes (chosen):
//! - An `index` (of a choice or a tool call) counts only when it is a JSON number with a
//!   non-negative integer value up to 2^53 (`1` and `1.0` alike); otherwise the default applies
//!   (0 for a choice, the position in the array for a tool call).
//! - A `delta` that is not an object counts as absent; so do `choices` and `tool_calls` that are
//!   not arrays, and elements that are not objects.
//! - A choice appears in the result once an element for it carries a `delta` or a non-null
//!   `finish_reason`.
//! - `id`, `type`, `function.name`, `custom.name`, `role` take the first non-empty *string*;
//!   other types are ignored. A tool call whose id or name never arrived gets `""`.
//! - A tool call's payload is the one its type names, whichever fragment the type arrives on:
//!   `custom` for `"custom"` (C101a), `function` otherwise (a missing type is `function`,
//!   C101). A stream that mixes `function` and `custom` for one index keeps only that payload.
//!   A `custom.input` that never arrived is `""` (not `{}`).
//! - `"{}"` replaces empty `arguments` of the legacy `function_call` too.
//! - A key that repeats in a chunk counts with its last value (C50), like everywhere else.

use std::collections::BTreeMap;

use crate::json::{
    EscapedString, Item, Object, ParseError, Tape, Value, write_object, write_string,
};
use crate::sse::{self, SseError};
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
    /// Also an `error` event whose object has no `error` member but a string `message`: the
    /// text is that message (C96a).
    #[error("{0}")]
    Provider(String),
}

/// What [`ChatStream::push`] made of one event's data.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<'a> {
    /// Nothing to deliver: blank data (C94), a JSON value that is not an object (C95), or data
    /// after the end marker or an error (C92).
    Skipped,
    /// A chunk object, merged into the completion; delivered as received by
    /// `invokeAsyncIterator` (C42).
    Chunk(Chunk<'a>),
    /// The end marker `[DONE]` (C93); nothing after it is processed.
    Done,
}

/// One parsed chunk: a JSON object exactly as received, borrowed from the stream's tape until
/// the next push.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a>(Item<'a>);

impl PartialEq for Chunk<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

impl Chunk<'_> {
    /// The chunk object as received.
    pub fn to_value(&self) -> Value {
        self.0.to_value()
    }

    /// The chunk object as received, as compact JSON text (C42).
    pub fn to_json(&self) -> String {
        self.0.to_json()
    }

    /// The chunk's delta lines, `{"index":<i>,"delta":<delta as received>}`, in the order of
    /// [`deltas`](Self::deltas) (C105).
    pub fn delta_lines(&self) -> Vec<String> {
        self.delta_items()
            .map(|(index, delta)| {
                let mut line = String::new();
                write_delta_line(index, delta, &mut line);
                line
            })
            .collect()
    }

    /// The chunk's deltas, one per `choices` element that carries a `delta` object, in array
    /// order (C105).
    pub fn deltas(&self) -> Vec<Delta> {
        self.delta_items()
            .map(|(index, delta)| Delta {
                index,
                delta: delta.to_value(),
            })
            .collect()
    }

    fn delta_items(&self) -> impl Iterator<Item = (u64, Item<'_>)> {
        let choices = self.0.get("choices");
        choices
            .into_iter()
            .flat_map(choice_elements)
            .filter_map(|element| {
                let element = ChoiceElement::read(element);
                Some((element.index, element.delta?))
            })
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
        let mut out = format!("{{\"index\":{},\"delta\":", self.index);
        self.delta.write_json(&mut out);
        out.push('}');
        out
    }
}

/// Appends `{"index":<index>,"delta":<delta>}` (C105).
fn write_delta_line(index: u64, delta: Item<'_>, out: &mut String) {
    out.push_str("{\"index\":");
    out.push_str(itoa::Buffer::new().format(index));
    out.push_str(",\"delta\":");
    delta.write_json(out);
    out.push('}');
}

/// The members of a chunk that the layer reads, each with its last value (C50).
#[derive(Default)]
struct ChunkMembers<'t> {
    error: Option<Item<'t>>,
    message: Option<Item<'t>>,
    id: Option<Item<'t>>,
    model: Option<Item<'t>>,
    created: Option<Item<'t>>,
    system_fingerprint: Option<Item<'t>>,
    choices: Option<Item<'t>>,
    usage: Option<Item<'t>>,
}

impl<'t> ChunkMembers<'t> {
    /// One pass over the chunk's members.
    fn read(chunk: Item<'t>) -> Self {
        let mut members = ChunkMembers::default();
        for (key, value) in chunk.members() {
            let slot = match key {
                "error" => &mut members.error,
                "message" => &mut members.message,
                "id" => &mut members.id,
                "model" => &mut members.model,
                "created" => &mut members.created,
                "system_fingerprint" => &mut members.system_fingerprint,
                "choices" => &mut members.choices,
                "usage" => &mut members.usage,
                _ => continue,
            };
            *slot = Some(value);
        }
        members
    }
}

/// What a `choices` element contributes (C98): its index, its `delta` when that is an object,
/// its `finish_reason` when that is not null.
struct ChoiceElement<'t> {
    index: u64,
    delta: Option<Item<'t>>,
    finish_reason: Option<Item<'t>>,
}

impl<'t> ChoiceElement<'t> {
    fn read(element: Item<'t>) -> Self {
        let (mut index, mut delta, mut finish_reason) = (None, None, None);
        for (key, value) in element.members() {
            match key {
                "index" => index = Some(value),
                "delta" => delta = Some(value),
                "finish_reason" => finish_reason = Some(value),
                _ => {}
            }
        }
        ChoiceElement {
            // C98: 0 when absent or unusable (chosen).
            index: index.and_then(as_index).unwrap_or(0),
            delta: delta.filter(Item::is_object),
            finish_reason: finish_reason.filter(|f| !f.is_null()),
        }
    }
}

/// The name and text of a tool call's payload being assembled: `function.name` and
/// `function.arguments` (C100), or `custom.name` and `custom.input` (C101a).
#[derive(Clone, Debug, Default)]
struct Payload {
    name: Option<String>,
    /// Escaped: the fragments are concatenated as received and written out once (C100).
    text: EscapedString,
}

impl Payload {
    /// Merges the `name` and the `text_key` fragment of `payload` (C100, C101a): the first
    /// non-empty name, every string fragment in arrival order.
    fn merge(&mut self, payload: Item<'_>, text_key: &str) {
        let (mut name, mut text) = (None, None);
        for (key, value) in payload.members() {
            if key == "name" {
                name = Some(value);
            } else if key == text_key {
                text = Some(value);
            }
        }
        set_first(&mut self.name, name);
        if let Some(fragment) = text {
            self.text.push_item(fragment);
        }
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The text, or `empty` when none arrived.
    fn text_or(&self, empty: &str) -> String {
        if self.text.is_empty() {
            empty.to_owned()
        } else {
            self.text.to_unescaped()
        }
    }

    /// `{"name":…,"<text_key>":…}`, with `empty` for a text that never arrived.
    fn write(&self, text_key: &str, empty: &str, out: &mut String) {
        out.push_str("{\"name\":");
        write_string(self.name(), out);
        out.push_str(",\"");
        out.push_str(text_key);
        out.push_str("\":");
        if self.text.is_empty() {
            write_string(empty, out);
        } else {
            self.text.write_json(out);
        }
        out.push('}');
    }

    /// C101: `function`'s empty arguments become `{}`.
    fn write_function(&self, out: &mut String) {
        self.write("arguments", "{}", out);
    }

    /// C101a: `custom`'s input as received (empty stays empty, chosen).
    fn write_custom(&self, out: &mut String) {
        self.write("input", "", out);
    }
}

/// One tool call being assembled (C100, C101, C101a).
///
/// Its type is the first non-empty `type`, on whichever fragment it arrives. The payload
/// written is the one that type names: `custom` for `"custom"` (C101a), `function` for any
/// other type or none (C101). Both are collected until the type is known; after that, fragments
/// of the other member are ignored (chosen: a stream that mixes `function` and `custom` for one
/// index keeps only the payload of its type).
#[derive(Clone, Debug, Default)]
struct CallState {
    id: Option<String>,
    kind: Option<String>,
    function: Payload,
    custom: Payload,
}

impl CallState {
    /// Whether the call's type is `custom` (C101a).
    fn is_custom(&self) -> bool {
        self.kind.as_deref() == Some("custom")
    }

    /// Merges one `tool_calls` element's `id`, `type`, `function` and `custom` (C100, C101a).
    fn merge(
        &mut self,
        id: Option<Item<'_>>,
        kind: Option<Item<'_>>,
        function: Option<Item<'_>>,
        custom: Option<Item<'_>>,
    ) {
        set_first(&mut self.id, id);
        set_first(&mut self.kind, kind);
        let (take_function, take_custom) = match self.kind {
            None => (true, true),
            Some(_) => (!self.is_custom(), self.is_custom()),
        };
        if let Some(function) = function.filter(|f| take_function && f.is_object()) {
            self.function.merge(function, "arguments");
        }
        if let Some(custom) = custom.filter(|c| take_custom && c.is_object()) {
            self.custom.merge(custom, "input");
        }
    }

    /// The name and the text for token estimation (C111): `function`'s name and arguments
    /// (`{}` when empty), or `custom`'s name and input (chosen).
    fn estimation_parts(&self) -> (&str, String) {
        if self.is_custom() {
            (self.custom.name(), self.custom.text_or(""))
        } else {
            (self.function.name(), self.function.text_or("{}"))
        }
    }

    /// `{"id":…,"type":…,"function":{…}}` (C101), or `{"id":…,"type":"custom","custom":{…}}`
    /// (C101a).
    fn write(&self, out: &mut String) {
        out.push_str("{\"id\":");
        write_string(self.id.as_deref().unwrap_or(""), out);
        out.push_str(",\"type\":");
        write_string(self.kind.as_deref().unwrap_or("function"), out);
        if self.is_custom() {
            out.push_str(",\"custom\":");
            self.custom.write_custom(out);
        } else {
            out.push_str(",\"function\":");
            self.function.write_function(out);
        }
        out.push('}');
    }
}

/// One choice being assembled (C98–C102).
#[derive(Clone, Debug, Default)]
struct ChoiceState {
    role: Option<String>,
    /// Content and refusal are kept escaped (see [`EscapedString`]).
    content: Option<EscapedString>,
    refusal: Option<EscapedString>,
    tool_calls: BTreeMap<u64, CallState>,
    /// The legacy `function_call` (C101).
    function_call: Option<Payload>,
    finish_reason: Option<Value>,
}

impl ChoiceState {
    /// Merges one `delta` object (C99–C101a).
    fn merge_delta(&mut self, delta: Item<'_>) {
        let (mut role, mut content, mut refusal, mut tool_calls, mut function_call) =
            (None, None, None, None, None);
        for (key, value) in delta.members() {
            match key {
                "role" => role = Some(value),
                "content" => content = Some(value),
                "refusal" => refusal = Some(value),
                "tool_calls" => tool_calls = Some(value),
                "function_call" => function_call = Some(value),
                _ => {}
            }
        }
        // C99: first non-empty role; every string content and refusal, concatenated.
        set_first(&mut self.role, role);
        append_string(&mut self.content, content);
        append_string(&mut self.refusal, refusal);
        // C100: tool calls merge by their index, or their position when it is absent.
        for (position, call) in tool_calls
            .into_iter()
            .flat_map(|c| c.elements())
            .enumerate()
        {
            if !call.is_object() {
                continue;
            }
            let (mut index, mut id, mut kind, mut function, mut custom) =
                (None, None, None, None, None);
            for (key, value) in call.members() {
                match key {
                    "index" => index = Some(value),
                    "id" => id = Some(value),
                    "type" => kind = Some(value),
                    "function" => function = Some(value),
                    "custom" => custom = Some(value),
                    _ => {}
                }
            }
            let index = index.and_then(as_index).unwrap_or(position as u64);
            // C100, C101a: `function` or `custom`, as the call's type says.
            self.tool_calls
                .entry(index)
                .or_default()
                .merge(id, kind, function, custom);
        }
        // C101: the legacy `function_call` merges the same way.
        if let Some(function) = function_call.filter(Item::is_object) {
            self.function_call
                .get_or_insert_default()
                .merge(function, "arguments");
        }
    }

    /// `{"role":…,"content":…,("tool_calls"),("function_call"),("refusal")}` (C105).
    fn write_message(&self, out: &mut String) {
        out.push_str("{\"role\":");
        write_string(self.role.as_deref().unwrap_or("assistant"), out);
        out.push_str(",\"content\":");
        match &self.content {
            Some(content) => content.write_json(out),
            None => out.push_str("null"),
        }
        if !self.tool_calls.is_empty() {
            out.push_str(",\"tool_calls\":[");
            // C101: a BTreeMap iterates in index order and has no gaps.
            for (i, call) in self.tool_calls.values().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                call.write(out);
            }
            out.push(']');
        }
        if let Some(call) = &self.function_call {
            out.push_str(",\"function_call\":");
            call.write_function(out);
        }
        if let Some(refusal) = &self.refusal {
            out.push_str(",\"refusal\":");
            refusal.write_json(out);
        }
        out.push('}');
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
    state: Assembly,
    /// The last chunk, parsed; reused so that a push allocates nothing once it has grown.
    tape: Tape,
}

/// What the stream assembled so far.
#[derive(Clone, Debug, Default)]
struct Assembly {
    id: Option<Value>,
    model: Option<Value>,
    created: Option<Value>,
    system_fingerprint: Option<Value>,
    choices: BTreeMap<u64, ChoiceState>,
    usage: Option<Object>,
    done: bool,
    error: Option<StreamError>,
}

impl Assembly {
    fn fail(&mut self, error: StreamError) -> StreamError {
        self.error = Some(error.clone());
        error
    }

    /// Merges one chunk object (C96–C104), appending its delta lines to `lines` when given.
    /// `error_event`: the event's type is `error` (C96a).
    fn merge(
        &mut self,
        chunk: Item<'_>,
        error_event: bool,
        mut lines: Option<&mut String>,
    ) -> Result<(), StreamError> {
        let members = ChunkMembers::read(chunk);
        // C96: a non-null `error` member ends the stream; nothing else of that chunk counts.
        if let Some(error) = members.error.filter(|e| !e.is_null()) {
            let text = match error.as_str() {
                Some(text) => text.to_owned(),
                None => match error.get("message").and_then(|m| m.as_str()) {
                    Some(message) => message.to_owned(),
                    None => error.to_json(),
                },
            };
            return Err(self.fail(StreamError::Provider(text)));
        }
        // C96a: an `error` event without an `error` member (`"error":null` is a member, and C96
        // lets it pass) ends the stream with its string `message`; nothing else counts either.
        if error_event
            && members.error.is_none()
            && let Some(message) = members.message.and_then(|m| m.as_str())
        {
            return Err(self.fail(StreamError::Provider(message.to_owned())));
        }
        // C104: the first non-empty value of each. "Empty" is JavaScript falsiness, so that
        // Azure's first chunk (`"id":""`, `"created":0`) does not count.
        for (slot, value) in [
            (&mut self.id, members.id),
            (&mut self.model, members.model),
            (&mut self.created, members.created),
            (&mut self.system_fingerprint, members.system_fingerprint),
        ] {
            if slot.is_none()
                && let Some(value) = value.filter(Item::is_truthy)
            {
                *slot = Some(value.to_value());
            }
        }
        // C97: never filtered by `object`; absent, null or empty `choices` is normal.
        for element in members.choices.into_iter().flat_map(choice_elements) {
            // C98: the element belongs to the choice named by its index.
            let element = ChoiceElement::read(element);
            if element.delta.is_none() && element.finish_reason.is_none() {
                continue;
            }
            let choice = self.choices.entry(element.index).or_default();
            if let Some(delta) = element.delta {
                choice.merge_delta(delta);
                if let Some(out) = lines.as_deref_mut() {
                    write_delta_line(element.index, delta, out);
                    out.push('\n');
                }
            }
            // C102: the last non-null finish reason.
            if let Some(reason) = element.finish_reason {
                choice.finish_reason = Some(reason.to_value());
            }
        }
        // C103: every non-null usage object replaces the stored one.
        if let Some(Value::Object(usage)) =
            members.usage.filter(Item::is_object).map(|u| u.to_value())
        {
            self.usage = Some(usage);
        }
        Ok(())
    }
}

impl ChatStream {
    /// An empty accumulator.
    pub fn new() -> Self {
        ChatStream::default()
    }

    /// Processes the next event, of type `event_type` (C88) with `data` (C92). The type counts
    /// only when it is `error` (C96a, which C92's "the event type is ignored" yields to).
    ///
    /// Returns the error once when the stream fails (C95, C96, C96a); after that, or after
    /// `[DONE]`, every push returns [`Step::Skipped`] and changes nothing (C92). A returned
    /// chunk borrows the stream until the next call.
    pub fn push_event<'a>(
        &'a mut self,
        event_type: &str,
        data: &'a str,
    ) -> Result<Step<'a>, StreamError> {
        self.step(event_type, data, None)
    }

    /// [`push_event`](Self::push_event) for an event of type `message` (the type of an event
    /// without an `event` field, C88): for callers that have only the data, such as the WIT
    /// 0.4.0 `chat-stream.push`. An `error` event pushed this way is not seen as one (C96a).
    pub fn push<'a>(&'a mut self, data: &'a str) -> Result<Step<'a>, StreamError> {
        self.step("message", data, None)
    }

    /// [`push_event`](Self::push_event), appending the chunk's delta lines to `lines` when
    /// given (as [`Chunk::delta_lines`] would, in the same pass as the merge).
    fn step<'a>(
        &'a mut self,
        event_type: &str,
        data: &'a str,
        lines: Option<&mut String>,
    ) -> Result<Step<'a>, StreamError> {
        let state = &mut self.state;
        if state.done || state.error.is_some() {
            return Ok(Step::Skipped);
        }
        // C93, C94: ASCII white space (the WHATWG set: tab, LF, FF, CR, space) is trimmed.
        let trimmed = data.trim_ascii();
        if trimmed == "[DONE]" {
            state.done = true;
            return Ok(Step::Done);
        }
        if trimmed.is_empty() {
            return Ok(Step::Skipped);
        }
        // C95: parse failure is an error; a value that is not an object is skipped.
        let chunk = match self.tape.parse(data) {
            Ok(chunk) if chunk.is_object() => chunk,
            Ok(_) => return Ok(Step::Skipped),
            Err(error) => return Err(state.fail(StreamError::InvalidJson(error))),
        };
        state.merge(chunk, event_type == "error", lines)?;
        Ok(Step::Chunk(Chunk(chunk)))
    }

    /// `true` once `[DONE]` arrived or the stream failed: nothing more is processed (C92).
    pub fn ended(&self) -> bool {
        self.state.done || self.state.error.is_some()
    }

    /// `true` once `[DONE]` arrived (C93).
    pub fn done(&self) -> bool {
        self.state.done
    }

    /// The error that ended the stream, if any (C95, C96).
    pub fn error(&self) -> Option<&StreamError> {
        self.state.error.as_ref()
    }

    /// The last usage object received (C103), as received.
    pub fn usage(&self) -> Option<&Object> {
        self.state.usage.as_ref()
    }

    /// Reported token usage (C109): `None` when no usage object arrived. A missing count is 0
    /// and a missing `total_tokens` is the sum of the other two; a count that is not a
    /// non-negative integer counts as missing (chosen).
    pub fn token_usage(&self) -> Option<TokenUsage> {
        let usage = self.state.usage.as_ref()?;
        let count = |key: &str| match usage.get(key) {
            Some(Value::Number(n)) => number_as_u64(n.as_str()),
            _ => None,
        };
        let prompt = count("prompt_tokens").unwrap_or(0);
        let completion = count("completion_tokens").unwrap_or(0);
        let total = count("total_tokens").unwrap_or(prompt.saturating_add(completion));
        Some(TokenUsage::reported(prompt, completion, total))
    }

    /// The first non-empty `model` of the stream, when it is a string (C104, C110).
    pub fn first_model(&self) -> Option<&str> {
        self.state.model.as_ref().and_then(Value::as_str)
    }

    /// The completion text for token estimation (C111): for each choice in index order, joined
    /// with `\n`, its content followed by `\n` + name + `\n` + arguments for each tool call
    /// (in index order) and then the function call. Arguments are as in [`finish`](Self::finish);
    /// a `custom` tool call counts its name and its input (C101a, chosen).
    pub fn completion_text(&self) -> String {
        let mut text = String::new();
        for (i, choice) in self.state.choices.values().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            if let Some(content) = &choice.content {
                text.push_str(&content.to_unescaped());
            }
            let function_call = choice
                .function_call
                .iter()
                .map(|call| (call.name(), call.text_or("{}")));
            for (name, arguments) in choice
                .tool_calls
                .values()
                .map(CallState::estimation_parts)
                .chain(function_call)
            {
                text.push('\n');
                text.push_str(name);
                text.push('\n');
                text.push_str(&arguments);
            }
        }
        text
    }

    /// The assembled completion (C105):
    /// `{"id","model","created","system_fingerprint","choices":[{"index","message","finish_reason"}],"usage","done","error"}`,
    /// where each of the first four is the first non-empty value received or `null`, `usage`
    /// is the last usage object or `null`, and `error` is the error text or `null`.
    pub fn finish(&self) -> Value {
        Value::parse(self.finish_json().as_bytes())
            .expect("the completion is written as valid JSON")
    }

    /// [`finish`](Self::finish) as compact JSON text, written directly (the content is not
    /// copied into a [`Value`] first).
    pub fn finish_json(&self) -> String {
        self.completion_json(
            self.state
                .error
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
        )
    }

    /// [`finish_json`](Self::finish_json) with `error` as the `error` member.
    fn completion_json(&self, error: Option<&str>) -> String {
        let state = &self.state;
        let content: usize = state
            .choices
            .values()
            .map(|c| c.content.as_ref().map_or(0, |c| c.as_escaped().len()))
            .sum();
        let mut out = String::with_capacity(content + 256);
        for (key, value) in [
            ("{\"id\":", &state.id),
            (",\"model\":", &state.model),
            (",\"created\":", &state.created),
            (",\"system_fingerprint\":", &state.system_fingerprint),
        ] {
            out.push_str(key);
            write_optional(value.as_ref(), &mut out);
        }
        out.push_str(",\"choices\":[");
        for (i, (index, choice)) in state.choices.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"index\":");
            out.push_str(itoa::Buffer::new().format(*index));
            out.push_str(",\"message\":");
            choice.write_message(&mut out);
            out.push_str(",\"finish_reason\":");
            write_optional(choice.finish_reason.as_ref(), &mut out);
            out.push('}');
        }
        out.push_str("],\"usage\":");
        match &state.usage {
            Some(usage) => write_object(usage, &mut out),
            None => out.push_str("null"),
        }
        out.push_str(",\"done\":");
        out.push_str(if state.done { "true" } else { "false" });
        out.push_str(",\"error\":");
        write_optional_string(error, &mut out);
        out.push('}');
        out
    }
}

/// An event-stream decoder feeding a [`ChatStream`]: bytes in, delta lines out (C79–C105). The
/// results are exactly those of pushing (with [`ChatStream::push_event`]: type and data) every
/// event that an [`sse::Decoder`] dispatches, without materialising the events' list for the
/// caller.
///
/// ```
/// use openai_connector::chat_stream::ChatDecoder;
///
/// let mut decoder = ChatDecoder::new(1 << 20);
/// let mut lines = String::new();
/// decoder.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DO", &mut lines).unwrap();
/// decoder.feed(b"NE]\n\n", &mut lines).unwrap();
/// decoder.finish().unwrap();
/// assert_eq!(lines, "{\"index\":0,\"delta\":{\"content\":\"Hi\"}}\n");
/// assert!(decoder.chat().done());
/// ```
#[derive(Clone, Debug)]
pub struct ChatDecoder {
    decoder: sse::Decoder,
    chat: ChatStream,
    /// Why decoding stopped (C91), once it has.
    stopped: Option<SseError>,
}

impl ChatDecoder {
    /// A decoder holding at most `max_event_bytes` for the event being built (C91).
    pub fn new(max_event_bytes: usize) -> Self {
        ChatDecoder {
            decoder: sse::Decoder::with_max_event_bytes(max_event_bytes),
            chat: ChatStream::new(),
            stopped: None,
        }
    }

    /// Decodes `chunk`, pushes every event it completes and appends their delta lines to
    /// `out`, each followed by LF (C105).
    ///
    /// A stream error (C95, C96, C96a) is not an error of this call: it ends the assembly and shows
    /// in [`chat`](Self::chat)'s [`error`](ChatStream::error). `Err` means decoding failed
    /// (C91); the lines of the events completed before the failure are in `out`, and every
    /// later call returns the same error.
    pub fn feed(&mut self, chunk: &[u8], out: &mut String) -> Result<(), SseError> {
        let chat = &mut self.chat;
        // Each event is borrowed from the decoder's buffer and merged as it is dispatched.
        let result = self.decoder.feed_with(chunk, &mut |event| {
            let _ = chat.step(event.event_type, event.data, Some(out));
        });
        self.note(result)
    }

    /// Ends the input: a partly built event is discarded and nothing is dispatched (C89).
    /// Returns the decoding error if decoding had stopped (C91).
    pub fn finish(&mut self) -> Result<(), SseError> {
        let result = self.decoder.finish(&mut Vec::new());
        self.note(result)
    }

    /// Keeps the first decoding error for [`completion_json`](Self::completion_json).
    fn note(&mut self, result: Result<(), SseError>) -> Result<(), SseError> {
        if let Err(error) = &result {
            self.stopped.get_or_insert_with(|| error.clone());
        }
        result
    }

    /// The accumulator: the completion so far, usage, errors.
    pub fn chat(&self) -> &ChatStream {
        &self.chat
    }

    /// The completion so far as JSON text (C105), whose `error` is the text of the error
    /// that stopped decoding (C131): a stream error (C95, C96), or else a decoding error
    /// (C91); `null` while neither happened.
    pub fn completion_json(&self) -> String {
        match (self.chat.error(), &self.stopped) {
            (None, Some(stopped)) => self.chat.completion_json(Some(&stopped.to_string())),
            _ => self.chat.finish_json(),
        }
    }
}

/// The object elements of a `choices` array (C97, C98); nothing when it is not an array.
fn choice_elements<'t>(choices: Item<'t>) -> impl Iterator<Item = Item<'t>> + use<'t> {
    choices.elements().filter(Item::is_object)
}

/// An index: a JSON number whose value is a non-negative integer up to 2^53.
fn as_index(value: Item<'_>) -> Option<u64> {
    number_as_u64(value.as_number()?).filter(|&i| i <= 1 << 53)
}

/// A number's value when it is a non-negative integer: exactly for integer spellings that fit,
/// through `f64` for others (`1.0`, `1e2`) up to 2^53, where `f64` is still exact.
fn number_as_u64(text: &str) -> Option<u64> {
    text.parse().ok().or_else(|| {
        // The text is a valid JSON number, which Rust's float grammar accepts.
        let f: f64 = text.parse().unwrap_or(f64::NAN);
        (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
    })
}

/// `value`'s JSON, or `null`.
fn write_optional(value: Option<&Value>, out: &mut String) {
    match value {
        Some(value) => value.write_json(out),
        None => out.push_str("null"),
    }
}

/// `text` as a JSON string, or `null`.
fn write_optional_string(text: Option<&str>, out: &mut String) {
    match text {
        Some(text) => write_string(text, out),
        None => out.push_str("null"),
    }
}

/// Appends `value` to `slot` when it is a string (an empty one included: it turns `null`
/// content into `""`, C99).
fn append_string(slot: &mut Option<EscapedString>, value: Option<Item<'_>>) {
    if let Some(value) = value.filter(|v| v.as_str().is_some()) {
        slot.get_or_insert_default().push_item(value);
    }
}

/// Sets `slot` to `value` when `slot` is still unset and `value` is a non-empty string.
fn set_first(slot: &mut Option<String>, value: Option<Item<'_>>) {
    if slot.is_none()
        && let Some(text) = value.and_then(|v| v.as_str())
        && !text.is_empty()
    {
        *slot = Some(text.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Decoder, MAX_SSE_EVENT_BYTES};

    /// What a push gave, without the borrow.
    #[derive(Debug, PartialEq)]
    enum Kind {
        Skipped,
        Chunk,
        Done,
    }

    /// Pushes every line of `lines` as one event's data; returns the steps (errors as text).
    fn push_all(stream: &mut ChatStream, lines: &str) -> Vec<Result<Kind, String>> {
        lines
            .lines()
            .map(|line| match stream.push(line) {
                Ok(Step::Skipped) => Ok(Kind::Skipped),
                Ok(Step::Chunk(_)) => Ok(Kind::Chunk),
                Ok(Step::Done) => Ok(Kind::Done),
                Err(e) => Err(e.to_string()),
            })
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
        assert!(steps[..7].iter().all(|s| s == &Ok(Kind::Chunk)));
        assert_eq!(steps[7], Ok(Kind::Done));
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
{"choices":[{"delta":{"tool_calls":[{"index":2,"id":"a","type":"other","function":{"name":"first","arguments":":1}"}},{"index":5,"id":"late","function":{"name":"late"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"id":"p0"},{"id":"p1","function":{"name":"third","arguments":"[]"}}]}}]}"#;
        assert_eq!(
            assembled(lines),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"p0","type":"function","function":{"name":"","arguments":"{}"}},{"id":"p1","type":"function","function":{"name":"third","arguments":"[]"}},{"id":"a","type":"other","function":{"name":"first","arguments":"{\"x\":1}"}},{"id":"b","type":"function","function":{"name":"second","arguments":"{}"}}]},"finish_reason":null}],"usage":null,"done":false,"error":null}"#
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

    // C101a: a custom tool call keeps its name (first non-empty) and its input fragments in
    // arrival order; the type arrives on the first fragment only; no `function` member. A
    // function call beside it is unchanged (C101).
    #[test]
    fn c101a_custom_tool_call_keeps_its_payload() {
        let lines = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_c","type":"custom","custom":{"name":"run_sql","input":""}}]}}]}
{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"custom":{"name":"ignored","input":"SELECT \"a\"\n"}}]}}]}
{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"custom":{"input":"FROM t"}},{"index":1,"id":"call_f","type":"function","function":{"name":"f","arguments":""}}]}}]}
{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}
[DONE]"#;
        let mut stream = ChatStream::new();
        push_all(&mut stream, lines);
        assert_eq!(
            stream.finish_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_c","type":"custom","custom":{"name":"run_sql","input":"SELECT \"a\"\nFROM t"}},{"id":"call_f","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":null,"done":true,"error":null}"#
        );
        // C111 (chosen): a custom call counts its name and its input.
        assert_eq!(
            stream.completion_text(),
            "\nrun_sql\nSELECT \"a\"\nFROM t\nf\n{}"
        );
    }

    // C100, C101, C101a (chosen): the first non-empty `type` decides which payload is written,
    // wherever it arrives; the other member's fragments are ignored. An empty custom input stays
    // empty; a call without any type is a function call (C101).
    #[test]
    fn c101a_the_type_decides_when_function_and_custom_mix() {
        let lines = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"type":"custom","custom":{"name":"c0"}},{"index":1,"type":"function","function":{"name":"f1","arguments":"{\"a\":"}},{"index":2,"custom":{"name":"c2","input":"p"},"function":{"name":"lost"}},{"index":3,"custom":{"name":"c3","input":"x"}},{"index":4,"type":"custom"}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f0","arguments":"lost"},"custom":{"input":"a"}},{"index":1,"custom":{"name":"lost","input":"lost"},"function":{"arguments":"1}"}},{"index":2,"type":"custom","custom":{"input":"q"},"function":{"arguments":"lost"}}]}}]}"#;
        assert_eq!(
            assembled(lines),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"","type":"custom","custom":{"name":"c0","input":"a"}},{"id":"","type":"function","function":{"name":"f1","arguments":"{\"a\":1}"}},{"id":"","type":"custom","custom":{"name":"c2","input":"pq"}},{"id":"","type":"function","function":{"name":"","arguments":"{}"}},{"id":"","type":"custom","custom":{"name":"","input":""}}]},"finish_reason":null}],"usage":null,"done":false,"error":null}"#
        );
    }

    // C96a: an `error` event whose object has no `error` member but a string `message` ends
    // the stream with that message; nothing of it or after it counts (C92).
    #[test]
    fn c96a_error_event_message_ends_the_stream() {
        let mut stream = ChatStream::new();
        stream
            .push_event(
                "message",
                r#"{"model":"m","choices":[{"delta":{"content":"a"}}]}"#,
            )
            .unwrap();
        let error = r#"{"message":"Overloaded","type":"server_error","choices":[{"delta":{"content":"x"}}],"usage":{"total_tokens":1}}"#;
        assert_eq!(
            stream.push_event("error", error),
            Err(StreamError::Provider("Overloaded".into()))
        );
        assert_eq!(
            stream.push_event("message", r#"{"choices":[{"delta":{"content":"b"}}]}"#),
            Ok(Step::Skipped)
        );
        assert_eq!(stream.completion_text(), "a");
        assert_eq!(stream.token_usage(), None);
        assert_eq!(
            stream.finish_json(),
            r#"{"id":null,"model":"m","created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":null}],"usage":null,"done":false,"error":"Overloaded"}"#
        );
    }

    // C96a yields to C96 and applies only as written: an `error` member (even null) means C96;
    // a message that is not a string, another type (types are case-sensitive) or `push`
    // without a type leave the chunk a chunk; `[DONE]` and invalid JSON are as ever.
    #[test]
    fn c96a_only_an_error_event_without_error_member() {
        let step = |event_type: &str, data: &str| {
            let mut stream = ChatStream::new();
            match stream.push_event(event_type, data) {
                Ok(Step::Chunk(_)) => Ok("chunk".to_owned()),
                Ok(Step::Done) => Ok("done".to_owned()),
                Ok(Step::Skipped) => Ok("skipped".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        };
        let chunk = Ok("chunk".to_owned());
        assert_eq!(
            step(
                "error",
                r#"{"error":{"message":"inner"},"message":"outer"}"#
            ),
            Err("inner".into())
        );
        assert_eq!(step("error", r#"{"error":null,"message":"x"}"#), chunk);
        assert_eq!(step("error", r#"{"message":5}"#), chunk);
        assert_eq!(step("error", r#"{"message":null}"#), chunk);
        assert_eq!(step("error", r#"{"code":"x"}"#), chunk);
        assert_eq!(step("error", r#"{"message":""}"#), Err(String::new()));
        assert_eq!(step("message", r#"{"message":"x"}"#), chunk);
        assert_eq!(step("Error", r#"{"message":"x"}"#), chunk);
        assert_eq!(step("error", " [DONE] "), Ok("done".into()));
        assert_eq!(step("error", "\"boom\""), Ok("skipped".into()));
        assert!(
            step("error", "boom")
                .unwrap_err()
                .starts_with("Failed to parse")
        );
        let mut stream = ChatStream::new();
        assert!(matches!(
            stream.push(r#"{"message":"x"}"#),
            Ok(Step::Chunk(_))
        ));
    }

    // C96a through the decoder: the SSE `event` field reaches the decision, in any chunking.
    #[test]
    fn c96a_chat_decoder_sees_the_event_type() {
        let input = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\nevent: error\ndata: {\"message\":\"boom\"}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n";
        for size in [1, 7, input.len()] {
            let mut decoder = ChatDecoder::new(MAX_SSE_EVENT_BYTES);
            let mut lines = String::new();
            for piece in input.as_bytes().chunks(size) {
                decoder.feed(piece, &mut lines).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(lines, "{\"index\":0,\"delta\":{\"content\":\"a\"}}\n");
            assert_eq!(
                decoder.chat().error(),
                Some(&StreamError::Provider("boom".into()))
            );
            assert_eq!(decoder.chat().completion_text(), "a");
        }
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
        assert_eq!(
            parsed.to_json(),
            chunk,
            "the chunk is delivered as received"
        );
        assert_eq!(stream.completion_text(), "bc\nad");
    }

    // C50: a key that repeats in a chunk counts with its last value, in the assembly and in
    // the delta line (first position, last value).
    #[test]
    fn c50_repeated_keys_count_with_their_last_value() {
        let mut stream = ChatStream::new();
        let chunk = r#"{"choices":[{"delta":{"content":"lost"}}],"model":"m","choices":[{"index":1,"index":0,"delta":{"content":"a","role":"tool","content":"b"}}]}"#;
        let Ok(Step::Chunk(parsed)) = stream.push(chunk) else {
            panic!("not a chunk")
        };
        assert_eq!(
            parsed.delta_lines(),
            [r#"{"index":0,"delta":{"content":"b","role":"tool"}}"#]
        );
        assert_eq!(
            parsed.to_json(),
            r#"{"choices":[{"index":0,"delta":{"content":"b","role":"tool"}}],"model":"m"}"#
        );
        assert_eq!(stream.completion_text(), "b");
    }

    // C91 with C105: a decoding failure keeps the lines of the events before it, and the
    // assembly so far.
    #[test]
    fn c91_chat_decoder_keeps_what_came_before_an_oversize_event() {
        let mut decoder = ChatDecoder::new(64);
        let mut lines = String::new();
        let input = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"ok\"}}}}]}}\n\ndata: {}\n\n",
            "x".repeat(100)
        );
        let error = decoder.feed(input.as_bytes(), &mut lines).unwrap_err();
        assert!(error.to_string().contains("64"), "{error}");
        assert_eq!(lines, "{\"index\":0,\"delta\":{\"content\":\"ok\"}}\n");
        assert_eq!(decoder.chat().completion_text(), "ok");
        assert_eq!(
            decoder.feed(b"data: [DONE]\n\n", &mut lines),
            Err(error.clone())
        );
        // C131: the completion names the error that stopped decoding; the stream itself did
        // not fail.
        assert!(decoder.chat().error().is_none());
        assert_eq!(
            decoder.completion_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":null}],"usage":null,"done":false,"error":"SSE event exceeds the maximum size of 64 bytes"}"#
        );
    }

    // C131 with C92: a stream error (C95, C96) stops the assembly first; an oversize event
    // after it does not replace its text.
    #[test]
    fn c131_chat_decoder_completion_keeps_the_first_error() {
        let mut decoder = ChatDecoder::new(64);
        let mut lines = String::new();
        let input = format!(
            "data: {{\"error\":\"overloaded\"}}\n\ndata: {}\n\n",
            "x".repeat(100)
        );
        assert!(decoder.feed(input.as_bytes(), &mut lines).is_err());
        assert_eq!(
            decoder.completion_json(),
            r#"{"id":null,"model":null,"created":null,"system_fingerprint":null,"choices":[],"usage":null,"done":false,"error":"overloaded"}"#
        );
    }

    mod chat_decoder {
        use super::super::{ChatDecoder, ChatStream, Step};
        use crate::sse::Decoder;
        use proptest::prelude::*;

        /// A stream of chat events: content with escapes, tool calls, an error, junk, `[DONE]`.
        fn stream() -> impl Strategy<Value = String> {
            let event = prop_oneof![
                "[a-z \\\\n\"é]{0,12}".prop_map(|t| format!(
                    "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}}}}]}}\n\n",
                    crate::json::quote(&t)
                )),
                (0u8..3, "[a-z{}:\"]{0,6}").prop_map(|(i, a)| format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"function\":{{\"name\":\"f{i}\",\"arguments\":{}}}}}]}}}}]}}\r\n\r\n",
                    crate::json::quote(&a)
                )),
                Just("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n".to_owned()),
                Just(": keep-alive\n\n".to_owned()),
                Just("data: {\"error\":{\"message\":\"boom\"}}\n\n".to_owned()),
                Just("event: error\ndata: {\"message\":\"overloaded\"}\n\n".to_owned()),
                Just("event: error\ndata: {\"choices\":[{\"delta\":{\"content\":\"e\"}}]}\n\n".to_owned()),
                (0u8..2, "[a-z\"]{0,4}").prop_map(|(i, a)| format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"type\":\"custom\",\"custom\":{{\"input\":{}}}}}]}}}}]}}\n\n",
                    crate::json::quote(&a)
                )),
                Just("data: {\"choices\":\n\n".to_owned()),
                Just("data: [DONE]\n\n".to_owned()),
            ];
            proptest::collection::vec(event, 0..12).prop_map(|events| events.concat())
        }

        proptest! {
            /// Bytes in and delta lines out, in chunks of any size, is exactly the decoder plus
            /// one push (type and data, C96a) per event.
            #[test]
            fn equals_the_decoder_plus_one_push_per_event(
                input in stream(),
                cuts in proptest::collection::vec(1usize..40, 1..8),
            ) {
                let mut events = Vec::new();
                let mut decoder = Decoder::new();
                decoder.feed(input.as_bytes(), &mut events).unwrap();
                decoder.finish(&mut events).unwrap();
                let mut stream = ChatStream::new();
                let mut want = String::new();
                for event in &events {
                    if let Ok(Step::Chunk(chunk)) = stream.push_event(&event.event_type, &event.data) {
                        for delta in chunk.deltas() {
                            want.push_str(&delta.to_json());
                            want.push('\n');
                        }
                    }
                }

                let mut chat = ChatDecoder::new(1 << 20);
                let mut lines = String::new();
                let mut rest = input.as_bytes();
                for cut in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (piece, tail) = rest.split_at((*cut).min(rest.len()));
                    chat.feed(piece, &mut lines).unwrap();
                    rest = tail;
                }
                chat.finish().unwrap();
                prop_assert_eq!(lines, want);
                prop_assert_eq!(chat.chat().finish().to_json(), stream.finish().to_json());
                prop_assert_eq!(chat.chat().token_usage(), stream.token_usage());
            }
        }
    }

    mod escaped_fragments {
        use super::super::ChatStream;
        use proptest::prelude::*;

        /// One string literal's inside: plain text and every kind of escape, canonical
        /// (`\n`, `\u0001`) or not (`\/`, `\u00e9`, upper-case hex, a surrogate pair).
        fn literal() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                "[a-z é😀]{1,6}",
                Just(r#"\""#.to_owned()),
                Just(r"\\".to_owned()),
                Just(r"\n".to_owned()),
                Just(r"\t".to_owned()),
                Just(r"\b".to_owned()),
                Just(r"\u0001".to_owned()),
                Just(r"\u001F".to_owned()),
                Just(r"\/".to_owned()),
                Just(r"\u00e9".to_owned()),
                Just(r"\u0041".to_owned()),
                Just(r"\ud83d\ude00".to_owned()),
            ];
            proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
        }

        proptest! {
            // C99, C100, C105: content, refusal and arguments are the concatenation of the
            // decoded fragments, whatever their escapes, checked against serde_json.
            #[test]
            fn c99_c100_fragments_concatenate_as_decoded(
                fragments in proptest::collection::vec((literal(), 0u8..3), 0..8),
            ) {
                let mut stream = ChatStream::new();
                let mut want = [String::new(), String::new(), String::new()];
                for (fragment, field) in &fragments {
                    let chunk = match field {
                        0 => format!(r#"{{"choices":[{{"delta":{{"content":"{fragment}"}}}}]}}"#),
                        1 => format!(r#"{{"choices":[{{"delta":{{"refusal":"{fragment}"}}}}]}}"#),
                        _ => format!(
                            r#"{{"choices":[{{"delta":{{"tool_calls":[{{"function":{{"arguments":"{fragment}"}}}}]}}}}]}}"#
                        ),
                    };
                    stream.push(&chunk).unwrap();
                    let decoded: String = serde_json::from_str(&format!("\"{fragment}\"")).unwrap();
                    want[*field as usize].push_str(&decoded);
                }
                let json = stream.finish_json();
                // C53: each is written as `JSON.stringify` (and serde_json) would write it.
                for (field, key) in [(0, "content"), (1, "refusal"), (2, "arguments")] {
                    if !want[field].is_empty() {
                        let member = format!("\"{key}\":{}", serde_json::to_string(&want[field]).unwrap());
                        prop_assert!(json.contains(&member), "{} not in {}", member, json);
                    }
                }
                let completion: serde_json::Value = serde_json::from_str(&json).unwrap();
                let message = &completion["choices"][0]["message"];
                let has = |field: u8| fragments.iter().any(|(_, f)| *f == field);
                if fragments.is_empty() {
                    prop_assert_eq!(&completion["choices"], &serde_json::json!([]));
                    return Ok(());
                }
                let content = has(0).then(|| want[0].clone());
                prop_assert_eq!(message["content"].as_str(), content.as_deref());
                let refusal = has(1).then(|| want[1].clone());
                prop_assert_eq!(message.get("refusal").and_then(|r| r.as_str()), refusal.as_deref());
                let arguments = match (has(2), want[2].is_empty()) {
                    (false, _) => None,
                    (true, true) => Some("{}"),
                    (true, false) => Some(want[2].as_str()),
                };
                prop_assert_eq!(
                    message["tool_calls"][0]["function"]["arguments"].as_str(),
                    arguments
                );
                // C111: the estimation text decodes the same way.
                let mut text = want[0].clone();
                if has(2) {
                    text.push_str("\n\n");
                    text.push_str(arguments.unwrap_or_default());
                }
                prop_assert_eq!(stream.completion_text(), text);
            }
        }
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
