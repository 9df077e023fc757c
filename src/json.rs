//! An exact JSON value: keys keep input order, numbers keep their spelling.
//!
//! Why not `serde_json::Value`: the contract requires numbers to be re-sent exactly as written
//! (D12: `1e2`, `-0`, `1.0`, `12345678901234567890`) and nesting up to 128 levels to parse
//! (C50). serde_json, even with `arbitrary_precision`, rewrites `1e2` as `1e+2`, and its
//! recursion limit rejects the 128th level. This module is a small RFC 8259 parser and a
//! serialiser with JavaScript's `JSON.stringify` escaping (C53); nothing more.

use indexmap::IndexMap;
use std::fmt;

/// Maximum nesting depth that parses (C50); one more level is a parse error.
pub const MAX_DEPTH: usize = 128;

/// A JSON object: insertion-ordered, and a repeated key keeps the first position with the
/// last value (C50).
///
/// Keys hash with foldhash instead of std's SipHash, which was about 30% of chat-stream
/// assembly; see [`KeyHasher`] for the seeding. Create one with `Object::default()`.
pub type Object = IndexMap<String, Value, KeyHasher>;

/// The hasher of [`Object`] keys: foldhash, seeded once per process from std's `RandomState`
/// (the OS's randomness; `wasi:random` in the component).
///
/// Why not `foldhash::fast::RandomState`: its seed comes from addresses and the clock, and a
/// wasm guest has no address randomisation. Keys come from upstream responses and callers'
/// bodies, so the seed must not be guessable or colliding keys could be precomputed.
#[derive(Clone, Debug)]
pub struct KeyHasher(foldhash::fast::SeedableRandomState);

impl Default for KeyHasher {
    fn default() -> Self {
        use std::hash::BuildHasher;
        static SEED: std::sync::OnceLock<(u64, foldhash::SharedSeed)> = std::sync::OnceLock::new();
        let (per_hasher, shared) = SEED.get_or_init(|| {
            let random = std::hash::RandomState::new();
            (
                random.hash_one(0u8),
                foldhash::SharedSeed::from_u64(random.hash_one(1u8)),
            )
        });
        KeyHasher(foldhash::fast::SeedableRandomState::with_seed(
            *per_hasher,
            shared,
        ))
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, spelled as written.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Object),
}

/// A JSON number kept as its exact text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Number(String);

impl Number {
    /// Accepts `text` when it is exactly one JSON number (no white space).
    pub fn parse(text: &str) -> Option<Number> {
        let bytes = text.as_bytes();
        let end = scan_number(bytes, 0).ok()?;
        (end == bytes.len()).then(|| Number(text.to_owned()))
    }

    /// The number's text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as `f64` (lossy for large values).
    pub fn as_f64(&self) -> f64 {
        // The text is a valid JSON number, which Rust's float grammar accepts.
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// The value as `u64`, when it is written as a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

impl From<u64> for Number {
    fn from(n: u64) -> Self {
        Number(n.to_string())
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a text is not JSON. The message is the parser's own wording (C95).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {offset}")]
pub struct ParseError {
    /// What went wrong.
    pub message: &'static str,
    /// Byte offset in the input where it went wrong.
    pub offset: usize,
    /// When the text nests deeper than [`MAX_DEPTH`] (C50): the object keys and array indices
    /// (as decimal text) from the root to the value that opens the level one too many.
    /// `None` for every other error.
    pub nesting_path: Option<Vec<String>>,
}

impl ParseError {
    /// An error other than nesting too deep.
    fn new(message: &'static str, offset: usize) -> Self {
        ParseError {
            message,
            offset,
            nesting_path: None,
        }
    }
}

impl Value {
    /// Parses one JSON text (surrounding white space allowed). Invalid UTF-8, lone surrogate
    /// escapes and nesting deeper than [`MAX_DEPTH`] are errors (C50).
    pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
        let text = std::str::from_utf8(input)
            .map_err(|e| ParseError::new("invalid UTF-8", e.valid_up_to()))?;
        Ok(Tape::default().parse(text)?.to_value())
    }

    /// Compact JSON text (C52, C53).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the compact JSON text to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(n) => out.push_str(&n.0),
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_json(out);
                }
                out.push(']');
            }
            Value::Object(map) => write_object(map, out),
        }
    }

    /// The member `key` of an object; `None` for other values or a missing key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// `true` for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// JavaScript truthiness: `null`, `false`, `0`, `-0`, `NaN` and `""` are falsy (C55).
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(Number::from(n))
    }
}

impl From<Object> for Value {
    fn from(map: Object) -> Self {
        Value::Object(map)
    }
}

/// Appends the compact JSON text of `map` to `out` (C52, C53).
pub fn write_object(map: &Object, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(k, out);
        out.push(':');
        v.write_json(out);
    }
    out.push('}');
}

