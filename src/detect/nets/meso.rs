//! Meso4 deepfake-artefact classifier (Afchar et al. 2018, DariusAf/MesoNet commit 2144d56,
//! `classifiers.py`, Apache-2.0), reading the upstream Keras weights converted to
//! safetensors (`../shared/models/upstream/mesonet/Meso4_{DF,F2F}.safetensors`; not shipped).
//!
//! Network (input 1×256×256×3 RGB / 255, Keras channels-last, run channels-last here too):
//!
//! ```text
//! conv2d_5  Conv 3×3 ( 3→ 8, same) + ReLU → batch_normalization_5 → MaxPool 2×2   256 → 128
//! conv2d_6  Conv 5×5 ( 8→ 8, same) + ReLU → batch_normalization_6 → MaxPool 2×2   128 →  64
//! conv2d_7  Conv 5×5 ( 8→16, same) + ReLU → batch_normalization_7 → MaxPool 2×2    64 →  32
//! conv2d_8  Conv 5×5 (16→16, same) + ReLU → batch_normalization_8 → MaxPool 4×4    32 →   8
//! Flatten in Keras (H, W, C) order → dense_3 (1024→16) → LeakyReLU(0.1) → dense_4 (16→1) → sigmoid
//! ```
//!
//! Batch norms (Keras epsilon 1e-3) follow the ReLU, so they are applied as a per-channel affine
//! rather than folded; dropout is the identity at inference. All pool sizes divide the feature
//! maps, so Keras `same` pooling adds no padding; the odd conv kernels pad (k−1)/2 on each side.
//! Kernels are stored HWIO `(kh, kw, in, out)`, which is the layout the convolutions take: each
//! runs one output row at a time through the pointwise kernel ([`pointwise`](crate::detect::kernels::pointwise), AVX2/NEON)
//! straight from a zero-padded input, with no im2col (candle's `conv2d` took 59 ms per face on
//! this machine, the kernel about a tenth of that; see docs/models.md).
//!
//! The sigmoid output is close to 1 for a **real** face; [`Meso4::deepfake_score`] returns
//! `P(deepfake) = 1 − sigmoid`.
//!
//! **Face crop** ([`face_crop_rgb`]): MesoNet was trained on aligned face crops with some margin
//! around the face. We take the detector's face box scaled by [`CROP_SCALE`] (1.3) around its
//! centre, with the same geometry as the PAD crops ([`new_box`](crate::detect::crop::new_box): the scale is limited
//! so the box fits the frame, then the box is shifted back inside the frame, not clipped, so it
//! keeps its aspect ratio), and resize it to 256×256 bilinearly ([`crop_bgr`](crate::detect::crop::crop_bgr)). Whole
//! images that already are face crops (the MesoNet samples) go through [`resize_nearest_rgb`]
//! instead, which is what Keras `load_img(target_size=(256, 256))` does upstream.
//!
//! Checked against an independent numpy forward pass (`tools/meso_golden.py`,
//! `tests/golden/meso4.json`) in `tests/meso_golden.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::alert::ModelId;
use crate::detect::crop::crop_bgr;
use crate::detect::kernels::pointwise::{pointwise, Isa, Pointwise};
use crate::detect::model::file::sha256_hex;
use crate::detect::{DeepfakeClassifier, DetectError, Face};

/// Input side length.
pub const INPUT: usize = 256;
/// Face box scale for the crop (see the module docs).
pub const CROP_SCALE: f32 = 1.3;
/// Keras `BatchNormalization` default epsilon.
const BN_EPS: f64 = 1e-3;
/// Conv layers: (Keras name, batch-norm name, kernel size, in, out, pool size).
const CONVS: [(&str, &str, usize, usize, usize, usize); 4] = [
    ("conv2d_5", "batch_normalization_5", 3, 3, 8, 2),
    ("conv2d_6", "batch_normalization_6", 5, 8, 8, 2),
    ("conv2d_7", "batch_normalization_7", 5, 8, 16, 2),
    ("conv2d_8", "batch_normalization_8", 5, 16, 16, 4),
];
/// Flattened features: 8×8×16.
const FLAT: usize = 1024;
const HIDDEN: usize = 16;
const LEAKY_SLOPE: f64 = 0.1;

