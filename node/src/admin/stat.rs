//! The read-only answers: `show stat` (HAProxy's CSV), `show info`,
//! `show servers state`, `show backend`, `show table`.
//!
//! Everything is read from the current snapshot and the runtime state's
//! atomics; a stick table is read shard by shard under each shard's short
//! lock. Nothing here waits or changes anything.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::stick::{Column, Data};
use crate::config::{AccessLevel, Backend, Balance, Frontend, ServerAddr};
use crate::gateway::{BackendRt, Snapshot};
use crate::metrics::ProxyStats;
use crate::runtime::{AdminState, HealthView, ServerState};
use crate::stick::{Key, Table};

use super::commands::Context;

/// HAProxy 2.6's `show stat` columns, in its order: the generic fields,
/// `-` (where its per-module counters begin), then the SSL, HTTP/2 and
/// HTTP/1 modules' counters. The e2e tests compare this header with the
/// one the installed HAProxy prints.
#[rustfmt::skip]
pub const STAT_FIELDS: [&str; 128] = [
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot",
    "bin", "bout", "dreq", "dresp", "ereq", "econ", "eresp", "wretr",
    "wredis", "status", "weight", "act", "bck", "chkfail", "chkdown", "lastchg",
    "downtime", "qlimit", "pid", "iid", "sid", "throttle", "lbtot", "tracked",
    "type", "rate", "rate_lim", "rate_max", "check_status", "check_code", "check_duration", "hrsp_1xx",
    "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other", "hanafail", "req_rate", "req_rate_max",
    "req_tot", "cli_abrt", "srv_abrt", "comp_in", "comp_out", "comp_byp", "comp_rsp", "lastsess",
    "last_chk", "last_agt", "qtime", "ctime", "rtime", "ttime", "agent_status", "agent_code",
    "agent_duration", "check_desc", "agent_desc", "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall",
    "agent_health", "addr", "cookie", "mode", "algo", "conn_rate", "conn_rate_max", "conn_tot",
    "intercepted", "dcon", "dses", "wrew", "connect", "reuse", "cache_lookups", "cache_hits",
    "srv_icur", "src_ilim", "qtime_max", "ctime_max", "rtime_max", "ttime_max", "eint", "idle_conn_cur",
    "safe_conn_cur", "used_conn_cur", "need_conn_est", "uweight", "agg_server_status", "agg_server_check_status", "agg_check_status", "-",
    "ssl_sess", "ssl_reused_sess", "ssl_failed_handshake", "h2_headers_rcvd", "h2_data_rcvd", "h2_settings_rcvd", "h2_rst_stream_rcvd", "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors", "h2_detected_strm_protocol_errors", "h2_rst_stream_resp", "h2_goaway_resp", "h2_open_connections", "h2_backend_open_streams", "h2_total_connections", "h2_backend_total_streams",
    "h1_open_connections", "h1_open_streams", "h1_total_connections", "h1_total_streams", "h1_bytes_in", "h1_bytes_out", "h1_spliced_bytes_in", "h1_spliced_bytes_out",
];

/// `show stat`'s first line.
pub fn stat_header() -> String {
    let mut h = String::from("# ");
    for f in STAT_FIELDS {
        h.push_str(f);
        h.push(',');
    }
    h.push('\n');
    h
}

/// One `show stat` line: a value per column, empty where llmgw has none.
struct Row(Vec<String>);

impl Row {
    fn new() -> Row {
        let mut v = vec![String::new(); STAT_FIELDS.len()];
        // HAProxy prints the separator column's name as its value.
        v[field("-")] = "-".into();
        Row(v)
    }

    fn set(&mut self, name: &str, value: impl std::fmt::Display) {
        self.0[field(name)] = value.to_string();
    }

    fn csv(&self, out: &mut String) {
        for v in &self.0 {
            csv_field(out, v);
            out.push(',');
        }
        out.push('\n');
    }
}

/// The column of a field name (a name not in [`STAT_FIELDS`] is a bug,
/// which the unit tests catch by formatting every kind of row).
fn field(name: &str) -> usize {
    STAT_FIELDS
        .iter()
        .position(|f| *f == name)
        .unwrap_or_else(|| panic!("no show stat field {name}"))
}

