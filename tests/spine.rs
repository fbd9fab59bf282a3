//! The spine: replay, drop-oldest accounting, shutdown drain, device loss and recovery, the CLI.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veriframe::alert::ModelId;
use veriframe::capture::reconnect::{Backoff, Opener, Reconnecting};
use veriframe::capture::replay::Replay;
use veriframe::capture::synthetic::Synthetic;
use veriframe::capture::{Capture, CaptureError, CaptureEvent, FrameSource};
use veriframe::config::Config;
use veriframe::daemon::{run_pipeline, Components, Limits};
use veriframe::detect::{Analysis, Analyzer, DecodeOnly, DetectError};
use veriframe::device::NoDevice;
use veriframe::frame::SourceInfo;
use veriframe::publish::{Event, EventSink};
use veriframe::seal::{SealError, SealInput, Sealed, Sealer};
use veriframe::shutdown::Shutdown;

const SAMPLE: &[u8] = include_bytes!("../samples/astronaut_00.jpg");

fn write_images(dir: &Path) {
    std::fs::write(dir.join("a.jpg"), SAMPLE).unwrap();
    std::fs::write(
        dir.join("b.jpg"),
        b"\xFF\xD8\xFF\xE0 this is not really a jpeg",
    )
    .unwrap();
    std::fs::write(dir.join("c.jpg"), &SAMPLE[..SAMPLE.len() / 3]).unwrap(); // truncated
    std::fs::write(dir.join("d.jpg"), SAMPLE).unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
}

fn drain(src: &mut dyn FrameSource, n: usize) -> Vec<Capture> {
    let sd = Shutdown::new();
    (0..n).map(|_| src.next(&sd).expect("no error")).collect()
}

#[test]
fn replay_skips_corrupt_files_once_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    write_images(dir.path());
    let mut r = Replay::open(dir.path(), 500.0, true).unwrap();
    let items = drain(&mut r, 8);
    let mut names = Vec::new();
    let mut skipped = Vec::new();
    for c in &items {
        match c {
            Capture::Frame(f) => {
                names.push(
                    f.origin
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .to_string(),
                );
                assert!(f.bytes[..] == SAMPLE[..], "bytes pass through untouched");
            }
            Capture::Event(CaptureEvent::SkippedCorrupt { path, .. }) => skipped.push(path.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        skipped.len(),
        2,
        "each corrupt file reported once: {skipped:?}"
    );
    assert!(skipped[0].ends_with("b.jpg") && skipped[1].ends_with("c.jpg"));
    // a, [b], [c], d, a, d, a, d  → the corrupt ones are not retried.
    assert_eq!(
        names,
        ["a.jpg", "d.jpg", "a.jpg", "d.jpg", "a.jpg", "d.jpg"]
    );
}

#[test]
fn replay_without_loop_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.jpg"), SAMPLE).unwrap();
    std::fs::write(dir.path().join("y.jpg"), SAMPLE).unwrap();
    let mut r = Replay::open(dir.path(), 500.0, false).unwrap();
    let items = drain(&mut r, 4);
    assert!(matches!(items[0], Capture::Frame(_)));
    assert!(matches!(items[1], Capture::Frame(_)));
    assert!(matches!(
        items[2],
        Capture::Event(CaptureEvent::EndOfStream)
    ));
    assert!(matches!(
        items[3],
        Capture::Event(CaptureEvent::EndOfStream)
    ));
}

#[test]
fn replay_of_only_corrupt_files_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.jpg"), b"nope").unwrap();
    let mut r = Replay::open(dir.path(), 100.0, true).unwrap();
    let sd = Shutdown::new();
    assert!(matches!(
        r.next(&sd),
        Ok(Capture::Event(CaptureEvent::SkippedCorrupt { .. }))
    ));
    assert!(matches!(r.next(&sd), Err(CaptureError::NoImages { .. })));
    assert!(Replay::open(&dir.path().join("missing"), 1.0, true).is_err());
}

#[test]
fn replay_is_paced() {
    // Lower bound only: sleeping can overshoot on a busy machine, never undershoot.
    let mut r = Replay::samples(50.0, true).unwrap();
    let t0 = Instant::now();
    let frames = drain(&mut r, 11);
    let elapsed = t0.elapsed();
    assert_eq!(
        frames
            .iter()
            .filter(|c| matches!(c, Capture::Frame(_)))
            .count(),
        11
    );
    assert!(
        elapsed >= Duration::from_millis(195),
        "11 frames at 50 fps took {elapsed:?}"
    );
}

