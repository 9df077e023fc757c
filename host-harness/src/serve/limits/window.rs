//! The sliding minute of a per-minute limit: 61 one-second buckets (the module docs of
//! `serve::limits` say why 61). `redis.lua` is the same algorithm, in Redis.

/// Buckets in a window: the current second and the 60 before it.
pub(super) const BUCKETS: u64 = 61;

/// Counts per second over the last [`BUCKETS`] seconds.
#[derive(Clone, Debug)]
pub(super) struct Window {
    /// `(second, count)`, at `second % BUCKETS`; a bucket of an older second is stale.
    buckets: [(u64, u64); BUCKETS as usize],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: [(0, 0); BUCKETS as usize],
        }
    }
}

impl Window {
    /// The count of the buckets still in the window at second `now`.
    pub(super) fn total(&self, now: u64) -> u64 {
        self.live(now).map(|(_, n)| n).sum()
    }

    /// Adds `n` to the bucket of second `now`.
    pub(super) fn add(&mut self, now: u64, n: u64) {
        let slot = &mut self.buckets[(now % BUCKETS) as usize];
        if slot.0 != now {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(n);
    }

    /// `None` when one more (a request, or any token use) fits under `limit` at `now_ms`;
    /// otherwise how many milliseconds until enough buckets have left the window for it to.
    pub(super) fn wait_ms(&self, now_ms: u64, limit: u64) -> Option<u64> {
        let now = now_ms / 1000;
        let mut total = self.total(now);
        if total < limit {
            return None;
        }
        let mut live: Vec<(u64, u64)> = self.live(now).collect();
        live.sort_unstable();
        for (second, n) in live {
            total -= n;
            if total < limit {
                // The bucket of `second` leaves the window when second + BUCKETS begins.
                return Some(((second + BUCKETS) * 1000).saturating_sub(now_ms).max(1));
            }
        }
        // Unreachable with `limit >= 1`: an empty window has room.
        Some(BUCKETS * 1000)
    }

    fn live(&self, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let oldest = now.saturating_sub(BUCKETS - 1);
        self.buckets
            .iter()
            .copied()
            .filter(move |&(second, n)| n > 0 && second >= oldest && second <= now)
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub(super) fn whole_seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_sliding_minute_and_never_less() {
        let mut w = Window::default();
        w.add(100, 3);
        w.add(130, 2);
        assert_eq!(w.total(130), 5);
        // Second 100 is counted until second 160 ends: a full minute always passes first.
        assert_eq!(w.total(160), 5);
        assert_eq!(w.total(161), 2);
        assert_eq!(w.total(190), 2);
        assert_eq!(w.total(191), 0);
        // Second 161 takes the slot of second 100 (161 % 61 == 100 % 61) and starts from zero.
        w.add(161, 1);
        assert_eq!(w.total(161), 3);
    }

    #[test]
    fn waits_until_enough_has_left_the_window() {
        let mut w = Window::default();
        assert_eq!(w.wait_ms(5_000, 1), None);
        w.add(5, 2);
        w.add(20, 1);
        // Limit 3 used up at 20.5 s: room when the second-5 bucket leaves, at 66 s.
        assert_eq!(w.wait_ms(20_500, 3), Some(45_500));
        assert_eq!(w.wait_ms(20_500, 4), None);
        // Limit 1: both buckets must leave; the second-20 one leaves at 81 s.
        assert_eq!(w.wait_ms(20_500, 1), Some(60_500));
        assert_eq!(whole_seconds(60_500), 61);
        assert_eq!(whole_seconds(0), 1);
        assert_eq!(whole_seconds(1_000), 1);
        assert_eq!(whole_seconds(1_001), 2);
    }
}