/// Errors from loading or running Meso4.
#[derive(Debug, thiserror::Error)]
pub enum MesoError {
    #[error("cannot read Meso4 weights {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Meso4 weights {path}: not a safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("Meso4 weights {path}: missing tensor {name:?}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("Meso4 weights {path}: tensor {name:?} has shape {got:?}, expected {want:?}")]
    Shape {
        path: PathBuf,
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("Meso4 input: {0}")]
    Input(String),
    #[error("Meso4 face crop: {0}")]
    Crop(String),
    #[error("Meso4 inference: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<MesoError> for DetectError {
    fn from(e: MesoError) -> Self {
        DetectError::Model(e.to_string())
    }
}

struct ConvBlock {
    k: usize,
    cin: usize,
    cout: usize,
    /// HWIO as stored: rows `(ky, kx, ci)`, columns `co`: the layout [`pointwise`] takes.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// Batch norm as `x · scale + shift`.
    bn_scale: Vec<f32>,
    bn_shift: Vec<f32>,
    pool: usize,
}

/// The Meso4 network with its weights.
pub struct Meso4 {
    convs: Vec<ConvBlock>,
    /// (1024, 16), rows in Keras (H, W, C) flatten order.
    dense3_w: Vec<f32>,
    dense3_b: Vec<f32>,
    /// (16, 1).
    dense4_w: Vec<f32>,
    dense4_b: f32,
    isa: Isa,
    id: ModelId,
    /// Activations, kept between calls (about 4 MB that would otherwise be allocated, and
    /// page-faulted in, on every face).
    buf: Buffers,
}

/// Meso4's activation buffers (channels-last).
#[derive(Default)]
struct Buffers {
    /// A layer's input.
    x: Vec<f32>,
    /// Its zero-padded copy.
    padded: Vec<f32>,
    /// The conv output before pooling.
    y: Vec<f32>,
}

impl std::fmt::Debug for Meso4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meso4").field("id", &self.id).finish()
    }
}

