//! The node's membership of its cluster: the control plane.
//!
//! Every node is a proxy *and* a Raft member ([`llmgw_cluster`]); a single
//! node is a cluster of one, on the same code path. What the cluster
//! decides — a configuration, a server's admin state or weight, a cleared
//! table — reaches the data plane here, in [`Control::apply_loop`], and
//! only here: a node's own reload (`SIGHUP`, `llmgw reload`, the runtime
//! API's `reload`) proposes its file to the cluster and waits until the
//! change comes back applied, exactly like a change made with `llmgw-ctl`
//! on another node.
//!
//! Start-up: a fresh data directory bootstraps a cluster of one whose first
//! configuration is the file given (or the embedded default), unless the
//! node is told to `--join` a running cluster, in which case it asks that
//! member to add it and takes the cluster's configuration. A data
//! directory with history recovers the committed configuration and runtime
//! state from disk; the file replaces that configuration only if it changed
//! since this node last read it ([`Control::adopt_file_at_start`]), and is
//! otherwise what the next reload proposes.
//!
//! While the node cannot reach a quorum, nothing here changes: its data
//! plane keeps proxying with the last configuration it applied.

pub mod api;
pub mod diff;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use llmgw_cluster::state::{ClusterState, ServerRuntime};
use llmgw_cluster::tls::{ChannelOptions, ExpectPeer};
use llmgw_cluster::{
    certs, CertFiles, ClusterHandle, ClusterNode, ClusterTls, Command, ConfigFormat, NodeId,
    NodeOptions,
};
use llmgw_proto::v1::admin_client::AdminClient;
use llmgw_proto::v1::{ErrorDetail, ErrorKind};
use tokio::sync::watch;

use crate::gateway::Shared;
use crate::listen::Listeners;
use crate::reload::{ConfigProposer, Reloader};
use crate::runtime;

/// How a node takes its place in the cluster (`llmgw run` options).
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    /// Raft log, snapshots, the node's id: `./llmgw-data` by default.
    pub data_dir: PathBuf,
    /// This node's id, when the data directory does not hold one yet
    /// (default 1).
    pub node_id: Option<NodeId>,
    /// Where the node's gRPC server (Raft between nodes, the admin API for
    /// `llmgw-ctl`) listens.
    pub listen: SocketAddr,
    /// Ask this member (`host:port` of its gRPC server) to add this node,
    /// instead of bootstrapping a cluster of its own.
    pub join: Option<String>,
    /// A binary upgrade's successor: the previous process lets go of the
    /// cluster address and the data directory once asked to stop, so both
    /// are retried until then.
    pub takeover: bool,
    /// The node's certificate, its key and the cluster CA (`ca.pem`,
    /// `node.pem`, `node-key.pem`); `DATA_DIR/tls` by default.
    pub tls_dir: Option<PathBuf>,
    /// A new node without `join` starts a cluster of one; `false`: it waits
    /// to be added (`llmgw-ctl cluster join`).
    pub bootstrap: bool,
    /// A snapshot, and the log compacted, every this many entries.
    pub snapshot_every: u64,
}

/// How long a successor waits for its predecessor to let go of the
/// cluster address and the data directory.
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// How long a write waits for the cluster to commit it before the caller
/// is told which members did not answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running member: its Raft node, and the data plane it drives.
pub struct Control {
    pub node: ClusterHandle,
    /// The running member itself, until a soft stop hands its place over.
    member: std::sync::Mutex<Option<ClusterNode>>,
    /// This node's certificate: every call to another node is mutual TLS.
    tls: ClusterTls,
    shared: Arc<Shared>,
    reloader: Arc<Reloader>,
    listeners: Arc<Listeners>,
    /// The configuration version this node has put in force (0: none yet).
    applied: watch::Sender<u64>,
    /// Why the last committed configuration could not be put in force
    /// here, if it could not.
    apply_error: std::sync::Mutex<Option<String>>,
    /// The text the process started serving, until the first committed
    /// configuration arrives: when that is the same text (the usual case,
    /// a new cluster's version 1), nothing is swapped.
    serving: std::sync::Mutex<Option<String>>,
    /// One membership change at a time through this node: openraft
    /// refuses a change while another is under way.
    pub membership: tokio::sync::Mutex<()>,
    data_dir: PathBuf,
    /// The data directory had history: the configuration came from disk.
    recovered: bool,
}

