//! State that outlives a configuration reload.
//!
//! Configuration is an immutable snapshot; everything an operator or the
//! traffic itself changes while the gateway runs lives here instead, keyed by
//! stable names (`backend/server`) so a reload finds it again: a server's
//! admin state, its runtime weight, and its live connection counters.
//! Every change arrives as a [`Command`] — the same type the runtime API and
//! the cluster will send — so a single node and a cluster share one path.

mod health;

pub use health::{
    now_ms, CheckResult, CheckStatus, HealthConf, HealthView, Observe, OnError, Outcome,
    Transition, MAX_COOLDOWN,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// HAProxy's admin states for a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// Takes new traffic.
    Ready = 0,
    /// Takes no new traffic (hash-based algorithms included; only
    /// persistence, which arrives with stick tables, may still reach it);
    /// in-flight requests finish. Same as weight 0.
    Drain = 1,
    /// Takes no traffic at all.
    Maint = 2,
}

impl AdminState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// Live state of one server. Lock-free: read on every balancing decision.
#[derive(Debug)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    admin: AtomicU8,
    /// Effective weight, 0..=256. Starts at the configured weight and is
    /// changed at runtime (`set server b/s weight`). 0 drains.
    weight: AtomicU32,
    /// The configured weight of the current snapshot (HAProxy's
    /// `iweight`): what `set server b/s weight N%` is relative to.
    initial_weight: AtomicU32,
    /// Requests currently being served by this server.
    active: AtomicU32,
    /// Requests waiting for a slot on this server. Queueing is per backend
    /// ([`BackendQueue`]), so this stays 0 until server-bound requests
    /// (stick tables) can wait for one server; `leastconn` already reads it.
    queued: AtomicU32,
    /// Concurrent-request limit, 0 = unlimited.
    maxconn: AtomicU32,
    /// Operational state from checks and observation (`health.rs`).
    up: AtomicU8,
    /// Requests sent to this server since start (HAProxy's `stot`/`lbtot`).
    total: AtomicU64,
    /// The backend's queue, woken when this server frees a slot.
    queue: Arc<BackendQueue>,
    /// Failed attempts on this server that were retried (HAProxy's `wretr`).
    retries: AtomicU64,
    /// Of those, retries that went to another server (HAProxy's `wredis`).
    redispatches: AtomicU64,
    /// Responses whose body broke after its head reached the client.
    truncated: AtomicU64,
    health: health::Health,
    /// What this server has carried (responses, bytes, timers).
    pub stats: crate::metrics::ProxyStats,
}

impl ServerState {
    pub fn new(backend: &str, name: &str, weight: u32, maxconn: u32) -> Self {
        Self::in_queue(backend, name, weight, maxconn, Arc::default())
    }

    fn in_queue(
        backend: &str,
        name: &str,
        weight: u32,
        maxconn: u32,
        queue: Arc<BackendQueue>,
    ) -> Self {
        ServerState {
            queue,
            backend: backend.to_owned(),
            name: name.to_owned(),
            admin: AtomicU8::new(AdminState::Ready as u8),
            weight: AtomicU32::new(weight.min(256)),
            initial_weight: AtomicU32::new(weight.min(256)),
            active: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            maxconn: AtomicU32::new(maxconn),
            up: AtomicU8::new(1),
            total: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            redispatches: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            health: health::Health::new(),
            stats: crate::metrics::ProxyStats::default(),
        }
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin(&self, s: AdminState) {
        self.admin.store(s as u8, Ordering::Relaxed);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.min(256), Ordering::Relaxed);
    }

    pub fn initial_weight(&self) -> u32 {
        self.initial_weight.load(Ordering::Relaxed)
    }

    /// Records the weight the configuration gives (at every snapshot
    /// build). A weight set at runtime survives a reload that leaves the
    /// configured weight as it was; a reload that changes it means the
    /// operator changed their mind, so the new configured weight is in
    /// force (as HAProxy does when a server-state file's `srv_iweight`
    /// no longer matches the configuration).
    pub fn set_initial_weight(&self, w: u32) {
        let w = w.min(256);
        if self.initial_weight.swap(w, Ordering::Relaxed) != w {
            self.weight.store(w, Ordering::Relaxed);
        }
    }

    pub fn maxconn(&self) -> u32 {
        self.maxconn.load(Ordering::Relaxed)
    }

