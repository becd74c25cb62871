//! The HTTP/1 engine (`node/src/http/h1`) at the byte level. Raw TCP clients
//! write exact requests and parse what comes back; a recording upstream
//! (`RawUpstream`) answers with exact bytes and keeps everything it received,
//! per connection. Covered: pipelining, request and response framings,
//! smuggling-shaped input, upstream failure mid-body, upstream connection
//! reuse, handoffs to the general path, `Connection: close`, the keep-alive
//! and request timeouts, and model routing on a body arriving in pieces.

use std::time::{Duration, Instant};

use llmgw_e2e::{
    eventually, ok_response, one_backend, raw_exchange, Gateway, RawClient, RawUpstream, Reply,
};

/// Long enough for anything on loopback; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn gateway(up: &RawUpstream, frontend: &str) -> Gateway {
    Gateway::start(&one_backend(frontend, "", up.addr), 1)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a response that must be there.
async fn expect_response(c: &mut RawClient) -> llmgw_e2e::RawResponse {
    c.response()
        .await
        .expect("connection closed before a response")
}

/// Waits until the upstream holds `n` complete requests.
async fn upstream_requests(up: &RawUpstream, n: usize) -> Vec<llmgw_e2e::RawMessage> {
    eventually(PATIENCE, || async {
        let r = up.requests();
        (r.len() >= n).then_some(r)
    })
    .await
}

// --- 1. pipelining -------------------------------------------------------

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("first")),
        Reply::Send(ok_response("second")),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    let both = format!("{}{}", post("/a", "hello"), post("/b", "bye"));
    c.send(both.as_bytes()).await;

    let r1 = expect_response(&mut c).await;
    let r2 = expect_response(&mut c).await;
    assert_eq!((r1.status, r1.body_text().as_str()), (200, "first"));
    assert_eq!((r2.status, r2.body_text().as_str()), (200, "second"));

    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].start.starts_with("POST /a "), "{}", reqs[0].start);
    assert_eq!(text(&reqs[0].raw_body), "hello");
    assert_eq!(reqs[0].header("content-length"), Some("5"));
    assert!(reqs[1].start.starts_with("POST /b "), "{}", reqs[1].start);
    assert_eq!(text(&reqs[1].raw_body), "bye");
    // Nothing but those two requests went upstream.
    let sent: usize = up.connections().iter().map(|c| c.bytes.len()).sum();
    assert_eq!(sent, reqs[0].raw.len() + reqs[1].raw.len());
}

// --- 2. chunked request bodies --------------------------------------------

const CHUNKED_BODY: &str = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";

