//! Client connections: how long each may take, and how many may be open.
//!
//! A connection is always in one of three phases, and only a request in progress is exempt
//! from a deadline (its body has its own, `requestBodyTimeout`, in `routes`; a stream may run
//! as long as its upstream does):
//!
//! | phase | deadline |
//! |---|---|
//! | [`Phase::Waiting`]: no request in progress, nothing of the next one read | `headerReadTimeout` after accept, `idleTimeout` after a response |
//! | [`Phase::Head`]: bytes of a request head have arrived | `headerReadTimeout` after its first byte |
//! | [`Phase::Busy`]: a request is being served | none |
//!
//! A slow-loris client (one that opens connections and sends headers a byte at a time, or
//! nothing) is therefore closed after `headerReadTimeout` at most. Open connections are capped
//! ([`Registry`], `maxConnections`, by default derived from the file-descriptor limit), and at
//! the cap a new connection takes the place of the oldest one that is not serving a request, a
//! connection that has never sent a complete request first: under a flood of slow connections
//! a legitimate client still gets in at once, and the process never runs out of descriptors
//! (an exhausted descriptor table would stop `/healthz` too).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
// Tokio's clock, so that the deadlines follow a paused clock in tests.
use tokio::sync::Notify;
use tokio::time::Instant;

/// Descriptors kept back from the connection cap for everything else the process opens (the
/// event log, the listener, the code cache, stdio).
const RESERVED_DESCRIPTORS: u64 = 64;
/// The derived cap never goes below this, whatever the descriptor limit.
const MIN_DERIVED_CONNECTIONS: usize = 16;

/// The timeouts of [`Phase`]s.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadlines {
    pub(super) header_read: Duration,
    pub(super) idle: Duration,
}

/// What a connection is doing (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// No request in progress, nothing of the next one read, since the instant given.
    Waiting { since: Instant, served_any: bool },
    /// A request head is arriving; its first byte came at the instant given.
    Head { since: Instant },
    /// A request is being served.
    Busy,
}

impl Phase {
    /// When a connection in this phase is closed; `None`: never, for now.
    pub(super) fn deadline(self, d: Deadlines) -> Option<Instant> {
        match self {
            Phase::Waiting {
                since,
                served_any: false,
            } => Some(since + d.header_read),
            Phase::Waiting {
                since,
                served_any: true,
            } => Some(since + d.idle),
            Phase::Head { since } => Some(since + d.header_read),
            Phase::Busy => None,
        }
    }
}

/// Why a connection was closed by the gateway rather than by its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// No complete request head within `headerReadTimeout`.
    HeaderTimeout,
    /// Idle longer than `idleTimeout`.
    IdleTimeout,
    /// Made room for a newer connection at the cap.
    Evicted,
}

/// One connection's state, shared by its I/O, its requests and the [`Registry`].
pub(super) struct Tracker {
    /// Connection start; the instants below are milliseconds after it, plus one (0: unset).
    opened: Instant,
    /// Requests in progress (HTTP/1.1 serves one at a time; pipelining does not change this).
    busy: AtomicUsize,
    /// When the connection last became idle (0: at `opened`).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (0: none yet).
    head_since: AtomicU64,
    /// Whether a request has been served on this connection.
    served_any: AtomicBool,
    /// Woken when the phase changes or the connection is evicted.
    changed: Notify,
    evicted: AtomicBool,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            served_any: AtomicBool::new(false),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn instant(&self, stamp: u64) -> Instant {
        self.opened + Duration::from_millis(stamp.saturating_sub(1))
    }

    /// The current phase.
    pub(super) fn phase(&self) -> Phase {
        if self.busy.load(Ordering::Acquire) > 0 {
            return Phase::Busy;
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => Phase::Waiting {
                since: self.instant(self.idle_since.load(Ordering::Acquire)),
                served_any: self.served_any.load(Ordering::Acquire),
            },
            at => Phase::Head {
                since: self.instant(at),
            },
        }
    }

