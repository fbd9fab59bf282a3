//! Liveness by light: a challenge a screen, a print or an injected feed cannot answer.
//!
//! When a new face appears (and every `interval` while it stays), the booth's illuminator is
//! switched on and off in a pseudo-random code derived from a fresh nonce; the analyser measures
//! how the face's brightness follows it and decides `passed`, `failed` or `inconclusive`
//! ([`decide::decide`], a pure function). The result, with nonce, code, lag and figures, goes
//! into the signed manifest; a failed challenge raises `challenge_failed` and stops authentic
//! sealing for that face. See docs/challenge.md.
//!
//! Pieces: [`code`] (nonce → code), [`measure`] (per-frame luminance), [`decide`] (the decision),
//! [`session`] (the capture-side [`Player`] and the analysis-side [`Challenger`], both pure
//! state machines), the [`Illuminator`] seam (GPIO in `device`, an exec hook, the simulation's
//! light), and [`eval`] (scoring over simulated sessions).

pub mod code;
pub mod decide;
pub mod eval;
pub mod measure;
pub mod session;

use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::AlertKind;
use crate::capture::sim::SimLight;
use crate::decide::{Action, Decision, Verdict};
use crate::detect::Analysis;
use crate::frame::Frame;

use code::Code;
use decide::Outcome;
use session::{Challenger, FrameView, LightTag, Player, Proof};

/// Errors of the challenge stage.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("the system random number generator failed")]
    Random,
    #[error("illuminator {name}: {reason}")]
    Illuminator { name: String, reason: String },
}

/// The challenge as the signed manifest carries it (`challenge`, see docs/capture-format.md).
/// Integers only in manifests, so the signed figures are decimal strings with 4 decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRecord {
    /// `passed`, `failed` or `inconclusive`.
    pub verdict: String,
    /// The nonce (16 bytes, lowercase hex) the code was derived from.
    pub nonce: String,
    /// The code played, `1` = illuminator on, one character per bit.
    pub code: String,
    /// Frames each bit was held for.
    pub frames_per_bit: u64,
    /// Which illuminator played it (`gpio:17`, `exec:…`, `sim`).
    pub illuminator: String,
    /// Frame sequence numbers (this run) the challenge was played over.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Estimated camera response lag in frames; null when it could not be estimated.
    pub lag_frames: Option<u64>,
    /// Correlation of the face/background luminance ratio with the code at that lag (−1..1).
    pub correlation: String,
    /// Relative brightening of the face, light on vs off.
    pub response: String,
    /// Spatial structure of the response across the face (0 = flat).
    pub structure: String,
    /// Frames measured, of the frames the challenge spans.
    pub samples: u64,
    pub expected: u64,
    /// Why, in words.
    pub reason: String,
}

impl ChallengeRecord {
    /// Check what a verifier can check without the frames: the code is the one the nonce
    /// derives, the verdict is a known word.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(self.verdict.as_str(), "passed" | "failed" | "inconclusive") {
            return Err(format!("unknown verdict {:?}", self.verdict));
        }
        let nonce = code::unhex(&self.nonce)
            .filter(|n| n.len() == code::NONCE_LEN)
            .ok_or("nonce: expected 32 lowercase hex digits")?;
        let bits = self.code.len() as u32;
        let derived = Code::from_nonce(&nonce, bits, self.frames_per_bit as u32);
        if derived.to_bit_string() != self.code {
            return Err("code is not the one its nonce derives".into());
        }
        Ok(())
    }
}

impl ChallengeRecord {
    /// The alert detail: the figures and the reason.
    pub fn detail(&self) -> String {
        format!(
            "code {} (nonce {}) via {}: correlation {} at lag {}, response {}, structure {}, {}/{} frames: {}",
            self.code,
            self.nonce,
            self.illuminator,
            self.correlation,
            self.lag_frames
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            self.response,
            self.structure,
            self.samples,
            self.expected,
            self.reason
        )
    }
}

