//! The shared test vectors (`tests/vectors/`, format in its README) against the pure Rust API.
//!
//! The same files are read by the JavaScript tests (`js/test/vectors.test.mjs`) against the
//! jco-transpiled component, so both hosts are held to the same bytes. This runner produces
//! what the WIT glue (`src/component/mod.rs`) returns for each call, from the pure modules the
//! glue calls. Every case is checked and every mismatch reported before the test fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use openai_connector::actions::{self, Definition};
use openai_connector::config::{KeyFormat, Provider, ValidationErrors, VerificationMode};
use openai_connector::failure::{Failure, FailureKind};
use openai_connector::json::{Object, Value};
use openai_connector::params::SubAction;
use openai_connector::plan::{self, Deployment};
use openai_connector::responses_stream::{End, ResponsesDecoder};
use openai_connector::usage::{TokenUsage, UsageSource};
use openai_connector::{chat_stream, response, sse};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Files of `kind` ending in `ext`, sorted by name.
fn files(kind: &str, ext: &str) -> Vec<PathBuf> {
    let dir = vectors_dir().join(kind);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.{ext} vectors in {}", dir.display());
    out
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Value::parse(&bytes).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// The `cases` of a vector file.
fn cases(path: &Path) -> Vec<Value> {
    match read_json(path).get("cases") {
        Some(Value::Array(cases)) if !cases.is_empty() => cases.clone(),
        _ => panic!("{}: `cases` must be a non-empty array", path.display()),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    field(v, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("field `{key}` must be a string"))
}

fn u64_of(v: &Value, key: &str) -> Result<u64, String> {
    match field(v, key)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("field `{key}` must be a non-negative integer")),
        _ => Err(format!("field `{key}` must be a number")),
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => u64_of(v, key).map(Some),
    }
}

fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match field(v, key)? {
        Value::Array(items) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{key}` must hold strings"))
            })
            .collect(),
        _ => Err(format!("field `{key}` must be an array")),
    }
}

/// JSON text given as a value (`key`) or as exact text (`key_json`).
fn json_text(v: &Value, key: &str) -> Result<String, String> {
    match (v.get(key), v.get(&format!("{key}_json"))) {
        (Some(value), None) => Ok(value.to_json()),
        (None, Some(Value::String(text))) => Ok(text.clone()),
        _ => Err(format!(
            "give exactly one of `{key}` or `{key}_json` (a string)"
        )),
    }
}

/// Bytes given as UTF-8 text (`key`) or base64 (`key_base64`).
fn bytes(v: &Value, key: &str) -> Result<Vec<u8>, String> {
    match (v.get(key), v.get(&format!("{key}_base64"))) {
        (Some(Value::String(text)), None) => Ok(text.clone().into_bytes()),
        (None, Some(Value::String(b64))) => BASE64
            .decode(b64)
            .map_err(|e| format!("`{key}_base64`: {e}")),
        _ => Err(format!(
            "give exactly one of `{key}` or `{key}_base64` (a string)"
        )),
    }
}

struct Input {
    id: String,
    name: String,
    config_json: String,
    secrets_json: String,
    deployment: Deployment,
    /// Secret strings of 8 or more characters: no error text may contain them.
    secrets: Vec<String>,
}

impl Input {
    fn from(case: &Value) -> Result<Input, String> {
        let connector = field(case, "connector")?;
        let mut deployment = Deployment::default();
        if let Some(settings) = case.get("settings") {
            if settings.get("allowed_hosts").is_some() {
                deployment.allowed_hosts = strings(settings, "allowed_hosts")?;
            }
            if let Some(ms) = opt_u64(settings, "response_timeout_ms")? {
                deployment.response_timeout_ms = ms;
            }
            if let Some(max) = opt_u64(settings, "max_response_content_length")? {
                deployment.max_response_content_length = max;
            }
        }
        let secrets_json = json_text(connector, "secrets")?;
        let mut secrets = Vec::new();
        if let Ok(Value::Object(s)) = Value::parse(secrets_json.as_bytes()) {
            secrets.extend(
                s.values()
                    .filter_map(Value::as_str)
                    .filter(|s| s.chars().count() >= 8)
                    .map(str::to_owned),
            );
        }
        Ok(Input {
            id: connector
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("vector")
                .to_owned(),
            name: connector
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("Vector")
                .to_owned(),
            config_json: json_text(connector, "config")?,
            secrets_json,
            deployment,
            secrets,
        })
    }

    fn definition(&self) -> Definition<'_> {
        Definition {
            id: &self.id,
            name: &self.name,
            config_json: &self.config_json,
            secrets_json: &self.secrets_json,
        }
    }

    /// Fails when any secret appears in `text` (C32).
    fn check_no_secret(&self, text: &str) -> Result<(), String> {
        match self.secrets.iter().find(|s| text.contains(s.as_str())) {
            Some(_) => Err(format!("a secret value appears in the error text {text:?}")),
            None => Ok(()),
        }
    }
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}:\n      got  {got:?}\n      want {want:?}"))
    }
}

fn check_errors(input: &Input, got: &ValidationErrors, want: &Value) -> Result<(), String> {
    expect_eq("config errors", &got.config, &strings(want, "config")?)?;
    expect_eq("secrets errors", &got.secrets, &strings(want, "secrets")?)?;
    for line in got.config.iter().chain(&got.secrets) {
        input.check_no_secret(line)?;
    }
    Ok(())
}

fn check_failure(input: Option<&Input>, got: &Failure, want: &Value) -> Result<(), String> {
    expect_eq(
        "service_message",
        got.service_message.as_str(),
        &string(want, "service_message")?,
    )?;
    expect_eq(
        "retry",
        Value::Bool(got.retry),
        field(want, "retry")?.clone(),
    )?;
    let (kind, status) = match &got.kind {
        FailureKind::Params => ("params", None),
        FailureKind::Denied => ("denied", None),
        FailureKind::Http { status } => ("http", Some(*status)),
        FailureKind::Transport { .. } => ("transport", None),
        FailureKind::Timeout => ("timeout", None),
        FailureKind::ResponseInvalid => ("response-invalid", None),
        FailureKind::Stream => ("stream", None),
        FailureKind::Canceled => ("canceled", None),
        FailureKind::TlsRefused => ("tls-refused", None),
        FailureKind::Sandbox => ("sandbox", None),
        FailureKind::NotMapped => ("not-mapped", None),
    };
    expect_eq("kind", kind, string(want, "kind")?.as_str())?;
    let upstream_status = opt_u64(want, "upstream_status")?;
    if status.is_some() {
        expect_eq("kind's status", status.map(u64::from), upstream_status)?;
    }
    expect_eq(
        "upstream_status",
        got.upstream_status.map(u64::from),
        upstream_status,
    )?;
    match input {
        Some(input) => input.check_no_secret(&got.service_message),
        None => Ok(()),
    }
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::OpenAi => "open-ai",
        Provider::AzureOpenAi => "azure-open-ai",
        Provider::Other => "other",
    }
}

/// The WIT name of a sub-action (`invoke-ai`).
fn wit_sub_action(s: SubAction) -> &'static str {
    match s {
        SubAction::Run => "run",
        SubAction::Test => "test",
        SubAction::Stream => "stream",
        SubAction::InvokeAi => "invoke-ai",
        SubAction::InvokeStream => "invoke-stream",
        SubAction::InvokeAsyncIterator => "invoke-async-iterator",
        SubAction::Responses => "responses",
        SubAction::Embeddings => "embeddings",
    }
}

fn sub_action_from_wit(name: &str) -> Result<SubAction, String> {
    SubAction::ALL
        .into_iter()
        .find(|&s| wit_sub_action(s) == name)
        .ok_or_else(|| format!("unknown sub_action {name:?}"))
}

fn b64_list(items: &[Vec<u8>]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|d| Value::from(BASE64.encode(d)))
            .collect(),
    )
}

/// The validated connector's TLS profile as the vectors write it (README).
fn tls_json(connector: &openai_connector::config::Connector) -> Value {
    let Some(profile) = connector.tls_profile() else {
        return Value::Null;
    };
    let mut out = Object::default();
    let verification = match profile.verification {
        VerificationMode::Full => "full",
        VerificationMode::Certificate => "certificate",
        VerificationMode::None => "none",
    };
    out.insert("verification".into(), Value::from(verification));
    let identity = profile.identity.as_ref().map_or(Value::Null, |i| {
        let mut id = Object::default();
        let format = match i.key_format {
            KeyFormat::Pkcs8 => "pkcs8",
            KeyFormat::Pkcs1 => "pkcs1",
            KeyFormat::Sec1 => "sec1",
        };
        id.insert("key_format".into(), Value::from(format));
        id.insert("chain_der_base64".into(), b64_list(&i.chain_der));
        id.insert("key_der_bytes".into(), Value::from(i.key_der.len() as u64));
        Value::Object(id)
    });
    out.insert("identity".into(), identity);
    out.insert("ca_der_base64".into(), b64_list(&profile.ca_der));
    Value::Object(out)
}

fn run_validation(case: &Value) -> Result<(), String> {
    let input = Input::from(case)?;
    let expect = field(case, "expect")?;
    let result = input.definition().validate(&input.deployment);
    match (result, expect.get("valid"), expect.get("errors")) {
        (Ok(connector), Some(want), None) => {
            expect_eq(
                "provider",
                provider_name(connector.config.provider),
                &string(want, "provider")?,
            )?;
            expect_eq(
                "connector_json",
                actions::connector_json(&connector),
                string(want, "connector_json")?,
            )?;
            expect_eq(
                "tls",
                tls_json(&connector).to_json(),
                field(want, "tls")?.to_json(),
            )
        }
        (Err(errors), None, Some(want)) => check_errors(&input, &errors, want),
        (Ok(connector), None, Some(_)) => Err(format!(
            "valid, expected errors: {}",
            actions::connector_json(&connector)
        )),
        (Err(errors), Some(_), None) => Err(format!("invalid, expected valid: {errors:?}")),
        _ => Err("`expect` must hold exactly one of `valid` or `errors`".into()),
    }
}

fn run_request(case: &Value) -> Result<(), String> {
    let input = Input::from(case)?;
    let params_json = json_text(case, "params")?;
    let expect = field(case, "expect")?;
    let connector = match input.definition().validate(&input.deployment) {
        Ok(connector) => connector,
        Err(errors) => {
            return match expect.get("invalid_connector") {
                Some(want) => check_errors(&input, &errors, want),
                None => Err(format!("invalid connector: {errors:?}")),
            };
        }
    };
    let plan = match plan::plan(&connector, &input.deployment, &params_json) {
        Ok(plan) => plan,
        Err(failure) => {
            return match expect.get("refused") {
                Some(want) => check_failure(Some(&input), &failure, want),
                None => Err(format!("refused: {failure:?}")),
            };
        }
    };
    let Some(want) = expect.get("request") else {
        return Err(format!(
            "built a request, expected a refusal: {}",
            String::from_utf8_lossy(&plan.request.body)
        ));
    };
    expect_eq(
        "sub_action",
        wit_sub_action(plan.params.sub_action),
        &string(want, "sub_action")?,
    )?;
    expect_eq(
        "streaming",
        Value::Bool(plan.params.stream),
        field(want, "streaming")?.clone(),
    )?;
    expect_eq("method", plan.request.method, string(want, "method")?)?;
    expect_eq("url", plan.request.url, string(want, "url")?)?;
    let headers = match field(want, "headers")? {
        Value::Array(pairs) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(n), Value::String(v)]) => Ok((n.clone(), v.clone())),
                _ => Err("`headers` must hold [name, value] string pairs".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("`headers` must be an array".into()),
    };
    expect_eq("headers", plan.request.headers, headers)?;
    expect_eq("body", plan.request.body, bytes(want, "body")?)?;
    expect_eq(
        "total_timeout_ms",
        plan.total_timeout_ms,
        u64_of(want, "total_timeout_ms")?,
    )?;
    expect_eq(
        "idle_timeout_ms",
        plan.idle_timeout_ms,
        opt_u64(want, "idle_timeout_ms")?,
    )
}

fn usage_json(u: TokenUsage) -> String {
    let source = match u.source {
        UsageSource::Reported => "reported",
        UsageSource::Estimated => "estimated",
        UsageSource::Unavailable => "unavailable",
    };
    format!(
        r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"source":"{source}"}}"#,
        u.prompt_tokens, u.completion_tokens, u.total_tokens
    )
}

fn run_response(case: &Value) -> Result<(), String> {
    let sub_action = sub_action_from_wit(&string(case, "sub_action")?)?;
    let body = bytes(case, "body")?;
    let expect = field(case, "expect")?;
    // As `responses.map-success` in src/component/mod.rs: failures get C75, retry true.
    match (
        response::map_success(sub_action, &body),
        expect.get("failure"),
    ) {
        (Ok((data, usage)), None) => {
            expect_eq("data", data.to_json(), string(expect, "data")?)?;
            expect_eq(
                "usage",
                usage_json(usage),
                field(expect, "usage")?.to_json(),
            )
        }
        (Err(message), Some(want)) => {
            let failure = Failure::response_invalid(message, None, None);
            check_failure(None, &failure, want)
        }
        (Ok((data, _)), Some(_)) => Err(format!("mapped, expected a failure: {}", data.to_json())),
        (Err(message), None) => Err(format!("failed, expected data: {message}")),
    }
}

fn run_error(case: &Value) -> Result<(), String> {
    let status = u16::try_from(u64_of(case, "status")?).map_err(|_| "status over 65535")?;
    let body = bytes(case, "body")?;
    // As `responses.map-http-error` in src/component/mod.rs.
    let failure = Failure::http(status, &body, None);
    check_failure(None, &failure, field(case, "expect")?)
}

/// An event as compared: type, data, id, retry in decimal. (`retry` may be written in a vector
/// as a number or, above 2^53 where JavaScript's numbers stop being exact, a decimal string.)
type EventRow = (String, String, Option<String>, Option<String>);

fn event_row(e: &sse::Event) -> EventRow {
    (
        e.event_type.clone(),
        e.data.clone(),
        e.last_event_id.clone(),
        e.retry.map(|r| r.to_string()),
    )
}

fn expected_event(v: &Value) -> Result<EventRow, String> {
    let id = match field(v, "id")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("event `id` must be a string or null".into()),
    };
    let retry = match field(v, "retry")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.as_str().to_owned()),
        _ => return Err("event `retry` must be a number, a decimal string or null".into()),
    };
    Ok((string(v, "type")?, string(v, "data")?, id, retry))
}

/// Feeds `chunks`, then finishes: the events and the error, as the component returns them.
/// With `frames`, through `Decoder::feed_frames`, raw data decoded as `feed-raw-spans`'s
/// caller does.
fn decode(chunks: &[&[u8]], max: usize, frames: bool) -> (Vec<sse::Event>, Option<String>) {
    let mut decoder = sse::Decoder::with_max_event_bytes(max);
    let mut events = Vec::new();
    for chunk in chunks {
        let result = if frames {
            decoder.feed_frames(chunk, &mut |e| events.push(e.to_event()))
        } else {
            decoder.feed(chunk, &mut events)
        };
        if let Err(e) = result {
            return (events, Some(e.to_string()));
        }
    }
    let error = decoder.finish(&mut events).err().map(|e| e.to_string());
    (events, error)
}

fn max_event_bytes(expect: &Value) -> Result<usize, String> {
    Ok(opt_u64(expect, "max_event_bytes")?.map_or(sse::MAX_SSE_EVENT_BYTES, |m| m as usize))
}

/// One SSE vector (`NAME.sse` + `NAME.json`), decoded whole, one byte at a time and split in
/// two at every offset, by `feed` and by `feed_frames`: every way gives the expected events
/// and error.
fn run_sse(input: &[u8], expect: &Value) -> Result<(), String> {
    let max = max_event_bytes(expect)?;
    let want_events = match field(expect, "events")? {
        Value::Array(events) => events
            .iter()
            .map(expected_event)
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("`events` must be an array".into()),
    };
    let want_error = match field(expect, "error")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("`error` must be a string or null".into()),
    };
    let mut splittings: Vec<(String, Vec<&[u8]>)> = vec![
        ("whole".into(), vec![input]),
        ("one byte at a time".into(), input.chunks(1).collect()),
    ];
    for i in 0..=input.len() {
        splittings.push((format!("split at {i}"), vec![&input[..i], &input[i..]]));
    }
    for (how, chunks) in splittings {
        for frames in [false, true] {
            let (events, error) = decode(&chunks, max, frames);
            let events: Vec<EventRow> = events.iter().map(event_row).collect();
            let how = if frames {
                format!("{how}, frames")
            } else {
                how.clone()
            };
            expect_eq(&format!("events ({how})"), &events, &want_events)?;
            expect_eq(&format!("error ({how})"), &error, &want_error)?;
        }
    }
    Ok(())
}

/// One chat vector: the SSE input decoded whole, every event's data pushed to a chat stream.
fn run_chat(input: &[u8], expect: &Value) -> Result<(), String> {
    let (events, error) = sse::decode_all(input, max_event_bytes(expect)?);
    if let Some(error) = error {
        return Err(format!("the SSE input does not decode: {error}"));
    }
    let mut stream = chat_stream::ChatStream::new();
    let mut deltas = Vec::new();
    let mut errors = Vec::new();
    // As `sse.chat-stream.push` in src/component/sse_wire.rs, with the event's type (C96a).
    for event in &events {
        match stream.push_event(&event.event_type, &event.data) {
            Ok(chat_stream::Step::Chunk(chunk)) => {
                deltas.extend(chunk.deltas().iter().map(chat_stream::Delta::to_json));
            }
            Ok(chat_stream::Step::Skipped | chat_stream::Step::Done) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let want_deltas = strings(expect, "deltas")?;
    let want_final = string(expect, "final")?;
    expect_eq("deltas", deltas, want_deltas.clone())?;
    expect_eq("push errors", errors, strings(expect, "push_errors")?)?;
    expect_eq("final", stream.finish().to_json(), want_final.clone())?;
    // As `sse.chat-decoder`: bytes in, delta lines out, whole and one byte at a time.
    for (how, size) in [
        ("chat decoder, whole", input.len().max(1)),
        ("chat decoder, bytewise", 1),
    ] {
        let mut decoder = chat_stream::ChatDecoder::new(max_event_bytes(expect)?);
        let mut lines = String::new();
        for piece in input.chunks(size) {
            decoder
                .feed(piece, &mut lines)
                .map_err(|e| format!("{how}: {e}"))?;
        }
        decoder.finish().map_err(|e| format!("{how}: {e}"))?;
        let lines: Vec<String> = lines.lines().map(str::to_owned).collect();
        expect_eq(&format!("deltas ({how})"), lines, want_deltas.clone())?;
        expect_eq(
            &format!("final ({how})"),
            decoder.completion_json(),
            want_final.clone(),
        )?;
    }
    Ok(())
}

/// What a Responses decoder gave for one way of feeding a vector: the events (each as
/// `ResponsesEvent::to_json`, parsed), the assembly and the decoding error.
fn responses_decode(chunks: &[&[u8]], max: usize) -> (Vec<Value>, Value, Option<String>) {
    let mut decoder = ResponsesDecoder::new(max);
    let mut events = Vec::new();
    let mut error = None;
    for chunk in chunks {
        if let Err(e) = decoder.feed(chunk, Some(&mut events)) {
            error = Some(e.to_string());
            break;
        }
    }
    if error.is_none() {
        error = decoder.finish().err().map(|e| e.to_string());
    }
    let stream = decoder.stream();
    let calls: Vec<Value> = stream
        .function_calls()
        .iter()
        .map(|c| {
            let mut call = Object::default();
            call.insert("call_id".into(), Value::from(c.call_id.as_str()));
            call.insert("name".into(), Value::from(c.name.as_str()));
            call.insert("arguments".into(), Value::from(c.arguments.as_str()));
            Value::Object(call)
        })
        .collect();
    let usage = match stream.usage() {
        Some(u) => Value::parse(
            format!(
                r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
                u.prompt_tokens, u.completion_tokens, u.total_tokens
            )
            .as_bytes(),
        )
        .expect("usage JSON"),
        None => Value::Null,
    };
    let end = match stream.end() {
        None => Value::Null,
        Some(end) => {
            let mut out = Object::default();
            let (kind, detail) = match end {
                End::Completed => ("completed", None),
                End::Incomplete(reason) => ("incomplete", Some(("reason", reason))),
                End::Failed(message) => ("failed", Some(("message", message))),
                End::Error(message) => ("error", Some(("message", message))),
            };
            out.insert("type".into(), Value::from(kind));
            if let Some((key, text)) = detail {
                out.insert(key.into(), Value::from(text.as_str()));
            }
            Value::Object(out)
        }
    };
    let mut assembled = Object::default();
    assembled.insert("output_text".into(), Value::from(stream.output_text()));
    assembled.insert("function_calls".into(), Value::Array(calls));
    assembled.insert("usage".into(), usage);
    assembled.insert("end".into(), end);
    let events = events
        .iter()
        .map(|e| Value::parse(e.to_json().as_bytes()).expect("event JSON"))
        .collect();
    (events, Value::Object(assembled), error)
}

/// One Responses-stream vector (`NAME.sse` + `NAME.json`), fed whole, one byte at a time and
/// split in two at every offset: every way gives the expected events, assembly and error.
fn run_responses_stream(input: &[u8], expect: &Value) -> Result<(), String> {
    let max = max_event_bytes(expect)?;
    let want_events = match field(expect, "events")? {
        Value::Array(events) => events.clone(),
        _ => return Err("`events` must be an array".into()),
    };
    let mut want = Object::default();
    for key in ["output_text", "function_calls", "usage", "end"] {
        want.insert(key.into(), field(expect, key)?.clone());
    }
    let want = Value::Object(want);
    let want_error = match field(expect, "error")? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err("`error` must be a string or null".into()),
    };
    let bytewise: Vec<&[u8]> = input.chunks(1).collect();
    let mut ways: Vec<(String, Vec<&[u8]>)> =
        vec![("whole".into(), vec![input]), ("bytewise".into(), bytewise)];
    for at in 1..input.len() {
        ways.push((format!("split at {at}"), vec![&input[..at], &input[at..]]));
    }
    for (how, chunks) in ways {
        let (events, assembled, error) = responses_decode(&chunks, max);
        if events != want_events {
            let got: Vec<String> = events.iter().map(Value::to_json).collect();
            let wanted: Vec<String> = want_events.iter().map(Value::to_json).collect();
            expect_eq(&format!("events ({how})"), got, wanted)?;
        }
        if assembled != want {
            expect_eq(
                &format!("assembly ({how})"),
                assembled.to_json(),
                want.to_json(),
            )?;
        }
        expect_eq(&format!("error ({how})"), &error, &want_error)?;
    }
    Ok(())
}

#[test]
fn shared_vectors() {
    let mut failures = String::new();
    let mut counts = Vec::new();
    type Runner = fn(&Value) -> Result<(), String>;
    let json_kinds: [(&str, Runner); 4] = [
        ("validation", run_validation),
        ("requests", run_request),
        ("responses", run_response),
        ("errors", run_error),
    ];
    for (kind, run) in json_kinds {
        let mut count = 0;
        for path in files(kind, "json") {
            for (i, case) in cases(&path).iter().enumerate() {
                count += 1;
                let name = case.get("name").and_then(Value::as_str).unwrap_or("?");
                if let Err(e) = run(case) {
                    let file = path.file_name().unwrap_or_default().to_string_lossy();
                    let _ = writeln!(failures, "{kind}/{file} case {i} ({name}): {e}");
                }
            }
        }
        counts.push((kind, count));
    }
    type StreamRunner = fn(&[u8], &Value) -> Result<(), String>;
    let stream_kinds: [(&str, StreamRunner); 3] = [
        ("sse", run_sse),
        ("chat", run_chat),
        ("responses-stream", run_responses_stream),
    ];
    for (kind, run) in stream_kinds {
        let mut count = 0;
        for path in files(kind, "sse") {
            count += 1;
            let input = std::fs::read(&path).expect("read the .sse file");
            let expect = read_json(&path.with_extension("json"));
            if let Err(e) = run(&input, &expect) {
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                let _ = writeln!(failures, "{kind}/{file}: {e}");
            }
        }
        counts.push((kind, count));
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!("vectors (rust): {total} ({})", summary.join(", "));
    assert!(failures.is_empty(), "vector mismatches:\n{failures}");
}
