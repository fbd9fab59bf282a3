//! Helpers shared by the integration tests (`mod common;` in a test): the `veriframe` binary and
//! its child processes here; the MQTT broker and client in [`mqtt`], detector test data in
//! [`pad`], seal-stage frames and configs in [`seal`]. Each test uses some of them.
#![allow(dead_code)]

pub mod mqtt;
pub mod pad;
pub mod seal;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built `veriframe` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veriframe"))
}

/// `veriframe` with logging set to text and no colour.
pub fn veriframe() -> Command {
    let mut c = Command::new(bin());
    c.env("NO_COLOR", "1").env_remove("RUST_LOG");
    c
}

/// A command that must fail as an error (exit 2) and name each of `needles` on stderr; returns
/// stderr for further checks.
pub fn assert_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

/// Spawn with piped output.
pub fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn veriframe")
}

/// Send a signal to a child.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a pid we own.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}

/// Wait for a child up to `timeout`; returns its status and how long it took, or kills it.
pub fn wait_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Option<(std::process::ExitStatus, Duration)> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some((st, t0.elapsed()));
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parse `key=value` integer fields out of a stats line.
pub fn stat(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// Path to `../shared`, or `None` (after printing why) when it is absent and not required.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("VERIFRAME_REQUIRE_SHARED").is_some() {
        panic!("required shared data missing: {}", p.display());
    }
    eprintln!("skipped: missing {}", p.display());
    None
}
