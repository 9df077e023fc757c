//! OpenAI's Responses API streamed (`responses` with `"stream": true`): typed events, and the
//! output assembled from them, on top of [`crate::sse`].
//!
//! [`ResponsesStream::push_event`] takes the type and data of each dispatched event in order;
//! [`ResponsesDecoder`] does both layers at once, bytes in. What is assembled: the output text
//! ([`ResponsesStream::output_text`]), the function calls (call id, name, arguments), the usage
//! of the final event and how the stream ended ([`End`]). Executions ([`crate::streaming`])
//! account a streamed `responses` call with this same layer.
//!
//! # Events
//!
//! An event's kind is the `type` member of its data (the SSE event type when the data has none).
//! Typed: `response.created`, `response.output_text.delta`, `response.output_item.added` and
//! `.done`, `response.function_call_arguments.delta` and `.done`, `response.completed`,
//! `response.incomplete`, `response.failed`, `error`. Any other event, and data that is not a
//! JSON object, is [`ResponsesEvent::Other`] with the kind: never an error (only the SSE layer
//! fails, C91). `response.refusal.delta` is `Other` too, but its text counts as output text, as
//! a refusal part does in a whole response ([`crate::responses_api`]).
//!
//! # Assembly (chosen)
//!
//! - Output text: every `response.output_text.delta` (and `response.refusal.delta`) `delta`, back
//!   to back, in arrival order.
//! - Function calls, in the order they first appear: a `function_call` item of
//!   `response.output_item.added` starts one (its `id`, `call_id`, `name`, `arguments`);
//!   `response.function_call_arguments.delta` appends to the call whose item id it names (else
//!   whose output index it names, else starts one); `.done` and the `function_call` item of
//!   `response.output_item.done` replace the arguments, and set the call id and name when they
//!   carry non-empty ones.
//! - The end: the first `response.completed`, `response.incomplete`, `response.failed` or
//!   `error`. Events after it are still returned, typed, but change nothing.
//! - Usage: the `response.usage` of the ending event (`input_tokens` → prompt, `output_tokens` →
//!   completion, [`crate::responses_api::reported_usage`]).
//! - Messages: a failed response's `response.error.message` (else its `error` as compact JSON,
//!   else `response.failed without an error message`); an `error` event's `message`, else its
//!   `error.message`, else its string `error`, else the data as given.
//! - An index (`output_index`, `content_index`) is a JSON number whose value is an integer from
//!   0 to 2^32-1; anything else reads as 0.
//!
//! # Limits
//!
//! Each event is parsed once onto a reused [`Tape`] and only what the assembly keeps is copied,
//! so the time is linear in the input. Memory grows with the assembled output (text, calls),
//! never with the events: the events that repeat the whole output (`response.completed`,
//! `response.output_text.done`, ...) are read, not kept. The event being decoded is bounded by
//! the SSE layer's `max_event_bytes` (C91), and at most [`MAX_FUNCTION_CALLS`] calls are
//! tracked; the events of later ones are still returned but not assembled.

use std::collections::HashMap;

use crate::json::{Item, Number, Tape, write_string};
use crate::responses_api::{self, FunctionCall};

use crate::response::number_to_count;
use crate::sse::{self, SseError};
use crate::usage::TokenUsage;

/// Function calls tracked per stream at most (see the module's limits).
pub const MAX_FUNCTION_CALLS: usize = 4096;

/// How a Responses stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// `response.completed`.
    Completed,
    /// `response.incomplete`, with `incomplete_details.reason` (empty when none).
    Incomplete(String),
    /// `response.failed`, with the response's error message.
    Failed(String),
    /// An `error` event, with its message.
    Error(String),
}

impl End {
    /// The message of a failed response or an error event; `None` when the stream ended well.
    pub fn failure_message(&self) -> Option<&str> {
        match self {
            End::Completed | End::Incomplete(_) => None,
            End::Failed(message) | End::Error(message) => Some(message),
        }
    }
}

/// An output item of `response.output_item.added` / `.done`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputItem {
    /// `output_index`.
    pub output_index: u32,
    /// The item's `type` (`message`, `function_call`, `reasoning`, ...).
    pub item_type: String,
    /// The item's `id`.
    pub id: String,
    /// A function call's `call_id` (else empty).
    pub call_id: String,
    /// A function call's `name` (else empty).
    pub name: String,
    /// A function call's `arguments` so far (else empty).
    pub arguments: String,
}

