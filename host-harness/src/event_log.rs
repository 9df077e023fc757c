//! The event log (contract section 8, C116–C121): one JSON line per execution, shaped like the
//! documents Kibana's event log stores for action executions.
//!
//! [`event_line`] renders a finished execution; [`EventLog`] appends lines to a file so that
//! lines from concurrent executions, and from other processes appending to the same file,
//! never interleave.
//!
//! Points the contract leaves open and this module fixes (chosen):
//! - `error` comes last, after `kibana`, in the order of C117's table.
//! - Times before 1970 or after 9999 are not expected; the year is printed with at least four
//!   digits and a `-` sign before 1 CE. Sub-millisecond digits are dropped (not rounded).
//! - An `end` before `start` (a wall clock stepped back) gives a duration of 0; callers that
//!   want an exact duration take `end` as `start` plus a monotonic elapsed time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Map, json};

/// The connector type id (C117).
const TYPE_ID: &str = ".gen-ai";

/// Token usage as the event log records it (C117, C119).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage<'a> {
    /// Prompt tokens; recorded only for `reported` and `estimated`.
    pub prompt_tokens: u64,
    /// Completion tokens; recorded only for `reported` and `estimated`.
    pub completion_tokens: u64,
    /// Total tokens; recorded only for `reported` and `estimated`.
    pub total_tokens: u64,
    /// `reported`, `estimated` or `unavailable` (C106); always recorded.
    pub source: &'a str,
    /// The encoding an estimate was counted with (`o200k_base`, `cl100k_base`); recorded only
    /// when `source` is `estimated`.
    pub tokenizer: Option<&'a str>,
}

impl Usage<'static> {
    /// No usage figure (C108, C113).
    pub const UNAVAILABLE: Usage<'static> = Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        source: "unavailable",
        tokenizer: None,
    };
}

impl Usage<'_> {
    /// Whether the counts belong in the log (C119).
    fn has_counts(&self) -> bool {
        matches!(self.source, "reported" | "estimated")
    }
}

/// One finished execution, as the event log records it (C117). It holds no secrets, header
/// values or bodies (C121), only names, times, outcome and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionRecord<'a> {
    /// The connector's id.
    pub connector_id: &'a str,
    /// The connector's name.
    pub connector_name: &'a str,
    /// When the execution started.
    pub start: SystemTime,
    /// When it ended (for streams: after the last byte or the failure, C116).
    pub end: SystemTime,
    /// `Ok` on success; on failure the service message and whether a retry may help (C120).
    pub outcome: Result<(), (&'a str, bool)>,
    /// Token usage (C106–C115).
    pub usage: Usage<'a>,
    /// The sent body's length in bytes, when a request was sent (C118).
    pub request_body_bytes: Option<u64>,
    /// Upstream attempts (cli.md "Retries"; 0 when nothing was sent), when the deployment
    /// retries: `kibana.action.execution.attempts`. Without retries the line is Kibana's (C117).
    pub attempts: Option<u32>,
}

