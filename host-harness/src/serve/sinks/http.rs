//! The HTTP client of a sink: one keep-alive HTTP/1.1 connection to the sink's host (TLS with
//! the default trust roots for `https`), opened again after any failure. A sink ships one
//! request at a time, so one connection is all it needs.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Connecting (TCP and TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request, from sending to the end of the response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body read (a `_bulk` answer for 500 documents is far smaller).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Where a sink's requests go.
pub(super) struct SinkHttp {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: HeaderValue,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for SinkHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHttp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl SinkHttp {
    /// A client for `https`/`http` on `host:port` (`host` as in a URL: IPv6 in brackets).
    pub(super) fn new(https: bool, host: &str, port: u16) -> Result<SinkHttp> {
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if https {
            let config = crate::tls::TlsProfile::default().client_config()?;
            let name = rustls_pki_types::ServerName::try_from(bare.clone())
                .with_context(|| format!("{host} is not a usable TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let default_port = if https { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        Ok(SinkHttp {
            authority: HeaderValue::try_from(authority)
                .with_context(|| format!("{host} is not a usable host name"))?,
            host: bare,
            port,
            tls,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends `request` (its URI's path and query are used; the host is this client's) and
    /// reads the whole response, within [`REQUEST_TIMEOUT`]. Any failure closes the connection.
    pub(super) async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>> {
        let mut connection = self.connection.lock().await;
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(&mut connection, request))
            .await
            .unwrap_or_else(|_| Err(anyhow!("no answer within {} s", REQUEST_TIMEOUT.as_secs())));
        if result.is_err() {
            *connection = None;
        }
        result
    }

    async fn exchange(
        &self,
        connection: &mut Option<SendRequest<Full<Bytes>>>,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = path.parse().context("unusable request path")?;
        parts.headers.insert(header::HOST, self.authority.clone());
        parts.headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("openai-connector/", env!("CARGO_PKG_VERSION"))),
        );
        let request = Request::from_parts(parts, Full::new(body));
        let reusable = match connection.take() {
            Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
            None => None,
        };
        let sender = match reusable {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let sender = connection.insert(sender);
        let response = sender
            .send_request(request)
            .await
            .context("the request failed")?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow!("cannot read the response: {e}"))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("cannot connect to {}:{}", self.host, self.port))?;
            tcp.set_nodelay(true)?;
            match &self.tls {
                None => {
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                    tokio::spawn(conn);
                    Ok(sender)
                }
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .with_context(|| format!("TLS with {} failed", self.host))?;
                    let (sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                    tokio::spawn(conn);
                    Ok(sender)
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(result) => result,
            Err(_) => bail!(
                "cannot connect to {}:{} within {} s",
                self.host,
                self.port,
                CONNECT_TIMEOUT.as_secs()
            ),
        }
    }
}
