//! Active health checks through the real gateway and real mock processes:
//! exact fall/rise counting, traffic moving off a dead server and back,
//! backups, the LLM default check (`GET /v1/models`, never a billed
//! endpoint), TCP checks and HTTP status expectations. Everything is polled
//! (stats.json, mock counters), never slept on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use llmgw_e2e::{eventually, Cert, Client, Gateway, Mock, TempDir};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// Starts a gateway with a stats listener; returns it and the stats address.
fn start(file: &str, config: &str) -> (Gateway, SocketAddr) {
    let mut gw = Gateway::start_file(file, config, 1, &["--stats", "127.0.0.1:0"], &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    (gw, stats)
}

async fn server(c: &Client, stats: SocketAddr, backend: &str, name: &str) -> Value {
    let j = c.get(&format!("http://{stats}/stats.json")).await.json();
    let b = j["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == backend))
        .unwrap_or_else(|| panic!("no backend {backend} in {j}"));
    b["servers"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no server {name} in {b}"))
        .clone()
}

async fn wait_status(
    c: &Client,
    stats: SocketAddr,
    backend: &str,
    name: &str,
    want: &str,
) -> Value {
    eventually(LIMIT, || async {
        let s = server(c, stats, backend, name).await;
        (s["status_detail"] == want).then_some(s)
    })
    .await
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Which servers answered `count` requests (by `x-mock-server`).
async fn served_by(c: &Client, gw: &Gateway, count: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let r = c.get(&gw.url("/v1/models")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.header("x-mock-server").unwrap_or("?").to_owned());
    }
    seen
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn mock_stats(c: &Client, m: SocketAddr) -> Value {
    c.get(&format!("http://{m}/mock/stats")).await.json()
}

fn native(check: &str, servers: &[(&str, SocketAddr)], server_extra: &str) -> String {
    let mut s = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[backend.check]\n{check}\n"
    );
    for (name, addr) in servers {
        s.push_str(&format!(
            "[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\ncheck = true\n{server_extra}\n"
        ));
    }
    s
}

#[tokio::test]
async fn dead_server_down_after_exactly_fall_checks_and_up_after_exactly_rise() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let c_mock = Mock::start("c", &[]);
    let c_addr = c_mock.addr;
    let servers = [("a", a.addr), ("b", b.addr), ("c", c_addr)];
    // Fast checks while up and changing; none for a minute once down, so
    // the failure count at DOWN cannot be blurred by later checks.
    let timing =
        "inter = \"100ms\"\nfastinter = \"100ms\"\ndowninter = \"60s\"\nfall = 3\nrise = 2";
    let (gw, stats) = start("llmgw.toml", &native(timing, &servers, ""));
    let client = Client::http1();

    for name in ["a", "b", "c"] {
        eventually(LIMIT, || async {
            let s = server(&client, stats, "b", name).await;
            (n(&s, "checks_passed") >= 1).then_some(())
        })
        .await;
    }
    assert_eq!(served_by(&client, &gw, 12).await, set(&["a", "b", "c"]));
    let before = server(&client, stats, "b", "c").await;
    assert_eq!(before["status_detail"], "UP");
    assert_eq!(before["check_status"], "L7OK");
    assert_eq!(before["check_code"], 200);

    drop(c_mock);
    let down = wait_status(&client, stats, "b", "c", "DOWN").await;
    assert_eq!(
        n(&down, "checks_failed") - n(&before, "checks_failed"),
        3,
        "DOWN after exactly fall = 3 failed checks: {down}"
    );
    assert_eq!(n(&down, "consecutive_failures"), 3);
    assert_eq!(n(&down, "down_transitions"), 1);
    assert_eq!(down["check_status"], "L4CON");
    assert_eq!(served_by(&client, &gw, 12).await, set(&["a", "b"]));

    // Reload: checks restart with the new timing (down: fast; up: a
    // minute), and c's DOWN state survives the reload.
    let reloaded = native(
        "inter = \"60s\"\nfastinter = \"100ms\"\ndowninter = \"100ms\"\nfall = 3\nrise = 2",
        &servers,
        "",
    );
    std::fs::write(&gw.config_path, reloaded).expect("write config");
    gw.proc.signal("HUP");
    eventually(LIMIT, || async {
        gw.proc
            .stderr()
            .contains("configuration reloaded")
            .then_some(())
    })
    .await;
    let after_reload = server(&client, stats, "b", "c").await;
    assert_eq!(after_reload["status"], "DOWN", "{after_reload}");

    let passed_before = n(&after_reload, "checks_passed");
    let _c_again = Mock::start_at("c", c_addr, &[]);
    let up = wait_status(&client, stats, "b", "c", "UP").await;
    assert_eq!(
        n(&up, "checks_passed") - passed_before,
        2,
        "UP after exactly rise = 2 passed checks: {up}"
    );
    assert_eq!(served_by(&client, &gw, 12).await, set(&["a", "b", "c"]));
}

const BACKUP_CFG: &str = "
defaults
    mode http
    timeout connect 1s
backend b
    balance roundrobin
    option httpchk GET /v1/models
    default-server check inter 100ms fall 1 rise 2
    server a A_ADDR
    server x X_ADDR backup
    server y Y_ADDR backup
frontend f
    bind 127.0.0.1:0
    default_backend b
";

#[tokio::test]
async fn first_backup_takes_over_only_when_every_primary_is_down() {
    let a = Mock::start("a", &[]);
    let x = Mock::start("x", &[]);
    let y = Mock::start("y", &[]);
    let a_addr = a.addr;
    let cfg = BACKUP_CFG
        .replace("A_ADDR", &a_addr.to_string())
        .replace("X_ADDR", &x.addr.to_string())
        .replace("Y_ADDR", &y.addr.to_string());
    let (gw, stats) = start("llmgw.cfg", &cfg);
    let client = Client::http1();
    for name in ["a", "x", "y"] {
        eventually(LIMIT, || async {
            let s = server(&client, stats, "b", name).await;
            (s["check_status"] == "L7OK").then_some(())
        })
        .await;
    }
    let x_stats = server(&client, stats, "b", "x").await;
    assert_eq!(x_stats["backup"], true);
    assert_eq!(served_by(&client, &gw, 10).await, set(&["a"]));

    drop(a);
    wait_status(&client, stats, "b", "a", "DOWN").await;
    // Only the first backup, not all of them.
    assert_eq!(served_by(&client, &gw, 10).await, set(&["x"]));

    let _a = Mock::start_at("a", a_addr, &[]);
    wait_status(&client, stats, "b", "a", "UP").await;
    assert_eq!(served_by(&client, &gw, 10).await, set(&["a"]));
}

#[tokio::test]
async fn allbackups_shares_the_load_over_every_backup() {
    // A primary whose port refuses connections: DOWN at its first check.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let x = Mock::start("x", &[]);
    let y = Mock::start("y", &[]);
    let cfg = BACKUP_CFG
        .replace("option httpchk", "option allbackups\n    option httpchk")
        .replace("A_ADDR", &dead.to_string())
        .replace("X_ADDR", &x.addr.to_string())
        .replace("Y_ADDR", &y.addr.to_string());
    let (gw, stats) = start("llmgw.cfg", &cfg);
    let client = Client::http1();
    let a = wait_status(&client, stats, "b", "a", "DOWN").await;
    assert_eq!(a["check_status"], "L4CON");
    assert_eq!(served_by(&client, &gw, 10).await, set(&["x", "y"]));
}

#[tokio::test]
async fn default_llm_check_requests_models_and_never_a_billed_endpoint() {
    let m = Mock::start("m", &[]);
    // No [backend.check] at all: the LLM default.
    let cfg = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\ncheck = true\ninter = \"100ms\"\n",
        m.addr
    );
    let (_gw, stats) = start("llmgw.toml", &cfg);
    let client = Client::http1();
    let by_path = eventually(LIMIT, || async {
        let j = mock_stats(&client, m.addr).await;
        (j["by_path"]["/v1/models"].as_u64().unwrap_or(0) >= 3).then_some(j["by_path"].clone())
    })
    .await;
    let paths: Vec<&String> = by_path
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        paths,
        ["/v1/models"],
        "checks touched only /v1/models: {by_path}"
    );
    for billed in [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
    ] {
        assert!(by_path.get(billed).is_none(), "{billed}: {by_path}");
    }
    let s = server(&client, stats, "b", "s").await;
    assert_eq!(s["check_status"], "L7OK");
    assert_eq!(s["check_code"], 200);
    assert_eq!(s["status_detail"], "UP");
}

