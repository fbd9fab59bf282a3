//! Stream integrity: does a camera's stream behave like a sensor? A pure state machine over
//! per-frame metadata ([`FrameMeta`]); [`step`] returns what to do (boringtun style), the caller
//! does the I/O.
//!
//! Checks, per frame, against the previous frame of the same stream:
//!
//! | kind | anomaly when |
//! |---|---|
//! | `timestamp` | the driver's buffer timestamp does not increase |
//! | `interval` | the time since the previous frame, divided by the frames the driver counted in between, is below `(1 − interval_tolerance)` or above `max_interval_factor` times the negotiated interval |
//! | `sequence` | the driver's frame counter goes backwards or repeats (gaps are only counted: drivers drop frames under load) |
//! | `format` | pixel format, size, or the payload length of an uncompressed format changes mid-stream |
//! | `repeat` | the frame is byte-identical (64-bit hash) to one of the last `repeat_history` frames (a frozen or looped feed); flat frames (a covered lens) are exempt |
//! | `brightness` | mean luma jumps by more than `max_brightness_jump` (of 255) from one frame to the next |
//!
//! One odd frame never alarms. An anomaly is *sustained* when at least `min_anomalous` of the
//! last `window` frames had one (a `format` change counts as sustained at once); then
//! [`Action::Alert`] is returned once, and every frame is [`Step::untrusted`] until the window
//! holds no anomalous frame again ([`Action::Cleared`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::settings::IntegrityConfig;
use crate::frame::PixelFormat;

/// What the checks need to know about one frame (cheap to compute in the capture thread).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMeta {
    /// The driver's frame counter (V4L2 `sequence`).
    pub device_seq: Option<u64>,
    /// The driver's buffer timestamp (CLOCK_MONOTONIC).
    pub timestamp: Duration,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Payload length in bytes.
    pub len: usize,
    /// 64-bit hash of the payload.
    pub hash: u64,
    /// Mean luma 0–255 over a sample of pixels (uncompressed formats only).
    pub luma: Option<f32>,
    /// The frame is flat (sampled luma range < 2, or a JPEG too small to hold detail).
    pub flat: bool,
}

impl FrameMeta {
    /// Measure a frame's payload. Luma is sampled on a grid of at most ~4096 pixels.
    pub fn measure(
        bytes: &[u8],
        format: PixelFormat,
        width: u32,
        height: u32,
        device_seq: Option<u64>,
        timestamp: Duration,
    ) -> Self {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(bytes);
        let pixels = width as usize * height as usize;
        let bpp = match format {
            PixelFormat::Yuyv => 2,
            PixelFormat::Rgb24 => 3,
            PixelFormat::Jpeg | PixelFormat::Png => 0,
        };
        let (luma, flat) = if bpp > 0 && pixels > 0 && bytes.len() >= pixels * bpp {
            let step = (pixels / 4096).max(1);
            let (mut sum, mut n, mut lo, mut hi) = (0u64, 0u64, 255u8, 0u8);
            for p in (0..pixels).step_by(step) {
                let o = p * bpp;
                let y = match format {
                    // YUYV: Y0 U Y1 V — every even byte is a luma sample.
                    PixelFormat::Yuyv => bytes[o],
                    // BT.601 luma, integer approximation.
                    _ => {
                        ((77 * u32::from(bytes[o])
                            + 150 * u32::from(bytes[o + 1])
                            + 29 * u32::from(bytes[o + 2]))
                            >> 8) as u8
                    }
                };
                sum += u64::from(y);
                n += 1;
                lo = lo.min(y);
                hi = hi.max(y);
            }
            (
                Some(sum as f32 / n.max(1) as f32),
                hi.saturating_sub(lo) < 2,
            )
        } else {
            // Encoded: no luma without decoding. Under 1 byte per 200 pixels a JPEG/PNG is flat.
            (None, pixels > 0 && bytes.len() < pixels / 200)
        };
        Self {
            device_seq,
            timestamp,
            format,
            width,
            height,
            len: bytes.len(),
            hash: h.finish(),
            luma,
            flat,
        }
    }
}

