//! Pipeline counters and per-stage latency windows, snapshotted at an interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Pipeline stages whose latency is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Capture to the analyser picking the frame up (queue wait).
    Queue,
    Analyze,
    Seal,
    /// Capture to sealed.
    EndToEnd,
}

const STAGES: usize = 4;
const WINDOW: usize = 2048;

/// Latency samples (ms) of the current interval, bounded.
#[derive(Debug, Default)]
struct Window {
    samples: Vec<f32>,
}

impl Window {
    fn push(&mut self, ms: f32) {
        if self.samples.len() < WINDOW {
            self.samples.push(ms);
        } else {
            // Keep a bounded, roughly uniform sample: overwrite a pseudo-random slot.
            let i = (ms.to_bits() as usize ^ self.samples.len().wrapping_mul(2654435761)) % WINDOW;
            self.samples[i] = ms;
        }
    }
}

/// Median and 99th percentile of a set of samples (nearest-rank).
pub fn percentiles(samples: &mut [f32]) -> Option<(f32, f32)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let r = (p * samples.len() as f64).ceil() as usize;
        samples[r.clamp(1, samples.len()) - 1]
    };
    Some((rank(0.50), rank(0.99)))
}

/// Shared counters, updated lock-free by the stages.
#[derive(Debug)]
pub struct Stats {
    pub captured: AtomicU64,
    pub analysed: AtomicU64,
    /// Dropped because the analyser lagged (drop-oldest).
    pub dropped: AtomicU64,
    pub analysis_errors: AtomicU64,
    pub sealed: AtomicU64,
    /// Not sealed because the seal stage lagged or failed (e.g. disk full).
    pub seal_dropped: AtomicU64,
    pub seal_errors: AtomicU64,
    started: Instant,
    windows: [Mutex<Window>; STAGES],
    last: Mutex<(Instant, u64)>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// A point-in-time copy of [`Stats`], for logs and the publish stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub uptime_s: f64,
    pub captured: u64,
    pub analysed: u64,
    pub dropped: u64,
    pub analysis_errors: u64,
    pub sealed: u64,
    pub seal_dropped: u64,
    pub seal_errors: u64,
    /// Frames captured per second over the last interval.
    pub fps: f64,
    pub latency_ms: Vec<StageLatency>,
    pub rss_mb: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageLatency {
    pub stage: &'static str,
    pub p50: f32,
    pub p99: f32,
    pub n: usize,
}

impl StatsSnapshot {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let lat: Vec<String> = self
            .latency_ms
            .iter()
            .map(|l| format!("{} p50={:.1}ms p99={:.1}ms", l.stage, l.p50, l.p99))
            .collect();
        format!(
            "captured={} analysed={} dropped={} errors={} sealed={} seal_dropped={} fps={:.1} rss={:.1}MB {}",
            self.captured,
            self.analysed,
            self.dropped,
            self.analysis_errors,
            self.sealed,
            self.seal_dropped,
            self.fps,
            self.rss_mb,
            lat.join(" ")
        )
    }
}

fn stage_name(i: usize) -> &'static str {
    ["queue", "analyze", "seal", "end_to_end"][i]
}

impl Stats {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            captured: AtomicU64::new(0),
            analysed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            analysis_errors: AtomicU64::new(0),
            sealed: AtomicU64::new(0),
            seal_dropped: AtomicU64::new(0),
            seal_errors: AtomicU64::new(0),
            started: now,
            windows: Default::default(),
            last: Mutex::new((now, 0)),
        }
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record(&self, stage: Stage, d: Duration) {
        let i = stage as usize;
        self.windows[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d.as_secs_f32() * 1000.0);
    }

    /// Take a snapshot; latency windows restart for the next interval.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let captured = get(&self.captured);
        let now = Instant::now();
        let fps = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let dt = now.duration_since(last.0).as_secs_f64();
            let fps = if dt > 0.0 {
                (captured - last.1) as f64 / dt
            } else {
                0.0
            };
            *last = (now, captured);
            fps
        };
        let latency_ms = (0..STAGES)
            .filter_map(|i| {
                let mut w = self.windows[i].lock().unwrap_or_else(|e| e.into_inner());
                let n = w.samples.len();
                let r = percentiles(&mut w.samples).map(|(p50, p99)| StageLatency {
                    stage: stage_name(i),
                    p50,
                    p99,
                    n,
                });
                w.samples.clear();
                r
            })
            .collect();
        StatsSnapshot {
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            captured,
            analysed: get(&self.analysed),
            dropped: get(&self.dropped),
            analysis_errors: get(&self.analysis_errors),
            sealed: get(&self.sealed),
            seal_dropped: get(&self.seal_dropped),
            seal_errors: get(&self.seal_errors),
            fps,
            latency_ms,
            rss_mb: rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
        }
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}

/// Peak resident set size (VmHWM) of this process.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let mut v: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        assert_eq!(percentiles(&mut v), Some((50.0, 99.0)));
        assert_eq!(percentiles(&mut []), None);
        assert_eq!(percentiles(&mut [7.0]), Some((7.0, 7.0)));
    }

    #[test]
    fn snapshot_counts() {
        let s = Stats::new();
        Stats::inc(&s.captured);
        Stats::inc(&s.captured);
        s.record(Stage::Analyze, Duration::from_millis(5));
        let snap = s.snapshot();
        assert_eq!(snap.captured, 2);
        assert_eq!(snap.latency_ms.len(), 1);
        assert_eq!(snap.latency_ms[0].stage, "analyze");
        assert!(snap.rss_mb > 0.0);
        assert!(s.snapshot().latency_ms.is_empty());
    }
}
