//! `/stats.json`: every frontend, backend and server with its state and
//! traffic, the document the stats page polls (and tests read).
//!
//! Per frontend: connections open, accepted and denied at accept time
//! (`tcp-request connection reject`), and its traffic. Per server: admin
//! state, weights, request counts and health — status (`UP`, `DOWN`, and
//! HAProxy's `UP 2/3` / `DOWN 1/2` while changing), check status (`L4OK`,
//! `L7STS`, …), last check code and duration, seconds since the last
//! change, failure counters, 429 cooldown left, the backup flag — plus the
//! one-word `state` and its colour `class` the page shows. Traffic
//! (`traffic`) everywhere: sessions, requests, responses by status class,
//! bytes, denials, errors, and mean/p50/p95 of the queue, connect,
//! response, time-to-first-token and total times from the histograms.
//! Per backend, LLM traffic by model (`models`: requests, tokens, TTFT).
//! Rates are left to the reader (the page computes them from deltas
//! between two polls).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::LazyLock;
use std::time::Instant;

use serde_json::{json, Value};

use crate::gateway::Shared;
use crate::metrics::{Histogram, LlmStats, ProxyStats, STATUS_CLASSES};
use crate::runtime::{AdminState, ServerState};

/// When the stats listener started (touched at its start, so close to
/// the process's).
pub static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

fn times(h: &Histogram) -> Value {
    let round = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
    json!({
        "count": h.count(),
        "mean": h.mean_ms(),
        "p50": round(h.quantile_ms(0.5)),
        "p95": round(h.quantile_ms(0.95)),
    })
}

/// What a frontend, backend or server carried.
fn traffic(p: &ProxyStats) -> Value {
    let responses: serde_json::Map<String, Value> = STATUS_CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| ((*c).to_owned(), p.responses(i).into()))
        .collect();
    json!({
        "sessions": {
            "cur": p.cur.load(Relaxed),
            "max": p.max.load(Relaxed),
            "total": p.total.load(Relaxed),
        },
        "requests": p.requests.load(Relaxed),
        "responses": responses,
        "bytes_in": p.bytes_in.load(Relaxed),
        "bytes_out": p.bytes_out.load(Relaxed),
        "denied": p.denied.load(Relaxed),
        "req_errors": p.req_errors.load(Relaxed),
        "conn_errors": p.conn_errors.load(Relaxed),
        "resp_errors": p.resp_errors.load(Relaxed),
        "upstream_429": p.upstream_429.load(Relaxed),
        "times_ms": {
            "queue": times(&p.queue_time),
            "connect": times(&p.connect_time),
            "response": times(&p.response_time),
            "ttft": times(&p.ttft),
            "total": times(&p.total_time),
        },
    })
}

/// A server's traffic: its sessions (requests) are its live counters.
fn server_traffic(s: &ServerState) -> Value {
    let mut t = traffic(&s.stats);
    t["sessions"]["cur"] = s.active().into();
    t["sessions"]["total"] = s.total().into();
    t
}

fn model(name: &str, m: &LlmStats) -> Value {
    json!({
        "name": name,
        "requests": m.requests.load(Relaxed),
        "tokens_in": m.tokens_in.load(Relaxed),
        "tokens_out": m.tokens_out.load(Relaxed),
        "ttft_ms": times(&m.ttft),
        "total_ms": times(&m.total_time),
    })
}

/// A server's one-word state as the page shows it, and the colour class
/// that goes with it (HAProxy's legend). Maintenance shows over
/// everything; a server down shows as down even when draining; an up one
/// that takes no new traffic (drain, or weight 0) shows as draining.
pub fn server_state(
    admin: AdminState,
    weight: u32,
    up: bool,
    status: &str,
    backup: bool,
) -> (String, &'static str) {
    if admin == AdminState::Maint {
        return ("MAINT".into(), "maint");
    }
    if !up {
        let class = if status.starts_with("DOWN ") {
            "going-up"
        } else {
            "down"
        };
        return (status.to_owned(), class);
    }
    if admin == AdminState::Drain || weight == 0 {
        return ("DRAIN".into(), "drain");
    }
    let class = match status {
        s if s.starts_with("UP ") => "going-down",
        "no check" => "nocheck",
        _ if backup => "backup-up",
        _ => "up",
    };
    (status.to_owned(), class)
}

