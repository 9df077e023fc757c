//! The `gateway` world's HTTP front end for one connector (`wit/connector.wit`, world
//! `gateway`): configuration from environment variables, routing, client authentication, and
//! the response shapes of [`crate::protocol`], which the harness's `serve` answers too
//! (`shared/spec/cli.md`, `serve`).
//!
//! Nothing here does I/O: the component's `wasi:http/incoming-handler` (`component::gateway`)
//! reads the request, calls [`dispatch`] and [`run`], and writes what they return; streams are
//! copied to the client by [`pump`] as each upstream read arrives (C41). Executions go through
//! [`actions::start`] exactly as the `actions` interface runs them.
//!
//! Under a stock wasi:http host the component cannot apply the connector's own TLS settings
//! (PKI, `caData`, `verificationMode`) nor proxies: [`Setup::from_env`] refuses connectors and
//! settings that need them, naming the variable, rather than silently ignoring them.

use crate::actions;
use crate::config::{self, Connector};
use crate::json::{Object, Value};
use crate::plan::Deployment;
use crate::protocol::{self, Reply, Route, object};
use crate::settings::deployment_from_json;
use crate::streaming::{StreamExecution, StreamItem, StreamSummary};
use crate::transport::{Body, Transport};
use percent_encoding::percent_decode_str;

/// `config` object of the connector, as JSON (required).
pub const ENV_CONFIG: &str = "OPENAI_CONNECTOR_CONFIG";
/// `secrets` object of the connector, as JSON (optional, default `{}`).
pub const ENV_SECRETS: &str = "OPENAI_CONNECTOR_SECRETS";
/// Connector id (optional, default [`DEFAULT_ID`]).
pub const ENV_ID: &str = "OPENAI_CONNECTOR_ID";
/// Connector name (optional, default: the id).
pub const ENV_NAME: &str = "OPENAI_CONNECTOR_NAME";
/// Deployment settings as JSON (optional): `allowedHosts`, `responseTimeout`,
/// `maxResponseContentLength`, as in the harness's settings file.
pub const ENV_SETTINGS: &str = "OPENAI_CONNECTOR_SETTINGS";
/// The Bearer token clients must present.
pub const ENV_CLIENT_TOKEN: &str = "OPENAI_CONNECTOR_CLIENT_TOKEN";
/// `1` (or `true`) serves without a client token, for local experiments.
pub const ENV_INSECURE_NO_AUTH: &str = "OPENAI_CONNECTOR_INSECURE_NO_AUTH";
/// The connector id when [`ENV_ID`] is not set.
pub const DEFAULT_ID: &str = "openai-connector";
/// How clients authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` with this token.
    Token(Vec<u8>),
    /// No authentication ([`ENV_INSECURE_NO_AUTH`]).
    Open,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token([REDACTED])"),
            Auth::Open => f.write_str("Open"),
        }
    }
}

/// The connector this gateway serves.
pub struct Served {
    /// Connector id.
    pub id: String,
    /// The validated connector.
    pub connector: Connector,
    /// Deployment settings.
    pub deployment: Deployment,
}

/// The gateway's configuration as read from the environment. Problems are kept, not fatal:
/// every request is answered with them (naming the variable) until the environment is fixed.
pub struct Setup {
    /// Client authentication, or why it is not configured.
    pub auth: Result<Auth, String>,
    /// The connector, or its problems (one message per problem, each naming the variable).
    pub served: Result<Served, Vec<String>>,
}

impl Setup {
    /// Reads the variables through `lookup` (the process environment in the component).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Setup {
        Setup {
            auth: auth_from_env(&lookup),
            served: served_from_env(&lookup),
        }
    }

    /// Every configuration problem, each starting with the variable's name; empty when the
    /// gateway is ready. Never holds a secret.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(p) = &self.auth {
            problems.push(p.clone());
        }
        if let Err(ps) = &self.served {
            problems.extend(ps.iter().cloned());
        }
        problems
    }
}

fn auth_from_env(lookup: &impl Fn(&str) -> Option<String>) -> Result<Auth, String> {
    if let Some(token) = lookup(ENV_CLIENT_TOKEN) {
        if token.trim().is_empty() {
            return Err(format!(
                "{ENV_CLIENT_TOKEN} is empty: set it to the Bearer token clients must present"
            ));
        }
        if token.trim() != token || token.contains(|c: char| c.is_ascii_control()) {
            return Err(format!(
                "{ENV_CLIENT_TOKEN} has leading or trailing white space or control characters, which no client can send in an Authorization header"
            ));
        }
        return Ok(Auth::Token(token.into_bytes()));
    }
    match lookup(ENV_INSECURE_NO_AUTH).as_deref().map(str::trim) {
        Some("1" | "true") => Ok(Auth::Open),
        None | Some("" | "0" | "false") => Err(format!(
            "{ENV_CLIENT_TOKEN} is not set: set it to the Bearer token clients must present (or set {ENV_INSECURE_NO_AUTH}=1 to serve without authentication)"
        )),
        Some(_) => Err(format!(
            "{ENV_INSECURE_NO_AUTH} must be 1, true, 0 or false"
        )),
    }
}

