//! A sliding-window event rate that nodes can add up.
//!
//! HAProxy's `freq_ctr` keeps two periods and weighs the previous one by
//! how much of it is still inside the window; its periods start at an
//! entry's first event, which makes a fresh entry exact but cannot be
//! merged across nodes, and it undercounts a burst that straddles a period
//! boundary late in the window. Here the period is cut into [`SLOTS`]
//! slots aligned on the wall clock (the same slot means the same time on
//! every node, so counts from several nodes add up): the rate is the events
//! of the last `SLOTS` slots (the current one included), plus the oldest
//! slot's events weighted by the part of it still inside the window,
//! rounded up. Every event of the last `period − period/SLOTS` is counted
//! exactly; the error is confined to one slot at the window's far edge,
//! and is never an undercount.
//!
//! Amounts may be negative: a token reservation is settled by adding the
//! difference between the tokens used and those reserved to the slot the
//! reservation went to. A rate reads as zero rather than below.

/// Slots per period.
pub const SLOTS: usize = 10;

/// Events per slot for the last `SLOTS + 1` slots, newest at `idx`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Slot index (`unix_ms / slot_ms`) of the newest slot.
    idx: u64,
    counts: [i32; SLOTS + 1],
}

/// Milliseconds per slot of a period.
pub fn slot_ms(period_ms: u64) -> u64 {
    (period_ms / SLOTS as u64).max(1)
}

impl Rate {
    /// Counts `n` events at `now_ms`; returns the slot they went to (the
    /// delta's period).
    pub fn add_at(&mut self, now_ms: u64, period_ms: u64, n: i64) -> u64 {
        let slot = now_ms / slot_ms(period_ms);
        self.add(slot, n);
        slot
    }

    /// Counts `n` events in slot `slot`. A slot too old for the window is
    /// dropped. The result depends only on which events were added, never
    /// on their order.
    pub fn add(&mut self, slot: u64, n: i64) {
        let keep = (SLOTS + 1) as u64;
        if slot > self.idx {
            let gap = slot - self.idx;
            if gap >= keep {
                self.counts = [0; SLOTS + 1];
            } else {
                for s in self.idx + 1..=slot {
                    self.counts[(s % keep) as usize] = 0;
                }
            }
            self.idx = slot;
        } else if self.idx - slot >= keep {
            return;
        }
        let c = &mut self.counts[(slot % keep) as usize];
        let n = i32::try_from(n).unwrap_or(if n < 0 { i32::MIN } else { i32::MAX });
        *c = c.saturating_add(n);
    }

    /// The rate at `now_ms` over a window of `period_ms`.
    pub fn read(&self, now_ms: u64, period_ms: u64) -> u64 {
        let slot_ms = slot_ms(period_ms);
        let now = now_ms / slot_ms;
        let keep = (SLOTS + 1) as u64;
        // A clock behind the newest slot reads as of that slot.
        let now = now.max(self.idx);
        let count = |s: u64| -> i64 {
            if s <= self.idx && self.idx - s < keep {
                i64::from(self.counts[(s % keep) as usize])
            } else {
                0
            }
        };
        let full: i64 = (0..SLOTS as u64)
            .filter_map(|back| now.checked_sub(back))
            .map(count)
            .sum();
        let Some(edge) = now.checked_sub(SLOTS as u64) else {
            return full.max(0) as u64;
        };
        let into = if now_ms / slot_ms < now {
            0
        } else {
            now_ms % slot_ms
        };
        // The edge slot's part still inside the window, rounded away from
        // zero (up for events, so a limit never undercounts).
        let part = count(edge) * (slot_ms - into) as i64;
        let slot_ms = slot_ms as i64;
        let edge_part = if part >= 0 {
            (part + slot_ms - 1) / slot_ms
        } else {
            (part - slot_ms + 1) / slot_ms
        };
        (full + edge_part).max(0) as u64
    }

