//! Sealing: device keys, signed hash-chained manifests, atomic storage, verification.
//!
//! The seam is [`Sealer`]: one analysed frame in, a [`Sealed`] reference out (or `None` when the
//! seal policy skips the frame). Only this module touches key material.
//!
//! | file | what |
//! |---|---|
//! | [`keys`] | Ed25519 device keys (PKCS#8 v2, 0600), public key PEM, key id |
//! | [`manifest`] | manifest and chain-state schema, canonical JSON, strict parser |
//! | [`policy`] | which frames are sealed (pure) |
//! | [`store`] | atomic capture store, chain recovery, retention |
//! | [`verify`] | signature, image hash and chain checks |
//! | [`cert`] | the device certificate for C2PA (self-signed pilot CA, CSR, chain install) |
//! | [`c2pa`] | C2PA Content Credential copies of sealed captures (own writer over `ring`) |
//!
//! The `keygen`, `verify`, `bench-seal`, `cert` and `export` commands live in `commands/`.
//!
//! The format is specified in `docs/capture-format.md`.

pub mod c2pa;
pub mod cert;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod store;
pub mod verify;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::decide::{Action, Decision, Verdict};
use crate::detect::Analysis;
use crate::frame::{Frame, StoredImage};
use crate::record::fsio::{self, WriteError};
use crate::record::hash::sha256_hex;
use crate::record::json::MAX_INT;
use crate::record::Signer;

use keys::DeviceKey;
use manifest::{
    micro, pixel, AnalysisDesc, CaptureInfo, FaceDesc, ImageInfo, Manifest, ModelDesc, SourceDesc,
    MANIFEST_FORMAT,
};
use policy::{FrameFacts, PolicyKind, PolicyParams, PolicyState, Step};
use store::{Batch, Pending, Retention, Store};

/// Errors from sealing, storage and verification.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The disk (or quota) is full: the capture was not stored. Capture goes on.
    #[error("{path}: storage full")]
    StorageFull { path: PathBuf },
    #[error("key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error(
        "key {path} is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("key {path} already exists; refusing to overwrite it")]
    KeyExists { path: PathBuf },
    #[error("cannot encode capture: {0}")]
    Encode(String),
    #[error("{0}")]
    Usage(String),
}

impl From<WriteError> for SealError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io { path, source } => SealError::Io { path, source },
            WriteError::StorageFull { path } => SealError::StorageFull { path },
        }
    }
}

/// What the seal stage is given for one frame.
#[derive(Debug)]
pub struct SealInput<'a> {
    pub frame: &'a Frame,
    /// `None` when analysis failed on this frame.
    pub analysis: Option<&'a Analysis>,
    pub decision: &'a Decision,
    /// The source's identity and trust (manifest `fingerprint`).
    pub identity: &'a crate::frame::identity::SourceIdentity,
    /// The face's latest light challenge (manifest `challenge`), when one was decided.
    pub challenge: Option<&'a crate::challenge::ChallengeRecord>,
}

impl<'a> SealInput<'a> {
    /// A frame sealed as it is: no analysis and no challenge (benches, tools and tests).
    pub fn unanalysed(
        frame: &'a Frame,
        decision: &'a Decision,
        identity: &'a crate::frame::identity::SourceIdentity,
    ) -> Self {
        SealInput {
            frame,
            analysis: None,
            decision,
            identity,
            challenge: None,
        }
    }
}

/// A stored capture: enough for alerts to cite their evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// Chain sequence number (continues across restarts).
    pub chain_seq: u64,
    /// Frame sequence number in this run.
    pub frame_seq: u64,
    /// SHA-256 (hex) of the manifest's canonical bytes.
    pub manifest_sha256: String,
    pub image_sha256: String,
    pub path: PathBuf,
}

/// The seal seam.
pub trait Sealer: Send {
    /// Seal the frame if policy says so. `Ok(Some(_))` only once the capture is durable.
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError>;

