//! Analysis of one frame: decode, face detection, presentation-attack detection (PAD).
//!
//! The seam is [`Analyzer`]. Until the quantized candle detector lands, [`DecodeOnly`] decodes the
//! frame (so corrupt frames surface here) and reports no faces.

pub mod bench;
pub mod crop;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod nets;
pub mod pipeline;

// The networks and the model-file format keep their paths from before the split
// (`detect::nets::face`, `detect::nets::minifasnet`, `detect::nets::meso`, `detect::model::file`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, PixelFormat};
use nets::{face, meso, minifasnet};

/// Errors from analysis.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("frame {seq}: cannot decode {format} image: {reason}")]
    Decode {
        seq: u64,
        format: PixelFormat,
        reason: String,
    },
    #[error("model error: {0}")]
    Model(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

use crate::alert::ModelId;

/// One detected face, in frame pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// x, y, width, height.
    pub bbox: [f32; 4],
    /// Detector confidence, 0..1.
    pub score: f32,
    /// Landmarks (x, y): eyes, nose, mouth, … as the detector gives them.
    pub landmarks: Vec<[f32; 2]>,
    /// Probability the face is a live person (PAD), 0..1, when the classifier ran.
    pub live_score: Option<f32>,
    /// Probability of deepfake artefacts, 0..1, when that classifier ran.
    pub deepfake_score: Option<f32>,
}

/// What the analyser says about one frame. Deterministic given the frame and the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    /// Faces, primary (largest/most confident) first.
    pub faces: Vec<Face>,
    /// Models that produced this result.
    pub models: Vec<ModelId>,
}

impl Analysis {
    pub fn primary(&self) -> Option<&Face> {
        self.faces.first()
    }
}

/// The analyser seam: one frame in, one [`Analysis`] out. Runs on the analysis thread; must not
/// do file or network I/O per frame.
pub trait Analyzer: Send {
    fn analyze(&mut self, frame: &Frame) -> Result<Analysis, DetectError>;
    /// Models in use (for status and manifests).
    fn models(&self) -> Vec<ModelId>;
}

/// Face detection seam (BlazeFace and friends): faces in frame pixel coordinates, most confident
/// first; `live_score`/`deepfake_score` left `None`.
pub trait FaceDetector: Send {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>, DetectError>;
    fn model(&self) -> ModelId;
}

/// Presentation-attack classifier seam: the probability that `face` in `img` is a live person
/// (e.g. the MiniFASNet ensemble score `(softmax_V2 + softmax_V1SE)[1] / 2`).
pub trait PadClassifier: Send {
    fn live_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, DetectError>;
    fn models(&self) -> Vec<ModelId>;
}

/// Deepfake-artefact classifier seam (Meso4, [`meso`]): the probability that `face` in `img`
/// shows deepfake artefacts.
pub trait DeepfakeClassifier: Send {
    fn deepfake_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, DetectError>;
    fn model(&self) -> ModelId;
}

/// Weight precision of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    F32,
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl Quant {
    pub const ALL: [Quant; 2] = [Quant::F32, Quant::Q8_0];

    /// The name in configs, model files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Quant::F32 => "f32",
            Quant::Q8_0 => "q8_0",
        }
    }

    pub fn from_name(s: &str) -> Option<Quant> {
        Quant::ALL.into_iter().find(|q| q.name() == s)
    }
}

/// Decode a frame into RGB, whatever its format (YUYV is converted once per frame: the RGB is
/// kept in the frame for the seal stage, see [`Frame::rgb`]).
pub fn decode_rgb(frame: &Frame) -> Result<Arc<RgbImage>, DetectError> {
    frame.rgb().map_err(|e| DetectError::Decode {
        seq: frame.seq,
        format: frame.format,
        reason: e.to_string(),
    })
}

/// Placeholder analyser: decodes and finds nothing.
#[derive(Debug, Default)]
pub struct DecodeOnly;

