//! The learner of one [`Allocator`](crate::Allocator): it routes the contested requests, measures
//! what each strategy costs, rates the strategies ([`elo`](crate::elo)) and drives the lifecycle
//! ([`evolution`](crate::evolution)). Only the learning modes have one in their code path: every
//! call to it sits behind `cfg.evolution.learns()`, which a compiled mode folds.
//!
//! **Hot path.** Every allocation counts down a thread-local counter (const-initialised, no
//! destructor: a native TLS slot, one load, one store and a branch); every [`TICK`] allocations
//! of a thread the counter runs out ([`Learner::due`]) and the allocator calls the cold
//! [`Learner::tick`], which closes the window when it is due. Requests below [`CONTESTED`] are routed at once,
//! whatever the strategy, and pay nothing more.
//!
//! **Contested requests** (at least [`CONTESTED`] bytes) go through [`Learner::route`], out of
//! line. Each thread measures *intervals*: an interval opens at a contested allocation, is served
//! by one strategy, and closes at the thread's next contested allocation; its cost sample is the
//! thread's CPU time and page faults over the interval (one `getrusage(RUSAGE_THREAD)` at each
//! end: what routing the block cost, the program's first touch of it, freeing it) and the bytes
//! the block holds. In LEARN and CANARY the intervals follow each other (one `getrusage` per
//! contested allocation); FROZEN measures one contested allocation in [`FROZEN_GAP`] + 1.
//!
//! **State.** What the learner decides lives in one [`State`] behind a try-lock that never
//! waits, like the batch's: a thread that finds it taken drops its sample (or skips its tick)
//! and goes on. A lock left held across `fork` only stops learning in the child. What
//! [`Learner::snapshot`] reports is mirrored into atomics, so statistics never take the lock.

use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};

use crate::bigcache;
use crate::elo::{self, League, Sample, Tally, CANDIDATES, CONTESTED, SURVIVORS, THRESHOLDS};
use crate::evolution::{self, Machine, Reason, Transition, Verdict, Window, REASONS};
use crate::header::HEADER_SIZE;
use crate::os;
use crate::p2::P2;
use crate::policy::{Config, Evolution};
use crate::stats::{Candidate, Lifecycle, Transitions};

mod note;
mod thread;

use note::{Leader, Note};
use thread::{countdown, Reading, Thread};

/// Allocations of one thread between two ticks.
pub(crate) const TICK: u32 = 1024;
/// FROZEN: contested allocations left unmeasured after each measured one.
pub(crate) const FROZEN_GAP: u32 = 15;
/// FROZEN: cost samples per p99 evaluation.
pub(crate) const EVAL_SAMPLES: u64 = 256;
/// FROZEN: contested allocations per size-distribution evaluation.
pub(crate) const SHIFT_ALLOCS: u64 = 64;
/// LEARN: samples of the leader (after the scales are fixed) before its p99 counts.
pub(crate) const P99_SAMPLES: u64 = 20;
/// The quantile the lifecycle watches.
const QUANTILE: f64 = 0.99;
/// The random generator's seed (mixed with the learner's id).
const SEED: u64 = 0x6861_6B6D_656D_2121;
/// `serving` before the learner has started.
const NOT_STARTED: u8 = u8::MAX;

/// Everything the learner decides with, behind the try-lock.
struct State {
    machine: Machine,
    league: League,
    /// LEARN: each strategy's p99 cost in this learning period (once the scales are fixed).
    p99: [P2; CANDIDATES],
    /// FROZEN: the p99 cost of the current evaluation.
    eval: P2,
    /// CANARY: samples of the incumbent and of the candidate.
    canary: [Tally; 2],
    /// Contested allocations per bucket: this learning period, the baseline frozen with it,
    /// FROZEN's current evaluation.
    sizes_learned: [u64; CANDIDATES],
    sizes_base: [u64; CANDIDATES],
    sizes_eval: [u64; CANDIDATES],
    /// Where the current window started (allocations, time).
    window_ops: u64,
    window_ns: u64,
    /// When the learner started.
    born_ns: u64,
}

