//! The native TOML configuration format.
//!
//! Parsing happens in two steps: serde reads the text into `Raw*` structs that
//! mirror the file (every name and reference keeps its byte span), then
//! [`compile`] validates the whole thing and builds the [`Config`] model,
//! collecting *every* problem as `FILE:LINE: message` rather than stopping at
//! the first. A config with any problem is refused whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::diag::{Diag, Diags, Lines};
use super::log::{self, Framing, LogFormat, LogTarget};
use super::model::*;
use super::units::{parse_duration, parse_size};

/// The default limit on a request body buffered for routing.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// 32 bytes from 64 hex digits (either case).
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The completion budget reserved for a request that names no
/// `max_tokens` when a table counts tokens.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: RawGlobal,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default, rename = "frontend")]
    frontends: Vec<RawFrontend>,
    #[serde(default, rename = "backend")]
    backends: Vec<RawBackend>,
    #[serde(default, rename = "stick_table")]
    stick_tables: Vec<Spanned<RawStickTable>>,
    #[serde(default, rename = "client_keys")]
    key_lists: Vec<Spanned<RawKeyList>>,
}

/// `[[client_keys]]`: a named list of virtual API keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyList {
    name: String,
    #[serde(default, rename = "key")]
    keys: Vec<Spanned<RawClientKey>>,
}

/// `[[client_keys.key]]`: one key, by the hex SHA-256 of its value
/// (`printf %s "$KEY" | sha256sum`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientKey {
    name: String,
    sha256: String,
    models: Option<Vec<String>>,
    backends: Option<Vec<String>>,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
    max_concurrent: Option<u64>,
}

/// `[[stick_table]]`: HAProxy's `stick-table` (the rules that track into
/// it are written in HAProxy syntax in `http_request_rules`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStickTable {
    name: String,
    /// `ip`, `ipv6`, `integer`, `string` or `binary`.
    #[serde(rename = "type")]
    key_type: String,
    /// Entries; a number or a size such as `"100k"`.
    size: SizeValue,
    expire: Option<Spanned<DurationValue>>,
    /// `store` entries: `["conn_rate(10s)", "http_req_rate(1m)", "conn_cur"]`.
    #[serde(default)]
    store: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    maxconn: Option<Spanned<u32>>,
    /// Serving threads; 0 or absent = one per CPU.
    nbthread: Option<Spanned<usize>>,
    /// Stats listener: an address, `true` (= 127.0.0.1:8404), or a table
    /// `{ address, auth, read_auth, admin, realm, refresh, uri }`; none by
    /// default.
    stats: Option<Spanned<RawStatsValue>>,
    /// The runtime API socket: a path, or `{ path, mode, level, timeout }`.
    stats_socket: Option<Spanned<RawStatsSocket>>,
    /// Where access logs go: `{ target = "stdout", format = "httplog" }`.
    log: Option<Spanned<RawLog>>,
    /// The internal log level when `RUST_LOG` is not set.
    log_level: Option<Spanned<String>>,
    /// HAProxy's `hard-stop-after`: the longest a soft stop waits.
    hard_stop_after: Option<Spanned<DurationValue>>,
}

/// `[global] log = { … }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// `stdout`, `stderr`, `udp://HOST:PORT`, `unix:///dev/log` or a file.
    target: String,
    /// `httplog` (default) or `json`: the format of frontends that do not
    /// choose one.
    format: Option<String>,
    /// `raw`, `short`, `rfc3164` or `rfc5424`; default `raw` for stdout,
    /// stderr and files, `rfc3164` for syslog sockets.
    syslog_format: Option<String>,
    /// Syslog facility (default `local0`).
    facility: Option<String>,
    /// Syslog level filter (default `debug`: everything); traffic is `info`.
    level: Option<String>,
    /// Longest line (HAProxy's `len`); longer httplog lines are cut.
    len: Option<usize>,
}

/// The default stats listener address (HAProxy's usual `:8404`, on
/// loopback only).
const DEFAULT_STATS_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 8404);

/// `stats = "ADDR" | true | false | { … }`. Deserialized by hand rather
/// than as an untagged enum so a mistake inside the table (an unknown key,
/// a wrong type) is reported as itself, not as "did not match any variant".
enum RawStatsValue {
    Bool(bool),
    Address(String),
    Table(RawStats),
}

