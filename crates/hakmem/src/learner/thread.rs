//! What each thread keeps for the learner: the tick countdown and its contested-allocation
//! state, in const-initialised thread-locals without destructors.

use core::cell::Cell;

use super::CANDIDATES;
use crate::os;

crate::tls::thread_state! {
    /// Runs `f` on this thread's allocations left until its next tick (read on every
    /// allocation: no call to reach it in the preload library, [`crate::tls`]).
    pub(super) static countdown: Cell<u32> = Cell::new(0), image zero,
        symbol "__hakmem_learner_countdown";
}

std::thread_local! {
    // Const-initialised and without a destructor: a native TLS slot, never allocating, usable
    // at any time (even while the thread exits). Only contested allocations reach it.
    static THREAD: Cell<Thread> = const { Cell::new(Thread::NONE) };
}

/// A thread's CPU time (µs) and page faults at some moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Reading {
    pub(super) cpu_us: u64,
    pub(super) faults: u64,
}

impl Reading {
    pub(super) fn now() -> Reading {
        let (cpu_us, faults) = os::thread_usage();
        Reading { cpu_us, faults }
    }
}

/// What a thread remembers about its contested allocations, for one learner at a time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Thread {
    /// The learner ([`Learner::id`]) and its epoch this state belongs to; anything else starts
    /// afresh (nothing here is ever dereferenced, so a dropped learner is harmless).
    pub(super) owner: u64,
    pub(super) epoch: u32,
    /// The strategy serving this thread's contested allocations.
    pub(super) strategy: u8,
    /// An interval is open (it started at `start`; its block holds `bytes`).
    pub(super) open: bool,
    /// Contested allocations to leave unmeasured before the next interval opens.
    pub(super) gap: u32,
    pub(super) start: Reading,
    pub(super) bytes: f64,
    /// Contested allocations per [`elo::bucket`] not yet handed to the learner.
    pub(super) sizes: [u32; CANDIDATES],
}

impl Thread {
    pub(super) const NONE: Thread = Thread {
        owner: 0,
        epoch: 0,
        strategy: 0,
        open: false,
        gap: 0,
        start: Reading {
            cpu_us: 0,
            faults: 0,
        },
        bytes: 0.0,
        sizes: [0; CANDIDATES],
    };

    // `try_with`, not `get` / `set`: the slot is const-initialised and has no destructor, so it
    // is always there, but `get` and `set` keep a panic path the allocator must not reach
    // (docs/preload.md). If it ever were gone, the thread would start afresh each time.

    /// This thread's state.
    pub(super) fn load() -> Thread {
        THREAD.try_with(Cell::get).unwrap_or(Thread::NONE)
    }

    /// Keeps `self` as this thread's state.
    pub(super) fn store(self) {
        let _ = THREAD.try_with(|slot| slot.set(self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_image_of_the_countdown_is_zero() {
        assert!(crate::tls::is_image(&Cell::new(0u32), None));
        assert!(!crate::tls::is_image(&Cell::new(1u32), None));
    }
}
