//! The evolution lifecycle (SPEC §4): LEARN → FROZEN, LEARN → CANARY → FROZEN, FROZEN → LEARN.
//!
//! [`Machine`] is a plain state machine: the learner feeds it one [`Window`] report per window
//! (10,000 allocations or 2 s, whichever comes first: [`window_due`]) together with the time,
//! and it answers with the [`Transition`] to make, if any. It reads no clock and touches no
//! allocator state, so every transition is unit-tested with injected reports and an injected
//! clock, without sleeping.
//!
//! - **LEARN → FROZEN** when the leader's p99 cost is stable — the same leader, its p99 within
//!   [`STABLE`] of the previous window's — for [`STABLE_WINDOWS`] windows in a row after every
//!   candidate has been rated; or when nothing contested was allocated in those windows (there
//!   is nothing to learn: [`Reason::Idle`]); or after [`LEARN_TIMEOUT_NS`]. It freezes on the
//!   leader.
//! - **LEARN → CANARY** instead, when this was a re-learning and the leader is not the
//!   threshold that was frozen before (the *incumbent*): the new one is tried on
//!   [`CANARY_SHARE`] of the traffic first.
//! - **CANARY → FROZEN**: the candidate is adopted unless its cost proved higher than the
//!   incumbent's, in which case it is rolled back; rolled back too if no verdict comes within
//!   [`CANARY_TIMEOUT_NS`].
//! - **FROZEN → LEARN** when the p99 cost exceeds the frozen baseline by [`DEGRADED`] for
//!   [`BAD_WINDOWS`] evaluations in a row, or the distribution of contested sizes has moved by
//!   [`SHIFTED`] (total variation) for [`BAD_WINDOWS`] evaluations in a row. The baseline is the
//!   median of the first [`BASELINE_EVALS`] evaluations after the freeze: the same estimator
//!   over as many samples as every later evaluation, so that like is compared with like (a p99
//!   of a few dozen samples reads higher than one of thousands).
//!
//! A machine that learns forever (RESEARCH) never leaves LEARN.

use crate::stats::Lifecycle;

const SECOND: u64 = 1_000_000_000;

/// A window closes after this many allocations …
pub(crate) const WINDOW_OPS: u64 = 10_000;
/// … or this much time, whichever comes first.
pub(crate) const WINDOW_NS: u64 = 2 * SECOND;
/// LEARN: "stable" is a p99 within this fraction of the previous window's (ε).
pub(crate) const STABLE: f64 = 0.01;
/// LEARN: stable windows in a row that conclude learning (W).
pub(crate) const STABLE_WINDOWS: u32 = 3;
/// LEARN: freeze on the leader after this long in any case.
pub(crate) const LEARN_TIMEOUT_NS: u64 = 180 * SECOND;
/// FROZEN: a p99 this fraction above the baseline is degraded (δ).
pub(crate) const DEGRADED: f64 = 0.20;
/// FROZEN: a size distribution this far (total variation) from the baseline has shifted (Δ).
pub(crate) const SHIFTED: f64 = 0.25;
/// FROZEN: degraded or shifted evaluations in a row that restart learning (L).
pub(crate) const BAD_WINDOWS: u32 = 3;
/// FROZEN: evaluations whose median p99 is the baseline.
pub(crate) const BASELINE_EVALS: usize = 3;
/// CANARY: the share of traffic the candidate serves.
pub(crate) const CANARY_SHARE: f64 = 0.05;
/// CANARY: roll back if no verdict came within this long.
pub(crate) const CANARY_TIMEOUT_NS: u64 = 180 * SECOND;

/// Whether a window that has seen `ops` allocations over `elapsed_ns` is over.
pub(crate) fn window_due(ops: u64, elapsed_ns: u64) -> bool {
    ops >= WINDOW_OPS || elapsed_ns >= WINDOW_NS
}

/// What the learner reports at the end of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Window {
    /// LEARN: the best-rated survivor.
    pub leader: u8,
    /// LEARN: every candidate has been rated and the field pruned.
    pub ready: bool,
    /// LEARN: not one cost sample in this learning period: nothing contested was allocated.
    pub idle: bool,
    /// LEARN: the leader's p99 cost so far; FROZEN: the p99 cost of the evaluation that just
    /// completed (`None`: not enough samples yet).
    pub p99: Option<f64>,
    /// FROZEN: the distance of the latest evaluation's contested sizes from the baseline's
    /// (`None`: not enough allocations yet).
    pub shift: Option<f64>,
    /// CANARY: the verdict, once the candidate has enough samples.
    pub canary: Option<Verdict>,
}

