//! File-system primitives the durable stores share: fsync of a directory,
//! atomic replacement of a small file, and an exclusive lock on a data
//! directory.
//!
//! Why the directory fsyncs: creating, renaming or deleting a file changes
//! its directory, and on Linux that change is durable only once the
//! directory itself is synced. Without it, a crash can lose a freshly
//! created segment or revert a renamed vote file even though its data was
//! synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Makes the entries of `dir` (files created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` so that after a crash the file holds
/// either the old or the new contents, never a mix: write a temporary file,
/// sync it, rename it over the old one, sync the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    replace(dir, name, bytes)?;
    sync_dir(dir)
}

/// Like [`write_atomic`] without the directory sync: after a crash the
/// file holds the old or the new contents, whole, but which one is not
/// known. For hints whose loss is harmless (the commit point), at one
/// fsync instead of two.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, dir.join(name))
}

/// Reads `dir/name`, `None` if it does not exist.
pub fn read_optional(dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match fs::read(dir.join(name)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An exclusive advisory lock on a directory, held while the value lives,
/// so two processes (or two stores in one) never write the same log.
#[derive(Debug)]
pub struct DirLock {
    // Keeps the descriptor, and so the lock, open.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "{} is in use by another llmgw process or store ({err})",
                    dir.display()
                ),
            ));
        }
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
