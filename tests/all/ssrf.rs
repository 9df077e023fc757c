//! SSRF defence: the allow-list on every outgoing request, redirects included (C11, C66), and
//! the opt-in `denyPrivateNetworks` setting, which judges addresses after name resolution.
//! Every connection made here is to 127.0.0.1; other private ranges are covered by the
//! classification's unit tests, which connect nowhere.

use crate::proxy::{ProxyBehaviour, TestProxy};
use crate::support::*;
use crate::upstream::{Reply, Upstream};
use bytes::Bytes;
use http_body_util::BodyExt;
use openai_connector_harness::{OutboundPolicy, Settings};
use serde_json::json;
use std::sync::Arc;

fn settings(json: serde_json::Value) -> Settings {
    Settings::from_json(&json).unwrap()
}

/// A connector for `api.example.test`, a name only the test proxy knows.
fn proxied_connector() -> openai_connector_harness::ConnectorFile {
    connector(
        &other_config("http://api.example.test/v1/chat/completions"),
        &key_secrets(),
    )
}

/// A proxy that answers every absolute-form request with a redirect to `location`.
async fn redirecting_proxy(location: String) -> TestProxy {
    TestProxy::start(ProxyBehaviour {
        answer: Arc::new(move |_| {
            (
                302,
                vec![("Location".into(), location.clone())],
                String::new(),
            )
        }),
        ..ProxyBehaviour::default()
    })
    .await
}

fn denied(text: &str) -> String {
    format!(
        "Status code: undefined. Message: Unexpected API Error: ERR_DENIED_PRIVATE_NETWORK - {text}; denyPrivateNetworks is set"
    )
}

/// The message for `localhost`, which may resolve to either loopback address first.
fn localhost_denied(message: &str) {
    let v4 = denied("localhost resolves to a non-public address (127.0.0.1: loopback)");
    let v6 = denied("localhost resolves to a non-public address (::1: loopback)");
    assert!(message == v4 || message == v6, "{message}");
}

// C11, C12 with denyPrivateNetworks: a name on the allow-list that resolves to loopback is
// refused after resolution, before any connection.
#[tokio::test]
async fn deny_private_networks_refuses_a_name_resolving_to_loopback() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let url = format!(
        "http://localhost:{}/v1/chat/completions",
        upstream.addr.port()
    );
    let c = connector(&other_config(&url), &key_secrets());
    let params = run_params("run", "{}");
    // Control: the name-based allow-list alone lets it through.
    let allow = executor(settings(json!({"allowedHosts": ["localhost"]})));
    assert_eq!(data(&execute(&allow, &c, &params).await), COMPLETION);
    assert_eq!(upstream.requests().len(), 1);

    let deny = executor(settings(
        json!({"allowedHosts": ["localhost"], "denyPrivateNetworks": true}),
    ));
    let e = execute(&deny, &c, &params).await;
    localhost_denied(&failure(&e).service_message);
    assert!(failure(&e).retry);
    assert_eq!(
        upstream.requests().len(),
        1,
        "nothing more reached the upstream"
    );
    let connections = upstream.connections();
    // https is refused the same way, before any TLS.
    let c = connector(
        &other_config(&url.replace("http:", "https:")),
        &key_secrets(),
    );
    let e = execute(&deny, &c, &params).await;
    localhost_denied(&failure(&e).service_message);
    assert_eq!(upstream.connections(), connections);
}

// denyPrivateNetworks: an IP address in the URL is judged as it is.
#[tokio::test]
async fn deny_private_networks_refuses_a_loopback_address() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let c = other_connector(&upstream, &key_secrets());
    let deny = executor(settings(json!({"denyPrivateNetworks": true})));
    let e = execute(&deny, &c, &run_params("run", "{}")).await;
    assert_eq!(
        failure(&e).service_message,
        denied("127.0.0.1 is a non-public address (loopback)")
    );
    assert_eq!(upstream.connections(), 0);
}

