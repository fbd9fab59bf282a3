//! The challenge decision, a pure function over the frames' measurements and the code.
//!
//! Signal per frame: the face's luminance over the background's (`face / background`), which
//! cancels what changes both alike: the camera's auto-exposure gain and mains flicker of the
//! room's lights. A live face 0.3–0.6 m from the illuminator brightens with it; the background,
//! several times farther away, hardly does. The decision
//! 1. estimates the camera's response lag: the shift (0..=`max_lag` frames) at which the signal
//!    correlates best (Pearson) with the commanded on/off states;
//! 2. requires that correlation (`min_correlation`) and a relative brightening of the face
//!    (`min_response`): a screen is self-lit and does not follow the code, a recorded or
//!    injected feed follows another code or answers too late;
//! 3. requires spatial structure (`min_structure`) of the response across the face's 3×3 grid: a
//!    3-D face turns away from the light towards its edges, so its relative brightening varies
//!    across the face, and no single gain plus offset explains how its cells and the background
//!    change. A flat print brightens in proportion to its ink (uniform relative response: the
//!    cells' coefficient of variation is ~0); a uniform glare on a screen adds the same light to
//!    every cell and to the background (the cells and the background lie on one line
//!    `on = s · off + a`: the fit's residual is ~0). The structure figure is the smaller of the
//!    two.

use serde::{Deserialize, Serialize};

use super::code::Code;
use super::measure::{Measurement, GRID};
use super::ChallengeConfig;

/// A measurement of challenge frame `index` (0 = the first frame the code was played for).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub index: i64,
    pub m: Measurement,
}

/// The outcome of one challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    /// Not enough to decide (face not seen in enough frames, too dark, saturated): neither proof
    /// of life nor of an attack.
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// The decision and the figures it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChallengeResult {
    pub outcome: Outcome,
    /// Estimated response lag in frames (the best-correlating shift).
    pub lag: Option<u32>,
    /// Pearson correlation of the signal with the code at that lag (−1..1).
    pub correlation: f32,
    /// Relative brightening of the face against the background, on vs off (0.1 = 10 %).
    pub response: f32,
    /// Spatial structure of the response across the face (coefficient of variation).
    pub structure: f32,
    /// Frames measured, of the frames the challenge spans.
    pub samples: u32,
    pub expected: u32,
    /// Why, in words.
    pub reason: String,
}

fn pearson(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a as f64 - mx, b as f64 - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return 0.0;
    }
    (sxy / (sxx * syy).sqrt()) as f32
}

fn mean(v: impl Iterator<Item = f32>) -> Option<f32> {
    let (mut s, mut n) = (0f64, 0u32);
    for x in v {
        s += x as f64;
        n += 1;
    }
    (n > 0).then(|| (s / n as f64) as f32)
}

/// Coefficient of variation (std / |mean|); 0 for a zero mean.
fn cv(v: &[f32]) -> f32 {
    let Some(m) = mean(v.iter().copied()) else {
        return 0.0;
    };
    if m.abs() < 1e-9 {
        return 0.0;
    }
    let var = v.iter().map(|&x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32;
    var.sqrt() / m.abs()
}

/// How far the points (`off_i`, `on_i`) are from the best line `on = s · off + a` (least
/// squares): the RMS residual over the face cells' mean absolute response (all but the last
/// point are face cells). 0 when one global gain and one additive offset explain every change
/// (a uniform glare on a screen); large when the face responds in proportion to its shading.
fn affine_residual(off: &[f32], on: &[f32]) -> f32 {
    let n = off.len() as f64;
    let mx = off.iter().map(|&v| v as f64).sum::<f64>() / n;
    let my = on.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0f64, 0f64);
    for (&x, &y) in off.iter().zip(on) {
        sxy += (x as f64 - mx) * (y as f64 - my);
        sxx += (x as f64 - mx) * (x as f64 - mx);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let icpt = my - slope * mx;
    let rss: f64 = off
        .iter()
        .zip(on)
        .map(|(&x, &y)| (y as f64 - slope * x as f64 - icpt).powi(2))
        .sum();
    let face = off.len().saturating_sub(1).max(1);
    let scale = off
        .iter()
        .zip(on)
        .take(face)
        .map(|(&x, &y)| (y - x).abs() as f64)
        .sum::<f64>()
        / face as f64;
    if scale <= 1e-12 {
        return 0.0;
    }
    ((rss / n).sqrt() / scale) as f32
}

/// Decide a challenge from `samples` (any order; frames missing from the queue or without a face
/// are simply absent) and the `code` that was played.
pub fn decide(samples: &[Sample], code: &Code, cfg: &ChallengeConfig) -> ChallengeResult {
    let span = code.len_frames() + cfg.max_lag as i64;
    let used: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.index >= 0 && s.index < span)
        .collect();
    let mut r = ChallengeResult {
        outcome: Outcome::Inconclusive,
        lag: None,
        correlation: 0.0,
        response: 0.0,
        structure: 0.0,
        samples: used.len() as u32,
        expected: span as u32,
        reason: String::new(),
    };
    if let Some(why) = unusable(&used, span, cfg) {
        r.reason = why;
        return r;
    }
    let Some((lag, corr)) = best_lag(&used, code, cfg) else {
        r.reason = "the measured frames do not cover both illuminator states".into();
        return r;
    };
    r.lag = Some(lag);
    r.correlation = corr;
    let state = |s: &Sample| code.state_at(s.index - lag as i64);
    let norm = |s: &Sample| s.m.face / s.m.background;
    let on = mean(used.iter().filter(|s| state(s)).map(|s| norm(s)));
    let off = mean(used.iter().filter(|s| !state(s)).map(|s| norm(s)));
    if let (Some(on), Some(off)) = (on, off) {
        r.response = on / off - 1.0;
    }
    r.structure = structure(&used, &state);
    judge(&mut r, corr, lag, cfg);
    r
}

