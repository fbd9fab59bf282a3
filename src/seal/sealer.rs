//! [`ChainSealer`], the real sealer: policy, manifest, signature, group-committed store, C2PA
//! copies.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use crate::decide::Decision;
use crate::detect::Analysis;
use crate::frame::{Frame, StoredImage};

use super::build::{build_manifest, stored_image, ChainPos, Ciphertext, Device, StoredFile};
use super::encrypt::{self, Recipients};
use super::manifest::Manifest;
use super::policy::{self, FrameFacts, PolicyParams, PolicyState, Step};
use super::store::{self, Batch, Pending, Store};
use super::{
    boot_id, c2pa, c2pa_chain_path, device_key, dup_err, SealConfig, SealError, SealInput, Sealed,
    Sealer,
};
use crate::record::hash::sha256_hex;
use crate::record::{fsio, Signer};

/// `seal.encrypt_to` parsed (`None`: stored in the clear).
fn recipients_of(cfg: &SealConfig) -> Result<Option<Recipients>, SealError> {
    if cfg.encrypt_to.is_empty() {
        return Ok(None);
    }
    Recipients::parse(&cfg.encrypt_to)
        .map(Some)
        .map_err(|e| SealError::Usage(format!("seal.encrypt_to: {e}")))
}

/// Say once, at start-up, how captures are stored.
fn log_storage(cfg: &SealConfig) {
    if cfg.encrypt_to.is_empty() {
        tracing::warn!("captures are stored in the clear: anyone holding the SD card can see the faces (set [seal] encrypt_to to the operator's age recipient; docs/privacy.md)");
    } else {
        tracing::info!(
            recipients = cfg.encrypt_to.len(),
            "captures are encrypted to the operator (age); this device cannot read them back"
        );
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
    key: Arc<dyn Signer>,
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
    /// `seal.encrypt_to`: every stored image and C2PA copy is encrypted to these.
    recipients: Option<Recipients>,
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
            .field("key_id", &self.key.key_id())
            .field("store", &self.store.dir())
            .finish_non_exhaustive()
    }
}

impl ChainSealer {
    /// Load (or create, when none is configured) the key and open the store under `data_dir`.
    pub fn open(cfg: &SealConfig, data_dir: &Path, device_id: &str) -> Result<Self, SealError> {
        let key = device_key(cfg, data_dir)?;
        let sealer = Self::with_key(cfg, Arc::new(key), data_dir, device_id)?;
        log_storage(cfg);
        Ok(sealer)
    }

    pub fn with_key(
        cfg: &SealConfig,
        key: Arc<dyn Signer>,
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
        key: Arc<dyn Signer>,
        data_dir: &Path,
        device_id: &str,
        fs: Box<dyn fsio::Fs>,
    ) -> Result<Self, SealError> {
        let store = Store::open_with(
            &data_dir.join("captures"),
            &*key,
            device_id,
            cfg.retention(),
            fs,
        )?;
        let recipients = recipients_of(cfg)?;
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
            key_id = %key.key_id(),
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
            recipients,
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
                let (name, bytes) = match &self.recipients {
                    Some(r) => (
                        format!("{name}.{}", encrypt::EXT),
                        r.encrypt(&bytes)
                            .map_err(|e| c2pa::C2paError::Image(e.to_string()))?,
                    ),
                    None => (name, bytes),
                };
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
        self.store.commit(&*self.key, batch)?;
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
        let stored = StoredImage {
            bytes: image,
            media_type,
            ext,
            encoding,
        };
        // Encrypted in memory: only the ciphertext is ever written.
        let ciphertext = match &self.recipients {
            Some(r) => Some(r.encrypt(&stored.bytes)?),
            None => None,
        };
        let m = build_manifest(
            Device {
                key: &*self.key,
                device_id: &self.device_id,
                boot_id: &self.boot_id,
            },
            ChainPos {
                seq,
                prev,
                policy: reason.into(),
            },
            input,
            StoredFile {
                encrypted: match (&ciphertext, &self.recipients) {
                    (Some(c), Some(r)) => Some(Ciphertext {
                        bytes: c,
                        recipients: r.as_strings(),
                    }),
                    _ => None,
                },
                ..StoredFile::of(&stored)
            },
        );
        let image = stored.bytes;
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
            image_file: m.stored_file().to_string(),
            manifest: bytes,
            sig,
            image: match ciphertext {
                Some(c) => c.into(),
                None => image,
            },
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
        match self.store.commit(&*self.key, batch) {
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
        if let Err(e) = self.store.checkpoint(&*self.key) {
            tracing::warn!(error = %e, "final chain checkpoint failed");
        }
    }
}