impl Analyzer for DecodeOnly {
    fn analyze(&mut self, frame: &Frame) -> Result<Analysis, DetectError> {
        let img = decode_rgb(frame)?;
        Ok(Analysis {
            seq: frame.seq,
            width: img.width(),
            height: img.height(),
            faces: Vec::new(),
            models: Vec::new(),
        })
    }

    fn models(&self) -> Vec<ModelId> {
        Vec::new()
    }
}

/// `[detect]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Model set: `minifasnet` (default: BlazeFace + the PAD ensemble of `pad_model`), or, to run
    /// without presentation-attack detection (logged as a warning at every start; such frames
    /// are never judged `authentic`), `face` (face detection only) or `none` (decode only).
    pub model: String,
    /// Worker threads for inference.
    pub threads: usize,
    /// BlazeFace weights (safetensors). Empty: the copy built into the binary.
    pub face_model: PathBuf,
    /// Faces the detector scores below this are ignored.
    pub min_face_score: f32,
    /// Non-maximum suppression: `weighted` (MediaPipe) or `regular`.
    pub nms: face::NmsMode,
    /// Boxes overlapping more than this (IoU) are one face.
    pub nms_iou: f32,
    /// PAD weights: one path or a list (a MiniFASNet directory such as
    /// `../shared/models/upstream/minifasnet`, or Veriframe model files, scored as one ensemble).
    /// Empty (default): the shipped default pair ([`shipped_pad_files`], the upstream
    /// MiniFASNetV2 + V1SE pair, see `models/minifasnet.md`), built into the binary for Q8_0. A missing or unreadable file is a
    /// start-up error: the detector fails closed.
    #[serde(deserialize_with = "one_or_many_paths")]
    pub pad_model: Vec<PathBuf>,
    /// PAD weight precision (default `q8_0`: int8 kernels, see [`kernels::q8`]).
    pub quant: Quant,
    /// Per-image decision: a live score at or above this accepts the face as bona fide
    /// (`veriframe eval` reports APCER/BPCER/ACER here; the daemon smooths over time, see
    /// `[decide]`).
    pub live_threshold: f32,
    /// Deepfake-artefact classifier weights: an upstream Meso4 safetensors file (e.g.
    /// `../shared/models/upstream/mesonet/Meso4_DF.safetensors`, see docs/models.md). Empty
    /// (default): off. When set, the primary face also gets a `deepfake_score` and `[decide]`
    /// raises `deepfake_suspected` (thresholds: `[decide] deepfake_enter`/`deepfake_exit`); a missing or malformed file is a startup error.
    pub deepfake_model: PathBuf,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            model: "minifasnet".into(),
            threads: 1,
            face_model: PathBuf::new(),
            min_face_score: 0.6,
            nms: face::NmsMode::Weighted,
            nms_iou: 0.3,
            pad_model: Vec::new(),
            quant: Quant::Q8_0,
            live_threshold: 0.5,
            deepfake_model: PathBuf::new(),
        }
    }
}

/// Model sets `detect.model` accepts.
pub const MODEL_SETS: [&str; 3] = ["none", "face", "minifasnet"];

impl DetectConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.threads == 0 || self.threads > 64 {
            return Err(("detect.threads", "must be in 1..=64".into()));
        }
        if !MODEL_SETS.contains(&self.model.as_str()) {
            return Err((
                "detect.model",
                format!("unknown model set {:?} (one of {MODEL_SETS:?})", self.model),
            ));
        }
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(self.min_face_score) {
            return Err(("detect.min_face_score", "must be in 0..=1".into()));
        }
        if !(self.nms_iou > 0.0 && self.nms_iou < 1.0) {
            return Err(("detect.nms_iou", "must be in (0, 1)".into()));
        }
        if !unit(self.live_threshold) {
            return Err(("detect.live_threshold", "must be in 0..=1".into()));
        }
        if self.deepfake_enabled() && self.model == "none" {
            return Err((
                "detect.deepfake_model",
                "needs face detection (detect.model \"face\" or \"minifasnet\")".into(),
            ));
        }
        Ok(())
    }

    /// Whether the deepfake classifier is configured.
    pub fn deepfake_enabled(&self) -> bool {
        !self.deepfake_model.as_os_str().is_empty()
    }

    fn face_options(&self) -> face::BlazeFaceOptions {
        face::BlazeFaceOptions {
            min_score: self.min_face_score,
            iou_threshold: self.nms_iou,
            nms: self.nms,
        }
    }
}

