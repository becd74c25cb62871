//! Slow clients, by Debian's `slowhttptest`: slow headers (Slowloris, `-H`)
//! and slow bodies (R-U-Dead-Yet, `-B`), a few hundred connections each,
//! against a gateway with `timeout http-request 1s`, while normal clients
//! (HTTP/1.1 and h2c) keep being served.
//!
//! Headers must be complete within `timeout http-request` (then 408); a
//! body must keep up at least 500 bytes/s once that has passed (then 408),
//! so a trickle that would never trip `timeout client` is cut too. The
//! proof is slowhttptest's own report: it ends with "No open connections
//! left" (the gateway closed every one) instead of running to its time
//! limit; and the gateway's `/stats.json` shows them gone.

use std::process::Stdio;

use llmgw_e2e::{Client, Gateway, Mock, TempDir};

const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
const CONNECTIONS: u64 = 300;

fn cfg(mock: std::net::SocketAddr) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    timeout http-request 1s\n\
         frontend f\n    bind 127.0.0.1:0\n    default_backend b\n\
         backend b\n    server m {mock}\n"
    )
}

/// Fails (never skips) when the tool is missing.
fn require_slowhttptest() {
    match std::process::Command::new("slowhttptest")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => panic!(
            "slowhttptest is needed by this test and could not be run ({e}): install it with tests/run.sh or `apt-get install slowhttptest`"
        ),
    }
}

async fn slow_attack(mode: &str) {
    require_slowhttptest();
    let m = Mock::start("m", &[]);
    let mut gw = Gateway::start_file(
        "llmgw.cfg",
        &cfg(m.addr),
        1,
        &["--stats", "127.0.0.1:0"],
        &[],
    );
    let stats = gw.proc.wait_addr("stats listening on");
    let dir = TempDir::new("slowhttptest");
    let report = dir.path().join("report");
    let (flag, path) = match mode {
        "slow headers" => ("-H", "/v1/models"),
        _ => ("-B", "/v1/chat/completions"),
    };
    let n = CONNECTIONS.to_string();
    let prefix = report.to_string_lossy().into_owned();
    let url = gw.url(path);
    // -c/-r: all connections opened within the first second; -i 1: a
    // follow-up header line or a few body bytes every second; -s 8192: the
    // body's announced length; -l 20: the tool stops on its own after 20 s
    // if the gateway has not closed every connection by then.
    let mut args = vec![flag, "-c", &n, "-r", &n, "-i", "1", "-l", "20", "-p", "3"];
    args.extend(["-s", "8192", "-u", &url, "-g", "-o", &prefix]);
    let tool = tokio::process::Command::new("slowhttptest")
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run slowhttptest");
    let tool = tokio::spawn(tool.wait_with_output());

    // Normal clients while the slow ones hold their connections.
    let chat = gw.url("/v1/chat/completions");
    let [(_, h1), (_, h2c)] = llmgw_e2e::clients();
    let mut served = 0u64;
    let mut most_open = 0u64;
    loop {
        for c in [&h1, &h2c] {
            let r = c.post_json(&chat, CHAT).await;
            assert_eq!(r.status, 200, "{mode}: a normal client: {}", r.text());
            served += 1;
        }
        let f = Client::http1()
            .get(&format!("http://{stats}/stats.json"))
            .await
            .json();
        most_open = most_open.max(f["frontends"][0]["conn_cur"].as_u64().unwrap_or(0));
        if tool.is_finished() {
            break;
        }
    }
    let out = tool.await.expect("join").expect("slowhttptest output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let csv = std::fs::read_to_string(format!("{prefix}.csv")).unwrap_or_else(|e| {
        panic!(
            "{mode}: no CSV report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // Seconds,Closed,Pending,Connected,Service Available
    let last: Vec<u64> = csv
        .lines()
        .last()
        .unwrap_or_default()
        .split(',')
        .map(|v| v.trim().parse().unwrap_or(0))
        .collect();
    let f = Client::http1()
        .get(&format!("http://{stats}/stats.json"))
        .await
        .json();
    eprintln!(
        "{mode}: slowhttptest CSV {csv:?}; most connections open at once (gateway) {most_open}; normal requests served during: {served}; frontend now {}",
        f["frontends"][0]
    );
    assert!(
        stdout.contains("No open connections left"),
        "{mode}: slowhttptest did not see every connection closed:\n{stdout}"
    );
    // The tool's last CSV row is its last one-second sample, taken before
    // the final closes; it shows the gateway closing them, though.
    assert!(
        last.get(1).is_some_and(|&closed| closed >= CONNECTIONS / 2),
        "{mode}: slowhttptest counted few connections closed: {csv}"
    );
    // The gateway's own count: none of the slow connections is left, only
    // the normal clients' (at most one or two each).
    let open = f["frontends"][0]["conn_cur"].as_u64().unwrap_or(u64::MAX);
    assert!(open <= 4, "{mode}: {open} connections still open: {f}");
    assert!(
        f["frontends"][0]["conn_tot"]
            .as_u64()
            .is_some_and(|n| n >= CONNECTIONS),
        "{f}"
    );
    assert!(served >= 2, "{served}");
    drop(gw);
}

#[tokio::test]
async fn slowloris_headers_are_cut_while_normal_clients_are_served() {
    slow_attack("slow headers").await;
}

#[tokio::test]
async fn slow_bodies_are_cut_while_normal_clients_are_served() {
    slow_attack("slow body").await;
}
