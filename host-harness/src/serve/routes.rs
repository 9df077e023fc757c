//! Request routing and the handlers.

use super::gateway::{Gateway, InFlightGuard};
use super::metrics::Route;
use crate::connector_file::ConnectorFile;
use crate::execution::{Failure, Finished, StreamItem};
use crate::executor::{Executor, Started, Stream};
use crate::outbound::Cancel;
use crate::output;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// Response body: whole, or streamed from a channel.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Stream items buffered between the guest and a slow client; beyond it the guest waits
/// (and so does the upstream read), which keeps memory bounded per stream.
const STREAM_BUFFER_ITEMS: usize = 16;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// Kibana's error body (`{"statusCode", "error", "message"}`).
fn kibana_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({
            "statusCode": status.as_u16(),
            "error": status.canonical_reason().unwrap_or("Error"),
            "message": message,
        }),
    )
}

/// OpenAI's error body (`{"error": {"message", "type", "param", "code"}}`), which the SDKs turn
/// into their typed exceptions.
fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

fn unauthorized(gw: &Gateway, openai: bool) -> Response<Body> {
    gw.metrics.unauthorized();
    let message = "missing or wrong token: send Authorization: Bearer <token>";
    let mut r = if openai {
        openai_error(
            StatusCode::UNAUTHORIZED,
            message,
            "invalid_request_error",
            Some("invalid_api_key"),
        )
    } else {
        kibana_error(StatusCode::UNAUTHORIZED, message)
    };
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The `token` query parameter (dashboard only).
fn query_token(req: &Request<hyper::body::Incoming>) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Dispatches one request; executions run on `executor` (the serving thread's). Authentication
/// happens before the body is read, so a refused request never reaches the component or the
/// upstream.
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    executor: Arc<Executor>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, ["metrics"]) => {
            if !gw.auth.is_admin(req.headers()) {
                return unauthorized(&gw, false);
            }
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                gw.metrics.render(),
            )
        }
        (&Method::GET, ["dashboard"]) | (&Method::GET, ["dashboard", "data"]) => {
            let admin = gw.auth.is_admin(req.headers())
                || gw.auth.admin_token_matches(query_token(&req).as_deref());
            if !admin {
                return unauthorized(&gw, false);
            }
            let mut r = if segments.len() == 1 {
                respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    super::dashboard::PAGE,
                )
            } else {
                json_response(StatusCode::OK, &gw.history.to_json())
            };
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r
        }
        (&Method::GET, ["api", "actions", "connectors"]) => {
            if !gw.auth.is_admin(req.headers()) {
                return unauthorized(&gw, false);
            }
            let list: Vec<Value> = gw
                .catalog
                .iter()
                .map(|c| {
                    let mut v = c.public_json.clone();
                    v["referenced_by_count"] = json!(0);
                    v
                })
                .collect();
            json_response(StatusCode::OK, &Value::Array(list))
        }
        (&Method::GET, ["api", "actions", "connector", id]) => {
            if !gw.auth.is_admin(req.headers()) {
                return unauthorized(&gw, false);
            }
            match gw.catalog.get(id) {
                Some(c) => json_response(StatusCode::OK, &c.public_json),
                None => not_found_connector(id),
            }
        }
        (&Method::POST, ["api", "actions", "connector", id, "_execute"]) => {
            if !gw.auth.is_admin(req.headers()) {
                return unauthorized(&gw, false);
            }
            let id = (*id).to_owned();
            execute_route(gw, executor, &id, req).await
        }
        (&Method::POST, ["connectors", id, "v1", "chat", "completions"]) => {
            if !gw.auth.may_use(req.headers(), id) {
                return unauthorized(&gw, true);
            }
            let id = (*id).to_owned();
            chat_route(gw, executor, &id, req).await
        }
        _ => kibana_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn not_found_connector(id: &str) -> Response<Body> {
    kibana_error(
        StatusCode::NOT_FOUND,
        &format!("Saved object [action/{id}] not found"),
    )
}

/// The request body, or the error response.
async fn read_body(
    req: Request<hyper::body::Incoming>,
    openai: bool,
) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body larger than {MAX_REQUEST_BYTES} bytes"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                )
            };
            Err(if openai {
                openai_error(status, &message, "invalid_request_error", None)
            } else {
                kibana_error(status, &message)
            })
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    params: Box<RawValue>,
}

