//! Listening sockets and accepting connections.
//!
//! Connection limits are enforced *before* `accept()`: a listener takes a
//! permit from its frontend's and from the global `maxconn` semaphore first,
//! so over the limit new connections wait in the kernel's backlog (as with
//! HAProxy) instead of being accepted and dropped. Each accepted
//! connection moves to the serving thread with the fewest connections
//! ([`crate::threads`]) and lives there. Before a byte is read, the
//! frontend's `tcp-request connection` rules run: they track the client's
//! address in stick tables for the connection's lifetime (a per-source
//! `conn_cur`, `conn_rate`, …) and may reject it, which closes it at once
//! with a reset and no response, as HAProxy does. Then the connection's
//! task reads the PROXY header (if the bind asks for it) and completes the
//! TLS handshake, both within `timeout handshake`, then hands the stream to
//! the HTTP layer, or for a `mode tcp` frontend to the layer-4 proxy
//! ([`crate::tcp`]); both see the entries the connection tracks.

pub mod drain;
pub mod handover;
pub mod proxy_protocol;
pub mod set;
pub mod tls;

pub use set::Listeners;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use arc_swap::ArcSwap;

use self::drain::Drain;
use crate::config::{Bind, ConnAction, Mode, Timeouts};
use crate::gateway::Shared;
use crate::http::conn::{serve, ConnInfo};
use crate::metrics::{ProxyStats, SessionGuard};
use crate::stick::{Key, Tracked};

/// Binds a listening TCP socket. IPv6 sockets are v6-only so `[::]:P` and
/// `0.0.0.0:P` can be bound side by side, as HAProxy's `:::P` and `*:P`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Everything a listener needs, shared (one `Arc`) by its connection tasks.
pub struct Listener {
    pub frontend: Arc<str>,
    pub mode: Mode,
    pub accept_proxy: bool,
    pub tls: Option<TlsAcceptor>,
    pub timeouts: Timeouts,
    pub frontend_slots: Option<Arc<Semaphore>>,
    pub global_slots: Arc<Semaphore>,
    pub shared: Arc<Shared>,
    /// The frontend's counters (shared by its binds, kept across reloads):
    /// each connection is a session on it.
    pub stats: Arc<ProxyStats>,
}

/// What the `tcp-request connection` rules decided.
enum Verdict {
    Reject,
    /// Go on, with the entries the connection tracks (if any).
    Accept(Option<Arc<Tracked>>),
}

impl Listener {
    pub fn new(
        frontend: &str,
        mode: Mode,
        bind: &Bind,
        timeouts: Timeouts,
        frontend_slots: Option<Arc<Semaphore>>,
        global_slots: Arc<Semaphore>,
        shared: Arc<Shared>,
    ) -> Result<Self, String> {
        let tls = match &bind.tls {
            Some(t) => Some(TlsAcceptor::from(tls::server_config(t)?)),
            None => None,
        };
        Ok(Listener {
            frontend: frontend.into(),
            mode,
            accept_proxy: bind.accept_proxy,
            tls,
            timeouts,
            frontend_slots,
            global_slots,
            stats: shared.runtime.metrics.frontend(frontend),
            shared,
        })
    }

    /// Accepts connections on `socket` until aborted (a reload removing
    /// the address, a soft stop); each connection gets the settings in
    /// force when it was accepted, and holds on `drain` for its life.
    pub async fn run(
        settings: Arc<ArcSwap<Listener>>,
        socket: Arc<TcpListener>,
        drain: Arc<Drain>,
    ) {
        loop {
            let slots = settings.load_full();
            // Slots first: over the limit, connections wait in the backlog.
            let fe_permit = match &slots.frontend_slots {
                Some(s) => match s.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                None => None,
            };
            let Ok(global_permit) = slots.global_slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match socket.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            // The settings in force now, not those of when the wait for
            // this connection began: a reload may have come in between.
            let this = settings.load_full();
            // Rejected connections count too (HAProxy's `stot`).
            let session = SessionGuard::open(&this.stats);
            let held = drain.hold();
            crate::threads::dispatch(stream, move |stream, place| async move {
                this.connection(stream, peer, held.drain_arc()).await;
                drop(place);
                drop(held);
                drop(session);
                drop(fe_permit);
                drop(global_permit);
            });
        }
    }

