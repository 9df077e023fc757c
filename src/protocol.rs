//! The gateway protocol, once: what the `gateway` world (`crate::gateway`) and the harness's
//! `serve` and CLI answer. Pure: statuses, headers and body bytes, no I/O.
//!
//! Routes shape their errors one of two ways: OpenAI's (chat completions, Responses, embeddings,
//! models: `{"error": {"message", "type", "param", "code"}}`, which the SDKs turn into typed
//! exceptions) and Kibana's `_execute` (`{"statusCode", "error", "message"}` for refusals, the
//! C77 shape for executions). A failed execution's status comes from its
//! [`FailureKind`], never from its message.

use crate::failure::{Failure, FailureKind};
use crate::json::{Object, Value};
use crate::response::reason_phrase;

/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Kibana's fixed top-level message of a failed execution (C77).
pub const FAILURE_MESSAGE: &str = "an error occurred while running the action";
/// The message of a request without the right token.
const UNAUTHORIZED_MESSAGE: &str = "missing or wrong token: send Authorization: Bearer <token>";

/// The routes a gateway answers for a connector; each shapes its errors its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `/_execute`: Kibana's shapes.
    Execute,
    /// `/v1/chat/completions`: OpenAI's `{"error": {...}}`.
    ChatCompletions,
    /// `POST /v1/responses`: OpenAI's Responses API (the `responses` sub-action), OpenAI's
    /// error shape.
    Responses,
    /// `POST /v1/embeddings`: the `embeddings` sub-action, OpenAI's error shape.
    Embeddings,
    /// `GET /v1/models`: answered from the connectors' `defaultModel`, without an execution.
    Models,
}

impl Route {
    /// The OpenAI route of a path's segments after `/v1/` (`["chat", "completions"]`,
    /// `["responses"]`, `["embeddings"]`, `["models"]`), for every gateway.
    pub fn openai(rest: &[&str]) -> Option<Route> {
        match rest {
            ["chat", "completions"] => Some(Route::ChatCompletions),
            ["responses"] => Some(Route::Responses),
            ["embeddings"] => Some(Route::Embeddings),
            ["models"] => Some(Route::Models),
            _ => None,
        }
    }

    /// The routes that run executions (each counted in the metrics), in label order.
    pub const EXECUTIONS: [Route; 4] = [
        Route::Execute,
        Route::ChatCompletions,
        Route::Responses,
        Route::Embeddings,
    ];

    /// Whether errors take OpenAI's shape (every route but Kibana's `_execute`).
    pub fn is_openai(self) -> bool {
        self != Route::Execute
    }

