//! Step 1 of BlazeFace: the letterbox. Scale the frame to fit 128×128 keeping its aspect ratio
//! (area averaging, as PIL's `BOX` filter), centre it on a black canvas, map pixels to `[-1, 1]`.

use image::RgbImage;

use super::INPUT;
#[cfg(target_arch = "x86_64")]
use crate::detect::kernels::pointwise::Isa;
use crate::detect::DetectError;

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

/// The network input for the average of `n` 8-bit values summing to `s`: the average rounded
/// half up to 8 bits as PIL does, `(2s + n) / 2n` in integers, mapped to `[-1, 1]`.
///
/// In floats, branch-free, so a row of them vectorises (an integer division per value cost more
/// than the rest of the letterbox): the quotient estimate is corrected by one either way, and
/// every product is an integer below 2^24, so exact.
#[inline(always)]
fn level_of(s: f32, n: f32) -> f32 {
    let (num, d) = (2.0 * s + n, 2.0 * n);
    let mut q = ((num / d) as i32) as f32;
    q += f32::from(u8::from((q + 1.0) * d <= num));
    q -= f32::from(u8::from(q * d > num));
    q.min(255.0) / 127.5 - 1.0
}

/// The letterbox of one frame size: where the scaled frame sits in the input, the source
/// pixels each output column and row averages, and, when every box is the same `kx × ky` block,
/// a table of the rounded levels. Built once per frame size (the detector keeps it).
#[derive(Debug, Clone)]
pub(super) struct BoxPlan {
    /// Source width and height.
    pub(super) src: (usize, usize),
    lb: Letterbox,
    xr: Vec<(usize, usize)>,
    yr: Vec<(usize, usize)>,
    /// `Some(k)` when output column `i` covers source columns `k·i .. k·(i + 1)` for every `i`
    /// (640 → 128: 5), so the column sums reduce with a fixed-length loop.
    kx: Option<usize>,
    /// `lut[s]` = [`level_of`]`(s, n)` for `s ≤ 255·n`, when every box has the same `n` pixels
    /// (`n ≤ 100`, at most 100 KiB: up to 1280×720 frames); empty otherwise.
    lut: Vec<f32>,
}

/// `Some(k)` when `ranges[i] == (k·i, k·(i + 1))` for every `i`.
fn uniform(ranges: &[(usize, usize)]) -> Option<usize> {
    let k = ranges.first().map(|&(a, b)| b - a)?;
    let ok = ranges
        .iter()
        .enumerate()
        .all(|(i, &r)| r == (k * i, k * (i + 1)));
    ok.then_some(k)
}

/// Largest box (pixels) that gets a rounding table.
const LUT_MAX_PIXELS: usize = 100;