/// The capture side: plays requested codes on the illuminator, one state per frame, and tags
/// each frame. Requests come from the analysis side ([`ChallengeStage`]) over a channel.
pub struct LightDriver {
    player: Player,
    illuminator: Box<dyn Illuminator>,
    requests: Receiver<(u64, Code)>,
    max_lag: u32,
}

impl LightDriver {
    pub fn new(
        illuminator: Box<dyn Illuminator>,
        requests: Receiver<(u64, Code)>,
        max_lag: u32,
    ) -> Self {
        Self {
            player: Player::new(max_lag),
            illuminator,
            requests,
            max_lag,
        }
    }

    /// Before capturing a frame: switch the light as the code says; the tag for the frame. An
    /// illuminator that fails aborts the challenge (its frames go untagged, so it ends
    /// `inconclusive`, never `failed` because of our own light).
    pub fn before_frame(&mut self) -> Option<LightTag> {
        while let Ok((id, code)) = self.requests.try_recv() {
            self.player.start(id, code);
        }
        let (change, tag) = self.player.next_frame();
        if let Some(on) = change {
            if let Err(e) = self.illuminator.set(on) {
                tracing::error!(error = %e, "illuminator failed: challenge aborted");
                self.player = Player::new(self.max_lag);
                let _ = self.illuminator.set(false);
                return None;
            }
        }
        tag
    }

    /// Light off (shutdown).
    pub fn off(&mut self) {
        if let Err(e) = self.illuminator.set(false) {
            tracing::warn!(error = %e, "illuminator: cannot switch off");
        }
    }
}

/// The analysis side: measures the tagged frames, asks for challenges, applies the outcome to
/// each frame's decision.
pub struct ChallengeStage {
    challenger: Challenger,
    requests: Sender<(u64, Code)>,
    /// The face box a challenge is measured at: the first one seen in it, held for the whole
    /// challenge, so the detector's box jitter (which follows the light) does not move the grid
    /// between lit and dark frames.
    held_box: Option<(u64, [f32; 4])>,
}

impl ChallengeStage {
    pub fn new(cfg: ChallengeConfig, illuminator: String, requests: Sender<(u64, Code)>) -> Self {
        Self {
            challenger: Challenger::new(cfg, illuminator),
            requests,
            held_box: None,
        }
    }

    /// One analysed frame: its decision as the challenge amends it, and the challenge record
    /// its manifest carries.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        tag: Option<LightTag>,
        analysis: Option<&Analysis>,
        decision: Decision,
    ) -> (Decision, Option<ChallengeRecord>) {
        let faces = analysis.map_or(0, |a| a.faces.len());
        let measurement = if self.challenger.measuring(tag) {
            let id = tag.map_or(0, |t| t.id);
            analysis
                .and_then(|a| a.primary())
                .map(|f| match self.held_box {
                    Some((held, b)) if held == id => b,
                    _ => {
                        self.held_box = Some((id, f.bbox));
                        f.bbox
                    }
                })
                .and_then(|bbox| match frame.rgb() {
                    Ok(img) => measure::measure(&img, bbox),
                    Err(e) => {
                        tracing::debug!(error = %e, "challenge: frame not measurable");
                        None
                    }
                })
        } else {
            None
        };
        let out = self.challenger.on_frame(FrameView {
            seq: frame.seq,
            mono: frame.captured_mono,
            tag,
            faces,
            measurement,
        });
        if out.start {
            match code::fresh_nonce() {
                Ok(nonce) => {
                    let (id, code) = self.challenger.begin(nonce, frame.seq, frame.captured_mono);
                    tracing::info!(challenge = id, code = %code.to_bit_string(), "light challenge started");
                    let _ = self.requests.send((id, code));
                }
                Err(e) => tracing::error!(error = %e, "challenge not started"),
            }
        }
        let (proof, current) = self.challenger.proof();
        let record = out
            .finished
            .as_ref()
            .map(|f| f.1.clone())
            .or_else(|| current.cloned());
        (apply(decision, proof, out.finished.as_ref()), record)
    }
}

