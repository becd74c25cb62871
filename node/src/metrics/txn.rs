//! One request's record, from its head to the last byte of its answer: the
//! context both request paths fill in as they go (which backend, server
//! and model, when each phase ended, how it ended), counted into the
//! frontend's, backend's, server's, model's and client key's counters
//! when it is dropped — once, whichever way the request ended.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{status_class, BackendStats, LlmStats, ProxyStats, Sample};
use crate::llm::usage::{Tokens, UsageScanner};
use crate::logs::{self, Logger, Record};
use crate::runtime::ServerState;

/// How a request ended, in HAProxy's two-letter termination state terms
/// (who ended it, at which phase); `--` for a normal end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Termination {
    #[default]
    Normal,
    /// Denied or answered by the gateway's rules (`PR`).
    Denied,
    /// The request was invalid or its client stopped sending (`CR`).
    ClientRequest,
    /// No server could be connected to (`SC`).
    ConnectFailed,
    /// The server did not answer in time (`sH`) or broke its answer
    /// (`SH`), before the head.
    ServerHead,
    /// The server broke off or stalled mid-body (`SD`).
    ServerBody,
    /// The client went away mid-answer (`CD`).
    ClientBody,
    /// Waited too long in a queue, or no server was usable (`sQ`).
    Queue,
}

impl Termination {
    pub fn code(self) -> &'static str {
        match self {
            Termination::Normal => "--",
            Termination::Denied => "PR",
            Termination::ClientRequest => "CR",
            Termination::ConnectFailed => "SC",
            Termination::ServerHead => "SH",
            Termination::ServerBody => "SD",
            Termination::ClientBody => "CD",
            Termination::Queue => "sQ",
        }
    }
}

/// One request's record; see the module doc.
pub struct Txn {
    start: Instant,
    frontend: Arc<ProxyStats>,
    backend: Option<Arc<BackendStats>>,
    server: Option<Arc<ServerState>>,
    key: Option<Arc<LlmStats>>,
    model: Option<Box<str>>,
    /// Time waited in the backend's queue for a server slot.
    queued: Duration,
    /// Offsets from `start` at which each phase ended.
    dequeued_at: Option<Duration>,
    connected_at: Option<Duration>,
    head_at: Option<Duration>,
    first_byte_at: Option<Duration>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    retries: u32,
    termination: Termination,
    usage: Option<UsageScanner>,
    discarded: bool,
    /// The response head came from the server (not the gateway).
    server_answered: bool,
    /// The access-log line being filled, when the frontend logs: `None`
    /// costs nothing (no allocation, nothing sent) on a frontend without
    /// logs.
    log: Option<(Arc<Logger>, Box<Record>)>,
}

impl Txn {
    pub fn new(frontend: &Arc<ProxyStats>) -> Txn {
        Txn {
            start: Instant::now(),
            frontend: frontend.clone(),
            backend: None,
            server: None,
            key: None,
            model: None,
            queued: Duration::ZERO,
            dequeued_at: None,
            connected_at: None,
            head_at: None,
            first_byte_at: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            retries: 0,
            termination: Termination::Normal,
            usage: None,
            discarded: false,
            server_answered: false,
            log: None,
        }
    }

    /// Logs this request when it ends, in `record` (begun by
    /// [`crate::logs::begin`]).
    pub fn log(&mut self, logger: Arc<Logger>, record: Box<Record>) {
        self.log = Some((logger, record));
    }

    /// Whether this request will be logged.
    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// The request id, for the log line.
    pub fn log_request_id(&mut self, id: Option<&http::HeaderValue>) {
        if let (Some((_, r)), Some(id)) = (&mut self.log, id) {
            r.request_id = Some(id.clone());
        }
    }

    /// The client key's configured name, for the log line.
    pub fn log_client_key(&mut self, name: &Arc<str>) {
        if let Some((_, r)) = &mut self.log {
            r.client_key = Some(name.clone());
        }
    }

    /// Bytes of the response head sent to the client (the log's `%B`
    /// counts them with the body).
    pub fn log_head_out(&mut self, n: u64) {
        if let Some((_, r)) = &mut self.log {
            r.bytes_read += n;
        }
    }

