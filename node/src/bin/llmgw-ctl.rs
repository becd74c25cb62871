//! `llmgw-ctl`: drives an llmgw cluster through any of its nodes.
//!
//! Every command talks to one node's admin API (`--node ADDR`, its
//! cluster address); a change sent to a follower is forwarded to the
//! leader by the node, so any node will do. Output is a table for people
//! or JSON (`--output json`) for scripts; a failure prints the node's
//! sentence (`no quorum: unreachable n2, n3`, `FILE:LINE: …`) on stderr
//! and exits non-zero.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use llmgw::control::{client, describe_status};
use llmgw_cluster::{certs, CertFiles, ClusterTls};
use llmgw_proto::v1 as pb;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "llmgw-ctl",
    version,
    about = "Drive an llmgw cluster through any of its nodes"
)]
struct Cli {
    /// A node's cluster address (host:port); any member will do.
    #[arg(
        long,
        global = true,
        env = "LLMGW_NODE",
        default_value = "127.0.0.1:7400"
    )]
    node: String,
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    /// This client's certificate, its key and the cluster CA (`ca.pem`,
    /// `client.pem`, `client-key.pem`); a node that started a cluster by
    /// itself made an `admin` one in its `DATA_DIR/tls`.
    #[arg(
        long,
        global = true,
        env = "LLMGW_TLS_DIR",
        default_value = "llmgw-data/tls"
    )]
    tls_dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Membership and leadership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The replicated configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Servers: list them, change their admin state or weight on every node.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Stick tables of the node asked.
    #[command(subcommand)]
    Table(TableCmd),
    /// Per-server traffic of the node asked.
    Stats {
        /// Only this backend.
        backend: Option<String>,
    },
    /// The cluster's certificates (nothing is sent anywhere: files only).
    #[command(subcommand)]
    Cert(CertCmd),
}