/// The log line for `record`: one compact JSON object followed by `\n` (C116–C120).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use openai_connector_harness::event_log::{event_line, ExecutionRecord, Usage};
///
/// let start = UNIX_EPOCH + Duration::from_secs(1_772_359_200);
/// let line = event_line(&ExecutionRecord {
///     connector_id: "c1",
///     connector_name: "Mine",
///     start,
///     end: start + Duration::from_millis(20),
///     outcome: Err(("Status code: 500. Message: boom", true)),
///     usage: Usage::UNAVAILABLE,
///     request_body_bytes: None,
///     attempts: None,
/// });
/// assert!(line.starts_with(r#"{"@timestamp":"2026-03-01T10:00:00.000Z","event":{"#));
/// assert!(line.ends_with(
///     r#""error":{"message":"an error occurred while running the action: Status code: 500. Message: boom; retry: true"}}
/// "#
/// ));
/// ```
pub fn event_line(record: &ExecutionRecord) -> String {
    let id = record.connector_id;
    let name = record.connector_name;
    let duration = record
        .end
        .duration_since(record.start)
        .unwrap_or(Duration::ZERO);
    let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let (outcome, message) = match record.outcome {
        Ok(()) => (
            "success",
            format!("action executed: {TYPE_ID}:{id}: {name}"),
        ),
        Err(_) => (
            "failure",
            format!("action execution failure: {TYPE_ID}:{id}: {name}"),
        ),
    };

    let usage = &record.usage;
    let mut gen_ai_usage = Map::new();
    if usage.has_counts() {
        gen_ai_usage.insert("prompt_tokens".into(), usage.prompt_tokens.into());
        gen_ai_usage.insert("completion_tokens".into(), usage.completion_tokens.into());
        gen_ai_usage.insert("total_tokens".into(), usage.total_tokens.into());
    }
    gen_ai_usage.insert("source".into(), usage.source.into());
    if let ("estimated", Some(tokenizer)) = (usage.source, usage.tokenizer) {
        gen_ai_usage.insert("tokenizer".into(), tokenizer.into());
    }

    let mut execution = Map::new();
    execution.insert("gen_ai".into(), json!({ "usage": gen_ai_usage }));
    if let Some(bytes) = record.request_body_bytes {
        execution.insert("usage".into(), json!({ "request_body_bytes": bytes }));
    }
    if let Some(attempts) = record.attempts {
        execution.insert("attempts".into(), attempts.into());
    }

    let start = rfc3339_millis(record.start);
    let mut event = json!({
        "@timestamp": start,
        "event": {
            "provider": "actions",
            "action": "execute",
            "kind": "action",
            "outcome": outcome,
            "start": start,
            "end": rfc3339_millis(record.end),
            "duration": duration_ns,
        },
        "message": message,
        "kibana": {
            "saved_objects": [{ "rel": "primary", "type": "action", "id": id, "type_id": TYPE_ID }],
            "action": { "id": id, "name": name, "type_id": TYPE_ID, "execution": execution },
        },
    });
    if let Err((service_message, retry)) = record.outcome {
        event["error"] = json!({
            "message": format!(
                "an error occurred while running the action: {service_message}; retry: {retry}"
            ),
        });
    }

    // A `Value` built from strings and integers always serialises.
    let mut line = event.to_string();
    line.push('\n');
    line
}

/// An append-only event log file (C116).
///
/// Each [`append`](Self::append) writes one whole line with a single `write` system call on
/// a file opened with `O_APPEND`, so lines never interleave, neither between threads of this
/// process nor with other processes appending to the same file.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl EventLog {
    /// Opens `path` for appending, creating it if needed (its directory must exist).
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(EventLog {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The file this log appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the line for `record` (C116).
    pub fn append(&self, record: &ExecutionRecord) -> io::Result<()> {
        // The whole line is built before the write. With O_APPEND, Linux moves the offset to
        // the end of the file and writes in one step under the inode's lock, so one write(2)
        // of a regular file lands contiguously and whole, even with other writers of the same
        // file (other processes included). A regular-file write is only ever short on an
        // error (a full disk) or beyond the ~2 GiB per-call cap, far above any log line, so
        // `write_all` issues exactly one write for a line. Network file systems (NFS) do not
        // give this guarantee. The mutex keeps this process's lines whole even if a write
        // were ever split.
        self.append_line(&event_line(record))
    }

    /// Appends `line`, one rendered by [`event_line`] (see [`append`](Self::append)).
    pub fn append_line(&self, line: &str) -> io::Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(line.as_bytes())
    }
}

