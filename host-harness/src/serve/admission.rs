//! Admission: which request may start an execution, and when.
//!
//! An execution needs three permits, taken in this order and each waited for in its own FIFO
//! queue: its caller's (`maxExecutionsPerClient`), its connector's
//! (`maxExecutionsPerConnector`), and one of the process's instance slots. A caller or a
//! connector at its share queues behind itself only: requests of a stalled connector wait in
//! that connector's queue, never in front of another connector's requests for a free slot.
//! The whole wait is bounded by `queueTimeout`, after which the request is answered `503` with
//! `Retry-After`. Once shutdown begins ([`Admission::close`]) nothing more is admitted: waiting
//! requests are answered `503` at once, so no upstream request starts after SIGTERM.
//!
//! A reload (`SIGHUP`, [`Admission::reconfigure`]) keeps the queues of the connectors and
//! callers it keeps (by connector id and [`Caller`], which does not depend on a token's place in
//! the file), with their executions in flight; shares that change are resized in place (a
//! smaller share takes effect as executions end).

use super::auth::Caller;
use crate::serve_settings::ServeSettings;
use openai_connector::protocol::Refusal;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The `Retry-After` of a refusal, in seconds: a slot frees when an execution ends, and a
/// shutting-down instance sends its clients to another one; a second fits both.
pub(super) const RETRY_AFTER_SECS: u64 = 1;

/// The permits of one admitted execution; dropping it gives them back.
pub(super) struct Ticket {
    // Field order is drop order: the slot goes back before the shares.
    _slot: OwnedSemaphorePermit,
    _connector: OwnedSemaphorePermit,
    _client: OwnedSemaphorePermit,
}

/// The admission queues of a gateway.
pub(super) struct Admission {
    slots: Arc<Semaphore>,
    queues: Mutex<Queues>,
    queue_timeout: Duration,
    closing: watch::Sender<bool>,
}

/// The per-connector and per-caller queues, and the shares they were sized for.
struct Queues {
    shares: Shares,
    connectors: HashMap<String, Queue>,
    clients: HashMap<Caller, Queue>,
}

/// One share: its permits and how many there are meant to be.
struct Queue {
    permits: Arc<Semaphore>,
    size: usize,
    /// Permits a smaller share still has to take back as executions end.
    owed: Arc<AtomicUsize>,
}

impl Queue {
    fn new(size: usize) -> Queue {
        Queue {
            permits: Arc::new(Semaphore::new(size)),
            size,
            owed: Arc::default(),
        }
    }

    /// Executions holding a permit now.
    fn in_flight(&self) -> usize {
        (self.size + self.owed.load(Ordering::Relaxed))
            .saturating_sub(self.permits.available_permits())
    }

    /// Grows or shrinks the share to `size`. Permits held now cannot be taken back: a
    /// smaller share takes the rest as the executions holding them end.
    fn resize(&mut self, size: usize) {
        if size > self.size {
            self.permits.add_permits(size - self.size);
        } else if size < self.size {
            let excess = self.size - size;
            let left = excess - self.permits.forget_permits(excess);
            if left > 0 {
                let permits = self.permits.clone();
                let owed = self.owed.clone();
                owed.fetch_add(left, Ordering::Relaxed);
                // Queued with the waiting requests, in their order.
                tokio::spawn(async move {
                    let n = u32::try_from(left).unwrap_or(u32::MAX);
                    if let Ok(taken) = permits.acquire_many_owned(n).await {
                        taken.forget();
                        owed.fetch_sub(left, Ordering::Relaxed);
                    }
                });
            }
        }
        self.size = size;
    }
}

/// Adds a queue of `size` for every key of `keys` that has none.
fn add_missing<K: Eq + Hash>(
    queues: &mut HashMap<K, Queue>,
    keys: impl IntoIterator<Item = K>,
    size: usize,
) {
    for key in keys {
        queues.entry(key).or_insert_with(|| Queue::new(size));
    }
}

/// The shares in force, for the start-up line and the docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shares {
    pub(super) slots: usize,
    pub(super) per_connector: usize,
    pub(super) per_client: usize,
}

