//! Frames: what a source hands out ([`Frame`], [`PixelFormat`], [`SourceInfo`]) and what is done
//! to a frame's pixels: YUYV→RGB conversion ([`convert`]), decoding ([`Frame::rgb`]) and the
//! encoding a frame is stored under ([`stored_image`]).
//!
//! A YUYV frame is converted to RGB once: the analyser's conversion is kept in the frame
//! ([`Decoded`]) and the sealer PNG-encodes those pixels. Encoded frames (JPEG, PNG) are decoded
//! only by the analyser; the sealer stores their bytes untouched.
//!
//! This module sits at the bottom of the dependency order: it imports no other Veriframe module.

pub mod convert;
pub mod identity;
pub mod samples;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use image::RgbImage;
use serde::Serialize;

/// Errors converting, decoding or encoding a frame's pixels. The message is the whole reason;
/// callers add which frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame conversion failed: {0}")]
    Convert(String),
    /// The image codec's message.
    #[error("{0}")]
    Decode(String),
    #[error("{0}")]
    Size(String),
    #[error("{0}")]
    Encode(String),
}

/// How a frame's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// JPEG (camera MJPEG or a JPEG file).
    Jpeg,
    /// PNG file.
    Png,
    /// Packed YUV 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Packed 8-bit R, G, B.
    Rgb24,
}

impl PixelFormat {
    pub fn is_encoded(self) -> bool {
        matches!(self, PixelFormat::Jpeg | PixelFormat::Png)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Jpeg => "jpeg",
            PixelFormat::Png => "png",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Rgb24 => "rgb24",
        })
    }
}

/// Identity of the source a frame came from; goes into every sealed manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    /// `v4l2`, `replay` or `synthetic`.
    pub kind: String,
    /// Device path, file/directory path, or `synthetic`.
    pub path: String,
    /// Driver name (V4L2 `driver`), or the source kind for non-camera sources.
    pub driver: String,
    /// Card name (V4L2 `card`), or a description.
    pub card: String,
    /// Bus info (V4L2 `bus_info`), empty otherwise.
    pub bus: String,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second.
    pub fps: f64,
}

/// One captured frame.
#[derive(Clone)]
pub struct Frame {
    /// Sequence number assigned by the capture stage, contiguous within one run.
    pub seq: u64,
    /// Driver's own sequence number (V4L2 buffer `sequence`), when there is one.
    pub device_seq: Option<u64>,
    /// Wall-clock capture time.
    pub captured_wall: SystemTime,
    /// Monotonic capture time (CLOCK_MONOTONIC since boot).
    pub captured_mono: Duration,
    pub source: Arc<SourceInfo>,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// The source's original bytes, untouched.
    pub bytes: Arc<[u8]>,
    /// For replay sources: the file this frame came from.
    pub origin: Option<PathBuf>,
    /// The pixels as RGB once converted (see [`Frame::rgb`]); start with `Decoded::default()`.
    pub decoded: Decoded,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("seq", &self.seq)
            .field("device_seq", &self.device_seq)
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("len", &self.bytes.len())
            .field("origin", &self.origin)
            .finish()
    }
}

/// CLOCK_MONOTONIC now, as a duration since boot.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A frame's pixels as RGB, converted at most once and shared by every clone of the frame (the
/// analysis and seal stages). Kept only for raw YUYV frames, which both stages need as RGB.
#[derive(Clone, Default)]
pub struct Decoded(Arc<OnceLock<Arc<RgbImage>>>);

impl Decoded {
    /// Whether the RGB pixels have been computed.
    pub fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

impl Frame {
    /// A frame captured now (wall and monotonic clocks read here): sequence 0 (the capture stage
    /// numbers frames), no driver sequence, no origin file, not yet decoded. Sources set the
    /// fields they know more about with struct update syntax.
    pub fn captured_now(
        source: Arc<SourceInfo>,
        format: PixelFormat,
        width: u32,
        height: u32,
        bytes: Arc<[u8]>,
    ) -> Frame {
        Frame {
            seq: 0,
            device_seq: None,
            captured_wall: SystemTime::now(),
            captured_mono: monotonic_now(),
            source,
            format,
            width,
            height,
            bytes,
            origin: None,
            decoded: Decoded::default(),
        }
    }

