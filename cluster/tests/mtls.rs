//! Who may talk to a node: only holders of a certificate from the cluster
//! CA, nodes to the Raft service as the id their certificate names, clients
//! to the Admin service only. Real TLS on loopback, ports chosen by the
//! kernel, a second CA standing for an attacker's or another cluster's.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{Pki, DEADLINE};
use llmgw_cluster::tls::{self, ChannelOptions, ClusterTls, ExpectPeer, TlsMaterial};
use llmgw_cluster::types::NodeId;
use llmgw_cluster::{ClusterError, ClusterHandle, ClusterNode, PeerIdentity};
use llmgw_proto::v1::admin_client::AdminClient;
use llmgw_proto::v1::admin_server::{Admin, AdminServer};
use llmgw_proto::v1::raft_client::RaftClient;
use llmgw_proto::v1::{self as v1, ProbeRequest, RaftRequest};
use openraft::ServerState;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

fn opts() -> ChannelOptions {
    ChannelOptions::default()
}

async fn leader_of_one(pki: &Pki, data: &std::path::Path) -> ClusterNode {
    let n1 = common::start_with(1, data, pki.node(1), common::options(1 << 20)).await;
    n1.bootstrap().await.unwrap();
    n1.raft
        .wait(DEADLINE)
        .state(ServerState::Leader, "n1 leads its cluster of one")
        .await
        .unwrap();
    n1
}

fn raft_client(tls: &ClusterTls, node: &ClusterNode) -> RaftClient<tonic::transport::Channel> {
    RaftClient::new(
        tls.channel(&node.addr.to_string(), ExpectPeer::Node(node.id), &opts())
            .unwrap(),
    )
}

/// A vote request from `from` at a term far ahead: granted, it would move
/// the receiver's term.
fn disruptive_vote(from: NodeId) -> RaftRequest {
    let vote = openraft::raft::VoteRequest::<NodeId>::new(openraft::Vote::new(1000, from), None);
    RaftRequest {
        from,
        payload: serde_json::to_vec(&vote).unwrap(),
    }
}

/// The node refused the connection after the handshake: with TLS 1.3 the
/// client's side of the handshake is over before the server has checked
/// the client's certificate, so the client sees the connection closed (the
/// server logs why), never an answer: a transport error, whose code
/// depends on whether the server's alert arrived before the connection
/// closed (`received fatal alert: UnknownCA`) or not.
fn assert_closed_by_server(status: &Status) {
    assert!(
        matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{status:?}"
    );
    assert!(
        std::error::Error::source(status).is_some(),
        "a transport failure, not a handler's answer: {status:?}"
    );
}