fn served_from_env(lookup: &impl Fn(&str) -> Option<String>) -> Result<Served, Vec<String>> {
    let mut problems = Vec::new();
    let id = lookup(ENV_ID).unwrap_or_else(|| DEFAULT_ID.to_owned());
    if id.trim().is_empty() {
        problems.push(format!("{ENV_ID} is empty"));
    }
    let name = lookup(ENV_NAME).unwrap_or_else(|| id.clone());
    let config = json_object(lookup, ENV_CONFIG, true, &mut problems);
    // The parse error names a position only: never the text of a secret.
    let secrets = json_object(lookup, ENV_SECRETS, false, &mut problems);
    let deployment = match lookup(ENV_SETTINGS) {
        None => Some(Deployment::default()),
        Some(text) => match deployment_from_json(&text) {
            Ok(d) => Some(d),
            Err(message) => {
                problems.push(format!("{ENV_SETTINGS}: {message}"));
                None
            }
        },
    };
    let (Some(config), Some(secrets), Some(deployment)) = (config, secrets, deployment) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let connector = match config::validate_connector(
        &id,
        &name,
        &config,
        &secrets,
        &deployment.allowed_hosts,
    ) {
        Ok(c) => c,
        Err(errors) => {
            // C17 wording; the messages never contain secret values (C32).
            problems.extend(
                errors
                    .config
                    .iter()
                    .map(|p| format!("{ENV_CONFIG}: error validating action type config: {p}")),
            );
            problems.extend(
                errors
                    .secrets
                    .iter()
                    .map(|p| format!("{ENV_SECRETS}: error validating action type secrets: {p}")),
            );
            return Err(problems);
        }
    };
    if connector.tls_profile().is_some() {
        return Err(vec![format!(
            "{ENV_SECRETS}: this connector has its own TLS settings (a PKI client certificate or caData, with verificationMode), which need the openai-connector harness: under a stock wasi:http host requests use the host's default TLS only"
        )]);
    }
    Ok(Served {
        id,
        connector,
        deployment,
    })
}

/// Reads and parses one JSON-object variable, recording problems. `required`: absent is an
/// error; otherwise absent reads as `{}`.
fn json_object(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<Value> {
    let Some(text) = lookup(name) else {
        if required {
            problems.push(format!(
                "{name} is not set: set it to the connector's object as JSON, with Kibana's field names"
            ));
            return None;
        }
        return Some(Value::Object(Object::default()));
    };
    match Value::parse(text.as_bytes()) {
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) => {
            problems.push(format!("{name} must be a JSON object"));
            None
        }
        Err(e) => {
            problems.push(format!("{name} is not valid JSON: {e}"));
            None
        }
    }
}

/// What to do with a request, decided from its head alone (before the body is read).
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Answer this; nothing reaches the upstream.
    Reply(Reply),
    /// Read the body and [`run`] the route.
    Run(Route),
}

/// Routes a request by method and path, and authenticates it. `authorization` holds every
/// `Authorization` header value.
pub fn dispatch(setup: &Setup, method: &str, path: &str, authorization: &[Vec<u8>]) -> Dispatch {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (route, id) = match segments.as_slice() {
        ["healthz"] => {
            if method != "GET" {
                return Dispatch::Reply(protocol::method_not_allowed("GET", Route::Execute));
            }
            return Dispatch::Reply(healthz(setup));
        }
        ["_execute"] => (Route::Execute, None),
        ["api", "actions", "connector", id, "_execute"] => (Route::Execute, Some(*id)),
        ["v1", rest @ ..] => match Route::openai(rest) {
            Some(route) => (route, None),
            None => return Dispatch::Reply(protocol::kibana_error(404, "Not Found")),
        },
        ["connectors", id, "v1", rest @ ..] => match Route::openai(rest) {
            Some(route) => (route, Some(*id)),
            None => return Dispatch::Reply(protocol::kibana_error(404, "Not Found")),
        },
        _ => return Dispatch::Reply(protocol::kibana_error(404, "Not Found")),
    };
    let allow = if route == Route::Models {
        "GET"
    } else {
        "POST"
    };
    if method != allow {
        return Dispatch::Reply(protocol::method_not_allowed(allow, route));
    }
    match &setup.auth {
        Err(problem) => {
            return Dispatch::Reply(protocol::route_error(
                route,
                500,
                &format!("the gateway is misconfigured: {problem}"),
                Some("gateway_misconfigured"),
            ));
        }
        Ok(Auth::Token(expected)) if !protocol::bearer_matches(authorization, expected) => {
            return Dispatch::Reply(protocol::unauthorized(route));
        }
        Ok(_) => {}
    }
    let served = match &setup.served {
        Ok(served) => served,
        Err(problems) => {
            return Dispatch::Reply(protocol::route_error(
                route,
                500,
                &format!("the gateway is misconfigured: {}", problems.join("; ")),
                Some("gateway_misconfigured"),
            ));
        }
    };
    if let Some(id) = id
        && id != served.id
    {
        return Dispatch::Reply(protocol::connector_not_found(route, id, Some(&served.id)));
    }
    if route == Route::Models {
        return Dispatch::Reply(models(served));
    }
    Dispatch::Run(route)
}

/// `GET /v1/models`: the connector's `defaultModel` (none for an Azure connector without one:
/// its deployment is in its URL), owned by the connector's id; the upstream is not called.
fn models(served: &Served) -> Reply {
    let model = served.connector.config.default_model.as_deref();
    let list: Vec<(&str, &str)> = model.map(|m| (m, served.id.as_str())).into_iter().collect();
    protocol::models(&list)
}

/// `GET /healthz` (no token): `{"status":"ok"}`, or `503` naming the variables to fix. The
/// problems themselves (which may describe the upstream) go to authenticated callers and the log.
fn healthz(setup: &Setup) -> Reply {
    let problems = setup.problems();
    if problems.is_empty() {
        return Reply::json(200, &object(vec![("status", Value::from("ok"))]));
    }
    let mut variables: Vec<&str> = Vec::new();
    for problem in &problems {
        let name = problem
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .next()
            .unwrap_or_default();
        if !name.is_empty() && !variables.contains(&name) {
            variables.push(name);
        }
    }
    Reply::json(
        503,
        &object(vec![
            ("status", Value::from("misconfigured")),
            (
                "variables",
                Value::Array(variables.into_iter().map(Value::from).collect()),
            ),
        ]),
    )
}