/// Writes `s` as a JSON string literal the way JavaScript's `JSON.stringify` does (C53):
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other controls as lower-case `\u00xx`, all else
/// literal.
pub fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    escape_into(s, out);
    out.push('"');
}

/// Appends `s` escaped as [`write_string`] does, without the quotes.
fn escape_into(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(offset) = find_special(&bytes[start..]) {
        let i = start + offset;
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        let b = bytes[i];
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            _ => "",
        };
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// A string kept as the text between the quotes of its JSON literal, spelled as
/// [`write_string`] spells it, so that it can be appended to from parsed strings and written
/// out without decoding and escaping again.
///
/// Why: the chat-stream layer concatenates content fragments and writes the result once as
/// JSON. Kept decoded, every byte of a long completion was decoded, then scanned and escaped
/// again; escaping a 4 MB completion was a quarter of assembling it in the component
/// (benches/RESULTS.md). A fragment whose escapes are already canonical (the usual case: it
/// was written by `JSON.stringify` or a serialiser like it) is appended as received.
///
/// ```
/// use openai_connector::json::{EscapedString, Tape};
///
/// let mut tape = Tape::default();
/// let mut text = EscapedString::default();
/// text.push_item(tape.parse(r#""a \"b\"\n""#).unwrap());
/// text.push_str("\u{1}é");
/// assert_eq!(text.as_escaped(), r#"a \"b\"\n\u0001é"#);
/// assert_eq!(text.to_unescaped(), "a \"b\"\n\u{1}é");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EscapedString(String);

impl EscapedString {
    /// Appends `text`, escaping it.
    pub fn push_str(&mut self, text: &str) {
        escape_into(text, &mut self.0);
    }

    /// Appends the string `item`; returns `false` (and appends nothing) when it is not a
    /// string.
    pub fn push_item(&mut self, item: Item<'_>) -> bool {
        item.escape_into(&mut self.0)
    }

    /// The escaped text, without quotes.
    pub fn as_escaped(&self) -> &str {
        &self.0
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the JSON string literal: the same text as `write_string(&self.to_unescaped())`.
    pub fn write_json(&self, out: &mut String) {
        out.reserve(self.0.len() + 2);
        out.push('"');
        out.push_str(&self.0);
        out.push('"');
    }

    /// The string's text, decoded.
    pub fn to_unescaped(&self) -> String {
        let literal = format!("\"{}\"", self.0);
        let mut tape = Tape::default();
        tape.parse(&literal)
            .ok()
            .and_then(|item| item.as_str())
            .expect("an escaped string is always a valid JSON string literal's inside")
            .to_owned()
    }
}

/// Whether `b` ends a plain run inside a JSON string: `"`, `\` or a control character. These
/// are the bytes [`write_string`] escapes and the string parser stops at.
#[inline]
fn is_special(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The offset of the first [`is_special`] byte of `bytes`.
///
/// In the component (wasm `simd128`, see .cargo/config.toml): sixteen bytes per step, three
/// vector compares and a bitmask. These intrinsics are safe functions, so no `unsafe` is
/// needed; the x86-64 ones are not, so native builds keep the SWAR loop of
/// [`find_special_swar`]. Byte-at-a-time scanning was most of the time spent escaping large
/// content, and the SWAR loop was still 21% of chat assembly on 4 KiB events in wasm
/// (benches/RESULTS.md). Hand-written because memchr has no "byte below N" search.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline]
fn find_special(bytes: &[u8]) -> Option<usize> {
    use core::arch::wasm32::{u8x16, u8x16_bitmask, u8x16_eq, u8x16_lt, u8x16_splat, v128_or};
    let mut blocks = bytes.chunks_exact(16);
    let mut offset = 0;
    for block in &mut blocks {
        let b: &[u8; 16] = block.try_into().expect("blocks of sixteen");
        // Sixteen consecutive bytes: compiled to one `v128.load`.
        let v = u8x16(
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        );
        let special = v128_or(
            v128_or(
                u8x16_eq(v, u8x16_splat(b'"')),
                u8x16_eq(v, u8x16_splat(b'\\')),
            ),
            u8x16_lt(v, u8x16_splat(0x20)),
        );
        let mask = u8x16_bitmask(special);
        if mask != 0 {
            return Some(offset + mask.trailing_zeros() as usize);
        }
        offset += 16;
    }
    find_special_swar(blocks.remainder()).map(|i| offset + i)
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline]
fn find_special(bytes: &[u8]) -> Option<usize> {
    find_special_swar(bytes)
}

/// [`find_special`] eight bytes per step with the classic SWAR tests (`(x - 0x01…) & !x &
/// 0x80…` is non-zero exactly when some byte of `x` is zero; with `0x20…` instead of `0x01…`,
/// when some byte is below 0x20). Each test is exact about whether a word holds such a byte,
/// so a hit is then located byte by byte within the word.
#[inline]
fn find_special_swar(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("chunks of eight"));
        let control = x.wrapping_sub(ONES * 0x20);
        let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        if (control | quote | backslash) & !x & HIGH != 0 {
            return word.iter().position(|&b| is_special(b)).map(|i| offset + i);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| is_special(b))
        .map(|i| offset + i)
}

/// The JSON string literal for `s` (see [`write_string`]).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(s, &mut out);
    out
}

/// A parsed JSON text as a flat list of nodes that borrow from the text: no allocation per
/// key, string or number, and the buffers are kept for the next parse.
///
/// Why: building a [`Value`] tree (a hash map per object, a `String` per key and string) was
/// most of the time spent assembling chat streams, which read a few members of each chunk and
/// skip the rest (benches/RESULTS.md). [`Value::parse`] goes through the same parser, so both
/// accept exactly the same texts and report the same errors.
///
/// ```
/// use openai_connector::json::Tape;
///
/// let mut tape = Tape::default();
/// let chunk = tape.parse(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#).unwrap();
/// let delta = chunk.get("choices").unwrap().elements().next().unwrap().get("delta").unwrap();
/// assert_eq!(delta.get("content").unwrap().as_str(), Some("Hi"));
/// assert_eq!(delta.to_json(), r#"{"content":"Hi"}"#);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tape {
    nodes: Vec<Node>,
    /// The decoded text of strings that contain escapes, back to back.
    decoded: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    /// `start..end` of the source text.
    Number,
    /// A string without escapes: `start..end` of the source text, quotes excluded.
    Plain,
    /// A string with escapes: `start..end` of [`Tape::decoded`].
    Decoded,
    /// A string whose escapes are all the ones [`write_string`] writes: `start..end` of
    /// [`Tape::decoded`], and `raw..raw_end` of the source is already its JSON text, quotes
    /// excluded.
    Canonical,
    /// `end` is the index of the node after the array's last descendant.
    Array,
    /// Members are key and value nodes in turn; `end` as for arrays.
    Object,
}

