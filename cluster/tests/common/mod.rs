//! What the cluster tests share: a cluster CA in a scratch directory that
//! issues node and client certificates on demand (real files, loaded the
//! way a node loads them), and starting a node over mutual TLS on a port
//! the kernel picks.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use llmgw_cluster::certs;
use llmgw_cluster::tls::{CertFiles, ClusterTls};
use llmgw_cluster::types::NodeId;
use llmgw_cluster::{ClusterNode, NodeOptions};
use openraft::SnapshotPolicy;
use tempfile::TempDir;
use tokio::net::TcpListener;

pub const DEADLINE: Option<Duration> = Some(Duration::from_secs(20));

/// A cluster CA and the certificates it issued, under one scratch directory.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        certs::init_ca(dir.path().join("ca")).expect("init CA");
        Pki { dir }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_dir().join("ca.pem")).expect("ca.pem")
    }

    /// Issues (or re-issues) node `id`'s certificate for 127.0.0.1.
    pub fn node_files(&self, id: NodeId) -> CertFiles {
        certs::issue_node(
            self.ca_dir(),
            self.dir.path().join(format!("n{id}")),
            id,
            &["127.0.0.1", "localhost"],
        )
        .expect("issue node certificate")
    }

    pub fn node(&self, id: NodeId) -> ClusterTls {
        ClusterTls::load(&self.node_files(id)).expect("node TLS")
    }

    pub fn client_files(&self, name: &str) -> CertFiles {
        certs::issue_client(
            self.ca_dir(),
            self.dir.path().join(format!("client-{name}")),
            name,
        )
        .expect("issue client certificate")
    }

    pub fn client(&self, name: &str) -> ClusterTls {
        ClusterTls::load(&self.client_files(name)).expect("client TLS")
    }
}

/// The default settings, with snapshots only when a test asks, sent in
/// chunks of `chunk` bytes.
pub fn options(chunk: u64) -> NodeOptions {
    let mut opts = NodeOptions::default();
    opts.raft.snapshot_policy = SnapshotPolicy::Never;
    opts.raft.snapshot_max_chunk_size = chunk;
    opts.raft.max_in_snapshot_log_to_keep = 0;
    opts.join_timeout = Duration::from_secs(20);
    opts
}

/// Node `id` with its data under `data/n<id>`, over mutual TLS with `tls`.
pub async fn start_with(
    id: NodeId,
    data: &Path,
    tls: ClusterTls,
    opts: NodeOptions,
) -> ClusterNode {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    ClusterNode::start(id, &data.join(format!("n{id}")), listener, tls, opts)
        .await
        .expect("start node")
}

/// Waits until `node` has applied the log up to `index`.
pub async fn applied(node: &ClusterNode, index: u64) {
    node.raft
        .wait(DEADLINE)
        .applied_index_at_least(Some(index), format!("n{} applies {index}", node.id))
        .await
        .expect("applied in time");
}
