//! One request's way through the gateway, in the order it happens:
//! frontend lookup → request id and trace context → body inspection (only if
//! a rule needs the model) → route → balance → rewrite → forward (retries;
//! then the backend's fallback chain, step by step) → response rewrite →
//! streamed back. Each phase is a function below; errors the
//! gateway makes itself leave through `error.rs` in the OpenAI shape.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{BodyTooSlow, ClientBody, ReqBody, RespBody, UpBody};
use super::conn::{ConnInfo, InflightGuard};
use super::error;
use super::h1::client::SendError;
use crate::balance::PickCtx;
use crate::config::stick::Data;
use crate::config::{
    body_key_path, Backend, Condition, Expr, Fallback, Frontend, HttpReqRule, IntFetch, IntOp,
    ReqAction, MODEL_KEY,
};
use crate::gateway::{Shared, Snapshot};
use crate::health::outcome_of;
use crate::llm::json;
use crate::llm::model::{self, ModelScanner, Scan};
use crate::llm::usage::{self, Tokens};
use crate::metrics::{Denied, Termination, Txn};
use crate::route::{self, Facts};
use crate::runtime::ActiveGuard;
use crate::runtime::Outcome;
use crate::stick::{Key, Tracked};
use crate::upstream::queue;
use crate::upstream::retry::{self, Failure};
use std::sync::atomic::Ordering::Relaxed;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static API_KEY: HeaderName = HeaderName::from_static("api-key");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    inflight: InflightGuard,
) -> Response<RespBody> {
    let snap = conn.snapshot(shared);
    let Some(fe) = snap.frontend(&conn.frontend) else {
        // The listener outlived its frontend across a reload; it is draining.
        return error::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "frontend_gone",
            "This listener is closing.",
        );
    };
    let request_id = request_id(fe, req.headers());
    let mut tracked = Tracked::for_request(conn.tracked.as_ref());
    let mut txn = match snap.frontend_stats(&conn.frontend) {
        Some(s) => Box::new(Txn::new(s)),
        None => return error::bad_gateway("This listener is closing."),
    };
    // hyper has the head before this runs: the head's own time is unknown.
    crate::logs::begin(
        &mut txn,
        &snap,
        fe.log,
        conn,
        (&req).into(),
        std::time::Instant::now(),
    );
    txn.log_request_id(request_id.as_ref());
    let mut resp = match h2_malformed(&mut req) {
        Some(why) => error::bad_request(&format!("The request is malformed: {why}.")),
        None => {
            proxy(
                &snap,
                fe,
                conn,
                req,
                request_id.as_ref(),
                &mut tracked,
                &mut txn,
            )
            .await
        }
    };
    if resp.extensions_mut().remove::<Denied>().is_some() {
        txn.end(Termination::Denied);
    }
    hold_tarpitted(&mut resp).await;
    finish_response(fe, resp.headers_mut(), request_id);
    tracked.answered(resp.status().as_u16());
    txn.head(resp.status().as_u16());
    if txn.logging() {
        txn.log_head_out(crate::logs::response_head_len(
            resp.status(),
            resp.headers(),
        ));
    }
    resp.map(|b| {
        b.with_inflight(inflight)
            .with_tracked(tracked)
            .with_txn(txn)
    })
}

/// What the h2 library lets through but an HTTP/2 request must not have
/// before it goes on as HTTP/1.1 (the library itself resets a stream with
/// connection-specific fields, a `te` other than `trailers`, pseudo-headers
/// missing, repeated, unknown or after a regular field, a name or value
/// with CR, LF, NUL or uppercase, a `content-length` its DATA disagree
/// with):
///
/// - a field value starting or ending with SP or HTAB (RFC 9113 §8.2.1);
/// - more than one `host` field and no `:authority`.
///
/// And it must not carry two authorities: with `:authority` there, a
/// `host` field is replaced by it, so routing and the upstream go by the
/// one the h2 layer used (HAProxy's rule against h2 desync; RFC 9113
/// §8.3.1 would also allow refusing a `host` that differs, but an
/// intermediary forwarding over h2 may keep its client's `host` next to
/// its own `:authority`, as this gateway does towards h2 upstreams). A
/// `content-length` the library accepted (repeated, or with leading zeros)
/// is made one plain number, as the HTTP/1 upstream is to get it. HTTP/1
/// requests were checked as their bytes arrived (`h1::parse_request`).
fn h2_malformed(req: &mut Request<Incoming>) -> Option<&'static str> {
    if req.version() != Version::HTTP_2 {
        return None;
    }
    if let Some(n) = uncanonical_length(req.headers()) {
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if req.headers().contains_key(header::HOST) {
        match req
            .uri()
            .authority()
            .map(|a| HeaderValue::from_str(a.as_str()))
        {
            Some(Ok(a)) => {
                req.headers_mut().insert(header::HOST, a);
            }
            Some(Err(_)) => return Some("an invalid :authority"),
            None if req.headers().get_all(header::HOST).iter().nth(1).is_some() => {
                return Some("more than one host field")
            }
            None => {}
        }
    }
    let padded = |v: &HeaderValue| {
        let v = v.as_bytes();
        [v.first(), v.last()]
            .iter()
            .any(|b| matches!(b, Some(b' ' | b'\t')))
    };
    req.headers()
        .values()
        .any(padded)
        .then_some("a field value with leading or trailing whitespace")
}

