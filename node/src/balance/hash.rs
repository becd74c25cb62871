//! Key hashing, HAProxy's map-based server map and the consistent-hash
//! ring.
//!
//! Every node of a cluster must send the same key to the same server, so
//! every hash here is fixed and process-independent: no `RandomState`, no
//! per-process seed.
//!
//! * `hash-type map-based` (HAProxy's default) reproduces HAProxy 2.6
//!   exactly, so that a configuration moved from HAProxy keeps its key →
//!   server mapping (cache locality): the key is hashed with HAProxy's
//!   default function, [`sdbm`] (`balance source`: the address's 32-bit
//!   words XORed, [`source_words`]), and picks entry `hash % total weight`
//!   of HAProxy's weight-interleaved server map ([`ServerMap`]).
//! * `hash-type consistent` keeps llmgw's own ring (FNV-1a + MurmurHash3's
//!   `fmix64`, 1024+ points per server placed by server *name*). It does
//!   **not** reproduce HAProxy's chash tree (sdbm + avalanche, 16 points
//!   per weight unit placed by server id): keys land on different servers
//!   than under HAProxy, in exchange for a much more even spread and
//!   placement that survives reordering servers.

use std::sync::{Arc, RwLock};

use crate::runtime::ServerState;

/// HAProxy's default hash function (`hash_sdbm`): for each byte,
/// `h = byte + (h << 6) + (h << 16) - h`, on 32 bits.
pub(super) fn sdbm(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |h, &b| {
        u32::from(b)
            .wrapping_add(h << 6)
            .wrapping_add(h << 16)
            .wrapping_sub(h)
    })
}

