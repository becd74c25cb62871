//! Server selection: one [`Balancer`] per backend.
//!
//! This module owns exactly one decision: *which server of a backend gets
//! this request*, following HAProxy's `balance` algorithms (see
//! [`Balance`]) and `hash-type` ([`HashType`]). It reads, but never
//! changes, each server's live state ([`ServerState`]: admin state, health,
//! runtime weight, in-flight and queued counts, maxconn); counting a chosen
//! request is the caller's job (`ServerState::begin`). It does not own
//! queueing, retries or health checks: a retry or redispatch passes the
//! servers already tried in `exclude`, and `None` from [`Balancer::pick`]
//! means "no server can take it now" (the caller queues when a usable
//! server is merely full, [`Balancer::any_full`], else answers 503; see
//! `upstream/queue.rs`).
//!
//! A [`Balancer`] is built with each configuration snapshot; the state it
//! keeps between picks (round-robin scores and counters) is only about
//! fairness, so losing it on reload is harmless. Picking is on the hot path
//! of every request: it allocates nothing, dispatches on an enum rather
//! than a trait object, and takes at most one short mutex (round-robin
//! state) or read lock (the map-based hash map); everything else is
//! atomics.
//!
//! A server is *eligible* for a pick when it is not in `exclude`, its admin
//! state is ready, it is up (health checks), it is not cooling down after a
//! 429, its effective weight (runtime weight ramped by slowstart) is above
//! 0, it has a free maxconn slot, and it is in the pick's tier: backup
//! servers only when no primary is usable, and then only the first usable
//! backup unless `option allbackups` (see [`Balancer::pick`]). The tier
//! costs one O(servers) pass of atomic loads per pick, and only in backends
//! that have backups. Hash algorithms place keys with a wider notion (ignoring
//! `exclude` and slots) so that a momentarily full server does not reshuffle
//! everyone else's keys; see [`Balancer::pick`].
//!
//! Compatibility with HAProxy 2.6 (checked per request against the real
//! binary by `tests/e2e/differential.rs`): `roundrobin` serves HAProxy's
//! fwrr order ([`rr::Fwrr`]); `static-rr` serves HAProxy's server map
//! order; `leastconn` makes the same choices; `hash-type map-based` (the
//! default) for `uri`, `hdr(name)` and `source` sends every key to the
//! server HAProxy sends it to — same key extraction, same hash (sdbm;
//! XORed address words for `source`), same weight-interleaved map over the
//! usable servers, and the same round-robin walk of that map when
//! `hdr(name)` finds no header.
//!
//! Differences: after a runtime change (a server down or up, `set weight`)
//! `roundrobin` restarts its schedule where HAProxy adjusts it
//! incrementally, so the order right after a change can differ;
//! `hash-type consistent` uses llmgw's own ring, not HAProxy's chash tree,
//! so keys land elsewhere than under HAProxy (see `hash.rs`), and without a
//! `hdr(name)` header it falls back to smooth WRR ([`rr::Swrr`]); a
//! map-based key whose server is full or excluded goes to a second-hash
//! choice for that request (HAProxy queues on the server or redispatches
//! round-robin); `balance uri` hashes the URI's path, which is HAProxy's
//! key for origin-form requests only (HAProxy includes scheme and
//! authority of absolute-form and h2 targets unless `path-only`); a
//! dual-stack listener's IPv4-mapped clients hash as their IPv4 address
//! (HAProxy: as the 16-byte IPv6 address).

mod hash;
mod rr;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::config::{Balance, HashType};
use crate::runtime::{AdminState, ServerState};
use hash::{Ring, ServerMap};
use rr::{Fwrr, StaticRr, Swrr};

/// After this many unavailable entries, a schedule or ring walk checks once
/// whether any server is eligible at all, so that "everything is down"
/// costs O(servers) instead of a walk over every slot or ring point.
const WALK_CHECK: usize = 64;

/// Upper bound on `random(n)` draws: each draw is O(servers), and more than
/// a handful gains nothing. Config validation should reject silly values;
/// this only keeps a bad one from costing unbounded time per request.
const MAX_DRAWS: u32 = 64;

/// What a hash-based algorithm may look at.
#[derive(Debug, Clone, Copy)]
pub struct PickCtx<'a> {
    /// The client's address (after PROXY protocol).
    pub src: IpAddr,
    /// The request path; a query string, if present, is ignored.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Chooses a server of one backend for each request.
pub struct Balancer {
    /// Config order; indices returned by [`Balancer::pick`] point here.
    servers: Box<[Arc<ServerState>]>,
    /// Which servers are `backup` (read once, at construction).
    backup: Box<[bool]>,
    has_backups: bool,
    /// `option allbackups`: all usable backups at once, not just the first.
    allbackups: bool,
    algo: Algo,
}

