//! What an execution's outgoing requests may do, and sending one: the allow-list and the
//! address checks, the TLS profile of the target, the proxy route, the timeouts, and a pooled
//! connection or a new one.

use super::body::{Reuse, TimedBody};
use super::cancel::Cancel;
use super::connect::{Dialer, Opened};
use super::error::error_from_hyper;
use super::ssrf;
use crate::pool::{ConnectionPool, PoolKey};
use crate::proxy::Proxy;
use crate::settings::{CustomHostSettings, Settings, custom_host};
use crate::tls::{TlsProfile, Verification};
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Connect timeout when the guest sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// First-byte and between-bytes timeout when the guest sets none.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// What an execution's outgoing requests may do and how they are made.
#[derive(Debug, Default)]
pub struct OutboundPolicy {
    /// Host names that may be called; `*` allows all (C11 step 4, C12). Empty denies all.
    allowed_hosts: Vec<String>,
    /// The connector's own TLS settings, when they apply (C122).
    connector_tls: Option<TlsProfile>,
    /// Global `ssl.verificationMode`.
    default_verification: Verification,
    /// `customHostSettings` (C128).
    custom_hosts: Vec<CustomHostSettings>,
    /// `denyPrivateNetworks`.
    deny_private_networks: bool,
    /// `proxyUrl` and the hosts it applies to (C129).
    proxy: Option<Proxy>,
    /// Keep-alive connections and rustls configurations shared across executions; without
    /// one, every request opens its own connection.
    pool: Option<Arc<ConnectionPool>>,
    /// rustls configurations built so far, by profile (when there is no pool).
    configs: Mutex<HashMap<TlsProfile, Arc<rustls::ClientConfig>>>,
    /// Cancels this execution's requests.
    cancel: Cancel,
}

impl OutboundPolicy {
    /// A policy that refuses every request (for calls that must not do I/O).
    pub fn deny_all() -> Self {
        OutboundPolicy::default()
    }

    /// The policy for one connector's execution under `settings`; `connector_tls` is the
    /// profile the component returned from validation. Connections are not reused unless a
    /// pool is given with [`with_pool`](Self::with_pool).
    pub fn for_connector(settings: &Settings, connector_tls: Option<TlsProfile>) -> Self {
        OutboundPolicy {
            allowed_hosts: settings.deployment.allowed_hosts.clone(),
            connector_tls,
            default_verification: settings.verification,
            custom_hosts: settings.custom_hosts.clone(),
            deny_private_networks: settings.deny_private_networks,
            proxy: settings.proxy.clone(),
            pool: None,
            configs: Mutex::default(),
            cancel: Cancel::default(),
        }
    }

    /// Cancels this policy's requests through `cancel` (C68).
    pub(crate) fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// Takes connections from, and returns them to, `pool` (`None`: a new connection per
    /// request).
    pub(crate) fn with_pool(mut self, pool: Option<Arc<ConnectionPool>>) -> Self {
        self.pool = pool;
        self
    }

    /// The TLS profile for a request to `host:port` over https (`host` as the URL has it, an
    /// IPv6 address in brackets): verification mode by C123, trust roots by C124, client
    /// identity by C127.
    fn tls_profile_for(&self, host: &str, port: u16) -> TlsProfile {
        let custom = custom_host(&self.custom_hosts, "https", host, port);
        let verification = match (&self.connector_tls, custom) {
            (Some(connector), _) => connector.verification,
            (None, Some(c)) => c.verification.unwrap_or(self.default_verification),
            (None, None) => self.default_verification,
        };
        let connector_ca = self
            .connector_tls
            .as_ref()
            .map(|c| &c.ca_der)
            .filter(|ca| !ca.is_empty());
        let ca_der = connector_ca
            .or(custom.map(|c| &c.ca_der))
            .cloned()
            .unwrap_or_default();
        TlsProfile {
            verification,
            ca_der,
            identity: self.connector_tls.as_ref().and_then(|c| c.identity.clone()),
        }
    }

    fn client_config(&self, profile: TlsProfile) -> Result<Arc<rustls::ClientConfig>, Error> {
        let refused =
            |e: anyhow::Error| Error::InternalError(Some(format!("ERR_TLS_HANDSHAKE - {e:#}")));
        if let Some(pool) = &self.pool {
            return pool.client_config(&profile).map_err(refused);
        }
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = configs.get(&profile) {
            return Ok(config.clone());
        }
        let config = Arc::new(profile.client_config().map_err(refused)?);
        configs.insert(profile, config.clone());
        Ok(config)
    }

