//! The component's `gateway` world under stock `wasmtime serve` (wasmtime-cli 48.0.8 from
//! crates.io, the harness's wasmtime version), against a loopback upstream.
//!
//! Ignored by default: it needs the `wasmtime` binary, which `cargo test` cannot build. `.ci/run`
//! installs it (`scripts/install-wasmtime-cli.sh`) and runs these tests with `--ignored`. Locally:
//!
//! ```text
//! scripts/install-wasmtime-cli.sh
//! cargo test -p openai-connector-harness --test all wasmtime_serve -- --ignored
//! ```
//!
//! The binary is `$WASMTIME_CLI`, else the one the script installs, else `wasmtime` on `PATH`;
//! without one the tests fail naming the script.

use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The wasmtime-cli version these tests are written for (the harness's wasmtime).
const WASMTIME_VERSION: &str = "48.0.8";
/// The Bearer token clients present.
const CLIENT_TOKEN: &str = "gw-client-token-7f3a9c";
const CONNECTOR_ID: &str = "gw-test";
/// Limit for anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `wasmtime` binary to run.
fn wasmtime_cli() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMTIME_CLI") {
        assert!(
            std::path::Path::new(&path).is_file(),
            "WASMTIME_CLI={} is not a file",
            path.display()
        );
    }
    let candidates = std::env::var_os("WASMTIME_CLI")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|home| {
            PathBuf::from(home).join(format!(
                ".cache/openai-connector/wasmtime-cli-{WASMTIME_VERSION}/bin/wasmtime"
            ))
        }))
        .chain(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join("wasmtime"))
                .collect::<Vec<_>>(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            let version = std::process::Command::new(&candidate)
                .arg("--version")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", candidate.display()));
            let version = String::from_utf8_lossy(&version.stdout);
            assert!(
                version.contains(WASMTIME_VERSION),
                "{} is `{}`, these tests need wasmtime-cli {WASMTIME_VERSION}: run scripts/install-wasmtime-cli.sh or set WASMTIME_CLI",
                candidate.display(),
                version.trim()
            );
            return candidate;
        }
    }
    panic!(
        "no wasmtime binary: run scripts/install-wasmtime-cli.sh (cargo install wasmtime-cli --version {WASMTIME_VERSION} --locked --no-default-features --features run,serve,cranelift,component-model-async,pooling-allocator) or set WASMTIME_CLI"
    );
}

/// The harness's embedded component (the `gateway` world) as a file for `wasmtime serve`.
fn component_file() -> PathBuf {
    let path = scratch_dir("wasmtime-serve").join("openai_connector.wasm");
    std::fs::write(&path, openai_connector_harness::runtime::EMBEDDED_COMPONENT)
        .expect("write the component");
    path
}

