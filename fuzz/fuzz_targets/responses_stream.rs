//! The Responses stream layer (`responses_stream`): decoding any bytes and pushing every event
//! never panics, every event serialises as JSON, and the result does not depend on the
//! chunking: `ResponsesDecoder` fed in 5-byte chunks gives exactly the events and the assembly
//! of the SSE decoder in 7-byte chunks plus one push (type and data) per event. Once the
//! stream has ended, the end never changes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openai_connector::json::Value;
use openai_connector::responses_stream::{ResponsesDecoder, ResponsesStream};
use openai_connector::sse::{Decoder, MAX_SSE_EVENT_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::with_max_event_bytes(MAX_SSE_EVENT_BYTES);
    let mut events = Vec::new();
    for chunk in data.chunks(7) {
        if decoder.feed(chunk, &mut events).is_err() {
            break;
        }
    }
    let _ = decoder.finish(&mut events);
    let mut stream = ResponsesStream::new();
    let mut typed = Vec::new();
    let mut first_end = None;
    for event in &events {
        stream.push_event(&event.event_type, &event.data, Some(&mut typed));
        match (&first_end, stream.end()) {
            (None, Some(end)) => first_end = Some(end.clone()),
            (Some(first), end) => assert_eq!(Some(first), end),
            (None, None) => {}
        }
    }
    assert_eq!(typed.len(), events.len(), "one typed event per event");
    for event in &typed {
        assert!(Value::parse(event.to_json().as_bytes()).is_ok());
    }

    let mut whole = ResponsesDecoder::new(MAX_SSE_EVENT_BYTES);
    let mut whole_typed = Vec::new();
    for chunk in data.chunks(5) {
        if whole.feed(chunk, Some(&mut whole_typed)).is_err() {
            break;
        }
    }
    let _ = whole.finish();
    assert_eq!(whole_typed, typed);
    let assembled = whole.stream();
    assert_eq!(assembled.output_text(), stream.output_text());
    assert_eq!(assembled.function_calls(), stream.function_calls());
    assert_eq!(assembled.usage(), stream.usage());
    assert_eq!(assembled.end(), stream.end());
    assert_eq!(assembled.model(), stream.model());
});
