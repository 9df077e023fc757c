//! The wasi-http `send_request` hook: transport policy for the component's outgoing requests.
//!
//! The component decides *what* to send; this module decides *whether and how*: the allow-list
//! is checked before any byte leaves (C11, C44, C66), names are resolved (and, with
//! `denyPrivateNetworks`, non-public addresses refused after resolution), connections made with
//! the connect timeout, directly or through the proxy (C129), TLS set up from the connector's
//! profile (section 9), keep-alive connections reused from the process's [`ConnectionPool`], and
//! failures reported to the guest as wasi-http error codes that carry C74's Node-style codes.

use crate::pool::{ConnectionPool, PoolKey};
use crate::proxy::{Proxy, ProxyEndpoint, Tunnel};
use crate::settings::{CustomHostSettings, Settings};
use crate::tls::{TlsProfile, Verification, describe_tls_error};
use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Connect timeout when the guest sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// First-byte and between-bytes timeout when the guest sets none.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether requests go through a proxy.
#[derive(Debug, Default)]
enum ProxyRoute {
    /// No `proxyUrl`.
    #[default]
    Direct,
    /// `proxyUrl` and its host lists.
    Through(Proxy),
    /// `proxyUrl` is set but unusable (settings built without `Settings::from_json`): every
    /// request fails rather than silently bypassing the proxy.
    Unusable,
}

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
    fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
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
fn canceled() -> Error {
    Error::InternalError(Some("ERR_CANCELED - canceled".to_owned()))
}

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
    /// `proxyUrl` and friends (C129).
    proxy: ProxyRoute,
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
        let proxy = match Proxy::from_settings(settings) {
            Ok(None) => ProxyRoute::Direct,
            Ok(Some(proxy)) => ProxyRoute::Through(proxy),
            Err(_) => ProxyRoute::Unusable,
        };
        OutboundPolicy {
            allowed_hosts: settings.allowed_hosts.clone(),
            connector_tls,
            default_verification: settings.verification,
            custom_hosts: settings.custom_hosts.clone(),
            deny_private_networks: settings.deny_private_networks,
            proxy,
            pool: None,
            configs: Mutex::default(),
            cancel: Cancel::default(),
        }
    }

    /// Cancels this policy's requests through `cancel` (C68).
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// Takes connections from, and returns them to, `pool` (`None`: a new connection per
    /// request).
    pub fn with_pool(mut self, pool: Option<Arc<ConnectionPool>>) -> Self {
        self.pool = pool;
        self
    }

    /// True when `host` (a URL host, IPv6 in brackets) may be called (C12: case-insensitive,
    /// ports play no part).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|entry| entry == "*" || entry.eq_ignore_ascii_case(host))
    }

    /// The TLS profile for a request to `host:port` over https: verification mode by C123,
    /// trust roots by C124, client identity by C127.
    pub fn tls_profile_for(&self, host: &str, port: u16) -> TlsProfile {
        let custom = self
            .custom_hosts
            .iter()
            .find(|c| c.scheme == "https" && c.host.eq_ignore_ascii_case(host) && c.port == port);
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
        if !self.host_allowed(&host) {
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

        let proxy = match &self.proxy {
            ProxyRoute::Direct => None,
            ProxyRoute::Through(proxy) => proxy.applies_to(&host).then(|| proxy.endpoint().clone()),
            ProxyRoute::Unusable => {
                return Err(Error::InternalError(Some(
                    "ERR_PROXY - proxyUrl is set but cannot be used; no request is sent around the proxy".to_owned(),
                )));
            }
        };
        if self.deny_private_networks && proxy.is_some() {
            // The proxy resolves names; what can be judged here is an address or a loopback
            // name in the URL itself.
            refuse_non_public_name(&bare_host)?;
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

        let tls = https.then(|| self.tls_profile_for(&bare_host, port));
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

        let opened = tokio::time::timeout(connect_timeout, self.open(&key, &bare_host))
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

    /// Opens a connection for `key`: TCP (to the target or the proxy), TLS to an https proxy,
    /// the tunnel for an https target behind a proxy, then TLS to an https target.
    async fn open(&self, key: &PoolKey, bare_host: &str) -> Result<Opened, Error> {
        let io: Box<dyn Io> = match &key.proxy {
            None => {
                Box::new(connect_target(bare_host, key.port, self.deny_private_networks).await?)
            }
            Some(proxy) => {
                let mut io: Box<dyn Io> = Box::new(connect_proxy(proxy).await?);
                if proxy.is_https() {
                    // C129: the proxy's certificate is checked against the default roots.
                    let config = self.client_config(TlsProfile {
                        verification: proxy.verification(),
                        ca_der: Vec::new(),
                        identity: None,
                    })?;
                    io = Box::new(tls_connect(config, proxy.bare_host(), io).await?);
                }
                if key.https {
                    match proxy
                        .open_tunnel(io, &format!("{}:{}", key.host, key.port))
                        .await?
                    {
                        Tunnel::Open(tunnel) => tunnel,
                        Tunnel::Refused(response) => return Ok(Opened::TunnelRefused(response)),
                    }
                } else {
                    io
                }
            }
        };
        let io: Box<dyn Io> = match &key.tls {
            Some(profile) => {
                let config = self.client_config(profile.clone())?;
                Box::new(tls_connect(config, bare_host, io).await?)
            }
            None => io,
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| error_from_hyper(&e))?;
        // hyper's connection future performs the I/O; it must be driven or the request hangs.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(Opened::Connection(sender))
    }
}

/// A new connection, or the proxy's refusal to open the tunnel for one.
enum Opened {
    Connection(SendRequest<WasiBody>),
    TunnelRefused(http::Response<hyper::body::Incoming>),
}

/// A byte stream hyper can run HTTP/1.1 over: TCP, TLS, or a proxy tunnel (nested as needed).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// TLS over `io` with `config`; `host` is the SNI name (none for IP addresses) and the name
/// checked in the certificate. Failures carry C74's codes.
async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    io: Box<dyn Io>,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, Error> {
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name, io)
        .await
        .map_err(|e| {
            let (code, message) = describe_tls_error(&e, host);
            tracing::debug!(%host, code, "TLS handshake failed");
            Error::InternalError(Some(format!("{code} - {message}")))
        })
}

/// Why no TCP connection was made.
#[derive(Debug)]
enum ConnectError {
    /// The name did not resolve.
    NotFound,
    /// Every address refused.
    Refused,
    /// Every address failed otherwise (unreachable, ...).
    Unavailable,
}

impl ConnectError {
    /// The error for a connection to the target: the component names the target (C74).
    fn into_error(self) -> Error {
        match self {
            ConnectError::NotFound => Error::DnsError {
                rcode: Some("ENOTFOUND".to_owned()),
                info_code: None,
            },
            ConnectError::Refused => Error::ConnectionRefused,
            ConnectError::Unavailable => Error::DestinationUnavailable,
        }
    }

    /// The error for a connection to the proxy, naming the proxy as Node does.
    fn into_proxy_error(self, proxy: &ProxyEndpoint) -> Error {
        let text = match self {
            ConnectError::NotFound => {
                format!("ENOTFOUND - getaddrinfo ENOTFOUND {}", proxy.bare_host())
            }
            ConnectError::Refused | ConnectError::Unavailable => format!(
                "ECONNREFUSED - connect ECONNREFUSED {}:{}",
                proxy.bare_host(),
                proxy.port()
            ),
        };
        Error::InternalError(Some(text))
    }
}

/// The addresses of `host`.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| ConnectError::NotFound)?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NotFound);
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that accepts.
async fn connect_any(addrs: Vec<SocketAddr>) -> Result<TcpStream, ConnectError> {
    let mut last = ConnectError::Refused;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = ConnectError::Refused;
            }
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last = ConnectError::Unavailable;
            }
        }
    }
    Err(last)
}

