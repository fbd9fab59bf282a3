//! Decisions as pure functions: per-frame analysis in, verdict and actions out. No I/O, no clock
//! (time comes in with the frame).
//!
//! [`step`] keeps, per tracked face (matched frame to frame by box overlap), an exponential moving
//! average of the PAD live score with a time constant ([`DecideConfig::smoothing`]), so the result
//! does not depend on the frame rate. The primary face drives a hysteresis state machine:
//!
//! ```text
//!            smoothed < attack_enter              held ≥ min_attack: Alert once
//!   Live ───────────────────────────▶ Suspect ─────────────────────────────────▶ Attack
//!    ▲                                   │                                          │
//!    └──────── smoothed > attack_exit ◀──┴──────────────────────────────────────────┘
//! ```
//!
//! Scores between the two thresholds keep the current phase. The verdict is `Attack` in both
//! `Suspect` and `Attack` (the smoothed score is on the attack side); the alert waits for the
//! minimum duration, so one bad frame never alerts. With no face for longer than
//! [`DecideConfig::face_lost_after`] the tracks and the phase reset. Several faces give
//! `MultipleFaces`, and (optionally) a warning alert once they persist.
//!
//! When the deepfake classifier runs (`[detect] deepfake_model`), each track also smooths the
//! face's `deepfake_score` with the same time constant, and the primary face drives a second,
//! independent machine of the same shape on that score (entered *above*
//! [`DecideConfig::deepfake_enter`], left below [`DecideConfig::deepfake_exit`], alerting
//! [`ALERT_DEEPFAKE`] once after [`DecideConfig::min_deepfake`]). It only adds alerts: the
//! verdict stays the PAD verdict, and without deepfake scores nothing changes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::{AlertKind, AlertRequest, ModelId, Severity};
use crate::detect::Analysis;

/// The verdict on one frame, recorded in its signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// One live face.
    Authentic,
    /// A presentation attack (screen, print, mask) is in progress.
    Attack,
    NoFace,
    MultipleFaces,
    /// No detector configured, or it failed on this frame, or no PAD score for the face.
    Unknown,
    /// The frame came from a source that is not trusted (another camera than the pinned one, an
    /// injection instrument, a stream that does not behave like a sensor); set by
    /// the camera guard (`camera::apply`), never sealed as authentic.
    UntrustedSource,
}

/// What the decider wants done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Raise an alert about this frame (sealed as evidence).
    Alert {
        kind: AlertKind,
        severity: Severity,
        score: Option<f32>,
    },
}

impl Action {
    /// An alert of `kind` (its severity is the kind's).
    pub fn alert(kind: AlertKind, score: Option<f32>) -> Self {
        Action::Alert {
            kind,
            severity: kind.severity(),
            score,
        }
    }
}

/// Decision for one frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub actions: Vec<Action>,
}

impl Decision {
    /// The alerts this decision raises about frame `seq`, citing `models` and the sealed
    /// manifest `evidence` when the frame was sealed.
    pub fn alerts(
        &self,
        seq: u64,
        models: &[ModelId],
        evidence: Option<&str>,
    ) -> Vec<AlertRequest> {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Alert { kind, score, .. } => AlertRequest::decided(
                    *kind,
                    *score,
                    seq,
                    models.to_vec(),
                    evidence.map(str::to_string),
                ),
            })
            .collect()
    }
}

/// Alert kind for a confirmed presentation attack; its score is the smoothed attack probability
/// (1 − smoothed live score).
pub const ALERT_ATTACK: AlertKind = AlertKind::PresentationAttack;
/// Alert kind for a persisting deepfake-artefact score on the primary face; its score is the
/// smoothed deepfake probability. Severity `warning`: the classifier (Meso4) is weak evidence.
pub const ALERT_DEEPFAKE: AlertKind = AlertKind::DeepfakeSuspected;
/// Alert kind for several faces persisting in view.
pub const ALERT_MULTIPLE_FACES: AlertKind = AlertKind::MultipleFaces;

