//! The shipped default detector, driven through the binary: the default model set loads the
//! MiniFASNet pair built into the binary (from wherever the binary is copied), runs on the bundled samples without a `presentation_attack`
//! alert on their real faces, fails closed on a missing model file, and running without PAD is an
//! explicit, announced choice whose frames are never sealed as `authentic`.

use std::path::Path;
use std::process::{Command, Output};

fn veriframe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veriframe"))
}

fn run(data: &Path, extra: &[&str]) -> Output {
    veriframe()
        .args(["run", "--log-format", "json", "--data-dir"])
        .arg(data)
        .args(extra)
        .output()
        .expect("veriframe runs")
}

/// JSON log events of a run's stderr.
fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Verdicts of every sealed manifest below `data`.
fn sealed_verdicts(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let caps = data.join("captures");
    for key_dir in std::fs::read_dir(&caps).unwrap() {
        for f in std::fs::read_dir(key_dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            // Manifests are `<seq>.json` (the store's own state files have other names).
            let is_manifest = p.extension().is_some_and(|e| e == "json")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
            if is_manifest {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                out.push(m["analysis"]["verdict"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

#[test]
fn defaults_on_the_bundled_samples_raise_no_presentation_attack() {
    let data = tempfile::tempdir().unwrap();
    // 60 frames = ten passes over the six samples at 10 fps.
    let out = run(data.path(), &["--frames", "60"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let ev = events(&out);
    let loaded = ev
        .iter()
        .find(|e| e["fields"]["message"] == "detector ready")
        .unwrap_or_else(|| panic!("no 'detector ready' line:\n{err}"));
    let models = loaded["fields"]["models"].as_str().unwrap_or_default();
    assert!(
        models.contains("minifasnet_v2/q8_0") && models.contains("minifasnet_v1se/q8_0"),
        "default model set: {models}"
    );
    let alerts: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["fields"]["message"] == "alert")
        .collect();
    assert!(
        !alerts
            .iter()
            .any(|a| a["fields"]["kind"] == "presentation_attack"),
        "presentation_attack on the bundled real faces: {alerts:?}"
    );
    let verdicts = sealed_verdicts(data.path());
    assert!(
        verdicts.iter().any(|v| v == "authentic"),
        "no authentic capture sealed: {verdicts:?}"
    );
    assert!(!verdicts.iter().any(|v| v == "attack"), "{verdicts:?}");
}

/// The binary copied alone into an empty directory, run there (no `models/` beside it or below
/// the working directory), loads the default pair: it is compiled in.
#[test]
fn the_binary_copied_alone_loads_the_built_in_pair() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("veriframe");
    std::fs::copy(env!("CARGO_BIN_EXE_veriframe"), &bin).unwrap();
    let out = Command::new(&bin)
        .current_dir(dir.path())
        .args([
            "run",
            "--log-format",
            "json",
            "--frames",
            "3",
            "--data-dir",
            "d",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!dir.path().join("models").exists());
    let ev = events(&out);
    let ready = ev
        .iter()
        .find(|e| e["fields"]["message"] == "detector ready")
        .unwrap_or_else(|| panic!("no 'detector ready' line:\n{err}"));
    let models = ready["fields"]["models"].as_str().unwrap_or_default();
    assert!(
        models.contains("minifasnet_v2/q8_0") && models.contains("minifasnet_v1se/q8_0"),
        "{models}"
    );
    let loaded = ev
        .iter()
        .find(|e| e["fields"]["message"] == "PAD classifier loaded")
        .unwrap_or_else(|| panic!("no 'PAD classifier loaded' line:\n{err}"));
    let paths = loaded["fields"]["paths"].as_str().unwrap_or_default();
    assert!(
        paths.contains("built-in minifasnet-v2.q8_0.gguf"),
        "{paths}"
    );
}

#[test]
fn a_missing_configured_model_is_a_startup_error_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("cfg.toml");
    std::fs::write(
        &cfg,
        "[detect]\npad_model = [\"/nonexistent/minifasnet-v2.q8_0.gguf\"]\n",
    )
    .unwrap();
    let out = run(
        &data.path().join("d"),
        &["--frames", "5", "--config", cfg.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/minifasnet-v2.q8_0.gguf"),
        "{err}"
    );
    assert!(
        !data.path().join("d/captures").exists()
            || sealed_verdicts(&data.path().join("d")).is_empty()
    );
}

#[test]
fn without_pad_is_explicit_announced_and_never_authentic() {
    let data = tempfile::tempdir().unwrap();
    let cfg = data.path().join("cfg.toml");
    // Seal every frame, so a wrongly `authentic` verdict could not hide behind the policy.
    std::fs::write(
        &cfg,
        "[detect]\nmodel = \"face\"\n[seal]\npolicy = \"every\"\n",
    )
    .unwrap();
    let out = run(
        &data.path().join("d"),
        &["--frames", "12", "--config", cfg.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("presentation-attack detection DISABLED"),
        "no start-up warning:\n{err}"
    );
    let verdicts = sealed_verdicts(&data.path().join("d"));
    assert!(verdicts.len() >= 10, "{verdicts:?}");
    assert!(verdicts.iter().any(|v| v == "unknown"), "{verdicts:?}");
    assert!(!verdicts.iter().any(|v| v == "authentic"), "{verdicts:?}");
}

/// The opt-in v6 files (models/veriframe-pad-v6.md; docs/models.md, "Which PAD model") load,
/// carry their architecture, and their weights match the hash recorded at conversion.
#[test]
fn the_opt_in_v6_model_loads_and_verifies() {
    for (file, arch) in [
        ("veriframe-pad-v6-v2.q8_0.gguf", "minifasnet_v2"),
        ("veriframe-pad-v6-v1se.q8_0.gguf", "minifasnet_v1se"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(file);
        let out = veriframe()
            .args(["model", "info"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {out:?}");
        let info = String::from_utf8_lossy(&out.stdout);
        assert!(info.contains(arch), "{file}: {info}");
        assert!(info.contains("(verified)"), "{file}: {info}");
    }
}
