//! Replay of still images (a directory of JPEG/PNG files, one file, or the bundled samples),
//! paced at a configured rate and optionally looping.
//!
//! Each file's bytes are passed on untouched. A file that cannot be read or decoded is reported
//! once as [`CaptureEvent::SkippedCorrupt`] and skipped from then on; it never ends the replay.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Capture, CaptureError, CaptureEvent, FrameSource};
use crate::frame::{samples, Frame, PixelFormat, SourceInfo};
use crate::shutdown::Shutdown;

enum Item {
    File(PathBuf),
    Embedded(&'static str, &'static [u8]),
}

impl Item {
    fn name(&self) -> String {
        match self {
            Item::File(p) => p.display().to_string(),
            Item::Embedded(n, _) => format!("samples/{n}"),
        }
    }
}

/// The next usable item (index, bytes), or an event to report instead.
type Next = Result<(usize, Arc<[u8]>), CaptureEvent>;

#[derive(Clone, Copy, PartialEq)]
enum Checked {
    Unknown,
    Good(PixelFormat, u32, u32),
    Bad,
}

pub struct Replay {
    items: Vec<(Item, Checked)>,
    pos: usize,
    looping: bool,
    pacer: super::Pacer,
    info: Arc<SourceInfo>,
    ended: bool,
}

/// Is this a file name replay would pick up?
pub fn is_image_path(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

/// Recognise JPEG or PNG by magic bytes.
pub fn sniff(bytes: &[u8]) -> Option<PixelFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(PixelFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(PixelFormat::Png)
    } else {
        None
    }
}

/// Fully decode `bytes` to check they are a usable image; returns its format and size.
pub fn check_image(bytes: &[u8]) -> Result<(PixelFormat, u32, u32), String> {
    let fmt = sniff(bytes).ok_or_else(|| "not a JPEG or PNG file".to_string())?;
    // The JPEG decoder is lenient and fills in a truncated scan with grey; a file without its
    // EOI marker (allowing trailing padding) is truncated, so reject it here.
    if fmt == PixelFormat::Jpeg {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end < 4 || bytes[end - 2..end] != [0xFF, 0xD9] {
            return Err("truncated JPEG (no end-of-image marker)".into());
        }
    }
    let img = image::load_from_memory_with_format(
        bytes,
        if fmt == PixelFormat::Jpeg {
            image::ImageFormat::Jpeg
        } else {
            image::ImageFormat::Png
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((fmt, img.width(), img.height()))
}

impl Replay {
    fn with_items(items: Vec<Item>, path: String, fps: f64, looping: bool) -> Self {
        Self {
            items: items.into_iter().map(|i| (i, Checked::Unknown)).collect(),
            pos: 0,
            looping,
            pacer: super::Pacer::new(fps),
            info: Arc::new(SourceInfo {
                kind: "replay".into(),
                path,
                driver: "replay".into(),
                card: "image replay".into(),
                bus: String::new(),
                format: PixelFormat::Jpeg,
                width: 0,
                height: 0,
                fps,
            }),
            ended: false,
        }
    }

    /// Replay the sample frames compiled into the binary.
    pub fn samples(fps: f64, looping: bool) -> Result<Self, CaptureError> {
        let items = samples::SAMPLES
            .iter()
            .map(|(n, b)| Item::Embedded(n, b))
            .collect();
        Ok(Self::with_items(
            items,
            "samples (built in)".into(),
            fps,
            looping,
        ))
    }

    /// Replay one image file, or every JPEG/PNG file directly in a directory (sorted by name).
    pub fn open(path: &Path, fps: f64, looping: bool) -> Result<Self, CaptureError> {
        let open_err = |e: std::io::Error| CaptureError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(open_err)?;
        let items: Vec<Item> = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(open_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image_path(p))
                .collect();
            files.sort();
            files.into_iter().map(Item::File).collect()
        } else {
            vec![Item::File(path.to_path_buf())]
        };
        if items.is_empty() {
            return Err(CaptureError::NoImages {
                path: path.display().to_string(),
            });
        }
        Ok(Self::with_items(
            items,
            path.display().to_string(),
            fps,
            looping,
        ))
    }

    fn read(item: &Item) -> Result<Arc<[u8]>, String> {
        match item {
            Item::File(p) => std::fs::read(p).map(Into::into).map_err(|e| e.to_string()),
            Item::Embedded(_, b) => Ok(Arc::from(*b)),
        }
    }

    /// Next readable item, with events for bad ones; `None` at the end of a non-looping pass or
    /// when no item is usable.
    fn advance(&mut self) -> Result<Next, CaptureError> {
        let n = self.items.len();
        let mut scanned = 0;
        loop {
            if self.pos >= n {
                if !self.looping {
                    self.ended = true;
                    return Ok(Err(CaptureEvent::EndOfStream));
                }
                self.pos = 0;
            }
            if scanned >= n {
                return Err(CaptureError::NoImages {
                    path: self.info.path.clone(),
                });
            }
            scanned += 1;
            let idx = self.pos;
            self.pos += 1;
            let (item, checked) = &mut self.items[idx];
            if *checked == Checked::Bad {
                continue;
            }
            let bytes = match Self::read(item) {
                Ok(b) => b,
                Err(reason) => {
                    *checked = Checked::Bad;
                    return Ok(Err(CaptureEvent::SkippedCorrupt {
                        path: item.name(),
                        reason,
                    }));
                }
            };
            if *checked == Checked::Unknown {
                match check_image(&bytes) {
                    Ok((f, w, h)) => *checked = Checked::Good(f, w, h),
                    Err(reason) => {
                        *checked = Checked::Bad;
                        return Ok(Err(CaptureEvent::SkippedCorrupt {
                            path: item.name(),
                            reason,
                        }));
                    }
                }
            }
            return Ok(Ok((idx, bytes)));
        }
    }
}

impl FrameSource for Replay {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        if self.ended {
            return Ok(Capture::Event(CaptureEvent::EndOfStream));
        }
        let (idx, bytes) = match self.advance()? {
            Ok(x) => x,
            Err(ev) => return Ok(Capture::Event(ev)),
        };
        self.pacer.wait(shutdown)?;
        let Checked::Good(format, width, height) = self.items[idx].1 else {
            // advance() only returns items it has checked good.
            unreachable!("replay item returned without a successful check")
        };
        if self.info.width != width || self.info.height != height || self.info.format != format {
            let mut info = (*self.info).clone();
            info.width = width;
            info.height = height;
            info.format = format;
            self.info = Arc::new(info);
        }
        let origin = match &self.items[idx].0 {
            Item::File(p) => Some(p.clone()),
            Item::Embedded(n, _) => Some(PathBuf::from(format!("samples/{n}"))),
        };
        Ok(Capture::Frame(Frame {
            origin,
            ..Frame::captured_now(self.info.clone(), format, width, height, bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_decode() {
        for (name, bytes) in samples::SAMPLES {
            let (f, w, h) = check_image(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((f, w, h), (PixelFormat::Jpeg, 640, 480));
        }
    }

    #[test]
    fn sniff_rejects_garbage() {
        assert_eq!(sniff(b"hello"), None);
        assert!(check_image(b"\xFF\xD8\xFF\xE0garbage").is_err());
    }
}
