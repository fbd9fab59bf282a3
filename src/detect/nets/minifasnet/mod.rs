//! MiniFASNetV2 and MiniFASNetV1SE (Silent-Face-Anti-Spoofing, minivision-ai, commit b6d5f04,
//! `src/model_lib/MiniFASNet.py`) on candle, channels-last.
//!
//! Layout of both networks (80×80 input; channel counts are read from the weights):
//!
//! ```text
//! conv1      3×3 s2 conv + BN + PReLU                  80 -> 40
//! conv2_dw   3×3 depthwise + BN + PReLU                40
//! conv_23    Depth_Wise: 1×1(+PReLU) → dw3×3 s2(+PReLU) → 1×1 project (BN only)      -> 20
//! conv_3     Residual ×4 (s1, x + block(x)); V1SE: SE on the last block's output
//! conv_34    Depth_Wise s2                                                          -> 10
//! conv_4     Residual ×6 (V1SE: SE in the last)
//! conv_45    Depth_Wise s2                                                          -> 5
//! conv_5     Residual ×2 (V1SE: SE in the last)
//! conv_6_sep 1×1 + BN + PReLU (512)
//! conv_6_dw  5×5 depthwise, no padding + BN (-> 1×1)
//! linear     512 -> 128 (no bias) + BatchNorm1d;  prob 128 -> 3 (no bias)
//! ```
//!
//! SE (`SEModule`, reduction 4): `x · sigmoid(BN(fc2(relu(BN(fc1(mean(x)))))))`.
//!
//! Every batch norm (eps 1e-5) is folded into the preceding convolution at load/convert time,
//! giving "folded" tensors named after the upstream module: `<module>.weight`, `<module>.bias`,
//! `<module>.prelu`. Pointwise (1×1) convolutions and the linear layers run through candle's
//! [`QMatMul`] in f32 and through our own int8 kernel ([`q8`](crate::detect::kernels::q8),
//! runtime SIMD dispatch) in Q8_0; depthwise 3×3 layers through
//! [`dw3x3`](crate::detect::kernels::depthwise::dw3x3); the 3-channel stem through an im2col
//! matmul (f32). Activations are `(pixels, channels)` row-major.
//!
//! The conversion from upstream weights (folding, quantizing) is in `convert.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use image::RgbImage;

use crate::alert::ModelId;
use crate::detect::crop::crop_bgr;
use crate::detect::kernels::depthwise::{bias_prelu, dw3x3, Dw3x3, Padding};
use crate::detect::kernels::q8::{self, Q8Matrix};
use crate::detect::model::file::{self as modelfile, sha256_hex, ModelFile};
use crate::detect::{DetectError, Face, PadClassifier, Quant};

pub mod convert;

/// Input side length.
pub const INPUT: usize = 80;
/// Index of the "real" class in the 3-way output.
pub const REAL_CLASS: usize = 1;
/// Input convention recorded in model files.
pub const INPUT_CONVENTION: &str =
    "1x3x80x80 B,G,R raw 0-255, NCHW order of upstream; class 1 = real";

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    MiniFasNetV2,
    MiniFasNetV1Se,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::MiniFasNetV2, Arch::MiniFasNetV1Se];

    pub fn name(self) -> &'static str {
        match self {
            Arch::MiniFasNetV2 => "minifasnet_v2",
            Arch::MiniFasNetV1Se => "minifasnet_v1se",
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        match s {
            "minifasnet_v2" => Some(Arch::MiniFasNetV2),
            "minifasnet_v1se" => Some(Arch::MiniFasNetV1Se),
            _ => None,
        }
    }

    /// Upstream crop scale (`2.7_80x80_MiniFASNetV2`, `4_0_0_80x80_MiniFASNetV1SE`).
    pub fn crop_scale(self) -> f32 {
        match self {
            Arch::MiniFasNetV2 => 2.7,
            Arch::MiniFasNetV1Se => 4.0,
        }
    }
}

fn err(m: impl std::fmt::Display) -> DetectError {
    DetectError::Model(m.to_string())
}