fn term(node: &ClusterNode) -> u64 {
    node.raft.metrics().borrow().current_term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join_or_vote() {
    let pki = Pki::new();
    let foreign = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let n1 = leader_of_one(&pki, data.path()).await;
    let term_before = term(&n1);

    // A node whose certificate comes from another CA (for the right id).
    let rogue = common::start_with(2, data.path(), foreign.node(2), common::options(1 << 20)).await;
    let err = n1
        .join(2, &rogue.addr.to_string(), false)
        .await
        .expect_err("a node from another CA joined");
    let ClusterError::Unreachable {
        id: 2, ref reason, ..
    } = err
    else {
        panic!("not refused as unreachable: {err:?}");
    };
    assert!(
        reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
        "the reason names the certificate problem: {reason}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach n2 at {} over mutual TLS: ",
            rogue.addr
        )) && message.contains("certificate from this cluster's CA"),
        "{message}"
    );
    assert_eq!(err.to_detail().unreachable_nodes, vec![2]);
    // Nothing was recorded about it: no id reserved, no membership change.
    assert!(!n1.sm.read(|s| s.nodes.active.contains_key(&2)));
    let voters: Vec<NodeId> = n1
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(voters, vec![1]);

    // Its RPCs are refused, whichever side notices. Trusting only its own
    // CA, it refuses n1's certificate itself...
    let rogue_tls = foreign.node(2);
    let refused = raft_client(&rogue_tls, &n1)
        .vote(disruptive_vote(2))
        .await
        .expect_err("a foreign node's vote was answered");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // ...and trusting our CA, it is refused by n1, which requires a client
    // certificate from the cluster CA.
    let foreign_files = foreign.node_files(2);
    let mixed = ClusterTls::new(&TlsMaterial {
        ca: pki.ca_pem(),
        cert: std::fs::read(&foreign_files.cert).unwrap(),
        key: std::fs::read(&foreign_files.key).unwrap(),
    })
    .unwrap();
    for _ in 0..3 {
        let refused = raft_client(&mixed, &n1)
            .vote(disruptive_vote(2))
            .await
            .expect_err("a foreign certificate's vote was answered");
        assert_closed_by_server(&refused);
    }
    assert_eq!(term(&n1), term_before, "no foreign vote reached n1's Raft");
    assert!(n1.is_leader());

    rogue.shutdown().await.unwrap();
    n1.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_calls_must_come_from_the_node_the_certificate_names() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let n1 = leader_of_one(&pki, data.path()).await;
    let term_before = term(&n1);

    // A client certificate opens no Raft door.
    let client = pki.client("ops");
    let refused = raft_client(&client, &n1)
        .vote(disruptive_vote(2))
        .await
        .expect_err("a client's vote was answered");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "client 'ops' may not call the Raft service: only node certificates may"
    );
    let refused = raft_client(&client, &n1)
        .probe(ProbeRequest { from: 2 })
        .await
        .expect_err("a client's probe was answered");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // A node may not speak for another.
    let n2_tls = pki.node(2);
    let refused = raft_client(&n2_tls, &n1)
        .vote(disruptive_vote(3))
        .await
        .expect_err("n2 voted as n3");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "the request claims to come from n3 but its certificate is node n2"
    );
    assert_eq!(term(&n1), term_before);

    // As itself, it is answered.
    let reply = raft_client(&n2_tls, &n1)
        .probe(ProbeRequest { from: 2 })
        .await
        .expect("n2's probe answered");
    assert_eq!(reply.into_inner().node_id, 1);

    // A client expecting n2 at n1's address refuses n1's certificate.
    let wrong = RaftClient::new(
        n2_tls
            .channel(&n1.addr.to_string(), ExpectPeer::Node(2), &opts())
            .unwrap(),
    )
    .probe(ProbeRequest { from: 2 })
    .await
    .expect_err("n1 accepted as n2");
    let text = format!("{wrong:?}");
    assert!(
        text.contains("the server's certificate is node n1, not node n2"),
        "{text}"
    );

    n1.shutdown().await.unwrap();
}

/// An Admin service as the node will register one: it asks [`tls::peer`]
/// who called, and answers with it in the reply's metadata.
struct TestAdmin {
    cluster: ClusterHandle,
    calls: Arc<AtomicUsize>,
}

