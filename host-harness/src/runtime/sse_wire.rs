//! The spans of `sse.decoder.feed-raw-spans`, read against the chunk the host sent. (The event
//! records of `sse.decoder.feed` and `finish` arrive as the component crate's own
//! [`Event`], the native decoder's type.)

use anyhow::Result;
use openai_connector::sse::{Event, FrameData};
use std::borrow::Cow;

/// The result of `sse.decoder.feed-raw-spans` on one chunk: per event, four numbers in
/// `spans` (type length, data start in the chunk or `u32::MAX`, data length, ID length or
/// `u32::MAX`) and its retry; types, IDs and data not in the chunk are in `text`, in order.
/// Read it with [`EventSpans::events`] and the same chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSpans {
    /// The text of the parts not given by place in the chunk.
    pub text: Vec<u8>,
    /// Four numbers per event.
    pub spans: Vec<u32>,
    /// One retry per event.
    pub retries: Vec<Option<u64>>,
}

/// One event of an [`EventSpans`]: borrowed from it and from the chunk, except for data that
/// is not valid UTF-8, which is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanEvent<'a> {
    /// The event type.
    pub event_type: &'a str,
    /// The data.
    pub data: Cow<'a, str>,
    /// The last event ID, if any.
    pub last_event_id: Option<&'a str>,
    /// The reconnection time, if any.
    pub retry: Option<u64>,
}

impl<'a> From<&'a Event> for SpanEvent<'a> {
    fn from(e: &'a Event) -> Self {
        SpanEvent {
            event_type: &e.event_type,
            data: Cow::Borrowed(&e.data),
            last_event_id: e.last_event_id.as_deref(),
            retry: e.retry,
        }
    }
}

/// The data start that means "in the text" in `EventSpans::spans`.
const SPAN_IN_TEXT: u32 = u32::MAX;
/// The ID length that means "no ID" in `EventSpans::spans`.
const NO_ID: u32 = u32::MAX;

impl EventSpans {
    /// How many events have their data in the chunk rather than in the text.
    pub fn data_in_chunk(&self) -> usize {
        self.spans
            .chunks(4)
            .filter(|s| s.get(1).is_some_and(|&start| start != SPAN_IN_TEXT))
            .count()
    }

    /// The events, borrowed from these spans and `chunk` (the chunk they were returned for);
    /// data in the chunk is decoded with replacement (C81). The component is not trusted:
    /// spans that do not describe its text or `chunk` (out of range, a wrong count, a text
    /// that is not UTF-8) are an error, not a panic.
    pub fn events<'a>(&'a self, chunk: &'a [u8]) -> Result<Vec<SpanEvent<'a>>> {
        const WHAT: &str = "event spans";
        if self.spans.len() != self.retries.len() * 4 {
            return Err(malformed(WHAT, "not four numbers per event"));
        }
        let mut text = PackedText::new(&self.text, WHAT)?;
        // The chunk, less the characters its ends cut, is usually valid UTF-8 as a whole, and
        // then one SIMD pass checks every span in it; otherwise (bytes that are not UTF-8 in
        // the stream) each span is decoded on its own.
        let uncut = uncut(chunk);
        let whole = simdutf8::basic::from_utf8(&chunk[uncut.clone()]).ok();
        let in_chunk = |start: u32, len: u32| -> Result<Cow<'a, str>> {
            let range = usize::try_from(start)
                .ok()
                .zip(usize::try_from(len).ok())
                .and_then(|(start, len)| Some(start..start.checked_add(len)?))
                .filter(|range| range.end <= chunk.len())
                .ok_or_else(|| malformed(WHAT, "a span past the chunk"))?;
            let checked = whole
                .filter(|_| uncut.start <= range.start && range.end <= uncut.end)
                .and_then(|text| text.get(range.start - uncut.start..range.end - uncut.start));
            Ok(match checked {
                Some(text) => Cow::Borrowed(text),
                None => FrameData::Raw(&chunk[range]).decode(),
            })
        };
        let mut events = Vec::with_capacity(self.retries.len());
        for (numbers, retry) in self.spans.chunks_exact(4).zip(&self.retries) {
            let event_type = text.take(numbers[0])?;
            let data = match numbers[1] {
                SPAN_IN_TEXT => Cow::Borrowed(text.take(numbers[2])?),
                start => in_chunk(start, numbers[2])?,
            };
            events.push(SpanEvent {
                event_type,
                data,
                last_event_id: text.take_id(numbers[3])?,
                retry: *retry,
            });
        }
        text.finish()?;
        Ok(events)
    }
}

