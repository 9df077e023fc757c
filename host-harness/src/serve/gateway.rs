//! The state every request of a gateway shares: the configuration in force (connectors,
//! routes, tokens: `config`, replaced by a reload), metrics, usage history and event log, client
//! limits, admission, and the executions in flight.

use super::admission::{Admission, Shares, Ticket};
use super::catalog::Served;
use super::config::Config;
use super::connection::{self, Deadlines, Registry};
use super::{dashboard, limits, metrics, sinks};
use crate::event_log::{EventLog, event_line};
use crate::execution::Finished;
use crate::executor::Executor;
use crate::outbound::Cancel;
use crate::sandbox;
use anyhow::{Context, Result};
use openai_connector::redaction::Secrets;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// What `serve` was asked to do.
pub struct ServeOptions {
    /// `--connectors`: a directory of connector files or a preconfigured-connectors map.
    pub connectors: PathBuf,
    /// `--listen`.
    pub listen: String,
    /// `--event-log`.
    pub event_log: Option<PathBuf>,
    /// `--client-tokens`.
    pub client_tokens: Option<PathBuf>,
    /// `--routes`.
    pub routes: Option<PathBuf>,
    /// `--usage-sink`, in order.
    pub usage_sinks: Vec<String>,
    /// `--state`: where client limits are counted (`redis://...`); `None`: in the process.
    pub state: Option<String>,
    /// `OPENAI_CONNECTOR_ADMIN_TOKEN`; `None` only with `--insecure-no-auth`.
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("connectors", &self.connectors)
            .field("listen", &self.listen)
            .field("event_log", &self.event_log)
            .field("client_tokens", &self.client_tokens)
            .field("routes", &self.routes)
            .field("state", &self.state.as_deref().map(limits::State::redacted))
            .field(
                "usage_sinks",
                &self
                    .usage_sinks
                    .iter()
                    .map(|u| sinks::without_credentials(u))
                    .collect::<Vec<_>>(),
            )
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Executions in flight, with their cancel handles (for the end of the grace period).
#[derive(Default)]
pub(super) struct InFlight {
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Cancel>>,
    changed: tokio::sync::Notify,
}

/// Removes its execution from [`InFlight`] when dropped, and gives its admission permits back.
pub(super) struct InFlightGuard {
    id: u64,
    in_flight: Arc<InFlight>,
    _ticket: Ticket,
}

impl InFlight {
    /// Registers an admitted execution.
    pub(super) fn enter(self: &Arc<Self>, ticket: Ticket, cancel: Cancel) -> InFlightGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, cancel);
        InFlightGuard {
            id,
            in_flight: self.clone(),
            _ticket: ticket,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cancel>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn count(&self) -> usize {
        self.lock().len()
    }

    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn cancel_all(&self) {
        for cancel in self.lock().values() {
            cancel.cancel();
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.id);
        self.in_flight.changed.notify_waiters();
    }
}

/// The state shared by every request.
pub(super) struct Gateway {
    pub(super) executor: Executor,
    /// The connectors, routes and tokens in force (replaced whole by a reload).
    config: RwLock<Arc<Config>>,
    pub(super) metrics: metrics::Metrics,
    pub(super) history: dashboard::UsageHistory,
    log: Option<EventLog>,
    /// `--usage-sink`: where usage goes besides the event log.
    pub(super) sinks: sinks::Sinks,
    pub(super) in_flight: Arc<InFlight>,
    /// Who may start an execution, and when (one slot per pooled instance: executions beyond
    /// the pool wait there instead of failing to instantiate).
    pub(super) admission: Admission,
    /// Client limits (`--client-tokens` `limits`, counted where `--state` says).
    pub(super) limits: limits::Limiter,
    /// The open client connections, capped.
    pub(super) connections: Arc<Registry>,
    /// How long a connection may wait for a request head, or idle.
    pub(super) deadlines: Deadlines,
    /// How long a request body may take to arrive.
    pub(super) body_timeout: Duration,
}

impl Gateway {
    /// The model an execution's `params` ask for, when a usage sink reports it (`None`
    /// otherwise, without looking).
    pub(super) fn request_model(&self, params: &str) -> Option<String> {
        if self.sinks.wants_calls() {
            sinks::request_model(params)
        } else {
            None
        }
    }