    /// The sub-action an OpenAI route's request body is the `body` of (cli.md "serve").
    fn sub_action(self) -> Option<&'static str> {
        match self {
            Route::ChatCompletions => Some("stream"),
            Route::Responses => Some("responses"),
            Route::Embeddings => Some("embeddings"),
            Route::Execute | Route::Models => None,
        }
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON body.
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::json_text(status, value.to_json())
    }

    /// A JSON body given as text (which the caller guarantees is JSON).
    pub fn json_text(status: u16, text: String) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: text.into_bytes(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A JSON object from its entries, in order.
pub(crate) fn object(entries: Vec<(&str, Value)>) -> Value {
    let mut map = Object::default();
    for (k, v) in entries {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

/// OpenAI's error body.
pub fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Reply {
    Reply::json(
        status,
        &object(vec![(
            "error",
            object(vec![
                ("message", Value::from(message)),
                ("type", Value::from(kind)),
                ("param", Value::Null),
                ("code", code.map_or(Value::Null, Value::from)),
            ]),
        )]),
    )
}

/// Kibana's error body.
pub fn kibana_error(status: u16, message: &str) -> Reply {
    Reply::json(
        status,
        &object(vec![
            ("statusCode", Value::from(u64::from(status))),
            (
                "error",
                Value::from(reason_phrase(status).unwrap_or("Error")),
            ),
            ("message", Value::from(message)),
        ]),
    )
}

/// A refusal in the route's shape (`type` is `server_error` from 500 on).
pub fn route_error(route: Route, status: u16, message: &str, code: Option<&str>) -> Reply {
    if route.is_openai() {
        let kind = if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        openai_error(status, message, kind, code)
    } else {
        kibana_error(status, message)
    }
}

/// `405` naming the method to use.
pub fn method_not_allowed(allow: &str, route: Route) -> Reply {
    route_error(route, 405, &format!("use {allow}"), None).with_header("allow", allow)
}

/// `401` with `WWW-Authenticate: Bearer`.
pub fn unauthorized(route: Route) -> Reply {
    if route.is_openai() {
        openai_error(
            401,
            UNAUTHORIZED_MESSAGE,
            "invalid_request_error",
            Some("invalid_api_key"),
        )
    } else {
        kibana_error(401, UNAUTHORIZED_MESSAGE)
    }
    .with_header("www-authenticate", "Bearer")
}

/// `404` for a connector id that is not served; `serving` names the one connector a
/// single-connector gateway serves.
pub fn connector_not_found(route: Route, id: &str, serving: Option<&str>) -> Reply {
    if !route.is_openai() {
        return kibana_error(404, &format!("Saved object [action/{id}] not found"));
    }
    let message = match serving {
        Some(served) => format!("no connector with id \"{id}\" (this gateway serves \"{served}\")"),
        None => format!("no connector with id \"{id}\""),
    };
    openai_error(
        404,
        &message,
        "invalid_request_error",
        Some("connector_not_found"),
    )
}

/// The answer when the request body is larger than [`MAX_REQUEST_BYTES`].
pub fn body_too_large(route: Route) -> Reply {
    route_error(
        route,
        413,
        &format!("request body larger than {MAX_REQUEST_BYTES} bytes"),
        None,
    )
}

/// Why a request was not admitted to an execution slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No slot within the queue timeout (the waits of its client and connector included).
    QueueTimeout,
    /// The gateway is shutting down: nothing new starts.
    ShuttingDown,
}

/// The answer to a request that was not admitted: `503` with `Retry-After` (whole seconds), in
/// the route's shape. Nothing reached the component or the upstream.
pub fn not_admitted(route: Route, refusal: Refusal, retry_after_secs: u64) -> Reply {
    let message = match refusal {
        Refusal::QueueTimeout => {
            "the gateway is at capacity: no execution slot became free in time; retry later"
        }
        Refusal::ShuttingDown => "the gateway is shutting down; retry on another instance",
    };
    let code = match refusal {
        Refusal::QueueTimeout => "queue_timeout",
        Refusal::ShuttingDown => "shutting_down",
    };
    route_error(route, 503, message, Some(code))
        .with_header("retry-after", &retry_after_secs.max(1).to_string())
}

/// A client limit of a token entry (cli.md "Client limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateLimit {
    /// `requestsPerMinute`.
    RequestsPerMinute,
    /// `tokensPerMinute`.
    TokensPerMinute,
    /// `concurrentRequests`.
    ConcurrentRequests,
}

impl RateLimit {
    /// Every limit, in the order the docs list them.
    pub const ALL: [RateLimit; 3] = [
        RateLimit::RequestsPerMinute,
        RateLimit::TokensPerMinute,
        RateLimit::ConcurrentRequests,
    ];

    /// The key in a client tokens entry's `limits`.
    pub fn key(self) -> &'static str {
        match self {
            RateLimit::RequestsPerMinute => "requestsPerMinute",
            RateLimit::TokensPerMinute => "tokensPerMinute",
            RateLimit::ConcurrentRequests => "concurrentRequests",
        }
    }

    /// The error `code` (and metric label): the key in snake case.
    pub fn code(self) -> &'static str {
        match self {
            RateLimit::RequestsPerMinute => "requests_per_minute",
            RateLimit::TokensPerMinute => "tokens_per_minute",
            RateLimit::ConcurrentRequests => "concurrent_requests",
        }
    }
}

