//! The wasi-http `send_request` hook: transport policy for the component's outgoing requests.
//!
//! The component decides *what* to send; this module decides *whether and how*: the allow-list
//! is checked before any byte leaves (C11, C44, C66), names are resolved, connections made with
//! the connect timeout, TLS set up from the connector's profile (section 9), and failures are
//! reported to the guest as wasi-http error codes that carry C74's Node-style codes.

use crate::settings::{CustomHostSettings, Settings};
use crate::tls::{TlsProfile, Verification, describe_tls_error};
use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
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
    /// rustls configurations built so far, by profile.
    configs: Mutex<HashMap<TlsProfile, Arc<rustls::ClientConfig>>>,
}

impl OutboundPolicy {
    /// A policy that refuses every request (for calls that must not do I/O).
    pub fn deny_all() -> Self {
        OutboundPolicy::default()
    }

    /// The policy for one connector's execution under `settings`; `connector_tls` is the
    /// profile the component returned from validation.
    pub fn for_connector(settings: &Settings, connector_tls: Option<TlsProfile>) -> Self {
        OutboundPolicy {
            allowed_hosts: settings.allowed_hosts.clone(),
            connector_tls,
            default_verification: settings.verification,
            custom_hosts: settings.custom_hosts.clone(),
            configs: Mutex::default(),
        }
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
        let mut configs = self.configs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = configs.get(&profile) {
            return Ok(config.clone());
        }
        let config = Arc::new(
            profile
                .client_config()
                .map_err(|e| Error::InternalError(Some(format!("ERR_TLS_HANDSHAKE - {e:#}"))))?,
        );
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
        let use_tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err(Error::HttpProtocolError),
        };
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let host = authority.host().to_owned();
        if !self.host_allowed(&host) {
            tracing::warn!(%host, "refused: host is not in allowedHosts");
            return Err(Error::HttpRequestDenied);
        }
        let port = authority
            .port_u16()
            .unwrap_or(if use_tls { 443 } else { 80 });
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

        let tcp = tokio::time::timeout(connect_timeout, connect(&bare_host, port))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        let _ = tcp.set_nodelay(true);

        let io: Box<dyn Io> = if use_tls {
            let config = self.client_config(self.tls_profile_for(&bare_host, port))?;
            let server_name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let tls = tokio::time::timeout(connect_timeout, connector.connect(server_name, tcp))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(|e| {
                    let (code, message) = describe_tls_error(&e, &bare_host);
                    tracing::debug!(%host, code, "TLS handshake failed");
                    Error::InternalError(Some(format!("{code} - {message}")))
                })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };

        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|_| Error::ConnectionTerminated)?;
        // hyper's connection future performs the I/O; it must be driven or the request hangs.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });

        // The request line carries the origin form; the authority travels in `Host`.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(error_from_hyper)?;
        Ok(response.map(|incoming| {
            TimedBody {
                inner: incoming,
                timeout: between_bytes_timeout,
                sleep: Box::pin(tokio::time::sleep(between_bytes_timeout)),
            }
            .boxed_unsync()
        }))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Resolves `host` and connects to the first address that accepts.
async fn connect(host: &str, port: u16) -> Result<TcpStream, Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| Error::DnsError {
            rcode: Some("ENOTFOUND".to_owned()),
            info_code: None,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::DnsError {
            rcode: Some("ENOTFOUND".to_owned()),
            info_code: None,
        });
    }
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last = Error::DestinationUnavailable;
            }
        }
    }
    Err(last)
}

/// Maps a hyper failure to the wasi-http error the guest sees.
fn error_from_hyper(e: hyper::Error) -> Error {
    if e.is_timeout() {
        Error::ConnectionReadTimeout
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        Error::ConnectionTerminated
    } else if e.is_parse() || e.is_parse_status() {
        Error::HttpProtocolError
    } else {
        Error::ConnectionTerminated
    }
}

/// A response body that fails when no frame arrives within `timeout`.
struct TimedBody {
    inner: hyper::body::Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.sleep.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(error_from_hyper(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
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
        Box::new(async move {
            let response = policy.send(request, options).await?;
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        if err.is_timeout() {
            ErrorCode::ConnectionReadTimeout
        } else {
            ErrorCode::ConnectionTerminated
        }
    }
}
