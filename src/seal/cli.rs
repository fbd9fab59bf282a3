//! `veriframe keygen` and `veriframe verify`.

use std::path::PathBuf;

use super::SealError;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8, mode 0600); the public key goes beside it.
    #[arg(long, default_value = "veriframe.key")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Capture directories or manifest files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Public key file (as written by keygen).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn keygen(_args: &KeygenArgs) -> Result<Outcome, SealError> {
    Err(SealError::NotImplemented("keygen"))
}

pub fn verify(_args: &VerifyArgs) -> Result<Outcome, SealError> {
    Err(SealError::NotImplemented("verify"))
}
