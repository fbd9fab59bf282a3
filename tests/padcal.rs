//! The site calibration (`tools/train/padcal`, docs/training.md) end to end on a tiny synthetic
//! fixture (tests/padcal/fixture.py, made from the bundled samples): `veriframe faces`, `calibrate.py
//! embed` (the upstream ONNX graphs from ../shared), `check`, `site` (train, export, threshold,
//! `site.toml`), then the written config loads in `veriframe eval` and the model files verify.
//!
//! The calibration's Python packages (tools/train/requirements.txt) must be there: `tools/test.sh`
//! installs them into `target/padcal-venv`; a missing one fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, veriframe};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A python3 that can import the calibration's packages.
fn padcal_python() -> PathBuf {
    let probe = "import numpy, cv2, onnx, onnxruntime, safetensors";
    let ok = |py: &Path| {
        Command::new(py)
            .args(["-c", probe])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("VERIFRAME_PADCAL_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            ok(&p),
            "VERIFRAME_PADCAL_PYTHON={} cannot `{probe}`",
            p.display()
        );
        return p;
    }
    for py in [
        root().join("target/padcal-venv/bin/python"),
        PathBuf::from("python3"),
    ] {
        if ok(&py) {
            return py;
        }
    }
    panic!(
        "the calibration's Python packages are missing: tools/test.sh installs them \
         (python3 -m venv target/padcal-venv && target/padcal-venv/bin/pip install -r \
         tools/train/requirements.txt), or set VERIFRAME_PADCAL_PYTHON to a python3 that can `{probe}`"
    );
}

/// Runs `cmd`, failing the test with its output unless it succeeds; returns stdout.
fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn site_calibration_runs_end_to_end_on_a_tiny_fixture() {
    let Some(upstream) = common::shared("models/upstream/minifasnet") else {
        return;
    };
    let shared = upstream.join("../../..");
    let py = padcal_python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let fixture = root().join("tests/padcal/fixture.py");
    let calibrate = root().join("tools/train/padcal/calibrate.py");
    let python = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new(&py);
        c.env("OPENBLAS_NUM_THREADS", "1").args(args);
        c
    };

    let mut c = python(&[fixture.as_os_str(), "images".as_ref(), t.as_os_str()]);
    run(c, "fixture.py images");
    for tree in ["site", "pool"] {
        let dir = t.join(tree);
        let boxes = run(
            {
                let mut c = veriframe();
                c.arg("faces").arg("--root").arg(&dir).arg(&dir);
                c
            },
            "veriframe faces",
        );
        let boxes_file = t.join(format!("{tree}-boxes.json"));
        std::fs::write(&boxes_file, boxes).unwrap();
        c = python(&[calibrate.as_os_str(), "embed".as_ref()]);
        c.arg("--shared")
            .arg(&shared)
            .arg("--site")
            .arg(&dir)
            .arg("--boxes")
            .arg(&boxes_file)
            .arg("--out")
            .arg(t.join(format!("{tree}-cache")));
        run(c, &format!("calibrate.py embed ({tree})"));
    }
    // The pool stands in for the shared training data: its sessions become shared sources.
    c = python(&[fixture.as_os_str(), "relabel".as_ref()]);
    c.arg(t.join("pool-cache"));
    run(c, "fixture.py relabel");

    c = python(&[calibrate.as_os_str(), "check".as_ref()]);
    // The caches reproduce the ONNX graphs (the gradient check needs real data: docs/training.md).
    c.arg("--cache")
        .arg(t.join("pool-cache"))
        .arg("--upstream")
        .arg(&upstream)
        .arg("--forward-only");
    let check = run(c, "calibrate.py check");
    assert!(check.contains("vs conv_5 cache"), "{check}");

    let model = t.join("model");
    c = python(&[calibrate.as_os_str(), "site".as_ref()]);
    c.arg("--cache")
        .arg(t.join("pool-cache"))
        .arg("--site")
        .arg(t.join("site"))
        .arg("--site-cache")
        .arg(t.join("site-cache"))
        .arg("--upstream")
        .arg(&upstream)
        .arg("--veriframe")
        .arg(bin())
        .arg("--out")
        .arg(&model);
    let out = run(c, "calibrate.py site");
    let report: Value = serde_json::from_str(out.lines().last().expect("a report line"))
        .unwrap_or_else(|e| panic!("report: {e}\n{out}"));
    let thr = report["threshold"].as_f64().expect("threshold");
    assert!((0.0..=1.0).contains(&thr), "{report}");
    assert!(report["val"]["n_real"].as_u64() > Some(0), "{report}");
    assert!(report["val"]["n_attack"].as_u64() > Some(0), "{report}");

    // The written config: the two calibrated files and the threshold, loadable by the daemon's
    // own tools.
    let toml_path = model.join("site.toml");
    let text = std::fs::read_to_string(&toml_path).expect("site.toml");
    let cfg: toml::Value = toml::from_str(&text).expect("site.toml parses");
    let files: Vec<&str> = cfg["detect"]["pad_model"]
        .as_array()
        .expect("pad_model list")
        .iter()
        .map(|v| v.as_str().expect("a path"))
        .collect();
    assert_eq!(files.len(), 2, "{text}");
    let written = cfg["detect"]["live_threshold"]
        .as_float()
        .expect("threshold");
    assert!((written - thr).abs() < 1e-3, "{text} vs {report}");
    for (file, arch) in files.iter().zip(["minifasnet_v2", "minifasnet_v1se"]) {
        let info = run(
            {
                let mut c = veriframe();
                c.args(["model", "info", file]);
                c
            },
            "veriframe model info",
        );
        assert!(info.contains(arch), "{file}: {info}");
        assert!(info.contains("(verified)"), "{file}: {info}");
    }
    let eval = run(
        {
            let mut c = veriframe();
            c.arg("eval")
                .arg("--real")
                .arg(model.join("val/real"))
                .arg("--attack")
                .arg(model.join("val/attack"))
                .arg("--json")
                .arg("--config")
                .arg(&toml_path);
            c
        },
        "veriframe eval --config site.toml",
    );
    let metrics: Value = serde_json::from_str(&eval).expect("eval JSON");
    assert!(metrics["auc"].is_number(), "{metrics}");
}