/// What an execution answers: a whole response, or a stream for [`pump`].
pub enum Outcome<B> {
    /// A complete response.
    Reply(Reply),
    /// A 2xx streaming upstream response: answer [`protocol::stream_head`], then [`pump`].
    Stream(Box<StreamExecution<B>>),
}

/// Runs `route` with the request `body` through `transport`.
pub fn run<T: Transport>(
    served: &Served,
    route: Route,
    body: &[u8],
    transport: &mut T,
) -> Outcome<T::Body> {
    let params = match protocol::params(route, body) {
        Ok(p) => p,
        Err(reply) => return Outcome::Reply(reply),
    };
    match actions::start(&served.connector, &served.deployment, &params, transport) {
        actions::Started::Streaming(stream) => Outcome::Stream(stream),
        actions::Started::Ended(execution) => {
            let data = execution.outcome.as_ref().map(Value::to_json);
            Outcome::Reply(protocol::ended(
                &served.id,
                route,
                data.as_deref().map_err(|f| *f),
            ))
        }
    }
}

/// Where [`pump`] writes a streamed response body.
pub trait Sink {
    /// Writes and flushes `bytes` to the client; `false` when the client has gone.
    fn write(&mut self, bytes: &[u8]) -> bool;
}

/// How a streamed response ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Pumped {
    /// The execution's summary (usage, outcome).
    pub summary: StreamSummary,
    /// The client went away before the end (the execution was then cancelled, C68).
    pub client_gone: bool,
}

