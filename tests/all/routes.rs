//! Routes (`--routes FILE`, cli.md "Routes"): fallback and balance over connectors, the
//! `x-openai-connector-id` header, one event-log line per connector tried, grants by route name.

use crate::serve::{
    ADMIN, CLIENT, connector_dir, event_log, gateway_with_log, next_chunk, path_str, refused_start,
    rest_of, sse_chunk,
};
use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use std::sync::Arc;

const CHAT: &str = r#"{"messages":[]}"#;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn routes_file(json: &str) -> std::path::PathBuf {
    write_file("routes.json", json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_tries_the_next_connector_on_a_retryable_failure_only() {
    let down = Upstream::always(Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)).await;
    let refusing = Upstream::always(Reply::json(400, r#"{"error":{"message":"bad"}}"#)).await;
    let up = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("down", &down.url("/v1/chat/completions")),
        ("down2", &down.url("/v1/chat/completions")),
        ("refusing", &refusing.url("/v1/chat/completions")),
        ("up", &up.url("/v1/chat/completions")),
    ]);
    let routes = routes_file(
        r#"{"routes":{"chat":{"connectors":["down","up"]},"strict":{"connectors":["refusing","up"],"strategy":"fallback"},"all-down":{"connectors":["down","down2"]}}}"#,
    );
    let (gw, events) = gateway_with_log(&dir, "", &["--routes", path_str(&routes)], &[]);

    let (status, headers, body) = gw
        .call(
            "POST",
            "/routes/chat/v1/chat/completions",
            Some(ADMIN),
            CHAT,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("up"));
    assert_eq!((down.requests().len(), up.requests().len()), (1, 1));
    // Each connector tried logs its own line.
    let log = event_log(&events, 2);
    assert!(
        log.lines()
            .next()
            .unwrap()
            .contains(r#""outcome":"failure""#),
        "{log}"
    );
    assert!(
        log.lines().nth(1).unwrap().contains(r#""id":"up""#),
        "{log}"
    );

    // A 400 is the answer: another connector would not do better.
    let (status, headers, _) = gw
        .call(
            "POST",
            "/routes/strict/v1/chat/completions",
            Some(ADMIN),
            CHAT,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("refusing"));
    assert_eq!(up.requests().len(), 1);

    // When every connector fails, the last failure is the answer.
    let (status, headers, _) = gw
        .call(
            "POST",
            "/routes/all-down/v1/chat/completions",
            Some(ADMIN),
            CHAT,
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "x-openai-connector-id"), Some("down2"));
    assert_eq!(down.requests().len(), 3);
    // An unknown route.
    let (status, _, body) = gw
        .call(
            "POST",
            "/routes/nope/v1/chat/completions",
            Some(ADMIN),
            CHAT,
        )
        .await;
    assert_eq!(status, 404);
    assert!(body.contains(r#"route \"nope\" not found"#), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_falls_back_before_its_first_byte() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!(
        "http://127.0.0.1:{}/v1/chat/completions",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let up = Upstream::always(Reply::sse(vec![
        Step::Send(sse_chunk("hi")),
        Step::Send(b"data: [DONE]\n\n".to_vec()),
    ]))
    .await;
    let dir = connector_dir(&[("dead", &dead_url), ("up", &up.url("/v1/chat/completions"))]);
    let routes = routes_file(r#"{"routes":{"chat":{"connectors":["dead","up"]}}}"#);
    let (gw, events) = gateway_with_log(&dir, "", &["--routes", path_str(&routes)], &[]);
    let mut response = gw
        .open(
            "/routes/chat/v1/chat/completions",
            r#"{"messages":[],"stream":true}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-openai-connector-id"], "up");
    let mut expected = String::from_utf8(sse_chunk("hi")).unwrap();
    expected.push_str("data: [DONE]\n\n");
    assert_eq!(rest_of(&mut response).await, expected);
    let log = event_log(&events, 2);
    assert!(log.contains("ECONNREFUSED"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_sends_requests_to_the_less_busy_connector() {
    let never = Arc::new(tokio::sync::Notify::new());
    let a = Upstream::always(Reply::sse(vec![
        Step::Send(sse_chunk("slow")),
        Step::Wait(never.clone()),
    ]))
    .await;
    let b = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("a", &a.url("/v1/chat/completions")),
        ("b", &b.url("/v1/chat/completions")),
    ]);
    let routes =
        routes_file(r#"{"routes":{"spread":{"connectors":["a","b"],"strategy":"balance"}}}"#);
    let (gw, _) = gateway_with_log(&dir, "", &["--routes", path_str(&routes)], &[]);
    // One stream keeps `a` busy.
    let mut busy = gw
        .open(
            "/connectors/a/v1/chat/completions",
            r#"{"messages":[],"stream":true}"#,
        )
        .await;
    assert!(next_chunk(&mut busy).await.is_some());
    // With two connectors both are drawn every time: the idle one wins.
    for _ in 0..10 {
        let (status, headers, _) = gw
            .call(
                "POST",
                "/routes/spread/v1/chat/completions",
                Some(ADMIN),
                CHAT,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-openai-connector-id"), Some("b"));
    }
    assert_eq!((a.requests().len(), b.requests().len()), (1, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_are_granted_routes_by_name_and_bad_routes_stop_the_start() {
    let up = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("up", &up.url("/v1/chat/completions"))]);
    let routes = routes_file(r#"{"routes":{"chat":{"connectors":["up"]}}}"#);
    let tokens = write_file(
        "tokens.json",
        &format!(r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["chat"]}}]}}"#),
    );
    let (gw, _) = gateway_with_log(
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
    let (status, _, _) = gw
        .call(
            "POST",
            "/routes/chat/v1/chat/completions",
            Some(CLIENT),
            CHAT,
        )
        .await;
    assert_eq!(status, 200);
    // Granted the route, not the connector behind it.
    let (status, _, _) = gw.chat("up", Some(CLIENT), CHAT).await;
    assert_eq!(status, 401);
    assert_eq!(up.requests().len(), 1);
    drop(gw);

    for (json, expected) in [
        (
            r#"{"routes":{"chat":{"connectors":["up","ghost"]}}}"#,
            "[routes.chat.connectors.1]: no served connector has the id \"ghost\"",
        ),
        (
            r#"{"routes":{"chat":{"connectors":[]}}}"#,
            "at least one connector",
        ),
    ] {
        let routes = routes_file(json);
        let err = refused_start(
            &[
                "--connectors",
                path_str(&dir),
                "--routes",
                path_str(&routes),
            ],
            Some(ADMIN),
        )
        .await;
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("routes.json"), "{err}");
    }
}