    /// How long from `now_ms` until the rate, with no new event, is at
    /// most `limit` (0 when it already is). The rate only falls while no
    /// event comes, so a binary search over one period and a slot finds it.
    pub fn ms_until_at_most(&self, now_ms: u64, period_ms: u64, limit: u64) -> u64 {
        if self.read(now_ms, period_ms) <= limit {
            return 0;
        }
        let (mut lo, mut hi) = (0u64, period_ms + 2 * slot_ms(period_ms));
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if self.read(now_ms + mid, period_ms) <= limit {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
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
    const S: u64 = P / SLOTS as u64;

    #[test]
    fn within_a_period_the_rate_is_the_count_whatever_the_phase() {
        // 101 events 30 ms apart (3 s) from any phase of the clock: all of
        // them are within the window, and all are counted.
        for phase in [0, 1, 999, 5_000, 9_990, 9_999] {
            let mut r = Rate::default();
            let t0 = 77 * P + phase;
            for i in 0..101u64 {
                r.add_at(t0 + 30 * i, P, 1);
                assert_eq!(r.read(t0 + 30 * i, P), i + 1, "phase {phase}");
            }
        }
    }

    #[test]
    fn events_leave_the_window_slot_by_slot() {
        let mut r = Rate::default();
        let t0 = 50 * P; // a slot boundary
        r.add_at(t0, P, 100);
        assert_eq!(r.read(t0 + P - 1, P), 100, "still inside the window");
        // The slot is now at the far edge: weighted by what is left of it.
        assert_eq!(r.read(t0 + P, P), 100);
        assert_eq!(r.read(t0 + P + S / 4, P), 75);
        assert_eq!(r.read(t0 + P + S - 1, P), 1);
        assert_eq!(r.read(t0 + P + S, P), 0);
        assert!(r.is_idle(t0 + P + S, P));
    }

    #[test]
    fn a_burst_straddling_period_boundaries_is_counted_whole() {
        // 60 events late in one period, 41 early in the next, 3 s apart
        // at most: a limit of 100 must see 101.
        let mut r = Rate::default();
        r.add_at(8 * P - 2_000, P, 60);
        r.add_at(8 * P + 500, P, 41);
        assert_eq!(r.read(8 * P + 1_000, P), 101);
    }

    #[test]
    fn order_of_additions_does_not_matter() {
        let events = [
            (30u64, 5i64),
            (34, 7),
            (18, 9),
            (34, 1),
            (41, 2),
            (31, 4),
            (25, 3),
        ];
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
        // Slots 18, 25 and 30 are too old for a window ending at slot 41.
        assert_eq!(sorted.read(41 * S, P), 7 + 1 + 2 + 4);
    }

    #[test]
    fn a_settlement_takes_back_from_the_slot_it_names() {
        let mut r = Rate::default();
        let t0 = 30 * P;
        // 100 reserved at t0, 40 at t0 + 2 s; the first settles at 30.
        let slot = r.add_at(t0, P, 100);
        r.add_at(t0 + 2_000, P, 40);
        r.add(slot, 30 - 100);
        assert_eq!(r.read(t0 + 2_000, P), 70);
        // The settled reservation leaves the window with its slot.
        assert_eq!(r.read(t0 + P + S, P), 40);
        // Never below zero, whatever order the amounts arrive in.
        let mut early = Rate::default();
        early.add(slot, -50);
        assert_eq!(early.read(t0, P), 0);
        early.add(slot, 80);
        assert_eq!(early.read(t0, P), 30);
    }

    #[test]
    fn time_until_a_rate_falls_to_a_limit() {
        let mut r = Rate::default();
        let t0 = 40 * P + 2_000;
        r.add_at(t0, P, 6);
        assert_eq!(r.ms_until_at_most(t0, P, 6), 0);
        // 6 → 5 when the slot is at the far edge and a sixth of it has
        // left the window.
        let wait = r.ms_until_at_most(t0, P, 5);
        assert_eq!(r.read(t0 + wait, P), 5);
        assert_eq!(r.read(t0 + wait - 1, P), 6);
        assert_eq!(wait, P + S / 6 + 1);
        assert_eq!(r.ms_until_at_most(t0, P, 0), P + S);
    }
}
