//! The HTTP/1.1 engine: the gateway's own request loop for the common case
//! — an HTTP/1.1 client whose request goes to a plain HTTP/1.1 upstream.
//!
//! One task per client connection does everything in order (read the head,
//! route, write the request upstream, read the response, stream it back),
//! with the upstream connection taken from the server's pool and spoken to
//! directly: no second task, no channel between client and upstream, no
//! generic body plumbing. Routing, rules and rewriting are the very same
//! functions the general path (`proxy.rs`: hyper's server, and for plain
//! HTTP/1.1 servers this engine's client, `client.rs`) uses.
//!
//! Buffers are held only while bytes are in them: a connection waiting for
//! its next request, or a stream waiting for its next event, owns none
//! (HAProxy's trick; it is what keeps an idle SSE stream at a few KiB).
//!
//! Anything else — HTTP/1.0, `Upgrade`, `Expect`, `CONNECT`, a chunked body
//! whose model must be read, a backend with TLS or h2 servers — is handed
//! to the general path *before* a byte of that request is consumed, so the
//! rest of the connection continues there unchanged. The states are in
//! LIFECYCLE.md.

mod buffers;
pub(crate) mod client;
mod expiry;
pub mod framing;
pub mod guard;
mod response;

use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use self::expiry::{Expired, Expiry};
use self::framing::{BodyLeft, ChunkedScanner, Framing, Refusal};
use self::response::{
    parse_response, put_status_line, HeadTake, ResponseHeaders, UpstreamResponse,
};
use super::body::{BodyPace, RespBody};
use super::conn::ConnInfo;
use super::{error, proxy};
use crate::balance::PickCtx;
use crate::config::{Backend, Frontend, Timeouts};
use crate::gateway::{Shared, Snapshot};
use crate::llm::model::{ModelScanner, Scan};
use crate::logs::{self, BadRequest};
use crate::metrics::{Denied, Termination, Txn};
use crate::runtime::{ActiveGuard, Outcome};
use crate::stick::Tracked;
use crate::upstream::pool::H1Pool;
use crate::upstream::queue;
use crate::upstream::retry::{self, Failure};

/// Request and response heads larger than this are refused (431 / 502).
pub(super) const HEAD_MAX: usize = 64 * 1024;
/// httparse's header slots, as many as hyper allows.
const MAX_HEADERS: usize = 100;
/// Read size for bodies and streamed responses.
const CHUNK: usize = 16 * 1024;
/// Bodies up to this size go out in the same write as their head.
const COALESCE_MAX: usize = 16 * 1024;
/// Reads more of a request body into `buf` (`received` bytes of it so
/// far), held to the body's pace: a body that stops coming is a 408.
async fn read_body<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    pace: &BodyPace,
    received: u64,
) -> Result<(), BodyFail> {
    match timeout_at(pace.next_deadline(received), io.read_buf(buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(BodyFail::Client),
        Err(_) => Err(BodyFail::TooSlow),
    }
}

/// A client connection the engine can wait on without holding a buffer.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {
    /// Resolves when a read would find something (data or the end). The
    /// default is immediate; plain TCP waits on the socket's readiness.
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl ClientIo for TcpStream {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> + Send {
        self.readable()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {}

/// Why the engine stopped serving a connection.
pub enum Served {
    /// The connection is over: closed by either side, or after an error.
    Closed,
    /// The next request needs the general path; `buf` holds all of its
    /// bytes (and whatever followed), unconsumed.
    Handoff,
}

/// What happens after one exchange.
enum Next {
    KeepAlive,
    Close,
    Handoff,
}

/// Where an exchange stands once the response head has gone out.
enum Step<'a> {
    Done(Next),
    /// The response body continues; the relay finishes it.
    Stream(BodyRelay<'a>),
}

impl From<Next> for Step<'_> {
    fn from(n: Next) -> Self {
        Step::Done(n)
    }
}

/// Serves requests from `io` until the connection ends or needs the
/// general path. `buf` starts with the first request's complete head.
pub async fn serve<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    shared: &Shared,
    conn: &ConnInfo,
    timeouts: &Timeouts,
) -> Served {
    // The connection's one timer, for every wait of every request on it.
    let mut expiry = Expiry::new(Instant::now());
    loop {
        let mut started = None;
        let head_len = match read_head(io, buf, timeouts, &mut started, &mut expiry).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                // A request begun and abandoned is logged; an idle
                // keep-alive connection closing is not (as in HAProxy).
                if !buf.is_empty() {
                    log_unread(shared, conn, started, None);
                }
                return Served::Closed;
            }
            Err(r) => {
                // The answer is made in the call: kept only inside the
                // write's future, not beside it in the connection's.
                log_unread(shared, conn, started, Some(r.status));
                let _ = write_local(io, refusal_response(r), true, timeouts.client).await;
                return Served::Closed;
            }
        };
        let started = started.unwrap_or_else(Instant::now).into_std();
        let snap = conn.snapshot(shared);
        let Some(fe) = snap.frontend(&conn.frontend) else {
            // The listener outlived its frontend; the general path answers.
            return Served::Handoff;
        };
        // The exchange's state up to the response head is large and short-
        // lived, so it is boxed; only the small body relay below stays in the
        // connection's task for as long as a stream lasts. The box is made
        // first and the future written into it: `Box::pin(exchange(..))`
        // builds the future on the stack and copies all of it (2.5 KiB, most
        // of it not yet in use) into the box, on every request.
        let slot = Box::new_uninit();
        let exchange = Box::write(
            slot,
            exchange(io, buf, head_len, started, &snap, fe, conn, &mut expiry),
        );
        let next = match Box::into_pin(exchange).await {
            Step::Done(next) => next,
            Step::Stream(body) => body.run(io, &mut expiry).await,
        };
        match next {
            // Nothing pipelined: the buffer goes while the connection idles.
            Next::KeepAlive => buffers::release_if_empty(buf),
            Next::Close => return Served::Closed,
            Next::Handoff => return Served::Handoff,
        }
    }
}

/// Logs a request head that never came whole: abandoned (`answer` none)
/// or answered with an error. Not async, so that what it needs is not kept
/// in the connection's future (whose size every open connection pays).
fn log_unread(
    shared: &Shared,
    conn: &ConnInfo,
    started: Option<Instant>,
    answer: Option<StatusCode>,
) {
    let how = match answer {
        None => BadRequest::ClosedPartial,
        Some(StatusCode::REQUEST_TIMEOUT) => BadRequest::TimedOutPartial,
        Some(s) => BadRequest::Invalid(s.as_u16()),
    };
    let since = started.unwrap_or_else(Instant::now).into_std();
    logs::bad_request(&shared.current.load(), conn, since, how);
}

/// Reads until `buf` holds a complete request head and returns its length.
/// `Ok(None)`: the client closed, or kept the connection idle past
/// `timeout http-keep-alive`, between requests (or, with bytes left in
/// `buf`, mid-head). `started` is set when the request's first byte is
/// there.
async fn read_head<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    t: &Timeouts,
    started: &mut Option<Instant>,
    expiry: &mut Expiry,
) -> Result<Option<usize>, Refusal> {
    let mut searched = 0;
    // `timeout http-request` runs from the request's first byte. Bytes
    // already buffered (pipelined behind the previous request) mean this
    // request has started: it gets `http-request` (then a 408), not the
    // keep-alive timeout, which only covers waiting for a first byte.
    // One clock read for both: when the request began, and its deadline.
    let mut deadline = (!buf.is_empty()).then(|| {
        let now = Instant::now();
        *started = Some(now);
        now + t.http_request
    });
    loop {
        match scan_head(buf, searched) {
            Ok(Some(end)) => return Ok(Some(end)),
            Ok(None) => {}
            Err(r) => return Err(r),
        }
        if buf.len() >= HEAD_MAX {
            return Err(oversized_head(buf));
        }
        searched = buf.len().saturating_sub(3);
        let read = async {
            if buf.is_empty() {
                io.wait_readable().await?;
            }
            buffers::room_to_read(buf);
            io.read_buf(buf).await
        };
        expiry.set(match deadline {
            // `timeout http-request` runs from the request's first byte.
            Some(d) => d,
            None => Instant::now() + t.http_keep_alive,
        });
        match expiry.within(read).await {
            Err(Expired) if deadline.is_none() => return Ok(None),
            Err(Expired) => {
                return Err(Refusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    why: "the request was not received in time",
                })
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(_)) => {
                deadline.get_or_insert_with(|| {
                    let now = Instant::now();
                    *started = Some(now);
                    now + t.http_request
                });
            }
        }
    }
}

fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    // Built once: constructing a searcher costs more than a short search.
    static END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    END.find(&buf[from..]).map(|i| from + i + 4)
}

/// Where a request head ends (through its CRLFCRLF), searching from
/// `from` (at most 3 bytes before where the last search stopped).
/// `Ok(None)`: not yet. Every line must end in CRLF: a bare LF is refused
/// as soon as it is seen. RFC 9112 §2.2 lets a recipient take LF alone
/// for a line end, but a parser that does and one that does not see
/// different headers (or a different end of the head) in the same bytes.
/// This replaces a search for CRLFCRLF and costs about the same: one
/// vectorised search for LF, and a look at the bytes around each one.
pub(super) fn scan_head(buf: &[u8], from: usize) -> Result<Option<usize>, Refusal> {
    for i in memchr::memchr_iter(b'\n', &buf[from..]) {
        let i = from + i;
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(Refusal::bad("bare LF line ending"));
        }
        if buf.get(i + 1..i + 3) == Some(b"\r\n") {
            return Ok(Some(i + 3));
        }
    }
    Ok(None)
}

/// A head that reached the size limit without ending: 414 while still in
/// its request line (no line end yet), 431 once in its headers, as
/// HAProxy and hyper answer.
pub(super) fn oversized_head(buf: &[u8]) -> Refusal {
    if memchr::memchr(b'\n', buf).is_none() {
        Refusal {
            status: StatusCode::URI_TOO_LONG,
            why: "request line too long",
        }
    } else {
        too_many_headers()
    }
}

fn too_many_headers() -> Refusal {
    Refusal {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        why: "headers too large",
    }
}

/// The answer to a refused request (the connection closes after it).
pub(crate) fn refusal_response(r: Refusal) -> Response<RespBody> {
    match r.status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => error::error_response(
            r.status,
            "headers_too_large",
            "The request headers are too large.",
        ),
        StatusCode::REQUEST_TIMEOUT => error::error_response(
            r.status,
            "request_timeout",
            "The request was not received in time.",
        ),
        StatusCode::URI_TOO_LONG => {
            error::error_response(r.status, "uri_too_long", "The request target is too long.")
        }
        StatusCode::NOT_IMPLEMENTED => error::error_response(
            r.status,
            "not_implemented",
            &format!("The request cannot be served: {}.", r.why),
        ),
        _ => error::bad_request(&format!("The request is not valid HTTP: {}.", r.why)),
    }
}

