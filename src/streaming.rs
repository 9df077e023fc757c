//! A streaming execution after its 2xx response head arrived (C41, C42, C63, C78, C109–C115).
//!
//! Bytes are handed to the caller as they arrive; a decoder beside the pass-through accounts
//! usage (C109, C114) without keeping the body. Nothing here does I/O: the body comes from a
//! [`Body`], which the component implements over `wasi:http`.
//!
//! A streamed `responses` call is accounted by the Responses layer
//! ([`crate::responses_stream`]) instead of the chat layer: its usage comes from
//! `response.completed` (or `response.incomplete`), else an estimate of the assembled input and
//! output. Its outcome follows the stream's end: a `response.failed` or `error` event fails the
//! execution (`stream`, `Stream error: <message>`) and ends the pass-through after the chunk
//! that carried it; a body that ends before any ending event fails it too, as
//! `response-invalid` (`Stream error: the stream ended before response.completed`): the
//! upstream told the client nothing, so a gateway tells it (`stream` on this route means the
//! client has read the upstream's own failure event, [`crate::protocol::stream_error_event`]). The accounting decoder holds events up to
//! `maxResponseContentLength` (at least C91's default), since `response.completed` repeats the
//! whole response; an accounting failure (C91) still never stops the pass-through nor fails the
//! execution (C114).

use crate::chat_stream::{ChatStream, Step, StreamError};
use crate::config::Connector;
use crate::estimate::EstimationInput;
use crate::failure::Failure;
use crate::json::Value;
use crate::params::{Api, SubAction};
use crate::plan::Plan;
use crate::request::HttpRequest;
use crate::response;
use crate::responses_stream::ResponsesStream;
use crate::sse::{self, Decoder};
use crate::transport::{Body, Head, Limits, TransportError};
use crate::usage::TokenUsage;
use std::collections::VecDeque;

/// One piece of a streaming execution's output.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// Upstream bytes, unchanged (C41): `stream` with `stream: true`, `invokeStream`.
    Bytes(Vec<u8>),
    /// One parsed `chat.completion.chunk` as received (C42): `invokeAsyncIterator`.
    Chunk(Value),
}

/// How a streaming execution ended.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSummary {
    /// Success, or the failure; bytes already delivered stand (C78).
    pub outcome: Result<(), Failure>,
    /// Reported usage, or `unavailable` (see `estimate`).
    pub usage: TokenUsage,
    /// When no usage arrived: what a tokenizer needs to estimate it (C110–C112). A host
    /// without a tokenizer reports `unavailable`.
    pub estimate: Option<EstimationInput>,
    /// Sent body length (C118).
    pub request_body_bytes: Option<u64>,
    /// Attempts made (cli.md "Retries"; 1 without retries).
    pub attempts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Pass bytes through (C41).
    Raw,
    /// Deliver parsed chunks (C42).
    Chunks,
}

/// Where a streaming execution is: every phase a named variant.
enum Phase<B> {
    /// Reading the upstream body.
    Reading(B),
    /// The body ended, or chunk mode saw `[DONE]` (C42).
    Ended,
    /// Failed; the upstream was abandoned. The first failure wins (C78).
    Failed(Failure),
}

/// How usage is accounted beside the pass-through.
enum Accounting {
    /// Events are decoded and merged (C109).
    Events,
    /// Stopped after a decoder or chat-layer failure (C114); the pass-through goes on.
    Stopped,
    /// The upstream answered `application/json` although a stream was asked for: the body is
    /// kept and accounted as a non-streaming response (C115).
    Json(Vec<u8>),
}

/// The layer that reads the decoded events.
enum Layer {
    /// Chat completions (C92–C105).
    Chat(ChatStream),
    /// The Responses API ([`crate::responses_stream`]).
    Responses(ResponsesStream),
}

