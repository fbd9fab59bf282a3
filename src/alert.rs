//! The alerts Veriframe raises, as one typed list: [`AlertKind`] and [`Severity`], the
//! [`AlertRequest`] every stage hands to the publish seam, one constructor per alert source, and
//! the episode trackers that raise an alert once per episode (pure state machines: the caller
//! does the I/O).
//!
//! Kinds and severities are strings only on the wire (`snake_case` / lowercase, see
//! `docs/mqtt.md`, whose "Alert kinds" table is tested against [`AlertKind::ALL`]). This module
//! sits at the bottom of the dependency order: it imports no other Veriframe module.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A confirmed presentation attack (decide); score: smoothed attack probability.
    PresentationAttack,
    /// A persisting deepfake-artefact score on the primary face (decide, optional Meso4);
    /// score: smoothed deepfake probability.
    DeepfakeSuspected,
    /// Several faces persisting in view (decide).
    MultipleFaces,
    /// The camera went away (capture).
    CameraLost,
    /// The camera is back (capture).
    CameraRestored,
    /// The tamper switch opened (device GPIO).
    Tamper,
    /// A capture could not be stored: disk or quota full (seal), once per episode.
    StorageFull,
    /// The analyser failed on a frame (detect), once per episode.
    DetectorError,
    /// The camera is not the pinned (or expected) one (camera), once per stream.
    CameraChanged,
    /// The camera is a known injection instrument: virtual driver, capture device (camera),
    /// once per stream.
    InjectionSuspected,
    /// The camera's stream does not behave like a sensor (camera), once per episode; score:
    /// anomalous fraction of the window.
    StreamAnomaly,
    /// The face did not answer the light challenge (challenge), once per failed challenge;
    /// score: the correlation with the code.
    ChallengeFailed,
}

impl AlertKind {
    /// Every kind, in the order of the table in `docs/mqtt.md`.
    pub const ALL: [AlertKind; 12] = [
        AlertKind::PresentationAttack,
        AlertKind::DeepfakeSuspected,
        AlertKind::MultipleFaces,
        AlertKind::CameraLost,
        AlertKind::CameraRestored,
        AlertKind::Tamper,
        AlertKind::StorageFull,
        AlertKind::DetectorError,
        AlertKind::CameraChanged,
        AlertKind::InjectionSuspected,
        AlertKind::StreamAnomaly,
        AlertKind::ChallengeFailed,
    ];

    /// The wire name (`presentation_attack`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::PresentationAttack => "presentation_attack",
            AlertKind::DeepfakeSuspected => "deepfake_suspected",
            AlertKind::MultipleFaces => "multiple_faces",
            AlertKind::CameraLost => "camera_lost",
            AlertKind::CameraRestored => "camera_restored",
            AlertKind::Tamper => "tamper",
            AlertKind::StorageFull => "storage_full",
            AlertKind::DetectorError => "detector_error",
            AlertKind::CameraChanged => "camera_changed",
            AlertKind::InjectionSuspected => "injection_suspected",
            AlertKind::StreamAnomaly => "stream_anomaly",
            AlertKind::ChallengeFailed => "challenge_failed",
        }
    }

    /// The severity every alert of this kind carries.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::PresentationAttack
            | AlertKind::CameraLost
            | AlertKind::Tamper
            | AlertKind::StorageFull
            | AlertKind::CameraChanged
            | AlertKind::InjectionSuspected
            | AlertKind::ChallengeFailed => Severity::Critical,
            // Meso4 is weak evidence; several faces and a failing frame are worth a look.
            AlertKind::DeepfakeSuspected
            | AlertKind::MultipleFaces
            | AlertKind::DetectorError
            | AlertKind::StreamAnomaly => Severity::Warning,
            AlertKind::CameraRestored => Severity::Info,
        }
    }

    /// Whether the kind reports an attack (the status `attack` flag).
    pub fn is_attack(self) -> bool {
        matches!(
            self,
            AlertKind::PresentationAttack
                | AlertKind::DeepfakeSuspected
                | AlertKind::ChallengeFailed
        )
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown alert kind or severity name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

impl FromStr for AlertKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlertKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "alert kind",
                name: s.into(),
            })
    }
}

