//! Hand-written CPU kernels for the detector networks, channels-last (NHWC, one image).
//!
//! candle runs a grouped convolution as one small convolution per group, which is slow for
//! depthwise layers (one group per channel). [`dw3x3`] computes a 3×3 depthwise convolution
//! (stride 1 or 2; PyTorch padding 1 or TensorFlow "SAME") directly, fused with the folded
//! batch-norm bias and an optional PReLU. Channels are contiguous, so each tap is a vector
//! multiply-add across channels. Output pixels whose 9 taps all lie inside the input (all but
//! the border) take a fixed-offset path with no bounds checks; border pixels list their valid
//! taps. The vector code is [`pointwise`](super::pointwise)'s, picked at run time:
//!
//! * x86_64: AVX2 + FMA when the CPU has them, else the scalar loop (which the compiler
//!   vectorises with SSE2);
//! * aarch64: NEON (ARMv8.0 ASIMD `fmla` only — no dot-product instructions, so it runs on a
//!   Raspberry Pi 4's Cortex-A72);
//! * elsewhere: the scalar loop.
//!
//! [`DepthwiseConv3x3`] wraps the kernel as a candle [`CustomOp1`] over an `(H, W, C)` tensor.

// The vector code below is compiled for x86_64 (AVX2) and aarch64 (NEON) only; other targets
// (armv7) run the scalar loops and leave it unused.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

use super::pointwise::{Isa, Simd};

/// Where the 3×3 window sits relative to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// One pixel of zeros on every side (PyTorch `padding=1`); output `(h - 1) / stride + 1`.
    One,
    /// TensorFlow "SAME": output `ceil(h / stride)`, the total padding split with the smaller
    /// half before (stride 2 on an even size: none before, one after).
    TfSame,
}

/// Parameters of one depthwise 3×3 layer.
#[derive(Debug, Clone, Copy)]
pub struct Dw3x3<'a> {
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Channels (the input's channel stride is exactly `c`).
    pub c: usize,
    /// 1 or 2.
    pub stride: usize,
    pub padding: Padding,
    /// Weights, tap-major: `weights[(ky * 3 + kx) * c + ch]`.
    pub weights: &'a [f32],
    /// Per-channel bias (`c`).
    pub bias: &'a [f32],
    /// Per-channel PReLU slope (`c`), if the layer has one.
    pub alpha: Option<&'a [f32]>,
    /// Channel stride of the output (`>= c`); channels `c..out_stride` are written as zero.
    pub out_stride: usize,
}

/// Errors are shape mismatches, reported as text (callers map them into their own error type).
pub type KernelResult<T> = Result<T, String>;

impl Dw3x3<'_> {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        match self.padding {
            Padding::One => ((self.h + 2 - 3) / s + 1, (self.w + 2 - 3) / s + 1),
            Padding::TfSame => (self.h.div_ceil(s), self.w.div_ceil(s)),
        }
    }

    /// Padding before the first row and column.
    fn pad_before(&self) -> (usize, usize) {
        match self.padding {
            Padding::One => (1, 1),
            Padding::TfSame => {
                let (ho, wo) = self.out_hw();
                let before = |i: usize, o: usize| ((o - 1) * self.stride + 3).saturating_sub(i) / 2;
                (before(self.h, ho), before(self.w, wo))
            }
        }
    }

    fn check(&self, input: &[f32], out: &[f32], rows: &Range<usize>) -> KernelResult<()> {
        if self.stride != 1 && self.stride != 2 {
            return Err(format!("dw3x3: stride {} not supported", self.stride));
        }
        if self.h == 0 || self.w == 0 || self.c == 0 {
            return Err("dw3x3: empty input".into());
        }
        let (ho, wo) = self.out_hw();
        if input.len() != self.h * self.w * self.c {
            return Err(format!(
                "dw3x3: input has {} values, expected {}x{}x{}",
                input.len(),
                self.h,
                self.w,
                self.c
            ));
        }
        if self.weights.len() != 9 * self.c || self.bias.len() != self.c {
            return Err("dw3x3: weights/bias length mismatch".into());
        }
        if self.alpha.is_some_and(|a| a.len() != self.c) {
            return Err("dw3x3: PReLU length mismatch".into());
        }
        if rows.start > rows.end || rows.end > ho {
            return Err(format!("dw3x3: output rows {rows:?} outside 0..{ho}"));
        }
        if self.out_stride < self.c || out.len() != rows.len() * wo * self.out_stride {
            return Err(format!(
                "dw3x3: output has {} values, expected {}x{wo}x{}",
                out.len(),
                rows.len(),
                self.out_stride
            ));
        }
        Ok(())
    }
}

