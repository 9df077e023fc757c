//! Client limits (cli.md "Client limits", "Shared state"): per token entry of
//! `--client-tokens`, `requestsPerMinute`, `tokensPerMinute` and `concurrentRequests`.
//!
//! A request of a limited token takes a [`Permit`] before it waits for admission (so a request
//! over a limit never holds a queue place, let alone reaches the upstream); a refusal is the
//! `429` of `protocol::rate_limited`, with `Retry-After`. The permit holds the request's
//! concurrency until the execution ends (a stream's too: the permit goes with it), and adds the
//! execution's total tokens (reported or estimated) to the token's tokens per minute once it is
//! recorded (when the permit is dropped, after the request's last execution). A request to a
//! route counts once, whatever number of connectors it tries.
//!
//! **Windows.** A per-minute limit counts in one-second buckets, and a request checks the sum
//! of the current second's bucket and the 60 before it (`window`). Counting 61 buckets rather
//! than 60 means a use leaves the count between 60 and 61 s after it happened, never before a
//! full minute: no 60-second span ever holds more than the limit. `Retry-After` is the time
//! until enough of the oldest buckets have left for one more request (rounded up to whole
//! seconds). `tokensPerMinute` is checked before a request starts: a token whose sum has reached
//! its limit is refused until enough has left the window; the request that crosses the limit
//! is not cut short (its size is not known in advance).
//!
//! **Backends** ([`Backend`]): `local` counts in this process (the default, one replica);
//! `redis` (`--state redis://HOST:PORT[/DB]`) counts in Redis, so that every replica enforces
//! the same limit. In Redis each token entry has three keys under the hash tag of its key
//! (`openai-connector:limits:{KEY}:requests|tokens|in-flight`, `KEY` a digest of the token, never
//! the token): two hashes of second → count (the buckets, as above, by Redis's clock so that
//! replicas agree) and a sorted set of leases, one per execution in flight, scored by when the
//! lease expires. One Lua script (`acquire.lua`) checks every limit of the entry and, when all
//! have room, counts the request and adds its lease, atomically. A replica renews its leases
//! every 10 s for 30 s, so a replica that dies without releasing them stops holding
//! concurrency within 30 s. Releases and token counts are written after the execution (by a
//! background task, in batches: `finish.lua`), off the request path. The one Redis call on the
//! request path is bounded by 100 ms.
//!
//! **Redis unreachable.** A failed or late call sends that request, and every later one, to the
//! local counters (which count this process's own requests all along, so nothing starts from
//! zero): each replica then enforces the full limit on its own, so N replicas may admit up to N
//! times the limit while Redis is away. A warning is logged at most once a minute. A background
//! task tries to reconnect every second; once connected, the limits are counted in Redis
//! again, and the leases of executions in flight are written back at once. Counts of the
//! outage itself are not carried over into Redis.

mod local;
mod redis;
mod window;

use super::auth::Caller;
use local::Local;
use openai_connector::protocol::RateLimit;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The limits of one token entry (`limits` in `--client-tokens`); `None` is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientLimits {
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) tokens_per_minute: Option<u64>,
    pub(crate) concurrent_requests: Option<u64>,
}

impl ClientLimits {
    /// Parses an entry's `limits` object; `at` names it in messages (`tokens.0.limits`).
    pub(crate) fn parse(value: &Value, at: &str) -> Result<ClientLimits, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "[{at}]: expected an object with requestsPerMinute, tokensPerMinute or concurrentRequests"
            ));
        };
        let mut limits = ClientLimits::default();
        for (key, value) in map {
            let Some(limit) = RateLimit::ALL.into_iter().find(|l| l.key() == key) else {
                return Err(format!(
                    "[{at}]: unknown key \"{key}\" (expected requestsPerMinute, tokensPerMinute or concurrentRequests)"
                ));
            };
            let n = value
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("[{at}.{key}]: expected a whole number of at least 1"))?;
            *limits.slot(limit) = Some(n);
        }
        Ok(limits)
    }

    fn slot(&mut self, limit: RateLimit) -> &mut Option<u64> {
        match limit {
            RateLimit::RequestsPerMinute => &mut self.requests_per_minute,
            RateLimit::TokensPerMinute => &mut self.tokens_per_minute,
            RateLimit::ConcurrentRequests => &mut self.concurrent_requests,
        }
    }

    fn is_empty(&self) -> bool {
        *self == ClientLimits::default()
    }
}

