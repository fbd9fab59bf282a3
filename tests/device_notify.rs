//! sd_notify end to end: the real binary, started with NOTIFY_SOCKET and WATCHDOG_USEC pointing at
//! a socket this test owns, sends READY=1 (only once its stages are built), WATCHDOG=1 from the
//! frame loop, and STOPPING=1 when it drains.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

fn receive_all(sock: &UnixDatagram) -> Vec<String> {
    sock.set_nonblocking(true).expect("nonblocking");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

fn run(args: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    let status = Command::new(env!("CARGO_BIN_EXE_veriframe"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        // 20 ms: a ping is due on (nearly) every analysed frame.
        .env("WATCHDOG_USEC", "20000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .status()
        .expect("run veriframe");
    std::thread::sleep(Duration::from_millis(50));
    (status, receive_all(&sock))
}

#[test]
fn ready_watchdog_stopping_in_order() {
    let (status, msgs) = run(&["run", "--source", "synthetic", "--frames", "20"]);
    assert!(status.success(), "{status:?}");
    let ready = msgs
        .iter()
        .position(|m| m.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {msgs:?}"));
    let stopping = msgs
        .iter()
        .position(|m| m.starts_with("STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1 in {msgs:?}"));
    assert!(ready < stopping, "{msgs:?}");
    let pings: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.as_str() == "WATCHDOG=1")
        .map(|(i, _)| i)
        .collect();
    assert!(!pings.is_empty(), "no WATCHDOG=1 in {msgs:?}");
    assert!(pings.iter().all(|&i| i > ready), "{msgs:?}");
    // At most one ping per analysed frame (rate-limited, never a free-running timer).
    assert!(pings.len() <= 20, "{} pings for 20 frames", pings.len());
}

#[test]
fn no_ready_when_the_source_cannot_open() {
    let (status, msgs) = run(&["run", "--source", "/dev/video-veriframe-missing"]);
    assert_eq!(status.code(), Some(2), "{status:?}");
    assert!(
        msgs.iter().all(|m| !m.starts_with("READY=1")),
        "READY sent although the source did not open: {msgs:?}"
    );
}