/// HAProxy's `balance source` key under map-based hashing: the address's
/// 32-bit words (network order) XORed together, no hash function on top. For
/// IPv4 this is the address itself as a number.
pub(super) fn source_words(octets: &[u8]) -> u32 {
    octets
        .chunks_exact(4)
        .fold(0, |h, w| h ^ u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

/// HAProxy's map for `hash-type map-based`: every usable server `eweight`
/// times, interleaved ([`super::rr::server_map`]), where `eweight` is the
/// runtime weight divided by the GCD of the *configured* weights (rounded
/// up), as HAProxy's `init_server_map` does. A key picks entry
/// `hash % map length`.
///
/// HAProxy rebuilds the map when a server goes up or down or its weight
/// changes; here it is rebuilt lazily by the first pick that sees the
/// usable weights differ from the ones it was built for. A pick compares
/// O(servers) weights under a read lock and allocates nothing; only a
/// rebuild allocates.
#[derive(Debug)]
pub(super) struct ServerMap {
    /// GCD of the configured weights (HAProxy's `wmult`).
    gcd: u32,
    built: RwLock<Built>,
}

#[derive(Debug, Default)]
struct Built {
    /// Effective weight of each server the map was built for (0: absent).
    eweights: Box<[u32]>,
    /// Server indices, HAProxy's order.
    slots: Box<[u32]>,
}

impl ServerMap {
    pub(super) fn new(configured: &[u32]) -> ServerMap {
        let g = configured
            .iter()
            .fold(0, |g, &w| super::rr::gcd(g, u64::from(w.min(256))));
        ServerMap {
            gcd: g.clamp(1, 256) as u32,
            built: RwLock::new(Built::default()),
        }
    }

    fn eweight(&self, w: u32) -> u32 {
        w.min(256).div_ceil(self.gcd)
    }

    /// The server at `h % total` of the map over the servers `usable`
    /// gives a weight (0: not in the map), `None` when there is none.
    pub(super) fn lookup(&self, h: u32, n: usize, usable: impl Fn(usize) -> u32) -> Option<usize> {
        self.with_slots(n, usable, |slots| {
            let len = slots.len();
            (len > 0).then(|| slots[h as usize % len] as usize)
        })
    }

    /// HAProxy's round-robin over the map (`map_get_server_rr`), used when
    /// a hash key is missing: the slot at `*next`, walking on over servers
    /// `avail` refuses; advances `next` past the slot taken.
    pub(super) fn next_rr(
        &self,
        next: &std::sync::atomic::AtomicUsize,
        n: usize,
        usable: impl Fn(usize) -> u32,
        avail: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        use std::sync::atomic::Ordering;
        self.with_slots(n, usable, |slots| {
            let len = slots.len();
            if len == 0 {
                return None;
            }
            let start = next.load(Ordering::Relaxed) % len;
            for k in 0..len {
                let i = slots[(start + k) % len] as usize;
                if avail(i) {
                    next.store((start + k + 1) % len, Ordering::Relaxed);
                    return Some(i);
                }
            }
            None
        })
    }

    fn with_slots<T>(
        &self,
        n: usize,
        usable: impl Fn(usize) -> u32,
        f: impl FnOnce(&[u32]) -> T,
    ) -> T {
        {
            let b = self.built.read().unwrap_or_else(|e| e.into_inner());
            if b.eweights.len() == n
                && b.eweights
                    .iter()
                    .enumerate()
                    .all(|(i, &w)| w == self.eweight(usable(i)))
            {
                return f(&b.slots);
            }
        }
        // The usable servers or their weights changed: rebuild. Weights are
        // read once, so the map and the weights recorded for it agree.
        let eweights: Box<[u32]> = (0..n).map(|i| self.eweight(usable(i))).collect();
        let ws: Vec<u64> = eweights.iter().map(|&w| u64::from(w)).collect();
        let slots = super::rr::server_map(&ws).into_boxed_slice();
        let mut b = self.built.write().unwrap_or_else(|e| e.into_inner());
        *b = Built { eweights, slots };
        f(&b.slots)
    }

    #[cfg(test)]
    pub(super) fn slots(&self, n: usize, usable: impl Fn(usize) -> u32) -> Vec<u32> {
        self.with_slots(n, usable, |s| s.to_vec())
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit avalanche finalizer: every input bit flips about
/// half of the output bits.
pub(super) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The hash of a balancing key (client address, path, header value).
pub(super) fn hash_key(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(FNV_OFFSET, bytes))
}

/// Position of a key on the ring (32-bit, like HAProxy's chash tree).
fn ring_pos(h: u64) -> u32 {
    (h >> 32) as u32
}

/// Points the lightest server gets on the ring. Ownership of a server with
/// `V` points deviates from its fair share by about `1/sqrt(V)`: HAProxy's
/// `weight × 16` leaves a weight-1 server ±25% off, 1024 points keep it
/// within about ±3%, which is what makes "removing one of N servers moves
/// about 1/N of the keys" hold for the server actually removed.
const MIN_POINTS: u64 = 1024;

/// Upper bound on ring size (12 bytes a point, so ≤ 3 MiB per backend).
/// Only reached with many servers and very uneven weights; points per weight
/// unit are then lowered for everyone, which keeps shares proportional.
const MAX_POINTS: u64 = 1 << 18;

#[derive(Clone, Copy, Debug)]
struct Point {
    pos: u32,
    server: u32,
    /// Ordinal of this point among its server's points; points at or beyond
    /// `runtime weight × per_weight` are inactive (see [`Ring::lookup`]).
    vnode: u32,
}

/// A consistent-hash ring built from the *configured* weights.
///
/// Each server gets `weight × per_weight` points, placed by hashing the
/// server's *name* with the point's ordinal. Names rather than indices so
/// that reordering servers in the configuration does not move keys, and so
/// that every node with the same server names builds the same ring.
#[derive(Debug)]
pub(super) struct Ring {
    points: Box<[Point]>,
    /// Points per unit of weight. Chosen from the configured weights only
    /// (so every node agrees); a configuration change of the *lightest*
    /// weight can change it and reshuffle keys, runtime changes never do.
    per_weight: u64,
}

impl Ring {
    pub(super) fn build(servers: &[Arc<ServerState>], weights: &[u32]) -> Ring {
        // A server configured with weight 0 still gets points (as weight 1):
        // it is unusable while its runtime weight is 0, and must have a
        // place on the ring once an operator raises it.
        let w = |i: usize| u64::from(weights.get(i).copied().unwrap_or(1).clamp(1, 256));
        let n = servers.len().min(u32::MAX as usize);
        let min_w = (0..n).map(w).min().unwrap_or(1);
        let sum_w: u64 = (0..n).map(w).sum();
        let per_weight = MIN_POINTS
            .div_ceil(min_w)
            .min((MAX_POINTS / sum_w.max(1)).max(1));

        let mut points = Vec::with_capacity((sum_w * per_weight) as usize);
        for (i, s) in servers.iter().enumerate().take(n) {
            let base = fnv1a(FNV_OFFSET, s.name.as_bytes());
            for v in 0..(w(i) * per_weight) as u32 {
                let pos = ring_pos(fmix64(fnv1a(base, &v.to_le_bytes())));
                points.push(Point {
                    pos,
                    server: i as u32,
                    vnode: v,
                });
            }
        }
        // Ties (two points at one position) are ordered by server index so
        // the ring is the same whatever the sort does.
        points.sort_unstable_by_key(|p| (p.pos, p.server, p.vnode));
        Ring {
            points: points.into_boxed_slice(),
            per_weight,
        }
    }

    /// The first point at or clockwise after `h` whose server `avail`
    /// accepts, wrapping around. `avail(i)` is the server's runtime weight
    /// when it may take this request, 0 otherwise.
    ///
    /// Walking on rather than rehashing is what makes the ring consistent:
    /// a key whose owner is usable never moves, and an unusable server's
    /// keys spread over the servers that follow each of its points.
    pub(super) fn lookup(
        &self,
        h: u64,
        avail: impl Fn(usize) -> u32,
        any_avail: impl Fn() -> bool,
    ) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let pos = ring_pos(h);
        let start = self.points.partition_point(|p| p.pos < pos);
        for k in 0..len {
            // When nothing is usable the walk would visit the whole ring;
            // after a few misses check that once, cheaply, in O(servers).
            if k == super::WALK_CHECK && !any_avail() {
                return None;
            }
            let p = self.points[(start + k) % len];
            let server = p.server as usize;
            let rw = u64::from(avail(server));
            // A runtime weight below the configured one deactivates the
            // server's highest-numbered points: only the keys they owned
            // move (HAProxy's chash does the same). Above the configured
            // weight there are no extra points, so it is capped.
            if rw > 0 && u64::from(p.vnode) < rw * self.per_weight {
                return Some(server);
            }
        }
        None
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.points.len()
    }
}
