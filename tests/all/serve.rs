//! `openai-connector serve` (cli.md "serve"): the gateway as a subprocess on 127.0.0.1:0, in
//! front of loopback upstreams. Each test asserts what the client got and what the upstream
//! received (nothing, when a token is refused).

use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use http_body_util::BodyExt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const ADMIN: &str = "admin-TOKEN-4f9c2e";
/// A chat request body.
pub(crate) const HI: &str = r#"{"messages":[{"role":"user","content":"Hi"}]}"#;
pub(crate) const CLIENT: &str = "client-TOKEN-77ab10";

/// A running gateway; killed when dropped.
pub struct Gateway {
    child: Child,
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `serve` with `args` and waits for its `listening on` line.
    pub fn start(args: &[&str], admin_token: Option<&str>) -> Gateway {
        Self::start_with_env(args, admin_token, &[])
    }

    /// [`start`](Self::start) with extra environment variables for the child only.
    pub fn start_with_env(
        args: &[&str],
        admin_token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::spawn(Self::command(args, admin_token, env))
    }

    /// [`start`](Self::start) in a process that may open at most `open_files` descriptors.
    pub fn start_with_open_files(
        args: &[&str],
        admin_token: Option<&str>,
        open_files: u32,
    ) -> Gateway {
        let serve = Self::command(args, admin_token, &[]);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" \"$@\""))
            .arg(serve.get_program())
            .args(serve.get_args());
        for (name, value) in serve.get_envs() {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self::spawn(cmd)
    }

    /// The `serve` command line of [`start_with_env`](Self::start_with_env).
    fn command(args: &[&str], admin_token: Option<&str>, env: &[(&str, &str)]) -> Command {
        let mut cmd = cli();
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("OPENAI_CONNECTOR_ADMIN_TOKEN");
        if let Some(token) = admin_token {
            cmd.env("OPENAI_CONNECTOR_ADMIN_TOKEN", token);
        }
        cmd
    }

    /// Spawns `cmd` and waits for its `listening on` line.
    fn spawn(mut cmd: Command) -> Gateway {
        let mut child = cmd.spawn().expect("spawn openai-connector serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start: {}", log.lock().unwrap());
            }
        };
        Gateway {
            child,
            addr,
            stderr: log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// A request; the whole response.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut response = http1_request(&self.addr, method, path, token, body).await;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let mut text = Vec::new();
        while let Some(frame) = response.body_mut().frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                text.extend_from_slice(&data);
            }
        }
        let text = String::from_utf8(text).unwrap();
        no_secret_in(&text);
        assert!(!text.contains(ADMIN) && !text.contains(CLIENT), "{text}");
        (status, headers, text)
    }

    /// A POST with the admin token; the response with its body unread (for streams).
    pub async fn open(&self, path: &str, body: &str) -> hyper::Response<hyper::body::Incoming> {
        http1_request(&self.addr, "POST", path, Some(ADMIN), body).await
    }

    /// Kibana's `_execute` of connector `id` with the admin token; the whole response.
    pub async fn execute(&self, id: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
        let path = format!("/api/actions/connector/{id}/_execute");
        self.call("POST", &path, Some(ADMIN), body).await
    }

    /// A chat completion request to connector `id`'s OpenAI route; the whole response.
    pub async fn chat(
        &self,
        id: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let path = format!("/connectors/{id}/v1/chat/completions");
        self.call("POST", &path, token, body).await
    }

    /// Checks the metric `openai_connector_guest_traps_total` is `traps` for connector `id`.
    pub async fn assert_guest_traps(&self, id: &str, traps: u32) {
        let (_, _, metrics) = self.call("GET", "/metrics", Some(ADMIN), "").await;
        let line = format!("openai_connector_guest_traps_total{{connector=\"{id}\"}} {traps}\n");
        assert!(metrics.contains(&line), "{metrics}");
    }

    /// Checks the process is still running `after` SIGTERM was sent (or any wait).
    pub async fn assert_running_after(&mut self, after: Duration, why: &str) {
        tokio::time::sleep(after).await;
        assert!(self.wait_exit(Duration::ZERO).is_none(), "{why}");
    }

    /// Waits up to 10 s for the process to exit, and checks it exits 0.
    pub fn assert_exits_0(&mut self, expect: &str) {
        let exit = self.wait_exit(Duration::from_secs(10)).expect(expect);
        assert_eq!(exit.code(), Some(0), "{}", self.stderr());
    }
}

/// Reads the next body chunk of a streamed response, within 10 s.
pub(crate) async fn next_chunk(
    response: &mut hyper::Response<hyper::body::Incoming>,
) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), response.body_mut().frame())
            .await
            .expect("a chunk within 10 s")?;
        if let Ok(data) = frame.expect("frame").into_data() {
            return Some(String::from_utf8(data.to_vec()).unwrap());
        }
    }
}

