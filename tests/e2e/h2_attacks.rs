//! HTTP/2 frame-level attacks against the real gateway, by the attacker in
//! tests/python/h2_attack.py (built on the `h2` package's frame and HPACK
//! layers): rapid reset, CONTINUATION flood, SETTINGS flood, PING flood.
//!
//! For each: normal clients (HTTP/1.1 and h2c, through the gateway to a
//! mock) keep getting 200s while it runs, the gateway's resident memory
//! stays bounded, and every attacking connection is ended — by the `h2`
//! crate's GOAWAY(ENHANCE_YOUR_CALM) for rapid reset and CONTINUATION
//! floods, by the gateway's control-frame meter (a plain close, no GOAWAY)
//! for SETTINGS and PING floods, which `h2` answers without limit.

use std::process::Stdio;

use llmgw_e2e::{mock_chats, one_backend, python, root, rss_kib, Client, Gateway, Mock};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// Attacking connections per test, one after another.
const ROUNDS: usize = 10;
/// HTTP/2 error code ENHANCE_YOUR_CALM.
const ENHANCE_YOUR_CALM: u64 = 11;

struct Outcome {
    rounds: Vec<serde_json::Value>,
    /// Normal requests answered 200 while the attacker ran, per client.
    served: [u64; 2],
    rss_before_kib: u64,
    rss_after_kib: u64,
    gw: Gateway,
    mock: Mock,
}

async fn run(mode: &str) -> Outcome {
    run_with(mode, "", ROUNDS).await
}

