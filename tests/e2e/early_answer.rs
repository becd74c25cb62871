//! A server that answers a request before taking its whole body (a `413`
//! before a large upload, a `401` before any of it) has that answer reach
//! the client, as with HAProxy, instead of a `502` for the write the
//! server refused. The server either closes at once, which resets the
//! connection while the gateway is still writing, or stops reading and
//! leaves the gateway's write blocked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use llmgw_e2e::{one_backend, Gateway, RawUpstream, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Larger than what the loopback socket buffers on both legs can hold,
/// so the gateway is still writing when the server answers.
const UPLOAD: usize = 48 << 20;
const PATIENCE: Duration = Duration::from_secs(20);

fn refusal(status: &str, text: &str) -> Vec<u8> {
    let body = format!(r#"{{"error":{{"message":"{text}","type":"invalid_request_error"}}}}"#);
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends a POST with an `UPLOAD`-byte body over HTTP/1.1 (the engine's
/// path), the body written by a task of its own that stops at the first
/// failed write, and returns every byte the gateway sent back until it
/// closed.
async fn upload_h1(gw: SocketAddr) -> String {
    let s = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /v1/files HTTP/1.1\r\nhost: gw\r\ncontent-type: application/octet-stream\r\ncontent-length: {UPLOAD}\r\n\r\n"
        );
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..UPLOAD / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let got = read_to_close(&mut rd).await;
    writer.abort();
    got
}

/// Every byte the gateway sends until it closes (or resets) the connection;
/// fails the test if it has not closed within `PATIENCE`.
async fn read_to_close(rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 8192];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(
        read.is_ok(),
        "the gateway neither answered nor closed within {PATIENCE:?}; got {got:?}"
    );
    got
}

/// POSTs `body` over h2c and returns the answer's status and text, which
/// must come within `PATIENCE`.
async fn h2_post<B>(url: String, body: B) -> (u16, String)
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = HyperClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::post(url)
        .header("content-type", "application/octet-stream")
        .body(body)
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("no answer in time")
        .expect("the h2 request failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_413_sent_before_the_body_reaches_an_http1_client() {
    let up = RawUpstream::start(vec![Reply::EarlyClose(refusal(
        "413 Payload Too Large",
        "upload too large",
    ))]);
    let gw = Gateway::start(&one_backend("", "", up.addr), 1);

    let got = upload_h1(gw.addr()).await;
    assert!(got.starts_with("HTTP/1.1 413 "), "{got:?}");
    assert!(got.contains("upload too large"), "{got:?}");
    // The client's body was never read to its end: the connection closes
    // after the answer, and says so.
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got:?}"
    );

    // The server saw the head only, and the gateway did not send the
    // request again.
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert!(
        reqs[0].start.starts_with("POST /v1/files "),
        "{}",
        reqs[0].start
    );
}

#[tokio::test]
async fn a_401_from_a_server_that_stops_reading_reaches_the_client() {
    let up = RawUpstream::start(vec![
        Reply::EarlyStall(refusal("401 Unauthorized", "missing key")),
        Reply::Send(llmgw_e2e::ok_response("after")),
    ]);
    let gw = Gateway::start(&one_backend("", "", up.addr), 1);

    // Without the early answer, the blocked write would end only at
    // `timeout server` (a 504).
    let got = upload_h1(gw.addr()).await;
    assert!(got.starts_with("HTTP/1.1 401 "), "{got:?}");
    assert!(got.contains("missing key"), "{got:?}");

    // That connection is not reused: the next request opens another.
    let r = llmgw_e2e::Client::http1().get(&gw.url("/v1/next")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "after"));
    assert_eq!(up.accepted(), 2);
}

#[tokio::test]
async fn a_413_sent_before_the_body_reaches_an_h2_client() {
    let up = RawUpstream::start(vec![Reply::EarlyClose(refusal(
        "413 Payload Too Large",
        "upload too large",
    ))]);
    let gw = Gateway::start(&one_backend("", "", up.addr), 1);
    let body = Full::new(Bytes::from(vec![b'x'; UPLOAD]));
    let (status, text) = h2_post(gw.url("/v1/files"), body).await;
    assert_eq!(status, 413);
    assert!(text.contains("upload too large"), "{text:?}");
}

/// A gateway in front of a server that answers 401 to a request's head and
/// then reads nothing. Retries are off: with them on (the default) a small
/// body is read whole before the head goes out (HAProxy's
/// http-buffer-request), and the server could not answer before it.
fn refusing_gateway() -> (RawUpstream, Gateway) {
    let up = RawUpstream::start(vec![Reply::EarlyStall(refusal(
        "401 Unauthorized",
        "missing key",
    ))]);
    let gw = Gateway::start(&one_backend("", "retries = 0", up.addr), 1);
    (up, gw)
}

#[tokio::test]
async fn an_answer_does_not_wait_for_the_rest_of_a_slow_body() {
    let (_up, gw) = refusing_gateway();
    let mut s = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    // Ten bytes of a thousand, then nothing: the server has answered by
    // then, and the client hears it without sending the rest.
    s.write_all(b"POST /v1/files HTTP/1.1\r\nhost: gw\r\ncontent-length: 1000\r\n\r\n0123456789")
        .await
        .expect("write");
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 401 "), "{got:?}");
    assert!(got.contains("missing key"), "{got:?}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got:?}"
    );
}

#[tokio::test]
async fn an_answer_reaches_an_h2_client_whose_body_is_still_coming() {
    let (_up, gw) = refusing_gateway();
    // A body that sends one frame and then waits, as a slow upload does
    // (its sender lives until the answer is in).
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    tx.send_data(Bytes::from_static(b"0123456789"))
        .await
        .expect("first frame");
    let (status, text) = h2_post(gw.url("/v1/files"), body).await;
    assert_eq!(status, 401);
    assert!(text.contains("missing key"), "{text:?}");
    drop(tx);
}