    pub fn set_maxconn(&self, n: u32) {
        self.maxconn.store(n, Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) != 0
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up as u8, Ordering::Relaxed);
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A failed attempt on this server is retried; `redispatched` when the
    /// retry goes to another server.
    pub fn count_retry(&self, redispatched: bool) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if redispatched {
            self.redispatches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A response body from this server broke after its head was sent.
    pub fn count_truncated(&self) {
        self.truncated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn redispatches(&self) -> u64 {
        self.redispatches.load(Ordering::Relaxed)
    }

    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// May this server be chosen for a new, non-sticky request? (Ready,
    /// UP, not in a 429 cooldown, weight above 0.) Backup servers are
    /// usable too; whether they are used is the balancer's call.
    pub fn is_usable(&self) -> bool {
        self.admin() == AdminState::Ready
            && self.is_up()
            && self.weight() > 0
            && !self.in_cooldown()
    }

    /// Is there a free concurrent-request slot?
    pub fn has_slot(&self) -> bool {
        let max = self.maxconn();
        max == 0 || self.active() < max
    }

    /// Marks one request as started on this server; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        let now = u64::from(self.active.fetch_add(1, Ordering::Relaxed)) + 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        // The most requests at once (HAProxy's `smax`; `active` and `total`
        // are its `scur` and `stot`). A plain load first: a new maximum is
        // rare, and the hot path pays no extra atomic write for it.
        if now > self.stats.max.load(Ordering::Relaxed) {
            self.stats.max.fetch_max(now, Ordering::Relaxed);
        }
        ActiveGuard(self.clone())
    }
}

/// Decrements the server's active count when the request (including its
/// streamed response body) is over.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ServerState>);

impl ActiveGuard {
    /// The server this request runs on (e.g. to [`ServerState::observe`]
    /// how its response body ended).
    pub fn server(&self) -> &Arc<ServerState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        // A slot is free: the first waiter in the backend's queue tries.
        if self.0.queue.current.load(Ordering::SeqCst) > 0 {
            self.0.queue.notify.notify_one();
        }
    }
}

/// A backend's queue of requests waiting for a free server slot (`maxconn`),
/// served in arrival order as slots free; kept across reloads.
#[derive(Debug, Default)]
pub struct BackendQueue {
    pub notify: tokio::sync::Notify,
    /// Requests waiting now (HAProxy's `qcur`).
    pub current: AtomicU32,
    /// Most ever waiting at once (`qmax`).
    pub max: AtomicU32,
    /// Requests that had to wait.
    pub total: AtomicU64,
    /// Gave up after `timeout queue` (503).
    pub timeouts: AtomicU64,
    /// Refused because the queue was full (`maxqueue`, 503).
    pub full: AtomicU64,
    /// Total time spent waiting, in microseconds.
    pub wait_us: AtomicU64,
}

/// A backend's part in fallback chains; kept across reloads.
#[derive(Debug, Default)]
pub struct FallbackCounters {
    /// Requests this backend failed for good and handed to the next step
    /// of its chain.
    pub handed_on: AtomicU64,
    /// Requests this backend received as a fallback step.
    pub taken_over: AtomicU64,
}

/// A change to runtime state. The runtime API (`crate::admin`) and the
/// cluster (issue 8) produce these; applying one is the only way state
/// changes. A command names what it changes and carries the operator's
/// intent (a weight in percent, a table key as text), so that every node
/// applying it reaches the same state from its own configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `set server b/s state ready|drain|maint`; `disable server b/s` is
    /// `maint`.
    SetServerState {
        backend: String,
        server: String,
        state: AdminState,
    },
    /// `enable server b/s`: leaves maintenance (a draining server keeps
    /// draining, as HAProxy's clears only its maintenance flag).
    EnableServer { backend: String, server: String },
    /// `set server b/s weight N`.
    SetServerWeight {
        backend: String,
        server: String,
        weight: u32,
    },
    /// `set server b/s weight N%`: relative to the configured weight,
    /// capped at 256 (HAProxy's arithmetic: `iweight * min(N, 25600) / 100`).
    SetServerWeightPercent {
        backend: String,
        server: String,
        percent: u32,
    },
    SetServerMaxconn {
        backend: String,
        server: String,
        maxconn: u32,
    },
    /// `clear table T [key K]`: one entry, the key written as the table's
    /// type reads it (an address, a number, text, hex for `binary`), or
    /// every entry.
    ClearTable { table: String, key: Option<String> },
}

/// Error applying a [`Command`].
#[derive(Debug, PartialEq, Eq)]
pub enum CommandError {
    NoSuchServer(String),
    NoSuchBackend(String),
    NoSuchTable(String),
    /// The key cannot be a key of the table's type.
    InvalidKey(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::NoSuchServer(s) => write!(f, "no such server '{s}'"),
            CommandError::NoSuchBackend(b) => write!(f, "no such backend '{b}'"),
            CommandError::NoSuchTable(t) => write!(f, "no such table '{t}'"),
            CommandError::InvalidKey(k) => write!(f, "invalid key '{k}'"),
        }
    }
}

impl std::error::Error for CommandError {}

