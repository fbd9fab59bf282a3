//! Q8_0 pointwise / linear GEMM for the PAD networks: `y = x·Wᵀ + bias` (optional PReLU) over
//! `(m pixels × k)` f32 activations and `(n × k)` Q8_0 weights.
//!
//! Weights are Q8_0 as in GGML: blocks of 32 along `k`, one f16 scale each (the on-disk GGUF format
//! is unchanged); [`Q8Matrix`] unpacks them into layouts suited to each SIMD path. Activations are
//! quantized per row and per 32-block to int8 with an f32 scale (like llama.cpp's Q8_0 activations),
//! `k` zero-padded to the weight's padded width. Each block's dot product is integer (exact), then
//! `acc += (dx·dw) · dot` in f32, block by block; bias and PReLU are fused into the store.
//! Every path performs the same f32 operations in the same order (no FMA contraction), so SIMD
//! results equal [`gemm_scalar`] bit for bit.
//!
//! Paths, chosen at **run time**:
//! * x86_64 with AVX2 and FMA (`pointwise::Isa::detect`): weights sign-extended to i16, interleaved as
//!   16 output channels × 2 k per 256-bit vector; one `vpmaddwd` per vector against a broadcast
//!   pair of activations; tiles of 4 pixels × 16 channels.
//! * aarch64: ARMv8.0 NEON only (`smull`/`smlal2`/`sadalp`, no `sdot`), so it runs on a Raspberry
//!   Pi 4's Cortex-A72; tiles of 2 pixels × 4 channels.
//! * elsewhere (or x86 without AVX2): the scalar reference.

use crate::detect::DetectError;

/// Q8_0 block length along `k`.
pub const QK: usize = 32;
/// Output channels per weight group (rows padded to a multiple of this).
const NG: usize = 16;
/// Bytes of one GGML `BlockQ8_0` (f16 scale + 32 × i8).
const BLOCK_BYTES: usize = 2 + QK;

fn err(m: impl std::fmt::Display) -> DetectError {
    DetectError::Model(format!("q8 gemm: {m}"))
}

/// IEEE half → f32 (exact; GGML stores Q8_0 scales as f16).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24, exactly representable in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Q8_0 weights `(n, kp)` unpacked for the kernels. Quant values are clamped to ±127 (GGML's
/// quantizer never emits −128), which keeps paired i16 products of the NEON path from overflowing.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    n: usize,
    /// `k` padded to a multiple of [`QK`].
    kp: usize,
    /// `n` padded to a multiple of [`NG`] (padding rows are zero).
    np: usize,
    /// Row-major `(np, kp)` (scalar and NEON paths).
    q: Vec<i8>,
    /// Scales transposed, `(kp / QK, np)`: the scales of consecutive channels are contiguous.
    d: Vec<f32>,
    /// AVX2 layout: `[np / 16][kp / 2][16 channels][2 k]` as i16.
    #[cfg(target_arch = "x86_64")]
    q16: Vec<i16>,
}

impl Q8Matrix {
    /// From GGML Q8_0 bytes (`n · kp / 32` blocks of `f16 d, [i8; 32]`), as `QTensor::data` gives.
    pub fn from_q8_0(raw: &[u8], n: usize, kp: usize) -> Result<Self, DetectError> {
        if n == 0 || kp == 0 || !kp.is_multiple_of(QK) {
            return Err(err(format!("bad shape ({n}, {kp})")));
        }
        let kb = kp / QK;
        if raw.len() != n * kb * BLOCK_BYTES {
            return Err(err(format!(
                "{} bytes for ({n}, {kp}) Q8_0 weights, expected {}",
                raw.len(),
                n * kb * BLOCK_BYTES
            )));
        }
        let np = n.div_ceil(NG) * NG;
        let mut q = vec![0i8; np * kp];
        let mut d = vec![0f32; kb * np];
        for (i, blk) in raw.chunks_exact(BLOCK_BYTES).enumerate() {
            let (row, b) = (i / kb, i % kb);
            d[b * np + row] = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            for (dst, &v) in q[row * kp + b * QK..][..QK].iter_mut().zip(&blk[2..]) {
                *dst = (v as i8).max(-127);
            }
        }
        Ok(Self::with_layouts(n, kp, np, q, d))
    }

