//! The two round-robin flavours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smooth weighted round-robin (nginx's algorithm).
///
/// Each pick adds every eligible server's weight to its score, takes the
/// highest score and subtracts the total from it. Over any run of
/// `Σ weights` picks each server is chosen exactly `weight` times, and the
/// choices are interleaved (weights 5:1:1 give `a a b a c a a`, not
/// `a a a a a b c`). Weights are read at every pick, so a runtime change
/// takes effect on the next request.
///
/// The scores need a read-modify-write of every server at once, hence a
/// mutex; it is held for one O(servers) pass of atomic loads and integer
/// adds, never across anything that blocks.
#[derive(Debug)]
pub(super) struct Swrr {
    current: Mutex<Box<[i64]>>,
}

impl Swrr {
    pub(super) fn new(n: usize) -> Swrr {
        Swrr {
            current: Mutex::new(vec![0; n].into_boxed_slice()),
        }
    }

    /// `weight(i)` is 0 when server `i` may not be chosen now. Ineligible
    /// servers keep their score untouched (as nginx does), so a server
    /// skipped for one request (excluded by a retry, momentarily full)
    /// does not lose its turn.
    pub(super) fn pick(&self, weight: impl Fn(usize) -> u32) -> Option<usize> {
        // A panic elsewhere while holding the lock cannot leave the scores
        // in a state worse than "slightly unfair", so poisoning is ignored.
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, c) in cur.iter_mut().enumerate() {
            let w = i64::from(weight(i));
            if w == 0 {
                continue;
            }
            *c = c.saturating_add(w);
            total += w;
            if best.is_none_or(|(_, b)| *c > b) {
                best = Some((i, *c));
            }
        }
        let (i, _) = best?;
        if let Some(c) = cur.get_mut(i) {
            *c = c.saturating_sub(total);
        }
        Some(i)
    }
}

/// Weighted round-robin over the configured weights: a precomputed,
/// interleaved schedule walked by one atomic counter, so a pick is a single
/// `fetch_add` when the scheduled server is available.
#[derive(Debug)]
pub(super) struct StaticRr {
    /// Server indices; server `i` appears `weight_i / gcd` times.
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl StaticRr {
    pub(super) fn new(weights: &[u32]) -> StaticRr {
        // Configured weight 0 is scheduled as 1: the server is unusable while
        // its runtime weight is 0, and HAProxy lets `set weight` bring it
        // back (changes to and from 0 are the ones static-rr honours).
        let ws: Vec<u64> = weights
            .iter()
            .take(u32::MAX as usize)
            .map(|&w| u64::from(w.clamp(1, 256)))
            .collect();
        let g = ws.iter().fold(0, |g, &w| gcd(g, w)).max(1);
        let ws: Vec<u64> = ws.iter().map(|&w| w / g).collect();
        // The order HAProxy serves: its server map.
        let schedule = server_map(&ws);
        StaticRr {
            schedule: schedule.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// `avail(i)` tells whether server `i` may be chosen now.
    pub(super) fn pick(
        &self,
        avail: impl Fn(usize) -> bool,
        any_avail: impl Fn() -> bool,
    ) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..len {
            if k == super::WALK_CHECK && !any_avail() {
                return None;
            }
            let i = self.schedule[start.wrapping_add(k) % len] as usize;
            if avail(i) {
                // The slots walked over are consumed: otherwise the server
                // after an unavailable one would also get that one's turns,
                // and the remaining servers would drift from their ratio.
                if k > 0 {
                    self.next.fetch_add(k, Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }

    #[cfg(test)]
    pub(super) fn schedule(&self) -> &[u32] {
        &self.schedule
    }
}

/// HAProxy's server map (`lb_map.c`, `recalc_server_map`): server `i`
/// appears `weights[i]` times (servers of weight 0 not at all), interleaved
/// in the order HAProxy serves static-rr and indexes for map-based hashing.
/// Each slot, every weighted server's score grows by its weight; the first
/// server with the highest `(score + total) / total` takes the slot and pays
/// `total` back. Equal weights keep declaration order, and the first
/// weighted server always comes first.
///
/// Built once per configuration (static-rr) or per change of the usable
/// servers (map-based hashing), never per pick.
pub(super) fn server_map(weights: &[u64]) -> Vec<u32> {
    let n = weights.len().min(u32::MAX as usize);
    let ws: Vec<i64> = weights
        .iter()
        .take(n)
        .map(|&w| w.min(1 << 24) as i64)
        .collect();
    let tot: i64 = ws.iter().sum();
    let mut score = vec![0i64; ws.len()];
    let mut map = Vec::with_capacity(tot as usize);
    for _ in 0..tot {
        let mut best: Option<(usize, i64)> = None;
        for (i, &w) in ws.iter().enumerate() {
            if w == 0 {
                continue;
            }
            // A single slot: HAProxy takes the first server and stops
            // (the score division would be meaningless).
            if tot == 1 {
                best = Some((i, 0));
                break;
            }
            score[i] += w;
            let v = (score[i] + tot) / tot;
            if best.is_none_or(|(_, max)| v > max) {
                best = Some((i, v));
            }
        }
        if let Some((b, _)) = best {
            map.push(b as u32);
            score[b] -= tot;
        }
    }
    map
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