fn server(s: &ServerState, now_ms: u64) -> Value {
    let h = s.health_view();
    let (state, class) = server_state(s.admin(), s.weight(), h.up, &h.status, h.backup);
    json!({
        "name": s.name,
        "state": state,
        "class": class,
        "status": if h.up { "UP" } else { "DOWN" },
        "status_detail": h.status,
        "admin": s.admin().as_str(),
        "weight": s.weight(),
        "effective_weight": h.effective_weight,
        "backup": h.backup,
        "active": s.active(),
        "total": s.total(),
        "maxconn": s.maxconn(),
        "queued": s.queued(),
        "checked": h.checked,
        "check_status": h.check_status,
        "check_code": h.last_code,
        "check_duration_ms": h.check_duration.as_secs_f64() * 1000.0,
        "last_change_s": now_ms.saturating_sub(h.last_change_unix_ms) / 1000,
        "consecutive_failures": h.consecutive_failures,
        "checks_passed": h.checks_passed,
        "checks_failed": h.checks_failed,
        "down_transitions": h.down_transitions,
        "consecutive_errors": h.consecutive_errors,
        "cooldown_ms": h.cooldown_remaining.as_millis() as u64,
        "retries": s.retries(),
        "redispatches": s.redispatches(),
        "truncated": s.truncated(),
        "traffic": server_traffic(s),
    })
}

/// The whole document.
pub fn document(shared: &Shared) -> Value {
    let snap = shared.current.load();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let backends: Vec<_> = snap
        .config
        .backends
        .iter()
        .zip(&snap.backends)
        .map(|(b, rt)| {
            let all = rt.balancer.servers();
            let servers: Vec<_> = all.iter().map(|s| server(s, now_ms)).collect();
            let sum = |f: fn(&ServerState) -> u64| -> u64 { all.iter().map(|s| f(s)).sum() };
            // HAProxy's backend row: UP while any server can serve, its
            // weight the sum of the usable servers', act/bck how many
            // active and backup servers are usable.
            let usable: Vec<_> = all.iter().filter(|s| s.is_usable()).collect();
            let up = all
                .iter()
                .any(|s| s.is_up() && s.admin() != AdminState::Maint);
            let models: Vec<_> = rt
                .stats
                .models()
                .iter()
                .map(|(m, st)| model(m, st))
                .collect();
            let last_change = all
                .iter()
                .map(|s| now_ms.saturating_sub(s.health_view().last_change_unix_ms) / 1000)
                .min();
            json!({
                "name": b.name,
                "balance": format!("{:?}", b.balance),
                "status": if up { "UP" } else { "DOWN" },
                "class": if up { "up" } else { "down" },
                "weight": usable.iter().map(|s| u64::from(s.effective_weight())).sum::<u64>(),
                "act": usable.iter().filter(|s| !s.is_backup()).count(),
                "bck": usable.iter().filter(|s| s.is_backup()).count(),
                "last_change_s": last_change,
                "retries": sum(ServerState::retries),
                "redispatches": sum(ServerState::redispatches),
                "truncated": sum(ServerState::truncated),
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
                "traffic": traffic(&rt.stats.proxy),
                "models": models,
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
            json!({
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
        .zip(&snap.frontend_stats)
        .map(|(f, c)| {
            json!({
                "name": f.name,
                "mode": f.mode.as_str(),
                "status": "OPEN",
                "class": "up",
                "maxconn": f.maxconn,
                "conn_cur": c.cur.load(Relaxed),
                "conn_max": c.max.load(Relaxed),
                "conn_tot": c.total.load(Relaxed),
                "denied_conn": c.denied_conn.load(Relaxed),
                "requests": c.requests.load(Relaxed),
                "denied_req": c.denied.load(Relaxed),
                "traffic": traffic(c),
            })
        })
        .collect();
    let access = &snap.config.global.stats_access;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": STARTED.elapsed().as_secs(),
        "now_ms": now_ms,
        "refresh_ms": access.refresh.as_millis() as u64,
        // What the page offers: a login when users exist, admin controls
        // when they may act.
        "auth": {
            "users": !access.users.is_empty(),
            "read_auth": !access.users.is_empty() && access.read_auth,
            "admin": !access.users.is_empty() && access.admin,
        },
        "frontends": frontends,
        "backends": backends,
        "tables": tables,
        "logs": {
            "enabled": snap.logger.is_some(),
            "dropped": shared.runtime.metrics.logs_dropped.load(Relaxed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_colours() {
        use AdminState::*;
        let cases = [
            (Ready, 1, true, "UP", false, "UP", "up"),
            (Ready, 1, true, "UP", true, "UP", "backup-up"),
            (Ready, 1, true, "UP 1/3", false, "UP 1/3", "going-down"),
            (Ready, 1, false, "DOWN 1/2", false, "DOWN 1/2", "going-up"),
            (Ready, 1, false, "DOWN", false, "DOWN", "down"),
            (Ready, 1, true, "no check", false, "no check", "nocheck"),
            (Drain, 1, true, "UP", false, "DRAIN", "drain"),
            (Ready, 0, true, "no check", false, "DRAIN", "drain"),
            (Drain, 1, false, "DOWN", false, "DOWN", "down"),
            (Maint, 1, false, "DOWN", false, "MAINT", "maint"),
        ];
        for (admin, w, up, status, backup, state, class) in cases {
            assert_eq!(
                server_state(admin, w, up, status, backup),
                (state.to_owned(), class),
                "{admin:?} {w} {status}"
            );
        }
    }
}