/// One typed event of a Responses stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponsesEvent {
    /// `response.created`: the response's `id` and `model`.
    Created {
        /// `response.id`.
        id: String,
        /// `response.model`.
        model: String,
    },
    /// `response.output_text.delta`.
    OutputTextDelta {
        /// `output_index`.
        output_index: u32,
        /// `content_index`.
        content_index: u32,
        /// The text.
        delta: String,
    },
    /// `response.output_item.added`.
    OutputItemAdded(OutputItem),
    /// `response.output_item.done`.
    OutputItemDone(OutputItem),
    /// `response.function_call_arguments.delta`: a piece of a call's arguments.
    FunctionCallArgumentsDelta {
        /// `output_index`.
        output_index: u32,
        /// The piece.
        delta: String,
    },
    /// `response.function_call_arguments.done`: a call's whole arguments.
    FunctionCallArgumentsDone {
        /// `output_index`.
        output_index: u32,
        /// The arguments.
        arguments: String,
    },
    /// `response.completed`, with the usage it reports.
    Completed {
        /// `response.usage`, when it reports one.
        usage: Option<TokenUsage>,
    },
    /// `response.incomplete`.
    Incomplete {
        /// `response.incomplete_details.reason` (empty when none).
        reason: String,
        /// `response.usage`, when it reports one.
        usage: Option<TokenUsage>,
    },
    /// `response.failed`, with the response's error message.
    Failed {
        /// The message.
        message: String,
    },
    /// An `error` event, with its message.
    Error {
        /// The message.
        message: String,
    },
    /// Any other event: its kind (`response.in_progress`, `response.output_text.done`, ...,
    /// or the SSE event type of data that is not a JSON object).
    Other {
        /// The kind.
        event_type: String,
    },
}

impl ResponsesEvent {
    /// The event as one JSON object, as the shared vectors write it: `"type"` is the WIT case
    /// name (`created`, `output-text-delta`, ...), the other members are the fields in
    /// snake case; a usage is `{"prompt_tokens","completion_tokens","total_tokens"}` or `null`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"type\":");
        let field = |out: &mut String, key: &str, value: &str| {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            write_string(value, out);
        };
        let index = |out: &mut String, key: &str, value: u32| {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            out.push_str(itoa::Buffer::new().format(value));
        };
        let usage = |out: &mut String, usage: &Option<TokenUsage>| {
            out.push_str(",\"usage\":");
            match usage {
                Some(u) => out.push_str(&format!(
                    "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}",
                    u.prompt_tokens, u.completion_tokens, u.total_tokens
                )),
                None => out.push_str("null"),
            }
        };
        let item = |out: &mut String, item: &OutputItem| {
            index(out, "output_index", item.output_index);
            field(out, "item_type", &item.item_type);
            field(out, "id", &item.id);
            field(out, "call_id", &item.call_id);
            field(out, "name", &item.name);
            field(out, "arguments", &item.arguments);
        };
        match self {
            ResponsesEvent::Created { id, model } => {
                out.push_str("\"created\"");
                field(&mut out, "id", id);
                field(&mut out, "model", model);
            }
            ResponsesEvent::OutputTextDelta {
                output_index,
                content_index,
                delta,
            } => {
                out.push_str("\"output-text-delta\"");
                index(&mut out, "output_index", *output_index);
                index(&mut out, "content_index", *content_index);
                field(&mut out, "delta", delta);
            }
            ResponsesEvent::OutputItemAdded(i) => {
                out.push_str("\"output-item-added\"");
                item(&mut out, i);
            }
            ResponsesEvent::OutputItemDone(i) => {
                out.push_str("\"output-item-done\"");
                item(&mut out, i);
            }
            ResponsesEvent::FunctionCallArgumentsDelta {
                output_index,
                delta,
            } => {
                out.push_str("\"function-call-arguments-delta\"");
                index(&mut out, "output_index", *output_index);
                field(&mut out, "delta", delta);
            }
            ResponsesEvent::FunctionCallArgumentsDone {
                output_index,
                arguments,
            } => {
                out.push_str("\"function-call-arguments-done\"");
                index(&mut out, "output_index", *output_index);
                field(&mut out, "arguments", arguments);
            }
            ResponsesEvent::Completed { usage: u } => {
                out.push_str("\"completed\"");
                usage(&mut out, u);
            }
            ResponsesEvent::Incomplete { reason, usage: u } => {
                out.push_str("\"incomplete\"");
                field(&mut out, "reason", reason);
                usage(&mut out, u);
            }
            ResponsesEvent::Failed { message } => {
                out.push_str("\"failed\"");
                field(&mut out, "message", message);
            }
            ResponsesEvent::Error { message } => {
                out.push_str("\"error\"");
                field(&mut out, "message", message);
            }
            ResponsesEvent::Other { event_type } => {
                out.push_str("\"other\"");
                field(&mut out, "event_type", event_type);
            }
        }
        out.push('}');
        out
    }
}

