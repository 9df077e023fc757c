//! What the component gives back, in the harness's own types: validated connectors, request
//! plans, executions, failures, usage and stream items. `runtime::conv` converts the bindings'
//! records into these; nothing outside `runtime` sees a binding type.

use crate::connector_file::ConnectorFile;
use crate::event_log;
use crate::tls::TlsProfile;
use crate::tokenizer;
use std::time::SystemTime;

pub use openai_connector::failure::{Failure, FailureKind};

/// The sandbox failed: the guest trapped (its memory or guest-time limit, a guest fault) or
/// could not be instantiated. `Display` is one line, `the connector's sandbox failed: <cause>`,
/// whatever the trap carried (wasmtime adds the guest's backtrace as context).
#[derive(Debug, thiserror::Error)]
#[error("the connector's sandbox failed: {cause}")]
pub(crate) struct SandboxFailed {
    cause: String,
}

impl SandboxFailed {
    /// The failure `error` stands for: itself if it is one already, else one naming its root
    /// cause.
    pub(crate) fn of(error: &anyhow::Error) -> SandboxFailed {
        match error.downcast_ref::<SandboxFailed>() {
            Some(failed) => SandboxFailed {
                cause: failed.cause.clone(),
            },
            None => SandboxFailed {
                cause: error.root_cause().to_string(),
            },
        }
    }
}

/// An execution whose sandbox failed (see [`SandboxFailed`]). Retryable.
pub(crate) fn sandbox_failure(error: &anyhow::Error) -> Failure {
    Failure::sandbox(SandboxFailed::of(error).to_string())
}

/// A connector validated once, in the form every execution of it takes (WIT
/// `prepared-connector`). It holds the API key and custom header values: `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct PreparedConnector {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) provider: Provider,
    pub(crate) api_url: String,
    pub(crate) default_model: Option<String>,
    pub(crate) organization_id: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) api_key: Option<String>,
}

impl std::fmt::Debug for PreparedConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("PreparedConnector")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("api_url", &self.api_url)
            .field("default_model", &self.default_model)
            .field("header_names", &header_names)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .finish_non_exhaustive()
    }
}

pub use openai_connector::config::Provider;

/// Where usage figures came from (C106).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsageSource {
    /// The upstream reported them.
    Reported,
    /// The host counted them with a tokenizer.
    Estimated,
    /// There are none.
    Unavailable,
}

impl UsageSource {
    /// `reported`, `estimated` or `unavailable`.
    pub fn name(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::Unavailable => "unavailable",
        }
    }
}

/// Token usage after the host's estimate (section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (0 when unavailable).
    pub prompt_tokens: u64,
    /// Completion tokens (0 when unavailable).
    pub completion_tokens: u64,
    /// Total tokens (0 when unavailable).
    pub total_tokens: u64,
    /// Where the numbers came from.
    pub source: UsageSource,
    /// The encoding an estimate was counted with.
    pub tokenizer: Option<&'static str>,
}

impl Usage {
    /// No usage figure (C108, C113).
    pub(crate) const UNAVAILABLE: Usage = Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        source: UsageSource::Unavailable,
        tokenizer: None,
    };

    /// This usage, or, when the component asked for an estimate (no usage was reported), the
    /// tokenizer's count of `estimate`'s texts (C110–C113); unchanged without a tokenizer for
    /// its encoding.
    pub(crate) fn estimated(self, estimate: Option<&EstimationInput>) -> Usage {
        let Some(input) = estimate else {
            return self;
        };
        match tokenizer::estimate(&input.encoding, &input.prompt_text, &input.completion_text) {
            Some((prompt, completion, total)) => Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                source: UsageSource::Estimated,
                tokenizer: tokenizer::known_encoding(&input.encoding),
            },
            None => self,
        }
    }

    /// The event log's view (C117, C119).
    pub(crate) fn for_log(&self) -> event_log::Usage<'static> {
        event_log::Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            source: self.source.name(),
            tokenizer: self.tokenizer,
        }
    }
}

/// One execution's result as the component returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The `data` JSON, or the failure.
    pub outcome: Result<String, Failure>,
    /// Token usage.
    pub usage: Usage,
    /// Sent body length (C118).
    pub request_body_bytes: Option<u64>,
    /// Attempts made: 0 when nothing was sent, 1 without retries.
    pub attempts: u32,
}

/// A connector that passed validation.
#[derive(Clone, Debug)]
pub struct ValidatedConnector {
    /// What executions of it take.
    pub prepared: PreparedConnector,
    /// Kibana's get-connector shape, never the secrets.
    pub connector_json: String,
    /// The connector's own TLS settings, when it has any (C122).
    pub tls: Option<TlsProfile>,
}

