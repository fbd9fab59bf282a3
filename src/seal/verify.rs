//! Verification of stored captures: each manifest's form and signature, its image's length and
//! hash, and the chain (gaps, duplicates, broken links, key changes, start and end as vouched
//! for by the signed chain-state record).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::keys;
use super::manifest::{ChainState, Manifest};
use super::store::stem;
use super::SealError;
use crate::record::hash::sha256_hex;
use crate::record::verify_signature;

/// One thing wrong with a capture or a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stable machine code: `unreadable`, `malformed`, `signature_missing`, `bad_signature`,
    /// `wrong_key`, `key_changed`, `image_missing`, `image_length`, `image_hash`, `misnamed`,
    /// `duplicate`, `gap`, `broken_link`, `head_mismatch`, `chain_state_missing`,
    /// `chain_state_invalid`, `start_link`, `tail_missing`.
    pub code: &'static str,
    pub message: String,
}

fn problem(code: &'static str, message: impl Into<String>) -> Problem {
    Problem {
        code,
        message: message.into(),
    }
}

/// Result for one manifest file.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub path: PathBuf,
    pub seq: Option<u64>,
    pub verdict: Option<String>,
    /// The manifest's `policy` (why it was sealed: `authentic`, `evidence`, `every`).
    pub policy: Option<String>,
    pub key_id: Option<String>,
    pub manifest_sha256: String,
    pub problems: Vec<Problem>,
    /// The manifest's source identity (`fingerprint`; absent in `veriframe.capture/1`). As
    /// signed: only meaningful when the capture is valid.
    pub fingerprint: Option<crate::frame::identity::SourceIdentity>,
}

impl CaptureReport {
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Result for one chain (a capture directory, or the loose manifest files given).
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// The chain directory, or `None` for manifest files given one by one.
    pub dir: Option<PathBuf>,
    /// Key the captures were checked against.
    pub key_id: Option<String>,
    /// `pubkey` (given with --pubkey) or `tofu` (taken from the captures).
    pub trust: &'static str,
    /// Whether the chain's start and end were checked against a chain-state record.
    pub complete: bool,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub problems: Vec<Problem>,
    /// Observations that do not make the chain invalid: `uncheckpointed` (captures after the
    /// last chain-state record: where a crash cleanly truncates the chain) and `incomplete_write`
    /// (files of a batch interrupted before its manifests were committed; the daemon removes them
    /// on start).
    pub notes: Vec<Problem>,
    pub captures: Vec<CaptureReport>,
}

impl ChainReport {
    pub fn valid(&self) -> bool {
        self.problems.is_empty() && self.captures.iter().all(CaptureReport::valid)
    }
}

struct Item {
    report: CaptureReport,
    bytes: Vec<u8>,
    manifest: Option<Manifest>,
    name_seq: Option<u64>,
    /// Signed by the trusted key: its seq can be believed.
    authentic: bool,
}

impl Item {
    /// Position in the chain: the signed seq when the signature verified, else the seq in the
    /// file name (a forged seq must not make neighbours look like gaps or duplicates).
    fn pos(&self) -> Option<u64> {
        match &self.manifest {
            Some(m) if self.authentic => Some(m.seq),
            m => self.name_seq.or(m.as_ref().map(|m| m.seq)),
        }
    }
}

fn name_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let s = name.strip_suffix(".json")?;
    (s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn is_manifest_name(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json") && p.file_name().is_some_and(|n| n != "chain.json")
}

/// Is `dir` a chain directory (has a chain-state record or files named like manifests,
/// `<12 digits>.json`)? Other JSON files (the camera pin records under `<data_dir>/camera/`) do
/// not make a directory a chain.
fn is_chain_dir(dir: &Path) -> bool {
    dir.join("chain.json").exists()
        || fs::read_dir(dir)
            .map(|rd| rd.flatten().any(|e| name_seq(&e.path()).is_some()))
            .unwrap_or(false)
}

/// The entries of `dir` that pass `keep`, sorted by path.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, SealError> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|source| SealError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    out.sort();
    Ok(out)
}

