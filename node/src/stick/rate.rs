//! A sliding-window event rate that nodes can add up (HAProxy's
//! `freq_ctr`, aligned on absolute period boundaries).
//!
//! HAProxy keeps the events of the current period and of the previous one
//! and reads the rate as `current + previous × (part of the previous period
//! still inside the sliding window)`. We do the same, with two changes for
//! the cluster: periods start at multiples of the period on the wall clock
//! (so the same period means the same thing on every node, and counts from
//! several nodes add up), and the previous period's share is rounded up, so
//! that rounding never lets an event inside the window go uncounted (a
//! limit of N denies the N+1th event of any window, even one straddling a
//! period boundary; the cost is at most one phantom event).

/// Events in the current period and the one before, by period index
/// (`unix_ms / period_ms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    idx: u64,
    cur: u64,
    prev: u64,
}

impl Rate {
    /// Counts `n` events in period `idx`. Events of a period older than the
    /// previous one are dropped: the window no longer sees them. The result
    /// depends only on which events were added, never on their order.
    pub fn add(&mut self, idx: u64, n: u64) {
        if idx > self.idx {
            self.prev = if idx == self.idx + 1 { self.cur } else { 0 };
            self.cur = n;
            self.idx = idx;
        } else if idx == self.idx {
            self.cur += n;
        } else if idx + 1 == self.idx {
            self.prev += n;
        }
    }

    /// The rate at `now_ms` over a window of `period_ms`.
    pub fn read(&self, now_ms: u64, period_ms: u64) -> u64 {
        let period = period_ms.max(1);
        let idx = now_ms / period;
        let (cur, prev) = if idx <= self.idx {
            (self.cur, self.prev)
        } else if idx == self.idx + 1 {
            (0, self.cur)
        } else {
            return 0;
        };
        // The part of the previous period still inside the window.
        let remain = if idx < self.idx {
            period
        } else {
            period - now_ms % period
        };
        cur + (prev * remain).div_ceil(period)
    }

    /// The period index and counts, for deltas and `show table`.
    pub fn parts(&self) -> (u64, u64, u64) {
        (self.idx, self.cur, self.prev)
    }

    /// Nothing is counted in the window of `now_ms` any more.
    pub fn is_idle(&self, now_ms: u64, period_ms: u64) -> bool {
        self.read(now_ms, period_ms) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 10_000;

    #[test]
    fn within_one_period_the_rate_is_the_count() {
        let mut r = Rate::default();
        let t0 = 5 * P + 10;
        for i in 1..=101 {
            r.add(t0 / P, 1);
            assert_eq!(r.read(t0 + i, P), i);
        }
    }

    #[test]
    fn the_previous_period_fades_out_linearly() {
        let mut r = Rate::default();
        r.add(7, 100);
        // Exactly at the next boundary the whole previous period counts…
        assert_eq!(r.read(8 * P, P), 100);
        // …a quarter in, three quarters of it…
        assert_eq!(r.read(8 * P + P / 4, P), 75);
        // …one millisecond before its end, one event (rounded up)…
        assert_eq!(r.read(9 * P - 1, P), 1);
        // …and then nothing.
        assert_eq!(r.read(9 * P, P), 0);
        assert!(r.is_idle(9 * P, P));
        r.add(8, 10);
        assert_eq!(r.read(8 * P + P / 2, P), 10 + 50);
    }

    #[test]
    fn a_window_straddling_a_boundary_misses_no_event() {
        // 50 events just before a boundary and 51 just after: all 101 are
        // within the last second, so a limit of 100 must see 101.
        let mut r = Rate::default();
        r.add(3, 50);
        r.add(4, 51);
        assert_eq!(r.read(4 * P + 5, P), 101);
    }

    #[test]
    fn order_of_additions_does_not_matter() {
        let events = [(3u64, 5u64), (4, 7), (2, 9), (4, 1), (5, 2), (3, 4)];
        let mut sorted = Rate::default();
        let mut reversed = Rate::default();
        let mut by_order = events.to_vec();
        by_order.sort();
        for (i, n) in by_order {
            sorted.add(i, n);
        }
        for &(i, n) in events.iter().rev() {
            reversed.add(i, n);
        }
        assert_eq!(sorted, reversed);
        assert_eq!(sorted.parts(), (5, 2, 8));
    }

    #[test]
    fn a_clock_behind_the_latest_period_reads_the_latest_counts() {
        let mut r = Rate::default();
        r.add(10, 4);
        r.add(11, 6);
        assert_eq!(r.read(10 * P + 1, P), 6 + 4);
    }
}
