//! What a user sees from the binary: no colour codes when the output is not a terminal, and every
//! error's cause printed once.

use std::process::Command;

fn veriframe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_veriframe"));
    c.env_remove("NO_COLOR").env_remove("RUST_LOG");
    c
}

#[test]
fn run_to_a_file_has_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = veriframe()
        .args([
            "run",
            "--source",
            "synthetic",
            "--frames",
            "5",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("starting pipeline"), "{log}");
    assert!(!out.stdout.contains(&0x1b), "ESC in stdout");
    assert!(!out.stderr.contains(&0x1b), "ESC in the log: {log}");
}

#[test]
fn tool_logs_to_a_file_have_no_escape_codes() {
    // `faces` runs the face detector only, and says so with a warning on stderr.
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/samples");
    let out = veriframe().args(["faces", samples]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("WARN"), "{log}");
    assert!(!out.stderr.contains(&0x1b), "ESC in the log: {log}");
}

#[test]
fn an_error_prints_its_cause_once() {
    let out = veriframe()
        .args(["verify", "/nonexistent/veriframe-missing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("veriframe: error: "), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS message once: {err}"
    );
}