/// A camera whose behaviour is scripted: `Ok(n)` opens and yields n frames then fails with ENODEV.
struct ScriptedOpener {
    script: Arc<Mutex<Vec<Result<usize, ()>>>>,
    opens: Arc<AtomicU64>,
}

struct ScriptedCam {
    left: usize,
    info: Arc<SourceInfo>,
}

impl FrameSource for ScriptedCam {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }
    fn next(&mut self, sd: &Shutdown) -> Result<Capture, CaptureError> {
        if self.left == 0 {
            return Err(CaptureError::Device {
                path: "/dev/fake".into(),
                reason: "VIDIOC_DQBUF: No such device (os error 19)".into(),
                transient: true,
            });
        }
        self.left -= 1;
        let mut s = Synthetic::new(8, 8, 1000.0);
        s.next(sd)
    }
}

impl Opener for ScriptedOpener {
    fn path(&self) -> String {
        "/dev/fake".into()
    }
    fn open(&mut self) -> Result<Box<dyn FrameSource>, CaptureError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let step = {
            let mut s = self.script.lock().unwrap();
            if s.is_empty() {
                Ok(1000)
            } else {
                s.remove(0)
            }
        };
        match step {
            Ok(n) => Ok(Box::new(ScriptedCam {
                left: n,
                info: Synthetic::new(8, 8, 1000.0).info(),
            })),
            Err(()) => Err(CaptureError::Open {
                path: "/dev/fake".into(),
                reason: "No such file or directory".into(),
            }),
        }
    }
}

#[test]
fn camera_loss_and_recovery() {
    let opens = Arc::new(AtomicU64::new(0));
    let opener = ScriptedOpener {
        script: Arc::new(Mutex::new(vec![Ok(3), Err(()), Err(()), Ok(2), Ok(5)])),
        opens: opens.clone(),
    };
    let mut cam = Reconnecting::new(
        opener,
        Backoff::new(Duration::from_millis(1), Duration::from_millis(4)),
    )
    .unwrap();
    let items = drain(&mut cam, 12);
    let kinds: Vec<&str> = items
        .iter()
        .map(|c| match c {
            Capture::Frame(_) => "F",
            Capture::Event(CaptureEvent::CameraLost { .. }) => "lost",
            Capture::Event(CaptureEvent::CameraRestored { .. }) => "restored",
            Capture::Event(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["F", "F", "F", "lost", "restored", "F", "F", "lost", "restored", "F", "F", "F"]
    );
    // Initial open, two failed reopens, success, then one more reopen after the second loss.
    assert_eq!(opens.load(Ordering::SeqCst), 5);
}

#[test]
fn backoff_is_capped_exponential() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
    let d: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(d, [100, 200, 400, 500, 500]);
    b.reset();
    assert_eq!(b.next_delay().as_millis(), 100);
}

struct SlowAnalyzer(Duration);
impl Analyzer for SlowAnalyzer {
    fn analyze(&mut self, frame: &veriframe::frame::Frame) -> Result<Analysis, DetectError> {
        std::thread::sleep(self.0);
        DecodeOnly.analyze(frame)
    }
    fn models(&self) -> Vec<ModelId> {
        Vec::new()
    }
}

#[derive(Default)]
struct CountingSealer(Arc<AtomicU64>);
impl Sealer for CountingSealer {
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Sealed {
            chain_seq: n,
            frame_seq: input.frame.seq,
            manifest_sha256: String::new(),
            image_sha256: String::new(),
            path: Default::default(),
        }))
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);
impl EventSink for Collect {
    fn send(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

fn run(
    source: Box<dyn FrameSource>,
    analyzer: Box<dyn Analyzer>,
    limits: Limits,
    stop_after: Option<Duration>,
) -> (veriframe::daemon::RunReport, u64, Arc<Collect>) {
    let mut cfg = Config::default();
    cfg.pipeline.queue_capacity = 2;
    cfg.pipeline.stats_interval = Duration::from_millis(200);
    let sealed = Arc::new(AtomicU64::new(0));
    let sink = Arc::new(Collect::default());
    let parts = Components {
        source,
        guard: veriframe::camera::SourceGuard::exempt(),
        analyzer,
        sealer: Box::new(CountingSealer(sealed.clone())),
        sink: sink.clone(),
        actuator: Box::new(NoDevice),
        challenge: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sd = Shutdown::new();
    if let Some(d) = stop_after {
        let sd2 = sd.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            sd2.trigger();
        });
    }
    let report = rt.block_on(run_pipeline(&cfg, parts, limits, sd)).unwrap();
    (report, sealed.load(Ordering::SeqCst), sink)
}

#[test]
fn slow_analyser_drops_oldest_and_accounts_for_every_frame() {
    let (report, sealed, sink) = run(
        Box::new(Synthetic::new(64, 48, 400.0)),
        Box::new(SlowAnalyzer(Duration::from_millis(20))),
        Limits {
            frames: Some(200),
            duration: None,
        },
        None,
    );
    let s = &report.final_stats;
    assert!(report.drained);
    assert_eq!(s.captured, 200);
    assert!(
        s.dropped > 0,
        "a 20 ms analyser cannot keep up with 400 fps: {s:?}"
    );
    assert_eq!(s.captured, s.analysed + s.dropped, "{s:?}");
    assert_eq!(
        sealed, s.analysed,
        "every analysed frame reached the seal stage"
    );
    assert!(sink
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Stats(_))));
}

