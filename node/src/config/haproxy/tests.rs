use super::*;

fn load(text: &str, lenient: bool) -> Result<Loaded, Diags> {
    load_str("t.cfg", text, Path::new("."), Options { lenient })
}

fn errors(text: &str) -> Vec<String> {
    load(text, false)
        .unwrap_err()
        .0
        .iter()
        .map(|d| d.to_string())
        .collect()
}

pub const SEED: &str = "global
    maxconn 100000
    stats socket /var/run/haproxy.sock mode 600
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option httplog
    option dontlognull
frontend llm_gateway
    bind *:443
    maxconn 50000
    # Rate limiting
    http-request track-sc0 src table ratelimit
    http-request deny deny_status 429 if { sc0_conn_rate gt 100 }
    default_backend llm_cluster
backend llm_cluster
    balance leastconn
    option httpchk GET /health
    server openai_proxy 10.0.1.10:8080 check inter 5s fall 3 rise 2
    server anthropic_proxy 10.0.1.11:8080 check inter 5s fall 3 rise 2
    server vertex_proxy 10.0.1.12:8080 check inter 5s fall 3 rise 2 backup
    # Circuit breaker pattern
    observe layer7
    error-limit 10
    on-error mark-down
";

#[test]
fn seed_strict_reports_exactly_the_two_faults() {
    assert_eq!(
        errors(SEED),
        vec![
            "t.cfg:15: stick table 'ratelimit' is not declared; fix: add a section 'backend ratelimit' containing 'stick-table type ip size 100k expire 30s store conn_rate(10s)'",
            "t.cfg:25: 'observe', 'error-limit' and 'on-error' are server options, not backend directives; fix: replace them with 'default-server observe layer7 error-limit 10 on-error mark-down' before the 'server' lines",
        ]
    );
}

#[test]
fn seed_lenient_repairs_with_warnings() {
    let l = load(SEED, true).unwrap();
    let c = &l.config;
    assert_eq!(c.stick_tables.len(), 1);
    assert_eq!(c.stick_tables[0].name, "ratelimit");
    assert_eq!(c.stick_tables[0].store, vec!["conn_rate(10s)"]);
    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::LeastConn);
    assert_eq!(b.opts.httpchk, Some(("GET".into(), "/health".into())));
    for s in &b.servers {
        assert!(
            s.opts.observe == Some(ObserveMode::Layer7) && s.opts.check,
            "{s:?}"
        );
        assert_eq!(s.opts.error_limit, Some(10));
        assert_eq!(s.opts.on_error.as_deref(), Some("mark-down"));
        assert_eq!(s.opts.inter, Some(Duration::from_secs(5)));
        assert_eq!((s.opts.fall, s.opts.rise), (Some(3), Some(2)));
    }
    assert!(b.servers[2].opts.backup);
    let f = &c.frontends[0];
    assert_eq!(f.maxconn, 50000);
    assert_eq!(c.global.maxconn, Some(100000));
    assert!(matches!(f.http_request[1].action, ReqAction::Deny(s) if s == 429));
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    for needle in [
        "t.cfg:15: warning: stick table 'ratelimit' is not declared; created as",
        "t.cfg:25: warning: 'observe' is a server option",
        "t.cfg:26: warning: 'error-limit' is a server option",
        "t.cfg:27: warning: 'on-error' is a server option",
    ] {
        assert!(w.iter().any(|x| x.starts_with(needle)), "{needle}\n{w:#?}");
    }
    assert!(
        !w.iter()
            .any(|x| x.contains("issue 6") || x.contains("issue 7")),
        "stick tables and the runtime API are in force: {w:#?}"
    );
    let sock = c.global.stats_socket.as_ref().expect("stats socket");
    assert_eq!(sock.path, Path::new("/var/run/haproxy.sock"));
    assert_eq!(sock.mode, Some(0o600));
    // HAProxy's default level.
    assert_eq!(sock.level, AccessLevel::Operator);
}

