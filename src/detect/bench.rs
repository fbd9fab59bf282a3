//! `veriframe bench`: per-stage latency of the detector on this machine.
//!
//! Input: the bundled 640×480 JPEG sample `astronaut_00.jpg` (one face). Each iteration times
//! JPEG decode, face detection, crop+resize of the two PAD crops ([`crop_bgr`] at both MiniFASNet
//! scales, as the pipeline does), and PAD (both networks), then the whole frame (decode →
//! analysis) as `total`. With `[detect] deepfake_model` set, also the deepfake classifier on the
//! primary face (crop included) as `deepfake`. Median and p99 (nearest rank) per stage, fps from the median total,
//! model load time, peak RSS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use super::crop::crop_bgr;
use super::nets::face::{self, BlazeFace};
use super::nets::minifasnet::{Arch, MiniFasEnsemble, INPUT};
use super::pipeline::Pipeline;
use super::{DetectError, Face, FaceDetector, Quant};
use crate::stats::percentiles;

/// The frame benchmarked.
pub const BENCH_SAMPLE: &str = "astronaut_00.jpg";

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageStats {
    pub median_ms: f64,
    pub p99_ms: f64,
}

/// `veriframe bench --json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub quant: Quant,
    pub stages: BTreeMap<&'static str, StageStats>,
    pub fps: f64,
    pub model_load_ms: f64,
    pub peak_rss_mb: f64,
    /// Each network alone (see [`networks`]), keyed by model name; absent when not measured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, StageStats>,
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1e3
}

fn stage(samples: &mut [f32]) -> Option<StageStats> {
    percentiles(samples).map(|(m, p)| StageStats {
        median_ms: m as f64,
        p99_ms: p as f64,
    })
}

/// The sample's JPEG bytes.
pub fn sample_jpeg() -> Result<&'static [u8], DetectError> {
    crate::frame::samples::SAMPLES
        .iter()
        .find(|(n, _)| *n == BENCH_SAMPLE)
        .map(|(_, b)| *b)
        .ok_or_else(|| DetectError::Model(format!("bundled sample {BENCH_SAMPLE} missing")))
}

fn decode(jpeg: &[u8]) -> Result<RgbImage, DetectError> {
    image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .map(|i| i.into_rgb8())
        .map_err(|e| DetectError::Model(format!("decode: {e}")))
}

/// The crops the PAD ensemble takes of `face`, exactly as the pipeline makes them: one per
/// MiniFASNet at its upstream scale, [`crop_bgr`] to 80×80 B,G,R.
pub fn pad_crops(img: &RgbImage, face: &Face) -> Result<[Vec<u8>; 2], DetectError> {
    let crop = |arch: Arch| crop_bgr(img, face.bbox, arch.crop_scale(), INPUT, INPUT);
    Ok([crop(Arch::MiniFasNetV2)?, crop(Arch::MiniFasNetV1Se)?])
}