/// A limited token entry: its limits and the key its counters go by.
#[derive(Clone)]
pub(crate) struct Entry {
    /// 16 hex digits of a SHA-256 of the token (domain-separated from the auth digest): the
    /// same for the same token on every replica, whatever its place in the file.
    key: String,
    limits: ClientLimits,
}

impl Entry {
    /// The entry of `token` with `limits`; `None` when `limits` limit nothing.
    pub(crate) fn new(token: &str, limits: ClientLimits) -> Option<Entry> {
        if limits.is_empty() {
            return None;
        }
        let digest = Sha256::new()
            .chain_update(b"openai-connector client limits\0")
            .chain_update(token.as_bytes())
            .finalize();
        let key = digest[..8].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        Some(Entry { key, limits })
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &"[REDACTED]")
            .field("limits", &self.limits)
            .finish()
    }
}

/// A request over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) limit: RateLimit,
    /// `Retry-After`, in whole seconds (at least 1).
    pub(crate) retry_after_secs: u64,
}

/// Where the limits are counted (`--state`).
pub(crate) enum State {
    /// In this process.
    Local,
    /// In Redis.
    Redis {
        /// The URL as given (it may carry a password: never shown).
        url: String,
        /// `HOST:PORT/DB`, for messages.
        target: String,
    },
}

impl State {
    /// Parses `--state`; messages never repeat the URL (it may carry a password).
    pub(crate) fn parse(text: Option<&str>) -> Result<State, String> {
        let Some(text) = text else {
            return Ok(State::Local);
        };
        let expected = "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB], or no --state to count client limits in this process";
        let url = url::Url::parse(text).map_err(|e| format!("--state: {e}; {expected}"))?;
        if url.scheme() != "redis" {
            return Err(format!(
                "--state: unsupported scheme \"{}\"; {expected}",
                url.scheme()
            ));
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!("--state: no host; {expected}"));
        };
        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse::<u32>()
                .map_err(|_| format!("--state: the database must be a number; {expected}"))?,
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "--state: no query or fragment is accepted; {expected}"
            ));
        }
        Ok(State::Redis {
            url: text.to_owned(),
            target: format!("{host}:{}/{db}", url.port().unwrap_or(6379)),
        })
    }

    /// For `Debug` output: the URL without its credentials.
    pub(crate) fn redacted(text: &str) -> String {
        match State::parse(Some(text)) {
            Ok(State::Redis { target, .. }) => format!("redis://{target}"),
            _ => "[INVALID]".to_owned(),
        }
    }
}

/// Where the counters are.
#[derive(Clone)]
enum Backend {
    Local(Arc<Local>),
    Redis(Arc<redis::Redis>),
}

impl Backend {
    async fn acquire(&self, index: usize, entry: &Entry) -> Result<u64, Refused> {
        match self {
            Backend::Local(local) => local.try_acquire(index, &entry.limits).map(|()| 0),
            Backend::Redis(redis) => redis.acquire(index, entry).await,
        }
    }

    /// The execution holding `lease` ended, having used `tokens`.
    fn finish(&self, index: usize, lease: u64, tokens: u64) {
        match self {
            Backend::Local(local) => {
                local.release(index);
                if tokens > 0 {
                    local.add_tokens(index, tokens);
                }
            }
            Backend::Redis(redis) => redis.finish(index, lease, tokens),
        }
    }
}

/// The client limits of a gateway.
pub(crate) struct Limiter {
    /// By client index (`Caller::Client`); `None` for an entry without limits.
    entries: Vec<Option<Entry>>,
    backend: Backend,
    /// Requests refused, by limit (in [`RateLimit::ALL`]'s order).
    refused: [AtomicU64; 3],
}