// C66 with denyPrivateNetworks: a redirect from an allowed public-looking host to a private
// address is refused, although the target's host is on the allow-list. The first hop goes
// through the test proxy (the only way to have a "public" first hop on loopback).
#[tokio::test]
async fn c66_redirect_to_a_private_address_is_refused() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    for (location, expected) in [
        (
            upstream.url("/internal"),
            Some(denied("127.0.0.1 is a non-public address (loopback)")),
        ),
        (
            format!("http://localhost:{}/internal", upstream.addr.port()),
            None,
        ),
    ] {
        let proxy = redirecting_proxy(location.clone()).await;
        let c = proxied_connector();
        let base = json!({
            "allowedHosts": ["api.example.test", "127.0.0.1", "localhost"],
            "proxyUrl": proxy.url("http", None),
            "proxyOnlyHosts": ["api.example.test"],
        });
        let mut with_deny = base.clone();
        with_deny["denyPrivateNetworks"] = json!(true);
        let e = execute(&executor(settings(with_deny)), &c, &run_params("run", "{}")).await;
        match &expected {
            Some(message) => assert_eq!(&failure(&e).service_message, message),
            None => localhost_denied(&failure(&e).service_message),
        }
        assert_eq!(proxy.requests().len(), 1);
        assert_eq!(upstream.connections(), 0, "{location}");
    }
    // Control: without denyPrivateNetworks the same redirect is followed.
    let proxy = redirecting_proxy(upstream.url("/internal")).await;
    let c = proxied_connector();
    let e = execute(
        &executor(settings(json!({
            "proxyUrl": proxy.url("http", None), "proxyOnlyHosts": ["api.example.test"],
        }))),
        &c,
        &run_params("run", "{}"),
    )
    .await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.only_request().target, "/internal");
}

