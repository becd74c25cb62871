//! The durable Raft log: a directory of append-only segment files, the vote,
//! and the position of the last purge.
//!
//! Why a log of our own rather than an embedded database: the Raft log needs
//! four operations (append at the end, cut the tail, drop the head, read a
//! range), each a plain file operation here, and their durability is
//! visible in a few lines: `append` writes the batch, `fdatasync`s the
//! segment, and only then calls openraft's callback. A torn write at the
//! tail after a crash is detected by the per-record CRC and cut on open;
//! damage with intact records after it is refused, never silently dropped
//! (see [`segment`]). An embedded store such as redb would bring its own
//! page cache, compaction and file format to do the same, and would make
//! "what exactly is on disk after a crash" a question about its internals.
//!
//! Layout of the directory:
//!
//! ```text
//! LOCK                          held while a store is open (flock)
//! 00000000000000000001.seg      segments, named by the index of their first entry
//! 00000000000000012345.seg
//! vote.json                     the vote, replaced atomically
//! purged.json                   the last purged log id, replaced atomically
//! committed.json                the last log id known committed, replaced atomically
//! ```
//!
//! The commit point lets a restarted node bring its state machine up to
//! every entry it knew committed from its own log, before it hears from a
//! leader (openraft re-applies up to it at startup): a node cut off from
//! the quorum still serves the last committed configuration. It is a hint:
//! written on every commit with one `fdatasync` (the directory is not
//! synced), so a crash can leave an older one, which only means re-applying
//! less; and one that cannot be read is ignored with a warning, as if never
//! saved.
//!
//! Every entry's position is indexed in memory (its bytes are read from the
//! file on demand, through the page cache), so memory grows with the number
//! of entries kept, not their size; openraft purges the log behind each
//! snapshot.

pub mod segment;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageIOError};

use crate::fsutil::{self, DirLock};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE_FILE: &str = "vote.json";
const PURGED_FILE: &str = "purged.json";
const COMMITTED_FILE: &str = "committed.json";
const SEGMENT_SUFFIX: &str = ".seg";

/// Tuning of the log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// A segment is closed and a new one started once it would exceed this
    /// size. Purging deletes whole segments, so this bounds how much disk a
    /// purged prefix can keep.
    pub max_segment_bytes: u64,
    /// Refuse an append that leaves a hole after the last entry, and a log
    /// whose files have one (a segment deleted by hand). Raft never leaves
    /// holes; only openraft's storage test suite, which appends scattered
    /// entries to probe its helpers, turns this off. Indexes going backwards
    /// are refused either way.
    pub require_contiguous: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_segment_bytes: 64 << 20,
            require_contiguous: true,
        }
    }
}

/// The log store handed to openraft. Clones share the same files.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

/// A reader of the same log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Mutex<Inner>>,
}

struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes of intact records; the next record is written here.
    len: u64,
}

/// Where an entry's record lies.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// Key of the segment (its first index).
    segment: u64,
    /// Offset of the record's header.
    offset: u64,
    /// Length of the whole record, header included.
    len: u64,
    log_id: LogId,
}

struct Inner {
    dir: PathBuf,
    opts: LogOptions,
    _lock: DirLock,
    segments: BTreeMap<u64, Segment>,
    /// Entries present (not purged), by index.
    index: BTreeMap<u64, Loc>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    /// The commit point as saved; see the module's documentation.
    committed: Option<LogId>,
    /// Dropped with the last handle: wakes those waiting in [`LogStore::closed`].
    closed: tokio::sync::watch::Sender<()>,
}

