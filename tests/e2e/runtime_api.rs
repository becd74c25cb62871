//! The runtime API on its unix socket, through the real binary: the same
//! commands sent to llmgw and to HAProxy 2.6 serving the same `.cfg` must
//! get the same bytes back (header, values llmgw fills, servers state,
//! tables, error messages, prompt framing); changes made on the socket
//! reach the traffic (drain, weights, disable/enable); `show table` and
//! `clear table` after tracked requests; a prompt session; `reload` with a
//! good and a bad file. Fails, naming the missing package, without
//! HAProxy (tests/run.sh installs it).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use llmgw_e2e::{eventually, runtime_api, start_cfg, Client, Gateway, Mock, RuntimeApi, TempDir};

use crate::differential::{free_port, start_haproxy};

/// An HAProxy-dialect configuration both llmgw and HAProxy serve.
fn cfg(port: u16, sock: &Path, m: &[Mock], extra_global: &str) -> String {
    format!(
        "global\n    stats socket {} mode 640 level admin\n{extra_global}\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend f\n    bind 127.0.0.1:{port}\n    maxconn 50\n\
         \x20   http-request track-sc0 req.hdr(x-user) table users if {{ req.hdr(x-user) -m found }}\n\
         \x20   default_backend b\n\
         backend b\n    balance roundrobin\n\
         \x20   server s1 {} weight 4 maxconn 5\n\
         \x20   server s2 {} weight 4\n\
         \x20   server s3 {} backup\n\
         backend st\n    balance static-rr\n    server a {} weight 3\n\
         backend users\n    stick-table type string size 1k expire 1m store http_req_cnt,http_req_rate(10s),conn_cur\n",
        sock.display(),
        m[0].addr,
        m[1].addr,
        m[2].addr,
        m[0].addr
    )
}

fn mocks() -> Vec<Mock> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Mock::start(n, &[]))
        .collect()
}

/// llmgw and HAProxy serving the same configuration, each with its own
/// runtime API socket.
struct Pair {
    gw: Gateway,
    gw_sock: PathBuf,
    _hap: crate::differential::Haproxy,
    hap_port: u16,
    hap_sock: PathBuf,
    _dirs: (TempDir, TempDir),
}

impl Pair {
    async fn start(m: &[Mock]) -> Pair {
        let (gw_dir, hap_dir) = (TempDir::new("rt-gw"), TempDir::new("rt-hap"));
        let gw_sock = gw_dir.path().join("rt.sock");
        let hap_sock = hap_dir.path().join("rt.sock");
        let gw = start_cfg(&cfg(0, &gw_sock, m, ""), 1, &[]);
        let hap_port = free_port();
        let hap = start_haproxy(&cfg(hap_port, &hap_sock, m, ""));
        eventually(Duration::from_secs(10), || async {
            tokio::net::UnixStream::connect(&hap_sock).await.ok()
        })
        .await;
        Pair {
            gw,
            gw_sock,
            _hap: hap,
            hap_port,
            hap_sock,
            _dirs: (gw_dir, hap_dir),
        }
    }

    /// One line to both: (llmgw's answer, HAProxy's).
    async fn both(&self, line: &str) -> (String, String) {
        (
            runtime_api(&self.gw_sock, line).await,
            runtime_api(&self.hap_sock, line).await,
        )
    }

    /// The same requests through both.
    async fn traffic(&self, n: usize, headers: &[(&str, &str)]) {
        let c = Client::http1();
        for base in [
            self.gw.addr().to_string(),
            format!("127.0.0.1:{}", self.hap_port),
        ] {
            for _ in 0..n {
                let r = c
                    .send(
                        http::Method::GET,
                        &format!("http://{base}/echo/x"),
                        headers,
                        "",
                    )
                    .await;
                assert_eq!(r.status, 200, "{base}: {}", r.text());
            }
        }
    }
}