/// Offsets are `u32` (the parser refuses texts of 4 GiB or more) to keep nodes small: a node is
/// written per value and read on every lookup.
#[derive(Clone, Copy, Debug)]
struct Node {
    kind: Kind,
    start: u32,
    end: u32,
    /// [`Kind::Canonical`]: where its escaped text starts in the source (quote excluded); it
    /// ends before the closing quote, at `raw_end`.
    raw: u32,
    raw_end: u32,
}

impl Node {
    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The index of the node after a container's last descendant.
    fn end(&self) -> usize {
        self.end as usize
    }
}

impl Tape {
    /// Parses one JSON text (surrounding white space allowed) and returns its root value. The
    /// rules and errors are those of [`Value::parse`].
    pub fn parse<'t>(&'t mut self, text: &'t str) -> Result<Item<'t>, ParseError> {
        self.nodes.clear();
        self.decoded.clear();
        if u32::try_from(text.len()).is_err() {
            return Err(ParseError::new("JSON text of 4 GiB or more", 0));
        }
        let mut parser = TapeParser {
            src: text.as_bytes(),
            text,
            pos: 0,
            tape: self,
        };
        parser.skip_ws();
        if let Err(mut error) = parser.value(0) {
            if error.nesting_path.is_some() {
                error.nesting_path = Some(self.open_path(text));
            }
            return Err(error);
        }
        parser.skip_ws();
        if parser.pos != parser.src.len() {
            return Err(parser.error("unexpected data after the JSON value"));
        }
        Ok(Item {
            tape: self,
            src: text,
            index: 0,
        })
    }

    /// After a parse stopped at a container nested one level too deep: the keys and indices
    /// from the root to it. The containers still open are the ones on that path (their `end`
    /// is still 0), and the one that was refused would have been the next node: the value of
    /// the last key on the tape, or the next element of the innermost open array.
    fn open_path(&self, text: &str) -> Vec<String> {
        let is_open = |item: &Item<'_>| {
            matches!(item.node().kind, Kind::Array | Kind::Object) && item.node().end == 0
        };
        let mut path = Vec::new();
        if self.nodes.is_empty() {
            return path;
        }
        let mut current = Item {
            tape: self,
            src: text,
            index: 0,
        };
        loop {
            let mut index = current.index + 1;
            let mut position = 0usize;
            let next = loop {
                let (segment, value_index) = match current.node().kind {
                    Kind::Object => (
                        current.at(index).as_str().unwrap_or_default().to_owned(),
                        index + 1,
                    ),
                    Kind::Array => (position.to_string(), index),
                    _ => return path,
                };
                if value_index >= self.nodes.len() {
                    path.push(segment);
                    return path;
                }
                let value = current.at(value_index);
                if is_open(&value) {
                    path.push(segment);
                    break value;
                }
                index = value.next();
                position += 1;
            };
            current = next;
        }
    }
}

