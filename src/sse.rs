//! Server-sent events decoding (contract section 6a, C79–C91): the WHATWG HTML standard's
//! "event stream interpretation", sans-IO.
//!
//! [`Decoder::feed`] takes bytes in chunks of any size and appends every event dispatched so
//! far; [`Decoder::finish`] marks the end of input. The decoder never performs I/O and never
//! alters the bytes it is given, so a caller can pass the same chunks through unchanged (C79,
//! C41) while decoding them.
//!
//! # How it works
//!
//! Each byte of input is looked at by the line-end search (`memchr2` for CR and LF) once:
//! forwards, or, for the unterminated tail of a chunk, backwards from its end. It is copied at
//! most once into the buffer of the current unterminated line; a line that ends inside the
//! chunk it started in is processed straight from that chunk. Buffered bytes are never rescanned, so the total work is linear in the
//! input length whatever the chunking (C80).
//!
//! UTF-8 decoding (C81) happens per complete line, or, where a chunk's complete lines are valid
//! UTF-8 (checked in one SIMD pass), not at all: they are split as text, and a single-line
//! event is lent to the sink straight from the chunk. This gives exactly the result of decoding
//! the whole stream first: the line terminators (CR, LF) and the field separator (`:`) are
//! ASCII, which never continues a multi-byte sequence, so a sequence cut short by one of them
//! is an error in both cases and the ASCII byte is then processed on its own. Rust's
//! [`String::from_utf8_lossy`] replaces each maximal invalid subpart with one U+FFFD, which is
//! what the WHATWG UTF-8 decoder does.
//!
//! [`Decoder::feed_frames`] skips that pass over a chunk's complete lines: an event of one
//! `data` line is lent as the chunk's bytes ([`FrameData::Raw`]), for a caller that validates
//! them anyway (a host reading them from a component it does not trust); everything else is
//! decoded per field value as above.
//!
//! # Limits
//!
//! The event being built (data buffer plus the current unterminated line) is limited to
//! [`MAX_SSE_EVENT_BYTES`] by default (C91); see [`Decoder::with_max_event_bytes`]. The
//! event-type and last-event-ID buffers are bounded by the same limit, since each comes from a
//! single line.

use memchr::{memchr, memchr2, memrchr2};

/// Default maximum size in bytes of the event being built (C91, contract section 0).
pub const MAX_SSE_EVENT_BYTES: usize = 1_048_576;

/// UTF-8 encoding of U+FEFF, dropped once at the very start of the stream (C82).
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// The line and data buffers keep at most this much spare capacity after a long line or event,
/// so that one large event does not pin its memory for the rest of the stream.
const RETAINED_LINE_CAPACITY: usize = 64 * 1024;

/// One dispatched event (C88, C90).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event type: the `event` field's value, or `message` when it was empty or absent.
    pub event_type: String,
    /// The data: every `data` field's value joined with LF.
    pub data: String,
    /// The last event ID at dispatch time; `None` until an `id` field has been accepted (C90).
    /// It persists across events (C88).
    pub last_event_id: Option<String>,
    /// The most recent reconnection time set by a `retry` field, in milliseconds (C87, C90).
    pub retry: Option<u64>,
}

/// A dispatched event borrowed from the decoder: what [`Decoder::feed_with`] hands its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The event type (`message` when none was given).
    pub event_type: &'a str,
    /// The data: every `data` field's value joined with LF.
    pub data: &'a str,
    /// The last event ID at dispatch time, if an `id` field was accepted (C90).
    pub last_event_id: Option<&'a str>,
    /// The most recent reconnection time, in milliseconds (C87, C90).
    pub retry: Option<u64>,
}

impl EventRef<'_> {
    /// The event, owned.
    pub fn to_event(&self) -> Event {
        Event {
            event_type: self.event_type.to_owned(),
            data: self.data.to_owned(),
            last_event_id: self.last_event_id.map(str::to_owned),
            retry: self.retry,
        }
    }
}

/// An event's data as [`Decoder::feed_frames`] lends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameData<'a> {
    /// Decoded text.
    Text(&'a str),
    /// The value of the event's only `data` line, as the bytes of the chunk given to
    /// [`Decoder::feed_frames`], not yet decoded: [`decode`](Self::decode) them.
    Raw(&'a [u8]),
}

impl<'a> FrameData<'a> {
    /// The data as text: raw bytes decoded as UTF-8 with replacement (C81), which is what
    /// [`Decoder::feed`] gives for the same event.
    pub fn decode(self) -> std::borrow::Cow<'a, str> {
        match self {
            FrameData::Text(text) => text.into(),
            FrameData::Raw(bytes) => utf8_lossy(bytes),
        }
    }

    /// Appends the data, decoded, to `dst`.
    fn push_to(self, dst: &mut String) {
        match self {
            FrameData::Text(text) => dst.push_str(text),
            FrameData::Raw(bytes) => push_utf8_lossy(dst, bytes),
        }
    }
}

/// A dispatched event borrowed from the decoder, its data possibly not yet decoded: what
/// [`Decoder::feed_frames`] hands its sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The event type (`message` when none was given).
    pub event_type: &'a str,
    /// The data: every `data` field's value joined with LF.
    pub data: FrameData<'a>,
    /// The last event ID at dispatch time, if an `id` field was accepted (C90).
    pub last_event_id: Option<&'a str>,
    /// The most recent reconnection time, in milliseconds (C87, C90).
    pub retry: Option<u64>,
}

impl FrameRef<'_> {
    /// The event, owned, its data decoded: what [`Decoder::feed`] gives for it.
    pub fn to_event(&self) -> Event {
        Event {
            event_type: self.event_type.to_owned(),
            data: self.data.decode().into_owned(),
            last_event_id: self.last_event_id.map(str::to_owned),
            retry: self.retry,
        }
    }
}

/// Why decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// The event being built (data buffer plus the current unterminated line) went over the
    /// maximum (C91).
    #[error("SSE event exceeds the maximum size of {max} bytes")]
    EventTooLarge {
        /// The configured maximum in bytes.
        max: usize,
    },
}

/// Where the decoder is in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// At the very start: `matched` leading bytes of the input equal the first bytes of the
    /// UTF-8 BOM (C82). They are neither content nor counted until the BOM is complete
    /// (dropped) or broken (they become the start of the first line).
    Bom { matched: usize },
    /// In the middle of the stream, at the start of or inside a line.
    Line,
    /// The last byte seen was a CR that ended a line; an LF next is part of that line end (C83).
    AfterCr,
    /// [`Decoder::finish`] was called; further input is ignored.
    Finished,
    /// Decoding stopped (C91); every further call returns this error.
    Failed(SseError),
}