impl<'de> Deserialize<'de> for RawStatsValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawStatsValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "an address, true/false, or { address = \"…\", auth = [\"user:password\"], … }",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawStatsValue, E> {
                Ok(RawStatsValue::Bool(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawStatsValue, E> {
                Ok(RawStatsValue::Address(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<RawStatsValue, A::Error> {
                RawStats::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(RawStatsValue::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// `stats = { … }`: the listener and who may use it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStats {
    /// Default 127.0.0.1:8404.
    address: Option<Spanned<String>>,
    /// `["user:password", …]`: basic-auth users.
    #[serde(default)]
    auth: Vec<Spanned<String>>,
    /// Reads need a user too (default true when `auth` is set).
    read_auth: Option<bool>,
    /// Admin actions for logged-in users (default true).
    admin: Option<bool>,
    realm: Option<Spanned<String>>,
    /// The page's poll interval (default 2s).
    refresh: Option<Spanned<DurationValue>>,
    /// Another path serving the page (HAProxy's `stats uri`).
    uri: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "stats_socket: a path, or { path = \"…\", mode = \"600\", level = \"admin\", timeout = \"10s\", expose_fd_listeners = true }"
)]
enum RawStatsSocket {
    Path(PathBuf),
    Full(RawStatsSocketFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatsSocketFull {
    path: PathBuf,
    /// Octal permission bits as a string (`"600"`): a TOML integer would
    /// be read as decimal.
    mode: Option<String>,
    /// `user`, `operator` (the default, as in HAProxy) or `admin`.
    level: Option<String>,
    /// Idle session timeout (HAProxy's `stats timeout`), 10 s by default.
    /// (Not `Spanned`: an untagged enum cannot carry spans.)
    timeout: Option<DurationValue>,
    /// HAProxy's `expose-fd listeners`: a new process may take over the
    /// listening sockets through this socket (`llmgw run -x PATH`).
    expose_fd_listeners: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrBool {
    Bool(bool),
    String(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    timeout: RawTimeouts,
    body_limit: Option<Spanned<SizeValue>>,
    default_max_tokens: Option<u64>,
    #[serde(default)]
    pool: RawPool,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<DurationValue>>,
    client: Option<Spanned<DurationValue>>,
    server: Option<Spanned<DurationValue>>,
    http_request: Option<Spanned<DurationValue>>,
    http_keep_alive: Option<Spanned<DurationValue>>,
    tunnel: Option<Spanned<DurationValue>>,
    handshake: Option<Spanned<DurationValue>>,
    /// Time to first token (llmgw's own).
    ttft: Option<Spanned<DurationValue>>,
    /// How long `http-request tarpit` holds a request.
    tarpit: Option<Spanned<DurationValue>>,
    /// HAProxy's `timeout queue` (backends only).
    queue: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum DurationValue {
    Millis(u64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawPool {
    max_idle: Option<usize>,
    idle_timeout: Option<Spanned<DurationValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrontend {
    name: Spanned<String>,
    /// `"http"` (default) or `"tcp"`.
    mode: Option<Spanned<String>>,
    #[serde(default)]
    bind: Vec<Spanned<RawBind>>,
    maxconn: Option<u32>,
    #[serde(default)]
    timeout: RawTimeouts,
    default_backend: Option<Spanned<String>>,
    body_limit: Option<Spanned<SizeValue>>,
    default_max_tokens: Option<u64>,
    /// The `[[client_keys]]` list whose keys this frontend requires.
    client_keys: Option<Spanned<String>>,
    #[serde(default)]
    forwardfor: bool,
    #[serde(default)]
    forwarded: bool,
    /// Header name for the request id, or `false` to neither keep nor add one.
    request_id: Option<Spanned<StringOrBool>>,
    #[serde(default)]
    model_aliases: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    http_request: RawHeaderRules,
    #[serde(default)]
    http_response: RawHeaderRules,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    /// HAProxy-syntax lines (what `llmgw convert` writes): named ACLs,
    /// ordered `http-request` and `http-response` rules.
    acl: Option<Spanned<Vec<String>>>,
    http_request_rules: Option<Spanned<Vec<String>>>,
    http_response_rules: Option<Spanned<Vec<String>>>,
    /// HAProxy-syntax `tcp-request` lines without the keyword:
    /// `inspect-delay 5s`, `content reject if { … }`.
    tcp_request_rules: Option<Spanned<Vec<String>>>,
    /// Access logs for this frontend (default: on when `[global] log` is set).
    log: Option<bool>,
    /// This frontend's format, in place of the global one.
    log_format: Option<Spanned<String>>,
    /// No line for a connection that sent nothing (HAProxy's `option
    /// dontlognull`).
    #[serde(default)]
    dontlognull: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBind {
    Address(String),
    Full(RawBindFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindFull {
    address: String,
    #[serde(default)]
    accept_proxy: bool,
    tls: Option<RawBindTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBindTls {
    /// One certificate: a PEM with the chain, and the key here or in `key`.
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Several certificates, chosen by SNI; the first is the default.
    #[serde(default)]
    certs: Vec<RawCert>,
    alpn: Option<Vec<String>>,
    /// Stateless session tickets (default true).
    tickets: Option<bool>,
    /// Sessions cached for resumption (default 20000; 0 = none).
    session_cache: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCert {
    cert: PathBuf,
    key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    #[serde(default)]
    set_header: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    add_header: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    del_header: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    backend: Spanned<String>,
    host: Option<String>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_regex: Option<String>,
    method: Option<String>,
    header: Option<RawNamedMatch>,
    query: Option<RawNamedMatch>,
    src: Option<Vec<String>>,
    /// Exact, or a glob when it contains `*` or `?`.
    model: Option<String>,
    model_prefix: Option<String>,
    model_regex: Option<String>,
    /// An HAProxy condition, `if …` or `unless …`, over the frontend's ACLs.
    cond: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedMatch {
    name: String,
    value: Option<String>,
    prefix: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    /// `"http"` (default) or `"tcp"`.
    mode: Option<Spanned<String>>,
    balance: Option<Spanned<String>>,
    hash_type: Option<Spanned<String>>,
    #[serde(default)]
    timeout: RawTimeouts,
    host: Option<String>,
    replace_path_prefix: Option<RawPathRewrite>,
    auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    http_request: RawHeaderRules,
    #[serde(default)]
    http_response: RawHeaderRules,
    #[serde(default, rename = "server")]
    servers: Vec<Spanned<RawServer>>,
    #[serde(default)]
    forwardfor: bool,
    acl: Option<Spanned<Vec<String>>>,
    http_request_rules: Option<Spanned<Vec<String>>>,
    http_response_rules: Option<Spanned<Vec<String>>>,
    /// How servers with `check = true` are checked, and timing defaults.
    check: Option<Spanned<RawCheck>>,
    /// `option allbackups`.
    #[serde(default)]
    allbackups: bool,
    /// Default `cooldown_429` of the servers.
    cooldown_429: Option<Spanned<DurationValue>>,
    /// HAProxy's `retries`.
    retries: Option<u32>,
    /// HAProxy's `retry-on` keywords.
    retry_on: Option<Spanned<Vec<String>>>,
    /// HAProxy's `option redispatch`.
    #[serde(default)]
    redispatch: bool,
    /// Fallback chain: where a request goes when this backend fails it.
    #[serde(default)]
    fallback: Vec<Spanned<RawFallback>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    backend: String,
    /// `retry_on` keywords; absent = every retryable error and 429.
    on: Option<Vec<String>>,
    /// The model name this backend is asked for.
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    /// `http` (default in mode http: `GET /v1/models`) or `tcp`.
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    /// Send the backend's `auth` credential (default true).
    send_auth: Option<bool>,
    expect: Option<Spanned<RawExpect>>,
    timeout: Option<Spanned<DurationValue>>,
    inter: Option<Spanned<DurationValue>>,
    fastinter: Option<Spanned<DurationValue>>,
    downinter: Option<Spanned<DurationValue>>,
    fall: Option<Spanned<u32>>,
    rise: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    status: Option<StatusValue>,
    rstatus: Option<String>,
    string: Option<String>,
    rstring: Option<String>,
    header: Option<String>,
    /// With `header`: the value must equal this.
    value: Option<String>,
    #[serde(default)]
    negate: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatusValue {
    Code(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathRewrite {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    /// `bearer` (Authorization: Bearer …), `x-api-key`, `api-key`, or `header`.
    #[serde(rename = "type")]
    kind: String,
    /// With `type = "header"`: the header to send the secret in.
    header: Option<String>,
    env: Option<String>,
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Spanned<String>,
    address: Spanned<String>,
    weight: Option<u32>,
    maxconn: Option<u32>,
    tls: Option<RawServerTlsOpt>,
    proto: Option<Spanned<String>>,
    #[serde(default)]
    check: bool,
    inter: Option<Spanned<DurationValue>>,
    fastinter: Option<Spanned<DurationValue>>,
    downinter: Option<Spanned<DurationValue>>,
    fall: Option<Spanned<u32>>,
    rise: Option<Spanned<u32>>,
    check_port: Option<Spanned<u16>>,
    check_addr: Option<Spanned<String>>,
    check_tls: Option<bool>,
    #[serde(default)]
    backup: bool,
    /// Requests that may wait for this server's slots (0 = unlimited).
    maxqueue: Option<u32>,
    /// Idle pooled connections kept for this server (HAProxy's
    /// `pool-max-conn`), within the backend's `pool.max_idle`.
    pool_max_idle: Option<usize>,
    /// HAProxy's `pool-purge-delay`: every this long, half of the
    /// server's pooled connections idle that long are closed ("0s": never).
    pool_purge_delay: Option<Spanned<DurationValue>>,
    /// HAProxy's `pool-low-conn`: below this many idle connections in
    /// all, a thread opens its own instead of taking over another's.
    pool_low_conn: Option<usize>,
    slowstart: Option<Spanned<DurationValue>>,
    observe: Option<Spanned<String>>,
    error_limit: Option<Spanned<u32>>,
    on_error: Option<Spanned<String>>,
    cooldown_429: Option<Spanned<DurationValue>>,
    /// Starts in maintenance (HAProxy's `disabled`): `enable server` on
    /// the runtime API brings it in.
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawServerTlsOpt {
    On(bool),
    Options(RawServerTls),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    /// `required` (default) or `none`.
    verify: Option<String>,
    sni: Option<String>,
    ca: Option<PathBuf>,
}

/// Reads and compiles a native TOML configuration file.
pub fn load_file(path: &Path) -> Result<Config, Diags> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diags(vec![Diag {
            file: name.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    load_str(&name, &text, path.parent().unwrap_or(Path::new(".")))
}

/// Compiles TOML text; `file` names it in diagnostics and relative paths in
/// it are resolved against `base`.
pub fn load_str(file: &str, text: &str, base: &Path) -> Result<Config, Diags> {
    let lines = Lines::new(text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| lines.line_of(s.start)).unwrap_or(0);
        Diags(vec![Diag {
            file: file.to_owned(),
            line,
            message: e.message().trim().to_owned(),
        }])
    })?;
    let mut cx = Compiler {
        file,
        lines,
        base,
        diags: Vec::new(),
        table_names: HashSet::new(),
    };
    let config = cx.compile(raw);
    if cx.diags.is_empty() {
        Ok(config)
    } else {
        cx.diags.sort_by_key(|d| d.line);
        Err(Diags(cx.diags))
    }
}

struct Compiler<'a> {
    file: &'a str,
    lines: Lines,
    base: &'a Path,
    diags: Vec<Diag>,
    /// Declared stick tables, for the `track-sc` rules that name them.
    table_names: HashSet<String>,
}

impl Compiler<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let line = self.lines.line_of(span.start);
        self.diags.push(Diag {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        });
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn stats_socket(&mut self, raw: Spanned<RawStatsSocket>) -> Option<StatsSocket> {
        let span = raw.span();
        let full = match raw.into_inner() {
            RawStatsSocket::Path(path) => RawStatsSocketFull {
                path,
                mode: None,
                level: None,
                timeout: None,
                expose_fd_listeners: None,
            },
            RawStatsSocket::Full(f) => f,
        };
        if full.path.as_os_str().is_empty() {
            self.err(span, "stats_socket needs a path");
            return None;
        }
        let mut sock = StatsSocket::new(self.path(&full.path));
        if let Some(m) = &full.mode {
            match u32::from_str_radix(m, 8) {
                Ok(m) if m <= 0o7777 => sock.mode = Some(m),
                _ => self.err(
                    span.clone(),
                    format!("stats_socket mode must be octal permission bits as a string (e.g. \"600\"), not '{m}'"),
                ),
            }
        }
        if let Some(l) = &full.level {
            match AccessLevel::parse(l) {
                Some(level) => sock.level = level,
                None => self.err(
                    span.clone(),
                    "stats_socket level must be user, operator or admin",
                ),
            }
        }
        sock.expose_fd = full.expose_fd_listeners.unwrap_or(false);
        let timeout = match &full.timeout {
            None => Ok(sock.timeout),
            Some(DurationValue::Millis(ms)) => Ok(Duration::from_millis(*ms)),
            Some(DurationValue::Text(t)) => parse_duration(t),
        };
        match timeout {
            Ok(d) if !d.is_zero() => sock.timeout = d,
            Ok(_) => self.err(span, "stats_socket timeout must be above 0"),
            Err(e) => self.err(span, format!("stats_socket timeout: {e}")),
        }
        Some(sock)
    }

    fn compile(&mut self, raw: RawConfig) -> Config {
        let mut global = Global {
            maxconn: raw.global.maxconn.as_ref().map(|m| *m.get_ref()),
            nbthread: raw.global.nbthread.as_ref().map_or(0, |n| *n.get_ref()),
            stats: None,
            stats_access: StatsAccess::default(),
            stats_socket: raw.global.stats_socket.and_then(|s| self.stats_socket(s)),
            tune_bufsize: None,
            ssl_cachesize: None,
            default_max_tokens: None,
            log: raw.global.log.as_ref().and_then(|l| self.log_target(l)),
            log_level: raw.global.log_level.as_ref().and_then(|l| {
                match tracing_subscriber::EnvFilter::try_new(l.get_ref()) {
                    Ok(_) => Some(l.get_ref().clone()),
                    Err(e) => {
                        self.err(l.span(), format!("log_level '{}': {e}", l.get_ref()));
                        None
                    }
                }
            }),
            hard_stop_after: raw
                .global
                .hard_stop_after
                .as_ref()
                .and_then(|d| self.duration(d)),
        };
        if let Some(m) = raw.global.maxconn.as_ref().filter(|m| *m.get_ref() == 0) {
            self.err(m.span(), "global maxconn must be at least 1");
        }
        if let Some(n) = raw
            .global
            .nbthread
            .as_ref()
            .filter(|n| *n.get_ref() > MAX_THREADS)
        {
            self.err(
                n.span(),
                format!("nbthread must be at most {MAX_THREADS} (0 = one per CPU)"),
            );
        }
        // Like HAProxy, no stats listener unless the config asks for one.
        if let Some(s) = raw.global.stats {
            let span = s.span();
            match s.into_inner() {
                RawStatsValue::Bool(false) => {}
                RawStatsValue::Bool(true) => {
                    global.stats = Some(SocketAddr::from(DEFAULT_STATS_ADDR))
                }
                RawStatsValue::Address(a) => global.stats = self.socket_addr(&a, span),
                RawStatsValue::Table(t) => {
                    (global.stats, global.stats_access) = self.stats_table(t);
                }
            }
        }

        let default_timeouts = self.timeouts(&Timeouts::default(), &raw.defaults.timeout);
        let default_body_limit = match &raw.defaults.body_limit {
            Some(s) => self.size(s),
            None => DEFAULT_BODY_LIMIT,
        };

        let stick_tables = self.stick_tables(raw.stick_tables);

        // Backends first: routes refer to them by name.
        let mut backend_index: HashMap<String, usize> = HashMap::new();
        let mut backends = Vec::new();
        let mut fallbacks = Vec::new();
        for mut rb in raw.backends {
            let name = rb.name.get_ref().clone();
            if backend_index.contains_key(&name) {
                self.err(rb.name.span(), format!("duplicate backend name '{name}'"));
                continue;
            }
            backend_index.insert(name, backends.len());
            fallbacks.push(std::mem::take(&mut rb.fallback));
            let b = self.backend(rb, &default_timeouts, &raw.defaults.pool);
            backends.push(b);
        }
        for (bi, chain) in fallbacks.into_iter().enumerate() {
            let steps = self.fallback_chain(bi, chain, &backends, &backend_index);
            backends[bi].opts.fallback = steps;
        }

        let key_lists = self.key_lists(raw.key_lists, &backend_index);

        let mut frontends = Vec::new();
        let mut frontend_names = HashSet::new();
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        for rf in raw.frontends {
            if !frontend_names.insert(rf.name.get_ref().clone()) {
                self.err(
                    rf.name.span(),
                    format!("duplicate frontend name '{}'", rf.name.get_ref()),
                );
                continue;
            }
            let modes: Vec<Mode> = backends.iter().map(|b: &Backend| b.mode).collect();
            let keys = rf.client_keys.clone();
            let log = self.frontend_log(&rf, global.log.as_ref());
            let mut f = self.frontend(
                rf,
                &default_timeouts,
                default_body_limit,
                raw.defaults
                    .default_max_tokens
                    .unwrap_or(DEFAULT_MAX_TOKENS),
                &backend_index,
                &modes,
            );
            for b in &f.binds {
                // Port 0 takes a fresh ephemeral port each time: never a clash.
                if b.addr.port() == 0 {
                    continue;
                }
                if let Some(other) = bound.insert(b.addr, f.name.clone()) {
                    self.diags.push(Diag {
                        file: self.file.to_owned(),
                        line: 0,
                        message: format!(
                            "address {} is bound by both frontend '{other}' and frontend '{}'",
                            b.addr, f.name
                        ),
                    });
                }
            }
            if let Some(k) = keys {
                f.client_keys = key_lists.iter().position(|l| l.name == *k.get_ref());
                if f.client_keys.is_none() {
                    self.err(
                        k.span(),
                        format!(
                            "client_keys '{}' is not a [[client_keys]] list",
                            k.get_ref()
                        ),
                    );
                } else if f.mode == Mode::Tcp {
                    self.err(
                        k.span(),
                        "client_keys needs mode http: a tcp frontend sees no requests",
                    );
                }
            }
            f.log = log.filter(|_| f.mode == Mode::Http);
            frontends.push(f);
        }
        if frontends.is_empty() {
            self.diags.push(Diag {
                file: self.file.to_owned(),
                line: 1,
                message: "no [[frontend]] defined: nothing would listen".into(),
            });
        }
        Config {
            global,
            frontends,
            backends,
            stick_tables,
            key_lists,
        }
    }

    /// `[[client_keys]]` lists: names unique, hashes valid and unique,
    /// allowed backends known.
    fn key_lists(
        &mut self,
        raw: Vec<Spanned<RawKeyList>>,
        backends: &HashMap<String, usize>,
    ) -> Vec<KeyList> {
        let mut out: Vec<KeyList> = Vec::new();
        for rl in raw {
            let span = rl.span();
            let rl = rl.into_inner();
            if out.iter().any(|l| l.name == rl.name) {
                self.err(span, format!("duplicate client_keys name '{}'", rl.name));
                continue;
            }
            let mut keys: Vec<ClientKey> = Vec::new();
            for rk in rl.keys {
                let span = rk.span();
                let rk = rk.into_inner();
                let Some(sha256) = parse_sha256(&rk.sha256) else {
                    self.err(span, format!("client key '{}': sha256 must be 64 hex digits (the SHA-256 of the key, e.g. from `printf %s \"$KEY\" | sha256sum`)", rk.name));
                    continue;
                };
                if let Some(other) = keys
                    .iter()
                    .find(|k| k.name == rk.name || k.sha256 == sha256)
                {
                    let what = if other.name == rk.name { "name" } else { "key" };
                    self.err(
                        span,
                        format!(
                            "client key '{}': same {what} as client key '{}'",
                            rk.name, other.name
                        ),
                    );
                    continue;
                }
                let allowed = rk.backends.map(|names| {
                    names
                        .iter()
                        .filter_map(|n| match backends.get(n) {
                            Some(&i) => Some(i),
                            None => {
                                self.err(
                                    span.clone(),
                                    format!("client key '{}': unknown backend '{n}'", rk.name),
                                );
                                None
                            }
                        })
                        .collect()
                });
                for (what, v) in [
                    ("requests_per_minute", rk.requests_per_minute),
                    ("tokens_per_minute", rk.tokens_per_minute),
                    ("max_concurrent", rk.max_concurrent),
                ] {
                    if v == Some(0) {
                        self.err(span.clone(), format!("client key '{}': {what} must be at least 1 (leave it out for no limit)", rk.name));
                    }
                }
                keys.push(ClientKey {
                    name: rk.name,
                    sha256,
                    models: rk.models,
                    backends: allowed,
                    requests_per_minute: rk.requests_per_minute,
                    tokens_per_minute: rk.tokens_per_minute,
                    max_concurrent: rk.max_concurrent,
                });
            }
            out.push(KeyList {
                name: rl.name,
                keys,
            });
        }
        out
    }

    /// `[[stick_table]]` sections, checked as the HAProxy reader checks
    /// `stick-table` lines.
    fn stick_tables(&mut self, raw: Vec<Spanned<RawStickTable>>) -> Vec<StickTable> {
        let mut out = Vec::new();
        for r in raw {
            let span = r.span();
            let t = r.into_inner();
            if !self.table_names.insert(t.name.clone()) {
                self.err(span, format!("duplicate stick_table name '{}'", t.name));
                continue;
            }
            if !matches!(
                t.key_type.as_str(),
                "ip" | "ipv6" | "integer" | "string" | "binary"
            ) {
                self.err(span.clone(), format!("stick_table '{}': type '{}' is unknown (use ip, ipv6, integer, string or binary)", t.name, t.key_type));
            }
            let size = match &t.size {
                SizeValue::Bytes(n) => Ok(*n),
                SizeValue::Text(s) => parse_size(s),
            };
            let size = match size {
                Ok(n) if n > 0 => n,
                _ => {
                    self.err(span.clone(), format!("stick_table '{}': size must be a positive number of entries (e.g. 100000 or \"100k\")", t.name));
                    1
                }
            };
            if let Err(e) = super::stick::parse_store(&t.store) {
                self.err(span.clone(), format!("stick_table '{}': {e}", t.name));
            }
            out.push(StickTable {
                expire: t.expire.as_ref().and_then(|d| self.duration(d)),
                name: t.name,
                key_type: t.key_type,
                size,
                store: t.store,
            });
        }
        out
    }

    /// `stats = { … }`: the address and [`StatsAccess`].
    fn stats_table(&mut self, t: RawStats) -> (Option<SocketAddr>, StatsAccess) {
        let addr = match &t.address {
            Some(a) => self.socket_addr(a.get_ref(), a.span()),
            None => Some(SocketAddr::from(DEFAULT_STATS_ADDR)),
        };
        let mut access = StatsAccess::default();
        for a in &t.auth {
            match StatsUser::parse(a.get_ref()) {
                Ok(u) if access.users.iter().any(|o| o.name == u.name) => self.err(
                    a.span(),
                    format!("stats auth: user '{}' is listed twice", u.name),
                ),
                Ok(u) => access.users.push(u),
                // The message never repeats the entry: it holds a password.
                Err(e) => self.err(a.span(), e),
            }
        }
        if let Some(r) = t.read_auth {
            access.read_auth = r;
        }
        if let Some(a) = t.admin {
            access.admin = a;
        }
        if let Some(r) = &t.realm {
            // It goes into a quoted header parameter.
            if r.get_ref().is_empty()
                || r.get_ref().contains(['"', '\\'])
                || HeaderValue::from_str(r.get_ref()).is_err()
            {
                self.err(
                    r.span(),
                    "stats realm must be non-empty printable text without quotes or backslashes",
                );
            } else {
                access.realm = r.get_ref().clone();
            }
        }
        if let Some(r) = &t.refresh {
            match self.duration(r) {
                Some(d) if d >= Duration::from_millis(500) => access.refresh = d,
                Some(_) => self.err(r.span(), "stats refresh must be at least 500ms"),
                None => {}
            }
        }
        if let Some(u) = &t.uri {
            match check_stats_uri(u.get_ref()) {
                Ok(()) => access.uri = Some(u.get_ref().clone()),
                Err(e) => self.err(u.span(), e),
            }
        }
        (addr, access)
    }

    fn socket_addr(&mut self, s: &str, span: std::ops::Range<usize>) -> Option<SocketAddr> {
        match parse_listen_addr(s) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(span, e);
                None
            }
        }
    }

    fn duration(&mut self, v: &Spanned<DurationValue>) -> Option<Duration> {
        match v.get_ref() {
            DurationValue::Millis(ms) => Some(Duration::from_millis(*ms)),
            DurationValue::Text(t) => match parse_duration(t) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(v.span(), e);
                    None
                }
            },
        }
    }

    fn size(&mut self, v: &Spanned<SizeValue>) -> usize {
        let r = match v.get_ref() {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        };
        match r {
            Ok(b) => usize::try_from(b).unwrap_or(usize::MAX),
            Err(e) => {
                self.err(v.span(), e);
                DEFAULT_BODY_LIMIT
            }
        }
    }

    fn timeouts(&mut self, base: &Timeouts, raw: &RawTimeouts) -> Timeouts {
        let mut t = base.clone();
        let fields: [(&Option<Spanned<DurationValue>>, &mut Duration); 7] = [
            (&raw.connect, &mut t.connect),
            (&raw.client, &mut t.client),
            (&raw.server, &mut t.server),
            (&raw.http_request, &mut t.http_request),
            (&raw.http_keep_alive, &mut t.http_keep_alive),
            (&raw.tunnel, &mut t.tunnel),
            (&raw.handshake, &mut t.handshake),
        ];
        if raw.tunnel.is_some() {
            t.tunnel_set = true;
        }
        for (v, slot) in [(&raw.ttft, &mut t.ttft), (&raw.tarpit, &mut t.tarpit)] {
            let Some(v) = v else { continue };
            match self.duration(v) {
                Some(d) if d.is_zero() => self.err(v.span(), "a timeout of 0 is not allowed"),
                Some(d) => *slot = Some(d),
                None => {}
            }
        }
        for (raw, slot) in fields {
            if let Some(v) = raw {
                if let Some(d) = self.duration(v) {
                    if d.is_zero() {
                        self.err(v.span(), "a timeout of 0 is not allowed");
                    } else {
                        *slot = d;
                    }
                }
            }
        }
        t
    }

    fn header_name(&mut self, s: &str, span: std::ops::Range<usize>) -> Option<HeaderName> {
        match HeaderName::from_bytes(s.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.err(span, format!("invalid header name '{s}'"));
                None
            }
        }
    }

    fn header_rules(&mut self, raw: RawHeaderRules, span: std::ops::Range<usize>) -> HeaderRules {
        let mut rules = HeaderRules::default();
        for n in raw.del_header {
            if let Some(h) = self.header_name(n.get_ref(), n.span()) {
                rules.del.push(h);
            }
        }
        for (map, out) in [
            (raw.set_header, &mut rules.set),
            (raw.add_header, &mut rules.add),
        ] {
            for (k, v) in map {
                let name = self.header_name(&k, v.span());
                match HeaderValue::from_str(v.get_ref()) {
                    Ok(val) => {
                        if let Some(n) = name {
                            out.push((n, val));
                        }
                    }
                    Err(_) => self.err(v.span(), format!("invalid value for header '{k}'")),
                }
            }
        }
        let _ = span;
        rules
    }

    fn mode(&mut self, m: &Option<Spanned<String>>) -> Mode {
        match m.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("http", _)) => Mode::Http,
            Some(("tcp", _)) => Mode::Tcp,
            Some((other, span)) => {
                self.err(span, format!("mode '{other}' must be \"http\" or \"tcp\""));
                Mode::Http
            }
        }
    }

    fn frontend(
        &mut self,
        rf: RawFrontend,
        defaults: &Timeouts,
        default_body_limit: usize,
        default_max_tokens: u64,
        backends: &HashMap<String, usize>,
        modes: &[Mode],
    ) -> Frontend {
        let name = rf.name.get_ref().clone();
        let mode = self.mode(&rf.mode);
        let mut binds = Vec::new();
        for b in &rf.bind {
            let span = b.span();
            match b.get_ref() {
                RawBind::Address(a) => {
                    if let Some(addr) = self.socket_addr(a, span) {
                        binds.push(Bind {
                            addr,
                            tls: None,
                            accept_proxy: false,
                        });
                    }
                }
                RawBind::Full(full) => {
                    let addr = self.socket_addr(&full.address, span.clone());
                    let tls = full
                        .tls
                        .as_ref()
                        .and_then(|t| self.bind_tls(t, span.clone()));
                    if let Some(addr) = addr {
                        binds.push(Bind {
                            addr,
                            tls,
                            accept_proxy: full.accept_proxy,
                        });
                    }
                }
            }
        }
        if rf.bind.is_empty() {
            self.err(
                rf.name.span(),
                format!("frontend '{name}' has no bind address"),
            );
        }
        let default_backend = rf.default_backend.as_ref().and_then(|d| {
            let found = backends.get(d.get_ref()).copied();
            if found.is_none() {
                self.err(
                    d.span(),
                    format!("default_backend '{}' does not exist", d.get_ref()),
                );
            }
            found
        });
        let embedded = self.embedded(
            &name,
            &rf.acl,
            &rf.http_request_rules,
            &rf.http_response_rules,
            &rf.tcp_request_rules,
        );
        let mut routes = Vec::new();
        for r in rf.route {
            let span = r.span();
            if let Some(route) = self.route(r.into_inner(), span, backends, &embedded.acls) {
                routes.push(route);
            }
        }
        let request_id_header = match rf.request_id {
            None => Some(HeaderName::from_static("x-request-id")),
            Some(s) => {
                let span = s.span();
                match s.into_inner() {
                    StringOrBool::Bool(false) => None,
                    StringOrBool::Bool(true) => Some(HeaderName::from_static("x-request-id")),
                    StringOrBool::String(h) => self.header_name(&h, span),
                }
            }
        };
        let body_limit = match &rf.body_limit {
            Some(s) => self.size(s),
            None => default_body_limit,
        };
        let used = routes.iter().map(|r| r.backend).chain(default_backend);
        for b in used.collect::<HashSet<_>>() {
            if let Some(&bm) = modes.get(b) {
                if bm != mode {
                    let bname = backends
                        .iter()
                        .find(|(_, &i)| i == b)
                        .map_or("?", |(n, _)| n.as_str());
                    self.err(
                        rf.name.span(),
                        format!(
                            "{} frontend '{name}' uses {} backend '{bname}': a frontend may only use backends of its own mode",
                            mode.as_str(),
                            bm.as_str()
                        ),
                    );
                }
            }
        }
        if mode == Mode::Http && !embedded.tcp.content.is_empty() {
            self.err(
                rf.name.span(),
                "tcp_request_rules 'content' rules work in mode tcp only",
            );
        }
        let model_aliases = rf
            .model_aliases
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        Frontend {
            mode,
            tcp_request: embedded.tcp,
            timeouts: self.timeouts(defaults, &rf.timeout),
            request_headers: self.header_rules(rf.http_request, rf.name.span()),
            response_headers: self.header_rules(rf.http_response, rf.name.span()),
            name,
            binds,
            maxconn: rf.maxconn.unwrap_or(0),
            routes,
            default_backend,
            model_aliases,
            body_limit,
            default_max_tokens: rf.default_max_tokens.unwrap_or(default_max_tokens),
            client_keys: None,
            forward_for: ForwardFor {
                x_forwarded_for: rf.forwardfor,
                forwarded: rf.forwarded,
            },
            request_id_header,
            http_request: embedded.req,
            http_response: embedded.resp,
            log: None,
            dontlognull: rf.dontlognull,
        }
    }

    /// `[global] log = { … }`.
    fn log_target(&mut self, raw: &Spanned<RawLog>) -> Option<LogTarget> {
        let span = raw.span();
        let r = raw.get_ref();
        let sink = match log::native_sink(&r.target, self.base) {
            Ok(s) => s,
            Err(e) => {
                self.err(span, e);
                return None;
            }
        };
        let framing = match r.syslog_format.as_deref() {
            None if sink.is_stream() => Framing::Raw,
            None => Framing::Rfc3164,
            Some(f) => match Framing::parse(f) {
                Some(f) => f,
                None => {
                    self.err(
                        span,
                        format!("log syslog_format '{f}' must be raw, short, rfc3164 or rfc5424"),
                    );
                    return None;
                }
            },
        };
        let mut t = LogTarget::new(sink, framing);
        if let Some(f) = &r.format {
            match LogFormat::parse(f) {
                Some(f) => t.format = f,
                None => {
                    self.err(span, format!("log format '{f}' must be httplog or json"));
                    return None;
                }
            }
        }
        if let Some(f) = &r.facility {
            match log::facility(f) {
                Some(f) => t.facility = f,
                None => {
                    self.err(
                        span,
                        format!(
                            "log facility '{f}' is not one of {}",
                            log::FACILITIES.join(", ")
                        ),
                    );
                    return None;
                }
            }
        }
        if let Some(l) = &r.level {
            match log::level(l) {
                Some(l) => t.level = l,
                None => {
                    self.err(
                        span,
                        format!("log level '{l}' is not one of {}", log::LEVELS.join(", ")),
                    );
                    return None;
                }
            }
        }
        if let Some(n) = r.len {
            if n < 80 {
                self.err(span, format!("log len {n} is too short (at least 80)"));
                return None;
            }
            t.max_len = Some(n);
        }
        Some(t)
    }

    /// A frontend's access-log format: on by default when the process has
    /// a target, off with `log = false`.
    fn frontend_log(&mut self, rf: &RawFrontend, target: Option<&LogTarget>) -> Option<LogFormat> {
        let own = rf
            .log_format
            .as_ref()
            .and_then(|f| match LogFormat::parse(f.get_ref()) {
                Some(f) => Some(f),
                None => {
                    self.err(
                        f.span(),
                        format!("log_format '{}' must be httplog or json", f.get_ref()),
                    );
                    None
                }
            });
        if rf.log == Some(true) && target.is_none() {
            self.err(
                rf.name.span(),
                format!(
                    "frontend '{}' has log = true but [global] sets no log target",
                    rf.name.get_ref()
                ),
            );
        }
        let target = target.filter(|t| t.sends_traffic())?;
        if rf.log == Some(false) {
            return None;
        }
        Some(own.unwrap_or(target.format))
    }

    /// HAProxy-syntax ACLs and rules embedded in a section.
    fn embedded(
        &mut self,
        section: &str,
        acl: &Option<Spanned<Vec<String>>>,
        req: &Option<Spanned<Vec<String>>>,
        resp: &Option<Spanned<Vec<String>>>,
        tcp: &Option<Spanned<Vec<String>>>,
    ) -> super::haproxy::Embedded {
        fn lines(v: &Option<Spanned<Vec<String>>>) -> &[String] {
            v.as_ref().map_or(&[][..], |s| s.get_ref().as_slice())
        }
        let span = |v: &Option<Spanned<Vec<String>>>| v.as_ref().map_or(0..0, |s| s.span());
        let (e, mut errors) = super::haproxy::embedded_rules(
            section,
            lines(acl),
            lines(req),
            lines(resp),
            lines(tcp),
        );
        for r in &e.req {
            if let ReqAction::TrackSc { table, .. } = &r.action {
                if !self.table_names.contains(table) {
                    errors.push(format!("track rule: stick table '{table}' is not declared (add a [[stick_table]] with name = \"{table}\")"));
                }
            }
        }
        for r in &e.tcp.connection {
            if let ConnAction::TrackSc { table, .. } = &r.action {
                if !self.table_names.contains(table) {
                    // Name the line, so the error points at tcp_request_rules.
                    let line = lines(tcp)
                        .iter()
                        .find(|l| l.contains("track-sc") && l.contains(table.as_str()))
                        .or_else(|| lines(tcp).iter().find(|l| l.contains("track-sc")))
                        .map_or(String::new(), |l| format!("'{l}': "));
                    errors.push(format!("{line}track rule: stick table '{table}' is not declared (add a [[stick_table]] with name = \"{table}\")"));
                }
            }
        }
        // Each error names its line; point at the list that holds it.
        for m in errors {
            let from = |v| lines(v).iter().any(|a| m.starts_with(&format!("'{a}'")));
            let sp = if from(acl) {
                span(acl)
            } else if from(tcp) {
                span(tcp)
            } else if from(resp) {
                span(resp)
            } else {
                span(req)
            };
            self.err(sp, m);
        }
        e
    }

    fn bind_tls(&mut self, t: &RawBindTls, span: std::ops::Range<usize>) -> Option<Tls> {
        let mut certs = Vec::new();
        if let Some(c) = &t.cert {
            certs.push(CertFiles {
                cert: self.path(c),
                key: self.path(t.key.as_ref().unwrap_or(c)),
            });
        } else if t.key.is_some() {
            self.err(span.clone(), "tls 'key' given without 'cert'");
        }
        for c in &t.certs {
            certs.push(CertFiles {
                cert: self.path(&c.cert),
                key: self.path(c.key.as_ref().unwrap_or(&c.cert)),
            });
        }
        if certs.is_empty() {
            self.err(span, "tls needs 'cert' (PEM) or 'certs'");
            return None;
        }
        for c in &certs {
            if let Err(e) = crate::listen::tls::load_certified_key(c) {
                self.err(span.clone(), e);
            }
        }
        let alpn = t
            .alpn
            .clone()
            .unwrap_or_else(|| vec!["h2".into(), "http/1.1".into()])
            .into_iter()
            .map(String::into_bytes)
            .collect();
        Some(Tls {
            certs,
            alpn,
            tickets: t.tickets.unwrap_or(true),
            session_cache: t.session_cache.unwrap_or(crate::config::DEFAULT_SSL_CACHE),
        })
    }

    fn route(
        &mut self,
        r: RawRoute,
        span: std::ops::Range<usize>,
        backends: &HashMap<String, usize>,
        acls: &super::haproxy::cond::Acls,
    ) -> Option<Route> {
        let backend = match backends.get(r.backend.get_ref()) {
            Some(&i) => Some(i),
            None => {
                let msg = format!(
                    "route points at backend '{}', which does not exist",
                    r.backend.get_ref()
                );
                self.err(r.backend.span(), msg);
                None
            }
        };
        let mut conditions = Vec::new();
        if let Some(h) = r.host {
            conditions.push(Condition::Host(Match::Exact(h.to_ascii_lowercase())));
        }
        if let Some(p) = r.path {
            conditions.push(Condition::Path(Match::Exact(p)));
        }
        if let Some(p) = r.path_prefix {
            conditions.push(Condition::Path(Match::Prefix(p)));
        }
        if let Some(p) = r.path_regex {
            if let Some(re) = self.regex(&p, span.clone()) {
                conditions.push(Condition::Path(Match::Regex(re)));
            }
        }
        if let Some(m) = r.method {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => conditions.push(Condition::Method(m)),
                Err(_) => self.err(span.clone(), format!("invalid method '{m}'")),
            }
        }
        if let Some(h) = r.header {
            if let Some(name) = self.header_name(&h.name, span.clone()) {
                if let Some(m) = self.named_match(&h, span.clone()) {
                    conditions.push(Condition::Header(name, m));
                }
            }
        }
        if let Some(q) = r.query {
            if let Some(m) = self.named_match(&q, span.clone()) {
                conditions.push(Condition::Query(q.name.clone(), m));
            }
        }
        if let Some(src) = r.src {
            let mut nets = Vec::new();
            for s in src {
                match parse_ipnet(&s) {
                    Ok(n) => nets.push(n),
                    Err(e) => self.err(span.clone(), e),
                }
            }
            conditions.push(Condition::Src(nets));
        }
        if let Some(m) = r.model {
            let m = if m.contains(['*', '?']) {
                Match::Glob(m)
            } else {
                Match::Exact(m)
            };
            conditions.push(Condition::Model(m));
        }
        if let Some(p) = r.model_prefix {
            conditions.push(Condition::Model(Match::Prefix(p)));
        }
        if let Some(p) = r.model_regex {
            if let Some(re) = self.regex(&p, span.clone()) {
                conditions.push(Condition::Model(Match::Regex(re)));
            }
        }
        let mut all: Vec<Expr> = conditions.into_iter().map(Expr::Test).collect();
        if let Some(c) = &r.cond {
            match super::haproxy::embedded_cond(c, acls) {
                Ok(e) => all.push(e),
                Err(e) => self.err(span.clone(), e),
            }
        }
        Some(Route {
            cond: Expr::All(all),
            backend: backend?,
        })
    }

    fn named_match(&mut self, m: &RawNamedMatch, span: std::ops::Range<usize>) -> Option<Match> {
        let given = [&m.value, &m.prefix, &m.glob, &m.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given > 1 {
            self.err(
                span,
                format!("'{}': give only one of value, prefix, glob, regex", m.name),
            );
            return None;
        }
        Some(if let Some(v) = &m.value {
            Match::Exact(v.clone())
        } else if let Some(p) = &m.prefix {
            Match::Prefix(p.clone())
        } else if let Some(g) = &m.glob {
            Match::Glob(g.clone())
        } else if let Some(r) = &m.regex {
            Match::Regex(self.regex(r, span)?)
        } else {
            Match::Found
        })
    }

    fn regex(&mut self, p: &str, span: std::ops::Range<usize>) -> Option<regex::Regex> {
        match regex::Regex::new(p) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(span, format!("invalid regex '{p}': {e}"));
                None
            }
        }
    }

    fn backend(&mut self, rb: RawBackend, defaults: &Timeouts, default_pool: &RawPool) -> Backend {
        let name = rb.name.get_ref().clone();
        let balance = match &rb.balance {
            None => Balance::RoundRobin,
            Some(b) => match parse_balance(b.get_ref()) {
                Ok(b) => b,
                Err(e) => {
                    self.err(b.span(), e);
                    Balance::RoundRobin
                }
            },
        };
        let hash_type = match rb
            .hash_type
            .as_ref()
            .map(|h| (h.get_ref().as_str(), h.span()))
        {
            None | Some(("map-based", _)) => HashType::MapBased,
            Some(("consistent", _)) => HashType::Consistent,
            Some((other, span)) => {
                self.err(
                    span,
                    format!("unknown hash_type '{other}' (use map-based or consistent)"),
                );
                HashType::MapBased
            }
        };
        let mut servers = Vec::new();
        let mut names = HashSet::new();
        for s in rb.servers {
            let span = s.span();
            let s = s.into_inner();
            if !names.insert(s.name.get_ref().clone()) {
                self.err(
                    s.name.span(),
                    format!(
                        "duplicate server name '{}' in backend '{name}'",
                        s.name.get_ref()
                    ),
                );
                continue;
            }
            if let Some(srv) = self.server(s, span) {
                servers.push(srv);
            }
        }
        let credential = rb.auth.and_then(|a| {
            let span = a.span();
            match read_credential(a.get_ref(), self.base) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.err(span, e);
                    None
                }
            }
        });
        let embedded = self.embedded(
            &name,
            &rb.acl,
            &rb.http_request_rules,
            &rb.http_response_rules,
            &None,
        );
        let pool = RawPool {
            max_idle: rb.pool.max_idle.or(default_pool.max_idle),
            idle_timeout: rb
                .pool
                .idle_timeout
                .or_else(|| default_pool.idle_timeout.clone()),
        };
        let pool_idle_timeout = pool
            .idle_timeout
            .as_ref()
            .and_then(|d| self.duration(d))
            .unwrap_or(Duration::from_secs(60));
        let mode = self.mode(&rb.mode);
        let (check, check_timing, timeout_check) = self.check_def(rb.check, mode);
        let cooldown_429 = rb.cooldown_429.as_ref().and_then(|d| self.duration(d));
        let retry_on = match &rb.retry_on {
            None => Vec::new(),
            Some(words) => {
                for w in words.get_ref() {
                    if crate::config::model::retry_on::bit(w).is_none() {
                        self.err(
                            words.span(),
                            format!("backend '{name}': unknown retry_on keyword '{w}' (conn-failure, empty-response, junk-response, response-timeout, 0rtt-rejected, 401, 403, 404, 408, 425, 429, 500, 501, 502, 503, 504, all-retryable-errors, none)"),
                        );
                    }
                }
                words.get_ref().clone()
            }
        };
        if mode == Mode::Tcp && matches!(balance, Balance::Uri | Balance::Hdr(_)) {
            if let Some(b) = &rb.balance {
                self.err(
                    b.span(),
                    format!("backend '{name}': balance '{}' needs mode http (a tcp backend has no URI or headers)", b.get_ref()),
                );
            }
        }
        Backend {
            mode,
            balance,
            hash_type,
            servers,
            timeouts: self.timeouts(defaults, &rb.timeout),
            host: rb.host.and_then(|h| match HeaderValue::from_str(&h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    self.err(
                        rb.name.span(),
                        format!("backend '{}': invalid host '{h}'", rb.name.get_ref()),
                    );
                    None
                }
            }),
            path_rewrite: rb.replace_path_prefix.map(|p| (p.from, p.to)),
            credential,
            request_headers: self.header_rules(rb.http_request, rb.name.span()),
            response_headers: self.header_rules(rb.http_response, rb.name.span()),
            http_request: embedded.req,
            http_response: embedded.resp,
            x_forwarded_for: rb.forwardfor,
            opts: BackendOpts {
                allbackups: rb.allbackups,
                timeout_check,
                check,
                check_timing,
                cooldown_429,
                timeout_queue: rb.timeout.queue.as_ref().and_then(|d| self.duration(d)),
                retries: rb.retries,
                retry_on,
                redispatch: rb.redispatch,
                ..BackendOpts::default()
            },
            pool_max_idle: pool.max_idle.unwrap_or(NO_POOL_LIMIT),
            pool_idle_timeout,
            name,
        }
    }

    /// A backend's `fallback` steps, resolved against every backend.
    fn fallback_chain(
        &mut self,
        from: usize,
        chain: Vec<Spanned<RawFallback>>,
        backends: &[Backend],
        index: &HashMap<String, usize>,
    ) -> Vec<Fallback> {
        let mut steps = Vec::new();
        for raw in chain {
            let span = raw.span();
            let f = raw.into_inner();
            let on = f.on.unwrap_or_default();
            let step = fallback_step(from, &f.backend, &on, f.model, backends, index, &steps);
            match step {
                Ok(s) => steps.push(s),
                Err(e) => self.err(span, e),
            }
        }
        steps
    }

    /// `[backend.check]`: the check definition, backend-wide timing and
    /// `timeout`. Without it: `GET /v1/models` in mode http, a TCP connect
    /// in mode tcp.
    fn check_def(
        &mut self,
        raw: Option<Spanned<RawCheck>>,
        mode: Mode,
    ) -> (CheckDef, CheckTiming, Option<Duration>) {
        let default = || match mode {
            Mode::Http => CheckDef::llm_default(),
            Mode::Tcp => CheckDef::default(),
        };
        let Some(raw) = raw else {
            return (default(), CheckTiming::default(), None);
        };
        let raw = raw.into_inner();
        let mut def = default();
        match raw.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            None => {}
            Some(("http", _)) if def.kind != CheckKind::Http => def = CheckDef::llm_default(),
            Some(("http", _)) => {}
            Some(("tcp", _)) => def = CheckDef::default(),
            Some((other, sp)) => self.err(
                sp,
                format!("check type must be \"http\" or \"tcp\", not '{other}'"),
            ),
        }
        let http_only = [
            raw.method.as_ref().map(|v| v.span()),
            raw.path.as_ref().map(|v| v.span()),
            raw.host.as_ref().map(|v| v.span()),
            raw.expect.as_ref().map(|v| v.span()),
        ];
        if def.kind == CheckKind::Tcp {
            if let Some(sp) = http_only.into_iter().flatten().next() {
                self.err(
                    sp,
                    "method, path, host and expect apply to type = \"http\" checks only",
                );
            }
        }
        if let Some(m) = &raw.method {
            match http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                Ok(me) => def.method = me,
                Err(_) => self.err(m.span(), format!("invalid method '{}'", m.get_ref())),
            }
        }
        if let Some(p) = &raw.path {
            if !p.get_ref().starts_with('/')
                || p.get_ref().parse::<http::uri::PathAndQuery>().is_err()
            {
                self.err(
                    p.span(),
                    format!("check path must start with '/', not '{}'", p.get_ref()),
                );
            } else {
                def.path = p.get_ref().clone();
            }
        }
        if let Some(h) = &raw.host {
            match HeaderValue::from_str(h.get_ref()) {
                Ok(v) if !h.get_ref().is_empty() => def.host = Some(v),
                _ => self.err(h.span(), format!("invalid check host '{}'", h.get_ref())),
            }
        }
        for (k, v) in &raw.headers {
            let name = self.header_name(k, v.span());
            match (name, HeaderValue::from_str(v.get_ref())) {
                (Some(n), Ok(val)) => def.headers.push((n, val)),
                (_, Err(_)) => self.err(v.span(), format!("invalid value for header '{k}'")),
                _ => {}
            }
        }
        if let Some(a) = raw.send_auth {
            def.send_auth = a;
        }
        if let Some(e) = &raw.expect {
            def.expect = self.expect(e.get_ref(), e.span());
        }
        let mut interval = |v: &Option<Spanned<DurationValue>>| {
            let v = v.as_ref()?;
            let d = self.duration(v)?;
            if d.is_zero() {
                self.err(v.span(), "a check interval of 0 is not allowed");
                return None;
            }
            Some(d)
        };
        let timeout = interval(&raw.timeout);
        let timing = CheckTiming {
            inter: interval(&raw.inter),
            fastinter: interval(&raw.fastinter),
            downinter: interval(&raw.downinter),
            fall: raw.fall.as_ref().and_then(|v| self.at_least_one(v, "fall")),
            rise: raw.rise.as_ref().and_then(|v| self.at_least_one(v, "rise")),
        };
        (def, timing, timeout)
    }

    fn at_least_one(&mut self, v: &Spanned<u32>, what: &str) -> Option<u32> {
        if *v.get_ref() == 0 {
            self.err(v.span(), format!("{what} must be at least 1"));
            None
        } else {
            Some(*v.get_ref())
        }
    }

    fn expect(&mut self, e: &RawExpect, span: std::ops::Range<usize>) -> Option<Expect> {
        let given = [
            e.status.is_some(),
            e.rstatus.is_some(),
            e.string.is_some(),
            e.rstring.is_some(),
            e.header.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            self.err(
                span,
                "check expect needs exactly one of status, rstatus, string, rstring, header",
            );
            return None;
        }
        if e.value.is_some() && e.header.is_none() {
            self.err(span, "check expect: 'value' goes with 'header'");
            return None;
        }
        let test = if let Some(st) = &e.status {
            let text = match st {
                StatusValue::Code(c) => c.to_string(),
                StatusValue::Text(t) => t.clone(),
            };
            match super::check::parse_status_list(&text) {
                Ok(l) => ExpectTest::Status(l),
                Err(msg) => {
                    self.err(span, format!("check expect: {msg}"));
                    return None;
                }
            }
        } else if let Some(r) = &e.rstatus {
            ExpectTest::RStatus(self.regex(r, span)?)
        } else if let Some(t) = &e.string {
            ExpectTest::String(t.clone())
        } else if let Some(r) = &e.rstring {
            ExpectTest::RString(self.regex(r, span)?)
        } else {
            let h = e.header.as_deref().unwrap_or_default();
            ExpectTest::Header {
                name: self.header_name(h, span)?,
                value: e.value.clone().map(Match::Exact),
            }
        };
        Some(Expect {
            negate: e.negate,
            test,
        })
    }

    fn server(&mut self, s: RawServer, span: std::ops::Range<usize>) -> Option<Server> {
        let addr = match parse_server_addr(s.address.get_ref()) {
            Ok(a) => a,
            Err(e) => {
                self.err(s.address.span(), e);
                return None;
            }
        };
        let weight = s.weight.unwrap_or(1);
        if weight > 256 {
            self.err(
                span.clone(),
                format!(
                    "server '{}': weight {weight} is out of range 0..256",
                    s.name.get_ref()
                ),
            );
        }
        let tls = match s.tls {
            None | Some(RawServerTlsOpt::On(false)) => None,
            Some(RawServerTlsOpt::On(true)) => Some(UpstreamTls {
                verify: true,
                sni: None,
                ca: None,
            }),
            Some(RawServerTlsOpt::Options(o)) => {
                let verify = match o.verify.as_deref() {
                    None | Some("required") => true,
                    Some("none") => false,
                    Some(v) => {
                        self.err(
                            span.clone(),
                            format!("tls verify must be 'required' or 'none', not '{v}'"),
                        );
                        true
                    }
                };
                Some(UpstreamTls {
                    verify,
                    sni: o.sni,
                    ca: o.ca.map(|c| self.path(&c)),
                })
            }
        };
        let proto = match s.proto.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
            None | Some(("auto", _)) => UpstreamProto::Auto,
            Some(("h1" | "http1" | "http/1.1", _)) => UpstreamProto::Http1,
            Some(("h2" | "http2", _)) => UpstreamProto::Http2,
            Some((other, sp)) => {
                self.err(sp, format!("unknown proto '{other}' (use auto, h1 or h2)"));
                UpstreamProto::Auto
            }
        };
        if addr == ServerAddr::BuiltinMock && tls.is_some() {
            self.err(
                span.clone(),
                "the built-in mock provider does not speak TLS",
            );
        }
        let name = s.name.get_ref().clone();
        let interval = |cx: &mut Self, v: &Option<Spanned<DurationValue>>| {
            let v = v.as_ref()?;
            let d = cx.duration(v)?;
            if d.is_zero() {
                cx.err(v.span(), "a check interval of 0 is not allowed");
                return None;
            }
            Some(d)
        };
        let count = |cx: &mut Self, v: &Option<Spanned<u32>>, what: &str| {
            let v = v.as_ref()?;
            if *v.get_ref() == 0 {
                cx.err(v.span(), format!("{what} must be at least 1"));
                return None;
            }
            Some(*v.get_ref())
        };
        let observe = match s.observe.as_ref().map(|o| (o.get_ref().as_str(), o.span())) {
            None => None,
            Some(("layer7", _)) => Some(ObserveMode::Layer7),
            Some(("layer4", _)) => Some(ObserveMode::Layer4),
            Some((other, sp)) => {
                self.err(
                    sp,
                    format!("observe must be \"layer4\" or \"layer7\", not '{other}'"),
                );
                None
            }
        };
        let on_error = match s
            .on_error
            .as_ref()
            .map(|o| (o.get_ref().as_str(), o.span()))
        {
            None => None,
            Some((v @ ("fastinter" | "fail-check" | "sudden-death" | "mark-down"), _)) => {
                Some(v.to_owned())
            }
            Some((other, sp)) => {
                self.err(sp, format!("on_error must be fastinter, fail-check, sudden-death or mark-down, not '{other}'"));
                None
            }
        };
        if (observe.is_some() || s.error_limit.is_some() || on_error.is_some()) && !s.check {
            self.err(
                span.clone(),
                format!("server '{name}': observe, error_limit and on_error need check = true"),
            );
        }
        if let Some(p) = s.check_port.as_ref().filter(|p| *p.get_ref() == 0) {
            self.err(p.span(), "check_port must be 1..65535");
        }
        let check_addr = match &s.check_addr {
            Some(a)
                if parse_server_addr(&format!("{}:1", a.get_ref())).is_err()
                    && a.get_ref().parse::<IpAddr>().is_err() =>
            {
                self.err(
                    a.span(),
                    format!(
                        "check_addr must be an IP address or host name, not '{}'",
                        a.get_ref()
                    ),
                );
                None
            }
            Some(a) => Some(a.get_ref().clone()),
            None => None,
        };
        if addr == ServerAddr::BuiltinMock && s.check_tls == Some(true) {
            self.err(span, "the built-in mock provider does not speak TLS");
        }
        let opts = ServerOpts {
            check: s.check,
            inter: interval(self, &s.inter),
            fastinter: interval(self, &s.fastinter),
            downinter: interval(self, &s.downinter),
            fall: count(self, &s.fall, "fall"),
            rise: count(self, &s.rise, "rise"),
            port: s.check_port.map(|p| p.into_inner()).filter(|p| *p > 0),
            addr: check_addr,
            check_ssl: s.check_tls,
            backup: s.backup,
            maxqueue: s.maxqueue,
            slowstart: s.slowstart.as_ref().and_then(|d| self.duration(d)),
            observe,
            error_limit: count(self, &s.error_limit, "error_limit"),
            on_error,
            cooldown_429: s.cooldown_429.as_ref().and_then(|d| self.duration(d)),
            disabled: s.disabled,
            pool_max_conn: s.pool_max_idle,
            pool_purge_delay: s.pool_purge_delay.as_ref().and_then(|d| self.duration(d)),
            pool_low_conn: s.pool_low_conn,
        };
        Some(Server {
            name: s.name.into_inner(),
            addr,
            weight: weight.min(256),
            maxconn: s.maxconn.unwrap_or(0),
            tls,
            proto,
            opts,
        })
    }
}

/// `1.2.3.4:80`, `[::1]:80`, `*:80` (all IPv4), `:::80` (all IPv6).
/// A `stats uri`: an absolute path (a query is allowed, as in HAProxy's
/// default `/haproxy?stats`) that the page answers besides `/stats`.
pub fn check_stats_uri(u: &str) -> Result<(), String> {
    if !u.starts_with('/') || u.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(format!(
            "stats uri '{u}' must be a path starting with '/' (e.g. /stats)"
        ));
    }
    Ok(())
}

pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("*:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| format!("invalid port in address '{s}'"));
    }
    if let Some(port) = s.strip_prefix(":::") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0u16; 8], p)))
            .map_err(|_| format!("invalid port in address '{s}'"));
    }
    s.parse().map_err(|_| {
        format!("invalid address '{s}' (expected IP:PORT, [IPv6]:PORT, *:PORT or :::PORT)")
    })
}

