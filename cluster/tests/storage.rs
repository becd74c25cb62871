//! The Raft storage against real files: openraft's own storage suite, then
//! crash recovery (torn tails cut, damage in the middle refused), vote
//! persistence, purge and truncate across segments, and snapshots built,
//! installed and restored from disk.

use std::fs::{self, OpenOptions};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use llmgw_cluster::command::{AdminState, Command, ConfigFormat};
use llmgw_cluster::log::{LogOptions, LogStore};
use llmgw_cluster::sm::StateMachineStore;
use llmgw_cluster::types::{Entry, LogId, NodeInfo, StorageError, TypeConfig, Vote};
use llmgw_cluster::{open_storage, Response};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use tempfile::TempDir;

/// Small segments, so a few entries already span several files.
fn small_segments() -> LogOptions {
    LogOptions {
        max_segment_bytes: 1024,
        ..LogOptions::default()
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let io = |e: std::io::Error| StorageError::from(StorageIOError::write(&e));
        let dir = tempfile::tempdir().map_err(io)?;
        // The suite appends scattered entries (index 1 after a purge to 2,
        // then 3 without 2) to probe openraft's helpers.
        let opts = LogOptions {
            require_contiguous: false,
            ..small_segments()
        };
        let (log, sm, _) = open_storage(dir.path(), opts).map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    // The suite runs each case in a fresh runtime of its own; its progress
    // shows with RUST_LOG=info.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::SetServerWeight {
            backend: "chat".into(),
            server: format!("s{index}"),
            weight: (index % 200) as u32,
        }),
    }
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

fn log_dir(tmp: &TempDir) -> PathBuf {
    tmp.path().join("log")
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(dir, small_segments()).expect("open log").0
}

async fn all(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.expect("read log")
}

async fn last_index(log: &mut LogStore) -> Option<u64> {
    log.get_log_state()
        .await
        .expect("log state")
        .last_log_id
        .map(|l| l.index)
}

fn last_segment(log: &LogStore) -> PathBuf {
    log.segment_paths()
        .expect("segments")
        .pop()
        .expect("at least one segment")
}

#[tokio::test]
async fn appended_entries_survive_a_reopen_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=20)).await.unwrap();
        log.blocking_append(entries(2, 21..=40)).await.unwrap();
        assert!(
            log.segment_paths().unwrap().len() > 3,
            "small segments roll"
        );
    }
    let (mut log, recovery) = LogStore::open(log_dir(&tmp), small_segments()).unwrap();
    assert_eq!(recovery.torn_bytes_truncated, 0);
    assert_eq!(recovery.entries, 40);
    let mut want = entries(1, 1..=20);
    want.extend(entries(2, 21..=40));
    assert_eq!(all(&mut log).await, want);
    assert_eq!(
        log.try_get_log_entries(10..13).await.unwrap(),
        entries(1, 10..=12)
    );
}

#[tokio::test]
async fn a_gap_in_appends_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(&log_dir(&tmp));
    log.blocking_append(entries(1, 1..=3)).await.unwrap();
    let err = log.blocking_append(entries(1, 5..=5)).await.unwrap_err();
    assert!(
        err.to_string().contains("index 5 where 4 comes next"),
        "{err}"
    );
}

#[tokio::test]
async fn a_torn_record_at_the_tail_is_cut_on_open_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let seg;
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=10)).await.unwrap();
        seg = last_segment(&log);
    }
    // A crash in the middle of writing the last record: its end never
    // reached the disk.
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (mut log, recovery) = LogStore::open(log_dir(&tmp), small_segments()).unwrap();
    assert!(recovery.torn_bytes_truncated > 0);
    assert_eq!(all(&mut log).await, entries(1, 1..=9));
    assert_eq!(last_index(&mut log).await, Some(9));
    // The log goes on from there, and the repaired file reopens cleanly.
    log.blocking_append(entries(2, 10..=11)).await.unwrap();
    drop(log);
    let (mut log, recovery) = LogStore::open(log_dir(&tmp), small_segments()).unwrap();
    assert_eq!(recovery.torn_bytes_truncated, 0);
    let mut want = entries(1, 1..=9);
    want.extend(entries(2, 10..=11));
    assert_eq!(all(&mut log).await, want);
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let seg;
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=10)).await.unwrap();
        seg = last_segment(&log);
    }
    let before = fs::metadata(&seg).unwrap().len();
    // What a crash can leave: a header whose payload never came, zeros from
    // a file extended but not written, a stray partial marker.
    let mut garbage = b"LGWR\x40\x00\x00\x00\xde\xad\xbe\xef{\"log_id\"".to_vec();
    garbage.extend_from_slice(&[0u8; 300]);
    garbage.extend_from_slice(b"LGW");
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&garbage).unwrap();
    drop(f);
    let (mut log, recovery) = LogStore::open(log_dir(&tmp), small_segments()).unwrap();
    assert_eq!(recovery.torn_bytes_truncated, garbage.len() as u64);
    assert_eq!(fs::metadata(&seg).unwrap().len(), before);
    assert_eq!(all(&mut log).await, entries(1, 1..=10));
}