/// Resolves the target and connects to it. With `deny_non_public`, every resolved address
/// must be public, or nothing is connected: checking after resolution is what stops a name
/// that resolves to 127.0.0.1 from slipping past a name-based allow-list, and connecting only
/// to the addresses checked leaves no second lookup to rebind.
async fn connect_target(host: &str, port: u16, deny_non_public: bool) -> Result<TcpStream, Error> {
    let addrs = resolve(host, port)
        .await
        .map_err(ConnectError::into_error)?;
    if deny_non_public
        && let Some((ip, class)) = addrs
            .iter()
            .find_map(|a| non_public_class(a.ip()).map(|class| (a.ip(), class)))
    {
        tracing::warn!(%host, %ip, class, "refused: denyPrivateNetworks");
        return Err(non_public_error(host, ip, class));
    }
    connect_any(addrs).await.map_err(ConnectError::into_error)
}

/// Connects to the proxy; failures name the proxy. The proxy is the operator's own choice and
/// is not subject to `denyPrivateNetworks`.
async fn connect_proxy(proxy: &ProxyEndpoint) -> Result<TcpStream, Error> {
    let addrs = resolve(proxy.bare_host(), proxy.port())
        .await
        .map_err(|e| e.into_proxy_error(proxy))?;
    connect_any(addrs)
        .await
        .map_err(|e| e.into_proxy_error(proxy))
}