/// One value of a parsed [`Tape`].
#[derive(Clone, Copy)]
pub struct Item<'t> {
    tape: &'t Tape,
    src: &'t str,
    index: usize,
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl<'t> Item<'t> {
    fn node(&self) -> Node {
        self.tape.nodes[self.index]
    }

    fn at(&self, index: usize) -> Item<'t> {
        Item { index, ..*self }
    }

    /// The index of the node after this value and its descendants.
    fn next(&self) -> usize {
        let node = self.node();
        match node.kind {
            Kind::Array | Kind::Object => node.end(),
            _ => self.index + 1,
        }
    }

    /// `true` for `null`.
    pub fn is_null(&self) -> bool {
        self.node().kind == Kind::Null
    }

    /// `true` for an object.
    pub fn is_object(&self) -> bool {
        self.node().kind == Kind::Object
    }

    /// `true` for an array.
    pub fn is_array(&self) -> bool {
        self.node().kind == Kind::Array
    }

    /// The string's (decoded) text, if this is a string.
    pub fn as_str(&self) -> Option<&'t str> {
        let node = self.node();
        match node.kind {
            Kind::Plain => Some(&self.src[node.range()]),
            Kind::Decoded | Kind::Canonical => Some(&self.tape.decoded[node.range()]),
            _ => None,
        }
    }

    /// Appends the string's JSON text without its quotes, as [`write_string`] spells it;
    /// returns `false` (and appends nothing) when this is not a string.
    fn escape_into(&self, out: &mut String) -> bool {
        let node = self.node();
        match node.kind {
            // The parser ends a plain string at its first quote, backslash or control
            // character, so there is nothing in it to escape.
            Kind::Plain => out.push_str(&self.src[node.range()]),
            // Decoding and escaping again would give back the same text.
            Kind::Canonical => out.push_str(&self.src[node.raw as usize..node.raw_end as usize]),
            Kind::Decoded => escape_into(&self.tape.decoded[node.range()], out),
            _ => return false,
        }
        true
    }

    /// The number's text as written, if this is a number.
    pub fn as_number(&self) -> Option<&'t str> {
        let node = self.node();
        (node.kind == Kind::Number).then(|| &self.src[node.range()])
    }

    /// JavaScript truthiness, as [`Value::is_truthy`] (C55).
    pub fn is_truthy(&self) -> bool {
        match self.node().kind {
            Kind::Null | Kind::False => false,
            Kind::True | Kind::Array | Kind::Object => true,
            Kind::Number => number_is_truthy(self.as_number().unwrap_or("0")),
            Kind::Plain | Kind::Decoded | Kind::Canonical => {
                self.as_str().is_some_and(|s| !s.is_empty())
            }
        }
    }

    /// The values directly inside this one when it is a `kind` container (nothing otherwise):
    /// an array's elements, or an object's keys and values in turn.
    fn children(&self, kind: Kind) -> impl Iterator<Item = Item<'t>> + use<'t> {
        let node = self.node();
        let end = if node.kind == kind { node.end() } else { 0 };
        let mut index = self.index + 1;
        let first = *self;
        std::iter::from_fn(move || {
            (index < end).then(|| {
                let item = first.at(index);
                index = item.next();
                item
            })
        })
    }

    /// The elements of an array (nothing for other values).
    pub fn elements(&self) -> impl Iterator<Item = Item<'t>> + use<'t> {
        self.children(Kind::Array)
    }

    /// The members of an object in input order, duplicates included (nothing for other
    /// values).
    pub fn members(&self) -> impl Iterator<Item = (&'t str, Item<'t>)> + use<'t> {
        let mut children = self.children(Kind::Object);
        std::iter::from_fn(move || {
            let key = children.next()?;
            Some((key.as_str().unwrap_or_default(), children.next()?))
        })
    }

    /// The member `key` of an object (its last value when the key repeats, C50); `None` for
    /// other values or a missing key.
    pub fn get(&self, key: &str) -> Option<Item<'t>> {
        self.members()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .last()
    }

    /// The value as a [`Value`].
    pub fn to_value(&self) -> Value {
        match self.node().kind {
            Kind::Null => Value::Null,
            Kind::True => Value::Bool(true),
            Kind::False => Value::Bool(false),
            Kind::Number => Value::Number(Number(self.as_number().unwrap_or("0").to_owned())),
            Kind::Plain | Kind::Decoded | Kind::Canonical => {
                Value::String(self.as_str().unwrap_or("").to_owned())
            }
            Kind::Array => Value::Array(self.elements().map(|e| e.to_value()).collect()),
            Kind::Object => {
                let mut map = Object::default();
                for (key, value) in self.members() {
                    // IndexMap::insert keeps an existing key's position and replaces its
                    // value, which is exactly C50's rule for duplicate keys.
                    map.insert(key.to_owned(), value.to_value());
                }
                Value::Object(map)
            }
        }
    }

    /// Compact JSON text, as [`Value::to_json`] of [`to_value`](Self::to_value) (C52, C53).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the compact JSON text to `out`: the same text as `to_value().write_json(out)`,
    /// without building the value.
    pub fn write_json(&self, out: &mut String) {
        match self.node().kind {
            Kind::Null => out.push_str("null"),
            Kind::True => out.push_str("true"),
            Kind::False => out.push_str("false"),
            Kind::Number => out.push_str(self.as_number().unwrap_or("0")),
            Kind::Plain | Kind::Decoded | Kind::Canonical => {
                out.push('"');
                self.escape_into(out);
                out.push('"');
            }
            Kind::Array => {
                out.push('[');
                for (i, element) in self.elements().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    element.write_json(out);
                }
                out.push(']');
            }
            Kind::Object if self.has_duplicate_keys() => self.to_value().write_json(out),
            Kind::Object => {
                out.push('{');
                for (i, (key, value)) in self.members().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Whether an object repeats a key; for large objects, `true` when it might (the caller
    /// then goes through [`Value`], which is exact either way).
    fn has_duplicate_keys(&self) -> bool {
        const PAIRWISE: usize = 16;
        let mut seen: [&str; PAIRWISE] = [""; PAIRWISE];
        for (i, (key, _)) in self.members().enumerate() {
            if i == PAIRWISE || seen[..i].contains(&key) {
                return true;
            }
            seen[i] = key;
        }
        false
    }
}

/// JavaScript truthiness of a JSON number's text: `0`, `-0`, `0.0`, `0e5` are falsy (C55).
fn number_is_truthy(text: &str) -> bool {
    // The text is a valid JSON number, which Rust's float grammar accepts.
    text.parse::<f64>().unwrap_or(f64::NAN) != 0.0
}

struct TapeParser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    tape: &'a mut Tape,
}

impl TapeParser<'_> {
    fn error(&self, message: &'static str) -> ParseError {
        ParseError::new(message, self.pos)
    }

    /// A container at `pos` would nest deeper than [`MAX_DEPTH`]; [`Tape::parse`] fills in
    /// the path.
    fn too_deep(&self) -> ParseError {
        ParseError {
            nesting_path: Some(Vec::new()),
            ..self.error("nesting too deep")
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    /// Appends a node. Offsets fit in `u32`: `Tape::parse` refuses longer texts, and neither
    /// the decoded text nor the node count can outgrow the text.
    fn push(&mut self, kind: Kind, start: usize, end: usize) -> usize {
        self.tape.nodes.push(Node {
            kind,
            start: start as u32,
            end: end as u32,
            raw: 0,
            raw_end: 0,
        });
        self.tape.nodes.len() - 1
    }

    fn literal(&mut self, literal: &[u8], kind: Kind) -> Result<(), ParseError> {
        if self.src[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            self.push(kind, 0, 0);
            Ok(())
        } else {
            Err(self.error("unexpected token"))
        }
    }

    /// Parses one value at `pos` (which is not white space) onto the tape.
    fn value(&mut self, depth: usize) -> Result<(), ParseError> {
        match self.src.get(self.pos) {
            None => Err(self.error("unexpected end of JSON input")),
            Some(b'n') => self.literal(b"null", Kind::Null),
            Some(b't') => self.literal(b"true", Kind::True),
            Some(b'f') => self.literal(b"false", Kind::False),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos = scan_number(self.src, start)
                    .map_err(|offset| ParseError::new("invalid number", offset))?;
                self.push(Kind::Number, start, self.pos);
                Ok(())
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep());
                }
                self.pos += 1;
                let array = self.push(Kind::Array, 0, 0);
                self.skip_ws();
                if self.src.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    self.tape.nodes[array].end = self.tape.nodes.len() as u32;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.src.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            self.tape.nodes[array].end = self.tape.nodes.len() as u32;
                            return Ok(());
                        }
                        None => return Err(self.error("unexpected end of JSON input")),
                        Some(_) => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(self.too_deep());
                }
                self.pos += 1;
                let object = self.push(Kind::Object, 0, 0);
                self.skip_ws();
                if self.src.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    self.tape.nodes[object].end = self.tape.nodes.len() as u32;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    if self.src.get(self.pos) != Some(&b'"') {
                        return Err(match self.src.get(self.pos) {
                            None => self.error("unexpected end of JSON input"),
                            Some(_) => self.error("expected a string key"),
                        });
                    }
                    self.string()?;
                    self.skip_ws();
                    if self.src.get(self.pos) != Some(&b':') {
                        return Err(self.error("expected ':'"));
                    }
                    self.pos += 1;
                    self.skip_ws();
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.src.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            self.tape.nodes[object].end = self.tape.nodes.len() as u32;
                            return Ok(());
                        }
                        None => return Err(self.error("unexpected end of JSON input")),
                        Some(_) => return Err(self.error("expected ',' or '}'")),
                    }
                }
            }
            Some(_) => Err(self.error("unexpected token")),
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("unexpected end of JSON input"))?;
        let mut n = 0u32;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            n = n * 16 + v;
        }
        self.pos += 4;
        Ok(n)
    }

    /// Parses the string at `pos` (a quote) onto the tape: a plain node when it has no escape,
    /// otherwise its decoded text goes to the tape's buffer.
    fn string(&mut self) -> Result<(), ParseError> {
        debug_assert_eq!(self.src[self.pos], b'"');
        self.pos += 1;
        let start = self.pos;
        let unterminated = ParseError::new("unterminated string", self.src.len());
        // Find the run up to the next quote, backslash or control character in one go.
        let run_end = find_special(&self.src[start..])
            .map(|i| start + i)
            .ok_or(unterminated.clone())?;
        if self.src[run_end] == b'"' {
            self.pos = run_end + 1;
            self.push(Kind::Plain, start, run_end);
            return Ok(());
        }
        let decoded_start = self.tape.decoded.len();
        self.pos = start;
        // Whether every escape so far is the one `write_string` writes for its character.
        let mut canonical = true;
        loop {
            let run_end = find_special(&self.src[self.pos..])
                .map(|i| self.pos + i)
                .ok_or(unterminated.clone())?;
            self.tape.decoded.push_str(&self.text[self.pos..run_end]);
            self.pos = run_end;
            let out = &mut self.tape.decoded;
            match self.src[self.pos] {
                b'"' => {
                    let end = self.tape.decoded.len();
                    let kind = if canonical {
                        Kind::Canonical
                    } else {
                        Kind::Decoded
                    };
                    let node = self.push(kind, decoded_start, end);
                    self.tape.nodes[node].raw = start as u32;
                    self.tape.nodes[node].raw_end = self.pos as u32;
                    self.pos += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(&esc) = self.src.get(self.pos) else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => {
                            canonical = false;
                            out.push('/');
                        }
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let digits = self.pos;
                            let first = self.hex4()?;
                            // `write_string` spells only controls without a short escape this
                            // way, in lower case.
                            const HEX: &[u8; 16] = b"0123456789abcdef";
                            canonical &= first < 0x20
                                && !matches!(first, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)
                                && self.src[digits..digits + 4]
                                    == [
                                        b'0',
                                        b'0',
                                        HEX[first as usize >> 4],
                                        HEX[first as usize & 0xf],
                                    ];
                            let code = match first {
                                0xD800..=0xDBFF => {
                                    if self.src.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                        return Err(self.error("lone surrogate in \\u escape"));
                                    }
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&second) {
                                        return Err(self.error("lone surrogate in \\u escape"));
                                    }
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                }
                                0xDC00..=0xDFFF => {
                                    return Err(self.error("lone surrogate in \\u escape"));
                                }
                                other => other,
                            };
                            // Surrogates were handled above, so this is a scalar value.
                            self.tape
                                .decoded
                                .push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                _ => return Err(self.error("control character in string")),
            }
        }
    }
}