/// Which servers a pick may consider, decided once per pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    /// The backend has no backup servers.
    All,
    /// Some primary server is usable: primaries only.
    Primary,
    /// Every primary is unusable, `option allbackups`: every backup.
    Backups,
    /// Every primary is unusable: only this backup (the first usable one).
    Backup(usize),
}

/// The algorithm and whatever state it carries between picks.
enum Algo {
    RoundRobin(Fwrr),
    StaticRr(StaticRr),
    /// The counter rotates which of several equally loaded servers wins.
    LeastConn(AtomicUsize),
    First,
    Hash {
        key: HashKey,
        placement: Placement,
    },
    Random(u32),
}

enum HashKey {
    Source,
    Uri,
    Hdr(HeaderName),
}

enum Placement {
    /// `hash-type map-based`: HAProxy's hash into HAProxy's server map.
    /// The counter is the map's round-robin position, used when `hdr(name)`
    /// finds no header (HAProxy then walks the same map round-robin).
    MapBased(ServerMap, AtomicUsize),
    /// `hash-type consistent`; `hdr(name)` without the header falls back to
    /// smooth round-robin.
    Consistent(Ring, Swrr),
}

impl Balancer {
    /// `servers` in config order with their *configured* weights (used by
    /// static-rr and to build hash rings); runtime weights come from
    /// [`ServerState::weight`].
    pub fn new(
        balance: &Balance,
        hash_type: HashType,
        servers: Vec<(Arc<ServerState>, u32)>,
    ) -> Balancer {
        let (servers, weights): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
        let backup: Box<[bool]> = servers.iter().map(|s| s.is_backup()).collect();
        let has_backups = backup.iter().any(|b| *b);
        let n = servers.len();
        let hash = |key| Algo::Hash {
            key,
            placement: match hash_type {
                HashType::MapBased => {
                    Placement::MapBased(ServerMap::new(&weights), AtomicUsize::new(0))
                }
                HashType::Consistent => {
                    Placement::Consistent(Ring::build(&servers, &weights), Swrr::new(n))
                }
            },
        };
        let algo = match balance {
            Balance::RoundRobin => Algo::RoundRobin(Fwrr::new(n)),
            Balance::StaticRr => Algo::StaticRr(StaticRr::new(&weights)),
            Balance::LeastConn => Algo::LeastConn(AtomicUsize::new(0)),
            Balance::First => Algo::First,
            Balance::Source => hash(HashKey::Source),
            Balance::Uri => hash(HashKey::Uri),
            Balance::Hdr(name) => hash(HashKey::Hdr(name.clone())),
            Balance::Random(draws) => Algo::Random((*draws).clamp(1, MAX_DRAWS)),
        };
        Balancer {
            servers: servers.into_boxed_slice(),
            backup,
            has_backups,
            allbackups: false,
            algo,
        }
    }

    /// `option allbackups`: when every primary server is unusable, balance
    /// over all usable backups instead of sending everything to the first.
    pub fn with_allbackups(mut self, allbackups: bool) -> Balancer {
        self.allbackups = allbackups;
        self
    }

    /// Backup servers take traffic only when no primary is usable (UP,
    /// ready, weight above 0, not cooling down after a 429); then only the
    /// first usable backup in config order does, or all of them with
    /// `option allbackups`. Full servers (maxconn) still count as usable,
    /// as in HAProxy: a busy primary does not send traffic to backups.
    fn tier(&self) -> Tier {
        if !self.has_backups {
            return Tier::All;
        }
        let usable = |i: usize| self.servers.get(i).map_or(0, |s| usable_weight(s)) > 0;
        let is_backup = |i: usize| self.backup.get(i).copied().unwrap_or(false);
        if (0..self.servers.len()).any(|i| !is_backup(i) && usable(i)) {
            return Tier::Primary;
        }
        if self.allbackups {
            return Tier::Backups;
        }
        match (0..self.servers.len()).find(|&i| is_backup(i) && usable(i)) {
            Some(i) => Tier::Backup(i),
            None => Tier::Backups,
        }
    }

    /// Is server `i` in the tier?
    fn in_tier(&self, i: usize, tier: Tier) -> bool {
        match tier {
            Tier::All => true,
            Tier::Primary => !self.backup.get(i).copied().unwrap_or(false),
            Tier::Backups => self.backup.get(i).copied().unwrap_or(false),
            Tier::Backup(j) => i == j,
        }
    }

