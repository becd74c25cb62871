//! Serving one client connection: HTTP/1.1 (keep-alive, upgrades) or HTTP/2,
//! whichever the client speaks, with the gateway's idle policy on top.
//!
//! hyper enforces `timeout http-request` (complete headers) itself. What it
//! does not do is close a keep-alive connection that sits idle between
//! requests; a small watchdog does, using the last time a byte moved (h1) or
//! a request started or ended (h2, where PINGs and SETTINGS move bytes
//! without being requests) and the number of requests in flight (an idle h1
//! connection is closed, an h2 one gets GOAWAY). It never interrupts a
//! request in progress: a slow upstream is `timeout server`'s business.
//!
//! HTTP/2 is where one connection can cost the most, so its limits are set
//! here explicitly (see [`h2_builder`]), and a [`FrameMeter`] closes a
//! connection whose client sends control frames (PING, SETTINGS,
//! RST_STREAM, PRIORITY, unknown types) faster than any client needs: the
//! `h2` crate bounds what such frames *queue*, not how many it processes.

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
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::h1::framing::Refusal;
use super::h1::guard::{Guard, Verdicts};
use crate::config::Timeouts;
use crate::gateway::Shared;
use crate::logs::BadRequest;

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
    /// The listener's drain: once it starts, the connection closes at its
    /// next safe moment (see [`crate::listen::drain`]).
    pub drain: Arc<crate::listen::drain::Drain>,
}

impl ConnInfo {
    /// Should the response being made close the connection after it?
    pub fn closing(&self) -> bool {
        self.drain.is_draining()
    }

