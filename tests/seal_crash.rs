//! SIGKILL the daemon while it seals a fast stream (group commits of whatever queued up), over
//! and over on one data directory: after every kill `veriframe verify` exits 0, and every capture
//! the daemon reported as sealed before the kill is there.
//!
//! "Reported as sealed": the `sealed chain_seq=N` log line (the `Sealed` event, logged at debug by
//! the log sink), which the seal stage sends only after the capture's batch is durable. Lines
//! written to the pipe before the kill are read after it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{signal, spawn, stat, veriframe, wait_timeout};

const KILLS: usize = 22;

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chain_dir(data: &Path) -> std::path::PathBuf {
    std::fs::read_dir(data.join("captures"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn sigkill_during_group_commits_never_loses_a_reported_capture() {
    kill_rounds(None);
}

/// The same with `[seal] encrypt_to`: after every kill, also no file under the data directory
/// decodes as an image (no plaintext is ever written, temporary files included).
#[test]
fn sigkill_with_encryption_never_leaves_a_plaintext_image() {
    let id = age::x25519::Identity::generate();
    kill_rounds(Some(id.to_public().to_string()));
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn kill_rounds(encrypt_to: Option<String>) {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("K");
    run_ok(veriframe().arg("keygen").arg("--out").arg(&key));
    let pubkey = t.path().join("K.pub");
    let cfg = t.path().join("crash.toml");
    // Decode-only analysis and a fast synthetic source: the seal stage (PNG encode, sign, two
    // syncs per batch on the test's file system) is the slow stage, so frames queue up and are
    // committed in groups.
    std::fs::write(
        &cfg,
        "[source]\nuri = \"synthetic\"\nfps = 200\nwidth = 160\nheight = 120\n\
         [detect]\nmodel = \"none\"\n[seal]\npolicy = \"every\"\n"
            .to_string()
            + &encrypt_to
                .as_ref()
                .map(|r| format!("encrypt_to = [\"{r}\"]\n"))
                .unwrap_or_default(),
    )
    .unwrap();
    let data = t.path().join("D");
    // Pseudo-random kill delays (fixed seed: a failure reproduces).
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut total_reported, mut max_batch) = (0usize, 0u64);
    for round in 0..KILLS {
        let mut cmd = veriframe();
        cmd.env(
            "RUST_LOG",
            "info,veriframe::publish=debug,veriframe::daemon=debug",
        )
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--key")
        .arg(&key)
        .arg("--data-dir")
        .arg(&data);
        let mut child = spawn(cmd);
        let stderr = child.stderr.take().unwrap();
        let reported = Arc::new(Mutex::new(Vec::<u64>::new()));
        let batches = Arc::new(Mutex::new(0u64));
        let reader = {
            let (reported, batches) = (reported.clone(), batches.clone());
            std::thread::spawn(move || {
                let mut log = Vec::new();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(" sealed ") {
                        if let Some(s) = stat(&line, "chain_seq") {
                            reported.lock().unwrap().push(s);
                        }
                    }
                    if line.contains("group commit") {
                        if let Some(n) = stat(&line, "frames") {
                            let mut b = batches.lock().unwrap();
                            *b = (*b).max(n);
                        }
                    }
                    log.push(line);
                }
                log
            })
        };
        // Wait for the first sealed capture of this run, then kill at a random moment.
        let t0 = Instant::now();
        while reported.lock().unwrap().is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "round {round}: nothing sealed within 60 s"
            );
            if let Some(st) = child.try_wait().unwrap() {
                panic!("round {round}: daemon exited early: {st}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(next() % 400));
        signal(&child, libc::SIGKILL);
        let (st, _) = wait_timeout(&mut child, Duration::from_secs(10)).expect("killed child");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL)
        );
        let log = reader.join().unwrap();
        let reported = reported.lock().unwrap().clone();
        max_batch = max_batch.max(*batches.lock().unwrap());
        total_reported += reported.len();

        let out = veriframe()
            .arg("verify")
            .arg(&data)
            .arg("--pubkey")
            .arg(&pubkey)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: verify after SIGKILL:\n{text}\n{}\nlog tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            log[log.len().saturating_sub(20)..].join("\n")
        );
        let chain = chain_dir(&data);
        if encrypt_to.is_some() {
            let mut files = Vec::new();
            files_under(&data, &mut files);
            for f in files {
                let b = std::fs::read(&f).unwrap();
                assert!(
                    image::load_from_memory(&b).is_err(),
                    "round {round}: {} decodes as an image",
                    f.display()
                );
            }
        }
        for s in &reported {
            assert!(
                chain.join(format!("{s:012}.json")).exists(),
                "round {round}: capture {s} was reported sealed but is missing"
            );
        }
    }
    eprintln!(
        "{KILLS} SIGKILLs (encrypt_to {}): verify exited 0 after each; {total_reported} captures reported sealed, all present; largest group commit {max_batch} frames",
        encrypt_to.is_some()
    );
}
