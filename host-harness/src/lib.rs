//! A wasmtime host for the OpenAI connector component, and the `openai-connector` CLI.
//!
//! The component validates connectors, builds requests and maps responses; this crate gives it
//! outbound HTTP(S) through wasi-http and owns the transport policy: allowed hosts, TLS roots,
//! client certificates and verification modes, timeouts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use openai_connector_harness::{CodeCache, ConnectorFile, Executor, Settings};
//! let executor = Executor::new(openai_connector_harness::Harness::embedded(CodeCache::Default)?, Settings::default());
//! let connector = ConnectorFile::load("my-openai.json".as_ref())?;
//! let outcome = executor.execute(&connector, r#"{"subAction":"test","subActionParams":{"body":"{}"}}"#).await?;
//! # Ok(()) }
//! ```

pub mod connector_file;
pub mod demo_upstream;
pub mod event_log;
pub mod outbound;
pub mod output;
pub mod pool;
pub mod proxy;
pub mod runtime;
pub mod serve;
pub mod settings;
pub mod tls;
pub mod tokenizer;

pub use connector_file::ConnectorFile;
pub use outbound::{Cancel, OutboundPolicy};
pub use pool::{ConnectionPool, PoolLimits};
pub use runtime::{CodeCache, Harness, SandboxLimits, wit};
pub use settings::Settings;

use anyhow::Result;
use std::sync::Arc;
use std::time::SystemTime;
use tls::TlsProfile;

/// The outcome of `execute` for a valid connector.
#[derive(Debug)]
pub enum ExecuteOutcome {
    /// The connector is invalid: one line per problem, prefixed as `validate` prints them.
    /// Nothing was sent (C16).
    InvalidConnector(Vec<String>),
    /// The execution ran (successfully or not).
    Executed(wit::Execution),
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
    pub source: wit::UsageSource,
    /// The encoding an estimate was counted with.
    pub tokenizer: Option<&'static str>,
}

impl Usage {
    fn from_wit(u: &wit::TokenUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            source: u.source,
            tokenizer: None,
        }
    }

    /// The event log's view (C117, C119).
    pub fn for_log(&self) -> event_log::Usage<'static> {
        event_log::Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.total_tokens,
            source: usage_source_name(self.source),
            tokenizer: self.tokenizer,
        }
    }
}

/// The name of a usage source (C106): `reported`, `estimated` or `unavailable`.
pub fn usage_source_name(source: wit::UsageSource) -> &'static str {
    match source {
        wit::UsageSource::Reported => "reported",
        wit::UsageSource::Estimated => "estimated",
        wit::UsageSource::Unavailable => "unavailable",
    }
}

/// How an execution ended, with what the event log needs.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The non-streaming `data` JSON (`None` for a stream that ended well), or the failure.
    pub outcome: Result<Option<String>, wit::Failure>,
    /// Usage, estimated by the host where the component asked for it.
    pub usage: Usage,
    /// Sent body length (C118).
    pub request_body_bytes: Option<u64>,
    /// Start of the execution.
    pub started: SystemTime,
    /// End of the execution (after the last byte, C116).
    pub ended: SystemTime,
}

impl Finished {
    fn from_execution(e: wit::Execution, started: SystemTime) -> Self {
        Finished {
            outcome: e.outcome.map(Some),
            usage: Usage::from_wit(&e.usage),
            request_body_bytes: e.request_body_bytes,
            started,
            ended: SystemTime::now(),
        }
    }

    /// An execution whose sandbox failed: the guest trapped (its memory or guest-time limit, a
    /// guest fault) or could not be instantiated. Usage is unavailable: it was counted inside
    /// the sandbox, which is gone. The failure is retryable, and still gets its event-log line.
    pub fn sandbox_failure(error: &anyhow::Error, started: SystemTime) -> Self {
        Finished {
            outcome: Err(wit::Failure {
                service_message: format!("the connector's sandbox failed: {}", error.root_cause()),
                retry: true,
            }),
            usage: Usage::from_wit(&UNAVAILABLE),
            request_body_bytes: None,
            started,
            ended: SystemTime::now(),
        }
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
        }
    }
}

/// How `start` went.
pub enum Started {
    /// The connector is invalid (nothing sent, no event-log line, C116).
    InvalidConnector(Vec<String>),
    /// The execution has ended.
    Ended(Finished),
    /// A streaming response is arriving.
    Streaming(Box<Stream>),
}

/// A streaming execution in its own instance.
pub struct Stream {
    instance: runtime::Instance,
    handle: wasmtime::component::ResourceAny,
    started: SystemTime,
}

