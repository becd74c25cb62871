//! `mode tcp` end to end: plain bytes forwarded to an HTTP mock, TLS passed
//! through and routed on the ClientHello's SNI (the client's session ends
//! at the upstream whose certificate it receives), `tcp-request content
//! reject` and the PROXY protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use llmgw_e2e::{eventually, start_cfg, Cert, Client, Gateway, Mock, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn tcp_frontend_forwards_http_bytes() {
    let mock = Mock::start("tcp-m", &[]);
    let gw = start_cfg(
        &format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend f\n    bind 127.0.0.1:0\n    maxconn 10\n    default_backend b\n\
             backend b\n    balance source\n    server s {}\n",
            mock.addr
        ),
        1,
        &[],
    );
    let c = Client::http1();
    for _ in 0..3 {
        let r = c.get(&gw.url("/echo/x")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-server"), Some("tcp-m"));
        // Bytes pass unchanged: the gateway adds no header of its own.
        assert!(r.header("x-request-id").is_none());
    }
}

/// An upstream llmgw terminating TLS with its own certificate for `name`,
/// in front of its own mock.
struct TlsUpstream {
    cert: Cert,
    gw: Gateway,
    _mock: Mock,
    _dir: TempDir,
}

fn tls_upstream(name: &str) -> TlsUpstream {
    tls_upstream_for(name, &[name])
}

fn tls_upstream_for(name: &str, names: &[&str]) -> TlsUpstream {
    let dir = TempDir::new("tcp-up");
    let cert = Cert::generate(dir.path(), name, names);
    let pem = dir.path().join(format!("{name}.pem"));
    let bundle = std::fs::read_to_string(&cert.cert_path).expect("cert")
        + &std::fs::read_to_string(&cert.key_path).expect("key");
    std::fs::write(&pem, bundle).expect("write pem");
    let mock = Mock::start(name, &[]);
    let gw = start_cfg(
        &format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             frontend f\n    bind 127.0.0.1:0 ssl crt {}\n    default_backend b\n\
             backend b\n    server s {}\n",
            pem.display(),
            mock.addr
        ),
        1,
        &[],
    );
    TlsUpstream {
        cert,
        gw,
        _mock: mock,
        _dir: dir,
    }
}

/// A TLS handshake through `addr` with `sni`, trusting `roots`: the
/// server's leaf certificate and the stream, or the handshake error.
async fn handshake(
    addr: SocketAddr,
    sni: &str,
    roots: &[&rustls_pki_types::CertificateDer<'static>],
) -> Result<
    (
        Vec<u8>,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ),
    std::io::Error,
> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).expect("sni");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((leaf, tls))
}

#[tokio::test]
async fn sni_passthrough_routes_to_the_right_upstream() {
    let a = tls_upstream("a.test");
    let b = tls_upstream("b.test");
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend sni\n    bind 127.0.0.1:0\n    tcp-request inspect-delay 5s\n\
         \x20   tcp-request content reject if {{ req.ssl_sni -i blocked.test }}\n\
         \x20   tcp-request content accept if {{ req.ssl_hello_type 1 }}\n\
         \x20   tcp-request content reject\n\
         \x20   use_backend up_a if {{ req.ssl_sni -i a.test }}\n\
         \x20   use_backend up_b if {{ req_ssl_sni -i b.test }}\n\
         backend up_a\n    server a {}\n\
         backend up_b\n    balance source\n    server b {}\n",
        a.gw.addr(),
        b.gw.addr()
    );
    let gw = start_cfg(&cfg, 1, &[]);
    sni_routing(gw.addr(), &a, &b).await;
    // `llmgw convert` gives native TOML that serves the same.
    let toml = crate::haproxy::convert(&cfg);
    assert!(toml.contains("mode = \"tcp\""), "{toml}");
    let native = Gateway::start(&toml, 1);
    sni_routing(native.addr(), &a, &b).await;
}