/// Kinds of anomaly (stable names: they appear in alert details).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Timestamp,
    Interval,
    Sequence,
    Format,
    Repeat,
    Brightness,
}

impl AnomalyKind {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Timestamp => "timestamp",
            AnomalyKind::Interval => "interval",
            AnomalyKind::Sequence => "sequence",
            AnomalyKind::Format => "format",
            AnomalyKind::Repeat => "repeat",
            AnomalyKind::Brightness => "brightness",
        }
    }
}

/// Measured figures reported with an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Frames in the window and how many of them were anomalous (any kind).
    pub window: usize,
    pub anomalous: usize,
    /// Anomalous frames in the window per kind.
    pub by_kind: Vec<(AnomalyKind, usize)>,
    /// Interval of the last frame divided by the negotiated interval (per driver frame).
    pub last_interval_ratio: Option<f64>,
    /// Largest mean-luma jump in this stream.
    pub max_brightness_jump: f32,
    /// Frames the driver skipped (sequence gaps), this stream.
    pub seq_gaps: u64,
    /// Frames checked, this stream.
    pub frames: u64,
}

impl Figures {
    /// `12/30 frames anomalous (repeat 12); interval ratio 1.00; 0 driver frames skipped in 40`.
    pub fn detail(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        format!(
            "{}/{} frames anomalous ({}); last interval ratio {}; max brightness jump {:.0}; {} driver frames skipped in {}",
            self.anomalous,
            self.window,
            kinds.join(", "),
            self.last_interval_ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            self.max_brightness_jump,
            self.seq_gaps,
            self.frames
        )
    }

    /// Fraction of anomalous frames in the window (the alert's score).
    pub fn score(&self) -> f32 {
        if self.window == 0 {
            0.0
        } else {
            self.anomalous as f32 / self.window as f32
        }
    }
}

/// What the caller should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An anomaly became sustained: raise `stream_anomaly` (once per episode).
    Alert(Figures),
    /// The window is clean again: the episode is over (log it).
    Cleared(Figures),
}

/// Result for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Anomalies found on this frame.
    pub anomalies: Vec<AnomalyKind>,
    /// The stream is in a sustained anomaly: do not seal this frame as authentic.
    pub untrusted: bool,
    pub actions: Vec<Action>,
}

/// State of one stream's checks. A new stream (camera reopened) starts a new state.
#[derive(Debug, Clone)]
pub struct IntegrityState {
    pub cfg: IntegrityConfig,
    /// Negotiated frame interval.
    pub nominal: Duration,
    prev: Option<FrameMeta>,
    /// Anomalies of the last `window` frames.
    window: VecDeque<Vec<AnomalyKind>>,
    /// Hashes of the last `repeat_history` frames, with their multiplicity.
    history: VecDeque<u64>,
    seen: HashMap<u64, u32>,
    /// In a sustained anomaly (alerted).
    pub sustained: bool,
    pub frames: u64,
    pub seq_gaps: u64,
    last_ratio: Option<f64>,
    max_jump: f32,
}

impl IntegrityState {
    pub fn new(cfg: IntegrityConfig, nominal: Duration) -> Self {
        Self {
            cfg,
            nominal,
            prev: None,
            window: VecDeque::new(),
            history: VecDeque::new(),
            seen: HashMap::new(),
            sustained: false,
            frames: 0,
            seq_gaps: 0,
            last_ratio: None,
            max_jump: 0.0,
        }
    }

