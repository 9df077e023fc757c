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
            // WIT 0.3.0: the lines are bytes, promised to be UTF-8 (and each call's whole).
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
            Ok(native.chat().finish_json()),
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
