//! The compiled configuration: one immutable snapshot the data plane reads.
//!
//! Both readers (the native TOML and, later, the HAProxy dialect) produce
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
}

#[derive(Debug, Clone)]
pub struct Global {
    /// Process-wide concurrent connection limit; `None` = as many as the
    /// open-file limit allows, at most [`DEFAULT_MAXCONN`].
    pub maxconn: Option<u32>,
    /// Worker threads (HAProxy's `nbthread`); 0 = one per CPU.
    pub nbthread: usize,
    /// Where the stats listener binds (metrics and stats page hang here).
    pub stats: Option<SocketAddr>,
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
    /// TLS handshake (and PROXY header) must complete within this.
    pub handshake: Duration,
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
            handshake: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frontend {
    pub name: String,
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
    pub forward_for: ForwardFor,
    /// Header carrying the request id (kept from the client or generated).
    pub request_id_header: Option<HeaderName>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

impl Frontend {
    /// Does any route (or alias) need the request body's `model`?
    pub fn needs_model(&self) -> bool {
        !self.model_aliases.is_empty() || self.routes.iter().any(|r| r.needs_model())
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
}

#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One content-switching rule: every condition must hold.
#[derive(Debug, Clone)]
pub struct Route {
    pub conditions: Vec<Condition>,
    pub backend: usize,
}

impl Route {
    pub fn needs_model(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| matches!(c, Condition::Model(_)))
    }
}

#[derive(Debug, Clone)]
pub enum Condition {
    /// `Host` (or `:authority`), port stripped, case-insensitive.
    Host(Match),
    Path(Match),
    Method(http::Method),
    Header(HeaderName, Match),
    /// A query-string parameter's value.
    Query(String, Match),
    /// The client's address (after PROXY protocol) is within a network.
    Src(Vec<IpNet>),
    /// The JSON body's top-level `model` field (after alias rewriting).
    Model(Match),
}

#[derive(Debug, Clone)]
pub enum Match {
    Exact(String),
    Prefix(String),
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
    /// Pooled idle connections kept per server.
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
}

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
