use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use super::format::{self, Tm};
use super::*;
use crate::config::log::{Framing, LogFormat};
use crate::metrics::{BackendStats, ProxyStats, Termination, Txn};
use crate::runtime::ServerState;

/// 2026-11-30 07:58:43.837 UTC.
fn date() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_025_523_837)
}

fn record(format: LogFormat) -> Record {
    Record {
        format,
        client: "127.0.0.1:52454".parse().unwrap(),
        date: date(),
        frontend: Arc::from("fe"),
        tls: false,
        backend: Some(Arc::new(BackendStats::named("be"))),
        server: Some(Arc::new(ServerState::new("be", "s1", 1, 0))),
        timers: Timers {
            request: 0,
            queue: 0,
            connect: 1,
            response: 3005,
            active: 3007,
        },
        ttft_ms: Some(3006),
        status: Some(200),
        bytes_read: 154,
        bytes_uploaded: 96,
        termination: "--",
        conns: Conns {
            process: 1,
            frontend: 1,
            backend: 0,
            server: 0,
        },
        retries: 0,
        request: Some(RequestLine {
            method: Method::GET,
            target: "/v1/models?x=1".into(),
            version: Version::HTTP_11,
        }),
        model: Some("gpt-4o".into()),
        tokens: Some(Tokens {
            input: 7,
            output: 5,
        }),
        client_key: Some(Arc::from("alice")),
        request_id: Some(http::HeaderValue::from_static("req-1")),
    }
}

fn httplog(r: &Record) -> String {
    let mut s = String::new();
    format::httplog(r, &Tm::at(r.date, 0), &mut s);
    s
}