impl PartialEq<str> for AlertKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AlertKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The wire name (`info`, `warning`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "severity",
                name: s.into(),
            })
    }
}

impl PartialEq<str> for Severity {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Severity {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Which model produced a result: name plus SHA-256 of its weights file. Cited in manifests and
/// alerts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    pub name: String,
    pub weights_sha256: String,
}

/// An alert the pipeline wants raised. Build it with the constructor for its source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRequest {
    pub kind: AlertKind,
    pub severity: Severity,
    pub first_seq: u64,
    pub last_seq: u64,
    pub score: Option<f32>,
    pub models: Vec<ModelId>,
    /// Manifest hash of the sealed evidence, when there is one.
    pub evidence: Option<String>,
    pub detail: String,
}

impl AlertRequest {
    /// A bare alert of `kind` about frame `seq` (severity from the kind).
    fn about(kind: AlertKind, seq: u64, detail: String) -> Self {
        Self {
            kind,
            severity: kind.severity(),
            first_seq: seq,
            last_seq: seq,
            score: None,
            models: Vec::new(),
            evidence: None,
            detail,
        }
    }

    /// Source `decide`: an alert decided on frame `seq`, scored by `models`, citing the sealed
    /// manifest `evidence` when the frame was sealed.
    pub fn decided(
        kind: AlertKind,
        score: Option<f32>,
        seq: u64,
        models: Vec<ModelId>,
        evidence: Option<String>,
    ) -> Self {
        Self {
            score,
            models,
            evidence,
            ..Self::about(kind, seq, String::new())
        }
    }

    /// Source `capture`: the camera at `path` went away; `last_frame` is the last frame seen.
    pub fn camera_lost(path: &str, reason: &str, last_frame: u64) -> Self {
        Self::about(
            AlertKind::CameraLost,
            last_frame,
            format!("{path}: {reason}"),
        )
    }

    /// Source `capture`: the camera at `path` is back after `after_ms`.
    pub fn camera_restored(path: &str, after_ms: u64, last_frame: u64) -> Self {
        Self::about(
            AlertKind::CameraRestored,
            last_frame,
            format!("{path}: back after {after_ms} ms"),
        )
    }

    /// Source `device`: the tamper switch (on GPIO `pin`, when known) opened.
    pub fn tamper(pin: Option<u8>) -> Self {
        let detail = match pin {
            Some(p) => format!("tamper switch opened (GPIO {p})"),
            None => "tamper switch opened".into(),
        };
        Self::about(AlertKind::Tamper, 0, detail)
    }

    /// Source `seal`: frame `seq` could not be stored at `path` because the disk is full.
    pub fn storage_full(seq: u64, path: &Path) -> Self {
        Self::about(
            AlertKind::StorageFull,
            seq,
            format!("cannot write {}: no space left", path.display()),
        )
    }

    /// Source `camera`: a camera-trust alert (`camera_changed`, `injection_suspected`,
    /// `stream_anomaly`) about frame `seq`, with its measured `score` and `detail`.
    pub fn camera_trust(kind: AlertKind, score: Option<f32>, seq: u64, detail: String) -> Self {
        Self {
            score,
            ..Self::about(kind, seq, detail)
        }
    }

    /// Source `detect`: the analyser failed on frame `seq` with `error`.
    pub fn detector_error(seq: u64, error: &str) -> Self {
        Self::about(AlertKind::DetectorError, seq, error.to_string())
    }

    /// Source `bench-outbox`: a synthetic `presentation_attack` alert numbered `seq`.
    pub fn synthetic(seq: u64, score: f32) -> Self {
        Self {
            score: Some(score),
            ..Self::about(AlertKind::PresentationAttack, seq, "bench-outbox".into())
        }
    }
}

/// A condition that raises one alert when it starts and re-arms when it clears (storage full
/// until a capture is stored again; analysis failing until a frame analyses again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Episode {
    active: bool,
}

impl Episode {
    /// The condition holds on this frame: true when this starts an episode (raise the alert).
    pub fn hit(&mut self) -> bool {
        !std::mem::replace(&mut self.active, true)
    }

    /// The condition cleared.
    pub fn clear(&mut self) {
        self.active = false;
    }

