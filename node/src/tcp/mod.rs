//! Layer-4 proxying: HAProxy's `mode tcp`.
//!
//! A `mode tcp` frontend forwards bytes instead of HTTP requests. The
//! listener (`listen/mod.rs`) accepts exactly as for HTTP — maxconn permits
//! before `accept()`, `tcp-request connection` rules right after it, then
//! the PROXY header and (if the bind has `ssl`) the TLS handshake — and
//! hands the stream to [`serve`], which:
//!
//! 1. when a rule looks at the client's first bytes (`req.ssl_sni`,
//!    `req.ssl_hello_type`), reads them for at most `tcp-request
//!    inspect-delay`, until the first TLS record is complete or cannot be
//!    one ([`clienthello`]);
//! 2. runs `tcp-request content accept|reject` rules (first match decides;
//!    reject closes; `scN_*` fetches read what the listener's `tcp-request
//!    connection` rules tracked);
//! 3. picks the backend (`use_backend`, else `default_backend`; none
//!    closes) and a server with the backend's [`Balancer`](crate::balance);
//! 4. connects within `timeout connect`, replays the bytes read in step 1,
//!    and copies both ways until either side closes or nothing moves for
//!    `timeout tunnel` (when set) or else the shorter of `timeout client`
//!    and `timeout server`.
//!
//! TLS is passed through untouched: the upstream terminates it. See
//! `LIFECYCLE.md` next to this file.

pub mod clienthello;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balance::PickCtx;
use crate::config::{Condition, Expr, Frontend, IntFetch};
use crate::gateway::Shared;
use crate::http::conn::{Activity, Tracked};
use crate::runtime::Outcome;
use clienthello::Hello;

/// What `mode tcp` conditions look at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client's address (after PROXY protocol).
    pub src: IpAddr,
    /// `req.ssl_sni`.
    pub sni: Option<&'a str>,
    /// `req.ssl_hello_type`.
    pub hello_type: Option<u8>,
    /// The entries the connection tracks (`tcp-request connection
    /// track-scN`), for the `scN_*` fetches.
    pub tracked: Option<&'a crate::stick::Tracked>,
}

fn holds(c: &Condition, f: &Facts) -> bool {
    match c {
        Condition::Src(nets) => nets.iter().any(|n| n.contains(f.src)),
        Condition::Sni(m) => f.sni.is_some_and(|s| m.matches(s)),
        Condition::Int(IntFetch::SslHelloType, op, n) => {
            f.hello_type.is_some_and(|t| op.holds(i64::from(t), *n))
        }
        // An absent fetch (nothing tracked, data not stored) never matches.
        Condition::Int(IntFetch::StickCounter { sc, data }, op, n) => f
            .tracked
            .and_then(|t| t.get(*sc, *data))
            .is_some_and(|v| op.holds(v, *n)),
        // HTTP fetches are refused in mode tcp by the config readers.
        _ => false,
    }
}

/// Evaluates a condition on a `mode tcp` connection.
pub fn eval(e: &Expr, f: &Facts) -> bool {
    match e {
        Expr::Test(c) => holds(c, f),
        Expr::Not(e) => !eval(e, f),
        Expr::All(v) => v.iter().all(|e| eval(e, f)),
        Expr::Any(v) => v.iter().any(|e| eval(e, f)),
    }
}

/// `tcp-request content` rules: does the connection go on?
pub fn accepted(fe: &Frontend, f: &Facts) -> bool {
    fe.tcp_request
        .content
        .iter()
        .find(|r| r.cond.as_ref().is_none_or(|c| eval(c, f)))
        .is_none_or(|r| r.accept)
}

/// The backend for the connection, if any.
pub fn select(fe: &Frontend, f: &Facts) -> Option<usize> {
    fe.routes
        .iter()
        .find(|r| eval(&r.cond, f))
        .map(|r| r.backend)
        .or(fe.default_backend)
}

