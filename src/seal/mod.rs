//! Sealing: device keys, signed hash-chained manifests, atomic storage, verification.
//!
//! The seam is [`Sealer`]: one analysed frame in, a [`Sealed`] reference out (or `None` when the
//! seal policy skips the frame). Only this module touches key material.

pub mod cli;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::capture::Frame;
use crate::decide::Decision;
use crate::detect::Analysis;

/// Errors from sealing, storage and verification.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// What the seal stage is given for one frame.
#[derive(Debug)]
pub struct SealInput<'a> {
    pub frame: &'a Frame,
    /// `None` when analysis failed on this frame.
    pub analysis: Option<&'a Analysis>,
    pub decision: &'a Decision,
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

/// Signs bytes with the device key (Ed25519). Implemented by the seal module's key type; the
/// publish stage uses it to sign alert payloads without touching key material.
pub trait Signer: Send + Sync {
    /// Key id: lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.
    fn key_id(&self) -> String;
    /// Raw 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// 64-byte Ed25519 signature over `msg`.
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// The seal seam.
pub trait Sealer: Send {
    /// Seal the frame if policy says so.
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError>;
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Private key file (PKCS#8). Empty: a key is created under the data directory.
    pub key: Option<PathBuf>,
}

impl SealConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}
