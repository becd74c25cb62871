//! The cluster with real processes on loopback: nodes started with
//! `llmgw run --join`, driven with `llmgw-ctl` through any node, killed
//! with SIGKILL and restarted on their data directories.
//!
//! Which upstream a node's gateway uses tells which configuration it
//! serves: each configuration here points the backend at one mock, and
//! the mock names itself in `x-mock-server`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llmgw_e2e::{eventually, Client, Mock, Proc, TempDir};

/// The configuration every node serves, pointing at `mock`.
fn config(mock: &Mock, weight: u32) -> String {
    format!(
        "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\
         [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"{}\"\nweight = {weight}\n",
        mock.addr
    )
}

fn ctl_bin() -> PathBuf {
    llmgw_e2e::llmgw_bin().with_file_name("llmgw-ctl")
}

/// One node: its process, its gateway and cluster addresses.
struct Node {
    proc: Proc,
    id: u64,
    grpc: SocketAddr,
    http: SocketAddr,
}

struct Cluster {
    dir: TempDir,
    config: PathBuf,
    nodes: Vec<Option<Node>>,
    /// `llmgw run` options every node gets.
    extra: Vec<String>,
}

fn addr_after(line: &str, marker: &str) -> SocketAddr {
    line.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in {line:?}"))
}

impl Cluster {
    /// `n` nodes: n1 bootstraps, the others join it.
    fn start(n: u64, first: &str) -> Cluster {
        Cluster::start_with(n, first, &[])
    }

