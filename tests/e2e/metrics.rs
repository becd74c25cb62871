//! `/metrics` on the stats listener through the real gateway: every
//! request counted once on its frontend, backend, server and model, on both
//! request paths (HTTP/1.1 through the engine, h2c through the general
//! path); tokens from the responses' usage; denials; and the exposition
//! accepted by Prometheus's own `promtool check metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use llmgw_e2e::{clients, eventually, Client, Gateway, Mock};

fn config(openai: SocketAddr, anthropic: SocketAddr) -> String {
    format!(
        r#"
[global]
stats = "127.0.0.1:0"

[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
http_request_rules = ["deny deny_status 403 if {{ path_beg /blocked }}"]

[[frontend.route]]
backend = "openai"
model_prefix = "gpt-"

[[frontend.route]]
backend = "anthropic"
model_prefix = "claude-"

[[backend]]
name = "openai"
[[backend.server]]
name = "o1"
address = "{openai}"

[[backend]]
name = "anthropic"
[[backend.server]]
name = "a1"
address = "{anthropic}"
"#
    )
}

/// `name{labels}` → value, from an exposition.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn metrics(c: &Client, stats: SocketAddr) -> (String, HashMap<String, f64>) {
    let r = c.get(&format!("http://{stats}/metrics")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let s = samples(&text);
    (text, s)
}

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str =
    r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
const CLAUDE: &str = r#"{"model":"claude-3-5-haiku","max_tokens":10,"messages":[]}"#;

#[tokio::test]
async fn every_request_is_counted_once_where_it_went() {
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let mut gw = Gateway::start(&config(o.addr, a.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        for _ in 0..3 {
            assert_eq!(c.post_json(&url, CHAT).await.status, 200, "{kind}");
        }
        for _ in 0..2 {
            let (p, b) = c.stream(&url, &[], STREAM).await;
            assert_eq!(p.status, 200, "{kind}");
            b.collect().await.expect("stream");
        }
        let r = c.post_json(&gw.url("/v1/messages"), CLAUDE).await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let r = c
            .post_json(&url, r#"{"model":"mistral","messages":[]}"#)
            .await;
        assert_eq!(r.status, 404, "{kind}");
        assert_eq!(c.get(&gw.url("/blocked")).await.status, 403, "{kind}");
    }
    // 2 × (3 + 2 + 1 + 1 + 1) requests; counted as each one ends.
    let ctl = Client::http1();
    let m = eventually(Duration::from_secs(10), || async {
        let (_, m) = metrics(&ctl, stats).await;
        (m.get(r#"llmgw_frontend_http_requests_total{proxy="f"}"#) == Some(&16.0)).then_some(m)
    })
    .await;
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no sample {k}"));
    assert_eq!(
        get(r#"llmgw_frontend_http_responses_total{proxy="f",code="2xx"}"#),
        12.0
    );
    assert_eq!(
        get(r#"llmgw_frontend_http_responses_total{proxy="f",code="4xx"}"#),
        4.0
    );
    assert_eq!(
        get(r#"llmgw_frontend_requests_denied_total{proxy="f"}"#),
        2.0
    );
    assert_eq!(
        get(r#"llmgw_backend_http_requests_total{proxy="openai"}"#),
        10.0
    );
    assert_eq!(
        get(r#"llmgw_backend_http_responses_total{proxy="openai",code="2xx"}"#),
        10.0
    );
    assert_eq!(
        get(r#"llmgw_server_http_requests_total{proxy="openai",server="o1"}"#),
        10.0
    );
    assert_eq!(
        get(r#"llmgw_server_http_requests_total{proxy="anthropic",server="a1"}"#),
        2.0
    );
    assert_eq!(
        get(r#"llmgw_backend_current_sessions{proxy="openai"}"#),
        0.0
    );
    assert_eq!(
        get(r#"llmgw_server_status{proxy="openai",server="o1"}"#),
        1.0
    );
    // Tokens from the usage the mock reports: 16 completion tokens per
    // answer (the stream's in its final chunk), 10 for the capped claude.
    assert_eq!(
        get(r#"llmgw_llm_tokens_total{backend="openai",model="gpt-4o",direction="out"}"#),
        160.0
    );
    assert_eq!(
        get(
            r#"llmgw_llm_tokens_total{backend="anthropic",model="claude-3-5-haiku",direction="out"}"#
        ),
        20.0
    );
    assert!(get(r#"llmgw_llm_tokens_total{backend="openai",model="gpt-4o",direction="in"}"#) > 0.0);
    assert_eq!(
        get(r#"llmgw_llm_time_to_first_token_seconds_count{backend="openai",model="gpt-4o"}"#),
        10.0
    );
    assert_eq!(
        get(r#"llmgw_backend_total_time_seconds_bucket{proxy="openai",le="+Inf"}"#),
        10.0
    );
    assert!(get(r#"llmgw_frontend_bytes_out_total{proxy="f"}"#) > 0.0);
    assert!(get(r#"llmgw_frontend_sessions_total{proxy="f"}"#) >= 2.0);
}

#[tokio::test]
async fn the_exposition_passes_promtool() {
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's `prometheus` package (tests/run.sh does)"
    );
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let mut gw = Gateway::start(&config(o.addr, a.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::h2c();
    // Some traffic, so that every family has samples, a model label among
    // them with a quote in it.
    c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
    c.post_json(
        &gw.url("/v1/chat/completions"),
        r#"{"model":"gpt-\"odd\"","messages":[]}"#,
    )
    .await;
    let text = eventually(Duration::from_secs(10), || async {
        let (text, m) = metrics(&c, stats).await;
        (m.get(r#"llmgw_frontend_http_requests_total{proxy="f"}"#) == Some(&2.0)).then_some(text)
    })
    .await;
    assert!(text.contains(r#"model="gpt-\"odd\"""#), "{text}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_that_exist() {
    let path = llmgw_e2e::root().join("deploy/grafana/llmgw-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut used = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("llmgw_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                used.insert(name);
            }
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    let (o, a) = (Mock::start("openai", &[]), Mock::start("anthropic", &[]));
    let mut gw = Gateway::start(&config(o.addr, a.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::h2c();
    c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
    let text = eventually(Duration::from_secs(10), || async {
        let (text, m) = metrics(&c, stats).await;
        (m.get(r#"llmgw_frontend_http_requests_total{proxy="f"}"#) == Some(&1.0)).then_some(text)
    })
    .await;
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for name in &used {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard uses {name}, which /metrics does not have"
        );
    }
}
