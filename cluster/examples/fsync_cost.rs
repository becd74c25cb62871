//! What a durable append costs: N single-entry appends to the Raft log,
//! each written and fdatasync'ed before the next, timed one by one.
//!
//! `cargo run -p llmgw-cluster --example fsync_cost [-- DIR [N]]`; DIR
//! defaults to a scratch directory under the current one, which should sit
//! on the disk the node will use (a tmpfs would measure nothing).

use std::time::{Duration, Instant};

use llmgw_cluster::command::{Command, ConfigFormat};
use llmgw_cluster::log::{LogOptions, LogStore};
use llmgw_cluster::types::{Entry, LogId};
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, EntryPayload};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let scratch;
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            scratch = tempfile::tempdir_in(".")?;
            scratch.path().to_path_buf()
        }
    };
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let (mut log, _) = LogStore::open(dir.join("log"), LogOptions::default())?;
    // A small configuration-sized command: the cost is the fsync, not the bytes.
    let text = "[global]\nmaxconn = 1000\n".repeat(8);
    let mut samples = Vec::with_capacity(n as usize);
    for index in 1..=n {
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::ApplyConfig {
                text: text.clone(),
                format: ConfigFormat::Toml,
                expected_version: None,
            }),
        };
        let start = Instant::now();
        log.blocking_append([entry]).await?;
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{n} single-entry appends, write + fdatasync each, in {}: p50 {:?}  p99 {:?}  max {:?}  mean {:?}",
        dir.display(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        mean
    );
    Ok(())
}