    pub fn is_active(self) -> bool {
        self.active
    }
}

/// `storage_full` once per episode: [`StorageFull::full`] returns the alert to send when an
/// episode starts; [`StorageFull::stored`] ends it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorageFull(Episode);

impl StorageFull {
    /// Frame `seq` could not be stored at `path`: the alert, at the start of an episode.
    pub fn full(&mut self, seq: u64, path: &Path) -> Option<AlertRequest> {
        self.0.hit().then(|| AlertRequest::storage_full(seq, path))
    }

    /// A capture was stored again.
    pub fn stored(&mut self) {
        self.0.clear();
    }
}

/// `detector_error` once per episode: [`DetectorErrors::failed`] returns the alert to send when
/// the analyser starts failing; [`DetectorErrors::analysed`] ends the episode.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectorErrors(Episode);

impl DetectorErrors {
    /// The analyser failed on frame `seq`: the alert, at the start of an episode.
    pub fn failed(&mut self, seq: u64, error: &str) -> Option<AlertRequest> {
        self.0
            .hit()
            .then(|| AlertRequest::detector_error(seq, error))
    }

    /// A frame was analysed.
    pub fn analysed(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, severity) rows of the "Alert kinds" table in `docs/mqtt.md`.
    fn documented_kinds() -> Vec<(String, String)> {
        let doc = include_str!("../docs/mqtt.md");
        let start = doc
            .find("### Alert kinds")
            .expect("docs/mqtt.md has an `### Alert kinds` section");
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // header and separator
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (
                    cells[1].trim_matches('`').to_string(),
                    cells[2].trim_matches('`').to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn docs_table_matches_the_enum() {
        let documented = documented_kinds();
        let ours: Vec<(String, String)> = AlertKind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), k.severity().as_str().to_string()))
            .collect();
        assert_eq!(
            documented, ours,
            "docs/mqtt.md `### Alert kinds` vs AlertKind::ALL"
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for k in AlertKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<AlertKind>(&json).unwrap(), k);
            assert_eq!(k.as_str().parse::<AlertKind>().unwrap(), k);
        }
        for s in Severity::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        assert!("camera_gone".parse::<AlertKind>().is_err());
        assert!("fatal".parse::<Severity>().is_err());
    }

    #[test]
    fn constructors_carry_the_kind_severity() {
        let p = Path::new("/data/x.jpg");
        let all = [
            AlertRequest::decided(AlertKind::PresentationAttack, Some(0.9), 3, vec![], None),
            AlertRequest::camera_lost("/dev/video0", "ENODEV", 4),
            AlertRequest::camera_restored("/dev/video0", 250, 4),
            AlertRequest::tamper(Some(27)),
            AlertRequest::storage_full(5, p),
            AlertRequest::detector_error(6, "bad jpeg"),
            AlertRequest::synthetic(7, 0.5),
        ];
        for a in &all {
            assert_eq!(a.severity, a.kind.severity(), "{a:?}");
            assert_eq!(a.first_seq, a.last_seq);
        }
        assert_eq!(all[1].detail, "/dev/video0: ENODEV");
        assert_eq!(all[2].detail, "/dev/video0: back after 250 ms");
        assert_eq!(all[3].detail, "tamper switch opened (GPIO 27)");
        assert_eq!(AlertRequest::tamper(None).detail, "tamper switch opened");
        assert_eq!(all[4].detail, "cannot write /data/x.jpg: no space left");
    }

    #[test]
    fn episodes_raise_once_until_cleared() {
        let mut s = StorageFull::default();
        let p = Path::new("/d");
        assert!(s.full(1, p).is_some());
        assert!(s.full(2, p).is_none());
        s.stored();
        assert_eq!(s.full(3, p).map(|a| a.first_seq), Some(3));

        let mut d = DetectorErrors::default();
        let a = d.failed(10, "decode").unwrap();
        assert_eq!(
            (a.kind, a.first_seq, a.detail.as_str()),
            (AlertKind::DetectorError, 10, "decode")
        );
        assert!(d.failed(11, "decode").is_none());
        d.analysed();
        d.analysed();
        assert!(d.failed(12, "decode").is_some());
    }
}