#[tokio::test]
async fn tcp_check_connects_without_a_request() {
    let m = Mock::start("m", &[]);
    let cfg = native(
        "type = \"tcp\"\ninter = \"100ms\"\nfall = 2\nrise = 1",
        &[("s", m.addr)],
        "",
    );
    let (_gw, stats) = start("llmgw.toml", &cfg);
    let client = Client::http1();
    eventually(LIMIT, || async {
        let s = server(&client, stats, "b", "s").await;
        (s["check_status"] == "L4OK" && n(&s, "checks_passed") >= 3).then_some(())
    })
    .await;
    assert_eq!(mock_stats(&client, m.addr).await["requests"], 0);
    let m_addr = m.addr;
    drop(m);
    let s = wait_status(&client, stats, "b", "s", "DOWN").await;
    assert_eq!(s["check_status"], "L4CON");
    let _m = Mock::start_at("m", m_addr, &[]);
    wait_status(&client, stats, "b", "s", "UP").await;
}

#[tokio::test]
async fn http_check_expecting_200_fails_on_a_500() {
    let m = Mock::start("m", &[]);
    let cfg = native(
        "path = \"/health\"\nexpect = { status = 200 }\ninter = \"100ms\"\nfall = 2\nrise = 1",
        &[("s", m.addr)],
        "",
    );
    let (gw, stats) = start("llmgw.toml", &cfg);
    let client = Client::http1();
    eventually(LIMIT, || async {
        let s = server(&client, stats, "b", "s").await;
        (s["check_status"] == "L7OK").then_some(())
    })
    .await;
    let r = client
        .send(
            Method::POST,
            &format!("http://{}/mock/fail?fail=status:500&path=/health", m.addr),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = wait_status(&client, stats, "b", "s", "DOWN").await;
    assert_eq!(s["check_status"], "L7STS");
    assert_eq!(s["check_code"], 500);
    // The only server is down: the gateway has nobody to send to.
    let r = client.get(&gw.url("/v1/models")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(mock_stats(&client, m.addr).await["by_path"]["/v1/models"].is_null());

    client
        .send(
            Method::POST,
            &format!("http://{}/mock/fail?fail=none", m.addr),
            &[],
            "",
        )
        .await;
    wait_status(&client, stats, "b", "s", "UP").await;
    assert_eq!(client.get(&gw.url("/v1/models")).await.status, 200);
}

#[tokio::test]
async fn checks_over_tls_verify_unless_told_otherwise() {
    // The upstream: another llmgw terminating TLS for "upstream.test" in
    // front of a mock; the check's GET /v1/models goes through it.
    let m = Mock::start("m", &[]);
    let dir = TempDir::new("chktls");
    let cert = Cert::generate(dir.path(), "up", &["upstream.test"]);
    let upstream = Gateway::start(
        &format!(
            "[[frontend]]\nname = \"f\"\ndefault_backend = \"b\"\n[[frontend.bind]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\n",
            cert.cert_path.display(),
            cert.key_path.display(),
            m.addr
        ),
        1,
    );
    let servers = [("s", upstream.addr())];
    let client = Client::http1();
    let timing = "inter = \"100ms\"\nfall = 1\nrise = 1";
    // Trusting its CA, with the right name: L7OK over TLS.
    let tls = format!(
        "tls = {{ sni = \"upstream.test\", ca = \"{}\" }}",
        cert.cert_path.display()
    );
    let (_gw, stats) = start("llmgw.toml", &native(timing, &servers, &tls));
    let s = eventually(LIMIT, || async {
        let s = server(&client, stats, "b", "s").await;
        (s["check_status"] == "L7OK").then_some(s)
    })
    .await;
    assert_eq!(s["check_code"], 200);
    // Webpki roots only: the self-signed certificate fails the handshake.
    let (_gw, stats) = start(
        "llmgw.toml",
        &native(timing, &servers, "tls = { sni = \"upstream.test\" }"),
    );
    let s = wait_status(&client, stats, "b", "s", "DOWN").await;
    assert_eq!(s["check_status"], "L6RSP");
    // A TCP check over TLS: the handshake is the check.
    let (_gw, stats) = start(
        "llmgw.toml",
        &native(
            &format!("type = \"tcp\"\n{timing}"),
            &servers,
            "tls = { verify = \"none\" }",
        ),
    );
    eventually(LIMIT, || async {
        let s = server(&client, stats, "b", "s").await;
        (s["check_status"] == "L6OK").then_some(())
    })
    .await;
}

/// Passive observation of a 429: not an error, a cooldown. The server that
/// answered it gets no new request for its `Retry-After` (which the client
/// still sees on the 429 it got), and takes traffic again afterwards —
/// through the HTTP/1 engine (plain upstreams) and through hyper (h2c
/// client), which report outcomes the same way.
#[tokio::test]
async fn upstream_429_cools_the_server_down_for_its_retry_after() {
    for client in [Client::http1(), Client::h2c()] {
        let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
        let cfg = format!(
            "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
             [[backend]]\nname = \"b\"\nbalance = \"roundrobin\"\n\
             [[backend.server]]\nname = \"a\"\naddress = \"{}\"\n\
             [[backend.server]]\nname = \"b\"\naddress = \"{}\"\n",
            a.addr, b.addr
        );
        let (gw, stats) = start("llmgw.toml", &cfg);
        let fail = format!("http://{}/mock/fail?fail=status:429", a.addr);
        assert_eq!(client.send(Method::POST, &fail, &[], "").await.status, 200);

        // Round-robin reaches `a` within two requests; its 429 passes through.
        let mut limited = None;
        for _ in 0..2 {
            let r = client.get(&gw.url("/v1/models")).await;
            if r.status == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.expect("a's 429 reached the client");
        assert_eq!(r.header("retry-after"), Some("1"));
        let s = server(&client, stats, "b", "a").await;
        assert!(n(&s, "cooldown_ms") > 0, "{s}");

        // While `a` cools down, every request goes to `b`.
        let during = served_by(&client, &gw, 6).await;
        assert_eq!(during, set(&["b"]));

        // Once the cooldown is over `a` is picked again (and, still failing,
        // answers 429 again): polled, no fixed wait.
        eventually(LIMIT, || async {
            let r = client.get(&gw.url("/v1/models")).await;
            (r.header("x-mock-server") == Some("a")).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_backend_whose_servers_all_cool_down_answers_429_with_retry_after() {
    let a = Mock::start("a", &["--retry-after", "30"]);
    let cfg = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"a\"\naddress = \"{}\"\n",
        a.addr
    );
    let (gw, _stats) = start("llmgw.toml", &cfg);
    let c = Client::http1();
    let fail = format!("http://{}/mock/fail?fail=status:429", a.addr);
    assert_eq!(c.send(Method::POST, &fail, &[], "").await.status, 200);
    // The provider's own 429 passes through and starts the cooldown.
    let r = c.get(&gw.url("/v1/models")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-mock-server"), Some("a"));
    // Then the gateway answers for it, without asking, until it is over.
    let r = c.get(&gw.url("/v1/models")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-mock-server"), None);
    assert_eq!(r.json()["error"]["code"], "upstream_rate_limited");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((29..=30).contains(&secs), "Retry-After {secs}");
    assert_eq!(mock_stats(&c, a.addr).await["by_path"]["/v1/models"], 1);
}

#[tokio::test]
async fn a_recovered_server_ramps_its_weight_over_slowstart() {
    let (a, b) = (Mock::start("a", &[]), Mock::start("b", &[]));
    let timing =
        "inter = \"100ms\"\nfastinter = \"100ms\"\ndowninter = \"100ms\"\nfall = 1\nrise = 1";
    let (gw, stats) = start(
        "llmgw.toml",
        &native(
            timing,
            &[("a", a.addr), ("b", b.addr)],
            "weight = 100\nslowstart = \"4s\"",
        ),
    );
    let c = Client::http1();
    wait_status(&c, stats, "b", "a", "UP").await;
    // At startup there is no ramp (HAProxy ramps only after a recovery).
    let s = server(&c, stats, "b", "a").await;
    assert_eq!(n(&s, "effective_weight"), 100, "{s}");

    // a's checks fail (only its check path), it goes DOWN, then recovers.
    let fail = |what: &str| format!("http://{}/mock/fail?fail={what}&path=/v1/models", a.addr);
    assert_eq!(
        c.send(Method::POST, &fail("status:500"), &[], "")
            .await
            .status,
        200
    );
    wait_status(&c, stats, "b", "a", "DOWN").await;
    assert_eq!(
        c.send(Method::POST, &fail("none"), &[], "").await.status,
        200
    );
    wait_status(&c, stats, "b", "a", "UP").await;

    // Early in the ramp a takes a small share of the traffic; its weight
    // only grows, and reaches 100 when slowstart is over.
    let early = n(&server(&c, stats, "b", "a").await, "effective_weight");
    assert!(early < 50, "effective weight {early} right after recovery");
    let mut to_a = 0;
    for _ in 0..40 {
        let r = c.post_json(&gw.url("/v1/chat/completions"), "{}").await;
        to_a += usize::from(r.header("x-mock-server") == Some("a"));
    }
    assert!(
        to_a < 20,
        "{to_a} of 40 requests went to a early in its ramp"
    );
    // Sampled while it ramps (every 50 ms, bounded).
    let (mut last, mut seen) = (early, vec![early]);
    let until = std::time::Instant::now() + LIMIT;
    while last < 100 {
        assert!(
            std::time::Instant::now() < until,
            "no full weight: {seen:?}"
        );
        let w = n(&server(&c, stats, "b", "a").await, "effective_weight");
        assert!(w >= last, "the ramp went back from {last} to {w}");
        if w != last {
            seen.push(w);
        }
        last = w;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 3, "no ramp, only {seen:?}");
}
