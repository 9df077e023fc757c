//! Request routing and the handlers.

use super::admission::RETRY_AFTER_SECS;
use super::auth::Caller;
use super::catalog::Served;
use super::config::Config;
use super::gateway::{Gateway, InFlightGuard};
use super::limits::Permit;
use super::metrics::Route;
use crate::execution::{Finished, StreamItem};
use crate::executor::{Executor, Started, Stream};
use crate::outbound::Cancel;
use crate::output;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use openai_connector::protocol::{self, MAX_REQUEST_BYTES, Refusal, Reply};
use openai_connector::retry;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

/// Response body: whole, or streamed from a channel.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

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

/// The gateway protocol's answer as a hyper response.
fn reply(r: Reply) -> Response<Body> {
    let mut response = Response::new(full(r.body));
    *response.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    append_headers(response.headers_mut(), r.headers);
    response
}

/// The gateway protocol's headers (always valid names and values) on a hyper response.
fn append_headers(headers: &mut http::HeaderMap, pairs: Vec<(String, String)>) {
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.append(name, value);
        }
    }
}

fn kibana_error(status: StatusCode, message: &str) -> Response<Body> {
    reply(protocol::kibana_error(status.as_u16(), message))
}

fn unauthorized(gw: &Gateway, route: Route) -> Response<Body> {
    gw.metrics.unauthorized();
    reply(protocol::unauthorized(route))
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
    // The configuration this request runs on, whatever a reload does meanwhile.
    let config = gw.config();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            // A load balancer stops sending traffic as soon as shutdown begins.
            if gw.admission.is_closing() {
                let mut r = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "shutting down"}),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        (&Method::GET, ["metrics"]) => {
            if !config.auth.is_admin(req.headers()) {
                return unauthorized(&gw, Route::Execute);
            }
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                {
                    let mut text = gw.metrics.render(super::metrics::Connections {
                        open: gw.connections.len(),
                        max: gw.connections.max(),
                    });
                    gw.sinks.render(&mut text);
                    text + &gw.limits.render_metrics()
                },
            )
        }
        (&Method::GET, ["dashboard"]) | (&Method::GET, ["dashboard", "data"]) => {
            let admin = config.auth.is_admin(req.headers())
                || config
                    .auth
                    .admin_token_matches(query_token(&req).as_deref());
            if !admin {
                return unauthorized(&gw, Route::Execute);
            }
            let page = segments.len() == 1;
            let mut r = if page {
                respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    super::dashboard::PAGE,
                )
            } else {
                json_response(StatusCode::OK, &gw.history.to_json())
            };
            let h = r.headers_mut();
            if page {
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(super::dashboard::content_security_policy()),
                );
            }
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            r
        }
        (&Method::GET, ["api", "actions", "connectors"]) => {
            if !config.auth.is_admin(req.headers()) {
                return unauthorized(&gw, Route::Execute);
            }
            let list: Vec<Value> = config
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
            if !config.auth.is_admin(req.headers()) {
                return unauthorized(&gw, Route::Execute);
            }
            match config.catalog.get(id) {
                Some(c) => json_response(StatusCode::OK, &c.public_json),
                None => reply(protocol::connector_not_found(Route::Execute, id, None)),
            }
        }
        (&Method::POST, ["api", "actions", "connector", id, "_execute"]) => {
            let Some(caller) = config.auth.admin_caller(req.headers()) else {
                return unauthorized(&gw, Route::Execute);
            };
            let id = (*id).to_owned();
            run_route(gw, &config, executor, &id, Route::Execute, caller, req).await
        }
        (_, ["connectors", id, "v1", rest @ ..]) => {
            let Some(route) = Route::openai(rest) else {
                return kibana_error(StatusCode::NOT_FOUND, "Not Found");
            };
            if let Some(refused) = wrong_method(&method, route) {
                return refused;
            }
            let Some(caller) = config.auth.caller(req.headers(), id) else {
                return unauthorized(&gw, route);
            };
            let id = (*id).to_owned();
            if route == Route::Models {
                return connector_models(&config, &id);
            }
            run_route(gw, &config, executor, &id, route, caller, req).await
        }
        (_, ["routes", name, "v1", rest @ ..]) => {
            let Some(route) = Route::openai(rest) else {
                return kibana_error(StatusCode::NOT_FOUND, "Not Found");
            };
            if let Some(refused) = wrong_method(&method, route) {
                return refused;
            }
            let Some(caller) = config.auth.caller(req.headers(), name) else {
                return unauthorized(&gw, route);
            };
            let name = (*name).to_owned();
            if route == Route::Models {
                return route_models(&config, &name);
            }
            run_named_route(gw, &config, executor, &name, route, caller, req).await
        }
        _ => kibana_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// `405` naming the method when `method` is not the one `route` takes (`GET` for models, `POST`