/// Reads the client's first bytes until they are a complete TLS record, or
/// cannot be one, or `deadline` passes, or the client stops sending.
async fn inspect<S: AsyncRead + Unpin>(client: &mut S, deadline: Instant) -> (Vec<u8>, Hello) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match clienthello::parse(&buf) {
            Hello::Incomplete => {}
            done => return (buf, done),
        }
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (buf, Hello::Incomplete),
        }
    }
}

/// Serves one accepted `mode tcp` connection of `frontend`; `tracked` are
/// the entries its `tcp-request connection` rules track, held until it ends.
pub async fn serve<S>(
    mut client: S,
    shared: Arc<Shared>,
    frontend: Arc<str>,
    src: SocketAddr,
    tracked: Option<Arc<crate::stick::Tracked>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let snap = shared.current.load_full();
    let Some(fe) = snap.frontend(&frontend) else {
        return;
    };
    let (peeked, hello) = if fe.needs_content() && !fe.tcp_request.inspect_delay.is_zero() {
        inspect(&mut client, Instant::now() + fe.tcp_request.inspect_delay).await
    } else {
        (Vec::new(), Hello::Incomplete)
    };
    let (hello_type, sni) = match &hello {
        Hello::Handshake { hello_type, sni } => (Some(*hello_type), sni.as_deref()),
        _ => (None, None),
    };
    let facts = Facts {
        src: src.ip(),
        sni,
        hello_type,
        tracked: tracked.as_deref(),
    };
    if !accepted(fe, &facts) {
        tracing::debug!(%src, frontend = %fe.name, "tcp-request content reject");
        return;
    }
    let Some(bi) = select(fe, &facts) else {
        tracing::debug!(%src, frontend = %fe.name, "no backend: closing");
        return;
    };
    let (Some(backend), Some(rt)) = (snap.config.backends.get(bi), snap.backends.get(bi)) else {
        return;
    };
    let headers = http::HeaderMap::new();
    let ctx = PickCtx {
        src: src.ip(),
        path: "",
        headers: &headers,
    };
    let Some(si) = rt.balancer.pick(&ctx, &[]) else {
        tracing::debug!(%src, backend = %backend.name, "no server available: closing");
        return;
    };
    let (Some(state), Some(upstream)) = (rt.balancer.get(si), rt.upstreams.get(si)) else {
        return;
    };
    let _active = state.begin();
    let addr = upstream.authority.as_str().to_owned();
    let mut server =
        match tokio::time::timeout(backend.timeouts.connect, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => {
                state.observe(Outcome::Ok);
                s
            }
            Ok(Err(e)) => {
                tracing::debug!(%src, server = %addr, error = %e, "connect failed: closing");
                state.observe(Outcome::ConnectFailed);
                return;
            }
            Err(_) => {
                tracing::debug!(%src, server = %addr, "timeout connect: closing");
                state.observe(Outcome::ConnectFailed);
                return;
            }
        };
    let _ = server.set_nodelay(true);
    if !peeked.is_empty() && server.write_all(&peeked).await.is_err() {
        return;
    }
    let idle = idle_timeout(fe, backend);
    let activity = Arc::new(Activity::new());
    let mut client = Tracked::new(client, activity.clone());
    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
    tokio::pin!(copy);
    let mut wake = Box::pin(tokio::time::sleep(idle));
    loop {
        tokio::select! {
            _ = &mut copy => break,
            _ = &mut wake => {
                let quiet = activity.idle_for();
                if quiet >= idle {
                    tracing::debug!(%src, "tcp connection closed after {idle:?} of inactivity");
                    break;
                }
                wake.as_mut().reset(Instant::now() + (idle - quiet));
            }
        }
    }
}

/// Inactivity allowed once connected: `timeout tunnel` when the backend
/// sets it (as HAProxy), else the shorter of client and server.
fn idle_timeout(fe: &Frontend, be: &crate::config::Backend) -> Duration {
    if be.timeouts.tunnel_set {
        be.timeouts.tunnel
    } else {
        fe.timeouts.client.min(be.timeouts.server)
    }
}

#[cfg(test)]
mod tests;
