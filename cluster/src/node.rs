//! One cluster member: its storage, its openraft node and its gRPC server,
//! and the operations the admin API will expose (bootstrap, join, remove,
//! propose a command).
//!
//! Joining is three steps, each decided by the cluster: the id is
//! registered through the log (so a retired id, or an id taken by another
//! address, is refused identically on every node), the node is added as a
//! learner and caught up, then promoted to voter. Removing takes it out of
//! the membership; the state machine then retires its id for good.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1::{ErrorDetail, ErrorKind};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::command::{Command, Refusal, Response};
use crate::log::LogOptions;
use crate::sm::StateMachineStore;
use crate::transport::{self, Network, TransportOptions};
use crate::types::{LogId, NodeId, NodeInfo, Raft};

/// Why a cluster operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// This node is not the leader; the leader, when known.
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// The state machine refused the command.
    Refused(Refusal),
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
            ClusterError::Raft(msg) => f.write_str(msg),
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
            ClusterError::Raft(_) => ErrorKind::Internal,
        };
        let mut detail = ErrorDetail::new(kind, self.to_string());
        match self {
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

/// A running member.
pub struct ClusterNode {
    pub id: NodeId,
    /// Where its gRPC server listens.
    pub addr: SocketAddr,
    pub raft: Raft,
    pub sm: StateMachineStore,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    server: std::sync::Mutex<Option<JoinHandle<Result<(), tonic::transport::Error>>>>,
    /// Resolves when the log and the state machine are closed.
    /// (In a mutex only so that a node can be shared between threads: it
    /// is taken once, by `shutdown`.)
    storage_closed: std::sync::Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// How long [`ClusterNode::shutdown`] waits for openraft's tasks to let go
/// of the storage.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl ClusterNode {
    /// Opens the storage under `data_dir`, starts openraft and serves the
    /// Raft service on `listener`.
    pub async fn start(
        id: NodeId,
        data_dir: &Path,
        listener: TcpListener,
        config: openraft::Config,
        log_opts: LogOptions,
        transport_opts: TransportOptions,
    ) -> io::Result<ClusterNode> {
        let routes = tonic::service::Routes::default();
        Self::start_with(
            id,
            data_dir,
            listener,
            config,
            log_opts,
            transport_opts,
            routes,
        )
        .await
    }

    /// As [`Self::start`], the server also answering `extra` (the node's
    /// admin API, on the same port as Raft).
    pub async fn start_with(
        id: NodeId,
        data_dir: &Path,
        listener: TcpListener,
        config: openraft::Config,
        log_opts: LogOptions,
        transport_opts: TransportOptions,
        extra: tonic::service::Routes,
    ) -> io::Result<ClusterNode> {
        let addr = listener.local_addr()?;
        let (log, sm, recovery) = crate::open_storage(data_dir, log_opts)?;
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
        let config = Arc::new(config.validate().map_err(io::Error::other)?);
        let network = Network::new(id, transport_opts);
        let raft = Raft::new(id, config, network, log, sm.clone())
            .await
            .map_err(io::Error::other)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(transport::serve(raft.clone(), extra, incoming, async {
            // Either an explicit stop or the node being dropped.
            let _ = stopped.await;
        }));
        Ok(ClusterNode {
            id,
            addr,
            raft,
            sm,
            stop: std::sync::Mutex::new(Some(stop)),
            server: std::sync::Mutex::new(Some(server)),
            storage_closed: std::sync::Mutex::new(storage_closed),
        })
    }

    /// This node's address as peers see it.
    pub fn info(&self) -> NodeInfo {
        NodeInfo::new(self.addr.to_string())
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

    /// Adds node `id` at `addr`: registers the id, adds it as a learner,
    /// waits for it to catch up, then (unless `learner_only`) promotes it.
    pub async fn join(
        &self,
        id: NodeId,
        addr: &str,
        learner_only: bool,
    ) -> Result<(), ClusterError> {
        self.apply(Command::RegisterNode {
            id,
            addr: addr.to_string(),
        })
        .await?;
        self.raft.add_learner(id, NodeInfo::new(addr), true).await?;
        if !learner_only {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await?;
        }
        Ok(())
    }

    /// Removes node `id` from the cluster, voter or learner. Its id is
    /// retired for good once the change is applied.
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

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops the server and openraft, and returns once the storage is
    /// closed (its directory locks released), so the same data directory
    /// can be opened again at once.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        self.stop_server().await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let ClusterNode {
            raft,
            sm,
            storage_closed,
            id,
            ..
        } = self;
        // openraft's workers drop their handles as they wind down.
        drop((raft, sm));
        let storage_closed = storage_closed
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        tokio::time::timeout(CLOSE_TIMEOUT, storage_closed)
            .await
            .map_err(|_| {
                ClusterError::Raft(format!(
                    "n{id}: the storage was still in use {CLOSE_TIMEOUT:?} after shutdown"
                ))
            })
    }

    async fn stop_server(&self) {
        let stop = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(node = self.id, "Raft server stopped with: {e}"),
                Err(e) => tracing::warn!(node = self.id, "Raft server task failed: {e}"),
            }
        }
    }

    /// Leaves the cluster's work to others while this process lives on (a
    /// soft stop, ahead of a successor): stops the server (its port freed),
    /// shuts openraft down, and lets go of the state machine's directory
    /// lock, so that a successor can open the same data directory while
    /// this process still drains its connections.
    pub async fn stop(&self) -> Result<(), ClusterError> {
        self.stop_server().await;
        self.raft
            .shutdown()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        self.sm.release();
        Ok(())
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
    }
}
