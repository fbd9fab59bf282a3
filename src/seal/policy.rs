//! Which frames get sealed: a pure function of (state, config, frame facts).
//!
//! * `every`: every frame.
//! * `authentic`: frames whose verdict is in `verdicts`, at most `max_per_second` (by the frame's
//!   monotonic capture time).
//! * `evidence`: only around alerts: the `evidence_pre` frames before an alert (held in a small
//!   ring by the sealer), the alert frame, and `evidence_post` frames after it.
//!
//! Under every policy a frame that raises an alert is sealed (it is evidence), and the verdict
//! always goes into the signed manifest.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decide::Verdict;

/// Seal policy kind (`seal.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Every,
    Authentic,
    Evidence,
}

/// Parameters of the policy (from `[seal]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParams {
    pub kind: PolicyKind,
    pub max_per_second: f64,
    pub verdicts: Vec<Verdict>,
    pub evidence_pre: usize,
    pub evidence_post: usize,
}

/// What the policy needs to know about a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameFacts {
    /// Monotonic capture time.
    pub mono: Duration,
    pub verdict: Verdict,
    /// The decider raised an alert on this frame.
    pub alert: bool,
}

/// Policy state carried from frame to frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Capture time of the last frame sealed under the rate limit.
    pub last_sealed: Option<Duration>,
    /// Frames still to seal after an alert (evidence policy).
    pub post_remaining: usize,
}

/// The policy's answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Do not seal.
    Skip,
    /// Do not seal now, but keep the frame in the pre-alert ring (evidence policy).
    Hold,
    /// Seal this frame; with `flush_held`, first seal the held pre-alert frames (oldest first).
    Seal {
        reason: &'static str,
        flush_held: bool,
    },
}

/// Pure policy step.
pub fn step(p: &PolicyParams, mut st: PolicyState, f: FrameFacts) -> (PolicyState, Step) {
    let out = match p.kind {
        PolicyKind::Every => Step::Seal {
            reason: "every",
            flush_held: false,
        },
        PolicyKind::Authentic => {
            let interval = Duration::from_secs_f64(1.0 / p.max_per_second);
            let due = st
                .last_sealed
                .is_none_or(|t| f.mono < t || f.mono - t >= interval);
            if f.alert {
                Step::Seal {
                    reason: "evidence",
                    flush_held: false,
                }
            } else if p.verdicts.contains(&f.verdict) && due {
                st.last_sealed = Some(f.mono);
                Step::Seal {
                    reason: "authentic",
                    flush_held: false,
                }
            } else {
                Step::Skip
            }
        }
        PolicyKind::Evidence => {
            if f.alert {
                st.post_remaining = p.evidence_post;
                Step::Seal {
                    reason: "evidence",
                    flush_held: true,
                }
            } else if st.post_remaining > 0 {
                st.post_remaining -= 1;
                Step::Seal {
                    reason: "evidence",
                    flush_held: false,
                }
            } else if p.evidence_pre > 0 {
                Step::Hold
            } else {
                Step::Skip
            }
        }
    };
    (st, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kind: PolicyKind) -> PolicyParams {
        PolicyParams {
            kind,
            max_per_second: 2.0,
            verdicts: vec![Verdict::Authentic],
            evidence_pre: 2,
            evidence_post: 3,
        }
    }

    fn facts(ms: u64, verdict: Verdict, alert: bool) -> FrameFacts {
        FrameFacts {
            mono: Duration::from_millis(ms),
            verdict,
            alert,
        }
    }

    fn run(p: &PolicyParams, frames: &[FrameFacts]) -> Vec<Step> {
        let mut st = PolicyState::default();
        frames
            .iter()
            .map(|f| {
                let (s, out) = step(p, st, *f);
                st = s;
                out
            })
            .collect()
    }

    fn sealed(steps: &[Step]) -> Vec<usize> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Step::Seal { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn every_seals_everything() {
        let f: Vec<_> = (0..5).map(|i| facts(i, Verdict::NoFace, false)).collect();
        assert_eq!(
            sealed(&run(&params(PolicyKind::Every), &f)),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn authentic_is_rate_limited_and_filtered() {
        // 10 fps for 2 s, all authentic: 2 per second → frames at 0, 500, 1000, 1500 ms.
        let f: Vec<_> = (0..20)
            .map(|i| facts(i * 100, Verdict::Authentic, false))
            .collect();
        assert_eq!(
            sealed(&run(&params(PolicyKind::Authentic), &f)),
            vec![0, 5, 10, 15]
        );
        // Non-authentic frames are skipped and do not use up the budget.
        let f = vec![
            facts(0, Verdict::NoFace, false),
            facts(100, Verdict::Attack, false),
            facts(200, Verdict::Authentic, false),
            facts(300, Verdict::Authentic, false),
            facts(750, Verdict::Authentic, false),
        ];
        assert_eq!(sealed(&run(&params(PolicyKind::Authentic), &f)), vec![2, 4]);
        // Alerts are always sealed, whatever the rate.
        let f = vec![
            facts(0, Verdict::Authentic, false),
            facts(10, Verdict::Attack, true),
            facts(20, Verdict::Attack, true),
        ];
        let steps = run(&params(PolicyKind::Authentic), &f);
        assert_eq!(sealed(&steps), vec![0, 1, 2]);
        assert_eq!(
            steps[1],
            Step::Seal {
                reason: "evidence",
                flush_held: false
            }
        );
    }

    #[test]
    fn evidence_window_around_alert() {
        let mut f: Vec<_> = (0..10)
            .map(|i| facts(i * 100, Verdict::Authentic, false))
            .collect();
        f[4].alert = true;
        let steps = run(&params(PolicyKind::Evidence), &f);
        assert_eq!(steps[0], Step::Hold);
        assert_eq!(steps[3], Step::Hold);
        assert_eq!(
            steps[4],
            Step::Seal {
                reason: "evidence",
                flush_held: true
            }
        );
        // Post window of 3, then back to holding.
        assert_eq!(sealed(&steps), vec![4, 5, 6, 7]);
        assert_eq!(steps[8], Step::Hold);
        // A second alert inside the post window restarts it.
        f[6].alert = true;
        let steps = run(&params(PolicyKind::Evidence), &f);
        assert_eq!(sealed(&steps), vec![4, 5, 6, 7, 8, 9]);
        // No pre window: frames are skipped, not held.
        let mut p = params(PolicyKind::Evidence);
        p.evidence_pre = 0;
        assert_eq!(run(&p, &f[..2]), vec![Step::Skip, Step::Skip]);
    }
}
