//! The compiled configuration: one immutable snapshot the data plane reads.
//!
//! Both readers (the native TOML and the HAProxy dialect) produce
//! this model; nothing here knows which syntax it came from. Everything is
//! resolved ahead of time — backend references are indices, patterns are
//! compiled — so the request path does no lookups by name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

/// Global maxconn when the configuration does not set one.
pub const DEFAULT_MAXCONN: u32 = 10_000;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub global: Global,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    /// Declared stick tables.
    pub stick_tables: Vec<StickTable>,
    /// Lists of client keys (virtual API keys) frontends may require.
    pub key_lists: Vec<KeyList>,
}

/// A named list of client keys (`[[client_keys]]`): the virtual API keys
/// a frontend accepts in place of provider credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyList {
    pub name: String,
    pub keys: Vec<ClientKey>,
}

/// One client key: who holds it (a principal, named in logs and metrics —
/// the key itself is never kept, only its SHA-256), what it may use, and
/// its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// Models it may ask for; `None` = any.
    pub models: Option<Vec<String>>,
    /// Backends (indexes into [`Config::backends`]) its requests may be
    /// routed to; `None` = any.
    pub backends: Option<Vec<usize>>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent: Option<u64>,
}

/// HAProxy's `stick-table` (see `crate::stick`).
#[derive(Debug, Clone, PartialEq)]
pub struct StickTable {
    /// The name of the section that declares it.
    pub name: String,
    /// `ip`, `ipv6`, `integer`, `string` or `binary`.
    pub key_type: String,
    pub size: u64,
    pub expire: Option<Duration>,
    /// Stored data as written: `conn_rate(10s)`, `http_req_rate(10s)`, `conn_cur`, …
    pub store: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Global {
    /// Process-wide concurrent connection limit; `None` = as many as the
    /// open-file limit allows, at most [`DEFAULT_MAXCONN`].
    pub maxconn: Option<u32>,
    /// Serving threads (HAProxy's `nbthread`), each its own event loop
    /// ([`crate::threads`]); 0 = one per CPU, at most [`MAX_THREADS`].
    /// Fixed at start.
    pub nbthread: usize,
    /// Where the stats listener binds (metrics and stats page hang here).
    pub stats: Option<SocketAddr>,
    /// Who may read the stats listener and act on its admin endpoint.
    pub stats_access: StatsAccess,
    /// The runtime API socket (HAProxy's `stats socket`).
    pub stats_socket: Option<StatsSocket>,
    /// HAProxy's `tune.bufsize`, carried for the buffer work to come.
    pub tune_bufsize: Option<usize>,
    /// HAProxy's `tune.ssl.cachesize`, applied to every TLS bind.
    pub ssl_cachesize: Option<usize>,
    /// `tune.llm.default-max-tokens` (llmgw's): every frontend's
    /// [`Frontend::default_max_tokens`].
    pub default_max_tokens: Option<u64>,
    /// Where access logs go; `None`: no frontend logs.
    pub log: Option<super::log::LogTarget>,
    /// The internal (`tracing`) log level when `RUST_LOG` is not set, as
    /// an `EnvFilter` directive (`info`, `debug`, `llmgw=debug,hyper=warn`).
    pub log_level: Option<String>,
    /// HAProxy's `hard-stop-after`: how long a soft stop (`SIGUSR1`, a
    /// binary upgrade) waits for connections to finish before closing the
    /// rest; `None` waits for as long as they last (HAProxy's default).
    pub hard_stop_after: Option<Duration>,
}

/// Access to the stats listener (`/stats`, `/stats.json`, `/metrics` and
/// the admin endpoint `/stats/admin`): HAProxy's `stats auth`, `stats
/// admin`, `stats realm`, `stats refresh` and `stats uri` of a stats-enabled
/// section, or native `stats = { address, auth, … }`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsAccess {
    /// Users who may log in with HTTP basic auth. None: reads are open and
    /// admin actions are refused (403) — never open to anyone.
    pub users: Vec<StatsUser>,
    /// With users configured, reads need credentials too (HAProxy's `stats
    /// auth` guards the whole page); `false` leaves reads open (e.g. for a
    /// Prometheus scraper) while admin actions still need a user.
    pub read_auth: bool,
    /// Admin actions (ready / drain / maint / weight) are offered to
    /// logged-in users. Native: on unless `admin = false`; HAProxy: `stats
    /// admin if TRUE`.
    pub admin: bool,
    /// The realm of the basic-auth challenge (HAProxy's `stats realm`).
    pub realm: String,
    /// How often the page polls `/stats.json` (HAProxy's `stats refresh`).
    pub refresh: Duration,
    /// Another path serving the page besides `/stats` (HAProxy's `stats
    /// uri`, matched as a prefix of the request's path and query, as
    /// HAProxy does).
    pub uri: Option<String>,
}

