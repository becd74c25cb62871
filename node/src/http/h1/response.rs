//! The upstream's response head, read once: what the engine needs from it
//! (status, framing, keep-alive, whether it is an event stream, what the
//! balancer hears) and its header lines on their way to the client.
//!
//! Most responses go on as they came, minus hop-by-hop headers: nothing in
//! the configuration acts on them. Those are copied line by line in the same
//! pass that reads them, never put in a header map (hashing every name and
//! allocating the map's tables was a tenth of a proxied request's
//! instructions). A head that rules or rewrites act on, or that holds what a
//! copy cannot carry, is taken into a map as before.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::framing::{Framing, ResponseFraming};
use super::{has_token, MAX_HEADERS};
use crate::config::{Backend, Frontend};
use crate::health::outcome_of;
use crate::http::proxy::is_event_stream;
use crate::runtime::Outcome;

pub(super) struct UpstreamResponse {
    pub status: StatusCode,
    pub framing: Framing,
    /// HTTP/1.1 without `Connection: close`.
    pub keep_alive: bool,
    /// `text/event-stream`: a break mid-body is told with an `event: error`.
    pub sse: bool,
    /// What the server's health and balancer hear of this answer.
    pub outcome: Outcome,
    pub headers: ResponseHeaders,
}

pub(super) enum ResponseHeaders {
    /// The status line and the header lines to forward, copied: names
    /// lower-cased (as a map writes them), hop-by-hop lines and the header
    /// the gateway sets itself left out. No blank line yet: the gateway's
    /// own lines follow.
    Copied(Vec<u8>),
    /// For rules and rewrites to act on, and for what a copy cannot carry:
    /// a `Connection` header naming other headers, codings besides
    /// `chunked`, a 429's `Retry-After`.
    Map(HeaderMap),
}

/// How a response head may be taken in.
#[derive(Clone, Copy)]
pub(super) enum HeadTake<'a> {
    Map,
    /// Copied line by line; `replaced` is the header the gateway sets in
    /// every answer (the request id), left out of the copy.
    Copied {
        replaced: Option<&'a HeaderName>,
    },
}

impl<'a> HeadTake<'a> {
    /// A copy when no header rule or `http-response` rule of the frontend
    /// or backend acts on the response.
    pub fn for_exchange(fe: &'a Frontend, be: &Backend, request_id: bool) -> Self {
        let ruled = !fe.response_headers.is_empty()
            || !fe.http_response.is_empty()
            || !be.response_headers.is_empty()
            || !be.http_response.is_empty();
        if ruled {
            HeadTake::Map
        } else {
            HeadTake::Copied {
                replaced: fe.request_id_header.as_ref().filter(|_| request_id),
            }
        }
    }
}

/// Parses a complete response head. `room`: what the copy should have
/// space for besides the head (the body bytes that came with it, to go out
/// in the same write). `None`: malformed, or its framing is.
pub(super) fn parse_response(
    head: &Bytes,
    take: HeadTake<'_>,
    head_request: bool,
    room: usize,
) -> Option<UpstreamResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut slots);
    match r.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let status = StatusCode::from_u16(r.code?).ok()?;
    let http11 = r.version == Some(1);
    if status.is_informational() {
        // Looked at for its status only: skipped, or refused (a 101).
        return Some(UpstreamResponse {
            status,
            framing: Framing::Empty,
            keep_alive: false,
            sse: false,
            outcome: Outcome::Status(status.as_u16()),
            headers: ResponseHeaders::Map(HeaderMap::new()),
        });
    }
    if let HeadTake::Copied { replaced } = take {
        let room = 256 + head.len() + room;
        if let Some(resp) = copy_response(status, http11, r.headers, replaced, head_request, room) {
            return Some(resp);
        }
    }
    map_response(head, status, http11, r.headers, head_request)
}

/// The copy, or `None` when the head needs the map (which also finds
/// whatever is malformed in it).
fn copy_response(
    status: StatusCode,
    http11: bool,
    headers: &[httparse::Header<'_>],
    replaced: Option<&HeaderName>,
    head_request: bool,
    room: usize,
) -> Option<UpstreamResponse> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let mut out = super::buffers::take_out(room);
    put_status_line(&mut out, status);
    let mut framing = ResponseFraming::default();
    let mut close = false;
    let mut content_type = None;
    for h in headers {
        let name = h.name.as_bytes();
        match hop_by_hop(name) {
            Some(Hop::Connection) => {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !(token.is_empty()
                        || token.eq_ignore_ascii_case(b"keep-alive")
                        || token.eq_ignore_ascii_case(b"upgrade"))
                    {
                        // It names a header that must not go on.
                        return None;
                    }
                }
                continue;
            }
            Some(Hop::TransferEncoding) => {
                let only_chunked = h.value.split(|&b| b == b',').all(|c| {
                    let c = c.trim_ascii();
                    c.is_empty() || c.eq_ignore_ascii_case(b"chunked")
                });
                if !only_chunked {
                    return None;
                }
                framing.transfer_encoding(h.value);
                continue;
            }
            Some(Hop::Other) => continue,
            None => {}
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            framing.content_length(h.value);
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_type.get_or_insert(h.value);
        } else if replaced.is_some_and(|r| name.eq_ignore_ascii_case(r.as_str().as_bytes())) {
            continue;
        }
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let framing = framing.framing(head_request, status.as_u16()).ok()?;
    Some(UpstreamResponse {
        status,
        framing,
        keep_alive: http11 && !close,
        sse: content_type.is_some_and(is_event_stream),
        outcome: Outcome::Status(status.as_u16()),
        headers: ResponseHeaders::Copied(out),
    })
}

