//! Access logs: one line per request, in HAProxy's `httplog` format or as
//! JSON, to stdout, a file or syslog.
//!
//! A request's line is built from its [`Txn`] when the Txn is dropped — the
//! same moment its counters are added up — and handed to a writer thread
//! through a bounded channel with `try_send`: a full channel drops the line
//! and counts it (`llmgw_logs_dropped_total`), so a slow disk or a stalled
//! syslog never holds a request back. Formatting and writing happen on the
//! writer thread only; a request pays for filling its [`Record`] (one
//! allocation, plus its request target) and nothing when its frontend does
//! not log (the Txn then carries an empty `Option`).
//!
//! The writer is a plain OS thread rather than a tokio task: writes to a
//! pipe or a file block, and on a one-thread runtime (`nbthread 1`) a
//! blocked task would stall every connection.
//!
//! One [`Logger`] belongs to one configuration snapshot; a reload builds a
//! new one, which opens the file anew — the hook for logrotate (rotate,
//! then `kill -HUP`). The old writer ends when the last request that
//! holds it has been logged.

pub mod format;
mod sink;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use tokio::sync::mpsc;

use crate::config::log::{LogFormat, LogTarget};
use crate::gateway::Snapshot;
use crate::http::conn::ConnInfo;
use crate::llm::usage::Tokens;
use crate::metrics::{BackendStats, ProxyStats, Txn};
use crate::runtime::ServerState;

/// Lines waiting for the writer before new ones are dropped.
pub const CHANNEL: usize = 8192;

/// Longest request target kept for a line; longer ones are cut (HAProxy
/// cuts its request line at `tune.http.logurilen`, 1024 by default).
pub const MAX_TARGET: usize = 1024;

/// Where a snapshot's access logs go.
pub struct Logger {
    tx: mpsc::Sender<Box<Record>>,
    /// Lines dropped because the writer was behind (kept across reloads).
    dropped: Arc<AtomicU64>,
    /// Every frontend's counters, for the process's active connections
    /// (`%ac`).
    frontends: Vec<Arc<ProxyStats>>,
}

impl Logger {
    /// Opens `target` and starts its writer thread.
    pub fn start(
        target: &LogTarget,
        dropped: Arc<AtomicU64>,
        frontends: Vec<Arc<ProxyStats>>,
    ) -> std::io::Result<Arc<Logger>> {
        let out = sink::Sink::open(target)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        std::thread::Builder::new()
            .name("llmgw-log".into())
            .spawn(move || out.run(rx))?;
        Ok(Arc::new(Logger {
            tx,
            dropped,
            frontends,
        }))
    }

    /// A logger whose lines stay in the returned receiver (tests: a writer
    /// that never reads is a stalled one).
    pub fn detached(
        capacity: usize,
        dropped: Arc<AtomicU64>,
    ) -> (Arc<Logger>, mpsc::Receiver<Box<Record>>) {
        let (tx, rx) = mpsc::channel(capacity);
        let l = Logger {
            tx,
            dropped,
            frontends: Vec::new(),
        };
        (Arc::new(l), rx)
    }

    /// Hands a line to the writer, or drops and counts it: never waits.
    pub fn send(&self, r: Box<Record>) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Connections open on every frontend (HAProxy's `actconn`).
    pub fn active_connections(&self) -> u64 {
        self.frontends.iter().map(|f| f.cur.load(Relaxed)).sum()
    }
}

/// HAProxy's five timers, in milliseconds; -1 for a phase never reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// `%TR`: receiving the request head.
    pub request: i64,
    /// `%Tw`: waiting in queues.
    pub queue: i64,
    /// `%Tc`: connecting to the server.
    pub connect: i64,
    /// `%Tr`: the server's time to its response head.
    pub response: i64,
    /// `%Ta`: the request's whole active time, head to last byte.
    pub active: i64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            request: -1,
            queue: -1,
            connect: -1,
            response: -1,
            active: -1,
        }
    }
}

/// Connection counts when the line was made (`%ac/%fc/%bc/%sc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conns {
    pub process: u64,
    pub frontend: u64,
    pub backend: u64,
    pub server: u64,
}

/// The request line as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    pub method: Method,
    /// The target as the client wrote it (origin form for HTTP/1.1, the
    /// absolute form `http://host/path` an HTTP/2 request amounts to, as
    /// HAProxy logs it), at most [`MAX_TARGET`] bytes.
    pub target: String,
    pub version: Version,
}

impl RequestLine {
    /// The path and query (the target without scheme and authority).
    pub fn path(&self) -> &str {
        if self.target.starts_with('/') {
            return &self.target;
        }
        match self.target.find("://") {
            Some(i) => {
                let rest = &self.target[i + 3..];
                rest.find('/').map_or("/", |j| &rest[j..])
            }
            None => &self.target,
        }
    }
}

/// One access-log line's facts, filled as the request goes and finished
/// when its [`Txn`] is dropped. Holds no credential and no body: the
/// client key appears by its configured name only.
#[derive(Clone, Debug)]
pub struct Record {
    pub format: LogFormat,
    pub client: SocketAddr,
    /// `%tr`: when the request's first byte came.
    pub date: SystemTime,
    pub frontend: Arc<str>,
    /// The connection is TLS (HAProxy marks the frontend `name~`).
    pub tls: bool,
    pub backend: Option<Arc<BackendStats>>,
    pub server: Option<Arc<ServerState>>,
    pub timers: Timers,
    /// From the request head to the response body's first byte.
    pub ttft_ms: Option<u64>,
    /// `None`: no response (HAProxy's -1).
    pub status: Option<u16>,
    /// `%B`: bytes sent to the client, head included.
    pub bytes_read: u64,
    /// `%U`: bytes received from the client, head included.
    pub bytes_uploaded: u64,
    /// Two letters: who ended the request and in which phase.
    pub termination: &'static str,
    pub conns: Conns,
    pub retries: u32,
    /// `None`: the request could not be read (`<BADREQ>`).
    pub request: Option<RequestLine>,
    pub model: Option<Box<str>>,
    pub tokens: Option<Tokens>,
    pub client_key: Option<Arc<str>>,
    pub request_id: Option<HeaderValue>,
}