    /// The configuration a request on this connection is served by: the
    /// current one, or — on a listener whose frontend a reload removed —
    /// the last one that had the frontend, so that the requests still
    /// arriving while it drains are not refused.
    pub fn snapshot(&self, shared: &Shared) -> Arc<crate::gateway::Snapshot> {
        let snap = shared.current.load_full();
        // Only a draining listener can have lost its frontend: one relaxed
        // load on every other request.
        if self.drain.is_draining() && snap.frontend(&self.frontend).is_none() {
            if let Some(last) = self.drain.retired() {
                return last;
            }
        }
        snap
    }
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
    /// Milliseconds since `epoch` when a request last started or ended.
    request_edge: AtomicU64,
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
            request_edge: AtomicU64::new(0),
        }
    }

    fn request_edge(&self) {
        self.request_edge.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since a request last started or ended.
    fn requests_idle_for(&self) -> Duration {
        let last = self.request_edge.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
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
        a.request_edge();
        InflightGuard(a.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.request_edge();
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
    /// Not HTTP (400), a bare LF (400), no end of headers within the size
    /// limit (414 or 431): answered, then closed.
    Refused(Refusal),
    /// `timeout http-request` passed; `empty`: not a byte came.
    TimedOut { empty: bool },
    /// The client closed first; `empty`: not a byte came.
    Closed { empty: bool },
}

const PRELUDE_MAX: usize = 64 * 1024;

/// Reads the first request's head so that a client too slow to send it gets
/// HAProxy's `408 Request Timeout` rather than a silent close (hyper's own
/// header timeout, which covers later keep-alive requests, only closes).
async fn read_prelude<IO: AsyncRead + Unpin>(io: &mut IO, limit: Duration) -> Prelude {
    use super::h1::{oversized_head, scan_head};
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            // Only the new bytes (and the 3 before them) can complete CRLFCRLF.
            let from = buf.len().saturating_sub(3);
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Ok(false),
                Ok(_) => {}
            }
            if buf.starts_with(b"PRI ") || scan_head(&buf, from)?.is_some() {
                return Ok(true);
            }
            if buf.len() >= PRELUDE_MAX {
                return Err(oversized_head(&buf));
            }
        }
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(true)) if buf.starts_with(b"PRI ") => Prelude::Ready(buf),
        Ok(Ok(true)) => {
            // Parse the head once here so garbage gets the gateway's JSON
            // 400 instead of hyper's empty one.
            let mut headers = [httparse::EMPTY_HEADER; 100]; // hyper's own limit
            match httparse::Request::new(&mut headers).parse(&buf) {
                Ok(_) => Prelude::Ready(buf),
                Err(httparse::Error::TooManyHeaders) => Prelude::Refused(Refusal {
                    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    why: "too many headers",
                }),
                Err(_) => Prelude::Refused(Refusal::bad("malformed head")),
            }
        }
        Ok(Err(r)) => Prelude::Refused(r),
        Ok(Ok(false)) => Prelude::Closed {
            empty: buf.is_empty(),
        },
        Err(_) => Prelude::TimedOut {
            empty: buf.is_empty(),
        },
    }
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
        // Scoped here: not kept in the connection's future past the prelude.
        let accepted = std::time::Instant::now();
        let prelude = read_prelude(&mut io, timeouts.http_request).await;
        // A connection whose first request never became one is logged
        // as HAProxy logs it (`<BADREQ>`; see `option dontlognull`).
        let bad = match &prelude {
            Prelude::Ready(_) => None,
            Prelude::Closed { empty: true } => Some(BadRequest::ClosedEmpty),
            Prelude::Closed { empty: false } => Some(BadRequest::ClosedPartial),
            Prelude::TimedOut { empty: true } => Some(BadRequest::TimedOutEmpty),
            Prelude::TimedOut { empty: false } => Some(BadRequest::TimedOutPartial),
            Prelude::Refused(r) => Some(BadRequest::Invalid(r.status.as_u16())),
        };
        if let Some(how) = bad {
            crate::logs::bad_request(&shared.current.load(), &info, accepted, how);
        }
        match prelude {
            Prelude::Ready(b) => b,
            Prelude::Closed { .. } => return,
            // Answered with the engine's own writer, so the answer is the
            // same as for any later request; then closed.
            Prelude::TimedOut { .. } => {
                let resp = super::error::error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request was not received in time.",
                );
                let _ = super::h1::write_local(&mut io, resp, true, timeouts.client).await;
                return;
            }
            Prelude::Refused(r) => {
                let resp = super::h1::refusal_response(r);
                let _ = super::h1::write_local(&mut io, resp, true, timeouts.client).await;
                return;
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
    let drain = info.drain.clone();
    let info = Arc::new(info);
    // HTTP/1: the engine's framing rules stand in front of hyper's parser
    // (h1/guard.rs); they speak through these.
    let verdicts = (!h2).then(|| Arc::new(Verdicts::default()));
    let svc = {
        let activity = activity.clone();
        let verdicts = verdicts.clone();
        service_fn(move |req: Request<Incoming>| {
            let shared = shared.clone();
            let info = info.clone();
            let guard = InflightGuard::new(&activity);
            // Taken now, as hyper hands the request over (see
            // `Verdicts::take_refusal`).
            let refusal = verdicts.as_ref().and_then(|v| v.take_refusal());
            let tunnel = (req.method() == Method::CONNECT
                || req.headers().contains_key(header::UPGRADE))
            .then(|| verdicts.clone())
            .flatten()
            .map(|v| (v, req.method().clone()));
            // Boxed: hyper moves the service future several times as it
            // spawns a stream's task and as the task completes (tokio
            // writes each stage over the whole future), and unboxed this
            // future is ~5 KiB; those copies were an eighth of the CPU an
            // HTTP/2 request cost. A pointer moves for the price of one
            // allocation.
            Box::pin(async move {
                if let Some(r) = refusal {
                    // The stand-in for a refused request: answered, and the
                    // connection closes after it.
                    drop(guard);
                    let mut resp = super::h1::refusal_response(r);
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok::<_, Infallible>(resp);
                }
                let mut resp = super::proxy::handle(&shared, &info, req, guard).await;
                // HTTP/1 on a draining listener: this response closes it
                // (hyper honours the header). HTTP/2 gets GOAWAY instead.
                if !h2 && info.closing() {
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                if let Some((v, method)) = tunnel {
                    v.decided(Verdicts::switches(&method, resp.status()));
                }
                Ok(resp)
            })
        })
    };

    let io = Tracked::with_prefix(io, prefix, activity.clone());
    if h2 {
        let io = TokioIo::new(FrameMeter::new(io, info_client));
        let conn = h2_builder().serve_connection(io, svc);
        tokio::pin!(conn);
        watch(
            conn,
            |c| c.graceful_shutdown(),
            &activity,
            timeouts,
            info_client,
            Some(&drain),
        )
        .await;
    } else {
        let io = Guard::new(io, verdicts.unwrap_or_default());
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(timeouts.http_request)
            .keep_alive(true)
            .max_buf_size(64 * 1024);
        let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
        tokio::pin!(conn);
        watch(
            conn,
            |c| c.graceful_shutdown(),
            &activity,
            timeouts,
            info_client,
            None,
        )
        .await;
    }
}

/// Concurrent streams per HTTP/2 connection. Each is a request the gateway
/// works on (an upstream call, buffers), so this is also the most one
/// connection can make the gateway do at once.
const H2_MAX_STREAMS: u32 = 256;
/// Request header list, decoded (HTTP/1's head limit too). It also bounds
/// CONTINUATION frames: the `h2` crate allows a header block only about
/// `max_header_list_size / max_frame_size` of them (at least 5), then
/// answers GOAWAY(ENHANCE_YOUR_CALM) — the CVE-2024-27316 class.
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// Response bytes buffered per stream for a client that is not reading.
/// hyper's default (400 KiB) times 256 streams is 100 MiB for one
/// connection; SSE frames are small, so 64 KiB costs no throughput worth
/// having and bounds a connection at 16 MiB.
const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// Streams the client resets before the gateway took them up (HTTP/2 rapid
/// reset, CVE-2023-44487): past this many at once, GOAWAY(ENHANCE_YOUR_CALM).
/// The `h2` crate's default, stated here so it does not change under us.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the gateway had to reset because the client broke the protocol
/// on them (bad headers, flow-control errors): a working client causes
/// none, so past this many the connection is ended (hyper's default is 1024).
const H2_MAX_LOCAL_ERROR_RESETS: usize = 128;

/// The HTTP/2 server settings, each for a reason (above). The flow-control
/// windows stay at hyper's 1 MiB per stream and per connection: the
/// connection window bounds the request bytes a client can push unread.
/// No keep-alive PINGs: an idle connection is closed by the watchdog, and
/// a dead peer under a stream is found by `timeout client` or TCP itself.
fn h2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(None);
    b
}

