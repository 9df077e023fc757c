//! cli.md "`serve`: the rest of the OpenAI API that clients call": `POST .../v1/responses`
//! (whole and streamed), `POST .../v1/embeddings` and `GET .../v1/models` through `serve`, for
//! connector routes and named routes, driven by the official OpenAI Python SDK
//! (tests/py/openai_responses_client.py), and the `execute` sub-actions `responses` and
//! `embeddings`. Loopback upstreams answer recorded-shape Responses objects and streams and
//! embeddings; each test asserts what the client got, what the upstream received, and the
//! event-log lines with their usage source.

use crate::serve::{
    ADMIN, CLIENT, assert_no_secrets_in_stderr, event_log, gateway_with_log, next_chunk, path_str,
    python_has,
};
use crate::support::*;
use crate::upstream::{Recorded, Reply, Step, Upstream};
use base64::Engine as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A Responses object as OpenAI answers it (`usage` given by `usage`).
fn response_object(text: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"resp_1","object":"response","created_at":1767225600,"status":"completed","error":null,"incomplete_details":null,"instructions":"Be brief.","model":"gpt-4.1-2025-04-14","output":[{{"id":"msg_1","type":"message","status":"completed","content":[{{"type":"output_text","annotations":[],"logprobs":[],"text":"{text}"}}],"role":"assistant"}}],"parallel_tool_calls":true,"temperature":1.0,"tool_choice":"auto","tools":[],"top_p":1.0,"usage":{usage},"metadata":{{}}}}"#
    )
}

const REPORTED_USAGE: &str = r#"{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15}"#;

/// The embeddings the upstream answers: two vectors, as floats or (when the request asks for
/// it, as the Python SDK does by default) base64 of little-endian `f32`s.
const VECTORS: [[f32; 3]; 2] = [[0.25, -0.5, 1.0], [0.125, 2.0, -1.5]];

fn embeddings_reply(base64: bool) -> String {
    let data: Vec<Value> = VECTORS
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": "text-embedding-3-small", "usage": {"prompt_tokens": 4, "total_tokens": 4}}).to_string()
}

/// One SSE event as OpenAI's Responses API writes it: `event: TYPE` and its data.
fn event(data: Value) -> Vec<u8> {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap()
    )
    .into_bytes()
}

fn in_progress() -> Value {
    json!({"id": "resp_2", "object": "response", "created_at": 1767225600, "status": "in_progress", "model": "gpt-4.1-2025-04-14", "output": [], "usage": null, "error": null})
}

/// The events before any output: `response.created`, `response.in_progress`.
fn opening() -> Vec<Vec<u8>> {
    vec![
        event(json!({"type": "response.created", "sequence_number": 0, "response": in_progress()})),
        event(
            json!({"type": "response.in_progress", "sequence_number": 1, "response": in_progress()}),
        ),
    ]
}

fn message_item(text: &str, status: &str) -> Value {
    json!({"id": "msg_2", "type": "message", "status": status, "role": "assistant", "content": if text.is_empty() { json!([]) } else { json!([{"type": "output_text", "annotations": [], "text": text}]) }})
}