/// Every server's live state, by `backend/server`.
#[derive(Debug, Default)]
pub struct Runtime {
    servers: Mutex<HashMap<(String, String), Arc<ServerState>>>,
    queues: Mutex<HashMap<String, Arc<BackendQueue>>>,
    fallbacks: Mutex<HashMap<String, Arc<FallbackCounters>>>,
    /// Stick tables by name, with the definition they were built from.
    tables: Mutex<HashMap<String, (crate::config::StickTable, Arc<crate::stick::Table>)>>,
    /// Traffic counters of frontends, backends and client keys by name.
    pub metrics: crate::metrics::Registry,
}

impl Runtime {
    /// The state of `backend/server`, created on first sight with the
    /// configured weight and maxconn. Called when a config snapshot is built,
    /// never on the request path.
    pub fn server(
        &self,
        backend: &str,
        server: &str,
        weight: u32,
        maxconn: u32,
    ) -> Arc<ServerState> {
        self.server_in(backend, server, weight, maxconn, AdminState::Ready)
    }

    /// As [`Runtime::server`], a server created now starting in `admin`
    /// (HAProxy's `disabled` servers start in maintenance); one that exists
    /// keeps its state.
    pub fn server_in(
        &self,
        backend: &str,
        server: &str,
        weight: u32,
        maxconn: u32,
        admin: AdminState,
    ) -> Arc<ServerState> {
        let queue = self.queue(backend);
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((backend.to_owned(), server.to_owned()))
            .or_insert_with(|| {
                let s = ServerState::in_queue(backend, server, weight, maxconn, queue);
                s.set_admin(admin);
                Arc::new(s)
            })
            .clone()
    }