#[derive(Subcommand)]
enum CertCmd {
    /// Make a cluster CA in DIR (ca.pem, ca-key.pem; never overwritten).
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node's certificate (for llmgw run --tls-dir OUT).
    Node {
        /// The CA's directory.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        id: u64,
        /// A host name or IP address the node is reached at (repeat).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a client certificate (for llmgw-ctl --tls-dir OUT).
    Client {
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// This node's view: role, term, leader, log, configuration version, members.
    Status,
    /// Members (voters and learners) and retired ids.
    Members,
    /// Add a running node (started with a new data directory and --node-id).
    Join {
        #[arg(long)]
        id: u64,
        /// Its cluster address.
        #[arg(long)]
        addr: String,
        /// Keep it a learner (replicated to, not voting).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member; its id can never be used again.
    Remove { id: u64 },
    /// Make another node (or the one asked) the leader.
    TransferLeader {
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the configuration in force (linearizable unless --stale).
    Get {
        #[arg(long)]
        version: Option<u64>,
        /// Answer from the node's own state, without asking the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Validate FILE and make it the cluster's configuration.
    Apply {
        file: PathBuf,
        /// Apply only if the cluster is still at this version.
        #[arg(long)]
        expect_version: Option<u64>,
    },
    /// What applying FILE would change.
    Diff {
        file: PathBuf,
        #[arg(long)]
        against: Option<u64>,
    },
    /// Validate FILE as the node would read it.
    Validate { file: PathBuf },
    /// The versions kept.
    History {
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum ServerCmd {
    /// Servers with state, weight and traffic (of the node asked).
    List { backend: Option<String> },
    /// Takes traffic again.
    Ready { server: String },
    /// No new requests; in-flight ones finish.
    Drain { server: String },
    /// No traffic at all.
    Maint { server: String },
    /// Sets the weight (0..=256) on every node.
    Weight { server: String, weight: u32 },
}

#[derive(Subcommand)]
enum TableCmd {
    /// Tables, or one table's entries.
    Show {
        table: Option<String>,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Clear a table (or one key) on every node.
    Clear {
        table: String,
        #[arg(long)]
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmgw-ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(v) => {
            print(cli.output, &v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("llmgw-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a configuration file, and says which dialect it is in.
fn read(file: &PathBuf) -> Result<(String, pb::ConfigFormat, String), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let format = if llmgw::config::is_haproxy(file) {
        pb::ConfigFormat::Haproxy
    } else {
        pb::ConfigFormat::Toml
    };
    Ok((text, format, file.display().to_string()))
}

fn split_server(s: &str) -> Result<(String, String), String> {
    s.split_once('/')
        .map(|(b, s)| (b.to_owned(), s.to_owned()))
        .ok_or_else(|| format!("'{s}': expected BACKEND/SERVER"))
}

fn role(r: i32) -> &'static str {
    match pb::NodeRole::try_from(r).unwrap_or(pb::NodeRole::Unspecified) {
        pb::NodeRole::Leader => "leader",
        pb::NodeRole::Follower => "follower",
        pb::NodeRole::Candidate => "candidate",
        pb::NodeRole::Learner => "learner",
        pb::NodeRole::Shutdown => "shutdown",
        pb::NodeRole::Unspecified => "unknown",
    }
}

fn members(ms: &[pb::Member]) -> Value {
    Value::Array(
        ms.iter()
            .map(|m| {
                json!({
                    "id": m.id, "addr": m.addr,
                    "role": if m.voter { "voter" } else { "learner" },
                    "matched_index": m.matched_index, "lag": m.lag, "reachable": m.reachable,
                })
            })
            .collect(),
    )
}

/// Runs the command; the answer as JSON (printed as a table unless asked).
async fn run(cli: &Cli) -> Result<Value, String> {
    if let Cmd::Cert(cmd) = &cli.command {
        return cert(cmd);
    }
    let tls = ClusterTls::load(&CertFiles::client(&cli.tls_dir)).map_err(|e| {
        format!("{e} (give a client certificate with --tls-dir: llmgw-ctl cert client --ca CA_DIR --name NAME --out DIR)")
    })?;
    let mut c = client(&tls, &cli.node)?;
    let s = |e: tonic::Status| describe_status(&e);
    Ok(match &cli.command {
        Cmd::Cluster(ClusterCmd::Status) => {
            let r = c
                .cluster_status(pb::ClusterStatusRequest {})
                .await
                .map_err(s)?
                .into_inner();
            json!({
                "node_id": r.node_id, "role": role(r.role), "term": r.term, "leader_id": r.leader_id,
                "last_log_index": r.last_log_index, "last_applied_index": r.last_applied_index,
                "snapshot_index": r.snapshot_index, "config_version": r.config_version,
                "members": members(&r.members),
            })
        }
        Cmd::Cluster(ClusterCmd::Members) => {
            let r = c
                .cluster_members(pb::ClusterMembersRequest {})
                .await
                .map_err(s)?
                .into_inner();
            json!({ "members": members(&r.members), "retired_ids": r.retired_ids })
        }
        Cmd::Cluster(ClusterCmd::Join { id, addr, learner }) => {
            let req = pb::ClusterJoinRequest {
                node_id: *id,
                addr: addr.clone(),
                learner_only: *learner,
            };
            let r = c.cluster_join(req).await.map_err(s)?.into_inner();
            json!({ "members": members(&r.members) })
        }
        Cmd::Cluster(ClusterCmd::Remove { id }) => {
            let r = c
                .cluster_remove(pb::ClusterRemoveRequest { node_id: *id })
                .await
                .map_err(s)?
                .into_inner();
            json!({ "members": members(&r.members) })
        }
        Cmd::Cluster(ClusterCmd::TransferLeader { to }) => {
            let r = c
                .transfer_leader(pb::TransferLeaderRequest { to: *to })
                .await
                .map_err(s)?
                .into_inner();
            json!({ "leader_id": r.leader_id })
        }
        Cmd::Config(ConfigCmd::Get { version, stale }) => {
            let req = pb::ConfigGetRequest {
                version: *version,
                linearizable: !stale,
            };
            let r = c.config_get(req).await.map_err(s)?.into_inner();
            if cli.output == Output::Table {
                // The text itself, as a file: `config get > current.toml`.
                print!("{}", r.text);
                return Ok(Value::Null);
            }
            json!({ "version": r.version, "log_index": r.log_index, "text": r.text,
                    "format": if r.format == pb::ConfigFormat::Haproxy as i32 { "haproxy" } else { "toml" } })
        }
        Cmd::Config(ConfigCmd::Apply {
            file,
            expect_version,
        }) => {
            let (text, format, name) = read(file)?;
            let req = pb::ConfigApplyRequest {
                text,
                format: format as i32,
                expected_version: *expect_version,
                source_name: name,
            };
            let r = c.config_apply(req).await.map_err(s)?.into_inner();
            let warnings: Vec<String> = r
                .warnings
                .iter()
                .map(|d| llmgw_proto::DiagnosticDisplay(d).to_string())
                .collect();
            json!({ "version": r.version, "log_index": r.log_index, "warnings": warnings })
        }
        Cmd::Config(ConfigCmd::Diff { file, against }) => {
            let (text, format, _) = read(file)?;
            let req = pb::ConfigDiffRequest {
                text,
                format: format as i32,
                against_version: *against,
            };
            let r = c.config_diff(req).await.map_err(s)?.into_inner();
            if cli.output == Output::Table {
                print!("{}", r.unified_diff);
                return Ok(Value::Null);
            }
            json!({ "against_version": r.against_version, "diff": r.unified_diff })
        }
        Cmd::Config(ConfigCmd::Validate { file }) => {
            let (text, format, name) = read(file)?;
            let req = pb::ConfigValidateRequest {
                text,
                format: format as i32,
                source_name: name,
            };
            let r = c.config_validate(req).await.map_err(s)?.into_inner();
            let diags: Vec<String> = r
                .diagnostics
                .iter()
                .map(|d| llmgw_proto::DiagnosticDisplay(d).to_string())
                .collect();
            if !r.valid {
                return Err(format!("configuration rejected:\n{}", diags.join("\n")));
            }
            json!({ "valid": true, "warnings": diags })
        }
        Cmd::Config(ConfigCmd::History { limit }) => {
            let r = c
                .config_history(pb::ConfigHistoryRequest { limit: *limit })
                .await
                .map_err(s)?
                .into_inner();
            Value::Array(
                r.entries
                    .iter()
                    .map(|e| json!({ "version": e.version, "log_index": e.log_index, "bytes": e.text_bytes, "sha256": e.sha256 }))
                    .collect(),
            )
        }
        Cmd::Server(ServerCmd::List { backend }) | Cmd::Stats { backend } => {
            let req = pb::StatsRequest {
                backend: backend.clone().unwrap_or_default(),
            };
            let r = c.stats(req).await.map_err(s)?.into_inner();
            Value::Array(
                r.servers
                    .iter()
                    .map(|v| json!({
                        "server": format!("{}/{}", v.backend, v.server), "status": v.status, "weight": v.weight,
                        "scur": v.current_sessions, "stot": v.total_sessions, "qcur": v.queue_current,
                        "bin": v.bytes_in, "bout": v.bytes_out, "chkfail": v.check_failures,
                    }))
                    .collect(),
            )
        }
        Cmd::Server(
            ServerCmd::Ready { server } | ServerCmd::Drain { server } | ServerCmd::Maint { server },
        ) => {
            let state = match &cli.command {
                Cmd::Server(ServerCmd::Ready { .. }) => pb::ServerAdminState::Ready,
                Cmd::Server(ServerCmd::Drain { .. }) => pb::ServerAdminState::Drain,
                _ => pb::ServerAdminState::Maint,
            };
            let (backend, server) = split_server(server)?;
            let req = pb::ServerStateRequest {
                backend,
                server,
                state: state as i32,
            };
            let r = c.set_server_state(req).await.map_err(s)?.into_inner();
            json!({ "log_index": r.log_index })
        }
        Cmd::Server(ServerCmd::Weight { server, weight }) => {
            let (backend, server) = split_server(server)?;
            let req = pb::ServerWeightRequest {
                backend,
                server,
                weight: *weight,
            };
            let r = c.set_server_weight(req).await.map_err(s)?.into_inner();
            json!({ "log_index": r.log_index })
        }
        Cmd::Table(TableCmd::Show {
            table,
            prefix,
            limit,
        }) => {
            let req = pb::TableShowRequest {
                table: table.clone(),
                key_prefix: prefix.clone(),
                limit: *limit,
            };
            let r = c.table_show(req).await.map_err(s)?.into_inner();
            if table.is_some() {
                Value::Array(
                    r.entries
                        .iter()
                        .map(|e| {
                            let mut v = json!({ "key": e.key, "exp": e.expire_ms });
                            for (k, d) in &e.data {
                                v[k] = json!(d);
                            }
                            v
                        })
                        .collect(),
                )
            } else {
                Value::Array(
                    r.tables
                        .iter()
                        .map(|t| json!({ "table": t.name, "type": t.key_type, "size": t.size, "used": t.used }))
                        .collect(),
                )
            }
        }
        Cmd::Table(TableCmd::Clear { table, key }) => {
            let req = pb::TableClearRequest {
                table: table.clone(),
                key: key.clone(),
            };
            let r = c.table_clear(req).await.map_err(s)?.into_inner();
            json!({ "log_index": r.log_index })
        }
        Cmd::Cert(_) => Value::Null,
    })
}

/// `cert init|node|client`: files written, their paths answered.
fn cert(cmd: &CertCmd) -> Result<Value, String> {
    let files = |f: CertFiles| json!({ "ca": f.ca.display().to_string(), "cert": f.cert.display().to_string(), "key": f.key.display().to_string() });
    Ok(match cmd {
        CertCmd::Init { dir } => {
            let f = certs::init_ca(dir).map_err(|e| e.to_string())?;
            json!({ "ca": f.cert.display().to_string(), "ca_key": f.key.display().to_string() })
        }
        CertCmd::Node { ca, id, hosts, out } => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            files(certs::issue_node(ca, out, *id, &hosts).map_err(|e| e.to_string())?)
        }
        CertCmd::Client { ca, name, out } => {
            files(certs::issue_client(ca, out, name).map_err(|e| e.to_string())?)
        }
    })
}

/// Prints an answer: JSON as is; for a table, an array of objects as
/// aligned columns, an object as `key: value` lines.
fn print(output: Output, v: &Value) {
    if v.is_null() {
        return;
    }
    if output == Output::Json {
        println!("{v:#}");
        return;
    }
    match v {
        Value::Array(rows) => print_rows(rows),
        Value::Object(map) => {
            for (k, val) in map {
                match val {
                    Value::Array(rows) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
                        println!("{k}:");
                        print_rows(rows);
                    }
                    _ => println!("{k}: {}", cell(val)),
                }
            }
        }
        other => println!("{}", cell(other)),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn print_rows(rows: &[Value]) {
    let Some(Value::Object(first)) = rows.first() else {
        return;
    };
    let cols: Vec<&String> = first.keys().collect();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[c.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(
        cols.iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for r in &table {
        line(r.iter().map(String::as_str).collect());
    }
}
