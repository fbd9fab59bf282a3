//! A moving test pattern (colour bars with a sweeping bar), emitted as raw RGB24 at a fixed rate.

use std::sync::Arc;

use super::{Capture, CaptureError, FrameSource};
use crate::frame::{Frame, PixelFormat, SourceInfo};
use crate::shutdown::Shutdown;

pub struct Synthetic {
    info: Arc<SourceInfo>,
    pacer: super::Pacer,
    n: u64,
}

impl Synthetic {
    pub fn new(width: u32, height: u32, fps: f64) -> Self {
        Self {
            info: Arc::new(SourceInfo {
                kind: "synthetic".into(),
                path: "synthetic".into(),
                driver: "synthetic".into(),
                card: "moving colour bars".into(),
                bus: String::new(),
                format: PixelFormat::Rgb24,
                width,
                height,
                fps,
            }),
            pacer: super::Pacer::new(fps),
            n: 0,
        }
    }

    /// Pattern number `n` as a JPEG (quality 85): a camera-like MJPEG frame for benches and tests.
    pub fn jpeg(width: u32, height: u32, n: u64) -> Result<Vec<u8>, image::ImageError> {
        let rgb = Self::render(width, height, n);
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode(
            &rgb,
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(out)
    }

    /// Render pattern number `n`.
    pub fn render(width: u32, height: u32, n: u64) -> Vec<u8> {
        const BARS: [[u8; 3]; 8] = [
            [235, 235, 235],
            [235, 235, 16],
            [16, 235, 235],
            [16, 235, 16],
            [235, 16, 235],
            [235, 16, 16],
            [16, 16, 235],
            [16, 16, 16],
        ];
        let (w, h) = (width as usize, height as usize);
        let sweep = (n as usize * 8) % w.max(1);
        let mut out = vec![0u8; w * h * 3];
        for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
            for (x, p) in row.chunks_exact_mut(3).enumerate() {
                let c = if x.abs_diff(sweep) < 6 {
                    [255, 128, 0]
                } else {
                    BARS[x * 8 / w.max(1)]
                };
                let shade = if (y / 32 + x / 32) % 2 == 0 { 0 } else { 8 };
                p.copy_from_slice(&[
                    c[0] - shade.min(c[0]),
                    c[1] - shade.min(c[1]),
                    c[2] - shade.min(c[2]),
                ]);
            }
        }
        out
    }
}

impl FrameSource for Synthetic {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        self.pacer.wait(shutdown)?;
        let bytes = Self::render(self.info.width, self.info.height, self.n);
        self.n += 1;
        Ok(Capture::Frame(Frame::captured_now(
            self.info.clone(),
            PixelFormat::Rgb24,
            self.info.width,
            self.info.height,
            bytes.into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_moves() {
        let a = Synthetic::render(64, 8, 0);
        let b = Synthetic::render(64, 8, 1);
        assert_eq!(a.len(), 64 * 8 * 3);
        assert_ne!(a, b);
    }
}
