//! C92–C105: decoding any bytes and pushing every event through the chat layer never panics,
//! the assembled result always serialises, and `ChatDecoder` (bytes in, delta lines out) gives
//! exactly what the decoder plus one push (type and data) per event gives.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openai_connector::chat_stream::{ChatDecoder, ChatStream, Step};
use openai_connector::sse::{Decoder, MAX_SSE_EVENT_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::with_max_event_bytes(MAX_SSE_EVENT_BYTES);
    let mut events = Vec::new();
    // Chunks of 7 bytes: chunking is sse_decoder's concern; this exercises the buffers.
    for chunk in data.chunks(7) {
        if decoder.feed(chunk, &mut events).is_err() {
            break;
        }
    }
    let _ = decoder.finish(&mut events);
    let mut stream = ChatStream::new();
    let mut lines = String::new();
    for event in &events {
        match stream.push_event(&event.event_type, &event.data) {
            Ok(Step::Chunk(chunk)) => {
                for delta in chunk.deltas() {
                    lines.push_str(&delta.to_json());
                    lines.push('\n');
                }
                let _ = chunk.to_json();
            }
            Ok(Step::Done | Step::Skipped) => {}
            Err(error) => {
                assert_eq!(stream.error(), Some(&error));
                let _ = error.to_string();
            }
        }
    }
    let result = stream.finish().to_json();
    assert!(openai_connector::json::Value::parse(result.as_bytes()).is_ok());
    let _ = stream.completion_text();
    let _ = stream.token_usage();
    let _ = stream.first_model();

    let mut chat = ChatDecoder::new(MAX_SSE_EVENT_BYTES);
    let mut chat_lines = String::new();
    for chunk in data.chunks(5) {
        if chat.feed(chunk, &mut chat_lines).is_err() {
            break;
        }
    }
    let _ = chat.finish();
    assert_eq!(chat_lines, lines);
    assert_eq!(chat.chat().finish_json(), result);
});
