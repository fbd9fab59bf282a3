//! sd_notify end to end: the real binary, started with NOTIFY_SOCKET and WATCHDOG_USEC pointing at
//! a socket this test owns, sends READY=1 (only once its stages are built), WATCHDOG=1 from the
//! frame loop, and STOPPING=1 when it drains.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn run(args: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    // Read while the daemon runs, as systemd does (a datagram socket's queue is short).
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            out
        })
    };
    let status = Command::new(env!("CARGO_BIN_EXE_veriframe"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &path)
        // 1 s: pings are rate-limited to every 0.5 s of analysed frames.
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .status()
        .expect("run veriframe");
    std::thread::sleep(Duration::from_millis(100));
    done.store(true, Ordering::SeqCst);
    (status, reader.join().expect("reader"))
}

#[test]
fn ready_watchdog_stopping_in_order() {
    let (status, msgs) = run(&["run", "--source", "synthetic", "--frames", "30"]);
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
    assert!(pings.len() <= 30, "{} pings for 30 frames", pings.len());
}

#[test]
fn no_ready_when_the_source_cannot_open() {
    let (status, msgs) = run(&["run", "--source", "/nonexistent/veriframe-missing-images"]);
    assert_eq!(status.code(), Some(2), "{status:?}");
    assert!(
        msgs.iter().all(|m| !m.starts_with("READY=1")),
        "READY sent although the source did not open: {msgs:?}"
    );
}

#[test]
fn no_ready_while_the_camera_is_missing() {
    // A V4L2 device missing at start is retried like an unplugged one (a daemon waits for its
    // camera), but READY=1 must wait for a frame: systemd then restarts the unit after
    // TimeoutStartSec instead of believing a camera-less booth is up.
    let (status, msgs) = run(&[
        "run",
        "--source",
        "/dev/video-veriframe-missing",
        "--duration",
        "2s",
    ]);
    assert!(status.success(), "{status:?} {msgs:?}");
    assert!(
        msgs.iter().all(|m| !m.starts_with("READY=1")),
        "READY sent without a camera: {msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("STATUS=camera /dev/video-veriframe-missing lost")),
        "no camera-lost status: {msgs:?}"
    );
}
