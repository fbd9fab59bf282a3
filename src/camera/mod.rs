//! Camera trust: is the device behind the frames the physical camera this booth was set up with,
//! is it an injection instrument, and does its stream behave like a sensor?
//!
//! | file | what |
//! |---|---|
//! | [`fingerprint`] | V4L2 + sysfs identity, its SHA-256; the [`fingerprint::CameraInfoSource`] seam |
//! | [`instruments`] | the table of virtual drivers and capture chips (pure classifier) |
//! | [`integrity`] | per-frame stream checks (pure state machine, returns actions) |
//! | [`pin`] | signed pin record in the data dir, `[source.expect]`, the identity decision |
//!
//! [`SourceGuard`] is the caller around those pure parts: the capture thread hands it every frame,
//! it reads the identity when a stream (re)opens, keeps the pin, steps the integrity machine and
//! returns a [`FrameTrust`]: the identity that goes into the frame's manifest, whether the frame
//! may be sealed as authentic, and the alerts to raise. Replay and synthetic sources are not
//! cameras: they get `camera: false` and no checks.
//!
//! Alert kinds raised here (constructed only in [`SourceAlert`]'s constructors):
//! `camera_changed` (critical), `injection_suspected` (critical), `stream_anomaly` (warning).

pub mod fingerprint;
pub mod instruments;
pub mod integrity;
pub mod pin;
pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::alert::AlertKind;
use crate::decide::{Action, Decision, Verdict};
use crate::frame::{Frame, SourceInfo};

use crate::frame::identity::SourceIdentity;
use fingerprint::{CameraIdentity, CameraInfoSource};
use integrity::{FrameMeta, IntegrityState};
use pin::{Check, PinStore};
use settings::{ExpectConfig, IntegrityConfig};

/// Errors reading a camera's identity or its pin record.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("cannot read the identity of {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("camera pin record {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
}

/// Alert kind: the camera is not the pinned (or expected) one.
pub const ALERT_CAMERA_CHANGED: AlertKind = AlertKind::CameraChanged;
/// Alert kind: the camera is a known injection instrument (virtual driver, capture chip).
pub const ALERT_INJECTION: AlertKind = AlertKind::InjectionSuspected;
/// Alert kind: the camera's stream does not behave like a sensor (sustained).
pub const ALERT_STREAM_ANOMALY: AlertKind = AlertKind::StreamAnomaly;

/// Camera-trust settings, from `[source]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardConfig {
    /// Accept virtual cameras and capture devices (test rigs). Logged loudly at every start.
    pub allow_virtual: bool,
    pub expect: Option<ExpectConfig>,
    pub integrity: IntegrityConfig,
}

impl SourceIdentity {
    fn camera(
        id: Option<&CameraIdentity>,
        pin: &str,
        instruments: Vec<String>,
        allow: bool,
    ) -> Self {
        Self {
            camera: true,
            sha256: id.map(CameraIdentity::sha256),
            v4l2: id.map(|i| i.v4l2.clone()),
            usb: id.and_then(|i| i.usb.clone()),
            pin: pin.into(),
            instruments,
            allow_virtual: allow,
        }
    }
}

/// An alert about the source (severity: the kind's).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceAlert {
    pub kind: AlertKind,
    pub score: Option<f32>,
    pub detail: String,
}

impl SourceAlert {
    pub fn camera_changed(detail: String) -> Self {
        Self {
            kind: ALERT_CAMERA_CHANGED,
            score: None,
            detail,
        }
    }

    pub fn injection(detail: String) -> Self {
        Self {
            kind: ALERT_INJECTION,
            score: None,
            detail,
        }
    }

    pub fn stream_anomaly(f: &integrity::Figures) -> Self {
        Self {
            kind: ALERT_STREAM_ANOMALY,
            score: Some(f.score()),
            detail: f.detail(),
        }
    }
}

/// What the guard says about one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameTrust {
    pub identity: Arc<SourceIdentity>,
    /// Why this frame must not be sealed as authentic (`None`: it may).
    pub untrusted: Option<AlertKind>,
    pub alerts: Vec<SourceAlert>,
}

impl FrameTrust {
    /// A frame from a source that is not a camera.
    pub fn not_a_camera() -> Self {
        Self {
            identity: Arc::new(SourceIdentity::not_a_camera()),
            untrusted: None,
            alerts: Vec::new(),
        }
    }

    /// The detail text of this frame's alert of `kind`.
    pub fn detail(&self, kind: AlertKind) -> Option<&str> {
        self.alerts
            .iter()
            .find(|a| a.kind == kind)
            .map(|a| a.detail.as_str())
    }
}

/// Apply the source verdict to a decision (pure): an untrusted frame's verdict becomes
/// `untrusted_source` (whatever the detector said), and the source alerts join its actions.
pub fn apply(mut d: Decision, t: &FrameTrust) -> Decision {
    if t.untrusted.is_some() {
        d.verdict = Verdict::UntrustedSource;
    }
    for a in &t.alerts {
        d.actions.push(Action::alert(a.kind, a.score));
    }
    d
}

