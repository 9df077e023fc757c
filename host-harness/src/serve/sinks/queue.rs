//! A sink's bounded buffer, its counters and the task that ships it (cli.md "Usage sinks").
//!
//! Recording pushes into the buffer under a short lock and returns: the request path never
//! waits on a sink. One task per sink takes batches (at most [`BATCH_MAX`] documents, or what
//! has waited [`BATCH_WAIT`]) and hands them to its [`Shipper`]. A batch that is not (wholly)
//! delivered is tried again with exponential backoff and full jitter, for as long as it takes:
//! meanwhile new documents wait in the buffer, and past its capacity the oldest are dropped and
//! counted. Documents the sink refuses for good are dropped and counted too.
//!
//! Shutdown ([`Queue::flush`]): the task ships at once, without waiting for a batch to fill,
//! and backs off no later than the deadline; whatever is still undelivered at the deadline is
//! counted as dropped (`reason="shutdown"`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
// Tokio's clock, so that the tests can run on paused time.
use tokio::time::Instant;

/// Documents in one batch at most.
pub(super) const BATCH_MAX: usize = 500;
/// How long a document waits for its batch to fill at most.
pub(super) const BATCH_WAIT: Duration = Duration::from_secs(1);
/// The first backoff after a failed batch; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a sink that keeps failing is reported in the log.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// How one attempt at a batch went.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Outcome {
    /// Documents the sink took (they left the batch).
    pub(super) delivered: usize,
    /// Documents the sink refused for good (they left the batch), and why (the first reason).
    pub(super) refused: usize,
    pub(super) refusal: Option<String>,
    /// Why the rest of the batch (or a part of the sink's work for it) must be tried again.
    pub(super) retry: Option<String>,
}

/// What a sink does with a batch.
pub(super) trait Shipper: Send + 'static {
    /// What recording hands over.
    type Item: Send + 'static;
    /// A batch in the sink's own form, made once and tried until it is done.
    type Batch: Send;
    /// Turns taken documents into a batch.
    fn prepare(&mut self, items: Vec<Self::Item>) -> Self::Batch;
    /// One attempt: delivered and refused documents leave `batch`.
    fn ship(&mut self, batch: &mut Self::Batch) -> impl Future<Output = Outcome> + Send;
}

/// Why documents were dropped, in the `reason` label's order.
pub(super) const DROP_REASONS: [&str; 3] = ["overflow", "refused", "shutdown"];

/// A sink's counters (`/metrics`).
#[derive(Default)]
pub(super) struct Stats {
    pub(super) sent: AtomicU64,
    pub(super) failed_batches: AtomicU64,
    /// By [`DROP_REASONS`].
    pub(super) dropped: [AtomicU64; 3],
}

struct State<T> {
    items: VecDeque<(Instant, T)>,
    /// Documents taken by the task and not yet delivered or refused.
    in_flight: usize,
    /// The task holds a batch (documents, or work for them such as a metrics export).
    busy: bool,
    /// Shutting down: ship at once, back off no later than this.
    flush_by: Option<Instant>,
    /// The flush deadline passed: what was left is counted as dropped, later outcomes are not.
    abandoned: bool,
}

/// A sink's buffer.
pub(super) struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    batch_max: usize,
    /// Wakes the task: a batch is full, the first document arrived, or a flush began.
    wake: Notify,
    /// Wakes a flush: the task went idle.
    idle: Notify,
    pub(super) stats: Stats,
}

