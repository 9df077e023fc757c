//! Usage sinks (`--usage-sink URL`, repeatable; cli.md "Usage sinks"): where every finished
//! execution is also sent, besides the event log.
//!
//! - `elasticsearch+http(s)://HOST:PORT/INDEX` (`elasticsearch`): the event-log documents.
//! - `otlp+http(s)://HOST:PORT[/PREFIX]` (`otlp`): GenAI spans and metrics.
//!
//! Recording hands each sink its document through a bounded buffer and returns; one task per
//! sink ships batches with retries (`queue`). `/metrics` shows each sink's counters, and
//! shutdown flushes the buffers within the grace period.

mod elasticsearch;
mod http;
mod otlp;
mod queue;

pub(crate) use otlp::request_model;

use super::metrics::escape;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use queue::{DROP_REASONS, Queue, Shipper};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// The environment variable holding the Elasticsearch sinks' credentials.
pub(crate) const AUTH_VAR: &str = "OPENAI_CONNECTOR_SINK_AUTH";

struct Sink<T> {
    /// The URL as given (it holds no credentials: they are refused in URLs).
    name: String,
    queue: Arc<Queue<T>>,
}

/// The configured sinks.
#[derive(Default)]
pub(crate) struct Sinks {
    elasticsearch: Vec<Sink<Arc<str>>>,
    otlp: Vec<Sink<Arc<otlp::GenAiCall>>>,
}

/// A `--usage-sink` URL, checked.
enum Target {
    Elasticsearch {
        https: bool,
        host: String,
        port: u16,
        bulk_path: String,
    },
    Otlp {
        https: bool,
        host: String,
        port: u16,
        /// `http(s)://HOST:PORT[/PREFIX]`.
        base: String,
    },
}

/// Parses one `--usage-sink` value; errors name it without any credentials.
fn parse(text: &str) -> Result<Target> {
    let url = url::Url::parse(text)
        .map_err(|e| anyhow!("--usage-sink {}: not a URL: {e}", without_credentials(text)))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "--usage-sink {}: credentials do not belong in the URL; set {AUTH_VAR}",
            without_credentials(text)
        );
    }
    let bad = |why: &str| anyhow!("--usage-sink {text}: {why}");
    let (kind, https) = match url.scheme() {
        "elasticsearch+http" => ("elasticsearch", false),
        "elasticsearch+https" => ("elasticsearch", true),
        "otlp+http" => ("otlp", false),
        "otlp+https" => ("otlp", true),
        _ => {
            return Err(bad(
                "expected elasticsearch+http(s)://HOST:PORT/INDEX or otlp+http(s)://HOST:PORT",
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("the URL names no host"))?
        .to_owned();
    let port = url.port().unwrap_or(if https { 443 } else { 80 });
    if url.fragment().is_some() {
        return Err(bad("the URL may not have a fragment"));
    }
    let path = url.path().trim_end_matches('/');
    if kind == "otlp" {
        if url.query().is_some() {
            return Err(bad("an OTLP URL takes no query"));
        }
        let scheme = if https { "https" } else { "http" };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        return Ok(Target::Otlp {
            https,
            base: format!("{scheme}://{authority}{path}"),
            host,
            port,
        });
    }
    let (prefix, index) = path.rsplit_once('/').unwrap_or(("", path));
    if index.is_empty() {
        return Err(bad(
            "the URL names no index (elasticsearch+http://HOST:PORT/INDEX)",
        ));
    }
    let decoded = percent_encoding::percent_decode_str(index).decode_utf8_lossy();
    if decoded.starts_with(['-', '_', '+'])
        || decoded.chars().any(|c| {
            c.is_uppercase()
                || matches!(
                    c,
                    '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
                )
        })
    {
        return Err(bad(&format!(
            "\"{decoded}\" is not a usable index or data stream name (lower case, no \\ / * ? \" < > | space , # :, not starting with - _ +)"
        )));
    }
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    Ok(Target::Elasticsearch {
        https,
        host,
        port,
        bulk_path: format!("{prefix}/{index}/_bulk{query}"),
    })
}

/// `text` with anything between `://` and `@` hidden.
pub(crate) fn without_credentials(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://[REDACTED]@{}", &text[..start], &text[at + 1..])
        }
        _ => text.to_owned(),
    }
}

/// The `Authorization` value from [`AUTH_VAR`]: `user:password` (Basic), `ApiKey KEY`, or a
/// bare API key (`ApiKey` is added). Marked sensitive; never in a message.
fn authorization(value: &str) -> Result<::http::HeaderValue> {
    let value = value.trim();
    if value.is_empty() {
        bail!("{AUTH_VAR} is set but empty");
    }
    let header = if value.starts_with("ApiKey ") || value.starts_with("Basic ") {
        value.to_owned()
    } else if value.contains(':') {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    } else {
        format!("ApiKey {value}")
    };
    let mut header = ::http::HeaderValue::try_from(header)
        .map_err(|_| anyhow!("{AUTH_VAR} holds characters an HTTP header cannot carry"))?;
    header.set_sensitive(true);
    Ok(header)
}

