//! The engine's request-boundary rules in front of hyper, for the rest of a
//! connection the engine handed to the general path.
//!
//! hyper's HTTP/1 server is more lenient than the engine: it takes a bare LF
//! for a line end, goes by `Transfer-Encoding` when `Content-Length` comes
//! with it, accepts any coding list ending in `chunked`, a request without
//! `Host`, a chunk size followed by spaces and digits' worth of "extension",
//! trailers the request may not carry. Two parsers that read the same bytes
//! differently are how requests get smuggled, so hyper never gets to decide
//! where a request ends: this IO wrapper finds each request head with the
//! engine's own [`scan_head`], checks it with the engine's own
//! [`parse_request`], follows its body with the engine's [`BodyLeft`], and
//! hands hyper exactly one checked message at a time.
//!
//! A refused request never reaches hyper: in its place hyper reads a
//! stand-in request, then nothing more, and the service answers
//! the stand-in with the refusal [`Verdicts`] holds (400, 414, 431 or 501,
//! `Connection: close`), in order after the responses to the requests
//! before it. The stand-in is recognised by the refusal taken for it, not
//! by anything a client could send.
//!
//! What came with a head is checked before the head goes on, so a body
//! that is malformed from its first bytes is refused like a bad head, with
//! nothing forwarded. A body found malformed later, after its start was
//! streamed upstream, ends the connection with a read error: hyper aborts
//! the upstream request mid-body (the upstream never sees it complete) and
//! closes the client's connection.
//!
//! After a request that may switch protocols (`Upgrade`, `CONNECT`), the
//! guard waits for the service's answer: a switch lets every further byte
//! through untouched (it is a tunnel now); anything else, and the next
//! bytes are a request head again.
//!
//! The guard costs the general path a copy of what it reads; the engine's
//! own loop, the fast path, does not use it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{BodyLeft, Refusal};
use super::{
    oversized_head, parse_request, put_headers, scan_head, ClientRequest, Parsed, HEAD_MAX,
};

/// What hyper reads in place of a refused request: any valid request does;
/// the service answers it from [`Verdicts::take_refusal`] without looking.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// What hyper reads when a body turns out malformed after its start went
/// on: the service finds it among the causes of the upstream request's
/// failure, and answers 400 instead of blaming the upstream.
#[derive(Debug)]
pub struct MalformedBody(pub &'static str);

impl std::fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed request body: {}", self.0)
    }
}

impl std::error::Error for MalformedBody {}

const UNDECIDED: u8 = 0;
const SWITCHED: u8 = 1;
const STAYED: u8 = 2;

/// What the guard and the service of one connection tell each other.
#[derive(Default)]
pub struct Verdicts {
    /// Why the request hyper reads next (the stand-in) was refused.
    refusal: Mutex<Option<Refusal>>,
    /// After a request that may switch protocols: what its answer did.
    upgrade: AtomicU8,
    waker: AtomicWaker,
}

impl Verdicts {
    /// The refusal left for the request hyper just handed the service.
    /// Taken when hyper hands a request over (not when its future first
    /// runs): hyper parses a request and hands it over before it reads a
    /// byte beyond it, and the guard looks at the next head only when hyper
    /// reads beyond, so a refusal is never there for an earlier request.
    pub fn take_refusal(&self) -> Option<Refusal> {
        self.refusal.lock().ok().and_then(|mut r| r.take())
    }

    /// Whether `method`'s request, answered `status`, switched the
    /// connection to another protocol, as hyper decides it.
    pub fn switches(method: &Method, status: StatusCode) -> bool {
        if method == Method::CONNECT {
            status.is_success()
        } else {
            status == StatusCode::SWITCHING_PROTOCOLS
        }
    }

    /// The answer to a request that may switch protocols is known.
    pub fn decided(&self, switched: bool) {
        let v = if switched { SWITCHED } else { STAYED };
        self.upgrade.store(v, Ordering::Release);
        self.waker.wake();
    }

    fn refuse(&self, r: Refusal) {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(r);
        }
    }

    fn poll_decision(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.waker.register(cx.waker());
        match self.upgrade.swap(UNDECIDED, Ordering::AcqRel) {
            SWITCHED => Poll::Ready(true),
            STAYED => Poll::Ready(false),
            _ => Poll::Pending,
        }
    }
}

enum State {
    /// The next bytes start a request head.
    Head,
    /// The checked request's body is still passing.
    Body { left: BodyLeft, tunnel: bool },
    /// A request that may switch protocols went by: wait for its answer.
    AwaitUpgrade,
    /// A tunnel: everything passes.
    Through,
    /// A stand-in went out: hyper gets nothing more, and closes the
    /// connection after answering it (`Connection: close`). Not an end of
    /// stream: hyper drops a connection whose client is gone at once,
    /// answer and all.
    Refused,
    /// The end of what hyper gets (after a read error, or the client's end
    /// of stream).
    Ended,
}

pin_project_lite::pin_project! {
    /// Reads a client connection for hyper one checked message at a time.
    pub struct Guard<T> {
        #[pin]
        inner: T,
        // Read from the client, not checked yet.
        buf: BytesMut,
        // Checked, for hyper to read.
        give: Bytes,
        // Where the search for the head's end resumes in `buf`.
        searched: usize,
        state: State,
        verdicts: std::sync::Arc<Verdicts>,
    }
}

