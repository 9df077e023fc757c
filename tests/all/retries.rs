//! Retries (cli.md "Retries"): applied by the component, so the library, `execute` and `serve`
//! retry the same way. Loopback upstreams that fail a given number of times, then answer.

use crate::serve::{ADMIN, connector_dir, event_log, gateway_with_log, path_str, sse_chunk};
use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use openai_connector_harness::{Cancel, FailureKind, Settings, Started};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An upstream that answers the first `failures` requests with `failure`, then `then`.
async fn failing_then(failures: usize, failure: Reply, then: Reply) -> Upstream {
    let seen = Arc::new(AtomicUsize::new(0));
    Upstream::http(Arc::new(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            failure.clone()
        } else {
            then.clone()
        }
    }))
    .await
}

fn with_header(reply: Reply, name: &str, value: &str) -> Reply {
    match reply {
        Reply::Full {
            status,
            mut headers,
            body,
        } => {
            headers.push((name.into(), value.into()));
            Reply::Full {
                status,
                headers,
                body,
            }
        }
        other => other,
    }
}

fn retrying(max_attempts: u32) -> Settings {
    Settings::from_json(&serde_json::json!({
        "retry": {"maxAttempts": max_attempts, "initialDelay": "20ms", "maxDelay": "2s"}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_429_then_a_503_then_success_is_one_successful_execution() {
    let upstream = failing_then(
        2,
        with_header(
            Reply::json(429, r#"{"error":{"message":"slow down"}}"#),
            "retry-after-ms",
            "30",
        ),
        Reply::json(200, COMPLETION),
    )
    .await;
    let connector = other_connector(&upstream, &key_secrets());
    let e = execute(&executor(retrying(3)), &connector, &run_params("run", "{}")).await;
    assert_eq!(data(&e), COMPLETION);
    assert_eq!(e.attempts, 3);
    let requests = upstream.requests();
    assert_eq!(requests.len(), 3);
    // Every attempt is the same request, credentials included.
    for r in &requests {
        assert_eq!(r.body_str(), requests[0].body_str());
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
}

#[tokio::test]
async fn without_the_setting_nothing_is_retried_and_a_hint_too_long_is_not_waited_for() {
    let upstream = failing_then(
        1,
        Reply::json(503, r#"{"error":{"message":"busy"}}"#),
        Reply::json(200, COMPLETION),
    )
    .await;
    let connector = other_connector(&upstream, &key_secrets());
    let e = execute(
        &executor(Settings::default()),
        &connector,
        &run_params("run", "{}"),
    )
    .await;
    assert_eq!(failure(&e).upstream_status, Some(503));
    assert_eq!((e.attempts, upstream.requests().len()), (1, 1));

    // `Retry-After: 60` is longer than maxDelay (2 s): the 429 is returned as is, at once.
    let upstream = failing_then(
        1,
        with_header(Reply::json(429, "{}"), "retry-after", "60"),
        Reply::json(200, COMPLETION),
    )
    .await;
    let connector = other_connector(&upstream, &key_secrets());
    let started = Instant::now();
    let e = execute(&executor(retrying(3)), &connector, &run_params("run", "{}")).await;
    assert_eq!(failure(&e).kind, FailureKind::Http { status: 429 });
    assert_eq!(e.attempts, 1);
    assert!(started.elapsed() < Duration::from_secs(2));
    // A 400 is never retried.
    let upstream = Upstream::always(Reply::json(400, "{}")).await;
    let connector = other_connector(&upstream, &key_secrets());
    let e = execute(&executor(retrying(3)), &connector, &run_params("run", "{}")).await;
    assert_eq!((e.attempts, upstream.requests().len()), (1, 1));
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_attempts_are_used_up() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let connector = connector(
        &other_config(&format!("http://127.0.0.1:{port}/v1/chat/completions")),
        &key_secrets(),
    );
    let e = execute(&executor(retrying(4)), &connector, &run_params("run", "{}")).await;
    assert_eq!(e.attempts, 4);
    assert_eq!(
        failure(&e).kind,
        FailureKind::Transport {
            code: "ECONNREFUSED".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_retries_a_stream_before_its_head_and_logs_the_attempts() {
    let upstream = failing_then(
        1,
        Reply::json(502, r#"{"error":{"message":"bad gateway"}}"#),
        Reply::sse(vec![
            Step::Send(sse_chunk("one")),
            Step::Send(b"data: [DONE]\n\n".to_vec()),
        ]),
    )
    .await;
    let dir = connector_dir(&[("r", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file(
        "settings.json",
        r#"{"retry":{"maxAttempts":2,"initialDelay":"10ms"}}"#,
    );
    let (gw, events) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);
    let (status, _, body) = gw
        .chat("r", Some(ADMIN), r#"{"messages":[],"stream":true}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    let mut expected = sse_chunk("one");
    expected.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(body.as_bytes(), expected);
    assert_eq!(upstream.requests().len(), 2);
    let log = event_log(&events, 1);
    let line: serde_json::Value = serde_json::from_str(log.trim()).unwrap();
    assert_eq!(
        line["kibana"]["action"]["execution"]["attempts"], 2,
        "{log}"
    );
    assert_eq!(line["event"]["outcome"], "success");
}

/// C68 during a retry delay: the upstream asks for 10 s before the next attempt, and a cancel
/// 300 ms into that delay ends the execution at once as `ERR_CANCELED` (the delay no longer
/// runs to its end), with no second request sent.
#[tokio::test]
async fn c68_a_cancel_during_a_retry_delay_ends_the_execution_at_once() {
    let upstream = failing_then(
        1,
        with_header(
            Reply::json(503, r#"{"error":{"message":"busy"}}"#),
            "retry-after",
            "10",
        ),
        Reply::json(200, COMPLETION),
    )
    .await;
    let settings = Settings::from_json(&serde_json::json!({
        "retry": {"maxAttempts": 2, "maxDelay": "20s"}
    }))
    .unwrap();
    let executor = executor(settings);
    let connector = other_connector(&upstream, &key_secrets());
    let prepared = executor.prepare(&connector).await.unwrap().unwrap();
    let cancel = Cancel::new();
    let canceller = cancel.clone();
    let canceled_at = Arc::new(std::sync::Mutex::new(None));
    let at = canceled_at.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        *at.lock().unwrap() = Some(Instant::now());
        canceller.cancel();
    });
    let started = executor
        .start_cancellable(&prepared, &run_params("run", "{}"), cancel)
        .await
        .unwrap();
    let ended = Instant::now();
    let Started::Ended(finished) = started else {
        panic!("a whole answer was asked for");
    };
    let canceled_at = canceled_at.lock().unwrap().expect("the cancel fired");
    assert!(
        ended.duration_since(canceled_at) < Duration::from_secs(2),
        "ended {:?} after the cancel",
        ended.duration_since(canceled_at)
    );
    let failure = finished.outcome.expect_err("cancelled");
    assert!(
        failure.service_message.contains("ERR_CANCELED - canceled"),
        "{}",
        failure.service_message
    );
    assert_eq!(upstream.requests().len(), 1, "no attempt after the cancel");
}