/// A streaming execution in progress.
pub struct StreamExecution<B> {
    phase: Phase<B>,
    mode: Mode,
    accounting: Accounting,
    decoder: Decoder,
    layer: Layer,
    pending: VecDeque<Value>,
    idle_timeout_ms: Option<u64>,
    request: HttpRequest,
    limits: Limits,
    status: u16,
    sub_action: SubAction,
    api_key: Option<String>,
    default_model: Option<String>,
    /// Attempts it took to get the stream's head (cli.md "Retries").
    attempts: u32,
}

impl<B: Body> StreamExecution<B> {
    /// Starts streaming `head`, the 2xx answer to `plan`.
    pub(crate) fn new(
        connector: &Connector,
        plan: Plan,
        limits: Limits,
        head: Head<B>,
        attempts: u32,
    ) -> Self {
        let mode = if plan.params.sub_action == SubAction::InvokeAsyncIterator {
            Mode::Chunks
        } else {
            Mode::Raw
        };
        let (decoder, layer) = match plan.params.sub_action.api() {
            Api::Responses => (
                Decoder::with_max_event_bytes(
                    usize::try_from(limits.max_body_bytes)
                        .unwrap_or(usize::MAX)
                        .max(sse::MAX_SSE_EVENT_BYTES),
                ),
                Layer::Responses(ResponsesStream::new()),
            ),
            _ => (Decoder::new(), Layer::Chat(ChatStream::new())),
        };
        let is_json = head
            .header("content-type")
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        StreamExecution {
            phase: Phase::Reading(head.body),
            mode,
            accounting: if is_json {
                Accounting::Json(Vec::new())
            } else {
                Accounting::Events
            },
            decoder,
            layer,
            pending: VecDeque::new(),
            idle_timeout_ms: plan.idle_timeout_ms,
            request: plan.request,
            limits,
            status: head.status,
            sub_action: plan.params.sub_action,
            api_key: connector.secrets.api_key.clone(),
            default_model: connector.config.default_model.clone(),
            attempts,
        }
    }

    /// Ends the execution. If the caller stopped before the end, the upstream is abandoned and
    /// the execution fails with `ERR_CANCELED` (C68). Usage is computed from what arrived
    /// (C113).
    pub fn finish(mut self) -> StreamSummary {
        if matches!(self.phase, Phase::Reading(_)) {
            self.fail_transport(&TransportError::Canceled);
        }
        let request_body_bytes = Some(self.request.body.len() as u64);
        let (usage, estimate) = match &self.accounting {
            Accounting::Json(body) => (json_usage(self.sub_action, body), None),
            Accounting::Events | Accounting::Stopped => match self.reported_usage() {
                Some(usage) => (usage, None),
                None => (TokenUsage::UNAVAILABLE, Some(self.estimation_input())),
            },
        };
        StreamSummary {
            outcome: match self.phase {
                Phase::Failed(failure) => Err(failure),
                Phase::Reading(_) | Phase::Ended => Ok(()),
            },
            usage,
            estimate,
            request_body_bytes,
            attempts: self.attempts,
        }
    }
}

impl<B: Body> Iterator for StreamExecution<B> {
    type Item = StreamItem;

    /// The next piece of output, waiting for the upstream as needed; `None` once the stream
    /// has ended (then call [`StreamExecution::finish`]).
    fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(StreamItem::Chunk(chunk));
            }
            let Phase::Reading(body) = &mut self.phase else {
                return None;
            };
            match body.next_chunk(self.idle_timeout_ms) {
                Ok(Some(bytes)) => {
                    self.account(&bytes);
                    if self.mode == Mode::Raw {
                        return Some(StreamItem::Bytes(bytes));
                    }
                }
                Ok(None) => {
                    if matches!(self.accounting, Accounting::Events) {
                        let mut events = Vec::new();
                        let _ = self.decoder.finish(&mut events);
                        if let Layer::Responses(responses) = &self.layer
                            && responses.end().is_none()
                        {
                            let failure = Failure::response_invalid(
                                "Stream error: the stream ended before response.completed"
                                    .to_owned(),
                                Some(self.status),
                                self.api_key.as_deref(),
                            );
                            self.fail(failure);
                        }
                    }
                    self.end();
                }
                Err(e) => self.fail_transport(&e),
            }
        }
    }
}

