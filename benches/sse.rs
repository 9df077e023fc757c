//! Throughput of SSE decoding (C79–C91) and chat-completion assembly (C92–C105), natively and
//! inside the component, next to the `eventsource-stream` crate, in the same run.
//!
//! `cargo bench -p openai-connector-harness --bench sse`
//!
//! Two corpora, generated in-process from a fixed seed and also written to
//! `target/sse-corpora/` for `benches/node/eventsource-parser.mjs`:
//!
//! - `chat`: a realistic OpenAI chat stream (role chunk, ~200-byte `chat.completion.chunk`
//!   content events, finish chunk, usage chunk, `[DONE]`), about 4 MiB, delivered in
//!   [`CHAT_CHUNK`]-byte chunks.
//! - `large`: the same shape with every content event exactly 4 KiB, about 4 MiB, delivered in
//!   [`LARGE_CHUNK`]-byte chunks (one TCP segment's payload each).
//!
//! Per corpus (throughput in decimal MB/s of corpus bytes):
//!
//! - `decoder_native`: `sse::Decoder` fed the corpus's chunking.
//! - `decoder_native_16k`: the same fed 16 KiB batches, the batching the component gets.
//! - `decoder_native_lent`: `Decoder::feed_with`, the corpus's chunking: each event is lent to
//!   a callback (as `chat-decoder` and the stream executions use it), so a single-line event
//!   is not copied at all.
//! - `decoder_component`: the `sse.decoder` resource on a fresh instance, fed 16 KiB batches;
//!   events are lifted into host strings.
//! - `decoder_component_raw_spans`: the same through `feed-raw-spans`: the component frames
//!   the batch without a UTF-8 pass over the data it gives by place, and the host decodes it,
//!   as `openai-connector sse decode` does (`EventSpans::events`).
//! - `decoder_native_lent_16k`: the same fed 16 KiB batches.
//! - `decoder_native_frames_16k`: `Decoder::feed_frames` fed 16 KiB batches: the component's
//!   framing for `feed-raw-spans` at native speed, with no UTF-8 pass over the data it lends.
//! - `host_floor_16k`: no decoding at all: what the host pays per 16 KiB batch whatever the
//!   component does (the batch copied into other memory, as the canonical ABI copies it into the
//!   guest's, and the one UTF-8 pass over it that `EventSpans::events` makes). With
//!   `decoder_native_frames_16k`, a bound on what any `feed-raw-spans` call can reach.
//! - `eventsource_stream`: the `eventsource-stream` crate over an in-memory stream of the same
//!   chunks, polled with `futures::executor::block_on`.
//! - `assembly_native`: decoder plus `ChatStream::push_event` of every event, then the completion
//!   JSON.
//! - `assembly_native_wit_work`: the same plus what the WIT `chat-stream.push` export also does
//!   per chunk (serialise its delta lines), so that it is the native twin of the next one.
//! - `assembly_native_batched`: `ChatDecoder` (decoder and chat layer in one, delta lines out) fed
//!   16 KiB batches, then the completion JSON: the native twin of `assembly_component_batched`.
//! - `assembly_component`: decoder and chat-stream resources, 16 KiB batches, one `push` call
//!   per event (the event data crosses into the guest, the delta lines come back).
//! - `assembly_component_batched`: the `sse.chat-decoder` resource, 16 KiB batches: one call
//!   per batch, bytes in and the batch's delta lines out, then the completion JSON.
//! - `assembly_component_blank_pushes`: the same number of `push` calls with blank data (which
//!   the chat layer skips): the price of the per-event boundary crossings alone.
//! - `pipeline_native`, `pipeline_component`: the production path with its batching, over
//!   loopback HTTP. Native: hyper GET, then decoder and chat layer on every body frame. Component:
//!   a `stream` execution (`stream: true`) through the executor, which decodes and assembles
//!   inside the guest and crosses the boundary once per body read, passing the bytes through
//!   (C41) and reporting the usage of the corpus's usage chunk (C109). Neither builds the
//!   completion JSON, which a `stream` execution does not produce.
//!
//! A third group, `sse/responses`, compares the Responses stream layer with the chat layer on
//! comparable bytes, in the same run (`cargo bench -p openai-connector-harness --bench sse --
//! responses` runs it alone). Its corpus, `responses`, is an OpenAI Responses stream
//! (`response.created`, ..., ~230-byte `response.output_text.delta` events with the `chat`
//! corpus's content pieces, then `response.output_text.done`, `content_part.done`,
//! `output_item.done` and `response.completed`, which each repeat the whole text, about 15% of
//! the bytes), about 4 MiB, in 16 KiB batches:
//!
//! - `chat_assembly_native_batched`, `chat_assembly_component_batched`: the `chat` corpus through
//!   `ChatDecoder` and the `sse.chat-decoder` resource (the rows of the `sse/chat` group).
//! - `responses_assembly_native_batched`: `ResponsesDecoder` fed the batches, typed events out
//!   (kept until the next batch), then the assembled text.
//! - `responses_assembly_component_batched`: the `sse.responses-decoder` resource on a fresh
//!   instance: one `feed` per batch (bytes in, typed events lifted into host values), then the
//!   assembled text, calls, usage and end.