/// A sans-IO WHATWG event-stream decoder (C79–C91).
///
/// ```
/// use openai_connector::sse::Decoder;
///
/// let mut decoder = Decoder::new();
/// let mut events = Vec::new();
/// decoder.feed(b"data: a\r", &mut events).unwrap();
/// decoder.feed(b"\ndata: b\r\r", &mut events).unwrap();
/// decoder.finish(&mut events).unwrap();
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].event_type, "message");
/// assert_eq!(events[0].data, "a\nb");
/// ```
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    max_event_bytes: usize,
    /// Bytes of the current line not yet ended (only those that arrived in earlier chunks, or
    /// in this chunk's tail).
    line: Vec<u8>,
    /// The data buffer: decoded `data` values, each followed by LF.
    data: String,
    /// The event type buffer.
    event_type: String,
    /// The last event ID buffer; `None` until an `id` field is accepted.
    last_event_id: Option<String>,
    /// The reconnection time.
    retry: Option<u64>,
    /// Bytes handed to a scan (line-end search or line processing), to check linearity.
    #[cfg(test)]
    work: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with the default maximum event size, [`MAX_SSE_EVENT_BYTES`].
    pub fn new() -> Self {
        Decoder::with_max_event_bytes(MAX_SSE_EVENT_BYTES)
    }

    /// A decoder that fails once the event being built (data buffer in UTF-8, counting the LFs
    /// it adds, plus the current unterminated line in bytes) exceeds `max_event_bytes` (C91).
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Decoder {
            state: State::Bom { matched: 0 },
            max_event_bytes,
            line: Vec::new(),
            data: String::new(),
            event_type: String::new(),
            last_event_id: None,
            retry: None,
            #[cfg(test)]
            work: 0,
        }
    }

    /// The configured maximum event size in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Decodes the next chunk of the stream and appends every event it completes to `out`.
    ///
    /// On error (C91), the events dispatched before the offending line are still appended,
    /// decoding stops, and every later call to `feed` or [`finish`](Self::finish) returns the
    /// same error. The events produced never depend on how the stream is split into chunks
    /// (C80). After `finish`, further input is ignored.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        self.decode(chunk, &mut Sink::Owned(out))
    }

    /// [`feed`](Self::feed), handing each event to `sink` as it is dispatched, borrowed: no
    /// event is allocated.
    pub fn feed_with(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(EventRef<'_>),
    ) -> Result<(), SseError> {
        self.decode(chunk, &mut Sink::Borrowed(sink))
    }

    /// [`feed_with`](Self::feed_with), except that the data of an event of one `data` line
    /// inside the chunk may be lent as the chunk's bytes, not decoded ([`FrameData::Raw`]):
    /// the complete lines of a chunk are not validated as UTF-8 first. For a caller that
    /// validates those bytes anyway (a host reading them from a component it does not trust),
    /// so that they are validated once. [`FrameData::decode`] gives the events of
    /// [`feed`](Self::feed); the errors are the same, and C91 measures data after decoding.
    pub fn feed_frames(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(FrameRef<'_>),
    ) -> Result<(), SseError> {
        self.decode(chunk, &mut Sink::Frames(sink))
    }

    fn decode(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<(), SseError> {
        let mut input = chunk;
        match &self.state {
            State::Failed(error) => return Err(error.clone()),
            State::Finished => return Ok(()),
            // WHATWG: "The UTF-8 decode algorithm strips one leading UTF-8 Byte Order Mark
            // (BOM), if any." Only at the very start of the stream, even when split (C82).
            &State::Bom { mut matched } => {
                while let Some((&byte, rest)) = input.split_first() {
                    if byte != BOM[matched] {
                        // Not a BOM: the bytes held so far start the first line.
                        self.line.extend_from_slice(&BOM[..matched]);
                        self.state = State::Line;
                        break;
                    }
                    input = rest;
                    matched += 1;
                    if matched == BOM.len() {
                        self.state = State::Line;
                        break;
                    }
                }
                if let State::Bom { .. } = self.state {
                    self.state = State::Bom { matched };
                    return Ok(());
                }
            }
            State::Line | State::AfterCr => {}
        }
        if input.is_empty() {
            return Ok(());
        }
        // C83: "a single U+000D CARRIAGE RETURN (CR) character not followed by a U+000A LINE
        // FEED (LF) character" ends a line; the CR already did, so an LF right after it (here,
        // at the start of the next chunk) belongs to that same line end.
        if self.state == State::AfterCr && input[0] == b'\n' {
            input = &input[1..];
        }
        self.state = State::Line;
        match self.decode_chunk(input, sink) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.line = Vec::new();
                self.data = String::new();
                self.event_type = String::new();
                self.state = State::Failed(error.clone());
                Err(error)
            }
        }
    }

    /// Splits `chunk` (which does not start with the LF of a CRLF already handled) into lines
    /// and processes them, C81's decoding included.
    ///
    /// Each byte is validated as UTF-8 once. The complete lines of the chunk are validated in
    /// one pass and, when valid, split as text that needs no decoding per field: one SIMD
    /// validation of many lines costs less than one per line, since every call pays for its
    /// tail. Otherwise each line is decoded on its own, as bytes. Both give the same events,
    /// since the delimiters are ASCII. A line that started in an earlier chunk (its start may
    /// have been cut inside a character) and the unterminated tail are handled as bytes, with
    /// the rest of their line.
    fn decode_chunk(&mut self, mut chunk: &[u8], sink: &mut Sink<'_>) -> Result<(), SseError> {
        if let Sink::Frames(_) = sink {
            if chunk.len() < MIN_TEXT_CHUNK {
                return self.decode_lines(Raw(chunk), sink);
            }
        } else if chunk.len() < MIN_TEXT_CHUNK {
            return self.decode_lines(chunk, sink);
        }
        if !self.line.is_empty() {
            let Some(end) = memchr2(b'\r', b'\n', chunk) else {
                return self.buffer_tail(chunk);
            };
            #[cfg(test)]
            {
                self.work += end + 1;
            }
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => {
                        self.end_buffered_line(&chunk[..end], &[], sink)?;
                        self.state = State::AfterCr;
                        return Ok(());
                    }
                }
            }
            let blank = self.end_buffered_line(&chunk[..end], &chunk[next..], sink)?;
            chunk = &chunk[next + blank..];
            if chunk.is_empty() {
                return Ok(());
            }
        }
        let complete = memrchr2(b'\r', b'\n', chunk).map_or(0, |last| last + 1);
        let (lines, tail) = chunk.split_at(complete);
        if let Sink::Frames(_) = sink {
            self.decode_lines(Raw(lines), sink)?;
        } else {
            match complete_text(lines) {
                Some(text) => self.decode_lines(text, sink)?,
                None => self.decode_lines(lines, sink)?,
            }
        }
        if !tail.is_empty() {
            // A CR that ended `lines` is not followed by an LF: that LF would be in `lines`
            // (C83).
            self.state = State::Line;
            self.buffer_tail(tail)?;
        }
        Ok(())
    }

    /// Keeps `tail`, which has no line end, as the start of the current line (C91: checked
    /// first, so that an oversized chunk is never buffered).
    fn buffer_tail(&mut self, tail: &[u8]) -> Result<(), SseError> {
        #[cfg(test)]
        {
            self.work += tail.len();
        }
        self.check(self.line.len() + tail.len(), &mut None)?;
        self.line.extend_from_slice(tail);
        Ok(())
    }

    /// Ends the line begun in an earlier chunk (held in the line buffer) with `rest`, the bytes
    /// before its terminator in this chunk, and processes it; `after` is what follows its
    /// terminator in the chunk. Returns how many bytes of `after` it processed too: the blank
    /// line that ends the event, when this line was the event's only `data` line (see
    /// [`process_joined_line`](Self::process_joined_line)).
    fn end_buffered_line(
        &mut self,
        rest: &[u8],
        after: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<usize, SseError> {
        self.check(self.line.len() + rest.len(), &mut None)?;
        let mut line = std::mem::take(&mut self.line);
        line.extend_from_slice(rest);
        let result = self.process_joined_line(&line, after, sink);
        line.clear();
        line.shrink_to(RETAINED_LINE_CAPACITY);
        self.line = line;
        result
    }

    /// Processes a line joined from two or more chunks. Its start may have been cut inside a
    /// character, so it is decoded here, whole: as text when it is valid UTF-8, otherwise as
    /// bytes (C81). As text, an event's only `data` line is lent to the sink from the joined
    /// line when the blank line that ends the event starts `after`, instead of being copied
    /// into the data buffer: with chunks shorter than events, most events are one such line.
    fn process_joined_line(
        &mut self,
        line: &[u8],
        after: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<usize, SseError> {
        let Ok(text) = simdutf8::basic::from_utf8(line) else {
            self.process_line(line, &mut None, sink)?;
            return Ok(0);
        };
        let mut pending = None;
        self.process_line(text, &mut pending, sink)?;
        let Some(data) = pending else {
            return Ok(0);
        };
        // C83: the blank line's end is an LF, a CRLF, or a CR (which an LF at the start of
        // the next chunk would complete).
        let blank = match after {
            [b'\n', ..] => 1,
            [b'\r', b'\n', ..] => 2,
            [b'\r'] => {
                self.state = State::AfterCr;
                1
            }
            [b'\r', ..] => 1,
            _ => {
                self.keep_pending(data, 0);
                return Ok(0);
            }
        };
        #[cfg(test)]
        {
            self.work += blank;
        }
        // As `process_line` does for a blank line.
        let mut pending = Some(data);
        self.check(0, &mut pending)?;
        self.dispatch(pending, sink);
        Ok(blank)
    }

    /// Marks the end of input (C89).
    ///
    /// WHATWG: "Once the end of the file is reached, any pending data must be discarded. (If
    /// the file ends in the middle of an event, before the final empty line, the incomplete
    /// event is not dispatched.)" So this never appends to `out`; it takes `out` to match
    /// [`feed`](Self::feed). It returns the error if decoding had stopped (C91). Later calls to
    /// `feed` are ignored.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        let _ = out;
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        self.state = State::Finished;
        self.line = Vec::new();
        self.data = String::new();
        self.event_type = String::new();
        Ok(())
    }

    /// Splits `input` (which does not start with the LF of a CRLF already handled) into lines.
    ///
    /// WHATWG: "The stream must then be parsed by reading everything line by line, with a
    /// U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE
    /// FEED (LF) character not preceded by a U+000D CARRIAGE RETURN (CR) character, and a
    /// single U+000D CARRIAGE RETURN (CR) character not followed by a U+000A LINE FEED (LF)
    /// character being the ways in which a line can end."
    fn decode_lines<'a, I: Input<'a>>(
        &mut self,
        input: I,
        sink: &mut Sink<'_>,
    ) -> Result<(), SseError> {
        // The data of the event being built while it is one line of `input`, not yet copied:
        // an event that is a single `data` line (most of them) is lent to the sink straight
        // from the chunk. Set only while the data buffer is empty.
        let mut pending = None;
        let result = self.split_lines(input, &mut pending, sink);
        if let Some(data) = pending {
            self.keep_pending(data, 0);
        }
        result
    }

    /// Copies a pending data line and its LF into the (empty) data buffer, with room for
    /// `more` bytes after them in the same allocation.
    fn keep_pending(&mut self, data: FrameData<'_>, more: usize) {
        let len = match data {
            FrameData::Text(text) => text.len(),
            FrameData::Raw(bytes) => bytes.len(),
        };
        self.data.reserve_exact(len + 1 + more);
        data.push_to(&mut self.data);
        self.data.push('\n');
    }

    fn split_lines<'a, I: Input<'a>>(
        &mut self,
        mut input: I,
        pending: &mut Option<FrameData<'a>>,
        sink: &mut Sink<'_>,
    ) -> Result<(), SseError> {
        while !input.bytes().is_empty() {
            let bytes = input.bytes();
            let Some(end) = memchr2(b'\r', b'\n', bytes) else {
                #[cfg(test)]
                {
                    self.work += bytes.len();
                }
                // C91: the unterminated line counts; check before copying so that an oversized
                // chunk is never buffered.
                self.check(self.line.len() + bytes.len(), pending)?;
                self.line.extend_from_slice(bytes);
                return Ok(());
            };
            #[cfg(test)]
            {
                self.work += end + 1;
            }
            if self.line.is_empty() {
                self.process_line(input.slice(0, end), pending, sink)?;
            } else {
                // A line begun in an earlier chunk, so `pending` is empty.
                debug_assert!(pending.is_none());
                self.end_buffered_line(&bytes[..end], &[], sink)?;
            }
            let terminator = bytes[end];
            input = input.slice(end + 1, bytes.len());
            if terminator == b'\r' {
                match input.bytes().first() {
                    Some(b'\n') => input = input.slice(1, input.bytes().len()),
                    Some(_) => {}
                    None => self.state = State::AfterCr,
                }
            }
        }
        Ok(())
    }

    /// C91: fails when the data buffer (with the `pending` data line and its LF, which are
    /// not copied into it yet) plus `line_bytes` of the current line exceed the maximum.
    ///
    /// Data is measured decoded. Raw bytes decode to at most three times their length (a
    /// U+FFFD for each invalid byte), so that bound settles the check without decoding unless
    /// the event is near the limit; see [`check_exactly`](Self::check_exactly).
    #[inline]
    fn check(
        &mut self,
        line_bytes: usize,
        pending: &mut Option<FrameData<'_>>,
    ) -> Result<(), SseError> {
        let pending_bytes = match *pending {
            None => 0,
            Some(FrameData::Text(text)) => text.len() + 1,
            Some(FrameData::Raw(bytes)) => bytes.len().saturating_mul(3).saturating_add(1),
        };
        if self
            .data
            .len()
            .saturating_add(pending_bytes)
            .saturating_add(line_bytes)
            <= self.max_event_bytes
        {
            return Ok(());
        }
        self.check_exactly(line_bytes, pending)
    }

    /// [`check`](Self::check) when the bound did not settle it: a raw pending line is decoded
    /// into the data buffer, so that it is decoded once however many lines are checked
    /// against it (C80), and the measure is then exact.
    #[cold]
    #[inline(never)]
    fn check_exactly(
        &mut self,
        line_bytes: usize,
        pending: &mut Option<FrameData<'_>>,
    ) -> Result<(), SseError> {
        if let Some(raw @ FrameData::Raw(_)) = *pending {
            *pending = None;
            self.keep_pending(raw, 0);
        }
        let pending_bytes = match *pending {
            Some(FrameData::Text(text)) => text.len() + 1,
            _ => 0,
        };
        if (self.data.len() + pending_bytes).saturating_add(line_bytes) > self.max_event_bytes {
            Err(SseError::EventTooLarge {
                max: self.max_event_bytes,
            })
        } else {
            Ok(())
        }
    }

    /// Processes one complete line (without its terminator), as raw bytes.
    ///
    /// The field name is compared as bytes: a name containing invalid UTF-8 decodes to text
    /// with U+FFFD, which matches no known field either way.
    fn process_line<'l, 'a, I: Input<'l>>(
        &mut self,
        line: I,
        pending: &mut Option<FrameData<'a>>,
        sink: &mut Sink<'_>,
    ) -> Result<(), SseError>
    where
        'l: 'a,
    {
        let bytes = line.bytes();
        #[cfg(test)]
        {
            self.work += bytes.len();
        }
        // C91: the whole line counted, whatever chunks it came in, so that the outcome does
        // not depend on the chunking (C80).
        self.check(bytes.len(), pending)?;
        // WHATWG: "If the line is empty (a blank line) → Dispatch the event, as defined below."
        if bytes.is_empty() {
            self.dispatch(pending.take(), sink);
            return Ok(());
        }
        let (name, value) = match field_end(bytes) {
            // "If the line starts with a U+003A COLON character (:) → Ignore the line." (C84)
            Some(0) => return Ok(()),
            // "If the line contains a U+003A COLON character (:) → Collect the characters on
            // the line before the first U+003A COLON character (:), and let field be that
            // string. Collect the characters on the line after the first U+003A COLON
            // character (:), and let value be that string. If value starts with a U+0020 SPACE
            // character, remove it from value." (C85)
            Some(colon) => {
                let skip = usize::from(bytes.get(colon + 1) == Some(&b' '));
                (&bytes[..colon], line.slice(colon + 1 + skip, bytes.len()))
            }
            // "Otherwise, the string is not empty but does not contain a U+003A COLON character
            // (:) → Process the field using the steps described below, using the whole line as
            // the field name, and the empty string as the field value." (C85)
            None => (bytes, line.slice(bytes.len(), bytes.len())),
        };
        self.process_field(name, value, pending)
    }

    /// WHATWG: "The steps to process the field given a field name and a field value depend on
    /// the field name, as given in the following list. Field names must be compared literally,
    /// with no case folding performed." (C85–C87)
    fn process_field<'l, 'a, I: Input<'l>>(
        &mut self,
        name: &[u8],
        value: I,
        pending: &mut Option<FrameData<'a>>,
    ) -> Result<(), SseError>
    where
        'l: 'a,
    {
        match name {
            // "If the field name is "event" → Set the event type buffer to field value."
            b"event" => {
                self.event_type.clear();
                value.push_to(&mut self.event_type);
            }
            // "If the field name is "data" → Append the field value to the data buffer, then
            // append a single U+000A LINE FEED (LF) character to the data buffer."
            b"data" => {
                match (value.lend(), pending.take()) {
                    // The first line of an event, text or raw: kept where it is.
                    (Some(data), None) if self.data.is_empty() => *pending = Some(data),
                    (_, earlier) => {
                        if let Some(earlier) = earlier {
                            self.keep_pending(earlier, value.bytes().len() + 1);
                        } else if self.data.capacity() == 0 {
                            // The first line of an event: room for it and its LF in one
                            // allocation.
                            self.data.reserve_exact(value.bytes().len() + 1);
                        }
                        value.push_to(&mut self.data);
                        self.data.push('\n');
                    }
                }
                // C91: the data buffer is measured in UTF-8 after decoding, LFs included.
                self.check(0, pending)?;
            }
            // "If the field name is "id" → If the field value does not contain U+0000 NULL,
            // then set the last event ID buffer to the field value. Otherwise, ignore the
            // field." A 0x00 byte always decodes to U+0000 and U+0000 only comes from it.
            b"id" if memchr(0, value.bytes()).is_none() => {
                let buffer = self.last_event_id.get_or_insert_default();
                buffer.clear();
                value.push_to(buffer);
            }
            // "If the field name is "retry" → If the field value consists of only ASCII
            // digits, then interpret the field value as an integer in base ten, and set the
            // event stream's reconnection time to that integer. Otherwise, ignore the field."
            // C87: an empty value, or one above 2^64−1, is ignored (chosen).
            b"retry" => self.retry = parse_retry(value.bytes()).or(self.retry),
            // "Otherwise → The field is ignored." (An `id` containing U+0000 lands here too.)
            _ => {}
        }
        Ok(())
    }

    /// Dispatches the event (C88). WHATWG, "dispatch the event":
    ///
    /// `pending` is the event's only data line when it was not copied into the data buffer
    /// (which is then empty).
    fn dispatch(&mut self, pending: Option<FrameData<'_>>, sink: &mut Sink<'_>) {
        // "1. Set the last event ID string of the event source to the value of the last event
        // ID buffer. The buffer does not get reset, so the last event ID string of the event
        // source remains set to this value until the next time it is set by the server."
        // (The last event ID is read below, when the event is built.)

        // "2. If the data buffer is an empty string, set the data buffer and the event type
        // buffer to the empty string and return."
        // (A pending line stands for a buffer that is not empty: the line and its LF.)
        if self.data.is_empty() && pending.is_none() {
            self.event_type.clear();
            return;
        }
        // "3. If the data buffer's last character is a U+000A LINE FEED (LF) character, then
        // remove the last character from the data buffer." (It always is: every `data` field
        // appends one. A pending line is the data without that LF.)
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        // "5. Initialize event's type attribute to "message", its data attribute to data, […]
        // and its lastEventId attribute to the last event ID string of the event source.
        // 6. If the event type buffer has a value other than the empty string, change the type
        // of the newly created event to equal the value of the event type buffer.
        // 7. Set the data buffer and the event type buffer to the empty string."
        match sink {
            Sink::Owned(out) => {
                let event_type = if self.event_type.is_empty() {
                    String::from("message")
                } else {
                    std::mem::take(&mut self.event_type)
                };
                // The buffer becomes the event's data (no copy); the next `data` field
                // allocates a new one at its own size, so a large event never pins memory
                // after it is dispatched.
                out.push(Event {
                    event_type,
                    data: match pending {
                        Some(data) => data.decode().into_owned(),
                        None => std::mem::take(&mut self.data),
                    },
                    last_event_id: self.last_event_id.clone(),
                    retry: self.retry,
                });
            }
            Sink::Borrowed(sink) => {
                // Raw data comes only from `feed_frames`; decoded here for completeness.
                if let Some(FrameData::Raw(bytes)) = pending {
                    push_utf8_lossy(&mut self.data, bytes);
                }
                sink(EventRef {
                    event_type: self.event_type_or_message(),
                    data: match pending {
                        Some(FrameData::Text(text)) => text,
                        _ => &self.data,
                    },
                    last_event_id: self.last_event_id.as_deref(),
                    retry: self.retry,
                });
                self.after_lending();
            }
            Sink::Frames(sink) => {
                sink(FrameRef {
                    event_type: self.event_type_or_message(),
                    data: pending.unwrap_or(FrameData::Text(&self.data)),
                    last_event_id: self.last_event_id.as_deref(),
                    retry: self.retry,
                });
                self.after_lending();
            }
        }
    }

    /// The event type to dispatch (step 6 above).
    fn event_type_or_message(&self) -> &str {
        if self.event_type.is_empty() {
            "message"
        } else {
            &self.event_type
        }
    }

    /// Step 7 above, after an event was lent: the buffer is kept for the next event unless it
    /// grew large, so that a large event never pins memory after it is dispatched.
    fn after_lending(&mut self) {
        self.data.clear();
        self.data.shrink_to(RETAINED_LINE_CAPACITY);
        self.event_type.clear();
    }
}

