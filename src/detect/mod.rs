//! Analysis of one frame: decode, face detection, presentation-attack detection (PAD).
//!
//! The seam is [`Analyzer`]. Until the quantized candle detector lands, [`DecodeOnly`] decodes the
//! frame (so corrupt frames surface here) and reports no faces.

pub mod cli;
pub mod crop;
pub mod kernels;
pub mod minifasnet;
pub mod modelfile;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::capture::{convert, Frame, PixelFormat};

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
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// Which model produced a result: name plus SHA-256 of its weights file. Cited in manifests and
/// alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    pub name: String,
    pub weights_sha256: String,
}

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

/// Weight precision of a model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    F32,
    #[value(name = "q8_0")]
    #[serde(rename = "q8_0")]
    Q8_0,
}

/// Decode a frame into RGB, whatever its format.
pub fn decode_rgb(frame: &Frame) -> Result<RgbImage, DetectError> {
    let err = |reason: String| DetectError::Decode {
        seq: frame.seq,
        format: frame.format,
        reason,
    };
    match frame.format {
        PixelFormat::Jpeg | PixelFormat::Png => {
            let fmt = if frame.format == PixelFormat::Jpeg {
                image::ImageFormat::Jpeg
            } else {
                image::ImageFormat::Png
            };
            image::load_from_memory_with_format(&frame.bytes, fmt)
                .map(|i| i.to_rgb8())
                .map_err(|e| err(e.to_string()))
        }
        PixelFormat::Yuyv => {
            let rgb = convert::yuyv_to_rgb(&frame.bytes, frame.width, frame.height)
                .map_err(|e| err(e.to_string()))?;
            RgbImage::from_raw(frame.width, frame.height, rgb)
                .ok_or_else(|| err("size mismatch".into()))
        }
        PixelFormat::Rgb24 => RgbImage::from_raw(frame.width, frame.height, frame.bytes.to_vec())
            .ok_or_else(|| err("RGB buffer size does not match width×height×3".into())),
    }
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
    /// `none` (decode only) until the detector lands.
    pub model: String,
    /// Worker threads for inference.
    pub threads: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            model: "none".into(),
            threads: 1,
        }
    }
}

impl DetectConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.threads == 0 || self.threads > 64 {
            return Err(("detect.threads", "must be in 1..=64".into()));
        }
        Ok(())
    }
}

/// Build the configured analyser.
pub fn build(cfg: &DetectConfig) -> Result<Box<dyn Analyzer>, DetectError> {
    match cfg.model.as_str() {
        "none" => Ok(Box::new(DecodeOnly)),
        other => Err(DetectError::Model(format!("unknown model set {other:?}"))),
    }
}