fn find_chain_dirs(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) -> Result<(), SealError> {
    if is_chain_dir(dir) {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    if depth == 0 {
        return Ok(());
    }
    let subs = sorted_entries(dir, |p| p.is_dir())?;
    for s in subs {
        find_chain_dirs(&s, depth - 1, out)?;
    }
    Ok(())
}

fn load_item(path: &Path) -> Item {
    let mut report = CaptureReport {
        path: path.to_path_buf(),
        seq: None,
        verdict: None,
        policy: None,
        key_id: None,
        manifest_sha256: String::new(),
        problems: Vec::new(),
        fingerprint: None,
    };
    let ns = name_seq(path);
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.problems.push(problem("unreadable", e.to_string()));
            return Item {
                report,
                bytes: Vec::new(),
                manifest: None,
                name_seq: ns,
                authentic: false,
            };
        }
    };
    report.manifest_sha256 = sha256_hex(&bytes);
    let manifest = match Manifest::parse(&bytes) {
        Ok(m) => {
            report.seq = Some(m.seq);
            report.verdict = Some(m.analysis.verdict.clone());
            report.fingerprint = m.fingerprint.clone();
            report.policy = Some(m.policy.clone());
            report.key_id = Some(m.key_id.clone());
            Some(m)
        }
        Err(e) => {
            report.seq = ns;
            report.problems.push(problem("malformed", e.to_string()));
            None
        }
    };
    Item {
        report,
        bytes,
        manifest,
        name_seq: ns,
        authentic: false,
    }
}

/// Check signature, key and image of one parsed item against `trusted`.
fn check_item(item: &mut Item, trusted: Option<&[u8; 32]>, tofu: bool) {
    let Some(m) = &item.manifest else { return };
    let path = &item.report.path;
    let probs = &mut item.report.problems;
    let embedded = m.public_key_raw();
    if let (Some(t), Some(e)) = (trusted, embedded.as_ref()) {
        if t != e {
            let (code, what) = if tofu {
                ("key_changed", "the chain's key")
            } else {
                ("wrong_key", "the --pubkey key")
            };
            probs.push(problem(
                code,
                format!(
                    "signed by key {}, not {what} {}",
                    &m.key_id[..16],
                    &keys::key_id(t)[..16]
                ),
            ));
        }
    }
    let sig_path = path.with_extension("sig");
    match fs::read(&sig_path) {
        Err(e) => probs.push(problem(
            "signature_missing",
            format!("{}: {e}", sig_path.display()),
        )),
        Ok(sig) => {
            let key = trusted.or(embedded.as_ref());
            let ok = sig.len() == 64 && key.is_some_and(|k| verify_signature(k, &item.bytes, &sig));
            item.authentic = ok && trusted.is_none_or(|t| embedded.as_ref() == Some(t));
            if !ok {
                probs.push(problem(
                    "bad_signature",
                    if sig.len() != 64 {
                        format!("signature is {} bytes, not 64", sig.len())
                    } else {
                        "Ed25519 signature does not verify".to_string()
                    },
                ));
            }
        }
    }
    let img_path = path.with_file_name(&m.image.file);
    match fs::read(&img_path) {
        Err(e) => probs.push(problem(
            "image_missing",
            format!("{}: {e}", img_path.display()),
        )),
        Ok(img) => {
            if img.len() as u64 != m.image.len {
                probs.push(problem(
                    "image_length",
                    format!(
                        "image is {} bytes, manifest says {}",
                        img.len(),
                        m.image.len
                    ),
                ));
            } else if sha256_hex(&img) != m.image.sha256 {
                probs.push(problem(
                    "image_hash",
                    "image SHA-256 does not match the manifest",
                ));
            }
        }
    }
    let expected = format!("{}.json", stem(m.seq));
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        probs.push(problem(
            "misnamed",
            format!(
                "manifest for seq {} should be named {expected} (moved or renamed)",
                m.seq
            ),
        ));
    }
}

