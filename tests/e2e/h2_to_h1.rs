//! HTTP/2 clients in front of plain HTTP/1.1 upstreams: the general path's
//! own HTTP/1.1 client (`node/src/http/h1/client.rs`), seen from both ends.
//! An h2c client sends; a recording upstream (`RawUpstream`) answers with
//! exact bytes and keeps every byte it received, per connection.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use llmgw_e2e::{eventually, ok_response, one_backend, Client, Gateway, RawUpstream, Reply};

const PATIENCE: Duration = Duration::from_secs(10);

fn gateway(up: &RawUpstream) -> Gateway {
    Gateway::start(&one_backend("", "", up.addr), 1)
}

#[tokio::test]
async fn h2_requests_go_out_as_http1_on_one_pooled_connection() {
    let up = RawUpstream::start(vec![
        Reply::Send(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-up: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
                .to_vec(),
        ),
        Reply::Send(ok_response("two")),
        Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        Reply::Send(ok_response("engine")),
    ]);
    let gw = gateway(&up);
    let c = Client::h2c();

    let r = c.post_json(&gw.url("/v1/a?q=1"), "{\"x\":1}").await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello world"));
    assert_eq!(r.header("x-up"), Some("1"));
    assert_eq!(r.header("transfer-encoding"), None);
    let r = c.get(&gw.url("/v1/b")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "two"));
    let r = c.send(Method::DELETE, &gw.url("/v1/c"), &[], "").await;
    assert_eq!(r.status.as_u16(), 204);
    // An HTTP/1.1 client's request (the engine's) takes the same pool.
    let r = Client::http1().get(&gw.url("/v1/d")).await;
    assert_eq!(r.text(), "engine");

    let conns = up.connections();
    assert_eq!(conns.len(), 1, "one upstream connection for all four");
    let reqs = &conns[0].requests;
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs[0].start.starts_with("POST /v1/a?q=1 HTTP/1.1"),
        "{}",
        reqs[0].start
    );
    assert!(reqs[0]
        .header("host")
        .is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert_eq!(reqs[0].header("content-length"), Some("7"));
    assert_eq!(reqs[0].body(), b"{\"x\":1}");
    assert!(
        reqs[1].start.starts_with("GET /v1/b HTTP/1.1"),
        "{}",
        reqs[1].start
    );
    // A bodiless GET or DELETE carries no framing header at all.
    for r in &reqs[1..3] {
        assert_eq!(r.header("content-length"), None, "{}", r.start);
        assert_eq!(r.header("transfer-encoding"), None, "{}", r.start);
    }
}

#[tokio::test]
async fn chunked_trailers_reach_an_h2_client() {
    let up = RawUpstream::start(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-checksum: abc\r\n\r\n".to_vec(),
    )]);
    let gw = gateway(&up);
    let raw = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = raw
        .get(gw.url("/v1/t").parse().expect("uri"))
        .await
        .expect("response");
    let all = resp.into_body().collect().await.expect("body");
    let trailers = all.trailers().cloned();
    assert_eq!(&all.to_bytes()[..], b"ok");
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("x-checksum")),
        Some(&http::HeaderValue::from_static("abc"))
    );
}

#[tokio::test]
async fn an_h2_body_of_unknown_length_goes_chunked() {
    let up = RawUpstream::start(vec![Reply::Send(ok_response("got it"))]);
    // Past `body_limit` a body is not held for a retry: it streams.
    let gw = Gateway::start(&one_backend("body_limit = 4", "", up.addr), 1);
    let client = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
    let req = Request::post(gw.url("/v1/upload"))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let sending = tokio::spawn(async move {
        tx.send_data(Bytes::from_static(b"{\"part\":"))
            .await
            .expect("send");
        tx.send_data(Bytes::from_static(b"2}")).await.expect("send");
    });
    let resp = client.request(req).await.expect("response");
    sending.await.expect("sender");
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&text[..], b"got it");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(reqs[0].header("content-length"), None);
    assert_eq!(reqs[0].body(), b"{\"part\":2}");
}

#[tokio::test]
async fn a_body_cut_short_resets_the_stream_and_its_connection_is_not_reused() {
    let up = RawUpstream::start(vec![
        Reply::Close(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial".to_vec()),
        Reply::Close(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec()),
        Reply::Send(ok_response("fresh")),
    ]);
    let gw = gateway(&up);
    let c = Client::h2c();

    // The reset may overtake the head: either way the client never sees a
    // clean end.
    let raw = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let cut = match raw.get(gw.url("/v1/cut").parse().expect("uri")).await {
        Err(_) => true,
        Ok(r) => r.into_body().collect().await.is_err(),
    };
    assert!(cut, "a truncated body must not end cleanly");
    // A body that runs until the server closes is whole when it does.
    let r = c.get(&gw.url("/v1/close")).await;
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (200, "until the end")
    );
    let r = c.get(&gw.url("/v1/after")).await;
    assert_eq!(r.text(), "fresh");

    let conns = eventually(PATIENCE, || async {
        let c = up.connections();
        (c.len() == 3 && c[0].closed && c[1].closed).then_some(c)
    })
    .await;
    assert!(conns.iter().all(|c| c.requests.len() == 1), "{conns:?}");
}

#[tokio::test]
async fn an_h2_head_request_gets_the_length_without_a_body() {
    let up = RawUpstream::start(vec![
        Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n".to_vec()),
        Reply::Send(ok_response("next")),
    ]);
    let gw = gateway(&up);
    let c = Client::h2c();
    let r = c.send(Method::HEAD, &gw.url("/v1/h"), &[], "").await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("content-length"), Some("42"));
    assert!(r.body.is_empty());
    // The connection is still in step: the next answer is the next one.
    assert_eq!(c.get(&gw.url("/v1/n")).await.text(), "next");
    assert_eq!(up.connections().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_502_in_the_openai_shape() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = gone.local_addr().expect("addr");
    drop(gone);
    let gw = Gateway::start(&one_backend("", "", addr), 1);
    let r = Client::h2c()
        .send(
            Method::POST,
            &gw.url("/v1/chat/completions"),
            &[],
            "{\"model\":\"m\"}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 502);
    assert!(r.json()["error"]["message"].is_string(), "{}", r.text());
}

#[tokio::test]
async fn an_h2_completion_after_a_408_on_a_pooled_connection_goes_again() {
    let up = RawUpstream::start(vec![
        Reply::Send(ok_response("one")),
        // The server timed the pooled connection out as the request came in.
        Reply::Close(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec(),
        ),
        Reply::Send(ok_response("two")),
    ]);
    let gw = gateway(&up);
    let c = Client::h2c();
    assert_eq!(c.post_json(&gw.url("/v1/a"), "{}").await.text(), "one");
    let r = c.post_json(&gw.url("/v1/b"), "{\"x\":2}").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "two"));
    let conns = up.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[1].requests[0].body(), b"{\"x\":2}");
}
