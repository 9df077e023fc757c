//! Opening connections: TCP to the target or the proxy, TLS to an https proxy, the `CONNECT`
//! tunnel for an https target behind a proxy, TLS to an https target, then the HTTP/1.1
//! handshake. Failures carry C74's Node-style codes.

use super::error::error_from_hyper;
use super::ssrf;
use crate::pool::PoolKey;
use crate::proxy::ProxyEndpoint;
use crate::tls::{TlsProfile, describe_tls_error};
use bytes::Bytes;
use http::HeaderValue;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, WasiBody};

/// A byte stream hyper can run HTTP/1.1 over: TCP, TLS, or a proxy tunnel (nested as needed).
pub(super) trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A new connection, or the proxy's refusal to open the tunnel for one.
pub(super) enum Opened {
    /// Ready for requests.
    Connection(SendRequest<WasiBody>),
    /// The proxy answered the `CONNECT` with a non-2xx status (e.g. 407); that answer is the
    /// response.
    TunnelRefused(http::Response<hyper::body::Incoming>),
}

/// What opening a connection needs besides its key.
pub(super) struct Dialer<'a, F> {
    /// `denyPrivateNetworks`: refuse a target that resolves to a non-public address.
    pub(super) deny_private_networks: bool,
    /// The rustls configuration for a TLS profile.
    pub(super) client_config: &'a F,
}

impl<F> Dialer<'_, F>
where
    F: Fn(TlsProfile) -> Result<Arc<rustls::ClientConfig>, Error>,
{
    /// Opens a connection for `key`; `bare_host` is its host without IPv6 brackets.
    pub(super) async fn open(&self, key: &PoolKey, bare_host: &str) -> Result<Opened, Error> {
        let io: Box<dyn Io> = match &key.proxy {
            None => {
                Box::new(connect_target(bare_host, key.port, self.deny_private_networks).await?)
            }
            Some(proxy) => {
                let mut io: Box<dyn Io> = Box::new(connect_proxy(proxy).await?);
                if proxy.is_https() {
                    // C129: the proxy's certificate is checked against the default roots.
                    let config = (self.client_config)(TlsProfile {
                        verification: proxy.verification(),
                        ca_der: Vec::new(),
                        identity: None,
                    })?;
                    io = Box::new(tls_connect(config, proxy.bare_host(), io).await?);
                }
                if key.https {
                    match open_tunnel(proxy, io, &format!("{}:{}", key.host, key.port)).await? {
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
                let config = (self.client_config)(profile.clone())?;
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

/// The outcome of a `CONNECT`.
enum Tunnel {
    /// The tunnel is open: bytes written here reach the target.
    Open(Box<dyn Io>),
    /// The proxy answered with a non-2xx status (e.g. 407); that answer is the response.
    Refused(http::Response<hyper::body::Incoming>),
}

/// Asks `proxy`, over `io`, for a tunnel to `authority` (`host:port`, IPv6 in brackets). Its
/// credentials and headers go on the `CONNECT` request only (C129).
async fn open_tunnel(
    proxy: &ProxyEndpoint,
    io: Box<dyn Io>,
    authority: &str,
) -> Result<Tunnel, Error> {
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
    proxy.add_headers(request.headers_mut());
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
    if deny_non_public {
        ssrf::refuse_non_public_addresses(host, addrs.iter().map(SocketAddr::ip))?;
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
