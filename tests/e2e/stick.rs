//! Stick tables through the real gateway: `track-sc` rules count requests
//! per key, `scN_*` conditions read the counts, on both request paths
//! (HTTP/1.1 clients through the engine, h2c through the general path,
//! counting into the same table).

use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;

use llmgw_e2e::{clients, eventually, start_cfg, Client, Gateway, Mock};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;

fn seed_like(mock: SocketAddr, table_line: &str, rules: &str) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n    {table_line}\n{rules}    default_backend b\n\
         backend b\n    server m {mock}\n"
    )
}

const SEED_TABLE: &str = "stick-table type ip size 100k expire 30s store conn_rate(10s)";
const SEED_RULES: &str =
    "    http-request track-sc0 src\n    http-request deny deny_status 429 if { sc0_conn_rate gt 100 }\n";

/// 100 requests pass, the 101st is denied (over http1 and h2c, into one
/// table).
async fn assert_seed_rule(gw: &Gateway) {
    let url = gw.url("/v1/chat/completions");
    // Every request is a new tracked stream, as in HAProxy.
    let (h1, h2) = (Client::http1(), Client::h2c());
    for i in 1..=100 {
        let c = if i % 2 == 0 { &h1 } else { &h2 };
        let r = c.post_json(&url, CHAT).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    for (kind, c) in [("http1", &h1), ("h2c", &h2)] {
        let r = c.post_json(&url, CHAT).await;
        assert_eq!(r.status, 429, "{kind}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "rate_limited");
    }
}

#[tokio::test]
async fn the_seed_rule_denies_exactly_from_the_101st_connection() {
    let m = Mock::start("m", &[]);
    let gw = start_cfg(&seed_like(m.addr, SEED_TABLE, SEED_RULES), 1, &[]);
    assert_seed_rule(&gw).await;
}

#[tokio::test]
async fn the_seed_rule_converted_to_toml_denies_the_same() {
    let m = Mock::start("m", &[]);
    let toml = crate::haproxy::convert(&seed_like(m.addr, SEED_TABLE, SEED_RULES));
    assert!(toml.contains("[[stick_table]]"), "{toml}");
    let gw = Gateway::start(&toml, 1);
    assert_seed_rule(&gw).await;
}

#[tokio::test]
async fn each_api_key_has_its_own_request_rate() {
    let m = Mock::start("m", &[]);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n\
             http-request track-sc1 req.hdr(x-api-key) table per_key\n\
             http-request deny deny_status 429 if {{ sc1_http_req_rate gt 5 }}\n\
             default_backend b\n\
         backend per_key\n    stick-table type string size 1k expire 1m store http_req_rate(1m),http_req_cnt\n\
         backend b\n    server m {}\n",
        m.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        let key = format!("key-{kind}");
        for i in 1..=5 {
            let r = c
                .send(http::Method::POST, &url, &[("x-api-key", &key)], CHAT)
                .await;
            assert_eq!(r.status, 200, "{kind} #{i}: {}", r.text());
        }
        let r = c
            .send(http::Method::POST, &url, &[("x-api-key", &key)], CHAT)
            .await;
        assert_eq!(r.status, 429, "{kind}: the 6th request of {key}");
        // Retry-After: when the 1-minute rate leaves room for a request
        // again — after the current minute-aligned period, and a part of
        // the next.
        let wait: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((10..=120).contains(&wait), "{kind}: Retry-After {wait}");
        // Another key, and no key at all (nothing tracked), still pass.
        let r = c
            .send(http::Method::POST, &url, &[("x-api-key", "other")], CHAT)
            .await;
        assert_eq!(r.status, 200, "{kind}");
        let r = c.post_json(&url, CHAT).await;
        assert_eq!(r.status, 200, "{kind}");
    }
}

#[tokio::test]
async fn conn_cur_counts_a_request_until_its_stream_ends() {
    // Streams of 10 tokens 150 ms apart: open for about 1.5 s.
    let m = Mock::start("m", &["--tokens", "10", "--token-delay-ms", "150"]);
    let gw = start_cfg(
        &seed_like(
            m.addr,
            "stick-table type ip size 1k expire 30s store conn_cur",
            "    http-request track-sc0 src\n    http-request deny deny_status 429 if { sc0_conn_cur gt 2 }\n",
        ),
        1,
        &[],
    );
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        // Two streams open: a third request is over the limit.
        let (p1, b1) = c.stream(&url, &[], CHAT_STREAM).await;
        let (p2, b2) = c.stream(&url, &[], CHAT_STREAM).await;
        assert_eq!(
            (p1.status.as_u16(), p2.status.as_u16()),
            (200, 200),
            "{kind}"
        );
        let r = c.post_json(&url, CHAT).await;
        assert_eq!(r.status, 429, "{kind}: a third concurrent request");
        // Once they are over, requests pass again.
        for b in [b1, b2] {
            let body = b.collect().await.expect("a complete stream").to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("[DONE]"), "{kind}");
        }
        // (The server side lets go of a stream just after its last byte.)
        eventually(Duration::from_secs(10), || async {
            (c.post_json(&url, CHAT).await.status == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn error_answers_count_toward_http_err_rate() {
    let m = Mock::start("m", &[]);
    for (kind, c) in clients() {
        let gw = start_cfg(
            &seed_like(
                m.addr,
                "stick-table type ip size 1k expire 30s store http_err_rate(10s)",
                "    http-request track-sc0 src\n    http-request deny deny_status 429 if { sc0_http_err_rate gt 3 }\n",
            ),
            1,
            &[],
        );
        // Four 404s from the upstream: the rate reads 4 before the next
        // request's own answer is known.
        for _ in 0..4 {
            let r = c.get(&gw.url("/no/such/path")).await;
            assert_eq!(r.status, 404, "{kind}");
        }
        let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 429, "{kind}: {}", r.text());
    }
}

/// A frontend limiting each API key to `limit` tokens a minute.
fn token_limited(mock: SocketAddr, limit: u64) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n\
             http-request track-sc0 req.hdr(x-api-key) table per_key\n\
             http-request deny deny_status 429 if {{ sc0_tokens_rate gt {limit} }}\n\
             default_backend b\n\
         backend per_key\n    stick-table type string size 1k expire 2m store tokens_rate(1m),tokens_in_rate(1m),tokens_out_rate(1m)\n\
         backend b\n    server m {mock}\n"
    )
}

/// A streamed chat request with a budget of 50 tokens, asking for usage.
const BUDGETED: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
/// The same without asking for usage: the stream reports none.
const BUDGETED_NO_USAGE: &str = r#"{"model":"gpt-4o","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi there"}]}"#;

/// What the gateway reserves for `body`: its bytes / 4 rounded up, and
/// its `max_tokens` (50).
fn estimate(body: &str) -> u64 {
    (body.len() as u64).div_ceil(4) + 50
}

/// The total tokens a streamed answer reports in its `usage` chunk.
fn reported_total(stream: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(stream)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v["usage"]["total_tokens"].as_u64())
}

