//! `openai-connector serve`: the gateway (cli.md "serve").
//!
//! One engine and pre-linked component serve every request. Connections are served by one
//! thread per core, each with a single-threaded runtime and its own pool of upstream
//! connections ([`run`]). Every execution runs in its own `Store` with the sandbox limits of
//! the settings (`guestMemoryLimit`, `guestTimeLimit`). A trap in one execution answers that
//! request with a 500 JSON error; the gateway keeps serving.
//!
//! Routes (the private module `routes`): Kibana-compatible connector routes and `_execute`, the
//! OpenAI-compatible `POST /connectors/{id}/v1/chat/completions`, `/metrics` (`metrics`),
//! `/dashboard` (`dashboard`) and `/healthz`. Tokens: `auth`.
//!
//! Shutdown: on SIGTERM or SIGINT the listener closes, idle connections close, and requests in
//! flight (streams included) get the settings' `shutdownGrace` (default 30 s) to finish; what
//! is still running after it is cancelled (C68), logged, and the process exits.

mod auth;
mod catalog;
mod dashboard;
mod metrics;
mod routes;

use crate::connector_file::ConnectorFile;
use crate::event_log::EventLog;
use crate::execution::Finished;
use crate::executor::Executor;
use crate::outbound::Cancel;
use crate::pool::ConnectionPool;
use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

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
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Executions in flight, with their cancel handles (for the end of the grace period).
#[derive(Default)]
struct InFlight {
    next_id: AtomicU64,
    running: Mutex<HashMap<u64, Cancel>>,
    changed: tokio::sync::Notify,
}