    /// Quantize f32 weights `(n, k)` like GGML's Q8_0 (scale `amax / 127` rounded to f16,
    /// round half away from zero), `k` zero-padded to a multiple of 32.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Result<Self, DetectError> {
        if n == 0 || k == 0 || w.len() != n * k {
            return Err(err(format!("{} weights for ({n}, {k})", w.len())));
        }
        let kp = k.div_ceil(QK) * QK;
        let mut raw = Vec::with_capacity(n * kp / QK * BLOCK_BYTES);
        let mut blk = [0f32; QK];
        for row in w.chunks_exact(k) {
            for b in 0..kp / QK {
                blk.fill(0.0);
                let src = &row[b * QK..k.min((b + 1) * QK)];
                blk[..src.len()].copy_from_slice(src);
                let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                raw.extend_from_slice(&f32_to_f16(d).to_le_bytes());
                raw.extend(blk.iter().map(|&v| (v * id).round() as i8 as u8));
            }
        }
        Self::from_q8_0(&raw, n, kp)
    }

    fn with_layouts(n: usize, kp: usize, np: usize, q: Vec<i8>, d: Vec<f32>) -> Self {
        #[cfg(target_arch = "x86_64")]
        let q16 = {
            let mut v = vec![0i16; np * kp];
            let mut i = 0;
            for g in 0..np / NG {
                for kk in 0..kp / 2 {
                    for c in 0..NG {
                        let row = &q[(g * NG + c) * kp..];
                        v[i] = i16::from(row[2 * kk]);
                        v[i + 1] = i16::from(row[2 * kk + 1]);
                        i += 2;
                    }
                }
            }
            v
        };
        Self {
            n,
            kp,
            np,
            q,
            d,
            #[cfg(target_arch = "x86_64")]
            q16,
        }
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Padded input width (multiple of 32); inputs may be narrower.
    pub fn kp(&self) -> usize {
        self.kp
    }

    /// Dequantized weights `(n, kp)` (for tests and tools).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.kp);
        for r in 0..self.n {
            for (i, &v) in self.q[r * self.kp..(r + 1) * self.kp].iter().enumerate() {
                out.push(f32::from(v) * self.d[(i / QK) * self.np + r]);
            }
        }
        out
    }
}

/// f32 → IEEE half, round to nearest even (normal and subnormal range; overflow → ±inf).
fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = f32::from_bits(bits & 0x7fff_ffff);
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal half: units of 2^-24.
        return sign | (a * 16_777_216.0).round_ties_even() as u16;
    }
    let e = ((a.to_bits() >> 23) as i32) - 127;
    let m = a.to_bits() & 0x7f_ffff;
    let mut h = (((e + 15) as u32) << 10) | (m >> 13);
    let rest = m & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// Scale of an activation block with absolute maximum `amax`: `(d, 1/d)`, both 0 for a zero block.
#[inline(always)]
fn act_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d == 0.0 { 0.0 } else { 1.0 / d })
}

/// Activations quantized per row and 32-block: `q` row-major `(m, kp)`, `d` `(m, kp / 32)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QAct<T> {
    pub q: Vec<T>,
    pub d: Vec<f32>,
}

fn check(w: &Q8Matrix, x: &[f32], m: usize, c: usize, bias: &[f32]) -> Result<(), DetectError> {
    if c > w.kp || x.len() != m * c {
        return Err(err(format!(
            "input ({m}, {c}) with {} values for weights of width {}",
            x.len(),
            w.kp
        )));
    }
    if bias.len() != w.n {
        return Err(err("bias length"));
    }
    Ok(())
}