/// The answer to a request over one of its token's client limits: `429` with `Retry-After`
/// (whole seconds, at least 1); OpenAI-shaped with `type: "rate_limit_exceeded"` and the
/// limit as `code`, or Kibana-shaped on `_execute`. Nothing reached the component or the
/// upstream.
pub fn rate_limited(route: Route, limit: RateLimit, retry_after_secs: u64) -> Reply {
    let message = match limit {
        RateLimit::RequestsPerMinute => {
            "rate limit reached: this token's requests per minute (requestsPerMinute) are used up; retry after the time in Retry-After"
        }
        RateLimit::TokensPerMinute => {
            "rate limit reached: this token's tokens per minute (tokensPerMinute) are used up; retry after the time in Retry-After"
        }
        RateLimit::ConcurrentRequests => {
            "rate limit reached: this token has as many requests in flight as it may (concurrentRequests); retry when one has finished"
        }
    };
    if route.is_openai() {
        openai_error(429, message, "rate_limit_exceeded", Some(limit.code()))
    } else {
        kibana_error(429, message)
    }
    .with_header("retry-after", &retry_after_secs.max(1).to_string())
}

/// The answer when the request body did not arrive within the body timeout.
pub fn body_timeout(route: Route) -> Reply {
    route_error(
        route,
        408,
        "the request body did not arrive in time",
        Some("request_timeout"),
    )
    .with_header("connection", "close")
}

/// The answer when the request body could not be read.
pub fn body_unreadable(route: Route, detail: &str) -> Reply {
    route_error(
        route,
        400,
        &format!("cannot read the request body: {detail}"),
        None,
    )
}

/// The execution params for a route's request body: for an OpenAI route, its sub-action's
/// params with the body as `body` (chat completions: the `stream` sub-action, with `stream`
/// taken from the body; Responses and embeddings: the `responses` and `embeddings`
/// sub-actions, which read `stream` from the body themselves); for Kibana's `_execute`, the
/// `params` of the body (`{"params": {...}}`). `/v1/models` runs nothing: `405`.
pub fn params(route: Route, body: &[u8]) -> Result<String, Reply> {
    match route.sub_action() {
        Some(sub_action) => openai_params(route, sub_action, body),
        None if route == Route::Execute => execute_params(body),
        None => Err(method_not_allowed("GET", route)),
    }
}

fn openai_params(route: Route, sub_action: &str, body: &[u8]) -> Result<String, Reply> {
    let bad = |message: &str| openai_error(400, message, "invalid_request_error", None);
    let text = std::str::from_utf8(body).map_err(|_| bad("the request body is not UTF-8"))?;
    let stream = match Value::parse(body) {
        Ok(Value::Object(map)) => map.get("stream") == Some(&Value::Bool(true)),
        Ok(_) => return Err(bad("the request body must be a JSON object")),
        Err(e) => return Err(bad(&format!("the request body is not valid JSON: {e}"))),
    };
    let mut sub_action_params = vec![("body", Value::from(text))];
    if route == Route::ChatCompletions {
        sub_action_params.push(("stream", Value::Bool(stream)));
    }
    Ok(object(vec![
        ("subAction", Value::from(sub_action)),
        ("subActionParams", object(sub_action_params)),
    ])
    .to_json())
}

