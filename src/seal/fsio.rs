//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::SealError;

/// Is this error a full disk (or quota)?
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Map an I/O error on `path` to a [`SealError`], turning ENOSPC/EDQUOT into `StorageFull`.
pub fn io_err(path: &Path, source: io::Error) -> SealError {
    if is_storage_full(&source) {
        SealError::StorageFull {
            path: path.to_path_buf(),
        }
    } else {
        SealError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// fsync a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), SealError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

fn temp_name(path: &Path) -> PathBuf {
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
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32, fsync: bool) -> Result<(), SealError> {
    write_via_temp(path, bytes, mode, fsync, Publish::Replace)
}

/// Like [`atomic_write`] but fails with `AlreadyExists` instead of replacing an existing file
/// (hard link of the finished temp file; link(2) never overwrites).
pub fn atomic_create_new(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    fsync: bool,
) -> Result<(), SealError> {
    write_via_temp(path, bytes, mode, fsync, Publish::CreateNew)
}

fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    fsync: bool,
    how: Publish,
) -> Result<(), SealError> {
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
        assert!(matches!(e, SealError::Io { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn enospc_is_storage_full() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(matches!(
            io_err(Path::new("/x"), e),
            SealError::StorageFull { .. }
        ));
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert!(matches!(io_err(Path::new("/x"), e), SealError::Io { .. }));
    }
}