#[test]
fn stats_socket_options() {
    let base =
        "frontend f\n    bind :1\n    default_backend b\nbackend b\n    server a 127.0.0.1:1\n";
    let l = load(
        &format!(
            "global\n    stats timeout 1m\n    stats socket rt.sock mode 660 level admin\n{base}"
        ),
        false,
    )
    .unwrap();
    let s = l.config.global.stats_socket.unwrap();
    // Relative to the configuration's directory.
    assert_eq!(s.path, Path::new("./rt.sock"));
    assert_eq!(
        (s.mode, s.level, s.timeout),
        (Some(0o660), AccessLevel::Admin, Duration::from_secs(60))
    );
    // `stats timeout` after the socket applies too; no `mode`: the umask's.
    let l = load(
        &format!("global\n    stats socket /x.sock user haproxy\n    stats timeout 2s\n{base}"),
        false,
    )
    .unwrap();
    let s = l.config.global.stats_socket.unwrap();
    assert_eq!((s.mode, s.timeout), (None, Duration::from_secs(2)));
    assert!(l.warnings.iter().any(|w| w
        .to_string()
        .contains("option 'user' is accepted and not applied")));
    assert_eq!(
        errors(&format!("global\n    stats socket /x.sock mode 999 level root\n    stats socket /y.sock\n    stats timeout 0\n{base}")),
        vec![
            "t.cfg:2: stats socket 'mode' must be octal permission bits (e.g. 600), not '999'",
            "t.cfg:2: stats socket 'level' must be user, operator or admin",
            "t.cfg:3: only one 'stats socket' is supported (the runtime API listens on one path)",
            "t.cfg:4: 'stats timeout' needs a duration above 0 (e.g. 'stats timeout 10s')",
        ]
    );
}

#[test]
fn seed_corrected_passes_strict() {
    let fixed = SEED
        .replace("    observe layer7\n    error-limit 10\n    on-error mark-down\n", "")
        .replace("    server openai_proxy", "    default-server observe layer7 error-limit 10 on-error mark-down\n    server openai_proxy")
        + "backend ratelimit\n    stick-table type ip size 100k expire 30s store conn_rate(10s)\n";
    let l = load(&fixed, false).unwrap();
    assert!(l.config.backends[0]
        .servers
        .iter()
        .all(|s| s.opts.observe == Some(ObserveMode::Layer7)));
    assert_eq!(l.config.backends.len(), 2);
}

#[test]
fn routing_rules_and_defaults() {
    let text = r#"
defaults
    timeout server 30s
    option forwardfor
frontend f
    bind 127.0.0.1:0
    acl is_claude req.body,json_query('$.model') -m beg claude-
    acl api path_beg /v1/
    http-request set-header X-Gw llmgw
    http-request del-header X-Debug if !api
    http-request replace-path ^/old/(.*) /v1/\1
    http-request return status 200 content-type text/plain string "ok" if { path /health }
    use_backend anthropic if is_claude api
    default_backend openai
backend openai
    balance hdr(X-User)
    hash-type consistent
    server a 127.0.0.1:1 weight 3 maxconn 10
backend anthropic
    balance random(3)
    server b [::1]:2 ssl verify none sni str(api.anthropic.com)
"#;
    let c = load(text, false).unwrap().config;
    let f = &c.frontends[0];
    assert!(f.needs_model());
    assert!(f.forward_for.x_forwarded_for);
    assert_eq!(f.timeouts.server, Duration::from_secs(30));
    assert_eq!(f.routes[0].backend, 1);
    assert_eq!(f.default_backend, Some(0));
    assert_eq!(f.http_request.len(), 4);
    assert!(matches!(&f.http_request[2].action, ReqAction::ReplacePath(_, to) if to == "/v1/${1}"));
    assert_eq!(c.backends[0].hash_type, HashType::Consistent);
    assert_eq!(c.backends[0].servers[0].weight, 3);
    assert_eq!(c.backends[1].balance, Balance::Random(3));
    assert!(
        c.backends[0].x_forwarded_for,
        "defaults apply to backends too"
    );
    let tls = c.backends[1].servers[0].tls.as_ref().unwrap();
    assert!(!tls.verify);
    assert_eq!(tls.sni.as_deref(), Some("api.anthropic.com"));
}

#[test]
fn unsupported_and_lenient() {
    let text = "global\n    daemon\n    tune.ssl.default-dh-param 2048\nfrontend f\n    bind :8080\n    compression algo gzip\n    option http-server-close\n    default_backend b\nbackend b\n    server s 127.0.0.1:1 cookie x\n";
    assert_eq!(
        errors(text),
        vec![
            "t.cfg:2: directive 'daemon' is not supported (it only tunes HAProxy: --lenient ignores it)",
            "t.cfg:3: directive 'tune.ssl.default-dh-param' is not supported (it only tunes HAProxy: --lenient ignores it)",
            "t.cfg:6: directive 'compression' is not supported",
            "t.cfg:7: directive 'option http-server-close' is not supported (it only tunes HAProxy: --lenient ignores it)",
            "t.cfg:10: server option 'cookie' is not supported",
        ]
    );
    let lenient: Vec<String> = load(text, true)
        .unwrap_err()
        .0
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        lenient,
        vec![
            "t.cfg:6: directive 'compression' is not supported",
            "t.cfg:10: server option 'cookie' is not supported"
        ]
    );
}

