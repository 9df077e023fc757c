//! One execution, end to end, over an abstract transport: validation (C16), params (C33–C38),
//! request (section 4), redirects (C66, C67), limits (C62, C65) and mapping (section 5).
//!
//! The component implements [`Transport`] over `wasi:http`; tests implement it in memory. No
//! I/O happens here.

use crate::config::{self, Connector, ValidationErrors};
use crate::json::Value;
use crate::params::{self, Params};
use crate::request::{self, HttpRequest};
use crate::response;
use crate::usage::TokenUsage;

pub use crate::streaming::{StreamExecution, StreamItem, StreamSummary};

/// `User-Agent` sent unless a custom header replaces it (C48).
pub const USER_AGENT: &str = concat!("openai-connector/", env!("CARGO_PKG_VERSION"));
/// Redirects followed at most (C66).
pub const MAX_REDIRECTS: usize = 20;

/// Deployment settings the component applies itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// `allowedHosts` (C11, C44, C66).
    pub allowed_hosts: Vec<String>,
    /// `responseTimeout` in milliseconds (C62, C63).
    pub response_timeout_ms: u64,
    /// `maxResponseContentLength` in bytes (C65).
    pub max_response_content_length: u64,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            allowed_hosts: vec!["*".to_owned()],
            response_timeout_ms: 60_000,
            max_response_content_length: 1 << 20,
        }
    }
}

/// A connector definition as JSON texts (the WIT `connector-definition`).
#[derive(Clone, Copy, Debug)]
pub struct Definition<'a> {
    /// Connector id.
    pub id: &'a str,
    /// Connector name.
    pub name: &'a str,
    /// `config` JSON text.
    pub config_json: &'a str,
    /// `secrets` JSON text.
    pub secrets_json: &'a str,
}

impl Definition<'_> {
    /// Parses and validates the definition (C16). Malformed JSON is reported as the wrong-type
    /// problem of C5/C18, since neither object is then an object.
    pub fn validate(&self, deployment: &Deployment) -> Result<Connector, ValidationErrors> {
        let parse =
            |text: &str| Value::parse(text.as_bytes()).unwrap_or(Value::String(String::new()));
        config::validate_connector(
            self.id,
            self.name,
            &parse(self.config_json),
            &parse(self.secrets_json),
            &deployment.allowed_hosts,
        )
    }
}

/// Remembers the last definition validated and its result, so that validating the same
/// definition again costs a comparison.
///
/// Why: a host validates a connector before it gives the instance network access (it needs
/// the TLS profile for the transport), then starts the execution with the same definition.
/// Validating it again repeated every check, the PKI ones included (parsing and matching a
/// client certificate, its key and a CA: about 40 µs natively, against 2 µs without PKI).
/// Validation depends on the definition and the allowed hosts only, and on nothing that
/// changes over time, so a remembered result is exact.
///
/// Deliberately not `Debug`: it holds the secrets' text.
#[derive(Default)]
pub struct ValidationCache {
    last: Option<Remembered>,
    #[cfg(test)]
    validations: usize,
}

struct Remembered {
    id: String,
    name: String,
    config_json: String,
    secrets_json: String,
    allowed_hosts: Vec<String>,
    result: Result<Connector, ValidationErrors>,
}

impl ValidationCache {
    /// [`Definition::validate`], or its remembered result when `definition` and the allowed
    /// hosts are the ones last validated.
    pub fn validate(
        &mut self,
        definition: &Definition<'_>,
        deployment: &Deployment,
    ) -> Result<Connector, ValidationErrors> {
        if let Some(last) = &self.last
            && last.id == definition.id
            && last.name == definition.name
            && last.config_json == definition.config_json
            && last.secrets_json == definition.secrets_json
            && last.allowed_hosts == deployment.allowed_hosts
        {
            return last.result.clone();
        }
        #[cfg(test)]
        {
            self.validations += 1;
        }
        let result = definition.validate(deployment);
        self.last = Some(Remembered {
            id: definition.id.to_owned(),
            name: definition.name.to_owned(),
            config_json: definition.config_json.to_owned(),
            secrets_json: definition.secrets_json.to_owned(),
            allowed_hosts: deployment.allowed_hosts.clone(),
            result: result.clone(),
        });
        result
    }
}