/// `POST /api/actions/connector/{id}/_execute`: Kibana's response shapes (cli.md "execute").
async fn execute_route(
    gw: Arc<Gateway>,
    executor: Arc<Executor>,
    id: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Some(served) = gw.catalog.get(id) else {
        return not_found_connector(id);
    };
    let connector = served.file.clone();
    let body = match read_body(req, false).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params = match serde_json::from_slice::<ExecuteBody>(&body) {
        Ok(b) if b.params.get().trim_start().starts_with('{') => b.params,
        Ok(_) => {
            return kibana_error(
                StatusCode::BAD_REQUEST,
                "[request body.params]: expected value of type [object]",
            );
        }
        Err(e) => {
            return kibana_error(StatusCode::BAD_REQUEST, &format!("[request body]: {e}"));
        }
    };
    run_execution(
        gw,
        &executor,
        connector,
        params.get().to_owned(),
        Route::Execute,
    )
    .await
}

/// `POST /connectors/{id}/v1/chat/completions`: the body is the `stream` sub-action's body,
/// with `stream` taken from it.
async fn chat_route(
    gw: Arc<Gateway>,
    executor: Arc<Executor>,
    id: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Some(served) = gw.catalog.get(id) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("no connector with id \"{id}\""),
            "invalid_request_error",
            Some("connector_not_found"),
        );
    };
    let connector = served.file.clone();
    let body = match read_body(req, true).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "the request body is not UTF-8",
                "invalid_request_error",
                None,
            );
        }
    };
    let stream = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map.get("stream") == Some(&Value::Bool(true)),
        Ok(_) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "the request body must be a JSON object",
                "invalid_request_error",
                None,
            );
        }
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the request body is not valid JSON (line {} column {}): {e}",
                    e.line(),
                    e.column()
                ),
                "invalid_request_error",
                None,
            );
        }
    };
    let params = json!({
        "subAction": "stream",
        "subActionParams": {"body": text, "stream": stream},
    })
    .to_string();
    run_execution(gw, &executor, connector, params, Route::ChatCompletions).await
}

async fn run_execution(
    gw: Arc<Gateway>,
    executor: &Executor,
    connector: ConnectorFile,
    params: String,
    route: Route,
) -> Response<Body> {
    let started_at = Instant::now();
    let started_wall = SystemTime::now();
    let cancel = Cancel::new();
    let guard = gw.in_flight.enter(&gw.slots, cancel.clone()).await;
    gw.metrics.started(&connector.id, route);
    let started = executor
        .start_cancellable(&connector, &params, cancel.clone())
        .await;
    match started {
        Err(e) => {
            tracing::error!("connector {}: sandbox failure: {e:#}", connector.id);
            let finished = Finished::sandbox_failure(&e, started_wall);
            gw.record(&connector, route, &finished, true, started_at);
            let message = failure_message(&finished);
            match route {
                Route::Execute => json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({
                        "connector_id": connector.id,
                        "status": "error",
                        "message": output::FAILURE_MESSAGE,
                        "service_message": message,
                        "retry": true,
                    }),
                ),
                Route::ChatCompletions => openai_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    "server_error",
                    Some("sandbox_failure"),
                ),
            }
        }
        Ok(Started::InvalidConnector(lines)) => {
            // Validated at start; only a component that changed its mind gets here.
            gw.metrics.finished(&super::metrics::Observation {
                connector: &connector.id,
                route,
                failed: true,
                trapped: false,
                latency: started_at.elapsed(),
                source: "unavailable",
                prompt_tokens: 0,
                completion_tokens: 0,
            });
            json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": {"message": lines.join("\n"), "type": "server_error"}}),
            )
        }
        Ok(Started::Ended(finished)) => {
            gw.record(&connector, route, &finished, false, started_at);
            drop(guard);
            ended_response(&connector, route, &finished)
        }
        Ok(Started::Streaming(stream)) => {
            stream_response(gw, connector, route, stream, cancel, guard, started_at)
        }
    }
}

fn failure_message(finished: &Finished) -> &str {
    match &finished.outcome {
        Err(f) => &f.service_message,
        Ok(_) => "",
    }
}

