//! End to end through the built binary: keygen → run → verify exits 0, and exits 1 after any
//! single capture is deleted, altered or moved.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::seal::copy_dir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veriframe"))
}

/// A config sealing every frame: the synthetic pattern has no face, so the default `authentic`
/// policy (which skips `no_face` frames now that the detector runs) would seal nothing.
fn every_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("every.toml");
    std::fs::write(&p, "[seal]\npolicy = \"every\"\n").unwrap();
    p
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn verify_code(data: &Path, pubkey: Option<&Path>) -> (i32, String) {
    let mut c = bin();
    c.arg("verify").arg(data);
    if let Some(p) = pubkey {
        c.arg("--pubkey").arg(p);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The chain directory under `<data>/captures`.
fn chain_dir(data: &Path) -> PathBuf {
    let mut dirs: Vec<_> = fs::read_dir(data.join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// Stems (`000000000003`) of the stored captures.
fn captures(chain: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(chain)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".json")
                .filter(|s| *s != "chain")
                .map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

fn files_of(chain: &Path, stem: &str) -> Vec<PathBuf> {
    fs::read_dir(chain)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().unwrap().to_string_lossy() == stem)
        .collect()
}

#[test]
fn keygen_run_verify_and_every_single_tamper_fails() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("K");
    let out = run_ok(bin().arg("keygen").arg("--out").arg(&key));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-----BEGIN PUBLIC KEY-----"), "{text}");
    assert!(text.contains("key id"), "{text}");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pubkey = t.path().join("K.pub");
    assert!(pubkey.exists());

    let data = t.path().join("D");
    run_ok(
        bin()
            .args(["run", "--config"])
            .arg(every_policy(t.path()))
            .args(["--source", "synthetic", "--frames", "30", "--key"])
            .arg(&key)
            .arg("--data-dir")
            .arg(&data),
    );
    let chain = chain_dir(&data);
    let caps = captures(&chain);
    assert!(caps.len() >= 3, "{caps:?}");

    let (code, text) = verify_code(&data, Some(&pubkey));
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        caps.len()
    );

    // A second run continues the chain.
    run_ok(
        bin()
            .args(["run", "--config"])
            .arg(every_policy(t.path()))
            .args(["--source", "synthetic", "--frames", "10", "--key"])
            .arg(&key)
            .arg("--data-dir")
            .arg(&data),
    );
    let caps = captures(&chain);
    let (code, text) = verify_code(&data, Some(&pubkey));
    assert_eq!(code, 0, "{text}");

    // JSON output.
    let out = bin()
        .arg("verify")
        .arg(&data)
        .arg("--pubkey")
        .arg(&pubkey)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(
        v["chains"][0]["captures"].as_array().unwrap().len(),
        caps.len()
    );

    // Every single capture: deleted, altered (image byte), moved (renamed to another seq,
    // or out of the directory).
    for (i, stem) in caps.iter().enumerate() {
        for how in ["delete", "alter", "rename", "move-out"] {
            let copy = t.path().join(format!("copy-{i}-{how}"));
            copy_dir(&data, &copy);
            let ch = chain_dir(&copy);
            let files = files_of(&ch, stem);
            assert_eq!(files.len(), 3, "{files:?}");
            match how {
                "delete" => files.iter().for_each(|f| fs::remove_file(f).unwrap()),
                "alter" => {
                    let img = files
                        .iter()
                        .find(|f| {
                            let e = f.extension().unwrap();
                            e == "png" || e == "jpg"
                        })
                        .unwrap();
                    let mut b = fs::read(img).unwrap();
                    let n = b.len();
                    b[n / 2] ^= 0x40;
                    fs::write(img, b).unwrap();
                }
                "rename" => {
                    for f in &files {
                        let ext = f.extension().unwrap().to_string_lossy().into_owned();
                        fs::rename(f, ch.join(format!("{:012}.{ext}", 900_000 + i))).unwrap();
                    }
                }
                _ => {
                    let out = copy.join("elsewhere");
                    fs::create_dir_all(&out).unwrap();
                    for f in &files {
                        fs::rename(f, out.join(f.file_name().unwrap())).unwrap();
                    }
                }
            }
            let (code, text) = verify_code(&copy, Some(&pubkey));
            assert_eq!(code, 1, "{how} capture {stem}: {text}");
            assert!(text.contains("FAIL"), "{text}");
            fs::remove_dir_all(&copy).unwrap();
        }
    }

    // Wrong key: exit 1. Missing path: exit 2.
    let other = t.path().join("other.key");
    run_ok(bin().arg("keygen").arg("--out").arg(&other));
    let (code, text) = verify_code(&data, Some(&t.path().join("other.key.pub")));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("wrong_key"), "{text}");
    let (code, _) = verify_code(&t.path().join("nope"), None);
    assert_eq!(code, 2);
}

#[test]
fn default_key_is_created_and_insecure_keys_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("D");
    let out = run_ok(
        bin()
            .args([
                "run",
                "--source",
                "synthetic",
                "--frames",
                "10",
                "--data-dir",
            ])
            .arg(&data),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let key = data.join("keys").join("device.key");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(err.contains("key_id"), "{err}");
    let (code, text) = verify_code(&data, None);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("trust on first use"), "{text}");
    let (code, text) = verify_code(&data, Some(&data.join("keys").join("device.key.pub")));
    assert_eq!(code, 0, "{text}");

    // A group-readable key is refused, with the fix in the message; keygen never overwrites.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = bin()
        .args([
            "run",
            "--source",
            "synthetic",
            "--frames",
            "1",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    common::assert_error(&out, &["chmod 600"]);
    let out = bin().arg("keygen").arg("--out").arg(&key).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
