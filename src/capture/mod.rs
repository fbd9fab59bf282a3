//! Frame sources: V4L2 cameras, replay of image files, and a synthetic test pattern, behind one
//! trait, [`FrameSource`].
//!
//! A source hands out [`Capture`]s: frames, or events worth reporting (camera lost/restored, a
//! corrupt file skipped). Sources never decode for analysis: a frame carries the source's
//! original bytes (MJPEG frames keep the camera's JPEG untouched — those bytes are what gets
//! signed) and the analyser decodes.

pub mod faces;
pub mod reconnect;
pub mod replay;
pub mod sim;
pub mod synthetic;
#[cfg(target_os = "linux")]
pub mod v4l2;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::alert::AlertRequest;
use crate::camera::settings::{ExpectConfig, IntegrityConfig};
use crate::camera::GuardConfig;
use crate::frame::{Frame, PixelFormat, SourceInfo};
use crate::shutdown::Shutdown;

/// Something a source wants reported (as a log line, a status update or an alert).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CaptureEvent {
    /// The camera went away (unplugged, ENODEV, EIO, …). Capture keeps trying to reopen it.
    CameraLost { path: String, reason: String },
    /// The camera is back after [`CaptureEvent::CameraLost`].
    CameraRestored { path: String, after_ms: u64 },
    /// A replay file could not be read or is not a decodable image; it is skipped.
    SkippedCorrupt { path: String, reason: String },
    /// A replay without looping reached its end.
    EndOfStream,
}

impl CaptureEvent {
    /// The alert this event raises (camera lost or restored), citing `last_frame`, the last frame
    /// seen; other events are only logged.
    pub fn alert(&self, last_frame: u64) -> Option<AlertRequest> {
        match self {
            CaptureEvent::CameraLost { path, reason } => {
                Some(AlertRequest::camera_lost(path, reason, last_frame))
            }
            CaptureEvent::CameraRestored { path, after_ms } => {
                Some(AlertRequest::camera_restored(path, *after_ms, last_frame))
            }
            CaptureEvent::SkippedCorrupt { .. } | CaptureEvent::EndOfStream => None,
        }
    }
}

/// What a source yields.
#[derive(Debug)]
pub enum Capture {
    Frame(Frame),
    Event(CaptureEvent),
}

/// Errors from capture sources.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("device {path} failed: {reason}")]
    Device {
        path: String,
        reason: String,
        /// Whether reopening might help (unplug, ENODEV, EIO) as opposed to a configuration
        /// problem (unsupported format).
        transient: bool,
    },
    #[error("replay source {path} has no usable images")]
    NoImages { path: String },
    #[error("unsupported source {0:?}: expected /dev/videoN, an image file or directory, `synthetic` or `samples`")]
    Unsupported(String),
    #[error("V4L2 capture is not available on this platform")]
    NoV4l2,
    #[error("sim source: {0}")]
    Sim(String),
    #[error("frame conversion failed: {0}")]
    Convert(String),
    #[error("shutdown requested")]
    Shutdown,
}

/// A source of frames. Implementations block in [`next`](FrameSource::next) until a frame is due
/// (pacing, camera DQBUF), waking early when `shutdown` fires.
///
/// The returned frame's `seq` is left for the capture stage to assign; sources fill the rest.
pub trait FrameSource: Send {
    /// The current identity of the source (it may change after a reconnect).
    fn info(&self) -> Arc<SourceInfo>;
    /// Block until the next frame or event. `Err(CaptureError::Shutdown)` when shutdown fired.
    fn next(&mut self, shutdown: &Shutdown) -> Result<Capture, CaptureError>;
}

/// Where frames come from, parsed from `--source` / `source.uri`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// The sample frames compiled into the binary.
    Samples,
    Synthetic,
    V4l2(PathBuf),
    Replay(PathBuf),
    /// A simulated booth for the light challenge (`sim:live`, `sim:replay`, …).
    Sim(sim::SimSpec),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, CaptureError> {
        match s {
            "" => Err(CaptureError::Unsupported(s.into())),
            "samples" | "builtin:samples" => Ok(SourceSpec::Samples),
            "synthetic" => Ok(SourceSpec::Synthetic),
            p if p.starts_with("sim:") => sim::SimSpec::parse(p)
                .map(SourceSpec::Sim)
                .map_err(CaptureError::Sim),
            p if p.starts_with("/dev/") => Ok(SourceSpec::V4l2(PathBuf::from(p))),
            p => Ok(SourceSpec::Replay(PathBuf::from(p))),
        }
    }
}

