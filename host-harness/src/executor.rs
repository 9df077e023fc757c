//! Running connectors. A connector is validated once ([`Executor::prepare`]: its prepared
//! form, public JSON and TLS profile, and the TLS stack's verdict on that profile); each
//! execution of it is then one fresh instance, with the TLS profile applied to its transport,
//! and one `start` (whole, or as a [`Stream`]).
//!
//! Every failure an execution ends with leaves here redacted (C32, C121a): the component knows
//! only the API key, so the message is redacted again with every secret the harness knows (the
//! deployment's, built once per executor, and the connector's, built once per prepared
//! connector). Whatever shows the failure afterwards (the CLI's output, the event log, `serve`'s
//! responses and stream error events) gets the redacted text.

use crate::connector_file::ConnectorFile;
use crate::execution::{
    Execution, Failure, Finished, SandboxFailed, StreamItem, Usage, ValidatedConnector,
};
use crate::outbound::{Cancel, OutboundPolicy};
use crate::pool::ConnectionPool;
use crate::runtime::{Harness, Instance, Launched, StreamExecution};
use crate::settings::Settings;
use anyhow::Result;
use openai_connector::redaction::Secrets;
use std::sync::{Arc, RwLock};
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
    /// Whether the deployment retries (see [`Finished::attempts`]).
    retrying: bool,
    redaction: Redaction,
}

/// The secrets an execution's failure is redacted with (C32, C121a).
#[derive(Clone)]
struct Redaction {
    /// The deployment's (the proxy's; `serve` adds its tokens).
    deployment: Arc<Secrets>,
    /// The connector's (its API key).
    connector: Arc<Secrets>,
}

impl Redaction {
    /// `outcome` with its failure's message redacted.
    fn outcome<T>(&self, outcome: Result<T, Failure>) -> Result<T, Failure> {
        outcome.map_err(|mut failure| {
            let message = if self.deployment.is_empty() {
                self.connector.redact(&failure.service_message)
            } else {
                let mut all = (*self.deployment).clone();
                all.extend(&self.connector);
                all.redact(&failure.service_message)
            };
            failure.service_message = message;
            failure
        })
    }

