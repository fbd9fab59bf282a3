//! The manifest of one capture, built from the frame, its analysis and decision, where it goes
//! in the chain and how its image is stored.

use std::time::UNIX_EPOCH;

use crate::decide::{Action, Decision, Verdict};
use crate::detect::Analysis;
use crate::frame::{Frame, StoredImage};

use super::manifest::{
    micro, pixel, AnalysisDesc, CaptureInfo, EncryptedFile, FaceDesc, ImageInfo, Manifest,
    ModelDesc, SourceDesc, MANIFEST_FORMAT, SIG_ALG_ED25519,
};
use super::{encrypt, store, SealError, SealInput};
use crate::record::hash::sha256_hex;
use crate::record::json::MAX_INT;
use crate::record::Signer;

fn verdict_str(v: Verdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The stored image (`frame::stored_image`), as a seal error when it cannot be encoded.
pub(crate) fn stored_image(frame: &Frame) -> Result<StoredImage, SealError> {
    crate::frame::stored_image(frame).map_err(|e| SealError::Encode(e.to_string()))
}

/// Who seals: the device's signing key, its id and the boot the capture was made in.
#[derive(Clone, Copy)]
pub struct Device<'a> {
    pub key: &'a dyn Signer,
    pub device_id: &'a str,
    pub boot_id: &'a str,
}

/// Where the capture goes in the chain, and why it is sealed (the policy's reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPos {
    pub seq: u64,
    pub prev: Option<String>,
    pub policy: String,
}

/// The stored image: its bytes (plaintext) and what they are.
#[derive(Debug, Clone, Copy)]
pub struct StoredFile<'a> {
    pub bytes: &'a [u8],
    pub media_type: &'a str,
    /// File extension (`jpg`, `png`).
    pub ext: &'a str,
    /// `source` or `png` (manifest `image.encoding`).
    pub encoding: &'a str,
    /// What is stored instead when the image is encrypted (`seal.encrypt_to`).
    pub encrypted: Option<Ciphertext<'a>>,
}

/// The encrypted image as stored: an age file and the recipients it was encrypted to.
#[derive(Debug, Clone, Copy)]
pub struct Ciphertext<'a> {
    pub bytes: &'a [u8],
    pub recipients: &'a [String],
}

impl<'a> StoredFile<'a> {
    /// The stored image of [`stored_image`].
    pub fn of(img: &'a StoredImage) -> Self {
        StoredFile {
            bytes: &img.bytes,
            media_type: img.media_type,
            ext: img.ext,
            encoding: img.encoding,
            encrypted: None,
        }
    }
}

/// Build the manifest for `input` at chain position `pos`, its image stored as `image`.
pub fn build_manifest(
    dev: Device<'_>,
    pos: ChainPos,
    input: &SealInput<'_>,
    image: StoredFile<'_>,
) -> Manifest {
    let f = input.frame;
    let file = format!("{}.{}", store::stem(pos.seq), image.ext);
    let encrypted = image.encrypted.map(|c| EncryptedFile {
        file: format!("{file}.{}", encrypt::EXT),
        scheme: encrypt::SCHEME.into(),
        sha256: sha256_hex(c.bytes),
        len: c.bytes.len() as u64,
        recipients: c.recipients.to_vec(),
    });
    Manifest {
        format: MANIFEST_FORMAT.into(),
        sig_alg: Some(SIG_ALG_ED25519.into()),
        device_id: dev.device_id.into(),
        key_id: dev.key.key_id(),
        public_key: dev.key.verifying_key().to_b64(),
        image: ImageInfo {
            file,
            media_type: image.media_type.into(),
            sha256: sha256_hex(image.bytes),
            len: image.bytes.len() as u64,
            width: f.width.into(),
            height: f.height.into(),
            encoding: image.encoding.into(),
            encrypted,
        },
        seq: pos.seq,
        prev: pos.prev,
        policy: pos.policy,
        captured: capture_info(f, dev.boot_id),
        source: source_desc(&f.source),
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
