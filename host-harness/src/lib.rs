//! A wasmtime host for the OpenAI connector component, and the `openai-connector` CLI.
//!
//! The component validates connectors, builds requests and maps responses; this crate gives it
//! outbound HTTP(S) through wasi-http and owns the transport policy: allowed hosts, TLS roots,
//! client certificates and verification modes, timeouts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use openai_connector_harness::{CodeCache, ConnectorFile, Executor, Harness, Settings};
//! let executor = Executor::new(Harness::embedded(CodeCache::Default)?, Settings::default());
//! let connector = ConnectorFile::load("my-openai.json".as_ref())?;
//! let outcome = executor.execute(&connector, r#"{"subAction":"test","subActionParams":{"body":"{}"}}"#).await?;
//! # Ok(()) }
//! ```
//!
//! Where things live: `executor` (a connector validated once, then each execution: a fresh
//! instance with the connector's TLS profile, run or stream), `execution` (what the component returns, in the harness's own types), [`runtime`]
//! (wasmtime: private bindings, their conversions, instances, SSE results), `sandbox` (pooling
//! slots, memory limit, guest clock), `outbound` (the wasi-http hook: policy, connecting,
//! address checks, response bodies), `proxy`, `tls` and `pool` (the proxy, TLS configurations,
//! keep-alive connections), `settings` and `connector_file` (the input files, validated at
//! load), [`event_log`], [`output`], [`event_lines`] (the lines of `sse decode`) and [`tokenizer`] (what an execution leaves behind), and
//! [`serve`] (the HTTP gateway).
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod connector_file;
pub mod demo_upstream;
pub mod event_lines;
pub mod event_log;
mod execution;
mod executor;
mod host_name;
mod json_escape;
mod outbound;
pub mod output;
mod pool;
mod proxy;
pub mod runtime;
mod sandbox;
pub mod serve;
mod serve_settings;
mod settings;
mod tls;
pub mod tokenizer;

pub use connector_file::{ConnectorFile, LoadError};
pub use execution::{
    BuildError, Execution, Failure, FailureKind, Finished, PlannedRequest, PreparedConnector,
    Provider, RequestPlan, ResponsesAssembled, StreamItem, Usage, UsageSource, ValidatedConnector,
};
pub use executor::{ExecuteOutcome, Executor, Prepared, Started, Stream};
pub use outbound::{Cancel, OutboundPolicy};
pub use pool::{ConnectionPool, PoolLimits, PoolStats};
pub use runtime::{CodeCache, Harness};
pub use sandbox::SandboxLimits;
pub use settings::{Settings, SettingsError};
pub use tls::TlsProfile;
