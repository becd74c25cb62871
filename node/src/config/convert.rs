//! `llmgw convert FILE.cfg`: an HAProxy configuration as equivalent native
//! TOML.
//!
//! Structure (binds, timeouts, balancing, servers, default backends) comes
//! from the compiled model, so what is written is what would be served;
//! ACLs, `http-request`/`http-response` rules and `use_backend` conditions
//! are carried over in HAProxy syntax (`acl = [...]`,
//! `http_request_rules = [...]`, a route's `cond = "if …"`), which the
//! native reader compiles with this same dialect. Health checks become a
//! backend's `[backend.check]` (always with its `type`, since the native
//! default for a mode http backend is `GET /v1/models` where HAProxy's is a
//! TCP connect) and the servers' check fields. Settings without behaviour
//! yet are listed in a comment at the top instead.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::diag::{Diag, Diags};
use super::haproxy::{self, render};
use super::model::*;

/// Converts; returns the TOML and the reader's warnings.
pub fn convert_file(path: &Path, lenient: bool) -> Result<(String, Vec<Diag>), Diags> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diags(vec![Diag {
            file: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let loaded = haproxy::load_str(&name, &text, base, haproxy::Options { lenient })?;
    Ok((convert(&loaded.config, &text), loaded.warnings))
}

/// `stats = "ADDR"`, or the table form when anyone is told who may use it.
fn stats_value(addr: std::net::SocketAddr, a: &StatsAccess) -> Value {
    let d = StatsAccess::default();
    // Without users admin actions are refused whatever `admin` says.
    let plain =
        a.users.is_empty() && a.realm == d.realm && a.refresh == d.refresh && a.uri.is_none();
    if plain {
        return Value::String(addr.to_string());
    }
    let mut t = Table::new();
    t.insert("address".into(), Value::String(addr.to_string()));
    if !a.users.is_empty() {
        // The passwords as written in the .cfg: a converted file holds the
        // same secrets as its source.
        let users = a
            .users
            .iter()
            .map(|u| Value::String(format!("{}:{}", u.name, u.password)));
        t.insert("auth".into(), Value::Array(users.collect()));
    }
    if a.read_auth != d.read_auth {
        t.insert("read_auth".into(), Value::Boolean(a.read_auth));
    }
    // Native admin defaults to on; HAProxy's only with `stats admin`.
    t.insert("admin".into(), Value::Boolean(a.admin));
    if a.realm != d.realm {
        t.insert("realm".into(), Value::String(a.realm.clone()));
    }
    if a.refresh != d.refresh {
        t.insert("refresh".into(), dur(a.refresh));
    }
    if let Some(u) = &a.uri {
        t.insert("uri".into(), Value::String(u.clone()));
    }
    Value::Table(t)
}

fn dur(d: Duration) -> Value {
    Value::String(format!("{}ms", d.as_millis()))
}

fn strings(v: impl IntoIterator<Item = String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

fn timeouts(t: &Timeouts) -> Value {
    let mut m = Table::new();
    m.insert("connect".into(), dur(t.connect));
    m.insert("client".into(), dur(t.client));
    m.insert("server".into(), dur(t.server));
    m.insert("http_request".into(), dur(t.http_request));
    m.insert("http_keep_alive".into(), dur(t.http_keep_alive));
    if t.tunnel_set {
        m.insert("tunnel".into(), dur(t.tunnel));
    }
    m.insert("handshake".into(), dur(t.handshake));
    if let Some(ttft) = t.ttft {
        m.insert("ttft".into(), dur(ttft));
    }
    if let Some(tarpit) = t.tarpit {
        m.insert("tarpit".into(), dur(tarpit));
    }
    Value::Table(m)
}

fn balance(b: &Balance) -> String {
    match b {
        Balance::RoundRobin => "roundrobin".into(),
        Balance::StaticRr => "static-rr".into(),
        Balance::LeastConn => "leastconn".into(),
        Balance::First => "first".into(),
        Balance::Source => "source".into(),
        Balance::Uri => "uri".into(),
        Balance::Hdr(h) => format!("hdr({h})"),
        Balance::Random(n) => format!("random({n})"),
    }
}

/// The HAProxy-syntax lines of one section: (acl, http-request,
/// http-response, use_backend (backend, cond), tcp-request).
type Lines = (
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<(String, String)>,
    Vec<String>,
);

fn section_lines(text: &str, kind: &str, name: &str) -> Lines {
    let mut out: Lines = Default::default();
    for (k, n, lines) in haproxy::proxy_sections(text) {
        if k != kind || n != name {
            continue;
        }
        for l in lines {
            let rest = render(&l.words[1..]);
            match l.words[0].text.as_str() {
                "acl" => out.0.push(rest),
                "http-request" => out.1.push(rest),
                "http-response" => out.2.push(rest),
                "tcp-request" => out.4.push(rest),
                "use_backend" => {
                    let b = l.words.get(1).map(|w| w.text.clone()).unwrap_or_default();
                    let cond = render(&l.words[2..]);
                    let cond = if cond.is_empty() {
                        "if TRUE".into()
                    } else {
                        cond
                    };
                    out.3.push((b, cond));
                }
                _ => {}
            }
        }
    }
    out
}

/// Which kind of section declared a frontend or backend of this name.
fn kind_of(text: &str, name: &str, fe: bool) -> &'static str {
    haproxy::proxy_sections(text)
        .iter()
        .find(|(k, n, _)| {
            n == name && (*k == "listen" || *k == if fe { "frontend" } else { "backend" })
        })
        .map_or(if fe { "frontend" } else { "backend" }, |(k, _, _)| *k)
}

pub fn convert(c: &Config, text: &str) -> String {
    let mut root = Table::new();
    let mut notes = Vec::new();

    let mut g = Table::new();
    if let Some(m) = c.global.maxconn {
        g.insert("maxconn".into(), Value::Integer(m.into()));
    }
    if c.global.nbthread > 0 {
        g.insert("nbthread".into(), Value::Integer(c.global.nbthread as i64));
    }
    if let Some(addr) = c.global.stats {
        g.insert("stats".into(), stats_value(addr, &c.global.stats_access));
    }
    if let Some(s) = &c.global.stats_socket {
        let mut st = Table::new();
        st.insert(
            "path".into(),
            Value::String(s.path.to_string_lossy().into_owned()),
        );
        if let Some(m) = s.mode {
            st.insert("mode".into(), Value::String(format!("{m:o}")));
        }
        st.insert("level".into(), Value::String(s.level.as_str().into()));
        if s.timeout != DEFAULT_STATS_TIMEOUT {
            st.insert("timeout".into(), dur(s.timeout));
        }
        if s.expose_fd {
            st.insert("expose_fd_listeners".into(), Value::Boolean(true));
        }
        g.insert("stats_socket".into(), Value::Table(st));
    }
    if let Some(d) = c.global.hard_stop_after {
        g.insert("hard_stop_after".into(), dur(d));
    }
    if let Some(t) = &c.global.log {
        let mut lt = Table::new();
        lt.insert("target".into(), Value::String(t.sink.to_target()));
        lt.insert("format".into(), Value::String(t.format.name().into()));
        // Written out whatever the default: HAProxy frames stdout too.
        lt.insert(
            "syslog_format".into(),
            Value::String(t.framing.name().into()),
        );
        lt.insert(
            "facility".into(),
            Value::String(super::log::FACILITIES[t.facility as usize].into()),
        );
        if t.level != 7 {
            lt.insert(
                "level".into(),
                Value::String(super::log::LEVELS[t.level as usize].into()),
            );
        }
        if let Some(n) = t.max_len {
            lt.insert("len".into(), Value::Integer(n as i64));
        }
        g.insert("log".into(), Value::Table(lt));
    }
    if let Some(l) = &c.global.log_level {
        g.insert("log_level".into(), Value::String(l.clone()));
    }
    root.insert("global".into(), Value::Table(g));

    let mut fes = Vec::new();
    for f in &c.frontends {
        let kind = kind_of(text, &f.name, true);
        let (acl, req, resp, uses, tcp) = section_lines(text, kind, &f.name);
        let mut t = Table::new();
        t.insert("name".into(), Value::String(f.name.clone()));
        if f.mode == Mode::Tcp {
            t.insert("mode".into(), Value::String("tcp".into()));
        }
        let binds = f
            .binds
            .iter()
            .map(|b| {
                let mut bt = Table::new();
                bt.insert("address".into(), Value::String(b.addr.to_string()));
                if b.accept_proxy {
                    bt.insert("accept_proxy".into(), Value::Boolean(true));
                }
                if let Some(tls) = &b.tls {
                    let mut tt = Table::new();
                    let certs = tls
                        .certs
                        .iter()
                        .map(|c| {
                            let mut ct = Table::new();
                            ct.insert("cert".into(), Value::String(c.cert.display().to_string()));
                            ct.insert("key".into(), Value::String(c.key.display().to_string()));
                            Value::Table(ct)
                        })
                        .collect();
                    tt.insert("certs".into(), Value::Array(certs));
                    tt.insert(
                        "alpn".into(),
                        strings(
                            tls.alpn
                                .iter()
                                .map(|a| String::from_utf8_lossy(a).into_owned()),
                        ),
                    );
                    if !tls.tickets {
                        tt.insert("tickets".into(), Value::Boolean(false));
                    }
                    if tls.session_cache != crate::config::DEFAULT_SSL_CACHE {
                        tt.insert(
                            "session_cache".into(),
                            Value::Integer(tls.session_cache as i64),
                        );
                    }
                    bt.insert("tls".into(), Value::Table(tt));
                }
                Value::Table(bt)
            })
            .collect();
        t.insert("bind".into(), Value::Array(binds));
        if f.maxconn > 0 {
            t.insert("maxconn".into(), Value::Integer(f.maxconn.into()));
        }
        if let Some(d) = f.default_backend {
            t.insert(
                "default_backend".into(),
                Value::String(c.backends[d].name.clone()),
            );
        }
        t.insert(
            "forwardfor".into(),
            Value::Boolean(f.forward_for.x_forwarded_for),
        );
        t.insert(
            "request_id".into(),
            Value::Boolean(f.request_id_header.is_some()),
        );
        t.insert("body_limit".into(), Value::Integer(f.body_limit as i64));
        if f.default_max_tokens != super::native::DEFAULT_MAX_TOKENS {
            t.insert(
                "default_max_tokens".into(),
                Value::Integer(i64::try_from(f.default_max_tokens).unwrap_or(i64::MAX)),
            );
        }
        t.insert("timeout".into(), timeouts(&f.timeouts));
        match (f.log, &c.global.log) {
            (None, Some(_)) => {
                t.insert("log".into(), Value::Boolean(false));
            }
            (Some(fmt), Some(g)) if fmt != g.format => {
                t.insert("log_format".into(), Value::String(fmt.name().into()));
            }
            _ => {}
        }
        if f.dontlognull {
            t.insert("dontlognull".into(), Value::Boolean(true));
        }
        if !acl.is_empty() {
            t.insert("acl".into(), strings(acl));
        }
        // In mode tcp, HTTP rules are ignored (with a warning when read).
        if !req.is_empty() && f.mode == Mode::Http {
            t.insert("http_request_rules".into(), strings(req));
        }
        if !resp.is_empty() && f.mode == Mode::Http {
            t.insert("http_response_rules".into(), strings(resp));
        }
        if !tcp.is_empty() {
            t.insert("tcp_request_rules".into(), strings(tcp));
        }
        let routes: Vec<Value> = uses
            .into_iter()
            .map(|(b, cond)| {
                let mut rt = Table::new();
                rt.insert("backend".into(), Value::String(b));
                rt.insert("cond".into(), Value::String(cond));
                Value::Table(rt)
            })
            .collect();
        if !routes.is_empty() {
            t.insert("route".into(), Value::Array(routes));
        }
        fes.push(Value::Table(t));
    }
    root.insert("frontend".into(), Value::Array(fes));

    let mut bes = Vec::new();
    for b in &c.backends {
        let kind = kind_of(text, &b.name, false);
        let mut t = Table::new();
        t.insert("name".into(), Value::String(b.name.clone()));
        if b.mode == Mode::Tcp {
            t.insert("mode".into(), Value::String("tcp".into()));
        }
        t.insert("balance".into(), Value::String(balance(&b.balance)));
        let ht = match b.hash_type {
            HashType::MapBased => "map-based",
            HashType::Consistent => "consistent",
        };
        t.insert("hash_type".into(), Value::String(ht.into()));
        if b.x_forwarded_for {
            t.insert("forwardfor".into(), Value::Boolean(true));
        }
        let mut bt = timeouts(&b.timeouts);
        if let (Some(q), Value::Table(m)) = (b.opts.timeout_queue, &mut bt) {
            m.insert("queue".into(), dur(q));
        }
        t.insert("timeout".into(), bt);
        // A listen section's rules run on its frontend side.
        if kind == "backend" && b.mode == Mode::Http {
            let (acl, req, resp, _, _) = section_lines(text, kind, &b.name);
            if !acl.is_empty() {
                t.insert("acl".into(), strings(acl));
            }
            if !req.is_empty() {
                t.insert("http_request_rules".into(), strings(req));
            }
            if !resp.is_empty() {
                t.insert("http_response_rules".into(), strings(resp));
            }
        }
        if b.opts.allbackups {
            t.insert("allbackups".into(), Value::Boolean(true));
        }
        if b.servers.iter().any(|s| s.opts.check) {
            t.insert("check".into(), Value::Table(check_table(b, &mut notes)));
        }
        let o = &b.opts;
        if let Some(n) = o.retries {
            t.insert("retries".into(), Value::Integer(i64::from(n)));
        }
        if !o.retry_on.is_empty() {
            t.insert(
                "retry_on".into(),
                Value::Array(o.retry_on.iter().cloned().map(Value::String).collect()),
            );
        }
        if o.redispatch {
            t.insert("redispatch".into(), Value::Boolean(true));
        }
        if !o.fallback.is_empty() {
            let steps = o.fallback.iter().map(|f| {
                let mut st = Table::new();
                st.insert(
                    "backend".into(),
                    Value::String(c.backends[f.backend].name.clone()),
                );
                st.insert(
                    "on".into(),
                    Value::Array(
                        retry_on::words(f.on)
                            .into_iter()
                            .map(Value::String)
                            .collect(),
                    ),
                );
                if let Some(m) = &f.model {
                    st.insert("model".into(), Value::String(m.clone()));
                }
                Value::Table(st)
            });
            t.insert("fallback".into(), Value::Array(steps.collect()));
        }
        let servers = b
            .servers
            .iter()
            .map(|s| {
                let mut st = Table::new();
                st.insert("name".into(), Value::String(s.name.clone()));
                let addr = match &s.addr {
                    ServerAddr::HostPort(h, p) if h.contains(':') => format!("[{h}]:{p}"),
                    ServerAddr::HostPort(h, p) => format!("{h}:{p}"),
                    ServerAddr::BuiltinMock => "mock".into(),
                };
                st.insert("address".into(), Value::String(addr));
                st.insert("weight".into(), Value::Integer(s.weight.into()));
                st.insert("maxconn".into(), Value::Integer(s.maxconn.into()));
                if let Some(tls) = &s.tls {
                    let mut tt = Table::new();
                    let v = if tls.verify { "required" } else { "none" };
                    tt.insert("verify".into(), Value::String(v.into()));
                    if let Some(sni) = &tls.sni {
                        tt.insert("sni".into(), Value::String(sni.clone()));
                    }
                    if let Some(ca) = &tls.ca {
                        tt.insert("ca".into(), Value::String(ca.display().to_string()));
                    }
                    st.insert("tls".into(), Value::Table(tt));
                }
                if s.proto == UpstreamProto::Http2 {
                    st.insert("proto".into(), Value::String("h2".into()));
                }
                server_health(&mut st, &s.opts);
                if let Some(q) = s.opts.maxqueue {
                    st.insert("maxqueue".into(), Value::Integer(i64::from(q)));
                }
                // No limit is the default, and has no number in TOML.
                if let Some(n) = s.opts.pool_max_conn.and_then(|n| i64::try_from(n).ok()) {
                    st.insert("pool_max_idle".into(), Value::Integer(n));
                }
                if let Some(d) = s.opts.pool_purge_delay {
                    st.insert("pool_purge_delay".into(), dur(d));
                }
                if let Some(n) = s.opts.pool_low_conn.and_then(|n| i64::try_from(n).ok()) {
                    st.insert("pool_low_conn".into(), Value::Integer(n));
                }
                if s.opts.disabled {
                    st.insert("disabled".into(), Value::Boolean(true));
                }
                Value::Table(st)
            })
            .collect();
        t.insert("server".into(), Value::Array(servers));
        bes.push(Value::Table(t));
    }
    root.insert("backend".into(), Value::Array(bes));
    let tables: Vec<Value> = c
        .stick_tables
        .iter()
        .map(|t| {
            let mut st = Table::new();
            st.insert("name".into(), Value::String(t.name.clone()));
            st.insert("type".into(), Value::String(t.key_type.clone()));
            st.insert(
                "size".into(),
                Value::Integer(i64::try_from(t.size).unwrap_or(i64::MAX)),
            );
            if let Some(e) = t.expire {
                st.insert("expire".into(), dur(e));
            }
            st.insert("store".into(), strings(t.store.clone()));
            Value::Table(st)
        })
        .collect();
    if !tables.is_empty() {
        root.insert("stick_table".into(), Value::Array(tables));
    }

    let mut out = String::from("# Converted from HAProxy configuration by `llmgw convert`.\n");
    if !notes.is_empty() {
        out.push_str("# Accepted in the .cfg, without behaviour yet (not written below):\n");
        for n in notes {
            out.push_str(&format!("#   {n}\n"));
        }
    }
    out.push('\n');
    out.push_str(&toml::to_string(&root).unwrap_or_default());
    out
}

/// `[backend.check]` for a backend whose servers are checked.
fn check_table(b: &Backend, notes: &mut Vec<String>) -> Table {
    let mut t = Table::new();
    let c = &b.opts.check;
    match c.kind {
        CheckKind::Tcp => {
            t.insert("type".into(), Value::String("tcp".into()));
        }
        CheckKind::Http => {
            t.insert("type".into(), Value::String("http".into()));
            t.insert("method".into(), Value::String(c.method.to_string()));
            t.insert("path".into(), Value::String(c.path.clone()));
            if let Some(h) = c.host.as_ref().and_then(|h| h.to_str().ok()) {
                t.insert("host".into(), Value::String(h.to_owned()));
            }
            let mut hs = Table::new();
            for (n, v) in &c.headers {
                if let Ok(v) = v.to_str() {
                    hs.insert(n.to_string(), Value::String(v.to_owned()));
                }
            }
            if !hs.is_empty() {
                t.insert("headers".into(), Value::Table(hs));
            }
            t.insert("send_auth".into(), Value::Boolean(c.send_auth));
            if let Some(e) = &c.expect {
                let mut et = Table::new();
                let ok = match &e.test {
                    ExpectTest::Status(list) => {
                        let text: Vec<String> = list
                            .iter()
                            .map(|(lo, hi)| {
                                if lo == hi {
                                    lo.to_string()
                                } else {
                                    format!("{lo}-{hi}")
                                }
                            })
                            .collect();
                        et.insert("status".into(), Value::String(text.join(",")));
                        true
                    }
                    ExpectTest::RStatus(r) => {
                        et.insert("rstatus".into(), Value::String(r.as_str().into()));
                        true
                    }
                    ExpectTest::String(x) => {
                        et.insert("string".into(), Value::String(x.clone()));
                        true
                    }
                    ExpectTest::RString(r) => {
                        et.insert("rstring".into(), Value::String(r.as_str().into()));
                        true
                    }
                    ExpectTest::Header { name, value } => {
                        et.insert("header".into(), Value::String(name.to_string()));
                        match value {
                            None => true,
                            Some(Match::Exact(v)) => {
                                et.insert("value".into(), Value::String(v.clone()));
                                true
                            }
                            Some(_) => false,
                        }
                    }
                };
                if e.negate {
                    et.insert("negate".into(), Value::Boolean(true));
                }
                if ok {
                    t.insert("expect".into(), Value::Table(et));
                } else {
                    notes.push(format!(
                        "backend {}: http-check expect hdr with a non-exact value match has no native form; the check expects the header only",
                        b.name
                    ));
                    et.remove("value");
                    t.insert("expect".into(), Value::Table(et));
                }
            }
        }
    }
    if let Some(d) = b.opts.timeout_check {
        t.insert("timeout".into(), dur(d));
    }
    t
}

/// A server's health fields.
fn server_health(st: &mut Table, o: &ServerOpts) {
    if o.check {
        st.insert("check".into(), Value::Boolean(true));
    }
    for (k, v) in [
        ("inter", o.inter),
        ("fastinter", o.fastinter),
        ("downinter", o.downinter),
        ("slowstart", o.slowstart),
        ("cooldown_429", o.cooldown_429),
    ] {
        if let Some(d) = v {
            st.insert(k.into(), dur(d));
        }
    }
    // Native TOML refuses passive observation without checks (HAProxy
    // accepts it with no effect).
    let error_limit = o.error_limit.filter(|_| o.check);
    for (k, v) in [
        ("fall", o.fall),
        ("rise", o.rise),
        ("error_limit", error_limit),
    ] {
        if let Some(n) = v {
            st.insert(k.into(), Value::Integer(n.into()));
        }
    }
    if let Some(p) = o.port {
        st.insert("check_port".into(), Value::Integer(p.into()));
    }
    if let Some(a) = &o.addr {
        st.insert("check_addr".into(), Value::String(a.clone()));
    }
    if let Some(t) = o.check_ssl {
        st.insert("check_tls".into(), Value::Boolean(t));
    }
    if o.backup {
        st.insert("backup".into(), Value::Boolean(true));
    }
    if let Some(m) = o.observe.filter(|_| o.check) {
        let v = match m {
            ObserveMode::Layer4 => "layer4",
            ObserveMode::Layer7 => "layer7",
        };
        st.insert("observe".into(), Value::String(v.into()));
    }
    if let Some(e) = o.on_error.as_ref().filter(|_| o.check) {
        st.insert("on_error".into(), Value::String(e.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A converted stats section serves the same listener to the same
    /// users once read back as TOML.
    #[test]
    fn stats_section_round_trips() {
        let cfg = "listen stats
    bind 127.0.0.1:8404
    stats enable
    stats auth admin:pw
    stats refresh 3s
    stats admin if TRUE
frontend f
    bind 127.0.0.1:8080
    default_backend b
backend b
    server s 127.0.0.1:9000
";
        let l =
            haproxy::load_str("t.cfg", cfg, Path::new("."), haproxy::Options::default()).unwrap();
        let toml = convert(&l.config, cfg);
        let back = super::super::native::load_str("t.toml", &toml, Path::new("."))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(back.global.stats, l.config.global.stats);
        assert_eq!(back.global.stats_access, l.config.global.stats_access);

        // Without `stats admin`, the native default (admin on) is overridden.
        let cfg = cfg.replace("    stats admin if TRUE\n", "");
        let l =
            haproxy::load_str("t.cfg", &cfg, Path::new("."), haproxy::Options::default()).unwrap();
        let back =
            super::super::native::load_str("t.toml", &convert(&l.config, &cfg), Path::new("."))
                .unwrap();
        assert!(!back.global.stats_access.admin);
    }
}
