//! `veriframe cert` (device certificate for C2PA) and `veriframe export --c2pa` (credentials for
//! captures already sealed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Outcome, UsageError};
use veriframe::config::{Config, Overrides};
use veriframe::seal::c2pa::{self, C2paSigner};
use veriframe::seal::cert::{self, CertChain};
use veriframe::seal::manifest::Manifest;
use veriframe::seal::verify::{self, ChainReport};
use veriframe::seal::{self as seal_mod, SealError};

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Configuration file (TOML): data_dir, device_id, seal.key and seal.c2pa_chain come from it.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (default: from the config).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Device signing key (default: from the config).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Pilot: make a one-off device CA (its key is discarded once it has signed) and the
    /// device's certificate under it; writes the chain (`seal.c2pa_chain`) and the CA
    /// certificate for verifiers' trust lists (`device.ca.pem` beside `device.chain.pem`).
    SelfSigned {
        /// Validity in days.
        #[arg(long, default_value_t = 1825)]
        days: u32,
        /// Replace an existing chain.
        #[arg(long)]
        force: bool,
    },
    /// Print (or write) a PKCS#10 certificate request for the device key, for an operator's CA.
    Csr {
        /// Write the request here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Install a certificate chain (PEM, device certificate first) returned by a CA, after
    /// checking that it certifies this device's key.
    Install {
        /// The chain (PEM).
        chain: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Make C2PA Content Credential copies (the only export format).
    #[arg(long)]
    pub c2pa: bool,
    /// Data, `captures/` or chain directory of this device's captures.
    pub dir: PathBuf,
    /// Output directory (created).
    pub out: PathBuf,
    /// Configuration file (TOML): data_dir, device_id, seal.key and seal.c2pa_chain.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Device signing key (default: from the config).
    #[arg(long)]
    pub key: Option<PathBuf>,
}

fn load_config(
    config: Option<&Path>,
    data_dir: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<Config, UsageError> {
    let ov = Overrides {
        data_dir: data_dir.cloned(),
        key: key.cloned(),
        ..Default::default()
    };
    Config::load(config, &ov).map_err(|e| UsageError(e.to_string()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `text` to `path` (mode 0644) unless it exists and `force` is off.
fn write_new(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        return Err(UsageError(format!(
            "{} exists; pass --force to replace it",
            path.display()
        ))
        .into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    Ok(veriframe::record::fsio::atomic_write(
        path,
        text.as_bytes(),
        0o644,
        true,
    )?)
}

/// Where `cert self-signed` puts the CA certificate: beside the chain, `.chain.pem` → `.ca.pem`.
fn ca_path(chain: &Path) -> PathBuf {
    let s = chain.to_string_lossy();
    match s.strip_suffix(".chain.pem") {
        Some(stem) => PathBuf::from(format!("{stem}.ca.pem")),
        None => PathBuf::from(format!("{s}.ca.pem")),
    }
}

pub fn cert(args: &CertArgs) -> anyhow::Result<Outcome> {
    let cfg = load_config(
        args.config.as_deref(),
        args.data_dir.as_ref(),
        args.key.as_ref(),
    )?;
    let key = Arc::new(seal_mod::device_key(&cfg.seal, &cfg.data_dir)?);
    let chain_path = seal_mod::c2pa_chain_path(&cfg.seal, &cfg.data_dir);
    match &args.command {
        CertCommand::SelfSigned { days, force } => {
            if *days == 0 {
                return Err(UsageError("--days must be at least 1".into()).into());
            }
            let s = cert::self_signed(&key, &cfg.device_id, *days).map_err(UsageError)?;
            let ca = ca_path(&chain_path);
            write_new(&ca, &s.ca_pem, *force)?;
            write_new(&chain_path, &s.chain.to_pem(), *force)?;
            println!("device certificate chain: {}", chain_path.display());
            println!(
                "device CA certificate (add it to verifiers' trust lists): {}",
                ca.display()
            );
            println!(
                "subject CN={} key id {} valid {days} days; the CA's private key was discarded",
                cfg.device_id,
                key.id()
            );
        }
        CertCommand::Csr { out } => {
            let pem = cert::csr(&key, &cfg.device_id).map_err(UsageError)?;
            match out {
                Some(p) => {
                    write_new(p, &pem, true)?;
                    println!("certificate request: {}", p.display());
                }
                None => print!("{pem}"),
            }
        }
        CertCommand::Install { chain } => {
            let pem = std::fs::read(chain).map_err(io(chain))?;
            let parsed = CertChain::from_pem(&pem)
                .map_err(|e| UsageError(format!("{}: {e}", chain.display())))?;
            parsed
                .check_leaf_key(&key.public())
                .map_err(|e| UsageError(format!("{}: {e}", chain.display())))?;
            write_new(&chain_path, &parsed.to_pem(), true)?;
            println!(
                "installed {} certificate(s) as {}",
                parsed.certs.len(),
                chain_path.display()
            );
        }
    }
    Ok(Outcome::Ok)
}

pub fn export(args: &ExportArgs) -> anyhow::Result<Outcome> {
    if !args.c2pa {
        return Err(
            UsageError("choose what to export: --c2pa (C2PA Content Credentials)".into()).into(),
        );
    }
    let cfg = load_config(args.config.as_deref(), None, args.key.as_ref())?;
    let key = Arc::new(seal_mod::device_key(&cfg.seal, &cfg.data_dir)?);
    let signer = C2paSigner::load(
        key.clone(),
        &seal_mod::c2pa_chain_path(&cfg.seal, &cfg.data_dir),
    )
    .map_err(|e| UsageError(e.to_string()))?;
    // Only a chain that verifies, under this device's key, gets credentials.
    let reports = verify::verify_paths(std::slice::from_ref(&args.dir), Some(&key.public()))?;
    if !reports.iter().all(ChainReport::valid) {
        for r in &reports {
            for p in &r.problems {
                eprintln!("chain problem: {}: {}", p.code, p.message);
            }
            for c in r.captures.iter().filter(|c| !c.valid()) {
                let codes: Vec<&str> = c.problems.iter().map(|p| p.code).collect();
                eprintln!("FAIL {}: {}", c.path.display(), codes.join(", "));
            }
        }
        eprintln!("the captures do not verify under this device's key: nothing exported");
        return Ok(Outcome::CheckFailed);
    }
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    let mut n = 0;
    for r in &reports {
        for c in &r.captures {
            let bytes = std::fs::read(&c.path).map_err(io(&c.path))?;
            let m = Manifest::parse(&bytes).map_err(|e| SealError::Encode(e.to_string()))?;
            let dir = c.path.parent().unwrap_or(Path::new("."));
            let image_path = dir.join(&m.image.file);
            let image = std::fs::read(&image_path).map_err(io(&image_path))?;
            let name = c2pa::credential_file(m.seq, &m.image.media_type)
                .map_err(|e| SealError::Encode(e.to_string()))?;
            let signed = signer
                .sign(
                    &m,
                    &veriframe::record::hash::sha256_hex(&bytes),
                    &m.image.media_type,
                    &image,
                )
                .map_err(|e| SealError::Encode(format!("{}: {e}", c.path.display())))?;
            c2pa::write_credential(&args.out, &name, &signed)
                .map_err(|e| SealError::Encode(e.to_string()))?;
            n += 1;
        }
    }
    println!(
        "exported {n} C2PA credential(s) to {} (key id {})",
        args.out.display(),
        key.id()
    );
    Ok(Outcome::Ok)
}
