//! Response bodies: the between-bytes timeout, cancellation (C68), and the connection's return
//! to the pool once the body was read to the end.

use super::cancel::canceled;
use super::error::error_from_hyper;
use crate::pool::{ConnectionPool, PoolKey};
use bytes::Bytes;
use hyper::client::conn::http1::SendRequest;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::{Error, WasiBody};

/// A connection to hand back to the pool once its response was read to the end.
pub(super) struct Reuse {
    pub(super) pool: Arc<ConnectionPool>,
    pub(super) key: PoolKey,
    pub(super) sender: SendRequest<WasiBody>,
}

/// A response body that fails when no frame arrives within `timeout` and, read to the end,
/// returns its connection to the pool. Dropped earlier, it takes the connection with it (a
/// half-read response cannot be skipped safely).
pub(super) struct TimedBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    reuse: Option<Reuse>,
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl TimedBody {
    pub(super) fn new(
        inner: hyper::body::Incoming,
        timeout: Duration,
        reuse: Option<Reuse>,
        cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Self {
        TimedBody {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            reuse,
            cancelled,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            // C68: the connection goes with the abandoned response.
            self.reuse = None;
            return Poll::Ready(Some(Err(canceled())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.reuse = None;
                Poll::Ready(Some(Err(error_from_hyper(&e))))
            }
            Poll::Ready(None) => {
                if let Some(Reuse { pool, key, sender }) = self.reuse.take() {
                    pool.checkin(key, sender);
                }
                Poll::Ready(None)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.reuse = None;
                    Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