/// Sends `n` budgeted streams at once; returns the statuses (with
/// Retry-After for a 429) and the tokens the admitted ones reported.
async fn wave(url: &str, n: usize) -> (usize, Vec<u64>) {
    let (h1, h2) = (Client::http1(), Client::h2c());
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let c = if i % 2 == 0 { h1.clone() } else { h2.clone() };
            let url = url.to_owned();
            tokio::spawn(async move {
                let (parts, body) = c.stream(&url, &[("x-api-key", "team-a")], BUDGETED).await;
                let bytes = body.collect().await.expect("a whole answer").to_bytes();
                match parts.status.as_u16() {
                    200 => Some(reported_total(&bytes).expect("a usage chunk")),
                    429 => {
                        let wait: u64 = parts
                            .headers
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .expect("Retry-After on a token-limit 429");
                        assert!((1..=70).contains(&wait), "Retry-After {wait}");
                        None
                    }
                    s => panic!("status {s}: {}", String::from_utf8_lossy(&bytes)),
                }
            })
        })
        .collect();
    let mut denied = 0;
    let mut used = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Some(tokens) => used.push(tokens),
            None => denied += 1,
        }
    }
    (denied, used)
}

#[tokio::test]
async fn token_limit_holds_under_50_concurrent_streams_and_settles_on_usage() {
    // 10 completion tokens 100 ms apart: every stream of a wave is still
    // open when the last one is admitted.
    let m = Mock::start("m", &["--tokens", "10", "--token-delay-ms", "100"]);
    let limit = 1000;
    let gw = start_cfg(&token_limited(m.addr, limit), 1, &[]);
    let url = gw.url("/v1/chat/completions");
    let est = estimate(BUDGETED);
    // The mock counts the prompt as bytes / 4 (rounded down), and makes
    // 10 of the 50 tokens allowed.
    let actual = BUDGETED.len() as u64 / 4 + 10;

    let (denied, used) = wave(&url, 50).await;
    let admitted = used.len() as u64;
    assert!(admitted >= 1, "none admitted");
    assert_eq!(denied as u64 + admitted, 50);
    // Each admitted request saw the others' reservations: no more than the
    // limit was reserved, so the wave could not overrun it.
    assert!(admitted * est <= limit, "{admitted} × {est} reserved");
    assert!(used.iter().all(|&u| u == actual), "{used:?}");
    // With no stream settled yet, the wave fills the limit to within one
    // reservation.
    assert_eq!(admitted, limit / est, "admitted while all were open");

    // Settled on the reported usage, the unused part of the reservations
    // is free again: a second wave gets exactly the room left.
    let spent = admitted * actual;
    let (_, used2) = wave(&url, 50).await;
    let admitted2 = used2.len() as u64;
    assert_eq!(admitted2, (limit - spent) / est, "second wave");
    let total: u64 = used.iter().chain(&used2).sum();
    assert!(total <= limit + est, "{total} tokens admitted");
}

