//! Added latency of `openai-connector serve` over calling the upstream directly, at a fixed
//! request rate, beside LiteLLM's proxy for the same upstream (issue 5, "Speed").
//!
//! ```sh
//! cargo bench -p openai-connector-harness --bench gateway -- [--rate 1000,50] [--seconds 10]
//!     [--stream-rate 500,50] [--connections 32] [--litellm PATH/TO/litellm] [--shared]
//!     [--closed 1,16] [--hold SECONDS]
//! ```
//!
//! `--closed 1,16` replaces those tables with closed-loop ones (issue 17, item 2): each connection
//! sends its next request as soon as its last answer has been read, against direct, a plain
//! hyper reverse proxy (`gateway/floor.rs`, the floor under `serve`'s per-request cost) and
//! `serve`; each row also gives the process's CPU time per request. `--hold SECONDS` starts the
//! upstream, the floor proxy and `serve`, prints their URLs, tokens and process ids, and waits
//! (for `wrk` or `perf record -p`). `OPENAI_CONNECTOR_BIN` runs another build of the binary as
//! `serve`, such as `cargo build --profile profiling`'s, which keeps its symbols for `perf`.
//!
//! `--shared` adds a second `serve` with client limits counted in Redis (`--state`) and both
//! usage sinks (Elasticsearch `_bulk` and OTLP), against real components (`gateway/shared.rs`),
//! and below each table the floor of the limits' cost: the Redis round trip of their script.
//!
//! `benches/gateway/litellm-venv.sh` installs the pinned `litellm[proxy]` into
//! `target/litellm-venv` (`$CARGO_TARGET_DIR/litellm-venv` when that is set) and prints the path
//! to pass as `--litellm`; without it LiteLLM is left out of the table.
//!
//! What runs, all on 127.0.0.1:
//!
//! - an upstream in this process (hyper, its own thread): `POST /v1/chat/completions` answers a
//!   fixed chat completion, or with `"stream":true` a six-event SSE stream whose first event
//!   is written at once;
//! - the release `openai-connector serve` as a child process, with one connector for that
//!   upstream and a client token (so authentication is part of the measurement);
//! - optionally `litellm` (one worker) with one model for that upstream and a master key.
//!
//! The load is open loop: requests are issued at fixed intervals whatever the responses (so a
//! stall is not hidden by the requests it delayed: no coordinated omission), and each latency
//! runs from the moment the request was issued (waiting for a free connection included) to the
//! end of the body, or to the first body byte for streams (time to first byte). Requests go over `--connections` keep-alive HTTP/1.1 connections. Every target gets
//! the same warm-up (2 s) and the same schedule, one target at a time. Each rate in the lists
//! gets its own table: the high one is the issue's target load, the low one a load LiteLLM can
//! sustain here, so that its own latency is not only queueing.

// The table on stdout is this bench's output.
#![allow(clippy::print_stdout)]

#[path = "common.rs"]
mod common;
#[path = "gateway/floor.rs"]
mod floor;
#[path = "gateway/shared.rs"]
mod shared;
use bytes::Bytes;
use common::{Sender, connect};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello world"}],"temperature":0.7}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}],"stream":true,"stream_options":{"include_usage":true}}"#;
const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1767225600,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":9,"total_tokens":28}}"#;
const UPSTREAM_KEY: &str = "sk-upstream-bench-0123456789";
const CLIENT_TOKEN: &str = "client-token-bench-0123456789";
const ADMIN_TOKEN: &str = "admin-token-bench-0123456789";
const WARM_UP: Duration = Duration::from_secs(2);

fn stream_events() -> Vec<Bytes> {
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        ))
    };
    vec![
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"Hello!"}"#, "null"),
        chunk(r#"{"content":" How can I help?"}"#, "null"),
        chunk("{}", "\"stop\""),
        Bytes::from_static(b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":6,\"total_tokens\":17}}\n\n"),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]
}