/// `[challenge]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeConfig {
    /// `auto` (the simulation's light with a `sim:` source, else none), `none` (no challenge),
    /// `sim`, `gpio:<BCM pin>` (a LED ring behind a MOSFET) or `exec:<command>` (run as
    /// `<command> on` / `<command> off`, e.g. to switch a kiosk screen white).
    pub illuminator: String,
    /// GPIO illuminator: the pin is driven high to light (false: low to light).
    pub active_high: bool,
    /// Bits in a code.
    pub code_bits: u32,
    /// Camera frames each bit is held for.
    pub frames_per_bit: u32,
    /// Largest camera response lag searched, in frames.
    pub max_lag: u32,
    /// Challenge a face again after this long in view.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A face unseen this long is gone; the next one is new and is challenged.
    #[serde(with = "humantime_serde")]
    pub face_lost_after: Duration,
    /// Challenges tried on a face while they come out inconclusive.
    pub max_attempts: u32,
    /// Least correlation of the face's brightness with the code.
    pub min_correlation: f32,
    /// Least relative brightening of the face (0.02 = 2 %).
    pub min_response: f32,
    /// Least spatial structure of the response across the face (0.068: chosen on real faces of
    /// the training subjects, docs/challenge.md).
    pub min_structure: f32,
    /// Least fraction of the challenge's frames with a measured face.
    pub min_coverage: f32,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            illuminator: "auto".into(),
            active_high: true,
            code_bits: 20,
            frames_per_bit: 2,
            max_lag: 3,
            interval: Duration::from_secs(30),
            face_lost_after: Duration::from_secs(1),
            max_attempts: 3,
            min_correlation: 0.6,
            min_response: 0.02,
            min_structure: 0.068,
            min_coverage: 0.75,
        }
    }
}

/// The configured illuminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IlluminatorSpec {
    None,
    Sim,
    Gpio(u8),
    Exec(String),
}

impl IlluminatorSpec {
    pub fn name(&self) -> String {
        match self {
            IlluminatorSpec::None => "none".into(),
            IlluminatorSpec::Sim => "sim".into(),
            IlluminatorSpec::Gpio(p) => format!("gpio:{p}"),
            IlluminatorSpec::Exec(c) => format!("exec:{c}"),
        }
    }
}

impl ChallengeConfig {
    /// The illuminator for a run from `source_uri` (`auto` resolves by the source).
    pub fn resolve(&self, source_uri: &str) -> Result<IlluminatorSpec, String> {
        let s = self.illuminator.trim();
        Ok(match s {
            "auto" if source_uri.starts_with("sim:") => IlluminatorSpec::Sim,
            "auto" | "none" => IlluminatorSpec::None,
            "sim" if source_uri.starts_with("sim:") => IlluminatorSpec::Sim,
            "sim" => return Err("`sim` needs a `sim:` source".into()),
            _ => {
                if let Some(p) = s.strip_prefix("gpio:") {
                    let pin: u8 = p
                        .parse()
                        .ok()
                        .filter(|&p| p <= 27)
                        .ok_or_else(|| format!("bad GPIO pin {p:?} (BCM 0..=27)"))?;
                    IlluminatorSpec::Gpio(pin)
                } else if let Some(c) = s.strip_prefix("exec:").filter(|c| !c.trim().is_empty()) {
                    IlluminatorSpec::Exec(c.trim().to_string())
                } else {
                    return Err(format!(
                        "expected auto, none, sim, gpio:<pin> or exec:<command>, got {s:?}"
                    ));
                }
            }
        })
    }

