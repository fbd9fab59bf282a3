//! Camera trust through the real pipeline: a scripted camera at the V4L2 buffer seam
//! (`frame_from_buffer` with scripted buffers and metadata), camera identities from fixtures at
//! the `CameraInfoSource` seam, the real `ChainSealer` and pin store in a temp dir.
//!
//! * the pinned camera replaced by another → `camera_changed`, nothing sealed as authentic until
//!   the operator re-pins;
//! * a camera whose frames repeat byte for byte → `stream_anomaly`, frames after it not sealed as
//!   authentic;
//! * a virtual driver (vivid) → `injection_suspected` by default, a normal run with
//!   `allow_virtual`;
//! * a replay source (whose looped frames repeat byte for byte) is exempt and says so.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use v4l::buffer::{Flags, Metadata};
use v4l::timestamp::Timestamp;
use veriframe::alert::AlertRequest;
use veriframe::alert::ModelId;
use veriframe::camera::fingerprint::{fixtures, CameraIdentity, FixtureInfo};
use veriframe::camera::pin::PinStore;
use veriframe::camera::{GuardConfig, SourceGuard};
use veriframe::capture::v4l2::frame_from_buffer;
use veriframe::capture::{Capture, CaptureError, FrameSource};
use veriframe::config::Config;
use veriframe::daemon::{run_pipeline, Components, Limits};
use veriframe::detect::{Analysis, Analyzer, DetectError, Face};
use veriframe::device::NoDevice;
use veriframe::frame::{PixelFormat, SourceInfo};
use veriframe::publish::{Event, EventSink};
use veriframe::seal::keys::DeviceKey;
use veriframe::seal::manifest::Manifest;
use veriframe::seal::policy::PolicyKind;
use veriframe::seal::{ChainSealer, SealConfig};
use veriframe::shutdown::Shutdown;

const W: u32 = 64;
const H: u32 = 48;
const FPS: f64 = 25.0;

/// A camera at the V4L2 seam: each `next` builds a frame from a scripted buffer with
/// `frame_from_buffer`, as the real source does after VIDIOC_DQBUF.
struct ScriptedCamera {
    info: Arc<SourceInfo>,
    n: u32,
    /// Frame `i`'s YUYV bytes.
    script: fn(u32) -> Vec<u8>,
}

impl ScriptedCamera {
    fn new(script: fn(u32) -> Vec<u8>) -> Self {
        Self {
            info: Arc::new(SourceInfo {
                kind: "v4l2".into(),
                path: "/dev/video0".into(),
                driver: "uvcvideo".into(),
                card: "scripted".into(),
                bus: "usb-test".into(),
                format: PixelFormat::Yuyv,
                width: W,
                height: H,
                fps: FPS,
            }),
            n: 0,
            script,
        }
    }
}

/// A live-looking frame: a gradient that moves and a little per-frame noise.
fn live(i: u32) -> Vec<u8> {
    (0..W * H * 2)
        .map(|k| {
            if k % 2 == 0 {
                (60 + (k / 2 + i * 3) % 64 + (k.wrapping_mul(2654435761).wrapping_add(i) >> 29))
                    as u8
            } else {
                128
            }
        })
        .collect()
}

/// Live for 20 frames, then the same bytes forever (a frozen feed).
fn frozen_after_20(i: u32) -> Vec<u8> {
    live(i.min(20))
}

impl FrameSource for ScriptedCamera {
    fn info(&self) -> Arc<SourceInfo> {
        self.info.clone()
    }

    fn next(&mut self, _shutdown: &Shutdown) -> Result<Capture, CaptureError> {
        let i = self.n;
        self.n += 1;
        let buf = (self.script)(i);
        let us = 1_000_000u64 + u64::from(i) * 40_000; // 25 fps in driver time
        let meta = Metadata {
            bytesused: buf.len() as u32,
            flags: Flags::TIMESTAMP_MONOTONIC,
            field: 0,
            timestamp: Timestamp {
                sec: (us / 1_000_000) as libc::time_t,
                usec: (us % 1_000_000) as libc::time_t,
            },
            sequence: i,
        };
        // Pace a little so the analyser keeps up and nothing is dropped.
        std::thread::sleep(Duration::from_millis(2));
        frame_from_buffer(&buf, &meta, &self.info, Duration::from_micros(us)).map(Capture::Frame)
    }
}

/// One live face, every frame (verdict `authentic` unless the source is untrusted).
struct LiveFace;

