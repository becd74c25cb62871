//! End-to-end tests of the mock: each starts `serve` on 127.0.0.1:0 and talks
//! to it with hyper's client over HTTP/1.1 and, where the protocol matters,
//! h2c. Shapes are checked by parsing them back with `serde_json`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;

use super::stats::KNOWN_PATHS;
use super::*;

type TestClient = Client<HttpConnector, Full<Bytes>>;

/// Binds before spawning, so the first request cannot race the listener.
async fn start(opts: MockOptions) -> (SocketAddr, Arc<MockStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = opts.stats.clone();
    tokio::spawn(serve(listener, Arc::new(opts)));
    (addr, stats)
}

fn h1() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body, or the error that ended it, with the bytes received before.
    body: Result<Bytes, (Bytes, String)>,
}

impl Reply {
    fn bytes(&self) -> &Bytes {
        match &self.body {
            Ok(b) => b,
            Err((_, e)) => panic!("body failed: {e}"),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8(self.bytes().to_vec()).unwrap()
    }
}

async fn call(
    client: &TestClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, mut body) = resp.into_parts();
    let mut got = Vec::new();
    let mut end = Ok(());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => got.extend_from_slice(frame.data_ref().map_or(&b""[..], |d| &d[..])),
            Err(e) => {
                end = Err(format!("{e:?}"));
                break;
            }
        }
    }
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: end
            .map(|()| Bytes::from(got.clone()))
            .map_err(|e| (Bytes::from(got), e)),
    })
}

async fn post(
    client: &TestClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    call(client, addr, Method::POST, path, headers, body)
        .await
        .unwrap()
}

async fn get(client: &TestClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(client, addr, Method::GET, path, headers, "")
        .await
        .unwrap()
}

/// SSE events as `(event name or "", data)`.
fn sse_events(body: &[u8]) -> Vec<(String, String)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.ends_with("\n\n"),
        "stream must end on an event boundary"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let mut name = String::new();
            let mut data = String::new();
            for line in event.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_string();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data)
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn expected_text(tokens: u32) -> String {
    (0..tokens)
        .map(|i| {
            let (sep, word) = render::token(i);
            format!("{sep}{word}")
        })
        .collect()
}

#[tokio::test]
async fn chat_completion_json() {
    let (addr, _) = start(MockOptions {
        name: "mock-a".into(),
        ..Default::default()
    })
    .await;
    for client in [h1(), h2()] {
        let body = r#"{"model":"gpt-\"quoted\"","messages":[{"role":"user","content":"hi"}]}"#;
        let r = post(&client, addr, "/v1/chat/completions", &[], body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-mock-server"], "mock-a");
        assert_eq!(r.headers["content-type"], "application/json");
        let v = r.json();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], "gpt-\"quoted\"");
        let choice = &v["choices"][0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], expected_text(16));
        assert!(expected_text(16).starts_with("Hello from llmgw mock"));
        assert_eq!(choice["finish_reason"], "stop");
        let usage = &v["usage"];
        assert_eq!(usage["prompt_tokens"], body.len() as u64 / 4);
        assert_eq!(usage["completion_tokens"], 16);
        assert_eq!(usage["total_tokens"], body.len() as u64 / 4 + 16);
    }
}

#[tokio::test]
async fn max_tokens_and_token_header_limit_the_answer() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","max_tokens":3}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello from llmgw");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // Longer than the precomputed text, and without a model.
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-tokens", "100")],
        "{}",
    )
    .await;
    let v = r.json();
    assert_eq!(v["model"], "mock-model");
    assert_eq!(v["choices"][0]["message"]["content"], expected_text(100));
}

