//! The JSON lines of `openai-connector sse decode` (cli.md): one line per event,
//! `{"event":TYPE,"data":DATA,"id":ID_OR_NULL,"retry":MS_OR_NULL}`, appended to a buffer the
//! caller reuses, spelled exactly as serde_json's compact writer (and JavaScript's
//! `JSON.stringify`) spells them.
//!
//! Why not serde_json: building a `json!` value per event (a map, four keys, a copy of the data)
//! and escaping it byte by byte was most of the command's time (benches/RESULTS.md, "`sse
//! decode`, whole process"). Here nothing is allocated per event and strings are escaped eight
//! bytes at a time ([`json_escape`](crate::json_escape)).

use crate::json_escape::{escape, max_escaped_len};
use crate::runtime::SpanEvent;

/// The longest line less its escaped strings: the keys and punctuation, a `null` ID (longer
/// than the quotes of one), a retry of twenty digits (`u64::MAX`) and the newline.
const ENVELOPE: usize = r#"{"event":"","data":"","id":null,"retry":}"#.len() + 20 + 1;

/// Lines being built, kept for the next batch.
///
/// The bytes are a `Vec` that is only ever grown, with zeros, and is written by index: each
/// line is given the room it could need before it is written, and the length kept here says
/// how much of it is lines (escaping into a slice is what makes it fast; see
/// [`escape`](crate::json_escape::escape)).
#[derive(Debug, Default)]
pub struct EventLines {
    bytes: Vec<u8>,
    len: usize,
}

impl EventLines {
    /// Room for `bytes` bytes of lines before the first growth.
    pub fn with_capacity(bytes: usize) -> Self {
        EventLines {
            bytes: vec![0; bytes],
            len: 0,
        }
    }

    /// Appends the line of `event`, newline included.
    pub fn push(&mut self, event: &SpanEvent<'_>) {
        let id = event.last_event_id.unwrap_or("");
        let room = ENVELOPE
            + max_escaped_len(event.event_type.len())
            + max_escaped_len(event.data.len())
            + max_escaped_len(id.len());
        let end = self.len + room;
        if self.bytes.len() < end {
            self.bytes.resize(end.max(self.bytes.len() * 2), 0);
        }
        let out = &mut self.bytes[..];
        let mut pos = self.len;
        pos = put(out, pos, b"{\"event\":\"");
        pos = escape(event.event_type.as_bytes(), out, pos);
        pos = put(out, pos, b"\",\"data\":\"");
        pos = escape(event.data.as_bytes(), out, pos);
        match event.last_event_id {
            Some(id) => {
                pos = put(out, pos, b"\",\"id\":\"");
                pos = escape(id.as_bytes(), out, pos);
                pos = put(out, pos, b"\",\"retry\":");
            }
            None => pos = put(out, pos, b"\",\"id\":null,\"retry\":"),
        }
        match event.retry {
            Some(ms) => {
                let mut digits = [0u8; 20];
                let mut start = digits.len();
                let mut rest = ms;
                loop {
                    start -= 1;
                    digits[start] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                pos = put(out, pos, &digits[start..]);
            }
            None => pos = put(out, pos, b"null"),
        }
        pos = put(out, pos, b"}\n");
        self.len = pos;
    }

    /// The lines pushed since the last [`clear`](Self::clear).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Forgets the lines, keeping the room.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Writes `text` into `out` at `pos`; returns the end.
fn put(out: &mut [u8], pos: usize, text: &[u8]) -> usize {
    out[pos..pos + text.len()].copy_from_slice(text);
    pos + text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// The line serde_json writes for the event: what `sse decode` wrote before this module.
    fn serde_line(event: &SpanEvent<'_>) -> String {
        let mut line = serde_json::json!({
            "event": event.event_type,
            "data": event.data,
            "id": event.last_event_id,
            "retry": event.retry,
        })
        .to_string();
        line.push('\n');
        line
    }

    fn line(event: &SpanEvent<'_>) -> String {
        let mut lines = EventLines::default();
        lines.push(event);
        String::from_utf8(lines.as_bytes().to_vec()).expect("UTF-8 in, UTF-8 out")
    }

    fn event<'a>(
        event_type: &'a str,
        data: &'a str,
        last_event_id: Option<&'a str>,
        retry: Option<u64>,
    ) -> SpanEvent<'a> {
        SpanEvent {
            event_type,
            data: Cow::Borrowed(data),
            last_event_id,
            retry,
        }
    }

    #[test]
    fn lines_are_serde_jsons() {
        for e in [
            event("message", "", None, None),
            event("message", r#"{"a":"b\"c"}"#, Some("7"), Some(1500)),
            event(
                "t\u{fffd}",
                "caf\u{e9} \u{1f600}\n\t\r\u{8}\u{c}\u{0}\u{1f}\u{7f}",
                Some(""),
                Some(0),
            ),
            event(
                "\"quoted\"",
                "back\\slash\u{2028}",
                Some("id \"x\"\n"),
                Some(u64::MAX),
            ),
        ] {
            assert_eq!(line(&e), serde_line(&e));
        }
    }

    #[test]
    fn lines_follow_each_other_and_the_buffer_grows_as_needed() {
        // From no room at all, past several growths (a large event of control characters
        // needs six bytes per byte), then cleared and reused.
        let controls = "\u{1}".repeat(10_000);
        let events = [
            event("message", "a", None, None),
            event("message", &controls, Some("1"), None),
            event("t", "\"b\"", Some("\\"), Some(12)),
        ];
        let want: String = events.iter().map(serde_line).collect();
        let mut lines = EventLines::default();
        for round in 0..2 {
            for e in &events {
                lines.push(e);
            }
            assert!(lines.as_bytes() == want.as_bytes(), "round {round}");
            lines.clear();
            assert!(lines.as_bytes().is_empty());
        }
    }
}
