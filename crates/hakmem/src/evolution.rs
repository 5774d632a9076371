//! The evolution lifecycle (LEARN → CANARY → FROZEN) and the learned mmap threshold.
//!
//! This is the call point only: `on_alloc` is where the learning modes will tick (every 1024
//! allocations) and sample costs for the Elo ratings; for now it does nothing, the threshold
//! stays where the mode starts it and the lifecycle reports LEARN. The state machine and the
//! ratings arrive with the learning work (issue "Learning").

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::stats::Lifecycle;

/// The per-instance learning state.
pub(crate) struct Learner {
    /// The learned threshold; 0 until one has been chosen.
    threshold: AtomicUsize,
}

impl Learner {
    pub(crate) const fn new() -> Self {
        Learner {
            threshold: AtomicUsize::new(0),
        }
    }

    /// The threshold in effect: the learned one, or `start` until there is one.
    #[inline(always)]
    pub(crate) fn threshold(&self, start: usize) -> usize {
        match self.threshold.load(Ordering::Relaxed) {
            0 => start,
            t => t,
        }
    }

    /// Observes one allocation of `size` bytes.
    #[inline(always)]
    pub(crate) fn on_alloc(&self, _size: usize) {}

    /// Where the lifecycle stands.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        Lifecycle::Learn
    }
}
