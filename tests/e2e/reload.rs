//! Reloads and binary upgrades under load: not one request lost.
//!
//! A fixed-rate keep-alive load ([`Load`]) runs through the gateway while
//! its configuration is reloaded 20 times (by `SIGHUP`, by `llmgw reload`
//! and by the runtime API's `reload`; one of them a bad file, one adding a
//! listener, one removing it), and while the binary is upgraded 5 times
//! (`llmgw run -x SOCKET -sf PID`, HAProxy's way). Every request must be
//! answered 200.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use llmgw_e2e::{eventually, llmgw_bin, Load, Mock, Proc, TempDir};

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#;

/// One frontend `f` (on 127.0.0.1:0, plus `extra` binds), the mock behind
/// it with `weight`, the runtime API at `sock`.
fn config(sock: &Path, mock: &Mock, extra: &[&str], weight: u32) -> String {
    let binds: Vec<String> = std::iter::once("127.0.0.1:0")
        .chain(extra.iter().copied())
        .map(|b| format!("\"{b}\""))
        .collect();
    format!(
        "[global]\nstats = \"127.0.0.1:0\"\nstats_socket = {{ path = \"{}\", level = \"admin\", expose_fd_listeners = true }}\n\
         [[frontend]]\nname = \"f\"\nbind = [{}]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\nweight = {weight}\n",
        sock.display(),
        binds.join(", "),
        mock.addr
    )
}

/// A mock provider and a gateway configuration (written by [`Site::new`]
/// with [`config`]`(…, &[], 1)`) in a directory of their own.
struct Site {
    mock: Mock,
    dir: TempDir,
    /// The runtime API socket.
    sock: std::path::PathBuf,
    /// The configuration file.
    path: std::path::PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let mock = Mock::start("m", &[]);
        let dir = TempDir::new(name);
        let sock = dir.path().join("rt.sock");
        let path = dir.path().join("llmgw.toml");
        let site = Site {
            mock,
            dir,
            sock,
            path,
        };
        site.write(&site.config(&[], 1));
        site
    }

    fn config(&self, extra: &[&str], weight: u32) -> String {
        config(&self.sock, &self.mock, extra, weight)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("write config");
    }

    /// `llmgw run -c FILE ARGS…`, its cluster data in the site's
    /// directory (so that a successor takes over the same node).
    fn spawn(&self, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let path = self.path.to_string_lossy();
        let mut all = vec!["run", "-c", &path];
        all.extend_from_slice(args);
        let data = self.dir.path().join("data");
        let data = data.to_string_lossy();
        let mut envs = envs.to_vec();
        envs.push(("LLMGW_DATA_DIR", &data));
        Proc::spawn(&all, &envs)
    }
}

