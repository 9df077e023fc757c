//! Every provider end to end: what the upstream received, byte for byte, and what the caller got.

use crate::support::*;
use crate::upstream::{Reply, Upstream};
use openai_connector_harness::{Settings, UsageSource};
use std::collections::BTreeMap;

/// Checks `r` carries exactly the headers of a JSON request of `body` to `upstream`: `pairs`
/// and those every such request carries (host, content type, accept, user agent, length).
fn assert_headers(
    r: &crate::upstream::Recorded,
    upstream: &Upstream,
    body: &str,
    pairs: &[(&str, &str)],
) {
    let host = upstream.addr.to_string();
    let length = body.len().to_string();
    let common = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/plain, */*"),
        ("user-agent", USER_AGENT),
        ("content-length", length.as_str()),
    ];
    let expected: BTreeMap<String, String> = common
        .iter()
        .chain(pairs)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let got: BTreeMap<String, String> = r.headers.iter().cloned().collect();
    assert_eq!(got, expected);
}

const USER_AGENT: &str = concat!("openai-connector/", env!("CARGO_PKG_VERSION"));

#[tokio::test]
async fn openai_run_sends_exact_request_and_returns_provider_json() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let config = format!(
        r#"{{"apiProvider":"OpenAI","apiUrl":"{}","organizationId":"org-1","projectId":"","headers":{{"X-Team":"a","authorization":"override"}}}}"#,
        upstream.url("/v1//chat/completions/")
    );
    let c = connector(&config, &key_secrets());
    let e = execute(
        &executor(Settings::default()),
        &c,
        &run_params("run", r#"{"messages":[{"role":"user","content":"Hi"}],"temperature":0.70,"seed":12345678901234567890,"tool_choice":"auto"}"#),
    )
    .await;
    let r = upstream.only_request();
    // C43, C45: POST to the normalised URL.
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/v1/chat/completions");
    // C52, C55, C60, D12: model added, tool_choice stripped, numbers as written, key order kept.
    let body = r#"{"messages":[{"role":"user","content":"Hi"}],"temperature":0.70,"seed":12345678901234567890,"model":"gpt-4.1"}"#;
    assert_eq!(r.body_str(), body);
    // C46–C48: custom headers, organisation/project (even empty), auth replaces the custom one.
    assert_headers(
        &r,
        &upstream,
        body,
        &[
            ("x-team", "a"),
            ("authorization", &format!("Bearer {API_KEY}")),
            ("openai-organization", "org-1"),
            ("openai-project", ""),
        ],
    );
    // C40: the provider's object as received, numbers spelled as received.
    assert_eq!(data(&e), COMPLETION);
    // C107: reported usage.
    let u = &e.usage;
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (9, 2, 11)
    );
    assert_eq!(u.source, UsageSource::Reported);
    // C118
    assert_eq!(e.request_body_bytes, Some(body.len() as u64));
}

#[tokio::test]
async fn azure_test_uses_api_key_header_and_keeps_query() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let url = upstream.url("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21");
    let config = format!(
        r#"{{"apiProvider":"Azure OpenAI","apiUrl":"{url}","defaultModel":"gpt-4o","headers":{{"Authorization":"Custom abc"}}}}"#
    );
    let c = connector(&config, &key_secrets());
    let e = execute(
        &executor(Settings::default()),
        &c,
        &run_params("test", r#"{"messages":[],"model":"","tool_choice":"auto"}"#),
    )
    .await;
    let r = upstream.only_request();
    // C43: query sent as configured.
    assert_eq!(
        r.target,
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    );
    // C57: stream flag and model set; tool parameters kept.
    let body = r#"{"messages":[],"model":"gpt-4o","tool_choice":"auto","stream":false}"#;
    assert_eq!(r.body_str(), body);
    // C46, C47: api-key, custom Authorization sent unchanged beside it.
    assert_headers(
        &r,
        &upstream,
        body,
        &[("authorization", "Custom abc"), ("api-key", API_KEY)],
    );
    assert_eq!(data(&e), COMPLETION);
}

#[tokio::test]
async fn azure_non_deployment_url_sends_body_unchanged() {
    // C56, E5
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let config = format!(
        r#"{{"apiProvider":"Azure OpenAI","apiUrl":"{}","defaultModel":"gpt-4o"}}"#,
        upstream.url("/llm/chat?api-version=2024-10-21")
    );
    let c = connector(&config, &key_secrets());
    execute(
        &executor(Settings::default()),
        &c,
        &run_params("run", r#"{ "messages": [] }"#),
    )
    .await;
    assert_eq!(upstream.only_request().body_str(), r#"{ "messages": [] }"#);
}

#[tokio::test]
async fn other_run_and_invoke_ai() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let config = format!(
        r#"{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"llama3"}}"#,
        upstream.url("/v1/chat/completions")
    );
    let c = connector(&config, &key_secrets());
    let ex = executor(Settings::default());
    // C58–C60, E6: stream flag set, no model on the run path, tool params stripped.
    execute(
        &ex,
        &c,
        &run_params(
            "run",
            r#"{"messages":[],"tools":[],"parallel_tool_calls":false,"function_call":"auto"}"#,
        ),
    )
    .await;
    // C38, C39: invokeAI builds the body from params and returns {message, usage}.
    let e = execute(
        &ex,
        &c,
        r#"{"subAction":"invokeAI","subActionParams":{"temperature":"0.2","messages":[{"role":"user","content":"Hi"}],"timeout":5000}}"#,
    )
    .await;
    let reqs = upstream.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].body_str(),
        r#"{"messages":[],"tools":[],"stream":false}"#
    );
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(
        reqs[1].body_str(),
        r#"{"temperature":0.2,"messages":[{"role":"user","content":"Hi"}],"stream":false}"#
    );
    assert_eq!(
        data(&e),
        r#"{"message":"Hello there","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#
    );
}

#[tokio::test]
async fn response_without_usage_succeeds_with_usage_unavailable() {
    // C108, D7
    let body = r#"{"choices":[{"message":{"role":"assistant","content":"ok"}}]}"#;
    let upstream = Upstream::always(Reply::json(200, body)).await;
    let c = connector(&other_config(&upstream.url("/v1")), &key_secrets());
    let ex = executor(Settings::default());
    let e = execute(&ex, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), body);
    assert_eq!(e.usage.source, UsageSource::Unavailable);
    let e = execute(
        &ex,
        &c,
        r#"{"subAction":"invokeAI","subActionParams":{"messages":[]}}"#,
    )
    .await;
    // C39: zeros are returned, but the source says unavailable.
    assert_eq!(
        data(&e),
        r#"{"message":"ok","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#
    );
    assert_eq!(e.usage.source, UsageSource::Unavailable);
}

#[tokio::test]
async fn unparseable_and_non_object_bodies_are_sent_unchanged() {
    // C50, C51, C61, E8
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let config = format!(
        r#"{{"apiProvider":"OpenAI","apiUrl":"{}"}}"#,
        upstream.url("/v1/chat/completions")
    );
    let c = connector(&config, &key_secrets());
    let ex = executor(Settings::default());
    for (sent, expected_body) in [
        (r#"{"messages": ["#, r#"{"messages": ["#),
        ("", "{}"),
        ("[1,2]", "[1,2]"),
        ("  ", "  "),
    ] {
        execute(&ex, &c, &run_params("run", sent)).await;
        let last = upstream.requests().pop().unwrap();
        assert_eq!(last.body_str(), expected_body, "for body {sent:?}");
        assert_eq!(
            last.header("content-length"),
            Some(expected_body.len().to_string().as_str())
        );
    }
}

#[tokio::test]
async fn exact_openai_url_rules_through_the_component_request_builder() {
    // C54, E1, E2: the exact-URL rule cannot reach api.openai.com from a test; the component's
    // `requests.build` export shows the request it would send.
    let c = connector(
        r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}"#,
        &key_secrets(),
    );
    let ex = executor(Settings::default());
    let mut instance = harness()
        .instantiate(std::sync::Arc::new(
            openai_connector_harness::OutboundPolicy::deny_all(),
        ))
        .await
        .unwrap();
    let dep = ex.settings();
    let p1 = run_params(
        "run",
        r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
    );
    let built = instance.build_request(&c, dep, &p1).await.unwrap().unwrap();
    assert_eq!(
        built.request.url,
        "https://api.openai.com/v1/chat/completions"
    );
    assert_eq!(
        String::from_utf8(built.request.body).unwrap(),
        r#"{"messages":[{"role":"user","content":"Hi"}],"stream":false,"stream_options":{"include_usage":true},"model":"gpt-4.1"}"#
    );
    assert!(!built.streaming);
    // C62: default total timeout.
    assert_eq!(built.total_timeout_ms, 200_000);
    assert_eq!(built.idle_timeout_ms, None);
    let p2 = r#"{"subAction":"stream","subActionParams":{"stream":true,"timeout":"600000","body":"{\"model\":\"gpt-4o\",\"stream_options\":{\"include_usage\":false},\"temperature\":0.70,\"seed\":12345678901234567890}"}}"#;
    let built = instance.build_request(&c, dep, p2).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(built.request.body).unwrap(),
        r#"{"model":"gpt-4o","stream_options":{"include_usage":true},"temperature":0.70,"seed":12345678901234567890,"stream":true}"#
    );
    assert!(built.streaming);
    assert_eq!(built.total_timeout_ms, 600_000);
    // C63: streams also get an idle timeout of responseTimeout.
    assert_eq!(built.idle_timeout_ms, Some(60_000));
    no_secret_in(&format!("{:?}", built.request.url));
}
