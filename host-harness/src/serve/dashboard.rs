//! The token-usage dashboard: per-connector usage over time, from the event log (read at
//! start) and the executions since.
//!
//! Memory is bounded: usage is kept in one-minute buckets, at most [`MAX_BUCKETS`] per
//! connector (the oldest go first), whatever the size of the event log.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bucket width.
pub(crate) const BUCKET_SECONDS: u64 = 60;
/// Buckets kept per connector (one week of minutes).
pub(crate) const MAX_BUCKETS: usize = 7 * 24 * 60;

#[derive(Clone, Copy, Default)]
struct Bucket {
    requests: u64,
    failures: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

#[derive(Default)]
struct ConnectorUsage {
    name: String,
    /// Minute (Unix seconds / 60) → totals.
    buckets: BTreeMap<u64, Bucket>,
    totals: Bucket,
    /// Executions, prompt and completion tokens by usage source.
    by_source: BTreeMap<String, [u64; 3]>,
}

/// One execution as the dashboard counts it.
pub(crate) struct UsagePoint<'a> {
    /// Connector id.
    pub(crate) connector_id: &'a str,
    /// Connector name.
    pub(crate) connector_name: &'a str,
    /// When it ended.
    pub(crate) at: SystemTime,
    /// Whether it failed.
    pub(crate) failed: bool,
    /// `reported`, `estimated` or `unavailable`.
    pub(crate) source: &'a str,
    /// Prompt tokens.
    pub(crate) prompt_tokens: u64,
    /// Completion tokens.
    pub(crate) completion_tokens: u64,
}

/// Usage over time per connector.
#[derive(Default)]
pub(crate) struct UsageHistory {
    connectors: Mutex<BTreeMap<String, ConnectorUsage>>,
}

/// What reading an event log gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LogSummary {
    /// Execution lines counted.
    pub(crate) lines: u64,
    /// Lines that were not execution events (not JSON, or without the fields), skipped.
    pub(crate) skipped: u64,
}