/// `host:port`, `1.2.3.4:port`, `[::1]:port`, or `mock` for the built-in mock.
pub fn parse_server_addr(s: &str) -> Result<ServerAddr, String> {
    if s == "mock" {
        return Ok(ServerAddr::BuiltinMock);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(ServerAddr::HostPort(sa.ip().to_string(), sa.port()));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid server address '{s}' (expected HOST:PORT)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port in server address '{s}'"))?;
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid_host || port == 0 {
        return Err(format!("invalid server address '{s}' (expected HOST:PORT)"));
    }
    Ok(ServerAddr::HostPort(host.to_owned(), port))
}

pub fn parse_ipnet(s: &str) -> Result<IpNet, String> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = ip.parse().map_err(|_| format!("invalid network '{s}'"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid prefix length in '{s}'"))?,
    };
    Ok(IpNet { addr, prefix })
}

/// HAProxy's `balance` values: `roundrobin`, `static-rr`, `leastconn`,
/// `first`, `source`, `uri`, `hdr(name)`, `random`, `random(N)`.
pub fn parse_balance(s: &str) -> Result<Balance, String> {
    let s = s.trim();
    Ok(match s {
        "roundrobin" => Balance::RoundRobin,
        "static-rr" => Balance::StaticRr,
        "leastconn" => Balance::LeastConn,
        "first" => Balance::First,
        "source" => Balance::Source,
        "uri" => Balance::Uri,
        "random" => Balance::Random(2),
        _ => {
            if let Some(inner) = s.strip_prefix("hdr(").and_then(|r| r.strip_suffix(')')) {
                let h = HeaderName::from_bytes(inner.trim().as_bytes())
                    .map_err(|_| format!("invalid header name in '{s}'"))?;
                Balance::Hdr(h)
            } else if let Some(inner) = s.strip_prefix("random(").and_then(|r| r.strip_suffix(')'))
            {
                let n: u32 = inner
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| format!("random draws must be 1..100 in '{s}'"))?;
                Balance::Random(n)
            } else {
                return Err(format!(
                    "unknown balance '{s}' (use roundrobin, static-rr, leastconn, first, source, uri, hdr(name), random or random(N))"
                ));
            }
        }
    })
}