    /// Index (into config order) of the chosen server, skipping indices in
    /// `exclude` and servers that are not usable (admin not ready, down,
    /// weight 0) or have no free slot (maxconn reached). `None` = no server
    /// available.
    ///
    /// Hash algorithms send a key to the server the hash designates among
    /// the *usable* servers; only if that one is excluded or full does the
    /// key go elsewhere (the next server on the ring, or a second hash over
    /// the eligible servers for map-based), and only for this request.
    pub fn pick(&self, ctx: &PickCtx, exclude: &[usize]) -> Option<usize> {
        let tier = self.tier();
        let avail = |i: usize| self.avail_weight(i, exclude, tier);
        let any_avail = || (0..self.servers.len()).any(|i| avail(i) > 0);
        match &self.algo {
            Algo::RoundRobin(fwrr) => fwrr.pick(self.usable(tier), |i| avail(i) > 0),
            Algo::StaticRr(srr) => srr.pick(|i| avail(i) > 0, any_avail),
            Algo::LeastConn(rot) => self.least_conn(rot, exclude, tier),
            Algo::First => (0..self.servers.len()).find(|&i| avail(i) > 0),
            Algo::Hash { key, placement } => match placement {
                Placement::MapBased(map, rr) => match haproxy_key_hash(key, ctx) {
                    Some(h) => self.map_based(map, h, exclude, tier),
                    None => {
                        map.next_rr(rr, self.servers.len(), self.usable(tier), |i| avail(i) > 0)
                    }
                },
                Placement::Consistent(ring, fallback) => match key_hash(key, ctx) {
                    Some(h) => ring.lookup(h, avail, any_avail),
                    None => fallback.pick(avail),
                },
            },
            Algo::Random(draws) => self.random(*draws, exclude, tier),
        }
    }

    /// Whether some server of this pick's tier is usable but has no free
    /// slot: a request may wait for it (queueing).
    pub fn any_full(&self) -> bool {
        let tier = self.tier();
        self.servers
            .iter()
            .enumerate()
            .any(|(i, s)| self.in_tier(i, tier) && usable_weight(s) > 0 && !s.has_slot())
    }

    /// The server at `i` (an index from [`Balancer::pick`]). Panics if `i`
    /// is out of range, like slice indexing; see [`Balancer::get`].
    pub fn server(&self, i: usize) -> &Arc<ServerState> {
        &self.servers[i]
    }

    pub fn get(&self, i: usize) -> Option<&Arc<ServerState>> {
        self.servers.get(i)
    }

    /// All servers, in config order.
    pub fn servers(&self) -> &[Arc<ServerState>] {
        &self.servers
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Runtime weight of server `i` if it is eligible for this pick, else 0.
    ///
    /// Same test as `is_usable() && has_slot()`, but the weight is loaded
    /// once, so the eligibility decision and the weight used to rank the
    /// server cannot disagree if `set weight` races with the pick.
    fn avail_weight(&self, i: usize, exclude: &[usize], tier: Tier) -> u32 {
        match self.servers.get(i) {
            Some(s) if !exclude.contains(&i) && self.in_tier(i, tier) && s.has_slot() => {
                usable_weight(s)
            }
            _ => 0,
        }
    }

    /// `leastconn`: the lowest load relative to weight; among equals, a
    /// rotating counter picks the k-th, so ties are served round-robin.
    ///
    /// Two passes (find the best and count ties, then take the k-th tie)
    /// rather than collecting candidates, to stay allocation-free.
    fn least_conn(&self, rot: &AtomicUsize, exclude: &[usize], tier: Tier) -> Option<usize> {
        let mut best: Option<(usize, Load)> = None;
        let mut ties = 0usize;
        for (i, s) in self.servers.iter().enumerate() {
            let w = self.avail_weight(i, exclude, tier);
            if w == 0 {
                continue;
            }
            let l = Load::of(s, w);
            match best {
                Some((_, b)) if l.cmp_lc(b).is_gt() => {}
                Some((_, b)) if l.cmp_lc(b).is_eq() => ties += 1,
                _ => {
                    best = Some((i, l));
                    ties = 1;
                }
            }
        }
        let (first, b) = best?;
        if ties <= 1 {
            return Some(first);
        }
        let k = rot.fetch_add(1, Ordering::Relaxed) % ties;
        let mut seen = 0;
        for (i, s) in self.servers.iter().enumerate() {
            let w = self.avail_weight(i, exclude, tier);
            if w > 0 && Load::of(s, w).cmp_lc(b).is_eq() {
                if seen == k {
                    return Some(i);
                }
                seen += 1;
            }
        }
        // Loads moved between the passes (other requests started or ended);
        // the first pass's winner is still a fine answer.
        Some(first)
    }

    /// Effective weight of server `i` if usable (ready, up, not cooling
    /// down) and in the tier, else 0.
    fn usable(&self, tier: Tier) -> impl Fn(usize) -> u32 + '_ {
        move |i| match self.servers.get(i) {
            Some(s) if self.in_tier(i, tier) => usable_weight(s),
            _ => 0,
        }
    }

