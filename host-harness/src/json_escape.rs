//! JSON string escaping, eight bytes at a time: [`escape`].
//!
//! Std only, so that the floor of the `sse decode` bench (benches/sse-decode/floor.rs) builds
//! this file as it is with `rustc`.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// The most bytes [`escape`] writes for `len` bytes of text: six per byte (`\u00xx`).
pub(crate) const fn max_escaped_len(len: usize) -> usize {
    6 * len
}

/// Writes `text` (UTF-8) into `out` from `at` as the inside of a JSON string literal, and
/// returns where it ends: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as
/// lower-case `\u00xx`, everything else as it is (serde_json's and `JSON.stringify`'s
/// spelling). `out` must have [`max_escaped_len`]`(text.len())` bytes from `at`, or this
/// panics; what it writes past the returned end is scratch.
///
/// Eight bytes per step: [`special_bytes`] finds the bytes of a word to escape. A word without
/// any is copied whole; one with quotes or backslashes only (JSON data has a quote every eight
/// bytes or so) is written byte by byte without branches, each byte after a backslash that it
/// overwrites unless it needs it; control characters (rare) go byte by byte. Into a slice, not
/// a `Vec`: no length to update per byte, and nothing read back from bytes just written (a
/// small buffer written by bytes and copied out as a whole stalls the copy's load). With
/// cachegrind on an OpenAI stream's data (one escape per 8 bytes) this takes about half the
/// instructions of serde_json's table loop and a fifth of its mispredicted branches.
/// memchr has no search for "a byte below 0x20", and x86 SIMD loads need `unsafe`, which this
/// crate forbids.
pub(crate) fn escape(text: &[u8], out: &mut [u8], at: usize) -> usize {
    let mut pos = at;
    let mut words = text.chunks_exact(8);
    for word in &mut words {
        let word: [u8; 8] = word.try_into().expect("chunks of eight");
        let (control, quote_or_backslash) = special_bytes(u64::from_le_bytes(word));
        if control != 0 {
            for b in word {
                pos = escape_byte(b, out, pos);
            }
        } else if quote_or_backslash == 0 {
            out[pos..pos + 8].copy_from_slice(&word);
            pos += 8;
        } else {
            // At most sixteen bytes; `& 15` only tells the compiler so.
            let window = &mut out[pos..pos + 16];
            let mut len = 0;
            for (i, b) in word.into_iter().enumerate() {
                window[len & 15] = b'\\';
                len += usize::from((quote_or_backslash >> (i * 8 + 7)) & 1 == 1);
                window[len & 15] = b;
                len += 1;
            }
            pos += len;
        }
    }
    for &b in words.remainder() {
        pos = escape_byte(b, out, pos);
    }
    pos
}

/// Writes `b` at `pos`, escaped if it must be; returns the end.
#[inline]
fn escape_byte(b: u8, out: &mut [u8], pos: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        0..0x20 => {
            out[pos..pos + 6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            return pos + 6;
        }
        _ => {
            out[pos] = b;
            return pos + 1;
        }
    };
    out[pos..pos + 2].copy_from_slice(&[b'\\', short]);
    pos + 2
}

/// The high bits of the bytes of `x` below 0x20, and those of the bytes that are `"` or `\`,
/// and no other bit. Each byte is tested on its own: the sums below stay within their byte
/// (at most 0x7F + 0x7F), so no carry crosses into the next, and a hit is exact rather than
/// "somewhere in the word".
#[inline]
fn special_bytes(x: u64) -> (u64, u64) {
    // Bit 7 of (low seven bits + 0x60) is set when those bits are at least 0x20; a byte with
    // its own high bit set is not a control character either.
    let not_control = ((x & LOW7) + ONES * 0x60) | x;
    // `y` is zero in a byte exactly where `x` holds `c`; bit 7 of (low seven bits of `y` +
    // 0x7F) is set when those bits are not all zero.
    let not_byte = |c: u8| {
        let y = x ^ (ONES * u64::from(c));
        ((y & LOW7) + LOW7) | y
    };
    (
        !not_control & HIGH,
        !(not_byte(b'"') & not_byte(b'\\')) & HIGH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` escaped after `prefix`, in a buffer of exactly the room [`escape`] asks for.
    fn escaped(prefix: &[u8], text: &str) -> Vec<u8> {
        let mut out = prefix.to_vec();
        out.resize(prefix.len() + max_escaped_len(text.len()), 0xAA);
        let end = escape(text.as_bytes(), &mut out, prefix.len());
        out.truncate(end);
        out
    }

    #[test]
    fn every_byte_at_every_place_in_a_word_is_escaped_as_serde_json_does() {
        // Each ASCII byte at each offset of the eight-byte words and of the tail, alone and
        // next to others that need escaping, and runs of them across word boundaries.
        for b in 0u8..0x80 {
            let c = char::from(b);
            for len in 1..=19 {
                for at in 0..len {
                    let mut s: Vec<char> = "abcdefghijklmnopqrs".chars().take(len).collect();
                    s[at] = c;
                    let s: String = s.into_iter().collect();
                    let out = escaped(b"", &s);
                    let want = serde_json::to_string(&s).unwrap();
                    assert_eq!(out, want.as_bytes()[1..want.len() - 1], "{s:?}");
                    let dense: String = std::iter::repeat_n(c, len).collect();
                    let out = escaped(b"", &dense);
                    let want = serde_json::to_string(&dense).unwrap();
                    assert_eq!(out, want.as_bytes()[1..want.len() - 1], "{dense:?}");
                }
            }
        }
    }

    #[test]
    fn mixed_strings_are_escaped_as_serde_json_does() {
        // Strings drawn from characters of one to four bytes and every kind of escape, so
        // that words hold several escapes, controls next to quotes and cut characters.
        const CHARS: [char; 10] = [
            'a',
            '"',
            '\\',
            '\n',
            '\u{1}',
            '\u{1f}',
            '\u{e9}',
            '\u{1f600}',
            '\u{7f}',
            ' ',
        ];
        let mut state = 0x5EED_u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        for _ in 0..5000 {
            let len = next() % 48;
            let s: String = (0..len).map(|_| CHARS[next() % CHARS.len()]).collect();
            let out = escaped(b"prefix", &s);
            let want = serde_json::to_string(&s).unwrap();
            assert_eq!(out[6..], want.as_bytes()[1..want.len() - 1], "{s:?}");
        }
    }

    #[test]
    fn special_bytes_marks_exactly_the_bytes_to_escape() {
        // Every byte value in every position, with neighbours that carry or borrow the most.
        for b in 0..=255u8 {
            for pos in 0..8 {
                for fill in [0x00u8, 0x1f, 0x20, 0x22, 0x5c, 0x7f, 0x80, 0xff] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = b;
                    let (control, quote_or_backslash) = special_bytes(u64::from_le_bytes(bytes));
                    for (i, &x) in bytes.iter().enumerate() {
                        let bit = |mask: u64| mask >> (i * 8) & 0xff;
                        let want = |yes: bool| if yes { 0x80 } else { 0 };
                        assert_eq!(bit(control), want(x < 0x20), "{bytes:02x?} at {i}");
                        assert_eq!(
                            bit(quote_or_backslash),
                            want(x == b'"' || x == b'\\'),
                            "{bytes:02x?} at {i}"
                        );
                    }
                }
            }
        }
    }
}