/// A running `wasmtime serve`; killed when dropped.
struct Served {
    child: tokio::process::Child,
    base: String,
    /// Every line `wasmtime serve` (and the guest) wrote to stderr.
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `wasmtime serve` on a free loopback port with `config` (JSON) pointing at the
    /// upstream. Secrets and the client token reach the guest with `--env NAME` (inherited
    /// from this child's environment), so they are not on the command line.
    async fn start(config: &str) -> Served {
        let mut cmd = tokio::process::Command::new(wasmtime_cli());
        cmd.arg("serve")
            .args(["--addr", "127.0.0.1:0", "-S", "cli"])
            .arg("--env")
            .arg(format!("OPENAI_CONNECTOR_CONFIG={config}"))
            .arg("--env")
            .arg(format!("OPENAI_CONNECTOR_ID={CONNECTOR_ID}"))
            .args(["--env", "OPENAI_CONNECTOR_SECRETS"])
            .args(["--env", "OPENAI_CONNECTOR_CLIENT_TOKEN"])
            .arg(component_file())
            .env("OPENAI_CONNECTOR_SECRETS", key_secrets())
            .env("OPENAI_CONNECTOR_CLIENT_TOKEN", CLIENT_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start wasmtime serve");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<String>();
        let lines = log.clone();
        // Ends at EOF, when the child has exited.
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rest) = line.strip_prefix("Serving HTTP on ")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(rest.trim_end_matches('/').to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let base = match tokio::time::timeout(PATIENCE, ready_rx).await {
            Ok(Ok(base)) => base,
            _ => panic!(
                "wasmtime serve did not start listening: {:#?}",
                log.lock().unwrap()
            ),
        };
        Served { child, base, log }
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> hyper::Response<hyper::body::Incoming> {
        let authority = self.base.trim_start_matches("http://");
        tokio::time::timeout(
            PATIENCE,
            http1_request(authority, method, path, token, body),
        )
        .await
        .expect("wasmtime serve answered in time")
    }

    async fn text(resp: hyper::Response<hyper::body::Incoming>) -> String {
        let bytes = tokio::time::timeout(PATIENCE, resp.into_body().collect())
            .await
            .expect("the body ended in time")
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Stops the server and checks its log for secrets.
    async fn stop(mut self) -> Vec<String> {
        self.child.kill().await.expect("kill wasmtime serve");
        let log = self.log.lock().unwrap().clone();
        for line in &log {
            no_secret_in(line);
            assert!(
                !line.contains(CLIENT_TOKEN),
                "client token in the log: {line}"
            );
        }
        log
    }
}

fn event(content: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    )
}

const USAGE_EVENT: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";

fn connector_config(upstream: &Upstream) -> String {
    format!(
        r#"{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"gpt-4o"}}"#,
        upstream.url("/v1/chat/completions")
    )
}

/// C41 under a stock host: routes, tokens, streaming as bytes arrive, non-streaming JSON.
#[tokio::test]
#[ignore = "needs wasmtime-cli 48.0.8: scripts/install-wasmtime-cli.sh, then run with --ignored"]
async fn c41_wasmtime_serve_hosts_the_gateway_and_streams() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let first = event("Hel");
    let rest = [
        event("lo"),
        event(" there"),
        USAGE_EVENT.to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ];
    let mut steps = vec![
        Step::Send(first.clone().into_bytes()),
        Step::Wait(gate.clone()),
    ];
    for chunk in &rest {
        steps.push(Step::Send(chunk.clone().into_bytes()));
        steps.push(Step::Sleep(Duration::from_millis(50)));
    }
    let streamed = Reply::sse(steps);
    let upstream = Upstream::http(Arc::new(move |req| {
        if req.body_str().contains(r#""stream":true"#) {
            streamed.clone()
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await;
    let served = Served::start(&connector_config(&upstream)).await;

    // Health needs no token.
    let resp = served.request("GET", "/healthz", None, "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(Served::text(resp).await, r#"{"status":"ok"}"#);

    // A wrong or missing token: 401, nothing upstream.
    let chat = r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
    for token in [Some("wrong-token"), None] {
        let resp = served
            .request("POST", "/v1/chat/completions", token, chat)
            .await;
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = serde_json::from_str(&Served::text(resp).await).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    assert!(
        upstream.requests().is_empty(),
        "C44-like: nothing reached the upstream"
    );

    // Streaming: the first event reaches the client while the upstream holds the rest.
    let resp = served
        .request(
            "POST",
            &format!("/connectors/{CONNECTOR_ID}/v1/chat/completions"),
            Some(CLIENT_TOKEN),
            chat,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < first.len() {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("the first event arrived while the upstream was still holding the second")
            .expect("the body did not end before the first event")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, first.as_bytes(), "C41: the first event, unchanged");
    gate.notify_one();
    let tail = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the stream ended")
        .unwrap()
        .to_bytes();
    got.extend_from_slice(&tail);
    assert_eq!(
        String::from_utf8(got).unwrap(),
        [first.as_str()]
            .into_iter()
            .chain(rest.iter().map(String::as_str))
            .collect::<String>(),
        "C41: the client got exactly the upstream's bytes"
    );

    // What the upstream saw: the connector's key, not the client's token, and the body.
    let sent = upstream.only_request();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.target, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    for (name, value) in &sent.headers {
        assert!(
            !value.contains(CLIENT_TOKEN),
            "the client's {name} was forwarded"
        );
    }
    let sent_body: serde_json::Value = serde_json::from_str(sent.body_str()).unwrap();
    assert_eq!(
        sent_body["messages"],
        serde_json::json!([{"role": "user", "content": "Hi"}])
    );
    assert_eq!(sent_body["stream"], true);
    assert_eq!(sent_body["model"], "gpt-4o", "C9: the default model");

    // Non-streaming: the upstream JSON.
    let resp = served
        .request(
            "POST",
            "/v1/chat/completions",
            Some(CLIENT_TOKEN),
            r#"{"messages":[{"role":"user","content":"Hi"}]}"#,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let got: serde_json::Value = serde_json::from_str(&Served::text(resp).await).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(COMPLETION).unwrap()
    );
    assert_eq!(upstream.requests().len(), 2);

    // Kibana's `_execute` (C77).
    let resp = served
        .request(
            "POST",
            &format!("/api/actions/connector/{CONNECTOR_ID}/_execute"),
            Some(CLIENT_TOKEN),
            &format!(
                r#"{{"params":{}}}"#,
                run_params("run", r#"{"messages":[{"role":"user","content":"Hi"}]}"#)
            ),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let got: serde_json::Value = serde_json::from_str(&Served::text(resp).await).unwrap();
    assert_eq!(got["connector_id"], CONNECTOR_ID);
    assert_eq!(got["status"], "ok");
    assert_eq!(
        got["data"],
        serde_json::from_str::<serde_json::Value>(COMPLETION).unwrap()
    );

    let log = served.stop().await;
    assert!(
        log.iter().any(|l| l.contains(
            "POST /connectors/gw-test/v1/chat/completions -> 200 stream ok; usage reported prompt=9 completion=2 total=11"
        )),
        "the guest logs each execution: {log:#?}"
    );
}

/// A misconfigured gateway answers every request with the variable to fix, never a secret.
#[tokio::test]
#[ignore = "needs wasmtime-cli 48.0.8: scripts/install-wasmtime-cli.sh, then run with --ignored"]
async fn c16_wasmtime_serve_reports_misconfiguration_by_variable() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    // Other without defaultModel is invalid (C7).
    let config = format!(
        r#"{{"apiProvider":"Other","apiUrl":"{}"}}"#,
        upstream.url("/v1/chat/completions")
    );
    let served = Served::start(&config).await;
    let resp = served
        .request(
            "POST",
            "/v1/chat/completions",
            Some(CLIENT_TOKEN),
            r#"{"messages":[]}"#,
        )
        .await;
    assert_eq!(resp.status(), 500);
    let body: serde_json::Value = serde_json::from_str(&Served::text(resp).await).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "the gateway is misconfigured: OPENAI_CONNECTOR_CONFIG: error validating action type config:"
        ),
        "{message}"
    );
    no_secret_in(message);
    // Health names the variable only; the details are logged.
    let resp = served.request("GET", "/healthz", None, "").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        Served::text(resp).await,
        r#"{"status":"misconfigured","variables":["OPENAI_CONNECTOR_CONFIG"]}"#
    );
    assert!(upstream.requests().is_empty());
    let log = served.stop().await;
    assert!(
        log.iter().any(|l| l.contains(
            "openai-connector gateway: misconfigured: OPENAI_CONNECTOR_CONFIG: error validating action type config:"
        )),
        "{log:#?}"
    );
}