/// The members of an event's data that the layer reads, each with its last value (C50).
#[derive(Default)]
struct Members<'t> {
    kind: Option<&'t str>,
    delta: Option<Item<'t>>,
    item_id: Option<Item<'t>>,
    output_index: Option<Item<'t>>,
    content_index: Option<Item<'t>>,
    arguments: Option<Item<'t>>,
    item: Option<Item<'t>>,
    response: Option<Item<'t>>,
    message: Option<Item<'t>>,
    error: Option<Item<'t>>,
}

impl<'t> Members<'t> {
    /// One pass over the data's members.
    fn read(data: Item<'t>) -> Self {
        let mut m = Members::default();
        for (key, value) in data.members() {
            let slot = match key {
                "type" => {
                    m.kind = value.as_str();
                    continue;
                }
                "delta" => &mut m.delta,
                "item_id" => &mut m.item_id,
                "output_index" => &mut m.output_index,
                "content_index" => &mut m.content_index,
                "arguments" => &mut m.arguments,
                "item" => &mut m.item,
                "response" => &mut m.response,
                "message" => &mut m.message,
                "error" => &mut m.error,
                _ => continue,
            };
            *slot = Some(value);
        }
        m
    }
}

/// Accumulates the events of a Responses stream (see the module documentation).
#[derive(Debug, Default)]
pub struct ResponsesStream {
    tape: Tape,
    a: Assembly,
}

/// What the stream has assembled (apart from the tape, so that both can be borrowed at once).
#[derive(Debug, Default)]
struct Assembly {
    text: String,
    calls: Vec<FunctionCall>,
    /// Calls by item id, and by output index.
    by_item: HashMap<String, usize>,
    by_index: HashMap<u32, usize>,
    id: Option<String>,
    model: Option<String>,
    usage: Option<TokenUsage>,
    end: Option<End>,
}

impl ResponsesStream {
    /// An empty accumulator.
    pub fn new() -> Self {
        ResponsesStream::default()
    }

