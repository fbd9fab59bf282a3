//! The capture store: one directory per chain (`<data_dir>/captures/<key id, 16 hex>/`), holding
//! for each capture `<seq:012>.<jpg|png>`, `<seq:012>.sig` and `<seq:012>.json` (a capture exists
//! once its manifest does), plus a signed chain-state record `chain.json` / `chain.sig`.
//!
//! Captures are stored in batches with group commit ([`Store::stage`] each, then one
//! [`Store::commit`]): images and signatures are written under their final names and manifests
//! under temp names; one `syncfs` makes all of it durable; the manifests are renamed to their final
//! names in chain order; one directory fsync makes the renames durable. Two syncs per batch, however
//! many captures it holds. The order of operations is a pure function ([`plan_commit`]); the
//! crash-consistency argument is in `docs/capture-format.md` §2.1.
//!
//! On open the chain head is recovered from the newest manifest (or the chain-state record),
//! orphans of an interrupted write are removed, and retention is applied. Retention deletes the
//! oldest captures (age, total size), after first writing a chain-state record that moves the
//! chain's start, so a verifier can tell pruning from deletion.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use super::keys::{self, DeviceKey};
use super::manifest::{ChainState, Manifest, CHAIN_FORMAT};
use super::SealError;
use crate::record::fsio::{self, io_err, Fs, IoCounters, RealFs};
use crate::record::hash::sha256_hex;
use crate::record::Signer;

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

/// One step of a batch commit (see [`plan_commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `syncfs`: every write and rename so far is durable.
    SyncAll,
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    /// fsync of the chain directory: the renames in it are durable.
    SyncDir,
}

/// The commit of staged captures, in order: one sync of everything written (images and
/// signatures under final names, manifests under temp names), the manifests' renames in chain
/// order, one directory sync. Pure: the caller executes the steps and stops at the first error.
pub fn plan_commit(manifests: &[(PathBuf, PathBuf)]) -> Vec<Op> {
    let mut ops = Vec::with_capacity(manifests.len() + 2);
    ops.push(Op::SyncAll);
    ops.extend(manifests.iter().map(|(tmp, fin)| Op::Rename {
        from: tmp.clone(),
        to: fin.clone(),
    }));
    ops.push(Op::SyncDir);
    ops
}

/// One capture ready to be stored: `manifest` is the canonical encoding of a manifest with this
/// `seq`/`prev`, `sig` its signature.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub prev: Option<String>,
    pub wall_us: u64,
    /// `image.file` of the manifest.
    pub image_file: String,
    pub manifest: Vec<u8>,
    pub sig: [u8; 64],
    pub image: Arc<[u8]>,
}

#[derive(Debug)]
struct StagedCapture {
    entry: Entry,
    sha256: String,
    paths: [PathBuf; 3],
    tmp_manifest: PathBuf,
}

/// Captures written but not yet committed. Built by [`Store::begin`]; the chain position of the
/// next capture is [`Batch::next`].
#[derive(Debug)]
pub struct Batch {
    next: (u64, Option<String>),
    staged: Vec<StagedCapture>,
}

impl Batch {
    /// (seq, prev) for the next manifest of this batch.
    pub fn next(&self) -> (u64, Option<String>) {
        self.next.clone()
    }

    pub fn len(&self) -> usize {
        self.staged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }
}

/// An open chain directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    device_id: String,
    fs: Box<dyn Fs>,
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

/// The manifests (`<seq>.json`, sorted by seq) in a chain directory, and its other capture files:
/// signatures and images by seq, temp files (`.…tmp-…`) as `None`.
type ChainFiles = (Vec<(u64, PathBuf)>, Vec<(Option<u64>, PathBuf)>);

fn scan_chain_dir(dir: &Path) -> Result<ChainFiles, SealError> {
    let mut manifests: Vec<(u64, PathBuf)> = Vec::new();
    let mut others: Vec<(Option<u64>, PathBuf)> = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let ent = ent.map_err(|e| io_err(dir, e))?;
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
    Ok((manifests, others))
}

/// What [`load_entries`] read from the manifests on disk.
struct Loaded {
    entries: VecDeque<Entry>,
    /// Total size on disk: manifests, signatures and images.
    total: u64,
    /// (seq, SHA-256) of the last manifest.
    head: Option<(u64, String)>,
}

