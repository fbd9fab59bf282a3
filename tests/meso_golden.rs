//! Meso4 port (`src/detect/nets/meso.rs`) checked against an independent numpy float64 forward pass
//! (`tools/meso_golden.py` → `tests/golden/meso4.json`) over the upstream weights in
//! `../shared/models/upstream/mesonet/Meso4_{DF,F2F}.safetensors`.
//!
//! * Synthetic 256×256 patterns (exact inputs on both sides): P(real) within 1e-4.
//! * The 4 MesoNet sample frames (`../shared/data/mesonet-samples`), resized to 256×256 by
//!   nearest neighbour ([`resize_nearest_rgb`], as Keras `load_img`): when our JPEG decoder
//!   (`image`/zune-jpeg) gives the same pixels as PIL (libjpeg) — checked by the SHA-256 of the
//!   input recorded in the golden file — within 1e-4 as well; otherwise the decoders differ by a
//!   few grey levels and the bound is [`DECODER_TOLERANCE`].
//!
//! Without `../shared` the tests print `skipped: missing <path>` (a failure when
//! `VERIFRAME_REQUIRE_SHARED` is set, as in CI).

mod common;

use std::time::Instant;

use common::pad::require;
use veriframe::detect::model::file::sha256_hex;
use veriframe::detect::nets::meso::{resize_nearest_rgb, Meso4, INPUT};

const MESO: &str = "models/upstream/mesonet";
const SAMPLES: &str = "data/mesonet-samples";
const MODELS: [&str; 2] = ["Meso4_DF", "Meso4_F2F"];
/// Bound on |ΔP(real)| when our decoded JPEG differs from PIL's.
const DECODER_TOLERANCE: f32 = 0.05;

fn golden() -> serde_json::Value {
    serde_json::from_str(include_str!("golden/meso4.json")).expect("meso4.json parses")
}

/// The synthetic inputs of `tools/meso_golden.py`, packed (H, W, C).
fn synthetic(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(INPUT * INPUT * 3);
    for h in 0..INPUT {
        for w in 0..INPUT {
            for c in 0..3 {
                v.push(match name {
                    "pattern" => ((7 * h + 13 * w + 29 * c) % 256) as u8,
                    "gradient" => ((h + w + 64 * c) % 256) as u8,
                    _ => panic!("unknown synthetic input {name}"),
                });
            }
        }
    }
    v
}

fn input(sdir: &std::path::Path, name: &str) -> Vec<u8> {
    if name.contains('/') {
        let img = image::open(sdir.join(name))
            .expect("sample image")
            .to_rgb8();
        resize_nearest_rgb(&img).expect("resize")
    } else {
        synthetic(name)
    }
}

fn f(v: &serde_json::Value) -> f32 {
    v.as_f64().expect("number") as f32
}

#[test]
fn meso4_matches_the_numpy_reference() {
    let Some(mdir) = require(MESO) else { return };
    let Some(sdir) = require(SAMPLES) else { return };
    let g = golden();
    let inputs = g["inputs"].as_object().expect("inputs");
    let (mut exact, mut loose) = (0, 0);
    let (mut worst_exact, mut worst_loose) = (0f32, 0f32);
    for model in MODELS {
        let path = mdir.join(format!("{model}.safetensors"));
        let mut net = Meso4::load(&path).expect("load Meso4");
        let gm = &g["models"][model];
        assert_eq!(
            net.model_id().weights_sha256,
            gm["weights_sha256"].as_str().expect("sha"),
            "{model}: weights differ from the ones the golden file was made with"
        );
        for (name, meta) in inputs {
            let rgb = input(&sdir, name);
            let same_pixels = sha256_hex(&rgb) == meta["rgb_sha256"].as_str().expect("sha");
            let x: Vec<f32> = rgb.iter().map(|&p| f32::from(p) / 255.0).collect();
            let logit = net.logit(&x).expect("forward");
            let p = net.real_prob(&x).expect("forward");
            let want = &gm["outputs"][name.as_str()];
            let (wl, wp) = (f(&want["logit"]), f(&want["sigmoid_real"]));
            let d = (p - wp).abs();
            eprintln!(
                "{model:9} {name:22} P(real) {p:.6} (numpy {wp:.6}, |d| {d:.1e}) logit {logit:+.5} \
                 (|d| {:.1e}) P(deepfake) {:.4} {}",
                (logit - wl).abs(),
                1.0 - p,
                if same_pixels { "same pixels" } else { "decoder differs" }
            );
            assert!(
                (1.0 - p - f(&want["p_deepfake"])).abs()
                    < 1e-4 + if same_pixels { 0.0 } else { DECODER_TOLERANCE },
                "{model} {name}: P(deepfake)"
            );
            if same_pixels {
                assert!(d < 1e-4, "{model} {name}: P(real) {p} vs {wp}");
                assert!(
                    (logit - wl).abs() < 1e-4 * wl.abs().max(1.0),
                    "{model} {name}: logit {logit} vs {wl}"
                );
                worst_exact = worst_exact.max(d);
                exact += 1;
            } else {
                assert!(d < DECODER_TOLERANCE, "{model} {name}: P(real) {p} vs {wp}");
                worst_loose = worst_loose.max(d);
                loose += 1;
            }
        }
    }
    assert!(
        exact >= 4,
        "the 2 synthetic inputs × 2 models compare exactly"
    );
    assert_eq!(exact + loose, 12, "6 inputs × 2 models");
    eprintln!(
        "Meso4 vs numpy: {exact} exact inputs max |dP| {worst_exact:.1e}; \
         {loose} decoder-differing inputs max |dP| {worst_loose:.1e}"
    );
}

