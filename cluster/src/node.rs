//! One cluster member: its storage, its openraft node and its gRPC server,
//! and the operations the admin API will expose (bootstrap, join, remove,
//! propose a command).
//!
//! Every connection of its server, and every one it opens to a peer, is
//! mutual TLS ([`crate::tls`]); the node's certificate must name its id.
//!
//! Joining starts with a probe of the new node (reachable, authenticated
//! as the id it joins under), then three steps, each decided by the
//! cluster: the id is registered through the log (so a retired id, or an id taken by another
//! address, is refused identically on every node), the node is added as a
//! learner and caught up, then promoted to voter. Removing takes it out of
//! the membership; the state machine then retires its id for good.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::{ErrorDetail, ErrorKind};
use openraft::error::{ClientWriteError, RaftError};
use openraft::metrics::WaitError;
use openraft::{ChangeMembers, ServerState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::{Routes, RoutesBuilder};

use crate::command::{Command, Refusal, Response};
use crate::log::LogOptions;
use crate::sm::StateMachineStore;
use crate::tls::{ChannelOptions, ClusterTls, PeerIdentity};
use crate::transport::{self, Network};
use crate::types::{LogId, NodeId, NodeInfo, Raft};

/// Why a cluster operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// This node is not the leader; the leader, when known.
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// The state machine refused the command.
    Refused(Refusal),
    /// A node named in the call could not be reached, or did not
    /// authenticate as the node it should be.
    Unreachable {
        id: NodeId,
        addr: String,
        reason: String,
    },
    /// Started and not finished in time; the message says what was left.
    Timeout(String),
    /// Anything else openraft reported (a membership change in progress, a
    /// shutdown, a storage failure).
    Raft(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::NotLeader { leader: Some((id, node)) } => {
                write!(f, "not the leader: the leader is n{id} at {node}")
            }
            ClusterError::NotLeader { leader: None } => {
                f.write_str("not the leader, and no leader is known (an election is under way or there is no quorum)")
            }
            ClusterError::Refused(refusal) => refusal.fmt(f),
            ClusterError::Unreachable { id, addr, reason } => write!(
                f,
                "cannot reach n{id} at {addr} over mutual TLS: {reason} (is it running, with a certificate from this cluster's CA for llmgw://node/{id}?)"
            ),
            ClusterError::Timeout(msg) | ClusterError::Raft(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ClusterError {}

impl ClusterError {
    /// The structured error the admin API returns for this one.
    pub fn to_detail(&self) -> ErrorDetail {
        let kind = match self {
            ClusterError::NotLeader { .. } => ErrorKind::NotLeader,
            ClusterError::Refused(Refusal::VersionConflict { .. }) => ErrorKind::VersionConflict,
            ClusterError::Refused(_) => ErrorKind::Refused,
            ClusterError::Unreachable { .. } => ErrorKind::Unreachable,
            ClusterError::Timeout(_) => ErrorKind::Timeout,
            ClusterError::Raft(_) => ErrorKind::Internal,
        };
        let mut detail = ErrorDetail::new(kind, self.to_string());
        match self {
            ClusterError::Unreachable { id, .. } => {
                detail.unreachable_nodes = vec![*id];
            }
            ClusterError::NotLeader {
                leader: Some((id, node)),
            } => {
                detail.leader_id = Some(*id);
                detail.leader_addr = node.addr.clone();
            }
            ClusterError::Refused(Refusal::VersionConflict { current, .. }) => {
                detail.current_version = Some(*current);
            }
            _ => {}
        }
        detail
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>> for ClusterError {
    fn from(err: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Self {
        if let Some(forward) = err.forward_to_leader::<NodeInfo>() {
            return ClusterError::NotLeader {
                leader: forward.leader_id.zip(forward.leader_node.clone()),
            };
        }
        ClusterError::Raft(err.to_string())
    }
}

/// How a member runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// openraft's timing and snapshot policy; [`crate::default_raft_config`]
    /// unless a test needs otherwise.
    pub raft: openraft::Config,
    pub log: LogOptions,
    /// Timeouts and keepalives of the channels to peers.
    pub channel: ChannelOptions,
    /// The address peers and clients reach this node at (`host:port`, the
    /// host one its certificate names). `None`: the listener's own address,
    /// right only when it is bound to a specific interface.
    pub advertise: Option<String>,
    /// How long [`ClusterHandle::join`] waits for the new node to answer
    /// its probe.
    pub probe_timeout: Duration,
    /// How long [`ClusterHandle::join`] waits for the new node to catch up
    /// before reporting it (it stays a learner).
    pub join_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            raft: crate::default_raft_config(),
            log: LogOptions::default(),
            channel: ChannelOptions::default(),
            advertise: None,
            probe_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(60),
        }
    }
}

/// What the services of a member (the node's Admin service) act through:
/// propose, join, remove, read the state. Cheap to clone.
///
/// A handle keeps the storage open: [`ClusterNode::shutdown`] waits (up to
/// ten seconds) for every handle to be dropped. Services registered with
/// [`ClusterNode::start_with_services`] are dropped with the server; a
/// handle kept elsewhere must be dropped before shutting down.
#[derive(Clone)]
pub struct ClusterHandle {
    pub id: NodeId,
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    pub raft: Raft,
    pub sm: StateMachineStore,
    advertise: String,
    network: Network,
    probe_timeout: Duration,
    join_timeout: Duration,
}

/// A running member: its storage, openraft, and its gRPC server (the Raft
/// service and whatever services the node adds), all over mutual TLS.
/// Dereferences to its [`ClusterHandle`].
pub struct ClusterNode {
    handle: ClusterHandle,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Resolves when the log and the state machine are closed.
    storage_closed: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Deref for ClusterNode {
    type Target = ClusterHandle;

    fn deref(&self) -> &ClusterHandle {
        &self.handle
    }
}

/// How long [`ClusterNode::shutdown`] waits for openraft's tasks to let go
/// of the storage.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterNode {
    /// Opens the storage under `data_dir` (bringing the state machine up to
    /// the last entry this node knew committed, before any leader is
    /// heard), starts openraft, and serves the Raft service on `listener`
    /// over mutual TLS with `tls`, whose certificate must be this node's.
    pub async fn start(
        id: NodeId,
        data_dir: &Path,
        listener: TcpListener,
        tls: ClusterTls,
        opts: NodeOptions,
    ) -> io::Result<ClusterNode> {
        Self::start_with_services(id, data_dir, listener, tls, opts, |_, _| {}).await
    }

    /// Like [`Self::start`], the same server also serving what `services`
    /// adds (the Admin service), with a handle on this member. Every
    /// service sees the caller's identity through [`crate::tls::peer`].
    pub async fn start_with_services<F>(
        id: NodeId,
        data_dir: &Path,
        listener: TcpListener,
        tls: ClusterTls,
        opts: NodeOptions,
        services: F,
    ) -> io::Result<ClusterNode>
    where
        F: FnOnce(&ClusterHandle, &mut RoutesBuilder),
    {
        if tls.identity() != &PeerIdentity::Node(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "this node is n{id} but its certificate is for {}: issue it one for llmgw://node/{id}",
                    tls.identity()
                ),
            ));
        }
        let addr = listener.local_addr()?;
        let (log, sm, recovery) = crate::open_storage(data_dir, opts.log.clone())?;
        if recovery.torn_bytes_truncated > 0 {
            tracing::warn!(
                node = id,
                bytes = recovery.torn_bytes_truncated,
                "Raft log: a torn write was cut at startup"
            );
        }
        let log_closed = log.closed();
        let sm_closed = sm.closed();
        let storage_closed = Box::pin(async move {
            log_closed.await;
            sm_closed.await;
        });
        let config = Arc::new(opts.raft.clone().validate().map_err(io::Error::other)?);
        let network = Network::new(id, tls.clone(), opts.channel.clone());
        // Raft::new re-applies the log up to the saved commit point.
        let raft = Raft::new(id, config, network.clone(), log, sm.clone())
            .await
            .map_err(io::Error::other)?;
        let handle = ClusterHandle {
            id,
            addr,
            raft: raft.clone(),
            sm: sm.clone(),
            advertise: opts.advertise.clone().unwrap_or_else(|| addr.to_string()),
            network,
            probe_timeout: opts.probe_timeout,
            join_timeout: opts.join_timeout,
        };
        let mut routes = Routes::builder();
        routes.add_service(transport::raft_service(id, raft, sm));
        services(&handle, &mut routes);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tls.incoming(listener);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(routes.routes())
                .serve_with_incoming_shutdown(incoming, async {
                    // Either an explicit stop or the node being dropped.
                    let _ = stopped.await;
                }),
        );
        Ok(ClusterNode {
            handle,
            stop: Some(stop),
            server: Some(server),
            storage_closed,
        })
    }

    /// A handle for the node's own use (its Admin service, its reaction to
    /// applied changes); see [`ClusterHandle`] about shutting down.
    pub fn handle(&self) -> ClusterHandle {
        self.handle.clone()
    }

    /// Stops the server and openraft, and returns once the storage is
    /// closed (its directory locks released), so the same data directory
    /// can be opened again at once.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        self.stop_serving().await?;
        let ClusterNode {
            handle,
            storage_closed,
            ..
        } = self;
        let id = handle.id;
        // openraft's workers drop their handles as they wind down.
        drop(handle);
        tokio::time::timeout(CLOSE_TIMEOUT, storage_closed)
            .await
            .map_err(|_| {
                ClusterError::Raft(format!(
                    "n{id}: the storage was still in use {CLOSE_TIMEOUT:?} after shutdown (a ClusterHandle not dropped?)"
                ))
            })
    }

    /// Leaves the cluster's work to a successor while this process lives
    /// on (a soft stop ahead of a binary upgrade): stops the server (its
    /// port freed), shuts openraft down and lets go of the state machine's
    /// directory lock, without waiting for the handles still held (the
    /// draining data plane's) to be dropped.
    pub async fn leave(mut self) -> Result<(), ClusterError> {
        self.stop_serving().await?;
        self.handle.sm.release();
        Ok(())
    }

    /// The server, then openraft.
    async fn stop_serving(&mut self) -> Result<(), ClusterError> {
        self.stop_server().await;
        self.handle
            .raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    async fn stop_server(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(node = self.id, "cluster server stopped with: {e}"),
                Err(e) => tracing::warn!(node = self.id, "cluster server task failed: {e}"),
            }
        }
    }
}