#[test]
fn structural_errors() {
    let text = "maxconn 5\nfrontend f\n    bind 127.0.0.1:99999\n    default_backend nope\n    use_backend ghost if { path / }\n    server s 1.2.3.4:5\nbackend b\n    bind :80\n    server s 1.2.3.4:5\n    server s 1.2.3.4:6\npeers p\n    peer a 1.2.3.4:5\n";
    assert_eq!(
        errors(text),
        vec![
            "t.cfg:1: 'maxconn' appears before any section (global, defaults, frontend, backend or listen)",
            "t.cfg:3: invalid bind address '127.0.0.1:99999' (expected *:PORT, :::PORT, IP:PORT or [IPv6]:PORT)",
            "t.cfg:4: backend 'nope' does not exist",
            "t.cfg:5: backend 'ghost' does not exist",
            "t.cfg:6: 'server' is not allowed in a frontend (it belongs in a backend or listen)",
            "t.cfg:8: 'bind' is not allowed in a backend (it belongs in a frontend or listen)",
            "t.cfg:10: duplicate server name 's' in backend 'b'",
            "t.cfg:11: section 'peers' is not supported",
        ]
    );
}

#[test]
fn listen_is_frontend_and_backend() {
    let c = load("listen l\n    bind 127.0.0.1:0\n    balance static-rr\n    http-request set-header x-a 1\n    server s mock\n", false).unwrap().config;
    assert_eq!(c.frontends[0].default_backend, Some(0));
    assert_eq!(c.backends[0].balance, Balance::StaticRr);
    assert_eq!(c.frontends[0].http_request.len(), 1);
    assert!(c.backends[0].http_request.is_empty());
}

#[test]
fn bind_addresses() {
    assert_eq!(parse_bind_addr("*:80"), Ok("0.0.0.0:80".parse().unwrap()));
    assert_eq!(parse_bind_addr(":80"), Ok("0.0.0.0:80".parse().unwrap()));
    assert_eq!(parse_bind_addr(":::80"), Ok("[::]:80".parse().unwrap()));
    assert_eq!(parse_bind_addr("::1:80"), Ok("[::1]:80".parse().unwrap()));
    assert_eq!(
        parse_bind_addr("ipv4@127.0.0.1:80"),
        Ok("127.0.0.1:80".parse().unwrap())
    );
    assert!(parse_bind_addr("/run/x.sock").is_err());
}

#[test]
fn store_and_backrefs() {
    let store = |v: &str| crate::config::stick::parse_store(&crate::config::stick::split_store(v));
    assert_eq!(
        store("conn_rate(10s),gpc_rate(2,1m),conn_cur").map(|c| c.len()),
        Ok(4)
    );
    assert!(store("conn_rate").is_err());
    assert!(store("bogus").is_err());
    assert_eq!(backrefs(r"/v1/\1$"), "/v1/${1}$$");
}

#[test]
fn disabled_server_takes_no_traffic_and_deferred_settings_warn() {
    let l = load(
        "frontend f\n    bind :1\n    default_backend b\nbackend b\n    timeout queue 5s\n    server a 127.0.0.1:1 weight 5 disabled\n    server c 127.0.0.1:2 slowstart 10s\n",
        false,
    )
    .unwrap();
    // The weight stays: `disabled` starts the server in maintenance.
    let s = &l.config.backends[0].servers;
    assert_eq!((s[0].weight, s[0].opts.disabled), (5, true));
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(!w.iter().any(|x| x.contains("issue 5")), "{w:#?}");
}

#[test]
fn mode_tcp_ignores_http_rules_with_haproxy_warnings() {
    let l = load(
        "defaults
    mode tcp
frontend f
    bind 127.0.0.1:1
    option forwardfor
    http-request set-header x-a b
    http-request del-header x-b
    tcp-request content reject if { req.ssl_sni -i x.test }
    default_backend b
backend b
    balance hdr(host)
    timeout tunnel 30s
    server s 127.0.0.1:2
",
        false,
    )
    .expect("valid");
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    let has = |needle: &str| w.iter().any(|m| m.contains(needle));
    assert!(has("t.cfg:6: warning: 'http-request' rules ignored for frontend 'f' as they require HTTP mode"), "{w:?}");
    assert!(has("'option forwardfor' ignored for frontend 'f'"), "{w:?}");
    assert!(has("Layer 7 hash not possible for backend 'b'"), "{w:?}");
    assert!(has("without 'tcp-request inspect-delay'"), "{w:?}");
    // One warning per kind of rule, not per line.
    assert_eq!(
        w.iter()
            .filter(|m| m.contains("'http-request' rules"))
            .count(),
        1
    );
    let fe = &l.config.frontends[0];
    assert_eq!(fe.mode, Mode::Tcp);
    assert!(fe.http_request.is_empty());
    assert!(!fe.forward_for.x_forwarded_for);
    let be = &l.config.backends[0];
    assert_eq!(be.balance, Balance::RoundRobin);
    assert!(be.timeouts.tunnel_set);
    assert_eq!(be.timeouts.tunnel, Duration::from_secs(30));
}

