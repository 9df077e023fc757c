//! `openai-connector demo`: a loopback upstream that says it is a demo, and `test` / `run` for
//! each provider sent to it through the component.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openai_connector_harness::{ConnectorFile, ExecuteOutcome, Executor, output};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// What the demo upstream saw: method, target, headers and body of one request.
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The demo upstream's answer: a chat completion that names itself as a demo.
fn demo_completion(model: &str) -> String {
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

async fn start_upstream() -> Result<(String, Arc<Mutex<Vec<Seen>>>)> {
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
                            headers: parts
                                .headers
                                .iter()
                                .map(|(n, v)| {
                                    (
                                        n.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect(),
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

/// Shows a header value, hiding credentials.
fn shown(name: &str, value: &str) -> String {
    match name {
        "authorization" => match value.split_once(' ') {
            Some((scheme, _)) => format!("{scheme} [REDACTED]"),
            None => "[REDACTED]".to_owned(),
        },
        "api-key" => "[REDACTED]".to_owned(),
        _ => value.to_owned(),
    }
}

pub async fn run(executor: &Executor) -> Result<()> {
    let (base, seen) = start_upstream().await?;
    println!("demo upstream (canned replies, not a model) listening on {base}\n");
    let connectors = [
        (
            "demo-openai",
            "OpenAI",
            format!(
                r#"{{"apiProvider":"OpenAI","apiUrl":"{base}/v1/chat/completions","organizationId":"org-demo"}}"#
            ),
        ),
        (
            "demo-azure",
            "Azure OpenAI",
            format!(
                r#"{{"apiProvider":"Azure OpenAI","apiUrl":"{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"}}"#
            ),
        ),
        (
            "demo-other",
            "Other",
            format!(
                r#"{{"apiProvider":"Other","apiUrl":"{base}/v1/chat/completions","defaultModel":"llama3"}}"#
            ),
        ),
    ];
    let params = [
        r#"{"subAction":"test","subActionParams":{"body":"{\"messages\":[{\"role\":\"user\",\"content\":\"Hello world\"}],\"tool_choice\":\"auto\"}"}}"#,
        r#"{"subAction":"run","subActionParams":{"body":"{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0.70}"}}"#,
    ];
    for (id, provider, config) in &connectors {
        let file = format!(
            r#"{{"id":"{id}","name":"Demo {provider}","connector_type_id":".gen-ai","config":{config},"secrets":{{"apiKey":"sk-demo-not-a-real-key"}}}}"#
        );
        let connector = ConnectorFile::parse(&file, id, std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("demo connector {id}: {e}"))?;
        println!("=== {provider} connector `{id}`");
        for p in params {
            let before = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
            let outcome = executor.execute(&connector, p).await?;
            println!("--- params: {p}");
            for s in seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .skip(before)
            {
                println!("sent:     {} {}", s.method, s.target);
                for (n, v) in &s.headers {
                    println!("          {n}: {}", shown(n, v));
                }
                println!("          body: {}", s.body);
            }
            match outcome {
                ExecuteOutcome::Executed(execution) => {
                    let (json, _) = output::execution_json(&connector.id, &execution)?;
                    println!("received: {json}");
                    let u = &execution.usage;
                    println!(
                        "usage:    {:?}: prompt {} completion {} total {}",
                        u.source, u.prompt_tokens, u.completion_tokens, u.total_tokens
                    );
                }
                ExecuteOutcome::InvalidConnector(lines) => {
                    for line in lines {
                        println!("invalid:  {line}");
                    }
                }
            }
            println!();
        }
    }
    Ok(())
}