#[tokio::test]
async fn an_empty_segment_left_by_a_crash_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=5)).await.unwrap();
    }
    // Created on a roll, the crash came before its first record.
    let empty = log_dir(&tmp).join(format!("{:020}.seg", 6));
    fs::File::create(&empty).unwrap();
    let mut log = open(&log_dir(&tmp));
    assert!(!empty.exists());
    assert_eq!(all(&mut log).await, entries(1, 1..=5));
    log.blocking_append(entries(1, 6..=6)).await.unwrap();
}

/// Flips one byte inside the payload of the record holding `index`.
fn corrupt_record(dir: &Path, index: u64) -> PathBuf {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    // Each payload holds `"server":"s<index>"`, unique per entry.
    let needle = format!("\"s{index}\"");
    for seg in segs {
        let mut bytes = fs::read(&seg).unwrap();
        if let Some(pos) = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        {
            bytes[pos + 1] ^= 0x01;
            fs::write(&seg, bytes).unwrap();
            return seg;
        }
    }
    panic!("no record holds index {index}");
}

#[tokio::test]
async fn corruption_in_the_middle_of_the_last_segment_is_refused_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = LogStore::open(log_dir(&tmp), LogOptions::default()).unwrap();
        log.blocking_append(entries(1, 1..=10)).await.unwrap();
    }
    let seg = corrupt_record(&log_dir(&tmp), 4);
    let err = match LogStore::open(log_dir(&tmp), LogOptions::default()) {
        Ok(_) => panic!("a log with a corrupt committed entry opened"),
        Err(err) => err,
    };
    let msg = err.to_string();
    assert!(msg.contains(&seg.display().to_string()), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(msg.contains("an intact record follows"), "{msg}");
    // Nothing was cut: the file still holds all ten records.
    assert_eq!(
        fs::read(&seg)
            .unwrap()
            .windows(4)
            .filter(|w| w == b"LGWR")
            .count(),
        10
    );
}

#[tokio::test]
async fn corruption_in_an_older_segment_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=30)).await.unwrap();
    }
    let seg = corrupt_record(&log_dir(&tmp), 2);
    let err = match LogStore::open(log_dir(&tmp), small_segments()) {
        Ok(_) => panic!("a log with a corrupt old segment opened"),
        Err(err) => err,
    };
    let msg = err.to_string();
    assert!(msg.contains(&seg.display().to_string()), "{msg}");
    assert!(msg.contains("not the last segment"), "{msg}");
}

#[tokio::test]
async fn the_vote_survives_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        assert_eq!(log.read_vote().await.unwrap(), None);
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
    }
    let mut log = open(&log_dir(&tmp));
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(Vote::new_committed(4, 1))
    );
    // Replaced by rename: no temporary file is left behind.
    assert!(!log_dir(&tmp).join("vote.json.tmp").exists());
}