#[test]
fn meso4_df_separates_the_four_samples() {
    // Not an accuracy claim (4 frames): a regression check that the port, end to end from the
    // JPEG files, keeps upstream's verdict on its own sample frames.
    let Some(mdir) = require(MESO) else { return };
    let Some(sdir) = require(SAMPLES) else { return };
    let mut net = Meso4::load(&mdir.join("Meso4_DF.safetensors")).expect("load");
    for (name, fake) in [
        ("real/real00240.jpg", false),
        ("real/real00772.jpg", false),
        ("deepfake/df00204.jpg", true),
        ("deepfake/df01254.jpg", true),
    ] {
        let s = net.deepfake_score_u8(&input(&sdir, name)).expect("forward");
        assert_eq!(s > 0.5, fake, "{name}: P(deepfake) {s}");
    }
}

#[test]
fn enabled_in_config_the_pipeline_scores_the_primary_face() {
    use veriframe::detect::{build_pipeline, Analyzer, DetectConfig};
    let Some(mdir) = require(MESO) else { return };
    let cfg = DetectConfig {
        model: "face".into(),
        deepfake_model: mdir.join("Meso4_DF.safetensors"),
        ..DetectConfig::default()
    };
    cfg.validate().expect("valid");
    let mut p = build_pipeline(&cfg).expect("build").expect("pipeline");
    assert!(p.has_deepfake());
    let names: Vec<_> = p.models().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["blazeface_short_range", "meso4_df"]);
    let img = image::load_from_memory(veriframe::detect::bench::sample_jpeg().expect("sample"))
        .expect("decode")
        .to_rgb8();
    let a = p.analyze_image(&img, 1).expect("analyse");
    let primary = a.primary().expect("the bundled sample has a face");
    let s = primary
        .deepfake_score
        .expect("deepfake score on the primary face");
    assert!((0.0..=1.0).contains(&s), "{s}");
    eprintln!("bundled astronaut_00.jpg: Meso4_DF P(deepfake) {s:.4}");
    assert!(a.faces[1..].iter().all(|f| f.deepfake_score.is_none()));
}

/// Timing of one Meso4 forward pass (256×256 input; no assertion on time).
/// `cargo test --release --test meso_golden -- --ignored --nocapture meso4_timing`
#[test]
#[ignore]
fn meso4_timing() {
    let Some(mdir) = require(MESO) else { return };
    let mut net = Meso4::load(&mdir.join("Meso4_DF.safetensors")).expect("load");
    let rgb = synthetic("pattern");
    let x: Vec<f32> = rgb.iter().map(|&p| f32::from(p) / 255.0).collect();
    for _ in 0..3 {
        net.logit(&x).expect("forward");
    }
    let n = 30;
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            net.logit(&x).expect("forward");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "Meso4 forward (256x256, RAYON_NUM_THREADS={:?}): median {:.2} ms, min {:.2} ms, max {:.2} ms over {n}",
        std::env::var("RAYON_NUM_THREADS").ok(),
        times[n / 2],
        times[0],
        times[n - 1]
    );
}
