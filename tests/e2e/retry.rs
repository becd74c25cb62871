//! Retries, redispatch, mid-stream truncation and the TTFT deadline, through
//! the real gateway and real mock processes, on both request paths: the
//! HTTP/1 engine (HTTP/1.1 clients) and the general path (h2c clients).
//! Failures come from the mock's injection (`POST /mock/fail`,
//! `x-mock-fail`, `--ttft-ms`) or from killing a mock; everything is
//! polled (stats.json, mock counters), never slept on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use llmgw_e2e::{
    clients, eventually, mock_chats, mock_force, Client, Gateway, Mock, RawClient, RawUpstream,
    Reply,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn start(config: &str) -> (Gateway, SocketAddr) {
    let mut gw = Gateway::start_file("llmgw.toml", config, 1, &["--stats", "127.0.0.1:0"], &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    (gw, stats)
}

/// One frontend, backend `b` with `servers` (name, address, extra TOML
/// lines) and `opts` (backend-level TOML lines).
fn native(opts: &str, timeouts: &str, servers: &[(&str, SocketAddr, &str)]) -> String {
    let mut s = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n{opts}\n[backend.timeout]\n{timeouts}\n"
    );
    for (name, addr, extra) in servers {
        s.push_str(&format!(
            "[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n"
        ));
    }
    s
}

async fn backend(c: &Client, stats: SocketAddr) -> Value {
    let j = c.get(&format!("http://{stats}/stats.json")).await.json();
    j["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "b"))
        .unwrap_or_else(|| panic!("no backend b in {j}"))
        .clone()
}

fn server<'a>(b: &'a Value, name: &str) -> &'a Value {
    b["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no server {name} in {b}"))
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

#[tokio::test]
async fn a_503_is_retried_on_another_server_only_when_retry_on_says_so() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let ctl = Client::http1();
    mock_force(&ctl, a.addr, "status:503").await;
    let servers = [("a", a.addr, ""), ("b", b.addr, "")];

    let (gw, stats) = start(&native(
        "retries = 2\nretry_on = [\"503\"]\nredispatch = true",
        "",
        &servers,
    ));
    for (kind, c) in clients() {
        for i in 0..8 {
            let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
            assert_eq!(r.status, 200, "{kind} #{i}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("b"), "{kind} #{i}");
        }
    }
    // Every request a answered (with a 503) was retried, on b.
    let seen_by_a = mock_chats(&ctl, a.addr).await;
    assert!(seen_by_a >= 1, "round-robin sent nothing to a");
    let be = backend(&ctl, stats).await;
    assert_eq!(n(server(&be, "a"), "retries"), seen_by_a, "{be}");
    assert_eq!(n(server(&be, "a"), "redispatches"), seen_by_a, "{be}");
    assert_eq!(n(&be, "retries"), seen_by_a, "{be}");
    assert_eq!(n(server(&be, "b"), "retries"), 0, "{be}");
    drop(gw);

    // Without `retry-on 503` (default: conn-failure only) a's 503 reaches
    // the client.
    let (gw, stats) = start(&native("retries = 2\nredispatch = true", "", &servers));
    for (kind, c) in clients() {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(
                c.post_json(&gw.url("/v1/chat/completions"), CHAT)
                    .await
                    .status
                    .as_u16(),
            );
        }
        assert!(statuses.contains(&503), "{kind}: {statuses:?}");
        assert!(statuses.contains(&200), "{kind}: {statuses:?}");
    }
    assert_eq!(n(&backend(&ctl, stats).await, "retries"), 0);
}

