//! The Raft state machine store: applies committed entries to the
//! [`ClusterState`], builds snapshots of it, installs snapshots received
//! from a leader, keeps the latest snapshot on disk, and tells the node
//! what changed ([`StateMachineStore::subscribe`]).
//!
//! The state itself lives in memory and is made durable only through
//! snapshots: after a restart the store loads the last snapshot, and openraft
//! re-applies the log entries after it up to the saved commit point (the
//! log keeps them until a later snapshot covers them). So a snapshot must
//! reach the disk, atomically, before openraft is told it exists and may
//! purge the log behind it.
//!
//! The state is held as an `Arc` and changed copy-on-write: after every
//! batch of entries applied and every snapshot installed, the new state is
//! published to subscribers as an [`Applied`], which they keep as long as
//! they like without holding up the next apply.
//!
//! Snapshot file (`snapshot.bin`, replaced atomically):
//!
//! ```text
//! magic "LGWS" (4) | CRC32 of the rest (4) | meta length u32 LE (4) | meta (JSON) | state (JSON)
//! ```
//!
//! The state part is exactly the snapshot data streamed to followers.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};

use crate::command::Response;
use crate::fsutil::{self, DirLock};
use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_MAGIC: [u8; 4] = *b"LGWS";

/// The state machine handed to openraft. Clones share one state.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// Held while the store may write; let go early by
    /// [`StateMachineStore::release`].
    lock: Mutex<Option<DirLock>>,
    state: RwLock<Arc<ClusterState>>,
    /// The state as last published.
    applied: tokio::sync::watch::Sender<Applied>,
    /// The latest snapshot, as stored on disk.
    current: Mutex<Option<StoredSnapshot>>,
    /// Distinguishes snapshots built at the same log position.
    seq: AtomicU64,
    /// Dropped with the last handle: wakes [`StateMachineStore::closed`].
    closed: tokio::sync::watch::Sender<()>,
}

/// What the state machine has applied: published after every batch of
/// entries applied (including those re-applied at startup) and every
/// snapshot installed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// 0 until a configuration is applied.
    pub config_version: u64,
    /// The whole state at that point; [`ClusterState::current_config`] has
    /// the configuration's text.
    pub state: Arc<ClusterState>,
}

impl Applied {
    fn of(state: &Arc<ClusterState>) -> Applied {
        Applied {
            last_applied: state.last_applied,
            config_version: state.config_version,
            state: Arc::clone(state),
        }
    }

    /// What differs from `earlier`, a value this subscriber saw before.
    pub fn changes_since(&self, earlier: &Applied) -> Changes {
        let (now, then) = (&*self.state, &*earlier.state);
        Changes {
            config: self.config_version != earlier.config_version,
            servers: now.servers != then.servers,
            cleared_tables: now
                .table_clears
                .iter()
                .filter(|(table, clear)| then.table_clears.get(*table) != Some(*clear))
                .map(|(table, _)| table.clone())
                .collect(),
            members: now.last_membership.membership() != then.last_membership.membership(),
        }
    }
}

