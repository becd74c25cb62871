//! The HAProxy configuration dialect: `llmgw check|run -c FILE.cfg`.
//!
//! This module owns reading an `haproxy.cfg` — sections `global`,
//! `defaults`, `frontend`, `backend` and `listen` — and compiling the subset
//! llmgw implements into the same [`Config`] model the native TOML reader
//! produces. Every problem is collected as `FILE:LINE: message` (with the
//! fix where it is obvious); anything outside the subset is an error rather
//! than silently ignored, and `--lenient` turns the tuning-only ones (and
//! the seed configuration's two known faults) into warnings. Directives
//! whose behaviour arrives with later issues are accepted, carried in the
//! model, and noted in a warning. A `listen`/`frontend` section with
//! `stats` keywords (or `http-request use-service prometheus-exporter`)
//! is the stats listener (`Global::stats`, `Global::stats_access`), not a
//! frontend: HAProxy's usual spelling of a stats page on its own address.

pub mod cond;
pub mod lexer;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use self::cond::{parse_test, split_cond, Acls};
use self::lexer::{lex, Line, Word};
use super::diag::{Diag, Diags};
use super::log::{haproxy_log_line, LogFormat, LogTarget};
use super::model::*;
use super::native::{
    check_stats_uri, parse_balance, parse_listen_addr, parse_server_addr, DEFAULT_BODY_LIMIT,
    DEFAULT_MAX_TOKENS,
};
use super::units::{parse_duration, parse_size};

/// How strictly to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Unsupported tuning-only directives become warnings, and the seed
    /// configuration's faults are repaired (with a warning each).
    pub lenient: bool,
}

/// A compiled configuration and the warnings about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diag>,
}

pub fn load_file(path: &Path, opts: Options) -> Result<Loaded, Diags> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diags(vec![Diag {
            file: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&name, &text, path.parent().unwrap_or(Path::new(".")), opts)
}

/// Compiles HAProxy configuration text; `file` names it in diagnostics and
/// relative paths are resolved against `base`.
pub fn load_str(file: &str, text: &str, base: &Path, opts: Options) -> Result<Loaded, Diags> {
    let mut cx = Cx {
        file,
        base,
        opts,
        errors: Vec::new(),
        warnings: Vec::new(),
        stats_timeout: None,
    };
    let (lines, lex_errors) = lex(text);
    for (line, m) in lex_errors {
        cx.err(line, m);
    }
    let config = cx.compile(lines);
    cx.errors.sort_by_key(|d| d.line);
    cx.warnings.sort_by_key(|d| d.line);
    if cx.errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: cx.warnings,
        })
    } else {
        Err(Diags(cx.errors))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Global => "global",
            Kind::Defaults => "defaults",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
            Kind::Listen => "listen",
        }
    }
    fn is_fe(self) -> bool {
        matches!(self, Kind::Frontend | Kind::Listen)
    }
    fn is_be(self) -> bool {
        matches!(self, Kind::Backend | Kind::Listen)
    }
}

/// Sections HAProxy has that llmgw does not.
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "peers",
    "resolvers",
    "userlist",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
    "dynamic-update",
];

/// Directives that only tune HAProxy's own machinery; `--lenient` ignores
/// them with a warning.
fn tuning_only(dir: &str, args: &[Word]) -> bool {
    let a0 = args.first().map(|w| w.text.as_str()).unwrap_or("");
    dir.starts_with("tune.")
        || matches!(
            dir,
            "daemon"
                | "master-worker"
                | "chroot"
                | "user"
                | "group"
                | "uid"
                | "gid"
                | "pidfile"
                | "ulimit-n"
                | "spread-checks"
                | "maxsslconn"
                | "cpu-map"
                | "nbproc"
                | "log-send-hostname"
                | "log-tag"
                | "node"
                | "description"
                | "ssl-default-bind-ciphers"
                | "ssl-default-bind-ciphersuites"
                | "ssl-default-bind-options"
                | "ssl-default-server-ciphers"
                | "ssl-default-server-ciphersuites"
                | "ssl-default-server-options"
                | "ssl-dh-param-file"
                | "fullconn"
                | "backlog"
                | "maxcompcost"
                | "maxcomprate"
                | "busy-polling"
                | "max-spread-checks"
                | "noepoll"
                | "nopoll"
                | "nosplice"
                | "insecure-fork-wanted"
                | "set-dumpable"
                | "localpeer"
                | "grace"
                | "id"
                | "capture"
                | "log-format"
                | "unique-id-format"
                | "unique-id-header"
        )
        || (dir == "option"
            && matches!(
                a0,
                "http-server-close"
                    | "httpclose"
                    | "abortonclose"
                    | "log-health-checks"
                    | "splice-auto"
                    | "splice-request"
                    | "splice-response"
                    | "tcp-smart-accept"
                    | "tcp-smart-connect"
                    | "contstats"
                    | "socket-stats"
                    | "logasap"
                    | "dontlog-normal"
                    | "log-separate-errors"
                    | "clitcpka"
                    | "srvtcpka"
                    | "tcpka"
                    | "http-no-delay"
                    | "http-pretend-keepalive"
            ))
        || (dir == "timeout" && matches!(a0, "client-fin" | "server-fin"))
        || (dir == "stats"
            && matches!(
                a0,
                "timeout"
                    | "maxconn"
                    | "bind-process"
                    // Cosmetics of HAProxy's own page.
                    | "hide-version"
                    | "show-legends"
                    | "show-node"
                    | "show-desc"
                    | "show-modules"
            ))
}

/// Per-section settings; `defaults` sections produce the template each
/// later proxy starts from.
#[derive(Clone, Default)]
struct Draft {
    mode: Option<Mode>,
    timeouts: Option<Timeouts>,
    maxconn: Option<u32>,
    forwardfor: bool,
    balance: Option<Balance>,
    hash_type: Option<HashType>,
    opts: BackendOpts,
    /// `http-reuse never`: no idle upstream connection is kept for reuse.
    /// (`safe`, `aggressive` and `always` all mean pooled keep-alive
    /// connections here: an idle connection is only ever reused whole.)
    reuse_never: bool,
    /// `default-server` options (line, words), applied before each server's.
    default_server: Vec<(usize, Vec<Word>)>,
    /// `fallback BACKEND [model NAME] [on KEYWORD…]` lines, resolved once
    /// every backend is known.
    fallback: Vec<FallbackLine>,
    /// `log global`, `log TARGET …` or `no log`.
    log: LogDecl,
    /// `option httplog` / `option jsonlog`.
    log_format: Option<LogFormat>,
    /// `option dontlognull`.
    dontlognull: bool,
}

/// What a section says about logging.
#[derive(Clone, Default)]
enum LogDecl {
    /// Nothing: no access log (as in HAProxy, a proxy logs only with a
    /// `log` line of its own or inherited from `defaults`).
    #[default]
    Unset,
    /// `log global`: the global section's target.
    Global,
    /// `log TARGET …` in the section, with its line.
    Own(Box<LogTarget>, usize),
    /// `no log`.
    Off,
}

/// A `fallback` line as written (llmgw's own directive).
#[derive(Clone)]
struct FallbackLine {
    line: usize,
    backend: String,
    model: Option<String>,
    on: Vec<String>,
}

/// A proxy section being compiled.
struct Proxy {
    kind: Kind,
    name: String,
    line: usize,
    d: Draft,
    binds: Vec<Bind>,
    bind_lines: usize,
    default_backend: Option<(usize, String)>,
    use_backend: Vec<(usize, String, Expr)>,
    acls: Acls,
    req_rules: Vec<HttpReqRule>,
    resp_rules: Vec<HttpRespRule>,
    servers: Vec<Server>,
    server_names: HashSet<String>,
    stick_table: Option<StickTable>,
    /// `track-sc` rules: (line, key, table named explicitly).
    tracks: Vec<(usize, String, Option<String>)>,
    /// `observe` / `error-limit` / `on-error` written as backend directives.
    misplaced: Vec<(usize, Vec<Word>)>,
    /// Conditions read, with their line, for the stick-counter notes.
    conds: Vec<(usize, Expr)>,
    tcp: TcpRequest,
    /// Lines of `tcp-request content` rules, to report misuse in `mode http`.
    tcp_lines: Vec<usize>,
    /// Lines of rules and options that need HTTP, ignored in `mode tcp`
    /// with a warning as HAProxy does: (line, what).
    http_only: Vec<(usize, String)>,
    /// `stats enable|auth|admin|realm|refresh|uri` lines: this section is
    /// the stats listener, not a frontend.
    stats: Option<StatsDraft>,
    /// `http-request use-service prometheus-exporter`: also the stats
    /// listener (it serves `/metrics`).
    prometheus: Option<usize>,
}

/// What a stats section's `stats` lines said.
struct StatsDraft {
    /// The first `stats` line.
    line: usize,
    access: StatsAccess,
}

impl Proxy {
    fn new(kind: Kind, name: &str, line: usize, d: Draft) -> Proxy {
        Proxy {
            kind,
            name: name.to_owned(),
            line,
            d,
            binds: Vec::new(),
            bind_lines: 0,
            default_backend: None,
            use_backend: Vec::new(),
            acls: Acls::new(),
            req_rules: Vec::new(),
            resp_rules: Vec::new(),
            servers: Vec::new(),
            server_names: HashSet::new(),
            stick_table: None,
            tracks: Vec::new(),
            misplaced: Vec::new(),
            conds: Vec::new(),
            tcp: TcpRequest::default(),
            tcp_lines: Vec::new(),
            http_only: Vec::new(),
            stats: None,
            prometheus: None,
        }
    }
}

/// `acl`, `http-request` and `http-response` lines embedded in the native
/// TOML (as `acl = [...]`, `http_request_rules = [...]`, …), compiled the
/// way this dialect compiles them, so a converted `.cfg` serves the same.
#[derive(Debug, Default)]
pub struct Embedded {
    pub acls: Acls,
    pub req: Vec<HttpReqRule>,
    pub resp: Vec<HttpRespRule>,
    /// `tcp-request inspect-delay` and `content` lines.
    pub tcp: TcpRequest,
}

/// Compiles embedded lines for the section `name`; each error names the
/// line it comes from.
pub fn embedded_rules(
    name: &str,
    acl: &[String],
    req: &[String],
    resp: &[String],
    tcp: &[String],
) -> (Embedded, Vec<String>) {
    let mut cx = Cx {
        file: "",
        base: Path::new("."),
        opts: Options::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
        stats_timeout: None,
    };
    let mut p = Proxy::new(Kind::Listen, name, 0, Draft::default());
    let mut errors = Vec::new();
    for (prefix, lines) in [
        ("acl", acl),
        ("http-request", req),
        ("http-response", resp),
        ("tcp-request", tcp),
    ] {
        for text in lines {
            let (mut lines, lex_errors) = lex(&format!("{prefix} {text}"));
            for (_, e) in lex_errors {
                errors.push(format!("'{text}': {e}"));
            }
            if let Some(l) = lines.pop() {
                cx.proxy_line(&l, &mut p);
                for d in cx.errors.drain(..) {
                    errors.push(format!("'{text}': {}", d.message));
                }
            }
        }
    }
    (
        Embedded {
            acls: p.acls,
            req: p.req_rules,
            resp: p.resp_rules,
            tcp: p.tcp,
        },
        errors,
    )
}

