//! The body types that cross the gateway.
//!
//! Both are small enums rather than boxed trait objects: the common cases
//! (an upstream stream passed through, or a short gateway-made reply) cost no
//! allocation, and the guards they carry end a request's accounting exactly
//! when its last byte has gone.
//!
//! A client's request body must also keep coming ([`BodyPace`]): the HTTP/1
//! engine applies the pace to its own reads, the general path reads through
//! [`ClientBody`].

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::conn::InflightGuard;
use crate::metrics::{Termination, Txn};
use crate::runtime::{ActiveGuard, Outcome};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The slowest a request body may arrive once `timeout http-request` has
/// passed since its head (Apache's mod_reqtimeout `MinRate`): a real
/// upload, even on a poor link, is far faster; a slow-body attack
/// (R-U-Dead-Yet: a few bytes every few seconds, each resetting any
/// inactivity timeout) is far slower.
pub const BODY_MIN_RATE: u64 = 500;

/// When the next bytes of a request body must arrive: within `timeout
/// client` of the last ones, and the whole body by `timeout http-request`
/// after its head plus one second per [`BODY_MIN_RATE`] bytes received.
/// HAProxy bounds a body by `timeout http-request` only when it buffers it
/// (`option http-buffer-request`), and otherwise by `timeout client`
/// inactivity alone, which a trickle of bytes never trips.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    start: Instant,
    base: Duration,
    client: Duration,
}

impl BodyPace {
    /// The pace of a body whose head has just arrived.
    pub fn new(t: &crate::config::Timeouts) -> BodyPace {
        BodyPace {
            start: Instant::now(),
            base: t.http_request,
            client: t.client,
        }
    }

    /// The deadline for more of a body of which `received` bytes came.
    pub fn next_deadline(&self, received: u64) -> Instant {
        let earned = Duration::from_millis(received.saturating_mul(1000) / BODY_MIN_RATE);
        let pace = self.start + self.base.saturating_add(earned);
        pace.min(Instant::now() + self.client)
    }
}

/// A request body that stopped coming in time (see [`BodyPace`]); the
/// client gets a 408.
#[derive(Debug)]
pub struct BodyTooSlow;

impl std::fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body was not received in time")
    }
}

impl std::error::Error for BodyTooSlow {}

impl BodyTooSlow {
    /// Is `e`, or what caused it, a body that came too slowly?
    pub fn caused(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut src = Some(e);
        while let Some(s) = src {
            if s.is::<BodyTooSlow>() {
                return true;
            }
            src = s.source();
        }
        false
    }
}

/// A client's request body as the general path reads it, held to its
/// [`BodyPace`]: past the deadline it ends with [`BodyTooSlow`].
pub struct ClientBody {
    inner: Incoming,
    pace: BodyPace,
    received: u64,
    /// Armed while waiting for the next frame; made on the first wait only
    /// (most bodies arrive with their head and never wait).
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl ClientBody {
    pub fn new(inner: Incoming, t: &crate::config::Timeouts) -> ClientBody {
        ClientBody {
            inner,
            pace: BodyPace::new(t),
            received: 0,
            timer: None,
            armed: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                }
                this.armed = false;
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(other) => return Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => {}
        }
        if !this.armed {
            let at = this.pace.next_deadline(this.received);
            match &mut this.timer {
                Some(t) => t.as_mut().reset(at),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            this.armed = true;
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        if expired {
            Poll::Ready(Some(Err(BodyTooSlow.into())))
        } else {
            Poll::Pending
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body on its way upstream.
pub enum ReqBody {
    /// Untouched client body, streamed.
    Stream(ClientBody),
    /// The part already read (to find the model), then the rest of the stream.
    Prefixed {
        head: Option<Bytes>,
        rest: Option<ClientBody>,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Stream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::Prefixed { head, rest } => {
                if let Some(h) = head.take() {
                    if !h.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(h))));
                    }
                }
                match rest {
                    Some(r) => Pin::new(r).poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Stream(b) => b.is_end_stream(),
            ReqBody::Prefixed { head, rest } => {
                head.as_ref().is_none_or(|h| h.is_empty())
                    && rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Stream(b) => b.size_hint(),
            ReqBody::Prefixed { head, rest } => {
                let h = head.as_ref().map_or(0, |h| h.len() as u64);
                match rest {
                    Some(r) => prefixed(h, r.size_hint()),
                    None => SizeHint::with_exact(h),
                }
            }
        }
    }
}

/// A response body as it comes from upstream: through hyper's client, or
/// read from a plain HTTP/1.1 server's connection directly.
pub enum UpBody {
    Hyper(Incoming),
    /// Boxed: a response body is held for as long as its stream lasts,
    /// and this one is larger than hyper's handle.
    H1(Box<super::h1::client::H1Body>),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::H1(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Hyper(b) => b.is_end_stream(),
            UpBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Hyper(b) => b.size_hint(),
            UpBody::H1(b) => b.size_hint(),
        }
    }
}

/// An upstream response body with the server inactivity timeout applied
/// between frames.
pub struct Upstream {
    body: UpBody,
    /// The first frame, read before the response was committed.
    first: Option<Frame<Bytes>>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// `text/event-stream`: a break mid-body is told with an `event: error`.
    sse: bool,
    /// The error to end the body with, once the SSE error event is out.
    failed: Option<BoxError>,
}

/// A response body on its way to the client.
pub struct RespBody {
    kind: Kind,
    /// Ends the server's active count when the body is done or dropped.
    _server: Option<ActiveGuard>,
    /// Ends the connection's in-flight count likewise.
    _inflight: Option<InflightGuard>,
    /// The stick-table entries the request tracks (`conn_cur` counts it
    /// until the body is over; bytes and tokens are counted as it passes).
    tracked: Option<Box<crate::stick::Tracked>>,
    /// The request's record: counted when the body is over (or dropped).
    txn: Option<Box<Txn>>,
}

enum Kind {
    Upstream(Upstream),
    Full(Option<Bytes>),
}

/// The upstream stalled for longer than `timeout server` mid-body.
#[derive(Debug)]
pub struct IdleTimeout;

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream inactivity timeout")
    }
}