impl State {
    const fn new() -> State {
        State {
            machine: Machine::new(false, 0),
            league: League::new(SEED, 0),
            p99: [P2::new(QUANTILE); CANDIDATES],
            eval: P2::new(QUANTILE),
            canary: [Tally::EMPTY; 2],
            sizes_learned: [0; CANDIDATES],
            sizes_base: [0; CANDIDATES],
            sizes_eval: [0; CANDIDATES],
            window_ops: 0,
            window_ns: 0,
            born_ns: 0,
        }
    }

    /// Takes a thread's size counts.
    fn count_sizes(&mut self, sizes: &mut [u32; CANDIDATES]) {
        let into = match self.machine.state() {
            Lifecycle::Learn => &mut self.sizes_learned,
            Lifecycle::Frozen => &mut self.sizes_eval,
            Lifecycle::Canary | Lifecycle::Off => {
                *sizes = [0; CANDIDATES];
                return;
            }
        };
        for (total, n) in into.iter_mut().zip(sizes.iter_mut()) {
            *total += u64::from(*n);
            *n = 0;
        }
    }
}

/// Source of the learners' ids (0 means "none").
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The per-instance learning state.
pub(crate) struct Learner {
    /// A process-unique id, given on first use (threads match their [`Thread`] state to it).
    id: AtomicU64,
    /// Bumped whenever what serves may change (a transition, a pruning): threads start afresh.
    epoch: AtomicU32,
    /// The strategy serving by default: the leader (LEARN), the frozen one (FROZEN), the
    /// incumbent (CANARY); [`NOT_STARTED`] before the first tick.
    serving: AtomicU8,
    /// [`Lifecycle`] as a byte.
    lifecycle: AtomicU8,
    /// Allocations counted by ticks.
    ops: AtomicU64,
    busy: AtomicBool,
    state: UnsafeCell<State>,
    mirror: Mirror,
}

// SAFETY: `state` is only accessed by the thread that holds `busy` (see `try_with`); everything
// else is atomic.
unsafe impl Sync for Learner {}

/// What statistics read, copied out of the state under the lock.
struct Mirror {
    rating: [AtomicI32; CANDIDATES],
    matches: [AtomicU32; CANDIDATES],
    alive: AtomicU16,
    transitions: [AtomicU32; REASONS],
    samples: AtomicU64,
    played: AtomicU64,
    explored: AtomicU64,
}

/// What [`Learner::snapshot`] reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub candidates: [Candidate; CANDIDATES],
    pub transitions: Transitions,
    pub matches: u64,
    pub samples: u64,
    pub explored: u64,
}

impl Learner {
    pub(crate) const fn new() -> Learner {
        Learner {
            id: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            serving: AtomicU8::new(NOT_STARTED),
            lifecycle: AtomicU8::new(Lifecycle::Learn as u8),
            ops: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            state: UnsafeCell::new(State::new()),
            mirror: Mirror {
                rating: [const { AtomicI32::new(elo::INITIAL_RATING as i32) }; CANDIDATES],
                matches: [const { AtomicU32::new(0) }; CANDIDATES],
                alive: AtomicU16::new((1 << CANDIDATES) - 1),
                transitions: [const { AtomicU32::new(0) }; REASONS],
                samples: AtomicU64::new(0),
                played: AtomicU64::new(0),
                explored: AtomicU64::new(0),
            },
        }
    }

    /// The hot-path hook: counts one allocation of this thread; `true` every [`TICK`]th, when
    /// the caller is to [`tick`](Self::tick). (Apart from the tick, so that the caller can make
    /// that call where it costs its fast path nothing.)
    #[inline(always)]
    pub(crate) fn due() -> bool {
        countdown(|c| {
            let left = c.get();
            if left != 0 {
                c.set(left - 1);
                return false;
            }
            c.set(TICK - 1);
            true
        })
    }

