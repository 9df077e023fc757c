//! [`Transport`] over `wasi:http/outgoing-handler`, with the total timeout enforced in the
//! guest through `wasi:clocks` so that it holds under any host.

use super::bindings::wasi::clocks::{monotonic_clock, wall_clock};
use super::bindings::wasi::http::outgoing_handler;
use super::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use super::bindings::wasi::io::poll;
use super::bindings::wasi::io::streams::{InputStream, StreamError};
use super::bindings::wasi::random::random;
use crate::request::HttpRequest;
use crate::transport::{Body, Head, Limits, Transport, TransportError};

/// Bytes asked for per read of the response body.
const READ_CHUNK: u64 = 64 * 1024;
/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;

/// Sends requests through the host; the clock starts at the first `send`.
#[derive(Default)]
pub(super) struct WasiTransport {
    started: Option<monotonic_clock::Instant>,
}

impl Transport for WasiTransport {
    type Body = WasiBody;

    fn open(
        &mut self,
        request: &HttpRequest,
        limits: &Limits,
    ) -> Result<Head<WasiBody>, TransportError> {
        let started = *self.started.get_or_insert_with(monotonic_clock::now);
        let deadline = started.saturating_add(limits.total_timeout_ms.saturating_mul(1_000_000));
        let response = start(request, deadline)?;
        head(response, deadline)
    }

    fn time_left_ms(&self, limits: &Limits) -> u64 {
        let total = limits.total_timeout_ms;
        match self.started {
            None => total,
            Some(started) => {
                let elapsed_ms = monotonic_clock::now().saturating_sub(started) / 1_000_000;
                total.saturating_sub(elapsed_ms)
            }
        }
    }

    fn pause(&mut self, ms: u64) -> Result<(), TransportError> {
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
        Ok(())
    }

    fn unix_time_secs(&self) -> u64 {
        wall_clock::now().seconds
    }

    fn random_u64(&mut self) -> u64 {
        random::get_random_u64()
    }
}

/// A response body read from the host as it arrives.
pub(super) struct WasiBody {
    // Field order is drop order: the stream is a child of the body and must go first.
    stream: InputStream,
    _body: IncomingBody,
    deadline: monotonic_clock::Instant,
}

impl Body for WasiBody {
    fn next_chunk(
        &mut self,
        idle_timeout_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, TransportError> {
        let idle_deadline = idle_timeout_ms.map(|ms| {
            (
                ms,
                monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000)),
            )
        });
        loop {
            match self.stream.read(READ_CHUNK) {
                Ok(bytes) if bytes.is_empty() => {
                    let pollable = self.stream.subscribe();
                    let total = monotonic_clock::subscribe_instant(self.deadline);
                    let idle = idle_deadline.map(|(_, at)| monotonic_clock::subscribe_instant(at));
                    let mut waits = vec![&pollable, &total];
                    if let Some(idle) = &idle {
                        waits.push(idle);
                    }
                    let ready = poll::poll(&waits);
                    if ready.contains(&0) {
                        continue;
                    }
                    if ready.contains(&1) {
                        return Err(TransportError::Timeout);
                    }
                    if let Some((ms, _)) = idle_deadline {
                        return Err(TransportError::IdleTimeout(ms));
                    }
                }
                Ok(bytes) => return Ok(Some(bytes)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(
                        match super::bindings::wasi::http::types::http_error_code(&error) {
                            Some(code) => map_error_code(code),
                            None => body_error_from_text(&error.to_debug_string()),
                        },
                    );
                }
            }
        }
    }
}

fn remaining(deadline: monotonic_clock::Instant) -> Result<u64, TransportError> {
    let now = monotonic_clock::now();
    if now >= deadline {
        Err(TransportError::Timeout)
    } else {
        Ok(deadline - now)
    }
}

/// Waits until `pollable` is ready or the deadline passes.
fn wait(
    pollable: &poll::Pollable,
    deadline: monotonic_clock::Instant,
) -> Result<(), TransportError> {
    let timer = monotonic_clock::subscribe_instant(deadline);
    let ready = poll::poll(&[pollable, &timer]);
    if ready.contains(&0) {
        Ok(())
    } else {
        Err(TransportError::Timeout)
    }
}