impl BoxPlan {
    pub(super) fn new(w: usize, h: usize) -> Result<Self, DetectError> {
        if w == 0 || h == 0 {
            return Err(DetectError::Model("empty image".into()));
        }
        let scale = INPUT as f64 / w.max(h) as f64;
        let nw = ((w as f64 * scale).round() as usize).clamp(1, INPUT);
        let nh = ((h as f64 * scale).round() as usize).clamp(1, INPUT);
        let lb = Letterbox {
            scale: scale as f32,
            offset: [(INPUT - nw) / 2, (INPUT - nh) / 2],
            size: [nw, nh],
        };
        let (xr, yr) = (box_ranges(w, nw), box_ranges(h, nh));
        let kx = uniform(&xr);
        let lut = match (kx, uniform(&yr)) {
            (Some(kx), Some(ky)) if kx * ky <= LUT_MAX_PIXELS => {
                let n = (kx * ky) as u32;
                (0..=255 * n)
                    .map(|s| level_of(s as f32, n as f32))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Self {
            src: (w, h),
            lb,
            xr,
            yr,
            kx,
            lut,
        })
    }
}

/// Box sums of `K` pixels per output: `sums[3i + c] = Σ_{j<K} acc[3(K·i + j) + c]`.
#[inline(always)]
fn sums_k<T: Copy + Into<u32>, const K: usize>(acc: &[T], sums: &mut [u32]) {
    for (o, p) in sums.chunks_exact_mut(3).zip(acc.chunks_exact(3 * K)) {
        let mut s = [0u32; 3];
        for j in 0..K {
            for (c, s) in s.iter_mut().enumerate() {
                *s += p[3 * j + c].into();
            }
        }
        o.copy_from_slice(&s);
    }
}

/// Box sums of the column sums `acc` over each output column's range.
#[inline(always)]
fn box_sums<T: Copy + Into<u32>>(acc: &[T], plan: &BoxPlan, sums: &mut [u32]) {
    match plan.kx {
        // The frame sizes cameras give (640 → 128: 5; 1280: 10; 1920: 15; 320: 2.5, uneven).
        Some(2) => sums_k::<T, 2>(acc, sums),
        Some(3) => sums_k::<T, 3>(acc, sums),
        Some(4) => sums_k::<T, 4>(acc, sums),
        Some(5) => sums_k::<T, 5>(acc, sums),
        Some(6) => sums_k::<T, 6>(acc, sums),
        Some(8) => sums_k::<T, 8>(acc, sums),
        Some(10) => sums_k::<T, 10>(acc, sums),
        Some(15) => sums_k::<T, 15>(acc, sums),
        _ => {
            for (o, &(x0, x1)) in sums.chunks_exact_mut(3).zip(&plan.xr) {
                let mut s = [0u32; 3];
                for px in acc[x0 * 3..x1 * 3].chunks_exact(3) {
                    for (s, &v) in s.iter_mut().zip(px) {
                        *s += v.into();
                    }
                }
                o.copy_from_slice(&s);
            }
        }
    }
}

/// The box filter over interleaved RGB rows of width `w`: `emit(out_y, out_x, rgb)` with the
/// network input levels of the rounded averages ([`level_of`]).
#[inline(always)]
fn box_rows<T>(src: &[u8], w: usize, plan: &BoxPlan, mut emit: impl FnMut(usize, usize, [f32; 3]))
where
    T: Copy + Default + From<u8> + std::ops::AddAssign + Into<u32>,
{
    let nx = plan.xr.len() * 3;
    let mut acc = vec![T::default(); w * 3];
    let mut sums = vec![0u32; nx];
    let (mut fsums, mut counts, mut vals) = (vec![0f32; nx], vec![0f32; nx], vec![0f32; nx]);
    for (oyi, &(y0, y1)) in plan.yr.iter().enumerate() {
        let mut rows = src[y0 * w * 3..y1 * w * 3].chunks_exact(w * 3);
        if let Some(first) = rows.next() {
            for (a, &p) in acc.iter_mut().zip(first) {
                *a = T::from(p);
            }
        }
        for row in rows {
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += T::from(p);
            }
        }
        box_sums(&acc, plan, &mut sums);
        if let Some(top) = plan.lut.len().checked_sub(1) {
            // Every box has the table's pixel count, so every sum is ≤ `top` (the clamp only
            // keeps the index provably in bounds).
            for (v, &s) in vals.iter_mut().zip(&sums) {
                *v = plan.lut[(s as usize).min(top)];
            }
        } else {
            // Sums and pixel counts as plain float slices, then the rounding in one
            // branch-free pass (which the compiler vectorises).
            let ny = (y1 - y0) as u32;
            for (i, &(x0, x1)) in plan.xr.iter().enumerate() {
                let n = (ny * (x1 - x0) as u32) as f32;
                for ch in 0..3 {
                    fsums[i * 3 + ch] = sums[i * 3 + ch] as f32;
                    counts[i * 3 + ch] = n;
                }
            }
            for ((v, &s), &n) in vals.iter_mut().zip(&fsums).zip(&counts) {
                *v = level_of(s, n);
            }
        }
        for (oxi, px) in vals.chunks_exact(3).enumerate() {
            emit(oyi, oxi, [px[0], px[1], px[2]]);
        }
    }
}

/// Box-filter `img` into its letterbox inside the 128×128 input: `emit(y, x, rgb)` for every
/// content pixel (input coordinates, values in `[-1, 1]`); the caller fills the rest black.
/// `plan` is `img`'s size's.
pub(super) fn letterbox_pixels(
    img: &RgbImage,
    plan: &BoxPlan,
    mut emit: impl FnMut(usize, usize, [f32; 3]),
) -> Result<Letterbox, DetectError> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if plan.src != (w, h) {
        return Err(DetectError::Model(format!(
            "letterbox planned for {:?}, image is {w}x{h}",
            plan.src
        )));
    }
    let src = img.as_raw();
    let [ox, oy] = plan.lb.offset;
    // Column sums of the source rows each output row covers, then box sums across. The column
    // sums are u16 (twice the values per vector instruction) while they cannot overflow.
    if plan
        .yr
        .iter()
        .all(|&(y0, y1)| (y1 - y0) * 255 <= u16::MAX as usize)
    {
        let emit = |y, x, v| emit(oy + y, ox + x, v);
        #[cfg(target_arch = "x86_64")]
        if Isa::detect() == Isa::Avx2 {
            // SAFETY: `Isa::Avx2` means the CPU has AVX2.
            unsafe { box_rows_avx2(src, w, plan, emit) };
            return Ok(plan.lb);
        }
        box_rows::<u16>(src, w, plan, emit);
    } else {
        box_rows::<u32>(src, w, plan, |y, x, v| emit(oy + y, ox + x, v));
    }
    Ok(plan.lb)
}

