//! One execution, end to end, over an abstract [`Transport`]: params and request
//! ([`crate::plan`]), redirects ([`crate::redirect`]), limits (C62, C65) and mapping (section 5).
//!
//! Executions take a connector that was validated once ([`Definition::validate`]); nothing here
//! validates it again. The component implements [`Transport`] over `wasi:http`; tests implement
//! it in memory. No I/O happens here.

use crate::config::{self, Connector, ValidationErrors};
use crate::estimate::EstimationInput;
use crate::failure::Failure;
use crate::json::{ParseError, Value};
use crate::params::SubAction;
use crate::plan::{Deployment, plan};
use crate::redirect;
use crate::response;
use crate::responses_api;
use crate::retry;
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
    /// When no usage was reported but it can be estimated (a `responses` answer without
    /// `usage`, a collected stream without a usage event): what a tokenizer counts (C110–C112).
    pub estimate: Option<EstimationInput>,
    /// Sent body length, when a request was sent (C118).
    pub request_body_bytes: Option<u64>,
    /// Attempts made: 0 when nothing was sent, 1 without retries (cli.md "Retries").
    pub attempts: u32,
}

impl Execution {
    fn failed(failure: Failure, request_body_bytes: Option<u64>, attempts: u32) -> Self {
        Execution {
            outcome: Err(failure),
            usage: TokenUsage::UNAVAILABLE,
            estimate: None,
            request_body_bytes,
            attempts,
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
/// streams. Retryable failures are tried again as `deployment.retry` says ([`crate::retry`]).
pub fn start<T: Transport>(
    connector: &Connector,
    deployment: &Deployment,
    params_json: &str,
    transport: &mut T,
) -> Started<T::Body> {
    let plan = match plan(connector, deployment, params_json) {
        Ok(plan) => plan,
        Err(failure) => return Started::Ended(Execution::failed(failure, None, 0)),
    };
    let api_key = connector.secrets.api_key.as_deref();
    let body_bytes = Some(plan.request.body.len() as u64);
    let limits = Limits {
        total_timeout_ms: plan.total_timeout_ms,
        max_body_bytes: deployment.max_response_content_length,
    };
    let (opened, attempts) = open_with_retries(&plan, &limits, deployment, api_key, transport);
    let fail = |failure| Started::Ended(Execution::failed(failure, body_bytes, attempts));
    let mut head = match opened {
        Ok(head) => head,
        Err(failure) => return fail(failure),
    };
    let success = (200..300).contains(&head.status);
    if success && plan.params.stream {
        return Started::Streaming(Box::new(StreamExecution::new(
            connector, plan, limits, head, attempts,
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
        Ok((data, usage)) => {
            // A Responses answer without usage is estimated from its input and output.
            let estimate = (usage == TokenUsage::UNAVAILABLE
                && plan.params.sub_action == SubAction::Responses)
                .then(|| {
                    let output = responses_api::output_of(&data);
                    EstimationInput::from_responses(
                        &plan.request.body,
                        &output.text,
                        &output.calls,
                        data.get("model").and_then(Value::as_str),
                        connector.config.default_model.as_deref(),
                    )
                });
            Started::Ended(Execution {
                outcome: Ok(data),
                usage,
                estimate,
                request_body_bytes: body_bytes,
                attempts,
            })
        }
        Err(message) => fail(Failure::response_invalid(
            message,
            Some(head.status),
            api_key,
        )),
    }
}

/// Opens the response (following redirects), trying again while the failure or status is
/// retryable and the policy allows; returns the last attempt's outcome and the attempts made.
/// A retried response is abandoned unread: nothing of it reaches the caller.
fn open_with_retries<T: Transport>(
    plan: &crate::plan::Plan,
    limits: &Limits,
    deployment: &Deployment,
    api_key: Option<&str>,
    transport: &mut T,
) -> (Result<crate::transport::Head<T::Body>, Failure>, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let opened = redirect::open(&plan.request, limits, deployment, api_key, transport);
        let time_left = transport.time_left_ms(limits);
        let hint = match &opened {
            Ok(head) if retry::retryable_status(head.status) => {
                retry::Hint::from_headers(&head.headers, transport.unix_time_secs())
            }
            Err(failure) if retry::retryable_failure(failure, time_left) => retry::Hint::default(),
            _ => return (opened, attempts),
        };
        let Some(delay) =
            retry::next_delay_ms(&deployment.retry, attempts, hint, time_left, || {
                transport.random_u64()
            })
        else {
            return (opened, attempts);
        };
        drop(opened);
        if let Err(e) = transport.pause(delay) {
            let failure = Failure::transport(&e, &plan.request, limits, None, api_key);
            return (Err(failure), attempts);
        }
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
                estimate: summary.estimate,
                request_body_bytes: summary.request_body_bytes,
                attempts: summary.attempts,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Retries (cli.md "Retries") over an in-memory transport that answers from a script.

    use super::*;
    use crate::request::HttpRequest;
    use crate::retry::RetryPolicy;
    use crate::transport::{Body, Head, TransportError};
    use std::collections::VecDeque;

    pub(super) struct Whole(Option<Vec<u8>>);

    impl Body for Whole {
        fn next_chunk(&mut self, _idle: Option<u64>) -> Result<Option<Vec<u8>>, TransportError> {
            Ok(self.0.take().filter(|b| !b.is_empty()))
        }
    }

    type Answer = Result<(u16, Vec<(&'static str, &'static str)>, &'static str), TransportError>;

    /// Answers each request with the next scripted answer; records pauses.
    pub(super) struct Script {
        answers: VecDeque<Answer>,
        pub(super) sent: usize,
        /// URL and body of every request sent.
        pub(super) requests: Vec<(String, String)>,
        pauses: Vec<u64>,
        time_left_ms: u64,
    }

    impl Script {
        pub(super) fn new(answers: Vec<Answer>) -> Script {
            Script {
                answers: answers.into(),
                sent: 0,
                requests: Vec::new(),
                pauses: Vec::new(),
                time_left_ms: 60_000,
            }
        }
    }

    impl Transport for Script {
        type Body = Whole;

        fn open(
            &mut self,
            request: &HttpRequest,
            _limits: &Limits,
        ) -> Result<Head<Whole>, TransportError> {
            self.sent += 1;
            self.requests.push((
                request.url.clone(),
                String::from_utf8_lossy(&request.body).into_owned(),
            ));
            let (status, headers, body) = self.answers.pop_front().expect("a scripted answer")?;
            Ok(Head {
                status,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
                body: Whole(Some(body.as_bytes().to_vec())),
            })
        }

        fn time_left_ms(&self, _limits: &Limits) -> u64 {
            self.time_left_ms
        }

        fn pause(&mut self, ms: u64) -> Result<(), TransportError> {
            self.pauses.push(ms);
            self.time_left_ms = self.time_left_ms.saturating_sub(ms);
            Ok(())
        }

        fn unix_time_secs(&self) -> u64 {
            1_767_225_600
        }

        fn random_u64(&mut self) -> u64 {
            7
        }
    }

    const OK: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
    const RUN: &str = r#"{"subAction":"run","subActionParams":{"body":"{\"messages\":[]}"}}"#;
    const STREAM: &str =
        r#"{"subAction":"stream","subActionParams":{"body":"{\"messages\":[]}","stream":true}}"#;

    fn connector() -> Connector {
        connector_at("Other", "http://127.0.0.1:9/v1")
    }

    pub(super) fn connector_at(provider: &str, url: &str) -> Connector {
        let config = Value::parse(
            format!(r#"{{"apiProvider":"{provider}","apiUrl":"{url}","defaultModel":"gpt-4o"}}"#)
                .as_bytes(),
        )
        .unwrap();
        let secrets = Value::parse(br#"{"apiKey":"sk-unit-test-key-123"}"#).unwrap();
        config::validate_connector("c", "n", &config, &secrets, &["*".to_owned()]).unwrap()
    }

    fn deployment(max_attempts: u32) -> Deployment {
        Deployment {
            retry: RetryPolicy {
                max_attempts,
                initial_delay_ms: 100,
                max_delay_ms: 1_000,
            },
            ..Deployment::default()
        }
    }

    fn run(max_attempts: u32, params: &str, script: &mut Script) -> Execution {
        execute(&connector(), &deployment(max_attempts), params, script)
    }

    fn status(e: &Execution) -> Option<u16> {
        e.outcome.as_ref().err().and_then(|f| f.upstream_status)
    }

    #[test]
    fn a_429_is_retried_after_the_upstreams_hint() {
        let mut script = Script::new(vec![
            Ok((429, vec![("retry-after-ms", "40")], "{}")),
            Ok((503, vec![("retry-after", "1")], "{}")),
            Ok((200, vec![], OK)),
        ]);
        let e = run(3, RUN, &mut script);
        assert!(e.outcome.is_ok(), "{:?}", e.outcome);
        assert_eq!((e.attempts, script.sent), (3, 3));
        assert_eq!(script.pauses, [40, 1_000]);
    }

    #[test]
    fn connection_failures_back_off_with_jitter_and_the_last_failure_stands() {
        let mut script = Script::new(vec![
            Err(TransportError::ConnectionRefused),
            Err(TransportError::ConnectionReset),
            Err(TransportError::ConnectionRefused),
        ]);
        let e = run(3, RUN, &mut script);
        // Jitter: the draw (7) modulo the cap plus one: 7 % 101, then 7 % 201.
        assert_eq!(script.pauses, [7, 7]);
        assert_eq!(e.attempts, 3);
        let failure = e.outcome.unwrap_err();
        assert_eq!(
            failure.kind,
            crate::failure::FailureKind::Transport {
                code: "ECONNREFUSED".into()
            }
        );
    }

    #[test]
    fn what_is_not_retryable_is_returned_at_once() {
        // A 400, a name that does not resolve, and the default policy.
        let mut script = Script::new(vec![Ok((400, vec![], r#"{"error":{"message":"bad"}}"#))]);
        let e = run(3, RUN, &mut script);
        assert_eq!(
            (status(&e), e.attempts, script.pauses.len()),
            (Some(400), 1, 0)
        );
        let mut script = Script::new(vec![Err(TransportError::NameNotResolved)]);
        assert_eq!(run(3, RUN, &mut script).attempts, 1);
        let mut script = Script::new(vec![Ok((503, vec![], "{}"))]);
        let e = run(1, RUN, &mut script);
        assert_eq!((status(&e), e.attempts), (Some(503), 1));
        // A hint longer than maxDelay is not waited for.
        let mut script = Script::new(vec![Ok((429, vec![("retry-after", "2")], "{}"))]);
        let e = run(3, RUN, &mut script);
        assert_eq!(
            (status(&e), e.attempts, script.pauses.len()),
            (Some(429), 1, 0)
        );
        // Nor one that would outlast the deadline.
        let mut script = Script::new(vec![Ok((429, vec![("retry-after-ms", "500")], "{}"))]);
        script.time_left_ms = 400;
        assert_eq!(run(3, RUN, &mut script).attempts, 1);
        // Params refused: nothing sent, no attempt.
        let mut script = Script::new(vec![]);
        let e = run(3, r#"{"subAction":"nope"}"#, &mut script);
        assert_eq!((e.attempts, script.sent), (0, 0));
    }

    #[test]
    fn a_stream_is_retried_only_before_its_2xx_head() {
        let mut script = Script::new(vec![
            Ok((502, vec![], "bad gateway")),
            Ok((
                200,
                vec![("content-type", "text/event-stream")],
                "data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
            )),
        ]);
        let e = run(2, STREAM, &mut script);
        assert!(e.outcome.is_ok(), "{:?}", e.outcome);
        assert_eq!(e.attempts, 2);
    }
}

#[cfg(test)]
mod api_tests {
    //! `responses` and `embeddings` executed whole: URL, usage, estimates, failures.

    use super::tests::{Script, connector_at};
    use super::*;
    use crate::failure::FailureKind;
    use crate::usage::UsageSource;

    const CHAT_URL: &str = "http://127.0.0.1:9/v1/chat/completions";

    fn responses(body: &str) -> String {
        format!(
            r#"{{"subAction":"responses","subActionParams":{{"body":{}}}}}"#,
            crate::json::quote(body)
        )
    }

    fn embeddings(body: &str) -> String {
        format!(
            r#"{{"subAction":"embeddings","subActionParams":{{"body":{}}}}}"#,
            crate::json::quote(body)
        )
    }

    const RESPONSE: &str = r#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"Hello!","annotations":[]}]}],"usage":{"input_tokens":9,"output_tokens":3,"total_tokens":12}}"#;

    #[test]
    fn responses_report_input_and_output_tokens_as_prompt_and_completion() {
        let mut script = Script::new(vec![Ok((200, vec![], RESPONSE))]);
        let e = execute(
            &connector_at("OpenAI", "https://api.openai.com/v1/chat/completions"),
            &Deployment::default(),
            &responses(r#"{"model":"gpt-4.1","input":"Hi"}"#),
            &mut script,
        );
        assert_eq!(e.outcome.unwrap().to_json(), RESPONSE);
        assert_eq!(e.usage, TokenUsage::reported(9, 3, 12));
        assert_eq!(e.estimate, None);
        assert_eq!(
            script.requests,
            [(
                "https://api.openai.com/v1/responses".to_owned(),
                r#"{"model":"gpt-4.1","input":"Hi"}"#.to_owned()
            )]
        );
    }

    #[test]
    fn responses_without_usage_ask_for_an_estimate_of_input_and_output() {
        let without_usage = r#"{"id":"resp_1","object":"response","model":"gpt-4o-mini","output":[{"type":"message","content":[{"type":"output_text","text":"Hello!"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}]}"#;
        let mut script = Script::new(vec![Ok((200, vec![], without_usage))]);
        let e = execute(
            &connector_at("Other", CHAT_URL),
            &Deployment::default(),
            &responses(r#"{"input":"Hi","instructions":"Be brief."}"#),
            &mut script,
        );
        assert!(e.outcome.is_ok(), "{:?}", e.outcome);
        assert_eq!(e.usage.source, UsageSource::Unavailable);
        let estimate = e.estimate.expect("an estimate");
        assert_eq!(
            estimate.prompt_text,
            "<|start|>system\nBe brief.<|end|>\n<|start|>user\nHi<|end|>"
        );
        assert_eq!(estimate.completion_text, "Hello!\nf\n{}");
        assert_eq!(estimate.encoding.as_str(), "o200k_base");
        assert_eq!(script.requests[0].0, "http://127.0.0.1:9/v1/responses");
    }

    #[test]
    fn embeddings_report_prompt_tokens_and_pass_the_data_through() {
        let answer = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1e-3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let mut script = Script::new(vec![Ok((200, vec![], answer))]);
        let e = execute(
            &connector_at(
                "Azure OpenAI",
                "https://r.openai.azure.com/openai/deployments/emb/chat/completions?api-version=2024-10-21",
            ),
            &Deployment::default(),
            &embeddings(r#"{"input":"Hi"}"#),
            &mut script,
        );
        assert_eq!(e.outcome.unwrap().to_json(), answer);
        assert_eq!(e.usage, TokenUsage::reported(4, 0, 4));
        assert_eq!(e.estimate, None);
        assert_eq!(
            script.requests[0].0,
            "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
    }

    #[test]
    fn an_unmappable_url_fails_as_not_mapped_and_sends_nothing() {
        let mut script = Script::new(vec![]);
        let e = execute(
            &connector_at("Azure OpenAI", "https://apim.example.com/llm/chat"),
            &Deployment::default(),
            &responses(r#"{"input":"Hi"}"#),
            &mut script,
        );
        let failure = e.outcome.unwrap_err();
        assert_eq!(failure.kind, FailureKind::NotMapped);
        assert_eq!(
            failure.service_message,
            "The connector's URL cannot be mapped to the Responses API: Azure URL is not a deployment URL (.../openai/deployments/{name}/chat/completions?api-version=...)"
        );
        assert!(!failure.retry);
        assert_eq!(
            (e.attempts, e.request_body_bytes, script.sent),
            (0, None, 0)
        );
    }

    #[test]
    fn api_http_errors_map_as_for_chat() {
        let mut script = Script::new(vec![Ok((
            400,
            vec![],
            r#"{"error":{"message":"Unsupported parameter: 'temperature'","type":"invalid_request_error"}}"#,
        ))]);
        let e = execute(
            &connector_at("OpenAI", "https://api.openai.com/v1/chat/completions"),
            &Deployment::default(),
            &responses(r#"{"model":"o3","input":"Hi","temperature":0}"#),
            &mut script,
        );
        let failure = e.outcome.unwrap_err();
        assert_eq!(failure.kind, FailureKind::Http { status: 400 });
        assert_eq!(
            failure.service_message,
            "Status code: 400. Message: API Error: Bad Request - Unsupported parameter: 'temperature'"
        );
        assert_eq!(e.estimate, None);
    }

    #[test]
    fn a_response_that_is_not_an_object_is_invalid() {
        let mut script = Script::new(vec![Ok((200, vec![], "<html>"))]);
        let e = execute(
            &connector_at("Other", CHAT_URL),
            &Deployment::default(),
            &embeddings(r#"{"input":"Hi"}"#),
            &mut script,
        );
        let failure = e.outcome.unwrap_err();
        assert_eq!(failure.kind, FailureKind::ResponseInvalid);
        assert_eq!(failure.upstream_status, Some(200));
    }
}

#[cfg(test)]
mod validate_tests {
    //! A connector nested deeper than C50's limit (`Definition::validate`).

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