#[tokio::test]
async fn chunked_request_body_is_forwarded_intact_and_ends_where_it_should() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    // The next request follows the final chunk in the same write.
    let req = format!(
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_BODY}{}",
        get("/next")
    );
    c.send(req.as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_eq!(expect_response(&mut c).await.status, 200);

    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs[0].start.starts_with("POST /c "));
    assert_eq!(reqs[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(reqs[0].header("content-length"), None);
    assert_eq!(text(&reqs[0].raw_body), CHUNKED_BODY);
    assert!(reqs[1].start.starts_with("GET /next "), "{}", reqs[1].start);
    assert!(reqs[1].raw_body.is_empty());
}

#[tokio::test]
async fn chunked_request_body_streamed_after_its_head() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    let (first, rest) = CHUNKED_BODY.split_at(12); // inside " world"
    c.send(
        format!("POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{first}")
            .as_bytes(),
    )
    .await;
    // The head (and the body's start) reached the upstream before the rest
    // of the body was even written: the engine streams the body through.
    eventually(PATIENCE, || async {
        up.connections()
            .first()
            .is_some_and(|c| c.bytes.ends_with(first.as_bytes()))
            .then_some(())
    })
    .await;
    c.send(format!("{rest}{}", get("/after")).as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_eq!(expect_response(&mut c).await.status, 200);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(text(&reqs[0].raw_body), CHUNKED_BODY);
    assert!(reqs[1].start.starts_with("GET /after "));
}

// --- 3. smuggling-shaped input ----------------------------------------------

#[tokio::test]
async fn contradictory_framing_is_refused_before_the_upstream() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let smuggled = get("/smuggled");
    for head in [
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        // An invalid chunk size right in the first read.
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut c = RawClient::connect(gw.addr()).await;
        c.send(format!("{head}0\r\n\r\n{smuggled}").as_bytes())
            .await;
        let r = expect_response(&mut c).await;
        assert_eq!(r.status, 400, "{head:?}: {}", r.body_text());
        assert_eq!(r.json()["error"]["code"], "bad_request", "{head:?}");
        assert_eq!(r.header("connection"), Some("close"), "{head:?}");
        assert!(c.closed_within(PATIENCE).await, "{head:?}: still open");
    }
    assert_eq!(up.accepted(), 0, "the upstream saw {:?}", up.connections());
    // The upstream works: what it saw above was nothing, not a failure.
    let r = raw_exchange(gw.addr(), get("/fine").as_bytes()).await;
    assert!(r.starts_with(b"HTTP/1.1 200"), "{}", text(&r));
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn invalid_chunk_size_mid_body_ends_the_exchange() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await;
    // The first chunk went upstream; the bad size comes after it.
    eventually(PATIENCE, || async {
        up.connections()
            .first()
            .is_some_and(|c| c.bytes.ends_with(b"hello\r\n"))
            .then_some(())
    })
    .await;
    c.send(format!("zz\r\n\r\n{}", get("/smuggled")).as_bytes())
        .await;
    if let Some(r) = c.response().await {
        assert_eq!(r.status, 400, "{}", r.body_text());
    }
    assert!(c.closed_within(PATIENCE).await);
    // The half-sent upstream connection is dropped, never reused...
    eventually(PATIENCE, || async {
        up.connections()[0].closed.then_some(())
    })
    .await;
    // ...and the upstream never saw a complete request, let alone a second one.
    let seen = up.connections();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].requests.is_empty(), "{:?}", seen[0].requests);
    assert!(
        !text(&seen[0].bytes).contains("/smuggled"),
        "{}",
        text(&seen[0].bytes)
    );
}

// --- 4. upstream response framings -------------------------------------------

#[tokio::test]
async fn content_length_response_is_relayed() {
    let up = RawUpstream::start(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Up: 1\r\n\r\nhello world".to_vec(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/cl").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("x-up"), Some("1"));
    assert_eq!(r.body_text(), "hello world");
    assert!(r.complete);
}

