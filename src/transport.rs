//! What an execution needs from the network, as traits: the component implements them over
//! `wasi:http` (`component::transport`), tests implement them in memory. No I/O happens here.

use crate::request::HttpRequest;

/// What the transport must enforce for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total time from the first request to the last response byte, in ms (C62).
    pub total_timeout_ms: u64,
    /// Largest accepted response body that is read whole (C65).
    pub max_body_bytes: u64,
}

/// A response head; the body is read from `body` as it arrives.
#[derive(Debug)]
pub struct Head<B> {
    /// Status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, not yet read.
    pub body: B,
}

impl<B> Head<B> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body being received.
pub trait Body {
    /// The next chunk of bytes (never empty), or `None` at the end. With `idle_timeout_ms`,
    /// fails with [`TransportError::IdleTimeout`] when no byte arrives for that long (C63).
    fn next_chunk(
        &mut self,
        idle_timeout_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, TransportError>;
}

/// Reads a whole body, failing past `max` bytes (C65).
pub(crate) fn read_to_end(body: &mut impl Body, max: u64) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next_chunk(None)? {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(TransportError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why no (complete) response arrived (C74).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name did not resolve.
    #[error("name resolution failed")]
    NameNotResolved,
    /// The connection was refused.
    #[error("connection refused")]
    ConnectionRefused,
    /// The connection closed or reset before the response ended.
    #[error("connection reset")]
    ConnectionReset,
    /// The total timeout expired (C62).
    #[error("timeout")]
    Timeout,
    /// No byte arrived within the idle timeout (C63).
    #[error("idle timeout of {0}ms")]
    IdleTimeout(u64),
    /// The body exceeded the limit (C65).
    #[error("response too large")]
    TooLarge,
    /// The host refused to send the request (its policy).
    #[error("request denied by the host")]
    Denied,
    /// The host or caller cancelled the execution (C68).
    #[error("canceled")]
    Canceled,
    /// A failure with a Node-style code and message (TLS failures among them).
    #[error("{code} - {message}")]
    Coded {
        /// e.g. `UNABLE_TO_VERIFY_LEAF_SIGNATURE`.
        code: String,
        /// e.g. `unable to verify the first certificate`.
        message: String,
    },
}

/// Sends requests. Implemented over `wasi:http` in the component and in memory in tests.
pub trait Transport {
    /// The response body type.
    type Body: Body;

    /// Sends `request` and waits for the response head. The total timeout counts from the
    /// transport's first `open`, so redirects and the body share it (C62).
    fn open(
        &mut self,
        request: &HttpRequest,
        limits: &Limits,
    ) -> Result<Head<Self::Body>, TransportError>;

    /// Milliseconds left of the total timeout, which counts from the first `open` (all of it
    /// before that).
    fn time_left_ms(&self, limits: &Limits) -> u64;

    /// Waits `ms` milliseconds before another attempt (`crate::retry`).
    fn pause(&mut self, ms: u64) -> Result<(), TransportError>;

    /// The wall clock, in seconds since the Unix epoch (an HTTP-date `Retry-After`).
    fn unix_time_secs(&self) -> u64;

    /// A uniformly distributed random number (backoff jitter).
    fn random_u64(&mut self) -> u64;
}
