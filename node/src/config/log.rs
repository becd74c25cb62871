//! Access-log settings: where lines go, how they are framed, which format
//! each frontend writes. Both config readers produce these; the parsing of
//! the shared vocabulary (targets, facilities, levels, framings) lives here
//! so the two dialects accept the same words.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// The access-log line format of a frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// HAProxy's `option httplog` line, byte for byte.
    Httplog,
    /// One JSON object per line (llmgw's `option jsonlog`), with the LLM
    /// fields (model, tokens, TTFT, client key) HAProxy has no place for.
    Json,
}

impl LogFormat {
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Httplog => "httplog",
            LogFormat::Json => "json",
        }
    }

    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "httplog" => Some(LogFormat::Httplog),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Where lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    Stdout,
    Stderr,
    /// A plain file, opened for appending (reopened by each reload).
    File(PathBuf),
    /// Syslog over UDP.
    Udp(SocketAddr),
    /// A local syslog datagram socket such as `/dev/log`.
    Unix(PathBuf),
}

impl LogSink {
    /// The native TOML spelling (`target = …`).
    pub fn to_target(&self) -> String {
        match self {
            LogSink::Stdout => "stdout".into(),
            LogSink::Stderr => "stderr".into(),
            LogSink::File(p) => p.display().to_string(),
            LogSink::Udp(a) => format!("udp://{a}"),
            LogSink::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    /// A file or a terminal-like stream: no syslog header by default in
    /// the native config.
    pub fn is_stream(&self) -> bool {
        matches!(self, LogSink::Stdout | LogSink::Stderr | LogSink::File(_))
    }
}

/// How each line is framed on the wire (HAProxy's `log … format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The line alone.
    Raw,
    /// `<PRI>` then the line (HAProxy's `short`).
    Short,
    /// `<PRI>Mmm dd hh:mm:ss llmgw[pid]: ` then the line (BSD syslog).
    Rfc3164,
    /// `<PRI>1 TIMESTAMP - llmgw PID - - ` then the line.
    Rfc5424,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Short => "short",
            Framing::Rfc3164 => "rfc3164",
            Framing::Rfc5424 => "rfc5424",
        }
    }

    pub fn parse(s: &str) -> Option<Framing> {
        match s {
            "raw" => Some(Framing::Raw),
            "short" => Some(Framing::Short),
            "rfc3164" => Some(Framing::Rfc3164),
            "rfc5424" => Some(Framing::Rfc5424),
            _ => None,
        }
    }
}

/// Syslog facilities in HAProxy's order (their index is their code).
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Syslog severities (their index is their code).
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Traffic logs are sent at `info`, as HAProxy sends them.
pub const TRAFFIC_LEVEL: u8 = 6;

pub fn facility(s: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == s).map(|i| i as u8)
}

pub fn level(s: &str) -> Option<u8> {
    LEVELS.iter().position(|f| *f == s).map(|i| i as u8)
}

/// The process's access-log target (one per process; see the README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub sink: LogSink,
    pub framing: Framing,
    /// Syslog facility code (`local0` = 16).
    pub facility: u8,
    /// Most severe-to-least level sent (HAProxy's `log … <level>`); traffic
    /// lines are `info`, so a level below it sends none.
    pub level: u8,
    /// Lines longer than this are cut (HAProxy's `len`); JSON lines never
    /// are (a cut object would not parse).
    pub max_len: Option<usize>,
    /// The format of frontends that do not choose one.
    pub format: LogFormat,
}

impl LogTarget {
    pub fn new(sink: LogSink, framing: Framing) -> LogTarget {
        LogTarget {
            sink,
            framing,
            facility: 16,
            level: 7,
            max_len: None,
            format: LogFormat::Httplog,
        }
    }

    /// Whether traffic lines pass the level filter at all.
    pub fn sends_traffic(&self) -> bool {
        self.level >= TRAFFIC_LEVEL
    }
}

/// A `host:port` or `host` (port `default_port`) syslog address; IPv6 in
/// brackets. Names are resolved once, at load.
pub fn socket_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in log address '{s}'"))?,
        ),
        None => (s, default_port),
    };
    if host.is_empty() {
        return Err(format!("log address '{s}' has no host"));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("log address '{s}' does not resolve"))
}