/// The address in a line like `frontend 'f' listening on http://ADDR`.
fn addr_of(line: &str) -> std::net::SocketAddr {
    line.rsplit("://")
        .next()
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// `llmgw reload -S SOCK`: its exit status and output.
fn llmgw_reload(sock: &Path) -> (bool, String) {
    let out = Command::new(llmgw_bin())
        .args(["reload", "-S"])
        .arg(sock)
        .output()
        .expect("llmgw reload");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// One command on the runtime API.
async fn cli(sock: &Path, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect");
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn reloads_logged(p: &Proc) -> usize {
    p.stderr().matches("configuration reloaded").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_nothing() {
    let site = Site::new("reload");
    let mut gw = site.spawn(&[], &[]);
    let addr = addr_of(&gw.wait_line("frontend 'f' listening on"));
    gw.wait_line("runtime API");

    let load = Load::start(addr, "/v1/chat/completions", CHAT, 16, 400);
    load.wait_answered(100).await;
    let mut extra: Option<(std::net::SocketAddr, Load)> = None;
    for i in 0..20u32 {
        let weight = 1 + i % 5;
        match i {
            // A bad file: refused with FILE:LINE, the running one stays.
            5 => {
                site.write("[[backend]]\nname = \"b\"\nbalance = \"nope\"\n");
                let (ok, out) = llmgw_reload(&site.sock);
                assert!(!ok, "a bad file was accepted: {out}");
                assert!(out.contains("Success=0"), "{out}");
                assert!(out.contains("llmgw.toml:"), "{out}");
            }
            // A second listener: opened by the reload, and served at once.
            8 => {
                site.write(&site.config(&["127.0.0.2:0"], weight));
                let (ok, out) = llmgw_reload(&site.sock);
                assert!(ok, "{out}");
                let a = addr_of(&gw.wait_line_next("listening on http://127.0.0.2:"));
                let l = Load::start(a, "/v1/chat/completions", CHAT, 4, 100);
                l.wait_answered(20).await;
                extra = Some((a, l));
            }
            // ... and removed again: its connections are told to close,
            // the address refuses new ones.
            14 => {
                site.write(&site.config(&[], weight));
                let (ok, out) = llmgw_reload(&site.sock);
                assert!(ok, "{out}");
                gw.wait_line_next("removed: no longer accepting");
                let (a, l) = extra.take().expect("the extra listener");
                // Every connection of the removed listener is closed by a
                // response of its own (Connection: close), not cut.
                eventually(Duration::from_secs(10), || async {
                    std::net::TcpStream::connect(a).is_err().then_some(())
                })
                .await;
                let t = l.stop().await;
                assert!(t.ok >= 20, "{t:?}");
                assert!(t.closed_by_server >= 1, "{t:?}");
                // After the removal only new connections can fail, refused.
                assert!(
                    t.errors.iter().all(|e| e.starts_with("connect:")),
                    "requests lost on the removed listener: {t:?}"
                );
            }
            // Plain reloads, three ways.
            _ => {
                let binds = extra.as_ref().map_or(&[][..], |_| &["127.0.0.2:0"][..]);
                site.write(&site.config(binds, weight));
                match i % 3 {
                    0 => {
                        let before = reloads_logged(&gw);
                        gw.signal("HUP");
                        eventually(Duration::from_secs(10), || async {
                            (reloads_logged(&gw) > before).then_some(())
                        })
                        .await;
                    }
                    1 => {
                        let (ok, out) = llmgw_reload(&site.sock);
                        assert!(ok, "{out}");
                    }
                    _ => {
                        let out = cli(&site.sock, "reload").await;
                        assert!(out.starts_with("Success=1"), "{out}");
                    }
                }
                let state = cli(&site.sock, "show servers state b").await;
                assert!(
                    state
                        .lines()
                        .any(|l| l.split(' ').nth(7) == Some(&weight.to_string())),
                    "weight {weight} not in force after reload {i}: {state}"
                );
            }
        }
        load.wait_answered(50).await;
    }
    let t = load.stop().await;
    assert_eq!(t.failed, 0, "requests lost across 20 reloads: {t:?}");
    assert!(t.ok >= 1000, "{t:?}");
    // The same process served throughout.
    assert_eq!(reloads_logged(&gw), 19, "19 good reloads, one refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_binary_upgrades_under_load_lose_nothing() {
    let site = Site::new("upgrade");
    let mut old = site.spawn(&[], &[]);
    let addr = addr_of(&old.wait_line("frontend 'f' listening on"));
    let stats = addr_of(&old.wait_line("stats listening on"));
    old.wait_line("runtime API");

    let load = Load::start(addr, "/v1/chat/completions", CHAT, 16, 400);
    load.wait_answered(100).await;
    for _ in 0..5 {
        let sock = site.sock.to_string_lossy().into_owned();
        let pid = old.pid().to_string();
        let mut new = site.spawn(&["-x", &sock, "-sf", &pid], &[]);
        // The new process listens on the very sockets of the old one.
        assert_eq!(addr_of(&new.wait_line("frontend 'f' listening on")), addr);
        assert_eq!(addr_of(&new.wait_line("stats listening on")), stats);
        new.wait_line("runtime API");
        // The old one finishes what it serves, then exits by itself.
        let status = old.wait_exit();
        assert!(
            status.success(),
            "old process: {status:?}\n{}",
            old.stderr()
        );
        assert!(old.stderr().contains("soft stop"), "{}", old.stderr());
        old = new;
        load.wait_answered(100).await;
    }
    let t = load.stop().await;
    assert_eq!(t.failed, 0, "requests lost across 5 binary upgrades: {t:?}");
    assert!(
        t.closed_by_server >= 5,
        "the old processes' connections were not closed by a response: {t:?}"
    );
}

#[tokio::test]
async fn a_soft_stop_lets_streams_finish_and_closes_idle_connections_without_a_race() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new("softstop");
    let mut gw = site.spawn(&[], &[]);
    let addr = addr_of(&gw.wait_line("frontend 'f' listening on"));

    // HTTP/2: a stream in flight (10 tokens, 100 ms apart).
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let h2_conn = tokio::spawn(conn);
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "gw.test")
        .header("content-type", "application/json")
        .header("x-mock-tokens", "10")
        .header("x-mock-token-delay-ms", "100")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )))
        .expect("request");
    let resp = h2.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);

    // HTTP/1.1: a keep-alive connection, idle after its first request.
    let mut h1 = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let get = b"GET /v1/models HTTP/1.1\r\nhost: gw.test\r\n\r\n";
    h1.write_all(get).await.expect("write");
    let first = read_response(&mut h1).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    gw.signal("USR1");
    eventually(Duration::from_secs(10), || async {
        gw.stderr().contains("soft stop").then_some(())
    })
    .await;
    // New connections are no longer accepted...
    eventually(Duration::from_secs(10), || async {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    })
    .await;
    // ... the idle HTTP/1.1 connection was not cut under a client about to
    // use it: its next request is answered, and closes it.
    h1.write_all(get).await.expect("write");
    let second = read_response(&mut h1).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.to_ascii_lowercase().contains("connection: close"),
        "{second}"
    );
    let mut rest = Vec::new();
    assert_eq!(h1.read_to_end(&mut rest).await.expect("read"), 0);

    // The HTTP/2 stream runs to its end; the connection was told GOAWAY.
    let body = resp.into_body().collect().await.expect("stream").to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("[DONE]"), "{text}");
    let _ = h2_conn.await;
    assert!(h2.is_closed() || h2.ready().await.is_err());

    let status = gw.wait_exit();
    assert!(status.success(), "{status:?}\n{}", gw.stderr());
}

