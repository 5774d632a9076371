//! The learner's log lines, written once the state's lock is released.

use core::fmt;

use super::{CANDIDATES, SURVIVORS, THRESHOLDS};
use crate::diag;
use crate::elo;
use crate::evolution::Transition;
use crate::policy::{Config, LogLevel};

/// What to tell stderr once the lock is released.
#[derive(Clone, Copy, Debug)]
pub(super) enum Note {
    Transition {
        t: Transition,
        ops: u64,
        ns: u64,
        matches: u64,
        samples: u64,
    },
    /// A match was played that pruned the league (`pruned`: the survivors), changed its leader
    /// (`leader`), or both at once.
    Played {
        pruned: Option<u16>,
        leader: Option<Leader>,
    },
}

/// A new leader, for its log line.
#[derive(Clone, Copy, Debug)]
pub(super) struct Leader {
    pub(super) strategy: usize,
    pub(super) rating: f64,
    pub(super) matches: u64,
}

impl Note {
    pub(super) fn emit(&self, cfg: &Config) {
        let (log, output) = (cfg.log, cfg.log_output);
        match *self {
            Note::Transition {
                t,
                ops,
                ns,
                matches,
                samples,
            } if log >= LogLevel::Lifecycle => diag::log(
                output,
                format_args!(
                    "learning: {} -> {} ({}): threshold {}; {matches} matches, {samples} samples, \
                 ~{ops} allocations, {}.{:03} s",
                    t.from.name(),
                    t.to.name(),
                    t.reason.describe(),
                    diag::Bytes(elo::threshold(usize::from(t.strategy))),
                    ns / 1_000_000_000,
                    ns / 1_000_000 % 1000,
                ),
            ),
            Note::Played { pruned, leader } if log >= LogLevel::Verbose => {
                if let Some(alive) = pruned {
                    diag::log(
                        output,
                        format_args!("learning: pruned to {SURVIVORS}: {}", Survivors(alive)),
                    );
                }
                if let Some(Leader {
                    strategy,
                    rating,
                    matches,
                }) = leader
                {
                    diag::log(
                        output,
                        format_args!(
                            "learning: new leader {} (rating {rating:.0}) after {matches} matches",
                            diag::Bytes(elo::threshold(strategy)),
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// The thresholds of a set of candidates, for a log line.
struct Survivors(u16);

impl fmt::Display for Survivors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in (0..CANDIDATES).filter(|&s| self.0 & (1 << s) != 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}", diag::Bytes(THRESHOLDS[s]))?;
        }
        Ok(())
    }
}
