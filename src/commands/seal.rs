//! `veriframe keygen`, `veriframe verify` and `veriframe bench-seal`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::capture::synthetic::Synthetic;
use crate::decide::{Decision, Verdict};
use crate::frame::{monotonic_now, Frame, PixelFormat, SourceInfo};
use crate::seal::keys::{self, DeviceKey};
use crate::seal::policy::PolicyKind;
use crate::seal::verify::{self, ChainReport};
use crate::seal::{ChainSealer, SealConfig, SealError, SealInput, Signer};
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

#[derive(Debug, clap::Args)]
pub struct BenchSealArgs {
    /// Captures to seal per configuration.
    #[arg(long, default_value_t = 200)]
    pub n: usize,
    /// Directory to write into (on the filesystem you want measured); a scratch subdirectory is
    /// created and removed. Default: the current directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn keygen(args: &KeygenArgs) -> Result<Outcome, SealError> {
    let key = keys::create_key_files(&args.out)?;
    let pk = key.public();
    println!("private key: {} (PKCS#8, mode 0600)", args.out.display());
    println!("public key:  {}", keys::pub_path(&args.out).display());
    println!(
        "public key (base64, raw 32 bytes): {}",
        keys::public_key_b64(&pk)
    );
    print!("{}", keys::public_key_pem(&pk));
    println!("key id (SHA-256 of the raw public key): {}", key.key_id());
    Ok(Outcome::Ok)
}

fn print_human(reports: &[ChainReport], pubkey_given: bool) {
    for r in reports {
        let where_ = r
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "(files)".into());
        let key = r.key_id.as_deref().map(|k| &k[..16]).unwrap_or("none");
        if pubkey_given {
            println!("chain {where_}: checking against --pubkey key {key}");
        } else {
            println!(
                "chain {where_}: no --pubkey given; trusting key {key} found in the captures (trust on first use)"
            );
        }
        if !r.complete {
            println!(
                "note: chain start and end not checked (no valid chain state{})",
                if r.dir.is_none() {
                    "; files given one by one"
                } else {
                    ""
                }
            );
        }
        for c in &r.captures {
            let seq = c.seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            if c.valid() {
                let camera = match &c.fingerprint {
                    Some(f) if f.camera => format!(
                        " camera={} ({})",
                        f.sha256
                            .as_deref()
                            .map(|h| &h[..16])
                            .unwrap_or("unreadable"),
                        f.pin
                    ),
                    Some(_) => " camera=none".to_string(),
                    None => String::new(),
                };
                println!(
                    "ok    {} seq={seq} verdict={}{camera}",
                    c.path.display(),
                    c.verdict.as_deref().unwrap_or("?")
                );
            } else {
                let reasons: Vec<String> = c
                    .problems
                    .iter()
                    .map(|p| format!("{}: {}", p.code, p.message))
                    .collect();
                println!(
                    "FAIL  {} seq={seq}: {}",
                    c.path.display(),
                    reasons.join("; ")
                );
            }
        }
        for p in &r.problems {
            println!("FAIL  {where_}: {}: {}", p.code, p.message);
        }
        let bad = r.captures.iter().filter(|c| !c.valid()).count();
        println!(
            "{}: {} captures (seq {}..={}), {} invalid, {} chain problems",
            if r.valid() { "VALID" } else { "INVALID" },
            r.captures.len(),
            r.first_seq.map(|s| s.to_string()).unwrap_or_default(),
            r.last_seq.map(|s| s.to_string()).unwrap_or_default(),
            bad,
            r.problems.len()
        );
    }
}

