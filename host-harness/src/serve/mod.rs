//! `openai-connector serve`: the gateway (cli.md "serve").
//!
//! One engine and pre-linked component serve every request. Connections are served by one
//! thread per core, each with a single-threaded runtime and its own pool of upstream
//! connections (`run`). Every execution runs in its own `Store` with the sandbox limits of
//! the settings (`guestMemoryLimit`, `guestTimeLimit`). A trap in one execution answers that
//! request with a 500 JSON error; the gateway keeps serving.
//!
//! State shared by every request: `gateway`; the connectors, routes and tokens in force:
//! `config`, read again on SIGHUP (a set that does not validate is refused whole, requests in
//! flight finish on the configuration they started with). Routes (`routes`): Kibana-compatible
//! connector routes and `_execute`, the OpenAI-compatible `/connectors/{id}/v1/...` and
//! `/routes/{name}/v1/...` (chat completions, Responses, embeddings, models), `/metrics`
//! (`metrics`), `/dashboard` (`dashboard`) and `/healthz`. Tokens: `auth`.
//!
//! Limits (`connection`, `admission`): every connection has a deadline unless it is serving a
//! request, open connections are capped, and executions are admitted by fair shares within a
//! queue timeout. Client limits (`limits`), per client token and counted in this process or in
//! Redis (`--state`), are checked before admission.
//!
//! Shutdown: on SIGTERM or SIGINT admission closes first (requests waiting for a slot, and any
//! later request, are answered `503`: no upstream request starts after the signal), then the
//! listener closes, idle connections close, and executions in flight (streams included) get the
//! settings' `shutdownGrace` (default 30 s) to finish; what is still running after it is
//! cancelled (C68), each with its event-log line and, for a stream, its error event; then the
//! usage sinks (`sinks`) ship what they hold until the grace period ends (at least 2 s more),
//! and the process exits.

mod admission;
mod auth;
mod catalog;
mod config;
mod connection;
mod dashboard;
mod gateway;
mod limits;
mod metrics;
mod route_table;
mod routes;
mod sinks;

pub use gateway::ServeOptions;

use crate::executor::Executor;
use crate::pool::ConnectionPool;
use anyhow::{Context, Result};
use connection::{Registered, TrackedIo};
use gateway::Gateway;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

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
    // Listening before the ready line: from then on a SIGHUP reloads, it never kills.
    let reloads = reload_on_hangup(gateway.clone(), options)?;
    on_ready(addr);
    let result = run(gateway, listener, shutdown_signal()).await;
    reloads.abort();
    result
}

/// Reloads the configuration on every SIGHUP (cli.md "Reload"), one reload at a time; says on
/// stderr what is served now, or why the new set was refused (the old one then stays).
#[cfg(unix)]
fn reload_on_hangup(
    gateway: Arc<Gateway>,
    options: ServeOptions,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match gateway.reload(&options).await {
                Ok(served) => eprintln!("reloaded: {served}"),
                Err(e) => {
                    eprintln!("reload refused, the configuration in force stays: {e:#}")
                }
            }
        }
    }))
}

/// Without SIGHUP there is nothing to reload on.
#[cfg(not(unix))]
fn reload_on_hangup(
    _gateway: Arc<Gateway>,
    _options: ServeOptions,
) -> Result<tokio::task::JoinHandle<()>> {
    Ok(tokio::spawn(async {}))
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
async fn run(
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
    let mut accept_errors = AcceptErrors::default();
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
                        // Out of file descriptors and the like: back off, keep serving.
                        let pause = accept_errors.failed(&e);
                        tokio::select! {
                            _ = &mut shutdown => break,
                            _ = tokio::time::sleep(pause) => continue,
                        }
                    }
                };
                accept_errors.succeeded();
                let Some(registered) = gateway.connections.register() else {
                    // Every connection is serving a request: this one is closed unserved.
                    gateway.metrics.connection_refused();
                    continue;
                };
                // A worker only goes away if its thread died; the next one takes the connection.
                let mut dealt = (stream, registered);
                let mut sent = false;
                for _ in 0..workers.len() {
                    let worker = &workers[next % workers.len()];
                    next += 1;
                    match worker.connections.send(dealt) {
                        Ok(()) => {
                            sent = true;
                            break;
                        }
                        Err(returned) => dealt = returned.0,
                    }
                }
                if !sent {
                    anyhow::bail!("every serving thread has stopped");
                }
            }
        }
    }
    // Nothing new is admitted from now on (see the module docs).
    gateway.admission.close();
    let flush_by = tokio::time::Instant::now() + gateway.executor.settings().serve.shutdown_grace;
    drop(listener);
    let running = gateway.in_flight.count();
    let grace = gateway.executor.settings().serve.shutdown_grace;
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
    // The usage sinks get what the grace period left (and a last try of at least 2 s).
    let flush_by = flush_by.max(tokio::time::Instant::now() + SINK_LAST_TRY);
    gateway.sinks.flush(flush_by).await;
    Ok(())
}

/// The least time the usage sinks get to flush at shutdown, even past the grace period.
const SINK_LAST_TRY: Duration = Duration::from_secs(2);

/// Failed accepts: how long to pause before the next one (doubling from 10 ms to 1 s while
/// they keep failing), logged at most once a second with the count.
#[derive(Default)]
struct AcceptErrors {
    consecutive: u32,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.consecutive = self.consecutive.saturating_add(1);
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                "accept failed ({} time(s) since the last report): {e}",
                self.unlogged
            );
            self.unlogged = 0;
            self.last_logged = Some(Instant::now());
        }
        let exponent = self.consecutive.saturating_sub(1).min(7);
        Duration::from_millis(10 << exponent).min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.consecutive = 0;
    }
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
    connections: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, Registered)>,
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
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, Registered)>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            stream = incoming.recv() => {
                let Some((stream, registered)) = stream else { break };
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
                    registered,
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

/// One HTTP/1.1 connection, closed gracefully (after the response in flight) on `stop`, and
/// at once when its deadline passes or it is evicted (`connection`).
async fn serve_connection(
    gateway: Arc<Gateway>,
    executor: Arc<Executor>,
    stream: tokio::net::TcpStream,
    registered: Registered,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tracker = registered.tracker.clone();
    let deadlines = gateway.deadlines;
    let metrics_gateway = gateway.clone();
    let service_tracker = tracker.clone();
    let service = hyper::service::service_fn(move |req| {
        let gateway = gateway.clone();
        let executor = executor.clone();
        // Busy until the response body has been written.
        let busy = service_tracker.request_started();
        async move {
            let response = routes::handle(gateway, executor, req).await;
            Ok::<_, std::convert::Infallible>(routes::keep_until_sent(response, busy))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(
        TokioIo::new(TrackedIo::new(stream, tracker.clone())),
        service,
    );
    tokio::pin!(conn);
    let expired = tracker.expired(deadlines);
    tokio::pin!(expired);
    let stopping = async {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        closed = &mut expired => {
            // Dropping the connection closes the socket.
            metrics_gateway.metrics.connection_closed(closed);
            return;
        }
        _ = stopping => conn.as_mut().graceful_shutdown(),
    }
    // Shutting down: the response in flight finishes, an idle connection closes at once, and
    // a half-sent request head still has its deadline.
    tokio::select! {
        _ = conn.as_mut() => {}
        closed = expired => metrics_gateway.metrics.connection_closed(closed),
    }
}
