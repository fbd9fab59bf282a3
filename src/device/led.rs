//! Status LED: which state to show (from what the device knows) and the blink pattern of each
//! state, both pure functions of state and time.
//!
//! | state | pattern |
//! |---|---|
//! | authentic | solid on |
//! | attack | fast blink, 5 Hz (100 ms on, 100 ms off) |
//! | fault (detector errors) | double blink every 1.5 s |
//! | no camera (no frames for `stale_after`) | slow blink, 0.5 Hz (1 s on, 1 s off) |
//! | tamper | triple blink every 1.5 s |
//! | idle (no face, several faces, no detector) | 50 ms heartbeat every 2 s |
//! | off | off (the safe state) |

use std::time::Duration;

use crate::decide::Verdict;

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LedState {
    Off,
    Idle,
    Authentic,
    Attack,
    Fault,
    NoCamera,
    Tamper,
}

impl LedState {
    /// Every state, for exhaustive checks.
    pub const ALL: [LedState; 7] = [
        LedState::Off,
        LedState::Idle,
        LedState::Authentic,
        LedState::Attack,
        LedState::Fault,
        LedState::NoCamera,
        LedState::Tamper,
    ];

    /// (period, on-intervals within the period) in milliseconds.
    fn pattern(self) -> (u64, &'static [(u64, u64)]) {
        match self {
            LedState::Off => (1000, &[]),
            LedState::Idle => (2000, &[(0, 50)]),
            LedState::Authentic => (1000, &[(0, 1000)]),
            LedState::Attack => (200, &[(0, 100)]),
            LedState::Fault => (1500, &[(0, 150), (300, 450)]),
            LedState::NoCamera => (2000, &[(0, 1000)]),
            LedState::Tamper => (1500, &[(0, 100), (200, 300), (400, 500)]),
        }
    }
}

/// Whether the LED is lit in `state` at time `t` (any monotonic clock; patterns repeat).
pub fn led_level(state: LedState, t: Duration) -> bool {
    let (period, on) = state.pattern();
    let phase = (t.as_millis() % u128::from(period)) as u64;
    on.iter().any(|&(a, b)| phase >= a && phase < b)
}

/// What the device knows, with times on the device's monotonic clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceStatus {
    /// The last analysed frame: when, and its verdict.
    pub last_frame: Option<(Duration, Verdict)>,
    /// The last detector error.
    pub last_error: Option<Duration>,
    /// The (debounced) tamper input says tampered, or a latched tamper.
    pub tampered: bool,
}

/// Timing of the state choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedTiming {
    /// No frame for this long means "no camera" (frames are not flowing).
    pub stale_after: Duration,
    /// A detector error shows "fault" for this long.
    pub fault_hold: Duration,
}

/// The state to show at `now`. Priority: tamper, no camera, attack, fault, authentic, idle.
pub fn led_state(s: &DeviceStatus, now: Duration, timing: LedTiming) -> LedState {
    if s.tampered {
        return LedState::Tamper;
    }
    let fresh = match s.last_frame {
        Some((at, v)) if now.saturating_sub(at) < timing.stale_after => Some(v),
        // Before the first frame, allow start-up time (device epoch = start).
        None if now < timing.stale_after => None,
        _ => return LedState::NoCamera,
    };
    if fresh == Some(Verdict::Attack) {
        return LedState::Attack;
    }
    if s.last_error
        .is_some_and(|e| now.saturating_sub(e) < timing.fault_hold)
    {
        return LedState::Fault;
    }
    match fresh {
        Some(Verdict::Authentic) => LedState::Authentic,
        _ => LedState::Idle,
    }
}

/// The "capture accepted" relay: energised only while an authentic face is in front of an
/// untampered device.
pub fn relay_level(state: LedState) -> bool {
    state == LedState::Authentic
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: LedTiming = LedTiming {
        stale_after: Duration::from_secs(3),
        fault_hold: Duration::from_secs(2),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn trace(state: LedState) -> Vec<bool> {
        (0..6000)
            .step_by(10)
            .map(|t| led_level(state, ms(t)))
            .collect()
    }

    #[test]
    fn every_pattern_is_distinct() {
        for (i, a) in LedState::ALL.iter().enumerate() {
            for b in &LedState::ALL[i + 1..] {
                assert_ne!(trace(*a), trace(*b), "{a:?} and {b:?} look the same");
            }
        }
    }

    #[test]
    fn pattern_shapes() {
        assert!(trace(LedState::Authentic).iter().all(|&l| l));
        assert!(trace(LedState::Off).iter().all(|&l| !l));
        // Attack: 5 Hz, half duty.
        assert!(led_level(LedState::Attack, ms(50)));
        assert!(!led_level(LedState::Attack, ms(150)));
        assert!(led_level(LedState::Attack, ms(1050)));
        // Count rising edges per pattern period.
        let rises = |s: LedState, period: u64| {
            let v: Vec<bool> = (0..period).map(|t| led_level(s, ms(t))).collect();
            v.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(v[0])
        };
        assert_eq!(rises(LedState::Fault, 1500), 2);
        assert_eq!(rises(LedState::Tamper, 1500), 3);
        assert_eq!(rises(LedState::NoCamera, 2000), 1);
        assert_eq!(rises(LedState::Idle, 2000), 1);
        let on = |s: LedState, period: u64| (0..period).filter(|&t| led_level(s, ms(t))).count();
        assert_eq!(on(LedState::NoCamera, 2000), 1000);
        assert_eq!(on(LedState::Idle, 2000), 50);
    }

    #[test]
    fn state_priorities() {
        let mut s = DeviceStatus::default();
        // Start-up grace, then no camera.
        assert_eq!(led_state(&s, ms(100), T), LedState::Idle);
        assert_eq!(led_state(&s, ms(3000), T), LedState::NoCamera);
        s.last_frame = Some((ms(4000), Verdict::Authentic));
        assert_eq!(led_state(&s, ms(4100), T), LedState::Authentic);
        assert_eq!(led_state(&s, ms(7000), T), LedState::NoCamera, "stale");
        s.last_frame = Some((ms(4000), Verdict::NoFace));
        assert_eq!(led_state(&s, ms(4100), T), LedState::Idle);
        s.last_error = Some(ms(4000));
        assert_eq!(led_state(&s, ms(4100), T), LedState::Fault);
        assert_eq!(led_state(&s, ms(6001), T), LedState::Idle, "fault expires");
        s.last_frame = Some((ms(4000), Verdict::Attack));
        assert_eq!(
            led_state(&s, ms(4100), T),
            LedState::Attack,
            "attack over fault"
        );
        s.tampered = true;
        assert_eq!(led_state(&s, ms(4100), T), LedState::Tamper);
        assert_eq!(led_state(&s, ms(90_000), T), LedState::Tamper);
    }

    #[test]
    fn relay_only_when_authentic() {
        for s in LedState::ALL {
            assert_eq!(relay_level(s), s == LedState::Authentic);
        }
    }
}
