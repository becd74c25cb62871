//! The stats page and its listener through the real gateway: a real
//! headless Chromium (Debian's, driven by `tests/browser/stats_page.mjs`
//! through playwright-core) logs in on the page and drains a server, after
//! which that server receives no traffic; basic auth on reads and admin
//! actions, the admin endpoint's answers, and the HAProxy spelling of the
//! stats listener.
//!
//! The browser test needs Node.js, Chromium and `npm ci` in
//! `tests/browser` (tests/run.sh does all three); it fails, never skips,
//! when one is missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Method;
use llmgw_e2e::{eventually, mock_chats, root, start_cfg, Client, Gateway, Mock, Resp};

const USER: &str = "admin";
const PASSWORD: &str = "s3cr:et";
/// `admin:s3cr:et` in base64.
const BASIC: &str = "Basic YWRtaW46czNjcjpldA==";
const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

fn config(stats: &str, s1: SocketAddr, s2: SocketAddr) -> String {
    format!(
        r#"
[global]
stats = {stats}

[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
default_backend = "b"

[[backend]]
name = "b"
[backend.check]
inter = "200ms"
# Checks every 200 ms, but a slow answer on a loaded machine is not a
# failure: the page is compared with states read a moment earlier.
timeout = "5s"
[[backend.server]]
name = "s1"
address = "{s1}"
check = true
[[backend.server]]
name = "s2"
address = "{s2}"
check = true
"#
    )
}

/// Node, the browser script's directory and Chromium; a clear failure
/// naming what is missing and how to get it.
fn browser_tools() -> (PathBuf, PathBuf, PathBuf) {
    let dir = root().join("tests/browser");
    let node = std::env::var_os("LLMGW_NODE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("node"))
                    .find(|n| n.is_file())
            })
        })
        .unwrap_or_else(|| {
            panic!("the stats page test needs Node.js (`node`): run tests/run.sh, or apt-get install nodejs npm")
        });
    let chromium = PathBuf::from(
        std::env::var_os("LLMGW_CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()),
    );
    assert!(
        chromium.is_file(),
        "the stats page test needs Chromium at {}: run tests/run.sh, or apt-get install chromium (LLMGW_CHROMIUM names another)",
        chromium.display()
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "the stats page test needs playwright-core in {}: run tests/run.sh, or `npm ci` there",
        dir.join("node_modules").display()
    );
    (node, dir, chromium)
}

/// Runs `tests/browser/stats_page.mjs` in `mode` against the stats
/// listener; its output (one timed JSON line per step) when it passes.
async fn browser(stats: SocketAddr, mode: &str) -> String {
    let (node, dir, chromium) = browser_tools();
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&node);
    cmd.arg("stats_page.mjs")
        .args(["--url", &format!("http://{stats}"), "--mode", mode])
        .args(["--user", USER, "--password", PASSWORD])
        .args(["--backend", "b", "--server", "s2", "--other", "s1"])
        .env("LLMGW_CHROMIUM", &chromium)
        .current_dir(&dir)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser script did not finish within 120 s")
        .expect("cannot run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script ({mode}) failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "browser script ({mode}): {:.1} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    stdout
}

async fn admin(c: &Client, stats: SocketAddr, headers: &[(&str, &str)], body: &str) -> Resp {
    c.send(
        Method::POST,
        &format!("http://{stats}/stats/admin"),
        headers,
        body,
    )
    .await
}

/// Waits until both servers' checks have settled on plain `UP` (they
/// start as `UP 1/3`, going down, until `fall - 1` checks pass).
async fn settled(c: &Client, stats: SocketAddr) {
    eventually(Duration::from_secs(20), || async {
        let j = c
            .send(
                Method::GET,
                &format!("http://{stats}/stats.json"),
                &[("authorization", BASIC)],
                "",
            )
            .await
            .json();
        let servers = j["backends"][0]["servers"].as_array()?.clone();
        servers.iter().all(|s| s["state"] == "UP").then_some(())
    })
    .await;
}

async fn server_json(c: &Client, stats: SocketAddr, name: &str) -> serde_json::Value {
    let j = c.get(&format!("http://{stats}/stats.json")).await.json();
    j["backends"][0]["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no server {name} in {j}"))
        .clone()
}

