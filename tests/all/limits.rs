//! Client limits (cli.md "Client limits") and shared state through Redis (cli.md "Shared
//! state"): `serve` as a subprocess, loopback upstreams, and for the shared state a real
//! `redis-server` (`redis_server`). A request over a limit gets `429` with `Retry-After` and
//! nothing reaches the upstream.

use crate::redis_server::RedisServer;
use crate::serve::{
    ADMIN, Gateway, HI, connector_dir, gateway_with_log, held_stream, next_chunk, path_str,
};
use crate::support::*;
use crate::upstream::{Reply, Upstream};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client tokens of these tests (none is a secret that `Gateway::call` looks for).
const PER_MINUTE: &str = "limits-PER-MINUTE-4b1d";
const TOKENS: &str = "limits-TOKENS-8e2a";
const CONCURRENT: &str = "limits-CONCURRENT-19fc";
const LATER: &str = "limits-LATER-70d3";
const DURING: &str = "limits-DURING-a61f";
const FREE: &str = "limits-FREE-c5e0";
const ALL: [&str; 6] = [PER_MINUTE, TOKENS, CONCURRENT, LATER, DURING, FREE];

/// A `--client-tokens` file: every token granted every connector, with its `limits`.
fn tokens_file(limits: &[(&str, &str)]) -> PathBuf {
    let entries: Vec<String> = limits
        .iter()
        .map(|(token, limits)| {
            format!(r#"{{"token":"{token}","connectors":["*"],"limits":{limits}}}"#)
        })
        .collect();
    write_file(
        "tokens.json",
        &format!(r#"{{"tokens":[{}]}}"#, entries.join(",")),
    )
}

/// The connectors `c` and `d` (a completion of 11 tokens, at once, from one upstream) and `s` (a
/// stream that waits for `release` before it ends).
async fn upstreams(release: &Arc<tokio::sync::Notify>) -> (Upstream, Upstream, PathBuf) {
    let completion = Upstream::always(Reply::json(200, COMPLETION)).await;
    let stream = held_stream(release, &[]).await;
    let dir = connector_dir(&[
        ("c", &completion.url("/v1/chat/completions")),
        ("d", &completion.url("/v1/chat/completions")),
        ("s", &stream.url("/v1/chat/completions")),
    ]);
    (completion, stream, dir)
}

fn serve(dir: &Path, tokens: &Path, state: Option<&str>) -> Gateway {
    let mut args = vec!["--client-tokens", path_str(tokens)];
    if let Some(state) = state {
        args.extend(["--state", state]);
    }
    gateway_with_log(dir, "", &args, &[]).0
}

/// A `429` for `limit` with a `Retry-After` in `retry_after`, OpenAI-shaped.
fn assert_rate_limited(
    (status, headers, body): &(u16, Vec<(String, String)>, String),
    limit: &str,
    retry_after: std::ops::RangeInclusive<u64>,
) {
    assert_eq!(*status, 429, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_exceeded", "{body}");
    assert_eq!(v["error"]["code"], limit, "{body}");
    let seconds: u64 = header(headers, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!(retry_after.contains(&seconds), "Retry-After: {seconds}");
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn assert_no_token_in_stderr(gw: &Gateway) {
    let err = gw.stderr();
    for token in ALL {
        assert!(!err.contains(token), "a client token in stderr: {err}");
    }
}

/// The value of the unlabelled series `name` in `/metrics`.
async fn metric(gw: &Gateway, name: &str) -> Option<String> {
    let (_, _, text) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

/// Opens a stream on connector `s` with `token` and reads its first chunk.
async fn open_stream(gw: &Gateway, token: &str) -> hyper::Response<hyper::body::Incoming> {
    let mut response = http1_request(
        &gw.addr,
        "POST",
        "/connectors/s/v1/chat/completions",
        Some(token),
        r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(next_chunk(&mut response).await.unwrap().contains("one"));
    response
}

/// Reads a response to its end.
async fn drain(mut response: hyper::Response<hyper::body::Incoming>) {
    while let Some(frame) = response.body_mut().frame().await {
        frame.unwrap();
    }
}

/// Sends requests with `token` to connector `c` until one is admitted (5 s at most): a limit
/// freed elsewhere (a stream that ended, a release written to Redis) takes effect.
async fn admitted_within_5s(gw: &Gateway, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = gw.chat("c", Some(token), HI).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "still refused after 5 s: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends requests with `token` to connector `c` until one is refused for `limit` (5 s at most):
/// tokens counted after a response (in Redis, by a background write) take effect.
async fn refused_within_5s(gw: &Gateway, token: &str, limit: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = gw.chat("c", Some(token), HI).await;
        if answer.0 == 429 {
            assert_rate_limited(&answer, limit, 1..=61);
            return;
        }
        assert_eq!(answer.0, 200, "{}", answer.2);
        assert!(Instant::now() < deadline, "never refused for {limit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_limits_answer_429_with_retry_after_and_send_nothing_upstream() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (completion, _stream, dir) = upstreams(&release).await;
    let tokens = tokens_file(&[
        (PER_MINUTE, r#"{"requestsPerMinute":3}"#),
        (TOKENS, r#"{"tokensPerMinute":10}"#),
        (CONCURRENT, r#"{"concurrentRequests":1}"#),
        (FREE, "{}"),
    ]);
    let gw = serve(&dir, &tokens, None);

    // requestsPerMinute: one budget for every connector the token is granted.
    for id in ["c", "d", "c"] {
        let (status, _, text) = gw.chat(id, Some(PER_MINUTE), HI).await;
        assert_eq!(status, 200, "{text}");
    }
    let before = completion.requests().len();
    let refused = gw.chat("d", Some(PER_MINUTE), HI).await;
    // The window is a sliding minute: the first request leaves it 60 to 61 s after it came.
    assert_rate_limited(&refused, "requests_per_minute", 55..=61);
    assert_eq!(completion.requests().len(), before);
    // The admin token and an entry without limits are not limited.
    assert_eq!(gw.chat("c", Some(ADMIN), HI).await.0, 200);
    assert_eq!(gw.chat("d", Some(FREE), HI).await.0, 200);
    assert_eq!(completion.requests().len(), before + 2);

    // tokensPerMinute: the first completion uses 11 tokens of 10; the next request is refused
    // before it starts.
    assert_eq!(gw.chat("c", Some(TOKENS), HI).await.0, 200);
    let before = completion.requests().len();
    assert_rate_limited(
        &gw.chat("c", Some(TOKENS), HI).await,
        "tokens_per_minute",
        55..=61,
    );
    assert_eq!(completion.requests().len(), before);

    // concurrentRequests: held by a stream until it ends.
    let open = open_stream(&gw, CONCURRENT).await;
    let before = completion.requests().len();
    assert_rate_limited(
        &gw.chat("c", Some(CONCURRENT), HI).await,
        "concurrent_requests",
        1..=1,
    );
    assert_eq!(completion.requests().len(), before);
    release.notify_one();
    drain(open).await;
    admitted_within_5s(&gw, CONCURRENT).await;

    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    for limit in [
        "requests_per_minute",
        "tokens_per_minute",
        "concurrent_requests",
    ] {
        assert!(
            metrics.contains(&format!(
                "openai_connector_rate_limited_total{{limit=\"{limit}\"}} 1\n"
            )),
            "{metrics}"
        );
    }
    assert!(!metrics.contains("shared_state_up"), "{metrics}");
    assert_no_token_in_stderr(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_route_counts_once_whatever_it_tries() {
    // Each request to `chat` tries `down` (503) and then `up`: two executions, one request.
    let down = Upstream::always(Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)).await;
    let up = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("down", &down.url("/v1/chat/completions")),
        ("up", &up.url("/v1/chat/completions")),
    ]);
    let routes = write_file(
        "routes.json",
        r#"{"routes":{"chat":{"connectors":["down","up"],"strategy":"fallback"}}}"#,
    );
    let tokens = tokens_file(&[
        (PER_MINUTE, r#"{"requestsPerMinute":2}"#),
        (TOKENS, r#"{"tokensPerMinute":22}"#),
    ]);
    let (gw, _) = gateway_with_log(
        &dir,
        "",
        &[
            "--client-tokens",
            path_str(&tokens),
            "--routes",
            path_str(&routes),
        ],
        &[],
    );
    let route = "/routes/chat/v1/chat/completions";
    for _ in 0..2 {
        let (status, _, body) = gw.call("POST", route, Some(PER_MINUTE), HI).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!((down.requests().len(), up.requests().len()), (2, 2));
    assert_rate_limited(
        &gw.call("POST", route, Some(PER_MINUTE), HI).await,
        "requests_per_minute",
        55..=61,
    );
    assert_eq!((down.requests().len(), up.requests().len()), (2, 2));
    // A route's request counts its tokens once recorded: 11 each here (the 503 has none).
    for _ in 0..2 {
        assert_eq!(gw.call("POST", route, Some(TOKENS), HI).await.0, 200);
    }
    assert_rate_limited(
        &gw.call("POST", route, Some(TOKENS), HI).await,
        "tokens_per_minute",
        55..=61,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_and_state_urls_stop_the_start_naming_the_field() {
    let dir = connector_dir(&[("c", "http://127.0.0.1:9/v1/chat/completions")]);
    let tokens = tokens_file(&[(PER_MINUTE, r#"{"requestsPerMinute":0}"#)]);
    let err = crate::serve::refused_start(
        &[
            "--connectors",
            path_str(&dir),
            "--client-tokens",
            path_str(&tokens),
        ],
        Some(ADMIN),
    )
    .await;
    assert!(
        err.contains("[tokens.0.limits.requestsPerMinute]: expected a whole number of at least 1"),
        "{err}"
    );
    let tokens = tokens_file(&[(PER_MINUTE, r#"{"requestsPerMinute":1}"#)]);
    let err = crate::serve::refused_start(
        &[
            "--connectors",
            path_str(&dir),
            "--client-tokens",
            path_str(&tokens),
            "--state",
            "rediss://user:pw-SECRET-STATE@127.0.0.1:1",
        ],
        Some(ADMIN),
    )
    .await;
    assert!(
        err.contains("--state: unsupported scheme \"rediss\""),
        "{err}"
    );
    assert!(!err.contains("pw-SECRET-STATE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_at_start_does_not_stop_serving_and_its_password_stays_hidden() {
    let up = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("c", &up.url("/v1/chat/completions"))]);
    let tokens = tokens_file(&[(PER_MINUTE, r#"{"requestsPerMinute":2}"#)]);
    // Nothing listens on port 1: every connection is refused.
    let gw = serve(
        &dir,
        &tokens,
        Some("redis://user:pw-SECRET-STATE@127.0.0.1:1/2"),
    );
    for _ in 0..2 {
        assert_eq!(gw.chat("c", Some(PER_MINUTE), HI).await.0, 200);
    }
    // Counted in the process meanwhile.
    assert_rate_limited(
        &gw.chat("c", Some(PER_MINUTE), HI).await,
        "requests_per_minute",
        55..=61,
    );
    assert_eq!(
        metric(&gw, "openai_connector_shared_state_up")
            .await
            .as_deref(),
        Some("0")
    );
    let err = gw.stderr();
    assert!(
        err.contains("--state: Redis at 127.0.0.1:1/2 is unreachable"),
        "{err}"
    );
    assert!(!err.contains("pw-SECRET-STATE"), "{err}");
    assert_no_token_in_stderr(&gw);
}

/// Requests with `token` to connector `c`, alternating between the gateways, `rounds` times
/// each; the number each admitted. Every answer is 200 or the 429 of `limit`.
async fn alternate(gateways: &[&Gateway], token: &str, rounds: usize, limit: &str) -> Vec<usize> {
    let mut admitted = vec![0; gateways.len()];
    for _ in 0..rounds {
        for (i, gw) in gateways.iter().enumerate() {
            let started = Instant::now();
            let answer = gw.chat("c", Some(token), HI).await;
            // Never held up by Redis, up or down.
            assert!(started.elapsed() < Duration::from_secs(2), "a slow answer");
            match answer.0 {
                200 => admitted[i] += 1,
                _ => assert_rate_limited(&answer, limit, 1..=61),
            }
        }
    }
    admitted
}

/// `per_gateway` requests with `token` to connector `c` of each gateway, all at once; the
/// number each admitted. Every answer is 200 or the 429 of `limit`.
async fn at_once(
    gateways: &[&Gateway],
    token: &str,
    per_gateway: usize,
    limit: &str,
) -> Vec<usize> {
    let mut tasks = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        for _ in 0..per_gateway {
            let addr = gw.addr.clone();
            let token = token.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut response = http1_request(
                    &addr,
                    "POST",
                    "/connectors/c/v1/chat/completions",
                    Some(&token),
                    HI,
                )
                .await;
                let status = response.status().as_u16();
                let headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                    .collect();
                let mut body = Vec::new();
                while let Some(frame) = response.body_mut().frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        body.extend_from_slice(&data);
                    }
                }
                (i, (status, headers, String::from_utf8(body).unwrap()))
            }));
        }
    }
    let mut admitted = vec![0; gateways.len()];
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        match answer.0 {
            200 => admitted[i] += 1,
            _ => assert_rate_limited(&answer, limit, 1..=61),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_limits_through_redis_and_keep_serving_while_it_is_down() {
    let Some(mut redis) = RedisServer::start("limits_two_replicas") else {
        return;
    };
    let release = Arc::new(tokio::sync::Notify::new());
    let (completion, _stream, dir) = upstreams(&release).await;
    let tokens = tokens_file(&[
        (PER_MINUTE, r#"{"requestsPerMinute":10}"#),
        (LATER, r#"{"requestsPerMinute":4}"#),
        (DURING, r#"{"requestsPerMinute":3}"#),
        (TOKENS, r#"{"tokensPerMinute":20}"#),
        (CONCURRENT, r#"{"concurrentRequests":1}"#),
    ]);
    let url = redis.url();
    let a = serve(&dir, &tokens, Some(&url));
    let b = serve(&dir, &tokens, Some(&url));
    let both = [&a, &b];

    // One requestsPerMinute for both replicas: 30 requests at once, exactly 10 admitted.
    let before = completion.requests().len();
    let shared = at_once(&both, PER_MINUTE, 15, "requests_per_minute").await;
    eprintln!("Redis up: limit 10/min, 30 requests at once over 2 replicas, admitted {shared:?}");
    assert_eq!(shared.iter().sum::<usize>(), 10, "{shared:?}");
    assert_eq!(completion.requests().len(), before + 10);
    for gw in both {
        assert_eq!(
            metric(gw, "openai_connector_shared_state_up")
                .await
                .as_deref(),
            Some("1")
        );
    }

    // Redis goes away: each replica keeps serving, counting alone with the full limit...
    redis.kill();
    let alone = alternate(&both, DURING, 5, "requests_per_minute").await;
    eprintln!("Redis down: limit 3/min, 10 requests over 2 replicas, admitted {alone:?}");
    assert_eq!(alone, [3, 3]);
    // ...its own requests of this minute included.
    let outage = alternate(&both, PER_MINUTE, 10, "requests_per_minute").await;
    eprintln!("Redis down: the 10/min above, 20 more requests, admitted {outage:?}");
    for i in 0..2 {
        assert_eq!(shared[i] + outage[i], 10, "{shared:?} then {outage:?}");
    }
    for gw in both {
        assert_eq!(gw.chat("c", Some(ADMIN), HI).await.0, 200);
        assert_eq!(
            metric(gw, "openai_connector_shared_state_up")
                .await
                .as_deref(),
            Some("0")
        );
        let warned = gw.stderr();
        assert_eq!(warned.matches("is unreachable").count(), 1, "{warned}");
    }

    // Redis is back (empty): within 10 s both count in it again.
    redis.restart();
    let back = Instant::now();
    for gw in both {
        while metric(gw, "openai_connector_shared_state_up")
            .await
            .as_deref()
            != Some("1")
        {
            assert!(back.elapsed() < Duration::from_secs(10), "not back in 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "Redis back: both replicas count in it again after {:?}",
        back.elapsed()
    );
    let resumed = at_once(&both, LATER, 6, "requests_per_minute").await;
    eprintln!("Redis back: limit 4/min, 12 requests at once over 2 replicas, admitted {resumed:?}");
    assert_eq!(resumed.iter().sum::<usize>(), 4, "{resumed:?}");

    // concurrentRequests across replicas: a stream on one holds the other's.
    let open = open_stream(&a, CONCURRENT).await;
    assert_rate_limited(
        &b.chat("c", Some(CONCURRENT), HI).await,
        "concurrent_requests",
        1..=1,
    );
    release.notify_one();
    drain(open).await;
    admitted_within_5s(&b, CONCURRENT).await;

    // tokensPerMinute across replicas: 11 tokens on each reach 20.
    assert_eq!(a.chat("c", Some(TOKENS), HI).await.0, 200);
    refused_within_5s(&b, TOKENS, "tokens_per_minute").await;
    refused_within_5s(&a, TOKENS, "tokens_per_minute").await;

    // The keys name entries by a digest, never by the token.
    let mut connection = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with("openai-connector:limits:{"), "{key}");
        for token in ALL {
            assert!(!key.contains(token), "{key}");
        }
    }
    for gw in both {
        assert_no_token_in_stderr(gw);
        assert!(gw.stderr().contains("answers again"), "{}", gw.stderr());
    }
}

/// Latency of `rounds` requests with each of `tokens`, interleaved, on one keep-alive
/// connection to connector `c`: the sorted latencies of each token.
async fn latencies(gw: &Gateway, tokens: &[&str], rounds: usize) -> Vec<Vec<Duration>> {
    let tcp = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<
        _,
        http_body_util::Full<bytes::Bytes>,
    >(hyper_util::rt::TokioIo::new(tcp))
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut out = vec![Vec::with_capacity(rounds); tokens.len()];
    for _ in 0..rounds {
        for (i, token) in tokens.iter().enumerate() {
            let request = hyper::Request::post("/connectors/c/v1/chat/completions")
                .header("host", &gw.addr)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    HI.as_bytes(),
                )))
                .unwrap();
            sender.ready().await.unwrap();
            let started = Instant::now();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
            out[i].push(started.elapsed());
        }
    }
    for l in &mut out {
        l.sort();
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What the client limits add to a request on loopback: one gateway, a token with limits
/// that are never reached and one without, interleaved on one connection, counted in the
/// process and in Redis. A measurement (`--ignored --nocapture`); it fails only if a limited
/// request costs a whole millisecond more at the median.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: cargo test -p openai-connector-harness --test all limits_latency -- --ignored --nocapture"]
async fn limits_latency_on_loopback() {
    let Some(redis) = RedisServer::start("limits_latency") else {
        return;
    };
    let release = Arc::new(tokio::sync::Notify::new());
    let (_completion, _stream, dir) = upstreams(&release).await;
    let tokens = tokens_file(&[
        (
            PER_MINUTE,
            r#"{"requestsPerMinute":1000000000,"tokensPerMinute":1000000000000,"concurrentRequests":1000000}"#,
        ),
        (FREE, "{}"),
    ]);
    let url = redis.url();
    for (state, gw) in [
        ("local", serve(&dir, &tokens, None)),
        ("redis", serve(&dir, &tokens, Some(&url))),
    ] {
        latencies(&gw, &[FREE, PER_MINUTE], 200).await;
        let measured = latencies(&gw, &[FREE, PER_MINUTE], 2000).await;
        let (free, limited) = (&measured[0], &measured[1]);
        let (p50_free, p50_limited) = (percentile(free, 0.5), percentile(limited, 0.5));
        eprintln!(
            "{state}: p50 {:?} without limits, {:?} with (+{:?}); p99 {:?} / {:?}",
            p50_free,
            p50_limited,
            p50_limited.saturating_sub(p50_free),
            percentile(free, 0.99),
            percentile(limited, 0.99),
        );
        assert!(p50_limited < p50_free + Duration::from_millis(1));
    }
}