fn map_response(
    head: &Bytes,
    status: StatusCode,
    http11: bool,
    lines: &[httparse::Header<'_>],
    head_request: bool,
) -> Option<UpstreamResponse> {
    let mut headers = HeaderMap::with_capacity(lines.len() + 4);
    for h in lines {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value)).ok()?;
        headers.append(name, value);
    }
    let framing = super::framing::response(&headers, head_request, status.as_u16()).ok()?;
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_event_stream(v.as_bytes()));
    Some(UpstreamResponse {
        status,
        framing,
        keep_alive: http11 && !has_token(&headers, "close"),
        sse,
        outcome: outcome_of(status, &headers),
        headers: ResponseHeaders::Map(headers),
    })
}

enum Hop {
    Connection,
    TransferEncoding,
    Other,
}

/// The hop-by-hop headers (RFC 9110 §7.6.1, and the unofficial
/// `Keep-Alive` and `Proxy-Connection`): they end at this hop.
fn hop_by_hop(name: &[u8]) -> Option<Hop> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 if is("te") => Some(Hop::Other),
        7 if is("upgrade") || is("trailer") => Some(Hop::Other),
        10 if is("connection") => Some(Hop::Connection),
        10 if is("keep-alive") => Some(Hop::Other),
        16 if is("proxy-connection") => Some(Hop::Other),
        17 if is("transfer-encoding") => Some(Hop::TransferEncoding),
        _ => None,
    }
}

pub(super) fn put_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(take: HeadTake<'_>, s: &str) -> Option<UpstreamResponse> {
        parse_response(&Bytes::copy_from_slice(s.as_bytes()), take, false, 0)
    }

    fn copied(s: &str) -> UpstreamResponse {
        parse(HeadTake::Copied { replaced: None }, s).expect("parses")
    }

    fn lines(r: &UpstreamResponse) -> &str {
        match &r.headers {
            ResponseHeaders::Copied(out) => std::str::from_utf8(out).expect("ascii"),
            ResponseHeaders::Map(_) => panic!("taken into a map"),
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        for take in [HeadTake::Map, HeadTake::Copied { replaced: None }] {
            let p = |s: &str| parse(take, s).expect("parses");
            assert!(p("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
            assert!(!p("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").keep_alive);
            assert!(!p("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
            assert!(!p("HTTP/1.0 200 OK\r\n\r\n").keep_alive);
            assert!(parse(take, "HTTP/1.1 2000 X\r\n\r\n").is_none());
        }
    }

    #[test]
    fn a_copy_drops_hop_by_hop_lines_and_lowercases_names() {
        let r = copied(
            "HTTP/1.1 200 Fine\r\nContent-Type: text/event-stream\r\nConnection: keep-alive\r\n\
             Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Trace: a, b\r\n\
             Proxy-Connection: x\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\n\r\n",
        );
        assert_eq!(
            lines(&r),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-trace: a, b\r\n"
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.sse && r.keep_alive);
        assert_eq!(r.outcome, Outcome::Status(200));
    }

    #[test]
    fn a_copy_leaves_out_the_header_the_gateway_sets() {
        let id = HeaderName::from_static("x-request-id");
        let r = parse(
            HeadTake::Copied {
                replaced: Some(&id),
            },
            "HTTP/1.1 200 OK\r\nX-Request-ID: up\r\nContent-Length: 2\r\n\r\n",
        )
        .expect("parses");
        assert_eq!(lines(&r), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
        assert_eq!(r.framing, Framing::Length(2));
    }

    #[test]
    fn what_a_copy_cannot_carry_goes_to_the_map() {
        for head in [
            // A header named by Connection must not go on.
            "HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            // Codings other than chunked are forwarded as the map writes them.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            // A 429's Retry-After is read for the balancer.
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n\r\n",
            // Broken framing is found (and refused) there.
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        ] {
            let taken = parse(HeadTake::Copied { replaced: None }, head);
            assert!(
                taken.is_none_or(|r| matches!(r.headers, ResponseHeaders::Map(_))),
                "{head:?}"
            );
        }
        let r = copied("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\n\r\n");
        assert!(matches!(r.outcome, Outcome::Retry429(Some(_))));
        assert!(parse(
            HeadTake::Copied { replaced: None },
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"
        )
        .is_none());
    }

    #[test]
    fn both_ways_agree_on_framing_and_streams() {
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/event-stream\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\n",
        ] {
            let map = parse(HeadTake::Map, head).expect("parses");
            let copy = copied(head);
            assert_eq!(map.framing, copy.framing, "{head:?}");
            assert_eq!(map.sse, copy.sse, "{head:?}");
            assert_eq!(map.keep_alive, copy.keep_alive, "{head:?}");
            assert_eq!(map.outcome, copy.outcome, "{head:?}");
        }
    }

    #[test]
    fn interim_answers_are_read_for_their_status() {
        let r = copied("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        assert_eq!(r.status, StatusCode::EARLY_HINTS);
    }
}