#[tokio::test]
async fn an_answer_without_usage_costs_its_estimate_and_one_with_usage_its_report() {
    let m = Mock::start("m", &["--tokens", "10"]);
    let limit = 1000;
    for (body, cost) in [
        (BUDGETED_NO_USAGE, estimate(BUDGETED_NO_USAGE)),
        (BUDGETED, BUDGETED.len() as u64 / 4 + 10),
    ] {
        let gw = start_cfg(&token_limited(m.addr, limit), 1, &[]);
        let url = gw.url("/v1/chat/completions");
        let c = Client::h2c();
        // Request k passes while what k−1 cost plus its own estimate fits.
        let passes = (limit - estimate(body)) / cost + 1;
        for k in 1..=passes {
            let (parts, b) = c.stream(&url, &[("x-api-key", "k")], body).await;
            b.collect().await.expect("a whole answer");
            assert_eq!(parts.status, 200, "request {k} of {passes}");
        }
        let r = c
            .send(http::Method::POST, &url, &[("x-api-key", "k")], body)
            .await;
        assert_eq!(r.status, 429, "after {passes}: {}", r.text());
        // Other keys have their own budget.
        let r = c
            .send(http::Method::POST, &url, &[("x-api-key", "other")], body)
            .await;
        assert_eq!(r.status, 200);
    }
}

