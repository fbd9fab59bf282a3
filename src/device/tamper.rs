//! Tamper switch: debouncing (a pure function) and the shared "tampered" flag (the daemon stops
//! sealing while it is set).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Debouncer state for one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Debounce {
    /// The accepted (debounced) level.
    pub stable: bool,
    /// Since when the raw level has differed from `stable`.
    pending_since: Option<Duration>,
}

impl Debounce {
    /// Start from a known accepted level.
    pub fn new(stable: bool) -> Self {
        Self {
            stable,
            pending_since: None,
        }
    }
}

/// One sample: the raw level at `now`. The accepted level changes only after the raw level has
/// differed from it continuously for `hold`; returns the new level when it changes.
pub fn debounce(d: Debounce, raw: bool, now: Duration, hold: Duration) -> (Debounce, Option<bool>) {
    if raw == d.stable {
        return (Debounce::new(d.stable), None);
    }
    let since = d.pending_since.unwrap_or(now);
    if now.saturating_sub(since) >= hold {
        (Debounce::new(raw), Some(raw))
    } else {
        (
            Debounce {
                stable: d.stable,
                pending_since: Some(since),
            },
            None,
        )
    }
}

/// Shared "tampered" flag: set by the GPIO loop, read by the seal stage (and anyone else).
#[derive(Debug, Clone, Default)]
pub struct TamperFlag(Arc<AtomicBool>);

impl TamperFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set(&self, tampered: bool) {
        self.0.store(tampered, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feed (time, raw) samples; collect accepted changes.
    fn run(samples: &[(u64, bool)], hold: u64) -> Vec<(u64, bool)> {
        let mut d = Debounce::default();
        let mut out = Vec::new();
        for &(t, raw) in samples {
            let (next, change) = debounce(d, raw, ms(t), ms(hold));
            d = next;
            if let Some(c) = change {
                out.push((t, c));
            }
        }
        out
    }

    #[test]
    fn steady_change_is_accepted_after_hold() {
        let s: Vec<(u64, bool)> = (0..20).map(|i| (i * 10, i >= 3)).collect();
        assert_eq!(run(&s, 50), vec![(80, true)]);
    }

    #[test]
    fn bounces_shorter_than_hold_are_ignored() {
        let s = [
            (0, false),
            (10, true),
            (20, false),
            (30, true),
            (40, true),
            (50, false),
            (60, false),
            (200, false),
        ];
        assert_eq!(run(&s, 50), vec![]);
    }

    #[test]
    fn release_is_debounced_too() {
        let mut s: Vec<(u64, bool)> = (0..10).map(|i| (i * 10, true)).collect();
        s.extend((10..30).map(|i| (i * 10, i < 15 || i == 17)));
        // true accepted at 50; back to false: 150 pending, 170 is a bounce (true), 180 restarts.
        assert_eq!(run(&s, 50), vec![(50, true), (230, false)]);
    }

    #[test]
    fn zero_hold_follows_input() {
        let s = [(0, true), (10, false), (20, true)];
        assert_eq!(run(&s, 0), vec![(0, true), (10, false), (20, true)]);
    }
}