impl Sinks {
    /// Checks `urls` and starts one task per sink on the current runtime; each buffers up to
    /// `buffer` documents. `auth`: the value of [`AUTH_VAR`], if set.
    pub(crate) fn start(urls: &[String], buffer: usize, auth: Option<&str>) -> Result<Sinks> {
        let mut sinks = Sinks::default();
        let targets = urls
            .iter()
            .map(|u| parse(u).map(|t| (u, t)))
            .collect::<Result<Vec<_>>>()?;
        let needs_auth = targets
            .iter()
            .any(|(_, t)| matches!(t, Target::Elasticsearch { .. }));
        let authorization = match auth {
            Some(auth) if needs_auth => Some(authorization(auth)?),
            _ => None,
        };
        for (name, target) in targets {
            match target {
                Target::Elasticsearch {
                    https,
                    host,
                    port,
                    bulk_path,
                } => {
                    let shipper = elasticsearch::Elasticsearch {
                        http: http::SinkHttp::new(https, &host, port)
                            .with_context(|| format!("--usage-sink {name}"))?,
                        bulk_path,
                        authorization: authorization.clone(),
                    };
                    sinks.elasticsearch.push(spawn(name, buffer, shipper));
                }
                Target::Otlp {
                    https,
                    host,
                    port,
                    base,
                } => {
                    let http = http::SinkHttp::new(https, &host, port)
                        .with_context(|| format!("--usage-sink {name}"))?;
                    let shipper = otlp::Otlp::new(&base, http)
                        .with_context(|| format!("--usage-sink {name}"))?;
                    sinks.otlp.push(spawn(name, buffer, shipper));
                }
            }
        }
        Ok(sinks)
    }

    /// Whether an Elasticsearch sink wants event-log lines.
    pub(crate) fn wants_lines(&self) -> bool {
        !self.elasticsearch.is_empty()
    }

    /// Whether an OTLP sink wants executions (and so their request models).
    pub(crate) fn wants_calls(&self) -> bool {
        !self.otlp.is_empty()
    }

    /// Hands an event-log line to every Elasticsearch sink.
    pub(crate) fn push_line(&self, line: &str) {
        let line: Arc<str> = Arc::from(line);
        for sink in &self.elasticsearch {
            sink.queue.push(line.clone());
        }
    }

    /// Hands a finished execution to every OTLP sink.
    pub(crate) fn push_call(
        &self,
        connector_id: &str,
        config: Option<&serde_json::Value>,
        finished: &crate::execution::Finished,
        request_model: Option<String>,
    ) {
        let call = Arc::new(otlp::GenAiCall::new(
            connector_id,
            config,
            finished,
            request_model,
        ));
        for sink in &self.otlp {
            sink.queue.push(call.clone());
        }
    }

    /// Ships what is buffered until `by` (shutdown); logs what could not be delivered.
    pub(crate) async fn flush(&self, by: Instant) {
        let flushes = self
            .elasticsearch
            .iter()
            .map(|s| flush_one(s, by))
            .collect::<Vec<_>>();
        let otlp = self
            .otlp
            .iter()
            .map(|s| flush_one(s, by))
            .collect::<Vec<_>>();
        for f in flushes {
            f.await;
        }
        for f in otlp {
            f.await;
        }
    }

