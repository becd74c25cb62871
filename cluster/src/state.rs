//! The replicated application state: the versioned configuration and its
//! bounded history, runtime server states and weights, the last clear of
//! each stick table, and the node-id registry.
//!
//! Pure data and deterministic transitions: no I/O, no clock, no randomness,
//! so every node that applies the same entries holds the same state. The
//! state machine store (`sm`) wraps it with persistence and snapshots.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{AdminState, Command, ConfigFormat, Refusal, Response, MAX_WEIGHT};
use crate::types::{LogId, NodeId, NodeInfo, StoredMembership};

/// How many configuration versions are kept, the current one included.
/// Enough to diff and roll back recent changes; older versions live in the
/// operators' own version control.
pub const HISTORY_LIMIT: usize = 16;

/// One version of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub version: u64,
    pub format: ConfigFormat,
    /// Shared: copies of the state (one per published change) share the
    /// texts.
    pub text: Arc<str>,
    /// The log index that committed it.
    pub log_index: u64,
}

/// Runtime settings of one server, set by operators; unset fields leave the
/// configuration's value in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRuntime {
    pub state: Option<AdminState>,
    pub weight: Option<u32>,
}

/// The last `clear table` of a table: nodes clear their local copy when
/// they apply it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableClear {
    pub key: Option<String>,
    pub log_index: u64,
}

/// Every node id the cluster has handed out, so none is ever reused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistry {
    /// Ids registered (by a join, or seen in a membership) and not removed.
    pub active: BTreeMap<NodeId, NodeInfo>,
    /// Ids removed from the membership, with the log index that removed them.
    pub retired: BTreeMap<NodeId, u64>,
}