    /// Bytes of the request head, when known exactly (the HTTP/1 engine);
    /// replaces the estimate [`crate::logs::begin`] made.
    pub fn log_head_in(&mut self, n: u64) {
        if let Some((_, r)) = &mut self.log {
            r.bytes_uploaded = n;
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The request goes to `backend` (counted as a session there until the
    /// request ends).
    pub fn backend(&mut self, backend: &Arc<BackendStats>) {
        backend.proxy.open();
        if let Some(old) = self.backend.replace(backend.clone()) {
            // A fallback step moves the request to another backend.
            old.proxy.close();
        }
    }

    /// The backend's queue gave a server slot after `waited` (zero when a
    /// server was free at once).
    pub fn queued(&mut self, waited: Duration) {
        self.queued += waited;
    }

    /// An attempt goes to `server`: the connection phase starts.
    pub fn server(&mut self, server: &Arc<ServerState>) {
        self.dequeued_at = Some(self.now());
        self.server = Some(server.clone());
    }

    /// A connection to the server is ready (pooled or new).
    pub fn connected(&mut self) {
        self.connected_at = Some(self.now());
    }

    /// The attempt failed and another follows.
    pub fn retried(&mut self) {
        self.retries += 1;
    }

    /// The response head is known, from the upstream or the gateway.
    pub fn head(&mut self, status: u16) {
        self.status = status;
        self.head_at.get_or_insert_with(|| self.start.elapsed());
    }

    /// The first bytes of the body came with the head: their time is the
    /// head's (one clock read fewer on the common path).
    pub fn body_with_head(&mut self, data: &[u8]) {
        if self.first_byte_at.is_none() && !data.is_empty() {
            self.first_byte_at = self.head_at;
        }
        self.body(data);
    }

    /// The server's response head came (the one the client gets).
    pub fn server_head(&mut self, status: u16) {
        self.server_answered = true;
        self.head(status);
    }

    pub fn model(&mut self, model: Option<&str>) {
        self.model = model.map(Into::into);
    }

    pub fn client_key(&mut self, key: Arc<LlmStats>) {
        self.key = Some(key);
    }

    pub fn bytes_in(&mut self, n: u64) {
        self.bytes_in += n;
    }

    /// Bytes of a gateway-made answer's body.
    pub fn bytes_out(&mut self, n: u64) {
        self.bytes_out += n;
    }

    /// The request went elsewhere to be recorded (the HTTP/1 engine hands
    /// it to the general path): this record counts nothing.
    pub fn discard(mut self) {
        self.discarded = true;
    }

    pub fn end(&mut self, t: Termination) {
        if self.termination == Termination::Normal {
            self.termination = t;
        }
    }

    /// The response is an upstream's and its body will pass through
    /// [`Txn::body`]: its `usage` is looked for.
    pub fn expect_usage(&mut self) {
        self.usage = Some(UsageScanner::default());
    }

    /// A piece of the response body on its way to the client.
    pub fn body(&mut self, data: &[u8]) {
        if self.first_byte_at.is_none() && !data.is_empty() {
            self.first_byte_at = Some(self.now());
        }
        self.bytes_out += data.len() as u64;
        if let Some(u) = &mut self.usage {
            u.feed(data);
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn termination(&self) -> Termination {
        self.termination
    }

    fn tokens(&self) -> Option<Tokens> {
        self.usage.as_ref()?.found()
    }
}

impl Txn {
    /// Finishes the log line and hands it to the writer; after the counters
    /// (the connection counts it shows exclude this request, as HAProxy's).
    fn send_log(&mut self, total: Duration, tokens: Option<Tokens>) {
        let Some((logger, mut r)) = self.log.take() else {
            return;
        };
        let ms = |d: Option<Duration>| d.map_or(-1, logs::ms);
        let since = |from: Option<Duration>, to: Option<Duration>| to?.checked_sub(from?);
        let reached_server = self.server.is_some()
            && !matches!(
                self.termination,
                Termination::ConnectFailed | Termination::Queue
            );
        // The general path learns of the connection only with the answer:
        // a connection it reused or made is then counted as instant.
        let connected = match self.connected_at {
            Some(c) => Some(c),
            None if self.server_answered => self.dequeued_at,
            None => None,
        };
        r.timers.queue =
            ms((self.backend.is_some() && self.server.is_some()).then_some(self.queued));
        r.timers.connect = match (reached_server, connected) {
            (true, c) => ms(since(self.dequeued_at, c)),
            (false, _) => -1,
        };
        r.timers.response = match self.server_answered {
            true => ms(since(connected, self.head_at)),
            false => -1,
        };
        r.timers.active = r.timers.request.max(0) + logs::ms(total);
        // A gateway-made answer's body is no token.
        r.ttft_ms = self
            .first_byte_at
            .filter(|_| self.server_answered)
            .map(|d| d.as_millis() as u64);
        r.status = (self.status != 0).then_some(self.status);
        r.bytes_read += self.bytes_out;
        r.bytes_uploaded += self.bytes_in;
        r.termination = self.termination.code();
        r.retries = self.retries;
        r.conns = logs::Conns {
            process: logger.active_connections(),
            frontend: self.frontend.cur.load(Relaxed),
            backend: self
                .backend
                .as_ref()
                .map_or(0, |b| b.proxy.cur.load(Relaxed)),
            server: self.server.as_ref().map_or(0, |s| s.active() as u64),
        };
        r.backend = self.backend.clone();
        r.server = self.server.clone();
        r.model = self.model.take();
        r.tokens = tokens;
        logger.send(r);
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        if self.discarded {
            if let Some(be) = &self.backend {
                be.proxy.close();
            }
            return;
        }
        let elapsed = self.now();
        let total = Sample::of(elapsed);
        let class = status_class(self.status);
        let denied = self.termination == Termination::Denied;
        let fe = &self.frontend;
        fe.requests.fetch_add(1, Relaxed);
        fe.responses[class].fetch_add(1, Relaxed);
        fe.bytes_in.fetch_add(self.bytes_in, Relaxed);
        fe.bytes_out.fetch_add(self.bytes_out, Relaxed);
        fe.total_time.add(total);
        if denied {
            fe.denied.fetch_add(1, Relaxed);
        }
        if self.termination == Termination::ClientRequest {
            fe.req_errors.fetch_add(1, Relaxed);
        }
        let tokens = self.tokens();
        let since = |from: Option<Duration>, to: Option<Duration>| to?.checked_sub(from?);
        let phases = [
            (self.backend.is_some() && self.server.is_some()).then_some(self.queued),
            since(self.dequeued_at, self.connected_at),
            since(self.connected_at.or(self.dequeued_at), self.head_at),
            self.first_byte_at,
        ]
        .map(|d| d.map(Sample::of));
        let count = |p: &ProxyStats, server: bool| {
            p.requests.fetch_add(1, Relaxed);
            p.responses[class].fetch_add(1, Relaxed);
            p.bytes_in.fetch_add(self.bytes_in, Relaxed);
            p.bytes_out.fetch_add(self.bytes_out, Relaxed);
            if self.status == 429 && self.server.is_some() {
                p.upstream_429.fetch_add(1, Relaxed);
            }
            match self.termination {
                Termination::Denied => {
                    p.denied.fetch_add(1, Relaxed);
                }
                Termination::ConnectFailed => {
                    p.conn_errors.fetch_add(1, Relaxed);
                }
                Termination::ServerHead | Termination::ServerBody => {
                    p.resp_errors.fetch_add(1, Relaxed);
                }
                _ => {}
            }
            let hists = [&p.queue_time, &p.connect_time, &p.response_time, &p.ttft];
            for (i, (h, d)) in hists.into_iter().zip(phases).enumerate() {
                // A server has no queue of its own (requests wait in the
                // backend's), and its TTFT is the backend's by model.
                if server && (i == 0 || i == 3) {
                    continue;
                }
                if let Some(d) = d {
                    h.add(d);
                }
            }
            p.total_time.add(total);
        };
        if let Some(be) = &self.backend {
            count(&be.proxy, false);
            be.proxy.close();
            let m = be.model(self.model.as_deref());
            m.requests.fetch_add(1, Relaxed);
            if let Some(t) = tokens {
                m.tokens_in.fetch_add(t.input, Relaxed);
                m.tokens_out.fetch_add(t.output, Relaxed);
            }
            if let Some(d) = phases[3] {
                m.ttft.add(d);
            }
            m.total_time.add(total);
        }
        if let Some(s) = &self.server {
            count(&s.stats, true);
        }
        if let Some(k) = &self.key {
            k.requests.fetch_add(1, Relaxed);
            if let Some(t) = tokens {
                k.tokens_in.fetch_add(t.input, Relaxed);
                k.tokens_out.fetch_add(t.output, Relaxed);
            }
        }
        self.send_log(elapsed, tokens);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_once_everywhere_it_went() {
        let fe = Arc::new(ProxyStats::default());
        let be = Arc::new(BackendStats::default());
        let srv = Arc::new(ServerState::new("b", "s", 1, 0));
        let key = Arc::new(LlmStats::default());
        let mut t = Txn::new(&fe);
        t.bytes_in(100);
        t.model(Some("gpt-4o"));
        t.client_key(key.clone());
        t.backend(&be);
        assert_eq!(be.proxy.cur.load(Relaxed), 1);
        t.server(&srv);
        t.connected();
        t.head(200);
        t.expect_usage();
        t.body(br#"{"usage":{"prompt_tokens":7,"#);
        t.body(br#""completion_tokens":5}}"#);
        drop(t);
        assert_eq!(fe.requests.load(Relaxed), 1);
        assert_eq!(fe.responses(1), 1);
        assert_eq!(fe.bytes_in.load(Relaxed), 100);
        assert_eq!(be.proxy.cur.load(Relaxed), 0);
        assert_eq!(be.proxy.responses(1), 1);
        assert_eq!(srv.stats.responses(1), 1);
        assert_eq!(be.proxy.ttft.count(), 1);
        assert_eq!(srv.stats.total_time.count(), 1);
        let m = be.model(Some("gpt-4o"));
        assert_eq!(
            (m.tokens_in.load(Relaxed), m.tokens_out.load(Relaxed)),
            (7, 5)
        );
        assert_eq!(key.tokens_out.load(Relaxed), 5);
    }

    #[test]
    fn a_denied_request_counts_on_its_frontend_only() {
        let fe = Arc::new(ProxyStats::default());
        let mut t = Txn::new(&fe);
        t.end(Termination::Denied);
        t.head(429);
        drop(t);
        assert_eq!(fe.denied.load(Relaxed), 1);
        assert_eq!(fe.responses(3), 1);
        assert_eq!(fe.upstream_429.load(Relaxed), 0);
    }
}
