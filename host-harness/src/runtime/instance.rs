//! The component compiled and linked once ([`Harness`]), and one sandboxed instance of it per
//! call ([`Instance`]), whose methods call the component's exports in the harness's types.

use super::bindings::{self, actions};
use super::conv;
use super::sse_wire::EventSpans;
use crate::connector_file::ConnectorFile;
use crate::execution::{
    BuildError, Execution, PreparedConnector, RequestPlan, ResponsesAssembled, StreamItem,
    StreamSummary, ValidatedConnector,
};
use crate::outbound::{OutboundHooks, OutboundPolicy};
use crate::sandbox::{self, Sandbox, SandboxLimits, Sandboxed};
use crate::settings::Settings;
use anyhow::{Context, Result};
use openai_connector::responses_stream::ResponsesEvent;
use openai_connector::sse::Event;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The component built from this repository, embedded at build time (see `build.rs`).
pub static EMBEDDED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/openai_connector.wasm"));

/// The state of one `Store`: WASI, wasi-http, the outbound policy and the sandbox.
struct StoreState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    sandbox: Sandbox,
}

impl Sandboxed for StoreState {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

impl super::delay::Delays for StoreState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    fn cancelled(&self) -> super::delay::Cancelled {
        Box::pin(self.hooks.cancelled())
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Where compiled code is cached between processes.
#[derive(Clone, Debug, Default)]
pub enum CodeCache {
    /// `$XDG_CACHE_HOME/openai-connector` or `~/.cache/openai-connector`.
    #[default]
    Default,
    /// A directory of your choice.
    Directory(PathBuf),
    /// Compile every time.
    Disabled,
}

impl CodeCache {
    fn directory(&self) -> Option<PathBuf> {
        match self {
            CodeCache::Disabled => None,
            CodeCache::Directory(dir) => Some(dir.clone()),
            CodeCache::Default => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("openai-connector")),
        }
    }
}

/// The component, compiled and linked once; cheap to instantiate per call.
#[derive(Clone)]
pub struct Harness {
    engine: Engine,
    pre: bindings::ConnectorPre<StoreState>,
    slots: u32,
}

impl Harness {
    /// Loads the embedded component, with room for 64 instances at once.
    pub fn embedded(cache: CodeCache) -> Result<Self> {
        Self::load(None, cache, sandbox::DEFAULT_SLOTS)
    }

    /// Loads a component from a `.wasm` file, with room for 64 instances at once.
    pub fn from_file(path: &Path, cache: CodeCache) -> Result<Self> {
        Self::load(Some(path), cache, sandbox::DEFAULT_SLOTS)
    }

    /// Loads the component in `file` (the embedded one when `None`) with room for `slots`
    /// instances at once (one more fails to instantiate).
    pub fn load(file: Option<&Path>, cache: CodeCache, slots: u32) -> Result<Self> {
        match file {
            None => Self::from_bytes(EMBEDDED_COMPONENT, cache, slots),
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read component file {}", path.display()))?;
                Self::from_bytes(&bytes, cache, slots)
                    .with_context(|| format!("cannot load component file {}", path.display()))
            }
        }
    }

    /// Compiles (or loads from the code cache) and links `bytes`.
    fn from_bytes(bytes: &[u8], cache: CodeCache, slots: u32) -> Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        sandbox::configure(&mut config, slots);
        // `perf record` can name guest functions when the engine writes /tmp/perf-PID.map
        // (how the speed work in benches/RESULTS.md found where wasm time goes).
        if std::env::var_os("OPENAI_CONNECTOR_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = cache.directory() {
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            // A cache that cannot be set up costs start-up time, not correctness.
            match wasmtime::Cache::new(cache_config) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => tracing::warn!("compiled-code cache disabled: {e:#}"),
            }
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;
        let component = Component::from_binary(&engine, bytes)
            .map_err(anyhow::Error::from)
            .context("cannot compile the component")?;
        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // After wasmtime-wasi's clocks, whose `subscribe-duration` it replaces.
        super::delay::add_to_linker(&mut linker)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component's imports cannot be satisfied")?;
        let pre = bindings::ConnectorPre::new(pre)?;
        sandbox::start_epoch_ticker(&engine);
        Ok(Harness { engine, pre, slots })
    }

    /// How many instances can exist at once; one more fails to instantiate.
    pub(crate) fn max_instances(&self) -> usize {
        self.slots as usize
    }

    /// A fresh, sandboxed instance whose outgoing requests follow `policy`, with the default
    /// [`SandboxLimits`].
    pub async fn instantiate(&self, policy: Arc<OutboundPolicy>) -> Result<Instance> {
        self.instantiate_limited(policy, SandboxLimits::default())
            .await
    }

    /// A fresh, sandboxed instance in its own `Store` limited by `limits`.
    pub async fn instantiate_limited(
        &self,
        policy: Arc<OutboundPolicy>,
        limits: SandboxLimits,
    ) -> Result<Instance> {
        let state = StoreState {
            // No environment, arguments, files or stdio: the component needs none.
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks::new(policy),
            sandbox: Sandbox::new(limits),
        };
        let mut store = Store::new(&self.engine, state);
        Sandbox::confine(&mut store);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .context("cannot instantiate the component")?;
        Ok(Instance { store, bindings })
    }
}