fn text_delta(seq: u64, delta: &str) -> Vec<u8> {
    event(
        json!({"type": "response.output_text.delta", "sequence_number": seq, "item_id": "msg_2", "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []}),
    )
}

/// A streamed text answer, "Hel" + "lo!", usage 12/3/15 in `response.completed`.
fn text_stream() -> Vec<Vec<u8>> {
    let mut events = opening();
    events.extend([
        event(
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": message_item("", "in_progress")}),
        ),
        event(
            json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_2", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "annotations": [], "text": ""}}),
        ),
        text_delta(4, "Hel"),
        text_delta(5, "lo!"),
        event(
            json!({"type": "response.output_text.done", "sequence_number": 6, "item_id": "msg_2", "output_index": 0, "content_index": 0, "text": "Hello!", "logprobs": []}),
        ),
        event(
            json!({"type": "response.content_part.done", "sequence_number": 7, "item_id": "msg_2", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "annotations": [], "text": "Hello!"}}),
        ),
        event(
            json!({"type": "response.output_item.done", "sequence_number": 8, "output_index": 0, "item": message_item("Hello!", "completed")}),
        ),
        event(
            json!({"type": "response.completed", "sequence_number": 9, "response": {"id": "resp_2", "object": "response", "created_at": 1767225600, "status": "completed", "model": "gpt-4.1-2025-04-14", "output": [message_item("Hello!", "completed")], "usage": serde_json::from_str::<Value>(REPORTED_USAGE).unwrap(), "error": null}}),
        ),
    ]);
    events
}

/// A streamed function call: `get_weather({"city":"Paris"})`, usage 20/7/27.
fn tool_stream() -> Vec<Vec<u8>> {
    let call = |arguments: &str, status: &str| json!({"id": "fc_1", "type": "function_call", "status": status, "call_id": "call_1", "name": "get_weather", "arguments": arguments});
    let args_delta = |seq: u64, delta: &str| {
        event(
            json!({"type": "response.function_call_arguments.delta", "sequence_number": seq, "item_id": "fc_1", "output_index": 0, "delta": delta}),
        )
    };
    let mut events = opening();
    events.extend([
        event(
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": call("", "in_progress")}),
        ),
        args_delta(3, "{\"city\":"),
        args_delta(4, "\"Paris\"}"),
        event(
            json!({"type": "response.function_call_arguments.done", "sequence_number": 5, "item_id": "fc_1", "output_index": 0, "arguments": "{\"city\":\"Paris\"}"}),
        ),
        event(
            json!({"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": call("{\"city\":\"Paris\"}", "completed")}),
        ),
        event(
            json!({"type": "response.completed", "sequence_number": 7, "response": {"id": "resp_2", "object": "response", "created_at": 1767225600, "status": "completed", "model": "gpt-4.1-2025-04-14", "output": [call("{\"city\":\"Paris\"}", "completed")], "usage": {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}, "error": null}}),
        ),
    ]);
    events
}

/// A stream the upstream ends with `response.failed` after some text.
fn failed_stream() -> Vec<Vec<u8>> {
    let mut events = opening();
    events.extend([
        text_delta(2, "Par"),
        event(
            json!({"type": "response.failed", "sequence_number": 3, "response": {"id": "resp_2", "object": "response", "created_at": 1767225600, "status": "failed", "model": "gpt-4.1-2025-04-14", "output": [], "usage": null, "error": {"code": "server_error", "message": "The model failed to generate a response."}}}),
        ),
    ]);
    events
}

/// A stream with an `error` event mid-way.
fn error_stream() -> Vec<Vec<u8>> {
    let mut events = opening();
    events.extend([
        text_delta(2, "Par"),
        event(
            json!({"type": "error", "sequence_number": 3, "code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4.1", "param": null}),
        ),
    ]);
    events
}

/// What the upstream answers, chosen by the path and, for Responses, the `input` (the SDK
/// script's call name).
fn upstream_script() -> crate::upstream::Script {
    Arc::new(|r: &Recorded| {
        let path = r.target.split('?').next().unwrap_or_default();
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if path.ends_with("/embeddings") {
            return Reply::json(200, &embeddings_reply(body["encoding_format"] == "base64"));
        }
        let sse = |events: Vec<Vec<u8>>| Reply::sse(events.into_iter().map(Step::Send).collect());
        match body["input"].as_str().unwrap_or_default() {
            "plain" => Reply::json(200, &response_object("Hello there", REPORTED_USAGE)),
            "no_usage" => Reply::json(200, &response_object("Hello there", "null")),
            "stream_text" => sse(text_stream()),
            "stream_tool" => sse(tool_stream()),
            "stream_failed" => sse(failed_stream()),
            "stream_error" => sse(error_stream()),
            "stream_ended" => {
                // The body ends (cleanly) before any ending event.
                let mut steps: Vec<Step> = opening().into_iter().map(Step::Send).collect();
                steps.push(Step::Send(text_delta(2, "Hel")));
                Reply::sse(steps)
            }
            "stream_cut" => {
                let mut steps: Vec<Step> = opening().into_iter().map(Step::Send).collect();
                steps.push(Step::Send(text_delta(2, "Hel")));
                // Let the bytes reach the wire before the reset (see serve.rs `reset_after`).
                steps.push(Step::Sleep(Duration::from_millis(50)));
                steps.push(Step::Abort);
                Reply::sse(steps)
            }
            other => Reply::json(
                400,
                &format!(r#"{{"error":{{"message":"unscripted {other}"}}}}"#),
            ),
        }
    })
}

/// A folder of connector files, one per `(id, config JSON)`, each with the test API key.
fn connectors(entries: &[(&str, String)]) -> PathBuf {
    let dir = write_file("placeholder", "")
        .parent()
        .unwrap()
        .join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    connectors_in(&dir, entries);
    dir
}

/// Writes the connector files of [`connectors`] into `dir`.
fn connectors_in(dir: &Path, entries: &[(&str, String)]) {
    for (id, config) in entries {
        std::fs::write(
            dir.join(format!("{id}.json")),
            format!(
                r#"{{"name":"Conn {id}","connector_type_id":".gen-ai","config":{config},"secrets":{{"apiKey":"{API_KEY}"}}}}"#
            ),
        )
        .unwrap();
    }
}

fn openai_config(url: &str, model: &str) -> String {
    format!(r#"{{"apiProvider":"OpenAI","apiUrl":"{url}","defaultModel":"{model}"}}"#)
}

fn azure_config(url: &str) -> String {
    format!(r#"{{"apiProvider":"Azure OpenAI","apiUrl":"{url}"}}"#)
}

/// A client token granted every connector and route.
fn tokens() -> PathBuf {
    write_file(
        "tokens.json",
        &format!(r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["*"]}}]}}"#),
    )
}

