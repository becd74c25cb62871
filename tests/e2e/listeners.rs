//! Listeners: IPv6, TLS with certificates chosen by SNI and ALPN h2 or
//! http/1.1, h2c, HTTP/2 to upstreams, PROXY protocol, and maxconn holding
//! connections in the backlog rather than dropping them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use llmgw_e2e::{one_backend, send_on, tls_connect, Cert, Client, Gateway, Mock, TempDir};
use tokio::io::AsyncWriteExt;

fn req(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", "gw.test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn ipv6_listener() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &format!("[[frontend]]\nname = \"f\"\nbind = [\"[::1]:0\"]\ndefault_backend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\n", m.addr),
        1,
    );
    assert!(gw.addr().is_ipv6());
    let r = Client::http1()
        .get(&format!("http://{}/v1/models", gw.addr()))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tls_sni_picks_the_certificate_and_alpn_picks_the_protocol() {
    let m = Mock::start("m", &[]);
    let dir = TempDir::new("tls");
    let a = Cert::generate(dir.path(), "a", &["a.test"]);
    let b = Cert::generate(dir.path(), "b", &["b.test", "*.b.test"]);
    let cfg = format!(
        r#"
[[frontend]]
name = "f"
default_backend = "b"
[[frontend.bind]]
address = "127.0.0.1:0"
tls = {{ certs = [ {{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }} ] }}
[[backend]]
name = "b"
[[backend.server]]
name = "s"
address = "{}"
"#,
        a.cert_path.display(),
        a.key_path.display(),
        b.cert_path.display(),
        b.key_path.display(),
        m.addr
    );
    let gw = Gateway::start(&cfg, 1);
    let roots = [&a.der, &b.der];

    let (s, alpn, leaf) = tls_connect(gw.addr(), "a.test", &roots, &[b"h2", b"http/1.1"]).await;
    assert_eq!(leaf, a.der.to_vec());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let r = send_on(s, true, req("/v1/models")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);

    let (s, alpn, leaf) = tls_connect(gw.addr(), "x.b.test", &roots, &[b"http/1.1"]).await;
    assert_eq!(leaf, b.der.to_vec(), "wildcard SNI must choose b");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let r = send_on(s, false, req("/v1/models")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_11);

    // An unknown name gets the first (default) certificate.
    let (_, _, leaf) = tls_connect(gw.addr(), "a.test", &roots, &[]).await;
    assert_eq!(leaf, a.der.to_vec());
}

#[tokio::test]
async fn h2c_clients_and_h2_upstreams() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &format!("[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\nproto = \"h2\"\n", m.addr),
        1,
    );
    let r = Client::h2c().get(&gw.url("/echo/x")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(
        r.json()["version"],
        "HTTP/2.0",
        "the upstream leg must be h2c"
    );
    let r = Client::http1().get(&gw.url("/echo/x")).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn proxy_protocol_gives_the_real_client_address() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &format!(
            "[[frontend]]\nname = \"f\"\ndefault_backend = \"b\"\nforwardfor = true\n[[frontend.bind]]\naddress = \"127.0.0.1:0\"\naccept_proxy = true\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\n",
            m.addr
        ),
        1,
    );
    // v1
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    let r = send_on(s, false, req("/echo/v1")).await;
    assert!(r.text().contains("\"203.0.113.7\""), "{}", r.text());
    // v2, IPv6
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    h.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
    s.write_all(&h).await.unwrap();
    let r = send_on(s, false, req("/echo/v2")).await;
    assert!(r.text().contains("\"2001:db8::7\""), "{}", r.text());
    // Without a header the connection is refused, not served.
    let s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(s);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    assert!(sender.send_request(req("/echo/none")).await.is_err());
}

