//! The Raft type configuration of the llmgw cluster: what a node id, a node
//! and a log entry's payload are. Every other module names these aliases
//! rather than openraft's generic types.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};

/// A node's id. Assigned by the operator, never reused once removed (see
/// [`crate::state::NodeRegistry`]).
pub type NodeId = u64;

/// What the cluster knows about a member: where its Raft service listens.
/// A node's address never changes in place; a moved node joins under a new id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the node's gRPC listener.
    pub addr: String,
}

impl NodeInfo {
    pub fn new(addr: impl Into<String>) -> Self {
        NodeInfo { addr: addr.into() }
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// The llmgw cluster's Raft types: commands in, responses out, snapshots
    /// as in-memory buffers (the state is a configuration and a few maps,
    /// megabytes at most).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
