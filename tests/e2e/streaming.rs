//! Responses pass through as they come: SSE events reach the client before
//! the upstream has finished, an upstream cut mid-stream is visible to the
//! client as a broken body, and upgraded connections are tunnelled.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use llmgw_e2e::{one_backend, Client, Gateway, Mock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sse_events_arrive_as_the_upstream_sends_them() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(&one_backend("", "", m.addr), 1);
    for client in [Client::http1(), Client::h2c()] {
        let (parts, mut body) = client
            .stream(
                &gw.url("/v1/chat/completions"),
                &[("x-mock-tokens", "6"), ("x-mock-token-delay-ms", "250")],
                r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
            )
            .await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["content-type"], "text/event-stream");
        let mut arrivals = Vec::new();
        let mut text = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("stream broke");
            if let Ok(data) = frame.into_data() {
                arrivals.push(Instant::now());
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        assert!(text.contains("\"usage\""), "{text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        // Six tokens 250 ms apart: had the gateway buffered the response,
        // everything would arrive at once. Frames must span most of it.
        let spread = arrivals.last().unwrap().duration_since(arrivals[0]);
        assert!(arrivals.len() >= 6, "only {} frames", arrivals.len());
        assert!(
            spread >= Duration::from_millis(1000),
            "frames arrived within {spread:?}: buffered?"
        );
    }
}

#[tokio::test]
async fn upstream_cut_mid_stream_is_never_a_clean_end() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(&one_backend("", "", m.addr), 1);
    let (parts, body) = Client::http1()
        .stream(
            &gw.url("/v1/chat/completions"),
            &[("x-mock-fail", "reset-mid-stream"), ("x-mock-tokens", "10")],
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )
        .await;
    assert_eq!(parts.status, 200);
    let r = body.collect().await;
    assert!(
        r.is_err(),
        "the client saw a complete body although the upstream broke off"
    );
}

/// Streams `tokens` events `gap_ms` apart through a gateway whose backend
/// has `timeout server = 400ms`; `Ok` holds the body when it ended cleanly.
async fn stream_under_timeout_server(
    client: Client,
    tokens: u32,
    gap_ms: u32,
) -> Result<String, String> {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &one_backend("", "timeout = { server = \"400ms\" }", m.addr),
        1,
    );
    let (tokens, gap_ms) = (tokens.to_string(), gap_ms.to_string());
    let (parts, body) = client
        .stream(
            &gw.url("/v1/chat/completions"),
            &[
                ("x-mock-tokens", &tokens),
                ("x-mock-token-delay-ms", &gap_ms),
            ],
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )
        .await;
    assert_eq!(parts.status, 200);
    match body.collect().await {
        Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn timeout_server_runs_from_each_event_not_from_the_first() {
    // Eight events 150 ms apart: the stream lasts three times `timeout
    // server`, but no gap reaches it.
    for client in [Client::http1(), Client::h2c()] {
        let body = stream_under_timeout_server(client, 8, 150)
            .await
            .expect("a stream with short gaps was cut");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    }
}

#[tokio::test]
async fn a_stream_silent_past_timeout_server_is_cut() {
    for client in [Client::http1(), Client::h2c()] {
        let r = stream_under_timeout_server(client, 3, 1500).await;
        assert!(r.is_err(), "a stalled stream ended cleanly: {r:?}");
    }
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    // A tiny upstream that accepts any upgrade and echoes bytes, upper-cased.
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
        }
    });
    let gw = Gateway::start(&one_backend("", "", up_addr), 1);
    let mut c = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    c.write_all(b"GET /v1/realtime HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"realtime"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg.to_ascii_uppercase());
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_timeout_client() {
    let m = Mock::start("m", &[]);
    let mut gw = Gateway::start(
        &format!(
            "[global]\nstats = \"127.0.0.1:0\"\n{}",
            one_backend("timeout = { client = \"500ms\" }", "", m.addr)
        ),
        1,
    );
    let stats = gw.proc.wait_addr("stats listening on");
    // A long, fast stream the client never reads: the socket buffers fill,
    // the gateway's writes wait, and `timeout client` ends the request.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nx-mock-tokens: 1000000\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let c = Client::http1();
    let active = |v: serde_json::Value| v["backends"][0]["servers"][0]["active"].as_u64();
    llmgw_e2e::eventually(Duration::from_secs(10), || async {
        let v = c.get(&format!("http://{stats}/stats.json")).await.json();
        (active(v) == Some(1)).then_some(())
    })
    .await;
    llmgw_e2e::eventually(Duration::from_secs(10), || async {
        let v = c.get(&format!("http://{stats}/stats.json")).await.json();
        (active(v) == Some(0)).then_some(())
    })
    .await;
    drop(s);
}
