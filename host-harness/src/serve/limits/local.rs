//! Client limits counted in this process: the default backend, and the Redis backend's
//! fallback (which counts here all along, see `serve::limits`).

use super::window::{Window, whole_seconds};
use super::{ClientLimits, Counted, Refused};
use openai_connector::protocol::RateLimit;
use std::sync::MutexGuard;
use std::time::Instant;

/// The clock of the counters kept in this process (each token's are in its [`Counted`]).
pub(super) struct Local {
    epoch: Instant,
}

/// One token's counts in this process.
#[derive(Default)]
pub(super) struct Counters {
    requests: Window,
    tokens: Window,
    in_flight: u64,
}

impl Local {
    pub(super) fn new() -> Local {
        Local {
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn counters(counted: &Counted) -> MutexGuard<'_, Counters> {
        // Counters hold no invariant worth poisoning.
        counted.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks every limit of a token and, when all have room, counts the request.
    pub(super) fn try_acquire(
        &self,
        counted: &Counted,
        limits: &ClientLimits,
    ) -> Result<(), Refused> {
        let now_ms = self.now_ms();
        let mut c = Self::counters(counted);
        let waits = [
            (
                RateLimit::RequestsPerMinute,
                limits
                    .requests_per_minute
                    .and_then(|l| c.requests.wait_ms(now_ms, l)),
            ),
            (
                RateLimit::TokensPerMinute,
                limits
                    .tokens_per_minute
                    .and_then(|l| c.tokens.wait_ms(now_ms, l)),
            ),
            (
                RateLimit::ConcurrentRequests,
                // Nobody knows when an execution ends: a second is a fair first guess.
                limits
                    .concurrent_requests
                    .filter(|l| c.in_flight >= *l)
                    .map(|_| 1000),
            ),
        ];
        if let Some(refused) = longest_wait(waits) {
            return Err(refused);
        }
        c.requests.add(now_ms / 1000, 1);
        c.in_flight += 1;
        Ok(())
    }

    /// Counts a request admitted by the shared state, so that this process's own count is at
    /// hand should the shared state go away.
    pub(super) fn count_admitted(&self, counted: &Counted) {
        let now = self.now_ms() / 1000;
        let mut c = Self::counters(counted);
        c.requests.add(now, 1);
        c.in_flight += 1;
    }

    /// An execution of a token ended.
    pub(super) fn release(&self, counted: &Counted) {
        let mut c = Self::counters(counted);
        c.in_flight = c.in_flight.saturating_sub(1);
    }

    /// Adds the tokens of a finished execution.
    pub(super) fn add_tokens(&self, counted: &Counted, tokens: u64) {
        let now = self.now_ms() / 1000;
        Self::counters(counted).tokens.add(now, tokens);
    }
}

/// The refusal with the longest wait among the limits that have no room (a client must wait
/// for all of them), if any.
fn longest_wait(waits: [(RateLimit, Option<u64>); 3]) -> Option<Refused> {
    waits
        .into_iter()
        .filter_map(|(limit, wait)| wait.map(|ms| (limit, ms)))
        .max_by_key(|(_, ms)| *ms)
        .map(|(limit, ms)| Refused {
            limit,
            retry_after_secs: whole_seconds(ms),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::auth::ClientId;

    #[test]
    fn requests_per_minute_and_the_longest_wait() {
        let limits = ClientLimits {
            requests_per_minute: Some(2),
            ..ClientLimits::default()
        };
        let entry = super::super::Entry::new(ClientId::for_test(1), limits).unwrap();
        let counted = &entry.counted;
        let local = Local::new();
        assert!(local.try_acquire(counted, &limits).is_ok());
        local.release(counted);
        assert!(local.try_acquire(counted, &limits).is_ok());
        local.release(counted);
        let refused = local.try_acquire(counted, &limits).unwrap_err();
        assert_eq!(refused.limit, RateLimit::RequestsPerMinute);
        assert!((60..=61).contains(&refused.retry_after_secs));
        assert_eq!(
            longest_wait([
                (RateLimit::RequestsPerMinute, Some(2_500)),
                (RateLimit::TokensPerMinute, Some(30_001)),
                (RateLimit::ConcurrentRequests, Some(1_000)),
            ]),
            Some(Refused {
                limit: RateLimit::TokensPerMinute,
                retry_after_secs: 31
            })
        );
        assert_eq!(
            longest_wait([
                (RateLimit::RequestsPerMinute, None),
                (RateLimit::TokensPerMinute, None),
                (RateLimit::ConcurrentRequests, None),
            ]),
            None
        );
    }
}
