//! Every conversion between the bindings' records and the harness's own types, in both
//! directions. Nothing else in the crate names a binding type.

use super::bindings::{actions, requests, sse, wit};
use super::sse_wire::EventSpans;
use crate::connector_file::ConnectorFile;
use crate::execution::{
    BuildError, EstimationInput, Execution, Failure, FailureKind, PlannedRequest,
    PreparedConnector, Provider, RequestPlan, ResponsesAssembled, StreamItem, StreamSummary, Usage,
    UsageSource, ValidatedConnector,
};
use crate::settings::Settings;
use crate::tls::{ClientIdentity, KeyFormat, TlsProfile, Verification};
use openai_connector::responses_api::FunctionCall;
use openai_connector::responses_stream::{End, OutputItem, ResponsesEvent};
use openai_connector::usage::TokenUsage;

// Harness → bindings.

/// The WIT definition of a loaded connector file.
pub(super) fn definition(connector: &ConnectorFile) -> wit::ConnectorDefinition {
    wit::ConnectorDefinition {
        id: connector.id.clone(),
        name: connector.name.clone(),
        config_json: connector.config_json.clone(),
        secrets_json: connector.secrets_json.clone(),
    }
}

/// What the component needs of the deployment settings.
pub(super) fn deployment(settings: &Settings) -> wit::DeploymentSettings {
    wit::DeploymentSettings {
        allowed_hosts: settings.deployment.allowed_hosts.clone(),
        response_timeout_ms: settings.deployment.response_timeout_ms,
        max_response_content_length: settings.deployment.max_response_content_length,
        retry: wit::RetryPolicy {
            max_attempts: settings.deployment.retry.max_attempts,
            initial_delay_ms: settings.deployment.retry.initial_delay_ms,
            max_delay_ms: settings.deployment.retry.max_delay_ms,
        },
    }
}

// Bindings → harness.

/// The one conversion of a failure record.
pub(super) fn failure(f: wit::Failure) -> Failure {
    let wit::Failure {
        service_message,
        retry,
        kind,
        upstream_status,
    } = f;
    Failure {
        kind: match kind {
            wit::FailureKind::Params => FailureKind::Params,
            wit::FailureKind::Denied => FailureKind::Denied,
            wit::FailureKind::Http(status) => FailureKind::Http { status },
            wit::FailureKind::Transport(code) => FailureKind::Transport { code },
            wit::FailureKind::Timeout => FailureKind::Timeout,
            wit::FailureKind::ResponseInvalid => FailureKind::ResponseInvalid,
            wit::FailureKind::Stream => FailureKind::Stream,
            wit::FailureKind::Canceled => FailureKind::Canceled,
            wit::FailureKind::TlsRefused => FailureKind::TlsRefused,
            wit::FailureKind::Sandbox => FailureKind::Sandbox,
            wit::FailureKind::NotMapped => FailureKind::NotMapped,
        },
        upstream_status,
        service_message,
        retry,
    }
}

/// Validation problems as `validate` prints them, config first (C17).
pub(super) fn validation_lines(errors: wit::ValidationErrors) -> Vec<String> {
    let config = errors
        .config
        .into_iter()
        .map(|p| format!("error validating action type config: {p}"));
    let secrets = errors
        .secrets
        .into_iter()
        .map(|p| format!("error validating action type secrets: {p}"));
    config.chain(secrets).collect()
}

pub(super) fn validated(v: wit::ValidatedConnector) -> ValidatedConnector {
    ValidatedConnector {
        prepared: prepared(v.prepared),
        connector_json: v.connector_json,
        tls: v.tls.map(tls_profile),
    }
}

