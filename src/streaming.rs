//! A streaming execution after its 2xx response head arrived (C41, C42, C63, C78, C109–C115).
//!
//! Bytes are handed to the caller as they arrive; a decoder beside the pass-through accounts
//! usage (C109, C114) without keeping the body. Nothing here does I/O: the body comes from a
//! [`Body`], which the component implements over `wasi:http`.

use crate::actions::{Body, Failure, Head, Limits, Plan, TransportError, transport_message};
use crate::chat_stream::{ChatStream, Step, StreamError};
use crate::config::Connector;
use crate::estimate::EstimationInput;
use crate::json::Value;
use crate::params::SubAction;
use crate::request::HttpRequest;
use crate::response;
use crate::sse::Decoder;
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Pass bytes through (C41).
    Raw,
    /// Deliver parsed chunks (C42).
    Chunks,
}

/// A streaming execution in progress.
pub struct StreamExecution<B> {
    body: Option<B>,
    mode: Mode,
    /// Set when the upstream answered `application/json` although a stream was asked for:
    /// the body is accounted as a non-streaming response (C115).
    json_body: Option<Vec<u8>>,
    decoder: Decoder,
    /// Accounting stopped (C114) after a decoder or chat-layer failure.
    accounting_stopped: bool,
    chat: ChatStream,
    pending: VecDeque<Value>,
    failure: Option<Failure>,
    idle_timeout_ms: Option<u64>,
    request: HttpRequest,
    limits: Limits,
    api_key: Option<String>,
    default_model: Option<String>,
}

impl<B: Body> StreamExecution<B> {
    /// Starts streaming `head`, the 2xx answer to `plan`.
    pub(crate) fn new(connector: &Connector, plan: Plan, limits: Limits, head: Head<B>) -> Self {
        let mode = if plan.params.sub_action == SubAction::InvokeAsyncIterator {
            Mode::Chunks
        } else {
            Mode::Raw
        };
        let is_json = head
            .header("content-type")
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        StreamExecution {
            body: Some(head.body),
            mode,
            json_body: is_json.then(Vec::new),
            decoder: Decoder::new(),
            accounting_stopped: false,
            chat: ChatStream::new(),
            pending: VecDeque::new(),
            failure: None,
            idle_timeout_ms: plan.idle_timeout_ms,
            request: plan.request,
            limits,
            api_key: connector.secrets.api_key.clone(),
            default_model: connector.config.default_model.clone(),
        }
    }

    /// Ends the execution. If the caller stopped before the end, the upstream is abandoned and
    /// the execution fails with `ERR_CANCELED` (C68). Usage is computed from what arrived
    /// (C113).
    pub fn finish(mut self) -> StreamSummary {
        self.summary()
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
            let body = self.body.as_mut()?;
            match body.next_chunk(self.idle_timeout_ms) {
                Ok(Some(bytes)) => {
                    self.account(&bytes);
                    if self.mode == Mode::Raw {
                        return Some(StreamItem::Bytes(bytes));
                    }
                }
                Ok(None) => {
                    if !self.accounting_stopped && self.json_body.is_none() {
                        let mut events = Vec::new();
                        let _ = self.decoder.finish(&mut events);
                    }
                    self.body = None;
                }
                Err(e) => {
                    let message = transport_message(&e, &self.request, &self.limits);
                    self.fail(message);
                }
            }
        }
    }
}

impl<B: Body> StreamExecution<B> {
    /// The summary; abandons the upstream if it has not ended.
    fn summary(&mut self) -> StreamSummary {
        if self.body.is_some() {
            let message = transport_message(&TransportError::Canceled, &self.request, &self.limits);
            self.fail(message);
        }
        let request_body_bytes = Some(self.request.body.len() as u64);
        let (usage, estimate) = match &self.json_body {
            Some(body) => (json_usage(body), None),
            None => match self.chat.token_usage() {
                Some(usage) => (usage, None),
                None => (TokenUsage::UNAVAILABLE, Some(self.estimation_input())),
            },
        };
        StreamSummary {
            outcome: self.failure.clone().map_or(Ok(()), Err),
            usage,
            estimate,
            request_body_bytes,
        }
    }

    fn estimation_input(&self) -> EstimationInput {
        EstimationInput::from_stream(
            &self.request.body,
            &self.chat,
            self.default_model.as_deref(),
        )
    }

    /// Records the failure (the first one wins) and abandons the upstream.
    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            let message =
                response::redact(&response::tls_rewrite(message), self.api_key.as_deref());
            self.failure = Some(Failure {
                service_message: message,
                retry: true,
            });
        }
        self.body = None;
    }

    /// Feeds the accounting decoder; in chunk mode, queues the chunks for the caller.
    fn account(&mut self, bytes: &[u8]) {
        if let Some(json) = &mut self.json_body {
            if (json.len() + bytes.len()) as u64 > self.limits.max_body_bytes {
                let message =
                    transport_message(&TransportError::TooLarge, &self.request, &self.limits);
                self.fail(message);
            } else {
                json.extend_from_slice(bytes);
            }
            return;
        }
        if self.accounting_stopped {
            return;
        }
        let mut events = Vec::new();
        let decoded = self.decoder.feed(bytes, &mut events);
        for event in &events {
            match self.chat.push(&event.data) {
                Ok(Step::Chunk(chunk)) if self.mode == Mode::Chunks => {
                    self.pending.push_back(chunk.into_value());
                }
                Ok(Step::Done) if self.mode == Mode::Chunks => {
                    // C42: `[DONE]` ends the output.
                    self.body = None;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    self.accounting_stopped = true;
                    if self.mode == Mode::Chunks {
                        let message = match &e {
                            StreamError::Provider(text) => format!("Stream error: {text}"),
                            other => other.to_string(),
                        };
                        self.fail(message);
                    }
                    return;
                }
            }
        }
        if let Err(e) = decoded {
            // C114: accounting stops; the pass-through goes on. Chunk mode cannot go on.
            self.accounting_stopped = true;
            if self.mode == Mode::Chunks {
                self.fail(e.to_string());
            }
        }
    }
}

/// C115: usage of a JSON body answered to a streaming request (C107, C108).
fn json_usage(body: &[u8]) -> TokenUsage {
    response::map_success(SubAction::Run, body)
        .map(|(_, usage)| usage)
        .unwrap_or(TokenUsage::UNAVAILABLE)
}
