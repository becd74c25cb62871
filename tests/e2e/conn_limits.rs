//! Connection protection at accept time: `tcp-request connection
//! track-scN src` and `tcp-request connection reject if { … }`, in the
//! HAProxy dialect and the native TOML, for `mode http` and `mode tcp`
//! frontends. A rejected connection is reset before a byte is read, with
//! no response, and counted as `denied_conn` in `/stats.json`.

use std::net::SocketAddr;
use std::time::Duration;

use llmgw_e2e::{eventually, Client, Gateway, Mock, RawClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GET_MODELS: &[u8] = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";

/// An HAProxy config: frontend `f` (with its own stick table) in `mode`,
/// the connection rules `rules`, a backend of the same mode on the mock.
fn cfg(mode: &str, store: &str, rules: &str, mock: SocketAddr) -> String {
    format!(
        "defaults\n    mode {mode}\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:0\n    stick-table type ip size 1k expire 60s store {store}\n\
         {rules}    default_backend b\n\
         backend b\n    server m {mock}\n"
    )
}

/// The brief's rule: at most 10 connections open per source address.
const CONN_CUR_RULES: &str = "    tcp-request connection track-sc0 src\n    tcp-request connection reject if { sc0_conn_cur gt 10 }\n";

/// Starts `config` (`.cfg` or `.toml`) with a stats listener.
fn start(file: &str, config: &str) -> (Gateway, SocketAddr) {
    let mut gw = Gateway::start_file(file, config, 1, &["--stats", "127.0.0.1:0"], &[]);
    let stats = gw.proc.wait_addr("stats listening on");
    (gw, stats)
}

/// Opens a connection and sends one request: `Some(client)` once its
/// response came back 200 (the connection stays open), `None` when the
/// gateway closed the connection without a byte of response.
async fn served(addr: SocketAddr) -> Option<RawClient> {
    // A plain stream first: the gateway may reset the connection before
    // the request is written, which `RawClient::send` would take for a
    // test failure.
    // On loopback the reset can even come back before `connect` returns.
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("connect: {e}"),
    };
    let _ = s.write_all(GET_MODELS).await;
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first))
        .await
        .expect("the gateway neither answered nor closed within 10 s");
    match n {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            // Hand the rest of the response to the raw client's parser.
            let mut c = RawClient::from_stream(s, first.to_vec());
            let r = c.response().await.expect("a complete response");
            assert_eq!(r.status, 200, "{}", r.body_text());
            Some(c)
        }
    }
}

async fn stats(c: &Client, stats: SocketAddr) -> serde_json::Value {
    let j = c.get(&format!("http://{stats}/stats.json")).await.json();
    j["frontends"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == "f").cloned())
        .unwrap_or_else(|| panic!("no frontend 'f' in {j}"))
}

/// 10 connections held open are served, the 11th is reset without a
/// response (and counted), and once 3 close a new one is served again.
async fn assert_ten_per_source(gw: &Gateway, stats_addr: SocketAddr) {
    let c = Client::http1();
    let mut open = Vec::new();
    for i in 1..=10 {
        let conn = served(gw.addr()).await;
        open.push(conn.unwrap_or_else(|| panic!("connection {i} was refused")));
    }
    assert!(
        served(gw.addr()).await.is_none(),
        "the 11th connection was served"
    );
    let f = stats(&c, stats_addr).await;
    assert_eq!(f["denied_conn"], 1, "{f}");
    // The 10 held open are still served on their connections.
    for (i, conn) in open.iter_mut().enumerate() {
        conn.send(GET_MODELS).await;
        let r = conn.response().await.expect("response");
        assert_eq!(r.status, 200, "held connection {i}");
    }
    // Closing 3: the gateway sees them end and takes back their conn_cur.
    open.truncate(7);
    let again = eventually(Duration::from_secs(10), || async {
        served(gw.addr()).await
    })
    .await;
    open.push(again);
    let f = stats(&c, stats_addr).await;
    assert!(
        f["conn_cur"].as_u64().is_some_and(|n| n >= 8),
        "8 client connections are open: {f}"
    );
}

#[tokio::test]
async fn conn_cur_limits_connections_per_source_in_mode_http() {
    let m = Mock::start("m", &[]);
    let (gw, st) = start(
        "llmgw.cfg",
        &cfg("http", "conn_cur", CONN_CUR_RULES, m.addr),
    );
    assert_ten_per_source(&gw, st).await;
}

#[tokio::test]
async fn conn_cur_limits_connections_per_source_in_mode_tcp() {
    // Layer 4: the mock's HTTP passes through as bytes.
    let m = Mock::start("m", &[]);
    let (gw, st) = start("llmgw.cfg", &cfg("tcp", "conn_cur", CONN_CUR_RULES, m.addr));
    assert_ten_per_source(&gw, st).await;
}

#[tokio::test]
async fn conn_cur_limit_in_native_toml_and_converted() {
    let m = Mock::start("m", &[]);
    let native = format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         tcp_request_rules = [\"connection track-sc0 src table per_src\", \"connection reject if {{ sc0_conn_cur gt 10 }}\"]\n\
         [[stick_table]]\nname = \"per_src\"\ntype = \"ip\"\nsize = 1000\nexpire = \"60s\"\nstore = [\"conn_cur\"]\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"m\"\naddress = \"{}\"\n",
        m.addr
    );
    let (gw, st) = start("llmgw.toml", &native);
    assert_ten_per_source(&gw, st).await;
    drop(gw);

    let converted = crate::haproxy::convert(&cfg("http", "conn_cur", CONN_CUR_RULES, m.addr));
    assert!(
        converted.contains("connection track-sc0 src")
            && converted.contains("connection reject if { sc0_conn_cur gt 10 }"),
        "{converted}"
    );
    let (gw, st) = start("llmgw.toml", &converted);
    assert_ten_per_source(&gw, st).await;
}