/// The length an h2 request's `content-length` fields say, when they are
/// not already one plain number (the h2 library checked they agree).
fn uncanonical_length(h: &HeaderMap) -> Option<u64> {
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let v = lengths.next()?.as_bytes();
    let plain = v.len() == 1 || v.first() != Some(&b'0');
    if plain && lengths.next().is_none() {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

async fn proxy(
    snap: &Arc<Snapshot>,
    fe: &Frontend,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    request_id: Option<&HeaderValue>,
    tracked: &mut Tracked,
    txn: &mut Txn,
) -> Response<RespBody> {
    let client_upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, incoming) = req.into_parts();
    let incoming = ClientBody::new(incoming, &fe.timeouts);

    // Read the body only as far as the model, and only if a rule needs it.
    let needs_model = fe.needs_model();
    let (body, model_name) = if needs_model && may_have_body(&parts.method, &incoming) {
        match inspect_model(fe, &mut parts, incoming).await {
            Ok(read) => read,
            Err(resp) => return resp,
        }
    } else {
        (ReqBody::Stream(incoming), None)
    };
    // Rules that read the body (a token estimate, a `track-sc` key from a
    // body field) have it whole, up to `body_limit`.
    let (body, whole) = if snap.reads_body && client_upgrade.is_none() {
        match buffer_whole(body, fe.body_limit).await {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    } else {
        (body, None)
    };
    if snap.accounting.any() && client_upgrade.is_none() {
        account(snap, fe, &parts, &body, whole.as_deref(), tracked);
    }
    let content = Content {
        model: model_name.as_deref(),
        needs_model,
        body: whole.as_deref(),
    };
    txn.model(content.model);
    if let Some(w) = &whole {
        txn.bytes_in(w.len() as u64);
    } else if let Some(n) = body.size_hint().exact() {
        txn.bytes_in(n);
    }

    let bi = match choose_backend(snap, fe, conn, &mut parts, content, tracked, Some(txn)) {
        Ok(bi) => bi,
        Err(resp) => return *resp,
    };
    // A retry or a fallback step needs the whole body at hand: it is read
    // here, up to the frontend's `body_limit`; a longer body streams and is
    // sent again only where nothing of it was sent (no server, a refused
    // connection).
    let chain: &[Fallback] = match client_upgrade {
        None => &snap.config.backends[bi].opts.fallback,
        Some(_) => &[],
    };
    let (mut body, replay) =
        if client_upgrade.is_none() && (snap.backends[bi].retry.enabled() || !chain.is_empty()) {
            match buffer_for_retry(body, fe.body_limit).await {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        } else {
            (Some(body), None)
        };
    // Each step rewrites the client's request for its own backend.
    let pristine = (!chain.is_empty()).then(|| parts.clone());
    let x = Exchange {
        snap,
        fe,
        conn,
        request_id,
        upgrade: client_upgrade.is_some(),
        fallback: !chain.is_empty(),
    };

    // The next step takes over on a failure its conditions name, when the
    // body can be sent again (a model rewrite needs it whole).
    let takes = |next: &Fallback, f: Failure, body: &Option<ReqBody>| {
        next.takes(f)
            && match &next.model {
                Some(_) => replay.is_some(),
                None => replay.is_some() || body.is_some(),
            }
    };
    let mut bi = bi;
    let mut step_body = replay.clone();
    let mut step = 0;
    let (mut resp, guard, first) = loop {
        let brt = &snap.backends[bi];
        let (failure, answer) = match x
            .forward(bi, parts, &mut body, step_body.as_ref(), txn)
            .await
        {
            Forwarded::Response(resp, guard, first) => {
                let status = Failure::Status(resp.status().as_u16());
                match chain.get(step) {
                    // Dropped unread: the next step answers instead.
                    Some(next) if takes(next, status, &body) => {
                        (status, Response::new(RespBody::empty()))
                    }
                    _ => {
                        txn.server_head(resp.status().as_u16());
                        break (resp, guard, first);
                    }
                }
            }
            Forwarded::Failed(f, answer) => (f, answer),
            Forwarded::Final(answer) => return answer,
        };
        let Some(next) = chain.get(step).filter(|n| takes(n, failure, &body)) else {
            txn.end(failure.termination());
            return answer;
        };
        let Some(mut p) = pristine.clone() else {
            return answer;
        };
        brt.fallbacks.handed_on.fetch_add(1, Relaxed);
        snap.backends[next.backend]
            .fallbacks
            .taken_over
            .fetch_add(1, Relaxed);
        tracing::debug!(
            from = %snap.config.backends[bi].name,
            to = %snap.config.backends[next.backend].name,
            error = ?failure,
            "falling back"
        );
        step_body = match (&replay, &next.model) {
            (Some(bytes), Some(m)) => Some(replace_model(bytes, m, &mut p.headers)),
            _ => replay.clone(),
        };
        let content = Content {
            model: next.model.as_deref().or(model_name.as_deref()),
            ..content
        };
        let be = &snap.config.backends[next.backend];
        let mut rules = Rules {
            snap,
            src: conn.client.ip(),
            content,
            tracked,
            tarpit: be.timeouts.tarpit.unwrap_or(be.timeouts.connect),
        };
        if let Some(resp) = rules.run(&be.http_request, &mut p) {
            return resp;
        }
        parts = p;
        bi = next.backend;
        step += 1;
    };
    let be = &snap.config.backends[bi];

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(super::tunnel::run(
                client_upgrade,
                upstream_upgrade,
                be.timeouts.tunnel,
                guard,
            ));
            let (mut rparts, _) = resp.into_parts();
            be.response_headers.apply(&mut rparts.headers);
            for r in &be.http_response {
                r.action.apply(&mut rparts.headers);
            }
            return Response::from_parts(rparts, RespBody::empty());
        }
    }

    let (mut rparts, rbody) = resp.into_parts();
    rewrite_response(be, &mut rparts.headers);
    rparts.version = Version::HTTP_11;
    let sse = rparts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| is_event_stream(v.as_bytes()));
    Response::from_parts(
        rparts,
        RespBody::upstream(rbody, first, be.timeouts.server, guard, sse),
    )
}