/// Chain continuity over items sorted by seq. Returns chain-level problems.
fn check_chain(items: &mut [Item]) {
    items.sort_by_key(|i| {
        (
            i.pos().unwrap_or(u64::MAX),
            // The correctly named one first among duplicates.
            !i.report.problems.is_empty(),
        )
    });
    // (seq, sha256, trusted)
    let mut prev: Option<(u64, String, bool)> = None;
    for item in items.iter_mut() {
        let Some(seq) = item.pos() else { continue };
        let this_ok = item.report.problems.is_empty();
        if let Some((ps, ph, pok)) = &prev {
            if seq == *ps {
                item.report.problems.push(problem(
                    "duplicate",
                    format!("another capture has seq {seq}"),
                ));
                continue;
            }
            if seq > ps + 1 {
                item.report.problems.push(problem(
                    "gap",
                    format!("captures {}..={} are missing", ps + 1, seq - 1),
                ));
            } else if let Some(m) = &item.manifest {
                if *pok && this_ok && m.prev.as_deref() != Some(ph.as_str()) {
                    item.report.problems.push(problem(
                        "broken_link",
                        format!(
                            "prev does not match the manifest at seq {ps} (reordered or replaced)"
                        ),
                    ));
                }
            }
        }
        prev = Some((seq, item.report.manifest_sha256.clone(), this_ok));
    }
}

fn first_trusted_key(state: Option<&ChainState>, items: &[Item]) -> Option<[u8; 32]> {
    state.and_then(ChainState::public_key_raw).or_else(|| {
        items
            .iter()
            .filter_map(|i| i.manifest.as_ref())
            .min_by_key(|m| m.seq)
            .and_then(Manifest::public_key_raw)
    })
}

/// Verify one chain directory.
pub fn verify_dir(dir: &Path, pubkey: Option<&[u8; 32]>) -> Result<ChainReport, SealError> {
    let paths = sorted_entries(dir, |p| is_manifest_name(p) && p.is_file())?;
    let mut items: Vec<Item> = paths.iter().map(|p| load_item(p)).collect();
    let mut problems = Vec::new();

    let state = read_chain_state(dir, &mut problems);
    let tofu = pubkey.is_none();
    let trusted = pubkey
        .copied()
        .or_else(|| first_trusted_key(state.as_ref().map(|(c, _)| c), &items));
    let state = trusted_chain_state(dir, state, trusted, &mut problems);

    for item in items.iter_mut() {
        check_item(item, trusted.as_ref(), tofu);
    }
    check_chain(&mut items);

    let (first, last) = check_chain_ends(state.as_ref(), &mut items, &mut problems);
    if items.is_empty() && state.is_none() {
        return Err(SealError::Usage(format!(
            "{}: no captures found",
            dir.display()
        )));
    }
    let notes = chain_notes(dir, state.as_ref(), last, &items);
    Ok(ChainReport {
        dir: Some(dir.to_path_buf()),
        key_id: trusted.map(|t| keys::key_id(&t)),
        trust: if tofu { "tofu" } else { "pubkey" },
        complete: state.is_some(),
        first_seq: first,
        last_seq: last,
        problems,
        notes,
        captures: items.into_iter().map(|i| i.report).collect(),
    })
}

/// `chain.json` parsed, with its bytes (for the signature check); a problem when it is missing
/// or does not parse.
fn read_chain_state(dir: &Path, problems: &mut Vec<Problem>) -> Option<(ChainState, Vec<u8>)> {
    let state_path = dir.join("chain.json");
    match fs::read(&state_path) {
        Err(_) => {
            problems.push(problem(
                "chain_state_missing",
                "chain.json is missing: pruning cannot be told from deletion, nor a truncated end detected",
            ));
            None
        }
        Ok(bytes) => match ChainState::parse(&bytes) {
            Err(e) => {
                problems.push(problem("chain_state_invalid", format!("chain.json: {e}")));
                None
            }
            Ok(c) => Some((c, bytes)),
        },
    }
}

