//! V4L2 cameras through the `v4l` crate: open with a pixel format, size and frame interval from
//! config, stream with mmap buffers, and `probe` to list devices.
//!
//! MJPEG frames are handed on as the camera's JPEG bytes, untouched (those bytes are what gets
//! signed). YUYV frames are handed on raw; the analyser converts them to RGB
//! ([`crate::frame::convert::yuyv_to_rgb`]). Errors that mean the camera went away (ENODEV, EIO,
//! ENXIO, ESHUTDOWN, EPIPE, a dequeue timeout) are *transient*: [`super::reconnect::Reconnecting`]
//! reopens the device with capped backoff.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use v4l::buffer::{Flags, Metadata, Type};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture as _;
use v4l::{Device, Format, FourCC, Fraction};

use super::reconnect::Opener;
use super::{choose_format, CameraFormat, Capture, CaptureError, FrameSource, SourceConfig};
use crate::frame::{monotonic_now, Frame, PixelFormat, SourceInfo};
use crate::shutdown::Shutdown;

/// How long a dequeue waits before the camera is considered stalled (and reopened).
const DEQUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll slice so shutdown is noticed promptly while waiting for a frame.
const POLL_SLICE: Duration = Duration::from_millis(250);

/// FourCC for a configured camera format.
pub fn fourcc_for(f: CameraFormat) -> FourCC {
    match f {
        CameraFormat::Mjpeg | CameraFormat::Auto => FourCC::new(b"MJPG"),
        CameraFormat::Yuyv => FourCC::new(b"YUYV"),
    }
}

/// Whether an I/O error from a camera means "it went away, try reopening".
pub fn is_transient_io(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::NotFound {
        return true;
    }
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::EIO | libc::ENXIO | libc::ESHUTDOWN | libc::EPIPE | libc::ENOENT)
    )
}

fn dev_err(path: &str, what: &str, e: io::Error) -> CaptureError {
    CaptureError::Device {
        path: path.into(),
        reason: format!("{what}: {e}"),
        transient: is_transient_io(&e),
    }
}

/// Turn one dequeued buffer into a frame (pure; unit-tested). `bytesused` bounds the payload;
/// MJPEG bytes are copied verbatim.
pub fn frame_from_buffer(
    buf: &[u8],
    meta: &Metadata,
    info: &Arc<SourceInfo>,
    now_mono: Duration,
) -> Result<Frame, CaptureError> {
    let used = if meta.bytesused == 0 {
        buf.len()
    } else {
        (meta.bytesused as usize).min(buf.len())
    };
    let bytes = &buf[..used];
    match info.format {
        PixelFormat::Jpeg => {
            if !bytes.starts_with(&[0xFF, 0xD8]) {
                return Err(CaptureError::Convert(format!(
                    "MJPEG buffer (seq {}) does not start with a JPEG SOI marker",
                    meta.sequence
                )));
            }
        }
        PixelFormat::Yuyv => {
            let need = info.width as usize * info.height as usize * 2;
            if bytes.len() < need {
                return Err(CaptureError::Convert(format!(
                    "YUYV buffer (seq {}) has {} bytes, {}x{} needs {need}",
                    meta.sequence,
                    bytes.len(),
                    info.width,
                    info.height
                )));
            }
        }
        other => {
            return Err(CaptureError::Convert(format!(
                "unexpected camera format {other}"
            )))
        }
    }
    let ts = &meta.timestamp;
    let mono = if meta.flags.contains(Flags::TIMESTAMP_MONOTONIC) && (ts.sec > 0 || ts.usec > 0) {
        Duration::new(
            ts.sec.max(0) as u64,
            (ts.usec.clamp(0, 999_999) as u32) * 1000,
        )
    } else {
        now_mono
    };
    // Wall time of capture: now, minus how long ago the driver stamped the buffer.
    let wall = SystemTime::now()
        .checked_sub(now_mono.saturating_sub(mono))
        .unwrap_or_else(SystemTime::now);
    Ok(Frame {
        seq: 0,
        device_seq: Some(meta.sequence as u64),
        captured_wall: wall,
        captured_mono: mono,
        source: info.clone(),
        format: info.format,
        width: info.width,
        height: info.height,
        bytes: Arc::from(bytes),
        origin: None,
        decoded: Default::default(),
    })
}

/// An open, streaming camera.
pub struct V4l2Source {
    // Field order matters: the stream must drop before the device.
    stream: Option<Stream<'static>>,
    _dev: Device,
    info: Arc<SourceInfo>,
    started: bool,
}