impl Limiter {
    /// Counters for `entries` (by client index) in `state`. Redis being unreachable does not
    /// stop the start: the limits are counted here until it answers.
    pub(crate) async fn new(state: State, entries: Vec<Option<Entry>>) -> anyhow::Result<Limiter> {
        let local = Arc::new(Local::new(&entries));
        let backend = match state {
            State::Local => Backend::Local(local),
            State::Redis { url, target } => Backend::Redis(Arc::new(
                redis::Redis::start(&url, target, &entries, local).await?,
            )),
        };
        Ok(Limiter {
            entries,
            backend,
            refused: Default::default(),
        })
    }

    /// Checks and counts a request of `caller` against its token's limits.
    pub(crate) async fn acquire(&self, caller: Caller) -> Result<Permit, Refused> {
        let Caller::Client(index) = caller else {
            return Ok(Permit(None));
        };
        let Some(entry) = self.entries.get(index).and_then(Option::as_ref) else {
            return Ok(Permit(None));
        };
        match self.backend.acquire(index, entry).await {
            Ok(lease) => Ok(Permit(Some(Held {
                backend: self.backend.clone(),
                index,
                lease,
                counts_tokens: entry.limits.tokens_per_minute.is_some(),
                tokens: AtomicU64::new(0),
            }))),
            Err(refused) => {
                let i = RateLimit::ALL
                    .iter()
                    .position(|l| *l == refused.limit)
                    .unwrap_or(0);
                self.refused[i].fetch_add(1, Ordering::Relaxed);
                Err(refused)
            }
        }
    }

    /// The limiter's series for `/metrics`.
    pub(crate) fn render_metrics(&self) -> String {
        let mut out = String::from(
            "# HELP openai_connector_rate_limited_total Requests answered 429 for a client limit, by limit.\n\
             # TYPE openai_connector_rate_limited_total counter\n",
        );
        for (limit, n) in RateLimit::ALL.iter().zip(&self.refused) {
            let _ = writeln!(
                out,
                "openai_connector_rate_limited_total{{limit=\"{}\"}} {}",
                limit.code(),
                n.load(Ordering::Relaxed)
            );
        }
        if let Backend::Redis(redis) = &self.backend {
            let _ = write!(
                out,
                "# HELP openai_connector_shared_state_up 1 while client limits are counted in the shared state (--state), 0 while it is unreachable and they are counted in this process.\n\
                 # TYPE openai_connector_shared_state_up gauge\n\
                 openai_connector_shared_state_up {}\n",
                u8::from(redis.is_up())
            );
        }
        out
    }
}

/// What a request holds of its token's limits until its execution ends.
pub(crate) struct Permit(Option<Held>);

struct Held {
    backend: Backend,
    index: usize,
    lease: u64,
    counts_tokens: bool,
    /// The tokens of the request's executions so far.
    tokens: AtomicU64,
}

