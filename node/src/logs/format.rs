//! Turning a [`Record`] into a line: HAProxy's `httplog` format, JSON, and
//! the syslog headers (RFC 3164, RFC 5424) a line may be framed with.
//! Runs on the writer thread only.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;

use super::Record;
use crate::config::log::{Framing, LogFormat, TRAFFIC_LEVEL};

/// A moment split into calendar fields, at a given offset from UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tm {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub micros: u32,
    /// Seconds east of UTC.
    pub offset: i32,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl Tm {
    /// `t` at `offset` seconds east of UTC.
    pub fn at(t: SystemTime, offset: i32) -> Tm {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() as i64 + offset as i64;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Tm {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            min: (rem / 60 % 60) as u32,
            sec: (rem % 60) as u32,
            micros: since.subsec_micros(),
            offset,
        }
    }

    /// `t` in the local time zone, as HAProxy writes its dates.
    pub fn local(t: SystemTime) -> Tm {
        Tm::at(t, local_offset(t))
    }

    fn month_name(&self) -> &'static str {
        MONTHS[(self.month as usize).clamp(1, 12) - 1]
    }
}

/// The local time zone's offset from UTC at `t`, in seconds.
fn local_offset(t: SystemTime) -> i32 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack;
    // a zeroed `tm` is a valid value of the plain C struct.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff as i32
    }
}

/// The line for `r` in its format, dated in local time.
pub fn line(r: &Record, out: &mut String) {
    match r.format {
        LogFormat::Httplog => httplog(r, &Tm::local(r.date), out),
        LogFormat::Json => json(r, out),
    }
}

/// HAProxy 2.6's `option httplog`:
/// `%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
/// %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r` — with no captured cookies
/// (`- -`) or headers (`%hr %hs` and their spaces vanish), and no queue
/// positions (`0/0`). `date` is `r.date` broken down.
pub fn httplog(r: &Record, date: &Tm, out: &mut String) {
    // Written piece by piece rather than through `write!`: the formatting
    // machinery cost more than the rest of the line (callgrind).
    ip(out, r.client.ip());
    out.push(':');
    num(out, r.client.port());
    out.push_str(" [");
    pad(out, date.day, 2);
    out.push('/');
    out.push_str(date.month_name());
    out.push('/');
    pad(out, date.year.max(0) as u64, 4);
    out.push(':');
    clock(out, date);
    out.push('.');
    pad(out, date.micros / 1000, 3);
    out.push_str("] ");
    out.push_str(&r.frontend);
    if r.tls {
        out.push('~');
    }
    out.push(' ');
    match &r.backend {
        Some(b) => out.push_str(&b.name),
        None => out.push_str(&r.frontend),
    }
    out.push('/');
    match &r.server {
        Some(s) => out.push_str(&s.name),
        None => out.push_str("<NOSRV>"),
    }
    let t = &r.timers;
    for (sep, v) in [
        (' ', t.request),
        ('/', t.queue),
        ('/', t.connect),
        ('/', t.response),
        ('/', t.active),
        (' ', r.status.map_or(-1, i64::from)),
    ] {
        out.push(sep);
        int(out, v);
    }
    out.push(' ');
    num(out, r.bytes_read);
    out.push_str(" - - ");
    out.push_str(r.termination);
    out.push_str("-- ");
    let c = &r.conns;
    for (sep, v) in [
        ("", c.process),
        ("/", c.frontend),
        ("/", c.backend),
        ("/", c.server),
        ("/", u64::from(r.retries)),
    ] {
        out.push_str(sep);
        num(out, v);
    }
    out.push_str(" 0/0 \"");
    match &r.request {
        Some(req) => {
            encode_into(req.method.as_str(), out);
            out.push(' ');
            encode_into(&req.target, out);
            out.push(' ');
            out.push_str(version(req.version));
        }
        None => out.push_str("<BADREQ>"),
    }
    out.push('"');
}

/// `n` in decimal.
fn num(out: &mut String, n: impl Into<u64>) {
    let mut n: u64 = n.into();
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.reserve(buf.len() - i);
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// A signed `n` (timers use -1).
fn int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    num(out, n.unsigned_abs());
}

/// `n` zero-padded to `width` digits.
fn pad(out: &mut String, n: impl Into<u64>, width: usize) {
    let n: u64 = n.into();
    let mut digits = 1;
    let mut m = n / 10;
    while m > 0 {
        digits += 1;
        m /= 10;
    }
    for _ in digits..width {
        out.push('0');
    }
    num(out, n);
}

/// `hh:mm:ss`.
fn clock(out: &mut String, t: &Tm) {
    pad(out, t.hour, 2);
    out.push(':');
    pad(out, t.min, 2);
    out.push(':');
    pad(out, t.sec, 2);
}