/// The outcome of a canary trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The candidate cost no more than the incumbent (within noise): keep it.
    Adopt,
    /// The candidate cost more: go back to the incumbent.
    RollBack,
}

/// Why a transition happened. The discriminant indexes the per-reason counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// LEARN concluded: the leader's p99 was stable.
    Converged = 0,
    /// LEARN concluded: nothing contested to learn from.
    Idle = 1,
    /// LEARN concluded: out of time.
    TimedOut = 2,
    /// CANARY → FROZEN on the candidate.
    Adopted = 3,
    /// CANARY → FROZEN on the incumbent.
    RolledBack = 4,
    /// FROZEN → LEARN: the p99 cost degraded.
    Degraded = 5,
    /// FROZEN → LEARN: the sizes shifted.
    Shifted = 6,
}

/// Number of [`Reason`]s.
pub(crate) const REASONS: usize = 7;
static_assertions::const_assert_eq!(REASONS, Reason::Shifted as usize + 1);

impl Reason {
    /// Lower-case words for logs.
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Reason::Converged => "converged: the leader's p99 cost is stable",
            Reason::Idle => "nothing contested to learn from",
            Reason::TimedOut => "timed out",
            Reason::Adopted => "canary adopted",
            Reason::RolledBack => "canary rolled back",
            Reason::Degraded => "p99 cost degraded",
            Reason::Shifted => "size distribution shifted",
        }
    }
}

/// A lifecycle transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: Lifecycle,
    pub to: Lifecycle,
    pub reason: Reason,
    /// The strategy that serves from now on: the frozen one (FROZEN), the candidate on trial
    /// (CANARY), or where learning restarts, the incumbent (LEARN).
    pub strategy: u8,
}

/// The lifecycle state machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Machine {
    forever: bool,
    state: Lifecycle,
    /// When the current state began.
    since: u64,
    /// LEARN: stable windows in a row, and the previous window's leader and p99.
    stable: u32,
    last: Option<(u8, f64)>,
    /// FROZEN: the frozen strategy, its baseline p99 (once the first evaluations are in), bad
    /// evaluations in a row.
    frozen: u8,
    baseline: Option<f64>,
    first: [f64; BASELINE_EVALS],
    firsts: usize,
    degraded: u32,
    shifted: u32,
    /// The strategy frozen before the current learning period, if any.
    incumbent: Option<u8>,
    /// CANARY: the strategy on trial.
    candidate: u8,
}

impl Machine {
    /// A machine in LEARN since `now`; `forever`: it never leaves LEARN.
    pub(crate) const fn new(forever: bool, now: u64) -> Machine {
        Machine {
            forever,
            state: Lifecycle::Learn,
            since: now,
            stable: 0,
            last: None,
            frozen: 0,
            baseline: None,
            first: [0.0; BASELINE_EVALS],
            firsts: 0,
            degraded: 0,
            shifted: 0,
            incumbent: None,
            candidate: 0,
        }
    }

    pub(crate) fn state(&self) -> Lifecycle {
        self.state
    }

    /// FROZEN: the frozen strategy.
    pub(crate) fn frozen(&self) -> u8 {
        self.frozen
    }

    /// The strategy frozen before the current learning period (what a canary is measured
    /// against), if any.
    pub(crate) fn incumbent(&self) -> Option<u8> {
        self.incumbent
    }

    /// CANARY: the strategy on trial.
    pub(crate) fn candidate(&self) -> u8 {
        self.candidate
    }