/// Where dispatched events go: [`Decoder::feed`] takes each event's buffers, [`Decoder::feed_with`]
/// lends them, [`Decoder::feed_frames`] lends them with data possibly not decoded.
enum Sink<'a> {
    Owned(&'a mut Vec<Event>),
    Borrowed(&'a mut dyn FnMut(EventRef<'_>)),
    Frames(&'a mut dyn FnMut(FrameRef<'_>)),
}

/// What lines are split from: bytes, decoded per field value (C81); text already known to be
/// valid UTF-8, which is used as it is; or [`Raw`] bytes, decoded per field value except for
/// an event's only data line, which is lent undecoded.
trait Input<'a>: Copy {
    fn bytes(self) -> &'a [u8];
    /// `self[start..end]`. Callers cut only next to ASCII bytes (line terminators, `:`, the
    /// space after it) or at the ends, which are character boundaries in valid UTF-8.
    fn slice(self, start: usize, end: usize) -> Self;
    /// Appends the value decoded as UTF-8 (C81).
    fn push_to(self, dst: &mut String);
    /// The value as it can be lent to the sink without a copy, if it can.
    fn lend(self) -> Option<FrameData<'a>>;
}

impl<'a> Input<'a> for &'a [u8] {
    #[inline]
    fn bytes(self) -> &'a [u8] {
        self
    }
    #[inline]
    fn slice(self, start: usize, end: usize) -> Self {
        &self[start..end]
    }
    #[inline]
    fn push_to(self, dst: &mut String) {
        push_utf8_lossy(dst, self);
    }
    #[inline]
    fn lend(self) -> Option<FrameData<'a>> {
        None
    }
}

