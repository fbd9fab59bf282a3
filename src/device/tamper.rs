//! Tamper switch: debouncing (a pure function), the shared "tampered" flag, and a sealing gate
//! that stops sealing while the flag is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::seal::{SealError, SealInput, Sealed, Sealer};

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

/// Wraps the seal stage: while the tamper flag is set, frames are not sealed (a device whose
/// enclosure is open must not produce evidence that looks trustworthy). Analysis and alerts go on.
pub struct TamperGate {
    inner: Box<dyn Sealer>,
    flag: TamperFlag,
    blocked: bool,
    skipped: u64,
}

impl TamperGate {
    pub fn new(inner: Box<dyn Sealer>, flag: TamperFlag) -> Self {
        Self {
            inner,
            flag,
            blocked: false,
            skipped: 0,
        }
    }

    /// Frames not sealed because of tamper.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

impl TamperGate {
    /// Whether sealing is blocked now (logs the transitions).
    fn check(&mut self) -> bool {
        let tampered = self.flag.is_set();
        if tampered != self.blocked {
            self.blocked = tampered;
            if tampered {
                tracing::error!("tamper: sealing stopped");
            } else {
                tracing::warn!("tamper cleared: sealing resumed");
            }
        }
        tampered
    }
}

impl Sealer for TamperGate {
    fn seal(&mut self, input: &SealInput<'_>) -> Result<Option<Sealed>, SealError> {
        if self.check() {
            self.skipped += 1;
            return Ok(None);
        }
        self.inner.seal(input)
    }

    fn seal_batch(&mut self, inputs: &[SealInput<'_>]) -> Vec<Result<Option<Sealed>, SealError>> {
        if self.check() {
            self.skipped += inputs.len() as u64;
            return inputs.iter().map(|_| Ok(None)).collect();
        }
        self.inner.seal_batch(inputs)
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
