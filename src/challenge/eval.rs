//! Scoring the challenge over simulated sessions (`veriframe challenge-eval`): for each scene
//! (live, replay, print, injected) and condition (sensor noise, auto-exposure, mains flicker),
//! many seeds; each trial plays a code on the simulated light, renders and JPEG-compresses the
//! frames, decodes and measures them at the face's known box, and decides with the configured
//! thresholds. The face box is the simulation's ground truth: this scores the challenge, not
//! the face detector (the daemon tests run the detector).

use serde::Serialize;

use super::code::Code;
use super::decide::{decide, ChallengeResult, Outcome, Sample};
use super::measure::measure;
use super::ChallengeConfig;
use crate::capture::sim::{FaceModel, Scene, SimLight, SimSource, SimSpec};
use crate::capture::CaptureError;

/// A named set of simulation parameters.
#[derive(Debug, Clone)]
pub struct Condition {
    pub name: String,
    pub apply: fn(&mut SimSpec),
}

/// The standard conditions: the default booth, sensor noise, strong auto-exposure, and 50/60 Hz
/// flicker of the room's light.
pub fn conditions() -> Vec<Condition> {
    fn c(name: &str, apply: fn(&mut SimSpec)) -> Condition {
        Condition {
            name: name.into(),
            apply,
        }
    }
    vec![
        c("default (noise 2, ae 0.3, drift 0.01)", |_| {}),
        c("noise 1", |s| s.noise = 1.0),
        c("noise 4", |s| s.noise = 4.0),
        c("noise 8", |s| s.noise = 8.0),
        c("ae 0.7, drift 0.03", |s| {
            s.ae = 0.7;
            s.drift = 0.03;
        }),
        c("flicker 50 Hz, depth 0.1", |s| {
            s.flicker = 50.0;
            s.depth = 0.1;
        }),
        c("flicker 60 Hz, depth 0.1", |s| {
            s.flicker = 60.0;
            s.depth = 0.1;
        }),
        c("flicker 50 Hz, depth 0.3", |s| {
            s.flicker = 50.0;
            s.depth = 0.3;
        }),
        c("flicker 60 Hz, depth 0.3, ae 0.7", |s| {
            s.flicker = 60.0;
            s.depth = 0.3;
            s.ae = 0.7;
        }),
        c("weak light (led 0.15)", |s| s.led = 0.15),
        c("replay glare 0.1", |s| s.glare = 0.1),
    ]
}

/// Frames rendered dark before the code (auto-exposure settles).
const WARMUP: usize = 5;

/// One simulated challenge: `spec`'s scene, a code from a nonce derived from the seed.
pub fn trial(
    spec: &SimSpec,
    cfg: &ChallengeConfig,
    fps: f64,
) -> Result<ChallengeResult, CaptureError> {
    let light = SimLight::default();
    let src = SimSource::new(spec.clone(), fps, light.clone())?;
    play(src, light, spec.seed, cfg)
}

/// Play one challenge on `src` (lit by `light`): warm up, switch the light as the code from
/// `seed`'s nonce says, measure every frame at the simulation's face box, decide.
pub fn play(
    mut src: SimSource,
    light: SimLight,
    seed: u64,
    cfg: &ChallengeConfig,
) -> Result<ChallengeResult, CaptureError> {
    let face = src.face_box();
    let nonce = {
        let d = ring::digest::digest(&ring::digest::SHA256, &seed.to_le_bytes());
        let mut n = [0u8; 16];
        n.copy_from_slice(&d.as_ref()[..16]);
        n
    };
    let code = Code::from_nonce(&nonce, cfg.code_bits, cfg.frames_per_bit);
    for _ in 0..WARMUP {
        src.render_next()?;
    }
    let mut samples = Vec::new();
    for index in 0..code.len_frames() + cfg.max_lag as i64 {
        light.set(code.state_at(index));
        let jpeg = src.render_next()?;
        let img = image::load_from_memory(&jpeg)
            .map_err(|e| CaptureError::Convert(e.to_string()))?
            .into_rgb8();
        if let Some(m) = measure(&img, face) {
            samples.push(Sample { index, m });
        }
    }
    Ok(decide(&samples, &code, cfg))
}