    /// Takes one event's type and data; appends its typed form to `out` when given.
    pub fn push_event(
        &mut self,
        event_type: &str,
        data: &str,
        out: Option<&mut Vec<ResponsesEvent>>,
    ) {
        let Ok(root) = self.tape.parse(data) else {
            return other(event_type, out);
        };
        if !root.is_object() {
            return other(event_type, out);
        }
        let m = Members::read(root);
        let kind = m.kind.unwrap_or(event_type);
        let ended = self.a.end.is_some();
        let event = match kind {
            "response.output_text.delta" => {
                let delta = m.delta.and_then(|d| d.as_str()).unwrap_or("");
                if !ended {
                    self.a.text.push_str(delta);
                }
                out.map(|out| {
                    (
                        out,
                        ResponsesEvent::OutputTextDelta {
                            output_index: index_of(m.output_index),
                            content_index: index_of(m.content_index),
                            delta: delta.to_owned(),
                        },
                    )
                })
            }
            "response.refusal.delta" => {
                if !ended {
                    self.a
                        .text
                        .push_str(m.delta.and_then(|d| d.as_str()).unwrap_or(""));
                }
                return other(kind, out);
            }
            "response.function_call_arguments.delta" => {
                let delta = m.delta.and_then(|d| d.as_str()).unwrap_or("");
                let output_index = index_of(m.output_index);
                if !ended && let Some(call) = self.a.call(m.item_id, output_index) {
                    call.arguments.push_str(delta);
                }
                out.map(|out| {
                    (
                        out,
                        ResponsesEvent::FunctionCallArgumentsDelta {
                            output_index,
                            delta: delta.to_owned(),
                        },
                    )
                })
            }
            "response.function_call_arguments.done" => {
                let arguments = m.arguments.and_then(|a| a.as_str()).unwrap_or("");
                let output_index = index_of(m.output_index);
                if !ended && let Some(call) = self.a.call(m.item_id, output_index) {
                    arguments.clone_into(&mut call.arguments);
                }
                out.map(|out| {
                    (
                        out,
                        ResponsesEvent::FunctionCallArgumentsDone {
                            output_index,
                            arguments: arguments.to_owned(),
                        },
                    )
                })
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = output_item(m.item, index_of(m.output_index));
                if !ended && item.item_type == "function_call" {
                    let done = kind == "response.output_item.done";
                    let id = m.item.and_then(|i| i.get("id"));
                    if let Some(call) = self.a.call(id, item.output_index) {
                        if !item.call_id.is_empty() {
                            item.call_id.clone_into(&mut call.call_id);
                        }
                        if !item.name.is_empty() {
                            item.name.clone_into(&mut call.name);
                        }
                        if done || call.arguments.is_empty() {
                            item.arguments.clone_into(&mut call.arguments);
                        }
                    }
                }
                out.map(|out| {
                    let event = if kind == "response.output_item.added" {
                        ResponsesEvent::OutputItemAdded(item)
                    } else {
                        ResponsesEvent::OutputItemDone(item)
                    };
                    (out, event)
                })
            }
            "response.created" => {
                let response = m.response;
                let member = |key: &str| {
                    response
                        .and_then(|r| r.get(key))
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                };
                let (id, model) = (member("id"), member("model"));
                if self.a.id.is_none() && !id.is_empty() {
                    self.a.id = Some(id.to_owned());
                }
                if self.a.model.is_none() && !model.is_empty() {
                    self.a.model = Some(model.to_owned());
                }
                out.map(|out| {
                    let event = ResponsesEvent::Created {
                        id: id.to_owned(),
                        model: model.to_owned(),
                    };
                    (out, event)
                })
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let usage = m.response.and_then(|r| r.get("usage")).and_then(usage_of);
                let event = match kind {
                    "response.completed" => ResponsesEvent::Completed { usage },
                    "response.incomplete" => ResponsesEvent::Incomplete {
                        reason: m
                            .response
                            .and_then(|r| r.get("incomplete_details"))
                            .and_then(|d| d.get("reason"))
                            .and_then(|r| r.as_str())
                            .unwrap_or("")
                            .to_owned(),
                        usage,
                    },
                    _ => ResponsesEvent::Failed {
                        message: failed_message(m.response),
                    },
                };
                if !ended {
                    if let Some(model) = m
                        .response
                        .and_then(|r| r.get("model"))
                        .and_then(|v| v.as_str())
                        .filter(|m| !m.is_empty() && self.a.model.is_none())
                    {
                        self.a.model = Some(model.to_owned());
                    }
                    self.a.usage = usage;
                    self.a.end = Some(match &event {
                        ResponsesEvent::Completed { .. } => End::Completed,
                        ResponsesEvent::Incomplete { reason, .. } => {
                            End::Incomplete(reason.clone())
                        }
                        ResponsesEvent::Failed { message } => End::Failed(message.clone()),
                        _ => unreachable!("one of the three"),
                    });
                }
                out.map(|out| (out, event))
            }
            "error" => {
                let message = error_message(&m, root);
                if !ended {
                    self.a.end = Some(End::Error(message.clone()));
                }
                out.map(|out| (out, ResponsesEvent::Error { message }))
            }
            _ => return other(kind, out),
        };
        if let Some((out, event)) = event {
            out.push(event);
        }
    }

    /// The output text so far.
    pub fn output_text(&self) -> &str {
        &self.a.text
    }

    /// The function calls so far, in the order they first appeared.
    pub fn function_calls(&self) -> &[FunctionCall] {
        &self.a.calls
    }

    /// The usage of the ending event, when it reported one.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.a.usage
    }

    /// How the stream ended; `None` while no ending event arrived.
    pub fn end(&self) -> Option<&End> {
        self.a.end.as_ref()
    }

    /// The model of `response.created` (else of the ending event), when one was given.
    pub fn model(&self) -> Option<&str> {
        self.a.model.as_deref()
    }
}