/// The HTTP status an OpenAI client should see for a failed execution: the upstream's status
/// when there was one (C70), 400 for invalid params, 504 for timeouts, 502 otherwise.
fn openai_status(service_message: &str) -> StatusCode {
    if let Some(rest) = service_message.split("Status code: ").nth(1) {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(code) = digits.parse::<u16>()
            && let Ok(status) = StatusCode::from_u16(code)
            && (400..600).contains(&code)
        {
            return status;
        }
    }
    if service_message.starts_with("Request validation failed")
        || service_message.starts_with("Sub action")
    {
        StatusCode::BAD_REQUEST
    } else if service_message.contains("ECONNABORTED") {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    }
}

fn openai_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "upstream_error",
    }
}

fn ended_response(connector: &ConnectorFile, route: Route, finished: &Finished) -> Response<Body> {
    match (route, &finished.outcome) {
        (Route::Execute, Ok(data)) => {
            match output::success_json(&connector.id, data.as_deref().unwrap_or("null")) {
                Ok(text) => respond(StatusCode::OK, "application/json", text),
                Err(e) => kibana_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
            }
        }
        // Kibana answers 200 for `status: error` too.
        (Route::Execute, Err(failure)) => respond(
            StatusCode::OK,
            "application/json",
            output::failure_json(&connector.id, failure),
        ),
        (Route::ChatCompletions, Ok(data)) => respond(
            StatusCode::OK,
            "application/json",
            data.clone().unwrap_or_else(|| "null".to_owned()),
        ),
        (Route::ChatCompletions, Err(failure)) => {
            let status = openai_status(&failure.service_message);
            openai_error(
                status,
                &failure.service_message,
                openai_error_type(status),
                None,
            )
        }
    }
}

/// A response body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// The SSE event that tells the client a stream failed after it began.
fn stream_error_event(connector: &ConnectorFile, route: Route, failure: &Failure) -> Bytes {
    let text = match route {
        // OpenAI SDKs raise an APIError for a data event holding an `error` object.
        Route::ChatCompletions => format!(
            "data: {}\n\n",
            json!({"error": {"message": failure.service_message, "type": "upstream_error", "param": null, "code": null}})
        ),
        Route::Execute => format!(
            "event: error\ndata: {}\n\n",
            output::failure_json(&connector.id, failure)
        ),
    };
    Bytes::from(text)
}

/// Streams the guest's output to the client as it arrives. A client that goes away cancels
/// the execution (C68); the execution always ends with its event-log line.
fn stream_response(
    gw: Arc<Gateway>,
    connector: ConnectorFile,
    route: Route,
    mut stream: Box<Stream>,
    cancel: Cancel,
    guard: InFlightGuard,
    started_at: Instant,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER_ITEMS);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // Notices a client that left while the upstream is silent.
    let watcher_tx = tx.clone();
    let watcher_cancel = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = watcher_tx.closed() => watcher_cancel.cancel(),
            _ = done_rx => {}
        }
    });
    tokio::spawn(async move {
        let _guard = guard;
        let mut client_gone = false;
        let mut trap = None;
        loop {
            match stream.next().await {
                Ok(Some(item)) => {
                    if client_gone {
                        continue;
                    }
                    let bytes = match item {
                        StreamItem::Bytes(b) => Bytes::from(b),
                        StreamItem::Chunk(json) => Bytes::from(format!("data: {json}\n\n")),
                    };
                    if tx.send(bytes).await.is_err() {
                        client_gone = true;
                        cancel.cancel();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    trap = Some(e);
                    break;
                }
            }
        }
        let (finished, trap) = stream.end(trap).await;
        if let Some(e) = &trap {
            tracing::error!("connector {}: sandbox failure: {e:#}", connector.id);
        }
        if let Err(failure) = &finished.outcome
            && !client_gone
        {
            let _ = tx
                .send(stream_error_event(&connector, route, failure))
                .await;
        }
        drop(tx);
        drop(done_tx);
        gw.record(&connector, route, &finished, trap.is_some(), started_at);
    });
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_statuses() {
        assert_eq!(
            openai_status("Status code: 429. Message: API Error: Too Many Requests"),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            openai_status(
                "Status code: undefined. Message: Unexpected API Error: ECONNABORTED - timeout of 200000ms exceeded"
            ),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            openai_status(
                "Status code: undefined. Message: Unexpected API Error: ECONNREFUSED - connect ECONNREFUSED 127.0.0.1:1"
            ),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            openai_status("Request validation failed ([stream]: expected value of type [boolean])"),
            StatusCode::BAD_REQUEST
        );
    }
}
