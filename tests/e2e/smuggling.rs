//! Request smuggling and malformed framing: the gateway's policy, written
//! so an operator can use it as a reference, and the matrix that holds the
//! gateway to it.
//!
//! # Policy
//!
//! The gateway decides where every request ends, and the upstream only
//! ever sees that boundary: a request whose framing two parsers could read
//! two ways is refused, never guessed at, and the connection is closed
//! after the answer (`Connection: close`), because nothing after a
//! doubtful boundary can be trusted to start a request. Requests the
//! client pipelined before the bad one are answered and forwarded as
//! usual; nothing of the bad one, and nothing after it, is forwarded.
//! What is accepted is forwarded in one canonical form (one plain
//! `Content-Length`, or `Transfer-Encoding` ending in a single lowercase
//! `chunked`; CRLF line ends), so a stricter or laxer parser behind the
//! gateway has nothing left to read differently.
//!
//! Refused with **400 Bad Request**:
//!
//! - `Transfer-Encoding` and `Content-Length` together, in either order
//!   and whatever the obfuscation. RFC 9112 §6.3 would let a server go by
//!   the coding and close after the response (HAProxy does that); such a
//!   request is an attack far more often than a client bug, so it is
//!   refused instead.
//! - A transfer-coding list that does not end in `chunked` (`xchunked`,
//!   `chunked, identity`: RFC 9112 §6.3 rule 4), that applies `chunked`
//!   twice (§7, in one header or two), or that has an empty element
//!   (HAProxy's rule); `Transfer-Encoding` in an HTTP/1.0 request (§6.1:
//!   the framing is faulty).
//! - `Content-Length` values that differ (`4` and `5`, `1,2`), or any
//!   that is not a plain run of at most 19 digits (`+5`, `-1`, `5 5`,
//!   `0x10`, `1e3`, empty, or past 2^64). A list of one repeated value
//!   (`5, 5`) is the one lenient case RFC 9110 §8.6 allows; it is
//!   forwarded as `5` (and `007` as `7`).
//! - Header syntax RFC 9112 §5 tells a server to refuse: obs-fold
//!   continuation lines, whitespace before the first header or before a
//!   colon, and NUL, bare CR or other control characters in a value.
//! - A line ending in a bare LF anywhere in the head (RFC 9112 §2.2 lets
//!   a recipient accept LF alone, and HAProxy does; a gateway that did
//!   would see other header lines, or another end of the head, than a
//!   strict parser behind or in front of it), or a bare CR.
//! - A request line that is not exactly `method SP target SP version`
//!   (two spaces, a tab), a method that is not a token, a target with a
//!   fragment, a non-ASCII byte or a control character, an HTTP/0.9
//!   request line; a target form the method does not take (authority-form
//!   outside `CONNECT`, `*` outside `OPTIONS`: RFC 9112 §3.2).
//! - An HTTP/1.1 request without `Host`, with two (even equal ones), or
//!   with an invalid one (RFC 9112 §3.2: "MUST respond with a 400");
//!   an absolute-form target whose host or port is not the `Host`
//!   header's (HAProxy's rule: routing and the upstream would go by
//!   different hosts).
//! - A chunked body with a chunk size that is not plain hex (`0x10`, `-1`,
//!   `+5`, ` 5`, more than 15 digits), whitespace inside a size (`1 0`),
//!   a bare CR or LF on a size line or in an extension, chunk data not
//!   followed by CRLF, an extension over 1 KiB on one size line, a
//!   trailer line that is not `name: value` (obs-fold included), or a
//!   trailer field that would change how the request is framed, routed,
//!   authorised or read (`Content-Length`, `Transfer-Encoding`, `Host`,
//!   `Authorization`, `Content-Type`, … as RFC 9110 §6.5.1 lists).
//!   Whitespace between the size and `;` or the line end is allowed
//!   (hyper and HAProxy do; no parser reads another size from it).
//!
//! Refused with another status:
//!
//! - **501 Not Implemented**: a transfer coding other than the registered
//!   `gzip`, `deflate`, `compress` (and `x-` forms) before the final
//!   `chunked`, such as `identity, chunked` (`identity` left the registry
//!   with RFC 7230): RFC 9112 §6.1 gives 501 for a coding the server does
//!   not understand, and the gateway does not relay what it cannot name.
//! - **431 Request Header Fields Too Large**: a head over 64 KiB, or more
//!   than 100 header lines.
//! - **414 URI Too Long**: 64 KiB without the request line ending (as
//!   HAProxy and hyper tell the two apart).
//! - **413 Content Too Large** is unchanged: a body over `body_limit` that
//!   must be read to route on its model (tested in `routing.rs`).
//!
//! Accepted, because no parser can read them two ways once the gateway
//! has re-written the head: optional whitespace around a
//! `Transfer-Encoding` value (` chunked`, `\tchunked`), any letter case of
//! header names and codings (`tRaNsFeR-eNcOdInG: ChUnKeD`), registered
//! codings before `chunked` (`gzip, chunked`), chunk extensions and
//! allowed trailers (relayed as they are on the HTTP/1 engine; the
//! general path drops trailers, as hyper does).
//!
//! A chunked body found malformed after its start was already streamed
//! upstream cannot be taken back: the upstream connection is dropped with
//! the request incomplete (the upstream never sees it end), the client
//! gets a 400 and its connection is closed, and the failure does not
//! count against the upstream server.
//!
//! HTTP/2 (h2c here; h2 over TLS is the same code): the h2 library resets
//! the stream (or, for a field it cannot decode, ends the connection) for
//! connection-specific fields (`connection`, `keep-alive`,
//! `proxy-connection`, `transfer-encoding`, `upgrade`, a `te` other than
//! `trailers`), CR, LF or NUL in a field name or value, uppercase names,
//! missing, repeated, unknown or misplaced pseudo-headers, and a
//! `content-length` the DATA frames disagree with; the gateway answers
//! 400 for a field value with leading or trailing whitespace (RFC 9113
//! §8.2.1) and for two `host` fields without `:authority`. None of these
//! reaches the HTTP/1 upstream as a request. A request never carries two
//! authorities upstream: with `:authority` there, a `host` field is
//! replaced by it (HAProxy's rule; §8.3.1 would allow refusing a `host`
//! that differs, but an intermediary forwarding over h2 may keep its
//! client's `host`, and this gateway does so towards h2 upstreams). A
//! `content-length` the library accepts repeated or with leading zeros
//! goes upstream as one plain number.
//!
//! # How the matrix checks it
//!
//! Every HTTP/1 case is a raw byte string written in one piece by a raw
//! client, on both request paths: the HTTP/1 engine (after a first request
//! it serves itself) and the general path (after a first `HTTP/1.0`
//! keep-alive request, which the engine hands to hyper together with the
//! rest of the connection). For each case the answers are read (the
//! expected status, `Connection: close`, then the close), and a recording
//! upstream must have received exactly the requests the gateway accepted
//! (no byte of the refused one, nothing after it), each in canonical
//! framing.

