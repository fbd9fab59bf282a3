//! Decisions as pure functions: per-frame analysis in, verdict and actions out. No I/O, no clock
//! (time comes in with the frame).

use serde::{Deserialize, Serialize};

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
    /// No detector configured, or it failed on this frame.
    Unknown,
}

/// What the decider wants done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Raise an alert about this frame (sealed as evidence).
    Alert {
        kind: String,
        severity: String,
        score: Option<f32>,
    },
}

/// Decision for one frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub actions: Vec<Action>,
}

/// Decider state (smoothing, hysteresis). Placeholder until the detector issue lands.
#[derive(Debug, Clone, Default)]
pub struct DeciderState {
    /// Frames seen (placeholder state until smoothing lands).
    pub frames: u64,
}

/// Pure step: (state, analysis) → (state, decision).
pub fn step(mut state: DeciderState, analysis: Option<&Analysis>) -> (DeciderState, Decision) {
    state.frames += 1;
    let verdict = match analysis {
        None => Verdict::Unknown,
        Some(a) if a.models.is_empty() => Verdict::Unknown,
        Some(a) => match a.faces.len() {
            0 => Verdict::NoFace,
            1 => Verdict::Unknown,
            _ => Verdict::MultipleFaces,
        },
    };
    (
        state,
        Decision {
            verdict,
            actions: Vec::new(),
        },
    )
}