    /// The mmap threshold serving by default (`start` is the mode's configured threshold, which
    /// decides where learning starts).
    pub(crate) fn threshold(&self, start: usize) -> usize {
        match self.serving.load(Ordering::Relaxed) {
            NOT_STARTED => THRESHOLDS[elo::start_index(start)],
            s => elo::threshold(usize::from(s)),
        }
    }

    /// Where the lifecycle stands.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Relaxed) {
            x if x == Lifecycle::Canary as u8 => Lifecycle::Canary,
            x if x == Lifecycle::Frozen as u8 => Lifecycle::Frozen,
            _ => Lifecycle::Learn,
        }
    }

    /// What statistics report. Never takes the lock.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let m = &self.mirror;
        let alive = m.alive.load(Ordering::Relaxed);
        let candidates = core::array::from_fn(|s| Candidate {
            threshold: THRESHOLDS[s],
            rating: m.rating[s].load(Ordering::Relaxed),
            matches: m.matches[s].load(Ordering::Relaxed),
            alive: alive & (1 << s) != 0,
        });
        let t = |r: Reason| m.transitions[r as usize].load(Ordering::Relaxed);
        Snapshot {
            candidates,
            transitions: Transitions {
                converged: t(Reason::Converged),
                idle: t(Reason::Idle),
                timed_out: t(Reason::TimedOut),
                canaries: self.canaries(),
                adopted: t(Reason::Adopted),
                rolled_back: t(Reason::RolledBack),
                degraded: t(Reason::Degraded),
                shifted: t(Reason::Shifted),
            },
            matches: m.played.load(Ordering::Relaxed),
            samples: m.samples.load(Ordering::Relaxed),
            explored: m.explored.load(Ordering::Relaxed),
        }
    }

    /// Canary trials begun: every adoption or rollback ends one, plus one running now.
    fn canaries(&self) -> u32 {
        let m = &self.mirror;
        let ended = m.transitions[Reason::Adopted as usize].load(Ordering::Relaxed)
            + m.transitions[Reason::RolledBack as usize].load(Ordering::Relaxed);
        ended + u32::from(self.lifecycle() == Lifecycle::Canary)
    }

    /// This learner's id, given on first use.
    fn id(&self) -> u64 {
        match self.id.load(Ordering::Relaxed) {
            0 => {
                let new = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                match self
                    .id
                    .compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => new,
                    Err(won) => won,
                }
            }
            id => id,
        }
    }

    /// Runs `f` on the state if the lock is free; `None` (at once) if it is taken.
    fn try_with<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        if self.busy.load(Ordering::Relaxed) || self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: we hold `busy`, so no other reference to the state exists; `f` neither
        // re-enters the learner nor allocates.
        let r = f(unsafe { &mut *self.state.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }

    /// A tick, every [`TICK`] allocations of a thread (when [`due`](Self::due) says so): counts
    /// the allocations, starts the learner the first time, takes this thread's size counts and
    /// closes the window when it is due.
    #[cold]
    #[inline(never)]
    pub(crate) fn tick(&self, cfg: &Config) {
        let ops = self.ops.fetch_add(u64::from(TICK), Ordering::Relaxed) + u64::from(TICK);
        let now = os::monotonic_ns();
        let id = self.id();
        let note = self.try_with(|s| {
            if self.serving.load(Ordering::Relaxed) == NOT_STARTED {
                self.start(s, cfg, id, ops, now);
            }
            let mut t = Thread::load();
            if t.owner == id && t.epoch == self.epoch.load(Ordering::Relaxed) {
                s.count_sizes(&mut t.sizes);
                t.store();
            }
            // Ticks count outside the lock: another thread may have opened the window at a
            // later count than this thread's `ops`, so the difference saturates (found by
            // memcheck's RESEARCH child in runtime_env: a debug build's overflow panic).
            if evolution::window_due(
                ops.saturating_sub(s.window_ops),
                now.saturating_sub(s.window_ns),
            ) {
                self.close_window(s, ops, now)
            } else {
                None
            }
        });
        if let Some(Some(note)) = note {
            note.emit(cfg);
        }
    }

    /// The first tick: LEARN, led by the candidate where the mode's threshold starts.
    fn start(&self, s: &mut State, cfg: &Config, id: u64, ops: u64, now: u64) {
        let leader = elo::start_index(cfg.threshold);
        s.machine = Machine::new(cfg.evolution == Evolution::LearnForever, now);
        s.league = League::new(SEED ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15), leader);
        s.league.reset(leader);
        s.window_ops = ops;
        s.window_ns = now;
        s.born_ns = now;
        self.mirror_league(&s.league);
        self.lifecycle
            .store(Lifecycle::Learn as u8, Ordering::Relaxed);
        self.serving.store(leader as u8, Ordering::Release);
    }

    /// Routes a contested request of `size` bytes (at least [`CONTESTED`]): `true` for the
    /// system allocator, `false` for the large path. `align_ok`: the alignment allows the
    /// system path. Measures the interval this allocation closes and opens.
    pub(crate) fn route(&self, cfg: &Config, size: usize, align_ok: bool) -> bool {
        debug_assert!(size >= CONTESTED);
        let serving = self.serving.load(Ordering::Acquire);
        if serving == NOT_STARTED {
            // Not ticked yet on this instance: the start candidate, unmeasured.
            return align_ok && size < THRESHOLDS[elo::start_index(cfg.threshold)];
        }
        let id = self.id();
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut t = Thread::load();
        if t.owner != id || t.epoch != epoch {
            t = Thread {
                owner: id,
                epoch,
                strategy: serving,
                ..Thread::NONE
            };
        }
        let bucket = elo::bucket(size);
        t.sizes[bucket] = t.sizes[bucket].saturating_add(1);
        let mut note = None;
        if t.open {
            let now = Reading::now();
            let x: Sample = [
                now.cpu_us.saturating_sub(t.start.cpu_us) as f64,
                now.faults.saturating_sub(t.start.faults) as f64,
                t.bytes,
            ];
            if let Some((next, gap, n)) =
                self.try_with(|s| self.on_sample(s, usize::from(t.strategy), &x, &mut t.sizes))
            {
                note = n;
                t.strategy = next;
                t.gap = gap;
                t.open = gap == 0;
                t.epoch = self.epoch.load(Ordering::Relaxed);
            }
            // (Lock taken: the sample is dropped and the interval starts again.)
            t.start = now;
        } else if t.gap == 0 {
            t.start = Reading::now();
            t.open = true;
        } else {
            t.gap -= 1;
        }
        let system = align_ok && size < elo::threshold(usize::from(t.strategy));
        if t.open {
            t.bytes = footprint(cfg, size, system) as f64;
        }
        t.store();
        if let Some(note) = note {
            note.emit(cfg);
        }
        system
    }

    /// Takes one cost sample of `strategy`; returns the strategy to serve the thread next, the
    /// contested allocations to leave unmeasured before the next interval, and what to log.
    fn on_sample(
        &self,
        s: &mut State,
        strategy: usize,
        x: &Sample,
        sizes: &mut [u32; CANDIDATES],
    ) -> (u8, u32, Option<Note>) {
        s.count_sizes(sizes);
        self.mirror.samples.fetch_add(1, Ordering::Relaxed);
        match s.machine.state() {
            Lifecycle::Learn => {
                let played = s.league.record(strategy, x);
                if let Some(scales) = s.league.fixed_scales() {
                    s.p99[elo::index(strategy)].add(elo::cost(x, &scales));
                }
                let mut note = None;
                if let Some(p) = played {
                    self.mirror_league(&s.league);
                    if p.pruned {
                        // Threads serving a pruned strategy start afresh.
                        self.epoch.fetch_add(1, Ordering::Release);
                    }
                    if let Some(leader) = p.new_leader {
                        self.serving.store(leader as u8, Ordering::Relaxed);
                    }
                    // One note for both: a match that prunes may also change the leader.
                    if p.pruned || p.new_leader.is_some() {
                        note = Some(Note::Played {
                            pruned: p.pruned.then(|| s.league.alive_mask()),
                            leader: p.new_leader.map(|strategy| Leader {
                                strategy,
                                rating: s.league.rating(strategy),
                                matches: s.league.played,
                            }),
                        });
                    }
                }
                let next = s.league.choose();
                self.mirror
                    .explored
                    .store(s.league.explored, Ordering::Relaxed);
                (next as u8, 0, note)
            }
            Lifecycle::Canary => {
                let candidate = s.machine.candidate();
                let incumbent = s.machine.incumbent().unwrap_or(candidate);
                if strategy == usize::from(candidate) {
                    s.canary[1].add(x);
                } else if strategy == usize::from(incumbent) {
                    s.canary[0].add(x);
                }
                let next = if s.league.rng().unit() < evolution::CANARY_SHARE {
                    candidate
                } else {
                    incumbent
                };
                (next, 0, None)
            }
            Lifecycle::Frozen | Lifecycle::Off => {
                let frozen = s.machine.frozen();
                if strategy == usize::from(frozen) {
                    if let Some(scales) = s.league.fixed_scales() {
                        s.eval.add(elo::cost(x, &scales));
                    }
                }
                (frozen, FROZEN_GAP, None)
            }
        }
    }

    /// Closes the window: reports it to the machine and makes the transition it decides.
    fn close_window(&self, s: &mut State, ops: u64, now: u64) -> Option<Note> {
        let state = s.machine.state();
        let leader = s.league.leader();
        let mut w = Window {
            leader: leader as u8,
            ready: s.league.pruned(),
            idle: s.league.samples() == 0,
            ..Window::default()
        };
        match state {
            Lifecycle::Learn => {
                let p99 = &s.p99[leader];
                if p99.count() >= P99_SAMPLES {
                    w.p99 = p99.estimate();
                }
            }
            Lifecycle::Frozen => {
                if s.eval.count() >= EVAL_SAMPLES {
                    w.p99 = s.eval.estimate();
                    s.eval = P2::new(QUANTILE);
                }
                if s.sizes_eval.iter().sum::<u64>() >= SHIFT_ALLOCS {
                    w.shift = Some(distance(&s.sizes_eval, &s.sizes_base));
                    s.sizes_eval = [0; CANDIDATES];
                }
            }
            Lifecycle::Canary => {
                let [incumbent, candidate] = &s.canary;
                if candidate.n() >= elo::MIN_SAMPLES && incumbent.n() >= elo::MIN_SAMPLES {
                    let (score, _, _) = elo::judge(candidate, incumbent, &s.league.scales());
                    w.canary = Some(if score == 0.0 {
                        Verdict::RollBack
                    } else {
                        Verdict::Adopt
                    });
                }
            }
            Lifecycle::Off => {}
        }
        s.window_ops = ops;
        s.window_ns = now;
        let t = s.machine.on_window(&w, now)?;
        Some(self.apply(s, t, ops, now))
    }

    /// Makes transition `t`.
    fn apply(&self, s: &mut State, t: Transition, ops: u64, now: u64) -> Note {
        let strategy = usize::from(t.strategy);
        let serving = match t.to {
            Lifecycle::Frozen => {
                if t.from == Lifecycle::Learn {
                    s.sizes_base = s.sizes_learned;
                }
                s.eval = P2::new(QUANTILE);
                s.sizes_eval = [0; CANDIDATES];
                strategy
            }
            Lifecycle::Canary => {
                s.sizes_base = s.sizes_learned;
                s.canary = [Tally::EMPTY; 2];
                usize::from(s.machine.incumbent().unwrap_or(t.strategy))
            }
            Lifecycle::Learn | Lifecycle::Off => {
                // Learning again, from the incumbent, every candidate back in.
                s.league.reset(strategy);
                s.p99 = [P2::new(QUANTILE); CANDIDATES];
                s.sizes_learned = [0; CANDIDATES];
                self.mirror_league(&s.league);
                strategy
            }
        };
        self.serving.store(serving as u8, Ordering::Relaxed);
        self.lifecycle.store(t.to as u8, Ordering::Relaxed);
        // (`get`: a reason is below REASONS, but the compiler cannot see it through the
        // machine's state, and the allocator must not reach a panic path.)
        if let Some(count) = self.mirror.transitions.get(t.reason as usize) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.epoch.fetch_add(1, Ordering::Release);
        Note::Transition {
            t,
            ops,
            ns: now.saturating_sub(s.born_ns),
            matches: s.league.played,
            samples: self.mirror.samples.load(Ordering::Relaxed),
        }
    }

    fn mirror_league(&self, league: &League) {
        for s in 0..CANDIDATES {
            self.mirror.rating[s].store(league.rating(s).round() as i32, Ordering::Relaxed);
            self.mirror.matches[s].store(league.matches(s), Ordering::Relaxed);
        }
        self.mirror
            .alive
            .store(league.alive_mask(), Ordering::Relaxed);
        self.mirror.played.store(league.played, Ordering::Relaxed);
    }
}

