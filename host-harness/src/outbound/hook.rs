//! The wasi-http hooks each `Store` carries: every outgoing request of the guest goes through
//! its execution's [`OutboundPolicy`].

use super::cancel::canceled;
use super::error::tls_failure_text;
use super::policy::OutboundPolicy;
use std::sync::Arc;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks object placed in each `Store`.
pub(crate) struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
}

impl OutboundHooks {
    /// Hooks that apply `policy`.
    pub(crate) fn new(policy: Arc<OutboundPolicy>) -> Self {
        OutboundHooks { policy }
    }

    /// Resolves when the execution is cancelled (C68).
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.policy.cancelled()
    }
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let policy = self.policy.clone();
        let cancelled = policy.cancelled();
        Box::new(async move {
            let response = tokio::select! {
                response = policy.send(request, options) => response?,
                () = cancelled => return Err(canceled()),
            };
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        // Keep the cause: a TLS alert after the handshake is a TLS failure, not a hang-up.
        if let Some(text) = tls_failure_text(err) {
            ErrorCode::InternalError(Some(text))
        } else if err.is_timeout() {
            ErrorCode::ConnectionReadTimeout
        } else {
            ErrorCode::ConnectionTerminated
        }
    }
}
