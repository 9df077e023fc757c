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

/// The connector as Kibana's get-connector API returns it: never secrets (cli.md "validate").
pub fn connector_json(connector: &Connector) -> String {
    let mut out = crate::json::Object::new();
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
    /// Largest accepted response body (C65).
    pub max_body_bytes: u64,
}

/// A complete, non-streamed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes (at most `Limits::max_body_bytes`).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response arrived (C74).
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
    /// The total timeout expired.
    #[error("timeout")]
    Timeout,
    /// The body exceeded the limit.
    #[error("response too large")]
    TooLarge,
    /// The host refused to send the request (its policy).
    #[error("request denied by the host")]
    Denied,
    /// The host or caller cancelled the execution.
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

/// Sends requests. Implemented over `wasi:http` in the component.
pub trait Transport {
    /// Sends `request` and reads its whole body within `limits`. The total timeout counts
    /// from the transport's first `send`, so redirects share it.
    fn send(
        &mut self,
        request: &HttpRequest,
        limits: &Limits,
    ) -> Result<HttpResponse, TransportError>;
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

/// Runs a non-streaming execution of a validated connector.
pub fn execute(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
    transport: &mut dyn Transport,
) -> Execution {
    let plan = match plan(connector, deployment, params_json) {
        Ok(plan) => plan,
        Err(failure) => {
            return Execution {
                outcome: Err(failure),
                usage: TokenUsage::UNAVAILABLE,
                request_body_bytes: None,
            };
        }
    };
    let body_bytes = Some(plan.request.body.len() as u64);
    if plan.params.stream {
        return Execution::failed(
            format!(
                "Sub action \"{}\" streams its response; this host runs non-streaming sub-actions only",
                plan.params.sub_action.as_str()
            ),
            false,
            None,
        );
    }
    let limits = Limits {
        total_timeout_ms: plan.total_timeout_ms,
        max_body_bytes: deployment.max_response_content_length,
    };
    let response = match send_following_redirects(&plan.request, &limits, deployment, transport) {
        Ok(r) => r,
        Err(message) => {
            return Execution::failed(finish_message(connector, message), true, body_bytes);
        }
    };
    if (200..300).contains(&response.status) {
        match response::map_success(plan.params.sub_action, &response.body) {
            Ok((data, usage)) => Execution {
                outcome: Ok(data),
                usage,
                request_body_bytes: body_bytes,
            },
            Err(message) => Execution::failed(finish_message(connector, message), true, body_bytes),
        }
    } else {
        let message = response::http_error_message(response.status, &response.body);
        Execution::failed(finish_message(connector, message), true, body_bytes)
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
    let host_port = || {
        let host = config::url_host_name(&request.url).unwrap_or_default();
        let port = url_port(&request.url);
        (host, port)
    };
    let (code, message) = match error {
        TransportError::NameNotResolved => (
            "ENOTFOUND".to_owned(),
            format!("getaddrinfo ENOTFOUND {}", host_port().0),
        ),
        TransportError::ConnectionRefused => {
            let (host, port) = host_port();
            (
                "ECONNREFUSED".to_owned(),
                format!("connect ECONNREFUSED {host}:{port}"),
            )
        }
        TransportError::ConnectionReset => ("ECONNRESET".to_owned(), "socket hang up".to_owned()),
        TransportError::Timeout => (
            "ECONNABORTED".to_owned(),
            format!("timeout of {}ms exceeded", limits.total_timeout_ms),
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
fn send_following_redirects(
    first: &HttpRequest,
    limits: &Limits,
    deployment: &Deployment,
    transport: &mut dyn Transport,
) -> Result<HttpResponse, String> {
    let mut request = first.clone();
    let mut redirects = 0;
    loop {
        let response = transport
            .send(&request, limits)
            .map_err(|e| transport_message(&e, &request, limits))?;
        if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
            return Ok(response);
        }
        let Some(location) = response.header("location") else {
            return Ok(response);
        };
        if redirects == MAX_REDIRECTS {
            return Err(response::transport_error_message(
                "ERR_FR_TOO_MANY_REDIRECTS",
                "Maximum number of redirects exceeded",
            ));
        }
        redirects += 1;
        let target = url::Url::parse(&request.url)
            .and_then(|base| base.join(location))
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
        if !matches!(response.status, 307 | 308) {
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
