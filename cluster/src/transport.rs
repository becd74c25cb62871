//! The Raft transport over gRPC: the server side answering a peer's vote,
//! append-entries and snapshot-chunk calls with the local openraft node,
//! and the client side openraft uses to reach its peers.
//!
//! One channel per peer, opened lazily and reused for every call (HTTP/2
//! multiplexes them): a channel per RPC would pay a TCP and TLS handshake
//! per heartbeat. Channels carry a connect timeout and HTTP/2 keepalives, so
//! a black-holed peer fails fast instead of hanging a replication task.
//!
//! Every connection is mutual TLS ([`crate::tls`]): a channel to node `n`
//! accepts only a server whose certificate names `n`, and the server
//! accepts a call only from a node whose certificate names the id the call
//! claims to come from, and whose id the cluster has not retired.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmgw_proto::v1::raft_client::RaftClient;
use llmgw_proto::v1::raft_server::{Raft as RaftService, RaftServer};
use llmgw_proto::v1::{
    raft_reply, ProbeReply, ProbeRequest, RaftReply, RaftRequest, SnapshotChunk,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use crate::sm::StateMachineStore;
use crate::tls::{self, ChannelOptions, ClusterTls, ExpectPeer};
use crate::types::{NodeId, NodeInfo, Raft, TypeConfig};

/// The largest message either side accepts. Above tonic's 4 MiB default:
/// an append-entries batch can carry several configurations.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The gRPC service answering peers with `raft`, as node `id`; `sm` tells
/// which ids the cluster retired.
pub fn raft_service(id: NodeId, raft: Raft, sm: StateMachineStore) -> RaftServer<RaftGrpc> {
    RaftServer::new(RaftGrpc { id, raft, sm })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An error and its sources, one line: tonic's transport errors keep the
/// useful part (a refused connection, a certificate from another CA) in
/// their sources.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    append_causes(&mut out, err.source());
    out
}

/// Appends each cause not already said (tonic repeats its source's text,
/// and wraps it in a bare "transport error").
fn append_causes(out: &mut String, mut source: Option<&(dyn Error + 'static)>) {
    while let Some(e) = source {
        let text = e.to_string();
        if text != "transport error" && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
}

/// The server half: decodes a peer's call, hands it to openraft, encodes
/// openraft's answer. openraft's own errors (a fatal shutdown, a snapshot
/// mismatch) travel in the reply so the caller sees them as the remote
/// node's; a status is for what never reached openraft.
pub struct RaftGrpc {
    id: NodeId,
    raft: Raft,
    sm: StateMachineStore,
}

impl RaftGrpc {
    /// The caller must be the node it claims to be, and not one the
    /// cluster removed.
    fn authorize<T>(&self, request: &tonic::Request<T>, from: NodeId) -> Result<(), tonic::Status> {
        let id = tls::require_node(request, from)?;
        if let Some(removed_at) = self.sm.read(|s| s.nodes.retired.get(&id).copied()) {
            return Err(tonic::Status::permission_denied(format!(
                "n{id} was removed from the cluster (log index {removed_at}); its certificate is no longer accepted"
            )));
        }
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, tonic::Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable {what}: {e}")))
}

fn reply<T: Serialize, E: Serialize>(
    result: Result<T, E>,
) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let encoded = match result {
        Ok(ok) => serde_json::to_vec(&ok).map(raft_reply::Result::Ok),
        Err(err) => serde_json::to_vec(&err).map(raft_reply::Result::Error),
    }
    .map_err(|e| tonic::Status::internal(format!("encoding the reply: {e}")))?;
    Ok(tonic::Response::new(RaftReply {
        result: Some(encoded),
    }))
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        self.authorize(&request, request.get_ref().from)?;
        let rpc: VoteRequest<NodeId> = decode("vote request", &request.get_ref().payload)?;
        tracing::debug!(from = request.get_ref().from, vote = %rpc.vote, "Raft vote request");
        reply(self.raft.vote(rpc).await)
    }

    async fn append_entries(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        self.authorize(&request, request.get_ref().from)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode("append-entries request", &request.get_ref().payload)?;
        tracing::trace!(
            from = request.get_ref().from,
            entries = rpc.entries.len(),
            "Raft append-entries"
        );
        reply(self.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<SnapshotChunk>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        self.authorize(&request, request.get_ref().from)?;
        let chunk = request.into_inner();
        tracing::debug!(
            from = chunk.from,
            offset = chunk.offset,
            bytes = chunk.data.len(),
            done = chunk.done,
            "Raft snapshot chunk"
        );
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: decode("snapshot vote", &chunk.vote)?,
            meta: decode("snapshot meta", &chunk.meta)?,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        reply(self.raft.install_snapshot(rpc).await)
    }

    async fn probe(
        &self,
        request: tonic::Request<ProbeRequest>,
    ) -> Result<tonic::Response<ProbeReply>, tonic::Status> {
        self.authorize(&request, request.get_ref().from)?;
        tracing::debug!(from = request.get_ref().from, "Raft probe");
        Ok(tonic::Response::new(ProbeReply { node_id: self.id }))
    }
}

/// The client half, handed to openraft: one cached channel per peer.
#[derive(Clone)]
pub struct Network {
    from: NodeId,
    tls: ClusterTls,
    opts: ChannelOptions,
    channels: Arc<Mutex<HashMap<NodeId, (String, Channel)>>>,
}

impl Network {
    /// The network of node `from`, which reaches its peers with `tls`.
    pub fn new(from: NodeId, tls: ClusterTls, opts: ChannelOptions) -> Network {
        Network {
            from,
            tls,
            opts,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Asks the node at `addr` who it is, within `timeout`: it must answer,
    /// over mutual TLS, as node `target`. The error says why not.
    pub async fn probe(&self, target: NodeId, addr: &str, timeout: Duration) -> Result<(), String> {
        // A channel of its own: a failed probe must not leave a broken
        // channel cached for the id.
        let channel = self
            .tls
            .channel(addr, ExpectPeer::Node(target), &self.opts)
            .map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(ProbeRequest { from: self.from });
        request.set_timeout(timeout);
        let mut client = RaftClient::new(channel);
        let call = client.probe(request);
        let reply = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(status_text(&status)),
            Err(_) => return Err(format!("no answer within {timeout:?}")),
        };
        if reply.node_id != target {
            return Err(format!("it answers as n{}", reply.node_id));
        }
        Ok(())
    }

    /// The channel to `target`, reused while its address is unchanged.
    fn channel(&self, target: NodeId, node: &NodeInfo) -> Result<Channel, tls::TlsError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((addr, channel)) = channels.get(&target) {
            if *addr == node.addr {
                return Ok(channel.clone());
            }
        }
        // Lazy: connecting happens on the first call, under the endpoint's
        // connect timeout, and again after a failure.
        let channel = self
            .tls
            .channel(&node.addr, ExpectPeer::Node(target), &self.opts)?;
        channels.insert(target, (node.addr.clone(), channel.clone()));
        Ok(channel)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let client = self.channel(target, node).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        });
        PeerClient {
            from: self.from,
            target,
            addr: node.addr.clone(),
            client: client.map_err(|e| e.to_string()),
        }
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    from: NodeId,
    target: NodeId,
    addr: String,
    /// An endpoint that could not be built (a malformed address) fails
    /// every call with its reason rather than panicking in `new_client`.
    client: Result<RaftClient<Channel>, String>,
}

/// A status as an operator should read it: its code, its message, and
/// what caused it (for a connection that failed, the TLS or socket error).
fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    append_causes(&mut text, status.source());
    text
}

/// A transport failure, as openraft's error types want one.
#[derive(Debug)]
struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for TransportError {}

// openraft's RPCError is large, and the RaftNetwork trait dictates it: the
// helpers building it return it as the trait methods must.
#[allow(clippy::result_large_err)]
impl PeerClient {
    fn client<E: Error>(&self) -> Result<RaftClient<Channel>, RPCError<NodeId, NodeInfo, E>> {
        self.client.clone().map_err(|e| {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "n{} at {}: {e}",
                self.target, self.addr
            ))))
        })
    }

    fn failed<E: Error>(&self, status: tonic::Status) -> RPCError<NodeId, NodeInfo, E> {
        let err = TransportError(format!(
            "n{} at {}: {}",
            self.target,
            self.addr,
            status_text(&status)
        ));
        // Unavailable: nothing answered (refused, reset, unreachable).
        // openraft backs off from an unreachable peer instead of retrying
        // at once.
        if status.code() == tonic::Code::Unavailable {
            RPCError::Unreachable(Unreachable::new(&err))
        } else {
            RPCError::Network(NetworkError::new(&err))
        }
    }

    fn request<T>(&self, message: T, option: &RPCOption) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(option.hard_ttl());
        request
    }

    /// Decodes a reply: openraft's response, or the error the peer's
    /// openraft returned.
    fn answer<T, E>(
        &self,
        reply: RaftReply,
    ) -> Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        T: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let bad = |what: &str, e: &dyn fmt::Display| {
            RPCError::Network(NetworkError::new(&TransportError(format!(
                "n{} at {}: {what}: {e}",
                self.target, self.addr
            ))))
        };
        match reply.result {
            Some(raft_reply::Result::Ok(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| bad("undecodable response", &e))
            }
            Some(raft_reply::Result::Error(bytes)) => {
                let err: RaftError<NodeId, E> =
                    serde_json::from_slice(&bytes).map_err(|e| bad("undecodable error", &e))?;
                Err(RPCError::RemoteError(RemoteError::new(self.target, err)))
            }
            None => Err(bad("empty reply", &"neither a response nor an error")),
        }
    }

    fn payload<T: Serialize, E: Error>(
        &self,
        rpc: &T,
    ) -> Result<Vec<u8>, RPCError<NodeId, NodeInfo, E>> {
        serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let payload = self.payload(&rpc)?;
        let request = self.request(
            RaftRequest {
                from: self.from,
                payload,
            },
            &option,
        );
        let reply = self
            .client()?
            .append_entries(request)
            .await
            .map_err(|s| self.failed(s))?;
        self.answer(reply.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let chunk = SnapshotChunk {
            from: self.from,
            vote: self.payload(&rpc.vote)?,
            meta: self.payload(&rpc.meta)?,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let request = self.request(chunk, &option);
        let reply = self
            .client()?
            .install_snapshot(request)
            .await
            .map_err(|s| self.failed(s))?;
        self.answer(reply.into_inner())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let payload = self.payload(&rpc)?;
        let request = self.request(
            RaftRequest {
                from: self.from,
                payload,
            },
            &option,
        );
        let reply = self
            .client()?
            .vote(request)
            .await
            .map_err(|s| self.failed(s))?;
        self.answer(reply.into_inner())
    }
}
