//! `otlp+http(s)://HOST:PORT[/PREFIX]`: OTLP/HTTP with protobuf (`PREFIX/v1/traces`,
//! `PREFIX/v1/metrics`), per the OpenTelemetry GenAI semantic conventions (cli.md "Usage
//! sinks"): one `CLIENT` span per execution, and the histograms `gen_ai.client.token.usage`
//! and `gen_ai.client.operation.duration`.
//!
//! The OpenTelemetry SDK makes the data and `opentelemetry-otlp` encodes and sends it; this
//! module drives both from the sink's task, so nothing runs outside the gateway's runtime and
//! no SDK batch processor or periodic reader (each with its own thread and queue) sits between
//! the buffer and the wire. Spans are built directly as `SpanData` with the execution's own
//! start and end. Measurements go into the SDK's histograms when a batch is made; the metrics
//! are cumulative, collected by a manual reader and exported after each batch's spans, so an
//! export that fails loses nothing: the next one carries the same totals. The exporter's own
//! retries are off; the sink's queue retries with backoff.
//!
//! Not reported: a token count whose source is `unavailable` (the conventions forbid counts
//! that were not obtained), a response model the execution did not return (streams: the
//! stream summary does not carry the chunks' `model`).

use super::http::SinkHttp;
use super::queue::{Outcome, Shipper};
use crate::execution::{Failure, FailureKind, Finished, UsageSource};
use anyhow::{Context, Result};
use bytes::Bytes;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, SpanData, SpanEvents, SpanExporter as _, SpanLinks,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// `gen_ai.operation.name`: every sub-action of the connector is a chat completion.
const OPERATION: &str = "chat";
/// The conventions' bucket boundaries for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// The conventions' bucket boundaries for `gen_ai.client.operation.duration` (seconds).
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// One finished execution, as the OTLP sink reports it. Made on the request path (cheap: no
/// parsing beyond what [`request_model`] and [`response_model`] did), turned into a span and
/// measurements by the sink's task.
#[derive(Debug)]
pub(crate) struct GenAiCall {
    pub(crate) connector_id: String,
    /// `gen_ai.provider.name`.
    pub(crate) provider: &'static str,
    pub(crate) request_model: Option<String>,
    pub(crate) response_model: Option<String>,
    /// The connector's `apiUrl` (for `server.address` and `server.port`).
    pub(crate) api_url: Option<String>,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// Input and output tokens; `None` when the source is `unavailable`.
    pub(crate) tokens: Option<(u64, u64)>,
    pub(crate) usage_source: &'static str,
    /// `error.type` of a failed execution.
    pub(crate) error_type: Option<String>,
}

impl GenAiCall {
    /// The call for `finished`; `config` is the connector's public `config` object.
    pub(crate) fn new(
        connector_id: &str,
        config: Option<&serde_json::Value>,
        finished: &Finished,
        request_model: Option<String>,
    ) -> GenAiCall {
        let text = |key: &str| {
            config
                .and_then(|c| c.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let provider = match config
            .and_then(|c| c.get("apiProvider"))
            .and_then(|v| v.as_str())
        {
            Some("Azure OpenAI") => "azure.ai.openai",
            _ => "openai",
        };
        let usage = finished.usage;
        GenAiCall {
            connector_id: connector_id.to_owned(),
            provider,
            request_model: request_model.or_else(|| text("defaultModel")),
            response_model: match &finished.outcome {
                Ok(Some(data)) => response_model(data),
                _ => None,
            },
            api_url: text("apiUrl"),
            start: finished.started,
            end: finished.ended,
            tokens: (usage.source != UsageSource::Unavailable)
                .then_some((usage.prompt_tokens, usage.completion_tokens)),
            usage_source: usage.source.name(),
            error_type: finished.outcome.as_ref().err().map(error_type),
        }
    }
}

/// `error.type` of a failure: the upstream's status code, the transport's code, or the kind.
fn error_type(failure: &Failure) -> String {
    match &failure.kind {
        FailureKind::Http { status } => status.to_string(),
        FailureKind::Transport { code } => code.clone(),
        FailureKind::Params => "params".to_owned(),
        FailureKind::Denied => "denied".to_owned(),
        FailureKind::Timeout => "timeout".to_owned(),
        FailureKind::ResponseInvalid => "response_invalid".to_owned(),
        FailureKind::Stream => "stream".to_owned(),
        FailureKind::Canceled => "canceled".to_owned(),
        FailureKind::TlsRefused => "tls_refused".to_owned(),
        FailureKind::Sandbox => "sandbox".to_owned(),
        FailureKind::NotMapped => "not_mapped".to_owned(),
    }
}

#[derive(Deserialize)]
struct WithModel {
    #[serde(default)]
    model: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "subActionParams", default)]
    sub_action_params: Option<SubActionParams>,
}

