//! The admin API `llmgw-ctl` speaks (`proto/llmgw/v1/admin.proto`), served
//! by every node on its cluster address.
//!
//! Any node answers any call: a change asked of a follower is forwarded to
//! the leader (one hop, marked so that it is never forwarded twice), reads
//! are answered from the local state machine, linearizably unless the
//! caller asks for `stale` reads. Every failure carries an [`ErrorDetail`]
//! the CLI prints as is: no quorum naming the members that did not answer,
//! an invalid configuration as `FILE:LINE: message`, a version conflict
//! with the current version.

use std::sync::{Arc, OnceLock};

use llmgw_cluster::{AdminState, Command, ConfigFormat};
use llmgw_proto::v1::admin_server::{Admin, AdminServer};
use llmgw_proto::v1::{self as pb, Diagnostic, ErrorDetail, ErrorKind, Severity};
use tonic::{Request, Response, Status};

use super::{not_found, Control};

/// Marks a call forwarded by a follower: the leader answers it itself or
/// fails, never forwards it again.
const FORWARDED: &str = "x-llmgw-forwarded";

/// The gRPC service, finding its node in `slot` once it has started.
pub fn server(slot: Arc<OnceLock<Arc<Control>>>) -> AdminServer<AdminApi> {
    AdminServer::new(AdminApi { slot })
}

pub struct AdminApi {
    slot: Arc<OnceLock<Arc<Control>>>,
}

fn fail(d: ErrorDetail) -> Status {
    d.into_status()
}

impl AdminApi {
    fn control(&self) -> Result<&Arc<Control>, Status> {
        self.slot.get().ok_or_else(|| {
            fail(ErrorDetail::new(
                ErrorKind::Internal,
                "the node is starting; try again",
            ))
        })
    }
}

/// The leader's admin client, for a call this node cannot answer itself.
/// `Err` when the call was forwarded already or no leader is known.
async fn leader_client<T>(
    c: &Control,
    req: &Request<T>,
) -> Result<pb::admin_client::AdminClient<tonic::transport::Channel>, Status> {
    if req.metadata().contains_key(FORWARDED) {
        return Err(fail(ErrorDetail::new(
            ErrorKind::NotLeader,
            "forwarded to a node that is not the leader (leadership is changing); try again",
        )));
    }
    let Some((id, addr)) = c.leader() else {
        return Err(fail(c.no_quorum()));
    };
    c.client(&addr).map_err(|e| {
        fail(ErrorDetail::new(
            ErrorKind::NoQuorum,
            format!("the leader n{id} cannot be reached: {e}"),
        ))
    })
}

fn forwarded<T>(inner: T) -> Request<T> {
    let mut r = Request::new(inner);
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r
}

/// Runs `$call` on the leader when this node is not it.
macro_rules! on_leader {
    ($c:expr, $req:expr, $method:ident) => {
        if !$c.node.is_leader() {
            let mut client = leader_client($c, &$req).await?;
            return client.$method(forwarded($req.into_inner())).await;
        }
    };
}

fn format_of(f: i32) -> Result<(ConfigFormat, bool), Status> {
    match pb::ConfigFormat::try_from(f).unwrap_or(pb::ConfigFormat::Unspecified) {
        pb::ConfigFormat::Haproxy => Ok((ConfigFormat::Haproxy, true)),
        pb::ConfigFormat::Toml | pb::ConfigFormat::Unspecified => Ok((ConfigFormat::Toml, false)),
    }
}

fn pb_format(f: ConfigFormat) -> i32 {
    match f {
        ConfigFormat::Toml => pb::ConfigFormat::Toml as i32,
        ConfigFormat::Haproxy => pb::ConfigFormat::Haproxy as i32,
    }
}