macro_rules! test_admin {
    ($($name:ident: $req:ident -> $rep:ident),* $(,)?) => {
        #[tonic::async_trait]
        impl Admin for TestAdmin {
            async fn cluster_status(
                &self,
                request: Request<v1::ClusterStatusRequest>,
            ) -> Result<Response<v1::ClusterStatusReply>, Status> {
                let peer = tls::peer(&request)?.identity.clone();
                self.calls.fetch_add(1, Ordering::SeqCst);
                let mut reply = Response::new(v1::ClusterStatusReply {
                    node_id: self.cluster.id,
                    config_version: self.cluster.sm.read(|s| s.config_version),
                    ..Default::default()
                });
                let uri = peer.uri().parse().map_err(|_| Status::internal("metadata"))?;
                reply.metadata_mut().insert("llmgw-peer", uri);
                Ok(reply)
            }
            $(
                async fn $name(
                    &self,
                    _request: Request<v1::$req>,
                ) -> Result<Response<v1::$rep>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

test_admin! {
    cluster_members: ClusterMembersRequest -> ClusterMembersReply,
    cluster_join: ClusterJoinRequest -> ClusterJoinReply,
    cluster_remove: ClusterRemoveRequest -> ClusterRemoveReply,
    transfer_leader: TransferLeaderRequest -> TransferLeaderReply,
    config_get: ConfigGetRequest -> ConfigGetReply,
    config_apply: ConfigApplyRequest -> ConfigApplyReply,
    config_diff: ConfigDiffRequest -> ConfigDiffReply,
    config_validate: ConfigValidateRequest -> ConfigValidateReply,
    config_history: ConfigHistoryRequest -> ConfigHistoryReply,
    set_server_state: ServerStateRequest -> ServerStateReply,
    set_server_weight: ServerWeightRequest -> ServerWeightReply,
    table_show: TableShowRequest -> TableShowReply,
    table_clear: TableClearRequest -> TableClearReply,
    stats: StatsRequest -> StatsReply,
}

async fn status(
    channel: tonic::transport::Channel,
) -> Result<Response<v1::ClusterStatusReply>, Status> {
    AdminClient::new(channel)
        .cluster_status(v1::ClusterStatusRequest {})
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_from_the_cluster_ca_reach_the_admin_service() {
    let pki = Pki::new();
    let foreign = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let counter = Arc::clone(&calls);
    let n1 = ClusterNode::start_with_services(
        1,
        &data.path().join("n1"),
        listener,
        pki.node(1),
        common::options(1 << 20),
        move |cluster, routes| {
            routes.add_service(AdminServer::new(TestAdmin {
                cluster: cluster.clone(),
                calls: counter,
            }));
        },
    )
    .await
    .unwrap();
    let addr = n1.addr.to_string();

    // A client certificate from the cluster CA: answered, and the handler
    // knows who called.
    let ops = pki.client("ops");
    let reply = status(ops.channel(&addr, ExpectPeer::AnyNode, &opts()).unwrap())
        .await
        .expect("ops is answered");
    assert_eq!(reply.get_ref().node_id, 1);
    assert_eq!(
        reply
            .metadata()
            .get("llmgw-peer")
            .and_then(|v| v.to_str().ok()),
        Some("llmgw://client/ops")
    );
    // So is a node (a follower forwarding to its leader).
    let reply = status(
        pki.node(2)
            .channel(&addr, ExpectPeer::AnyNode, &opts())
            .unwrap(),
    )
    .await
    .expect("n2 is answered");
    assert_eq!(
        reply
            .metadata()
            .get("llmgw-peer")
            .and_then(|v| v.to_str().ok()),
        Some("llmgw://node/2")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // No client certificate: refused during the handshake.
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pki.ca_pem()) {
            roots.add(cert.unwrap()).unwrap();
        }
        Arc::new(roots)
    };
    let mut anonymous = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(Arc::clone(&roots))
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    let channel =
        tls::net::channel(Arc::new(anonymous), &addr, ExpectPeer::AnyNode, &opts()).unwrap();
    let refused = status(channel)
        .await
        .expect_err("a client without a certificate was answered");
    assert_closed_by_server(&refused);

    // A client certificate from another CA: refused by the node (when the
    // client trusts our CA) or by the client itself (when it does not).
    let foreign_files = foreign.client_files("ops");
    let mixed = ClusterTls::new(&TlsMaterial {
        ca: pki.ca_pem(),
        cert: std::fs::read(&foreign_files.cert).unwrap(),
        key: std::fs::read(&foreign_files.key).unwrap(),
    })
    .unwrap();
    assert_eq!(mixed.identity(), &PeerIdentity::Client("ops".into()));
    let refused = status(mixed.channel(&addr, ExpectPeer::AnyNode, &opts()).unwrap())
        .await
        .expect_err("a foreign client certificate was answered");
    assert_closed_by_server(&refused);
    let refused = status(
        foreign
            .client("ops")
            .channel(&addr, ExpectPeer::AnyNode, &opts())
            .unwrap(),
    )
    .await
    .expect_err("a foreign client was answered");
    assert!(
        format!("{refused:?}").contains("UnknownIssuer"),
        "{refused:?}"
    );

    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no refused call reached the handler"
    );
    n1.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_refuses_to_start_with_another_nodes_certificate() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ClusterNode::start(
        5,
        &data.path().join("n5"),
        listener,
        pki.node(4),
        common::options(1 << 20),
    )
    .await
    .err()
    .expect("n5 started with n4's certificate");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "this node is n5 but its certificate is for node n4: issue it one for llmgw://node/5"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ClusterNode::start(
        5,
        &data.path().join("n5"),
        listener,
        pki.client("ops"),
        common::options(1 << 20),
    )
    .await
    .err()
    .expect("a node started with a client certificate");
    assert!(err.to_string().contains("client 'ops'"), "{err}");
}
