//! `veriframe eval`, `veriframe bench` and `veriframe model …`.

use std::path::{Path, PathBuf};

use super::Outcome;
use veriframe::config::{Config, Overrides};
use veriframe::detect::nets::minifasnet::Arch;
use veriframe::detect::{
    bench, build_pipeline, eval, load_face, load_pad_ensemble, DetectConfig, DetectError, Quant,
};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Directory of bona fide (real) face images, searched recursively.
    #[arg(long)]
    pub real: PathBuf,
    /// Directory of attack images, searched recursively.
    #[arg(long)]
    pub attack: PathBuf,
    /// Model set (`face`, `minifasnet`) or PAD weights path (e.g. ../shared/models/upstream/minifasnet); default: the config
    #[arg(long)]
    pub model: Option<String>,
    /// Configuration file whose `[detect]` section is used (thresholds, weights).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write every image's score to this file (CSV: class,score,path; no-face images score -1).
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Weights precision of the PAD networks.
    #[arg(long, default_value = "q8_0", value_parser = super::enum_parser(&Quant::ALL, Quant::name))]
    pub quant: Quant,
    /// Timed iterations (after 10 warm-up ones).
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    /// Configuration file whose `[detect]` section is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn detect_config(path: Option<&Path>) -> Result<DetectConfig, DetectError> {
    Config::load(path, &Overrides::default())
        .map(|c| c.detect)
        .map_err(|e| DetectError::Config(e.to_string()))
}

fn init_logging() {
    // Warnings (e.g. missing PAD weights) to stderr; stdout stays clean for --json.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(super::use_colour())
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn eval(args: &EvalArgs) -> Result<Outcome, DetectError> {
    init_logging();
    let mut cfg = detect_config(args.config.as_deref())?;
    if let Some(m) = &args.model {
        // A model set name, or PAD weights (a MiniFASNet directory or model files).
        if std::path::Path::new(m).exists() {
            cfg.model = "minifasnet".into();
            cfg.pad_model = vec![m.into()];
        } else {
            cfg.model = m.clone();
        }
    }
    cfg.validate()
        .map_err(|(k, r)| DetectError::Config(format!("{k}: {r}")))?;
    let mut p = build_pipeline(&cfg)?
        .ok_or_else(|| DetectError::Config("model set `none` has nothing to evaluate".into()))?;
    if !p.has_pad() {
        return Err(DetectError::Config(format!(
            "model set {:?} has no PAD classifier: nothing to score",
            cfg.model
        )));
    }
    let real = eval::score_dir(&mut p, &args.real)?;
    let attack = eval::score_dir(&mut p, &args.attack)?;
    for (f, e) in real.unreadable.iter().chain(&attack.unreadable) {
        eprintln!("skipped unreadable image {}: {e}", f.display());
    }
    if let Some(out) = &args.scores {
        write_scores(out, &real, &attack)?;
    }
    let m = eval::metrics(&real.scores, &attack.scores, cfg.live_threshold);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&m).map_err(|e| DetectError::Model(e.to_string()))?
        );
    } else {
        println!(
            "model set {:?}; real {} ({} no face), attack {} ({} no face)",
            cfg.model, m.n_real, real.no_face, m.n_attack, attack.no_face
        );
        println!("AUC {:.4}", m.auc);
        println!(
            "at threshold {:.3}: APCER {:.2}%  BPCER {:.2}%  ACER {:.2}%",
            cfg.live_threshold,
            m.apcer * 100.0,
            m.bpcer * 100.0,
            m.acer * 100.0
        );
        println!(
            "threshold for BPCER <= 5%: {:.4}, APCER there {:.2}%",
            m.threshold,
            m.apcer_at_bpcer5 * 100.0
        );
        println!(
            "(images without a face count as rejected; no-face total {})",
            m.no_face
        );
    }
    Ok(Outcome::Ok)
}

/// `class,score,path` per image (a threshold chosen on one set can then be applied to another).
fn write_scores(
    out: &Path,
    real: &eval::DirScores,
    attack: &eval::DirScores,
) -> Result<(), DetectError> {
    use std::fmt::Write as _;
    let mut s = String::from("class,score,path\n");
    for (class, d) in [("real", real), ("attack", attack)] {
        for (score, f) in d.scores.iter().zip(&d.files) {
            // Infallible: writing into a String.
            let _ = writeln!(s, "{class},{score},{}", f.display());
        }
    }
    std::fs::write(out, s)
        .map_err(|e| DetectError::Config(format!("cannot write {}: {e}", out.display())))
}

pub fn bench(args: &BenchArgs) -> Result<Outcome, DetectError> {
    init_logging();
    let mut cfg = detect_config(args.config.as_deref())?;
    cfg.threads = args.threads;
    cfg.quant = args.quant;
    if cfg.model == "none" {
        cfg.model = "face".into();
    }
    cfg.validate()
        .map_err(|(k, r)| DetectError::Config(format!("{k}: {r}")))?;
    let mut r = bench::run(
        || {
            build_pipeline(&cfg)?
                .ok_or_else(|| DetectError::Config("no detector configured".into()))
        },
        args.threads,
        args.quant,
        args.iters.max(1),
        10,
    )?;
    // Then each network alone, on copies loaded after the stages (so peak RSS above is the
    // pipeline's own): the figures to set beside `shared/bench/peer.py`'s.
    let mut face = load_face(&cfg)?;
    let pad = load_pad_ensemble(&cfg)?;
    r.networks = bench::networks(&mut face, pad.as_ref(), args.iters.max(1))?;
    if !r.stages.contains_key("pad") {
        eprintln!("note: no PAD classifier loaded; the `pad` stage is not measured");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| DetectError::Model(e.to_string()))?
        );
    } else {
        println!(
            "threads {}, quant {:?}, model load {:.1} ms, peak RSS {:.1} MiB",
            r.threads, r.quant, r.model_load_ms, r.peak_rss_mb
        );
        for (k, s) in &r.stages {
            println!(
                "{k:>8}: median {:8.3} ms  p99 {:8.3} ms",
                s.median_ms, s.p99_ms
            );
        }
        println!("{:.1} frames/s (median total)", r.fps);
        println!(
            "each network alone on a prepared input (as shared/bench/peer.py times a runtime):"
        );
        for (k, s) in &r.networks {
            println!(
                "  {k}: median {:.3} ms  p99 {:.3} ms",
                s.median_ms, s.p99_ms
            );
        }
    }
    Ok(Outcome::Ok)
}