/// Scalar reference quantizer of `(m, c)` rows to `kp` columns (zero-padded).
pub fn quantize_scalar(x: &[f32], m: usize, c: usize, kp: usize) -> QAct<i8> {
    let kb = kp / QK;
    let mut q = vec![0i8; m * kp];
    let mut d = vec![0f32; m * kb];
    for r in 0..m {
        let row = &x[r * c..(r + 1) * c];
        for b in 0..kb {
            let src = &row[(b * QK).min(c)..((b + 1) * QK).min(c)];
            let amax = src.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let (db, id) = act_scale(amax);
            d[r * kb + b] = db;
            for (o, &v) in q[r * kp + b * QK..].iter_mut().zip(src) {
                *o = ((v * id).round_ties_even() as i32).clamp(-127, 127) as i8;
            }
        }
    }
    QAct { q, d }
}

#[inline(always)]
fn epilogue(acc: f32, bias: f32, alpha: Option<f32>) -> f32 {
    let y = acc + bias;
    match alpha {
        Some(a) if y < 0.0 => y * a,
        _ => y,
    }
}

/// Scalar reference GEMM over quantized activations; `out` is `(m, n)`.
pub fn gemm_scalar(
    w: &Q8Matrix,
    xa: &QAct<i8>,
    m: usize,
    bias: &[f32],
    alpha: Option<&[f32]>,
    out: &mut [f32],
) {
    let (kp, kb) = (w.kp, w.kp / QK);
    for r in 0..m {
        let xr = &xa.q[r * kp..(r + 1) * kp];
        for j in 0..w.n {
            let wr = &w.q[j * kp..(j + 1) * kp];
            let mut acc = 0f32;
            for b in 0..kb {
                let s: i32 = xr[b * QK..(b + 1) * QK]
                    .iter()
                    .zip(&wr[b * QK..(b + 1) * QK])
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                acc += (xa.d[r * kb + b] * w.d[b * w.np + j]) * s as f32;
            }
            out[r * w.n + j] = epilogue(acc, bias[j], alpha.map(|a| a[j]));
        }
    }
}

