//! The transport policy for the component's outgoing requests, applied in the wasi-http
//! `send_request` hook.
//!
//! The component decides *what* to send; this module decides *whether and how*: the allow-list
//! is checked before any byte leaves (C11, C44, C66), names are resolved (and, with
//! `denyPrivateNetworks`, non-public addresses refused after resolution), connections made with
//! the connect timeout, directly or through the proxy (C129), TLS set up from the connector's
//! profile (section 9), keep-alive connections reused from the process's `ConnectionPool`, and
//! failures reported to the guest as wasi-http error codes that carry C74's Node-style codes.
//!
//! - `policy`: what an execution's requests may do, and sending one.
//! - `hook`: the `WasiHttpHooks` each `Store` carries.
//! - `connect`: TCP, TLS and proxy tunnels.
//! - `ssrf`: the allow-list and the non-public address checks.
//! - `body`: response bodies with the between-bytes timeout and connection reuse.
//! - `cancel`, `error`: cancelling an execution's requests; hyper's errors as wasi-http's.

mod body;
mod cancel;
mod connect;
mod error;
mod hook;
mod policy;
mod ssrf;

pub use cancel::Cancel;
pub(crate) use hook::OutboundHooks;
pub use policy::OutboundPolicy;
