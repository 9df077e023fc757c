//! Why an execution failed, typed until the edge, and the one place where Kibana's message is
//! rendered from it (C70–C75, then C32).
//!
//! Callers decide on a [`FailureKind`] (and the upstream status when a response head arrived);
//! gateways map kinds to their own statuses and hosts report them, so nothing ever parses a
//! message to recover what happened. The message itself is Kibana's `serviceMessage` (C77):
//! every constructor here builds it the same way, with the TLS rewrite of C75 applied last to
//! the text of C70–C74 and the API key redacted (C32, C121a: verbatim, base64 and
//! percent-encoded).

use crate::api_url::NotMapped;
use crate::config;
use crate::params::ParamsError;
use crate::redaction::Secrets;
use crate::request::HttpRequest;
use crate::response;
use crate::transport::{Limits, TransportError};

/// What kind of failure ended an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The sub-action or its params were refused (C34, C35); nothing was sent.
    Params,
    /// The allow-list refused the target (C44), before sending or at the host.
    Denied,
    /// The upstream answered with a status that is not a success (C70–C73).
    Http {
        /// The upstream's status code.
        status: u16,
    },
    /// No (complete) response: a Node-style code such as `ECONNREFUSED`, `ENOTFOUND`,
    /// `ECONNRESET`, a TLS code, or a redirect failure (C66, C74).
    Transport {
        /// The code, as it appears in the message.
        code: String,
    },
    /// The total (C62) or idle (C63) timeout expired.
    Timeout,
    /// A response arrived but cannot be used: too large (C65) or not the expected shape (C69).
    ResponseInvalid,
    /// A stream failed after it began: an error event or undecodable events (C95, C96, C91).
    Stream,
    /// The host or the caller cancelled the execution (C68).
    Canceled,
    /// The host's TLS stack refused the connector's client identity or trust anchors although
    /// they passed validation (C130); nothing was sent. Reported by hosts only.
    TlsRefused,
    /// The sandbox stopped the guest (a trap, a resource limit); reported by hosts only.
    Sandbox,
    /// The connector's URL cannot be mapped to the API of the sub-action (`responses`,
    /// `embeddings`); the message says why. Nothing was sent.
    NotMapped,
}

/// A failed execution (C77), typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub kind: FailureKind,
    /// The upstream's status when a response head arrived.
    pub upstream_status: Option<u16>,
    /// Kibana's `serviceMessage`.
    pub service_message: String,
    /// Kibana's `retry`: false for params failures only (C77).
    pub retry: bool,
}

impl Failure {
    /// C34, C35: a refused sub-action or invalid params (`retry: false`).
    pub(crate) fn params(error: &ParamsError, connector_id: &str, api_key: Option<&str>) -> Self {
        Failure {
            kind: FailureKind::Params,
            upstream_status: None,
            service_message: redact(&error.message(connector_id), api_key),
            retry: false,
        }
    }

    /// C44: the allow-list refuses `url`.
    pub(crate) fn denied(url: &str, api_key: Option<&str>) -> Self {
        Failure::rendered(
            FailureKind::Denied,
            None,
            format!(
                "error configuring connector action: target url \"{url}\" is not added to the Kibana config xpack.actions.allowedHosts"
            ),
            api_key,
        )
    }

    /// The connector's `apiUrl` cannot be mapped to the API the sub-action calls: nothing was
    /// sent, and trying again cannot help (`retry: false`). The message never quotes the URL.
    pub(crate) fn not_mapped(error: &NotMapped, api_key: Option<&str>) -> Self {
        Failure {
            kind: FailureKind::NotMapped,
            upstream_status: None,
            service_message: redact(&error.to_string(), api_key),
            retry: false,
        }
    }

    /// C70–C73: a response that is not a success, its body read whole.
    pub fn http(status: u16, body: &[u8], api_key: Option<&str>) -> Self {
        Failure::rendered(
            FailureKind::Http { status },
            Some(status),
            response::http_error_message(status, body),
            api_key,
        )
    }