/// Runs the SDK script against `base_url` with `calls`; `None` (with a loud notice) when the
/// `openai` package is missing.
async fn sdk(base_url: &str, calls: &[&str]) -> Option<Value> {
    if !python_has("openai") {
        eprintln!(
            "\n\n!!! SKIPPED: the `openai` Python package is not importable. Install it with \
             `pip install -r tests/py/requirements.txt` (.ci/run does).\n\n"
        );
        return None;
    }
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/openai_responses_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(base_url).arg(CLIENT).args(calls);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_secret_in(&stdout);
    Some(serde_json::from_str(stdout.trim()).unwrap())
}

/// The event log's lines as JSON, checked to be `n`.
fn log_lines(events: &Path, n: usize) -> Vec<Value> {
    event_log(events, n)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A line's `gen_ai.usage`.
fn usage(line: &Value) -> &Value {
    &line["kibana"]["action"]["execution"]["gen_ai"]["usage"]
}

fn outcome(line: &Value) -> &str {
    line["event"]["outcome"].as_str().unwrap()
}

fn connector_of(line: &Value) -> &str {
    line["kibana"]["saved_objects"][0]["id"].as_str().unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Waits until the event log has `n` lines (a stream's line is written after its last byte).
async fn wait_for_lines(events: &Path, n: usize) {
    for _ in 0..100 {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        if text.lines().count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `responses.create` (whole), `embeddings.create` (base64, as the SDK asks by default, and
/// floats) and `models.list` through a connector route: what the SDK returns, what the upstream
/// received, one event-log line per execution with Responses' input/output tokens as prompt/
/// completion, and none for models, which never reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_embeddings_and_models_with_the_openai_sdk() {
    let upstream = Upstream::http(upstream_script()).await;
    let dir = connectors(&[(
        "oai",
        openai_config(&upstream.url("/v1/chat/completions"), "gpt-4.1"),
    )]);
    let (gw, events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens())], &[]);
    let base = gw.url("/connectors/oai/v1");
    let Some(v) = sdk(
        &base,
        &["plain", "embeddings", "embeddings_float", "models"],
    )
    .await
    else {
        return;
    };
    assert_eq!(
        v["plain"],
        json!({"id": "resp_1", "status": "completed", "output_text": "Hello there", "usage": [12, 3, 15]})
    );
    let vectors: Vec<Vec<f64>> = VECTORS
        .iter()
        .map(|v| v.iter().map(|x| f64::from(*x)).collect())
        .collect();
    let expected = json!({"model": "text-embedding-3-small", "vectors": vectors, "usage": [4, 4]});
    assert_eq!(v["embeddings"], expected);
    assert_eq!(v["embeddings_float"], expected);
    assert_eq!(v["models"], json!([["gpt-4.1", "model", "oai"]]));

    let sent = upstream.requests();
    assert_eq!(sent.len(), 3, "models.list reached the upstream: {sent:?}");
    for r in &sent {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
        assert!(!r.headers.iter().any(|(_, v)| v.contains(CLIENT)));
    }
    assert_eq!(sent[0].target, "/v1/responses");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body,
        json!({"input": "plain", "instructions": "Be brief.", "model": "gpt-4.1"})
    );
    assert_eq!(sent[1].target, "/v1/embeddings");
    let body: Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(
        body,
        json!({"model": "text-embedding-3-small", "input": ["alpha", "beta"], "encoding_format": "base64"})
    );
    let body: Value = serde_json::from_slice(&sent[2].body).unwrap();
    assert_eq!(body["encoding_format"], "float");

    let lines = log_lines(&events, 3);
    assert_eq!(
        usage(&lines[0]),
        &json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "source": "reported"})
    );
    for line in &lines[1..] {
        assert_eq!(
            usage(line),
            &json!({"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4, "source": "reported"})
        );
    }
    assert!(lines.iter().all(|l| outcome(l) == "success"));

    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    for line in [
        "openai_connector_requests_total{connector=\"oai\",route=\"responses\"} 1",
        "openai_connector_requests_total{connector=\"oai\",route=\"embeddings\"} 2",
        "openai_connector_requests_total{connector=\"oai\",route=\"chat_completions\"} 0",
        "openai_connector_prompt_tokens_total{connector=\"oai\",source=\"reported\"} 20",
        "openai_connector_completion_tokens_total{connector=\"oai\",source=\"reported\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert_no_secrets_in_stderr(&gw);
}

/// A Responses answer without `usage` is estimated from its input and output texts, and the
/// line says so (C106).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_answer_without_usage_is_logged_as_estimated() {
    let upstream = Upstream::http(upstream_script()).await;
    let dir = connectors(&[(
        "oai",
        openai_config(&upstream.url("/v1/chat/completions"), "gpt-4.1"),
    )]);
    let (gw, events) = gateway_with_log(&dir, "", &[], &[]);
    let (status, headers, text) = gw
        .call(
            "POST",
            "/connectors/oai/v1/responses",
            Some(ADMIN),
            r#"{"model":"gpt-4.1","input":"no_usage","instructions":"Be brief."}"#,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["usage"], Value::Null, "the answer is passed through");
    let lines = log_lines(&events, 1);
    let u = usage(&lines[0]);
    assert_eq!(u["source"], "estimated", "{u}");
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0, "{u}");
    assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{u}");
    assert!(u["tokenizer"].is_string(), "{u}");
}

/// URL derivation through `serve`: an Azure deployment URL sends Responses to the resource's
/// `/openai/responses?api-version=V` with the deployment as `model` (the body had none) and
/// embeddings to the deployment's `/embeddings`, with `api-key`; an `Other` URL keeps its own
/// path prefix. A connector whose URL cannot be mapped answers 404 with the reason, sends
/// nothing and logs the failed execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_and_other_urls_are_derived_and_unmappable_urls_answer_404() {
    let upstream = Upstream::http(upstream_script()).await;
    let dir = connectors(&[
        (
            "azure",
            azure_config(
                &upstream.url("/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"),
            ),
        ),
        (
            "other",
            format!(
                r#"{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"llama3"}}"#,
                upstream.url("/llm/api/v1/chat/completions")
            ),
        ),
        (
            "unmapped",
            openai_config(&upstream.url("/v1/generate"), "gpt-4.1"),
        ),
        (
            "azure-unmapped",
            azure_config(&upstream.url("/openai/chat?api-version=2024-10-21")),
        ),
    ]);
    let (gw, events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens())], &[]);
    let Some(azure) = sdk(
        &gw.url("/connectors/azure/v1"),
        &["plain_no_model", "embeddings", "models"],
    )
    .await
    else {
        return;
    };
    assert_eq!(azure["plain_no_model"]["output_text"], "Hello there");
    assert_eq!(azure["embeddings"]["usage"], json!([4, 4]));
    // No defaultModel: nothing to list (the deployment is in the URL).
    assert_eq!(azure["models"], json!([]));
    let other = sdk(&gw.url("/connectors/other/v1"), &["plain", "models"])
        .await
        .unwrap();
    assert_eq!(other["plain"]["usage"], json!([12, 3, 15]));
    assert_eq!(other["models"], json!([["llama3", "model", "other"]]));

    let sent = upstream.requests();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0].target, "/openai/responses?api-version=2024-10-21");
    assert_eq!(sent[0].header("api-key"), Some(API_KEY));
    assert_eq!(sent[0].header("authorization"), None);
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["model"], "dep-1", "the deployment is the model");
    assert_eq!(body["input"], "plain");
    assert_eq!(
        sent[1].target,
        "/openai/deployments/dep-1/embeddings?api-version=2024-10-21"
    );
    assert_eq!(sent[1].header("api-key"), Some(API_KEY));
    assert_eq!(sent[2].target, "/llm/api/v1/responses");
    assert_eq!(
        sent[2].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );

    for (id, path, reason) in [
        (
            "unmapped",
            "responses",
            "The connector's URL cannot be mapped to the Responses API: apiUrl does not end in /chat/completions",
        ),
        (
            "unmapped",
            "embeddings",
            "apiUrl does not end in /chat/completions",
        ),
        (
            "azure-unmapped",
            "responses",
            "Azure URL is not a deployment URL",
        ),
    ] {
        let (status, _, text) = gw
            .call(
                "POST",
                &format!("/connectors/{id}/v1/{path}"),
                Some(CLIENT),
                r#"{"model":"gpt-4.1","input":"plain"}"#,
            )
            .await;
        assert_eq!(status, 404, "{id} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message}");
        assert!(
            !message.contains("127.0.0.1"),
            "the URL is not quoted: {message}"
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(upstream.requests().len(), 3, "nothing more was sent");
    let lines = log_lines(&events, 6);
    for line in &lines[3..] {
        assert_eq!(outcome(line), "failure");
        assert_eq!(usage(line)["source"], "unavailable");
    }
    assert_no_secrets_in_stderr(&gw);
}

/// Named routes: a route's models are its connectors' default models, each once, in the route's
/// order; a connector whose URL cannot be mapped declines, so the next one answers (both
/// logged); auth and grants as for chat completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_routes_serve_models_responses_and_embeddings() {
    let upstream = Upstream::http(upstream_script()).await;
    let chat = upstream.url("/v1/chat/completions");
    let dir = connectors(&[
        ("a", openai_config(&upstream.url("/v1/generate"), "gpt-4.1")),
        ("b", openai_config(&chat, "gpt-4o")),
        ("c", openai_config(&chat, "gpt-4.1")),
    ]);
    let routes = write_file(
        "routes.json",
        r#"{"routes":{"mixed":{"connectors":["a","b","c"],"strategy":"fallback"}}}"#,
    );
    let tokens = write_file(
        "tokens.json",
        &format!(
            r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["mixed"]}},{{"token":"other-TOKEN-5e6f","connectors":["b"]}}]}}"#
        ),
    );
    let (gw, events) = gateway_with_log(
        &dir,
        "",
        &[
            "--routes",
            path_str(&routes),
            "--client-tokens",
            path_str(&tokens),
        ],
        &[],
    );
    let (status, _, text) = gw
        .call("GET", "/routes/mixed/v1/models", Some(CLIENT), "")
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"object": "list", "data": [
            {"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "a"},
            {"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "b"},
        ]})
    );
    // A token not granted the route, a missing route, a wrong method.
    for (method, path, token, expected) in [
        ("GET", "/routes/mixed/v1/models", "other-TOKEN-5e6f", 401),
        (
            "POST",
            "/routes/mixed/v1/responses",
            "other-TOKEN-5e6f",
            401,
        ),
        ("GET", "/routes/nope/v1/models", ADMIN, 404),
        ("POST", "/routes/mixed/v1/models", CLIENT, 405),
        ("GET", "/routes/mixed/v1/embeddings", CLIENT, 405),
    ] {
        let (status, _, text) = gw.call(method, path, Some(token), "{}").await;
        assert_eq!(status, expected, "{method} {path}: {text}");
        assert!(
            serde_json::from_str::<Value>(&text).unwrap()["error"]["message"].is_string(),
            "OpenAI's shape: {text}"
        );
    }
    let (status, headers, text) = gw
        .call(
            "POST",
            "/routes/mixed/v1/responses",
            Some(CLIENT),
            r#"{"model":"gpt-4.1","input":"plain"}"#,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("b"));
    let (status, headers, _) = gw
        .call(
            "POST",
            "/routes/mixed/v1/embeddings",
            Some(CLIENT),
            r#"{"model":"text-embedding-3-small","input":"x"}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("b"));
    let sent = upstream.requests();
    assert_eq!(
        sent.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["/v1/responses", "/v1/embeddings"]
    );
    let lines = log_lines(&events, 4);
    let summary: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (connector_of(l), outcome(l)))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", "failure"),
            ("b", "success"),
            ("a", "failure"),
            ("b", "success")
        ]
    );
}