#[test]
fn nbthread_is_bounded_as_in_haproxy_2_6() {
    let cfg = |n: &str| {
        format!("global\n    nbthread {n}\ndefaults\n    mode http\nlisten l\n    bind 127.0.0.1:0\n    server s mock\n")
    };
    assert_eq!(load(&cfg("64"), false).unwrap().config.global.nbthread, 64);
    let bad = "t.cfg:2: 'nbthread' needs a number of threads from 1 to 64";
    for n in ["0", "65", "-1", "two"] {
        assert_eq!(errors(&cfg(n)), [bad], "nbthread {n}");
    }
}

#[test]
fn http_reuse_keeps_or_disables_the_pool() {
    let cfg = |reuse: &str| {
        format!("defaults\n    mode http\n    {reuse}\nlisten l\n    bind 127.0.0.1:0\n    server s mock\n")
    };
    let pooled = load(&cfg("http-reuse always"), false).unwrap().config;
    // As HAProxy's default `pool-max-conn -1`: no limit.
    assert_eq!(pooled.backends[0].pool_max_idle, NO_POOL_LIMIT);
    let safe = load(&cfg("http-reuse safe"), false).unwrap().config;
    assert_eq!(safe.backends[0].pool_max_idle, NO_POOL_LIMIT);
    let never = load(&cfg("http-reuse never"), false).unwrap().config;
    assert_eq!(never.backends[0].pool_max_idle, 0);
    // A server's own limit, HAProxy's `pool-max-conn` (-1: none).
    let opts = |opt: &str| {
        let text = format!(
            "defaults\n    mode http\nlisten l\n    bind 127.0.0.1:0\n    server s mock {opt}\n"
        );
        load(&text, false).map(|l| l.config.backends[0].servers[0].opts.clone())
    };
    let pool_max_conn = |opt: &str| opts(opt).unwrap().pool_max_conn;
    assert_eq!(pool_max_conn(""), None);
    assert_eq!(pool_max_conn("pool-max-conn 0"), Some(0));
    assert_eq!(pool_max_conn("pool-max-conn 10"), Some(10));
    assert_eq!(pool_max_conn("pool-max-conn -1"), Some(NO_POOL_LIMIT));
    // How often long-idle pooled connections are thinned out (0: never),
    // and below how many idle ones threads stop taking over each other's.
    let purge = |opt: &str| opts(opt).unwrap().pool_purge_delay;
    assert_eq!(purge(""), None);
    assert_eq!(purge("pool-purge-delay 10s"), Some(Duration::from_secs(10)));
    assert_eq!(purge("pool-purge-delay 0"), Some(Duration::ZERO));
    assert_eq!(opts("").unwrap().pool_low_conn, None);
    assert_eq!(opts("pool-low-conn 4").unwrap().pool_low_conn, Some(4));
    assert_eq!(
        errors("defaults\n    mode http\nlisten l\n    bind 127.0.0.1:0\n    server s mock pool-low-conn -1\n"),
        ["t.cfg:5: 'pool-low-conn' needs a number of connections, not '-1'"]
    );
    assert_eq!(
        errors("defaults\n    mode http\nlisten l\n    bind 127.0.0.1:0\n    server s mock pool-purge-delay soon\n").len(),
        1
    );
    assert_eq!(
        errors("defaults\n    mode http\nlisten l\n    bind 127.0.0.1:0\n    server s mock pool-max-conn -2\n"),
        ["t.cfg:5: 'pool-max-conn' needs -1 (no limit) or a number of connections, not '-2'"]
    );
    assert_eq!(
        errors(&cfg("http-reuse sometimes")),
        vec!["t.cfg:3: 'http-reuse' takes one of never, safe, aggressive, always"]
    );
    assert_eq!(
        errors("frontend f\n    bind 127.0.0.1:0\n    http-reuse always\n"),
        vec!["t.cfg:3: 'http-reuse' is not allowed in a frontend (it belongs in a backend, listen or defaults)"]
    );
}

