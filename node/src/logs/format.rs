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
    let _ = write!(
        out,
        "{}:{} [{:02}/{}/{:04}:{:02}:{:02}:{:02}.{:03}] {}{} ",
        r.client.ip(),
        r.client.port(),
        date.day,
        date.month_name(),
        date.year,
        date.hour,
        date.min,
        date.sec,
        date.micros / 1000,
        r.frontend,
        if r.tls { "~" } else { "" },
    );
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
    let _ = write!(
        out,
        " {}/{}/{}/{}/{} {} {} - - {}-- {}/{}/{}/{}/{} 0/0 \"",
        t.request,
        t.queue,
        t.connect,
        t.response,
        t.active,
        r.status.map_or(-1, i32::from),
        r.bytes_read,
        r.termination,
        r.conns.process,
        r.conns.frontend,
        r.conns.backend,
        r.conns.server,
        r.retries,
    );
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
    let str_or_null = |v: Option<&str>| match v {
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".into()),
        None => "null".into(),
    };
    let num_or_null = |v: Option<u64>| v.map_or_else(|| "null".into(), |n| n.to_string());
    let req = r.request.as_ref();
    let t = &r.timers;
    let _ = write!(
        out,
        "{{\"client\":\"{}\",\"accept_date\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\
         \"frontend\":{},\"backend\":{},\"server\":{},\
         \"TR\":{},\"Tw\":{},\"Tc\":{},\"Tr\":{},\"Ta\":{},\"ttft_ms\":{},\
         \"status\":{},\"bytes_read\":{},\"bytes_uploaded\":{},\"termination_state\":\"{}--\",\
         \"retries\":{},\"method\":{},\"path\":{},\"http_version\":{},\
         \"model\":{},\"tokens_in\":{},\"tokens_out\":{},\"client_key\":{},\"request_id\":{}}}",
        r.client,
        d.year,
        d.month,
        d.day,
        d.hour,
        d.min,
        d.sec,
        d.micros / 1000,
        str_or_null(Some(&r.frontend)),
        str_or_null(r.backend.as_ref().map(|b| b.name.as_str())),
        str_or_null(r.server.as_ref().map(|s| s.name.as_str())),
        t.request,
        t.queue,
        t.connect,
        t.response,
        t.active,
        num_or_null(r.ttft_ms),
        r.status.map_or(-1, i32::from),
        r.bytes_read,
        r.bytes_uploaded,
        r.termination,
        r.retries,
        str_or_null(req.map(|q| q.method.as_str())),
        str_or_null(req.map(|q| q.path())),
        str_or_null(req.map(|q| version(q.version))),
        str_or_null(r.model.as_deref()),
        num_or_null(r.tokens.map(|t| t.input)),
        num_or_null(r.tokens.map(|t| t.output)),
        str_or_null(r.client_key.as_deref()),
        str_or_null(r.request_id.as_ref().and_then(|v| v.to_str().ok())),
    );
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