/// An `sse.decoder` resource of an [`Instance`].
#[derive(Clone, Copy, Debug)]
pub struct SseDecoder(ResourceAny);

/// An `sse.chat-stream` resource of an [`Instance`].
#[derive(Clone, Copy, Debug)]
pub struct ChatStream(ResourceAny);

/// An `sse.chat-decoder` resource of an [`Instance`].
#[derive(Clone, Copy, Debug)]
pub struct ChatDecoder(ResourceAny);

/// An `sse.responses-decoder` resource of an [`Instance`].
#[derive(Clone, Copy, Debug)]
pub struct ResponsesDecoder(ResourceAny);

/// An `actions.stream-execution` resource of an [`Instance`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamExecution(ResourceAny);

/// How `actions.start` went for a valid connector.
pub(crate) enum Launched {
    /// The execution has ended.
    Ended(Execution),
    /// A streaming response is arriving.
    Streaming(StreamExecution),
}

/// One instance of the component in its own `Store`.
pub struct Instance {
    store: Store<StoreState>,
    bindings: bindings::Connector,
}

impl Instance {
    /// `validation.validate`; `Err` holds `validate`'s lines.
    pub async fn validate(
        &mut self,
        connector: &ConnectorFile,
        settings: &Settings,
    ) -> Result<Result<ValidatedConnector, Vec<String>>> {
        let result = self
            .bindings
            .connector_openai_validation()
            .call_validate(
                &mut self.store,
                &conv::definition(connector),
                &conv::deployment(settings),
            )
            .await?;
        Ok(result.map(conv::validated).map_err(conv::validation_lines))
    }

    /// `requests.build`: the request the component would send for `params_json`.
    pub async fn build_request(
        &mut self,
        connector: &ConnectorFile,
        settings: &Settings,
        params_json: &str,
    ) -> Result<Result<RequestPlan, BuildError>> {
        let result = self
            .bindings
            .connector_openai_requests()
            .call_build(
                &mut self.store,
                &conv::definition(connector),
                &conv::deployment(settings),
                params_json,
            )
            .await?;
        Ok(result.map(conv::request_plan).map_err(conv::build_error))
    }

    /// `actions.execute` of a prepared connector.
    pub(crate) async fn execute(
        &mut self,
        connector: &PreparedConnector,
        settings: &Settings,
        params_json: &str,
    ) -> Result<Execution> {
        let execution = self
            .bindings
            .connector_openai_actions()
            .call_execute(
                &mut self.store,
                &conv::to_prepared(connector),
                &conv::deployment(settings),
                params_json,
            )
            .await?;
        Ok(conv::execution(execution))
    }

    /// `actions.start` of a prepared connector.
    pub(crate) async fn start(
        &mut self,
        connector: &PreparedConnector,
        settings: &Settings,
        params_json: &str,
    ) -> Result<Launched> {
        let started = self
            .bindings
            .connector_openai_actions()
            .call_start(
                &mut self.store,
                &conv::to_prepared(connector),
                &conv::deployment(settings),
                params_json,
            )
            .await?;
        Ok(match started {
            actions::Started::Ended(e) => Launched::Ended(conv::execution(e)),
            actions::Started::Streaming(handle) => Launched::Streaming(StreamExecution(handle)),
        })
    }

    /// `stream-execution.next`.
    pub(crate) async fn stream_next(
        &mut self,
        stream: StreamExecution,
    ) -> Result<Option<StreamItem>> {
        let item = self
            .bindings
            .connector_openai_actions()
            .stream_execution()
            .call_next(&mut self.store, stream.0)
            .await?;
        Ok(item.map(conv::stream_item))
    }

    /// `stream-execution.finish`, then drops the resource.
    pub(crate) async fn stream_finish(&mut self, stream: StreamExecution) -> Result<StreamSummary> {
        let summary = self
            .bindings
            .connector_openai_actions()
            .stream_execution()
            .call_finish(&mut self.store, stream.0)
            .await?;
        stream.0.resource_drop_async(&mut self.store).await?;
        Ok(conv::stream_summary(summary))
    }

    /// `sse.decoder` constructor.
    pub async fn sse_decoder(&mut self, max_event_bytes: u32) -> Result<SseDecoder> {
        let decoder = self
            .bindings
            .connector_openai_sse()
            .decoder()
            .call_constructor(&mut self.store, max_event_bytes)
            .await?;
        Ok(SseDecoder(decoder))
    }

    /// `sse.decoder.feed`: the events `chunk` completes, or the decoding error.
    pub async fn sse_feed(
        &mut self,
        decoder: SseDecoder,
        chunk: &[u8],
    ) -> Result<Result<Vec<Event>, String>> {
        let result = self
            .bindings
            .connector_openai_sse()
            .decoder()
            .call_feed(&mut self.store, decoder.0, chunk)
            .await?;
        Ok(result.map(conv::sse_events))
    }