/// `time` as RFC 3339 UTC with milliseconds, e.g. `2026-03-01T10:00:00.000Z` (C117);
/// sub-millisecond digits are dropped, towards the past.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(time)
        .format(FORMAT)
        .unwrap_or_else(|_| unreachable!("every component of the format is in the date"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use std::sync::Arc;

    use serde_json::Value;

    /// 2026-03-01T10:00:00.000Z
    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_772_359_200)
    }

    fn record(usage: Usage<'static>) -> ExecutionRecord<'static> {
        ExecutionRecord {
            connector_id: "my-openai",
            connector_name: "My OpenAI",
            start: t0(),
            end: t0() + Duration::from_millis(2500),
            outcome: Ok(()),
            usage,
            request_body_bytes: Some(87),
            attempts: None,
        }
    }

    fn reported() -> Usage<'static> {
        Usage {
            prompt_tokens: 9,
            completion_tokens: 2,
            total_tokens: 11,
            source: "reported",
            tokenizer: None,
        }
    }

    fn parse(line: &str) -> Value {
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        serde_json::from_str(line).unwrap()
    }

    // C121: the example, byte for byte.
    #[test]
    fn contract_example() {
        let expected = concat!(
            r#"{"@timestamp":"2026-03-01T10:00:00.000Z","#,
            r#""event":{"provider":"actions","action":"execute","kind":"action","outcome":"success","#,
            r#""start":"2026-03-01T10:00:00.000Z","end":"2026-03-01T10:00:02.500Z","duration":2500000000},"#,
            r#""message":"action executed: .gen-ai:my-openai: My OpenAI","#,
            r#""kibana":{"saved_objects":[{"rel":"primary","type":"action","id":"my-openai","type_id":".gen-ai"}],"#,
            r#""action":{"id":"my-openai","name":"My OpenAI","type_id":".gen-ai","#,
            r#""execution":{"gen_ai":{"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"source":"reported"}},"#,
            r#""usage":{"request_body_bytes":87}}}}}"#,
            "\n"
        );
        assert_eq!(event_line(&record(reported())), expected);
    }

    // C117, C120: failure message and error.message.
    #[test]
    fn failure_line() {
        let mut rec = record(Usage::UNAVAILABLE);
        rec.outcome = Err(("Status code: 429. Message: Rate limit", true));
        rec.request_body_bytes = None;
        let v = parse(&event_line(&rec));
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(
            v["message"],
            "action execution failure: .gen-ai:my-openai: My OpenAI"
        );
        assert_eq!(
            v["error"]["message"],
            "an error occurred while running the action: Status code: 429. Message: Rate limit; retry: true"
        );
        rec.outcome = Err(("bad", false));
        let v = parse(&event_line(&rec));
        assert_eq!(
            v["error"]["message"],
            "an error occurred while running the action: bad; retry: false"
        );
        // C118: no request, no request_body_bytes (and no empty `usage` object).
        assert_eq!(
            v["kibana"]["action"]["execution"],
            json!({"gen_ai": {"usage": {"source": "unavailable"}}})
        );
        // With retries configured, the attempts (cli.md "Retries").
        rec.attempts = Some(3);
        let v = parse(&event_line(&rec));
        assert_eq!(v["kibana"]["action"]["execution"]["attempts"], 3);
        // C120: no `error` on success.
        assert!(
            parse(&event_line(&record(reported())))
                .get("error")
                .is_none()
        );
    }

    // C119: unavailable usage has no counts, even when the numbers are non-zero.
    #[test]
    fn unavailable_has_no_counts() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            source: "unavailable",
            tokenizer: Some("cl100k_base"),
        };
        let v = parse(&event_line(&record(usage)));
        assert_eq!(
            v["kibana"]["action"]["execution"]["gen_ai"]["usage"],
            json!({"source": "unavailable"})
        );
    }

    // C117, C119: estimated usage has counts and the tokenizer; reported has no tokenizer.
    #[test]
    fn estimated_has_tokenizer() {
        let usage = Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            total_tokens: 17,
            source: "estimated",
            tokenizer: Some("o200k_base"),
        };
        let line = event_line(&record(usage));
        assert!(line.contains(r#""usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"source":"estimated","tokenizer":"o200k_base"}"#), "{line}");
        let mut usage = reported();
        usage.tokenizer = Some("o200k_base");
        assert!(!event_line(&record(usage)).contains("tokenizer"));
    }

    // C118: request_body_bytes exactly when a request was sent, zero included.
    #[test]
    fn request_body_bytes() {
        let mut rec = record(reported());
        rec.request_body_bytes = Some(0);
        let v = parse(&event_line(&rec));
        assert_eq!(
            v["kibana"]["action"]["execution"]["usage"],
            json!({"request_body_bytes": 0})
        );
        rec.request_body_bytes = None;
        let v = parse(&event_line(&rec));
        assert!(v["kibana"]["action"]["execution"].get("usage").is_none());
    }

    // C116, C117: names with quotes, control characters and non-ASCII text stay one valid line.
    #[test]
    fn escaping() {
        let mut rec = record(reported());
        rec.connector_name = "Line\nbreak \"quoted\" é \u{2028}";
        rec.outcome = Err(("multi\nline\r\nmessage", false));
        let line = event_line(&rec);
        let v = parse(&line);
        assert_eq!(v["kibana"]["action"]["name"], rec.connector_name);
        assert_eq!(
            v["message"],
            "action execution failure: .gen-ai:my-openai: Line\nbreak \"quoted\" é \u{2028}"
        );
    }

    // C117: RFC 3339 UTC with milliseconds; duration in nanoseconds.
    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(t0()), "2026-03-01T10:00:00.000Z");
        // Leap day, and sub-millisecond digits dropped.
        let leap = UNIX_EPOCH + Duration::new(1_709_251_199, 999_999_999);
        assert_eq!(rfc3339_millis(leap), "2024-02-29T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
            "2100-02-28T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999Z"
        );

        let mut rec = record(reported());
        rec.end = rec.start + Duration::from_nanos(1_234_567);
        let v = parse(&event_line(&rec));
        assert_eq!(v["event"]["duration"], 1_234_567);
        assert_eq!(v["event"]["end"], "2026-03-01T10:00:00.001Z");
        rec.end = rec.start - Duration::from_secs(1);
        assert_eq!(parse(&event_line(&rec))["event"]["duration"], 0);
    }

    // Every day of four centuries gets the next calendar date.
    #[test]
    fn civil_dates_are_consecutive() {
        let mut expected = (1970, 1, 1);
        let month_len = |y: u64, m: u32| match m {
            2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        for days in 0..146_097 {
            let (y, m, d) = expected;
            assert_eq!(
                rfc3339_millis(UNIX_EPOCH + Duration::from_secs(days * 86_400)),
                format!("{y:04}-{m:02}-{d:02}T00:00:00.000Z"),
                "day {days}"
            );
            expected = if d < month_len(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    // C116: concurrent appends never interleave; every line is whole and parseable.
    #[test]
    fn concurrent_appends() {
        let dir = std::env::temp_dir().join(format!(
            "openai-connector-event-log-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.ndjson");
        let log = Arc::new(EventLog::open(&path).unwrap());
        assert_eq!(log.path(), path);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let name = format!("thread {t} {}", "x".repeat(500));
                    for i in 0..200u64 {
                        let mut rec = record(reported());
                        rec.connector_name = &name;
                        rec.request_body_bytes = Some(t * 1000 + i);
                        log.append(&rec).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // A second handle appends after the existing lines.
        EventLog::open(&path)
            .unwrap()
            .append(&record(reported()))
            .unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1601);
        let mut seen = std::collections::HashSet::new();
        for line in &lines[..1600] {
            let v: Value = serde_json::from_str(line).unwrap();
            let bytes = v["kibana"]["action"]["execution"]["usage"]["request_body_bytes"]
                .as_u64()
                .unwrap();
            assert!(seen.insert(bytes));
        }
        assert_eq!(seen.len(), 1600);
        assert_eq!(lines[1600], event_line(&record(reported())).trim_end());
    }
}