use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use openai_connector::chat_stream::{ChatDecoder, ChatStream, Step};
use openai_connector::responses_stream::{End, ResponsesDecoder};
use openai_connector::sse::{Decoder, MAX_SSE_EVENT_BYTES};
use openai_connector_harness::runtime::{Instance, uncut};
use openai_connector_harness::{
    CodeCache, ConnectorFile, Executor, Harness, OutboundPolicy, Prepared, Settings, Started,
    StreamItem,
};
use std::convert::Infallible;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Chunk size the `chat` corpus is delivered in.
const CHAT_CHUNK: usize = 200;
/// Chunk size the `large` corpus is delivered in.
const LARGE_CHUNK: usize = 1460;
/// Batch size of the component's `sse.decoder.feed` calls.
const COMPONENT_BATCH: usize = 16 * 1024;
/// Approximate corpus size.
const CORPUS_BYTES: usize = 4 << 20;
/// Size of every content event of the `large` corpus.
const LARGE_EVENT_BYTES: usize = 4096;

/// The corpora: deterministic, so that every run and the Node script see the same bytes.
mod corpus {
    /// splitmix64: a fixed-seed generator, enough to vary the content.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Content pieces as they appear inside a JSON string (escapes included), with the
    /// non-ASCII text OpenAI sends raw.
    const PIECES: &[&str] = &[
        " the",
        " model",
        " stream",
        " of",
        " tokens",
        ",",
        ".",
        " and",
        " a",
        " connector",
        " Kibana",
        " response",
        " with",
        " data",
        " 42",
        "\\n",
        "\\n\\n",
        " \\\"quoted\\\"",
        " café",
        " über",
        " —",
        " 😀",
        " `code`",
        " **bold**",
        "ing",
        " is",
    ];

    const HEAD: &str = r#"data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567","choices":[{"index":0,"delta":{"#;
    const TAIL: &str = r#"},"logprobs":null,"finish_reason":null}]}"#;

