//! Three (then four) in-process nodes talking Raft over the gRPC transport
//! with mutual TLS on loopback: election, replication of ApplyConfig,
//! failover to a new leader, a late joiner caught up by a snapshot streamed
//! in chunks, and a removed node's id (and certificate) refused when it
//! tries to come back.
//!
//! Every wait is on openraft's metrics with a deadline, never a sleep; every
//! port is chosen by the kernel.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{applied, Pki, DEADLINE};
use llmgw_cluster::command::{Command, ConfigFormat, Refusal};
use llmgw_cluster::tls::{ChannelOptions, ExpectPeer};
use llmgw_cluster::types::NodeId;
use llmgw_cluster::{ClusterError, ClusterNode};
use llmgw_proto::v1::raft_client::RaftClient;
use llmgw_proto::v1::ProbeRequest;
use openraft::storage::RaftStateMachine;
use openraft::ServerState;

/// Snapshot chunk size: small, so a snapshot takes several InstallSnapshot calls.
const CHUNK: u64 = 64;

async fn start(id: NodeId, data: &Path, pki: &Pki) -> ClusterNode {
    common::start_with(id, data, pki.node(id), common::options(CHUNK)).await
}

fn apply_config(text: &str) -> Command {
    Command::ApplyConfig {
        text: text.into(),
        format: ConfigFormat::Toml,
        expected_version: None,
    }
}

