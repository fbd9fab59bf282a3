//! Face crops for the PAD networks, following Silent-Face-Anti-Spoofing's `CropImage`
//! (`src/generate_patches.py`, minivision-ai, commit b6d5f04):
//!
//! 1. the face box `(x, y, w, h)` is scaled by `scale` around its centre, the scale first limited
//!    so the box fits the image (`min((H-1)/h, (W-1)/w, scale)`), then shifted back inside the
//!    image and truncated to integers exactly as upstream `_get_new_box` does;
//! 2. the inclusive pixel box is cut out and resized to 80×80 with OpenCV `INTER_LINEAR`
//!    semantics (half-pixel centres, 11-bit fixed-point weights, the SIMD rounding of
//!    `VResizeLinearVec_32s8u`), see [`resize_linear_u8`];
//! 3. the result is handed to the network in B, G, R order, raw 0–255.

use image::RgbImage;

use super::DetectError;

/// Inclusive box `(left, top, right, bottom)` in pixels, as upstream `_get_new_box` returns it.
pub fn new_box(
    src_w: u32,
    src_h: u32,
    bbox: [f32; 4],
    scale: f32,
) -> Result<[i64; 4], DetectError> {
    let [x, y, bw, bh] = bbox.map(f64::from);
    let bad = |m: &str| DetectError::Model(format!("crop: {m} (box {bbox:?}, scale {scale})"));
    if !(bw > 0.0 && bh > 0.0 && x.is_finite() && y.is_finite() && bw.is_finite() && bh.is_finite())
    {
        return Err(bad(
            "face box must have a finite position and positive size",
        ));
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(bad("scale must be positive"));
    }
    if src_w < 2 || src_h < 2 {
        return Err(bad("image smaller than 2x2"));
    }
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    // Upstream works in Python floats (f64) with the scale parsed from the model name ("2.7");
    // recover that decimal from the f32 (2.7f32 is 2.70000005, which would shift boxes by one
    // pixel at integer boundaries).
    let scale = (f64::from(scale) * 1e6).round() / 1e6;
    let scale = ((sh - 1.0) / bh).min(((sw - 1.0) / bw).min(scale));
    let new_w = bw * scale;
    let new_h = bh * scale;
    let (cx, cy) = (bw / 2.0 + x, bh / 2.0 + y);
    let mut l = cx - new_w / 2.0;
    let mut t = cy - new_h / 2.0;
    let mut r = cx + new_w / 2.0;
    let mut b = cy + new_h / 2.0;
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > sw - 1.0 {
        l -= r - sw + 1.0;
        r = sw - 1.0;
    }
    if b > sh - 1.0 {
        t -= b - sh + 1.0;
        b = sh - 1.0;
    }
    // Python int() truncates toward zero. The clamps below only matter for float noise; upstream
    // numpy slicing would clamp the same way.
    let trunc = |v: f64, hi: f64| v.trunc().clamp(0.0, hi) as i64;
    Ok([
        trunc(l, sw - 1.0),
        trunc(t, sh - 1.0),
        trunc(r, sw - 1.0),
        trunc(b, sh - 1.0),
    ])
}

/// Crop `bbox` scaled by `scale` from `img` and resize to `out_w`×`out_h`; returns packed B,G,R
/// bytes, row-major.
pub fn crop_bgr(
    img: &RgbImage,
    bbox: [f32; 4],
    scale: f32,
    out_w: usize,
    out_h: usize,
) -> Result<Vec<u8>, DetectError> {
    let [l, t, r, b] = new_box(img.width(), img.height(), bbox, scale)?;
    let (l, t, r, b) = (l as usize, t as usize, r as usize, b as usize);
    let (cw, ch) = (r - l + 1, b - t + 1);
    let iw = img.width() as usize;
    let raw = img.as_raw();
    let mut patch = Vec::with_capacity(cw * ch * 3);
    for y in t..=b {
        let row = &raw[(y * iw + l) * 3..(y * iw + r + 1) * 3];
        for px in row.chunks_exact(3) {
            patch.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    resize_linear_u8(&patch, cw, ch, 3, out_w, out_h)
}

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Per output coordinate: source index and the two fixed-point weights (OpenCV `resize`,
/// `INTER_LINEAR`, 8-bit path).
fn linear_coeffs(src: usize, dst: usize) -> Vec<(usize, i32, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if s < 0 {
                f = 0.0;
                s = 0;
            }
            if s >= src as i64 - 1 {
                f = 0.0;
                s = src as i64 - 1;
            }
            // saturate_cast<short>(float) rounds half to even (cvRound).
            let a0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let a1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s as usize, a0, a1)
        })
        .collect()
}