/// What [`LogStore::open`] found and repaired, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the tail of the last segment (a torn write).
    pub torn_bytes_truncated: u64,
    pub entries: usize,
    pub segments: usize,
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash:
    /// a damaged record at the very end of the last segment is a write that
    /// was never acknowledged, and is cut; damage anywhere else is an error
    /// naming the file and offset.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> io::Result<(LogStore, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        let vote = read_json::<Vote>(&dir, VOTE_FILE)?;
        let last_purged = read_json::<LogId>(&dir, PURGED_FILE)?;
        let committed = match read_json::<LogId>(&dir, COMMITTED_FILE) {
            Ok(committed) => committed,
            Err(e) => {
                tracing::warn!("Raft log: ignoring the saved commit point: {e}");
                None
            }
        };
        let mut inner = Inner {
            dir,
            opts,
            _lock: lock,
            segments: BTreeMap::new(),
            index: BTreeMap::new(),
            last_purged,
            vote,
            committed,
            closed: tokio::sync::watch::Sender::new(()),
        };
        let recovery = inner.load_segments()?;
        Ok((
            LogStore {
                inner: Arc::new(Mutex::new(inner)),
            },
            recovery,
        ))
    }

    /// Resolves once every handle on this log (the store, its clones, the
    /// readers openraft made) is dropped, and with them the directory lock:
    /// a node restarted in the same process must wait for it.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let rx = lock(&self.inner).ok().map(|inner| inner.closed.subscribe());
        async move {
            if let Some(mut rx) = rx {
                while rx.changed().await.is_ok() {}
            }
        }
    }

    /// The segment files currently on disk, oldest first.
    pub fn segment_paths(&self) -> io::Result<Vec<PathBuf>> {
        let inner = lock(&self.inner)?;
        Ok(inner.segments.values().map(|s| s.path.clone()).collect())
    }
}