    /// Takes the report of the window that just closed at `now`; returns the transition made,
    /// if any.
    pub(crate) fn on_window(&mut self, w: &Window, now: u64) -> Option<Transition> {
        let elapsed = now.saturating_sub(self.since);
        match self.state {
            Lifecycle::Learn if !self.forever => {
                let stable = w.idle
                    || (w.ready
                        && match (self.last, w.p99) {
                            (Some((leader, prev)), Some(p99)) => {
                                leader == w.leader && (p99 - prev).abs() <= STABLE * prev
                            }
                            _ => false,
                        });
                self.last = w.p99.map(|p| (w.leader, p));
                self.stable = if stable { self.stable + 1 } else { 0 };
                let reason = if self.stable >= STABLE_WINDOWS {
                    if w.idle {
                        Reason::Idle
                    } else {
                        Reason::Converged
                    }
                } else if elapsed >= LEARN_TIMEOUT_NS {
                    Reason::TimedOut
                } else {
                    return None;
                };
                Some(self.conclude(w.leader, reason, now))
            }
            Lifecycle::Frozen => {
                if let Some(p99) = w.p99 {
                    match self.baseline {
                        None => {
                            // There is room while there is no baseline; `get_mut` only keeps a
                            // panic path out of the allocator.
                            if let Some(first) = self.first.get_mut(self.firsts) {
                                *first = p99;
                                self.firsts += 1;
                            }
                            if self.firsts == BASELINE_EVALS {
                                self.baseline = Some(median(self.first));
                            }
                        }
                        Some(base) if p99 > base * (1.0 + DEGRADED) => self.degraded += 1,
                        Some(_) => self.degraded = 0,
                    }
                }
                if let Some(distance) = w.shift {
                    self.shifted = if distance >= SHIFTED {
                        self.shifted + 1
                    } else {
                        0
                    };
                }
                let reason = if self.degraded >= BAD_WINDOWS {
                    Reason::Degraded
                } else if self.shifted >= BAD_WINDOWS {
                    Reason::Shifted
                } else {
                    return None;
                };
                Some(self.relearn(reason, now))
            }
            Lifecycle::Canary => {
                let incumbent = self.incumbent.unwrap_or(self.candidate);
                let (strategy, reason) = match w.canary {
                    Some(Verdict::Adopt) => (self.candidate, Reason::Adopted),
                    Some(Verdict::RollBack) => (incumbent, Reason::RolledBack),
                    None if elapsed >= CANARY_TIMEOUT_NS => (incumbent, Reason::RolledBack),
                    None => return None,
                };
                Some(self.freeze(strategy, reason, now))
            }
            Lifecycle::Learn | Lifecycle::Off => None,
        }
    }

    /// LEARN has concluded on `winner`: freeze it, or try it first if it would replace an
    /// incumbent.
    fn conclude(&mut self, winner: u8, reason: Reason, now: u64) -> Transition {
        match self.incumbent {
            Some(incumbent) if incumbent != winner => {
                self.state = Lifecycle::Canary;
                self.since = now;
                self.candidate = winner;
                Transition {
                    from: Lifecycle::Learn,
                    to: Lifecycle::Canary,
                    reason,
                    strategy: winner,
                }
            }
            _ => self.freeze(winner, reason, now),
        }
    }

    fn freeze(&mut self, strategy: u8, reason: Reason, now: u64) -> Transition {
        let from = self.state;
        self.state = Lifecycle::Frozen;
        self.since = now;
        self.frozen = strategy;
        self.baseline = None;
        self.firsts = 0;
        self.degraded = 0;
        self.shifted = 0;
        Transition {
            from,
            to: Lifecycle::Frozen,
            reason,
            strategy,
        }
    }

    fn relearn(&mut self, reason: Reason, now: u64) -> Transition {
        self.state = Lifecycle::Learn;
        self.since = now;
        self.incumbent = Some(self.frozen);
        self.stable = 0;
        self.last = None;
        Transition {
            from: Lifecycle::Frozen,
            to: Lifecycle::Learn,
            reason,
            strategy: self.frozen,
        }
    }
}