fn start(
    request: &HttpRequest,
    deadline: monotonic_clock::Instant,
) -> Result<IncomingResponse, TransportError> {
    let url = url::Url::parse(&request.url).map_err(|_| coded("ERR_INVALID_URL", "Invalid URL"))?;
    let fields = Fields::new();
    for (name, value) in &request.headers {
        // The host forbids hop-by-hop headers; request building never emits them (C48).
        fields.append(name, value.as_bytes()).map_err(|_| {
            coded(
                "ERR_INVALID_HEADER",
                &format!("header \"{name}\" was refused by the host"),
            )
        })?;
    }
    let outgoing = OutgoingRequest::new(fields);
    let method = match request.method.as_str() {
        "POST" => Method::Post,
        "GET" => Method::Get,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match url.scheme() {
        "https" => Scheme::Https,
        _ => Scheme::Http,
    };
    let authority = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(coded("ERR_INVALID_URL", "URL must contain hostname")),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let ok = outgoing.set_method(&method).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(&authority)).is_ok()
        && outgoing.set_path_with_query(Some(&path)).is_ok();
    if !ok {
        return Err(coded(
            "ERR_INVALID_URL",
            "the host refused the request target",
        ));
    }
    let options = RequestOptions::new();
    let budget = remaining(deadline)?;
    // Hosts that honour these fail early; the guest enforces the deadline regardless.
    let _ = options.set_connect_timeout(Some(budget));
    let _ = options.set_first_byte_timeout(Some(budget));
    let _ = options.set_between_bytes_timeout(Some(budget));

    let body = outgoing
        .body()
        .map_err(|_| coded("ERR_INTERNAL", "request body already taken"))?;
    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(map_error_code)?;
    {
        let stream = body
            .write()
            .map_err(|_| coded("ERR_INTERNAL", "request body stream already taken"))?;
        for chunk in request.body.chunks(WRITE_CHUNK) {
            // A failed write (for example a TLS failure surfacing early) is reported by the
            // response future below, with the real error code.
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);

    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(map_error_code(code)),
            Some(Err(())) => return Err(coded("ERR_INTERNAL", "response already taken")),
            None => wait(&future.subscribe(), deadline)?,
        }
    }
}

fn head(
    response: IncomingResponse,
    deadline: monotonic_clock::Instant,
) -> Result<Head<WasiBody>, TransportError> {
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let body = response
        .consume()
        .map_err(|_| coded("ERR_INTERNAL", "response body already taken"))?;
    let stream = body
        .stream()
        .map_err(|_| coded("ERR_INTERNAL", "response body stream already taken"))?;
    Ok(Head {
        status,
        headers,
        body: WasiBody {
            stream,
            _body: body,
            deadline,
        },
    })
}

/// A body failure the host reported without an `error-code` (wasmtime-wasi-http 48 wraps
/// body-stream errors instead of converting them): the host's `internal-error` text
/// (`internal error: <CODE> - <message>`) still carries the convention of `wit/connector.wit`.
fn body_error_from_text(text: &str) -> TransportError {
    match text.strip_prefix("internal error: ") {
        Some(detail) => map_error_code(ErrorCode::InternalError(Some(detail.to_owned()))),
        None if text.contains("timeout") => TransportError::Timeout,
        None => TransportError::ConnectionReset,
    }
}

fn coded(code: &str, message: &str) -> TransportError {
    TransportError::Coded {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// wasi-http error codes → C74 conditions (documented in `wit/connector.wit`).
fn map_error_code(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::DnsError(_) | ErrorCode::DnsTimeout | ErrorCode::DestinationNotFound => {
            TransportError::NameNotResolved
        }
        ErrorCode::ConnectionRefused | ErrorCode::DestinationUnavailable => {
            TransportError::ConnectionRefused
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => TransportError::Timeout,
        ErrorCode::HttpResponseBodySize(_) => TransportError::TooLarge,
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => TransportError::Denied,
        ErrorCode::TlsCertificateError => coded(
            "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
            "unable to verify the first certificate",
        ),
        ErrorCode::TlsAlertReceived(alert) => coded(
            "ERR_TLS_HANDSHAKE",
            &alert
                .alert_message
                .unwrap_or_else(|| format!("TLS alert {}", alert.alert_id.unwrap_or_default())),
        ),
        ErrorCode::TlsProtocolError => coded("ERR_TLS_HANDSHAKE", "TLS protocol error"),
        ErrorCode::InternalError(Some(text)) => match text.split_once(" - ") {
            Some((code, message))
                if !code.is_empty()
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                coded(code, message)
            }
            _ => coded("ERR_HTTP", &text),
        },
        ErrorCode::ConnectionTerminated
        | ErrorCode::HttpResponseIncomplete
        | ErrorCode::HttpProtocolError => TransportError::ConnectionReset,
        other => coded("ERR_HTTP", &format!("{other:?}")),
    }
}