#[tokio::test]
async fn chat_stream_with_usage() {
    let (addr, _) = start(MockOptions::default()).await;
    for client in [h1(), h2()] {
        let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
        let r = post(
            &client,
            addr,
            "/v1/chat/completions",
            &[("x-mock-tokens", "5")],
            body,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/event-stream");
        let events = sse_events(r.bytes());
        assert_eq!(events.len(), 5 + 3, "5 tokens, finish, usage, [DONE]");
        assert!(events.iter().all(|(name, _)| name.is_empty()));
        assert_eq!(events[7].1, "[DONE]");
        let chunks: Vec<Value> = events[..7]
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], id);
            assert_eq!(c["model"], "gpt-4o");
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[..5]
            .iter()
            .map(|c| {
                assert!(c["choices"][0]["finish_reason"].is_null());
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(text, "Hello from llmgw mock upstream");
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[5]["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(chunks[6]["choices"], serde_json::json!([]));
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 5);
        assert_eq!(chunks[6]["usage"]["prompt_tokens"], body.len() as u64 / 4);
    }
}

#[tokio::test]
async fn chat_stream_without_usage_and_empty() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-tokens", "2")],
        r#"{"stream":true}"#,
    )
    .await;
    let events = sse_events(r.bytes());
    assert_eq!(events.len(), 2 + 2, "2 tokens, finish, [DONE]");
    assert_eq!(events[3].1, "[DONE]");

    // No tokens: still one chunk carrying the role.
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-tokens", "0")],
        r#"{"stream":true}"#,
    )
    .await;
    let events = sse_events(r.bytes());
    assert_eq!(events.len(), 3);
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["choices"][0]["delta"]["content"], "");
}

#[tokio::test]
async fn legacy_completions() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let r = post(
        &client,
        addr,
        "/v1/completions",
        &[("x-mock-tokens", "4")],
        r#"{"model":"davinci","prompt":"x"}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from llmgw mock");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4);

    let body = r#"{"model":"davinci","prompt":["a"],"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = post(
        &client,
        addr,
        "/v1/completions",
        &[("x-mock-tokens", "4")],
        body,
    )
    .await;
    let events = sse_events(r.bytes());
    assert_eq!(events.len(), 4 + 3);
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks[..4]
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from llmgw mock");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 4);
    assert_eq!(events[6].1, "[DONE]");
}