/// The request the component would send for a sub-action (`requests.build`).
#[derive(Clone, Debug)]
pub struct RequestPlan {
    /// Whether the response is consumed as a stream.
    pub streaming: bool,
    /// The request.
    pub request: PlannedRequest,
    /// Total timeout (C62).
    pub total_timeout_ms: u64,
    /// Idle timeout between body bytes, for streams (C63).
    pub idle_timeout_ms: Option<u64>,
}

/// One planned HTTP request.
#[derive(Clone, Debug)]
pub struct PlannedRequest {
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why `requests.build` made no request.
#[derive(Clone, Debug)]
pub enum BuildError {
    /// The connector is invalid: `validate`'s lines.
    InvalidConnector(Vec<String>),
    /// The params were refused.
    Refused(Failure),
}

/// One piece of a streaming execution's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamItem {
    /// Bytes passed through as they came (C41).
    Bytes(Vec<u8>),
    /// One chat-completion chunk's JSON.
    Chunk(String),
}

/// How a stream execution ended, before the host's usage estimate.
pub(crate) struct StreamSummary {
    pub(crate) outcome: Result<(), Failure>,
    pub(crate) usage: Usage,
    /// What to count when the upstream reported no usage (C110–C112).
    pub(crate) estimate: Option<EstimationInput>,
    pub(crate) request_body_bytes: Option<u64>,
    pub(crate) attempts: u32,
}

/// The texts the host counts tokens of, and with which encoding.
pub(crate) struct EstimationInput {
    pub(crate) encoding: String,
    pub(crate) prompt_text: String,
    pub(crate) completion_text: String,
}

/// What an `sse.responses-decoder` assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsesAssembled {
    /// The output text.
    pub output_text: String,
    /// The function calls, in the order they first appeared.
    pub function_calls: Vec<openai_connector::responses_api::FunctionCall>,
    /// The usage of the ending event, when it reported one.
    pub usage: Option<openai_connector::usage::TokenUsage>,
    /// How the stream ended, if it did.
    pub end: Option<openai_connector::responses_stream::End>,
}

/// How an execution ended, with what the event log needs.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The non-streaming `data` JSON (`None` for a stream that ended well), or the failure.
    pub outcome: Result<Option<String>, Failure>,
    /// Usage, estimated by the host where the component asked for it.
    pub usage: Usage,
    /// Sent body length (C118).
    pub request_body_bytes: Option<u64>,
    /// Attempts made, when the deployment retries (`retry.maxAttempts` above 1): the event
    /// log then carries them (cli.md "Retries"); without retries its lines stay Kibana's.
    pub attempts: Option<u32>,
    /// Start of the execution.
    pub started: SystemTime,
    /// End of the execution (after the last byte, C116).
    pub ended: SystemTime,
}

impl Finished {
    /// `retrying`: whether the deployment retries (see [`Finished::attempts`]).
    pub(crate) fn from_execution(e: Execution, started: SystemTime, retrying: bool) -> Self {
        Finished {
            outcome: e.outcome.map(Some),
            usage: e.usage,
            request_body_bytes: e.request_body_bytes,
            attempts: retrying.then_some(e.attempts),
            started,
            ended: SystemTime::now(),
        }
    }

    /// An execution that failed with `failure` before anything was sent.
    pub(crate) fn unsent(failure: Failure, started: SystemTime) -> Self {
        Finished {
            outcome: Err(failure),
            usage: Usage::UNAVAILABLE,
            request_body_bytes: None,
            attempts: None,
            started,
            ended: SystemTime::now(),
        }
    }

    /// An execution whose sandbox failed: the guest trapped (its memory or guest-time limit, a
    /// guest fault) or could not be instantiated. Usage is unavailable: it was counted inside
    /// the sandbox, which is gone. The failure is retryable, and still gets its event-log line.
    pub fn sandbox_failure(error: &anyhow::Error, started: SystemTime) -> Self {
        Finished::unsent(sandbox_failure(error), started)
    }

    /// The event-log record of this execution (C116–C121).
    pub fn record<'a>(&'a self, connector: &'a ConnectorFile) -> event_log::ExecutionRecord<'a> {
        event_log::ExecutionRecord {
            connector_id: &connector.id,
            connector_name: &connector.name,
            start: self.started,
            end: self.ended,
            outcome: match &self.outcome {
                Ok(_) => Ok(()),
                Err(f) => Err((f.service_message.as_str(), f.retry)),
            },
            usage: self.usage.for_log(),
            request_body_bytes: self.request_body_bytes,
            attempts: self.attempts,
        }
    }
}