// denyPrivateNetworks through a proxy: the proxy resolves names, but an address or a
// `localhost` name in the URL is refused before anything is sent to the proxy.
#[tokio::test]
async fn deny_private_networks_applies_before_the_proxy() {
    let proxy = TestProxy::start(ProxyBehaviour {
        answer: Arc::new(|_| (200, Vec::new(), COMPLETION.to_owned())),
        ..ProxyBehaviour::default()
    })
    .await;
    let deny = executor(settings(json!({
        "proxyUrl": proxy.url("http", None), "denyPrivateNetworks": true,
    })));
    let params = run_params("run", "{}");
    for (url, expected) in [
        (
            "http://169.254.169.254/latest/meta-data",
            denied("169.254.169.254 is a non-public address (link-local)"),
        ),
        (
            "https://[::1]:8443/v1/chat/completions",
            denied("::1 is a non-public address (loopback)"),
        ),
        (
            "http://localhost:8080/v1/chat/completions",
            denied("localhost is a loopback name"),
        ),
    ] {
        let c = connector(&other_config(url), &key_secrets());
        let e = execute(&deny, &c, &params).await;
        assert_eq!(failure(&e).service_message, expected, "{url}");
    }
    assert!(proxy.requests().is_empty());
    // A name goes to the proxy, which resolves it.
    let c = proxied_connector();
    assert_eq!(data(&execute(&deny, &c, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 1);
}

// C44, C66: the host hook checks allowedHosts on every request it is handed, whatever the
// component decided; a request to another host is refused before any connection.
#[tokio::test]
async fn c66_the_host_hook_checks_every_request_against_allowed_hosts() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let request = |url: &str| {
        http::Request::get(url)
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    };
    let policy = Arc::new(OutboundPolicy::for_connector(
        &settings(json!({"allowedHosts": ["api.example.com"]})),
        None,
    ));
    let refused = policy
        .clone()
        .send(request(&upstream.url("/v1/chat/completions")), None)
        .await;
    assert!(
        matches!(refused, Err(wasmtime_wasi_http::Error::HttpRequestDenied)),
        "{refused:?}"
    );
    assert_eq!(upstream.connections(), 0);
    // Control: an allowed host goes through.
    let policy = Arc::new(OutboundPolicy::for_connector(
        &settings(json!({"allowedHosts": ["127.0.0.1"]})),
        None,
    ));
    let response = policy
        .send(request(&upstream.url("/v1/chat/completions")), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.connections(), 1);
}

// C67 (amended) with denyPrivateNetworks behind a proxy: `localhost.` is `localhost`, so the
// absolute loopback names are refused before anything reaches the proxy, as is a name with an
// empty label, which cannot be judged.
#[tokio::test]
async fn c67_deny_private_networks_behind_a_proxy_refuses_absolute_localhost_names() {
    let proxy = TestProxy::start(ProxyBehaviour {
        answer: Arc::new(|_| (200, Vec::new(), COMPLETION.to_owned())),
        ..ProxyBehaviour::default()
    })
    .await;
    let deny = executor(settings(json!({
        "proxyUrl": proxy.url("http", None), "denyPrivateNetworks": true,
    })));
    let params = run_params("run", "{}");
    for (url, expected) in [
        (
            "http://localhost.:8080/v1/chat/completions",
            denied("localhost. is a loopback name"),
        ),
        (
            "http://x.localhost./v1/chat/completions",
            denied("x.localhost. is a loopback name"),
        ),
        (
            "https://LocalHost.:8443/v1/chat/completions",
            denied("localhost. is a loopback name"),
        ),
        (
            "http://localhost../v1/chat/completions",
            denied("localhost.. is not a valid host name"),
        ),
    ] {
        let c = connector(&other_config(url), &key_secrets());
        let e = execute(&deny, &c, &params).await;
        assert_eq!(failure(&e).service_message, expected, "{url}");
    }
    assert!(proxy.requests().is_empty(), "{:#?}", proxy.requests());
    // Control: a public-looking absolute name goes to the proxy.
    let c = connector(
        &other_config("http://api.example.test./v1/chat/completions"),
        &key_secrets(),
    );
    assert_eq!(data(&execute(&deny, &c, &params).await), COMPLETION);
    assert_eq!(proxy.requests().len(), 1);
}

// C11, C12 with C67 (amended): allowedHosts entries match host names with or without one
// trailing dot, in the component's checks (C11, C44, C66) and in the host's (every request).
#[tokio::test]
async fn c11_c12_c67_allowed_hosts_match_with_or_without_a_trailing_dot() {
    let proxy = TestProxy::start(ProxyBehaviour {
        answer: Arc::new(|r| match r.target.as_str() {
            "http://api.example.test/start" => (
                307,
                vec![("Location".into(), "http://api.example.test./next".into())],
                String::new(),
            ),
            _ => (200, Vec::new(), COMPLETION.to_owned()),
        }),
        ..ProxyBehaviour::default()
    })
    .await;
    let params = run_params("run", "{}");
    for (url, entry) in [
        ("http://api.example.test./v1", "api.example.test"),
        ("http://api.example.test/v1", "api.example.test."),
        ("http://API.example.test./v1", "api.EXAMPLE.test."),
        // The redirect target `api.example.test.` is allowed, and the same origin.
        ("http://api.example.test/start", "api.example.test"),
    ] {
        let ex = executor(settings(json!({
            "proxyUrl": proxy.url("http", None), "allowedHosts": [entry],
        })));
        let c = connector(&other_config(url), &key_secrets());
        assert_eq!(data(&execute(&ex, &c, &params).await), COMPLETION, "{url}");
    }
    let requests = proxy.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "http://api.example.test./v1",
            "http://api.example.test/v1",
            "http://api.example.test./v1",
            "http://api.example.test/start",
            "http://api.example.test./next",
        ]
    );
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(requests[4].header("authorization"), Some(bearer.as_str()));
    // Control: `localhost..` is another name.
    let ex = executor(settings(json!({
        "proxyUrl": proxy.url("http", None), "allowedHosts": ["api.example.test"],
    })));
    let c = connector(
        &other_config("http://api.example.test../v1"),
        &key_secrets(),
    );
    match ex.execute(&c, &params).await.unwrap() {
        openai_connector_harness::ExecuteOutcome::InvalidConnector(lines) => assert_eq!(
            lines,
            [
                "error validating action type config: Error configuring OpenAI action: Error: error validating url: target url \"http://api.example.test../v1\" is not added to the Kibana config xpack.actions.allowedHosts"
            ]
        ),
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_eq!(proxy.requests().len(), 5);
}
