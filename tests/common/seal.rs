//! Helpers shared by the seal integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use veriframe::decide::{Decision, Verdict};
use veriframe::frame::{monotonic_now, Frame, PixelFormat, SourceInfo};
use veriframe::seal::keys::DeviceKey;
use veriframe::seal::policy::PolicyKind;
use veriframe::seal::{ChainSealer, SealConfig, SealInput, Sealer};

pub fn config() -> SealConfig {
    SealConfig {
        policy: PolicyKind::Every,
        fsync: false,
        retention_max_age: None,
        retention_max_mb: 0,
        ..SealConfig::default()
    }
}

/// A small frame: JPEG for even `n`, raw RGB24 (stored as PNG) for odd `n`.
pub fn frame(n: u64, wall: SystemTime) -> Frame {
    let (w, h) = (64u32, 48u32);
    let (format, bytes) = if n.is_multiple_of(2) {
        (
            PixelFormat::Jpeg,
            veriframe::capture::synthetic::Synthetic::jpeg(w, h, n).unwrap(),
        )
    } else {
        (
            PixelFormat::Rgb24,
            veriframe::capture::synthetic::Synthetic::render(w, h, n),
        )
    };
    Frame {
        seq: n,
        device_seq: None,
        captured_wall: wall,
        captured_mono: monotonic_now(),
        source: Arc::new(SourceInfo {
            kind: "test".into(),
            path: "test".into(),
            driver: "test".into(),
            card: "test pattern".into(),
            bus: String::new(),
            format,
            width: w,
            height: h,
            fps: 10.0,
        }),
        format,
        width: w,
        height: h,
        bytes: bytes.into(),
        origin: None,
        decoded: Default::default(),
    }
}

/// Seal `n` frames into `data_dir` with `key`; returns the chain directory.
pub fn seal_frames(
    data_dir: &Path,
    key: Arc<DeviceKey>,
    cfg: &SealConfig,
    range: std::ops::Range<u64>,
    age: Duration,
) -> PathBuf {
    let mut s = ChainSealer::with_key(cfg, key, data_dir, "test-device").unwrap();
    let decision = Decision {
        verdict: Verdict::Authentic,
        actions: Vec::new(),
    };
    for i in range {
        let f = frame(i, SystemTime::now() - age);
        let out = s
            .seal(&SealInput::unanalysed(
                &f,
                &decision,
                &veriframe::frame::identity::SourceIdentity::not_a_camera(),
            ))
            .unwrap();
        assert!(out.is_some());
    }
    s.store().dir().to_path_buf()
}

pub fn new_key() -> Arc<DeviceKey> {
    Arc::new(DeviceKey::generate().unwrap().0)
}

pub fn stem(seq: u64) -> String {
    format!("{seq:012}")
}

/// The image file of capture `seq` in `dir`.
pub fn image_of(dir: &Path, seq: u64) -> PathBuf {
    for ext in ["jpg", "png"] {
        let p = dir.join(format!("{}.{ext}", stem(seq)));
        if p.exists() {
            return p;
        }
    }
    panic!("no image for seq {seq} in {}", dir.display());
}

/// Copy a directory tree (flat files and subdirectories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

pub fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}