impl Shares {
    /// The shares for `slots` instance slots shared by `connectors` connectors and `callers`
    /// callers: the settings' values (at most `slots`), else three quarters of the slots when
    /// there is someone to share with, else all of them.
    pub(super) fn new(
        settings: &ServeSettings,
        slots: usize,
        connectors: usize,
        callers: usize,
    ) -> Shares {
        let default = |sharers: usize| {
            if sharers > 1 {
                (slots * 3).div_ceil(4).max(1)
            } else {
                slots
            }
        };
        Shares {
            slots,
            per_connector: settings
                .max_executions_per_connector
                .unwrap_or_else(|| default(connectors))
                .min(slots),
            per_client: settings
                .max_executions_per_client
                .unwrap_or_else(|| default(callers))
                .min(slots),
        }
    }
}

impl Admission {
    pub(super) fn new(
        shares: Shares,
        connector_ids: impl IntoIterator<Item = String>,
        callers: impl IntoIterator<Item = Caller>,
        queue_timeout: Duration,
    ) -> Admission {
        let mut queues = Queues {
            shares,
            connectors: HashMap::new(),
            clients: HashMap::new(),
        };
        add_missing(&mut queues.connectors, connector_ids, shares.per_connector);
        add_missing(&mut queues.clients, callers, shares.per_client);
        Admission {
            slots: Arc::new(Semaphore::new(shares.slots)),
            queues: Mutex::new(queues),
            queue_timeout,
            closing: watch::Sender::new(false),
        }
    }

    fn queues(&self) -> MutexGuard<'_, Queues> {
        // The queues hold no invariant a panic elsewhere could break.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A reload: the shares for the new set of connectors and callers, queues for the new ones.
    /// The instance slots stay as they are (`shares.slots` is the pool's size).
    pub(super) fn reconfigure(
        &self,
        shares: Shares,
        connector_ids: impl IntoIterator<Item = String>,
        callers: impl IntoIterator<Item = Caller>,
    ) {
        let mut queues = self.queues();
        if queues.shares != shares {
            for queue in queues.connectors.values_mut() {
                queue.resize(shares.per_connector);
            }
            for queue in queues.clients.values_mut() {
                queue.resize(shares.per_client);
            }
            queues.shares = shares;
        }
        add_missing(&mut queues.connectors, connector_ids, shares.per_connector);
        add_missing(&mut queues.clients, callers, shares.per_client);
    }

