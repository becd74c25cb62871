//! The stats listener: its own address, apart from client traffic.
//!
//! For now it answers `/healthz` (liveness) and `/stats.json`: every
//! frontend's connection counts (open, accepted, denied by `tcp-request
//! connection reject`), every server's admin state, weights, request counts and health — status
//! (`UP`, `DOWN`, and HAProxy's `UP 2/3` / `DOWN 1/2` while changing),
//! check status (`L4OK`, `L7STS`, …), last check code and duration,
//! seconds since the last change, failure counters, 429 cooldown left and
//! the backup flag; and `/metrics`, the traffic counters in Prometheus's
//! format (`prometheus.rs`). The runtime API has its own unix socket
//! (`crate::admin`).

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

mod prometheus;

use crate::gateway::Shared;
use crate::http::body::RespBody;
use crate::http::error::error_response;

pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<RespBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Use GET.",
        );
    }
    match req.uri().path() {
        "/healthz" => text("ok\n", "text/plain"),
        "/stats.json" => text(stats_json(shared), "application/json"),
        "/metrics" => text(
            prometheus::render(shared),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "Try /healthz, /metrics or /stats.json.",
        ),
    }
}

fn text(body: impl Into<bytes::Bytes>, ctype: &'static str) -> Response<RespBody> {
    let mut r = Response::new(RespBody::full(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn stats_json(shared: &Shared) -> String {
    let snap = shared.current.load();
    let backends: Vec<_> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .map(|(b, rt)| {
            let servers: Vec<_> = (0..b.servers.len())
                .map(|i| {
                    let s = rt.balancer.server(i);
                    let h = s.health_view();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    serde_json::json!({
                        "name": s.name,
                        "status": if h.up { "UP" } else { "DOWN" },
                        "status_detail": h.status,
                        "admin": s.admin().as_str(),
                        "weight": s.weight(),
                        "effective_weight": h.effective_weight,
                        "backup": h.backup,
                        "active": s.active(),
                        "total": s.total(),
                        "checked": h.checked,
                        "check_status": h.check_status,
                        "check_code": h.last_code,
                        "check_duration_ms": h.check_duration.as_secs_f64() * 1000.0,
                        "last_change_s": now.saturating_sub(h.last_change_unix_ms) / 1000,
                        "consecutive_failures": h.consecutive_failures,
                        "checks_passed": h.checks_passed,
                        "checks_failed": h.checks_failed,
                        "down_transitions": h.down_transitions,
                        "consecutive_errors": h.consecutive_errors,
                        "cooldown_ms": h.cooldown_remaining.as_millis() as u64,
                        "retries": s.retries(),
                        "redispatches": s.redispatches(),
                        "truncated": s.truncated(),
                    })
                })
                .collect();
            let sum = |f: fn(&crate::runtime::ServerState) -> u64| -> u64 {
                rt.balancer.servers().iter().map(|s| f(s)).sum()
            };
            serde_json::json!({
                "name": b.name,
                "balance": format!("{:?}", b.balance),
                "retries": sum(crate::runtime::ServerState::retries),
                "redispatches": sum(crate::runtime::ServerState::redispatches),
                "truncated": sum(crate::runtime::ServerState::truncated),
                "fallback": {
                    "handed_on": rt.fallbacks.handed_on.load(Relaxed),
                    "taken_over": rt.fallbacks.taken_over.load(Relaxed),
                },
                "queue": {
                    "current": rt.queue.current.load(Relaxed),
                    "max": rt.queue.max.load(Relaxed),
                    "total": rt.queue.total.load(Relaxed),
                    "timeouts": rt.queue.timeouts.load(Relaxed),
                    "full": rt.queue.full.load(Relaxed),
                    "wait_ms_total": rt.queue.wait_us.load(Relaxed) / 1000,
                    "limit": rt.queue_limit,
                    "timeout_ms": rt.queue_timeout.as_millis() as u64,
                },
                "servers": servers,
            })
        })
        .collect();
    // Stick tables: their shape and how full they are (entries themselves
    // are for the runtime API's `show table`).
    let tables: Vec<_> = snap
        .config
        .stick_tables
        .iter()
        .zip(&snap.tables)
        .map(|(def, t)| {
            serde_json::json!({
                "name": def.name,
                "type": def.key_type,
                "size": def.size,
                "expire_ms": def.expire.map(|d| d.as_millis() as u64),
                "store": def.store,
                "used": t.len(),
            })
        })
        .collect();
    // Frontends: connections open, accepted and denied at accept time by
    // `tcp-request connection reject` (HAProxy's scur, stot and dcon).
    let frontends: Vec<_> = snap
        .config
        .frontends
        .iter()
        .map(|f| {
            let c = shared.runtime.metrics.frontend(&f.name);
            serde_json::json!({
                "name": f.name,
                "mode": f.mode.as_str(),
                "conn_cur": c.cur.load(Relaxed),
                "conn_max": c.max.load(Relaxed),
                "conn_tot": c.total.load(Relaxed),
                "denied_conn": c.denied_conn.load(Relaxed),
                "requests": c.requests.load(Relaxed),
                "denied_req": c.denied.load(Relaxed),
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "frontends": frontends,
        "backends": backends,
        "tables": tables,
    })
    .to_string()
}
