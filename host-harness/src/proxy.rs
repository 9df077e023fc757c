//! The forward proxy of the deployment settings (C129): which requests go through it, what is
//! sent to it, and the `CONNECT` tunnel that carries https requests.
//!
//! `https` targets get a tunnel (`CONNECT host:port`) with the connector's TLS (C122–C127)
//! inside it, so the proxy sees neither the request nor the credentials; `http` targets are
//! sent to the proxy in absolute form. `Proxy-Authorization` (from the user information of
//! `proxyUrl`) and `proxyHeaders` go to the proxy only: on the `CONNECT` request for a tunnel,
//! on the request itself in absolute form. None of them is ever shown: `Debug` redacts them and
//! no error message contains them.

use crate::host_name;
use crate::tls::Verification;
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use openai_connector::redaction::Secrets;
use std::fmt;
use std::sync::Arc;

/// `proxyUrl` with what is sent along with it. Two equal endpoints are interchangeable, so
/// connections made through one may be reused for the other (the pool key includes it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProxyEndpoint {
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
    pub(crate) fn is_https(&self) -> bool {
        self.https
    }

    /// The proxy's host without IPv6 brackets, for name resolution and TLS.
    pub(crate) fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The proxy's port (the scheme's default when the URL has none).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// How the certificate of an https proxy is checked.
    pub(crate) fn verification(&self) -> Verification {
        self.verification
    }

    /// Adds `Proxy-Authorization` and `proxyHeaders` to a request meant for the proxy.
    pub(crate) fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(value) = &self.authorization {
            headers.insert(http::header::PROXY_AUTHORIZATION, value.clone());
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The proxy settings as written (C129): `proxyUrl`, `proxyHeaders`,
/// `ssl.proxyVerificationMode`, `proxyBypassHosts`, `proxyOnlyHosts`.
pub(crate) struct ProxyConfig<'a> {
    /// `proxyUrl`.
    pub(crate) url: &'a str,
    /// `proxyHeaders`.
    pub(crate) headers: &'a [(String, String)],
    /// `ssl.proxyVerificationMode`.
    pub(crate) verification: Verification,
    /// `proxyBypassHosts`.
    pub(crate) bypass_hosts: Option<Vec<String>>,
    /// `proxyOnlyHosts`.
    pub(crate) only_hosts: Option<Vec<String>>,
}

/// `proxyUrl` and the host lists that decide which requests use it (C129).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Proxy {
    endpoint: Arc<ProxyEndpoint>,
    bypass_hosts: Option<Vec<String>>,
    only_hosts: Option<Vec<String>>,
    /// What no message may show (C121a): the password, `user:password` (whose base64 is the
    /// `Proxy-Authorization` token) and the `proxyHeaders` values.
    secrets: Secrets,
}