/// Copies the stream's output to `sink` as each upstream read arrives (C41; parsed chunks as
/// `data:` events, C42). A failure after the first byte is told to the client as a last SSE
/// event (OpenAI SDKs raise an error for a `data` event holding an `error` object); a client
/// that goes away cancels the execution.
pub fn pump<B: Body>(
    connector_id: &str,
    route: Route,
    mut stream: Box<StreamExecution<B>>,
    sink: &mut impl Sink,
) -> Pumped {
    let mut client_gone = false;
    for item in stream.by_ref() {
        let written = match item {
            StreamItem::Bytes(bytes) => sink.write(&bytes),
            StreamItem::Chunk(chunk) => sink.write(&protocol::chunk_event(&chunk.to_json())),
        };
        if !written {
            client_gone = true;
            break;
        }
    }
    let summary = stream.finish();
    if let (Err(failure), false) = (&summary.outcome, client_gone)
        && let Some(event) = protocol::stream_error_event(connector_id, route, failure)
    {
        sink.write(&event);
    }
    Pumped {
        summary,
        client_gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::HttpRequest;
    use crate::transport::{Head, Limits, TransportError};
    use std::collections::{HashMap, VecDeque};

    const KEY: &str = "sk-gateway-unit-SECRET-42";
    const TOKEN: &str = "client-token-abc";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config_json() -> String {
        r#"{"apiProvider":"Other","apiUrl":"http://127.0.0.1:9/v1/chat/completions","defaultModel":"gpt-4o"}"#.to_owned()
    }

    fn secrets_json() -> String {
        format!(r#"{{"apiKey":"{KEY}"}}"#)
    }

    fn setup() -> Setup {
        Setup::from_env(env(&[
            (ENV_CONFIG, &config_json()),
            (ENV_SECRETS, &secrets_json()),
            (ENV_ID, "gw"),
            (ENV_CLIENT_TOKEN, TOKEN),
        ]))
    }

    fn bearer(token: &str) -> Vec<Vec<u8>> {
        vec![format!("Bearer {token}").into_bytes()]
    }

    fn reply(d: Dispatch) -> Reply {
        match d {
            Dispatch::Reply(r) => r,
            Dispatch::Run(route) => panic!("expected a reply, got Run({route:?})"),
        }
    }

    fn body_json(r: &Reply) -> Value {
        Value::parse(&r.body).expect("JSON body")
    }

    fn no_secret(text: &str) {
        assert!(!text.contains(KEY), "secret leaked: {text}");
        assert!(!text.contains(TOKEN), "client token leaked: {text}");
    }

    #[test]
    fn routes_and_auth() {
        let s = setup();
        let ok = bearer(TOKEN);
        for path in [
            "/v1/chat/completions",
            "/connectors/gw/v1/chat/completions",
            "/connectors/g%77/v1/chat/completions?x=1",
        ] {
            assert_eq!(
                dispatch(&s, "POST", path, &ok),
                Dispatch::Run(Route::ChatCompletions),
                "{path}"
            );
        }
        for path in ["/_execute", "/api/actions/connector/gw/_execute"] {
            assert_eq!(
                dispatch(&s, "POST", path, &ok),
                Dispatch::Run(Route::Execute)
            );
        }
        let r = reply(dispatch(
            &s,
            "POST",
            "/connectors/other/v1/chat/completions",
            &ok,
        ));
        assert_eq!(r.status, 404);
        assert_eq!(
            body_json(&r)
                .get("error")
                .unwrap()
                .get("code")
                .unwrap()
                .as_str(),
            Some("connector_not_found")
        );
        let r = reply(dispatch(
            &s,
            "POST",
            "/api/actions/connector/other/_execute",
            &ok,
        ));
        assert_eq!(r.status, 404);
        assert_eq!(reply(dispatch(&s, "POST", "/nope", &ok)).status, 404);
        let r = reply(dispatch(&s, "GET", "/v1/chat/completions", &ok));
        assert_eq!(
            (r.status, r.headers.last().unwrap().1.as_str()),
            (405, "POST")
        );
    }

    /// cli.md "serve: the rest of the OpenAI API": Responses and embeddings run their
    /// sub-actions; models is answered from `defaultModel` without an execution; each route
    /// takes one method.
    #[test]
    fn responses_embeddings_and_models_routes() {
        let s = setup();
        let ok = bearer(TOKEN);
        for (path, route) in [
            ("/v1/responses", Route::Responses),
            ("/connectors/gw/v1/responses", Route::Responses),
            ("/v1/embeddings", Route::Embeddings),
            ("/connectors/gw/v1/embeddings", Route::Embeddings),
        ] {
            assert_eq!(
                dispatch(&s, "POST", path, &ok),
                Dispatch::Run(route),
                "{path}"
            );
            let r = reply(dispatch(&s, "GET", path, &ok));
            assert_eq!(r.status, 405, "{path}");
            assert!(r.headers.contains(&("allow".into(), "POST".into())));
            assert!(body_json(&r).get("error").is_some(), "OpenAI's shape");
        }
        for path in ["/v1/models", "/connectors/gw/v1/models"] {
            let r = reply(dispatch(&s, "GET", path, &ok));
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(
                String::from_utf8(r.body).unwrap(),
                r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","created":0,"owned_by":"gw"}]}"#
            );
            let r = reply(dispatch(&s, "POST", path, &ok));
            assert_eq!(r.status, 405);
            assert!(r.headers.contains(&("allow".into(), "GET".into())));
        }
        let r = reply(dispatch(&s, "GET", "/connectors/other/v1/models", &ok));
        assert_eq!(r.status, 404);
        assert_eq!(
            body_json(&r)
                .get("error")
                .unwrap()
                .get("code")
                .unwrap()
                .as_str(),
            Some("connector_not_found")
        );
        assert_eq!(
            reply(dispatch(&s, "POST", "/v1/completions", &ok)).status,
            404
        );
        // An Azure connector without a defaultModel has no model to list: its deployment is in
        // its URL.
        let azure = Setup::from_env(env(&[
            (
                ENV_CONFIG,
                r#"{"apiProvider":"Azure OpenAI","apiUrl":"https://r.openai.azure.com/openai/deployments/d1/chat/completions?api-version=2024-10-21"}"#,
            ),
            (ENV_SECRETS, &secrets_json()),
            (ENV_CLIENT_TOKEN, TOKEN),
        ]));
        let r = reply(dispatch(&azure, "GET", "/v1/models", &ok));
        assert_eq!(
            (r.status, String::from_utf8(r.body).unwrap().as_str()),
            (200, r#"{"object":"list","data":[]}"#)
        );
    }

    #[test]
    fn wrong_missing_or_duplicated_tokens_get_401_before_anything_runs() {
        let s = setup();
        for auth in [
            vec![],
            bearer("client-token-abd"),
            bearer("client-token-ab"),
            bearer("client-token-abcd"),
            vec![format!("Basic {TOKEN}").into_bytes()],
            vec![TOKEN.as_bytes().to_vec()],
            [bearer(TOKEN), bearer(TOKEN)].concat(),
        ] {
            for (method, path, route) in [
                ("POST", "/v1/chat/completions", Route::ChatCompletions),
                ("POST", "/_execute", Route::Execute),
                ("POST", "/v1/responses", Route::Responses),
                ("POST", "/connectors/gw/v1/embeddings", Route::Embeddings),
                ("GET", "/v1/models", Route::Models),
            ] {
                let r = reply(dispatch(&s, method, path, &auth));
                assert_eq!(r.status, 401, "{auth:?}");
                assert!(
                    r.headers
                        .contains(&("www-authenticate".into(), "Bearer".into()))
                );
                let body = body_json(&r);
                if route == Route::Execute {
                    assert_eq!(body.get("statusCode").unwrap().to_json(), "401")
                } else {
                    assert_eq!(
                        body.get("error").unwrap().get("code").unwrap().as_str(),
                        Some("invalid_api_key")
                    )
                }
                no_secret(&String::from_utf8_lossy(&r.body));
            }
        }
        // The scheme is case-insensitive and surrounding blanks are ignored.
        assert_eq!(
            dispatch(
                &s,
                "POST",
                "/_execute",
                &[format!("bearer  {TOKEN} ").into_bytes()]
            ),
            Dispatch::Run(Route::Execute)
        );
    }

    #[test]
    fn healthz_needs_no_token_and_reports_misconfiguration() {
        let r = reply(dispatch(&setup(), "GET", "/healthz", &[]));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &br#"{"status":"ok"}"#[..])
        );
        let broken = Setup::from_env(env(&[(ENV_SECRETS, &secrets_json())]));
        let r = reply(dispatch(&broken, "GET", "/healthz", &[]));
        assert_eq!(r.status, 503);
        let text = String::from_utf8(r.body).unwrap();
        assert_eq!(
            text,
            r#"{"status":"misconfigured","variables":["OPENAI_CONNECTOR_CLIENT_TOKEN","OPENAI_CONNECTOR_CONFIG"]}"#
        );
        // Details (which may describe the upstream) are for the log and authenticated callers.
        let invalid = Setup::from_env(env(&[
            (
                ENV_CONFIG,
                r#"{"apiProvider":"Other","apiUrl":"http://10.1.2.3/v1"}"#,
            ),
            (ENV_SECRETS, &secrets_json()),
            (ENV_CLIENT_TOKEN, TOKEN),
        ]));
        let r = reply(dispatch(&invalid, "GET", "/healthz", &[]));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"status":"misconfigured","variables":["OPENAI_CONNECTOR_CONFIG"]}"#
        );
        assert!(invalid.problems()[0].contains("defaultModel"));
    }

    #[test]
    fn missing_token_refuses_every_request_unless_insecure_is_asked_for() {
        let base = [(ENV_CONFIG, config_json()), (ENV_SECRETS, secrets_json())];
        let pairs: Vec<(&str, &str)> = base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = Setup::from_env(env(&pairs));
        let r = reply(dispatch(
            &s,
            "POST",
            "/v1/chat/completions",
            &bearer("anything"),
        ));
        assert_eq!(r.status, 500);
        let message = body_json(&r)
            .get("error")
            .unwrap()
            .get("message")
            .unwrap()
            .to_json();
        assert!(message.contains(ENV_CLIENT_TOKEN) && message.contains(ENV_INSECURE_NO_AUTH));
        let mut open = pairs.clone();
        open.push((ENV_INSECURE_NO_AUTH, "1"));
        let s = Setup::from_env(env(&open));
        assert_eq!(s.auth, Ok(Auth::Open));
        assert_eq!(
            dispatch(&s, "POST", "/v1/chat/completions", &[]),
            Dispatch::Run(Route::ChatCompletions)
        );
        assert_eq!(s.served.as_ref().unwrap().id, DEFAULT_ID);
        let mut odd = pairs.clone();
        odd.push((ENV_INSECURE_NO_AUTH, "yes"));
        assert!(
            Setup::from_env(env(&odd))
                .auth
                .unwrap_err()
                .contains(ENV_INSECURE_NO_AUTH)
        );
        let mut empty = pairs;
        empty.push((ENV_CLIENT_TOKEN, " "));
        assert!(
            Setup::from_env(env(&empty))
                .auth
                .unwrap_err()
                .contains("is empty")
        );
    }

    /// C16/C17: an invalid connector is reported per variable, in Kibana's wording, without
    /// secret values; the token is checked first.
    #[test]
    fn misconfiguration_names_the_variable_and_never_a_secret() {
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (
                vec![(ENV_SECRETS, secrets_json())],
                "OPENAI_CONNECTOR_CONFIG is not set",
            ),
            (
                vec![
                    (ENV_CONFIG, "{\"apiProvider\":".into()),
                    (ENV_SECRETS, secrets_json()),
                ],
                "OPENAI_CONNECTOR_CONFIG is not valid JSON",
            ),
            (
                vec![
                    (ENV_CONFIG, config_json()),
                    (ENV_SECRETS, format!("{{\"apiKey\":\"{KEY}")),
                ],
                "OPENAI_CONNECTOR_SECRETS is not valid JSON",
            ),
            (
                vec![
                    (ENV_CONFIG, config_json()),
                    (ENV_SECRETS, format!("\"{KEY}\"")),
                ],
                "OPENAI_CONNECTOR_SECRETS must be a JSON object",
            ),
            (
                vec![
                    (ENV_CONFIG, r#"{"apiProvider":"OpenAI"}"#.into()),
                    (ENV_SECRETS, secrets_json()),
                ],
                "OPENAI_CONNECTOR_CONFIG: error validating action type config: [apiUrl]: expected value of type [string] but got [undefined]",
            ),
            (
                vec![
                    (ENV_CONFIG, config_json()),
                    (
                        ENV_SECRETS,
                        format!(r#"{{"apiKey":"{KEY}","nope":"{KEY}"}}"#),
                    ),
                ],
                "OPENAI_CONNECTOR_SECRETS: error validating action type secrets:",
            ),
            (
                vec![
                    (ENV_CONFIG, config_json()),
                    (ENV_SECRETS, secrets_json()),
                    (ENV_SETTINGS, r#"{"proxyUrl":"http://proxy:8080"}"#.into()),
                ],
                "OPENAI_CONNECTOR_SETTINGS: [proxyUrl] configures the transport, which only the openai-connector harness applies",
            ),
            (
                vec![
                    (ENV_CONFIG, config_json()),
                    (ENV_SECRETS, secrets_json()),
                    (
                        ENV_SETTINGS,
                        r#"{"allowedHosts":["api.openai.com"]}"#.into(),
                    ),
                ],
                "OPENAI_CONNECTOR_CONFIG: error validating action type config: Error configuring OpenAI action: Error: error validating url: target url \"http://127.0.0.1:9/v1/chat/completions\" is not added to the Kibana config xpack.actions.allowedHosts",
            ),
        ];
        for (mut pairs, expected) in cases {
            pairs.push((ENV_CLIENT_TOKEN, TOKEN.into()));
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let s = Setup::from_env(env(&pairs));
            let r = reply(dispatch(
                &s,
                "POST",
                "/v1/chat/completions",
                &bearer("wrong"),
            ));
            assert_eq!(
                r.status, 401,
                "the token is checked before the configuration"
            );
            let r = reply(dispatch(&s, "POST", "/v1/chat/completions", &bearer(TOKEN)));
            assert_eq!(r.status, 500);
            let text = String::from_utf8(r.body.clone()).unwrap();
            let error = body_json(&r)
                .get("error")
                .cloned()
                .expect("OpenAI error shape");
            let message = error.get("message").and_then(Value::as_str).unwrap();
            assert!(message.contains(expected), "{expected:?} not in {message}");
            assert_eq!(
                error.get("code").and_then(Value::as_str),
                Some("gateway_misconfigured")
            );
            no_secret(&text);
            let r = reply(dispatch(&s, "POST", "/_execute", &bearer(TOKEN)));
            assert_eq!(r.status, 500);
            no_secret(&String::from_utf8_lossy(&r.body));
        }
    }

    /// C122: the connector's own TLS settings need the harness; the message says so and
    /// names the variable. Without them (plain `https` with an API key) the connector is served.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn c122_connectors_with_their_own_tls_settings_are_refused() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.pem());
        let https = r#"{"apiProvider":"Other","apiUrl":"https://127.0.0.1:9/v1/chat/completions","defaultModel":"gpt-4o"}"#;
        let lookup = |secrets: String| {
            env(&[
                (ENV_CONFIG, https),
                (ENV_SECRETS, &secrets),
                (ENV_CLIENT_TOKEN, TOKEN),
            ])
        };
        let problems = Setup::from_env(lookup(format!(r#"{{"apiKey":"{KEY}","caData":"{ca}"}}"#)))
            .served
            .err()
            .expect("refused");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .starts_with("OPENAI_CONNECTOR_SECRETS: this connector has its own TLS settings")
                && problems[0].contains("need the openai-connector harness"),
            "{problems:?}"
        );
        no_secret(&problems[0]);
        assert!(Setup::from_env(lookup(secrets_json())).served.is_ok());
    }

    // --- executions over an in-memory transport ---

    struct Scripted(VecDeque<Result<Vec<u8>, TransportError>>);

    impl Body for Scripted {
        fn next_chunk(&mut self, _idle: Option<u64>) -> Result<Option<Vec<u8>>, TransportError> {
            self.0.pop_front().transpose()
        }
    }

    /// Answers once with `status`, `content_type` and the scripted body; records the request.
    struct OneResponse {
        status: u16,
        content_type: &'static str,
        body: Option<Scripted>,
        sent: Vec<HttpRequest>,
    }

    impl OneResponse {
        fn new(status: u16, content_type: &'static str, chunks: &[&str]) -> Self {
            OneResponse {
                status,
                content_type,
                body: Some(Scripted(
                    chunks.iter().map(|c| Ok(c.as_bytes().to_vec())).collect(),
                )),
                sent: Vec::new(),
            }
        }
    }

    impl Transport for OneResponse {
        type Body = Scripted;

        fn open(
            &mut self,
            request: &HttpRequest,
            _limits: &Limits,
        ) -> Result<Head<Scripted>, TransportError> {
            self.sent.push(request.clone());
            Ok(Head {
                status: self.status,
                headers: vec![("content-type".into(), self.content_type.into())],
                body: self.body.take().expect("one request"),
            })
        }

        fn time_left_ms(&self, limits: &Limits) -> u64 {
            limits.total_timeout_ms
        }

        fn pause(&mut self, _ms: u64) -> Result<(), TransportError> {
            unreachable!("one response: never retried")
        }

        fn unix_time_secs(&self) -> u64 {
            0
        }

        fn random_u64(&mut self) -> u64 {
            0
        }
    }

    #[derive(Default)]
    struct Collect {
        bytes: Vec<u8>,
        writes: usize,
        /// Refuse writes after this many.
        gone_after: Option<usize>,
    }

    impl Sink for Collect {
        fn write(&mut self, bytes: &[u8]) -> bool {
            if self.gone_after.is_some_and(|n| self.writes >= n) {
                return false;
            }
            self.writes += 1;
            self.bytes.extend_from_slice(bytes);
            true
        }
    }

    fn served() -> Served {
        setup().served.ok().unwrap()
    }

    const HEL: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    const LO: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";

    /// C41: the chat route passes the upstream's bytes through, one write per read, with the
    /// connector's credentials and the client's body.
    #[test]
    fn c41_chat_stream_passes_bytes_through_as_they_arrive() {
        let mut t = OneResponse::new(200, "text/event-stream", &[&HEL[..9], &HEL[9..], LO, USAGE]);
        let body = br#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#;
        let Outcome::Stream(stream) = run(&served(), Route::ChatCompletions, body, &mut t) else {
            panic!("expected a stream");
        };
        let mut sink = Collect::default();
        let pumped = pump("gw", Route::ChatCompletions, stream, &mut sink);
        assert_eq!(sink.bytes, [HEL, LO, USAGE].concat().as_bytes());
        assert_eq!(sink.writes, 4, "one write per upstream read");
        assert_eq!(pumped.summary.outcome, Ok(()));
        assert_eq!(
            pumped.summary.usage,
            crate::usage::TokenUsage::reported(3, 2, 5)
        );
        assert!(!pumped.client_gone);
        let sent = &t.sent[0];
        assert!(
            sent.headers
                .contains(&("Authorization".into(), format!("Bearer {KEY}")))
                || sent
                    .headers
                    .iter()
                    .any(|(n, v)| n.eq_ignore_ascii_case("authorization")
                        && v == &format!("Bearer {KEY}"))
        );
        let sent_body = Value::parse(&sent.body).unwrap();
        assert_eq!(sent_body.get("stream"), Some(&Value::Bool(true)));
        assert_eq!(
            sent_body.get("model").and_then(Value::as_str),
            Some("gpt-4o")
        );
        assert!(!sent.headers.iter().any(|(_, v)| v.contains(TOKEN)));
    }

    /// C78: a failure after the first byte ends the stream with an error event.
    #[test]
    fn c78_failure_mid_stream_ends_with_an_error_event() {
        for (route, prefix) in [
            (
                Route::ChatCompletions,
                "data: {\"error\":{\"message\":\"Status code: undefined. Message: Unexpected API Error: ECONNRESET - socket hang up\",\"type\":\"upstream_error\"",
            ),
            (
                Route::Execute,
                "event: error\ndata: {\"connector_id\":\"gw\",\"status\":\"error\"",
            ),
        ] {
            let mut t = OneResponse::new(200, "text/event-stream", &[HEL]);
            t.body
                .as_mut()
                .unwrap()
                .0
                .push_back(Err(TransportError::ConnectionReset));
            let body: &[u8] = if route == Route::Execute {
                br#"{"params":{"subAction":"invokeStream","subActionParams":{"messages":[{"role":"user","content":"Hi"}]}}}"#
            } else {
                br#"{"messages":[],"stream":true}"#
            };
            let Outcome::Stream(stream) = run(&served(), route, body, &mut t) else {
                panic!("expected a stream");
            };
            let mut sink = Collect::default();
            pump("gw", route, stream, &mut sink);
            let text = String::from_utf8(sink.bytes).unwrap();
            let rest = text.strip_prefix(HEL).expect("the delivered bytes stand");
            assert!(rest.starts_with(prefix), "{rest}");
            assert!(rest.ends_with("\n\n"));
        }
    }

    /// C68: a client that goes away cancels the execution.
    #[test]
    fn c68_client_gone_cancels() {
        let mut t = OneResponse::new(200, "text/event-stream", &[HEL, LO]);
        let Outcome::Stream(stream) = run(
            &served(),
            Route::ChatCompletions,
            br#"{"messages":[],"stream":true}"#,
            &mut t,
        ) else {
            panic!("expected a stream");
        };
        let mut sink = Collect {
            gone_after: Some(1),
            ..Collect::default()
        };
        let pumped = pump("gw", Route::ChatCompletions, stream, &mut sink);
        assert!(pumped.client_gone);
        assert_eq!(sink.bytes, HEL.as_bytes());
        assert!(
            pumped
                .summary
                .outcome
                .unwrap_err()
                .service_message
                .contains("ERR_CANCELED")
        );
    }

    /// C42: parsed chunks go out as `data:` events on the execute route.
    #[test]
    fn c42_iterator_chunks_are_sse_events() {
        let mut t = OneResponse::new(200, "text/event-stream", &[HEL, LO, "data: [DONE]\n\n"]);
        let body = br#"{"params":{"subAction":"invokeAsyncIterator","subActionParams":{"messages":[{"role":"user","content":"Hi"}]}}}"#;
        let Outcome::Stream(stream) = run(&served(), Route::Execute, body, &mut t) else {
            panic!("expected a stream");
        };
        let mut sink = Collect::default();
        pump("gw", Route::Execute, stream, &mut sink);
        assert_eq!(sink.bytes, [HEL, LO].concat().as_bytes());
    }

    /// Non-streaming: the upstream JSON on the chat route, Kibana's shapes on execute (C77).
    #[test]
    fn c77_non_streaming_shapes() {
        let completion = r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"temperature":0.70}"#;
        let mut t = OneResponse::new(200, "application/json", &[completion]);
        let Outcome::Reply(r) = run(
            &served(),
            Route::ChatCompletions,
            br#"{"messages":[]}"#,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert_eq!(
            (r.status, String::from_utf8(r.body).unwrap()),
            (200, completion.to_owned())
        );
        assert_eq!(
            Value::parse(&t.sent[0].body).unwrap().get("stream"),
            Some(&Value::Bool(false))
        );

        let mut t = OneResponse::new(200, "application/json", &[completion]);
        let Outcome::Reply(r) = run(
            &served(),
            Route::Execute,
            br#"{"params":{"subAction":"run","subActionParams":{"body":"{\"messages\":[]}"}}}"#,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            format!(r#"{{"connector_id":"gw","status":"ok","data":{completion}}}"#)
        );

        let error = r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#;
        let mut t = OneResponse::new(429, "application/json", &[error]);
        let Outcome::Reply(r) = run(
            &served(),
            Route::ChatCompletions,
            br#"{"messages":[],"stream":true}"#,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert_eq!(r.status, 429, "C70: the upstream status");
        let e = body_json(&r);
        assert_eq!(
            e.get("error").unwrap().get("type").unwrap().as_str(),
            Some("rate_limit_error")
        );
        assert!(
            e.get("error")
                .unwrap()
                .get("message")
                .unwrap()
                .as_str()
                .unwrap()
                .starts_with("Status code: 429.")
        );

        let mut t = OneResponse::new(
            401,
            "application/json",
            &[r#"{"error":{"message":"bad key"}}"#],
        );
        let Outcome::Reply(r) = run(
            &served(),
            Route::Execute,
            br#"{"params":{"subAction":"run","subActionParams":{"body":"{}"}}}"#,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert_eq!(r.status, 200, "Kibana answers status: error with 200");
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.starts_with(r#"{"connector_id":"gw","status":"error","message":"an error occurred while running the action","service_message":"Status code: 401."#), "{text}");
    }

    /// cli.md "serve: the rest of the OpenAI API": `/v1/responses` and `/v1/embeddings` run
    /// their sub-actions: the URL derived from the connector's, its credentials, the body as
    /// given, the upstream's JSON as the answer; a URL that cannot be mapped is `404` with the
    /// reason and sends nothing.
    #[test]
    fn responses_and_embeddings_run_their_sub_actions() {
        let object = r#"{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#;
        let body = br#"{"model":"gpt-4.1","input":"Hi"}"#;
        for (route, path, answer) in [
            (Route::Responses, "/v1/responses", object),
            (
                Route::Embeddings,
                "/v1/embeddings",
                r#"{"object":"list","data":[],"usage":{"prompt_tokens":1,"total_tokens":1}}"#,
            ),
        ] {
            let mut t = OneResponse::new(200, "application/json", &[answer]);
            let Outcome::Reply(r) = run(&served(), route, body, &mut t) else {
                panic!("expected a reply");
            };
            assert_eq!(
                (r.status, String::from_utf8(r.body).unwrap()),
                (200, answer.to_owned())
            );
            let sent = &t.sent[0];
            assert_eq!(sent.url, format!("http://127.0.0.1:9{path}"));
            assert_eq!(sent.body, body);
            assert!(sent.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("authorization") && v == &format!("Bearer {KEY}")
            }));
        }
        let unmapped = Setup::from_env(env(&[
            (
                ENV_CONFIG,
                r#"{"apiProvider":"Other","apiUrl":"http://127.0.0.1:9/v1","defaultModel":"m"}"#,
            ),
            (ENV_SECRETS, &secrets_json()),
            (ENV_CLIENT_TOKEN, TOKEN),
        ]));
        let mut t = OneResponse::new(200, "application/json", &[object]);
        let Outcome::Reply(r) = run(
            &unmapped.served.ok().unwrap(),
            Route::Responses,
            body,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert_eq!(r.status, 404);
        let error = body_json(&r).get("error").cloned().unwrap();
        assert_eq!(
            error.get("message").and_then(Value::as_str),
            Some(
                "The connector's URL cannot be mapped to the Responses API: apiUrl does not end in /chat/completions"
            )
        );
        assert!(t.sent.is_empty());
    }

    /// A streamed Responses answer is passed through as read, its usage from
    /// `response.completed`; after the upstream's `response.failed` nothing is added (the
    /// execution fails); a connection reset adds a Responses `error` event the SDKs raise.
    #[test]
    fn responses_streams_pass_through_and_end_after_the_upstreams_failure() {
        const CREATED: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"output\":[]}}\n\n";
        const DELTA: &str = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n";
        const COMPLETED: &str = "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"r\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":4,\"output_tokens\":1,\"total_tokens\":5}}}\n\n";
        const FAILED: &str = "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":2,\"response\":{\"id\":\"r\",\"status\":\"failed\",\"output\":[],\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n";
        let body = br#"{"input":"Hi","stream":true}"#;
        let pumped = |t: &mut OneResponse| {
            let Outcome::Stream(stream) = run(&served(), Route::Responses, body, t) else {
                panic!("expected a stream");
            };
            let mut sink = Collect::default();
            let pumped = pump("gw", Route::Responses, stream, &mut sink);
            (String::from_utf8(sink.bytes).unwrap(), pumped.summary)
        };

        let mut t = OneResponse::new(200, "text/event-stream", &[CREATED, DELTA, COMPLETED]);
        let (bytes, summary) = pumped(&mut t);
        assert_eq!(bytes, [CREATED, DELTA, COMPLETED].concat());
        assert_eq!(summary.outcome, Ok(()));
        assert_eq!(summary.usage, crate::usage::TokenUsage::reported(4, 1, 5));
        assert_eq!(t.sent[0].url, "http://127.0.0.1:9/v1/responses");

        let mut t = OneResponse::new(200, "text/event-stream", &[CREATED, DELTA, FAILED]);
        let (bytes, summary) = pumped(&mut t);
        assert_eq!(bytes, [CREATED, DELTA, FAILED].concat(), "nothing added");
        let failure = summary.outcome.unwrap_err();
        assert_eq!(failure.kind, crate::failure::FailureKind::Stream);
        assert!(failure.service_message.contains("boom"), "{failure:?}");

        // A reset, and a body that ends before any ending event: the client is told.
        for (reset, message) in [
            (
                true,
                "Status code: undefined. Message: Unexpected API Error: ECONNRESET",
            ),
            (
                false,
                "Stream error: the stream ended before response.completed",
            ),
        ] {
            let mut t = OneResponse::new(200, "text/event-stream", &[CREATED, DELTA]);
            if reset {
                t.body
                    .as_mut()
                    .unwrap()
                    .0
                    .push_back(Err(TransportError::ConnectionReset));
            }
            let (bytes, summary) = pumped(&mut t);
            let rest = bytes
                .strip_prefix(&[CREATED, DELTA].concat())
                .expect("the delivered bytes stand")
                .to_owned();
            assert!(
                rest.starts_with(&format!(
                    "event: error\ndata: {{\"type\":\"error\",\"code\":\"upstream_error\",\"message\":\"{message}"
                )),
                "{rest}"
            );
            assert!(rest.ends_with("}}\n\n"), "{rest}");
            assert!(summary.outcome.is_err());
        }
    }

    #[test]
    fn bad_bodies_get_400_and_send_nothing() {
        for (route, body, needle) in [
            (Route::ChatCompletions, &b"[1]"[..], "must be a JSON object"),
            (Route::ChatCompletions, b"{", "not valid JSON"),
            (Route::ChatCompletions, b"\xff", "not UTF-8"),
            (Route::Execute, b"{}", "[request body.params]"),
            (
                Route::Execute,
                br#"{"params":{},"x":1}"#,
                "[request body.x]",
            ),
            (
                Route::Execute,
                br#"{"params":"run"}"#,
                "expected value of type [object]",
            ),
        ] {
            let mut t = OneResponse::new(200, "application/json", &[]);
            let Outcome::Reply(r) = run(&served(), route, body, &mut t) else {
                panic!("expected a reply");
            };
            assert_eq!(r.status, 400);
            assert!(
                String::from_utf8_lossy(&r.body).contains(needle),
                "{needle}"
            );
            assert!(t.sent.is_empty());
        }
        // Invalid params are the execution's failure (C34), not a transport request.
        let mut t = OneResponse::new(200, "application/json", &[]);
        let Outcome::Reply(r) = run(
            &served(),
            Route::Execute,
            br#"{"params":{"subAction":"nope"}}"#,
            &mut t,
        ) else {
            panic!("expected a reply");
        };
        assert!(
            String::from_utf8_lossy(&r.body).contains(r#"Sub action \"nope\" is not registered"#)
        );
        assert!(t.sent.is_empty());
    }
}
