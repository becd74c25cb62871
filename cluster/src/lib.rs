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
//! - [`tls`]: mutual TLS for every connection (rustls configs, peer
//!   identity from certificates, the accepting and connecting sockets);
//! - [`certs`]: the cluster CA and the node and client certificates it
//!   issues;
//! - [`transport`]: the Raft RPCs over gRPC (`llmgw-proto`), server and
//!   client, one channel per peer;
//! - [`node`]: a running member (storage, openraft, server) with bootstrap,
//!   join, remove and propose.
//!
//! # How the node uses it
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use llmgw_cluster::tls::{CertFiles, ClusterTls, ExpectPeer, ChannelOptions};
//! use llmgw_cluster::{certs, ClusterNode, NodeOptions};
//!
//! // Once, on the operator's machine (`llmgw-ctl cert init|node|client`).
//! certs::init_ca("/etc/llmgw/ca")?;
//! certs::issue_node("/etc/llmgw/ca", "/etc/llmgw/tls", 1, &["10.0.0.1", "gw1.example"])?;
//! certs::issue_client("/etc/llmgw/ca", "/home/ops/.llmgw", "ops")?;
//!
//! // The node: mutual TLS from its files, the Admin service on the same
//! // port (it calls `llmgw_cluster::tls::peer(&request)?` first).
//! let tls = ClusterTls::load(&CertFiles::node("/etc/llmgw/tls"))?;
//! let listener = tokio::net::TcpListener::bind("10.0.0.1:7000").await?;
//! let node = ClusterNode::start_with_services(
//!     1,
//!     "/var/lib/llmgw".as_ref(),
//!     listener,
//!     tls,
//!     NodeOptions::default(),
//!     |cluster, routes| {
//!         let _admin_handle = cluster.clone();
//!         // routes.add_service(AdminServer::new(MyAdmin { cluster: _admin_handle, .. }));
//!     },
//! )
//! .await?;
//! // Already at the last committed state (no leader needed): serve it,
//! // then follow what gets applied.
//! let mut applied = node.subscribe();
//! let mut seen = applied.borrow_and_update().clone();
//! while applied.changed().await.is_ok() {
//!     let now = applied.borrow_and_update().clone();
//!     let changes = now.changes_since(&seen);
//!     if changes.config { /* reload with now.state.current_config() */ }
//!     if changes.servers { /* apply now.state.servers to the runtime */ }
//!     seen = now;
//! }
//!
//! // llmgw-ctl: a client certificate, any node.
//! let ctl = ClusterTls::load(&CertFiles::client("/home/ops/.llmgw"))?;
//! let channel = ctl.channel("10.0.0.1:7000", ExpectPeer::AnyNode, &ChannelOptions::default())?;
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```
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

use openraft::SnapshotPolicy;

pub use command::{AdminState, Command, ConfigFormat, Refusal, Response};
pub use log::{LogOptions, LogStore, Recovery};
pub use node::{ClusterError, ClusterHandle, ClusterNode, NodeOptions};
pub use sm::{Applied, Changes, StateMachineStore};
pub use state::ClusterState;
pub use tls::{CertFiles, ClusterTls, PeerIdentity, PeerInfo, TlsMaterial};
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

/// openraft's settings for nodes on one LAN (round trips well under 10 ms):
///
/// - heartbeat every 100 ms, election after 300 to 600 ms of silence: a
///   leader that dies is replaced within about a second, and a few lost
///   heartbeats (three to six) never start an election;
/// - a snapshot every 1000 entries (`LogsSinceLast(1000)`): entries are
///   configurations and operator commands, so this bounds what a restart
///   replays and what the log holds on disk (a thousand configurations at
///   most) while snapshotting rarely; the 100 entries before a snapshot
///   stay in the log, so a follower a little behind catches up from the log
///   rather than by a snapshot transfer;
/// - snapshots sent in 1 MiB chunks, each given 5 s: far under the gRPC
///   message limit, and slow links still make progress;
/// - at most 64 entries per append: an entry can be a whole configuration,
///   so batches stay far under the message limit for configurations up to
///   about a megabyte.
///
/// Nodes spread over regions need longer timeouts: see
/// [`wan_raft_config`].
pub fn default_raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "llmgw".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        install_snapshot_timeout: 5_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        snapshot_max_chunk_size: 1 << 20,
        max_payload_entries: 64,
        ..Default::default()
    }
}

/// [`default_raft_config`] for voters in different regions (round trips of
/// 50 to 300 ms): heartbeat every 500 ms, election after 2 to 4 s. Failover
/// takes a few seconds; a transcontinental round trip never looks like a
/// dead leader.
pub fn wan_raft_config() -> openraft::Config {
    openraft::Config {
        heartbeat_interval: 500,
        election_timeout_min: 2_000,
        election_timeout_max: 4_000,
        install_snapshot_timeout: 20_000,
        ..default_raft_config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raft_settings_validate_and_keep_their_margins() {
        for (name, config) in [("LAN", default_raft_config()), ("WAN", wan_raft_config())] {
            let config = config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            // Three heartbeats fit in the shortest election timeout: a lost
            // heartbeat or two never starts an election.
            assert!(
                3 * config.heartbeat_interval <= config.election_timeout_min,
                "{name}"
            );
            assert!(config.snapshot_max_chunk_size < transport::MAX_MESSAGE_BYTES as u64);
            assert!(config.max_in_snapshot_log_to_keep < 1000, "{name}");
            assert_eq!(
                config.snapshot_policy,
                SnapshotPolicy::LogsSinceLast(1000),
                "{name}"
            );
        }
    }
}