#[tokio::test]
async fn the_commit_point_survives_a_reopen_as_far_as_the_log_vouches_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        assert_eq!(log.read_committed().await.unwrap(), None);
        log.blocking_append(entries(1, 1..=10)).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();
    }
    let committed = log_dir(&tmp).join("committed.json");
    {
        let mut log = open(&log_dir(&tmp));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
        // Purged behind a snapshot: the snapshot covers it.
        log.purge(log_id(1, 8)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
    }

    // Past the last entry (never written so, but a file is only a file):
    // the last entry is what the log can vouch for.
    fs::write(&committed, serde_json::to_vec(&log_id(1, 30)).unwrap()).unwrap();
    let mut log = open(&log_dir(&tmp));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 10)));
    drop(log);

    // Another entry at its index: the files do not belong together.
    fs::write(&committed, serde_json::to_vec(&log_id(5, 9)).unwrap()).unwrap();
    let mut log = open(&log_dir(&tmp));
    let err = log
        .read_committed()
        .await
        .expect_err("a foreign commit point");
    assert!(err.to_string().contains("the commit point is"), "{err}");
    drop(log);

    // Unreadable: a hint lost, as if never saved.
    fs::write(&committed, b"{\"torn").unwrap();
    let mut log = open(&log_dir(&tmp));
    assert_eq!(log.read_committed().await.unwrap(), None);
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _log = open(&log_dir(&tmp));
    let err = match LogStore::open(log_dir(&tmp), small_segments()) {
        Ok(_) => panic!("two stores opened one log"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("in use by another"), "{err}");
}

#[tokio::test]
async fn purge_drops_whole_segments_and_persists_across_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let segments_before;
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=30)).await.unwrap();
        segments_before = log.segment_paths().unwrap().len();
        log.purge(log_id(1, 15)).await.unwrap();
        assert!(log.segment_paths().unwrap().len() < segments_before);
        assert_eq!(log.try_get_log_entries(..=15).await.unwrap(), vec![]);
        assert_eq!(all(&mut log).await, entries(1, 16..=30));
    }
    let mut log = open(&log_dir(&tmp));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 15)));
    assert_eq!(state.last_log_id, Some(log_id(1, 30)));
    assert_eq!(all(&mut log).await, entries(1, 16..=30));

    // A purge past the end (a snapshot ahead of the log) leaves no entry;
    // the log resumes after it.
    log.purge(log_id(2, 40)).await.unwrap();
    assert!(log.segment_paths().unwrap().is_empty());
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(2, 40)));
    log.blocking_append(entries(2, 41..=42)).await.unwrap();
    drop(log);
    let mut log = open(&log_dir(&tmp));
    assert_eq!(all(&mut log).await, entries(2, 41..=42));
}

#[tokio::test]
async fn truncate_cuts_the_tail_durably_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=30)).await.unwrap();
        log.truncate(log_id(1, 12)).await.unwrap();
        assert_eq!(last_index(&mut log).await, Some(11));
        // A new leader's entries replace the cut ones.
        log.blocking_append(entries(2, 12..=14)).await.unwrap();
    }
    let mut log = open(&log_dir(&tmp));
    let mut want = entries(1, 1..=11);
    want.extend(entries(2, 12..=14));
    assert_eq!(all(&mut log).await, want);
}

fn membership(index: u64, voters: &[u64]) -> Entry {
    let nodes = voters
        .iter()
        .map(|id| (*id, NodeInfo::new(format!("127.0.0.1:{}", 7000 + id))))
        .collect::<std::collections::BTreeMap<_, _>>();
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![voters.iter().copied().collect()],
            nodes,
        )),
    }
}

fn command(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

#[tokio::test]
async fn snapshots_are_built_installed_elsewhere_and_restored_from_disk() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = StateMachineStore::open(a_dir.path()).unwrap();
    let replies = a
        .apply([
            membership(1, &[1, 2, 3]),
            command(
                2,
                Command::ApplyConfig {
                    text: "[global]\n".into(),
                    format: ConfigFormat::Toml,
                    expected_version: Some(0),
                },
            ),
            command(
                3,
                Command::SetServerState {
                    backend: "chat".into(),
                    server: "a".into(),
                    state: AdminState::Maint,
                },
            ),
            membership(4, &[1, 3]),
        ])
        .await
        .unwrap();
    assert_eq!(replies[1], Response::Applied { config_version: 1 });

    let snap = a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 4)));
    let a_state = a.read(|s| s.clone());
    assert_eq!(a_state.nodes.retired.get(&2), Some(&4));

    // Install on another node, chunk by chunk as the transport delivers it.
    let mut b = StateMachineStore::open(b_dir.path()).unwrap();
    let mut receiving = b.begin_receiving_snapshot().await.unwrap();
    let data = snap.snapshot.into_inner();
    for chunk in data.chunks(7) {
        receiving.get_mut().extend_from_slice(chunk);
    }
    b.install_snapshot(&snap.meta, receiving).await.unwrap();
    assert_eq!(b.read(|s| s.clone()), a_state);
    assert_eq!(
        b.applied_state().await.unwrap(),
        (Some(log_id(1, 4)), a_state.last_membership.clone())
    );
    drop(b);

    // A restart finds the installed snapshot on disk.
    let mut b = StateMachineStore::open(b_dir.path()).unwrap();
    assert_eq!(b.read(|s| s.clone()), a_state);
    let current = b.get_current_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.into_inner(), data);

    // And the node that built it restores the same.
    drop(a);
    let a = StateMachineStore::open(a_dir.path()).unwrap();
    assert_eq!(a.read(|s| s.clone()), a_state);
}