impl V4l2Source {
    pub fn open(path: &std::path::Path, cfg: &SourceConfig) -> Result<Self, CaptureError> {
        let p = path.display().to_string();
        let dev = Device::with_path(path).map_err(|e| CaptureError::Open {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let caps = dev
            .query_caps()
            .map_err(|e| dev_err(&p, "VIDIOC_QUERYCAP", e))?;
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            return Err(CaptureError::Device {
                path: p,
                reason: format!(
                    "{} ({}) is not a video capture device",
                    caps.card, caps.driver
                ),
                transient: false,
            });
        }
        let offered: Vec<String> = dev
            .enum_formats()
            .map(|v| v.iter().map(|d| d.fourcc.to_string()).collect())
            .unwrap_or_default();
        let format =
            choose_format(cfg.format, &offered).map_err(|reason| CaptureError::Device {
                path: p.clone(),
                reason,
                transient: false,
            })?;
        if cfg.format == CameraFormat::Auto {
            tracing::info!(path = %p, chosen = ?format, offered = %offered.join(", "),
                "format = auto: chose {}", fourcc_for(format));
        }
        let want = fourcc_for(format);
        let mut fmt = dev.format().map_err(|e| dev_err(&p, "VIDIOC_G_FMT", e))?;
        fmt.width = cfg.width;
        fmt.height = cfg.height;
        fmt.fourcc = want;
        let got: Format = dev
            .set_format(&fmt)
            .map_err(|e| dev_err(&p, "VIDIOC_S_FMT", e))?;
        if got.fourcc != want {
            return Err(CaptureError::Device {
                path: p,
                reason: format!(
                    "camera does not offer {want} (got {}); it offers: {}",
                    got.fourcc,
                    offered.join(", ")
                ),
                transient: false,
            });
        }
        if format == CameraFormat::Yuyv && got.stride != 0 && got.stride != got.width * 2 {
            return Err(CaptureError::Device {
                path: p,
                reason: format!("padded YUYV rows (stride {}) are not supported", got.stride),
                transient: false,
            });
        }
        // Frame interval: ask for the configured rate; drivers round to what they support.
        let fps_milli = (cfg.fps * 1000.0).round() as u32;
        let params = v4l::video::capture::Parameters::new(Fraction::new(1000, fps_milli.max(1)));
        let fps = match dev.set_params(&params) {
            Ok(p) if p.interval.numerator > 0 => {
                p.interval.denominator as f64 / p.interval.numerator as f64
            }
            _ => cfg.fps,
        };
        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, 4)
            .map_err(|e| dev_err(&p, "VIDIOC_REQBUFS/mmap", e))?;
        stream.set_timeout(POLL_SLICE);
        let info = Arc::new(SourceInfo {
            kind: "v4l2".into(),
            path: p,
            driver: caps.driver,
            card: caps.card,
            bus: caps.bus,
            format: match format {
                CameraFormat::Yuyv => PixelFormat::Yuyv,
                // `choose_format` never returns `Auto`.
                CameraFormat::Mjpeg | CameraFormat::Auto => PixelFormat::Jpeg,
            },
            width: got.width,
            height: got.height,
            fps,
        });
        tracing::info!(path = %info.path, driver = %info.driver, card = %info.card,
            format = %got.fourcc, width = got.width, height = got.height, fps, "camera open");
        Ok(Self {
            stream: Some(stream),
            _dev: dev,
            info,
            started: false,
        })
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            // v4l's Stream::drop panics if STREAMOFF fails with anything but ENODEV (an unplugged
            // camera can also answer EIO). Stop it ourselves; if that fails, contain the panic
            // of its Drop so a lost camera never takes the daemon down.
            use v4l::io::traits::Stream as _;
            if stream.stop().is_err() {
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)));
            }
        }
    }
}

impl FrameSource for V4l2Source {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        let path = self.info.path.clone();
        let stream = self.stream.as_mut().ok_or_else(|| CaptureError::Device {
            path: path.clone(),
            reason: "stream closed".into(),
            transient: true,
        })?;
        let mut waited = Duration::ZERO;
        loop {
            if shutdown.is_triggered() {
                return Err(CaptureError::Shutdown);
            }
            match CaptureStream::next(stream) {
                Ok((buf, meta)) => {
                    self.started = true;
                    let meta = *meta;
                    return frame_from_buffer(buf, &meta, &self.info, monotonic_now())
                        .map(Capture::Frame);
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    waited += POLL_SLICE;
                    if waited >= DEQUEUE_TIMEOUT {
                        return Err(CaptureError::Device {
                            path,
                            reason: format!("no frame for {DEQUEUE_TIMEOUT:?} (camera stalled)"),
                            transient: true,
                        });
                    }
                }
                Err(e) => return Err(dev_err(&path, "VIDIOC_DQBUF", e)),
            }
        }
    }
}

/// Opens `path` with the configured format, for [`super::reconnect::Reconnecting`].
pub struct V4l2Opener {
    path: PathBuf,
    cfg: SourceConfig,
}

