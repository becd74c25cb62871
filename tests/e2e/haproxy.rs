//! The HAProxy dialect end to end: the configuration corpus in
//! `tests/haproxy` checked against the outcomes written in each file, the
//! seed configuration of issue 4 (strict errors, lenient run, corrected
//! run), and `http-request` rules as a client sees them.

use std::process::Command;

use http::Method;
use llmgw_e2e::{llmgw_bin, root, start_cfg, Cert, Client, Gateway, Mock, TempDir};

/// `llmgw check [--lenient] -c FILE`: `None` when valid, else the error
/// lines (warnings and continuation lines left out) without the file name.
fn check(path: &std::path::Path, lenient: bool) -> Option<Vec<String>> {
    let mut cmd = Command::new(llmgw_bin());
    cmd.arg("check");
    if lenient {
        cmd.arg("--lenient");
    }
    let out = cmd.arg("-c").arg(path).output().expect("run llmgw check");
    if out.status.success() {
        return None;
    }
    let prefix = format!("{}:", path.display());
    Some(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|l| !l.contains(": warning: "))
            .map(str::to_owned)
            .collect(),
    )
}

fn expected(text: &str, key: &str) -> Option<Vec<String>> {
    if text.lines().any(|l| l == format!("# {key}: ok")) {
        return None;
    }
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("# {key}-error: ")))
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn corpus() {
    let dir = root().join("tests/haproxy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/haproxy")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "only {} configs in the corpus",
        files.len()
    );
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read cfg");
        let strict = expected(&text, "expect");
        let lenient = if text.contains("# expect-lenient") {
            expected(&text, "expect-lenient")
        } else {
            strict.clone()
        };
        for (mode, want, is_lenient) in [("strict", strict, false), ("lenient", lenient, true)] {
            let got = check(f, is_lenient);
            let ok = match (&want, &got) {
                (None, None) => true,
                // Expected lines may stop short of a multi-line message.
                (Some(w), Some(g)) => {
                    w.len() == g.len() && w.iter().zip(g).all(|(w, g)| g.starts_with(w.as_str()))
                }
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{} ({mode}): expected {want:?}, got {got:?}",
                    f.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The seed configuration, its servers and certificate pointed at local
/// test servers.
fn seed(mocks: &[&Mock], cert: &Cert, fixed: bool) -> String {
    let text = std::fs::read_to_string(root().join(if fixed {
        "tests/haproxy/21-seed-fixed.cfg"
    } else {
        "tests/haproxy/20-seed.cfg"
    }))
    .expect("seed");
    // HAProxy's crt is one PEM with the chain and the key.
    let pem = cert.cert_path.with_extension("pem");
    let bundle = std::fs::read_to_string(&cert.cert_path).expect("cert")
        + &std::fs::read_to_string(&cert.key_path).expect("key");
    std::fs::write(&pem, bundle).expect("write pem");
    // The runtime API socket goes next to the certificate, not to
    // /var/run.
    let sock = cert.cert_path.with_file_name("haproxy.sock");
    text.replace(
        "bind *:443",
        &format!("bind *:443 ssl crt {} alpn h2,http/1.1", pem.display()),
    )
    .replace("/var/run/haproxy.sock", &sock.to_string_lossy())
    .replace("10.0.1.10:8080", &mocks[0].addr.to_string())
    .replace("10.0.1.11:8080", &mocks[1].addr.to_string())
    .replace("10.0.1.12:8080", &mocks[2].addr.to_string())
}

async fn https_get(addr: std::net::SocketAddr, cert: &Cert) -> llmgw_e2e::Resp {
    let (tls, alpn, _) =
        llmgw_e2e::tls_connect(addr, "localhost", &[&cert.der], &[b"h2", b"http/1.1"]).await;
    let h2 = alpn.as_deref() == Some(b"h2");
    let req = http::Request::builder()
        .uri(if h2 {
            format!("https://localhost:{}/echo/x", addr.port())
        } else {
            "/echo/x".into()
        })
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    llmgw_e2e::send_on(tls, h2, req).await
}

#[tokio::test]
async fn seed_configuration_end_to_end() {
    let mocks = [
        Mock::start("openai", &[]),
        Mock::start("anthropic", &[]),
        Mock::start("vertex", &[]),
    ];
    let dir = TempDir::new("seed");
    let cert = Cert::generate(dir.path(), "llm", &["localhost"]);
    let m: Vec<&Mock> = mocks.iter().collect();

    // Strict: exactly the two faults, with their lines and fixes.
    let path = dir.path().join("seed.cfg");
    std::fs::write(&path, seed(&m, &cert, false)).expect("write");
    let errs = check(&path, false).expect("strict check must fail");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("19: stick table 'ratelimit' is not declared; fix: add a section 'backend ratelimit' containing 'stick-table type ip size 100k expire 30s store conn_rate(10s)'"), "{errs:?}");
    assert!(errs[1].starts_with("29: 'observe', 'error-limit' and 'on-error' are server options, not backend directives; fix: replace them with 'default-server observe layer7 error-limit 10 on-error mark-down'"), "{errs:?}");

    // Lenient: it runs, with a warning for each repair, and serves.
    let gw = start_cfg(
        &seed(&m, &cert, false),
        1,
        &["--lenient", "--bind", "127.0.0.1:0"],
    );
    let logs = gw.proc.stderr();
    for needle in [
        "stick table 'ratelimit' is not declared; created as",
        "'observe' is a server option",
        "'error-limit' is a server option",
        "'on-error' is a server option",
    ] {
        assert!(
            logs.contains(needle),
            "missing warning {needle:?} in\n{logs}"
        );
    }
    let r = https_get(gw.addr(), &cert).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-mock-server").is_some());
    drop(gw);

    // Corrected: strict check passes and it serves.
    std::fs::write(&path, seed(&m, &cert, true)).expect("write");
    assert_eq!(check(&path, false), None);
    let gw = start_cfg(&seed(&m, &cert, true), 1, &["--bind", "127.0.0.1:0"]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let r = https_get(gw.addr(), &cert).await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.header("x-mock-server").unwrap_or_default().to_owned());
    }
    // leastconn spreads sequential requests over the primaries.
    assert!(
        seen.contains("openai") && seen.contains("anthropic"),
        "{seen:?}"
    );
}