/// The part of `chunk` that can be valid UTF-8 on its own: without the continuation bytes of
/// a character its start cut, and without a character its end cut. The batches of a stream
/// are cut at any byte; the spans of a batch, values of lines inside it, lie in this part.
pub fn uncut(chunk: &[u8]) -> std::ops::Range<usize> {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let start = chunk
        .iter()
        .take(3)
        .take_while(|&&b| is_continuation(b))
        .count();
    let mut end = chunk.len();
    for back in 1..=3.min(chunk.len() - start) {
        let b = chunk[chunk.len() - back];
        if is_continuation(b) {
            continue;
        }
        let needs = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        if needs > back {
            end = chunk.len() - back;
        }
        break;
    }
    start..end
}

fn malformed(what: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!("the component returned malformed {what}: {why}")
}

/// The text of a packed result, read part by part from the front.
struct PackedText<'a> {
    rest: &'a str,
    /// What the text belongs to, for errors.
    what: &'static str,
}

impl<'a> PackedText<'a> {
    /// One SIMD validation of the whole text (the WIT promises UTF-8 but the guest is not
    /// trusted); wasmtime would validate a `string` result byte by byte.
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Self> {
        let rest = simdutf8::basic::from_utf8(bytes)
            .map_err(|_| malformed(what, "the text is not UTF-8"))?;
        Ok(PackedText { rest, what })
    }

    /// The next `len` bytes.
    fn take(&mut self, len: u32) -> Result<&'a str> {
        let len =
            usize::try_from(len).map_err(|_| malformed(self.what, "a length out of range"))?;
        if len > self.rest.len() || !self.rest.is_char_boundary(len) {
            return Err(malformed(
                self.what,
                "a length past the text or inside a character",
            ));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// The next ID, or `None` for `NO_ID`.
    fn take_id(&mut self, len: u32) -> Result<Option<&'a str>> {
        match len {
            NO_ID => Ok(None),
            len => self.take(len).map(Some),
        }
    }

    /// Fails if text is left over after the last event.
    fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(self.what, "text left over after the last event"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(text: &str, numbers: &[u32], retries: &[Option<u64>]) -> EventSpans {
        EventSpans {
            text: text.as_bytes().to_vec(),
            spans: numbers.to_vec(),
            retries: retries.to_vec(),
        }
    }

    #[test]
    fn spans_read_data_from_the_chunk_or_the_text() {
        let event = |event_type, data: &'static str, last_event_id, retry| SpanEvent {
            event_type,
            data: data.into(),
            last_event_id,
            retry,
        };
        // Data in the chunk (at 6, and an empty span at its end), and in the text.
        let s = spans(
            "messagepingx\ny7message",
            &[7, 6, 3, NO_ID, 4, SPAN_IN_TEXT, 3, 1, 7, 10, 0, NO_ID],
            &[None, Some(9), None],
        );
        assert_eq!(s.data_in_chunk(), 2);
        // The second chunk is not UTF-8 as a whole: each span is checked on its own.
        for chunk in [&b"data: \xc3\xa9a\n\n"[..], b"data: \xc3\xa9a\n\xff"] {
            assert_eq!(
                s.events(chunk).unwrap(),
                [
                    event("message", "\u{e9}a", None, None),
                    event("ping", "x\ny", Some("7"), Some(9)),
                    event("message", "", None, None),
                ]
            );
        }
        let s = spans("message", &[7, 1, 2, NO_ID], &[None]);
        assert_eq!(
            s.events(b"\xffok\xff").unwrap(),
            [event("message", "ok", None, None)]
        );
        assert!(spans("", &[], &[]).events(b"").unwrap().is_empty());
    }