/// The median of three or more values (the lower middle one).
fn median<const N: usize>(mut v: [f64; N]) -> f64 {
    for i in 1..N {
        let mut j = i;
        while j > 0 && v[j] < v[j - 1] {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
    v[(N - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = SECOND;

    /// A LEARN window: leader `leader`, rated field, this p99.
    fn learning(leader: u8, p99: f64) -> Window {
        Window {
            leader,
            ready: true,
            p99: Some(p99),
            ..Window::default()
        }
    }

    fn frozen(p99: Option<f64>, shift: Option<f64>) -> Window {
        Window {
            p99,
            shift,
            ..Window::default()
        }
    }

    /// Feeds `windows`, one per second from `start`; the transitions made, with their times.
    fn feed(m: &mut Machine, start: u64, windows: &[Window]) -> Vec<(u64, Transition)> {
        let mut out = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            let now = start + i as u64 * S;
            if let Some(t) = m.on_window(w, now) {
                out.push((now, t));
            }
        }
        out
    }

    use std::vec::Vec;

    #[test]
    fn windows_close_at_ten_thousand_ops_or_two_seconds() {
        assert!(!window_due(9_999, 2 * S - 1));
        assert!(window_due(10_000, 0));
        assert!(window_due(0, 2 * S));
    }

    #[test]
    fn learn_freezes_after_three_stable_windows() {
        let mut m = Machine::new(false, 0);
        // The first window has nothing to compare with; then three within 1%.
        let ws = [
            learning(4, 10.0),
            learning(4, 10.05),
            learning(4, 9.97),
            learning(4, 10.0),
        ];
        let t = feed(&mut m, 1, &ws);
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].1,
            Transition {
                from: Lifecycle::Learn,
                to: Lifecycle::Frozen,
                reason: Reason::Converged,
                strategy: 4
            }
        );
        assert_eq!(t[0].0, 1 + 3 * S, "on the fourth window");
        assert_eq!((m.state(), m.frozen()), (Lifecycle::Frozen, 4));
    }

    #[test]
    fn instability_a_new_leader_or_an_unrated_field_restart_the_count() {
        let mut m = Machine::new(false, 0);
        let mut unready = learning(4, 10.0);
        unready.ready = false;
        let ws = [
            learning(4, 10.0),
            learning(4, 10.0),
            learning(4, 10.2), // 2% off
            learning(4, 10.2),
            learning(5, 10.2), // another leader
            learning(5, 10.2),
            unready,
            learning(4, 10.0),
            learning(4, 10.0),
        ];
        assert!(
            feed(&mut m, 1, &ws).is_empty(),
            "never three stable in a row"
        );
        assert_eq!(m.state(), Lifecycle::Learn);
        // The third stable window after the unrated one concludes.
        let t = m.on_window(&learning(4, 10.0), 100).unwrap();
        assert_eq!(t.reason, Reason::Converged);
        // No p99 yet (too few samples of the leader) is not stable either.
        let mut m = Machine::new(false, 0);
        let none = Window {
            leader: 4,
            ready: true,
            ..Window::default()
        };
        assert!(feed(&mut m, 1, &[none; 5]).is_empty());
    }

    #[test]
    fn learn_freezes_when_idle() {
        let mut m = Machine::new(false, 0);
        let idle = Window {
            leader: 3,
            idle: true,
            ..Window::default()
        };
        let t = feed(&mut m, 1, &[idle; 3]);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].1.reason, t[0].1.strategy), (Reason::Idle, 3));
        assert_eq!(m.state(), Lifecycle::Frozen);
    }

    #[test]
    fn learn_freezes_on_the_leader_after_180_s() {
        let mut m = Machine::new(false, 5 * S);
        let noisy = |i: usize| learning(7, if i % 2 == 0 { 10.0 } else { 12.0 });
        // One window a second: nothing before 180 s from the start …
        for i in 0..180 {
            assert_eq!(m.on_window(&noisy(i), 5 * S + i as u64 * S), None, "{i} s");
        }
        // … and the freeze on the leader at 180 s.
        let t = m.on_window(&noisy(180), 185 * S).unwrap();
        assert_eq!(
            (t.to, t.reason, t.strategy),
            (Lifecycle::Frozen, Reason::TimedOut, 7)
        );
    }

    /// A machine frozen on strategy 4 whose baseline p99 is 10 (the median of 9, 10, 14).
    fn frozen_on_4() -> Machine {
        let mut m = Machine::new(false, 0);
        feed(&mut m, 1, &[learning(4, 10.0); 4]);
        assert_eq!(m.state(), Lifecycle::Frozen);
        let first = [
            frozen(Some(14.0), None),
            frozen(None, None),
            frozen(Some(9.0), None),
        ];
        assert!(feed(&mut m, 5, &first).is_empty());
        assert_eq!(m.baseline, None, "two evaluations are not a baseline");
        assert_eq!(m.on_window(&frozen(Some(10.0), None), 9), None);
        assert_eq!(m.baseline, Some(10.0));
        m
    }

    #[test]
    fn frozen_relearns_after_three_degraded_evaluations() {
        let mut m = frozen_on_4();
        // +19% never counts; windows without an evaluation leave the count alone.
        let mut ws = [frozen(Some(11.9), None); 6].to_vec();
        ws.extend([
            frozen(Some(12.5), None),
            frozen(None, None),
            frozen(Some(12.5), None),
            frozen(Some(11.0), None), // back to normal: the count restarts
            frozen(Some(12.5), None),
            frozen(Some(12.5), None),
        ]);
        assert!(feed(&mut m, 10, &ws).is_empty());
        let t = m.on_window(&frozen(Some(12.5), None), 100).unwrap();
        assert_eq!(
            t,
            Transition {
                from: Lifecycle::Frozen,
                to: Lifecycle::Learn,
                reason: Reason::Degraded,
                strategy: 4
            }
        );
        assert_eq!((m.state(), m.incumbent()), (Lifecycle::Learn, Some(4)));
    }

    #[test]
    fn frozen_relearns_after_three_shifted_evaluations() {
        let mut m = frozen_on_4();
        let ws = [
            frozen(None, Some(0.24)),
            frozen(None, Some(0.3)),
            frozen(None, Some(0.3)),
            frozen(None, Some(0.1)),
            frozen(None, Some(0.25)),
            frozen(None, Some(0.9)),
        ];
        assert!(feed(&mut m, 10, &ws).is_empty());
        let t = m.on_window(&frozen(None, Some(1.0)), 100).unwrap();
        assert_eq!((t.to, t.reason), (Lifecycle::Learn, Reason::Shifted));
    }

    #[test]
    fn the_sizes_can_shift_before_there_is_a_baseline() {
        let mut m = Machine::new(false, 0);
        let idle = Window {
            leader: 3,
            idle: true,
            ..Window::default()
        };
        feed(&mut m, 1, &[idle; 3]);
        assert_eq!(m.state(), Lifecycle::Frozen);
        // Frozen with nothing learned: the first contested allocations are a shift.
        let t = feed(&mut m, 10, &[frozen(None, Some(1.0)); 3]);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].1.reason, m.incumbent()), (Reason::Shifted, Some(3)));
    }

    #[test]
    fn median_of_three() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([5.0, 5.0, 1.0]), 5.0);
    }

    /// A machine re-learning after leaving a freeze on 4.
    fn relearning() -> Machine {
        let mut m = frozen_on_4();
        feed(&mut m, 10, &[frozen(None, Some(1.0)); 3]);
        assert_eq!(m.state(), Lifecycle::Learn);
        m
    }

    #[test]
    fn relearning_the_same_leader_freezes_it_again() {
        let mut m = relearning();
        let t = feed(&mut m, 20, &[learning(4, 8.0); 4]);
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].1.to, t[0].1.strategy), (Lifecycle::Frozen, 4));
    }

    #[test]
    fn a_new_leader_goes_to_canary_then_is_adopted() {
        let mut m = relearning();
        let t = feed(&mut m, 20, &[learning(6, 8.0); 4]);
        assert_eq!(
            t[0].1,
            Transition {
                from: Lifecycle::Learn,
                to: Lifecycle::Canary,
                reason: Reason::Converged,
                strategy: 6
            }
        );
        assert_eq!(
            (m.state(), m.candidate(), m.incumbent()),
            (Lifecycle::Canary, 6, Some(4))
        );
        // No verdict yet: stays.
        assert_eq!(m.on_window(&Window::default(), 30 * S), None);
        let adopt = Window {
            canary: Some(Verdict::Adopt),
            ..Window::default()
        };
        let t = m.on_window(&adopt, 31 * S).unwrap();
        assert_eq!(
            t,
            Transition {
                from: Lifecycle::Canary,
                to: Lifecycle::Frozen,
                reason: Reason::Adopted,
                strategy: 6
            }
        );
        assert_eq!(m.frozen(), 6);
    }

    #[test]
    fn a_worse_canary_is_rolled_back() {
        let mut m = relearning();
        feed(&mut m, 20, &[learning(6, 8.0); 4]);
        let worse = Window {
            canary: Some(Verdict::RollBack),
            ..Window::default()
        };
        let t = m.on_window(&worse, 40).unwrap();
        assert_eq!(
            (t.to, t.reason, t.strategy),
            (Lifecycle::Frozen, Reason::RolledBack, 4)
        );
        assert_eq!(m.frozen(), 4);
    }

    #[test]
    fn a_canary_without_verdict_rolls_back_after_180_s() {
        let mut m = relearning();
        feed(&mut m, 20, &[learning(6, 8.0); 4]);
        // Entered CANARY with the fourth window.
        let entered = 20 + 3 * S;
        assert_eq!(
            m.on_window(&Window::default(), entered + CANARY_TIMEOUT_NS - 1),
            None
        );
        let t = m
            .on_window(&Window::default(), entered + CANARY_TIMEOUT_NS)
            .unwrap();
        assert_eq!((t.reason, t.strategy), (Reason::RolledBack, 4));
    }

    #[test]
    fn learning_forever_never_leaves_learn() {
        let mut m = Machine::new(true, 0);
        let idle = Window {
            idle: true,
            ..Window::default()
        };
        for i in 0..400 {
            assert_eq!(m.on_window(&learning(2, 10.0), i * S), None);
            assert_eq!(m.on_window(&idle, i * S), None);
        }
        assert_eq!(m.state(), Lifecycle::Learn);
    }
}
