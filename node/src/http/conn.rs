//! Serving one client connection: HTTP/1.1 (keep-alive, upgrades) or HTTP/2,
//! whichever the client speaks, with the gateway's idle policy on top.
//!
//! hyper enforces `timeout http-request` (complete headers) itself. What it
//! does not do is close a keep-alive connection that sits idle between
//! requests; a small watchdog does, using the last time a byte moved and the
//! number of requests in flight (an idle h1 connection is closed, an h2 one
//! gets GOAWAY). It never interrupts a request in progress: a slow upstream is
//! `timeout server`'s business.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::config::Timeouts;
use crate::gateway::Shared;

/// Facts about the client connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub frontend: Arc<str>,
    /// The client's address: the peer's, or the one a PROXY header gave.
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The entries the connection tracks (`tcp-request connection
    /// track-scN`), shared by its requests; `None` when it tracks none.
    pub tracked: Option<Arc<crate::stick::Tracked>>,
}

/// Activity shared between the connection's IO and its watchdog.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` when a byte last moved.
    last: AtomicU64,
    /// Requests whose response is not finished yet.
    pub inflight: AtomicU32,
    /// 1 + milliseconds since `epoch` when a write to the client started
    /// waiting for the socket (the client is not reading); 0 when not.
    write_blocked: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            inflight: AtomicU32::new(0),
            write_blocked: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn wrote(&self) {
        self.touch();
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    fn write_waits(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// How long the current write to the client has been waiting, if one is.
    fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    pub fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        // Coarse on purpose: one relaxed store per read or write.
        self.last.store(ms, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let last = self.last.load(Ordering::Relaxed);
        Duration::from_millis((self.epoch.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

/// Marks a request in flight until its response body is done.
#[derive(Debug)]
pub struct InflightGuard(Arc<Activity>);

impl InflightGuard {
    pub fn new(a: &Arc<Activity>) -> Self {
        a.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(a.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

pin_project_lite::pin_project! {
    /// An IO that records when bytes move, and first replays any bytes
    /// read ahead of hyper (the prelude) before reading from the IO itself.
    pub struct Tracked<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
        prefix: Bytes,
    }
}

impl<T> Tracked<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self::with_prefix(inner, Bytes::new(), activity)
    }

    pub fn with_prefix(inner: T, prefix: Bytes, activity: Arc<Activity>) -> Self {
        Tracked {
            inner,
            activity,
            prefix,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            if this.prefix.is_empty() {
                // Let go of the read-ahead buffer rather than keep it for the
                // connection's life.
                *this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.wrote(),
            Poll::Pending => this.activity.write_waits(),
            _ => {}
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => this.activity.wrote(),
            Poll::Pending => this.activity.write_waits(),
            _ => {}
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// What arrived of the first request within `timeout http-request`.
enum Prelude {
    /// Request headers complete (or an h2 preface): hand these bytes to hyper.
    Ready(BytesMut),
    /// Not HTTP: answered with 400.
    Malformed,
    /// No end of headers within the size limit: answered with 431.
    TooLarge,
    TimedOut,
    Closed,
}

const PRELUDE_MAX: usize = 64 * 1024;

/// Reads the first request's head so that a client too slow to send it gets
/// HAProxy's `408 Request Timeout` rather than a silent close (hyper's own
/// header timeout, which covers later keep-alive requests, only closes).
async fn read_prelude<IO: AsyncRead + Unpin>(io: &mut IO, limit: Duration) -> Prelude {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            // Only the new bytes (and the 3 before them) can complete CRLFCRLF.
            let from = buf.len().saturating_sub(3);
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Some(false),
                Ok(_) => {}
            }
            if buf.starts_with(b"PRI ") || memfind(&buf[from..], b"\r\n\r\n") {
                return Some(true);
            }
            if buf.len() >= PRELUDE_MAX {
                return None;
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Some(true)) if buf.starts_with(b"PRI ") => Prelude::Ready(buf),
        Ok(Some(true)) => {
            // Parse the head once here so garbage gets the gateway's JSON
            // 400 instead of hyper's empty one.
            let mut headers = [httparse::EMPTY_HEADER; 100]; // hyper's own limit
            match httparse::Request::new(&mut headers).parse(&buf) {
                Ok(_) => Prelude::Ready(buf),
                Err(httparse::Error::TooManyHeaders) => Prelude::TooLarge,
                Err(_) => Prelude::Malformed,
            }
        }
        Ok(Some(false)) | Ok(None) if buf.is_empty() => Prelude::Closed,
        Ok(None) => Prelude::TooLarge,
        Ok(Some(false)) => Prelude::Closed,
        Err(_) => Prelude::TimedOut,
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Answers a first request that never became a request, then closes: the
/// engine's own writer, so the answer is the same as for any later request.
async fn answer_and_close<IO: super::h1::ClientIo>(
    io: &mut IO,
    status: StatusCode,
    code: &str,
    message: &str,
    timeouts: &Timeouts,
) {
    let resp = super::error::error_response(status, code, message);
    let _ = super::h1::write_local(io, resp, true, timeouts.client).await;
}

/// Serves HTTP on one accepted (and, if configured, TLS-terminated) client
/// connection until it closes. `h2` says ALPN already chose HTTP/2.
pub async fn serve<IO>(
    mut io: IO,
    shared: Arc<Shared>,
    info: ConnInfo,
    timeouts: &Timeouts,
    h2: bool,
) where
    IO: super::h1::ClientIo + 'static,
{
    let mut prefix = if h2 {
        BytesMut::new()
    } else {
        match read_prelude(&mut io, timeouts.http_request).await {
            Prelude::Ready(b) => b,
            Prelude::Closed => return,
            Prelude::TimedOut => {
                let msg = "The request was not received in time.";
                let status = StatusCode::REQUEST_TIMEOUT;
                return answer_and_close(&mut io, status, "request_timeout", msg, timeouts).await;
            }
            Prelude::Malformed => {
                let msg = "The request is not valid HTTP.";
                let status = StatusCode::BAD_REQUEST;
                return answer_and_close(&mut io, status, "bad_request", msg, timeouts).await;
            }
            Prelude::TooLarge => {
                let msg = "The request headers are too large.";
                let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                return answer_and_close(&mut io, status, "headers_too_large", msg, timeouts).await;
            }
        }
    };
    // The prelude (or ALPN) already told which protocol this is. HTTP/1.1
    // goes to the gateway's own engine first; what it hands back (at a
    // request boundary, nothing consumed) and HTTP/2 go to hyper, without
    // the per-read version sniffing of hyper-util's `auto` builder.
    let h2 = h2 || prefix.starts_with(b"PRI ");
    if !h2 {
        match super::h1::serve(&mut io, &mut prefix, &shared, &info, timeouts).await {
            super::h1::Served::Closed => return,
            super::h1::Served::Handoff => {}
        }
    }
    // hyper's connection futures are large; boxed, they cost their memory
    // only on connections that use them, not on every one the engine serves.
    Box::pin(serve_hyper(io, prefix.freeze(), shared, info, timeouts, h2)).await
}

/// Serves the rest of a connection with hyper: HTTP/2, and whatever the
/// HTTP/1 engine handed over (`prefix` replays the bytes it had read).
async fn serve_hyper<IO>(
    io: IO,
    prefix: Bytes,
    shared: Arc<Shared>,
    info: ConnInfo,
    timeouts: &Timeouts,
    h2: bool,
) where
    IO: super::h1::ClientIo + 'static,
{
    let activity = Arc::new(Activity::new());
    let info_client = info.client;
    let info = Arc::new(info);
    let svc = {
        let activity = activity.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let info = info.clone();
            let guard = InflightGuard::new(&activity);
            async move { Ok::<_, Infallible>(super::proxy::handle(&shared, &info, req, guard).await) }
        })
    };

    let io = TokioIo::new(Tracked::with_prefix(io, prefix, activity.clone()));
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(64 * 1024);
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        watch(
            conn,
            |c| c.graceful_shutdown(),
            &activity,
            timeouts,
            info_client,
        )
        .await;
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(timeouts.http_request)
            .keep_alive(true)
            .max_buf_size(64 * 1024);
        let conn = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(conn);
        watch(
            conn,
            |c| c.graceful_shutdown(),
            &activity,
            timeouts,
            info_client,
        )
        .await;
    }
}

/// Drives a connection to its end while enforcing the idle policy:
/// `timeout client` for a client that stops reading, and `timeout
/// http-keep-alive` between requests (then a graceful close: h1 closes,
/// h2 sends GOAWAY).
async fn watch<F, E>(
    mut conn: Pin<&mut F>,
    graceful_shutdown: fn(Pin<&mut F>),
    activity: &Activity,
    timeouts: &Timeouts,
    client_addr: SocketAddr,
) where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let keep_alive = timeouts.http_keep_alive;
    let client = timeouts.client;
    let mut wake = Box::pin(tokio::time::sleep(keep_alive.min(client)));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            _ = &mut wake => {
                // `timeout client`: the client stopped reading what we send.
                let blocked = activity.write_blocked_for();
                if blocked.is_some_and(|b| b >= client) {
                    tracing::debug!(client = %client_addr, "client inactivity timeout, closing");
                    return;
                }
                let idle = activity.idle_for();
                let inflight = activity.inflight.load(Ordering::Relaxed);
                if !closing && inflight == 0 && idle >= keep_alive {
                    graceful_shutdown(conn.as_mut());
                    closing = true;
                }
                let mut next = if inflight == 0 && !closing { keep_alive.saturating_sub(idle) } else { client };
                if let Some(b) = blocked {
                    next = next.min(client.saturating_sub(b));
                } else if inflight > 0 {
                    next = next.min(client);
                }
                wake.as_mut().reset(Instant::now() + next.max(Duration::from_millis(10)));
            }
        }
    }
}
