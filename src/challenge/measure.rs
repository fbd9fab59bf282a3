//! Per-frame measurement: the face region's and the background's mean linear luminance, and the
//! face's luminance on a 3×3 grid (the spatial structure of the response).

use std::sync::OnceLock;

use image::RgbImage;

/// Cells per side of the face grid.
pub const GRID: usize = 3;

/// What one frame shows, in linear light (0 = black, 1 = full scale).
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Mean linear luminance of the face's inner region.
    pub face: f32,
    /// Mean linear luminance of the background (left and right strips of the frame, away from
    /// the face).
    pub background: f32,
    /// Mean linear luminance of each cell of the face's inner region, row by row.
    pub cells: [f32; GRID * GRID],
}

/// sRGB code value → linear light (IEC 61966-2-1).
fn linear_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(|| {
        let mut t = [0f32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            let c = i as f32 / 255.0;
            *v = if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            };
        }
        t
    })
}

/// Rec. 709 luminance of an sRGB pixel, in linear light.
pub fn luminance(p: [u8; 3]) -> f32 {
    let l = linear_lut();
    0.2126 * l[p[0] as usize] + 0.7152 * l[p[1] as usize] + 0.0722 * l[p[2] as usize]
}

/// Measure `img` with the face at `bbox` (x, y, w, h in pixels). `None` when the face's inner
/// region or the background has no pixels in the frame.
///
/// The face's inner region is the central 70 % of the box's width and 80 % of its height (skin,
/// not hair or the background at the box's corners). The background is the outer 12 % of the
/// frame on the left and right, minus the face box grown by half its size.
pub fn measure(img: &RgbImage, bbox: [f32; 4]) -> Option<Measurement> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let [bx, by, bw, bh] = bbox;
    if !(bw > 0.0 && bh > 0.0 && bx.is_finite() && by.is_finite()) {
        return None;
    }
    let x0 = (bx + 0.15 * bw).max(0.0);
    let x1 = (bx + 0.85 * bw).min(w);
    let y0 = (by + 0.10 * bh).max(0.0);
    let y1 = (by + 0.90 * bh).min(h);
    if x1 - x0 < GRID as f32 || y1 - y0 < GRID as f32 {
        return None;
    }
    let mut sums = [0f64; GRID * GRID];
    let mut counts = [0u32; GRID * GRID];
    let (cw, ch) = ((x1 - x0) / GRID as f32, (y1 - y0) / GRID as f32);
    for y in (y0 as u32)..(y1 as u32) {
        let gy = (((y as f32 - y0) / ch) as usize).min(GRID - 1);
        for x in (x0 as u32)..(x1 as u32) {
            let gx = (((x as f32 - x0) / cw) as usize).min(GRID - 1);
            sums[gy * GRID + gx] += luminance(img.get_pixel(x, y).0) as f64;
            counts[gy * GRID + gx] += 1;
        }
    }
    if counts.contains(&0) {
        return None;
    }
    let mut cells = [0f32; GRID * GRID];
    for i in 0..cells.len() {
        cells[i] = (sums[i] / counts[i] as f64) as f32;
    }
    let face = cells.iter().sum::<f32>() / cells.len() as f32;

    // Background: outer strips, every second pixel, outside the grown face box.
    let (gx0, gx1) = (bx - 0.5 * bw, bx + 1.5 * bw);
    let (gy0, gy1) = (by - 0.5 * bh, by + 1.5 * bh);
    let strip = (0.12 * w) as u32;
    let (mut bsum, mut bn) = (0f64, 0u32);
    for y in (0..img.height()).step_by(2) {
        for x in (0..strip)
            .step_by(2)
            .chain((img.width().saturating_sub(strip)..img.width()).step_by(2))
        {
            let (fx, fy) = (x as f32, y as f32);
            if fx >= gx0 && fx < gx1 && fy >= gy0 && fy < gy1 {
                continue;
            }
            bsum += luminance(img.get_pixel(x, y).0) as f64;
            bn += 1;
        }
    }
    if bn == 0 {
        return None;
    }
    Some(Measurement {
        face,
        background: (bsum / bn as f64) as f32,
        cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_luminance_endpoints() {
        assert_eq!(luminance([0, 0, 0]), 0.0);
        assert!((luminance([255, 255, 255]) - 1.0).abs() < 1e-5);
        // sRGB 128 is about 21.6 % linear light.
        assert!((luminance([128, 128, 128]) - 0.2158).abs() < 1e-3);
    }

    #[test]
    fn face_cells_and_background_are_measured_apart() {
        let mut img = RgbImage::from_pixel(200, 100, image::Rgb([50, 50, 50]));
        for y in 20..80 {
            for x in 70..130 {
                img.put_pixel(x, y, image::Rgb([200, 200, 200]));
            }
        }
        // Brighten the face's top-left cell only.
        for y in 26..44 {
            for x in 79..93 {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let m = measure(&img, [70.0, 20.0, 60.0, 60.0]).unwrap();
        assert!((m.background - luminance([50, 50, 50])).abs() < 1e-6);
        assert!(m.cells[0] > m.cells[4]);
        assert!((m.cells[4] - luminance([200, 200, 200])).abs() < 1e-6);
        assert!(m.face > m.cells[4]);
    }

    #[test]
    fn degenerate_boxes_are_refused() {
        let img = RgbImage::new(64, 48);
        assert!(measure(&img, [0.0, 0.0, 0.0, 10.0]).is_none());
        assert!(measure(&img, [f32::NAN, 0.0, 10.0, 10.0]).is_none());
        assert!(measure(&img, [100.0, 100.0, 10.0, 10.0]).is_none());
        // A face filling the frame leaves no background.
        assert!(measure(&img, [0.0, 0.0, 64.0, 48.0]).is_none());
    }
}