/// HAProxy's CSV encoding of a text field: quoted (quotes doubled) when it
/// holds a comma or a quote; line breaks become spaces so a row stays one
/// line.
fn csv_field(out: &mut String, v: &str) {
    if !v.contains([',', '"', '\r', '\n']) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A proxy as HAProxy numbers them: a frontend, a backend, or both when
/// they share a name (a `listen` section).
pub(crate) struct Proxy<'a> {
    /// HAProxy's `iid`. Numbering starts at 2: HAProxy's own CLI proxy
    /// takes 1, so a configuration listing frontends before backends gets
    /// the ids HAProxy gives it.
    pub iid: u32,
    pub name: &'a str,
    pub frontend: Option<(&'a Frontend, &'a ProxyStats)>,
    pub backend: Option<(&'a Backend, &'a BackendRt)>,
}

pub(crate) fn proxies(snap: &Snapshot) -> Vec<Proxy<'_>> {
    let mut out: Vec<Proxy<'_>> = Vec::new();
    for (f, st) in snap.config.frontends.iter().zip(&snap.frontend_stats) {
        out.push(Proxy {
            iid: 0,
            name: &f.name,
            frontend: Some((f, st)),
            backend: None,
        });
    }
    for (b, rt) in snap.config.backends.iter().zip(&snap.backends) {
        match out
            .iter_mut()
            .find(|p| p.name == b.name && p.backend.is_none())
        {
            Some(p) => p.backend = Some((b, rt)),
            None => out.push(Proxy {
                iid: 0,
                name: &b.name,
                frontend: None,
                backend: Some((b, rt)),
            }),
        }
    }
    for (i, p) in out.iter_mut().enumerate() {
        p.iid = i as u32 + 2;
    }
    out
}

fn algo(b: &Balance) -> &'static str {
    match b {
        Balance::RoundRobin => "roundrobin",
        Balance::StaticRr => "static-rr",
        Balance::LeastConn => "leastconn",
        Balance::First => "first",
        Balance::Source => "source",
        Balance::Uri => "uri",
        Balance::Hdr(_) => "hdr",
        // HAProxy 2.6 prints "unknown" for random (its name table lacks
        // it); later versions print "random", which is what it is.
        Balance::Random(_) => "random",
    }
}

/// A server's host and port as `show stat`'s `addr` and `show servers
/// state` show them (the built-in mock at its bound address).
fn server_addr(addr: &ServerAddr, mock: Option<SocketAddr>) -> Option<(String, u16)> {
    match addr {
        ServerAddr::HostPort(h, p) => Some((h.clone(), *p)),
        ServerAddr::BuiltinMock => mock.map(|m| (m.ip().to_string(), m.port())),
    }
}

fn unix_now_ms() -> u64 {
    crate::stick::unix_ms()
}

/// `status` as HAProxy words it: maintenance first, drain over UP, then
/// the check state (`UP`, `UP 1/3`, `DOWN`, `DOWN 1/2`, `no check`).
pub(crate) fn server_status(s: &ServerState, h: &HealthView) -> String {
    match s.admin() {
        AdminState::Maint => "MAINT".into(),
        AdminState::Drain if h.up => match h.status.strip_prefix("UP ") {
            Some(going_down) => format!("DRAIN {going_down}"),
            None => "DRAIN".into(),
        },
        _ => h.status.clone(),
    }
}

/// Would the balancer count this server in its backend's weight (HAProxy's
/// `srv_act`/`srv_bck`)? Up, ready, and a weight above 0.
fn lb_usable(s: &ServerState, h: &HealthView) -> bool {
    s.admin() == AdminState::Ready && h.up && h.effective_weight > 0
}

/// Does a check state show (checks of a server in maintenance are paused
/// in HAProxy, which then shows none)?
fn checks_shown(s: &ServerState, h: &HealthView) -> bool {
    h.checked && s.admin() != AdminState::Maint
}