/// otherwise).
fn wrong_method(method: &Method, route: Route) -> Option<Response<Body>> {
    let allow = if route == Route::Models {
        Method::GET
    } else {
        Method::POST
    };
    (*method != allow).then(|| reply(protocol::method_not_allowed(allow.as_str(), route)))
}

/// `GET /connectors/{id}/v1/models`: the connector's `defaultModel`, without calling the
/// upstream.
fn connector_models(config: &Config, id: &str) -> Response<Body> {
    match config.catalog.get(id) {
        Some(served) => reply(protocol::models(
            &model_of(served).into_iter().collect::<Vec<_>>(),
        )),
        None => reply(protocol::connector_not_found(Route::Models, id, None)),
    }
}

/// `GET /routes/{name}/v1/models`: the `defaultModel` of the route's connectors in the order
/// written, each model once.
fn route_models(config: &Config, name: &str) -> Response<Body> {
    let Some(named) = config.routes.get(name) else {
        return route_not_found(name, Route::Models);
    };
    let models: Vec<(&str, &str)> = named
        .connectors
        .iter()
        .filter_map(|id| config.catalog.get(id))
        .filter_map(model_of)
        .collect();
    reply(protocol::models(&models))
}

/// A served connector's model and owner for `/v1/models`: its `defaultModel` (an Azure
/// connector may have none: its deployment is in its URL), owned by its id.
fn model_of(served: &Served) -> Option<(&str, &str)> {
    Some((served.prepared.default_model()?, served.file.id.as_str()))
}

fn route_not_found(name: &str, route: Route) -> Response<Body> {
    reply(protocol::route_error(
        route,
        404,
        &format!("route \"{name}\" not found"),
        Some("route_not_found"),
    ))
}

/// The request body, or the error response: all of it must arrive within `timeout`.
async fn read_body(
    req: Request<hyper::body::Incoming>,
    route: Route,
    timeout: std::time::Duration,
) -> Result<Bytes, Reply> {
    let collect = Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collect).await else {
        return Err(protocol::body_timeout(route));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(protocol::body_too_large(route))
        }
        Err(e) => Err(protocol::body_unreadable(route, &e.to_string())),
    }
}

/// `POST /api/actions/connector/{id}/_execute` (Kibana's shapes, cli.md "execute") and the
/// OpenAI routes of a connector, `POST /connectors/{id}/v1/chat/completions` (the `stream`
/// sub-action's body, with `stream` taken from it), `.../v1/responses` and `.../v1/embeddings`
/// (the `responses` and `embeddings` sub-actions' body): the body is read and turned into
/// params by the gateway protocol.
async fn run_route(
    gw: Arc<Gateway>,
    config: &Config,
    executor: Arc<Executor>,
    id: &str,
    route: Route,
    caller: Caller,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Some(served) = config.catalog.get(id) else {
        return reply(protocol::connector_not_found(route, id, None));
    };
    let served = served.clone();
    let (client, params) = match client_and_params(&gw, config, route, caller, req).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    run_execution(gw, &executor, served, params, route, &client, false)
        .await
        .response()
}

