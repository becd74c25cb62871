//! Access logs through the real gateway: JSON lines in a file for both
//! request paths (HTTP/1.1 through the engine, h2c through the general
//! path) — a completion, a stream (TTFT, tokens from its usage), a denial
//! (`PR`), an unreachable server (`SC`); the client key by name and never
//! a credential; `httplog` on stdout against HAProxy 2.6's own line for
//! the same requests through the same `.cfg`; syslog over UDP (RFC 3164
//! and RFC 5424); and `option dontlognull`.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use llmgw_e2e::{clients, eventually, start_cfg, Client, Gateway, Mock, Proc, TempDir};
use tokio::io::AsyncWriteExt;

use crate::differential::{free_port, start_haproxy};

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"secret-prompt-text"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"secret-prompt-text"}]}"#;

/// The JSON lines of `path` once there are `n` of them.
async fn json_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

fn config(log: &Path, openai: SocketAddr) -> String {
    format!(
        r#"
[global]
stats = "127.0.0.1:0"
log = {{ target = "{log}", format = "json" }}

[[frontend]]
name = "f"
bind = ["127.0.0.1:0"]
http_request_rules = ["deny deny_status 403 if {{ path_beg /blocked }}"]

[[frontend.route]]
backend = "dead"
path_prefix = "/dead"

[[frontend.route]]
backend = "openai"
model_prefix = "gpt-"

[[backend]]
name = "openai"
[[backend.server]]
name = "o1"
address = "{openai}"

[[backend]]
name = "dead"
[[backend.server]]
name = "d1"
address = "127.0.0.1:1"
"#,
        log = log.display()
    )
}

#[tokio::test]
async fn json_lines_for_both_request_paths() {
    let o = Mock::start("openai", &[]);
    let dir = TempDir::new("access");
    let log = dir.path().join("access.log");
    let mut gw = Gateway::start(&config(&log, o.addr), 1);
    let stats = gw.proc.wait_addr("stats listening on");
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        let id = format!("rid-{kind}");
        let r = c
            .send(
                Method::POST,
                &url,
                &[("content-type", "application/json"), ("x-request-id", &id)],
                CHAT,
            )
            .await;
        assert_eq!(r.status, 200, "{kind}: {}", r.text());
        let (p, b) = c.stream(&url, &[], STREAM).await;
        assert_eq!(p.status, 200, "{kind}");
        b.collect().await.expect("stream");
        assert_eq!(c.get(&gw.url("/blocked")).await.status, 403, "{kind}");
        let r = c
            .post_json(&gw.url("/dead/v1/chat/completions"), CHAT)
            .await;
        assert!(r.status.is_server_error(), "{kind}: {}", r.status);
    }
    let lines = json_lines(&log, 8).await;
    assert_eq!(lines.len(), 8);
    for (kind, version) in [("http1", "HTTP/1.1"), ("h2c", "HTTP/2.0")] {
        let of: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["http_version"] == version)
            .collect();
        assert_eq!(of.len(), 4, "{kind}: {lines:?}");
        for l in &of {
            assert_eq!(l["frontend"], "f", "{l}");
            assert!(l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")));
            assert!(l["accept_date"].as_str().is_some_and(|d| d.ends_with('Z')));
            assert!(l["Ta"].as_i64() >= Some(0), "{l}");
            assert!(l["request_id"].is_string(), "{l}");
        }
        // The completion.
        let chat = of[0];
        assert_eq!(chat["method"], "POST");
        assert_eq!(chat["path"], "/v1/chat/completions");
        assert_eq!(chat["status"], 200);
        assert_eq!(chat["termination_state"], "----");
        assert_eq!(
            (&chat["backend"], &chat["server"]),
            (&"openai".into(), &"o1".into())
        );
        assert_eq!(chat["model"], "gpt-4o");
        assert_eq!(chat["request_id"], format!("rid-{kind}"));
        assert!(chat["tokens_in"].as_u64() > Some(0), "{chat}");
        assert!(chat["tokens_out"].as_u64() > Some(0), "{chat}");
        for t in ["TR", "Tw", "Tc", "Tr"] {
            assert!(chat[t].as_i64() >= Some(0), "{t}: {chat}");
        }
        assert!(chat["Ta"].as_i64() >= chat["Tr"].as_i64(), "{chat}");
        assert!(chat["bytes_read"].as_u64() > Some(100), "{chat}");
        assert!(
            chat["bytes_uploaded"].as_u64() > Some(CHAT.len() as u64),
            "{chat}"
        );
        assert!(chat["client_key"].is_null());
        // The stream: its first byte's time and the usage at its end.
        let stream = of[1];
        assert_eq!(stream["status"], 200);
        assert!(stream["ttft_ms"].is_u64(), "{stream}");
        assert!(stream["tokens_out"].as_u64() > Some(0), "{stream}");
        assert_eq!(stream["termination_state"], "----");
        // Denied by a rule: no backend, no server, no timer past the request.
        let denied = of[2];
        assert_eq!(denied["status"], 403);
        assert_eq!(denied["termination_state"], "PR--");
        assert!(denied["backend"].is_null() && denied["server"].is_null());
        assert_eq!(
            (&denied["Tw"], &denied["Tc"], &denied["Tr"]),
            (&(-1).into(), &(-1).into(), &(-1).into())
        );
        assert_eq!(denied["method"], "GET");
        assert_eq!(denied["path"], "/blocked");
        // The server could not be connected to.
        let failed = of[3];
        assert_eq!(failed["termination_state"], "SC--", "{failed}");
        assert_eq!(failed["server"], "d1");
        assert_eq!((&failed["Tc"], &failed["Tr"]), (&(-1).into(), &(-1).into()));
        assert!(failed["ttft_ms"].is_null());
    }
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains("secret-prompt-text"),
        "a body was logged: {text}"
    );
    // Nothing was dropped, and both readers say so.
    let c = Client::http1();
    let s = c.get(&format!("http://{stats}/stats.json")).await.json();
    assert_eq!(s["logs"]["enabled"], true);
    assert_eq!(s["logs"]["dropped"], 0);
    let m = c.get(&format!("http://{stats}/metrics")).await.text();
    assert!(m.contains("\nllmgw_logs_dropped_total 0\n"), "{m}");
}