/// Names of the Depth_Wise blocks in forward order, from the weight names.
fn block_names(has: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (single, stage) in [
        ("conv_23", "conv_3"),
        ("conv_34", "conv_4"),
        ("conv_45", "conv_5"),
    ] {
        out.push(single.to_string());
        let mut i = 0;
        while has(&format!("{stage}.model.{i}.conv.conv.weight"))
            || has(&format!("{stage}.model.{i}.conv.weight"))
        {
            out.push(format!("{stage}.model.{i}"));
            i += 1;
        }
    }
    out
}
/// Weights of a pointwise / linear layer: f32 through candle, Q8_0 through our own kernel.
#[derive(Debug)]
enum Mm {
    F32(QMatMul),
    Q8(Q8Matrix),
}

impl Mm {
    fn new(w: QTensor) -> Result<Self, DetectError> {
        if w.dtype() == GgmlDType::Q8_0 {
            let (n, k) = w.shape().dims2().map_err(err)?;
            Ok(Mm::Q8(Q8Matrix::from_q8_0(&w.data().map_err(err)?, n, k)?))
        } else {
            Ok(Mm::F32(QMatMul::from_qtensor(w).map_err(err)?))
        }
    }
}

/// A pointwise / linear layer: `y = x Wᵀ + b`, optional PReLU.
#[derive(Debug)]
struct Pw {
    mm: Mm,
    /// Input width the weight expects (padded to 32 for Q8_0).
    k: usize,
    n: usize,
    bias: Vec<f32>,
    alpha: Option<Vec<f32>>,
}

#[derive(Debug)]
struct Dw {
    weights: Vec<f32>,
    bias: Vec<f32>,
    alpha: Option<Vec<f32>>,
    c: usize,
    stride: usize,
}

#[derive(Debug)]
struct Se {
    fc1: Vec<f32>,
    b1: Vec<f32>,
    fc2: Vec<f32>,
    b2: Vec<f32>,
    r: usize,
}

#[derive(Debug)]
struct Block {
    expand: Pw,
    dw: Dw,
    project: Pw,
    se: Option<Se>,
    residual: bool,
}

/// One loaded network.
#[derive(Debug)]
pub struct MiniFasNet {
    arch: Arch,
    quant: Quant,
    crop_scale: f32,
    id: ModelId,
    conv1_w: Tensor,
    conv1_b: Vec<f32>,
    conv1_a: Vec<f32>,
    conv2_dw: Dw,
    blocks: Vec<Block>,
    sep: Pw,
    dw6_w: Vec<f32>,
    dw6_b: Vec<f32>,
    linear: Pw,
    prob: Pw,
}

fn vecf(t: &QTensor) -> Result<Vec<f32>, DetectError> {
    t.dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)
}

/// A model file's tensors, taken out by name as the network is assembled.
struct Tensors(BTreeMap<String, QTensor>);

impl Tensors {
    fn take(&mut self, name: &str) -> Result<QTensor, DetectError> {
        self.0
            .remove(name)
            .ok_or_else(|| err(format!("model file lacks tensor {name:?}")))
    }

    fn take_f32(&mut self, name: &str) -> Result<Vec<f32>, DetectError> {
        vecf(&self.take(name)?)
    }

    /// PReLU slopes `{p}.prelu`, when the layer has them.
    fn prelu(&mut self, p: &str, with_prelu: bool) -> Result<Option<Vec<f32>>, DetectError> {
        with_prelu
            .then(|| self.take_f32(&format!("{p}.prelu")))
            .transpose()
    }

    /// Depthwise layer `p`: weight (k·k, C), bias, optional PReLU.
    fn dw(&mut self, p: &str, stride: usize, with_prelu: bool) -> Result<Dw, DetectError> {
        let w = self.take(&format!("{p}.weight"))?;
        let (_, c) = w.shape().dims2().map_err(err)?;
        let bias = self.take_f32(&format!("{p}.bias"))?;
        let alpha = self.prelu(p, with_prelu)?;
        if bias.len() != c || alpha.as_ref().is_some_and(|a| a.len() != c) {
            return Err(err(format!("{p}: bias/prelu size")));
        }
        Ok(Dw {
            weights: vecf(&w)?,
            bias,
            alpha,
            c,
            stride,
        })
    }