    fn content_event(out: &mut Vec<u8>, content: &str) {
        out.extend_from_slice(HEAD.as_bytes());
        out.extend_from_slice(br#""content":""#);
        out.extend_from_slice(content.as_bytes());
        out.push(b'"');
        out.extend_from_slice(TAIL.as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn stream(target: usize, mut content: impl FnMut(&mut Rng) -> String) -> Vec<u8> {
        let mut rng = Rng(0x5EED_0F55_E000_0001);
        let mut out = Vec::with_capacity(target + 4096);
        out.extend_from_slice(HEAD.as_bytes());
        out.extend_from_slice(br#""role":"assistant","content":"","refusal":null"#);
        out.extend_from_slice(TAIL.as_bytes());
        out.extend_from_slice(b"\n\n");
        while out.len() < target {
            content_event(&mut out, &content(&mut rng));
        }
        out.extend_from_slice(
            br#"data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

data: {"id":"chatcmpl-C3ZbJbEo8y2Jt4aXlT6rXpRzGsJmQ","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_cbf1785567","choices":[],"usage":{"prompt_tokens":1017,"completion_tokens":52311,"total_tokens":53328,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}

data: [DONE]

"#,
        );
        out
    }

    /// The `chat` corpus: content events of one to three pieces (~200 bytes each).
    pub fn chat(target: usize) -> Vec<u8> {
        stream(target, |rng| {
            let n = 1 + rng.below(3);
            (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
        })
    }

    /// The `responses` corpus: an OpenAI Responses stream whose `response.output_text.delta`
    /// events carry the `chat` corpus's pieces (one to three each), closed by the events that
    /// repeat the whole text and by `response.completed` with usage.
    pub fn responses(target: usize) -> Vec<u8> {
        const ID: &str = "resp_68a1f0c2b7d48190a3e5c1f2d9b04e7c0a1b2c3d4e5f6a7b";
        const ITEM: &str = "msg_68a1f0c3a2e88190b1c2d3e4f5a6b7c80a1b2c3d4e5f6a7b";
        let response = |status: &str, output: &str, usage: &str| {
            format!(
                r#"{{"id":"{ID}","object":"response","created_at":1767225600,"status":"{status}","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{output}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{{"effort":null,"summary":null}},"store":true,"temperature":1.0,"text":{{"format":{{"type":"text"}},"verbosity":"medium"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{usage},"user":null,"metadata":{{}}}}"#
            )
        };
        let event = |out: &mut Vec<u8>, kind: &str, sequence: usize, rest: &str| {
            out.extend_from_slice(
                format!(
                    "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{sequence}{rest}}}\n\n"
                )
                .as_bytes(),
            );
        };
        let message = |status: &str, text: &str| {
            format!(
                r#"{{"id":"{ITEM}","type":"message","status":"{status}","content":[{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}],"role":"assistant"}}"#
            )
        };
        let mut rng = Rng(0x5EED_0F55_E000_0001);
        let mut out = Vec::with_capacity(target + (1 << 20));
        let mut sequence = 0;
        let mut next = || {
            sequence += 1;
            sequence - 1
        };
        let created = response("in_progress", "", "null");
        event(
            &mut out,
            "response.created",
            next(),
            &format!(r#","response":{created}"#),
        );
        event(
            &mut out,
            "response.in_progress",
            next(),
            &format!(r#","response":{created}"#),
        );
        event(
            &mut out,
            "response.output_item.added",
            next(),
            &format!(
                r#","output_index":0,"item":{{"id":"{ITEM}","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#
            ),
        );
        event(
            &mut out,
            "response.content_part.added",
            next(),
            &format!(
                r#","item_id":"{ITEM}","output_index":0,"content_index":0,"part":{{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#
            ),
        );
        // The text as it appears inside a JSON string (the pieces are escaped already).
        let mut text = String::new();
        while out.len() < target {
            let n = 1 + rng.below(3);
            let delta: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            text.push_str(&delta);
            event(
                &mut out,
                "response.output_text.delta",
                next(),
                &format!(
                    r#","item_id":"{ITEM}","output_index":0,"content_index":0,"delta":"{delta}","logprobs":[],"obfuscation":"q9XzT""#
                ),
            );
        }
        event(
            &mut out,
            "response.output_text.done",
            next(),
            &format!(
                r#","item_id":"{ITEM}","output_index":0,"content_index":0,"text":"{text}","logprobs":[]"#
            ),
        );
        event(
            &mut out,
            "response.content_part.done",
            next(),
            &format!(
                r#","item_id":"{ITEM}","output_index":0,"content_index":0,"part":{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}"#
            ),
        );
        let done = message("completed", &text);
        event(
            &mut out,
            "response.output_item.done",
            next(),
            &format!(r#","output_index":0,"item":{done}"#),
        );
        let completed = response(
            "completed",
            &done,
            r#"{"input_tokens":1017,"input_tokens_details":{"cached_tokens":0},"output_tokens":52311,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":53328}"#,
        );
        event(
            &mut out,
            "response.completed",
            next(),
            &format!(r#","response":{completed}"#),
        );
        out
    }

    /// The `large` corpus: content events of exactly `event_bytes` bytes each.
    pub fn large(target: usize, event_bytes: usize) -> Vec<u8> {
        // `data: ` + HEAD's rest + `"content":"` + content + `"` + TAIL + `\n\n`.
        let envelope = HEAD.len() + r#""content":""#.len() + 1 + TAIL.len() + 2;
        let content_bytes = event_bytes - envelope;
        stream(target, move |rng| {
            let mut content = String::with_capacity(content_bytes);
            loop {
                let piece = PIECES[rng.below(PIECES.len())];
                if content.len() + piece.len() > content_bytes {
                    break;
                }
                content.push_str(piece);
            }
            while content.len() < content_bytes {
                content.push('x');
            }
            content
        })
    }
}

/// One corpus and the ways it is delivered.
struct Corpus {
    name: &'static str,
    bytes: bytes::Bytes,
    chunk: usize,
}

impl Corpus {
    fn chunks(&self) -> Vec<&[u8]> {
        self.bytes.chunks(self.chunk).collect()
    }

    fn batches(&self) -> Vec<&[u8]> {
        self.bytes.chunks(COMPONENT_BATCH).collect()
    }
}

/// Where the corpora go for the Node script: `$CARGO_TARGET_DIR/sse-corpora` (a relative value
/// is taken from the workspace root, as `benches/node/common.mjs` does), or the workspace's
/// `target/sse-corpora`.
fn corpora_dir() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
        .join("sse-corpora")
}

fn decode_native(chunks: &[&[u8]]) -> usize {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    let mut count = 0;
    for chunk in chunks {
        decoder.feed(chunk, &mut events).unwrap();
        count += events.len();
        events.clear();
    }
    decoder.finish(&mut events).unwrap();
    count
}

fn decode_native_lent(chunks: &[&[u8]]) -> usize {
    let mut decoder = Decoder::new();
    let mut count = 0;
    for chunk in chunks {
        decoder
            .feed_with(chunk, &mut |event| {
                black_box(event);
                count += 1;
            })
            .unwrap();
    }
    decoder.finish(&mut Vec::new()).unwrap();
    count
}

/// `Decoder::feed_frames`: the framing the component does for `feed-raw-spans`, natively, with
/// no UTF-8 pass over the data it lends (see `host_floor`).
fn decode_native_frames(chunks: &[&[u8]]) -> usize {
    let mut decoder = Decoder::new();
    let mut count = 0;
    for chunk in chunks {
        decoder
            .feed_frames(chunk, &mut |frame| {
                black_box(frame);
                count += 1;
            })
            .unwrap();
    }
    decoder.finish(&mut Vec::new()).unwrap();
    count
}

/// What the host pays per batch of a `feed-raw-spans` call whatever the component does: the
/// batch copied into memory the host does not own (the canonical ABI copies a `list<u8>` into
/// the guest's linear memory) and the one UTF-8 pass over it (`runtime::uncut`, as
/// `EventSpans::events` does). No framing, no call: a floor under every component row.
fn host_floor(batches: &[&[u8]], guest: &mut [u8]) -> usize {
    let mut valid = 0;
    for batch in batches {
        let into = &mut guest[..batch.len()];
        into.copy_from_slice(batch);
        black_box(&*into);
        let uncut = uncut(batch);
        valid += simdutf8::basic::from_utf8(black_box(&batch[uncut])).is_ok() as usize;
    }
    valid
}

fn decode_eventsource_stream(chunks: &[&[u8]]) -> usize {
    let stream = futures::stream::iter(chunks.iter().map(|&c| Ok::<_, Infallible>(c)));
    let mut events = stream.eventsource();
    futures::executor::block_on(async {
        let mut count = 0;
        while let Some(event) = events.next().await {
            black_box(event.unwrap());
            count += 1;
        }
        count
    })
}

/// Decoder plus chat layer; with `wit_work`, also the delta lines the WIT export returns.
fn assemble_native(chunks: &[&[u8]], wit_work: bool) -> String {
    let mut decoder = Decoder::new();
    let mut chat = ChatStream::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, &mut events).unwrap();
        for event in events.drain(..) {
            match chat.push_event(&event.event_type, &event.data).unwrap() {
                Step::Chunk(chunk) if wit_work => {
                    let lines: Vec<String> = chunk.delta_lines();
                    black_box(lines);
                }
                step => {
                    black_box(step);
                }
            }
        }
    }
    decoder.finish(&mut events).unwrap();
    chat.finish_json()
}

/// `ChatDecoder` fed `batches`; the delta lines of each batch are kept until the next one.
fn assemble_native_batched(batches: &[&[u8]]) -> String {
    let mut decoder = ChatDecoder::new(MAX_SSE_EVENT_BYTES);
    let mut lines = String::new();
    for batch in batches {
        lines.clear();
        decoder.feed(batch, &mut lines).unwrap();
        black_box(&lines);
    }
    decoder.finish().unwrap();
    decoder.chat().finish_json()
}

/// `ResponsesDecoder` fed `batches`; the typed events of each batch are kept until the next
/// one. Returns the assembled text and the reported output tokens.
fn assemble_responses_native(batches: &[&[u8]]) -> (String, u64) {
    let mut decoder = ResponsesDecoder::new(MAX_SSE_EVENT_BYTES);
    let mut events = Vec::new();
    for batch in batches {
        events.clear();
        decoder.feed(batch, Some(&mut events)).unwrap();
        black_box(&events);
    }
    decoder.finish().unwrap();
    let stream = decoder.stream();
    assert_eq!(stream.end(), Some(&End::Completed));
    (
        stream.output_text().to_owned(),
        stream.usage().map_or(0, |u| u.completion_tokens),
    )
}

/// The `sse.responses-decoder` resource: one `feed` per batch (bytes in, typed events out),
/// then what it assembled.
async fn assemble_responses_component(instance: &mut Instance, batches: &[&[u8]]) -> (String, u64) {
    let decoder = instance
        .responses_decoder(MAX_SSE_EVENT_BYTES as u32)
        .await
        .unwrap();
    for batch in batches {
        black_box(
            instance
                .responses_decoder_feed(decoder, batch)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    instance
        .responses_decoder_finish(decoder)
        .await
        .unwrap()
        .unwrap();
    let assembled = instance.responses_decoder_assembled(decoder).await.unwrap();
    assert_eq!(assembled.end, Some(End::Completed));
    (
        assembled.output_text,
        assembled.usage.map_or(0, |u| u.completion_tokens),
    )
}

/// What a component bench does on its fresh instance.
#[derive(Clone, Copy)]
enum Work {
    /// `decode_component`.
    Decode(Feed),
    /// `assemble_component`.
    Assemble { blank: bool },
    /// `assemble_component_batched`.
    AssembleBatched,
}

/// The `sse/responses` group: the Responses layer beside the chat layer (see the module
/// documentation), natively and in the component, 16 KiB batches.
fn bench_responses(c: &mut Criterion, rt: &tokio::runtime::Runtime, harness: &Harness) {
    let chat = Corpus {
        name: "chat",
        bytes: corpus::chat(CORPUS_BYTES).into(),
        chunk: CHAT_CHUNK,
    };
    let responses = Corpus {
        name: "responses",
        bytes: corpus::responses(CORPUS_BYTES).into(),
        chunk: COMPONENT_BATCH,
    };
    let path = corpora_dir().join("responses.sse");
    std::fs::write(&path, &responses.bytes).unwrap();
    eprintln!(
        "corpus responses: {} bytes, written to {}",
        responses.bytes.len(),
        path.display()
    );
    let deny = Arc::new(OutboundPolicy::deny_all());
    let (chat_batches, batches) = (chat.batches(), responses.batches());
    let completion = assemble_native_batched(&chat_batches);
    let (text, tokens) = assemble_responses_native(&batches);
    assert_eq!(tokens, 52311);
    rt.block_on(async {
        let mut instance = harness.instantiate(deny.clone()).await.unwrap();
        assert_eq!(
            assemble_responses_component(&mut instance, &batches).await,
            (text.clone(), tokens)
        );
        let mut instance = harness.instantiate(deny.clone()).await.unwrap();
        assert_eq!(
            assemble_component_batched(&mut instance, &chat_batches).await,
            completion.as_bytes()
        );
    });
    // On fresh instances, instantiated outside the timed part.
    let timed = |b: &mut criterion::Bencher, responses: bool| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let mut instance = harness.instantiate(deny.clone()).await.unwrap();
                    let start = Instant::now();
                    if responses {
                        black_box(assemble_responses_component(&mut instance, &batches).await);
                    } else {
                        black_box(assemble_component_batched(&mut instance, &chat_batches).await);
                    }
                    timed += start.elapsed();
                }
                timed
            })
        })
    };
    let mut group = c.benchmark_group("sse/responses");
    // Throughput per row is set from its own corpus.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::BytesDecimal(chat.bytes.len() as u64));
    group.bench_function("chat_assembly_native_batched", |b| {
        b.iter(|| black_box(assemble_native_batched(&chat_batches)))
    });
    group.bench_function("chat_assembly_component_batched", |b| timed(b, false));
    group.throughput(Throughput::BytesDecimal(responses.bytes.len() as u64));
    group.bench_function("responses_assembly_native_batched", |b| {
        b.iter(|| black_box(assemble_responses_native(&batches)))
    });
    group.bench_function("responses_assembly_component_batched", |b| timed(b, true));
    group.finish();
}

/// Which `sse.decoder` method a bench feeds.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// `feed`: a list of event records.
    Events,
    /// `feed-raw-spans`, split and decoded with `EventSpans::events`.
    RawSpans,
}

/// The `sse.decoder` resource fed `batches` through `feed`, or through `feed-raw-spans` with
/// each result split into borrowed events; returns the number of events.
async fn decode_component(instance: &mut Instance, batches: &[&[u8]], feed: Feed) -> usize {
    let decoder = instance
        .sse_decoder(MAX_SSE_EVENT_BYTES as u32)
        .await
        .unwrap();
    let mut count = 0;
    for batch in batches {
        count += match feed {
            Feed::Events => instance
                .sse_feed(decoder, batch)
                .await
                .unwrap()
                .unwrap()
                .len(),
            Feed::RawSpans => {
                let spans = instance
                    .sse_feed_raw_spans(decoder, batch)
                    .await
                    .unwrap()
                    .unwrap();
                black_box(spans.events(batch).unwrap()).len()
            }
        };
    }
    count + instance.sse_finish(decoder).await.unwrap().unwrap().len()
}

/// Decoder and chat-stream resources; pushes each event's data, or blank data when `blank`.
async fn assemble_component(instance: &mut Instance, batches: &[&[u8]], blank: bool) -> String {
    let decoder = instance
        .sse_decoder(MAX_SSE_EVENT_BYTES as u32)
        .await
        .unwrap();
    let chat = instance.chat_stream().await.unwrap();
    for batch in batches {
        let events = instance.sse_feed(decoder, batch).await.unwrap().unwrap();
        for event in &events {
            let data = if blank { " " } else { event.data.as_str() };
            black_box(
                instance
                    .chat_push(chat, &event.event_type, data)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
    }
    instance.sse_finish(decoder).await.unwrap().unwrap();
    instance.chat_finish(chat).await.unwrap()
}

/// The `sse.chat-decoder` resource: one `feed` per batch (bytes in, delta lines out).
async fn assemble_component_batched(instance: &mut Instance, batches: &[&[u8]]) -> Vec<u8> {
    let decoder = instance
        .chat_decoder(MAX_SSE_EVENT_BYTES as u32)
        .await
        .unwrap();
    for batch in batches {
        black_box(
            instance
                .chat_decoder_feed(decoder, batch)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    instance
        .chat_decoder_finish(decoder)
        .await
        .unwrap()
        .unwrap();
    instance.chat_decoder_completion(decoder).await.unwrap()
}

/// A loopback upstream that answers every request with `body` as an event stream.
async fn sse_upstream(body: bytes::Bytes) -> String {
    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        // Read the request first, as a real upstream does: answering before
                        // the request is complete makes hyper close the connection.
                        let _ = req.into_body().collect().await;
                        hyper::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(http_body_util::Full::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A GET over a new connection with hyper; every body frame goes through the decoder and the
/// chat layer as it arrives. Returns what the component's execution returns: the bytes passed
/// through and the reported completion tokens.
async fn pipeline_native(url: &hyper::Uri) -> (usize, u64) {
    use http_body_util::BodyExt;
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post(url.path())
        .header("host", url.authority().unwrap().as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut decoder = Decoder::new();
    let mut chat = ChatStream::new();
    let mut events = Vec::new();
    let mut passed = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            passed += data.len();
            decoder.feed(&data, &mut events).unwrap();
            for event in events.drain(..) {
                black_box(chat.push_event(&event.event_type, &event.data).unwrap());
            }
        }
    }
    decoder.finish(&mut events).unwrap();
    (passed, chat.token_usage().unwrap().completion_tokens)
}

/// A `stream` execution with `stream: true` through the component; returns the bytes passed
/// through and the reported completion tokens.
async fn pipeline_component(
    executor: &Executor,
    connector: &Prepared,
    params: &str,
) -> (usize, u64) {
    let Started::Streaming(mut stream) = executor.start(connector, params).await.unwrap() else {
        panic!("the execution did not stream");
    };
    let mut passed = 0;
    while let Some(item) = stream.next().await.unwrap() {
        match item {
            StreamItem::Bytes(bytes) => passed += bytes.len(),
            StreamItem::Chunk(_) => panic!("raw mode delivers bytes"),
        }
    }
    let finished = stream.finish().await.unwrap();
    assert!(finished.outcome.is_ok(), "{:?}", finished.outcome);
    (passed, finished.usage.completion_tokens)
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, corpus: &Corpus) {
    group
        .throughput(Throughput::BytesDecimal(corpus.bytes.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
}

fn bench(c: &mut Criterion) {
    let corpora = [
        Corpus {
            name: "chat",
            bytes: corpus::chat(CORPUS_BYTES).into(),
            chunk: CHAT_CHUNK,
        },
        Corpus {
            name: "large",
            bytes: corpus::large(CORPUS_BYTES, LARGE_EVENT_BYTES).into(),
            chunk: LARGE_CHUNK,
        },
    ];
    let dir = corpora_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for corpus in &corpora {
        let path = dir.join(format!("{}.sse", corpus.name));
        std::fs::write(&path, &corpus.bytes).unwrap();
        eprintln!(
            "corpus {}: {} bytes in {}-byte chunks, written to {}",
            corpus.name,
            corpus.bytes.len(),
            corpus.chunk,
            path.display()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let harness = Harness::embedded(CodeCache::Default).unwrap();
    let deny = Arc::new(OutboundPolicy::deny_all());
    let executor = Executor::new(harness.clone(), Settings::default());
    let params = format!(
        r#"{{"subAction":"stream","subActionParams":{{"stream":true,"body":{}}}}}"#,
        serde_json::to_string(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Write a long essay."}],"stream":true}"#
        )
        .unwrap()
    );

    for corpus in &corpora {
        let chunks = corpus.chunks();
        let batches = corpus.batches();
        let base = rt.block_on(sse_upstream(corpus.bytes.clone()));
        let url: hyper::Uri = format!("{base}/v1/chat/completions").parse().unwrap();
        let file = format!(
            r#"{{"id":"bench","name":"Bench","config":{{"apiProvider":"OpenAI","apiUrl":"{url}"}},"secrets":{{"apiKey":"sk-bench-0123456789"}}}}"#
        );
        let connector = ConnectorFile::parse(&file, "bench", std::path::Path::new(".")).unwrap();
        // Validated once, as `serve` does at load.
        let connector = rt.block_on(executor.prepare(&connector)).unwrap().unwrap();

        // Every contender sees the same events and builds the same completion.
        let events = decode_native(&chunks);
        assert_eq!(decode_native(&batches), events);
        assert_eq!(decode_native_frames(&batches), events);
        assert_eq!(
            host_floor(&batches, &mut vec![0; COMPONENT_BATCH]),
            batches.len()
        );
        assert_eq!(decode_eventsource_stream(&chunks), events);
        let completion = assemble_native(&chunks, false);
        assert!(completion.contains(r#""completion_tokens":52311"#));
        assert_eq!(assemble_native(&chunks, true), completion);
        assert_eq!(
            rt.block_on(pipeline_native(&url)),
            (corpus.bytes.len(), 52311)
        );
        rt.block_on(async {
            for feed in [Feed::Events, Feed::RawSpans] {
                let mut instance = harness.instantiate(deny.clone()).await.unwrap();
                assert_eq!(
                    decode_component(&mut instance, &batches, feed).await,
                    events,
                    "{feed:?}"
                );
            }
            let mut instance = harness.instantiate(deny.clone()).await.unwrap();
            assert_eq!(
                assemble_component(&mut instance, &batches, false).await,
                completion
            );
            assert_eq!(assemble_native_batched(&batches), completion);
            let mut instance = harness.instantiate(deny.clone()).await.unwrap();
            assert_eq!(
                assemble_component_batched(&mut instance, &batches).await,
                completion.as_bytes()
            );
            assert_eq!(
                pipeline_component(&executor, &connector, &params).await,
                (corpus.bytes.len(), 52311)
            );
        });
        eprintln!("corpus {}: {events} events", corpus.name);

        let mut group = c.benchmark_group(format!("sse/{}", corpus.name));
        configure(&mut group, corpus);
        group.bench_function("decoder_native", |b| {
            b.iter(|| black_box(decode_native(&chunks)))
        });
        group.bench_function("decoder_native_16k", |b| {
            b.iter(|| black_box(decode_native(&batches)))
        });
        group.bench_function("decoder_native_lent", |b| {
            b.iter(|| black_box(decode_native_lent(&chunks)))
        });
        group.bench_function("decoder_native_lent_16k", |b| {
            b.iter(|| black_box(decode_native_lent(&batches)))
        });
        group.bench_function("decoder_native_frames_16k", |b| {
            b.iter(|| black_box(decode_native_frames(&batches)))
        });
        let mut guest = vec![0; COMPONENT_BATCH];
        group.bench_function("host_floor_16k", |b| {
            b.iter(|| black_box(host_floor(&batches, &mut guest)))
        });
        group.bench_function("eventsource_stream", |b| {
            b.iter(|| black_box(decode_eventsource_stream(&chunks)))
        });
        // Component benches: a fresh instance per iteration (as every execution gets one),
        // instantiated outside the timed part.
        let on_fresh_instances = |b: &mut criterion::Bencher, work: Work| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let mut instance = harness.instantiate(deny.clone()).await.unwrap();
                        let start = Instant::now();
                        match work {
                            Work::Decode(feed) => {
                                black_box(decode_component(&mut instance, &batches, feed).await);
                            }
                            Work::Assemble { blank } => {
                                black_box(assemble_component(&mut instance, &batches, blank).await);
                            }
                            Work::AssembleBatched => {
                                black_box(
                                    assemble_component_batched(&mut instance, &batches).await,
                                );
                            }
                        }
                        timed += start.elapsed();
                    }
                    timed
                })
            })
        };
        group.bench_function("decoder_component", |b| {
            on_fresh_instances(b, Work::Decode(Feed::Events))
        });
        group.bench_function("decoder_component_raw_spans", |b| {
            on_fresh_instances(b, Work::Decode(Feed::RawSpans))
        });
        group.bench_function("assembly_native", |b| {
            b.iter(|| black_box(assemble_native(&chunks, false)))
        });
        group.bench_function("assembly_native_wit_work", |b| {
            b.iter(|| black_box(assemble_native(&chunks, true)))
        });
        group.bench_function("assembly_native_batched", |b| {
            b.iter(|| black_box(assemble_native_batched(&batches)))
        });
        group.bench_function("assembly_component_batched", |b| {
            on_fresh_instances(b, Work::AssembleBatched)
        });
        for (name, blank) in [
            ("assembly_component", false),
            ("assembly_component_blank_pushes", true),
        ] {
            group.bench_function(name, |b| on_fresh_instances(b, Work::Assemble { blank }));
        }
        group.bench_function("pipeline_native", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(pipeline_native(&url).await) })
        });
        group.bench_function("pipeline_component", |b| {
            b.to_async(&rt).iter(|| async {
                black_box(pipeline_component(&executor, &connector, &params).await)
            })
        });
        group.finish();
    }
    bench_responses(c, &rt, &harness);
}

criterion_group!(benches, bench);
criterion_main!(benches);
