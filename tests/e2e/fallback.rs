//! Fallback chains across backends (`openai` → `azure` → `compat`):
//! each step entered only on a failure its conditions name, with its own
//! model name, through the real gateway and real mock processes, for
//! HTTP/1.1 and h2c clients and in both configuration dialects.

use std::net::SocketAddr;

use llmgw_e2e::{clients, mock_chats, mock_force, start_cfg, Client, Gateway, Mock};
use serde_json::Value;

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// Backends `openai` (the route's), `azure` and `compat`, one server each;
/// `chain` is the TOML of `openai`'s `fallback` array.
fn native(chain: &str, openai: SocketAddr, azure: SocketAddr, compat: SocketAddr) -> String {
    format!(
        "[global]\nstats = \"127.0.0.1:0\"\n\
         [[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"openai\"\n\
         [[backend]]\nname = \"openai\"\nfallback = {chain}\n\
         [[backend.server]]\nname = \"o\"\naddress = \"{openai}\"\n\
         [[backend]]\nname = \"azure\"\n\
         [[backend.server]]\nname = \"z\"\naddress = \"{azure}\"\n\
         [[backend]]\nname = \"compat\"\n\
         [[backend.server]]\nname = \"c\"\naddress = \"{compat}\"\n"
    )
}

fn start(config: &str) -> (Gateway, SocketAddr) {
    let mut gw = Gateway::start_file("llmgw.toml", config, 1, &[], &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    (gw, stats)
}

/// A loopback address nothing listens on.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `(handed_on, taken_over)` of backend `name`.
async fn fallback_counts(c: &Client, stats: SocketAddr, name: &str) -> (u64, u64) {
    let j = c.get(&format!("http://{stats}/stats.json")).await.json();
    let b = j["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in {j}"));
    let f = &b["fallback"];
    let n = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("{k} in {b}"));
    (n("handed_on"), n("taken_over"))
}

#[tokio::test]
async fn a_rate_limited_provider_hands_over_with_the_next_steps_model() {
    let (o, z, c) = (
        Mock::start("o", &[]),
        Mock::start("z", &[]),
        Mock::start("c", &[]),
    );
    let ctl = Client::http1();
    mock_force(&ctl, o.addr, "status:429").await;
    let (gw, stats) = start(&native(
        r#"[{ backend = "azure", on = ["429"], model = "gpt-4o-eu" }, { backend = "compat", model = "claude-sonnet" }]"#,
        o.addr,
        z.addr,
        c.addr,
    ));
    let mut sent = 0;
    for (kind, cl) in clients() {
        for body in [CHAT, CHAT_STREAM] {
            let r = cl.post_json(&gw.url("/v1/chat/completions"), body).await;
            sent += 1;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("z"), "{kind}");
            let text = r.text();
            assert!(
                text.contains("\"model\":\"gpt-4o-eu\""),
                "{kind}: the step's model was not asked for: {text}"
            );
        }
    }
    // The first 429 cools openai down (Retry-After 1): the requests after
    // it go straight to azure, as a 429 too.
    assert_eq!(mock_chats(&ctl, o.addr).await, 1);
    assert_eq!(mock_chats(&ctl, c.addr).await, 0, "compat was not needed");
    assert_eq!(fallback_counts(&ctl, stats, "openai").await, (sent, 0));
    assert_eq!(fallback_counts(&ctl, stats, "azure").await, (0, sent));

    // azure fails too, with a 500 its step does not name but the next
    // step's default conditions do: compat answers, under its own model.
    mock_force(&ctl, z.addr, "status:500").await;
    for (kind, cl) in clients() {
        let r = cl.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("c"), "{kind}");
        assert!(r.text().contains("\"model\":\"claude-sonnet\""), "{kind}");
    }
    assert_eq!(fallback_counts(&ctl, stats, "compat").await, (0, 2));
}

#[tokio::test]
async fn a_failure_the_step_does_not_name_reaches_the_client() {
    let (o, z, c) = (
        Mock::start("o", &[]),
        Mock::start("z", &[]),
        Mock::start("c", &[]),
    );
    let ctl = Client::http1();
    mock_force(&ctl, o.addr, "status:500").await;
    let (gw, stats) = start(&native(
        r#"[{ backend = "azure", on = ["429", "503"] }]"#,
        o.addr,
        z.addr,
        c.addr,
    ));
    for (kind, cl) in clients() {
        let r = cl.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 500, "{kind}: {}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("o"), "{kind}");
    }
    assert_eq!(mock_chats(&ctl, z.addr).await, 0);
    assert_eq!(fallback_counts(&ctl, stats, "openai").await, (0, 0));

    // A request the chain does not need never leaves its backend.
    mock_force(&ctl, o.addr, "none").await;
    let r = ctl.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-mock-server"), Some("o"));
}

#[tokio::test]
async fn an_unreachable_backend_falls_back_after_its_own_retries() {
    let (z, c) = (Mock::start("z", &[]), Mock::start("c", &[]));
    let ctl = Client::http1();
    let config = native(r#"[{ backend = "azure" }]"#, dead_addr(), z.addr, c.addr).replace(
        "name = \"openai\"\n",
        "name = \"openai\"\nretries = 2\nretry_on = [\"conn-failure\"]\n",
    );
    let (gw, stats) = start(&config);
    for (kind, cl) in clients() {
        for body in [CHAT, CHAT_STREAM] {
            let r = cl.post_json(&gw.url("/v1/chat/completions"), body).await;
            assert_eq!(r.status, 200, "{kind}: {}", r.text());
            assert_eq!(r.header("x-mock-server"), Some("z"), "{kind}");
            assert!(r.text().contains("\"model\":\"gpt-4o\""), "{kind}");
        }
    }
    let j = ctl.get(&format!("http://{stats}/stats.json")).await.json();
    let openai = &j["backends"][0];
    assert_eq!(openai["name"], "openai");
    assert_eq!(
        openai["retries"], 8,
        "2 retries before each fallback: {openai}"
    );
    assert_eq!(fallback_counts(&ctl, stats, "openai").await, (4, 0));
}

#[tokio::test]
async fn haproxy_dialect_fallback_lines() {
    let (o, z) = (Mock::start("o", &[]), Mock::start("z", &[]));
    let ctl = Client::http1();
    mock_force(&ctl, o.addr, "status:503").await;
    let cfg = format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n    default_backend openai\n\
         backend openai\n    fallback azure model gpt-4o-eu on 503 conn-failure\n    server o {}\n\
         backend azure\n    server z {}\n",
        o.addr, z.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    for (kind, cl) in clients() {
        let r = cl.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("z"), "{kind}");
        let v: Value = r.json();
        assert_eq!(v["model"], "gpt-4o-eu", "{kind}: {v}");
    }
}