/// Bilinear resize of packed 8-bit pixels with `cn` channels, matching `cv2.resize(...,
/// interpolation=INTER_LINEAR)`: horizontal pass into 32-bit sums with 11-bit weights, vertical
/// pass with the SIMD rounding `((b0·(S0>>4))>>16 + (b1·(S1>>4))>>16 + 2) >> 2`.
pub fn resize_linear_u8(
    src: &[u8],
    sw: usize,
    sh: usize,
    cn: usize,
    dw: usize,
    dh: usize,
) -> Result<Vec<u8>, DetectError> {
    if sw == 0 || sh == 0 || cn == 0 || dw == 0 || dh == 0 || src.len() != sw * sh * cn {
        return Err(DetectError::Model(format!(
            "resize: bad geometry {sw}x{sh}x{cn} ({} bytes) -> {dw}x{dh}",
            src.len()
        )));
    }
    let xc = linear_coeffs(sw, dw);
    let yc = linear_coeffs(sh, dh);
    // Horizontal pass for every source row that is used (at most all of them).
    let hrow = |y: usize, buf: &mut Vec<i32>| {
        buf.clear();
        let row = &src[y * sw * cn..(y + 1) * sw * cn];
        for &(sx, a0, a1) in &xc {
            let sx1 = (sx + 1).min(sw - 1);
            for k in 0..cn {
                let v0 = i32::from(row[sx * cn + k]);
                let v1 = i32::from(row[sx1 * cn + k]);
                buf.push(v0 * a0 + v1 * a1);
            }
        }
    };
    let mut out = Vec::with_capacity(dw * dh * cn);
    let (mut r0, mut r1) = (Vec::new(), Vec::new());
    for &(sy, b0, b1) in &yc {
        let sy1 = (sy + 1).min(sh - 1);
        hrow(sy, &mut r0);
        hrow(sy1, &mut r1);
        let (b0, b1) = (b0 as i16 as i32, b1 as i16 as i32);
        for (&s0, &s1) in r0.iter().zip(&r1) {
            // v_pack saturates to i16; v_mul_hi is the high half of the 16x16 product.
            let p0 = (s0 >> 4).clamp(i16::MIN as i32, i16::MAX as i32);
            let p1 = (s1 >> 4).clamp(i16::MIN as i32, i16::MAX as i32);
            let v = (((b0 * p0) >> 16) + ((b1 * p1) >> 16) + 2) >> 2;
            out.push(v.clamp(0, 255) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_is_scaled_around_centre_when_it_fits() {
        // 100x100 box at (200,200) in 640x480, scale 2.7 -> 270 wide, centred at 250.
        let b = new_box(640, 480, [200.0, 200.0, 100.0, 100.0], 2.7).unwrap();
        assert_eq!(b, [115, 115, 385, 385]);
    }

    #[test]
    fn box_is_shifted_inside_and_scale_limited() {
        // Scale limited by height: (480-1)/200 = 2.395 < 4.
        let b = new_box(640, 480, [0.0, 0.0, 200.0, 200.0], 4.0).unwrap();
        assert_eq!(b[1], 0);
        assert_eq!(b[3], 479);
        assert_eq!(b[0], 0);
        assert_eq!(b[2], 479);
        // A box near the right edge is shifted left, keeping its size.
        let b = new_box(640, 480, [600.0, 100.0, 40.0, 40.0], 2.0).unwrap();
        assert_eq!(b[2], 639);
        assert_eq!(b[0], 639 - 80);
    }

    #[test]
    fn bad_boxes_are_errors_not_panics() {
        assert!(new_box(640, 480, [0.0, 0.0, 0.0, 10.0], 2.7).is_err());
        assert!(new_box(640, 480, [f32::NAN, 0.0, 10.0, 10.0], 2.7).is_err());
        assert!(new_box(1, 480, [0.0, 0.0, 10.0, 10.0], 2.7).is_err());
        assert!(resize_linear_u8(&[0; 5], 2, 2, 1, 4, 4).is_err());
    }

    #[test]
    fn resize_identity_and_constant() {
        let src: Vec<u8> = (0..(7 * 5 * 3)).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_linear_u8(&src, 7, 5, 3, 7, 5).unwrap(), src);
        let flat = vec![200u8; 33 * 17 * 3];
        let out = resize_linear_u8(&flat, 33, 17, 3, 80, 80).unwrap();
        assert!(out.iter().all(|&v| v == 200));
    }

    #[test]
    fn resize_2x_upscale_interpolates_midpoints() {
        // 1-D ramp 0, 100 -> 4 pixels: positions -0.25, 0.25, 0.75, 1.25 -> 0, 25, 75, 100.
        let out = resize_linear_u8(&[0, 100], 2, 1, 1, 4, 1).unwrap();
        assert_eq!(out, vec![0, 25, 75, 100]);
    }

    #[test]
    fn crop_reorders_to_bgr() {
        let img = RgbImage::from_fn(50, 40, |_, _| image::Rgb([10, 20, 30]));
        let out = crop_bgr(&img, [10.0, 10.0, 10.0, 10.0], 2.7, 80, 80).unwrap();
        assert_eq!(out.len(), 80 * 80 * 3);
        assert_eq!(&out[..3], &[30, 20, 10]);
    }
}
