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

use super::auth::Caller;
use crate::serve_settings::ServeSettings;
use openai_connector::protocol::Refusal;
use std::collections::HashMap;
use std::sync::Arc;
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
    connectors: HashMap<String, Arc<Semaphore>>,
    clients: HashMap<Caller, Arc<Semaphore>>,
    per_connector: usize,
    queue_timeout: Duration,
    closing: watch::Sender<bool>,
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
        Admission {
            slots: Arc::new(Semaphore::new(shares.slots)),
            connectors: connector_ids
                .into_iter()
                .map(|id| (id, Arc::new(Semaphore::new(shares.per_connector))))
                .collect(),
            clients: callers
                .into_iter()
                .map(|c| (c, Arc::new(Semaphore::new(shares.per_client))))
                .collect(),
            per_connector: shares.per_connector,
            queue_timeout,
            closing: watch::Sender::new(false),
        }
    }

    /// Waits for the permits of an execution of `connector` for `caller`.
    pub(super) async fn admit(&self, connector: &str, caller: Caller) -> Result<Ticket, Refusal> {
        let (Some(client), Some(connector)) =
            (self.clients.get(&caller), self.connectors.get(connector))
        else {
            // Every served connector and every known caller has its queue; a request for
            // anything else was refused before it got here.
            unreachable!("admission asked for an unknown connector or caller")
        };
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return Err(Refusal::ShuttingDown);
        }
        let wait = async {
            Ticket {
                _client: acquire(client).await,
                _connector: acquire(connector).await,
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
        self.connectors
            .get(connector)
            .map_or(0, |s| self.per_connector - s.available_permits())
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

    fn admission(per_connector: usize, per_client: usize, slots: usize) -> Admission {
        Admission::new(
            Shares {
                slots,
                per_connector,
                per_client,
            },
            ["a".to_owned(), "b".to_owned()],
            [Caller::Client(0), Caller::Client(1), Caller::Admin],
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
        let _a1 = adm.admit("a", Caller::Client(0)).await.unwrap();
        let _a2 = adm.admit("a", Caller::Client(0)).await.unwrap();
        assert_eq!((adm.in_flight("a"), adm.in_flight("b")), (2, 0));
        // A third of `a` waits in `a`'s queue...
        let waiting = adm.admit("a", Caller::Client(0));
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none());
        // ...and `b` gets the last slot at once.
        let _b = adm.admit("b", Caller::Client(1)).await.unwrap();
        assert_eq!(waiting.await.err(), Some(Refusal::QueueTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_at_its_share_waits_and_times_out() {
        let adm = admission(8, 1, 8);
        let _held = adm.admit("a", Caller::Client(0)).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            adm.admit("b", Caller::Client(0)).await.err(),
            Some(Refusal::QueueTimeout)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(adm.admit("b", Caller::Client(1)).await.is_ok());
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