    /// Seal frames that arrived together (group commit): result `i` is for `inputs[i]`, and
    /// every `Ok(Some(_))` is durable when this returns. The default seals one by one.
    fn seal_batch(&mut self, inputs: &[SealInput<'_>]) -> Vec<Result<Option<Sealed>, SealError>> {
        inputs.iter().map(|i| self.seal(i)).collect()
    }
}

/// The same error again (for each capture of a batch that failed as a whole).
fn dup_err(e: &SealError) -> SealError {
    match e {
        SealError::Io { path, source } => SealError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        SealError::StorageFull { path } => SealError::StorageFull { path: path.clone() },
        other => SealError::Encode(other.to_string()),
    }
}

/// Placeholder sealer: seals nothing.
#[derive(Debug, Default)]
pub struct NoSeal;

impl Sealer for NoSeal {
    fn seal(&mut self, _input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        Ok(None)
    }
}

/// `[seal]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Private key file (PKCS#8). Unset: `<data_dir>/keys/device.key`, created on first run.
    pub key: Option<PathBuf>,
    /// Which frames are sealed: `authentic` (verdict in `verdicts`, at most `max_per_second`),
    /// `every`, or `evidence` (around alerts). Alert frames are sealed under every policy.
    pub policy: PolicyKind,
    /// Rate limit for the `authentic` policy.
    pub max_per_second: f64,
    /// Verdicts the `authentic` policy seals. `unknown` is included by default so a booth
    /// without a detector still seals; drop it once the detector is deployed.
    pub verdicts: Vec<Verdict>,
    /// `evidence` policy: frames kept before an alert and sealed with it.
    pub evidence_pre: usize,
    /// `evidence` policy: frames sealed after an alert.
    pub evidence_post: usize,
    /// Delete captures older than this (e.g. `30d`); unset keeps them.
    #[serde(with = "humantime_serde")]
    pub retention_max_age: Option<Duration>,
    /// Keep the capture store under this many MiB (oldest deleted first); 0 disables.
    pub retention_max_mb: u64,
    /// Make every batch of captures durable before it counts as sealed: one `syncfs` after the
    /// batch's files are written and one fsync of the chain directory after its manifests are
    /// renamed (docs/capture-format.md §2.1); the same for chain-state writes and prunes. `false`
    /// skips every sync (a power cut may then lose captures reported sealed); only for
    /// benchmarks, tests or tmpfs.
    pub fsync: bool,
    /// Also write a C2PA Content Credential copy of each sealed capture (`<seq>.c2pa.jpg` or
    /// `.c2pa.png`, docs/capture-format.md §8), signed with the device certificate chain.
    pub c2pa: bool,
    /// Device certificate chain (PEM, leaf first) for C2PA. Unset: the key file's name with extension `.chain.pem`
    /// (`device.chain.pem` beside `device.key`), as
    /// `veriframe cert self-signed` and `veriframe cert install` write it.
    pub c2pa_chain: Option<PathBuf>,
}

impl Default for SealConfig {
    fn default() -> Self {
        Self {
            key: None,
            policy: PolicyKind::Authentic,
            max_per_second: 2.0,
            verdicts: vec![Verdict::Authentic, Verdict::Unknown],
            evidence_pre: 5,
            evidence_post: 10,
            retention_max_age: Some(Duration::from_secs(30 * 86400)),
            retention_max_mb: 1024,
            fsync: true,
            c2pa: false,
            c2pa_chain: None,
        }
    }
}

