//! Cancelling an execution's outgoing requests (C68).

use std::sync::Arc;
use wasmtime_wasi_http::Error;

/// Cancels an execution's outgoing requests (C68): the request in flight, or the response body
/// being read, fails with `ERR_CANCELED - canceled`, which the component reports as C68 says,
/// with the usage of what already arrived (C113). Clones cancel the same execution.
#[derive(Clone, Debug)]
pub struct Cancel(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Cancel {
    /// A handle that has not been cancelled.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Cancels; idempotent.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once cancelled (at once if already).
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // An error means every sender is gone: nothing can cancel any more.
            if rx.wait_for(|cancelled| *cancelled).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The error a cancelled request or body reports to the guest.
pub(super) fn canceled() -> Error {
    Error::InternalError(Some("ERR_CANCELED - canceled".to_owned()))
}