impl<B: Body> StreamExecution<B> {
    /// The usage the upstream reported in the stream, if any.
    fn reported_usage(&self) -> Option<TokenUsage> {
        match &self.layer {
            Layer::Chat(chat) => chat.token_usage(),
            Layer::Responses(responses) => responses.usage(),
        }
    }

    fn estimation_input(&self) -> EstimationInput {
        let default_model = self.default_model.as_deref();
        match &self.layer {
            Layer::Chat(chat) => {
                EstimationInput::from_stream(&self.request.body, chat, default_model)
            }
            Layer::Responses(responses) => EstimationInput::from_responses(
                &self.request.body,
                responses.output_text(),
                responses.function_calls(),
                responses.model(),
                default_model,
            ),
        }
    }

    /// The body ended (or `[DONE]` ended chunk mode): the upstream is released.
    fn end(&mut self) {
        if matches!(self.phase, Phase::Reading(_)) {
            self.phase = Phase::Ended;
        }
    }

    /// Records the failure (the first one wins) and abandons the upstream.
    fn fail(&mut self, failure: Failure) {
        if !matches!(self.phase, Phase::Failed(_)) {
            self.phase = Phase::Failed(failure);
        }
    }

    fn fail_transport(&mut self, error: &TransportError) {
        let failure = Failure::transport(
            error,
            &self.request,
            &self.limits,
            Some(self.status),
            self.api_key.as_deref(),
        );
        self.fail(failure);
    }

    fn fail_stream(&mut self, message: String) {
        let failure = Failure::stream(message, self.status, self.api_key.as_deref());
        self.fail(failure);
    }

    /// Feeds the accounting decoder; in chunk mode, queues the chunks for the caller.
    fn account(&mut self, bytes: &[u8]) {
        match &mut self.accounting {
            Accounting::Json(json) => {
                if (json.len() + bytes.len()) as u64 > self.limits.max_body_bytes {
                    self.fail_transport(&TransportError::TooLarge);
                } else {
                    json.extend_from_slice(bytes);
                }
                return;
            }
            Accounting::Stopped => return,
            Accounting::Events => {}
        }
        // Events are merged as they are dispatched, borrowed from the decoder's buffers. The
        // first `[DONE]` of chunk mode or stream error stops the processing of this read.
        enum Stop {
            Done,
            Failed(StreamError),
        }
        let chat = match &mut self.layer {
            Layer::Chat(chat) => chat,
            Layer::Responses(responses) => {
                let decoded = self.decoder.feed_with(bytes, &mut |event| {
                    responses.push_event(event.event_type, event.data, None);
                });
                let failed = responses.end().and_then(|end| end.failure_message());
                if let Some(message) = failed.map(|m| format!("Stream error: {m}")) {
                    self.fail_stream(message);
                } else if decoded.is_err() {
                    // C114: the pass-through goes on.
                    self.accounting = Accounting::Stopped;
                }
                return;
            }
        };
        let (pending, mode) = (&mut self.pending, self.mode);
        let mut stop = None;
        let decoded = self.decoder.feed_with(bytes, &mut |event| {
            if stop.is_some() {
                return;
            }
            // C96a: the event type reaches the chat layer.
            match chat.push_event(event.event_type, event.data) {
                Ok(Step::Chunk(chunk)) if mode == Mode::Chunks => {
                    pending.push_back(chunk.to_value());
                }
                // C42: `[DONE]` ends the output.
                Ok(Step::Done) if mode == Mode::Chunks => stop = Some(Stop::Done),
                Ok(_) => {}
                Err(e) => stop = Some(Stop::Failed(e)),
            }
        });
        match stop {
            Some(Stop::Done) => {
                self.end();
                return;
            }
            Some(Stop::Failed(e)) => {
                self.accounting = Accounting::Stopped;
                if self.mode == Mode::Chunks {
                    let message = match &e {
                        StreamError::Provider(text) => format!("Stream error: {text}"),
                        other => other.to_string(),
                    };
                    self.fail_stream(message);
                }
                return;
            }
            None => {}
        }
        if let Err(e) = decoded {
            // C114: accounting stops; the pass-through goes on. Chunk mode cannot go on.
            self.accounting = Accounting::Stopped;
            if self.mode == Mode::Chunks {
                self.fail_stream(e.to_string());
            }
        }
    }
}