    fn start_with(n: u64, first: &str, extra: &[&str]) -> Cluster {
        let dir = TempDir::new("cluster");
        let config = dir.path().join("llmgw.toml");
        std::fs::write(&config, first).expect("write");
        let mut c = Cluster {
            dir,
            config,
            nodes: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=n {
            let join = (id > 1).then(|| c.node(1).grpc);
            if id > 1 {
                c.issue(id);
            }
            let node = c.spawn(id, join, "127.0.0.1:0".parse().expect("addr"));
            c.nodes.push(Some(node));
        }
        c
    }

    /// `llmgw-ctl --node NODE ARGS…` with the `admin` client certificate
    /// n1 made when it started the cluster: success, stdout + stderr.
    fn ctl(&self, node: SocketAddr, args: &[&str]) -> (bool, String) {
        let out = Command::new(ctl_bin())
            .arg("--node")
            .arg(node.to_string())
            .arg("--tls-dir")
            .arg(self.ca())
            .args(args)
            .output()
            .expect("llmgw-ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn ctl_json(&self, node: SocketAddr, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (ok, out) = self.ctl(node, &all);
        assert!(ok, "llmgw-ctl {args:?}: {out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `llmgw-ctl config apply` of `text` through the node at `node`.
    fn apply(&self, node: SocketAddr, text: &str) {
        let next = self.dir.path().join("next.toml");
        std::fs::write(&next, text).expect("write");
        let (ok, out) = self.ctl(node, &["config", "apply", &next.to_string_lossy()]);
        assert!(ok, "{out}");
    }

    /// The cluster CA (and the `admin` client certificate): n1 made them.
    fn ca(&self) -> PathBuf {
        self.data(1).join("tls")
    }

    /// A certificate for node `id`, from the cluster CA, in its data directory.
    fn issue(&self, id: u64) {
        let out = self.data(id).join("tls");
        let (ok, said) = self.ctl(
            "127.0.0.1:1".parse().expect("addr"),
            &[
                "cert",
                "node",
                "--ca",
                &self.ca().to_string_lossy(),
                "--id",
                &id.to_string(),
                "--host",
                "127.0.0.1",
                "--out",
                &out.to_string_lossy(),
            ],
        );
        assert!(ok, "{said}");
    }

    fn data(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn spawn(&self, id: u64, join: Option<SocketAddr>, grpc: SocketAddr) -> Node {
        let cfg = self.config.to_string_lossy().into_owned();
        let data = self.data(id).to_string_lossy().into_owned();
        let (id_s, grpc_s) = (id.to_string(), grpc.to_string());
        let join_s = join.map(|j| j.to_string());
        let mut args = vec![
            "run",
            "-c",
            &cfg,
            "--node-id",
            &id_s,
            "--data-dir",
            &data,
            "--cluster-addr",
            &grpc_s,
        ];
        if let Some(j) = &join_s {
            args.extend(["--join", j]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        let mut proc = Proc::spawn(&args, &[]);
        let http = addr_after(&proc.wait_line("frontend 'f' listening on"), "http://");
        let grpc = addr_after(&proc.wait_line("cluster node"), "grpc://");
        Node {
            proc,
            id,
            grpc,
            http,
        }
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes[id as usize - 1].as_ref().expect("node running")
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().flatten()
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self, id: u64) -> SocketAddr {
        let mut n = self.nodes[id as usize - 1].take().expect("running");
        n.proc.signal("KILL");
        n.proc.wait_exit();
        n.grpc
    }

    /// Starts a killed node again on its data directory and address. The
    /// address was a free port when the node first bound it; while the node
    /// was down, another test's socket may have taken it as its own local
    /// port, so this first waits until the port can be bound again.
    fn restart(&mut self, id: u64, grpc: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpListener::bind(grpc).is_err() {
            assert!(Instant::now() < deadline, "{grpc} still taken after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = self.spawn(id, None, grpc);
        self.nodes[id as usize - 1] = Some(n);
    }

    fn leader(&self) -> u64 {
        let any = self.live().next().expect("a live node");
        self.ctl_json(any.grpc, &["cluster", "status"])["leader_id"]
            .as_u64()
            .expect("a leader")
    }
}

/// The mock a gateway's request reached.
async fn served_by(http: SocketAddr) -> Option<String> {
    let r = Client::http1()
        .post_json(
            &format!("http://{http}/v1/chat/completions"),
            r#"{"model":"gpt-4o","messages":[]}"#,
        )
        .await;
    (r.status == 200).then(|| r.header("x-mock-server").unwrap_or_default().to_owned())
}

/// Waits until every live node's gateway proxies to `mock`; returns how long it took.
async fn all_serve(c: &Cluster, mock: &str) -> Duration {
    let t = Instant::now();
    for n in c.live() {
        eventually(Duration::from_secs(10), || async {
            (served_by(n.http).await.as_deref() == Some(mock)).then_some(())
        })
        .await;
    }
    t.elapsed()
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_a_config_applied_through_a_follower_is_served_everywhere() {
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let c = Cluster::start(3, &config(&m1, 1));
    all_serve(&c, "m1").await;
    let members = c.ctl_json(c.node(2).grpc, &["cluster", "members"]);
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );

    // Applies alternate between the two mocks, each through a follower.
    let leader = c.leader();
    let follower = c.live().find(|n| n.id != leader).expect("a follower");
    let next = c.dir.path().join("next.toml");
    let mut took = Vec::new();
    for i in 0..100u32 {
        let (mock, name) = if i % 2 == 0 { (&m2, "m2") } else { (&m1, "m1") };
        std::fs::write(&next, config(mock, 1)).expect("write");
        let t = Instant::now();
        let (ok, out) = c.ctl(follower.grpc, &["config", "apply", &next.to_string_lossy()]);
        assert!(ok, "{out}");
        all_serve(&c, name).await;
        took.push(t.elapsed());
    }
    took.sort();
    let (p50, p99) = (quantile(&took, 0.5), quantile(&took, 0.99));
    println!("config propagation through a follower to 3 gateways serving it: p50 {p50:?}, p99 {p99:?} (100 applies)");
    assert!(p99 < Duration::from_secs(1), "propagation p99 {p99:?}");

    // Reads: linearizable by default, from any node.
    let (ok, text) = c.ctl(c.node(3).grpc, &["config", "get"]);
    assert!(ok && text.contains(&m1.addr.to_string()), "{text}");
    let history = c.ctl_json(c.node(1).grpc, &["config", "history"]);
    assert_eq!(history[0]["version"], 101, "{history}");

    // A server's weight set through one node is in force on all of them.
    let (ok, out) = c.ctl(c.node(3).grpc, &["server", "weight", "b/s", "7"]);
    assert!(ok, "{out}");
    for n in c.live() {
        eventually(Duration::from_secs(5), || async {
            let list = c.ctl_json(n.grpc, &["server", "list"]);
            (list[0]["weight"] == 7).then_some(())
        })
        .await;
    }

    // Bad input gets a clear answer and changes nothing.
    std::fs::write(&next, "[[backend]]\nname = \"b\"\nbalance = \"nope\"\n").expect("write");
    let (ok, out) = c.ctl(follower.grpc, &["config", "apply", &next.to_string_lossy()]);
    assert!(!ok);
    assert!(out.contains("next.toml:"), "{out}");
    let (ok, out) = c.ctl(follower.grpc, &["server", "drain", "b/nope"]);
    assert!(!ok && out.contains("no server 'nope'"), "{out}");
    let (ok, out) = c.ctl(
        follower.grpc,
        &[
            "config",
            "apply",
            "--expect-version",
            "3",
            &c.config.to_string_lossy(),
        ],
    );
    assert!(!ok && out.contains("expected version 3"), "{out}");
    let (ok, out) = c.ctl(
        follower.grpc,
        &["config", "validate", &next.to_string_lossy()],
    );
    assert!(!ok && out.contains("next.toml:"), "{out}");
    all_serve(&c, "m1").await;

    // What an apply would change, against the version in force.
    std::fs::write(&next, config(&m2, 1)).expect("write");
    let (ok, diff) = c.ctl(c.node(2).grpc, &["config", "diff", &next.to_string_lossy()]);
    assert!(ok, "{diff}");
    assert!(diff.starts_with("--- v101\n+++ new\n@@ "), "{diff}");
    assert!(
        diff.contains(&format!(
            "-address = \"{}\"\n+address = \"{}\"\n",
            m1.addr, m2.addr
        )),
        "{diff}"
    );

    // Leadership moves where it is asked to.
    let to = c
        .live()
        .find(|n| n.id != c.leader())
        .expect("a follower")
        .id;
    let (ok, out) = c.ctl(
        c.node(1).grpc,
        &["cluster", "transfer-leader", "--to", &to.to_string()],
    );
    assert!(ok, "{out}");
    // The command returns once the target leads. On a loaded machine a
    // node that missed heartbeats may start another election right after
    // (a new term, anyone may win it): asking again is what an operator
    // does, and a transfer to the node already leading answers at once.
    eventually(Duration::from_secs(15), || async {
        let s = c.ctl_json(c.node(to).grpc, &["cluster", "status"]);
        if s["role"] == "leader" {
            return Some(());
        }
        let _ = c.ctl(
            c.node(1).grpc,
            &["cluster", "transfer-leader", "--to", &to.to_string()],
        );
        None
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_a_new_one_is_elected_and_nothing_acknowledged_is_lost() {
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let mut c = Cluster::start(3, &config(&m1, 1));
    all_serve(&c, "m1").await;
    let next = c.dir.path().join("next.toml");
    c.apply(c.node(1).grpc, &config(&m2, 1));

    let old = c.leader();
    let t = Instant::now();
    let grpc = c.kill(old);
    let new = eventually(Duration::from_secs(10), || async {
        let any = c.live().next().expect("live");
        let s = c.ctl_json(any.grpc, &["cluster", "status"]);
        s["leader_id"].as_u64().filter(|&l| l != old)
    })
    .await;
    println!("leader n{old} killed: n{new} leads after {:?}", t.elapsed());
    // The acknowledged change is there, and the cluster takes new ones.
    all_serve(&c, "m2").await;
    std::fs::write(&next, config(&m1, 2)).expect("write");
    let any = c.live().next().expect("live").grpc;
    let (ok, out) = c.ctl(any, &["config", "apply", &next.to_string_lossy()]);
    assert!(ok, "{out}");

    // The killed node comes back on its data and catches up.
    let t = Instant::now();
    c.restart(old, grpc);
    all_serve(&c, "m1").await;
    eventually(Duration::from_secs(10), || async {
        let s = c.ctl_json(c.node(old).grpc, &["cluster", "status"]);
        (s["config_version"] == 3).then_some(())
    })
    .await;
    println!("n{old} restarted: caught up in {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_two_down_still_commit_three_down_refuse_clearly_and_keep_proxying() {
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let mut c = Cluster::start(5, &config(&m1, 1));
    all_serve(&c, "m1").await;
    let next = c.dir.path().join("next.toml");
    let leader = c.leader();
    let others: Vec<u64> = (1..=5).filter(|&i| i != leader).collect();

    // Two followers down: a majority of three remains.
    c.kill(others[0]);
    c.kill(others[1]);
    c.apply(c.node(leader).grpc, &config(&m2, 1));
    all_serve(&c, "m2").await;

    // A third down: no quorum, said clearly, naming who is missing.
    c.kill(others[2]);
    std::fs::write(&next, config(&m1, 1)).expect("write");
    let (ok, out) = c.ctl(
        c.node(leader).grpc,
        &["config", "apply", &next.to_string_lossy()],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("no quorum"), "{out}");
    for id in &others[..3] {
        assert!(out.contains(&format!("n{id}")), "n{id} not named: {out}");
    }
    // Every live node keeps proxying with the last committed configuration.
    for n in c.live() {
        assert_eq!(served_by(n.http).await.as_deref(), Some("m2"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_recovers_its_configuration_and_runtime_state_from_disk() {
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let mut c = Cluster::start(1, &config(&m1, 1));
    c.apply(c.node(1).grpc, &config(&m2, 1));
    let (ok, out) = c.ctl(c.node(1).grpc, &["server", "drain", "b/s"]);
    assert!(ok, "{out}");

    let grpc = c.kill(1);
    // The file still names m1; what the cluster committed wins.
    c.restart(1, grpc);
    let n = c.node(1);
    let list = c.ctl_json(n.grpc, &["server", "list"]);
    assert!(
        list[0]["status"]
            .as_str()
            .is_some_and(|s| s.contains("DRAIN")),
        "{list}"
    );
    let s = c.ctl_json(n.grpc, &["cluster", "status"]);
    assert_eq!(s["config_version"], 2, "{s}");
    // Draining: no new requests go to the server, so none is served.
    let (ok, out) = c.ctl(n.grpc, &["server", "ready", "b/s"]);
    assert!(ok, "{out}");
    all_serve(&c, "m2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edited_before_a_restart_wins_an_unchanged_one_does_not() {
    let (m1, m2, m3) = (
        Mock::start("m1", &[]),
        Mock::start("m2", &[]),
        Mock::start("m3", &[]),
    );
    let mut c = Cluster::start(1, &config(&m1, 1));
    // Edit, restart: what `systemctl restart` after an edit does.
    let grpc = c.kill(1);
    std::fs::write(&c.config, config(&m2, 1)).expect("edit the file");
    c.restart(1, grpc);
    let s = c.ctl_json(c.node(1).grpc, &["cluster", "status"]);
    assert_eq!(s["config_version"], 2, "{s}");
    all_serve(&c, "m2").await;

    // A change through llmgw-ctl, then a restart with the file as it was:
    // the cluster's change stays.
    c.apply(c.node(1).grpc, &config(&m3, 1));
    let grpc = c.kill(1);
    c.restart(1, grpc);
    let s = c.ctl_json(c.node(1).grpc, &["cluster", "status"]);
    assert_eq!(s["config_version"], 3, "{s}");
    all_serve(&c, "m3").await;
}

#[tokio::test]
async fn a_removed_node_id_is_never_reused() {
    let m1 = Mock::start("m1", &[]);
    let mut c = Cluster::start(3, &config(&m1, 1));
    let leader = c.leader();
    let gone = (1..=3).find(|&i| i != leader).expect("a follower");
    c.kill(gone);
    let (ok, out) = c.ctl(
        c.node(leader).grpc,
        &["cluster", "remove", &gone.to_string()],
    );
    assert!(ok, "{out}");
    let members = c.ctl_json(c.node(leader).grpc, &["cluster", "members"]);
    assert_eq!(
        members["retired_ids"],
        serde_json::json!([gone]),
        "{members}"
    );

    // A new node under the old id, on a fresh data directory: refused.
    let data = c.dir.path().join("again");
    let cfg = c.config.to_string_lossy().into_owned();
    let join = c.node(leader).grpc.to_string();
    let mut p = Proc::spawn(
        &[
            "run",
            "-c",
            &cfg,
            "--node-id",
            &gone.to_string(),
            "--data-dir",
            &data.to_string_lossy(),
            "--cluster-addr",
            "127.0.0.1:0",
            "--tls-dir",
            &c.data(gone).join("tls").to_string_lossy(),
            "--join",
            &join,
        ],
        &[],
    );
    assert!(!p.wait_exit().success());
    assert!(p.stderr().contains("can never be reused"), "{}", p.stderr());
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_and_the_node_recovers() {
    let (m1, m2) = (Mock::start("m1", &[]), Mock::start("m2", &[]));
    let mut c = Cluster::start(1, &config(&m1, 1));
    c.apply(c.node(1).grpc, &config(&m2, 1));
    let grpc = c.kill(1);
    // Half a record at the end of the newest segment: a write the crash cut.
    let seg = newest_segment(&c.data(1).join("raft/log"));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let half_a_record = bytes[..40].to_vec();
    bytes.extend_from_slice(&half_a_record);
    std::fs::write(&seg, &bytes).expect("tear");
    c.restart(1, grpc);
    assert!(
        c.node(1).proc.stderr().contains("torn"),
        "{}",
        c.node(1).proc.stderr()
    );
    all_serve(&c, "m2").await;
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg" || x == "log"))
        .collect();
    segs.sort();
    segs.pop()
        .unwrap_or_else(|| panic!("no segment in {}", dir.display()))
}

#[tokio::test]
async fn certificates_from_another_ca_reach_nothing() {
    let m1 = Mock::start("m1", &[]);
    let c = Cluster::start(1, &config(&m1, 1));
    let n1 = c.node(1).grpc;
    let foreign = c.dir.path().join("foreign");
    let f = |p: &str| foreign.join(p).to_string_lossy().into_owned();
    let nowhere: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    for args in [
        vec!["cert", "init", "--dir", &f("ca")],
        vec![
            "cert",
            "node",
            "--ca",
            &f("ca"),
            "--id",
            "2",
            "--host",
            "127.0.0.1",
            "--out",
            &f("n2"),
        ],
        vec![
            "cert",
            "client",
            "--ca",
            &f("ca"),
            "--name",
            "eve",
            "--out",
            &f("eve"),
        ],
    ] {
        let (ok, out) = c.ctl(nowhere, &args);
        assert!(ok, "{out}");
    }

    // A node whose certificate another CA signed cannot join.
    let cfg = c.config.to_string_lossy().into_owned();
    let data = f("n2-data");
    let join = n1.to_string();
    let mut p = Proc::spawn(
        &[
            "run",
            "-c",
            &cfg,
            "--node-id",
            "2",
            "--data-dir",
            &data,
            "--cluster-addr",
            "127.0.0.1:0",
            "--tls-dir",
            &f("n2"),
            "--join",
            &join,
        ],
        &[],
    );
    assert!(!p.wait_exit().success());
    let said = p.stderr();
    assert!(
        said.contains("--join") && said.contains("UnknownIssuer"),
        "{said}"
    );
    let members = c.ctl_json(n1, &["cluster", "members"]);
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );

    // A client with such a certificate, or with none, reads nothing.
    let out = Command::new(ctl_bin())
        .args([
            "--node",
            &n1.to_string(),
            "--tls-dir",
            &f("eve"),
            "cluster",
            "status",
        ])
        .output()
        .expect("llmgw-ctl");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("UnknownIssuer"), "{said}");
    let out = Command::new(ctl_bin())
        .args([
            "--node",
            &n1.to_string(),
            "--tls-dir",
            &f("none"),
            "config",
            "get",
        ])
        .output()
        .expect("llmgw-ctl");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--tls-dir"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_node_is_added_with_llmgw_ctl() {
    let m1 = Mock::start("m1", &[]);
    let mut c = Cluster::start(1, &config(&m1, 1));
    c.issue(2);
    c.extra = vec!["--no-bootstrap".into()];
    let n2 = c.spawn(2, None, "127.0.0.1:0".parse().expect("addr"));
    // Not a member yet: said so, with what to do.
    let (ok, out) = c.ctl(n2.grpc, &["server", "drain", "b/s"]);
    assert!(!ok && out.contains("not a member"), "{out}");
    let (ok, out) = c.ctl(
        c.node(1).grpc,
        &[
            "cluster",
            "join",
            "--id",
            "2",
            "--addr",
            &n2.grpc.to_string(),
        ],
    );
    assert!(ok, "{out}");
    c.nodes.push(Some(n2));
    all_serve(&c, "m1").await;
    let s = c.ctl_json(c.node(2).grpc, &["cluster", "status"]);
    assert_eq!(s["role"], "follower", "{s}");
    assert_eq!(s["config_version"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_by_snapshot() {
    let m1 = Mock::start("m1", &[]);
    let mut c = Cluster::start_with(3, &config(&m1, 1), &["--snapshot-every", "10"]);
    let leader = c.leader();
    let behind = (1..=3).find(|&i| i != leader).expect("a follower");
    let had = c.ctl_json(c.node(behind).grpc, &["cluster", "status"])["last_log_index"]
        .as_u64()
        .expect("a log");
    let grpc = c.kill(behind);
    // Thirty changes: the leader snapshots and compacts past them.
    for w in 1..=30u32 {
        let (ok, out) = c.ctl(
            c.node(leader).grpc,
            &["server", "weight", "b/s", &(w % 200 + 2).to_string()],
        );
        assert!(ok, "{out}");
    }
    // The leader keeps 10 entries behind its snapshot: what the stopped
    // node would need next is gone from its log.
    let s = c.ctl_json(c.node(leader).grpc, &["cluster", "status"]);
    let snap = s["snapshot_index"].as_u64().expect("a snapshot");
    assert!(
        snap > had + 10,
        "snapshot at {snap}, the stopped node had {had}: {s}"
    );

    let t = Instant::now();
    c.restart(behind, grpc);
    let n = c.node(behind).grpc;
    eventually(Duration::from_secs(10), || async {
        let list = c.ctl_json(n, &["server", "list"]);
        (list[0]["weight"] == 32).then_some(())
    })
    .await;
    println!(
        "n{behind}, 30 entries behind a compacted log: caught up by snapshot in {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_cleared_through_one_node_is_cleared_on_every_node() {
    let m1 = Mock::start("m1", &[]);
    let cfg = format!(
        "[[stick_table]]\nname = \"per_key\"\ntype = \"string\"\nsize = \"1k\"\nexpire = \"5m\"\nstore = [\"http_req_cnt\"]\n{}",
        config(&m1, 1).replace(
            "default_backend = \"b\"\n",
            "default_backend = \"b\"\nhttp_request_rules = [\"track-sc0 req.hdr(x-tenant) table per_key\"]\n",
        )
    );
    let c = Cluster::start(2, &cfg);
    // Each gateway counts the tenants it saw in its own table.
    for n in c.live() {
        for tenant in ["acme", "globex"] {
            let r = Client::http1()
                .send(
                    http::Method::GET,
                    &format!("http://{}/v1/models", n.http),
                    &[("x-tenant", tenant)],
                    "",
                )
                .await;
            assert_eq!(r.status, 200);
        }
    }
    let keys = |n: SocketAddr| {
        let rows = c.ctl_json(n, &["table", "show", "per_key"]);
        let mut k: Vec<String> = rows
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        k.sort();
        k
    };
    for n in c.live() {
        assert_eq!(keys(n.grpc), ["acme", "globex"]);
        let tables = c.ctl_json(n.grpc, &["table", "show"]);
        assert_eq!(tables[0]["table"], "per_key", "{tables}");
        assert_eq!(tables[0]["used"], 2, "{tables}");
    }
    // One key cleared through n2: gone from both nodes' tables.
    let (ok, out) = c.ctl(
        c.node(2).grpc,
        &["table", "clear", "per_key", "--key", "acme"],
    );
    assert!(ok, "{out}");
    for n in c.live() {
        eventually(Duration::from_secs(5), || async {
            (keys(n.grpc) == ["globex"]).then_some(())
        })
        .await;
    }
    let (ok, out) = c.ctl(c.node(1).grpc, &["table", "clear", "nope"]);
    assert!(!ok && out.contains("no table 'nope'"), "{out}");
}