/// Scans one JSON number starting at `start`; returns the end offset, or the offset of the
/// first offending byte.
fn scan_number(src: &[u8], start: usize) -> Result<usize, usize> {
    let mut i = start;
    let digits = |i: &mut usize| {
        let from = *i;
        while src.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if src.get(i) == Some(&b'-') {
        i += 1;
    }
    match src.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return Err(i),
    }
    if src.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return Err(i);
        }
    }
    if let Some(b'e' | b'E') = src.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = src.get(i) {
            i += 1;
        }
        if !digits(&mut i) {
            return Err(i);
        }
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> String {
        Value::parse(s.as_bytes()).unwrap().to_json()
    }

    #[test]
    fn d12_numbers_keep_their_spelling() {
        for n in [
            "1.0",
            "1e2",
            "1E2",
            "-0",
            "12345678901234567890",
            "0.70",
            "1e-7",
            "-0.0e+0",
        ] {
            assert_eq!(roundtrip(n), n);
        }
        assert_eq!(
            roundtrip(r#"{"temperature":0.70,"seed":12345678901234567890}"#),
            r#"{"temperature":0.70,"seed":12345678901234567890}"#
        );
    }

    #[test]
    fn c52_key_order_and_duplicates() {
        assert_eq!(roundtrip(r#"{"b":1,"a":2,"b":3}"#), r#"{"b":3,"a":2}"#);
        assert_eq!(
            roundtrip(" { \"a\" : [ 1 , { } , [ ] ] } "),
            r#"{"a":[1,{},[]]}"#
        );
    }

    #[test]
    fn c53_escaping_like_json_stringify() {
        assert_eq!(
            roundtrip(r#"{ "a" : "\u00e9\/x" , "n" : 1.50 }"#),
            r#"{"a":"é/x","n":1.50}"#
        );
        assert_eq!(
            roundtrip(r#""\u0001\u001f\u007f\u2028\b\f\n\r\t\"\\""#),
            "\"\\u0001\\u001f\u{7f}\u{2028}\\b\\f\\n\\r\\t\\\"\\\\\""
        );
        assert_eq!(roundtrip(r#""\ud83d\ude00""#), "\"😀\"");
    }

    #[test]
    fn c50_what_does_not_parse() {
        let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Value::parse(deep_ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(Value::parse(deep.as_bytes()).is_err());
        let deep_obj = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert!(Value::parse(deep_obj.as_bytes()).is_err());
        for bad in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            "{\"messages\": [",
            "",
            "   ",
            "01",
            "1.",
            ".5",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "\"a\u{1}\"",
            "nul",
            "1 2",
            "'a'",
        ] {
            assert!(
                Value::parse(bad.as_bytes()).is_err(),
                "{bad:?} must not parse"
            );
        }
        assert!(Value::parse(b"\"\xff\"").is_err());
        for bad in ["[1,]", "\"\\ud800\"", "nul"] {
            let error = Value::parse(bad.as_bytes()).unwrap_err();
            assert_eq!(error.nesting_path, None, "{bad:?}");
        }
    }

    #[test]
    fn c50_nesting_too_deep_names_the_path_to_the_level_too_many() {
        let path = |text: &str| Value::parse(text.as_bytes()).unwrap_err().nesting_path;
        // 129 arrays: the path is the first element 128 times.
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(path(&deep), Some(vec!["0".to_owned(); MAX_DEPTH]));
        // Keys with escapes are decoded; closed siblings before the deep member are skipped,
        // and array positions count them.
        let inner = "{\"x\":".repeat(MAX_DEPTH - 2) + "1" + &"}".repeat(MAX_DEPTH - 2);
        let text =
            format!(r#"{{"a":1,"b":{{"c":[2],"d\u002ee":[{{}},[1,[2]],{{"q":[]}},{inner}]}}}}"#);
        let mut expected = vec!["b", "d.e", "3"];
        expected.extend(std::iter::repeat_n("x", MAX_DEPTH - 3));
        assert_eq!(
            path(&text),
            Some(expected.iter().map(|s| s.to_string()).collect())
        );
        // One level less parses.
        let inner = "{\"x\":".repeat(MAX_DEPTH - 3) + "1" + &"}".repeat(MAX_DEPTH - 3);
        let text = format!(r#"{{"b":{{"d":[{inner}]}}}}"#);
        assert!(Value::parse(text.as_bytes()).is_ok());
        // The error itself reads as before.
        let error = Value::parse(deep.as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "nesting too deep at position 128");
    }

    #[test]
    fn number_validation() {
        assert!(Number::parse("1e3").is_some());
        assert!(Number::parse(" 1").is_none());
        assert!(Number::parse("0x10").is_none());
        assert_eq!(Number::parse("42").unwrap().as_u64(), Some(42));
    }

    #[test]
    fn c55_truthiness() {
        for falsy in ["null", "false", "0", "-0", "0.0", "\"\""] {
            assert!(
                !Value::parse(falsy.as_bytes()).unwrap().is_truthy(),
                "{falsy}"
            );
        }
        for truthy in ["true", "1", "\"x\"", "[]", "{}"] {
            assert!(
                Value::parse(truthy.as_bytes()).unwrap().is_truthy(),
                "{truthy}"
            );
        }
    }

    /// The tape's direct serialisation and lookups agree with the [`Value`] built from it,
    /// whose object type applies C50's duplicate rule by construction.
    mod tape {
        use super::super::{Tape, Value};
        use proptest::prelude::*;

        /// JSON texts with few distinct keys (so they repeat), escapes and white space.
        fn json() -> impl Strategy<Value = String> {
            let string = prop_oneof![
                Just(r#""a""#.to_owned()),
                Just(r#""b""#.to_owned()),
                Just(r#""\u0061""#.to_owned()),
                Just(r#""\n\"\/é😀""#.to_owned()),
                Just(r#""\n\"\\\t\b\f\r\u0001\u001f""#.to_owned()),
                Just(r#""\u001F""#.to_owned()),
                Just(r#""x\u000a""#.to_owned()),
                Just(r#""\u0008\u00e9""#.to_owned()),
                "[a-c]{0,3}".prop_map(|s| format!("\"{s}\"")),
            ];
            let leaf = prop_oneof![
                Just("null".to_owned()),
                Just("true".to_owned()),
                Just("false".to_owned()),
                Just("-0".to_owned()),
                Just("1.50e+2".to_owned()),
                string.clone(),
            ];
            let ws = prop_oneof![Just(""), Just(" "), Just("\n\t")];
            leaf.prop_recursive(4, 48, 6, move |inner| {
                prop_oneof![
                    proptest::collection::vec((inner.clone(), ws.clone()), 0..6).prop_map(
                        |items| {
                            let items: Vec<String> = items
                                .into_iter()
                                .map(|(v, w)| format!("{w}{v}{w}"))
                                .collect();
                            format!("[{}]", items.join(","))
                        }
                    ),
                    proptest::collection::vec((string.clone(), inner, ws.clone()), 0..20).prop_map(
                        |members| {
                            let members: Vec<String> = members
                                .into_iter()
                                .map(|(k, v, w)| format!("{w}{k}{w}:{w}{v}"))
                                .collect();
                            format!("{{{}}}", members.join(","))
                        }
                    ),
                ]
            })
        }

        proptest! {
            #[test]
            fn serialises_and_looks_up_like_the_value_tree(text in json()) {
                let value = Value::parse(text.as_bytes()).unwrap();
                let mut tape = Tape::default();
                let root = tape.parse(&text).unwrap();
                prop_assert_eq!(root.to_json(), value.to_json());
                prop_assert_eq!(root.to_value(), value.clone());
                for key in ["a", "b", "c", ""] {
                    prop_assert_eq!(root.get(key).map(|v| v.to_value()), value.get(key).cloned());
                }
            }

            /// An independent parser accepts exactly the same texts (the generated ones are
            /// far from the depth limit, where serde_json's own limit differs).
            #[test]
            fn accepts_what_serde_json_accepts(
                text in json(), cut in 0usize..64, junk in "[\\x00-\\x7f]{0,2}"
            ) {
                let mut damaged = text.clone();
                let at = (cut % (text.len() + 1)..=text.len())
                    .find(|&i| damaged.is_char_boundary(i))
                    .unwrap_or(text.len());
                damaged.insert_str(at, &junk);
                let mut tape = Tape::default();
                prop_assert_eq!(
                    tape.parse(&damaged).is_ok(),
                    serde_json::from_str::<serde_json::Value>(&damaged).is_ok(),
                    "{:?}", damaged
                );
            }
        }
    }

    /// The word-at-a-time search finds exactly the first byte the byte-at-a-time one finds,
    /// and escaping through it matches a byte-at-a-time escaper (C53).
    mod find_special {
        use super::super::{find_special, is_special, write_string};
        use proptest::prelude::*;

        /// Bytes weighted towards the interesting ones: specials, their neighbours, high bytes.
        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                Just(b'"'),
                Just(b'\\'),
                0u8..0x21,
                Just(0x21u8),
                Just(0x5bu8),
                Just(0x5du8),
                Just(0x7fu8),
                0x80u8..=0xff,
                any::<u8>(),
            ];
            proptest::collection::vec(byte, 0..40)
        }

        proptest! {
            #[test]
            fn same_as_scanning_each_byte(bytes in bytes()) {
                prop_assert_eq!(
                    find_special(&bytes),
                    bytes.iter().position(|&b| is_special(b))
                );
            }

            #[test]
            fn escaping_matches_a_char_by_char_escaper(text in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
                let mut expected = String::from("\"");
                for c in text.chars() {
                    match c {
                        '"' => expected.push_str("\\\""),
                        '\\' => expected.push_str("\\\\"),
                        '\n' => expected.push_str("\\n"),
                        '\r' => expected.push_str("\\r"),
                        '\t' => expected.push_str("\\t"),
                        '\u{8}' => expected.push_str("\\b"),
                        '\u{c}' => expected.push_str("\\f"),
                        c if (c as u32) < 0x20 => expected.push_str(&format!("\\u{:04x}", c as u32)),
                        c => expected.push(c),
                    }
                }
                expected.push('"');
                let mut out = String::new();
                write_string(&text, &mut out);
                prop_assert_eq!(out, expected);
            }
        }
    }
}