/// Depthwise 3×3 convolution, NHWC, fused bias + optional PReLU.
pub fn dw3x3(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) -> KernelResult<()> {
    dw3x3_rows(p, input, 0..p.out_hw().0, out)
}

/// Output rows `rows` of [`dw3x3`] only, into `out` (those rows' values), so a caller can
/// run the next layer on a band of rows while it is still in cache.
pub fn dw3x3_rows(
    p: &Dw3x3<'_>,
    input: &[f32],
    rows: Range<usize>,
    out: &mut [f32],
) -> KernelResult<()> {
    p.check(input, out, &rows)?;
    match Isa::detect() {
        Isa::Scalar => scalar_rows(p, input, rows, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` means the CPU has AVX2 and FMA; shapes were checked.
        Isa::Avx2 => unsafe { dw3x3_avx2(p, input, rows, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is mandatory on aarch64; shapes were checked.
        Isa::Neon => unsafe { dw_simd::<super::pointwise::neon::Neon>(p, input, rows, out) },
    }
    Ok(())
}

/// # Safety
/// The CPU has AVX2 and FMA; `p` was checked against `input`, `rows` and `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw3x3_avx2(p: &Dw3x3<'_>, input: &[f32], rows: Range<usize>, out: &mut [f32]) {
    dw_simd::<super::pointwise::avx2::Avx2>(p, input, rows, out)
}

/// The valid taps of output pixel (oy, ox): (input pixel index, tap index), at most 9.
#[inline(always)]
fn taps(p: &Dw3x3<'_>, oy: usize, ox: usize, buf: &mut [(usize, usize); 9]) -> usize {
    let (py, px) = p.pad_before();
    let mut n = 0;
    let iy0 = (oy * p.stride) as isize - py as isize;
    let ix0 = (ox * p.stride) as isize - px as isize;
    for ky in 0..3 {
        let iy = iy0 + ky as isize;
        if iy < 0 || iy >= p.h as isize {
            continue;
        }
        for kx in 0..3 {
            let ix = ix0 + kx as isize;
            if ix < 0 || ix >= p.w as isize {
                continue;
            }
            buf[n] = (iy as usize * p.w + ix as usize, ky * 3 + kx);
            n += 1;
        }
    }
    n
}

/// Portable reference implementation (whole output; the shapes are not checked).
pub fn dw3x3_scalar(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) {
    scalar_rows(p, input, 0..p.out_hw().0, out)
}

fn scalar_rows(p: &Dw3x3<'_>, input: &[f32], rows: Range<usize>, out: &mut [f32]) {
    let wo = p.out_hw().1;
    let mut tb = [(0usize, 0usize); 9];
    for (i, oy) in rows.enumerate() {
        for ox in 0..wo {
            let nt = taps(p, oy, ox, &mut tb);
            let at = (i * wo + ox) * p.out_stride;
            scalar_channels(p, input, &tb[..nt], 0, &mut out[at..at + p.out_stride]);
        }
    }
}

/// Channels `from..c` of one output pixel, plus the zero padding `c..out_stride`.
#[inline(always)]
fn scalar_channels(
    p: &Dw3x3<'_>,
    input: &[f32],
    taps: &[(usize, usize)],
    from: usize,
    o: &mut [f32],
) {
    let c = p.c;
    for ch in from..c {
        let mut acc = p.bias[ch];
        for &(pix, t) in taps {
            acc += input[pix * c + ch] * p.weights[t * c + ch];
        }
        if let Some(a) = p.alpha {
            if acc < 0.0 {
                acc *= a[ch];
            }
        }
        o[ch] = acc;
    }
    for v in &mut o[c..] {
        *v = 0.0;
    }
}

/// PReLU (when the layer has one) on channels `ch..ch + W`.
///
/// # Safety
/// `ch + W <= p.c` and the CPU runs `S`.
#[inline(always)]
unsafe fn prelu<S: Simd>(p: &Dw3x3<'_>, acc: S::V, ch: usize) -> S::V {
    match p.alpha {
        Some(a) => {
            let zero = S::zero();
            S::fma(
                S::max(acc, zero),
                S::min(acc, zero),
                S::load(a.as_ptr().add(ch)),
            )
        }
        None => acc,
    }
}

/// One output pixel through the list of its valid taps (and its zero padding), written at
/// pixel index `at` of `out`.
///
/// # Safety
/// `p` was checked against `input` and `out`, and the CPU runs `S`.
#[inline(always)]
unsafe fn dw_pixel<S: Simd>(
    p: &Dw3x3<'_>,
    input: &[f32],
    out: &mut [f32],
    (oy, ox): (usize, usize),
    at: usize,
) {
    let mut tb = [(0usize, 0usize); 9];
    let nt = taps(p, oy, ox, &mut tb);
    let tl = &tb[..nt];
    let c = p.c;
    let (ip, wp) = (input.as_ptr(), p.weights.as_ptr());
    let base = at * p.out_stride;
    let o = &mut out[base..base + p.out_stride];
    let op = o.as_mut_ptr();
    if c < S::W {
        scalar_channels(p, input, tl, 0, o);
        return;
    }
    for ch in vector_starts::<S>(c) {
        let mut acc = S::load(p.bias.as_ptr().add(ch));
        for &(pix, t) in tl {
            acc = S::fma(
                acc,
                S::load(ip.add(pix * c + ch)),
                S::load(wp.add(t * c + ch)),
            );
        }
        S::store(op.add(ch), prelu::<S>(p, acc, ch));
    }
    o[c..].fill(0.0);
}

/// Where the channel vectors start: every `W` channels, and when `W` does not divide `c`, one
/// more that ends at `c` (overlapping the previous one: those channels are computed twice, to
/// the same values), so no channel is left to a scalar loop. Needs `c >= W`.
#[inline(always)]
fn vector_starts<S: Simd>(c: usize) -> impl Iterator<Item = usize> {
    let full = c - c % S::W;
    (0..full)
        .step_by(S::W)
        .chain((full < c).then_some(c - S::W))
}

/// The vector kernel, [`Simd::W`] channels at a time. Border pixels go through
/// [`dw_pixel`]. Along an output row, the pixels whose whole window lies inside the input are
/// done one channel vector at a time across the row, with that vector's 9 weights held in
/// registers (the row's three input rows stay in L1 between the channel passes).
///
/// Helpers are `#[inline(always)]` functions, not closures: a closure is compiled without the
/// caller's `#[target_feature]`s and its intrinsics become calls.
///
/// # Safety
/// `p` was checked against `input` and `out`, and the CPU runs `S`.
#[inline(always)]
unsafe fn dw_simd<S: Simd>(p: &Dw3x3<'_>, input: &[f32], rows: Range<usize>, out: &mut [f32]) {
    let wo = p.out_hw().1;
    let (py, px) = p.pad_before();
    let (h, w, c, s) = (p.h, p.w, p.c, p.stride);
    let ip = input.as_ptr();
    let wp = p.weights.as_ptr();
    // Output columns `lo..hi` have all three window columns inside the input.
    let lo = px.div_ceil(s).min(wo);
    let hi = if w + px >= 3 {
        ((w + px - 3) / s + 1).clamp(lo, wo)
    } else {
        lo
    };
    for (row, oy) in rows.enumerate() {
        let at = row * wo;
        // The window's first input row, if the whole window lies inside the input.
        let Some(iy0) = (oy * s).checked_sub(py).filter(|&y| y + 3 <= h) else {
            for ox in 0..wo {
                dw_pixel::<S>(p, input, out, (oy, ox), at + ox);
            }
            continue;
        };
        for ox in (0..lo).chain(hi..wo) {
            dw_pixel::<S>(p, input, out, (oy, ox), at + ox);
        }
        if lo == hi {
            continue;
        }
        if c < S::W {
            for ox in lo..hi {
                dw_pixel::<S>(p, input, out, (oy, ox), at + ox);
            }
            continue;
        }
        let op = out.as_mut_ptr().add((at + lo) * p.out_stride);
        let step = s * c;
        for ch in vector_starts::<S>(c) {
            let mut wv = [S::zero(); 9];
            for (t, v) in wv.iter_mut().enumerate() {
                *v = S::load(wp.add(t * c + ch));
            }
            let bias = S::load(p.bias.as_ptr().add(ch));
            // Input rows of the window of output column `lo`, at channel `ch`.
            let r: [*const f32; 3] =
                std::array::from_fn(|ky| ip.add(((iy0 + ky) * w + lo * s - px) * c + ch));
            for i in 0..hi - lo {
                let at = i * step;
                let mut acc = bias;
                for (ky, row) in r.iter().enumerate() {
                    for kx in 0..3 {
                        acc = S::fma(acc, S::load(row.add(at + kx * c)), wv[ky * 3 + kx]);
                    }
                }
                S::store(op.add(i * p.out_stride + ch), prelu::<S>(p, acc, ch));
            }
        }
        if c < p.out_stride {
            for ox in lo..hi {
                let px = (at + ox) * p.out_stride;
                out[px + c..px + p.out_stride].fill(0.0);
            }
        }
    }
}

/// Add a per-channel bias and apply an optional PReLU, row-major `(rows, c)`, in place.
pub fn bias_prelu(x: &mut [f32], c: usize, bias: &[f32], alpha: Option<&[f32]>) {
    if c == 0 {
        return;
    }
    for row in x.chunks_exact_mut(c) {
        match alpha {
            Some(a) => {
                for ((v, &b), &al) in row.iter_mut().zip(bias).zip(a) {
                    let y = *v + b;
                    *v = if y < 0.0 { y * al } else { y };
                }
            }
            None => {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
    }
}

/// [`dw3x3`] as a candle op over a contiguous f32 `(H, W, C)` tensor; returns `(Ho, Wo, C)`.
#[derive(Debug, Clone)]
pub struct DepthwiseConv3x3 {
    /// Tap-major weights `(9, C)`.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub alpha: Option<Vec<f32>>,
    pub stride: usize,
}

impl CustomOp1 for DepthwiseConv3x3 {
    fn name(&self) -> &'static str {
        "veriframe-dw3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (h, w, c) = layout.shape().dims3()?;
        let data = match storage {
            CpuStorage::F32(d) => d,
            _ => candle_core::bail!("dw3x3: expected f32 input"),
        };
        let input = match layout.contiguous_offsets() {
            Some((a, b)) => &data[a..b],
            None => candle_core::bail!("dw3x3: input must be contiguous"),
        };
        let p = Dw3x3 {
            h,
            w,
            c,
            stride: self.stride,
            padding: Padding::One,
            weights: &self.weights,
            bias: &self.bias,
            alpha: self.alpha.as_deref(),
            out_stride: c,
        };
        let (ho, wo) = p.out_hw();
        let mut out = vec![0f32; ho * wo * c];
        dw3x3(&p, input, &mut out).map_err(candle_core::Error::Msg)?;
        Ok((CpuStorage::F32(out), Shape::from((ho, wo, c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A small deterministic generator (tests must not depend on a global RNG state).
    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n).map(|_| lcg(seed)).collect()
    }

    /// Reference: candle conv2d with groups = C (NCHW), then bias and PReLU, back to HWC.
    fn reference(
        x_hwc: &[f32],
        (h, w, c): (usize, usize, usize),
        wt_tap_major: &[f32],
        bias: &[f32],
        alpha: Option<&[f32]>,
        stride: usize,
    ) -> (Vec<f32>, usize, usize) {
        let dev = Device::Cpu;
        let x = Tensor::from_slice(x_hwc, (h, w, c), &dev)
            .unwrap()
            .permute((2, 0, 1))
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .contiguous()
            .unwrap();
        // (9, C) -> (C, 1, 3, 3)
        let k = Tensor::from_slice(wt_tap_major, (9, c), &dev)
            .unwrap()
            .t()
            .unwrap()
            .reshape((c, 1, 3, 3))
            .unwrap()
            .contiguous()
            .unwrap();
        let y = x.conv2d(&k, 1, stride, 1, c).unwrap(); // (1, C, Ho, Wo)
        let (_, _, ho, wo) = y.dims4().unwrap();
        let y = y
            .squeeze(0)
            .unwrap()
            .permute((1, 2, 0))
            .unwrap()
            .contiguous()
            .unwrap();
        let mut v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for px in v.chunks_exact_mut(c) {
            for (ch, val) in px.iter_mut().enumerate() {
                let mut a = *val + bias[ch];
                if let Some(al) = alpha {
                    if a < 0.0 {
                        a *= al[ch];
                    }
                }
                *val = a;
            }
        }
        (v, ho, wo)
    }

    fn check(h: usize, w: usize, c: usize, stride: usize, prelu: bool, pad: usize) {
        let mut seed = (h * 1000 + w * 100 + c * 10 + stride) as u64;
        let x = rand_vec(h * w * c, &mut seed);
        let wt = rand_vec(9 * c, &mut seed);
        let b = rand_vec(c, &mut seed);
        let a = rand_vec(c, &mut seed);
        let alpha = prelu.then_some(a.as_slice());
        let (want, ho, wo) = reference(&x, (h, w, c), &wt, &b, alpha, stride);
        let p = Dw3x3 {
            h,
            w,
            c,
            stride,
            padding: Padding::One,
            weights: &wt,
            bias: &b,
            alpha,
            out_stride: c + pad,
        };
        assert_eq!(p.out_hw(), (ho, wo));
        let mut got = vec![f32::NAN; ho * wo * (c + pad)];
        dw3x3(&p, &x, &mut got).unwrap();
        let mut scalar = vec![f32::NAN; ho * wo * (c + pad)];
        dw3x3_scalar(&p, &x, &mut scalar);
        for i in 0..ho * wo {
            for ch in 0..c + pad {
                let g = got[i * (c + pad) + ch];
                let s = scalar[i * (c + pad) + ch];
                if ch >= c {
                    assert_eq!(g, 0.0, "padding channel {ch} not zeroed");
                    assert_eq!(s, 0.0);
                    continue;
                }
                let r = want[i * c + ch];
                assert!(
                    (g - r).abs() < 1e-5 && (s - r).abs() < 1e-5,
                    "h{h} w{w} c{c} s{stride} px{i} ch{ch}: simd {g} scalar {s} candle {r}"
                );
            }
        }
    }

    #[test]
    fn dw3x3_matches_candle_grouped_conv() {
        for &(h, w, c) in &[
            (40, 40, 32),
            (20, 20, 13),
            (10, 10, 231),
            (5, 5, 26),
            (7, 9, 3),
            (1, 1, 8),
            (2, 3, 17),
        ] {
            for stride in [1, 2] {
                check(h, w, c, stride, true, 0);
                check(h, w, c, stride, false, 0);
                check(h, w, c, stride, true, 7);
            }
        }
    }

    /// Bands of output rows, computed separately, make up the whole output.
    #[test]
    fn row_bands_make_up_the_whole_output() {
        let mut seed = 3;
        for (h, w, c, stride, padding) in [
            (12, 10, 24, 1, Padding::One),
            (12, 10, 13, 2, Padding::One),
            (12, 12, 16, 2, Padding::TfSame),
            (7, 5, 3, 1, Padding::One),
        ] {
            let x = rand_vec(h * w * c, &mut seed);
            let wt = rand_vec(9 * c, &mut seed);
            let b = rand_vec(c, &mut seed);
            let a = rand_vec(c, &mut seed);
            let p = Dw3x3 {
                h,
                w,
                c,
                stride,
                padding,
                weights: &wt,
                bias: &b,
                alpha: Some(&a),
                out_stride: c + 1,
            };
            let (ho, wo) = p.out_hw();
            let px = wo * (c + 1);
            let mut whole = vec![f32::NAN; ho * px];
            dw3x3(&p, &x, &mut whole).unwrap();
            let mut bands = vec![f32::NAN; ho * px];
            for r0 in (0..ho).step_by(3) {
                let r1 = (r0 + 3).min(ho);
                dw3x3_rows(&p, &x, r0..r1, &mut bands[r0 * px..r1 * px]).unwrap();
            }
            assert_eq!(whole, bands, "{h}x{w}x{c} stride {stride} {padding:?}");
            assert!(dw3x3_rows(&p, &x, 0..ho + 1, &mut vec![0.0; (ho + 1) * px]).is_err());
            assert!(dw3x3_rows(&p, &x, 1..3, &mut vec![0.0; px]).is_err());
        }
    }

    #[test]
    fn dw3x3_custom_op_matches_candle() {
        let (h, w, c) = (11, 12, 19);
        let mut seed = 7;
        let x = rand_vec(h * w * c, &mut seed);
        let wt = rand_vec(9 * c, &mut seed);
        let b = vec![0.0; c];
        let (want, ho, wo) = reference(&x, (h, w, c), &wt, &b, None, 2);
        let op = DepthwiseConv3x3 {
            weights: wt,
            bias: b,
            alpha: None,
            stride: 2,
        };
        let t = Tensor::from_slice(&x, (h, w, c), &Device::Cpu).unwrap();
        let y = t.apply_op1(op).unwrap();
        assert_eq!(y.dims3().unwrap(), (ho, wo, c));
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, r) in got.iter().zip(&want) {
            assert!((g - r).abs() < 1e-5);
        }
    }

    #[test]
    fn dw3x3_rejects_bad_shapes() {
        let x = vec![0.0; 4 * 4 * 2];
        let wt = vec![0.0; 18];
        let b = vec![0.0; 2];
        let mut p = Dw3x3 {
            h: 4,
            w: 4,
            c: 2,
            stride: 3,
            padding: Padding::One,
            weights: &wt,
            bias: &b,
            alpha: None,
            out_stride: 2,
        };
        let mut out = vec![0.0; 32];
        assert!(dw3x3(&p, &x, &mut out).is_err());
        p.stride = 1;
        assert!(dw3x3(&p, &x[..31], &mut out).is_err());
        assert!(dw3x3(&p, &x, &mut out[..31]).is_err());
        assert!(dw3x3(&p, &x, &mut out).is_ok());
    }

    #[test]
    fn bias_prelu_applies_slope_only_below_zero() {
        let mut x = vec![1.0, -2.0, -1.0, 3.0];
        bias_prelu(&mut x, 2, &[0.5, 1.0], Some(&[0.1, 0.25]));
        assert_eq!(x, vec![1.5, -0.25, -0.5 * 0.1, 4.0]);
    }
}
