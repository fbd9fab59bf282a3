//! The challenge's two state machines, pure (they return what to do; the caller does the I/O):
//! - [`Player`] runs in the capture thread: it switches the illuminator per frame as the code
//!   says and tags each frame with the challenge frame index it was captured at.
//! - [`Challenger`] runs in the analysis thread: it follows the face's presence, asks for a
//!   challenge when a new face appears (and again every `interval`), collects the tagged frames'
//!   measurements, and decides ([`decide`]) when the code has been played.

use std::time::Duration;

use super::code::{hex, Code};
use super::decide::{decide, ChallengeResult, Outcome, Sample};
use super::measure::Measurement;
use super::{ChallengeConfig, ChallengeRecord};

/// Which challenge frame a captured frame is: `index` 0 is the first frame captured after the
/// illuminator was set to the code's first state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightTag {
    pub id: u64,
    pub index: i64,
}

/// Plays a code, one state per captured frame, then `max_lag` frames dark.
#[derive(Debug, Default)]
pub struct Player {
    playing: Option<(u64, Code, i64)>,
    max_lag: u32,
    lit: bool,
}

impl Player {
    pub fn new(max_lag: u32) -> Self {
        Self {
            playing: None,
            max_lag,
            lit: false,
        }
    }

    /// Start playing `code` as challenge `id` (replaces one being played).
    pub fn start(&mut self, id: u64, code: Code) {
        self.playing = Some((id, code, 0));
    }

    /// Before capturing the next frame: the illuminator state to set when it changes, and the
    /// tag the frame gets.
    pub fn next_frame(&mut self) -> (Option<bool>, Option<LightTag>) {
        let (want, tag) = match &mut self.playing {
            Some((id, code, index)) if *index < code.len_frames() + self.max_lag as i64 => {
                let t = LightTag {
                    id: *id,
                    index: *index,
                };
                let s = code.state_at(*index);
                *index += 1;
                (s, Some(t))
            }
            _ => {
                self.playing = None;
                (false, None)
            }
        };
        let change = (want != self.lit).then_some(want);
        self.lit = want;
        (change, tag)
    }

    /// Whether the illuminator is commanded on.
    pub fn lit(&self) -> bool {
        self.lit
    }
}

/// What one analysed frame brings to the challenger.
#[derive(Debug, Clone)]
pub struct FrameView {
    pub seq: u64,
    /// Capture time (monotonic).
    pub mono: Duration,
    pub tag: Option<LightTag>,
    /// Faces the detector found (0 when analysis failed).
    pub faces: usize,
    /// The primary face's measurement, when [`Challenger::measuring`] asked for it.
    pub measurement: Option<Measurement>,
}

/// Where the face in view stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// No face in view.
    NoFace,
    /// Not yet proven live (no challenge decided yet, or only inconclusive ones).
    Unproven,
    Passed,
    Failed,
}

/// What [`Challenger::on_frame`] wants done.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Start a challenge: call [`Challenger::begin`] with a fresh nonce.
    pub start: bool,
    /// A challenge was decided on this frame.
    pub finished: Option<(Outcome, ChallengeRecord)>,
}

struct Running {
    id: u64,
    nonce: [u8; 16],
    code: Code,
    begun_seq: u64,
    first_seq: Option<u64>,
    last_seq: u64,
    samples: Vec<Sample>,
    frames_since: u64,
}

struct Episode {
    last_face: Duration,
    proof: Proof,
    record: Option<ChallengeRecord>,
    attempts: u32,
    last_start: Option<Duration>,
}

/// The analysis-side state machine.
pub struct Challenger {
    cfg: ChallengeConfig,
    illuminator: String,
    next_id: u64,
    running: Option<Running>,
    episode: Option<Episode>,
}

impl Challenger {
    pub fn new(cfg: ChallengeConfig, illuminator: String) -> Self {
        Self {
            cfg,
            illuminator,
            next_id: 1,
            running: None,
            episode: None,
        }
    }

    /// Whether the frame with `tag` belongs to the running challenge (measure its face).
    pub fn measuring(&self, tag: Option<LightTag>) -> bool {
        matches!((&self.running, tag), (Some(r), Some(t)) if r.id == t.id)
    }

    /// The face's standing and the latest decided challenge of this face.
    pub fn proof(&self) -> (Proof, Option<&ChallengeRecord>) {
        match &self.episode {
            Some(e) => (e.proof, e.record.as_ref()),
            None => (Proof::NoFace, None),
        }
    }

