//! The request an execution sends, or why it sends none: params (C33–C38), the allow-list
//! (C44), the request (C43–C61) and its timeouts (C62, C63).

use crate::config::{self, Connector};
use crate::failure::Failure;
use crate::params::{self, Params};
use crate::request::{self, HttpRequest};
use crate::retry::RetryPolicy;

/// `User-Agent` sent unless a custom header replaces it (C48).
pub const USER_AGENT: &str = concat!("openai-connector/", env!("CARGO_PKG_VERSION"));

/// Deployment settings the component applies itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// `allowedHosts` (C11, C44, C66).
    pub allowed_hosts: Vec<String>,
    /// `responseTimeout` in milliseconds (C62, C63).
    pub response_timeout_ms: u64,
    /// `maxResponseContentLength` in bytes (C65).
    pub max_response_content_length: u64,
    /// `retry` (cli.md "Retries"; default: no retry).
    pub retry: RetryPolicy,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            allowed_hosts: vec!["*".to_owned()],
            response_timeout_ms: 60_000,
            max_response_content_length: 1 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// What one execution sends.
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
/// execution reports (C34, C35, C44, or `not-mapped` for a `responses` or `embeddings` call
/// whose URL cannot be derived).
pub fn plan(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
) -> Result<Plan, Failure> {
    let api_key = connector.secrets.api_key.as_deref();
    let params = params::parse_params(params_json.as_bytes())
        .map_err(|e| Failure::params(&e, &connector.id, api_key))?;
    // C44: the allow-list is checked again just before sending.
    if !config::host_is_allowed(&connector.config.api_url, &deployment.allowed_hosts) {
        return Err(Failure::denied(&connector.config.api_url, None));
    }
    let request = request::build_request(connector, &params, USER_AGENT)
        .map_err(|e| Failure::not_mapped(&e, api_key))?;
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
