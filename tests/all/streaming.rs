//! Streaming sub-actions through the CLI: pass-through as bytes arrive, parsed chunks, usage with
//! provenance, failures mid-stream, the event log, and `sse decode`.

use crate::support::*;
use crate::upstream::{Reply, Step, Upstream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn event(json: &str) -> String {
    format!("data: {json}\n\n")
}

fn delta(content: &str) -> String {
    event(&format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
    ))
}

const USAGE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
const DONE: &str = "data: [DONE]\n\n";

fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

fn stream_params(body: &str) -> String {
    format!(
        r#"{{"subAction":"stream","subActionParams":{{"stream":true,"body":{}}}}}"#,
        serde_json::to_string(body).unwrap()
    )
}

fn connector_file(upstream: &Upstream, provider_extra: &str) -> std::path::PathBuf {
    write_file(
        "stream-conn.json",
        &format!(
            r#"{{"id":"s1","name":"Streamer","config":{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"gpt-4o"{provider_extra}}},"secrets":{{"apiKey":"{API_KEY}"}}}}"#,
            upstream.url("/v1/chat/completions")
        ),
    )
}

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    log: Vec<serde_json::Value>,
}

/// Runs `execute` with an event log; returns exit code, stdout, stderr and the log lines.
async fn execute_cli(file: &std::path::Path, params: &str, settings: Option<&str>) -> Run {
    let params = write_file("params.json", params);
    let log = write_file("events.ndjson", "");
    let mut cmd = execute_cmd(file, &params);
    cmd.arg("--event-log").arg(&log);
    if let Some(s) = settings {
        cmd.arg("--settings").arg(write_file("settings.json", s));
    }
    let out = run_cli(cmd).await;
    let text = std::fs::read_to_string(&log).unwrap();
    no_secret_in(&text);
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "C116: whole lines only"
    );
    Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
        log: text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect(),
    }
}

fn usage_of(line: &serde_json::Value) -> &serde_json::Value {
    &line["kibana"]["action"]["execution"]["gen_ai"]["usage"]
}

#[tokio::test]
async fn c41_first_chunk_reaches_the_caller_before_the_upstream_sends_the_second() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let first = delta("Hel");
    let rest = [delta("lo"), event(USAGE), DONE.to_owned()].concat();
    let upstream = Upstream::always(Reply::sse(vec![
        send(&first),
        Step::Wait(gate.clone()),
        send(&rest),
    ]))
    .await;
    let file = connector_file(&upstream, "");
    let params = write_file(
        "params.json",
        &stream_params(r#"{"messages":[{"role":"user","content":"Hi"}]}"#),
    );
    let (mut child, mut stdout) = spawn_piped(execute_cmd(&file, &params));
    // The upstream holds the second chunk until the first is read: a buffering pipeline would
    // time out here.
    let (tail, status) = first_then_rest(
        &mut child,
        &mut stdout,
        &first,
        &gate,
        "the first chunk arrived while the upstream was still holding the second",
    )
    .await;
    assert_eq!(status.code(), Some(0));
    // C41: same bytes, same order, nothing added or removed ([DONE] included).
    assert_eq!(tail, rest);
    // C58: Other gets the stream flag; the model is filled in on the stream path.
    assert_eq!(
        upstream.only_request().body_str(),
        r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true,"model":"gpt-4o"}"#
    );
}

#[tokio::test]
async fn c109_c117_reported_usage_is_logged_with_its_source() {
    let body = [delta("Hel"), delta("lo"), event(USAGE), DONE.to_owned()].concat();
    let upstream = Upstream::always(Reply::sse(vec![send(&body)])).await;
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params(r#"{"messages":[]}"#),
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, body.as_bytes());
    assert_eq!(run.log.len(), 1);
    let line = &run.log[0];
    assert_eq!(line["event"]["outcome"], "success");
    assert_eq!(line["message"], "action executed: .gen-ai:s1: Streamer");
    assert_eq!(
        usage_of(line),
        &serde_json::json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "source": "reported"})
    );
    let sent = upstream.only_request().body.len();
    assert_eq!(
        line["kibana"]["action"]["execution"]["usage"]["request_body_bytes"],
        sent
    );
    assert!(line.get("error").is_none());
}