/// The page's poll interval without `stats refresh`.
pub const DEFAULT_STATS_REFRESH: Duration = Duration::from_secs(2);

impl Default for StatsAccess {
    fn default() -> Self {
        StatsAccess {
            users: Vec::new(),
            read_auth: true,
            admin: true,
            realm: "llmgw statistics".to_owned(),
            refresh: DEFAULT_STATS_REFRESH,
            uri: None,
        }
    }
}

/// The runtime API's unix socket: HAProxy's `stats socket PATH [mode
/// OCTAL] [level user|operator|admin]` with `stats timeout`, or native
/// `stats_socket = { path, mode, level, timeout }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    pub path: PathBuf,
    /// Permission bits given to the socket file; `None` leaves what the
    /// process umask makes (as HAProxy does without `mode`).
    pub mode: Option<u32>,
    /// What sessions on this socket may do; HAProxy's default is
    /// `operator`.
    pub level: AccessLevel,
    /// A session waiting this long for its next command line is closed
    /// (HAProxy's `stats timeout`, 10 s by default).
    pub timeout: Duration,
    /// `expose-fd listeners`: the socket answers `_getsocks` with the
    /// listening sockets, for a new process to take over (`llmgw run -x`).
    pub expose_fd: bool,
}

/// HAProxy's default `stats timeout`.
pub const DEFAULT_STATS_TIMEOUT: Duration = Duration::from_secs(10);

impl StatsSocket {
    pub fn new(path: PathBuf) -> StatsSocket {
        StatsSocket {
            path,
            mode: None,
            level: AccessLevel::Operator,
            timeout: DEFAULT_STATS_TIMEOUT,
            expose_fd: false,
        }
    }
}

/// A stats user (`user:password`). The password never appears in `Debug`
/// output, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct StatsUser {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for StatsUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl StatsUser {
    /// Reads `user:password` (split at the first colon, as basic auth
    /// does, so a password may contain colons and a user may not).
    pub fn parse(s: &str) -> Result<StatsUser, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(StatsUser {
                name: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => Err("stats auth needs 'user:password' (both non-empty)".to_owned()),
        }
    }
}

/// A runtime API session's privilege (HAProxy's `level`): `user` reads
/// non-sensitive state, `operator` also reads table contents and clears
/// tables, `admin` may change servers and reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessLevel {
    User,
    Operator,
    Admin,
}

impl AccessLevel {
    pub fn parse(s: &str) -> Option<AccessLevel> {
        Some(match s {
            "user" => AccessLevel::User,
            "operator" => AccessLevel::Operator,
            "admin" => AccessLevel::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::User => "user",
            AccessLevel::Operator => "operator",
            AccessLevel::Admin => "admin",
        }
    }
}

/// Timeouts, resolved from defaults → frontend / backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Client inactivity while a request is in progress.
    pub client: Duration,
    /// Server inactivity: waiting for response headers (so it covers time to
    /// first token) and between body chunks.
    pub server: Duration,
    /// Complete request headers must arrive within this (408 otherwise).
    pub http_request: Duration,
    /// Idle time allowed between two requests on a keep-alive connection.
    pub http_keep_alive: Duration,
    /// Inactivity on an upgraded (WebSocket) tunnel.
    pub tunnel: Duration,
    /// `tunnel` was configured: a `mode tcp` connection then idles out
    /// after `tunnel` instead of `client`/`server`, as in HAProxy.
    pub tunnel_set: bool,
    /// TLS handshake (and PROXY header) must complete within this.
    pub handshake: Duration,
    /// Time to first token (llmgw's own `timeout ttft`): no response head
    /// within this after the request went upstream → the attempt is
    /// abandoned as a `response-timeout` (retried if allowed, else 504).
    /// `None`: only `timeout server` bounds the wait.
    pub ttft: Option<Duration>,
    /// How long `http-request tarpit` holds a request before answering;
    /// `None`: `connect`, as in HAProxy.
    pub tarpit: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client: Duration::from_secs(300),
            server: Duration::from_secs(300),
            http_request: Duration::from_secs(10),
            http_keep_alive: Duration::from_secs(60),
            tunnel: Duration::from_secs(3600),
            tunnel_set: false,
            handshake: Duration::from_secs(10),
            ttft: None,
            tarpit: None,
        }
    }
}

/// HAProxy's `mode`: HTTP proxying, or layer-4 (`tcp`) forwarding of the
/// byte stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Http,
    Tcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        }
    }
}

/// `tcp-request` settings of a frontend.
#[derive(Debug, Clone, Default)]
pub struct TcpRequest {
    /// `tcp-request inspect-delay`: how long to wait for the client's first
    /// bytes (the TLS ClientHello) when a rule looks at them; zero = rules
    /// see no content (`mode tcp`).
    pub inspect_delay: Duration,
    /// `tcp-request content accept|reject [if|unless COND]`, in order; the
    /// first whose condition holds decides, none = accept (`mode tcp`).
    pub content: Vec<TcpRule>,
    /// `tcp-request connection …` rules, in order, run at accept time before
    /// a byte is read (either mode): tracking goes on past a rule, `accept`
    /// and `reject` end the evaluation, none = accept.
    pub connection: Vec<ConnRule>,
}