impl Stream {
    /// The next piece of output; `None` at the end (then call [`finish`](Self::finish)).
    pub async fn next(&mut self) -> Result<Option<runtime::actions::StreamItem>> {
        self.instance.stream_next(self.handle).await
    }

    /// Ends the execution after [`next`](Self::next) gave `None`, or failed with `trap`: its
    /// [`finish`](Self::finish), or, when the guest trapped (in `next` or in `finish`; the Store
    /// is unusable after a trap), [`Finished::sandbox_failure`]. The trap is returned too, for
    /// the caller's log.
    pub async fn end(
        self: Box<Self>,
        trap: Option<anyhow::Error>,
    ) -> (Finished, Option<anyhow::Error>) {
        let started = self.started;
        let finished = match trap {
            Some(e) => Err(e),
            None => self.finish().await,
        };
        match finished {
            Ok(finished) => (finished, None),
            Err(e) => (Finished::sandbox_failure(&e, started), Some(e)),
        }
    }

    /// Ends the execution (abandoning the upstream if it has not ended) and estimates usage
    /// when none was reported (C110–C113).
    pub async fn finish(mut self: Box<Self>) -> Result<Finished> {
        let summary = self.instance.stream_finish(self.handle).await?;
        let mut usage = Usage::from_wit(&summary.usage);
        if let Some(input) = &summary.estimate
            && let Some((prompt, completion, total)) =
                tokenizer::estimate(&input.encoding, &input.prompt_text, &input.completion_text)
        {
            usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                source: wit::UsageSource::Estimated,
                tokenizer: encoding_name(&input.encoding),
            };
        }
        Ok(Finished {
            outcome: summary.outcome.map(|()| None),
            usage,
            request_body_bytes: summary.request_body_bytes,
            started: self.started,
            ended: SystemTime::now(),
        })
    }
}

/// Runs connectors through the component under one set of deployment settings. Clones share
/// one pool of keep-alive connections.
#[derive(Clone)]
pub struct Executor {
    harness: Harness,
    settings: Settings,
    pool: Option<Arc<ConnectionPool>>,
}

impl Executor {
    /// An executor for `harness` under `settings`, reusing connections across executions with
    /// the default [`PoolLimits`].
    pub fn new(harness: Harness, settings: Settings) -> Self {
        Executor {
            harness,
            settings,
            pool: Some(Arc::new(ConnectionPool::default())),
        }
    }

    /// The same executor taking connections from `pool`, or opening a new connection for
    /// every request when `None`.
    pub fn with_connection_pool(mut self, pool: Option<Arc<ConnectionPool>>) -> Self {
        self.pool = pool;
        self
    }

    /// The pool of keep-alive connections, if connections are reused.
    pub fn connection_pool(&self) -> Option<&Arc<ConnectionPool>> {
        self.pool.as_ref()
    }

    /// The harness (engine and pre-linked component).
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// The deployment settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the component needs of the settings.
    pub fn deployment(&self) -> wit::DeploymentSettings {
        wit::DeploymentSettings {
            allowed_hosts: self.settings.allowed_hosts.clone(),
            response_timeout_ms: self.settings.response_timeout_ms(),
            max_response_content_length: self.settings.max_response_content_length,
        }
    }

    /// Validates a connector in a fresh instance.
    pub async fn validate(
        &self,
        connector: &ConnectorFile,
    ) -> Result<Result<wit::ValidatedConnector, Vec<String>>> {
        let mut instance = self
            .harness
            .instantiate_limited(Arc::new(OutboundPolicy::deny_all()), self.settings.sandbox)
            .await?;
        let result = instance
            .validate(&definition(connector), &self.deployment())
            .await?;
        Ok(result.map_err(|e| validation_lines(&e)))
    }

    /// A fresh instance with the connector validated and its TLS profile applied to the
    /// transport; `Err` carries the validation lines.
    async fn prepare(
        &self,
        connector: &ConnectorFile,
        cancel: Cancel,
    ) -> Result<Result<runtime::Instance, PrepareError>> {
        let mut instance = self
            .harness
            .instantiate_limited(Arc::new(OutboundPolicy::deny_all()), self.settings.sandbox)
            .await?;
        let validated = match instance
            .validate(&definition(connector), &self.deployment())
            .await?
        {
            Ok(v) => v,
            Err(e) => return Ok(Err(PrepareError::Invalid(validation_lines(&e)))),
        };
        let tls = validated.tls.map(TlsProfile::from);
        let refused = tls.as_ref().and_then(|profile| match &self.pool {
            // The pool keeps the configuration, so the check is paid once per profile.
            Some(pool) => pool.client_config(profile).err(),
            None => profile.client_config().err(),
        });
        if let Some(e) = refused {
            // C130: the TLS stack refused an identity that passed validation; nothing is sent.
            return Ok(Err(PrepareError::Refused(wit::Failure {
                service_message: format!("{e:#}"),
                retry: true,
            })));
        }
        instance.set_policy(Arc::new(
            OutboundPolicy::for_connector(&self.settings, tls)
                .with_pool(self.pool.clone())
                .with_cancel(cancel),
        ));
        Ok(Ok(instance))
    }