/// Client limits count the new routes like chat completions; models, which runs nothing, is
/// authenticated but not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limits_apply_to_responses_and_embeddings() {
    let upstream = Upstream::http(upstream_script()).await;
    let dir = connectors(&[(
        "oai",
        openai_config(&upstream.url("/v1/chat/completions"), "gpt-4.1"),
    )]);
    let tokens = write_file(
        "tokens.json",
        &format!(
            r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["oai"],"limits":{{"requestsPerMinute":2}}}}]}}"#
        ),
    );
    let (gw, _) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens)], &[]);
    for _ in 0..3 {
        let (status, _, _) = gw
            .call("GET", "/connectors/oai/v1/models", Some(CLIENT), "")
            .await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = gw
        .call("GET", "/connectors/oai/v1/models", Some("wrong"), "")
        .await;
    assert_eq!(status, 401);
    let plain = r#"{"model":"gpt-4.1","input":"plain"}"#;
    let (status, _, _) = gw
        .call("POST", "/connectors/oai/v1/responses", Some(CLIENT), plain)
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = gw
        .call(
            "POST",
            "/connectors/oai/v1/embeddings",
            Some(CLIENT),
            r#"{"input":"x"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, text) = gw
        .call("POST", "/connectors/oai/v1/responses", Some(CLIENT), plain)
        .await;
    assert_eq!(status, 429, "{text}");
    assert!(header(&headers, "retry-after").is_some());
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "requests_per_minute");
    assert_eq!(upstream.requests().len(), 2);
}