impl SealConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.max_per_second > 0.0 && self.max_per_second <= 1000.0) {
            return Err((
                "seal.max_per_second",
                format!("must be in (0, 1000], got {}", self.max_per_second),
            ));
        }
        if self.policy == PolicyKind::Authentic && self.verdicts.is_empty() {
            return Err(("seal.verdicts", "must not be empty".into()));
        }
        if self.verdicts.contains(&Verdict::UntrustedSource) {
            return Err((
                "seal.verdicts",
                "untrusted_source frames are never sealed as authentic (they are sealed only as evidence with their alerts)".into(),
            ));
        }
        if self.evidence_pre > 1000 {
            return Err(("seal.evidence_pre", "must be at most 1000".into()));
        }
        if self.evidence_post > 100_000 {
            return Err(("seal.evidence_post", "must be at most 100000".into()));
        }
        if self
            .retention_max_age
            .is_some_and(|a| a < Duration::from_secs(60))
        {
            return Err(("seal.retention_max_age", "must be at least 1m".into()));
        }
        if self.key.as_ref().is_some_and(|k| k.as_os_str().is_empty()) {
            return Err(("seal.key", "must not be empty".into()));
        }
        if self
            .c2pa_chain
            .as_ref()
            .is_some_and(|k| k.as_os_str().is_empty())
        {
            return Err(("seal.c2pa_chain", "must not be empty".into()));
        }
        Ok(())
    }

    fn params(&self) -> PolicyParams {
        PolicyParams {
            kind: self.policy,
            max_per_second: self.max_per_second,
            verdicts: self.verdicts.clone(),
            evidence_pre: self.evidence_pre,
            evidence_post: self.evidence_post,
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            max_age: self.retention_max_age,
            max_bytes: (self.retention_max_mb > 0).then(|| self.retention_max_mb * 1024 * 1024),
        }
    }
}

/// The device key file: `seal.key`, or `<data_dir>/keys/device.key`.
pub fn key_path(cfg: &SealConfig, data_dir: &Path) -> PathBuf {
    cfg.key
        .clone()
        .unwrap_or_else(|| data_dir.join("keys").join("device.key"))
}

/// The device certificate chain for C2PA: `seal.c2pa_chain`, or the key file with extension
/// `.chain.pem`.
pub fn c2pa_chain_path(cfg: &SealConfig, data_dir: &Path) -> PathBuf {
    cfg.c2pa_chain
        .clone()
        .unwrap_or_else(|| key_path(cfg, data_dir).with_extension("chain.pem"))
}

/// The device key: `seal.key`, or `<data_dir>/keys/device.key` (created on first use).
pub fn device_key(cfg: &SealConfig, data_dir: &Path) -> Result<DeviceKey, SealError> {
    Ok(match &cfg.key {
        Some(p) => keys::load_key(p)?,
        None => {
            let p = data_dir.join("keys").join("device.key");
            let (k, created) = keys::load_or_create(&p)?;
            if created {
                tracing::info!(path = %p.display(), key_id = %k.id(), "created device key");
            }
            k
        }
    })
}

/// The boot id (`/proc/sys/kernel/random/boot_id`), or `unknown`.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn verdict_str(v: Verdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The stored image (`frame::stored_image`), as a seal error when it cannot be encoded.
fn stored_image(frame: &Frame) -> Result<StoredImage, SealError> {
    crate::frame::stored_image(frame).map_err(|e| SealError::Encode(e.to_string()))
}

/// Build the manifest for `frame` at chain position (`seq`, `prev`).
#[allow(clippy::too_many_arguments)]
pub fn build_manifest(
    key: &DeviceKey,
    device_id: &str,
    boot_id: &str,
    seq: u64,
    prev: Option<String>,
    policy: &str,
    input: &SealInput<'_>,
    image: &[u8],
    media_type: &str,
    ext: &str,
    encoding: &str,
) -> Manifest {
    let f = input.frame;
    Manifest {
        format: MANIFEST_FORMAT.into(),
        device_id: device_id.into(),
        key_id: key.key_id(),
        public_key: keys::public_key_b64(&key.public()),
        seq,
        prev,
        policy: policy.into(),
        captured: capture_info(f, boot_id),
        source: source_desc(&f.source),
        image: ImageInfo {
            file: format!("{}.{ext}", store::stem(seq)),
            media_type: media_type.into(),
            sha256: sha256_hex(image),
            len: image.len() as u64,
            width: f.width.into(),
            height: f.height.into(),
            encoding: encoding.into(),
        },
        analysis: analysis_desc(input.analysis, input.decision),
        fingerprint: Some(input.identity.clone()),
        challenge: input.challenge.cloned(),
    }
}

/// Manifest `captured`: the frame's times and sequence numbers, capped to what JSON carries
/// exactly.
fn capture_info(f: &Frame, boot_id: &str) -> CaptureInfo {
    let wall_us = f
        .captured_wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    CaptureInfo {
        wall_unix_us: wall_us.min(MAX_INT),
        mono_us: (f.captured_mono.as_micros() as u64).min(MAX_INT),
        boot_id: boot_id.into(),
        frame_seq: f.seq.min(MAX_INT),
        device_seq: f.device_seq.map(|s| s.min(MAX_INT)),
    }
}

