//! The forward proxy of the deployment settings (C129): which requests go through it, what is
//! sent to it, and the `CONNECT` tunnel that carries https requests.
//!
//! `https` targets get a tunnel (`CONNECT host:port`) with the connector's TLS (C122–C127)
//! inside it, so the proxy sees neither the request nor the credentials; `http` targets are
//! sent to the proxy in absolute form. `Proxy-Authorization` (from the user information of
//! `proxyUrl`) and `proxyHeaders` go to the proxy only: on the `CONNECT` request for a tunnel,
//! on the request itself in absolute form. None of them is ever shown: `Debug` redacts them and
//! no error message contains them.

use crate::outbound::{Io, error_from_hyper};
use crate::settings::Settings;
use crate::tls::Verification;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::sync::Arc;
use wasmtime_wasi_http::Error;

/// `proxyUrl` with what is sent along with it. Two equal endpoints are interchangeable, so
/// connections made through one may be reused for the other (the pool key includes it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyEndpoint {
    https: bool,
    /// URL host form (IPv6 in brackets).
    host: String,
    port: u16,
    /// `Basic base64(user:password)` from the URL's user information, marked sensitive.
    authorization: Option<HeaderValue>,
    /// `proxyHeaders`, values marked sensitive.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `ssl.proxyVerificationMode`, for an https proxy (checked against the default roots).
    verification: Verification,
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("scheme", &if self.https { "https" } else { "http" })
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| (name.as_str(), "[REDACTED]"))
                    .collect::<Vec<_>>(),
            )
            .field("verification", &self.verification)
            .finish()
    }
}

impl ProxyEndpoint {
    /// True for an `https://` proxy (TLS to the proxy itself).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The proxy's host: a name, an IPv4 address or a bracketed IPv6 address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's host without IPv6 brackets, for name resolution and TLS.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The proxy's port (the scheme's default when the URL has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How the certificate of an https proxy is checked.
    pub fn verification(&self) -> Verification {
        self.verification
    }

    /// Adds `Proxy-Authorization` and `proxyHeaders` to a request meant for the proxy.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(value) = &self.authorization {
            headers.insert(http::header::PROXY_AUTHORIZATION, value.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Asks the proxy, over `io`, for a tunnel to `authority` (`host:port`, IPv6 in brackets).
    pub async fn open_tunnel(&self, io: Box<dyn Io>, authority: &str) -> Result<Tunnel, Error> {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| error_from_hyper(&e))?;
        // The connection future performs the I/O and hands the socket over after the 2xx.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("proxy connection ended: {e}");
            }
        });
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(authority)
            .body(http_body_util::Empty::new())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let host = HeaderValue::from_str(authority).map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(http::header::HOST, host);
        self.add_headers(request.headers_mut());
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| error_from_hyper(&e))?;
        if !response.status().is_success() {
            tracing::debug!(status = %response.status(), "the proxy refused the tunnel");
            return Ok(Tunnel::Refused(response));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| error_from_hyper(&e))?;
        Ok(Tunnel::Open(Box::new(TokioIo::new(upgraded))))
    }
}

/// The outcome of a `CONNECT`.
pub enum Tunnel {
    /// The tunnel is open: bytes written here reach the target.
    Open(Box<dyn Io>),
    /// The proxy answered with a non-2xx status (e.g. 407); that answer is the response.
    Refused(http::Response<hyper::body::Incoming>),
}

/// `proxyUrl` and the host lists that decide which requests use it (C129).
#[derive(Clone, Debug)]
pub struct Proxy {
    endpoint: Arc<ProxyEndpoint>,
    bypass_hosts: Option<Vec<String>>,
    only_hosts: Option<Vec<String>>,
}