async fn run_with(mode: &str, frontend: &str, rounds_wanted: usize) -> Outcome {
    let mock = Mock::start("m", &[]);
    let gw = Gateway::start(&one_backend(frontend, "", mock.addr), 1);
    let url = gw.url("/v1/chat/completions");
    let [(_, h1), (_, h2c)] = llmgw_e2e::clients();
    // Warm both paths up, so the memory measured after is the attack's.
    for c in [&h1, &h2c] {
        assert_eq!(c.post_json(&url, CHAT).await.status, 200);
    }
    let rss_before_kib = rss_kib(gw.proc.pid());

    let attacker = tokio::process::Command::new(python())
        .arg(root().join("tests/python/h2_attack.py"))
        .arg(gw.addr().to_string())
        .arg(mode)
        .args(["--rounds", &rounds_wanted.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python");
    let attacker = tokio::spawn(attacker.wait_with_output());
    let mut served = [0u64; 2];
    // Normal traffic for as long as the attacker runs (at least one round).
    loop {
        for (i, c) in [&h1, &h2c].into_iter().enumerate() {
            let r = c.post_json(&url, CHAT).await;
            assert_eq!(
                r.status,
                200,
                "{mode}: a normal client during the attack: {}",
                r.text()
            );
            served[i] += 1;
        }
        if attacker.is_finished() {
            break;
        }
    }
    let out = attacker.await.expect("join").expect("attacker output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{mode}: the attacker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rounds: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rounds.len(), rounds_wanted, "{stdout}");
    // And after it, the gateway still serves both kinds of client.
    for c in [&h1, &h2c] {
        assert_eq!(c.post_json(&url, CHAT).await.status, 200);
    }
    let rss_after_kib = rss_kib(gw.proc.pid());
    eprintln!(
        "{mode}: RSS {rss_before_kib} KiB before, {rss_after_kib} KiB after; served during the attack: {served:?} (http1, h2c); first round: {}",
        rounds[0]
    );
    // A generous bound: what matters is that it does not grow with the
    // attack (thousands of streams, megabytes of frames).
    assert!(
        rss_after_kib < rss_before_kib + 64 * 1024,
        "{mode}: RSS grew from {rss_before_kib} KiB to {rss_after_kib} KiB"
    );
    assert!(served.iter().all(|&n| n >= 1), "{served:?}");
    Outcome {
        rounds,
        served,
        rss_before_kib,
        rss_after_kib,
        gw,
        mock,
    }
}

/// Every round's connection was ended by the gateway (not left open until
/// the attacker gave up) and before the attacker's frame budget was spent.
fn assert_each_round_ended(mode: &str, o: &Outcome) {
    for r in &o.rounds {
        assert!(
            r["ended"] == "eof" || r["ended"] == "reset",
            "{mode}: the connection was not ended by the gateway: {r}"
        );
    }
}

fn assert_goaway(mode: &str, o: &Outcome, debug: &str) {
    for r in &o.rounds {
        assert_eq!(r["goaway_code"], ENHANCE_YOUR_CALM, "{mode}: {r}");
        assert_eq!(r["goaway_debug"], debug, "{mode}: {r}");
    }
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_spares_the_upstream() {
    let o = run("rapid-reset").await;
    assert_each_round_ended("rapid-reset", &o);
    // h2 counts streams the client reset before hyper took them up; past
    // 20 at once it answers GOAWAY(ENHANCE_YOUR_CALM, "too_many_resets").
    assert_goaway("rapid-reset", &o, "too_many_resets");
    // Each unit the attacker sent is one stream (HEADERS + RST_STREAM).
    let streams: u64 = o.rounds.iter().filter_map(|r| r["sent"].as_u64()).sum();
    let j = Client::http1()
        .get(&format!("http://{}/mock/stats", o.mock.addr))
        .await
        .json();
    let reached = j["by_path"]["/v1/models"].as_u64().unwrap_or(0);
    eprintln!("rapid-reset: {streams} streams opened, {reached} reached the upstream");
    assert!(
        streams >= 20 * ROUNDS as u64,
        "the attacker opened only {streams} streams"
    );
    assert!(
        reached * 10 < streams,
        "{reached} of {streams} reset streams reached the upstream"
    );
    // The normal requests did reach it.
    assert!(mock_chats(&Client::http1(), o.mock.addr).await >= o.served.iter().sum::<u64>());
}

#[tokio::test]
async fn continuation_flood_gets_goaway_after_a_few_frames() {
    let o = run("continuation").await;
    assert_each_round_ended("continuation", &o);
    // 64 KiB of header list / 16 KiB frames: h2 allows 5 CONTINUATION
    // frames without END_HEADERS, then GOAWAY.
    assert_goaway("continuation", &o, "too_many_continuations");
}

#[tokio::test]
async fn settings_flood_is_cut_by_the_control_frame_meter() {
    let o = run("settings").await;
    assert_flood_cut("settings", &o);
}

#[tokio::test]
async fn ping_flood_is_cut_by_the_control_frame_meter() {
    let o = run("ping").await;
    assert_flood_cut("ping", &o);
}

/// h2 answers every SETTINGS and PING (one at a time, so nothing queues),
/// and would go on for ever: the gateway's meter closes the connection
/// once the client has sent its burst of 1000 control frames — no GOAWAY,
/// the attacker sees the connection end while it still had frames to send.
fn assert_flood_cut(mode: &str, o: &Outcome) {
    assert_each_round_ended(mode, o);
    for r in &o.rounds {
        assert!(r["goaway_code"].is_null(), "{mode}: {r}");
        let sent = r["sent"].as_u64().unwrap_or(0);
        assert!(sent < 50_000, "{mode}: the whole budget went through: {r}");
        let answers = r["frames_received"][if mode == "ping" { "6" } else { "4" }]
            .as_u64()
            .unwrap_or(0);
        assert!(answers <= 1002, "{mode}: {answers} answers: {r}");
    }
    let log = o.gw.proc.stderr();
    assert_eq!(
        log.matches("HTTP/2 control frame flood").count(),
        ROUNDS,
        "{log}"
    );
    let _ = (o.rss_before_kib, o.rss_after_kib);
}

/// A connection that sends PINGs but no request is idle: GOAWAY(NO_ERROR)
/// once `timeout http-keep-alive` has passed since it opened, though bytes
/// keep moving (the attacker would ping for 10 s, 10 times the timeout);
/// as it never acknowledges the GOAWAY's own PING, the gateway drops it
/// after another keep-alive period.
#[tokio::test]
async fn pings_do_not_keep_an_idle_h2_connection_open() {
    let o = run_with("ping-idle", "timeout = { http_keep_alive = \"1s\" }", 2).await;
    assert_each_round_ended("ping-idle", &o);
    for r in &o.rounds {
        assert_eq!(r["goaway_code"], 0, "{r}");
        let sent = r["sent"].as_u64().unwrap_or(0);
        assert!(sent < 100, "pinged to the end of its budget: {r}");
    }
}

/// R-U-Dead-Yet over HTTP/2: a POST whose body comes a byte every 100 ms.
/// The general path holds a body to the same pace as the HTTP/1 engine:
/// past `timeout http-request`, 500 bytes a second or a 408.
#[tokio::test]
async fn a_slow_h2_body_gets_408() {
    let o = run_with("slow-body", "timeout = { http_request = \"1s\" }", 2).await;
    for r in &o.rounds {
        assert_eq!(r["statuses"], serde_json::json!(["408"]), "{r}");
        let sent = r["sent"].as_u64().unwrap_or(0);
        assert!(sent < 100, "sent its whole body: {r}");
    }
}
