//! Client limits counted in Redis (`--state redis://...`), with the local counters as the
//! fallback while Redis is unreachable (see `serve::limits`).
//!
//! The request path makes one call (`acquire.lua`), bounded by [`CALL_TIMEOUT`], on a
//! multiplexed connection of the serving thread's own (opened on that thread's first limited
//! request, so that its answer is read by the thread that waits for it, without a hop through
//! another thread). Executions that end are written by a background task on a connection of
//! its own, in batches (`finish.lua`: the lease released, the tokens added); the task also
//! renews this replica's leases (`renew.lua`) and, while Redis is unreachable, reconnects.

use super::local::Local;
use super::window::{BUCKETS, whole_seconds};
use super::{Counted, Entry, Refused};
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Script};
use openai_connector::protocol::RateLimit;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The longest a Redis call (or a serving thread's connection) may take on the request path;
/// a later answer counts as Redis being unreachable.
const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the background task's (re)connection may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the background task tries to reconnect while Redis is unreachable.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long a lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(30);
/// How often this replica renews its leases.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// At most one "unreachable" warning per this much time.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Most finished executions written in one call.
const BATCH: usize = 64;

/// The Redis keys of one token entry; the hash tag keeps them in one slot.
pub(super) struct Keys {
    pub(super) requests: String,
    tokens: String,
    in_flight: String,
}

impl Keys {
    /// The keys of the token whose key (a digest, never the token) is `key`.
    pub(super) fn of(key: &str) -> Keys {
        let prefix = format!("openai-connector:limits:{{{key}}}");
        Keys {
            requests: format!("{prefix}:requests"),
            tokens: format!("{prefix}:tokens"),
            in_flight: format!("{prefix}:in-flight"),
        }
    }
}

/// An execution that ended, for the background task to write.
struct Finished {
    counted: Arc<Counted>,
    /// Its lease, when it holds one in Redis.
    lease: Option<u64>,
    tokens: u64,
}

/// The Redis backend.
pub(super) struct Redis {
    shared: Arc<Shared>,
    /// To the background task, which ends when this is dropped.
    finished: mpsc::UnboundedSender<Finished>,
}

struct Shared {
    client: Client,
    /// `HOST:PORT/DB`.
    target: String,
    /// Whether Redis answers: while it does not, requests go to `local` without trying it.
    up: AtomicBool,
    /// The request path's connections, one per serving thread.
    connections: Mutex<HashMap<ThreadId, MultiplexedConnection>>,
    /// The background task's connection.
    background: Mutex<Option<MultiplexedConnection>>,
    local: Arc<Local>,
    /// Leases are `{replica}:{sequence}`.
    replica: String,
    next_lease: AtomicU64,
    /// The leases of executions in flight that count against a concurrency limit, with their
    /// token's counters: renewed while they run.
    held: Mutex<HashMap<u64, Arc<Counted>>>,
    last_warning: Mutex<Option<Instant>>,
    acquire: Script,
    finish: Script,
    renew: Script,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Redis {
    /// Connects to `url` (an unreachable Redis is tried again in the background) and starts the
    /// background task on the current runtime.
    pub(super) async fn start(
        url: &str,
        target: String,
        local: Arc<Local>,
    ) -> anyhow::Result<Redis> {
        // The message never shows the URL: it may carry a password.
        let client = Client::open(url)
            .map_err(|e| anyhow::anyhow!("--state: not a Redis URL ({:?})", e.kind()))?;
        let shared = Arc::new(Shared {
            client,
            target,
            up: AtomicBool::new(false),
            connections: Mutex::default(),
            background: Mutex::new(None),
            local,
            replica: format!("{:016x}", fastrand::u64(..)),
            next_lease: AtomicU64::new(0),
            held: Mutex::default(),
            last_warning: Mutex::new(None),
            acquire: Script::new(include_str!("acquire.lua")),
            finish: Script::new(include_str!("finish.lua")),
            renew: Script::new(include_str!("renew.lua")),
        });
        if shared.reconnect().await {
            tracing::info!(
                "--state: client limits are counted in Redis at {}",
                shared.target
            );
        }
        let (finished, queue) = mpsc::unbounded_channel();
        tokio::spawn(background(shared.clone(), queue));
        Ok(Redis { shared, finished })
    }

    /// Whether limits are counted in Redis now.
    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Checks and counts a request of a token: in Redis, or locally while Redis is
    /// unreachable. Returns the request's lease.
    pub(super) async fn acquire(&self, entry: &Entry) -> Result<u64, Refused> {
        let shared = &self.shared;
        let counted = &entry.counted;
        let lease = shared.next_lease.fetch_add(1, Ordering::Relaxed);
        let concurrent = entry.limits.concurrent_requests;
        if shared.up.load(Ordering::Relaxed) {
            match shared.call_acquire(&counted.redis_keys, entry, lease).await {
                Ok(Ok(())) => {
                    shared.local.count_admitted(counted);
                    if concurrent.is_some() {
                        lock(&shared.held).insert(lease, counted.clone());
                    }
                    return Ok(lease);
                }
                Ok(Err(refused)) => return Err(refused),
                Err(why) => shared.unreachable(&why),
            }
        }
        shared.local.try_acquire(counted, &entry.limits)?;
        if concurrent.is_some() {
            lock(&shared.held).insert(lease, counted.clone());
        }
        Ok(lease)
    }

    /// The execution holding `lease` ended, having used `tokens`.
    pub(super) fn finish(&self, counted: &Arc<Counted>, lease: u64, tokens: u64) {
        let shared = &self.shared;
        shared.local.release(counted);
        if tokens > 0 {
            shared.local.add_tokens(counted, tokens);
        }
        let lease = lock(&shared.held).remove(&lease).map(|_| lease);
        if lease.is_some() || tokens > 0 {
            let _ = self.finished.send(Finished {
                counted: counted.clone(),
                lease,
                tokens,
            });
        }
    }
}

/// Writes the executions that ended, renews the leases, and reconnects while Redis is
/// unreachable.
async fn background(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Finished>) {
    let mut tick = tokio::time::interval(RECONNECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            first = queue.recv() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match queue.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                shared.write_finished(batch).await;
            }
            _ = tick.tick() => {
                if !shared.up.load(Ordering::Relaxed) {
                    if shared.reconnect().await {
                        tracing::warn!(
                            "--state: Redis at {} answers again: client limits are shared again",
                            shared.target
                        );
                        // Executions in flight count in Redis again at once.
                        shared.renew().await;
                        renewed = Instant::now();
                    }
                } else if renewed.elapsed() >= RENEW_EVERY {
                    shared.renew().await;
                    renewed = Instant::now();
                }
            }
        }
    }
}

