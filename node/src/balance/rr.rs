//! Round-robin: HAProxy's dynamic fwrr ([`Fwrr`], `balance roundrobin`),
//! HAProxy's static server map ([`StaticRr`], `static-rr`, also the map of
//! map-based hashing), and smooth WRR ([`Swrr`], the fallback of
//! consistent hashing when a `hdr(name)` key is missing).

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

/// HAProxy's scale of effective weights (`BE_WEIGHT_SCALE`).
const SCALE: u64 = 16;
/// `SRV_EWGHT_MAX`: the largest effective weight.
const EWGHT_MAX: u64 = 256 * SCALE;
/// `SRV_UWGHT_RANGE`.
const UWGHT_RANGE: u64 = 256;

/// HAProxy's dynamic weighted round-robin (`lb_fwrr.c`), so that
/// `balance roundrobin` serves the very order HAProxy serves.
///
/// Servers sit in three queues ordered by key, earlier insertions first
/// among equal keys (HAProxy's ebtrees): `curr`, keyed by the next
/// position at which each server is due; `init` and `next`, keyed by
/// weight (heaviest first), holding the servers that enter the current
/// window and the one after. A pick takes the first server of `curr` if
/// it is due at the current position, else the heaviest of `init`; when
/// both are empty the window ends and `next` becomes `init`. A server
/// taken advances by `total / weight` positions (the remainder carried).
///
/// Difference from HAProxy: HAProxy adjusts positions incrementally when a
/// server goes down or up or changes weight; here any change of the usable
/// servers' weights (read at every pick) restarts the schedule as if the
/// backend had just started with those weights. Proportions hold either
/// way; only the order right after a change can differ from HAProxy's.
///
/// All queues are preallocated to the number of servers, so a pick
/// allocates nothing; it holds a mutex for O(servers) work.
#[derive(Debug)]
pub(super) struct Fwrr {
    st: Mutex<FwrrState>,
}

#[derive(Debug)]
struct FwrrState {
    /// Effective weight (`weight × 16`) each server had when the schedule
    /// (re)started; 0 = not scheduled.
    ew: Box<[u64]>,
    npos: Box<[u64]>,
    rweight: Box<[u64]>,
    /// `trees[0]` is `curr`; `init` and `next` swap between 1 and 2.
    trees: [Vec<Entry>; 3],
    init: usize,
    next: usize,
    seq: u64,
    curr_weight: u64,
    next_weight: u64,
    curr_pos: u64,
    /// Servers taken out during one pick because they may not be chosen
    /// now (excluded, full); put back before the pick returns.
    skipped: Vec<u32>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    seq: u64,
    server: u32,
}

const CURR: usize = 0;

impl Fwrr {
    pub(super) fn new(n: usize) -> Fwrr {
        let n = n.min(u32::MAX as usize);
        Fwrr {
            st: Mutex::new(FwrrState {
                ew: vec![0; n].into_boxed_slice(),
                npos: vec![0; n].into_boxed_slice(),
                rweight: vec![0; n].into_boxed_slice(),
                trees: [
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                ],
                init: 1,
                next: 2,
                seq: 0,
                curr_weight: 0,
                next_weight: 0,
                curr_pos: 0,
                skipped: Vec::with_capacity(n),
            }),
        }
    }

    /// `usable(i)`: server `i`'s runtime weight if it is up and ready (0
    /// otherwise); `avail(i)`: whether it may take this request (not
    /// excluded, a free slot). Servers usable but not available are passed
    /// over for this pick and keep their place, as HAProxy does for
    /// saturated servers.
    pub(super) fn pick(
        &self,
        usable: impl Fn(usize) -> u32,
        avail: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let n = st.ew.len();
        let changed = (0..n).any(|i| st.ew[i] != eweight(usable(i)));
        if changed {
            st.restart(|i| eweight(usable(i)));
        }
        st.pick(avail)
    }
}

fn eweight(w: u32) -> u64 {
    u64::from(w.min(256)) * SCALE
}

