//! `veriframe eval`: the per-image pipeline over labelled directories, and the PAD metrics
//! (ISO/IEC 30107-3 terms).
//!
//! Each image gets a live score from the same [`Pipeline::analyze_image`] the daemon runs (the
//! primary face's PAD score). An image with no face counts as *rejected*: an attack image so
//! counted is not accepted, a real one is a bona fide rejection; such images are also counted in
//! `no_face`. In the metrics a no-face image has score [`NO_FACE_SCORE`], below every threshold.
//!
//! * APCER: share of attack images accepted (score ≥ threshold).
//! * BPCER: share of real images rejected (score < threshold, or no face).
//! * ACER = (APCER + BPCER) / 2.
//! * AUC: probability that a random real image scores above a random attack image (ties ½).
//! * `threshold`: the highest threshold whose BPCER is at most 5 %, and `apcer_at_bpcer5` the
//!   APCER there.

use std::path::{Path, PathBuf};

use serde::Serialize;

use veriframe::detect::pipeline::Pipeline;
use veriframe::detect::DetectError;

/// Score given to an image without a face: rejected at every threshold.
pub const NO_FACE_SCORE: f32 = -1.0;
/// Target BPCER for the operating-point threshold.
pub const TARGET_BPCER: f64 = 0.05;

/// The eval result; JSON keys as the CLI prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub n_real: usize,
    pub n_attack: usize,
    /// Images (real + attack) with no face found.
    pub no_face: usize,
    /// Real images with no face found (each a bona fide rejection).
    pub no_face_real: usize,
    /// Attack images with no face found (each counted as rejected).
    pub no_face_attack: usize,
    pub auc: f64,
    /// At the configured threshold.
    pub apcer: f64,
    pub bpcer: f64,
    pub acer: f64,
    /// The threshold giving BPCER ≤ 5 %.
    pub threshold: f64,
    pub apcer_at_bpcer5: f64,
}

/// APCER and BPCER at `thr`: (attack accepted / attacks, real rejected / reals).
pub fn error_rates(real: &[f32], attack: &[f32], thr: f32) -> (f64, f64) {
    let rate = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let apcer = rate(attack.iter().filter(|&&s| s >= thr).count(), attack.len());
    let bpcer = rate(real.iter().filter(|&&s| s < thr).count(), real.len());
    (apcer, bpcer)
}

/// Area under the ROC curve (real = positive class), ties counted ½; 0.5 when a class is empty.
pub fn auc(real: &[f32], attack: &[f32]) -> f64 {
    if real.is_empty() || attack.is_empty() {
        return 0.5;
    }
    // Rank-sum (Mann–Whitney U) with average ranks for ties.
    let mut all: Vec<(f32, bool)> = real
        .iter()
        .map(|&s| (s, true))
        .chain(attack.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_real = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        rank_sum_real += avg * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (np, nn) = (real.len() as f64, attack.len() as f64);
    (rank_sum_real - np * (np + 1.0) / 2.0) / (np * nn)
}

/// The highest threshold with BPCER ≤ `target`, i.e. the `floor(target·n)`-th lowest real score
/// (0-based); at most that many real images fall below it. When so many real images have no face
/// that the target is out of reach, the lowest real face score (or 0) is returned.
pub fn threshold_at_bpcer(real: &[f32], target: f64) -> f32 {
    let mut r: Vec<f32> = real.to_vec();
    r.sort_by(|a, b| a.total_cmp(b));
    let k = (target * r.len() as f64 + 1e-9).floor() as usize;
    match r.get(k) {
        Some(&t) if t > NO_FACE_SCORE => t,
        _ => r
            .iter()
            .copied()
            .find(|&s| s > NO_FACE_SCORE)
            .unwrap_or(0.0),
    }
}

/// All metrics from score lists (no-face images already at [`NO_FACE_SCORE`]).
pub fn metrics(real: &[f32], attack: &[f32], threshold: f32) -> Metrics {
    let (apcer, bpcer) = error_rates(real, attack, threshold);
    let t5 = threshold_at_bpcer(real, TARGET_BPCER);
    let (apcer5, _) = error_rates(real, attack, t5);
    let no_face_in = |v: &[f32]| v.iter().filter(|&&s| s <= NO_FACE_SCORE).count();
    let (no_face_real, no_face_attack) = (no_face_in(real), no_face_in(attack));
    Metrics {
        n_real: real.len(),
        n_attack: attack.len(),
        no_face: no_face_real + no_face_attack,
        no_face_real,
        no_face_attack,
        auc: auc(real, attack),
        apcer,
        bpcer,
        acer: (apcer + bpcer) / 2.0,
        threshold: t5 as f64,
        apcer_at_bpcer5: apcer5,
    }
}

/// Image files (jpg, jpeg, png; any case) below `dir`, sorted.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DetectError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| {
            DetectError::Config(format!("cannot read directory {}: {e}", d.display()))
        })?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Scores of one directory, plus how many images had no face and which could not be read.