/// The connector as Kibana's get-connector API returns it: never secrets (cli.md "validate").
pub fn connector_json(connector: &Connector) -> String {
    let mut out = crate::json::Object::default();
    out.insert("id".into(), Value::from(connector.id.as_str()));
    out.insert("name".into(), Value::from(connector.name.as_str()));
    out.insert(
        "connector_type_id".into(),
        Value::from(config::CONNECTOR_TYPE_ID),
    );
    out.insert(
        "config".into(),
        Value::Object(connector.config.normalized.clone()),
    );
    out.insert("is_preconfigured".into(), Value::Bool(false));
    out.insert("is_deprecated".into(), Value::Bool(false));
    out.insert("is_missing_secrets".into(), Value::Bool(false));
    Value::Object(out).to_json()
}

/// What the transport must enforce for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total time from the first request to the last response byte, in ms (C62).
    pub total_timeout_ms: u64,
    /// Largest accepted response body that is read whole (C65).
    pub max_body_bytes: u64,
}

/// A response head; the body is read from `body` as it arrives.
#[derive(Debug)]
pub struct Head<B> {
    /// Status code.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The body, not yet read.
    pub body: B,
}

impl<B> Head<B> {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body being received.
pub trait Body {
    /// The next chunk of bytes (never empty), or `None` at the end. With `idle_timeout_ms`,
    /// fails with [`TransportError::IdleTimeout`] when no byte arrives for that long (C63).
    fn next_chunk(
        &mut self,
        idle_timeout_ms: Option<u64>,
    ) -> Result<Option<Vec<u8>>, TransportError>;
}

/// Reads a whole body, failing past `max` bytes (C65).
pub fn read_to_end(body: &mut impl Body, max: u64) -> Result<Vec<u8>, TransportError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next_chunk(None)? {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(TransportError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Why no (complete) response arrived (C74).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The host name did not resolve.
    #[error("name resolution failed")]
    NameNotResolved,
    /// The connection was refused.
    #[error("connection refused")]
    ConnectionRefused,
    /// The connection closed or reset before the response ended.
    #[error("connection reset")]
    ConnectionReset,
    /// The total timeout expired (C62).
    #[error("timeout")]
    Timeout,
    /// No byte arrived within the idle timeout (C63).
    #[error("idle timeout of {0}ms")]
    IdleTimeout(u64),
    /// The body exceeded the limit (C65).
    #[error("response too large")]
    TooLarge,
    /// The host refused to send the request (its policy).
    #[error("request denied by the host")]
    Denied,
    /// The host or caller cancelled the execution (C68).
    #[error("canceled")]
    Canceled,
    /// A failure with a Node-style code and message (TLS failures among them).
    #[error("{code} - {message}")]
    Coded {
        /// e.g. `UNABLE_TO_VERIFY_LEAF_SIGNATURE`.
        code: String,
        /// e.g. `unable to verify the first certificate`.
        message: String,
    },
}

/// Sends requests. Implemented over `wasi:http` in the component and in memory in tests.
pub trait Transport {
    /// The response body type.
    type Body: Body;

    /// Sends `request` and waits for the response head. The total timeout counts from the
    /// transport's first `open`, so redirects and the body share it (C62).
    fn open(
        &mut self,
        request: &HttpRequest,
        limits: &Limits,
    ) -> Result<Head<Self::Body>, TransportError>;
}

/// A failed execution (C77).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Kibana's `serviceMessage`.
    pub service_message: String,
    /// Kibana's `retry`.
    pub retry: bool,
}

/// The result of one execution of a valid connector.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    /// Kibana's `data`, or the failure.
    pub outcome: Result<Value, Failure>,
    /// Usage and its source (section 7).
    pub usage: TokenUsage,
    /// Sent body length, when a request was sent (C118).
    pub request_body_bytes: Option<u64>,
}