/// Run the benchmark. `load` builds the pipeline (timed as model load).
pub fn run(
    load: impl FnOnce() -> Result<Pipeline, DetectError>,
    threads: usize,
    quant: Quant,
    iters: usize,
    warmup: usize,
) -> Result<BenchReport, DetectError> {
    let jpeg = sample_jpeg()?;
    let t = Instant::now();
    let mut p = load()?;
    let model_load_ms = t.elapsed().as_secs_f64() * 1e3;
    let has_pad = p.has_pad();
    let has_deepfake = p.has_deepfake();
    let mut samples: BTreeMap<&'static str, Vec<f32>> = BTreeMap::new();
    for i in 0..warmup + iters {
        let keep = i >= warmup;
        let mut rec = |k: &'static str, d: Duration| {
            if keep {
                samples.entry(k).or_default().push(ms(d));
            }
        };
        let t0 = Instant::now();
        let img = decode(jpeg)?;
        rec("decode", t0.elapsed());
        let t = Instant::now();
        let faces = p.detect_faces(&img)?;
        rec("detect", t.elapsed());
        let face = faces
            .first()
            .ok_or_else(|| DetectError::Model(format!("no face found in {BENCH_SAMPLE}")))?;
        let t = Instant::now();
        std::hint::black_box(pad_crops(&img, face)?);
        rec("crop", t.elapsed());
        if has_pad {
            let t = Instant::now();
            std::hint::black_box(p.live_score(&img, face)?);
            rec("pad", t.elapsed());
        }
        if has_deepfake {
            // Meso4 on the primary face, including its own 256×256 crop.
            let t = Instant::now();
            std::hint::black_box(p.deepfake_score(&img, face)?);
            rec("deepfake", t.elapsed());
        }
        // The whole per-frame path as the daemon runs it.
        let t = Instant::now();
        let img = decode(jpeg)?;
        std::hint::black_box(p.analyze_image(&img, i as u64)?);
        rec("total", t.elapsed());
    }
    let mut stages = BTreeMap::new();
    for (k, mut v) in samples {
        if let Some(s) = stage(&mut v) {
            stages.insert(k, s);
        }
    }
    let fps = stages
        .get("total")
        .map(|s| {
            if s.median_ms > 0.0 {
                1e3 / s.median_ms
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);
    let peak_rss_mb = crate::stats::peak_rss_bytes()
        .map(|b| b as f64 / (1024.0 * 1024.0))
        .unwrap_or(0.0);
    Ok(BenchReport {
        threads,
        quant,
        stages,
        fps,
        model_load_ms,
        peak_rss_mb,
        networks: BTreeMap::new(),
    })
}

/// Uniform values in `[0, 1)` from a fixed seed (SplitMix64), like the peer's random input.
fn random_input(n: usize, seed: u64) -> Vec<f32> {
    let mut z = seed;
    (0..n)
        .map(|_| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            (x >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Time `f` the way `shared/bench/peer.py` times a runtime: `warmup` calls, then `iters` timed
/// calls; median and p99.
fn time_calls(
    iters: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<(), DetectError>,
) -> Result<StageStats, DetectError> {
    for _ in 0..warmup {
        f()?;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        v.push(ms(t.elapsed()));
    }
    stage(&mut v).ok_or_else(|| DetectError::Model("no timed calls".into()))
}

/// Each network alone, on a prepared input of its own shape and layout filled with uniform
/// random values, as `shared/bench/peer.py` times ONNX Runtime or LiteRT (the peer also runs
/// the network on a fixed random tensor, 20 warm-up calls, median and p99): no JPEG decode,
/// letterbox, crop, anchor decoding or NMS. BlazeFace takes its 3×128×128 input (the copy into
/// its own layout included, as the peer's `set_tensor`); each PAD network one 80×80×3 input.
pub fn networks(
    face: &mut BlazeFace,
    pad: Option<&MiniFasEnsemble>,
    iters: usize,
) -> Result<BTreeMap<String, StageStats>, DetectError> {
    const WARMUP: usize = 20;
    let mut out = BTreeMap::new();
    let x = random_input(3 * face::INPUT * face::INPUT, 1);
    let s = time_calls(iters, WARMUP, || {
        std::hint::black_box(face.raw_outputs(std::hint::black_box(&x))?);
        Ok(())
    })?;
    out.insert(face.model().name, s);
    for net in pad.map(|e| e.nets()).unwrap_or_default() {
        let x = random_input(INPUT * INPUT * 3, 2);
        let s = time_calls(iters, WARMUP, || {
            std::hint::black_box(net.forward_hwc(std::hint::black_box(&x))?);
            Ok(())
        })?;
        out.insert(net.model_id().name, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::pipeline::fakes::{face, FixedFaces, GreenFake, RedPad};

    #[test]
    fn report_has_every_stage_and_the_json_shape() {
        let r = run(
            || {
                Ok(Pipeline::new(
                    Box::new(FixedFaces(Ok(vec![face(200.0, 100.0)]))),
                    Some(Box::new(RedPad { calls: 0 })),
                ))
            },
            1,
            Quant::F32,
            3,
            1,
        )
        .unwrap();
        let keys: Vec<_> = r.stages.keys().copied().collect();
        assert_eq!(keys, ["crop", "decode", "detect", "pad", "total"]);
        // With a deepfake classifier: its stage too.
        let r = run(
            || {
                Ok(
                    Pipeline::new(Box::new(FixedFaces(Ok(vec![face(200.0, 100.0)]))), None)
                        .with_deepfake(Some(Box::new(GreenFake))),
                )
            },
            1,
            Quant::F32,
            2,
            0,
        )
        .unwrap();
        let keys: Vec<_> = r.stages.keys().copied().collect();
        assert_eq!(keys, ["crop", "decode", "deepfake", "detect", "total"]);
        for s in r.stages.values() {
            assert!(s.median_ms >= 0.0 && s.p99_ms >= s.median_ms);
        }
        assert!(r.fps > 0.0);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["quant"], "f32");
        assert!(v["stages"]["total"]["p99_ms"].is_number());
        for k in [
            "threads",
            "quant",
            "stages",
            "fps",
            "model_load_ms",
            "peak_rss_mb",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn networks_are_timed_one_by_one_under_their_model_names() {
        let mut bf = BlazeFace::builtin(Default::default()).unwrap();
        let r = networks(&mut bf, None, 3).unwrap();
        assert_eq!(r.keys().collect::<Vec<_>>(), ["blazeface_short_range"]);
        let pad = crate::detect::nets::minifasnet::builtin_ensemble().unwrap();
        let r = networks(&mut bf, Some(&pad), 3).unwrap();
        assert_eq!(r.len(), 1 + pad.nets().len());
        for n in pad.nets() {
            let s = r[&n.model_id().name];
            assert!(s.median_ms > 0.0 && s.p99_ms >= s.median_ms);
        }
        // The report carries them only when measured.
        let mut rep = run(
            || {
                Ok(Pipeline::new(
                    Box::new(FixedFaces(Ok(vec![face(200.0, 100.0)]))),
                    None,
                ))
            },
            1,
            Quant::F32,
            1,
            0,
        )
        .unwrap();
        assert!(serde_json::to_value(&rep)
            .unwrap()
            .get("networks")
            .is_none());
        rep.networks = r;
        let v = serde_json::to_value(&rep).unwrap();
        assert!(v["networks"]["blazeface_short_range"]["median_ms"].is_number());
    }

    #[test]
    fn random_input_is_uniform_in_the_unit_interval_and_seeded() {
        let a = random_input(10_000, 1);
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(a, random_input(10_000, 1));
        assert_ne!(a, random_input(10_000, 2));
    }

    #[test]
    fn no_face_is_an_error_not_a_panic() {
        let r = run(
            || Ok(Pipeline::new(Box::new(FixedFaces(Ok(vec![]))), None)),
            1,
            Quant::F32,
            2,
            0,
        );
        assert!(r.is_err());
    }

    #[test]
    fn pad_crops_are_the_pipelines_crops() {
        let img = RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 7]));
        for f in [face(0.0, 300.0), face(600.0, 100.0), face(-50.0, 20.0)] {
            let [c1, c2] = pad_crops(&img, &f).unwrap();
            assert_eq!(c1, crop_bgr(&img, f.bbox, 2.7, 80, 80).unwrap());
            assert_eq!(c2, crop_bgr(&img, f.bbox, 4.0, 80, 80).unwrap());
            assert_eq!(c1.len(), 80 * 80 * 3);
        }
        // A small face: the two scales give different crops.
        let [c1, c2] = pad_crops(&img, &face(300.0, 50.0)).unwrap();
        assert!(c1 != c2);
    }
}
