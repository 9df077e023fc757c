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

use super::auth::ClientId;
use local::Local;
use openai_connector::protocol::RateLimit;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

/// A limited token entry: its limits and its counters.
#[derive(Clone)]
pub(crate) struct Entry {
    limits: ClientLimits,
    counted: Arc<Counted>,
}

/// What is counted for one token: here, and under which names in Redis. A reload that keeps
/// the token keeps these ([`Limiter::adopt`]).
struct Counted {
    /// The token's [`ClientId`] in hex: the same for the same token on every replica.
    key: String,
    redis_keys: redis::Keys,
    local: Mutex<local::Counters>,
}

impl Entry {
    /// The entry of the token `id` with `limits`; `None` when `limits` limit nothing.
    pub(crate) fn new(id: ClientId, limits: ClientLimits) -> Option<Entry> {
        if limits.is_empty() {
            return None;
        }
        let key = id.hex();
        Some(Entry {
            limits,
            counted: Arc::new(Counted {
                redis_keys: redis::Keys::of(&key),
                key,
                local: Mutex::default(),
            }),
        })
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
    async fn acquire(&self, entry: &Entry) -> Result<u64, Refused> {
        match self {
            Backend::Local(local) => local.try_acquire(&entry.counted, &entry.limits).map(|()| 0),
            Backend::Redis(redis) => redis.acquire(entry).await,
        }
    }

    /// The execution holding `lease` ended, having used `tokens`.
    fn finish(&self, counted: &Arc<Counted>, lease: u64, tokens: u64) {
        match self {
            Backend::Local(local) => {
                local.release(counted);
                if tokens > 0 {
                    local.add_tokens(counted, tokens);
                }
            }
            Backend::Redis(redis) => redis.finish(counted, lease, tokens),
        }
    }
}

/// The client limits of a gateway.
pub(crate) struct Limiter {
    backend: Backend,
    /// Requests refused, by limit (in [`RateLimit::ALL`]'s order).
    refused: [AtomicU64; 3],
    /// The counters of the tokens of the configurations in use, by key.
    known: Mutex<HashMap<String, Weak<Counted>>>,
}

impl Limiter {
    /// Counters in `state`. Redis being unreachable does not stop the start: the limits are
    /// counted here until it answers.
    pub(crate) async fn new(state: State) -> anyhow::Result<Limiter> {
        let local = Arc::new(Local::new());
        let backend = match state {
            State::Local => Backend::Local(local),
            State::Redis { url, target } => {
                Backend::Redis(Arc::new(redis::Redis::start(&url, target, local).await?))
            }
        };
        Ok(Limiter {
            backend,
            refused: Default::default(),
            known: Mutex::default(),
        })
    }

    /// Gives `entry` the counters of the same token if a configuration in use has them (a
    /// reload keeps a kept token's counts, and the limits of its requests in flight), else
    /// makes its own the ones known for the token.
    pub(crate) fn adopt(&self, entry: &mut Entry) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, counted| counted.strong_count() > 0);
        match known.get(&entry.counted.key).and_then(Weak::upgrade) {
            Some(counted) => entry.counted = counted,
            None => {
                known.insert(entry.counted.key.clone(), Arc::downgrade(&entry.counted));
            }
        }
    }

    /// Checks and counts a request against its token's limits (`None`: it has none).
    pub(crate) async fn acquire(&self, entry: Option<&Entry>) -> Result<Permit, Refused> {
        let Some(entry) = entry else {
            return Ok(Permit(None));
        };
        match self.backend.acquire(entry).await {
            Ok(lease) => Ok(Permit(Some(Held {
                backend: self.backend.clone(),
                counted: entry.counted.clone(),
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
    counted: Arc<Counted>,
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
            held.backend.finish(&held.counted, held.lease, tokens);
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
        let a = Entry::new(ClientId::for_test(0xfeed), limits).unwrap();
        assert_eq!(a.counted.key, "000000000000feed");
        assert!(a.counted.redis_keys.requests.contains("{000000000000feed}"));
        assert!(!format!("{a:?}").contains("feed"));
        assert!(Entry::new(ClientId::for_test(1), ClientLimits::default()).is_none());
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
        let limits = ClientLimits {
            requests_per_minute: Some(3),
            concurrent_requests: Some(2),
            tokens_per_minute: Some(10),
        };
        let mut entry = Entry::new(ClientId::for_test(7), limits).unwrap();
        let limiter = Limiter::new(State::Local).await.unwrap();
        limiter.adopt(&mut entry);
        let entry = Some(&entry);
        // Unlimited callers take nothing.
        assert!(limiter.acquire(None).await.unwrap().0.is_none());
        let a = limiter.acquire(entry).await.unwrap();
        let b = limiter.acquire(entry).await.unwrap();
        let refused = limiter.acquire(entry).await.err().unwrap();
        assert_eq!(refused.limit, RateLimit::ConcurrentRequests);
        assert_eq!(refused.retry_after_secs, 1);
        a.add_tokens(12);
        drop(a);
        // Room for one more request in flight and one more request this minute, but the
        // tokens are used up.
        let refused = limiter.acquire(entry).await.err().unwrap();
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

    #[tokio::test]
    async fn a_reload_that_keeps_a_token_keeps_its_counts() {
        let limits = ClientLimits {
            requests_per_minute: Some(2),
            concurrent_requests: Some(1),
            ..ClientLimits::default()
        };
        let limiter = Limiter::new(State::Local).await.unwrap();
        let mut before = Entry::new(ClientId::for_test(7), limits).unwrap();
        limiter.adopt(&mut before);
        let in_flight = limiter.acquire(Some(&before)).await.unwrap();
        // The same token read again (a reload), with a higher concurrency limit.
        let mut after = Entry::new(
            ClientId::for_test(7),
            ClientLimits {
                concurrent_requests: Some(2),
                ..limits
            },
        )
        .unwrap();
        limiter.adopt(&mut after);
        let second = limiter.acquire(Some(&after)).await.unwrap();
        // Two requests this minute, from either configuration: the window is full.
        let refused = limiter.acquire(Some(&after)).await.err().unwrap();
        assert_eq!(refused.limit, RateLimit::RequestsPerMinute);
        drop((in_flight, second));
        // Another token starts from zero.
        let mut other = Entry::new(ClientId::for_test(8), limits).unwrap();
        limiter.adopt(&mut other);
        assert!(limiter.acquire(Some(&other)).await.is_ok());
    }
}
