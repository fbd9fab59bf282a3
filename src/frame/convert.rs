//! Pixel conversions done in software: YUYV (YUV 4:2:2) to RGB.
//!
//! BT.601 limited range ("studio swing"), the encoding UVC cameras use for YUYV, in fixed point:
//! `R = 1.164(Y−16) + 1.596(V−128)`, `G = 1.164(Y−16) − 0.392(U−128) − 0.813(V−128)`,
//! `B = 1.164(Y−16) + 2.017(U−128)`.

use super::FrameError;

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

#[inline]
fn px(c: i32, d: i32, e: i32) -> [u8; 3] {
    // Coefficients scaled by 256.
    [
        clamp((298 * c + 409 * e + 128) >> 8),
        clamp((298 * c - 100 * d - 208 * e + 128) >> 8),
        clamp((298 * c + 516 * d + 128) >> 8),
    ]
}

/// Convert a packed YUYV buffer of `width`×`height` into packed RGB24. Rows must be tightly
/// packed (`bytesperline == 2*width`); extra trailing bytes (some drivers pad the buffer) are
/// ignored.
pub fn yuyv_to_rgb(src: &[u8], width: u32, height: u32) -> Result<Vec<u8>, FrameError> {
    let (w, h) = (width as usize, height as usize);
    if w % 2 != 0 {
        return Err(FrameError::Convert(format!("YUYV width {w} is odd")));
    }
    let need = w * h * 2;
    if src.len() < need {
        return Err(FrameError::Convert(format!(
            "YUYV buffer has {} bytes, {w}x{h} needs {need}",
            src.len()
        )));
    }
    let mut out = Vec::with_capacity(w * h * 3);
    for chunk in src[..need].chunks_exact(4) {
        let y0 = chunk[0] as i32 - 16;
        let u = chunk[1] as i32 - 128;
        let y1 = chunk[2] as i32 - 16;
        let v = chunk[3] as i32 - 128;
        out.extend_from_slice(&px(y0, u, v));
        out.extend_from_slice(&px(y1, u, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Black, white, and BT.601 100% red (Y=81, U=90, V=240 → (255,0,0)).
        let src = [16, 128, 235, 128, 81, 90, 81, 240];
        let rgb = yuyv_to_rgb(&src, 4, 1).unwrap();
        assert_eq!(&rgb[0..3], &[0, 0, 0]);
        assert_eq!(&rgb[3..6], &[255, 255, 255]);
        let red = &rgb[6..9];
        assert!(red[0] >= 253, "{red:?}");
        assert!(red[1] <= 2 && red[2] <= 2, "{red:?}");
        // Pure grey stays grey.
        let g = yuyv_to_rgb(&[126, 128, 126, 128], 2, 1).unwrap();
        assert_eq!(g, vec![128, 128, 128, 128, 128, 128]);
    }

    #[test]
    fn rejects_short_and_odd() {
        assert!(yuyv_to_rgb(&[0; 6], 2, 2).is_err());
        assert!(yuyv_to_rgb(&[0; 12], 3, 1).is_err());
    }
}
