//! `veriframe camera pin`: bind the device to the camera now attached (an operator's decision,
//! logged and recorded as a signed, hash-linked pin record).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fingerprint::{CameraInfoSource, SystemInfo};
use super::pin::{PinRecord, PinStore};
use super::{instruments, unix_us_now, CameraError};
use crate::capture::SourceSpec;
use crate::config::Config;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct CameraArgs {
    #[command(subcommand)]
    pub command: CameraCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CameraCommand {
    /// Pin the camera now at the configured source (or --source) as this device's camera.
    Pin(PinArgs),
}

#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// Configuration file (TOML): data_dir, device_id, seal.key and source.uri come from it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Camera device node (default: `source.uri` from the config).
    #[arg(long)]
    pub source: Option<String>,
    /// Data directory (default: from the config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What a re-pin did.
#[derive(Debug, Clone)]
pub struct Repin {
    pub record: PinRecord,
    pub record_sha256: String,
    /// The fingerprint pinned before, if any.
    pub previous: Option<String>,
    /// Field differences to the previous pin.
    pub changes: Vec<String>,
}

/// Read the camera at `device` and pin it (reason `operator`). Logs the change.
pub fn repin(
    store: &PinStore,
    reader: &mut dyn CameraInfoSource,
    device: &Path,
) -> Result<Repin, CameraError> {
    let id = reader.read(device)?;
    let old = store.load().ok().flatten().map(|(r, _)| r);
    let changes = old
        .as_ref()
        .map(|r| r.fingerprint.identity().diff(&id))
        .unwrap_or_default();
    let found = instruments::classify(&id);
    if !found.is_empty() {
        tracing::warn!(instrument = %instruments::describe(&found),
            "pinning a camera that is an injection instrument: it is still flagged unless [source] allow_virtual = true");
    }
    let device_s = device.display().to_string();
    let (record, record_sha256) = store.pin(&device_s, &id, "operator", unix_us_now())?;
    tracing::warn!(device = %device_s, sha256 = %record.fingerprint.sha256,
        previous = ?old.as_ref().map(|r| &r.fingerprint.sha256), changes = %changes.join("; "),
        record = %record_sha256, "camera pinned by the operator");
    Ok(Repin {
        previous: old.map(|r| r.fingerprint.sha256),
        record,
        record_sha256,
        changes,
    })
}

pub fn camera(args: &CameraArgs) -> Result<Outcome, CameraError> {
    match &args.command {
        CameraCommand::Pin(a) => pin_cli(a),
    }
}

fn pin_cli(a: &PinArgs) -> Result<Outcome, CameraError> {
    let ov = crate::config::Overrides {
        source: a.source.clone(),
        data_dir: a.data_dir.clone(),
        ..Default::default()
    };
    let cfg =
        Config::load(a.config.as_deref(), &ov).map_err(|e| CameraError::Usage(e.to_string()))?;
    let device = match SourceSpec::parse(&cfg.source.uri) {
        Ok(SourceSpec::V4l2(p)) => p,
        _ => {
            return Err(CameraError::Usage(format!(
                "source {:?} is not a camera (/dev/videoN): nothing to pin",
                cfg.source.uri
            )))
        }
    };
    if cfg.source.expect.is_some() {
        println!("note: [source.expect] is set: the daemon checks the camera against it, not against the pin");
    }
    let key = crate::seal::device_key(&cfg.seal, &cfg.data_dir)
        .map_err(|e| CameraError::Usage(format!("device key: {e}")))?;
    let store = PinStore::new(&cfg.data_dir, Arc::new(key), &cfg.device_id, cfg.seal.fsync);
    let r = repin(&store, &mut SystemInfo::default(), &device)?;
    println!("pinned {} as this device's camera", device.display());
    println!("fingerprint: {}", r.record.fingerprint.sha256);
    match &r.previous {
        Some(p) if *p == r.record.fingerprint.sha256 => println!("(same camera as before)"),
        Some(p) => {
            println!("previous fingerprint: {p}");
            for c in &r.changes {
                println!("  changed: {c}");
            }
        }
        None => println!("(no camera was pinned before)"),
    }
    println!(
        "pin record: {} (sha256 {}, signed by key {})",
        store.path().display(),
        r.record_sha256,
        &r.record.key_id[..16.min(r.record.key_id.len())]
    );
    Ok(Outcome::Ok)
}