use std::fmt::Write as _;
use std::time::Duration;

use llmgw_e2e::{one_backend, Gateway, RawClient, RawMessage, RawUpstream, UpstreamConn};

/// Long enough for anything on loopback; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long bytes that must never reach the upstream get to show up anyway.
const SETTLE: Duration = Duration::from_millis(100);

/// A request that must never reach the upstream: it follows the body of a
/// bad request, where a parser reading that body differently would find it.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The gateway's own HTTP/1 engine.
    Engine,
    /// hyper, behind the engine's guard, after a handoff.
    General,
}

impl Path {
    /// The first request on every connection: served by the engine, or
    /// handed to the general path with the rest of the connection.
    fn primer(self) -> &'static str {
        match self {
            Path::Engine => "GET /primer HTTP/1.1\r\nHost: x\r\n\r\n",
            Path::General => "GET /primer HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        }
    }
}

#[derive(Debug)]
enum Want {
    /// The requests before the bad one are answered 200 and forwarded
    /// (their paths, in order); the bad one gets `status`, the connection
    /// closes, and nothing else reaches the upstream.
    Refused {
        status: u16,
        before: &'static [&'static str],
    },
    /// Every request is answered 200 and forwarded with canonical framing.
    Served(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn refused(name: &'static str, bytes: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        want: Want::Refused {
            status,
            before: &[],
        },
    }
}

fn after(
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    before: &'static [&'static str],
    status: u16,
) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        want: Want::Refused { status, before },
    }
}

fn served(name: &'static str, bytes: impl Into<Vec<u8>>, paths: &'static [&'static str]) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        want: Want::Served(paths),
    }
}

/// `POST /bad` with `headers` (CRLF-terminated lines), a chunked-looking
/// body and the smuggled request after it.
fn bad_post(headers: &str) -> String {
    format!("POST /bad HTTP/1.1\r\nHost: x\r\n{headers}\r\n0\r\n\r\n{SMUGGLED}")
}

/// `POST /bad`, chunked, with `body` and the smuggled request after it.
fn bad_chunked(body: &str) -> String {
    format!("POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}{SMUGGLED}")
}

/// `GET /bad` with `headers`, then the smuggled request.
fn bad_get(headers: &str) -> String {
    format!("GET /bad HTTP/1.1\r\nHost: x\r\n{headers}\r\n{SMUGGLED}")
}