impl TcpRequest {
    /// Does a `tcp-request connection` rule track a stick counter?
    pub fn tracks_connections(&self) -> bool {
        self.connection
            .iter()
            .any(|r| matches!(r.action, ConnAction::TrackSc { .. }))
    }
}

#[derive(Debug, Clone)]
pub struct TcpRule {
    pub cond: Option<Expr>,
    pub accept: bool,
}

/// One `tcp-request connection` rule. Its condition sees only what is known
/// at accept: `src` and the stick counters tracked by the rules before it.
#[derive(Debug, Clone)]
pub struct ConnRule {
    pub cond: Option<Expr>,
    pub action: ConnAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnAction {
    Accept,
    /// Close at once, without a response.
    Reject,
    /// `track-sc0|1|2 src [table T]`: the connection is counted in table
    /// T's entry for the client's address for as long as it is open.
    TrackSc {
        sc: u8,
        table: String,
    },
}

#[derive(Debug, Clone)]
pub struct Frontend {
    pub name: String,
    /// `mode tcp` frontends forward bytes and use only `tcp` backends.
    pub mode: Mode,
    pub tcp_request: TcpRequest,
    pub binds: Vec<Bind>,
    /// Concurrent connections on this frontend; 0 = only the global limit.
    pub maxconn: u32,
    pub timeouts: Timeouts,
    /// Content-switching rules, first match wins.
    pub routes: Vec<Route>,
    /// Index into [`Config::backends`] when no route matches.
    pub default_backend: Option<usize>,
    /// Model aliases applied before routing; the body is rewritten.
    pub model_aliases: Vec<(String, String)>,
    /// Largest request body buffered when a rule needs to read it.
    pub body_limit: usize,
    /// The client keys every request must carry (index into
    /// [`Config::key_lists`]); `None` = no key asked for.
    pub client_keys: Option<usize>,
    /// The completion budget a token reservation assumes for a request
    /// whose body names no `max_tokens`.
    pub default_max_tokens: u64,
    pub forward_for: ForwardFor,
    /// Header carrying the request id (kept from the client or generated).
    pub request_id_header: Option<HeaderName>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// `http-request` rules, in order, evaluated before routing.
    pub http_request: Vec<HttpReqRule>,
    /// `http-response` rules, in order.
    pub http_response: Vec<HttpRespRule>,
    /// This frontend's access-log format; `None`: it logs nothing.
    pub log: Option<super::log::LogFormat>,
    /// HAProxy's `option dontlognull`: a connection that sent no byte at
    /// all (closed, or timed out) leaves no line.
    pub dontlognull: bool,
}

impl Frontend {
    /// Does any route or `tcp-request` rule look at the client's first
    /// bytes (`req.ssl_sni`, `req.ssl_hello_type`)?
    pub fn needs_content(&self) -> bool {
        let content = |e: &Expr| {
            e.any_test(&|c| {
                matches!(
                    c,
                    Condition::Sni(_) | Condition::Int(IntFetch::SslHelloType, _, _)
                )
            })
        };
        self.routes.iter().any(|r| content(&r.cond))
            || self
                .tcp_request
                .content
                .iter()
                .any(|r| r.cond.as_ref().is_some_and(content))
    }