/// `[decide]` section of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Time constant of the live-score moving average ("0s" = no smoothing).
    #[serde(with = "humantime_serde")]
    pub smoothing: Duration,
    /// Smoothed live score below which the face is treated as an attack.
    pub attack_enter: f32,
    /// Smoothed live score above which an attack is over (≥ `attack_enter`: hysteresis).
    pub attack_exit: f32,
    /// How long the attack condition must hold before the alert.
    #[serde(with = "humantime_serde")]
    pub min_attack: Duration,
    /// After this long with no face, face tracks and the attack state are forgotten.
    #[serde(with = "humantime_serde")]
    pub face_lost_after: Duration,
    /// Boxes overlapping at least this much (IoU) in consecutive frames are the same face.
    pub track_iou: f32,
    /// Alert when several faces stay in view this long.
    pub alert_multiple_faces: bool,
    #[serde(with = "humantime_serde")]
    pub min_multiple_faces: Duration,
    /// Smoothed deepfake score above which the primary face is suspected (only when the
    /// deepfake classifier runs).
    pub deepfake_enter: f32,
    /// Smoothed deepfake score below which the suspicion is over (≤ `deepfake_enter`).
    pub deepfake_exit: f32,
    /// How long the deepfake condition must hold before the alert.
    #[serde(with = "humantime_serde")]
    pub min_deepfake: Duration,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            smoothing: Duration::from_millis(300),
            attack_enter: 0.4,
            attack_exit: 0.6,
            min_attack: Duration::from_millis(500),
            face_lost_after: Duration::from_secs(1),
            track_iou: 0.3,
            alert_multiple_faces: true,
            min_multiple_faces: Duration::from_secs(2),
            deepfake_enter: 0.7,
            deepfake_exit: 0.5,
            min_deepfake: Duration::from_secs(1),
        }
    }
}

impl DecideConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        if !unit(self.attack_enter) {
            return Err(("decide.attack_enter", "must be in 0..=1".into()));
        }
        if !unit(self.attack_exit) || self.attack_exit < self.attack_enter {
            return Err((
                "decide.attack_exit",
                "must be in attack_enter..=1 (hysteresis)".into(),
            ));
        }
        if !unit(self.deepfake_enter) {
            return Err(("decide.deepfake_enter", "must be in 0..=1".into()));
        }
        if !unit(self.deepfake_exit) || self.deepfake_exit > self.deepfake_enter {
            return Err((
                "decide.deepfake_exit",
                "must be in 0..=deepfake_enter (hysteresis)".into(),
            ));
        }
        if !(self.track_iou > 0.0 && self.track_iou <= 1.0) {
            return Err(("decide.track_iou", "must be in (0, 1]".into()));
        }
        if self.smoothing > Duration::from_secs(60) {
            return Err(("decide.smoothing", "must be at most 60s".into()));
        }
        Ok(())
    }
}

/// One face followed across frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Last box, x y w h.
    pub bbox: [f32; 4],
    /// Smoothed live score, once a score was seen.
    pub live: Option<f32>,
    /// Frame time of the last score update.
    pub updated: Duration,
    /// Smoothed deepfake score, once one was seen.
    pub deepfake: Option<f32>,
    /// Frame time of the last deepfake score update.
    pub deepfake_updated: Duration,
    /// Frame time the face was last seen.
    pub seen: Duration,
}

/// Attack phase of the primary face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Live,
    /// Below `attack_enter` since this frame time; no alert yet.
    Suspect {
        since: Duration,
    },
    /// Confirmed and alerted.
    Attack {
        since: Duration,
    },
}

/// Decider state: configuration, face tracks, phases. Create with [`DeciderState::new`].
#[derive(Debug, Clone)]
pub struct DeciderState {
    pub cfg: DecideConfig,
    /// Frames seen.
    pub frames: u64,
    /// Tracks, primary first.
    pub tracks: Vec<Track>,
    pub phase: Phase,
    /// Deepfake phase of the primary face (`Suspect`: above `deepfake_enter`, no alert yet).
    pub deepfake_phase: Phase,
    /// First frame time of the current run of several-face frames, and whether it alerted.
    pub multiple_since: Option<(Duration, bool)>,
    /// Frame time of the last frame with a face.
    pub last_face: Option<Duration>,
}