#[test]
fn shutdown_drains_every_stage() {
    let (report, sealed, _) = run(
        Box::new(Synthetic::new(64, 48, 200.0)),
        Box::new(SlowAnalyzer(Duration::from_millis(5))),
        Limits::default(),
        Some(Duration::from_millis(400)),
    );
    let s = &report.final_stats;
    assert!(report.drained, "stages drained within the timeout");
    assert!(s.captured > 0);
    assert_eq!(s.captured, s.analysed + s.dropped, "{s:?}");
    assert_eq!(sealed, s.analysed);
}

#[test]
fn corrupt_frames_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), SAMPLE).unwrap();
    std::fs::write(dir.path().join("b.jpg"), b"garbage").unwrap();
    let (report, _, sink) = run(
        Box::new(Replay::open(dir.path(), 200.0, true).unwrap()),
        Box::new(DecodeOnly),
        Limits {
            frames: Some(5),
            duration: None,
        },
        None,
    );
    assert_eq!(report.final_stats.captured, 5);
    assert!(report.capture_error.is_none());
    let events = sink.0.lock().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Capture(CaptureEvent::SkippedCorrupt { .. })))
            .count(),
        1
    );
}

// ---- the binary ----

#[test]
fn sigterm_exits_zero_with_consistent_final_stats() {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = common::veriframe();
    cmd.args(["run", "--data-dir"]).arg(data.path());
    let mut child = common::spawn(cmd);
    std::thread::sleep(Duration::from_millis(2500));
    common::signal(&child, libc::SIGTERM);
    let (status, took) = common::wait_timeout(&mut child, Duration::from_secs(10)).expect("exited");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let line = err
        .lines()
        .find(|l| l.contains("final:"))
        .unwrap_or_else(|| panic!("no final line:\n{err}"));
    let (c, a, d) = (
        common::stat(line, "captured").unwrap(),
        common::stat(line, "analysed").unwrap(),
        common::stat(line, "dropped").unwrap(),
    );
    assert!(c > 5, "{line}");
    assert_eq!(c, a + d, "{line}");
}