/// `show stat [{<iid>|<proxy>} <type> <sid>] [up|no-maint]`.
pub fn show_stat(ctx: &Context, args: &[String]) -> String {
    let mut hide_down = false;
    let mut hide_maint = false;
    let mut positional: Vec<&str> = Vec::new();
    for a in args {
        match a.as_str() {
            "up" => hide_down = true,
            "no-maint" => hide_maint = true,
            "json" | "typed" | "desc" => {
                return format!("'show stat {a}' is not supported by llmgw: the CSV format only.\n")
            }
            other => positional.push(other),
        }
    }
    let snap = ctx.shared.current.load();
    let all = proxies(&snap);
    // The filter takes all three words (as HAProxy: fewer are ignored);
    // numbers read as C's atoi does.
    let atoi = |s: &str| super::commands::strtol(s).0.unwrap_or(0);
    let (iid, types, sid) = if positional.len() >= 3 {
        let iid = match positional[0].parse::<i64>() {
            Ok(n) => n,
            Err(_) => match all.iter().find(|p| p.name == positional[0]) {
                Some(p) => i64::from(p.iid),
                None => return "No such proxy.\n".into(),
            },
        };
        (iid, atoi(positional[1]), atoi(positional[2]))
    } else {
        (-1, -1, -1)
    };
    let wanted = |bit: i64| types == -1 || types & bit != 0;
    let now_ms = unix_now_ms();
    let mut out = stat_header();
    for p in all.iter().filter(|p| iid == -1 || iid == i64::from(p.iid)) {
        if let (Some((fe, st)), true) = (p.frontend, wanted(1)) {
            frontend_row(ctx, p, fe, st).csv(&mut out);
        }
        let Some((b, rt)) = p.backend else { continue };
        if wanted(4) {
            for (i, s) in rt.balancer.servers().iter().enumerate() {
                let sid_i = i as i64 + 1;
                if sid != -1 && sid != sid_i {
                    continue;
                }
                let h = s.health_view();
                let maint = s.admin() == AdminState::Maint;
                if (hide_maint || hide_down) && maint || hide_down && !h.up {
                    continue;
                }
                server_row(ctx, p, b, i, s, &h, now_ms).csv(&mut out);
            }
        }
        if wanted(2) {
            backend_row(p, b, rt, hide_down || hide_maint).csv(&mut out);
        }
    }
    out
}

/// Which kind of `show stat` row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Frontend,
    Backend,
    Server,
}

/// What the traffic counters (`crate::metrics`) give a row, with
/// HAProxy's meaning. `bin`/`bout` stay empty: HAProxy counts every byte,
/// headers included, where llmgw counts body bytes only.
fn traffic(r: &mut Row, st: &ProxyStats, http: bool, side: Side) {
    use std::sync::atomic::Ordering::Relaxed;
    let frontend = side == Side::Frontend;
    if frontend {
        r.set("dreq", st.denied.load(Relaxed));
        r.set("ereq", st.req_errors.load(Relaxed));
        r.set("dcon", st.denied_conn.load(Relaxed));
    } else {
        // Servers have no denials of their own in HAProxy's rows.
        if side == Side::Backend {
            r.set("dreq", st.denied.load(Relaxed));
        }
        r.set("econ", st.conn_errors.load(Relaxed));
        r.set("eresp", st.resp_errors.load(Relaxed));
        // Averages in ms (HAProxy's are over the last 1024 requests,
        // these over every request since start). A server has no queue
        // of its own: requests wait in the backend's.
        if side == Side::Backend {
            r.set("qtime", st.queue_time.mean_ms());
        }
        r.set("ctime", st.connect_time.mean_ms());
        r.set("rtime", st.response_time.mean_ms());
        r.set("ttime", st.total_time.mean_ms());
    }
    if http || frontend {
        r.set("req_tot", st.requests.load(Relaxed));
    }
    if http {
        for (i, f) in [
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
        ]
        .into_iter()
        .enumerate()
        {
            r.set(f, st.responses(i));
        }
    }
}