/// Counts for one scene under one condition.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub scene: &'static str,
    pub condition: String,
    pub trials: u32,
    pub passed: u32,
    pub failed: u32,
    pub inconclusive: u32,
    /// Mean correlation, response and structure over the trials.
    pub correlation: f32,
    pub response: f32,
    pub structure: f32,
}

/// Run `seeds` trials of every scene under every condition (`replay glare` only for replay).
pub fn run(
    cfg: &ChallengeConfig,
    seeds: u64,
    fps: f64,
    scenes: &[Scene],
    conds: &[Condition],
    mut progress: impl FnMut(&Cell),
) -> Result<Vec<Cell>, CaptureError> {
    let mut cells = Vec::new();
    for cond in conds {
        for &scene in scenes {
            if cond.name.starts_with("replay") && scene != Scene::Replay {
                continue;
            }
            let mut cell = Cell {
                scene: scene.as_str(),
                condition: cond.name.clone(),
                trials: 0,
                passed: 0,
                failed: 0,
                inconclusive: 0,
                correlation: 0.0,
                response: 0.0,
                structure: 0.0,
            };
            for seed in 0..seeds {
                let mut spec = SimSpec::new(scene, 1000 + seed);
                spec.model = FaceModel::Photo;
                (cond.apply)(&mut spec);
                let r = trial(&spec, cfg, fps)?;
                cell.trials += 1;
                match r.outcome {
                    Outcome::Passed => cell.passed += 1,
                    Outcome::Failed => cell.failed += 1,
                    Outcome::Inconclusive => cell.inconclusive += 1,
                }
                cell.correlation += r.correlation;
                cell.response += r.response;
                cell.structure += r.structure;
            }
            let n = cell.trials.max(1) as f32;
            cell.correlation /= n;
            cell.response /= n;
            cell.structure /= n;
            progress(&cell);
            cells.push(cell);
        }
    }
    Ok(cells)
}

pub mod faces;

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(scene: Scene, seed: u64) -> SimSpec {
        SimSpec {
            model: FaceModel::Photo,
            ..SimSpec::new(scene, seed)
        }
    }

    #[test]
    fn rendering_is_seeded_and_the_live_face_follows_the_light() {
        let light = SimLight::default();
        let mut a = SimSource::new(photo(Scene::Live, 3), 10.0, light.clone()).unwrap();
        let mut b = SimSource::new(photo(Scene::Live, 3), 10.0, SimLight::default()).unwrap();
        assert_eq!(a.render_next().unwrap(), b.render_next().unwrap());
        let face = a.face_box();
        let ratio = |jpeg: &[u8]| {
            let img = image::load_from_memory(jpeg).unwrap().into_rgb8();
            let m = measure(&img, face).unwrap();
            m.face / m.background
        };
        let dark = ratio(&a.render_next().unwrap());
        light.set(true);
        // The light shows one to two frames late.
        a.render_next().unwrap();
        a.render_next().unwrap();
        let lit = ratio(&a.render_next().unwrap());
        assert!(lit > 1.1 * dark, "{dark} {lit}");
    }

    #[test]
    fn each_scene_gets_its_expected_outcome_on_a_few_seeds() {
        let cfg = ChallengeConfig::default();
        for seed in 0..2 {
            let r = trial(&photo(Scene::Live, seed), &cfg, 10.0).unwrap();
            assert_eq!(r.outcome, Outcome::Passed, "live seed {seed}: {r:?}");
            for scene in [Scene::Replay, Scene::Print, Scene::Injected] {
                let r = trial(&photo(scene, seed), &cfg, 10.0).unwrap();
                assert_ne!(r.outcome, Outcome::Passed, "{scene:?} seed {seed}: {r:?}");
            }
        }
    }
}