#[derive(Deserialize)]
struct SubActionParams {
    #[serde(default)]
    model: Option<serde_json::Value>,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

fn as_model(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The model an execution's params ask for: `subActionParams.model` (`invokeAI` and the
/// like), else the `model` of `subActionParams.body` (`run`, `stream`, the OpenAI route).
/// `None`: the connector's `defaultModel` applies.
pub(crate) fn request_model(params: &str) -> Option<String> {
    let params: Params = serde_json::from_str(params).ok()?;
    let sub = params.sub_action_params?;
    if let Some(model) = as_model(sub.model) {
        return Some(model);
    }
    match sub.body? {
        serde_json::Value::String(body) => {
            as_model(serde_json::from_str::<WithModel>(&body).ok()?.model)
        }
        _ => None,
    }
}

/// The `model` of a non-streaming execution's data (a chat completion).
fn response_model(data: &str) -> Option<String> {
    as_model(serde_json::from_str::<WithModel>(data).ok()?.model)
}

/// Sends the exporters' requests through the sink's client, on the sink's task.
#[derive(Debug)]
struct Transport(Arc<SinkHttp>);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Transport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        self.0.send(request).await.map_err(Into::into)
    }
}

/// The manual reader, shared between the meter provider (which registers it) and the sink.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One OTLP sink.
pub(super) struct Otlp {
    spans: opentelemetry_otlp::SpanExporter,
    metrics: opentelemetry_otlp::MetricExporter,
    reader: SharedReader,
    /// Keeps the metrics pipeline alive.
    _provider: SdkMeterProvider,
    token_usage: Histogram<u64>,
    duration: Histogram<f64>,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

/// A batch: its spans until they are delivered, and whether the metrics still need exporting.
pub(super) struct OtlpBatch {
    spans: Vec<SpanData>,
    metrics_due: bool,
}

impl Otlp {
    /// Exporters for `base` (`http(s)://HOST:PORT[/PREFIX]`, no trailing `/`) through `http`.
    pub(super) fn new(base: &str, http: SinkHttp) -> Result<Otlp> {
        let http = Arc::new(http);
        let no_retry = opentelemetry_otlp::RetryPolicy::disabled();
        let mut spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Transport(http.clone()))
            .with_endpoint(format!("{base}/v1/traces"))
            .with_retry_policy(no_retry.clone())
            .build()
            .context("cannot set up the OTLP span exporter")?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(Transport(http))
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_retry_policy(no_retry)
            .with_temporality(Temporality::Cumulative)
            .build()
            .context("cannot set up the OTLP metric exporter")?;
        let resource = resource();
        spans.set_resource(&resource);
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader.clone())
            .build();
        let scope = InstrumentationScope::builder("openai-connector")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = provider.meter_with_scope(scope.clone());
        let token_usage = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used.")
            .with_boundaries(TOKEN_BUCKETS.to_vec())
            .build();
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        Ok(Otlp {
            spans,
            metrics,
            reader,
            _provider: provider,
            token_usage,
            duration,
            ids: RandomIdGenerator::default(),
            scope,
        })
    }

    /// Records `call`'s measurements and returns its span.
    fn observe(&self, call: &GenAiCall) -> SpanData {
        let mut common = vec![
            KeyValue::new("gen_ai.operation.name", OPERATION),
            KeyValue::new("gen_ai.provider.name", call.provider),
        ];
        if let Some(model) = &call.request_model {
            common.push(KeyValue::new("gen_ai.request.model", model.clone()));
        }
        if let Some(model) = &call.response_model {
            common.push(KeyValue::new("gen_ai.response.model", model.clone()));
        }
        if let Some((address, port)) = call.api_url.as_deref().and_then(server) {
            common.push(KeyValue::new("server.address", address));
            common.push(KeyValue::new("server.port", i64::from(port)));
        }
        if let Some((input, output)) = call.tokens {
            for (kind, count) in [("input", input), ("output", output)] {
                let mut attributes = common.clone();
                attributes.push(KeyValue::new("gen_ai.token.type", kind));
                self.token_usage.record(count, &attributes);
            }
        }
        let mut attributes = common;
        if let Some(error) = &call.error_type {
            attributes.push(KeyValue::new("error.type", error.clone()));
        }
        let seconds = call
            .end
            .duration_since(call.start)
            .unwrap_or_default()
            .as_secs_f64();
        self.duration.record(seconds, &attributes);

        if let Some((input, output)) = call.tokens {
            attributes.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                i64::try_from(input).unwrap_or(i64::MAX),
            ));
            attributes.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                i64::try_from(output).unwrap_or(i64::MAX),
            ));
        }
        attributes.push(KeyValue::new(
            "openai_connector.connector.id",
            call.connector_id.clone(),
        ));
        attributes.push(KeyValue::new(
            "openai_connector.usage.source",
            call.usage_source,
        ));
        let name = match &call.request_model {
            Some(model) => Cow::Owned(format!("{OPERATION} {model}")),
            None => Cow::Borrowed(OPERATION),
        };
        SpanData {
            span_context: SpanContext::new(
                self.ids.new_trace_id(),
                self.ids.new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name,
            start_time: call.start,
            end_time: call.end.max(call.start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match &call.error_type {
                Some(error) => Status::error(error.clone()),
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

impl Shipper for Otlp {
    type Item = Arc<GenAiCall>;
    type Batch = OtlpBatch;

    fn prepare(&mut self, items: Vec<Arc<GenAiCall>>) -> OtlpBatch {
        OtlpBatch {
            spans: items.iter().map(|call| self.observe(call)).collect(),
            metrics_due: true,
        }
    }

    async fn ship(&mut self, batch: &mut OtlpBatch) -> Outcome {
        let mut outcome = Outcome::default();
        if !batch.spans.is_empty() {
            if let Err(e) = self.spans.export(batch.spans.clone()).await {
                outcome.retry = Some(format!("exporting spans failed: {e}"));
                return outcome;
            }
            outcome.delivered = batch.spans.len();
            batch.spans.clear();
        }
        if batch.metrics_due {
            let mut metrics = ResourceMetrics::default();
            let exported = match MetricReader::collect(&self.reader, &mut metrics) {
                Ok(()) => self.metrics.export(&metrics).await,
                Err(e) => Err(e),
            };
            match exported {
                Ok(()) => batch.metrics_due = false,
                Err(e) => outcome.retry = Some(format!("exporting metrics failed: {e}")),
            }
        }
        outcome
    }
}

/// `service.name` is `openai-connector` unless `OTEL_SERVICE_NAME` (or
/// `OTEL_RESOURCE_ATTRIBUTES`) names it.
fn resource() -> opentelemetry_sdk::Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = opentelemetry_sdk::Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("openai-connector").build()
    }
}

/// `server.address` and `server.port` of an `apiUrl`.
fn server(api_url: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(api_url).ok()?;
    let host = url.host_str()?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Some((host, url.port_or_known_default()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_model_comes_from_the_params() {
        let run = r#"{"subAction":"run","subActionParams":{"body":"{\"model\":\"gpt-4.1\",\"messages\":[]}"}}"#;
        assert_eq!(request_model(run).as_deref(), Some("gpt-4.1"));
        let invoke = r#"{"subAction":"invokeAI","subActionParams":{"messages":[],"model":"o3"}}"#;
        assert_eq!(request_model(invoke).as_deref(), Some("o3"));
        let none = r#"{"subAction":"stream","subActionParams":{"body":"{\"messages\":[]}","stream":true}}"#;
        assert_eq!(request_model(none), None);
        assert_eq!(request_model("not json"), None);
        assert_eq!(
            request_model(r#"{"subActionParams":{"body":"{\"model\":7}"}}"#),
            None
        );
    }

    #[test]
    fn error_types_are_low_cardinality() {
        let failure = |kind| Failure {
            kind,
            upstream_status: None,
            service_message: "a long message with details".into(),
            retry: true,
        };
        assert_eq!(
            error_type(&failure(FailureKind::Http { status: 429 })),
            "429"
        );
        assert_eq!(
            error_type(&failure(FailureKind::Transport {
                code: "ECONNREFUSED".into()
            })),
            "ECONNREFUSED"
        );
        assert_eq!(error_type(&failure(FailureKind::Timeout)), "timeout");
    }

    #[test]
    fn server_of_an_api_url() {
        assert_eq!(
            server("https://api.openai.com/v1/chat/completions"),
            Some(("api.openai.com".into(), 443))
        );
        assert_eq!(server("http://[::1]:8080/v1"), Some(("::1".into(), 8080)));
        assert_eq!(server("nope"), None);
    }
}