fn current_text(node: &ClusterNode) -> Option<String> {
    node.sm
        .read(|s| s.current_config().map(|c| c.text.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_fail_over_and_never_reuse_an_id() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(1, dir.path(), &pki).await;
    let n2 = start(2, dir.path(), &pki).await;
    let n3 = start(3, dir.path(), &pki).await;

    // Election: a cluster of one elects itself.
    n1.bootstrap().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads its cluster of one")
        .await
        .unwrap();

    // Membership: learner, caught up, promoted.
    n1.join(2, &n2.addr.to_string(), false).await.unwrap();
    n1.join(3, &n3.addr.to_string(), false).await.unwrap();
    for node in [&n1, &n2, &n3] {
        node.raft
            .wait(DEADLINE)
            .voter_ids([1, 2, 3], format!("n{} sees three voters", node.id))
            .await
            .unwrap();
    }

    // Replication of a configuration through the gRPC transport; a
    // follower's subscriber hears of it.
    let mut follower_rx = n3.subscribe();
    let (log_id, version) = n1.apply(apply_config("# v1\n")).await.unwrap();
    assert_eq!(version, 1);
    for node in [&n1, &n2, &n3] {
        applied(node, log_id.index).await;
        assert_eq!(current_text(node).as_deref(), Some("# v1\n"));
    }
    let seen = tokio::time::timeout(
        DEADLINE.unwrap(),
        follower_rx.wait_for(|a| a.config_version == 1),
    )
    .await
    .expect("in time")
    .expect("n3 still running")
    .clone();
    assert_eq!(
        seen.state.current_config().map(|c| &*c.text),
        Some("# v1\n")
    );

    // A follower cannot propose, and says who leads.
    match n2.apply(apply_config("# from a follower\n")).await {
        Err(ClusterError::NotLeader {
            leader: Some((1, info)),
        }) => assert_eq!(info.addr, n1.addr.to_string()),
        other => panic!("a follower accepted a write or hid the leader: {other:?}"),
    }

    // Failover: the leader stops; the other two elect one of themselves.
    n1.shutdown().await.unwrap();
    let metrics = n2
        .raft
        .wait(DEADLINE)
        .metrics(
            |m| matches!(m.current_leader, Some(2) | Some(3)),
            "n2 or n3 is elected after n1 stops",
        )
        .await
        .unwrap();
    let (leader, follower) = match metrics.current_leader {
        Some(2) => (&n2, &n3),
        _ => (&n3, &n2),
    };
    leader
        .raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "the new leader knows it")
        .await
        .unwrap();
    let (log_id, version) = leader.apply(apply_config("# v2\n")).await.unwrap();
    assert_eq!(version, 2);
    applied(follower, log_id.index).await;
    assert_eq!(current_text(follower).as_deref(), Some("# v2\n"));

    // n1 is removed for good; its id can never come back, even at the
    // same address.
    leader.remove(1).await.unwrap();
    for node in [leader, follower] {
        node.raft
            .wait(DEADLINE)
            .voter_ids([2, 3], format!("n{} sees n1 removed", node.id))
            .await
            .unwrap();
    }
    let retired_at = leader.sm.read(|s| s.nodes.retired.get(&1).copied());
    assert!(retired_at.is_some(), "n1's id is retired");
    let err = leader
        .join(1, "127.0.0.1:1", false)
        .await
        .expect_err("a retired id was accepted");
    assert!(
        matches!(
            err,
            ClusterError::Refused(Refusal::NodeIdRetired { id: 1, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("node id 1 was removed"), "{err}");
    // And its certificate no longer opens any door: the survivors refuse
    // its calls.
    let n1_tls = pki.node(1);
    let channel = n1_tls
        .channel(
            &leader.addr.to_string(),
            ExpectPeer::Node(leader.id),
            &ChannelOptions::default(),
        )
        .unwrap();
    let refused = RaftClient::new(channel)
        .probe(ProbeRequest { from: 1 })
        .await
        .expect_err("a removed node's call was answered");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("n1 was removed from the cluster"),
        "{refused:?}"
    );
    // The refusal is the same on every node: it was decided by the log.
    let members = leader.raft.metrics().borrow().membership_config.clone();
    assert_eq!(
        members.membership().voter_ids().collect::<BTreeSet<_>>(),
        BTreeSet::from([2, 3])
    );

    // A late joiner whose entries were purged behind a snapshot gets the
    // snapshot, streamed in 64-byte chunks over InstallSnapshot.
    leader.raft.trigger().snapshot().await.unwrap();
    let snapshot_at = leader
        .raft
        .wait(DEADLINE)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= log_id.index),
            "snapshot built",
        )
        .await
        .unwrap()
        .snapshot
        .unwrap();
    leader
        .raft
        .trigger()
        .purge_log(snapshot_at.index)
        .await
        .unwrap();
    leader
        .raft
        .wait(DEADLINE)
        .purged(Some(snapshot_at), "leader purges behind its snapshot")
        .await
        .unwrap();
    let snapshot_bytes = leader
        .sm
        .snapshot_meta()
        .map(|m| m.last_log_id)
        .expect("snapshot on disk");
    assert_eq!(snapshot_bytes, Some(snapshot_at));

    {
        let mut sm = leader.sm.clone();
        let snapshot = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert!(
            snapshot.snapshot.get_ref().len() as u64 > 3 * CHUNK,
            "the snapshot spans several chunks"
        );
    }

    let n4 = start(4, dir.path(), &pki).await;
    leader.join(4, &n4.addr.to_string(), false).await.unwrap();
    n4.raft
        .wait(DEADLINE)
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= snapshot_at.index),
            "n4 installs the snapshot",
        )
        .await
        .unwrap();
    n4.raft
        .wait(DEADLINE)
        .voter_ids([2, 3, 4], "n4 is a voter")
        .await
        .unwrap();
    assert_eq!(current_text(&n4).as_deref(), Some("# v2\n"));
    assert!(
        n4.sm.read(|s| s.nodes.retired.contains_key(&1)),
        "the registry travels in the snapshot"
    );

    for node in [n2, n3, n4] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_its_state_from_disk() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(1, dir.path(), &pki).await;
    n1.bootstrap().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads")
        .await
        .unwrap();
    n1.apply(apply_config("# one\n")).await.unwrap();
    n1.raft.trigger().snapshot().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .metrics(|m| m.snapshot.is_some(), "snapshot built")
        .await
        .unwrap();
    let (last, _) = n1.apply(apply_config("# two\n")).await.unwrap();
    n1.shutdown().await.unwrap();

    // What the disk holds: the snapshot has the first configuration, the
    // log the second.
    {
        let sm = llmgw_cluster::StateMachineStore::open(dir.path().join("n1/raft/sm")).unwrap();
        assert_eq!(
            sm.read(|s| s.current_config().map(|c| c.text.to_string()))
                .as_deref(),
            Some("# one\n"),
            "from the snapshot"
        );
    }

    // Same data directory, a new port: the snapshot is loaded and the entry
    // after it re-applied from the log up to the saved commit point, by the
    // time start returns: no leader needed.
    let n1 = start(1, dir.path(), &pki).await;
    assert_eq!(
        current_text(&n1).as_deref(),
        Some("# two\n"),
        "from the log, at once"
    );
    assert_eq!(n1.sm.read(|s| s.config_version), 2);
    applied(&n1, last.index).await;
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads again")
        .await
        .unwrap();
    n1.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_without_a_quorum_applies_what_it_knew_committed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let n1 = start(1, dir.path(), &pki).await;
    let n2 = start(2, dir.path(), &pki).await;
    let n3 = start(3, dir.path(), &pki).await;
    n1.bootstrap().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads")
        .await
        .unwrap();
    n1.join(2, &n2.addr.to_string(), false).await.unwrap();
    n1.join(3, &n3.addr.to_string(), false).await.unwrap();
    n1.apply(apply_config("# one\n")).await.unwrap();
    n1.apply(Command::SetServerWeight {
        backend: "chat".into(),
        server: "a".into(),
        weight: 7,
    })
    .await
    .unwrap();
    let (last, version) = n1.apply(apply_config("# two\n")).await.unwrap();
    assert_eq!(version, 2);
    applied(&n3, last.index).await;

    // Everyone stops; n3 comes back alone. It cannot elect anyone, yet
    // holds every entry it knew committed, applied from its own log.
    for node in [n3, n1, n2] {
        node.shutdown().await.unwrap();
    }
    let n3 = start(3, dir.path(), &pki).await;
    assert_eq!(current_text(&n3).as_deref(), Some("# two\n"));
    let applied_now = n3.subscribe().borrow().clone();
    assert_eq!(applied_now.config_version, 2);
    assert!(applied_now.last_applied >= Some(last));
    assert_eq!(n3.sm.read(|s| s.config_version), 2);
    assert_eq!(
        n3.sm.read(|s| s.server("chat", "a").and_then(|r| r.weight)),
        Some(7)
    );
    applied(&n3, last.index).await;
    assert_ne!(n3.raft.metrics().borrow().state, ServerState::Leader);
    n3.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_follow_the_policy_and_keep_some_log_behind_them() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        let mut opts = common::options(1 << 20);
        opts.raft.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(10);
        opts.raft.max_in_snapshot_log_to_keep = 3;
        opts
    };
    let n1 = common::start_with(1, dir.path(), pki.node(1), opts()).await;
    n1.bootstrap().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads")
        .await
        .unwrap();
    let mut last = None;
    for i in 1..=25 {
        last = Some(
            n1.apply(apply_config(&format!("# v{i}\n")))
                .await
                .unwrap()
                .0,
        );
    }
    let last = last.unwrap();
    let metrics = n1
        .raft
        .wait(DEADLINE)
        .metrics(
            |m| {
                m.snapshot.is_some_and(|s| s.index + 10 > last.index)
                    && m.purged
                        .zip(m.snapshot)
                        .is_some_and(|(p, s)| p.index + 3 == s.index)
            },
            "a snapshot within 10 entries of the end, the log purged to 3 before it",
        )
        .await
        .unwrap();
    let snapshot = metrics.snapshot.unwrap();
    assert_eq!(
        n1.sm.snapshot_meta().and_then(|m| m.last_log_id),
        Some(snapshot)
    );
    n1.shutdown().await.unwrap();

    // The snapshot on disk and the log kept after it give back the last
    // configuration at once.
    let n1 = common::start_with(1, dir.path(), pki.node(1), opts()).await;
    assert_eq!(n1.sm.read(|s| s.config_version), 25);
    assert_eq!(current_text(&n1).as_deref(), Some("# v25\n"));
    n1.shutdown().await.unwrap();
}