#[derive(Debug, Default)]
pub struct DirScores {
    pub scores: Vec<f32>,
    /// The image each score belongs to (same order as `scores`).
    pub files: Vec<PathBuf>,
    pub no_face: usize,
    pub unreadable: Vec<(PathBuf, String)>,
}

/// Run the pipeline over every image below `dir`.
pub fn score_dir(p: &mut Pipeline, dir: &Path) -> Result<DirScores, DetectError> {
    let mut out = DirScores::default();
    for (i, f) in image_files(dir)?.into_iter().enumerate() {
        let img = match image::open(&f) {
            Ok(i) => i.into_rgb8(),
            Err(e) => {
                out.unreadable.push((f, e.to_string()));
                continue;
            }
        };
        let a = p.analyze_image(&img, i as u64)?;
        match a.primary() {
            None => {
                out.no_face += 1;
                out.scores.push(NO_FACE_SCORE);
            }
            Some(face) => {
                let s = face.live_score.ok_or_else(|| {
                    DetectError::Config("the model set has no PAD classifier".into())
                })?;
                out.scores.push(s);
            }
        }
        out.files.push(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn auc_perfect_inverted_and_ties() {
        assert!(close(auc(&[0.9, 0.8], &[0.1, 0.2, 0.3]), 1.0));
        assert!(close(auc(&[0.1], &[0.9, 0.8]), 0.0));
        assert!(close(auc(&[0.5, 0.5], &[0.5]), 0.5));
        // real {0.9, 0.4}, attack {0.5, 0.1}: pairs won 0.9>0.5, 0.9>0.1, 0.4>0.1; lost 0.4<0.5.
        assert!(close(auc(&[0.9, 0.4], &[0.5, 0.1]), 0.75));
        // One tie among four pairs: (3 + 0.5) / 4.
        assert!(close(auc(&[0.9, 0.5], &[0.5, 0.1]), 0.875));
        assert!(close(auc(&[], &[0.1]), 0.5));
    }

    #[test]
    fn error_rates_at_threshold() {
        let real = [0.9, 0.7, 0.4, NO_FACE_SCORE];
        let attack = [0.6, 0.2, 0.1, 0.55, NO_FACE_SCORE];
        let (apcer, bpcer) = error_rates(&real, &attack, 0.5);
        assert!(close(apcer, 2.0 / 5.0));
        assert!(close(bpcer, 2.0 / 4.0));
        // Score equal to the threshold is accepted.
        let (apcer, _) = error_rates(&[], &[0.5], 0.5);
        assert!(close(apcer, 1.0));
    }

    #[test]
    fn threshold_for_five_percent_bpcer() {
        // 40 real scores 0.01..0.40: floor(0.05·40) = 2 may fall below → third lowest, 0.03.
        let real: Vec<f32> = (1..=40).map(|i| i as f32 / 100.0).collect();
        let t = threshold_at_bpcer(&real, 0.05);
        assert!((t - 0.03).abs() < 1e-6);
        let (_, b) = error_rates(&real, &[], t);
        assert!(b <= 0.05);
        // A hair higher would exceed 5 %.
        let (_, b) = error_rates(&real, &[], t + 1e-4);
        assert!(b > 0.05);
        // Fewer than 20 reals: no real may be rejected → the lowest score.
        assert_eq!(threshold_at_bpcer(&[0.7, 0.3, 0.9], 0.05), 0.3);
        // Too many no-face reals: the lowest face score.
        let real = [NO_FACE_SCORE, NO_FACE_SCORE, 0.8, 0.6];
        assert_eq!(threshold_at_bpcer(&real, 0.05), 0.6);
        assert_eq!(threshold_at_bpcer(&[NO_FACE_SCORE], 0.05), 0.0);
    }

    #[test]
    fn metrics_put_together() {
        let real = [0.9, 0.8, 0.7, NO_FACE_SCORE];
        let attack = [0.75, 0.1, NO_FACE_SCORE];
        let m = metrics(&real, &attack, 0.5);
        assert_eq!((m.n_real, m.n_attack, m.no_face), (4, 3, 2));
        assert_eq!((m.no_face_real, m.no_face_attack), (1, 1));
        assert!(close(m.apcer, 1.0 / 3.0));
        assert!(close(m.bpcer, 0.25));
        assert!(close(m.acer, (1.0 / 3.0 + 0.25) / 2.0));
        // floor(0.05·4) = 0 → lowest real score, the no-face one, is out of reach → 0.7.
        assert!((m.threshold - 0.7).abs() < 1e-6);
        assert!(close(m.apcer_at_bpcer5, 1.0 / 3.0));
        let json = serde_json::to_value(&m).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        let mut want = [
            "n_real",
            "n_attack",
            "no_face",
            "no_face_real",
            "no_face_attack",
            "auc",
            "apcer",
            "bpcer",
            "acer",
            "threshold",
            "apcer_at_bpcer5",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn finds_images_recursively() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        for f in ["x.jpg", "a/y.PNG", "a/b/z.jpeg", "a/notes.txt"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        let files = image_files(d.path()).unwrap();
        assert_eq!(files.len(), 3);
        assert!(image_files(&d.path().join("missing")).is_err());
    }
}
