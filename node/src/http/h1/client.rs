//! The general path's way to a plain HTTP/1.1 server: what an HTTP/2
//! client's request (or one the engine handed to hyper) takes when its
//! server has an engine pool ([`H1Pool`]).
//!
//! The request goes out on one of the pool's connections, written here and
//! in the request's own task, as the engine does it; the response head is
//! read and parsed with the engine's rules, and the body is read straight
//! from the socket by whoever polls [`H1Body`] (hyper's h2 stream task),
//! which hands the connection back to the pool once the body has ended
//! cleanly. hyper_util's client did the same with a task per upstream
//! connection, a channel per request between the two, and a pool keyed by
//! a hashed URI, and it raced a new connect against a pooled connection
//! coming back: on HTTP/2 over TLS that client was a third of a request's
//! instructions.
//!
//! Upgrades (`CONNECT`, `Upgrade`) never come this way: hyper keeps them.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::expiry::Expiry;
use super::framing::{ChunkedScanner, Framing};
use super::response::{HeadTake, ResponseHeaders};
use super::{
    buffers, early_answer, put_chunk, put_line, put_request_line, read_response_head, send_request,
    write_upstream, Replay, UpstreamError, Wrote,
};
use crate::config::Backend;
use crate::http::body::{BoxError, ReqBody, RespBody};
use crate::http::proxy::body_error;
use crate::metrics::Txn;
use crate::runtime::Outcome;
use crate::upstream::pool::H1Pool;
use crate::upstream::retry::Failure;

/// How a request sent here failed.
pub(crate) enum SendError {
    /// The client's body broke off, came too slowly or was malformed: the
    /// answer says which, and it is never the server's fault.
    Client(Box<Response<RespBody>>),
    /// The server's failure: what its health hears, what `retry-on` calls
    /// it, and the answer the client gets if nothing takes over.
    Upstream(Outcome, Failure, Box<Response<RespBody>>),
}

impl From<UpstreamError> for SendError {
    fn from(e: UpstreamError) -> Self {
        SendError::Upstream(e.outcome(), e.failure(), Box::new(e.response()))
    }
}

