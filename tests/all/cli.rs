//! The `openai-connector` binary: the interface of shared/spec/cli.md.

use crate::support::*;
use crate::upstream::{Reply, Upstream};
use std::io::Write;
use std::process::Stdio;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn connector_file(config: &str) -> std::path::PathBuf {
    write_file(
        "my-conn.json",
        &format!(
            r#"{{"name":"My Conn","connector_type_id":".gen-ai","config":{config},"secrets":{{"apiKey":"{API_KEY}"}}}}"#
        ),
    )
}

#[tokio::test]
async fn validate_prints_the_get_connector_shape_without_secrets() {
    let file = connector_file(
        r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions","temperature":"0.5"}"#,
    );
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // C9: defaults filled in, numeric strings become numbers; id defaults to the file stem.
    assert_eq!(
        stdout(&out).trim_end(),
        r#"{"id":"my-conn","name":"My Conn","connector_type_id":".gen-ai","config":{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions","temperature":0.5,"defaultModel":"gpt-4.1"},"is_preconfigured":false,"is_deprecated":false,"is_missing_secrets":false}"#
    );
}

#[tokio::test]
async fn validate_reports_each_problem_on_its_own_line() {
    // C17's example.
    let file =
        connector_file(r#"{"apiProvider":"Azure OpenAI","apiUrl":"ftp://h/x","projectId":"p"}"#);
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error validating action type config: Unrecognized keys: \"projectId\"\nerror validating action type config: Error configuring OpenAI action: Error: URL Error: Invalid protocol\n"
    );
    assert_eq!(stdout(&out), "");
}

/// C1, C50: config, secrets and params nested deeper than 128 levels are reported where the
/// limit was passed, naming the field, not as a wrong type or a JSON position.
#[tokio::test]
async fn c1_c50_nesting_too_deep_names_the_field() {
    let nested = |n: usize| "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
    // config(1) > headers' value and 127 objects inside it: the last is at level 129.
    let file = connector_file(&format!(
        r#"{{"apiProvider":"Other","apiUrl":"https://example.com/v1","defaultModel":"m","headers":{}}}"#,
        nested(128)
    ));
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error validating action type config: [headers{}]: nested more than 128 levels deep\n",
            ".a".repeat(127)
        )
    );
    // Secrets: the file adds a level, which does not count (serde_json's limit would).
    let deep = "[".repeat(128) + &"]".repeat(128);
    let file = write_file(
        "deep-secrets.json",
        &format!(
            r#"{{"name":"n","config":{{"apiProvider":"Other","apiUrl":"https://example.com/v1","defaultModel":"m"}},"secrets":{{"apiKey":"{API_KEY}","caData":{deep}}}}}"#
        ),
    );
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error validating action type secrets: [caData]: nested more than 128 levels deep\n"
    );
    // Params, relative to subActionParams (C35); nothing is sent.
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let file = write_file(
        "conn.json",
        &format!(
            r#"{{"name":"n","config":{},"secrets":{{"apiKey":"{API_KEY}"}}}}"#,
            other_config(&upstream.url("/v1"))
        ),
    );
    let params = write_file(
        "params.json",
        &format!(
            r#"{{"subAction":"run","subActionParams":{{"body":"{{}}","signal":{}}}}}"#,
            nested(127)
        ),
    );
    let out = run_cli(execute_cmd(&file, &params)).await;
    assert!(
        stdout(&out).contains(&format!(
            r#""service_message":"Request validation failed ([signal{}]: nested more than 128 levels deep)""#,
            ".a".repeat(126)
        )),
        "{}",
        stdout(&out)
    );
    assert!(upstream.requests().is_empty());
}

/// A connector too large for the sandbox's memory: `validate` prints the one line `execute`
/// reports as its service message, not the guest's backtrace.
#[tokio::test]
async fn validate_reports_a_sandbox_failure_in_one_line_as_execute_does() {
    let settings = write_file("settings.json", r#"{"guestMemoryLimit":"4mb"}"#);
    let file = write_file(
        "big-name.json",
        &format!(
            r#"{{"name":"{}","config":{},"secrets":{{"apiKey":"{API_KEY}"}}}}"#,
            "n".repeat(8 << 20),
            other_config("http://127.0.0.1:9/v1")
        ),
    );
    let mut cmd = validate_cmd(&file);
    cmd.arg("--settings").arg(&settings);
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "openai-connector: the connector's sandbox failed: guest memory limit of 4 MiB exceeded: the guest asked for "
        ) && err.ends_with(" MiB\n")
            && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !err.contains("wasm backtrace") && !err.contains("0x"),
        "{err}"
    );

    let params = write_file("params.json", &run_params("run", "{}"));
    let mut cmd = execute_cmd(&file, &params);
    cmd.arg("--settings").arg(&settings);
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let failure: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        format!(
            "openai-connector: {}\n",
            failure["service_message"].as_str().unwrap()
        ),
        err
    );
}