#[tokio::test]
async fn c110_c112_usage_is_estimated_with_the_models_tokenizer_when_none_is_reported() {
    let body = [delta("Hello"), delta(" there"), DONE.to_owned()].concat();
    let upstream = Upstream::always(Reply::sse(vec![send(&body)])).await;
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#),
        None,
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let usage = usage_of(&run.log[0]);
    assert_eq!(usage["source"], "estimated");
    assert_eq!(usage["tokenizer"], "o200k_base");
    let count =
        |t: &str| openai_connector_harness::tokenizer::count_tokens("o200k_base", t).unwrap();
    let prompt = count("<|start|>user\nHi<|end|>");
    let completion = count("Hello there");
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["completion_tokens"], completion);
    assert_eq!(usage["total_tokens"], prompt + completion);
}

#[tokio::test]
async fn c42_invoke_async_iterator_emits_each_chunk_as_received_and_stops_at_done() {
    // The contract's Azure example (section 6b), through an Other connector.
    let chunks = [
        r#"{"id":"","model":"","object":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#,
        r#"{"id":"chatcmpl-1","model":"gpt-4o","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        r#"{"choices":[{"index":0,"finish_reason":null,"content_filter_offsets":{"start_offset":0,"end_offset":5}}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
    ];
    let mut body: String = chunks.iter().map(|c| event(c)).collect();
    body.push_str(DONE);
    body.push_str(&event(r#"{"after":"done"}"#));
    let upstream = Upstream::always(Reply::sse(vec![send(&body)])).await;
    let params = r#"{"subAction":"invokeAsyncIterator","subActionParams":{"messages":[{"role":"user","content":"Hi"}]}}"#;
    let run = execute_cli(&connector_file(&upstream, ""), params, None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let expected: String = chunks.iter().map(|c| format!("{c}\n")).collect();
    assert_eq!(String::from_utf8(run.stdout).unwrap(), expected);
    // D10, C54: the request always asks for a stream.
    assert!(
        upstream
            .only_request()
            .body_str()
            .contains(r#""stream":true"#)
    );
    assert_eq!(usage_of(&run.log[0])["source"], "reported");
}

#[tokio::test]
async fn c96_error_object_mid_stream_fails_after_the_chunks_already_delivered() {
    let body = [
        delta("Hel"),
        event(r#"{"error":{"message":"The server had an error while processing your request."}}"#),
        delta("never"),
    ]
    .concat();
    let upstream = Upstream::always(Reply::sse(vec![send(&body)])).await;
    let params = r#"{"subAction":"invokeAsyncIterator","subActionParams":{"messages":[]}}"#;
    let run = execute_cli(&connector_file(&upstream, ""), params, None).await;
    assert_eq!(run.code, Some(1));
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(r#""content":"Hel""#));
    assert_eq!(
        run.stderr.trim_end(),
        "Stream error: The server had an error while processing your request."
    );
    let line = &run.log[0];
    assert_eq!(line["event"]["outcome"], "failure");
    assert_eq!(
        line["error"]["message"],
        "an error occurred while running the action: Stream error: The server had an error while processing your request.; retry: true"
    );
}

#[tokio::test]
async fn c78_c113_reset_mid_stream_keeps_delivered_bytes_and_partial_usage() {
    let delivered = [delta("Hello"), delta(" wor")].concat();
    let upstream = Upstream::always(Reply::sse(vec![
        send(&delivered),
        Step::Sleep(Duration::from_millis(50)),
        Step::Abort,
    ]))
    .await;
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params(r#"{"messages":[]}"#),
        None,
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, delivered.as_bytes());
    assert_eq!(
        run.stderr.trim_end(),
        "Status code: undefined. Message: Unexpected API Error: ECONNRESET - socket hang up"
    );
    let line = &run.log[0];
    assert_eq!(line["event"]["outcome"], "failure");
    let usage = usage_of(line);
    assert_eq!(
        usage["source"], "estimated",
        "C113: usage from what arrived"
    );
    let completion =
        openai_connector_harness::tokenizer::count_tokens("o200k_base", "Hello wor").unwrap();
    assert_eq!(usage["completion_tokens"], completion);
}

/// A guest that traps mid-stream (here: the completion it keeps for the estimate outgrows the
/// sandbox's memory) ends the execution as a sandbox failure: what was delivered stays
/// delivered, the message goes to stderr, exit 1, and the event log still gets its line. Usage
/// is unavailable: it was counted inside the sandbox, which is gone.
#[tokio::test]
async fn c116_a_guest_trap_mid_stream_is_a_logged_failure() {
    let first = delta("Hel");
    let mut steps = vec![send(&first)];
    steps.extend((0..400).map(|_| send(&delta(&"y".repeat(20_000)))));
    steps.push(send(DONE));
    let upstream = Upstream::always(Reply::sse(steps)).await;
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params(r#"{"messages":[]}"#),
        Some(r#"{"guestMemoryLimit":"4mb"}"#),
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stdout.starts_with(first.as_bytes()) && run.stdout.len() < 4 << 20,
        "{} bytes delivered",
        run.stdout.len()
    );
    let stderr = run.stderr.trim_end();
    assert!(
        stderr.starts_with("the connector's sandbox failed: guest memory limit of 4 MiB exceeded: the guest asked for "),
        "{stderr}"
    );
    assert_eq!(run.log.len(), 1);
    let line = &run.log[0];
    assert_eq!(line["event"]["outcome"], "failure");
    let message = line["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "an error occurred while running the action: the connector's sandbox failed: "
        ) && message.ends_with("; retry: true"),
        "{message}"
    );
    assert_eq!(usage_of(line)["source"], "unavailable");
}

/// A guest that traps before the stream begins (a message larger than the sandbox's memory):
/// the failure JSON on stdout, exit 1, nothing sent upstream, and the event-log line.
#[tokio::test]
async fn c116_a_guest_trap_before_the_stream_prints_the_failure_json_and_is_logged() {
    let upstream = Upstream::always(Reply::sse(vec![send(&delta("never")), send(DONE)])).await;
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(8 << 20)
    );
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params(&body),
        Some(r#"{"guestMemoryLimit":"4mb"}"#),
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert_eq!(upstream.requests().len(), 0);
    let stdout: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(stdout["status"], "error");
    assert_eq!(stdout["connector_id"], "s1");
    assert_eq!(stdout["retry"], true);
    assert!(
        stdout["service_message"]
            .as_str()
            .unwrap()
            .starts_with("the connector's sandbox failed: guest memory limit of 4 MiB exceeded: the guest asked for "),
        "{stdout}"
    );
    assert_eq!(run.log.len(), 1);
    assert_eq!(run.log[0]["event"]["outcome"], "failure");
    assert_eq!(usage_of(&run.log[0])["source"], "unavailable");
}

#[tokio::test]
async fn c63_c64_idle_timeout_ends_a_stalled_stream() {
    let upstream = Upstream::always(Reply::sse(vec![
        send(&delta("Hi")),
        Step::Sleep(Duration::from_secs(10)),
        send(DONE),
    ]))
    .await;
    let started = std::time::Instant::now();
    let run = execute_cli(
        &connector_file(&upstream, ""),
        &stream_params("{}"),
        Some(r#"{"responseTimeout": 300}"#),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, delta("Hi").as_bytes());
    assert_eq!(
        run.stderr.trim_end(),
        "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - idle timeout of 300ms exceeded"
    );
}

#[tokio::test]
async fn c76_http_error_on_a_stream_prints_the_failure_json_and_streams_nothing() {
    let upstream = Upstream::always(Reply::json(
        429,
        r#"{"error":{"message":"Rate limit reached"}}"#,
    ))
    .await;
    let run = execute_cli(&connector_file(&upstream, ""), &stream_params("{}"), None).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        "{\"connector_id\":\"s1\",\"status\":\"error\",\"message\":\"an error occurred while running the action\",\"service_message\":\"Status code: 429. Message: API Error: Too Many Requests - Rate limit reached\",\"retry\":true}\n"
    );
    assert_eq!(usage_of(&run.log[0])["source"], "unavailable");
    assert!(usage_of(&run.log[0]).get("prompt_tokens").is_none(), "C119");
}

#[tokio::test]
async fn c115_json_answer_to_a_stream_request_is_passed_through_and_accounted() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let run = execute_cli(&connector_file(&upstream, ""), &stream_params("{}"), None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, COMPLETION.as_bytes());
    assert_eq!(
        usage_of(&run.log[0]),
        &serde_json::json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "source": "reported"})
    );
}

#[tokio::test]
async fn c116_params_failures_are_logged_and_invalid_connectors_are_not() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let file = connector_file(&upstream, "");
    let run = execute_cli(&file, r#"{"subAction":"nope"}"#, None).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.log.len(), 1);
    assert_eq!(
        run.log[0]["error"]["message"],
        "an error occurred while running the action: Sub action \"nope\" is not registered. Connector id: s1. Connector name: OpenAI. Connector type: .gen-ai; retry: false"
    );
    assert!(
        run.log[0]["kibana"]["action"]["execution"]["usage"]
            .get("request_body_bytes")
            .is_none(),
        "C118"
    );
    let invalid = write_file(
        "bad.json",
        r#"{"name":"x","config":{"apiProvider":"Other"},"secrets":{}}"#,
    );
    let run = execute_cli(&invalid, &stream_params("{}"), None).await;
    assert_eq!(run.code, Some(2));
    assert!(run.log.is_empty());
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn memory_stays_flat_on_a_long_stream() {
    // 40 MiB of events (padded like logprobs-heavy chunks) against 200 KiB: the process's peak
    // resident memory must not grow with the stream.
    async fn peak_rss_kib(events: usize) -> u64 {
        let pad = "x".repeat(10 * 1024);
        let ev = event(&format!(
            r#"{{"choices":[{{"index":0,"delta":{{"content":"a"}},"logprobs":{{"pad":"{pad}"}}}}]}}"#
        ));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut steps: Vec<Step> = (0..events).map(|_| send(&ev)).collect();
        steps.push(Step::Wait(gate.clone()));
        steps.push(send(DONE));
        let upstream = Upstream::always(Reply::sse(steps)).await;
        let file = connector_file(&upstream, "");
        let params = write_file("params.json", &stream_params("{}"));
        let (mut child, mut stdout) = spawn_piped(execute_cmd(&file, &params));
        let pid = child.id().unwrap();
        let expected = ev.len() * events;
        let mut seen = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while seen < expected {
            let n = tokio::time::timeout(Duration::from_secs(120), stdout.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "stream ended early");
            seen += n;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        gate.notify_one();
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        hwm
    }
    let small = peak_rss_kib(20).await;
    let large = peak_rss_kib(4000).await;
    assert!(
        large < small + 24 * 1024,
        "peak RSS grew from {small} KiB to {large} KiB for a 40 MiB stream"
    );
}

/// `openai-connector sse decode ARGS FILE`, FILE holding `input`.
async fn sse_decode(input: impl AsRef<[u8]>, args: &[&str]) -> std::process::Output {
    let file = write_file("in.sse", "");
    std::fs::write(&file, input).unwrap();
    let mut cmd = cli();
    cmd.args(["sse", "decode"]).args(args).arg(&file);
    run_cli(cmd).await
}

#[tokio::test]
async fn sse_decode_cli_follows_the_c91_table() {
    let input = "data: a\ndata: b\n\n: keep-alive\n\nevent: ping\ndata: 1\n\nid: 7\n\ndata: x\n\nretry: 1500\ndata:  a\r\n\r\nData: x\n\ndata: tail";
    let out = sse_decode(input, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!(
            "{\"event\":\"message\",\"data\":\"a\\nb\",\"id\":null,\"retry\":null}\n",
            "{\"event\":\"ping\",\"data\":\"1\",\"id\":null,\"retry\":null}\n",
            "{\"event\":\"message\",\"data\":\"x\",\"id\":\"7\",\"retry\":null}\n",
            "{\"event\":\"message\",\"data\":\" a\",\"id\":\"7\",\"retry\":1500}\n",
        )
    );
}

/// C81 through `feed-raw-spans`: bytes that are not UTF-8 in an event's only data line are lent
/// undecoded by the component and replaced by the harness, as in a multi-line event, which the
/// component decodes itself.
#[tokio::test]
async fn sse_decode_cli_replaces_bytes_that_are_not_utf8() {
    let out = sse_decode(
        b"data: caf\xC3\xA9 \xFF end\n\ndata: \xC3\ndata: two\n\nevent: t\xF0\x9F\ndata: x\n\n",
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!(
            "{\"event\":\"message\",\"data\":\"caf\u{e9} \u{fffd} end\",\"id\":null,\"retry\":null}\n",
            "{\"event\":\"message\",\"data\":\"\u{fffd}\\ntwo\",\"id\":null,\"retry\":null}\n",
            "{\"event\":\"t\u{fffd}\",\"data\":\"x\",\"id\":null,\"retry\":null}\n",
        )
    );
}

/// C91 through the WIT resource: an oversize event after complete ones in the same chunk (the
/// CLI reads 256 KiB at a time, so this file is one `feed`) loses none of the earlier events.
#[tokio::test]
async fn sse_decode_cli_keeps_the_events_before_an_oversize_one() {
    let input = format!(
        "data: one\n\nevent: two\ndata: 2\n\ndata: {}\n\ndata: never\n\n",
        "x".repeat(200)
    );
    let out = sse_decode(input, &["--max-event-bytes", "64"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!(
            "{\"event\":\"message\",\"data\":\"one\",\"id\":null,\"retry\":null}\n",
            "{\"event\":\"two\",\"data\":\"2\",\"id\":null,\"retry\":null}\n",
        )
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("SSE event exceeds the maximum size of 64 bytes"),
        "{stderr}"
    );
}

/// A stream of about 1.4 MiB with every kind of line and of character to escape: single- and
/// multi-line data, JSON data (a quote every few bytes), backslashes, tabs and other control
/// characters, non-ASCII text (cut by every batch the CLI reads), types and IDs to escape,
/// retries, comments, the three line ends, a byte-order mark, bytes that are not UTF-8, empty
/// events and an unterminated event at the end.
fn escapes_stream() -> Vec<u8> {
    let mut body = b"\xEF\xBB\xBF".to_vec();
    let mut i = 0;
    while body.len() < 1400 * 1024 {
        let line_end: &[u8] = [&b"\n"[..], b"\r\n", b"\r"][i % 3];
        // JSON text with escapes of its own, and raw non-ASCII characters.
        let data = format!(
            "{{\"n\":{i},\"text\":\"caf\\u00e9 \\\"q\\\" {}\u{e9}\u{1F600}\u{2028}\",\"path\":\"C:\\\\x\"}}",
            "x".repeat(i % 97)
        );
        let mut event = Vec::new();
        match i % 7 {
            0 | 1 => event.extend_from_slice(format!("data: {data}").as_bytes()),
            2 => event.extend_from_slice(
                format!("event: t\"{i}\"\u{e9}\ndata:{data}\ndata: second\tline\u{1}\u{1f}\u{7f}")
                    .as_bytes(),
            ),
            3 => event.extend_from_slice(
                format!("id: id\\\"{i}\"\nretry: {}\ndata: {data}", 100 + i).as_bytes(),
            ),
            4 if i % 50 == 4 => {
                event.extend_from_slice(b": comment\ndata: bad \xFF\xC3 bytes ");
                event.extend_from_slice(data.as_bytes());
            }
            4 => event.extend_from_slice(format!(": comment \"\ndata: {data}").as_bytes()),
            5 => event.extend_from_slice(b"data"),
            _ => event.extend_from_slice(b"event: empty\n: nothing to dispatch"),
        }
        for line in event.split(|&b| b == b'\n') {
            body.extend_from_slice(line);
            body.extend_from_slice(line_end);
        }
        body.extend_from_slice(line_end);
        i += 1;
    }
    body.extend_from_slice(b"data: never dispatched");
    body
}

/// C90, C80: `sse decode` writes, byte for byte, the lines serde_json wrote for the native
/// decoder's events (what the command wrote before its own line writer), however the input is
/// cut into the batches it reads: from a file, and from a pipe written in uneven pieces.
#[tokio::test]
async fn c90_sse_decode_cli_lines_are_serde_jsons_for_every_kind_of_event() {
    use tokio::io::AsyncWriteExt;
    let body = escapes_stream();
    let mut events = Vec::new();
    let mut native = openai_connector::sse::Decoder::new();
    native.feed(&body, &mut events).unwrap();
    native.finish(&mut events).unwrap();
    assert!(events.len() > 5000, "{}", events.len());
    let mut want = String::new();
    for e in &events {
        want.push_str(
            &serde_json::json!({
                "event": e.event_type,
                "data": e.data,
                "id": e.last_event_id,
                "retry": e.retry,
            })
            .to_string(),
        );
        want.push('\n');
    }
    for needle in [
        "\\\"",
        "\\\\",
        "\\t",
        "\\u0001",
        "\\u001f",
        "\u{7f}",
        "\u{2028}",
        "\u{fffd}",
        "\u{1F600}",
        "\"retry\":103",
    ] {
        assert!(want.contains(needle), "the stream has no {needle:?}");
    }

    // Success, and exactly the expected lines (compared whole: too long to print).
    let same_lines = |out: &std::process::Output, from: &str| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == want.as_bytes(),
            "the lines from a {from} differ"
        );
    };
    same_lines(&sse_decode(&body, &[]).await, "file");

    let mut cmd = tokio::process::Command::from(cli());
    cmd.args(["sse", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        for piece in body.chunks(100_003) {
            stdin.write_all(piece).await.unwrap();
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("sse decode ends within 60 s")
        .unwrap();
    writer.await.unwrap();
    same_lines(&out, "pipe");
}

/// C90: read from a pipe, each event is written as soon as the input holding it has arrived,
/// not when the input ends.
#[tokio::test]
async fn c90_sse_decode_cli_writes_each_event_before_the_input_ends() {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(cli());
    cmd.args(["sse", "decode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    for (input, line) in [
        (
            "data: one\n\n",
            "{\"event\":\"message\",\"data\":\"one\",\"id\":null,\"retry\":null}\n",
        ),
        (
            "event: two\ndata: \"2\"\n\n",
            "{\"event\":\"two\",\"data\":\"\\\"2\\\"\",\"id\":null,\"retry\":null}\n",
        ),
    ] {
        stdin.write_all(input.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        let got = read_first(
            &mut stdout,
            line.len(),
            "an event's line before the input ends",
        )
        .await;
        assert_eq!(String::from_utf8(got).unwrap(), line);
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("sse decode ends with its input")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sse_decode_chat_assembles_tool_calls() {
    // The contract's tool-call example (section 6b).
    let input = [
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
    ]
    .iter()
    .map(|c| event(c))
    .collect::<String>();
    let out = sse_decode(input, &["--chat"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with(r#"{"index":0,"delta":{"tool_calls":"#));
    let last: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    let message = &last["final"]["choices"][0]["message"];
    assert_eq!(message["content"], serde_json::Value::Null);
    assert_eq!(
        message["tool_calls"],
        serde_json::json!([{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(last["final"]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(last["final"]["done"], false);
}

/// C91, C105, C131 through `sse.chat-decoder`: an oversize event stops decoding, but the delta
/// lines before it and the completion assembled so far are still written, its `error` naming
/// why decoding stopped, then the error (exit 1).
#[tokio::test]
async fn c91_c131_sse_decode_chat_keeps_the_assembly_before_an_oversize_event() {
    let input = format!(
        "{}{}data: {}\n\n{}",
        event(r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":"Hel"}}]}"#),
        event(
            r#"{"choices":[{"delta":{"content":"lo"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#
        ),
        "x".repeat(300),
        event(r#"{"choices":[{"delta":{"content":" never"}}]}"#),
    );
    let out = sse_decode(input, &["--chat", "--max-event-bytes", "256"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!(
            "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}\n",
            "{\"index\":0,\"delta\":{\"content\":\"lo\"}}\n",
            "{\"final\":{\"id\":null,\"model\":\"m\",\"created\":null,\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1},\"done\":false,\"error\":\"SSE event exceeds the maximum size of 256 bytes\"}}\n",
        )
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        "openai-connector: SSE event exceeds the maximum size of 256 bytes\n"
    );
}

/// C95, C96, C131: a stream error stops the assembly (C92); the final line's `error` holds its
/// text. The input itself decoded, so the exit code is 0 and nothing goes to stderr.
#[tokio::test]
async fn c95_c96_c131_sse_decode_chat_final_line_names_the_stream_error() {
    let first = event(r#"{"model":"m","choices":[{"delta":{"content":"Hi"}}]}"#);
    let after = event(r#"{"choices":[{"delta":{"content":" never"}}]}"#);
    for (bad, error) in [
        (
            "data: {\"choices\":\n\n".to_owned(),
            "Failed to parse stream event data as JSON: unexpected end of JSON input at position 11",
        ),
        (
            event(r#"{"error":{"message":"Rate limit","type":"x"}}"#),
            "Rate limit",
        ),
    ] {
        let out = sse_decode(format!("{first}{bad}{after}"), &["--chat"]).await;
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!(
                "{{\"index\":0,\"delta\":{{\"content\":\"Hi\"}}}}\n{{\"final\":{{\"id\":null,\"model\":\"m\",\"created\":null,\"system_fingerprint\":null,\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"Hi\"}},\"finish_reason\":null}}],\"usage\":null,\"done\":false,\"error\":\"{error}\"}}}}\n"
            )
        );
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "");
    }
}

#[tokio::test]
async fn c68_interrupt_abandons_the_upstream_and_still_logs_the_execution() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let first = delta("Hel");
    // The upstream would hold the stream open until the test ends.
    let upstream = Upstream::always(Reply::sse(vec![
        send(&first),
        Step::Wait(gate.clone()),
        send(DONE),
    ]))
    .await;
    let file = connector_file(&upstream, "");
    let params = write_file(
        "params.json",
        &stream_params(r#"{"model":"gpt-4o","messages":[]}"#),
    );
    let log = write_file("events.ndjson", "");
    let mut cmd = execute_cmd(&file, &params);
    cmd.arg("--event-log").arg(&log);
    let (child, mut stdout) = spawn_piped(cmd);
    read_first(&mut stdout, first.len(), "the first chunk").await;
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with(
            "Status code: undefined. Message: Unexpected API Error: ERR_CANCELED - canceled\n"
        ),
        "{stderr}"
    );
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim_end()).unwrap();
    assert_eq!(line["event"]["outcome"], "failure");
    // C113: the usage of what arrived is still recorded.
    assert_eq!(usage_of(&line)["source"], "estimated");
    assert_eq!(
        usage_of(&line)["completion_tokens"],
        openai_connector_harness::tokenizer::count_tokens("o200k_base", "Hel").unwrap()
    );
    gate.notify_one();
}
