//! One execution, end to end, over an abstract [`Transport`]: params and request
//! ([`crate::plan`]), redirects ([`crate::redirect`]), limits (C62, C65) and mapping (section 5).
//!
//! Executions take a connector that was validated once ([`Definition::validate`]); nothing here
//! validates it again. The component implements [`Transport`] over `wasi:http`; tests implement
//! it in memory. No I/O happens here.

use crate::config::{self, Connector, ValidationErrors};
use crate::failure::Failure;
use crate::json::{ParseError, Value};
use crate::plan::{Deployment, plan};
use crate::redirect;
use crate::response;
use crate::schema::Problem;
use crate::streaming::{StreamExecution, StreamItem};
use crate::transport::{Limits, Transport, read_to_end};
use crate::usage::TokenUsage;

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
    /// problem of C5/C18, since neither object is then an object. A text nested deeper than
    /// C50's limit is reported at the path where the limit was passed instead, and alone: for
    /// `secrets`, only the top-level field is named, since deeper keys are the secret's own
    /// text (C32).
    pub fn validate(&self, deployment: &Deployment) -> Result<Connector, ValidationErrors> {
        let config = Value::parse(self.config_json.as_bytes());
        let secrets = Value::parse(self.secrets_json.as_bytes());
        let too_deep = |parsed: &Result<Value, ParseError>, depth: usize| -> Vec<String> {
            let Err(ParseError {
                nesting_path: Some(path),
                ..
            }) = parsed
            else {
                return Vec::new();
            };
            vec![Problem::too_deep(&path[..path.len().min(depth)]).to_string()]
        };
        let nesting = ValidationErrors {
            config: too_deep(&config, usize::MAX),
            secrets: too_deep(&secrets, 1),
        };
        if !nesting.is_empty() {
            return Err(nesting);
        }
        let not_object = || Value::String(String::new());
        config::validate_connector(
            self.id,
            self.name,
            &config.unwrap_or_else(|_| not_object()),
            &secrets.unwrap_or_else(|_| not_object()),
            &deployment.allowed_hosts,
        )
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
    fn failed(failure: Failure, request_body_bytes: Option<u64>) -> Self {
        Execution {
            outcome: Err(failure),
            usage: TokenUsage::UNAVAILABLE,
            request_body_bytes,
        }
    }
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
        Err(failure) => return Started::Ended(Execution::failed(failure, None)),
    };
    let api_key = connector.secrets.api_key.as_deref();
    let body_bytes = Some(plan.request.body.len() as u64);
    let limits = Limits {
        total_timeout_ms: plan.total_timeout_ms,
        max_body_bytes: deployment.max_response_content_length,
    };
    let fail = |failure| Started::Ended(Execution::failed(failure, body_bytes));
    let mut head = match redirect::open(&plan.request, &limits, deployment, api_key, transport) {
        Ok(head) => head,
        Err(failure) => return fail(failure),
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
        Err(e) => {
            return fail(Failure::transport(
                &e,
                &plan.request,
                &limits,
                Some(head.status),
                api_key,
            ));
        }
    };
    if !success {
        return fail(Failure::http(head.status, &body, api_key));
    }
    match response::map_success(plan.params.sub_action, &body) {
        Ok((data, usage)) => Started::Ended(Execution {
            outcome: Ok(data),
            usage,
            request_body_bytes: body_bytes,
        }),
        Err(message) => fail(Failure::response_invalid(
            message,
            Some(head.status),
            api_key,
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str =
        r#"{"apiProvider":"Other","apiUrl":"https://example.com/v1","defaultModel":"m"}"#;

    fn validate(config: &str, secrets: &str) -> Result<Connector, ValidationErrors> {
        Definition {
            id: "c",
            name: "n",
            config_json: config,
            secrets_json: secrets,
        }
        .validate(&Deployment::default())
    }

    /// `n` objects nested under key `key`, innermost holding `"x"`.
    fn nested(key: &str, n: usize) -> String {
        format!("{{\"{key}\":").repeat(n) + "\"x\"" + &"}".repeat(n)
    }

    #[test]
    fn c1_c50_config_nested_too_deep_names_the_path() {
        // config(1) > headers' value and 127 objects inside it: the last is at level 129.
        let config = format!(
            r#"{{"apiProvider":"Other","headers":{}}}"#,
            nested("a", 128)
        );
        let errors = validate(&config, r#"{"apiKey":"k"}"#).unwrap_err();
        let path = format!("headers{}", ".a".repeat(127));
        assert_eq!(
            errors.lines(),
            vec![format!(
                "error validating action type config: [{path}]: nested more than 128 levels deep"
            )]
        );
        // One level less parses, and is then an ordinary wrong type (C2).
        let config = format!(
            r#"{{"apiProvider":"Other","apiUrl":"https://example.com/v1","defaultModel":"m","headers":{}}}"#,
            nested("a", 127)
        );
        let errors = validate(&config, r#"{"apiKey":"k"}"#).unwrap_err();
        assert_eq!(
            errors.lines(),
            vec![
                "error validating action type config: [headers.a]: expected value of type [string] but got [Object]"
            ]
        );
    }

    #[test]
    fn c32_c50_secrets_nested_too_deep_name_only_the_field() {
        // Keys below a secrets field are its own text: only the field is named (C32).
        let secrets = format!(r#"{{"apiKey":{}}}"#, nested("sk-secret-inner-key", 128));
        let errors = validate(CONFIG, &secrets).unwrap_err();
        assert_eq!(
            errors.lines(),
            vec![
                "error validating action type secrets: [apiKey]: nested more than 128 levels deep"
            ]
        );
        assert!(!errors.to_string().contains("sk-secret"));
        // Malformed JSON is still the wrong type of C18.
        let errors = validate(CONFIG, "{").unwrap_err();
        assert_eq!(
            errors.lines(),
            vec![
                "error validating action type secrets: expected value of type [object] but got [string]"
            ]
        );
    }
}