struct Options {
    rates: Vec<u32>,
    stream_rates: Vec<u32>,
    seconds: u64,
    connections: usize,
    litellm: Option<String>,
    shared: bool,
    /// `--shared-parts redis,es,otlp` (default all): which of them the second `serve` uses.
    shared_parts: Vec<String>,
    /// `--closed 1,16`: closed-loop runs at these connection counts instead of the open-loop
    /// tables, against direct, the floor proxy and `serve`.
    closed: Vec<usize>,
    /// `--hold SECONDS`: start the targets, print their URLs and tokens, and wait, for an
    /// outside load generator (`wrk`) or profiler (`perf record -p`).
    hold: Option<u64>,
}

fn options() -> Options {
    let mut o = Options {
        rates: vec![1000, 50],
        stream_rates: vec![500, 50],
        seconds: 10,
        connections: 32,
        litellm: std::env::var("LITELLM_BIN").ok(),
        shared: false,
        shared_parts: vec!["redis".into(), "es".into(), "otlp".into()],
        closed: Vec::new(),
        hold: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--rate" => o.rates = rates(&value("--rate")),
            "--stream-rate" => o.stream_rates = rates(&value("--stream-rate")),
            "--seconds" => o.seconds = value("--seconds").parse().expect("--seconds: a number"),
            "--connections" => {
                o.connections = value("--connections")
                    .parse()
                    .expect("--connections: a number")
            }
            "--litellm" => o.litellm = Some(value("--litellm")),
            "--hold" => o.hold = Some(value("--hold").parse().expect("--hold: seconds")),
            "--closed" => {
                o.closed = value("--closed")
                    .split(',')
                    .map(|c| c.trim().parse().expect("--closed: connection counts"))
                    .collect();
            }
            "--shared" => o.shared = true,
            "--shared-parts" => {
                o.shared = true;
                o.shared_parts = value("--shared-parts")
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            // `cargo bench` passes `--bench`; criterion-style filters are not used here.
            _ => {}
        }
    }
    o
}

/// `1000,50` → `[1000, 50]`.
fn rates(list: &str) -> Vec<u32> {
    list.split(',')
        .map(|r| {
            r.trim()
                .parse()
                .unwrap_or_else(|_| panic!("rate {r:?}: requests per second, a whole number"))
        })
        .collect()
}

/// The upstream, on its own thread and runtime; returns its port.
fn start_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let events = Arc::new(stream_events());
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tcp.set_nodelay(true).unwrap();
                let events = events.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                            let events = events.clone();
                            async move { upstream_answer(req, &events).await }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    port
}

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn upstream_answer(
    req: hyper::Request<Incoming>,
    events: &[Bytes],
) -> Result<hyper::Response<UpstreamBody>, std::convert::Infallible> {
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {UPSTREAM_KEY}").as_bytes());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if !authorized {
        let mut r = hyper::Response::new(
            Full::new(Bytes::from_static(b"{\"error\":{\"message\":\"bad key\"}}")).boxed(),
        );
        *r.status_mut() = hyper::StatusCode::UNAUTHORIZED;
        return Ok(r);
    }
    let stream = memchr::memmem::find(&body, b"\"stream\":true").is_some();
    if stream {
        let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = events
            .iter()
            .map(|e| Ok(hyper::body::Frame::data(e.clone())))
            .collect();
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        Ok(hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(body))
            .unwrap())
    } else {
        Ok(hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(COMPLETION.as_bytes())).boxed())
            .unwrap())
    }
}