    /// Start challenge number `id` with `nonce`; returns the id and the code to play.
    pub fn begin(&mut self, nonce: [u8; 16], seq: u64, mono: Duration) -> (u64, Code) {
        let id = self.next_id;
        self.next_id += 1;
        let code = Code::from_nonce(&nonce, self.cfg.code_bits, self.cfg.frames_per_bit);
        if let Some(e) = &mut self.episode {
            e.last_start = Some(mono);
            e.attempts += 1;
        }
        self.running = Some(Running {
            id,
            nonce,
            code: code.clone(),
            begun_seq: seq,
            first_seq: None,
            last_seq: seq,
            samples: Vec::new(),
            frames_since: 0,
        });
        (id, code)
    }

    pub fn on_frame(&mut self, f: FrameView) -> Output {
        let mut out = Output::default();
        // Face presence: an episode starts when a face appears after `face_lost_after` without.
        match (&mut self.episode, f.faces > 0) {
            (Some(e), true) if f.mono.saturating_sub(e.last_face) <= self.cfg.face_lost_after => {
                e.last_face = f.mono
            }
            (_, true) => {
                self.episode = Some(Episode {
                    last_face: f.mono,
                    proof: Proof::Unproven,
                    record: None,
                    attempts: 0,
                    last_start: None,
                })
            }
            (Some(e), false) if f.mono.saturating_sub(e.last_face) > self.cfg.face_lost_after => {
                self.episode = None
            }
            _ => {}
        }
        if let Some(r) = &mut self.running {
            r.frames_since += 1;
            let span = r.code.len_frames() + self.cfg.max_lag as i64;
            let mine = f.tag.filter(|t| t.id == r.id);
            if let Some(t) = mine {
                r.first_seq.get_or_insert(f.seq);
                r.last_seq = f.seq;
                if let (Some(m), true) = (f.measurement.clone(), f.faces > 0) {
                    r.samples.push(Sample { index: t.index, m });
                }
            }
            // Done: the last frame of the span, or tagged frames have stopped, or none came at
            // all (every tagged frame dropped before analysis).
            let done = match mine {
                Some(t) => t.index >= span - 1,
                None => r.first_seq.is_some() || r.frames_since > 2 * span as u64 + 8,
            };
            if done {
                if let Some(r) = self.running.take() {
                    out.finished = Some(self.finish(r));
                }
            }
        }
        if self.running.is_none() {
            if let Some(e) = &self.episode {
                // Unproven: retry at once up to `max_attempts`; then, and once decided, again
                // every `interval`.
                let due = (e.proof == Proof::Unproven && e.attempts < self.cfg.max_attempts)
                    || e.last_start
                        .is_none_or(|t| f.mono.saturating_sub(t) >= self.cfg.interval);
                out.start = due && f.faces > 0;
            }
        }
        out
    }

    fn finish(&mut self, r: Running) -> (Outcome, ChallengeRecord) {
        let result = decide(&r.samples, &r.code, &self.cfg);
        let record = record(&r, &result, &self.illuminator);
        if let Some(e) = &mut self.episode {
            match result.outcome {
                Outcome::Passed => e.proof = Proof::Passed,
                Outcome::Failed => e.proof = Proof::Failed,
                Outcome::Inconclusive => {}
            }
            if result.outcome != Outcome::Inconclusive || e.record.is_none() {
                e.record = Some(record.clone());
            }
        }
        tracing::info!(
            challenge = r.id,
            outcome = result.outcome.as_str(),
            reason = %result.reason,
            "light challenge decided"
        );
        (result.outcome, record)
    }
}

/// Four decimals, as the manifest carries figures (it allows integers only, so signed figures
/// travel as decimal strings).
pub fn figure(v: f32) -> String {
    format!("{v:.4}")
}