impl<'a> Input<'a> for &'a str {
    #[inline]
    fn bytes(self) -> &'a [u8] {
        self.as_bytes()
    }
    #[inline]
    fn slice(self, start: usize, end: usize) -> Self {
        &self[start..end]
    }
    #[inline]
    fn push_to(self, dst: &mut String) {
        dst.push_str(self);
    }
    #[inline]
    fn lend(self) -> Option<FrameData<'a>> {
        Some(FrameData::Text(self))
    }
}

/// Bytes whose data lines may be lent undecoded ([`Decoder::feed_frames`]).
#[derive(Clone, Copy)]
struct Raw<'a>(&'a [u8]);

impl<'a> Input<'a> for Raw<'a> {
    #[inline]
    fn bytes(self) -> &'a [u8] {
        self.0
    }
    #[inline]
    fn slice(self, start: usize, end: usize) -> Self {
        Raw(&self.0[start..end])
    }
    #[inline]
    fn push_to(self, dst: &mut String) {
        push_utf8_lossy(dst, self.0);
    }
    #[inline]
    fn lend(self) -> Option<FrameData<'a>> {
        Some(FrameData::Raw(self.0))
    }
}

/// The first `:` of a line. Field names are short (`data`, `event`, `id`, `retry`), so the
/// first bytes are looked at one by one before memchr's vector search, whose set-up costs more
/// than finding a colon at offset 4.
#[inline]
fn field_end(line: &[u8]) -> Option<usize> {
    line.iter()
        .take(8)
        .position(|&b| b == b':')
        .or_else(|| memchr(b':', line))
}

/// Chunks and runs of lines shorter than this are decoded line by line as bytes: under a few
/// SIMD blocks, validating first costs more than it saves (one byte per `feed` call ran 1.5×
/// slower in tests/linear.rs).
const MIN_TEXT_CHUNK: usize = 64;

