//! Running connectors: each execution gets a fresh instance, the connector is validated, its
//! TLS profile applied to the transport, then the sub-action runs (whole, or as a [`Stream`]).

use crate::connector_file::ConnectorFile;
use crate::execution::{
    Execution, Failure, Finished, StreamItem, Usage, UsageSource, ValidatedConnector,
};
use crate::outbound::{Cancel, OutboundPolicy};
use crate::pool::ConnectionPool;
use crate::runtime::{Harness, Instance, Launched, StreamExecution};
use crate::settings::Settings;
use crate::tokenizer;
use anyhow::Result;
use std::sync::Arc;
use std::time::SystemTime;

/// The outcome of `execute` for a valid connector.
#[derive(Debug)]
pub enum ExecuteOutcome {
    /// The connector is invalid: one line per problem, prefixed as `validate` prints them.
    /// Nothing was sent (C16).
    InvalidConnector(Vec<String>),
    /// The execution ran (successfully or not).
    Executed(Execution),
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
    instance: Instance,
    handle: StreamExecution,
    started: SystemTime,
}

impl Stream {
    /// The next piece of output; `None` at the end (then call [`finish`](Self::finish)).
    pub async fn next(&mut self) -> Result<Option<StreamItem>> {
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
        let mut usage = summary.usage;
        if let Some(input) = &summary.estimate
            && let Some((prompt, completion, total)) =
                tokenizer::estimate(&input.encoding, &input.prompt_text, &input.completion_text)
        {
            usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                source: UsageSource::Estimated,
                tokenizer: tokenizer::known_encoding(&input.encoding),
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

/// Why no instance was prepared for an execution.
enum PrepareError {
    /// The connector is invalid: `validate`'s lines.
    Invalid(Vec<String>),
    /// The TLS stack refused the connector's identity (C130).
    Refused(Failure),
}

impl Executor {
    /// An executor for `harness` under `settings`, reusing connections across executions with
    /// the default [`PoolLimits`](crate::pool::PoolLimits).
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
    pub(crate) fn harness(&self) -> &Harness {
        &self.harness
    }

    /// The deployment settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A fresh instance that may not send anything.
    async fn instantiate(&self) -> Result<Instance> {
        self.harness
            .instantiate_limited(Arc::new(OutboundPolicy::deny_all()), self.settings.sandbox)
            .await
    }

    /// Validates a connector in a fresh instance; `Err` carries `validate`'s lines.
    pub async fn validate(
        &self,
        connector: &ConnectorFile,
    ) -> Result<Result<ValidatedConnector, Vec<String>>> {
        self.instantiate()
            .await?
            .validate(connector, &self.settings)
            .await
    }

    /// A fresh instance with the connector validated and its TLS profile applied to the
    /// transport.
    async fn prepare(
        &self,
        connector: &ConnectorFile,
        cancel: Cancel,
    ) -> Result<Result<Instance, PrepareError>> {
        let mut instance = self.instantiate().await?;
        let validated = match instance.validate(connector, &self.settings).await? {
            Ok(v) => v,
            Err(lines) => return Ok(Err(PrepareError::Invalid(lines))),
        };
        let tls = validated.tls;
        let refused = tls.as_ref().and_then(|profile| match &self.pool {
            // The pool keeps the configuration, so the check is paid once per profile.
            Some(pool) => pool.client_config(profile).err(),
            None => profile.client_config().err(),
        });
        if let Some(e) = refused {
            // C130: the TLS stack refused an identity that passed validation; nothing is sent.
            return Ok(Err(PrepareError::Refused(Failure::tls_refused(&e))));
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
                return Ok(Started::Ended(Finished::unsent(failure, started)));
            }
        };
        let launched = instance
            .start(connector, &self.settings, params_json)
            .await?;
        Ok(match launched {
            Err(lines) => Started::InvalidConnector(lines),
            Ok(Launched::Ended(execution)) => {
                Started::Ended(Finished::from_execution(execution, started))
            }
            Ok(Launched::Streaming(handle)) => Started::Streaming(Box::new(Stream {
                instance,
                handle,
                started,
            })),
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
                return Ok(ExecuteOutcome::Executed(Execution {
                    outcome: Err(failure),
                    usage: Usage::UNAVAILABLE,
                    request_body_bytes: None,
                }));
            }
        };
        Ok(
            match instance
                .execute(connector, &self.settings, params_json)
                .await?
            {
                Ok(execution) => ExecuteOutcome::Executed(execution),
                Err(lines) => ExecuteOutcome::InvalidConnector(lines),
            },
        )
    }
}
