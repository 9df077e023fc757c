//! Every conversion between the WIT types and the pure modules' types, in one place.

use super::bindings::exports::connector::openai::sse as wit_sse;
use super::bindings::exports::connector::openai::types as wit;
use crate::actions::{Definition, Execution};
use crate::config::{self, Config, Connector, KeyFormat, Provider, Secrets, VerificationMode};
use crate::estimate::EstimationInput;
use crate::failure::{Failure, FailureKind};
use crate::json::Object;
use crate::params::SubAction;
use crate::plan::Deployment;
use crate::responses_stream::{End, OutputItem, ResponsesEvent};
use crate::retry::RetryPolicy;
use crate::sse;
use crate::usage::{TokenUsage, UsageSource};

pub(super) fn deployment(settings: &wit::DeploymentSettings) -> Deployment {
    Deployment {
        allowed_hosts: settings.allowed_hosts.clone(),
        response_timeout_ms: settings.response_timeout_ms,
        max_response_content_length: settings.max_response_content_length,
        retry: RetryPolicy {
            max_attempts: settings.retry.max_attempts,
            initial_delay_ms: settings.retry.initial_delay_ms,
            max_delay_ms: settings.retry.max_delay_ms,
        },
    }
}

pub(super) fn definition(d: &wit::ConnectorDefinition) -> Definition<'_> {
    Definition {
        id: &d.id,
        name: &d.name,
        config_json: &d.config_json,
        secrets_json: &d.secrets_json,
    }
}

pub(super) fn validation_errors(e: config::ValidationErrors) -> wit::ValidationErrors {
    wit::ValidationErrors {
        config: e.config,
        secrets: e.secrets,
    }
}

fn provider(p: Provider) -> wit::Provider {
    match p {
        Provider::OpenAi => wit::Provider::OpenAi,
        Provider::AzureOpenAi => wit::Provider::AzureOpenAi,
        Provider::Other => wit::Provider::Other,
    }
}

fn from_wit_provider(p: wit::Provider) -> Provider {
    match p {
        wit::Provider::OpenAi => Provider::OpenAi,
        wit::Provider::AzureOpenAi => Provider::AzureOpenAi,
        wit::Provider::Other => Provider::Other,
    }
}

/// What executions take from a validated connector: everything the request needs, nothing of
/// the TLS profile (the host applies it).
pub(super) fn prepared(connector: &Connector) -> wit::PreparedConnector {
    let c = &connector.config;
    wit::PreparedConnector {
        id: connector.id.clone(),
        name: connector.name.clone(),
        provider: provider(c.provider),
        api_url: c.api_url.clone(),
        default_model: c.default_model.clone(),
        organization_id: c.organization_id.clone(),
        project_id: c.project_id.clone(),
        headers: c.headers.clone(),
        api_key: connector.secrets.api_key.clone(),
    }
}

/// The connector an execution runs, from what `validate` prepared. Nothing is validated again
/// (the allow-list is still checked before sending, C44).
pub(super) fn from_prepared(p: wit::PreparedConnector) -> Connector {
    Connector {
        id: p.id,
        name: p.name,
        config: Config {
            provider: from_wit_provider(p.provider),
            api_url: p.api_url,
            default_model: p.default_model,
            organization_id: p.organization_id,
            project_id: p.project_id,
            headers: p.headers,
            verification_mode: None,
            normalized: Object::default(),
        },
        secrets: Secrets {
            api_key: p.api_key,
            identity: None,
            ca_der: Vec::new(),
        },
    }
}

pub(super) fn validated(connector: &Connector) -> wit::ValidatedConnector {
    let tls = connector.tls_profile().map(|p| wit::TlsProfile {
        verification: match p.verification {
            VerificationMode::Full => wit::VerificationMode::Full,
            VerificationMode::Certificate => wit::VerificationMode::Certificate,
            VerificationMode::None => wit::VerificationMode::None,
        },
        identity: p.identity.map(|i| wit::ClientIdentity {
            chain_der: i.chain_der,
            key_der: i.key_der,
            key_format: match i.key_format {
                KeyFormat::Pkcs8 => wit::KeyFormat::Pkcs8,
                KeyFormat::Pkcs1 => wit::KeyFormat::Pkcs1,
                KeyFormat::Sec1 => wit::KeyFormat::Sec1,
            },
        }),
        ca_der: p.ca_der,
    });
    wit::ValidatedConnector {
        prepared: prepared(connector),
        connector_json: crate::actions::connector_json(connector),
        tls,
    }
}

pub(super) fn usage(u: TokenUsage) -> wit::TokenUsage {
    wit::TokenUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.total_tokens,
        source: match u.source {
            UsageSource::Reported => wit::UsageSource::Reported,
            UsageSource::Estimated => wit::UsageSource::Estimated,
            UsageSource::Unavailable => wit::UsageSource::Unavailable,
        },
    }
}