/// The caller's client limits (cli.md "Client limits"), checked before the body is read and
/// before admission: the permit to hold until the execution ends, or the `429`.
/// The caller's client limits, then the request's params: the body is read only once the
/// limits let the request in.
async fn client_and_params(
    gw: &Gateway,
    config: &Config,
    route: Route,
    caller: Caller,
    req: Request<hyper::body::Incoming>,
) -> Result<(Client, String), Response<Body>> {
    let permit = limit(gw, config, route, caller).await?;
    let body = read_body(req, route, gw.body_timeout)
        .await
        .map_err(reply)?;
    let params = protocol::params(route, &body).map_err(reply)?;
    Ok((Client { caller, permit }, params))
}

async fn limit(
    gw: &Gateway,
    config: &Config,
    route: Route,
    caller: Caller,
) -> Result<Arc<Permit>, Response<Body>> {
    match gw.limits.acquire(config.auth.limits_of(caller)).await {
        Ok(permit) => Ok(Arc::new(permit)),
        Err(refused) => Err(reply(protocol::rate_limited(
            route,
            refused.limit,
            refused.retry_after_secs,
        ))),
    }
}

/// `POST /routes/{name}/v1/chat/completions`, `.../v1/responses` and `.../v1/embeddings`
/// (cli.md "Routes"): the route's connectors in its order, the next one tried while the
/// current one declines (a failure worth another connector, or no slot within the queue
/// timeout) and nothing reached the client. Every execution tried logs its own line; the
/// answer names the connector that gave it.
async fn run_named_route(
    gw: Arc<Gateway>,
    config: &Config,
    executor: Arc<Executor>,
    name: &str,
    route: Route,
    caller: Caller,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let Some(named) = config.routes.get(name) else {
        return route_not_found(name, route);
    };
    let order: Vec<String> = named
        .order(|id| gw.admission.in_flight(id), |n| fastrand::usize(..n))
        .into_iter()
        .map(str::to_owned)
        .collect();
    // One request of the client, however many connectors it tries.
    let (client, params) = match client_and_params(&gw, config, route, caller, req).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let mut declined = None;
    for (i, id) in order.iter().enumerate() {
        // Every connector of a route was checked at load.
        let Some(served) = config.catalog.get(id).cloned() else {
            continue;
        };
        let last = i + 1 == order.len();
        let attempt = run_execution(
            gw.clone(),
            &executor,
            served,
            params.clone(),
            route,
            &client,
            !last,
        )
        .await;
        let answered = matches!(attempt, Attempt::Answered(_));
        let mut response = attempt.response();
        // Connector ids are file names or map keys: one that is no header value goes unnamed.
        if let Ok(value) = HeaderValue::try_from(id.as_str()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(CONNECTOR_ID_HEADER), value);
        }
        if answered {
            return response;
        }
        declined = Some(response);
    }
    declined.unwrap_or_else(|| kibana_error(StatusCode::INTERNAL_SERVER_ERROR, "empty route"))
}

/// The header that names the connector that answered a route's request.
const CONNECTOR_ID_HEADER: &str = "x-openai-connector-id";

/// How one execution attempt went.
enum Attempt {
    /// The client gets this response.
    Answered(Response<Body>),
    /// Another connector may do better (only when the caller allowed it): a failure worth
    /// another connector, or no slot within the queue timeout. Nothing reached the client;
    /// this is the response should no other connector be left.
    Declined(Response<Body>),
}

impl Attempt {
    fn response(self) -> Response<Body> {
        match self {
            Attempt::Answered(r) | Attempt::Declined(r) => r,
        }
    }
}

/// Who asked for an execution, and what they hold of their client limits until it ends.
struct Client {
    caller: Caller,
    permit: Arc<Permit>,
}

