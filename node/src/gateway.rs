//! The running gateway: the current configuration snapshot with everything
//! built from it (balancers, upstream pools), and the state shared by every
//! snapshot.
//!
//! A reload builds a whole new [`Snapshot`] and swaps it in atomically; a
//! request keeps the snapshot it started with until it ends.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::balance::Balancer;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::upstream::Upstream;

/// One configuration and what was built from it.
pub struct Snapshot {
    pub config: Config,
    /// Same order as `config.backends`.
    pub backends: Vec<BackendRt>,
}

pub struct BackendRt {
    pub balancer: Balancer,
    /// Same order as the backend's servers.
    pub upstreams: Vec<Upstream>,
    /// Every server is plain HTTP/1.1, so the HTTP/1 engine can carry the
    /// backend's requests itself.
    pub h1_only: bool,
}

/// What outlives snapshots.
pub struct Shared {
    pub current: ArcSwap<Snapshot>,
    pub runtime: Runtime,
    /// Where the built-in mock provider listens, when a config uses it.
    pub mock: Option<SocketAddr>,
}

impl Shared {
    pub fn new(config: Config, mock: Option<SocketAddr>) -> Result<Arc<Shared>, String> {
        let runtime = Runtime::default();
        let snap = build(config, &runtime, mock)?;
        Ok(Arc::new(Shared {
            current: ArcSwap::from_pointee(snap),
            runtime,
            mock,
        }))
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
        self.current.store(Arc::new(snap));
        self.runtime
            .retain(|b, s| keep.contains(&(b.to_owned(), s.to_owned())));
        Ok(())
    }
}

fn build(config: Config, runtime: &Runtime, mock: Option<SocketAddr>) -> Result<Snapshot, String> {
    let mut backends = Vec::with_capacity(config.backends.len());
    for b in &config.backends {
        let mut servers = Vec::with_capacity(b.servers.len());
        let mut upstreams = Vec::with_capacity(b.servers.len());
        for s in &b.servers {
            servers.push((
                runtime.server(&b.name, &s.name, s.weight, s.maxconn),
                s.weight,
            ));
            upstreams
                .push(Upstream::new(b, s, mock).map_err(|e| format!("backend '{}': {e}", b.name))?);
        }
        let h1_only = upstreams.iter().all(|u| u.h1.is_some());
        backends.push(BackendRt {
            balancer: Balancer::new(&b.balance, b.hash_type, servers),
            upstreams,
            h1_only,
        });
    }
    Ok(Snapshot { config, backends })
}