/// `lines` as text when it is valid UTF-8 and long enough to be worth checking whole.
fn complete_text(lines: &[u8]) -> Option<&str> {
    if lines.len() < MIN_TEXT_CHUNK {
        return None;
    }
    simdutf8::basic::from_utf8(lines).ok()
}

/// `bytes` decoded as UTF-8 with replacement (C81): each maximal invalid subpart becomes one
/// U+FFFD, as the WHATWG UTF-8 decoder does.
///
/// Valid input, by far the common case, is checked by `simdutf8` (SIMD on x86-64, AArch64 and
/// wasm `simd128`) and borrowed; std's `from_utf8_lossy` walks byte by byte and was 49–87% of
/// the decoder's profile. Only invalid input takes the std path, whose replacement rule is the
/// one C81 asks for.
#[inline]
fn utf8_lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Appends `bytes` decoded as UTF-8 with replacement ([`utf8_lossy`]), copied once.
#[inline]
fn push_utf8_lossy(dst: &mut String, bytes: &[u8]) {
    dst.push_str(&utf8_lossy(bytes));
}

/// C87: a non-empty run of ASCII digits as a base-ten `u64`; `None` otherwise or on overflow.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Decodes a whole byte stream at once: `feed` of all of `input`, then `finish`. Returns the
/// events dispatched before any error along with the error.
pub fn decode_all(input: &[u8], max_event_bytes: usize) -> (Vec<Event>, Option<SseError>) {
    let mut decoder = Decoder::with_max_event_bytes(max_event_bytes);
    let mut events = Vec::new();
    let result = decoder
        .feed(input, &mut events)
        .and_then(|()| decoder.finish(&mut events));
    (events, result.err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Row = (&'static str, &'static str, Option<&'static str>);

    fn ev(event_type: &str, data: &str, id: Option<&str>) -> Event {
        Event {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: id.map(str::to_owned),
            retry: None,
        }
    }

    fn rows(expected: &[Row]) -> Vec<Event> {
        expected.iter().map(|&(t, d, i)| ev(t, d, i)).collect()
    }

    /// Feeds `chunks` in order, then finishes.
    fn decode_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
        max: usize,
    ) -> (Vec<Event>, Option<SseError>) {
        let mut decoder = Decoder::with_max_event_bytes(max);
        let mut events = Vec::new();
        let mut error = None;
        for chunk in chunks {
            if let Err(e) = decoder.feed(chunk, &mut events) {
                error = Some(e);
                break;
            }
        }
        if error.is_none() {
            error = decoder.finish(&mut events).err();
        }
        (events, error)
    }

    /// [`decode_chunks`] through [`Decoder::feed_frames`], raw data decoded as a caller would.
    fn decode_frames<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
        max: usize,
    ) -> (Vec<Event>, Option<SseError>) {
        let mut decoder = Decoder::with_max_event_bytes(max);
        let mut events = Vec::new();
        let mut error = None;
        for chunk in chunks {
            let result = decoder.feed_frames(chunk, &mut |e| events.push(e.to_event()));
            if let Err(e) = result {
                error = Some(e);
                break;
            }
        }
        if error.is_none() {
            error = decoder.finish(&mut events).err();
        }
        (events, error)
    }

    /// `chunks`, fed in this order, give exactly `want` without an error, and so does the
    /// reference decoder on their concatenation.
    #[track_caller]
    fn assert_chunks_give(chunks: &[&[u8]], want: &[Event]) {
        assert_eq!(
            decode_chunks(chunks.iter().copied(), MAX_SSE_EVENT_BYTES),
            (want.to_vec(), None),
            "{chunks:?}"
        );
        assert_eq!(reference(&chunks.concat()), want, "{chunks:?}");
        assert_eq!(
            decode_frames(chunks.iter().copied(), MAX_SSE_EVENT_BYTES),
            (want.to_vec(), None),
            "feed_frames: {chunks:?}"
        );
    }

    /// Every way this suite splits an input: one chunk, two chunks at every byte offset, three
    /// chunks at every pair of offsets (short inputs), and one byte at a time.
    fn splittings(input: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut all = vec![vec![input]];
        for i in 0..=input.len() {
            all.push(vec![&input[..i], &input[i..]]);
        }
        if input.len() <= 40 {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    all.push(vec![&input[..i], &input[i..j], &input[j..]]);
                }
            }
        }
        all.push(input.chunks(1).collect());
        all
    }

    /// Asserts that every splitting of `input` gives `expected` (C80).
    #[track_caller]
    fn assert_all_splits(input: &[u8], max: usize, expected: &(Vec<Event>, Option<SseError>)) {
        for chunks in splittings(input) {
            let got = decode_chunks(chunks.iter().copied(), max);
            assert_eq!(&got, expected, "input {input:?} split as {chunks:?}");
            let got = decode_frames(chunks.iter().copied(), max);
            assert_eq!(&got, expected, "feed_frames: {input:?} split as {chunks:?}");
        }
    }

    #[track_caller]
    fn check_vector(input: &[u8], expected: &[Row]) {
        assert_all_splits(input, MAX_SSE_EVENT_BYTES, &(rows(expected), None));
    }

    // C91 table, C84–C89: every row, at every split.
    #[test]
    fn c91_table() {
        let table: &[(&[u8], &[Row])] = &[
            (b"data: a\ndata: b\n\n", &[("message", "a\nb", None)]),
            (b"data:a\r\n\r\n", &[("message", "a", None)]),
            (b"data:  a\n\n", &[("message", " a", None)]),
            (b": keep-alive\n\n", &[]),
            (b"data\n\n", &[("message", "", None)]),
            (b"event: ping\ndata: 1\n\n", &[("ping", "1", None)]),
            (b"id: 7\n\ndata: x\n\n", &[("message", "x", Some("7"))]),
            (b"id: 8\0\ndata: x\n\n", &[("message", "x", None)]),
            (b"Data: x\n\n", &[]),
            (b"data: a\n", &[]),
            (b"\xEF\xBB\xBFdata: a\n\n", &[("message", "a", None)]),
            (b"data: a\r\ndata: b\r\r", &[("message", "a\nb", None)]),
        ];
        for (input, expected) in table {
            check_vector(input, expected);
        }
    }

    // C83: the table's explicit chunking `data: a\r` ‖ `\ndata: b\r\r`.
    #[test]
    fn c83_crlf_split_across_chunks() {
        let got = decode_chunks([&b"data: a\r"[..], b"\ndata: b\r\r"], MAX_SSE_EVENT_BYTES);
        assert_eq!(got, (rows(&[("message", "a\nb", None)]), None));
        // A CR at a chunk end followed by a chunk that does not start with LF.
        let got = decode_chunks([&b"data: a\r"[..], b"data: b\r\r"], MAX_SSE_EVENT_BYTES);
        assert_eq!(got, (rows(&[("message", "a\nb", None)]), None));
        // An empty chunk between CR and LF does not break the pair.
        let got = decode_chunks([&b"data: a\r"[..], b"", b"\n\n"], MAX_SSE_EVENT_BYTES);
        assert_eq!(got, (rows(&[("message", "a", None)]), None));
        // CR LF LF is one line end then an empty line; LF CR is two line ends.
        check_vector(b"data: a\r\n\n", &[("message", "a", None)]);
        check_vector(
            b"data: a\n\rdata: b\n\n",
            &[("message", "a", None), ("message", "b", None)],
        );
        check_vector(
            b"data: a\r\rdata: b\n\ndata: c\r\n\r\n",
            &[
                ("message", "a", None),
                ("message", "b", None),
                ("message", "c", None),
            ],
        );
    }

    // C84, C85: comments, colon handling, one space removed, tabs kept, case-sensitive names.
    #[test]
    fn c84_c85_fields() {
        check_vector(b":\n:x\ndata\n\n", &[("message", "", None)]);
        check_vector(b"data:\tx\n\n", &[("message", "\tx", None)]);
        check_vector(b"data:a:b: c\n\n", &[("message", "a:b: c", None)]);
        check_vector(b"data: \n\n", &[("message", "", None)]);
        check_vector(b"data\ndata\n\n", &[("message", "\n", None)]);
        check_vector(b"DATA: x\nEvent: y\ndata: z\n\n", &[("message", "z", None)]);
        check_vector(b"foo: bar\ndata: z\n\n", &[("message", "z", None)]);
        check_vector(b"data : x\n\n", &[]);
        check_vector(b" data: x\n\n", &[]);
    }

    // C86, C88: event type cleared on dispatch (also when nothing is dispatched), id persists,
    // empty id sets an empty string.
    #[test]
    fn c86_c88_dispatch_rules() {
        check_vector(
            b"event: a\n\ndata: x\n\nevent: b\ndata: y\n\ndata: z\n\n",
            &[
                ("message", "x", None),
                ("b", "y", None),
                ("message", "z", None),
            ],
        );
        check_vector(
            b"id: 1\ndata: x\n\ndata: y\n\nid\ndata: z\n\nid: 2\0\ndata: w\n\n",
            &[
                ("message", "x", Some("1")),
                ("message", "y", Some("1")),
                ("message", "z", Some("")),
                ("message", "w", Some("")),
            ],
        );
        check_vector(b"event:\ndata: x\n\n", &[("message", "x", None)]);
        check_vector(b"event: a\nevent: b\ndata: x\n\n", &[("b", "x", None)]);
        check_vector(b"id: 3\n\n", &[]);
    }

    // C87, C90: retry digits only, overflow ignored, most recent value on every event.
    #[test]
    fn c87_retry() {
        let decode = |input: &[u8]| -> Vec<Option<u64>> {
            let (events, error) = decode_all(input, MAX_SSE_EVENT_BYTES);
            assert_eq!(error, None);
            events.iter().map(|e| e.retry).collect()
        };
        assert_eq!(decode(b"data: x\n\n"), [None]);
        assert_eq!(
            decode(b"retry: 1500\ndata: x\n\ndata: y\n\n"),
            [Some(1500); 2]
        );
        assert_eq!(decode(b"retry: 007\ndata: x\n\n"), [Some(7)]);
        assert_eq!(decode(b"retry: 10\nretry\ndata: x\n\n"), [Some(10)]);
        for bad in [
            &b"retry: 1a\n"[..],
            b"retry: -1\n",
            b"retry:  1\n",
            b"retry: 1.5\n",
            b"retry: \xEF\xBC\x91\n",
            b"retry: 18446744073709551616\n",
            b"retry: 99999999999999999999999\n",
        ] {
            let mut input = bad.to_vec();
            input.extend_from_slice(b"data: x\n\n");
            assert_eq!(decode(&input), [None], "{bad:?}");
        }
        assert_eq!(
            decode(b"retry: 18446744073709551615\ndata: x\n\n"),
            [Some(u64::MAX)]
        );
        assert_eq!(decode(b"retry: 5\n\nretry: x\ndata: y\n\n"), [Some(5)]);
    }

    // C89: a partial event or a final unterminated line produces nothing.
    #[test]
    fn c89_end_of_input() {
        check_vector(b"data: a\n\ndata: b", &[("message", "a", None)]);
        check_vector(b"data: a\n\ndata: b\n", &[("message", "a", None)]);
        check_vector(b"data: a\n\ndata: b\r", &[("message", "a", None)]);
        check_vector(b"", &[]);
    }

    #[test]
    fn c81_characters_cut_by_the_end_of_long_chunks() {
        // Long chunks are validated whole up to their last line end; a character cut by a chunk
        // end is decoded with the rest of its line, valid or not.
        let head = format!("data: {}\n", "a".repeat(70));
        for c in ["\u{e9}", "\u{20ac}", "\u{1f600}"] {
            let input = format!("{head}data: x{c}y\n\n{head}\n");
            let want = decode_all(input.as_bytes(), MAX_SSE_EVENT_BYTES);
            assert_eq!(want.0.len(), 2);
            assert_eq!(want.0[0].data, format!("{}\nx{c}y", "a".repeat(70)));
            let at = head.len() + "data: x".len();
            for cut in at..at + c.len() + 1 {
                let (first, second) = input.as_bytes().split_at(cut);
                assert_eq!(
                    decode_chunks([first, second], MAX_SSE_EVENT_BYTES),
                    want,
                    "{c} {cut}"
                );
            }
        }
        // Invalid bytes in a long chunk: every line is decoded on its own, with U+FFFD.
        let input = [head.as_bytes(), b"data: \xFF\xC3\n\n"].concat();
        let (events, _) = decode_all(&input, MAX_SSE_EVENT_BYTES);
        assert_eq!(
            events[0].data,
            format!("{}\n\u{fffd}\u{fffd}", "a".repeat(70))
        );
    }

    #[test]
    fn c83_a_cr_then_a_cut_character_at_the_end_of_a_long_chunk() {
        // The chunk's lines are validated whole and its last byte (a cut character) kept as the
        // next line's start, so its CR is not its last byte: an LF starting the next chunk is a
        // line end of its own.
        let data = "a".repeat(70);
        let first = [format!("data: {data}\r").as_bytes(), b"\xC3"].concat();
        let chunks = [&first[..], b"\ndata: b\n\n"];
        let want = vec![ev("message", &format!("{data}\nb"), None)];
        assert_chunks_give(&chunks, &want);

        // The same for a line begun in the chunk before, ended by a CR inside a long chunk.
        let second = format!("bc\rdata: {data}\n");
        let chunks = [&b"data: a"[..], second.as_bytes(), b"\ndata: b\n\n"];
        let want = vec![
            ev("message", &format!("abc\n{data}"), None),
            ev("message", "b", None),
        ];
        assert_chunks_give(&chunks, &want);
    }

    // C83: a line begun in an earlier chunk and ended in a long chunk by a CR that is its last
    // byte, or by a CRLF: the LF (at the start of the next chunk, or right after the CR)
    // belongs to that line end and is not a blank line.
    #[test]
    fn c83_a_buffered_line_ended_by_a_cr_at_the_end_of_a_long_chunk() {
        let rest = format!("{}\r", "b".repeat(100));
        let chunks = [&b"data: a"[..], rest.as_bytes(), b"\ndata: c\n\n"];
        let want = vec![ev("message", &format!("a{}\nc", "b".repeat(100)), None)];
        assert_chunks_give(&chunks, &want);

        // The same with the CRLF inside the long chunk.
        let rest = format!("{}\r\ndata: c\n\n", "b".repeat(100));
        let chunks = [&b"data: a"[..], rest.as_bytes()];
        assert_chunks_give(&chunks, &want);
    }

    // C79, C83, C88: an event whose only data line was cut by a chunk boundary and whose
    // blank line follows in the long chunk that ends it (dispatched from the joined line),
    // with each line end; and the cases that must not take that path (a second data line, an
    // earlier data line, a field other than data, invalid UTF-8).
    #[test]
    fn c88_a_joined_data_line_then_its_blank_line() {
        let long = "c".repeat(70);
        for (first, second, want) in [
            (
                &b"data: ab"[..],
                format!("{long}\n\nid: 7\n"),
                vec![ev("message", &format!("ab{long}"), None)],
            ),
            (
                b"data: ab",
                format!("{long}\r\n\r\ndata: z\n"),
                vec![ev("message", &format!("ab{long}"), None)],
            ),
            (
                b"data: ab",
                format!("{long}\r\rdata: z\n"),
                vec![ev("message", &format!("ab{long}"), None)],
            ),
            (
                b"event: e\ndata: ab",
                format!("{long}\n\n: more\n"),
                vec![ev("e", &format!("ab{long}"), None)],
            ),
            (
                b"data: ab",
                format!("{long}\ndata: y\n\n"),
                vec![ev("message", &format!("ab{long}\ny"), None)],
            ),
            (
                b"data: x\ndata: ab",
                format!("{long}\n\n: more\n"),
                vec![ev("message", &format!("x\nab{long}"), None)],
            ),
            (
                b"event: ab",
                format!("{long}\n\ndata: q\n\n"),
                vec![ev("message", "q", None)],
            ),
            (
                b"data: a\xC3",
                format!("\u{e9}{long}\n\n: more\n"),
                vec![ev("message", &format!("a\u{fffd}\u{e9}{long}"), None)],
            ),
        ] {
            let chunks = [first, second.as_bytes()];
            assert_chunks_give(&chunks, &want);
        }
        // The blank line's CR ends the chunk: an LF starting the next chunk completes it.
        let second = format!("{long}\n\r");
        let chunks = [&b"data: ab"[..], second.as_bytes(), b"\ndata: q\n\n"];
        let want = vec![
            ev("message", &format!("ab{long}"), None),
            ev("message", "q", None),
        ];
        assert_chunks_give(&chunks, &want);
    }

    // C82: one BOM at the very start, even split; later BOMs are content; UTF-16 BOMs are not
    // special.
    #[test]
    fn c81_feed_frames_lends_data_lines_as_the_chunks_bytes() {
        // Long enough to be framed without a UTF-8 pass; one data line valid, one not, one
        // event of two lines, and one whose blank line is in the next chunk.
        let chunk = b"data: caf\xC3\xA9 \xF0\x9F\x98\x80\n\n: padding padding padding padding\n\
                      event: e\ndata: bad \xFF\xC3 end\n\ndata: a\ndata: b\n\ndata: next";
        let mut decoder = Decoder::new();
        let mut lent = Vec::new();
        decoder
            .feed_frames(chunk, &mut |e| {
                let data = match e.data {
                    FrameData::Raw(bytes) => {
                        let at = bytes.as_ptr() as usize - chunk.as_ptr() as usize;
                        assert_eq!(&chunk[at..at + bytes.len()], bytes);
                        (Some(at), e.data.decode().into_owned())
                    }
                    FrameData::Text(text) => (None, text.to_owned()),
                };
                lent.push((e.event_type.to_owned(), data));
            })
            .unwrap();
        decoder
            .feed_frames(b"\n\n", &mut |e| {
                lent.push((
                    e.event_type.to_owned(),
                    (None, e.data.decode().into_owned()),
                ))
            })
            .unwrap();
        let message = String::from("message");
        assert_eq!(
            lent,
            [
                (message.clone(), (Some(6), "caf\u{e9} \u{1f600}".to_owned())),
                (
                    "e".to_owned(),
                    (Some(67), "bad \u{fffd}\u{fffd} end".to_owned())
                ),
                (message.clone(), (None, "a\nb".to_owned())),
                (message, (None, "next".to_owned())),
            ]
        );
    }

    #[test]
    fn c91_raw_data_is_measured_decoded() {
        // Three invalid bytes decode to nine; with its LF the data is ten bytes, so a limit
        // of ten holds it and any further line goes over. Counted raw, it would be four.
        let input = b"data: \xFF\xFE\xFD\nid: 1234\n\ndata: \xFF\xFE\xFD\n\n";
        for max in [9, 10, 13, 16, 40] {
            let want = decode_all(input, max);
            for chunks in splittings(input) {
                assert_eq!(
                    decode_frames(chunks.iter().copied(), max),
                    want,
                    "{max} {chunks:?}"
                );
            }
        }
        assert_eq!(decode_all(input, 10).1, too_large(10));
        assert_eq!(decode_all(input, 9).0, []);
        // 9 + LF + "id: 1234" is 18: it fits in 40 and in 16 not at all.
        assert!(decode_all(input, 40).1.is_none());
    }

    #[test]
    fn c82_bom() {
        check_vector(b"\xEF\xBB\xBFdata: a\n\n", &[("message", "a", None)]);
        let got = decode_chunks(
            [&b"\xEF"[..], b"\xBB", b"\xBF", b"data: a\n\n"],
            MAX_SSE_EVENT_BYTES,
        );
        assert_eq!(got, (rows(&[("message", "a", None)]), None));
        let got = decode_chunks(
            [&b""[..], b"\xEF\xBB", b"", b"\xBFdata: a\n\n"],
            MAX_SSE_EVENT_BYTES,
        );
        assert_eq!(got, (rows(&[("message", "a", None)]), None));
        // Only one BOM is dropped: the second makes the field name unknown.
        check_vector(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n", &[]);
        // A BOM on a later line is content (here: part of the field name, so ignored).
        check_vector(
            b"data: a\n\n\xEF\xBB\xBFdata: b\n\n",
            &[("message", "a", None)],
        );
        check_vector(
            b"data: \xEF\xBB\xBFb\n\n",
            &[("message", "\u{feff}b", None)],
        );
        // A broken BOM prefix is content: one U+FFFD for EF BB, then the rest.
        check_vector(b"\xEF\xBBdata: a\n\ndata: b\n\n", &[("message", "b", None)]);
        check_vector(b"\xEF\xBB\n\ndata: b\n\n", &[("message", "b", None)]);
        check_vector(b"\xEF\rdata: b\n\n", &[("message", "b", None)]);
        check_vector(b"\xEF\xBB", &[]);
        // UTF-16 BOMs decode to U+FFFD U+FFFD: the first line's field is unknown.
        check_vector(b"\xFF\xFEdata: a\n\ndata: b\n\n", &[("message", "b", None)]);
        check_vector(b"\xFE\xFFdata: a\n\ndata: b\n\n", &[("message", "b", None)]);
        // BOM, then a line that ends at once.
        check_vector(b"\xEF\xBB\xBF\ndata: a\n\n", &[("message", "a", None)]);
    }

    // C81: UTF-8 with replacement, one U+FFFD per maximal invalid subpart; characters split
    // across chunks decode normally.
    #[test]
    fn c81_utf8() {
        // Vectors from the WHATWG Encoding standard's UTF-8 decoder and Unicode's "U+FFFD
        // substitution of maximal subparts".
        let cases: &[(&[u8], &str)] = &[
            (b"\xC3\xA9", "é"),
            (b"\xF0\x9F\x98\x80", "😀"),
            (b"\xFF", "\u{FFFD}"),
            (b"a\x80b", "a\u{FFFD}b"),
            (b"\xC3", "\u{FFFD}"),
            (b"\xE2\x82", "\u{FFFD}"),
            (b"\xE2\x82a", "\u{FFFD}a"),
            (b"\xF0\x9F\x98", "\u{FFFD}"),
            (b"\xF0\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xE0\x80", "\u{FFFD}\u{FFFD}"),
            (b"\xED\xA0\x80", "\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xF4\x90\x80\x80", "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"),
            (b"\xC0\xAF", "\u{FFFD}\u{FFFD}"),
            (
                b"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64",
                "a\u{FFFD}\u{FFFD}\u{FFFD}b\u{FFFD}c\u{FFFD}\u{FFFD}d",
            ),
            (
                b"\xF8\x88\x80\x80\x80",
                "\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
            ),
        ];
        for &(bytes, text) in cases {
            let mut input = b"data: ".to_vec();
            input.extend_from_slice(bytes);
            input.extend_from_slice(b"\n\n");
            check_vector(&input, &[("message", text, None)]);
        }
        // A sequence cut short by a line end: one U+FFFD, and the line end still counts.
        check_vector(
            b"data: \xE2\x82\rdata: \xF0\x9F\x98\r\n\n",
            &[("message", "\u{FFFD}\n\u{FFFD}", None)],
        );
        // A sequence cut short by the colon: the field name is unknown.
        check_vector(b"data\xE2:x\n\n", &[]);
        // A 4-byte character split across three chunks.
        let got = decode_chunks(
            [&b"data: \xF0"[..], b"\x9F\x98", b"\x80!\n\n"],
            MAX_SSE_EVENT_BYTES,
        );
        assert_eq!(got, (rows(&[("message", "😀!", None)]), None));
        // Event type and id are decoded the same way.
        check_vector(
            b"event: \xFFp\nid: \xC3\xA9\xC3\ndata: x\n\n",
            &[("\u{FFFD}p", "x", Some("é\u{FFFD}"))],
        );
    }

    fn too_large(max: usize) -> Option<SseError> {
        Some(SseError::EventTooLarge { max })
    }

    // C91: the limit, its exact text, and that decoding stops.
    #[test]
    fn c91_limit() {
        assert_eq!(
            SseError::EventTooLarge {
                max: MAX_SSE_EVENT_BYTES
            }
            .to_string(),
            "SSE event exceeds the maximum size of 1048576 bytes"
        );
        // Data buffer "abc\n" = 4 bytes; the line "data: abc" = 9 bytes.
        let input = b"data: abc\n\n";
        assert_all_splits(input, 9, &(rows(&[("message", "abc", None)]), None));
        assert_all_splits(input, 8, &(vec![], too_large(8)));
        // Two data lines: 4 + "data: def" (9) = 13, then data "abc\ndef\n" = 8.
        let input = b"data: abc\ndata: def\n\ndata: g\n\n";
        assert_all_splits(
            input,
            13,
            &(
                rows(&[("message", "abc\ndef", None), ("message", "g", None)]),
                None,
            ),
        );
        assert_all_splits(input, 12, &(vec![], too_large(12)));
        // The error comes after the events dispatched before the offending line.
        let input = b"data: a\n\n: a long comment line\ndata: b\n\n";
        assert_all_splits(input, 10, &(rows(&[("message", "a", None)]), too_large(10)));
        // An unterminated final line counts too.
        assert_all_splits(
            b"data: a\n\ndata: bbbbbbbbbbbbbb",
            10,
            &(rows(&[("message", "a", None)]), too_large(10)),
        );
        // The data buffer is measured after decoding: one invalid byte is three bytes of
        // U+FFFD. "data:\xFF" is 6 bytes; the buffer "\u{FFFD}\n" is 4 bytes.
        assert_all_splits(
            b"data:\xFF\n\n",
            6,
            &(rows(&[("message", "\u{FFFD}", None)]), None),
        );
        assert_all_splits(b"data:\xFF\xFF\n\n", 6, &(vec![], too_large(6)));
        // The buffer empties on dispatch: many small events never trip the limit.
        let many = b"data: abc\n\n".repeat(1000);
        let (events, error) = decode_all(&many, 16);
        assert_eq!((events.len(), error), (1000, None));

        // Decoding stops: later feeds and finish return the same error and add nothing.
        let mut decoder = Decoder::with_max_event_bytes(4);
        let mut events = Vec::new();
        assert_eq!(
            decoder.feed(b"data: 12345", &mut events),
            Err(too_large(4).unwrap())
        );
        assert_eq!(
            decoder.feed(b"\n\ndata: a\n\n", &mut events),
            Err(too_large(4).unwrap())
        );
        assert_eq!(decoder.finish(&mut events), Err(too_large(4).unwrap()));
        assert!(events.is_empty());
    }

    #[test]
    fn c91_default_limit() {
        let ok = format!("data: {}\n\n", "x".repeat(MAX_SSE_EVENT_BYTES - 6));
        let (events, error) = decode_all(ok.as_bytes(), MAX_SSE_EVENT_BYTES);
        assert_eq!((events.len(), error), (1, None));
        let over = format!("data: {}\n\n", "x".repeat(MAX_SSE_EVENT_BYTES - 5));
        let (events, error) = decode_all(over.as_bytes(), MAX_SSE_EVENT_BYTES);
        assert_eq!((events.len(), error), (0, too_large(MAX_SSE_EVENT_BYTES)));
        // One byte at a time fails too.
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let failed = over
            .as_bytes()
            .chunks(1)
            .any(|b| decoder.feed(b, &mut events).is_err());
        assert!(failed);
    }

    #[test]
    fn finish_ends_the_stream() {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        decoder.feed(b"data: a\n\ndata: b\n", &mut events).unwrap();
        decoder.finish(&mut events).unwrap();
        decoder.feed(b"\n", &mut events).unwrap();
        decoder.finish(&mut events).unwrap();
        assert_eq!(events, rows(&[("message", "a", None)]));
    }

    // C80: total work is linear; buffered bytes are never rescanned per chunk.
    #[test]
    fn c80_linear_work() {
        let line = format!("data: {}\n\n", "x".repeat(200_000));
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        for byte in line.as_bytes().chunks(1) {
            decoder.feed(byte, &mut events).unwrap();
        }
        assert_eq!(events.len(), 1);
        assert!(decoder.work <= 2 * line.len(), "work {}", decoder.work);

        let many = "data: x\r\n\r\nid: 1\r:c\r".repeat(10_000);
        let mut decoder = Decoder::new();
        for chunk in many.as_bytes().chunks(7) {
            decoder.feed(chunk, &mut events).unwrap();
        }
        assert!(decoder.work <= 2 * many.len(), "work {}", decoder.work);
    }

    /// A direct transcription of the WHATWG steps over the whole input, for comparison.
    fn reference(input: &[u8]) -> Vec<Event> {
        let text = String::from_utf8_lossy(input);
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        let mut lines = Vec::new();
        let mut current = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(std::mem::take(&mut current));
                }
                '\n' => lines.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        let (mut data, mut event_type, mut id, mut retry) =
            (String::new(), String::new(), None::<String>, None::<u64>);
        let mut events = Vec::new();
        for line in lines {
            if line.is_empty() {
                if data.is_empty() {
                    event_type.clear();
                    continue;
                }
                data.pop();
                events.push(Event {
                    event_type: if event_type.is_empty() {
                        "message".into()
                    } else {
                        std::mem::take(&mut event_type)
                    },
                    data: std::mem::take(&mut data),
                    last_event_id: id.clone(),
                    retry,
                });
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match name {
                "event" => event_type = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => id = Some(value.to_owned()),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    if let Ok(n) = value.parse() {
                        retry = Some(n);
                    }
                }
                _ => {}
            }
        }
        events
    }

    #[test]
    fn reference_agrees_on_fixed_vectors() {
        let input = b"\xEF\xBB\xBFid: 1\r\nevent: e\rdata: a\xF0\x9F\nretry: 3\n\n:x\ndata\n\n";
        assert_eq!(decode_all(input, MAX_SSE_EVENT_BYTES).0, reference(input));
    }

    fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"data"[..]),
            Just(&b"data: "[..]),
            Just(&b"event:"[..]),
            Just(&b"id: "[..]),
            Just(&b"retry: "[..]),
            Just(&b":"[..]),
            Just(&b" "[..]),
            Just(&b"\r"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n\n"[..]),
            Just(&b"a"[..]),
            Just(&b"12"[..]),
            Just(&b"\0"[..]),
            Just(&b"\xC3\xA9"[..]),
            Just(&b"\xF0\x9F\x98\x80"[..]),
            Just(&b"\xF0\x9F"[..]),
            Just(&b"\xFF"[..]),
            Just(&b"\x80"[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\xEF\xBB"[..]),
        ];
        // Up to 120 pieces: long enough that chunks of 64 bytes or more (validated whole, split
        // as text) are common, with short ones (split as bytes) between them.
        proptest::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        // C80: random chunking gives the one-shot result, which matches the reference.
        #[test]
        fn c80_chunking_does_not_matter(
            input in sse_ish(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in prop_oneof![Just(MAX_SSE_EVENT_BYTES), 0usize..48],
        ) {
            let one_shot = decode_all(&input, max);
            if max == MAX_SSE_EVENT_BYTES {
                prop_assert_eq!(&one_shot.0, &reference(&input));
                prop_assert_eq!(&one_shot.1, &None);
            }
            let mut offsets: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            offsets.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for offset in offsets {
                chunks.push(&input[start..offset]);
                start = offset;
            }
            chunks.push(&input[start..]);
            prop_assert_eq!(&decode_chunks(chunks.iter().copied(), max), &one_shot);
            prop_assert_eq!(&decode_chunks(input.chunks(1), max), &one_shot);
            // The borrowing path dispatches the same events (its buffers are reused).
            let mut decoder = Decoder::with_max_event_bytes(max);
            let mut lent = Vec::new();
            let mut error = None;
            for chunk in &chunks {
                if let Err(e) = decoder.feed_with(chunk, &mut |e| lent.push(e.to_event())) {
                    error = Some(e);
                    break;
                }
            }
            if error.is_none() {
                error = decoder.finish(&mut Vec::new()).err();
            }
            prop_assert_eq!(&(lent, error), &one_shot);
            // So does the framing path, its raw data decoded by the caller (C81, C91).
            prop_assert_eq!(&decode_frames(chunks.iter().copied(), max), &one_shot);
            prop_assert_eq!(&decode_frames(input.chunks(1), max), &one_shot);
        }
    }
}