fn prepared(p: wit::PreparedConnector) -> PreparedConnector {
    PreparedConnector {
        id: p.id,
        name: p.name,
        provider: match p.provider {
            wit::Provider::OpenAi => Provider::OpenAi,
            wit::Provider::AzureOpenAi => Provider::AzureOpenAi,
            wit::Provider::Other => Provider::Other,
        },
        api_url: p.api_url,
        default_model: p.default_model,
        organization_id: p.organization_id,
        project_id: p.project_id,
        headers: p.headers,
        api_key: p.api_key,
    }
}

/// The record `actions.execute` and `actions.start` take.
pub(super) fn to_prepared(p: &PreparedConnector) -> wit::PreparedConnector {
    wit::PreparedConnector {
        id: p.id.clone(),
        name: p.name.clone(),
        provider: match p.provider {
            Provider::OpenAi => wit::Provider::OpenAi,
            Provider::AzureOpenAi => wit::Provider::AzureOpenAi,
            Provider::Other => wit::Provider::Other,
        },
        api_url: p.api_url.clone(),
        default_model: p.default_model.clone(),
        organization_id: p.organization_id.clone(),
        project_id: p.project_id.clone(),
        headers: p.headers.clone(),
        api_key: p.api_key.clone(),
    }
}

fn tls_profile(p: wit::TlsProfile) -> TlsProfile {
    TlsProfile {
        verification: match p.verification {
            wit::VerificationMode::Full => Verification::Full,
            wit::VerificationMode::Certificate => Verification::Certificate,
            wit::VerificationMode::None => Verification::None,
        },
        ca_der: p.ca_der,
        identity: p.identity.map(|i| ClientIdentity {
            chain_der: i.chain_der,
            key_der: i.key_der,
            key_format: match i.key_format {
                wit::KeyFormat::Pkcs8 => KeyFormat::Pkcs8,
                wit::KeyFormat::Pkcs1 => KeyFormat::Pkcs1,
                wit::KeyFormat::Sec1 => KeyFormat::Sec1,
            },
        }),
    }
}

fn usage(u: wit::TokenUsage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        source: match u.source {
            wit::UsageSource::Reported => UsageSource::Reported,
            wit::UsageSource::Estimated => UsageSource::Estimated,
            wit::UsageSource::Unavailable => UsageSource::Unavailable,
        },
        tokenizer: None,
    }
}

/// An execution, its usage estimated by the host when the component asked for it.
pub(super) fn execution(e: wit::Execution) -> Execution {
    let estimate = e.estimate.map(estimation_input);
    Execution {
        outcome: e.outcome.map_err(failure),
        usage: usage(e.usage).estimated(estimate.as_ref()),
        request_body_bytes: e.request_body_bytes,
        attempts: e.attempts,
    }
}

pub(super) fn request_plan(p: wit::RequestPlan) -> RequestPlan {
    let wit::HttpRequest {
        method,
        url,
        headers,
        body,
    } = p.request;
    RequestPlan {
        streaming: p.streaming,
        request: PlannedRequest {
            method,
            url,
            headers,
            body,
        },
        total_timeout_ms: p.total_timeout_ms,
        idle_timeout_ms: p.idle_timeout_ms,
    }
}

pub(super) fn build_error(e: requests::BuildError) -> BuildError {
    match e {
        requests::BuildError::InvalidConnector(errors) => {
            BuildError::InvalidConnector(validation_lines(errors))
        }
        requests::BuildError::Refused(f) => BuildError::Refused(failure(f)),
    }
}

pub(super) fn stream_item(item: actions::StreamItem) -> StreamItem {
    match item {
        actions::StreamItem::Bytes(bytes) => StreamItem::Bytes(bytes),
        actions::StreamItem::Chunk(json) => StreamItem::Chunk(json),
    }
}

pub(super) fn stream_summary(s: actions::StreamSummary) -> StreamSummary {
    StreamSummary {
        outcome: s.outcome.map_err(failure),
        usage: usage(s.usage),
        estimate: s.estimate.map(estimation_input),
        request_body_bytes: s.request_body_bytes,
        attempts: s.attempts,
    }
}