#[test]
fn health_checks_compile_to_the_model() {
    let l = load(
        "defaults
    timeout check 3s
backend b
    option httpchk GET /v1/models
    http-check send hdr Host api.example.com hdr x-probe 1
    http-check expect status 200-299,404
    option allbackups
    default-server inter 1s fall 2 rise 4
    server a 10.0.0.1:443 check ssl verify none fastinter 200ms downinter 5s slowstart 30s
    server c 10.0.0.2:80 check port 8081 addr 10.0.0.9 check-ssl observe layer7 error-limit 5 on-error sudden-death cooldown-429 2s
    server d 10.0.0.3:80 check backup weight 0
frontend f
    bind :1
    default_backend b
",
        false,
    )
    .unwrap();
    let b = &l.config.backends[0];
    assert!(b.opts.allbackups);
    assert_eq!(b.opts.timeout_check, Some(Duration::from_secs(3)));
    let c = &b.opts.check;
    assert_eq!(c.kind, CheckKind::Http);
    assert_eq!((c.method.as_str(), c.path.as_str()), ("GET", "/v1/models"));
    assert_eq!(
        c.host.as_ref().map(|h| h.to_str().unwrap()),
        Some("api.example.com")
    );
    assert_eq!(c.headers.len(), 1);
    assert!(
        matches!(&c.expect, Some(Expect { negate: false, test: ExpectTest::Status(l) }) if l == &vec![(200, 299), (404, 404)])
    );
    let (a, cc, d) = (&b.servers[0].opts, &b.servers[1].opts, &b.servers[2].opts);
    assert!(a.check && cc.check && d.check);
    assert_eq!(
        (a.inter, a.fall, a.rise),
        (Some(Duration::from_secs(1)), Some(2), Some(4))
    );
    assert_eq!(a.fastinter, Some(Duration::from_millis(200)));
    assert_eq!(a.downinter, Some(Duration::from_secs(5)));
    assert_eq!(a.slowstart, Some(Duration::from_secs(30)));
    assert_eq!(
        (cc.port, cc.addr.as_deref(), cc.check_ssl),
        (Some(8081), Some("10.0.0.9"), Some(true))
    );
    assert_eq!(cc.observe, Some(ObserveMode::Layer7));
    assert_eq!(
        (cc.error_limit, cc.on_error.as_deref()),
        (Some(5), Some("sudden-death"))
    );
    assert_eq!(cc.cooldown_429, Some(Duration::from_secs(2)));
    assert!(d.backup);
    assert_eq!(b.servers[2].weight, 0);
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(!w.iter().any(|x| x.contains("issue 5")), "{w:#?}");
}

#[test]
fn check_without_httpchk_is_tcp_and_http_check_rules_warn() {
    let l = load(
        "frontend f\n    bind :1\n    default_backend b\nbackend b\n    http-check expect status 200\n    server a 10.0.0.1:80 check\n",
        false,
    )
    .unwrap();
    assert_eq!(l.config.backends[0].opts.check.kind, CheckKind::Tcp);
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(w.iter().any(|x| x.starts_with("t.cfg:4: warning: backend 'b': 'http-check' rules are ignored without 'option httpchk'")), "{w:#?}");
    // HAProxy's own default request.
    let l = load("frontend f\n    bind :1\n    default_backend b\nbackend b\n    option httpchk\n    server a 10.0.0.1:80 check\n", false).unwrap();
    let c = &l.config.backends[0].opts.check;
    assert_eq!(
        (c.kind, c.method.as_str(), c.path.as_str()),
        (CheckKind::Http, "OPTIONS", "/")
    );
}