    /// Runs any sub-action; streaming ones return a [`Stream`].
    pub async fn start(&self, connector: &ConnectorFile, params_json: &str) -> Result<Started> {
        self.start_cancellable(connector, params_json, Cancel::new())
            .await
    }

    /// [`start`](Self::start), abandoned when `cancel` fires (C68): the execution then fails with
    /// `ERR_CANCELED` and still reports the usage of what arrived (C113).
    pub async fn start_cancellable(
        &self,
        connector: &ConnectorFile,
        params_json: &str,
        cancel: Cancel,
    ) -> Result<Started> {
        let started = SystemTime::now();
        let mut instance = match self.prepare(connector, cancel).await? {
            Ok(instance) => instance,
            Err(PrepareError::Invalid(lines)) => return Ok(Started::InvalidConnector(lines)),
            Err(PrepareError::Refused(failure)) => {
                return Ok(Started::Ended(Finished {
                    outcome: Err(failure),
                    usage: Usage::from_wit(&UNAVAILABLE),
                    request_body_bytes: None,
                    started,
                    ended: SystemTime::now(),
                }));
            }
        };
        let result = instance
            .start(&definition(connector), &self.deployment(), params_json)
            .await?;
        Ok(match result {
            Err(e) => Started::InvalidConnector(validation_lines(&e)),
            Ok(runtime::actions::Started::Ended(execution)) => {
                Started::Ended(Finished::from_execution(execution, started))
            }
            Ok(runtime::actions::Started::Streaming(handle)) => {
                Started::Streaming(Box::new(Stream {
                    instance,
                    handle,
                    started,
                }))
            }
        })
    }

    /// Runs one sub-action to its end; a streamed body is collected whole as `data` (a JSON
    /// string). For callers that want one result.
    pub async fn execute(
        &self,
        connector: &ConnectorFile,
        params_json: &str,
    ) -> Result<ExecuteOutcome> {
        let mut instance = match self.prepare(connector, Cancel::new()).await? {
            Ok(instance) => instance,
            Err(PrepareError::Invalid(lines)) => {
                return Ok(ExecuteOutcome::InvalidConnector(lines));
            }
            Err(PrepareError::Refused(failure)) => {
                return Ok(ExecuteOutcome::Executed(wit::Execution {
                    outcome: Err(failure),
                    usage: UNAVAILABLE,
                    request_body_bytes: None,
                }));
            }
        };
        match instance
            .execute(&definition(connector), &self.deployment(), params_json)
            .await?
        {
            Ok(execution) => Ok(ExecuteOutcome::Executed(execution)),
            Err(e) => Ok(ExecuteOutcome::InvalidConnector(validation_lines(&e))),
        }
    }
}

/// The static name of a known encoding.
fn encoding_name(encoding: &str) -> Option<&'static str> {
    [tokenizer::O200K_BASE, tokenizer::CL100K_BASE]
        .into_iter()
        .find(|known| *known == encoding)
}

enum PrepareError {
    Invalid(Vec<String>),
    Refused(wit::Failure),
}

const UNAVAILABLE: wit::TokenUsage = wit::TokenUsage {
    prompt_tokens: 0,
    completion_tokens: 0,
    total_tokens: 0,
    source: wit::UsageSource::Unavailable,
};

/// The WIT definition of a loaded connector file.
pub fn definition(connector: &ConnectorFile) -> wit::ConnectorDefinition {
    wit::ConnectorDefinition {
        id: connector.id.clone(),
        name: connector.name.clone(),
        config_json: connector.config_json.clone(),
        secrets_json: connector.secrets_json.clone(),
    }
}

/// Validation problems as `validate` prints them, config first (C17).
pub fn validation_lines(errors: &wit::ValidationErrors) -> Vec<String> {
    errors
        .config
        .iter()
        .map(|p| format!("error validating action type config: {p}"))
        .chain(
            errors
                .secrets
                .iter()
                .map(|p| format!("error validating action type secrets: {p}")),
        )
        .collect()
}