/// Reads one response with a Content-Length body; returns it as text.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        if let Some(h) = llmgw_e2e::head_len(&buf) {
            let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
            let n: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= h + n {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let site = Site::new("sdnotify");
    let notify_path = site.dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut gw = site.spawn(&[], &[("NOTIFY_SOCKET", &notify_path.to_string_lossy())]);
    gw.wait_line("frontend 'f' listening on");
    assert_eq!(next(), format!("READY=1\nMAINPID={}", gw.pid()));

    gw.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(next().starts_with("READY=1"));

    gw.signal("USR1");
    assert_eq!(next(), "STOPPING=1");
    assert!(next().starts_with("STATUS=soft stop"));
    assert!(gw.wait_exit().success());
}

/// Kills a process this test did not spawn (a successor) when dropped.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_makes_the_process_start_its_successor() {
    let site = Site::new("usr2");
    let pidfile = site.dir.path().join("llmgw.pid");
    let mut old = site.spawn(&["-p", &pidfile.to_string_lossy()], &[]);
    let addr = addr_of(&old.wait_line("frontend 'f' listening on"));
    old.wait_line("runtime API");
    let first = std::fs::read_to_string(&pidfile).expect("pidfile");
    assert_eq!(first.trim(), old.pid().to_string());

    let load = Load::start(addr, "/v1/chat/completions", CHAT, 16, 400);
    load.wait_answered(100).await;
    old.signal("USR2");
    // The successor inherited the old process's stdout.
    assert_eq!(
        addr_of(&old.wait_line_next("frontend 'f' listening on")),
        addr
    );
    assert!(old.wait_exit().success(), "{}", old.stderr());
    let successor = std::fs::read_to_string(&pidfile).expect("pidfile");
    let successor = successor.trim().to_owned();
    assert_ne!(successor, old.pid().to_string());
    let _kill = KillOnDrop(successor.clone());
    load.wait_answered(100).await;
    let t = load.stop().await;
    assert_eq!(t.failed, 0, "requests lost across the upgrade: {t:?}");
    let info = cli(&site.sock, "show info").await;
    assert!(info.contains(&format!("\nPid: {successor}\n")), "{info}");
}

#[test]
fn the_systemd_unit_verifies() {
    // The unit as shipped, pointing at the binary under test.
    let unit = std::fs::read_to_string(llmgw_e2e::root().join("deploy/systemd/llmgw.service"))
        .expect("unit file");
    let dir = TempDir::new("unit");
    let path = dir.path().join("llmgw.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/llmgw", &llmgw_bin().to_string_lossy()),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/run.sh installs it)");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("llmgw.service"), "{said}");
    for needed in [
        "Type=notify",
        "ExecReload=",
        "-HUP $MAINPID",
        "NotifyAccess=all",
    ] {
        assert!(unit.contains(needed), "{needed} missing from the unit");
    }
}

#[tokio::test]
async fn a_removed_frontend_still_serves_its_open_connections_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = Site::new("retired");
    site.write(&format!(
        "{}[[frontend]]\nname = \"g\"\nbind = [\"127.0.0.2:0\"]\ndefault_backend = \"b\"\n",
        site.config(&[], 1)
    ));
    let mut gw = site.spawn(&[], &[]);
    let g = addr_of(&gw.wait_line("frontend 'g' listening on"));
    gw.wait_line("runtime API");

    let mut c = tokio::net::TcpStream::connect(g).await.expect("connect");
    let get = b"GET /v1/models HTTP/1.1\r\nhost: gw.test\r\n\r\n";
    c.write_all(get).await.expect("write");
    assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));

    // Frontend g goes, with its listener.
    site.write(&site.config(&[], 1));
    let (ok, out) = llmgw_reload(&site.sock);
    assert!(ok, "{out}");
    gw.wait_line_next("removed: no longer accepting");
    assert!(std::net::TcpStream::connect(g).is_err());

    // The connection open on it is served once more, by the configuration
    // that had g, and closed by that response.
    c.write_all(get).await.expect("write");
    let r = read_response(&mut c).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).await.expect("read"), 0);
}
