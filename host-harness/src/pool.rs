//! Keep-alive connections shared by the executions of one process.
//!
//! A connection is keyed by everything that decides what it is: scheme, host, port, the TLS
//! profile it was made with (trust roots, verification mode, client identity) and the proxy it
//! goes through. A connection returns to the pool only after its response body was read to the
//! end; one abandoned mid-body is closed. The pool is bounded (idle connections per key and in
//! total) and idle connections expire. The rustls configurations live here too, so that new
//! connections of later executions share TLS session resumption.

use crate::proxy::ProxyEndpoint;
use crate::tls::TlsProfile;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::WasiBody;

/// How many connections are kept and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Idle connections kept per key.
    pub max_idle_per_key: usize,
    /// Idle connections kept in total.
    pub max_idle_total: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_idle_per_key: 8,
            max_idle_total: 64,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// What makes two connections interchangeable.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// `https` target.
    pub(crate) https: bool,
    /// Host, lower case (URL form: IPv6 in brackets).
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// The TLS profile of an https target.
    pub(crate) tls: Option<TlsProfile>,
    /// The proxy the connection goes through.
    pub(crate) proxy: Option<Arc<ProxyEndpoint>>,
}

impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The TLS profile's Debug hides the key; the proxy's hides its credentials.
        f.debug_struct("PoolKey")
            .field("https", &self.https)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .finish()
    }
}

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// Counters of what the pool did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections opened (TCP, and TLS for https).
    pub opened: u64,
    /// Requests sent on a connection taken from the pool.
    pub reused: u64,
}

/// Most rustls configurations a pool keeps (one per TLS profile seen).
const MAX_TLS_CONFIGS: usize = 256;

/// Idle keep-alive connections and rustls configurations, shared across executions.
pub struct ConnectionPool {
    limits: PoolLimits,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    configs: Mutex<HashMap<TlsProfile, Arc<rustls::ClientConfig>>>,
    opened: AtomicU64,
    reused: AtomicU64,
}

impl std::fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("limits", &self.limits)
            .field("idle", &self.idle_count())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool::new(PoolLimits::default())
    }
}

impl ConnectionPool {
    /// An empty pool with these limits.
    pub fn new(limits: PoolLimits) -> Self {
        ConnectionPool {
            limits,
            idle: Mutex::default(),
            configs: Mutex::default(),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// The limits.
    pub(crate) fn limits(&self) -> PoolLimits {
        self.limits
    }

    /// Counters so far.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            opened: self.opened.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
        }
    }

    /// Idle connections held now.
    pub(crate) fn idle_count(&self) -> usize {
        self.lock_idle().values().map(Vec::len).sum()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rustls configuration for `profile`, built once per pool.
    pub(crate) fn client_config(
        &self,
        profile: &TlsProfile,
    ) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = configs.get(profile) {
            return Ok(config.clone());
        }
        let config = Arc::new(profile.client_config()?);
        if configs.len() >= MAX_TLS_CONFIGS {
            configs.clear();
        }
        configs.insert(profile.clone(), config.clone());
        Ok(config)
    }

    /// Takes the most recently used live connection for `key` and waits until it can take a
    /// request; expired and closed ones are dropped on the way.
    pub(crate) async fn checkout(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        loop {
            let candidate = {
                let mut idle = self.lock_idle();
                let list = idle.get_mut(key)?;
                let now = Instant::now();
                list.retain(|c| {
                    !c.sender.is_closed() && now.duration_since(c.since) < self.limits.idle_timeout
                });
                let candidate = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
                candidate?
            };
            let mut sender = candidate.sender;
            // A connection whose response ended moments ago becomes ready as soon as its task
            // has run; one that does not within a moment is not worth waiting for.
            match tokio::time::timeout(Duration::from_secs(1), sender.ready()).await {
                Ok(Ok(())) => {
                    self.reused.fetch_add(1, Ordering::Relaxed);
                    return Some(sender);
                }
                _ => continue,
            }
        }
    }

    /// Records that a new connection was opened.
    pub(crate) fn note_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns a connection whose last response was read to the end.
    pub(crate) fn checkin(&self, key: PoolKey, sender: SendRequest<WasiBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock_idle();
        let now = Instant::now();
        let timeout = self.limits.idle_timeout;
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < timeout);
            !list.is_empty()
        });
        let total: usize = idle.values().map(Vec::len).sum();
        if total >= self.limits.max_idle_total {
            // Make room by closing the connection idle for longest.
            let oldest = idle
                .iter()
                .flat_map(|(k, list)| list.iter().enumerate().map(move |(i, c)| (c.since, k, i)))
                .min_by_key(|(since, _, _)| *since)
                .map(|(_, k, i)| (k.clone(), i));
            if let Some((k, i)) = oldest
                && let Some(list) = idle.get_mut(&k)
            {
                list.remove(i);
                if list.is_empty() {
                    idle.remove(&k);
                }
            }
        }
        if self.limits.max_idle_per_key == 0 || self.limits.max_idle_total == 0 {
            return;
        }
        let list = idle.entry(key).or_default();
        if list.len() >= self.limits.max_idle_per_key {
            list.remove(0);
        }
        list.push(Idle { sender, since: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client connection over an in-memory pipe whose other end stays open.
    async fn connection() -> (SendRequest<WasiBody>, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1024);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .unwrap();
        tokio::spawn(conn);
        (sender, server)
    }

    fn key(host: &str) -> PoolKey {
        PoolKey {
            https: false,
            host: host.to_owned(),
            port: 80,
            tls: None,
            proxy: None,
        }
    }

    #[tokio::test]
    async fn bounded_per_key_and_in_total() {
        let pool = ConnectionPool::new(PoolLimits {
            max_idle_per_key: 2,
            max_idle_total: 3,
            idle_timeout: Duration::from_secs(90),
        });
        let mut ends = Vec::new();
        for host in ["a", "a", "a", "b", "c"] {
            let (sender, end) = connection().await;
            ends.push(end);
            pool.checkin(key(host), sender);
        }
        assert_eq!(pool.idle_count(), 3);
        // "a" kept two, then lost its oldest to make room for "c".
        assert!(pool.checkout(&key("a")).await.is_some());
        assert!(pool.checkout(&key("a")).await.is_none());
        assert!(pool.checkout(&key("b")).await.is_some());
        assert!(pool.checkout(&key("c")).await.is_some());
        assert_eq!(pool.stats().reused, 3);
    }

    #[tokio::test]
    async fn idle_connections_expire_and_closed_ones_are_skipped() {
        let pool = ConnectionPool::new(PoolLimits {
            idle_timeout: Duration::from_millis(50),
            ..PoolLimits::default()
        });
        let (sender, _end) = connection().await;
        pool.checkin(key("a"), sender);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(pool.checkout(&key("a")).await.is_none());

        let (sender, end) = connection().await;
        pool.checkin(key("a"), sender);
        drop(end);
        // The connection task notices the closed pipe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.checkout(&key("a")).await.is_none());
        assert_eq!(pool.idle_count(), 0);
    }
}