/// Control frames a client may send at once (then [`CONTROL_REFILL_PER_S`]
/// a second, and one more for each request it makes): far more than a
/// client needs — a handful of SETTINGS and PINGs, a PRIORITY (or
/// PRIORITY_UPDATE) per request, an RST_STREAM per stream it cancels — and
/// far less than a flood.
const CONTROL_BURST: u32 = 1000;
const CONTROL_REFILL_PER_S: u32 = 100;
/// The client connection preface, which precedes the first frame.
const PREFACE_LEN: usize = 24;

pin_project_lite::pin_project! {
    /// Meters the HTTP/2 frames a client sends, reading only the 9-byte
    /// frame headers as they pass (nothing is copied or held but a partial
    /// header). Frames that cost the gateway work but carry no request —
    /// PING, SETTINGS, RST_STREAM, PRIORITY and frame types it ignores —
    /// spend a token bucket ([`CONTROL_BURST`], refilled at
    /// [`CONTROL_REFILL_PER_S`] and by one for each HEADERS frame, so that
    /// what a busy client sends per request is paid for by the request);
    /// once it is empty the read fails and the connection is dropped. The `h2` crate answers one PING or SETTINGS
    /// at a time and stops reading while the answer is unsent (so a flood
    /// cannot queue answers), but it answers any number of them.
    pub struct FrameMeter<T> {
        #[pin]
        inner: T,
        // Bytes to pass before the next frame header (the preface, then
        // each frame's payload).
        skip: usize,
        head: [u8; 9],
        head_len: usize,
        bucket: Bucket,
        client: SocketAddr,
    }
}

/// What [`meter`] charges frames to.
trait Budget {
    /// A control frame: `false` when there is nothing left to spend.
    fn spend(&mut self) -> bool;
    /// A request (a HEADERS frame) earns one back.
    fn earn(&mut self);
}

/// The token bucket of [`FrameMeter`].
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

impl Budget for Bucket {
    fn spend(&mut self) -> bool {
        if self.tokens == 0 {
            // Refilled only when empty: one clock read per CONTROL_BURST
            // frames at most.
            let now = Instant::now();
            let earned = now.duration_since(self.refilled).as_millis() as u64
                * u64::from(CONTROL_REFILL_PER_S)
                / 1000;
            if earned == 0 {
                return false;
            }
            self.tokens = u32::try_from(earned).unwrap_or(u32::MAX).min(CONTROL_BURST);
            self.refilled = now;
        }
        self.tokens -= 1;
        true
    }