fn execute_params(body: &[u8]) -> Result<String, Reply> {
    let bad = |message: &str| kibana_error(400, message);
    let value =
        Value::parse(body).map_err(|e| bad(&format!("[request body]: not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("[request body]: expected value of type [object]"));
    };
    if let Some(other) = map.keys().find(|k| *k != "params") {
        return Err(bad(&format!(
            "[request body.{other}]: definition for this key is missing"
        )));
    }
    match map.get("params") {
        Some(params @ Value::Object(_)) => Ok(params.to_json()),
        Some(_) => Err(bad(
            "[request body.params]: expected value of type [object]",
        )),
        None => Err(bad(
            "[request body.params]: expected value of type [object] but got [undefined]",
        )),
    }
}

/// Kibana's success shape: `{"connector_id", "status": "ok", "data"}`, with `data_json`
/// embedded as it is so that numbers keep their spelling (C40).
pub fn success_json(connector_id: &str, data_json: &str) -> String {
    format!(
        r#"{{"connector_id":{},"status":"ok","data":{data_json}}}"#,
        Value::from(connector_id).to_json()
    )
}

/// Kibana's failure shape (C77).
pub fn failure_json(connector_id: &str, failure: &Failure) -> String {
    object(vec![
        ("connector_id", Value::from(connector_id)),
        ("status", Value::from("error")),
        ("message", Value::from(FAILURE_MESSAGE)),
        (
            "service_message",
            Value::from(failure.service_message.as_str()),
        ),
        ("retry", Value::Bool(failure.retry)),
    ])
    .to_json()
}

/// The response of an execution that has ended; `data_json` is Kibana's `data` as JSON text.
pub fn ended(connector_id: &str, route: Route, outcome: Result<&str, &Failure>) -> Reply {
    match (route, outcome) {
        (Route::Execute, Ok(data)) => Reply::json_text(200, success_json(connector_id, data)),
        // Kibana answers 200 for `status: error` too, sandbox failures aside.
        (Route::Execute, Err(failure)) if failure.kind == FailureKind::Sandbox => {
            Reply::json_text(500, failure_json(connector_id, failure))
        }
        (Route::Execute, Err(failure)) => {
            Reply::json_text(200, failure_json(connector_id, failure))
        }
        (_, Ok(data)) => Reply::json_text(200, data.to_owned()),
        (_, Err(failure)) if failure.kind == FailureKind::Sandbox => openai_error(
            500,
            &failure.service_message,
            "server_error",
            Some("sandbox_failure"),
        ),
        (_, Err(failure)) => {
            let status = openai_status(failure);
            openai_error(
                status,
                &failure.service_message,
                openai_error_type(status),
                None,
            )
        }
    }
}

/// The status an OpenAI client should see for a failed execution: the upstream's error status
/// (C70), 400 for invalid params, 404 when the connector's URL has no counterpart for the
/// route (`not-mapped`), 504 for timeouts, 500 when the sandbox stopped the guest, 502
/// otherwise.
pub fn openai_status(failure: &Failure) -> u16 {
    match failure.kind {
        FailureKind::Http { status } if (400..600).contains(&status) => status,
        FailureKind::Params => 400,
        FailureKind::NotMapped => 404,
        FailureKind::Timeout => 504,
        FailureKind::Sandbox => 500,
        _ => 502,
    }
}

/// OpenAI's error `type` for a status.
fn openai_error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "upstream_error",
    }
}

/// Status and headers of a streamed response.
pub fn stream_head() -> (u16, Vec<(String, String)>) {
    (
        200,
        vec![
            ("content-type".into(), "text/event-stream".into()),
            ("cache-control".into(), "no-cache".into()),
        ],
    )
}

/// A parsed chunk of `invokeAsyncIterator` as an SSE event (C42).
pub fn chunk_event(chunk_json: &str) -> Vec<u8> {
    format!("data: {chunk_json}\n\n").into_bytes()
}