    /// Bytes arrived: the first ones while waiting start a request head.
    fn on_read(&self) {
        if self.busy.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, self.stamp(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// A request reached the service: the connection is busy until the guard (kept with the
    /// response body) is dropped.
    pub(super) fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.changed.notify_one();
        BusyGuard(self.clone())
    }

    /// Whether the [`Registry`] closed this connection to make room.
    pub(super) fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Resolves when the phase may have changed, or the connection was evicted.
    pub(super) async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Waits for the connection's deadline and says why it passed; never resolves while a
    /// request is in progress. Meant to be raced against serving the connection.
    pub(super) async fn expired(&self, deadlines: Deadlines) -> Closed {
        loop {
            if self.is_evicted() {
                return Closed::Evicted;
            }
            let phase = self.phase();
            let changed = self.changed();
            match phase.deadline(deadlines) {
                None => changed.await,
                Some(deadline) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(deadline) => {
                            // The phase may have moved on just now; the next round decides.
                            if self.phase() == phase {
                                return match phase {
                                    Phase::Waiting { served_any: true, .. } => Closed::IdleTimeout,
                                    _ => Closed::HeaderTimeout,
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Keeps a connection [`Phase::Busy`] while it lives (with the response body, so until the
/// response has been written).
pub(super) struct BusyGuard(Arc<Tracker>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let t = &self.0;
        t.idle_since.store(t.stamp(), Ordering::Release);
        t.served_any.store(true, Ordering::Release);
        t.busy.fetch_sub(1, Ordering::AcqRel);
        t.changed.notify_one();
    }
}

/// A connection's socket, reporting its reads to its [`Tracker`].
pub(super) struct TrackedIo<T> {
    inner: T,
    tracker: Arc<Tracker>,
}

impl<T> TrackedIo<T> {
    pub(super) fn new(inner: T, tracker: Arc<Tracker>) -> Self {
        TrackedIo { inner, tracker }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.tracker.on_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The open connections, capped.
pub(super) struct Registry {
    max: usize,
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Tracker>>>,
}

/// A connection's place in the [`Registry`]; dropping it gives the place back.
pub(super) struct Registered {
    id: u64,
    registry: Arc<Registry>,
    pub(super) tracker: Arc<Tracker>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl Registry {
    pub(super) fn new(max: usize) -> Arc<Registry> {
        Arc::new(Registry {
            max: max.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Tracker>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cap.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Open connections.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Registers a new connection. At the cap, the oldest connection that has never completed
    /// a request is evicted, else the oldest idle one; `None` when every connection is serving
    /// a request (the new one is then refused).
    pub(super) fn register(self: &Arc<Self>) -> Option<Registered> {
        let mut open = self.lock();
        if open.len() >= self.max {
            let not_busy = |t: &&Arc<Tracker>| t.phase() != Phase::Busy && !t.is_evicted();
            let victim = open
                .iter()
                .find(|(_, t)| not_busy(t) && !t.served_any.load(Ordering::Acquire))
                .or_else(|| open.iter().find(|(_, t)| not_busy(t)))
                .map(|(id, _)| *id)?;
            if let Some(t) = open.remove(&victim) {
                t.evicted.store(true, Ordering::Release);
                t.changed.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracker = Arc::new(Tracker::new());
        open.insert(id, tracker.clone());
        Some(Registered {
            id,
            registry: self.clone(),
            tracker,
        })
    }
}

/// The connection cap when `maxConnections` is not set: half the descriptors the process may
/// open (each client connection may need an upstream one), less a reserve.
pub(super) fn derived_max_connections(descriptor_limit: u64) -> usize {
    let usable = descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
    usize::try_from(usable)
        .unwrap_or(usize::MAX)
        .max(MIN_DERIVED_CONNECTIONS)
}

/// Raises the soft file-descriptor limit to the hard one (a gateway holds two descriptors per
/// stream) and returns the limit now in force; `None` where it cannot be read.
pub(super) fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => limit = raised,
                Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
            }
        }
        // `None` for current means unlimited.
        Some(limit.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn phases_and_their_deadlines() {
        let t = Arc::new(Tracker::new());
        let Phase::Waiting {
            since,
            served_any: false,
        } = t.phase()
        else {
            panic!("{:?}", t.phase())
        };
        assert_eq!(t.phase().deadline(D), Some(since + D.header_read));
        t.on_read();
        assert!(matches!(t.phase(), Phase::Head { .. }), "{:?}", t.phase());
        let guard = t.request_started();
        assert_eq!(t.phase(), Phase::Busy);
        assert_eq!(t.phase().deadline(D), None);
        // Body bytes read while busy start no head.
        t.on_read();
        assert_eq!(t.phase(), Phase::Busy);
        drop(guard);
        let Phase::Waiting {
            since,
            served_any: true,
        } = t.phase()
        else {
            panic!("{:?}", t.phase())
        };
        assert_eq!(t.phase().deadline(D), Some(since + D.idle));
    }

    #[test]
    fn at_the_cap_a_connection_that_never_sent_a_request_goes_first() {
        let registry = Registry::new(2);
        let served = registry.register().unwrap();
        drop(served.tracker.request_started());
        let slow = registry.register().unwrap();
        let newer = registry.register().unwrap();
        assert!(slow.tracker.is_evicted());
        assert!(!served.tracker.is_evicted());
        assert_eq!(registry.len(), 2);
        // Then the oldest idle one; a busy one never.
        let _busy = newer.tracker.request_started();
        let _third = registry.register().unwrap();
        assert!(served.tracker.is_evicted());
        let _b2 = _third.tracker.request_started();
        assert!(registry.register().is_none());
        drop(slow);
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn derived_cap() {
        assert_eq!(derived_max_connections(512), 224);
        assert_eq!(derived_max_connections(20_000), 9_968);
        assert_eq!(derived_max_connections(10), MIN_DERIVED_CONNECTIONS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_never_completes_expires() {
        let t = Arc::new(Tracker::new());
        let d = Deadlines {
            header_read: Duration::from_secs(2),
            idle: Duration::from_secs(5),
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        t.on_read();
        let started = tokio::time::Instant::now();
        assert_eq!(t.expired(d).await, Closed::HeaderTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let guard = t.request_started();
        // Busy: no deadline.
        assert!(
            tokio::time::timeout(Duration::from_secs(600), t.expired(d))
                .await
                .is_err()
        );
        drop(guard);
        let started = tokio::time::Instant::now();
        assert_eq!(t.expired(d).await, Closed::IdleTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