pub(crate) async fn rest_of(response: &mut hyper::Response<hyper::body::Incoming>) -> String {
    let mut out = String::new();
    while let Some(chunk) = next_chunk(response).await {
        out.push_str(&chunk);
    }
    out
}

/// A folder with one connector file per (id, apiUrl), each using the test API key.
pub(crate) fn connector_dir(connectors: &[(&str, &str)]) -> PathBuf {
    let dir = write_file("placeholder", "")
        .parent()
        .unwrap()
        .join("connectors");
    std::fs::create_dir_all(&dir).unwrap();
    for (id, url) in connectors {
        std::fs::write(
            dir.join(format!("{id}.json")),
            format!(
                r#"{{"name":"Conn {id}","connector_type_id":".gen-ai","config":{{"apiProvider":"OpenAI","apiUrl":"{url}"}},"secrets":{{"apiKey":"{API_KEY}"}}}}"#
            ),
        )
        .unwrap();
    }
    dir
}

pub(crate) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A gateway (admin token [`ADMIN`]) serving the connectors in `dir` with `args` and `env`
/// added and an event log that starts with `history`; returns it and the log's path.
pub(crate) fn gateway_with_log(
    dir: &Path,
    history: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Gateway, PathBuf) {
    let events = write_file("events.log", history);
    let mut all = vec![
        "--connectors",
        path_str(dir),
        "--event-log",
        path_str(&events),
    ];
    all.extend_from_slice(args);
    (Gateway::start_with_env(&all, Some(ADMIN), env), events)
}

/// A gateway serving the connector `id` for `upstream` under the settings file `settings`, with
/// an event log; returns it and the log's path.
fn gateway_with_settings(id: &str, upstream: &Upstream, settings: &str) -> (Gateway, PathBuf) {
    let dir = connector_dir(&[(id, &upstream.url("/v1/chat/completions"))]);
    let settings = write_file("settings.json", settings);
    gateway_with_log(&dir, "", &["--settings", path_str(&settings)], &[])
}

/// The event log at `events`, checked to hold `lines` lines.
pub(crate) fn event_log(events: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(events).unwrap();
    assert_eq!(log.lines().count(), lines, "{log}");
    log
}

/// Whether an OpenAI-shaped error says the connector's sandbox failed.
fn is_sandbox_failure(error: &serde_json::Value) -> bool {
    error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("the connector's sandbox failed: ")
}

/// An SSE reply that sends `content` and then breaks the connection.
fn reset_after(content: &str) -> Reply {
    Reply::sse(vec![
        Step::Send(sse_chunk(content)),
        // The test upstream (hyper) drops bytes it has not flushed when the body fails right
        // after them: give it time to put them on the wire before the reset.
        Step::Sleep(Duration::from_millis(50)),
        Step::Abort,
    ])
}

pub(crate) fn sse_chunk(content: &str) -> Vec<u8> {
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    )
    .into_bytes()
}

/// An upstream whose every answer is a stream: the chunk `one`, then, once `release` is
/// notified, a chunk for each of `after` and `[DONE]`.
pub(crate) async fn held_stream(release: &Arc<tokio::sync::Notify>, after: &[&str]) -> Upstream {
    let mut steps = vec![Step::Send(sse_chunk("one")), Step::Wait(release.clone())];
    steps.extend(after.iter().map(|content| Step::Send(sse_chunk(content))));
    steps.push(Step::Send(b"data: [DONE]\n\n".to_vec()));
    Upstream::always(Reply::sse(steps)).await
}

const USAGE_CHUNK: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n";

