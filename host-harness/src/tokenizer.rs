//! Token counting for usage estimates (contract C110–C112).
//!
//! The component chooses the encoding and builds the prompt and completion texts
//! (`openai_connector::estimate`); the host counts their tokens here, because the vocabularies
//! (several megabytes each) belong in the host, not in every component instance. They come
//! compiled into the `tiktoken-rs` crate, so counting never touches the network.
//!
//! Each vocabulary is loaded at most once per process, on first use, and shared by every
//! execution after that.
//!
//! Long texts are counted in segments of at most `MAX_SEGMENT_BYTES`: tiktoken's
//! backtracking splitter gives up (and `tiktoken-rs` panics) on very long runs such as a
//! megabyte of spaces, and a prompt may contain anything. Segments end at a space that follows
//! a non-white-space character, which is always a boundary of tiktoken's pre-tokeniser in
//! both encodings (no piece holds a space after another character), so the count is exact.
//! Only a stretch of `MAX_SEGMENT_BYTES` without such a space is cut elsewhere, which may
//! change its count by a token or two; it is an estimate (C112) either way (chosen).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// Name of the `o200k_base` encoding (C110).
pub(crate) const O200K_BASE: &str = "o200k_base";

/// Name of the `cl100k_base` encoding (C110).
pub(crate) const CL100K_BASE: &str = "cl100k_base";

/// The static name of `encoding` when it is one this build counts with.
pub(crate) fn known_encoding(encoding: &str) -> Option<&'static str> {
    [O200K_BASE, CL100K_BASE]
        .into_iter()
        .find(|known| *known == encoding)
}

/// The process-wide tokenizer for `encoding`, loaded on first use; `None` for an encoding this
/// build does not know, or whose vocabulary failed to load (then estimates are `unavailable`,
/// C112).
fn tokenizer(encoding: &str) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    match encoding {
        O200K_BASE => O200K.get_or_init(|| tiktoken_rs::o200k_base().ok()),
        CL100K_BASE => CL100K.get_or_init(|| tiktoken_rs::cl100k_base().ok()),
        _ => return None,
    }
    .as_ref()
}

/// The number of tokens of `text` in `encoding` (`"o200k_base"` or `"cl100k_base"`), or `None`
/// for any other encoding. Also `None` if the tokenizer failed on the text, which the
/// segmenting described in the module documentation prevents for every input known to trouble
/// it.
///
/// Special-token strings such as `<|endoftext|>` or `<|end|>` are counted as ordinary text
/// (C112): the text is model input or output, never control markup.
///
/// ```
/// use openai_connector_harness::tokenizer::count_tokens;
///
/// assert_eq!(count_tokens("cl100k_base", "hello world"), Some(2));
/// assert_eq!(count_tokens("p50k_base", "hello world"), None);
/// ```
pub fn count_tokens(encoding: &str, text: &str) -> Option<u64> {
    let bpe = tokenizer(encoding)?;
    let mut count = 0u64;
    for segment in segments(text) {
        // `tiktoken-rs` panics where its splitter gives up; the tokenizer is immutable, so a
        // panic leaves nothing half-changed behind.
        let tokens = catch_unwind(AssertUnwindSafe(|| bpe.encode_ordinary(segment))).ok()?;
        count = count.saturating_add(tokens.len() as u64);
    }
    Some(count)
}

/// The longest segment [`count_tokens`] hands to the tokenizer at once, in bytes.
pub(crate) const MAX_SEGMENT_BYTES: usize = 32 * 1024;

/// Splits `text` into segments of at most [`MAX_SEGMENT_BYTES`] (a character longer than that
/// cannot occur), each ending just before a space that follows a non-white-space character
/// where there is one.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= MAX_SEGMENT_BYTES {
            rest.len()
        } else {
            let window = &rest[..rest.floor_char_boundary(MAX_SEGMENT_BYTES)];
            window
                .rmatch_indices(' ')
                .map(|(at, _)| at)
                .find(|&at| {
                    window[..at]
                        .chars()
                        .next_back()
                        .is_some_and(|c| !c.is_whitespace())
                })
                .unwrap_or(window.len())
        };
        let (segment, tail) = rest.split_at(cut);
        rest = tail;
        Some(segment)
    })
}

