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
//! | [`build`] | the manifest of one capture, from the frame and where it goes in the chain |
//! | [`sealer`] | [`ChainSealer`]: policy, manifest, signature, group-committed store, C2PA copies |
//! | [`store`] | atomic capture store, chain recovery, retention |
//! | [`verify`] | signature, image hash and chain checks |
//! | [`cert`] | the device certificate for C2PA (self-signed pilot CA, CSR, chain install) |
//! | [`c2pa`] | C2PA Content Credential copies of sealed captures (own writer over `ring`) |
//! | [`encrypt`] | images encrypted in memory to the operator's age recipients; identities (operator side) |
//! | [`erase`] | erasure on request: selection (pure), signed erasure record, removal |
//! | [`export`] | verified captures decrypted for the operator |
//!
//! The `keygen`, `verify`, `erase`, `bench-seal`, `cert` and `export` commands live in
//! `commands/`.
//!
//! The format is specified in `docs/capture-format.md`.

pub mod build;
pub mod c2pa;
pub mod cert;
pub mod encrypt;
pub mod erase;
pub mod export;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod sealer;
pub mod store;
pub mod verify;

pub use build::build_manifest;
pub use sealer::{C2paCounts, ChainSealer};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decide::{Decision, Verdict};
use crate::detect::Analysis;
use crate::frame::Frame;
use crate::record::fsio::WriteError;

use keys::DeviceKey;
use policy::{PolicyKind, PolicyParams};
use store::Retention;

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
    /// Another process (the daemon, or another `erase`) holds the chain's writer lock.
    #[error("{path} is in use by another veriframe process (the daemon?): stop it first (systemctl stop veriframe)")]
    Busy { path: PathBuf },
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
pub(crate) fn dup_err(e: &SealError) -> SealError {
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
    /// Encrypt every stored image and C2PA copy to these age X25519 recipients (`age1…`, the
    /// operator's public keys; docs/privacy.md). Only ciphertext (`<seq>.jpg.age`) reaches the
    /// disk, and the device holds no key that decrypts it. Empty: images are stored in the
    /// clear.
    pub encrypt_to: Vec<String>,
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
            encrypt_to: Vec::new(),
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
        if !self.encrypt_to.is_empty() {
            encrypt::Recipients::parse(&self.encrypt_to).map_err(|e| ("seal.encrypt_to", e))?;
        }
        Ok(())
    }

    pub(crate) fn params(&self) -> PolicyParams {
        PolicyParams {
            kind: self.policy,
            max_per_second: self.max_per_second,
            verdicts: self.verdicts.clone(),
            evidence_pre: self.evidence_pre,
            evidence_post: self.evidence_post,
        }
    }

    pub(crate) fn retention(&self) -> Retention {
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
    let (k, path) = match &cfg.key {
        Some(p) => (keys::load_key(p)?, p.clone()),
        None => {
            let p = data_dir.join("keys").join("device.key");
            let (k, created) = keys::load_or_create(&p)?;
            if created {
                tracing::info!(path = %p.display(), key_id = %k.id(), "created device key");
            }
            (k, p)
        }
    };
    // Said at every start: whoever can read this file (e.g. from the SD card) can sign as
    // this device, forever.
    tracing::warn!(
        backend = "file",
        alg = "Ed25519",
        path = %path.display(),
        key_id = %k.id(),
        "signing with a key FILE: anyone who copies it can sign captures, alerts and credentials as this device; use a hardware key to prevent that"
    );
    Ok(k)
}

/// The boot id (`/proc/sys/kernel/random/boot_id`), or `unknown`.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
