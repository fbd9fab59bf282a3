//! The light challenge on real faces (the Extended Yale B set in `../shared/data/illumination`,
//! research data, never committed): a quick `challenge-eval --faces` run on two subjects, and the
//! clear error when the real-face model is asked for and the set is missing. The long
//! measurement is the command itself (docs/challenge.md has the tables and commands).

mod common;

use serde_json::Value;

#[test]
fn quick_real_face_eval_passes_live_and_rejects_every_attack() {
    let Some(faces) = common::shared("data/illumination") else {
        return;
    };
    let out = common::veriframe()
        .args(["challenge-eval", "--faces"])
        .arg(&faces)
        .args([
            "--subjects",
            "all",
            "--subject",
            "yaleB05",
            "--subject",
            "yaleB12",
            "--live-seeds",
            "3",
            "--attack-seeds",
            "1",
            "--jobs",
            "2",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["subjects"], serde_json::json!(["yaleB05", "yaleB12"]));
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2 * (3 + 3), "{v}");
    for t in trials {
        let passed = t["outcome"] == "passed";
        if t["scene"] == "live" {
            assert!(passed, "live trial failed: {t}");
        } else {
            assert!(!passed, "attack accepted: {t}");
        }
    }
    // The noise levels cycled are named in the output.
    assert_eq!(
        v["conditions"]["noise"],
        serde_json::json!([1.0, 2.0, 4.0, 8.0])
    );
    // Prints follow the code but are flat.
    let print = v["pooled"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scene"] == "print")
        .unwrap();
    assert_eq!(print["rejected"], 2, "{print}");
}

#[test]
fn asking_for_real_faces_without_the_set_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-faces-here");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[source]\nuri = \"sim:live?model=real\"\nsim_faces = \"{}\"\n",
            dir.path().join("data").display(),
            missing.display()
        ),
    )
    .unwrap();
    let out = common::veriframe()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--frames", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-faces-here"), "{stderr}");
    // challenge-eval too.
    let out = common::veriframe()
        .args(["challenge-eval", "--faces"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-faces-here"), "{stderr}");
}
