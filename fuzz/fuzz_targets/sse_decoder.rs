//! C80: the events (and the error, C91) never depend on how the input is split into chunks,
//! nor on whether they are lent with raw data (`Decoder::feed_frames`, decoded by the caller).
//!
//! Input layout: byte 0 picks the maximum event size (small values exercise C91), bytes 1..9
//! give chunk lengths used in turn, the rest is the SSE stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use openai_connector::sse::{Decoder, Event, MAX_SSE_EVENT_BYTES, SseError, decode_all};

/// `decoder.feed`, or `decoder.feed_frames` with each event decoded and owned.
fn feed(
    decoder: &mut Decoder,
    chunk: &[u8],
    events: &mut Vec<Event>,
    frames: bool,
) -> Result<(), SseError> {
    if !frames {
        return decoder.feed(chunk, events);
    }
    decoder.feed_frames(chunk, &mut |e| events.push(e.to_event()))
}

fn decode_chunked(
    input: &[u8],
    lengths: &[u8],
    max: usize,
    frames: bool,
) -> (Vec<Event>, Option<SseError>) {
    let mut decoder = Decoder::with_max_event_bytes(max);
    let mut events = Vec::new();
    let mut rest = input;
    let mut turn = 0;
    while !rest.is_empty() {
        let mut length = lengths
            .get(turn % lengths.len().max(1))
            .copied()
            .unwrap_or(1);
        turn += 1;
        if length == 0 {
            // An empty chunk changes nothing; then take one byte so that the loop progresses.
            if let Err(error) = feed(&mut decoder, b"", &mut events, frames) {
                return (events, Some(error));
            }
            length = 1;
        }
        let (chunk, tail) = rest.split_at(usize::from(length).min(rest.len()));
        rest = tail;
        if let Err(error) = feed(&mut decoder, chunk, &mut events, frames) {
            // C91: decoding stopped; the same error again, nothing more.
            let before = events.len();
            assert_eq!(
                feed(&mut decoder, b"\n\n", &mut events, frames),
                Err(error.clone())
            );
            assert_eq!(decoder.finish(&mut events), Err(error.clone()));
            assert_eq!(events.len(), before);
            return (events, Some(error));
        }
    }
    let error = decoder.finish(&mut events).err();
    (events, error)
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let (lengths, input) = rest.split_at(rest.len().min(8));
    let max = if limit >= 128 {
        MAX_SSE_EVENT_BYTES
    } else {
        usize::from(limit)
    };
    let one_shot = decode_all(input, max);
    for frames in [false, true] {
        assert_eq!(decode_chunked(input, lengths, max, frames), one_shot);
        assert_eq!(decode_chunked(input, &[1], max, frames), one_shot);
    }
    assert_eq!(decode_chunked(input, &[255], max, true), one_shot);
    for event in &one_shot.0 {
        assert!(!event.event_type.is_empty());
        if max != MAX_SSE_EVENT_BYTES {
            assert!(event.data.len() < max);
        }
    }
});
