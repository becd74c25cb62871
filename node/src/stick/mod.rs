//! Stick tables (HAProxy's `stick-table`): counters and sliding-window
//! rates per key — a client address, an API key, a model — evicted least
//! recently used at `size` and forgotten `expire` after their last update.
//!
//! Every update is also recorded as a [`Delta`] (key, data, period, amount)
//! that [`Table::drain_deltas`] hands out and [`Table::apply`] merges; the
//! cluster sums them across nodes. Counters and rates only ever add, so
//! applying the same deltas in any order and any grouping gives the same
//! table (see the tests).
//!
//! Tables are sharded by key hash; a shard's lock is held only for the map
//! operation itself, never across an `.await`.

pub mod rate;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashlink::LinkedHashMap;

pub use rate::Rate;

pub use crate::config::stick::{parse_store, Column, Data};
use crate::config::StickTable;
use crate::llm::usage::{Tokens, UsageScanner};

/// Shards of a large table; a table smaller than [`SHARDED_FROM`] has one,
/// so its eviction is exactly least-recently-updated.
const SHARDS: usize = 16;
const SHARDED_FROM: usize = 1024;

/// Longest string key kept (HAProxy truncates at `len`, 32 by default;
/// API keys are longer, and two keys sharing a prefix must not share an
/// entry, so we keep more and truncate only past this).
pub const MAX_STRING_KEY: usize = 256;

/// A table key, normalised for its table's type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// `ip` and `ipv6` tables: IPv4 as IPv4-mapped IPv6.
    Ip([u8; 16]),
    Int(i64),
    /// `string` and `binary` tables.
    Bytes(Box<[u8]>),
}

impl Key {
    pub fn ip(a: IpAddr) -> Key {
        Key::Ip(match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        })
    }

    pub fn bytes(b: &[u8]) -> Key {
        Key::Bytes(b[..b.len().min(MAX_STRING_KEY)].into())
    }

    /// The `src` key for a table of type `key_type`: the address for `ip`
    /// and `ipv6`, its text for `string` and `binary`, none for `integer`
    /// (HAProxy cannot convert an address to an integer key either).
    pub fn src(a: IpAddr, key_type: &str) -> Option<Key> {
        match key_type {
            "ip" | "ipv6" => Some(Key::ip(a)),
            "integer" => None,
            _ => Some(Key::bytes(a.to_string().as_bytes())),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Ip(o) => {
                let v6 = std::net::Ipv6Addr::from(*o);
                match v6.to_ipv4_mapped() {
                    Some(v4) => write!(f, "{v4}"),
                    None => write!(f, "{v6}"),
                }
            }
            Key::Int(i) => write!(f, "{i}"),
            Key::Bytes(b) => write!(f, "{}", String::from_utf8_lossy(b)),
        }
    }
}

/// One change to one key's data, as the cluster ships it. For a rate,
/// `period` is the slot the events belong to (`unix_ms / slot_ms`, see
/// [`rate`]); for a counter it is 0. Amounts add (a `conn_cur` decrement is a
/// negative amount).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Delta {
    pub key: Key,
    pub data: Data,
    pub period: u64,
    pub amount: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Count(i64),
    Rate(Rate),
}

#[derive(Debug)]
struct Entry {
    /// Last update, unix ms (expiry).
    touched_ms: u64,
    values: Box<[Value]>,
    /// Requests on this node tracking the entry now (HAProxy's `use` in
    /// `show table`), stored or not as `conn_cur`; never merged from other
    /// nodes.
    refs: i32,
}

/// One entry as `show table` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dumped {
    /// Where the entry lives in memory: HAProxy prints its entries'
    /// addresses, which identify an entry while it lives.
    pub addr: usize,
    pub key: Key,
    /// Requests tracking it now.
    pub refs: u32,
    /// Milliseconds until it expires; `None` when the table has no
    /// `expire`.
    pub expires_in_ms: Option<u64>,
    /// Every stored column and its value as of now, in `store` order.
    pub values: Vec<(Column, i64)>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Least recently updated first.
    map: LinkedHashMap<Key, Entry>,
    /// Local changes not drained yet, one per (key, data, period).
    pending: std::collections::BTreeMap<(Key, Data, u64), i64>,
}