impl Record {
    fn new(format: LogFormat, conn: &ConnInfo, date: SystemTime) -> Record {
        Record {
            format,
            client: conn.client,
            date,
            frontend: conn.frontend.clone(),
            tls: conn.tls,
            backend: None,
            server: None,
            timers: Timers::default(),
            ttft_ms: None,
            status: None,
            bytes_read: 0,
            bytes_uploaded: 0,
            termination: "--",
            conns: Conns::default(),
            retries: 0,
            request: None,
            model: None,
            tokens: None,
            client_key: None,
            request_id: None,
        }
    }
}

/// A request head as received, whichever path carries it.
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a http::HeaderMap,
}

impl<'a> From<&'a http::request::Parts> for Head<'a> {
    fn from(p: &'a http::request::Parts) -> Self {
        Head {
            method: &p.method,
            uri: &p.uri,
            version: p.version,
            headers: &p.headers,
        }
    }
}

impl<'a, B> From<&'a http::Request<B>> for Head<'a> {
    fn from(r: &'a http::Request<B>) -> Self {
        Head {
            method: r.method(),
            uri: r.uri(),
            version: r.version(),
            headers: r.headers(),
        }
    }
}

/// Starts `txn`'s line when its frontend logs (`format`), `started` being
/// when the request's first byte came. Nothing happens (and nothing is
/// allocated) for a frontend that does not log.
pub fn begin(
    txn: &mut Txn,
    snap: &Snapshot,
    format: Option<LogFormat>,
    conn: &ConnInfo,
    head: Head<'_>,
    started: Instant,
) {
    let (Some(logger), Some(format)) = (&snap.logger, format) else {
        return;
    };
    let took = started.elapsed();
    let mut r = Box::new(Record::new(format, conn, SystemTime::now() - took));
    r.timers.request = ms(took);
    r.bytes_uploaded = request_head_len(&head);
    r.request = Some(RequestLine {
        method: head.method.clone(),
        target: target(head.uri),
        version: head.version,
    });
    txn.log(logger.clone(), r);
}

/// The request target as logged, cut at [`MAX_TARGET`].
fn target(uri: &Uri) -> String {
    let mut s = match (uri.scheme(), uri.authority()) {
        (Some(_), Some(_)) => uri.to_string(),
        _ => uri
            .path_and_query()
            .map_or_else(|| uri.to_string(), |pq| pq.as_str().to_owned()),
    };
    if s.len() > MAX_TARGET {
        let mut end = MAX_TARGET;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A request head's size as HTTP/1.1 would carry it.
fn request_head_len(head: &Head<'_>) -> u64 {
    let line = head.method.as_str().len()
        + head.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    (line + headers_len(head.headers) + 2) as u64
}

/// A response head's size as HTTP/1.1 would carry it (`HTTP/1.1 200 OK`
/// and the headers): an h2 head is smaller on the wire (HPACK), but the
/// same size in every line keeps lines comparable.
pub fn response_head_len(status: http::StatusCode, headers: &http::HeaderMap) -> u64 {
    let reason = status.canonical_reason().map_or(0, |r| r.len() + 1);
    ("HTTP/1.1 200\r\n".len() + reason + headers_len(headers) + 2) as u64
}

fn headers_len(h: &http::HeaderMap) -> usize {
    h.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How a connection ended before it sent a complete request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// It closed without sending a byte (`CR`, 400; a null connection).
    ClosedEmpty,
    /// It closed in the middle of a request head (`CR`, 400).
    ClosedPartial,
    /// `timeout http-request` passed with no byte (`cR`, 408; a null
    /// connection).
    TimedOutEmpty,
    /// `timeout http-request` passed mid-head (`cR`, 408).
    TimedOutPartial,
    /// The head was not valid HTTP, or too large (`PR`, with the status
    /// it was answered with).
    Invalid(u16),
}

/// Logs a connection whose request never became one, as HAProxy does
/// (`<BADREQ>`): except, with `option dontlognull`, one that sent nothing.
pub fn bad_request(snap: &Snapshot, conn: &ConnInfo, accepted: Instant, how: BadRequest) {
    let Some(logger) = &snap.logger else { return };
    let Some(i) = snap
        .config
        .frontends
        .iter()
        .position(|f| *f.name == *conn.frontend)
    else {
        return;
    };
    let fe = &snap.config.frontends[i];
    let Some(format) = fe.log else { return };
    let null = matches!(how, BadRequest::ClosedEmpty | BadRequest::TimedOutEmpty);
    if null && fe.dontlognull {
        return;
    }
    let (status, termination) = match how {
        BadRequest::ClosedEmpty | BadRequest::ClosedPartial => (400, "CR"),
        BadRequest::TimedOutEmpty | BadRequest::TimedOutPartial => (408, "cR"),
        BadRequest::Invalid(s) => (s, "PR"),
    };
    let age = accepted.elapsed();
    let mut r = Box::new(Record::new(format, conn, SystemTime::now() - age));
    r.timers.active = ms(age);
    r.status = Some(status);
    r.termination = termination;
    r.conns = Conns {
        process: logger.active_connections(),
        frontend: snap
            .frontend_stats
            .get(i)
            .map_or(0, |s| s.cur.load(Relaxed)),
        backend: 0,
        server: 0,
    };
    logger.send(r);
}

#[cfg(test)]
mod tests;