/// The digest of the configuration file this node last read (at start or
/// on a reload), kept in its data directory: it tells a file edited since
/// from a stale one.
struct FileSeen {
    path: PathBuf,
}

impl FileSeen {
    fn new(data_dir: &Path) -> FileSeen {
        FileSeen {
            path: data_dir.join("config-file.sha256"),
        }
    }

    fn digest(text: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn last(&self) -> Option<String> {
        let s = std::fs::read_to_string(&self.path).ok()?;
        Some(s.trim().to_owned())
    }

    fn record(&self, digest: &str) {
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{digest}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!("{}: {e}", self.path.display());
        }
    }
}

/// The id this node goes by: the one its data directory holds, else the
/// one given (stored for next time). A directory that holds another id
/// than the one given is refused: ids are never reused or changed.
fn node_id(dir: &Path, given: Option<NodeId>) -> Result<NodeId, String> {
    let file = dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let stored: NodeId = text
                .trim()
                .parse()
                .map_err(|_| format!("{}: not a node id: {:?}", file.display(), text.trim()))?;
            match given {
                Some(g) if g != stored => Err(format!(
                    "{} belongs to node {stored}, not {g}: a node keeps its id for life (use another data directory for a new node)",
                    dir.display()
                )),
                _ => Ok(stored),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = given.unwrap_or(1);
            llmgw_cluster::fsutil::write_atomic(dir, "node-id", format!("{id}\n").as_bytes())
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

impl Control {
    /// Starts the node's Raft member and gRPC server, takes its place in
    /// the cluster (see the module doc) and starts applying what the
    /// cluster commits. `first` is the configuration a new cluster starts
    /// with: its name, text, and whether it is the HAProxy dialect.
    pub async fn start(
        opts: &ClusterOpts,
        shared: Arc<Shared>,
        reloader: Arc<Reloader>,
        listeners: Arc<Listeners>,
        first: (String, String, bool),
    ) -> Result<Arc<Control>, String> {
        let dir = &opts.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let id = node_id(dir, opts.node_id)?;
        let tls = node_tls(opts, id)?;
        // The admin API is served by the same server as Raft; it finds the
        // node through this slot once the node exists.
        let slot: Arc<OnceLock<Arc<Control>>> = Arc::new(OnceLock::new());
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        let member = loop {
            match Self::start_node(id, opts, &tls, slot.clone()).await {
                Ok(node) => break node,
                Err(e) if opts.takeover && tokio::time::Instant::now() < deadline => {
                    tracing::debug!("waiting for the previous process to let go: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let node = member.handle();
        let initialized = node
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?;
        let control = Arc::new(Control {
            node,
            member: std::sync::Mutex::new(Some(member)),
            tls,
            shared,
            reloader,
            listeners,
            applied: watch::channel(0).0,
            apply_error: std::sync::Mutex::new(None),
            serving: std::sync::Mutex::new(Some(first.1.clone())),
            membership: tokio::sync::Mutex::new(()),
            data_dir: dir.clone(),
            recovered: initialized,
        });
        let _ = slot.set(control.clone());

        if !initialized {
            match &opts.join {
                Some(peer) => control.ask_to_join(peer).await?,
                None if opts.bootstrap => control.bootstrap(first).await?,
                None => tracing::info!(
                    node = id,
                    "waiting to be added: llmgw-ctl cluster join --id {id} --addr {}",
                    control.node.addr
                ),
            }
        }
        control.reloader.join_cluster(control.clone());
        tokio::spawn(control.clone().apply_loop());
        Ok(control)
    }

    async fn start_node(
        id: NodeId,
        opts: &ClusterOpts,
        tls: &ClusterTls,
        slot: Arc<OnceLock<Arc<Control>>>,
    ) -> Result<ClusterNode, String> {
        let socket = crate::listen::bind_tcp(opts.listen)
            .map_err(|e| format!("cannot bind the cluster address {}: {e}", opts.listen))?;
        let mut node_opts = NodeOptions::default();
        let every = opts.snapshot_every.max(1);
        node_opts.raft.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(every);
        // Entries kept behind a snapshot for followers a little behind; one
        // further behind gets the snapshot.
        node_opts.raft.max_in_snapshot_log_to_keep =
            node_opts.raft.max_in_snapshot_log_to_keep.min(every);
        ClusterNode::start_with_services(
            id,
            &opts.data_dir,
            socket,
            tls.clone(),
            node_opts,
            |_, routes| {
                routes.add_service(api::server(slot));
            },
        )
        .await
        .map_err(|e| format!("cluster node {id}: {e}"))
    }

    /// A soft stop: this process leaves the cluster's work (and its data
    /// directory) to its successor or to a restart, while its data plane
    /// drains.
    pub async fn stop(&self) {
        let member = self.member.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(m) = member {
            if let Err(e) = m.leave().await {
                tracing::warn!("stopping the cluster node: {e}");
            }
        }
    }

    /// An admin API client for the node at `addr`, over mutual TLS with
    /// this node's certificate.
    pub fn client(&self, addr: &str) -> Result<AdminClient<tonic::transport::Channel>, String> {
        client(&self.tls, addr)
    }

    /// A new cluster of one, whose configuration version 1 is `first`.
    async fn bootstrap(&self, (name, text, haproxy): (String, String, bool)) -> Result<(), String> {
        self.node.bootstrap().await.map_err(|e| e.to_string())?;
        let mut metrics = self.node.raft.metrics();
        tokio::time::timeout(
            Duration::from_secs(10),
            metrics.wait_for(|m| m.current_leader == Some(self.node.id)),
        )
        .await
        .map_err(|_| "the new cluster of one did not elect itself within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
        let format = if haproxy {
            ConfigFormat::Haproxy
        } else {
            ConfigFormat::Toml
        };
        self.node
            .apply(Command::ApplyConfig {
                text,
                format,
                expected_version: Some(0),
            })
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        tracing::info!(node = self.node.id, "bootstrapped a cluster of one");
        Ok(())
    }

    /// Asks the member at `peer` to add this node (the leader registers
    /// its id, adds it as a learner, catches it up and promotes it).
    async fn ask_to_join(&self, peer: &str) -> Result<(), String> {
        let mut client = self
            .client(peer)
            .map_err(|e| format!("--join {peer}: {e}"))?;
        let req = llmgw_proto::v1::ClusterJoinRequest {
            node_id: self.node.id,
            addr: self.node.addr.to_string(),
            learner_only: false,
        };
        client
            .cluster_join(req)
            .await
            .map_err(|s| format!("--join {peer}: {}", describe_status(&s)))?;
        tracing::info!(node = self.node.id, %peer, "joined the cluster");
        Ok(())
    }

    /// The node's configuration file, proposed to the cluster (through
    /// the leader) as the version after `expected` (any, if `None`);
    /// returns once this node has put it in force, and remembers it as
    /// the file this node last read.
    async fn propose_file(
        &self,
        name: &str,
        text: String,
        haproxy: bool,
        expected: Option<u64>,
    ) -> Result<u64, String> {
        let digest = FileSeen::digest(&text);
        let format = if haproxy {
            llmgw_proto::v1::ConfigFormat::Haproxy
        } else {
            llmgw_proto::v1::ConfigFormat::Toml
        };
        let version = api::apply_config(self, name, text, format, expected)
            .await
            .map_err(|d| d.message)?
            .version;
        self.wait_applied(version).await?;
        FileSeen::new(&self.data_dir).record(&digest);
        Ok(version)
    }

    /// A start with `-c FILE`. On a data directory with history the
    /// cluster's committed configuration came back from disk; the file
    /// wins only if it changed since this node last read it (edit, then
    /// restart: what an HAProxy user does), and is then proposed exactly
    /// as a reload would. An unchanged file leaves the committed
    /// configuration in force — a change made with `llmgw-ctl` since, or a
    /// stale copy on a restarted member, must not roll the cluster back.
    pub async fn adopt_file_at_start(&self, (name, text, haproxy): (String, String, bool)) {
        let seen = FileSeen::new(&self.data_dir);
        let digest = FileSeen::digest(&text);
        let Some(current) = self.current_config() else {
            return;
        };
        if !self.recovered || *current.text == *text {
            // A new cluster from this file, or a join: nothing to propose.
            seen.record(&digest);
            return;
        }
        match seen.last() {
            Some(last) if last != digest => {}
            Some(_) => {
                tracing::info!(
                    "{name} is unchanged since this node last read it: the cluster's configuration version {} stays in force",
                    current.version
                );
                return;
            }
            None => {
                tracing::warn!(
                    "{name} differs from the cluster's configuration version {}, which is in force; \
                     to put {name} in force: `llmgw reload -c {name}` or `llmgw-ctl config apply {name}`",
                    current.version
                );
                seen.record(&digest);
                return;
            }
        }
        // A cluster of one elects itself again first.
        let mut metrics = self.node.raft.metrics();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            // The guard `wait_for` returns holds the metrics' lock: dropped
            // here, or openraft's next metrics update waits on it.
            let _ = metrics.wait_for(|m| m.current_leader.is_some()).await;
        })
        .await;
        let applied = self
            .propose_file(&name, text, haproxy, Some(current.version))
            .await;
        match applied {
            Ok(version) => {
                tracing::info!(
                    version,
                    "{name} changed since this node last read it: it replaces configuration version {}",
                    current.version
                );
            }
            Err(e) => tracing::error!(
                "{name} changed since this node last read it but could not be applied (configuration version {} stays in force; the next start tries again): {e}",
                current.version
            ),
        }
    }

    /// The configuration version in force here.
    pub fn applied_version(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this node has put version `v` (or a later one) in
    /// force, or failed to.
    pub async fn wait_applied(&self, v: u64) -> Result<(), String> {
        let mut rx = self.applied.subscribe();
        let r = tokio::time::timeout(WRITE_TIMEOUT, rx.wait_for(|&a| a >= v)).await;
        match r {
            Ok(Ok(_)) => match self.apply_error() {
                Some(e) if self.applied_version() == v => Err(e),
                _ => Ok(()),
            },
            _ => Err(format!(
                "version {v} was committed but this node has not applied it yet"
            )),
        }
    }

    /// Why the last committed configuration is not in force here.
    pub fn apply_error(&self) -> Option<String> {
        self.apply_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies what the cluster commits, in order, for as long as the node
    /// runs. Woken by every change of the Raft metrics; acts when the
    /// state machine moved.
    async fn apply_loop(self: Arc<Self>) {
        let mut applied = self.node.subscribe();
        let mut seen = Seen::default();
        loop {
            let now = applied.borrow_and_update().clone();
            if now.last_applied != seen.last_applied {
                seen.last_applied = now.last_applied;
                let wanted = Wanted::of(&now.state, &seen);
                self.apply(wanted, &mut seen).await;
            }
            if applied.changed().await.is_err() {
                return;
            }
        }
    }

    async fn apply(&self, w: Wanted, seen: &mut Seen) {
        if let Some((version, name, text, haproxy)) = w.config {
            let started_with = self
                .serving
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if started_with.as_deref() == Some(text.as_str()) {
                tracing::info!(version, "configuration in force");
                seen.config_version = version;
                return Box::pin(self.apply(
                    Wanted {
                        config: None,
                        servers: w.servers,
                        clears: w.clears,
                    },
                    seen,
                ))
                .await;
            }
            let (r, s, l) = (
                self.reloader.clone(),
                self.shared.clone(),
                self.listeners.clone(),
            );
            let result = tokio::task::spawn_blocking(move || {
                r.apply_committed(&name, &text, haproxy, &s, &l)
            })
            .await
            .unwrap_or_else(|e| Err(format!("applying the configuration failed: {e}")));
            let mut err = self.apply_error.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(warnings) => {
                    for w in warnings {
                        tracing::warn!("configuration version {version}: {w}");
                    }
                    if seen.config_version == 0 {
                        tracing::info!(version, "configuration in force");
                    } else {
                        tracing::info!(version, "configuration reloaded");
                    }
                    *err = None;
                }
                Err(e) => {
                    tracing::error!(
                        version,
                        "the cluster's configuration cannot be put in force on this node; the running one stays:\n{e}"
                    );
                    *err = Some(e);
                }
            }
            seen.config_version = version;
            // Runtime state names servers of the new configuration.
            seen.servers.clear();
            drop(err);
        }
        let rt = &self.shared.runtime;
        for (backend, server, want) in w.servers {
            if let Some(state) = want.state {
                let cmd = runtime::Command::SetServerState {
                    backend: backend.clone(),
                    server: server.clone(),
                    state: match state {
                        llmgw_cluster::AdminState::Ready => runtime::AdminState::Ready,
                        llmgw_cluster::AdminState::Drain => runtime::AdminState::Drain,
                        llmgw_cluster::AdminState::Maint => runtime::AdminState::Maint,
                    },
                };
                if let Err(e) = rt.apply(&cmd) {
                    tracing::warn!("cluster: {backend}/{server}: {e}");
                }
            }
            if let Some(weight) = want.weight {
                let cmd = runtime::Command::SetServerWeight {
                    backend: backend.clone(),
                    server: server.clone(),
                    weight,
                };
                if let Err(e) = rt.apply(&cmd) {
                    tracing::warn!("cluster: {backend}/{server}: {e}");
                }
            }
            seen.servers
                .entry(backend)
                .or_default()
                .insert(server, want);
        }
        for (table, key, index) in w.clears {
            let cmd = runtime::Command::ClearTable {
                table: table.clone(),
                key,
            };
            if let Err(e) = rt.apply(&cmd) {
                tracing::warn!("cluster: clear table {table}: {e}");
            }
            seen.clears.insert(table, index);
        }
        // Said once the configuration *and* the runtime state that goes
        // with it are in force.
        if *self.applied.borrow() != seen.config_version {
            self.applied.send_replace(seen.config_version);
        }
    }

    /// Writes `cmd` through the leader: here when this node leads, else by
    /// the leader's admin API (`forward`). A write the cluster cannot
    /// commit within [`WRITE_TIMEOUT`] is answered with the members that
    /// did not answer.
    pub async fn write(&self, cmd: Command) -> Result<(u64, u64), ErrorDetail> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.node.apply(cmd)).await {
            Ok(Ok((log_id, version))) => Ok((log_id.index, version)),
            Ok(Err(e)) => Err(e.to_detail()),
            Err(_) => Err(self.no_quorum()),
        }
    }

    /// The voters this node cannot see answering, as a no-quorum error —
    /// or, for a node that is in no cluster (waiting to be added, or
    /// removed), that.
    pub fn no_quorum(&self) -> ErrorDetail {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&self.node.id).is_none() {
            return ErrorDetail::new(
                ErrorKind::Refused,
                format!(
                    "n{} is not a member of a cluster: add it with `llmgw-ctl cluster join --id {} --addr {}` through a member, or ask a member",
                    self.node.id, self.node.id, self.node.addr
                ),
            );
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let unreachable: Vec<NodeId> = match &m.replication {
            // The leader knows which followers acknowledged lately.
            Some(repl) => {
                let last = m.last_log_index.unwrap_or(0);
                voters
                    .iter()
                    .copied()
                    .filter(|v| *v != self.node.id)
                    .filter(|v| {
                        repl.get(v)
                            .and_then(|l| l.as_ref())
                            .is_none_or(|l| l.index < last)
                    })
                    .collect()
            }
            // A follower or candidate: every other voter is suspect.
            None => voters
                .iter()
                .copied()
                .filter(|v| *v != self.node.id)
                .collect(),
        };
        ErrorDetail::no_quorum(unreachable)
    }

    /// The leader's id and address, when one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.node.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node.addr))
    }

    /// The current configuration record, if any.
    pub fn current_config(&self) -> Option<llmgw_cluster::state::ConfigRecord> {
        self.node.sm.read(|st| st.current_config().cloned())
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }
}

impl ConfigProposer for Control {
    /// A reload: the file's text goes to the cluster (through the leader),
    /// and this returns once this node has put it in force.
    fn propose(&self, name: &str, text: String, haproxy: bool) -> Result<u64, String> {
        tokio::runtime::Handle::current().block_on(self.propose_file(name, text, haproxy, None))
    }
}

/// What this node last applied of the cluster's state.
#[derive(Default)]
struct Seen {
    last_applied: Option<llmgw_cluster::types::LogId>,
    config_version: u64,
    servers: BTreeMap<String, BTreeMap<String, ServerRuntime>>,
    clears: BTreeMap<String, u64>,
}

/// What the cluster's state asks of this node beyond what it applied.
struct Wanted {
    /// A newer configuration: version, name, text, HAProxy dialect.
    config: Option<(u64, String, String, bool)>,
    servers: Vec<(String, String, ServerRuntime)>,
    clears: Vec<(String, Option<String>, u64)>,
}

impl Wanted {
    fn of(st: &ClusterState, seen: &Seen) -> Wanted {
        let config = st
            .current_config()
            .filter(|c| c.version > seen.config_version)
            .map(|c| {
                (
                    c.version,
                    format!("cluster configuration v{}", c.version),
                    c.text.to_string(),
                    c.format == ConfigFormat::Haproxy,
                )
            });
        // A new configuration resets what was applied of server states.
        let fresh = config.is_some();
        let mut servers = Vec::new();
        for (backend, map) in &st.servers {
            for (server, want) in map {
                let had = seen.servers.get(backend).and_then(|m| m.get(server));
                if fresh || had != Some(want) {
                    servers.push((backend.clone(), server.clone(), want.clone()));
                }
            }
        }
        let clears = st
            .table_clears
            .iter()
            .filter(|(t, c)| seen.clears.get(*t).is_none_or(|&i| c.log_index > i))
            .map(|(t, c)| (t.clone(), c.key.clone(), c.log_index))
            .collect();
        Wanted {
            config,
            servers,
            clears,
        }
    }
}

/// An admin API client for the member at `addr` (`host:port`), over
/// mutual TLS with the certificate in `tls` (a node's or a client's).
pub fn client(
    tls: &ClusterTls,
    addr: &str,
) -> Result<AdminClient<tonic::transport::Channel>, String> {
    let channel = tls
        .channel(addr, ExpectPeer::AnyNode, &ChannelOptions::default())
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(AdminClient::new(channel))
}

/// The node's certificate: from `--tls-dir` (default `DATA_DIR/tls`). A
/// node that starts a new cluster and finds none makes its own: a cluster
/// CA, its node certificate and an `admin` client certificate for
/// `llmgw-ctl` on this machine — so that `llmgw` with no arguments works —
/// and says where they are. A node told to `--join` must be given one.
fn node_tls(opts: &ClusterOpts, id: NodeId) -> Result<ClusterTls, String> {
    let dir = opts
        .tls_dir
        .clone()
        .unwrap_or_else(|| opts.data_dir.join("tls"));
    let files = CertFiles::node(&dir);
    if !files.cert.exists() && !files.ca.exists() {
        if opts.join.is_some() || !opts.bootstrap {
            return Err(format!(
                "no node certificate in {}: issue one from the cluster's CA with `llmgw-ctl cert node --ca CA_DIR --id {id} --host HOST --out {}`",
                dir.display(),
                dir.display()
            ));
        }
        let host = opts.listen.ip().to_string();
        let mut hosts = vec![host.as_str(), "localhost"];
        if opts.listen.ip().is_unspecified() {
            hosts = vec!["127.0.0.1", "localhost"];
        }
        certs::init_ca(&dir).map_err(|e| e.to_string())?;
        certs::issue_node(&dir, &dir, id, &hosts).map_err(|e| e.to_string())?;
        certs::issue_client(&dir, &dir, "admin").map_err(|e| e.to_string())?;
        tracing::info!(
            dir = %dir.display(),
            "made a cluster CA, this node's certificate and an 'admin' client certificate for llmgw-ctl; keep ca-key.pem safe: it issues certificates for new nodes (llmgw-ctl cert node --ca DIR ...)"
        );
    }
    ClusterTls::load(&files).map_err(|e| e.to_string())
}

/// A failed call as an operator should read it.
pub fn describe_status(s: &tonic::Status) -> String {
    match llmgw_proto::status_detail(s) {
        Some(d) => d.to_string(),
        None => s.message().to_owned(),
    }
}

/// A NOT_FOUND detail.
pub fn not_found(what: String) -> ErrorDetail {
    ErrorDetail::new(ErrorKind::NotFound, what)
}
