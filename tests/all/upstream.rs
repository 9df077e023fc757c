//! A scripted loopback upstream that records every request it receives.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names (lower case, as hyper gives them) and values, in received order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is UTF-8")
    }
}

/// What the upstream answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, headers and a body sent at once.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Status and headers at once, then the body step by step.
    Chunked {
        status: u16,
        headers: Vec<(String, String)>,
        steps: Vec<Step>,
    },
    /// Wait, then answer.
    Delayed(Duration, Box<Reply>),
    /// Close the connection without answering.
    Close,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::Full {
            status,
            headers: vec![("location".into(), location.into())],
            body: Vec::new(),
        }
    }
}

/// One step of a chunked body.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Pause.
    Sleep(Duration),
    /// Wait until the test says so.
    Wait(Arc<tokio::sync::Notify>),
    /// Break the connection without finishing the body.
    Abort,
}

impl Reply {
    /// An SSE response sending `events` (each a complete `data: ...\n\n` text) one by one.
    pub fn sse(steps: Vec<Step>) -> Reply {
        Reply::Chunked {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            steps,
        }
    }
}

/// Decides the reply for each request.
pub type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A completed TLS handshake as the upstream saw it.
#[derive(Clone, Debug)]
pub struct TlsSession {
    /// The client's leaf certificate (DER), when it presented one.
    pub client_cert: Option<Vec<u8>>,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    scheme: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
    /// TLS handshakes completed.
    sessions: Arc<Mutex<Vec<TlsSession>>>,
    /// Why TLS handshakes failed, as the server's TLS library says.
    tls_failures: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// A plain HTTP upstream answering every request with `reply`.
    pub async fn always(reply: Reply) -> Upstream {
        Self::http(Arc::new(move |_| reply.clone())).await
    }

    /// A plain HTTP upstream following `script`.
    pub async fn http(script: Script) -> Upstream {
        Self::start(script, None).await
    }

    /// A TLS upstream presenting `config`'s certificate, answering every request with `reply`.
    pub async fn https_always(reply: Reply, config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::https(Arc::new(move |_| reply.clone()), config).await
    }

    /// A TLS upstream presenting `config`'s certificate.
    pub async fn https(script: Script, config: Arc<rustls::ServerConfig>) -> Upstream {
        Self::start(script, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    /// [`https_always`](Self::https_always) on IPv6's loopback, `[::1]`.
    pub async fn https_always_ipv6(reply: Reply, config: Arc<rustls::ServerConfig>) -> Upstream {
        let script: Script = Arc::new(move |_| reply.clone());
        Self::start_on(
            "[::1]:0",
            script,
            Some(tokio_rustls::TlsAcceptor::from(config)),
        )
        .await
    }

    async fn start(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        Self::start_on("127.0.0.1:0", script, tls).await
    }

    async fn start_on(
        bind: &str,
        script: Script,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let listener = TcpListener::bind(bind)
            .await
            .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let log = requests.clone();
        let connections: Arc<AtomicUsize> = Arc::default();
        let accepted = connections.clone();
        let sessions: Arc<Mutex<Vec<TlsSession>>> = Arc::default();
        let session_log = sessions.clone();
        let tls_failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let failure_log = tls_failures.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                let script = script.clone();
                let tls = tls.clone();
                let session_log = session_log.clone();
                let failure_log = failure_log.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        let script = script.clone();
                        async move { answer(req, &log, &script).await }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                let client_cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|c| c.to_vec());
                                session_log.lock().unwrap().push(TlsSession { client_cert });
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                            Err(e) => failure_log.lock().unwrap().push(e.to_string()),
                        },
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            scheme,
            requests,
            connections,
            sessions,
            tls_failures,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Why TLS handshakes failed on the server's side (e.g. `peer sent no certificates`).
    pub fn tls_failures(&self) -> Vec<String> {
        self.tls_failures.lock().unwrap().clone()
    }

    /// TLS handshakes completed so far, in order.
    pub fn tls_sessions(&self) -> Vec<TlsSession> {
        self.sessions.lock().unwrap().clone()
    }

    /// `scheme://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received; panics unless there was exactly one.
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:#?}");
        all.into_iter().next().unwrap()
    }
}

async fn answer(
    req: hyper::Request<hyper::body::Incoming>,
    log: &Mutex<Vec<Recorded>>,
    script: &Script,
) -> Result<hyper::Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers: openai_connector_harness::demo_upstream::header_pairs(&parts.headers),
        body,
    };
    let mut reply = script(&recorded);
    log.lock().unwrap().push(recorded);
    loop {
        match reply {
            Reply::Delayed(delay, next) => {
                tokio::time::sleep(delay).await;
                reply = *next;
            }
            Reply::Close => return Err(std::io::Error::other("closing without a response")),
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut builder = hyper::Response::builder().status(status);
                for (n, v) in headers {
                    builder = builder.header(n, v);
                }
                let body = http_body_util::Full::new(Bytes::from(body))
                    .map_err(|e: Infallible| match e {})
                    .boxed();
                return Ok(builder.body(body).expect("valid response"));
            }
            Reply::Chunked {
                status,
                headers,
                steps,
            } => {
                let mut builder = hyper::Response::builder().status(status);
                for (n, v) in headers {
                    builder = builder.header(n, v);
                }
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
                tokio::spawn(async move {
                    for step in steps {
                        let sent = match step {
                            Step::Send(chunk) => tx.send(Ok(Frame::data(Bytes::from(chunk)))).await,
                            Step::Sleep(d) => {
                                tokio::time::sleep(d).await;
                                Ok(())
                            }
                            Step::Wait(gate) => {
                                gate.notified().await;
                                Ok(())
                            }
                            Step::Abort => tx.send(Err(std::io::Error::other("abort"))).await,
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                });
                let body = BodyExt::boxed(ChannelBody(rx));
                return Ok(builder.body(body).expect("valid response"));
            }
        }
    }
}

/// A response body fed by a channel, one frame per message; an error breaks the connection.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}