    /// C74 (and C62–C68): no complete response for `request`. `upstream_status` is the
    /// status of a head that arrived before the failure.
    pub(crate) fn transport(
        error: &TransportError,
        request: &HttpRequest,
        limits: &Limits,
        upstream_status: Option<u16>,
        api_key: Option<&str>,
    ) -> Self {
        let (kind, code, message) = match error {
            TransportError::NameNotResolved => (
                None,
                "ENOTFOUND",
                format!(
                    "getaddrinfo ENOTFOUND {}",
                    config::url_host_name(&request.url).unwrap_or_default()
                ),
            ),
            TransportError::ConnectionRefused => (
                None,
                "ECONNREFUSED",
                format!(
                    "connect ECONNREFUSED {}:{}",
                    config::url_host_name(&request.url).unwrap_or_default(),
                    url_port(&request.url)
                ),
            ),
            TransportError::ConnectionReset => (None, "ECONNRESET", "socket hang up".to_owned()),
            TransportError::Timeout => (
                Some(FailureKind::Timeout),
                "ECONNABORTED",
                format!("timeout of {}ms exceeded", limits.total_timeout_ms),
            ),
            TransportError::IdleTimeout(ms) => (
                Some(FailureKind::Timeout),
                "ECONNABORTED",
                format!("idle timeout of {ms}ms exceeded"),
            ),
            TransportError::TooLarge => (
                Some(FailureKind::ResponseInvalid),
                "ERR_BAD_RESPONSE",
                format!(
                    "maxContentLength size of {} exceeded",
                    limits.max_body_bytes
                ),
            ),
            TransportError::Canceled => (
                Some(FailureKind::Canceled),
                "ERR_CANCELED",
                "canceled".to_owned(),
            ),
            TransportError::Denied => return Failure::denied(&request.url, api_key),
            TransportError::Coded { code, message } => (
                // A host's connection timeout comes as `ECONNABORTED` (C74 table).
                (code == "ECONNABORTED").then_some(FailureKind::Timeout),
                code.as_str(),
                message.clone(),
            ),
        };
        let kind = kind.unwrap_or_else(|| FailureKind::Transport {
            code: code.to_owned(),
        });
        Failure::coded(kind, upstream_status, code, &message, api_key)
    }

    /// A failure of C64–C68 or C74 with its code and message (`Status code: undefined. ...`).
    pub(crate) fn coded(
        kind: FailureKind,
        upstream_status: Option<u16>,
        code: &str,
        message: &str,
        api_key: Option<&str>,
    ) -> Self {
        Failure::rendered(
            kind,
            upstream_status,
            response::transport_error_message(code, message),
            api_key,
        )
    }

    /// C69: a success response whose body is not a usable completion (`message` is
    /// [`response::map_success`]'s).
    pub fn response_invalid(
        message: String,
        upstream_status: Option<u16>,
        api_key: Option<&str>,
    ) -> Self {
        Failure::rendered(
            FailureKind::ResponseInvalid,
            upstream_status,
            message,
            api_key,
        )
    }

    /// C91, C95, C96: a stream that failed after it began.
    pub(crate) fn stream(message: String, upstream_status: u16, api_key: Option<&str>) -> Self {
        Failure::rendered(FailureKind::Stream, Some(upstream_status), message, api_key)
    }

    /// A host's report that its TLS stack refused the connector's identity (C130; `message`
    /// is the TLS library's, which holds no secret).
    pub fn tls_refused(message: String) -> Self {
        Failure::by_host(FailureKind::TlsRefused, message)
    }

    /// A host's report that the sandbox stopped the guest (`message` names the limit or the
    /// trap; it holds no secret).
    pub fn sandbox(message: String) -> Self {
        Failure::by_host(FailureKind::Sandbox, message)
    }

    /// A failure the host reports itself, before or instead of any response: retryable.
    fn by_host(kind: FailureKind, message: String) -> Self {
        Failure {
            kind,
            upstream_status: None,
            service_message: message,
            retry: true,
        }
    }

    /// Every failure but params: C75 on the whole message, then C32.
    fn rendered(
        kind: FailureKind,
        upstream_status: Option<u16>,
        message: String,
        api_key: Option<&str>,
    ) -> Self {
        Failure {
            kind,
            upstream_status,
            service_message: redact(&tls_rewrite(message), api_key),
            retry: true,
        }
    }
}