/// Removes its execution from [`InFlight`] when dropped, and gives its instance slot back.
struct InFlightGuard {
    id: u64,
    in_flight: Arc<InFlight>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl InFlight {
    /// Waits for an instance slot, then registers the execution.
    async fn enter(
        self: &Arc<Self>,
        slots: &Arc<tokio::sync::Semaphore>,
        cancel: Cancel,
    ) -> InFlightGuard {
        // The semaphore is never closed.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the instance semaphore is never closed"));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, cancel);
        InFlightGuard {
            id,
            in_flight: self.clone(),
            _slot: slot,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cancel>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self) -> usize {
        self.lock().len()
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn cancel_all(&self) {
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
pub(crate) struct Gateway {
    executor: Executor,
    catalog: catalog::Catalog,
    auth: auth::Auth,
    metrics: metrics::Metrics,
    history: dashboard::UsageHistory,
    log: Option<EventLog>,
    in_flight: Arc<InFlight>,
    /// One permit per pooled instance: executions beyond the pool wait here instead of
    /// failing to instantiate.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// Loads and validates the connectors, the client tokens and the event log.
    pub(crate) async fn new(executor: Executor, options: &ServeOptions) -> Result<Gateway> {
        let catalog = catalog::Catalog::load(&options.connectors, &executor).await?;
        let mut auth = auth::Auth::new(options.admin_token.as_deref());
        if let Some(path) = &options.client_tokens {
            auth = auth.with_client_tokens_file(path, &catalog.ids())?;
        }
        let history = dashboard::UsageHistory::new(
            catalog
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
        let metrics = metrics::Metrics::new(catalog.iter().map(|c| c.file.id.as_str()));
        Ok(Gateway {
            catalog,
            auth,
            metrics,
            history,
            log,
            in_flight: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                executor.harness().max_instances(),
            )),
            executor,
        })
    }

    /// Accounts for a finished execution: event log line (C116), metrics, dashboard.
    fn record(
        &self,
        connector: &ConnectorFile,
        route: metrics::Route,
        finished: &Finished,
        trapped: bool,
        started: Instant,
    ) {
        if let Some(log) = &self.log
            && let Err(e) = log.append(&finished.record(connector))
        {
            tracing::error!(
                "{}: cannot append to the event log: {e}",
                log.path().display()
            );
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

/// Runs the gateway until SIGTERM or SIGINT; `on_ready` gets the bound address once it
/// accepts connections.
pub async fn serve(
    executor: Executor,
    options: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let gateway = Arc::new(Gateway::new(executor, &options).await?);
    let listener = TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    on_ready(addr);
    run(gateway, listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Accepts connections until `shutdown`, hands each to a serving thread, then drains (see the
/// module docs).
///
/// Each serving thread runs its own single-threaded runtime with its own pool of upstream
/// connections, so a request, its Store and its upstream connection all stay on one thread:
/// serving one takes no cross-thread wake-up. On a small machine at low load those wake-ups
/// cost more than the work (measured with `benches/gateway.rs`, see `benches/RESULTS.md`).
/// Connections are dealt round robin; the acceptor only accepts. The price: a connection stays
/// on its thread, so a long guest computation (a body of many megabytes, say) delays the other
/// connections of that thread instead of being worked around by another one.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for index in 0..worker_count() {
        workers.push(Worker::start(index, gateway.clone(), stop_rx.clone())?);
    }
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted.and_then(|(stream, _)| {
                    stream.set_nodelay(true)?;
                    stream.into_std()
                }) {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A worker only goes away if its thread died; the next one takes the connection.
                let mut stream = stream;
                let mut dealt = false;
                for _ in 0..workers.len() {
                    let worker = &workers[next % workers.len()];
                    next += 1;
                    match worker.connections.send(stream) {
                        Ok(()) => {
                            dealt = true;
                            break;
                        }
                        Err(returned) => stream = returned.0,
                    }
                }
                if !dealt {
                    anyhow::bail!("every serving thread has stopped");
                }
            }
        }
    }
    drop(listener);
    let running = gateway.in_flight.count();
    let grace = gateway.executor.settings().shutdown_grace;
    eprintln!(
        "shutting down: {running} execution(s) in flight, up to {} to finish",
        seconds_or_ms(grace)
    );
    let _ = stop_tx.send(true);
    let mut drained = Vec::new();
    for worker in workers {
        // Closing the channel ends the worker's accept loop; it then drains its connections.
        drop(worker.connections);
        drained.push(worker.drained);
    }
    // Done when every connection has closed (each after its response in flight) and every
    // execution has written its log line.
    let all_done = async {
        for worker in drained {
            let _ = worker.await;
        }
        gateway.in_flight.wait_idle().await;
    };
    tokio::pin!(all_done);
    if tokio::time::timeout(grace, &mut all_done).await.is_err() {
        eprintln!("grace period over: cancelling what is still running");
        gateway.in_flight.cancel_all();
        // Cancelled executions end promptly (C68): each writes its log line, and its client
        // gets the error event and the end of the stream before the connection closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut all_done).await;
    }
    Ok(())
}

/// `d` as whole seconds (`30 s`) or, below a second or when not whole, milliseconds.
fn seconds_or_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 && !d.is_zero() {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Serving threads: one per core the process may use.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A serving thread, as the acceptor sees it.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
    /// Resolves when the thread has drained its connections and executions.
    drained: tokio::sync::oneshot::Receiver<()>,
}

impl Worker {
    fn start(
        index: usize,
        gateway: Arc<Gateway>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Worker> {
        let (connections, incoming) = tokio::sync::mpsc::unbounded_channel();
        let (drained_tx, drained) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a serving thread's runtime")?;
        // Its own pool: a pooled connection is driven by the runtime that opened it.
        let executor = Arc::new(
            gateway.executor.clone().with_connection_pool(
                gateway
                    .executor
                    .connection_pool()
                    .map(|pool| Arc::new(ConnectionPool::new(pool.limits()))),
            ),
        );
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || {
                runtime.block_on(serve_connections(gateway, executor, incoming, stop));
                let _ = drained_tx.send(());
            })
            .context("cannot start a serving thread")?;
        Ok(Worker {
            connections,
            drained,
        })
    }
}

/// A serving thread's loop: serves the connections it is dealt until the acceptor stops, then
/// finishes them and waits for the executions in flight (streams outlive their request
/// handler, and run on this thread's runtime).
async fn serve_connections(
    gateway: Arc<Gateway>,
    executor: Arc<Executor>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("cannot serve an accepted connection: {e}");
                        continue;
                    }
                };
                connections.spawn(serve_connection(
                    gateway.clone(),
                    executor.clone(),
                    stream,
                    stop.clone(),
                ));
            }
            // Reap finished connection tasks so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
    gateway.in_flight.wait_idle().await;
}

/// One HTTP/1.1 connection, closed gracefully (after the response in flight) on `stop`.
async fn serve_connection(
    gateway: Arc<Gateway>,
    executor: Arc<Executor>,
    stream: tokio::net::TcpStream,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| {
        let gateway = gateway.clone();
        let executor = executor.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(gateway, executor, req).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
