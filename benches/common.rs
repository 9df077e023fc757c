//! Shared by the bench binaries (each includes it with `#[path = "common.rs"] mod common;`).

/// An HTTP/1.1 client connection that sends whole bodies.
pub(crate) type Sender =
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// A keep-alive HTTP/1.1 connection to `url`'s host and port (Nagle off); its I/O runs on a
/// spawned task.
pub(crate) async fn connect(url: &hyper::Uri) -> Sender {
    let addr = format!("{}:{}", url.host().unwrap(), url.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}
