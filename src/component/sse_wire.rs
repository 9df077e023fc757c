//! The `sse` interface's resources: the decoder (event records, and event spans that lend
//! data from the chunk), the chat-stream accumulator, the chat decoder and the Responses
//! decoder.

use super::bindings::exports::connector::openai::sse as wit_sse;
use super::conv;
use crate::{chat_stream, responses_stream, sse};
use std::cell::RefCell;

/// The `sse.decoder` resource.
pub(super) struct DecoderResource(RefCell<sse::Decoder>);

/// The `sse.chat-stream` resource.
pub(super) struct ChatStreamResource(RefCell<chat_stream::ChatStream>);

/// The `sse.chat-decoder` resource.
pub(super) struct ChatDecoderResource(RefCell<chat_stream::ChatDecoder>);

/// The `sse.responses-decoder` resource.
pub(super) struct ResponsesDecoderResource(RefCell<responses_stream::ResponsesDecoder>);

impl wit_sse::Guest for super::Component {
    type Decoder = DecoderResource;
    type ChatStream = ChatStreamResource;
    type ChatDecoder = ChatDecoderResource;
    type ResponsesDecoder = ResponsesDecoderResource;
}

impl wit_sse::GuestDecoder for DecoderResource {
    fn new(max_event_bytes: u32) -> Self {
        DecoderResource(RefCell::new(sse::Decoder::with_max_event_bytes(
            max_event_bytes as usize,
        )))
    }

    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<wit_sse::Event>, String> {
        let mut events = Vec::new();
        let result = self.0.borrow_mut().feed(&chunk, &mut events);
        let empty = events.is_empty();
        output_then_error(result, events, empty)
            .map(|events| events.into_iter().map(conv::event).collect())
    }

    fn feed_raw_spans(&self, chunk: Vec<u8>) -> Result<wit_sse::EventSpans, String> {
        let mut spans = spans_for(&chunk);
        let result = self
            .0
            .borrow_mut()
            .feed_frames(&chunk, &mut |event| raw_span(&mut spans, &chunk, event));
        let empty = spans.retries.is_empty();
        output_then_error(result, spans, empty)
    }

    fn finish(&self) -> Result<Vec<wit_sse::Event>, String> {
        let mut events = Vec::new();
        let result = self.0.borrow_mut().finish(&mut events);
        let empty = events.is_empty();
        output_then_error(result, events, empty)
            .map(|events| events.into_iter().map(conv::event).collect())
    }
}

/// An empty `event-spans` sized for the events of `chunk`.
fn spans_for(chunk: &[u8]) -> wit_sse::EventSpans {
    wit_sse::EventSpans {
        // Only types, IDs and data not lent from the chunk: usually little.
        text: Vec::new(),
        // Room for events of 128 bytes or more (four numbers each) without growing.
        spans: Vec::with_capacity(chunk.len() / 32),
        retries: Vec::with_capacity(chunk.len() / 128),
    }
}

/// A WIT result carries output or an error, not both: the output of the events completed
/// before a failure (events, event spans, delta lines; `empty` when there is none) is
/// returned now, and the decoder, which keeps its error (`sse::Decoder::feed`), reports it on
/// the next call.
fn output_then_error<T>(
    result: Result<(), sse::SseError>,
    output: T,
    empty: bool,
) -> Result<T, String> {
    match result {
        Err(e) if empty => Err(e.to_string()),
        _ => Ok(output),
    }
}

/// In `event-spans`: the ID length that means "no ID", and the data start that means "in
/// `text`".
const ABSENT: u32 = u32::MAX;

/// A length or offset as packed. In a 32-bit linear memory every one fits in u32, and none can
/// be u32::MAX (the memory holds more than this one string), so none reads as [`ABSENT`].
fn packed_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(ABSENT - 1)
}

