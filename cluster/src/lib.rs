//! Cluster membership and replication for llmgw.
//!
//! Raft (openraft) for configuration and runtime commands, SWIM gossip (foca)
//! for node liveness and backend health, and counter aggregation for shared
//! stick tables arrive with issue 8 and its successors. The data plane in
//! `node/` already applies every change as a command, so this crate will talk
//! to it only through that command type.