fn frontend_row(ctx: &Context, p: &Proxy<'_>, fe: &Frontend, st: &ProxyStats) -> Row {
    use std::sync::atomic::Ordering::Relaxed;
    let mut r = Row::new();
    r.set("pxname", p.name);
    r.set("svname", "FRONTEND");
    // A frontend's sessions are its connections.
    r.set("scur", st.cur.load(Relaxed));
    r.set("smax", st.max.load(Relaxed));
    r.set("stot", st.total.load(Relaxed));
    r.set("conn_tot", st.total.load(Relaxed));
    traffic(
        &mut r,
        st,
        fe.mode == crate::config::Mode::Http,
        Side::Frontend,
    );
    // Connections beyond the frontend's own limit wait for the process's.
    r.set(
        "slim",
        if fe.maxconn > 0 {
            fe.maxconn
        } else {
            ctx.process.maxconn
        },
    );
    r.set("status", "OPEN");
    r.set("pid", 1);
    r.set("iid", p.iid);
    r.set("sid", 0);
    r.set("type", 0);
    r.set("mode", fe.mode.as_str());
    r
}

fn server_row(
    ctx: &Context,
    p: &Proxy<'_>,
    b: &Backend,
    i: usize,
    s: &ServerState,
    h: &HealthView,
    now_ms: u64,
) -> Row {
    let conf = &b.servers[i];
    let mut r = Row::new();
    r.set("pxname", p.name);
    r.set("svname", &s.name);
    r.set("qcur", s.queued());
    r.set("scur", s.active());
    if s.maxconn() > 0 {
        r.set("slim", s.maxconn());
    }
    r.set("stot", s.total());
    r.set("wretr", s.retries());
    r.set("wredis", s.redispatches());
    r.set("status", server_status(s, h));
    r.set("weight", h.effective_weight);
    r.set("act", u8::from(!h.backup));
    r.set("bck", u8::from(h.backup));
    if h.checked {
        r.set("chkfail", h.checks_failed);
        r.set("chkdown", h.down_transitions);
    }
    r.set(
        "lastchg",
        now_ms.saturating_sub(h.last_change_unix_ms) / 1000,
    );
    if let Some(q) = conf.opts.maxqueue.filter(|&q| q > 0) {
        r.set("qlimit", q);
    }
    r.set("pid", 1);
    r.set("iid", p.iid);
    r.set("sid", i + 1);
    // The slowstart ramp, in percent of the weight, while it lasts.
    if h.ramping && s.weight() > 0 {
        r.set(
            "throttle",
            u64::from(h.effective_weight) * 100 / u64::from(s.weight()),
        );
    }
    r.set("lbtot", s.total());
    r.set("type", 2);
    if checks_shown(s, h) {
        r.set("check_status", h.check_status);
        if let (Some(code), "L7OK" | "L7STS") = (h.last_code, h.check_status) {
            r.set("check_code", code);
        }
        if h.check_status != "INI" {
            r.set("check_duration", h.check_duration.as_millis());
        }
        r.set("check_desc", check_desc(h.check_status));
        r.set("check_rise", h.rise);
        r.set("check_fall", h.fall);
        r.set("check_health", h.health);
    }
    if let Some((host, port)) = server_addr(&conf.addr, ctx.shared.mock) {
        if host.contains(':') {
            r.set("addr", format!("[{host}]:{port}"));
        } else {
            r.set("addr", format!("{host}:{port}"));
        }
    }
    r.set("mode", b.mode.as_str());
    r.set("uweight", s.weight());
    traffic(
        &mut r,
        &s.stats,
        b.mode == crate::config::Mode::Http,
        Side::Server,
    );
    r
}

fn check_desc(status: &str) -> &'static str {
    use crate::runtime::CheckStatus::*;
    [
        Init, L4Ok, L4Tout, L4Con, L6Ok, L6Tout, L6Rsp, L7Ok, L7Tout, L7Rsp, L7Sts, Hana,
    ]
    .into_iter()
    .find(|c| c.as_str() == status)
    .map_or("", |c| c.describe())
}

