//! Content switching, the body's `model` above all: globs, prefixes, exact
//! names, aliases rewritten in the body, unknown models, the body bound, and
//! bodies that stream through untouched when no rule needs them.

use llmgw_e2e::{one_backend, Client, Gateway, Mock};

fn two_backend_config(openai: &Mock, anthropic: &Mock, extra_frontend: &str) -> String {
    format!(
        r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
{extra_frontend}

[[frontend.route]]
backend = "anthropic"
model = "claude-*"

[[frontend.route]]
backend = "openai"
model_prefix = "gpt-"

[[frontend.route]]
backend = "anthropic"
path = "/v1/messages"

[[backend]]
name = "openai"
[[backend.server]]
name = "o1"
address = "{}"

[[backend]]
name = "anthropic"
[[backend.server]]
name = "a1"
address = "{}"
"#,
        openai.addr, anthropic.addr
    )
}

#[tokio::test]
async fn model_field_picks_the_backend_over_h1_and_h2() {
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let gw = Gateway::start(
        &two_backend_config(&o, &a, "model_aliases = { fast = \"gpt-4o-mini\" }"),
        1,
    );
    for client in [Client::http1(), Client::h2c()] {
        let url = gw.url("/v1/chat/completions");
        let r = client.post_json(&url, r#"{"messages":[{"role":"user","content":"{\"model\":\"gpt-x\"}"}],"model":"claude-3-5-haiku"}"#).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("anthropic"));
        let r = client
            .post_json(&url, r#"{"model":"gpt-4o","messages":[]}"#)
            .await;
        assert_eq!(r.header("x-mock-server"), Some("openai"));
        // The alias resolves to a gpt- model, so it goes to openai...
        let r = client
            .post_json(&gw.url("/echo/chat"), r#"{"model":"fast","messages":[]}"#)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("openai"));
        // ...and the upstream sees the real model name, with a matching length.
        let echo = r.json();
        let body: serde_json::Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
    }
}

#[tokio::test]
async fn unknown_model_is_404_in_the_openai_shape() {
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let gw = Gateway::start(&two_backend_config(&o, &a, ""), 1);
    let c = Client::http1();
    let r = c
        .post_json(
            &gw.url("/v1/chat/completions"),
            r#"{"model":"mistral-large","messages":[]}"#,
        )
        .await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mistral-large"));
    assert!(v["error"]["type"].is_string());
    // No model at all: the client is told so.
    let r = c
        .post_json(&gw.url("/v1/chat/completions"), r#"{"messages":[]}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "model_required");
    // A path rule still routes a body without a matching model.
    let r = c
        .post_json(
            &gw.url("/v1/messages"),
            r#"{"model":"whatever","messages":[]}"#,
        )
        .await;
    assert_eq!(r.header("x-mock-server"), Some("anthropic"));
}

#[tokio::test]
async fn body_bound_applies_only_until_the_model_is_found() {
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let gw = Gateway::start(&two_backend_config(&o, &a, "body_limit = \"4k\""), 1);
    let c = Client::http1();
    let filler = "x".repeat(16 * 1024);
    // The model comes after 16 KiB: the gateway cannot route within 4 KiB.
    let late =
        format!(r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"gpt-4o"}}"#);
    let r = c.post_json(&gw.url("/echo/x"), &late).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_too_large");
    // The model comes first: routing needs only the start, the rest streams.
    let early =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let r = c.post_json(&gw.url("/echo/x"), &early).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"].as_str().unwrap().len(), early.len());
}

#[tokio::test]
async fn bodies_stream_untouched_when_no_rule_reads_them() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &format!(
            "[defaults]\nbody_limit = \"1k\"\n{}",
            one_backend("", "", m.addr)
        ),
        1,
    );
    let big = format!(r#"{{"input":"{}","model":"x"}}"#, "y".repeat(512 * 1024));
    let r = Client::http1().post_json(&gw.url("/echo/big"), &big).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"].as_str().unwrap(), big);
}

#[tokio::test]
async fn host_header_method_and_query_rules() {
    let (m1, m2, m3) = (
        Mock::start("m1", &[]),
        Mock::start("m2", &[]),
        Mock::start("m3", &[]),
    );
    let gw = Gateway::start(
        &format!(
            r#"
[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b3"
[[frontend.route]]
backend = "b1"
host = "api.example.com"
method = "GET"
[[frontend.route]]
backend = "b2"
header = {{ name = "x-tenant", prefix = "team-" }}
[[frontend.route]]
backend = "b2"
query = {{ name = "beta", value = "1" }}
path_regex = "^/v1/(chat|models)"
[[backend]]
name = "b1"
[[backend.server]]
name = "s"
address = "{}"
[[backend]]
name = "b2"
[[backend.server]]
name = "s"
address = "{}"
[[backend]]
name = "b3"
[[backend.server]]
name = "s"
address = "{}"
"#,
            m1.addr, m2.addr, m3.addr
        ),
        1,
    );
    let c = Client::http1();
    let r = c
        .send(
            http::Method::GET,
            &gw.url("/v1/models"),
            &[("host", "API.example.com:443")],
            "",
        )
        .await;
    assert_eq!(r.header("x-mock-server"), Some("m1"));
    let r = c
        .send(
            http::Method::GET,
            &gw.url("/v1/models"),
            &[("x-tenant", "team-7")],
            "",
        )
        .await;
    assert_eq!(r.header("x-mock-server"), Some("m2"));
    let r = c.get(&gw.url("/v1/models?beta=1")).await;
    assert_eq!(r.header("x-mock-server"), Some("m2"));
    let r = c.get(&gw.url("/v2/models?beta=1")).await;
    assert_eq!(r.header("x-mock-server"), Some("m3"));
}