impl Execution {
    fn failed(service_message: String, retry: bool, request_body_bytes: Option<u64>) -> Self {
        Execution {
            outcome: Err(Failure {
                service_message,
                retry,
            }),
            usage: TokenUsage::UNAVAILABLE,
            request_body_bytes,
        }
    }
}

/// The request an execution sends, or why it sends none.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Validated params.
    pub params: Params,
    /// The request (C43–C61).
    pub request: HttpRequest,
    /// Total timeout (C62).
    pub total_timeout_ms: u64,
    /// Idle timeout for streaming requests (C63).
    pub idle_timeout_ms: Option<u64>,
}

/// Validates params and builds the request (C33–C38, C43–C62). The error is the failure the
/// execution reports (C34, C35, C44).
pub fn plan(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
) -> Result<Plan, Failure> {
    let params = params::parse_params(params_json.as_bytes()).map_err(|e| Failure {
        service_message: redact(connector, e.message(&connector.id)),
        retry: false,
    })?;
    // C44: the allow-list is checked again just before sending.
    if !config::host_is_allowed(&connector.config.api_url, &deployment.allowed_hosts) {
        return Err(Failure {
            service_message: format!(
                "error configuring connector action: target url \"{}\" is not added to the Kibana config xpack.actions.allowedHosts",
                connector.config.api_url
            ),
            retry: true,
        });
    }
    let request = request::build_request(connector, &params, USER_AGENT);
    let total_timeout_ms =
        request::total_timeout_ms(deployment.response_timeout_ms, params.timeout_ms);
    let idle_timeout_ms = params.stream.then_some(deployment.response_timeout_ms);
    Ok(Plan {
        params,
        request,
        total_timeout_ms,
        idle_timeout_ms,
    })
}

/// What an execution does after planning: the response is read whole, or streamed.
pub enum Started<B> {
    /// The execution has ended (non-streaming sub-actions, and streaming ones that failed
    /// before the first byte, C76).
    Ended(Execution),
    /// A 2xx streaming response: read it with [`StreamExecution::next`].
    Streaming(Box<StreamExecution<B>>),
}

/// Runs an execution of a validated connector up to the point where it either has ended or
/// streams.
pub fn start<T: Transport>(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
    transport: &mut T,
) -> Started<T::Body> {
    let plan = match plan(connector, deployment, params_json) {
        Ok(plan) => plan,
        Err(failure) => {
            return Started::Ended(Execution {
                outcome: Err(failure),
                usage: TokenUsage::UNAVAILABLE,
                request_body_bytes: None,
            });
        }
    };
    let body_bytes = Some(plan.request.body.len() as u64);
    let limits = Limits {
        total_timeout_ms: plan.total_timeout_ms,
        max_body_bytes: deployment.max_response_content_length,
    };
    let fail = |message: String| {
        Started::Ended(Execution::failed(
            finish_message(connector, message),
            true,
            body_bytes,
        ))
    };
    let mut head = match open_following_redirects(&plan.request, &limits, deployment, transport) {
        Ok(head) => head,
        Err(message) => return fail(message),
    };
    let success = (200..300).contains(&head.status);
    if success && plan.params.stream {
        return Started::Streaming(Box::new(StreamExecution::new(
            connector, plan, limits, head,
        )));
    }
    // C65, C76: non-streaming bodies and error bodies are read whole, within the limit.
    let body = match read_to_end(&mut head.body, limits.max_body_bytes) {
        Ok(body) => body,
        Err(e) => return fail(transport_message(&e, &plan.request, &limits)),
    };
    if !success {
        return fail(response::http_error_message(head.status, &body));
    }
    match response::map_success(plan.params.sub_action, &body) {
        Ok((data, usage)) => Started::Ended(Execution {
            outcome: Ok(data),
            usage,
            request_body_bytes: body_bytes,
        }),
        Err(message) => fail(message),
    }
}