fn echoed<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default())
        .collect()
}

fn rules_cfg(a: &Mock, b: &Mock) -> String {
    format!(
        r#"
frontend f
    bind 127.0.0.1:0
    acl claude req.body,json_query('$.model') -m beg claude-
    acl internal src 10.0.0.0/8
    http-request return status 200 content-type text/plain string "healthy" if {{ path /healthz }}
    http-request deny if {{ path_beg /admin }}
    http-request deny deny_status 429 if {{ hdr(x-flood) -m found }}
    http-request set-header X-Gw llmgw
    http-request add-header X-Hop one
    http-request del-header X-Debug if !internal
    http-request replace-path ^/openai/(.*) /echo/\1
    http-request set-path /echo/models if {{ path /models }}
    http-response set-header X-Served-By llmgw
    use_backend anthropic if claude || {{ url_param(to) anthropic }}
    default_backend openai
backend openai
    option forwardfor
    http-request set-header X-Backend openai
    server a {}
backend anthropic
    http-response del-header x-mock-server
    server b {}
"#,
        a.addr, b.addr
    )
}

/// `llmgw convert` on a `.cfg` text.
pub(crate) fn convert(cfg: &str) -> String {
    let dir = TempDir::new("convert");
    let path = dir.path().join("in.cfg");
    std::fs::write(&path, cfg).expect("write");
    let out = Command::new(llmgw_bin())
        .arg("convert")
        .arg(&path)
        .output()
        .expect("convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test]
async fn http_request_rules_and_acl_routing() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let gw = start_cfg(&rules_cfg(&a, &b), 1, &[]);
    assert_rules(&gw).await;
}

/// The converted TOML serves the same rules the same way.
#[tokio::test]
async fn converted_toml_serves_the_same_rules() {
    let a = Mock::start("a", &[]);
    let b = Mock::start("b", &[]);
    let toml = convert(&rules_cfg(&a, &b));
    assert!(toml.contains("http_request_rules"), "{toml}");
    let gw = Gateway::start(&toml, 1);
    assert_rules(&gw).await;
}

/// The differential configuration (every balancing algorithm, ACL-routed
/// statuses) answers identically as `.cfg` and as converted TOML.
#[tokio::test]
async fn converted_toml_balances_the_same() {
    let mocks: Vec<Mock> = (1..=3)
        .map(|i| Mock::start(&format!("s{i}"), &[]))
        .collect();
    let cfg = crate::differential::config(1, &mocks);
    let gw = start_cfg(&cfg, 1, &["--bind", "127.0.0.1:0"]);
    let from_cfg = crate::differential::run(gw.addr()).await;
    drop(gw);
    let gw = Gateway::start_file(
        "llmgw.toml",
        &convert(&cfg),
        1,
        &["--bind", "127.0.0.1:0"],
        &[],
    );
    let from_toml = crate::differential::run(gw.addr()).await;
    assert_eq!(from_cfg, from_toml);
}

async fn assert_rules(gw: &Gateway) {
    let c = Client::http1();

    let r = c.get(&gw.url("/healthz")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "healthy"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    let r = c.get(&gw.url("/admin/x")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "denied");

    let r = c
        .send(Method::GET, &gw.url("/echo/x"), &[("x-flood", "1")], "")
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");

    let r = c
        .send(
            Method::GET,
            &gw.url("/openai/chat?q=1"),
            &[("x-debug", "1"), ("x-hop", "zero")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-mock-server"), Some("a"));
    assert_eq!(r.header("x-served-by"), Some("llmgw"));
    let e = r.json();
    assert_eq!(e["path"], "/echo/chat");
    assert_eq!(e["query"], "q=1");
    assert_eq!(echoed(&e, "x-gw"), ["llmgw"]);
    assert_eq!(echoed(&e, "x-hop"), ["zero", "one"]);
    assert_eq!(echoed(&e, "x-backend"), ["openai"]);
    assert!(echoed(&e, "x-debug").is_empty());
    assert_eq!(
        echoed(&e, "x-forwarded-for"),
        ["127.0.0.1"],
        "the backend's option forwardfor"
    );

    let r = c.get(&gw.url("/models")).await;
    assert_eq!(r.json()["path"], "/echo/models");

    // Routed on the body's model and on a query parameter.
    let r = c
        .post_json(
            &gw.url("/echo/m"),
            r#"{"model":"claude-3-opus","messages":[]}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-mock-server"),
        None,
        "anthropic's response rule removes it"
    );
    assert!(echoed(&r.json(), "x-backend").is_empty());
    let r = c
        .post_json(&gw.url("/echo/m"), r#"{"model":"gpt-4o","messages":[]}"#)
        .await;
    assert_eq!(r.header("x-mock-server"), Some("a"));
    let r = c.get(&gw.url("/echo/q?to=anthropic")).await;
    assert_eq!(r.header("x-mock-server"), None);
    assert!(echoed(&r.json(), "x-forwarded-for").is_empty());
    assert_eq!(r.status, 200);
}
