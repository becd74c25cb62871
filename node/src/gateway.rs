//! The running gateway: the current configuration snapshot with everything
//! built from it (balancers, upstream pools), and the state shared by every
//! snapshot.
//!
//! A reload builds a whole new [`Snapshot`] and swaps it in atomically; a
//! request keeps the snapshot it started with until it ends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::balance::Balancer;
use crate::config::Config;
use crate::health;
use crate::runtime::{BackendQueue, FallbackCounters, Runtime};
use crate::upstream::retry::RetryPolicy;
use crate::upstream::Upstream;

/// One configuration and what was built from it.
pub struct Snapshot {
    pub config: Config,
    /// Same order as `config.backends`.
    pub backends: Vec<BackendRt>,
    /// The active checks of checked servers (started by
    /// [`Shared::start_checks`], not by building).
    pub checks: Vec<health::Check>,
    /// Same order as `config.stick_tables`; kept across reloads by name
    /// (shared with the runtime state).
    pub tables: Vec<Arc<crate::stick::Table>>,
    /// Same order as `config.key_lists`.
    pub keyrings: Vec<crate::keys::KeyRing>,
    /// Same order as `config.frontends`; kept across reloads by name.
    pub frontend_stats: Vec<Arc<crate::metrics::ProxyStats>>,
    /// Some rule (`http-request` or `tcp-request connection`) tracks into a
    /// stick table and some backend is not plain
    /// HTTP/1.1: the HTTP/1 engine then hands every request to the general
    /// path before its rules run, since a handoff after routing would run
    /// the rules — and count the request — twice.
    pub tracking_needs_general_path: bool,
    /// Some rule tracks and some table counts bytes or tokens: requests
    /// are accounted ([`crate::stick::Tracked::account`]) on the general
    /// path, which sees their bodies.
    pub accounting: Accounting,
    /// Some rule reads the body beyond its model (a token estimate, a
    /// `track-sc` key from a body field): the general path reads it whole
    /// first, and the HTTP/1 engine hands such requests over.
    pub reads_body: bool,
    /// The access-log writer, when some frontend logs; each snapshot opens
    /// its own (a reload reopens a log file: see `crate::logs`).
    pub logger: Option<Arc<crate::logs::Logger>>,
}

/// What the tracked tables count of a request's cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub bytes: bool,
    /// A token estimate is reserved up front: the body is read whole (up
    /// to the frontend's `body_limit`) before the rules run.
    pub tokens: bool,
}

impl Accounting {
    pub fn any(self) -> bool {
        self.bytes || self.tokens
    }
}

impl Snapshot {
    /// The frontend called `name` (`None` once a reload removed it: its
    /// listener is draining).
    pub fn frontend(&self, name: &str) -> Option<&crate::config::Frontend> {
        self.config.frontends.iter().find(|f| *f.name == *name)
    }

    /// The counters of the frontend called `name`.
    pub fn frontend_stats(&self, name: &str) -> Option<&Arc<crate::metrics::ProxyStats>> {
        let i = self
            .config
            .frontends
            .iter()
            .position(|f| *f.name == *name)?;
        self.frontend_stats.get(i)
    }

    /// The stick table called `name`.
    pub fn table(&self, name: &str) -> Option<&Arc<crate::stick::Table>> {
        self.tables.iter().find(|t| t.name == name)
    }
}

pub struct BackendRt {
    pub balancer: Balancer,
    /// Same order as the backend's servers.
    pub upstreams: Vec<Upstream>,
    /// Every server is plain HTTP/1.1, so the HTTP/1 engine can carry the
    /// backend's requests itself.
    pub h1_only: bool,
    /// `retries`, `retry-on`, `option redispatch`, resolved.
    pub retry: RetryPolicy,
    /// Traffic counters (shared with the runtime state, by name).
    pub stats: Arc<crate::metrics::BackendStats>,
    /// Requests waiting for a slot (shared with the runtime state).
    pub queue: Arc<BackendQueue>,
    /// Most requests that may wait: the servers' `maxqueue` summed, `None`
    /// (unlimited) unless every server sets one above 0.
    pub queue_limit: Option<u32>,
    /// `timeout queue`, else `timeout connect` (as in HAProxy).
    pub queue_timeout: std::time::Duration,
    pub fallbacks: Arc<FallbackCounters>,
}

/// What outlives snapshots.
pub struct Shared {
    pub current: ArcSwap<Snapshot>,
    pub runtime: Runtime,
    /// Where the built-in mock provider listens, when a config uses it.
    pub mock: Option<SocketAddr>,
    /// The current snapshot's check tasks; `None` until checks are started.
    running: Mutex<Option<health::Checks>>,
}

impl Shared {
    pub fn new(config: Config, mock: Option<SocketAddr>) -> Result<Arc<Shared>, String> {
        let runtime = Runtime::default();
        let snap = build(config, &runtime, mock)?;
        Ok(Arc::new(Shared {
            current: ArcSwap::from_pointee(snap),
            runtime,
            mock,
            running: Mutex::new(None),
        }))
    }

    /// Starts the current snapshot's health checks (on the current tokio
    /// runtime); from then on every [`Shared::swap`] replaces them.
    pub fn start_checks(&self) {
        let snap = self.current.load();
        let checks = health::Checks::start(&snap.checks);
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(checks);
    }