/// An HAProxy `log` target word: `stdout`, `stderr`, `fd@1`, `fd@2`,
/// `udp@HOST:PORT` (and `udp4@`, `udp6@`, `ipv4@`, `ipv6@`), `HOST[:PORT]`,
/// `/path` or `unix@/path` (a syslog datagram socket, as in HAProxy), and
/// llmgw's `file@/path` for a plain file.
pub fn haproxy_sink(word: &str, base: &Path) -> Result<LogSink, String> {
    let file = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    Ok(match word {
        "stdout" | "fd@1" => LogSink::Stdout,
        "stderr" | "fd@2" => LogSink::Stderr,
        w if w.starts_with("file@") => {
            let p = &w["file@".len()..];
            if p.is_empty() {
                return Err("'file@' needs a path".into());
            }
            LogSink::File(file(p))
        }
        w if w.starts_with('/') => LogSink::Unix(PathBuf::from(w)),
        w if w.starts_with("unix@") => LogSink::Unix(PathBuf::from(&w["unix@".len()..])),
        w if w.starts_with("ring@") || w.starts_with("fd@") || w.starts_with("abns@") => {
            return Err(format!("log target '{w}' is not supported (stdout, stderr, an address, udp@, a unix socket path, or file@PATH)"));
        }
        w => {
            let addr = ["udp@", "udp4@", "udp6@", "ipv4@", "ipv6@"]
                .iter()
                .find_map(|p| w.strip_prefix(p))
                .unwrap_or(w);
            LogSink::Udp(socket_addr(addr, 514)?)
        }
    })
}

/// A native `target = …`: `stdout`, `stderr`, `udp://HOST:PORT`,
/// `unix:///dev/log`, or a file path (relative to the config's folder).
pub fn native_sink(s: &str, base: &Path) -> Result<LogSink, String> {
    Ok(match s {
        "stdout" => LogSink::Stdout,
        "stderr" => LogSink::Stderr,
        "" => return Err("log target is empty".into()),
        s if s.starts_with("udp://") => LogSink::Udp(socket_addr(&s["udp://".len()..], 514)?),
        s if s.starts_with("unix://") => LogSink::Unix(PathBuf::from(&s["unix://".len()..])),
        s if s.contains("://") => {
            return Err(format!(
                "log target '{s}': use stdout, stderr, udp://HOST:PORT, unix:///PATH or a file path"
            ))
        }
        s => {
            let p = Path::new(s);
            LogSink::File(if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            })
        }
    })
}