/// The time source: wall-clock milliseconds (rates are aligned on it so
/// that nodes agree on periods). Tests pass their own.
pub type Clock = fn() -> u64;

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stick table.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    pub key_type: String,
    size: usize,
    expire_ms: Option<u64>,
    columns: Box<[Column]>,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Clock,
    /// Keep local changes for [`Table::drain_deltas`]: on only while a
    /// cluster drains them, so a lone node keeps nothing it never sends.
    recording: std::sync::atomic::AtomicBool,
}

impl Table {
    pub fn new(def: &StickTable) -> Result<Table, String> {
        Self::with_clock(def, unix_ms)
    }

    pub fn with_clock(def: &StickTable, clock: Clock) -> Result<Table, String> {
        let columns = parse_store(&def.store)?;
        let size = usize::try_from(def.size).unwrap_or(usize::MAX).max(1);
        let shards = if size >= SHARDED_FROM { SHARDS } else { 1 };
        Ok(Table {
            name: def.name.clone(),
            key_type: def.key_type.clone(),
            size,
            expire_ms: def.expire.map(|d: Duration| d.as_millis() as u64),
            columns: columns.into(),
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            clock,
            recording: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Starts (or stops) keeping local changes as deltas.
    pub fn record_deltas(&self, on: bool) {
        self.recording
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Most entries kept.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn stores(&self, data: Data) -> bool {
        self.columns.iter().any(|c| c.data == data)
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard_size(&self) -> usize {
        self.size.div_ceil(self.shards.len())
    }

    /// Adds to several data of `key` at once (the entry is created when
    /// missing, evicting the least recently updated one when the table is
    /// full); data the table does not store are skipped. Each change is
    /// recorded for [`Table::drain_deltas`].
    pub fn add(&self, key: &Key, changes: &[(Data, i64)]) {
        self.update(key, changes, true);
    }

    /// As [`Table::add`], only if `key` still has an entry (taking back a
    /// `conn_cur` must not recreate an entry evicted meanwhile).
    pub fn add_existing(&self, key: &Key, changes: &[(Data, i64)]) {
        self.update(key, changes, false);
    }

    fn update(&self, key: &Key, changes: &[(Data, i64)], create: bool) {
        let now = (self.clock)();
        let mut shard = self.shard(key);
        let Shard { map, pending } = &mut *shard;
        if !create && !map.contains_key(key) {
            return;
        }
        let entry = self.entry(map, key, now);
        let recording = self.recording.load(std::sync::atomic::Ordering::Relaxed);
        for &(data, amount) in changes {
            if data == Data::ConnCur {
                entry.refs = entry.refs.saturating_add(amount as i32);
            }
            for (col, value) in self.columns.iter().zip(entry.values.iter_mut()) {
                if col.data != data {
                    continue;
                }
                let period = match value {
                    Value::Count(c) => {
                        *c += amount;
                        0
                    }
                    Value::Rate(r) => r.add_at(now, col.period_ms, amount),
                };
                if recording {
                    *pending.entry((key.clone(), data, period)).or_insert(0) += amount;
                }
            }
        }
    }

    /// Settles a reservation made at `at_ms` (rates only): each
    /// `(data, reserved, used)` puts `used − reserved` into the slot the
    /// reservation went to, so the tokens count from when the request was
    /// admitted; a reservation whose slot has left the window counts `used`
    /// now instead (a stream longer than the period). Only an entry still
    /// present is settled.
    pub fn settle(&self, key: &Key, at_ms: u64, changes: &[(Data, i64, i64)]) {
        let now = (self.clock)();
        let mut shard = self.shard(key);
        let Shard { map, pending } = &mut *shard;
        if !map.contains_key(key) {
            return;
        }
        let entry = self.entry(map, key, now);
        let recording = self.recording.load(std::sync::atomic::Ordering::Relaxed);
        for &(data, reserved, used) in changes {
            for (col, value) in self.columns.iter().zip(entry.values.iter_mut()) {
                let (true, Value::Rate(r)) = (col.data == data, value) else {
                    continue;
                };
                let slot_ms = rate::slot_ms(col.period_ms);
                let (at, amount) = if now / slot_ms - at_ms.min(now) / slot_ms <= rate::SLOTS as u64
                {
                    (at_ms, used - reserved)
                } else {
                    (now, used)
                };
                let period = r.add_at(at, col.period_ms, amount);
                if recording && amount != 0 {
                    *pending.entry((key.clone(), data, period)).or_insert(0) += amount;
                }
            }
        }
    }

    /// The entry of `key`, created (and the table trimmed) when missing,
    /// moved to the most recently used end otherwise.
    fn entry<'m>(
        &self,
        map: &'m mut LinkedHashMap<Key, Entry>,
        key: &Key,
        now: u64,
    ) -> &'m mut Entry {
        self.expire(map, now);
        if map.contains_key(key) {
            map.to_back(key);
        } else {
            while map.len() >= self.shard_size() {
                map.pop_front();
            }
            let values = self
                .columns
                .iter()
                .map(|c| {
                    if c.data.is_rate() {
                        Value::Rate(Rate::default())
                    } else {
                        Value::Count(0)
                    }
                })
                .collect();
            map.insert(
                key.clone(),
                Entry {
                    touched_ms: now,
                    values,
                    refs: 0,
                },
            );
        }
        let e = map.get_mut(key).expect("just inserted or present");
        e.touched_ms = now;
        e
    }

    /// Forgets entries not updated within `expire` (oldest first).
    fn expire(&self, map: &mut LinkedHashMap<Key, Entry>, now: u64) {
        let Some(expire) = self.expire_ms else {
            return;
        };
        while let Some((_, e)) = map.front() {
            if e.touched_ms + expire > now {
                break;
            }
            map.pop_front();
        }
    }

    /// The current value of `data` for `key` (a rate as of now); `None`
    /// when the key has no entry or the table does not store it.
    pub fn get(&self, key: &Key, data: Data) -> Option<i64> {
        let now = (self.clock)();
        let col = self.columns.iter().position(|c| c.data == data)?;
        let mut shard = self.shard(key);
        self.expire(&mut shard.map, now);
        let e = shard.map.get(key)?;
        Some(match e.values[col] {
            Value::Count(c) => c,
            Value::Rate(r) => r.read(now, self.columns[col].period_ms) as i64,
        })
    }

    /// How long until `data` of `key` (a rate) is at most `limit` with no
    /// new event; `None` for a counter, a missing entry or data not stored.
    pub fn wait_until_at_most(&self, key: &Key, data: Data, limit: i64) -> Option<Duration> {
        let now = (self.clock)();
        let col = self.columns.iter().position(|c| c.data == data)?;
        let period = self.columns[col].period_ms;
        let shard = self.shard(key);
        let Value::Rate(r) = shard.map.get(key)?.values[col] else {
            return None;
        };
        let ms = r.ms_until_at_most(now, period, u64::try_from(limit).unwrap_or(0));
        Some(Duration::from_millis(ms))
    }

    /// Entries in the table now.
    pub fn len(&self) -> usize {
        let now = (self.clock)();
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                self.expire(&mut s.map, now);
                s.map.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry with its data as of now, keys in order.
    pub fn snapshot(&self) -> Vec<(Key, Vec<(Data, i64)>)> {
        self.dump()
            .into_iter()
            .map(|d| {
                (
                    d.key,
                    d.values.into_iter().map(|(c, n)| (c.data, n)).collect(),
                )
            })
            .collect()
    }

    /// Every entry as `show table` prints it, keys in order.
    pub fn dump(&self) -> Vec<Dumped> {
        let now = (self.clock)();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            self.expire(&mut s.map, now);
            for (k, e) in s.map.iter() {
                let values = self
                    .columns
                    .iter()
                    .zip(e.values.iter())
                    .map(|(c, v)| {
                        let n = match v {
                            Value::Count(n) => *n,
                            Value::Rate(r) => r.read(now, c.period_ms) as i64,
                        };
                        (*c, n)
                    })
                    .collect();
                out.push(Dumped {
                    addr: e as *const Entry as usize,
                    key: k.clone(),
                    refs: u32::try_from(e.refs).unwrap_or(0),
                    expires_in_ms: self
                        .expire_ms
                        .map(|x| (e.touched_ms + x).saturating_sub(now)),
                    values,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// A key of this table's type written as text, as `clear table T key
    /// K` gives it: an IPv4 address (or IPv6, which `ip` tables hold for
    /// IPv6 clients) for `ip`, an IPv6 address for `ipv6` (an IPv4 client
    /// is `::ffff:a.b.c.d` there, as `show table` prints it), a number
    /// for `integer`, the text itself for `string`, hex digits for
    /// `binary`. `None` when it cannot be one.
    pub fn parse_key(&self, text: &str) -> Option<Key> {
        match self.key_type.as_str() {
            "ip" => text.parse::<IpAddr>().ok().map(Key::ip),
            "ipv6" => text
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|a| Key::Ip(a.octets())),
            "integer" => text.parse::<i64>().ok().map(Key::Int),
            "binary" => {
                let b = text.as_bytes();
                if !b.len().is_multiple_of(2) {
                    return None;
                }
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                let bytes: Option<Vec<u8>> = b
                    .chunks(2)
                    .map(|p| Some(hex(p[0])? << 4 | hex(p[1])?))
                    .collect();
                bytes.map(|v| Key::bytes(&v))
            }
            _ => Some(Key::bytes(text.as_bytes())),
        }
    }

    /// Removes one key, or every key (`clear table`).
    pub fn clear(&self, key: Option<&Key>) {
        match key {
            Some(k) => {
                self.shard(k).map.remove(k);
            }
            None => {
                for s in self.shards.iter() {
                    s.lock().unwrap_or_else(|e| e.into_inner()).map.clear();
                }
            }
        }
    }

    /// Takes the local changes made since the last drain (while
    /// [`Table::record_deltas`] is on), one delta per (key, data, period),
    /// amounts summed.
    pub fn drain_deltas(&self) -> Vec<Delta> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            let pending = std::mem::take(&mut s.lock().unwrap_or_else(|e| e.into_inner()).pending);
            out.extend(pending.into_iter().filter(|(_, amount)| *amount != 0).map(
                |((key, data, period), amount)| Delta {
                    key,
                    data,
                    period,
                    amount,
                },
            ));
        }
        out
    }

    /// Merges a delta from another node (not recorded as a local change).
    pub fn apply(&self, d: &Delta) {
        let now = (self.clock)();
        let mut shard = self.shard(&d.key);
        let entry = self.entry(&mut shard.map, &d.key, now);
        for (col, value) in self.columns.iter().zip(entry.values.iter_mut()) {
            if col.data != d.data {
                continue;
            }
            match value {
                Value::Count(c) => *c += d.amount,
                Value::Rate(r) => r.add(d.period, d.amount),
            }
        }
    }
}

/// The entries one request tracks (`track-sc0|1|2`): what the `scN_*`
/// fetches read, and what counts the request — `conn_cur` until it ends
/// (when this is dropped), its status class when its answer is known, and
/// its bytes and tokens when a tracked table counts them.
///
/// A connection tracks entries too (`tcp-request connection track-scN`),
/// in a `Tracked` of its own that lives as long as the connection and that
/// each of its requests shares ([`Tracked::for_request`]): as in HAProxy,
/// a counter the connection tracks is not tracked again by a request's
/// `http-request track-scN`, and the request counts on the connection's
/// entry instead (`http_req_*`, `http_err_*`, bytes, tokens used, …).
#[derive(Debug, Default)]
pub struct Tracked {
    /// `sc0`–`sc2` for the rules, and [`CLIENT_KEY_SLOT`].
    slots: [Option<(Arc<Table>, Key)>; 4],
    account: Option<Box<Account>>,
    /// The connection's entries, when this is a request's.
    conn: Option<Arc<Tracked>>,
}

/// The counter a request's client key is tracked on (beyond the rules'
/// `sc0`–`sc2`, which cannot name it).
pub const CLIENT_KEY_SLOT: u8 = 3;

/// What a request costs, for tables that count bytes or tokens.
///
/// Tokens are known only once the response is over, so a request reserves
/// its estimate on each entry that counts tokens as it is tracked —
/// before the rules after the `track-sc` look at the rate, so concurrent
/// requests each see the others' reservations — and the reservation is
/// settled against the usage the response reports when the request ends.
#[derive(Debug, Default)]
pub struct Account {
    estimate: Tokens,
    /// When the reservation was made (the tables' clock), once it was.
    reserved_at: Option<u64>,
    usage: UsageScanner,
    bytes_in: u64,
    bytes_out: u64,
    /// The answer came from an upstream with a 2xx status: without a
    /// usage report it is charged its estimate (a stream cut short, or a
    /// provider that does not report usage), where a gateway-made answer
    /// or an upstream error costs nothing.
    upstream_ok: bool,
    status: u16,
}

/// What tracking a request adds to its entry: HAProxy counts a tracked
/// stream as a connection and a request (`conn_*`, `sess_*`, `http_req_*`);
/// `conn_cur` is taken back when the request ends.
const ON_TRACK: [(Data, i64); 7] = [
    (Data::ConnCur, 1),
    (Data::ConnCnt, 1),
    (Data::ConnRate, 1),
    (Data::SessCnt, 1),
    (Data::SessRate, 1),
    (Data::HttpReqCnt, 1),
    (Data::HttpReqRate, 1),
];

/// What tracking a connection at accept adds: a connection (`conn_cur`
/// until it closes). Its session is counted only once the connection
/// rules accepted it ([`Tracked::session_accepted`]), as in HAProxy, where
/// a rejected connection is never a session.
const ON_CONN: [(Data, i64); 3] = [(Data::ConnCur, 1), (Data::ConnCnt, 1), (Data::ConnRate, 1)];
const ON_SESSION: [(Data, i64); 2] = [(Data::SessCnt, 1), (Data::SessRate, 1)];
/// What each request adds to the entries its connection tracks.
const ON_REQUEST: [(Data, i64); 2] = [(Data::HttpReqCnt, 1), (Data::HttpReqRate, 1)];

fn token_changes(t: Tokens) -> [(Data, i64); 3] {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    [
        (Data::TokensInRate, n(t.input)),
        (Data::TokensOutRate, n(t.output)),
        (Data::TokensRate, n(t.total())),
    ]
}

fn counts_tokens(t: &Table) -> bool {
    t.columns.iter().any(|c| c.data.is_tokens())
}

impl Tracked {
    /// The entries of a new request on a connection that tracks `conn`
    /// (none: an empty set). The request counts once on each of them.
    pub fn for_request(conn: Option<&Arc<Tracked>>) -> Tracked {
        let Some(c) = conn else {
            return Tracked::default();
        };
        for (t, k) in c.slots.iter().flatten() {
            t.add(k, &ON_REQUEST);
        }
        Tracked {
            slots: Default::default(),
            account: None,
            conn: Some(c.clone()),
        }
    }

    /// The entry counter `sc` reads: the connection's, else the request's.
    fn slot(&self, sc: u8) -> Option<&(Arc<Table>, Key)> {
        let i = usize::from(sc);
        self.conn
            .as_ref()
            .and_then(|c| c.slots.get(i)?.as_ref())
            .or_else(|| self.slots.get(i)?.as_ref())
    }

    /// The connection's entries (none for a request on a connection that
    /// tracks nothing, or for the connection's own).
    fn conn_slots(&self) -> impl Iterator<Item = &(Arc<Table>, Key)> {
        self.conn.iter().flat_map(|c| c.slots.iter().flatten())
    }

    /// `tcp-request connection track-scN`: counts a connection on `key`'s
    /// entry (`conn_cur` until this is dropped); a counter already tracking
    /// keeps its entry.
    pub fn track_connection(&mut self, sc: u8, table: &Arc<Table>, key: Key) {
        let Some(slot) = self.slots.get_mut(usize::from(sc)) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        table.add(&key, &ON_CONN);
        *slot = Some((table.clone(), key));
    }

    /// The connection passed its `tcp-request connection` rules: it counts
    /// as a session on the entries it tracks.
    pub fn session_accepted(&self) {
        for (t, k) in self.slots.iter().flatten() {
            t.add(k, &ON_SESSION);
        }
    }

    /// Starts accounting for a request expected to cost `estimate` tokens
    /// with a body of `bytes_in` bytes; called before the rules that track.
    pub fn account(&mut self, estimate: Tokens, bytes_in: u64) {
        self.account = Some(Box::new(Account {
            estimate,
            bytes_in,
            ..Account::default()
        }));
    }

    /// Starts tracking `key` in `table` as counter `sc`; a counter already
    /// tracking keeps its entry (as in HAProxy, the first rule wins, and a
    /// counter the connection tracks is not tracked again).
    pub fn track(&mut self, sc: u8, table: &Arc<Table>, key: Key) {
        let i = usize::from(sc);
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.slots.get(i).is_some_and(Option::is_some))
        {
            return;
        }
        let Some(slot) = self.slots.get_mut(usize::from(sc)) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        match self.account.as_mut().filter(|_| counts_tokens(table)) {
            Some(a) => {
                let mut changes = [(Data::ConnCur, 0); ON_TRACK.len() + 3];
                changes[..ON_TRACK.len()].copy_from_slice(&ON_TRACK);
                changes[ON_TRACK.len()..].copy_from_slice(&token_changes(a.estimate));
                table.add(&key, &changes);
                a.reserved_at.get_or_insert_with(|| (table.clock)());
            }
            None => table.add(&key, &ON_TRACK),
        }
        *slot = Some((table.clone(), key));
    }

    /// `scN_<data>`: absent when counter `sc` tracks nothing or its table
    /// does not store `data`.
    pub fn get(&self, sc: u8, data: Data) -> Option<i64> {
        let (t, k) = self.slot(sc)?;
        t.get(k, data)
    }

    pub fn is_empty(&self) -> bool {
        self.conn.is_none() && self.slots.iter().all(Option::is_none)
    }

    /// Adds to counter `sc`'s entry (`sc-inc-gpc`); nothing when `sc`
    /// tracks nothing.
    pub fn add(&self, sc: u8, changes: &[(Data, i64)]) {
        if let Some((t, k)) = self.slot(sc) {
            t.add(k, changes);
        }
    }

    /// Sets a tag on counter `sc`'s entry (`sc-set-gpt0`), as the
    /// difference from its current value so it stays a mergeable delta.
    pub fn set(&self, sc: u8, data: Data, value: i64) {
        if let Some(now) = self.get(sc, data) {
            self.add(sc, &[(data, value - now)]);
        }
    }

    /// When a request denied because `scN_<data>` is over a limit may come
    /// back and pass: the time until the rate, with no new request, leaves
    /// room for one more (`at_most` = the limit minus one). A token rate
    /// still holds this request's own reservation, which the deny gives
    /// back: leaving room under the limit for it is room for the request.
    pub fn retry_after(&self, sc: u8, data: Data, at_most: i64) -> Option<Duration> {
        let (t, k) = self.slot(sc)?;
        t.wait_until_at_most(k, data, at_most)
    }

    /// Counts the answer's status on every tracked entry (the request's and
    /// its connection's): a 4xx is an `http_err`, a 5xx other than 501 and
    /// 505 an `http_fail`.
    pub fn answered(&mut self, status: u16) {
        if let Some(a) = &mut self.account {
            a.status = status;
        }
        let changes: &[(Data, i64)] = match status {
            400..=499 => &[(Data::HttpErrCnt, 1), (Data::HttpErrRate, 1)],
            500..=599 if status != 501 && status != 505 => {
                &[(Data::HttpFailCnt, 1), (Data::HttpFailRate, 1)]
            }
            _ => return,
        };
        for (t, k) in self.slots.iter().flatten().chain(self.conn_slots()) {
            t.add(k, changes);
        }
    }

    /// The answer is an upstream's, its body passing through
    /// [`Tracked::response_data`].
    pub fn from_upstream(&mut self) {
        if let Some(a) = &mut self.account {
            a.upstream_ok = (200..300).contains(&a.status);
        }
    }

    /// Whether the response body should be shown to
    /// [`Tracked::response_data`].
    pub fn counts_response(&self) -> bool {
        self.account.is_some()
    }

    /// A piece of the response body on its way to the client.
    pub fn response_data(&mut self, data: &[u8]) {
        if let Some(a) = &mut self.account {
            a.bytes_out += data.len() as u64;
            if a.reserved_at.is_some() {
                a.usage.feed(data);
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // The connection's entries let go of their conn_cur when the
        // connection (the last holder of its `Arc`) ends; a request only
        // adds its traffic to them.
        let Some(a) = self.account.take() else {
            for (t, k) in self.slots.iter().flatten() {
                t.add_existing(k, &[(Data::ConnCur, -1)]);
            }
            return;
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let ending = [
            (Data::ConnCur, -1),
            (Data::BytesInCnt, n(a.bytes_in)),
            (Data::BytesInRate, n(a.bytes_in)),
            (Data::BytesOutCnt, n(a.bytes_out)),
            (Data::BytesOutRate, n(a.bytes_out)),
        ];
        let used = match a.usage.found() {
            Some(u) => u,
            None if a.upstream_ok => a.estimate,
            None => Tokens::default(),
        };
        let (reserved, used) = (token_changes(a.estimate), token_changes(used));
        let settle: [(Data, i64, i64); 3] =
            std::array::from_fn(|i| (reserved[i].0, reserved[i].1, used[i].1));
        for (t, k) in self.slots.iter().flatten() {
            t.add_existing(k, &ending);
            if let (Some(at), true) = (a.reserved_at, counts_tokens(t)) {
                t.settle(k, at, &settle);
            }
        }
        // Nothing was reserved on the connection's entries: they count the
        // tokens used, once known.
        for (t, k) in self.conn_slots() {
            t.add_existing(k, &ending[1..]);
            if counts_tokens(t) {
                t.add_existing(k, &used);
            }
        }
    }
}

#[cfg(test)]
mod tests;