/// Why the measured frames cannot decide anything: too few of them carry a face, or one is too
/// dark or saturated.
fn unusable(used: &[&Sample], span: i64, cfg: &ChallengeConfig) -> Option<String> {
    if (used.len() as f32) < cfg.min_coverage * span as f32 {
        return Some(format!(
            "face measured in {} of {} frames (need {:.0} %)",
            used.len(),
            span,
            cfg.min_coverage * 100.0
        ));
    }
    used.iter()
        .find(|s| s.m.background < 1e-3 || s.m.face < 1e-3 || s.m.face > 0.98)
        .map(|s| {
            format!(
                "frame {} too dark or saturated (face {:.4}, background {:.4})",
                s.index, s.m.face, s.m.background
            )
        })
}

/// The lag (0..=`max_lag` frames) at which the face's brightness best correlates with the code,
/// and that correlation; ties go to the shorter lag. `None` when no lag sees both states.
fn best_lag(used: &[&Sample], code: &Code, cfg: &ChallengeConfig) -> Option<(u32, f32)> {
    let signal: Vec<f32> = used.iter().map(|s| s.m.face / s.m.background).collect();
    let mut best: Option<(u32, f32)> = None;
    for lag in 0..=cfg.max_lag {
        let expected: Vec<f32> = used
            .iter()
            .map(|s| code.state_at(s.index - lag as i64) as u8 as f32)
            .collect();
        let on = expected.iter().filter(|&&e| e > 0.5).count();
        if on == 0 || on == expected.len() {
            continue;
        }
        let c = pearson(&signal, &expected);
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((lag, c));
        }
    }
    best
}

/// The response's structure across the face, from the per-cell means of the on and off frames
/// (`state`: whether the light was on for a sample): the smaller of (a) how unevenly the cells
/// respond and (b) how far the cells and background are from one global gain and offset.
fn structure(used: &[&Sample], state: &dyn Fn(&Sample) -> bool) -> f32 {
    let on_mean = |f: &dyn Fn(&Sample) -> f32| mean(used.iter().filter(|s| state(s)).map(|s| f(s)));
    let off_mean =
        |f: &dyn Fn(&Sample) -> f32| mean(used.iter().filter(|s| !state(s)).map(|s| f(s)));
    // (a) relative response per cell, background-normalised: uniform for a flat print.
    let mut rel = [0f32; GRID * GRID];
    // (b) raw on/off means of the cells and (last) the background: a uniform additive glare
    //     under a global gain puts them all on one line `on = s · off + a`.
    let mut on_raw = [0f32; GRID * GRID + 1];
    let mut off_raw = [0f32; GRID * GRID + 1];
    for c in 0..GRID * GRID {
        let on = on_mean(&|s| s.m.cells[c] / s.m.background).unwrap_or(0.0);
        let off = off_mean(&|s| s.m.cells[c] / s.m.background).unwrap_or(0.0);
        rel[c] = if off > 0.0 { (on - off) / off } else { 0.0 };
        on_raw[c] = on_mean(&|s| s.m.cells[c]).unwrap_or(0.0);
        off_raw[c] = off_mean(&|s| s.m.cells[c]).unwrap_or(0.0);
    }
    on_raw[GRID * GRID] = on_mean(&|s| s.m.background).unwrap_or(0.0);
    off_raw[GRID * GRID] = off_mean(&|s| s.m.background).unwrap_or(0.0);
    cv(&rel).min(affine_residual(&off_raw, &on_raw))
}