/// A connector file for `execute` with `config`, id `cli-conn`.
fn connector_file(config: &str) -> PathBuf {
    write_file(
        "cli-conn.json",
        &format!(
            r#"{{"id":"cli-conn","name":"CLI","config":{config},"secrets":{{"apiKey":"{API_KEY}"}}}}"#
        ),
    )
}

/// `{"subAction": sub_action, "subActionParams": {"body": body}}`.
fn body_params(sub_action: &str, body: &str) -> PathBuf {
    write_file(
        "params.json",
        &json!({"subAction": sub_action, "subActionParams": {"body": body}}).to_string(),
    )
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `execute` with this project's sub-actions `responses` and `embeddings`: Kibana's `_execute`
/// shapes with the upstream's answer as `data`, an event-log line with the usage; a connector
/// whose URL cannot be mapped fails (exit 1) with the reason, sending nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_responses_and_embeddings() {
    let upstream = Upstream::http(upstream_script()).await;
    let file = connector_file(&openai_config(
        &upstream.url("/v1/chat/completions"),
        "gpt-4.1",
    ));
    let events = write_file("events.log", "");
    let run = |params: PathBuf| {
        let mut cmd = execute_cmd(&file, &params);
        cmd.arg("--event-log").arg(&events);
        run_cli(cmd)
    };
    let out = run(body_params(
        "responses",
        r#"{"input":"plain","instructions":"Be brief."}"#,
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{{\"connector_id\":\"cli-conn\",\"status\":\"ok\",\"data\":{}}}\n",
            response_object("Hello there", REPORTED_USAGE)
        )
    );
    let out = run(body_params("embeddings", r#"{"input":["alpha","beta"]}"#)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["data"],
        serde_json::from_str::<Value>(&embeddings_reply(false)).unwrap()
    );
    let sent = upstream.requests();
    assert_eq!(
        sent.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["/v1/responses", "/v1/embeddings"]
    );
    // The body is sent as given.
    assert_eq!(
        sent[0].body_str(),
        r#"{"input":"plain","instructions":"Be brief."}"#
    );
    let lines = log_lines(&events, 2);
    assert_eq!(
        usage(&lines[0]),
        &json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "source": "reported"})
    );
    assert_eq!(usage(&lines[1])["prompt_tokens"], 4);

    let unmapped = connector_file(&openai_config(&upstream.url("/v1/generate"), "gpt-4.1"));
    let out = run_cli(execute_cmd(
        &unmapped,
        body_params("responses", r#"{"input":"plain"}"#),
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["retry"], false);
    assert_eq!(
        v["service_message"],
        "The connector's URL cannot be mapped to the Responses API: apiUrl does not end in /chat/completions"
    );
    assert_eq!(upstream.requests().len(), 2, "nothing sent");
}

/// The SDK's `responses.create(stream=True)`, iterating the typed events: text, a function
/// call, `response.failed`, an `error` event mid-stream (both passed through as the upstream
/// sent them, the stream then ending cleanly), and a stream cut before `response.completed`,
/// by a reset or by a body that ends (the SDK raises the gateway's error event). Each execution logs its line: usage reported by
/// `response.completed`, or estimated from what arrived; failures counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_streams_with_the_openai_sdk() {
    let upstream = Upstream::http(upstream_script()).await;
    let dir = connectors(&[(
        "oai",
        openai_config(&upstream.url("/v1/chat/completions"), "gpt-4.1"),
    )]);
    let (gw, events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens())], &[]);
    let calls = [
        "stream_text",
        "stream_tool",
        "stream_failed",
        "stream_error",
        "stream_cut",
        "stream_ended",
    ];
    let Some(v) = sdk(&gw.url("/connectors/oai/v1"), &calls).await else {
        return;
    };
    let opening = json!([
        ["ResponseCreatedEvent", "response.created"],
        ["ResponseInProgressEvent", "response.in_progress"]
    ]);
    let text = &v["stream_text"];
    assert_eq!(text["raised"], Value::Null, "{text}");
    assert_eq!(text["deltas"], json!(["Hel", "lo!"]));
    let types: Vec<&str> = text["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(
        text["events"][4][0], "ResponseTextDeltaEvent",
        "typed events"
    );
    assert_eq!(text["events"][9][0], "ResponseCompletedEvent");
    assert_eq!(text["final"]["status"], "completed");
    assert_eq!(text["final"]["usage"], json!([12, 3, 15]));
    assert_eq!(text["final"]["output"][0]["content"][0]["text"], "Hello!");

    let tool = &v["stream_tool"];
    assert_eq!(tool["raised"], Value::Null, "{tool}");
    assert_eq!(tool["arguments"], json!(["{\"city\":", "\"Paris\"}"]));
    assert_eq!(
        tool["events"][3],
        json!([
            "ResponseFunctionCallArgumentsDeltaEvent",
            "response.function_call_arguments.delta"
        ])
    );
    let call = &tool["final"]["output"][0];
    assert_eq!(
        (
            &call["type"],
            &call["name"],
            &call["arguments"],
            &call["call_id"]
        ),
        (
            &json!("function_call"),
            &json!("get_weather"),
            &json!("{\"city\":\"Paris\"}"),
            &json!("call_1")
        )
    );
    assert_eq!(tool["final"]["usage"], json!([20, 7, 27]));

    let failed = &v["stream_failed"];
    assert_eq!(failed["raised"], Value::Null, "ends cleanly: {failed}");
    assert_eq!(failed["deltas"], json!(["Par"]));
    assert_eq!(failed["final"]["status"], "failed");
    assert_eq!(
        failed["final"]["error"],
        json!({"code": "server_error", "message": "The model failed to generate a response."})
    );
    let last = failed["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!(["ResponseFailedEvent", "response.failed"]),
        "nothing after it"
    );

    let error = &v["stream_error"];
    assert_eq!(error["raised"], Value::Null, "ends cleanly: {error}");
    assert_eq!(
        error["error_event"],
        json!({"code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-4.1"})
    );
    assert_eq!(
        error["events"].as_array().unwrap().last().unwrap(),
        &json!(["ResponseErrorEvent", "error"])
    );

    let cut = &v["stream_cut"];
    assert_eq!(cut["deltas"], json!(["Hel"]));
    assert_eq!(cut["raised"]["error"], "APIError", "{cut}");
    assert!(
        cut["raised"]["message"]
            .as_str()
            .unwrap()
            .contains("ECONNRESET"),
        "{cut}"
    );
    assert_eq!(
        cut["events"].as_array().unwrap()[..2],
        opening.as_array().unwrap()[..]
    );
    // A body that ends before any ending event: the gateway tells the client.
    let ended = &v["stream_ended"];
    assert_eq!(ended["deltas"], json!(["Hel"]));
    assert_eq!(
        ended["raised"],
        json!({"error": "APIError", "message": "Stream error: the stream ended before response.completed"}),
        "{ended}"
    );

    let sent = upstream.requests();
    assert_eq!(sent.len(), 6);
    for (r, call) in sent.iter().zip(calls) {
        assert_eq!(r.target, "/v1/responses");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"input": call, "model": "gpt-4.1", "stream": true})
        );
    }

    wait_for_lines(&events, 6).await;
    let lines = log_lines(&events, 6);
    let outcomes: Vec<&str> = lines.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            "success", "success", "failure", "failure", "failure", "failure"
        ]
    );
    assert_eq!(
        usage(&lines[0]),
        &json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15, "source": "reported"})
    );
    assert_eq!(
        usage(&lines[1]),
        &json!({"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27, "source": "reported"})
    );
    // No usage reported: the estimate of the input and of the text that arrived.
    for line in &lines[2..] {
        let u = usage(line);
        assert_eq!(u["source"], "estimated", "{u}");
        assert!(u["prompt_tokens"].as_u64().unwrap() > 0, "{u}");
        assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{u}");
    }
    let message = |line: &Value| line["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message(&lines[2]).contains("The model failed to generate a response."),
        "{}",
        message(&lines[2])
    );
    assert!(
        message(&lines[3]).contains("Rate limit reached for gpt-4.1"),
        "{}",
        message(&lines[3])
    );
    assert!(message(&lines[4]).contains("ECONNRESET"));
    assert!(message(&lines[5]).contains("ended before response.completed"));
    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    for line in [
        "openai_connector_requests_total{connector=\"oai\",route=\"responses\"} 6",
        "openai_connector_request_failures_total{connector=\"oai\",route=\"responses\"} 4",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    assert_no_secrets_in_stderr(&gw);
}

/// A streamed Responses answer is `text/event-stream` with the upstream's bytes, each event
/// reaching the client while the upstream still holds the next (C41), through a connector
/// route and a named route whose first connector cannot map its URL; after `response.failed`
/// the body ends with exactly the upstream's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_passes_the_events_through_as_they_arrive() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let upstream = Upstream::http(Arc::new(move |r: &Recorded| {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        if body["input"] == "stream_failed" {
            return Reply::sse(failed_stream().into_iter().map(Step::Send).collect());
        }
        let mut steps: Vec<Step> = text_stream().into_iter().map(Step::Send).collect();
        steps.insert(1, Step::Wait(held.clone()));
        Reply::sse(steps)
    }))
    .await;
    let dir = connectors(&[
        ("a", openai_config(&upstream.url("/v1/generate"), "gpt-4.1")),
        (
            "b",
            openai_config(&upstream.url("/v1/chat/completions"), "gpt-4.1"),
        ),
    ]);
    let routes = write_file(
        "routes.json",
        r#"{"routes":{"r":{"connectors":["a","b"]}}}"#,
    );
    let (gw, events) = gateway_with_log(&dir, "", &["--routes", path_str(&routes)], &[]);
    let all: Vec<u8> = text_stream().concat();
    for path in ["/connectors/b/v1/responses", "/routes/r/v1/responses"] {
        let mut response = gw
            .open(
                path,
                r#"{"model":"gpt-4.1","input":"stream_text","stream":true}"#,
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        let first = next_chunk(&mut response).await.unwrap();
        assert_eq!(first.as_bytes(), &text_stream()[0][..], "{path}");
        gate.notify_one();
        let mut rest = first;
        while let Some(chunk) = next_chunk(&mut response).await {
            rest.push_str(&chunk);
        }
        assert_eq!(rest.as_bytes(), &all[..], "{path}: the upstream's bytes");
    }
    let (status, headers, text) = gw
        .call(
            "POST",
            "/routes/r/v1/responses",
            Some(ADMIN),
            r#"{"model":"gpt-4.1","input":"stream_failed","stream":true}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("b"));
    assert_eq!(
        text.as_bytes(),
        &failed_stream().concat()[..],
        "nothing added after response.failed"
    );
    wait_for_lines(&events, 5).await;
    let lines = log_lines(&events, 5);
    let summary: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (connector_of(l), outcome(l)))
        .collect();
    assert_eq!(
        summary,
        [
            ("b", "success"),
            ("a", "failure"),
            ("b", "success"),
            ("a", "failure"),
            ("b", "failure")
        ]
    );
}

