//! Client keys (virtual API keys) through the real gateway: who may call,
//! which models and backends each key may use, its limits, and that
//! neither the client's key nor the provider's ever leaks.

use http::Method;
use http_body_util::BodyExt;

use llmgw_e2e::{clients, Client, Gateway, Mock};

const PROVIDER_SECRET: &str = "sk-provider-secret-0001";

/// Three backends: `gpt-*` to openai (which sends the provider's key),
/// `claude-*` to anthropic, `slow-*` to a mock with slow streams.
fn config(openai: &Mock, anthropic: &Mock, slow: &Mock) -> String {
    format!(
        r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
client_keys = "teams"

[[frontend.route]]
backend = "openai"
model_prefix = "gpt-"

[[frontend.route]]
backend = "anthropic"
model_prefix = "claude-"

[[frontend.route]]
backend = "slow"
model_prefix = "slow-"

[[backend]]
name = "openai"
auth = {{ type = "bearer", env = "TEST_OPENAI_KEY" }}
[[backend.server]]
name = "o1"
address = "{o}"

[[backend]]
name = "anthropic"
[[backend.server]]
name = "a1"
address = "{a}"

[[backend]]
name = "slow"
[[backend.server]]
name = "s1"
address = "{s}"

[[client_keys]]
name = "teams"

[[client_keys.key]]
name = "team-a"
sha256 = "{a_hash}"
models = ["gpt-4o", "claude-3-5-haiku", "slow-1"]
backends = ["openai", "slow"]

[[client_keys.key]]
name = "team-b"
sha256 = "{b_hash}"
requests_per_minute = 3

[[client_keys.key]]
name = "team-c"
sha256 = "{c_hash}"
max_concurrent = 1

[[client_keys.key]]
name = "team-d"
sha256 = "{d_hash}"
tokens_per_minute = 200
"#,
        o = openai.addr,
        a = anthropic.addr,
        s = slow.addr,
        a_hash = llmgw_e2e::sha256_hex("sk-team-a"),
        b_hash = llmgw_e2e::sha256_hex("sk-team-b"),
        c_hash = llmgw_e2e::sha256_hex("sk-team-c"),
        d_hash = llmgw_e2e::sha256_hex("sk-team-d").to_uppercase(),
    )
}

fn start(o: &Mock, a: &Mock, s: &Mock) -> Gateway {
    Gateway::start_env(&config(o, a, s), 1, &[("TEST_OPENAI_KEY", PROVIDER_SECRET)])
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
}

async fn call(c: &Client, url: &str, auth: &[(&str, &str)], model: &str) -> llmgw_e2e::Resp {
    c.send(Method::POST, url, auth, &chat(model)).await
}

fn assert_error(r: &llmgw_e2e::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
}