/// `veriframe model …`: Veriframe model files.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Convert upstream weights (safetensors) into a Veriframe model file (GGUF).
    Convert(ConvertArgs),
    /// Print a model file's metadata and check its weights hash.
    Info {
        /// The `.gguf` model file.
        path: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Network architecture of the input weights.
    #[arg(long, value_parser = super::enum_parser(&Arch::ALL, Arch::name))]
    pub arch: Arch,
    /// Upstream-layout `.safetensors` state dict.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output `.gguf` model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Precision of the pointwise/linear weights.
    #[arg(long, default_value = "q8_0", value_parser = super::enum_parser(&Quant::ALL, Quant::name))]
    pub quant: Quant,
}

pub fn model(args: &ModelArgs) -> Result<Outcome, DetectError> {
    use veriframe::detect::model::file as modelfile;
    match &args.command {
        ModelCommand::Convert(a) => {
            let bytes = std::fs::read(&a.input)?;
            let m = veriframe::detect::nets::minifasnet::convert::convert(
                &bytes,
                Some(a.arch),
                a.quant,
            )
            .map_err(|e| DetectError::Model(format!("{}: {e}", a.input.display())))?;
            modelfile::write(&m, &a.out)?;
            // Prove the file loads as a network before reporting success.
            let net = veriframe::detect::nets::minifasnet::MiniFasNet::load(&a.out, a.quant)?;
            let size = std::fs::metadata(&a.out)?.len();
            println!(
                "wrote {} ({} bytes): {} weights_sha256={}",
                a.out.display(),
                size,
                net.model_id().name,
                modelfile::weights_sha256(&m.tensors)?
            );
            Ok(Outcome::Ok)
        }
        ModelCommand::Info { path } => {
            let m = modelfile::read(path)?;
            let n_q8 = m
                .tensors
                .values()
                .filter(|t| t.dtype() == candle_core::quantized::GgmlDType::Q8_0)
                .count();
            println!("file:            {}", path.display());
            println!("architecture:    {}", m.arch);
            println!("quant:           {:?}", m.quant);
            println!("crop_scale:      {}", m.crop_scale);
            println!("input:           {}", m.input);
            println!("source_sha256:   {}", m.source_sha256);
            println!(
                "weights_sha256:  {} (verified)",
                modelfile::weights_sha256(&m.tensors)?
            );
            println!("tensors:         {} ({n_q8} Q8_0)", m.tensors.len());
            Ok(Outcome::Ok)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FacesArgs {
    /// Directories (searched recursively) or image files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write keys relative to this directory (default: absolute paths).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Configuration file whose `[detect]` section is used (face detector options).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `veriframe faces`: the primary face box `[x, y, w, h]` (frame pixels, rounded) the runtime's own
/// detector finds in each image, or `null`, as one JSON object keyed by path. The training tools
/// read it as a box cache (`tools/train/padcal`, `calibrate.py embed`), so a model is trained on the
/// same crops `run` and `eval` will give it.
pub fn faces(args: &FacesArgs) -> Result<Outcome, DetectError> {
    init_logging();
    let mut cfg = detect_config(args.config.as_deref())?;
    cfg.model = "face".into();
    let mut p = build_pipeline(&cfg)?
        .ok_or_else(|| DetectError::Config("no face detector configured".into()))?;
    let root = match &args.root {
        Some(r) => Some(
            std::fs::canonicalize(r)
                .map_err(|e| DetectError::Config(format!("--root {}: {e}", r.display())))?,
        ),
        None => None,
    };
    let mut out = std::collections::BTreeMap::new();
    for path in &args.paths {
        let files = if path.is_dir() {
            eval::image_files(path)?
        } else {
            vec![path.clone()]
        };
        for f in files {
            let img = match image::open(&f) {
                Ok(i) => i.into_rgb8(),
                Err(e) => {
                    eprintln!("skipped unreadable image {}: {e}", f.display());
                    continue;
                }
            };
            let faces = p.detect_faces(&img)?;
            let bbox = faces
                .first()
                .map(|face| face.bbox.map(|v| v.round() as i64));
            // Absolute paths (what the training tool looks up for user data), or relative to
            // --root (the shared data's keys).
            let abs = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            let key = match &root {
                Some(r) => abs.strip_prefix(r).unwrap_or(&abs).to_path_buf(),
                None => abs.clone(),
            };
            out.insert(key.to_string_lossy().into_owned(), bbox);
        }
    }
    let json = serde_json::to_string_pretty(&out).map_err(|e| DetectError::Model(e.to_string()))?;
    println!("{json}");
    Ok(Outcome::Ok)
}