/// Runs an execution to its end, collecting a streamed body whole (for hosts and tests that
/// want one result; streaming callers use [`start`]).
pub fn execute<T: Transport>(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
    transport: &mut T,
) -> Execution {
    match start(connector, deployment, params_json, transport) {
        Started::Ended(execution) => execution,
        Started::Streaming(mut stream) => {
            let mut out = Vec::new();
            for item in stream.by_ref() {
                match item {
                    StreamItem::Bytes(bytes) => out.extend_from_slice(&bytes),
                    StreamItem::Chunk(chunk) => {
                        out.extend_from_slice(chunk.to_json().as_bytes());
                        out.push(b'\n');
                    }
                }
            }
            let summary = stream.finish();
            Execution {
                outcome: summary
                    .outcome
                    .map(|()| Value::String(String::from_utf8_lossy(&out).into_owned())),
                usage: summary.usage,
                request_body_bytes: summary.request_body_bytes,
            }
        }
    }
}

/// C75's TLS rewrite, then C32's redaction.
fn finish_message(connector: &Connector, message: String) -> String {
    redact(connector, response::tls_rewrite(message))
}

fn redact(connector: &Connector, message: String) -> String {
    response::redact(&message, connector.secrets.api_key.as_deref())
}

/// The C74 message for a transport failure.
pub fn transport_message(error: &TransportError, request: &HttpRequest, limits: &Limits) -> String {
    let (code, message) = match error {
        TransportError::NameNotResolved => (
            "ENOTFOUND".to_owned(),
            format!(
                "getaddrinfo ENOTFOUND {}",
                config::url_host_name(&request.url).unwrap_or_default()
            ),
        ),
        TransportError::ConnectionRefused => (
            "ECONNREFUSED".to_owned(),
            format!(
                "connect ECONNREFUSED {}:{}",
                config::url_host_name(&request.url).unwrap_or_default(),
                url_port(&request.url)
            ),
        ),
        TransportError::ConnectionReset => ("ECONNRESET".to_owned(), "socket hang up".to_owned()),
        TransportError::Timeout => (
            "ECONNABORTED".to_owned(),
            format!("timeout of {}ms exceeded", limits.total_timeout_ms),
        ),
        TransportError::IdleTimeout(ms) => (
            "ECONNABORTED".to_owned(),
            format!("idle timeout of {ms}ms exceeded"),
        ),
        TransportError::TooLarge => (
            "ERR_BAD_RESPONSE".to_owned(),
            format!(
                "maxContentLength size of {} exceeded",
                limits.max_body_bytes
            ),
        ),
        TransportError::Canceled => ("ERR_CANCELED".to_owned(), "canceled".to_owned()),
        TransportError::Denied => {
            return format!(
                "error configuring connector action: target url \"{}\" is not added to the Kibana config xpack.actions.allowedHosts",
                request.url
            );
        }
        TransportError::Coded { code, message } => (code.clone(), message.clone()),
    };
    response::transport_error_message(&code, &message)
}

/// The port of an absolute URL, with the scheme's default.
fn url_port(url: &str) -> u16 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(0)
}