/// The store's entries for `manifests` (in seq order), their size and the chain head they give.
fn load_entries(dir: &Path, manifests: &[(u64, PathBuf)]) -> Result<Loaded, SealError> {
    let mut entries = VecDeque::new();
    let mut total = 0;
    let mut head = None;
    for (seq, path) in manifests {
        let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
        let hash = sha256_hex(&bytes);
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
            + file_len(&dir.join(format!("{}.c2pa.jpg", stem(*seq))))
            + file_len(&dir.join(format!("{}.c2pa.png", stem(*seq))))
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
    Ok(Loaded {
        entries,
        total,
        head,
    })
}

/// Orphans from an interrupted write: files newer than the newest manifest (`head_seq`), temp
/// files. Removed (best effort).
fn remove_orphans(others: Vec<(Option<u64>, PathBuf)>, head_seq: Option<u64>) {
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
        Self::open_with(
            captures,
            key,
            device_id,
            retention,
            Box::new(RealFs::new(fsync)),
        )
    }

    /// [`Store::open`] doing its writes through `fs`.
    pub fn open_with(
        captures: &Path,
        key: &DeviceKey,
        device_id: &str,
        retention: Retention,
        fs: Box<dyn Fs>,
    ) -> Result<Self, SealError> {
        let dir = chain_dir(captures, key.id());
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let (manifests, others) = scan_chain_dir(&dir)?;
        let Loaded {
            entries,
            total,
            mut head,
        } = load_entries(&dir, &manifests)?;
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
        remove_orphans(others, head.as_ref().map(|(s, _)| *s));
        let mut store = Self {
            dir,
            device_id: device_id.to_string(),
            fs,
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

    /// Count `bytes` more for capture `seq` (its C2PA copy, written after the commit) towards
    /// the retention size limit.
    pub fn add_bytes(&mut self, seq: u64, bytes: u64) {
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.seq == seq) {
            e.bytes += bytes;
            self.total_bytes += bytes;
        }
    }

    /// Number of captures stored and their total size.
    pub fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.total_bytes)
    }

    /// What went to the disk so far (syncs, bytes).
    pub fn io_counters(&self) -> IoCounters {
        self.fs.counters()
    }

    /// Start a batch at the current chain head.
    pub fn begin(&self) -> Batch {
        Batch {
            next: self.next(),
            staged: Vec::new(),
        }
    }

    /// Write one capture of `batch` (not durable, not yet a capture: its manifest has a temp
    /// name). `p.seq`/`p.prev` must be [`Batch::next`]. On error nothing of it remains and the
    /// batch is unchanged, so the next capture takes its place in the chain.
    pub fn stage(&mut self, batch: &mut Batch, p: &Pending) -> Result<(), SealError> {
        let (seq, prev) = batch.next();
        if p.seq != seq || p.prev != prev {
            return Err(SealError::Encode(format!(
                "capture staged at seq {} (prev {:?}), batch is at {seq} ({prev:?})",
                p.seq, p.prev
            )));
        }
        let st = stem(seq);
        let img = self.dir.join(&p.image_file);
        let sig = self.dir.join(format!("{st}.sig"));
        let man = self.dir.join(format!("{st}.json"));
        let tmp = fsio::temp_name(&man);
        let res = self
            .fs
            .write(&img, &p.image)
            .map_err(|e| io_err(&img, e))
            .and_then(|()| self.fs.write(&sig, &p.sig).map_err(|e| io_err(&sig, e)))
            .and_then(|()| {
                self.fs
                    .write(&tmp, &p.manifest)
                    .map_err(|e| io_err(&tmp, e))
            });
        if let Err(e) = res {
            for q in [&tmp, &sig, &img] {
                let _ = self.fs.remove(q);
            }
            return Err(e.into());
        }
        let sha256 = sha256_hex(&p.manifest);
        batch.next = (seq + 1, Some(sha256.clone()));
        batch.staged.push(StagedCapture {
            entry: Entry {
                seq,
                prev: p.prev.clone(),
                wall_us: p.wall_us,
                bytes: (p.image.len() + p.sig.len() + p.manifest.len()) as u64,
            },
            sha256,
            paths: [img, sig, man],
            tmp_manifest: tmp,
        });
        Ok(())
    }

    /// Make the staged captures durable together ([`plan_commit`]: two syncs). On success they
    /// are stored and the chain head is the batch's last capture; returns their manifest paths in
    /// order. On error none of them remains and the chain head is unchanged.
    pub fn commit(&mut self, key: &DeviceKey, batch: Batch) -> Result<Vec<PathBuf>, SealError> {
        if batch.staged.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(PathBuf, PathBuf)> = batch
            .staged
            .iter()
            .map(|c| (c.tmp_manifest.clone(), c.paths[2].clone()))
            .collect();
        let mut res = Ok(());
        for op in plan_commit(&names) {
            let r = match &op {
                Op::SyncAll => self
                    .fs
                    .sync_all(&self.dir)
                    .map_err(|e| io_err(&self.dir, e)),
                Op::Rename { from, to } => self.fs.rename(from, to).map_err(|e| io_err(to, e)),
                Op::SyncDir => self
                    .fs
                    .sync_dir(&self.dir)
                    .map_err(|e| io_err(&self.dir, e)),
            };
            if let Err(e) = r {
                res = Err(e);
                break;
            }
        }
        if let Err(e) = res {
            // Manifests first, newest first: a crash while undoing leaves a chain prefix.
            for c in batch.staged.iter().rev() {
                let _ = self.fs.remove(&c.paths[2]);
                let _ = self.fs.remove(&c.tmp_manifest);
            }
            for c in &batch.staged {
                let _ = self.fs.remove(&c.paths[0]);
                let _ = self.fs.remove(&c.paths[1]);
            }
            return Err(e.into());
        }
        let mut out = Vec::with_capacity(batch.staged.len());
        for c in batch.staged {
            self.total_bytes += c.entry.bytes;
            self.head = Some((c.entry.seq, c.sha256));
            self.entries.push_back(c.entry);
            self.since_checkpoint += 1;
            let [_, _, man] = c.paths;
            out.push(man);
        }
        // Retention and checkpoints are housekeeping: the captures themselves are safely stored.
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
        Ok(out)
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
        // Both temps synced, then two renames back to back and one directory sync. A crash
        // between the two renames leaves a new chain.sig beside the old chain.json (the record
        // is then reported invalid until the daemon rewrites it on start): a window of two
        // rename calls, once per checkpoint. Closing it needs the format to hold both in one file.
        let (sig_path, json_path) = (self.dir.join("chain.sig"), self.dir.join("chain.json"));
        let (sig_tmp, json_tmp) = (fsio::temp_name(&sig_path), fsio::temp_name(&json_path));
        let res = (|| {
            self.fs
                .write(&sig_tmp, &sig)
                .map_err(|e| io_err(&sig_tmp, e))?;
            self.fs
                .write(&json_tmp, &bytes)
                .map_err(|e| io_err(&json_tmp, e))?;
            self.fs
                .sync_all(&self.dir)
                .map_err(|e| io_err(&self.dir, e))?;
            self.fs
                .rename(&sig_tmp, &sig_path)
                .map_err(|e| io_err(&sig_path, e))?;
            self.fs
                .rename(&json_tmp, &json_path)
                .map_err(|e| io_err(&json_path, e))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| io_err(&self.dir, e))
        })();
        if res.is_err() {
            let _ = self.fs.remove(&sig_tmp);
            let _ = self.fs.remove(&json_tmp);
        }
        res?;
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
            for ext in ["json", "sig", "jpg", "png", "c2pa.jpg", "c2pa.png"] {
                let _ = self.fs.remove(&self.dir.join(format!("{st}.{ext}")));
            }
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| io_err(&self.dir, e))?;
        tracing::info!(
            pruned = n,
            first_seq = self.entries.front().map(|e| e.seq),
            bytes = self.total_bytes,
            "retention pruned old captures"
        );
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_plan_syncs_once_renames_in_chain_order_then_syncs_the_directory() {
        let names: Vec<(PathBuf, PathBuf)> = (0..3)
            .map(|i| {
                let fin = PathBuf::from(format!("/c/{}.json", stem(i)));
                (fsio::temp_name(&fin), fin)
            })
            .collect();
        let ops = plan_commit(&names);
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[0], Op::SyncAll);
        assert_eq!(ops[4], Op::SyncDir);
        for (i, op) in ops[1..4].iter().enumerate() {
            assert_eq!(
                op,
                &Op::Rename {
                    from: names[i].0.clone(),
                    to: names[i].1.clone()
                }
            );
        }
        assert_eq!(plan_commit(&[]), vec![Op::SyncAll, Op::SyncDir]);
    }
}
