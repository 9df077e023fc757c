//! The guest's delays end when its execution is cancelled (C68).
//!
//! The component waits between retries (`src/retry.rs`) with
//! `wasi:clocks/monotonic-clock.subscribe-duration`, which knows nothing of cancellation: a
//! client that went away, or a shutdown past its grace period, had to wait for the delay to
//! end (up to `retry.maxDelay`). This module replaces that one function: its pollable is ready
//! when the duration has passed or the execution's [`Cancel`](crate::Cancel) fires, whichever
//! comes first. The guest then goes on to its next request, which the outbound hook fails with
//! `ERR_CANCELED` at once, so the execution ends as C68 says (failure, usage, log line). Every
//! other clock function, and `subscribe-instant` (whose waits are always beside a request's own
//! pollable, which the hook already cancels), stays wasmtime-wasi's.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::{Pollable, subscribe};

/// The interface whose `subscribe-duration` is replaced, as the component imports it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Resolves when the execution is cancelled.
pub(super) type Cancelled = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a `Store`'s data gives the replacement: its resource table and its execution's
/// cancellation.
pub(super) trait Delays {
    fn table(&mut self) -> &mut ResourceTable;
    fn cancelled(&self) -> Cancelled;
}

/// Replaces `subscribe-duration` in `linker`, which must already hold wasmtime-wasi's clocks.
pub(super) fn add_to_linker<T: Delays + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.instance(MONOTONIC_CLOCK)?.func_wrap(
        "subscribe-duration",
        |mut store: wasmtime::StoreContextMut<'_, T>, (nanos,): (u64,)| {
            let cancelled = store.data().cancelled();
            let table = store.data_mut().table();
            let delay = table.push(Delay {
                // Too far to represent: never, as wasmtime-wasi's own.
                until: tokio::time::Instant::now().checked_add(Duration::from_nanos(nanos)),
                cancelled: Some(cancelled),
            })?;
            Ok((subscribe(table, delay)?,))
        },
    );
    linker.allow_shadowing(false);
    defined
}

/// A delay that a cancellation ends early.
struct Delay {
    /// `None`: never.
    until: Option<tokio::time::Instant>,
    /// `None` once it has fired (a finished future must not be polled again).
    cancelled: Option<Cancelled>,
}

#[async_trait::async_trait]
impl Pollable for Delay {
    async fn ready(&mut self) {
        let until = self.until;
        let Some(cancelled) = self.cancelled.as_mut() else {
            return;
        };
        let elapsed = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let fired = tokio::select! {
            () = elapsed => false,
            () = cancelled => true,
        };
        if fired {
            self.cancelled = None;
        }
    }
}