pub(crate) fn assert_no_secrets_in_stderr(gw: &Gateway) {
    let err = gw.stderr();
    no_secret_in(&err);
    assert!(!err.contains(ADMIN), "admin token in stderr: {err}");
    assert!(!err.contains(CLIENT), "client token in stderr: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_tokens_and_response_shapes() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let url = upstream.url("/v1/chat/completions");
    let dir = connector_dir(&[("conn-a", &url), ("conn-b", &url)]);
    let tokens = write_file(
        "tokens.json",
        r#"{"tokens":[{"token":{"env":"OC_TEST_CLIENT_TOKEN"},"connectors":["conn-a"]}]}"#,
    );
    let (gw, events) = gateway_with_log(
        &dir,
        "",
        &["--client-tokens", path_str(&tokens)],
        &[("OC_TEST_CLIENT_TOKEN", CLIENT)],
    );

    // healthz: no auth.
    let (status, _, body) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    // Wrong or missing tokens: 401 with a JSON body, and nothing reaches the upstream.
    let chat = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
    for (method, path, token) in [
        ("GET", "/api/actions/connectors", None),
        ("GET", "/api/actions/connectors", Some("wrong")),
        ("GET", "/api/actions/connectors", Some(CLIENT)),
        ("GET", "/api/actions/connector/conn-a", Some(CLIENT)),
        (
            "POST",
            "/api/actions/connector/conn-a/_execute",
            Some(CLIENT),
        ),
        ("GET", "/metrics", None),
        ("GET", "/dashboard", Some(CLIENT)),
        ("GET", "/dashboard/data", None),
        ("POST", "/connectors/conn-a/v1/chat/completions", None),
        (
            "POST",
            "/connectors/conn-a/v1/chat/completions",
            Some("wrong"),
        ),
        // The client token is granted conn-a only.
        (
            "POST",
            "/connectors/conn-b/v1/chat/completions",
            Some(CLIENT),
        ),
    ] {
        let body = if method == "POST" {
            r#"{"params":{"subAction":"run","subActionParams":{"body":"{}"}}}"#
        } else {
            ""
        };
        let body = if path.contains("chat") { chat } else { body };
        let (status, headers, text) = gw.call(method, path, token, body).await;
        assert_eq!(status, 401, "{method} {path} with {token:?}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("401 body is JSON");
        assert!(v.is_object(), "{text}");
        assert!(
            headers
                .iter()
                .any(|(n, v)| n == "www-authenticate" && v == "Bearer")
        );
    }
    assert_eq!(
        upstream.requests().len(),
        0,
        "a refused request reached the upstream"
    );

    // Kibana's get-connector shapes, never secrets.
    let (status, _, list) = gw
        .call("GET", "/api/actions/connectors", Some(ADMIN), "")
        .await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["conn-a", "conn-b"]);
    assert_eq!(list[0]["config"]["defaultModel"], "gpt-4.1");
    assert_eq!(list[0]["is_preconfigured"], false);
    let (status, _, one) = gw
        .call("GET", "/api/actions/connector/conn-b", Some(ADMIN), "")
        .await;
    assert_eq!(status, 200);
    assert!(
        one.starts_with(r#"{"id":"conn-b","name":"Conn conn-b","connector_type_id":".gen-ai""#),
        "{one}"
    );
    let (status, _, missing) = gw
        .call("GET", "/api/actions/connector/nope", Some(ADMIN), "")
        .await;
    assert_eq!(status, 404);
    assert!(
        missing.contains("Saved object [action/nope] not found"),
        "{missing}"
    );

    // _execute: Kibana's response shape.
    let (status, _, text) = gw
        .execute(
            "conn-a",
            &format!(r#"{{"params":{}}}"#, run_params("run", chat)),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        text.starts_with(r#"{"connector_id":"conn-a","status":"ok","data":{"id":"chatcmpl-1""#),
        "{text}"
    );
    // C70: an unknown sub-action is a failure in Kibana's shape, still HTTP 200.
    let (status, _, text) = gw
        .execute(
            "conn-a",
            r#"{"params":{"subAction":"nope","subActionParams":{}}}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#""status":"error""#)
            && text.contains("Sub action \\\"nope\\\" is not registered"),
        "{text}"
    );
    let (status, _, text) = gw.execute("conn-a", "{}").await;
    assert_eq!(status, 400, "{text}");

    // OpenAI route with the client token: the upstream JSON verbatim; the connector's key is
    // sent, never the client's token.
    let (status, headers, text) = gw.chat("conn-a", Some(CLIENT), chat).await;
    assert_eq!(status, 200);
    assert_eq!(text, COMPLETION);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "application/json")
    );
    let sent = upstream.requests();
    assert_eq!(sent.len(), 2);
    for r in &sent {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
        assert!(
            !r.headers
                .iter()
                .any(|(_, v)| v.contains(CLIENT) || v.contains(ADMIN))
        );
    }
    // C38, C55: the client's body is the sub-action's body; on a URL that is not OpenAI's
    // own, it is sent as given.
    assert_eq!(sent[1].body_str(), chat);
    // An unknown connector behind a valid admin token: OpenAI-shaped 404.
    let (status, _, text) = gw.chat("nope", Some(ADMIN), chat).await;
    assert_eq!(status, 404);
    assert!(text.starts_with(r#"{"error":{"#), "{text}");

    // Metrics: Prometheus text with counters by connector and usage source.
    let (status, headers, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/plain; version=0.0.4"))
    );
    for line in [
        r#"openai_connector_requests_total{connector="conn-a",route="execute"} 2"#,
        r#"openai_connector_requests_total{connector="conn-a",route="chat_completions"} 1"#,
        r#"openai_connector_requests_total{connector="conn-b",route="chat_completions"} 0"#,
        r#"openai_connector_request_failures_total{connector="conn-a",route="execute"} 1"#,
        r#"openai_connector_prompt_tokens_total{connector="conn-a",source="reported"} 18"#,
        r#"openai_connector_completion_tokens_total{connector="conn-a",source="reported"} 4"#,
        r#"openai_connector_request_duration_seconds_count{connector="conn-a"} 3"#,
        "openai_connector_unauthorized_total 11",
        "openai_connector_in_flight_requests 0",
        "# TYPE openai_connector_request_duration_seconds histogram",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    // C116: one event-log line per execution (the 400 for a bad body ran nothing).
    no_secret_in(&event_log(&events, 3));
    assert_no_secrets_in_stderr(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_bytes_through_as_they_arrive() {
    let release = Arc::new(tokio::sync::Notify::new());
    let steps = vec![
        Step::Send(sse_chunk("Hel")),
        Step::Wait(release.clone()),
        Step::Send(sse_chunk("lo")),
        Step::Send(USAGE_CHUNK.as_bytes().to_vec()),
        Step::Send(b"data: [DONE]\n\n".to_vec()),
    ];
    let upstream = Upstream::always(Reply::sse(steps)).await;
    let dir = connector_dir(&[("s", &upstream.url("/v1/chat/completions"))]);
    let (gw, events) = gateway_with_log(&dir, "", &[], &[]);
    for (path, body) in [
        (
            "/connectors/s/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#.to_owned(),
        ),
        (
            "/api/actions/connector/s/_execute",
            r#"{"params":{"subAction":"stream","subActionParams":{"body":"{\"messages\":[]}","stream":true}}}"#
                .to_owned(),
        ),
    ] {
        let mut response = gw.open(path, &body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        // The first event arrives while the upstream is still holding the rest back.
        let first = next_chunk(&mut response).await.unwrap();
        assert_eq!(first.as_bytes(), sse_chunk("Hel"), "{path}");
        release.notify_one();
        let rest = rest_of(&mut response).await;
        let mut expected = sse_chunk("lo");
        expected.extend_from_slice(USAGE_CHUNK.as_bytes());
        expected.extend_from_slice(b"data: [DONE]\n\n");
        // C41: unchanged bytes.
        assert_eq!(rest.as_bytes(), expected, "{path}");
    }
    // C38, C55: the client's body; on the stream path the default model is added (not
    // OpenAI's own URL, so no stream_options).
    assert_eq!(
        upstream.requests()[0].body_str(),
        r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"model":"gpt-4.1"}"#
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    for line in event_log(&events, 2).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["event"]["outcome"], "success");
        // C109: reported usage of the stream.
        assert_eq!(
            v["kibana"]["action"]["execution"]["gen_ai"]["usage"],
            serde_json::json!({"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"source":"reported"})
        );
    }
    assert_no_secrets_in_stderr(&gw);
}

/// Faults: reset mid-stream, a stalled stream and a 5xx; clean errors, the gateway stays up,
/// one event-log line each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_give_clean_errors_and_log_lines() {
    let script = Arc::new(|r: &crate::upstream::Recorded| {
        let body = r.body_str();
        if body.contains("reset") {
            reset_after("par")
        } else if body.contains("stall") {
            // Longer than the 1 s idle timeout below; ends by itself.
            Reply::sse(vec![
                Step::Send(sse_chunk("par")),
                Step::Sleep(Duration::from_secs(4)),
            ])
        } else {
            Reply::json(503, r#"{"error":{"message":"overloaded"}}"#)
        }
    });
    let upstream = Upstream::http(script).await;
    let (gw, events) = gateway_with_settings("f", &upstream, r#"{"responseTimeout":"1s"}"#);
    let chat = |word: &str| {
        format!(r#"{{"messages":[{{"role":"user","content":"{word}"}}],"stream":true}}"#)
    };
    // C78: the delivered bytes stand, then an OpenAI-shaped error event.
    for (word, message) in [
        ("reset", "ECONNRESET - socket hang up"),
        ("stall", "ECONNABORTED - idle timeout of 1000ms exceeded"),
    ] {
        let (status, _, text) = gw.chat("f", Some(ADMIN), &chat(word)).await;
        assert_eq!(status, 200, "{word}");
        let (first, error) = text.split_at(sse_chunk("par").len());
        assert_eq!(first.as_bytes(), sse_chunk("par"), "{word}: {text}");
        let data = error
            .strip_prefix("data: ")
            .and_then(|e| e.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("{word}: no error event in {text:?}"));
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        let got = v["error"]["message"].as_str().unwrap();
        assert!(got.contains(message), "{word}: {got}");
    }
    // C76: an HTTP error before the first byte: the upstream status and an OpenAI error body.
    let (status, _, text) = gw.chat("f", Some(ADMIN), &chat("5xx")).await;
    assert_eq!(status, 503, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["error"]["message"],
        "Status code: 503. Message: API Error: Service Unavailable - overloaded"
    );
    // Still serving.
    let (status, _, _) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(&events).unwrap();
    let outcomes: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["event"]["outcome"].as_str().unwrap(),
                v["error"]["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(outcomes.len(), 3, "{log}");
    assert!(
        outcomes[0].contains("failure") && outcomes[0].contains("ECONNRESET"),
        "{outcomes:?}"
    );
    assert!(outcomes[1].contains("idle timeout"), "{outcomes:?}");
    assert!(outcomes[2].contains("Status code: 503"), "{outcomes:?}");
    // C113: the reset stream still reports the usage of what arrived (an estimate).
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["kibana"]["action"]["execution"]["gen_ai"]["usage"]["source"],
        "estimated"
    );
    assert_no_secrets_in_stderr(&gw);
}

/// A guest that runs out of its sandbox memory traps: 500 with a JSON error, one log line, and
/// the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_trap_answers_500_and_the_gateway_keeps_serving() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let (gw, events) = gateway_with_settings("m", &upstream, r#"{"guestMemoryLimit":"4mb"}"#);
    // An 8 MiB message: more than the guest may hold.
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8 << 20)
    );
    let (status, _, text) = gw.chat("m", Some(ADMIN), &big).await;
    assert_eq!(status, 500, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "sandbox_failure");
    assert!(is_sandbox_failure(&v), "{text}");
    assert_eq!(upstream.requests().len(), 0);
    let (status, _, text) = gw.chat("m", Some(ADMIN), HI).await;
    assert_eq!((status, text.as_str()), (200, COMPLETION));
    gw.assert_guest_traps("m", 1).await;
    let log = event_log(&events, 2);
    assert!(
        log.lines().next().unwrap().contains("sandbox failed"),
        "{log}"
    );
    assert_no_secrets_in_stderr(&gw);
}

/// A guest that traps after the stream began (the completion it keeps for the estimate
/// outgrows the sandbox's memory): the client gets what was delivered and then the error event,
/// and the event log its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_trap_mid_stream_ends_with_an_error_event_and_a_log_line() {
    let mut steps = vec![Step::Send(sse_chunk("Hel"))];
    steps.extend((0..400).map(|_| Step::Send(sse_chunk(&"y".repeat(20_000)))));
    let upstream = Upstream::always(Reply::sse(steps)).await;
    let (gw, events) = gateway_with_settings("m", &upstream, r#"{"guestMemoryLimit":"4mb"}"#);
    let (status, _, text) = gw
        .chat("m", Some(ADMIN), r#"{"messages":[],"stream":true}"#)
        .await;
    assert_eq!(status, 200);
    assert!(text.starts_with(std::str::from_utf8(&sse_chunk("Hel")).unwrap()));
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let error: serde_json::Value =
        serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(is_sandbox_failure(&error), "{last}");
    gw.assert_guest_traps("m", 1).await;
    let log = event_log(&events, 1);
    let line: serde_json::Value = serde_json::from_str(log.trim_end()).unwrap();
    assert_eq!(line["event"]["outcome"], "failure");
    assert_eq!(
        line["kibana"]["action"]["execution"]["gen_ai"]["usage"]["source"],
        "unavailable"
    );
    assert_no_secrets_in_stderr(&gw);
}

/// The guest-time budget traps a guest that works too long (here: a long stream under a
/// 1 ms budget); host time waiting for the upstream does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_time_limit_traps_a_busy_guest() {
    let upstream = Upstream::always(Reply::sse(
        (0..400)
            .map(|_| Step::Send(sse_chunk(&"y".repeat(20_000))))
            .collect(),
    ))
    .await;
    let dir = connector_dir(&[("t", &upstream.url("/v1/chat/completions"))]);
    let settings = write_file("settings.json", r#"{"guestTimeLimit":1}"#);
    let gw = Gateway::start(
        &[
            "--connectors",
            path_str(&dir),
            "--settings",
            path_str(&settings),
        ],
        Some(ADMIN),
    );
    let (status, _, text) = gw
        .chat("t", Some(ADMIN), r#"{"messages":[],"stream":true}"#)
        .await;
    // Either the trap came before the first byte (500) or during the stream (error event).
    assert!(
        text.contains("guest time limit of 1 ms exceeded"),
        "status {status}: {}",
        &text[text.len().saturating_sub(400)..]
    );
    let (status, _, _) = gw.call("GET", "/healthz", None, "").await;
    assert_eq!(status, 200);
}

/// A gateway for `upstream` with an event log and `args`, a chat stream through it whose first
/// chunk has arrived, and SIGTERM sent to the gateway; returns the gateway, the response and
/// the event log's path.
async fn stream_then_sigterm(
    upstream: &Upstream,
    args: &[&str],
) -> (Gateway, hyper::Response<hyper::body::Incoming>, PathBuf) {
    let dir = connector_dir(&[("g", &upstream.url("/v1/chat/completions"))]);
    let (gw, events) = gateway_with_log(&dir, "", args, &[]);
    let mut response = gw
        .open(
            "/connectors/g/v1/chat/completions",
            r#"{"messages":[],"stream":true}"#,
        )
        .await;
    assert_eq!(
        next_chunk(&mut response).await.unwrap().as_bytes(),
        sse_chunk("one")
    );
    let status = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    (gw, response, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_stream_in_flight_finish() {
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = held_stream(&release, &["two"]).await;
    let (mut gw, mut response, events) = stream_then_sigterm(&upstream, &[]).await;
    // The listener closes; the stream in flight goes on.
    gw.assert_running_after(Duration::from_millis(300), "exited with a stream in flight")
        .await;
    release.notify_one();
    let rest = rest_of(&mut response).await;
    let mut expected = sse_chunk("two");
    expected.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(rest.as_bytes(), expected);
    gw.assert_exits_0("exits after the stream");
    let log = event_log(&events, 1);
    assert!(log.contains(r#""outcome":"success""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_what_outlives_the_shutdown_grace() {
    // C68: a stream still running when `shutdownGrace` is over is cancelled, logged as such,
    // and the process exits 0.
    let never = Arc::new(tokio::sync::Notify::new());
    let upstream = Upstream::always(Reply::sse(vec![
        Step::Send(sse_chunk("one")),
        Step::Wait(never.clone()),
    ]))
    .await;
    let settings = write_file("settings.json", r#"{"shutdownGrace":"1s"}"#);
    let (mut gw, mut response, events) =
        stream_then_sigterm(&upstream, &["--settings", path_str(&settings)]).await;
    gw.assert_running_after(
        Duration::from_millis(300),
        "exited before the grace period was over",
    )
    .await;
    gw.assert_exits_0("exits after the grace period");
    let stderr = gw.stderr();
    assert!(stderr.contains("up to 1 s to finish"), "{stderr}");
    assert!(stderr.contains("grace period over"), "{stderr}");
    // The client gets the error event and the end of the stream, not a cut connection.
    let rest = tokio::time::timeout(Duration::from_secs(10), rest_of(&mut response))
        .await
        .expect("the stream ends");
    assert!(rest.starts_with("data: {\"error\""), "{rest}");
    assert!(rest.contains("ERR_CANCELED"), "{rest}");
    let log = event_log(&events, 1);
    assert!(log.contains(r#""outcome":"failure""#), "{log}");
    assert!(log.contains("ERR_CANCELED"), "{log}");
}

/// Runs `serve --listen 127.0.0.1:0 args` with `admin_token` (else none) and checks it refuses
/// to start (exit 2); returns its stderr.
pub(crate) async fn refused_start(args: &[&str], admin_token: Option<&str>) -> String {
    let mut cmd = cli();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("OPENAI_CONNECTOR_ADMIN_TOKEN");
    if let Some(token) = admin_token {
        cmd.env("OPENAI_CONNECTOR_ADMIN_TOKEN", token);
    }
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refusals_and_preconfigured_connectors() {
    let dir = connector_dir(&[("ok", "https://api.openai.com/v1/chat/completions")]);
    // No admin token and no --insecure-no-auth: refuses to start.
    let err = refused_start(&["--connectors", path_str(&dir)], None).await;
    assert!(err.contains("OPENAI_CONNECTOR_ADMIN_TOKEN is not set"));
    // A short admin token is refused at start, without echoing it.
    let err = refused_start(&["--connectors", path_str(&dir)], Some("x")).await;
    assert!(
        err.contains("OPENAI_CONNECTOR_ADMIN_TOKEN is shorter than 16 characters"),
        "{err}"
    );
    let err = refused_start(&["--connectors", path_str(&dir)], Some("fifteen-chars-x")).await;
    assert!(err.contains("shorter than 16"), "{err}");
    assert!(!err.contains("fifteen-chars-x"), "{err}");

    // An invalid connector stops the start with validate's lines.
    let bad = write_file(
        "bad.json",
        &format!(
            r#"{{"name":"Bad","config":{{"apiProvider":"Azure OpenAI","apiUrl":"ftp://h/x"}},"secrets":{{"apiKey":"{API_KEY}"}}}}"#
        ),
    );
    let err = refused_start(
        &["--connectors", path_str(bad.parent().unwrap())],
        Some(ADMIN),
    )
    .await;
    assert!(err.contains("connector \"bad\""), "{err}");
    assert!(
        err.contains("error validating action type config: Error configuring OpenAI action: Error: URL Error: Invalid protocol"),
        "{err}"
    );

    // A client tokens file naming an unknown connector.
    let tokens = write_file(
        "tokens.json",
        r#"{"tokens":[{"token":"t","connectors":["zz"]}]}"#,
    );
    let err = refused_start(
        &[
            "--connectors",
            path_str(&dir),
            "--client-tokens",
            path_str(&tokens),
        ],
        Some(ADMIN),
    )
    .await;
    assert!(err.contains("[tokens.0.connectors.0]: no connector with id \"zz\""));

    // Kibana's xpack.actions.preconfigured map, config numbers kept as written; with
    // --insecure-no-auth every route is open.
    let map = write_file(
        "preconfigured.json",
        &format!(
            r#"{{"my-gpt":{{"name":"My GPT","actionTypeId":".gen-ai","config":{{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}},"secrets":{{"apiKey":"{API_KEY}"}}}}}}"#
        ),
    );
    let gw = Gateway::start(
        &["--connectors", path_str(&map), "--insecure-no-auth"],
        None,
    );
    assert!(
        gw.stderr().contains("--insecure-no-auth"),
        "{}",
        gw.stderr()
    );
    let (status, _, text) = gw
        .call("GET", "/api/actions/connector/my-gpt", None, "")
        .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["name"], "My GPT");
    assert_eq!(v["is_preconfigured"], true);
}

/// Whether `python3 -c "import <module>"` works here.
pub(crate) fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The official `openai` Python SDK (tests/py/requirements.txt; .ci/run installs it) against
/// `serve`: non-streaming, streaming, a broken stream, an upstream HTTP error, a wrong token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_through_serve() {
    if !python_has("openai") {
        eprintln!(
            "\n\n!!! SKIPPED openai_python_sdk_through_serve: the `openai` Python package is not \
             importable. Install it with `pip install -r tests/py/requirements.txt` (.ci/run does).\n\n"
        );
        return;
    }
    let script = Arc::new(|r: &crate::upstream::Recorded| {
        let body = r.body_str();
        if body.contains("\"reset\"") {
            reset_after("partial")
        } else if body.contains("\"stream\"") && body.contains("\"stream\":true") {
            Reply::sse(vec![
                Step::Send(sse_chunk("Hel")),
                Step::Send(sse_chunk("lo!")),
                Step::Send(USAGE_CHUNK.as_bytes().to_vec()),
                Step::Send(b"data: [DONE]\n\n".to_vec()),
            ])
        } else if body.contains("\"limit\"") {
            Reply::json(429, r#"{"error":{"message":"Rate limit reached"}}"#)
        } else {
            Reply::json(200, COMPLETION)
        }
    });
    let upstream = Upstream::http(script).await;
    let dir = connector_dir(&[("py", &upstream.url("/v1/chat/completions"))]);
    let tokens = write_file(
        "tokens.json",
        &format!(r#"{{"tokens":[{{"token":"{CLIENT}","connectors":["*"]}}]}}"#),
    );
    let (gw, events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens)], &[]);
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/py/openai_client.py");
    let base_url = format!("http://{}/connectors/py/v1", gw.addr);
    let mut cmd = Command::new("python3");
    cmd.arg(&script_path).arg(&base_url).arg(CLIENT);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_secret_in(&stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        v["plain"],
        serde_json::json!({"id": "chatcmpl-1", "content": "  Hello there  ", "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 2})
    );
    assert_eq!(
        v["stream"],
        serde_json::json!({"deltas": ["Hel", "lo!"], "usage": [12, 3]})
    );
    assert_eq!(v["broken_stream"]["error"], "APIError", "{v}");
    assert_eq!(
        v["broken_stream"]["received"],
        serde_json::json!(["partial"])
    );
    assert!(
        v["broken_stream"]["message"]
            .as_str()
            .unwrap()
            .contains("ECONNRESET"),
        "{v}"
    );
    assert_eq!(
        v["http_error"],
        serde_json::json!({"error": "RateLimitError", "status": 429, "message": "Error code: 429 - Status code: 429. Message: API Error: Too Many Requests - Rate limit reached"})
    );
    assert_eq!(v["bad_token"], serde_json::json!({"status": 401}));
    // The SDK's requests arrived as it sent them, with the connector's key.
    let sent = upstream.requests();
    assert_eq!(sent.len(), 4, "the wrong token reached the upstream");
    for r in &sent {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
    let streamed: serde_json::Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(streamed["stream_options"]["include_usage"], true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    event_log(&events, 4);
    assert_no_secrets_in_stderr(&gw);
}

/// Debian's Chromium, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium with `args`, killing it after 90 s; returns stdout.
fn run_chromium(binary: &Path, args: &[String]) -> String {
    let profile = scratch_dir("chromium-profile").join(format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// [`run_chromium`] on a blocking thread: `page` with a 5 s virtual time budget and `args`.
async fn chromium_with(binary: &Path, page: &str, args: &[String]) -> String {
    let mut all = vec!["--virtual-time-budget=5000".to_owned()];
    all.extend_from_slice(args);
    all.push(page.to_owned());
    let binary = binary.to_owned();
    tokio::task::spawn_blocking(move || run_chromium(&binary, &all))
        .await
        .unwrap()
}

/// The dashboard in a real browser: the page loads its data with the token from its URL and
/// draws the event log's history plus the live executions. Saves
/// `serve-dashboard.png` in cargo's temporary directory for tests (`target/tmp/`, or
/// `$CARGO_TARGET_DIR/tmp/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "\n\n!!! SKIPPED dashboard_renders_in_headless_chromium: no /usr/bin/chromium. \
             Install it with `apt-get install -y chromium` (.ci/run does).\n\n"
        );
        return;
    };
    use openai_connector_harness::event_log::{ExecutionRecord, Usage, event_line};
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[
        ("dash", &upstream.url("/v1/chat/completions")),
        ("idle", &upstream.url("/v1/chat/completions")),
    ]);
    // History from an earlier run: two executions 10 and 5 minutes ago.
    let now = std::time::SystemTime::now();
    let mut history = String::new();
    for (minutes_ago, prompt, completion) in [(10u64, 100u64, 40u64), (5, 50, 20)] {
        let start = now - Duration::from_secs(minutes_ago * 60);
        history.push_str(&event_line(&ExecutionRecord {
            connector_id: "dash",
            connector_name: "Conn dash",
            start,
            end: start + Duration::from_millis(300),
            outcome: Ok(()),
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                source: "reported",
                tokenizer: None,
            },
            request_body_bytes: Some(40),
            attempts: None,
        }));
    }
    let (gw, _) = gateway_with_log(&dir, &history, &[], &[]);
    // Two live executions (9 prompt + 2 completion tokens each, reported).
    for _ in 0..2 {
        let (status, _, _) = gw.chat("dash", Some(ADMIN), HI).await;
        assert_eq!(status, 200);
    }
    let (status, _, data) = gw.call("GET", "/dashboard/data", Some(ADMIN), "").await;
    assert_eq!(status, 200);
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["connectors"][0]["prompt_tokens"], 168);
    assert_eq!(data["connectors"][0]["series"].as_array().unwrap().len(), 3);

    // The page is served with a Content-Security-Policy that allows its own inline script and
    // style by hash only (the rendering below runs under it), and `nosniff`.
    let (status, headers, _) = gw.call("GET", "/dashboard", Some(ADMIN), "").await;
    assert_eq!(status, 200);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let csp = header("content-security-policy");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");

    let page = gw.url(&format!("/dashboard?token={ADMIN}"));
    let dom = chromium_with(&chromium, &page, &["--dump-dom".to_owned()]).await;
    // Totals: 100 + 50 + 9 + 9 prompt, 40 + 20 + 2 + 2 completion, 4 requests.
    for expected in [
        "<h2>Conn dash (dash)</h2>",
        "<dt>Prompt tokens</dt><dd>168</dd>",
        "<dt>Completion tokens</dt><dd>64</dd>",
        "<dt>Requests</dt><dd>4</dd>",
        "<dt>Failures</dt><dd>0</dd>",
        "<td>reported</td><td>4</td><td>168</td><td>64</td>",
        "<h2>Conn idle (idle)</h2>",
        "no tokens yet",
    ] {
        assert!(
            dom.contains(expected),
            "missing {expected} in the rendered page:\n{dom}"
        );
    }
    // One bar pair per minute with tokens: three minutes.
    assert_eq!(dom.matches("class=\"bar-prompt\"").count(), 3, "{dom}");
    assert!(!dom.contains(ADMIN), "the token stayed in the page");

    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-dashboard.png");
    let _ = std::fs::remove_file(&png);
    chromium_with(
        &chromium,
        &page,
        &[
            "--window-size=900,760".to_owned(),
            format!("--screenshot={}", png.display()),
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert_no_secrets_in_stderr(&gw);
}

/// Each serving thread keeps its own pool of upstream connections (`serve::run`): sequential
/// requests, each on a new client connection dealt round robin to the threads, open at most one
/// upstream connection per thread, and every answer is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_reuse_their_upstream_connections() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("r", &upstream.url("/v1/chat/completions"))]);
    let gw = Gateway::start(&["--connectors", path_str(&dir)], Some(ADMIN));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let requests = 4 * threads + 2;
    for _ in 0..requests {
        let (status, _, text) = gw
            .chat(
                "r",
                Some(ADMIN),
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            )
            .await;
        assert_eq!((status, text.as_str()), (200, COMPLETION));
    }
    let opened = upstream.connections();
    assert!(
        (1..=threads).contains(&opened),
        "{requests} requests opened {opened} upstream connections; at most {threads} (one per serving thread) expected"
    );
}