/// Reads a configuration text as this node would serve it: `Ok` with
/// its warnings, `Err` with every problem.
fn validate(
    c: &Control,
    name: &str,
    text: &str,
    haproxy: bool,
) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let base = c.reloader().base();
    let diag = |severity: Severity, d: &crate::config::diag::Diag| Diagnostic {
        severity: severity as i32,
        file: d.file.clone(),
        line: d.line as u32,
        column: 0,
        field: String::new(),
        message: d.message.clone(),
    };
    match crate::config::load_text(name, text, haproxy, &base, false) {
        Ok((_, warnings)) => Ok(warnings
            .iter()
            .map(|d| diag(Severity::Warning, d))
            .collect()),
        Err(diags) => Err(diags.0.iter().map(|d| diag(Severity::Error, d)).collect()),
    }
}

/// `config apply`, shared with a node's own reload: validated here, then
/// written through the leader.
pub async fn apply_config(
    c: &Control,
    name: &str,
    text: String,
    format: pb::ConfigFormat,
    expected_version: Option<u64>,
) -> Result<pb::ConfigApplyReply, ErrorDetail> {
    let haproxy = format == pb::ConfigFormat::Haproxy;
    let warnings = validate(c, name, &text, haproxy).map_err(ErrorDetail::invalid_config)?;
    if c.node.is_leader() {
        let (log_index, version) = c
            .write(Command::ApplyConfig {
                text,
                format: if haproxy {
                    ConfigFormat::Haproxy
                } else {
                    ConfigFormat::Toml
                },
                expected_version,
            })
            .await?;
        return Ok(pb::ConfigApplyReply {
            version,
            log_index,
            warnings,
        });
    }
    let Some((id, addr)) = c.leader() else {
        return Err(c.no_quorum());
    };
    let mut client = c.client(&addr).map_err(|e| {
        ErrorDetail::new(
            ErrorKind::NoQuorum,
            format!("the leader n{id} cannot be reached: {e}"),
        )
    })?;
    let req = pb::ConfigApplyRequest {
        text,
        format: format as i32,
        expected_version,
        source_name: name.to_owned(),
    };
    client
        .config_apply(forwarded(req))
        .await
        .map(Response::into_inner)
        .map_err(|s| {
            llmgw_proto::status_detail(&s)
                .unwrap_or_else(|| ErrorDetail::new(ErrorKind::Internal, s.message()))
        })
}

