//! C121a (C32, C121): no secret the harness knows leaves the process, in any form, whatever a
//! proxy echoes back: the proxy URL's password (verbatim, as written in the URL, and as the
//! base64 of `user:password`), `proxyHeaders` values, `serve`'s admin and client tokens, and
//! the API key verbatim, in base64 and percent-encoded. Checked on `execute`'s stdout, stderr
//! (at trace level) and event log, and on `serve`'s responses (whole and streamed), stderr and
//! event log.

use crate::proxy::{ProxyBehaviour, ProxyRequest, TestProxy};
use crate::serve::Gateway;
use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use std::sync::Arc;
use std::time::Duration;

const USER: &str = "proxy-user";
/// A password that must be escaped in the URL.
const PASSWORD: &str = "p@ss:w/rd-S3CRET~x";
const PASSWORD_IN_URL: &str = "p%40ss%3Aw%2Frd-S3CRET~x";
const HEADER_VALUE: &str = "proxy-header-VALUE-s3cret";
/// The credentials of a `proxyHeaders` value `Bearer <credentials>`.
const HEADER_BEARER: &str = "proxy-bearer-S3CRET";
const ADMIN: &str = "admin-TOKEN-redaction-5e1f";
const CLIENT: &str = "client-TOKEN-redaction-9a2b";
/// Everything that handles secrets logs at its most detailed level.
const TRACE: &str = "warn,openai_connector_harness=trace,openai_connector=trace,hyper=trace,hyper_util=trace,wasmtime_wasi_http=trace";

/// The forms of the secrets that must appear nowhere, with their names; the tokens only where
/// `serve` knows them.
fn forbidden(with_tokens: bool) -> Vec<(String, &'static str)> {
    let mut forms = vec![
        (PASSWORD.to_owned(), "the proxy password"),
        (
            PASSWORD_IN_URL.to_owned(),
            "the proxy password as in the URL",
        ),
        (
            STANDARD.encode(format!("{USER}:{PASSWORD}")),
            "base64(user:password)",
        ),
        (HEADER_VALUE.to_owned(), "a proxyHeaders value"),
        (HEADER_BEARER.to_owned(), "a proxyHeaders credential"),
        (API_KEY.to_owned(), "the API key"),
        (STANDARD.encode(API_KEY), "base64(API key)"),
        (URL_SAFE_NO_PAD.encode(API_KEY), "URL-safe base64(API key)"),
        (
            utf8_percent_encode(API_KEY, NON_ALPHANUMERIC).to_string(),
            "the percent-encoded API key",
        ),
    ];
    if with_tokens {
        forms.push((ADMIN.to_owned(), "the admin token"));
        forms.push((CLIENT.to_owned(), "a client token"));
        forms.push((STANDARD.encode(CLIENT), "base64(client token)"));
    }
    forms
}

/// Panics if `text` holds a forbidden form.
fn assert_clean(what: &str, text: &str, with_tokens: bool) {
    for (form, name) in forbidden(with_tokens) {
        assert!(!text.contains(&form), "{what}: {name} leaked: {text}");
    }
}

/// A 407 whose JSON error message echoes the request: every header, and every word of every
/// header value base64-encoded, URL-safe base64-encoded, percent-encoded and, when it is
/// base64, decoded.
fn echo(request: &ProxyRequest) -> (u16, Vec<(String, String)>, String) {
    let mut text = format!("{} {}", request.method, request.target);
    for (name, value) in &request.headers {
        text.push_str(&format!("; {name}: {value}"));
        for word in value.split_whitespace() {
            text.push_str(&format!(
                " [{} {} {}]",
                STANDARD.encode(word),
                URL_SAFE_NO_PAD.encode(word),
                utf8_percent_encode(word, NON_ALPHANUMERIC)
            ));
            if let Ok(decoded) = STANDARD.decode(word)
                && let Ok(decoded) = String::from_utf8(decoded)
            {
                text.push_str(&format!(" [decoded {decoded}]"));
            }
        }
    }
    (
        407,
        vec![("Content-Type".into(), "application/json".into())],
        serde_json::json!({"error": {"message": text}}).to_string(),
    )
}