/// One request, up to its response head (and whatever of the body came
/// with it).
#[allow(clippy::too_many_arguments)]
async fn exchange<'a, IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    head_len: usize,
    started: std::time::Instant,
    snap: &'a Snapshot,
    fe: &'a Frontend,
    conn: &ConnInfo,
    expiry: &mut Expiry,
) -> Step<'a> {
    let head = buf.split_to(head_len).freeze();
    let client_to = fe.timeouts.client;
    let pace = BodyPace::new(&fe.timeouts);
    // Taken apart in the match: the parsed request is not kept whole
    // beside its parts in the exchange's future.
    let (mut parts, framing, close) = match parse_request(&head) {
        Parsed::Request(r) if r.handoff => return handoff(buf, &head, &Bytes::new()).into(),
        Parsed::Request(ClientRequest {
            parts,
            framing,
            close,
            ..
        }) => (parts, framing, close),
        Parsed::Refused(r) => {
            logs::bad_request(snap, conn, started, BadRequest::Invalid(r.status.as_u16()));
            let _ = write_local(io, refusal_response(r), true, client_to).await;
            return Next::Close.into();
        }
    };
    // A draining listener closes the connection after this response:
    // the client knows, and sends its next request elsewhere.
    let close = close || conn.closing();
    let request_id = proxy::request_id(fe, &parts.headers);
    let needs_model = fe.needs_model();
    let Some(stats) = snap.frontend_stats(&conn.frontend) else {
        return Next::Close.into();
    };
    // The request's record; a request handed to the general path is
    // recorded there instead. Boxed from the start: it goes on into the
    // body relay, and moving 256 bytes through each state is not free.
    let mut txn = Box::new(Txn::new(stats));
    if let Framing::Length(n) = framing {
        txn.bytes_in(n);
    }
    logs::begin(&mut txn, snap, fe.log, conn, (&parts).into(), started);
    txn.log_head_in(head.len() as u64);
    txn.log_request_id(request_id.as_ref());

    // The body read so far to find the model (kept as received, for a
    // handoff) and what goes upstream in its place (an alias rewritten).
    let mut read = Bytes::new();
    let mut send = Bytes::new();
    let mut model_name = None;
    let bodiless = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    );
    if needs_model && framing != Framing::Empty && !bodiless {
        let Framing::Length(total) = framing else {
            txn.discard();
            return handoff(buf, &head, &read).into();
        };
        let found = match scan_model(io, buf, total, fe, &pace).await {
            Ok(found) => found,
            Err(Some(resp)) => return answer(io, fe, resp, request_id, true, txn).await.into(),
            Err(None) => return Next::Close.into(),
        };
        let scanned = buf.len().min(usize::try_from(total).unwrap_or(usize::MAX));
        read = buf.split_to(scanned).freeze();
        send = read.clone();
        if let Some(range) = found {
            match proxy::resolve_model(fe, &mut parts, read.clone(), range) {
                Ok((bytes, name)) => {
                    send = bytes;
                    model_name = Some(name);
                }
                Err(resp) => {
                    let done = framing_consumed(framing, read.len(), buf);
                    return answer(io, fe, *resp, request_id, close || !done, txn)
                        .await
                        .into();
                }
            }
        }
    }

    if snap.tracking_needs_general_path {
        txn.discard();
        return handoff(buf, &head, &read).into();
    }
    let mut tracked = Tracked::for_request(conn.tracked.as_ref());
    let bi = match proxy::choose_backend(
        snap,
        fe,
        conn,
        &mut parts,
        proxy::Content {
            model: model_name.as_deref(),
            needs_model,
            body: None,
        },
        &mut tracked,
        Some(&mut txn),
    ) {
        Ok(bi) => bi,
        Err(resp) => {
            tracked.answered(resp.status().as_u16());
            let done = framing_consumed(framing, read.len(), buf);
            return answer(io, fe, *resp, request_id, close || !done, txn)
                .await
                .into();
        }
    };
    let brt = &snap.backends[bi];
    if !brt.h1_only {
        txn.discard();
        return handoff(buf, &head, &read).into();
    }
    let be = &snap.config.backends[bi];
    let ctx = PickCtx {
        src: conn.client.ip(),
        path: parts.uri.path(),
        headers: &parts.headers,
    };
    txn.model(model_name.as_deref());
    txn.backend(&brt.stats);
    let mut si = match queue::pick(brt, &ctx).await {
        Ok((si, waited)) => {
            txn.queued(waited);
            si
        }
        Err(no) => {
            txn.end(Termination::Queue);
            let resp = no.response(&be.name);
            let done = framing_consumed(framing, read.len(), buf);
            return answer_tracked(io, fe, &mut tracked, resp, request_id, close || !done, txn)
                .await
                .into();
        }
    };

    // Read before the rewrite strips the hop-by-hop header.
    let codings = (framing == Framing::Chunked).then(|| forwarded_codings(&parts.headers));
    proxy::rewrite_request(fe, be, conn, &mut parts, request_id.as_ref(), false);
    let path = match proxy::upstream_path(be, &parts.uri) {
        Ok(p) => p,
        Err(_) => {
            let resp = error::bad_request("The request target cannot be forwarded.");
            let done = framing_consumed(framing, read.len(), buf);
            return answer_tracked(io, fe, &mut tracked, resp, request_id, close || !done, txn)
                .await
                .into();
        }
    };
    if let Some(te) = codings {
        // Forwarded as received: the framing header goes with it.
        parts.headers.insert(header::TRANSFER_ENCODING, te);
    }

    // With retries on, a body of known length up to `body_limit` is read
    // whole before anything goes upstream (HAProxy's `option
    // http-buffer-request`), so an attempt that fails later can be sent
    // again: most clients write the body after the head, in its own packet.
    let policy = brt.retry;
    if policy.enabled() {
        if let Framing::Length(total) = framing {
            let need = usize::try_from(total)
                .unwrap_or(usize::MAX)
                .saturating_sub(read.len());
            if need <= fe.body_limit {
                while buf.len() < need {
                    buf.reserve(need - buf.len());
                    let received = (read.len() + buf.len()) as u64;
                    if let Err(fail) = read_body(io, buf, &pace, received).await {
                        return answer_body_failure(
                            io,
                            fe,
                            &mut tracked,
                            fail,
                            None,
                            request_id,
                            txn,
                        )
                        .await
                        .into();
                    }
                }
            }
        }
    }

    // The request head, the body's first part and whatever of the rest is
    // already buffered go out in one write.
    let mut out = buffers::take_out(512 + send.len());
    put_request_head(&mut out, &parts.method, path.as_str(), &parts.headers);
    let mut body = BodyLeft::new(framing, read.len() as u64);
    out.extend_from_slice(&send);
    let from_buf = match body.take(buf) {
        Ok(n) => n,
        Err(why) => {
            let resp = error::bad_request(&format!("The request body is malformed: {why}."));
            return answer_tracked(io, fe, &mut tracked, resp, request_id, true, txn)
                .await
                .into();
        }
    };
    out.extend_from_slice(&buf[..from_buf]);
    buf.advance(from_buf);
    // Replaying a request the server may have seen is only safe when the
    // method says so (RFC 9110 §9.2.2): a completion must not run twice.
    // That is the stale pooled connection's resend ([`Replay`]; after a
    // pooled connection's `408`, any method goes again); a retry that `retry-on`
    // asks for is the operator's call, as in HAProxy (any method), and
    // needs only the whole body at hand: `out` holds it when `body.done()`
    // (at most the head plus what the model scan read, bounded by
    // `body_limit`, and what arrived with the head).
    let replay = Replay::of(body.done(), &parts.method);
    let retryable = body.done() && policy.enabled();
    let head_to = be
        .timeouts
        .ttft
        .map_or(be.timeouts.server, |t| t.min(be.timeouts.server));
    let head_request = parts.method == Method::HEAD;
    // The response head is held until the first byte of its body when a
    // failure before that byte can still be retried, or the TTFT deadline
    // applies: an LLM stream's head comes at once, its first token later.
    let hold_head = (retryable && policy.after_head()) || be.timeouts.ttft.is_some();

    let mut tried: Vec<usize> = Vec::new();
    let mut attempt = 0u32;
    let take = HeadTake::for_exchange(fe, be, request_id.is_some());
    let (up, pool, active, mut rbuf, mut resp, wrote) = loop {
        attempt += 1;
        let Some(pool) = brt.upstreams[si].h1.as_ref() else {
            return answer_tracked(
                io,
                fe,
                &mut tracked,
                error::no_server(&be.name),
                request_id,
                true,
                txn,
            )
            .await
            .into();
        };
        // Counts the request on the server until its response body is over
        // (it moves into the body relay), and hears how the request went.
        let active = brt.balancer.server(si).begin();
        txn.server(active.server());
        expiry.set(Instant::now() + head_to);
        let mut rbuf = BytesMut::new();
        let failed = match send_request(pool, be, &out, replay, expiry, &mut rbuf, &mut txn).await {
            Err(e) => e,
            Ok((mut up, mut wrote)) => {
                if !body.done() && wrote == Wrote::All {
                    let received = (send.len() + from_buf) as u64;
                    let streamed = stream_request_body(
                        io, &up, buf, &mut body, &pace, received, be, &mut rbuf,
                    )
                    .await;
                    wrote = match streamed {
                        Ok(w) => w,
                        Err(fail) => {
                            let server = Some(active.server().as_ref());
                            return answer_body_failure(
                                io,
                                fe,
                                &mut tracked,
                                fail,
                                server,
                                request_id,
                                txn,
                            )
                            .await
                            .into();
                        }
                    };
                }
                match read_response_head(&mut up, &mut rbuf, be, expiry, head_request, take).await {
                    Ok(resp) => {
                        let status = resp.status.as_u16();
                        if retryable
                            && policy.on_status(status)
                            && policy.allows(Failure::Status(status), attempt)
                        {
                            active.server().observe(resp.outcome);
                            // Retried: this answer is dropped unread, and so
                            // is its connection.
                            UpstreamError::Status(status)
                        } else {
                            match first_body_byte(
                                &mut up,
                                &mut rbuf,
                                resp.framing,
                                hold_head,
                                expiry,
                            )
                            .await
                            {
                                Ok(()) => {
                                    active.server().observe(resp.outcome);
                                    break (up, pool, active, rbuf, resp, wrote);
                                }
                                Err(e) => e,
                            }
                        }
                    }
                    Err(e) => e,
                }
            }
        };
        if !matches!(failed, UpstreamError::Status(_)) {
            active.server().observe(failed.outcome());
        }
        // A connection that could not be made took nothing of the body:
        // what is not in `out` is still with the client.
        let untouched = matches!(
            failed,
            UpstreamError::Connect | UpstreamError::ConnectTimeout
        );
        if !((retryable || (untouched && policy.enabled()))
            && policy.allows(failed.failure(), attempt))
        {
            // The server no longer counts this request (`%sc` in its log
            // line, as in HAProxy).
            drop(active);
            txn.end(failed.failure().termination());
            return answer_tracked(
                io,
                fe,
                &mut tracked,
                failed.response(),
                request_id,
                true,
                txn,
            )
            .await
            .into();
        }
        tried.push(si);
        let ctx = PickCtx {
            src: conn.client.ip(),
            path: parts.uri.path(),
            headers: &parts.headers,
        };
        let next = retry::next_server(&policy, &brt.balancer, &ctx, &tried, si);
        active.server().count_retry(next != si);
        txn.retried();
        tracing::debug!(backend = %be.name, attempt, error = ?failed, "retrying");
        si = next;
    };

    // What the request held is not needed while the response streams (an
    // SSE stream may last minutes): the head's buffer, the body read aside,
    // and the client read buffer unless it holds a pipelined request.
    drop((parts, path, head, read, send, tried));
    buffers::give_back_out(out);
    buffers::release_if_empty(buf);
    tracked.answered(resp.status.as_u16());
    let tracked = (!tracked.is_empty()).then(|| Box::new(tracked));
    txn.server_head(resp.status.as_u16());
    txn.expect_usage();
    // After an early answer the server may not have read the whole
    // request, so its connection is not reused; nor is the client's when
    // part of its body was never read.
    let close = if wrote == Wrote::Answered {
        resp.keep_alive = false;
        close || !body.done()
    } else {
        close
    };
    let Some(start) = start_response(
        up, pool, active, &mut rbuf, resp, be, fe, request_id, close, tracked, txn,
    ) else {
        return Next::Close.into();
    };
    relay_response(io, start).await
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Puts a request's bytes back in front of `buf` for the general path.
fn handoff(buf: &mut BytesMut, head: &Bytes, read: &Bytes) -> Next {
    let mut all = BytesMut::with_capacity(head.len() + read.len() + buf.len());
    all.extend_from_slice(head);
    all.extend_from_slice(read);
    all.extend_from_slice(buf);
    *buf = all;
    Next::Handoff
}

/// Whether the whole request body has been read (`read` bytes of it aside
/// in a model scan, the rest at the front of `buf`); if so, the buffered
/// part is dropped so the connection can go on to the next request.
fn framing_consumed(framing: Framing, read: usize, buf: &mut BytesMut) -> bool {
    let mut left = BodyLeft::new(framing, read as u64);
    match left.take(buf) {
        Ok(n) if left.done() => {
            buf.advance(n);
            true
        }
        _ => false,
    }
}

/// A parsed request head.
// The large variant is the common one; boxing it would cost an allocation
// per request.
#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed {
    Request(ClientRequest),
    Refused(Refusal),
}

pub(super) struct ClientRequest {
    pub(super) parts: Parts,
    pub(super) framing: Framing,
    /// The client asked to close after this exchange.
    pub(super) close: bool,
    /// Valid, but for the general path: HTTP/1.0, `Upgrade`, `Expect`,
    /// `CONNECT`.
    pub(super) handoff: bool,
    /// The connection may stop being HTTP after this request, if the
    /// answer says so (`Upgrade`: a 101; `CONNECT`: a 2xx).
    pub(super) tunnel: bool,
    /// `Content-Length` was rewritten to one plain number: the head as
    /// received is not the head to forward.
    pub(super) normalized: bool,
}