fn backend_row(p: &Proxy<'_>, b: &Backend, rt: &BackendRt, counts: bool) -> Row {
    use std::sync::atomic::Ordering::Relaxed;
    let servers = rt.balancer.servers();
    let views: Vec<HealthView> = servers.iter().map(|s| s.health_view()).collect();
    let usable = |backup: bool| {
        servers
            .iter()
            .zip(&views)
            .filter(move |(s, h)| h.backup == backup && lb_usable(s, h))
    };
    let act = usable(false).count();
    let bck = usable(true).count();
    // HAProxy's `tot_weight`: the active servers' weights, or with none
    // left the backups' in use — all of them with `option allbackups`,
    // else the first.
    let in_use: Vec<(&Arc<ServerState>, &HealthView)> = if act > 0 {
        usable(false).collect()
    } else if b.opts.allbackups {
        usable(true).collect()
    } else {
        usable(true).take(1).collect()
    };
    let weight: u64 = in_use
        .iter()
        .map(|(_, h)| u64::from(h.effective_weight))
        .sum();
    let uweight: u64 = in_use.iter().map(|(s, _)| u64::from(s.weight())).sum();
    let mut r = Row::new();
    r.set("pxname", p.name);
    r.set("svname", "BACKEND");
    r.set("qcur", rt.queue.current.load(Relaxed));
    r.set("qmax", rt.queue.max.load(Relaxed));
    // A backend's sessions are the requests it was given (queued ones
    // included, as HAProxy counts them).
    let st = &rt.stats.proxy;
    r.set("scur", st.cur.load(Relaxed));
    r.set("smax", st.max.load(Relaxed));
    r.set("stot", st.total.load(Relaxed));
    r.set("wretr", servers.iter().map(|s| s.retries()).sum::<u64>());
    r.set(
        "wredis",
        servers.iter().map(|s| s.redispatches()).sum::<u64>(),
    );
    let mut status = String::from(if weight > 0 || servers.is_empty() {
        "UP"
    } else {
        "DOWN"
    });
    if counts {
        // With `up`/`no-maint`, HAProxy adds how many servers run.
        let running = servers
            .iter()
            .zip(&views)
            .filter(|(s, h)| h.up && s.admin() != AdminState::Maint)
            .count();
        let _ = write!(status, " ({running}/{})", servers.len());
    }
    r.set("status", status);
    r.set("weight", weight);
    r.set("act", act);
    r.set("bck", bck);
    r.set("pid", 1);
    r.set("iid", p.iid);
    r.set("sid", 0);
    r.set("lbtot", servers.iter().map(|s| s.total()).sum::<u64>());
    r.set("type", 1);
    r.set("mode", b.mode.as_str());
    r.set("algo", algo(&b.balance));
    r.set("uweight", uweight);
    traffic(
        &mut r,
        st,
        b.mode == crate::config::Mode::Http,
        Side::Backend,
    );
    r
}

/// `show activity`: what each serving thread did, as HAProxy prints it —
/// `name: total [ thread1 thread2 … ]` — for the counters llmgw keeps:
/// connections each thread accepted (the first thread runs the accept
/// loops), connections handed to each thread to serve, and idle upstream
/// connections each took over from another thread's share of a pool.
pub fn show_activity() -> String {
    let a = crate::threads::activity();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = format!(
        "thread_id: {} (1..{})\ndate_now: {}.{:06}\n",
        crate::threads::index() + 1,
        a.accepted.len(),
        now.as_secs(),
        now.subsec_micros()
    );
    for (name, per_thread) in [
        ("accepted", &a.accepted),
        ("accq_pushed", &a.pushed),
        ("fd_takeover", &a.takeover),
    ] {
        let _ = write!(out, "{name}: {} [", per_thread.iter().sum::<u64>());
        for n in per_thread {
            let _ = write!(out, " {n}");
        }
        out.push_str(" ]\n");
    }
    out
}