/// A child process that is killed when dropped.
struct Server {
    child: Child,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

/// `serve` in `dir` for the upstream, with `args` added; its client token carries `limits`
/// (JSON after `"connectors":[...]`, or empty).
fn start_gateway(
    dir: &std::path::Path,
    upstream: u16,
    limits: &str,
    args: &[String],
) -> (Server, String) {
    std::fs::create_dir_all(dir).unwrap();
    let connectors = dir.join("connectors");
    std::fs::create_dir_all(&connectors).unwrap();
    std::fs::write(
        connectors.join("bench.json"),
        format!(
            r#"{{"name":"Bench","config":{{"apiProvider":"OpenAI","apiUrl":"http://127.0.0.1:{upstream}/v1/chat/completions"}},"secrets":{{"apiKey":"{UPSTREAM_KEY}"}}}}"#
        ),
    )
    .unwrap();
    let tokens = dir.join("tokens.json");
    std::fs::write(
        &tokens,
        format!(r#"{{"tokens":[{{"token":"{CLIENT_TOKEN}","connectors":["bench"]{limits}}}]}}"#),
    )
    .unwrap();
    // `OPENAI_CONNECTOR_BIN`: another build of the binary, such as `--profile profiling`'s (with
    // symbols, for `perf`).
    let binary = std::env::var_os("OPENAI_CONNECTOR_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_openai-connector").into());
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--connectors"])
        .arg(&connectors)
        .arg("--client-tokens")
        .arg(&tokens)
        .args(args)
        .env("OPENAI_CONNECTOR_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn");
    listening(
        command,
        "openai-connector serve",
        "/connectors/bench/v1/chat/completions",
    )
}

/// Starts `command` and waits for it to print `listening on http://ADDR` on stderr (the rest of
/// which is echoed); returns it as a [`Server`] with the URL of `path` there.
fn listening(mut command: Command, name: &'static str, path: &str) -> (Server, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on http://") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.to_owned());
                }
            } else {
                eprintln!("{name}: {line}");
            }
        }
    });
    let server = Server { child, name };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name} printed `listening on`"));
    (server, format!("http://{addr}{path}"))
}

/// The floor proxy (`gateway/floor.rs`): this binary again, as a child process.
fn start_floor(upstream: u16) -> (Server, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([floor::ARG, &upstream.to_string()]);
    listening(
        command,
        "hyper proxy (floor)",
        "/connectors/bench/v1/chat/completions",
    )
}

fn start_litellm(bin: &str, dir: &std::path::Path, upstream: u16) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: http://127.0.0.1:{upstream}/v1\n      api_key: {UPSTREAM_KEY}\ngeneral_settings:\n  master_key: sk-{CLIENT_TOKEN}\nlitellm_settings:\n  telemetry: false\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", "1"])
        // No network: use the bundled model cost map instead of fetching it.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_TELEMETRY", "False")
        .env("LITELLM_LOG", "ERROR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn litellm");
    let server = Server {
        child,
        name: "litellm",
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let ok = Command::new("curl")
                .args(["-sf", &format!("http://127.0.0.1:{port}/health/liveliness")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
        }
        assert!(Instant::now() < deadline, "litellm did not start in 180 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    (
        server,
        format!("http://127.0.0.1:{port}/v1/chat/completions"),
    )
}

/// One request; returns the time to the first body byte (`ttfb`) or to the end of the body.
async fn one(
    sender: &mut Sender,
    url: &hyper::Uri,
    token: &str,
    body: &'static str,
    issued: Instant,
    ttfb: bool,
) -> Result<Duration, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let request = hyper::Request::post(url.path())
        .header("host", url.authority().unwrap().as_str())
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first = None;
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if first.is_none() && !data.is_empty() {
                first = Some(issued.elapsed());
            }
            all.extend_from_slice(data);
        }
    }
    let end = issued.elapsed();
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&all)));
    }
    let expected: &[u8] = if ttfb {
        b"[DONE]"
    } else {
        b"Hello! How can I help"
    };
    if memchr::memmem::find(&all, expected).is_none() {
        return Err(format!(
            "unexpected body: {}",
            String::from_utf8_lossy(&all)
        ));
    }
    Ok(if ttfb { first.unwrap_or(end) } else { end })
}

struct Run {
    latencies: Vec<Duration>,
    errors: Vec<String>,
    achieved_rate: f64,
}