impl FwrrState {
    /// HAProxy's `fwrr_init_server_groups`: every weighted server in
    /// `init`, heaviest first, the window empty.
    fn restart(&mut self, ew: impl Fn(usize) -> u64) {
        for t in &mut self.trees {
            t.clear();
        }
        self.init = 1;
        self.next = 2;
        self.seq = 0;
        self.curr_weight = 0;
        self.curr_pos = 0;
        self.next_weight = 0;
        for i in 0..self.ew.len() {
            let w = ew(i);
            self.ew[i] = w;
            self.npos[i] = 0;
            self.rweight[i] = 0;
            if w > 0 {
                self.next_weight += w;
                self.insert(self.init, EWGHT_MAX.saturating_sub(w), i);
            }
        }
    }

    /// Inserts after every entry with the same key (ebtree duplicates keep
    /// insertion order). Never reallocates: each server is in at most one
    /// queue, and each queue has room for all servers.
    fn insert(&mut self, tree: usize, key: u64, server: usize) {
        self.seq += 1;
        let e = Entry {
            key,
            seq: self.seq,
            server: server as u32,
        };
        let t = &mut self.trees[tree];
        let at = t.partition_point(|x| (x.key, x.seq) <= (e.key, e.seq));
        t.insert(at, e);
    }

    fn first(&self, tree: usize) -> Option<usize> {
        self.trees[tree].first().map(|e| e.server as usize)
    }

    fn remove(&mut self, server: usize) {
        for t in &mut self.trees {
            if let Some(at) = t.iter().position(|e| e.server as usize == server) {
                t.remove(at);
                return;
            }
        }
    }

    /// `fwrr_get_server_from_group`.
    fn candidate(&mut self) -> Option<usize> {
        let s1 = self.first(CURR);
        if let Some(s) = s1 {
            if self.npos[s] <= self.curr_pos {
                return Some(s);
            }
        }
        if let Some(s) = self.first(self.init) {
            self.npos[s] = 0;
            self.rweight[s] = 0;
            return Some(s);
        }
        s1
    }

    /// `fwrr_update_position`.
    fn update_position(&mut self, s: usize) {
        let ew = self.ew[s];
        if ew == 0 {
            return;
        }
        if self.npos[s] == 0 {
            self.npos[s] = self.curr_pos;
        }
        self.npos[s] += self.next_weight / ew;
        self.rweight[s] += self.next_weight % ew;
        if self.rweight[s] >= ew {
            self.rweight[s] -= ew;
            self.npos[s] += 1;
        }
    }

    /// `fwrr_queue_srv`: back into `curr` at its next position, or into
    /// `next` when that falls beyond this window.
    fn queue(&mut self, s: usize) {
        let ew = self.ew[s];
        let np = self.npos[s];
        if np >= 2 * self.curr_weight || np >= self.curr_weight + self.next_weight {
            self.npos[s] = np.saturating_sub(self.curr_weight);
            self.insert(self.next, EWGHT_MAX.saturating_sub(ew), s);
        } else {
            let key = UWGHT_RANGE * np + (EWGHT_MAX + self.rweight[s]).saturating_sub(ew) / SCALE;
            self.insert(CURR, key, s);
        }
    }

    /// `fwrr_get_next_server`.
    fn pick(&mut self, avail: impl Fn(usize) -> bool) -> Option<usize> {
        if self.next_weight == 0 {
            return None;
        }
        if self.curr_weight == 0 {
            self.curr_weight = self.next_weight;
            self.curr_pos = self.curr_weight;
        }
        self.skipped.clear();
        let mut switched = false;
        let mut chosen = None;
        // Each server is taken out at most once per pick, so this ends
        // after at most `servers` rounds and one switch.
        loop {
            let s = loop {
                if let Some(s) = self.candidate() {
                    break Some(s);
                }
                if switched {
                    break None;
                }
                switched = true;
                // `fwrr_switch_trees`.
                std::mem::swap(&mut self.init, &mut self.next);
                self.curr_weight = self.next_weight;
                self.curr_pos = self.curr_weight;
            };
            let Some(s) = s else { break };
            self.update_position(s);
            self.remove(s);
            self.curr_pos += 1;
            if avail(s) {
                chosen = Some(s);
                self.queue(s);
                break;
            }
            self.skipped.push(s as u32);
        }
        // Put the passed-over servers back: as if consumed, or by weight
        // into `init` if the window switched meanwhile (their place in it
        // is lost).
        for k in 0..self.skipped.len() {
            let s = self.skipped[k] as usize;
            if switched {
                let key = EWGHT_MAX.saturating_sub(self.ew[s]);
                self.insert(self.init, key, s);
            } else {
                self.queue(s);
            }
        }
        chosen
    }
}
