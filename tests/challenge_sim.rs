//! The light challenge end to end: the real daemon on the simulated booth sources (`sim:live`,
//! `sim:replay`, `sim:print`, `sim:injected`) with the real-face model (real people under real
//! strobes, `../shared/data/illumination`; with `VERIFRAME_REQUIRE_SHARED` set a missing set
//! fails the tests, else they fall back to the rendered relief and say so), alerts through a
//! real mosquitto, every frame sealed (`policy = "every"`) and the manifests read back and
//! verified.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mqtt::{Broker, Collector};
use serde_json::Value;

struct Outcome {
    manifests: Vec<Value>,
    /// Alert kinds received over MQTT.
    alerts: Vec<(String, Value)>,
}

/// Run the daemon for 120 frames on `uri` with every frame sealed; wait for its alerts.
fn run(dir: &Path, broker: &Broker, device: &str, uri: &str, extra: &str) -> Outcome {
    let sub = Collector::start(
        broker.port,
        &format!("veriframe/{device}/alert"),
        &format!("{device}-sub"),
        false,
    );
    sub.wait_connected(Duration::from_secs(10));
    let data = dir.join(device);
    let cfg = dir.join(format!("{device}.toml"));
    // The real-face model when the set is there (required in CI), else the rendered relief.
    let (uri, faces) = match common::shared("data/illumination") {
        Some(p) => (format!("{uri}&model=real"), p.display().to_string()),
        None => (format!("{uri}&model=photo"), String::new()),
    };
    std::fs::write(
        &cfg,
        format!(
            "device_id = \"{device}\"\ndata_dir = \"{}\"\n[source]\nuri = \"{uri}\"\nsim_faces = \"{faces}\"\n[seal]\npolicy = \"every\"\n[mqtt]\nbroker = \"{}\"\n{extra}",
            data.display(),
            broker.url()
        ),
    )
    .unwrap();
    let out = common::veriframe()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--frames", "120"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{uri}: {stderr}");
    // Every capture verifies (the challenge record's code is checked against its nonce).
    let v = Command::new(common::bin())
        .arg("verify")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let mut manifests = Vec::new();
    for chain in std::fs::read_dir(data.join("captures")).unwrap() {
        for f in std::fs::read_dir(chain.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "chain.json")
            {
                manifests.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    // The daemon flushed its outbox before exiting; give the subscriber a moment.
    std::thread::sleep(Duration::from_millis(500));
    let alerts = sub
        .snapshot()
        .iter()
        .map(|m| {
            let v = m.json();
            (v["alert"]["kind"].as_str().unwrap_or("").to_string(), v)
        })
        .collect();
    Outcome { manifests, alerts }
}

fn verdicts(o: &Outcome) -> Vec<(String, Option<String>)> {
    o.manifests
        .iter()
        .map(|m| {
            (
                m["analysis"]["verdict"].as_str().unwrap().to_string(),
                m["challenge"]["verdict"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn live_face_passes_the_challenge_and_is_sealed_authentic() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let o = run(dir.path(), &broker, "live", "sim:live?seed=11", "");
    let v = verdicts(&o);
    assert!(o.manifests.len() >= 100, "{}", o.manifests.len());
    let passed: Vec<&Value> = o
        .manifests
        .iter()
        .filter(|m| m["challenge"]["verdict"] == "passed")
        .collect();
    assert!(!passed.is_empty(), "no passed challenge: {v:?}");
    let c = &passed[0]["challenge"];
    assert_eq!(c["nonce"].as_str().unwrap().len(), 32, "{c}");
    assert_eq!(c["code"].as_str().unwrap().len(), 20, "{c}"); // the default code_bits
    assert!(c["lag_frames"].as_u64().unwrap() <= 3, "{c}");
    assert!(c["correlation"].as_str().unwrap().parse::<f32>().unwrap() >= 0.6);
    // Authentic only once the face has passed; never before, never with a failed challenge.
    assert!(v
        .iter()
        .any(|(a, c)| a == "authentic" && c.as_deref() == Some("passed")));
    assert!(
        v.iter()
            .all(|(a, c)| a != "authentic" || c.as_deref() == Some("passed")),
        "{v:?}"
    );
    assert!(
        v.iter().all(|(_, c)| c.as_deref() != Some("failed")),
        "{v:?}"
    );
    assert!(o.manifests.iter().all(|m| !m["analysis"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k == "challenge_failed")));
    assert!(
        o.alerts.iter().all(|(k, _)| k != "challenge_failed"),
        "{:?}",
        o.alerts
    );
}

/// An attack: `challenge_failed` over MQTT and in the evidence manifest, nothing `authentic`.
fn assert_rejected(o: &Outcome, what: &str) {
    let v = verdicts(o);
    assert!(o.manifests.len() >= 100, "{what}: {}", o.manifests.len());
    assert!(
        v.iter().all(|(a, _)| a != "authentic"),
        "{what}: sealed authentic: {v:?}"
    );
    let failed: Vec<&(String, Value)> = o
        .alerts
        .iter()
        .filter(|(k, _)| k == "challenge_failed")
        .collect();
    assert!(
        !failed.is_empty(),
        "{what}: no challenge_failed: {:?}",
        o.alerts
    );
    let a = &failed[0].1["alert"];
    assert_eq!(a["severity"], "critical");
    assert!(a["detail"].as_str().unwrap().contains("correlation"), "{a}");
    // The alert cites the sealed evidence, whose manifest carries the failed challenge.
    let evidence = a["evidence"].as_str().expect("evidence manifest");
    assert_eq!(evidence.len(), 64);
    let cited = o
        .manifests
        .iter()
        .find(|m| {
            m["analysis"]["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "challenge_failed")
        })
        .expect("a manifest raising challenge_failed");
    assert_eq!(cited["challenge"]["verdict"], "failed", "{cited}");
    assert_eq!(cited["analysis"]["verdict"], "attack", "{cited}");
    // After the failure, the face's frames are attacks.
    assert!(v
        .iter()
        .any(|(a, c)| a == "attack" && c.as_deref() == Some("failed")));
}

#[test]
fn replay_and_injected_feeds_fail_the_challenge() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let replay = run(dir.path(), &broker, "replay", "sim:replay?seed=11", "");
    assert_rejected(&replay, "sim:replay");
    let injected = run(dir.path(), &broker, "injected", "sim:injected?seed=11", "");
    assert_rejected(&injected, "sim:injected");
    // Control: the same replay without the challenge is sealed authentic by the passive PAD
    // alone, so it is the challenge that stops it above.
    let control = run(
        dir.path(),
        &broker,
        "control",
        "sim:replay?seed=11",
        "[challenge]\nilluminator = \"none\"\n",
    );
    let v = verdicts(&control);
    assert!(
        v.iter().any(|(a, c)| a == "authentic" && c.is_none()),
        "control run had no authentic frame: {v:?}"
    );
    assert!(control.alerts.iter().all(|(k, _)| k != "challenge_failed"));
}

#[test]
fn a_flat_print_fails_on_structure() {
    if !common::mqtt::have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let print = run(dir.path(), &broker, "print", "sim:print?seed=11", "");
    assert_rejected(&print, "sim:print");
    let failed = print
        .manifests
        .iter()
        .find(|m| m["challenge"]["verdict"] == "failed")
        .unwrap();
    // It follows the code like a face, but flat.
    let reason = failed["challenge"]["reason"].as_str().unwrap();
    assert!(reason.contains("structure"), "{reason}");
}