#[test]
fn bounded_run_and_exit_codes() {
    let data = tempfile::tempdir().unwrap();
    let out = common::veriframe()
        .args([
            "run",
            "--source",
            "synthetic",
            "--frames",
            "15",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let last: serde_json::Value = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("final:"))
        })
        .expect("final stats as JSON");
    assert!(last["fields"]["message"]
        .as_str()
        .unwrap()
        .contains("captured=15"));

    let bad = data.path().join("bad.toml");
    std::fs::write(&bad, "[pipeline]\nqueue_capacity = 0\n").unwrap();
    let out = common::veriframe()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    common::assert_error(&out, &["pipeline.queue_capacity", "bad.toml"]);

    assert_eq!(
        common::veriframe()
            .arg("--version")
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        common::veriframe()
            .args(["run", "--no-such-flag"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    let out = common::veriframe()
        .args(["run", "--source", "/nonexistent/dir"])
        .output()
        .unwrap();
    common::assert_error(&out, &["/nonexistent/dir"]);
}

/// `veriframe faces`: the runtime detector's boxes as a training box cache. Keys are relative to
/// --root; a face image gets a plausible box inside the frame, a face-less one `null`, and an
/// unreadable file is reported and left out (exit 0).
#[test]
fn faces_prints_a_box_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    for f in ["astronaut_00.jpg", "coffee_noface.jpg"] {
        std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8 not a jpeg").unwrap();
    let out = common::veriframe()
        .args(["faces", "--root"])
        .arg(dir.path())
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(m.len(), 2, "{v}");
    assert!(m["coffee_noface.jpg"].is_null(), "{v}");
    let b: Vec<i64> = m["astronaut_00.jpg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let img = image::open(root.join("astronaut_00.jpg")).unwrap();
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    assert!(b[2] > 20 && b[3] > 20, "{b:?}");
    assert!(
        b[0] >= -b[2] / 4 && b[0] + b[2] <= w + b[2] / 4,
        "{b:?} in {w}x{h}"
    );
    assert!(
        b[1] >= -b[3] / 4 && b[1] + b[3] <= h + b[3] / 4,
        "{b:?} in {w}x{h}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.jpg"),
        "{out:?}"
    );
}

/// `veriframe bench --json`: the schema (every stage with median ≤ p99, fps, load time,
/// RSS) plus each shipped network timed alone under its model name; a bad config is exit 2.
#[test]
fn bench_json_reports_stages_and_networks() {
    let out = common::veriframe()
        .args(["bench", "--threads", "1", "--iters", "2", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["threads"], 1, "{v}");
    assert_eq!(v["quant"], "q8_0", "{v}");
    for k in ["decode", "detect", "crop", "pad", "total"] {
        let s = &v["stages"][k];
        let (m, p) = (s["median_ms"].as_f64(), s["p99_ms"].as_f64());
        assert!(
            matches!((m, p), (Some(m), Some(p)) if m > 0.0 && p >= m),
            "{k}: {v}"
        );
    }
    for k in ["fps", "model_load_ms", "peak_rss_mb"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    let nets = v["networks"].as_object().expect("networks");
    // The shipped default: BlazeFace plus the MiniFASNetV2 + V1SE pair.
    assert_eq!(nets.len(), 3, "{v}");
    for k in [
        "blazeface_short_range",
        "minifasnet_v2/q8_0",
        "minifasnet_v1se/q8_0",
    ] {
        assert!(nets.contains_key(k), "{k}: {v}");
    }
    assert!(
        nets.values().all(|s| s["median_ms"].as_f64().is_some()),
        "{v}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[detect]\nthreads = 0\n").unwrap();
    let out = common::veriframe()
        .args(["bench", "--iters", "1", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Fails on every frame whose seq is in `failing`, decodes the others.
struct FailingAnalyzer(std::ops::Range<u64>);
impl Analyzer for FailingAnalyzer {
    fn analyze(&mut self, frame: &veriframe::frame::Frame) -> Result<Analysis, DetectError> {
        if self.0.contains(&frame.seq) {
            return Err(DetectError::Model(format!("boom on {}", frame.seq)));
        }
        DecodeOnly.analyze(frame)
    }
    fn models(&self) -> Vec<ModelId> {
        Vec::new()
    }
}

#[test]
fn detector_errors_raise_one_alert_per_episode() {
    // Frames 3..6 and 10..12 fail: two episodes, two `detector_error` alerts.
    struct TwoEpisodes(FailingAnalyzer, FailingAnalyzer);
    impl Analyzer for TwoEpisodes {
        fn analyze(&mut self, f: &veriframe::frame::Frame) -> Result<Analysis, DetectError> {
            self.0.analyze(f).and_then(|_| self.1.analyze(f))
        }
        fn models(&self) -> Vec<ModelId> {
            Vec::new()
        }
    }
    let (report, _, sink) = run(
        Box::new(Synthetic::new(64, 48, 20.0)),
        Box::new(TwoEpisodes(FailingAnalyzer(3..6), FailingAnalyzer(10..12))),
        Limits {
            frames: Some(16),
            duration: None,
        },
        None,
    );
    let s = &report.final_stats;
    assert_eq!(s.dropped, 0, "20 fps into a decode-only analyser: {s:?}");
    assert_eq!(s.analysis_errors, 5);
    let alerts: Vec<(u64, String)> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Alert(a) if a.kind == "detector_error" => Some((a.first_seq, a.detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [
            (3, "model error: boom on 3".to_string()),
            (10, "model error: boom on 10".to_string())
        ]
    );
}