/// Make candle use `threads` threads (it reads `RAYON_NUM_THREADS` on every op). Called before
/// the first inference.
fn set_threads(threads: usize) {
    let want = threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() != Some(want.as_str()) {
        // Set once at start-up, before the analysis thread runs any model.
        std::env::set_var("RAYON_NUM_THREADS", want);
    }
}

/// Where the Debian package installs the model files. The default Q8_0 pair is also compiled into
/// the binary ([`minifasnet::BUILTIN_Q8_0`]); the f32 pair is read from here.
pub const SHIPPED_MODEL_DIR: &str = "/usr/share/veriframe/models";

/// The shipped default PAD model set for a precision: the upstream MiniFASNetV2 + V1SE pair
/// (Apache-2.0, converted with `veriframe model convert`; provenance in `models/NOTICE`, figures
/// in `models/minifasnet.md`). Why it is the default: it is the best model measured on images no
/// Veriframe model was trained or tuned on (docs/models.md, "Which PAD model").
pub fn shipped_pad_files(quant: Quant) -> [&'static str; 2] {
    match quant {
        Quant::Q8_0 => ["minifasnet-v2.q8_0.gguf", "minifasnet-v1se.q8_0.gguf"],
        Quant::F32 => ["minifasnet-v2.f32.gguf", "minifasnet-v1se.f32.gguf"],
    }
}

/// Where the PAD weights of a configuration come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PadWeights {
    /// The default Q8_0 pair compiled into the binary.
    Builtin,
    /// Model files: `detect.pad_model`, or the shipped f32 pair.
    Files(Vec<PathBuf>),
}

/// The PAD weights of the configured model set: `Ok(None)` when the set has no PAD (`face`,
/// `none`: an explicit choice). Without `detect.pad_model`, the default pair: built in for
/// Q8_0, the Debian package's files for f32. An error names the file when a configured (or the
/// f32 default) model file is missing: the detector fails closed rather than running without PAD
/// unannounced.
pub fn pad_weights(cfg: &DetectConfig) -> Result<Option<PadWeights>, DetectError> {
    if cfg.model != "minifasnet" {
        return Ok(None);
    }
    if cfg.pad_model.is_empty() {
        if cfg.quant == Quant::Q8_0 {
            return Ok(Some(PadWeights::Builtin));
        }
        let files: Vec<PathBuf> = shipped_pad_files(cfg.quant)
            .iter()
            .map(|f| Path::new(SHIPPED_MODEL_DIR).join(f))
            .collect();
        if files.iter().all(|p| p.is_file()) {
            return Ok(Some(PadWeights::Files(files)));
        }
        return Err(DetectError::Model(format!(
            "shipped PAD model {} not found in {SHIPPED_MODEL_DIR} (set detect.pad_model to the \
             model files, or detect.model = \"face\" to run without presentation-attack detection)",
            shipped_pad_files(cfg.quant).join(" + "),
        )));
    }
    if let Some(missing) = cfg.pad_model.iter().find(|p| !p.exists()) {
        return Err(DetectError::Model(format!(
            "PAD model file {} not found (detect.pad_model)",
            missing.display()
        )));
    }
    Ok(Some(PadWeights::Files(cfg.pad_model.clone())))
}