    /// `sse.decoder.feed-raw-spans`; [`EventSpans::events`] reads the result with the same
    /// `chunk`.
    pub async fn sse_feed_raw_spans(
        &mut self,
        decoder: SseDecoder,
        chunk: &[u8],
    ) -> Result<Result<EventSpans, String>> {
        let result = self
            .bindings
            .connector_openai_sse()
            .decoder()
            .call_feed_raw_spans(&mut self.store, decoder.0, chunk)
            .await?;
        Ok(result.map(conv::event_spans))
    }

    /// `sse.decoder.finish`.
    pub async fn sse_finish(&mut self, decoder: SseDecoder) -> Result<Result<Vec<Event>, String>> {
        let result = self
            .bindings
            .connector_openai_sse()
            .decoder()
            .call_finish(&mut self.store, decoder.0)
            .await?;
        Ok(result.map(conv::sse_events))
    }

    /// `sse.chat-stream` constructor.
    pub async fn chat_stream(&mut self) -> Result<ChatStream> {
        let chat = self
            .bindings
            .connector_openai_sse()
            .chat_stream()
            .call_constructor(&mut self.store)
            .await?;
        Ok(ChatStream(chat))
    }

    /// `sse.chat-stream.push-event`: one event's type and data.
    pub async fn chat_push(
        &mut self,
        chat: ChatStream,
        event_type: &str,
        data: &str,
    ) -> Result<Result<Vec<String>, String>> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .chat_stream()
            .call_push_event(&mut self.store, chat.0, event_type, data)
            .await?)
    }

    /// `sse.chat-stream.finish`.
    pub async fn chat_finish(&mut self, chat: ChatStream) -> Result<String> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .chat_stream()
            .call_finish(&mut self.store, chat.0)
            .await?)
    }

    /// `sse.chat-decoder` constructor.
    pub async fn chat_decoder(&mut self, max_event_bytes: u32) -> Result<ChatDecoder> {
        let decoder = self
            .bindings
            .connector_openai_sse()
            .chat_decoder()
            .call_constructor(&mut self.store, max_event_bytes)
            .await?;
        Ok(ChatDecoder(decoder))
    }

    /// `sse.chat-decoder.feed`: the delta lines, each followed by LF.
    pub async fn chat_decoder_feed(
        &mut self,
        decoder: ChatDecoder,
        chunk: &[u8],
    ) -> Result<Result<Vec<u8>, String>> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .chat_decoder()
            .call_feed(&mut self.store, decoder.0, chunk)
            .await?)
    }

    /// `sse.chat-decoder.finish`: the decoding error, if decoding had stopped.
    pub async fn chat_decoder_finish(
        &mut self,
        decoder: ChatDecoder,
    ) -> Result<Result<(), String>> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .chat_decoder()
            .call_finish(&mut self.store, decoder.0)
            .await?)
    }

    /// `sse.chat-decoder.completion`: the completion assembled so far.
    pub async fn chat_decoder_completion(&mut self, decoder: ChatDecoder) -> Result<Vec<u8>> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .chat_decoder()
            .call_completion(&mut self.store, decoder.0)
            .await?)
    }

    /// `sse.responses-decoder` constructor.
    pub async fn responses_decoder(&mut self, max_event_bytes: u32) -> Result<ResponsesDecoder> {
        let decoder = self
            .bindings
            .connector_openai_sse()
            .responses_decoder()
            .call_constructor(&mut self.store, max_event_bytes)
            .await?;
        Ok(ResponsesDecoder(decoder))
    }

    /// `sse.responses-decoder.feed`: the typed events of `chunk`.
    pub async fn responses_decoder_feed(
        &mut self,
        decoder: ResponsesDecoder,
        chunk: &[u8],
    ) -> Result<Result<Vec<ResponsesEvent>, String>> {
        let events = self
            .bindings
            .connector_openai_sse()
            .responses_decoder()
            .call_feed(&mut self.store, decoder.0, chunk)
            .await?;
        Ok(events.map(|events| events.into_iter().map(conv::responses_event).collect()))
    }

    /// `sse.responses-decoder.finish`: the decoding error, if decoding had stopped.
    pub async fn responses_decoder_finish(
        &mut self,
        decoder: ResponsesDecoder,
    ) -> Result<Result<(), String>> {
        Ok(self
            .bindings
            .connector_openai_sse()
            .responses_decoder()
            .call_finish(&mut self.store, decoder.0)
            .await?)
    }

    /// `sse.responses-decoder.output-text`, `function-calls`, `usage` and `end`: what was
    /// assembled.
    pub async fn responses_decoder_assembled(
        &mut self,
        decoder: ResponsesDecoder,
    ) -> Result<ResponsesAssembled> {
        let sse = self.bindings.connector_openai_sse().responses_decoder();
        let output_text = sse.call_output_text(&mut self.store, decoder.0).await?;
        let function_calls = sse.call_function_calls(&mut self.store, decoder.0).await?;
        let usage = sse.call_usage(&mut self.store, decoder.0).await?;
        let end = sse.call_end(&mut self.store, decoder.0).await?;
        Ok(conv::responses_assembled(
            output_text,
            function_calls,
            usage,
            end,
        ))
    }
}