impl ClusterHandle {
    /// This node's address as peers see it.
    pub fn info(&self) -> NodeInfo {
        NodeInfo::new(self.advertise.clone())
    }

    /// Makes this node a cluster of one, its first voter. Only ever on one
    /// node of a new cluster; the others join it.
    pub async fn bootstrap(&self) -> Result<(), ClusterError> {
        let members = [(self.id, self.info())]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Proposes `cmd` and waits until it is committed and applied here.
    pub async fn propose(&self, cmd: Command) -> Result<(LogId, Response), ClusterError> {
        let written = self.raft.client_write(cmd).await?;
        Ok((written.log_id, written.data))
    }

    /// Like [`Self::propose`], a refusal being an error.
    pub async fn apply(&self, cmd: Command) -> Result<(LogId, u64), ClusterError> {
        match self.propose(cmd).await? {
            (log_id, Response::Applied { config_version }) => Ok((log_id, config_version)),
            (_, Response::Refused(refusal)) => Err(ClusterError::Refused(refusal)),
        }
    }

    /// Adds node `id` at `addr` (`host:port`). On the leader only.
    ///
    /// First the node is probed: it must answer over mutual TLS with a
    /// certificate for `id` from this cluster's CA, and accept ours; if
    /// not, nothing is recorded and the error says why. Then the id is
    /// registered through the log, the node added as a learner and, once it
    /// has caught up (within the join timeout), promoted to voter unless
    /// `learner_only`. A join that timed out leaves a learner; joining it
    /// again resumes.
    pub async fn join(
        &self,
        id: NodeId,
        addr: &str,
        learner_only: bool,
    ) -> Result<(), ClusterError> {
        self.ensure_leader()?;
        // A retired id, or one taken by another address, is refused for
        // that reason whether or not anything answers there. The log
        // decides again below; this only spares the probe.
        self.sm
            .read(|s| s.nodes.check(id, addr))
            .map_err(ClusterError::Refused)?;
        self.network
            .probe(id, addr, self.probe_timeout)
            .await
            .map_err(|reason| ClusterError::Unreachable {
                id,
                addr: addr.to_string(),
                reason,
            })?;
        self.apply(Command::RegisterNode {
            id,
            addr: addr.to_string(),
        })
        .await?;
        let added = self
            .raft
            .add_learner(id, NodeInfo::new(addr), false)
            .await?;
        let caught_up = self
            .raft
            .wait(Some(self.join_timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id))
                        .and_then(|matched| *matched)
                        .is_some_and(|matched| matched.index >= added.log_id.index)
                },
                format!("n{id} catches up"),
            )
            .await;
        match caught_up {
            Ok(_) => {}
            Err(WaitError::Timeout(..)) => {
                return Err(ClusterError::Timeout(format!(
                    "n{id} at {addr} was added as a learner but did not catch up within {:?}; it stays a learner and keeps receiving the log: join it again to promote it, or remove it",
                    self.join_timeout
                )))
            }
            Err(WaitError::ShuttingDown) => {
                return Err(ClusterError::Raft("this node is shutting down".into()))
            }
        }
        if !learner_only {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await?;
        }
        Ok(())
    }

    /// Removes node `id` from the cluster, voter or learner. Its id is
    /// retired for good once the change is applied: its certificate is
    /// refused by every node from then on.
    pub async fn remove(&self, id: NodeId) -> Result<(), ClusterError> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let ids = BTreeSet::from([id]);
        if membership.voter_ids().any(|v| v == id) {
            // retain = false: a removed voter does not stay on as a learner.
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(ids), false)
                .await?;
        } else if membership.learner_ids().any(|l| l == id) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await?;
        } else {
            return Err(ClusterError::Raft(format!("n{id} is not a member")));
        }
        Ok(())
    }

    /// Follows what this node applies (see
    /// [`StateMachineStore::subscribe`]): the node reloads when
    /// `config_version` changes and applies server states and weights when
    /// they do ([`crate::Applied::changes_since`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<crate::Applied> {
        self.sm.subscribe()
    }

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// `NotLeader`, naming the leader if known, unless this node leads.
    fn ensure_leader(&self) -> Result<(), ClusterError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader {
            return Ok(());
        }
        let leader = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| (id, node.clone()))
        });
        Err(ClusterError::NotLeader { leader })
    }
}

