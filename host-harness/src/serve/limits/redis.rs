//! Client limits counted in Redis (`--state redis://...`), with the local counters as the
//! fallback while Redis is unreachable (see `serve::limits`).
//!
//! One multiplexed connection carries every call. The request path makes one call
//! (`acquire.lua`), bounded by [`CALL_TIMEOUT`]; releases and token counts go to a background
//! task, which also renews this replica's leases and, while Redis is unreachable, reconnects.

use super::local::Local;
use super::window::{BUCKETS, whole_seconds};
use super::{Entry, Refused};
use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Script};
use openai_connector::protocol::RateLimit;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The longest a Redis call may take on the request path; a later answer counts as Redis
/// being unreachable.
const CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a (re)connection may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the background task tries to reconnect while Redis is unreachable.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// How long a lease lasts unless renewed.
const LEASE: Duration = Duration::from_secs(30);
/// How often this replica renews its leases.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// At most one "unreachable" warning per this much time.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Adds a finished execution's tokens to the bucket of Redis's current second.
const ADD_TOKENS: &str = r"
local now = redis.call('TIME')[1]
redis.call('HINCRBY', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return 1
";

/// Sets the expiry of every lease in ARGV[2..] to ARGV[1] ms from Redis's now (adding the
/// leases that a restarted Redis, or one that was unreachable when they were taken, lacks).
const RENEW: &str = r"
local time = redis.call('TIME')
local expires = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return 1
";

/// The Redis keys of one token entry; the hash tag keeps them in one slot.
struct Keys {
    requests: String,
    tokens: String,
    in_flight: String,
}

impl Keys {
    fn of(entry: &Entry) -> Keys {
        let prefix = format!("openai-connector:limits:{{{}}}", entry.key);
        Keys {
            requests: format!("{prefix}:requests"),
            tokens: format!("{prefix}:tokens"),
            in_flight: format!("{prefix}:in-flight"),
        }
    }
}

/// What the background task writes.
enum Write {
    Tokens { index: usize, tokens: u64 },
    Release { index: usize, lease: u64 },
}

/// The Redis backend.
pub(super) struct Redis {
    shared: Arc<Shared>,
    /// To the background task, which ends when this is dropped.
    writes: mpsc::UnboundedSender<Write>,
}

struct Shared {
    client: Client,
    /// `HOST:PORT/DB`.
    target: String,
    /// `None` while Redis is unreachable: requests then go to `local` without trying it.
    connection: Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    local: Arc<Local>,
    /// By client index, as the limiter's entries.
    keys: Vec<Option<Keys>>,
    /// Leases are `{replica}:{sequence}`.
    replica: String,
    next_lease: AtomicU64,
    /// The leases of executions in flight that count against a concurrency limit, with their
    /// entry's index: renewed while they run.
    held: Mutex<HashMap<u64, usize>>,
    last_warning: Mutex<Option<Instant>>,
    acquire: Script,
    add_tokens: Script,
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
        entries: &[Option<Entry>],
        local: Arc<Local>,
    ) -> anyhow::Result<Redis> {
        // The message never shows the URL: it may carry a password.
        let client = Client::open(url)
            .map_err(|e| anyhow::anyhow!("--state: not a Redis URL ({:?})", e.kind()))?;
        let shared = Arc::new(Shared {
            client,
            target,
            connection: Mutex::new(None),
            up: AtomicBool::new(false),
            local,
            keys: entries.iter().map(|e| e.as_ref().map(Keys::of)).collect(),
            replica: format!("{:016x}", fastrand::u64(..)),
            next_lease: AtomicU64::new(0),
            held: Mutex::default(),
            last_warning: Mutex::new(None),
            acquire: Script::new(include_str!("acquire.lua")),
            add_tokens: Script::new(ADD_TOKENS),
            renew: Script::new(RENEW),
        });
        if shared.reconnect().await {
            tracing::info!(
                "--state: client limits are counted in Redis at {}",
                shared.target
            );
        }
        let (writes, queue) = mpsc::unbounded_channel();
        tokio::spawn(background(shared.clone(), queue));
        Ok(Redis { shared, writes })
    }

    /// Whether limits are counted in Redis now.
    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Checks and counts a request of the entry at `index`: in Redis, or locally while Redis
    /// is unreachable. Returns the request's lease.
    pub(super) async fn acquire(&self, index: usize, entry: &Entry) -> Result<u64, Refused> {
        let shared = &self.shared;
        let lease = shared.next_lease.fetch_add(1, Ordering::Relaxed);
        let concurrent = entry.limits.concurrent_requests;
        if let (Some(mut connection), Some(keys)) = (shared.connection(), shared.keys(index)) {
            let mut call = shared.acquire.prepare_invoke();
            call.key(&keys.requests)
                .key(&keys.tokens)
                .key(&keys.in_flight)
                .arg(entry.limits.requests_per_minute.unwrap_or(0))
                .arg(entry.limits.tokens_per_minute.unwrap_or(0))
                .arg(concurrent.unwrap_or(0))
                .arg(shared.lease_name(lease))
                .arg(millis(LEASE));
            let answer =
                tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<Vec<u64>>(&mut connection))
                    .await;
            match answer {
                Ok(Ok(answer)) => match answer.as_slice() {
                    [1] => {
                        shared.local.count_admitted(index);
                        if concurrent.is_some() {
                            lock(&shared.held).insert(lease, index);
                        }
                        return Ok(lease);
                    }
                    [0, limit @ 1..=3, wait_ms] => {
                        return Err(Refused {
                            limit: RateLimit::ALL[(*limit - 1) as usize],
                            retry_after_secs: whole_seconds(*wait_ms),
                        });
                    }
                    _ => shared.unreachable("an unexpected answer to the limits script"),
                },
                Ok(Err(e)) => shared.unreachable(&e.to_string()),
                Err(_) => {
                    shared.unreachable(&format!("no answer within {} ms", CALL_TIMEOUT.as_millis()))
                }
            }
        }
        shared.local.try_acquire(index, &entry.limits)?;
        if concurrent.is_some() {
            lock(&shared.held).insert(lease, index);
        }
        Ok(lease)
    }

    /// The execution holding `lease` ended.
    pub(super) fn release(&self, index: usize, lease: u64) {
        self.shared.local.release(index);
        if lock(&self.shared.held).remove(&lease).is_some() {
            let _ = self.writes.send(Write::Release { index, lease });
        }
    }

    /// Adds a finished execution's tokens.
    pub(super) fn add_tokens(&self, index: usize, tokens: u64) {
        self.shared.local.add_tokens(index, tokens);
        let _ = self.writes.send(Write::Tokens { index, tokens });
    }
}

