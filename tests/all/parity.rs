//! The component against the same code built natively, on inputs aimed at code that is
//! compiled differently for wasm (the `simd128` string scan of `json.rs`, the per-chunk UTF-8
//! validation of `sse.rs`). Unit tests only run natively, so this is where the wasm paths are
//! checked.

use crate::support::harness;
use openai_connector::chat_stream::ChatDecoder;
use openai_connector_harness::OutboundPolicy;
use std::sync::Arc;

/// Content strings (as JSON string bodies, already escaped) with a character that ends a plain
/// run (`"`, `\`, a control character) at every offset of strings up to 40 bytes, plus one
/// multi-byte character near each end, so that every 16-byte block position and the tail are
/// exercised.
fn contents() -> Vec<String> {
    let mut out = Vec::new();
    for len in 0..40 {
        for at in 0..=len {
            for escape in [r#"\""#, r"\\", r"\n", r"\u0001", r"\/", "é"] {
                let mut s = "x".repeat(at);
                s.push_str(escape);
                s.push_str(&"y".repeat(len - at));
                out.push(s);
            }
        }
    }
    out.push("😀".repeat(20));
    out
}

fn stream(contents: &[String]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "data: {{\"id\":\"c\",\"choices\":[{{\"index\":{},\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n",
                i % 3
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    body
}

/// Equal texts, or a panic naming the first line that differs (the texts are long).
fn same_lines(got: &str, want: &str, what: &str) {
    for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{what}: line {n}");
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths");
}

#[tokio::test]
async fn chat_decoder_in_the_component_equals_the_native_one() {
    // C80, C81, C92–C105: the same delta lines and completion from the component's
    // `sse.chat-decoder` as from `ChatDecoder` natively, whole and in chunks of many sizes, so
    // that multi-byte characters are cut at chunk ends both below 64 bytes (split as bytes) and
    // above (validated per chunk, split as text).
    let body = stream(&contents());
    let mut instance = harness()
        .instantiate(Arc::new(OutboundPolicy::deny_all()))
        .await
        .unwrap();
    for chunk in [
        body.len(),
        1,
        2,
        3,
        7,
        17,
        33,
        64,
        65,
        99,
        100,
        257,
        1000,
        4096,
    ] {
        let mut native = ChatDecoder::new(1 << 20);
        let mut want = String::new();
        for piece in body.chunks(chunk) {
            native.feed(piece, &mut want).unwrap();
        }
        native.finish().unwrap();
        let decoder = instance.chat_decoder(1 << 20).await.unwrap();
        let mut got = String::new();
        for piece in body.chunks(chunk) {
            let lines = instance
                .chat_decoder_feed(decoder, piece)
                .await
                .unwrap()
                .unwrap();
            // Since WIT 0.3.0 the lines are bytes, promised to be UTF-8 (and each call's whole).
            got.push_str(std::str::from_utf8(&lines).expect("UTF-8 lines"));
        }
        instance
            .chat_decoder_finish(decoder)
            .await
            .unwrap()
            .unwrap();
        same_lines(&got, &want, &format!("chunks of {chunk}"));
        assert_eq!(
            String::from_utf8(instance.chat_decoder_completion(decoder).await.unwrap()),
            Ok(native.completion_json()),
            "completion, chunks of {chunk}"
        );
    }
    // Sanity: the lines do carry the escapes.
    let mut native = ChatDecoder::new(1 << 20);
    let mut lines = String::new();
    native.feed(&body, &mut lines).unwrap();
    assert!(
        lines.contains(r#""content":"xx\"yyy""#),
        "{}",
        &lines[..200]
    );
}

#[tokio::test]
async fn a_raw_control_character_is_refused_alike_at_every_offset() {
    // C96: a chunk whose JSON is invalid (a raw control character inside a string) ends the
    // stream with the same error in the component as natively, wherever the character is.
    let mut instance = harness()
        .instantiate(Arc::new(OutboundPolicy::deny_all()))
        .await
        .unwrap();
    for at in 0..40 {
        let mut body = stream(&["ok".to_owned()]);
        body.truncate(body.len() - b"data: [DONE]\n\n".len());
        body.extend_from_slice(
            format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\u{1}{}\"}}}}]}}\n\n",
                "a".repeat(at),
                "b".repeat(40 - at)
            )
            .as_bytes(),
        );
        let mut native = ChatDecoder::new(1 << 20);
        let mut want = String::new();
        native.feed(&body, &mut want).unwrap();
        let decoder = instance.chat_decoder(1 << 20).await.unwrap();
        let got = instance
            .chat_decoder_feed(decoder, &body)
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8(got).expect("UTF-8 lines");
        same_lines(&got, &want, &format!("control character at {at}"));
        let completion =
            String::from_utf8(instance.chat_decoder_completion(decoder).await.unwrap()).unwrap();
        assert_eq!(completion, native.chat().finish_json(), "at {at}");
        assert!(native.chat().error().is_some(), "at {at}: {completion}");
    }
}