#[tokio::test]
async fn a_killed_server_costs_no_request() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    // c holds every answer for a minute: its requests are in flight when
    // it dies.
    let c_mock = Mock::start("c", &["--ttft-ms", "60000"]);
    let servers = [("a", a.addr, ""), ("b", b.addr, ""), ("c", c_mock.addr, "")];
    let (gw, stats) = start(&native(
        "retries = 3\nretry_on = [\"all-retryable-errors\"]\nredispatch = true",
        "",
        &servers,
    ));
    let ctl = Client::http1();
    let mut first = Some(c_mock);
    for (kind, c) in clients() {
        let c_mock = match first.take() {
            Some(m) => m,
            None => Mock::start_at("c", servers[2].1, &["--ttft-ms", "60000"]),
        };
        let before = n(&backend(&ctl, stats).await, "retries");
        let url = gw.url("/v1/chat/completions");
        let mut tasks = Vec::new();
        for _ in 0..9 {
            let (c, url) = (c.clone(), url.clone());
            tasks.push(tokio::spawn(async move { c.post_json(&url, CHAT).await }));
        }
        // Three of nine went to c and wait there.
        eventually(LIMIT, || async {
            let be = backend(&ctl, stats).await;
            (n(server(&be, "c"), "active") == 3).then_some(())
        })
        .await;
        drop(c_mock);
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_ne!(r.header("x-mock-server"), Some("c"));
        }
        // Requests after the death: c refuses connections; retried.
        for _ in 0..9 {
            let r = c.post_json(&url, CHAT).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
        }
        let be = backend(&ctl, stats).await;
        assert!(n(&be, "retries") - before >= 3 + 3, "{kind}: {be}");
    }
}

#[tokio::test]
async fn a_killed_server_fails_its_requests_unless_retries_redispatch() {
    let a = Mock::start("a", &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let servers = [("a", a.addr, ""), ("dead", dead_addr, "")];
    let c = Client::http1();
    // `retries 0`: a refused connection is the client's 502.
    let (gw, stats) = start(&native("retries = 0", "", &servers));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            c.post_json(&gw.url("/v1/chat/completions"), CHAT)
                .await
                .status
                .as_u16(),
        );
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert_eq!(n(&backend(&c, stats).await, "retries"), 0);
    drop(gw);
    // Unset, `retries` is HAProxy's 3 and retries connection failures
    // (HAProxy's default retry-on), on the same server without
    // redispatch: still a 502, after three more tries.
    let (gw, stats) = start(&native("", "", &servers));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            c.post_json(&gw.url("/v1/chat/completions"), CHAT)
                .await
                .status
                .as_u16(),
        );
    }
    let failed = statuses.iter().filter(|&&s| s == 502).count() as u64;
    assert!(failed >= 1, "{statuses:?}");
    let be = backend(&c, stats).await;
    assert_eq!(n(server(&be, "dead"), "retries"), 3 * failed, "{be}");
    assert_eq!(n(server(&be, "dead"), "redispatches"), 0, "{be}");
    drop(gw);
    // …and elsewhere with it.
    let (gw, _stats) = start(&native("retries = 1\nredispatch = true", "", &servers));
    for _ in 0..4 {
        let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn ttft_deadline_retries_elsewhere_then_answers_504() {
    let slow = Mock::start("slow", &["--ttft-ms", "30000"]);
    let fast = Mock::start("fast", &[]);
    let servers = [("slow", slow.addr, ""), ("fast", fast.addr, "")];
    let (gw, stats) = start(&native(
        "retries = 1\nretry_on = [\"response-timeout\"]\nredispatch = true",
        "ttft = \"300ms\"",
        &servers,
    ));
    let ctl = Client::http1();
    // The slow mock sends a stream's head at once and its first token
    // after 30 s: the deadline is for the first byte of the answer's body.
    for (kind, c) in clients() {
        for body in [CHAT, CHAT_STREAM, CHAT, CHAT_STREAM] {
            let t = Instant::now();
            let r = c.post_json(&gw.url("/v1/chat/completions"), body).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("fast"));
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{kind}: {:?}",
                t.elapsed()
            );
        }
    }
    assert!(n(server(&backend(&ctl, stats).await, "slow"), "retries") >= 2);
    drop(gw);

    // No retry left: 504, at the deadline rather than at `timeout server`.
    let (gw, _stats) = start(&native("", "ttft = \"300ms\"", &servers[..1]));
    for ((kind, c), body) in clients()
        .into_iter()
        .flat_map(|c| [(c.clone(), CHAT), (c, CHAT_STREAM)])
    {
        let t = Instant::now();
        let r = c.post_json(&gw.url("/v1/chat/completions"), body).await;
        assert_eq!(r.status, 504, "{kind}: {}", r.text());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{kind}: {:?}",
            t.elapsed()
        );
    }
}