/// Parses the words after `log` (not `global`): `<target> [len <n>]
/// [format <f>] [sample <r>:<n>] <facility> [<level> [<minlevel>]]`.
pub fn haproxy_log_line(words: &[&str], base: &Path) -> Result<LogTarget, String> {
    let usage = "'log' needs a target and a facility (e.g. 'log stdout format raw local0' or 'log 127.0.0.1:514 local0')";
    let Some((target, mut rest)) = words.split_first() else {
        return Err(usage.into());
    };
    let sink = haproxy_sink(target, base)?;
    // HAProxy frames every target, stdout included, as rfc3164 unless told.
    let mut t = LogTarget::new(sink, Framing::Rfc3164);
    loop {
        match rest {
            ["len", n, tail @ ..] => {
                let n: usize = n.parse().ok().filter(|&n| n >= 80).ok_or_else(|| {
                    format!("'log … len' needs a length of at least 80, not '{n}'")
                })?;
                t.max_len = Some(n);
                rest = tail;
            }
            ["format", f, tail @ ..] => {
                t.framing = Framing::parse(f).ok_or_else(|| {
                    format!("log format '{f}' is not supported (raw, short, rfc3164 or rfc5424)")
                })?;
                rest = tail;
            }
            ["sample", _, ..] => {
                return Err("'log … sample' is not supported (every request is logged)".into())
            }
            _ => break,
        }
    }
    let Some((fac, rest)) = rest.split_first() else {
        return Err(usage.into());
    };
    t.facility = facility(fac).ok_or_else(|| {
        format!(
            "unknown log facility '{fac}' (one of {})",
            FACILITIES.join(", ")
        )
    })?;
    match rest {
        [] => {}
        [lvl] | [lvl, _] => {
            t.level = level(lvl).ok_or_else(|| {
                format!("unknown log level '{lvl}' (one of {})", LEVELS.join(", "))
            })?;
            if let [_, min] = rest {
                level(min).ok_or_else(|| {
                    format!("unknown log level '{min}' (one of {})", LEVELS.join(", "))
                })?;
            }
        }
        [_, _, extra, ..] => return Err(format!("unexpected '{extra}' after the log levels")),
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_targets() {
        let base = Path::new("/etc/llmgw");
        let t = haproxy_log_line(&["stdout", "format", "raw", "local0"], base).unwrap();
        assert_eq!(
            (t.sink, t.framing, t.facility),
            (LogSink::Stdout, Framing::Raw, 16)
        );
        let t = haproxy_log_line(&["127.0.0.1", "local1", "notice"], base).unwrap();
        assert_eq!(t.sink, LogSink::Udp("127.0.0.1:514".parse().unwrap()));
        assert_eq!((t.framing, t.facility, t.level), (Framing::Rfc3164, 17, 5));
        assert!(!t.sends_traffic());
        let t = haproxy_log_line(&["udp@127.0.0.1:5514", "len", "2048", "local7"], base).unwrap();
        assert_eq!(t.sink, LogSink::Udp("127.0.0.1:5514".parse().unwrap()));
        assert_eq!(t.max_len, Some(2048));
        let t = haproxy_log_line(&["/dev/log", "daemon"], base).unwrap();
        assert_eq!(t.sink, LogSink::Unix("/dev/log".into()));
        let t = haproxy_log_line(&["file@access.log", "local0"], base).unwrap();
        assert_eq!(t.sink, LogSink::File("/etc/llmgw/access.log".into()));
        for bad in [
            &["stdout"][..],
            &["stdout", "local9"],
            &["stdout", "format", "json", "local0"],
            &["ring@buf", "local0"],
            &["127.0.0.1:99999", "local0"],
            &["stdout", "local0", "loud"],
        ] {
            assert!(haproxy_log_line(bad, base).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn native_targets() {
        let base = Path::new("/etc/llmgw");
        assert_eq!(native_sink("stdout", base), Ok(LogSink::Stdout));
        assert_eq!(
            native_sink("udp://127.0.0.1:5514", base),
            Ok(LogSink::Udp("127.0.0.1:5514".parse().unwrap()))
        );
        assert_eq!(
            native_sink("logs/a.log", base),
            Ok(LogSink::File("/etc/llmgw/logs/a.log".into()))
        );
        assert!(native_sink("tcp://1.2.3.4:5", base).is_err());
        for s in [
            LogSink::Stdout,
            LogSink::File("/var/log/a.log".into()),
            LogSink::Udp("[::1]:514".parse().unwrap()),
            LogSink::Unix("/dev/log".into()),
        ] {
            assert_eq!(native_sink(&s.to_target(), base), Ok(s));
        }
    }
}

#[cfg(test)]
mod dialect_tests {
    use std::path::Path;

    use super::*;
    use crate::config::{convert, haproxy, native};

    const CFG: &str = "global
    log 127.0.0.1:5514 len 2048 format rfc5424 local3
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend plain
    bind 127.0.0.1:0
    option dontlognull
    default_backend b
frontend js
    bind 127.0.0.1:0
    option jsonlog
    default_backend b
frontend quiet
    bind 127.0.0.1:0
    no log
    default_backend b
backend b
    server s 127.0.0.1:9
";

    fn load_cfg(text: &str) -> Result<crate::config::Config, Vec<String>> {
        haproxy::load_str(
            "t.cfg",
            text,
            Path::new("/etc"),
            haproxy::Options::default(),
        )
        .map(|l| l.config)
        .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn haproxy_dialect_logs_per_frontend() {
        let c = load_cfg(CFG).unwrap();
        let t = c.global.log.as_ref().unwrap();
        assert_eq!(t.sink, LogSink::Udp("127.0.0.1:5514".parse().unwrap()));
        assert_eq!(
            (t.framing, t.facility, t.max_len),
            (Framing::Rfc5424, 19, Some(2048))
        );
        let fe: Vec<_> = c.frontends.iter().map(|f| (f.log, f.dontlognull)).collect();
        assert_eq!(
            fe,
            [
                (Some(LogFormat::Httplog), true),
                (Some(LogFormat::Json), false),
                (None, false)
            ]
        );
    }

    #[test]
    fn converted_toml_logs_the_same() {
        let c = load_cfg(CFG).unwrap();
        let toml = convert::convert(&c, CFG);
        let n = native::load_str("t.toml", &toml, Path::new("/etc"))
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(n.global.log, c.global.log, "{toml}");
        let logs = |c: &crate::config::Config| -> Vec<_> {
            c.frontends.iter().map(|f| (f.log, f.dontlognull)).collect()
        };
        assert_eq!(logs(&n), logs(&c), "{toml}");
    }

    #[test]
    fn a_proxy_log_target_becomes_the_process_one() {
        let cfg = "defaults
    mode http
    log stdout format raw local0
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:0
    default_backend b
backend b
    server s 127.0.0.1:9
";
        let c = load_cfg(cfg).unwrap();
        assert_eq!(
            c.global.log.as_ref().map(|t| &t.sink),
            Some(&LogSink::Stdout)
        );
        assert_eq!(c.frontends[0].log, Some(LogFormat::Httplog));
        // Without a global target, `log global` logs nothing (as HAProxy).
        let c = load_cfg(&cfg.replace("log stdout format raw local0", "log global")).unwrap();
        assert!(c.global.log.is_none() && c.frontends[0].log.is_none());
    }

    #[test]
    fn bad_log_lines_name_their_line() {
        let bad = [
            (
                CFG.replace("local3", "local9"),
                "t.cfg:2: unknown log facility 'local9'",
            ),
            (
                CFG.replace("format rfc5424", "format json"),
                "t.cfg:2: log format 'json'",
            ),
            (
                CFG.replace(
                    "log 127.0.0.1:5514",
                    "log 127.0.0.1:5514 local0\n    log stdout",
                ),
                "t.cfg:3: a second global 'log' target",
            ),
            (
                CFG.replace("    no log\n", "    log stderr local0\n"),
                "t.cfg:20: frontend 'quiet': its log target differs",
            ),
            (
                CFG.replace("option jsonlog", "option httplog clf"),
                "t.cfg:16: 'option httplog clf'",
            ),
        ];
        for (text, want) in bad {
            let errs = load_cfg(&text).unwrap_err();
            assert!(errs.iter().any(|e| e.starts_with(want)), "{want}: {errs:?}");
        }
    }

    #[test]
    fn native_log_settings() {
        let base =
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n";
        let tail = "[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n";
        let load = |global: &str, fe: &str| {
            native::load_str(
                "t.toml",
                &format!("{global}\n{base}{fe}\n{tail}"),
                Path::new("/srv"),
            )
        };
        let c = load(
            "[global]\nlog = { target = \"access.log\", format = \"json\" }\nlog_level = \"debug\"",
            "dontlognull = true",
        )
        .unwrap();
        let t = c.global.log.as_ref().unwrap();
        assert_eq!(t.sink, LogSink::File("/srv/access.log".into()));
        assert_eq!((t.framing, t.format), (Framing::Raw, LogFormat::Json));
        assert_eq!(c.global.log_level.as_deref(), Some("debug"));
        assert_eq!(
            (c.frontends[0].log, c.frontends[0].dontlognull),
            (Some(LogFormat::Json), true)
        );
        let c = load(
            "[global]\nlog = { target = \"udp://127.0.0.1:514\" }",
            "log = false",
        )
        .unwrap();
        assert_eq!(
            c.global.log.as_ref().map(|t| t.framing),
            Some(Framing::Rfc3164)
        );
        assert_eq!(c.frontends[0].log, None);
        let c = load(
            "[global]\nlog = { target = \"stdout\" }",
            "log_format = \"json\"",
        )
        .unwrap();
        assert_eq!(c.frontends[0].log, Some(LogFormat::Json));
        for (global, fe, want) in [
            (
                "[global]\nlog = { target = \"stdout\", format = \"clf\" }",
                "",
                "t.toml:2: log format 'clf'",
            ),
            (
                "[global]\nlog = { target = \"tcp://1.2.3.4:5\" }",
                "",
                "t.toml:2: log target",
            ),
            (
                "[global]\nlog = { target = \"stdout\", facility = \"x\" }",
                "",
                "t.toml:2: log facility 'x'",
            ),
            ("[global]\nlog_level = \"=\"", "", "t.toml:2: log_level"),
            ("", "log = true", "t.toml:"),
            (
                "[global]\nlog = { target = \"stdout\" }",
                "log_format = \"xml\"",
                "t.toml:",
            ),
        ] {
            let e = load(global, fe).unwrap_err().to_string();
            assert!(e.contains(want) && !e.is_empty(), "{want}: {e}");
        }
    }
}