async fn run_execution(
    gw: Arc<Gateway>,
    executor: &Executor,
    served: Served,
    params: String,
    route: Route,
    client: &Client,
    may_decline: bool,
) -> Attempt {
    let permit = &client.permit;
    let ticket = match gw.admission.admit(&served.file.id, client.caller).await {
        Ok(ticket) => ticket,
        Err(refusal) => {
            gw.metrics.not_admitted(refusal);
            let response = reply(protocol::not_admitted(route, refusal, RETRY_AFTER_SECS));
            return match refusal {
                Refusal::QueueTimeout if may_decline => Attempt::Declined(response),
                _ => Attempt::Answered(response),
            };
        }
    };
    let started_at = Instant::now();
    let started_wall = SystemTime::now();
    let cancel = Cancel::new();
    let guard = gw.in_flight.enter(ticket, cancel.clone());
    let connector = &served.file;
    gw.metrics.started(&connector.id, route);
    let request_model = gw.request_model(&params);
    let started = executor
        .start_cancellable(&served.prepared, &params, cancel.clone())
        .await;
    match started {
        Err(e) => {
            tracing::error!("connector {}: sandbox failure: {e:#}", connector.id);
            let finished = Finished::sandbox_failure(&e, started_wall);
            gw.record(&served, route, &finished, true, started_at, request_model);
            permit.add_tokens(finished.usage.for_log().total_tokens);
            Attempt::Answered(ended_response(&connector.id, route, &finished))
        }
        Ok(Started::Ended(finished)) => {
            gw.record(&served, route, &finished, false, started_at, request_model);
            permit.add_tokens(finished.usage.for_log().total_tokens);
            drop(guard);
            let response = ended_response(&connector.id, route, &finished);
            match &finished.outcome {
                Err(failure) if may_decline && retry::worth_another_connector(failure) => {
                    Attempt::Declined(response)
                }
                _ => Attempt::Answered(response),
            }
        }
        Ok(Started::Streaming(stream)) => Attempt::Answered(stream_response(
            gw,
            served,
            route,
            stream,
            cancel,
            StreamHolds {
                guard,
                permit: permit.clone(),
            },
            started_at,
            request_model,
        )),
    }
}

/// The answer of an execution that has ended.
fn ended_response(connector_id: &str, route: Route, finished: &Finished) -> Response<Body> {
    match &finished.outcome {
        Ok(data) => match output::checked_data(data.as_deref().unwrap_or("null")) {
            Ok(data) => reply(protocol::ended(connector_id, route, Ok(data))),
            Err(e) => reply(protocol::route_error(route, 500, &format!("{e:#}"), None)),
        },
        Err(failure) => reply(protocol::ended(connector_id, route, Err(failure))),
    }
}

/// `response` with `keep` held until its body has been sent (or dropped unsent).
pub(super) fn keep_until_sent<T: Send + Sync + Unpin + 'static>(
    response: Response<Body>,
    keep: T,
) -> Response<Body> {
    response.map(|body| BodyExt::boxed(Holding { body, _keep: keep }))
}

/// A body that holds something until it is dropped.
struct Holding<T> {
    body: Body,
    _keep: T,
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
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

/// What a stream holds until it has been recorded: its admission and its client limits.
struct StreamHolds {
    guard: InFlightGuard,
    permit: Arc<Permit>,
}

/// Streams the guest's output to the client as it arrives. A client that goes away cancels
/// the execution (C68); the execution always ends with its event-log line.
#[expect(
    clippy::too_many_arguments,
    reason = "the execution's parts, each moved into the stream's task"
)]
fn stream_response(
    gw: Arc<Gateway>,
    served: Served,
    route: Route,
    mut stream: Box<Stream>,
    cancel: Cancel,
    holding: StreamHolds,
    started_at: Instant,
    request_model: Option<String>,
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
        // The execution's slot and client limits are held until it has been recorded.
        let StreamHolds {
            guard: _guard,
            permit,
        } = holding;
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
                        StreamItem::Chunk(json) => Bytes::from(protocol::chunk_event(&json)),
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
        let connector = &served.file;
        if let Some(e) = &trap {
            tracing::error!("connector {}: sandbox failure: {e:#}", connector.id);
        }
        if let Err(failure) = &finished.outcome
            && !client_gone
            && let Some(event) = protocol::stream_error_event(&connector.id, route, failure)
        {
            let _ = tx.send(Bytes::from(event)).await;
        }
        drop(tx);
        drop(done_tx);
        gw.record(
            &served,
            route,
            &finished,
            trap.is_some(),
            started_at,
            request_model,
        );
        permit.add_tokens(finished.usage.for_log().total_tokens);
    });
    let (status, headers) = protocol::stream_head();
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    append_headers(r.headers_mut(), headers);
    r
}
