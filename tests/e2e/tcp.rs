//! `mode tcp` end to end: plain bytes forwarded to an HTTP mock, TLS passed
//! through and routed on the ClientHello's SNI (the client's session ends
//! at the upstream whose certificate it receives), `tcp-request content
//! reject` and the PROXY protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use llmgw_e2e::{start_cfg, Cert, Client, Gateway, Mock, TempDir};
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
    let dir = TempDir::new("tcp-up");
    let cert = Cert::generate(dir.path(), name, &[name]);
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
