//! 1×1 convolution (a GEMM) over channels-last activations, with bias, an optional residual
//! add and an optional ReLU fused into the epilogue; used by the BlazeFace detector for its
//! pointwise convolutions, its heads and (after an im2col) its stem.
//!
//! `out[r, c] = relu?(bias[c] + Σ_k a[r, k] · w[k, c] + residual[r, c])` for `r < rows`,
//! `c < n`, where `n` is a multiple of [`LANES`] (callers pad channels with zero weights).
//! A row of `a` may be split into equal segments at a fixed distance from each other, so a
//! k×k convolution over a channels-last image runs without an im2col copy (one image row of
//! output pixels per call: row stride = conv stride × channels, segments = kernel rows).
//!
//! The kernel keeps a tile of 6 rows × 16 columns (AVX2: 12 of the 16 `ymm` registers) or 4 rows
//! × 24 columns (NEON: 24 of 32) in registers and walks `k`, broadcasting one input value per row
//! and loading one weight vector per 4 or 8 columns. (A 4 × 24 AVX2 tile needs all 16 registers
//! and LLVM spills an accumulator to the stack in the inner loop: 1.5× slower.)
//!
//! * x86_64: AVX2 + FMA when the CPU has them (runtime detection), else the scalar loop;
//! * aarch64: NEON, ARMv8.0 `fmla`/`fmax` only (runs on a Raspberry Pi 4's Cortex-A72);
//! * elsewhere: the scalar loop.

// The vector code below is compiled for x86_64 (AVX2) and aarch64 (NEON) only; other targets
// (armv7) run the scalar loops and leave it unused.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

/// Column counts must be multiples of this.
pub const LANES: usize = 8;

/// One cache line of `f32`s; the unit of [`Aligned`]'s storage.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `f32`s in storage that starts on a cache line (64 bytes). `Vec<f32>` only gets the
/// allocator's 16-byte alignment, so from one process to the next a kernel's 32-byte vector
/// loads and stores may straddle two cache lines. BlazeFace's fastest warm network call went
/// from 0.88 to 0.85 ms with its buffers in this storage.
#[derive(Debug, Clone, Default)]
pub struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