    fn earn(&mut self) {
        self.tokens = (self.tokens + 1).min(CONTROL_BURST);
    }
}

impl<T> FrameMeter<T> {
    pub fn new(inner: T, client: SocketAddr) -> Self {
        FrameMeter {
            inner,
            skip: PREFACE_LEN,
            head: [0; 9],
            head_len: 0,
            bucket: Bucket {
                tokens: CONTROL_BURST,
                refilled: Instant::now(),
            },
            client,
        }
    }
}

/// Frame types that carry no request: PRIORITY (2), RST_STREAM (3),
/// SETTINGS (4), PING (6), and any type HTTP/2 does not define (which
/// must be ignored, so they cost processing and nothing else).
/// DATA, HEADERS, CONTINUATION (the `h2` crate limits those itself),
/// GOAWAY and WINDOW_UPDATE (which flow control needs) are not metered.
fn is_control(kind: u8) -> bool {
    matches!(kind, 2 | 3 | 4 | 6) || kind > 9
}

/// Walks `data` (the next bytes of the client's stream) frame header by
/// frame header; `false` once the client has spent its control budget.
fn meter(
    skip: &mut usize,
    head: &mut [u8; 9],
    head_len: &mut usize,
    mut data: &[u8],
    budget: &mut impl Budget,
) -> bool {
    while !data.is_empty() {
        if *skip > 0 {
            let n = (*skip).min(data.len());
            *skip -= n;
            data = &data[n..];
            continue;
        }
        let n = (9 - *head_len).min(data.len());
        head[*head_len..*head_len + n].copy_from_slice(&data[..n]);
        *head_len += n;
        data = &data[n..];
        if *head_len == 9 {
            *head_len = 0;
            *skip = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            match head[3] {
                1 => budget.earn(),
                kind if is_control(kind) && !budget.spend() => return false,
                _ => {}
            }
        }
    }
    true
}

impl<T: AsyncRead> AsyncRead for FrameMeter<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        let ok = meter(
            this.skip,
            this.head,
            this.head_len,
            &buf.filled()[before..],
            this.bucket,
        );
        if !ok {
            tracing::info!(client = %this.client, "HTTP/2 control frame flood: closing the connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP/2 control frame flood",
            )));
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for FrameMeter<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    /// Always `false`, so that the `h2` crate copies DATA payloads up to
    /// 1 KiB into its write buffer instead of chaining each one over 256 B
    /// as a slice of its own; a chained frame must be written out before
    /// the next frame can be buffered, which cost a system call per
    /// response, where copying lets one write carry the responses of every
    /// stream that finished together (HAProxy's batching). Over TLS the
    /// bytes are copied into records anyway.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Drives a connection to its end while enforcing the idle policy:
