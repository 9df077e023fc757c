//! The settings keys only `serve` reads (not Kibana settings): connection hygiene, admission and
//! shutdown. Every key has a safe default, so a gateway started without a settings file
//! already closes slow and idle connections, caps its connections, shares its execution slots
//! fairly and answers `503` rather than queue forever (docs/serve.md "Limits").

use crate::sandbox::{DEFAULT_SLOTS, MAX_SLOTS};
use std::time::Duration;

/// `serve`'s own limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServeSettings {
    /// `shutdownGrace`: how long requests in flight may run on after SIGTERM / SIGINT before
    /// they are cancelled (default 30 s).
    pub(crate) shutdown_grace: Duration,
    /// `headerReadTimeout`: a request head (request line and headers) must arrive within this
    /// time of its first byte, and a new connection must send one within this time of being
    /// accepted (default 10 s).
    pub(crate) header_read_timeout: Duration,
    /// `idleTimeout`: a keep-alive connection with no request in progress is closed after this
    /// long (default 60 s).
    pub(crate) idle_timeout: Duration,
    /// `requestBodyTimeout`: the whole request body must arrive within this time of its head
    /// (default 30 s); otherwise `408`.
    pub(crate) request_body_timeout: Duration,
    /// `maxConnections`: open client connections at most. `None`: derived from the process's
    /// file-descriptor limit at start (half of it, less a reserve; see `serve::connection`).
    pub(crate) max_connections: Option<usize>,
    /// `maxExecutions`: executions at once in the process, the sandbox's instance slots
    /// (default 64, at most [`MAX_SLOTS`]); a request beyond them waits for a slot.
    pub(crate) max_executions: u32,
    /// `queueTimeout`: how long a request may wait for an execution slot (its client's, its
    /// connector's and the process's) before it is answered `503` (default 10 s).
    pub(crate) queue_timeout: Duration,
    /// `maxExecutionsPerConnector`: executions of one connector at once. `None`: three
    /// quarters of the slots when more than one connector is served, else all.
    pub(crate) max_executions_per_connector: Option<usize>,
    /// `maxExecutionsPerClient`: executions of one caller (a client token, or the admin
    /// token) at once. `None`: three quarters of the slots when there is more than one caller
    /// to share them with, else all.
    pub(crate) max_executions_per_client: Option<usize>,
    /// `usageSinkBuffer`: usage documents each `--usage-sink` holds while its sink is slow or
    /// down (default 100,000); past it the oldest are dropped and counted (docs/serve.md
    /// "Usage sinks").
    pub(crate) usage_sink_buffer: usize,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_body_timeout: Duration::from_secs(30),
            max_connections: None,
            max_executions: DEFAULT_SLOTS,
            queue_timeout: Duration::from_secs(10),
            max_executions_per_connector: None,
            max_executions_per_client: None,
            usage_sink_buffer: 100_000,
        }
    }
}

impl ServeSettings {
    /// Applies one key; `Ok(false)`: not one of `serve`'s keys. `duration` and `count` parse a
    /// value and name the key in their errors.
    pub(crate) fn apply(
        &mut self,
        key: &str,
        duration: impl Fn() -> Result<Duration, String>,
        count: impl Fn() -> Result<u64, String>,
    ) -> Result<bool, String> {
        let positive = |d: Duration| {
            if d.is_zero() {
                Err(format!("[{key}]: must be more than 0 ms"))
            } else {
                Ok(d)
            }
        };
        let at_least_one = |n: u64| {
            usize::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("[{key}]: expected a whole number of at least 1, got {n}"))
        };
        match key {
            "shutdownGrace" => self.shutdown_grace = duration()?,
            "headerReadTimeout" => self.header_read_timeout = positive(duration()?)?,
            "idleTimeout" => self.idle_timeout = positive(duration()?)?,
            "requestBodyTimeout" => self.request_body_timeout = positive(duration()?)?,
            "queueTimeout" => self.queue_timeout = positive(duration()?)?,
            "maxConnections" => self.max_connections = Some(at_least_one(count()?)?),
            "maxExecutions" => {
                let n = count()?;
                self.max_executions = u32::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_SLOTS).contains(n))
                    .ok_or_else(|| {
                        format!("[{key}]: expected a whole number from 1 to {MAX_SLOTS}, got {n}")
                    })?;
            }
            "maxExecutionsPerConnector" => {
                self.max_executions_per_connector = Some(at_least_one(count()?)?);
            }
            "maxExecutionsPerClient" => {
                self.max_executions_per_client = Some(at_least_one(count()?)?);
            }
            "usageSinkBuffer" => self.usage_sink_buffer = at_least_one(count()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}
