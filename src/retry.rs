//! Retries (cli.md "Retries"): which failures are tried again, and after how long.
//!
//! A retry happens only before any response byte reached the caller (the component reads error
//! bodies whole and hands a stream over only on 2xx, so every decision here is taken before
//! that), and only on: connection refused or reset before a response, a connect timeout (a
//! timeout while the execution's deadline has time left), and HTTP 408, 429, 500, 502, 503,
//! 504. The delay honours the upstream's `retry-after-ms`, then `Retry-After` (seconds or an
//! HTTP date), when it is at most `maxDelay`; a longer one is not waited for and the failure is
//! returned as is. Without either header the delay is exponential from `initialDelay`, capped
//! by `maxDelay`, with full jitter (a uniform draw between 0 and that cap, as AWS's
//! "Exponential Backoff And Jitter" recommends, so that clients that failed together do not
//! retry together). Every attempt shares the execution's one deadline (`responseTimeout`): a
//! delay that would outlast it is not waited for either.

use crate::failure::{Failure, FailureKind};

/// The `retry` settings key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at most, the first included (1: no retry, Kibana's behaviour and the default).
    pub max_attempts: u32,
    /// The first backoff cap, in milliseconds.
    pub initial_delay_ms: u64,
    /// The longest delay waited, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_delay_ms: 250,
            max_delay_ms: 20_000,
        }
    }
}

/// The statuses that are tried again.
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a failure without a response is tried again; `time_left_ms` is what remains of the
/// execution's deadline (a timeout with time left was a connect timeout).
pub(crate) fn retryable_failure(failure: &Failure, time_left_ms: u64) -> bool {
    match &failure.kind {
        FailureKind::Transport { code } => before_a_response(code),
        FailureKind::Timeout => time_left_ms > 0,
        _ => false,
    }
}

/// Whether a failed execution is worth trying on another connector (cli.md "Routes"): a
/// retryable status, a connection refused or reset before a response, or a connector whose
/// URL has no counterpart for the API asked for (`not-mapped`: nothing was sent, and another
/// connector of the route may have one). A timeout is not: it spent the execution's deadline.
pub fn worth_another_connector(failure: &Failure) -> bool {
    match &failure.kind {
        FailureKind::Http { status } => retryable_status(*status),
        FailureKind::Transport { code } => before_a_response(code),
        FailureKind::NotMapped => true,
        _ => false,
    }
}

/// Whether a transport failure's code says the connection was refused or reset before any
/// response.
fn before_a_response(code: &str) -> bool {
    code == "ECONNREFUSED" || code == "ECONNRESET"
}

/// What the upstream said about when to come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hint {
    /// From `retry-after-ms`, else `Retry-After`, in milliseconds.
    pub(crate) after_ms: Option<u64>,
}

impl Hint {
    /// The hint of a response's headers; `now_unix_secs` resolves an HTTP-date `Retry-After`.
    pub(crate) fn from_headers(headers: &[(String, String)], now_unix_secs: u64) -> Hint {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        let from_ms = header("retry-after-ms").and_then(|v| {
            let ms: f64 = v.parse().ok()?;
            (ms.is_finite() && ms >= 0.0).then(|| ms.ceil() as u64)
        });
        let from_retry_after = || {
            let value = header("retry-after")?;
            if let Ok(seconds) = value.parse::<u64>() {
                return Some(seconds.saturating_mul(1000));
            }
            let at = httpdate::parse_http_date(value).ok()?;
            let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
            Some(at.saturating_sub(now_unix_secs).saturating_mul(1000))
        };
        Hint {
            after_ms: from_ms.or_else(from_retry_after),
        }
    }
}

