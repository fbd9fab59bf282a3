//! `veriframe watch`.

use std::path::PathBuf;

use super::PublishError;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Broker URL, `mqtt://host:port` or `mqtts://host:port`.
    #[arg(long)]
    pub broker: String,
    /// Device public key to check alert signatures against.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
}

pub fn watch(_args: &WatchArgs) -> Result<Outcome, PublishError> {
    Err(PublishError::NotImplemented("watch"))
}