    /// The figures of the current window and stream.
    pub fn figures(&self) -> Figures {
        let mut by: Vec<(AnomalyKind, usize)> = Vec::new();
        for kinds in &self.window {
            for k in kinds {
                match by.iter_mut().find(|(x, _)| x == k) {
                    Some((_, n)) => *n += 1,
                    None => by.push((*k, 1)),
                }
            }
        }
        by.sort();
        Figures {
            window: self.window.len(),
            anomalous: self.window.iter().filter(|k| !k.is_empty()).count(),
            by_kind: by,
            last_interval_ratio: self.last_ratio,
            max_brightness_jump: self.max_jump,
            seq_gaps: self.seq_gaps,
            frames: self.frames,
        }
    }

    fn remember(&mut self, hash: u64) {
        if self.cfg.repeat_history == 0 {
            return;
        }
        self.history.push_back(hash);
        *self.seen.entry(hash).or_insert(0) += 1;
        while self.history.len() > self.cfg.repeat_history {
            if let Some(old) = self.history.pop_front() {
                if let Some(n) = self.seen.get_mut(&old) {
                    *n -= 1;
                    if *n == 0 {
                        self.seen.remove(&old);
                    }
                }
            }
        }
    }

    /// The per-frame checks (no window logic).
    fn check(&mut self, f: &FrameMeta) -> Vec<AnomalyKind> {
        let mut found = Vec::new();
        if let Some(p) = &self.prev {
            if f.timestamp <= p.timestamp {
                found.push(AnomalyKind::Timestamp);
            }
            let dseq = match (p.device_seq, f.device_seq) {
                (Some(a), Some(b)) if b > a => {
                    self.seq_gaps += b - a - 1;
                    Some(b - a)
                }
                (Some(_), Some(_)) => {
                    found.push(AnomalyKind::Sequence);
                    None
                }
                _ => Some(1),
            };
            if let (Some(n), false) = (dseq, self.nominal.is_zero() || f.timestamp <= p.timestamp) {
                let dt = (f.timestamp - p.timestamp).as_secs_f64();
                let ratio = dt / (self.nominal.as_secs_f64() * n as f64);
                self.last_ratio = Some(ratio);
                if ratio < 1.0 - self.cfg.interval_tolerance || ratio > self.cfg.max_interval_factor
                {
                    found.push(AnomalyKind::Interval);
                }
            }
            let raw = !f.format.is_encoded();
            if f.format != p.format
                || f.width != p.width
                || f.height != p.height
                || (raw && f.len != p.len)
            {
                found.push(AnomalyKind::Format);
            }
            if let (Some(a), Some(b)) = (p.luma, f.luma) {
                let jump = (b - a).abs();
                self.max_jump = self.max_jump.max(jump);
                if jump > self.cfg.max_brightness_jump {
                    found.push(AnomalyKind::Brightness);
                }
            }
        }
        if !f.flat && self.seen.contains_key(&f.hash) {
            found.push(AnomalyKind::Repeat);
        }
        self.remember(f.hash);
        found
    }
}