impl Meso4 {
    /// Load upstream Meso4 weights (Keras layer names, HWIO kernels) from a safetensors file.
    pub fn load(path: &Path) -> Result<Self, MesoError> {
        let bytes = std::fs::read(path).map_err(|source| MesoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("meso4")
            .to_ascii_lowercase();
        Self::from_safetensors(&bytes, path, name)
    }

    /// Load from safetensors bytes; `path` and `name` are for errors and the [`ModelId`].
    pub fn from_safetensors(bytes: &[u8], path: &Path, name: String) -> Result<Self, MesoError> {
        let dev = Device::Cpu;
        let ts =
            candle_core::safetensors::load_buffer(bytes, &dev).map_err(|e| MesoError::Format {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let w = Weights { ts, path };
        let mut convs = Vec::with_capacity(CONVS.len());
        for (conv, bn, k, cin, cout, pool) in CONVS {
            let kernel = w.get(&format!("{conv}.{conv}.kernel"), &[k, k, cin, cout])?;
            let bias = w.get(&format!("{conv}.{conv}.bias"), &[cout])?;
            let gamma = w.get(&format!("{bn}.{bn}.gamma"), &[cout])?;
            let beta = w.get(&format!("{bn}.{bn}.beta"), &[cout])?;
            let mean = w.get(&format!("{bn}.{bn}.moving_mean"), &[cout])?;
            let var = w.get(&format!("{bn}.{bn}.moving_variance"), &[cout])?;
            // scale = γ / √(var + ε), shift = β − mean · scale, computed in f64.
            let (g, b, m, v) = (vec1(&gamma)?, vec1(&beta)?, vec1(&mean)?, vec1(&var)?);
            let mut scale = Vec::with_capacity(cout);
            let mut shift = Vec::with_capacity(cout);
            for i in 0..cout {
                let s = f64::from(g[i]) / (f64::from(v[i]) + BN_EPS).sqrt();
                scale.push(s as f32);
                shift.push((f64::from(b[i]) - f64::from(m[i]) * s) as f32);
            }
            convs.push(ConvBlock {
                k,
                cin,
                cout,
                weight: vec1(&kernel)?,
                bias: vec1(&bias)?,
                bn_scale: scale,
                bn_shift: shift,
                pool,
            });
        }
        let dense3_w = vec1(&w.get("dense_3.dense_3.kernel", &[FLAT, HIDDEN])?)?;
        let dense3_b = vec1(&w.get("dense_3.dense_3.bias", &[HIDDEN])?)?;
        let dense4_w = vec1(&w.get("dense_4.dense_4.kernel", &[HIDDEN, 1])?)?;
        let dense4_b = vec1(&w.get("dense_4.dense_4.bias", &[1])?)?[0];
        Ok(Self {
            convs,
            dense3_w,
            dense3_b,
            dense4_w,
            dense4_b,
            isa: Isa::detect(),
            id: ModelId {
                name,
                weights_sha256: sha256_hex(bytes),
            },
            buf: Buffers::default(),
        })
    }

    pub fn model_id(&self) -> ModelId {
        self.id.clone()
    }

    /// The pre-sigmoid output for one 256×256 RGB input, packed row-major (H, W, C) with values
    /// in 0..1 (pixels / 255). Positive = real.
    pub fn logit(&mut self, rgb: &[f32]) -> Result<f32, MesoError> {
        check_len(rgb.len())?;
        if let Some(i) = rgb.iter().position(|v| !v.is_finite()) {
            return Err(MesoError::Input(format!("non-finite value at index {i}")));
        }
        self.buf.x.clear();
        self.buf.x.extend_from_slice(rgb);
        self.forward()
    }

    /// [`Meso4::logit`] of the input already in `self.buf.x` (checked by the caller).
    fn forward(&mut self) -> Result<f32, MesoError> {
        // Channels-last throughout. Each conv runs one output row at a time through the
        // pointwise kernel straight from a zero-padded copy of its input (a k×k window is k runs
        // of k·cin values, one padded row apart), then ReLU (fused), batch norm and max-pool
        // write the next layer's padded input.
        let Buffers { x, padded, y } = &mut self.buf;
        let mut side = INPUT;
        for c in &self.convs {
            let p = (c.k - 1) / 2;
            let ps = side + 2 * p;
            padded.clear();
            padded.resize(ps * ps * c.cin, 0.0);
            for (r, row) in x.chunks_exact(side * c.cin).enumerate() {
                let at = ((r + p) * ps + p) * c.cin;
                padded[at..at + side * c.cin].copy_from_slice(row);
            }
            y.clear();
            y.resize(side * side * c.cout, 0.0);
            let conv = Pointwise {
                rows: side,
                k: c.k * c.k * c.cin,
                a_stride: c.cin,
                segments: c.k,
                segment_stride: ps * c.cin,
                n: c.cout,
                weights: &c.weight,
                bias: &c.bias,
                residual: None,
                relu: true,
            };
            for (oy, out) in y.chunks_exact_mut(side * c.cout).enumerate() {
                pointwise(self.isa, &conv, &padded[oy * ps * c.cin..], out)
                    .map_err(MesoError::Input)?;
            }
            for px in y.chunks_exact_mut(c.cout) {
                for ((v, &s), &t) in px.iter_mut().zip(&c.bn_scale).zip(&c.bn_shift) {
                    *v = *v * s + t;
                }
            }
            let os = side / c.pool;
            x.clear();
            x.resize(os * os * c.cout, f32::NEG_INFINITY);
            for (iy, row) in y.chunks_exact(side * c.cout).enumerate() {
                let orow = &mut x[(iy / c.pool) * os * c.cout..][..os * c.cout];
                for (ix, px) in row.chunks_exact(c.cout).enumerate() {
                    let o = &mut orow[(ix / c.pool) * c.cout..][..c.cout];
                    for (o, &v) in o.iter_mut().zip(px) {
                        *o = o.max(v);
                    }
                }
            }
            side = os;
        }
        // `x` is 8×8×16 in Keras (H, W, C) flatten order.
        let mut h = self.dense3_b.clone();
        for (&v, w) in x.iter().zip(self.dense3_w.chunks_exact(HIDDEN)) {
            for (h, &w) in h.iter_mut().zip(w) {
                *h += v * w;
            }
        }
        let logit = h
            .iter()
            .map(|&v| if v < 0.0 { v * LEAKY_SLOPE as f32 } else { v })
            .zip(&self.dense4_w)
            .fold(self.dense4_b, |acc, (v, &w)| acc + v * w);
        if !logit.is_finite() {
            return Err(MesoError::Input("network output is not finite".into()));
        }
        Ok(logit)
    }

    /// P(real): the upstream sigmoid output.
    pub fn real_prob(&mut self, rgb: &[f32]) -> Result<f32, MesoError> {
        Ok(sigmoid(self.logit(rgb)?))
    }

    /// P(deepfake) = 1 − P(real) for a 256×256 RGB u8 image, packed (H, W, C).
    pub fn deepfake_score_u8(&mut self, rgb: &[u8]) -> Result<f32, MesoError> {
        check_len(rgb.len())?;
        // Straight into the input buffer (bytes are always finite).
        self.buf.x.clear();
        self.buf.x.extend(rgb.iter().map(|&p| f32::from(p) / 255.0));
        Ok(1.0 - sigmoid(self.forward()?))
    }

    /// P(deepfake) of `face` in `img`, through [`face_crop_rgb`].
    pub fn deepfake_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, MesoError> {
        self.deepfake_score_u8(&face_crop_rgb(img, face.bbox)?)
    }
}

impl DeepfakeClassifier for Meso4 {
    fn deepfake_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, DetectError> {
        Ok(Meso4::deepfake_score(self, img, face)?)
    }

    fn model(&self) -> ModelId {
        self.model_id()
    }
}

/// An input must be 256×256×3 values.
fn check_len(len: usize) -> Result<(), MesoError> {
    let n = INPUT * INPUT * 3;
    if len != n {
        return Err(MesoError::Input(format!(
            "expected {INPUT}×{INPUT}×3 = {n} values, got {len}"
        )));
    }
    Ok(())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// All values of `t`, row-major.
fn vec1(t: &Tensor) -> Result<Vec<f32>, MesoError> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

struct Weights<'a> {
    ts: HashMap<String, Tensor>,
    path: &'a Path,
}

impl Weights<'_> {
    /// The f32 tensor `name`, which must have shape `want`.
    fn get(&self, name: &str, want: &[usize]) -> Result<Tensor, MesoError> {
        let t = self.ts.get(name).ok_or_else(|| MesoError::MissingTensor {
            path: self.path.to_path_buf(),
            name: name.into(),
        })?;
        if t.dims() != want {
            return Err(MesoError::Shape {
                path: self.path.to_path_buf(),
                name: name.into(),
                got: t.dims().to_vec(),
                want: want.to_vec(),
            });
        }
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// The network input for `bbox` (x, y, w, h) in `img`: the box scaled by [`CROP_SCALE`] around its
/// centre (fitted and shifted inside the frame, see the module docs), resized bilinearly to
/// 256×256; packed R, G, B.
pub fn face_crop_rgb(img: &RgbImage, bbox: [f32; 4]) -> Result<Vec<u8>, MesoError> {
    let bgr = crop_bgr(img, bbox, CROP_SCALE, INPUT, INPUT)
        .map_err(|e| MesoError::Crop(e.to_string()))?;
    Ok(bgr
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect())
}

/// Resize a whole image to 256×256 by nearest neighbour, source index `⌊(i + ½)·src / 256⌋`
/// (PIL `NEAREST`, Keras `load_img`'s default); packed R, G, B. For inputs that already are face
/// crops, e.g. the MesoNet sample frames.
pub fn resize_nearest_rgb(img: &RgbImage) -> Result<Vec<u8>, MesoError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(MesoError::Input("empty image".into()));
    }
    let idx = |i: usize, src: usize| (((2 * i + 1) * src) / (2 * INPUT)).min(src - 1);
    let raw = img.as_raw();
    let mut out = Vec::with_capacity(INPUT * INPUT * 3);
    for y in 0..INPUT {
        let sy = idx(y, h);
        for x in 0..INPUT {
            let sx = idx(x, w);
            let o = (sy * w + sx) * 3;
            out.extend_from_slice(&raw[o..o + 3]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Map;

    /// A synthetic Meso4 state dict with the upstream names (small deterministic values).
    fn synthetic(skip: Option<&str>, reshape: Option<(&str, Vec<usize>)>) -> Vec<u8> {
        let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
        for (conv, bn, k, cin, cout, _) in CONVS {
            shapes.push((format!("{conv}.{conv}.kernel"), vec![k, k, cin, cout]));
            shapes.push((format!("{conv}.{conv}.bias"), vec![cout]));
            for p in ["gamma", "beta", "moving_mean", "moving_variance"] {
                shapes.push((format!("{bn}.{bn}.{p}"), vec![cout]));
            }
        }
        shapes.push(("dense_3.dense_3.kernel".into(), vec![FLAT, HIDDEN]));
        shapes.push(("dense_3.dense_3.bias".into(), vec![HIDDEN]));
        shapes.push(("dense_4.dense_4.kernel".into(), vec![HIDDEN, 1]));
        shapes.push(("dense_4.dense_4.bias".into(), vec![1]));
        let mut m = Map::new();
        for (name, mut shape) in shapes {
            if skip == Some(name.as_str()) {
                continue;
            }
            if let Some((n, s)) = &reshape {
                if *n == name {
                    shape = s.clone();
                }
            }
            let n: usize = shape.iter().product();
            let pos = name.ends_with("variance") || name.ends_with("gamma");
            let v: Vec<f32> = (0..n)
                .map(|i| {
                    let s = ((i * 37 + name.len() * 11) % 23) as f32 / 23.0;
                    if pos {
                        0.5 + s
                    } else {
                        s - 0.5
                    }
                })
                .collect();
            m.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        candle_core::safetensors::save(&m, &p).unwrap();
        std::fs::read(&p).unwrap()
    }

    fn load(bytes: &[u8]) -> Result<Meso4, MesoError> {
        Meso4::from_safetensors(bytes, Path::new("test.safetensors"), "meso4_test".into())
    }

    #[test]
    fn synthetic_weights_run_and_give_probabilities() {
        let mut net = load(&synthetic(None, None)).unwrap();
        let img = RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 77]));
        let face = Face {
            bbox: [100.0, 60.0, 90.0, 110.0],
            score: 0.9,
            landmarks: vec![],
            live_score: None,
            deepfake_score: None,
        };
        let s = net.deepfake_score(&img, &face).unwrap();
        assert!((0.0..=1.0).contains(&s), "{s}");
        // Deterministic.
        assert_eq!(s, net.deepfake_score(&img, &face).unwrap());
        assert_eq!(net.model_id().name, "meso4_test");
        assert_eq!(net.model_id().weights_sha256.len(), 64);
    }

    #[test]
    fn missing_or_misshapen_tensors_are_named() {
        let e = load(&synthetic(Some("conv2d_7.conv2d_7.kernel"), None)).unwrap_err();
        assert!(
            matches!(&e, MesoError::MissingTensor { name, .. } if name == "conv2d_7.conv2d_7.kernel"),
            "{e}"
        );
        let e = load(&synthetic(
            None,
            Some(("dense_3.dense_3.kernel", vec![16, 1024])),
        ))
        .unwrap_err();
        assert!(
            matches!(&e, MesoError::Shape { got, .. } if got == &[16, 1024]),
            "{e}"
        );
        assert!(e.to_string().contains("dense_3.dense_3.kernel"));
        assert!(matches!(
            load(b"not safetensors").unwrap_err(),
            MesoError::Format { .. }
        ));
        assert!(matches!(
            Meso4::load(Path::new("/nonexistent/meso4.safetensors")).unwrap_err(),
            MesoError::Io { .. }
        ));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut net = load(&synthetic(None, None)).unwrap();
        assert!(matches!(net.logit(&[0.5; 12]), Err(MesoError::Input(_))));
        let mut x = vec![0.5f32; INPUT * INPUT * 3];
        x[7] = f32::NAN;
        assert!(matches!(net.logit(&x), Err(MesoError::Input(_))));
        let img = RgbImage::new(64, 64);
        assert!(matches!(
            face_crop_rgb(&img, [10.0, 10.0, 0.0, 5.0]),
            Err(MesoError::Crop(_))
        ));
        assert!(face_crop_rgb(&RgbImage::new(1, 1), [0.0, 0.0, 1.0, 1.0]).is_err());
        assert!(resize_nearest_rgb(&RgbImage::new(0, 0)).is_err());
    }

    #[test]
    fn crop_is_the_scaled_box_and_nearest_resize_matches_pil() {
        // A 512×512 image whose pixel encodes its coordinates: nearest 256 picks odd pixels.
        let img = RgbImage::from_fn(512, 512, |x, y| {
            image::Rgb([(x / 2) as u8, (y / 2) as u8, 0])
        });
        let r = resize_nearest_rgb(&img).unwrap();
        assert_eq!(r.len(), INPUT * INPUT * 3);
        assert_eq!(&r[..3], &[0, 0, 0]);
        let last = (255 * INPUT + 255) * 3;
        assert_eq!(&r[last..last + 3], &[255, 255, 0]);
        // A 200-px face box in the middle: the crop covers 260 px around its centre.
        let img = RgbImage::from_fn(640, 480, |x, _| image::Rgb([(x % 256) as u8, 0, 9]));
        let c = face_crop_rgb(&img, [220.0, 140.0, 200.0, 200.0]).unwrap();
        assert_eq!(c.len(), INPUT * INPUT * 3);
        assert_eq!(c[2], 9, "R, G, B order");
        // Left edge of the crop is x = 320 − 130 = 190.
        assert!((i32::from(c[0]) - 190).abs() <= 1, "{}", c[0]);
    }
}
