//! Usage leaving the process (cli.md "`serve` beyond one process", "Usage sinks"), against real
//! components started by each test on loopback and stopped after it:
//! - an OpenSearch-compatible server (PyPI's `osmem-server`) receiving the `_bulk` documents
//!   of two replicas, stopped and started again mid-run;
//! - an OTLP/HTTP receiver decoding real protobuf with PyPI's `opentelemetry-proto`
//!   (tests/py/otlp_receiver.py);
//! - Debian's `prometheus` scraping `/metrics` of two replicas.
//!
//! `.ci/run` installs all three. Outside CI (`CI` unset) a test whose component is missing
//! skips loudly; in CI it fails.

use crate::serve::{ADMIN, Gateway, connector_dir, gateway_with_log, path_str};
use crate::support::*;
use crate::upstream::{Recorded, Reply, Upstream};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether `component` is here; if not, skips loudly outside CI and fails in CI.
fn need(component: &str, found: bool, install: &str) -> bool {
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{component} is missing in CI: {install} (.ci/run does)"
    );
    eprintln!(
        "\n\n!!! SKIPPED: {component} is not installed. Install it with `{install}` (.ci/run does).\n\n"
    );
    false
}

/// A child process killed (and reaped) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream every sink test uses: usage from the message (`tokens-N`: N prompt tokens,
/// 2 completion tokens), no usage for `no-usage`, 500 for `fail`.
async fn usage_upstream() -> Upstream {
    Upstream::http(Arc::new(|r: &Recorded| {
        let body = r.body_str();
        if body.contains("fail") {
            return Reply::json(500, r#"{"error":{"message":"boom"}}"#);
        }
        let message = r#""choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]"#;
        if body.contains("no-usage") {
            return Reply::json(
                200,
                &format!(r#"{{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",{message}}}"#),
            );
        }
        let n: u64 = body
            .split("tokens-")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(1);
        Reply::json(
            200,
            &format!(
                r#"{{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06",{message},"usage":{{"prompt_tokens":{n},"completion_tokens":2,"total_tokens":{}}}}}"#,
                n + 2
            ),
        )
    }))
    .await
}

fn chat_body(content: &str) -> String {
    format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{content}"}}]}}"#)
}

/// Totals of event-log lines: lines, and per connector id (lines, total tokens).
#[derive(Debug, Default, PartialEq)]
struct Totals {
    documents: u64,
    total_tokens: u64,
    by_connector: BTreeMap<String, (u64, u64)>,
}

fn log_totals(logs: &[&Path]) -> Totals {
    let mut t = Totals::default();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let id = v["kibana"]["action"]["id"].as_str().unwrap().to_owned();
            let tokens = v["kibana"]["action"]["execution"]["gen_ai"]["usage"]["total_tokens"]
                .as_u64()
                .unwrap_or(0);
            t.documents += 1;
            t.total_tokens += tokens;
            let e = t.by_connector.entry(id).or_default();
            e.0 += 1;
            e.1 += tokens;
        }
    }
    t
}

impl std::ops::Add for Totals {
    type Output = Totals;
    fn add(mut self, other: Totals) -> Totals {
        self.documents += other.documents;
        self.total_tokens += other.total_tokens;
        for (id, (n, tokens)) in other.by_connector {
            let e = self.by_connector.entry(id).or_default();
            e.0 += n;
            e.1 += tokens;
        }
        self
    }
}

/// A JSON request; the status and the JSON answer.
async fn json_call(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut response = http1_request(addr, method, path, None, body).await;
    let status = response.status().as_u16();
    let bytes = response.body_mut().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))),
    )
}

/// `osmem-server`, on 127.0.0.1.
struct Osmem {
    _child: Running,
    addr: String,
}

