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

use super::manifest::{
    seq_ranges, ChainEntry, ChainState, Erasure, CHAIN_FORMAT, ERASURE_FORMAT, SIG_ALG_ED25519,
};
use super::SealError;
use crate::record::fsio::{self, io_err, Fs, IoCounters, RealFs};
use crate::record::hash::sha256_hex;
use crate::record::Signer;

/// File name stem of a capture.
pub fn stem(seq: u64) -> String {
    format!("{seq:012}")
}

/// Suffixes of a capture's stored image after its stem: clear or encrypted (`seal.encrypt_to`).
pub const IMAGE_SUFFIXES: &[&str] = &[".jpg", ".png", ".jpg.age", ".png.age"];
/// Suffixes of a capture's C2PA copy after its stem: clear or encrypted.
pub const C2PA_SUFFIXES: &[&str] = &[".c2pa.jpg", ".c2pa.png", ".c2pa.jpg.age", ".c2pa.png.age"];

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
    /// A capture (with an image); `false` for an erasure record.
    capture: bool,
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
    /// The image (none for an erasure record), the signature, the manifest.
    image: Option<PathBuf>,
    sig: PathBuf,
    manifest: PathBuf,
    tmp_manifest: PathBuf,
    /// Erased capture ranges, for an erasure record.
    erases: Vec<[u64; 2]>,
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
    /// Capture ranges erased by the erasure records in the store.
    erased: Vec<[u64; 2]>,
    /// Exclusive `flock` on `<dir>/.lock`, held while the store is open: one writer per chain.
    _lock: fs::File,
}

/// Name of the lock file in a chain directory.
pub const LOCK_FILE: &str = ".lock";

/// Take the chain directory's writer lock, or say who holds it.
fn lock_chain(dir: &Path) -> Result<fs::File, SealError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(SealError::Busy {
                path: dir.to_path_buf(),
            });
        }
        return Err(io_err(&path, e).into());
    }
    Ok(f)
}

/// An erasure to record and carry out ([`Store::erase`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseRequest {
    /// Captures (seqs) whose images are to be erased.
    pub seqs: Vec<u64>,
    /// `request` or `retention`.
    pub trigger: &'static str,
    pub reason: String,
    /// How the captures were chosen, as given.
    pub selector: String,
}

/// What [`Store::erase`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EraseOutcome {
    /// The erasure record written: its seq and SHA-256 (none when every capture was already
    /// covered by an earlier record).
    pub record_seq: Option<u64>,
    pub record_sha256: Option<String>,
    /// Captures the new record names.
    pub recorded: Vec<u64>,
    /// Captures an earlier record already named (their files are removed again if present).
    pub already_recorded: Vec<u64>,
    /// Requested seqs that are no capture in the store (erasure records, pruned, or never
    /// written).
    pub not_found: Vec<u64>,
    /// Image and C2PA files removed.
    pub files_removed: usize,
}

/// The time retention judges an erasure record by: that of the newest capture it names still in
/// the store (it goes when they would have gone), or 0 when none is left.
fn record_age(entries: &VecDeque<Entry>, ranges: &[[u64; 2]]) -> u64 {
    entries
        .iter()
        .filter(|e| e.capture && covered(ranges, e.seq))
        .map(|e| e.wall_us)
        .max()
        .unwrap_or(0)
}

fn covered(ranges: &[[u64; 2]], seq: u64) -> bool {
    ranges.iter().any(|[a, b]| (*a..=*b).contains(&seq))
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
        } else if let Some(seq) = IMAGE_SUFFIXES
            .iter()
            .chain([&".sig"])
            .find_map(|x| seq_of(&name, x))
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
    /// Capture ranges named by erasure records.
    erased: Vec<[u64; 2]>,
}

