//! BlazeFace in candle against the reference runtime (LiteRT), golden outputs from
//! `tools/golden_blazeface.py` in `tests/golden/blazeface.json`. Uses only files in the repository
//! (the bundled `samples/*.jpg`), so it never skips.

use std::path::PathBuf;

use serde_json::Value;
use veriframe::detect::kernels::max_abs_diff;
use veriframe::detect::nets::face::{self, BlazeFace, BlazeFaceOptions, INPUT, NUM_COORDS};
use veriframe::detect::FaceDetector;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> Value {
    let text = std::fs::read_to_string(root().join("tests/golden/blazeface.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn network_matches_litert_on_synthetic_input() {
    let g = golden();
    let syn = &g["synthetic"];
    // Same formula as the golden script, NHWC there, CHW here.
    let mut input = vec![0f32; 3 * INPUT * INPUT];
    for c in 0..3 {
        for y in 0..INPUT {
            for x in 0..INPUT {
                input[c * INPUT * INPUT + y * INPUT + x] =
                    ((x * 7 + y * 13 + c * 29) % 256) as f32 / 127.5 - 1.0;
            }
        }
    }
    let mut m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
    let (logits, regs) = m.raw_outputs(&input).unwrap();
    let d = max_abs_diff(&logits, &floats(&syn["logits"]));
    eprintln!("synthetic: max |Δ logit| = {d:e}");
    assert!(d < 1e-3, "logits differ by {d}");
    let first = &regs[..4 * NUM_COORDS];
    let last = &regs[regs.len() - 4 * NUM_COORDS..];
    let d1 = max_abs_diff(first, &floats(&syn["regressors_first_anchors"]));
    let d2 = max_abs_diff(last, &floats(&syn["regressors_last_anchors"]));
    eprintln!("synthetic: max |Δ regressor| = {:e}", d1.max(d2));
    assert!(d1 < 1e-2 && d2 < 1e-2, "regressors differ by {d1} / {d2}");
}

#[test]
fn samples_match_litert_raw_and_decoded() {
    let g = golden();
    let mut m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
    for im in g["images"].as_array().unwrap() {
        let file = im["file"].as_str().unwrap();
        let img = image::open(root().join("samples").join(file))
            .unwrap()
            .to_rgb8();
        let (input, lb) = face::letterbox::letterbox(&img).unwrap();
        // Letterbox geometry is identical; pixel values differ only by JPEG decoder rounding.
        let glb = &im["letterbox"];
        assert_eq!(lb.offset[0] as u64, glb["offset"][0].as_u64().unwrap());
        assert_eq!(lb.offset[1] as u64, glb["offset"][1].as_u64().unwrap());
        assert_eq!(lb.size[0] as u64, glb["size"][0].as_u64().unwrap());
        assert!((lb.scale as f64 - glb["scale"].as_f64().unwrap()).abs() < 1e-6);
        let mean = input.iter().sum::<f32>() / input.len() as f32;
        let gmean = im["input_mean"].as_f64().unwrap() as f32;
        assert!(
            (mean - gmean).abs() < 2e-3,
            "{file}: input mean {mean} vs {gmean}"
        );

        let (logits, regs) = m.raw_outputs(&input).unwrap();
        // The JPEG decoders (libjpeg in PIL, zune-jpeg here) differ by a grey level here and
        // there; confident anchors (logit > 1, score > 0.73) are stable to well under a pixel, weak ones move
        // more.
        let mut worst_logit = 0f32;
        let mut worst_reg = [0f32; 2];
        for t in g_top(im) {
            let (a, logit, reg) = t;
            worst_logit = worst_logit.max((logits[a] - logit).abs());
            let d = max_abs_diff(&regs[a * NUM_COORDS..(a + 1) * NUM_COORDS], &reg);
            let i = usize::from(logit <= 1.0);
            worst_reg[i] = worst_reg[i].max(d);
        }
        eprintln!(
            "{file}: top anchors max |Δ logit| {worst_logit:.4}, |Δ regressor| {:.3} px (confident), {:.3} px (weak)",
            worst_reg[0], worst_reg[1]
        );
        assert!(worst_logit < 0.1, "{file}: logits differ by {worst_logit}");
        assert!(
            worst_reg[0] < 1.0,
            "{file}: regressors differ by {} input px",
            worst_reg[0]
        );
        assert!(
            worst_reg[1] < 3.0,
            "{file}: weak regressors differ by {} input px",
            worst_reg[1]
        );

        // Decoded faces: every confident golden detection is found, box within 2 frame px.
        let faces = m.detect(&img).unwrap();
        let confident: Vec<&Value> = im["detections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["score"].as_f64().unwrap() > 0.7)
            .collect();
        assert_eq!(
            faces.iter().filter(|f| f.score > 0.75).count(),
            confident
                .iter()
                .filter(|d| d["score"].as_f64().unwrap() > 0.75)
                .count(),
            "{file}: face count"
        );
        for d in confident {
            let gb = floats(&d["bbox_xywh"]);
            let f = faces
                .iter()
                .min_by(|a, b| max_abs_diff(&a.bbox, &gb).total_cmp(&max_abs_diff(&b.bbox, &gb)))
                .unwrap_or_else(|| panic!("{file}: no face for golden {gb:?}"));
            let db = max_abs_diff(&f.bbox, &gb);
            let gl: Vec<f32> = d["landmarks"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(floats)
                .collect();
            let fl: Vec<f32> = f.landmarks.iter().flatten().copied().collect();
            let dl = max_abs_diff(&fl, &gl);
            eprintln!(
                "{file}: score {:.4} vs {:.4}, |Δ box| {db:.2} px, |Δ landmark| {dl:.2} px",
                f.score,
                d["score"].as_f64().unwrap()
            );
            assert!(db < 2.0, "{file}: box {:?} vs {gb:?}", f.bbox);
            assert!(dl < 2.0, "{file}: landmarks differ by {dl}");
            assert!((f.score as f64 - d["score"].as_f64().unwrap()).abs() < 0.02);
        }
    }
}

fn g_top(im: &Value) -> Vec<(usize, f32, Vec<f32>)> {
    im["top_anchors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["anchor"].as_u64().unwrap() as usize,
                t["logit"].as_f64().unwrap() as f32,
                floats(&t["regressors"]),
            )
        })
        .collect()
}

#[test]
fn no_face_sample_has_no_confident_face() {
    let mut m = BlazeFace::builtin(BlazeFaceOptions::default()).unwrap();
    let img = image::open(root().join("samples/coffee_noface.jpg"))
        .unwrap()
        .to_rgb8();
    let faces = m.detect(&img).unwrap();
    assert!(faces.is_empty(), "found {faces:?}");
    let img = image::open(root().join("samples/astronaut_00.jpg"))
        .unwrap()
        .to_rgb8();
    let faces = m.detect(&img).unwrap();
    assert_eq!(faces.len(), 1);
    // Eyes above the mouth, both inside the box.
    let f = &faces[0];
    assert!(f.landmarks[0][1] < f.landmarks[3][1]);
    for p in &f.landmarks[..4] {
        assert!(p[0] > f.bbox[0] && p[0] < f.bbox[0] + f.bbox[2]);
        assert!(p[1] > f.bbox[1] && p[1] < f.bbox[1] + f.bbox[3]);
    }
}