/// `out (m, n) = x (m, c) · Wᵀ + bias`, then PReLU with slopes `alpha` if given. `c <= w.kp()`
/// (missing columns count as zero). Picks the fastest path this CPU supports.
pub fn gemm(
    w: &Q8Matrix,
    x: &[f32],
    m: usize,
    c: usize,
    bias: &[f32],
    alpha: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), DetectError> {
    check(w, x, m, c, bias)?;
    if alpha.is_some_and(|a| a.len() != w.n) || out.len() != m * w.n {
        return Err(err("PReLU or output length"));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; shapes were checked.
    unsafe {
        let xa = neon::quantize_neon(x, m, c, w.kp);
        neon::gemm_neon(w, &xa, m, bias, alpha, out);
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        #[cfg(target_arch = "x86_64")]
        if super::pointwise::Isa::detect() == super::pointwise::Isa::Avx2 {
            // SAFETY: AVX2 and FMA (the kernels' target features) are present, checked just
            // above by `Isa::detect`; shapes were checked.
            unsafe {
                let xa = x86::quantize_avx2(x, m, c, w.kp);
                x86::gemm_avx2(w, &xa, m, bias, alpha, out);
            }
            return Ok(());
        }
        let xa = quantize_scalar(x, m, c, w.kp);
        gemm_scalar(w, &xa, m, bias, alpha, out);
    }
    Ok(())
}

// The skeleton the vector paths share (x86_64 and aarch64). The per-ISA modules below hold only
// the vector bodies: their instruction sets, register widths and weight layouts differ (AVX2:
// i16 pairs through `vpmaddwd`, 4 pixels × 16 channels; NEON: i8 through `smull`/`sadalp`,
// 2 pixels × 4 channels), so those bodies are deliberately separate.

/// Bias and PReLU slopes padded to `np` (padding: bias 0, slope 1), as the vector tiles read them.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
struct Epilogue {
    bias: Vec<f32>,
    alpha: Vec<f32>,
    prelu: bool,
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
impl Epilogue {
    fn new(w: &Q8Matrix, bias: &[f32], alpha: Option<&[f32]>) -> Self {
        let mut b = vec![0f32; w.np];
        b[..w.n].copy_from_slice(bias);
        let mut a = vec![1f32; w.np];
        if let Some(al) = alpha {
            a[..w.n].copy_from_slice(al);
        }
        Epilogue {
            bias: b,
            alpha: a,
            prelu: alpha.is_some(),
        }
    }
}

/// The quantizers' loop: for each row of `x (m, c)` and each 32-block of its `kp` columns, hands
/// `block` 32 readable values (the row's, or a zero-padded copy at the row's end) and where the
/// block's 32 quantized values go; `block` returns the block's scale.
///
/// # Safety
/// `x.len() == m * c`, `c <= kp`, `kp % 32 == 0`; `block` reads 32 values and writes 32.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
unsafe fn quantize_blocks<T: Copy + Default>(
    x: &[f32],
    m: usize,
    c: usize,
    kp: usize,
    mut block: impl FnMut(*const f32, *mut T) -> f32,
) -> QAct<T> {
    let kb = kp / QK;
    let mut q = vec![T::default(); m * kp];
    let mut d = vec![0f32; m * kb];
    let mut tmp = [0f32; QK];
    for r in 0..m {
        let row = &x[r * c..(r + 1) * c];
        for b in 0..kb {
            let s = &row[(b * QK).min(c)..((b + 1) * QK).min(c)];
            let p = if s.len() == QK {
                s.as_ptr()
            } else {
                tmp.fill(0.0);
                tmp[..s.len()].copy_from_slice(s);
                tmp.as_ptr()
            };
            d[r * kb + b] = block(p, q.as_mut_ptr().add(r * kp + b * QK));
        }
    }
    QAct { q, d }
}

/// The GEMM drivers' loop over output pixels: `wide(p, out)` for each whole tile of `rows` pixels
/// starting at `p`, then `one(p, out)` for each pixel left.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn pixel_tiles(
    m: usize,
    rows: usize,
    out: &mut [f32],
    mut wide: impl FnMut(usize, &mut [f32]),
    mut one: impl FnMut(usize, &mut [f32]),
) {
    let mut p = 0;
    while p + rows <= m {
        wide(p, out);
        p += rows;
    }
    while p < m {
        one(p, out);
        p += 1;
    }
}

/// Stores the first `cn` of a tile row's channel values `y` at pixel `p`, channel `c0` of
/// `out (m, n)`.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
#[inline(always)]
fn store_row(out: &mut [f32], n: usize, p: usize, c0: usize, y: &[f32], cn: usize) {
    let o = p * n + c0;
    out[o..o + cn].copy_from_slice(&y[..cn]);
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 path (`vpmaddwd` on i16). Only the vector bodies are here, separate from NEON's by
    //! instruction set and layout; the loops around them are the shared skeleton above.
    use super::*;
    use std::arch::x86_64::*;

    /// AVX2 quantizer: same values as [`quantize_scalar`], widened to i16.
    ///
    /// # Safety
    /// The CPU must support AVX2; `x.len() == m * c`, `c <= kp`, `kp % 32 == 0`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_avx2(x: &[f32], m: usize, c: usize, kp: usize) -> QAct<i16> {
        let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let (lo, hi) = (_mm256_set1_epi32(-127), _mm256_set1_epi32(127));
        quantize_blocks(x, m, c, kp, |p, dst: *mut i16| {
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let mx = _mm256_max_ps(
                _mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
                _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)),
            );
            let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
            let (db, id) = act_scale(_mm_cvtss_f32(m1));
            let idv = _mm256_set1_ps(id);
            let qi = v.map(|t| {
                let i = _mm256_cvtps_epi32(_mm256_mul_ps(t, idv));
                _mm256_min_epi32(_mm256_max_epi32(i, lo), hi)
            });
            let dst = dst as *mut __m256i;
            for h in 0..2 {
                let pk = _mm256_packs_epi32(qi[2 * h], qi[2 * h + 1]);
                _mm256_storeu_si256(dst.add(h), _mm256_permute4x64_epi64(pk, 0b11_01_10_00));
            }
            db
        })
    }

    /// AVX2 GEMM over [`quantize_avx2`] activations.
    ///
    /// # Safety
    /// The CPU must support AVX2; `xa` has `m` rows of `w.kp` values; `bias` (and `alpha`) hold
    /// `w.n` values; `out.len() == m * w.n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_avx2(
        w: &Q8Matrix,
        xa: &QAct<i16>,
        m: usize,
        bias: &[f32],
        alpha: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let e = Epilogue::new(w, bias, alpha);
        for g in 0..w.np / NG {
            pixel_tiles(
                m,
                4,
                out,
                |p, out| tile::<4>(w, xa, g, p, &e, out),
                |p, out| tile::<1>(w, xa, g, p, &e, out),
            );
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const P: usize>(
        w: &Q8Matrix,
        xa: &QAct<i16>,
        g: usize,
        p0: usize,
        e: &Epilogue,
        out: &mut [f32],
    ) {
        let (kp, kb, np) = (w.kp, w.kp / QK, w.np);
        let wg = w.q16.as_ptr().add(g * NG * kp);
        let x = xa.q.as_ptr().add(p0 * kp);
        let mut facc = [[_mm256_setzero_ps(); 2]; P];
        for b in 0..kb {
            let mut iacc = [[_mm256_setzero_si256(); 2]; P];
            for t in 0..QK / 2 {
                let kk = b * QK / 2 + t;
                let w0 = _mm256_loadu_si256(wg.add(kk * 2 * NG) as *const __m256i);
                let w1 = _mm256_loadu_si256(wg.add(kk * 2 * NG + NG) as *const __m256i);
                for (r, acc) in iacc.iter_mut().enumerate() {
                    let pair = (x.add(r * kp + 2 * kk) as *const i32).read_unaligned();
                    let xv = _mm256_set1_epi32(pair);
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(w0, xv));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(w1, xv));
                }
            }
            let dw = w.d.as_ptr().add(b * np + g * NG);
            let (d0, d1) = (_mm256_loadu_ps(dw), _mm256_loadu_ps(dw.add(8)));
            for r in 0..P {
                let dx = _mm256_set1_ps(*xa.d.get_unchecked((p0 + r) * kb + b));
                let s0 = _mm256_mul_ps(_mm256_mul_ps(dx, d0), _mm256_cvtepi32_ps(iacc[r][0]));
                let s1 = _mm256_mul_ps(_mm256_mul_ps(dx, d1), _mm256_cvtepi32_ps(iacc[r][1]));
                facc[r][0] = _mm256_add_ps(facc[r][0], s0);
                facc[r][1] = _mm256_add_ps(facc[r][1], s1);
            }
        }
        let c0 = g * NG;
        let cn = (w.n - c0).min(NG);
        let zero = _mm256_setzero_ps();
        for (r, acc) in facc.iter().enumerate() {
            let mut y = [0f32; NG];
            for (h, &a8) in acc.iter().enumerate() {
                let mut v = _mm256_add_ps(a8, _mm256_loadu_ps(e.bias.as_ptr().add(c0 + 8 * h)));
                if e.prelu {
                    let a = _mm256_loadu_ps(e.alpha.as_ptr().add(c0 + 8 * h));
                    let neg = _mm256_cmp_ps(v, zero, _CMP_LT_OQ);
                    v = _mm256_blendv_ps(v, _mm256_mul_ps(v, a), neg);
                }
                _mm256_storeu_ps(y.as_mut_ptr().add(8 * h), v);
            }
            store_row(out, w.n, p0 + r, c0, &y, cn);
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub mod neon {
    //! ARMv8.0 NEON path: `smull`/`smlal2` into i16 pairs, `sadalp` into i32; no `sdot`. Only
    //! the vector bodies are here (see the AVX2 path); the loops are the shared skeleton above.
    use super::*;
    use std::arch::aarch64::*;

    /// NEON quantizer: same values as [`quantize_scalar`].
    ///
    /// # Safety
    /// `x.len() == m * c`, `c <= kp`, `kp % 32 == 0`.
    #[target_feature(enable = "neon")]
    pub unsafe fn quantize_neon(x: &[f32], m: usize, c: usize, kp: usize) -> QAct<i8> {
        let lo = vdupq_n_s8(-127);
        quantize_blocks(x, m, c, kp, |p, dst: *mut i8| {
            let v: [float32x4_t; 8] = std::array::from_fn(|i| vld1q_f32(p.add(4 * i)));
            let mut mx = vabsq_f32(v[0]);
            for t in &v[1..] {
                mx = vmaxq_f32(mx, vabsq_f32(*t));
            }
            let (db, id) = act_scale(vmaxvq_f32(mx));
            let i: [int32x4_t; 8] = v.map(|t| vcvtnq_s32_f32(vmulq_n_f32(t, id)));
            let h: [int16x8_t; 4] = std::array::from_fn(|j| {
                vcombine_s16(vqmovn_s32(i[2 * j]), vqmovn_s32(i[2 * j + 1]))
            });
            for j in 0..2 {
                let b8 = vcombine_s8(vqmovn_s16(h[2 * j]), vqmovn_s16(h[2 * j + 1]));
                vst1q_s8(dst.add(16 * j), vmaxq_s8(b8, lo));
            }
            db
        })
    }

    /// NEON GEMM over [`quantize_neon`] activations.
    ///
    /// # Safety
    /// `xa` has `m` rows of `w.kp` values; `bias` (and `alpha`) hold `w.n` values;
    /// `out.len() == m * w.n`.
    #[target_feature(enable = "neon")]
    pub unsafe fn gemm_neon(
        w: &Q8Matrix,
        xa: &QAct<i8>,
        m: usize,
        bias: &[f32],
        alpha: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let e = Epilogue::new(w, bias, alpha);
        for c0 in (0..w.n).step_by(4) {
            pixel_tiles(
                m,
                2,
                out,
                |p, out| tile::<2>(w, xa, c0, p, &e, out),
                |p, out| tile::<1>(w, xa, c0, p, &e, out),
            );
        }
    }

    /// Dot product of 32 i8 pairs, left in four i32 lanes. Paired products fit i16 since
    /// values are within ±127.
    #[inline(always)]
    unsafe fn dot32(x0: int8x16_t, x1: int8x16_t, w0: int8x16_t, w1: int8x16_t) -> int32x4_t {
        let a = vmlal_high_s8(vmull_s8(vget_low_s8(x0), vget_low_s8(w0)), x0, w0);
        let b = vmlal_high_s8(vmull_s8(vget_low_s8(x1), vget_low_s8(w1)), x1, w1);
        vpadalq_s16(vpaddlq_s16(a), b)
    }

    #[target_feature(enable = "neon")]
    unsafe fn tile<const P: usize>(
        w: &Q8Matrix,
        xa: &QAct<i8>,
        c0: usize,
        p0: usize,
        e: &Epilogue,
        out: &mut [f32],
    ) {
        let (kp, kb, np) = (w.kp, w.kp / QK, w.np);
        let wq = w.q.as_ptr().add(c0 * kp);
        let x = xa.q.as_ptr().add(p0 * kp);
        let mut facc = [vdupq_n_f32(0.0); P];
        for b in 0..kb {
            let wv: [[int8x16_t; 2]; 4] = std::array::from_fn(|c| {
                let p = wq.add(c * kp + b * QK);
                [vld1q_s8(p), vld1q_s8(p.add(16))]
            });
            let dw = vld1q_f32(w.d.as_ptr().add(b * np + c0));
            for (r, acc) in facc.iter_mut().enumerate() {
                let xp = x.add(r * kp + b * QK);
                let (x0, x1) = (vld1q_s8(xp), vld1q_s8(xp.add(16)));
                let s: [int32x4_t; 4] = std::array::from_fn(|c| dot32(x0, x1, wv[c][0], wv[c][1]));
                let sum = vpaddq_s32(vpaddq_s32(s[0], s[1]), vpaddq_s32(s[2], s[3]));
                let dx = vdupq_n_f32(*xa.d.get_unchecked((p0 + r) * kb + b));
                *acc = vaddq_f32(*acc, vmulq_f32(vmulq_f32(dx, dw), vcvtq_f32_s32(sum)));
            }
        }
        let cn = (w.n - c0).min(4);
        for (r, acc) in facc.iter().enumerate() {
            let mut v = vaddq_f32(*acc, vld1q_f32(e.bias.as_ptr().add(c0)));
            if e.prelu {
                let neg = vcltq_f32(v, vdupq_n_f32(0.0));
                v = vbslq_f32(neg, vmulq_f32(v, vld1q_f32(e.alpha.as_ptr().add(c0))), v);
            }
            let mut y = [0f32; 4];
            vst1q_f32(y.as_mut_ptr(), v);
            store_row(out, w.n, p0 + r, c0, &y, cn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rnd(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
    }

    const MS: [usize; 6] = [1, 2, 3, 5, 17, 40];
    const KS: [usize; 7] = [1, 13, 32, 40, 64, 103, 231];
    const NS: [usize; 7] = [1, 3, 4, 13, 16, 17, 70];

    #[test]
    fn f16_decoding_matches_candle() {
        use candle_core::{quantized::GgmlDType, quantized::QTensor, Device, Tensor};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for &(n, k) in &[(3usize, 64usize), (17, 96), (1, 32)] {
            let mut w = rnd(&mut rng, n * k, 2.0);
            for v in &mut w[..32] {
                *v *= 1e-5; // a tiny block: its f16 scale is subnormal
            }
            let t = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
            let qt = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
            let mine = Q8Matrix::from_q8_0(&qt.data().unwrap(), n, k).unwrap();
            let theirs = qt.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
            assert_eq!(mine.dequantize(), theirs.to_vec1::<f32>().unwrap());
            // Our own quantizer writes the same bytes as candle's.
            let ours = Q8Matrix::quantize(&w, n, k).unwrap();
            assert_eq!(ours.q, mine.q);
            assert_eq!(ours.d, mine.d);
        }
        for h in [
            0u16, 1, 0x3ff, 0x400, 0x3c00, 0xbc00, 0x7bff, 0x7c00, 0x8001,
        ] {
            assert_eq!(f32_to_f16(f16_to_f32(h)), h, "{h:#x}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(1), 2f32.powi(-24));
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(Q8Matrix::from_q8_0(&[0; 34], 1, 31).is_err());
        assert!(Q8Matrix::from_q8_0(&[0; 33], 1, 32).is_err());
        let w = Q8Matrix::quantize(&[1.0; 40], 1, 40).unwrap();
        let mut out = vec![0f32; 2];
        assert!(gemm(&w, &[0.0; 65 * 2], 2, 65, &[0.0], None, &mut out).is_err());
        assert!(gemm(&w, &[0.0; 64], 2, 32, &[0.0; 2], None, &mut out).is_err());
        assert!(gemm(&w, &[0.0; 64], 2, 32, &[0.0], None, &mut out).is_ok());
    }

    /// The dispatched path equals the scalar reference exactly (quantized activations and outputs).
    #[test]
    fn simd_equals_scalar_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for &m in &MS {
            for &k in &KS {
                for &n in &NS {
                    let x = rnd(&mut rng, m * k, 3.0);
                    let w = Q8Matrix::quantize(&rnd(&mut rng, n * k, 0.5), n, k).unwrap();
                    let bias = rnd(&mut rng, n, 1.0);
                    let alpha = rnd(&mut rng, n, 0.5);
                    let xs = quantize_scalar(&x, m, k, w.kp);
                    #[cfg(target_arch = "x86_64")]
                    if crate::detect::kernels::pointwise::Isa::detect()
                        == crate::detect::kernels::pointwise::Isa::Avx2
                    {
                        let xv = unsafe { x86::quantize_avx2(&x, m, k, w.kp) };
                        let widened: Vec<i16> = xs.q.iter().map(|&v| i16::from(v)).collect();
                        assert_eq!(xv.q, widened, "quantized activations m={m} k={k}");
                        assert_eq!(xv.d, xs.d);
                    }
                    #[cfg(target_arch = "aarch64")]
                    assert_eq!(unsafe { neon::quantize_neon(&x, m, k, w.kp) }, xs);
                    for al in [None, Some(&alpha[..])] {
                        let mut want = vec![0f32; m * n];
                        gemm_scalar(&w, &xs, m, &bias, al, &mut want);
                        let mut got = vec![f32::NAN; m * n];
                        gemm(&w, &x, m, k, &bias, al, &mut got).unwrap();
                        assert_eq!(got, want, "m={m} k={k} n={n} prelu={}", al.is_some());
                    }
                }
            }
        }
    }

    /// Q8_0 vs f32: the error stays within the quantization bound, and is small in practice.
    #[test]
    fn q8_agrees_with_f32_matmul() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for &(m, k, n) in &[(40usize, 103usize, 64usize), (7, 231, 17), (3, 512, 128)] {
            let x: Vec<f32> = (0..m * k)
                .map(|_| rng.gen_range(-1.0f32..1.0).max(0.0) * 4.0)
                .collect();
            let wf = rnd(&mut rng, n * k, 0.3);
            let bias = rnd(&mut rng, n, 0.1);
            let w = Q8Matrix::quantize(&wf, n, k).unwrap();
            let mut got = vec![0f32; m * n];
            gemm(&w, &x, m, k, &bias, None, &mut got).unwrap();
            let (mut worst, mut ymax) = (0f32, 0f32);
            for r in 0..m {
                for j in 0..n {
                    let (xr, wr) = (&x[r * k..(r + 1) * k], &wf[j * k..(j + 1) * k]);
                    let y: f32 = bias[j] + xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>();
                    // Per block: |δx| <= amax_x/254, |δw| <= amax_w/254 (plus f16 scale rounding).
                    let mut bound = 0f32;
                    for b in 0..k.div_ceil(QK) {
                        let (lo, hi) = (b * QK, ((b + 1) * QK).min(k));
                        let ax = xr[lo..hi].iter().fold(0f32, |a, v| a.max(v.abs()));
                        let aw = wr[lo..hi].iter().fold(0f32, |a, v| a.max(v.abs()));
                        for t in lo..hi {
                            bound += wr[t].abs() * ax / 254.0
                                + xr[t].abs() * aw * (1.0 / 254.0 + 1e-3)
                                + ax * aw / 254.0 / 254.0;
                        }
                    }
                    let e = (got[r * n + j] - y).abs();
                    assert!(e <= bound + 1e-5, "({r},{j}) error {e} > bound {bound}");
                    worst = worst.max(e);
                    ymax = ymax.max(y.abs());
                }
            }
            assert!(worst / ymax < 0.02, "relative error {}", worst / ymax);
        }
    }
}