/// `show info`: the fields llmgw can fill, in HAProxy's order.
pub fn show_info(ctx: &Context, args: &[String]) -> String {
    if let Some(a) = args
        .iter()
        .find(|a| matches!(a.as_str(), "json" | "typed" | "desc" | "float"))
    {
        return format!("'show info {a}' is not supported by llmgw: the plain format only.\n");
    }
    let p = &ctx.process;
    let up = p.started.elapsed().as_secs();
    let mut out = String::new();
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{k}: {v}");
    };
    line("Name", &"llmgw");
    line("Version", &env!("CARGO_PKG_VERSION"));
    if let Some(d) = option_env!("LLMGW_RELEASE_DATE") {
        line("Release_date", &d);
    }
    line("Nbthread", &p.nbthread);
    line("Nbproc", &1);
    line("Process_num", &1);
    line("Pid", &std::process::id());
    line(
        "Uptime",
        &format!(
            "{}d {}h{:02}m{:02}s",
            up / 86_400,
            up / 3600 % 24,
            up / 60 % 60,
            up % 60
        ),
    );
    line("Uptime_sec", &up);
    if let Some(n) = open_files_limit() {
        line("Ulimit-n", &n);
    }
    line("Maxconn", &p.maxconn);
    line("Hard_maxconn", &p.maxconn);
    {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = ctx.shared.current.load();
        let sum =
            |f: fn(&ProxyStats) -> u64| -> u64 { snap.frontend_stats.iter().map(|s| f(s)).sum() };
        line("CurrConns", &sum(|s| s.cur.load(Relaxed)));
        line("CumConns", &sum(|s| s.total.load(Relaxed)));
        line("CumReq", &sum(|s| s.requests.load(Relaxed)));
    }
    if let Some(h) = hostname() {
        line("node", &h);
    }
    line("Stopping", &0);
    // Frontend binds, the stats listener and this socket.
    line("Listeners", &(ctx.listeners.count() + 1));
    line("Build info", &env!("CARGO_PKG_VERSION"));
    line("Start_time_sec", &p.started_unix);
    out
}

fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// HAProxy's `node` defaults to the host name.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// HAProxy's check status numbers (`HCHK_STATUS_*`) for `show servers
/// state`.
fn check_status_code(status: &str) -> u8 {
    match status {
        "INI" => 1,
        "HANA" => 4,
        "L4OK" => 6,
        "L4TOUT" => 7,
        "L4CON" => 8,
        "L6OK" => 9,
        "L6TOUT" => 10,
        "L6RSP" => 11,
        "L7TOUT" => 12,
        "L7RSP" => 13,
        "L7OK" => 15,
        "L7STS" => 17,
        _ => 0,
    }
}

/// `show servers state [<backend>]`: format version 1, as HAProxy writes
/// it (and reads it back with `load-server-state-from-file`).
pub fn show_servers_state(ctx: &Context, backend: Option<&str>) -> String {
    let snap = ctx.shared.current.load();
    let all = proxies(&snap);
    if let Some(name) = backend {
        if !all.iter().any(|p| p.name == name && p.backend.is_some()) {
            return "Can't find backend.\n".into();
        }
    }
    let now_ms = unix_now_ms();
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    for p in all.iter().filter(|p| backend.is_none_or(|n| n == p.name)) {
        let Some((b, rt)) = p.backend else { continue };
        for (i, s) in rt.balancer.servers().iter().enumerate() {
            let conf = &b.servers[i];
            let h = s.health_view();
            let maint = s.admin() == AdminState::Maint;
            // SRV_ST_STOPPED 0, STARTING 1 (slowstart), RUNNING 2.
            let op = if maint || !h.up {
                0
            } else if h.ramping {
                1
            } else {
                2
            };
            // SRV_ADMF_FMAINT 0x01, SRV_ADMF_FDRAIN 0x08.
            let admin = match s.admin() {
                AdminState::Ready => 0,
                AdminState::Maint => 1,
                AdminState::Drain => 8,
            };
            let (status, result, health, state) = if h.checked {
                // CHK_RES_UNKNOWN 0, FAILED 2, PASSED 3; CHK_ST_CONFIGURED
                // 0x02 | ENABLED 0x04, | PAUSED 0x08 in maintenance.
                let result = match h.check_status {
                    "INI" => 0,
                    "L4OK" | "L6OK" | "L7OK" => 3,
                    _ => 2,
                };
                let state = if maint { 14 } else { 6 };
                (check_status_code(h.check_status), result, h.health, state)
            } else {
                (1, 0, h.rise, 0)
            };
            let (host, port) =
                server_addr(&conf.addr, ctx.shared.mock).unwrap_or_else(|| ("-".into(), 0));
            let _ = writeln!(
                out,
                "{} {} {} {} {host} {op} {admin} {} {} {} {status} {result} {health} {state} 0 0 0 - {port} - {} {} {} - 0",
                p.iid,
                p.name,
                i + 1,
                s.name,
                s.weight(),
                s.initial_weight(),
                now_ms.saturating_sub(h.last_change_unix_ms) / 1000,
                u8::from(conf.tls.is_some()),
                conf.opts.port.unwrap_or(0),
                conf.opts.addr.as_deref().unwrap_or("-"),
            );
        }
    }
    out
}

