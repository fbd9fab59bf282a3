//! A full disk never stops capture or detection, and raises one `storage_full` alert per episode.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use veriframe::capture::{self, SourceConfig};
use veriframe::config::Config;
use veriframe::daemon::{run_pipeline, Components, Limits};
use veriframe::detect::DecodeOnly;
use veriframe::device::NoDevice;
use veriframe::publish::{Event, EventSink};
use veriframe::seal::{SealError, SealInput, Sealed, Sealer};
use veriframe::shutdown::Shutdown;

/// Fails with StorageFull on frames 3..=7 and 12..=13, stores the rest.
struct FlakyDisk;

impl Sealer for FlakyDisk {
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        let s = input.frame.seq;
        if (3..=7).contains(&s) || (12..=13).contains(&s) {
            return Err(SealError::StorageFull {
                path: PathBuf::from("/full/disk"),
            });
        }
        Ok(Some(Sealed {
            chain_seq: s,
            frame_seq: s,
            manifest_sha256: String::new(),
            image_sha256: String::new(),
            path: PathBuf::new(),
        }))
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

#[test]
fn storage_full_alerts_once_per_episode_and_capture_goes_on() {
    let mut cfg = Config {
        source: SourceConfig {
            uri: "synthetic".into(),
            fps: 200.0,
            width: 64,
            height: 48,
            ..SourceConfig::default()
        },
        ..Config::default()
    };
    // Large queues so no frame is dropped on a slow machine.
    cfg.pipeline.queue_capacity = 64;
    cfg.pipeline.seal_queue_capacity = 64;
    let sink = Arc::new(Recorder::default());
    let parts = Components {
        source: capture::open(&cfg.source).unwrap(),
        guard: veriframe::camera::SourceGuard::exempt(),
        analyzer: Box::new(DecodeOnly),
        sealer: Box::new(FlakyDisk),
        sink: sink.clone(),
        actuator: Box::new(NoDevice),
        challenge: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limits = Limits {
        frames: Some(20),
        duration: None,
    };
    let report = rt
        .block_on(run_pipeline(&cfg, parts, limits, Shutdown::new()))
        .unwrap();
    let stats = &report.final_stats;
    assert_eq!(stats.captured, 20, "{stats:?}");
    assert_eq!(stats.dropped + stats.analysed, 20);
    let events = sink.0.lock().unwrap();
    let alerts: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Alert(a) if a.kind == "storage_full" => Some(a.first_seq),
            _ => None,
        })
        .collect();
    if stats.dropped == 0 && stats.seal_dropped == 0 {
        // Two episodes: frames 3..=7 and 12..=13.
        assert_eq!(alerts, vec![3, 12], "{alerts:?}");
        assert_eq!(stats.seal_errors, 7);
        assert_eq!(stats.sealed, 13);
    } else {
        // A very slow machine dropped frames; still at most one alert per episode.
        assert!(!alerts.is_empty() && alerts.len() <= 2, "{alerts:?}");
    }
}