/// An address as HAProxy logs it: IPv6 without brackets.
fn ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                num(out, o);
            }
        }
        // Rare enough for the general formatter.
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `s` as a JSON string, quotes included.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

fn json_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

fn json_opt_num(out: &mut String, n: Option<u64>) {
    match n {
        Some(n) => num(out, n),
        None => out.push_str("null"),
    }
}

/// HAProxy's `url_encode_map` for logged request lines: control bytes,
/// bytes from 127 up, `"` and `#` become `#XX`.
fn encode_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        if !(32..127).contains(&b) || b == b'"' || b == b'#' {
            let _ = write!(out, "#{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// One JSON object. Field names are stable (see the README); timers use
/// HAProxy's -1 for a phase never reached; absent facts are `null`.
pub fn json(r: &Record, out: &mut String) {
    let d = Tm::at(r.date, 0);
    let req = r.request.as_ref();
    let t = &r.timers;
    out.push_str("{\"client\":\"");
    // A socket address's own form: IPv6 in brackets (`[::1]:80`).
    if r.client.is_ipv6() {
        out.push('[');
        ip(out, r.client.ip());
        out.push(']');
    } else {
        ip(out, r.client.ip());
    }
    out.push(':');
    num(out, r.client.port());
    out.push_str("\",\"accept_date\":\"");
    pad(out, d.year.max(0) as u64, 4);
    out.push('-');
    pad(out, d.month, 2);
    out.push('-');
    pad(out, d.day, 2);
    out.push('T');
    clock(out, &d);
    out.push('.');
    pad(out, d.micros / 1000, 3);
    out.push_str("Z\",\"frontend\":");
    json_str(out, &r.frontend);
    out.push_str(",\"backend\":");
    json_opt_str(out, r.backend.as_ref().map(|b| b.name.as_str()));
    out.push_str(",\"server\":");
    json_opt_str(out, r.server.as_ref().map(|s| s.name.as_str()));
    for (name, v) in [
        (",\"TR\":", t.request),
        (",\"Tw\":", t.queue),
        (",\"Tc\":", t.connect),
        (",\"Tr\":", t.response),
        (",\"Ta\":", t.active),
    ] {
        out.push_str(name);
        int(out, v);
    }
    out.push_str(",\"ttft_ms\":");
    json_opt_num(out, r.ttft_ms);
    out.push_str(",\"status\":");
    int(out, r.status.map_or(-1, i64::from));
    out.push_str(",\"bytes_read\":");
    num(out, r.bytes_read);
    out.push_str(",\"bytes_uploaded\":");
    num(out, r.bytes_uploaded);
    out.push_str(",\"termination_state\":\"");
    out.push_str(r.termination);
    out.push_str("--\",\"retries\":");
    num(out, r.retries);
    out.push_str(",\"method\":");
    json_opt_str(out, req.map(|q| q.method.as_str()));
    out.push_str(",\"path\":");
    json_opt_str(out, req.map(|q| q.path()));
    out.push_str(",\"http_version\":");
    json_opt_str(out, req.map(|q| version(q.version)));
    out.push_str(",\"model\":");
    json_opt_str(out, r.model.as_deref());
    out.push_str(",\"tokens_in\":");
    json_opt_num(out, r.tokens.map(|t| t.input));
    out.push_str(",\"tokens_out\":");
    json_opt_num(out, r.tokens.map(|t| t.output));
    out.push_str(",\"client_key\":");
    json_opt_str(out, r.client_key.as_deref());
    out.push_str(",\"request_id\":");
    json_opt_str(out, r.request_id.as_ref().and_then(|v| v.to_str().ok()));
    out.push('}');
}

/// The syslog header for a line sent at `now` (empty for `raw`), as
/// HAProxy writes it: no hostname in RFC 3164, `-` in RFC 5424.
pub fn header(framing: Framing, facility: u8, now: SystemTime, pid: u32, out: &mut String) {
    let pri = u32::from(facility) * 8 + u32::from(TRAFFIC_LEVEL);
    match framing {
        Framing::Raw => {}
        Framing::Short => {
            let _ = write!(out, "<{pri}>");
        }
        Framing::Rfc3164 => {
            let t = Tm::local(now);
            let _ = write!(
                out,
                "<{pri}>{} {:>2} {:02}:{:02}:{:02} llmgw[{pid}]: ",
                t.month_name(),
                t.day,
                t.hour,
                t.min,
                t.sec
            );
        }
        Framing::Rfc5424 => {
            let t = Tm::local(now);
            let off = t.offset.unsigned_abs();
            let _ = write!(
                out,
                "<{pri}>1 {:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02} - llmgw {pid} - - ",
                t.year,
                t.month,
                t.day,
                t.hour,
                t.min,
                t.sec,
                t.micros,
                if t.offset < 0 { '-' } else { '+' },
                off / 3600,
                off / 60 % 60
            );
        }
    }
}
