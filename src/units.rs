//! Sizes and durations as settings files and environment variables write them: the harness's
//! settings (`maxResponseContentLength`, `guestMemoryLimit`, `responseTimeout`, ...) and the
//! gateway world's `OPENAI_CONNECTOR_SETTINGS` share these, so both accept the same texts.

/// `"1mb"`, `"512kb"`, `"1gb"`, `"100b"` (binary units) or digits alone (bytes); case and
/// surrounding space are ignored. `None` when malformed or larger than `u64`.
pub fn byte_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (n, unit) = split_number(&text)?;
    let factor: u64 = match unit {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `"500ms"`, `"60s"`, `"2m"`, `"1h"` or digits alone, in milliseconds; surrounding space is
/// ignored. `None` when malformed or larger than `u64`.
pub fn duration_ms(text: &str) -> Option<u64> {
    let (n, unit) = split_number(text.trim())?;
    match unit {
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
}

/// The leading digits as a number, and the rest.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    Some((digits.parse().ok()?, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(byte_size("100"), Some(100));
        assert_eq!(byte_size("100b"), Some(100));
        assert_eq!(byte_size(" 512KB "), Some(512 << 10));
        assert_eq!(byte_size("1mb"), Some(1 << 20));
        assert_eq!(byte_size("2gb"), Some(2 << 30));
        for bad in [
            "",
            "mb",
            "1 mb",
            "1tb",
            "-1",
            "1.5mb",
            "99999999999999999999",
        ] {
            assert_eq!(byte_size(bad), None, "{bad:?}");
        }
        assert_eq!(byte_size("17179869184gb"), None, "overflow");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("250"), Some(250));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms(" 60s "), Some(60_000));
        assert_eq!(duration_ms("2m"), Some(120_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        for bad in ["", "s", "1 s", "1d", "1S", "-5s", "0.5s"] {
            assert_eq!(duration_ms(bad), None, "{bad:?}");
        }
        assert_eq!(duration_ms("18446744073709551615h"), None, "overflow");
    }
}
