//! Wire contracts of the llmgw cluster, compiled from `proto/llmgw/v1/`.
//!
//! - [`v1::raft_server`] / [`v1::raft_client`]: the Raft transport between
//!   nodes (vote, append entries, snapshot chunks). Its payloads are opaque
//!   serde-encoded openraft types; `llmgw-cluster` owns their meaning.
//! - [`v1::admin_server`] / [`v1::admin_client`]: the admin API `llmgw-ctl`
//!   speaks to any node.
//! - [`v1::ErrorDetail`]: the structured error every service puts in a
//!   failed status's details, with the helpers below to attach, read and
//!   print it.
//!
//! This crate depends on nothing of ours, so both ends of every contract can
//! use it.

/// Generated code for package `llmgw.v1`.
pub mod v1 {
    // Generated code: its docs come from the .proto comments.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("llmgw.v1");
}

mod error;

pub use error::{status_detail, DiagnosticDisplay};
