//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Written by hand rather than with `prometheus-client`, which cannot keep this exposition: it
//! writes OpenMetrics, where a counter's `# TYPE` line names the family without `_total`
//! (`# TYPE openai_connector_requests counter`), bucket bounds are floats (`le="120.0"`, not
//! `le="120"`) and the text ends with `# EOF`; the names and lines below are what scrapers and
//! the tests rely on. The surface is a few counters, one gauge and one histogram.

use super::connection::Closed;
use openai_connector::protocol::Refusal;
pub(crate) use openai_connector::protocol::Route;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets; `+Inf` follows.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The usage sources (C106), in exposition order.
pub(crate) const SOURCES: [&str; 3] = ["reported", "estimated", "unavailable"];

/// The `route` label of a route's metrics.
fn label(route: Route) -> &'static str {
    match route {
        Route::Execute => "execute",
        Route::ChatCompletions => "chat_completions",
        Route::Responses => "responses",
        Route::Embeddings => "embeddings",
        // Answered without an execution: never counted.
        Route::Models => "models",
    }
}

#[derive(Default)]
struct PerConnector {
    requests: BTreeMap<Route, u64>,
    failures: BTreeMap<Route, u64>,
    traps: u64,
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    executions_by_source: [u64; 3],
    prompt_tokens: [u64; 3],
    completion_tokens: [u64; 3],
}

#[derive(Default)]
struct Inner {
    connectors: BTreeMap<String, PerConnector>,
    unauthorized: u64,
    in_flight: u64,
    /// Requests answered `503` before admission: queue timeout, shutting down.
    not_admitted: [u64; 2],
    /// Connections the gateway closed: header timeout, idle timeout, evicted, refused.
    connections_closed: [u64; 4],
}

/// The `reason` labels of `openai_connector_not_admitted_total`.
const NOT_ADMITTED: [&str; 2] = ["queue_timeout", "shutting_down"];
/// The `reason` labels of `openai_connector_connections_closed_total`.
const CONNECTIONS_CLOSED: [&str; 4] = ["header_timeout", "idle_timeout", "evicted", "refused"];

/// The live counters of a gateway.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

/// The client connections, as `/metrics` shows them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Connections {
    /// Open now.
    pub(crate) open: usize,
    /// The cap.
    pub(crate) max: usize,
}

/// One finished execution, as the metrics count it.
pub(crate) struct Observation<'a> {
    /// The connector's id.
    pub(crate) connector: &'a str,
    /// The route it came through.
    pub(crate) route: Route,
    /// Whether it failed.
    pub(crate) failed: bool,
    /// Whether the guest trapped (a sandbox failure).
    pub(crate) trapped: bool,
    /// Request start to last byte.
    pub(crate) latency: Duration,
    /// `reported`, `estimated` or `unavailable`.
    pub(crate) source: &'a str,
    /// Prompt tokens.
    pub(crate) prompt_tokens: u64,
    /// Completion tokens.
    pub(crate) completion_tokens: u64,
}