impl Aligned {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            lines: vec![Line::default(); len.div_ceil(16)],
            len,
        }
    }

    /// A copy of `v`.
    pub fn from_slice(v: &[f32]) -> Self {
        let mut a = Self::zeros(v.len());
        a.copy_from_slice(v);
        a
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]` (size 64 = its alignment, no padding),
        // so `lines` is `16 · lines.len() ≥ len` contiguous, initialised `f32`s.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// Which implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// The best implementation this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            return Isa::Neon;
        }
        #[allow(unreachable_code)]
        Isa::Scalar
    }
}

/// One pointwise layer.
#[derive(Debug, Clone, Copy)]
pub struct Pointwise<'a> {
    /// Rows (pixels).
    pub rows: usize,
    /// Reduction length (input channels read from each row).
    pub k: usize,
    /// Row stride of the input.
    pub a_stride: usize,
    /// Each input row is `segments` runs of `k / segments` values, `segment_stride` apart
    /// (1 and 0 for a plain matrix, whose rows then need `a_stride >= k`).
    pub segments: usize,
    pub segment_stride: usize,
    /// Output columns = output row stride; a multiple of [`LANES`].
    pub n: usize,
    /// `k × n`, row-major.
    pub weights: &'a [f32],
    /// `n`.
    pub bias: &'a [f32],
    /// Added before the ReLU: `rows × stride`, its columns `0..stride` onto the output's
    /// (`stride` a multiple of [`LANES`], at most `n`).
    pub residual: Option<(&'a [f32], usize)>,
    pub relu: bool,
}

impl Pointwise<'_> {
    fn check(&self, a: &[f32], out: &[f32]) -> Result<(), String> {
        let Pointwise {
            rows,
            k,
            a_stride,
            n,
            segments,
            segment_stride,
            ..
        } = *self;
        if n == 0 || n % LANES != 0 || k == 0 || segments == 0 || k % segments != 0 {
            return Err(format!(
                "pointwise: bad shape k={k} segments={segments} n={n}"
            ));
        }
        let seg_len = k / segments;
        if segments == 1 && a_stride < k || segments > 1 && segment_stride < seg_len {
            return Err(format!(
                "pointwise: rows overlap (stride {a_stride}, segment stride {segment_stride})"
            ));
        }
        // The last value a row reads, relative to the row's start.
        let row_span = (segments - 1) * segment_stride + seg_len;
        if self.weights.len() != k * n || self.bias.len() != n {
            return Err("pointwise: weights/bias length mismatch".into());
        }
        if rows > 0 && a.len() < (rows - 1) * a_stride + row_span {
            return Err(format!("pointwise: input has {} values", a.len()));
        }
        if out.len() != rows * n {
            return Err(format!("pointwise: output has {} values", out.len()));
        }
        if let Some((r, rs)) = self.residual {
            if rs == 0 || rs % LANES != 0 || rs > n || r.len() != rows * rs {
                return Err("pointwise: residual shape mismatch".into());
            }
        }
        Ok(())
    }
}

/// Run `p` on `a` into `out` with `isa`.
pub fn pointwise(isa: Isa, p: &Pointwise<'_>, a: &[f32], out: &mut [f32]) -> Result<(), String> {
    p.check(a, out)?;
    match isa {
        Isa::Scalar => pointwise_scalar(p, a, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only chosen when the CPU has AVX2 and FMA (tests construct it
        // only after the same check); shapes were checked.
        Isa::Avx2 => unsafe { avx2::run(p, a, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is mandatory on aarch64; shapes were checked.
        Isa::Neon => unsafe { neon::run(p, a, out) },
    }
    Ok(())
}

/// Portable reference.
fn pointwise_scalar(p: &Pointwise<'_>, a: &[f32], out: &mut [f32]) {
    let n = p.n;
    for r in 0..p.rows {
        let o = &mut out[r * n..(r + 1) * n];
        o.copy_from_slice(p.bias);
        let seg_len = p.k / p.segments;
        for (s, ws) in p.weights.chunks_exact(seg_len * n).enumerate() {
            let at = r * p.a_stride + s * p.segment_stride;
            for (&x, w) in a[at..at + seg_len].iter().zip(ws.chunks_exact(n)) {
                for (o, &w) in o.iter_mut().zip(w) {
                    *o += x * w;
                }
            }
        }
        if let Some((res, rs)) = p.residual {
            for (o, &v) in o.iter_mut().zip(&res[r * rs..(r + 1) * rs]) {
                *o += v;
            }
        }
        if p.relu {
            for o in o.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
}

/// The vector operations the tiled kernels (here and in [`depthwise`](super::depthwise)) need.
pub(crate) trait Simd {
    type V: Copy;
    const W: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn splat(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `acc + a · b`.
    unsafe fn fma(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
}

/// Rows `r0..r0+MR`, columns `c0..c0+NV·W`.
///
/// # Safety
/// `p` was checked against `a` and `out`, the tile lies inside, and the CPU runs `S`.
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize>(
    p: &Pointwise<'_>,
    a: *const f32,
    out: *mut f32,
    r0: usize,
    c0: usize,
) {
    let n = p.n;
    let w = p.weights.as_ptr().add(c0);
    let mut acc = [[S::zero(); NV]; MR];
    for row in acc.iter_mut() {
        for (v, x) in row.iter_mut().enumerate() {
            *x = S::load(p.bias.as_ptr().add(c0 + v * S::W));
        }
    }
    let mut ar = [a; MR];
    for (i, x) in ar.iter_mut().enumerate() {
        *x = a.add((r0 + i) * p.a_stride);
    }
    // A plain matrix gets a single loop: with the segment loop around it, LLVM (aarch64) stored
    // all 24 NEON accumulators back to the stack on every step of the inner loop.
    if p.segments == 1 {
        for kk in 0..p.k {
            step::<S, MR, NV>(&mut acc, &ar, w.add(kk * n), kk);
        }
    } else {
        let seg_len = p.k / p.segments;
        for s in 0..p.segments {
            let w = w.add(s * seg_len * n);
            let at = s * p.segment_stride;
            for kk in 0..seg_len {
                step::<S, MR, NV>(&mut acc, &ar, w.add(kk * n), at + kk);
            }
        }
    }
    let zero = S::zero();
    for (i, row) in acc.iter_mut().enumerate() {
        let r = r0 + i;
        for (v, x) in row.iter_mut().enumerate() {
            let c = c0 + v * S::W;
            if let Some((res, rs)) = p.residual {
                if c < rs {
                    *x = S::add(*x, S::load(res.as_ptr().add(r * rs + c)));
                }
            }
            if p.relu {
                *x = S::max(*x, zero);
            }
            S::store(out.add(r * n + c), *x);
        }
    }
}

/// One step of `k`: `acc[i] += a[i][at] · w[0..NV·W]`.
///
/// # Safety
/// As [`tile`]: every pointer is inside its slice and the CPU runs `S`.
#[inline(always)]
unsafe fn step<S: Simd, const MR: usize, const NV: usize>(
    acc: &mut [[S::V; NV]; MR],
    ar: &[*const f32; MR],
    w: *const f32,
    at: usize,
) {
    let mut wv = [S::zero(); NV];
    for (v, x) in wv.iter_mut().enumerate() {
        *x = S::load(w.add(v * S::W));
    }
    for i in 0..MR {
        let b = S::splat(ar[i].add(at));
        for v in 0..NV {
            acc[i][v] = S::fma(acc[i][v], b, wv[v]);
        }
    }
}

/// All columns of rows `r0..r0+MR`, in tiles of `NV` vectors (then what is left).
#[inline(always)]
unsafe fn rows<S: Simd, const MR: usize, const NV: usize, const RV: usize>(
    p: &Pointwise<'_>,
    a: *const f32,
    out: *mut f32,
    r0: usize,
) {
    let step = NV * S::W;
    let mut c0 = 0;
    while c0 + step <= p.n {
        tile::<S, MR, NV>(p, a, out, r0, c0);
        c0 += step;
    }
    // `n` is a multiple of LANES, so what is left is a whole number of LANES-wide groups
    // (`RV` vectors each).
    while c0 < p.n {
        tile::<S, MR, RV>(p, a, out, r0, c0);
        c0 += LANES;
    }
}

/// The whole layer: tiles of `MR` rows × `NV` vectors; `RV` vectors make [`LANES`] columns.
#[inline(always)]
unsafe fn run_generic<S: Simd, const MR: usize, const NV: usize, const RV: usize>(
    p: &Pointwise<'_>,
    a: &[f32],
    out: &mut [f32],
) {
    let (a, o) = (a.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r + MR <= p.rows {
        rows::<S, MR, NV, RV>(p, a, o, r);
        r += MR;
    }
    if MR > 4 && r + 4 <= p.rows {
        rows::<S, 4, NV, RV>(p, a, o, r);
        r += 4;
    }
    if MR > 2 && r + 2 <= p.rows {
        rows::<S, 2, NV, RV>(p, a, o, r);
        r += 2;
    }
    while r < p.rows {
        rows::<S, 1, NV, RV>(p, a, o, r);
        r += 1;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{run_generic, Pointwise, Simd};
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    pub(crate) struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        const W: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> __m256 {
            _mm256_broadcast_ss(&*p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn fma(acc: __m256, a: __m256, b: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, acc)
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `p` was checked against `a` and `out`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(p: &Pointwise<'_>, a: &[f32], out: &mut [f32]) {
        run_generic::<Avx2, 6, 2, 1>(p, a, out)
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use super::{run_generic, Pointwise, Simd};
    use std::arch::aarch64::*;

    /// ARMv8.0 NEON, 4 lanes.
    pub(crate) struct Neon;

    impl Simd for Neon {
        type V = float32x4_t;
        const W: usize = 4;
        #[inline(always)]
        unsafe fn zero() -> float32x4_t {
            vdupq_n_f32(0.0)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            vld1q_f32(p)
        }
        #[inline(always)]
        unsafe fn splat(p: *const f32) -> float32x4_t {
            vld1q_dup_f32(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            vst1q_f32(p, v)
        }
        #[inline(always)]
        unsafe fn fma(acc: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vfmaq_f32(acc, a, b)
        }
        #[inline(always)]
        unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vaddq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vmaxq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vminq_f32(a, b)
        }
    }

    /// # Safety
    /// `p` was checked against `a` and `out` (NEON is mandatory on aarch64).
    pub(super) unsafe fn run(p: &Pointwise<'_>, a: &[f32], out: &mut [f32]) {
        run_generic::<Neon, 4, 6, 2>(p, a, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// f64 direct sum, independent of the kernels' loop structure.
    fn reference(p: &Pointwise<'_>, a: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; p.rows * p.n];
        for r in 0..p.rows {
            for c in 0..p.n {
                let mut s = p.bias[c] as f64;
                let seg_len = p.k / p.segments;
                for k in 0..p.k {
                    let at = r * p.a_stride + (k / seg_len) * p.segment_stride + k % seg_len;
                    s += a[at] as f64 * p.weights[k * p.n + c] as f64;
                }
                if let Some((res, rs)) = p.residual {
                    if c < rs {
                        s += res[r * rs + c] as f64;
                    }
                }
                if p.relu {
                    s = s.max(0.0);
                }
                out[r * p.n + c] = s as f32;
            }
        }
        out
    }

    #[test]
    fn every_path_matches_the_reference() {
        let mut seed = 7u64;
        let mut isas = vec![Isa::Scalar, Isa::detect()];
        isas.dedup();
        for (rows, k, extra, n, res, relu) in [
            (1, 1, 0, 8, None, false),
            (7, 24, 0, 24, Some(24), true),
            (9, 28, 4, 32, Some(32), true),
            (13, 42, 6, 48, Some(48), false),
            (64, 88, 0, 40, None, false),
            (5, 96, 0, 104, Some(96), true),
            (4, 75, 0, 24, None, true),
            (11, 36, 4, 56, Some(40), true),
        ] {
            let a_stride = k + extra;
            let a = rand_vec(rows * a_stride, &mut seed);
            let w = rand_vec(k * n, &mut seed);
            let b = rand_vec(n, &mut seed);
            let rv = res.map(|rs| (rand_vec(rows * rs, &mut seed), rs));
            let p = Pointwise {
                rows,
                k,
                a_stride,
                segments: 1,
                segment_stride: 0,
                n,
                weights: &w,
                bias: &b,
                residual: rv.as_ref().map(|(v, rs)| (v.as_slice(), *rs)),
                relu,
            };
            let want = reference(&p, &a);
            for &isa in &isas {
                let mut out = vec![f32::NAN; rows * n];
                pointwise(isa, &p, &a, &mut out).unwrap();
                let d = crate::detect::kernels::max_abs_diff(&out, &want);
                assert!(d < 1e-4, "{isa:?} rows={rows} k={k} n={n}: {d}");
            }
        }
    }

    /// A 5×5 stride-2 convolution over a channels-last image, one output row per call, with
    /// no im2col (the stem's use): segments are kernel rows.
    #[test]
    fn segmented_rows_match_the_reference() {
        let mut seed = 11u64;
        let mut isas = vec![Isa::Scalar, Isa::detect()];
        isas.dedup();
        let (width, ch, kk, n) = (21usize, 3usize, 5usize, 24usize);
        let img = rand_vec(kk * width * ch, &mut seed);
        let w = rand_vec(kk * kk * ch * n, &mut seed);
        let b = rand_vec(n, &mut seed);
        let rows = (width - kk) / 2 + 1;
        let p = Pointwise {
            rows,
            k: kk * kk * ch,
            a_stride: 2 * ch,
            segments: kk,
            segment_stride: width * ch,
            n,
            weights: &w,
            bias: &b,
            residual: None,
            relu: true,
        };
        let want = reference(&p, &img);
        // Independently: the convolution sum written out.
        for (ox, px) in want.chunks_exact(n).enumerate() {
            for (co, &v) in px.iter().enumerate() {
                let mut s = b[co] as f64;
                for ky in 0..kk {
                    for kx in 0..kk {
                        for ci in 0..ch {
                            let x = img[(ky * width + 2 * ox + kx) * ch + ci];
                            s += x as f64 * w[((ky * kk + kx) * ch + ci) * n + co] as f64;
                        }
                    }
                }
                assert!((s.max(0.0) as f32 - v).abs() < 1e-4);
            }
        }
        for &isa in &isas {
            let mut out = vec![f32::NAN; rows * n];
            pointwise(isa, &p, &img, &mut out).unwrap();
            let d = crate::detect::kernels::max_abs_diff(&out, &want);
            assert!(d < 1e-4, "{isa:?}: {d}");
            // One value short of the last row's last segment is an error, not a read past the end.
            let short = &img[..img.len() - ch * (width - 2 * (rows - 1) - kk) - 1];
            assert!(pointwise(isa, &p, short, &mut out).is_err());
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = vec![0f32; 16];
        let b = vec![0f32; 8];
        let p = Pointwise {
            rows: 2,
            k: 2,
            a_stride: 2,
            segments: 1,
            segment_stride: 0,
            n: 8,
            weights: &w,
            bias: &b,
            residual: None,
            relu: false,
        };
        let mut out = vec![0f32; 16];
        assert!(pointwise(Isa::Scalar, &p, &[0.0; 4], &mut out).is_ok());
        assert!(pointwise(Isa::detect(), &p, &[0.0; 3], &mut out).is_err());
        assert!(pointwise(Isa::detect(), &p, &[0.0; 4], &mut out[..8]).is_err());
        let q = Pointwise { n: 6, ..p };
        assert!(pointwise(Isa::detect(), &q, &[0.0; 4], &mut out).is_err());
        let r = Pointwise {
            residual: Some((&[0.0; 8], 8)),
            ..p
        };
        assert!(pointwise(Isa::detect(), &r, &[0.0; 4], &mut out).is_err());
        let w3 = vec![0f32; 24];
        let s = Pointwise {
            k: 3,
            segments: 2,
            segment_stride: 4,
            weights: &w3,
            ..p
        };
        assert!(pointwise(Isa::detect(), &s, &[0.0; 16], &mut out).is_err());
        let s = Pointwise {
            k: 2,
            segments: 2,
            segment_stride: 0,
            ..p
        };
        assert!(pointwise(Isa::detect(), &s, &[0.0; 16], &mut out).is_err());
    }
}