    /// Does any route, rule (or alias), or the client keys' model
    /// permissions, need the request body's `model`?
    pub fn needs_model(&self) -> bool {
        !self.model_aliases.is_empty()
            || self.client_keys.is_some()
            || self.routes.iter().any(|r| r.needs_model())
            || self.http_request.iter().any(|r| {
                r.cond.as_ref().is_some_and(Expr::needs_model)
                    || matches!(&r.action, ReqAction::TrackSc { key, .. } if key == MODEL_KEY)
            })
    }
}

/// One `http-request` rule: the action runs when the condition holds (or
/// always, without one).
#[derive(Debug, Clone)]
pub struct HttpReqRule {
    pub cond: Option<Expr>,
    pub action: ReqAction,
}

#[derive(Debug, Clone)]
pub enum ReqAction {
    SetHeader(HeaderName, http::HeaderValue),
    AddHeader(HeaderName, http::HeaderValue),
    DelHeader(HeaderName),
    /// Regex on the path (query kept), replacement with `\1`-style groups
    /// already translated to `${1}`.
    ReplacePath(regex::Regex, String),
    /// New path; the query string is kept.
    SetPath(String),
    /// Answer with this status (403 by default) in the OpenAI error shape.
    Deny(http::StatusCode),
    Return {
        status: http::StatusCode,
        content_type: Option<http::HeaderValue>,
        body: Option<bytes::Bytes>,
    },
    /// Stop evaluating `http-request` rules of this section.
    Allow,
    /// Hold the request for `timeout tarpit`, then answer with this status
    /// (500 by default): an abuser's client waits instead of retrying at
    /// once, at the cost of a timer here.
    Tarpit(http::StatusCode),
    /// `sc-inc-gpc(IDX,SC)` (`sc-inc-gpc0(SC)`, `sc-inc-gpc1(SC)`): adds one
    /// to general purpose counter IDX and its rate on counter SC's entry.
    IncGpc {
        sc: u8,
        idx: u8,
    },
    /// `sc-set-gpt0(SC) VALUE`: sets the entry's general purpose tag.
    SetGpt0 {
        sc: u8,
        value: i64,
    },
    /// `track-sc0|1|2 KEY [table T]`: the request is counted in table T's
    /// entry for KEY (`src`, `req.hdr(NAME)`, the model).
    TrackSc {
        sc: u8,
        key: String,
        table: String,
    },
}

/// The `track-sc` key naming the request's model.
pub const MODEL_KEY: &str = "model";

/// The dotted path of a `track-sc` key read from the body
/// (`req.body,json_query('$.metadata.user_id')`, quotes dropped by the
/// lexer).
pub fn body_key_path(key: &str) -> Option<&str> {
    key.strip_prefix("req.body,json_query($.")?
        .strip_suffix(')')
        .filter(|p| !p.is_empty() && !p.split('.').any(str::is_empty))
}

/// One `http-response` rule.
#[derive(Debug, Clone)]
pub struct HttpRespRule {
    pub cond: Option<Expr>,
    pub action: RespAction,
}

#[derive(Debug, Clone)]
pub enum RespAction {
    SetHeader(HeaderName, http::HeaderValue),
    AddHeader(HeaderName, http::HeaderValue),
    DelHeader(HeaderName),
}

impl RespAction {
    pub fn apply(&self, h: &mut http::HeaderMap) {
        match self {
            RespAction::SetHeader(n, v) => {
                h.insert(n.clone(), v.clone());
            }
            RespAction::AddHeader(n, v) => {
                h.append(n.clone(), v.clone());
            }
            RespAction::DelHeader(n) => {
                h.remove(n);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardFor {
    /// Append the client address to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Append `for=…;proto=…;host=…` to RFC 7239 `Forwarded`.
    pub forwarded: bool,
}

#[derive(Debug, Clone)]
pub struct Bind {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
    /// Expect a PROXY protocol v1/v2 header before anything else.
    pub accept_proxy: bool,
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// Certificates; the first one answers clients without a matching SNI.
    pub certs: Vec<CertFiles>,
    pub alpn: Vec<Vec<u8>>,
    /// Stateless session tickets (HAProxy: on unless `no-tls-tickets`).
    pub tickets: bool,
    /// Sessions kept for resumption by id (HAProxy's `tune.ssl.cachesize`,
    /// 20000 by default); 0 = none. With tickets off too, every handshake
    /// is a full one.
    pub session_cache: usize,
}

/// HAProxy's default `tune.ssl.cachesize`.
pub const DEFAULT_SSL_CACHE: usize = 20_000;

#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One content-switching rule: the backend serves requests for which the
/// condition holds. A native TOML route is the AND of its conditions; an
/// HAProxy `use_backend … if|unless …` is any expression.
#[derive(Debug, Clone)]
pub struct Route {
    pub cond: Expr,
    pub backend: usize,
}

impl Route {
    pub fn needs_model(&self) -> bool {
        self.cond.needs_model()
    }
}

/// A boolean expression over request facts: HAProxy's ACL conditions
/// (`!`, `||`, implicit AND, named and anonymous ACLs) compile into this.
#[derive(Debug, Clone)]
pub enum Expr {
    Test(Condition),
    Not(Box<Expr>),
    /// Every part holds (true when empty).
    All(Vec<Expr>),
    /// Some part holds (false when empty).
    Any(Vec<Expr>),
}

impl Expr {
    pub fn needs_model(&self) -> bool {
        self.any_test(&|c| matches!(c, Condition::Model(_)))
    }

    /// Does the expression read a stick counter (`sc0_conn_rate`, …)?
    pub fn uses_stick_counters(&self) -> bool {
        self.any_test(&|c| matches!(c, Condition::Int(IntFetch::StickCounter { .. }, _, _)))
    }

    /// Calls `f` on this expression and every sub-expression, outside in.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Test(_) => {}
            Expr::Not(e) => e.walk(f),
            Expr::All(v) | Expr::Any(v) => v.iter().for_each(|e| e.walk(f)),
        }
    }

    pub fn any_test(&self, f: &dyn Fn(&Condition) -> bool) -> bool {
        match self {
            Expr::Test(c) => f(c),
            Expr::Not(e) => e.any_test(f),
            Expr::All(v) | Expr::Any(v) => v.iter().any(|e| e.any_test(f)),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// `Host` (or `:authority`), port stripped, case-insensitive.
    Host(Match),
    Path(Match),
    Method(http::Method),
    Header(HeaderName, Match),
    /// Any comma-separated value of a header (HAProxy's `hdr()`/`req.hdr()`
    /// see `a, b` as two values), leading and trailing blanks trimmed.
    HeaderValues(HeaderName, Match),
    /// A query-string parameter's value.
    Query(String, Match),
    /// The client's address (after PROXY protocol) is within a network.
    Src(Vec<IpNet>),
    /// The JSON body's top-level `model` field (after alias rewriting).
    Model(Match),
    /// The whole query string (HAProxy's `query`); absent without `?`.
    QueryString(Match),
    /// An integer fetch compared with a constant.
    Int(IntFetch, IntOp, i64),
    /// `req.ssl_sni`: the server name of the client's TLS ClientHello
    /// (`mode tcp`, within `tcp-request inspect-delay`); absent otherwise.
    Sni(Match),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntFetch {
    /// `scN_<data>` (`sc0_conn_rate`, `sc1_http_req_rate`, …): the data of
    /// the entry counter N tracks; absent when it tracks nothing or its
    /// table does not store that data.
    StickCounter { sc: u8, data: ScData },
    /// `req.ssl_hello_type`: 1 when the client's first bytes are a TLS
    /// ClientHello (`mode tcp`); absent otherwise.
    SslHelloType,
}

/// What an `scN_*` fetch reads: the stored data of the same name.
pub type ScData = super::stick::Data;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

impl IntOp {
    pub fn holds(self, a: i64, b: i64) -> bool {
        match self {
            IntOp::Eq => a == b,
            IntOp::Gt => a > b,
            IntOp::Ge => a >= b,
            IntOp::Lt => a < b,
            IntOp::Le => a <= b,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Match {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Contains the substring (HAProxy's `-m sub`).
    Contains(String),
    /// `*` matches any run, `?` one character.
    Glob(String),
    Regex(regex::Regex),
    /// Present, whatever the value.
    Found,
}

impl Match {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Match::Exact(s) => value == s,
            Match::Prefix(p) => value.starts_with(p.as_str()),
            Match::Suffix(p) => value.ends_with(p.as_str()),
            Match::Contains(p) => value.contains(p.as_str()),
            Match::Glob(g) => glob_match(g.as_bytes(), value.as_bytes()),
            Match::Regex(r) => r.is_match(value),
            Match::Found => true,
        }
    }
}

/// Iterative glob with `*` and `?`, linear in practice (single backtrack point).
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// An IPv4 or IPv6 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// `set` / `add` / `del` header rules, applied in that order: del, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub del: Vec<HeaderName>,
    pub set: Vec<(HeaderName, http::HeaderValue)>,
    pub add: Vec<(HeaderName, http::HeaderValue)>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.del.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, h: &mut http::HeaderMap) {
        for n in &self.del {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    /// A `tcp` backend serves `tcp` frontends only, and vice versa.
    pub mode: Mode,
    pub balance: Balance,
    pub hash_type: HashType,
    pub servers: Vec<Server>,
    pub timeouts: Timeouts,
    /// Rewrite `Host` sent upstream.
    pub host: Option<http::HeaderValue>,
    /// Replace this path prefix with another before forwarding.
    pub path_rewrite: Option<(String, String)>,
    /// Provider credentials injected into every request.
    pub credential: Option<Credential>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// `http-request` rules, in order, evaluated after routing.
    pub http_request: Vec<HttpReqRule>,
    pub http_response: Vec<HttpRespRule>,
    /// Append the client address to `X-Forwarded-For` for requests through
    /// this backend (HAProxy's `option forwardfor` in a backend); the
    /// frontend's setting adds it too.
    pub x_forwarded_for: bool,
    /// Health checks, backups, retries, redispatch, queueing.
    pub opts: BackendOpts,
    /// Pooled idle connections kept per server; [`NO_POOL_LIMIT`] by
    /// default, as HAProxy's `pool-max-conn -1`.
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
}

/// The most serving threads a process runs (HAProxy 2.6's `MAX_THREADS`
/// on 64-bit machines); `nbthread` 0 on a larger machine is clamped to it.
pub const MAX_THREADS: usize = 64;

/// No limit on a server's idle pooled connections (HAProxy's default,
/// `pool-max-conn -1`): each one was needed at once by the traffic, and
/// `pool_idle_timeout` closes those it no longer needs. A low cap makes
/// an HTTP/2 client's many concurrent streams close and reopen upstream
/// connections all the time (h2 over TLS, 16 clients × 10 streams: 12.5k
/// req/s with 64 idle connections kept, 18.9k with no limit).
pub const NO_POOL_LIMIT: usize = usize::MAX;

/// A provider secret and the header it travels in. `Debug` never shows it.
#[derive(Clone)]
pub struct Credential {
    pub header: HeaderName,
    /// Full header value (e.g. `Bearer sk-…`), marked sensitive.
    pub value: http::HeaderValue,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential {{ header: {}, value: <redacted> }}",
            self.header
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin; runtime weight changes apply at once.
    RoundRobin,
    /// Weighted round-robin on the configured weights.
    StaticRr,
    /// Fewest active + queued requests relative to weight; ties round-robin.
    LeastConn,
    /// First server (config order) with a free maxconn slot.
    First,
    /// Hash of the client address.
    Source,
    /// Hash of the request path.
    Uri,
    /// Hash of a request header's value; round-robin when absent.
    Hdr(HeaderName),
    /// Weighted random, best of N draws by load (N = 2 is P2C).
    Random(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashType {
    /// hash modulo the total weight of usable servers (HAProxy's default).
    #[default]
    MapBased,
    /// A hash ring: removing one of N servers moves about 1/N of the keys.
    Consistent,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub addr: ServerAddr,
    /// Configured weight, 0..=256.
    pub weight: u32,
    /// Concurrent requests; 0 = unlimited.
    pub maxconn: u32,
    pub tls: Option<UpstreamTls>,
    pub proto: UpstreamProto,
    /// Checks, backup, slowstart, observation.
    pub opts: ServerOpts,
}

/// Backend settings: health checks, retries, redispatch, queueing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendOpts {
    /// `retries N`; unset = HAProxy's default, 3 (see `retry::DEFAULT_RETRIES`).
    pub retries: Option<u32>,
    /// `retry-on` keywords as written (validated: [`retry_on_bit`]).
    pub retry_on: Vec<String>,
    pub redispatch: bool,
    /// `option allbackups`: every usable backup at once when no primary is
    /// usable (default: only the first usable backup).
    pub allbackups: bool,
    /// `option httpchk [METHOD] [URI]` as written (HAProxy dialect).
    pub httpchk: Option<(String, String)>,
    /// `http-check send` (HAProxy dialect).
    pub http_check_send: Option<CheckSend>,
    /// `http-check expect …` (HAProxy dialect).
    pub http_check_expect: Option<Expect>,
    pub timeout_queue: Option<Duration>,
    /// `timeout check`: with it, a check's connect is bounded by
    /// min(`timeout connect`, `inter`) and its response by this; without
    /// it, `inter` bounds the whole check.
    pub timeout_check: Option<Duration>,
    /// What servers with `check` are probed with (resolved).
    pub check: CheckDef,
    /// Backend-wide defaults for the servers' check timing (native
    /// `[backend.check]`); a server's own setting wins.
    pub check_timing: CheckTiming,
    /// Backend-wide `cooldown_429` default (native); a server's wins.
    pub cooldown_429: Option<Duration>,
    /// Where a request goes when this backend fails it for good (llmgw's
    /// own): the steps in order, each entered only on a failure its `on`
    /// names. Only the chain of the backend a route chose is followed.
    pub fallback: Vec<Fallback>,
}

/// One step of a fallback chain: `openai` → `azure-openai` →
/// `anthropic-compat`, each step with its own conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// Index into [`Config::backends`].
    pub backend: usize,
    /// The failures of the step before that lead here, as [`retry_on`]
    /// bits (default [`retry_on::FALLBACK_DEFAULT`]).
    pub on: u32,
    /// The model this backend is asked for: the body's `model` is
    /// rewritten (providers name the same model differently).
    pub model: Option<String>,
}

/// Resolves one step of backend `from`'s fallback chain, `prior` being the
/// steps before it; both readers call this so the rules are the same.
/// `on` empty = [`retry_on::FALLBACK_DEFAULT`].
pub fn fallback_step(
    from: usize,
    target: &str,
    on: &[String],
    model: Option<String>,
    backends: &[Backend],
    index: &std::collections::HashMap<String, usize>,
    prior: &[Fallback],
) -> Result<Fallback, String> {
    let this = &backends[from].name;
    let Some(&backend) = index.get(target) else {
        return Err(format!(
            "backend '{this}': fallback backend '{target}' does not exist"
        ));
    };
    if backend == from || prior.iter().any(|s| s.backend == backend) {
        return Err(format!(
            "backend '{this}': fallback backend '{target}' is already in the chain"
        ));
    }
    if backends[from].mode != Mode::Http || backends[backend].mode != Mode::Http {
        return Err(format!(
            "backend '{this}': fallback needs mode http on both '{this}' and '{target}'"
        ));
    }
    let mut bits = 0;
    for w in on {
        match retry_on::bit(w) {
            Some(b) => bits |= b,
            None => {
                return Err(format!(
                    "backend '{this}': unknown fallback condition '{w}' (the retry-on keywords: conn-failure, empty-response, junk-response, response-timeout, 401, 403, 404, 408, 425, 429, 500, 501, 502, 503, 504, all-retryable-errors)"
                ))
            }
        }
    }
    if model.as_deref().is_some_and(str::is_empty) {
        return Err(format!("backend '{this}': fallback model is empty"));
    }
    Ok(Fallback {
        backend,
        on: if on.is_empty() {
            retry_on::FALLBACK_DEFAULT
        } else {
            bits
        },
        model,
    })
}

/// When a failed attempt may be retried (HAProxy's `retry-on`), as bits.
pub mod retry_on {
    pub const CONN_FAILURE: u32 = 1 << 0;
    pub const EMPTY_RESPONSE: u32 = 1 << 1;
    pub const JUNK_RESPONSE: u32 = 1 << 2;
    pub const RESPONSE_TIMEOUT: u32 = 1 << 3;
    pub const ZERO_RTT_REJECTED: u32 = 1 << 4;
    /// Status `s` is bit `STATUS_BASE + index in STATUSES`.
    pub const STATUSES: [u16; 11] = [401, 403, 404, 408, 425, 429, 500, 501, 502, 503, 504];
    const STATUS_BASE: u32 = 5;
    pub const ALL_RETRYABLE: u32 = CONN_FAILURE
        | EMPTY_RESPONSE
        | JUNK_RESPONSE
        | RESPONSE_TIMEOUT
        | ZERO_RTT_REJECTED
        | status(500)
        | status(502)
        | status(503)
        | status(504);
    /// When a fallback step names no conditions: every retryable error,
    /// and a 429 — another provider's quota is the point of a fallback.
    pub const FALLBACK_DEFAULT: u32 = ALL_RETRYABLE | status(429);

    /// The bit for a response status (0 when `retry-on` cannot name it).
    pub const fn status(s: u16) -> u32 {
        let mut i = 0;
        while i < STATUSES.len() {
            if STATUSES[i] == s {
                return 1 << (STATUS_BASE + i as u32);
            }
            i += 1;
        }
        0
    }

    /// The bits of one `retry-on` keyword; `None` for an unknown one.
    pub fn bit(word: &str) -> Option<u32> {
        Some(match word {
            "none" => 0,
            "conn-failure" => CONN_FAILURE,
            "empty-response" => EMPTY_RESPONSE,
            "junk-response" => JUNK_RESPONSE,
            "response-timeout" => RESPONSE_TIMEOUT,
            "0rtt-rejected" => ZERO_RTT_REJECTED,
            "all-retryable-errors" => ALL_RETRYABLE,
            s => match s.parse::<u16>() {
                Ok(n) if status(n) != 0 => status(n),
                _ => return None,
            },
        })
    }

    /// Keywords naming exactly `mask` (the inverse of [`mask`]).
    pub fn words(mask: u32) -> Vec<String> {
        let mut out = Vec::new();
        let mut left = mask;
        if left & ALL_RETRYABLE == ALL_RETRYABLE {
            out.push("all-retryable-errors".to_owned());
            left &= !ALL_RETRYABLE;
        }
        for (bit, word) in [
            (CONN_FAILURE, "conn-failure"),
            (EMPTY_RESPONSE, "empty-response"),
            (JUNK_RESPONSE, "junk-response"),
            (RESPONSE_TIMEOUT, "response-timeout"),
            (ZERO_RTT_REJECTED, "0rtt-rejected"),
        ] {
            if left & bit != 0 {
                out.push(word.to_owned());
            }
        }
        out.extend(
            STATUSES
                .iter()
                .filter(|&&s| left & status(s) != 0)
                .map(|s| s.to_string()),
        );
        if out.is_empty() {
            out.push("none".to_owned());
        }
        out
    }

    /// The mask of a whole `retry-on` list; empty = HAProxy's default,
    /// `conn-failure`.
    pub fn mask(words: &[String]) -> u32 {
        if words.is_empty() {
            return CONN_FAILURE;
        }
        words.iter().filter_map(|w| bit(w)).fold(0, |a, b| a | b)
    }
}

/// `http-check send meth M uri U hdr N V…`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckSend {
    pub method: Option<String>,
    pub uri: Option<String>,
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
}

/// Check timing written at backend level (native TOML).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckTiming {
    pub inter: Option<Duration>,
    pub fastinter: Option<Duration>,
    pub downinter: Option<Duration>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
}

/// How servers with `check` are probed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckKind {
    /// Connect (and TLS handshake when checks use TLS) succeeds.
    #[default]
    Tcp,
    /// An HTTP request whose response meets the expectation.
    Http,
}

/// An active check's definition.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub kind: CheckKind,
    pub method: http::Method,
    /// Path (and query) requested.
    pub path: String,
    /// `Host` sent; `None` = the backend's `host`, else the server's address.
    pub host: Option<http::HeaderValue>,
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
    /// Also send the backend's provider credential (native default: yes,
    /// so that `GET /v1/models` is authorized).
    pub send_auth: bool,
    /// `None` = HAProxy's default: a 2xx or 3xx status.
    pub expect: Option<Expect>,
}

impl Default for CheckDef {
    fn default() -> Self {
        CheckDef {
            kind: CheckKind::Tcp,
            method: http::Method::GET,
            path: "/".into(),
            host: None,
            headers: Vec::new(),
            send_auth: false,
            expect: None,
        }
    }
}

impl CheckDef {
    /// The LLM-aware default for OpenAI-compatible upstreams: `GET
    /// /v1/models` with the provider credential. It costs no tokens.
    pub fn llm_default() -> CheckDef {
        CheckDef {
            kind: CheckKind::Http,
            path: "/v1/models".into(),
            send_auth: true,
            ..CheckDef::default()
        }
    }
}

/// `http-check expect [!] status|rstatus|string|rstring|hdr …`.
#[derive(Debug, Clone)]
pub struct Expect {
    pub negate: bool,
    pub test: ExpectTest,
}

impl PartialEq for Expect {
    fn eq(&self, o: &Expect) -> bool {
        // Regexes compare by their source.
        format!("{self:?}") == format!("{o:?}")
    }
}

#[derive(Debug, Clone)]
pub enum ExpectTest {
    /// Status codes and inclusive ranges (`200`, `200-399,404`).
    Status(Vec<(u16, u16)>),
    /// Regex on the status code's three digits.
    RStatus(regex::Regex),
    /// The body contains this string.
    String(String),
    /// A regex matches the body.
    RString(regex::Regex),
    /// A header is present (with a value that matches, when given).
    Header {
        name: HeaderName,
        value: Option<Match>,
    },
}

/// `observe layer4|layer7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveMode {
    Layer4,
    Layer7,
}

/// Server settings: checks, backup, slowstart, passive observation (in
/// force); `maxqueue` (summed into the backend's queue limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerOpts {
    pub check: bool,
    pub inter: Option<Duration>,
    pub fastinter: Option<Duration>,
    pub downinter: Option<Duration>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    /// `port`: checks go to this port instead of the server's.
    pub port: Option<u16>,
    /// `addr`: checks go to this host instead of the server's.
    pub addr: Option<String>,
    /// `check-ssl` (`Some(true)`) / `no-check-ssl`; unset = checks use TLS
    /// when the server does and neither `port` nor `addr` is set.
    pub check_ssl: Option<bool>,
    pub backup: bool,
    pub maxqueue: Option<u32>,
    pub slowstart: Option<Duration>,
    pub observe: Option<ObserveMode>,
    pub error_limit: Option<u32>,
    /// `fastinter`, `fail-check`, `sudden-death` or `mark-down`.
    pub on_error: Option<String>,
    /// Cooldown after a 429 without a usable `Retry-After` (llmgw).
    pub cooldown_429: Option<Duration>,
    /// Starts in maintenance.
    pub disabled: bool,
    /// `pool-max-conn`: this server's idle pooled connections, within
    /// the backend's `pool_max_idle` (-1 is [`NO_POOL_LIMIT`]).
    pub pool_max_conn: Option<usize>,
    /// `pool-purge-delay`: how often half of this server's long-idle pooled
    /// connections are closed (zero: never); HAProxy's 5 s when unset.
    pub pool_purge_delay: Option<Duration>,
    /// `pool-low-conn`: below this many idle connections to the server in
    /// all, a thread opens its own rather than take over another's.
    pub pool_low_conn: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// Host name (resolved at connect time) or IP literal, and a port.
    HostPort(String, u16),
    /// The built-in mock provider, started in-process.
    BuiltinMock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Verify the certificate against webpki roots (or `ca`). `false` only
    /// when the config says `verify = "none"`.
    pub verify: bool,
    /// SNI and verification name; defaults to the server's host name.
    pub sni: Option<String>,
    /// Extra PEM CA file trusted in addition to webpki roots.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProto {
    /// HTTP/1.1 in clear; over TLS, ALPN offers h2 and http/1.1.
    Auto,
    Http1,
    /// HTTP/2: prior knowledge (h2c) in clear, ALPN h2 over TLS.
    Http2,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(b"claude-*", b"claude-3-5-sonnet"));
        assert!(glob_match(b"*-mini", b"gpt-4o-mini"));
        assert!(glob_match(b"gpt-?o", b"gpt-4o"));
        assert!(!glob_match(b"claude-*", b"gpt-4o"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(glob_match(b"*", b""));
    }

    #[test]
    fn ipnet() {
        let n = IpNet {
            addr: "10.0.0.0".parse().unwrap(),
            prefix: 8,
        };
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let all = IpNet {
            addr: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6 = IpNet {
            addr: "fd00::".parse().unwrap(),
            prefix: 8,
        };
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
    }
}