impl Analyzer for LiveFace {
    fn analyze(&mut self, f: &veriframe::frame::Frame) -> Result<Analysis, DetectError> {
        Ok(Analysis {
            seq: f.seq,
            width: f.width,
            height: f.height,
            faces: vec![Face {
                bbox: [10.0, 10.0, 20.0, 20.0],
                score: 0.99,
                landmarks: Vec::new(),
                live_score: Some(0.95),
                deepfake_score: None,
            }],
            models: self.models(),
        })
    }

    fn models(&self) -> Vec<ModelId> {
        vec![ModelId {
            name: "test-pad".into(),
            weights_sha256: "00".repeat(32),
        }]
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<AlertRequest>>);

impl EventSink for Collect {
    fn send(&self, e: Event) {
        if let Event::Alert(a) = e {
            self.0.lock().unwrap().push(a);
        }
    }
}

fn seal_cfg() -> SealConfig {
    SealConfig {
        policy: PolicyKind::Authentic,
        max_per_second: 1000.0,
        fsync: false,
        retention_max_age: None,
        retention_max_mb: 0,
        ..SealConfig::default()
    }
}

struct Rig {
    dir: tempfile::TempDir,
    key: Arc<DeviceKey>,
}

impl Rig {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            key: Arc::new(DeviceKey::generate().unwrap().0),
        }
    }

    fn pins(&self) -> PinStore {
        PinStore::new(self.dir.path(), self.key.clone(), "booth-1", false)
    }

    /// Run `frames` frames from `source` with the camera seen as `camera`.
    fn run(
        &self,
        source: Box<dyn FrameSource>,
        camera: CameraIdentity,
        guard_cfg: GuardConfig,
        frames: u64,
    ) -> Vec<AlertRequest> {
        let mut cfg = Config::default();
        cfg.pipeline.queue_capacity = 256;
        cfg.pipeline.seal_queue_capacity = 256;
        cfg.pipeline.shutdown_timeout = Duration::from_secs(30);
        let sealer =
            ChainSealer::with_key(&seal_cfg(), self.key.clone(), self.dir.path(), "booth-1")
                .unwrap();
        let sink = Arc::new(Collect::default());
        let parts = Components {
            source,
            guard: SourceGuard::new(
                guard_cfg,
                Box::new(FixtureInfo::new(vec![camera])),
                Some(self.pins()),
            ),
            analyzer: Box::new(LiveFace),
            sealer: Box::new(sealer),
            sink: sink.clone(),
            actuator: Box::new(NoDevice),
            challenge: None,
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let limits = Limits {
            frames: Some(frames),
            duration: None,
        };
        let report = rt
            .block_on(run_pipeline(&cfg, parts, limits, Shutdown::new()))
            .unwrap();
        assert!(report.drained);
        assert_eq!(
            report.final_stats.dropped, 0,
            "test needs every frame analysed"
        );
        let v = sink.0.lock().unwrap().clone();
        v
    }

    /// Every manifest so far, in chain order.
    fn manifests(&self) -> Vec<Manifest> {
        let caps = self.dir.path().join("captures");
        let chain: PathBuf = std::fs::read_dir(&caps)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&chain)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_name().is_some_and(|n| n != "chain.json")
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| Manifest::parse(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    fn verify(&self) {
        let reports = veriframe::seal::verify::verify_paths(
            &[self.dir.path().to_path_buf()],
            Some(&self.key.public()),
        )
        .unwrap();
        assert!(reports.iter().all(|r| r.valid()), "{reports:#?}");
    }
}

fn kinds(alerts: &[AlertRequest]) -> Vec<&str> {
    alerts.iter().map(|a| a.kind.as_str()).collect()
}

fn authentic(ms: &[Manifest]) -> usize {
    ms.iter()
        .filter(|m| m.policy == "authentic" || m.analysis.verdict == "authentic")
        .count()
}

#[test]
fn replaced_camera_raises_camera_changed_until_repinned() {
    let rig = Rig::new();
    let a = fixtures::uvc_webcam("SERIAL-A");
    let b = fixtures::uvc_webcam("SERIAL-B");
    // First use pins camera A; its frames are sealed as authentic.
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        a.clone(),
        GuardConfig::default(),
        10,
    );
    assert!(alerts.is_empty(), "{alerts:?}");
    let ms = rig.manifests();
    assert_eq!(ms.len(), 10);
    assert!(ms
        .iter()
        .all(|m| m.analysis.verdict == "authentic" && m.policy == "authentic"));
    let fp = ms[0].fingerprint.as_ref().unwrap();
    assert!(fp.camera);
    assert_eq!(fp.pin, "first_use");
    assert_eq!(fp.sha256.as_deref(), Some(a.sha256().as_str()));
    assert_eq!(ms[0].format, "veriframe.capture/2");
    assert_eq!(
        rig.pins().load().unwrap().unwrap().0.fingerprint.sha256,
        a.sha256()
    );

    // Camera B replaces it: one critical camera_changed, every frame untrusted_source.
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        b.clone(),
        GuardConfig::default(),
        10,
    );
    assert_eq!(kinds(&alerts), vec!["camera_changed"]);
    let al = &alerts[0];
    assert_eq!(al.severity, "critical");
    assert!(
        al.detail
            .contains("usb.serial: \"SERIAL-A\" -> \"SERIAL-B\""),
        "{}",
        al.detail
    );
    assert!(
        al.evidence.is_some(),
        "the alert frame is sealed as evidence"
    );
    let new: Vec<Manifest> = rig.manifests().into_iter().skip(10).collect();
    assert!(!new.is_empty());
    assert_eq!(authentic(&new), 0, "{new:#?}");
    assert!(new.iter().all(|m| m.analysis.verdict == "untrusted_source"));
    assert_eq!(new[0].policy, "evidence");
    assert_eq!(new[0].analysis.alerts, vec!["camera_changed".to_string()]);
    assert_eq!(new[0].fingerprint.as_ref().unwrap().pin, "changed");
    // Still B after a restart: still untrusted (the pin did not move).
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        b.clone(),
        GuardConfig::default(),
        5,
    );
    assert_eq!(kinds(&alerts), vec!["camera_changed"]);
    let before = rig.manifests().len();

    // The operator re-pins B: authentic sealing resumes, no alert.
    let r = veriframe::camera::pin::repin(
        &rig.pins(),
        &mut FixtureInfo::new(vec![b.clone()]),
        Path::new("/dev/video0"),
    )
    .unwrap();
    assert_eq!(r.previous.as_deref(), Some(a.sha256().as_str()));
    assert_eq!(r.record.reason, "operator");
    assert!(
        r.record.prev.is_some(),
        "the pin record links to the one it replaced"
    );
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        b.clone(),
        GuardConfig::default(),
        10,
    );
    assert!(alerts.is_empty(), "{alerts:?}");
    let new: Vec<Manifest> = rig.manifests().into_iter().skip(before).collect();
    assert_eq!(new.len(), 10);
    assert!(new
        .iter()
        .all(|m| m.analysis.verdict == "authentic"
            && m.fingerprint.as_ref().unwrap().pin == "pinned"));
    rig.verify();
}

