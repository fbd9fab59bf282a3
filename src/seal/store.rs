//! The capture store: one directory per chain (`<data_dir>/captures/<key id, 16 hex>/`), holding
//! for each capture `<seq:012>.<jpg|png>`, `<seq:012>.sig` and `<seq:012>.json` (written in that
//! order, each atomically; the manifest last, so a capture exists once its manifest does), plus a
//! signed chain-state record `chain.json` / `chain.sig`.
//!
//! On open the chain head is recovered from the newest manifest (or the chain-state record),
//! orphans of an interrupted write are removed, and retention is applied. Retention deletes the
//! oldest captures (age, total size), after first writing a chain-state record that moves the
//! chain's start, so a verifier can tell pruning from deletion.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fsio::{self, io_err};
use super::keys::{self, DeviceKey};
use super::manifest::{ChainState, Manifest, CHAIN_FORMAT};
use super::{SealError, Signer};

/// File name stem of a capture.
pub fn stem(seq: u64) -> String {
    format!("{seq:012}")
}

/// Chain directory for a key under `<data_dir>/captures`.
pub fn chain_dir(captures: &Path, key_id: &str) -> PathBuf {
    captures.join(&key_id[..16.min(key_id.len())])
}

/// Retention limits; `None` disables one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    prev: Option<String>,
    wall_us: u64,
    bytes: u64,
}

/// An open chain directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    device_id: String,
    fsync: bool,
    retention: Retention,
    entries: VecDeque<Entry>,
    total_bytes: u64,
    /// (seq, sha256) of the newest manifest.
    head: Option<(u64, String)>,
    /// Chain start recorded in the chain state when the store is empty.
    empty_first: (u64, Option<String>),
    since_checkpoint: u32,
}

