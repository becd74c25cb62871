//! Every error the gateway makes itself: the right status, the OpenAI error
//! shape, and a process that keeps serving afterwards.

use http::Method;
use llmgw_e2e::{Client, Gateway, Mock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cfg(frontend_extra: &str, backend_extra: &str, addr: impl std::fmt::Display) -> String {
    format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\n{frontend_extra}\n[[backend]]\nname = \"b\"\n{backend_extra}\n[[backend.server]]\nname = \"s\"\naddress = \"{addr}\"\n"
    )
}

fn assert_openai_error(r: &llmgw_e2e::Resp, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["type"].is_string());
}

/// Sends raw bytes, returns everything the gateway answered until it closed.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_oversize_and_slow_requests() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &cfg(
            "default_backend = \"b\"\ntimeout = { http_request = \"400ms\" }",
            "",
            m.addr,
        ),
        1,
    );

    let r = raw(gw.addr(), b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("\"code\":\"bad_request\""), "{r}");

    let huge = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let r = raw(gw.addr(), huge.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(r.contains("headers_too_large"), "{r}");

    // Headers that never complete: 408 once `timeout http-request` passes.
    let r = raw(
        gw.addr(),
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("request_timeout"), "{r}");

    // The gateway is still fine.
    let r = Client::http1().get(&gw.url("/v1/models")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn no_route_is_404() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &cfg(
            "[[frontend.route]]\nbackend = \"b\"\npath_prefix = \"/v1/\"",
            "",
            m.addr,
        ),
        1,
    );
    let r = Client::http1().get(&gw.url("/admin")).await;
    assert_openai_error(&r, 404, "not_found");
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&cfg("default_backend = \"b\"", "", free), 1);
    let r = Client::http1()
        .post_json(&gw.url("/v1/chat/completions"), r#"{"model":"x"}"#)
        .await;
    assert_openai_error(&r, 502, "bad_gateway");
}

#[tokio::test]
async fn upstream_closing_without_answer_is_502() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(&cfg("default_backend = \"b\"", "", m.addr), 1);
    let r = Client::http1()
        .send(
            Method::GET,
            &gw.url("/v1/models"),
            &[("x-mock-fail", "close")],
            "",
        )
        .await;
    assert_openai_error(&r, 502, "bad_gateway");
}

#[tokio::test]
async fn no_usable_server_is_503_with_retry_after() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &cfg("default_backend = \"b\"", "", m.addr).replace("address =", "weight = 0\naddress ="),
        1,
    );
    let r = Client::http1().get(&gw.url("/v1/models")).await;
    assert_openai_error(&r, 503, "no_server_available");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn hanging_upstream_is_504_after_timeout_server() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(
        &cfg(
            "default_backend = \"b\"",
            "timeout = { server = \"500ms\" }",
            m.addr,
        ),
        1,
    );
    let r = Client::http1()
        .send(
            Method::POST,
            &gw.url("/v1/chat/completions"),
            &[("x-mock-fail", "hang")],
            r#"{"model":"x"}"#,
        )
        .await;
    assert_openai_error(&r, 504, "upstream_timeout");
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let m = Mock::start("m", &[]);
    let gw = Gateway::start(&cfg("default_backend = \"b\"", "", m.addr), 1);
    let r = Client::http1()
        .send(
            Method::POST,
            &gw.url("/v1/chat/completions"),
            &[("x-mock-fail", "status:429"), ("x-mock-retry-after", "7")],
            r#"{"model":"x"}"#,
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-mock-server"), Some("m"));
}