#[test]
fn bad_health_values_are_file_line_errors() {
    let text = "frontend f
    bind :1
    default_backend b
backend b
    option httpchk GET health
    http-check expect status 2xx
    http-check expect rstring (
    http-check send meth GET uri /x hdr
    http-check expect body foo
    server a 10.0.0.1:80 check fall 0
    server b2 10.0.0.1:80 check rise 0 inter 0s
    server c 10.0.0.1:80 check port 0
    server d 10.0.0.1:80 check error-limit 0 observe layer9
    server e 10.0.0.1:80 check on-error explode
    server g 10.0.0.1:80 check inter soon
    server h 10.0.0.1:80 check addr not_a/host
";
    assert_eq!(
        errors(text),
        vec![
            "t.cfg:5: 'option httpchk': the URI must be a path starting with '/', not 'health'",
            "t.cfg:6: invalid status '2xx' in '2xx' (expected 100..599)",
            "t.cfg:7: invalid regex '(': regex parse error:\n    (\n    ^\nerror: unclosed group",
            "t.cfg:8: 'http-check send hdr' needs a value",
            "t.cfg:9: 'http-check expect body' is not supported; 'http-check expect' needs [!] status|rstatus|string|rstring|hdr and a value",
            "t.cfg:10: 'fall' must be at least 1",
            "t.cfg:11: 'rise' must be at least 1",
            "t.cfg:11: 'inter' must be more than 0",
            "t.cfg:12: 'port' needs a port number 1..65535, not '0'",
            "t.cfg:13: 'error-limit' must be at least 1",
            "t.cfg:13: 'observe' must be layer4 or layer7, not 'layer9'",
            "t.cfg:14: 'on-error' must be fastinter, fail-check, sudden-death or mark-down, not 'explode'",
            "t.cfg:15: 'inter': invalid duration 'soon' (expected e.g. 500ms, 5s, 2m, 1h)",
            "t.cfg:16: 'addr' needs an IP address or host name, not 'not_a/host'",
        ]
    );
}

#[test]
fn retries_redispatch_and_ttft_are_in_force() {
    let l = load(
        "defaults\n    mode http\n    timeout ttft 2s\nfrontend f\n    bind :1\n    default_backend b\nbackend b\n    retries 3\n    retry-on 503 response-timeout\n    option redispatch\n    server a 127.0.0.1:1\n",
        false,
    )
    .unwrap();
    let b = &l.config.backends[0];
    assert_eq!(b.opts.retries, Some(3));
    assert_eq!(b.opts.retry_on, ["503", "response-timeout"]);
    assert!(b.opts.redispatch);
    assert_eq!(b.timeouts.ttft, Some(Duration::from_secs(2)));
    let w: Vec<String> = l.warnings.iter().map(|d| d.to_string()).collect();
    assert!(!w.iter().any(|x| x.contains("issue 5")), "{w:#?}");
    let e = errors("backend b\n    retry-on 503 teapot\n    server a 127.0.0.1:1\n");
    assert!(
        e.contains(&"t.cfg:2: unknown retry-on keyword 'teapot'".to_string()),
        "{e:?}"
    );
}

#[test]
fn fallback_chains_resolve_in_order_with_their_conditions() {
    let l = load(
        "defaults\n    mode http\nfrontend f\n    bind :1\n    default_backend openai\n\
         backend openai\n    fallback azure model gpt-4o-prod on 429 503 conn-failure\n    fallback compat model claude-sonnet\n    server a 127.0.0.1:1\n\
         backend azure\n    server z 127.0.0.1:2\n\
         backend compat\n    server c 127.0.0.1:3\n",
        false,
    )
    .unwrap();
    let b = &l.config.backends[0];
    let chain = &b.opts.fallback;
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].backend, 1);
    assert_eq!(chain[0].model.as_deref(), Some("gpt-4o-prod"));
    assert_eq!(
        chain[0].on,
        retry_on::status(429) | retry_on::status(503) | retry_on::CONN_FAILURE
    );
    assert_eq!(chain[1].backend, 2);
    assert_eq!(chain[1].on, retry_on::FALLBACK_DEFAULT);
    assert!(l.config.backends[1].opts.fallback.is_empty());

    let e = errors(
        "defaults\n    mode http\n    fallback b\nfrontend f\n    bind :1\n    default_backend a\n\
         backend a\n    fallback nowhere\n    fallback a\n    fallback b on 418\n    fallback b model\n    fallback b\n    fallback b\n    server s 127.0.0.1:1\n\
         backend b\n    server s 127.0.0.1:1\n\
         backend t\n    mode tcp\n    server s 127.0.0.1:1\n\
         backend u\n    fallback t\n    server s 127.0.0.1:1\n",
    );
    assert_eq!(
        e,
        vec![
            "t.cfg:3: 'fallback' is not allowed in a defaults section (it belongs in a backend or listen)",
            "t.cfg:8: backend 'a': fallback backend 'nowhere' does not exist",
            "t.cfg:9: backend 'a': fallback backend 'a' is already in the chain",
            "t.cfg:10: backend 'a': unknown fallback condition '418' (the retry-on keywords: conn-failure, empty-response, junk-response, response-timeout, 401, 403, 404, 408, 425, 429, 500, 501, 502, 503, 504, all-retryable-errors)",
            "t.cfg:11: 'fallback' needs a backend name, then optionally 'model NAME' and 'on' with retry-on keywords (e.g. 'fallback azure model gpt-4o on 429 503 conn-failure')",
            "t.cfg:13: backend 'a': fallback backend 'b' is already in the chain",
            "t.cfg:21: backend 'u': fallback needs mode http on both 'u' and 't'",
        ],
        "{e:#?}"
    );
}