impl Inner {
    fn load_segments(&mut self) -> io::Result<Recovery> {
        let mut recovery = Recovery::default();
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let path = dirent?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
                continue;
            };
            let first: u64 = stem.parse().map_err(|_| {
                invalid(format!(
                    "{}: not a segment name (expected <first index>{SEGMENT_SUFFIX})",
                    path.display()
                ))
            })?;
            names.push((first, path));
        }
        names.sort();
        let purged_upto = self.last_purged.map(|l| l.index);
        let mut expected: Option<u64> = None;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let buf = fs::read(&path)?;
            let mut offset = 0usize;
            let mut records = 0usize;
            while offset < buf.len() {
                let payload = match segment::parse(&buf, offset) {
                    Ok(range) => range,
                    Err(damage) => {
                        if !is_last {
                            return Err(invalid(format!(
                                "{}: record at offset {offset}: {damage}; this is not the last segment, so acknowledged entries would be lost: refusing to open the log",
                                path.display()
                            )));
                        }
                        if let Some(next) = segment::next_intact(&buf, offset) {
                            return Err(invalid(format!(
                                "{}: record at offset {offset}: {damage}, but an intact record follows at offset {next}: the log is corrupt in the middle, refusing to drop acknowledged entries",
                                path.display()
                            )));
                        }
                        // Nothing intact after it: the tail of the last
                        // write before a crash, never acknowledged.
                        let torn = (buf.len() - offset) as u64;
                        tracing::warn!(
                            segment = %path.display(),
                            offset,
                            torn_bytes = torn,
                            %damage,
                            "Raft log: cutting a torn write at the tail"
                        );
                        file.set_len(offset as u64)?;
                        file.sync_all()?;
                        recovery.torn_bytes_truncated = torn;
                        break;
                    }
                };
                let entry: Entry = serde_json::from_slice(&buf[payload.clone()]).map_err(|e| {
                    invalid(format!(
                        "{}: record at offset {offset} has a valid checksum but does not decode as a log entry: {e}",
                        path.display()
                    ))
                })?;
                let log_id = *entry.get_log_id();
                if records == 0 && log_id.index != first {
                    return Err(invalid(format!(
                        "{}: named for index {first} but its first entry is {}",
                        path.display(),
                        log_id.index
                    )));
                }
                if let Some(want) = expected {
                    if log_id.index < want || (self.opts.require_contiguous && log_id.index != want)
                    {
                        return Err(invalid(format!(
                            "{}: record at offset {offset} holds index {} where {want} was expected: entries are missing",
                            path.display(),
                            log_id.index
                        )));
                    }
                }
                expected = Some(log_id.index + 1);
                if purged_upto.is_none_or(|p| log_id.index > p) {
                    self.index.insert(
                        log_id.index,
                        Loc {
                            segment: first,
                            offset: offset as u64,
                            len: (payload.end - offset) as u64,
                            log_id,
                        },
                    );
                }
                offset = payload.end;
                records += 1;
            }
            if records == 0 {
                // Created on a roll, the crash came before its first record
                // was synced (or all it held was torn).
                drop(file);
                fs::remove_file(&path)?;
                fsutil::sync_dir(&self.dir)?;
                continue;
            }
            self.segments.insert(
                first,
                Segment {
                    path,
                    file,
                    len: offset as u64,
                },
            );
        }
        if let (Some(purged), Some((&first_kept, _))) = (purged_upto, self.index.first_key_value())
        {
            if self.opts.require_contiguous && first_kept != purged + 1 {
                return Err(invalid(format!(
                    "{}: the log was purged up to {purged} but its first entry is {first_kept}: entries are missing",
                    self.dir.display()
                )));
            }
        }
        // Segments left holding nothing live: emptied by a crash between
        // creating a segment and writing to it, or wholly purged by a purge
        // that crashed before deleting them.
        self.remove_dead_segments()?;
        recovery.entries = self.index.len();
        recovery.segments = self.segments.len();
        Ok(recovery)
    }

    /// Deletes the segments that hold no entry of the index. Entries are
    /// contiguous, so those are the segments before the first live entry's,
    /// and every segment when the index is empty.
    fn remove_dead_segments(&mut self) -> io::Result<()> {
        let keep_from = self
            .index
            .first_key_value()
            .map_or(u64::MAX, |(_, loc)| loc.segment);
        let dead: Vec<u64> = self.segments.range(..keep_from).map(|(k, _)| *k).collect();
        if dead.is_empty() {
            return Ok(());
        }
        for key in dead {
            if let Some(seg) = self.segments.remove(&key) {
                fs::remove_file(&seg.path)?;
            }
        }
        fsutil::sync_dir(&self.dir)
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.index
            .last_key_value()
            .map(|(_, loc)| loc.log_id)
            .or(self.last_purged)
    }

    /// Writes `entries` and makes them durable before returning.
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut batch: Vec<u8> = Vec::new();
        let mut locs: Vec<Loc> = Vec::new();
        let mut next = self.index.last_key_value().map(|(i, _)| i + 1);
        for entry in entries {
            let log_id = *entry.get_log_id();
            match next {
                Some(want)
                    if log_id.index < want
                        || (self.opts.require_contiguous && log_id.index != want) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "append of index {} where {want} comes next: the tail must be truncated first",
                            log_id.index
                        ),
                    ));
                }
                // An empty log (new, or purged to its end) takes any index:
                // after a snapshot install the log resumes past the purge
                // point, and openraft decides where.
                _ => {}
            }
            next = Some(log_id.index + 1);
            let payload = serde_json::to_vec(&entry)?;
            if payload.len() > segment::MAX_PAYLOAD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "log entry {} is {} bytes, above the {} byte limit",
                        log_id.index,
                        payload.len(),
                        segment::MAX_PAYLOAD
                    ),
                ));
            }
            let record_len = (segment::HEADER_LEN + payload.len()) as u64;
            let active_len = self.segments.last_key_value().map(|(_, s)| s.len);
            let roll = match active_len {
                None => true,
                Some(len) => {
                    let used = len + batch.len() as u64;
                    used > 0 && used + record_len > self.opts.max_segment_bytes
                }
            };
            if roll {
                self.flush(&mut batch, &mut locs)?;
                self.create_segment(log_id.index)?;
            }
            let (&segment, active) = self
                .segments
                .last_key_value()
                .ok_or_else(|| io::Error::other("no active segment after creating one"))?;
            locs.push(Loc {
                segment,
                offset: active.len + batch.len() as u64,
                len: record_len,
                log_id,
            });
            segment::encode(&payload, &mut batch);
        }
        self.flush(&mut batch, &mut locs)
    }

    /// Writes `batch` at the end of the active segment, syncs it, and only
    /// then indexes `locs`.
    fn flush(&mut self, batch: &mut Vec<u8>, locs: &mut Vec<Loc>) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(active) = self.segments.values_mut().next_back() else {
            return Err(io::Error::other("records to write but no segment"));
        };
        active.file.write_all_at(batch, active.len)?;
        // fdatasync also persists the file's new length: what matters for
        // reading the records back.
        active.file.sync_data()?;
        active.len += batch.len() as u64;
        for loc in locs.drain(..) {
            self.index.insert(loc.log_id.index, loc);
        }
        batch.clear();
        Ok(())
    }

    fn create_segment(&mut self, first: u64) -> io::Result<()> {
        let path = self.dir.join(format!("{first:020}{SEGMENT_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // The new file's name must be durable before any entry in it is
        // acknowledged.
        fsutil::sync_dir(&self.dir)?;
        self.segments.insert(first, Segment { path, file, len: 0 });
        Ok(())
    }

    /// Removes entries from `index` on, durably.
    fn truncate(&mut self, index: u64) -> io::Result<()> {
        let Some((_, &from)) = self.index.range(index..).next() else {
            return Ok(());
        };
        let mut dir_changed = false;
        let later: Vec<u64> = self
            .segments
            .range(from.segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for key in later {
            if let Some(seg) = self.segments.remove(&key) {
                fs::remove_file(&seg.path)?;
                dir_changed = true;
            }
        }
        if from.offset == 0 {
            if let Some(seg) = self.segments.remove(&from.segment) {
                fs::remove_file(&seg.path)?;
                dir_changed = true;
            }
        } else if let Some(seg) = self.segments.get_mut(&from.segment) {
            seg.file.set_len(from.offset)?;
            seg.file.sync_all()?;
            seg.len = from.offset;
        }
        if dir_changed {
            fsutil::sync_dir(&self.dir)?;
        }
        self.index.split_off(&index);
        Ok(())
    }

    /// Forgets entries up to `log_id`, durably: the purge point is recorded
    /// first, so a crash before the segments are deleted only leaves dead
    /// segments that the next open deletes.
    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if self.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        fsutil::write_atomic(&self.dir, PURGED_FILE, &serde_json::to_vec(&log_id)?)?;
        self.last_purged = Some(log_id);
        self.index = self.index.split_off(&(log_id.index + 1));
        self.remove_dead_segments()
    }

    fn save_committed(&mut self, committed: LogId) -> io::Result<()> {
        if self.committed == Some(committed) {
            return Ok(());
        }
        fsutil::replace(&self.dir, COMMITTED_FILE, &serde_json::to_vec(&committed)?)?;
        self.committed = Some(committed);
        Ok(())
    }

    /// The saved commit point, as far as this log can vouch for it: never
    /// past its last entry, and the entry at that index must be the one
    /// committed (committed entries are never replaced, so another one
    /// there means the files do not belong together).
    fn committed(&self) -> io::Result<Option<LogId>> {
        let Some(committed) = self.committed else {
            return Ok(None);
        };
        if let Some(loc) = self.index.get(&committed.index) {
            if loc.log_id != committed {
                return Err(invalid(format!(
                    "{}: the commit point is {committed} but the log holds {} at that index",
                    self.dir.join(COMMITTED_FILE).display(),
                    loc.log_id
                )));
            }
            return Ok(Some(committed));
        }
        let last = self.last_log_id();
        match last {
            Some(last) if last.index < committed.index => {
                // Not expected (entries are durable before they count as
                // committed), and harmless: what the log has is committed.
                tracing::warn!(
                    %committed,
                    %last,
                    "Raft log: the commit point is past the last entry; using the last entry"
                );
                Ok(Some(last))
            }
            // Purged: the snapshot covers it.
            _ => Ok(Some(committed)),
        }
    }

    fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        fsutil::write_atomic(&self.dir, VOTE_FILE, &serde_json::to_vec(vote)?)?;
        self.vote = Some(*vote);
        Ok(())
    }

    fn read_range<RB: RangeBounds<u64>>(&self, range: RB) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for loc in self.index.range(range).map(|(_, loc)| *loc) {
            out.push(self.read_entry(loc)?);
        }
        Ok(out)
    }

    /// Reads one record back, checking its CRC again: damage that happened
    /// after the log was opened is reported, not decoded.
    fn read_entry(&self, loc: Loc) -> io::Result<Entry> {
        let seg = self
            .segments
            .get(&loc.segment)
            .ok_or_else(|| io::Error::other(format!("segment {} vanished", loc.segment)))?;
        let len = usize::try_from(loc.len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        seg.file.read_exact_at(&mut buf, loc.offset)?;
        let payload = segment::parse(&buf, 0).map_err(|damage| {
            invalid(format!(
                "{}: record at offset {} (index {}): {damage}",
                seg.path.display(),
                loc.offset,
                loc.log_id.index
            ))
        })?;
        serde_json::from_slice(&buf[payload]).map_err(|e| {
            invalid(format!(
                "{}: record at offset {} does not decode: {e}",
                seg.path.display(),
                loc.offset
            ))
        })
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> io::Result<Option<T>> {
    let Some(bytes) = fsutil::read_optional(dir, name)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| invalid(format!("{}: {e}", dir.join(name).display())))
}

fn lock(inner: &Mutex<Inner>) -> io::Result<MutexGuard<'_, Inner>> {
    inner
        .lock()
        .map_err(|_| io::Error::other("the log's lock was poisoned by a panic"))
}