/// Write a chain-state checkpoint every this many captures (besides open, prune and close).
const CHECKPOINT_EVERY: u32 = 64;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn seq_of(name: &str, ext: &str) -> Option<u64> {
    let s = name.strip_suffix(ext)?;
    (s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl Store {
    /// Open (creating) the chain directory for `key` under `captures`.
    pub fn open(
        captures: &Path,
        key: &DeviceKey,
        device_id: &str,
        retention: Retention,
        fsync: bool,
    ) -> Result<Self, SealError> {
        let dir = chain_dir(captures, key.id());
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut manifests: Vec<(u64, PathBuf)> = Vec::new();
        let mut others: Vec<(Option<u64>, PathBuf)> = Vec::new();
        for ent in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let ent = ent.map_err(|e| io_err(&dir, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path();
            if name.starts_with('.') && name.contains(".tmp-") {
                others.push((None, path));
            } else if let Some(seq) = seq_of(&name, ".json") {
                manifests.push((seq, path));
            } else if let Some(seq) = seq_of(&name, ".sig")
                .or_else(|| seq_of(&name, ".jpg"))
                .or_else(|| seq_of(&name, ".png"))
            {
                others.push((Some(seq), path));
            }
        }
        manifests.sort();
        let mut entries = VecDeque::new();
        let mut total = 0;
        let mut head = None;
        for (seq, path) in &manifests {
            let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
            let hash = keys::sha256_hex(&bytes);
            let (prev, wall_us, image) = match Manifest::parse(&bytes) {
                Ok(m) => (m.prev, m.captured.wall_unix_us, m.image.file),
                Err(e) => {
                    // Keep it (evidence of tampering is the verifier's business) and chain on.
                    tracing::warn!(path = %path.display(), error = %e, "unreadable manifest in store");
                    (None, 0, String::new())
                }
            };
            let size = bytes.len() as u64
                + file_len(&dir.join(format!("{}.sig", stem(*seq))))
                + if image.is_empty() {
                    0
                } else {
                    file_len(&dir.join(&image))
                };
            total += size;
            entries.push_back(Entry {
                seq: *seq,
                prev,
                wall_us,
                bytes: size,
            });
            head = Some((*seq, hash));
        }
        // The chain-state record may know a later head (captures deleted since): never reuse seqs.
        let state = fs::read(dir.join("chain.json"))
            .ok()
            .and_then(|b| ChainState::parse(&b).ok())
            .filter(|c| c.key_id == key.id());
        let mut empty_first = (0, None);
        if let Some(c) = &state {
            if let (Some(l), Some(h)) = (c.last_seq, &c.last_sha256) {
                if head.as_ref().is_none_or(|(s, _)| *s < l) {
                    head = Some((l, h.clone()));
                }
            }
            empty_first = (c.first_seq, c.first_prev.clone());
        }
        if let Some((s, h)) = &head {
            if entries.is_empty() {
                empty_first = (s + 1, Some(h.clone()));
            }
        }
        // Orphans from an interrupted write: files newer than the newest manifest, temp files.
        let head_seq = head.as_ref().map(|(s, _)| *s);
        for (seq, path) in others {
            let orphan = match seq {
                None => true,
                Some(s) => head_seq.is_none_or(|h| s > h),
            };
            if orphan {
                tracing::info!(path = %path.display(), "removing incomplete capture file");
                let _ = fs::remove_file(&path);
            }
        }
        let mut store = Self {
            dir,
            device_id: device_id.to_string(),
            fsync,
            retention,
            entries,
            total_bytes: total,
            head,
            empty_first,
            since_checkpoint: 0,
        };
        store.apply_retention(key)?;
        store.checkpoint(key)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (seq, prev) for the next manifest.
    pub fn next(&self) -> (u64, Option<String>) {
        match &self.head {
            Some((s, h)) => (s + 1, Some(h.clone())),
            None => (0, None),
        }
    }

    /// Number of captures stored and their total size.
    pub fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.total_bytes)
    }

    /// Store one capture. `manifest` must be the canonical bytes of `m`, `sig` its signature.
    /// On error nothing of this capture remains and the chain head is unchanged.
    pub fn write(
        &mut self,
        key: &DeviceKey,
        m: &Manifest,
        manifest: &[u8],
        sig: &[u8; 64],
        image: &[u8],
    ) -> Result<PathBuf, SealError> {
        let st = stem(m.seq);
        let img_path = self.dir.join(&m.image.file);
        let sig_path = self.dir.join(format!("{st}.sig"));
        let man_path = self.dir.join(format!("{st}.json"));
        let res = fsio::atomic_write(&img_path, image, 0o644, self.fsync)
            .and_then(|_| fsio::atomic_write(&sig_path, sig, 0o644, self.fsync))
            .and_then(|_| fsio::atomic_write(&man_path, manifest, 0o644, self.fsync));
        if let Err(e) = res {
            let _ = fs::remove_file(&man_path);
            let _ = fs::remove_file(&sig_path);
            let _ = fs::remove_file(&img_path);
            return Err(e);
        }
        let size = (image.len() + sig.len() + manifest.len()) as u64;
        self.total_bytes += size;
        self.entries.push_back(Entry {
            seq: m.seq,
            prev: m.prev.clone(),
            wall_us: m.captured.wall_unix_us,
            bytes: size,
        });
        self.head = Some((m.seq, keys::sha256_hex(manifest)));
        self.since_checkpoint += 1;
        // Retention and checkpoints are housekeeping: the capture itself is safely stored.
        let pruned = match self.apply_retention(key) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "retention failed");
                0
            }
        };
        if pruned == 0 && self.since_checkpoint >= CHECKPOINT_EVERY {
            if let Err(e) = self.checkpoint(key) {
                tracing::warn!(error = %e, "chain checkpoint failed");
            }
        }
        Ok(man_path)
    }

    /// Write the signed chain-state record.
    pub fn checkpoint(&mut self, key: &DeviceKey) -> Result<(), SealError> {
        let (first_seq, first_prev) = match self.entries.front() {
            Some(e) => (e.seq, e.prev.clone()),
            None => self.empty_first.clone(),
        };
        let state = ChainState {
            format: CHAIN_FORMAT.into(),
            device_id: self.device_id.clone(),
            key_id: key.key_id(),
            public_key: keys::public_key_b64(&key.public()),
            first_seq,
            // A manifest that failed to parse has no known prev; record the chain as starting
            // after it would be wrong, so fall back to what the state said before.
            first_prev: if first_seq == 0 { None } else { first_prev },
            last_seq: self.head.as_ref().map(|(s, _)| *s),
            last_sha256: self.head.as_ref().map(|(_, h)| h.clone()),
            written_unix_us: now_us(),
        };
        let bytes = state
            .to_canonical()
            .map_err(|e| SealError::Encode(e.to_string()))?;
        if ChainState::parse(&bytes).is_err() {
            // Inconsistent (e.g. an unreadable oldest manifest): do not write a record a
            // verifier would reject; the previous one stays.
            return Ok(());
        }
        let sig = key.sign(&bytes);
        fsio::atomic_write(&self.dir.join("chain.sig"), &sig, 0o644, self.fsync)?;
        fsio::atomic_write(&self.dir.join("chain.json"), &bytes, 0o644, self.fsync)?;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// Delete the oldest captures beyond the limits (always keeping the newest). Returns how
    /// many were deleted.
    fn apply_retention(&mut self, key: &DeviceKey) -> Result<usize, SealError> {
        let cutoff = self
            .retention
            .max_age
            .map(|a| now_us().saturating_sub(a.as_micros() as u64));
        let over_age = |e: &Entry| cutoff.is_some_and(|c| e.wall_us < c);
        let over_size = self
            .retention
            .max_bytes
            .is_some_and(|m| self.total_bytes > m);
        let front_old = self.entries.front().is_some_and(over_age);
        if !over_size && !front_old {
            return Ok(0);
        }
        // Prune to 90% of the size limit so checkpoints (one signed write per prune) are rare.
        let target = self.retention.max_bytes.map(|m| m / 10 * 9);
        let mut n = 0;
        let mut remaining = self.total_bytes;
        for e in self
            .entries
            .iter()
            .take(self.entries.len().saturating_sub(1))
        {
            let size_ok = target.is_none_or(|t| remaining <= t);
            if size_ok && !over_age(e) {
                break;
            }
            remaining -= e.bytes;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        let doomed: Vec<Entry> = self.entries.drain(..n).collect();
        self.total_bytes = remaining;
        // First move the chain's start in the signed record, then delete: a crash in between
        // leaves extra old captures, which a verifier accepts.
        self.checkpoint(key)?;
        for e in &doomed {
            let st = stem(e.seq);
            let _ = fs::remove_file(self.dir.join(format!("{st}.json")));
            let _ = fs::remove_file(self.dir.join(format!("{st}.sig")));
            let _ = fs::remove_file(self.dir.join(format!("{st}.jpg")));
            let _ = fs::remove_file(self.dir.join(format!("{st}.png")));
        }
        if self.fsync {
            fsio::sync_dir(&self.dir)?;
        }
        tracing::info!(
            pruned = n,
            first_seq = self.entries.front().map(|e| e.seq),
            bytes = self.total_bytes,
            "retention pruned old captures"
        );
        Ok(n)
    }
}
