//! `serve` under hostile or heavy load (issue "Hardening"): slow and idle connections, a
//! descriptor-starved process, more streams than execution slots at SIGTERM, and one client
//! hogging the slots. Each test runs the real gateway as a subprocess against loopback
//! upstreams and stops by itself.

use crate::serve::{
    ADMIN, CLIENT, Gateway, connector_dir, event_log, gateway_with_log, held_stream, next_chunk,
    path_str, rest_of, sse_chunk,
};
use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `socket` until the server closes it (or 10 s pass); returns what arrived and
/// when the close came.
async fn read_until_closed(socket: &mut TcpStream) -> (String, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the gateway kept the connection open for 10 s"),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_on_their_deadlines() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("c", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file(
        "settings.json",
        r#"{"headerReadTimeout":"1s","idleTimeout":"1500ms","requestBodyTimeout":"1s"}"#,
    );
    let (gw, _) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);

    let t0 = Instant::now();
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(&gw.addr).await.unwrap();
    // A request head sent a byte at a time, never finished.
    let mut trickle = TcpStream::connect(&gw.addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        let started = Instant::now();
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        panic!("the gateway kept reading a request head for 10 s");
    });
    // A keep-alive connection after one request.
    let mut idle = TcpStream::connect(&gw.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // A body that stops half way.
    let mut half_body = TcpStream::connect(&gw.addr).await.unwrap();
    half_body
        .write_all(
            format!(
                "POST /connectors/c/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"messages\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    let ((silent_got, silent_closed), (idle_got, idle_closed), (body_got, body_closed)) = tokio::join!(
        read_until_closed(&mut silent),
        read_until_closed(&mut idle),
        read_until_closed(&mut half_body),
    );
    let (silent_after, idle_after, body_after) =
        (silent_closed - t0, idle_closed - t0, body_closed - t0);
    assert_eq!(silent_got, "");
    assert!(idle_got.starts_with("HTTP/1.1 200 OK"), "{idle_got}");
    let got = body_got;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout"), "{got}");
    assert!(got.contains(r#""code":"request_timeout""#), "{got}");
    let trickle_after = trickler.await.unwrap();
    eprintln!(
        "closed after: silent {silent_after:?}, trickling head {trickle_after:?}, idle {idle_after:?}, half body {body_after:?}"
    );
    for (what, after, low, high) in [
        ("silent", silent_after, 900, 3_000),
        ("trickling head", trickle_after, 900, 3_000),
        ("idle keep-alive", idle_after, 1_400, 3_500),
        ("half body", body_after, 900, 3_000),
    ] {
        let ms = after.as_millis();
        assert!((low..high).contains(&ms), "{what}: closed after {ms} ms");
    }
    // Nothing reached the upstream; the gateway still serves.
    assert!(upstream.requests().is_empty());
    let (status, _, _) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!(status, 200);
    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    for line in [
        "openai_connector_connections_closed_total{reason=\"header_timeout\"} 2",
        "openai_connector_connections_closed_total{reason=\"idle_timeout\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_with_few_descriptors_does_not_starve_legitimate_requests() {
    // Issue "Hardening", finding 1: 500 half-sent requests against a process limited to 512
    // descriptors. Default deadlines (10 s for a head): only the connection cap, derived from
    // the descriptor limit, and eviction at the cap keep legitimate requests fast.
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("c", &upstream.url("/v1/chat/completions"))]);
    let events = write_file("events.log", "");
    let gw = Gateway::start_with_open_files(
        &[
            "--connectors",
            path_str(&dir),
            "--event-log",
            path_str(&events),
        ],
        Some(ADMIN),
        512,
    );
    let mut attackers = Vec::new();
    for _ in 0..500 {
        let mut socket = TcpStream::connect(&gw.addr).await.unwrap();
        // A partial head; an evicted socket fails to take it, which is fine.
        let _ = socket
            .write_all(b"POST /connectors/c/v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await;
        attackers.push(socket);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _, _) =
            tokio::time::timeout(Duration::from_secs(5), gw.call("GET", "/healthz", None, ""))
                .await
                .expect("/healthz within 5 s");
        assert_eq!(status, 200);
        let started_chat = Instant::now();
        let (status, _, body) = tokio::time::timeout(
            Duration::from_secs(5),
            gw.chat("c", Some(ADMIN), r#"{"messages":[]}"#),
        )
        .await
        .expect("a chat completion within 5 s");
        assert_eq!(status, 200, "{body}");
        worst = worst.max(started.elapsed() - started_chat.elapsed());
        worst = worst.max(started_chat.elapsed());
    }
    eprintln!("slowloris: slowest legitimate request {worst:?}");
    assert!(worst < Duration::from_secs(2), "{worst:?}");
    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    assert!(
        metrics.contains("openai_connector_connections_max 224\n"),
        "{metrics}"
    );
    let evicted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("openai_connector_connections_closed_total{reason=\"evicted\"} ")
        })
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap();
    assert!(evicted >= 500 - 224, "{metrics}");
    let stderr = gw.stderr();
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    drop(attackers);
}

/// Sends SIGTERM to the gateway.
fn sigterm(gw: &Gateway) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to 60 s until `upstream` has received `n` requests.
async fn wait_for_requests(upstream: &Upstream, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while upstream.requests().len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} upstream requests",
            upstream.requests().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streaming chat request through the gateway: its status, `Retry-After`, and whole body.
async fn stream_request(addr: String, id: &str, token: &str) -> (u16, Option<String>, String) {
    let mut response = http1_request(
        &addr,
        "POST",
        &format!("/connectors/{id}/v1/chat/completions"),
        Some(token),
        r#"{"messages":[],"stream":true}"#,
    )
    .await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let read = async {
        let mut body = Vec::new();
        while let Some(frame) = response.body_mut().frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                body.extend_from_slice(&data);
            }
        }
        String::from_utf8(body).unwrap()
    };
    let body = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the response ends within 60 s");
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_more_streams_than_slots_loses_nothing() {
    // Issue "Hardening", finding 2: 100 streams for 64 slots, then SIGTERM. Admitted streams
    // end with their error event and their event-log line; queued ones get 503; no upstream
    // request starts after the signal.
    let never = Arc::new(tokio::sync::Notify::new());
    let upstream = Upstream::always(Reply::sse(vec![
        Step::Send(sse_chunk("one")),
        Step::Wait(never.clone()),
    ]))
    .await;
    let dir = connector_dir(&[("g", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file(
        "settings.json",
        r#"{"shutdownGrace":"1s","queueTimeout":"2m"}"#,
    );
    let (mut gw, events) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);
    let clients: Vec<_> = (0..100)
        .map(|_| tokio::spawn(stream_request(gw.addr.clone(), "g", ADMIN)))
        .collect();
    wait_for_requests(&upstream, 64).await;
    // Give the queued ones time to be queued (and a 65th upstream request time to show).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(upstream.requests().len(), 64);
    sigterm(&gw);
    gw.assert_exits_0("exits after the grace period");
    let (mut streamed, mut refused) = (0, 0);
    for client in clients {
        let (status, retry_after, body) = client.await.unwrap();
        match status {
            200 => {
                streamed += 1;
                let first = String::from_utf8(sse_chunk("one")).unwrap();
                let rest = body.strip_prefix(&first).expect(&body);
                assert!(rest.starts_with("data: {\"error\""), "{rest}");
                assert!(rest.contains("ERR_CANCELED"), "{rest}");
            }
            503 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert!(body.contains(r#""code":"shutting_down""#), "{body}");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    let upstream_requests = upstream.requests().len();
    let log = event_log(&events, 64);
    eprintln!(
        "SIGTERM: {upstream_requests} upstream requests, {} event-log lines, {streamed} error events, {refused} refused",
        log.lines().count()
    );
    assert_eq!((streamed, refused, upstream_requests), (64, 36, 64));
    assert_eq!(log.matches("ERR_CANCELED").count(), 64, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_stalled_streams_do_not_delay_another_connector() {
    // Issue "Hardening", finding 3: 200 stalled streams through one client token. The default
    // shares (three quarters of the 64 slots per connector and per caller) leave room for
    // another connector; the stalled client's own excess is answered 503 after queueTimeout.
    let never = Arc::new(tokio::sync::Notify::new());
    let stalled = Upstream::always(Reply::sse(vec![
        Step::Send(sse_chunk("one")),
        Step::Wait(never.clone()),
    ]))
    .await;
    let healthy = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("stalled", &stalled.url("/v1/chat/completions")),
        ("healthy", &healthy.url("/v1/chat/completions")),
    ]);
    let tokens = write_file(
        "tokens.json",
        &format!(r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["*"]}}]}}"#),
    );
    let settings = write_file(
        "settings.json",
        r#"{"queueTimeout":"3s","shutdownGrace":"0s"}"#,
    );
    let (gw, _) = gateway_with_log(
        &dir,
        "",
        &[
            "--settings",
            path_str(&settings),
            "--client-tokens",
            path_str(&tokens),
        ],
        &[],
    );
    let hogs_started = Instant::now();
    let hogs: Vec<_> = (0..200)
        .map(|_| tokio::spawn(stream_request(gw.addr.clone(), "stalled", CLIENT)))
        .collect();
    wait_for_requests(&stalled, 48).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stalled.requests().len(), 48, "the per-connector share");

    // Another caller, another connector: served at once.
    let started = Instant::now();
    let (status, _, body) = gw.chat("healthy", Some(ADMIN), r#"{"messages":[]}"#).await;
    let latency = started.elapsed();
    assert_eq!(status, 200, "{body}");
    // The hogging client's own request to the healthy connector waits in its client's queue
    // and is refused when queueTimeout is over.
    let started = Instant::now();
    let (status, headers, body) = gw.chat("healthy", Some(CLIENT), r#"{"messages":[]}"#).await;
    let refused_after = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""code":"queue_timeout""#), "{body}");
    assert!(headers.iter().any(|(n, v)| n == "retry-after" && v == "1"));
    eprintln!(
        "fairness: healthy connector answered in {latency:?} beside 200 stalled streams; the hog refused after {refused_after:?}"
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert!(
        refused_after >= Duration::from_millis(2900),
        "{refused_after:?}"
    );
    assert_eq!(healthy.requests().len(), 1);

    // The hog's queued streams were refused too (their queueTimeout is over by now); the
    // admitted ones still stream.
    tokio::time::sleep_until((hogs_started + Duration::from_secs(5)).into()).await;
    let (done, running): (Vec<_>, Vec<_>) = hogs.into_iter().partition(|h| h.is_finished());
    assert_eq!(running.len(), 48, "admitted streams still running");
    for hog in running {
        hog.abort();
    }
    for hog in done {
        let (status, retry_after, body) = hog.await.unwrap();
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(body.contains(r#""code":"queue_timeout""#), "{body}");
    }
    assert_eq!(stalled.requests().len(), 48);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_slower_than_every_timeout_is_not_cut() {
    // The busy phase has no deadline: a stream slower than every timeout is not cut.
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = held_stream(&release, &[]).await;
    let dir = connector_dir(&[("s", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file(
        "settings.json",
        r#"{"headerReadTimeout":"300ms","idleTimeout":"300ms","requestBodyTimeout":"300ms"}"#,
    );
    let (gw, _) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);
    let mut response = gw
        .open(
            "/connectors/s/v1/chat/completions",
            r#"{"messages":[],"stream":true}"#,
        )
        .await;
    assert_eq!(
        next_chunk(&mut response).await.unwrap().as_bytes(),
        sse_chunk("one")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    release.notify_one();
    assert_eq!(rest_of(&mut response).await, "data: [DONE]\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_executions_runs_200_streams_at_once_without_queueing() {
    // Issue 17, item 1: `maxExecutions` sizes the sandbox's instance slots (and the admission
    // shares with them). 200 streams, more than the default 64, all reach the upstream at once:
    // none waits for a slot (one that did would get 503 after the 1 s queueTimeout), and each
    // ends normally.
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = held_stream(&release, &["two"]).await;
    let dir = connector_dir(&[("held", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file(
        "settings.json",
        r#"{"maxExecutions":256,"queueTimeout":"1s"}"#,
    );
    let (gw, events) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);
    let started = Instant::now();
    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(stream_request(gw.addr.clone(), "held", ADMIN)))
        .collect();
    wait_for_requests(&upstream, 200).await;
    let all_running = started.elapsed();
    // No stream has ended: 200 executions are in flight together.
    assert!(clients.iter().all(|c| !c.is_finished()));
    // Release the upstream until every stream has ended (a stream reaches its wait on its own
    // time, so one notification may come before some of them wait).
    let releasing = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let expected = format!(
        "{}{}data: [DONE]\n\n",
        String::from_utf8(sse_chunk("one")).unwrap(),
        String::from_utf8(sse_chunk("two")).unwrap()
    );
    for client in clients {
        let (status, _, body) = client.await.unwrap();
        assert_eq!((status, body.as_str()), (200, expected.as_str()));
    }
    releasing.abort();
    eprintln!("200 streams in flight together {all_running:?} after the first request");
    assert_eq!(upstream.requests().len(), 200);
    let log = event_log(&events, 200);
    assert_eq!(log.matches(r#""outcome":"success""#).count(), 200, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_memory_limit_holds_with_many_slots_in_use() {
    // Issue 17, item 1: with the pool sized by `maxExecutions` and 100 streams holding their
    // slots, a guest that grows past `guestMemoryLimit` is still stopped, with the limit named,
    // and the held streams are not disturbed.
    let release = Arc::new(tokio::sync::Notify::new());
    let held = held_stream(&release, &[]).await;
    let plain = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("held", &held.url("/v1/chat/completions")),
        ("plain", &plain.url("/v1/chat/completions")),
    ]);
    let settings = write_file(
        "settings.json",
        r#"{"maxExecutions":200,"guestMemoryLimit":"4mb","queueTimeout":"1s"}"#,
    );
    let (gw, _) = gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[]);
    let streams: Vec<_> = (0..100)
        .map(|_| tokio::spawn(stream_request(gw.addr.clone(), "held", ADMIN)))
        .collect();
    wait_for_requests(&held, 100).await;
    // An 8 MiB message: more than the guest may hold.
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8 << 20)
    );
    let (status, _, text) = gw.chat("plain", Some(ADMIN), &big).await;
    assert_eq!(status, 500, "{text}");
    assert!(
        text.contains("guest memory limit of 4 MiB exceeded"),
        "{text}"
    );
    assert_eq!(plain.requests().len(), 0);
    // A guest within the limit is served beside the held streams.
    let (status, _, text) = gw.chat("plain", Some(ADMIN), r#"{"messages":[]}"#).await;
    assert_eq!((status, text.as_str()), (200, COMPLETION));
    gw.assert_guest_traps("plain", 1).await;
    assert!(streams.iter().all(|s| !s.is_finished()));
    let releasing = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for stream in streams {
        let (status, _, body) = stream.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    releasing.abort();
}
