//! Kibana's OpenAI connector (`.gen-ai`) as a WebAssembly component.
//!
//! The pure modules here implement `shared/spec/contract.md` and build and test natively; only
//! `component` (compiled for `wasm32` alone) touches the WIT bindings and `wasi:http`.

// No `unsafe` anywhere but in the bindings that wit-bindgen generates for the component
// (`component::bindings`, the only item allowed to use it).
#![cfg_attr(not(target_arch = "wasm32"), forbid(unsafe_code))]
#![cfg_attr(target_arch = "wasm32", deny(unsafe_code))]
#![warn(unreachable_pub)]

pub mod actions;
mod api_url;
pub mod chat_stream;
pub mod config;
mod embeddings;
pub mod estimate;
pub mod failure;
pub mod gateway;
pub mod json;
pub mod params;
mod pki;
pub mod plan;
pub mod protocol;
pub mod redaction;
mod redirect;
pub mod request;
pub mod response;
pub mod responses_api;
pub mod responses_stream;
pub mod retry;
mod schema;
pub mod settings;
pub mod sse;
pub mod streaming;
pub mod transport;
pub mod units;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod component;