/// `execute` with a streamed `responses`: the upstream's SSE bytes on stdout, exactly; after
/// `response.failed` the bytes stand, the message goes to stderr and the exit is 1; each run
/// logs its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_streams_responses_to_stdout() {
    let upstream = Upstream::http(upstream_script()).await;
    let file = connector_file(&openai_config(
        &upstream.url("/v1/chat/completions"),
        "gpt-4.1",
    ));
    let events = write_file("events.log", "");
    let run = |input: &str| {
        let params = body_params(
            "responses",
            &json!({"model": "gpt-4.1", "input": input, "stream": true}).to_string(),
        );
        let mut cmd = execute_cmd(&file, &params);
        cmd.arg("--event-log").arg(&events);
        run_cli(cmd)
    };
    let out = run("stream_text").await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(out.stdout, text_stream().concat());
    let out = run("stream_failed").await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, failed_stream().concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("The model failed to generate a response."),
        "{stderr}"
    );
    let lines = log_lines(&events, 2);
    assert_eq!(usage(&lines[0])["source"], "reported");
    assert_eq!(usage(&lines[0])["prompt_tokens"], 12);
    assert_eq!(outcome(&lines[1]), "failure");
}

/// `/v1/models` answers from the configuration in force: after SIGHUP, the connectors'
/// new `defaultModel` (cli.md "Reload").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_follow_a_reload() {
    let dir = connectors(&[(
        "oai",
        openai_config("http://127.0.0.1:9/v1/chat/completions", "gpt-4.1"),
    )]);
    let (gw, _) = gateway_with_log(&dir, "", &[], &[]);
    assert_eq!(first_model(&gw).await, "gpt-4.1");
    connectors_in(
        &dir,
        &[(
            "oai",
            openai_config("http://127.0.0.1:9/v1/chat/completions", "gpt-4o"),
        )],
    );
    let line = crate::reload::hang_up(&gw, 1).await;
    assert!(line.starts_with("reloaded: "), "{line}");
    assert_eq!(first_model(&gw).await, "gpt-4o");
}

/// The first model `GET /connectors/oai/v1/models` lists.
async fn first_model(gw: &crate::serve::Gateway) -> Value {
    let (status, _, text) = gw
        .call("GET", "/connectors/oai/v1/models", Some(ADMIN), "")
        .await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["data"][0]["id"].clone()
}