/// Parses and checks a complete request head, as [`scan_head`] found it
/// (every line ending in CRLF). Names and values are slices of `head`,
/// not copies. Beyond what httparse refuses (obs-fold, whitespace before
/// the first header or the colon, CTLs and bare CR in values, a request
/// line that is not `method SP target SP version`), this refuses what
/// RFC 9112 tells a server to (a missing, repeated or invalid `Host`; a
/// request target in a form its method does not take) and what parsers
/// behind a proxy are known to read differently (a fragment or non-ASCII
/// byte in the target, an absolute-form target whose host is not the
/// `Host` header's, as HAProxy does), then the framing
/// ([`framing::request`]). Every check rides on the one pass over the
/// headers; nothing is allocated beyond the header map.
pub(super) fn parse_request(head: &Bytes) -> Parsed {
    let refused = |why| Parsed::Refused(Refusal::bad(why));
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut slots);
    match r.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        // httparse ends a head at a bare LF too.
        Ok(httparse::Status::Complete(_)) => return refused("bare LF line ending"),
        Ok(httparse::Status::Partial) => return refused("incomplete head"),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(too_many_headers()),
        Err(_) => return refused("malformed head"),
    }
    let (Some(method), Some(target), Some(version)) = (r.method, r.path, r.version) else {
        return refused("malformed request line");
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return refused("invalid method");
    };
    // httparse lets any visible byte and obs-text through; a target has
    // no fragment and no byte outside ASCII (RFC 9112 §3.2, RFC 3986).
    if target.bytes().any(|b| b == b'#' || !b.is_ascii()) {
        return refused("invalid request target");
    }
    let Ok(uri) = Uri::from_maybe_shared(head.slice_ref(target.as_bytes())) else {
        return refused("invalid request target");
    };
    // Authority-form is CONNECT's alone, asterisk-form OPTIONS's
    // (RFC 9112 §3.2.3, §3.2.4).
    let connect = method == Method::CONNECT;
    if connect != (uri.scheme().is_none() && uri.authority().is_some())
        || (target == "*" && method != Method::OPTIONS)
    {
        return refused("request target form does not fit the method");
    }
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    let mut hosts = 0;
    let mut host: &[u8] = b"";
    for h in r.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return refused("invalid header name");
        };
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice_ref(h.value)) else {
            return refused("invalid header value");
        };
        if name == header::HOST {
            hosts += 1;
            host = h.value;
        }
        headers.append(name, value);
    }
    // RFC 9112 §3.2: a 400 for an HTTP/1.1 request without `Host`, with
    // more than one, or with an invalid one.
    let http10 = version == 0;
    match hosts {
        0 if !http10 => return refused("missing Host header"),
        0 => {}
        1 if !valid_host(host) => return refused("invalid Host header"),
        1 => {
            if let Some(a) = uri.authority() {
                if !same_authority(uri.scheme_str(), a.as_str().as_bytes(), host) {
                    return refused("request target and Host header disagree");
                }
            }
        }
        _ => return refused("more than one Host header"),
    }
    let framing = match framing::request(&headers, http10) {
        Ok(f) => f,
        Err(e) => return Parsed::Refused(e),
    };
    let mut normalized = false;
    if let Framing::Length(n) = framing {
        // Agreeing values may come as a list or a repeated header
        // (`5, 5`), or with leading zeros (`007`, which a parser reading
        // C-style numbers takes for octal): forward the one length the
        // framing found, so the alias rewrite (which parses the header)
        // and every parser behind see a single plain number. The usual
        // single value is left as it is.
        let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
        let plain = |v: &[u8]| !v.contains(&b',') && (v.len() == 1 || v.first() != Some(&b'0'));
        let single = values.next().is_some_and(|v| plain(v.as_bytes())) && values.next().is_none();
        if !single {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            normalized = true;
        }
    }
    let upgrade = headers.contains_key(header::UPGRADE);
    let handoff = http10 || connect || upgrade || headers.contains_key(header::EXPECT);
    let close = has_token(&headers, "close");
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    Parsed::Request(ClientRequest {
        parts,
        framing,
        close,
        handoff,
        tunnel: connect || upgrade,
        normalized,
    })
}

/// A `Host` value (RFC 9110 §7.2: `uri-host [ ":" port ]`): only the
/// characters of a host, an IP literal and a port. Empty is valid (a
/// target without authority).
fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|&b| HOST_BYTE[usize::from(b)])
}

/// The bytes a `Host` value may hold (RFC 3986 reg-name, IP literals and a
/// port), as a table: this runs on every request.
const HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~%!$&'()*+,;=:[]";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// An absolute-form target's authority and the `Host` header name the same
/// host and port, a port left out being the scheme's default (HAProxy's
/// rule; RFC 9112 §3.2.2 has an origin server go by the target, but the
/// upstream here gets the `Host` header, so the two must agree).
fn same_authority(scheme: Option<&str>, authority: &[u8], host: &[u8]) -> bool {
    if authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let default: &[u8] = match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") => b"80",
        Some(s) if s.eq_ignore_ascii_case("https") => b"443",
        _ => b"",
    };
    let (ah, ap) = split_port(authority);
    let (hh, hp) = split_port(host);
    ah.eq_ignore_ascii_case(hh)
        && match (ap, hp) {
            (Some(a), Some(h)) => a == h,
            (Some(p), None) | (None, Some(p)) => !default.is_empty() && p == default,
            (None, None) => true,
        }
}

/// `host[:port]` split at the port's colon (not one inside an IPv6
/// literal's brackets).
fn split_port(a: &[u8]) -> (&[u8], Option<&[u8]>) {
    match a.iter().rposition(|&b| b == b':') {
        Some(i) if !a[i..].contains(&b']') => (&a[..i], Some(&a[i + 1..])),
        _ => (a, None),
    }
}

fn has_token(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The `Transfer-Encoding` for a body relayed with its bytes unchanged: the
/// codings it came with other than `chunked` (`gzip, chunked` must stay that,
/// or the next hop takes gzip bytes for plain ones), then `chunked` once:
/// the one chunk layer the engine follows, or adds itself to a
/// close-delimited response.
fn forwarded_codings(h: &HeaderMap) -> HeaderValue {
    let chunked = HeaderValue::from_static("chunked");
    let mut out = Vec::new();
    for v in h.get_all(header::TRANSFER_ENCODING) {
        for c in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if !c.is_empty() && !c.eq_ignore_ascii_case(b"chunked") {
                out.extend_from_slice(c);
                out.extend_from_slice(b", ");
            }
        }
    }
    if out.is_empty() {
        return chunked;
    }
    out.extend_from_slice(b"chunked");
    HeaderValue::from_bytes(&out).unwrap_or(chunked)
}

/// Reads a `total`-byte body into `buf` until its `model` is found (or the
/// body is over). `Err(None)`: the client went away.
async fn scan_model<IO: ClientIo>(
    io: &mut IO,
    buf: &mut BytesMut,
    total: u64,
    fe: &Frontend,
    pace: &BodyPace,
) -> Result<Option<Range<usize>>, Option<Response<RespBody>>> {
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let mut scanner = ModelScanner::default();
    loop {
        // Never look further than `body_limit`, however much has arrived.
        let avail = buf.len().min(total).min(fe.body_limit);
        match scanner.scan(&buf[..avail]) {
            Scan::Found(r) => return Ok(Some(r)),
            Scan::Absent => return Ok(None),
            Scan::Pending if avail == total => return Ok(None),
            Scan::Pending => {}
        }
        if avail == fe.body_limit {
            return Err(Some(error::too_large(fe.body_limit)));
        }
        buf.reserve(CHUNK);
        match read_body(io, buf, pace, buf.len() as u64).await {
            Ok(()) => {}
            Err(BodyFail::TooSlow) => return Err(Some(proxy::body_too_slow())),
            Err(_) => return Err(None),
        }
    }
}

fn put_request_head(out: &mut Vec<u8>, method: &Method, path: &str, headers: &HeaderMap) {
    put_request_line(out, method, path);
    put_headers(out, headers);
}

fn put_request_line(out: &mut Vec<u8>, method: &Method, path: &str) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        put_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// `data` as one chunk of a chunked body (not empty: that is the last).
fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn put_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How talking to the upstream failed.
#[derive(Debug)]
enum UpstreamError {
    ConnectTimeout,
    Connect,
    /// No response head within `timeout server` (or `timeout ttft`), or
    /// no first body byte by then when the head is held for it.
    Timeout,
    /// Closed or broke before the first byte of a response (or of its
    /// body, when the head is held for it).
    Empty,
    /// Closed or broke inside the response head, or an invalid one.
    Broken,
    /// A response whose status `retry-on` names (only while retrying).
    Status(u16),
}

impl UpstreamError {
    /// What passive health observation (`observe layer4|layer7`) hears.
    fn outcome(&self) -> Outcome {
        match self {
            UpstreamError::ConnectTimeout | UpstreamError::Connect => Outcome::ConnectFailed,
            UpstreamError::Timeout => Outcome::Timeout,
            UpstreamError::Empty | UpstreamError::Broken => Outcome::BrokenResponse,
            // Observed from the response itself.
            UpstreamError::Status(_) => Outcome::Ok,
        }
    }

