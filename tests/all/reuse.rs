//! Keep-alive connections shared by the executions of one executor: a second execution to the
//! same upstream skips the TCP and TLS handshakes; connections are only shared between requests
//! made with the same TLS profile, and only after a response was read to the end.

use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use openai_connector_harness::Settings;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TLS upstream answering with a completion, trusted through the connector's `caData`
/// (C122, C124), treating client certificates as `client_auth` says.
async fn tls_upstream(pki: &TestPki, client_auth: ClientAuth<'_>) -> Upstream {
    let config = pki
        .server(&["localhost"], &[LOOPBACK], false)
        .server_config_with(client_auth, rustls::DEFAULT_VERSIONS);
    Upstream::https_always(Reply::json(200, COMPLETION), config).await
}

// The second execution to the same TLS upstream reuses the first one's connection: one TCP
// connection, one TLS handshake, two requests.
#[tokio::test]
async fn second_execution_reuses_the_tls_connection() {
    let pki = TestPki::new("Test CA");
    let upstream = tls_upstream(&pki, ClientAuth::Off).await;
    let c = other_connector(&upstream, &pki_secrets(None, &[pki.ca_pem()]));
    let executor = executor(Settings::default());
    for _ in 0..2 {
        let e = execute(&executor, &c, &run_params("run", "{}")).await;
        assert_eq!(data(&e), COMPLETION);
    }
    assert_eq!(upstream.requests().len(), 2);
    assert_eq!(upstream.connections(), 1);
    assert_eq!(upstream.tls_sessions().len(), 1);
    let stats = executor.connection_pool().unwrap().stats();
    assert_eq!((stats.opened, stats.reused), (1, 1));
    // A clone shares the pool.
    let clone = executor.clone();
    assert_eq!(
        data(&execute(&clone, &c, &run_params("run", "{}")).await),
        COMPLETION
    );
    assert_eq!(upstream.connections(), 1);
}

// Without a pool every execution makes its own connection (the behaviour the bench compares).
#[tokio::test]
async fn without_a_pool_every_execution_connects() {
    let pki = TestPki::new("Test CA");
    let upstream = tls_upstream(&pki, ClientAuth::Off).await;
    let c = other_connector(&upstream, &pki_secrets(None, &[pki.ca_pem()]));
    let executor = executor(Settings::default()).with_connection_pool(None);
    for _ in 0..2 {
        assert_eq!(
            data(&execute(&executor, &c, &run_params("run", "{}")).await),
            COMPLETION
        );
    }
    assert_eq!(upstream.connections(), 2);
    assert_eq!(upstream.tls_sessions().len(), 2);
}

// C127: a connection made with one client identity is never used for a connector with another
// (or none): the pool key holds the whole TLS profile.
#[tokio::test]
async fn c127_connections_are_not_shared_across_identities() {
    let pki = TestPki::new("Test CA");
    let upstream = tls_upstream(&pki, ClientAuth::Optional(&pki)).await;
    let as_who = |identity| other_connector(&upstream, &pki_secrets(identity, &[pki.ca_pem()]));
    let alice = pki.client("alice", ClientKey::EcPkcs8);
    let bob = pki.client("bob", ClientKey::RsaPkcs1);
    let as_alice = as_who(Some(&alice));
    let as_bob = as_who(Some(&bob));
    let anonymous = as_who(None);
    let executor = executor(Settings::default());
    for c in [&as_alice, &as_bob, &anonymous, &as_alice, &anonymous] {
        assert_eq!(
            data(&execute(&executor, c, &run_params("run", "{}")).await),
            COMPLETION
        );
    }
    let offered: Vec<Option<Vec<u8>>> = upstream
        .tls_sessions()
        .into_iter()
        .map(|s| s.client_cert)
        .collect();
    assert_eq!(
        offered,
        vec![
            Some(alice.cert_der.clone()),
            Some(bob.cert_der.clone()),
            None
        ]
    );
    assert_eq!(upstream.connections(), 3);
    assert_eq!(upstream.requests().len(), 5);
}

// A response abandoned before its end (C65: too large) takes its connection with it; a
// server's `Connection: close` is honoured. The next execution connects afresh and works.
#[tokio::test]
async fn unfinished_or_closed_connections_are_not_reused() {
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096));
    let upstream = Upstream::http(Arc::new(move |r| {
        if r.body_str().contains("big") {
            Reply::json(200, &big)
        } else if r.body_str().contains("close") {
            Reply::Full {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("connection".into(), "close".into()),
                ],
                body: COMPLETION.as_bytes().to_vec(),
            }
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await;
    let c = other_connector(&upstream, &key_secrets());
    let executor = executor(
        Settings::from_json(&serde_json::json!({"maxResponseContentLength": "1kb"})).unwrap(),
    );
    let e = execute(&executor, &c, &run_params("run", r#"{"big":1}"#)).await;
    assert_eq!(
        failure(&e).service_message,
        "Status code: undefined. Message: Unexpected API Error: ERR_BAD_RESPONSE - maxContentLength size of 1024 exceeded"
    );
    let e = execute(&executor, &c, &run_params("run", r#"{"close":1}"#)).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.connections(), 2);
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.connections(), 3);
    // ... and that last connection, read to the end, is reused.
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.connections(), 3);
    assert_eq!(upstream.requests().len(), 4);
}

// A stream read to its end returns its connection too (C41: it was not buffered on the way).
#[tokio::test]
async fn a_finished_stream_returns_its_connection() {
    let chunk = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let upstream = Upstream::http(Arc::new(move |r| {
        if r.body_str().contains("\"stream\":true") {
            Reply::sse(vec![Step::Send(chunk.as_bytes().to_vec())])
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await;
    let c = other_connector(&upstream, &key_secrets());
    let executor = executor(Settings::default());
    let stream =
        r#"{"subAction":"stream","subActionParams":{"stream":true,"body":"{\"messages\":[]}"}}"#;
    let e = execute(&executor, &c, stream).await;
    assert_eq!(data(&e), serde_json::to_string(chunk).unwrap());
    let e = execute(&executor, &c, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(upstream.requests().len(), 2);
    assert_eq!(upstream.connections(), 1);
}
