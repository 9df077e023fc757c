//! Integration tests: the real component, loaded by the harness, against loopback upstreams.
//! Each test asserts what the upstream received and what the caller got, and cites the contract
//! rules it covers.

mod cli;
mod errors;
mod limits;
mod parity;
mod pki;
mod providers;
mod proxy;
mod redaction;
mod redirects;
mod redis_server;
mod reload;
mod responses_api;
mod retries;
mod reuse;
mod routes;
mod serve;
mod serve_limits;
mod sinks;
mod ssrf;
mod streaming;
mod support;
mod tls;
mod upstream;
mod wasmtime_serve;