#[tokio::test]
async fn a_server_drained_from_the_page_gets_no_more_traffic() {
    // Before anything starts: a missing tool fails the test at once.
    browser_tools();
    let (m1, m2) = (Mock::start("s1", &[]), Mock::start("s2", &[]));
    // Reads open, so the page loads without a login; actions need one.
    let stats = format!(
        r#"{{ address = "127.0.0.1:0", auth = ["{USER}:{PASSWORD}"], read_auth = false }}"#
    );
    let mut gw = Gateway::start(&config(&stats, m1.addr, m2.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::http1();
    settled(&c, stats).await;

    // Both servers take traffic to begin with.
    for _ in 0..4 {
        let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(mock_chats(&c, m1.addr).await > 0 && mock_chats(&c, m2.addr).await > 0);

    // Nobody drains anything without a login, nor with a wrong one.
    let json = [("content-type", "application/json")];
    let drain = r#"{"backend":"b","server":"s2","action":"drain"}"#;
    let r = admin(&c, stats, &json, drain).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let wrong = [
        ("content-type", "application/json"),
        ("authorization", "Basic YWRtaW46d3Jvbmc="),
    ];
    assert_eq!(admin(&c, stats, &wrong, drain).await.status, 401);
    assert_eq!(server_json(&c, stats, "s2").await["admin"], "ready");

    // The browser: snapshot, live page, refused action, login, drain.
    let stdout = browser(stats, "form").await;
    assert!(stdout.contains(r#""step":"drained""#), "{stdout}");

    let s2 = server_json(&c, stats, "s2").await;
    assert_eq!(
        (&s2["admin"], &s2["state"]),
        (&"drain".into(), &"DRAIN".into())
    );

    // From now on s1 takes everything, s2 nothing.
    let (before1, before2) = (mock_chats(&c, m1.addr).await, mock_chats(&c, m2.addr).await);
    for _ in 0..20 {
        let r = c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("s1"));
    }
    assert_eq!(mock_chats(&c, m2.addr).await - before2, 0);
    assert_eq!(mock_chats(&c, m1.addr).await - before1, 20);
    // A server's sessions are its requests, on the page and in /metrics.
    let s1 = server_json(&c, stats, "s1").await;
    assert!(
        s1["traffic"]["sessions"]["total"].as_u64().unwrap() >= 20,
        "{s1}"
    );
    assert!(
        s1["traffic"]["sessions"]["max"].as_u64().unwrap() >= 1,
        "{s1}"
    );
    let metrics = c.get(&format!("http://{stats}/metrics")).await.text();
    let total = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"llmgw_server_sessions_total{proxy="b",server="s1"} "#))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no server sessions_total in\n{metrics}"));
    assert!(total >= 20, "{total}");

    // `ready` from the admin endpoint brings it back.
    let auth = [
        ("content-type", "application/json"),
        ("authorization", BASIC),
    ];
    let r = admin(
        &c,
        stats,
        &auth,
        r#"{"backend":"b","server":"s2","action":"ready"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..4 {
        c.post_json(&gw.url("/v1/chat/completions"), CHAT).await;
    }
    assert!(mock_chats(&c, m2.addr).await > before2);
}

#[tokio::test]
async fn the_browsers_own_login_works_when_reads_need_one() {
    browser_tools();
    let (m1, m2) = (Mock::start("s1", &[]), Mock::start("s2", &[]));
    let stats = format!(r#"{{ address = "127.0.0.1:0", auth = ["{USER}:{PASSWORD}"] }}"#);
    let mut gw = Gateway::start(&config(&stats, m1.addr, m2.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::http1();
    settled(&c, stats).await;
    let stdout = browser(stats, "dialog").await;
    assert!(stdout.contains(r#""step":"maint and ready""#), "{stdout}");
    assert_eq!(server_json_auth(&c, stats, "s2").await["state"], "UP");
}

#[tokio::test]
async fn reads_and_actions_need_what_the_config_says() {
    let (m1, m2) = (Mock::start("s1", &[]), Mock::start("s2", &[]));
    let stats = format!(r#"{{ address = "127.0.0.1:0", auth = ["{USER}:{PASSWORD}"] }}"#);
    let mut gw = Gateway::start(&config(&stats, m1.addr, m2.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::http1();
    let url = |p: &str| format!("http://{stats}{p}");
    settled(&c, stats).await;

    // Reads behind auth (the default with users): a Basic challenge
    // without credentials, the page with them. Liveness stays open.
    for path in ["/stats", "/stats.json", "/metrics"] {
        let r = c.get(&url(path)).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Basic realm="llmgw statistics", charset="UTF-8""#)
        );
        let r = c
            .send(Method::GET, &url(path), &[("authorization", BASIC)], "")
            .await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(c.get(&url("/healthz")).await.status, 200);
    let page = c
        .send(Method::GET, &url("/stats"), &[("authorization", BASIC)], "")
        .await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("frame-ancestors 'none'"));
    // The server-rendered rows are there for a browser without JavaScript.
    let html = page.text();
    assert!(
        html.contains(r#"<tr data-key="sv/b/s1" class="up"><th scope="row">s1</th>"#),
        "{html}"
    );
    assert!(html.contains(r#"<td class="st">UP</td>"#));
    // The page's own requests get a challenge browsers do not prompt for.
    let r = c
        .send(
            Method::GET,
            &url("/stats.json"),
            &[("x-llmgw-stats", "page")],
            "",
        )
        .await;
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("StatsPage "));
    let r = c
        .send(
            Method::GET,
            &url("/stats/whoami"),
            &[("authorization", BASIC)],
            "",
        )
        .await;
    assert_eq!(r.json()["user"], USER);
    assert_eq!(c.get(&url("/stats/whoami")).await.status, 401);

    // The admin endpoint's answers.
    let auth = [
        ("content-type", "application/json"),
        ("authorization", BASIC),
    ];
    for (headers, body, status) in [
        (
            &auth[..],
            r#"{"backend":"nope","server":"s1","action":"drain"}"#,
            404,
        ),
        (
            &auth[..],
            r#"{"backend":"b","server":"nope","action":"drain"}"#,
            404,
        ),
        (
            &auth[..],
            r#"{"backend":"b","server":"s1","action":"weight","weight":300}"#,
            400,
        ),
        (
            &auth[..],
            r#"{"backend":"b","server":"s1","action":"reboot"}"#,
            400,
        ),
        (&auth[..], "not json", 400),
        // A form post, as a forged cross-site form would send it.
        (
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", BASIC),
            ][..],
            "backend=b&server=s1&action=drain",
            415,
        ),
        (
            &[
                ("content-type", "application/json"),
                ("authorization", BASIC),
                ("origin", "http://evil.example"),
            ][..],
            r#"{"backend":"b","server":"s1","action":"drain"}"#,
            403,
        ),
        (
            &[("content-type", "application/json")][..],
            r#"{"backend":"b","server":"s1","action":"drain"}"#,
            401,
        ),
    ] {
        let r = admin(&c, stats, headers, body).await;
        assert_eq!(r.status, status, "{body} {headers:?}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string());
    }
    assert_eq!(
        c.send(
            Method::GET,
            &url("/stats/admin"),
            &[("authorization", BASIC)],
            ""
        )
        .await
        .status,
        405
    );
    let big = format!(
        r#"{{"backend":"b","server":"s1","action":"drain","pad":"{}"}}"#,
        "x".repeat(20_000)
    );
    assert_eq!(admin(&c, stats, &auth, &big).await.status, 413);
    assert_eq!(server_json_auth(&c, stats, "s1").await["admin"], "ready");
    let r = admin(
        &c,
        stats,
        &auth,
        r#"{"backend":"b","server":"s1","action":"weight","weight":5}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server_json_auth(&c, stats, "s1").await["weight"], 5);
    // The password never reaches the logs.
    assert!(!gw.proc.stderr().contains("s3cr"), "{}", gw.proc.stderr());
    assert!(gw.proc.stderr().contains("admin action applied"));
}

async fn server_json_auth(c: &Client, stats: SocketAddr, name: &str) -> serde_json::Value {
    let j = c
        .send(
            Method::GET,
            &format!("http://{stats}/stats.json"),
            &[("authorization", BASIC)],
            "",
        )
        .await
        .json();
    j["backends"][0]["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no server {name} in {j}"))
        .clone()
}

#[tokio::test]
async fn without_users_reads_are_open_and_actions_refused() {
    let (m1, m2) = (Mock::start("s1", &[]), Mock::start("s2", &[]));
    let mut gw = Gateway::start(&config(r#""127.0.0.1:0""#, m1.addr, m2.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::http1();
    assert_eq!(c.get(&format!("http://{stats}/stats")).await.status, 200);
    let r = admin(
        &c,
        stats,
        &[
            ("content-type", "application/json"),
            ("authorization", BASIC),
        ],
        r#"{"backend":"b","server":"s1","action":"maint"}"#,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "admin_disabled");
    assert_eq!(server_json(&c, stats, "s1").await["admin"], "ready");
}

#[tokio::test]
async fn haproxy_stats_section_serves_page_and_metrics_behind_auth() {
    let (m1, m2) = (Mock::start("s1", &[]), Mock::start("s2", &[]));
    let cfg = format!(
        "listen stats
    bind 127.0.0.1:0
    mode http
    stats enable
    stats uri /haproxy?stats
    stats realm Ops
    stats auth {USER}:{PASSWORD}
    stats admin if TRUE
frontend f
    bind 127.0.0.1:0
    default_backend b
backend b
    server s1 {} check
    server s2 {} check
",
        m1.addr, m2.addr
    );
    let mut gw = start_cfg(&cfg, 1, &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    let c = Client::http1();
    let r = c.get(&format!("http://{stats}/haproxy?stats")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="Ops", charset="UTF-8""#)
    );
    for path in ["/haproxy?stats", "/stats", "/metrics"] {
        let r = c
            .send(
                Method::GET,
                &format!("http://{stats}{path}"),
                &[("authorization", BASIC)],
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{path}");
    }
    let r = admin(
        &c,
        stats,
        &[
            ("content-type", "application/json"),
            ("authorization", BASIC),
        ],
        r#"{"backend":"b","server":"s2","action":"maint"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server_json_auth(&c, stats, "s2").await["state"], "MAINT");
    // The stats section is not a frontend: its address carries no traffic.
    let r = c
        .post_json(&format!("http://{stats}/v1/chat/completions"), CHAT)
        .await;
    assert_eq!(r.status, 405);
}