fn estimation_input(e: wit::EstimationInput) -> EstimationInput {
    EstimationInput {
        encoding: e.encoding,
        prompt_text: e.prompt_text,
        completion_text: e.completion_text,
    }
}

fn sse_event(e: sse::Event) -> openai_connector::sse::Event {
    openai_connector::sse::Event {
        event_type: e.event_type,
        data: e.data,
        last_event_id: e.id,
        retry: e.retry,
    }
}

pub(super) fn sse_events(events: Vec<sse::Event>) -> Vec<openai_connector::sse::Event> {
    events.into_iter().map(sse_event).collect()
}

/// Moves the lists; nothing is copied.
pub(super) fn event_spans(s: sse::EventSpans) -> EventSpans {
    EventSpans {
        text: s.text,
        spans: s.spans,
        retries: s.retries,
    }
}

fn token_usage(u: wit::TokenUsage) -> TokenUsage {
    let usage = usage(u);
    TokenUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        source: match usage.source {
            UsageSource::Reported => openai_connector::usage::UsageSource::Reported,
            UsageSource::Estimated => openai_connector::usage::UsageSource::Estimated,
            UsageSource::Unavailable => openai_connector::usage::UsageSource::Unavailable,
        },
    }
}

fn responses_item(i: sse::ResponsesItem) -> OutputItem {
    OutputItem {
        output_index: i.output_index,
        item_type: i.item_type,
        id: i.id,
        call_id: i.call_id,
        name: i.name,
        arguments: i.arguments,
    }
}

/// One event of `sse.responses-decoder.feed`, in the component crate's type.
pub(super) fn responses_event(e: sse::ResponsesEvent) -> ResponsesEvent {
    use sse::ResponsesEvent as W;
    match e {
        W::Created(c) => ResponsesEvent::Created {
            id: c.id,
            model: c.model,
        },
        W::OutputTextDelta(d) => ResponsesEvent::OutputTextDelta {
            output_index: d.output_index,
            content_index: d.content_index,
            delta: d.delta,
        },
        W::OutputItemAdded(i) => ResponsesEvent::OutputItemAdded(responses_item(i)),
        W::OutputItemDone(i) => ResponsesEvent::OutputItemDone(responses_item(i)),
        W::FunctionCallArgumentsDelta(a) => ResponsesEvent::FunctionCallArgumentsDelta {
            output_index: a.output_index,
            delta: a.text,
        },
        W::FunctionCallArgumentsDone(a) => ResponsesEvent::FunctionCallArgumentsDone {
            output_index: a.output_index,
            arguments: a.text,
        },
        W::Completed(u) => ResponsesEvent::Completed {
            usage: u.map(token_usage),
        },
        W::Incomplete(i) => ResponsesEvent::Incomplete {
            reason: i.reason,
            usage: i.usage.map(token_usage),
        },
        W::Failed(message) => ResponsesEvent::Failed { message },
        W::Error(message) => ResponsesEvent::Error { message },
        W::Other(event_type) => ResponsesEvent::Other { event_type },
    }
}

/// What `sse.responses-decoder`'s accessors returned.
pub(super) fn responses_assembled(
    output_text: String,
    function_calls: Vec<sse::FunctionCall>,
    usage: Option<wit::TokenUsage>,
    end: Option<sse::ResponsesEnd>,
) -> ResponsesAssembled {
    ResponsesAssembled {
        output_text,
        function_calls: function_calls
            .into_iter()
            .map(|c| FunctionCall {
                call_id: c.call_id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        usage: usage.map(token_usage),
        end: end.map(|e| match e {
            sse::ResponsesEnd::Completed => End::Completed,
            sse::ResponsesEnd::Incomplete(reason) => End::Incomplete(reason),
            sse::ResponsesEnd::Failed(message) => End::Failed(message),
            sse::ResponsesEnd::Error(message) => End::Error(message),
        }),
    }
}