    /// Resolves once this policy's execution is cancelled.
    pub(crate) fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.cancel.cancelled()
    }

    /// Sends `request`, returning the response head and a streaming body.
    pub async fn send(
        self: Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<http::Response<WasiBody>, Error> {
        let uri = request.uri().clone();
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(Error::HttpProtocolError),
        };
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let host = authority.host().to_ascii_lowercase();
        // C66: every request is checked, so every redirect is too.
        if !ssrf::host_allowed(&self.allowed_hosts, &host) {
            tracing::warn!(%host, "refused: host is not in allowedHosts");
            return Err(Error::HttpRequestDenied);
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();

        let connect_timeout = options
            .and_then(|o| o.connect_timeout)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let first_byte_timeout = options
            .and_then(|o| o.first_byte_timeout)
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        let between_bytes_timeout = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(DEFAULT_READ_TIMEOUT)
            .max(Duration::from_nanos(1));

        let proxy = self
            .proxy
            .as_ref()
            .filter(|proxy| proxy.applies_to(&host))
            .map(|proxy| proxy.endpoint().clone());
        if self.deny_private_networks && proxy.is_some() {
            // The proxy resolves names; what can be judged here is an address or a loopback
            // name in the URL itself.
            ssrf::refuse_non_public_name(&bare_host)?;
        }

        if proxy.is_some() && !https {
            // C129: absolute form to the proxy, which gets its headers on the request itself.
            if let Some(endpoint) = &proxy {
                endpoint.add_headers(request.headers_mut());
            }
        } else {
            // The request line carries the origin form; the authority travels in `Host`.
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            *request.uri_mut() =
                http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
        }

        // C128 compares URL hosts, IPv6 in brackets: `host`, not `bare_host`.
        let tls = https.then(|| self.tls_profile_for(&host, port));
        let key = PoolKey {
            https,
            host,
            port,
            tls,
            proxy,
        };

        if let Some(pool) = &self.pool {
            while let Some(mut sender) = pool.checkout(&key).await {
                match tokio::time::timeout(first_byte_timeout, sender.try_send_request(request))
                    .await
                {
                    Err(_) => return Err(Error::ConnectionReadTimeout),
                    Ok(Ok(response)) => {
                        return Ok(self.response(response, between_bytes_timeout, key, sender));
                    }
                    Ok(Err(mut e)) => match e.take_message() {
                        // The connection closed before the request went out: try another.
                        Some(unsent) => request = unsent,
                        None => return Err(error_from_hyper(&e.into_error())),
                    },
                }
            }
        }

        let client_config = |profile| self.client_config(profile);
        let dialer = Dialer {
            deny_private_networks: self.deny_private_networks,
            client_config: &client_config,
        };
        let opened = tokio::time::timeout(connect_timeout, dialer.open(&key, &bare_host))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        let mut sender = match opened {
            Opened::Connection(sender) => sender,
            Opened::TunnelRefused(response) => {
                // Like Kibana's proxy agent: the proxy's answer (e.g. 407) is the response. Only
                // its status and body are kept: a proxy's `Location` must not steer the request.
                let (parts, incoming) = response.into_parts();
                let mut refused = http::Response::new(
                    TimedBody::new(
                        incoming,
                        between_bytes_timeout,
                        None,
                        Box::pin(self.cancel.cancelled()),
                    )
                    .boxed_unsync(),
                );
                *refused.status_mut() = parts.status;
                for name in [http::header::CONTENT_TYPE, http::header::CONTENT_LENGTH] {
                    if let Some(value) = parts.headers.get(&name) {
                        refused.headers_mut().insert(name, value.clone());
                    }
                }
                return Ok(refused);
            }
        };
        if let Some(pool) = &self.pool {
            pool.note_opened();
        }
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(|e| error_from_hyper(&e))?;
        Ok(self.response(response, between_bytes_timeout, key, sender))
    }

    /// The response with a body that enforces the between-bytes timeout and, read to the end,
    /// returns the connection to the pool.
    fn response(
        &self,
        response: http::Response<hyper::body::Incoming>,
        between_bytes_timeout: Duration,
        key: PoolKey,
        sender: SendRequest<WasiBody>,
    ) -> http::Response<WasiBody> {
        let reuse = self.pool.clone().map(|pool| Reuse { pool, key, sender });
        let cancelled = Box::pin(self.cancel.cancelled());
        response.map(|incoming| {
            TimedBody::new(incoming, between_bytes_timeout, reuse, cancelled).boxed_unsync()
        })
    }
}