#[test]
fn gpc_gpt_and_tarpit_actions() {
    let base = "defaults\n    mode http\n    timeout tarpit 2s\nfrontend f\n    bind :80\n    \
                stick-table type ip size 1k store gpc0,gpc(3),gpt0\n    http-request track-sc0 src\n";
    let c = load(
        &format!(
            "{base}    http-request sc-inc-gpc0(0)\n    http-request sc-inc-gpc(3,0) if {{ path_beg /x }}\n    \
             http-request sc-set-gpt0(0) 7\n    http-request tarpit deny_status 429\n    http-request tarpit\n    \
             http-request track-sc2 req.body,json_query('$.model')\n"
        ),
        false,
    )
    .unwrap()
    .config;
    let f = &c.frontends[0];
    let actions: Vec<String> = f
        .http_request
        .iter()
        .map(|r| format!("{:?}", r.action))
        .collect();
    assert_eq!(actions[1], "IncGpc { sc: 0, idx: 0 }");
    assert_eq!(actions[2], "IncGpc { sc: 0, idx: 3 }");
    assert_eq!(actions[3], "SetGpt0 { sc: 0, value: 7 }");
    assert_eq!(actions[4], "Tarpit(429)");
    assert_eq!(actions[5], "Tarpit(500)");
    assert!(actions[6].contains("key: \"model\""), "{}", actions[6]);
    assert!(f.needs_model());
    assert_eq!(f.timeouts.tarpit, Some(std::time::Duration::from_secs(2)));
    let e = errors(&format!(
        "{base}    http-request sc-inc-gpc0(3)\n    http-request sc-set-gpt0(0) x\n    http-request sc-inc-gpc1(0) 5\n    \
         http-request tarpit deny_status 299\n"
    ));
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].starts_with("t.cfg:8: 'sc-inc-gpc0(3)' is not supported"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.cfg:9: 'sc-set-gpt0(0)' needs an integer value, not 'x'"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("t.cfg:10: 'sc-inc-gpc1(0)' takes no argument"),
        "{e:?}"
    );
    assert!(
        e[3].starts_with("t.cfg:11: invalid deny_status '299'"),
        "{e:?}"
    );
}

#[test]
fn tcp_request_connection_rules_compile_in_both_modes() {
    for mode in ["http", "tcp"] {
        let text = format!(
            "frontend f
    mode {mode}
    bind 127.0.0.1:0
    stick-table type ip size 1k expire 30s store conn_cur,conn_rate(10s)
    tcp-request connection accept if {{ src 10.0.0.0/8 }}
    tcp-request connection track-sc0 src
    tcp-request connection track-sc1 src table other
    tcp-request connection reject if {{ sc0_conn_cur gt 10 }} || {{ sc_conn_rate(1) ge 20 }}
    default_backend b
backend other
    stick-table type string size 1k store conn_cnt
backend b
    mode {mode}
    server s 127.0.0.1:1
"
        );
        let loaded = load(&text, false).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let rules = &loaded.config.frontends[0].tcp_request.connection;
        let actions: Vec<_> = rules.iter().map(|r| r.action.clone()).collect();
        assert_eq!(
            actions,
            [
                ConnAction::Accept,
                ConnAction::TrackSc {
                    sc: 0,
                    table: "f".into()
                },
                ConnAction::TrackSc {
                    sc: 1,
                    table: "other".into()
                },
                ConnAction::Reject,
            ],
            "{mode}"
        );
        assert!(rules[0].cond.is_some() && rules[1].cond.is_none());
        assert!(rules[3]
            .cond
            .as_ref()
            .is_some_and(Expr::uses_stick_counters));
    }
}

#[test]
fn tcp_request_connection_misuse_is_a_file_line_error() {
    let head = "frontend f\n    bind 127.0.0.1:0\n    default_backend b\n";
    let tail = "backend b\n    server s 127.0.0.1:1\n";
    for (line, want) in [
        (
            "tcp-request connection track-sc0 src",
            "t.cfg:4: frontend 'f' has no stick-table to track into",
        ),
        (
            "tcp-request connection track-sc0 src table nope",
            "t.cfg:4: stick table 'nope' is not declared",
        ),
        (
            "tcp-request connection track-sc0 req.hdr(x-key)",
            "t.cfg:4: 'tcp-request connection track-sc0' key 'req.hdr(x-key)' is not supported (only src",
        ),
        (
            "tcp-request connection track-sc3 src",
            "t.cfg:4: 'track-sc3' is not supported",
        ),
        (
            "tcp-request connection reject if { sc0_conn_curr gt 1 }",
            "t.cfg:4: fetch 'sc0_conn_curr' is not supported",
        ),
        (
            "tcp-request connection reject if { sc_conn_cur(0,t) gt 1 }",
            "t.cfg:4: fetch 'sc_conn_cur(0,t)': a table argument is not supported",
        ),
        (
            "tcp-request connection reject if { path /x }",
            "t.cfg:4: 'tcp-request connection' conditions cannot use path",
        ),
        (
            "tcp-request connection reject if { req.ssl_sni x.test }",
            "t.cfg:4: 'tcp-request connection' conditions cannot use req.ssl_sni",
        ),
        (
            "tcp-request connection silent-drop",
            "t.cfg:4: 'tcp-request connection silent-drop' is not supported",
        ),
        (
            "tcp-request connection reject now",
            "t.cfg:4: 'tcp-request connection reject' takes no arguments",
        ),
        ("tcp-request connection", "t.cfg:4: 'tcp-request connection' needs an action"),
        (
            "tcp-request session reject",
            "t.cfg:4: 'tcp-request session' is not supported",
        ),
    ] {
        let errs = errors(&format!("{head}    {line}\n{tail}"));
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{line}: {errs:?}"
        );
    }
}