impl Permit {
    /// Adds a finished execution's total tokens; they count against the token's tokens per
    /// minute once the permit is dropped (after the last execution of the request has been
    /// recorded), in one write with the release of its concurrency.
    pub(crate) fn add_tokens(&self, tokens: u64) {
        if let Some(held) = &self.0
            && held.counts_tokens
        {
            held.tokens.fetch_add(tokens, Ordering::Relaxed);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(held) = &self.0 {
            let tokens = held.tokens.load(Ordering::Relaxed);
            held.backend.finish(held.index, held.lease, tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_parse_and_name_the_field() {
        let l = ClientLimits::parse(
            &json!({"requestsPerMinute": 60, "tokensPerMinute": 1000, "concurrentRequests": 2}),
            "tokens.0.limits",
        )
        .unwrap();
        assert_eq!(
            l,
            ClientLimits {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(1000),
                concurrent_requests: Some(2)
            }
        );
        let cases = [
            (json!([]), "[tokens.0.limits]: expected an object"),
            (
                json!({"requestsPerHour": 1}),
                "[tokens.0.limits]: unknown key \"requestsPerHour\"",
            ),
            (
                json!({"requestsPerMinute": 0}),
                "[tokens.0.limits.requestsPerMinute]: expected a whole number of at least 1",
            ),
            (
                json!({"tokensPerMinute": 1.5}),
                "[tokens.0.limits.tokensPerMinute]: expected a whole number",
            ),
            (
                json!({"concurrentRequests": "2"}),
                "[tokens.0.limits.concurrentRequests]: expected a whole number",
            ),
        ];
        for (value, expected) in cases {
            let e = ClientLimits::parse(&value, "tokens.0.limits").unwrap_err();
            assert!(e.contains(expected), "{e} does not contain {expected}");
        }
    }

    #[test]
    fn entry_keys_are_stable_digests_never_the_token() {
        let limits = ClientLimits {
            requests_per_minute: Some(1),
            ..ClientLimits::default()
        };
        let a = Entry::new("client-secret-token", limits).unwrap();
        let b = Entry::new("client-secret-token", limits).unwrap();
        let c = Entry::new("another-token", limits).unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_eq!(a.key.len(), 16);
        assert!(!a.key.contains("secret"));
        assert!(!format!("{a:?}").contains(&a.key));
        assert!(Entry::new("t", ClientLimits::default()).is_none());
    }

    #[test]
    fn state_urls() {
        assert!(matches!(State::parse(None), Ok(State::Local)));
        let Ok(State::Redis { target, .. }) = State::parse(Some("redis://:pw-SECRET@10.0.0.1/3"))
        else {
            panic!("a redis URL")
        };
        assert_eq!(target, "10.0.0.1:6379/3");
        assert_eq!(
            State::redacted("redis://user:pw-SECRET@h:7000"),
            "redis://h:7000/0"
        );
        for (bad, expected) in [
            ("rediss://h:1", "unsupported scheme \"rediss\""),
            ("redis://h:1/x", "the database must be a number"),
            ("redis://h:1/0?x=pw-SECRET", "no query"),
            ("h:1", "unsupported scheme"),
            ("not a url pw-SECRET", "--state: "),
        ] {
            let Err(e) = State::parse(Some(bad)) else {
                panic!("{bad} was accepted")
            };
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains("pw-SECRET"), "{e}");
        }
    }

    #[tokio::test]
    async fn local_limits_refuse_and_release() {
        let entry = Entry::new(
            "t",
            ClientLimits {
                requests_per_minute: Some(3),
                concurrent_requests: Some(2),
                tokens_per_minute: Some(10),
            },
        );
        let limiter = Limiter::new(State::Local, vec![None, entry]).await.unwrap();
        // Unlimited callers take nothing.
        for caller in [Caller::Admin, Caller::Open, Caller::Client(0)] {
            assert!(limiter.acquire(caller).await.unwrap().0.is_none());
        }
        let a = limiter.acquire(Caller::Client(1)).await.unwrap();
        let b = limiter.acquire(Caller::Client(1)).await.unwrap();
        let refused = limiter.acquire(Caller::Client(1)).await.err().unwrap();
        assert_eq!(refused.limit, RateLimit::ConcurrentRequests);
        assert_eq!(refused.retry_after_secs, 1);
        a.add_tokens(12);
        drop(a);
        // Room for one more request in flight and one more request this minute, but the
        // tokens are used up.
        let refused = limiter.acquire(Caller::Client(1)).await.err().unwrap();
        assert_eq!(refused.limit, RateLimit::TokensPerMinute);
        assert!((60..=61).contains(&refused.retry_after_secs), "{refused:?}");
        drop(b);
        let metrics = limiter.render_metrics();
        assert!(
            metrics
                .contains("openai_connector_rate_limited_total{limit=\"concurrent_requests\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("openai_connector_rate_limited_total{limit=\"tokens_per_minute\"} 1"),
            "{metrics}"
        );
        assert!(!metrics.contains("shared_state_up"), "{metrics}");
    }
}