    /// Runs the frontend's `tcp-request connection` rules for a connection
    /// from `src`, in order: tracking goes on to the next rule, `accept` and
    /// `reject` end the evaluation.
    fn connection_rules(&self, src: IpAddr) -> Verdict {
        let snap = self.shared.current.load();
        let Some(fe) = snap.frontend(&self.frontend) else {
            return Verdict::Accept(None);
        };
        let rules = &fe.tcp_request.connection;
        if rules.is_empty() {
            return Verdict::Accept(None);
        }
        let mut tracked = Tracked::default();
        for r in rules {
            if let Some(c) = &r.cond {
                let facts = crate::tcp::Facts {
                    src,
                    sni: None,
                    hello_type: None,
                    tracked: Some(&tracked),
                };
                if !crate::tcp::eval(c, &facts) {
                    continue;
                }
            }
            match &r.action {
                ConnAction::Accept => break,
                // Dropping `tracked` takes back the conn_cur it added; the
                // connection still counts in conn_cnt and conn_rate.
                ConnAction::Reject => return Verdict::Reject,
                ConnAction::TrackSc { sc, table } => {
                    let Some(t) = snap.table(table) else { continue };
                    if let Some(k) = Key::src(src, &t.key_type) {
                        tracked.track_connection(*sc, t, k);
                    }
                }
            }
        }
        tracked.session_accepted();
        Verdict::Accept((!tracked.is_empty()).then(|| Arc::new(tracked)))
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        drain: Arc<Drain>,
    ) {
        let tracked = match self.connection_rules(peer.ip()) {
            Verdict::Accept(t) => t,
            Verdict::Reject => {
                self.stats.denied_conn.fetch_add(1, Relaxed);
                tracing::debug!(%peer, frontend = %self.frontend, "tcp-request connection reject");
                // As HAProxy: no lingering, the close is a single RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let mut client = peer;
        let deadline = tokio::time::Instant::now() + self.timeouts.handshake;
        if self.accept_proxy {
            let header = tokio::time::timeout_at(deadline, proxy_protocol::read(&mut stream));
            match Box::pin(header).await {
                Ok(Ok(proxy_protocol::Header::Proxied { src, .. })) => client = src,
                Ok(Ok(proxy_protocol::Header::Local)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "dropping connection");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "PROXY header timeout");
                    return;
                }
            }
        }
        let info = |tls| ConnInfo {
            frontend: self.frontend.clone(),
            client,
            local,
            tls,
            tracked: tracked.clone(),
            drain: drain.clone(),
        };
        // Only the plain HTTP branch runs inline: every other one is boxed so
        // that its (much larger) state is not part of every connection's
        // task, which matters with thousands of open streams.
        match (&self.tls, self.mode) {
            (None, Mode::Http) => {
                serve(
                    stream,
                    self.shared.clone(),
                    info(false),
                    &self.timeouts,
                    false,
                )
                .await
            }
            (None, Mode::Tcp) => {
                let shared = self.shared.clone();
                Box::pin(crate::tcp::serve(
                    stream,
                    shared,
                    self.frontend.clone(),
                    client,
                    tracked.clone(),
                ))
                .await
            }
            (Some(acceptor), Mode::Tcp) => {
                Box::pin(async {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            crate::tcp::serve(
                                tls,
                                self.shared.clone(),
                                self.frontend.clone(),
                                client,
                                tracked.clone(),
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timeout"),
                    }
                })
                .await
            }
            (Some(acceptor), Mode::Http) => {
                Box::pin(async {
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(tls, self.shared.clone(), info(true), &self.timeouts, h2).await
                        }
                        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%client, "TLS handshake timeout"),
                    }
                })
                .await
            }
        }
    }
}

/// Makes sure the process may open enough file descriptors for the global
/// maxconn (each client connection may hold an upstream one too): raises the
/// soft limit up to the hard one, and if even that is too low, lowers
/// maxconn to what fits — with a warning when the operator asked for more,
/// quietly for the default, as HAProxy derives its own from the limit.
pub fn fit_maxconn(configured: Option<u32>) -> u32 {
    let wanted = configured.unwrap_or(crate::config::DEFAULT_MAXCONN);
    let needed = (wanted as u64) * 2 + 256;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    let target = needed.min(lim.rlim_max);
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                from = lim.rlim_cur,
                to = target,
                "raised the open-file limit"
            );
            lim.rlim_cur = target;
        }
    }
    if lim.rlim_cur >= needed {
        return wanted;
    }
    let capped = (lim.rlim_cur.saturating_sub(256) / 2).max(1) as u32;
    if configured.is_some() {
        tracing::warn!(
            "global maxconn {wanted} needs {needed} open files but the limit is {}: capped maxconn to {capped}",
            lim.rlim_cur
        );
    }
    capped
}