#[tokio::test]
async fn chunked_response_passes_through_byte_exact() {
    let body = "4\r\nwiki\r\n5;e=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nx-t: 1\r\n\r\n";
    let up = RawUpstream::start(vec![Reply::Send(
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/chunked").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(text(&r.msg.raw_body), body);
    assert_eq!(r.body_text(), "wikipedia in\r\n\r\nchunks.");
    // The connections stay in step: the next exchange is clean, on the same
    // upstream connection.
    c.send(get("/again").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "ok");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn close_delimited_response_is_rechunked_and_terminated() {
    let up = RawUpstream::start(vec![
        Reply::Close(b"HTTP/1.1 200 OK\r\nX-Up: 1\r\n\r\nuntil the upstream closes".to_vec()),
        Reply::Close(b"HTTP/1.0 200 OK\r\n\r\nan HTTP/1.0 body".to_vec()),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    for expected in ["until the upstream closes", "an HTTP/1.0 body"] {
        c.send(get("/eof").as_bytes()).await;
        let r = expect_response(&mut c).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
        assert!(r.complete, "no final chunk: {:?}", text(&r.msg.raw));
        assert!(r.msg.raw_body.ends_with(b"0\r\n\r\n"));
        assert_eq!(r.body_text(), expected);
    }
    // The client connection went on (the second response came on it); the
    // upstream connections, closed, were not.
    c.send(get("/third").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "ok");
    assert_eq!(up.accepted(), 3);
}

#[tokio::test]
async fn head_response_has_a_length_and_no_body() {
    let up = RawUpstream::start(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n".to_vec(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.head_response().await.expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("42"));
    assert!(r.msg.raw_body.is_empty());
    // No body bytes follow: the next response starts right away, and the
    // upstream connection was reused.
    c.send(get("/next").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));
    assert_eq!(up.accepted(), 1);
    assert!(up.requests()[0].start.starts_with("HEAD /h "));
}

#[tokio::test]
async fn no_content_response_has_no_body() {
    let up = RawUpstream::start(vec![Reply::Send(
        b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n".to_vec(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(post("/d", "{}").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-up"), Some("1"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert!(r.msg.raw_body.is_empty());
    c.send(get("/next").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));
    assert!(c.unread().is_empty());
    assert_eq!(up.accepted(), 1);
}

// --- 5. upstream failure mid-body --------------------------------------------

#[tokio::test]
async fn chunked_body_cut_short_by_the_upstream_is_not_terminated() {
    let partial =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n";
    let up = RawUpstream::start(vec![
        Reply::Close(partial.to_vec()),
        Reply::Reset(partial.to_vec()),
    ]);
    let gw = gateway(&up, "");
    for how in ["closed", "reset"] {
        let mut c = RawClient::connect(gw.addr()).await;
        c.send(get("/stream").as_bytes()).await;
        let r = expect_response(&mut c).await;
        assert_eq!(r.status, 200, "{how}");
        assert!(!r.complete, "{how}: {:?}", text(&r.msg.raw));
        assert!(
            !text(&r.msg.raw_body).contains("0\r\n\r\n"),
            "{how}: a truncated body looks complete: {:?}",
            text(&r.msg.raw_body)
        );
        assert!("hello world".starts_with(&r.body_text()), "{how}");
        assert!(c.closed_within(PATIENCE).await, "{how}");
    }
}

#[tokio::test]
async fn length_body_cut_short_by_the_upstream_closes_the_client() {
    let up = RawUpstream::start(vec![Reply::Close(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/short").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"));
    assert!(!r.complete);
    assert_eq!(r.body_text(), "only this");
    assert!(c.closed_within(PATIENCE).await);
}

// --- 6. upstream connection reuse ---------------------------------------------

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    for path in ["/1", "/2"] {
        c.send(post(path, "{}").as_bytes()).await;
        assert_eq!(expect_response(&mut c).await.status, 200);
    }
    // A second client connection gets the pooled one too.
    let r = raw_exchange(gw.addr(), get("/3").as_bytes()).await;
    assert!(r.starts_with(b"HTTP/1.1 200"), "{}", text(&r));
    let conns = up.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].requests.len(), 3);
}

#[tokio::test]
async fn upstream_connection_close_is_not_reused() {
    // The upstream says it will close but keeps the socket open: the
    // gateway must go by what it said.
    let up = RawUpstream::start(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\none".to_vec(),
    )]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.body_text(), "one");
    // The upstream's hop-by-hop header is not the client connection's.
    assert_eq!(r.header("connection"), None);
    c.send(get("/2").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "ok");
    let conns = up.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[1].requests.len(), 1);
}

#[tokio::test]
async fn pool_max_conn_zero_keeps_no_idle_upstream_connection() {
    // HAProxy's server keyword: 0 idle connections kept, so every request
    // opens its own; unset (no limit) shares one.
    for (opt, expected) in [("pool-max-conn 0", 2), ("", 1)] {
        let up = RawUpstream::start(vec![]);
        let gw = llmgw_e2e::start_cfg(
            &format!(
                "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend f\n    bind 127.0.0.1:0\n    default_backend b\n\
                 backend b\n    server s {} {opt}\n",
                up.addr
            ),
            1,
            &[],
        );
        let mut c = RawClient::connect(gw.addr()).await;
        for path in ["/1", "/2"] {
            c.send(get(path).as_bytes()).await;
            assert_eq!(expect_response(&mut c).await.status, 200, "{opt}");
        }
        let conns = up.connections();
        assert_eq!(conns.len(), expected, "{opt}: {conns:?}");
    }
}

#[tokio::test]
async fn pool_purge_delay_closes_an_upstream_connection_left_idle() {
    // HAProxy's server keyword: a connection idle for a whole delay is
    // closed by the gateway (half of them per round; one is all of one).
    let up = RawUpstream::start(vec![]);
    let gw = llmgw_e2e::start_cfg(
        &format!(
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend f\n    bind 127.0.0.1:0\n    default_backend b\n\
             backend b\n    default-server pool-purge-delay 100ms\n    server s {}\n",
            up.addr
        ),
        1,
        &[],
    );
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    eventually(PATIENCE, || async {
        up.connections()
            .first()
            .is_some_and(|c| c.closed)
            .then_some(())
    })
    .await;
    // The client's own connection is untouched, and the next request
    // opens a new upstream connection.
    c.send(get("/2").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_eq!(up.connections().len(), 2);
}

#[tokio::test]
async fn upstream_hop_by_hop_headers_end_at_the_gateway() {
    let up = RawUpstream::start(vec![
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
              X-Up: 1\r\nX-Request-ID: the-upstream-s\r\nContent-Length: 3\r\n\r\none"
                .to_vec(),
        ),
        // A header the Connection header names is hop-by-hop too.
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: secret\r\nX-Up: 2\r\n\
              Content-Length: 3\r\n\r\ntwo"
                .to_vec(),
        ),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(b"GET /1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: the-client-s\r\n\r\n")
        .await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.body_text(), "one");
    let names: Vec<&str> = r.msg.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"connection"), "{names:?}");
    assert!(!names.contains(&"keep-alive"), "{names:?}");
    assert_eq!(r.header("x-up"), Some("1"));
    // The request id the client sent, once: the upstream's is replaced.
    let ids: Vec<&str> = r
        .msg
        .headers
        .iter()
        .filter(|(n, _)| n == "x-request-id")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(ids, ["the-client-s"]);

    c.send(get("/2").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.body_text(), "two");
    assert_eq!(r.header("x-private"), None);
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.header("x-up"), Some("2"));
}