    /// Pointwise (or linear) layer `p`: weight (N, K), bias (zeros without one), optional PReLU.
    fn pw(&mut self, p: &str, with_bias: bool, with_prelu: bool) -> Result<Pw, DetectError> {
        let w = self.take(&format!("{p}.weight"))?;
        let (n, k) = w.shape().dims2().map_err(err)?;
        let bias = if with_bias {
            self.take_f32(&format!("{p}.bias"))?
        } else {
            vec![0.0; n]
        };
        let alpha = self.prelu(p, with_prelu)?;
        if bias.len() != n || alpha.as_ref().is_some_and(|a| a.len() != n) {
            return Err(err(format!("{p}: bias/prelu size")));
        }
        Ok(Pw {
            mm: Mm::new(w)?,
            k,
            n,
            bias,
            alpha,
        })
    }
}

impl MiniFasNet {
    /// Build from a model file's folded tensors. `file_sha256` identifies the weights file.
    pub fn from_model_file(m: ModelFile, file_sha256: String) -> Result<Self, DetectError> {
        let arch = Arch::from_name(&m.arch)
            .ok_or_else(|| err(format!("unknown architecture {:?}", m.arch)))?;
        let mut t = Tensors(m.tensors);
        let conv1 = t.take("conv1.weight")?;
        let (o, k27) = conv1.shape().dims2().map_err(err)?;
        if k27 != 27 {
            return Err(err("conv1.weight must be (C, 27)"));
        }
        // Stored (O, 27); keep it transposed (27, O) for x(1600, 27) @ w.
        let conv1_w = conv1
            .dequantize(&Device::Cpu)
            .and_then(|w| w.t())
            .and_then(|w| w.contiguous())
            .map_err(err)?;
        let conv1_b = t.take_f32("conv1.bias")?;
        let conv1_a = t.take_f32("conv1.prelu")?;
        if conv1_b.len() != o || conv1_a.len() != o {
            return Err(err("conv1 bias/prelu size"));
        }
        let conv2_dw = t.dw("conv2_dw", 1, true)?;
        let conv6_dw = t.dw("conv_6_dw", 1, false)?;
        let sep = t.pw("conv_6_sep", true, true)?;
        let linear = t.pw("linear", true, false)?;
        let prob = t.pw("prob", false, false)?;

        let names: Vec<String> = t.0.keys().cloned().collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        let mut blocks = Vec::new();
        for blk in block_names(&has) {
            let residual = blk.contains(".model.");
            let stride = if residual { 1 } else { 2 };
            let expand = t.pw(&format!("{blk}.conv"), true, true)?;
            let project = t.pw(&format!("{blk}.project"), true, false)?;
            let p = format!("{blk}.conv_dw");
            let dw = t.dw(&p, stride, true)?;
            let c = dw.c;
            if dw.weights.len() != 9 * c {
                return Err(err(format!("{p}: only 3x3 depthwise supported")));
            }
            let se = if has(&format!("{blk}.se_module.fc1.weight")) {
                let fc1 = t.take(&format!("{blk}.se_module.fc1.weight"))?;
                let (r, cin) = fc1.shape().dims2().map_err(err)?;
                if cin != project.n {
                    return Err(err(format!("{blk}: SE size")));
                }
                Some(Se {
                    fc1: vecf(&fc1)?,
                    b1: t.take_f32(&format!("{blk}.se_module.fc1.bias"))?,
                    fc2: t.take_f32(&format!("{blk}.se_module.fc2.weight"))?,
                    b2: t.take_f32(&format!("{blk}.se_module.fc2.bias"))?,
                    r,
                })
            } else {
                None
            };
            if expand.n != c || project.k < c {
                return Err(err(format!("{blk}: channel sizes do not chain")));
            }
            blocks.push(Block {
                expand,
                dw,
                project,
                se,
                residual,
            });
        }
        if blocks.is_empty() {
            return Err(err("model file has no Depth_Wise blocks"));
        }
        if conv6_dw.weights.len() != 25 * conv6_dw.c || sep.n != conv6_dw.c || linear.k < conv6_dw.c
        {
            return Err(err(
                "conv_6 sizes do not chain (expected a 5x5 depthwise over 5x5)",
            ));
        }
        let name = format!("{}/{}", arch.name(), m.quant.name());
        Ok(Self {
            arch,
            quant: m.quant,
            crop_scale: m.crop_scale,
            id: ModelId {
                name,
                weights_sha256: file_sha256,
            },
            conv1_w,
            conv1_b,
            conv1_a,
            conv2_dw,
            blocks,
            sep,
            dw6_w: conv6_dw.weights,
            dw6_b: conv6_dw.bias,
            linear,
            prob,
        })
    }