impl<T> Queue<T> {
    /// A buffer of `capacity` documents (at least 1).
    pub(super) fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                in_flight: 0,
                busy: false,
                flush_by: None,
                abandoned: false,
            }),
            capacity,
            batch_max: BATCH_MAX.min(capacity),
            wake: Notify::new(),
            idle: Notify::new(),
            stats: Stats::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a document; when the buffer is full the oldest waiting one is dropped (or, if every
    /// document is in the batch being shipped, this one).
    pub(super) fn push(&self, item: T) {
        let mut st = self.lock();
        if st.items.len() + st.in_flight >= self.capacity {
            self.stats.dropped[0].fetch_add(1, Ordering::Relaxed);
            if st.items.pop_front().is_none() {
                return;
            }
        }
        st.items.push_back((Instant::now(), item));
        let len = st.items.len();
        drop(st);
        if len == 1 || len == self.batch_max {
            self.wake.notify_one();
        }
    }

    /// Documents waiting or being shipped.
    pub(super) fn buffered(&self) -> usize {
        let st = self.lock();
        st.items.len() + st.in_flight
    }

    /// The next batch: full, or its oldest document waited [`BATCH_WAIT`], or shutting down.
    /// `None` once a flush has begun and nothing is left.
    async fn next_batch(&self) -> Option<Vec<T>> {
        loop {
            let woken = self.wake.notified();
            let due = {
                let mut st = self.lock();
                match st.items.front() {
                    Some((first, _)) => {
                        let due = *first + BATCH_WAIT;
                        if st.items.len() >= self.batch_max
                            || st.flush_by.is_some()
                            || Instant::now() >= due
                        {
                            let n = st.items.len().min(self.batch_max);
                            let batch: Vec<T> = st.items.drain(..n).map(|(_, item)| item).collect();
                            st.in_flight = n;
                            st.busy = true;
                            return Some(batch);
                        }
                        Some(due)
                    }
                    None if st.flush_by.is_some() => return None,
                    None => None,
                }
            };
            match due {
                Some(due) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Counts an attempt's delivered and refused documents, and a failed attempt.
    fn account(&self, outcome: &Outcome) {
        let mut st = self.lock();
        if st.abandoned {
            return;
        }
        let done = outcome.delivered + outcome.refused;
        st.in_flight = st.in_flight.saturating_sub(done);
        self.stats
            .sent
            .fetch_add(outcome.delivered as u64, Ordering::Relaxed);
        self.stats.dropped[1].fetch_add(outcome.refused as u64, Ordering::Relaxed);
        if outcome.retry.is_some() {
            self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The batch is done.
    fn finished_batch(&self) {
        let mut st = self.lock();
        st.busy = false;
        st.in_flight = 0;
        let idle = st.items.is_empty();
        drop(st);
        if idle {
            self.idle.notify_waiters();
        }
    }

    /// How long to back off: `delay`, cut short at the flush deadline. `None`: abandoned.
    fn backoff(&self, delay: Duration) -> Option<Duration> {
        let st = self.lock();
        if st.abandoned {
            return None;
        }
        Some(match st.flush_by {
            Some(by) => delay.min(by.saturating_duration_since(Instant::now())),
            None => delay,
        })
    }

    /// Ships what is buffered, and what is recorded meanwhile, until `by`. Returns the
    /// documents left undelivered at `by` (counted as dropped, reason `shutdown`).
    pub(super) async fn flush(&self, by: Instant) -> usize {
        self.lock().flush_by = Some(by);
        self.wake.notify_one();
        let drained = async {
            loop {
                let notified = self.idle.notified();
                {
                    let st = self.lock();
                    if st.items.is_empty() && !st.busy {
                        return;
                    }
                }
                notified.await;
            }
        };
        if tokio::time::timeout_at(by, drained).await.is_ok() {
            return 0;
        }
        let mut st = self.lock();
        let left = st.items.len() + st.in_flight;
        st.items.clear();
        st.in_flight = 0;
        st.abandoned = true;
        self.stats.dropped[2].fetch_add(left as u64, Ordering::Relaxed);
        left
    }
}

/// Exponential backoff with full jitter.
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let cap = BACKOFF_INITIAL
            .saturating_mul(1 << exponent)
            .min(BACKOFF_MAX);
        // Full jitter: anywhere from nothing to the cap, at millisecond grain.
        Duration::from_millis(fastrand::u64(..=cap.as_millis() as u64))
    }
}

/// Reports a failing sink once, then at most every [`REPORT_EVERY`], and its recovery.
struct Reporter {
    name: String,
    failing_since_report: u64,
    last_report: Option<Instant>,
    refused_since_report: u64,
    last_refusal_report: Option<Instant>,
    failing: bool,
}

impl Reporter {
    fn failed(&mut self, why: &str, waiting: usize) {
        self.failing = true;
        self.failing_since_report += 1;
        if self
            .last_report
            .is_none_or(|at| at.elapsed() >= REPORT_EVERY)
        {
            tracing::warn!(
                "usage sink {}: {why} ({} failed attempt(s) since the last report); {waiting} document(s) buffered, retrying with backoff",
                self.name,
                self.failing_since_report
            );
            self.failing_since_report = 0;
            self.last_report = Some(Instant::now());
        }
    }

    fn refused(&mut self, count: usize, why: &str) {
        self.refused_since_report += count as u64;
        if self
            .last_refusal_report
            .is_none_or(|at| at.elapsed() >= REPORT_EVERY)
        {
            tracing::warn!(
                "usage sink {}: {} document(s) refused for good and dropped: {why}",
                self.name,
                self.refused_since_report
            );
            self.refused_since_report = 0;
            self.last_refusal_report = Some(Instant::now());
        }
    }

    fn delivered(&mut self) {
        if self.failing {
            tracing::warn!("usage sink {}: delivering again", self.name);
            self.failing = false;
            self.last_report = None;
            self.failing_since_report = 0;
        }
    }
}

/// The task of one sink: ships batches until a flush has emptied the buffer (or gave up).
pub(super) async fn run<S: Shipper>(name: String, queue: Arc<Queue<S::Item>>, mut shipper: S) {
    let mut reporter = Reporter {
        name,
        failing_since_report: 0,
        last_report: None,
        refused_since_report: 0,
        last_refusal_report: None,
        failing: false,
    };
    let mut backoff = Backoff { failures: 0 };
    while let Some(items) = queue.next_batch().await {
        let mut batch = shipper.prepare(items);
        loop {
            let outcome = shipper.ship(&mut batch).await;
            queue.account(&outcome);
            if outcome.refused > 0 {
                reporter.refused(
                    outcome.refused,
                    outcome.refusal.as_deref().unwrap_or("no reason given"),
                );
            }
            let Some(why) = &outcome.retry else {
                backoff.failures = 0;
                reporter.delivered();
                break;
            };
            reporter.failed(why, queue.buffered());
            let Some(delay) = queue.backoff(backoff.next()) else {
                // The flush deadline passed: this batch was counted as dropped.
                return;
            };
            tokio::time::sleep(delay).await;
        }
        queue.finished_batch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers what `script` says, in order; then everything.
    struct Scripted {
        script: VecDeque<Outcome>,
        shipped: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    impl Shipper for Scripted {
        type Item = u32;
        type Batch = Vec<u32>;
        fn prepare(&mut self, items: Vec<u32>) -> Vec<u32> {
            items
        }
        async fn ship(&mut self, batch: &mut Vec<u32>) -> Outcome {
            self.shipped.lock().unwrap().push(batch.clone());
            let outcome = self.script.pop_front().unwrap_or(Outcome {
                delivered: batch.len(),
                ..Outcome::default()
            });
            batch.drain(..outcome.delivered + outcome.refused);
            outcome
        }
    }

    fn counts(q: &Queue<u32>) -> (u64, u64, [u64; 3]) {
        (
            q.stats.sent.load(Ordering::Relaxed),
            q.stats.failed_batches.load(Ordering::Relaxed),
            [0, 1, 2].map(|i| q.stats.dropped[i].load(Ordering::Relaxed)),
        )
    }

    #[test]
    fn past_capacity_the_oldest_are_dropped() {
        let q = Queue::new(3);
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.buffered(), 3);
        let kept: Vec<u32> = q.lock().items.iter().map(|(_, i)| *i).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!(counts(&q).2, [2, 0, 0]);
    }

    // A failed batch is tried again (counted), refused items are dropped (counted), and a
    // full batch ships without waiting for BATCH_WAIT.
    #[tokio::test(start_paused = true)]
    async fn retries_and_refusals_are_counted() {
        let q = Queue::new(10_000);
        let shipped = Arc::new(Mutex::new(Vec::new()));
        let shipper = Scripted {
            script: VecDeque::from([
                Outcome {
                    retry: Some("down".into()),
                    ..Outcome::default()
                },
                Outcome {
                    delivered: 400,
                    refused: 50,
                    refusal: Some("mapping".into()),
                    retry: Some("429 for some".into()),
                },
            ]),
            shipped: shipped.clone(),
        };
        for i in 0..(BATCH_MAX as u32 + 7) {
            q.push(i);
        }
        let task = tokio::spawn(run("test".into(), q.clone(), shipper));
        let by = Instant::now() + Duration::from_secs(600);
        assert_eq!(q.flush(by).await, 0);
        task.await.unwrap();
        let shipped = shipped.lock().unwrap();
        let sizes: Vec<usize> = shipped.iter().map(Vec::len).collect();
        // The full batch three times (the last time only its 50 retryable items), then the 7.
        assert_eq!(sizes, [BATCH_MAX, BATCH_MAX, 50, 7]);
        assert_eq!(shipped[2][0], 450);
        assert_eq!(counts(&q), (457, 2, [0, 50, 0]));
        assert_eq!(q.buffered(), 0);
    }

    // A sink that never comes back: at the flush deadline what is left is counted as dropped.
    #[tokio::test(start_paused = true)]
    async fn flush_gives_up_at_its_deadline() {
        let q = Queue::new(10_000);
        let shipper = Scripted {
            script: (0..1000)
                .map(|_| Outcome {
                    retry: Some("down".into()),
                    ..Outcome::default()
                })
                .collect(),
            shipped: Arc::default(),
        };
        for i in 0..12 {
            q.push(i);
        }
        let task = tokio::spawn(run("test".into(), q.clone(), shipper));
        let started = Instant::now();
        let left = q.flush(started + Duration::from_secs(5)).await;
        assert_eq!(left, 12);
        assert!(started.elapsed() >= Duration::from_secs(5));
        let (sent, failed, dropped) = counts(&q);
        assert_eq!((sent, dropped), (0, [0, 0, 12]));
        assert!(failed >= 1);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the task ends after the deadline")
            .unwrap();
    }

    // Without a flush, a lone document waits BATCH_WAIT for company, then ships.
    #[tokio::test(start_paused = true)]
    async fn a_lone_document_ships_after_the_batch_wait() {
        let q = Queue::new(100);
        let shipped = Arc::new(Mutex::new(Vec::new()));
        let shipper = Scripted {
            script: VecDeque::new(),
            shipped: shipped.clone(),
        };
        let task = tokio::spawn(run("test".into(), q.clone(), shipper));
        q.push(1);
        tokio::time::sleep(BATCH_WAIT / 2).await;
        assert!(shipped.lock().unwrap().is_empty());
        tokio::time::sleep(BATCH_WAIT).await;
        assert_eq!(*shipped.lock().unwrap(), [vec![1]]);
        assert_eq!(q.flush(Instant::now() + Duration::from_secs(1)).await, 0);
        task.await.unwrap();
    }
}