    /// Builds a snapshot for `config` and makes it current. Runtime state
    /// (admin states, runtime weights) carries over by name.
    pub fn swap(&self, config: Config) -> Result<(), String> {
        let snap = build(config, &self.runtime, self.mock)?;
        let keep: std::collections::HashSet<(String, String)> = snap
            .config
            .backends
            .iter()
            .flat_map(|b| {
                b.servers
                    .iter()
                    .map(move |s| (b.name.clone(), s.name.clone()))
            })
            .collect();
        let snap = Arc::new(snap);
        self.current.store(snap.clone());
        {
            // The old snapshot's check tasks stop; the new one's start. The
            // servers' health stays in the runtime state.
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.is_some() {
                *running = None;
                *running = Some(health::Checks::start(&snap.checks));
            }
        }
        self.runtime
            .retain(|b, s| keep.contains(&(b.to_owned(), s.to_owned())));
        Ok(())
    }
}

fn build(config: Config, runtime: &Runtime, mock: Option<SocketAddr>) -> Result<Snapshot, String> {
    let mut backends = Vec::with_capacity(config.backends.len());
    let mut checks = Vec::new();
    for b in &config.backends {
        let mut servers = Vec::with_capacity(b.servers.len());
        let mut upstreams = Vec::with_capacity(b.servers.len());
        for s in &b.servers {
            // A `disabled` server starts in maintenance; one that exists
            // keeps its runtime state (`enable server` may have run).
            let admin = if s.opts.disabled {
                crate::runtime::AdminState::Maint
            } else {
                crate::runtime::AdminState::Ready
            };
            let state = runtime.server_in(&b.name, &s.name, s.weight, s.maxconn, admin);
            upstreams
                .push(Upstream::new(b, s, mock).map_err(|e| format!("backend '{}': {e}", b.name))?);
            let check = health::plan(b, s, state.clone(), mock)
                .map_err(|e| format!("backend '{}' server '{}' check: {e}", b.name, s.name))?;
            checks.extend(check);
            servers.push((state, s.weight));
        }
        // Only now, with nothing left to fail, do the servers' shared
        // states take this snapshot's health settings.
        backends.push((b, servers, upstreams));
    }
    let backends: Vec<BackendRt> = backends
        .into_iter()
        .map(|(b, servers, upstreams)| {
            let queue_limit = b
                .servers
                .iter()
                .map(|s| s.opts.maxqueue.filter(|&q| q > 0))
                .sum::<Option<u32>>();
            for ((state, _), s) in servers.iter().zip(&b.servers) {
                state.configure(&health::conf(b, s));
                state.set_initial_weight(s.weight);
            }
            BackendRt {
                balancer: Balancer::new(&b.balance, b.hash_type, servers)
                    .with_allbackups(b.opts.allbackups),
                // A fallback chain is followed by the general path only.
                h1_only: upstreams.iter().all(|u| u.h1.is_some()) && b.opts.fallback.is_empty(),
                retry: RetryPolicy::of(b),
                queue: runtime.queue(&b.name),
                fallbacks: runtime.fallback_counters(&b.name),
                stats: runtime.metrics.backend(&b.name),
                queue_limit,
                queue_timeout: b.opts.timeout_queue.unwrap_or(b.timeouts.connect),
                upstreams,
            }
        })
        .collect();
    let tables: Vec<Arc<crate::stick::Table>> = config
        .stick_tables
        .iter()
        .map(|t| {
            runtime
                .table(t)
                .map_err(|e| format!("stick-table '{}': {e}", t.name))
        })
        .collect::<Result<_, _>>()?;
    let tracks = |rules: &[crate::config::HttpReqRule]| {
        rules
            .iter()
            .any(|r| matches!(r.action, crate::config::ReqAction::TrackSc { .. }))
    };
    let keyrings = config
        .key_lists
        .iter()
        .map(|l| {
            crate::keys::KeyRing::new(l, runtime)
                .map_err(|e| format!("client_keys '{}': {e}", l.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keyed = config.frontends.iter().any(|f| f.client_keys.is_some());
    // A connection's entries count each of its requests too, so a request
    // handed over after routing would count twice on them as well.
    let tracking = keyed
        || config
            .frontends
            .iter()
            .any(|f| tracks(&f.http_request) || f.tcp_request.tracks_connections())
        || config.backends.iter().any(|b| tracks(&b.http_request));
    let counts = |f: fn(crate::config::stick::Data) -> bool| {
        tracking
            && tables
                .iter()
                .any(|t: &Arc<crate::stick::Table>| t.columns().iter().any(|c| f(c.data)))
    };
    let accounting = Accounting {
        bytes: counts(crate::config::stick::Data::is_bytes),
        // Client keys count tokens in their own tables.
        tokens: keyed || counts(crate::config::stick::Data::is_tokens),
    };
    let body_keyed = |rules: &[crate::config::HttpReqRule]| {
        rules.iter().any(|r| {
            matches!(&r.action, crate::config::ReqAction::TrackSc { key, .. }
                if crate::config::body_key_path(key).is_some())
        })
    };
    let reads_body = accounting.tokens
        || config.frontends.iter().any(|f| body_keyed(&f.http_request))
        || config.backends.iter().any(|b| body_keyed(&b.http_request));
    let tracking_needs_general_path = tracking
        && (accounting.any() || reads_body || backends.iter().any(|b: &BackendRt| !b.h1_only));
    let frontend_stats: Vec<_> = config
        .frontends
        .iter()
        .map(|f| runtime.metrics.frontend(&f.name))
        .collect();
    // Started last: nothing after it can fail, so a refused configuration
    // leaves no writer thread behind.
    let logger = match &config.global.log {
        Some(t) if config.frontends.iter().any(|f| f.log.is_some()) => Some(
            crate::logs::Logger::start(
                t,
                runtime.metrics.logs_dropped.clone(),
                frontend_stats.clone(),
            )
            .map_err(|e| format!("access log {}: {e}", t.sink.to_target()))?,
        ),
        _ => None,
    };
    Ok(Snapshot {
        config,
        backends,
        checks,
        tables,
        keyrings,
        frontend_stats,
        tracking_needs_general_path,
        accounting,
        reads_body,
        logger,
    })
}