/// A `Content-Type` of an SSE stream: a break mid-body is told to the
/// client with an `event: error`.
pub(super) fn is_event_stream(content_type: &[u8]) -> bool {
    content_type.starts_with(b"text/event-stream")
}

/// What every attempt of one request shares, whichever backend of its
/// fallback chain the attempt goes to.
struct Exchange<'a> {
    snap: &'a Snapshot,
    fe: &'a Frontend,
    conn: &'a ConnInfo,
    request_id: Option<&'a HeaderValue>,
    upgrade: bool,
    /// The routed backend has a fallback chain (it takes failures after
    /// the response head too).
    fallback: bool,
}

/// How one backend dealt with a request.
enum Forwarded {
    /// The response to relay (its status may still lead to a fallback),
    /// with the first frame of its body when it was waited for.
    Response(Response<UpBody>, ActiveGuard, Option<Frame<Bytes>>),
    /// Every attempt failed; the answer is what the client gets unless a
    /// fallback step takes over.
    Failed(Failure, Response<RespBody>),
    /// An answer no fallback changes (the request cannot be forwarded).
    Final(Response<RespBody>),
}

impl Exchange<'_> {
    /// Sends the request to backend `bi`: a server from its balancer (or
    /// its queue), then retries and redispatch as its policy allows.
    /// `replay` is the whole body when it was read; otherwise `body` is
    /// sent once.
    async fn forward(
        &self,
        bi: usize,
        mut parts: Parts,
        body: &mut Option<ReqBody>,
        replay: Option<&Bytes>,
        txn: &mut Txn,
    ) -> Forwarded {
        let (be, brt) = (&self.snap.config.backends[bi], &self.snap.backends[bi]);
        let src = self.conn.client.ip();
        let ctx = PickCtx {
            src,
            path: parts.uri.path(),
            headers: &parts.headers,
        };
        txn.backend(&brt.stats);
        let mut si = match queue::pick(brt, &ctx).await {
            Ok((si, waited)) => {
                txn.queued(waited);
                si
            }
            Err(no) => {
                txn.end(Termination::Queue);
                return Forwarded::Failed(no.failure(), no.response(&be.name));
            }
        };
        rewrite_request(
            self.fe,
            be,
            self.conn,
            &mut parts,
            self.request_id,
            self.upgrade,
        );
        parts.version = Version::HTTP_11;
        let policy = brt.retry;
        let head_to = be
            .timeouts
            .ttft
            .map_or(be.timeouts.server, |t| t.min(be.timeouts.server));

        let mut tried: Vec<usize> = Vec::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let server = brt.balancer.server(si).clone();
            txn.server(&server);
            let guard = server.begin();
            let upstream = &brt.upstreams[si];
            let uri = match upstream_uri(be, &parts.uri, upstream) {
                Ok(u) => u,
                Err(_) => {
                    return Forwarded::Final(error::bad_request(
                        "The request target cannot be forwarded.",
                    ))
                }
            };
            let b = match replay {
                Some(bytes) => ReqBody::Prefixed {
                    head: Some(bytes.clone()),
                    rest: None,
                },
                None => {
                    let Some(b) = body.take() else {
                        return Forwarded::Final(error::bad_gateway(
                            "The request cannot be sent again.",
                        ));
                    };
                    b
                }
            };
            let deadline = tokio::time::Instant::now() + head_to;
            let sent = match upstream.h1.as_ref().filter(|_| !self.upgrade) {
                // Written from the head as it is: nothing to clone for a
                // retry.
                Some(pool) => super::h1::client::send(pool, be, &parts, &uri, b, deadline, txn)
                    .await
                    .map(|r| r.map(|b| UpBody::H1(Box::new(b)))),
                None => {
                    // hyper takes the request whole; a retry needs the head
                    // again.
                    let mut p = match replay {
                        Some(_) => parts.clone(),
                        None => std::mem::replace(&mut parts, Request::new(()).into_parts().0),
                    };
                    p.uri = uri;
                    send_hyper(upstream, be, Request::from_parts(p, b), deadline).await
                }
            };
            let (failure, answer) = match sent {
                Err(SendError::Client(answer)) => return Forwarded::Final(*answer),
                Err(SendError::Upstream(outcome, failure, answer)) => {
                    server.observe(outcome);
                    (failure, *answer)
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    if replay.is_some()
                        && policy.on_status(status)
                        && policy.allows(Failure::Status(status), attempt)
                    {
                        server.observe(outcome_of(r.status(), r.headers()));
                        // Retried: this answer is dropped unread.
                        (Failure::Status(status), Response::new(RespBody::empty()))
                    } else {
                        // Held until the first byte of its body when a
                        // failure before that can still be retried (a
                        // replayable body) or the TTFT deadline applies: an
                        // LLM stream's head comes at once, its first token
                        // later.
                        let hold = be.timeouts.ttft.is_some()
                            || (replay.is_some() && (policy.after_head() || self.fallback));
                        match first_frame(r, hold, deadline).await {
                            Ok((r, first)) => {
                                server.observe(outcome_of(r.status(), r.headers()));
                                return Forwarded::Response(r, guard, first);
                            }
                            Err((outcome, failure, answer)) => {
                                server.observe(outcome);
                                (failure, answer)
                            }
                        }
                    }
                }
            };
            if !(replay.is_some() && policy.allows(failure, attempt)) {
                return Forwarded::Failed(failure, answer);
            }
            tried.push(si);
            let ctx = PickCtx {
                src,
                path: parts.uri.path(),
                headers: &parts.headers,
            };
            let next = retry::next_server(&policy, &brt.balancer, &ctx, &tried, si);
            server.count_retry(next != si);
            txn.retried();
            tracing::debug!(backend = %be.name, attempt, error = ?failure, "retrying");
            si = next;
        }
    }
}

