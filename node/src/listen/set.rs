//! The process's listening sockets, kept in step with the configuration.
//!
//! A listening socket is identified by the address its configuration
//! names (`127.0.0.1:0` included). A reload keeps the socket of every
//! address still named — it never stops accepting — and swaps only the
//! settings its next connections get (frontend, mode, TLS certificates,
//! timeouts); it binds the addresses that are new and drains those that
//! are gone ([`super::drain`]). Binding happens before the new
//! configuration is swapped in, so an address that cannot be bound
//! refuses the whole reload and nothing changes.
//!
//! At start, sockets handed over by a running process (`-x`, see
//! [`super::handover`]) are used for the addresses they were bound for;
//! the rest are bound afresh and the unused ones closed. A soft stop
//! (`SIGUSR1`) stops every accept loop and drains every connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::drain::Drain;
use super::handover::{BindKey, Described, Handed, Kind};
use super::{bind_tcp, Listener};
use crate::config::{Config, Mode};
use crate::gateway::{Shared, Snapshot};

/// Every listening socket of the process; see the module doc.
pub struct Listeners {
    shared: Arc<Shared>,
    global_slots: Arc<Semaphore>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    frontends: Vec<Running>,
    stats: Option<Running>,
    /// Listeners removed or stopped whose connections have not all ended.
    draining: Vec<Arc<Drain>>,
    /// Sockets from the previous process not yet claimed by a bind.
    inherited: Vec<Handed>,
    /// Each frontend's `maxconn` semaphore, kept while its limit stays.
    frontend_slots: HashMap<String, (u32, Arc<Semaphore>)>,
    stopped: bool,
}

/// One listening socket and its accept loop.
struct Running {
    key: BindKey,
    local: SocketAddr,
    socket: Arc<TcpListener>,
    /// What the next accepted connection gets (frontends only).
    settings: Option<Arc<ArcSwap<Listener>>>,
    /// How it was announced, to say when it changes.
    label: String,
    accept: AbortHandle,
    drain: Arc<Drain>,
}

impl Running {
    /// Stops accepting (the socket closes unless the next process holds
    /// it too) and asks the connections to finish.
    fn stop(self) -> Arc<Drain> {
        self.accept.abort();
        self.drain.start();
        self.drain
    }
}

/// A reload's listeners, bound and built but not yet in service.
pub struct Prepared {
    frontends: Vec<PreparedFrontend>,
    stats: Option<PreparedSocket>,
    /// Where the stats listener goes away.
    stats_removed: bool,
    frontend_slots: HashMap<String, (u32, Arc<Semaphore>)>,
    /// The configuration in force when this was prepared: the last one
    /// with the frontends the new one removes.
    previous: Arc<Snapshot>,
}

struct PreparedFrontend {
    key: BindKey,
    settings: Listener,
    label: String,
    /// `None`: the address is already served; its settings are swapped.
    socket: Option<PreparedSocket>,
}

struct PreparedSocket {
    key: BindKey,
    socket: TcpListener,
    local: SocketAddr,
}

fn scheme(mode: Mode, tls: bool) -> &'static str {
    match (mode, tls) {
        (Mode::Tcp, false) => "tcp",
        (Mode::Tcp, true) => "tcp+tls",
        (Mode::Http, true) => "https",
        (Mode::Http, false) => "http",
    }
}