/// `denyPrivateNetworks` through a proxy: the proxy resolves names, so only what the URL
/// itself says can be judged here: an IP address, or a `localhost` name (RFC 6761).
fn refuse_non_public_name(host: &str) -> Result<(), Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(class) = non_public_class(ip) {
            return Err(non_public_error(host, ip, class));
        }
    } else if host == "localhost" || host.ends_with(".localhost") {
        return Err(Error::InternalError(Some(format!(
            "ERR_DENIED_PRIVATE_NETWORK - {host} is a loopback name; denyPrivateNetworks is set"
        ))));
    }
    Ok(())
}

fn non_public_error(host: &str, ip: IpAddr, class: &str) -> Error {
    let text = if host.parse::<IpAddr>().is_ok() {
        format!("{ip} is a non-public address ({class}); denyPrivateNetworks is set")
    } else {
        format!(
            "{host} resolves to a non-public address ({ip}: {class}); denyPrivateNetworks is set"
        )
    };
    Error::InternalError(Some(format!("ERR_DENIED_PRIVATE_NETWORK - {text}")))
}

/// The kind of non-public address `ip` is, or `None` for a public one. What
/// `denyPrivateNetworks` refuses: loopback, private (RFC 1918), link-local, unique-local,
/// site-local, unspecified, shared (CGNAT, RFC 6598), multicast, broadcast and reserved
/// addresses; IPv4 addresses inside IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 IPv6 addresses
/// are judged as IPv4.
pub fn non_public_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if a == 0 {
                Some("unspecified")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if a >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                non_public_class(IpAddr::V4(v4))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                non_public_class(IpAddr::V4([a, b, c, d].into()))
            } else if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                non_public_class(IpAddr::V4([a, b, c, d].into()))
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (deprecated).
                Some("reserved")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

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
fn tls_failure_text(e: &hyper::Error) -> Option<String> {
    tls_cause(e).map(|tls| format!("ERR_TLS_HANDSHAKE - {tls}"))
}

/// Maps a hyper failure to the wasi-http error the guest sees; a TLS failure keeps rustls's
/// description (C74: `ERR_TLS_HANDSHAKE`).
pub fn error_from_hyper(e: &hyper::Error) -> Error {
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

/// A connection to hand back to the pool once its response was read to the end.
struct Reuse {
    pool: Arc<ConnectionPool>,
    key: PoolKey,
    sender: SendRequest<WasiBody>,
}

/// A response body that fails when no frame arrives within `timeout` and, read to the end,
/// returns its connection to the pool. Dropped earlier, it takes the connection with it (a
/// half-read response cannot be skipped safely).
struct TimedBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    reuse: Option<Reuse>,
    cancelled: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl TimedBody {
    fn new(
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

/// The hooks object placed in each `Store`.
pub struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
}

impl OutboundHooks {
    /// Hooks that apply `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        OutboundHooks { policy }
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
        let cancelled = policy.cancel.cancelled();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<&'static str> {
        non_public_class(ip.parse().unwrap())
    }

    /// Classification only: nothing here connects anywhere.
    #[test]
    fn non_public_addresses_are_classified() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.255", "shared (CGNAT)"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("::127.0.0.1", "reserved"),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn denied_messages_name_host_address_and_setting() {
        let Error::InternalError(Some(text)) =
            non_public_error("internal.example", "10.0.0.7".parse().unwrap(), "private")
        else {
            panic!("an internal error with text")
        };
        assert_eq!(
            text,
            "ERR_DENIED_PRIVATE_NETWORK - internal.example resolves to a non-public address (10.0.0.7: private); denyPrivateNetworks is set"
        );
        let Error::InternalError(Some(text)) =
            non_public_error("::1", "::1".parse().unwrap(), "loopback")
        else {
            panic!("an internal error with text")
        };
        assert_eq!(
            text,
            "ERR_DENIED_PRIVATE_NETWORK - ::1 is a non-public address (loopback); denyPrivateNetworks is set"
        );
        assert!(refuse_non_public_name("api.openai.com").is_ok());
        assert!(refuse_non_public_name("8.8.8.8").is_ok());
        assert!(refuse_non_public_name("169.254.169.254").is_err());
        assert!(refuse_non_public_name("app.localhost").is_err());
    }
}