impl std::error::Error for IdleTimeout {}

impl RespBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        RespBody {
            kind: Kind::Full(Some(b.into())),
            _server: None,
            _inflight: None,
            tracked: None,
            txn: None,
        }
    }

    pub fn empty() -> Self {
        RespBody {
            kind: Kind::Full(None),
            _server: None,
            _inflight: None,
            tracked: None,
            txn: None,
        }
    }

    /// A streamed upstream body; `first` is its first frame when it was
    /// read before the response was committed to the client.
    pub fn upstream(
        body: UpBody,
        first: Option<Frame<Bytes>>,
        idle: Duration,
        guard: ActiveGuard,
        sse: bool,
    ) -> Self {
        let deadline = Box::pin(tokio::time::sleep(idle));
        RespBody {
            kind: Kind::Upstream(Upstream {
                body,
                first,
                idle,
                deadline,
                sse,
                failed: None,
            }),
            _server: Some(guard),
            _inflight: None,
            tracked: None,
            txn: None,
        }
    }
}

impl RespBody {
    /// The whole body of a gateway-made response; `None` for a streamed one.
    pub fn into_full(mut self) -> Option<Bytes> {
        match &mut self.kind {
            Kind::Full(b) => Some(b.take().unwrap_or_default()),
            Kind::Upstream(_) => None,
        }
    }

    pub fn with_inflight(mut self, g: InflightGuard) -> Self {
        self._inflight = Some(g);
        self
    }

    pub fn with_tracked(mut self, mut t: crate::stick::Tracked) -> Self {
        if !t.is_empty() {
            if matches!(self.kind, Kind::Upstream(_)) {
                t.from_upstream();
            }
            self.tracked = Some(Box::new(t));
        }
        self
    }

    pub fn with_txn(mut self, mut txn: Box<Txn>) -> Self {
        if matches!(self.kind, Kind::Upstream(_)) {
            txn.expect_usage();
        }
        self.txn = Some(txn);
        self
    }

    /// Shows a data frame on its way out to the request's record and the
    /// tracked entries' account (bytes out, the usage report).
    fn count(&mut self, frame: &Frame<Bytes>) {
        let Some(d) = frame.data_ref() else { return };
        if let Some(t) = &mut self.txn {
            t.body(d);
        }
        if let Some(t) = &mut self.tracked {
            if t.counts_response() {
                t.response_data(d);
            }
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // Dropped with its record still open: the client went away before
        // the end of the answer.
        if let (Some(t), Kind::Upstream(u)) = (&mut self.txn, &self.kind) {
            if u.first.is_some() || !u.body.is_end_stream() {
                t.end(Termination::ClientBody);
            }
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(b) => {
                let Some(b) = b.take() else {
                    this.txn = None;
                    return Poll::Ready(None);
                };
                if let Some(t) = &mut this.txn {
                    t.body(&b);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Kind::Upstream(u) => {
                if let Some(f) = u.first.take() {
                    this.count(&f);
                    return Poll::Ready(Some(Ok(f)));
                }
                if u.failed.is_some() {
                    // A moment for the event to leave before the abort: an
                    // h2 reset drops data still queued on its stream.
                    ready!(u.deadline.as_mut().poll(cx));
                    return Poll::Ready(u.failed.take().map(Err));
                }
                let (outcome, err): (Outcome, BoxError) = match Pin::new(&mut u.body).poll_frame(cx)
                {
                    Poll::Ready(Some(Ok(f))) => {
                        u.deadline.as_mut().reset(Instant::now() + u.idle);
                        this.count(&f);
                        return Poll::Ready(Some(Ok(f)));
                    }
                    Poll::Ready(None) => {
                        // Settled before the client sees the end: a request
                        // sent after it finds its tokens and `conn_cur`
                        // counted.
                        this._server = None;
                        this.tracked = None;
                        this.txn = None;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(e))) => (Outcome::BrokenResponse, e),
                    Poll::Pending => {
                        ready!(u.deadline.as_mut().poll(cx));
                        (Outcome::Timeout, Box::new(IdleTimeout))
                    }
                };
                // Mid-body: the client sees the truncation (hyper aborts an
                // HTTP/1.1 body without its last chunk, and resets an h2
                // stream), an SSE client after an `event: error`.
                if let Some(g) = &this._server {
                    g.server().observe(outcome);
                    g.server().count_truncated();
                }
                if let Some(t) = &mut this.txn {
                    t.end(Termination::ServerBody);
                }
                if u.sse {
                    u.failed = Some(err);
                    u.deadline
                        .as_mut()
                        .reset(Instant::now() + Duration::from_millis(50));
                    let event = Bytes::from_static(super::error::stream_error_event());
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(u) => u.first.is_none() && u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(u) => {
                let first = u
                    .first
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                prefixed(first, u.body.size_hint())
            }
        }
    }
}

/// The size of a body made of `prefix` bytes already at hand and the rest
/// of a stream of size `rest`.
fn prefixed(prefix: u64, rest: SizeHint) -> SizeHint {
    let mut s = SizeHint::new();
    s.set_lower(rest.lower() + prefix);
    if let Some(u) = rest.upper() {
        s.set_upper(u + prefix);
    }
    s
}