#[test]
fn frames_repeating_byte_for_byte_raise_stream_anomaly() {
    let rig = Rig::new();
    let a = fixtures::uvc_webcam("SERIAL-A");
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(frozen_after_20)),
        a,
        GuardConfig::default(),
        60,
    );
    assert_eq!(kinds(&alerts), vec!["stream_anomaly"], "{alerts:?}");
    let al = &alerts[0];
    assert_eq!(al.severity, "warning");
    // Frame 21 is the first repeat; the 10th anomalous frame (default min_anomalous) is 30.
    assert_eq!(al.first_seq, 30);
    assert!(
        al.detail.starts_with("10/30 frames anomalous (repeat 10)"),
        "{}",
        al.detail
    );
    assert!((al.score.unwrap() - 10.0 / 30.0).abs() < 1e-4);
    let ms = rig.manifests();
    let by_frame = |s: u64| ms.iter().find(|m| m.captured.frame_seq == s);
    // Before the anomaly became sustained: authentic; from it on: never authentic.
    assert_eq!(by_frame(5).unwrap().analysis.verdict, "authentic");
    assert_eq!(
        by_frame(30).unwrap().analysis.alerts,
        vec!["stream_anomaly".to_string()]
    );
    assert!(ms
        .iter()
        .filter(|m| m.captured.frame_seq >= 30)
        .all(|m| m.analysis.verdict == "untrusted_source" && m.policy != "authentic"));
    // The same scripted camera without repeats: no alert (the checks pass a live stream).
    let rig2 = Rig::new();
    let alerts = rig2.run(
        Box::new(ScriptedCamera::new(live)),
        fixtures::uvc_webcam("SERIAL-A"),
        GuardConfig::default(),
        60,
    );
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn virtual_camera_is_injection_unless_allowed() {
    let rig = Rig::new();
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        fixtures::vivid(),
        GuardConfig::default(),
        10,
    );
    assert_eq!(kinds(&alerts), vec!["injection_suspected"]);
    assert_eq!(alerts[0].severity, "critical");
    assert!(
        alerts[0].detail.contains("[driver:vivid]"),
        "{}",
        alerts[0].detail
    );
    let ms = rig.manifests();
    assert_eq!(authentic(&ms), 0);
    assert_eq!(ms.len(), 1, "only the alert frame, as evidence");
    let fp = ms[0].fingerprint.as_ref().unwrap();
    assert_eq!(fp.instruments, vec!["driver:vivid", "name:platform:vivid"]);
    assert_eq!(fp.pin, "unpinned");
    assert!(
        rig.pins().load().unwrap().is_none(),
        "an instrument is never pinned on first use"
    );

    let rig = Rig::new();
    let allow = GuardConfig {
        allow_virtual: true,
        ..GuardConfig::default()
    };
    let alerts = rig.run(
        Box::new(ScriptedCamera::new(live)),
        fixtures::vivid(),
        allow,
        10,
    );
    assert!(alerts.is_empty(), "{alerts:?}");
    let ms = rig.manifests();
    assert_eq!(ms.len(), 10);
    assert!(ms.iter().all(|m| m.analysis.verdict == "authentic"));
    let fp = ms[0].fingerprint.as_ref().unwrap();
    assert!(fp.allow_virtual);
    assert_eq!(fp.pin, "first_use");
}