    #[test]
    fn uncut_leaves_out_the_characters_cut_by_either_end() {
        let e = "\u{e9}".as_bytes(); // 0xC3 0xA9
        let smile = "\u{1f600}".as_bytes(); // 0xF0 0x9F 0x98 0x80
        for (chunk, want) in [
            (&b""[..], 0..0),
            (b"abc", 0..3),
            (e, 0..2),
            (&e[1..], 1..1),
            (&e[..1], 0..0),
            (&[b"x", &smile[..3]].concat(), 0..1),
            (&[&smile[1..], b"x", &smile[..2]].concat(), 3..4),
            (&[&smile[1..], b"x", smile].concat(), 3..8),
            // Four continuation bytes are not a cut character: the fourth is left in, and
            // fails validation.
            (&[&smile[1..], &smile[1..2], b"x"].concat(), 3..5),
            (&[b"x", e, &e[..1]].concat(), 0..3),
        ] {
            assert_eq!(uncut(chunk), want, "{chunk:?}");
        }
        // Spans inside the uncut part are read from it, however the chunk's ends are cut.
        let chunk = [&smile[2..], b"\ndata: \xc3\xa9\n\n", &smile[..1]].concat();
        let s = spans("message", &[7, 9, 2, NO_ID], &[None]);
        let events = s.events(&chunk).unwrap();
        assert_eq!(events[0].data, "\u{e9}");
        assert!(matches!(events[0].data, Cow::Borrowed(_)));
    }

    #[test]
    fn raw_spans_decode_data_that_is_not_utf8() {
        // C81: each maximal invalid subpart becomes one U+FFFD, whether the chunk as a whole
        // is valid (a span cutting a character) or not.
        let one = |numbers: &[u32], chunk: &[u8]| {
            let s = spans("message", numbers, &[None]);
            let events = s.events(chunk).unwrap();
            assert_eq!(events.len(), 1);
            events[0].data.clone().into_owned()
        };
        assert_eq!(
            one(&[7, 6, 4, NO_ID], b"data: a\xffb\xc3\n\n"),
            "a\u{fffd}b\u{fffd}"
        );
        assert_eq!(
            one(&[7, 1, 2, NO_ID], "\u{e9}\u{e9}".as_bytes()),
            "\u{fffd}\u{fffd}"
        );
        assert_eq!(one(&[7, 0, 2, NO_ID], "\u{e9}\u{e9}".as_bytes()), "\u{e9}");
        // Data outside the chunk is still refused, and the text must still be UTF-8.
        let e = spans("message", &[7, 1, 2, NO_ID], &[None])
            .events(b"ab")
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the chunk"), "{e}");
        let mut bad_text = spans("message", &[7, 0, 1, NO_ID], &[None]);
        bad_text.text[0] = 0xFF;
        let e = bad_text.events(b"a").unwrap_err().to_string();
        assert!(e.contains("the text is not UTF-8"), "{e}");
    }

    #[test]
    fn spans_that_do_not_describe_the_chunk_or_the_text_are_refused() {
        let chunk = "data: \u{e9}\n\n".as_bytes();
        for (numbers, why) in [
            (&[7, 6, 2][..], "not four numbers per event"),
            (&[7, 6, 5, NO_ID], "past the chunk"),
            (&[7, u32::MAX - 1, 2, NO_ID], "past the chunk"),
            (&[7, SPAN_IN_TEXT, 1, NO_ID], "past the text"),
            (&[6, 6, 2, NO_ID], "left over"),
        ] {
            let e = spans("message", numbers, &[None])
                .events(chunk)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