/// `show backend`.
pub fn show_backend(ctx: &Context) -> String {
    let snap = ctx.shared.current.load();
    let mut out = String::from("# name\n");
    for b in &snap.config.backends {
        out.push_str(&b.name);
        out.push('\n');
    }
    out
}

/// A stick table of the running configuration: those the configuration
/// declares, and each client-key list's usage table
/// (`@client-keys/NAME`, keyed by key names — never by the keys).
pub(crate) struct FoundTable {
    pub table: Arc<Table>,
    /// The `store` list as written, when the configuration declares the
    /// table (`gpc(3)` and `gpc0` print in different places).
    pub store: Vec<String>,
    pub size: u64,
}

pub(crate) fn tables(snap: &Snapshot) -> Vec<FoundTable> {
    let mut out: Vec<FoundTable> = snap
        .config
        .stick_tables
        .iter()
        .zip(&snap.tables)
        .map(|(def, t)| FoundTable {
            table: t.clone(),
            store: def.store.clone(),
            size: def.size,
        })
        .collect();
    out.extend(snap.keyrings.iter().map(|k| FoundTable {
        table: k.table.clone(),
        store: Vec::new(),
        size: k.table.size() as u64,
    }));
    // HAProxy lists its tables by name.
    out.sort_by(|a, b| a.table.name.cmp(&b.table.name));
    out
}

pub(crate) fn find_table(ctx: &Context, name: &str) -> Option<FoundTable> {
    tables(&ctx.shared.current.load())
        .into_iter()
        .find(|t| t.table.name == name)
}

fn table_header(out: &mut String, t: &FoundTable) {
    let _ = writeln!(
        out,
        "# table: {}, type: {}, size:{}, used:{}",
        t.table.name,
        t.table.key_type,
        t.size,
        t.table.len()
    );
}

/// `show table [<table> [key <key>]]`.
pub fn show_table(ctx: &Context, level: AccessLevel, args: &[String]) -> String {
    let mut out = String::new();
    let Some(name) = args.first() else {
        for t in tables(&ctx.shared.current.load()) {
            table_header(&mut out, &t);
        }
        return out;
    };
    let Some(t) = find_table(ctx, name) else {
        return "No such table\n".into();
    };
    let key = match args.get(1).map(String::as_str) {
        None => None,
        Some("key") => match args.get(2) {
            None => return "Key value expected\n".into(),
            Some(k) => match t.table.parse_key(k) {
                Some(k) => Some(k),
                None => return "Invalid key\n".into(),
            },
        },
        Some(_) => return "Optional argument only supports key <key>\n".into(),
    };
    let entries = t.table.dump();
    if let Some(k) = &key {
        // HAProxy prints nothing at all for a key it does not hold.
        if !entries.iter().any(|e| e.key == *k) {
            return out;
        }
    }
    table_header(&mut out, &t);
    if level < AccessLevel::Operator {
        out.push_str("# contents not dumped due to insufficient privileges\n");
        return out;
    }
    let columns = ordered_columns(t.table.columns(), &t.store);
    for e in entries
        .iter()
        .filter(|e| key.as_ref().is_none_or(|k| e.key == *k))
    {
        let _ = write!(
            out,
            "{:#x}: key={} use={} exp={}",
            e.addr,
            key_text(&t.table.key_type, &e.key),
            e.refs,
            e.expires_in_ms.unwrap_or(0)
        );
        for &i in &columns {
            let (c, v) = &e.values[i];
            let _ = write!(out, " {}", data_name(c));
            let _ = write!(out, "={v}");
        }
        out.push('\n');
    }
    out
}