    /// Load a `.gguf` model file or an upstream `.safetensors` state dict (folded and, for
    /// `Quant::Q8_0`, quantized in memory). A `.gguf` file keeps its own precision.
    pub fn load(path: &Path, quant: Quant) -> Result<Self, DetectError> {
        let bytes = std::fs::read(path)?;
        Self::from_bytes(&bytes, quant).map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// Load from the bytes of a model file (or upstream safetensors, converted to `quant`).
    pub fn from_bytes(bytes: &[u8], quant: Quant) -> Result<Self, DetectError> {
        let sha = sha256_hex(bytes);
        let m = if bytes.starts_with(b"GGUF") {
            modelfile::from_bytes(bytes)?
        } else {
            convert::convert(bytes, None, quant)?
        };
        Self::from_model_file(m, sha)
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn quant(&self) -> Quant {
        self.quant
    }

    pub fn crop_scale(&self) -> f32 {
        self.crop_scale
    }

    pub fn model_id(&self) -> ModelId {
        self.id.clone()
    }

    /// Logits for one 80×80 crop given as packed B,G,R bytes (row-major, 80·80·3).
    pub fn forward_bgr(&self, bgr: &[u8]) -> Result<[f32; 3], DetectError> {
        if bgr.len() != INPUT * INPUT * 3 {
            return Err(err(format!(
                "input must be {INPUT}x{INPUT}x3 bytes, got {}",
                bgr.len()
            )));
        }
        let f: Vec<f32> = bgr.iter().map(|&v| f32::from(v)).collect();
        self.forward_hwc(&f)
    }

    /// Logits for one 80×80×3 HWC f32 input (channel 0 = blue, values 0–255).
    pub fn forward_hwc(&self, x: &[f32]) -> Result<[f32; 3], DetectError> {
        let s = INPUT;
        if x.len() != s * s * 3 {
            return Err(err("input must be 80x80x3"));
        }
        // conv1: im2col (ho*wo, 27) @ (27, O).
        let (h, w) = (s.div_ceil(2), s.div_ceil(2));
        let mut col = vec![0f32; h * w * 27];
        for oy in 0..h {
            for ox in 0..w {
                let dst = &mut col[(oy * w + ox) * 27..(oy * w + ox + 1) * 27];
                for ky in 0..3 {
                    let iy = (oy * 2 + ky) as isize - 1;
                    if iy < 0 || iy >= s as isize {
                        continue;
                    }
                    for kx in 0..3 {
                        let ix = (ox * 2 + kx) as isize - 1;
                        if ix < 0 || ix >= s as isize {
                            continue;
                        }
                        let src = (iy as usize * s + ix as usize) * 3;
                        dst[(ky * 3 + kx) * 3..(ky * 3 + kx) * 3 + 3]
                            .copy_from_slice(&x[src..src + 3]);
                    }
                }
            }
        }
        let colt = Tensor::from_vec(col, (h * w, 27), &Device::Cpu).map_err(err)?;
        let y = colt.matmul(&self.conv1_w).map_err(err)?;
        let mut cur = to_vec(&y)?;
        let c1 = self.conv1_b.len();
        bias_prelu(&mut cur, c1, &self.conv1_b, Some(&self.conv1_a));

        // conv2_dw
        let (mut cur, mut h, mut w) = run_dw(&self.conv2_dw, &cur, h, w, self.conv2_dw.c)?;
        let mut c = self.conv2_dw.c;

        for b in &self.blocks {
            let e = run_pw(&b.expand, &cur, h * w, c)?;
            let (d, ho, wo) = run_dw(&b.dw, &e, h, w, b.project.k)?;
            let mut p = run_pw(&b.project, &d, ho * wo, b.project.k)?;
            if let Some(se) = &b.se {
                apply_se(se, &mut p, b.project.n);
            }
            if b.residual {
                if ho != h || wo != w || b.project.n != c {
                    return Err(err("residual shape mismatch"));
                }
                for (a, s) in p.iter_mut().zip(&cur) {
                    *a += s;
                }
            }
            cur = p;
            h = ho;
            w = wo;
            c = b.project.n;
        }
        let sep = run_pw(&self.sep, &cur, h * w, c)?;
        let c6 = self.sep.n;
        if h * w != 25 {
            return Err(err("conv_6_dw expects a 5x5 map"));
        }
        // conv_6_dw: 5×5 depthwise, no padding, on a 5×5 map -> one pixel.
        let mut v = self.dw6_b.clone();
        for p in 0..25 {
            let row = &sep[p * c6..(p + 1) * c6];
            let wr = &self.dw6_w[p * c6..(p + 1) * c6];
            for ((acc, &x), &wt) in v.iter_mut().zip(row).zip(wr) {
                *acc += x * wt;
            }
        }
        let e = run_pw(&self.linear, &v, 1, c6)?;
        let l = run_pw(&self.prob, &e, 1, self.linear.n)?;
        if l.len() != 3 {
            return Err(err("expected 3 classes"));
        }
        Ok([l[0], l[1], l[2]])
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, DetectError> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)
}

/// Pointwise layer over `(m, c)` rows; pads rows to the weight's `k` when needed.
fn run_pw(l: &Pw, x: &[f32], m: usize, c: usize) -> Result<Vec<f32>, DetectError> {
    let mm = match &l.mm {
        Mm::F32(mm) => mm,
        Mm::Q8(q) => {
            let mut y = vec![0f32; m * l.n];
            q8::gemm(q, x, m, c, &l.bias, l.alpha.as_deref(), &mut y)?;
            return Ok(y);
        }
    };
    let xin = if c == l.k {
        x.to_vec()
    } else {
        if c > l.k {
            return Err(err(format!(
                "pointwise input has {c} channels, weight {}",
                l.k
            )));
        }
        let mut v = vec![0f32; m * l.k];
        for r in 0..m {
            v[r * l.k..r * l.k + c].copy_from_slice(&x[r * c..(r + 1) * c]);
        }
        v
    };
    let t = Tensor::from_vec(xin, (m, l.k), &Device::Cpu).map_err(err)?;
    let y = mm.forward(&t).map_err(err)?;
    let mut y = to_vec(&y)?;
    bias_prelu(&mut y, l.n, &l.bias, l.alpha.as_deref());
    Ok(y)
}

fn run_dw(
    l: &Dw,
    x: &[f32],
    h: usize,
    w: usize,
    out_stride: usize,
) -> Result<(Vec<f32>, usize, usize), DetectError> {
    let p = Dw3x3 {
        h,
        w,
        c: l.c,
        stride: l.stride,
        padding: Padding::One,
        weights: &l.weights,
        bias: &l.bias,
        alpha: l.alpha.as_deref(),
        out_stride,
    };
    let (ho, wo) = p.out_hw();
    let mut out = vec![0f32; ho * wo * out_stride];
    dw3x3(&p, x, &mut out).map_err(err)?;
    Ok((out, ho, wo))
}

fn apply_se(se: &Se, x: &mut [f32], c: usize) {
    let px = x.len() / c;
    let mut mean = vec![0f32; c];
    for row in x.chunks_exact(c) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in &mut mean {
        *m /= px as f32;
    }
    let mut hid = se.b1.clone();
    for (j, hv) in hid.iter_mut().enumerate() {
        let wr = &se.fc1[j * c..(j + 1) * c];
        *hv += wr.iter().zip(&mean).map(|(a, b)| a * b).sum::<f32>();
        *hv = hv.max(0.0);
    }
    let mut gate = se.b2.clone();
    for (i, g) in gate.iter_mut().enumerate() {
        let wr = &se.fc2[i * se.r..(i + 1) * se.r];
        *g += wr.iter().zip(&hid).map(|(a, b)| a * b).sum::<f32>();
        *g = 1.0 / (1.0 + (-*g).exp());
    }
    for row in x.chunks_exact_mut(c) {
        for (v, g) in row.iter_mut().zip(&gate) {
            *v *= g;
        }
    }
}

/// Softmax of 3 logits.
pub fn softmax3(l: [f32; 3]) -> [f32; 3] {
    let m = l[0].max(l[1]).max(l[2]);
    let e = l.map(|v| (v - m).exp());
    let s = e[0] + e[1] + e[2];
    e.map(|v| v / s)
}

/// The MiniFASNet ensemble as a [`PadClassifier`]: the mean over its networks of the softmax
/// "real" probability, each network on its own crop (upstream: `(softmax_V2 + softmax_V1SE)[1] / 2`).
#[derive(Debug)]
pub struct MiniFasEnsemble {
    nets: Vec<MiniFasNet>,
}

impl MiniFasEnsemble {
    pub fn new(nets: Vec<MiniFasNet>) -> Result<Self, DetectError> {
        if nets.is_empty() {
            return Err(err("ensemble needs at least one network"));
        }
        Ok(Self { nets })
    }

    pub fn nets(&self) -> &[MiniFasNet] {
        &self.nets
    }

    /// Per-network logits for `face` in `img` (each on its own crop).
    pub fn logits(&self, img: &RgbImage, bbox: [f32; 4]) -> Result<Vec<[f32; 3]>, DetectError> {
        self.nets
            .iter()
            .map(|n| {
                let crop = crop_bgr(img, bbox, n.crop_scale(), INPUT, INPUT)?;
                n.forward_bgr(&crop)
            })
            .collect()
    }

    /// Ensemble live score for a face box.
    pub fn score(&self, img: &RgbImage, bbox: [f32; 4]) -> Result<f32, DetectError> {
        let l = self.logits(img, bbox)?;
        let sum: f32 = l.iter().map(|l| softmax3(*l)[REAL_CLASS]).sum();
        Ok(sum / l.len() as f32)
    }
}

impl PadClassifier for MiniFasEnsemble {
    fn live_score(&mut self, img: &RgbImage, face: &Face) -> Result<f32, DetectError> {
        self.score(img, face.bbox)
    }

    fn models(&self) -> Vec<ModelId> {
        self.nets.iter().map(|n| n.model_id()).collect()
    }
}

/// Load the ensemble from a directory or from explicit files (`.gguf` model files or upstream
/// `.safetensors`). In a directory, `.gguf` files are used when present, else `.safetensors`;
/// the networks are ordered V2 first. `quant` applies to `.safetensors` sources (folded and
/// quantized at load); `.gguf` files keep the precision they were converted with, and a mismatch
/// is an error.
/// The default PAD pair, compiled into the binary as BlazeFace is (so the binary runs on defaults
/// wherever it is copied): `(file name in models/, bytes)`, V2 first. The same bytes as the files,
/// so manifests name the same weight hashes.
pub const BUILTIN_Q8_0: [(&str, &[u8]); 2] = [
    (
        "minifasnet-v2.q8_0.gguf",
        include_bytes!("../../../../models/minifasnet-v2.q8_0.gguf"),
    ),
    (
        "minifasnet-v1se.q8_0.gguf",
        include_bytes!("../../../../models/minifasnet-v1se.q8_0.gguf"),
    ),
];

/// The built-in default pair ([`BUILTIN_Q8_0`]) as an ensemble.
pub fn builtin_ensemble() -> Result<MiniFasEnsemble, DetectError> {
    let nets = BUILTIN_Q8_0
        .iter()
        .map(|(name, bytes)| {
            MiniFasNet::from_bytes(bytes, Quant::Q8_0)
                .map_err(|e| err(format!("built-in {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    MiniFasEnsemble::new(nets)
}

pub fn load_ensemble<P: AsRef<Path>>(
    dir_or_files: &[P],
    quant: Quant,
) -> Result<MiniFasEnsemble, DetectError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in dir_or_files {
        let p = p.as_ref();
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            found.sort();
            let pick = |ext: &str| -> Vec<PathBuf> {
                found
                    .iter()
                    .filter(|f| f.extension().is_some_and(|e| e == ext))
                    .filter(|f| {
                        let n = f.to_string_lossy().to_lowercase();
                        n.contains("minifasnet")
                    })
                    .cloned()
                    .collect()
            };
            let g = pick("gguf");
            files.extend(if g.is_empty() { pick("safetensors") } else { g });
        } else {
            files.push(p.to_path_buf());
        }
    }
    if files.is_empty() {
        return Err(err("no MiniFASNet model files found"));
    }
    let mut nets = Vec::new();
    for f in &files {
        let n = MiniFasNet::load(f, quant)?;
        if n.quant() != quant {
            return Err(err(format!(
                "{} holds {} weights, {} requested",
                f.display(),
                n.quant().name(),
                quant.name()
            )));
        }
        nets.push(n);
    }
    nets.sort_by_key(|n| n.arch() != Arch::MiniFasNetV2);
    MiniFasEnsemble::new(nets)
}