fn has_error_event(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("event: error\ndata: {\"error\":")
        && text.contains("\"code\":\"upstream_stream_error\"")
}

#[tokio::test]
async fn sse_broken_mid_stream_ends_with_an_error_event_and_no_clean_end() {
    let m = Mock::start("m", &["--tokens", "40"]);
    let (gw, stats) = start(&native("", "", &[("m", m.addr, "")]));
    let ctl = Client::http1();

    // HTTP/1.1 (engine): the event in its own chunk, then the connection
    // closes without the zero chunk.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         x-mock-fail: reset-mid-stream\r\nContent-Length: {}\r\n\r\n{CHAT_STREAM}",
        CHAT_STREAM.len()
    );
    let mut raw = RawClient::connect(gw.addr()).await;
    raw.send(req.as_bytes()).await;
    let r = raw.response().await.expect("a response head");
    assert!(!r.complete, "the body ended cleanly");
    let all = r.msg.raw.clone();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(has_error_event(&all), "{text}");
    assert!(!text.contains("data: [DONE]"), "{text}");
    assert!(!text.ends_with("0\r\n\r\n"), "a clean end: {text}");

    // h2c (general path): the event, then the stream is reset.
    let c = Client::h2c();
    let (parts, mut body) = c
        .stream(
            &gw.url("/v1/chat/completions"),
            &[("x-mock-fail", "reset-mid-stream")],
            CHAT_STREAM,
        )
        .await;
    assert_eq!(parts.status, 200);
    let mut data = Vec::new();
    let mut errored = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    data.extend_from_slice(&d);
                }
            }
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&data);
    assert!(errored, "the h2 stream ended cleanly: {text}");
    assert!(has_error_event(&data), "{text}");

    let be = backend(&ctl, stats).await;
    assert_eq!(n(&be, "truncated"), 2, "{be}");
}

#[tokio::test]
async fn haproxy_dialect_retries_and_ttft() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &["--ttft-ms", "30000"]);
    let ctl = Client::http1();
    mock_force(&ctl, a.addr, "status:502").await;
    let c_mock = Mock::start("c", &[]);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n    timeout ttft 300ms\n\
         frontend f\n    bind 127.0.0.1:0\n    default_backend b\n\
         backend b\n    retries 3\n    retry-on all-retryable-errors\n    option redispatch\n\
         server a {}\n    server b {}\n    server c {}\n",
        a.addr, b.addr, c_mock.addr
    );
    let mut gw = Gateway::start_file("llmgw.cfg", &cfg, 1, &["--stats", "127.0.0.1:0"], &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    assert!(
        !gw.proc.stderr().contains("issue 5"),
        "{}",
        gw.proc.stderr()
    );
    for (kind, c) in clients() {
        for _ in 0..6 {
            let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("c"), "{kind}");
        }
    }
    let be = backend(&ctl, stats).await;
    assert!(n(server(&be, "a"), "retries") >= 1, "{be}");
    assert!(n(server(&be, "b"), "retries") >= 1, "{be}");
}

async fn queue_stat(c: &Client, stats: SocketAddr, field: &str) -> u64 {
    n(&backend(c, stats).await["queue"], field)
}

#[tokio::test]
async fn a_full_backend_queues_then_answers_503_within_timeout_queue() {
    let slow = Mock::start("slow", &["--ttft-ms", "3000"]);
    let (gw, stats) = start(&native(
        "",
        "queue = \"300ms\"",
        &[("s", slow.addr, "maxconn = 1\nmaxqueue = 1")],
    ));
    let ctl = Client::http1();
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        let first = {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.post_json(&url, CHAT).await })
        };
        eventually(LIMIT, || async {
            let be = backend(&ctl, stats).await;
            (n(server(&be, "s"), "active") == 1).then_some(())
        })
        .await;
        // The one slot is taken: this request waits, then gives up.
        let t = Instant::now();
        let r = c.post_json(&url, CHAT).await;
        let waited = t.elapsed();
        assert_eq!(r.status, 503, "{kind}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "queue_timeout", "{kind}");
        assert!(r.header("retry-after").is_some(), "{kind}");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
            "{kind}: {waited:?}"
        );
        // maxqueue 1: with one waiting, the next is refused at once.
        let waiting = {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.post_json(&url, CHAT).await })
        };
        eventually(LIMIT, || async {
            (queue_stat(&ctl, stats, "current").await == 1).then_some(())
        })
        .await;
        let r = c.post_json(&url, CHAT).await;
        assert_eq!(r.status, 503, "{kind}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "queue_full", "{kind}");
        assert_eq!(waiting.await.expect("task").status, 503);
        assert_eq!(first.await.expect("task").status, 200);
    }
    assert_eq!(queue_stat(&ctl, stats, "timeouts").await, 4);
    assert_eq!(queue_stat(&ctl, stats, "full").await, 2);
}