    /// Waits for the permits of an execution of `connector` for `caller`.
    pub(super) async fn admit(&self, connector: &str, caller: Caller) -> Result<Ticket, Refusal> {
        let (client, connector) = {
            let mut queues = self.queues();
            let Shares {
                per_connector,
                per_client,
                ..
            } = queues.shares;
            // Every served connector and every known caller has its queue; one of a request
            // that began before a reload (which added it) gets one now.
            let client = queues
                .clients
                .entry(caller)
                .or_insert_with(|| Queue::new(per_client))
                .permits
                .clone();
            let connector = queues
                .connectors
                .entry(connector.to_owned())
                .or_insert_with(|| Queue::new(per_connector))
                .permits
                .clone();
            (client, connector)
        };
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return Err(Refusal::ShuttingDown);
        }
        let wait = async {
            Ticket {
                _client: acquire(&client).await,
                _connector: acquire(&connector).await,
                _slot: acquire(&self.slots).await,
            }
        };
        tokio::select! {
            // A shutdown that begins while the permits are being taken wins.
            biased;
            _ = closing.wait_for(|c| *c) => Err(Refusal::ShuttingDown),
            ticket = tokio::time::timeout(self.queue_timeout, wait) => {
                ticket.map_err(|_| Refusal::QueueTimeout)
            }
        }
    }

    /// Executions of `connector` admitted now (for `balance` routes).
    pub(super) fn in_flight(&self, connector: &str) -> usize {
        self.queues()
            .connectors
            .get(connector)
            .map_or(0, Queue::in_flight)
    }

    /// Shutdown begins: requests waiting for permits and every later one are refused.
    pub(super) fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub(super) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    semaphore
        .clone()
        .acquire_owned()
        .await
        .unwrap_or_else(|_| unreachable!("admission semaphores are never closed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::auth::ClientId;

    fn client(n: u64) -> Caller {
        Caller::Client(ClientId::for_test(n))
    }

    fn admission(per_connector: usize, per_client: usize, slots: usize) -> Admission {
        Admission::new(
            Shares {
                slots,
                per_connector,
                per_client,
            },
            ["a".to_owned(), "b".to_owned()],
            [client(0), client(1), Caller::Admin],
            Duration::from_secs(1),
        )
    }

    #[test]
    fn default_shares() {
        let s = ServeSettings::default();
        assert_eq!(
            Shares::new(&s, 64, 2, 3),
            Shares {
                slots: 64,
                per_connector: 48,
                per_client: 48
            }
        );
        // Nobody to share with: everything.
        assert_eq!(Shares::new(&s, 64, 1, 1).per_connector, 64);
        assert_eq!(Shares::new(&s, 64, 1, 1).per_client, 64);
        let s = ServeSettings {
            max_executions_per_connector: Some(100),
            max_executions_per_client: Some(2),
            ..ServeSettings::default()
        };
        assert_eq!(Shares::new(&s, 64, 1, 1).per_connector, 64);
        assert_eq!(Shares::new(&s, 64, 1, 1).per_client, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connector_at_its_share_does_not_delay_another() {
        let adm = admission(2, 8, 3);
        let _a1 = adm.admit("a", client(0)).await.unwrap();
        let _a2 = adm.admit("a", client(0)).await.unwrap();
        assert_eq!((adm.in_flight("a"), adm.in_flight("b")), (2, 0));
        // A third of `a` waits in `a`'s queue...
        let waiting = adm.admit("a", client(0));
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        // ...and `b` gets the last slot at once.
        let _b = adm.admit("b", client(1)).await.unwrap();
        assert_eq!(waiting.await.err(), Some(Refusal::QueueTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_at_its_share_waits_and_times_out() {
        let adm = admission(8, 1, 8);
        let _held = adm.admit("a", client(0)).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            adm.admit("b", client(0)).await.err(),
            Some(Refusal::QueueTimeout)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(adm.admit("b", client(1)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_refuses_the_waiting_and_the_new() {
        let adm = Arc::new(admission(1, 8, 8));
        let _held = adm.admit("a", Caller::Admin).await.unwrap();
        let waiting = {
            let adm = adm.clone();
            tokio::spawn(async move { adm.admit("a", Caller::Admin).await.err() })
        };
        tokio::task::yield_now().await;
        adm.close();
        assert_eq!(waiting.await.unwrap(), Some(Refusal::ShuttingDown));
        assert_eq!(
            adm.admit("b", Caller::Admin).await.err(),
            Some(Refusal::ShuttingDown)
        );
        assert!(adm.is_closing());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_resizes_shares_and_keeps_what_is_in_flight() {
        let adm = admission(2, 8, 8);
        let held = adm.admit("a", client(0)).await.unwrap();
        let _held2 = adm.admit("a", client(0)).await.unwrap();
        // A reload: a third connector, and a share of 1 per connector.
        let shares = Shares {
            slots: 8,
            per_connector: 1,
            per_client: 8,
        };
        adm.reconfigure(shares, ["a", "b", "c"].map(str::to_owned), [client(0)]);
        // `a` still has its two in flight, and no room until both have ended.
        assert_eq!(adm.in_flight("a"), 2);
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(
            adm.admit("a", client(0)).await.err(),
            Some(Refusal::QueueTimeout)
        );
        // The new connector has its queue, of the new size.
        let _c = adm.admit("c", client(0)).await.unwrap();
        assert_eq!(
            adm.admit("c", client(0)).await.err(),
            Some(Refusal::QueueTimeout)
        );
        // A larger share grows at once.
        adm.reconfigure(
            Shares {
                per_connector: 3,
                ..shares
            },
            ["c".to_owned()],
            [],
        );
        assert!(adm.admit("c", client(0)).await.is_ok());
    }

    /// Polls `f` once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