/// An estimate (C112): `(prompt_tokens, completion_tokens, total_tokens)` for the two texts,
/// the total being their sum; `None` when `encoding` is unknown.
pub(crate) fn estimate(
    encoding: &str,
    prompt_text: &str,
    completion_text: &str,
) -> Option<(u64, u64, u64)> {
    let prompt = count_tokens(encoding, prompt_text)?;
    let completion = count_tokens(encoding, completion_text)?;
    Some((prompt, completion, prompt.saturating_add(completion)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(encoding: &str, text: &str) -> Vec<u32> {
        tokenizer(encoding).unwrap().encode_ordinary(text)
    }

    // C112: counts match tiktoken's published values.
    #[test]
    fn known_counts() {
        assert_eq!(ids(CL100K_BASE, "hello world"), [15339, 1917]);
        assert_eq!(ids(O200K_BASE, "hello world"), [24912, 2375]);
        assert_eq!(
            ids(CL100K_BASE, "tiktoken is great!"),
            [83, 1609, 5963, 374, 2294, 0]
        );
        assert_eq!(count_tokens(CL100K_BASE, "hello world"), Some(2));
        assert_eq!(count_tokens(O200K_BASE, "hello world"), Some(2));
        assert_eq!(count_tokens(CL100K_BASE, "tiktoken is great!"), Some(6));
        assert_eq!(count_tokens(CL100K_BASE, ""), Some(0));
        assert_eq!(count_tokens(O200K_BASE, ""), Some(0));
    }

    // C112: special-token strings are ordinary text, several tokens each.
    #[test]
    fn special_token_strings_are_ordinary_text() {
        for encoding in [CL100K_BASE, O200K_BASE] {
            let end = count_tokens(encoding, "<|end|>").unwrap();
            assert!(end > 1, "{encoding}: <|end|> is {end} tokens");
            let eot = ids(encoding, "<|endoftext|>");
            assert!(eot.len() > 1, "{encoding}: <|endoftext|> is {eot:?}");
            // The special ids of `<|endoftext|>` never appear.
            assert!(
                !eot.contains(&100257) && !eot.contains(&199999),
                "{encoding}: {eot:?}"
            );
        }
        // The C111 frame around a message is counted too.
        let framed = count_tokens(CL100K_BASE, "<|start|>user\nhello world<|end|>").unwrap();
        assert!(framed > 2 + 2, "{framed}");
    }

    // C112: total is the sum.
    #[test]
    fn estimate_sums() {
        assert_eq!(
            estimate(CL100K_BASE, "hello world", "tiktoken is great!"),
            Some((2, 6, 8))
        );
        assert_eq!(estimate(O200K_BASE, "", ""), Some((0, 0, 0)));
    }

    // C110: only the two encodings of the table are known.
    #[test]
    fn unknown_encoding() {
        for encoding in ["", "p50k_base", "r50k_base", "O200K_BASE", "o200k_harmony"] {
            assert_eq!(count_tokens(encoding, "hello"), None, "{encoding}");
            assert_eq!(estimate(encoding, "a", "b"), None, "{encoding}");
            assert!(tokenizer(encoding).is_none());
        }
        assert!(tokenizer(O200K_BASE).is_some());
        assert!(tokenizer(CL100K_BASE).is_some());
    }

    // C112: segmenting at spaces after non-white-space keeps long texts' counts exact.
    #[test]
    fn long_text_counts_exactly() {
        let paragraph =
            "The quick brown fox, \"jumps\" over 1234567 lazy dogs!\n\tÉtude — naïve café? ";
        let text = paragraph.repeat(3000);
        assert!(text.len() > 4 * MAX_SEGMENT_BYTES);
        for encoding in [CL100K_BASE, O200K_BASE] {
            let whole = ids(encoding, &text).len() as u64;
            assert_eq!(count_tokens(encoding, &text), Some(whole), "{encoding}");
        }
        let parts: Vec<&str> = segments(&text).collect();
        assert!(parts.len() > 4);
        assert_eq!(parts.concat(), text);
        for part in &parts[1..] {
            assert!(part.starts_with(' ') && part.len() <= MAX_SEGMENT_BYTES);
        }
    }

    // C112: the same over a pseudo-random mix of the pre-tokeniser's edge cases.
    #[test]
    fn mixed_text_counts_exactly() {
        let pieces = [
            " ",
            "  ",
            "\n",
            "\r\n",
            " \n ",
            "\t",
            "word",
            "Word",
            "'s",
            "'LL",
            "123",
            "4567",
            "é",
            "日本語",
            "!!",
            "/",
            " /",
            "?\n",
            "\u{a0}",
            "\u{2003}",
            "x",
            "<|end|>",
            "\u{301}",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut text = String::new();
        while text.len() < 6 * MAX_SEGMENT_BYTES {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        assert!(segments(&text).count() > 6);
        for encoding in [CL100K_BASE, O200K_BASE] {
            let whole = ids(encoding, &text).len() as u64;
            assert_eq!(count_tokens(encoding, &text), Some(whole), "{encoding}");
        }
    }

    // Runs that tiktoken's splitter cannot handle in one piece are still counted.
    #[test]
    fn pathological_runs() {
        let spaces = " ".repeat(1_000_000);
        // o200k_base panics inside tiktoken-rs on this text in one piece.
        assert!(count_tokens(O200K_BASE, &spaces).unwrap() > 0);
        assert!(count_tokens(CL100K_BASE, &spaces).unwrap() > 0);
        let letters = "é".repeat(100_000);
        let parts: Vec<&str> = segments(&letters).collect();
        assert_eq!(parts.concat(), letters);
        assert!(parts.iter().all(|p| p.len() <= MAX_SEGMENT_BYTES));
        assert!(count_tokens(CL100K_BASE, &letters).unwrap() > 0);
        assert_eq!(segments("").count(), 0);
    }

    // One load per process: every call returns the same instance.
    #[test]
    fn loaded_once() {
        let first = tokenizer(O200K_BASE).unwrap() as *const CoreBPE;
        let second = tokenizer(O200K_BASE).unwrap() as *const CoreBPE;
        assert_eq!(first, second);
    }
}
