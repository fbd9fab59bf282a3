//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory;
//! and [`Fs`], the seam through which the capture store does its I/O (the real file system, with
//! an optional injected sync delay for benchmarks, or a power-cut model in tests).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file write that failed, naming the file. The seal stage turns these into its own errors
/// (`StorageFull` stays `StorageFull`: capture goes on without storing).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The disk (or quota) is full.
    #[error("{path}: storage full")]
    StorageFull { path: PathBuf },
}

/// Is this error a full disk (or quota)?
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Map an I/O error on `path` to a [`WriteError`], turning ENOSPC/EDQUOT into `StorageFull`.
pub fn io_err(path: &Path, source: io::Error) -> WriteError {
    if is_storage_full(&source) {
        WriteError::StorageFull {
            path: path.to_path_buf(),
        }
    } else {
        WriteError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// fsync a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Counts of what went to the disk through an [`Fs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IoCounters {
    /// Sync calls that reached the disk (`syncfs` and directory `fsync`).
    pub syncs: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The file-system operations of the capture store. Writes and renames are not durable until a
/// later [`Fs::sync_all`] (data and names) or [`Fs::sync_dir`] (names) returns.
pub trait Fs: Send + std::fmt::Debug {
    /// Create or truncate `path` (mode 0644) and write `bytes`; not synced.
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// rename(2): atomic, replaces `to`; not synced.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// unlink(2); not synced.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
    /// Make every write, rename and unlink made so far on `dir`'s file system durable.
    fn sync_all(&mut self, dir: &Path) -> io::Result<()>;
    /// Make the names in `dir` (renames and unlinks in it) durable.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// What went to the disk so far.
    fn counters(&self) -> IoCounters;
}

/// The real file system. `fsync: false` skips every sync (tmpfs, benchmarks). `sync_delay` is
/// slept after every sync that is made: the seam where `bench-seal --fsync-delay-ms` models a
/// slow SD card (whose cache flush commonly takes 5–50 ms).
#[derive(Debug, Clone, Default)]
pub struct RealFs {
    pub fsync: bool,
    pub sync_delay: Duration,
    counters: IoCounters,
}

impl RealFs {
    pub fn new(fsync: bool) -> Self {
        Self {
            fsync,
            sync_delay: Duration::ZERO,
            counters: IoCounters::default(),
        }
    }

    /// With a sleep of `delay` after every sync.
    pub fn with_delay(fsync: bool, delay: Duration) -> Self {
        Self {
            sync_delay: delay,
            ..Self::new(fsync)
        }
    }

    fn synced(&mut self) {
        self.counters.syncs += 1;
        if !self.sync_delay.is_zero() {
            std::thread::sleep(self.sync_delay);
        }
    }
}

impl Fs for RealFs {
    fn write(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(path)?;
        f.write_all(bytes)?;
        self.counters.bytes += bytes.len() as u64;
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// syncfs(2): one call flushes the data and metadata of every file written (and every
    /// rename) on the file system, where fsync(2) per file would flush the device cache once per
    /// file. Writeback errors are reported by syncfs since Linux 5.8.
    fn sync_all(&mut self, dir: &Path) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        let d = File::open(dir)?;
        // SAFETY: `d` is an open file descriptor for the duration of the call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.synced();
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        if !self.fsync {
            return Ok(());
        }
        File::open(dir)?.sync_all()?;
        self.synced();
        Ok(())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

/// The temp name beside `path` used while it is written (`.NAME.tmp-PID`).
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// How the finished temp file takes its final name.
#[derive(Clone, Copy)]
enum Publish {
    /// rename(2): replaces an existing file.
    Replace,
    /// link(2): never overwrites; an existing file is `AlreadyExists`.
    CreateNew,
}

/// Write `bytes` to `path` atomically: a reader sees either the old file or the whole new one,
/// never a part. With `fsync`, the data and the rename are durable when this returns. The file
/// is created with `mode` (e.g. 0o600 for keys). On error the temp file is removed.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32, fsync: bool) -> Result<(), WriteError> {
    write_via_temp(path, bytes, mode, fsync, Publish::Replace)
}

/// Like [`atomic_write`] but fails with `AlreadyExists` instead of replacing an existing file
/// (hard link of the finished temp file; link(2) never overwrites).
pub fn atomic_create_new(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    fsync: bool,
) -> Result<(), WriteError> {
    write_via_temp(path, bytes, mode, fsync, Publish::CreateNew)
}

fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    fsync: bool,
    how: Publish,
) -> Result<(), WriteError> {
    let tmp = temp_name(path);
    let res = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).mode(mode);
        match how {
            Publish::Replace => opts.create(true).truncate(true),
            Publish::CreateNew => opts.create_new(true),
        };
        let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
        if fsync {
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
        }
        drop(f);
        match how {
            Publish::Replace => fs::rename(&tmp, path),
            Publish::CreateNew => fs::hard_link(&tmp, path),
        }
        .map_err(|e| io_err(path, e))?;
        if fsync {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                sync_dir(dir)?;
            }
        }
        Ok(())
    })();
    // A successful rename consumed the temp name; after a link (or any error) it is removed here.
    if res.is_err() || matches!(how, Publish::CreateNew) {
        let _ = fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.bin");
        atomic_write(&p, b"one", 0o600, true).unwrap();
        atomic_write(&p, b"two", 0o600, false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp files left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        let e = atomic_create_new(&p, b"three", 0o600, true).unwrap_err();
        assert!(matches!(e, WriteError::Io { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn enospc_is_storage_full() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            io_err(Path::new("/x"), e),
            WriteError::StorageFull { .. }
        ));
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(io_err(Path::new("/x"), e), WriteError::Io { .. }));
    }
}