/// What changed between two [`Applied`] values, for a node to react to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// A new configuration version: reload with its text.
    pub config: bool,
    /// Server admin states or weights: apply them to the runtime.
    pub servers: bool,
    /// Tables cleared since (see `state.table_clears` for the key). Only
    /// each table's last clear is kept: two clears of different keys of one
    /// table between two looks show as the last one.
    pub cleared_tables: Vec<String>,
    /// Cluster membership.
    pub members: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Arc<Vec<u8>>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, restoring the last snapshot if one
    /// was saved.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<StateMachineStore> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        let (state, current) = match fsutil::read_optional(&dir, SNAPSHOT_FILE)? {
            None => (ClusterState::default(), None),
            Some(bytes) => {
                let (meta, data) = decode_snapshot_file(&bytes)
                    .map_err(|e| invalid(format!("{}: {e}", dir.join(SNAPSHOT_FILE).display())))?;
                let state = decode_state(&meta, &data)?;
                (
                    state,
                    Some(StoredSnapshot {
                        meta,
                        data: Arc::new(data),
                    }),
                )
            }
        };
        let state = Arc::new(state);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                dir,
                lock: Mutex::new(Some(lock)),
                applied: tokio::sync::watch::Sender::new(Applied::of(&state)),
                state: RwLock::new(state),
                current: Mutex::new(current),
                seq: AtomicU64::new(0),
                closed: tokio::sync::watch::Sender::new(()),
            }),
        })
    }

    /// Reads the state under its lock. `f` must be quick: applying waits.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        // A poisoned lock means a panic while applying: the state is still
        // the last consistent one we wrote, as apply only assigns whole values.
        let guard = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    /// The state as it is now. Cheap: a reference count.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(
            &self
                .shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Lets go of the directory lock while handles remain, so that another
    /// process (a binary upgrade's successor) can open the store. Only once
    /// nothing writes any more: after the Raft node using it shut down.
    pub fn release(&self) {
        let mut lock = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        lock.take();
    }

    /// Follows what is applied: the receiver holds the latest [`Applied`]
    /// at once (the state restored at startup), and `changed()` wakes it
    /// after each batch of entries or snapshot installed (intermediate
    /// values may be skipped: it always sees the latest). It does not keep
    /// the store open; once the store is closed, `changed()` returns an
    /// error.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }

    /// Resolves once every handle on this store is dropped, releasing its
    /// directory lock.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move { while rx.changed().await.is_ok() {} }
    }

    /// The metadata of the latest snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.current().map(|s| s.meta)
    }

    fn current(&self) -> Option<StoredSnapshot> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Changes the state (a copy, if a reader still holds the current one)
    /// and publishes the result.
    fn write_state<T>(&self, f: impl FnOnce(&mut ClusterState) -> T) -> T {
        let mut guard = self
            .shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let out = f(Arc::make_mut(&mut guard));
        // Under the lock: subscribers see states in the order applied.
        self.shared.applied.send_replace(Applied::of(&guard));
        out
    }

    /// Replaces the state wholesale (a snapshot installed) and publishes it.
    fn replace_state(&self, state: ClusterState) {
        let mut guard = self
            .shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Arc::new(state);
        self.shared.applied.send_replace(Applied::of(&guard));
    }

    /// Saves a snapshot durably, then makes it the current one.
    async fn save(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let file = encode_snapshot_file(&snapshot.meta, &snapshot.data)?;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            fsutil::write_atomic(&shared.dir, SNAPSHOT_FILE, &file)
        })
        .await
        .map_err(io::Error::other)??;
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn encode_snapshot_file(meta: &SnapshotMeta, data: &[u8]) -> io::Result<Vec<u8>> {
    let meta = serde_json::to_vec(meta)?;
    let meta_len = u32::try_from(meta.len()).map_err(io::Error::other)?;
    let mut body = Vec::with_capacity(4 + meta.len() + data.len());
    body.extend_from_slice(&meta_len.to_le_bytes());
    body.extend_from_slice(&meta);
    body.extend_from_slice(data);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), String> {
    if bytes.len() < 12 || bytes[0..4] != SNAPSHOT_MAGIC {
        return Err("not a snapshot file".into());
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[8..];
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch: the snapshot is damaged".into());
    }
    let meta_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let meta_bytes = body
        .get(4..4 + meta_len)
        .ok_or("metadata length runs past the end")?;
    let meta: SnapshotMeta =
        serde_json::from_slice(meta_bytes).map_err(|e| format!("metadata: {e}"))?;
    Ok((meta, body[4 + meta_len..].to_vec()))
}

/// The state a snapshot's data holds, positioned where its metadata says.
fn decode_state(meta: &SnapshotMeta, data: &[u8]) -> io::Result<ClusterState> {
    let mut state: ClusterState = serde_json::from_slice(data)
        .map_err(|e| invalid(format!("snapshot {}: state: {e}", meta.snapshot_id)))?;
    // The metadata is what openraft reasons with; the state must agree.
    state.last_applied = meta.last_log_id;
    state.last_membership = meta.last_membership.clone();
    Ok(state)
}

fn snapshot_err(meta: Option<&SnapshotMeta>, write: bool, e: io::Error) -> StorageError {
    let signature = meta.map(|m| m.signature());
    let source = AnyError::new(&e);
    if write {
        StorageIOError::write_snapshot(signature, source).into()
    } else {
        StorageIOError::read_snapshot(signature, source).into()
    }
}

/// Builds a snapshot of the state as it is when `build_snapshot` runs.
pub struct SnapshotBuilder {
    sm: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Serialize under the read lock, so the data and its position agree.
        let (data, last_applied, last_membership) = self
            .sm
            .read(|s| {
                serde_json::to_vec(s).map(|data| (data, s.last_applied, s.last_membership.clone()))
            })
            .map_err(|e| snapshot_err(None, false, e.into()))?;
        let seq = self.sm.shared.seq.fetch_add(1, Ordering::Relaxed);
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let position = last_applied.map_or_else(
            || "0-0".to_string(),
            |l| format!("{}-{}", l.leader_id, l.index),
        );
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id: format!("{position}-{millis}-{seq}"),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        self.sm
            .save(stored.clone())
            .await
            .map_err(|e| snapshot_err(Some(&meta), true, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data.as_ref().clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.read(|s| (s.last_applied, s.last_membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        Ok(self.write_state(|state| {
            entries
                .into_iter()
                .map(|entry| match entry.payload {
                    EntryPayload::Blank => {
                        state.apply_blank(entry.log_id);
                        Response::Applied {
                            config_version: state.config_version,
                        }
                    }
                    EntryPayload::Normal(cmd) => state.apply_command(&cmd, entry.log_id),
                    EntryPayload::Membership(m) => {
                        state.apply_membership(StoredMembership::new(Some(entry.log_id), m));
                        Response::Applied {
                            config_version: state.config_version,
                        }
                    }
                })
                .collect()
        }))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = decode_state(meta, &data).map_err(|e| snapshot_err(Some(meta), false, e))?;
        // Durable first: once installed, openraft may purge the log the
        // snapshot covers.
        self.save(StoredSnapshot {
            meta: meta.clone(),
            data: Arc::new(data),
        })
        .await
        .map_err(|e| snapshot_err(Some(meta), true, e))?;
        self.replace_state(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.current().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data.as_ref().clone())),
        }))
    }
}