#[tokio::test]
async fn anthropic_message_json() {
    let (addr, _) = start(MockOptions::default()).await;
    let body = r#"{"model":"claude-x","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = post(
        &h1(),
        addr,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        body,
    )
    .await;
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], "Hello from llmgw mock");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert!(v["stop_sequence"].is_null());
    assert_eq!(v["usage"]["input_tokens"], body.len() as u64 / 4);
    assert_eq!(v["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn anthropic_stream_events_in_order() {
    let (addr, _) = start(MockOptions::default()).await;
    for client in [h1(), h2()] {
        // 9 tokens wrap around the word list once.
        let body = r#"{"model":"claude-x","max_tokens":1024,"stream":true,"messages":[]}"#;
        let r = post(
            &client,
            addr,
            "/v1/messages",
            &[("x-mock-tokens", "9")],
            body,
        )
        .await;
        assert_eq!(r.headers["content-type"], "text/event-stream");
        let events = sse_events(r.bytes());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(std::iter::repeat_n("content_block_delta", 9));
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected);
        let data: Vec<Value> = events
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for ((name, _), d) in events.iter().zip(&data) {
            assert_eq!(&d["type"], name);
        }
        let msg = &data[0]["message"];
        assert_eq!(msg["model"], "claude-x");
        assert_eq!(msg["role"], "assistant");
        assert_eq!(msg["usage"]["input_tokens"], body.len() as u64 / 4);
        assert_eq!(data[1]["content_block"]["type"], "text");
        let text: String = data[3..12]
            .iter()
            .map(|d| {
                assert_eq!(d["delta"]["type"], "text_delta");
                d["delta"]["text"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(text, expected_text(9));
        assert_eq!(data[13]["delta"]["stop_reason"], "end_turn");
        assert_eq!(data[13]["usage"]["output_tokens"], 9);
    }
}

#[tokio::test]
async fn embeddings_are_deterministic() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let one = post(
        &client,
        addr,
        "/v1/embeddings",
        &[],
        r#"{"model":"e","input":"hello"}"#,
    )
    .await
    .json();
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "e");
    let vector = one["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 8);
    let norm: f64 = vector.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3);

    let many = post(
        &client,
        addr,
        "/v1/embeddings",
        &[],
        r#"{"input":["x","hello","y"],"dimensions":4}"#,
    )
    .await
    .json();
    let data = many["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[1]["embedding"].as_array().unwrap().len(), 4);

    let again = post(
        &client,
        addr,
        "/v1/embeddings",
        &[],
        r#"{"input":["hello"]}"#,
    )
    .await
    .json();
    assert_eq!(again["data"][0]["embedding"], one["data"][0]["embedding"]);

    // Token arrays: a flat one is one input, nested ones are one each.
    let flat = post(&client, addr, "/v1/embeddings", &[], r#"{"input":[1,2,3]}"#)
        .await
        .json();
    assert_eq!(flat["data"].as_array().unwrap().len(), 1);
    let nested = post(
        &client,
        addr,
        "/v1/embeddings",
        &[],
        r#"{"input":[[1,2],[3]]}"#,
    )
    .await
    .json();
    assert_eq!(nested["data"].as_array().unwrap().len(), 2);

    // base64: what the openai SDK requests by default; 8 little-endian f32s.
    let b64 = post(
        &client,
        addr,
        "/v1/embeddings",
        &[],
        r#"{"input":"hello","encoding_format":"base64"}"#,
    )
    .await
    .json();
    let encoded = b64["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len(), 44, "32 bytes in base64");
    let floats: Vec<f32> = base64_decode(encoded)
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (a, b) in floats.iter().zip(vector) {
        assert!((f64::from(*a) - b.as_f64().unwrap()).abs() < 1e-6);
    }

    for bad in [
        r#"{"input":[]}"#,
        r#"{"model":"e"}"#,
        r#"{"input":[1,"a"]}"#,
        r#"{"input":{}}"#,
    ] {
        let r = post(&client, addr, "/v1/embeddings", &[], bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn models_and_health() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let list = get(&client, addr, "/v1/models", &[]).await.json();
    assert_eq!(list["object"], "list");
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o"));
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));

    let anthropic = get(
        &client,
        addr,
        "/v1/models",
        &[("anthropic-version", "2023-06-01")],
    )
    .await
    .json();
    assert_eq!(anthropic["has_more"], false);
    assert!(anthropic["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["type"] == "model"));

    let one = get(&client, addr, "/v1/models/some-model", &[])
        .await
        .json();
    assert_eq!(one["id"], "some-model");
    assert_eq!(one["object"], "model");

    let health = get(&client, addr, "/health", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), "ok");
}

#[tokio::test]
async fn echo_shows_the_request() {
    let (addr, _) = start(MockOptions::default()).await;
    for (client, version) in [(h1(), "HTTP/1.1"), (h2(), "HTTP/2.0")] {
        let r = call(
            &client,
            addr,
            Method::PUT,
            "/echo/a/b?x=1&y=2",
            &[("x-test", "v1"), ("x-test", "v2")],
            "payload",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["path"], "/echo/a/b");
        assert_eq!(v["query"], "x=1&y=2");
        assert_eq!(v["version"], version);
        assert_eq!(v["body"], "payload");
        let headers = v["headers"].as_array().unwrap();
        let tests: Vec<&Value> = headers
            .iter()
            .filter(|h| h[0] == "x-test")
            .map(|h| &h[1])
            .collect();
        assert_eq!(tests, ["v1", "v2"]);
    }
    let r = get(&h1(), addr, "/echo", &[]).await.json();
    assert!(r["query"].is_null());
}

#[tokio::test]
async fn injected_429_carries_retry_after() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-fail", "status:429")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.headers["x-mock-server"], "mock");
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("429"));

    let h = [("x-mock-fail", "status:429"), ("x-mock-retry-after", "7")];
    let r = post(&client, addr, "/v1/messages", &h, "{}").await;
    assert_eq!(r.headers["retry-after"], "7");
    let v = r.json();
    assert_eq!(v["type"], "error", "Anthropic error shape on /v1/messages");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-fail", "status:500")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(r.json()["error"]["type"], "server_error");
}

#[tokio::test]
async fn process_wide_failure_and_override() {
    let (addr, stats) = start(MockOptions {
        fail: Some(Fail::Status(503)),
        retry_after: Some("30".into()),
        ..Default::default()
    })
    .await;
    let client = h1();
    let r = get(&client, addr, "/v1/models", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "30");
    let r = get(&client, addr, "/v1/models", &[("x-mock-fail", "none")]).await;
    assert_eq!(r.status, 200);
    // Control endpoints are exempt, so a failing server can still be inspected.
    let r = get(&client, addr, "/mock/stats", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["by_path"]["/v1/models"], 2);
    assert_eq!(stats.count("/v1/models"), 2);
}

#[tokio::test]
async fn reset_mid_stream_is_an_error_for_the_client() {
    let (addr, _) = start(MockOptions::default()).await;
    for (client, proto) in [(h1(), "h1"), (h2(), "h2")] {
        let h = [("x-mock-fail", "reset-mid-stream"), ("x-mock-tokens", "8")];
        let r = post(
            &client,
            addr,
            "/v1/chat/completions",
            &h,
            r#"{"stream":true}"#,
        )
        .await;
        assert_eq!(r.status, 200, "{proto}: headers are sent");
        let (partial, err) = r.body.expect_err("body must fail, not end cleanly");
        let text = String::from_utf8_lossy(&partial);
        assert!(!text.contains("[DONE]"), "{proto}: {text}");
        assert!(!err.is_empty());

        let r = post(&client, addr, "/v1/messages", &h, r#"{"stream":true}"#).await;
        let (_, _) = r.body.expect_err("Anthropic stream must fail too");

        // A complete answer is cut short of its Content-Length.
        let r = post(&client, addr, "/v1/chat/completions", &h, "{}").await;
        assert_eq!(r.status, 200);
        r.body.expect_err("JSON body must fail too");
    }
}

/// What arrived before the cut is exactly the first half of the tokens:
/// the mock lets them reach the socket before breaking off. Multi-threaded,
/// where the connection task runs beside the stream's task (on HTTP/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_stream_delivers_the_first_half() {
    let (addr, _) = start(MockOptions::default()).await;
    let h = [("x-mock-fail", "reset-mid-stream"), ("x-mock-tokens", "6")];
    for (client, proto) in [(h1(), "h1"), (h2(), "h2")] {
        for path in ["/v1/chat/completions", "/v1/messages"] {
            let r = post(&client, addr, path, &h, r#"{"stream":true}"#).await;
            let (partial, _) = r.body.expect_err("must fail");
            let events = sse_events(&partial);
            let deltas = events
                .iter()
                .filter(|(name, data)| {
                    name == "content_block_delta" || data.contains("\"delta\":{\"")
                })
                .count();
            assert_eq!(deltas, 3, "{proto} {path}: {events:?}");
        }
    }
}

#[tokio::test]
async fn close_and_hang_never_answer() {
    let (addr, stats) = start(MockOptions::default()).await;
    for client in [h1(), h2()] {
        let r = call(
            &client,
            addr,
            Method::GET,
            "/v1/models",
            &[("x-mock-fail", "close")],
            "",
        )
        .await;
        assert!(r.is_err(), "close must not produce a response");
    }

    let client = h1();
    let hanging = tokio::spawn({
        let client = client.clone();
        async move {
            call(
                &client,
                addr,
                Method::GET,
                "/health",
                &[("x-mock-fail", "hang")],
                "",
            )
            .await
            .is_ok()
        }
    });
    // Once the server has counted it, the request is parked in the handler.
    let mut waited = 0;
    while stats.count("/health") == 0 {
        tokio::task::yield_now().await;
        waited += 1;
        assert!(waited < 1_000_000, "hang request never arrived");
    }
    // Other requests still get answers meanwhile.
    assert_eq!(get(&h1(), addr, "/v1/models", &[]).await.status, 200);
    assert!(!hanging.is_finished());
    hanging.abort();
}

#[tokio::test]
async fn hang_is_released_when_the_client_gives_up() {
    // A client that half-closes its side after a hanging POST must see the
    // server close too: proof that the parked handler does not outlive it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _) = start(MockOptions::default()).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Larger than what hyper reads ahead unasked.
    let body = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(200_000));
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nx-mock-fail: hang\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    // The timeout only turns a regression into a failure instead of a hang.
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("server kept the hanging connection open")
        .ok();
    assert!(rest.is_empty(), "no response bytes: {rest:?}");
}

#[tokio::test]
async fn delays_hold_headers_and_tokens() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let ttft = Duration::from_millis(60);

    // Non-streaming: everything after ttft + (tokens - 1) * delay.
    let start = Instant::now();
    let h = [
        ("x-mock-ttft-ms", "60"),
        ("x-mock-tokens", "3"),
        ("x-mock-token-delay-ms", "20"),
    ];
    post(&client, addr, "/v1/chat/completions", &h, "{}")
        .await
        .json();
    assert!(start.elapsed() >= ttft + Duration::from_millis(40));

    // Streaming: the tokens are paced.
    let start = Instant::now();
    let r = post(
        &client,
        addr,
        "/v1/chat/completions",
        &h,
        r#"{"stream":true}"#,
    )
    .await;
    assert_eq!(sse_events(r.bytes()).len(), 5);
    assert!(start.elapsed() >= ttft + Duration::from_millis(40));

    // slow-headers: the response head itself waits for ttft.
    let start = Instant::now();
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("x-mock-fail", "slow-headers")
        .header("x-mock-ttft-ms", "60")
        .body(Full::new(Bytes::from_static(br#"{"stream":true}"#)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert!(start.elapsed() >= ttft);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stats_count_every_request_by_path() {
    let (addr, stats) = start(MockOptions::default()).await;
    let client = h1();
    get(&client, addr, "/v1/models", &[]).await;
    get(&client, addr, "/v1/models", &[]).await;
    post(&client, addr, "/v1/chat/completions", &[], "{}").await;
    get(&client, addr, "/echo/x?q=1", &[]).await;
    get(&client, addr, "/nope", &[]).await;
    post(
        &client,
        addr,
        "/v1/chat/completions",
        &[("x-mock-fail", "status:500")],
        "{}",
    )
    .await;

    let v = get(&client, addr, "/mock/stats", &[]).await.json();
    assert_eq!(v["requests"], 6);
    assert_eq!(
        v["by_path"],
        serde_json::json!({"/v1/models": 2, "/v1/chat/completions": 2, "/echo/x": 1, "/nope": 1})
    );
    assert_eq!(stats.requests(), 6);

    let v = call(&client, addr, Method::POST, "/mock/reset", &[], "")
        .await
        .unwrap()
        .json();
    assert_eq!(v["requests"], 0);
    assert_eq!(stats.requests(), 0);
}

#[tokio::test]
async fn errors_are_provider_shaped() {
    let (addr, _) = start(MockOptions::default()).await;
    let client = h1();
    let r = get(&client, addr, "/v2/unknown", &[]).await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "not_found");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v2/unknown"));

    for body in ["{not json", "[1,2]", "", r#"{"stream":"yes"}"#] {
        let r = post(&client, addr, "/v1/chat/completions", &[], body).await;
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = post(&client, addr, "/v1/messages", &[], "{").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["type"], "error");

    let r = get(&client, addr, "/v1/chat/completions", &[]).await;
    assert_eq!(r.status, 405);

    for (name, value) in [
        ("x-mock-tokens", "many"),
        ("x-mock-fail", "explode"),
        ("x-mock-ttft-ms", "99999999999"),
    ] {
        let r = post(
            &client,
            addr,
            "/v1/chat/completions",
            &[(name, value)],
            "{}",
        )
        .await;
        assert_eq!(r.status, 400, "{name}: {value}");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(name));
    }
}

#[tokio::test]
async fn keep_alive_survives_injected_errors() {
    // One HTTP/1.1 connection carries an error and then a normal answer.
    let (addr, _) = start(MockOptions::default()).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (fail, status) in [("status:429", 429), ("none", 200)] {
        let req = Request::post("/v1/chat/completions")
            .header("host", "mock")
            .header("x-mock-fail", fail)
            .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), status);
        resp.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn spawn_builtin_serves_defaults() {
    let addr = spawn_builtin().await.unwrap();
    let r = post(&h1(), addr, "/v1/chat/completions", &[], r#"{"model":"m"}"#).await;
    assert_eq!(r.json()["usage"]["completion_tokens"], 16);
}

#[test]
fn fail_values_parse() {
    assert_eq!("status:429".parse::<Fail>(), Ok(Fail::Status(429)));
    assert_eq!("reset-mid-stream".parse::<Fail>(), Ok(Fail::ResetMidStream));
    assert_eq!("hang".parse::<Fail>(), Ok(Fail::Hang));
    assert_eq!("slow-headers".parse::<Fail>(), Ok(Fail::SlowHeaders));
    assert_eq!("close".parse::<Fail>(), Ok(Fail::Close));
    for bad in [
        "status:99",
        "status:600",
        "status:",
        "status:abc",
        "explode",
        "",
    ] {
        assert!(bad.parse::<Fail>().is_err(), "{bad}");
    }
}

#[test]
fn routes_match_their_counters() {
    for (i, path) in KNOWN_PATHS.iter().enumerate() {
        assert_eq!(handler::stat_index_of(path), Some(i), "{path}");
    }
}

#[test]
fn args_parse_from_command_line() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }
    let cli = Cli::try_parse_from([
        "x",
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "3",
        "--fail",
        "status:503",
    ])
    .unwrap();
    let opts = MockOptions::from_args(&cli.mock).unwrap();
    assert_eq!(opts.tokens, 3);
    assert_eq!(opts.fail, Some(Fail::Status(503)));
    assert_eq!(cli.mock.threads, 1);
    assert!(Cli::try_parse_from(["x", "--fail", "nope"]).is_err());
    let cli = Cli::try_parse_from(["x", "--name", "bad\nname"]).unwrap();
    assert!(MockOptions::from_args(&cli.mock).is_err());
}

#[tokio::test]
async fn failure_forced_at_run_time_for_one_path() {
    let (addr, stats) = start(MockOptions::default()).await;
    let client = h1();
    let r = post(
        &client,
        addr,
        "/mock/fail?fail=status:500&path=/health",
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&client, addr, "/health", &[]).await.status, 500);
    // Other paths are untouched; a request's own header still wins.
    assert_eq!(get(&client, addr, "/v1/models", &[]).await.status, 200);
    let r = get(&client, addr, "/health", &[("x-mock-fail", "none")]).await;
    assert_eq!(r.status, 200);
    // Every path.
    post(&client, addr, "/mock/fail?fail=status:503", &[], "").await;
    assert_eq!(get(&client, addr, "/v1/models", &[]).await.status, 503);
    // Control endpoints stay exempt.
    assert_eq!(get(&client, addr, "/mock/stats", &[]).await.status, 200);
    post(&client, addr, "/mock/fail?fail=none", &[], "").await;
    assert_eq!(get(&client, addr, "/health", &[]).await.status, 200);
    assert_eq!(stats.count("/health"), 3);
    let r = post(&client, addr, "/mock/fail?fail=sometimes", &[], "").await;
    assert_eq!(r.status, 400);
    let r = post(&client, addr, "/mock/fail?oops=1", &[], "").await;
    assert_eq!(r.status, 400);
}
