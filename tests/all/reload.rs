//! `serve` reloads its connectors, client tokens and routes on SIGHUP (cli.md "Reload"): a new
//! set that validates replaces the old one whole, one that does not is refused whole (with the
//! `validate` messages) and the old one stays, and requests in flight finish on the
//! configuration they started with. Client-limit counts of a token kept survive the reload.

use crate::serve::*;
use crate::support::*;
use crate::upstream::{Reply, Upstream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Sends SIGHUP to the gateway and waits until its stderr says how the reload went (the
/// `count`-th reload line): returns that line.
pub(crate) async fn hang_up(gw: &Gateway, count: usize) -> String {
    let status = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..600 {
        let stderr = gw.stderr();
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("reloaded: ") || l.starts_with("reload refused"))
            .collect();
        if lines.len() >= count {
            // A refusal's messages follow on the next lines: give them a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let stderr = gw.stderr();
            let at = stderr
                .match_indices("reload")
                .filter(|(i, _)| *i == 0 || stderr.as_bytes()[i - 1] == b'\n')
                .nth(count - 1)
                .map(|(i, _)| i)
                .unwrap();
            return stderr[at..].to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reload line after SIGHUP: {}", gw.stderr());
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn tokens_json(entries: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(token, grants, limits)| {
            format!(r#"{{"token":"{token}","connectors":{grants}{limits}}}"#)
        })
        .collect();
    format!(r#"{{"tokens":[{}]}}"#, entries.join(","))
}

const OLD_CLIENT: &str = "client-OLD-TOKEN-5e1";
const NEW_CLIENT: &str = "client-NEW-TOKEN-a90";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_replaces_connectors_tokens_and_routes_and_in_flight_requests_finish_on_the_old_set()
{
    let release = Arc::new(tokio::sync::Notify::new());
    let a = held_stream(&release, &["two"]).await;
    let b = Upstream::always(Reply::json(
        200,
        &COMPLETION.replace("Hello there", "from b"),
    ))
    .await;
    let dir = connector_dir(&[("a", &a.url("/v1/chat/completions"))]);
    let tokens = write_file(
        "tokens.json",
        &tokens_json(&[(OLD_CLIENT, r#"["a","r"]"#, "")]),
    );
    let routes = tokens.with_file_name("routes.json");
    write(
        &routes,
        r#"{"routes":{"r":{"connectors":["a"],"strategy":"fallback"}}}"#,
    );
    let (gw, events) = gateway_with_log(
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

    // A stream of connector `a` is under way when the reload removes `a`.
    let mut stream = crate::support::http1_request(
        &gw.addr,
        "POST",
        "/connectors/a/v1/chat/completions",
        Some(OLD_CLIENT),
        r#"{"messages":[],"stream":true}"#,
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        next_chunk(&mut stream).await.unwrap().as_bytes(),
        sse_chunk("one")
    );

    // The new set: connector `b` instead of `a`, a new token granted `b` and route `r2`.
    std::fs::remove_file(dir.join("a.json")).unwrap();
    write(
        &dir.join("b.json"),
        &format!(
            r#"{{"name":"Conn b","connector_type_id":".gen-ai","config":{{"apiProvider":"OpenAI","apiUrl":"{}"}},"secrets":{{"apiKey":"{API_KEY}"}}}}"#,
            b.url("/v1/chat/completions")
        ),
    );
    write(
        &routes,
        r#"{"routes":{"r2":{"connectors":["b"],"strategy":"fallback"}}}"#,
    );
    write(&tokens, &tokens_json(&[(NEW_CLIENT, r#"["b","r2"]"#, "")]));
    let line = hang_up(&gw, 1).await;
    assert!(
        line.starts_with("reloaded: 1 connector(s), 1 route(s), 1 client token(s)"),
        "{line}"
    );

    // The stream started on the old set finishes, and logs its line for `a`.
    release.notify_one();
    let rest = rest_of(&mut stream).await;
    let mut expected = sse_chunk("two");
    expected.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(rest.as_bytes(), expected);

    // The new set is in force: `a` is gone, `b` and `r2` answer the new token only.
    let (_, _, list) = gw
        .call("GET", "/api/actions/connectors", Some(ADMIN), "")
        .await;
    let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&list)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["b"]);
    let (status, _, _) = gw.chat("a", Some(ADMIN), HI).await;
    assert_eq!(status, 404);
    let (status, _, _) = gw.chat("b", Some(OLD_CLIENT), HI).await;
    assert_eq!(status, 401, "a token the reload removed is refused");
    let (status, _, body) = gw.chat("b", Some(NEW_CLIENT), HI).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("from b"), "{body}");
    let (status, _, body) = gw
        .call(
            "POST",
            "/routes/r2/v1/chat/completions",
            Some(NEW_CLIENT),
            HI,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = gw
        .call("POST", "/routes/r/v1/chat/completions", Some(ADMIN), HI)
        .await;
    assert_eq!(status, 404, "the route the reload removed");
    let log = event_log(&events, 3);
    assert!(log.lines().next().unwrap().contains(r#""id":"a""#), "{log}");
    // The new connector has its series in /metrics.
    let (_, _, metrics) = gw.call("GET", "/metrics", Some(ADMIN), "").await;
    assert!(
        metrics.contains(
            r#"openai_connector_requests_total{connector="b",route="chat_completions"} 2"#
        ),
        "{metrics}"
    );
    assert_eq!(b.requests().len(), 2);
    assert!(!gw.stderr().contains(NEW_CLIENT) && !gw.stderr().contains(OLD_CLIENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_set_is_refused_whole_and_the_old_one_stays() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("a", &upstream.url("/v1/chat/completions"))]);
    let tokens = write_file("tokens.json", &tokens_json(&[(OLD_CLIENT, r#"["a"]"#, "")]));
    let (gw, _events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens)], &[]);

    // A valid tokens file beside an invalid connector: nothing of the set is taken.
    write(&tokens, &tokens_json(&[(NEW_CLIENT, r#"["a"]"#, "")]));
    write(
        &dir.join("broken.json"),
        r#"{"name":"Broken","connector_type_id":".gen-ai","config":{"apiProvider":"OpenAI","apiUrl":"not a url"},"secrets":{"apiKey":"k"}}"#,
    );
    let line = hang_up(&gw, 1).await;
    assert!(
        line.starts_with("reload refused, the configuration in force stays: "),
        "{line}"
    );
    // The file and `validate`'s message (C11's wording).
    assert!(line.contains("connector \"broken\""), "{line}");
    assert!(line.contains("broken.json"), "{line}");
    assert!(line.contains("Invalid URL: not a url"), "{line}");
    let (status, _, _) = gw.chat("a", Some(OLD_CLIENT), HI).await;
    assert_eq!(status, 200, "the old token still works");
    let (status, _, _) = gw.chat("a", Some(NEW_CLIENT), HI).await;
    assert_eq!(status, 401, "the refused set's token does not");

    // A tokens file granting a connector that does not exist: refused too, naming the field.
    std::fs::remove_file(dir.join("broken.json")).unwrap();
    write(&tokens, &tokens_json(&[(NEW_CLIENT, r#"["zz"]"#, "")]));
    let line = hang_up(&gw, 2).await;
    assert!(
        line.contains("[tokens.0.connectors.0]: no connector with id \"zz\""),
        "{line}"
    );
    let (status, _, _) = gw.chat("a", Some(OLD_CLIENT), HI).await;
    assert_eq!(status, 200);

    // Fixed: the next SIGHUP takes it.
    write(&tokens, &tokens_json(&[(NEW_CLIENT, r#"["a"]"#, "")]));
    let line = hang_up(&gw, 3).await;
    assert!(line.starts_with("reloaded: "), "{line}");
    let (status, _, _) = gw.chat("a", Some(NEW_CLIENT), HI).await;
    assert_eq!(status, 200);
    assert!(!gw.stderr().contains(NEW_CLIENT) && !gw.stderr().contains(OLD_CLIENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_reload_keeps_keeps_its_client_limit_counts() {
    let upstream = Upstream::always(Reply::json(200, COMPLETION)).await;
    let dir = connector_dir(&[("a", &upstream.url("/v1/chat/completions"))]);
    let limited = r#","limits":{"requestsPerMinute":2}"#;
    let tokens = write_file(
        "tokens.json",
        &tokens_json(&[(OLD_CLIENT, r#"["a"]"#, limited)]),
    );
    let (gw, _events) = gateway_with_log(&dir, "", &["--client-tokens", path_str(&tokens)], &[]);
    for _ in 0..2 {
        let (status, _, _) = gw.chat("a", Some(OLD_CLIENT), HI).await;
        assert_eq!(status, 200);
    }
    // The same token, now second in the file, beside a new one with the same limit.
    write(
        &tokens,
        &tokens_json(&[
            (NEW_CLIENT, r#"["a"]"#, limited),
            (OLD_CLIENT, r#"["a"]"#, limited),
        ]),
    );
    let line = hang_up(&gw, 1).await;
    assert!(line.starts_with("reloaded: "), "{line}");
    let (status, headers, _) = gw.chat("a", Some(OLD_CLIENT), HI).await;
    assert_eq!(status, 429, "the minute's two requests still count");
    assert!(headers.iter().any(|(n, _)| n == "retry-after"));
    let (status, _, _) = gw.chat("a", Some(NEW_CLIENT), HI).await;
    assert_eq!(status, 200, "the new token starts from zero");
    assert_eq!(upstream.requests().len(), 3);
}