impl Default for DeciderState {
    fn default() -> Self {
        Self::new(DecideConfig::default())
    }
}

impl DeciderState {
    pub fn new(cfg: DecideConfig) -> Self {
        Self {
            cfg,
            frames: 0,
            tracks: Vec::new(),
            phase: Phase::Live,
            deepfake_phase: Phase::Live,
            multiple_since: None,
            last_face: None,
        }
    }

    /// Smoothed live score of the primary face.
    pub fn primary_live(&self) -> Option<f32> {
        self.tracks.first().and_then(|t| t.live)
    }

    /// Smoothed deepfake score of the primary face.
    pub fn primary_deepfake(&self) -> Option<f32> {
        self.tracks.first().and_then(|t| t.deepfake)
    }

    fn reset_faces(&mut self) {
        self.tracks.clear();
        self.phase = Phase::Live;
        self.deepfake_phase = Phase::Live;
    }
}

fn iou_xywh(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let iy = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Exponential moving average over time: the weight of the new sample is `1 − e^(−dt/τ)`.
fn ema(prev: f32, sample: f32, dt: Duration, tau: Duration) -> f32 {
    if tau.is_zero() {
        return sample;
    }
    let a = 1.0 - (-dt.as_secs_f32() / tau.as_secs_f32()).exp();
    prev + a * (sample - prev)
}

/// Match this frame's faces to the previous tracks (greedy by IoU, in face order) and update
/// their smoothed scores.
fn update_tracks(state: &mut DeciderState, a: &Analysis, now: Duration) {
    let mut old = std::mem::take(&mut state.tracks);
    for f in &a.faces {
        let best = old
            .iter()
            .enumerate()
            .map(|(i, t)| (i, iou_xywh(&t.bbox, &f.bbox)))
            .filter(|(_, v)| *v >= state.cfg.track_iou)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let mut t = match best {
            Some((i, _)) => old.swap_remove(i),
            None => Track {
                bbox: f.bbox,
                live: None,
                updated: now,
                deepfake: None,
                deepfake_updated: now,
                seen: now,
            },
        };
        t.bbox = f.bbox;
        t.seen = now;
        if let Some(s) = f.live_score.filter(|s| s.is_finite()) {
            let s = s.clamp(0.0, 1.0);
            t.live = Some(match t.live {
                Some(prev) => ema(prev, s, now.saturating_sub(t.updated), state.cfg.smoothing),
                None => s,
            });
            t.updated = now;
        }
        if let Some(s) = f.deepfake_score.filter(|s| s.is_finite()) {
            let s = s.clamp(0.0, 1.0);
            t.deepfake = Some(match t.deepfake {
                Some(prev) => ema(
                    prev,
                    s,
                    now.saturating_sub(t.deepfake_updated),
                    state.cfg.smoothing,
                ),
                None => s,
            });
            t.deepfake_updated = now;
        }
        state.tracks.push(t);
    }
}

/// Pure step: (state, this frame's analysis, its capture time) → (state, decision).
///
/// `analysis` is `None` when analysis failed; an analysis without models means no detector is
/// configured. Both give `Unknown` and leave the state alone.
pub fn step(
    mut state: DeciderState,
    analysis: Option<&Analysis>,
    now: Duration,
) -> (DeciderState, Decision) {
    state.frames += 1;
    let mut actions = Vec::new();
    let a = match analysis {
        Some(a) if !a.models.is_empty() => a,
        _ => {
            return (
                state,
                Decision {
                    verdict: Verdict::Unknown,
                    actions,
                },
            )
        }
    };
    if a.faces.is_empty() {
        state.multiple_since = None;
        let lost = state
            .last_face
            .is_none_or(|t| now.saturating_sub(t) >= state.cfg.face_lost_after);
        if lost {
            state.reset_faces();
        }
        return (
            state,
            Decision {
                verdict: Verdict::NoFace,
                actions,
            },
        );
    }
    state.last_face = Some(now);
    // A new primary face (no overlap with the tracked one) starts a fresh attack state.
    let primary_continues = state
        .tracks
        .first()
        .zip(a.faces.first())
        .is_some_and(|(t, f)| iou_xywh(&t.bbox, &f.bbox) >= state.cfg.track_iou);
    update_tracks(&mut state, a, now);
    if !primary_continues {
        state.phase = Phase::Live;
        state.deepfake_phase = Phase::Live;
    }

    if a.faces.len() > 1 {
        let (since, alerted) = *state.multiple_since.get_or_insert((now, false));
        if state.cfg.alert_multiple_faces
            && !alerted
            && now.saturating_sub(since) >= state.cfg.min_multiple_faces
        {
            actions.push(Action::alert(ALERT_MULTIPLE_FACES, None));
            state.multiple_since = Some((since, true));
        }
        return (
            state,
            Decision {
                verdict: Verdict::MultipleFaces,
                actions,
            },
        );
    }
    state.multiple_since = None;
    deepfake_step(&mut state, now, &mut actions);

    let Some(live) = state.primary_live() else {
        // A face, but no PAD score (classifier not configured or not run).
        return (
            state,
            Decision {
                verdict: Verdict::Unknown,
                actions,
            },
        );
    };
    let cfg = &state.cfg;
    let (phase, alert) = hysteresis(
        state.phase,
        live < cfg.attack_enter,
        live > cfg.attack_exit,
        now,
        cfg.min_attack,
    );
    state.phase = phase;
    if alert {
        actions.push(Action::alert(ALERT_ATTACK, Some(1.0 - live)));
    }
    let verdict = match state.phase {
        Phase::Live => Verdict::Authentic,
        Phase::Suspect { .. } | Phase::Attack { .. } => Verdict::Attack,
    };
    (state, Decision { verdict, actions })
}

/// The deepfake machine of the primary face (one face in view): hysteresis on the smoothed
/// deepfake score, one `warning` alert after `min_deepfake`. No score: phase unchanged.
fn deepfake_step(state: &mut DeciderState, now: Duration, actions: &mut Vec<Action>) {
    let Some(df) = state.primary_deepfake() else {
        return;
    };
    let cfg = &state.cfg;
    let (phase, alert) = hysteresis(
        state.deepfake_phase,
        df > cfg.deepfake_enter,
        df < cfg.deepfake_exit,
        now,
        cfg.min_deepfake,
    );
    state.deepfake_phase = phase;
    if alert {
        actions.push(Action::alert(ALERT_DEEPFAKE, Some(df)));
    }
}

/// One step of an attack machine with hysteresis (the PAD and the deepfake machines):
/// `entering` / `leaving` say whether the smoothed score is past the enter / exit threshold.
/// A suspicion that has lasted `min` becomes an attack; the returned flag says to alert now
/// (once per episode).
fn hysteresis(
    phase: Phase,
    entering: bool,
    leaving: bool,
    now: Duration,
    min: Duration,
) -> (Phase, bool) {
    let phase = match phase {
        Phase::Live if entering => Phase::Suspect { since: now },
        Phase::Suspect { .. } | Phase::Attack { .. } if leaving => Phase::Live,
        p => p,
    };
    match phase {
        Phase::Suspect { since } if now.saturating_sub(since) >= min => {
            (Phase::Attack { since }, true)
        }
        p => (p, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Face;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn face(x: f32, live: Option<f32>) -> Face {
        Face {
            bbox: [x, 100.0, 100.0, 100.0],
            score: 0.9,
            landmarks: vec![],
            live_score: live,
            deepfake_score: None,
        }
    }

    fn analysis(faces: Vec<Face>) -> Analysis {
        Analysis {
            seq: 0,
            width: 640,
            height: 480,
            faces,
            models: vec![ModelId {
                name: "m".into(),
                weights_sha256: "0".into(),
            }],
        }
    }

    fn no_smoothing() -> DecideConfig {
        DecideConfig {
            smoothing: Duration::ZERO,
            ..DecideConfig::default()
        }
    }

    /// Feed (time ms, faces) frames; return the decisions.
    fn run(cfg: DecideConfig, frames: &[(u64, Vec<Face>)]) -> (DeciderState, Vec<Decision>) {
        let mut st = DeciderState::new(cfg);
        let mut out = Vec::new();
        for (t, faces) in frames {
            let a = analysis(faces.clone());
            let (s, d) = step(st, Some(&a), ms(*t));
            st = s;
            out.push(d);
        }
        (st, out)
    }

    fn alerts(ds: &[Decision], kind: AlertKind) -> usize {
        ds.iter()
            .flat_map(|d| &d.actions)
            .filter(|Action::Alert { kind: k, .. }| *k == kind)
            .count()
    }

    #[test]
    fn unknown_without_models_or_analysis() {
        let st = DeciderState::default();
        let (st, d) = step(st, None, ms(0));
        assert_eq!(d.verdict, Verdict::Unknown);
        let mut a = analysis(vec![face(0.0, Some(0.1))]);
        a.models.clear();
        let (st, d) = step(st, Some(&a), ms(10));
        assert_eq!(d.verdict, Verdict::Unknown);
        assert!(st.tracks.is_empty());
        assert_eq!(st.frames, 2);
    }

    #[test]
    fn live_face_is_authentic_and_never_alerts() {
        let frames: Vec<_> = (0..50)
            .map(|i| (i * 100, vec![face(0.0, Some(0.9))]))
            .collect();
        let (_, ds) = run(DecideConfig::default(), &frames);
        assert!(ds.iter().all(|d| d.verdict == Verdict::Authentic));
        assert_eq!(alerts(&ds, ALERT_ATTACK), 0);
    }

    #[test]
    fn face_without_pad_score_is_unknown() {
        let (_, ds) = run(DecideConfig::default(), &[(0, vec![face(0.0, None)])]);
        assert_eq!(ds[0].verdict, Verdict::Unknown);
    }

    #[test]
    fn attack_alerts_once_after_min_duration() {
        let cfg = DecideConfig {
            min_attack: ms(500),
            ..no_smoothing()
        };
        let frames: Vec<_> = (0..20)
            .map(|i| (i * 100, vec![face(0.0, Some(0.1))]))
            .collect();
        let (st, ds) = run(cfg, &frames);
        // Attack verdict from the first frame; alert exactly at 500 ms (frame 5), only once.
        assert!(ds.iter().all(|d| d.verdict == Verdict::Attack));
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(!d.actions.is_empty(), i == 5, "frame {i}: {:?}", d.actions);
        }
        assert_alert(&ds[5].actions[0], ALERT_ATTACK, "critical", 0.9);
        assert!(matches!(st.phase, Phase::Attack { since } if since == ms(0)));
    }

    #[test]
    fn short_dip_does_not_alert() {
        let cfg = DecideConfig {
            min_attack: ms(500),
            ..no_smoothing()
        };
        let mut frames: Vec<_> = (0..4)
            .map(|i| (i * 100, vec![face(0.0, Some(0.1))]))
            .collect();
        frames.extend((4..20).map(|i| (i * 100, vec![face(0.0, Some(0.9))])));
        let (_, ds) = run(cfg, &frames);
        assert_eq!(alerts(&ds, ALERT_ATTACK), 0);
        assert_eq!(ds[19].verdict, Verdict::Authentic);
    }

    #[test]
    fn hysteresis_band_keeps_the_current_phase() {
        let cfg = DecideConfig {
            attack_enter: 0.4,
            attack_exit: 0.6,
            min_attack: ms(200),
            ..no_smoothing()
        };
        let seq = [0.9, 0.5, 0.3, 0.5, 0.5, 0.55, 0.7, 0.5, 0.45];
        let frames: Vec<_> = seq
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u64 * 100, vec![face(0.0, Some(s))]))
            .collect();
        let (_, ds) = run(cfg, &frames);
        let v: Vec<_> = ds.iter().map(|d| d.verdict).collect();
        use Verdict::*;
        // 0.5 in the band: stays Authentic before, stays Attack after entering; 0.7 exits.
        assert_eq!(
            v,
            vec![
                Authentic, Authentic, Attack, Attack, Attack, Attack, Authentic, Authentic,
                Authentic
            ]
        );
        // Entered at 200 ms, held to 400 ms → one alert at frame 4.
        assert_eq!(alerts(&ds, ALERT_ATTACK), 1);
        assert!(!ds[4].actions.is_empty());
    }

    #[test]
    fn smoothing_damps_a_single_bad_frame_and_is_rate_independent() {
        let cfg = DecideConfig {
            smoothing: ms(300),
            ..DecideConfig::default()
        };
        // One frame at 0.0 among 0.9s at 10 fps: EMA weight 1-e^(-1/3) ≈ 0.28 → ≈ 0.65 > 0.4.
        let frames: Vec<_> = (0..10)
            .map(|i| {
                (
                    i * 100,
                    vec![face(0.0, Some(if i == 5 { 0.0 } else { 0.9 }))],
                )
            })
            .collect();
        let (_, ds) = run(cfg.clone(), &frames);
        assert!(ds.iter().all(|d| d.verdict == Verdict::Authentic));

        // Same signal (live 0.9 then 0.1 from 1 s) at 10 and at 30 fps: smoothed values agree at 1.5 s.
        let signal = |t: u64| if t < 1000 { 0.9 } else { 0.1 };
        let at = |step_ms: u64| {
            let frames: Vec<_> = (0..=1500 / step_ms)
                .map(|i| (i * step_ms, vec![face(0.0, Some(signal(i * step_ms)))]))
                .collect();
            run(cfg.clone(), &frames).0.primary_live().unwrap()
        };
        let (a, b) = (at(100), at(30));
        assert!((a - b).abs() < 0.05, "10 fps {a} vs ~33 fps {b}");
        assert!(a < 0.4, "smoothed value {a} should have crossed by 1.5 s");
    }

    #[test]
    fn no_face_state_and_reset_after_face_lost() {
        let cfg = DecideConfig {
            face_lost_after: ms(1000),
            min_attack: ms(100),
            ..no_smoothing()
        };
        let mut frames = vec![
            (0, vec![face(0.0, Some(0.1))]),
            (100, vec![face(0.0, Some(0.1))]), // alert
            (200, vec![]),
            (300, vec![face(0.0, Some(0.5))]), // within grace: still Attack (in band)
        ];
        let (st, ds) = run(cfg.clone(), &frames);
        assert_eq!(ds[2].verdict, Verdict::NoFace);
        assert_eq!(ds[3].verdict, Verdict::Attack);
        assert!(matches!(st.phase, Phase::Attack { .. }));
        // Now the face is gone for 1.5 s: state resets, a band score is Authentic again.
        frames.truncate(3);
        frames.push((1300, vec![]));
        frames.push((1400, vec![face(0.0, Some(0.5))]));
        let (_, ds) = run(cfg, &frames);
        assert_eq!(ds[3].verdict, Verdict::NoFace);
        assert_eq!(ds[4].verdict, Verdict::Authentic);
    }

    #[test]
    fn new_face_in_a_different_place_starts_fresh() {
        let cfg = DecideConfig {
            smoothing: ms(1000),
            ..DecideConfig::default()
        };
        let frames = vec![
            (0, vec![face(0.0, Some(0.1))]),
            (100, vec![face(0.0, Some(0.1))]),
            // Someone else, elsewhere: no overlap → own track, no carry-over of the low score.
            (200, vec![face(400.0, Some(0.9))]),
        ];
        let (st, ds) = run(cfg, &frames);
        assert_eq!(ds[1].verdict, Verdict::Attack);
        assert_eq!(ds[2].verdict, Verdict::Authentic);
        assert_eq!(st.primary_live(), Some(0.9));
        assert_eq!(st.phase, Phase::Live);
    }

    #[test]
    fn several_faces_state_and_warning_alert() {
        let cfg = DecideConfig {
            min_multiple_faces: ms(300),
            ..DecideConfig::default()
        };
        let two = || vec![face(0.0, Some(0.9)), face(400.0, None)];
        let frames: Vec<_> = (0..8).map(|i| (i * 100, two())).collect();
        let (_, ds) = run(cfg.clone(), &frames);
        assert!(ds.iter().all(|d| d.verdict == Verdict::MultipleFaces));
        assert_eq!(alerts(&ds, ALERT_MULTIPLE_FACES), 1);
        assert!(!ds[3].actions.is_empty());
        // Interrupted runs restart the clock; disabled alert never fires.
        let frames = vec![
            (0, two()),
            (200, vec![face(0.0, Some(0.9))]),
            (300, two()),
            (500, two()),
        ];
        let (_, ds) = run(cfg.clone(), &frames);
        assert_eq!(alerts(&ds, ALERT_MULTIPLE_FACES), 0);
        let off = DecideConfig {
            alert_multiple_faces: false,
            ..cfg
        };
        let frames: Vec<_> = (0..10).map(|i| (i * 100, two())).collect();
        assert_eq!(alerts(&run(off, &frames).1, ALERT_MULTIPLE_FACES), 0);
    }

    #[test]
    fn tracks_follow_moving_faces() {
        let cfg = no_smoothing();
        let frames = vec![
            (0, vec![face(0.0, Some(0.9)), face(300.0, Some(0.2))]),
            (100, vec![face(310.0, None), face(10.0, None)]),
        ];
        let (st, _) = run(cfg, &frames);
        assert_eq!(st.tracks.len(), 2);
        // Scores stayed with their faces although the order changed.
        assert_eq!(st.tracks[0].bbox[0], 310.0);
        assert_eq!(st.tracks[0].live, Some(0.2));
        assert_eq!(st.tracks[1].live, Some(0.9));
    }

    #[test]
    fn time_going_backwards_and_bad_scores_do_not_panic() {
        let frames = vec![
            (1000, vec![face(0.0, Some(0.9))]),
            (500, vec![face(0.0, Some(f32::NAN))]),
            (600, vec![face(0.0, Some(7.0))]),
        ];
        let (st, ds) = run(DecideConfig::default(), &frames);
        assert_eq!(ds.len(), 3);
        let l = st.primary_live().unwrap();
        assert!((0.0..=1.0).contains(&l));
    }

    fn face_df(live: Option<f32>, df: Option<f32>) -> Face {
        Face {
            deepfake_score: df,
            ..face(0.0, live)
        }
    }

    fn df_frames(seq: &[f32]) -> Vec<(u64, Vec<Face>)> {
        seq.iter()
            .enumerate()
            .map(|(i, &d)| (i as u64 * 100, vec![face_df(Some(0.9), Some(d))]))
            .collect()
    }

    /// `action` is an alert of `kind` and `severity` with a score within 1e-6 of `score`.
    fn assert_alert(action: &Action, kind: AlertKind, severity: &str, score: f32) {
        let Action::Alert {
            kind: k,
            severity: s,
            score: v,
        } = action;
        assert_eq!(*k, kind);
        assert_eq!(*s, severity);
        assert!((v.unwrap() - score).abs() < 1e-6, "score {v:?}");
    }

    #[test]
    fn deepfake_alerts_once_after_min_duration_and_keeps_the_pad_verdict() {
        let cfg = DecideConfig {
            min_deepfake: ms(500),
            ..no_smoothing()
        };
        let (st, ds) = run(cfg, &df_frames(&[0.9; 20]));
        assert!(ds.iter().all(|d| d.verdict == Verdict::Authentic));
        for (i, d) in ds.iter().enumerate() {
            assert_eq!(!d.actions.is_empty(), i == 5, "frame {i}: {:?}", d.actions);
        }
        assert_alert(&ds[5].actions[0], ALERT_DEEPFAKE, "warning", 0.9);
        assert!(matches!(st.deepfake_phase, Phase::Attack { since } if since == ms(0)));
        assert_eq!(st.phase, Phase::Live);
        assert_eq!(alerts(&ds, ALERT_ATTACK), 0);
    }

    #[test]
    fn deepfake_hysteresis_and_short_spikes() {
        let cfg = DecideConfig {
            deepfake_enter: 0.7,
            deepfake_exit: 0.5,
            min_deepfake: ms(200),
            ..no_smoothing()
        };
        // Short spike (100 ms) below min_deepfake: no alert.
        let (st, ds) = run(cfg.clone(), &df_frames(&[0.1, 0.9, 0.2, 0.6, 0.6]));
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 0);
        assert_eq!(st.deepfake_phase, Phase::Live, "0.6 in the band stays Live");
        // Enter at 0.8, band 0.6 keeps it (alert at 200 ms), 0.4 exits, re-entry alerts again.
        let seq = [0.8, 0.6, 0.6, 0.6, 0.4, 0.8, 0.8, 0.8];
        let (st, ds) = run(cfg.clone(), &df_frames(&seq));
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 2);
        assert!(!ds[2].actions.is_empty());
        assert!(!ds[7].actions.is_empty());
        assert!(matches!(st.deepfake_phase, Phase::Attack { since } if since == ms(500)));
        // With smoothing, one bad frame among clean ones does not even enter.
        let smooth = DecideConfig {
            smoothing: ms(300),
            ..cfg
        };
        let (st, ds) = run(smooth, &df_frames(&[0.1, 0.1, 1.0, 0.1, 0.1, 0.1]));
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 0);
        assert!(st.primary_deepfake().unwrap() < 0.5);
    }

    #[test]
    fn deepfake_without_pad_and_without_scores() {
        let cfg = DecideConfig {
            min_deepfake: ms(100),
            ..no_smoothing()
        };
        // Face detection only + deepfake classifier: verdict Unknown, the alert still comes.
        let frames: Vec<_> = (0..3)
            .map(|i| (i * 100, vec![face_df(None, Some(0.95))]))
            .collect();
        let (_, ds) = run(cfg.clone(), &frames);
        assert!(ds.iter().all(|d| d.verdict == Verdict::Unknown));
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 1);
        // Classifier off (no scores): nothing changes, whatever the PAD says.
        let frames: Vec<_> = (0..30)
            .map(|i| (i * 100, vec![face_df(Some(0.1), None)]))
            .collect();
        let (st, ds) = run(cfg.clone(), &frames);
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 0);
        assert_eq!(alerts(&ds, ALERT_ATTACK), 1);
        assert_eq!(st.deepfake_phase, Phase::Live);
        assert_eq!(st.primary_deepfake(), None);
        // Bad scores do not panic and stay in range.
        let frames = vec![
            (0, vec![face_df(None, Some(f32::NAN))]),
            (100, vec![face_df(None, Some(-3.0))]),
            (50, vec![face_df(None, Some(9.0))]),
        ];
        let (st, _) = run(cfg, &frames);
        assert!((0.0..=1.0).contains(&st.primary_deepfake().unwrap()));
    }

    #[test]
    fn deepfake_state_resets_with_a_new_face() {
        let cfg = DecideConfig {
            min_deepfake: ms(100),
            ..no_smoothing()
        };
        let frames = vec![
            (0, vec![face_df(Some(0.9), Some(0.9))]),
            (100, vec![face_df(Some(0.9), Some(0.9))]),
            (
                200,
                vec![Face {
                    bbox: [400.0, 100.0, 100.0, 100.0],
                    ..face_df(Some(0.9), Some(0.6))
                }],
            ),
        ];
        let (st, ds) = run(cfg, &frames);
        assert_eq!(alerts(&ds, ALERT_DEEPFAKE), 1);
        assert_eq!(st.deepfake_phase, Phase::Live);
        assert_eq!(st.primary_deepfake(), Some(0.6));
    }

    #[test]
    fn config_validation() {
        assert!(DecideConfig::default().validate().is_ok());
        let bad = DecideConfig {
            attack_enter: 0.7,
            attack_exit: 0.6,
            ..DecideConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "decide.attack_exit");
        let bad = DecideConfig {
            attack_enter: 1.5,
            ..DecideConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "decide.attack_enter");
        let bad = DecideConfig {
            deepfake_enter: 0.4,
            deepfake_exit: 0.6,
            ..DecideConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "decide.deepfake_exit");
        let bad = DecideConfig {
            deepfake_enter: -0.1,
            ..DecideConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "decide.deepfake_enter");
        let parsed: DecideConfig =
            toml::from_str("smoothing = \"0s\"\nattack_enter = 0.3\nmin_attack = \"2s\"").unwrap();
        assert_eq!(parsed.min_attack, Duration::from_secs(2));
        assert_eq!(parsed.attack_exit, 0.6);
        assert!(toml::from_str::<DecideConfig>("nope = 1").is_err());
    }
}