/// `show stat` rows as (pxname,svname) and field → value.
fn rows(csv: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .expect("header")
        .split(',')
        .collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let vals: Vec<&str> = l.split(',').collect();
            (
                format!("{},{}", vals[0], vals[1]),
                header
                    .iter()
                    .zip(&vals)
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect()
}

/// Every value llmgw fills must be HAProxy's — measurements aside: the
/// time since the last change (a second apart at worst), the average
/// timings, and a frontend's current connections (a client's closing
/// connection may not have been seen yet).
fn assert_filled_fields_agree(ours: &str, theirs: &str) {
    const MEASURED: [&str; 5] = ["lastchg", "qtime", "ctime", "rtime", "ttime"];
    let (ours, theirs) = (rows(ours), rows(theirs));
    let names = |r: &[(String, Vec<(String, String)>)]| -> Vec<String> {
        r.iter().map(|(n, _)| n.clone()).collect()
    };
    assert_eq!(names(&ours), names(&theirs), "rows (llmgw left)");
    let mut diffs = Vec::new();
    let mut compared = 0;
    for ((row, ours), (_, theirs)) in ours.iter().zip(&theirs) {
        for ((f, a), (_, b)) in ours.iter().zip(theirs) {
            // A frontend's open connections, and so the most seen at once,
            // depend on when the test client's previous connection closed.
            let frontend_now = row.ends_with(",FRONTEND") && matches!(f.as_str(), "scur" | "smax");
            if a.is_empty() || MEASURED.contains(&f.as_str()) || frontend_now {
                continue;
            }
            compared += 1;
            if a != b {
                diffs.push(format!("{row} {f}: llmgw {a:?}, haproxy {b:?}"));
            }
        }
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert!(compared > 100, "only {compared} values compared");
}

/// `show servers state` lines without the time-since-change column.
fn servers_state(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| {
            if l.starts_with('#') || !l.contains(' ') {
                return l.to_owned();
            }
            let mut w: Vec<&str> = l.split(' ').collect();
            if w.len() > 9 {
                w[9] = "T";
            }
            w.join(" ")
        })
        .collect()
}

/// `show table` lines with entry addresses and expiry times masked.
fn table(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| {
            let l = match l.split_once(": key=") {
                Some((addr, rest)) if addr.starts_with("0x") => format!("ADDR: key={rest}"),
                _ => l.to_owned(),
            };
            l.split(' ')
                .map(|w| if w.starts_with("exp=") { "exp=MS" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test]
async fn same_answers_as_haproxy() {
    let m = mocks();
    let p = Pair::start(&m).await;

    // The socket exists with the configured mode.
    let meta = std::fs::metadata(&p.gw_sock).expect("llmgw's socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);

    // `show stat`: HAProxy's header, and every value llmgw fills is
    // HAProxy's — before and after the same traffic.
    let (ours, theirs) = p.both("show stat").await;
    assert_eq!(ours.lines().next(), theirs.lines().next(), "header");
    assert!(ours.ends_with(",\n\n") && theirs.ends_with(",\n\n"));
    assert_filled_fields_agree(&ours, &theirs);
    p.traffic(8, &[]).await;
    let (ours, theirs) = p.both("show stat").await;
    assert_filled_fields_agree(&ours, &theirs);
    let (ours, theirs) = p.both("show servers state").await;
    assert_eq!(servers_state(&ours), servers_state(&theirs));

    // The same changes on both, then the same state.
    for line in [
        "set server b/s1 state drain",
        "set server b/s2 weight 50%",
        "set maxconn server b/s1 9",
        "disable server b/s3",
        "set server st/a weight 0%",
    ] {
        let (ours, theirs) = p.both(line).await;
        assert_eq!((line, ours.as_str()), (line, "\n"));
        assert_eq!(theirs, "\n", "{line}");
    }
    let (ours, theirs) = p.both("show stat").await;
    assert_filled_fields_agree(&ours, &theirs);
    let (ours, theirs) = p.both("show servers state b").await;
    let cols = |s: &str| -> Vec<String> {
        // be, server, op state, admin state, weights.
        s.lines()
            .skip(2)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                [w[1], w[3], w[5], w[6], w[7], w[8]].join(" ")
            })
            .collect()
    };
    assert_eq!(cols(&ours), cols(&theirs));
    assert_eq!(
        cols(&ours),
        ["b s1 2 8 4 4", "b s2 2 0 2 4", "b s3 0 1 1 1"]
    );
    for line in [
        "enable server b/s3",
        "set server b/s1 state ready",
        "set server st/a weight 100%",
    ] {
        assert_eq!(p.both(line).await, ("\n".into(), "\n".into()), "{line}");
    }

    // Answers and error messages, byte for byte.
    for line in [
        "show backend",
        "get weight b/s2",
        "get weight b/nope",
        "set server b/nope state drain",
        "set server nope/s1 state drain",
        "set server b state drain",
        "set server b/s1 state bogus",
        "set server b/s1 weight",
        "set server b/s1 weight abc",
        "set server b/s1 weight 12x",
        "set server b/s1 weight 300",
        "set server b/s1 weight -5%",
        "set server st/a weight 2",
        "set weight b/s1",
        "set maxconn server b/s1",
        "set maxconn server b/s1 abc",
        "set maxconn server b/s1 5x",
        "disable server b/nope",
        "enable server b",
        "show servers state nope",
        "show stat nope 4 -1",
        "show table nope",
        "show table users key",
        "clear table nope",
        "clear table users key",
        "show cli level",
        "show backend;get weight b/s1",
        "quit",
    ] {
        let (ours, theirs) = p.both(line).await;
        assert_eq!(ours, theirs, "{line:?} (llmgw left, haproxy right)");
    }
    // Filters select the same rows.
    for line in [
        "show stat b 4 -1",
        "show stat -1 2 -1",
        "show stat 3 4 2",
        "show stat up",
    ] {
        let (ours, theirs) = p.both(line).await;
        let names = |s: &str| rows(s).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(&ours), names(&theirs), "{line}");
    }

    // `show table` after the same tracked requests; `clear table`.
    p.traffic(3, &[("x-user", "alice")]).await;
    p.traffic(1, &[("x-user", "bob smith")]).await;
    let (ours, theirs) = p.both("show table users").await;
    assert_eq!(table(&ours), table(&theirs));
    assert_eq!(
        table(&ours),
        [
            "# table: users, type: string, size:1024, used:2",
            "ADDR: key=alice use=0 exp=MS conn_cur=0 http_req_cnt=3 http_req_rate(10000)=3",
            "ADDR: key=bob\\ smith use=0 exp=MS conn_cur=0 http_req_cnt=1 http_req_rate(10000)=1",
            "",
        ]
    );
    let (ours, theirs) = p.both("show table users key alice").await;
    assert_eq!(table(&ours), table(&theirs));
    assert_eq!(p.both("show table").await.0, p.both("show table").await.1);
    assert_eq!(
        p.both("clear table users key alice").await,
        ("\n".into(), "\n".into())
    );
    let (ours, theirs) = p.both("show table users").await;
    assert_eq!(table(&ours), table(&theirs));
    assert_eq!(table(&ours).len(), 3, "{ours}");
    assert_eq!(
        p.both("clear table users").await,
        ("\n".into(), "\n".into())
    );
    let (ours, theirs) = p.both("show table").await;
    assert_eq!(ours, theirs);
    assert_eq!(ours, "# table: users, type: string, size:1024, used:0\n\n");

    // Prompt mode: the same bytes for the same session.
    let mut out = Vec::new();
    for sock in [&p.gw_sock, &p.hap_sock] {
        let (mut s, first) = RuntimeApi::prompt(sock).await;
        let mut all = first;
        for line in [
            "show backend",
            "set server b/nope state drain;get weight b/s1",
            "set server b/s1 weight abc",
        ] {
            all.push_str(&s.send(line).await);
        }
        all.push_str(&s.send_until_closed("show backend;quit;show backend").await);
        out.push(all);
    }
    assert_eq!(out[0], out[1], "prompt session (llmgw first)");
    assert!(
        out[0].starts_with("\n> # name\nb\nst\nusers\n\n> "),
        "{:?}",
        out[0]
    );
}

#[tokio::test]
async fn drain_disable_and_weights_reach_the_traffic() {
    // s1 answers slowly, so a request can be in flight while it drains.
    let m = vec![
        Mock::start("s1", &["--ttft-ms", "1500"]),
        Mock::start("s2", &[]),
        Mock::start("s3", &[]),
    ];
    let dir = TempDir::new("rt");
    let sock = dir.path().join("rt.sock");
    let gw = start_cfg(&cfg(0, &sock, &m, ""), 1, &[]);
    let c = Client::http1();
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let who = |r: &llmgw_e2e::Resp| r.header("x-mock-server").unwrap_or("?").to_owned();

    // Two chat requests: one lands on the slow s1 and is in flight.
    let url = gw.url("/v1/chat/completions");
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.post_json(&url, chat).await })
        })
        .collect();
    let s1 = || async {
        let st = runtime_api(&sock, "show stat b 4 1").await;
        st.lines().nth(1).map(str::to_owned)
    };
    eventually(Duration::from_secs(5), || async {
        s1().await.filter(|l| l.split(',').nth(4) == Some("1"))
    })
    .await;

    assert_eq!(
        runtime_api(&sock, "set server b/s1 state drain").await,
        "\n"
    );
    let row = s1().await.expect("s1 row");
    assert_eq!(row.split(',').nth(17), Some("DRAIN"), "{row}");
    for _ in 0..6 {
        let r = c.get(&gw.url("/echo/x")).await;
        assert_eq!(who(&r), "s2", "a drained server takes no new request");
    }
    // The request in flight finishes on the drained server.
    let mut done = Vec::new();
    for t in slow {
        let r = t.await.expect("task");
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        done.push(who(&r));
    }
    done.sort();
    assert_eq!(done, ["s1", "s2"]);

    assert_eq!(
        runtime_api(&sock, "set server b/s1 state ready").await,
        "\n"
    );
    assert_eq!(runtime_api(&sock, "disable server b/s2").await, "\n");
    let row = runtime_api(&sock, "show stat b 4 2").await;
    assert!(row.contains(",MAINT,"), "{row}");
    let r = c.get(&gw.url("/echo/x")).await;
    assert_eq!(who(&r), "s1");
    assert_eq!(runtime_api(&sock, "enable server b/s2").await, "\n");

    // Weight 50% of s1's configured 4: s1 and s2 then share 2:4.
    assert_eq!(runtime_api(&sock, "set server b/s1 weight 50%").await, "\n");
    assert_eq!(
        runtime_api(&sock, "get weight b/s1").await,
        "2 (initial 4)\n\n"
    );
    let mut n = [0usize; 2];
    for _ in 0..30 {
        match who(&c.get(&gw.url("/echo/x")).await).as_str() {
            "s1" => n[0] += 1,
            "s2" => n[1] += 1,
            other => panic!("unexpected server {other}"),
        }
    }
    assert!((9..=11).contains(&n[0]) && n[0] + n[1] == 30, "{n:?}");
    let st = runtime_api(&sock, "show stat b 2 -1").await;
    let be: Vec<&str> = st.lines().nth(1).expect("backend row").split(',').collect();
    // weight (over the usable s1 and s2), act, bck.
    assert_eq!((be[18], be[19], be[20]), ("6", "2", "1"), "{st}");
}