/// Sends a request through hyper's client (TLS and h2c servers, and
/// upgrades): by `deadline` for the response head.
async fn send_hyper(
    upstream: &crate::upstream::Upstream,
    be: &Backend,
    req: Request<ReqBody>,
    deadline: tokio::time::Instant,
) -> Result<Response<UpBody>, SendError> {
    match tokio::time::timeout_at(deadline, upstream.client.request(req)).await {
        Err(_) => Err(SendError::Upstream(
            Outcome::Timeout,
            Failure::ResponseTimeout,
            Box::new(error::gateway_timeout(
                "The upstream did not answer in time.",
            )),
        )),
        // The client's body stopped coming, or turned out malformed mid-way
        // (the HTTP/1 guard found it): not the server's fault, and nothing
        // to retry.
        Ok(Err(e)) if BodyTooSlow::caused(&e) || malformed_body(&e).is_some() => {
            Err(SendError::Client(Box::new(body_error(&e))))
        }
        Ok(Err(e)) => {
            let (outcome, failure) = if e.is_connect() {
                (Outcome::ConnectFailed, Failure::ConnFailure)
            } else {
                (Outcome::BrokenResponse, Failure::EmptyResponse)
            };
            Err(SendError::Upstream(
                outcome,
                failure,
                Box::new(upstream_error(be, &e)),
            ))
        }
        Ok(Ok(r)) => Ok(r.map(UpBody::Hyper)),
    }
}

/// With `hold`, waits (until `deadline`) for the first frame of a
/// response's body: the upstream breaking off before it is an
/// `empty-response`, the deadline a `response-timeout`; nothing has reached
/// the client yet, so either can still be retried.
async fn first_frame(
    r: Response<UpBody>,
    hold: bool,
    deadline: tokio::time::Instant,
) -> Result<(Response<UpBody>, Option<Frame<Bytes>>), (Outcome, Failure, Response<RespBody>)> {
    if !hold || r.body().is_end_stream() || r.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((r, None));
    }
    let (parts, mut body) = r.into_parts();
    match tokio::time::timeout_at(deadline, body.frame()).await {
        Ok(Some(Ok(frame))) => Ok((Response::from_parts(parts, body), Some(frame))),
        Ok(None) => Ok((Response::from_parts(parts, body), None)),
        Ok(Some(Err(_))) => Err((
            Outcome::BrokenResponse,
            Failure::EmptyResponse,
            error::bad_gateway("The upstream failed before the first byte of its answer."),
        )),
        Err(_) => Err((
            Outcome::Timeout,
            Failure::ResponseTimeout,
            error::gateway_timeout("The upstream did not start its answer in time."),
        )),
    }
}

/// The body with its top-level `model` replaced by `model` (a fallback
/// step's), `Content-Length` following; unchanged when it has none.
fn replace_model(body: &Bytes, model: &str, headers: &mut HeaderMap) -> Bytes {
    let Scan::Found(range) = ModelScanner::default().scan(body) else {
        return body.clone();
    };
    let out = splice_model(body, range, model);
    if headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    }
    out
}

/// `body` with the raw model value at `range` replaced by `model`, encoded.
fn splice_model(body: &[u8], range: std::ops::Range<usize>, model: &str) -> Bytes {
    let encoded = model::encode(model);
    let mut out = BytesMut::with_capacity(body.len() + encoded.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&body[range.end..]);
    out.freeze()
}

/// Reads a request body whole, up to `limit` bytes, so that a retry can
/// send it again. Returns the body to send the first time (`None` when it
/// was read whole) and the bytes to replay (`None` when it is longer than
/// `limit`: it then streams, with what was read in front, and is not
/// retried).
async fn buffer_for_retry(
    body: ReqBody,
    limit: usize,
) -> Result<(Option<ReqBody>, Option<Bytes>), Response<RespBody>> {
    let (mut read, rest) = match body {
        ReqBody::Prefixed { head, rest } => {
            let mut p = BodyPrefix::default();
            if let Some(h) = head {
                p.push(h);
            }
            (p, rest)
        }
        ReqBody::Stream(inc) => (BodyPrefix::default(), Some(inc)),
    };
    let Some(mut rest) = rest else {
        return Ok((None, Some(read.freeze())));
    };
    loop {
        if rest.is_end_stream() {
            return Ok((None, Some(read.freeze())));
        }
        if read.len() > limit {
            let head = Some(read.freeze());
            return Ok((
                Some(ReqBody::Prefixed {
                    head,
                    rest: Some(rest),
                }),
                None,
            ));
        }
        match rest.frame().await {
            None => return Ok((None, Some(read.freeze()))),
            Some(Err(e)) => return Err(body_error(&*e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.push(data);
                }
            }
        }
    }
}

/// Reads the body whole, up to `limit`, for the rules that read it:
/// returns the body to forward and, when it was all read, its bytes. A
/// longer body streams on, with only what was read at hand.
async fn buffer_whole(
    body: ReqBody,
    limit: usize,
) -> Result<(ReqBody, Option<Bytes>), Response<RespBody>> {
    Ok(match buffer_for_retry(body, limit).await? {
        (_, Some(whole)) => {
            let body = ReqBody::Prefixed {
                head: Some(whole.clone()),
                rest: None,
            };
            (body, Some(whole))
        }
        (Some(rest), None) => (rest, None),
        (None, None) => (
            ReqBody::Prefixed {
                head: None,
                rest: None,
            },
            Some(Bytes::new()),
        ),
    })
}