    /// Check values; returns (key, reason) of the first bad one.
    pub fn validate(&self, source_uri: &str) -> Result<(), (&'static str, String)> {
        self.resolve(source_uri)
            .map_err(|e| ("challenge.illuminator", e))?;
        if !(4..=64).contains(&self.code_bits) {
            return Err(("challenge.code_bits", "must be in 4..=64".into()));
        }
        if !(1..=30).contains(&self.frames_per_bit) {
            return Err(("challenge.frames_per_bit", "must be in 1..=30".into()));
        }
        if self.max_lag > 30 {
            return Err(("challenge.max_lag", "must be at most 30 frames".into()));
        }
        if self.max_attempts == 0 {
            return Err(("challenge.max_attempts", "must be at least 1".into()));
        }
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(self.min_correlation) {
            return Err(("challenge.min_correlation", "must be in 0..=1".into()));
        }
        if !unit(self.min_coverage) {
            return Err(("challenge.min_coverage", "must be in 0..=1".into()));
        }
        if !(self.min_response >= 0.0 && self.min_response < 10.0) {
            return Err(("challenge.min_response", "must be in 0..10".into()));
        }
        if !(self.min_structure >= 0.0 && self.min_structure < 10.0) {
            return Err(("challenge.min_structure", "must be in 0..10".into()));
        }
        Ok(())
    }
}

/// The illuminator seam: the booth's light, switched by the capture thread.
pub trait Illuminator: Send {
    fn set(&mut self, on: bool) -> Result<(), ChallengeError>;
    /// For manifests and logs (`gpio:17`, `sim`, …).
    fn name(&self) -> String;
}

/// The simulation's light ([`SimLight`], read by the `sim:` source).
pub struct SimIlluminator(pub SimLight);

impl Illuminator for SimIlluminator {
    fn set(&mut self, on: bool) -> Result<(), ChallengeError> {
        self.0.set(on);
        Ok(())
    }
    fn name(&self) -> String {
        "sim".into()
    }
}

/// Runs `<command> on` / `<command> off` and waits for it (it should be quick: it runs on the
/// capture thread between two frames).
pub struct ExecIlluminator {
    command: String,
}

impl ExecIlluminator {
    pub fn new(command: String) -> Self {
        Self { command }
    }
}

impl Illuminator for ExecIlluminator {
    fn set(&mut self, on: bool) -> Result<(), ChallengeError> {
        let mut parts = self.command.split_whitespace();
        let err = |reason: String| ChallengeError::Illuminator {
            name: self.name(),
            reason,
        };
        let program = parts.next().ok_or_else(|| err("empty command".into()))?;
        let status = std::process::Command::new(program)
            .args(parts)
            .arg(if on { "on" } else { "off" })
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| err(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(err(format!("exited with {status}")))
        }
    }
    fn name(&self) -> String {
        format!("exec:{}", self.command)
    }
}