impl Proxy {
    /// The proxy of `config`. The error names the setting and never repeats its value (it may
    /// hold a password).
    pub(crate) fn new(config: ProxyConfig<'_>) -> Result<Proxy, String> {
        let text = config.url;
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
        let mut secrets = Secrets::new();
        let authorization = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |part: &str| {
                let invalid =
                    || "[proxyUrl]: the user information is not valid percent-encoded UTF-8";
                // `percent-encoding` passes a broken escape (`%ZZ`) through; RFC 3986 does not.
                let escapes_valid = part.split('%').skip(1).all(|after| {
                    after.len() >= 2 && after.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit)
                });
                if !escapes_valid {
                    return Err(invalid().to_owned());
                }
                percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map(std::borrow::Cow::into_owned)
                    .map_err(|_| invalid().to_owned())
            };
            let user = decode(url.username())?;
            let password = decode(url.password().unwrap_or_default())?;
            secrets.add(&password);
            // As written in the URL, escapes and all.
            secrets.add(url.password().unwrap_or_default());
            secrets.add(&format!("{user}:{password}"));
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| "[proxyUrl]: invalid user information".to_owned())?;
            value.set_sensitive(true);
            Some(value)
        };
        let mut headers = Vec::new();
        for (name, value_text) in config.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("[proxyHeaders.{name}]: invalid header name"))?;
            let mut value = HeaderValue::from_str(value_text)
                .map_err(|_| format!("[proxyHeaders.{name}]: invalid header value"))?;
            value.set_sensitive(true);
            headers.push((header, value));
            secrets.add(value_text);
            // The credentials of `<scheme> <credentials>` may be echoed without the scheme.
            if let Some((_, credentials)) = value_text.trim().split_once(' ') {
                secrets.add(credentials.trim());
            }
        }
        Ok(Proxy {
            endpoint: Arc::new(ProxyEndpoint {
                https,
                host,
                port,
                authorization,
                headers,
                verification: config.verification,
            }),
            bypass_hosts: config.bypass_hosts,
            only_hosts: config.only_hosts,
            secrets,
        })
    }

    /// The proxy's secrets, for redaction (C121a).
    pub(crate) fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// True when a request to `host` (a URL host) goes through the proxy: unless
    /// `proxyBypassHosts` lists it, or `proxyOnlyHosts` is set without it. Host names compare
    /// case-insensitively and without one trailing dot ([`host_name::same_host`]); IPv6
    /// brackets are optional in the lists.
    pub(crate) fn applies_to(&self, host: &str) -> bool {
        let bare = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
        let host = bare(host);
        let listed = |list: &[String]| list.iter().any(|e| host_name::same_host(&bare(e), &host));
        match (&self.bypass_hosts, &self.only_hosts) {
            (Some(bypass), _) => !listed(bypass),
            (None, Some(only)) => listed(only),
            (None, None) => true,
        }
    }

    /// Where the proxy is and what it is sent.
    pub(crate) fn endpoint(&self) -> &Arc<ProxyEndpoint> {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use serde_json::json;

    fn proxy(settings: serde_json::Value) -> Proxy {
        Settings::from_json(&settings).unwrap().proxy.unwrap()
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
        assert_eq!(p.endpoint().host, "proxy.example");
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
        let shown = format!("{settings:?} {:?}", settings.proxy);
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

    // C121a: the proxy's secrets in every form a proxy may echo them in; short ones are not
    // secrets (C32's length rule).
    #[test]
    fn c121a_proxy_secrets_cover_the_password_credentials_and_header_values() {
        let p = proxy(json!({
            "proxyUrl": "http://alice:hunter2%2Fsecret@proxy.example:3128/",
            "proxyHeaders": {"X-Proxy-Token": "tok-secret-value", "X-Auth": "Bearer bearer-secret",
                             "X-Short": "short"}
        }));
        let mut headers = HeaderMap::new();
        p.endpoint().add_headers(&mut headers);
        let sent = headers[http::header::PROXY_AUTHORIZATION].to_str().unwrap();
        let echo = format!(
            "{sent} | hunter2/secret | hunter2%2Fsecret | alice:hunter2/secret | tok-secret-value | {} | bearer-secret | short",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("tok-secret-value")
        );
        assert_eq!(
            p.secrets().redact(&echo),
            "Basic [REDACTED] | [REDACTED] | [REDACTED] | [REDACTED] | [REDACTED] | [REDACTED] | [REDACTED] | short"
        );
        assert!(
            proxy(json!({"proxyUrl": "http://proxy.example"}))
                .secrets()
                .is_empty()
        );
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

    // C129 with C67 (amended): list entries match with or without one trailing dot.
    #[test]
    fn c129_c67_host_lists_ignore_one_trailing_dot() {
        let bypass = proxy(
            json!({"proxyUrl": "http://p", "proxyBypassHosts": ["internal.example", "localhost."]}),
        );
        assert!(!bypass.applies_to("internal.example."));
        assert!(!bypass.applies_to("localhost"));
        assert!(!bypass.applies_to("localhost."));
        assert!(bypass.applies_to("localhost.."));
        let only = proxy(json!({"proxyUrl": "http://p", "proxyOnlyHosts": ["api.openai.com"]}));
        assert!(only.applies_to("api.openai.com."));
        assert!(!only.applies_to("internal.example."));
    }
}