fn json(r: &Record) -> serde_json::Value {
    let mut s = String::new();
    format::json(r, &mut s);
    assert!(!s.contains('\n'), "one line: {s}");
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn dates_break_down() {
    let t = Tm::at(date(), 0);
    assert_eq!(
        (t.year, t.month, t.day, t.hour, t.min, t.sec, t.micros),
        (2026, 11, 30, 7, 58, 43, 837_000)
    );
    // A leap day, and an offset that crosses midnight.
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29 00:00 UTC
    let t = Tm::at(leap, 0);
    assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    let t = Tm::at(leap, -3600);
    assert_eq!((t.year, t.month, t.day, t.hour), (2000, 2, 28, 23));
    let t = Tm::at(UNIX_EPOCH, 0);
    assert_eq!((t.year, t.month, t.day), (1970, 1, 1));
}

#[test]
fn httplog_is_haproxys_line() {
    // As HAProxy 2.6 wrote it for the same request (timers aside).
    assert_eq!(
        httplog(&record(LogFormat::Httplog)),
        "127.0.0.1:52454 [30/Nov/2026:07:58:43.837] fe be/s1 0/0/1/3005/3007 200 154 - - ---- \
         1/1/0/0/0 0/0 \"GET /v1/models?x=1 HTTP/1.1\""
    );
}

#[test]
fn httplog_denied_and_unanswered() {
    let mut r = record(LogFormat::Httplog);
    r.backend = None;
    r.server = None;
    r.timers = Timers {
        request: 0,
        ..Timers::default()
    };
    r.timers.active = 0;
    r.status = Some(403);
    r.bytes_read = 192;
    r.termination = "PR";
    r.tls = true;
    r.request = Some(RequestLine {
        method: Method::GET,
        target: "http://127.0.0.1:18090/admin".into(),
        version: Version::HTTP_2,
    });
    assert_eq!(
        httplog(&r),
        "127.0.0.1:52454 [30/Nov/2026:07:58:43.837] fe~ fe/<NOSRV> 0/-1/-1/-1/0 403 192 - - PR-- \
         1/1/0/0/0 0/0 \"GET http://127.0.0.1:18090/admin HTTP/2.0\""
    );
}

#[test]
fn httplog_bad_request_and_escapes() {
    let mut r = record(LogFormat::Httplog);
    r.backend = None;
    r.server = None;
    r.timers = Timers {
        active: 2002,
        ..Timers::default()
    };
    r.status = Some(408);
    r.bytes_read = 0;
    r.termination = "cR";
    r.request = None;
    r.client = "[::1]:4000".parse().unwrap();
    assert_eq!(
        httplog(&r),
        "::1:4000 [30/Nov/2026:07:58:43.837] fe fe/<NOSRV> -1/-1/-1/-1/2002 408 0 - - cR-- \
         1/1/0/0/0 0/0 \"<BADREQ>\""
    );
    r.request = Some(RequestLine {
        method: Method::GET,
        target: "/a\"b#c\u{e9}".into(),
        version: Version::HTTP_11,
    });
    assert!(httplog(&r).ends_with("\"GET /a#22b#23c#C3#A9 HTTP/1.1\""));
}

#[test]
fn json_has_every_field_and_round_trips() {
    let v = json(&record(LogFormat::Json));
    let expect = serde_json::json!({
        "client": "127.0.0.1:52454",
        "accept_date": "2026-11-30T07:58:43.837Z",
        "frontend": "fe",
        "backend": "be",
        "server": "s1",
        "TR": 0, "Tw": 0, "Tc": 1, "Tr": 3005, "Ta": 3007,
        "ttft_ms": 3006,
        "status": 200,
        "bytes_read": 154,
        "bytes_uploaded": 96,
        "termination_state": "----",
        "retries": 0,
        "method": "GET",
        "path": "/v1/models?x=1",
        "http_version": "HTTP/1.1",
        "model": "gpt-4o",
        "tokens_in": 7,
        "tokens_out": 5,
        "client_key": "alice",
        "request_id": "req-1",
    });
    assert_eq!(v, expect);
}

#[test]
fn json_absent_facts_are_null_and_strings_escaped() {
    let mut r = record(LogFormat::Json);
    r.backend = None;
    r.server = None;
    r.ttft_ms = None;
    r.status = None;
    r.tokens = None;
    r.client_key = None;
    r.request_id = None;
    r.model = Some("we\"ird\nmodel".into());
    r.request = Some(RequestLine {
        method: Method::POST,
        target: "http://h:1/v1/chat?q=\"x\"".into(),
        version: Version::HTTP_2,
    });
    let v = json(&r);
    for k in [
        "backend",
        "server",
        "ttft_ms",
        "tokens_in",
        "tokens_out",
        "client_key",
        "request_id",
    ] {
        assert!(v[k].is_null(), "{k}: {v}");
    }
    assert_eq!(v["status"], -1);
    assert_eq!(v["model"], "we\"ird\nmodel");
    // The path without scheme and authority, whatever the protocol.
    assert_eq!(v["path"], "/v1/chat?q=\"x\"");
    assert_eq!(v["http_version"], "HTTP/2.0");
    r.request = None;
    let v = json(&r);
    assert!(v["method"].is_null() && v["path"].is_null());
}

#[test]
fn syslog_headers() {
    let pid = 4242;
    let now = SystemTime::now();
    let mut s = String::new();
    format::header(Framing::Raw, 16, now, pid, &mut s);
    assert_eq!(s, "");
    format::header(Framing::Short, 17, now, pid, &mut s);
    assert_eq!(s, "<142>");
    s.clear();
    format::header(Framing::Rfc3164, 16, now, pid, &mut s);
    // `<134>Nov 30 07:59:11 llmgw[4242]: ` (the day space-padded).
    assert!(
        s.starts_with("<134>") && s.ends_with(" llmgw[4242]: "),
        "{s}"
    );
    assert_eq!(s.len(), "<134>Nov 30 07:59:11 llmgw[4242]: ".len(), "{s}");
    s.clear();
    format::header(Framing::Rfc5424, 16, now, pid, &mut s);
    // `<134>1 2026-11-30T07:59:11.185427+00:00 - llmgw 4242 - - `.
    assert!(
        s.starts_with("<134>1 ") && s.ends_with(" - llmgw 4242 - - "),
        "{s}"
    );
    assert_eq!(
        s.len(),
        "<134>1 2026-11-30T07:59:11.185427+00:00 - llmgw 4242 - - ".len(),
        "{s}"
    );
}

/// A Txn that logs into `logger`, as `logs::begin` would set it up.
fn logged_txn(fe: &Arc<ProxyStats>, logger: &Arc<Logger>) -> Txn {
    let mut t = Txn::new(fe);
    let mut r = record(LogFormat::Json);
    r.timers = Timers {
        request: 2,
        ..Timers::default()
    };
    r.bytes_read = 0;
    r.bytes_uploaded = 50;
    r.backend = None;
    r.server = None;
    r.model = None;
    r.tokens = None;
    r.client_key = None;
    r.request_id = None;
    t.log(logger.clone(), Box::new(r));
    t
}

#[test]
fn a_txn_finishes_its_record_at_drop() {
    let dropped = Arc::new(AtomicU64::new(0));
    let (logger, mut rx) = Logger::detached(8, dropped.clone());
    let fe = Arc::new(ProxyStats::default());
    let be = Arc::new(BackendStats::named("b"));
    let srv = Arc::new(ServerState::new("b", "s", 1, 0));
    let mut t = logged_txn(&fe, &logger);
    assert!(t.logging());
    t.log_client_key(&Arc::from("alice"));
    t.log_request_id(Some(&http::HeaderValue::from_static("id-9")));
    t.bytes_in(100);
    t.model(Some("gpt-4o"));
    t.backend(&be);
    t.server(&srv);
    t.connected();
    t.retried();
    t.server_head(200);
    t.log_head_out(40);
    t.expect_usage();
    let body = br#"{"usage":{"prompt_tokens":7,"completion_tokens":5}}"#;
    t.body(body);
    drop(t);
    let r = rx.try_recv().expect("a record");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.termination, "--");
    assert_eq!(r.backend.as_ref().map(|b| b.name.as_str()), Some("b"));
    assert_eq!(r.server.as_ref().map(|s| s.name.as_str()), Some("s"));
    assert_eq!(r.model.as_deref(), Some("gpt-4o"));
    assert_eq!(r.tokens.map(|t| (t.input, t.output)), Some((7, 5)));
    assert_eq!(r.client_key.as_deref(), Some("alice"));
    assert_eq!(r.retries, 1);
    assert_eq!(r.bytes_uploaded, 150);
    assert_eq!(r.bytes_read, 40 + body.len() as u64);
    assert!(r.ttft_ms.is_some());
    let t = r.timers;
    assert_eq!(t.request, 2);
    assert!(t.queue >= 0 && t.connect >= 0 && t.response >= 0, "{t:?}");
    assert!(t.active >= 2, "{t:?}");
    assert_eq!(dropped.load(Relaxed), 0);
}