impl Proxy {
    /// The proxy of `settings`, or `None` without `proxyUrl`. The error names the setting and
    /// never repeats its value (it may hold a password).
    pub fn from_settings(settings: &Settings) -> Result<Option<Proxy>, String> {
        let Some(text) = &settings.proxy_url else {
            return Ok(None);
        };
        let bad_url = || {
            "[proxyUrl]: expected an http or https URL with a host, such as \"http://proxy.example.com:3128\"".to_owned()
        };
        let url = url::Url::parse(text).map_err(|_| bad_url())?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad_url()),
        };
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            _ => return Err(bad_url()),
        };
        let port = url.port_or_known_default().ok_or_else(bad_url)?;
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |part: &str| {
                percent_decode(part).ok_or_else(|| {
                    "[proxyUrl]: the user information is not valid percent-encoded UTF-8".to_owned()
                })
            };
            let user = decode(url.username())?;
            let password = decode(url.password().unwrap_or_default())?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| "[proxyUrl]: invalid user information".to_owned())?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut headers = Vec::new();
        for (name, value) in &settings.proxy_headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("[proxyHeaders.{name}]: invalid header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("[proxyHeaders.{name}]: invalid header value"))?;
            value.set_sensitive(true);
            headers.push((header, value));
        }
        Ok(Some(Proxy {
            endpoint: Arc::new(ProxyEndpoint {
                https,
                host,
                port,
                authorization,
                headers,
                verification: settings.proxy_verification,
            }),
            bypass_hosts: settings.proxy_bypass_hosts.clone(),
            only_hosts: settings.proxy_only_hosts.clone(),
        }))
    }

    /// True when a request to `host` (a URL host) goes through the proxy: unless
    /// `proxyBypassHosts` lists it, or `proxyOnlyHosts` is set without it. Host names compare
    /// case-insensitively; IPv6 brackets are optional in the lists.
    pub fn applies_to(&self, host: &str) -> bool {
        let bare = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
        let host = bare(host);
        let listed = |list: &[String]| list.iter().any(|e| bare(e).eq_ignore_ascii_case(&host));
        match (&self.bypass_hosts, &self.only_hosts) {
            (Some(bypass), _) => !listed(bypass),
            (None, Some(only)) => listed(only),
            (None, None) => true,
        }
    }

    /// Where the proxy is and what it is sent.
    pub fn endpoint(&self) -> &Arc<ProxyEndpoint> {
        &self.endpoint
    }
}

/// RFC 3986 percent-decoding into UTF-8; `None` for a broken escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proxy(settings: serde_json::Value) -> Proxy {
        Proxy::from_settings(&Settings::from_json(&settings).unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn c129_basic_credentials_from_user_information() {
        let p = proxy(json!({"proxyUrl": "http://us%40er:p%3Ass@Proxy.Example:3128"}));
        let mut headers = HeaderMap::new();
        p.endpoint().add_headers(&mut headers);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("us@er:p:ss")
        );
        assert_eq!(
            headers[http::header::PROXY_AUTHORIZATION],
            expected.as_str()
        );
        assert!(headers[http::header::PROXY_AUTHORIZATION].is_sensitive());
        assert_eq!(p.endpoint().host(), "proxy.example");
        assert_eq!(p.endpoint().port(), 3128);
        assert!(!p.endpoint().is_https());
        let https = proxy(json!({"proxyUrl": "https://[::1]"}));
        assert_eq!(https.endpoint().bare_host(), "::1");
        assert_eq!(https.endpoint().port(), 443);
    }

    #[test]
    fn c129_debug_and_errors_never_show_credentials() {
        let settings = Settings::from_json(&json!({
            "proxyUrl": "http://alice:hunter2-secret@proxy.example:3128/",
            "proxyHeaders": {"X-Proxy-Token": "tok-secret-value"}
        }))
        .unwrap();
        let shown = format!("{settings:?} {:?}", Proxy::from_settings(&settings));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        assert!(!shown.contains("tok-secret-value"), "{shown}");
        assert!(shown.contains("proxy.example"), "{shown}");
        assert!(shown.contains("x-proxy-token"), "{shown}");
        for bad in [
            json!({"proxyUrl": "socks5://alice:hunter2-secret@proxy.example"}),
            json!({"proxyUrl": "alice:hunter2-secret"}),
            json!({"proxyUrl": "http://alice:hunter2-secret%ZZ@proxy.example"}),
        ] {
            let e = Settings::from_json(&bad).unwrap_err();
            assert!(e.starts_with("[proxyUrl]: "), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = Settings::from_json(&json!({
            "proxyUrl": "http://proxy.example", "proxyHeaders": {"X-Token": "tok-secret\nvalue"}
        }))
        .unwrap_err();
        assert_eq!(e, "[proxyHeaders.X-Token]: invalid header value");
    }

    #[test]
    fn c129_bypass_and_only_hosts() {
        let all = proxy(json!({"proxyUrl": "http://p"}));
        assert!(all.applies_to("api.openai.com"));
        let bypass =
            proxy(json!({"proxyUrl": "http://p", "proxyBypassHosts": ["Internal.Example", "::1"]}));
        assert!(!bypass.applies_to("internal.example"));
        assert!(!bypass.applies_to("[::1]"));
        assert!(bypass.applies_to("api.openai.com"));
        let only = proxy(json!({"proxyUrl": "http://p", "proxyOnlyHosts": ["api.openai.com"]}));
        assert!(only.applies_to("API.openai.com"));
        assert!(!only.applies_to("internal.example"));
    }
}