impl V4l2Opener {
    pub fn new(path: PathBuf, cfg: SourceConfig) -> Self {
        Self { path, cfg }
    }
}

impl Opener for V4l2Opener {
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&mut self) -> Result<Box<dyn FrameSource>, CaptureError> {
        Ok(Box::new(V4l2Source::open(&self.path, &self.cfg)?))
    }
}

/// What `probe` found on one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub path: String,
    pub driver: String,
    pub card: String,
    pub bus: String,
    pub capture: bool,
    pub formats: Vec<FormatReport>,
    pub error: Option<String>,
    /// Camera fingerprint (V4L2 + USB sysfs identity and its SHA-256), for capture devices.
    /// (filled in by the `probe` command, which sees the camera module).
    pub fingerprint: Option<serde_json::Value>,
    /// Injection-instrument table rows the device matches (virtual driver, capture chip).
    pub instruments: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FormatReport {
    pub fourcc: String,
    pub description: String,
    /// "WxH" for discrete sizes, "min..max step" for stepwise.
    pub sizes: Vec<SizeReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub size: String,
    /// Frame rates in frames per second (discrete), or a stepwise range.
    pub intervals: Vec<String>,
}

fn fps_of(f: Fraction) -> String {
    if f.numerator == 0 {
        return "?".into();
    }
    let fps = f.denominator as f64 / f.numerator as f64;
    if (fps - fps.round()).abs() < 0.01 {
        format!("{}", fps.round())
    } else {
        format!("{fps:.2}")
    }
}

/// Query one device node.
pub fn probe_device(path: &std::path::Path) -> DeviceReport {
    let mut rep = DeviceReport {
        path: path.display().to_string(),
        driver: String::new(),
        card: String::new(),
        bus: String::new(),
        capture: false,
        formats: Vec::new(),
        error: None,
        fingerprint: None,
        instruments: Vec::new(),
    };
    let dev = match Device::with_path(path) {
        Ok(d) => d,
        Err(e) => {
            rep.error = Some(e.to_string());
            return rep;
        }
    };
    match dev.query_caps() {
        Ok(c) => {
            rep.capture = c
                .capabilities
                .contains(v4l::capability::Flags::VIDEO_CAPTURE);
            rep.driver = c.driver;
            rep.card = c.card;
            rep.bus = c.bus;
        }
        Err(e) => {
            rep.error = Some(e.to_string());
            return rep;
        }
    }
    if !rep.capture {
        return rep;
    }
    let descs = match dev.enum_formats() {
        Ok(d) => d,
        Err(e) => {
            rep.error = Some(e.to_string());
            return rep;
        }
    };
    for d in descs {
        let mut fr = FormatReport {
            fourcc: d.fourcc.to_string(),
            description: d.description.clone(),
            sizes: Vec::new(),
        };
        for fs in dev.enum_framesizes(d.fourcc).unwrap_or_default() {
            match fs.size {
                FrameSizeEnum::Discrete(s) => {
                    let intervals = dev
                        .enum_frameintervals(d.fourcc, s.width, s.height)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|i| match i.interval {
                            FrameIntervalEnum::Discrete(f) => fps_of(f),
                            FrameIntervalEnum::Stepwise(sw) => {
                                format!("{}..{} fps", fps_of(sw.max), fps_of(sw.min))
                            }
                        })
                        .collect();
                    fr.sizes.push(SizeReport {
                        size: format!("{}x{}", s.width, s.height),
                        intervals,
                    });
                }
                FrameSizeEnum::Stepwise(sw) => fr.sizes.push(SizeReport {
                    size: format!(
                        "{}x{}..{}x{} step {}x{}",
                        sw.min_width,
                        sw.min_height,
                        sw.max_width,
                        sw.max_height,
                        sw.step_width,
                        sw.step_height
                    ),
                    intervals: Vec::new(),
                }),
            }
        }
        rep.formats.push(fr);
    }
    rep
}

