//! `veriframe camera pin`: bind the device to the camera now attached (an operator's decision,
//! logged and recorded as a signed, hash-linked pin record; [`veriframe::camera::pin::repin`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Outcome, UsageError};
use veriframe::camera::fingerprint::SystemInfo;
use veriframe::camera::pin::{repin, PinStore};
use veriframe::capture::SourceSpec;
use veriframe::config::Config;

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

pub fn camera(args: &CameraArgs) -> anyhow::Result<Outcome> {
    match &args.command {
        CameraCommand::Pin(a) => pin_cli(a),
    }
}

fn pin_cli(a: &PinArgs) -> anyhow::Result<Outcome> {
    let ov = veriframe::config::Overrides {
        source: a.source.clone(),
        data_dir: a.data_dir.clone(),
        ..Default::default()
    };
    let cfg = Config::load(a.config.as_deref(), &ov).map_err(|e| UsageError(e.to_string()))?;
    let device = match SourceSpec::parse(&cfg.source.uri) {
        Ok(SourceSpec::V4l2(p)) => p,
        _ => {
            return Err(UsageError(format!(
                "source {:?} is not a camera (/dev/videoN): nothing to pin",
                cfg.source.uri
            ))
            .into())
        }
    };
    if cfg.source.expect.is_some() {
        println!("note: [source.expect] is set: the daemon checks the camera against it, not against the pin");
    }
    let key = veriframe::seal::device_key(&cfg.seal, &cfg.data_dir)
        .map_err(|e| UsageError(format!("device key: {e}")))?;
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