    /// What `retry-on` calls it.
    fn failure(&self) -> Failure {
        match self {
            UpstreamError::ConnectTimeout | UpstreamError::Connect => Failure::ConnFailure,
            UpstreamError::Timeout => Failure::ResponseTimeout,
            UpstreamError::Empty => Failure::EmptyResponse,
            UpstreamError::Broken => Failure::JunkResponse,
            UpstreamError::Status(s) => Failure::Status(*s),
        }
    }

    fn response(&self) -> Response<RespBody> {
        match self {
            UpstreamError::ConnectTimeout => {
                error::gateway_timeout("Connecting to the upstream timed out.")
            }
            UpstreamError::Connect => error::bad_gateway("The upstream could not be reached."),
            UpstreamError::Timeout => {
                error::gateway_timeout("The upstream did not answer in time.")
            }
            UpstreamError::Empty | UpstreamError::Broken => {
                error::bad_gateway("The upstream connection failed before a complete response.")
            }
            UpstreamError::Status(s) => error::error_response(
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY),
                "upstream_error",
                "The upstream failed on every attempt.",
            ),
        }
    }
}

/// How a write to the upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    /// All of it went out.
    All,
    /// The server answered before it took all of it: what it sent is in
    /// the read buffer, and the rest of the request is not sent. Servers
    /// do this to refuse a request by its head (a `413` before a large
    /// body, a `401` before any): they either stop reading, leaving the
    /// write blocked, or close, which resets the connection and fails
    /// the write. The answer is read and forwarded as any other (HAProxy
    /// does the same); the connection is not reused after it.
    Answered,
}

/// Writes `data` to the upstream within `limit` (`timeout server`),
/// watching for an early answer while the write is blocked and after it
/// failed (see [`Wrote::Answered`]). An interim `1xx` answer is taken off
/// `rbuf` and the write goes on.
async fn write_upstream(
    up: &TcpStream,
    data: &[u8],
    limit: Duration,
    rbuf: &mut BytesMut,
) -> Result<Wrote, UpstreamError> {
    let write = async {
        let mut rest = data;
        while !rest.is_empty() {
            match up.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        biased;
                        ready = up.writable() => {
                            ready.map_err(|_| UpstreamError::Broken)?;
                        }
                        ready = up.readable() => {
                            if ready.is_ok() && early_answer(up, rbuf) {
                                return Ok(Wrote::Answered);
                            }
                        }
                    }
                }
                Err(_) => {
                    return if last_words(up, rbuf).await {
                        Ok(Wrote::Answered)
                    } else {
                        Err(UpstreamError::Broken)
                    };
                }
            }
        }
        Ok(Wrote::All)
    };
    soon(limit, write)
        .await
        .unwrap_or(Err(UpstreamError::Timeout))
}

/// Reads what the server has sent, without waiting, and passes over
/// interim `1xx` answers; `true` when what is left is the start of its
/// final answer: a whole head, or what came before it closed. Readiness
/// can be stale: a read that would block clears it and says `false`.
pub(super) fn early_answer(up: &TcpStream, rbuf: &mut BytesMut) -> bool {
    buffers::room_to_read(rbuf);
    let ended = match up.try_read_buf(rbuf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    skip_interim(rbuf);
    !rbuf.is_empty() && (ended || head_end(rbuf, 0).is_some())
}

/// After a failed write: reads what the server sent before the connection
/// ended (a reset leaves it readable), up to the end of a final head or of
/// the stream; `true` when there is any. The reactor may not have seen the
/// end yet, so this waits for readiness: a dead connection is readable at
/// once.
async fn last_words(up: &TcpStream, rbuf: &mut BytesMut) -> bool {
    loop {
        if up.readable().await.is_err() {
            break;
        }
        buffers::room_to_read(rbuf);
        match up.try_read_buf(rbuf) {
            Ok(0) => break,
            Ok(_) => {
                skip_interim(rbuf);
                if head_end(rbuf, 0).is_some() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    !rbuf.is_empty()
}

/// Takes the whole interim answers off the start of `rbuf`.
fn skip_interim(rbuf: &mut BytesMut) {
    while let Some(n) = interim_len(rbuf) {
        rbuf.advance(n);
    }
}

/// The length of the interim (`1xx` other than `101`) response head at the
/// start of `buf`, when it holds a whole one.
fn interim_len(buf: &[u8]) -> Option<usize> {
    let n = head_end(buf, 0)?;
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut slots);
    match r.parse(&buf[..n]) {
        Ok(httparse::Status::Complete(_)) => {
            let code = r.code?;
            ((100..200).contains(&code) && code != 101).then_some(n)
        }
        _ => None,
    }
}

/// How much of a request the bytes handed to [`send_request`] hold, and so
/// when they may go again on a new connection after a pooled one fails
/// them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Replay {
    /// The whole of an idempotent request (RFC 9110 §9.2.2): again when a
    /// pooled connection closes before any answer, or answers `408`.
    Safe,
    /// The whole of a request that must not run twice (a completion):
    /// again only when a pooled connection answers `408`, which says the
    /// server did not act on it.
    After408,
    /// A head, and the start of a body that follows: again only when a
    /// pooled connection's `408` comes while they are being written.
    WhileWriting,
}

impl Replay {
    pub(super) fn of(whole: bool, method: &Method) -> Replay {
        match (whole, is_idempotent(method)) {
            (true, true) => Replay::Safe,
            (true, false) => Replay::After408,
            (false, _) => Replay::WhileWriting,
        }
    }
}

/// Writes `out` to a pooled connection (or a new one) and, where that may
/// lead to sending it again ([`Replay`]), waits for the first bytes of the
/// answer. (A pooled connection the server closed before this never gets
/// this far: the pool sees its EOF.) A server that answers before taking
/// all of `out` ([`Wrote::Answered`]) has its answer read as usual.
///
/// A `408` as the first thing a pooled connection says is taken for that
/// connection's close, not for the request's answer: the server timed the
/// idle connection out as the request went in, and did not act on it (RFC
/// 9110 §15.5.9 lets a client repeat such a request). Nothing past `out`
/// has been sent, so `out` goes again on a new connection, whatever the
/// method. A `408` on a new connection is the server's answer and is
/// passed on, as is one that comes after the start of a streamed body.
async fn send_request(
    pool: &H1Pool,
    be: &Backend,
    out: &[u8],
    replay: Replay,
    expiry: &mut Expiry,
    rbuf: &mut BytesMut,
    txn: &mut Txn,
) -> Result<(TcpStream, Wrote), UpstreamError> {
    let mut pooled = pool.checkout();
    loop {
        let reused = pooled.is_some();
        let mut up = match pooled.take() {
            Some(c) => c,
            None => match pool.connect().await {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamError::ConnectTimeout)
                }
                Err(e) => {
                    tracing::debug!(backend = %be.name, error = %e, "upstream connect failed");
                    return Err(UpstreamError::Connect);
                }
            },
        };
        // Connected (`Tc` ends): what follows is the server's time.
        txn.connected();
        let wait = match replay {
            Replay::Safe => true,
            Replay::After408 => reused,
            Replay::WhileWriting => false,
        };
        // `true`: the pooled connection answered `408`.
        let timed_out = match write_upstream(&up, out, be.timeouts.server, rbuf).await {
            Err(UpstreamError::Timeout) => return Err(UpstreamError::Timeout),
            Ok(Wrote::Answered) if reused && says_408(rbuf) => true,
            Ok(Wrote::Answered) => return Ok((up, Wrote::Answered)),
            Ok(Wrote::All) if !wait => return Ok((up, Wrote::All)),
            Ok(Wrote::All) => match fill(&mut up, rbuf, expiry).await {
                Ok(n) if n > 0 && reused && says_408(rbuf) => true,
                Ok(n) if n > 0 => return Ok((up, Wrote::All)),
                Err(UpstreamError::Timeout) => return Err(UpstreamError::Timeout),
                // The server may have acted on it: no second time.
                Err(e) if replay != Replay::Safe => return Err(e),
                _ => false,
            },
            Err(_) => false,
        };
        if timed_out {
            rbuf.clear();
            tracing::debug!(backend = %be.name, "pooled connection answered 408; sending again on a new one");
            continue;
        }
        if !reused || replay != Replay::Safe {
            return Err(UpstreamError::Empty);
        }
        tracing::debug!(backend = %be.name, "pooled connection was closed; retrying on a new one");
    }
}

/// The answer begun in `buf` is a `408 Request Timeout`.
fn says_408(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.") && buf.get(8..13) == Some(b" 408 ")
}