/// Per-stream state: which stream (the source's `SourceInfo` allocation), its identity verdict
/// and its integrity machine.
struct Stream {
    info: Arc<SourceInfo>,
    identity: Arc<SourceIdentity>,
    /// Untrusted for the whole stream (identity changed, unreadable, or an instrument).
    blocked: Option<AlertKind>,
    integrity: Option<IntegrityState>,
    /// Frame time of the last re-read of the pin while blocked by a change.
    pin_checked: Duration,
}

/// The camera-trust stage: runs in the capture thread, one call per frame.
pub struct SourceGuard {
    cfg: GuardConfig,
    reader: Box<dyn CameraInfoSource>,
    pins: Option<PinStore>,
    stream: Option<Stream>,
    totals: Totals,
}

/// Stream-check counters over the guard's life (logged when it ends: false-alarm measurements).
#[derive(Debug, Default)]
struct Totals {
    frames: u64,
    anomalous: u64,
    by_kind: std::collections::BTreeMap<&'static str, u64>,
    stream_alerts: u64,
    untrusted: u64,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let t = &self.totals;
        if t.frames > 0 {
            tracing::info!(
                frames = t.frames,
                anomalous = t.anomalous,
                by_kind = ?t.by_kind,
                stream_anomaly_alerts = t.stream_alerts,
                untrusted_frames = t.untrusted,
                "camera guard summary"
            );
        }
    }
}

impl std::fmt::Debug for SourceGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceGuard")
            .field("cfg", &self.cfg)
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

fn unix_us_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Log the `allow_virtual` setting loudly (at every start).
pub fn warn_allow_virtual(cfg: &GuardConfig) {
    if cfg.allow_virtual {
        tracing::warn!(
            "[source] allow_virtual = true: VIRTUAL CAMERAS AND CAPTURE DEVICES ARE ACCEPTED AS CAMERAS. \
             Injected video (v4l2loopback, vivid, HDMI capture dongles) will be sealed as authentic. \
             Use this on test rigs only."
        );
    }
}

impl SourceGuard {
    /// `pins`: where first-use pins are kept (none: identity is only checked against
    /// `[source.expect]`, and without it every camera is `first_use`).
    pub fn new(
        cfg: GuardConfig,
        reader: Box<dyn CameraInfoSource>,
        pins: Option<PinStore>,
    ) -> Self {
        warn_allow_virtual(&cfg);
        Self {
            cfg,
            reader,
            pins,
            stream: None,
            totals: Totals::default(),
        }
    }

    /// A guard for a pipeline whose source is not a camera (tests, benches).
    pub fn exempt() -> Self {
        Self::new(
            GuardConfig::default(),
            Box::new(fingerprint::FixtureInfo::new(Vec::new())),
            None,
        )
    }