#[tokio::test]
async fn gpc_and_gpt_flag_an_abuser_for_every_later_request() {
    let m = Mock::start("m", &[]);
    for (kind, c) in clients() {
        let gw = start_cfg(
            &seed_like(
                m.addr,
                "stick-table type ip size 1k expire 1m store gpc0,gpc0_rate(1m),gpt0",
                "    http-request track-sc0 src\n\
                     http-request sc-inc-gpc0(0) if { path_beg /admin }\n\
                     http-request sc-set-gpt0(0) 1 if { path_beg /ban-me }\n\
                     http-request deny deny_status 403 if { sc0_gpc0 gt 2 } || { sc0_get_gpt0 gt 0 }\n",
            ),
            1,
            &[],
        );
        let chat = gw.url("/v1/chat/completions");
        // Two probes of /admin go through (the upstream has no such page)...
        for _ in 0..2 {
            assert_eq!(c.get(&gw.url("/admin/x")).await.status, 404, "{kind}");
        }
        assert_eq!(c.post_json(&chat, CHAT).await.status, 200, "{kind}");
        // ...the third is one too many, and from then on so is everything.
        assert_eq!(c.get(&gw.url("/admin/x")).await.status, 403, "{kind}");
        let r = c.post_json(&chat, CHAT).await;
        assert_eq!(r.status, 403, "{kind}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "denied");
    }
    // A tag set once holds for the entry's life.
    let gw = start_cfg(
        &seed_like(
            m.addr,
            "stick-table type ip size 1k expire 1m store gpc0,gpt0",
            "    http-request track-sc0 src\n\
                 http-request sc-set-gpt0(0) 1 if { path_beg /ban-me }\n\
                 http-request deny deny_status 403 if { sc0_get_gpt0 gt 0 }\n",
        ),
        1,
        &[],
    );
    let c = Client::h2c();
    let chat = gw.url("/v1/chat/completions");
    assert_eq!(c.post_json(&chat, CHAT).await.status, 200);
    assert_eq!(c.get(&gw.url("/ban-me")).await.status, 403);
    assert_eq!(c.post_json(&chat, CHAT).await.status, 403);
}

#[tokio::test]
async fn tarpit_holds_the_answer_for_timeout_tarpit() {
    let m = Mock::start("m", &[]);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    timeout tarpit 400ms\n\
         frontend f\n    bind 127.0.0.1:0\n\
             http-request tarpit deny_status 429 if {{ path_beg /bots }}\n\
             http-request tarpit if {{ path_beg /scan }}\n\
             default_backend b\n\
         backend b\n    server m {}\n",
        m.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    for (kind, c) in clients() {
        // While one client sits in the tarpit, others are served.
        let slow = {
            let (c, url) = (c.clone(), gw.url("/bots/1"));
            tokio::spawn(async move {
                let t0 = std::time::Instant::now();
                let r = c.get(&url).await;
                (r.status, t0.elapsed())
            })
        };
        let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{kind}");
        let (status, held) = slow.await.expect("task");
        assert_eq!(status, 429, "{kind}");
        assert!(held >= Duration::from_millis(400), "{kind}: held {held:?}");
        // HAProxy's default tarpit answer is a 500.
        assert_eq!(c.get(&gw.url("/scan")).await.status, 500, "{kind}");
    }
}

#[tokio::test]
async fn the_model_can_be_a_tracking_key() {
    let m = Mock::start("m", &[]);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n\
             http-request track-sc1 req.body,json_query('$.model') table per_model\n\
             http-request deny deny_status 429 if {{ sc1_http_req_cnt gt 2 }}\n\
             default_backend b\n\
         backend per_model\n    stick-table type string size 1k expire 1m store http_req_cnt\n\
         backend b\n    server m {}\n",
        m.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    let url = gw.url("/v1/chat/completions");
    let (h1, h2) = (Client::http1(), Client::h2c());
    assert_eq!(h1.post_json(&url, CHAT).await.status, 200);
    assert_eq!(h2.post_json(&url, CHAT).await.status, 200);
    assert_eq!(h1.post_json(&url, CHAT).await.status, 429);
    let other = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    assert_eq!(h2.post_json(&url, other).await.status, 200);
}

#[tokio::test]
async fn a_body_field_can_be_a_tracking_key() {
    let m = Mock::start("m", &[]);
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n\
             http-request track-sc0 req.body,json_query('$.user') table per_user\n\
             http-request track-sc1 req.body,json_query('$.metadata.user_id') table per_user\n\
             http-request deny deny_status 429 if {{ sc0_http_req_cnt gt 1 }} || {{ sc1_http_req_cnt gt 1 }}\n\
             default_backend b\n\
         backend per_user\n    stick-table type string size 1k expire 1m store http_req_cnt\n\
         backend b\n    server m {}\n",
        m.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    let url = gw.url("/v1/chat/completions");
    let body = |who: &str| {
        format!(
            r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{{\"user\":\"x\"}}"}}],{who}}}"#
        )
    };
    for (kind, c) in clients() {
        let alice = body(&format!(r#""user":"alice-{kind}""#));
        let r = c.post_json(&url, &alice).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(c.post_json(&url, &alice).await.status, 429, "{kind}");
        let bob = body(&format!(r#""metadata":{{"user_id":"bob-{kind}"}}"#));
        assert_eq!(c.post_json(&url, &bob).await.status, 200, "{kind}");
        assert_eq!(c.post_json(&url, &bob).await.status, 429, "{kind}");
        // No such field: nothing is tracked, nothing limited.
        for _ in 0..3 {
            let r = c.post_json(&url, &body(r#""n":1"#)).await;
            assert_eq!(r.status, 200, "{kind}");
        }
    }
}
