//! hyper's failures as the wasi-http errors the guest sees, keeping TLS causes (C74).

use wasmtime_wasi_http::Error;

/// The rustls error inside a failure, if TLS is what failed (an alert, a bad record, ...).
fn tls_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error's `source` skips the error it wraps: look inside explicitly.
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// The C74 text of a TLS failure that surfaced after the handshake, e.g. a server's
/// `certificate required` alert, which TLS 1.3 delivers on the first read.
pub(super) fn tls_failure_text(e: &hyper::Error) -> Option<String> {
    tls_cause(e).map(|tls| format!("ERR_TLS_HANDSHAKE - {tls}"))
}

/// Maps a hyper failure to the wasi-http error the guest sees; a TLS failure keeps rustls's
/// description (C74: `ERR_TLS_HANDSHAKE`).
pub(super) fn error_from_hyper(e: &hyper::Error) -> Error {
    if let Some(text) = tls_failure_text(e) {
        Error::InternalError(Some(text))
    } else if e.is_timeout() {
        Error::ConnectionReadTimeout
    } else if e.is_parse() || e.is_parse_status() {
        Error::HttpProtocolError
    } else {
        Error::ConnectionTerminated
    }
}
