//! `wasi:http/incoming-handler` of the `gateway` world: reads the request, lets
//! [`crate::gateway`] route, authenticate and run it, and writes the answer. Streamed answers
//! are written and flushed as each upstream read arrives.

use super::bindings::exports::wasi::http::incoming_handler;
use super::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use super::bindings::wasi::io::streams::{OutputStream, StreamError};
use super::transport::WasiTransport;
use crate::gateway::{self, Dispatch, Outcome, Setup};
use crate::protocol::{self, Reply};
use crate::usage::UsageSource;
use std::cell::OnceCell;

/// `blocking-write-and-flush` accepts at most 4096 bytes per call.
const WRITE_CHUNK: usize = 4096;
/// Bytes asked for per read of the request body.
const READ_CHUNK: u64 = 64 * 1024;

thread_local! {
    /// The environment does not change during an instance's life: read it once.
    static SETUP: OnceCell<Setup> = const { OnceCell::new() };
}

impl incoming_handler::Guest for super::Component {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        SETUP.with(|cell| {
            let setup = cell.get_or_init(|| {
                let setup = Setup::from_env(|name| std::env::var(name).ok());
                for problem in setup.problems() {
                    eprintln!("openai-connector gateway: misconfigured: {problem}");
                }
                setup
            });
            handle(setup, request, response_out);
        });
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

fn handle(setup: &Setup, request: IncomingRequest, response_out: ResponseOutparam) {
    let method = request.method();
    let method = method_name(&method);
    let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    // Logged without the query: it is the client's, and may hold anything.
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let authorization = request.headers().get("authorization");
    let route = match gateway::dispatch(setup, method, &target, &authorization) {
        Dispatch::Reply(reply) => {
            log(method, &path, &format!("{}", reply.status));
            return send(response_out, &reply);
        }
        Dispatch::Run(route) => route,
    };
    let Ok(served) = &setup.served else {
        unreachable!("dispatch runs a route only for a configured connector");
    };
    let body = match read_body(request) {
        Ok(body) => body,
        Err(e) => {
            let reply = match e {
                BodyError::TooLarge => protocol::body_too_large(route),
                BodyError::Failed(detail) => protocol::body_unreadable(route, &detail),
            };
            log(method, &path, &format!("{}", reply.status));
            return send(response_out, &reply);
        }
    };
    let mut transport = WasiTransport::default();
    match gateway::run(served, route, &body, &mut transport) {
        Outcome::Reply(reply) => {
            log(method, &path, &format!("{}", reply.status));
            send(response_out, &reply);
        }
        Outcome::Stream(stream) => {
            let (status, headers) = protocol::stream_head();
            let Some((response_body, mut sink)) = start_response(response_out, status, &headers)
            else {
                // The host refused the head: abandon the upstream (C68).
                drop(stream.finish());
                return;
            };
            let pumped = gateway::pump(&served.id, route, stream, &mut sink);
            drop(sink);
            let _ = OutgoingBody::finish(response_body, None);
            let usage = &pumped.summary.usage;
            let outcome = match (&pumped.summary.outcome, pumped.client_gone) {
                (_, true) => "client gone".to_owned(),
                (Ok(()), false) => "ok".to_owned(),
                (Err(f), false) => format!("failed: {}", f.service_message),
            };
            let source = match usage.source {
                UsageSource::Reported => "reported",
                UsageSource::Estimated => "estimated",
                UsageSource::Unavailable => "unavailable",
            };
            log(
                method,
                &path,
                &format!(
                    "200 stream {outcome}; usage {source} prompt={} completion={} total={}",
                    usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
                ),
            );
        }
    }
}

/// One line per request on stderr (the host's log). Service messages are already redacted
/// (C32); no header is logged.
fn log(method: &str, path: &str, what: &str) {
    eprintln!("openai-connector gateway: {method} {path} -> {what}");
}

enum BodyError {
    TooLarge,
    Failed(String),
}

fn read_body(request: IncomingRequest) -> Result<Vec<u8>, BodyError> {
    let failed = |what: &str| BodyError::Failed(what.to_owned());
    let body = request
        .consume()
        .map_err(|()| failed("body already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| failed("body stream already taken"))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(bytes) => {
                if out.len() + bytes.len() > protocol::MAX_REQUEST_BYTES {
                    return Err(BodyError::TooLarge);
                }
                out.extend_from_slice(&bytes);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(BodyError::Failed(e.to_debug_string()));
            }
        }
    }
    drop(stream);
    drop(body);
    Ok(out)
}

/// Writes to the response body, flushing each write so that the host sends it at once.
struct BodySink(OutputStream);

impl gateway::Sink for BodySink {
    fn write(&mut self, bytes: &[u8]) -> bool {
        bytes
            .chunks(WRITE_CHUNK)
            .all(|chunk| self.0.blocking_write_and_flush(chunk).is_ok())
    }
}

/// Sends the response head; returns the body and its stream.
fn start_response(
    response_out: ResponseOutparam,
    status: u16,
    headers: &[(String, String)],
) -> Option<(OutgoingBody, BodySink)> {
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).ok()?;
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).ok()?;
    let body = response.body().ok()?;
    ResponseOutparam::set(response_out, Ok(response));
    let stream = body.write().ok()?;
    Some((body, BodySink(stream)))
}

fn send(response_out: ResponseOutparam, reply: &Reply) {
    let Some((body, mut sink)) = start_response(response_out, reply.status, &reply.headers) else {
        return;
    };
    gateway::Sink::write(&mut sink, &reply.body);
    drop(sink);
    let _ = OutgoingBody::finish(body, None);
}