async fn sni_routing(addr: SocketAddr, a: &TlsUpstream, b: &TlsUpstream) {
    let roots = [&a.cert.der, &b.cert.der];
    for (sni, up) in [("a.test", a), ("b.test", b)] {
        let (leaf, tls) = handshake(addr, sni, &roots)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(leaf, up.cert.der.to_vec(), "{sni}: wrong certificate");
        let req = http::Request::builder()
            .uri("/echo/x")
            .header("host", sni)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let r = llmgw_e2e::send_on(tls, false, req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-mock-server"), Some(sni));
    }
    // A rejected name, and one no rule routes (no default backend): closed.
    for sni in ["blocked.test", "other.test"] {
        assert!(
            handshake(addr, sni, &roots).await.is_err(),
            "{sni} must be closed"
        );
    }
    // Not TLS at all: rejected by the last rule, closed without an answer.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "expected a close, got {:?}", &buf[..n]);
}

#[tokio::test]
async fn accept_proxy_and_src_rules() {
    let mock = Mock::start("tcp-p", &[]);
    let gw = start_cfg(
        &format!(
            "frontend f\n    mode tcp\n    bind 127.0.0.1:0 accept-proxy\n\
             \x20   tcp-request content reject unless {{ src 10.0.0.0/8 }}\n    default_backend b\n\
             backend b\n    mode tcp\n    server s {}\n",
            mock.addr
        ),
        1,
        &[],
    );
    for (src, served) in [("10.1.2.3", true), ("192.0.2.1", false)] {
        let mut s = tokio::net::TcpStream::connect(gw.addr())
            .await
            .expect("connect");
        let msg = format!(
            "PROXY TCP4 {src} 127.0.0.1 4000 80\r\nGET /echo/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        );
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out);
        if served {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(
                text.to_ascii_lowercase().contains("x-mock-server: tcp-p"),
                "{text}"
            );
        } else {
            assert!(out.is_empty(), "{text}");
        }
    }
}

/// What a client gets through a `mode tcp` frontend, one line per attempt:
/// plain HTTP requests (which server answered) and TLS handshakes with
/// several SNIs (whose certificate, which server answered, or closed).
async fn tcp_outcomes(addr: SocketAddr, a: &TlsUpstream, b: &TlsUpstream) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..6 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET /echo/{i} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let server = text
            .lines()
            .find_map(|l| l.strip_prefix("x-mock-server: "))
            .unwrap_or("closed")
            .trim()
            .to_owned();
        out.push(format!("plain {i} -> {server}"));
    }
    let roots = [&a.cert.der, &b.cert.der];
    for sni in ["a.test", "b.test", "x.b.test", "blocked.test", "other.test"] {
        let got = match handshake(addr, sni, &roots).await {
            Err(_) => "closed".to_owned(),
            Ok((leaf, tls)) => {
                let cert = if leaf == a.cert.der.to_vec() {
                    "a"
                } else {
                    "b"
                };
                let req = http::Request::builder()
                    .uri("/echo/x")
                    .header("host", sni)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                let r = llmgw_e2e::send_on(tls, false, req).await;
                format!(
                    "cert {cert}, {} from {}",
                    r.status,
                    r.header("x-mock-server").unwrap_or("-")
                )
            }
        };
        out.push(format!("tls {sni} -> {got}"));
    }
    out
}