/// The chain state, when it names the trusted key and `chain.sig` verifies under it; a problem
/// otherwise.
fn trusted_chain_state(
    dir: &Path,
    state: Option<(ChainState, Vec<u8>)>,
    trusted: Option<[u8; 32]>,
    problems: &mut Vec<Problem>,
) -> Option<ChainState> {
    let (c, bytes) = state?;
    let sig = fs::read(dir.join("chain.sig")).unwrap_or_default();
    let key_ok = trusted.is_some_and(|t| c.public_key_raw() == Some(t));
    let sig_ok = sig.len() == 64 && trusted.is_some_and(|t| verify_signature(&t, &bytes, &sig));
    if !key_ok {
        problems.push(problem(
            "chain_state_invalid",
            format!("chain.json is signed by another key ({})", &c.key_id[..16]),
        ));
        None
    } else if !sig_ok {
        problems.push(problem("chain_state_invalid", "chain.sig does not verify"));
        None
    } else {
        Some(c)
    }
}

/// The chain's first and last seq, checked against the chain state (or, without one, against
/// seq 0): missing captures at the start or the end, the start link and the recorded head.
fn check_chain_ends(
    state: Option<&ChainState>,
    items: &mut [Item],
    problems: &mut Vec<Problem>,
) -> (Option<u64>, Option<u64>) {
    let seqs: Vec<(u64, &Item)> = items
        .iter()
        .filter_map(|i| i.pos().map(|s| (s, i)))
        .collect();
    let first = seqs.first().map(|(s, _)| *s);
    let last = seqs.last().map(|(s, _)| *s);
    let mut tail_mismatch: Option<usize> = None;
    match state {
        Some(c) => {
            // Start: captures before first_seq were pruned (and vouched for); a later first
            // capture means deleted ones.
            match first {
                Some(f) if f > c.first_seq => problems.push(problem(
                    "gap",
                    format!(
                        "captures {}..={} are missing (chain state says the chain starts at {})",
                        c.first_seq,
                        f - 1,
                        c.first_seq
                    ),
                )),
                Some(f) if f == c.first_seq => {
                    if let Some((_, i)) = seqs.first() {
                        if let Some(m) = &i.manifest {
                            if m.prev != c.first_prev {
                                problems.push(problem(
                                    "start_link",
                                    "first capture's prev does not match the chain state",
                                ));
                            }
                        }
                    }
                }
                _ => {}
            }
            if let (Some(l), Some(h)) = (c.last_seq, &c.last_sha256) {
                match last {
                    Some(max) if max >= l => {
                        if let Some(idx) = items.iter().position(|i| {
                            i.manifest.as_ref().map(|m| m.seq) == Some(l)
                                && i.report.problems.is_empty()
                        }) {
                            if &items[idx].report.manifest_sha256 != h {
                                tail_mismatch = Some(idx);
                            }
                        }
                    }
                    _ => problems.push(problem(
                        "tail_missing",
                        format!(
                            "captures {}..={l} are missing (chain state records seq {l})",
                            last.map(|m| m + 1).unwrap_or(c.first_seq)
                        ),
                    )),
                }
            }
        }
        None => {
            if let Some(f) = first.filter(|f| *f > 0) {
                problems.push(problem(
                    "gap",
                    format!(
                        "captures 0..={} are missing and no valid chain state vouches for pruning",
                        f - 1
                    ),
                ));
            }
        }
    }
    if let Some(idx) = tail_mismatch {
        items[idx].report.problems.push(problem(
            "head_mismatch",
            "manifest differs from the one the chain state records",
        ));
    }
    (first, last)
}

