//! Wire contracts of the llmgw cluster.
//!
//! The Raft transport between nodes and the admin API that `llmgw-ctl` speaks
//! will be defined here as protobuf and compiled with tonic/prost (issue 8).
//! The crate exists now so the workspace has its final shape; it deliberately
//! exports nothing yet.