/// The same `mode tcp` `.cfg` under HAProxy and llmgw: same server for
/// each plain connection (static-rr), same upstream (by certificate) for
/// each SNI, and the same connections closed.
#[tokio::test]
async fn same_tcp_cfg_same_outcomes_as_haproxy() {
    let a = tls_upstream("a.test");
    let b = tls_upstream_for("b.test", &["b.test", "x.b.test"]);
    let mocks: Vec<Mock> = (1..=3)
        .map(|i| Mock::start(&format!("p{i}"), &[]))
        .collect();
    let port = crate::differential::free_port();
    let cfg = format!(
        "global\n    maxconn 100\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
         frontend sni\n    bind 127.0.0.1:{port}\n    tcp-request inspect-delay 2s\n\
         \x20   tcp-request content reject if {{ req.ssl_sni -i blocked.test }}\n\
         \x20   tcp-request content accept if {{ req.ssl_hello_type 1 }}\n\
         \x20   tcp-request content accept if {{ src 127.0.0.0/8 }}\n\
         \x20   tcp-request content reject\n\
         \x20   use_backend up_a if {{ req.ssl_sni -i a.test }}\n\
         \x20   use_backend up_b if {{ req_ssl_sni -m end b.test }}\n\
         \x20   use_backend plain if !{{ req.ssl_hello_type 1 }}\n\
         backend up_a\n    server a {}\n\
         backend up_b\n    balance source\n    server b {}\n\
         backend plain\n    balance static-rr\n\
         \x20   server p1 {} weight 3\n    server p2 {} weight 1\n    server p3 {} weight 2\n",
        a.gw.addr(),
        b.gw.addr(),
        mocks[0].addr,
        mocks[1].addr,
        mocks[2].addr,
    );
    let gw = start_cfg(&cfg, 1, &["--bind", "127.0.0.1:0"]);
    let ours = tcp_outcomes(gw.addr(), &a, &b).await;

    let _hap = crate::differential::start_haproxy(&cfg);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Ready when a TLS session to `a` goes through: a bare connect would
    // itself be routed (to `plain`) and shift its static-rr order.
    let roots = [&a.cert.der, &b.cert.der];
    eventually(Duration::from_secs(10), || async {
        handshake(addr, "a.test", &roots).await.ok().map(|_| ())
    })
    .await;
    let theirs = tcp_outcomes(addr, &a, &b).await;
    assert_eq!(ours, theirs, "llmgw left, haproxy right");
    // And the outcomes are the intended ones.
    assert_eq!(ours[6], "tls a.test -> cert a, 200 OK from a.test");
    assert_eq!(ours[8], "tls x.b.test -> cert b, 200 OK from b.test");
    assert_eq!(ours[9], "tls blocked.test -> closed");
    assert_eq!(ours[10], "tls other.test -> closed");
}

/// An idle connection is closed after the shorter of `timeout client` and
/// `timeout server`; a server that refuses the connection closes the
/// client's too.
#[tokio::test]
async fn idle_and_refused_connections_are_closed() {
    let mock = Mock::start("tcp-idle", &[]);
    let refused = crate::differential::free_port();
    let gw = start_cfg(
        &format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 300ms\n    timeout server 10s\n\
             frontend f\n    bind 127.0.0.1:0\n    default_backend b\n\
             frontend g\n    bind 127.0.0.1:0\n    default_backend dead\n\
             backend b\n    server s {}\n\
             backend dead\n    server s 127.0.0.1:{refused}\n",
            mock.addr
        ),
        2,
        &[],
    );
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(gw.addrs[0])
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed within 10s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        started.elapsed()
    );

    let mut s = tokio::net::TcpStream::connect(gw.addrs[1])
        .await
        .expect("connect");
    let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("closed within 10s")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// `maxconn` holds back `accept()` as for HTTP: with one slot taken, a
/// second client waits in the backlog and is served once the first leaves.
#[tokio::test]
async fn maxconn_waits_in_the_backlog() {
    let mock = Mock::start("tcp-max", &[]);
    let gw = start_cfg(
        &format!(
            "frontend f\n    mode tcp\n    bind 127.0.0.1:0\n    maxconn 1\n    default_backend b\n\
             backend b\n    mode tcp\n    server s {}\n",
            mock.addr
        ),
        1,
        &[],
    );
    // The first connection is proxied (its bytes reach the mock)...
    let mut first = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    first
        .write_all(b"GET /echo/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.expect("first answered");
    assert_eq!(&buf, b"HTTP/1.1 200");
    // ...and holds the only slot: the second is not served meanwhile.
    let mut second = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect (backlog)");
    second
        .write_all(b"GET /echo/2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waiting.is_err(), "served while the slot was taken");
    drop(first);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut out))
        .await
        .expect("served after the first left")
        .expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
