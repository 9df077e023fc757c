//! The floor under `serve`'s per-request cost: a plain hyper reverse proxy for the same route
//! and upstream, with no wasm, no validation, no event log and no metrics (issue 17, item 2).
//!
//! It is what any HTTP/1.1 gateway in this position must pay: parse the client's request,
//! check its bearer token, write the request to a pooled upstream connection with the
//! upstream's key, parse the answer and write it back, body passed through frame by frame.
//! It is built the way `serve` is (`serve/mod.rs`): one acceptor dealing connections to one
//! single-threaded runtime per core, each with its own pool of upstream connections, so the
//! difference between the two is the connector's work and not the runtime's shape.
//!
//! It runs as a child process, the bench binary started again with `--floor-proxy PORT`
//! (PORT: the upstream's), and prints `listening on http://ADDR` as `serve` does.

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::cell::RefCell;
use std::rc::Rc;

type Upstream = hyper::client::conn::http1::SendRequest<Incoming>;
type Body = BoxBody<Bytes, hyper::Error>;

/// The argument that makes the bench binary the floor proxy.
pub(crate) const ARG: &str = "--floor-proxy";

/// Runs the proxy until the process is killed; `upstream` is the upstream's port on 127.0.0.1,
/// `token` the bearer token a client must send.
pub(crate) fn run(upstream: u16, token: &'static str, upstream_key: &'static str) -> ! {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    eprintln!("listening on http://{}", listener.local_addr().unwrap());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut workers = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        std::thread::spawn(move || serve_thread(rx, upstream, token, upstream_key));
        workers.push(tx);
    }
    for (i, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        stream.set_nodelay(true).unwrap();
        stream.set_nonblocking(true).unwrap();
        workers[i % workers.len()].send(stream).unwrap();
    }
    unreachable!("a listener's incoming() never ends")
}

fn serve_thread(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
    upstream: u16,
    token: &'static str,
    upstream_key: &'static str,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let authorization: &'static str = format!("Bearer {token}").leak();
    let upstream_authorization =
        hyper::header::HeaderValue::from_str(&format!("Bearer {upstream_key}")).unwrap();
    let pool: Rc<RefCell<Vec<Upstream>>> = Rc::default();
    local.block_on(&rt, async move {
        while let Some(stream) = incoming.recv().await {
            let stream = tokio::net::TcpStream::from_std(stream).unwrap();
            let pool = pool.clone();
            let upstream_authorization = upstream_authorization.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let pool = pool.clone();
                    let upstream_authorization = upstream_authorization.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            forward(req, &pool, upstream, authorization, upstream_authorization)
                                .await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// One request: the token checked, the path mapped, the upstream's key set, the answer passed
/// through.
async fn forward(
    req: hyper::Request<Incoming>,
    pool: &RefCell<Vec<Upstream>>,
    upstream: u16,
    authorization: &str,
    upstream_authorization: hyper::header::HeaderValue,
) -> hyper::Response<Body> {
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == authorization.as_bytes());
    let Some(path) = req.uri().path().strip_prefix("/connectors/bench") else {
        return answer(hyper::StatusCode::NOT_FOUND, "no such route");
    };
    let uri: hyper::Uri = path.parse().unwrap();
    if !authorized {
        return answer(hyper::StatusCode::UNAUTHORIZED, "bad token");
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts
        .headers
        .insert(hyper::header::AUTHORIZATION, upstream_authorization);
    let request = hyper::Request::from_parts(parts, body);
    // A pooled connection that is free (its last answer read to the end), or a new one.
    let pooled = {
        let mut pool = pool.borrow_mut();
        pool.retain(|s| !s.is_closed());
        pool.iter()
            .position(|s| s.is_ready())
            .map(|i| pool.swap_remove(i))
    };
    let mut sender = match pooled {
        Some(sender) => sender,
        None => {
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return answer(hyper::StatusCode::BAD_GATEWAY, "upstream unreachable");
            };
            tcp.set_nodelay(true).unwrap();
            let Ok((sender, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await
            else {
                return answer(hyper::StatusCode::BAD_GATEWAY, "upstream handshake");
            };
            tokio::task::spawn_local(conn);
            sender
        }
    };
    if sender.ready().await.is_err() {
        return answer(hyper::StatusCode::BAD_GATEWAY, "upstream closed");
    }
    let Ok(response) = sender.send_request(request).await else {
        return answer(hyper::StatusCode::BAD_GATEWAY, "upstream failed");
    };
    // Back in the pool at once: it is not `is_ready` until this body has been read, so no
    // other request takes it before then.
    pool.borrow_mut().push(sender);
    response.map(BodyExt::boxed)
}

fn answer(status: hyper::StatusCode, message: &'static str) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(
        http_body_util::Full::new(Bytes::from_static(message.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}