impl Osmem {
    /// The binary the `osmem-server` wheel ships, if installed.
    fn binary() -> Option<PathBuf> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import osmem_server; print(osmem_server.resolve_binary())",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (out.status.success() && path.is_file()).then_some(path)
    }

    /// Starts it on `port` (0: any) and waits for its ready line.
    fn start(binary: &Path, port: u16) -> Osmem {
        let mut child = Command::new(binary)
            .args(["--addr", &format!("127.0.0.1:{port}"), "--no-ja"])
            // It also exits when this test process does.
            .args(["--parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start osmem-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(url) = v["url"].as_str()
                {
                    let _ = tx.send(url.trim_start_matches("http://").to_owned());
                }
            }
        });
        let child = Running(child);
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("osmem-server ready within 30 s");
        Osmem {
            _child: child,
            addr,
        }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// What `index` holds: documents, the sum of total tokens, and per connector id (terms).
    async fn totals(&self, index: &str) -> Totals {
        let (status, _) = json_call(&self.addr, "POST", &format!("/{index}/_refresh"), "").await;
        if status == 404 {
            return Totals::default();
        }
        let query = json!({
            "size": 0,
            "track_total_hits": true,
            "aggs": {
                "total_tokens": {"sum": {"field": "kibana.action.execution.gen_ai.usage.total_tokens"}},
                "connectors": {
                    "terms": {"field": "kibana.action.id.keyword", "size": 100},
                    "aggs": {"total_tokens": {"sum": {"field": "kibana.action.execution.gen_ai.usage.total_tokens"}}}
                }
            }
        });
        let (status, v) = json_call(
            &self.addr,
            "POST",
            &format!("/{index}/_search"),
            &query.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let mut t = Totals {
            documents: v["hits"]["total"]["value"].as_u64().unwrap(),
            total_tokens: v["aggregations"]["total_tokens"]["value"].as_f64().unwrap() as u64,
            by_connector: BTreeMap::new(),
        };
        for bucket in v["aggregations"]["connectors"]["buckets"]
            .as_array()
            .unwrap()
        {
            t.by_connector.insert(
                bucket["key"].as_str().unwrap().to_owned(),
                (
                    bucket["doc_count"].as_u64().unwrap(),
                    bucket["total_tokens"]["value"].as_f64().unwrap() as u64,
                ),
            );
        }
        t
    }

    /// Waits up to `within` for `index` to hold `documents` documents; returns its totals.
    async fn wait_for(&self, index: &str, documents: u64, within: Duration) -> Totals {
        let deadline = Instant::now() + within;
        loop {
            let t = self.totals(index).await;
            if t.documents >= documents || Instant::now() > deadline {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `/metrics` of `gw`, as (series, value) pairs.
async fn metrics(gw: &Gateway) -> BTreeMap<String, f64> {
    let (status, _, text) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sink_metric(m: &BTreeMap<String, f64>, family: &str, sink: &str, extra: &str) -> f64 {
    let key = format!("{family}{{sink=\"{sink}\"{extra}}}");
    *m.get(&key)
        .unwrap_or_else(|| panic!("no {key} in /metrics: {m:?}"))
}

/// Waits up to 20 s for `replicas` to count `documents` sent to `sink` together, none buffered.
async fn wait_sent(replicas: &[&Gateway], sink: &str, documents: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (mut sent, mut buffered) = (0.0, 0.0);
        for gw in replicas {
            let m = metrics(gw).await;
            sent += sink_metric(&m, "openai_connector_usage_sink_sent_total", sink, "");
            buffered += sink_metric(&m, "openai_connector_usage_sink_buffered", sink, "");
        }
        if sent == documents as f64 && buffered == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sent {sent}, buffered {buffered}, expected {documents} sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sigterm(gw: &Gateway) {
    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Two replicas, each with its event log and the Elasticsearch sink, in front of one
/// OpenSearch-compatible server that is stopped for part of the run and started again on the
/// same port: every event-log line of both replicas is indexed exactly once, with the same
/// token totals per connector (a `sum` and a `terms` aggregation), and the last executions,
/// recorded right before SIGTERM, are flushed on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_sink_loses_nothing_across_two_replicas_and_an_outage() {
    let Some(binary) = Osmem::binary() else {
        need("osmem-server", false, "python3 -m pip install osmem-server");
        return;
    };
    let index = "gen-ai-usage";
    let osmem = Osmem::start(&binary, 0);
    let port = osmem.port();
    let upstream = usage_upstream().await;
    let url = upstream.url("/v1/chat/completions");
    let dir = connector_dir(&[("alpha", &url), ("beta", &url)]);
    let sink = format!("elasticsearch+http://127.0.0.1:{port}/{index}");
    let settings = write_file("settings.json", r#"{"shutdownGrace": "10s"}"#);
    let args = [
        "--usage-sink",
        sink.as_str(),
        "--settings",
        path_str(&settings),
    ];
    let (mut one, log_one) = gateway_with_log(&dir, "", &args, &[]);
    let (two, log_two) = gateway_with_log(&dir, "", &args, &[]);

    // Phase A: the sink is up. Reported usage on both connectors and both replicas, a failure,
    // and Kibana's _execute route.
    let mut n = 0u64;
    let mut run = async |gw: &Gateway, id: &str, content: &str| {
        n += 1;
        let (status, _, text) = gw.chat(id, Some(ADMIN), &chat_body(content)).await;
        assert!(status == 200 || content == "fail", "{status} {text}");
    };
    for i in 0..6 {
        let gw = if i % 2 == 0 { &one } else { &two };
        let id = if i % 3 == 0 { "alpha" } else { "beta" };
        run(gw, id, &format!("tokens-{}", 10 + i)).await;
    }
    run(&two, "alpha", "fail").await;
    let (status, _, text) = one
        .execute(
            "beta",
            &json!({"params": {"subAction": "run", "subActionParams": {"body": chat_body("tokens-100")}}}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let phase_a = log_totals(&[&log_one, &log_two]);
    assert_eq!(phase_a.documents, 8);
    let indexed_a = osmem
        .wait_for(index, phase_a.documents, Duration::from_secs(20))
        .await;
    assert_eq!(indexed_a, phase_a, "phase A: indexed vs event logs");
    // The replicas have read the answers too: stopping the server now loses no answer (which
    // would make them send again, and an in-memory server has forgotten the first copies).
    wait_sent(&[&one, &two], &sink, phase_a.documents).await;

    // Phase B: the sink is down (the process is gone; its memory with it).
    drop(osmem);
    for i in 0..5 {
        let gw = if i % 2 == 0 { &one } else { &two };
        run(
            gw,
            if i < 3 { "alpha" } else { "beta" },
            &format!("tokens-{}", 40 + i),
        )
        .await;
    }
    run(&one, "beta", "fail").await;
    // Both replicas try, fail and keep the documents.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m1 = metrics(&one).await;
        let m2 = metrics(&two).await;
        let failed = sink_metric(
            &m1,
            "openai_connector_usage_sink_failed_batches_total",
            &sink,
            "",
        )
        .min(sink_metric(
            &m2,
            "openai_connector_usage_sink_failed_batches_total",
            &sink,
            "",
        ));
        if failed >= 1.0 {
            let buffered = sink_metric(&m1, "openai_connector_usage_sink_buffered", &sink, "")
                + sink_metric(&m2, "openai_connector_usage_sink_buffered", &sink, "");
            assert_eq!(buffered, 6.0, "documents waiting during the outage");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed batch during the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The sink comes back on the same port: the buffered documents arrive, then phase C's.
    let osmem = Osmem::start(&binary, port);
    for i in 0..4 {
        let gw = if i % 2 == 0 { &two } else { &one };
        run(gw, "alpha", &format!("tokens-{}", 70 + i)).await;
    }
    let all = log_totals(&[&log_one, &log_two]);
    assert_eq!(all.documents, 8 + 6 + 4);
    let indexed_bc = osmem
        .wait_for(
            index,
            all.documents - phase_a.documents,
            Duration::from_secs(60),
        )
        .await;

    // Last: executions recorded just before SIGTERM are flushed by the exiting replica.
    run(&one, "beta", "tokens-7").await;
    run(&one, "alpha", "tokens-8").await;
    sigterm(&one);
    one.assert_exits_0("replica one exits after SIGTERM");
    let final_logs = log_totals(&[&log_one, &log_two]);
    let indexed_all = osmem
        .wait_for(
            index,
            final_logs.documents - phase_a.documents,
            Duration::from_secs(10),
        )
        .await;
    eprintln!(
        "event-log lines: {} (replica one {}, replica two {}); indexed: {} before the outage + {} after it (buffered through it) = {}; total tokens {} logged, {} indexed",
        final_logs.documents,
        log_totals(&[&log_one]).documents,
        log_totals(&[&log_two]).documents,
        indexed_a.documents,
        indexed_all.documents,
        indexed_a.documents + indexed_all.documents,
        final_logs.total_tokens,
        indexed_a.total_tokens + indexed_all.total_tokens,
    );
    assert!(indexed_bc.documents >= all.documents - phase_a.documents);
    assert_eq!(
        indexed_a + indexed_all,
        final_logs,
        "everything indexed, exactly once, with the same totals"
    );
    // C116: one line, and so one document, per execution.
    assert_eq!(n, final_logs.documents - 1, "one line per execution");

    // The surviving replica's counters: everything it logged was sent; nothing dropped.
    let m = metrics(&two).await;
    let lines_two = log_totals(&[&log_two]).documents as f64;
    assert_eq!(
        sink_metric(&m, "openai_connector_usage_sink_sent_total", &sink, ""),
        lines_two
    );
    assert_eq!(
        sink_metric(&m, "openai_connector_usage_sink_buffered", &sink, ""),
        0.0
    );
    for reason in ["overflow", "refused", "shutdown"] {
        let extra = format!(",reason=\"{reason}\"");
        assert_eq!(
            sink_metric(
                &m,
                "openai_connector_usage_sink_dropped_total",
                &sink,
                &extra
            ),
            0.0,
            "{reason}"
        );
    }
}

/// Documents the sink refuses for good (a mapping error) are dropped and counted; the others
/// are indexed; a full buffer drops its oldest documents and counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_refusals_and_overflow_are_counted() {
    let Some(binary) = Osmem::binary() else {
        need("osmem-server", false, "python3 -m pip install osmem-server");
        return;
    };
    let osmem = Osmem::start(&binary, 0);
    // `error` mapped as a number: a failure's line (`error.message`) cannot be indexed.
    let (status, v) = json_call(
        &osmem.addr,
        "PUT",
        "/strict",
        r#"{"mappings":{"properties":{"error":{"type":"long"}}}}"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let upstream = usage_upstream().await;
    let dir = connector_dir(&[("alpha", &upstream.url("/v1/chat/completions"))]);
    let strict = format!("elasticsearch+http://{}/strict", osmem.addr);
    // A sink nobody listens on, with room for 3 documents.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!(
        "elasticsearch+http://{}/nowhere",
        unused.local_addr().unwrap()
    );
    drop(unused);
    let settings = write_file("settings.json", r#"{"usageSinkBuffer": 3}"#);
    let (gw, log) = gateway_with_log(&dir, "", &["--usage-sink", &strict], &[]);
    let (small, _) = gateway_with_log(
        &dir,
        "",
        &["--usage-sink", &down, "--settings", path_str(&settings)],
        &[],
    );
    for content in ["tokens-1", "fail", "tokens-2", "fail", "tokens-3"] {
        gw.chat("alpha", Some(ADMIN), &chat_body(content)).await;
        small.chat("alpha", Some(ADMIN), &chat_body(content)).await;
    }
    let indexed = osmem.wait_for("strict", 3, Duration::from_secs(20)).await;
    assert_eq!(indexed.documents, 3);
    assert_eq!(indexed.total_tokens, 3 + 4 + 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(&gw).await;
        let refused = sink_metric(
            &m,
            "openai_connector_usage_sink_dropped_total",
            &strict,
            ",reason=\"refused\"",
        );
        if refused == 2.0 {
            assert_eq!(
                sink_metric(&m, "openai_connector_usage_sink_sent_total", &strict, ""),
                3.0
            );
            // 5 documents for a sink that is down, room for 3: 2 dropped.
            let m = metrics(&small).await;
            assert_eq!(
                sink_metric(
                    &m,
                    "openai_connector_usage_sink_dropped_total",
                    &down,
                    ",reason=\"overflow\""
                ),
                2.0
            );
            assert_eq!(
                sink_metric(&m, "openai_connector_usage_sink_buffered", &down, ""),
                3.0
            );
            assert_eq!(
                sink_metric(&m, "openai_connector_usage_sink_sent_total", &down, ""),
                0.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "refusals not counted: {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(log_totals(&[&log]).documents, 5);
    let stderr = gw.stderr();
    assert!(stderr.contains("refused for good"), "{stderr}");
    no_secret_in(&stderr);
}

/// The OTLP receiver (tests/py/otlp_receiver.py), on 127.0.0.1; stops when dropped.
struct Receiver {
    _child: Running,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(fail_first: u32) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/otlp_receiver.py");
        let out = write_file("otlp.jsonl", "");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .args(["--fail-first", &fail_first.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("receiver said {first:?}"))
            .parse()
            .unwrap();
        Receiver {
            _child: Running(child),
            port,
            out,
        }
    }

    /// The decoded requests so far: (path, request JSON).
    fn requests(&self) -> Vec<(String, Value)> {
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["content_type"], "application/x-protobuf");
                (v["path"].as_str().unwrap().to_owned(), v["request"].clone())
            })
            .collect()
    }
}

/// OTLP attributes (`[{"key": .., "value": {"stringValue"|"intValue": ..}}]`) as a map.
fn attributes(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    let value = kv["value"].as_object().unwrap().values().next().unwrap();
                    (kv["key"].as_str().unwrap().to_owned(), value.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The metric `name` of an ExportMetricsServiceRequest's JSON.
fn metric_named(request: &Value, name: &str) -> Option<Value> {
    request["resourceMetrics"]
        .as_array()?
        .iter()
        .flat_map(|rm| rm["scopeMetrics"].as_array().cloned().unwrap_or_default())
        .flat_map(|sm| sm["metrics"].as_array().cloned().unwrap_or_default())
        .find(|m| m["name"] == name)
}

/// The executions `gen_ai.client.operation.duration` counted, over all its data points.
fn duration_count(request: &Value) -> u64 {
    metric_named(request, "gen_ai.client.operation.duration").map_or(0, |m| {
        m["histogram"]["dataPoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_str().unwrap().parse::<u64>().unwrap())
            .sum()
    })
}

/// The OTLP sink: one CLIENT span per execution and the GenAI histograms, named and attributed
/// per the OpenTelemetry GenAI semantic conventions, through a collector that refuses the
/// first requests; an execution whose usage is `unavailable` reports no token counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_sink_reports_gen_ai_spans_and_metrics() {
    let proto = Command::new("python3")
        .args(["-c", "import opentelemetry.proto, google.protobuf"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !need(
        "the opentelemetry-proto Python package",
        proto,
        "python3 -m pip install -r tests/py/requirements.txt",
    ) {
        return;
    }
    let receiver = Receiver::start(2);
    let upstream = usage_upstream().await;
    let url = upstream.url("/v1/chat/completions");
    let upstream_port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let dir = connector_dir(&[("oa", &url)]);
    std::fs::write(
        dir.join("az.json"),
        format!(
            r#"{{"name":"Azure","connector_type_id":".gen-ai","config":{{"apiProvider":"Azure OpenAI","apiUrl":"{}"}},"secrets":{{"apiKey":"{API_KEY}"}}}}"#,
            upstream.url("/openai/deployments/d1/chat/completions?api-version=2024-10-21")
        ),
    )
    .unwrap();
    let sink = format!("otlp+http://127.0.0.1:{}", receiver.port);
    let (gw, log) = gateway_with_log(&dir, "", &["--usage-sink", &sink], &[]);
    let (status, _, text) = gw.chat("oa", Some(ADMIN), &chat_body("tokens-30")).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, _) = gw.chat("oa", Some(ADMIN), &chat_body("fail")).await;
    assert_eq!(status, 500);
    let (status, _, _) = gw.chat("oa", Some(ADMIN), &chat_body("no-usage")).await;
    assert_eq!(status, 200);
    let (status, _, text) = gw
        .chat(
            "az",
            Some(ADMIN),
            r#"{"messages":[{"role":"user","content":"tokens-5"}]}"#,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines
            .lines()
            .nth(2)
            .unwrap()
            .contains(r#""source":"unavailable""#),
        "{lines}"
    );

    // Wait for 4 spans and metrics that count 4 executions.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (spans, exported) = loop {
        let requests = receiver.requests();
        let spans: Vec<(Value, Value)> = requests
            .iter()
            .filter(|(path, _)| path == "/v1/traces")
            .flat_map(|(_, r)| r["resourceSpans"].as_array().unwrap().clone())
            .flat_map(|rs| {
                let resource = rs["resource"].clone();
                rs["scopeSpans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|ss| ss["spans"].as_array().unwrap().clone())
                    .map(move |span| (resource.clone(), span))
                    .collect::<Vec<_>>()
            })
            .collect();
        let last_metrics = requests
            .iter()
            .rev()
            .find(|(path, _)| path == "/v1/metrics")
            .map(|(_, r)| r.clone());
        let counted = last_metrics.as_ref().is_some_and(|m| {
            let points = m.to_string();
            points.contains("gen_ai.client.operation.duration") && duration_count(m) == 4
        });
        if spans.len() >= 4 && counted {
            break (spans, last_metrics.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "spans: {spans:?}\nmetrics: {last_metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(spans.len(), 4, "one span per execution: {spans:?}");

    // The spans, in the order of the executions.
    let mut spans: Vec<(BTreeMap<String, Value>, Value, Value)> = spans
        .into_iter()
        .map(|(resource, span)| (attributes(&span["attributes"]), span, resource))
        .collect();
    spans.sort_by_key(|(_, span, _)| {
        span["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
    });
    for (attrs, span, resource) in &spans {
        assert_eq!(span["kind"], "SPAN_KIND_CLIENT");
        assert_eq!(attrs["gen_ai.operation.name"], "chat");
        assert_eq!(attrs["server.address"], "127.0.0.1");
        assert_eq!(attrs["server.port"], upstream_port.as_str());
        let resource = attributes(&resource["attributes"]);
        assert_eq!(resource["service.name"], "openai-connector");
    }
    let (ok, span, _) = &spans[0];
    assert_eq!(span["name"], "chat gpt-4o");
    assert_eq!(ok["gen_ai.provider.name"], "openai");
    assert_eq!(ok["gen_ai.request.model"], "gpt-4o");
    assert_eq!(ok["gen_ai.response.model"], "gpt-4o-2024-08-06");
    assert_eq!(ok["gen_ai.usage.input_tokens"], "30");
    assert_eq!(ok["gen_ai.usage.output_tokens"], "2");
    assert_eq!(ok["openai_connector.connector.id"], "oa");
    assert!(!ok.contains_key("error.type"));
    assert!(
        span.get("status").is_none_or(|s| s.get("code").is_none()),
        "{span}"
    );

    let (failed, span, _) = &spans[1];
    assert_eq!(failed["error.type"], "500");
    assert_eq!(span["status"]["code"], "STATUS_CODE_ERROR");
    assert!(!failed.contains_key("gen_ai.usage.input_tokens"));

    // Usage unavailable: no token counts, on the span or in the token histogram (as C119 keeps
    // them out of the event log).
    let (unavailable, _, _) = &spans[2];
    assert_eq!(unavailable["openai_connector.usage.source"], "unavailable");
    assert!(!unavailable.contains_key("gen_ai.usage.input_tokens"));
    assert!(!unavailable.contains_key("gen_ai.usage.output_tokens"));
    assert_eq!(unavailable["gen_ai.response.model"], "gpt-4o-2024-08-06");

    let (azure, span, _) = &spans[3];
    assert_eq!(azure["gen_ai.provider.name"], "azure.ai.openai");
    assert!(!azure.contains_key("gen_ai.request.model"), "{azure:?}");
    assert_eq!(span["name"], "chat");
    assert_eq!(azure["gen_ai.usage.input_tokens"], "5");

    // The metrics: cumulative histograms with the conventions' names, units and attributes.
    let metric = |name: &str| {
        metric_named(&exported, name).unwrap_or_else(|| panic!("no {name}: {exported}"))
    };
    let tokens = metric("gen_ai.client.token.usage");
    assert_eq!(tokens["unit"], "{token}");
    assert_eq!(
        tokens["histogram"]["aggregationTemporality"],
        "AGGREGATION_TEMPORALITY_CUMULATIVE"
    );
    let mut by_type: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for point in tokens["histogram"]["dataPoints"].as_array().unwrap() {
        let attrs = attributes(&point["attributes"]);
        assert_eq!(attrs["gen_ai.operation.name"], "chat");
        assert!(!attrs.contains_key("error.type"));
        let e = by_type
            .entry(attrs["gen_ai.token.type"].as_str().unwrap().to_owned())
            .or_default();
        e.0 += point["count"].as_str().unwrap().parse::<u64>().unwrap();
        e.1 += point["sum"].as_f64().unwrap();
    }
    // Two executions have counts (the failure and the unavailable one report none).
    assert_eq!(by_type["input"], (2, 35.0));
    assert_eq!(by_type["output"], (2, 4.0));
    let duration = metric("gen_ai.client.operation.duration");
    assert_eq!(duration["unit"], "s");
    let mut count = 0;
    let mut errors = Vec::new();
    for point in duration["histogram"]["dataPoints"].as_array().unwrap() {
        count += point["count"].as_str().unwrap().parse::<u64>().unwrap();
        let attrs = attributes(&point["attributes"]);
        if let Some(e) = attrs.get("error.type") {
            errors.push(e.clone());
        }
        assert!(attrs.contains_key("gen_ai.provider.name"));
    }
    assert_eq!(count, 4);
    assert_eq!(errors, [json!("500")]);

    // The refused first requests were tried again: counted, nothing dropped.
    let m = metrics(&gw).await;
    assert!(
        sink_metric(
            &m,
            "openai_connector_usage_sink_failed_batches_total",
            &sink,
            ""
        ) >= 1.0
    );
    assert_eq!(
        sink_metric(&m, "openai_connector_usage_sink_sent_total", &sink, ""),
        4.0
    );
    for reason in ["overflow", "refused", "shutdown"] {
        let extra = format!(",reason=\"{reason}\"");
        assert_eq!(
            sink_metric(
                &m,
                "openai_connector_usage_sink_dropped_total",
                &sink,
                &extra
            ),
            0.0
        );
    }
}

/// A free loopback port (bound and released; the caller binds it again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's Prometheus scrapes `/metrics` of two replicas (with the admin token from a
/// credentials file); PromQL sums over both give the request and prompt-token totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sums_two_replicas() {
    let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(binary) = binary else {
        need("prometheus", false, "apt-get install -y prometheus");
        return;
    };
    let upstream = usage_upstream().await;
    let dir = connector_dir(&[
        ("alpha", &upstream.url("/v1/chat/completions")),
        ("beta", &upstream.url("/v1/chat/completions")),
    ]);
    let (one, _) = gateway_with_log(&dir, "", &[], &[]);
    let (two, _) = gateway_with_log(&dir, "", &[], &[]);
    let mut prompt = 0;
    for (i, (gw, id)) in [
        (&one, "alpha"),
        (&one, "beta"),
        (&two, "alpha"),
        (&one, "alpha"),
        (&two, "beta"),
    ]
    .into_iter()
    .enumerate()
    {
        let tokens = 3 * i as u64 + 1;
        prompt += tokens;
        let (status, _, text) = gw
            .chat(id, Some(ADMIN), &chat_body(&format!("tokens-{tokens}")))
            .await;
        assert_eq!(status, 200, "{text}");
    }
    let credentials = write_file("admin-token", ADMIN);
    let work = credentials.parent().unwrap().to_owned();
    let config = write_file(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: openai-connector\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['{}', '{}']\n",
            credentials.display(),
            one.addr,
            two.addr
        ),
    );
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let _prometheus = Running(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = async |promql: &str| -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}",
            percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
        );
        let tcp = tokio::net::TcpStream::connect(&web).await.ok()?;
        drop(tcp);
        let (status, v) = json_call(&web, "GET", &path, "").await;
        if status != 200 {
            return None;
        }
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut requests, mut tokens, mut up) = (None, None, None);
    while Instant::now() < deadline {
        requests = query("sum(openai_connector_requests_total)").await;
        tokens = query("sum(openai_connector_prompt_tokens_total)").await;
        up = query("sum(up{job=\"openai-connector\"})").await;
        if requests == Some(5.0) && tokens == Some(prompt as f64) && up == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "prometheus: sum(openai_connector_requests_total) = {requests:?}, sum(openai_connector_prompt_tokens_total) = {tokens:?} (expected 5 and {prompt}), targets up {up:?}"
    );
    assert_eq!(up, Some(2.0), "both replicas scraped");
    assert_eq!(requests, Some(5.0));
    assert_eq!(tokens, Some(prompt as f64));
}