/// Manifest `source`: the source's identity, its frame rate in milli-fps (0 when unknown).
fn source_desc(src: &crate::frame::SourceInfo) -> SourceDesc {
    SourceDesc {
        kind: src.kind.clone(),
        path: src.path.clone(),
        driver: src.driver.clone(),
        card: src.card.clone(),
        bus: src.bus.clone(),
        format: src.format.to_string(),
        width: src.width.into(),
        height: src.height.into(),
        fps_milli: if src.fps.is_finite() && src.fps > 0.0 {
            ((src.fps * 1000.0).round() as u64).min(MAX_INT)
        } else {
            0
        },
    }
}

/// Manifest `analysis`: the verdict, the faces and models of the analysis (none when it
/// failed) and the alerts the decision raised.
fn analysis_desc(analysis: Option<&Analysis>, decision: &Decision) -> AnalysisDesc {
    AnalysisDesc {
        verdict: verdict_str(decision.verdict),
        analysed: analysis.is_some(),
        faces: analysis
            .map(|a| {
                a.faces
                    .iter()
                    .map(|fc| FaceDesc {
                        bbox: fc.bbox.map(pixel),
                        score_micro: micro(fc.score),
                        live_micro: fc.live_score.map(micro),
                        deepfake_micro: fc.deepfake_score.map(micro),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        models: analysis
            .map(|a| {
                a.models
                    .iter()
                    .map(|m| ModelDesc {
                        name: m.name.clone(),
                        weights_sha256: m.weights_sha256.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        alerts: decision
            .actions
            .iter()
            .map(|a| match a {
                Action::Alert { kind, .. } => kind.as_str().to_string(),
            })
            .collect(),
    }
}

/// A frame held for the evidence window.
struct Held {
    frame: Frame,
    analysis: Option<Analysis>,
    decision: Decision,
    identity: crate::frame::identity::SourceIdentity,
    challenge: Option<crate::challenge::ChallengeRecord>,
}

/// The real sealer: policy, manifest, signature, atomic store.
pub struct ChainSealer {
    key: Arc<DeviceKey>,
    store: Store,
    device_id: String,
    boot_id: String,
    params: PolicyParams,
    state: PolicyState,
    held: VecDeque<Held>,
    /// C2PA credentials (`seal.c2pa`): the signer, the credentials to make once the current
    /// batch is durable, and how many were made or failed.
    c2pa: Option<c2pa::C2paSigner>,
    c2pa_todo: Vec<CredentialJob>,
    c2pa_counts: C2paCounts,
}

/// A credential to make for a capture of the batch being committed.
struct CredentialJob {
    manifest: Manifest,
    manifest_sha256: String,
    media_type: &'static str,
    image: Arc<[u8]>,
}

/// Credentials made and failed since the sealer opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct C2paCounts {
    pub made: u64,
    pub failed: u64,
}

impl std::fmt::Debug for ChainSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSealer")
            .field("key", &self.key)
            .field("store", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl ChainSealer {
    /// Load (or create, when none is configured) the key and open the store under `data_dir`.
    pub fn open(cfg: &SealConfig, data_dir: &Path, device_id: &str) -> Result<Self, SealError> {
        let key = device_key(cfg, data_dir)?;
        Self::with_key(cfg, Arc::new(key), data_dir, device_id)
    }

    pub fn with_key(
        cfg: &SealConfig,
        key: Arc<DeviceKey>,
        data_dir: &Path,
        device_id: &str,
    ) -> Result<Self, SealError> {
        Self::with_fs(
            cfg,
            key,
            data_dir,
            device_id,
            Box::new(fsio::RealFs::new(cfg.fsync)),
        )
    }

    /// [`ChainSealer::with_key`] with the store's I/O going through `fs` (benchmarks inject a
    /// sync delay there, tests a power-cut model).
    pub fn with_fs(
        cfg: &SealConfig,
        key: Arc<DeviceKey>,
        data_dir: &Path,
        device_id: &str,
        fs: Box<dyn fsio::Fs>,
    ) -> Result<Self, SealError> {
        let store = Store::open_with(
            &data_dir.join("captures"),
            &key,
            device_id,
            cfg.retention(),
            fs,
        )?;
        let c2pa = if cfg.c2pa {
            let path = c2pa_chain_path(cfg, data_dir);
            let signer = c2pa::C2paSigner::load(key.clone(), &path).map_err(|e| {
                SealError::Usage(format!(
                    "seal.c2pa: {e} (make one with `veriframe cert self-signed` for a pilot, or `veriframe cert csr` then `veriframe cert install CHAIN.pem`)"
                ))
            })?;
            tracing::info!(chain = %path.display(), "writing C2PA credentials");
            Some(signer)
        } else {
            None
        };
        let (next, _) = store.next();
        tracing::info!(
            key_id = %key.id(),
            store = %store.dir().display(),
            next_seq = next,
            policy = ?cfg.policy,
            "sealing captures"
        );
        Ok(Self {
            key,
            store,
            device_id: device_id.into(),
            boot_id: boot_id(),
            params: cfg.params(),
            state: PolicyState::default(),
            held: VecDeque::new(),
            c2pa,
            c2pa_todo: Vec::new(),
            c2pa_counts: C2paCounts::default(),
        })
    }

    /// C2PA credentials made and failed so far.
    pub fn c2pa_counts(&self) -> C2paCounts {
        self.c2pa_counts
    }

    /// Make the credentials of the batch just committed. A failure is logged and counted; the
    /// sealed capture is not affected (the Veriframe seal is the primary record, and the copy
    /// can be made later with `veriframe export --c2pa`).
    fn make_credentials(&mut self) {
        let Some(signer) = &self.c2pa else {
            self.c2pa_todo.clear();
            return;
        };
        for job in self.c2pa_todo.drain(..) {
            let seq = job.manifest.seq;
            let made = c2pa::credential_file(seq, job.media_type).and_then(|name| {
                let bytes = signer.sign(
                    &job.manifest,
                    &job.manifest_sha256,
                    job.media_type,
                    &job.image,
                )?;
                c2pa::write_credential(self.store.dir(), &name, &bytes).map(|_| bytes.len())
            });
            match made {
                Ok(len) => {
                    self.c2pa_counts.made += 1;
                    self.store.add_bytes(seq, len as u64);
                }
                Err(e) => {
                    self.c2pa_counts.failed += 1;
                    tracing::error!(seq, error = %e, failed = self.c2pa_counts.failed, "C2PA credential not written (the sealed capture is unaffected)");
                }
            }
        }
    }

    /// The device key, for signing other things (MQTT alerts).
    pub fn signer(&self) -> Arc<dyn Signer> {
        self.key.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Seal one frame now, regardless of policy (a batch of one).
    pub fn seal_now(&mut self, input: &SealInput<'_>, reason: &str) -> Result<Sealed, SealError> {
        self.c2pa_todo.clear();
        let mut batch = self.store.begin();
        let sealed = self.stage(&mut batch, input, reason)?;
        self.store.commit(&self.key, batch)?;
        self.make_credentials();
        Ok(sealed)
    }

    /// Build, sign and write one capture into `batch` (durable only once the batch commits).
    fn stage(
        &mut self,
        batch: &mut Batch,
        input: &SealInput<'_>,
        reason: &str,
    ) -> Result<Sealed, SealError> {
        let StoredImage {
            bytes: image,
            media_type,
            ext,
            encoding,
        } = stored_image(input.frame)?;
        let (seq, prev) = batch.next();
        let m = build_manifest(
            &self.key,
            &self.device_id,
            &self.boot_id,
            seq,
            prev,
            reason,
            input,
            &image,
            media_type,
            ext,
            encoding,
        );
        let bytes = m
            .to_canonical()
            .map_err(|e| SealError::Encode(e.to_string()))?;
        let sig = self.key.sign(&bytes);
        let manifest_sha256 = sha256_hex(&bytes);
        if self.c2pa.is_some() {
            self.c2pa_todo.push(CredentialJob {
                manifest: m.clone(),
                manifest_sha256: manifest_sha256.clone(),
                media_type,
                image: image.clone(),
            });
        }
        let p = Pending {
            seq,
            prev: m.prev.clone(),
            wall_us: m.captured.wall_unix_us,
            image_file: m.image.file.clone(),
            manifest: bytes,
            sig,
            image,
        };
        self.store.stage(batch, &p)?;
        Ok(Sealed {
            chain_seq: seq,
            frame_seq: input.frame.seq,
            manifest_sha256,
            image_sha256: m.image.sha256,
            path: self.store.dir().join(format!("{}.json", store::stem(seq))),
        })
    }
}

/// Where the frame to seal comes from within a batch.
#[derive(Clone, Copy)]
enum Src {
    Input(usize),
    Held(usize),
}

impl Sealer for ChainSealer {
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        self.seal_batch(std::slice::from_ref(input))
            .pop()
            .unwrap_or(Ok(None))
    }

    /// Policy for each input in order (held pre-alert frames are flushed oldest first before the
    /// alert frame), then every frame to seal is staged and the batch committed at once.
    fn seal_batch(&mut self, inputs: &[SealInput<'_>]) -> Vec<Result<Option<Sealed>, SealError>> {
        let mut results: Vec<Result<Option<Sealed>, SealError>> =
            inputs.iter().map(|_| Ok(None)).collect();
        let mut flushed: Vec<Held> = Vec::new();
        let mut todo: Vec<(Src, &'static str)> = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let facts = FrameFacts {
                mono: input.frame.captured_mono,
                verdict: input.decision.verdict,
                alert: !input.decision.actions.is_empty(),
            };
            let (st, step) = policy::step(&self.params, self.state, facts);
            self.state = st;
            match step {
                Step::Skip => {}
                Step::Hold => {
                    if self.held.len() >= self.params.evidence_pre {
                        self.held.pop_front();
                    }
                    self.held.push_back(Held {
                        frame: input.frame.clone(),
                        analysis: input.analysis.cloned(),
                        decision: input.decision.clone(),
                        identity: input.identity.clone(),
                        challenge: input.challenge.cloned(),
                    });
                }
                Step::Seal { reason, flush_held } => {
                    if flush_held {
                        for h in self.held.drain(..) {
                            todo.push((Src::Held(flushed.len()), "evidence"));
                            flushed.push(h);
                        }
                    }
                    todo.push((Src::Input(i), reason));
                }
            }
        }
        if todo.is_empty() {
            return results;
        }
        self.c2pa_todo.clear();
        let mut batch = self.store.begin();
        let mut staged: Vec<(usize, Sealed)> = Vec::new();
        for (src, reason) in todo {
            let r = match src {
                Src::Input(i) => self.stage(&mut batch, &inputs[i], reason).map(|s| (i, s)),
                Src::Held(j) => {
                    let h = &flushed[j];
                    let hi = SealInput {
                        frame: &h.frame,
                        analysis: h.analysis.as_ref(),
                        decision: &h.decision,
                        identity: &h.identity,
                        challenge: h.challenge.as_ref(),
                    };
                    match self.stage(&mut batch, &hi, reason) {
                        // Held frames are sealed as evidence but reported through the alert
                        // frame only.
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::warn!(seq = h.frame.seq, error = %e, "sealing held frame failed");
                            continue;
                        }
                    }
                }
            };
            match r {
                Ok(x) => staged.push(x),
                Err(e) => {
                    if let Src::Input(i) = src {
                        results[i] = Err(e);
                    }
                }
            }
        }
        match self.store.commit(&self.key, batch) {
            Ok(_) => {
                for (i, s) in staged {
                    results[i] = Ok(Some(s));
                }
                self.make_credentials();
            }
            Err(e) => {
                for (i, _) in staged {
                    results[i] = Err(dup_err(&e));
                }
            }
        }
        results
    }
}

impl Drop for ChainSealer {
    fn drop(&mut self) {
        if let Err(e) = self.store.checkpoint(&self.key) {
            tracing::warn!(error = %e, "final chain checkpoint failed");
        }
    }
}