/// An event stream with every kind of line (C79–C88): single- and multi-line data, types,
/// IDs, retries, comments, the three line ends, non-ASCII text, invalid UTF-8 (replaced, C81)
/// in a few events,
/// an unterminated event at the end (discarded, C89).
fn mixed_stream() -> Vec<u8> {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    for i in 0..120 {
        let line_end: &[u8] = [&b"\n"[..], b"\r\n", b"\r"][i % 3];
        let data = format!(
            "{{\"n\":{i},\"text\":\"{}\u{e9}\u{1F600}\"}}",
            "x".repeat(i)
        );
        let mut event = Vec::new();
        match i % 5 {
            0 => event.extend_from_slice(format!("data: {data}").as_bytes()),
            1 => event.extend_from_slice(
                format!("event: e{i}{}data:{data}{}data: second", "\n", "\n").as_bytes(),
            ),
            2 => event
                .extend_from_slice(format!("id: {i}\nretry: {}\ndata: {data}", 100 + i).as_bytes()),
            // Invalid UTF-8 twice only: a chunk with any is decoded line by line, as bytes.
            3 if i % 40 == 3 => {
                event.extend_from_slice(b": comment\ndata: bad \xFF\xC3 bytes ");
                event.extend_from_slice(data.as_bytes());
            }
            3 => event.extend_from_slice(format!(": comment\ndata: {data}").as_bytes()),
            _ => event.extend_from_slice(format!("data\ndata: {data}").as_bytes()),
        }
        for line in event.split(|&b| b == b'\n') {
            body.extend_from_slice(line);
            body.extend_from_slice(line_end);
        }
        body.extend_from_slice(line_end);
    }
    body.extend_from_slice(b"data: never dispatched");
    body
}

#[tokio::test]
async fn decoder_feed_raw_spans_gives_the_events_of_feed() {
    // C79–C91: `feed-raw-spans` (the CLI's path) gives exactly the events of `feed`, which gives
    // those of the native decoder, in chunks of every size class: below 64 bytes, above (data
    // lent from the chunk), and the whole stream at once.
    use openai_connector::sse::Decoder;
    use openai_connector_harness::runtime::SpanEvent;
    type Row = (String, String, Option<String>, Option<u64>);
    let span_row = |e: SpanEvent<'_>| -> Row {
        (
            e.event_type.to_owned(),
            e.data.into_owned(),
            e.last_event_id.map(str::to_owned),
            e.retry,
        )
    };
    let body = mixed_stream();
    let mut native = Decoder::new();
    let mut events = Vec::new();
    native.feed(&body, &mut events).unwrap();
    native.finish(&mut events).unwrap();
    let want: Vec<Row> = events
        .into_iter()
        .map(|e| (e.event_type, e.data, e.last_event_id, e.retry))
        .collect();
    assert_eq!(want.len(), 120);

    let mut instance = harness()
        .instantiate(Arc::new(OutboundPolicy::deny_all()))
        .await
        .unwrap();
    for size in [1, 5, 63, 64, 65, 200, 1000, 4096, body.len()] {
        let decoders = [
            instance.sse_decoder(1 << 20).await.unwrap(),
            instance.sse_decoder(1 << 20).await.unwrap(),
        ];
        let mut got: [Vec<Row>; 2] = Default::default();
        let mut lent_raw = 0;
        for chunk in body.chunks(size) {
            let events = instance
                .sse_feed(decoders[0], chunk)
                .await
                .unwrap()
                .unwrap();
            got[0].extend(events.iter().map(|e| {
                (
                    e.event_type.clone(),
                    e.data.clone(),
                    e.last_event_id.clone(),
                    e.retry,
                )
            }));
            let spans = instance
                .sse_feed_raw_spans(decoders[1], chunk)
                .await
                .unwrap()
                .unwrap();
            lent_raw += spans.data_in_chunk();
            got[1].extend(spans.events(chunk).unwrap().into_iter().map(span_row));
        }
        for (decoder, got) in decoders.into_iter().zip(&got) {
            assert!(
                instance
                    .sse_finish(decoder)
                    .await
                    .unwrap()
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(got, &want, "chunks of {size}");
        }
        // Raw spans need no UTF-8 pass, so chunks of any size may lend them, and the whole
        // stream lends every event of one data line (72), the invalid ones included.
        if size == body.len() {
            assert_eq!(lent_raw, 72);
        } else if size >= 200 {
            assert!(
                lent_raw >= 10,
                "chunks of {size}: {lent_raw} events lent raw"
            );
        }
    }
}