/// Compiles an embedded `if …` / `unless …` condition.
pub fn embedded_cond(text: &str, acls: &Acls) -> Result<Expr, String> {
    let (mut lines, lex_errors) = lex(text);
    if let Some((_, e)) = lex_errors.into_iter().next() {
        return Err(e);
    }
    let words = lines.pop().map(|l| l.words).unwrap_or_default();
    if !words.first().is_some_and(|w| w.is("if") || w.is("unless")) {
        return Err(format!(
            "condition '{text}' must start with 'if' or 'unless'"
        ));
    }
    match split_cond(&words, acls)? {
        (_, Some(e)) => Ok(e),
        (_, None) => Err(format!("condition '{text}' is empty")),
    }
}

/// The raw lines of each proxy section: (kind, name, lines), for `convert`.
pub fn proxy_sections(text: &str) -> Vec<(&'static str, String, Vec<Line>)> {
    let mut out: Vec<(&'static str, String, Vec<Line>)> = Vec::new();
    let mut inside = false;
    for l in lex(text).0 {
        let head = &l.words[0];
        let kind = match head.text.as_str() {
            _ if head.quoted => None,
            "frontend" => Some("frontend"),
            "backend" => Some("backend"),
            "listen" => Some("listen"),
            "global" | "defaults" => Some(""),
            k if UNSUPPORTED_SECTIONS.contains(&k) => Some(""),
            _ => None,
        };
        match kind {
            Some("") => inside = false,
            Some(k) => {
                inside = true;
                let name = l.words.get(1).map(|w| w.text.clone()).unwrap_or_default();
                out.push((k, name, Vec::new()));
            }
            None if inside => {
                if let Some(s) = out.last_mut() {
                    s.2.push(l);
                }
            }
            None => {}
        }
    }
    out
}

/// Writes words back in HAProxy syntax, quoting where the lexer needs it.
pub fn render(words: &[Word]) -> String {
    words.iter().map(render_word).collect::<Vec<_>>().join(" ")
}

fn render_word(w: &Word) -> String {
    let special = ["{", "}", "!", "||", "if", "unless", "or"];
    let plain = !w.text.is_empty()
        && !w
            .text
            .contains(|c: char| c.is_whitespace() || "\"'\\#$".contains(c))
        && !(w.quoted && (special.contains(&w.text.as_str()) || w.text.starts_with('!')));
    if plain {
        return w.text.clone();
    }
    let mut out = String::from("\"");
    for c in w.text.chars() {
        match c {
            '"' | '\\' | '$' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Cx<'a> {
    file: &'a str,
    base: &'a Path,
    opts: Options,
    errors: Vec<Diag>,
    warnings: Vec<Diag>,
    /// `stats timeout`, for a `stats socket` declared after it.
    stats_timeout: Option<Duration>,
}

fn texts(w: &[Word]) -> Vec<&str> {
    w.iter().map(|w| w.text.as_str()).collect()
}

impl Cx<'_> {
    fn err(&mut self, line: usize, m: impl Into<String>) {
        self.errors.push(Diag {
            file: self.file.to_owned(),
            line,
            message: m.into(),
        });
    }

    fn warn(&mut self, line: usize, m: impl Into<String>) {
        self.warnings.push(Diag {
            file: self.file.to_owned(),
            line,
            message: format!("warning: {}", m.into()),
        });
    }

    /// An unsupported directive: an error, or with `--lenient` a warning
    /// when it only tunes HAProxy itself.
    fn unsupported(&mut self, l: &Line) {
        let dir = &l.words[0].text;
        let shown = if matches!(dir.as_str(), "option" | "timeout" | "stats" | "http-check") {
            texts(&l.words[..l.words.len().min(2)]).join(" ")
        } else {
            dir.clone()
        };
        if tuning_only(dir, &l.words[1..]) {
            if self.opts.lenient {
                self.warn(
                    l.line,
                    format!("directive '{shown}' is not supported; ignored (--lenient)"),
                );
            } else {
                self.err(
                    l.line,
                    format!("directive '{shown}' is not supported (it only tunes HAProxy: --lenient ignores it)"),
                );
            }
        } else {
            self.err(l.line, format!("directive '{shown}' is not supported"));
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn compile(&mut self, lines: Vec<Line>) -> Config {
        let mut global = Global {
            maxconn: None,
            nbthread: 0,
            stats: None,
            stats_access: StatsAccess::default(),
            stats_socket: None,
            tune_bufsize: None,
            ssl_cachesize: None,
            default_max_tokens: None,
            log: None,
            log_level: None,
            hard_stop_after: None,
        };
        let mut template = Draft::default();
        let mut proxies: Vec<Proxy> = Vec::new();
        // The section being read: None before any, Some(None) in an
        // unsupported one (its lines are skipped).
        let mut current: Option<Option<Kind>> = None;
        for l in lines {
            let head = &l.words[0];
            let kw = if head.quoted { "" } else { head.text.as_str() };
            let kind = match kw {
                "global" => Some(Kind::Global),
                "defaults" => Some(Kind::Defaults),
                "frontend" => Some(Kind::Frontend),
                "backend" => Some(Kind::Backend),
                "listen" => Some(Kind::Listen),
                _ => None,
            };
            if let Some(kind) = kind {
                current = Some(Some(kind));
                match kind {
                    Kind::Global => {}
                    // A new defaults section starts from scratch, as in HAProxy.
                    Kind::Defaults => template = Draft::default(),
                    _ => {
                        let Some(name) = l.words.get(1) else {
                            self.err(l.line, format!("'{kw}' needs a name"));
                            current = Some(None);
                            continue;
                        };
                        if l.words.len() > 2 {
                            self.err(
                                l.line,
                                format!("unexpected '{}' after the {kw} name", l.words[2].text),
                            );
                        }
                        proxies.push(Proxy::new(kind, &name.text, l.line, template.clone()));
                    }
                }
                continue;
            }
            if UNSUPPORTED_SECTIONS.contains(&kw) {
                self.err(l.line, format!("section '{kw}' is not supported"));
                current = Some(None);
                continue;
            }
            match current {
                None => self.err(l.line, format!("'{}' appears before any section (global, defaults, frontend, backend or listen)", head.text)),
                Some(None) => {}
                Some(Some(Kind::Global)) => self.global(&l, &mut global),
                Some(Some(Kind::Defaults)) => {
                    let mut d = std::mem::take(&mut template);
                    self.defaults(&l, &mut d);
                    template = d;
                }
                Some(Some(_)) => {
                    if let Some(mut p) = proxies.pop() {
                        self.proxy_line(&l, &mut p);
                        proxies.push(p);
                    }
                }
            }
        }
        self.stats_section(&mut global, &mut proxies);
        self.finish(global, proxies)
    }

    fn global(&mut self, l: &Line, g: &mut Global) {
        let a = &l.words[1..];
        match l.words[0].text.as_str() {
            "maxconn" => match one_num::<u32>(a) {
                Some(n) if n > 0 => g.maxconn = Some(n),
                _ => self.err(l.line, "'maxconn' needs a positive number"),
            },
            "hard-stop-after" => match a.first().map(|w| parse_duration(&w.text)) {
                Some(Ok(d)) if a.len() == 1 => g.hard_stop_after = Some(d),
                Some(Err(e)) => self.err(l.line, format!("'hard-stop-after': {e}")),
                _ => self.err(l.line, "'hard-stop-after' needs one time (e.g. 30s)"),
            },
            "nbthread" => match one_num::<usize>(a) {
                Some(n) if (1..=MAX_THREADS).contains(&n) => g.nbthread = n,
                _ => self.err(l.line, format!("'nbthread' needs a number of threads from 1 to {MAX_THREADS}")),
            },
            "tune.ssl.cachesize" => match one_num::<usize>(a) {
                Some(n) => g.ssl_cachesize = Some(n),
                None => self.err(
                    l.line,
                    "'tune.ssl.cachesize' needs a number of sessions (0 disables the cache)",
                ),
            },
            "tune.llm.default-max-tokens" => match one_num::<u64>(a) {
                Some(n) => g.default_max_tokens = Some(n),
                None => self.err(
                    l.line,
                    "'tune.llm.default-max-tokens' needs a number of tokens (the completion budget reserved for a request without max_tokens)",
                ),
            },
            "tune.bufsize" => match a.first().map(|w| parse_size(&w.text)) {
                Some(Ok(n)) if a.len() == 1 && n >= 1024 => g.tune_bufsize = Some(n as usize),
                _ => self.err(l.line, "'tune.bufsize' needs a size of at least 1024"),
            },
            "log" => match haproxy_log_line(&texts(a), self.base) {
                Ok(_) if g.log.is_some() => self.err(
                    l.line,
                    "a second global 'log' target: llmgw sends access logs to one target",
                ),
                Ok(t) => g.log = Some(t),
                Err(e) => self.err(l.line, e),
            },
            "stats" if a.first().is_some_and(|w| w.text == "socket") => self.stats_socket(l, g),
            "stats" if a.first().is_some_and(|w| w.text == "timeout") => {
                let t = match a.get(1).map(|w| parse_duration(&w.text)) {
                    Some(Ok(t)) if a.len() == 2 && !t.is_zero() => t,
                    Some(Err(e)) => return self.err(l.line, e),
                    _ => {
                        return self.err(
                            l.line,
                            "'stats timeout' needs a duration above 0 (e.g. 'stats timeout 10s')",
                        )
                    }
                };
                // It may come before or after the socket it applies to.
                self.stats_timeout = Some(t);
                if let Some(s) = &mut g.stats_socket {
                    s.timeout = t;
                }
            }
            _ => self.unsupported(l),
        }
    }

    /// `stats socket PATH [mode OCTAL] [level user|operator|admin]
    /// [expose-fd listeners]`: the runtime API. Ownership options (`user`,
    /// `group`, `uid`, `gid`) are accepted and not applied, with a warning.
    fn stats_socket(&mut self, l: &Line, g: &mut Global) {
        let a = &l.words[1..];
        let Some(path) = a.get(1) else {
            return self.err(l.line, "'stats socket' needs a path");
        };
        if g.stats_socket.is_some() {
            return self.err(
                l.line,
                "only one 'stats socket' is supported (the runtime API listens on one path)",
            );
        }
        let mut sock = StatsSocket::new(self.path(&path.text));
        if let Some(t) = self.stats_timeout {
            sock.timeout = t;
        }
        let mut i = 2;
        while i < a.len() {
            let opt = a[i].text.as_str();
            let value = a.get(i + 1).map(|w| w.text.as_str());
            match (opt, value) {
                ("mode" | "level" | "user" | "group" | "uid" | "gid" | "expose-fd", None) => {
                    self.err(l.line, format!("'{opt}' needs a value"));
                }
                ("mode", Some(v)) => match u32::from_str_radix(v, 8) {
                    Ok(m) if m <= 0o7777 => sock.mode = Some(m),
                    _ => self.err(
                        l.line,
                        format!("stats socket 'mode' must be octal permission bits (e.g. 600), not '{v}'"),
                    ),
                },
                ("level", Some(v)) => match AccessLevel::parse(v) {
                    Some(level) => sock.level = level,
                    None => self.err(l.line, "stats socket 'level' must be user, operator or admin"),
                },
                ("expose-fd", Some("listeners")) => sock.expose_fd = true,
                ("expose-fd", Some(v)) => self.err(
                    l.line,
                    format!("stats socket 'expose-fd' takes 'listeners', not '{v}'"),
                ),
                ("user" | "group" | "uid" | "gid", Some(_)) => self.warn(
                    l.line,
                    format!("stats socket option '{opt}' is accepted and not applied (the socket keeps the process's owner; use 'mode' for access)"),
                ),
                (other, _) => {
                    self.err(
                        l.line,
                        format!("stats socket option '{other}' is not supported"),
                    );
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        g.stats_socket = Some(sock);
    }

    /// Directives valid in `defaults` (and also in proxies).
    fn common(&mut self, l: &Line, d: &mut Draft, kind: Kind) -> bool {
        let a = &l.words[1..];
        let dir = l.words[0].text.as_str();
        match dir {
            "mode" => match texts(a).as_slice() {
                ["http"] => d.mode = Some(Mode::Http),
                ["tcp"] => d.mode = Some(Mode::Tcp),
                _ => self.err(l.line, "'mode' must be 'http' or 'tcp'"),
            },
            "log" => match texts(a).as_slice() {
                ["global"] => d.log = LogDecl::Global,
                words => match haproxy_log_line(words, self.base) {
                    Ok(t) => d.log = LogDecl::Own(Box::new(t), l.line),
                    Err(e) => self.err(l.line, e),
                },
            },
            "no" => match texts(a).as_slice() {
                ["log"] => d.log = LogDecl::Off,
                ["option", "httplog" | "jsonlog"] => d.log_format = None,
                ["option", "dontlognull"] => d.dontlognull = false,
                ["option", "tcplog" | "http-keep-alive" | "http-buffer-request"] => {}
                _ => self.unsupported(l),
            },
            "timeout" => self.timeout(l, d),
            "option" => self.option(l, d, kind),
            "maxconn" => {
                if kind == Kind::Backend {
                    self.err(l.line, "'maxconn' is not allowed in a backend (set it on the frontend, or per server)");
                } else {
                    match one_num::<u32>(a) {
                        Some(n) => d.maxconn = Some(n),
                        None => self.err(l.line, "'maxconn' needs a number"),
                    }
                }
            }
            "http-reuse" if kind == Kind::Frontend => {
                self.err(l.line, "'http-reuse' is not allowed in a frontend (it belongs in a backend, listen or defaults)");
            }
            "http-reuse" => match a.first().map(|w| w.text.as_str()) {
                Some("never") if a.len() == 1 => d.reuse_never = true,
                Some("safe" | "aggressive" | "always") if a.len() == 1 => d.reuse_never = false,
                _ => self.err(
                    l.line,
                    "'http-reuse' takes one of never, safe, aggressive, always",
                ),
            },
            "fallback" if kind != Kind::Backend && kind != Kind::Listen => {
                self.err(l.line, format!("'fallback' is not allowed in a {} section (it belongs in a backend or listen)", kind.name()));
            }
            "fallback" => {
                if let Some(f) = self.fallback_line(l.line, a) {
                    d.fallback.push(f);
                }
            }
            "retries" => match one_num::<u32>(a) {
                Some(n) => d.opts.retries = Some(n),
                None => self.err(l.line, "'retries' needs a number"),
            },
            "retry-on" => {
                if a.is_empty() {
                    self.err(l.line, "'retry-on' needs at least one keyword");
                }
                for w in a {
                    if crate::config::model::retry_on::bit(&w.text).is_none() {
                        self.err(l.line, format!("unknown retry-on keyword '{}'", w.text));
                    }
                }
                d.opts.retry_on = a.iter().map(|w| w.text.clone()).collect();
            }
            "default-server" => {
                if kind == Kind::Frontend {
                    self.err(l.line, "'default-server' is not allowed in a frontend");
                } else {
                    // Validated now so errors point at this line.
                    let mut probe = ServerOpts::default();
                    let mut s = blank_server();
                    self.server_opts(l.line, a, &mut s, &mut probe);
                    d.default_server.push((l.line, a.to_vec()));
                }
            }
            "balance" | "hash-type" if kind == Kind::Frontend => {
                self.err(
                    l.line,
                    format!(
                        "'{dir}' is not allowed in a frontend (it belongs in a backend or listen)"
                    ),
                );
            }
            "balance" => {
                let spec = texts(a).join(" ");
                match parse_balance(&spec) {
                    Ok(b) => d.balance = Some(b),
                    Err(e) => self.err(l.line, e),
                }
            }
            "hash-type" => match a.first().map(|w| w.text.as_str()) {
                Some("consistent") => d.hash_type = Some(HashType::Consistent),
                Some("map-based") => d.hash_type = Some(HashType::MapBased),
                _ => self.err(l.line, "'hash-type' must be 'map-based' or 'consistent'"),
            },
            "http-check" if kind == Kind::Frontend => {
                self.err(l.line, "'http-check' is not allowed in a frontend (it belongs in a backend, listen or defaults)");
            }
            "http-check" => match a.first().map(|w| w.text.as_str()) {
                Some("expect") => match super::check::parse_expect(&texts(&a[1..])) {
                    Ok(e) => d.opts.http_check_expect = Some(e),
                    Err(e) => self.err(l.line, e),
                },
                Some("send") => {
                    if let Some(send) = self.http_check_send(l.line, &a[1..]) {
                        d.opts.http_check_send = Some(send);
                    }
                }
                _ => self.unsupported(l),
            },
            _ => return false,
        }
        true
    }

    /// `fallback BACKEND [model NAME] [on KEYWORD…]`.
    fn fallback_line(&mut self, line: usize, a: &[Word]) -> Option<FallbackLine> {
        let usage = "'fallback' needs a backend name, then optionally 'model NAME' and 'on' with retry-on keywords (e.g. 'fallback azure model gpt-4o on 429 503 conn-failure')";
        let Some((name, mut rest)) = a.split_first() else {
            self.err(line, usage);
            return None;
        };
        let mut f = FallbackLine {
            line,
            backend: name.text.clone(),
            model: None,
            on: Vec::new(),
        };
        while let Some((w, tail)) = rest.split_first() {
            match (w.text.as_str(), tail) {
                ("model", [m, tail @ ..]) if f.model.is_none() => {
                    f.model = Some(m.text.clone());
                    rest = tail;
                }
                ("on", words) if !words.is_empty() => {
                    f.on = words.iter().map(|w| w.text.clone()).collect();
                    rest = &[];
                }
                _ => {
                    self.err(line, usage);
                    return None;
                }
            }
        }
        Some(f)
    }

    fn defaults(&mut self, l: &Line, d: &mut Draft) {
        if !self.common(l, d, Kind::Defaults) {
            match l.words[0].text.as_str() {
                "bind" | "acl" | "use_backend" | "default_backend" | "server" | "http-request"
                | "http-response" | "stick-table" => self.err(
                    l.line,
                    format!("'{}' is not allowed in a defaults section", l.words[0].text),
                ),
                _ => self.unsupported(l),
            }
        }
    }

    fn timeout(&mut self, l: &Line, d: &mut Draft) {
        let a = &l.words[1..];
        let (Some(which), Some(v), true) = (a.first(), a.get(1), a.len() == 2) else {
            if a.first()
                .is_some_and(|w| matches!(w.text.as_str(), "client-fin" | "server-fin"))
            {
                return self.unsupported(l);
            }
            return self.err(
                l.line,
                "'timeout' needs a name and a duration (e.g. 'timeout connect 5s')",
            );
        };
        let dur = match parse_duration(&v.text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => return self.err(l.line, "a timeout of 0 is not allowed"),
            Err(e) => return self.err(l.line, e),
        };
        let t = d.timeouts.get_or_insert_with(Timeouts::default);
        match which.text.as_str() {
            "connect" => t.connect = dur,
            "client" => t.client = dur,
            "server" => t.server = dur,
            "http-request" => t.http_request = dur,
            "http-keep-alive" => t.http_keep_alive = dur,
            "tunnel" => {
                t.tunnel = dur;
                t.tunnel_set = true;
            }
            "queue" => d.opts.timeout_queue = Some(dur),
            // llmgw's own: time to first token (no HAProxy equivalent).
            "ttft" => t.ttft = Some(dur),
            "tarpit" => t.tarpit = Some(dur),
            "check" => d.opts.timeout_check = Some(dur),
            _ => self.unsupported(l),
        }
    }

    fn option(&mut self, l: &Line, d: &mut Draft, kind: Kind) {
        let a = &l.words[1..];
        let Some(o) = a.first() else {
            return self.err(l.line, "'option' needs a name");
        };
        let be_only = |cx: &mut Self| {
            if kind == Kind::Frontend {
                cx.err(l.line, format!("'option {}' is not allowed in a frontend (it belongs in a backend or listen)", o.text));
                false
            } else {
                true
            }
        };
        match o.text.as_str() {
            "httplog" if a.len() > 1 => {
                self.err(l.line, format!("'option httplog {}' is not supported (only plain 'option httplog', or llmgw's 'option jsonlog')", a[1].text));
            }
            "httplog" => d.log_format = Some(LogFormat::Httplog),
            // llmgw's own: one JSON object per line, with the LLM fields.
            "jsonlog" => d.log_format = Some(LogFormat::Json),
            "dontlognull" => d.dontlognull = true,
            // Keep-alive is how llmgw behaves anyway; mode tcp frontends
            // write no access log yet.
            "tcplog" | "http-keep-alive" | "http-buffer-request" => {}
            "forwardfor" => {
                if a.len() > 1 {
                    self.err(l.line, format!("'option forwardfor {}' is not supported (only plain 'option forwardfor')", a[1].text));
                }
                d.forwardfor = true;
            }
            "redispatch" => {
                if be_only(self) {
                    d.opts.redispatch = true;
                }
            }
            "allbackups" => {
                if be_only(self) {
                    d.opts.allbackups = true;
                }
            }
            "httpchk" => {
                if be_only(self) {
                    let (m, u) = match texts(&a[1..]).as_slice() {
                        [] => ("OPTIONS", "/"),
                        [u] => ("OPTIONS", *u),
                        [m, u] | [m, u, _] => (*m, *u),
                        _ => {
                            self.err(l.line, "'option httpchk' takes [METHOD] [URI] [VERSION]");
                            return;
                        }
                    };
                    if http::Method::from_bytes(m.as_bytes()).is_err() {
                        return self.err(l.line, format!("'option httpchk': invalid method '{m}'"));
                    }
                    if !u.starts_with('/') || u.parse::<http::uri::PathAndQuery>().is_err() {
                        return self.err(l.line, format!("'option httpchk': the URI must be a path starting with '/', not '{u}'"));
                    }
                    d.opts.httpchk = Some((m.to_owned(), u.to_owned()));
                }
            }
            _ => self.unsupported(l),
        }
    }

    fn proxy_line(&mut self, l: &Line, p: &mut Proxy) {
        let dir = l.words[0].text.clone();
        let a = &l.words[1..];
        let kind = p.kind;
        let mut d = std::mem::take(&mut p.d);
        let handled = self.common(l, &mut d, kind);
        p.d = d;
        if handled {
            return;
        }
        let fe_only = |cx: &mut Self| {
            if !kind.is_fe() {
                cx.err(
                    l.line,
                    format!(
                        "'{dir}' is not allowed in a backend (it belongs in a frontend or listen)"
                    ),
                );
            }
            kind.is_fe()
        };
        match dir.as_str() {
            "bind" => {
                if fe_only(self) {
                    p.bind_lines += 1;
                    self.bind(l, p);
                }
            }
            "default_backend" => {
                if fe_only(self) {
                    match texts(a).as_slice() {
                        [b] => p.default_backend = Some((l.line, b.to_string())),
                        _ => self.err(l.line, "'default_backend' needs one backend name"),
                    }
                }
            }
            "use_backend" => {
                if fe_only(self) {
                    match split_cond(a, &p.acls) {
                        Err(e) => self.err(l.line, e),
                        Ok((args, cond)) => match texts(args).as_slice() {
                            [b] if b.contains("%[") => self.err(l.line, "dynamic backend names ('%[...]') are not supported"),
                            [b] => {
                                let cond = cond.unwrap_or(Expr::All(vec![]));
                                p.conds.push((l.line, cond.clone()));
                                p.use_backend.push((l.line, b.to_string(), cond));
                            }
                            _ => self.err(l.line, "'use_backend' needs one backend name, then 'if' or 'unless' and a condition"),
                        },
                    }
                }
            }
            "acl" => {
                let Some(name) = a.first() else {
                    return self.err(l.line, "'acl' needs a name and a test");
                };
                let valid = !name.text.is_empty()
                    && name.text.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
                    });
                if !valid {
                    return self.err(l.line, format!("invalid ACL name '{}'", name.text));
                }
                match parse_test(&a[1..]) {
                    Ok(e) => {
                        p.conds.push((l.line, e.clone()));
                        p.acls.entry(name.text.clone()).or_default().push(e);
                    }
                    Err(e) => self.err(l.line, e),
                }
            }
            "http-request"
                if texts(&a[..a.len().min(2)]) == ["use-service", "prometheus-exporter"] =>
            {
                // The stats listener serves /metrics whatever the condition.
                if let Err(e) = split_cond(a, &p.acls) {
                    self.err(l.line, e);
                }
                p.prometheus.get_or_insert(l.line);
            }
            "http-request" => {
                p.http_only.push((l.line, "'http-request' rules".into()));
                self.http_request(l, p)
            }
            "stats" => self.stats_line(l, p),
            "http-response" => {
                p.http_only.push((l.line, "'http-response' rules".into()));
                self.http_response(l, p)
            }
            "tcp-request" => {
                if fe_only(self) {
                    self.tcp_request(l, p);
                }
            }
            "stick-table" => self.stick_table(l, p),
            "server" => {
                if kind.is_be() {
                    self.server(l, p);
                } else {
                    self.err(
                        l.line,
                        "'server' is not allowed in a frontend (it belongs in a backend or listen)",
                    );
                }
            }
            "observe" | "error-limit" | "on-error" if kind.is_be() => {
                p.misplaced.push((l.line, l.words.clone()))
            }
            _ => self.unsupported(l),
        }
    }

    /// A proxy's `stats` line. As in HAProxy, any of them makes the section
    /// serve statistics; here such a section *is* the stats listener (its
    /// one `bind` is the address), apart from client traffic.
    fn stats_line(&mut self, l: &Line, p: &mut Proxy) {
        if p.kind == Kind::Backend {
            return self.err(l.line, "'stats' in a backend is not supported: the stats page has its own listener (put 'bind' and 'stats enable' in a listen or frontend section of their own)");
        }
        let a = texts(&l.words[1..]);
        let line = l.line;
        let st = p.stats.get_or_insert_with(|| StatsDraft {
            line,
            // As in HAProxy, admin actions only with `stats admin`.
            access: StatsAccess {
                admin: false,
                ..StatsAccess::default()
            },
        });
        match a.as_slice() {
            ["enable"] => {}
            ["auth", ua] => match StatsUser::parse(ua) {
                Ok(u) if st.access.users.iter().any(|o| o.name == u.name) => {
                    self.err(line, format!("'stats auth': user '{}' is listed twice", u.name))
                }
                Ok(u) => st.access.users.push(u),
                // Never echo the entry: it holds a password.
                Err(e) => self.err(line, e),
            },
            ["auth", ..] => self.err(line, "'stats auth' needs one 'user:password'"),
            // Only the unconditional form: the admin endpoint always asks
            // for a `stats auth` user, which is what guards it here.
            ["admin", "if", "TRUE"] | ["admin", "unless", "FALSE"] => st.access.admin = true,
            ["admin", ..] => self.err(line, "only 'stats admin if TRUE' is supported (admin actions always need a 'stats auth' user, and are refused without one)"),
            ["realm", r] => {
                if r.contains(['"', '\\']) || HeaderValue::from_str(r).is_err() {
                    self.err(line, "'stats realm' must be printable text without quotes or backslashes");
                } else {
                    // HAProxy shows `\ ` escapes as spaces; so do we.
                    st.access.realm = r.to_string();
                }
            }
            ["refresh", t] => match parse_duration(t) {
                Ok(d) if d >= Duration::from_millis(500) => st.access.refresh = d,
                Ok(_) => self.err(line, "'stats refresh' must be at least 500ms"),
                Err(e) => self.err(line, e),
            },
            ["uri", u] => match check_stats_uri(u) {
                Ok(()) => st.access.uri = Some(u.to_string()),
                Err(e) => self.err(line, e),
            },
            ["enable" | "realm" | "refresh" | "uri", ..] => {
                self.err(line, format!("'stats {}' takes one argument", a[0]))
            }
            _ => self.unsupported(l),
        }
    }

    /// Takes the stats section (if any) out of the proxies: its `bind` is
    /// the stats listener, its `stats` lines who may use it.
    fn stats_section(&mut self, global: &mut Global, proxies: &mut Vec<Proxy>) {
        let mut seen: Option<(String, usize)> = None;
        let all = std::mem::take(proxies);
        for mut p in all {
            if p.stats.is_none() && p.prometheus.is_none() {
                proxies.push(p);
                continue;
            }
            let st = p.stats.take().unwrap_or_else(|| StatsDraft {
                line: p.line,
                access: StatsAccess {
                    admin: false,
                    ..StatsAccess::default()
                },
            });
            if let Some((name, line)) = &seen {
                self.err(st.line, format!("only one stats section is supported: '{name}' (line {line}) already serves the stats page and /metrics"));
                continue;
            }
            seen = Some((p.name.clone(), p.line));
            let kind = p.kind.name();
            if p.d.mode == Some(Mode::Tcp) {
                self.err(
                    p.line,
                    format!("{kind} '{}': statistics need 'mode http'", p.name),
                );
            }
            let extra = [
                (!p.servers.is_empty(), "servers"),
                (
                    p.default_backend.is_some() || !p.use_backend.is_empty(),
                    "backend switching",
                ),
                (
                    !p.req_rules.is_empty() || !p.resp_rules.is_empty(),
                    "http-request/http-response rules",
                ),
                (
                    !p.tcp.connection.is_empty() || !p.tcp.content.is_empty(),
                    "tcp-request rules",
                ),
                (p.stick_table.is_some(), "a stick-table"),
            ];
            for (_, what) in extra.iter().filter(|(has, _)| *has) {
                self.err(p.line, format!("{kind} '{}' serves statistics (line {}), so it cannot also have {what}: put them in another section", p.name, st.line));
            }
            match p.binds.as_slice() {
                [b] if b.tls.is_some() || b.accept_proxy => self.err(p.line, format!("{kind} '{}': 'ssl' and 'accept-proxy' are not supported on the stats listener", p.name)),
                [b] => global.stats = Some(b.addr),
                [] => self.err(p.line, format!("{kind} '{}' serves statistics but has no 'bind' (e.g. 'bind 127.0.0.1:8404')", p.name)),
                _ => self.err(p.line, format!("{kind} '{}': the stats listener takes one address (one 'bind' with one address)", p.name)),
            }
            if st.access.admin && st.access.users.is_empty() {
                self.warn(st.line, "'stats admin' without 'stats auth': admin actions are refused (403) until a user is configured");
            }
            global.stats_access = st.access;
        }
    }

    /// `tcp-request inspect-delay T` and `tcp-request content accept|reject
    /// [if|unless COND]`.
    fn tcp_request(&mut self, l: &Line, p: &mut Proxy) {
        let (args, cond) = match split_cond(&l.words[1..], &p.acls) {
            Ok(x) => x,
            Err(e) => return self.err(l.line, e),
        };
        match texts(args).as_slice() {
            ["inspect-delay", t] if cond.is_none() => match parse_duration(t) {
                Ok(d) => p.tcp.inspect_delay = d,
                Err(e) => self.err(l.line, e),
            },
            ["inspect-delay", ..] => self.err(l.line, "'tcp-request inspect-delay' needs one duration (e.g. 'tcp-request inspect-delay 5s')"),
            ["content", act @ ("accept" | "reject")] => {
                if let Some(c) = &cond {
                    if let Some(f) = http_fetch(c) {
                        return self.err(l.line, format!("'tcp-request content' conditions on HTTP fetches ({f}) are not supported; use src, req.ssl_sni or req.ssl_hello_type"));
                    }
                    p.conds.push((l.line, c.clone()));
                }
                p.tcp_lines.push(l.line);
                p.tcp.content.push(TcpRule {
                    cond,
                    accept: *act == "accept",
                });
            }
            ["content", other, ..] => self.err(l.line, format!("'tcp-request content {other}' is not supported (use accept or reject)")),
            ["connection", rest @ ..] => self.tcp_connection(l.line, rest, cond, p),
            ["session", ..] => self.err(l.line, "'tcp-request session' is not supported; use 'tcp-request connection' (its src is the peer's address, before any PROXY header)"),
            [other, ..] => self.err(l.line, format!("'tcp-request {other}' is not supported (use inspect-delay, connection or content)")),
            [] => self.err(l.line, "'tcp-request' needs 'inspect-delay', 'connection' or 'content'"),
        }
    }

    /// `tcp-request connection accept|reject|track-scN src [table T] [if|unless
    /// COND]`: run at accept, before a byte is read, so a condition may only
    /// look at `src` and at stick counters.
    fn tcp_connection(&mut self, line: usize, args: &[&str], cond: Option<Expr>, p: &mut Proxy) {
        if let Some(c) = &cond {
            if let Some(f) = content_fetch(c) {
                return self.err(line, format!("'tcp-request connection' conditions cannot use {f}: nothing is read yet at accept time (use src or scN_* fetches, or 'tcp-request content' in mode tcp)"));
            }
            p.conds.push((line, c.clone()));
        }
        let action = match args {
            ["accept"] => ConnAction::Accept,
            ["reject"] => ConnAction::Reject,
            [t, rest @ ..] if t.starts_with("track-sc") => {
                let sc = match *t {
                    "track-sc0" => 0,
                    "track-sc1" => 1,
                    "track-sc2" => 2,
                    _ => {
                        return self.err(
                            line,
                            format!("'{t}' is not supported (use track-sc0, track-sc1 or track-sc2)"),
                        )
                    }
                };
                let table = match rest {
                    ["src"] => None,
                    ["src", "table", t] => Some(t.to_string()),
                    [k, ..] if *k != "src" => {
                        return self.err(line, format!("'tcp-request connection {t}' key '{k}' is not supported (only src is known at accept time)"))
                    }
                    _ => {
                        return self.err(line, format!("'tcp-request connection {t}' needs the key src and optionally 'table NAME'"))
                    }
                };
                p.tracks.push((line, "src".into(), table.clone()));
                ConnAction::TrackSc {
                    sc,
                    table: table.unwrap_or_else(|| p.name.clone()),
                }
            }
            [other, ..] if matches!(*other, "accept" | "reject") => {
                return self.err(line, format!("'tcp-request connection {other}' takes no arguments (only a condition)"))
            }
            [other, ..] => {
                return self.err(line, format!("'tcp-request connection {other}' is not supported (use accept, reject or track-sc0|1|2 src)"))
            }
            [] => return self.err(line, "'tcp-request connection' needs an action (accept, reject or track-sc0|1|2 src)"),
        };
        p.tcp.connection.push(ConnRule { cond, action });
    }

    fn bind(&mut self, l: &Line, p: &mut Proxy) {
        let a = &l.words[1..];
        let Some(addrs) = a.first() else {
            return self.err(l.line, "'bind' needs an address (e.g. 'bind *:80')");
        };
        let mut ssl = false;
        let mut crts: Vec<CertFiles> = Vec::new();
        let mut alpn: Option<Vec<Vec<u8>>> = None;
        let mut accept_proxy = false;
        let mut tickets = true;
        let mut i = 1;
        while i < a.len() {
            let opt = a[i].text.as_str();
            let val = a.get(i + 1).map(|w| w.text.as_str());
            match (opt, val) {
                ("ssl", _) => ssl = true,
                ("accept-proxy", _) => accept_proxy = true,
                ("no-tls-tickets", _) => tickets = false,
                ("tls-tickets", _) => tickets = true,
                ("crt", Some(v)) => {
                    let cert = self.path(v);
                    // HAProxy looks for the key in the PEM, or next to it as PEM.key.
                    let side = PathBuf::from(format!("{}.key", cert.display()));
                    let key = if side.exists() { side } else { cert.clone() };
                    crts.push(CertFiles { cert, key });
                    i += 1;
                }
                ("alpn", Some(v)) => {
                    alpn = Some(
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| s.as_bytes().to_vec())
                            .collect(),
                    );
                    i += 1;
                }
                ("name", Some(_)) => i += 1,
                ("crt" | "alpn" | "name", None) => {
                    self.err(l.line, format!("bind option '{opt}' needs a value"))
                }
                _ => self.err(l.line, format!("bind option '{opt}' is not supported")),
            }
            i += 1;
        }
        let tls = if ssl {
            if crts.is_empty() {
                self.err(l.line, "'ssl' needs at least one 'crt FILE.pem'");
                None
            } else {
                for c in &crts {
                    if let Err(e) = crate::listen::tls::load_certified_key(c) {
                        self.err(l.line, e);
                    }
                }
                // HAProxy 2.6 offers no ALPN unless told: HTTP/1.1 only.
                Some(Tls {
                    certs: crts,
                    alpn: alpn.unwrap_or_default(),
                    tickets,
                    // `tune.ssl.cachesize` is global: set in `finish`.
                    session_cache: crate::config::DEFAULT_SSL_CACHE,
                })
            }
        } else {
            if !crts.is_empty() || alpn.is_some() {
                self.err(l.line, "'crt' and 'alpn' need 'ssl' on the same bind line");
            }
            None
        };
        for addr in addrs.text.split(',') {
            match parse_bind_addr(addr) {
                Ok(a) => p.binds.push(Bind {
                    addr: a,
                    tls: tls.clone(),
                    accept_proxy,
                }),
                Err(e) => self.err(l.line, e),
            }
        }
    }

    fn stick_table(&mut self, l: &Line, p: &mut Proxy) {
        let a = texts(&l.words[1..]);
        if p.stick_table.is_some() {
            return self.err(
                l.line,
                format!("{} '{}' already has a stick-table", p.kind.name(), p.name),
            );
        }
        let mut t = StickTable {
            name: p.name.clone(),
            key_type: String::new(),
            size: 0,
            expire: None,
            store: Vec::new(),
        };
        let mut i = 0;
        while i < a.len() {
            let v = a.get(i + 1).copied();
            match (a[i], v) {
                ("type", Some(v)) => {
                    if !matches!(v, "ip" | "ipv6" | "integer" | "string" | "binary") {
                        self.err(l.line, format!("stick-table type '{v}' is unknown (use ip, ipv6, integer, string or binary)"));
                    }
                    t.key_type = v.to_owned();
                    // `len N` may follow string/binary types.
                    if a.get(i + 2) == Some(&"len") {
                        i += 2;
                    }
                }
                ("size", Some(v)) => match parse_size(v) {
                    Ok(n) if n > 0 => t.size = n,
                    _ => self.err(l.line, format!("invalid stick-table size '{v}'")),
                },
                ("expire", Some(v)) => match parse_duration(v) {
                    Ok(d) => t.expire = Some(d),
                    Err(e) => self.err(l.line, e),
                },
                ("store", Some(v)) => {
                    for entry in crate::config::stick::split_store(v) {
                        match crate::config::stick::parse_store(std::slice::from_ref(&entry)) {
                            Ok(_) => t.store.push(entry),
                            Err(e) => self.err(l.line, e),
                        }
                    }
                }
                ("nopurge", _) => {
                    i += 1;
                    continue;
                }
                ("peers", Some(_)) => self.err(
                    l.line,
                    "stick-table 'peers' is not supported (cluster sharing arrives with issue 6)",
                ),
                (o, None) if matches!(o, "type" | "size" | "expire" | "store") => {
                    self.err(l.line, format!("stick-table '{o}' needs a value"));
                }
                (o, _) => {
                    self.err(l.line, format!("stick-table option '{o}' is not supported"));
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        if t.key_type.is_empty() || t.size == 0 {
            self.err(l.line, "stick-table needs 'type' and 'size' (e.g. 'stick-table type ip size 100k expire 30s store conn_rate(10s)')");
        }
        p.stick_table = Some(t);
    }

    fn header_name(&mut self, line: usize, s: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(line, format!("invalid header name '{s}'"));
                None
            }
        }
    }

    /// A literal header value; HAProxy's log-format expressions are not
    /// evaluated yet, so they are refused rather than sent verbatim.
    fn header_value(&mut self, line: usize, s: &str) -> Option<HeaderValue> {
        if s.contains('%') && s != "%%" {
            self.err(
                line,
                format!("log-format expressions in '{s}' are not supported (use a literal value)"),
            );
            return None;
        }
        match HeaderValue::from_str(s) {
            Ok(v) => Some(v),
            Err(_) => {
                // Not quoted: header values are where credentials are
                // written, and this message reaches logs and the runtime
                // API's `reload` answer.
                self.err(
                    line,
                    "invalid header value: it holds bytes a header cannot carry (not shown: it may be a secret)",
                );
                None
            }
        }
    }

    fn http_request(&mut self, l: &Line, p: &mut Proxy) {
        let (args, cond) = match split_cond(&l.words[1..], &p.acls) {
            Ok(x) => x,
            Err(e) => return self.err(l.line, e),
        };
        if let Some(c) = &cond {
            p.conds.push((l.line, c.clone()));
        }
        let a = texts(args);
        let Some(&action) = a.first() else {
            return self.err(l.line, "'http-request' needs an action");
        };
        let line = l.line;
        let act = match (action, &a[1..]) {
            ("set-header" | "add-header", [n, v]) => {
                let (n, v) = (self.header_name(line, n), self.header_value(line, v));
                let (Some(n), Some(v)) = (n, v) else { return };
                if action == "set-header" {
                    ReqAction::SetHeader(n, v)
                } else {
                    ReqAction::AddHeader(n, v)
                }
            }
            ("del-header", [n]) => match self.header_name(line, n) {
                Some(n) => ReqAction::DelHeader(n),
                None => return,
            },
            ("replace-path", [re, to]) => match regex::Regex::new(re) {
                Ok(r) => ReqAction::ReplacePath(r, backrefs(to)),
                Err(e) => return self.err(line, format!("invalid regex '{re}': {e}")),
            },
            ("set-path", [to]) => {
                if to.contains('%') || !to.starts_with('/') {
                    return self.err(
                        line,
                        format!("'set-path' needs a literal path starting with '/', not '{to}'"),
                    );
                }
                ReqAction::SetPath(to.to_string())
            }
            (kind @ ("deny" | "tarpit"), rest) => {
                let mut status = if kind == "deny" {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                match rest {
                    [] => {}
                    ["deny_status", s] => {
                        // HAProxy answers only the statuses it has an error page for.
                        const KNOWN: [u16; 17] = [
                            200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501,
                            502, 503, 504,
                        ];
                        match s.parse::<u16>().ok().filter(|n| KNOWN.contains(n)).and_then(|n| StatusCode::from_u16(n).ok()) {
                            Some(s) => status = s,
                            None => {
                                return self.err(line, format!("invalid deny_status '{s}' (HAProxy knows 200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 425, 429, 500, 501, 502, 503 and 504)"))
                            }
                        }
                    }
                    _ => {
                        return self.err(
                            line,
                            format!(
                            "'http-request {kind}' takes only 'deny_status N' (and a condition)"
                        ),
                        )
                    }
                }
                if kind == "deny" {
                    ReqAction::Deny(status)
                } else {
                    ReqAction::Tarpit(status)
                }
            }
            ("return", rest) => {
                let mut status = StatusCode::OK;
                let mut content_type = None;
                let mut body = None;
                let mut i = 0;
                while i < rest.len() {
                    match (rest[i], rest.get(i + 1)) {
                        ("status", Some(s)) => match s.parse::<u16>().ok().and_then(|n| StatusCode::from_u16(n).ok()).filter(|s| (200..=599).contains(&s.as_u16())) {
                            Some(s) => status = s,
                            None => return self.err(line, format!("invalid return status '{s}'")),
                        },
                        ("content-type", Some(t)) => match HeaderValue::from_str(t) {
                            Ok(v) => content_type = Some(v),
                            Err(_) => return self.err(line, format!("invalid content-type '{t}'")),
                        },
                        ("string", Some(s)) => body = Some(bytes::Bytes::from(s.to_string())),
                        (o, _) => return self.err(line, format!("'http-request return' option '{o}' is not supported (use status, content-type and string)")),
                    }
                    i += 2;
                }
                if body.is_some() && content_type.is_none() {
                    return self.err(
                        line,
                        "'http-request return' with 'string' needs 'content-type'",
                    );
                }
                ReqAction::Return {
                    status,
                    content_type,
                    body,
                }
            }
            (t, rest) if t.starts_with("track-sc") => {
                let sc = match t {
                    "track-sc0" => 0,
                    "track-sc1" => 1,
                    "track-sc2" => 2,
                    _ => {
                        return self.err(
                            line,
                            format!(
                                "'{t}' is not supported (use track-sc0, track-sc1 or track-sc2)"
                            ),
                        )
                    }
                };
                let (key, table) = match rest {
                    [k] => (k.to_string(), None),
                    [k, "table", t] => (k.to_string(), Some(t.to_string())),
                    _ => {
                        return self.err(
                            line,
                            format!("'{t}' needs a key and optionally 'table NAME'"),
                        )
                    }
                };
                // The model, as conditions name it (the lexer has dropped
                // the quotes of `json_query('$.model')`).
                let key = if key == "req.body,json_query($.model)" {
                    MODEL_KEY.to_owned()
                } else {
                    key
                };
                if !matches!(key.as_str(), "src" | MODEL_KEY)
                    && !key.starts_with("req.hdr(")
                    && !key.starts_with("hdr(")
                    && body_key_path(&key).is_none()
                {
                    return self.err(
                        line,
                        format!("track key '{key}' is not supported (use src, req.hdr(NAME), or a body field as req.body,json_query('$.FIELD') — a dotted path of object members)"),
                    );
                }
                p.tracks.push((line, key.clone(), table.clone()));
                ReqAction::TrackSc {
                    sc,
                    key,
                    table: table.unwrap_or_else(|| p.name.clone()),
                }
            }
            (t, rest) if t.starts_with("sc-inc-gpc") || t.starts_with("sc-set-gpt0") => {
                let Some((idx, sc)) = gpc_action(t) else {
                    return self.err(line, format!("'{t}' is not supported (use sc-inc-gpc0(SC), sc-inc-gpc1(SC), sc-inc-gpc(IDX,SC) or sc-set-gpt0(SC) VALUE, with SC 0, 1 or 2)"));
                };
                match (idx, rest) {
                    (Some(idx), []) => ReqAction::IncGpc { sc, idx },
                    (None, [v]) => match v.parse::<i64>() {
                        Ok(value) => ReqAction::SetGpt0 { sc, value },
                        Err(_) => {
                            return self
                                .err(line, format!("'{t}' needs an integer value, not '{v}'"))
                        }
                    },
                    (Some(_), _) => return self.err(line, format!("'{t}' takes no argument")),
                    (None, _) => return self.err(line, format!("'{t}' needs one integer value")),
                }
            }
            ("allow", []) => ReqAction::Allow,
            (
                "set-header" | "add-header" | "del-header" | "replace-path" | "set-path" | "allow",
                _,
            ) => {
                return self.err(line, format!("wrong arguments for 'http-request {action}'"));
            }
            (other, _) => {
                return self.err(
                    line,
                    format!("http-request action '{other}' is not supported"),
                )
            }
        };
        p.req_rules.push(HttpReqRule { cond, action: act });
    }

    fn http_response(&mut self, l: &Line, p: &mut Proxy) {
        let (args, cond) = match split_cond(&l.words[1..], &p.acls) {
            Ok(x) => x,
            Err(e) => return self.err(l.line, e),
        };
        if cond.is_some() {
            return self.err(
                l.line,
                "conditions on 'http-response' rules are not supported yet",
            );
        }
        let a = texts(args);
        let line = l.line;
        let act = match a.as_slice() {
            [act @ ("set-header" | "add-header"), n, v] => {
                let (n, v) = (self.header_name(line, n), self.header_value(line, v));
                let (Some(n), Some(v)) = (n, v) else { return };
                if *act == "set-header" {
                    RespAction::SetHeader(n, v)
                } else {
                    RespAction::AddHeader(n, v)
                }
            }
            ["del-header", n] => match self.header_name(line, n) {
                Some(n) => RespAction::DelHeader(n),
                None => return,
            },
            [act, ..] => return self.err(line, format!("http-response action '{act}' is not supported (use set-header, add-header or del-header)")),
            [] => return self.err(line, "'http-response' needs an action"),
        };
        p.resp_rules.push(HttpRespRule {
            cond: None,
            action: act,
        });
    }

    fn server(&mut self, l: &Line, p: &mut Proxy) {
        let a = &l.words[1..];
        let (Some(name), Some(addr)) = (a.first(), a.get(1)) else {
            return self.err(
                l.line,
                "'server' needs a name and an address (e.g. 'server s1 10.0.0.1:8080 check')",
            );
        };
        if !p.server_names.insert(name.text.clone()) {
            return self.err(
                l.line,
                format!(
                    "duplicate server name '{}' in backend '{}'",
                    name.text, p.name
                ),
            );
        }
        let addr = match parse_server_addr(&addr.text) {
            Ok(a) => a,
            Err(e) => return self.err(l.line, e),
        };
        let mut s = blank_server();
        s.name = name.text.clone();
        s.addr = addr;
        let mut o = ServerOpts::default();
        for (line, words) in p.d.default_server.clone() {
            // Already reported at the default-server line.
            let before = self.errors.len();
            self.server_opts(line, &words, &mut s, &mut o);
            self.errors.truncate(before);
        }
        self.server_opts(l.line, &a[2..], &mut s, &mut o);
        if s.addr == ServerAddr::BuiltinMock && s.tls.is_some() {
            self.err(l.line, "the built-in mock provider does not speak TLS");
        }
        s.opts = o;
        p.servers.push(s);
    }

    /// Server options (also `default-server`'s).
    fn server_opts(&mut self, line: usize, a: &[Word], s: &mut Server, o: &mut ServerOpts) {
        let mut i = 0;
        while i < a.len() {
            let opt = a[i].text.as_str();
            let val = a.get(i + 1).map(|w| w.text.as_str());
            let takes = matches!(
                opt,
                "inter"
                    | "fastinter"
                    | "downinter"
                    | "fall"
                    | "rise"
                    | "weight"
                    | "maxconn"
                    | "maxqueue"
                    | "slowstart"
                    | "verify"
                    | "sni"
                    | "ca-file"
                    | "observe"
                    | "error-limit"
                    | "on-error"
                    | "proto"
                    | "port"
                    | "addr"
                    | "cooldown-429"
                    | "pool-max-conn"
                    | "pool-purge-delay"
                    | "pool-low-conn"
            );
            if takes && val.is_none() {
                self.err(line, format!("server option '{opt}' needs a value"));
                return;
            }
            let v = val.unwrap_or("");
            let dur = |cx: &mut Self| match parse_duration(v) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.err(line, format!("'{opt}': {e}"));
                    None
                }
            };
            let num = |cx: &mut Self| match v.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    cx.err(line, format!("'{opt}' needs a number, not '{v}'"));
                    None
                }
            };
            match opt {
                "check" => o.check = true,
                "no-check" => o.check = false,
                "check-ssl" => o.check_ssl = Some(true),
                "no-check-ssl" => o.check_ssl = Some(false),
                "port" => match v.parse::<u16>() {
                    Ok(p) if p > 0 => o.port = Some(p),
                    _ => self.err(line, format!("'port' needs a port number 1..65535, not '{v}'")),
                },
                "addr" => {
                    let host_ok = !v.is_empty()
                        && (v.parse::<std::net::IpAddr>().is_ok()
                            || v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                    if host_ok {
                        o.addr = Some(v.to_owned());
                    } else {
                        self.err(line, format!("'addr' needs an IP address or host name, not '{v}'"));
                    }
                }
                "cooldown-429" => o.cooldown_429 = dur(self),
                "backup" => o.backup = true,
                "disabled" => o.disabled = true,
                "enabled" => o.disabled = false,
                "ssl" => {
                    s.tls.get_or_insert(UpstreamTls { verify: true, sni: None, ca: None });
                }
                "no-ssl" => s.tls = None,
                "inter" | "fastinter" | "downinter" => {
                    let d = dur(self);
                    if d.is_some_and(|d| d.is_zero()) {
                        self.err(line, format!("'{opt}' must be more than 0"));
                    } else if opt == "inter" {
                        o.inter = d;
                    } else if opt == "fastinter" {
                        o.fastinter = d;
                    } else {
                        o.downinter = d;
                    }
                }
                "slowstart" => o.slowstart = dur(self),
                "fall" | "rise" | "error-limit" => match num(self) {
                    Some(0) => self.err(line, format!("'{opt}' must be at least 1")),
                    Some(n) if opt == "fall" => o.fall = Some(n),
                    Some(n) if opt == "rise" => o.rise = Some(n),
                    Some(n) => o.error_limit = Some(n),
                    None => {}
                },
                "maxqueue" => o.maxqueue = num(self),
                "maxconn" => s.maxconn = num(self).unwrap_or(0),
                "pool-purge-delay" => o.pool_purge_delay = dur(self),
                "pool-low-conn" => match v.parse::<usize>() {
                    Ok(n) => o.pool_low_conn = Some(n),
                    Err(_) => self.err(line, format!("'pool-low-conn' needs a number of connections, not '{v}'")),
                },
                "pool-max-conn" => match v.parse::<i64>() {
                    Ok(-1) => o.pool_max_conn = Some(NO_POOL_LIMIT),
                    Ok(n) if n >= 0 => o.pool_max_conn = Some(usize::try_from(n).unwrap_or(NO_POOL_LIMIT)),
                    _ => self.err(line, format!("'pool-max-conn' needs -1 (no limit) or a number of connections, not '{v}'")),
                },
                "weight" => match num(self) {
                    Some(w) if w <= 256 => s.weight = w,
                    Some(w) => self.err(line, format!("server weight {w} is out of range 0..256")),
                    None => {}
                },
                "verify" => match v {
                    "none" | "required" => {
                        let t = s.tls.get_or_insert(UpstreamTls { verify: true, sni: None, ca: None });
                        t.verify = v == "required";
                    }
                    _ => self.err(line, format!("'verify' must be 'none' or 'required', not '{v}'")),
                },
                "sni" => {
                    // HAProxy's sni is an expression; a constant is `str(NAME)`.
                    match v.strip_prefix("str(").and_then(|r| r.strip_suffix(')')) {
                        Some(n) if !n.is_empty() => {
                            let t = s.tls.get_or_insert(UpstreamTls { verify: true, sni: None, ca: None });
                            t.sni = Some(n.to_owned());
                        }
                        _ => self.err(line, format!("'sni {v}' is not supported (use sni str(NAME))")),
                    }
                }
                "ca-file" => {
                    let ca = self.path(v);
                    let t = s.tls.get_or_insert(UpstreamTls { verify: true, sni: None, ca: None });
                    t.ca = Some(ca);
                }
                "observe" => match v {
                    "layer7" => o.observe = Some(ObserveMode::Layer7),
                    "layer4" => o.observe = Some(ObserveMode::Layer4),
                    _ => self.err(line, format!("'observe' must be layer4 or layer7, not '{v}'")),
                },
                "on-error" => match v {
                    "fastinter" | "fail-check" | "sudden-death" | "mark-down" => o.on_error = Some(v.to_owned()),
                    _ => self.err(line, format!("'on-error' must be fastinter, fail-check, sudden-death or mark-down, not '{v}'")),
                },
                "proto" => match v {
                    "h2" => s.proto = UpstreamProto::Http2,
                    _ => self.err(line, format!("server 'proto {v}' is not supported (use proto h2)")),
                },
                other => {
                    // The rest of the line would be this option's arguments.
                    return self.err(line, format!("server option '{other}' is not supported"));
                }
            }
            i += if takes { 2 } else { 1 };
        }
    }

    /// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]…`.
    fn http_check_send(&mut self, line: usize, a: &[Word]) -> Option<CheckSend> {
        let mut send = CheckSend::default();
        let mut i = 0;
        while i < a.len() {
            let key = a[i].text.as_str();
            let Some(v) = a.get(i + 1).map(|w| w.text.as_str()) else {
                self.err(line, format!("'http-check send {key}' needs a value"));
                return None;
            };
            match key {
                "meth" => match http::Method::from_bytes(v.as_bytes()) {
                    Ok(_) => send.method = Some(v.to_owned()),
                    Err(_) => {
                        self.err(line, format!("invalid method '{v}'"));
                        return None;
                    }
                },
                "uri" => {
                    if !v.starts_with('/') || v.parse::<http::uri::PathAndQuery>().is_err() {
                        self.err(
                            line,
                            format!(
                                "'http-check send uri' needs a path starting with '/', not '{v}'"
                            ),
                        );
                        return None;
                    }
                    send.uri = Some(v.to_owned());
                }
                "ver" => {
                    if v != "HTTP/1.1" && v != "HTTP/1.0" {
                        self.err(line, format!("'http-check send ver {v}' is not supported (checks speak HTTP/1.1)"));
                        return None;
                    }
                }
                "hdr" => {
                    let Some(value) = a.get(i + 2) else {
                        self.err(line, "'http-check send hdr' needs a name and a value");
                        return None;
                    };
                    let n = self.header_name(line, v)?;
                    let val = self.header_value(line, &value.text)?;
                    send.headers.push((n, val));
                    i += 1;
                }
                other => {
                    self.err(
                        line,
                        format!(
                            "'http-check send {other}' is not supported (use meth, uri, ver, hdr)"
                        ),
                    );
                    return None;
                }
            }
            i += 2;
        }
        Some(send)
    }

    /// The backend's check: HTTP with `option httpchk` (plus `http-check
    /// send`/`expect`), else a TCP connect, as in HAProxy.
    fn check_def(&mut self, p: &Proxy) -> CheckDef {
        let o = &p.d.opts;
        let Some((meth, uri)) = &o.httpchk else {
            if o.http_check_send.is_some() || o.http_check_expect.is_some() {
                self.warn(p.line, format!("backend '{}': 'http-check' rules are ignored without 'option httpchk' (checks are TCP connects)", p.name));
            }
            return CheckDef::default();
        };
        if p.d.mode == Some(Mode::Tcp) {
            self.warn(p.line, format!("backend '{}': 'option httpchk' in a mode tcp backend: checks are HTTP requests all the same", p.name));
        }
        let send = o.http_check_send.clone().unwrap_or_default();
        let method_text = send.method.unwrap_or_else(|| meth.clone());
        let method =
            http::Method::from_bytes(method_text.as_bytes()).unwrap_or(http::Method::OPTIONS);
        let mut headers = send.headers;
        let host = headers
            .iter()
            .position(|(n, _)| n == http::header::HOST)
            .map(|i| headers.remove(i).1);
        CheckDef {
            kind: CheckKind::Http,
            method,
            path: send.uri.unwrap_or_else(|| uri.clone()),
            host,
            headers,
            send_auth: false,
            expect: o.http_check_expect.clone(),
        }
    }

    /// Resolves names across sections and builds the model.
    /// The process's one access-log target: the global section's, else a
    /// frontend's own `log TARGET` line; a frontend whose own target
    /// differs is an error (llmgw writes one stream of access logs).
    fn log_target(&mut self, global: &mut Global, proxies: &[Proxy]) {
        for p in proxies.iter().filter(|p| p.kind.is_fe()) {
            let LogDecl::Own(t, line) = &p.d.log else {
                continue;
            };
            match &global.log {
                None => global.log = Some((**t).clone()),
                Some(g) if g == &**t => {}
                Some(_) => self.err(*line, format!("{} '{}': its log target differs from the process's (the global one, or another proxy's): llmgw sends every access log to one target; use 'log global'", p.kind.name(), p.name)),
            }
        }
    }

    /// A frontend's access-log format, `None` when it logs nothing.
    fn frontend_log(&mut self, p: &Proxy, global: &Global, mode: Mode) -> Option<LogFormat> {
        let target = match &p.d.log {
            LogDecl::Unset | LogDecl::Off => return None,
            LogDecl::Global | LogDecl::Own(..) => global.log.as_ref()?,
        };
        if mode == Mode::Tcp {
            self.warn(p.line, format!("{} '{}': access logs of mode tcp proxies are not written yet (only HTTP requests are logged)", p.kind.name(), p.name));
            return None;
        }
        if !target.sends_traffic() {
            return None;
        }
        Some(p.d.log_format.unwrap_or(target.format))
    }

    fn finish(&mut self, mut global: Global, mut proxies: Vec<Proxy>) -> Config {
        self.log_target(&mut global, &proxies);
        // Backends (and listens) by name, in order.
        let mut backend_index: HashMap<String, usize> = HashMap::new();
        // Each backend's mode and the line that declares it.
        let mut backend_mode: HashMap<String, (Mode, usize)> = HashMap::new();
        let mut fe_names = HashSet::new();
        for p in &proxies {
            if p.kind.is_be() {
                if backend_index.contains_key(&p.name) {
                    self.err(p.line, format!("duplicate backend name '{}'", p.name));
                } else {
                    let n = backend_index.len();
                    backend_index.insert(p.name.clone(), n);
                    backend_mode.insert(p.name.clone(), (p.d.mode.unwrap_or_default(), p.line));
                }
            }
            if p.kind.is_fe() && !fe_names.insert(p.name.clone()) {
                self.err(p.line, format!("duplicate frontend name '{}'", p.name));
            }
        }

        // Stick tables and the rules that use them.
        let mut tables: Vec<StickTable> = proxies
            .iter()
            .filter_map(|p| p.stick_table.clone())
            .collect();
        for p in &mut proxies {
            self.seed_faults(p, &mut tables);
        }

        let mut frontends = Vec::new();
        let mut backends = Vec::new();
        let mut fallbacks: Vec<Vec<FallbackLine>> = Vec::new();
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        for p in proxies {
            let timeouts = p.d.timeouts.clone().unwrap_or_default();
            let mode = p.d.mode.unwrap_or_default();
            if mode == Mode::Tcp {
                // As HAProxy: HTTP rules and options are ignored in mode tcp.
                let mut seen = HashSet::new();
                for (line, what) in &p.http_only {
                    if seen.insert(what.clone()) {
                        self.warn(
                            *line,
                            format!(
                                "{what} ignored for {} '{}' as they require HTTP mode",
                                p.kind.name(),
                                p.name
                            ),
                        );
                    }
                }
                if p.d.forwardfor {
                    self.warn(
                        p.line,
                        format!(
                            "'option forwardfor' ignored for {} '{}' as it requires HTTP mode",
                            p.kind.name(),
                            p.name
                        ),
                    );
                }
            }
            if p.kind.is_be() {
                let check = self.check_def(&p);
                for s in &p.servers {
                    let passive = s.opts.observe.is_some()
                        || s.opts.error_limit.is_some()
                        || s.opts.on_error.is_some();
                    if passive && !s.opts.check {
                        self.warn(p.line, format!("server '{}/{}': 'observe', 'error-limit' and 'on-error' need 'check' and have no effect without it", p.name, s.name));
                    }
                }
                let mut balance = p.d.balance.clone().unwrap_or(Balance::RoundRobin);
                if mode == Mode::Tcp {
                    if matches!(balance, Balance::Uri | Balance::Hdr(_)) {
                        self.warn(p.line, format!("Layer 7 hash not possible for backend '{}' (needs 'mode http'). Falling back to round robin.", p.name));
                        balance = Balance::RoundRobin;
                    }
                    if p.servers.iter().any(|s| s.tls.is_some()) {
                        self.err(p.line, format!("backend '{}': 'ssl' on servers of a mode tcp backend is not supported (TLS passes through unchanged; drop 'ssl')", p.name));
                    }
                }
                // A `disabled` server starts in maintenance (the runtime
                // state does that); `enable server` brings it in.
                let servers: Vec<Server> = p.servers.clone();
                if p.kind == Kind::Backend
                    && p.req_rules
                        .iter()
                        .any(|r| r.cond.as_ref().is_some_and(Expr::needs_model))
                {
                    // The body is scanned before routing, by the frontend.
                    self.err(p.line, format!("backend '{}': conditions on req.body,json_query('$.model') work in frontend and listen rules only (move the rule, or route with use_backend)", p.name));
                }
                if backend_index
                    .get(&p.name)
                    .is_some_and(|&i| i == backends.len())
                {
                    fallbacks.push(p.d.fallback.clone());
                    backends.push(Backend {
                        name: p.name.clone(),
                        mode,
                        balance,
                        hash_type: p.d.hash_type.unwrap_or_default(),
                        servers,
                        timeouts: timeouts.clone(),
                        host: None,
                        path_rewrite: None,
                        credential: None,
                        request_headers: HeaderRules::default(),
                        response_headers: HeaderRules::default(),
                        // A listen's rules run once, on its frontend side.
                        http_request: if p.kind == Kind::Backend && mode == Mode::Http {
                            p.req_rules.clone()
                        } else {
                            Vec::new()
                        },
                        http_response: if p.kind == Kind::Backend && mode == Mode::Http {
                            p.resp_rules.clone()
                        } else {
                            Vec::new()
                        },
                        x_forwarded_for: p.d.forwardfor,
                        opts: BackendOpts {
                            check,
                            ..p.d.opts.clone()
                        },
                        pool_max_idle: if p.d.reuse_never { 0 } else { NO_POOL_LIMIT },
                        pool_idle_timeout: Duration::from_secs(60),
                    });
                }
            }
            if p.kind.is_fe() {
                if p.bind_lines == 0 {
                    self.err(
                        p.line,
                        format!("{} '{}' has no 'bind' line", p.kind.name(), p.name),
                    );
                }
                let (fe_kind, fe_name, fe_line) = (p.kind.name(), p.name.clone(), p.line);
                let resolve = |cx: &mut Self,
                               line: usize,
                               name: &str,
                               how: &str|
                 -> Option<usize> {
                    let i = backend_index.get(name).copied();
                    if i.is_none() {
                        cx.err(line, format!("backend '{name}' does not exist"));
                    }
                    match backend_mode.get(name) {
                        Some(&(Mode::Tcp, bline)) if mode == Mode::Http => cx.err(line, format!("http {fe_kind} '{fe_name}' (line {fe_line}) tries to use incompatible tcp backend '{name}' (line {bline}) {how} (see 'mode')")),
                        Some(&(Mode::Http, bline)) if mode == Mode::Tcp => cx.err(line, format!("tcp {fe_kind} '{fe_name}' (line {fe_line}) tries to use http backend '{name}' (line {bline}) {how}: HAProxy would upgrade the connection to HTTP, llmgw does not (see 'mode')")),
                        _ => {}
                    }
                    i
                };
                let mut default_backend = match &p.default_backend {
                    Some((line, b)) => resolve(self, *line, b, "as its default backend"),
                    None => None,
                };
                if default_backend.is_none() && p.kind == Kind::Listen {
                    default_backend = backend_index.get(&p.name).copied();
                }
                let mut routes = Vec::new();
                for (line, b, cond) in &p.use_backend {
                    if mode == Mode::Tcp {
                        if let Some(f) = http_fetch(cond) {
                            self.err(*line, format!("'use_backend' conditions on HTTP fetches ({f}) are not supported in mode tcp; use src, req.ssl_sni or req.ssl_hello_type"));
                            continue;
                        }
                    }
                    if let Some(backend) = resolve(self, *line, b, "in a 'use_backend' rule") {
                        routes.push(Route {
                            cond: cond.clone(),
                            backend,
                        });
                    }
                }
                for b in &p.binds {
                    // Port 0 takes a fresh ephemeral port each time: never a clash.
                    if b.addr.port() == 0 {
                        continue;
                    }
                    if let Some(other) = bound.insert(b.addr, p.name.clone()) {
                        self.err(
                            p.line,
                            format!(
                                "address {} is bound by both '{other}' and '{}'",
                                b.addr, p.name
                            ),
                        );
                    }
                }
                if mode == Mode::Http {
                    if let Some(line) = p.tcp_lines.first() {
                        self.err(*line, "'tcp-request content' rules work in mode tcp only (llmgw's HTTP frontends do not run them)");
                    }
                }
                let http = mode == Mode::Http;
                let log = self.frontend_log(&p, &global, mode);
                frontends.push(Frontend {
                    name: p.name,
                    mode,
                    tcp_request: p.tcp,
                    binds: p.binds,
                    maxconn: p.d.maxconn.unwrap_or(0),
                    timeouts,
                    routes,
                    default_backend,
                    model_aliases: Vec::new(),
                    body_limit: global
                        .tune_bufsize
                        .map_or(DEFAULT_BODY_LIMIT, |b| b.max(DEFAULT_BODY_LIMIT)),
                    default_max_tokens: global.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                    client_keys: None,
                    forward_for: ForwardFor {
                        x_forwarded_for: p.d.forwardfor && http,
                        forwarded: false,
                    },
                    // HAProxy adds no request id unless configured.
                    request_id_header: None,
                    request_headers: HeaderRules::default(),
                    response_headers: HeaderRules::default(),
                    http_request: if http { p.req_rules } else { Vec::new() },
                    http_response: if http { p.resp_rules } else { Vec::new() },
                    log,
                    dontlognull: p.d.dontlognull,
                });
                if let Some(fe) = frontends.last() {
                    if fe.mode == Mode::Tcp
                        && fe.needs_content()
                        && fe.tcp_request.inspect_delay.is_zero()
                    {
                        self.warn(fe_line, format!("{fe_kind} '{fe_name}': rules use req.ssl_sni or req.ssl_hello_type without 'tcp-request inspect-delay': they see no content and never match (add e.g. 'tcp-request inspect-delay 5s')"));
                    }
                }
            }
        }
        for (bi, lines) in fallbacks.into_iter().enumerate() {
            let mut steps = Vec::new();
            for f in lines {
                match fallback_step(
                    bi,
                    &f.backend,
                    &f.on,
                    f.model,
                    &backends,
                    &backend_index,
                    &steps,
                ) {
                    Ok(step) => steps.push(step),
                    Err(e) => self.err(f.line, e),
                }
            }
            backends[bi].opts.fallback = steps;
        }
        if frontends.is_empty() {
            self.err(1, "no frontend or listen section: nothing would listen");
        }
        if let Some(n) = global.ssl_cachesize {
            for t in frontends
                .iter_mut()
                .flat_map(|f| f.binds.iter_mut())
                .filter_map(|b| b.tls.as_mut())
            {
                t.session_cache = n;
            }
        }
        Config {
            global,
            frontends,
            backends,
            stick_tables: tables,
            // Client keys are a native-configuration feature (HAProxy has
            // no equivalent to convert from).
            key_lists: Vec::new(),
        }
    }

    /// The two faults of the seed configuration HAProxy itself rejects: a
    /// `track-sc … table T` naming an undeclared table, and the server
    /// options `observe`/`error-limit`/`on-error` written as backend
    /// directives. Strict: an error with the fix. Lenient: repaired, with a
    /// warning each.
    fn seed_faults(&mut self, p: &mut Proxy, tables: &mut Vec<StickTable>) {
        let mut store: Vec<String> = Vec::new();
        for (_, c) in &p.conds {
            for data in crate::config::stick::FETCHABLE {
                if c.any_test(&|t| matches!(t, Condition::Int(IntFetch::StickCounter { data: d, .. }, _, _) if *d == data))
                    && !store.iter().any(|s| *s == data.store_entry())
                {
                    store.push(data.store_entry());
                }
            }
        }
        if store.is_empty() {
            store.push("conn_rate(10s)".into());
        }
        for (line, key, table) in p.tracks.clone() {
            let name = table.clone().unwrap_or_else(|| p.name.clone());
            if tables.iter().any(|t| t.name == name) {
                continue;
            }
            let key_type = if key == "src" { "ip" } else { "string" };
            let decl = format!(
                "stick-table type {key_type} size 100k expire 30s store {}",
                store.join(",")
            );
            if self.opts.lenient {
                self.warn(
                    line,
                    format!(
                        "stick table '{name}' is not declared; created as '{decl}' (--lenient)"
                    ),
                );
                tables.push(StickTable {
                    name,
                    key_type: key_type.into(),
                    size: 100 << 10,
                    expire: Some(Duration::from_secs(30)),
                    store: store.clone(),
                });
            } else if table.is_some() {
                self.err(line, format!("stick table '{name}' is not declared; fix: add a section 'backend {name}' containing '{decl}'"));
            } else {
                self.err(line, format!("{} '{name}' has no stick-table to track into; fix: add '{decl}' to it, or name one with 'table NAME'", p.kind.name()));
            }
        }
        if p.misplaced.is_empty() {
            return;
        }
        let all: Vec<String> = p
            .misplaced
            .iter()
            .map(|(_, w)| texts(w).join(" "))
            .collect();
        if self.opts.lenient {
            for (line, w) in p.misplaced.clone() {
                let mut s = blank_server();
                for srv in &mut p.servers {
                    let mut o = srv.opts.clone();
                    self.server_opts(line, &w, &mut s, &mut o);
                    srv.opts = o;
                }
                self.warn(line, format!("'{}' is a server option, not a backend directive; applied to every server of '{}' (--lenient)", w[0].text, p.name));
            }
        } else {
            let names: Vec<String> = p
                .misplaced
                .iter()
                .map(|(_, w)| format!("'{}'", w[0].text))
                .collect();
            let names = match names.as_slice() {
                [one] => one.clone(),
                [init @ .., last] => format!("{} and {last}", init.join(", ")),
                [] => String::new(),
            };
            let verb = if p.misplaced.len() == 1 {
                "is a server option"
            } else {
                "are server options"
            };
            self.err(
                p.misplaced[0].0,
                format!("{names} {verb}, not backend directives; fix: replace them with 'default-server {}' before the 'server' lines", all.join(" ")),
            );
        }
    }
}

/// The first fetch of an expression that needs bytes from the client (HTTP
/// or TLS content), for `tcp-request connection` errors.
fn content_fetch(e: &Expr) -> Option<&'static str> {
    http_fetch(e).or_else(|| {
        if e.any_test(&|c| matches!(c, Condition::Sni(_))) {
            Some("req.ssl_sni")
        } else if e.any_test(&|c| matches!(c, Condition::Int(IntFetch::SslHelloType, _, _))) {
            Some("req.ssl_hello_type")
        } else {
            None
        }
    })
}

/// The first HTTP-only fetch an expression uses, for `mode tcp` errors.
fn http_fetch(e: &Expr) -> Option<&'static str> {
    let mut found = None;
    for (name, f) in [
        (
            "path",
            (|c: &Condition| matches!(c, Condition::Path(_))) as fn(&Condition) -> bool,
        ),
        ("hdr", |c| {
            matches!(
                c,
                Condition::Host(_) | Condition::Header(..) | Condition::HeaderValues(..)
            )
        }),
        ("method", |c| matches!(c, Condition::Method(_))),
        ("url_param", |c| matches!(c, Condition::Query(..))),
        ("query", |c| matches!(c, Condition::QueryString(_))),
        ("req.body", |c| matches!(c, Condition::Model(_))),
    ] {
        if found.is_none() && e.any_test(&f) {
            found = Some(name);
        }
    }
    found
}

fn blank_server() -> Server {
    Server {
        name: String::new(),
        addr: ServerAddr::BuiltinMock,
        weight: 1,
        maxconn: 0,
        tls: None,
        proto: UpstreamProto::Auto,
        opts: ServerOpts::default(),
    }
}

/// `sc-inc-gpc0(SC)`, `sc-inc-gpc1(SC)`, `sc-inc-gpc(IDX,SC)` → (Some(IDX),
/// SC); `sc-set-gpt0(SC)` → (None, SC).
fn gpc_action(t: &str) -> Option<(Option<u8>, u8)> {
    let (name, args) = t.strip_suffix(')')?.split_once('(')?;
    let sc = |s: &str| s.trim().parse::<u8>().ok().filter(|n| *n <= 2);
    match name {
        "sc-inc-gpc0" => Some((Some(0), sc(args)?)),
        "sc-inc-gpc1" => Some((Some(1), sc(args)?)),
        "sc-inc-gpc" => {
            let (i, s) = args.split_once(',')?;
            Some((
                Some(i.trim().parse::<u8>().ok().filter(|i| *i < 100)?),
                sc(s)?,
            ))
        }
        "sc-set-gpt0" => Some((None, sc(args)?)),
        _ => None,
    }
}

fn one_num<T: std::str::FromStr>(a: &[Word]) -> Option<T> {
    match a {
        [w] => w.text.parse().ok(),
        _ => None,
    }
}

/// HAProxy's `\1` back-references become the regex crate's `${1}`.
fn backrefs(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// `*:80`, `:80`, `:::80`, `1.2.3.4:80`, `[::1]:80`, `::1:80`, `ipv4@…`, `ipv6@…`.
fn parse_bind_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s
        .strip_prefix("ipv4@")
        .or_else(|| s.strip_prefix("ipv6@"))
        .unwrap_or(s);
    if let Some(port) = s.strip_prefix(':').filter(|r| !r.contains(':')) {
        return parse_listen_addr(&format!("*:{port}"));
    }
    if let Ok(a) = parse_listen_addr(s) {
        return Ok(a);
    }
    if let Some((ip, port)) = s.rsplit_once(':') {
        if let (Ok(ip), Ok(port)) = (ip.parse::<std::net::Ipv6Addr>(), port.parse::<u16>()) {
            return Ok(SocketAddr::from((ip, port)));
        }
    }
    if s.starts_with("unix@") || s.starts_with('/') || s.starts_with("abns@") {
        return Err(format!(
            "bind address '{s}': unix sockets are not supported"
        ));
    }
    Err(format!(
        "invalid bind address '{s}' (expected *:PORT, :::PORT, IP:PORT or [IPv6]:PORT)"
    ))
}

#[cfg(test)]
mod tests;