#[tokio::test]
async fn conn_rate_denies_exactly_the_connection_after_the_limit() {
    let m = Mock::start("m", &[]);
    for (file, config) in [
        (
            "llmgw.cfg",
            cfg(
                "http",
                "conn_rate(60s)",
                "    tcp-request connection track-sc0 src\n    tcp-request connection reject if { sc_conn_rate(0) gt 5 }\n",
                m.addr,
            ),
        ),
        (
            "llmgw.toml",
            format!(
                "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
                 tcp_request_rules = [\"connection track-sc0 src table r\", \"connection reject if {{ sc0_conn_rate gt 5 }}\"]\n\
                 [[stick_table]]\nname = \"r\"\ntype = \"ip\"\nsize = 1000\nstore = [\"conn_rate(60s)\"]\n\
                 [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"m\"\naddress = \"{}\"\n",
                m.addr
            ),
        ),
    ] {
        let (gw, st) = start(file, &config);
        // One at a time, each closed before the next: only the rate counts.
        for i in 1..=5 {
            let conn = served(gw.addr()).await;
            assert!(conn.is_some(), "{file}: connection {i} was refused");
        }
        assert!(
            served(gw.addr()).await.is_none(),
            "{file}: the 6th connection was served"
        );
        let f = stats(&Client::http1(), st).await;
        assert_eq!(f["denied_conn"], 1, "{file}: {f}");
    }
}

/// Requests on a tracked connection count on the connection's entry, on
/// the HTTP/1 engine (raw HTTP/1.1) and on the general path (h2c); the
/// request's own `http-request track-sc0 src` finds the slot taken and
/// does not count the request as another connection.
#[tokio::test]
async fn requests_count_on_the_connection_entry_on_both_paths() {
    let m = Mock::start("m", &[]);
    let rules = "    tcp-request connection track-sc0 src\n\
                 http-request track-sc0 src\n\
                 http-request deny deny_status 429 if { sc0_conn_cur gt 1 }\n\
                 http-request deny deny_status 429 if { sc0_http_req_cnt gt 3 }\n";
    let store = "conn_cur,http_req_cnt";

    // HTTP/1.1 on one connection: 3 requests pass, the 4th is denied.
    let (gw, _st) = start("llmgw.cfg", &cfg("http", store, rules, m.addr));
    let mut c = RawClient::connect(gw.addr()).await;
    for i in 1..=3 {
        c.send(GET_MODELS).await;
        let r = c.response().await.expect("response");
        assert_eq!(r.status, 200, "http1 request {i}: {}", r.body_text());
    }
    c.send(GET_MODELS).await;
    let r = c.response().await.expect("response");
    assert_eq!(r.status, 429, "http1 request 4");
    drop(c);
    drop(gw);

    // h2c: one connection, the general path.
    let (gw, _st) = start("llmgw.cfg", &cfg("http", store, rules, m.addr));
    let h2 = Client::h2c();
    for i in 1..=3 {
        let r = h2.get(&gw.url("/v1/models")).await;
        assert_eq!(r.status, 200, "h2c request {i}: {}", r.text());
    }
    let r = h2.get(&gw.url("/v1/models")).await;
    assert_eq!(r.status, 429, "h2c request 4");
}

/// What a client sees of the 10-connection limit: 10 held connections
/// served, the 11th closed without a response, and once 3 are closed a new
/// one served again.
async fn ten_per_source_outcomes(addr: SocketAddr) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut open = Vec::new();
    for _ in 0..11 {
        match served(addr).await {
            Some(c) => {
                out.push("served");
                open.push(c);
            }
            None => out.push("closed without a response"),
        }
    }
    open.truncate(7);
    // HAProxy and llmgw both take a moment to see the 3 closes.
    let again = eventually(Duration::from_secs(10), || async { served(addr).await }).await;
    out.push("served again after 3 closed");
    drop(again);
    out
}

/// The same `.cfg` under HAProxy and llmgw: the same connections served
/// and refused.
#[tokio::test]
async fn same_connection_limit_as_haproxy() {
    let m = Mock::start("m", &[]);
    let port = crate::differential::free_port();
    let config = cfg("http", "conn_cur", CONN_CUR_RULES, m.addr)
        .replace("bind 127.0.0.1:0", &format!("bind 127.0.0.1:{port}"));
    let gw = llmgw_e2e::start_cfg(&config, 1, &["--bind", "127.0.0.1:0"]);
    let ours = ten_per_source_outcomes(gw.addr()).await;
    drop(gw);

    let _hap = crate::differential::start_haproxy(&config);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(drop)
    })
    .await;
    // The probe's connection is closed: HAProxy takes back its conn_cur
    // long before the 11th connection below.
    let theirs = ten_per_source_outcomes(addr).await;
    assert_eq!(ours, theirs, "llmgw left, haproxy right");
    assert_eq!(ours[10], "closed without a response");
}