/// The SSE event that tells the client a stream failed after it began, if it needs one. OpenAI
/// SDKs (Python and Node) raise an error for an event whose data holds an `error` object.
///
/// On the Responses route a `stream` failure is the upstream's own `response.failed` or `error`
/// event, which the client has already received as it was: nothing is added after it. Any
/// other failure (the connection reset, a timeout, a body that ended before
/// `response.completed`, which is `response-invalid`) ends the stream with a Responses `error`
/// event (`type`, `code`, `message`, `param`) that also holds the `error` object, so that the
/// SDKs raise it and a client reading the typed events sees it as one.
pub fn stream_error_event(connector_id: &str, route: Route, failure: &Failure) -> Option<Vec<u8>> {
    let error = || {
        object(vec![
            ("message", Value::from(failure.service_message.as_str())),
            ("type", Value::from("upstream_error")),
            ("param", Value::Null),
            ("code", Value::Null),
        ])
    };
    let event = match route {
        Route::Execute => format!(
            "event: error\ndata: {}\n\n",
            failure_json(connector_id, failure)
        ),
        Route::Responses if failure.kind == FailureKind::Stream => return None,
        Route::Responses => format!(
            "event: error\ndata: {}\n\n",
            object(vec![
                ("type", Value::from("error")),
                ("code", Value::from("upstream_error")),
                ("message", Value::from(failure.service_message.as_str())),
                ("param", Value::Null),
                ("error", error()),
            ])
            .to_json()
        ),
        Route::ChatCompletions | Route::Embeddings | Route::Models => {
            format!("data: {}\n\n", object(vec![("error", error())]).to_json())
        }
    };
    Some(event.into_bytes())
}

/// `GET /v1/models`: OpenAI's model list, from `(model, owner)` pairs in order, each model once
/// (the first owner kept). `created` is 0: a connector does not know when its model was made.
pub fn models(models: &[(&str, &str)]) -> Reply {
    let mut seen: Vec<&str> = Vec::new();
    let mut data = Vec::new();
    for &(id, owner) in models {
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        data.push(object(vec![
            ("id", Value::from(id)),
            ("object", Value::from("model")),
            ("created", Value::from(0u64)),
            ("owned_by", Value::from(owner)),
        ]));
    }
    Reply::json(
        200,
        &object(vec![
            ("object", Value::from("list")),
            ("data", Value::Array(data)),
        ]),
    )
}

