use std::path::Path;

use super::*;
use crate::config::haproxy::{load_str, Options};
use crate::config::{Config, Mode};

fn load(text: &str) -> Config {
    match load_str("t.cfg", text, Path::new("."), Options::default()) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}"),
    }
}

const CFG: &str = "
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend sni
    bind 127.0.0.1:1
    tcp-request inspect-delay 2s
    acl internal src 10.0.0.0/8
    tcp-request content reject if { req.ssl_sni -i -m end .blocked.test }
    tcp-request content accept if { req.ssl_hello_type 1 }
    tcp-request content reject unless internal
    use_backend a if { req.ssl_sni -i a.test }
    use_backend b if { req_ssl_sni -m beg b. }
    default_backend c
backend a
    server s 127.0.0.1:2
backend b
    balance source
    server s 127.0.0.1:3
backend c
    balance uri
    timeout tunnel 1h
    server s 127.0.0.1:4
";

fn facts<'a>(src: &str, sni: Option<&'a str>, hello: Option<u8>) -> Facts<'a> {
    Facts {
        src: src.parse().expect("ip"),
        sni,
        hello_type: hello,
        tracked: None,
    }
}

#[test]
fn content_rules_first_match_decides() {
    let c = load(CFG);
    let fe = &c.frontends[0];
    assert_eq!(fe.mode, Mode::Tcp);
    assert!(fe.needs_content());
    // A ClientHello is accepted before the src rule is reached...
    assert!(accepted(fe, &facts("1.2.3.4", Some("a.test"), Some(1))));
    // ...unless an earlier reject matches (case-insensitively).
    assert!(!accepted(
        fe,
        &facts("10.1.1.1", Some("X.Blocked.TEST"), Some(1))
    ));
    // Not TLS: only internal clients pass.
    assert!(!accepted(fe, &facts("1.2.3.4", None, None)));
    assert!(accepted(fe, &facts("10.1.1.1", None, None)));
}

#[test]
fn routes_on_sni() {
    let c = load(CFG);
    let fe = &c.frontends[0];
    let name = |f: Facts| select(fe, &f).map(|i| c.backends[i].name.as_str());
    assert_eq!(name(facts("1.2.3.4", Some("A.test"), Some(1))), Some("a"));
    assert_eq!(
        name(facts("1.2.3.4", Some("b.example"), Some(1))),
        Some("b")
    );
    assert_eq!(name(facts("1.2.3.4", Some("c.test"), Some(1))), Some("c"));
    assert_eq!(name(facts("1.2.3.4", None, None)), Some("c"));
}

#[test]
fn tcp_backends_and_timeouts() {
    let c = load(CFG);
    assert!(c.backends.iter().all(|b| b.mode == Mode::Tcp));
    // `balance uri` has no meaning in tcp: round robin, as HAProxy.
    assert_eq!(c.backends[2].balance, crate::config::Balance::RoundRobin);
    let fe = &c.frontends[0];
    assert_eq!(idle_timeout(fe, &c.backends[0]), Duration::from_secs(5));
    assert_eq!(idle_timeout(fe, &c.backends[2]), Duration::from_secs(3600));
}

#[test]
fn no_default_backend_closes() {
    let c = load(
        "frontend f\n mode tcp\n bind 127.0.0.1:1\n use_backend a if { src 10.0.0.0/8 }\nbackend a\n mode tcp\n server s 127.0.0.1:2\n",
    );
    assert_eq!(select(&c.frontends[0], &facts("1.2.3.4", None, None)), None);
    assert_eq!(
        select(&c.frontends[0], &facts("10.0.0.1", None, None)),
        Some(0)
    );
}