/// `name` or `name(period_ms)`, as HAProxy prints stored data.
pub(crate) fn data_name(c: &Column) -> String {
    if c.data.is_rate() {
        format!("{}({})", c.data.name(), c.period_ms)
    } else {
        c.data.name()
    }
}

/// Column indexes in HAProxy's order of data types (which is not the
/// `store` order): server_id, gpt0, gpc0, gpc0_rate, conn_cnt, conn_rate,
/// conn_cur, sess_cnt, sess_rate, http_req_cnt, http_req_rate,
/// http_err_cnt, http_err_rate, bytes_in_cnt, bytes_in_rate,
/// bytes_out_cnt, bytes_out_rate, gpc1, gpc1_rate, http_fail_cnt,
/// http_fail_rate, then the `gpc(N)` and `gpc_rate(N,…)` arrays, then
/// llmgw's token rates.
fn ordered_columns(cols: &[Column], store: &[String]) -> Vec<usize> {
    let arrays = store
        .iter()
        .any(|s| s.starts_with("gpc(") || s.starts_with("gpc_rate("));
    let rank = |d: Data| -> (u32, u8) {
        match d {
            Data::ServerId => (0, 0),
            Data::Gpt0 => (1, 0),
            Data::Gpc(n) if arrays => (23, n),
            Data::GpcRate(n) if arrays => (24, n),
            Data::Gpc(0) => (2, 0),
            Data::GpcRate(0) => (3, 0),
            Data::ConnCnt => (4, 0),
            Data::ConnRate => (5, 0),
            Data::ConnCur => (6, 0),
            Data::SessCnt => (7, 0),
            Data::SessRate => (8, 0),
            Data::HttpReqCnt => (9, 0),
            Data::HttpReqRate => (10, 0),
            Data::HttpErrCnt => (11, 0),
            Data::HttpErrRate => (12, 0),
            Data::BytesInCnt => (13, 0),
            Data::BytesInRate => (14, 0),
            Data::BytesOutCnt => (15, 0),
            Data::BytesOutRate => (16, 0),
            Data::Gpc(1) => (17, 0),
            Data::GpcRate(1) => (18, 0),
            Data::HttpFailCnt => (20, 0),
            Data::HttpFailRate => (21, 0),
            Data::Gpc(n) => (23, n),
            Data::GpcRate(n) => (24, n),
            Data::TokensInRate => (30, 0),
            Data::TokensOutRate => (31, 0),
            Data::TokensRate => (32, 0),
        }
    };
    let mut idx: Vec<usize> = (0..cols.len()).collect();
    idx.sort_by_key(|&i| rank(cols[i].data));
    idx
}

/// A key as HAProxy prints it for its table type: addresses (IPv4 for an
/// `ip` table, IPv6 — `::ffff:a.b.c.d` for an IPv4 client — for `ipv6`),
/// numbers, text with HAProxy's escapes, or upper-case hex for `binary`.
pub(crate) fn key_text(key_type: &str, k: &Key) -> String {
    match k {
        Key::Ip(o) => {
            let v6 = Ipv6Addr::from(*o);
            match (key_type, v6.to_ipv4_mapped()) {
                ("ip", Some(v4)) => IpAddr::V4(v4).to_string(),
                _ => v6.to_string(),
            }
        }
        Key::Int(i) => i.to_string(),
        Key::Bytes(b) if key_type == "binary" => b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02X}");
            s
        }),
        Key::Bytes(b) => dump_text(b),
    }
}

/// HAProxy's `dump_text`: printable ASCII as is except space, `=` and
/// backslash, which are escaped with a backslash; tab, LF, CR and ESC as
/// `\t \n \r \e`; anything else as `\xHH`. It stops at a NUL byte.
pub(crate) fn dump_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b.iter().take_while(|&&c| c != 0) {
        match c {
            b' ' | b'=' | b'\\' => {
                s.push('\\');
                s.push(c as char);
            }
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            0x1b => s.push_str("\\e"),
            0x21..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02X}");
            }
        }
    }
    s
}