impl Assembly {
    /// The call an event names by item id (else by output index), started when there is none
    /// and fewer than [`MAX_FUNCTION_CALLS`] are tracked.
    fn call(&mut self, item_id: Option<Item<'_>>, output_index: u32) -> Option<&mut FunctionCall> {
        let item_id = item_id.and_then(|i| i.as_str()).filter(|i| !i.is_empty());
        let found = item_id
            .and_then(|id| self.by_item.get(id))
            .or_else(|| self.by_index.get(&output_index))
            .copied();
        let at = match found {
            Some(at) => at,
            None if self.calls.len() < MAX_FUNCTION_CALLS => {
                self.calls.push(FunctionCall::default());
                let at = self.calls.len() - 1;
                self.by_index.entry(output_index).or_insert(at);
                if let Some(id) = item_id {
                    self.by_item.insert(id.to_owned(), at);
                }
                at
            }
            None => return None,
        };
        self.calls.get_mut(at)
    }
}

/// Appends `Other` with `kind` to `out`, when given.
fn other(kind: &str, out: Option<&mut Vec<ResponsesEvent>>) {
    if let Some(out) = out {
        out.push(ResponsesEvent::Other {
            event_type: kind.to_owned(),
        });
    }
}

/// An index: a JSON number whose value is an integer from 0 to 2^32-1; 0 otherwise.
fn index_of(value: Option<Item<'_>>) -> u32 {
    value
        .and_then(|v| v.as_number())
        .and_then(|n| {
            n.parse::<u32>().ok().or_else(|| {
                let f: f64 = n.parse().unwrap_or(f64::NAN);
                (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f)).then_some(f as u32)
            })
        })
        .unwrap_or(0)
}