    /// Appends the sinks' counters to `/metrics`.
    pub(crate) fn render(&self, out: &mut String) {
        let rows: Vec<(&str, &queue::Stats, usize)> = self
            .elasticsearch
            .iter()
            .map(|s| (s.name.as_str(), &s.queue.stats, s.queue.buffered()))
            .chain(
                self.otlp
                    .iter()
                    .map(|s| (s.name.as_str(), &s.queue.stats, s.queue.buffered())),
            )
            .collect();
        if rows.is_empty() {
            return;
        }
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(
            out,
            "openai_connector_usage_sink_sent_total",
            "counter",
            "Usage documents a sink accepted, by sink.",
        );
        for (name, stats, _) in &rows {
            let _ = writeln!(
                out,
                "openai_connector_usage_sink_sent_total{{sink=\"{}\"}} {}",
                escape(name),
                stats.sent.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "openai_connector_usage_sink_failed_batches_total",
            "counter",
            "Batch attempts that failed (sink down, refused, or some items to try again), by sink.",
        );
        for (name, stats, _) in &rows {
            let _ = writeln!(
                out,
                "openai_connector_usage_sink_failed_batches_total{{sink=\"{}\"}} {}",
                escape(name),
                stats.failed_batches.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "openai_connector_usage_sink_buffered",
            "gauge",
            "Usage documents waiting for a sink or being sent, by sink.",
        );
        for (name, _, buffered) in &rows {
            let _ = writeln!(
                out,
                "openai_connector_usage_sink_buffered{{sink=\"{}\"}} {buffered}",
                escape(name)
            );
        }
        header(
            out,
            "openai_connector_usage_sink_dropped_total",
            "counter",
            "Usage documents dropped, by sink and reason (overflow: the buffer was full; refused: the sink refused them for good; shutdown: undelivered at the end of the shutdown grace).",
        );
        for (name, stats, _) in &rows {
            for (reason, n) in DROP_REASONS.iter().zip(&stats.dropped) {
                let _ = writeln!(
                    out,
                    "openai_connector_usage_sink_dropped_total{{sink=\"{}\",reason=\"{reason}\"}} {}",
                    escape(name),
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }
}

async fn flush_one<T>(sink: &Sink<T>, by: Instant) {
    let left = sink.queue.flush(by).await;
    if left > 0 {
        tracing::warn!(
            "usage sink {}: {left} document(s) not delivered by the end of the shutdown grace; dropped",
            sink.name
        );
    }
}

fn spawn<S: Shipper>(name: &str, buffer: usize, shipper: S) -> Sink<S::Item> {
    let queue = Queue::new(buffer);
    tokio::spawn(queue::run(name.to_owned(), queue.clone(), shipper));
    Sink {
        name: name.to_owned(),
        queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_path(url: &str) -> String {
        match parse(url).unwrap() {
            Target::Elasticsearch { bulk_path, .. } => bulk_path,
            Target::Otlp { .. } => panic!("not elasticsearch"),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            bulk_path("elasticsearch+http://127.0.0.1:9200/gen-ai-usage"),
            "/gen-ai-usage/_bulk"
        );
        assert_eq!(
            bulk_path("elasticsearch+https://es.example/proxy/logs-genai-default?pipeline=p"),
            "/proxy/logs-genai-default/_bulk?pipeline=p"
        );
        match parse("otlp+http://127.0.0.1:4318").unwrap() {
            Target::Otlp { base, port, .. } => {
                assert_eq!(base, "http://127.0.0.1:4318");
                assert_eq!(port, 4318);
            }
            Target::Elasticsearch { .. } => panic!("not otlp"),
        }
        match parse("otlp+https://collector.example/otel/").unwrap() {
            Target::Otlp { base, port, .. } => {
                assert_eq!(base, "https://collector.example/otel");
                assert_eq!(port, 443);
            }
            Target::Elasticsearch { .. } => panic!("not otlp"),
        }
        for (url, message) in [
            ("http://h:9200/i", "expected elasticsearch+http(s)"),
            ("elasticsearch+http://h:9200/", "names no index"),
            ("elasticsearch+http://h:9200/Usage", "not a usable index"),
            ("elasticsearch+http://h:9200/_x", "not a usable index"),
            ("otlp+http://h:4318?x=1", "takes no query"),
            ("nonsense", "not a URL"),
        ] {
            let e = format!("{:#}", parse(url).err().unwrap());
            assert!(e.contains(message), "{url}: {e}");
            assert!(e.starts_with("--usage-sink "), "{e}");
        }
    }

    // Credentials never appear in messages: the URL's are refused without echoing them.
    #[test]
    fn credentials_stay_out_of_urls_and_messages() {
        let e = format!(
            "{:#}",
            parse("elasticsearch+http://elastic:s3cr3t-PASS@h:9200/i")
                .err()
                .unwrap()
        );
        assert!(!e.contains("s3cr3t-PASS") && !e.contains("elastic:"), "{e}");
        assert!(e.contains(AUTH_VAR), "{e}");
        let e = format!("{:#}", parse("nonsense://u:s3cr3t-PASS@").err().unwrap());
        assert!(!e.contains("s3cr3t-PASS"), "{e}");
    }

    #[test]
    fn authorization_forms() {
        let basic = authorization("elastic:changeme").unwrap();
        assert_eq!(basic.to_str().unwrap(), "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert!(basic.is_sensitive());
        assert_eq!(
            authorization("ApiKey abc==").unwrap().to_str().unwrap(),
            "ApiKey abc=="
        );
        assert_eq!(
            authorization("VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==")
                .unwrap()
                .to_str()
                .unwrap(),
            "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
        );
        let e = authorization("  ").unwrap_err().to_string();
        assert_eq!(e, format!("{AUTH_VAR} is set but empty"));
        let e = authorization("ApiKey se\ncret").unwrap_err().to_string();
        assert!(!e.contains("cret"), "{e}");
    }
}