async fn echoing_proxy() -> TestProxy {
    TestProxy::start(ProxyBehaviour {
        answer: Arc::new(echo),
        refuse_connect: Some(Arc::new(echo)),
        ..ProxyBehaviour::default()
    })
    .await
}

fn settings_file(proxy: &TestProxy) -> std::path::PathBuf {
    write_file(
        "settings.json",
        &serde_json::json!({
            "proxyUrl": format!("http://{USER}:{PASSWORD_IN_URL}@{}", proxy.addr),
            "proxyHeaders": {"X-Proxy-Token": HEADER_VALUE, "X-Proxy-Auth": format!("Bearer {HEADER_BEARER}")},
        })
        .to_string(),
    )
}

/// A connector for `url` with the API key and `headers` (sent to the upstream, so to the proxy
/// for an http target).
fn connector_json(id: &str, url: &str, headers: serde_json::Value) -> String {
    serde_json::json!({
        "id": id, "name": id, "connector_type_id": ".gen-ai",
        "config": {"apiProvider": "Other", "apiUrl": url, "defaultModel": "gpt-4o", "headers": headers},
        "secrets": {"apiKey": API_KEY},
    })
    .to_string()
}

/// `api.example.test` resolves nowhere: only the proxy answers for it.
const PLAIN_URL: &str = "http://api.example.test:8080/v1/chat/completions";
const TUNNEL_URL: &str = "https://api.example.test:8443/v1/chat/completions";