const STATS_BACKEND: &str = "frontend f
    bind 127.0.0.1:8080
    default_backend b
backend b
    server s 127.0.0.1:9000
";

#[test]
fn a_stats_section_is_the_stats_listener() {
    let text = format!(
        "listen stats
    bind 127.0.0.1:8404
    mode http
    stats enable
    stats uri /haproxy?stats
    stats refresh 5s
    stats realm Ops
    stats auth admin:s3cr:et
    stats auth viewer:pw
    stats admin if TRUE
{STATS_BACKEND}"
    );
    let l = load(&text, false).unwrap();
    let g = &l.config.global;
    assert_eq!(g.stats, Some("127.0.0.1:8404".parse().unwrap()));
    let a = &g.stats_access;
    let users: Vec<_> = a.users.iter().map(|u| (&*u.name, &*u.password)).collect();
    // Split at the first colon, as basic auth does.
    assert_eq!(users, [("admin", "s3cr:et"), ("viewer", "pw")]);
    assert!(a.admin && a.read_auth);
    assert_eq!(a.realm, "Ops");
    assert_eq!(a.refresh, Duration::from_secs(5));
    assert_eq!(a.uri.as_deref(), Some("/haproxy?stats"));
    // Not a frontend: it carries no client traffic.
    assert_eq!(
        l.config
            .frontends
            .iter()
            .map(|f| &*f.name)
            .collect::<Vec<_>>(),
        ["f"]
    );
    // The password never shows in Debug output.
    let dbg = format!("{:?}", l.config.global);
    assert!(!dbg.contains("s3cr") && dbg.contains("admin"), "{dbg}");
}

#[test]
fn stats_admin_is_off_without_stats_admin_and_prometheus_counts() {
    let text = format!(
        "frontend prom
    bind 127.0.0.1:8405
    http-request use-service prometheus-exporter if {{ path /metrics }}
{STATS_BACKEND}"
    );
    let l = load(&text, false).unwrap();
    assert_eq!(
        l.config.global.stats,
        Some("127.0.0.1:8405".parse().unwrap())
    );
    assert!(l.config.global.stats_access.users.is_empty());
    assert!(!l.config.global.stats_access.admin);

    let text = format!(
        "listen stats\n    bind :8404\n    stats enable\n    stats admin if TRUE\n{STATS_BACKEND}"
    );
    let l = load(&text, false).unwrap();
    assert!(
        l.warnings
            .iter()
            .any(|w| w.to_string().contains("'stats admin' without 'stats auth'")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn stats_section_errors() {
    for (section, want) in [
        (
            "    stats auth admin",
            "t.cfg:3: stats auth needs 'user:password'",
        ),
        (
            "    stats auth a:b\n    stats auth a:c",
            "t.cfg:4: 'stats auth': user 'a' is listed twice",
        ),
        (
            "    stats admin if LOCALHOST",
            "t.cfg:3: only 'stats admin if TRUE' is supported",
        ),
        (
            "    stats refresh 10ms",
            "t.cfg:3: 'stats refresh' must be at least 500ms",
        ),
        (
            "    stats uri stats",
            "t.cfg:3: stats uri 'stats' must be a path",
        ),
        (
            "    stats scope b",
            "t.cfg:3: directive 'stats scope' is not supported",
        ),
        (
            "    stats hide-version",
            "t.cfg:3: directive 'stats hide-version' is not supported (it only tunes HAProxy",
        ),
        (
            "    stats enable\n    server s 127.0.0.1:1",
            "t.cfg:1: listen 'stats' serves statistics (line 3), so it cannot also have servers",
        ),
        (
            "    stats enable\n    bind :8405",
            "t.cfg:1: listen 'stats': the stats listener takes one address",
        ),
        (
            "    stats enable\n    mode tcp",
            "t.cfg:1: listen 'stats': statistics need 'mode http'",
        ),
    ] {
        let text = format!("listen stats\n    bind 127.0.0.1:8404\n{section}\n{STATS_BACKEND}");
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{section}: {errs:?}"
        );
        // A password never reaches a message.
        assert!(
            !errs.iter().any(|e| e.contains(":c") || e.contains("a:b")),
            "{errs:?}"
        );
    }
    let errs = errors(&format!(
        "listen s1\n    bind :1\n    stats enable\nlisten s2\n    bind :2\n    stats enable\n{STATS_BACKEND}"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("t.cfg:6: only one stats section is supported: 's1'")),
        "{errs:?}"
    );
    let errs = errors(&format!("{STATS_BACKEND}    stats enable\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("t.cfg:6: 'stats' in a backend is not supported")),
        "{errs:?}"
    );
}
