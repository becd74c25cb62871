//! What the upstream receives: injected provider credentials (and never the
//! client's), header rules, path and Host rewrites, X-Forwarded-For and
//! Forwarded, the request id and the W3C trace context.

use http::Method;
use llmgw_e2e::{one_backend, Client, Gateway, Mock};

fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn provider_key_is_injected_and_never_shown() {
    let secret = "sk-e2e-secret-4f9a1c";
    let m = Mock::start("m", &[]);
    let cfg = format!(
        r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "openai"
[[backend]]
name = "openai"
auth = {{ type = "bearer", env = "LLMGW_E2E_PROVIDER_KEY" }}
[[backend.server]]
name = "s"
address = "{}"
[[backend]]
name = "anthropic"
auth = {{ type = "x-api-key", env = "LLMGW_E2E_PROVIDER_KEY" }}
[[backend.server]]
name = "s"
address = "{}"
"#,
        m.addr, m.addr
    );
    let gw = Gateway::start_env(
        &cfg,
        1,
        &[("LLMGW_E2E_PROVIDER_KEY", secret), ("RUST_LOG", "debug")],
    );
    let c = Client::http1();
    let r = c
        .send(
            Method::POST,
            &gw.url("/echo/v1/chat"),
            &[
                ("authorization", "Bearer client-own-key"),
                ("x-api-key", "client-x"),
                ("api-key", "client-y"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(
        echoed_header(&echo, "authorization"),
        vec![format!("Bearer {secret}")]
    );
    assert!(echoed_header(&echo, "x-api-key").is_empty());
    assert!(echoed_header(&echo, "api-key").is_empty());
    for (name, value) in &r.headers {
        assert!(
            !value.to_str().unwrap_or_default().contains(secret),
            "secret in response header {name}"
        );
    }
    // Nor do the logs, even at debug level.
    assert!(!gw.proc.stderr().contains(secret), "secret in logs");
}

#[tokio::test]
async fn headers_paths_host_and_forwarding() {
    let m = Mock::start("m", &[]);
    let cfg = format!(
        r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"
forwardfor = true
forwarded = true
http_request = {{ set_header = {{ "x-gateway" = "llmgw" }}, del_header = ["x-debug"] }}
http_response = {{ set_header = {{ "x-frontend" = "f" }}, del_header = ["x-mock-server"] }}
[[backend]]
name = "b"
host = "api.provider.test"
replace_path_prefix = {{ from = "/openai/", to = "/echo/v1/" }}
http_request = {{ add_header = {{ "x-tag" = "b" }} }}
http_response = {{ set_header = {{ "x-backend" = "b" }} }}
[[backend.server]]
name = "s"
address = "{}"
"#,
        m.addr
    );
    let gw = Gateway::start(&cfg, 1);
    let c = Client::http1();
    let r = c
        .send(
            Method::POST,
            &gw.url("/openai/chat/completions?x=1"),
            &[
                ("x-debug", "1"),
                ("x-forwarded-for", "198.51.100.1"),
                ("x-tag", "client"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["path"], "/echo/v1/chat/completions");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echoed_header(&echo, "host"), vec!["api.provider.test"]);
    assert_eq!(echoed_header(&echo, "x-gateway"), vec!["llmgw"]);
    assert!(echoed_header(&echo, "x-debug").is_empty());
    assert_eq!(echoed_header(&echo, "x-tag"), vec!["client", "b"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for"),
        vec!["198.51.100.1, 127.0.0.1"]
    );
    let fwd = echoed_header(&echo, "forwarded");
    assert_eq!(fwd.len(), 1);
    assert!(
        fwd[0].starts_with("for=127.0.0.1;proto=http;host="),
        "{fwd:?}"
    );
    assert_eq!(r.header("x-frontend"), Some("f"));
    assert_eq!(r.header("x-backend"), Some("b"));
    assert_eq!(r.header("x-mock-server"), None);
}

#[tokio::test]
async fn request_id_and_traceparent() {
    let m = Mock::start("m", &[]);
    let cfg = one_backend("", "", m.addr);
    let gw = Gateway::start(&cfg, 1);
    let c = Client::http1();
    // Generated when absent: the client and the upstream see the same id.
    let r = c.get(&gw.url("/echo/a")).await;
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "x-request-id"), vec![id.as_str()]);
    let tp = echoed_header(&echo, "traceparent");
    assert_eq!(tp.len(), 1);
    assert_eq!(tp[0].len(), 55);
    // Kept when the client sends one; the trace id survives, the parent
    // span becomes the gateway's.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = c
        .send(
            Method::GET,
            &gw.url("/echo/b"),
            &[("x-request-id", "client-req-1"), ("traceparent", incoming)],
            "",
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("client-req-1"));
    let echo = r.json();
    assert_eq!(echoed_header(&echo, "x-request-id"), vec!["client-req-1"]);
    let tp = echoed_header(&echo, "traceparent")[0];
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(tp.ends_with("-01"));
    assert_ne!(tp, incoming);
}