/// Sends the request `head` (its method and headers, bar the body's
/// framing, which follows the body) with `uri`'s path and query to the
/// pool's server, and reads the response head by `deadline`. The head is
/// only read: a retry sends it again as it is. A request that was written
/// whole and may be sent twice is sent again on a new connection when a
/// pooled one turns out closed before any of its answer (the engine's
/// `send_request`, which also marks `Tc` on `txn`).
pub(crate) async fn send(
    pool: &Arc<H1Pool>,
    be: &Backend,
    head: &http::request::Parts,
    uri: &http::Uri,
    mut body: ReqBody,
    deadline: Instant,
    txn: &mut Txn,
) -> Result<Response<H1Body>, SendError> {
    let head_request = head.method == Method::HEAD;
    let framing = request_framing(&body);
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = buffers::take_out(1024);
    put_request_line(&mut out, &head.method, path);
    for (name, value) in &head.headers {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            put_line(&mut out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    // An HTTP/1.0 client may have sent none (hyper's client adds it too).
    if !head.headers.contains_key(header::HOST) {
        if let Some(a) = uri.authority() {
            put_line(&mut out, b"host", a.as_str().as_bytes());
        }
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            // Into a Vec: cannot fail.
            let _ = write!(out, "{n}\r\n");
        }
        Framing::Chunked => put_line(&mut out, b"transfer-encoding", b"chunked"),
        Framing::Empty if bodiless_length(&head.method, &head.headers) => {
            put_line(&mut out, b"content-length", b"0");
        }
        Framing::Empty | Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
    // A body already at hand goes out in the head's write.
    let ended = if body.is_end_stream() {
        put_frame(&mut out, None, &body, framing)?
    } else {
        match body.frame().now_or_never() {
            Some(frame) => put_frame(&mut out, frame, &body, framing)?,
            None => false,
        }
    };
    let replay = Replay::of(ended, &head.method);
    let mut expiry = Expiry::new(deadline);
    let mut rbuf = BytesMut::new();
    let (mut up, mut wrote) =
        send_request(pool, be, &out, replay, &mut expiry, &mut rbuf, txn).await?;
    if !ended && wrote == Wrote::All {
        wrote = send_body(&up, &mut body, framing, be.timeouts.server, &mut rbuf).await?;
    }
    buffers::give_back_out(out);

    let resp = read_response_head(
        &mut up,
        &mut rbuf,
        be,
        &mut expiry,
        head_request,
        HeadTake::Map,
    )
    .await?;
    let ResponseHeaders::Map(headers) = resp.headers else {
        return Err(UpstreamError::Broken.into());
    };
    let left = match resp.framing {
        Framing::Empty => Left::Done,
        Framing::Length(n) => Left::Length(n),
        Framing::Chunked => Left::Chunked(ChunkedScanner::default(), Vec::new()),
        Framing::UntilClose => Left::UntilClose,
    };
    let mut body = H1Body {
        up: Some(up),
        pool: pool.clone(),
        buf: rbuf,
        left,
        // After an early answer the server may not have read the whole
        // request: its connection is not reused.
        keep_alive: resp.keep_alive && wrote == Wrote::All,
        trailers: None,
    };
    if matches!(body.left, Left::Done) {
        body.end();
    }
    let mut r = Response::new(body);
    *r.status_mut() = resp.status;
    *r.version_mut() = Version::HTTP_11;
    *r.headers_mut() = headers;
    Ok(r)
}

/// The framing the request goes with: its length when the body's size is
/// known (HTTP/2 checked any `content-length` against its DATA), chunked
/// otherwise. The client's own framing headers are not sent.
fn request_framing(body: &ReqBody) -> Framing {
    match body.size_hint().exact() {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

/// Whether a bodiless request still says `Content-Length: 0`: where the
/// client said so, or where the method expects a body.
fn bodiless_length(method: &Method, headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH)
        || matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Appends a body frame (`None` after the last) to `out` in the request's
/// framing, and the last chunk when `body` has ended with it; `true` at the
/// body's end. Trailers are not sent (the upstream gets none from HTTP/2).
fn put_frame(
    out: &mut Vec<u8>,
    frame: Option<Result<Frame<Bytes>, BoxError>>,
    body: &ReqBody,
    framing: Framing,
) -> Result<bool, SendError> {
    let ended = match frame {
        None => true,
        Some(Err(e)) => return Err(SendError::Client(Box::new(body_error(&*e)))),
        Some(Ok(f)) => {
            if let Some(data) = f.data_ref().filter(|d| !d.is_empty()) {
                if framing == Framing::Chunked {
                    put_chunk(out, data);
                } else {
                    out.extend_from_slice(data);
                }
            }
            body.is_end_stream()
        }
    };
    if ended && framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    Ok(ended)
}

/// Streams the rest of the request body, each write within `timeout
/// server`, until its end or the server's early answer (then in `rbuf`),
/// which may come while the client is still sending.
async fn send_body(
    up: &TcpStream,
    body: &mut ReqBody,
    framing: Framing,
    server_to: Duration,
    rbuf: &mut BytesMut,
) -> Result<Wrote, SendError> {
    let mut out = Vec::new();
    loop {
        out.clear();
        // The server may answer while the client is still sending: that
        // answer does not wait for the rest of the body.
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            ready = up.readable() => {
                if ready.is_ok() && early_answer(up, rbuf) {
                    return Ok(Wrote::Answered);
                }
                continue;
            }
        };
        let ended = put_frame(&mut out, frame, body, framing)?;
        if !out.is_empty() && write_upstream(up, &out, server_to, rbuf).await? == Wrote::Answered {
            return Ok(Wrote::Answered);
        }
        if ended {
            return Ok(Wrote::All);
        }
    }
}

/// Takes the next chunk data out of `buf`, passing over the framing
/// before it and copying the trailer section's bytes to `trailers`;
/// `None` when `buf` holds no data (yet, or after the last chunk: the
/// scanner is then done).
fn dechunk(
    scanner: &mut ChunkedScanner,
    buf: &mut BytesMut,
    trailers: &mut Vec<u8>,
) -> Result<Option<Bytes>, BoxError> {
    while !buf.is_empty() && !scanner.is_done() {
        if let Some(n) = scanner.data_left() {
            let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            scanner.scan(&buf[..take]).map_err(|e| e.0)?;
            return Ok(Some(buf.split_to(take).freeze()));
        }
        let in_trailers = scanner.in_trailers();
        let used = scanner.scan_framing(buf).map_err(|e| e.0)?;
        if in_trailers {
            trailers.extend_from_slice(&buf[..used]);
        }
        buf.advance(used);
    }
    Ok(None)
}

/// The trailer fields of a chunked body (its section as received, the
/// final CRLF included; the scanner checked its syntax); `None` when it
/// has none.
fn parse_trailers(section: &[u8]) -> Option<HeaderMap> {
    let mut slots = [httparse::EMPTY_HEADER; super::MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(section, &mut slots)
    else {
        return None;
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name.as_bytes()),
            HeaderValue::from_bytes(f.value),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    (!map.is_empty()).then_some(map)
}

/// What is left of a response body.
enum Left {
    Length(u64),
    /// The scanner, and the trailer section's bytes once it starts.
    Chunked(ChunkedScanner, Vec<u8>),
    UntilClose,
    Done,
}

/// A response body read from its upstream connection as it is polled:
/// chunked framing taken off (the client's protocol frames it anew), the
/// connection back in its pool once the body has ended with nothing after
/// it, and closed if the body is dropped before its end.
pub struct H1Body {
    up: Option<TcpStream>,
    pool: Arc<H1Pool>,
    /// Read but not yet passed on; empty (and no allocation) between reads.
    buf: BytesMut,
    left: Left,
    keep_alive: bool,
    /// A chunked body's trailers, the last frame once its data is out.
    trailers: Option<Box<HeaderMap>>,
}

impl H1Body {
    /// The body is over: the connection goes back to the pool when the
    /// server keeps it open and sent nothing past the body.
    fn end(&mut self) {
        self.left = Left::Done;
        if let Some(up) = self.up.take() {
            if self.keep_alive && self.buf.is_empty() {
                self.pool.checkin(up);
            }
        }
        buffers::give_back(std::mem::take(&mut self.buf));
    }

    /// The next data in `buf`, if any, by the body's framing.
    fn take_data(&mut self) -> Result<Option<Bytes>, BoxError> {
        match &mut self.left {
            Left::Done => Ok(None),
            Left::Length(n) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let take = self
                    .buf
                    .len()
                    .min(usize::try_from(*n).unwrap_or(usize::MAX));
                *n -= take as u64;
                let data = self.buf.split_to(take).freeze();
                if *n == 0 {
                    self.end();
                }
                Ok(Some(data))
            }
            Left::UntilClose => Ok((!self.buf.is_empty()).then(|| self.buf.split().freeze())),
            Left::Chunked(scanner, section) => {
                let data = dechunk(scanner, &mut self.buf, section)?;
                if scanner.is_done() {
                    self.trailers = parse_trailers(section).map(Box::new);
                    self.end();
                }
                Ok(data)
            }
        }
    }

    /// Reads more from the upstream: `Ok(false)` at its end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(up) = self.up.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        buffers::room_to_read(&mut self.buf);
        let spare = self.buf.spare_capacity_mut();
        let mut rb = ReadBuf::uninit(spare);
        ready!(Pin::new(up).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        // SAFETY: `poll_read` initialised the first `n` spare bytes.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        if n == 0 {
            buffers::release_if_empty(&mut self.buf);
        }
        Poll::Ready(Ok(n > 0))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this.take_data() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(this.left, Left::Done) => {
                    return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) if matches!(this.left, Left::UntilClose) => {
                    this.keep_alive = false;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.up = None;
                    return Poll::Ready(Some(Err("the upstream closed mid-body".into())));
                }
                Err(e) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.left, Left::Done) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Left::Done => SizeHint::with_exact(0),
            Left::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` to the decoder `step` bytes at a time, as reads would
    /// bring it: the data it passes on, the trailer section it set aside,
    /// and whether the body ended.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, bool), BoxError> {
        let mut scanner = ChunkedScanner::default();
        let mut buf = BytesMut::new();
        let (mut data, mut section) = (Vec::new(), Vec::new());
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(d) = dechunk(&mut scanner, &mut buf, &mut section)? {
                data.extend_from_slice(&d);
            }
        }
        Ok((data, section, scanner.is_done()))
    }

    #[test]
    fn chunked_framing_is_taken_off_however_the_bytes_arrive() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\nx-two: 2\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, section, done) = decode(wire, step).expect("valid");
            assert_eq!(data, b"hello world", "step {step}");
            assert_eq!(section, b"x-trailer: t\r\nx-two: 2\r\n\r\n", "step {step}");
            assert!(done, "step {step}");
        }
        let t = parse_trailers(b"x-trailer: t\r\nx-two: 2\r\n\r\n").expect("two fields");
        assert_eq!(
            (t["x-trailer"].as_bytes(), t["x-two"].as_bytes()),
            (&b"t"[..], &b"2"[..])
        );
        // No trailer section: just the final CRLF, and no trailers frame.
        let (data, section, done) = decode(b"3\r\nabc\r\n0\r\n\r\n", 1).expect("valid");
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
        assert_eq!(parse_trailers(&section), None);
        // Unfinished: all the data so far, not yet the end.
        let (data, _, done) = decode(b"5\r\nhel", 2).expect("valid so far");
        assert_eq!((data.as_slice(), done), (&b"hel"[..], false));
    }

    #[test]
    fn broken_chunked_framing_is_an_error() {
        for wire in [&b"x\r\nhello\r\n"[..], b"5\r\nhelloXX", b"5\nhello\r\n"] {
            assert!(
                decode(wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }
}