/// Starts the request's account before its rules track it: the bytes of
/// its body and, when a table counts tokens, its estimate — from the whole
/// body when it was read (`whole`), else from its length and the default
/// budget.
fn account(
    snap: &Snapshot,
    fe: &Frontend,
    parts: &Parts,
    body: &ReqBody,
    whole: Option<&[u8]>,
    tracked: &mut Tracked,
) {
    let len = match whole {
        Some(w) => w.len() as u64,
        None => parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or_else(|| body.size_hint().lower()),
    };
    let estimate = match whole {
        _ if !snap.accounting.tokens || len == 0 => Tokens::default(),
        Some(w) => usage::estimate(w, fe.default_max_tokens),
        None => Tokens {
            input: len.div_ceil(4),
            output: fe.default_max_tokens,
        },
    };
    tracked.account(estimate, len);
}

/// What the rules know of the request's body.
#[derive(Clone, Copy, Default)]
pub(super) struct Content<'a> {
    /// The body's `model`, when something needs it and the body has one.
    pub model: Option<&'a str>,
    /// Something needs the model: a request without one is then an error.
    pub needs_model: bool,
    /// The whole body, when a rule reads other fields of it.
    pub body: Option<&'a [u8]>,
}

/// The routing phases every request goes through, whichever engine carries
/// it: the frontend's `http-request` rules, route selection, then the
/// chosen backend's rules. Returns the backend's index, or the answer the
/// gateway gives instead (a deny, a `return`, no route).
pub(super) fn choose_backend(
    snap: &Snapshot,
    fe: &Frontend,
    conn: &ConnInfo,
    parts: &mut Parts,
    content: Content<'_>,
    tracked: &mut Tracked,
    txn: Option<&mut Txn>,
) -> Result<usize, Box<Response<RespBody>>> {
    let model_name = content.model;
    let key = match fe.client_keys.and_then(|i| snap.keyrings.get(i)) {
        Some(ring) => {
            let k = ring.admit(&mut parts.headers, model_name, tracked)?;
            if let Some(txn) = txn {
                txn.client_key(ring.stats(k).clone());
                txn.log_client_key(ring.log_name(k));
            }
            Some((ring, k))
        }
        None => None,
    };
    let src = conn.client.ip();
    let mut rules = Rules {
        snap,
        src,
        content,
        tracked,
        tarpit: fe.timeouts.tarpit.unwrap_or(fe.timeouts.connect),
    };
    if let Some(resp) = rules.run(&fe.http_request, parts) {
        return Err(Box::new(resp));
    }
    let facts = Facts {
        parts,
        src,
        model: model_name,
        tracked: Some(rules.tracked),
    };
    let Some(bi) = route::select(fe, &facts) else {
        return Err(Box::new(match model_name {
            Some(m) => error::model_not_found(m),
            None if content.needs_model && parts.method == Method::POST => error::model_required(),
            None => error::no_route(&format!(
                "No route for {} {}.",
                parts.method,
                parts.uri.path()
            )),
        }));
    };
    if let Some((ring, k)) = key {
        if !ring.allows_backend(k, bi) {
            return Err(crate::keys::backend_not_allowed());
        }
    }
    let be = &snap.config.backends[bi];
    match rules.run(&be.http_request, parts) {
        Some(resp) => Err(Box::new(resp)),
        None => Ok(bi),
    }
}

/// Backend-side response rewriting: hop-by-hop headers out, then the
/// backend's header rules and `http-response` rules.
pub(super) fn rewrite_response(be: &Backend, headers: &mut HeaderMap) {
    strip_hop_by_hop(headers, false);
    be.response_headers.apply(headers);
    for r in &be.http_response {
        r.action.apply(headers);
    }
}

/// Frontend-side response rewriting, applied to every answer including the
/// gateway's own: the request id, then the frontend's rules.
pub(super) fn finish_response(
    fe: &Frontend,
    headers: &mut HeaderMap,
    request_id: Option<HeaderValue>,
) {
    if let (Some(name), Some(id)) = (&fe.request_id_header, request_id) {
        headers.insert(name.clone(), id);
    }
    fe.response_headers.apply(headers);
    for r in &fe.http_response {
        r.action.apply(headers);
    }
}

/// Runs `http-request` rules in order. A rule whose condition does not hold
/// costs its evaluation only (no allocation); `deny` and `return` answer
/// here, `allow` stops the section's rules.
/// What `http-request` rules see and change besides the request: the
/// snapshot's stick tables and the entries the request tracks.
struct Rules<'a> {
    snap: &'a Snapshot,
    src: IpAddr,
    content: Content<'a>,
    tracked: &'a mut Tracked,
    /// How long `tarpit` holds a request (`timeout tarpit`, else `connect`).
    tarpit: std::time::Duration,
}

/// Marks an answer `http-request tarpit` made: it is sent only after this
/// long (see [`hold_tarpitted`]).
#[derive(Clone, Copy)]
pub(super) struct Tarpitted(pub std::time::Duration);

/// Waits out a tarpit before its answer goes; nothing for other answers.
pub(super) async fn hold_tarpitted<B>(resp: &mut Response<B>) {
    if let Some(Tarpitted(d)) = resp.extensions_mut().remove::<Tarpitted>() {
        tokio::time::sleep(d).await;
    }
}