/// Applies the writes in order, renews the leases, and reconnects while Redis is unreachable.
async fn background(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Write>) {
    let mut tick = tokio::time::interval(RECONNECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            write = queue.recv() => {
                let Some(write) = write else { break };
                shared.write(write).await;
            }
            _ = tick.tick() => {
                if shared.connection().is_none() {
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

impl Shared {
    fn connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.connection).clone()
    }

    fn keys(&self, index: usize) -> Option<&Keys> {
        self.keys.get(index)?.as_ref()
    }

    fn lease_name(&self, lease: u64) -> String {
        format!("{}:{lease}", self.replica)
    }

    /// Connects and checks Redis answers; `true` when it does (the connection is then used).
    async fn reconnect(&self) -> bool {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let connected = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            let mut connection = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            ::redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok::<_, ::redis::RedisError>(connection)
        })
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *lock(&self.connection) = Some(connection);
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
        *lock(&self.connection) = None;
        self.up.store(false, Ordering::Relaxed);
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                "--state: Redis at {} is unreachable ({why}): client limits are counted in this process alone, each replica with the full limits, until it answers again",
                self.target
            );
        }
    }

    /// One write, if Redis is reachable; a write that fails is lost to Redis (the local
    /// counters have it, and an unreleased lease expires).
    async fn write(&self, write: Write) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let result = match write {
            Write::Tokens { index, tokens } => {
                let Some(keys) = self.keys(index) else { return };
                let mut call = self.add_tokens.prepare_invoke();
                call.key(&keys.tokens).arg(tokens).arg(BUCKETS);
                tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<()>(&mut connection)).await
            }
            Write::Release { index, lease } => {
                let Some(keys) = self.keys(index) else { return };
                let mut zrem = ::redis::cmd("ZREM");
                zrem.arg(&keys.in_flight).arg(self.lease_name(lease));
                tokio::time::timeout(CALL_TIMEOUT, zrem.query_async::<()>(&mut connection)).await
            }
        };
        self.check(result);
    }

    /// Renews (or writes back) the leases of executions in flight.
    async fn renew(&self) {
        let mut by_entry: HashMap<usize, Vec<u64>> = HashMap::new();
        for (lease, index) in lock(&self.held).iter() {
            by_entry.entry(*index).or_default().push(*lease);
        }
        for (index, leases) in by_entry {
            let (Some(keys), Some(mut connection)) = (self.keys(index), self.connection()) else {
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
