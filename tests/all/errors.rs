//! Error mapping, limits, redirects and refusals, through the real component.

use crate::support::*;
use crate::upstream::{Reply, Upstream};
use openai_connector_harness::{Settings, UsageSource};
use std::sync::Arc;
use std::time::Duration;

async fn fail_with(reply: Reply) -> (String, bool) {
    let upstream = Upstream::always(reply).await;
    let c = other_connector(&upstream, &key_secrets());
    let e = execute(&executor(Settings::default()), &c, &run_params("run", "{}")).await;
    assert_eq!(e.usage.source, UsageSource::Unavailable);
    let f = failure(&e);
    (f.service_message.clone(), f.retry)
}

#[tokio::test]
async fn c72_http_error_table() {
    let cases = [
        (
            400,
            r#"{"error":{"message":"model is required"}}"#,
            "Status code: 400. Message: API Error: Bad Request - model is required",
        ),
        (
            401,
            r#"{"error":{"message":"Incorrect API key provided"}}"#,
            "Status code: 401. Message: Unauthorized API Error - Incorrect API key provided",
        ),
        (401, "", "Status code: 401. Message: Unauthorized API Error"),
        (
            500,
            r#"{"error":"Unexpected endpoint or method."}"#,
            "Status code: 500. Message: API Error: Internal Server Error - Unexpected endpoint or method.",
        ),
        (
            400,
            r#"{"error":{"code":"invalid_value","param":"tools"}}"#,
            r#"Status code: 400. Message: API Error: Bad Request - {"code":"invalid_value","param":"tools"}"#,
        ),
        (
            429,
            r#"{"error":{"message":"slow down"}}"#,
            "Status code: 429. Message: API Error: Too Many Requests - slow down",
        ),
        (599, "", "Status code: 599. Message: API Error: Unknown"),
    ];
    for (status, body, message) in cases {
        let (got, retry) = fail_with(Reply::json(status, body)).await;
        assert_eq!(got, message, "status {status} body {body}");
        assert!(retry, "C77: HTTP errors are retryable");
    }
    // C72: a non-JSON error body gives no error text.
    let (got, _) = fail_with(Reply::text(502, "<html>bad gateway</html>")).await;
    assert_eq!(got, "Status code: 502. Message: API Error: Bad Gateway");
}

#[tokio::test]
async fn c73_old_azure_api_version_message() {
    let (got, _) = fail_with(Reply::json(
        404,
        r#"{"error":{"message":"Unrecognized request argument supplied: functions"}}"#,
    ))
    .await;
    assert_eq!(
        got,
        "Status code: 404. Message: API Error: 404 Unrecognized request argument supplied: functions\n        \n\nFunction support with Azure OpenAI API was added in 2023-07-01-preview. Update the API version of the Azure OpenAI connector in use\n      "
    );
}

#[tokio::test]
async fn c69_success_bodies_that_fail_validation() {
    let (got, _) = fail_with(Reply::text(200, "not json")).await;
    assert_eq!(
        got,
        "Response validation failed (expected value of type [object] but got [string])"
    );
    let (got, _) = fail_with(Reply::json(200, r#"{"id":"x"}"#)).await;
    assert_eq!(
        got,
        "Response validation failed ([choices]: expected value of type [array] but got [undefined])"
    );
    // A legacy completion (text, no message) is refused.
    let (got, _) = fail_with(Reply::json(200, r#"{"choices":[{"text":"hi","index":0}]}"#)).await;
    assert!(
        got.starts_with("Response validation failed ([choices.0.message]: "),
        "{got}"
    );
}

#[tokio::test]
async fn c65_oversize_response_fails() {
    let upstream = Upstream::always(Reply::json(
        200,
        &format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000)),
    ))
    .await;
    let c = connector(&other_config(&upstream.url("/v1")), &key_secrets());
    let settings =
        Settings::from_json(&serde_json::json!({"maxResponseContentLength": "1kb"})).unwrap();
    let e = execute(&executor(settings), &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: ERR_BAD_RESPONSE - maxContentLength size of 1024 exceeded"
    );
    // C118: the request was sent.
    assert_eq!(
        e.request_body_bytes,
        Some(b"{\"stream\":false}".len() as u64)
    );
}

#[tokio::test]
async fn c62_c64_total_timeout() {
    let upstream = Upstream::always(Reply::Delayed(
        Duration::from_secs(5),
        Box::new(Reply::json(200, COMPLETION)),
    ))
    .await;
    let c = connector(&other_config(&upstream.url("/v1")), &key_secrets());
    let settings = Settings::from_json(&serde_json::json!({"responseTimeout": 300})).unwrap();
    let started = std::time::Instant::now();
    // T = max(responseTimeout, timeout param) = max(300, 200) ms.
    let params = r#"{"subAction":"run","subActionParams":{"body":"{}","timeout":200}}"#;
    let e = execute(&executor(settings), &c, params).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - timeout of 300ms exceeded"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout ended the wait"
    );
}

#[tokio::test]
async fn c74_connection_refused_and_reset() {
    // A port that was just free: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = connector(
        &other_config(&format!("http://127.0.0.1:{port}/v1")),
        &key_secrets(),
    );
    let e = execute(&executor(Settings::default()), &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        format!(
            "Status code: undefined. Message: Unexpected API Error: ECONNREFUSED - connect ECONNREFUSED 127.0.0.1:{port}"
        )
    );
    let (got, retry) = fail_with(Reply::Close).await;
    assert_eq!(
        got,
        "Status code: undefined. Message: Unexpected API Error: ECONNRESET - socket hang up"
    );
    assert!(retry);
}