/// Render reports as text (pure).
pub fn render(reports: &[DeviceReport]) -> String {
    if reports.is_empty() {
        return "no V4L2 devices found (looked for /dev/video*)\n".into();
    }
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!(
            "{}: {} (driver {}, bus {})",
            r.path, r.card, r.driver, r.bus
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!(" — error: {e}"));
        } else if !r.capture {
            out.push_str(" — not a capture device");
        }
        out.push('\n');
        if let Some(fp) = &r.fingerprint {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("none").to_string();
            out.push_str(&format!("  fingerprint {}", s(&fp["sha256"])));
            let u = &fp["usb"];
            if u.is_object() {
                out.push_str(&format!(
                    " (USB {}:{} serial {} port {})",
                    s(&u["id_vendor"]),
                    s(&u["id_product"]),
                    s(&u["serial"]),
                    s(&u["port"])
                ));
            }
            out.push('\n');
        }
        if !r.instruments.is_empty() {
            let list: Vec<String> = r
                .instruments
                .iter()
                .map(|i| {
                    format!(
                        "{} [{}]",
                        i["what"].as_str().unwrap_or("?"),
                        i["rule"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            out.push_str(&format!("  INJECTION INSTRUMENT: {}\n", list.join("; ")));
        }
        for f in &r.formats {
            out.push_str(&format!("  {} ({})\n", f.fourcc, f.description));
            for s in &f.sizes {
                if s.intervals.is_empty() {
                    out.push_str(&format!("    {}\n", s.size));
                } else {
                    out.push_str(&format!(
                        "    {} @ {} fps\n",
                        s.size,
                        s.intervals.join(", ")
                    ));
                }
            }
        }
    }
    out
}

/// Every /dev/videoN, sorted.
pub fn device_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = v4l::context::enum_devices()
        .into_iter()
        .map(|n| n.path().to_path_buf())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use v4l::timestamp::Timestamp;

    fn info(format: PixelFormat, w: u32, h: u32) -> Arc<SourceInfo> {
        Arc::new(SourceInfo {
            kind: "v4l2".into(),
            path: "/dev/video9".into(),
            driver: "uvcvideo".into(),
            card: "Test Cam".into(),
            bus: "usb-1".into(),
            format,
            width: w,
            height: h,
            fps: 30.0,
        })
    }

    fn meta(used: u32, seq: u32) -> Metadata {
        Metadata {
            bytesused: used,
            flags: Flags::TIMESTAMP_MONOTONIC,
            field: 0,
            timestamp: Timestamp { sec: 100, usec: 5 },
            sequence: seq,
        }
    }

    #[test]
    fn mjpeg_bytes_pass_through_identical() {
        let jpeg = include_bytes!("../../samples/astronaut_00.jpg");
        let mut buf = jpeg.to_vec();
        buf.extend_from_slice(&[0xAA; 4096]); // driver buffer is larger than the payload
        let f = frame_from_buffer(
            &buf,
            &meta(jpeg.len() as u32, 7),
            &info(PixelFormat::Jpeg, 640, 480),
            Duration::from_secs(101),
        )
        .unwrap();
        assert_eq!(&f.bytes[..], &jpeg[..]);
        assert_eq!(f.device_seq, Some(7));
        assert_eq!(f.captured_mono, Duration::new(100, 5000));
        assert_eq!(f.format, PixelFormat::Jpeg);
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let i = info(PixelFormat::Jpeg, 640, 480);
        assert!(frame_from_buffer(b"not a jpeg", &meta(10, 0), &i, Duration::ZERO).is_err());
        let y = info(PixelFormat::Yuyv, 4, 2);
        assert!(frame_from_buffer(&[0; 8], &meta(8, 0), &y, Duration::ZERO).is_err());
        let ok = frame_from_buffer(&[0; 16], &meta(16, 0), &y, Duration::ZERO).unwrap();
        assert_eq!(ok.bytes.len(), 16);
        // bytesused larger than the buffer is clamped, not an out-of-bounds panic.
        assert!(frame_from_buffer(&[0xFF, 0xD8, 0xFF], &meta(1000, 0), &i, Duration::ZERO).is_ok());
    }

    #[test]
    fn transient_errors() {
        assert!(is_transient_io(&io::Error::from_raw_os_error(libc::ENODEV)));
        assert!(is_transient_io(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_transient_io(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
    }

    #[test]
    fn render_lists_formats() {
        let r = DeviceReport {
            path: "/dev/video0".into(),
            driver: "vivid".into(),
            card: "vivid".into(),
            bus: "platform:vivid-000".into(),
            capture: true,
            formats: vec![FormatReport {
                fourcc: "YUYV".into(),
                description: "YUYV 4:2:2".into(),
                sizes: vec![SizeReport {
                    size: "640x480".into(),
                    intervals: vec!["30".into(), "25".into()],
                }],
            }],
            error: None,
            fingerprint: Some(serde_json::json!({"sha256": "ab".repeat(32), "usb": null})),
            instruments: vec![
                serde_json::json!({"what": "vivid, the kernel's virtual video test driver", "rule": "driver:vivid"}),
            ],
        };
        let s = render(&[r]);
        assert!(s.contains("  fingerprint "), "{s}");
        assert!(s.contains("INJECTION INSTRUMENT: vivid"), "{s}");
        assert!(s.contains("/dev/video0: vivid (driver vivid"));
        assert!(s.contains("640x480 @ 30, 25 fps"));
        assert_eq!(
            render(&[]),
            "no V4L2 devices found (looked for /dev/video*)\n"
        );
        assert_eq!(fps_of(Fraction::new(1, 30)), "30");
        assert_eq!(fps_of(Fraction::new(1001, 30000)), "29.97");
    }
}