impl NodeRegistry {
    /// Whether `id` may be (or already is) used by a node at `addr`.
    pub fn check(&self, id: NodeId, addr: &str) -> Result<(), Refusal> {
        if let Some(&removed_at) = self.retired.get(&id) {
            return Err(Refusal::NodeIdRetired { id, removed_at });
        }
        match self.active.get(&id) {
            Some(node) if node.addr != addr => Err(Refusal::NodeIdTaken {
                id,
                addr: node.addr.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The last entry applied; the snapshot built from this state covers the
    /// log up to it.
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    /// 0 until the first configuration is applied.
    pub config_version: u64,
    /// Newest last; the current configuration is the last element.
    pub history: VecDeque<ConfigRecord>,
    /// backend → server → runtime settings.
    pub servers: BTreeMap<String, BTreeMap<String, ServerRuntime>>,
    pub table_clears: BTreeMap<String, TableClear>,
    pub nodes: NodeRegistry,
}

impl ClusterState {
    /// The configuration in force, if any was applied.
    pub fn current_config(&self) -> Option<&ConfigRecord> {
        self.history.back()
    }

    pub fn config_at(&self, version: u64) -> Option<&ConfigRecord> {
        self.history.iter().find(|r| r.version == version)
    }

    pub fn server(&self, backend: &str, server: &str) -> Option<&ServerRuntime> {
        self.servers.get(backend)?.get(server)
    }

    /// Applies one command committed at `log_id`.
    pub fn apply_command(&mut self, cmd: &Command, log_id: LogId) -> Response {
        self.last_applied = Some(log_id);
        match self.try_apply(cmd, log_id.index) {
            Ok(()) => Response::Applied {
                config_version: self.config_version,
            },
            Err(refusal) => Response::Refused(refusal),
        }
    }

    fn try_apply(&mut self, cmd: &Command, index: u64) -> Result<(), Refusal> {
        match cmd {
            Command::ApplyConfig {
                text,
                format,
                expected_version,
            } => {
                if let Some(expected) = *expected_version {
                    if expected != self.config_version {
                        return Err(Refusal::VersionConflict {
                            expected,
                            current: self.config_version,
                        });
                    }
                }
                self.config_version += 1;
                self.history.push_back(ConfigRecord {
                    version: self.config_version,
                    format: *format,
                    text: Arc::from(text.as_str()),
                    log_index: index,
                });
                while self.history.len() > HISTORY_LIMIT {
                    self.history.pop_front();
                }
            }
            Command::SetServerState {
                backend,
                server,
                state,
            } => {
                self.server_mut(backend, server).state = Some(*state);
            }
            Command::SetServerWeight {
                backend,
                server,
                weight,
            } => {
                if *weight > MAX_WEIGHT {
                    return Err(Refusal::WeightOutOfRange { weight: *weight });
                }
                self.server_mut(backend, server).weight = Some(*weight);
            }
            Command::ClearTable { table, key } => {
                self.table_clears.insert(
                    table.clone(),
                    TableClear {
                        key: key.clone(),
                        log_index: index,
                    },
                );
            }
            Command::RegisterNode { id, addr } => {
                self.nodes.check(*id, addr)?;
                self.nodes.active.insert(*id, NodeInfo::new(addr.clone()));
            }
        }
        Ok(())
    }

    fn server_mut(&mut self, backend: &str, server: &str) -> &mut ServerRuntime {
        self.servers
            .entry(backend.to_string())
            .or_default()
            .entry(server.to_string())
            .or_default()
    }

    /// Applies a membership entry: members appearing are registered, members
    /// disappearing are retired for good.
    pub fn apply_membership(&mut self, membership: StoredMembership) {
        let index = membership.log_id().map(|l| l.index).unwrap_or(0);
        if let Some(log_id) = membership.log_id() {
            self.last_applied = Some(*log_id);
        }
        let before: BTreeSet<NodeId> = self
            .last_membership
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        for (id, node) in membership.membership().nodes() {
            self.nodes.active.entry(*id).or_insert_with(|| node.clone());
        }
        let after: BTreeSet<NodeId> = membership.membership().nodes().map(|(id, _)| *id).collect();
        for id in before.difference(&after) {
            self.nodes.active.remove(id);
            self.nodes.retired.entry(*id).or_insert(index);
        }
        self.last_membership = membership;
    }

    /// A blank entry (a new leader's first) moves only the applied position.
    pub fn apply_blank(&mut self, log_id: LogId) {
        self.last_applied = Some(log_id);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Membership};

    use super::*;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn config(text: &str, expected_version: Option<u64>) -> Command {
        Command::ApplyConfig {
            text: text.into(),
            format: ConfigFormat::Toml,
            expected_version,
        }
    }

    fn membership(index: u64, voters: &[NodeId]) -> StoredMembership {
        let nodes: BTreeMap<NodeId, NodeInfo> = voters
            .iter()
            .map(|id| (*id, NodeInfo::new(format!("n{id}:7000"))))
            .collect();
        let voter_set = voters.iter().copied().collect::<BTreeSet<_>>();
        StoredMembership::new(Some(log_id(index)), Membership::new(vec![voter_set], nodes))
    }

    #[test]
    fn config_versions_count_up_and_compare_and_set_refuses_a_stale_version() {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply_command(&config("a", Some(0)), log_id(1)),
            Response::Applied { config_version: 1 }
        );
        assert_eq!(
            s.apply_command(&config("b", None), log_id(2)),
            Response::Applied { config_version: 2 }
        );
        let refused = s.apply_command(&config("c", Some(1)), log_id(3));
        assert_eq!(
            refused,
            Response::Refused(Refusal::VersionConflict {
                expected: 1,
                current: 2
            })
        );
        assert_eq!(s.current_config().map(|c| &*c.text), Some("b"));
        assert_eq!(s.current_config().map(|c| c.log_index), Some(2));
        // A refused command still moves the applied position.
        assert_eq!(s.last_applied, Some(log_id(3)));
    }

    #[test]
    fn history_is_bounded_and_keeps_the_newest() {
        let mut s = ClusterState::default();
        for i in 0..(HISTORY_LIMIT as u64 + 5) {
            s.apply_command(&config(&format!("v{}", i + 1), None), log_id(i + 1));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.config_version, HISTORY_LIMIT as u64 + 5);
        assert!(s.config_at(5).is_none());
        assert_eq!(s.config_at(6).map(|c| &*c.text), Some("v6"));
    }

    #[test]
    fn server_state_and_weight_are_kept_by_name_and_weight_is_bounded() {
        let mut s = ClusterState::default();
        s.apply_command(
            &Command::SetServerState {
                backend: "chat".into(),
                server: "a".into(),
                state: AdminState::Drain,
            },
            log_id(1),
        );
        s.apply_command(
            &Command::SetServerWeight {
                backend: "chat".into(),
                server: "a".into(),
                weight: 7,
            },
            log_id(2),
        );
        let refused = s.apply_command(
            &Command::SetServerWeight {
                backend: "chat".into(),
                server: "a".into(),
                weight: 300,
            },
            log_id(3),
        );
        assert_eq!(
            refused,
            Response::Refused(Refusal::WeightOutOfRange { weight: 300 })
        );
        assert_eq!(
            s.server("chat", "a"),
            Some(&ServerRuntime {
                state: Some(AdminState::Drain),
                weight: Some(7)
            })
        );
    }

    #[test]
    fn a_removed_node_id_is_retired_and_never_registered_again() {
        let mut s = ClusterState::default();
        s.apply_membership(membership(1, &[1, 2, 3]));
        assert_eq!(
            s.apply_command(
                &Command::RegisterNode {
                    id: 2,
                    addr: "n2:7000".into()
                },
                log_id(2)
            ),
            Response::Applied { config_version: 0 },
            "re-registering a member at its own address is idempotent"
        );
        s.apply_membership(membership(3, &[1, 3]));
        assert_eq!(s.nodes.retired.get(&2), Some(&3));
        let refused = s.apply_command(
            &Command::RegisterNode {
                id: 2,
                addr: "n2:7000".into(),
            },
            log_id(4),
        );
        let Response::Refused(refusal) = refused else {
            panic!("a retired id was accepted: {refused:?}");
        };
        assert_eq!(
            refusal.to_string(),
            "node id 2 was removed from the cluster (log index 3) and can never be reused; give the node a new id"
        );
        let moved = s.apply_command(
            &Command::RegisterNode {
                id: 3,
                addr: "elsewhere:7000".into(),
            },
            log_id(5),
        );
        assert!(matches!(
            moved,
            Response::Refused(Refusal::NodeIdTaken { id: 3, .. })
        ));
    }

    #[test]
    fn a_registered_id_that_is_not_yet_a_member_is_not_retired() {
        let mut s = ClusterState::default();
        s.apply_membership(membership(1, &[1]));
        s.apply_command(
            &Command::RegisterNode {
                id: 4,
                addr: "n4:7000".into(),
            },
            log_id(2),
        );
        s.apply_membership(membership(3, &[1]));
        assert!(s.nodes.retired.is_empty());
        assert!(s.nodes.active.contains_key(&4));
    }
}