/// C115: usage of a JSON body answered to a streaming request (C107, C108; a `responses`
/// body is read as a whole response).
fn json_usage(sub_action: SubAction, body: &[u8]) -> TokenUsage {
    let sub_action = match sub_action.api() {
        Api::Responses => SubAction::Responses,
        _ => SubAction::Run,
    };
    response::map_success(sub_action, body)
        .map(|(_, usage)| usage)
        .unwrap_or(TokenUsage::UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{self, Started};
    use crate::config;
    use crate::plan::Deployment;
    use crate::transport::Transport;
    use crate::usage::UsageSource;
    use std::collections::VecDeque;

    /// A body that yields scripted chunks or errors.
    struct Scripted(VecDeque<Result<Vec<u8>, TransportError>>);

    impl Body for Scripted {
        fn next_chunk(&mut self, _idle: Option<u64>) -> Result<Option<Vec<u8>>, TransportError> {
            self.0.pop_front().transpose()
        }
    }

    /// A transport that answers once with a 2xx SSE head and the scripted body.
    struct OneResponse(Option<Scripted>, &'static str);

    impl Transport for OneResponse {
        type Body = Scripted;

        fn open(
            &mut self,
            _request: &HttpRequest,
            _limits: &Limits,
        ) -> Result<Head<Scripted>, TransportError> {
            Ok(Head {
                status: 200,
                headers: vec![("content-type".into(), self.1.into())],
                body: self.0.take().expect("one request"),
            })
        }

        fn time_left_ms(&self, limits: &Limits) -> u64 {
            limits.total_timeout_ms
        }

        fn pause(&mut self, _ms: u64) -> Result<(), TransportError> {
            unreachable!("one response: never retried")
        }

        fn unix_time_secs(&self) -> u64 {
            0
        }

        fn random_u64(&mut self) -> u64 {
            0
        }
    }

    fn connector() -> Connector {
        connector_at("http://127.0.0.1:9/v1")
    }

    fn connector_at(url: &str) -> Connector {
        let config = Value::parse(
            format!(r#"{{"apiProvider":"Other","apiUrl":"{url}","defaultModel":"gpt-4o"}}"#)
                .as_bytes(),
        )
        .unwrap();
        let secrets = Value::parse(br#"{"apiKey":"sk-unit-test-key-123"}"#).unwrap();
        config::validate_connector("c", "n", &config, &secrets, &["*".to_owned()]).unwrap()
    }

    fn start(
        chunks: Vec<Result<&str, TransportError>>,
        sub_action: &str,
    ) -> Box<StreamExecution<Scripted>> {
        let body = Scripted(
            chunks
                .into_iter()
                .map(|c| c.map(|s| s.as_bytes().to_vec()))
                .collect(),
        );
        let params = match sub_action {
            "stream" => {
                r#"{"subAction":"stream","subActionParams":{"stream":true,"body":"{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"}}"#
            }
            _ => {
                r#"{"subAction":"invokeAsyncIterator","subActionParams":{"messages":[{"role":"user","content":"Hi"}]}}"#
            }
        };
        let mut transport = OneResponse(Some(body), "text/event-stream");
        match actions::start(&connector(), &Deployment::default(), params, &mut transport) {
            Started::Streaming(stream) => stream,
            Started::Ended(e) => panic!("ended: {e:?}"),
        }
    }

    /// A streamed `responses` call answered with `chunks`.
    fn start_responses(
        chunks: Vec<Result<&str, TransportError>>,
    ) -> Box<StreamExecution<Scripted>> {
        let body = Scripted(
            chunks
                .into_iter()
                .map(|c| c.map(|s| s.as_bytes().to_vec()))
                .collect(),
        );
        let params = r#"{"subAction":"responses","subActionParams":{"body":"{\"input\":\"Hi\",\"stream\":true}"}}"#;
        let mut transport = OneResponse(Some(body), "text/event-stream");
        let connector = connector_at("http://127.0.0.1:9/v1/chat/completions");
        match actions::start(&connector, &Deployment::default(), params, &mut transport) {
            Started::Streaming(stream) => stream,
            Started::Ended(e) => panic!("ended: {e:?}"),
        }
    }

    fn responses_event(kind: &str, rest: &str) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{rest}}}\n\n")
    }

    fn bytes_of(stream: &mut StreamExecution<Scripted>) -> Vec<u8> {
        stream
            .by_ref()
            .flat_map(|i| match i {
                StreamItem::Bytes(b) => b,
                StreamItem::Chunk(_) => panic!("raw mode"),
            })
            .collect()
    }

    #[test]
    fn responses_stream_passes_bytes_through_and_reports_the_completed_usage() {
        let created = responses_event(
            "response.created",
            r#","response":{"id":"r","model":"gpt-4.1-mini"}"#,
        );
        let delta = responses_event("response.output_text.delta", r#","delta":"Hello""#);
        let completed = responses_event(
            "response.completed",
            r#","response":{"usage":{"input_tokens":8,"output_tokens":1,"total_tokens":9}}"#,
        );
        let mut stream = start_responses(vec![
            Ok(&created[..9]),
            Ok(&created[9..]),
            Ok(&delta),
            Ok(&completed),
        ]);
        assert_eq!(
            bytes_of(&mut stream),
            [created, delta, completed].concat().as_bytes()
        );
        let summary = stream.finish();
        assert_eq!(summary.outcome, Ok(()));
        assert_eq!(summary.usage, TokenUsage::reported(8, 1, 9));
        assert_eq!(summary.estimate, None);
    }

    #[test]
    fn responses_stream_without_usage_asks_for_an_estimate_of_input_and_output() {
        let delta = responses_event("response.output_text.delta", r#","delta":"Hello""#);
        let incomplete = responses_event(
            "response.incomplete",
            r#","response":{"model":"gpt-4o-mini","incomplete_details":{"reason":"max_output_tokens"}}"#,
        );
        let mut stream = start_responses(vec![Ok(&delta), Ok(&incomplete)]);
        stream.by_ref().for_each(drop);
        let summary = stream.finish();
        // An incomplete response is not a failure.
        assert_eq!(summary.outcome, Ok(()));
        assert_eq!(summary.usage.source, UsageSource::Unavailable);
        let estimate = summary.estimate.expect("an estimate");
        assert_eq!(estimate.prompt_text, "<|start|>user\nHi<|end|>");
        assert_eq!(estimate.completion_text, "Hello");
        assert_eq!(estimate.encoding.as_str(), "o200k_base");
    }

    #[test]
    fn responses_failed_or_error_fails_the_stream_with_its_message_and_ends_the_pass_through() {
        let delta = responses_event("response.output_text.delta", r#","delta":"Hel""#);
        let failed = responses_event(
            "response.failed",
            r#","response":{"error":{"code":"server_error","message":"The model crashed."}}"#,
        );
        let error = responses_event(
            "error",
            r#","code":"rate_limit_exceeded","message":"Slow down""#,
        );
        for (end, message) in [
            (&failed, "Stream error: The model crashed."),
            (&error, "Stream error: Slow down"),
        ] {
            let after = responses_event("response.output_text.delta", r#","delta":"late""#);
            let mut stream = start_responses(vec![Ok(&delta), Ok(end), Ok(&after)]);
            // Delivered bytes stand; nothing after the chunk that failed.
            assert_eq!(
                bytes_of(&mut stream),
                [delta.as_str(), end].concat().as_bytes()
            );
            let summary = stream.finish();
            let failure = summary.outcome.unwrap_err();
            assert_eq!(failure.kind, crate::failure::FailureKind::Stream);
            assert_eq!(failure.service_message, message);
            assert_eq!(failure.upstream_status, Some(200));
            assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
        }
    }

    #[test]
    fn responses_stream_cut_before_completion_fails_and_still_estimates() {
        let delta = responses_event("response.output_text.delta", r#","delta":"Hel""#);
        let mut stream = start_responses(vec![
            Ok(&delta),
            Ok("event: response.output_text.delta\ndata: {"),
        ]);
        assert_eq!(stream.by_ref().count(), 2);
        let summary = stream.finish();
        let failure = summary.outcome.unwrap_err();
        assert_eq!(
            failure.service_message,
            "Stream error: the stream ended before response.completed"
        );
        // Not `stream`: the client read no failure event from the upstream.
        assert_eq!(failure.kind, crate::failure::FailureKind::ResponseInvalid);
        assert_eq!(summary.usage.source, UsageSource::Unavailable);
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
        // A transport failure stays what it was.
        let mut stream = start_responses(vec![Ok(&delta), Err(TransportError::ConnectionReset)]);
        stream.by_ref().for_each(drop);
        assert_eq!(
            stream.finish().outcome.unwrap_err().service_message,
            "Status code: undefined. Message: Unexpected API Error: ECONNRESET - socket hang up"
        );
    }

    #[test]
    fn c114_responses_accounting_failure_never_stops_the_pass_through() {
        // An event larger than the accounting decoder holds (maxResponseContentLength).
        let huge = format!("data: {}\n\n", "x".repeat((1 << 20) + 1));
        let delta = responses_event("response.output_text.delta", r#","delta":"Hel""#);
        let mut stream = start_responses(vec![Ok(&delta), Ok(&huge), Ok(&delta)]);
        assert_eq!(bytes_of(&mut stream).len(), 2 * delta.len() + huge.len());
        let summary = stream.finish();
        assert_eq!(summary.outcome, Ok(()));
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
    }

    const HEL: &str = "data: {\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    const LO: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n";

    #[test]
    fn c41_bytes_pass_through_unchanged_in_arrival_chunks() {
        let mut stream = start(vec![Ok(&HEL[..7]), Ok(&HEL[7..]), Ok(LO)], "stream");
        let items: Vec<StreamItem> = stream.by_ref().collect();
        assert_eq!(
            items,
            vec![
                StreamItem::Bytes(HEL.as_bytes()[..7].to_vec()),
                StreamItem::Bytes(HEL.as_bytes()[7..].to_vec()),
                StreamItem::Bytes(LO.as_bytes().to_vec()),
            ]
        );
        let summary = stream.finish();
        assert_eq!(summary.outcome, Ok(()));
        // C106, C110: no usage chunk → the host is asked to estimate; the source stays
        // `unavailable` until it does.
        assert_eq!(summary.usage.source, UsageSource::Unavailable);
        let estimate = summary.estimate.expect("estimation input");
        assert_eq!(estimate.completion_text, "Hello");
        assert_eq!(estimate.prompt_text, "<|start|>user\nHi<|end|>");
        assert_eq!(estimate.encoding.as_str(), "o200k_base");
    }

    #[test]
    fn c114_accounting_failure_never_stops_the_pass_through() {
        let bad = "data: {not json\n\n";
        let mut stream = start(vec![Ok(HEL), Ok(bad), Ok(LO)], "stream");
        let bytes: Vec<u8> = stream
            .by_ref()
            .flat_map(|i| match i {
                StreamItem::Bytes(b) => b,
                StreamItem::Chunk(_) => panic!("raw mode"),
            })
            .collect();
        assert_eq!(bytes, [HEL, bad, LO].concat().as_bytes());
        let summary = stream.finish();
        assert_eq!(summary.outcome, Ok(()));
        // Usage from what was decoded before the accounting stopped.
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
    }

    #[test]
    fn c106_c109_reported_usage_wins() {
        let usage =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n";
        let mut stream = start(vec![Ok(HEL), Ok(usage)], "stream");
        stream.by_ref().for_each(drop);
        let summary = stream.finish();
        assert_eq!(summary.usage, TokenUsage::reported(3, 4, 7));
        assert!(summary.estimate.is_none());
    }

    #[test]
    fn c68_finishing_early_abandons_the_upstream_as_canceled() {
        let mut stream = start(vec![Ok(HEL), Ok(LO)], "stream");
        assert!(stream.next().is_some());
        let summary = stream.finish();
        assert_eq!(
            summary.outcome.unwrap_err().service_message,
            "Status code: undefined. Message: Unexpected API Error: ERR_CANCELED - canceled"
        );
        // C113: usage is still computed from what arrived.
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
        let sent =
            r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"model":"gpt-4o"}"#;
        assert_eq!(summary.request_body_bytes, Some(sent.len() as u64));
    }

    #[test]
    fn c42_c91_chunk_mode_fails_on_an_oversize_event_after_delivered_chunks() {
        let huge = format!("data: {}", "x".repeat(crate::sse::MAX_SSE_EVENT_BYTES + 1));
        let mut stream = start(vec![Ok(HEL), Ok(&huge)], "iterator");
        let first = stream.next().expect("the first chunk");
        assert!(matches!(first, StreamItem::Chunk(_)));
        assert!(stream.next().is_none());
        let summary = stream.finish();
        assert_eq!(
            summary.outcome.unwrap_err().service_message,
            "SSE event exceeds the maximum size of 1048576 bytes"
        );
    }

    /// C96a: an upstream `error` event with a `message` ends `invokeAsyncIterator` with
    /// `Stream error: <message>` (C96) after the chunks before it; in raw mode the bytes still
    /// pass through (C114).
    #[test]
    fn c96a_error_event_fails_chunk_mode_with_its_message() {
        let error =
            "event: error\ndata: {\"message\":\"Overloaded\",\"type\":\"server_error\"}\n\n";
        let mut stream = start(vec![Ok(HEL), Ok(error), Ok(LO)], "iterator");
        let items: Vec<StreamItem> = stream.by_ref().collect();
        assert_eq!(items.len(), 1, "{items:?}");
        let summary = stream.finish();
        assert_eq!(
            summary.outcome.unwrap_err().service_message,
            "Stream error: Overloaded"
        );
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");

        let mut stream = start(vec![Ok(HEL), Ok(error), Ok(LO)], "stream");
        assert_eq!(stream.by_ref().count(), 3);
        let summary = stream.finish();
        assert_eq!(summary.outcome, Ok(()));
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
    }

    #[test]
    fn c78_transport_failure_mid_stream_keeps_what_was_delivered() {
        let mut stream = start(
            vec![Ok(HEL), Err(TransportError::ConnectionReset)],
            "stream",
        );
        assert_eq!(stream.by_ref().count(), 1);
        let summary = stream.finish();
        assert_eq!(
            summary.outcome.unwrap_err().service_message,
            "Status code: undefined. Message: Unexpected API Error: ECONNRESET - socket hang up"
        );
        assert_eq!(summary.estimate.unwrap().completion_text, "Hel");
    }
}