#[tokio::test]
async fn queued_requests_are_served_as_slots_free() {
    let m = Mock::start("m", &["--ttft-ms", "200"]);
    let (gw, stats) = start(&native(
        "",
        "queue = \"20s\"",
        &[("s", m.addr, "maxconn = 1")],
    ));
    let ctl = Client::http1();
    let url = gw.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, url) = (Client::http1(), url.clone());
        tasks.push(tokio::spawn(async move { c.post_json(&url, CHAT).await }));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(queue_stat(&ctl, stats, "total").await >= 2);
    assert!(queue_stat(&ctl, stats, "max").await >= 1);
    assert_eq!(queue_stat(&ctl, stats, "current").await, 0);
    assert_eq!(queue_stat(&ctl, stats, "timeouts").await, 0);
}

/// Most clients write the body after the head, in its own packet: with
/// retries on, the engine reads such a body whole first, so a request that
/// fails in flight can still be sent again.
#[tokio::test]
async fn a_body_written_after_its_head_is_still_retried() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let ctl = Client::http1();
    // a closes every connection without an answer (empty-response).
    mock_force(&ctl, a.addr, "close").await;
    let servers = [("a", a.addr, ""), ("b", b.addr, "")];
    let (gw, stats) = start(&native(
        "retries = 1\nretry_on = [\"empty-response\"]\nredispatch = true",
        "",
        &servers,
    ));
    for i in 0..4 {
        let mut raw = RawClient::connect(gw.addr()).await;
        raw.send(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                CHAT.len()
            )
            .as_bytes(),
        )
        .await;
        // A round trip elsewhere first: the head arrives on its own.
        backend(&ctl, stats).await;
        raw.send(CHAT.as_bytes()).await;
        let r = raw.response().await.expect("response");
        assert_eq!(r.status, 200, "#{i}: {}", r.body_text());
        assert_eq!(r.header("x-mock-server"), Some("b"), "#{i}");
    }
    let be = backend(&ctl, stats).await;
    assert_eq!(
        n(server(&be, "a"), "retries"),
        mock_chats(&ctl, a.addr).await
    );
    assert!(n(server(&be, "a"), "retries") >= 1, "{be}");
}

#[tokio::test]
async fn a_stream_broken_before_its_first_byte_is_retried_unseen() {
    // `raw` answers a head and resets the connection before any body byte:
    // nothing reached the client, so the request goes to `m`.
    let head =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let raw = RawUpstream::start((0..16).map(|_| Reply::Reset(head.to_vec())).collect());
    let m = Mock::start("m", &[]);
    let servers = [("raw", raw.addr, ""), ("m", m.addr, "")];
    let (gw, stats) = start(&native(
        "retries = 1\nretry_on = [\"empty-response\"]\nredispatch = true",
        "",
        &servers,
    ));
    for (kind, c) in clients() {
        for _ in 0..4 {
            let r = c
                .post_json(&gw.url("/v1/chat/completions"), CHAT_STREAM)
                .await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("m"), "{kind}");
            assert!(r.text().contains("data: [DONE]"), "{kind}: {}", r.text());
        }
    }
    let hit = raw.requests().len() as u64;
    assert!(hit >= 2, "round-robin sent {hit} requests to raw");
    let be = backend(&Client::http1(), stats).await;
    assert_eq!(n(server(&be, "raw"), "retries"), hit, "{be}");
}