/// Reads a provider secret. Errors name the variable or file, never the value.
fn read_credential(a: &RawAuth, base: &Path) -> Result<Credential, String> {
    let secret = match (&a.env, &a.file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| format!("auth: environment variable '{var}' is not set"))?,
        (None, Some(f)) => {
            let p = if f.is_absolute() {
                f.clone()
            } else {
                base.join(f)
            };
            std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "auth: cannot read secret file '{}': {}",
                    p.display(),
                    e.kind()
                )
            })?
        }
        _ => return Err("auth needs exactly one of 'env' or 'file'".into()),
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("auth: the secret is empty".into());
    }
    let (header, value) = match a.kind.as_str() {
        "bearer" => (http::header::AUTHORIZATION, format!("Bearer {secret}")),
        "x-api-key" => (HeaderName::from_static("x-api-key"), secret.to_owned()),
        "api-key" => (HeaderName::from_static("api-key"), secret.to_owned()),
        "header" => {
            let h = a
                .header
                .as_deref()
                .ok_or("auth type 'header' needs 'header = NAME'")?;
            let h = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("auth: invalid header name '{h}'"))?;
            (h, secret.to_owned())
        }
        other => {
            return Err(format!(
                "auth: unknown type '{other}' (use bearer, x-api-key, api-key or header)"
            ))
        }
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "auth: the secret contains characters not allowed in a header".to_string())?;
    value.set_sensitive(true);
    Ok(Credential { header, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Diags> {
        load_str("test.toml", text, Path::new("."))
    }

    fn errors(text: &str) -> Vec<String> {
        load(text)
            .unwrap_err()
            .0
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    const MIN: &str = r#"
[[frontend]]
name = "main"
bind = ["127.0.0.1:8080"]
default_backend = "b"

[[backend]]
name = "b"
[[backend.server]]
name = "s1"
address = "127.0.0.1:9000"
"#;

    #[test]
    fn minimal_config_compiles() {
        let c = load(MIN).unwrap();
        assert_eq!(c.frontends[0].default_backend, Some(0));
        assert_eq!(c.backends[0].servers[0].weight, 1);
        assert_eq!(c.global.maxconn, None);
        assert_eq!(c.frontends[0].body_limit, DEFAULT_BODY_LIMIT);
        assert!(!c.frontends[0].needs_model());
        assert_eq!(c.backends[0].pool_max_idle, NO_POOL_LIMIT);
        assert_eq!(c.backends[0].pool_idle_timeout, Duration::from_secs(60));
        let capped =
            load(&MIN.replace("name = \"b\"\n", "name = \"b\"\npool = { max_idle = 8 }\n"))
                .unwrap();
        assert_eq!(capped.backends[0].pool_max_idle, 8);
    }

    #[test]
    fn nbthread_is_bounded() {
        let with = |n: usize| format!("[global]\nnbthread = {n}\n{MIN}");
        assert_eq!(load(&with(0)).unwrap().global.nbthread, 0);
        assert_eq!(
            load(&with(MAX_THREADS)).unwrap().global.nbthread,
            MAX_THREADS
        );
        assert_eq!(
            errors(&with(MAX_THREADS + 1)),
            [format!(
                "test.toml:2: nbthread must be at most {MAX_THREADS} (0 = one per CPU)"
            )]
        );
    }

    #[test]
    fn stats_socket_short_and_long_forms() {
        let c = load(&format!(
            "[global]\nstats_socket = \"/run/llmgw.sock\"\n{MIN}"
        ))
        .unwrap();
        let s = c.global.stats_socket.unwrap();
        assert_eq!(s, StatsSocket::new("/run/llmgw.sock".into()));
        assert_eq!(s.level, AccessLevel::Operator);
        let c = load(&format!(
            "[global]\nstats_socket = {{ path = \"rt.sock\", mode = \"660\", level = \"admin\", timeout = \"1m\" }}\n{MIN}"
        ))
        .unwrap();
        let s = c.global.stats_socket.unwrap();
        assert_eq!(s.path, Path::new("./rt.sock"));
        let e = errors(&format!(
            "[global]\nstats_socket = {{ path = \"x\", mode = 600 }}\n{MIN}"
        ));
        assert!(
            e[0].starts_with("test.toml:2: stats_socket: a path, or {"),
            "{e:?}"
        );
        assert_eq!(
            (s.mode, s.level, s.timeout),
            (Some(0o660), AccessLevel::Admin, Duration::from_secs(60))
        );
        assert_eq!(
            errors(&format!(
                "[global]\nstats_socket = {{ path = \"x\", mode = \"9\", level = \"root\" }}\n{MIN}"
            )),
            vec![
                "test.toml:2: stats_socket mode must be octal permission bits as a string (e.g. \"600\"), not '9'",
                "test.toml:2: stats_socket level must be user, operator or admin",
            ]
        );
    }

    #[test]
    fn disabled_server_keeps_its_weight() {
        let c = load(&MIN.replace(
            "address = \"127.0.0.1:9000\"",
            "address = \"127.0.0.1:9000\"\nweight = 4\ndisabled = true",
        ))
        .unwrap();
        let s = &c.backends[0].servers[0];
        assert_eq!((s.weight, s.opts.disabled), (4, true));
    }

    #[test]
    fn unknown_key_has_its_line() {
        let text = MIN.replace(
            "default_backend = \"b\"",
            "default_backend = \"b\"\nbogus = 1",
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("test.toml:6: unknown field `bogus`"),
            "{e:?}"
        );
    }

    #[test]
    fn missing_backend_duplicate_names_and_bad_address_all_reported() {
        let text = r#"
[[frontend]]
name = "main"
bind = ["127.0.0.1:99999"]
default_backend = "nope"

[[frontend.route]]
backend = "missing"
model = "claude-*"

[[backend]]
name = "b"
[[backend.server]]
name = "s1"
address = "127.0.0.1:9000"
[[backend.server]]
name = "s1"
address = "127.0.0.1:9001"
"#;
        let e = errors(text);
        assert_eq!(
            e,
            vec![
                "test.toml:4: invalid address '127.0.0.1:99999' (expected IP:PORT, [IPv6]:PORT, *:PORT or :::PORT)",
                "test.toml:5: default_backend 'nope' does not exist",
                "test.toml:8: route points at backend 'missing', which does not exist",
                "test.toml:17: duplicate server name 's1' in backend 'b'",
            ]
        );
    }

    #[test]
    fn unreadable_secret_file_names_the_file_not_a_secret() {
        let text = MIN.replace(
            "name = \"b\"\n",
            "name = \"b\"\nauth = { type = \"bearer\", file = \"/nonexistent/key\" }\n",
        );
        let e = errors(&text);
        assert_eq!(
            e,
            vec!["test.toml:9: auth: cannot read secret file '/nonexistent/key': entity not found"]
        );
    }

    #[test]
    fn credential_from_env_is_redacted_in_debug() {
        std::env::set_var("LLMGW_TEST_SECRET_A", "sk-very-secret");
        let text = MIN.replace(
            "name = \"b\"\n",
            "name = \"b\"\nauth = { type = \"bearer\", env = \"LLMGW_TEST_SECRET_A\" }\n",
        );
        let c = load(&text).unwrap();
        let cred = c.backends[0].credential.as_ref().unwrap();
        assert_eq!(cred.value.to_str().unwrap(), "Bearer sk-very-secret");
        assert!(!format!("{:?}", c).contains("sk-very-secret"));
    }

    #[test]
    fn model_routes_and_aliases() {
        let text = MIN.replace(
            "default_backend = \"b\"",
            "default_backend = \"b\"\nmodel_aliases = { fast = \"gpt-4o-mini\" }\n[[frontend.route]]\nbackend = \"b\"\nmodel = \"claude-*\"",
        );
        let c = load(&text).unwrap();
        let f = &c.frontends[0];
        assert!(f.needs_model());
        assert!(
            matches!(&f.routes[0].cond, Expr::All(v) if matches!(&v[0], Expr::Test(Condition::Model(Match::Glob(g))) if g == "claude-*"))
        );
        assert_eq!(
            f.model_aliases,
            vec![("fast".to_string(), "gpt-4o-mini".to_string())]
        );
    }

    #[test]
    fn balance_values() {
        assert_eq!(parse_balance("random"), Ok(Balance::Random(2)));
        assert_eq!(parse_balance("random(3)"), Ok(Balance::Random(3)));
        assert_eq!(
            parse_balance("hdr(X-User)"),
            Ok(Balance::Hdr(HeaderName::from_static("x-user")))
        );
        assert!(parse_balance("weird").is_err());
        assert!(parse_balance("random(0)").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_listen_addr("*:80"), Ok("0.0.0.0:80".parse().unwrap()));
        assert_eq!(parse_listen_addr(":::80"), Ok("[::]:80".parse().unwrap()));
        assert_eq!(
            parse_server_addr("api.openai.com:443"),
            Ok(ServerAddr::HostPort("api.openai.com".into(), 443))
        );
        assert_eq!(
            parse_server_addr("[::1]:80"),
            Ok(ServerAddr::HostPort("::1".into(), 80))
        );
        assert!(parse_server_addr("bad host:80").is_err());
        assert!(parse_server_addr("host").is_err());
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = errors("[[frontend]]\nname = \n");
        assert!(e[0].starts_with("test.toml:2: "), "{e:?}");
    }

    #[test]
    fn mode_tcp_and_tcp_request_rules() {
        let c = load(
            r#"
[[frontend]]
name = "t"
mode = "tcp"
bind = ["127.0.0.1:8443"]
default_backend = "b"
tcp_request_rules = ["inspect-delay 3s", "content reject if { req.ssl_sni -i x.test }"]
[[frontend.route]]
backend = "b"
cond = "if { req.ssl_sni -m end .a.test }"

[[backend]]
name = "b"
mode = "tcp"
timeout = { tunnel = "2h" }
[[backend.server]]
name = "s1"
address = "127.0.0.1:9000"
"#,
        )
        .expect("valid");
        let fe = &c.frontends[0];
        assert_eq!(fe.mode, Mode::Tcp);
        assert_eq!(fe.tcp_request.inspect_delay, Duration::from_secs(3));
        assert_eq!(fe.tcp_request.content.len(), 1);
        assert!(!fe.tcp_request.content[0].accept);
        assert!(fe.needs_content());
        assert_eq!(c.backends[0].mode, Mode::Tcp);
        assert!(c.backends[0].timeouts.tunnel_set);

        // A tcp frontend may only use tcp backends.
        let e = errors(&MIN.replace("name = \"main\"", "name = \"main\"\nmode = \"tcp\""));
        assert!(
            e.iter()
                .any(|m| m.contains("tcp frontend 'main' uses http backend 'b'")),
            "{e:?}"
        );
        let e = errors(&MIN.replace(
            "name = \"b\"",
            "name = \"b\"\nmode = \"tcp\"\nbalance = \"uri\"",
        ));
        assert!(
            e.iter()
                .any(|m| m.contains("balance 'uri' needs mode http")),
            "{e:?}"
        );
        let e = errors(&MIN.replace("name = \"main\"", "name = \"main\"\nmode = \"udp\""));
        assert!(e.iter().any(|m| m.contains("mode 'udp'")), "{e:?}");
    }

    const HEALTH: &str = r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"

[[backend]]
name = "b"
allbackups = true
cooldown_429 = "3s"

[backend.check]
path = "/health"
host = "api.example.com"
headers = { "x-probe" = "1" }
expect = { status = "200-299,404" }
timeout = "1s"
inter = "500ms"
fall = 4

[[backend.server]]
name = "a"
address = "127.0.0.1:1"
check = true
rise = 5
fastinter = "100ms"
slowstart = "20s"
observe = "layer7"
error_limit = 3
on_error = "mark-down"

[[backend.server]]
name = "z"
address = "127.0.0.1:2"
check = true
backup = true
check_port = 9000
check_addr = "127.0.0.2"
check_tls = true
cooldown_429 = "250ms"
"#;

    #[test]
    fn health_settings_compile() {
        let c = load(HEALTH).unwrap();
        let b = &c.backends[0];
        assert!(b.opts.allbackups);
        assert_eq!(b.opts.cooldown_429, Some(Duration::from_secs(3)));
        assert_eq!(b.opts.timeout_check, Some(Duration::from_secs(1)));
        let ck = &b.opts.check;
        assert_eq!(
            (ck.kind, ck.method.as_str(), ck.path.as_str()),
            (CheckKind::Http, "GET", "/health")
        );
        assert!(ck.send_auth);
        assert_eq!(ck.headers.len(), 1);
        assert!(
            matches!(&ck.expect, Some(Expect { test: ExpectTest::Status(l), .. }) if l == &vec![(200, 299), (404, 404)])
        );
        assert_eq!(b.opts.check_timing.inter, Some(Duration::from_millis(500)));
        assert_eq!(b.opts.check_timing.fall, Some(4));
        let (a, z) = (&b.servers[0].opts, &b.servers[1].opts);
        assert_eq!(
            (a.check, a.rise, a.fastinter),
            (true, Some(5), Some(Duration::from_millis(100)))
        );
        assert_eq!(a.observe, Some(ObserveMode::Layer7));
        assert_eq!(
            (a.error_limit, a.on_error.as_deref()),
            (Some(3), Some("mark-down"))
        );
        assert_eq!(a.slowstart, Some(Duration::from_secs(20)));
        assert!(z.backup);
        assert_eq!(
            (z.port, z.addr.as_deref(), z.check_ssl),
            (Some(9000), Some("127.0.0.2"), Some(true))
        );
        assert_eq!(z.cooldown_429, Some(Duration::from_millis(250)));
    }

    #[test]
    fn llm_default_check_and_tcp_checks() {
        let c = load(MIN).unwrap();
        let ck = &c.backends[0].opts.check;
        assert_eq!(
            (ck.kind, ck.method.as_str(), ck.path.as_str()),
            (CheckKind::Http, "GET", "/v1/models")
        );
        let text = MIN.replace("name = \"b\"", "name = \"b\"\ncheck = { type = \"tcp\" }");
        let c = load(&text).unwrap();
        assert_eq!(c.backends[0].opts.check.kind, CheckKind::Tcp);
    }

    #[test]
    fn bad_health_values_have_their_lines() {
        let text = r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"

[[backend]]
name = "b"

[backend.check]
type = "icmp"
path = "health"
expect = { status = "2xx" }
fall = 0
inter = "0s"

[[backend.server]]
name = "a"
address = "127.0.0.1:1"
check = true
rise = 0
observe = "layer9"
on_error = "explode"
slowstart = "soon"

[[backend.server]]
name = "c"
address = "127.0.0.1:2"
error_limit = 2
check_port = 0
"#;
        assert_eq!(
            errors(text),
            vec![
                "test.toml:11: check type must be \"http\" or \"tcp\", not 'icmp'",
                "test.toml:12: check path must start with '/', not 'health'",
                "test.toml:13: check expect: invalid status '2xx' in '2xx' (expected 100..599)",
                "test.toml:14: fall must be at least 1",
                "test.toml:15: a check interval of 0 is not allowed",
                "test.toml:21: rise must be at least 1",
                "test.toml:22: observe must be \"layer4\" or \"layer7\", not 'layer9'",
                "test.toml:23: on_error must be fastinter, fail-check, sudden-death or mark-down, not 'explode'",
                "test.toml:24: invalid duration 'soon' (expected e.g. 500ms, 5s, 2m, 1h)",
                "test.toml:26: server 'c': observe, error_limit and on_error need check = true",
                "test.toml:30: check_port must be 1..65535",
            ]
        );
    }

    #[test]
    fn retries_redispatch_and_ttft() {
        let c = load(
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
             [[backend]]\nname = \"b\"\nretries = 2\nretry_on = [\"conn-failure\", \"429\"]\nredispatch = true\n\
             timeout = { ttft = \"1500ms\" }\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let b = &c.backends[0];
        assert_eq!(b.opts.retries, Some(2));
        assert_eq!(b.opts.retry_on, ["conn-failure", "429"]);
        assert!(b.opts.redispatch);
        assert_eq!(b.timeouts.ttft, Some(Duration::from_millis(1500)));
        let e = errors(
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
             [[backend]]\nname = \"b\"\nretry_on = [\"418\"]\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("test.toml:7:") && e[0].contains("unknown retry_on keyword '418'"),
            "{e:?}"
        );
    }

    #[test]
    fn client_keys_are_hashes_with_known_backends() {
        let hash = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let base = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n\
             client_keys = \"teams\"\n[[backend]]\nname = \"b\"\n[[client_keys]]\nname = \"teams\"\n";
        let c = load(&format!(
            "{base}[[client_keys.key]]\nname = \"a\"\nsha256 = \"{}\"\nbackends = [\"b\"]\nmodels = [\"gpt-4o\"]\ntokens_per_minute = 1000\n\
             default_max_tokens = 0\n",
            hash.to_uppercase()
        ));
        // `default_max_tokens` belongs to the frontend, not a key.
        assert!(c.is_err());
        let c = load(&format!(
            "{base}[[client_keys.key]]\nname = \"a\"\nsha256 = \"{}\"\nbackends = [\"b\"]\nmodels = [\"gpt-4o\"]\ntokens_per_minute = 1000\n",
            hash.to_uppercase()
        ))
        .unwrap();
        assert_eq!(c.frontends[0].client_keys, Some(0));
        let k = &c.key_lists[0].keys[0];
        assert_eq!(k.sha256, crate::keys::sha256(b"abc"));
        assert_eq!(k.backends.as_deref(), Some(&[0][..]));
        assert_eq!(k.tokens_per_minute, Some(1000));
        let e = errors(&format!(
            "{base}[[client_keys.key]]\nname = \"a\"\nsha256 = \"abc\"\n\
             [[client_keys.key]]\nname = \"b\"\nsha256 = \"{hash}\"\nbackends = [\"nope\"]\nmax_concurrent = 0\n\
             [[client_keys.key]]\nname = \"c\"\nsha256 = \"{hash}\"\n"
        ));
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(
            e[0].starts_with("test.toml:10: client key 'a': sha256 must be 64 hex digits"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("test.toml:13: client key 'b': unknown backend 'nope'"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("test.toml:13: client key 'b': max_concurrent must be at least 1"),
            "{e:?}"
        );
        assert!(
            e[3].starts_with("test.toml:18: client key 'c': same key as client key 'b'"),
            "{e:?}"
        );
        let e = errors(&base.replace("client_keys = \"teams\"", "client_keys = \"other\""));
        assert!(
            e[0].contains("client_keys 'other' is not a [[client_keys]] list"),
            "{e:?}"
        );
    }

    #[test]
    fn fallback_chain_with_models_and_conditions() {
        let base = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"openai\"\n\
             [[backend]]\nname = \"azure\"\n[[backend.server]]\nname = \"z\"\naddress = \"127.0.0.1:2\"\n\
             [[backend]]\nname = \"openai\"\n";
        let c = load(&format!(
            "{base}fallback = [{{ backend = \"azure\", on = [\"429\", \"5xx\"] }}]\n"
        ));
        let e: Vec<String> = c.unwrap_err().0.iter().map(|d| d.to_string()).collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("test.toml:12: backend 'openai': unknown fallback condition '5xx'"),
            "{e:?}"
        );
        let c = load(&format!(
            "{base}fallback = [{{ backend = \"azure\", on = [\"429\", \"all-retryable-errors\"], model = \"gpt-4o-eu\" }}]\n"
        ))
        .unwrap();
        let step = &c.backends[1].opts.fallback[0];
        assert_eq!(step.backend, 0);
        assert_eq!(step.on, retry_on::FALLBACK_DEFAULT);
        assert_eq!(step.model.as_deref(), Some("gpt-4o-eu"));
        assert_eq!(
            retry_on::words(step.on),
            ["all-retryable-errors", "429"],
            "the words read back as the same mask"
        );
        let e = errors(&format!(
            "{base}fallback = [{{ backend = \"openai\" }}, {{ backend = \"azure\", model = \"\" }}]\n"
        ));
        assert_eq!(
            e,
            [
                "test.toml:12: backend 'openai': fallback backend 'openai' is already in the chain",
                "test.toml:12: backend 'openai': fallback model is empty",
            ]
        );
    }

    #[test]
    fn stick_tables_are_declared_and_tracked_into() {
        let base = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n\
             http_request_rules = [\"track-sc0 src table rl\", \"deny deny_status 429 if { sc0_conn_rate gt 10 }\"]\n\
             [[backend]]\nname = \"b\"\n";
        let c = load(&format!(
            "{base}[[stick_table]]\nname = \"rl\"\ntype = \"ip\"\nsize = \"100k\"\nexpire = \"30s\"\nstore = [\"conn_rate(10s)\"]\n"
        ))
        .unwrap();
        let t = &c.stick_tables[0];
        assert_eq!(
            (t.name.as_str(), t.key_type.as_str(), t.size),
            ("rl", "ip", 102_400)
        );
        assert_eq!(t.expire, Some(Duration::from_secs(30)));
        let e = errors(&format!(
            "{base}[[stick_table]]\nname = \"x\"\ntype = \"uuid\"\nsize = 0\nstore = [\"conn_rate\"]\n"
        ));
        assert_eq!(
            e,
            [
                "test.toml:5: track rule: stick table 'rl' is not declared (add a [[stick_table]] with name = \"rl\")",
                "test.toml:8: stick_table 'x': type 'uuid' is unknown (use ip, ipv6, integer, string or binary)",
                "test.toml:8: stick_table 'x': size must be a positive number of entries (e.g. 100000 or \"100k\")",
                "test.toml:8: stick_table 'x': stick-table data 'conn_rate' needs a period, e.g. conn_rate(10s)",
            ]
        );
    }

    #[test]
    fn tcp_request_connection_rules_in_both_modes() {
        for mode in ["http", "tcp"] {
            let text = format!(
                "[[frontend]]\nname = \"f\"\nmode = \"{mode}\"\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n\
                 tcp_request_rules = [\"connection track-sc0 src table conns\", \"connection reject if {{ sc0_conn_cur gt 10 }}\"]\n\
                 [[backend]]\nname = \"b\"\nmode = \"{mode}\"\n\
                 [[stick_table]]\nname = \"conns\"\ntype = \"ip\"\nsize = 1000\nstore = [\"conn_cur\"]\n"
            );
            let c = load(&text).unwrap_or_else(|e| panic!("{mode}: {e}"));
            let rules = &c.frontends[0].tcp_request.connection;
            assert_eq!(rules.len(), 2, "{mode}");
            assert_eq!(
                rules[0].action,
                ConnAction::TrackSc {
                    sc: 0,
                    table: "conns".into()
                }
            );
            assert_eq!(rules[1].action, ConnAction::Reject);
        }
        let e = errors(
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:1\"]\ndefault_backend = \"b\"\n\
             tcp_request_rules = [\"connection track-sc0 src\", \"connection reject if { path /x }\"]\n\
             [[backend]]\nname = \"b\"\n",
        );
        assert_eq!(
            e,
            [
                "test.toml:5: 'connection reject if { path /x }': 'tcp-request connection' conditions cannot use path: nothing is read yet at accept time (use src or scN_* fetches, or 'tcp-request content' in mode tcp)",
                "test.toml:5: 'connection track-sc0 src': track rule: stick table 'f' is not declared (add a [[stick_table]] with name = \"f\")",
            ]
        );
    }

    #[test]
    fn stats_forms() {
        let addr = |c: &Config| c.global.stats.map(|a| a.to_string());
        let c = load(&format!("[global]\nstats = true\n{MIN}")).unwrap();
        assert_eq!(addr(&c).as_deref(), Some("127.0.0.1:8404"));
        assert!(c.global.stats_access.users.is_empty());
        let c = load(&format!("[global]\nstats = \"127.0.0.1:9999\"\n{MIN}")).unwrap();
        assert_eq!(addr(&c).as_deref(), Some("127.0.0.1:9999"));
        let c = load(&format!("[global]\nstats = false\n{MIN}")).unwrap();
        assert_eq!(addr(&c), None);

        let c = load(&format!(
            "[global]\nstats = {{ address = \"127.0.0.1:0\", auth = [\"admin:pa:ss\"], read_auth = false, refresh = \"1s\", realm = \"ops\", uri = \"/\" }}\n{MIN}"
        ))
        .unwrap();
        let a = &c.global.stats_access;
        assert_eq!(addr(&c).as_deref(), Some("127.0.0.1:0"));
        assert_eq!(a.users.len(), 1);
        assert_eq!(
            (&*a.users[0].name, &*a.users[0].password),
            ("admin", "pa:ss")
        );
        assert!(!a.read_auth && a.admin);
        assert_eq!(a.refresh, Duration::from_secs(1));
        assert_eq!(a.realm, "ops");
        assert_eq!(a.uri.as_deref(), Some("/"));
        // A table without an address gets the default one.
        let c = load(&format!(
            "[global]\nstats = {{ auth = [\"a:b\"], admin = false }}\n{MIN}"
        ))
        .unwrap();
        assert_eq!(addr(&c).as_deref(), Some("127.0.0.1:8404"));
        assert!(!c.global.stats_access.admin && c.global.stats_access.read_auth);
    }

    #[test]
    fn stats_errors_name_the_line_and_never_the_password() {
        let errs = errors(&format!(
            "[global]\nstats = {{ address = \"127.0.0.1:0\", auth = [\"nopass\", \"u:secret1\", \"u:secret2\"] }}\n{MIN}"
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("test.toml:2: stats auth needs 'user:password'"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("test.toml:2: stats auth: user 'u' is listed twice"),
            "{errs:?}"
        );
        assert!(
            !errs
                .iter()
                .any(|e| e.contains("secret") || e.contains("nopass")),
            "{errs:?}"
        );

        let errs = errors(&format!(
            "[global]\nstats = {{ adress = \"127.0.0.1:0\" }}\n{MIN}"
        ));
        assert!(errs[0].contains("unknown field `adress`"), "{errs:?}");
        let errs = errors(&format!(
            "[global]\nstats = {{ refresh = \"10ms\" }}\n{MIN}"
        ));
        assert!(
            errs[0].contains("stats refresh must be at least 500ms"),
            "{errs:?}"
        );
        let errs = errors(&format!("[global]\nstats = 5\n{MIN}"));
        assert!(errs[0].contains("an address, true/false, or {"), "{errs:?}");
    }
}