    fn finished(&self, finished: Finished) -> Finished {
        Finished {
            outcome: self.outcome(finished.outcome),
            ..finished
        }
    }
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
        let redaction = self.redaction.clone();
        let finished = match trap {
            Some(e) => Err(e),
            None => self.finish().await,
        };
        match finished {
            Ok(finished) => (finished, None),
            Err(e) => (
                redaction.finished(Finished::sandbox_failure(&e, started)),
                Some(e),
            ),
        }
    }

    /// Ends the execution (abandoning the upstream if it has not ended) and estimates usage
    /// when none was reported (C110–C113).
    pub async fn finish(mut self: Box<Self>) -> Result<Finished> {
        let summary = self.instance.stream_finish(self.handle).await?;
        let usage = summary.usage.estimated(summary.estimate.as_ref());
        Ok(Finished {
            outcome: self.redaction.outcome(summary.outcome.map(|()| None)),
            usage,
            request_body_bytes: summary.request_body_bytes,
            attempts: self.retrying.then_some(summary.attempts),
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
    /// The deployment's secrets (C121a), built once, and those `serve` adds: shared by the
    /// clones, so that every serving thread redacts the tokens a reload brings.
    secrets: Arc<RwLock<Arc<Secrets>>>,
}

/// A connector validated once, ready for any number of executions.
#[derive(Clone, Debug)]
pub struct Prepared {
    validated: ValidatedConnector,
    /// C130: the TLS stack refused the connector's identity or trust anchors; every execution
    /// fails with this before anything is sent.
    refused: Option<Failure>,
    /// The connector's secrets (C32, C121a), built once.
    secrets: Arc<Secrets>,
}

impl Prepared {
    /// Kibana's get-connector shape (`validate`'s output), never the secrets.
    pub fn connector_json(&self) -> &str {
        &self.validated.connector_json
    }

    /// The connector's `defaultModel` (OpenAI's default filled in; Azure may have none).
    pub(crate) fn default_model(&self) -> Option<&str> {
        self.validated.prepared.default_model.as_deref()
    }
}

impl Executor {
    /// An executor for `harness` under `settings`, reusing connections across executions with
    /// the default [`PoolLimits`](crate::pool::PoolLimits).
    pub fn new(harness: Harness, settings: Settings) -> Self {
        Executor {
            secrets: Arc::new(RwLock::new(Arc::new(settings.secrets()))),
            harness,
            settings,
            pool: Some(Arc::new(ConnectionPool::default())),
        }
    }

    /// Redacts `secrets` too from the failures this executor and its clones report (C121a;
    /// `serve` adds its client and admin tokens, and on every reload the new ones). Secrets
    /// are only ever added: a token a reload removed stays a secret.
    pub(crate) fn redact_also(&self, secrets: &Secrets) {
        let mut current = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        let mut all = (**current).clone();
        all.extend(secrets);
        *current = Arc::new(all);
    }

    /// How an execution of `prepared` is redacted.
    fn redaction(&self, prepared: &Prepared) -> Redaction {
        Redaction {
            deployment: self
                .secrets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            connector: prepared.secrets.clone(),
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
    /// Whether the deployment retries (`retry.maxAttempts` above 1).
    fn retrying(&self) -> bool {
        self.settings.deployment.retry.max_attempts > 1
    }

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

    /// Validates a connector in a fresh instance; `Err` carries `validate`'s lines. A failed
    /// sandbox (a trap, such as the memory limit) is the outer `Err`, a [`SandboxFailed`] whose
    /// text is the one line `execute` reports; the trap itself is logged at debug level.
    pub async fn validate(
        &self,
        connector: &ConnectorFile,
    ) -> Result<Result<ValidatedConnector, Vec<String>>> {
        let validated = match self.instantiate().await {
            Ok(mut instance) => instance.validate(connector, &self.settings).await,
            Err(e) => Err(e),
        };
        validated.map_err(|e| {
            tracing::debug!("validation failed in the sandbox: {e:?}");
            SandboxFailed::of(&e).into()
        })
    }

    /// Validates a connector once for every execution of it; `Err` carries `validate`'s lines.
    pub async fn prepare(
        &self,
        connector: &ConnectorFile,
    ) -> Result<Result<Prepared, Vec<String>>> {
        let validated = match self.validate(connector).await? {
            Ok(validated) => validated,
            Err(lines) => return Ok(Err(lines)),
        };
        let refused = validated.tls.as_ref().and_then(|profile| match &self.pool {
            // The pool keeps the configuration, so an execution does not build it again.
            Some(pool) => pool.client_config(profile).err(),
            None => profile.client_config().err(),
        });
        let secrets = Arc::new(Secrets::api_key(validated.prepared.api_key.as_deref()));
        Ok(Ok(Prepared {
            validated,
            refused: refused.map(|e| Failure::tls_refused(format!("{e:#}"))),
            secrets,
        }))
    }

    /// A fresh instance whose transport applies the connector's TLS profile.
    async fn instance_for(&self, prepared: &Prepared, cancel: Cancel) -> Result<Instance> {
        let policy = OutboundPolicy::for_connector(&self.settings, prepared.validated.tls.clone())
            .with_pool(self.pool.clone())
            .with_cancel(cancel);
        self.harness
            .instantiate_limited(Arc::new(policy), self.settings.sandbox)
            .await
    }

    /// Runs any sub-action; streaming ones return a [`Stream`].
    pub async fn start(&self, prepared: &Prepared, params_json: &str) -> Result<Started> {
        self.start_cancellable(prepared, params_json, Cancel::new())
            .await
    }

    /// [`start`](Self::start), abandoned when `cancel` fires (C68): the execution then fails with
    /// `ERR_CANCELED` and still reports the usage of what arrived (C113).
    pub async fn start_cancellable(
        &self,
        prepared: &Prepared,
        params_json: &str,
        cancel: Cancel,
    ) -> Result<Started> {
        let started = SystemTime::now();
        let redaction = self.redaction(prepared);
        if let Some(failure) = &prepared.refused {
            return Ok(Started::Ended(
                redaction.finished(Finished::unsent(failure.clone(), started)),
            ));
        }
        let mut instance = self.instance_for(prepared, cancel).await?;
        Ok(
            match instance
                .start(&prepared.validated.prepared, &self.settings, params_json)
                .await?
            {
                Launched::Ended(execution) => Started::Ended(redaction.finished(
                    Finished::from_execution(execution, started, self.retrying()),
                )),
                Launched::Streaming(handle) => Started::Streaming(Box::new(Stream {
                    instance,
                    handle,
                    started,
                    redaction,
                    retrying: self.retrying(),
                })),
            },
        )
    }

    /// Runs one sub-action of a prepared connector to its end; a streamed body is collected
    /// whole as `data` (a JSON string).
    pub async fn execute_prepared(
        &self,
        prepared: &Prepared,
        params_json: &str,
    ) -> Result<Execution> {
        let redaction = self.redaction(prepared);
        let execution = match &prepared.refused {
            Some(failure) => Execution {
                outcome: Err(failure.clone()),
                usage: Usage::UNAVAILABLE,
                request_body_bytes: None,
                attempts: 0,
            },
            None => {
                self.instance_for(prepared, Cancel::new())
                    .await?
                    .execute(&prepared.validated.prepared, &self.settings, params_json)
                    .await?
            }
        };
        Ok(Execution {
            outcome: redaction.outcome(execution.outcome),
            ..execution
        })
    }

    /// Validates `connector` and runs one sub-action to its end: [`prepare`](Self::prepare)
    /// then [`execute_prepared`](Self::execute_prepared), for callers that run it once.
    pub async fn execute(
        &self,
        connector: &ConnectorFile,
        params_json: &str,
    ) -> Result<ExecuteOutcome> {
        Ok(match self.prepare(connector).await? {
            Ok(prepared) => {
                ExecuteOutcome::Executed(self.execute_prepared(&prepared, params_json).await?)
            }
            Err(lines) => ExecuteOutcome::InvalidConnector(lines),
        })
    }
}