#[test]
fn an_unanswered_txn_logs_minus_ones() {
    let (logger, mut rx) = Logger::detached(8, Arc::new(AtomicU64::new(0)));
    let fe = Arc::new(ProxyStats::default());
    // Denied before any backend.
    let mut t = logged_txn(&fe, &logger);
    t.end(Termination::Denied);
    t.head(403);
    drop(t);
    let r = rx.try_recv().expect("a record");
    assert_eq!(r.termination, "PR");
    assert_eq!(
        (r.timers.queue, r.timers.connect, r.timers.response),
        (-1, -1, -1)
    );
    assert!(r.backend.is_none() && r.server.is_none());
    // A server that could not be connected to.
    let be = Arc::new(BackendStats::named("b"));
    let srv = Arc::new(ServerState::new("b", "s", 1, 0));
    let mut t = logged_txn(&fe, &logger);
    t.backend(&be);
    t.server(&srv);
    t.end(Termination::ConnectFailed);
    t.head(503);
    drop(t);
    let r = rx.try_recv().expect("a record");
    assert_eq!(r.termination, "SC");
    assert!(r.timers.queue >= 0);
    assert_eq!((r.timers.connect, r.timers.response), (-1, -1));
    // Handed to the other path: nothing here.
    let t = logged_txn(&fe, &logger);
    t.discard();
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    let dropped = Arc::new(AtomicU64::new(0));
    // A writer that never reads: a stalled disk or syslog.
    let (logger, mut rx) = Logger::detached(4, dropped.clone());
    let fe = Arc::new(ProxyStats::default());
    let start = Instant::now();
    for _ in 0..1000 {
        let mut t = logged_txn(&fe, &logger);
        t.head(200);
        drop(t);
    }
    // Nothing waited for the writer.
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(dropped.load(Relaxed), 996);
    let mut kept = 0;
    while rx.try_recv().is_ok() {
        kept += 1;
    }
    assert_eq!(kept, 4);
    // Counting went on regardless.
    assert_eq!(fe.requests.load(Relaxed), 1000);
}

#[test]
fn a_txn_without_logs_carries_nothing() {
    let fe = Arc::new(ProxyStats::default());
    let mut t = Txn::new(&fe);
    assert!(!t.logging());
    // These are no-ops: nothing is kept or cloned.
    t.log_client_key(&Arc::from("alice"));
    t.log_request_id(Some(&http::HeaderValue::from_static("x")));
    t.log_head_out(10);
    drop(t);
}

#[test]
fn request_targets_are_bounded_and_paths_derived() {
    let long: http::Uri = format!("/{}", "a".repeat(5000)).parse().unwrap();
    assert_eq!(target(&long).len(), MAX_TARGET);
    let abs: http::Uri = "http://example.com:8080/v1/x?y=1".parse().unwrap();
    assert_eq!(target(&abs), "http://example.com:8080/v1/x?y=1");
    let line = RequestLine {
        method: Method::GET,
        target: target(&abs),
        version: Version::HTTP_2,
    };
    assert_eq!(line.path(), "/v1/x?y=1");
}

