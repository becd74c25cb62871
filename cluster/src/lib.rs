//! Cluster membership and replication for llmgw.
//!
//! Raft (openraft, pinned) replicates the configuration and the runtime
//! admin commands:
//!
//! - [`types`]: the Raft type configuration (node ids, node addresses,
//!   entries);
//! - [`command`]: the commands the log carries and what applying them answers;
//! - [`state`]: the replicated state those commands change, pure and
//!   deterministic;
//! - [`log`]: the durable log (segments with per-record CRC, fsync before
//!   acknowledging, torn tails cut on open), the vote and the purge point;
//! - [`sm`]: the state machine store, its snapshots and their persistence;
//! - [`fsutil`]: the file-system primitives those two share;
//! - [`transport`]: the Raft RPCs over gRPC (`llmgw-proto`), server and
//!   client, one channel per peer;
//! - [`node`]: a running member (storage, openraft, server) with bootstrap,
//!   join, remove and propose.
//!
//! SWIM gossip (foca) for liveness and backend health, and counter
//! aggregation for shared stick tables, arrive with later issues. The data
//! plane in `node/` applies every change as a command, so this crate talks
//! to it only through that command type.

pub mod certs;
pub mod command;
pub mod fsutil;
pub mod log;
pub mod node;
pub mod sm;
pub mod state;
pub mod tls;
pub mod transport;
pub mod types;

use std::io;
use std::path::Path;

pub use command::{AdminState, Command, ConfigFormat, Refusal, Response};
pub use log::{LogOptions, LogStore, Recovery};
pub use node::{ClusterError, ClusterNode};
pub use sm::StateMachineStore;
pub use state::ClusterState;
pub use types::{NodeId, NodeInfo, TypeConfig};

/// Opens the Raft storage under a node's data directory: the log in
/// `raft/log`, the state machine's snapshot in `raft/sm`.
pub fn open_storage(
    data_dir: impl AsRef<Path>,
    opts: LogOptions,
) -> io::Result<(LogStore, StateMachineStore, Recovery)> {
    let raft = data_dir.as_ref().join("raft");
    let (log, recovery) = LogStore::open(raft.join("log"), opts)?;
    let sm = StateMachineStore::open(raft.join("sm"))?;
    Ok((log, sm, recovery))
}