#[tokio::test]
async fn pooled_connection_closed_while_idle_is_not_used() {
    let up = RawUpstream::start(vec![Reply::Close(ok_response("one"))]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(post("/1", "{}").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "one");
    eventually(PATIENCE, || async {
        up.connections()[0].closed.then_some(())
    })
    .await;
    // A POST is never replayed, so only the pool's own check can save it.
    c.send(post("/2", "{}").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "ok"),
        "{}",
        r.body_text()
    );
    let conns = up.connections();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0].requests.len(), 1);
    assert_eq!(conns[1].requests.len(), 1);
}

/// A server's `408` for a connection it closes (it timed the connection out).
const TIMED_OUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Sends `first`, then `second` on the pooled connection, which the server
/// answers with a `408` and closes; `second` must get the answer of a new
/// connection. Returns what the server saw.
async fn after_a_pooled_408(first: &str, second: &str) -> Vec<llmgw_e2e::UpstreamConn> {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("one")),
        // The server timed the idle connection out as the request came in.
        Reply::Close(TIMED_OUT.to_vec()),
        Reply::Send(ok_response("two")),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(first.as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "one");
    c.send(second.as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "two"));
    let conns = up.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[0].requests.len(), 2);
    assert_eq!(conns[1].requests.len(), 1);
    conns
}

#[tokio::test]
async fn a_408_on_a_pooled_connection_is_its_close_and_the_request_goes_again() {
    let conns = after_a_pooled_408(&get("/1"), &get("/2")).await;
    assert!(conns[1].requests[0].start.starts_with("GET /2 "));
}

