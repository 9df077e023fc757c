//! Redirects and credentials (C66, C67 as amended in section 11), through the real component:
//! what follows a redirect to the same origin (default ports written or implied), to another
//! port or scheme, from https to http, and redirects to schemes other than http and https.
//! Every connection is to 127.0.0.1; names other than that only the test proxy knows.

use crate::proxy::{ProxyBehaviour, TestProxy};
use crate::support::*;
use crate::upstream::{Recorded, Reply, Upstream};
use openai_connector_harness::{FailureKind, Settings};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// A configured header that carries a credential, under a name that does not say so.
const GATEWAY_KEY: &str = "gw-key-SECRET-0123456789";

/// An `Other` connector for `url` with the API key (plus `caData` when given) and the
/// `X-Gateway-Key` custom header.
fn gateway_connector(url: &str, ca_pem: Option<String>) -> openai_connector_harness::ConnectorFile {
    let ca: Vec<String> = ca_pem.into_iter().collect();
    connector(
        &format!(
            r#"{{"apiProvider":"Other","apiUrl":"{url}","defaultModel":"m","headers":{{"X-Gateway-Key":"{GATEWAY_KEY}"}}}}"#
        ),
        &pki_secrets(None, &ca),
    )
}

/// True when `request` carries the API key and the custom header, false when it carries
/// neither; panics on a mix.
fn has_credentials(request: &Recorded) -> bool {
    let key = request.header("authorization") == Some(format!("Bearer {API_KEY}").as_str());
    let gateway = request.header("x-gateway-key") == Some(GATEWAY_KEY);
    assert_eq!(key, gateway, "{request:#?}");
    assert!(
        key || !format!("{request:?}").contains("SECRET"),
        "{request:#?}"
    );
    key
}