impl Rules<'_> {
    /// Runs `rules` in order; `Some` is the answer that ends the request
    /// (a deny, a `return`).
    fn run(&mut self, rules: &[HttpReqRule], parts: &mut Parts) -> Option<Response<RespBody>> {
        for r in rules {
            if let Some(c) = &r.cond {
                let facts = Facts {
                    parts,
                    src: self.src,
                    model: self.content.model,
                    tracked: Some(self.tracked),
                };
                if !route::eval(c, &facts) {
                    continue;
                }
            }
            match &r.action {
                ReqAction::SetHeader(n, v) => {
                    parts.headers.insert(n.clone(), v.clone());
                }
                ReqAction::AddHeader(n, v) => {
                    parts.headers.append(n.clone(), v.clone());
                }
                ReqAction::DelHeader(n) => {
                    parts.headers.remove(n);
                }
                ReqAction::ReplacePath(re, to) => {
                    // As in HAProxy, a match replaces the whole path with the
                    // expanded replacement.
                    let new = re.captures(parts.uri.path()).map(|caps| {
                        let mut out = String::new();
                        caps.expand(to, &mut out);
                        out
                    });
                    if let Some(new) = new {
                        set_path(parts, &new);
                    }
                }
                ReqAction::SetPath(p) => set_path(parts, p),
                ReqAction::Deny(status) => {
                    let limited = status.as_u16() == 429;
                    let code = if limited { "rate_limited" } else { "denied" };
                    let mut resp = error::error_response(
                        *status,
                        code,
                        "The request was denied by the gateway's rules.",
                    );
                    let wait = r.cond.as_ref().filter(|_| limited).and_then(|c| {
                        let facts = Facts {
                            parts,
                            src: self.src,
                            model: self.content.model,
                            tracked: Some(self.tracked),
                        };
                        retry_after(c, &facts, self.tracked)
                    });
                    if let Some(wait) = wait {
                        let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
                        resp.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    }
                    resp.extensions_mut().insert(Denied);
                    return Some(resp);
                }
                ReqAction::Return {
                    status,
                    content_type,
                    body,
                } => {
                    let mut resp = Response::new(match body {
                        Some(b) => RespBody::full(b.clone()),
                        None => RespBody::empty(),
                    });
                    *resp.status_mut() = *status;
                    if let Some(ct) = content_type {
                        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                    }
                    return Some(resp);
                }
                ReqAction::TrackSc { sc, key, table } => {
                    if let Some(t) = self.snap.table(table) {
                        if let Some(k) = track_key(key, &t.key_type, parts, self.src, self.content)
                        {
                            self.tracked.track(*sc, t, k);
                        }
                    }
                }
                ReqAction::IncGpc { sc, idx } => {
                    self.tracked
                        .add(*sc, &[(Data::Gpc(*idx), 1), (Data::GpcRate(*idx), 1)]);
                }
                ReqAction::SetGpt0 { sc, value } => self.tracked.set(*sc, Data::Gpt0, *value),
                ReqAction::Tarpit(status) => {
                    let mut resp = error::error_response(
                        *status,
                        "denied",
                        "The request was denied by the gateway's rules.",
                    );
                    resp.extensions_mut().insert(Tarpitted(self.tarpit));
                    resp.extensions_mut().insert(Denied);
                    return Some(resp);
                }
                ReqAction::Allow => break,
            }
        }
        None
    }
}

/// How long until a request denied by `cond` would pass: for each rate
/// limit in it that holds now (`scN_<rate> gt|ge N`), the time until the
/// rate leaves room for one more request; the longest of them. `None` when
/// the condition holds for another reason (nothing to wait for that we
/// can tell).
fn retry_after(cond: &Expr, facts: &Facts, tracked: &Tracked) -> Option<std::time::Duration> {
    let mut waits = Vec::new();
    let mut visit = |e: &Expr| {
        let Expr::Test(Condition::Int(IntFetch::StickCounter { sc, data }, op, n)) = e else {
            return;
        };
        if !data.is_rate() || !route::eval(e, facts) {
            return;
        }
        let at_most = match op {
            IntOp::Gt => n - 1,
            IntOp::Ge => n - 2,
            _ => return,
        };
        waits.extend(tracked.retry_after(*sc, *data, at_most));
    };
    cond.walk(&mut visit);
    waits.into_iter().max()
}

/// The key a `track-sc` rule names, typed for its table; `None` when the
/// request has none (an absent header: nothing is tracked, as in HAProxy).
fn track_key(
    key: &str,
    key_type: &str,
    parts: &Parts,
    src: IpAddr,
    content: Content<'_>,
) -> Option<Key> {
    let header = key
        .strip_prefix("req.hdr(")
        .or_else(|| key.strip_prefix("hdr("))
        .and_then(|k| k.strip_suffix(')'));
    let raw: std::borrow::Cow<'_, [u8]> = match header {
        Some(name) => parts.headers.get(name)?.as_bytes().into(),
        None if key == MODEL_KEY => content.model?.as_bytes().into(),
        None if key == "src" => {
            if matches!(key_type, "ip" | "ipv6") {
                return Some(Key::ip(src));
            }
            src.to_string().into_bytes().into()
        }
        None => match json::text_at(content.body?, body_key_path(key)?)? {
            std::borrow::Cow::Borrowed(s) => s.as_bytes().into(),
            std::borrow::Cow::Owned(s) => s.into_bytes().into(),
        },
    };
    match key_type {
        "ip" | "ipv6" => std::str::from_utf8(&raw)
            .ok()?
            .trim()
            .parse::<IpAddr>()
            .ok()
            .map(Key::ip),
        "integer" => std::str::from_utf8(&raw)
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
            .map(Key::Int),
        _ => Some(Key::bytes(&raw)),
    }
}

/// Replaces the request path, keeping the query string; a path that would
/// not form a valid URI leaves the request unchanged.
fn set_path(parts: &mut Parts, path: &str) {
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let Ok(pq) = pq.parse() else { return };
    let old = parts.uri.clone();
    let mut up = old.clone().into_parts();
    up.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(up).unwrap_or(old);
}

/// `Connection: upgrade` with an `Upgrade` header, on HTTP/1.1.
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

fn may_have_body(method: &Method, body: &ClientBody) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && !body.is_end_stream()
}

