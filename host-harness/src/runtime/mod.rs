//! The wasmtime embedding: one engine and one pre-linked component per process, a fresh
//! `Store` per call.
//!
//! - `bindings`: the generated bindings, private to this module.
//! - `conv`: every conversion between binding records and the harness's own types.
//! - `delay`: the guest's delays, ended when its execution is cancelled.
//! - `instance`: compiling and instantiating the component, and calling its exports.
//! - `sse_wire`: reading the SSE decoder's results against the chunk that was sent.

mod bindings;
mod conv;
mod delay;
mod instance;
mod sse_wire;

pub use instance::{
    ChatDecoder, ChatStream, CodeCache, EMBEDDED_COMPONENT, Harness, Instance, ResponsesDecoder,
    SseDecoder,
};
pub(crate) use instance::{Launched, StreamExecution};
pub use sse_wire::{EventSpans, SpanEvent, uncut};