impl Listeners {
    pub fn new(shared: Arc<Shared>, global_slots: Arc<Semaphore>, inherited: Vec<Handed>) -> Self {
        Listeners {
            shared,
            global_slots,
            inner: Mutex::new(Inner {
                inherited,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the listener settings of `cfg` and binds its new addresses.
    /// Nothing is in service yet: dropping the result closes what it bound.
    pub fn prepare(&self, cfg: &Config) -> Result<Prepared, String> {
        let mut inner = self.lock();
        if inner.stopped {
            return Err("the process is stopping".into());
        }
        let mut frontend_slots = HashMap::new();
        let mut frontends = Vec::new();
        for fe in &cfg.frontends {
            let slots = (fe.maxconn > 0).then(|| {
                let (_, s) = inner
                    .frontend_slots
                    .get(&fe.name)
                    .filter(|(n, _)| *n == fe.maxconn)
                    .cloned()
                    .unwrap_or_else(|| (fe.maxconn, Arc::new(Semaphore::new(fe.maxconn as usize))));
                frontend_slots.insert(fe.name.clone(), (fe.maxconn, s.clone()));
                s
            });
            let mut nth: HashMap<SocketAddr, usize> = HashMap::new();
            for bind in &fe.binds {
                let n = nth.entry(bind.addr).or_default();
                let key = BindKey::of(bind.addr, &fe.name, *n);
                *n += 1;
                if frontends.iter().any(|p: &PreparedFrontend| p.key == key) {
                    return Err(format!(
                        "frontend '{}': {} is bound twice",
                        fe.name, bind.addr
                    ));
                }
                let settings = Listener::new(
                    &fe.name,
                    fe.mode,
                    bind,
                    fe.timeouts.clone(),
                    slots.clone(),
                    self.global_slots.clone(),
                    self.shared.clone(),
                )
                .map_err(|e| format!("frontend '{}': {e}", fe.name))?;
                let served = inner.frontends.iter().any(|r| r.key == key);
                let socket = if served {
                    None
                } else {
                    Some(
                        inner
                            .claim(Kind::Frontend, &key)
                            .map_err(|e| format!("frontend '{}': {e}", fe.name))?,
                    )
                };
                frontends.push(PreparedFrontend {
                    key,
                    label: format!(
                        "frontend '{}' listening on {}",
                        fe.name,
                        scheme(fe.mode, bind.tls.is_some())
                    ),
                    settings,
                    socket,
                });
            }
        }
        let stats = match cfg.global.stats {
            Some(addr) if inner.stats.as_ref().is_some_and(|r| r.key.addr == addr) => None,
            Some(addr) => Some(
                inner
                    .claim(Kind::Stats, &BindKey::plain(addr))
                    .map_err(|e| format!("stats listener: {e}"))?,
            ),
            None => None,
        };
        Ok(Prepared {
            frontends,
            stats_removed: cfg.global.stats.is_none() && inner.stats.is_some() || stats.is_some(),
            stats,
            frontend_slots,
            previous: self.shared.current.load_full(),
        })
    }

    /// Puts `p` in service: new sockets start accepting, kept ones take
    /// their new settings, removed ones drain. Returns what changed, one
    /// line each (printed, as at start).
    pub fn commit(&self, p: Prepared) -> Vec<String> {
        let mut inner = self.lock();
        let mut lines = Vec::new();
        let mut kept = Vec::new();
        for pf in p.frontends {
            let settings = Arc::new(pf.settings);
            match pf.socket {
                None => {
                    let Some(i) = inner.frontends.iter().position(|r| r.key == pf.key) else {
                        continue;
                    };
                    let mut r = inner.frontends.swap_remove(i);
                    if let Some(s) = &r.settings {
                        s.store(settings);
                    }
                    if r.label != pf.label {
                        lines.push(format!("{}://{}", pf.label, r.local));
                        r.label = pf.label;
                    }
                    kept.push(r);
                }
                Some(sock) => {
                    lines.push(format!("{}://{}", pf.label, sock.local));
                    let settings = Arc::new(ArcSwap::new(settings));
                    let socket = Arc::new(sock.socket);
                    let drain = Drain::new();
                    let accept = tokio::spawn(Listener::run(
                        settings.clone(),
                        socket.clone(),
                        drain.clone(),
                    ))
                    .abort_handle();
                    kept.push(Running {
                        key: sock.key,
                        local: sock.local,
                        socket,
                        settings: Some(settings),
                        label: pf.label,
                        accept,
                        drain,
                    });
                }
            }
        }
        let names: Vec<Arc<str>> = kept
            .iter()
            .filter_map(|r| r.settings.as_ref().map(|s| s.load().frontend.clone()))
            .collect();
        for r in std::mem::replace(&mut inner.frontends, kept) {
            if let Some(s) = &r.settings {
                let fe = s.load().frontend.clone();
                if !names.contains(&fe) {
                    r.drain.retire(p.previous.clone());
                }
            }
            lines.push(format!(
                "{}://{} removed: no longer accepting, {} connection(s) finishing",
                r.label,
                r.local,
                r.drain.open()
            ));
            let d = r.stop();
            inner.draining.push(d);
        }
        if p.stats_removed {
            if let Some(r) = inner.stats.take() {
                lines.push(format!("stats listener http://{} removed", r.local));
                let d = r.stop();
                inner.draining.push(d);
            }
        }
        if let Some(sock) = p.stats {
            lines.push(stats_line(sock.local));
            let socket = Arc::new(sock.socket);
            let accept =
                tokio::spawn(crate::stats::run(socket.clone(), self.shared.clone())).abort_handle();
            inner.stats = Some(Running {
                key: sock.key,
                local: sock.local,
                socket,
                settings: None,
                label: String::new(),
                accept,
                drain: Drain::new(),
            });
        }
        inner.frontend_slots = p.frontend_slots;
        // What the previous process handed over and no bind claimed.
        inner.inherited.clear();
        inner.draining.retain(|d| d.open() > 0);
        lines
    }

    /// One line per listener in service, as printed at start.
    pub fn describe(&self) -> Vec<String> {
        let inner = self.lock();
        let mut lines: Vec<String> = inner
            .frontends
            .iter()
            .map(|r| format!("{}://{}", r.label, r.local))
            .collect();
        lines.extend(inner.stats.as_ref().map(|r| stats_line(r.local)));
        lines
    }

    /// Frontend binds and the stats listener in service.
    pub fn count(&self) -> usize {
        let inner = self.lock();
        inner.frontends.len() + usize::from(inner.stats.is_some())
    }

    /// Copies of every listening socket, described, for `_getsocks`.
    pub fn handover(&self) -> std::io::Result<Vec<(Described, OwnedFd)>> {
        let inner = self.lock();
        let stats = inner.stats.iter().map(|r| (Kind::Stats, r));
        let fes = inner.frontends.iter().map(|r| (Kind::Frontend, r));
        fes.chain(stats)
            .map(|(kind, r)| {
                let fd = r.socket.as_fd().try_clone_to_owned()?;
                Ok((
                    Described {
                        kind,
                        key: r.key.clone(),
                        local: r.local,
                    },
                    fd,
                ))
            })
            .collect()
    }

    /// Soft stop: every listener stops accepting and its connections are
    /// asked to finish. Resolves when they all have.
    pub async fn stop_and_drain(&self) {
        let drains = {
            let mut inner = self.lock();
            inner.stopped = true;
            let mut drains: Vec<Arc<Drain>> = std::mem::take(&mut inner.draining);
            for r in std::mem::take(&mut inner.frontends) {
                drains.push(r.stop());
            }
            if let Some(r) = inner.stats.take() {
                r.stop();
            }
            drains
        };
        for d in drains {
            d.finished().await;
        }
    }

    /// Connections still open on every listener, draining or not.
    pub fn open_connections(&self) -> usize {
        let inner = self.lock();
        inner
            .frontends
            .iter()
            .map(|r| r.drain.open())
            .sum::<usize>()
            + inner.draining.iter().map(|d| d.open()).sum::<usize>()
    }
}

impl Inner {
    /// A listening socket for `addr`: the one the previous process handed
    /// over for it, else a new one.
    fn claim(&mut self, kind: Kind, key: &BindKey) -> Result<PreparedSocket, String> {
        let addr = key.addr;
        let handed = self
            .inherited
            .iter()
            .position(|h| h.what.kind == kind && h.what.key == *key)
            .or_else(|| {
                // An address the previous process had bound with port 0
                // and this configuration names with the port it got.
                self.inherited
                    .iter()
                    .position(|h| h.what.kind == kind && addr.port() != 0 && h.what.local == addr)
            });
        let socket = match handed {
            Some(i) => {
                let h = self.inherited.swap_remove(i);
                let std = std::net::TcpListener::from(h.fd);
                std.set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(std))
                    .map_err(|e| format!("the socket handed over for {addr}: {e}"))?
            }
            None => bind_tcp(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?,
        };
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        Ok(PreparedSocket {
            key: key.clone(),
            socket,
            local,
        })
    }
}

fn stats_line(local: SocketAddr) -> String {
    format!("stats listening on http://{local} (/stats, /stats.json, /metrics, /healthz)")
}