#[tokio::test]
async fn a_completion_after_a_408_on_a_pooled_connection_goes_again() {
    let conns = after_a_pooled_408(&post("/1", "{}"), &post("/2", r#"{"model":"m"}"#)).await;
    assert_eq!(conns[1].requests[0].body(), br#"{"model":"m"}"#);
}

#[tokio::test]
async fn a_completion_whose_pooled_connection_closes_unanswered_is_not_sent_twice() {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("one")),
        // Took the request, said nothing: it may have acted on it.
        Reply::Close(Vec::new()),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(post("/1", "{}").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "one");
    c.send(post("/2", "{}").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 502);
    assert_eq!(up.requests().len(), 2, "{:?}", up.connections());
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_408_on_a_new_connection_is_the_answer() {
    let up = RawUpstream::start(vec![Reply::Close(TIMED_OUT.to_vec())]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 408);
    assert_eq!(up.connections().len(), 1);
}

// --- 7. handoff to the general path at a request boundary ---------------------

#[tokio::test]
async fn upgrade_request_after_an_engine_request() {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("engine")),
        // The upgrade is refused: the connection stays HTTP.
        Reply::Send(ok_response("no upgrade")),
        Reply::Send(ok_response("after")),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "engine");
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    assert_eq!(expect_response(&mut c).await.body_text(), "no upgrade");
    c.send(get("/3").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "after");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    // The request after the refused upgrade may share the engine's pooled
    // connection with the first: found by its path, not its place.
    let ws = reqs.iter().find(|r| r.start.starts_with("GET /ws "));
    assert_eq!(ws.and_then(|r| r.header("upgrade")), Some("websocket"));
}

#[tokio::test]
async fn accepted_upgrade_after_an_engine_request_becomes_a_tunnel() {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("engine")),
        Reply::Echo(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                .to_vec(),
        ),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.body_text(), "engine");
    c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 101);
    c.send(b"ping through the tunnel").await;
    let echoed = c.read_until(b"tunnel").await;
    assert_eq!(text(&echoed), "ping through the tunnel");
}

#[tokio::test]
async fn expect_continue_after_an_engine_request() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    c.send(b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 100, "{:?}", text(&r.msg.raw));
    c.send(b"hello").await;
    let r = expect_response(&mut c).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));
    c.send(get("/3").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[1].start.starts_with("POST /e "));
    assert_eq!(text(&reqs[1].body()), "hello");
}

#[tokio::test]
async fn http10_request_is_served() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = expect_response(&mut c).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));
    // HTTP/1.0 without keep-alive: the gateway closes after the response.
    assert!(c.closed_within(PATIENCE).await);
    assert!(up.requests()[0].start.starts_with("GET /old "));
}

// --- 8. Connection: close from the client -------------------------------------

#[tokio::test]
async fn client_connection_close_is_honoured() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    // A request pipelined behind the closing one is never served.
    let req = format!(
        "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{}",
        get("/never")
    );
    c.send(req.as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(PATIENCE).await);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    // The client's hop-by-hop header is not the upstream connection's.
    assert_eq!(reqs[0].header("connection"), None);
}

// --- 9. timeouts ---------------------------------------------------------------