/// The TLS rewrite of C75, applied last to a message of C70–C74.
fn tls_rewrite(message: String) -> String {
    if message.contains("UNABLE_TO_VERIFY_LEAF_SIGNATURE") {
        format!(
            "Certificate error: {message}. Please check if your PKI certificates are valid or adjust SSL verification mode."
        )
    } else if message.contains("ERR_TLS_CERT_ALTNAME_INVALID")
        || message.contains("ERR_TLS_HANDSHAKE")
    {
        format!(
            "TLS handshake failed: {message}. Verify server certificate hostname and CA configuration."
        )
    } else {
        message
    }
}

/// Replaces every occurrence of `api_key` in `message`, verbatim or encoded, by `[REDACTED]`
/// when the key has 8 or more characters (C32, C121a; see [`Secrets`]). Hosts redact the
/// secrets the component does not know (proxy credentials, tokens) with their own set.
fn redact(message: &str, api_key: Option<&str>) -> String {
    match api_key {
        Some(_) => Secrets::api_key(api_key).redact(message),
        None => message.to_owned(),
    }
}

/// The port of an absolute URL, with the scheme's default.
fn url_port(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of C70–C74 as the execution reports them: C75, then C32.
    fn finish(message: String, api_key: Option<&str>) -> String {
        redact(&tls_rewrite(message), api_key)
    }

    #[test]
    fn c74_transport_messages() {
        for (code, message) in [
            ("ENOTFOUND", "getaddrinfo ENOTFOUND nowhere.invalid"),
            ("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:9"),
            ("ECONNRESET", "socket hang up"),
            ("ERR_CANCELED", "canceled"),
        ] {
            assert_eq!(
                finish(response::transport_error_message(code, message), None),
                format!(
                    "Status code: undefined. Message: Unexpected API Error: {code} - {message}"
                )
            );
        }
        // C64's example.
        assert_eq!(
            response::transport_error_message("ECONNABORTED", "timeout of 200000ms exceeded"),
            "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - timeout of 200000ms exceeded"
        );
        // CERT_HAS_EXPIRED is not rewritten by C75.
        let expired =
            response::transport_error_message("CERT_HAS_EXPIRED", "certificate has expired");
        assert_eq!(tls_rewrite(expired.clone()), expired);
    }

    #[test]
    fn c75_tls_rewrite() {
        assert_eq!(
            finish(
                response::transport_error_message(
                    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
                    "unable to verify the first certificate"
                ),
                None
            ),
            "Certificate error: Status code: undefined. Message: Unexpected API Error: UNABLE_TO_VERIFY_LEAF_SIGNATURE - unable to verify the first certificate. Please check if your PKI certificates are valid or adjust SSL verification mode."
        );
        assert_eq!(
            finish(
                response::transport_error_message("ERR_TLS_HANDSHAKE", "bad"),
                None
            ),
            "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_HANDSHAKE - bad. Verify server certificate hostname and CA configuration."
        );
        assert_eq!(
            finish(
                response::transport_error_message(
                    "ERR_TLS_CERT_ALTNAME_INVALID",
                    "Hostname/IP does not match certificate's altnames: Host: h. is not in the cert's altnames: DNS:a.example, IP Address:10.0.0.1"
                ),
                None
            ),
            "TLS handshake failed: Status code: undefined. Message: Unexpected API Error: ERR_TLS_CERT_ALTNAME_INVALID - Hostname/IP does not match certificate's altnames: Host: h. is not in the cert's altnames: DNS:a.example, IP Address:10.0.0.1. Verify server certificate hostname and CA configuration."
        );
        // The leaf check wins over the others.
        assert_eq!(
            tls_rewrite("x UNABLE_TO_VERIFY_LEAF_SIGNATURE ERR_TLS_HANDSHAKE".into()),
            "Certificate error: x UNABLE_TO_VERIFY_LEAF_SIGNATURE ERR_TLS_HANDSHAKE. Please check if your PKI certificates are valid or adjust SSL verification mode."
        );
        // Any message of C70–C74, HTTP errors included.
        assert_eq!(
            finish(
                response::http_error_message(502, br#"{"error":"upstream ERR_TLS_HANDSHAKE"}"#),
                None
            ),
            "TLS handshake failed: Status code: 502. Message: API Error: Bad Gateway - upstream ERR_TLS_HANDSHAKE. Verify server certificate hostname and CA configuration."
        );
        assert_eq!(
            tls_rewrite("Status code: 400. Message: x".into()),
            "Status code: 400. Message: x"
        );
    }

    #[test]
    fn c32_redaction() {
        assert_eq!(
            redact("bad key sk-abcdefgh and sk-abcdefgh", Some("sk-abcdefgh")),
            "bad key [REDACTED] and [REDACTED]"
        );
        // Keys under 8 characters are left alone (too likely to match ordinary text).
        assert_eq!(redact("key 1234567", Some("1234567")), "key 1234567");
        assert_eq!(redact("key 12345678", Some("12345678")), "key [REDACTED]");
        // Characters, not bytes.
        assert_eq!(redact("k ééééééé", Some("ééééééé")), "k ééééééé");
        assert_eq!(redact("k éééééééé", Some("éééééééé")), "k [REDACTED]");
        assert_eq!(redact("m", None), "m");
        assert_eq!(
            finish(
                response::http_error_message(
                    401,
                    br#"{"error":{"message":"Incorrect API key provided: sk-live-123456789"}}"#
                ),
                Some("sk-live-123456789")
            ),
            "Status code: 401. Message: Unauthorized API Error - Incorrect API key provided: [REDACTED]"
        );
        let message = finish(
            response::transport_error_message("ERR_TLS_HANDSHAKE", "key=sk-live-123456789"),
            Some("sk-live-123456789"),
        );
        assert!(!message.contains("sk-live"), "{message}");
    }

    // C121a: the API key is redacted in its base64 and percent-encoded forms too.
    #[test]
    fn c121a_api_key_encoded_forms_are_redacted() {
        use base64::Engine;
        let key = "sk-live/123456789";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let body = format!(
            r#"{{"error":{{"message":"seen {b64} and sk%2Dlive%2F123456789 and sk-live%2F123456789"}}}}"#
        );
        let f = Failure::http(401, body.as_bytes(), Some(key));
        assert_eq!(
            f.service_message,
            "Status code: 401. Message: Unauthorized API Error - seen [REDACTED] and [REDACTED] and [REDACTED]"
        );
    }

    // C62–C68, C74: the kind is decided where the failure happens, never read back from the
    // message.
    #[test]
    fn c74_transport_failures_are_typed() {
        let request = HttpRequest {
            method: "POST".into(),
            url: "https://api.example:8443/v1".into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let limits = Limits {
            total_timeout_ms: 5,
            max_body_bytes: 10,
        };
        let typed =
            |e: TransportError, status| Failure::transport(&e, &request, &limits, status, None);
        let refused = typed(TransportError::ConnectionRefused, None);
        assert_eq!(
            refused.kind,
            FailureKind::Transport {
                code: "ECONNREFUSED".into()
            }
        );
        assert!(
            refused
                .service_message
                .ends_with("connect ECONNREFUSED api.example:8443")
        );
        assert_eq!(
            typed(TransportError::Timeout, None).kind,
            FailureKind::Timeout
        );
        assert_eq!(
            typed(TransportError::IdleTimeout(3), Some(200)).kind,
            FailureKind::Timeout
        );
        let host_timeout = TransportError::Coded {
            code: "ECONNABORTED".into(),
            message: "connect timeout".into(),
        };
        assert_eq!(typed(host_timeout, None).kind, FailureKind::Timeout);
        let large = typed(TransportError::TooLarge, Some(200));
        assert_eq!(large.kind, FailureKind::ResponseInvalid);
        assert_eq!(large.upstream_status, Some(200));
        assert_eq!(
            typed(TransportError::Canceled, None).kind,
            FailureKind::Canceled
        );
        let denied = typed(TransportError::Denied, None);
        assert_eq!(denied.kind, FailureKind::Denied);
        assert!(denied.retry);
        let tls = typed(
            TransportError::Coded {
                code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE".into(),
                message: "unable to verify the first certificate".into(),
            },
            None,
        );
        assert_eq!(
            tls.kind,
            FailureKind::Transport {
                code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE".into()
            }
        );
        assert!(
            tls.service_message.starts_with("Certificate error: "),
            "C75 applied"
        );
        let http = Failure::http(429, br#"{"error":{"message":"slow"}}"#, None);
        assert_eq!(http.kind, FailureKind::Http { status: 429 });
        assert_eq!(http.upstream_status, Some(429));
    }
}
