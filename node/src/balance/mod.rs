//! Server selection: one balancer per backend (placeholder until the real
//! algorithms land: plain round-robin over usable servers).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::{Balance, HashType};
use crate::runtime::ServerState;

pub struct PickCtx<'a> {
    pub src: IpAddr,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

pub struct Balancer {
    servers: Vec<Arc<ServerState>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(
        _balance: &Balance,
        _hash_type: HashType,
        servers: Vec<(Arc<ServerState>, u32)>,
    ) -> Balancer {
        Balancer {
            servers: servers.into_iter().map(|(s, _)| s).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn pick(&self, _ctx: &PickCtx, exclude: &[usize]) -> Option<usize> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| {
            !exclude.contains(&i) && self.servers[i].is_usable() && self.servers[i].has_slot()
        })
    }

    pub fn server(&self, i: usize) -> &Arc<ServerState> {
        &self.servers[i]
    }
}