#[tokio::test]
async fn a_client_key_is_logged_by_name_never_itself() {
    const PROVIDER_SECRET: &str = "sk-provider-secret-7777";
    let o = Mock::start("openai", &[]);
    let dir = TempDir::new("access");
    let log = dir.path().join("access.log");
    let cfg = format!(
        r#"
[global]
log = {{ target = "{log}", format = "json" }}

[[frontend]]
name = "k"
bind = ["127.0.0.1:0"]
default_backend = "openai"
client_keys = "teams"

[[backend]]
name = "openai"
auth = {{ type = "bearer", env = "TEST_OPENAI_KEY" }}
[[backend.server]]
name = "o1"
address = "{o}"

[[client_keys]]
name = "teams"
[[client_keys.key]]
name = "team-a"
sha256 = "{h}"
"#,
        log = log.display(),
        o = o.addr,
        h = llmgw_e2e::sha256_hex("sk-team-a-secret"),
    );
    let gw = Gateway::start_env(&cfg, 1, &[("TEST_OPENAI_KEY", PROVIDER_SECRET)]);
    let url = gw.url("/v1/chat/completions");
    for (kind, c) in clients() {
        let ok = c
            .send(
                Method::POST,
                &url,
                &[("authorization", "Bearer sk-team-a-secret")],
                CHAT,
            )
            .await;
        assert_eq!(ok.status, 200, "{kind}: {}", ok.text());
        let refused = c
            .send(
                Method::POST,
                &url,
                &[("x-api-key", "sk-unknown-secret")],
                CHAT,
            )
            .await;
        assert_eq!(refused.status, 401, "{kind}");
    }
    let lines = json_lines(&log, 4).await;
    let keyed: Vec<_> = lines.iter().filter(|l| l["status"] == 200).collect();
    assert_eq!(keyed.len(), 2, "{lines:?}");
    for l in keyed {
        assert_eq!(l["client_key"], "team-a", "{l}");
        assert!(l["tokens_in"].is_u64(), "{l}");
    }
    for l in lines.iter().filter(|l| l["status"] == 401) {
        assert!(l["client_key"].is_null(), "{l}");
        assert_eq!(l["termination_state"], "PR--", "{l}");
    }
    let text = std::fs::read_to_string(&log).expect("log");
    for secret in [
        "sk-team-a-secret",
        "sk-unknown-secret",
        PROVIDER_SECRET,
        &llmgw_e2e::sha256_hex("sk-team-a-secret"),
        "secret-prompt-text",
    ] {
        assert!(!text.contains(secret), "{secret} was logged: {text}");
    }
}

/// The `.cfg` both HAProxy and llmgw serve for the httplog comparison.
fn httplog_cfg(port: u16, mock: SocketAddr) -> String {
    format!(
        "global\n    log stdout format raw local0\n\
         defaults\n    mode http\n    log global\n    option httplog\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    timeout http-request 3s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n\
         \x20   http-request deny if {{ path_beg /admin }}\n\
         \x20   use_backend dead if {{ path_beg /dead }}\n\
         \x20   default_backend be\n\
         backend be\n    server s1 {mock}\n\
         backend dead\n    server s1 127.0.0.1:1\n"
    )
}