#[test]
fn replay_is_not_a_camera_and_is_exempt() {
    let rig = Rig::new();
    // The six bundled samples, looped: frames 6.. repeat byte for byte.
    let src = veriframe::capture::replay::Replay::samples(500.0, true).unwrap();
    let alerts = rig.run(Box::new(src), fixtures::vivid(), GuardConfig::default(), 40);
    assert!(alerts.is_empty(), "{alerts:?}");
    let ms = rig.manifests();
    assert!(!ms.is_empty());
    for m in &ms {
        let fp = m.fingerprint.as_ref().unwrap();
        assert!(!fp.camera);
        assert_eq!(fp.pin, "not_a_camera");
        assert_eq!(fp.sha256, None);
        assert_ne!(m.analysis.verdict, "untrusted_source");
    }
    assert!(rig.pins().load().unwrap().is_none());
}

mod common;

/// False alarms of the stream checks on bona fide webcam frames: the NUAA "real" set (webcam
/// frames of live people, 640x480 JPEG, ../shared/data/nuaa/real), decoded to RGB24 and fed in
/// capture order per session at a nominal 10 fps, as if they came from a camera. The frames are
/// sampled from the original videos (larger changes between frames than a live stream), and the
/// timestamps are nominal (this measures the repeat, brightness and format checks, not timing).
#[test]
fn stream_checks_do_not_alarm_on_bona_fide_webcam_frames() {
    use veriframe::camera::integrity::{self, FrameMeta, IntegrityState};
    use veriframe::camera::settings::IntegrityConfig;
    let Some(root) = common::pad::require("data/nuaa/real") else {
        return;
    };
    let mut sessions: std::collections::BTreeMap<String, Vec<(u64, PathBuf)>> = Default::default();
    for subject in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(subject.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            let Some((session, frame)) = stem.rsplit_once('_') else {
                continue;
            };
            let Ok(n) = frame.parse::<u64>() else {
                continue;
            };
            sessions
                .entry(session.to_string())
                .or_default()
                .push((n, p));
        }
    }
    let nominal = Duration::from_millis(100);
    let (mut frames, mut anomalous, mut alerts, mut streams) = (0u64, 0u64, 0u64, 0u64);
    let mut max_jump = 0f32;
    let mut by_kind: std::collections::BTreeMap<&str, u64> = Default::default();
    for (_, mut files) in sessions {
        files.sort();
        streams += 1;
        let mut st = IntegrityState::new(IntegrityConfig::default(), nominal);
        for (i, (_, p)) in files.iter().enumerate() {
            let img = image::open(p).unwrap().to_rgb8();
            let meta = FrameMeta::measure(
                img.as_raw(),
                PixelFormat::Rgb24,
                img.width(),
                img.height(),
                Some(i as u64),
                Duration::from_secs(10) + nominal * i as u32,
            );
            let (next, step) = integrity::step(st, &meta);
            st = next;
            frames += 1;
            anomalous += u64::from(!step.anomalies.is_empty());
            for k in &step.anomalies {
                *by_kind.entry(k.name()).or_default() += 1;
            }
            alerts += step
                .actions
                .iter()
                .filter(|a| matches!(a, integrity::Action::Alert(_)))
                .count() as u64;
        }
        max_jump = max_jump.max(st.figures().max_brightness_jump);
    }
    println!(
        "bona fide webcam frames: {frames} frames in {streams} sessions, {anomalous} anomalous \
         frames ({by_kind:?}), {alerts} stream_anomaly alerts, largest brightness jump {max_jump:.1}"
    );
    assert!(frames > 500, "{frames}");
    assert_eq!(alerts, 0, "stream_anomaly on bona fide frames");
}