#[tokio::test]
async fn keys_and_permissions_matrix() {
    let (o, a, s) = (
        Mock::start("openai", &[]),
        Mock::start("anthropic", &[]),
        Mock::start("slow", &[]),
    );
    let gw = start(&o, &a, &s);
    let url = gw.url("/v1/chat/completions");
    let bearer = |k: &'static str| [("authorization", k)];
    for (kind, c) in clients() {
        // No key, a wrong one, a known key under a wrong scheme.
        let r = call(&c, &url, &[], "gpt-4o").await;
        assert_error(&r, 401, "missing_api_key");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{kind}");
        let r = call(&c, &url, &bearer("Bearer sk-nope"), "gpt-4o").await;
        assert_error(&r, 401, "invalid_api_key");
        let r = call(&c, &url, &bearer("Basic sk-team-a"), "gpt-4o").await;
        assert_error(&r, 401, "invalid_api_key");

        // Allowed, as each SDK sends its key.
        for auth in [
            ("authorization", "Bearer sk-team-a"),
            ("x-api-key", "sk-team-a"),
            ("api-key", "sk-team-a"),
        ] {
            let r = call(&c, &url, &[auth], "gpt-4o").await;
            assert_eq!(r.status, 200, "{kind} {auth:?}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("openai"));
        }
        // A model the key may not use; a model it may, on a backend it may not.
        let r = call(&c, &url, &bearer("Bearer sk-team-a"), "gpt-4o-mini").await;
        assert_error(&r, 403, "model_not_allowed");
        let r = call(&c, &url, &bearer("Bearer sk-team-a"), "claude-3-5-haiku").await;
        assert_error(&r, 403, "backend_not_allowed");
        // A key without restrictions goes anywhere.
        let r = call(&c, &url, &bearer("Bearer sk-team-c"), "claude-3-5-haiku").await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("anthropic"));

        // The upstream sees the provider's credential, never the client's
        // key; a backend without one sees no credential at all.
        let r = c
            .send(
                Method::POST,
                &gw.url("/echo/chat"),
                &[
                    ("x-api-key", "sk-team-a"),
                    ("authorization", "Bearer sk-team-a"),
                ],
                &chat("gpt-4o"),
            )
            .await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let echo = r.text();
        assert!(!echo.contains("sk-team-a"), "{kind}: {echo}");
        let headers = &r.json()["headers"];
        let auth: Vec<_> = headers
            .as_array()
            .map(|h| h.iter().filter(|p| p[0] == "authorization").collect())
            .unwrap_or_default();
        assert_eq!(auth.len(), 1, "{kind}: {headers}");
        assert_eq!(auth[0][1], format!("Bearer {PROVIDER_SECRET}"));
        let r = c
            .send(
                Method::POST,
                &gw.url("/echo/chat"),
                &[("authorization", "Bearer sk-team-c")],
                &chat("claude-x"),
            )
            .await;
        let echo = r.text();
        assert!(
            !echo.contains("authorization") && !echo.contains("sk-team-c"),
            "{echo}"
        );
    }
    // Neither key appears in what the gateway logs.
    let logs = gw.proc.stderr();
    for secret in ["sk-team-a", "sk-team-c", "sk-nope", PROVIDER_SECRET] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn each_key_has_its_own_limits() {
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    // Streams of 10 tokens 100 ms apart: about a second each.
    let s = Mock::start("slow", &["--tokens", "10", "--token-delay-ms", "100"]);
    let gw = start(&o, &a, &s);
    let url = gw.url("/v1/chat/completions");
    let (h1, h2) = (Client::http1(), Client::h2c());

    // team-b: 3 requests a minute, whichever protocol they come by.
    for (i, c) in [&h1, &h2, &h1].into_iter().enumerate() {
        let r = call(c, &url, &[("authorization", "Bearer sk-team-b")], "gpt-4o").await;
        assert_eq!(r.status, 200, "request {}", i + 1);
    }
    let r = call(
        &h2,
        &url,
        &[("authorization", "Bearer sk-team-b")],
        "gpt-4o",
    )
    .await;
    assert_error(&r, 429, "rate_limit_exceeded");
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=70).contains(&wait), "Retry-After {wait}");
    // Another key is not held back by team-b's limit.
    let r = call(
        &h1,
        &url,
        &[("authorization", "Bearer sk-team-a")],
        "gpt-4o",
    )
    .await;
    assert_eq!(r.status, 200);

    // team-c: one request at a time.
    let stream = r#"{"model":"slow-1","stream":true,"messages":[]}"#;
    let (p, body) = h2
        .stream(&url, &[("authorization", "Bearer sk-team-c")], stream)
        .await;
    assert_eq!(p.status, 200);
    let r = call(
        &h1,
        &url,
        &[("authorization", "Bearer sk-team-c")],
        "gpt-4o",
    )
    .await;
    assert_error(&r, 429, "rate_limit_exceeded");
    body.collect().await.expect("the stream");
    let r = call(
        &h1,
        &url,
        &[("authorization", "Bearer sk-team-c")],
        "gpt-4o",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // team-d: 200 tokens a minute. A request whose own reservation
    // (prompt / 4 + max_tokens) is over it is refused outright...
    let big = r#"{"model":"gpt-4o","max_tokens":500,"messages":[]}"#;
    let r = h1
        .send(
            Method::POST,
            &url,
            &[("authorization", "Bearer sk-team-d")],
            big,
        )
        .await;
    assert_error(&r, 429, "rate_limit_exceeded");
    assert!(r.text().contains("tokens per minute"), "{}", r.text());
    // ...and small ones pass until their reported usage fills the minute.
    let small = r#"{"model":"gpt-4o","max_tokens":40,"messages":[]}"#;
    let mut passed = 0u64;
    let refused = loop {
        let r = h2
            .send(
                Method::POST,
                &url,
                &[("authorization", "Bearer sk-team-d")],
                small,
            )
            .await;
        if r.status != 200 {
            break r;
        }
        passed += 1;
        assert!(passed < 50, "never limited");
    };
    assert_error(&refused, 429, "rate_limit_exceeded");
    // Each costs what the mock reports — its body / 4 prompt tokens and 16
    // completion tokens — and request k passes while what k−1 cost plus
    // its own reservation (body / 4 rounded up, + 40) fits in 200.
    let len = small.len() as u64;
    let (cost, reserve) = (len / 4 + 16, len.div_ceil(4) + 40);
    assert_eq!(passed, (200 - reserve) / cost + 1);
}