/// The output item of an `output_item` event.
fn output_item(item: Option<Item<'_>>, output_index: u32) -> OutputItem {
    let member = |key: &str| {
        item.and_then(|i| i.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    OutputItem {
        output_index,
        item_type: member("type"),
        id: member("id"),
        call_id: member("call_id"),
        name: member("name"),
        arguments: member("arguments"),
    }
}

/// A `usage` object's counts (as [`responses_api::reported_usage`] reads them).
fn usage_of(usage: Item<'_>) -> Option<TokenUsage> {
    if !usage.is_object() {
        return None;
    }
    responses_api::usage_from(|key| {
        usage
            .get(key)
            .and_then(|v| v.as_number())
            .and_then(Number::parse)
            .map(|n| number_to_count(&n))
    })
}

/// A failed response's message: `error.message`, else `error` as compact JSON.
fn failed_message(response: Option<Item<'_>>) -> String {
    let error = response
        .and_then(|r| r.get("error"))
        .filter(|e| !e.is_null());
    match error {
        Some(error) => match error.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_owned(),
            None => error.to_json(),
        },
        None => "response.failed without an error message".to_owned(),
    }
}

/// An `error` event's message: `message`, else `error.message`, else a string `error`, else
/// the data as compact JSON.
fn error_message(m: &Members<'_>, data: Item<'_>) -> String {
    if let Some(message) = m.message.and_then(|v| v.as_str()) {
        return message.to_owned();
    }
    if let Some(error) = m.error {
        if let Some(message) = error.get("message").and_then(|v| v.as_str()) {
            return message.to_owned();
        }
        if let Some(text) = error.as_str() {
            return text.to_owned();
        }
    }
    data.to_json()
}

/// A [`sse::Decoder`] feeding a [`ResponsesStream`]: bytes in, typed events out.
#[derive(Debug)]
pub struct ResponsesDecoder {
    decoder: sse::Decoder,
    stream: ResponsesStream,
}

impl ResponsesDecoder {
    /// A decoder holding at most `max_event_bytes` for the event being built (C91).
    pub fn new(max_event_bytes: usize) -> Self {
        ResponsesDecoder {
            decoder: sse::Decoder::with_max_event_bytes(max_event_bytes),
            stream: ResponsesStream::new(),
        }
    }

    /// Decodes `chunk` and pushes every event it completes, appending their typed forms to
    /// `out` when given. `Err` means decoding failed (C91): the events completed before the
    /// failure were pushed, and every later call returns the same error.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut out: Option<&mut Vec<ResponsesEvent>>,
    ) -> Result<(), SseError> {
        let stream = &mut self.stream;
        self.decoder.feed_with(chunk, &mut |event| {
            stream.push_event(event.event_type, event.data, out.as_deref_mut());
        })
    }

    /// Ends the input: a partly built event is discarded (C89). Returns the decoding error if
    /// decoding had stopped (C91).
    pub fn finish(&mut self) -> Result<(), SseError> {
        self.decoder.finish(&mut Vec::new())
    }

    /// What was assembled.
    pub fn stream(&self) -> &ResponsesStream {
        &self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, rest: &str) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{rest}}}\n\n")
    }

    fn decode(input: &str) -> (Vec<ResponsesEvent>, ResponsesDecoder) {
        let mut decoder = ResponsesDecoder::new(sse::MAX_SSE_EVENT_BYTES);
        let mut events = Vec::new();
        decoder.feed(input.as_bytes(), Some(&mut events)).unwrap();
        decoder.finish().unwrap();
        (events, decoder)
    }

    #[test]
    fn text_deltas_are_assembled_and_completed_usage_is_reported() {
        let input = [
            event(
                "response.created",
                r#","response":{"id":"resp_1","model":"gpt-4.1","status":"in_progress","usage":null}"#,
            ),
            event("response.in_progress", r#","response":{}"#),
            event(
                "response.output_text.delta",
                r#","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel""#,
            ),
            event(
                "response.output_text.delta",
                r#","item_id":"msg_1","output_index":0,"content_index":0,"delta":"lo \u00e9""#,
            ),
            event(
                "response.completed",
                r#","response":{"status":"completed","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#,
            ),
        ]
        .concat();
        let (events, decoder) = decode(&input);
        let stream = decoder.stream();
        assert_eq!(stream.output_text(), "Hello é");
        assert_eq!(stream.usage(), Some(TokenUsage::reported(5, 2, 7)));
        assert_eq!(stream.end(), Some(&End::Completed));
        assert_eq!(stream.model(), Some("gpt-4.1"));
        assert_eq!(
            events[0],
            ResponsesEvent::Created {
                id: "resp_1".into(),
                model: "gpt-4.1".into()
            }
        );
        assert_eq!(
            events[1],
            ResponsesEvent::Other {
                event_type: "response.in_progress".into()
            }
        );
        assert_eq!(
            events[3].to_json(),
            r#"{"type":"output-text-delta","output_index":0,"content_index":0,"delta":"lo é"}"#
        );
        assert_eq!(
            events[4].to_json(),
            r#"{"type":"completed","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#
        );
    }

    #[test]
    fn function_calls_take_name_and_id_from_the_item_and_arguments_from_the_deltas() {
        let input = [
            event(
                "response.output_item.added",
                r#","output_index":1,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"","status":"in_progress"}"#,
            ),
            event(
                "response.function_call_arguments.delta",
                r#","item_id":"fc_1","output_index":1,"delta":"{\"city\":""#,
            ),
            event(
                "response.function_call_arguments.delta",
                r#","item_id":"fc_1","output_index":1,"delta":"\"Paris\"}""#,
            ),
            // A second call known only by its output index.
            event(
                "response.function_call_arguments.delta",
                r#","output_index":2,"delta":"{}""#,
            ),
            event(
                "response.output_item.done",
                r#","output_index":2,"item":{"type":"function_call","call_id":"call_2","name":"now","arguments":"{}"}"#,
            ),
        ]
        .concat();
        let (events, decoder) = decode(&input);
        assert_eq!(
            decoder.stream().function_calls(),
            [
                FunctionCall {
                    call_id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                },
                FunctionCall {
                    call_id: "call_2".into(),
                    name: "now".into(),
                    arguments: "{}".into(),
                },
            ]
        );
        assert_eq!(decoder.stream().end(), None);
        assert_eq!(
            events[0].to_json(),
            r#"{"type":"output-item-added","output_index":1,"item_type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":""}"#
        );
        assert_eq!(
            events[1],
            ResponsesEvent::FunctionCallArgumentsDelta {
                output_index: 1,
                delta: "{\"city\":".into()
            }
        );
    }

    #[test]
    fn arguments_done_replaces_what_the_deltas_assembled() {
        let input = [
            event(
                "response.function_call_arguments.delta",
                r#","item_id":"fc_1","output_index":0,"delta":"{\"a\""#,
            ),
            event(
                "response.function_call_arguments.done",
                r#","item_id":"fc_1","output_index":0,"arguments":"{\"a\":1}""#,
            ),
        ]
        .concat();
        let (_, decoder) = decode(&input);
        assert_eq!(decoder.stream().function_calls()[0].arguments, r#"{"a":1}"#);
    }

    #[test]
    fn failed_and_error_events_end_the_stream_with_their_message() {
        let failed = event(
            "response.failed",
            r#","response":{"status":"failed","error":{"code":"server_error","message":"The model failed."},"usage":null}"#,
        );
        let (events, decoder) = decode(&failed);
        assert_eq!(
            decoder.stream().end(),
            Some(&End::Failed("The model failed.".into()))
        );
        assert_eq!(
            events[0].to_json(),
            r#"{"type":"failed","message":"The model failed."}"#
        );
        for (data, message) in [
            (
                r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow down","param":null}"#,
                "Slow down",
            ),
            (
                r#"{"type":"error","error":{"type":"server_error","message":"Overloaded"}}"#,
                "Overloaded",
            ),
            (r#"{"type":"error","error":"plain"}"#, "plain"),
            (
                r#"{"type":"error","code":5}"#,
                r#"{"type":"error","code":5}"#,
            ),
        ] {
            let (_, decoder) = decode(&format!("event: error\ndata: {data}\n\n"));
            assert_eq!(
                decoder.stream().end(),
                Some(&End::Error(message.into())),
                "{data}"
            );
        }
        // A failed response without an error.
        let (_, decoder) = decode(&event("response.failed", r#","response":{"error":null}"#));
        assert_eq!(
            decoder.stream().end().and_then(End::failure_message),
            Some("response.failed without an error message")
        );
    }

    #[test]
    fn the_first_end_wins_and_later_events_change_nothing() {
        let input = [
            event(
                "response.incomplete",
                r#","response":{"incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":1,"output_tokens":9}}"#,
            ),
            event("response.output_text.delta", r#","delta":"late""#),
            event("error", r#","message":"late""#),
        ]
        .concat();
        let (events, decoder) = decode(&input);
        assert_eq!(events.len(), 3);
        let stream = decoder.stream();
        assert_eq!(
            stream.end(),
            Some(&End::Incomplete("max_output_tokens".into()))
        );
        assert_eq!(stream.usage(), Some(TokenUsage::reported(1, 9, 10)));
        assert_eq!(stream.output_text(), "");
    }

    #[test]
    fn other_events_and_data_that_is_not_an_object_are_never_errors() {
        let input = "data: [DONE]\n\nevent: ping\ndata: not json\n\ndata: {\"no\":\"type\"}\n\nevent: x\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"delta\":\"hm\"}\n\n";
        let (events, decoder) = decode(input);
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                ResponsesEvent::Other { event_type } => event_type.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "message",
                "ping",
                "message",
                "response.reasoning_summary_text.delta"
            ]
        );
        assert_eq!(decoder.stream().end(), None);
        assert_eq!(decoder.stream().output_text(), "");
    }

    #[test]
    fn the_kind_falls_back_to_the_sse_event_type() {
        let (events, decoder) = decode(
            "event: response.output_text.delta\ndata: {\"delta\":\"Hi\",\"output_index\":1.0,\"content_index\":-1}\n\n",
        );
        assert_eq!(decoder.stream().output_text(), "Hi");
        assert_eq!(
            events[0],
            ResponsesEvent::OutputTextDelta {
                output_index: 1,
                content_index: 0,
                delta: "Hi".into()
            }
        );
    }

    #[test]
    fn refusal_deltas_count_as_output_text() {
        let (events, decoder) = decode(&event("response.refusal.delta", r#","delta":"No.""#));
        assert_eq!(decoder.stream().output_text(), "No.");
        assert_eq!(
            events,
            [ResponsesEvent::Other {
                event_type: "response.refusal.delta".into()
            }]
        );
    }

    #[test]
    fn function_calls_beyond_the_limit_are_not_tracked() {
        let mut stream = ResponsesStream::new();
        for i in 0..=MAX_FUNCTION_CALLS {
            let data = format!(
                r#"{{"type":"response.function_call_arguments.delta","item_id":"fc_{i}","output_index":{i},"delta":"x"}}"#
            );
            stream.push_event("message", &data, None);
        }
        assert_eq!(stream.function_calls().len(), MAX_FUNCTION_CALLS);
    }

    #[test]
    fn decoding_errors_come_from_the_sse_layer() {
        let mut decoder = ResponsesDecoder::new(16);
        let mut events = Vec::new();
        let error = decoder
            .feed(b"data: 0123456789abcdefghij\n\n", Some(&mut events))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "SSE event exceeds the maximum size of 16 bytes"
        );
        assert_eq!(decoder.finish().unwrap_err(), error);
    }
}
