//! A loopback upstream that answers every request with a canned chat completion that says it
//! is a demo. Used by `openai-connector demo` and by the benchmarks.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// What the demo upstream saw: method, target, headers and body of one request.
pub struct Seen {
    /// Request method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

/// The demo upstream's answer: a chat completion that names itself as a demo.
pub fn demo_completion(model: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the openai-connector demo upstream (a canned reply, not a model)."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    })
    .to_string()
}

/// Header names (lower case) and values (bytes that are not UTF-8 replaced), in received order.
pub fn header_pairs(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Starts the upstream on `127.0.0.1:0`; returns its base URL and the log of what it saw. It
/// runs until the process ends.
pub async fn start() -> Result<(String, Arc<Mutex<Vec<Seen>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the demo upstream on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let model = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| {
                                v.get("model").and_then(|m| m.as_str()).map(str::to_owned)
                            })
                            .unwrap_or_else(|| "demo-model".to_owned());
                        log.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: header_pairs(&parts.headers),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let response = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(demo_completion(&model))))
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}"), seen))
}