fn members(c: &Control) -> Vec<pb::Member> {
    let m = c.node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let last = m.last_log_index.unwrap_or(0);
    // Replication progress is known to the leader only: a follower lists
    // the members, with no progress but its own and the leader's contact.
    let leads = m.replication.is_some();
    let voters: Vec<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| {
            let matched = if *id == c.node.id {
                m.last_log_index
            } else if !leads {
                None
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .and_then(|l| l.as_ref())
                    .map(|l| l.index)
            };
            pb::Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag: matched.map_or(0, |i| last.saturating_sub(i)),
                reachable: *id == c.node.id
                    || (!leads && m.current_leader == Some(*id))
                    || m.replication.as_ref().is_some_and(|r| {
                        r.get(id)
                            .and_then(|l| l.as_ref())
                            .is_some_and(|l| last.saturating_sub(l.index) <= 1)
                    }),
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusReply>, Status> {
        let c = self.control()?;
        let m = c.node.raft.metrics().borrow().clone();
        let role = match m.state {
            openraft::ServerState::Leader => pb::NodeRole::Leader,
            openraft::ServerState::Follower => pb::NodeRole::Follower,
            openraft::ServerState::Candidate => pb::NodeRole::Candidate,
            openraft::ServerState::Learner => pb::NodeRole::Learner,
            openraft::ServerState::Shutdown => pb::NodeRole::Shutdown,
        };
        Ok(Response::new(pb::ClusterStatusReply {
            node_id: c.node.id,
            role: role as i32,
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            config_version: c.applied_version(),
            members: members(c),
        }))
    }

    async fn cluster_members(
        &self,
        req: Request<pb::ClusterMembersRequest>,
    ) -> Result<Response<pb::ClusterMembersReply>, Status> {
        let c = self.control()?;
        // Who is caught up and reachable is the leader's knowledge.
        on_leader!(c, req, cluster_members);
        let retired = c
            .node
            .sm
            .read(|st| st.nodes.retired.keys().copied().collect());
        Ok(Response::new(pb::ClusterMembersReply {
            members: members(c),
            retired_ids: retired,
        }))
    }

    async fn cluster_join(
        &self,
        req: Request<pb::ClusterJoinRequest>,
    ) -> Result<Response<pb::ClusterJoinReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, cluster_join);
        let r = req.into_inner();
        let _one = c.membership.lock().await;
        let joined = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            c.node.join(r.node_id, &r.addr, r.learner_only),
        )
        .await
        .map_err(|_| {
            fail(ErrorDetail::new(
                ErrorKind::Internal,
                format!(
                    "n{} at {} did not catch up within 60 s (is it running, and reachable from the leader?)",
                    r.node_id, r.addr
                ),
            ))
        })?;
        joined.map_err(|e| fail(e.to_detail()))?;
        Ok(Response::new(pb::ClusterJoinReply {
            members: members(c),
        }))
    }

    async fn cluster_remove(
        &self,
        req: Request<pb::ClusterRemoveRequest>,
    ) -> Result<Response<pb::ClusterRemoveReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, cluster_remove);
        let id = req.into_inner().node_id;
        let _one = c.membership.lock().await;
        tokio::time::timeout(super::WRITE_TIMEOUT, c.node.remove(id))
            .await
            .map_err(|_| fail(c.no_quorum()))?
            .map_err(|e| fail(e.to_detail()))?;
        Ok(Response::new(pb::ClusterRemoveReply {
            members: members(c),
        }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        let c = self.control()?;
        let to = req.get_ref().to.unwrap_or(c.node.id);
        if to != c.node.id {
            // The target campaigns itself: forwarded to it.
            let addr = c
                .node
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&to)
                .map(|n| n.addr.clone())
                .ok_or_else(|| fail(not_found(format!("n{to} is not a member"))))?;
            if req.metadata().contains_key(FORWARDED) {
                return Err(fail(ErrorDetail::new(
                    ErrorKind::Internal,
                    "forwarded twice",
                )));
            }
            let mut client = c
                .client(&addr)
                .map_err(|e| fail(ErrorDetail::new(ErrorKind::Internal, e)))?;
            return client.transfer_leader(forwarded(req.into_inner())).await;
        }
        // openraft 0.9 has no hand-over: this node, whose log is up to
        // date, starts an election, which it wins.
        c.node
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| fail(ErrorDetail::new(ErrorKind::Internal, e.to_string())))?;
        let mut m = c.node.raft.metrics();
        tokio::time::timeout(
            super::WRITE_TIMEOUT,
            m.wait_for(|m| m.current_leader == Some(to)),
        )
        .await
        .map_err(|_| fail(c.no_quorum()))?
        .map_err(|e| fail(ErrorDetail::new(ErrorKind::Internal, e.to_string())))?;
        Ok(Response::new(pb::TransferLeaderReply { leader_id: to }))
    }

    async fn config_get(
        &self,
        req: Request<pb::ConfigGetRequest>,
    ) -> Result<Response<pb::ConfigGetReply>, Status> {
        let c = self.control()?;
        if req.get_ref().linearizable {
            // Only the leader can vouch that nothing newer is committed.
            on_leader!(c, req, config_get);
            c.node
                .raft
                .ensure_linearizable()
                .await
                .map_err(|_| fail(c.no_quorum()))?;
        }
        let r = req.into_inner();
        let record = c.node.sm.read(|st| match r.version {
            Some(v) => st.config_at(v).cloned(),
            None => st.current_config().cloned(),
        });
        let rec = record.ok_or_else(|| {
            fail(not_found(match r.version {
                Some(v) => format!("configuration version {v} is not in the history"),
                None => "no configuration yet".to_owned(),
            }))
        })?;
        Ok(Response::new(pb::ConfigGetReply {
            version: rec.version,
            format: pb_format(rec.format),
            text: rec.text.to_string(),
            log_index: rec.log_index,
        }))
    }

    async fn config_apply(
        &self,
        req: Request<pb::ConfigApplyRequest>,
    ) -> Result<Response<pb::ConfigApplyReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, config_apply);
        let r = req.into_inner();
        let format = pb::ConfigFormat::try_from(r.format).unwrap_or(pb::ConfigFormat::Toml);
        let name = if r.source_name.is_empty() {
            "<config apply>".to_owned()
        } else {
            r.source_name
        };
        apply_config(c, &name, r.text, format, r.expected_version)
            .await
            .map(Response::new)
            .map_err(fail)
    }

    async fn config_diff(
        &self,
        req: Request<pb::ConfigDiffRequest>,
    ) -> Result<Response<pb::ConfigDiffReply>, Status> {
        let c = self.control()?;
        let r = req.into_inner();
        let record = c.node.sm.read(|st| match r.against_version {
            Some(v) => st.config_at(v).cloned(),
            None => st.current_config().cloned(),
        });
        let (version, old) = record.map_or((0, String::new()), |rec| {
            (rec.version, rec.text.to_string())
        });
        let diff = super::diff::unified(&format!("v{version}"), &old, "new", &r.text)
            .map_err(|e| fail(ErrorDetail::new(ErrorKind::Refused, e)))?;
        Ok(Response::new(pb::ConfigDiffReply {
            against_version: version,
            unified_diff: diff,
        }))
    }

    async fn config_validate(
        &self,
        req: Request<pb::ConfigValidateRequest>,
    ) -> Result<Response<pb::ConfigValidateReply>, Status> {
        let c = self.control()?;
        let r = req.into_inner();
        let (_, haproxy) = format_of(r.format)?;
        let name = if r.source_name.is_empty() {
            "<config validate>"
        } else {
            &r.source_name
        };
        let (valid, diagnostics) = match validate(c, name, &r.text, haproxy) {
            Ok(w) => (true, w),
            Err(e) => (false, e),
        };
        Ok(Response::new(pb::ConfigValidateReply {
            valid,
            diagnostics,
        }))
    }

    async fn config_history(
        &self,
        req: Request<pb::ConfigHistoryRequest>,
    ) -> Result<Response<pb::ConfigHistoryReply>, Status> {
        let c = self.control()?;
        let limit = match req.into_inner().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let entries = c.node.sm.read(|st| {
            st.history
                .iter()
                .rev()
                .take(limit)
                .map(|rec| pb::ConfigHistoryEntry {
                    version: rec.version,
                    format: pb_format(rec.format),
                    log_index: rec.log_index,
                    text_bytes: rec.text.len() as u64,
                    sha256: ring::digest::digest(&ring::digest::SHA256, rec.text.as_bytes())
                        .as_ref()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                })
                .collect()
        });
        Ok(Response::new(pb::ConfigHistoryReply { entries }))
    }

    async fn set_server_state(
        &self,
        req: Request<pb::ServerStateRequest>,
    ) -> Result<Response<pb::ServerStateReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, set_server_state);
        let r = req.into_inner();
        known_server(c, &r.backend, &r.server)?;
        let state = match pb::ServerAdminState::try_from(r.state) {
            Ok(pb::ServerAdminState::Ready) => AdminState::Ready,
            Ok(pb::ServerAdminState::Drain) => AdminState::Drain,
            Ok(pb::ServerAdminState::Maint) => AdminState::Maint,
            _ => {
                return Err(fail(ErrorDetail::new(
                    ErrorKind::Refused,
                    "state must be ready, drain or maint",
                )))
            }
        };
        let (log_index, _) = c
            .write(Command::SetServerState {
                backend: r.backend,
                server: r.server,
                state,
            })
            .await
            .map_err(fail)?;
        Ok(Response::new(pb::ServerStateReply { log_index }))
    }

    async fn set_server_weight(
        &self,
        req: Request<pb::ServerWeightRequest>,
    ) -> Result<Response<pb::ServerWeightReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, set_server_weight);
        let r = req.into_inner();
        known_server(c, &r.backend, &r.server)?;
        let (log_index, _) = c
            .write(Command::SetServerWeight {
                backend: r.backend,
                server: r.server,
                weight: r.weight,
            })
            .await
            .map_err(fail)?;
        Ok(Response::new(pb::ServerWeightReply { log_index }))
    }

    async fn table_show(
        &self,
        req: Request<pb::TableShowRequest>,
    ) -> Result<Response<pb::TableShowReply>, Status> {
        let c = self.control()?;
        let r = req.into_inner();
        let snap = c.shared().current.load();
        let found = crate::admin::stat::tables(&snap);
        let tables = found
            .iter()
            .map(|t| pb::TableSummary {
                name: t.table.name.to_string(),
                key_type: t.table.key_type.to_string(),
                size: t.size,
                used: t.table.len() as u64,
            })
            .collect();
        let mut entries = Vec::new();
        if let Some(name) = &r.table {
            let t = found
                .iter()
                .find(|t| *t.table.name == **name)
                .ok_or_else(|| fail(not_found(format!("no table '{name}'"))))?;
            let limit = if r.limit == 0 { 1000 } else { r.limit as usize };
            for e in t.table.dump() {
                let key = crate::admin::stat::key_text(&t.table.key_type, &e.key);
                if !key.starts_with(&r.key_prefix) {
                    continue;
                }
                if entries.len() >= limit {
                    break;
                }
                entries.push(pb::TableEntry {
                    key,
                    expire_ms: e.expires_in_ms.unwrap_or(0),
                    data: e
                        .values
                        .iter()
                        .map(|(col, v)| (crate::admin::stat::data_name(col), *v))
                        .collect(),
                });
            }
        }
        Ok(Response::new(pb::TableShowReply { tables, entries }))
    }

    async fn table_clear(
        &self,
        req: Request<pb::TableClearRequest>,
    ) -> Result<Response<pb::TableClearReply>, Status> {
        let c = self.control()?;
        on_leader!(c, req, table_clear);
        let r = req.into_inner();
        let snap = c.shared().current.load();
        if !crate::admin::stat::tables(&snap)
            .iter()
            .any(|t| *t.table.name == *r.table)
        {
            return Err(fail(not_found(format!("no table '{}'", r.table))));
        }
        let (log_index, _) = c
            .write(Command::ClearTable {
                table: r.table,
                key: r.key,
            })
            .await
            .map_err(fail)?;
        Ok(Response::new(pb::TableClearReply { log_index }))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsReply>, Status> {
        let c = self.control()?;
        let only = req.into_inner().backend;
        let snap = c.shared().current.load();
        let mut servers = Vec::new();
        for (b, rt) in snap.config.backends.iter().zip(&snap.backends) {
            if !only.is_empty() && b.name != only {
                continue;
            }
            for st in rt.balancer.servers() {
                let h = st.health_view();
                let relaxed = std::sync::atomic::Ordering::Relaxed;
                servers.push(pb::ServerStats {
                    backend: b.name.clone(),
                    server: st.name.to_string(),
                    status: crate::admin::stat::server_status(st, &h),
                    weight: h.effective_weight,
                    current_sessions: u64::from(st.active()),
                    total_sessions: st.total(),
                    queue_current: u64::from(st.queued()),
                    bytes_in: st.stats.bytes_in.load(relaxed),
                    bytes_out: st.stats.bytes_out.load(relaxed),
                    check_failures: h.checks_failed,
                });
            }
        }
        Ok(Response::new(pb::StatsReply {
            node_id: c.node.id,
            servers,
        }))
    }
}

/// NOT_FOUND unless `backend/server` is in the configuration in force.
fn known_server(c: &Control, backend: &str, server: &str) -> Result<(), Status> {
    let snap = c.shared().current.load();
    let Some(b) = snap.config.backends.iter().find(|b| b.name == backend) else {
        return Err(fail(not_found(format!("no backend '{backend}'"))));
    };
    if !b.servers.iter().any(|s| s.name == server) {
        return Err(fail(not_found(format!(
            "backend '{backend}' has no server '{server}'"
        ))));
    }
    Ok(())
}