    /// The configuration in force: a request keeps the one it started with.
    pub(super) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads and validates the connectors, the client tokens and the event log.
    pub(super) async fn new(executor: Executor, options: &ServeOptions) -> Result<Gateway> {
        // C121a: no failure shows a token, whatever an upstream echoes.
        let mut tokens = Secrets::new();
        let mut config = Config::load(options, &executor, &mut tokens).await?;
        executor.redact_also(&tokens);
        let history = dashboard::UsageHistory::new(
            config
                .catalog
                .iter()
                .map(|c| (c.file.id.as_str(), c.file.name.as_str())),
        );
        let log =
            match &options.event_log {
                Some(path) => {
                    let summary = history.load_event_log(path).with_context(|| {
                        format!("{}: cannot read the event log", path.display())
                    })?;
                    if summary.skipped > 0 {
                        tracing::warn!(
                            "{}: {} lines are not execution events; the dashboard skips them",
                            path.display(),
                            summary.skipped
                        );
                    }
                    Some(EventLog::open(path).with_context(|| {
                        format!("{}: cannot open the event log", path.display())
                    })?)
                }
                None => None,
            };
        let metrics = metrics::Metrics::new(config.catalog.iter().map(|c| c.file.id.as_str()));
        let limits = &executor.settings().serve;
        let sinks = sinks::Sinks::start(
            &options.usage_sinks,
            limits.usage_sink_buffer,
            std::env::var(sinks::AUTH_VAR).ok().as_deref(),
        )?;
        let shares = Self::shares(&executor, &config);
        let admission = Admission::new(
            shares,
            config.catalog.iter().map(|c| c.file.id.clone()),
            config.auth.callers(),
            limits.queue_timeout,
        );
        let state = limits::State::parse(options.state.as_deref()).map_err(anyhow::Error::msg)?;
        let client_limits = limits::Limiter::new(state).await?;
        config.auth.adopt_counters(&client_limits);
        let descriptors = connection::raise_descriptor_limit();
        let max_connections = limits
            .max_connections
            .unwrap_or_else(|| connection::derived_max_connections(descriptors.unwrap_or(1024)));
        if let Some(warning) = sandbox::mapping_limit_warning(shares.slots) {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            "limits: {max_connections} connections, {} execution slots ({} per connector, {} per client)",
            shares.slots,
            shares.per_connector,
            shares.per_client
        );
        Ok(Gateway {
            config: RwLock::new(Arc::new(config)),
            metrics,
            history,
            log,
            sinks,
            in_flight: Arc::default(),
            admission,
            limits: client_limits,
            connections: Registry::new(max_connections),
            deadlines: Deadlines {
                header_read: limits.header_read_timeout,
                idle: limits.idle_timeout,
            },
            body_timeout: limits.request_body_timeout,
            executor,
        })
    }

    /// The admission shares of `config`'s connectors and callers.
    fn shares(executor: &Executor, config: &Config) -> Shares {
        Shares::new(
            &executor.settings().serve,
            executor.harness().max_instances(),
            config.catalog.iter().count(),
            config.auth.callers().len(),
        )
    }

    /// Reads the connectors, routes and client tokens again (`SIGHUP`, cli.md "Reload"). A set
    /// that does not validate is refused whole and the configuration in force stays; requests
    /// in flight finish on the one they started with. A token kept keeps its client-limit
    /// counts and admission queue. Returns what is served now.
    pub(super) async fn reload(&self, options: &ServeOptions) -> Result<String> {
        let mut tokens = Secrets::new();
        let mut config = Config::load(options, &self.executor, &mut tokens).await?;
        config.auth.adopt_counters(&self.limits);
        // Everything the new configuration needs is in place before a request can see it.
        self.executor.redact_also(&tokens);
        self.metrics
            .list_connectors(config.catalog.iter().map(|c| c.file.id.as_str()));
        self.history.list_connectors(
            config
                .catalog
                .iter()
                .map(|c| (c.file.id.as_str(), c.file.name.as_str())),
        );
        self.admission.reconfigure(
            Self::shares(&self.executor, &config),
            config.catalog.iter().map(|c| c.file.id.clone()),
            config.auth.callers(),
        );
        let summary = config.summary();
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(summary)
    }

    /// Accounts for a finished execution: event log line (C116), usage sinks, metrics,
    /// dashboard. `request_model`: what [`Gateway::request_model`] found.
    pub(super) fn record(
        &self,
        served: &Served,
        route: metrics::Route,
        finished: &Finished,
        trapped: bool,
        started: Instant,
        request_model: Option<String>,
    ) {
        let connector = &served.file;
        let line = (self.log.is_some() || self.sinks.wants_lines())
            .then(|| event_line(&finished.record(connector)));
        if let (Some(log), Some(line)) = (&self.log, &line)
            && let Err(e) = log.append_line(line)
        {
            tracing::error!(
                "{}: cannot append to the event log: {e}",
                log.path().display()
            );
        }
        if let Some(line) = &line
            && self.sinks.wants_lines()
        {
            self.sinks.push_line(line);
        }
        if self.sinks.wants_calls() {
            let config = served.public_json.get("config");
            self.sinks
                .push_call(&connector.id, config, finished, request_model);
        }
        let usage = finished.usage.for_log();
        self.metrics.finished(&metrics::Observation {
            connector: &connector.id,
            route,
            failed: finished.outcome.is_err(),
            trapped,
            latency: started.elapsed(),
            source: usage.source,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
        self.history.add(&dashboard::UsagePoint {
            connector_id: &connector.id,
            connector_name: &connector.name,
            at: finished.ended,
            failed: finished.outcome.is_err(),
            source: usage.source,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        });
    }
}