fn connection_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
}

impl Shared {
    fn lease_name(&self, lease: u64) -> String {
        format!("{}:{lease}", self.replica)
    }

    /// The acquire script's answer, or why Redis did not give one in time.
    async fn call_acquire(
        &self,
        keys: &Keys,
        entry: &Entry,
        lease: u64,
    ) -> Result<Result<(), Refused>, String> {
        let limits = &entry.limits;
        let mut call = self.acquire.prepare_invoke();
        call.key(&keys.requests)
            .key(&keys.tokens)
            .key(&keys.in_flight)
            .arg(limits.requests_per_minute.unwrap_or(0))
            .arg(limits.tokens_per_minute.unwrap_or(0))
            .arg(limits.concurrent_requests.unwrap_or(0))
            .arg(self.lease_name(lease))
            .arg(millis(LEASE));
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            let mut connection = self.thread_connection().await?;
            call.invoke_async::<Vec<u64>>(&mut connection).await
        })
        .await
        .map_err(|_| format!("no answer within {} ms", CALL_TIMEOUT.as_millis()))?
        .map_err(|e| e.to_string())?;
        match answer.as_slice() {
            [1] => Ok(Ok(())),
            [0, limit @ 1..=3, wait_ms] => Ok(Err(Refused {
                limit: RateLimit::ALL[(*limit - 1) as usize],
                retry_after_secs: whole_seconds(*wait_ms),
            })),
            _ => Err("an unexpected answer to the limits script".to_owned()),
        }
    }

    /// This serving thread's connection, opened on its first use (its reader then runs on
    /// this thread's runtime).
    async fn thread_connection(&self) -> ::redis::RedisResult<MultiplexedConnection> {
        let thread = std::thread::current().id();
        if let Some(connection) = lock(&self.connections).get(&thread) {
            return Ok(connection.clone());
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config(CALL_TIMEOUT))
            .await?;
        lock(&self.connections).insert(thread, connection.clone());
        Ok(connection)
    }

    /// Connects the background task and checks Redis answers; `true` when it does (requests
    /// then count in Redis again).
    async fn reconnect(&self) -> bool {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&connection_config(CONNECT_TIMEOUT))
                .await?;
            ::redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok::<_, ::redis::RedisError>(connection)
        })
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *lock(&self.background) = Some(connection);
                self.up.store(true, Ordering::Relaxed);
                true
            }
            Ok(Err(e)) => {
                self.unreachable(&e.to_string());
                false
            }
            Err(_) => {
                self.unreachable("no connection within a second");
                false
            }
        }
    }

    /// Redis failed a call: every request counts locally until the background task has
    /// reconnected. Warns at most once a minute.
    fn unreachable(&self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        lock(&self.connections).clear();
        *lock(&self.background) = None;
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "--state: Redis at {} is unreachable ({why}): client limits are counted in this process alone, each replica with the full limits, until it answers again",
                self.target
            );
        }
    }

    /// Writes a batch of executions that ended, if Redis is reachable; a batch that fails is
    /// lost to Redis (the local counters have it, and an unreleased lease expires).
    async fn write_finished(&self, batch: Vec<Finished>) {
        let Some(mut connection) = lock(&self.background).clone() else {
            return;
        };
        let mut call = self.finish.prepare_invoke();
        call.arg(BUCKETS);
        for finished in &batch {
            let keys = &finished.counted.redis_keys;
            call.key(&keys.in_flight).key(&keys.tokens);
            match finished.lease {
                Some(lease) => call.arg(self.lease_name(lease)),
                None => call.arg(""),
            };
            call.arg(finished.tokens);
        }
        let result =
            tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<()>(&mut connection)).await;
        self.check(result);
    }

    /// Renews (or writes back) the leases of executions in flight.
    async fn renew(&self) {
        let mut by_entry: HashMap<String, (Arc<Counted>, Vec<u64>)> = HashMap::new();
        for (lease, counted) in lock(&self.held).iter() {
            by_entry
                .entry(counted.key.clone())
                .or_insert_with(|| (counted.clone(), Vec::new()))
                .1
                .push(*lease);
        }
        for (counted, leases) in by_entry.into_values() {
            let keys = &counted.redis_keys;
            let Some(mut connection) = lock(&self.background).clone() else {
                return;
            };
            let mut call = self.renew.prepare_invoke();
            call.key(&keys.in_flight).arg(millis(LEASE));
            for lease in leases {
                call.arg(self.lease_name(lease));
            }
            let result =
                tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<()>(&mut connection)).await;
            self.check(result);
        }
    }

    fn check(&self, result: Result<::redis::RedisResult<()>, tokio::time::error::Elapsed>) {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.unreachable(&e.to_string()),
            Err(_) => {
                self.unreachable(&format!("no answer within {} ms", CALL_TIMEOUT.as_millis()))
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