/// Reads the body until its `model` is known (or the body ends), applies a
/// model alias by rewriting the buffered bytes, and hands back a body that
/// replays what was read and streams the rest.
async fn inspect_model(
    fe: &Frontend,
    parts: &mut Parts,
    mut incoming: ClientBody,
) -> Result<(ReqBody, Option<String>), Response<RespBody>> {
    let mut read = BodyPrefix::default();
    let mut scanner = ModelScanner::default();
    let mut ended = false;
    let found = loop {
        match scanner.scan(read.as_slice()) {
            Scan::Found(r) => break Some(r),
            Scan::Absent => break None,
            Scan::Pending if ended => break None,
            Scan::Pending => {}
        }
        if read.len() > fe.body_limit {
            return Err(error::too_large(fe.body_limit));
        }
        match incoming.frame().await {
            None => ended = true,
            Some(Err(e)) => return Err(body_error(&*e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.push(data);
                }
            }
        }
    };
    let rest = (!ended && !incoming.is_end_stream()).then_some(incoming);
    let head = read.freeze();
    let Some(range) = found else {
        return Ok((
            ReqBody::Prefixed {
                head: Some(head),
                rest,
            },
            None,
        ));
    };
    let (head, name) = resolve_model(fe, parts, head, range).map_err(|e| *e)?;
    Ok((
        ReqBody::Prefixed {
            head: Some(head),
            rest,
        },
        Some(name),
    ))
}

/// Decodes the model found at `range` of the body read so far (`head`) and
/// applies the frontend's alias: the alias target replaces the value in the
/// bytes to forward, and `Content-Length` follows. Returns the bytes to
/// forward in place of `head` and the model name routing sees.
pub(super) fn resolve_model(
    fe: &Frontend,
    parts: &mut Parts,
    head: Bytes,
    range: std::ops::Range<usize>,
) -> Result<(Bytes, String), Box<Response<RespBody>>> {
    let Some(name) = model::decode(&head[range.clone()]).map(|c| c.into_owned()) else {
        return Err(Box::new(error::bad_request(
            "The `model` field is not a valid JSON string.",
        )));
    };
    let Some((_, target)) = fe.model_aliases.iter().find(|(a, _)| *a == name) else {
        return Ok((head, name));
    };
    let rewritten = splice_model(&head, range.clone(), target);
    if let Some(cl) = parts.headers.get(header::CONTENT_LENGTH) {
        let len = cl.to_str().ok().and_then(|s| s.parse::<u64>().ok());
        let Some(len) = len else {
            return Err(Box::new(error::bad_request("Invalid Content-Length.")));
        };
        // `head` may be only the start of the body: the length moves by
        // the difference.
        let new_len = (len + rewritten.len() as u64).saturating_sub(head.len() as u64);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(new_len));
    }
    Ok((rewritten, target.clone()))
}

/// The part of a request body read so far. Most bodies arrive in one frame,
/// which is kept as it is; only a second frame makes it a copy.
#[derive(Default)]
enum BodyPrefix {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl BodyPrefix {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::take(self) {
            BodyPrefix::Empty => BodyPrefix::One(data),
            BodyPrefix::One(first) => {
                let mut b = BytesMut::with_capacity(first.len() + data.len());
                b.extend_from_slice(&first);
                b.extend_from_slice(&data);
                BodyPrefix::Many(b)
            }
            BodyPrefix::Many(mut b) => {
                b.extend_from_slice(&data);
                BodyPrefix::Many(b)
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            BodyPrefix::Empty => &[],
            BodyPrefix::One(b) => b,
            BodyPrefix::Many(b) => b,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn freeze(self) -> Bytes {
        match self {
            BodyPrefix::Empty => Bytes::new(),
            BodyPrefix::One(b) => b,
            BodyPrefix::Many(b) => b.freeze(),
        }
    }
}

/// Keeps the client's request id, or makes one.
pub(super) fn request_id(fe: &Frontend, headers: &HeaderMap) -> Option<HeaderValue> {
    let name = fe.request_id_header.as_ref()?;
    if let Some(v) = headers.get(name) {
        if !v.is_empty() && v.len() <= 200 {
            return Some(v.clone());
        }
    }
    Some(hex_id(fastrand::u128(..)))
}

fn hex_id(v: u128) -> HeaderValue {
    let mut s = [0u8; 32];
    hex_into(&v.to_be_bytes(), &mut s);
    HeaderValue::from_bytes(&s).unwrap_or(HeaderValue::from_static("0"))
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
}

/// W3C trace context: a valid incoming `traceparent` keeps its trace id and
/// flags and gets the gateway's span as parent; otherwise a new trace starts.
fn traceparent(incoming: Option<&HeaderValue>) -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let span = fastrand::u64(1..).to_be_bytes();
    hex_into(&span, &mut out[36..52]);
    match incoming
        .map(|v| v.as_bytes())
        .filter(|v| valid_traceparent(v))
    {
        Some(v) => {
            out[3..35].copy_from_slice(&v[3..35]);
            out[53..55].copy_from_slice(&v[53..55]);
        }
        None => {
            hex_into(&fastrand::u128(1..).to_be_bytes(), &mut out[3..35]);
            out[53..55].copy_from_slice(b"01");
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(
        "00-00000000000000000000000000000001-0000000000000001-00",
    ))
}

fn valid_traceparent(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    v.len() >= 55
        && &v[..3] == b"00-"
        && v[35] == b'-'
        && v[52] == b'-'
        && hex(&v[3..35])
        && hex(&v[36..52])
        && hex(&v[53..55])
        && v[3..35].iter().any(|&c| c != b'0')
        && v[36..52].iter().any(|&c| c != b'0')
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus
/// whatever the `Connection` header names.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names instead of a
    // hashed lookup per candidate.
    let hop = |n: &HeaderName| {
        n == header::CONNECTION
            || n == header::UPGRADE
            || n == header::TE
            || n == header::TRAILER
            || n == header::TRANSFER_ENCODING
            || n == KEEP_ALIVE
            || n == PROXY_CONNECTION
    };
    if !h.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    if !keep_upgrade {
        h.remove(header::CONNECTION);
        h.remove(header::UPGRADE);
    }
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    h.remove(header::TE);
    h.remove(header::TRAILER);
    h.remove(header::TRANSFER_ENCODING);
}

pub(super) fn rewrite_request(
    fe: &Frontend,
    be: &Backend,
    conn: &ConnInfo,
    parts: &mut Parts,
    request_id: Option<&HeaderValue>,
    upgrade: bool,
) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h, upgrade);
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // An h2 client has no Host header; HTTP/1.1 upstreams need one.
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    let ip = conn.client.ip();
    if fe.forward_for.x_forwarded_for || be.x_forwarded_for {
        append_list(h, &X_FORWARDED_FOR, &ip.to_string());
    }
    if fe.forward_for.forwarded {
        let mut v = match ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        v.push_str(if conn.tls {
            ";proto=https"
        } else {
            ";proto=http"
        });
        if let Some(host) = h.get(header::HOST).and_then(|v| v.to_str().ok()) {
            if host
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                v.push_str(";host=\"");
                v.push_str(host);
                v.push('"');
            }
        }
        append_list(h, &FORWARDED, &v);
    }
    if let (Some(name), Some(id)) = (&fe.request_id_header, request_id) {
        h.insert(name.clone(), id.clone());
    }
    let tp = traceparent(h.get(&TRACEPARENT));
    h.insert(TRACEPARENT.clone(), tp);
    fe.request_headers.apply(h);
    be.request_headers.apply(h);
    if let Some(cred) = &be.credential {
        // The client's own credentials are for this gateway, never for the
        // provider behind it.
        h.remove(header::AUTHORIZATION);
        h.remove(&X_API_KEY);
        h.remove(&API_KEY);
        h.insert(cred.header.clone(), cred.value.clone());
    }
    if let Some(host) = &be.host {
        h.insert(header::HOST, host.clone());
    }
}