#[tokio::test]
async fn c11_c44_disallowed_host_sends_nothing() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let c = connector(&other_config(&upstream.url("/v1")), &key_secrets());
    let settings =
        Settings::from_json(&serde_json::json!({"allowedHosts": ["api.example.com"]})).unwrap();
    let outcome = executor(settings)
        .execute(&c, &run_params("run", "{}"))
        .await
        .unwrap();
    match outcome {
        openai_connector_harness::ExecuteOutcome::InvalidConnector(lines) => assert_eq!(
            lines,
            vec![format!(
                "error validating action type config: Error configuring OpenAI action: Error: error validating url: target url \"{}\" is not added to the Kibana config xpack.actions.allowedHosts",
                upstream.url("/v1")
            )]
        ),
        other => panic!("expected refusal, got {other:?}"),
    }
    assert!(
        upstream.requests().is_empty(),
        "the upstream must see nothing"
    );
}

#[tokio::test]
async fn c66_c67_redirects() {
    let target = Upstream::always(Reply::json(200, COMPLETION)).await;
    let target_url = target.url("/final");
    // 307 keeps method, body and credentials on the same host.
    let same_host = Upstream::http(Arc::new(|r| {
        if r.target == "/start" {
            Reply::redirect(307, "/next")
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await;
    let c = connector(&other_config(&same_host.url("/start")), &key_secrets());
    let ex = executor(Settings::default());
    let e = execute(&ex, &c, &run_params("run", r#"{"a":1}"#)).await;
    assert_eq!(data(&e), COMPLETION);
    let reqs = same_host.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].target.as_str()),
        ("POST", "/next")
    );
    assert_eq!(reqs[1].body, reqs[0].body);
    assert_eq!(
        reqs[1].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );

    // 302 to another host (another port of 127.0.0.1 is the same host name; use "localhost").
    let location = target_url.replace("127.0.0.1", "localhost");
    let cross = Upstream::always(Reply::redirect(302, &location)).await;
    let c = connector(&other_config(&cross.url("/start")), &key_secrets());
    let e = execute(&ex, &c, &run_params("run", r#"{"a":1}"#)).await;
    assert_eq!(data(&e), COMPLETION);
    let followed = target.only_request();
    assert_eq!(followed.method, "GET");
    assert!(followed.body.is_empty());
    assert_eq!(
        followed.header("authorization"),
        None,
        "C67: credentials dropped on host change"
    );

    // C66: the target host must be allowed.
    let settings =
        Settings::from_json(&serde_json::json!({"allowedHosts": ["127.0.0.1"]})).unwrap();
    let e = execute(&executor(settings), &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: ERR_FR_REDIRECTION_FAILURE - Redirected request failed: target hostname \"localhost\" is not added to the Kibana config xpack.actions.allowedHosts"
    );
    assert_eq!(
        target.requests().len(),
        1,
        "the refused target saw nothing more"
    );

    // C67: a 21st redirect fails.
    let looping = Upstream::always(Reply::redirect(308, "/again")).await;
    let c = connector(&other_config(&looping.url("/again")), &key_secrets());
    let e = execute(&ex, &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: ERR_FR_TOO_MANY_REDIRECTS - Maximum number of redirects exceeded"
    );
    assert_eq!(looping.requests().len(), 21);
}

#[tokio::test]
async fn c34_c35_params_failures_are_not_retryable_and_send_nothing() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let c = connector(&other_config(&upstream.url("/v1")), &key_secrets());
    let ex = executor(Settings::default());
    let e = execute(
        &ex,
        &c,
        r#"{"subAction":"getDashboard","subActionParams":{}}"#,
    )
    .await;
    assert_eq!(
        failure(&e).service_message,
        "Sub action \"getDashboard\" is not registered. Connector id: test-conn. Connector name: OpenAI. Connector type: .gen-ai"
    );
    assert!(!failure(&e).retry);
    let e = execute(
        &ex,
        &c,
        r#"{"subAction":"invokeAI","subActionParams":{"messages":[],"max_tokens":5}}"#,
    )
    .await;
    assert_eq!(
        failure(&e).service_message,
        "Request validation failed (Unrecognized keys: \"max_tokens\")"
    );
    assert!(!failure(&e).retry);
    let e = execute(
        &ex,
        &c,
        r#"{"subAction":"run","subActionParams":{"body":{}}}"#,
    )
    .await;
    assert_eq!(
        failure(&e).service_message,
        "Request validation failed ([body]: expected value of type [string] but got [Object])"
    );
    assert_eq!(e.request_body_bytes, None);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn c32_api_key_echoed_by_upstream_is_redacted() {
    let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {API_KEY}"}}}}"#);
    let (got, _) = fail_with(Reply::json(401, &body)).await;
    assert_eq!(
        got,
        "Status code: 401. Message: Unauthorized API Error - Incorrect API key provided: [REDACTED]"
    );
}