/// The challenge's effect on a frame's decision (pure): a face not yet proven live is not
/// `authentic` (`unknown` until a challenge passes); a face whose challenge failed is an
/// `attack`; the frame on which a challenge failed raises `challenge_failed` (score: the
/// correlation with the code, clamped to 0..1).
pub fn apply(
    mut d: Decision,
    proof: Proof,
    finished: Option<&(Outcome, ChallengeRecord)>,
) -> Decision {
    if let Some((Outcome::Failed, rec)) = finished {
        let score = rec
            .correlation
            .parse::<f32>()
            .unwrap_or(0.0)
            .clamp(0.0, 1.0);
        d.actions
            .push(Action::alert(AlertKind::ChallengeFailed, Some(score)));
    }
    d.verdict = match (d.verdict, proof) {
        (Verdict::Authentic | Verdict::Unknown, Proof::Failed) => Verdict::Attack,
        (Verdict::Authentic, Proof::Unproven | Proof::NoFace) => Verdict::Unknown,
        (v, _) => v,
    };
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(v: Verdict) -> Decision {
        Decision {
            verdict: v,
            actions: Vec::new(),
        }
    }

    #[test]
    fn only_a_passed_challenge_keeps_authentic() {
        let v = |verdict, proof| apply(decision(verdict), proof, None).verdict;
        assert_eq!(v(Verdict::Authentic, Proof::Passed), Verdict::Authentic);
        assert_eq!(v(Verdict::Authentic, Proof::Unproven), Verdict::Unknown);
        assert_eq!(v(Verdict::Authentic, Proof::Failed), Verdict::Attack);
        assert_eq!(v(Verdict::Unknown, Proof::Failed), Verdict::Attack);
        assert_eq!(v(Verdict::NoFace, Proof::Failed), Verdict::NoFace);
        assert_eq!(
            v(Verdict::UntrustedSource, Proof::Passed),
            Verdict::UntrustedSource
        );
        assert_eq!(v(Verdict::Attack, Proof::Passed), Verdict::Attack);
    }

    fn record(verdict: &str, nonce: [u8; 16]) -> ChallengeRecord {
        let code = Code::from_nonce(&nonce, 12, 2);
        ChallengeRecord {
            verdict: verdict.into(),
            nonce: code::hex(&nonce),
            code: code.to_bit_string(),
            frames_per_bit: 2,
            illuminator: "sim".into(),
            first_seq: 1,
            last_seq: 27,
            lag_frames: Some(1),
            correlation: "0.1234".into(),
            response: "0.0010".into(),
            structure: "0.0000".into(),
            samples: 27,
            expected: 27,
            reason: "r".into(),
        }
    }

    #[test]
    fn a_failed_challenge_raises_its_alert_once() {
        let f = (Outcome::Failed, record("failed", [3; 16]));
        let d = apply(decision(Verdict::Authentic), Proof::Failed, Some(&f));
        assert_eq!(d.verdict, Verdict::Attack);
        assert_eq!(
            d.actions,
            [Action::alert(AlertKind::ChallengeFailed, Some(0.1234))]
        );
        let p = (Outcome::Passed, record("passed", [3; 16]));
        assert!(apply(decision(Verdict::Authentic), Proof::Passed, Some(&p))
            .actions
            .is_empty());
    }

    #[test]
    fn records_are_checked_against_their_nonce() {
        assert_eq!(record("passed", [9; 16]).check(), Ok(()));
        let mut r = record("passed", [9; 16]);
        r.code = r.code.replace('1', "x");
        assert!(r.check().is_err());
        let mut r = record("passed", [9; 16]);
        r.nonce = "00".into();
        assert!(r.check().is_err());
        assert!(record("maybe", [9; 16]).check().is_err());
        // Another nonce's code.
        let mut r = record("passed", [9; 16]);
        r.code = record("passed", [10; 16]).code;
        if r.code != record("passed", [9; 16]).code {
            assert!(r.check().is_err());
        }
    }

    #[test]
    fn illuminator_specs_resolve_and_bad_ones_are_named() {
        let c = |s: &str| ChallengeConfig {
            illuminator: s.into(),
            ..Default::default()
        };
        assert_eq!(c("auto").resolve("sim:live"), Ok(IlluminatorSpec::Sim));
        assert_eq!(c("auto").resolve("/dev/video0"), Ok(IlluminatorSpec::None));
        assert_eq!(
            c("gpio:17").resolve("/dev/video0"),
            Ok(IlluminatorSpec::Gpio(17))
        );
        assert_eq!(
            c("exec:/usr/bin/light --ring").resolve("x"),
            Ok(IlluminatorSpec::Exec("/usr/bin/light --ring".into()))
        );
        assert!(c("sim").resolve("/dev/video0").is_err());
        assert!(c("gpio:99").resolve("x").is_err());
        assert!(c("exec:").resolve("x").is_err());
        let e = c("laser").validate("x").unwrap_err();
        assert_eq!(e.0, "challenge.illuminator");
        assert!(ChallengeConfig::default().validate("samples").is_ok());
    }

    #[test]
    fn exec_illuminator_runs_the_command_and_reports_failure() {
        let mut ok = ExecIlluminator::new("true".into());
        assert!(ok.set(true).is_ok());
        let mut bad = ExecIlluminator::new("false".into());
        let e = bad.set(false).unwrap_err().to_string();
        assert!(e.contains("exec:false"), "{e}");
        let mut missing = ExecIlluminator::new("/nonexistent/light".into());
        assert!(missing.set(true).is_err());
    }
}