/// Open-loop load: `rate` requests per second for `seconds`, over `connections` connections.
async fn load(
    url: &str,
    token: &str,
    body: &'static str,
    ttfb: bool,
    rate: u32,
    duration: Duration,
    connections: usize,
) -> Run {
    let url: hyper::Uri = url.parse().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let results = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let rx = rx.clone();
        let results = results.clone();
        let url = url.clone();
        let token = token.to_owned();
        let mut sender = connect(&url).await;
        workers.push(tokio::spawn(async move {
            loop {
                let Some(issued) = rx.lock().await.recv().await else {
                    break;
                };
                if sender.is_closed() {
                    sender = connect(&url).await;
                }
                let outcome = one(&mut sender, &url, &token, body, issued, ttfb).await;
                let mut r = results.lock().await;
                match outcome {
                    Ok(latency) => r.0.push(latency),
                    Err(error) => {
                        r.1.push(error);
                        drop(r);
                        sender = connect(&url).await;
                    }
                }
            }
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let total = (duration.as_secs_f64() * f64::from(rate)) as u64;
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        // Latency runs from when the request was issued. The schedule itself stays fixed (the
        // next send time does not depend on any response), so a slow target still gets the
        // full rate and its queueing counts; issuing time rather than the nominal slot keeps
        // tokio's 1 ms timer granularity out of the figures.
        tx.send(Instant::now()).unwrap();
    }
    drop(tx);
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (latencies, errors) = std::mem::take(&mut *results.lock().await);
    Run {
        achieved_rate: latencies.len() as f64 / elapsed,
        latencies,
        errors,
    }
}

/// Closed-loop load: `connections` connections, each sending its next request as soon as the
/// last answer has been read, for `duration`.
async fn closed_loop(
    url: &str,
    token: &str,
    body: &'static str,
    ttfb: bool,
    connections: usize,
    duration: Duration,
) -> Run {
    let url: hyper::Uri = url.parse().unwrap();
    let start = Instant::now();
    let until = start + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let url = url.clone();
        let token = token.to_owned();
        let mut sender = connect(&url).await;
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), Vec::new());
            while Instant::now() < until {
                let issued = Instant::now();
                match one(&mut sender, &url, &token, body, issued, ttfb).await {
                    Ok(latency) => latencies.push(latency),
                    Err(error) => {
                        errors.push(error);
                        sender = connect(&url).await;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut run = Run {
        latencies: Vec::new(),
        errors: Vec::new(),
        achieved_rate: 0.0,
    };
    for w in workers {
        let (latencies, errors) = w.await.unwrap();
        run.latencies.extend(latencies);
        run.errors.extend(errors);
    }
    run.achieved_rate = run.latencies.len() as f64 / start.elapsed().as_secs_f64();
    run
}

/// A target: its name, URL and bearer token.
type Target<'a> = (&'a str, String, String);

/// `--closed`: each connection count gets a table of direct, the floor proxy and `serve`;
/// `targets` pairs each with the process whose CPU time is counted (`None`: the upstream in
/// this process, not counted).
fn closed_tables(o: &Options, rt: &tokio::runtime::Runtime, targets: &[(Target<'_>, Option<u32>)]) {
    let duration = Duration::from_secs(o.seconds);
    let mut tables = Vec::new();
    for &connections in &o.closed {
        let mut rows = Vec::new();
        for ((name, url, token), pid) in targets {
            eprintln!("closed loop, {connections} connection(s): {name}: warm-up");
            rt.block_on(closed_loop(url, token, BODY, false, connections, WARM_UP));
            eprintln!(
                "closed loop, {connections} connection(s): {name}: {} s",
                o.seconds
            );
            let cpu_before = pid.and_then(cpu_time);
            let run = rt.block_on(closed_loop(url, token, BODY, false, connections, duration));
            let cpu = cpu_before
                .zip(pid.and_then(cpu_time))
                .map(|(before, after)| after.saturating_sub(before));
            let row = Row::of(name, name, run);
            let cpu_per_request = cpu.map(|cpu| cpu / row.ok.max(1) as u32);
            rows.push((row, cpu_per_request));
        }
        tables.push((connections, rows));
    }
    println!(
        "\nClosed loop, non-streaming, {} s per target after {} s of warm-up; latency in µs \
         (issue to end of body); CPU: the process's user + system time per request.\n",
        o.seconds,
        WARM_UP.as_secs()
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (connections, rows) in tables {
        println!("### {connections} connection(s)\n");
        println!(
            "| target | p50 | p99 | max | req/s | CPU µs/req | p50 / p99 over the floor | p50 / p99 over direct | errors |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let (direct, floor) = (&rows[0].0, &rows[1].0);
        for (r, cpu) in &rows {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:+.0} / {:+.0} | {:+.0} / {:+.0} | {} |",
                r.target,
                us(r.p50),
                us(r.p99),
                us(r.max),
                r.rate,
                cpu.map_or("–".to_owned(), |cpu| format!("{:.0}", us(cpu))),
                us(r.p50) - us(floor.p50),
                us(r.p99) - us(floor.p99),
                us(r.p50) - us(direct.p50),
                us(r.p99) - us(direct.p99),
                r.errors
            );
        }
        println!();
    }
}

/// User plus system CPU time of process `pid` so far (Linux: `/proc/PID/stat`, in clock ticks
/// of 10 ms); `None` elsewhere.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Row {
    target: String,
    p50: Duration,
    p99: Duration,
    max: Duration,
    ok: usize,
    errors: usize,
    rate: f64,
}

impl Row {
    /// The row of `target`'s `run`; its errors are reported on stderr under `label`.
    fn of(label: &str, target: &str, mut run: Run) -> Row {
        run.latencies.sort();
        if let Some(e) = run.errors.first() {
            eprintln!("{label}: {} errors, first: {e}", run.errors.len());
        }
        Row {
            target: target.to_owned(),
            p50: percentile(&run.latencies, 50.0),
            p99: percentile(&run.latencies, 99.0),
            max: run.latencies.last().copied().unwrap_or_default(),
            ok: run.latencies.len(),
            errors: run.errors.len(),
            rate: run.achieved_rate,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(floor::ARG) {
        let upstream = args
            .next()
            .and_then(|p| p.parse().ok())
            .expect("upstream port");
        floor::run(upstream, CLIENT_TOKEN, UPSTREAM_KEY);
    }
    let o = options();
    let dir = std::env::temp_dir().join(format!(
        "openai-connector-gateway-bench-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let upstream = start_upstream();
    let (gateway, gateway_url) = start_gateway(&dir.join("plain"), upstream, "", &[]);
    let shared = o.shared.then(|| shared::Shared::start(&dir));
    let shared_name = format!("serve + {}", o.shared_parts.join(" + "));
    // Limits that never refuse at the bench's rates: every request is counted in Redis.
    let shared_gateway = shared.as_ref().map(|s| {
        let part = |name: &str| o.shared_parts.iter().any(|p| p == name);
        let mut args = Vec::new();
        if part("redis") {
            args.extend(["--state".to_owned(), s.redis_url.clone()]);
        }
        for (name, sink) in ["es", "otlp"].into_iter().zip(&s.sinks) {
            if part(name) {
                args.extend(["--usage-sink".to_owned(), sink.clone()]);
            }
        }
        start_gateway(
            &dir.join("shared"),
            upstream,
            r#","limits":{"requestsPerMinute":100000000,"tokensPerMinute":100000000000,"concurrentRequests":100000}"#,
            &args,
        )
    });
    let litellm = o
        .litellm
        .as_deref()
        .map(|bin| start_litellm(bin, &dir, upstream));
    let direct_url = format!("http://127.0.0.1:{upstream}/v1/chat/completions");
    let mut targets: Vec<Target<'_>> = vec![
        ("direct", direct_url, UPSTREAM_KEY.to_owned()),
        (
            "openai-connector serve",
            gateway_url,
            CLIENT_TOKEN.to_owned(),
        ),
    ];
    if let Some((_, url)) = &shared_gateway {
        targets.push((shared_name.as_str(), url.clone(), CLIENT_TOKEN.to_owned()));
    }
    if let Some((_, url)) = &litellm {
        targets.push(("litellm proxy", url.clone(), format!("sk-{CLIENT_TOKEN}")));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(seconds) = o.hold {
        let (floor, floor_url) = start_floor(upstream);
        for (name, url, token) in &targets {
            println!("{name}: {url} (token {token})");
        }
        println!("hyper proxy (floor): {floor_url} (token {CLIENT_TOKEN})");
        println!("serve pid: {}", gateway.child.id());
        println!("floor pid: {}", floor.child.id());
        std::thread::sleep(Duration::from_secs(seconds));
        drop(floor);
        drop(gateway);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    if !o.closed.is_empty() {
        let (floor, floor_url) = start_floor(upstream);
        let closed_targets = [
            (targets[0].clone(), None),
            (
                ("hyper proxy (floor)", floor_url, CLIENT_TOKEN.to_owned()),
                Some(floor.child.id()),
            ),
            (targets[1].clone(), Some(gateway.child.id())),
        ];
        closed_tables(&o, &rt, &closed_targets);
        drop(floor);
        drop(gateway);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let duration = Duration::from_secs(o.seconds);
    let mut tables = Vec::new();
    let runs = o
        .rates
        .iter()
        .map(|&rate| ("non-streaming, end of body", BODY, false, rate))
        .chain(
            o.stream_rates
                .iter()
                .map(|&rate| ("streaming, time to first byte", STREAM_BODY, true, rate)),
        );
    for (kind, body, ttfb, rate) in runs {
        let mut rows = Vec::new();
        for (name, url, token) in &targets {
            eprintln!("{kind}: {name}: warm-up");
            rt.block_on(load(url, token, body, ttfb, rate, WARM_UP, o.connections));
            eprintln!("{kind}: {name}: {rate}/s for {} s", o.seconds);
            let run = rt.block_on(load(url, token, body, ttfb, rate, duration, o.connections));
            rows.push(Row::of(&format!("{kind}: {name}"), name, run));
        }
        let floor = shared.as_ref().map(|s| {
            eprintln!("{kind}: Redis acquire script: {rate}/s for {} s", o.seconds);
            let latencies = rt.block_on(s.acquire_floor(rate, duration));
            (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
        });
        tables.push((kind, rate, rows, floor));
    }
    drop(litellm);
    drop(shared_gateway);
    drop(shared);
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\n{} s per target at a fixed rate, {} keep-alive connections, open loop; latency in ms.\n",
        o.seconds, o.connections
    );
    for (kind, rate, rows, floor) in tables {
        println!("### {kind}, {rate} requests/s\n");
        println!(
            "| target | p50 | p99 | max | p50 over direct | p99 over direct | ok | errors | achieved/s |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let direct = (rows[0].p50, rows[0].p99);
        for r in &rows {
            let over = |a: Duration, b: Duration| {
                format!("{:+.3}", (a.as_secs_f64() - b.as_secs_f64()) * 1e3)
            };
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                r.target,
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                over(r.p50, direct.0),
                over(r.p99, direct.1),
                r.ok,
                r.errors,
                r.rate
            );
        }
        if let Some((p50, p99)) = floor {
            let plain = (rows[1].p50, rows[1].p99);
            let with = (rows[2].p50, rows[2].p99);
            let us = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1e6;
            println!(
                "\nThese add {:+.0} µs at p50, {:+.0} µs at p99 over plain `serve`; \
                 the floor, one call of the limits' script to Redis alone at {rate}/s: {:.0} µs p50, {:.0} µs p99.",
                us(with.0, plain.0),
                us(with.1, plain.1),
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
        }
        if rows.len() == 3 && floor.is_none() {
            let gw = rows[1].p99.saturating_sub(direct.1).as_secs_f64();
            let ll = rows[2].p99.saturating_sub(direct.1).as_secs_f64();
            if gw > 0.0 {
                println!(
                    "\np99 overhead, LiteLLM / openai-connector: {:.1}x",
                    ll / gw
                );
            }
        }
        println!();
    }
}