/// Notes (not problems): captures after the last checkpoint, leftovers of an interrupted write.
fn chain_notes(
    dir: &Path,
    state: Option<&ChainState>,
    last: Option<u64>,
    items: &[Item],
) -> Vec<Problem> {
    let mut notes = Vec::new();
    if let (Some(c), Some(max)) = (state, last) {
        let after = c.last_seq.map_or(c.first_seq, |l| l + 1);
        if max >= after {
            notes.push(problem(
                "uncheckpointed",
                format!(
                    "captures {after}..={max} were stored after the last chain-state record; the chain ends at {max} (a crash truncates it here cleanly; deleting these newest captures could not be detected)"
                ),
            ));
        }
    }
    let leftovers = incomplete_files(dir, items);
    if !leftovers.is_empty() {
        notes.push(problem(
            "incomplete_write",
            format!(
                "{} file(s) of an interrupted write, named by no manifest (removed when the daemon starts): {}",
                leftovers.len(),
                leftovers.join(", ")
            ),
        ));
    }
    notes
}

/// Files in `dir` that no manifest names: temp files and images or signatures left by a write
/// that was interrupted before its manifest was committed.
fn incomplete_files(dir: &Path, items: &[Item]) -> Vec<String> {
    let named: std::collections::HashSet<String> = items
        .iter()
        .filter_map(|i| i.manifest.as_ref())
        .flat_map(|m| {
            [
                m.image.file.clone(),
                format!("{}.sig", stem(m.seq)),
                // The C2PA copy (seal.c2pa), made after the capture was committed.
                format!("{}.c2pa.jpg", stem(m.seq)),
                format!("{}.c2pa.png", stem(m.seq)),
            ]
        })
        .chain(items.iter().filter_map(|i| {
            let n = i.report.path.file_stem()?.to_str()?;
            Some(format!("{n}.sig"))
        }))
        .collect();
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| {
                    let capture_file =
                        n != "chain.sig" && [".sig", ".jpg", ".png"].iter().any(|x| n.ends_with(x));
                    (n.starts_with('.') && n.contains(".tmp-"))
                        || (capture_file && !named.contains(n))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Verify manifest files given one by one: each file, and continuity among them (the chain's
/// start and end are not checked).
pub fn verify_files(files: &[PathBuf], pubkey: Option<&[u8; 32]>) -> ChainReport {
    let mut items: Vec<Item> = files.iter().map(|p| load_item(p)).collect();
    let tofu = pubkey.is_none();
    let trusted = pubkey.copied().or_else(|| first_trusted_key(None, &items));
    for item in items.iter_mut() {
        check_item(item, trusted.as_ref(), tofu);
    }
    check_chain(&mut items);
    let seqs: Vec<u64> = items.iter().filter_map(|i| i.report.seq).collect();
    ChainReport {
        dir: None,
        key_id: trusted.map(|t| keys::key_id(&t)),
        trust: if tofu { "tofu" } else { "pubkey" },
        complete: false,
        first_seq: seqs.iter().min().copied(),
        last_seq: seqs.iter().max().copied(),
        problems: Vec::new(),
        notes: Vec::new(),
        captures: items.into_iter().map(|i| i.report).collect(),
    }
}

/// Verify data directories, chain directories and manifest files.
pub fn verify_paths(
    paths: &[PathBuf],
    pubkey: Option<&[u8; 32]>,
) -> Result<Vec<ChainReport>, SealError> {
    let mut reports = Vec::new();
    let mut loose = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|source| SealError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut dirs = Vec::new();
            find_chain_dirs(p, 4, &mut dirs)?;
            if dirs.is_empty() {
                return Err(SealError::Usage(format!(
                    "{}: no captures found",
                    p.display()
                )));
            }
            for d in dirs {
                reports.push(verify_dir(&d, pubkey)?);
            }
        } else {
            loose.push(p.clone());
        }
    }
    if !loose.is_empty() {
        reports.push(verify_files(&loose, pubkey));
    }
    Ok(reports)
}