/// Appends `e` to `spans` for `feed-raw-spans`: data in `chunk` (text, or raw bytes that
/// `sse::Decoder::feed_frames` lent without a UTF-8 pass) is given by its place, undecoded;
/// other data is decoded into `text`, which stays valid UTF-8. The four numbers are appended
/// at once.
fn raw_span(spans: &mut wit_sse::EventSpans, chunk: &[u8], e: sse::FrameRef<'_>) {
    let text = &mut spans.text;
    text.extend_from_slice(e.event_type.as_bytes());
    let bytes = match e.data {
        sse::FrameData::Text(data) => data.as_bytes(),
        sse::FrameData::Raw(bytes) => bytes,
    };
    let (start, len) = match place_in(chunk, bytes) {
        Some(offset) => (offset, bytes.len()),
        None => {
            let data = e.data.decode();
            text.extend_from_slice(data.as_bytes());
            (ABSENT, data.len())
        }
    };
    let id_len = match e.last_event_id {
        Some(id) => {
            text.extend_from_slice(id.as_bytes());
            packed_u32(id.len())
        }
        None => ABSENT,
    };
    spans.spans.extend_from_slice(&[
        packed_u32(e.event_type.len()),
        start,
        packed_u32(len),
        id_len,
    ]);
    spans.retries.push(e.retry);
}

/// Where `part` starts in `chunk`, found by address, when it is a run of the chunk's bytes
/// (and not one of the decoder's buffers).
fn place_in(chunk: &[u8], part: &[u8]) -> Option<u32> {
    let offset = (part.as_ptr() as usize).wrapping_sub(chunk.as_ptr() as usize);
    (offset <= chunk.len() && part.len() <= chunk.len() - offset).then(|| packed_u32(offset))
}

impl wit_sse::GuestChatStream for ChatStreamResource {
    fn new() -> Self {
        ChatStreamResource(RefCell::new(chat_stream::ChatStream::new()))
    }

    fn push(&self, data: String) -> Result<Vec<String>, String> {
        self.push_event("message".to_owned(), data)
    }

    fn push_event(&self, event_type: String, data: String) -> Result<Vec<String>, String> {
        match self
            .0
            .borrow_mut()
            .push_event(&event_type, &data)
            .map_err(|e| e.to_string())?
        {
            chat_stream::Step::Chunk(chunk) => Ok(chunk.delta_lines()),
            chat_stream::Step::Skipped | chat_stream::Step::Done => Ok(Vec::new()),
        }
    }

    fn finish(&self) -> String {
        self.0.borrow().finish_json()
    }
}

impl wit_sse::GuestChatDecoder for ChatDecoderResource {
    fn new(max_event_bytes: u32) -> Self {
        ChatDecoderResource(RefCell::new(chat_stream::ChatDecoder::new(
            max_event_bytes as usize,
        )))
    }

    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut lines = String::new();
        let result = self.0.borrow_mut().feed(&chunk, &mut lines);
        let empty = lines.is_empty();
        output_then_error(result, lines.into_bytes(), empty)
    }

    fn finish(&self) -> Result<(), String> {
        self.0.borrow_mut().finish().map_err(|e| e.to_string())
    }

    fn completion(&self) -> Vec<u8> {
        self.0.borrow().completion_json().into_bytes()
    }
}

impl wit_sse::GuestResponsesDecoder for ResponsesDecoderResource {
    fn new(max_event_bytes: u32) -> Self {
        ResponsesDecoderResource(RefCell::new(responses_stream::ResponsesDecoder::new(
            max_event_bytes as usize,
        )))
    }

    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<wit_sse::ResponsesEvent>, String> {
        let mut events = Vec::new();
        let result = self.0.borrow_mut().feed(&chunk, Some(&mut events));
        let empty = events.is_empty();
        output_then_error(result, events, empty)
            .map(|events| events.into_iter().map(conv::responses_event).collect())
    }

    fn finish(&self) -> Result<(), String> {
        self.0.borrow_mut().finish().map_err(|e| e.to_string())
    }

    fn output_text(&self) -> String {
        self.0.borrow().stream().output_text().to_owned()
    }

    fn function_calls(&self) -> Vec<wit_sse::FunctionCall> {
        let decoder = self.0.borrow();
        let calls = decoder.stream().function_calls();
        calls
            .iter()
            .map(|c| wit_sse::FunctionCall {
                call_id: c.call_id.clone(),
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            })
            .collect()
    }

    fn usage(&self) -> Option<wit_sse::TokenUsage> {
        self.0.borrow().stream().usage().map(conv::usage)
    }

    fn end(&self) -> Option<wit_sse::ResponsesEnd> {
        self.0.borrow().stream().end().map(conv::responses_end)
    }
}