    /// `hash-type map-based`, as HAProxy 2.6: the key's hash picks entry
    /// `hash % length` of HAProxy's server map, which holds each usable
    /// server (up, ready, weight > 0) `weight / gcd` times, interleaved.
    /// Any change to the usable set or a weight changes the map, so most
    /// keys move (the documented cost of map-based; use consistent hashing
    /// when stickiness across changes matters).
    fn map_based(&self, map: &ServerMap, h: u32, exclude: &[usize], tier: Tier) -> Option<usize> {
        // The map is over usable servers only, not over "has a slot and is
        // not excluded": those change per request and must not remap keys.
        if let Some(i) = map.lookup(h, self.servers.len(), self.usable(tier)) {
            if self.avail_weight(i, exclude, tier) > 0 {
                return Some(i);
            }
        }
        // The designated server is full or excluded (HAProxy would queue on
        // it, or redispatch round-robin): spread this request over the
        // eligible servers with an independent hash of the key.
        let avail = |i: usize| self.avail_weight(i, exclude, tier);
        let total: u64 = (0..self.servers.len()).map(|i| u64::from(avail(i))).sum();
        if total == 0 {
            return None;
        }
        self.nth_by_weight(
            hash::fmix64(u64::from(h) ^ 0x9e37_79b9_7f4a_7c15) % total,
            avail,
        )
    }