/// `timeout client` for a client that stops reading, and `timeout
/// http-keep-alive` between requests (then a graceful close: h1 closes,
/// h2 sends GOAWAY). h1 is idle when no byte moved, h2 when no request
/// started or ended, whatever control frames went by. A graceful close the
/// client does not complete (an h2 client must acknowledge it) becomes a
/// plain one after another `timeout http-keep-alive` with nothing in
/// flight.
async fn watch<F, E>(
    mut conn: Pin<&mut F>,
    graceful_shutdown: fn(Pin<&mut F>),
    activity: &Activity,
    timeouts: &Timeouts,
    client_addr: SocketAddr,
    h2_drain: Option<&crate::listen::drain::Drain>,
) where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let keep_alive = timeouts.http_keep_alive;
    let client = timeouts.client;
    let mut wake = Box::pin(tokio::time::sleep(keep_alive.min(client)));
    // When the graceful close started: an h2 client must still acknowledge
    // it (GOAWAY, then a PING) before hyper lets the connection go.
    let mut closing: Option<Instant> = None;
    let h2 = h2_drain.is_some();
    let draining = async {
        match h2_drain {
            Some(d) => d.started().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(draining);
    loop {
        tokio::select! {
            // HTTP/2 on a draining listener: GOAWAY now; streams in flight
            // finish. (HTTP/1 closes with its next response: see `serve_hyper`.)
            _ = &mut draining, if closing.is_none() => {
                graceful_shutdown(conn.as_mut());
                closing = Some(Instant::now());
            }
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
                // h2: PINGs and SETTINGS move bytes without being requests.
                let idle = if h2 { activity.requests_idle_for() } else { activity.idle_for() };
                let inflight = activity.inflight.load(Ordering::Relaxed);
                if closing.is_none() && inflight == 0 && idle >= keep_alive {
                    graceful_shutdown(conn.as_mut());
                    closing = Some(Instant::now());
                }
                // A client that ignores the close (never acknowledges the
                // GOAWAY's PING) is dropped after another idle period.
                let lingering = closing.filter(|_| inflight == 0).map(|at| at.elapsed());
                if lingering.is_some_and(|l| l >= keep_alive) {
                    tracing::debug!(client = %client_addr, "client did not finish the graceful close, dropping");
                    return;
                }
                let mut next = match (closing, lingering) {
                    (None, _) if inflight == 0 => keep_alive.saturating_sub(idle),
                    (Some(_), Some(l)) => keep_alive.saturating_sub(l),
                    _ => client,
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    /// Counts what it is charged, up to `left` control frames.
    struct Count {
        spent: u32,
        earned: u32,
        left: u32,
    }

    impl Budget for Count {
        fn spend(&mut self) -> bool {
            self.spent += 1;
            self.left = self.left.saturating_sub(1);
            self.left > 0 || self.spent <= self.earned
        }

        fn earn(&mut self) {
            self.earned += 1;
        }
    }

    /// Feeds `stream` in pieces of `step` bytes; returns (control frames,
    /// requests) seen, or `None` when the budget of `left` ran out.
    fn run(stream: &[u8], step: usize, left: u32) -> Option<(u32, u32)> {
        let (mut skip, mut head, mut head_len) = (PREFACE_LEN, [0u8; 9], 0);
        let mut b = Count {
            spent: 0,
            earned: 0,
            left: left + 1,
        };
        for piece in stream.chunks(step) {
            if !meter(&mut skip, &mut head, &mut head_len, piece, &mut b) {
                return None;
            }
        }
        Some((b.spent, b.earned))
    }

    #[test]
    fn control_frames_are_counted_across_any_split() {
        let mut s = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        s.extend(frame(4, &[0; 6])); // SETTINGS
        s.extend(frame(1, &[0x82; 40])); // HEADERS
        s.extend(frame(0, &[6; 300])); // DATA: its payload looks like PINGs
        s.extend(frame(8, &[0, 0, 1, 0])); // WINDOW_UPDATE
        s.extend(frame(6, &[0; 8])); // PING
        s.extend(frame(3, &[0; 4])); // RST_STREAM
        s.extend(frame(2, &[0; 5])); // PRIORITY
        s.extend(frame(0xfa, &[1, 2, 3])); // unknown type
        for step in [1, 2, 5, 9, 10, 17, 4096] {
            assert_eq!(run(&s, step, 100), Some((5, 1)), "split every {step} bytes");
        }
    }

    #[test]
    fn a_ping_flood_runs_out_of_budget() {
        let mut s = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for _ in 0..CONTROL_BURST + 1 {
            s.extend(frame(6, &[0; 8]));
        }
        assert_eq!(run(&s, 1000, CONTROL_BURST), None);
        assert_eq!(
            run(&s, 1000, CONTROL_BURST + 1),
            Some((CONTROL_BURST + 1, 0))
        );
    }

    #[test]
    fn the_bucket_refunds_a_request_and_refills_with_time() {
        let mut b = Bucket {
            tokens: 2,
            refilled: Instant::now(),
        };
        assert!(b.spend() && b.spend());
        b.earn();
        assert!(b.spend());
        // Empty, and no time has passed to speak of.
        b.refilled = Instant::now() + Duration::from_secs(3600);
        assert!(!b.spend());
        // A second is worth CONTROL_REFILL_PER_S frames.
        b.refilled = Instant::now() - Duration::from_secs(1);
        for _ in 0..CONTROL_REFILL_PER_S {
            assert!(b.spend());
        }
        for _ in 0..10 * CONTROL_BURST {
            b.earn();
        }
        assert_eq!(b.tokens, CONTROL_BURST);
    }
}