/// Pass or fail `r` (correlation `corr` at `lag`, its response and structure set) against the
/// thresholds, with the reason.
fn judge(r: &mut ChallengeResult, corr: f32, lag: u32, cfg: &ChallengeConfig) {
    let mut why = Vec::new();
    if corr < cfg.min_correlation {
        why.push(format!(
            "correlation {corr:.3} < {:.3}: the face does not follow the code",
            cfg.min_correlation
        ));
    }
    if r.response < cfg.min_response {
        why.push(format!(
            "response {:.4} < {:.4}: the face does not brighten with the light",
            r.response, cfg.min_response
        ));
    }
    if r.structure < cfg.min_structure {
        why.push(format!(
            "structure {:.4} < {:.4}: the response is flat across the face",
            r.structure, cfg.min_structure
        ));
    }
    if why.is_empty() {
        r.outcome = Outcome::Passed;
        r.reason = format!(
            "correlation {corr:.3} at lag {lag}, response {:.4}, structure {:.4}",
            r.response, r.structure
        );
    } else {
        r.outcome = Outcome::Failed;
        r.reason = why.join("; ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> Code {
        Code {
            bits: vec![
                true, false, true, true, false, false, true, false, true, true, false, false,
            ],
            frames_per_bit: 2,
        }
    }

    /// A synthetic face: 3×3 cells with `relief` (per-cell LED gain) and `albedo`; the LED adds
    /// `k · albedo · relief` when on (after `lag` frames); `gain` multiplies everything
    /// (auto-exposure); `glare` adds uniformly to face and background when on.
    struct Scene {
        relief: [f32; 9],
        albedo: [f32; 9],
        k: f32,
        k_bg: f32,
        glare: f32,
        lag: i64,
    }

    fn live() -> Scene {
        Scene {
            relief: [0.5, 0.8, 0.5, 0.8, 1.0, 0.8, 0.4, 0.7, 0.4],
            albedo: [0.2, 0.3, 0.2, 0.25, 0.35, 0.25, 0.2, 0.3, 0.2],
            k: 0.4,
            k_bg: 0.02,
            glare: 0.0,
            lag: 1,
        }
    }

    fn samples(s: &Scene, code: &Code, respond: &Code, gain: impl Fn(i64) -> f32) -> Vec<Sample> {
        (0..code.len_frames() + 3)
            .map(|i| {
                let on = respond.state_at(i - s.lag) as u8 as f32;
                let g = gain(i);
                let cells: [f32; 9] = std::array::from_fn(|c| {
                    g * (s.albedo[c] * (1.0 + s.k * s.relief[c] * on) + s.glare * on)
                });
                let bg = g * (0.3 * (1.0 + s.k_bg * on) + s.glare * on);
                Sample {
                    index: i,
                    m: Measurement {
                        face: cells.iter().sum::<f32>() / 9.0,
                        background: bg,
                        cells,
                    },
                }
            })
            .collect()
    }

    fn cfg() -> ChallengeConfig {
        ChallengeConfig::default()
    }

    #[test]
    fn live_face_passes_and_the_lag_is_found() {
        for lag in 0..=2 {
            let s = Scene { lag, ..live() };
            let r = decide(&samples(&s, &code(), &code(), |_| 1.0), &code(), &cfg());
            assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
            assert_eq!(r.lag, Some(lag as u32));
            assert!(r.correlation > 0.9, "{r:?}");
            assert!(r.response > 0.1, "{r:?}");
        }
    }

    #[test]
    fn auto_exposure_gain_changes_cancel() {
        // Gain swings ±30 % (AE hunting) and drops whenever the light is on (AE compensating).
        let c = code();
        let gain =
            |i: i64| 1.0 + 0.3 * ((i as f32) * 0.7).sin() - 0.2 * c.state_at(i - 1) as u8 as f32;
        let r = decide(&samples(&live(), &c, &c, gain), &c, &cfg());
        assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
    }

    #[test]
    fn no_response_fails() {
        let s = Scene {
            k: 0.0,
            k_bg: 0.0,
            ..live()
        };
        let r = decide(&samples(&s, &code(), &code(), |_| 1.0), &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        assert!(r.reason.contains("correlation"), "{r:?}");
    }

    #[test]
    fn flat_print_fails_on_structure() {
        let s = Scene {
            relief: [1.0; 9],
            ..live()
        };
        let r = decide(&samples(&s, &code(), &code(), |_| 1.0), &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        assert!(r.correlation > 0.9, "{r:?}");
        assert!(r.reason.contains("structure"), "{r:?}");
    }

    #[test]
    fn uniform_glare_fails() {
        // A screen: no diffuse response, a glare over the whole glass.
        let s = Scene {
            k: 0.0,
            k_bg: 0.0,
            glare: 0.05,
            ..live()
        };
        let r = decide(&samples(&s, &code(), &code(), |_| 1.0), &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    }

    #[test]
    fn response_to_another_code_fails() {
        let other = Code {
            bits: vec![
                false, true, false, false, true, true, false, true, true, false, false, true,
            ],
            frames_per_bit: 2,
        };
        let r = decide(&samples(&live(), &code(), &other, |_| 1.0), &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    }

    #[test]
    fn too_few_frames_or_darkness_is_inconclusive() {
        let mut s = samples(&live(), &code(), &code(), |_| 1.0);
        s.truncate(10);
        let r = decide(&s, &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:?}");
        let dark = samples(&live(), &code(), &code(), |_| 0.001);
        let r = decide(&dark, &code(), &cfg());
        assert_eq!(r.outcome, Outcome::Inconclusive, "{r:?}");
        assert_eq!(decide(&[], &code(), &cfg()).outcome, Outcome::Inconclusive);
    }
}