    /// The frame as RGB: decoded (JPEG, PNG), converted (YUYV, once per frame: kept in
    /// [`Frame::decoded`]) or wrapped (RGB24).
    pub fn rgb(&self) -> Result<Arc<RgbImage>, FrameError> {
        match self.format {
            PixelFormat::Jpeg | PixelFormat::Png => {
                let fmt = if self.format == PixelFormat::Jpeg {
                    image::ImageFormat::Jpeg
                } else {
                    image::ImageFormat::Png
                };
                image::load_from_memory_with_format(&self.bytes, fmt)
                    .map(|i| Arc::new(i.into_rgb8()))
                    .map_err(|e| FrameError::Decode(e.to_string()))
            }
            PixelFormat::Yuyv => {
                if let Some(img) = self.decoded.0.get() {
                    return Ok(img.clone());
                }
                let rgb = convert::yuyv_to_rgb(&self.bytes, self.width, self.height)?;
                let img = RgbImage::from_raw(self.width, self.height, rgb)
                    .map(Arc::new)
                    .ok_or_else(|| FrameError::Size("size mismatch".into()))?;
                // Another clone may have won the race; both hold the same pixels.
                Ok(self.decoded.0.get_or_init(|| img).clone())
            }
            PixelFormat::Rgb24 => RgbImage::from_raw(self.width, self.height, self.bytes.to_vec())
                .map(Arc::new)
                .ok_or_else(|| {
                    FrameError::Size("RGB buffer size does not match width×height×3".into())
                }),
        }
    }
}

/// A frame as it is stored next to its manifest.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub bytes: Arc<[u8]>,
    /// `image/jpeg` or `image/png`.
    pub media_type: &'static str,
    /// File extension: `jpg` or `png`.
    pub ext: &'static str,
    /// Manifest `image.encoding`: `source` (the source's bytes) or `png` (encoded here).
    pub encoding: &'static str,
}

/// The stored image: the source's bytes when already encoded, else PNG (encoded once, from the
/// RGB the analyser already converted when there is one).
pub fn stored_image(frame: &Frame) -> Result<StoredImage, FrameError> {
    let source = |media_type, ext| StoredImage {
        bytes: frame.bytes.clone(),
        media_type,
        ext,
        encoding: "source",
    };
    let converted;
    let rgb: &[u8] = match frame.format {
        PixelFormat::Jpeg => return Ok(source("image/jpeg", "jpg")),
        PixelFormat::Png => return Ok(source("image/png", "png")),
        PixelFormat::Yuyv => {
            converted = frame.rgb()?;
            converted.as_raw()
        }
        PixelFormat::Rgb24 => &frame.bytes,
    };
    let need = frame.width as usize * frame.height as usize * 3;
    if rgb.len() < need {
        return Err(FrameError::Size(format!(
            "RGB buffer has {} bytes, {}x{} needs {need}",
            rgb.len(),
            frame.width,
            frame.height
        )));
    }
    let mut out = Vec::with_capacity(need / 2);
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    image::ImageEncoder::write_image(
        enc,
        &rgb[..need],
        frame.width,
        frame.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(StoredImage {
        bytes: out.into(),
        media_type: "image/png",
        ext: "png",
        encoding: "png",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yuyv_frame(bytes: Vec<u8>, width: u32, height: u32) -> Frame {
        Frame {
            seq: 0,
            device_seq: None,
            captured_wall: SystemTime::UNIX_EPOCH,
            captured_mono: Duration::ZERO,
            source: Arc::new(SourceInfo {
                kind: "test".into(),
                path: "test".into(),
                driver: "test".into(),
                card: "test".into(),
                bus: String::new(),
                format: PixelFormat::Yuyv,
                width,
                height,
                fps: 1.0,
            }),
            format: PixelFormat::Yuyv,
            width,
            height,
            bytes: bytes.into(),
            origin: None,
            decoded: Decoded::default(),
        }
    }

    #[test]
    fn yuyv_is_converted_once_and_shared_with_the_stored_png() {
        // 4x2 grey frame.
        let f = yuyv_frame([126u8, 128].repeat(8), 4, 2);
        let sealer_copy = f.clone();
        assert!(!sealer_copy.decoded.is_set());
        let a = f.rgb().unwrap();
        // The clone handed to the seal stage sees the same conversion.
        assert!(sealer_copy.decoded.is_set());
        let b = sealer_copy.rgb().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let stored = stored_image(&sealer_copy).unwrap();
        assert_eq!(
            (stored.media_type, stored.ext, stored.encoding),
            ("image/png", "png", "png")
        );
        let png = image::load_from_memory(&stored.bytes).unwrap().into_rgb8();
        assert_eq!(png.as_raw(), a.as_raw());
        assert!(png.as_raw().iter().all(|&v| v == 128));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let short = yuyv_frame(vec![0; 6], 4, 2);
        assert!(matches!(short.rgb(), Err(FrameError::Convert(_))));
        assert!(stored_image(&short).is_err());
        let mut jpeg = yuyv_frame(b"not a jpeg".to_vec(), 4, 2);
        jpeg.format = PixelFormat::Jpeg;
        assert!(matches!(jpeg.rgb(), Err(FrameError::Decode(_))));
        // Encoded frames are stored as they came, without decoding.
        assert_eq!(stored_image(&jpeg).unwrap().encoding, "source");
    }
}