/// Reads more of the response into `rbuf` by the deadline `expiry` is set
/// to; `Ok(0)` at end of stream.
async fn fill(
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    expiry: &mut Expiry,
) -> Result<usize, UpstreamError> {
    buffers::room_to_read(rbuf);
    match expiry.within(up.read_buf(rbuf)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(UpstreamError::Broken),
    }
}

enum BodyFail {
    Client,
    /// Past its [`BodyPace`]: 408.
    TooSlow,
    Malformed(&'static str),
    Upstream(UpstreamError),
}

/// Streams the rest of a request body from the client to the upstream,
/// until its end or the server's early answer (then in `rbuf`), which may
/// come while the client is still sending.
#[allow(clippy::too_many_arguments)]
async fn stream_request_body<IO: ClientIo>(
    io: &mut IO,
    up: &TcpStream,
    buf: &mut BytesMut,
    body: &mut BodyLeft,
    pace: &BodyPace,
    mut received: u64,
    be: &Backend,
    rbuf: &mut BytesMut,
) -> Result<Wrote, BodyFail> {
    while !body.done() {
        buf.reserve(CHUNK);
        // The server may answer while the client is still sending: that
        // answer does not wait for the rest of the body.
        tokio::select! {
            biased;
            read = read_body(io, buf, pace, received) => read?,
            ready = up.readable() => {
                if ready.is_ok() && early_answer(up, rbuf) {
                    return Ok(Wrote::Answered);
                }
                continue;
            }
        }
        let n = body.take(buf).map_err(BodyFail::Malformed)?;
        received += n as u64;
        match write_upstream(up, &buf[..n], be.timeouts.server, rbuf).await {
            Ok(Wrote::All) => {}
            Ok(Wrote::Answered) => return Ok(Wrote::Answered),
            Err(e) => return Err(BodyFail::Upstream(e)),
        }
        buf.advance(n);
    }
    Ok(Wrote::All)
}

/// Reads the response head, skipping interim 1xx answers, within
/// `head_to` (`timeout server`, or `timeout ttft` when shorter), and finds
/// the body's framing. Nothing has reached the client yet.
async fn read_response_head(
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    be: &Backend,
    expiry: &mut Expiry,
    head_request: bool,
    take: HeadTake<'_>,
) -> Result<UpstreamResponse, UpstreamError> {
    let mut seen = !rbuf.is_empty();
    loop {
        let Some(n) = head_end(rbuf, 0) else {
            if rbuf.len() >= HEAD_MAX {
                return Err(UpstreamError::Broken);
            }
            match fill(up, rbuf, expiry).await? {
                0 if seen => return Err(UpstreamError::Broken),
                0 => return Err(UpstreamError::Empty),
                _ => {
                    seen = true;
                    continue;
                }
            }
        };
        let head = rbuf.split_to(n).freeze();
        // The copy has room for the body bytes that came with the head:
        // they go to the client in the same write.
        let room = rbuf.len().min(COALESCE_MAX);
        match parse_response(&head, take, head_request, room) {
            Some(r)
                if r.status.is_informational() && r.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                continue
            }
            Some(r) if r.status != StatusCode::SWITCHING_PROTOCOLS => return Ok(r),
            _ => {
                tracing::debug!(backend = %be.name, "malformed upstream response head");
                return Err(UpstreamError::Broken);
            }
        }
    }
}

/// With `hold`, waits until the first byte of a response body is in `rbuf`
/// (by the deadline `expiry` holds): the upstream breaking off before it is an
/// `empty-response`, the deadline a `response-timeout`, and nothing has
/// reached the client yet, so either can be retried.
async fn first_body_byte(
    up: &mut TcpStream,
    rbuf: &mut BytesMut,
    framing: Framing,
    hold: bool,
    expiry: &mut Expiry,
) -> Result<(), UpstreamError> {
    if !hold || !rbuf.is_empty() || matches!(framing, Framing::Empty) {
        return Ok(());
    }
    match fill(up, rbuf, expiry).await {
        Ok(n) if n > 0 => Ok(()),
        Err(UpstreamError::Timeout) => Err(UpstreamError::Timeout),
        _ => Err(UpstreamError::Empty),
    }
}