/// Runs `f` on the log in the blocking pool: file writes and fsyncs must
/// not stall the async runtime's workers.
async fn blocking<T, F>(inner: &Arc<Mutex<Inner>>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Inner) -> io::Result<T> + Send + 'static,
{
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || f(&mut *lock(&inner)?))
        .await
        .map_err(io::Error::other)?
}

fn write_err(e: io::Error) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: io::Error) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

async fn read_entries<RB>(inner: &Arc<Mutex<Inner>>, range: RB) -> Result<Vec<Entry>, StorageError>
where
    RB: RangeBounds<u64> + Send + 'static,
{
    blocking(inner, move |inner| inner.read_range(range))
        .await
        .map_err(read_err)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.inner, owned_range(range)).await
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.inner, owned_range(range)).await
    }
}

/// openraft's range type need not be `'static`; the blocking pool needs one
/// that is.
fn owned_range<RB: RangeBounds<u64>>(range: RB) -> (std::ops::Bound<u64>, std::ops::Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = lock(&self.inner).map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            inner: Arc::clone(&self.inner),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        blocking(&self.inner, move |inner| inner.save_vote(&vote))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let Some(committed) = committed else {
            return Ok(());
        };
        blocking(&self.inner, move |inner| inner.save_committed(committed))
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        lock(&self.inner)
            .and_then(|inner| inner.committed())
            .map_err(read_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let inner = lock(&self.inner).map_err(|e| StorageIOError::read_vote(AnyError::new(&e)))?;
        Ok(inner.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        blocking(&self.inner, move |inner| inner.append(entries))
            .await
            .map_err(write_err)?;
        // Synced: only now may openraft count these entries as persisted.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.inner, move |inner| inner.truncate(log_id.index))
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        blocking(&self.inner, move |inner| inner.purge(log_id))
            .await
            .map_err(write_err)
    }
}
