//! Hand-written CPU kernels for the PAD networks, channels-last (NHWC, one image).
//!
//! candle runs a grouped convolution as one small convolution per group, which is slow for
//! depthwise layers (one group per channel). [`dw3x3`] computes a 3×3 depthwise convolution
//! (padding 1, stride 1 or 2) directly, fused with the folded batch-norm bias and an optional
//! PReLU. Channels are contiguous, so each tap is a vector multiply-add across channels:
//!
//! * x86_64: AVX + FMA when the CPU has them (runtime detection), else SSE2 (baseline);
//! * aarch64: NEON (ARMv8.0 ASIMD `fmla` only — no dot-product instructions, so it runs on a
//!   Raspberry Pi 4's Cortex-A72);
//! * elsewhere: a scalar loop.
//!
//! [`DepthwiseConv3x3`] wraps the kernel as a candle [`CustomOp1`] over an `(H, W, C)` tensor.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// Parameters of one depthwise 3×3 layer (padding 1).
#[derive(Debug, Clone, Copy)]
pub struct Dw3x3<'a> {
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Channels (the input's channel stride is exactly `c`).
    pub c: usize,
    /// 1 or 2.
    pub stride: usize,
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
        let ho = (self.h + 2 - 3) / self.stride + 1;
        let wo = (self.w + 2 - 3) / self.stride + 1;
        (ho, wo)
    }

    fn check(&self, input: &[f32], out: &[f32]) -> KernelResult<()> {
        let (ho, wo) = self.out_hw();
        if self.stride != 1 && self.stride != 2 {
            return Err(format!("dw3x3: stride {} not supported", self.stride));
        }
        if self.h == 0 || self.w == 0 || self.c == 0 {
            return Err("dw3x3: empty input".into());
        }
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
        if self.out_stride < self.c || out.len() != ho * wo * self.out_stride {
            return Err(format!(
                "dw3x3: output has {} values, expected {ho}x{wo}x{}",
                out.len(),
                self.out_stride
            ));
        }
        Ok(())
    }
}

/// Depthwise 3×3 convolution, padding 1, NHWC, fused bias + optional PReLU.
pub fn dw3x3(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) -> KernelResult<()> {
    p.check(input, out)?;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX and FMA (checked just above); lengths were checked.
            unsafe { x86::dw3x3_avx(p, input, out) };
            return Ok(());
        }
        // SAFETY: SSE2 is part of the x86_64 baseline; lengths were checked.
        unsafe { x86::dw3x3_sse(p, input, out) };
        Ok(())
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: NEON (ASIMD) is mandatory on aarch64; lengths were checked.
        unsafe { neon::dw3x3_neon(p, input, out) };
        Ok(())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        dw3x3_scalar(p, input, out);
        Ok(())
    }
}