fn append_list(h: &mut HeaderMap, name: &HeaderName, item: &str) {
    let v = match h.get(name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {item}"),
        _ => item.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(name.clone(), v);
    }
}

/// The path and query to send upstream: the client's, with the backend's
/// path prefix rewrite applied. Without a rewrite it is a reference-counted
/// clone, no copy.
pub(super) fn upstream_path(be: &Backend, uri: &Uri) -> Result<PathAndQuery, http::Error> {
    Ok(match (&be.path_rewrite, uri.path_and_query()) {
        (Some((from, to)), Some(pq)) if pq.path().starts_with(from.as_str()) => {
            PathAndQuery::try_from(format!("{to}{}", &pq.as_str()[from.len()..]))?
        }
        (_, Some(pq)) if pq.as_str().starts_with('/') => pq.clone(),
        (_, Some(pq)) => PathAndQuery::try_from(format!("/{}", pq.as_str()))?,
        (_, None) => PathAndQuery::from_static("/"),
    })
}

fn upstream_uri(
    be: &Backend,
    uri: &Uri,
    up: &crate::upstream::Upstream,
) -> Result<Uri, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(up.scheme.clone());
    parts.authority = Some(up.authority.clone());
    parts.path_and_query = Some(upstream_path(be, uri)?);
    Ok(Uri::from_parts(parts)?)
}

/// The answer to a request whose body could not be read.
pub(super) fn body_error(e: &(dyn std::error::Error + 'static)) -> Response<RespBody> {
    if BodyTooSlow::caused(e) {
        body_too_slow()
    } else if let Some(why) = malformed_body(e) {
        error::bad_request(&format!("The request body is malformed: {why}."))
    } else {
        error::bad_request("The request body could not be read.")
    }
}

pub(super) fn body_too_slow() -> Response<RespBody> {
    error::error_response(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "The request body was not received in time.",
    )
}

/// Why the request body was refused, when `e` or what caused it is a
/// body the HTTP/1 guard found malformed after its start went on (inside
/// the `io::Error` hyper read it as, whose `source` skips over it).
fn malformed_body(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut src = Some(e);
    while let Some(s) = src {
        let malformed = s
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|e| e.downcast_ref::<super::h1::guard::MalformedBody>());
        if let Some(m) = malformed {
            return Some(m.0);
        }
        src = s.source();
    }
    None
}

fn upstream_error(be: &Backend, e: &hyper_util::client::legacy::Error) -> Response<RespBody> {
    let timed_out = {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        let mut t = false;
        while let Some(s) = src {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                t = true;
            }
            src = s.source();
        }
        t
    };
    tracing::debug!(backend = %be.name, error = %e, "upstream request failed");
    if timed_out {
        error::gateway_timeout("Connecting to the upstream timed out.")
    } else if e.is_connect() {
        error::bad_gateway("The upstream could not be reached.")
    } else {
        error::bad_gateway("The upstream connection failed before a complete response.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_keeps_trace_and_flags() {
        let inc =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = traceparent(Some(&inc));
        let s = out.to_str().unwrap();
        assert_eq!(&s[..36], "00-4bf92f3577b34da6a3ce929d0e0e4736-");
        assert_ne!(&s[36..52], "00f067aa0ba902b7");
        assert!(s.ends_with("-01"));
        assert!(valid_traceparent(out.as_bytes()));
    }

    #[test]
    fn traceparent_starts_a_trace_when_missing_or_invalid() {
        for inc in [
            None,
            Some(HeaderValue::from_static("garbage")),
            Some(HeaderValue::from_static(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )),
        ] {
            let out = traceparent(inc.as_ref());
            assert!(valid_traceparent(out.as_bytes()), "{out:?}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