    /// The queue of `backend`, created on first sight.
    pub fn queue(&self, backend: &str) -> Arc<BackendQueue> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(backend.to_owned()).or_default().clone()
    }

    /// The fallback counters of `backend`, created on first sight.
    pub fn fallback_counters(&self, backend: &str) -> Arc<FallbackCounters> {
        let mut map = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(backend.to_owned()).or_default().clone()
    }

    /// The stick table `def` describes: the existing one (and its entries)
    /// when a table of that name was defined the same way, else a new one.
    pub fn table(
        &self,
        def: &crate::config::StickTable,
    ) -> Result<Arc<crate::stick::Table>, String> {
        let mut map = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, t)) = map.get(&def.name) {
            if d == def {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(crate::stick::Table::new(def)?);
        map.insert(def.name.clone(), (def.clone(), t.clone()));
        Ok(t)
    }

    /// Forgets servers that the new configuration no longer has.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(b, s), _| keep(b, s));
    }

    fn find(&self, backend: &str, server: &str) -> Result<Arc<ServerState>, CommandError> {
        let map = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&(backend.to_owned(), server.to_owned())) {
            return Ok(s.clone());
        }
        Err(if map.keys().any(|(b, _)| b == backend) {
            CommandError::NoSuchServer(format!("{backend}/{server}"))
        } else {
            CommandError::NoSuchBackend(backend.to_owned())
        })
    }

    pub fn apply(&self, cmd: &Command) -> Result<(), CommandError> {
        match cmd {
            Command::SetServerState {
                backend,
                server,
                state,
            } => self.find(backend, server)?.set_admin(*state),
            Command::EnableServer { backend, server } => {
                let s = self.find(backend, server)?;
                if s.admin() == AdminState::Maint {
                    s.set_admin(AdminState::Ready);
                }
            }
            Command::SetServerWeight {
                backend,
                server,
                weight,
            } => self.find(backend, server)?.set_weight(*weight),
            Command::SetServerWeightPercent {
                backend,
                server,
                percent,
            } => {
                let s = self.find(backend, server)?;
                let w = u64::from(s.initial_weight()) * u64::from((*percent).min(25_600)) / 100;
                s.set_weight(w.min(256) as u32);
            }
            Command::SetServerMaxconn {
                backend,
                server,
                maxconn,
            } => self.find(backend, server)?.set_maxconn(*maxconn),
            Command::ClearTable { table, key } => {
                let t = {
                    let map = self.tables.lock().unwrap_or_else(|e| e.into_inner());
                    map.get(table)
                        .map(|(_, t)| t.clone())
                        .ok_or_else(|| CommandError::NoSuchTable(table.clone()))?
                };
                match key {
                    None => t.clear(None),
                    Some(k) => {
                        let k = t
                            .parse_key(k)
                            .ok_or_else(|| CommandError::InvalidKey(k.clone()))?;
                        t.clear(Some(&k));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_lookup_by_name() {
        let rt = Runtime::default();
        let a = rt.server("be", "s1", 10, 0);
        rt.apply(&Command::SetServerWeight {
            backend: "be".into(),
            server: "s1".into(),
            weight: 3,
        })
        .unwrap();
        // A later snapshot asking for the same server gets the same state,
        // with the runtime weight, not the configured one.
        let b = rt.server("be", "s1", 10, 0);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.weight(), 3);
    }

    #[test]
    fn unknown_server_is_an_error() {
        let rt = Runtime::default();
        rt.server("x", "z", 1, 0);
        let err = rt
            .apply(&Command::SetServerState {
                backend: "x".into(),
                server: "y".into(),
                state: AdminState::Maint,
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "no such server 'x/y'");
    }

    #[test]
    fn unknown_backend_is_told_apart() {
        let rt = Runtime::default();
        rt.server("be", "s1", 1, 0);
        let cmd = |b: &str| Command::SetServerMaxconn {
            backend: b.into(),
            server: "nope".into(),
            maxconn: 1,
        };
        assert_eq!(
            rt.apply(&cmd("be")),
            Err(CommandError::NoSuchServer("be/nope".into()))
        );
        assert_eq!(
            rt.apply(&cmd("x")),
            Err(CommandError::NoSuchBackend("x".into()))
        );
    }

    #[test]
    fn weight_in_percent_is_relative_to_the_configured_weight() {
        let rt = Runtime::default();
        let s = rt.server("be", "s", 10, 0);
        let pct = |percent| Command::SetServerWeightPercent {
            backend: "be".into(),
            server: "s".into(),
            percent,
        };
        rt.apply(&pct(50)).unwrap();
        assert_eq!(s.weight(), 5);
        // Relative to the configured weight, not the current one.
        rt.apply(&pct(50)).unwrap();
        assert_eq!(s.weight(), 5);
        rt.apply(&pct(300)).unwrap();
        assert_eq!(s.weight(), 30);
        rt.apply(&pct(u32::MAX)).unwrap();
        assert_eq!(s.weight(), 256);
        // A reload changing the configured weight moves what % refers to,
        // and puts the new weight in force.
        s.set_initial_weight(4);
        assert_eq!(s.weight(), 4);
        rt.apply(&pct(50)).unwrap();
        assert_eq!(s.weight(), 2);
        // A reload leaving it as it was keeps the runtime weight.
        s.set_initial_weight(4);
        assert_eq!(s.weight(), 2);
    }

    #[test]
    fn enable_leaves_maintenance_only() {
        let rt = Runtime::default();
        let s = rt.server_in("be", "s", 1, 0, AdminState::Maint);
        let enable = Command::EnableServer {
            backend: "be".into(),
            server: "s".into(),
        };
        rt.apply(&enable).unwrap();
        assert_eq!(s.admin(), AdminState::Ready);
        s.set_admin(AdminState::Drain);
        rt.apply(&enable).unwrap();
        assert_eq!(s.admin(), AdminState::Drain);
        // An existing server keeps its state when asked for again.
        let again = rt.server_in("be", "s", 1, 0, AdminState::Maint);
        assert_eq!(again.admin(), AdminState::Drain);
    }

    #[test]
    fn clear_table_by_key_or_whole() {
        let rt = Runtime::default();
        let def = crate::config::StickTable {
            name: "t".into(),
            key_type: "integer".into(),
            size: 10,
            expire: None,
            store: vec!["http_req_cnt".into()],
        };
        let t = rt.table(&def).unwrap();
        for k in [1, 2, 3] {
            t.add(
                &crate::stick::Key::Int(k),
                &[(crate::stick::Data::HttpReqCnt, 1)],
            );
        }
        let clear = |key: Option<&str>| Command::ClearTable {
            table: "t".into(),
            key: key.map(str::to_owned),
        };
        rt.apply(&clear(Some("2"))).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            rt.apply(&clear(Some("abc"))),
            Err(CommandError::InvalidKey("abc".into()))
        );
        rt.apply(&clear(None)).unwrap();
        assert!(t.is_empty());
        assert_eq!(
            rt.apply(&Command::ClearTable {
                table: "nope".into(),
                key: None
            }),
            Err(CommandError::NoSuchTable("nope".into()))
        );
    }

    #[test]
    fn drain_and_weight_zero_are_not_usable() {
        let s = Arc::new(ServerState::new("b", "s", 1, 0));
        assert!(s.is_usable());
        s.set_admin(AdminState::Drain);
        assert!(!s.is_usable());
        s.set_admin(AdminState::Ready);
        s.set_weight(0);
        assert!(!s.is_usable());
    }

    #[test]
    fn active_guard_counts_in_flight() {
        let s = Arc::new(ServerState::new("b", "s", 1, 1));
        let g = s.begin();
        assert_eq!(s.active(), 1);
        assert!(!s.has_slot());
        drop(g);
        assert_eq!(s.active(), 0);
        assert_eq!(s.total(), 1);
        assert_eq!(s.stats.max.load(Ordering::Relaxed), 1);
    }
}