/// An upstream that redirects `/start` with `status` to `location` and answers the rest with a
/// completion.
async fn redirecting(status: u16, location: String) -> Upstream {
    Upstream::http(Arc::new(move |r| {
        if r.target == "/start" {
            Reply::redirect(status, &location)
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await
}

fn redirection_failure(message: &str) -> String {
    format!(
        "Status code: undefined. Message: Unexpected API Error: ERR_FR_REDIRECTION_FAILURE - Redirected request failed: {message}"
    )
}

// C67 (control): a redirect within the origin keeps method, body, credentials and headers.
#[tokio::test]
async fn c67_same_origin_keeps_credentials() {
    let upstream = redirecting(307, "/next".to_owned()).await;
    let c = gateway_connector(&upstream.url("/start"), None);
    let e = execute(
        &executor(Settings::default()),
        &c,
        &run_params("run", r#"{"a":1}"#),
    )
    .await;
    assert_eq!(data(&e), COMPLETION);
    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        (requests[1].method.as_str(), requests[1].target.as_str()),
        ("POST", "/next")
    );
    assert_eq!(requests[1].body, requests[0].body);
    assert!(has_credentials(&requests[0]));
    assert!(has_credentials(&requests[1]));
}

// C67 (amended): another port of the same host is another origin: a 307 keeps method and body
// but neither the API key nor the configured header.
#[tokio::test]
async fn c67_another_port_of_the_same_host_gets_no_credentials() {
    let target = Upstream::always(Reply::json(200, COMPLETION)).await;
    let first = redirecting(307, target.url("/final")).await;
    let c = gateway_connector(&first.url("/start"), None);
    let e = execute(
        &executor(Settings::default()),
        &c,
        &run_params("run", r#"{"a":1}"#),
    )
    .await;
    assert_eq!(data(&e), COMPLETION);
    let start = first.only_request();
    assert!(has_credentials(&start));
    let followed = target.only_request();
    assert_eq!(
        (followed.method.as_str(), followed.target.as_str()),
        ("POST", "/final")
    );
    assert_eq!(followed.body, start.body);
    assert!(!has_credentials(&followed), "C67: credentials dropped");
    assert_eq!(followed.header("content-type"), Some("application/json"));
}

// C67 (amended): from https to http nothing of the request is re-sent. A 302 is followed as a
// GET without body, credentials or configured headers; a 307 (which would re-send the body in
// clear text) is not followed at all.
#[tokio::test]
async fn c67_https_to_http_sends_no_credentials_and_no_body() {
    let plain = Upstream::always(Reply::json(200, COMPLETION)).await;
    let pki = TestPki::new("Redirect CA");
    let issued = pki.server(&[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)], false);
    let location = plain.url("/plain");
    let tls = Upstream::https(
        Arc::new(move |r| match r.target.as_str() {
            "/found" => Reply::redirect(302, &location),
            _ => Reply::redirect(307, &location),
        }),
        issued.server_config(),
    )
    .await;
    let ex = executor(Settings::default());
    let params = run_params("run", r#"{"a":1}"#);

    let c = gateway_connector(&tls.url("/found"), Some(pki.ca_pem()));
    assert_eq!(data(&execute(&ex, &c, &params).await), COMPLETION);
    assert!(has_credentials(&tls.only_request()));
    let followed = plain.only_request();
    assert_eq!(
        (followed.method.as_str(), followed.target.as_str()),
        ("GET", "/plain")
    );
    assert!(followed.body.is_empty());
    assert!(
        !has_credentials(&followed),
        "C67: nothing re-sent over http"
    );

    let c = gateway_connector(&tls.url("/temporary"), Some(pki.ca_pem()));
    let e = execute(&ex, &c, &params).await;
    assert_eq!(
        failure(&e).service_message,
        redirection_failure(
            "a 307 redirect from https to http is not followed (the request body would be sent unencrypted)"
        )
    );
    assert_eq!(tls.requests().len(), 2);
    assert_eq!(plain.requests().len(), 1, "nothing more reached http");
}

// C67 (amended): default ports count as written: `https://h` and `https://h:443` are one
// origin, so a redirect between them keeps the credentials. Port 443 is only reachable
// through the test proxy, which tunnels `api.example.test:443` to a loopback TLS upstream.
#[tokio::test]
async fn c67_default_port_written_or_implied_is_the_same_origin() {
    const HOST: &str = "api.example.test";
    let pki = TestPki::new("Tunnel CA");
    let issued = pki.server(&[HOST], &[], false);
    let upstream = Upstream::https(
        Arc::new(|r| match r.target.as_str() {
            "/implied" => Reply::redirect(308, &format!("https://{HOST}:443/written")),
            "/written" => Reply::redirect(307, &format!("https://{HOST}/last")),
            _ => Reply::json(200, COMPLETION),
        }),
        issued.server_config(),
    )
    .await;
    let proxy = TestProxy::start(ProxyBehaviour {
        hosts: HashMap::from([(format!("{HOST}:443"), upstream.addr)]),
        ..ProxyBehaviour::default()
    })
    .await;
    let settings =
        Settings::from_json(&serde_json::json!({"proxyUrl": proxy.url("http", None)})).unwrap();
    let c = gateway_connector(&format!("https://{HOST}/implied"), Some(pki.ca_pem()));
    let e = execute(&executor(settings), &c, &run_params("run", r#"{"a":1}"#)).await;
    assert_eq!(data(&e), COMPLETION);
    let requests = upstream.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/implied", "/written", "/last"]);
    for r in &requests {
        assert!(has_credentials(r), "{}", r.target);
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, requests[0].body);
    }
}

// C67 (amended): only http and https targets are followed; nothing is sent to any other, not
// even to a loopback port that would answer plain HTTP.
#[tokio::test]
async fn c67_other_schemes_are_not_followed() {
    let listener = Upstream::always(Reply::json(200, COMPLETION)).await;
    let ex = executor(Settings::default());
    for scheme in ["ftp", "ws", "gopher"] {
        let first = redirecting(
            307,
            format!("{scheme}://127.0.0.1:{}/x", listener.addr.port()),
        )
        .await;
        let c = gateway_connector(&first.url("/start"), None);
        let e = execute(&ex, &c, &run_params("run", "{}")).await;
        let f = failure(&e);
        assert_eq!(
            f.service_message,
            redirection_failure(&format!("Unsupported protocol {scheme}:"))
        );
        assert_eq!(
            f.kind,
            FailureKind::Transport {
                code: "ERR_FR_REDIRECTION_FAILURE".to_owned()
            }
        );
        assert!(f.retry);
        assert_eq!(first.requests().len(), 1);
    }
    assert_eq!(
        listener.connections(),
        0,
        "nothing reached the other scheme"
    );
}
