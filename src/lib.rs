//! Kibana's OpenAI connector (`.gen-ai`) as a WebAssembly component.
//!
//! The pure modules here implement `shared/spec/contract.md` and build and test natively; only
//! `component` (compiled for `wasm32` alone) touches the WIT bindings and `wasi:http`.

pub mod actions;
pub mod chat_stream;
pub mod config;
pub mod estimate;
pub mod gateway;
pub mod json;
pub mod params;
pub mod pki;
pub mod request;
pub mod response;
pub mod schema;
pub mod sse;
pub mod streaming;
pub mod units;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod component;