/// The valid taps of output pixel (oy, ox): (input pixel index, tap index), at most 9.
#[inline(always)]
fn taps(p: &Dw3x3<'_>, oy: usize, ox: usize, buf: &mut [(usize, usize); 9]) -> usize {
    let mut n = 0;
    let iy0 = (oy * p.stride) as isize - 1;
    let ix0 = (ox * p.stride) as isize - 1;
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

/// Portable reference implementation (also the tail loop of the SIMD versions).
pub fn dw3x3_scalar(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) {
    let (ho, wo) = p.out_hw();
    let mut tb = [(0usize, 0usize); 9];
    for oy in 0..ho {
        for ox in 0..wo {
            let nt = taps(p, oy, ox, &mut tb);
            let o = &mut out[(oy * wo + ox) * p.out_stride..(oy * wo + ox + 1) * p.out_stride];
            scalar_channels(p, input, &tb[..nt], 0, o);
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{scalar_channels, taps, Dw3x3};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx,fma")]
    pub(super) unsafe fn dw3x3_avx(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) {
        let (ho, wo) = p.out_hw();
        let c = p.c;
        let ip = input.as_ptr();
        let wp = p.weights.as_ptr();
        let bp = p.bias.as_ptr();
        let zero = _mm256_setzero_ps();
        let mut tb = [(0usize, 0usize); 9];
        for oy in 0..ho {
            for ox in 0..wo {
                let nt = taps(p, oy, ox, &mut tb);
                let tl = &tb[..nt];
                let base = (oy * wo + ox) * p.out_stride;
                let o = &mut out[base..base + p.out_stride];
                let op = o.as_mut_ptr();
                let mut ch = 0;
                while ch + 8 <= c {
                    let mut acc = _mm256_loadu_ps(bp.add(ch));
                    for &(pix, t) in tl {
                        let x = _mm256_loadu_ps(ip.add(pix * c + ch));
                        let w = _mm256_loadu_ps(wp.add(t * c + ch));
                        acc = _mm256_fmadd_ps(x, w, acc);
                    }
                    if let Some(a) = p.alpha {
                        let al = _mm256_loadu_ps(a.as_ptr().add(ch));
                        let pos = _mm256_max_ps(acc, zero);
                        let neg = _mm256_min_ps(acc, zero);
                        acc = _mm256_fmadd_ps(neg, al, pos);
                    }
                    _mm256_storeu_ps(op.add(ch), acc);
                    ch += 8;
                }
                scalar_channels(p, input, tl, ch, o);
            }
        }
    }

    /// SSE2 (x86_64 baseline).
    pub(super) unsafe fn dw3x3_sse(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) {
        let (ho, wo) = p.out_hw();
        let c = p.c;
        let ip = input.as_ptr();
        let wp = p.weights.as_ptr();
        let bp = p.bias.as_ptr();
        let zero = _mm_setzero_ps();
        let mut tb = [(0usize, 0usize); 9];
        for oy in 0..ho {
            for ox in 0..wo {
                let nt = taps(p, oy, ox, &mut tb);
                let tl = &tb[..nt];
                let base = (oy * wo + ox) * p.out_stride;
                let o = &mut out[base..base + p.out_stride];
                let op = o.as_mut_ptr();
                let mut ch = 0;
                while ch + 4 <= c {
                    let mut acc = _mm_loadu_ps(bp.add(ch));
                    for &(pix, t) in tl {
                        let x = _mm_loadu_ps(ip.add(pix * c + ch));
                        let w = _mm_loadu_ps(wp.add(t * c + ch));
                        acc = _mm_add_ps(acc, _mm_mul_ps(x, w));
                    }
                    if let Some(a) = p.alpha {
                        let al = _mm_loadu_ps(a.as_ptr().add(ch));
                        let pos = _mm_max_ps(acc, zero);
                        let neg = _mm_min_ps(acc, zero);
                        acc = _mm_add_ps(pos, _mm_mul_ps(neg, al));
                    }
                    _mm_storeu_ps(op.add(ch), acc);
                    ch += 4;
                }
                scalar_channels(p, input, tl, ch, o);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{scalar_channels, taps, Dw3x3};
    use std::arch::aarch64::*;

    /// NEON, ARMv8.0 instructions only (`fmla`, `fmax`, `fmin`).
    pub(super) unsafe fn dw3x3_neon(p: &Dw3x3<'_>, input: &[f32], out: &mut [f32]) {
        let (ho, wo) = p.out_hw();
        let c = p.c;
        let ip = input.as_ptr();
        let wp = p.weights.as_ptr();
        let bp = p.bias.as_ptr();
        let zero = vdupq_n_f32(0.0);
        let mut tb = [(0usize, 0usize); 9];
        for oy in 0..ho {
            for ox in 0..wo {
                let nt = taps(p, oy, ox, &mut tb);
                let tl = &tb[..nt];
                let base = (oy * wo + ox) * p.out_stride;
                let o = &mut out[base..base + p.out_stride];
                let op = o.as_mut_ptr();
                let mut ch = 0;
                while ch + 4 <= c {
                    let mut acc = vld1q_f32(bp.add(ch));
                    for &(pix, t) in tl {
                        let x = vld1q_f32(ip.add(pix * c + ch));
                        let w = vld1q_f32(wp.add(t * c + ch));
                        acc = vfmaq_f32(acc, x, w);
                    }
                    if let Some(a) = p.alpha {
                        let al = vld1q_f32(a.as_ptr().add(ch));
                        let pos = vmaxq_f32(acc, zero);
                        let neg = vminq_f32(acc, zero);
                        acc = vfmaq_f32(pos, neg, al);
                    }
                    vst1q_f32(op.add(ch), acc);
                    ch += 4;
                }
                scalar_channels(p, input, tl, ch, o);
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