#[tokio::test]
async fn maxconn_keeps_extra_connections_waiting_not_dropped() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(&one_backend("maxconn = 1", "", m.addr), 1);
    // The first connection holds the only slot (kept alive after a request).
    let s1 = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(s1);
    let (mut first, conn1) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let conn1 = tokio::spawn(conn1);
    assert_eq!(
        first
            .send_request(req("/v1/models"))
            .await
            .unwrap()
            .status(),
        200
    );

    // The second connects (the kernel completes the handshake) but is not
    // accepted: its request waits.
    let s2 = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let pending = tokio::spawn(send_on(s2, false, req("/v1/models")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pending.is_finished(),
        "second connection served beyond maxconn 1"
    );

    // Freeing the slot lets it through, without error.
    drop(first);
    conn1.abort();
    let r = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("never served")
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn tls_to_upstreams_is_verified_unless_told_otherwise() {
    // The upstream: another llmgw terminating TLS for "upstream.test" in
    // front of a mock.
    let m = Mock::start("m", &[]);
    let dir = TempDir::new("uptls");
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
    let front = |tls: &str| {
        Gateway::start(
            &format!(
                "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\ntls = {tls}\n",
                upstream.addr()
            ),
            1,
        )
    };
    let c = Client::http1();
    // Trusting its CA, with the right SNI: served.
    let gw = front(&format!(
        "{{ sni = \"upstream.test\", ca = \"{}\" }}",
        cert.cert_path.display()
    ));
    let r = c.get(&gw.url("/echo/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Webpki roots only: a self-signed certificate is refused.
    let gw = front("{ sni = \"upstream.test\" }");
    let r = c.get(&gw.url("/echo/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    // The wrong name is refused too, even with the CA.
    let gw = front(&format!(
        "{{ sni = \"other.test\", ca = \"{}\" }}",
        cert.cert_path.display()
    ));
    assert_eq!(c.get(&gw.url("/echo/x")).await.status, 502);
    // Only an explicit `verify = "none"` accepts it.
    let gw = front("{ verify = \"none\" }");
    assert_eq!(c.get(&gw.url("/echo/x")).await.status, 200);
}

#[test]
fn maxconn_beyond_the_file_limit_is_capped_with_a_warning() {
    let dir = TempDir::new("nofile");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[global]\nmaxconn = 100000\n[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"mock\"\n",
    )
    .unwrap();
    // A hard limit of 1000 open files cannot be raised by the process.
    let script = format!(
        "ulimit -n 1000 && exec {} run -c {}",
        llmgw_e2e::llmgw_bin().display(),
        cfg.display()
    );
    let mut p =
        llmgw_e2e::Proc::spawn_program(std::path::Path::new("/bin/sh"), &["-c", &script], &[]);
    p.wait_line("listening on");
    let err = p.stderr();
    assert!(err.contains("capped maxconn to 372"), "{err}");
}

#[tokio::test]
async fn a_silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let dir = TempDir::new("hs");
    let cert = Cert::generate(dir.path(), "c", &["gw.test"]);
    let gw = Gateway::start(
        &format!(
            "[defaults]\ntimeout = {{ handshake = \"300ms\" }}\n[[frontend]]\nname = \"f\"\ndefault_backend = \"b\"\n[[frontend.bind]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"mock\"\n",
            cert.cert_path.display(),
            cert.key_path.display()
        ),
        1,
    );
    // Connect and say nothing: the gateway must close, not wait forever.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf),
    )
    .await;
    assert!(
        closed.is_ok(),
        "connection still open long after the handshake timeout"
    );
    assert!(buf.is_empty());
}

/// TLS session resumption is on by default (a session cache and tickets,
/// as HAProxy), and off with `tickets = false, session_cache = 0` (HAProxy:
/// `no-tls-tickets` and `tune.ssl.cachesize 0`), so that a benchmark of full
/// handshakes measures full handshakes.
#[tokio::test]
async fn tls_resumption_is_on_by_default_and_can_be_turned_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let m = Mock::start("m", &[]);
    let dir = TempDir::new("tls-resume");
    let c = Cert::generate(dir.path(), "c", &["c.test"]);
    for (extra, resumes) in [("", true), (", tickets = false, session_cache = 0", false)] {
        let cfg = format!(
            "[[frontend]]\nname = \"f\"\ndefault_backend = \"b\"\n[[frontend.bind]]\n\
             address = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"{}\", key = \"{}\", alpn = [\"http/1.1\"]{extra} }}\n\
             [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\n",
            c.cert_path.display(),
            c.key_path.display(),
            m.addr
        );
        let gw = Gateway::start(&cfg, 1);
        // One client config, hence one session store, for both connections.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(c.der.clone()).expect("root");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let tcp = tokio::net::TcpStream::connect(gw.addr())
                .await
                .expect("tcp");
            let name = rustls_pki_types::ServerName::try_from("c.test").expect("sni");
            let mut tls = connector.connect(name, tcp).await.expect("handshake");
            kinds.push(tls.get_ref().1.handshake_kind());
            // A full exchange, so TLS 1.3 session tickets (sent after the
            // handshake) reach the client before the next connection.
            tls.write_all(b"GET /v1/models HTTP/1.1\r\nhost: c.test\r\nconnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut resp = Vec::new();
            let _ = tls.read_to_end(&mut resp).await;
            assert!(
                resp.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&resp)
            );
        }
        let want = if resumes {
            rustls::HandshakeKind::Resumed
        } else {
            rustls::HandshakeKind::Full
        };
        assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
        assert_eq!(kinds[1], Some(want), "{extra:?}");
    }
}