pub(super) fn failure(f: Failure) -> wit::Failure {
    wit::Failure {
        service_message: f.service_message,
        retry: f.retry,
        kind: match f.kind {
            FailureKind::Params => wit::FailureKind::Params,
            FailureKind::Denied => wit::FailureKind::Denied,
            FailureKind::Http { status } => wit::FailureKind::Http(status),
            FailureKind::Transport { code } => wit::FailureKind::Transport(code),
            FailureKind::Timeout => wit::FailureKind::Timeout,
            FailureKind::ResponseInvalid => wit::FailureKind::ResponseInvalid,
            FailureKind::Stream => wit::FailureKind::Stream,
            FailureKind::Canceled => wit::FailureKind::Canceled,
            FailureKind::TlsRefused => wit::FailureKind::TlsRefused,
            FailureKind::Sandbox => wit::FailureKind::Sandbox,
            FailureKind::NotMapped => wit::FailureKind::NotMapped,
        },
        upstream_status: f.upstream_status,
    }
}

pub(super) fn execution(e: Execution) -> wit::Execution {
    wit::Execution {
        outcome: e.outcome.map(|data| data.to_json()).map_err(failure),
        usage: usage(e.usage),
        estimate: e.estimate.map(estimation_input),
        request_body_bytes: e.request_body_bytes,
        attempts: e.attempts,
    }
}

pub(super) fn estimation_input(e: EstimationInput) -> wit::EstimationInput {
    wit::EstimationInput {
        encoding: e.encoding.as_str().to_owned(),
        prompt_text: e.prompt_text,
        completion_text: e.completion_text,
    }
}

pub(super) fn sub_action(s: SubAction) -> wit::SubAction {
    match s {
        SubAction::Run => wit::SubAction::Run,
        SubAction::Test => wit::SubAction::Test,
        SubAction::Stream => wit::SubAction::Stream,
        SubAction::InvokeAi => wit::SubAction::InvokeAi,
        SubAction::InvokeStream => wit::SubAction::InvokeStream,
        SubAction::InvokeAsyncIterator => wit::SubAction::InvokeAsyncIterator,
        SubAction::Responses => wit::SubAction::Responses,
        SubAction::Embeddings => wit::SubAction::Embeddings,
    }
}

pub(super) fn from_wit_sub_action(s: wit::SubAction) -> SubAction {
    match s {
        wit::SubAction::Run => SubAction::Run,
        wit::SubAction::Test => SubAction::Test,
        wit::SubAction::Stream => SubAction::Stream,
        wit::SubAction::InvokeAi => SubAction::InvokeAi,
        wit::SubAction::InvokeStream => SubAction::InvokeStream,
        wit::SubAction::InvokeAsyncIterator => SubAction::InvokeAsyncIterator,
        wit::SubAction::Responses => SubAction::Responses,
        wit::SubAction::Embeddings => SubAction::Embeddings,
    }
}

pub(super) fn event(e: sse::Event) -> wit_sse::Event {
    wit_sse::Event {
        event_type: e.event_type,
        data: e.data,
        id: e.last_event_id,
        retry: e.retry,
    }
}

fn responses_item(i: OutputItem) -> wit_sse::ResponsesItem {
    wit_sse::ResponsesItem {
        output_index: i.output_index,
        item_type: i.item_type,
        id: i.id,
        call_id: i.call_id,
        name: i.name,
        arguments: i.arguments,
    }
}

pub(super) fn responses_event(e: ResponsesEvent) -> wit_sse::ResponsesEvent {
    use wit_sse::ResponsesEvent as W;
    match e {
        ResponsesEvent::Created { id, model } => {
            W::Created(wit_sse::ResponsesCreated { id, model })
        }
        ResponsesEvent::OutputTextDelta {
            output_index,
            content_index,
            delta,
        } => W::OutputTextDelta(wit_sse::ResponsesTextDelta {
            output_index,
            content_index,
            delta,
        }),
        ResponsesEvent::OutputItemAdded(i) => W::OutputItemAdded(responses_item(i)),
        ResponsesEvent::OutputItemDone(i) => W::OutputItemDone(responses_item(i)),
        ResponsesEvent::FunctionCallArgumentsDelta {
            output_index,
            delta,
        } => W::FunctionCallArgumentsDelta(wit_sse::ResponsesArguments {
            output_index,
            text: delta,
        }),
        ResponsesEvent::FunctionCallArgumentsDone {
            output_index,
            arguments,
        } => W::FunctionCallArgumentsDone(wit_sse::ResponsesArguments {
            output_index,
            text: arguments,
        }),
        ResponsesEvent::Completed { usage: u } => W::Completed(u.map(usage)),
        ResponsesEvent::Incomplete { reason, usage: u } => {
            W::Incomplete(wit_sse::ResponsesIncomplete {
                reason,
                usage: u.map(usage),
            })
        }
        ResponsesEvent::Failed { message } => W::Failed(message),
        ResponsesEvent::Error { message } => W::Error(message),
        ResponsesEvent::Other { event_type } => W::Other(event_type),
    }
}

pub(super) fn responses_end(e: &End) -> wit_sse::ResponsesEnd {
    match e {
        End::Completed => wit_sse::ResponsesEnd::Completed,
        End::Incomplete(reason) => wit_sse::ResponsesEnd::Incomplete(reason.clone()),
        End::Failed(message) => wit_sse::ResponsesEnd::Failed(message.clone()),
        End::Error(message) => wit_sse::ResponsesEnd::Error(message.clone()),
    }
}