/// The store's entries for `manifests` (in seq order), their size and the chain head they give.
fn load_entries(dir: &Path, manifests: &[(u64, PathBuf)]) -> Result<Loaded, SealError> {
    let mut entries = VecDeque::new();
    let mut total = 0;
    let mut head = None;
    let mut erased = Vec::new();
    for (seq, path) in manifests {
        let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
        let hash = sha256_hex(&bytes);
        let parsed = ChainEntry::parse(&bytes);
        if let Ok(ChainEntry::Erasure(e)) = &parsed {
            erased.extend_from_slice(&e.captures);
        }
        let capture = !matches!(parsed, Ok(ChainEntry::Erasure(_)));
        let (prev, wall_us, image) = match parsed {
            Ok(ChainEntry::Erasure(e)) => (
                Some(e.prev.clone()),
                record_age(&entries, &e.captures),
                String::new(),
            ),
            Ok(e) => (
                e.prev().map(str::to_string),
                e.wall_us(),
                e.capture()
                    .map(|m| m.stored_file().to_string())
                    .unwrap_or_default(),
            ),
            Err(e) => {
                // Keep it (evidence of tampering is the verifier's business) and chain on.
                tracing::warn!(path = %path.display(), error = %e, "unreadable manifest in store");
                (None, 0, String::new())
            }
        };
        let size = bytes.len() as u64
            + file_len(&dir.join(format!("{}.sig", stem(*seq))))
            + C2PA_SUFFIXES
                .iter()
                .map(|x| file_len(&dir.join(format!("{}{x}", stem(*seq)))))
                .sum::<u64>()
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
            capture,
        });
        head = Some((*seq, hash));
    }
    Ok(Loaded {
        entries,
        total,
        head,
        erased,
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
        key: &dyn Signer,
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
        key: &dyn Signer,
        device_id: &str,
        retention: Retention,
        fs: Box<dyn Fs>,
    ) -> Result<Self, SealError> {
        let dir = chain_dir(captures, &key.key_id());
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let lock = lock_chain(&dir)?;
        let (manifests, others) = scan_chain_dir(&dir)?;
        let Loaded {
            entries,
            total,
            mut head,
            erased,
        } = load_entries(&dir, &manifests)?;
        // The chain-state record may know a later head (captures deleted since): never reuse seqs.
        let state = fs::read(dir.join("chain.json"))
            .ok()
            .and_then(|b| ChainState::parse(&b).ok())
            .filter(|c| c.key_id == key.key_id());
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
            erased,
            _lock: lock,
        };
        // An erasure interrupted after its record was written: finish it.
        let unfinished: Vec<u64> = store
            .entries
            .iter()
            .filter(|e| e.capture && covered(&store.erased, e.seq))
            .map(|e| e.seq)
            .collect();
        if store.remove_images(&unfinished)? > 0 {
            tracing::info!("finished an interrupted erasure");
        }
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
        let entry = Entry {
            seq,
            prev: p.prev.clone(),
            wall_us: p.wall_us,
            bytes: (p.image.len() + p.sig.len() + p.manifest.len()) as u64,
            capture: true,
        };
        self.stage_entry(
            batch,
            entry,
            Some((p.image_file.as_str(), &p.image[..])),
            &p.manifest,
            &p.sig,
            Vec::new(),
        )
    }

    /// Write one chain entry: its image (a capture) or none (an erasure record), signature and
    /// temporary manifest. On error nothing of it remains.
    fn stage_entry(
        &mut self,
        batch: &mut Batch,
        entry: Entry,
        image: Option<(&str, &[u8])>,
        manifest: &[u8],
        sig: &[u8; 64],
        erases: Vec<[u64; 2]>,
    ) -> Result<(), SealError> {
        let st = stem(entry.seq);
        let img = image.map(|(name, _)| self.dir.join(name));
        let sig_path = self.dir.join(format!("{st}.sig"));
        let man = self.dir.join(format!("{st}.json"));
        let tmp = fsio::temp_name(&man);
        let res = match (&img, image) {
            (Some(path), Some((_, bytes))) => {
                self.fs.write(path, bytes).map_err(|e| io_err(path, e))
            }
            _ => Ok(()),
        }
        .and_then(|()| {
            self.fs
                .write(&sig_path, sig)
                .map_err(|e| io_err(&sig_path, e))
        })
        .and_then(|()| self.fs.write(&tmp, manifest).map_err(|e| io_err(&tmp, e)));
        if let Err(e) = res {
            for q in [Some(&tmp), Some(&sig_path), img.as_ref()]
                .into_iter()
                .flatten()
            {
                let _ = self.fs.remove(q);
            }
            return Err(e.into());
        }
        let sha256 = sha256_hex(manifest);
        batch.next = (entry.seq + 1, Some(sha256.clone()));
        batch.staged.push(StagedCapture {
            entry,
            sha256,
            image: img,
            sig: sig_path,
            manifest: man,
            tmp_manifest: tmp,
            erases,
        });
        Ok(())
    }

    /// Make the staged captures durable together ([`plan_commit`]: two syncs). On success they
    /// are stored and the chain head is the batch's last capture; returns their manifest paths in
    /// order. On error none of them remains and the chain head is unchanged.
    pub fn commit(&mut self, key: &dyn Signer, batch: Batch) -> Result<Vec<PathBuf>, SealError> {
        let out = self.commit_batch(batch)?;
        if out.is_empty() {
            return Ok(out);
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

    /// [`Store::commit`] without retention and checkpoint.
    fn commit_batch(&mut self, batch: Batch) -> Result<Vec<PathBuf>, SealError> {
        if batch.staged.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<(PathBuf, PathBuf)> = batch
            .staged
            .iter()
            .map(|c| (c.tmp_manifest.clone(), c.manifest.clone()))
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
                let _ = self.fs.remove(&c.manifest);
                let _ = self.fs.remove(&c.tmp_manifest);
            }
            for c in &batch.staged {
                if let Some(img) = &c.image {
                    let _ = self.fs.remove(img);
                }
                let _ = self.fs.remove(&c.sig);
            }
            return Err(e.into());
        }
        let mut out = Vec::with_capacity(batch.staged.len());
        for c in batch.staged {
            self.total_bytes += c.entry.bytes;
            self.head = Some((c.entry.seq, c.sha256));
            self.entries.push_back(c.entry);
            self.erased.extend_from_slice(&c.erases);
            self.since_checkpoint += 1;
            out.push(c.manifest);
        }
        Ok(out)
    }

    /// Record an erasure in the chain, then remove the images and C2PA copies of the named
    /// captures (manifests and signatures stay), then write the chain state. The record is
    /// durable before any file is removed; a crash in between is finished on the next open.
    /// Captures an earlier record already names get no second record.
    pub fn erase(
        &mut self,
        key: &dyn Signer,
        req: &EraseRequest,
    ) -> Result<EraseOutcome, SealError> {
        let mut out = EraseOutcome::default();
        let mut seqs = req.seqs.clone();
        seqs.sort_unstable();
        seqs.dedup();
        for s in seqs {
            let is_capture = self.entries.iter().any(|e| e.seq == s && e.capture);
            if !is_capture {
                out.not_found.push(s);
            } else if covered(&self.erased, s) {
                out.already_recorded.push(s);
            } else {
                out.recorded.push(s);
            }
        }
        if !out.recorded.is_empty() {
            let (seq, sha) = self.append_erasure(key, req, &out.recorded)?;
            out.record_seq = Some(seq);
            out.record_sha256 = Some(sha);
        }
        let doomed: Vec<u64> = out
            .recorded
            .iter()
            .chain(&out.already_recorded)
            .copied()
            .collect();
        out.files_removed = self.remove_images(&doomed)?;
        self.checkpoint(key)?;
        Ok(out)
    }

    /// Append a signed erasure record naming `seqs` (committed: two syncs). Returns its seq and
    /// SHA-256.
    fn append_erasure(
        &mut self,
        key: &dyn Signer,
        req: &EraseRequest,
        seqs: &[u64],
    ) -> Result<(u64, String), SealError> {
        let mut batch = self.begin();
        let (seq, prev) = batch.next();
        let record = Erasure {
            format: ERASURE_FORMAT.into(),
            sig_alg: SIG_ALG_ED25519.into(),
            device_id: self.device_id.clone(),
            key_id: key.key_id(),
            public_key: key.verifying_key().to_b64(),
            seq,
            prev: prev.unwrap_or_default(),
            erased_unix_us: now_us(),
            trigger: req.trigger.into(),
            reason: req.reason.clone(),
            selector: req.selector.clone(),
            captures: seq_ranges(seqs),
        };
        let bytes = record
            .to_canonical()
            .map_err(|e| SealError::Encode(e.to_string()))?;
        Erasure::parse(&bytes).map_err(|e| SealError::Encode(format!("erasure record: {e}")))?;
        let sig = key.sign(&bytes);
        let entry = Entry {
            seq,
            prev: Some(record.prev.clone()),
            wall_us: record_age(&self.entries, &record.captures),
            bytes: (bytes.len() + sig.len()) as u64,
            capture: false,
        };
        self.stage_entry(
            &mut batch,
            entry,
            None,
            &bytes,
            &sig,
            record.captures.clone(),
        )?;
        self.commit_batch(batch)?;
        let sha = sha256_hex(&bytes);
        tracing::info!(
            record_seq = seq,
            trigger = req.trigger,
            captures = seqs.len(),
            "erasure recorded"
        );
        Ok((seq, sha))
    }

    /// Remove the image and C2PA files of captures `seqs` (best effort per file), then sync the
    /// directory. Returns how many files were removed.
    fn remove_images(&mut self, seqs: &[u64]) -> Result<usize, SealError> {
        let mut n = 0;
        for &s in seqs {
            let st = stem(s);
            let mut freed = 0;
            for x in IMAGE_SUFFIXES.iter().chain(C2PA_SUFFIXES) {
                let p = self.dir.join(format!("{st}{x}"));
                let len = file_len(&p);
                if self.fs.remove(&p).is_ok() {
                    n += 1;
                    freed += len;
                }
            }
            if let Some(e) = self.entries.iter_mut().find(|e| e.seq == s) {
                let f = freed.min(e.bytes);
                e.bytes -= f;
                self.total_bytes = self.total_bytes.saturating_sub(f);
            }
        }
        if n > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| io_err(&self.dir, e))?;
        }
        Ok(n)
    }

    /// Write the signed chain-state record.
    pub fn checkpoint(&mut self, key: &dyn Signer) -> Result<(), SealError> {
        let (first_seq, first_prev) = match self.entries.front() {
            Some(e) => (e.seq, e.prev.clone()),
            None => self.empty_first.clone(),
        };
        let state = ChainState {
            format: CHAIN_FORMAT.into(),
            sig_alg: Some(SIG_ALG_ED25519.into()),
            device_id: self.device_id.clone(),
            key_id: key.key_id(),
            public_key: key.verifying_key().to_b64(),
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
    fn apply_retention(&mut self, key: &dyn Signer) -> Result<usize, SealError> {
        let now = now_us();
        let max_age = self.retention.max_age.map(|a| a.as_micros() as u64);
        let cutoff = max_age.map(|a| now.saturating_sub(a));
        // Once the oldest capture is over the age limit, everything older than 99 % of it goes
        // at once: never kept longer than the limit, and one erasure record per 1 % of the
        // retention period rather than one per capture.
        let early = max_age.map(|a| now.saturating_sub(a - a / 100));
        let older = |e: &Entry, c: Option<u64>| c.is_some_and(|c| e.wall_us < c);
        let over_size = self
            .retention
            .max_bytes
            .is_some_and(|m| self.total_bytes > m);
        let front_old = self.entries.front().is_some_and(|e| older(e, cutoff));
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
            if size_ok && !older(e, early) {
                break;
            }
            remaining -= e.bytes;
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // The same signed erasure record as `veriframe erase`, before anything is deleted.
        let seqs: Vec<u64> = self
            .entries
            .iter()
            .take(n)
            .filter(|e| e.capture && !covered(&self.erased, e.seq))
            .map(|e| e.seq)
            .collect();
        if !seqs.is_empty() {
            let req = EraseRequest {
                seqs: seqs.clone(),
                trigger: "retention",
                reason: self.retention_reason(over_size, front_old),
                selector: "retention".into(),
            };
            self.append_erasure(key, &req, &seqs)?;
        }
        let doomed: Vec<Entry> = self.entries.drain(..n).collect();
        let freed: u64 = doomed.iter().map(|e| e.bytes).sum();
        self.total_bytes = self.total_bytes.saturating_sub(freed);
        // First move the chain's start in the signed record, then delete: a crash in between
        // leaves extra old captures, which a verifier accepts.
        self.checkpoint(key)?;
        for e in &doomed {
            let st = stem(e.seq);
            for x in [".json", ".sig"]
                .iter()
                .chain(IMAGE_SUFFIXES)
                .chain(C2PA_SUFFIXES)
            {
                let _ = self.fs.remove(&self.dir.join(format!("{st}{x}")));
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

    /// The erasure record's reason for a retention deletion.
    fn retention_reason(&self, over_size: bool, over_age: bool) -> String {
        let mut why = Vec::new();
        if over_age {
            if let Some(a) = self.retention.max_age {
                why.push(format!(
                    "older than seal.retention_max_age ({})",
                    humantime::format_duration(a)
                ));
            }
        }
        if over_size {
            if let Some(m) = self.retention.max_bytes {
                why.push(format!(
                    "store over seal.retention_max_mb ({} MiB)",
                    m / (1024 * 1024)
                ));
            }
        }
        format!("retention: {}", why.join("; "))
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