/// Load the PAD classifier of the configured model set (see [`pad_weights`]).
pub fn load_pad_ensemble(
    cfg: &DetectConfig,
) -> Result<Option<minifasnet::MiniFasEnsemble>, DetectError> {
    let (shown, ens) = match pad_weights(cfg)? {
        None => return Ok(None),
        Some(PadWeights::Builtin) => (
            minifasnet::BUILTIN_Q8_0
                .iter()
                .map(|(name, _)| format!("built-in {name}"))
                .collect::<Vec<_>>(),
            minifasnet::builtin_ensemble(),
        ),
        Some(PadWeights::Files(paths)) => (
            paths.iter().map(|p| p.display().to_string()).collect(),
            minifasnet::load_ensemble(&paths, cfg.quant),
        ),
    };
    let ens =
        ens.map_err(|e| DetectError::Model(format!("PAD model {}: {e}", shown.join(", "))))?;
    tracing::info!(paths = ?shown, models = ?ens.models(), "PAD classifier loaded");
    Ok(Some(ens))
}

fn load_pad(cfg: &DetectConfig) -> Result<Option<Box<dyn PadClassifier>>, DetectError> {
    Ok(load_pad_ensemble(cfg)?.map(|e| Box::new(e) as Box<dyn PadClassifier>))
}

/// `pad_model` accepts one path or a list; `""` means the default (empty list).
fn one_or_many_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) if p.as_os_str().is_empty() => Vec::new(),
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// The configured face detector: `detect.face_model`, or the weights built into the binary.
pub fn load_face(cfg: &DetectConfig) -> Result<face::BlazeFace, DetectError> {
    let opts = cfg.face_options();
    if cfg.face_model.as_os_str().is_empty() {
        face::BlazeFace::builtin(opts)
    } else {
        face::BlazeFace::load(&cfg.face_model, opts)
    }
}

/// Load the deepfake classifier when `detect.deepfake_model` is set (an error when it cannot be
/// loaded: the operator asked for it).
fn load_deepfake(cfg: &DetectConfig) -> Result<Option<Box<dyn DeepfakeClassifier>>, DetectError> {
    if !cfg.deepfake_enabled() {
        return Ok(None);
    }
    let net = meso::Meso4::load(&cfg.deepfake_model)?;
    tracing::info!(path = %cfg.deepfake_model.display(), model = ?net.model_id(), "deepfake classifier loaded");
    Ok(Some(Box::new(net)))
}

/// Build the face detection + PAD pipeline of the configured model set (`None` for `none`).
pub fn build_pipeline(cfg: &DetectConfig) -> Result<Option<pipeline::Pipeline>, DetectError> {
    if cfg.model != "minifasnet" {
        // An explicit choice, said at every start: nothing judges liveness, so no frame can be
        // `authentic` (decide gives such frames `unknown`).
        tracing::warn!(
            model_set = %cfg.model,
            "presentation-attack detection DISABLED by configuration (detect.model = {:?}): \
             frames are never judged authentic",
            cfg.model
        );
    }
    if cfg.model == "none" {
        return Ok(None);
    }
    if !MODEL_SETS.contains(&cfg.model.as_str()) {
        return Err(DetectError::Model(format!(
            "unknown model set {:?}",
            cfg.model
        )));
    }
    set_threads(cfg.threads);
    let detector = load_face(cfg)?;
    let pad = load_pad(cfg)?;
    let p = pipeline::Pipeline::new(Box::new(detector), pad).with_deepfake(load_deepfake(cfg)?);
    tracing::info!(
        model_set = %cfg.model,
        models = ?p.models().iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        pad = p.has_pad(),
        deepfake = p.has_deepfake(),
        "detector ready"
    );
    Ok(Some(p))
}

