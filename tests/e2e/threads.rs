//! Serving threads (`nbthread`): the first thread accepts, each connection
//! is handed to the thread serving the fewest and lives there, every thread
//! serves — plain exchanges, pooled upstream connections (taken over from
//! another thread's share rather than opening one more), streams — and
//! `show activity` says who accepted, who served and who took over, as
//! HAProxy's does.

use std::path::PathBuf;
use std::time::Duration;

use llmgw_e2e::{eventually, runtime_api, Gateway, Mock, RawClient, TempDir};

fn chat(stream: bool) -> String {
    let body = format!(r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[]}}"#);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `name: total [ t1 t2 … ]` from `show activity`.
fn activity(out: &str, name: &str) -> (u64, Vec<u64>) {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"));
    let (total, rest) = line.split_once(" [").expect("total [ per thread ]");
    let per: Vec<u64> = rest
        .trim_end_matches(" ]")
        .split_whitespace()
        .map(|n| n.parse().expect("a count"))
        .collect();
    (total.parse().expect("a total"), per)
}

/// A gateway with `threads` serving threads in front of a mock, and its
/// runtime API socket.
struct Threaded {
    gw: Gateway,
    sock: PathBuf,
    _mock: Mock,
    _dir: TempDir,
}

impl Threaded {
    fn start(threads: usize) -> Threaded {
        let mock = Mock::start("m", &[]);
        let dir = TempDir::new("threads");
        let sock = dir.path().join("rt.sock");
        let gw = Gateway::start(
            &format!(
                "[global]\nnbthread = {threads}\nstats_socket = \"{}\"\n{}",
                sock.display(),
                llmgw_e2e::one_backend("", "", mock.addr)
            ),
            1,
        );
        Threaded {
            gw,
            sock,
            _mock: mock,
            _dir: dir,
        }
    }
}

/// The names of the process's threads (`/proc/PID/task/*/comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the gateway's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn connections_are_spread_over_the_threads_and_each_serves() {
    let Threaded {
        gw,
        sock,
        _mock,
        _dir,
    } = Threaded::start(3);
    let names = thread_names(gw.proc.pid());
    for t in ["llmgw-1", "llmgw-2"] {
        assert!(names.iter().any(|n| n == t), "{t} in {names:?}");
    }
    assert!(runtime_api(&sock, "show info")
        .await
        .contains("\nNbthread: 3\n"));

    // Six connections kept open, each answered before the next is opened:
    // the thread serving the fewest takes each, so two each.
    let mut conns = Vec::new();
    for _ in 0..6 {
        let mut c = RawClient::connect(gw.addr()).await;
        c.send(chat(false).as_bytes()).await;
        let r = c.response().await.expect("a response");
        assert_eq!(r.status, 200, "{}", r.body_text());
        conns.push(c);
    }
    let out = runtime_api(&sock, "show activity").await;
    assert!(out.starts_with("thread_id: 1 (1..3)\ndate_now: "), "{out}");
    assert_eq!(activity(&out, "accepted"), (6, vec![6, 0, 0]), "{out}");
    assert_eq!(activity(&out, "accq_pushed"), (6, vec![2, 2, 2]), "{out}");

    // One after the other, the connections need one upstream connection:
    // a thread whose share of the pool was empty took over the idle one
    // (HAProxy's fd_takeover) instead of opening another. (Not always all
    // five times: the previous thread may not have put it back yet.)
    assert!(activity(&out, "fd_takeover").0 >= 1, "{out}");

    // Every thread goes on serving its connections: again on each, then a
    // stream.
    for c in &mut conns {
        c.send(chat(false).as_bytes()).await;
        let r = c.response().await.expect("a second response");
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(r.json()["object"], "chat.completion");
    }
    for c in &mut conns {
        c.send(chat(true).as_bytes()).await;
        let r = c.response().await.expect("a streamed response");
        assert_eq!(r.status, 200);
        assert!(r.complete, "the stream ended where its framing says");
        assert!(r.body_text().contains("data: [DONE]"), "{}", r.body_text());
    }

    // Closed connections no longer count: with the first thread's two
    // gone (connections 0 and 3), the next two both go to it.
    drop(conns.remove(3));
    drop(conns.remove(0));
    let sock = &sock;
    let addr = gw.addr();
    let _kept = eventually(Duration::from_secs(10), || async move {
        let before = activity(&runtime_api(sock, "show activity").await, "accq_pushed").1;
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut c = RawClient::connect(addr).await;
            c.send(chat(false).as_bytes()).await;
            assert_eq!(c.response().await?.status, 200);
            kept.push(c);
        }
        let after = activity(&runtime_api(sock, "show activity").await, "accq_pushed").1;
        (after[0] - before[0] == 2).then_some(kept)
    })
    .await;
}

#[tokio::test]
async fn one_thread_serves_everything_it_accepts() {
    let Threaded {
        gw,
        sock,
        _mock,
        _dir,
    } = Threaded::start(1);
    assert_eq!(
        thread_names(gw.proc.pid())
            .iter()
            .filter(|n| n.starts_with("llmgw-"))
            .count(),
        0
    );
    for _ in 0..3 {
        let mut c = RawClient::connect(gw.addr()).await;
        c.send(chat(false).as_bytes()).await;
        assert_eq!(c.response().await.expect("a response").status, 200);
    }
    let out = runtime_api(&sock, "show activity").await;
    assert!(out.starts_with("thread_id: 1 (1..1)\n"), "{out}");
    assert_eq!(activity(&out, "accepted"), (3, vec![3]), "{out}");
    assert_eq!(activity(&out, "accq_pushed"), (3, vec![3]), "{out}");
}