#[tokio::test]
async fn idle_connection_is_closed_after_keep_alive_timeout() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "timeout = { http_keep_alive = \"300ms\" }");
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    let idle_since = Instant::now();
    assert!(c.closed_within(PATIENCE).await, "idle connection kept open");
    // Closed by the idle timer, not right away.
    assert!(idle_since.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_busy_connection_outlives_its_keep_alive_timeout() {
    // Requests 100 ms apart for well over `timeout http-keep-alive`: each
    // wait for the next request is short, so the connection stays open
    // however long it has been in use, and closes once it idles.
    let up = RawUpstream::start(vec![]);
    let gw = gateway(&up, "timeout = { http_keep_alive = \"300ms\" }");
    let mut c = RawClient::connect(gw.addr()).await;
    for i in 0..10 {
        c.send(get(&format!("/{i}")).as_bytes()).await;
        assert_eq!(expect_response(&mut c).await.status, 200, "request {i}");
        // The client's pace, not a wait for the gateway.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.requests().len(), 10);
    let idle_since = Instant::now();
    assert!(c.closed_within(PATIENCE).await, "idle connection kept open");
    assert!(idle_since.elapsed() >= Duration::from_millis(150));
}

async fn assert_request_timeout(c: &mut RawClient) {
    let r = expect_response(c).await;
    assert_eq!(r.status, 408, "{}", r.body_text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), Some("close"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(c.closed_within(PATIENCE).await);
}

#[tokio::test]
async fn second_request_not_finished_in_time_is_408() {
    let up = RawUpstream::start(vec![]);
    let gw = gateway(
        &up,
        "timeout = { http_request = \"400ms\", http_keep_alive = \"5s\" }",
    );
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(get("/1").as_bytes()).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n").await;
    assert_request_timeout(&mut c).await;
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn pipelined_partial_request_not_finished_in_time_is_408() {
    // The unfinished head arrives with the first request: it has started,
    // so `timeout http-request` applies to it, not the keep-alive timeout.
    let up = RawUpstream::start(vec![]);
    let gw = gateway(
        &up,
        "timeout = { http_request = \"400ms\", http_keep_alive = \"5s\" }",
    );
    let mut c = RawClient::connect(gw.addr()).await;
    c.send(format!("{}GET /slow HTTP/1.1\r\nHost: x\r\n", get("/1")).as_bytes())
        .await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_request_timeout(&mut c).await;
    assert_eq!(up.requests().len(), 1);
}

// --- 10. model routing --------------------------------------------------------

/// Backend `b` (the default) at `other`, backend `alpha` for `alpha-*`
/// models at `alpha`.
fn model_config(alpha: &RawUpstream, other: &RawUpstream, frontend: &str) -> String {
    format!(
        "{}\n[[frontend.route]]\nbackend = \"alpha\"\nmodel = \"alpha-*\"\n\
         [[backend]]\nname = \"alpha\"\n[[backend.server]]\nname = \"a\"\naddress = \"{}\"\n",
        one_backend(frontend, "", other.addr),
        alpha.addr
    )
}

/// Sends `parts` as separate writes, pausing so they arrive as separate
/// reads (a pause, not a timing assertion: the gateway must wait anyway).
async fn send_in_pieces(c: &mut RawClient, parts: &[&str]) {
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.send(p.as_bytes()).await;
    }
}

#[tokio::test]
async fn model_in_a_later_segment_is_routed() {
    let (alpha, other) = (RawUpstream::start(vec![]), RawUpstream::start(vec![]));
    let gw = Gateway::start(&model_config(&alpha, &other, ""), 1);
    let body = r#"{"messages":[{"role":"user","content":"hi"}],"model":"alpha-1"}"#;
    let (a, rest) = body.split_at(body.find("\"mo").expect("model") + 3);
    let (b, c_) = rest.split_at(8);
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut c = RawClient::connect(gw.addr()).await;
    send_in_pieces(&mut c, &[&head, a, b, c_]).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    let reqs = upstream_requests(&alpha, 1).await;
    assert_eq!(text(&reqs[0].raw_body), body);
    assert_eq!(
        reqs[0].header("content-length"),
        Some(&*body.len().to_string())
    );
    assert_eq!(other.accepted(), 0);
    // The connection goes on: a model for the default backend.
    c.send(post("/v1/chat/completions", r#"{"model":"beta"}"#).as_bytes())
        .await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_eq!(other.requests().len(), 1);
}

#[tokio::test]
async fn model_alias_rewrite_fixes_content_length() {
    let (alpha, other) = (RawUpstream::start(vec![]), RawUpstream::start(vec![]));
    let gw = Gateway::start(
        &model_config(
            &alpha,
            &other,
            "model_aliases = { fast = \"alpha-much-longer-name\" }",
        ),
        1,
    );
    let body = r#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#;
    let (a, b) = body.split_at(12); // inside "fast"
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut c = RawClient::connect(gw.addr()).await;
    // A pipelined request follows: a wrong length would swallow or cut it.
    let tail = format!("{b}{}", get("/v1/models"));
    send_in_pieces(&mut c, &[&head, a, &tail]).await;
    assert_eq!(expect_response(&mut c).await.status, 200);
    assert_eq!(expect_response(&mut c).await.status, 200);

    let reqs = upstream_requests(&alpha, 1).await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let sent = &reqs[0];
    let expected = body.replace("\"fast\"", "\"alpha-much-longer-name\"");
    assert_eq!(text(&sent.raw_body), expected);
    assert_eq!(
        sent.header("content-length"),
        Some(&*expected.len().to_string())
    );
    // The pipelined GET went to the default backend, intact.
    let o = upstream_requests(&other, 1).await;
    assert!(o[0].start.starts_with("GET /v1/models "), "{}", o[0].start);
}

#[tokio::test]
async fn agreeing_content_lengths_are_forwarded_as_one() {
    let (alpha, other) = (RawUpstream::start(vec![]), RawUpstream::start(vec![]));
    let gw = Gateway::start(
        &model_config(&alpha, &other, "model_aliases = { fast = \"alpha-long\" }"),
        1,
    );
    let mut c = RawClient::connect(gw.addr()).await;
    for (body, upstream) in [
        (r#"{"model":"fast"}"#, &alpha),
        (r#"{"model":"beta"}"#, &other),
    ] {
        let n = body.len();
        for lengths in [
            format!("Content-Length: {n}\r\nContent-Length: {n}"),
            format!("Content-Length: {n}, {n}"),
        ] {
            let before = upstream.requests().len();
            c.send(format!("POST /v1/x HTTP/1.1\r\nHost: x\r\n{lengths}\r\n\r\n{body}").as_bytes())
                .await;
            let r = expect_response(&mut c).await;
            assert_eq!(r.status, 200, "{lengths:?}: {}", r.body_text());
            let sent = upstream_requests(upstream, before + 1).await.remove(before);
            let lens: Vec<_> = sent
                .headers
                .iter()
                .filter(|(h, _)| h == "content-length")
                .collect();
            assert_eq!(lens.len(), 1, "{lengths:?}: {sent:?}");
            assert_eq!(lens[0].1, sent.raw_body.len().to_string(), "{sent:?}");
        }
    }
    assert_eq!(
        text(&alpha.requests()[0].raw_body),
        r#"{"model":"alpha-long"}"#
    );
}

// --- transfer codings ---------------------------------------------------------

#[tokio::test]
async fn transfer_codings_stay_on_relayed_bodies() {
    // Opaque stand-ins for gzip data: the gateway relays the bytes as they
    // are, so the header must keep saying what they are.
    let up = RawUpstream::start(vec![
        Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n"
                .to_vec(),
        ),
        Reply::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nGZIP".to_vec()),
    ]);
    let gw = gateway(&up, "");
    let mut c = RawClient::connect(gw.addr()).await;
    let body = "4\r\nGZIP\r\n0\r\n\r\n";
    c.send(
        format!("POST /z HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}")
            .as_bytes(),
    )
    .await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.header("transfer-encoding"), Some("gzip, chunked"));
    assert_eq!(text(&r.msg.raw_body), body);
    let sent = &up.requests()[0];
    assert_eq!(sent.header("transfer-encoding"), Some("gzip, chunked"));
    assert_eq!(text(&sent.raw_body), body);
    // Close-delimited and gzip-coded: the gateway adds the chunked layer.
    c.send(get("/eof").as_bytes()).await;
    let r = expect_response(&mut c).await;
    assert_eq!(r.header("transfer-encoding"), Some("gzip, chunked"));
    assert!(r.complete);
    assert_eq!(r.body_text(), "GZIP");
}