    /// `random(n)`: `n` weighted draws, keep the least loaded relative to
    /// weight (with n = 2, the "power of two choices").
    fn random(&self, draws: u32, exclude: &[usize], tier: Tier) -> Option<usize> {
        let avail = |i: usize| self.avail_weight(i, exclude, tier);
        let total: u64 = (0..self.servers.len()).map(|i| u64::from(avail(i))).sum();
        if total == 0 {
            return None;
        }
        let mut best: Option<(usize, Load)> = None;
        for _ in 0..draws {
            let Some(i) = self.nth_by_weight(fastrand::u64(..total), avail) else {
                continue;
            };
            let (Some(s), w) = (self.servers.get(i), avail(i)) else {
                continue;
            };
            // Re-read: it may have changed since the draw (then skip it).
            if w == 0 {
                continue;
            }
            let l = Load::of(s, w);
            // Strictly less loaded only: on a tie the earlier draw stays, so
            // with no load at all this is plain weighted random.
            if best.is_none_or(|(_, b)| l.cmp_ratio(b).is_lt()) {
                best = Some((i, l));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The server whose cumulative-weight range holds `t`. Weights are
    /// re-read, so if they changed since the total was summed `t` may run
    /// past the end: the last weighted server is returned then.
    fn nth_by_weight(&self, mut t: u64, weight: impl Fn(usize) -> u32) -> Option<usize> {
        let mut last = None;
        for i in 0..self.servers.len() {
            let w = u64::from(weight(i));
            if w == 0 {
                continue;
            }
            if t < w {
                return Some(i);
            }
            t -= w;
            last = Some(i);
        }
        last
    }
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algo = match &self.algo {
            Algo::RoundRobin(_) => "roundrobin",
            Algo::StaticRr(_) => "static-rr",
            Algo::LeastConn(_) => "leastconn",
            Algo::First => "first",
            Algo::Hash {
                key: HashKey::Source,
                ..
            } => "source",
            Algo::Hash {
                key: HashKey::Uri, ..
            } => "uri",
            Algo::Hash {
                key: HashKey::Hdr(_),
                ..
            } => "hdr",
            Algo::Random(_) => "random",
        };
        f.debug_struct("Balancer")
            .field("algo", &algo)
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Effective weight (runtime weight, ramped by slowstart) if the server is
/// usable (ready, up, not in a 429 cooldown), else 0. Slots, `exclude` and
/// backup tiers are not considered.
fn usable_weight(s: &ServerState) -> u32 {
    if s.admin() == AdminState::Ready && s.is_up() && !s.in_cooldown() {
        s.effective_weight()
    } else {
        0
    }
}

/// HAProxy 2.6's hash of the key for `hash-type map-based` (default hash
/// function sdbm, no avalanche), or `None` when there is no key (only
/// `hdr(name)` with the header absent or its first value empty: HAProxy
/// then uses round-robin over the map).
fn haproxy_key_hash(key: &HashKey, ctx: &PickCtx) -> Option<u32> {
    match key {
        // HAProxy XORs the address's 32-bit words (IPv4: the address).
        HashKey::Source => Some(match ctx.src {
            IpAddr::V4(a) => hash::source_words(&a.octets()),
            // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d;
            // hash them as the IPv4 address so both listeners agree (HAProxy
            // hashes the 16 bytes there, i.e. the address XOR 0xffff).
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => hash::source_words(&v4.octets()),
                None => hash::source_words(&a.octets()),
            },
        }),
        // `balance uri`: the request target up to the first '?'. llmgw
        // hashes the path of the request's URI, which is that target for
        // origin-form requests (absolute-form and h2 targets differ: HAProxy
        // hashes scheme and authority too unless `path-only`).
        HashKey::Uri => {
            let path = ctx.path.split_once('?').map_or(ctx.path, |(p, _)| p);
            Some(hash::sdbm(path.as_bytes()))
        }
        // `balance hdr(name)`: the first occurrence's first comma-separated
        // value (commas inside double quotes do not split), without
        // surrounding blanks, as HAProxy's `http_find_header`.
        HashKey::Hdr(name) => {
            let v = first_value(ctx.headers.get(name)?.as_bytes());
            (!v.is_empty()).then(|| hash::sdbm(v))
        }
    }
}

/// The first comma-separated element of a header value, trimmed of spaces
/// and tabs; a comma inside a double-quoted string (with `\` escapes) does
/// not end it.
fn first_value(v: &[u8]) -> &[u8] {
    let mut quoted = false;
    let mut escaped = false;
    let mut end = v.len();
    for (i, &c) in v.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            quoted = !quoted;
        } else if c == b',' && !quoted {
            end = i;
            break;
        }
    }
    let v = v.get(..end).unwrap_or(v);
    let is_blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = v.iter().position(|c| !is_blank(c)).unwrap_or(v.len());
    let stop = v
        .iter()
        .rposition(|c| !is_blank(c))
        .map_or(start, |p| p + 1);
    v.get(start..stop.max(start)).unwrap_or_default()
}

/// The key `hash-type consistent` hashes (llmgw's own hash), or `None`
/// when there is none (only `hdr(name)` with the header absent or empty:
/// round-robin then).
fn key_hash(key: &HashKey, ctx: &PickCtx) -> Option<u64> {
    match key {
        HashKey::Source => Some(match ctx.src {
            IpAddr::V4(a) => hash::hash_key(&a.octets()),
            // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d;
            // hash them as the IPv4 address so both listeners agree.
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => hash::hash_key(&v4.octets()),
                None => hash::hash_key(&a.octets()),
            },
        }),
        // HAProxy's `balance uri` hashes the part before the '?'.
        HashKey::Uri => {
            let path = ctx.path.split_once('?').map_or(ctx.path, |(p, _)| p);
            Some(hash::hash_key(path.as_bytes()))
        }
        HashKey::Hdr(name) => {
            let v = ctx.headers.get(name)?.as_bytes();
            (!v.is_empty()).then(|| hash::hash_key(v))
        }
    }
}

/// A server's load (active + queued) and the weight it is judged against.
#[derive(Clone, Copy, Debug)]
struct Load {
    load: u64,
    weight: u64,
}

impl Load {
    fn of(s: &ServerState, weight: u32) -> Load {
        Load {
            load: u64::from(s.active()) + u64::from(s.queued()),
            weight: u64::from(weight),
        }
    }

    /// `load / weight`, cross-multiplied (weights ≤ 256 and loads ≤ 2³³,
    /// so the products fit in u64).
    fn cmp_ratio(self, o: Load) -> std::cmp::Ordering {
        (self.load * o.weight).cmp(&(o.load * self.weight))
    }

    /// HAProxy's leastconn key: 0 for an idle server, otherwise
    /// `(load + 1) / weight`, i.e. the load the server would have *after*
    /// taking this request. The +1 is what makes weights count at low load
    /// (weights 1 and 2 with one request each: 2/1 vs 2/2, the heavier one
    /// wins); idle servers all tie so that light traffic is spread
    /// round-robin instead of always hitting the heaviest server.
    fn cmp_lc(self, o: Load) -> std::cmp::Ordering {
        match (self.load, o.load) {
            (0, 0) => std::cmp::Ordering::Equal,
            (0, _) => std::cmp::Ordering::Less,
            (_, 0) => std::cmp::Ordering::Greater,
            (a, b) => ((a + 1) * o.weight).cmp(&((b + 1) * self.weight)),
        }
    }
}