#[tokio::test]
async fn prompt_session_quit_and_timeout() {
    let m = mocks();
    let dir = TempDir::new("rt");
    let sock = dir.path().join("rt.sock");
    let _gw = start_cfg(&cfg(0, &sock, &m, "    stats timeout 1s\n"), 1, &[]);
    let (mut s, first) = RuntimeApi::prompt(&sock).await;
    assert_eq!(first, "\n> ");
    assert_eq!(s.send("show backend").await, "# name\nb\nst\nusers\n\n> ");
    assert_eq!(s.send("set server b/s2 weight 3").await, "\n> ");
    assert_eq!(s.send("get weight b/s2").await, "3 (initial 4)\n\n> ");
    let st = s.send("show stat b 4 -1").await;
    // The header, three servers, the empty line, the prompt.
    assert_eq!(st.lines().count(), 1 + 3 + 1 + 1, "{st}");
    assert!(st.ends_with(",\n\n> "));
    // `quit`: closed without another byte.
    assert_eq!(s.send_until_closed("quit").await, "");

    // An idle session is closed after `stats timeout`.
    let (s, _) = RuntimeApi::prompt(&sock).await;
    let t = std::time::Instant::now();
    assert_eq!(s.wait_closed().await, "");
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
}

#[tokio::test]
async fn reload_good_then_bad() {
    let m = mocks();
    let dir = TempDir::new("rt");
    let sock = dir.path().join("rt.sock");
    let toml = |server: &Mock, name: &str| {
        format!(
            "[global]\nstats_socket = {{ path = \"{}\", mode = \"600\", level = \"admin\" }}\n\
             [[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
             [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"{name}\"\naddress = \"{}\"\n",
            sock.display(),
            server.addr
        )
    };
    let gw = Gateway::start(&toml(&m[0], "one"), 1);
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    let c = Client::http1();
    let served_by = || async {
        c.get(&gw.url("/echo/x"))
            .await
            .header("x-mock-server")
            .unwrap_or("?")
            .to_owned()
    };
    assert_eq!(served_by().await, "s1");

    // A good file: swapped in, the answer says so.
    std::fs::write(&gw.config_path, toml(&m[1], "two")).expect("write");
    assert_eq!(runtime_api(&sock, "reload").await, "Success=1\n--\n\n");
    assert_eq!(served_by().await, "s2");
    assert!(runtime_api(&sock, "show servers state b")
        .await
        .contains(" b 1 two "));

    // A bad one: refused with the reason, the running one stays.
    std::fs::write(
        &gw.config_path,
        toml(&m[2], "three").replace("default_backend = \"b\"", "default_backend = \"nope\""),
    )
    .expect("write");
    let answer = runtime_api(&sock, "reload").await;
    assert!(answer.starts_with("Success=0\n--\n[ALERT] "), "{answer}");
    assert!(answer.contains("llmgw.toml:"), "{answer}");
    assert!(answer.contains("nope"), "{answer}");
    assert!(answer.ends_with("\n\n"), "{answer}");
    assert_eq!(served_by().await, "s2");
    assert!(runtime_api(&sock, "show servers state b")
        .await
        .contains(" b 1 two "));
}

#[tokio::test]
async fn native_short_form_defaults_to_operator() {
    let m = mocks();
    let dir = TempDir::new("rt");
    let sock = dir.path().join("rt.sock");
    let toml = format!(
        "[global]\nstats_socket = \"{}\"\n{}",
        sock.display(),
        llmgw_e2e::one_backend("", "", m[0].addr)
    );
    let _gw = Gateway::start(&toml, 1);
    assert_eq!(runtime_api(&sock, "show cli level").await, "operator\n\n");
    assert_eq!(
        runtime_api(&sock, "set server b/s state drain").await,
        "Permission denied\n\n"
    );
    assert!(runtime_api(&sock, "show stat")
        .await
        .starts_with("# pxname,svname,"));
}