/// `run` with a chat body.
fn chat_run_params() -> String {
    run_params("run", r#"{"messages":[{"role":"user","content":"Hi"}]}"#)
}

/// `stream` with the stream flag and a chat body.
fn chat_stream_params() -> String {
    serde_json::json!({"subAction": "stream", "subActionParams": {
        "stream": true, "body": r#"{"messages":[{"role":"user","content":"Hi"}]}"#}})
    .to_string()
}

// C121a: `execute` through a proxy that answers 407 and echoes every request header: the
// message keeps the echo with each secret replaced, on stdout, stderr and in the event log; for
// an http target (absolute form: the API key goes to the proxy), whole and streamed, and for an
// https target (the proxy refuses the CONNECT).
#[tokio::test]
async fn c121a_execute_redacts_proxy_credentials_and_encoded_api_keys() {
    let proxy = echoing_proxy().await;
    let settings = settings_file(&proxy);
    let plain = write_file(
        "plain.json",
        &connector_json("plain", PLAIN_URL, serde_json::json!({})),
    );
    let tunnel = write_file(
        "tunnel.json",
        &connector_json("tunnel", TUNNEL_URL, serde_json::json!({})),
    );
    for (file, params, method) in [
        (&plain, chat_run_params(), "POST"),
        (&plain, chat_stream_params(), "POST"),
        (&tunnel, chat_run_params(), "CONNECT"),
    ] {
        let params = write_file("params.json", &params);
        let log = write_file("events.ndjson", "");
        let mut cmd = execute_cmd(file, &params);
        cmd.arg("--settings")
            .arg(&settings)
            .arg("--event-log")
            .arg(&log)
            .env("OPENAI_CONNECTOR_LOG", TRACE);
        let out = run_cli(cmd).await;
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let log = std::fs::read_to_string(&log).unwrap();
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        // The echo reached the message, with the secrets replaced.
        let line: serde_json::Value = serde_json::from_str(stdout.trim_end()).unwrap();
        let message = line["service_message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "Status code: 407. Message: API Error: Proxy Authentication Required - {method} "
            )),
            "{message}"
        );
        assert!(message.contains("x-proxy-token: [REDACTED]"), "{message}");
        assert!(
            message.contains("proxy-authorization: Basic [REDACTED]"),
            "{message}"
        );
        if method == "POST" {
            assert!(
                message.contains(
                    "; authorization: Bearer [REDACTED] [QmVhcmVy QmVhcmVy Bearer] [[REDACTED] [REDACTED] [REDACTED]];"
                ),
                "{message}"
            );
        }
        let logged: serde_json::Value = serde_json::from_str(log.trim_end()).unwrap();
        assert_eq!(
            logged["error"]["message"],
            format!("an error occurred while running the action: {message}; retry: true")
        );
        assert_clean("stdout", &stdout, false);
        assert_clean("stderr", &stderr, false);
        assert_clean("event log", &log, false);
    }
    // The proxy did receive the secrets, so a leak would show.
    let seen = proxy.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0].header("proxy-authorization"),
        Some(format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}"))).as_str())
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(seen[2].method, "CONNECT");
}

// C121a: `serve` through the same proxy: `_execute` and the chat-completions route, whole and
// streamed (the stream's error event), for http and https targets; the connector's own headers
// carry the admin and client tokens to the proxy, which echoes them too.
#[tokio::test]
async fn c121a_serve_redacts_proxy_credentials_tokens_and_encoded_api_keys() {
    let proxy = echoing_proxy().await;
    let settings = settings_file(&proxy);
    let dir = scratch_dir("c121a-serve-connectors");
    std::fs::create_dir_all(&dir).unwrap();
    let token_headers = serde_json::json!({"X-Echo-Admin": ADMIN, "X-Echo-Client": CLIENT});
    std::fs::write(
        dir.join("plain.json"),
        connector_json("plain", PLAIN_URL, token_headers),
    )
    .unwrap();
    std::fs::write(
        dir.join("tunnel.json"),
        connector_json("tunnel", TUNNEL_URL, serde_json::json!({})),
    )
    .unwrap();
    let tokens = write_file(
        "tokens.json",
        &serde_json::json!({"tokens": [{"token": CLIENT, "connectors": ["*"]}]}).to_string(),
    );
    let log = write_file("events.ndjson", "");
    let gateway = Gateway::start_with_env(
        &[
            "--connectors",
            dir.to_str().unwrap(),
            "--settings",
            settings.to_str().unwrap(),
            "--event-log",
            log.to_str().unwrap(),
            "--client-tokens",
            tokens.to_str().unwrap(),
        ],
        Some(ADMIN),
        &[("OPENAI_CONNECTOR_LOG", TRACE)],
    );
    let hi = r#"{"messages":[{"role":"user","content":"Hi"}]"#;
    let calls = [
        (
            "/api/actions/connector/plain/_execute",
            ADMIN,
            format!(r#"{{"params":{}}}"#, chat_run_params()),
        ),
        (
            "/api/actions/connector/plain/_execute",
            ADMIN,
            format!(r#"{{"params":{}}}"#, chat_stream_params()),
        ),
        (
            "/api/actions/connector/tunnel/_execute",
            ADMIN,
            format!(r#"{{"params":{}}}"#, chat_run_params()),
        ),
        (
            "/connectors/plain/v1/chat/completions",
            CLIENT,
            format!(r#"{hi},"stream":false}}"#),
        ),
        (
            "/connectors/plain/v1/chat/completions",
            CLIENT,
            format!(r#"{hi},"stream":true}}"#),
        ),
        (
            "/connectors/tunnel/v1/chat/completions",
            CLIENT,
            format!(r#"{hi},"stream":true}}"#),
        ),
    ];
    for (path, token, body) in &calls {
        let (_, _, text) = gateway.call("POST", path, Some(token), body).await;
        assert!(
            text.contains("Status code: 407. Message: API Error: Proxy Authentication Required - ")
                && text.contains("x-proxy-token: [REDACTED]"),
            "{path} {body}: {text}"
        );
        if path.contains("plain") {
            assert!(
                text.contains("x-echo-admin: [REDACTED]")
                    && text.contains("x-echo-client: [REDACTED]"),
                "{path}: {text}"
            );
        }
        assert_clean(&format!("{path} {body}"), &text, true);
    }
    assert_eq!(proxy.requests().len(), calls.len());
    // Each execution's line is written when it ends; a streamed one just after its last byte.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.lines().count() >= calls.len() || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(logged.lines().count(), calls.len(), "{logged}");
    for line in logged.lines() {
        assert!(line.contains("[REDACTED]"), "{line}");
    }
    assert_clean("event log", &logged, true);
    assert_clean("serve's stderr", &gateway.stderr(), true);
}