pub fn verify(args: &VerifyArgs) -> Result<Outcome, SealError> {
    let pubkey = args
        .pubkey
        .as_deref()
        .map(keys::load_public_key)
        .transpose()?;
    let reports = verify::verify_paths(&args.paths, pubkey.as_ref())?;
    let valid = reports.iter().all(ChainReport::valid);
    if args.json {
        let doc = serde_json::json!({
            "valid": valid,
            "chains": reports.iter().map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["valid"] = r.valid().into();
                if let Some(caps) = v["captures"].as_array_mut() {
                    for (c, rep) in caps.iter_mut().zip(&r.captures) {
                        c["valid"] = rep.valid().into();
                    }
                }
                v
            }).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| SealError::Encode(e.to_string()))?
        );
    } else {
        print_human(&reports, pubkey.is_some());
    }
    Ok(if valid {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// A 640x480 JPEG test frame (the synthetic pattern, quality 85).
pub fn test_jpeg(width: u32, height: u32, n: u64) -> Result<Vec<u8>, SealError> {
    let rgb = Synthetic::render(width, height, n);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode(&rgb, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| SealError::Encode(e.to_string()))?;
    Ok(out)
}

fn jpeg_frame(bytes: Vec<u8>, seq: u64) -> Frame {
    Frame {
        seq,
        device_seq: Some(seq),
        captured_wall: SystemTime::now(),
        captured_mono: monotonic_now(),
        source: Arc::new(SourceInfo {
            kind: "bench".into(),
            path: "bench".into(),
            driver: "bench".into(),
            card: "640x480 JPEG".into(),
            bus: String::new(),
            format: PixelFormat::Jpeg,
            width: 640,
            height: 480,
            fps: 30.0,
        }),
        format: PixelFormat::Jpeg,
        width: 640,
        height: 480,
        bytes: bytes.into(),
        origin: None,
        decoded: Default::default(),
    }
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    name: String,
    n: usize,
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
    per_second: f64,
}

fn summarize(name: &str, mut d: Vec<Duration>) -> Summary {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let n = d.len().max(1);
    let total: Duration = d.iter().sum();
    let pick = |q: f64| {
        d.get(((n as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Summary {
        name: name.into(),
        n: d.len(),
        median_us: us(pick(0.5)),
        p99_us: us(pick(0.99)),
        mean_us: us(total) / n as f64,
        per_second: if total.is_zero() {
            0.0
        } else {
            d.len() as f64 / total.as_secs_f64()
        },
    }
}

fn bench_store(dir: &Path, fsync: bool, n: usize, jpeg: &[u8]) -> Result<Summary, SealError> {
    let cfg = SealConfig {
        policy: PolicyKind::Every,
        fsync,
        retention_max_age: None,
        retention_max_mb: 0,
        ..SealConfig::default()
    };
    let (key, _) = DeviceKey::generate()?;
    let mut sealer = ChainSealer::with_key(&cfg, Arc::new(key), dir, "bench")?;
    let decision = Decision {
        verdict: Verdict::Authentic,
        actions: Vec::new(),
    };
    let identity = crate::frame::identity::SourceIdentity::not_a_camera();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let frame = jpeg_frame(jpeg.to_vec(), i as u64);
        let input = SealInput {
            frame: &frame,
            analysis: None,
            decision: &decision,
            identity: &identity,
        };
        let t0 = Instant::now();
        sealer.seal_now(&input, "every")?;
        times.push(t0.elapsed());
    }
    Ok(summarize(
        if fsync {
            "seal 640x480 JPEG (hash+sign+write, fsync on)"
        } else {
            "seal 640x480 JPEG (hash+sign+write, fsync off)"
        },
        times,
    ))
}

pub fn bench_seal(args: &BenchSealArgs) -> Result<Outcome, SealError> {
    if args.n == 0 {
        return Err(SealError::Usage("--n must be at least 1".into()));
    }
    let jpeg = test_jpeg(640, 480, 7)?;
    let scratch = args
        .dir
        .join(format!(".veriframe-bench-seal-{}", std::process::id()));
    let (key, _) = DeviceKey::generate()?;
    let mut hash_t = Vec::with_capacity(args.n);
    let mut sign_t = Vec::with_capacity(args.n);
    let msg = vec![b'x'; 1200]; // about a manifest's size
    for _ in 0..args.n {
        let t0 = Instant::now();
        std::hint::black_box(keys::sha256_hex(&jpeg));
        hash_t.push(t0.elapsed());
        let t0 = Instant::now();
        std::hint::black_box(key.sign(&msg));
        sign_t.push(t0.elapsed());
    }
    let result = (|| {
        let off = bench_store(&scratch.join("nofsync"), false, args.n, &jpeg)?;
        let on = bench_store(&scratch.join("fsync"), true, args.n, &jpeg)?;
        Ok::<_, SealError>((off, on))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let (off, on) = result?;
    let rows = vec![
        summarize(&format!("sha256 of the {}-byte JPEG", jpeg.len()), hash_t),
        summarize("Ed25519 sign (1200-byte manifest)", sign_t),
        off,
        on,
    ];
    if args.json {
        let doc = serde_json::json!({
            "jpeg_bytes": jpeg.len(),
            "dir": args.dir,
            "results": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| SealError::Encode(e.to_string()))?
        );
    } else {
        println!(
            "bench-seal: {} iterations, JPEG {} bytes, writing under {}",
            args.n,
            jpeg.len(),
            args.dir.display()
        );
        for r in &rows {
            println!(
                "{:<52} median {:>9.1} us  p99 {:>9.1} us  {:>9.0}/s",
                r.name, r.median_us, r.p99_us, r.per_second
            );
        }
    }
    Ok(Outcome::Ok)
}