#[tokio::test]
async fn malformed_files_exit_2_naming_file_and_position() {
    let file = write_file(
        "broken.json",
        "{\"name\": \"x\",\n  \"config\": {\"a\": }\n}",
    );
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("line 2 column"), "{err}");

    let out = run_cli(validate_cmd("/nonexistent/conn.json")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/conn.json"),
        "{}",
        stderr(&out)
    );

    let settings = write_file("settings.json", r#"{"allowedHost": ["x"]}"#);
    let mut cmd = validate_cmd(connector_file(r#"{}"#));
    cmd.arg("--settings").arg(&settings);
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown setting \"allowedHost\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn execute_success_failure_and_invalid_connector_exit_codes() {
    let upstream = Upstream::http(std::sync::Arc::new(|r| {
        if r.body_str().contains("fail") {
            Reply::json(401, r#"{"error":{"message":"Incorrect API key provided"}}"#)
        } else {
            Reply::json(200, COMPLETION)
        }
    }))
    .await;
    let file = connector_file(&format!(
        r#"{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"m"}}"#,
        upstream.url("/v1")
    ));
    let ok = write_file("params.json", &run_params("run", "{}"));
    let out = run_cli(execute_cmd(&file, &ok)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{{\"connector_id\":\"my-conn\",\"status\":\"ok\",\"data\":{COMPLETION}}}\n")
    );

    // Params from standard input; an HTTP error is exit 1 with the failure JSON.
    let mut cmd = execute_cmd(&file, "-");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(run_params("run", r#"{"fail":1}"#).as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "{\"connector_id\":\"my-conn\",\"status\":\"error\",\"message\":\"an error occurred while running the action\",\"service_message\":\"Status code: 401. Message: Unauthorized API Error - Incorrect API key provided\",\"retry\":true}\n"
    );

    // Invalid params: exit 1, not retryable.
    let bad = write_file(
        "params.json",
        r#"{"subAction":"run","subActionParams":{"body":"{}","extra":1}}"#,
    );
    let out = run_cli(execute_cmd(&file, &bad)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains(r#""service_message":"Request validation failed (Unrecognized keys: \"extra\")","retry":false"#), "{}", stdout(&out));

    // Invalid connector: exit 2, nothing sent.
    let before = upstream.requests().len();
    let invalid = connector_file(r#"{"apiProvider":"Other","apiUrl":"http://127.0.0.1:1/v1"}"#);
    let out = run_cli(execute_cmd(&invalid, &ok)).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error validating action type config: [defaultModel]: expected value of type [string] but got [undefined]\n"
    );
    assert_eq!(upstream.requests().len(), before);

    // Malformed params file: exit 2 naming it.
    let broken = write_file("params.json", "{\"subAction\": ");
    let out = run_cli(execute_cmd(&file, &broken)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&broken.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn secrets_from_env_and_file_are_used_and_never_printed() {
    let upstream = Upstream::always(Reply::json(
        401,
        &format!(r#"{{"error":{{"message":"bad key {API_KEY}"}}}}"#),
    ))
    .await;
    let dir = scratch_dir("secret-refs");
    std::fs::write(dir.join("key.txt"), format!("{API_KEY}\n")).unwrap();
    let file = dir.join("conn.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"name":"n","config":{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"m"}},"secrets":{{"apiKey":{{"file":"key.txt"}}}}}}"#,
            upstream.url("/v1")
        ),
    )
    .unwrap();
    let params = write_file("params.json", &run_params("run", "{}"));
    let mut cmd = execute_cmd(&file, &params);
    cmd.env("OPENAI_CONNECTOR_LOG", "trace");
    let out = run_cli(cmd).await; // run_cli asserts the key is in neither stream
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        upstream.only_request().header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert!(
        stdout(&out).contains("bad key [REDACTED]"),
        "{}",
        stdout(&out)
    );

    std::fs::write(
        &file,
        format!(
            r#"{{"name":"n","config":{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"m"}},"secrets":{{"apiKey":{{"env":"OC_TEST_API_KEY"}}}}}}"#,
            upstream.url("/v1")
        ),
    )
    .unwrap();
    let mut cmd = execute_cmd(&file, &params);
    cmd.env("OC_TEST_API_KEY", API_KEY);
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn help_and_version() {
    for args in [
        &["--help"][..],
        &["execute", "--help"],
        &["validate", "-h"],
        &["--version"],
    ] {
        let mut cmd = cli();
        cmd.args(args);
        let out = run_cli(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!stdout(&out).is_empty());
    }
}

#[tokio::test]
async fn demo_runs_every_provider_against_its_loopback_upstream() {
    let mut cmd = cli();
    cmd.arg("demo");
    let out = run_cli(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "=== OpenAI",
        "=== Azure OpenAI",
        "=== Other",
        "authorization: Bearer [REDACTED]",
        "api-key: [REDACTED]",
        "\"status\":\"ok\"",
        // C106's label, not a Debug spelling.
        "usage:    reported: prompt ",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("sk-demo-not-a-real-key"));
}

#[tokio::test]
async fn bad_connector_input_gets_the_contracts_messages_without_echoing_values() {
    // C14, D9: a header value with CR/LF is refused and never shown; C24: raw PEM is not base64;
    // C11: an invalid URL.
    let file = write_file(
        "bad.json",
        &format!(
            r#"{{"name":"n","config":{{"apiProvider":"Other","apiUrl":"example.com/do-something","defaultModel":"m","headers":{{"X-Inject":"a\r\nX-Evil: {API_KEY}"}}}},"secrets":{{"certificateData":"-----BEGIN CERTIFICATE-----","privateKeyData":"not base64!"}}}}"#
        ),
    );
    let out = run_cli(validate_cmd(&file)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        concat!(
            "error validating action type config: [headers.X-Inject]: header value must not contain CR, LF or NUL\n",
            "error validating action type config: Error configuring OpenAI action: Error: URL Error: Invalid URL: example.com/do-something\n",
            "error validating action type secrets: Certificate data is not valid base64 (PKI fields must be base64-encoded PEM)\n",
            "error validating action type secrets: Private key data is not valid base64 (PKI fields must be base64-encoded PEM)\n",
        )
    );
}

#[tokio::test]
async fn processes_racing_on_a_cold_code_cache_print_nothing_extra() {
    // Parallel invocations on an empty cache all compile the component and race to write it;
    // the loser's benign wasmtime warning must not reach a script's stderr (C17's exact lines
    // are all a failed `validate` may print, and a passing one prints nothing there).
    let cache = scratch_dir("cold-cache-race");
    let _ = std::fs::remove_dir_all(&cache);
    let file = connector_file(
        r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}"#,
    );
    let runs = (0..6).map(|_| {
        let mut cmd = cli();
        cmd.env("XDG_CACHE_HOME", &cache).arg("validate").arg(&file);
        run_cli(cmd)
    });
    for out in futures::future::join_all(runs).await {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out), "");
    }
}

// C68, C113, C116: SIGTERM (what supervisors and `timeout` send) and SIGHUP stop `execute` as
// SIGINT does: the upstream is abandoned mid-stream, what arrived stays on stdout, the failure
// (`ERR_CANCELED`) goes to stderr, the event log gets its line with the usage of what arrived,
// and the exit code is 1.
#[tokio::test]
async fn c68_sigterm_and_sighup_cancel_execute_and_still_log_it() {
    use crate::upstream::Step;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    let first = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
    for signal in ["TERM", "HUP"] {
        let gate = Arc::new(tokio::sync::Notify::new());
        // The upstream holds the stream open after the first chunk until the test ends.
        let upstream = Upstream::always(Reply::sse(vec![
            Step::Send(first.as_bytes().to_vec()),
            Step::Wait(gate.clone()),
            Step::Send(b"data: [DONE]\n\n".to_vec()),
        ]))
        .await;
        let file = connector_file(&format!(
            r#"{{"apiProvider":"Other","apiUrl":"{}","defaultModel":"gpt-4o"}}"#,
            upstream.url("/v1/chat/completions")
        ));
        let params = write_file(
            "params.json",
            r#"{"subAction":"stream","subActionParams":{"stream":true,"body":"{\"messages\":[]}"}}"#,
        );
        let log = write_file("events.ndjson", "");
        let mut cmd = execute_cmd(&file, &params);
        cmd.arg("--event-log").arg(&log);
        let (mut child, mut out) = spawn_piped(cmd);
        let mut err = child.stderr.take().unwrap();
        let stderr_text = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        read_first(&mut out, first.len(), "the first chunk").await;
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("execute ends after the signal")
            .unwrap();
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).await.unwrap();
        let stderr = stderr_text.await.unwrap();
        assert_eq!(status.code(), Some(1), "SIG{signal}: {stderr}");
        assert!(rest.is_empty(), "nothing after the first chunk");
        let what = if signal == "TERM" {
            "terminated"
        } else {
            "hung up"
        };
        assert_eq!(
            stderr,
            format!(
                "openai-connector: {what}; abandoning the upstream\nStatus code: undefined. Message: Unexpected API Error: ERR_CANCELED - canceled\n"
            )
        );
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim_end()).unwrap();
        assert_eq!(line["event"]["outcome"], "failure");
        assert_eq!(
            line["error"]["message"],
            "an error occurred while running the action: Status code: undefined. Message: Unexpected API Error: ERR_CANCELED - canceled; retry: true"
        );
        let usage = &line["kibana"]["action"]["execution"]["gen_ai"]["usage"];
        assert_eq!(usage["source"], "estimated", "C113: {line}");
        assert_eq!(
            usage["completion_tokens"],
            openai_connector_harness::tokenizer::count_tokens("o200k_base", "Hel").unwrap()
        );
        gate.notify_one();
    }
}