/// The bytes a contested block holds from the OS: its `malloc` request on the system path;
/// on the large path its mapping (a header page, then its BigCache class or its size rounded to
/// pages).
fn footprint(cfg: &Config, size: usize, system: bool) -> usize {
    if system {
        return size.saturating_add(HEADER_SIZE);
    }
    let page = os::page_size();
    let class = if cfg.bigcache {
        bigcache::class_for(size, cfg.bigcache_bytes)
    } else {
        None
    };
    match class {
        Some(c) => page + bigcache::CLASSES[c],
        None => size.saturating_add(2 * page - 1) & !(page - 1),
    }
}

/// The total variation distance between two distributions given as counts: half the sum of
/// the absolute differences of their shares; 1 if the baseline is empty.
pub(crate) fn distance(a: &[u64; CANDIDATES], base: &[u64; CANDIDATES]) -> f64 {
    let (na, nb) = (a.iter().sum::<u64>(), base.iter().sum::<u64>());
    if nb == 0 || na == 0 {
        return if na == nb { 0.0 } else { 1.0 };
    }
    let d: f64 = a
        .iter()
        .zip(base)
        .map(|(&x, &y)| (x as f64 / na as f64 - y as f64 / nb as f64).abs())
        .sum();
    d / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_total_variation() {
        let mut a = [0u64; CANDIDATES];
        let mut b = [0u64; CANDIDATES];
        assert_eq!(distance(&a, &b), 0.0);
        a[0] = 10;
        assert_eq!(distance(&a, &b), 1.0, "anything against an empty baseline");
        b[0] = 5;
        assert_eq!(distance(&a, &b), 0.0, "the same shares");
        b[1] = 5;
        assert!((distance(&a, &b) - 0.5).abs() < 1e-12);
        a[2] = 10;
        assert!((distance(&a, &b) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn footprints() {
        let cfg = &crate::policy::Config::LEARNING;
        assert_eq!(footprint(cfg, 600 << 10, true), (600 << 10) + 16);
        assert_eq!(
            footprint(cfg, 600 << 10, false),
            4096 + (1 << 20),
            "its class"
        );
        assert_eq!(
            footprint(cfg, 20 << 20, false),
            4096 + (32 << 20),
            "a huge class"
        );
        assert_eq!(
            footprint(cfg, 300 << 20, false),
            (300 << 20) + 4096,
            "no class: beyond what the cap can hold"
        );
    }
}