/// How long to wait before attempt `attempt + 1`, or `None` when there is no next attempt:
/// attempts are used up, the upstream asks for longer than `maxDelay`, or the wait would
/// outlast the deadline (`time_left_ms`). `random` draws the jitter.
pub(crate) fn next_delay_ms(
    policy: &RetryPolicy,
    attempt: u32,
    hint: Hint,
    time_left_ms: u64,
    random: impl FnOnce() -> u64,
) -> Option<u64> {
    if attempt >= policy.max_attempts {
        return None;
    }
    let delay = match hint.after_ms {
        Some(ms) if ms > policy.max_delay_ms => return None,
        Some(ms) => ms,
        None => {
            let doublings = attempt.saturating_sub(1).min(63);
            let cap = policy
                .initial_delay_ms
                .saturating_mul(1u64 << doublings)
                .min(policy.max_delay_ms);
            random() % cap.saturating_add(1)
        }
    };
    (delay < time_left_ms).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        initial_delay_ms: 100,
        max_delay_ms: 1_000,
    };

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn hints_prefer_retry_after_ms_then_retry_after() {
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        let hint = |pairs: &[(&str, &str)]| Hint::from_headers(&headers(pairs), now).after_ms;
        assert_eq!(
            hint(&[("Retry-After", "7"), ("retry-after-ms", "1500.2")]),
            Some(1501)
        );
        assert_eq!(hint(&[("retry-after", "7")]), Some(7_000));
        assert_eq!(
            hint(&[("retry-after", "Thu, 01 Jan 2026 00:00:03 GMT")]),
            Some(3_000)
        );
        // A date in the past means now.
        assert_eq!(
            hint(&[("retry-after", "Wed, 31 Dec 2025 23:00:00 GMT")]),
            Some(0)
        );
        assert_eq!(hint(&[("retry-after", "soon")]), None);
        assert_eq!(hint(&[("retry-after-ms", "-5")]), None);
        assert_eq!(hint(&[]), None);
    }

    #[test]
    fn delays_are_jittered_exponential_capped_and_bounded_by_the_deadline() {
        let none = Hint::default();
        // Full jitter: the draw modulo the cap plus one.
        assert_eq!(
            next_delay_ms(&POLICY, 1, none, 60_000, || 1_000_000),
            Some(1_000_000 % 101)
        );
        assert_eq!(
            next_delay_ms(&POLICY, 1, none, 60_000, || u64::MAX),
            Some(u64::MAX % 101)
        );
        assert_eq!(next_delay_ms(&POLICY, 2, none, 60_000, || 200), Some(200));
        assert_eq!(next_delay_ms(&POLICY, 3, none, 60_000, || 401), Some(0));
        for attempt in 1..4 {
            for draw in [0, 1, 99, 12_345, u64::MAX] {
                let d = next_delay_ms(&POLICY, attempt, none, 60_000, || draw).unwrap();
                let cap = (100u64 << (attempt - 1)).min(1_000);
                assert!(d <= cap, "attempt {attempt}: {d} > {cap}");
            }
        }
        // Attempts used up.
        assert_eq!(next_delay_ms(&POLICY, 4, none, 60_000, || 0), None);
        // The upstream's hint, unless longer than maxDelay.
        let hint = |ms| Hint { after_ms: Some(ms) };
        assert_eq!(
            next_delay_ms(&POLICY, 1, hint(700), 60_000, || 0),
            Some(700)
        );
        assert_eq!(next_delay_ms(&POLICY, 1, hint(1_001), 60_000, || 0), None);
        // Never past the deadline.
        assert_eq!(next_delay_ms(&POLICY, 1, hint(700), 700, || 0), None);
        assert_eq!(next_delay_ms(&POLICY, 1, hint(700), 701, || 0), Some(700));
        // The default policy never retries.
        assert_eq!(
            next_delay_ms(&RetryPolicy::default(), 1, none, 60_000, || 0),
            None
        );
    }

    #[test]
    fn only_listed_statuses_and_failures_before_a_response_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(status), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 409, 422, 501, 505] {
            assert!(!retryable_status(status), "{status}");
        }
        let failure = |kind| Failure {
            kind,
            upstream_status: None,
            service_message: String::new(),
            retry: true,
        };
        let transport = |code: &str| {
            failure(FailureKind::Transport {
                code: code.to_owned(),
            })
        };
        assert!(retryable_failure(&transport("ECONNREFUSED"), 1));
        assert!(retryable_failure(&transport("ECONNRESET"), 1));
        assert!(!retryable_failure(&transport("ENOTFOUND"), 1));
        assert!(!retryable_failure(
            &transport("UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
            1
        ));
        assert!(retryable_failure(&failure(FailureKind::Timeout), 1));
        assert!(!retryable_failure(&failure(FailureKind::Timeout), 0));
        assert!(!retryable_failure(&failure(FailureKind::Canceled), 1));
        assert!(!retryable_failure(&failure(FailureKind::Denied), 1));
        assert!(worth_another_connector(&failure(FailureKind::Http {
            status: 503
        })));
        assert!(worth_another_connector(&transport("ECONNRESET")));
        assert!(!worth_another_connector(&failure(FailureKind::Http {
            status: 401
        })));
        assert!(!worth_another_connector(&failure(FailureKind::Timeout)));
        // Nothing was sent; another connector of the route may map the URL.
        assert!(worth_another_connector(&failure(FailureKind::NotMapped)));
        assert!(!retryable_failure(&failure(FailureKind::NotMapped), 1));
    }
}