impl Metrics {
    /// Counters for `connectors`, all starting at 0 so that every series exists from the start.
    pub(crate) fn new<'a>(connectors: impl IntoIterator<Item = &'a str>) -> Self {
        let metrics = Metrics::default();
        metrics.list_connectors(connectors);
        metrics
    }

    /// Makes every series of `connectors` exist (at 0 for a connector not seen before): at
    /// start, and for the connectors a reload adds. A connector a reload removes keeps its
    /// series (counters only grow).
    pub(crate) fn list_connectors<'a>(&self, connectors: impl IntoIterator<Item = &'a str>) {
        let mut inner = self.lock();
        for id in connectors {
            let c = inner.connectors.entry(id.to_owned()).or_default();
            for route in Route::EXECUTIONS {
                c.requests.entry(route).or_insert(0);
                c.failures.entry(route).or_insert(0);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Counters stay usable after a panic elsewhere: they hold no invariant worth poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request that was refused for a wrong or missing token.
    pub(crate) fn unauthorized(&self) {
        self.lock().unauthorized += 1;
    }

    /// A request answered `503` instead of admitted.
    pub(crate) fn not_admitted(&self, refusal: Refusal) {
        let i = match refusal {
            Refusal::QueueTimeout => 0,
            Refusal::ShuttingDown => 1,
        };
        self.lock().not_admitted[i] += 1;
    }

    /// A connection the gateway closed because its deadline passed or to make room.
    pub(crate) fn connection_closed(&self, closed: Closed) {
        let i = match closed {
            Closed::HeaderTimeout => 0,
            Closed::IdleTimeout => 1,
            Closed::Evicted => 2,
        };
        self.lock().connections_closed[i] += 1;
    }

    /// A connection closed unserved: every open one was serving a request.
    pub(crate) fn connection_refused(&self) {
        self.lock().connections_closed[3] += 1;
    }

    /// An execution started; pair with [`finished`](Self::finished).
    pub(crate) fn started(&self, connector: &str, route: Route) {
        let mut inner = self.lock();
        inner.in_flight += 1;
        *inner
            .connectors
            .entry(connector.to_owned())
            .or_default()
            .requests
            .entry(route)
            .or_default() += 1;
    }

    /// An execution ended.
    pub(crate) fn finished(&self, o: &Observation) {
        let mut inner = self.lock();
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let c = inner.connectors.entry(o.connector.to_owned()).or_default();
        if o.failed {
            *c.failures.entry(o.route).or_default() += 1;
        }
        if o.trapped {
            c.traps += 1;
        }
        let seconds = o.latency.as_secs_f64();
        for (bucket, bound) in c.latency_buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        c.latency_count += 1;
        c.latency_sum += seconds;
        if let Some(i) = SOURCES.iter().position(|s| *s == o.source) {
            c.executions_by_source[i] += 1;
            c.prompt_tokens[i] += o.prompt_tokens;
            c.completion_tokens[i] += o.completion_tokens;
        }
    }

    /// The exposition text; `connections` are the open client connections and their cap.
    pub(crate) fn render(&self, connections: Connections) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let section = |out: &mut String, name: &str, kind: &str, help: &str, body: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            out.push_str(&body);
        };

        let mut body = String::new();
        for (id, c) in &inner.connectors {
            for (route, n) in &c.requests {
                let _ = writeln!(
                    body,
                    "openai_connector_requests_total{{connector=\"{}\",route=\"{}\"}} {n}",
                    escape(id),
                    label(*route)
                );
            }
        }
        section(
            &mut out,
            "openai_connector_requests_total",
            "counter",
            "Executions requested, by connector and route.",
            body,
        );

        let mut body = String::new();
        for (id, c) in &inner.connectors {
            for (route, n) in &c.failures {
                let _ = writeln!(
                    body,
                    "openai_connector_request_failures_total{{connector=\"{}\",route=\"{}\"}} {n}",
                    escape(id),
                    label(*route)
                );
            }
        }
        section(
            &mut out,
            "openai_connector_request_failures_total",
            "counter",
            "Executions that ended in failure (upstream errors, timeouts, sandbox traps), by connector and route.",
            body,
        );

        let mut body = String::new();
        for (id, c) in &inner.connectors {
            let id = escape(id);
            for (count, bound) in c.latency_buckets.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(
                    body,
                    "openai_connector_request_duration_seconds_bucket{{connector=\"{id}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                body,
                "openai_connector_request_duration_seconds_bucket{{connector=\"{id}\",le=\"+Inf\"}} {}\n\
                 openai_connector_request_duration_seconds_sum{{connector=\"{id}\"}} {}\n\
                 openai_connector_request_duration_seconds_count{{connector=\"{id}\"}} {}",
                c.latency_count, c.latency_sum, c.latency_count
            );
        }
        section(
            &mut out,
            "openai_connector_request_duration_seconds",
            "histogram",
            "Execution latency from request to last byte, by connector.",
            body,
        );

        for (name, help, pick) in [
            (
                "openai_connector_prompt_tokens_total",
                "Prompt tokens, by connector and usage source (reported, estimated, unavailable).",
                (|c: &PerConnector| c.prompt_tokens) as fn(&PerConnector) -> [u64; 3],
            ),
            (
                "openai_connector_completion_tokens_total",
                "Completion tokens, by connector and usage source (reported, estimated, unavailable).",
                |c: &PerConnector| c.completion_tokens,
            ),
            (
                "openai_connector_executions_by_usage_source_total",
                "Finished executions, by connector and where their usage came from.",
                |c: &PerConnector| c.executions_by_source,
            ),
        ] {
            let mut body = String::new();
            for (id, c) in &inner.connectors {
                for (source, n) in SOURCES.iter().zip(pick(c)) {
                    let _ = writeln!(
                        body,
                        "{name}{{connector=\"{}\",source=\"{source}\"}} {n}",
                        escape(id)
                    );
                }
            }
            section(&mut out, name, "counter", help, body);
        }

        let mut body = String::new();
        for (id, c) in &inner.connectors {
            let _ = writeln!(
                body,
                "openai_connector_guest_traps_total{{connector=\"{}\"}} {}",
                escape(id),
                c.traps
            );
        }
        section(
            &mut out,
            "openai_connector_guest_traps_total",
            "counter",
            "Executions whose WebAssembly sandbox trapped (memory or guest time limit, guest fault).",
            body,
        );
        section(
            &mut out,
            "openai_connector_unauthorized_total",
            "counter",
            "Requests refused with 401 (wrong or missing token).",
            format!(
                "openai_connector_unauthorized_total {}\n",
                inner.unauthorized
            ),
        );
        let mut body = String::new();
        for (reason, n) in NOT_ADMITTED.iter().zip(inner.not_admitted) {
            let _ = writeln!(
                body,
                "openai_connector_not_admitted_total{{reason=\"{reason}\"}} {n}"
            );
        }
        section(
            &mut out,
            "openai_connector_not_admitted_total",
            "counter",
            "Requests answered 503 before they could start an execution, by reason.",
            body,
        );
        let mut body = String::new();
        for (reason, n) in CONNECTIONS_CLOSED.iter().zip(inner.connections_closed) {
            let _ = writeln!(
                body,
                "openai_connector_connections_closed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        section(
            &mut out,
            "openai_connector_connections_closed_total",
            "counter",
            "Client connections the gateway closed, by reason (deadline passed, evicted at the connection cap, refused at the cap).",
            body,
        );
        section(
            &mut out,
            "openai_connector_connections_open",
            "gauge",
            "Client connections open now.",
            format!("openai_connector_connections_open {}\n", connections.open),
        );
        section(
            &mut out,
            "openai_connector_connections_max",
            "gauge",
            "Client connections open at most (maxConnections).",
            format!("openai_connector_connections_max {}\n", connections.max),
        );
        section(
            &mut out,
            "openai_connector_in_flight_requests",
            "gauge",
            "Executions running now.",
            format!("openai_connector_in_flight_requests {}\n", inner.in_flight),
        );
        out
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
pub(super) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram() {
        let m = Metrics::new(["a", "we\"ird"]);
        m.started("a", Route::ChatCompletions);
        m.finished(&Observation {
            connector: "a",
            route: Route::ChatCompletions,
            failed: false,
            trapped: false,
            latency: Duration::from_millis(30),
            source: "reported",
            prompt_tokens: 9,
            completion_tokens: 2,
        });
        m.started("a", Route::Execute);
        m.finished(&Observation {
            connector: "a",
            route: Route::Execute,
            failed: true,
            trapped: true,
            latency: Duration::from_secs(200),
            source: "unavailable",
            prompt_tokens: 0,
            completion_tokens: 0,
        });
        m.unauthorized();
        m.not_admitted(Refusal::QueueTimeout);
        m.connection_closed(Closed::HeaderTimeout);
        m.connection_closed(Closed::HeaderTimeout);
        m.connection_refused();
        let text = m.render(Connections { open: 3, max: 10 });
        for line in [
            "openai_connector_not_admitted_total{reason=\"queue_timeout\"} 1",
            "openai_connector_not_admitted_total{reason=\"shutting_down\"} 0",
            "openai_connector_connections_closed_total{reason=\"header_timeout\"} 2",
            "openai_connector_connections_closed_total{reason=\"refused\"} 1",
            "openai_connector_connections_open 3",
            "openai_connector_connections_max 10",
            "# TYPE openai_connector_requests_total counter",
            "openai_connector_requests_total{connector=\"a\",route=\"chat_completions\"} 1",
            "openai_connector_requests_total{connector=\"we\\\"ird\",route=\"execute\"} 0",
            "openai_connector_requests_total{connector=\"a\",route=\"responses\"} 0",
            "openai_connector_request_failures_total{connector=\"a\",route=\"embeddings\"} 0",
            "openai_connector_request_failures_total{connector=\"a\",route=\"execute\"} 1",
            "openai_connector_request_duration_seconds_bucket{connector=\"a\",le=\"0.025\"} 0",
            "openai_connector_request_duration_seconds_bucket{connector=\"a\",le=\"0.05\"} 1",
            "openai_connector_request_duration_seconds_bucket{connector=\"a\",le=\"120\"} 1",
            "openai_connector_request_duration_seconds_bucket{connector=\"a\",le=\"+Inf\"} 2",
            "openai_connector_request_duration_seconds_count{connector=\"a\"} 2",
            "# TYPE openai_connector_request_duration_seconds histogram",
            "openai_connector_prompt_tokens_total{connector=\"a\",source=\"reported\"} 9",
            "openai_connector_completion_tokens_total{connector=\"a\",source=\"reported\"} 2",
            "openai_connector_executions_by_usage_source_total{connector=\"a\",source=\"unavailable\"} 1",
            "openai_connector_guest_traps_total{connector=\"a\"} 1",
            "openai_connector_unauthorized_total 1",
            "openai_connector_in_flight_requests 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