/// Build the configured analyser.
pub fn build(cfg: &DetectConfig) -> Result<Box<dyn Analyzer>, DetectError> {
    Ok(match build_pipeline(cfg)? {
        None => Box::new(DecodeOnly),
        Some(p) => Box::new(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pad_model_is_a_startup_error_naming_the_file() {
        let cfg = DetectConfig {
            pad_model: vec![PathBuf::from("/nonexistent/minifasnet-v2.q8_0.gguf")],
            ..DetectConfig::default()
        };
        cfg.validate().unwrap();
        let e = build_pipeline(&cfg).err().expect("fails closed");
        assert!(
            e.to_string()
                .contains("/nonexistent/minifasnet-v2.q8_0.gguf"),
            "{e}"
        );
        // A file that exists but is not a model: an error too, naming it.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.gguf");
        std::fs::write(&junk, b"not a model").unwrap();
        let e = build_pipeline(&DetectConfig {
            pad_model: vec![junk.clone()],
            ..DetectConfig::default()
        })
        .err()
        .expect("fails closed");
        assert!(e.to_string().contains("junk.gguf"), "{e}");
    }

    #[test]
    fn defaults_load_the_shipped_pair_and_face_only_is_explicit() {
        let cfg = DetectConfig::default();
        assert_eq!(pad_weights(&cfg).unwrap(), Some(PadWeights::Builtin));
        let p = build_pipeline(&cfg).unwrap().unwrap();
        assert!(p.has_pad());
        assert!(!p.has_deepfake(), "deepfake classifier is off by default");
        let names: Vec<String> = p.models().iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            [
                "blazeface_short_range",
                "minifasnet_v2/q8_0",
                "minifasnet_v1se/q8_0"
            ]
        );
        let face_only = build_pipeline(&DetectConfig {
            model: "face".into(),
            ..cfg.clone()
        })
        .unwrap()
        .unwrap();
        assert!(!face_only.has_pad());
        assert!(build(&DetectConfig {
            model: "none".into(),
            ..cfg.clone()
        })
        .unwrap()
        .models()
        .is_empty());
    }

    /// The built-in pair is byte for byte the shipped files, so manifests name the same weight
    /// hashes whether the pair is read from the binary or from `models/`.
    #[test]
    fn the_built_in_pair_is_the_shipped_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut files = Vec::new();
        for (name, bytes) in minifasnet::BUILTIN_Q8_0 {
            let file = dir.join(name);
            assert!(std::fs::read(&file).unwrap() == bytes, "{name}");
            files.push(file);
        }
        let builtin = minifasnet::builtin_ensemble().unwrap();
        let read = minifasnet::load_ensemble(&files, Quant::Q8_0).unwrap();
        assert_eq!(builtin.models(), read.models());
        assert_eq!(builtin.models()[0].name, "minifasnet_v2/q8_0");
    }

    #[test]
    fn pad_model_takes_one_path_or_a_list() {
        let parse = |t: &str| toml::from_str::<DetectConfig>(t).unwrap().pad_model;
        assert!(parse("pad_model = \"\"").is_empty());
        assert_eq!(parse("pad_model = \"a.gguf\""), [PathBuf::from("a.gguf")]);
        assert_eq!(
            parse("pad_model = [\"a.gguf\", \"b.gguf\"]"),
            [PathBuf::from("a.gguf"), PathBuf::from("b.gguf")]
        );
        assert!(toml::from_str::<DetectConfig>("pad_model = 3").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |c: DetectConfig| c.validate().unwrap_err().0;
        let d = DetectConfig::default;
        assert_eq!(
            bad(DetectConfig {
                model: "x".into(),
                ..d()
            }),
            "detect.model"
        );
        assert_eq!(
            bad(DetectConfig {
                min_face_score: 2.0,
                ..d()
            }),
            "detect.min_face_score"
        );
        assert_eq!(
            bad(DetectConfig {
                nms_iou: 0.0,
                ..d()
            }),
            "detect.nms_iou"
        );
        assert_eq!(
            bad(DetectConfig {
                live_threshold: -1.0,
                ..d()
            }),
            "detect.live_threshold"
        );
        assert!(build(&DetectConfig {
            face_model: "/nonexistent.safetensors".into(),
            ..d()
        })
        .is_err());
        assert_eq!(
            bad(DetectConfig {
                model: "none".into(),
                deepfake_model: "x.safetensors".into(),
                ..d()
            }),
            "detect.deepfake_model"
        );
        // Enabled but missing: a startup error naming the file, not a silent downgrade.
        let e = build(&DetectConfig {
            model: "face".into(),
            deepfake_model: "/nonexistent/Meso4_DF.safetensors".into(),
            ..d()
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("Meso4_DF"), "{e}");
    }
}
