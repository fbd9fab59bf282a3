//! `veriframe keygen`, `veriframe verify` and `veriframe bench-seal`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Outcome, UsageError};
use veriframe::capture::synthetic::Synthetic;
use veriframe::decide::{Decision, Verdict};
use veriframe::frame::{Frame, PixelFormat, SourceInfo};
use veriframe::record::fsio::RealFs;
use veriframe::record::hash::sha256_hex;
use veriframe::record::Signer;
use veriframe::seal::keys::{self, DeviceKey};
use veriframe::seal::policy::PolicyKind;
use veriframe::seal::verify::{self, ChainReport};
use veriframe::seal::{ChainSealer, SealConfig, SealError, SealInput, Sealer};

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
    /// Frames in the evidence burst measured with group commit.
    #[arg(long, default_value_t = 15)]
    pub burst: usize,
    /// Bursts measured (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Camera frame rate at which the burst's frames arrive in the `at_fps` run.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Sleep this long after every sync that reaches the disk (the store's `Fs` seam, see
    /// `record::fsio::RealFs`): models a slow SD card's cache flush.
    #[arg(long, default_value_t = 0)]
    pub fsync_delay_ms: u64,
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
        for n in &r.notes {
            println!("note: {}: {}", n.code, n.message);
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

fn jpeg_frame(bytes: Vec<u8>, seq: u64) -> Frame {
    let source = Arc::new(SourceInfo {
        kind: "bench".into(),
        path: "bench".into(),
        driver: "bench".into(),
        card: "640x480 JPEG".into(),
        bus: String::new(),
        format: PixelFormat::Jpeg,
        width: 640,
        height: 480,
        fps: 30.0,
    });
    Frame {
        seq,
        device_seq: Some(seq),
        ..Frame::captured_now(source, PixelFormat::Jpeg, 640, 480, bytes.into())
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
    /// Syncs that reached the disk per capture (store runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    fsyncs_per_capture: Option<f64>,
    /// Bytes written per capture, checkpoints included (store runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_per_capture: Option<f64>,
}

/// A burst of frames through the seal stage as the daemon runs it.
#[derive(Debug, serde::Serialize)]
struct BurstRun {
    /// Frames per burst.
    frames: usize,
    /// Arrival rate (0: all queued at once).
    fps: f64,
    rounds: usize,
    /// First frame queued → last frame durable, median and worst over the rounds.
    median_ms: f64,
    max_ms: f64,
    captures_per_s: f64,
    /// Group commits per burst (median).
    batches: f64,
    fsyncs_per_capture: f64,
    bytes_per_capture: f64,
    /// Frames that found the seal queue full (over all rounds).
    dropped: u64,
    /// Frames that failed to seal (over all rounds).
    errors: u64,
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
        fsyncs_per_capture: None,
        bytes_per_capture: None,
    }
}

fn bench_config(fsync: bool) -> SealConfig {
    SealConfig {
        policy: PolicyKind::Every,
        fsync,
        retention_max_age: None,
        retention_max_mb: 0,
        ..SealConfig::default()
    }
}

/// A device key with a self-signed C2PA chain (written to `dir/bench.chain.pem`).
struct BenchC2pa {
    key: Arc<DeviceKey>,
    chain: PathBuf,
}

impl BenchC2pa {
    fn new(dir: &Path) -> Result<Self, SealError> {
        let (key, _) = DeviceKey::generate()?;
        let key = Arc::new(key);
        let s = veriframe::seal::cert::self_signed(&key, "bench", 1).map_err(SealError::Encode)?;
        std::fs::create_dir_all(dir).map_err(|source| SealError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let chain = dir.join("bench.chain.pem");
        std::fs::write(&chain, s.chain.to_pem()).map_err(|source| SealError::Io {
            path: chain.clone(),
            source,
        })?;
        Ok(Self { key, chain })
    }
}

fn bench_sealer(dir: &Path, fsync: bool, delay: Duration) -> Result<ChainSealer, SealError> {
    bench_sealer_with(dir, fsync, delay, None)
}

/// A sealer writing under `dir`; with `c2pa`, also writing C2PA credentials (`seal.c2pa`).
fn bench_sealer_with(
    dir: &Path,
    fsync: bool,
    delay: Duration,
    c2pa: Option<&BenchC2pa>,
) -> Result<ChainSealer, SealError> {
    let fs = RealFs::with_delay(fsync, delay);
    let (cfg, key) = match c2pa {
        Some(c) => (
            SealConfig {
                c2pa: true,
                c2pa_chain: Some(c.chain.clone()),
                ..bench_config(fsync)
            },
            c.key.clone(),
        ),
        None => (bench_config(fsync), Arc::new(DeviceKey::generate()?.0)),
    };
    ChainSealer::with_fs(&cfg, key, dir, "bench", Box::new(fs))
}

/// `rounds` bursts of `frames` frames arriving at `fps` (0: at once) into a seal queue of the
/// daemon's default capacity (a full queue drops the frame, as the analysis thread does), sealed
/// by the daemon's loop: take what is queued, commit it as one batch.
fn bench_burst(
    dir: &Path,
    frames: usize,
    rounds: usize,
    fps: f64,
    delay: Duration,
    jpeg: &[u8],
) -> Result<BurstRun, SealError> {
    let mut sealer = bench_sealer(dir, true, delay)?;
    let capacity = veriframe::config::Config::default()
        .pipeline
        .seal_queue_capacity;
    let decision = Decision {
        verdict: Verdict::Authentic,
        actions: Vec::new(),
    };
    let (mut times, mut batches) = (Vec::new(), Vec::new());
    let (mut dropped, mut errors, mut sealed) = (0u64, 0u64, 0u64);
    let identity = veriframe::frame::identity::SourceIdentity::not_a_camera();
    let io0 = sealer.store().io_counters();
    for r in 0..rounds {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(capacity);
        let frames_v: Vec<Frame> = (0..frames)
            .map(|i| jpeg_frame(jpeg.to_vec(), (r * frames + i) as u64))
            .collect();
        let t0 = Instant::now();
        let producer = std::thread::spawn(move || {
            let mut dropped = 0u64;
            for (i, f) in frames_v.into_iter().enumerate() {
                if fps > 0.0 {
                    let due = t0 + Duration::from_secs_f64(i as f64 / fps);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                if tx.try_send(f).is_err() {
                    dropped += 1;
                }
            }
            dropped
        });
        let mut n_batches = 0u64;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while let Ok(f) = rx.try_recv() {
                batch.push(f);
            }
            let inputs: Vec<SealInput<'_>> = batch
                .iter()
                .map(|frame| SealInput::unanalysed(frame, &decision, &identity))
                .collect();
            for res in sealer.seal_batch(&inputs) {
                match res {
                    Ok(Some(_)) => sealed += 1,
                    Ok(None) => {}
                    Err(_) => errors += 1,
                }
            }
            n_batches += 1;
        }
        times.push(t0.elapsed());
        batches.push(n_batches as f64);
        dropped += producer
            .join()
            .map_err(|_| SealError::Encode("burst producer panicked".into()))?;
    }
    let io = sealer.store().io_counters();
    let per = |x: u64| x as f64 / sealed.max(1) as f64;
    let sum = summarize("burst", times);
    batches.sort_by(f64::total_cmp);
    Ok(BurstRun {
        frames,
        fps,
        rounds,
        median_ms: sum.median_us / 1000.0,
        max_ms: sum.p99_us.max(sum.median_us) / 1000.0,
        captures_per_s: if sum.median_us > 0.0 {
            frames as f64 / (sum.median_us / 1e6)
        } else {
            0.0
        },
        batches: batches.get(batches.len() / 2).copied().unwrap_or(0.0),
        fsyncs_per_capture: per(io.syncs - io0.syncs),
        bytes_per_capture: per(io.bytes - io0.bytes),
        dropped,
        errors,
    })
}

/// Making a C2PA credential for one capture, in memory (`n` times), and its size.
fn bench_c2pa_sign(c2pa: &BenchC2pa, n: usize, jpeg: &[u8]) -> Result<(Summary, usize), SealError> {
    let signer = veriframe::seal::c2pa::C2paSigner::load(c2pa.key.clone(), &c2pa.chain)
        .map_err(|e| SealError::Encode(e.to_string()))?;
    let frame = jpeg_frame(jpeg.to_vec(), 0);
    let decision = Decision {
        verdict: Verdict::Authentic,
        actions: Vec::new(),
    };
    let identity = veriframe::frame::identity::SourceIdentity::not_a_camera();
    let input = SealInput::unanalysed(&frame, &decision, &identity);
    let m = veriframe::seal::build_manifest(
        &c2pa.key,
        "bench",
        "bench",
        0,
        None,
        "every",
        &input,
        jpeg,
        "image/jpeg",
        "jpg",
        "source",
    );
    let bytes = m
        .to_canonical()
        .map_err(|e| SealError::Encode(e.to_string()))?;
    let sha = sha256_hex(&bytes);
    let (mut times, mut len) = (Vec::with_capacity(n), 0);
    for _ in 0..n {
        let t0 = Instant::now();
        let c = signer
            .sign(&m, &sha, "image/jpeg", jpeg)
            .map_err(|e| SealError::Encode(e.to_string()))?;
        times.push(t0.elapsed());
        len = c.len();
    }
    Ok((summarize("C2PA credential, in memory", times), len))
}

/// `n` captures sealed one at a time (a batch of one each: two syncs per capture), with C2PA
/// credentials when `c2pa` is given.
fn bench_store(
    dir: &Path,
    fsync: bool,
    delay: Duration,
    n: usize,
    jpeg: &[u8],
    c2pa: Option<&BenchC2pa>,
) -> Result<Summary, SealError> {
    let mut sealer = bench_sealer_with(dir, fsync, delay, c2pa)?;
    let decision = Decision {
        verdict: Verdict::Authentic,
        actions: Vec::new(),
    };
    let io0 = sealer.store().io_counters();
    let identity = veriframe::frame::identity::SourceIdentity::not_a_camera();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let frame = jpeg_frame(jpeg.to_vec(), i as u64);
        let input = SealInput::unanalysed(&frame, &decision, &identity);
        let t0 = Instant::now();
        sealer.seal_now(&input, "every")?;
        times.push(t0.elapsed());
    }
    if sealer.c2pa_counts().failed > 0 {
        return Err(SealError::Encode(format!(
            "{} C2PA credentials failed",
            sealer.c2pa_counts().failed
        )));
    }
    let io = sealer.store().io_counters();
    let mut sum = summarize(
        &format!(
            "seal 640x480 JPEG, one at a time (fsync {}){}",
            if fsync { "on" } else { "off" },
            if c2pa.is_some() { " + C2PA" } else { "" }
        ),
        times,
    );
    sum.fsyncs_per_capture = Some((io.syncs - io0.syncs) as f64 / n as f64);
    sum.bytes_per_capture = Some((io.bytes - io0.bytes) as f64 / n as f64);
    Ok(sum)
}

pub fn bench_seal(args: &BenchSealArgs) -> anyhow::Result<Outcome> {
    if args.n == 0 || args.burst == 0 || args.rounds == 0 {
        return Err(UsageError("--n, --burst and --rounds must be at least 1".into()).into());
    }
    if !(args.fps >= 0.0 && args.fps.is_finite()) {
        return Err(UsageError("--fps must be 0 or more".into()).into());
    }
    let jpeg = Synthetic::jpeg(640, 480, 7).map_err(|e| SealError::Encode(e.to_string()))?;
    let (hash, sign) = bench_primitives(args.n, &jpeg)?;
    let scratch = args
        .dir
        .join(format!(".veriframe-bench-seal-{}", std::process::id()));
    let result = bench_sealing(args, &scratch, &jpeg);
    let _ = std::fs::remove_dir_all(&scratch);
    let r = result?;
    let report = Report {
        jpeg_len: jpeg.len(),
        rows: vec![hash, sign, r.sign_c2pa, r.off, r.off_c2pa, r.on, r.on_c2pa],
        once: r.once,
        at_fps: r.at_fps,
        c2pa_extra: r.c2pa_extra,
    };
    if args.json {
        report.print_json(args)?;
    } else {
        report.print_text(args);
    }
    Ok(Outcome::Ok)
}

/// SHA-256 of the bench JPEG and an Ed25519 signature of a manifest-sized message, `n` times each.
fn bench_primitives(n: usize, jpeg: &[u8]) -> Result<(Summary, Summary), SealError> {
    let (key, _) = DeviceKey::generate()?;
    let mut hash_t = Vec::with_capacity(n);
    let mut sign_t = Vec::with_capacity(n);
    let msg = vec![b'x'; 1200]; // about a manifest's size
    for _ in 0..n {
        let t0 = Instant::now();
        std::hint::black_box(sha256_hex(jpeg));
        hash_t.push(t0.elapsed());
        let t0 = Instant::now();
        std::hint::black_box(key.sign(&msg));
        sign_t.push(t0.elapsed());
    }
    Ok((
        summarize(&format!("sha256 of the {}-byte JPEG", jpeg.len()), hash_t),
        summarize("Ed25519 sign (1200-byte manifest)", sign_t),
    ))
}

/// The sealing runs of `bench-seal`.
struct Sealing {
    sign_c2pa: Summary,
    /// One at a time: fsync off and on, each without and with C2PA.
    off: Summary,
    off_c2pa: Summary,
    on: Summary,
    on_c2pa: Summary,
    /// Bursts with group commit, queued at once and arriving at `--fps`.
    once: BurstRun,
    at_fps: BurstRun,
    /// seal.c2pa's cost (see [`c2pa_extra`]).
    c2pa_extra: serde_json::Value,
}

/// Every sealing run, each under its own subdirectory of `scratch`.
fn bench_sealing(args: &BenchSealArgs, scratch: &Path, jpeg: &[u8]) -> Result<Sealing, SealError> {
    let delay = Duration::from_millis(args.fsync_delay_ms);
    let c2pa = BenchC2pa::new(scratch)?;
    let (sign_c2pa, credential_bytes) = bench_c2pa_sign(&c2pa, args.n, jpeg)?;
    let store = |sub: &str, fsync: bool, c2pa: Option<&BenchC2pa>| {
        bench_store(&scratch.join(sub), fsync, delay, args.n, jpeg, c2pa)
    };
    let off = store("nofsync", false, None)?;
    let off_c2pa = store("nofsync-c2pa", false, Some(&c2pa))?;
    let on = store("fsync", true, None)?;
    let on_c2pa = store("fsync-c2pa", true, Some(&c2pa))?;
    let burst = |sub: &str, fps: f64| {
        bench_burst(
            &scratch.join(sub),
            args.burst,
            args.rounds,
            fps,
            delay,
            jpeg,
        )
    };
    let once = burst("burst", 0.0)?;
    let at_fps = burst("burst-fps", args.fps)?;
    let c2pa_extra = c2pa_extra(&off, &off_c2pa, &on, &on_c2pa, credential_bytes, jpeg.len());
    Ok(Sealing {
        sign_c2pa,
        off,
        off_c2pa,
        on,
        on_c2pa,
        once,
        at_fps,
        c2pa_extra,
    })
}

/// seal.c2pa's extra time per capture: the difference of the one-at-a-time runs with and
/// without it (fsync off: without the sync's noise; fsync on: as deployed), and the credential
/// copy's size.
fn c2pa_extra(
    off: &Summary,
    off_c2pa: &Summary,
    on: &Summary,
    on_c2pa: &Summary,
    credential_bytes: usize,
    jpeg_len: usize,
) -> serde_json::Value {
    serde_json::json!({
        "extra_median_us_fsync_off": off_c2pa.median_us - off.median_us,
        "extra_p99_us_fsync_off": off_c2pa.p99_us - off.p99_us,
        "extra_median_us_fsync_on": on_c2pa.median_us - on.median_us,
        "extra_p99_us_fsync_on": on_c2pa.p99_us - on.p99_us,
        "credential_bytes": credential_bytes,
        "size_overhead_bytes": credential_bytes as i64 - jpeg_len as i64,
    })
}

/// What `bench-seal` prints.
struct Report {
    jpeg_len: usize,
    /// The timed operations, in print order.
    rows: Vec<Summary>,
    once: BurstRun,
    at_fps: BurstRun,
    c2pa_extra: serde_json::Value,
}

impl Report {
    fn print_json(&self, args: &BenchSealArgs) -> Result<(), SealError> {
        let (once, at_fps) = (&self.once, &self.at_fps);
        let doc = serde_json::json!({
            "jpeg_bytes": self.jpeg_len,
            "dir": args.dir,
            "fsync_delay_ms": args.fsync_delay_ms,
            "results": self.rows,
            // The burst sealed with fsync on, all frames queued at once.
            "fsyncs_per_capture": once.fsyncs_per_capture,
            "bytes_per_capture": once.bytes_per_capture,
            "captures_per_s": once.captures_per_s,
            format!("burst{}_ms", args.burst): once.median_ms,
            "dropped": once.dropped + at_fps.dropped,
            "burst_at_once": once,
            "burst_at_fps": at_fps,
            // seal.c2pa: extra time per capture (difference of the one-at-a-time fsync-on runs
            // with and without) and the credential copy's size.
            "c2pa": self.c2pa_extra,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| SealError::Encode(e.to_string()))?
        );
        Ok(())
    }

    fn print_text(&self, args: &BenchSealArgs) {
        let (jpeg_len, c2pa_extra) = (self.jpeg_len, &self.c2pa_extra);
        println!(
            "bench-seal: {} iterations, JPEG {} bytes, writing under {}",
            args.n,
            jpeg_len,
            args.dir.display()
        );
        for r in &self.rows {
            print!(
                "{:<52} median {:>9.1} us  p99 {:>9.1} us  {:>9.0}/s",
                r.name, r.median_us, r.p99_us, r.per_second
            );
            match (r.fsyncs_per_capture, r.bytes_per_capture) {
                (Some(f), Some(b)) => println!("  {f:.2} fsyncs, {b:.0} bytes per capture"),
                _ => println!(),
            }
        }
        let x = |k: &str| c2pa_extra[k].as_f64().unwrap_or(0.0);
        let credential_bytes = c2pa_extra["credential_bytes"].as_i64().unwrap_or(0);
        println!(
            "C2PA (seal.c2pa) per capture, one at a time: fsync off {:+.1} us median, {:+.1} us p99; fsync on {:+.1} us median, {:+.1} us p99 (differences: noise can make them negative); credential {} bytes = JPEG + {} bytes",
            x("extra_median_us_fsync_off"),
            x("extra_p99_us_fsync_off"),
            x("extra_median_us_fsync_on"),
            x("extra_p99_us_fsync_on"),
            credential_bytes,
            credential_bytes - jpeg_len as i64
        );
        for b in [&self.once, &self.at_fps] {
            println!(
                "burst of {} ({}), fsync on{}: median {:.1} ms, max {:.1} ms, {:.0} captures/s, {:.1} batches, {:.2} fsyncs and {:.0} bytes per capture, {} dropped, {} errors",
                b.frames,
                if b.fps > 0.0 { format!("arriving at {} fps", b.fps) } else { "queued at once".into() },
                if args.fsync_delay_ms > 0 { format!(" +{} ms per sync", args.fsync_delay_ms) } else { String::new() },
                b.median_ms, b.max_ms, b.captures_per_s, b.batches, b.fsyncs_per_capture, b.bytes_per_capture, b.dropped, b.errors
            );
        }
    }
}