#[test]
fn the_writer_thread_writes_lines_to_a_file() {
    let dir = std::env::temp_dir().join(format!("llmgw-logs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let target = crate::config::log::LogTarget::new(
        crate::config::log::LogSink::File(path.clone()),
        Framing::Raw,
    );
    let logger = Logger::start(&target, Arc::new(AtomicU64::new(0)), Vec::new()).unwrap();
    logger.send(Box::new(record(LogFormat::Httplog)));
    logger.send(Box::new(record(LogFormat::Json)));
    drop(logger);
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() == 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" fe be/s1 "), "{}", lines[0]);
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["server"], "s1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counts the allocations the current thread makes (tests run on many
/// threads at once: a global count would see the others').
struct Counting;

thread_local! {
    static ALLOCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the counter
// is a const-initialised thread-local (it never allocates itself).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        std::alloc::System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        std::alloc::System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

/// One request's record, start to end, as both paths drive it.
fn lifecycle(t: &mut Txn, be: &Arc<BackendStats>, srv: &Arc<ServerState>, key: &Arc<str>) {
    t.log_request_id(Some(&http::HeaderValue::from_static("id")));
    t.log_client_key(key);
    t.log_head_in(100);
    t.bytes_in(100);
    t.backend(be);
    t.server(srv);
    t.connected();
    t.server_head(200);
    t.log_head_out(50);
    t.body(b"data: {}\n\n");
}

#[test]
fn a_txn_without_logs_allocates_nothing_for_them() {
    let fe = Arc::new(ProxyStats::default());
    let be = Arc::new(BackendStats::named("b"));
    let srv = Arc::new(ServerState::new("b", "s", 1, 0));
    let key: Arc<str> = Arc::from("k");
    // The backend's per-model counters exist after a first request.
    drop(Txn::new(&fe));
    let mut first = Txn::new(&fe);
    lifecycle(&mut first, &be, &srv, &key);
    drop(first);
    let n = allocations(|| {
        let mut t = Txn::new(&fe);
        lifecycle(&mut t, &be, &srv, &key);
        drop(t);
    });
    assert_eq!(n, 0, "a request on a frontend without logs allocated");
}

#[test]
fn a_logged_request_costs_its_record_and_target() {
    let (logger, mut rx) = Logger::detached(CHANNEL, Arc::new(AtomicU64::new(0)));
    let fe = Arc::new(ProxyStats::default());
    let be = Arc::new(BackendStats::named("b"));
    let srv = Arc::new(ServerState::new("b", "s", 1, 0));
    let key: Arc<str> = Arc::from("k");
    let uri: http::Uri = "/v1/chat/completions".parse().unwrap();
    // The channel allocates its slots in blocks: warm it.
    let mut warm = logged_txn(&fe, &logger);
    lifecycle(&mut warm, &be, &srv, &key);
    drop(warm);
    let conn = ConnInfo {
        frontend: Arc::from("f"),
        client: "127.0.0.1:1234".parse().unwrap(),
        local: "127.0.0.1:80".parse().unwrap(),
        tls: false,
        tracked: None,
        drain: crate::listen::drain::Drain::new(),
    };
    let n = allocations(|| {
        let mut t = Txn::new(&fe);
        // What `logs::begin` does: the record and the target.
        let mut r = Box::new(Record::new(LogFormat::Httplog, &conn, SystemTime::now()));
        r.request = Some(RequestLine {
            method: Method::POST,
            target: target(&uri),
            version: Version::HTTP_11,
        });
        t.log(logger.clone(), r);
        lifecycle(&mut t, &be, &srv, &key);
        drop(t);
    });
    // The record box and the target string; the request id header value
    // is shared, the names are reference-counted.
    assert_eq!(n, 2, "allocations for a logged request");
    while rx.try_recv().is_ok() {}
}

#[test]
fn numbers_dates_and_json_strings_are_written_by_hand_correctly() {
    let mut r = record(LogFormat::Json);
    r.client = "[2001:db8::1]:443".parse().unwrap();
    r.timers.active = 1_234_567;
    r.bytes_read = u64::MAX;
    r.model = Some("tab\there \u{1} \\ \u{e9}".into());
    r.date = UNIX_EPOCH + Duration::from_millis(5);
    let v = json(&r);
    assert_eq!(v["client"], "[2001:db8::1]:443");
    assert_eq!(v["Ta"], 1_234_567);
    assert_eq!(v["bytes_read"], u64::MAX);
    assert_eq!(v["model"], "tab\there \u{1} \\ \u{e9}");
    assert_eq!(v["accept_date"], "1970-01-01T00:00:00.005Z");
    r.format = LogFormat::Httplog;
    let line = httplog(&r);
    assert!(line.starts_with("2001:db8::1:443 [01/Jan/1970:00:00:00.005] fe be/s1 0/0/1/3005/1234567 200 18446744073709551615 "), "{line}");
}
