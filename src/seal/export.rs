//! Getting verified captures out for the operator (`veriframe export --identity`): decrypted
//! images, or the daemon's C2PA copies decrypted. Only captures of chains that verified (with
//! the identity: ciphertext and plaintext checked) and that are not erased are written.

use std::path::{Path, PathBuf};

use super::encrypt::{self, Identities};
use super::manifest::ChainEntry;
use super::store::{stem, C2PA_SUFFIXES};
use super::verify::ChainReport;
use super::SealError;
use crate::record::fsio;

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Files written under the output directory.
    pub written: Vec<PathBuf>,
    /// Captures skipped because they were erased.
    pub erased: usize,
    /// Captures with no stored C2PA copy (`--c2pa`; `seal.c2pa` was off when they were sealed).
    pub no_c2pa: Vec<u64>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The bytes of a stored file, decrypted when it is an age file.
fn open_stored(path: &Path, ids: &Identities) -> Result<Vec<u8>, SealError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if path.extension().is_some_and(|e| e == encrypt::EXT) {
        ids.decrypt(&bytes)
            .map_err(|e| SealError::Encode(format!("{}: {e}", path.display())))
    } else {
        Ok(bytes)
    }
}

/// Write the plaintext images (`c2pa` false: `OUT/<image.file>`) or the C2PA copies (`c2pa`
/// true: `OUT/<seq>.c2pa.jpg|png`) of every valid, non-erased capture in `reports`, which must
/// all be valid (the caller verified them). Files are written 0600.
pub fn export(
    reports: &[ChainReport],
    ids: &Identities,
    out: &Path,
    c2pa: bool,
) -> Result<ExportOutcome, SealError> {
    if !reports.iter().all(ChainReport::valid) {
        return Err(SealError::Usage(
            "the captures do not verify: nothing exported".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut res = ExportOutcome::default();
    for c in reports.iter().flat_map(|r| &r.captures) {
        if c.kind != "capture" {
            continue;
        }
        if c.erased.is_some() {
            res.erased += 1;
            continue;
        }
        let bytes = std::fs::read(&c.path).map_err(io(&c.path))?;
        let Ok(ChainEntry::Capture(m)) = ChainEntry::parse(&bytes) else {
            return Err(SealError::Encode(format!(
                "{}: not a capture manifest",
                c.path.display()
            )));
        };
        let dir = c.path.parent().unwrap_or(Path::new("."));
        let (name, data) = if c2pa {
            let found = C2PA_SUFFIXES
                .iter()
                .map(|x| dir.join(format!("{}{x}", stem(m.seq))))
                .find(|p| p.exists());
            let Some(path) = found else {
                res.no_c2pa.push(m.seq);
                continue;
            };
            let data = open_stored(&path, ids)?;
            // The credential binds the chain's manifest by hash (org.veriframe.capture).
            let needle = c.manifest_sha256.as_bytes();
            if !data.windows(needle.len()).any(|w| w == needle) {
                return Err(SealError::Encode(format!(
                    "{}: the C2PA copy does not name manifest {}",
                    path.display(),
                    c.manifest_sha256
                )));
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.trim_end_matches(".age").to_string())
                .unwrap_or_default();
            (name, data)
        } else {
            let data = open_stored(&dir.join(m.stored_file()), ids)?;
            if crate::record::hash::sha256_hex(&data) != m.image.sha256 {
                return Err(SealError::Encode(format!(
                    "{}: image does not match the manifest",
                    c.path.display()
                )));
            }
            (m.image.file.clone(), data)
        };
        let dest = out.join(&name);
        fsio::atomic_write(&dest, &data, 0o600, false)?;
        res.written.push(dest);
    }
    Ok(res)
}