    /// The trust verdict for `frame` (reads the identity when a new stream starts).
    pub fn on_frame(&mut self, frame: &Frame) -> FrameTrust {
        if frame.source.kind != "v4l2" {
            if self.stream.is_none() {
                tracing::info!(kind = %frame.source.kind, path = %frame.source.path,
                    "source is not a camera: no camera identity or stream-integrity checks");
                self.stream = Some(Stream {
                    info: frame.source.clone(),
                    identity: Arc::new(SourceIdentity::not_a_camera()),
                    blocked: None,
                    integrity: None,
                    pin_checked: Duration::ZERO,
                });
            }
            return FrameTrust::not_a_camera();
        }
        let mut alerts = Vec::new();
        let new_stream = !self
            .stream
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(&s.info, &frame.source));
        if new_stream {
            let s = self.open_stream(frame, &mut alerts);
            self.stream = Some(s);
        }
        // The stream exists: set just above when new.
        let Some(s) = self.stream.as_mut() else {
            return FrameTrust::not_a_camera();
        };
        // Blocked by a camera change: an operator may re-pin while we run.
        if s.blocked == Some(ALERT_CAMERA_CHANGED)
            && self.cfg.expect.is_none()
            && frame.captured_mono.saturating_sub(s.pin_checked) >= Duration::from_secs(2)
        {
            s.pin_checked = frame.captured_mono;
            if let (Some(p), Some(sha)) = (&self.pins, &s.identity.sha256) {
                if let Ok(Some((rec, _))) = p.load() {
                    if &rec.fingerprint.sha256 == sha {
                        tracing::warn!(sha256 = %sha, "camera re-pinned by the operator: frames are trusted again");
                        let mut id = (*s.identity).clone();
                        id.pin = "pinned".into();
                        s.identity = Arc::new(id);
                        s.blocked = None;
                    }
                }
            }
        }
        let mut untrusted = s.blocked;
        if let Some(st) = s.integrity.take() {
            let meta = FrameMeta::measure(
                &frame.bytes,
                frame.format,
                frame.width,
                frame.height,
                frame.device_seq,
                frame.captured_mono,
            );
            let (st, out) = integrity::step(st, &meta);
            self.totals.frames += 1;
            self.totals.anomalous += u64::from(!out.anomalies.is_empty());
            for k in &out.anomalies {
                *self.totals.by_kind.entry(k.name()).or_default() += 1;
            }
            if !out.anomalies.is_empty() {
                tracing::debug!(seq = frame.seq, anomalies = ?out.anomalies, "stream check");
            }
            for a in &out.actions {
                match a {
                    integrity::Action::Alert(f) => {
                        tracing::warn!(path = %frame.source.path, figures = %f.detail(), "stream anomaly");
                        alerts.push(SourceAlert::stream_anomaly(f));
                        self.totals.stream_alerts += 1;
                    }
                    integrity::Action::Cleared(f) => {
                        tracing::info!(path = %frame.source.path, figures = %f.detail(), "stream anomaly over");
                    }
                }
            }
            if out.untrusted && untrusted.is_none() {
                untrusted = Some(ALERT_STREAM_ANOMALY);
            }
            s.integrity = Some(st);
        }
        self.totals.untrusted += u64::from(untrusted.is_some());
        FrameTrust {
            identity: s.identity.clone(),
            untrusted,
            alerts,
        }
    }

    fn open_stream(&mut self, frame: &Frame, alerts: &mut Vec<SourceAlert>) -> Stream {
        let info = frame.source.clone();
        let path = info.path.clone();
        let allow = self.cfg.allow_virtual;
        let nominal = if info.fps.is_finite() && info.fps > 0.0 {
            Duration::from_secs_f64(1.0 / info.fps)
        } else {
            Duration::ZERO
        };
        let integrity = Some(IntegrityState::new(self.cfg.integrity.clone(), nominal));
        let id = match self.reader.read(Path::new(&path)) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "camera identity unreadable: frames are not sealed as authentic");
                alerts.push(SourceAlert::camera_changed(format!(
                    "{path}: identity cannot be read ({e}); frames are not trusted"
                )));
                return Stream {
                    info,
                    identity: Arc::new(SourceIdentity::camera(
                        None,
                        "unreadable",
                        Vec::new(),
                        allow,
                    )),
                    blocked: Some(ALERT_CAMERA_CHANGED),
                    integrity,
                    pin_checked: frame.captured_mono,
                };
            }
        };
        let found = instruments::classify(&id);
        let rules: Vec<String> = found.iter().map(|i| i.rule.clone()).collect();
        let mut blocked = None;
        if !found.is_empty() {
            let what = instruments::describe(&found);
            if allow {
                warn_allow_virtual(&self.cfg);
                tracing::warn!(%path, instrument = %what, "injection instrument accepted (allow_virtual)");
            } else {
                tracing::error!(%path, instrument = %what,
                    "camera is an injection instrument: frames are not sealed as authentic");
                alerts.push(SourceAlert::injection(format!("{path}: {what}")));
                blocked = Some(ALERT_INJECTION);
            }
        }
        let pinned = match &self.pins {
            Some(p) if self.cfg.expect.is_none() => match p.load() {
                Ok(r) => Ok(r.map(|(r, _)| r)),
                Err(e) => Err(e),
            },
            _ => Ok(None),
        };
        let check = match &pinned {
            Ok(rec) => pin::check(&id, self.cfg.expect.as_ref(), rec.as_ref()),
            Err(e) => Check::Changed(vec![format!("pin record invalid: {e}")]),
        };
        let mut pin_word = check.name();
        match &check {
            Check::Expected | Check::Pinned => {
                tracing::info!(%path, sha256 = %id.sha256(), check = pin_word, "camera identity confirmed");
            }
            Check::FirstUse => match (&self.pins, blocked) {
                (Some(p), None) if self.cfg.expect.is_none() => {
                    match p.pin(&path, &id, "first_use", unix_us_now()) {
                        Ok((_, h)) => tracing::warn!(%path, sha256 = %id.sha256(), record = %h,
                            "camera pinned on first use (a different camera will raise camera_changed)"),
                        Err(e) => tracing::error!(error = %e, "cannot write the camera pin record"),
                    }
                }
                (Some(_), Some(_)) => {
                    tracing::warn!(%path, "not pinning an injection instrument");
                    pin_word = "unpinned";
                }
                _ => {}
            },
            Check::Changed(diff) => {
                let d = diff.join("; ");
                tracing::error!(%path, difference = %d,
                    "CAMERA CHANGED: not the pinned/expected camera; frames are not sealed as authentic until `veriframe camera pin`");
                alerts.insert(
                    0,
                    SourceAlert::camera_changed(format!(
                        "{path}: {d} (new fingerprint {})",
                        id.sha256()
                    )),
                );
                blocked = Some(ALERT_CAMERA_CHANGED);
            }
        }
        Stream {
            info,
            identity: Arc::new(SourceIdentity::camera(Some(&id), pin_word, rules, allow)),
            blocked,
            integrity,
            pin_checked: frame.captured_mono,
        }
    }
}