/// Open the configured source.
pub fn open(cfg: &SourceConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(open_with_light(cfg)?.0)
}

/// Open the configured source; a `sim:` source also hands out the simulated booth light it
/// reads (for the challenge's illuminator).
pub fn open_with_light(
    cfg: &SourceConfig,
) -> Result<(Box<dyn FrameSource>, Option<sim::SimLight>), CaptureError> {
    if let SourceSpec::Sim(mut spec) = SourceSpec::parse(&cfg.uri)? {
        spec.faces_dir = cfg.sim_faces.clone();
        let light = sim::SimLight::default();
        let source = sim::SimSource::new(spec, cfg.fps, light.clone())?;
        return Ok((Box::new(source), Some(light)));
    }
    Ok((open_plain(cfg)?, None))
}

fn open_plain(cfg: &SourceConfig) -> Result<Box<dyn FrameSource>, CaptureError> {
    match SourceSpec::parse(&cfg.uri)? {
        SourceSpec::Sim(spec) => Ok(Box::new(sim::SimSource::new(
            sim::SimSpec {
                faces_dir: cfg.sim_faces.clone(),
                ..spec
            },
            cfg.fps,
            sim::SimLight::default(),
        )?)),
        SourceSpec::Samples => Ok(Box::new(replay::Replay::samples(cfg.fps, cfg.looping)?)),
        SourceSpec::Synthetic => Ok(Box::new(synthetic::Synthetic::new(
            cfg.width, cfg.height, cfg.fps,
        ))),
        SourceSpec::Replay(p) => Ok(Box::new(replay::Replay::open(&p, cfg.fps, cfg.looping)?)),
        #[cfg(target_os = "linux")]
        SourceSpec::V4l2(p) => {
            let opener = v4l2::V4l2Opener::new(p, cfg.clone());
            Ok(Box::new(reconnect::Reconnecting::new(
                opener,
                reconnect::Backoff::new(cfg.reconnect_initial, cfg.reconnect_max),
            )?))
        }
        #[cfg(not(target_os = "linux"))]
        SourceSpec::V4l2(_) => Err(CaptureError::NoV4l2),
    }
}

/// Camera pixel format requested from a V4L2 device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    /// MJPEG when the camera offers it (its JPEG bytes are signed untouched), else YUYV.
    Auto,
    Mjpeg,
    Yuyv,
}

/// The format to ask the camera for, given the configured one and the FourCCs the camera offers
/// (`MJPG`, `YUYV`, …): `auto` prefers MJPEG and falls back to YUYV; an explicit format is asked
/// for as configured (the driver's answer is checked when it is set). Never returns `Auto`.
pub fn choose_format(configured: CameraFormat, offered: &[String]) -> Result<CameraFormat, String> {
    let has = |f: &str| offered.iter().any(|o| o == f);
    match configured {
        CameraFormat::Auto if has("MJPG") => Ok(CameraFormat::Mjpeg),
        CameraFormat::Auto if has("YUYV") => Ok(CameraFormat::Yuyv),
        CameraFormat::Auto => Err(format!(
            "camera offers neither MJPEG nor YUYV (it offers: {})",
            offered.join(", ")
        )),
        explicit => Ok(explicit),
    }
}

/// `[source]` section of the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `samples` (bundled images), `synthetic`, `/dev/videoN`, an image file or directory, or a
    /// simulated booth for the light challenge: `sim:live`, `sim:replay`, `sim:print`,
    /// `sim:injected` (parameters: docs/challenge.md).
    pub uri: String,
    /// Frames per second (replay pacing, synthetic rate, camera frame interval).
    pub fps: f64,
    /// Replay: start again at the end.
    #[serde(rename = "loop")]
    pub looping: bool,
    /// Camera pixel format.
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
    /// First reopen delay after a camera is lost.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Cap on the reopen delay.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Accept virtual cameras and capture devices (v4l2loopback, vivid, HDMI dongles) as
    /// cameras. For test rigs only; logged loudly at every start.
    pub allow_virtual: bool,
    /// `[source.expect]`: the camera this device must use (instead of pinning on first use).
    pub expect: Option<ExpectConfig>,
    /// `[source.integrity]`: stream-integrity checks on camera streams.
    pub integrity: IntegrityConfig,
    /// `sim:` sources: the real-face set (a directory with `index.json`, research data, not
    /// shipped), relative to the working directory. Without it `sim:` falls back to the
    /// rendered relief (logged once); `sim:live?model=real` then fails, naming the path.
    pub sim_faces: PathBuf,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            uri: "samples".into(),
            fps: 10.0,
            looping: true,
            format: CameraFormat::Auto,
            width: 640,
            height: 480,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            allow_virtual: false,
            expect: None,
            integrity: Default::default(),
            sim_faces: PathBuf::from(sim::faces_default_dir()),
        }
    }
}