/// The next httplog line a process writes.
fn next_line(p: &mut Proc) -> String {
    p.wait_line_next("] fe ")
}

/// The line's fields, the request line as one (its authority's port, which
/// differs between the two proxies, replaced).
fn fields(line: &str, port: u16) -> Vec<String> {
    let (head, req) = line.split_once(" \"").unwrap_or_else(|| panic!("{line}"));
    let mut f: Vec<String> = head.split(' ').map(str::to_owned).collect();
    f.push(req.replace(&format!(":{port}/"), ":PORT/"));
    f
}

/// One request sent the same way to both proxies.
enum Probe {
    Http1(Method, &'static str, &'static str),
    H2c(&'static str),
    Raw(&'static [u8]),
}

async fn send(s: &Probe, port: u16) {
    let base = format!("http://127.0.0.1:{port}");
    match s {
        Probe::Http1(m, path, body) => {
            let c = Client::http1();
            c.send(m.clone(), &format!("{base}{path}"), &[], body).await;
        }
        Probe::H2c(path) => {
            Client::h2c().get(&format!("{base}{path}")).await;
        }
        Probe::Raw(bytes) => {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            if !bytes.is_empty() {
                s.write_all(bytes).await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(s);
        }
    }
}

#[tokio::test]
async fn httplog_on_stdout_matches_haproxy_field_by_field() {
    let mock = Mock::start("openai", &[]);
    let (hport, lport) = (free_port(), free_port());
    let mut hap = start_haproxy(&httplog_cfg(hport, mock.addr));
    let mut gw = start_cfg(&httplog_cfg(lport, mock.addr), 1, &[]);
    // HAProxy's listener comes up shortly after it starts.
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", hport))
            .await
            .ok()
    })
    .await;
    // That probe was a null connection: HAProxy logs it (no dontlognull).
    next_line(&mut hap.proc);
    let requests = [
        Probe::Http1(Method::GET, "/v1/models?x=1", ""),
        Probe::Http1(Method::POST, "/v1/chat/completions", CHAT),
        Probe::Http1(Method::GET, "/admin/users", ""),
        Probe::Http1(Method::GET, "/dead/v1/models", ""),
        Probe::H2c("/v1/models"),
        Probe::Raw(b"GARBAGE\r\n\r\n"),
        Probe::Raw(b"GET /v1/mod"),
        Probe::Raw(b""),
    ];
    for r in &requests {
        send(r, hport).await;
        let h = next_line(&mut hap.proc);
        send(r, lport).await;
        let l = next_line(&mut gw.proc);
        let (hf, lf) = (fields(&h, hport), fields(&l, lport));
        assert_eq!(hf.len(), lf.len(), "\nhaproxy: {h}\nllmgw:   {l}");
        for (i, (a, b)) in hf.iter().zip(&lf).enumerate() {
            let same = match i {
                // Client address: the same host, another port.
                0 => a.rsplit_once(':').map(|p| p.0) == b.rsplit_once(':').map(|p| p.0),
                // The date: the same shape.
                1 => a.len() == b.len() && b.starts_with('[') && b.ends_with(']'),
                // Timers: the same phases reached (-1) or not.
                4 => {
                    let reached =
                        |s: &str| -> Vec<bool> { s.split('/').map(|t| t != "-1").collect() };
                    reached(a) == reached(b)
                }
                // Status: HAProxy answers 503 when no server can be
                // reached, llmgw 502 (its error body says why).
                5 if a == "503" && hf[9] == "SC--" => b == "502" || b == "503",
                // Bytes: each proxy's own answers differ in size; both
                // count none for a request that never came.
                6 => (a == "0") == (b == "0"),
                _ => a == b,
            };
            assert!(same, "field {i} differs\nhaproxy: {h}\nllmgw:   {l}");
        }
    }
}

#[tokio::test]
async fn syslog_over_udp_in_both_framings() {
    let mock = Mock::start("openai", &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let at = sock.local_addr().expect("addr");
    let cfg = format!(
        "global\n    log {at} local0\n\
         defaults\n    mode http\n    log global\n    option httplog\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend fe\n    bind 127.0.0.1:0\n    default_backend be\n\
         backend be\n    server s1 {}\n",
        mock.addr
    );
    let gw = start_cfg(&cfg, 1, &[]);
    Client::http1().get(&gw.url("/v1/models")).await;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a datagram");
    let d = String::from_utf8_lossy(&buf[..n]).into_owned();
    let pid = gw.proc.pid();
    // `<134>Nov 30 07:59:11 llmgw[PID]: LINE\n`: local0, info, as HAProxy.
    assert!(d.starts_with("<134>"), "{d}");
    let (head, line) = d
        .split_once(&format!(" llmgw[{pid}]: "))
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(head.len(), "<134>Nov 30 07:59:11".len(), "{d}");
    assert!(line.ends_with("\"GET /v1/models HTTP/1.1\"\n"), "{d}");
    assert!(line.contains(" fe be/s1 ") && line.contains(" 200 "), "{d}");
    drop(gw);

    let toml = format!(
        "[global]\nlog = {{ target = \"udp://{at}\", format = \"json\", syslog_format = \"rfc5424\", facility = \"local1\" }}\n\
         [[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\n",
        mock.addr
    );
    let gw = Gateway::start(&toml, 1);
    Client::h2c().get(&gw.url("/v1/models")).await;
    let n = sock.recv(&mut buf).expect("a datagram");
    let d = String::from_utf8_lossy(&buf[..n]).into_owned();
    let pid = gw.proc.pid();
    // `<142>1 2026-11-30T07:59:11.185427+00:00 - llmgw PID - - {…}\n`.
    assert!(d.starts_with("<142>1 "), "{d}");
    let (_, json) = d
        .split_once(&format!(" - llmgw {pid} - - "))
        .unwrap_or_else(|| panic!("{d}"));
    let v: serde_json::Value =
        serde_json::from_str(json.trim_end()).unwrap_or_else(|e| panic!("{e}: {d}"));
    assert_eq!((&v["server"], &v["status"]), (&"s".into(), &200.into()));
    assert_eq!(v["http_version"], "HTTP/2.0");
}

#[tokio::test]
async fn dontlognull_skips_connections_that_sent_nothing() {
    let mock = Mock::start("openai", &[]);
    let dir = TempDir::new("access");
    let log = dir.path().join("a.log");
    let cfg = format!(
        "global\n    log file@{} format raw local0\n\
         defaults\n    mode http\n    log global\n    option jsonlog\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n    timeout http-request 1s\n\
         frontend fe\n    bind 127.0.0.1:0\n    default_backend be\n\
         frontend quiet\n    bind 127.0.0.1:0\n    option dontlognull\n    default_backend be\n\
         backend be\n    server s1 {}\n",
        log.display(),
        mock.addr
    );
    let gw = start_cfg(&cfg, 2, &[]);
    let (fe, quiet) = (gw.addrs[0].port(), gw.addrs[1].port());
    // As HAProxy 2.6 does: with dontlognull, a connection that closes or
    // times out without a byte leaves no line; one that sent part of a
    // request does, and so does any connection without the option.
    send(&Probe::Raw(b""), quiet).await;
    {
        let _idle = tokio::net::TcpStream::connect(("127.0.0.1", quiet))
            .await
            .expect("connect");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // Each logged probe's line is waited for before the next: lines from
    // two connections are written in the order the gateway sees them end,
    // which is not the order they were opened in.
    let logged = |n: usize| {
        let log = log.clone();
        async move {
            eventually(Duration::from_secs(10), || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                (text.lines().count() >= n).then_some(text)
            })
            .await
        }
    };
    send(&Probe::Raw(b"GET /v1/mod"), quiet).await;
    logged(1).await;
    send(&Probe::Raw(b""), fe).await;
    logged(2).await;
    Client::http1()
        .get(&format!("http://127.0.0.1:{quiet}/v1/models"))
        .await;
    let lines = logged(3).await;
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let got: Vec<(String, i64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["frontend"].as_str().unwrap_or("").to_owned(),
                l["status"].as_i64().unwrap_or(0),
                l["termination_state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = [
        ("quiet".to_owned(), 400, "CR--".to_owned()),
        ("fe".to_owned(), 400, "CR--".to_owned()),
        ("quiet".to_owned(), 200, "----".to_owned()),
    ];
    assert_eq!(got, want, "{lines:?}");
    assert!(lines[0]["method"].is_null(), "a <BADREQ> has no request");
}

#[tokio::test]
async fn a_reload_reopens_the_log_file() {
    let mock = Mock::start("openai", &[]);
    let dir = TempDir::new("access");
    let log = dir.path().join("access.log");
    let gw = Gateway::start(&config(&log, mock.addr), 1);
    let c = Client::http1();
    assert_eq!(
        c.post_json(&gw.url("/v1/chat/completions"), CHAT)
            .await
            .status,
        200
    );
    json_lines(&log, 1).await;
    // logrotate's default: rename, then SIGHUP.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.proc.signal("HUP");
    eventually(Duration::from_secs(10), || async {
        gw.proc
            .stderr()
            .contains("configuration reloaded")
            .then_some(())
    })
    .await;
    assert_eq!(
        c.post_json(&gw.url("/v1/chat/completions"), CHAT)
            .await
            .status,
        200
    );
    let fresh = json_lines(&log, 1).await;
    assert_eq!(fresh.len(), 1);
    assert_eq!(json_lines(&rotated, 1).await.len(), 1);
}