fn record(r: &Running, result: &ChallengeResult, illuminator: &str) -> ChallengeRecord {
    ChallengeRecord {
        verdict: result.outcome.as_str().into(),
        nonce: hex(&r.nonce),
        code: r.code.to_bit_string(),
        frames_per_bit: r.code.frames_per_bit as u64,
        illuminator: illuminator.into(),
        first_seq: r.first_seq.unwrap_or(r.begun_seq),
        last_seq: r.last_seq,
        lag_frames: result.lag.map(u64::from),
        correlation: figure(result.correlation),
        response: figure(result.response),
        structure: figure(result.structure),
        samples: result.samples as u64,
        expected: result.expected as u64,
        reason: result.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::measure::GRID;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn player_plays_the_code_then_stays_dark() {
        let mut p = Player::new(2);
        assert_eq!(p.next_frame(), (None, None));
        let code = Code {
            bits: vec![true, false],
            frames_per_bit: 2,
        };
        p.start(7, code);
        let got: Vec<_> = (0..7).map(|_| p.next_frame()).collect();
        let states: Vec<Option<bool>> = got.iter().map(|g| g.0).collect();
        assert_eq!(
            states,
            [Some(true), None, Some(false), None, None, None, None]
        );
        let idx: Vec<Option<i64>> = got.iter().map(|g| g.1.map(|t| t.index)).collect();
        assert_eq!(
            idx,
            [Some(0), Some(1), Some(2), Some(3), Some(4), Some(5), None]
        );
        assert!(!p.lit());
    }

    /// Drive a challenger and a player together with a scene that answers the light it saw one
    /// frame late.
    fn run(scene: impl Fn(bool) -> Measurement, frames: u64) -> (Challenger, Vec<Output>) {
        let cfg = ChallengeConfig::default();
        let mut ch = Challenger::new(cfg.clone(), "test".into());
        let mut player = Player::new(cfg.max_lag);
        let mut outs = Vec::new();
        let mut lit_hist = vec![false; 4];
        for seq in 0..frames {
            let (_, tag) = player.next_frame();
            lit_hist.push(player.lit());
            let lagged = lit_hist[lit_hist.len() - 2];
            let measurement = ch.measuring(tag).then(|| scene(lagged));
            let out = ch.on_frame(FrameView {
                seq,
                mono: ms(seq * 100),
                tag,
                faces: 1,
                measurement,
            });
            if out.start {
                let (id, code) = ch.begin([seq as u8; 16], seq, ms(seq * 100));
                player.start(id, code);
            }
            outs.push(out);
        }
        (ch, outs)
    }

    /// A face: per-cell albedo, and a light that adds `k` × albedo × relief.
    fn face(lit: bool, relief: [f32; GRID * GRID], k: f32) -> Measurement {
        let albedo = [0.2, 0.3, 0.2, 0.25, 0.35, 0.25, 0.2, 0.3, 0.2];
        let cells: [f32; GRID * GRID] =
            std::array::from_fn(|c| albedo[c] * (1.0 + if lit { k * relief[c] } else { 0.0 }));
        Measurement {
            face: cells.iter().sum::<f32>() / cells.len() as f32,
            background: 0.3,
            cells,
        }
    }

    const RELIEF: [f32; 9] = [0.5, 0.8, 0.5, 0.8, 1.0, 0.8, 0.4, 0.7, 0.4];

    #[test]
    fn a_responding_face_passes_and_is_rechallenged_after_the_interval() {
        let (ch, outs) = run(|lit| face(lit, RELIEF, 0.4), 400);
        let finished: Vec<_> = outs.iter().filter_map(|o| o.finished.clone()).collect();
        // 400 frames at 10 fps = 40 s: the first challenge and one after the 30 s interval.
        assert_eq!(finished.len(), 2, "{finished:?}");
        assert!(
            finished.iter().all(|f| f.0 == Outcome::Passed),
            "{finished:?}"
        );
        assert_eq!(finished[0].1.lag_frames, Some(1));
        assert_eq!(ch.proof().0, Proof::Passed);
    }

    #[test]
    fn a_flat_response_fails() {
        let (ch, outs) = run(|lit| face(lit, [1.0; 9], 0.4), 60);
        let (outcome, rec) = outs.iter().find_map(|o| o.finished.clone()).unwrap();
        assert_eq!(outcome, Outcome::Failed, "{rec:?}");
        assert!(rec.reason.contains("structure"), "{rec:?}");
        assert_eq!(ch.proof().0, Proof::Failed);
    }

    #[test]
    fn no_response_fails_and_records_the_code_from_the_nonce() {
        let (ch, outs) = run(|lit| face(lit, RELIEF, 0.0), 60);
        let (outcome, rec) = outs.iter().find_map(|o| o.finished.clone()).unwrap();
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(rec.verdict, "failed");
        let nonce = crate::challenge::code::unhex(&rec.nonce).unwrap();
        assert_eq!(
            Code::from_nonce(&nonce, ChallengeConfig::default().code_bits, 2).to_bit_string(),
            rec.code,
            "the nonce reproduces the code"
        );
        assert_eq!(ch.proof().0, Proof::Failed);
    }

    #[test]
    fn faces_coming_and_going_start_new_episodes() {
        let mut ch = Challenger::new(ChallengeConfig::default(), "t".into());
        let view = |seq: u64, faces| FrameView {
            seq,
            mono: ms(seq * 100),
            tag: None,
            faces,
            measurement: None,
        };
        assert!(!ch.on_frame(view(0, 0)).start);
        assert_eq!(ch.proof().0, Proof::NoFace);
        assert!(ch.on_frame(view(1, 1)).start);
        ch.begin([1; 16], 1, ms(100));
        assert_eq!(ch.proof().0, Proof::Unproven);
        // The face leaves for longer than face_lost_after: the episode ends.
        for s in 2..30 {
            ch.on_frame(view(s, 0));
        }
        assert_eq!(ch.proof().0, Proof::NoFace);
    }
}