/// Rewrites the response head and takes the part of the body that came
/// with it: what goes to the client first, and the relay for the rest.
/// Not async, so that none of it (the header map, the head's buffer) is
/// kept in the exchange's future. `None`: the body's framing is broken.
#[allow(clippy::too_many_arguments)]
fn start_response<'a>(
    up: TcpStream,
    pool: &'a H1Pool,
    active: ActiveGuard,
    rbuf: &mut BytesMut,
    resp: UpstreamResponse,
    be: &Backend,
    fe: &Frontend,
    request_id: Option<HeaderValue>,
    client_close: bool,
    tracked: Option<Box<Tracked>>,
    mut txn: Box<Txn>,
) -> Option<(BodyRelay<'a>, Vec<u8>, BytesMut)> {
    let UpstreamResponse {
        status,
        framing,
        keep_alive,
        sse,
        headers,
        ..
    } = resp;
    let rechunked = matches!(framing, Framing::Chunked | Framing::UntilClose);
    let out = match headers {
        ResponseHeaders::Copied(mut out) => {
            // What the copy left out, the gateway's own lines, in the
            // order the map would have them.
            if let (Some(name), Some(id)) = (&fe.request_id_header, &request_id) {
                put_line(&mut out, name.as_str().as_bytes(), id.as_bytes());
            }
            if rechunked {
                // Codings besides `chunked` made the head a map.
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
            if client_close {
                out.extend_from_slice(b"connection: close\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        }
        ResponseHeaders::Map(mut headers) => {
            // Read before the rewrite strips the hop-by-hop header.
            let codings = rechunked.then(|| forwarded_codings(&headers));
            proxy::rewrite_response(be, &mut headers);
            proxy::finish_response(fe, &mut headers, request_id);
            if let Some(te) = codings {
                headers.insert(header::TRANSFER_ENCODING, te);
            }
            if client_close {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let mut out = buffers::take_out(512 + rbuf.len().min(COALESCE_MAX));
            put_status_line(&mut out, status);
            put_headers(&mut out, &headers);
            out
        }
    };
    txn.log_head_out(out.len() as u64);

    let mut relay = Relay::new(framing);
    let Ok(n) = relay.take(rbuf) else {
        active.server().observe(Outcome::BrokenResponse);
        txn.end(Termination::ServerBody);
        return None;
    };
    let first = rbuf.split_to(n);
    txn.body_with_head(&first);
    let leftover = !rbuf.is_empty();
    *rbuf = BytesMut::new();
    let body = BodyRelay {
        up,
        pool,
        active,
        relay,
        reusable: keep_alive && !leftover,
        client_close,
        sse,
        server_to: be.timeouts.server,
        client_to: fe.timeouts.client,
        _tracked: tracked,
        txn,
    };
    Some((body, out, first))
}

/// Sends the response head (`out`) and the body's first part to the
/// client; the relay goes on with the rest.
async fn relay_response<'a, IO: ClientIo>(
    io: &mut IO,
    (mut body, mut out, first): (BodyRelay<'a>, Vec<u8>, BytesMut),
) -> Step<'a> {
    if first.len() > COALESCE_MAX {
        if write_client(io, &out, body.client_to).await.is_err() {
            body.txn.end(Termination::ClientBody);
            return Next::Close.into();
        }
        out.clear();
    }
    body.relay.encode(&mut out, &first);
    if write_client(io, &out, body.client_to).await.is_err() {
        body.txn.end(Termination::ClientBody);
        return Next::Close.into();
    }
    buffers::give_back_out(out);
    buffers::give_back(first);
    if body.relay.done() {
        Step::Done(body.finish(io).await)
    } else {
        Step::Stream(body)
    }
}

/// The rest of a response body, relayed as it comes. This is all a
/// connection holds while a stream is open: no buffer while the upstream
/// is quiet (an SSE stream between events).
struct BodyRelay<'a> {
    up: TcpStream,
    pool: &'a H1Pool,
    active: ActiveGuard,
    relay: Relay,
    /// The upstream may serve another request once this body is complete.
    reusable: bool,
    client_close: bool,
    /// `text/event-stream`: a break mid-body is told with an `event: error`.
    sse: bool,
    server_to: Duration,
    client_to: Duration,
    /// The stick-table entries the request tracks: `conn_cur` counts it
    /// until the body is over.
    _tracked: Option<Box<Tracked>>,
    /// The request's record, counted when the body is over (boxed: the
    /// relay's future holds the relay in several states, and an open
    /// stream should cost as little as it can).
    txn: Box<Txn>,
}

impl BodyRelay<'_> {
    async fn run<IO: ClientIo>(mut self, io: &mut IO, expiry: &mut Expiry) -> Next {
        while !self.relay.done() {
            expiry.set(Instant::now() + self.server_to);
            let chunk = match read_chunk(&mut self.up, expiry).await {
                Ok(c) => c,
                Err(e) => {
                    self.active.server().observe(e.outcome());
                    return self.truncate(io).await;
                }
            };
            if chunk.is_empty() {
                if let Relay::UntilClose(done) = &mut self.relay {
                    *done = true;
                    if write_client(io, b"0\r\n\r\n", self.client_to)
                        .await
                        .is_err()
                    {
                        return Next::Close;
                    }
                    break;
                }
                self.active.server().observe(Outcome::BrokenResponse);
                return self.truncate(io).await;
            }
            let Ok(n) = self.relay.take(&chunk) else {
                self.active.server().observe(Outcome::BrokenResponse);
                return self.truncate(io).await;
            };
            self.txn.body(&chunk[..n]);
            let written = if let Relay::UntilClose(_) = self.relay {
                let mut framed = Vec::with_capacity(n + 16);
                self.relay.encode(&mut framed, &chunk[..n]);
                write_client(io, &framed, self.client_to).await
            } else {
                write_client(io, &chunk[..n], self.client_to).await
            };
            if written.is_err() {
                self.txn.end(Termination::ClientBody);
                return Next::Close;
            }
            if n < chunk.len() {
                // The upstream sent more than its response: not reusable.
                self.reusable = false;
            }
        }
        self.finish(io).await
    }

    /// The upstream broke mid-body: the client sees the body stop short of
    /// its end (no final chunk, or fewer bytes than `Content-Length`), and
    /// an SSE client first gets an `event: error` when the framing allows
    /// one more chunk (between chunks of a chunked body, or in a body the
    /// engine chunks itself). Never a clean-looking end.
    async fn truncate<IO: ClientIo>(mut self, io: &mut IO) -> Next {
        self.active.server().count_truncated();
        self.txn.end(Termination::ServerBody);
        let between_chunks = match &self.relay {
            Relay::Chunked(s) => s.at_chunk_start(),
            Relay::UntilClose(done) => !done,
            Relay::Length(_) => false,
        };
        if self.sse && between_chunks {
            let event = error::stream_error_event();
            let mut out = Vec::with_capacity(event.len() + 16);
            put_chunk(&mut out, event);
            let _ = write_client(io, &out, self.client_to).await;
        }
        let _ = io.shutdown().await;
        Next::Close
    }

    /// After a complete body: the upstream connection goes back to the
    /// pool only after a clean exchange, and the client's goes on unless it
    /// asked to close.
    async fn finish<IO: ClientIo>(self, io: &mut IO) -> Next {
        if self.reusable && !matches!(self.relay, Relay::UntilClose(_)) {
            self.pool.checkin(self.up);
        }
        if self.client_close {
            let _ = io.shutdown().await;
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}

/// Reads what the upstream has, waiting (bufferless) until it has some.
/// Empty at end of stream; `Err` on a broken connection or past the
/// deadline `expiry` is set to (`timeout server` from the last chunk).
async fn read_chunk(up: &mut TcpStream, expiry: &mut Expiry) -> Result<BytesMut, UpstreamError> {
    let read = async {
        loop {
            up.readable().await?;
            let mut chunk = BytesMut::with_capacity(CHUNK);
            match up.try_read_buf(&mut chunk) {
                Ok(_) => return Ok::<_, io::Error>(chunk),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match expiry.within(read).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(_)) => Err(UpstreamError::Broken),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// Follows a response body's framing toward the client.
enum Relay {
    Length(u64),
    Chunked(ChunkedScanner),
    /// Re-framed as chunked for the client; `true` once the upstream closed.
    UntilClose(bool),
}

impl Relay {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Relay::Length(0),
            Framing::Length(n) => Relay::Length(n),
            Framing::Chunked => Relay::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => Relay::UntilClose(false),
        }
    }

    fn take(&mut self, data: &[u8]) -> Result<usize, ()> {
        match self {
            Relay::Length(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                Ok(n)
            }
            Relay::Chunked(s) => s.scan(data).map_err(|e| {
                tracing::debug!(error = e.0, "malformed chunked response from upstream");
            }),
            Relay::UntilClose(_) => Ok(data.len()),
        }
    }

    fn encode(&self, out: &mut Vec<u8>, data: &[u8]) {
        match self {
            Relay::UntilClose(_) if !data.is_empty() => put_chunk(out, data),
            Relay::UntilClose(_) => {}
            _ => out.extend_from_slice(data),
        }
    }

    fn done(&self) -> bool {
        match self {
            Relay::Length(left) => *left == 0,
            Relay::Chunked(s) => s.is_done(),
            Relay::UntilClose(done) => *done,
        }
    }
}

async fn write_client<IO: ClientIo>(io: &mut IO, data: &[u8], limit: Duration) -> io::Result<()> {
    let write = async {
        io.write_all(data).await?;
        io.flush().await
    };
    match soon(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// [`timeout`] for an operation that usually completes at once (a write
/// with room in the socket's buffer): the timer is made only once the
/// operation has to wait. Making one costs a clock read and a clone of the
/// runtime's handle; on a busy keep-alive connection most writes never
/// wait. Held boxed, so a stream waiting on a write is no larger for it.
fn soon<F: Future>(limit: Duration, op: F) -> Soon<F> {
    Soon {
        op,
        limit,
        timer: None,
    }
}

pin_project_lite::pin_project! {
    struct Soon<F> {
        #[pin]
        op: F,
        limit: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

/// The operation [`soon`] bounds did not complete in time.
struct TimedOut;

impl<F: Future> Future for Soon<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.op.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let limit = *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).map(|()| Err(TimedOut))
    }
}

/// [`answer`] for a request that may track stick-table entries: the
/// status is counted on them first.
fn answer_tracked<'f, IO: ClientIo>(
    io: &'f mut IO,
    fe: &'f Frontend,
    tracked: &mut Tracked,
    resp: Response<RespBody>,
    request_id: Option<HeaderValue>,
    close: bool,
    txn: Box<Txn>,
) -> Answering<'f> {
    tracked.answered(resp.status().as_u16());
    answer(io, fe, resp, request_id, close, txn)
}

/// Answers a request whose body could not be forwarded; the connection
/// closes, its body not read to the end. A client that broke off gets
/// nothing; an upstream failure is heard by `server`'s health.
fn answer_body_failure<'f, IO: ClientIo>(
    io: &'f mut IO,
    fe: &'f Frontend,
    tracked: &mut Tracked,
    fail: BodyFail,
    server: Option<&crate::runtime::ServerState>,
    request_id: Option<HeaderValue>,
    mut txn: Box<Txn>,
) -> Answering<'f> {
    let resp = match fail {
        BodyFail::Client => {
            txn.end(Termination::ClientRequest);
            return Box::pin(std::future::ready(Next::Close));
        }
        BodyFail::TooSlow => {
            txn.end(Termination::ClientRequest);
            proxy::body_too_slow()
        }
        BodyFail::Malformed(why) => {
            error::bad_request(&format!("The request body is malformed: {why}."))
        }
        BodyFail::Upstream(e) => {
            if let Some(s) = server {
                s.observe(e.outcome());
            }
            txn.end(e.failure().termination());
            e.response()
        }
    };
    answer_tracked(io, fe, tracked, resp, request_id, true, txn)
}

/// A gateway-made answer being written. Boxed: an exchange awaits one in a
/// dozen places, and each would otherwise add its whole state to the
/// exchange's future, which every request allocates and fills.
type Answering<'f> = Pin<Box<dyn Future<Output = Next> + Send + 'f>>;

/// Answers with a gateway-made response (after the frontend's response
/// rules) and says whether the connection goes on.
fn answer<'f, IO: ClientIo>(
    io: &'f mut IO,
    fe: &'f Frontend,
    resp: Response<RespBody>,
    request_id: Option<HeaderValue>,
    close: bool,
    txn: Box<Txn>,
) -> Answering<'f> {
    Box::pin(write_answer(io, fe, resp, request_id, close, txn))
}