impl UsageHistory {
    /// An empty history listing `connectors` (id, name) so that they show before any use.
    pub(crate) fn new<'a>(connectors: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map = connectors
            .into_iter()
            .map(|(id, name)| {
                (
                    id.to_owned(),
                    ConnectorUsage {
                        name: name.to_owned(),
                        ..ConnectorUsage::default()
                    },
                )
            })
            .collect();
        UsageHistory {
            connectors: Mutex::new(map),
        }
    }

    /// Lists the connectors a reload serves (a new one shows before any use; a renamed one
    /// shows its new name). Connectors no longer served keep their history.
    pub(crate) fn list_connectors<'a>(
        &self,
        connectors: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut map = self.lock();
        for (id, name) in connectors {
            map.entry(id.to_owned()).or_default().name = name.to_owned();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ConnectorUsage>> {
        self.connectors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one execution.
    pub(crate) fn add(&self, p: &UsagePoint) {
        let minute =
            p.at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / BUCKET_SECONDS);
        let mut map = self.lock();
        let c = map.entry(p.connector_id.to_owned()).or_default();
        if c.name.is_empty() {
            c.name = p.connector_name.to_owned();
        }
        for b in [c.buckets.entry(minute).or_default(), &mut c.totals] {
            b.requests += 1;
            b.failures += u64::from(p.failed);
            b.prompt_tokens += p.prompt_tokens;
            b.completion_tokens += p.completion_tokens;
        }
        let s = c.by_source.entry(p.source.to_owned()).or_default();
        s[0] += 1;
        s[1] += p.prompt_tokens;
        s[2] += p.completion_tokens;
        while c.buckets.len() > MAX_BUCKETS {
            c.buckets.pop_first();
        }
    }

    /// Reads an event log (one JSON line per execution, contract section 8), line by line.
    pub(crate) fn load_event_log(&self, path: &Path) -> std::io::Result<LogSummary> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LogSummary::default());
            }
            Err(e) => return Err(e),
        };
        let mut summary = LogSummary::default();
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| point_of(&v))
            {
                Some((id, name, at, failed, source, prompt, completion)) => {
                    self.add(&UsagePoint {
                        connector_id: &id,
                        connector_name: &name,
                        at,
                        failed,
                        source: &source,
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                    });
                    summary.lines += 1;
                }
                None => summary.skipped += 1,
            }
        }
        Ok(summary)
    }

    /// `/dashboard/data`.
    pub(crate) fn to_json(&self) -> Value {
        let map = self.lock();
        let connectors: Vec<Value> = map
            .iter()
            .map(|(id, c)| {
                let by_source: serde_json::Map<String, Value> = c
                    .by_source
                    .iter()
                    .map(|(s, [n, p, q])| {
                        (
                            s.clone(),
                            json!({"executions": n, "prompt_tokens": p, "completion_tokens": q}),
                        )
                    })
                    .collect();
                json!({
                    "id": id,
                    "name": c.name,
                    "requests": c.totals.requests,
                    "failures": c.totals.failures,
                    "prompt_tokens": c.totals.prompt_tokens,
                    "completion_tokens": c.totals.completion_tokens,
                    "by_source": by_source,
                    "series": c.buckets.iter().map(|(minute, b)| json!({
                        "t": minute * BUCKET_SECONDS * 1000,
                        "requests": b.requests,
                        "failures": b.failures,
                        "prompt_tokens": b.prompt_tokens,
                        "completion_tokens": b.completion_tokens,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "bucket_seconds": BUCKET_SECONDS, "connectors": connectors })
    }
}

type Point = (String, String, SystemTime, bool, String, u64, u64);

/// The dashboard's view of one event-log line (C117).
fn point_of(v: &Value) -> Option<Point> {
    let action = v.get("kibana")?.get("action")?;
    let id = action.get("id")?.as_str()?.to_owned();
    let name = action
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let event = v.get("event")?;
    let failed = event.get("outcome")?.as_str()? == "failure";
    let at = parse_rfc3339_millis(event.get("end").or_else(|| v.get("@timestamp"))?.as_str()?)?;
    let usage = action.get("execution")?.get("gen_ai")?.get("usage")?;
    let source = usage.get("source")?.as_str()?.to_owned();
    let count = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some((
        id,
        name,
        at,
        failed,
        source,
        count("prompt_tokens"),
        count("completion_tokens"),
    ))
}

/// An RFC 3339 time such as the event log writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`), to the
/// millisecond.
fn parse_rfc3339_millis(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// The page: self-contained (inline script and SVG, nothing fetched from elsewhere).
///
/// The page gets the admin token from its own URL (`/dashboard?token=...`), removes it from
/// the address bar at once, and sends it as `Authorization: Bearer` to `/dashboard/data`; opened
/// without one, it asks for it. The token is never written into the page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

/// The page's `Content-Security-Policy`: its own inline script and style, allowed by their
/// SHA-256 (no `'unsafe-inline'`), requests to its own origin only, no plugins, forms, base URL
/// changes or framing. A script injected into the page would not run.
pub(crate) fn content_security_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash("script"),
            inline_hash("style")
        )
    })
}

/// `sha256-<base64>` of the text of the page's one `<tag>` element.
fn inline_hash(tag: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let open = format!("<{tag}>");
    let start = PAGE.find(&open).map(|i| i + open.len());
    let end = PAGE.find(&format!("</{tag}>"));
    let text = match (start, end) {
        (Some(start), Some(end)) if start <= end => &PAGE[start..end],
        // The page is a constant of this crate; a test checks both elements are there.
        _ => "",
    };
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::{ExecutionRecord, Usage, event_line};
    use std::time::Duration;

    #[test]
    fn reads_event_log_lines_into_minute_buckets() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_772_359_200);
        let dir = std::env::temp_dir().join(format!("oc-dash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.log");
        let mut text = String::new();
        for (i, (p, c, ok)) in [(10, 5, true), (20, 7, true), (0, 0, false)]
            .iter()
            .enumerate()
        {
            let start = t0 + Duration::from_secs(90 * i as u64);
            text.push_str(&event_line(&ExecutionRecord {
                connector_id: "c1",
                connector_name: "One",
                start,
                end: start + Duration::from_millis(5),
                outcome: if *ok { Ok(()) } else { Err(("boom", true)) },
                usage: if *ok {
                    Usage {
                        prompt_tokens: *p,
                        completion_tokens: *c,
                        total_tokens: p + c,
                        source: "reported",
                        tokenizer: None,
                    }
                } else {
                    Usage::UNAVAILABLE
                },
                request_body_bytes: Some(3),
                attempts: None,
            }));
        }
        text.push_str("not json\n{\"x\":1}\n");
        std::fs::write(&path, text).unwrap();
        let h = UsageHistory::new([("c1", "One"), ("c2", "Two")]);
        assert_eq!(
            h.load_event_log(&path).unwrap(),
            LogSummary {
                lines: 3,
                skipped: 2
            }
        );
        let data = h.to_json();
        let c1 = &data["connectors"][0];
        assert_eq!(c1["prompt_tokens"], 30);
        assert_eq!(c1["completion_tokens"], 12);
        assert_eq!(c1["requests"], 3);
        assert_eq!(c1["failures"], 1);
        assert_eq!(c1["by_source"]["unavailable"]["executions"], 1);
        // 0 s, 90 s and 180 s after a whole minute: three buckets.
        assert_eq!(c1["series"].as_array().unwrap().len(), 3);
        assert_eq!(c1["series"][0]["t"], 1_772_359_200_000u64);
        assert_eq!(data["connectors"][1]["name"], "Two");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rfc3339() {
        assert_eq!(
            parse_rfc3339_millis("2026-03-01T10:00:00.250Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_772_359_200_250))
        );
        assert_eq!(parse_rfc3339_millis("2026-13-01T10:00:00Z"), None);
    }

    #[test]
    fn the_policy_names_the_hash_of_the_inline_script_and_style() {
        let policy = content_security_policy();
        assert!(
            policy.starts_with("default-src 'none'; script-src 'sha256-"),
            "{policy}"
        );
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}>")).count(), 1, "{tag}");
            assert_ne!(inline_hash(tag), inline_hash("nothing"), "{tag}");
        }
        assert!(
            !PAGE.contains("style=\""),
            "inline style attributes need 'unsafe-inline'"
        );
        assert!(!policy.contains("unsafe"), "{policy}");
    }
}