/// `true` when there is exactly one `Authorization` header and it is `Bearer <expected>`,
/// compared in constant time.
pub fn bearer_matches(authorization: &[impl AsRef<[u8]>], expected: &[u8]) -> bool {
    let [value] = authorization else {
        return false;
    };
    bearer_token(value.as_ref()).is_some_and(|token| constant_time_eq(token, expected))
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme_end = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(scheme_end);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Compares in time that does not depend on where the first difference is.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind) -> Failure {
        Failure {
            kind,
            upstream_status: None,
            service_message: "m".into(),
            retry: true,
        }
    }

    #[test]
    fn refusals_are_503_with_retry_after_in_the_route_shape() {
        let r = not_admitted(Route::ChatCompletions, Refusal::QueueTimeout, 0);
        assert_eq!(r.status, 503);
        assert!(r.headers.contains(&("retry-after".into(), "1".into())));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains(r#""type":"server_error""#), "{body}");
        assert!(body.contains(r#""code":"queue_timeout""#), "{body}");
        let r = not_admitted(Route::Execute, Refusal::ShuttingDown, 5);
        assert!(r.headers.contains(&("retry-after".into(), "5".into())));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains(r#""statusCode":503"#), "{body}");
        assert!(body.contains("shutting down"), "{body}");
        let r = body_timeout(Route::ChatCompletions);
        assert_eq!(r.status, 408);
    }

    #[test]
    fn rate_limited_is_429_with_retry_after_in_the_route_shape() {
        let r = rate_limited(Route::ChatCompletions, RateLimit::TokensPerMinute, 0);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after".into(), "1".into())));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains(r#""type":"rate_limit_exceeded""#), "{body}");
        assert!(body.contains(r#""code":"tokens_per_minute""#), "{body}");
        assert!(body.contains("tokensPerMinute"), "{body}");
        let r = rate_limited(Route::Execute, RateLimit::RequestsPerMinute, 42);
        assert!(r.headers.contains(&("retry-after".into(), "42".into())));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains(r#""statusCode":429"#), "{body}");
        assert!(body.contains("requestsPerMinute"), "{body}");
    }

    #[test]
    fn openai_statuses() {
        assert_eq!(
            openai_status(&failure(FailureKind::Http { status: 429 })),
            429
        );
        assert_eq!(openai_status(&failure(FailureKind::Timeout)), 504);
        assert_eq!(
            openai_status(&failure(FailureKind::Transport {
                code: "ECONNREFUSED".into()
            })),
            502
        );
        assert_eq!(openai_status(&failure(FailureKind::Params)), 400);
        // The connector's URL has no counterpart for the route's API.
        assert_eq!(openai_status(&failure(FailureKind::NotMapped)), 404);
        // A status that is not an error status is not passed on.
        assert_eq!(
            openai_status(&failure(FailureKind::Http { status: 302 })),
            502
        );
    }

    /// cli.md "serve": Responses and embeddings bodies become their sub-actions' `body`; bad
    /// bodies get OpenAI's 400.
    #[test]
    fn openai_routes_params() {
        let body = br#"{"model":"m","input":"Hi","stream":true}"#;
        assert_eq!(
            params(Route::Responses, body).unwrap(),
            r#"{"subAction":"responses","subActionParams":{"body":"{\"model\":\"m\",\"input\":\"Hi\",\"stream\":true}"}}"#
        );
        assert_eq!(
            params(Route::Embeddings, br#"{"input":"Hi"}"#).unwrap(),
            r#"{"subAction":"embeddings","subActionParams":{"body":"{\"input\":\"Hi\"}"}}"#
        );
        assert_eq!(
            params(Route::ChatCompletions, body).unwrap(),
            r#"{"subAction":"stream","subActionParams":{"body":"{\"model\":\"m\",\"input\":\"Hi\",\"stream\":true}","stream":true}}"#
        );
        for route in [Route::Responses, Route::Embeddings] {
            let r = params(route, b"[1]").unwrap_err();
            assert_eq!(r.status, 400);
            let text = String::from_utf8(r.body).unwrap();
            assert!(text.contains("must be a JSON object"), "{text}");
            assert!(text.contains(r#""type":"invalid_request_error""#), "{text}");
        }
        assert_eq!(params(Route::Models, b"{}").unwrap_err().status, 405);
    }

    /// A Responses stream that failed with the upstream's own `response.failed` or `error`
    /// event ends with nothing added; any other failure ends with an `error` event the SDKs
    /// raise.
    #[test]
    fn responses_stream_errors() {
        assert_eq!(
            stream_error_event("c", Route::Responses, &failure(FailureKind::Stream)),
            None
        );
        let reset = failure(FailureKind::Transport {
            code: "ECONNRESET".into(),
        });
        let event = String::from_utf8(
            stream_error_event("c", Route::Responses, &reset).expect("an error event"),
        )
        .unwrap();
        assert_eq!(
            event,
            "event: error\ndata: {\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"m\",\"param\":null,\"error\":{\"message\":\"m\",\"type\":\"upstream_error\",\"param\":null,\"code\":null}}\n\n"
        );
        // Chat completions keep their event, for a stream failure too.
        let chat = stream_error_event("c", Route::ChatCompletions, &failure(FailureKind::Stream));
        assert!(
            String::from_utf8(chat.unwrap())
                .unwrap()
                .starts_with("data: {\"error\":")
        );
    }

    #[test]
    fn models_lists_each_model_once_in_order() {
        let r = models(&[("a", "c1"), ("b", "c2"), ("a", "c3")]);
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"object":"list","data":[{"id":"a","object":"model","created":0,"owned_by":"c1"},{"id":"b","object":"model","created":0,"owned_by":"c2"}]}"#
        );
        assert_eq!(
            String::from_utf8(models(&[]).body).unwrap(),
            r#"{"object":"list","data":[]}"#
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"\xff\xfe\xfd", b"\x00\x01\x02"));
    }

    #[test]
    fn success_embeds_data_verbatim() {
        assert_eq!(
            success_json("c\"1", r#"{"n":1.50}"#),
            r#"{"connector_id":"c\"1","status":"ok","data":{"n":1.50}}"#
        );
    }
}