async fn write_answer<IO: ClientIo>(
    io: &mut IO,
    fe: &Frontend,
    mut resp: Response<RespBody>,
    request_id: Option<HeaderValue>,
    close: bool,
    mut txn: Box<Txn>,
) -> Next {
    if resp.extensions_mut().remove::<Denied>().is_some() {
        txn.end(Termination::Denied);
    }
    txn.head(resp.status().as_u16());
    proxy::hold_tarpitted(&mut resp).await;
    proxy::finish_response(fe, resp.headers_mut(), request_id);
    let body = http_body::Body::size_hint(resp.body()).exact();
    if let Some(b) = body {
        txn.bytes_out(b);
    }
    match write_local(io, resp, close, fe.timeouts.client).await {
        Ok(n) => {
            txn.log_head_out(n.saturating_sub(body.unwrap_or(0)));
            if close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Err(_) => Next::Close,
    }
}

/// Writes a response the gateway made itself (a full body or none);
/// returns how many bytes it took.
pub(super) fn write_local<'f, IO: ClientIo>(
    io: &'f mut IO,
    resp: Response<RespBody>,
    close: bool,
    limit: Duration,
) -> impl Future<Output = io::Result<u64>> + Send + 'f {
    // Made when called, not in the future: an async fn would keep the
    // response (and its header map) in its state across every await.
    let out = local_bytes(resp, close);
    async move {
        write_client(io, &out, limit).await?;
        if close {
            let _ = io.shutdown().await;
        }
        Ok(out.len() as u64)
    }
}

/// A gateway-made response as it goes on the wire.
fn local_bytes(resp: Response<RespBody>, close: bool) -> Vec<u8> {
    let (mut parts, body) = resp.into_parts();
    let body = body.into_full().unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if close {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = Vec::with_capacity(256 + body.len());
    put_status_line(&mut out, parts.status);
    put_headers(&mut out, &parts.headers);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Parsed {
        parse_request(&Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn parses_a_request_without_copying_into_parts() {
        let Parsed::Request(r) = parse(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
        ) else {
            panic!("not parsed")
        };
        assert_eq!(r.parts.method, Method::POST);
        assert_eq!(r.parts.uri.path(), "/v1/chat/completions");
        assert_eq!(r.parts.uri.query(), Some("x=1"));
        assert_eq!(r.parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(r.framing, Framing::Length(5));
        assert!(!r.close);
    }

    #[test]
    fn what_the_engine_leaves_to_the_general_path() {
        for s in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            assert!(matches!(parse(s), Parsed::Request(r) if r.handoff), "{s:?}");
        }
        // Checked all the same before it goes.
        let s = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(s), Parsed::Refused(_)), "{s:?}");
    }

    fn refused(s: &str) -> Option<u16> {
        match parse(s) {
            Parsed::Refused(r) => Some(r.status.as_u16()),
            Parsed::Request(_) => None,
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        for s in [
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /#f HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /é HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(refused(s), Some(400), "{s:?}");
        }
        let s = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n";
        assert_eq!(refused(s), Some(501));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Some(431)
        );
    }

    #[test]
    fn valid_requests_pass() {
        for s in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHOST: [::1]:8080\r\n\r\n",
            "GET / HTTP/1.1\r\nHost:\r\n\r\n",
            "GET http://A/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET https://a/x HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
        ] {
            assert_eq!(refused(s), None, "{s:?}");
        }
    }

    #[test]
    fn only_whole_interim_heads_are_passed_over() {
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        assert_eq!(interim_len(cont), Some(cont.len()));
        assert_eq!(
            interim_len(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 413"),
            Some(40)
        );
        // Not interim: a final answer, a switch of protocols, half a head,
        // something that is not a response.
        assert_eq!(interim_len(b"HTTP/1.1 413 Payload Too Large\r\n\r\n"), None);
        assert_eq!(
            interim_len(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            None
        );
        assert_eq!(interim_len(b"HTTP/1.1 100 Continue\r\n"), None);
        assert_eq!(interim_len(b"garbage\r\n\r\n"), None);
    }

    #[test]
    fn a_408_is_told_by_its_status_line_alone() {
        assert!(says_408(b"HTTP/1.1 408 Request Timeout\r\n"));
        assert!(says_408(b"HTTP/1.0 408 \r\n\r\n"));
        // Only the status line is in yet: enough.
        assert!(says_408(b"HTTP/1.1 408 "));
        for other in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 4080 x\r\n",
            b"HTTP/1.1 408",
            b"XTTP/1.1 408 x\r\n",
            b"",
        ] {
            assert!(!says_408(other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn what_may_be_sent_again_follows_the_body_and_the_method() {
        assert_eq!(Replay::of(true, &Method::GET), Replay::Safe);
        assert_eq!(Replay::of(true, &Method::PUT), Replay::Safe);
        assert_eq!(Replay::of(true, &Method::POST), Replay::After408);
        assert_eq!(Replay::of(false, &Method::GET), Replay::WhileWriting);
        assert_eq!(Replay::of(false, &Method::POST), Replay::WhileWriting);
    }

    #[test]
    fn head_ends_only_at_crlf_crlf() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        for from in 0..20 {
            assert_eq!(scan_head(head, from), Ok(Some(27)), "{from}");
        }
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), Ok(None));
        for bare in [
            &b"GET / HTTP/1.1\nHost: a\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\nGET /smuggled HTTP/1.1\r\n\r\n",
            b"\n",
        ] {
            assert!(
                scan_head(bare, 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(bare)
            );
        }
        assert_eq!(oversized_head(b"GET /aaaa").status, 414);
        assert_eq!(oversized_head(b"GET / HTTP/1.1\r\nX: aaa").status, 431);
    }

    #[test]
    fn agreeing_lengths_become_one() {
        for s in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\n",
        ] {
            let Parsed::Request(r) = parse(s) else {
                panic!("{s:?} not parsed")
            };
            let all: Vec<_> = r.parts.headers.get_all("content-length").iter().collect();
            assert_eq!(all, ["5"], "{s:?}");
        }
    }

    #[test]
    fn transfer_codings_are_kept_with_one_chunked() {
        let te = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            forwarded_codings(&h)
        };
        assert_eq!(te(&[]), "chunked");
        assert_eq!(te(&["chunked"]), "chunked");
        assert_eq!(te(&["gzip, chunked"]), "gzip, chunked");
        assert_eq!(te(&["gzip", "Chunked"]), "gzip, chunked");
        assert_eq!(te(&["gzip"]), "gzip, chunked");
        assert_eq!(te(&["chunked, chunked"]), "chunked");
    }

    #[test]
    fn connection_close_is_seen() {
        let Parsed::Request(r) =
            parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n")
        else {
            panic!()
        };
        assert!(r.close);
    }

    #[test]
    fn body_left_follows_length_and_chunks() {
        let mut b = BodyLeft::new(Framing::Length(10), 4);
        assert_eq!(b.take(b"abcdefgh"), Ok(6));
        assert!(b.done());
        let mut c = BodyLeft::new(Framing::Chunked, 0);
        assert_eq!(c.take(b"2\r\nab\r\n0\r\n\r\nGET"), Ok(12));
        assert!(c.done());
    }

    #[test]
    fn until_close_bodies_are_rechunked() {
        let r = Relay::new(Framing::UntilClose);
        let mut out = Vec::new();
        r.encode(&mut out, b"hello world, this is long");
        assert_eq!(out, b"19\r\nhello world, this is long\r\n");
    }

    /// What a connection holds while a response streams is the task's
    /// future: these bounds keep an open SSE stream within HAProxy's few KiB
    /// (the benchmark's streams row measures the whole process).
    #[tokio::test]
    async fn an_open_stream_keeps_the_connection_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (up, _) = l.accept().await.unwrap();
        let pool = H1Pool::new(
            "127.0.0.1".into(),
            addr.port(),
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
        );
        let runtime = crate::runtime::Runtime::default();
        let relay = BodyRelay {
            up,
            pool: &pool,
            active: runtime.server("b", "s", 1, 0).begin(),
            relay: Relay::Length(1),
            reusable: true,
            client_close: false,
            sse: false,
            server_to: Duration::from_secs(1),
            client_to: Duration::from_secs(1),
            _tracked: None,
            txn: Box::new(Txn::new(&Default::default())),
        };
        let mut expiry = Expiry::new(Instant::now());
        let run = relay.run(&mut client, &mut expiry);
        assert!(
            std::mem::size_of_val(&run) <= 1024,
            "body relay: {} bytes",
            std::mem::size_of_val(&run)
        );
        drop(run);

        let cfg = crate::config::load_embedded_default().unwrap();
        let shared = crate::gateway::Shared::new(cfg, Some(addr)).unwrap();
        let info = ConnInfo {
            frontend: "gateway".into(),
            client: addr,
            local: addr,
            tls: false,
            tracked: None,
            drain: crate::listen::drain::Drain::new(),
        };
        let timeouts = Timeouts::default();
        let mut buf = BytesMut::new();
        let engine = serve(&mut client, &mut buf, &shared, &info, &timeouts);
        assert!(
            std::mem::size_of_val(&engine) <= 1536,
            "engine: {} bytes",
            std::mem::size_of_val(&engine)
        );
    }
}