/// Sends `first` and follows redirects (C66, C67). Errors are C74 messages.
fn open_following_redirects<T: Transport>(
    first: &HttpRequest,
    limits: &Limits,
    deployment: &Deployment,
    transport: &mut T,
) -> Result<Head<T::Body>, String> {
    let mut request = first.clone();
    let mut redirects = 0;
    loop {
        let head = transport
            .open(&request, limits)
            .map_err(|e| transport_message(&e, &request, limits))?;
        if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(head);
        }
        let Some(location) = head.header("location").map(str::to_owned) else {
            return Ok(head);
        };
        let status = head.status;
        // The redirect's own body is abandoned with its head.
        drop(head);
        if redirects == MAX_REDIRECTS {
            return Err(response::transport_error_message(
                "ERR_FR_TOO_MANY_REDIRECTS",
                "Maximum number of redirects exceeded",
            ));
        }
        redirects += 1;
        let target = url::Url::parse(&request.url)
            .and_then(|base| base.join(&location))
            .map_err(|_| {
                response::transport_error_message(
                    "ERR_FR_REDIRECTION_FAILURE",
                    &format!("Redirected request failed: invalid location \"{location}\""),
                )
            })?;
        let target_host = config::url_host_name(target.as_str()).unwrap_or_default();
        if !config::host_is_allowed(target.as_str(), &deployment.allowed_hosts) {
            return Err(response::transport_error_message(
                "ERR_FR_REDIRECTION_FAILURE",
                &format!(
                    "Redirected request failed: target hostname \"{target_host}\" is not added to the Kibana config xpack.actions.allowedHosts"
                ),
            ));
        }
        let current_host = config::url_host_name(&request.url).unwrap_or_default();
        if !matches!(status, 307 | 308) {
            // C67: 301, 302 and 303 continue as a GET without a body.
            request.method = "GET".to_owned();
            request.body.clear();
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("content-type")
                    && !name.eq_ignore_ascii_case("content-length")
            });
        }
        if !target_host.eq_ignore_ascii_case(&current_host) {
            // C67: credentials stay with the host they were configured for.
            request.headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case("authorization") && !name.eq_ignore_ascii_case("api-key")
            });
        }
        request.url = target.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // C16: a remembered validation gives exactly the result of validating again, and any change
    // to the definition or the allowed hosts validates again.
    #[test]
    fn c16_validation_is_remembered_for_the_same_definition_only() {
        let config =
            r#"{"apiProvider":"OpenAI","apiUrl":"https://api.openai.com/v1/chat/completions"}"#;
        let definition = Definition {
            id: "conn-1",
            name: "Connector",
            config_json: config,
            secrets_json: r#"{"apiKey":"sk-1"}"#,
        };
        let deployment = Deployment::default();
        let mut cache = ValidationCache::default();
        let first = cache.validate(&definition, &deployment);
        assert!(first.is_ok());
        assert_eq!(first, definition.validate(&deployment));
        assert_eq!(cache.validate(&definition, &deployment), first);
        assert_eq!(cache.validations, 1);

        let other_key = Definition {
            secrets_json: r#"{"apiKey":"sk-2"}"#,
            ..definition
        };
        assert_ne!(cache.validate(&other_key, &deployment), first);
        assert_eq!(cache.validations, 2);
        let no_key = Definition {
            secrets_json: "{}",
            ..definition
        };
        let invalid = cache.validate(&no_key, &deployment);
        assert_eq!(invalid, no_key.validate(&deployment));
        assert!(invalid.is_err());
        assert_eq!(cache.validate(&no_key, &deployment), invalid);
        assert_eq!(cache.validations, 3);

        // C11: the allowed hosts are part of what is compared.
        let elsewhere = Deployment {
            allowed_hosts: vec!["example.com".to_owned()],
            ..Deployment::default()
        };
        let refused = cache.validate(&definition, &elsewhere);
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(cache.validations, 4);
        for (id, name, config_json) in [
            ("conn-2", "Connector", config),
            ("conn-1", "Other", config),
            ("conn-1", "Connector", r#"{"apiProvider":"OpenAI"}"#),
        ] {
            let changed = Definition {
                id,
                name,
                config_json,
                ..definition
            };
            assert_eq!(
                cache.validate(&changed, &deployment),
                changed.validate(&deployment)
            );
        }
        assert_eq!(cache.validations, 7);
    }
}