/// Pure step: (state, this frame's metadata) → (state, what to do).
pub fn step(mut st: IntegrityState, f: &FrameMeta) -> (IntegrityState, Step) {
    st.frames += 1;
    if !st.cfg.enabled {
        st.prev = Some(f.clone());
        return (
            st,
            Step {
                anomalies: Vec::new(),
                untrusted: false,
                actions: Vec::new(),
            },
        );
    }
    let found = st.check(f);
    st.prev = Some(f.clone());
    let immediate = found.contains(&AnomalyKind::Format);
    st.window.push_back(found.clone());
    while st.window.len() > st.cfg.window {
        st.window.pop_front();
    }
    let anomalous = st.window.iter().filter(|k| !k.is_empty()).count();
    let mut actions = Vec::new();
    if !st.sustained && (anomalous >= st.cfg.min_anomalous || immediate) {
        st.sustained = true;
        actions.push(Action::Alert(st.figures()));
    } else if st.sustained && anomalous == 0 {
        st.sustained = false;
        actions.push(Action::Cleared(st.figures()));
    }
    let untrusted = st.sustained;
    (
        st,
        Step {
            anomalies: found,
            untrusted,
            actions,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOMINAL: Duration = Duration::from_micros(33_333);

    /// A well-behaved 30 fps YUYV stream: frame `i` has seq `i`, a distinct hash, mid-grey luma.
    fn good(i: u64) -> FrameMeta {
        FrameMeta {
            device_seq: Some(i),
            timestamp: Duration::from_secs(100) + NOMINAL * i as u32,
            format: PixelFormat::Yuyv,
            width: 640,
            height: 480,
            len: 640 * 480 * 2,
            hash: 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1),
            luma: Some(120.0 + (i % 5) as f32),
            flat: false,
        }
    }

    fn run(cfg: IntegrityConfig, frames: &[FrameMeta]) -> (IntegrityState, Vec<Step>) {
        let mut st = IntegrityState::new(cfg, NOMINAL);
        let steps = frames
            .iter()
            .map(|f| {
                let (s, out) = step(st.clone(), f);
                st = s;
                out
            })
            .collect();
        (st, steps)
    }

    fn alerts(steps: &[Step]) -> Vec<usize> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.actions.iter().any(|a| matches!(a, Action::Alert(_))))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_clean_stream_never_alarms() {
        let frames: Vec<_> = (0..1000).map(good).collect();
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        assert!(steps.iter().all(|s| s.anomalies.is_empty() && !s.untrusted));
        assert_eq!(st.frames, 1000);
        assert_eq!(st.seq_gaps, 0);
    }

    #[test]
    fn jitter_and_dropped_frames_are_not_anomalies() {
        // ±30% jitter and the driver dropping every 7th frame (a gap, time advances with it).
        let frames: Vec<_> = (0..300)
            .filter(|i| i % 7 != 3)
            .map(|i| {
                let mut f = good(i);
                let jitter = if i % 2 == 0 { 10_000 } else { 0 };
                f.timestamp =
                    Duration::from_secs(100) + NOMINAL * i as u32 - Duration::from_micros(jitter);
                f
            })
            .collect();
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        assert!(alerts(&steps).is_empty());
        assert!(steps.iter().all(|s| s.anomalies.is_empty()), "{steps:?}");
        assert_eq!(st.seq_gaps, 43);
    }

    #[test]
    fn frozen_feed_alerts_once_after_min_anomalous_frames() {
        // 50 good frames, then the same bytes over and over (timestamps still advancing).
        let mut frames: Vec<_> = (0..50).map(good).collect();
        for i in 50..150 {
            let mut f = good(i);
            f.hash = 42;
            frames.push(f);
        }
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        // First repeat at frame 51; the 10th anomalous frame is frame 60.
        assert_eq!(steps[50].anomalies, vec![]);
        assert_eq!(steps[51].anomalies, vec![AnomalyKind::Repeat]);
        assert_eq!(alerts(&steps), vec![60]);
        assert!(!steps[59].untrusted);
        assert!(steps[60..].iter().all(|s| s.untrusted));
        assert!(st.sustained);
        let Some(Action::Alert(fig)) = steps[60].actions.first() else {
            panic!("{:?}", steps[60]);
        };
        assert_eq!(fig.anomalous, 10);
        assert_eq!(fig.by_kind, vec![(AnomalyKind::Repeat, 10)]);
        assert!((fig.score() - 10.0 / 30.0).abs() < 1e-6);
        assert!(
            fig.detail()
                .starts_with("10/30 frames anomalous (repeat 10)"),
            "{}",
            fig.detail()
        );
    }

    #[test]
    fn looped_recording_is_caught_by_history() {
        // A 100-frame clip played in a loop: frame i has the hash of i % 100.
        let frames: Vec<_> = (0..300)
            .map(|i| {
                let mut f = good(i);
                f.hash = good(i % 100).hash;
                f
            })
            .collect();
        let (_, steps) = run(IntegrityConfig::default(), &frames);
        assert!(steps[..100].iter().all(|s| s.anomalies.is_empty()));
        assert_eq!(alerts(&steps), vec![109]);
        // With a history shorter than the loop, it is not seen.
        let short = IntegrityConfig {
            repeat_history: 50,
            ..Default::default()
        };
        assert!(alerts(&run(short, &frames).1).is_empty());
    }

    #[test]
    fn a_single_odd_frame_does_not_alarm_and_an_episode_clears() {
        let mut frames: Vec<_> = (0..100).map(good).collect();
        frames[40].hash = frames[39].hash; // one repeated frame
        let (_, steps) = run(IntegrityConfig::default(), &frames);
        assert_eq!(steps[40].anomalies, vec![AnomalyKind::Repeat]);
        assert!(alerts(&steps).is_empty());
        // 20 frozen frames, then live again: alert, then cleared once the window is clean.
        let mut frames: Vec<_> = (0..200).map(good).collect();
        for f in &mut frames[50..70] {
            f.hash = 7;
        }
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        assert_eq!(alerts(&steps), vec![60]);
        let cleared: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.actions.iter().any(|a| matches!(a, Action::Cleared(_))))
            .map(|(i, _)| i)
            .collect();
        // Last anomalous frame 69 leaves the 30-frame window at frame 99.
        assert_eq!(cleared, vec![99]);
        assert!(steps[98].untrusted && !steps[99].untrusted);
        assert!(!st.sustained);
    }

    #[test]
    fn timestamps_backwards_and_sequence_repeats() {
        let mut frames: Vec<_> = (0..60).map(good).collect();
        // From frame 20 on, timestamps stand still (an injector stamping one time).
        for f in &mut frames[20..] {
            f.timestamp = Duration::from_secs(100);
        }
        let (_, steps) = run(IntegrityConfig::default(), &frames);
        assert!(steps[21].anomalies.contains(&AnomalyKind::Timestamp));
        assert_eq!(alerts(&steps), vec![29]);
        // Sequence going backwards.
        let mut frames: Vec<_> = (0..60).map(good).collect();
        for (k, f) in frames[20..].iter_mut().enumerate() {
            f.device_seq = Some(5 + (k as u64 % 2));
        }
        let (_, steps) = run(IntegrityConfig::default(), &frames);
        assert!(steps[20].anomalies.contains(&AnomalyKind::Sequence));
        assert_eq!(alerts(&steps).len(), 1);
    }

    #[test]
    fn interval_too_fast_or_too_slow() {
        // Frames at 90 fps on a stream negotiated at 30 fps.
        let frames: Vec<_> = (0..40)
            .map(|i| {
                let mut f = good(i);
                f.timestamp = Duration::from_secs(100) + NOMINAL / 3 * i as u32;
                f
            })
            .collect();
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        assert_eq!(steps[1].anomalies, vec![AnomalyKind::Interval]);
        assert_eq!(alerts(&steps), vec![10]);
        assert!((st.last_ratio.unwrap() - 1.0 / 3.0).abs() < 1e-3);
        // 4x the interval with consecutive sequence numbers (not explained by drops).
        let frames: Vec<_> = (0..40)
            .map(|i| {
                let mut f = good(i);
                f.timestamp = Duration::from_secs(100) + NOMINAL * 4 * i as u32;
                f
            })
            .collect();
        assert_eq!(
            alerts(&run(IntegrityConfig::default(), &frames).1),
            vec![10]
        );
        // The same time with matching sequence gaps is just dropped frames.
        let frames: Vec<_> = (0..40).map(|i| good(i * 4)).collect();
        assert!(alerts(&run(IntegrityConfig::default(), &frames).1).is_empty());
    }

    #[test]
    fn format_change_is_sustained_at_once() {
        let mut frames: Vec<_> = (0..20).map(good).collect();
        frames[10].width = 320;
        frames[10].len = 320 * 480 * 2;
        let (_, steps) = run(IntegrityConfig::default(), &frames);
        assert_eq!(alerts(&steps), vec![10]);
        assert!(steps[10].untrusted);
        // Payload length of a raw format changing alone also counts.
        let mut frames: Vec<_> = (0..20).map(good).collect();
        frames[5].len -= 2;
        assert_eq!(alerts(&run(IntegrityConfig::default(), &frames).1), vec![5]);
    }

    #[test]
    fn brightness_jumps_and_flat_frames() {
        // Two sources spliced in alternation: luma 40 / 200 every other frame.
        let frames: Vec<_> = (0..40)
            .map(|i| {
                let mut f = good(i);
                f.luma = Some(if i % 2 == 0 { 40.0 } else { 200.0 });
                f
            })
            .collect();
        let (st, steps) = run(IntegrityConfig::default(), &frames);
        assert_eq!(alerts(&steps), vec![10]);
        assert_eq!(st.max_jump, 160.0);
        // A light switched on: one jump, no alarm.
        let frames: Vec<_> = (0..40)
            .map(|i| {
                let mut f = good(i);
                f.luma = Some(if i < 20 { 30.0 } else { 180.0 });
                f
            })
            .collect();
        assert!(alerts(&run(IntegrityConfig::default(), &frames).1).is_empty());
        // A covered lens: identical flat frames are not a frozen feed.
        let frames: Vec<_> = (0..60)
            .map(|i| {
                let mut f = good(i);
                f.hash = 1;
                f.flat = true;
                f
            })
            .collect();
        assert!(alerts(&run(IntegrityConfig::default(), &frames).1).is_empty());
    }

    #[test]
    fn disabled_checks_nothing() {
        let frames: Vec<_> = (0..60)
            .map(|i| {
                let mut f = good(i);
                f.hash = 1;
                f
            })
            .collect();
        let cfg = IntegrityConfig {
            enabled: false,
            ..Default::default()
        };
        assert!(alerts(&run(cfg, &frames).1).is_empty());
    }

    #[test]
    fn measure_yuyv_rgb_and_jpeg() {
        let (w, h) = (64u32, 48u32);
        let mut yuyv = vec![128u8; (w * h * 2) as usize];
        let m = FrameMeta::measure(&yuyv, PixelFormat::Yuyv, w, h, Some(1), Duration::ZERO);
        assert_eq!(m.luma, Some(128.0));
        assert!(m.flat);
        for (i, b) in yuyv.iter_mut().enumerate().step_by(2) {
            *b = (i % 200) as u8;
        }
        let m2 = FrameMeta::measure(&yuyv, PixelFormat::Yuyv, w, h, Some(2), Duration::ZERO);
        assert!(!m2.flat);
        assert_ne!(m.hash, m2.hash);
        let rgb = vec![255u8; (w * h * 3) as usize];
        let m = FrameMeta::measure(&rgb, PixelFormat::Rgb24, w, h, None, Duration::ZERO);
        assert!((m.luma.unwrap() - 255.0).abs() < 1.5, "{:?}", m.luma);
        // Short buffers and encoded frames: no luma, no panic.
        let m = FrameMeta::measure(&[1, 2, 3], PixelFormat::Yuyv, w, h, None, Duration::ZERO);
        assert_eq!(m.luma, None);
        let jpeg = include_bytes!("../../samples/astronaut_00.jpg");
        let m = FrameMeta::measure(jpeg, PixelFormat::Jpeg, 640, 480, None, Duration::ZERO);
        assert_eq!(m.luma, None);
        assert!(!m.flat);
    }

    #[test]
    fn config_validation() {
        assert!(IntegrityConfig::default().validate().is_ok());
        let bad = IntegrityConfig {
            min_anomalous: 31,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "source.integrity.min_anomalous"
        );
        let bad = IntegrityConfig {
            max_interval_factor: 0.9,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