#[tokio::test]
async fn subscribers_see_each_applied_state_and_keep_the_one_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let mut rx = sm.subscribe();
    let start = rx.borrow_and_update().clone();
    assert_eq!(
        (start.last_applied, start.config_version),
        (None, 0),
        "a new store publishes its empty state"
    );

    sm.apply([
        membership(1, &[1]),
        command(
            2,
            Command::ApplyConfig {
                text: "# v1\n".into(),
                format: ConfigFormat::Toml,
                expected_version: None,
            },
        ),
    ])
    .await
    .unwrap();
    assert!(rx.has_changed().unwrap(), "an applied batch is published");
    let first = rx.borrow_and_update().clone();
    assert_eq!(first.last_applied, Some(log_id(1, 2)));
    assert_eq!(first.config_version, 1);
    assert_eq!(
        first.state.current_config().map(|c| &*c.text),
        Some("# v1\n")
    );
    let changes = first.changes_since(&start);
    assert!(
        changes.config && changes.members && !changes.servers,
        "{changes:?}"
    );

    sm.apply([
        command(
            3,
            Command::SetServerWeight {
                backend: "chat".into(),
                server: "a".into(),
                weight: 9,
            },
        ),
        command(
            4,
            Command::ClearTable {
                table: "per_key".into(),
                key: None,
            },
        ),
    ])
    .await
    .unwrap();
    let second = rx.borrow_and_update().clone();
    let changes = second.changes_since(&first);
    assert_eq!(
        changes,
        llmgw_cluster::Changes {
            config: false,
            servers: true,
            cleared_tables: vec!["per_key".into()],
            members: false,
        }
    );
    assert!(second.changes_since(&second).is_empty());
    // What a subscriber holds is its own: later applies copy, not change it.
    assert_eq!(first.state.server("chat", "a"), None);
    assert_eq!(
        second.state.server("chat", "a").and_then(|r| r.weight),
        Some(9)
    );
    assert!(std::sync::Arc::ptr_eq(&second.state, &sm.state()));

    // A snapshot installed is published as well.
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = StateMachineStore::open(other_dir.path()).unwrap();
    let mut other_rx = other.subscribe();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let installed = other_rx.borrow_and_update().clone();
    assert_eq!(installed.last_applied, Some(log_id(1, 4)));
    assert_eq!(installed.state, second.state);

    // The subscription does not keep the store open, and says when it closed.
    drop(other);
    assert!(other_rx.changed().await.is_err());
}

#[tokio::test]
async fn a_damaged_snapshot_file_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply([membership(1, &[1])]).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    }
    let path = dir.path().join("snapshot.bin");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    fs::write(&path, bytes).unwrap();
    let err = match StateMachineStore::open(dir.path()) {
        Ok(_) => panic!("a damaged snapshot was loaded"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(err.to_string().contains("snapshot.bin"), "{err}");
}

#[tokio::test]
async fn an_undecodable_snapshot_is_refused_by_install() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(log_id(1, 9)),
        last_membership: Default::default(),
        snapshot_id: "x".into(),
    };
    let err = sm
        .install_snapshot(&meta, Box::new(Cursor::new(b"{not json".to_vec())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");
    assert_eq!(sm.read(|s| s.last_applied), None);
}

#[tokio::test]
async fn a_segment_deleted_from_the_middle_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let segments;
    {
        let mut log = open(&log_dir(&tmp));
        log.blocking_append(entries(1, 1..=30)).await.unwrap();
        segments = log.segment_paths().unwrap();
    }
    assert!(segments.len() >= 3);
    fs::remove_file(&segments[1]).unwrap();
    let err = match LogStore::open(log_dir(&tmp), small_segments()) {
        Ok(_) => panic!("a log with a missing segment opened"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("entries are missing"), "{err}");
}
