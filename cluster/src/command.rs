//! The commands the replicated log carries and what applying one answers.
//!
//! These are the cluster's half of the node's command type: every change an
//! operator makes (a configuration, a server's admin state or weight, a
//! cleared table) is one of these, decided by Raft and applied in the same
//! order on every node. Membership changes are not here: openraft carries
//! them as its own entries, and the state machine observes them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// The dialect a configuration text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    Toml,
    Haproxy,
}

/// HAProxy's administrative server states (`set server b/s state ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Ready,
    Drain,
    Maint,
}

/// The highest weight HAProxy accepts; 0 drains.
pub const MAX_WEIGHT: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Replace the configuration. The text was validated by the node that
    /// proposed it; the state machine only versions it. With
    /// `expected_version`, it applies only if the cluster is still at that
    /// version (a compare-and-set, so two operators cannot overwrite each
    /// other unknowingly).
    ApplyConfig {
        text: String,
        format: ConfigFormat,
        expected_version: Option<u64>,
    },
    SetServerState {
        backend: String,
        server: String,
        state: AdminState,
    },
    SetServerWeight {
        backend: String,
        server: String,
        weight: u32,
    },
    /// Clear a stick table, or one key of it.
    ClearTable { table: String, key: Option<String> },
    /// Reserve a node id for `addr` before the node is added as a learner.
    /// Decided through the log so that two concurrent joins cannot both
    /// claim an id, and a retired id is refused everywhere alike.
    RegisterNode { id: NodeId, addr: String },
}

/// What applying an entry answered, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied; the configuration version after it.
    Applied { config_version: u64 },
    /// Not applied, for a reason every node agrees on.
    Refused(Refusal),
}

/// Why the state machine refused a command. Deterministic: every node
/// refuses the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    VersionConflict {
        expected: u64,
        current: u64,
    },
    WeightOutOfRange {
        weight: u32,
    },
    /// The id belonged to a node that was removed: ids are never reused.
    NodeIdRetired {
        id: NodeId,
        removed_at: u64,
    },
    /// The id is registered with another address: a node's address does not
    /// change in place.
    NodeIdTaken {
        id: NodeId,
        addr: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VersionConflict { expected, current } => write!(
                f,
                "configuration changed meanwhile: expected version {expected}, the cluster is at {current}"
            ),
            Refusal::WeightOutOfRange { weight } => {
                write!(f, "weight {weight} is out of range 0..={MAX_WEIGHT}")
            }
            Refusal::NodeIdRetired { id, removed_at } => write!(
                f,
                "node id {id} was removed from the cluster (log index {removed_at}) and can never be reused; give the node a new id"
            ),
            Refusal::NodeIdTaken { id, addr } => write!(
                f,
                "node id {id} is already registered at {addr}; a node's address cannot change in place: remove it and join under a new id"
            ),
        }
    }
}

impl std::error::Error for Refusal {}