#[cfg(test)]
mod tests {
    use llmgw_proto::status_detail;

    use super::*;

    #[test]
    fn errors_become_admin_api_details() {
        let not_leader = ClusterError::NotLeader {
            leader: Some((3, NodeInfo::new("10.0.0.3:7000"))),
        };
        let status = not_leader.to_detail().into_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let detail = status_detail(&status).expect("a detail");
        assert_eq!(detail.leader_id, Some(3));
        assert_eq!(detail.leader_addr, "10.0.0.3:7000");
        assert_eq!(
            detail.message,
            "not the leader: the leader is n3 at 10.0.0.3:7000"
        );

        let conflict = ClusterError::Refused(Refusal::VersionConflict {
            expected: 4,
            current: 5,
        })
        .to_detail();
        assert_eq!(conflict.kind(), ErrorKind::VersionConflict);
        assert_eq!(conflict.current_version, Some(5));

        let unreachable = ClusterError::Unreachable {
            id: 4,
            addr: "10.0.0.4:7000".into(),
            reason: "Unavailable: connection refused".into(),
        }
        .to_detail();
        assert_eq!(unreachable.unreachable_nodes, vec![4]);
        assert_eq!(
            unreachable.clone().into_status().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            unreachable.message,
            "cannot reach n4 at 10.0.0.4:7000 over mutual TLS: Unavailable: connection refused (is it running, with a certificate from this cluster's CA for llmgw://node/4?)"
        );
    }
}