/// `POST /ok` with `headers` and `body`, then `GET /next`.
fn ok_post(headers: &str, body: &str) -> String {
    format!(
        "POST /ok HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
}

const OK_NEXT: &[&str] = &["/ok", "/next"];

fn cases() -> Vec<Case> {
    let te = "Transfer-Encoding: chunked\r\n";
    let mut v = vec![
        // --- Content-Length and Transfer-Encoding together -----------------
        refused("cl-then-te", bad_post(&format!("Content-Length: 5\r\n{te}")), 400),
        refused("te-then-cl", bad_post(&format!("{te}Content-Length: 5\r\n")), 400),
        refused("cl-te-tab", bad_post("Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n"), 400),
        refused("cl-te-xchunked", bad_post("Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n"), 400),
        refused("cl-te-mixed-case", bad_post("Content-Length: 5\r\ntRaNsFeR-eNcOdInG: ChUnKeD\r\n"), 400),
        refused("cl-te-space-before-colon", bad_post("Content-Length: 5\r\nTransfer-Encoding : chunked\r\n"), 400),
        refused("cl-te-obs-fold", bad_post("Content-Length: 5\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n"), 400),
        refused("cl-te-identity-then-chunked", bad_post(&format!("Content-Length: 5\r\nTransfer-Encoding: identity\r\n{te}")), 400),
        refused("cl-te-http10", "POST /bad HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        // --- Transfer-Encoding alone ------------------------------------------
        refused("te-xchunked", bad_post("Transfer-Encoding: xchunked\r\n"), 400),
        refused("te-chunked-identity", bad_post("Transfer-Encoding: chunked, identity\r\n"), 400),
        refused("te-identity-chunked", bad_post("Transfer-Encoding: identity, chunked\r\n"), 501),
        refused("te-unknown-coding", bad_post("Transfer-Encoding: br, chunked\r\n"), 501),
        refused("te-chunked-twice", bad_post("Transfer-Encoding: chunked, chunked\r\n"), 400),
        refused("te-chunked-two-headers", bad_post(&format!("{te}{te}")), 400),
        refused("te-empty", bad_post("Transfer-Encoding:\r\n"), 400),
        refused("te-empty-element", bad_post("Transfer-Encoding: , chunked\r\n"), 400),
        refused("te-space-before-colon", bad_post("Transfer-Encoding : chunked\r\n"), 400),
        refused("te-http10", "POST /bad HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        refused("te-obs-fold-value", bad_post("Transfer-Encoding: gzip,\r\n chunked\r\n"), 400),
        served("te-leading-space", ok_post("Transfer-Encoding:  chunked\r\n", "2\r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        served("te-leading-tab", ok_post("Transfer-Encoding:\tchunked\r\n", "2\r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        served("te-mixed-case", ok_post("tRaNsFeR-eNcOdInG: ChUnKeD\r\n", "2\r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        served("te-gzip-chunked", ok_post("Transfer-Encoding: gzip, chunked\r\n", "2\r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        // --- Content-Length ---------------------------------------------------
        refused("cl-two-values", bad_post("Content-Length: 4\r\nContent-Length: 5\r\n"), 400),
        refused("cl-list-1-2", bad_post("Content-Length: 1,2\r\n"), 400),
        refused("cl-trailing-comma", bad_post("Content-Length: 5,\r\n"), 400),
        refused("cl-plus", bad_post("Content-Length: +5\r\n"), 400),
        refused("cl-minus", bad_post("Content-Length: -1\r\n"), 400),
        refused("cl-space-inside", bad_post("Content-Length:  5 5\r\n"), 400),
        refused("cl-hex", bad_post("Content-Length: 0x5\r\n"), 400),
        refused("cl-exponent", bad_post("Content-Length: 1e1\r\n"), 400),
        refused("cl-empty", bad_post("Content-Length:\r\n"), 400),
        refused("cl-overflow", bad_post("Content-Length: 99999999999999999999\r\n"), 400),
        refused("cl-2-pow-64", bad_post("Content-Length: 18446744073709551616\r\n"), 400),
        served("cl-repeated-same", ok_post("Content-Length: 2\r\nContent-Length: 2\r\n", "hi"), OK_NEXT),
        served("cl-list-same", ok_post("Content-Length: 2, 2\r\n", "hi"), OK_NEXT),
        served("cl-leading-zeros", ok_post("Content-Length: 002\r\n", "hi"), OK_NEXT),
        // --- header syntax ------------------------------------------------------
        refused("obs-fold-space", bad_get("X-A: 1\r\n  continued\r\n"), 400),
        refused("obs-fold-tab", bad_get("X-A: 1\r\n\tcontinued\r\n"), 400),
        refused("space-before-first-header", format!("GET /bad HTTP/1.1\r\n Host: x\r\n\r\n{SMUGGLED}"), 400),
        refused("space-before-colon", bad_get("X-A : 1\r\n"), 400),
        refused("nul-in-value", bad_get("X-A: a\0b\r\n"), 400),
        refused("cr-in-value", bad_get("X-A: a\rb\r\n"), 400),
        refused("ctl-in-value", bad_get("X-A: a\x01b\r\n"), 400),
        refused("del-in-value", bad_get("X-A: a\x7fb\r\n"), 400),
        refused("invalid-name-char", bad_get("X(A): 1\r\n"), 400),
        refused("empty-name", bad_get(": 1\r\n"), 400),
        refused("nul-in-name", bad_get("X\0A: 1\r\n"), 400),
        // --- line ends ------------------------------------------------------------
        refused("bare-lf-everywhere", format!("GET /bad HTTP/1.1\nHost: x\n\n{SMUGGLED}"), 400),
        refused("bare-lf-one-header", bad_get("X-A: 1\nX-B: 2\r\n"), 400),
        refused("bare-lf-in-value", bad_get("X-A: a\nTransfer-Encoding: chunked\r\n"), 400),
        refused("bare-lf-ends-head", format!("GET /bad HTTP/1.1\r\nHost: x\r\n\n{SMUGGLED}"), 400),
        refused("bare-lf-request-line", format!("GET /bad HTTP/1.1\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("bare-cr-request-line", format!("GET /bad HTTP/1.1\rHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("bare-cr-line-end", bad_get("X-A: 1\rX-B: 2\r\n"), 400),
        // --- Host and the request target -------------------------------------------
        refused("missing-host", format!("GET /bad HTTP/1.1\r\n\r\n{SMUGGLED}"), 400),
        refused("two-hosts", bad_get("Host: y\r\n"), 400),
        refused("two-equal-hosts", bad_get("Host: x\r\n"), 400),
        refused("host-with-space", format!("GET /bad HTTP/1.1\r\nHost: x y\r\n\r\n{SMUGGLED}"), 400),
        refused("host-with-userinfo", format!("GET /bad HTTP/1.1\r\nHost: u@x\r\n\r\n{SMUGGLED}"), 400),
        refused("absolute-form-other-host", format!("GET http://other.example/bad HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("absolute-form-other-port", format!("GET http://x:8080/bad HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("absolute-form-no-host", format!("GET http://x/bad HTTP/1.1\r\n\r\n{SMUGGLED}"), 400),
        served("absolute-form-same-host", "GET http://x/ok HTTP/1.1\r\nHost: x\r\n\r\nGET http://X:80/next HTTP/1.1\r\nHost: x\r\n\r\n", OK_NEXT),
        refused("authority-form-get", format!("GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("asterisk-form-get", format!("GET * HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        // --- the request line --------------------------------------------------------
        refused("two-spaces", format!("GET  /bad HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("tab-separator", format!("GET\t/bad HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("trailing-space", format!("GET /bad HTTP/1.1 \r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("invalid-method", format!("G(T /bad HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("space-in-target", format!("GET /b d HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("ctl-in-target", format!("GET /b\x01d HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("fragment-in-target", format!("GET /bad#f HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("lowercase-version", format!("GET /bad http/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"), 400),
        refused("http09", format!("GET /bad\r\n\r\n{SMUGGLED}"), 400),
        // --- chunk sizes and extensions ------------------------------------------------
        refused("chunk-size-not-hex", bad_chunked("zz\r\n"), 400),
        refused("chunk-size-0x", bad_chunked("0x2\r\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-size-negative", bad_chunked("-2\r\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-size-plus", bad_chunked("+2\r\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-size-leading-space", bad_chunked(" 2\r\nhi\r\n0\r\n\r\n"), 400),
        // A 1-byte chunk, or (spaces dropped) a 16-byte one that swallows
        // the last chunk and the smuggled request's start.
        refused("chunk-size-space-inside", bad_chunked("1 0\r\nX\r\n0\r\n\r\n"), 400),
        refused("chunk-size-overflow", bad_chunked("10000000000000000\r\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-size-bare-lf", bad_chunked("2\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-ext-bare-cr", bad_chunked("2;a\rb\r\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-ext-bare-lf", bad_chunked("2;a\nhi\r\n0\r\n\r\n"), 400),
        refused("chunk-ext-oversized", bad_chunked(&format!("2;{}\r\nhi\r\n0\r\n\r\n", "e".repeat(1100))), 400),
        refused("chunk-data-longer-than-size", bad_chunked("2\r\nhello\r\n0\r\n\r\n"), 400),
        refused("chunk-data-bare-lf", bad_chunked("2\r\nhi\n0\r\n\r\n"), 400),
        refused("last-chunk-bare-lf", bad_chunked("0\n\n"), 400),
        // The smuggled request line would be taken for a trailer line.
        refused("request-line-as-trailer", bad_chunked("0\r\nX"), 400),
        served("chunk-size-trailing-space", ok_post(te, "2 \r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        served("chunk-ext", ok_post(te, "2;name=value;q=\"a b\"\r\nhi\r\n0\r\n\r\n"), OK_NEXT),
        served("chunk-size-upper-hex", ok_post(te, "A\r\n0123456789\r\n0\r\n\r\n"), OK_NEXT),
        // --- trailers ------------------------------------------------------------------
        refused("trailer-content-length", bad_chunked("2\r\nhi\r\n0\r\nContent-Length: 5\r\n\r\n"), 400),
        refused("trailer-transfer-encoding", bad_chunked("2\r\nhi\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
        refused("trailer-host", bad_chunked("2\r\nhi\r\n0\r\nHost: other\r\n\r\n"), 400),
        refused("trailer-authorization", bad_chunked("2\r\nhi\r\n0\r\nAuthorization: Bearer x\r\n\r\n"), 400),
        refused("trailer-obs-fold", bad_chunked("2\r\nhi\r\n0\r\nX-A: 1\r\n 2\r\n\r\n"), 400),
        refused("trailer-no-colon", bad_chunked("2\r\nhi\r\n0\r\nX-A\r\n\r\n"), 400),
        refused("trailer-bare-cr", bad_chunked("2\r\nhi\r\n0\r\nX-A: a\rb\r\n\r\n"), 400),
        refused("trailer-bare-lf", bad_chunked("2\r\nhi\r\n0\r\nX-A: 1\n\r\n"), 400),
        served("trailer-allowed", ok_post(te, "2\r\nhi\r\n0\r\nX-Checksum: abc\r\n\r\n"), OK_NEXT),
        // --- pipelining --------------------------------------------------------------
        after(
            "pipelined-then-cl-te",
            format!(
                "GET /ok1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /ok2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi{}",
                bad_post(&format!("Content-Length: 5\r\n{te}"))
            ),
            &["/ok1", "/ok2"],
            400,
        ),
        after(
            "pipelined-then-bare-lf",
            format!("GET /ok1 HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\nHost: x\n\n{SMUGGLED}"),
            &["/ok1"],
            400,
        ),
        after(
            "pipelined-chunked-then-bad-chunk",
            format!(
                "POST /ok1 HTTP/1.1\r\nHost: x\r\n{te}\r\n2\r\nhi\r\n0\r\n\r\n{}",
                bad_chunked("2\r\nhiX\r\n0\r\n\r\n")
            ),
            &["/ok1"],
            400,
        ),
        after(
            "pipelined-then-missing-host",
            format!("GET /ok1 HTTP/1.1\r\nHost: x\r\n\r\nGET /bad HTTP/1.1\r\n\r\n{SMUGGLED}"),
            &["/ok1"],
            400,
        ),
        served(
            "pipelined-three",
            "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /mid HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nGET\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
            &["/ok", "/mid", "/next"],
        ),
    ];
    // --- sizes: exactly 64 KiB, so the gateway has read every byte when it
    // answers (unread bytes would turn its close into a reset).
    let limit = 64 * 1024;
    let mut line = String::from("GET /");
    line.push_str(&"a".repeat(limit - line.len()));
    v.push(refused("request-line-too-long", line, 414));
    let mut head = String::from("GET /bad HTTP/1.1\r\nHost: x\r\nX-Big: ");
    head.push_str(&"a".repeat(limit - head.len()));
    v.push(refused("head-too-large", head, 431));
    let mut many = String::from("GET /bad HTTP/1.1\r\nHost: x\r\n");
    for i in 0..101 {
        let _ = write!(many, "X-{i}: 1\r\n");
    }
    many.push_str("\r\n");
    v.push(refused("too-many-headers", many, 431));
    v
}

/// The path of a request line.
fn path_of(m: &RawMessage) -> &str {
    m.start.split_whitespace().nth(1).unwrap_or("")
}

/// What is wrong with the framing of a request as the upstream got it, if
/// anything: one framing header, in canonical form, CRLF line ends.
fn framing_problem(m: &RawMessage) -> Option<String> {
    let head = &m.raw[..m.raw.len() - m.raw_body.len()];
    if head
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    {
        return Some("bare LF in the head".into());
    }
    let named = |n: &str| {
        m.headers
            .iter()
            .filter(|(h, _)| h == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let (cl, te) = (named("content-length"), named("transfer-encoding"));
    match (cl.as_slice(), te.as_slice()) {
        ([], []) if m.raw_body.is_empty() => None,
        ([n], []) => {
            let plain =
                n.bytes().all(|b| b.is_ascii_digit()) && (n.len() == 1 || !n.starts_with('0'));
            (!plain || n.parse::<usize>().ok() != Some(m.raw_body.len()))
                .then(|| format!("content-length {n:?} for {} bytes", m.raw_body.len()))
        }
        ([], [t]) => {
            let last_only = t.ends_with("chunked") && t.matches("chunked").count() == 1;
            (!last_only || !m.raw_body.ends_with(b"\r\n\r\n"))
                .then(|| format!("transfer-encoding {t:?}"))
        }
        _ => Some(format!("framing headers {cl:?} {te:?}")),
    }
}

/// The requests and bytes the upstream received since `before`.
fn since(before: &[UpstreamConn], now: &[UpstreamConn]) -> (Vec<RawMessage>, usize) {
    let mut reqs = Vec::new();
    let mut bytes = 0;
    for (i, c) in now.iter().enumerate() {
        let (r0, b0) = before
            .get(i)
            .map_or((0, 0), |b| (b.requests.len(), b.bytes.len()));
        reqs.extend(c.requests[r0..].iter().cloned());
        bytes += c.bytes.len() - b0;
    }
    (reqs, bytes)
}

async fn response(c: &mut RawClient) -> Result<llmgw_e2e::RawResponse, String> {
    match tokio::time::timeout(PATIENCE, c.response()).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("closed before a response".into()),
        Err(_) => Err("no response".into()),
    }
}

/// Runs one case; `Err` says how the gateway got it wrong.
async fn run(gw: &Gateway, up: &RawUpstream, path: Path, case: &Case) -> Result<(), String> {
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(path.primer().as_bytes()).await;
    let r = response(&mut c).await.map_err(|e| format!("primer: {e}"))?;
    if r.status != 200 {
        return Err(format!("primer answered {}", r.status));
    }
    // The upstream recorded the primer before answering it: from here on,
    // what it receives is this case's.
    let base = up.connections();
    c.send(&case.bytes).await;
    let forwarded: &[&str] = match &case.want {
        Want::Served(paths) => {
            for p in paths.iter() {
                let r = response(&mut c).await.map_err(|e| format!("{p}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("{p} answered {}: {}", r.status, r.body_text()));
                }
            }
            paths
        }
        Want::Refused { status, before } => {
            for p in before.iter() {
                let r = response(&mut c).await.map_err(|e| format!("{p}: {e}"))?;
                if r.status != 200 {
                    return Err(format!("{p} answered {}: {}", r.status, r.body_text()));
                }
            }
            let r = response(&mut c).await?;
            if r.status != *status {
                return Err(format!(
                    "answered {}, not {status}: {}",
                    r.status,
                    r.body_text()
                ));
            }
            if r.header("connection") != Some("close") {
                return Err(format!("no Connection: close on the {}", r.status));
            }
            if !c.closed_within(PATIENCE).await {
                return Err("connection left open".into());
            }
            before
        }
    };
    tokio::time::sleep(SETTLE).await;
    let (reqs, bytes) = since(&base, &up.connections());
    let mut got: Vec<&str> = reqs.iter().map(path_of).collect();
    let mut want = forwarded.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    if got != want {
        return Err(format!("upstream got {got:?}, not {want:?}"));
    }
    let whole: usize = reqs.iter().map(|r| r.raw.len()).sum();
    if bytes != whole {
        return Err(format!(
            "upstream got {} bytes besides its complete requests",
            bytes - whole
        ));
    }
    for r in &reqs {
        if let Some(p) = framing_problem(r) {
            return Err(format!("{} forwarded with {p}: {r:?}", path_of(r)));
        }
    }
    Ok(())
}

async fn matrix(path: Path) {
    let up = RawUpstream::start(vec![]);
    let gw = Gateway::start(&one_backend("", "", up.addr), 1);
    let cases = cases();
    let mut failed = Vec::new();
    for case in &cases {
        if let Err(e) = run(&gw, &up, path, case).await {
            failed.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failed.is_empty(),
        "{path:?} path: {} of {} cases wrong:\n  {}",
        failed.len(),
        cases.len(),
        failed.join("\n  ")
    );
    // The upstream never saw the smuggled request, on any connection.
    assert!(up.requests().iter().all(|r| path_of(r) != "/smuggled"));
}

#[tokio::test]
async fn smuggling_matrix_on_the_http1_engine() {
    matrix(Path::Engine).await;
}

#[tokio::test]
async fn smuggling_matrix_on_the_general_path() {
    matrix(Path::General).await;
}

/// A bad chunk found after the body's start went upstream: that upstream
/// connection is given up with the request incomplete, and the client's is
/// closed; nothing after the bad chunk is forwarded. (Retries off: with
/// them, the general path reads a body whole before sending it.)
#[tokio::test]
async fn smuggling_bad_chunk_mid_stream_on_both_paths() {
    for path in [Path::Engine, Path::General] {
        let up = RawUpstream::start(vec![]);
        let gw = Gateway::start(&one_backend("", "retries = 0", up.addr), 1);
        let mut c = RawClient::connect(gw.addr()).await;
        c.send(path.primer().as_bytes()).await;
        assert_eq!(
            response(&mut c).await.map(|r| r.status),
            Ok(200),
            "{path:?}"
        );
        c.send(
            b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await;
        let started = llmgw_e2e::eventually(PATIENCE, || async {
            let conns = up.connections();
            conns
                .iter()
                .any(|c| c.bytes.ends_with(b"hello\r\n"))
                .then_some(())
        });
        if tokio::time::timeout(PATIENCE, started).await.is_err() {
            panic!(
                "{path:?}: the body's start never reached the upstream: {:?}",
                up.connections()
            );
        }
        c.send(format!("1 0\r\n0123456789abcdef\r\n0\r\n\r\n{SMUGGLED}").as_bytes())
            .await;
        // A 400 when the client is still there to read it.
        if let Ok(r) = response(&mut c).await {
            assert_eq!(r.status, 400, "{path:?}: {}", r.body_text());
            assert!(
                r.body_text().contains("malformed"),
                "{path:?}: {}",
                r.body_text()
            );
        }
        assert!(c.closed_within(PATIENCE).await, "{path:?}");
        llmgw_e2e::eventually(PATIENCE, || async {
            let conns = up.connections();
            conns
                .iter()
                .filter(|c| c.bytes.ends_with(b"hello\r\n"))
                .all(|c| c.closed)
                .then_some(())
        })
        .await;
        tokio::time::sleep(SETTLE).await;
        let paths: Vec<String> = up
            .requests()
            .iter()
            .map(|r| path_of(r).to_owned())
            .collect();
        assert_eq!(paths, ["/primer"], "{path:?}");
        for conn in up.connections() {
            let seen = String::from_utf8_lossy(&conn.bytes).into_owned();
            assert!(
                !seen.contains("/smuggled") && !seen.contains("0123"),
                "{path:?}: {seen}"
            );
        }
    }
}

// --- HTTP/2 ------------------------------------------------------------------

/// A hand-rolled HTTP/2 client: the Rust h2 crate will not send malformed
/// headers, so the frames are built here, header blocks as HPACK literals
/// without indexing (no compression state to get wrong).
mod h2raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const GOAWAY: u8 = 7;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    #[derive(Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// A response head with this status.
        Status(u16),
        /// RST_STREAM with this error code.
        Reset(u32),
        /// GOAWAY with this error code.
        GoAway(u32),
        Closed,
        TimedOut,
    }

    pub struct Conn {
        s: TcpStream,
        buf: Vec<u8>,
    }

    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn int7(out: &mut Vec<u8>, n: usize) {
        if n < 127 {
            out.push(n as u8);
            return;
        }
        out.push(127);
        let mut n = n - 127;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }

    /// A header block of literal fields, exactly as given.
    pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0x00);
            int7(&mut out, name.len());
            out.extend_from_slice(name);
            int7(&mut out, value.len());
            out.extend_from_slice(value);
        }
        out
    }

    impl Conn {
        pub async fn connect(addr: SocketAddr) -> Conn {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            s.write_all(&hello).await.expect("preface");
            Conn { s, buf: Vec::new() }
        }

        pub async fn send(&mut self, bytes: &[u8]) {
            // The server may have given up on the connection already.
            let _ = self.s.write_all(bytes).await;
        }

        /// What became of `stream`: its response's status, a reset, the
        /// end of the connection.
        pub async fn outcome(&mut self, stream: u32, limit: Duration) -> Outcome {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                while self.buf.len() >= 9 {
                    let len = (usize::from(self.buf[0]) << 16)
                        | (usize::from(self.buf[1]) << 8)
                        | usize::from(self.buf[2]);
                    if self.buf.len() < 9 + len {
                        break;
                    }
                    let (ty, flags) = (self.buf[3], self.buf[4]);
                    let id =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    let code = |at: usize| {
                        payload
                            .get(at..at + 4)
                            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    };
                    match ty {
                        SETTINGS if flags & 1 == 0 => self.send(&frame(SETTINGS, 1, 0, &[])).await,
                        GOAWAY => return Outcome::GoAway(code(4)),
                        RST_STREAM if id == stream => return Outcome::Reset(code(0)),
                        HEADERS if id == stream => {
                            return Outcome::Status(status_of(&payload, flags).unwrap_or(0))
                        }
                        _ => {}
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                    Err(_) => return Outcome::TimedOut,
                    Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
                    Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    /// The `:status` of a response header block: the static table's
    /// indexed statuses, or a literal one (plain or Huffman-coded digits).
    fn status_of(payload: &[u8], flags: u8) -> Option<u16> {
        let mut b = payload;
        let mut pad = 0;
        if flags & 0x8 != 0 {
            pad = usize::from(*b.first()?);
            b = &b[1..];
        }
        if flags & 0x20 != 0 {
            b = b.get(5..)?;
        }
        let b = &b[..b.len().checked_sub(pad)?];
        let mut i = 0;
        // Dynamic table size updates.
        while b.get(i)? & 0xe0 == 0x20 {
            i += 1;
            while b.get(i - 1)? & 0x1f == 0x1f && b.get(i)? & 0x80 != 0 {
                i += 1;
            }
        }
        let first = *b.get(i)?;
        if first & 0x80 != 0 {
            return match first & 0x7f {
                8 => Some(200),
                9 => Some(204),
                10 => Some(206),
                11 => Some(304),
                12 => Some(400),
                13 => Some(404),
                14 => Some(500),
                _ => None,
            };
        }
        let index = if first & 0x40 != 0 {
            first & 0x3f
        } else {
            first & 0x0f
        };
        if !(8..=14).contains(&index) {
            return None;
        }
        let len_byte = *b.get(i + 1)?;
        let value = b.get(i + 2..i + 2 + usize::from(len_byte & 0x7f))?;
        if len_byte & 0x80 == 0 {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
        // Huffman (RFC 7541 Appendix B): '0'-'2' are 5 bits, '3'-'9' 6.
        let bits: Vec<u8> = value
            .iter()
            .flat_map(|byte| (0..8).rev().map(move |k| (byte >> k) & 1))
            .collect();
        let code = |at: usize, n: usize| {
            bits.get(at..at + n)
                .map(|s| s.iter().fold(0u8, |a, &bit| (a << 1) | bit))
        };
        let (mut status, mut at) = (0u16, 0);
        for _ in 0..3 {
            let five = code(at, 5)?;
            let digit = if five <= 2 {
                at += 5;
                five
            } else {
                let six = code(at, 6)?;
                if !(0x19..=0x1f).contains(&six) {
                    return None;
                }
                at += 6;
                six - 0x19 + 3
            };
            status = status * 10 + u16::from(digit);
        }
        Some(status)
    }
}

struct H2Case {
    name: &'static str,
    /// Header fields after the request's pseudo-headers (`:method GET`,
    /// `:scheme http`, `:path /h2/<name>`, `:authority x`), unless
    /// `pseudo` replaces those.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    pseudo: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// DATA frames after the headers (the last one ends the stream).
    data: Vec<Vec<u8>>,
    served: bool,
}

fn h2(name: &'static str, fields: &[(&str, &str)], served: bool) -> H2Case {
    H2Case {
        name,
        fields: fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        pseudo: None,
        data: Vec::new(),
        served,
    }
}

fn h2_pseudo(name: &'static str, pseudo: &[(&str, &str)]) -> H2Case {
    H2Case {
        pseudo: Some(
            pseudo
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        ),
        ..h2(name, &[], false)
    }
}

fn h2_cases() -> Vec<H2Case> {
    let path = |n: &str| format!("/h2/{n}");
    let mut v = vec![
        h2("plain-get", &[], true),
        h2("te-trailers", &[("te", "trailers")], true),
        h2("host-same-as-authority", &[("host", "x")], true),
        // Connection-specific fields (RFC 9113 §8.2.2).
        h2("connection", &[("connection", "keep-alive")], false),
        h2("keep-alive", &[("keep-alive", "timeout=5")], false),
        h2(
            "proxy-connection",
            &[("proxy-connection", "keep-alive")],
            false,
        ),
        h2(
            "transfer-encoding",
            &[("transfer-encoding", "chunked")],
            false,
        ),
        h2("upgrade", &[("upgrade", "websocket")], false),
        h2("te-gzip", &[("te", "gzip")], false),
        // Field names and values (RFC 9113 §8.2.1).
        h2("cr-in-value", &[("x-a", "a\rb")], false),
        h2("lf-in-value", &[("x-a", "a\nb")], false),
        h2("nul-in-value", &[("x-a", "a\0b")], false),
        h2(
            "crlf-header-injection",
            &[("x-a", "a\r\nTransfer-Encoding: chunked")],
            false,
        ),
        h2(
            "crlf-request-injection",
            &[("x-a", &format!("a\r\n\r\n{SMUGGLED}"))],
            false,
        ),
        h2("cr-in-name", &[("x-a\r", "1")], false),
        h2("lf-in-name", &[("x-a\nx-b", "1")], false),
        h2("colon-in-name", &[("x:a", "1")], false),
        h2("space-in-name", &[("x a", "1")], false),
        h2("uppercase-name", &[("X-A", "1")], false),
        h2("empty-name", &[("", "1")], false),
        h2("leading-space-in-value", &[("x-a", " 1")], false),
        h2("trailing-tab-in-value", &[("x-a", "1\t")], false),
        // Host against :authority (RFC 9113 §8.3.1): :authority wins.
        h2(
            "host-differs-from-authority",
            &[("host", "other.example")],
            true,
        ),
        h2(
            "two-hosts",
            &[("host", "other.example"), ("host", "x")],
            true,
        ),
        h2_pseudo(
            "two-hosts-no-authority",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &path("two-hosts-no-authority")),
                ("host", "x"),
                ("host", "y"),
            ],
        ),
        // Pseudo-headers (RFC 9113 §8.3).
        h2_pseudo(
            "missing-method",
            &[
                (":scheme", "http"),
                (":path", &path("missing-method")),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "missing-path",
            &[(":method", "GET"), (":scheme", "http"), (":authority", "x")],
        ),
        h2_pseudo(
            "missing-scheme",
            &[
                (":method", "GET"),
                (":path", &path("missing-scheme")),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "repeated-path",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &path("repeated-path")),
                (":path", "/smuggled"),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "pseudo-after-regular",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                ("x-a", "1"),
                (":path", &path("pseudo-after-regular")),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "unknown-pseudo",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &path("unknown-pseudo")),
                (":authority", "x"),
                (":foo", "bar"),
            ],
        ),
        h2_pseudo(
            "status-in-request",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &path("status-in-request")),
                (":authority", "x"),
                (":status", "200"),
            ],
        ),
        h2_pseudo(
            "crlf-in-method",
            &[
                (":method", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET"),
                (":scheme", "http"),
                (":path", &path("crlf-in-method")),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "crlf-in-path",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (
                    ":path",
                    &format!(
                        "{} HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled",
                        path("crlf-in-path")
                    ),
                ),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "space-in-path",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &format!("{} HTTP/1.1", path("space-in-path"))),
                (":authority", "x"),
            ],
        ),
        h2_pseudo(
            "crlf-in-authority",
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", &path("crlf-in-authority")),
                (":authority", "x\r\nX-A: 1"),
            ],
        ),
    ];
    // Bodies against content-length (RFC 9113 §8.1.1).
    let post = |name: &'static str, cl: &str, data: &[&str], served: bool| H2Case {
        pseudo: Some(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path(name).as_str()),
                (":authority", "x"),
            ]
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        ),
        data: data.iter().map(|d| d.as_bytes().to_vec()).collect(),
        ..h2(name, &[("content-length", cl)], served)
    };
    v.push(post("post-exact-length", "5", &["hello"], true));
    v.push(post("length-leading-zeros", "005", &["hello"], true));
    v.push(post(
        "data-longer-than-length",
        "5",
        &[&format!("hello{SMUGGLED}")],
        false,
    ));
    v.push(post("data-shorter-than-length", "10", &["hello"], false));
    v.push(post(
        "data-over-two-frames-longer",
        "5",
        &["hel", &format!("lo{SMUGGLED}")],
        false,
    ));
    v.push(post("two-lengths", "5, 6", &["hello"], false));
    v.push(post("length-plus", "+5", &["hello"], false));
    v
}

async fn run_h2(addr: std::net::SocketAddr, case: &H2Case) -> Result<(), String> {
    use h2raw::*;
    let mut c = Conn::connect(addr).await;
    let path = format!("/h2/{}", case.name);
    let mut fields: Vec<(&[u8], &[u8])> = match &case.pseudo {
        Some(p) => p
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect(),
        None => vec![
            (b":method".as_slice(), b"GET".as_slice()),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", b"x"),
        ],
    };
    fields.extend(
        case.fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice())),
    );
    let mut out = Vec::new();
    let end = if case.data.is_empty() { END_STREAM } else { 0 };
    out.extend(frame(HEADERS, END_HEADERS | end, 1, &block(&fields)));
    for (i, d) in case.data.iter().enumerate() {
        let last = i + 1 == case.data.len();
        out.extend(frame(DATA, if last { END_STREAM } else { 0 }, 1, d));
    }
    c.send(&out).await;
    let outcome = c.outcome(1, PATIENCE).await;
    let ok = matches!(
        (&outcome, case.served),
        (Outcome::Status(200), true)
            | (
                Outcome::Status(400) | Outcome::Reset(_) | Outcome::GoAway(_),
                false
            )
    );
    if ok {
        Ok(())
    } else {
        Err(format!("{outcome:?}"))
    }
}

#[tokio::test]
async fn smuggling_h2_downgrade_hazards_never_reach_the_http1_upstream() {
    let up = RawUpstream::start(vec![]);
    let gw = Gateway::start(&one_backend("", "", up.addr), 1);
    let cases = h2_cases();
    let mut failed = Vec::new();
    for case in &cases {
        if let Err(e) = run_h2(gw.addr(), case).await {
            failed.push(format!("{}: {e}", case.name));
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut got: Vec<String> = up
        .requests()
        .iter()
        .map(|r| path_of(r).to_owned())
        .collect();
    let mut want: Vec<String> = cases
        .iter()
        .filter(|c| c.served)
        .map(|c| format!("/h2/{}", c.name))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    if got != want {
        failed.push(format!("the upstream got {got:?}, not {want:?}"));
    }
    for r in up.requests() {
        if let Some(p) = framing_problem(&r) {
            failed.push(format!("{} forwarded with {p}", path_of(&r)));
        }
        // One authority, the one the h2 layer went by.
        let hosts: Vec<_> = r.headers.iter().filter(|(n, _)| n == "host").collect();
        if hosts.len() != 1 || hosts[0].1 != "x" {
            failed.push(format!("{} forwarded with host {hosts:?}", path_of(&r)));
        }
    }
    for conn in up.connections() {
        if String::from_utf8_lossy(&conn.bytes).contains("/smuggled") {
            failed.push(format!("smuggled bytes upstream: {conn:?}"));
        }
    }
    assert!(
        failed.is_empty(),
        "h2: {} of {} cases wrong:\n  {}",
        failed.len(),
        cases.len(),
        failed.join("\n  ")
    );
}