impl SourceConfig {
    /// The camera-trust settings of this section.
    pub fn guard_config(&self) -> GuardConfig {
        GuardConfig {
            allow_virtual: self.allow_virtual,
            expect: self.expect.clone(),
            integrity: self.integrity.clone(),
        }
    }

    /// Check values; returns (key, reason) of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.fps > 0.0 && self.fps <= 1000.0) {
            return Err((
                "source.fps",
                format!("must be in (0, 1000], got {}", self.fps),
            ));
        }
        if self.width == 0 || self.height == 0 || self.width > 8192 || self.height > 8192 {
            return Err((
                "source.width",
                format!("size {}x{} out of range", self.width, self.height),
            ));
        }
        if !self.width.is_multiple_of(2) {
            return Err(("source.width", "must be even (YUYV pairs pixels)".into()));
        }
        SourceSpec::parse(&self.uri).map_err(|e| ("source.uri", e.to_string()))?;
        if self.reconnect_initial.is_zero() || self.reconnect_max < self.reconnect_initial {
            return Err((
                "source.reconnect_max",
                "need 0 < reconnect_initial <= reconnect_max".into(),
            ));
        }
        if let Some(e) = &self.expect {
            e.validate()?;
        }
        self.integrity.validate()?;
        Ok(())
    }
}

/// Frame pacing for the file-backed sources (synthetic, sim, replay): frames are due every
/// `period`, scheduled from the previous due time so pacing does not drift, and resynchronised to
/// now when the consumer has fallen behind.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next_due: Option<std::time::Instant>,
}

impl Pacer {
    pub(crate) fn new(fps: f64) -> Self {
        Pacer {
            period: Duration::from_secs_f64(1.0 / fps),
            next_due: None,
        }
    }

    /// Sleep until the next frame is due; `Err(Shutdown)` when shutdown comes first.
    pub(crate) fn wait(&mut self, shutdown: &Shutdown) -> Result<(), CaptureError> {
        let now = std::time::Instant::now();
        let due = self.next_due.unwrap_or(now);
        if due > now && shutdown.sleep(due - now) {
            return Err(CaptureError::Shutdown);
        }
        if shutdown.is_triggered() {
            return Err(CaptureError::Shutdown);
        }
        self.next_due = Some((due + self.period).max(std::time::Instant::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_prefers_mjpeg_and_falls_back_to_yuyv() {
        let both = offered(&["YUYV", "MJPG"]);
        assert_eq!(
            choose_format(CameraFormat::Auto, &both),
            Ok(CameraFormat::Mjpeg)
        );
        let yuyv_only = offered(&["YUYV", "NV12"]);
        assert_eq!(
            choose_format(CameraFormat::Auto, &yuyv_only),
            Ok(CameraFormat::Yuyv)
        );
        let neither = offered(&["NV12", "H264"]);
        let e = choose_format(CameraFormat::Auto, &neither).unwrap_err();
        assert!(e.contains("NV12, H264"), "{e}");
        assert!(choose_format(CameraFormat::Auto, &[]).is_err());
    }

    #[test]
    fn explicit_formats_are_asked_for_as_configured() {
        let yuyv_only = offered(&["YUYV"]);
        assert_eq!(
            choose_format(CameraFormat::Mjpeg, &yuyv_only),
            Ok(CameraFormat::Mjpeg)
        );
        assert_eq!(
            choose_format(CameraFormat::Yuyv, &[]),
            Ok(CameraFormat::Yuyv)
        );
        assert_eq!(SourceConfig::default().format, CameraFormat::Auto);
    }
}