impl<T> Guard<T> {
    pub fn new(inner: T, verdicts: std::sync::Arc<Verdicts>) -> Self {
        Guard {
            inner,
            buf: BytesMut::new(),
            give: Bytes::new(),
            searched: 0,
            state: State::Head,
            verdicts,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        loop {
            if !this.give.is_empty() {
                let n = this.give.len().min(out.remaining());
                out.put_slice(&this.give.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Ended => return Poll::Ready(Ok(())),
                State::Refused => return Poll::Pending,
                State::Through => {
                    if !this.buf.is_empty() {
                        *this.give = this.buf.split().freeze();
                        continue;
                    }
                    return this.inner.as_mut().poll_read(cx, out);
                }
                State::AwaitUpgrade => {
                    *this.state = if ready!(this.verdicts.poll_decision(cx)) {
                        State::Through
                    } else {
                        State::Head
                    };
                }
                State::Head => match scan_head(this.buf, *this.searched) {
                    Err(r) => refuse(r, this.verdicts, this.buf, this.give, this.state),
                    Ok(Some(len)) => {
                        *this.searched = 0;
                        let head = this.buf.split_to(len).freeze();
                        let req = match parse_request(&head) {
                            Parsed::Request(req) => req,
                            Parsed::Refused(r) => {
                                refuse(r, this.verdicts, this.buf, this.give, this.state);
                                continue;
                            }
                        };
                        let left = BodyLeft::new(req.framing, 0);
                        // What of the body came with the head is checked
                        // before the head goes on.
                        if let Err(why) = left.clone().take(this.buf) {
                            refuse(
                                Refusal::bad(why),
                                this.verdicts,
                                this.buf,
                                this.give,
                                this.state,
                            );
                            continue;
                        }
                        *this.give = if req.normalized {
                            canonical_head(&req)
                        } else {
                            head
                        };
                        *this.state = after_body(left, req.tunnel);
                    }
                    Ok(None) => {
                        if this.buf.len() >= HEAD_MAX {
                            let r = oversized_head(this.buf);
                            refuse(r, this.verdicts, this.buf, this.give, this.state);
                            continue;
                        }
                        *this.searched = this.buf.len().saturating_sub(3);
                        if ready!(read_more(this.inner.as_mut(), cx, out, this.buf))? == 0 {
                            // The client is gone; a head it left unfinished
                            // is nobody's business.
                            *this.state = State::Ended;
                        }
                    }
                },
                State::Body { left, tunnel } => {
                    if this.buf.is_empty()
                        && ready!(read_more(this.inner.as_mut(), cx, out, this.buf))? == 0
                    {
                        // hyper sees the body end early, as the client left it.
                        *this.state = State::Ended;
                        continue;
                    }
                    match left.take(this.buf) {
                        Ok(n) => {
                            *this.give = this.buf.split_to(n).freeze();
                            if left.done() {
                                let tunnel = *tunnel;
                                *this.state = after_body(BodyLeft::Length(0), tunnel);
                            }
                        }
                        Err(why) => {
                            *this.state = State::Ended;
                            this.buf.clear();
                            let e = io::Error::new(io::ErrorKind::InvalidData, MalformedBody(why));
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }
}

/// The head hyper gets when the one received had `Content-Length` in a
/// form hyper refuses (`5, 5`) or passes on as it is (`007`): written again
/// from what the engine parsed, with the one plain length.
fn canonical_head(req: &ClientRequest) -> Bytes {
    let p = &req.parts;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(p.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(p.uri.to_string().as_bytes());
    out.extend_from_slice(if p.version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    put_headers(&mut out, &p.headers);
    out.into()
}

/// Where a checked request leaves the guard once its body (`left`) is
/// through.
fn after_body(left: BodyLeft, tunnel: bool) -> State {
    match (left.done(), tunnel) {
        (false, _) => State::Body { left, tunnel },
        (true, true) => State::AwaitUpgrade,
        (true, false) => State::Head,
    }
}

/// Leaves the refusal for the service and hyper the stand-in, then
/// nothing: no byte the client sent from the refused request on reaches
/// hyper.
fn refuse(r: Refusal, v: &Verdicts, buf: &mut BytesMut, give: &mut Bytes, state: &mut State) {
    v.refuse(r);
    *buf = BytesMut::new();
    *give = Bytes::from_static(STAND_IN);
    *state = State::Refused;
}

/// Reads more from the client into `buf`, using hyper's free buffer space
/// as the landing place (its contents are put back as they were).
fn read_more<T: AsyncRead>(
    inner: Pin<&mut T>,
    cx: &mut Context<'_>,
    scratch: &mut ReadBuf<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let before = scratch.filled().len();
    ready!(inner.poll_read(cx, scratch))?;
    let n = scratch.filled().len() - before;
    buf.extend_from_slice(&scratch.filled()[before..]);
    scratch.set_filled(before);
    Poll::Ready(Ok(n))
}

impl<T: AsyncWrite> AsyncWrite for Guard<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
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