/// [`box_rows`] compiled for AVX2 (16 column sums, 8 roundings per instruction).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn box_rows_avx2(
    src: &[u8],
    w: usize,
    plan: &BoxPlan,
    emit: impl FnMut(usize, usize, [f32; 3]),
) {
    box_rows::<u16>(src, w, plan, emit)
}

/// Letterbox `img` into a 3×128×128 (CHW) tensor in `[-1, 1]`, black padding.
pub fn letterbox(img: &RgbImage) -> Result<(Vec<f32>, Letterbox), DetectError> {
    let plane = INPUT * INPUT;
    let mut out = vec![-1.0f32; 3 * plane];
    let plan = BoxPlan::new(img.width() as usize, img.height() as usize)?;
    let lb = letterbox_pixels(img, &plan, |y, x, v| {
        for (c, v) in v.into_iter().enumerate() {
            out[c * plane + y * INPUT + x] = v;
        }
    })?;
    Ok((out, lb))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The u16, u32 and (where the CPU has it) AVX2 builds of the box filter agree exactly, and
    /// so do the fast paths for uniform boxes (fixed-length sums, rounding table) with the
    /// general ones, for uniform (640×480, 1280×720; 1920×1080: no table) and uneven (333×250,
    /// 320×240) frame sizes.
    #[test]
    fn box_filter_builds_agree() {
        for (w, h, kx, table) in [
            (333usize, 250usize, None, false),
            (320, 240, None, false),
            (640, 480, Some(5), true),
            (1280, 720, Some(10), true),
            (1920, 1080, Some(15), false),
        ] {
            let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
                image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (x * y / 3) as u8])
            });
            let plan = BoxPlan::new(w, h).unwrap();
            assert_eq!(plan.kx, kx, "{w}x{h}");
            assert_eq!(!plan.lut.is_empty(), table, "{w}x{h}");
            let general = BoxPlan {
                kx: None,
                lut: Vec::new(),
                ..plan.clone()
            };
            let n = 128 * 128 * 3;
            type Emit<'a> = &'a mut dyn FnMut(usize, usize, [f32; 3]);
            let run = |f: &dyn Fn(Emit)| {
                let mut v = vec![f32::NAN; n];
                f(&mut |y, x, px| v[(y * 128 + x) * 3..][..3].copy_from_slice(&px));
                v
            };
            let src = img.as_raw();
            let a = run(&|e| box_rows::<u16>(src, w, &plan, e));
            let content = a.iter().filter(|v| !v.is_nan()).count();
            assert_eq!(content, plan.lb.size[0] * plan.lb.size[1] * 3, "{w}x{h}");
            assert!(a.iter().all(|v| v.is_nan() || (-1.0..=1.0).contains(v)));
            let same = |b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&run(&|e| box_rows::<u32>(src, w, &plan, e))),
                "{w}x{h}"
            );
            assert!(
                same(&run(&|e| box_rows::<u16>(src, w, &general, e))),
                "{w}x{h}"
            );
            #[cfg(target_arch = "x86_64")]
            if Isa::detect() == Isa::Avx2 {
                // SAFETY: the CPU has AVX2 (checked just above).
                let c = run(&|e| unsafe { box_rows_avx2(src, w, &plan, e) });
                assert!(same(&c), "{w}x{h}");
            }
        }
    }

    #[test]
    fn float_rounding_division_is_exact() {
        for n in (1..=300u32).chain([625, 1024, 4096, 10_000]) {
            for s in 0..=255 * n {
                let want = ((2 * s + n) / (2 * n)) as f32 / 127.5 - 1.0;
                assert_eq!(level_of(s as f32, n as f32), want, "{s}/{n}");
            }
        }
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
}
