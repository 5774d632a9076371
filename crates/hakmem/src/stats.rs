//! Statistics: the [`Stats`] snapshot and the per-instance counters behind it.
//!
//! Which events are counted is the policy's [`StatsLevel`]: `Counters` counts the large-block
//! path only (rare, expensive events), `Full` every allocation and free. A level that does not
//! count an event compiles its counter update away. Nothing is a shared counter threads fight
//! over: the pool counts in each thread's heap, the rest goes to [`Counters`]' shards. The
//! learning modes add what their learner knows: the lifecycle, the ratings, the transitions
//! (see `learner`).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::diag::Bytes;
use crate::elo::CANDIDATES;
use crate::policy::{Mode, StatsLevel};

/// Where the evolution lifecycle stands (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Lifecycle {
    /// The mode does not learn: the threshold is fixed.
    Off,
    /// Candidates are being rated.
    Learn,
    /// A candidate is on trial on a small share of traffic.
    Canary,
    /// The threshold is fixed at the chosen candidate.
    Frozen,
}

impl Lifecycle {
    /// Upper-case name, as in the C original's logs.
    pub const fn name(self) -> &'static str {
        match self {
            Lifecycle::Off => "OFF",
            Lifecycle::Learn => "LEARN",
            Lifecycle::Canary => "CANARY",
            Lifecycle::Frozen => "FROZEN",
        }
    }
}

/// A candidate mmap threshold of the learning modes and its Elo rating.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    /// The threshold, in bytes (0 in a mode that does not learn).
    pub threshold: usize,
    /// Its Elo rating (starts at 1500).
    pub rating: i32,
    /// Matches it has played in the current learning period.
    pub matches: u32,
    /// Whether it survived the pruning (every candidate does until the field is pruned).
    pub alive: bool,
}

/// Lifecycle transitions by kind, since the allocator started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transitions {
    /// LEARN concluded because the leader's p99 cost was stable.
    pub converged: u32,
    /// LEARN concluded because nothing contested was allocated (nothing to learn).
    pub idle: u32,
    /// LEARN concluded because its time (180 s) was up.
    pub timed_out: u32,
    /// Canary trials begun (LEARN → CANARY).
    pub canaries: u32,
    /// Canary trials that ended with the candidate adopted.
    pub adopted: u32,
    /// Canary trials that ended with the incumbent restored.
    pub rolled_back: u32,
    /// FROZEN → LEARN because the p99 cost degraded.
    pub degraded: u32,
    /// FROZEN → LEARN because the distribution of request sizes shifted.
    pub shifted: u32,
}

impl Transitions {
    /// All transitions: each conclusion of LEARN, each end of a canary, each return to LEARN.
    pub fn total(&self) -> u64 {
        [
            self.converged,
            self.idle,
            self.timed_out,
            self.adopted,
            self.rolled_back,
            self.degraded,
            self.shifted,
        ]
        .iter()
        .map(|&n| u64::from(n))
        .sum()
    }
}

/// A snapshot of an [`Allocator`](crate::Allocator)'s state and counters, taken without
/// allocating. Counters the policy does not keep read zero.
///
/// ```
/// use hakmem::{Allocator, Lifecycle, mode::Balanced};
/// static A: Allocator<Balanced> = Allocator::new();
/// let s = A.stats();
/// assert_eq!(s.lifecycle, Lifecycle::Frozen);
/// println!("{s}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The policy's name ([`Policy::NAME`](crate::Policy::NAME)).
    pub policy: &'static str,
    /// The mode in effect.
    pub mode: Mode,
    /// The statistics level, telling which counters below are kept.
    pub level: StatsLevel,
    /// Where the evolution lifecycle stands.
    pub lifecycle: Lifecycle,
    /// The mmap threshold in effect, in bytes.
    pub threshold: usize,
    /// Blocks allocated from the system allocator (level `Full`).
    pub system_allocs: u64,
    /// Blocks returned to the system allocator (level `Full`).
    pub system_frees: u64,
    /// Blocks allocated from the small-object pool (level `Full`; counted in each thread's heap,
    /// exact once the threads allocating are quiescent).
    pub pool_allocs: u64,
    /// Blocks returned to the small-object pool (level `Full`; as `pool_allocs`).
    pub pool_frees: u64,
    /// Large blocks mapped fresh with `mmap`.
    pub mmap_allocs: u64,
    /// Bytes of pool spans held by threads now (in use, kept empty for reuse, or left by
    /// exited threads with blocks still in use): span lengths, of which only the touched pages
    /// are resident. A gauge, kept from level `Counters`: the pool updates it only when a span
    /// changes hands, never per block.
    pub pool_held_bytes: u64,
    /// Bytes of empty pool spans kept resident for reuse (bounded per pool; level `Counters`).
    pub pool_dirty_bytes: u64,
    /// Bytes of empty pool spans returned to the OS so far (`MADV_DONTNEED`; level `Counters`).
    pub pool_purged_bytes: u64,
    /// Large blocks freed by the program (whatever then happened to them).
    pub mmap_frees: u64,
    /// Large blocks resized with `mremap` instead of copied.
    pub mremaps: u64,
    /// Large requests served from BigCache.
    pub bigcache_hits: u64,
    /// Large requests BigCache could not serve.
    pub bigcache_misses: u64,
    /// Blocks evicted from BigCache: freed blocks it had no room for, and blocks drained when
    /// memory ran out.
    pub bigcache_evictions: u64,
    /// Cached blocks released because they were not reused within the decay period
    /// ([`Config::bigcache_decay_ms`](crate::Config::bigcache_decay_ms)).
    pub bigcache_decayed: u64,
    /// `madvise` calls made to let the kernel reclaim cached blocks (`MADV_FREE`).
    pub madvise_calls: u64,
    /// Bytes covered by those calls.
    pub madvise_bytes: u64,
    /// `munmap` calls made to release large blocks (a batch flush makes one per contiguous run).
    pub munmap_calls: u64,
    /// Bytes released by those calls.
    pub munmap_bytes: u64,
    /// `munmap` calls the kernel refused for lack of memory (at the process's map-count limit,
    /// where unmapping part of a merged mapping needs a split): the pages were released with
    /// `MADV_DONTNEED` and the address range left mapped. Not in `munmap_bytes`.
    pub munmap_refused: u64,
    /// Blocks advised `MADV_HUGEPAGE`.
    pub thp_advised: u64,
    /// Lifecycle transitions so far (the sum of [`Stats::transitions`]).
    pub lifecycle_transitions: u64,
    /// Lifecycle transitions by kind (learning modes).
    pub transitions: Transitions,
    /// The candidate thresholds and their ratings (learning modes; all default otherwise).
    /// Those with `alive` survive; [`Stats::leaders`] orders them.
    pub candidates: [Candidate; CANDIDATES],
    /// Elo matches played (learning modes).
    pub matches: u64,
    /// Cost samples taken (learning modes).
    pub samples: u64,
    /// Samples served by a randomly chosen strategy (ε-greedy exploration).
    pub explored: u64,
}

impl Stats {
    /// The surviving candidates, best rated first (none in a mode that does not learn), and
    /// how many there are.
    pub fn leaders(&self) -> ([Candidate; CANDIDATES], usize) {
        let mut out = [Candidate::default(); CANDIDATES];
        let mut n = 0;
        for c in self
            .candidates
            .iter()
            .filter(|c| c.alive && c.threshold != 0)
        {
            out[n] = *c;
            n += 1;
        }
        // Insertion sort, stable: rating descending.
        for i in 1..n {
            let mut j = i;
            while j > 0 && out[j].rating > out[j - 1].rating {
                out.swap(j, j - 1);
                j -= 1;
            }
        }
        (out, n)
    }
}

/// What the counters count. The discriminant indexes [`Counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    SystemAlloc,
    SystemFree,
    PoolFree,
    MmapAlloc,
    MmapFree,
    Mremap,
    CacheHit,
    CacheMiss,
    CacheEvict,
    CacheDecay,
    MadviseCall,
    MadviseBytes,
    MunmapCall,
    MunmapBytes,
    MunmapRefused,
    ThpAdvised,
}

const EVENTS: usize = Event::ThpAdvised as usize + 1;

impl Event {
    /// The least [`StatsLevel`] that counts this event.
    #[inline(always)]
    pub(crate) const fn level(self) -> StatsLevel {
        match self {
            Event::SystemAlloc | Event::SystemFree | Event::PoolFree => StatsLevel::Full,
            _ => StatsLevel::Counters,
        }
    }
}

/// Shards of [`Counters`]: threads spread over them, so that two threads rarely update the same
/// cache line.
const SHARDS: usize = 32;

/// One relaxed atomic per [`Event`], on cache lines of their own.
#[repr(align(128))]
struct Shard([AtomicU64; EVENTS]);

/// The event counters: [`SHARDS`] copies of one relaxed atomic per [`Event`], summed when read.
///
/// A thread adds to the shard its stack pointer picks (`Counters::shard`). Stacks are distinct
/// per thread, megabytes apart, and reading the stack pointer costs no thread-local access (no
/// `__tls_get_addr` in a shared library). A thread whose stack spans two granules, or two
/// threads that pick the same shard, only share a line, never lose an update: every shard is
/// atomic, so the sum is exact at any moment, not only when the process is quiescent. The pool's
/// own events (the busiest: one per small allocation and free) are counted in each thread's heap
/// instead, with plain stores (`pool::Counts`), but for frees by a thread with no heap in the
/// pool.
pub(crate) struct Counters {
    shards: [Shard; SHARDS],
}

impl Counters {
    pub(crate) const fn new() -> Self {
        Counters {
            shards: [const { Shard([const { AtomicU64::new(0) }; EVENTS]) }; SHARDS],
        }
    }

    /// The calling thread's shard: the 2 MiB granule of its stack pointer, modulo [`SHARDS`].
    /// Thread stacks are at least that far apart (Rust's default is 2 MiB, glibc's 8 MiB), so
    /// up to 32 threads of Rust's stacks, or 8 of glibc's, each have a shard of their own; no
    /// hashing, so that counting costs three instructions more than a shared counter.
    #[inline(always)]
    fn shard(&self) -> &Shard {
        &self.shards[(stack_pointer() >> 21) % SHARDS]
    }

    #[inline(always)]
    pub(crate) fn add(&self, event: Event, n: u64) {
        self.shard().0[event as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over the shards.
    fn get(&self, event: Event) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[event as usize].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// A snapshot with these counters and the given state.
    pub(crate) fn snapshot(
        &self,
        policy: &'static str,
        mode: Mode,
        level: StatsLevel,
        lifecycle: Lifecycle,
        threshold: usize,
    ) -> Stats {
        let c = |e| {
            if level >= Event::level(e) {
                self.get(e)
            } else {
                0
            }
        };
        Stats {
            policy,
            mode,
            level,
            lifecycle,
            threshold,
            system_allocs: c(Event::SystemAlloc),
            system_frees: c(Event::SystemFree),
            // (Counted in the pool's heaps alone: every pool allocation is made through one.)
            pool_allocs: 0,
            pool_frees: c(Event::PoolFree),
            pool_held_bytes: 0,
            pool_dirty_bytes: 0,
            pool_purged_bytes: 0,
            mmap_allocs: c(Event::MmapAlloc),
            mmap_frees: c(Event::MmapFree),
            mremaps: c(Event::Mremap),
            bigcache_hits: c(Event::CacheHit),
            bigcache_misses: c(Event::CacheMiss),
            bigcache_evictions: c(Event::CacheEvict),
            bigcache_decayed: c(Event::CacheDecay),
            madvise_calls: c(Event::MadviseCall),
            madvise_bytes: c(Event::MadviseBytes),
            munmap_calls: c(Event::MunmapCall),
            munmap_bytes: c(Event::MunmapBytes),
            munmap_refused: c(Event::MunmapRefused),
            thp_advised: c(Event::ThpAdvised),
            lifecycle_transitions: 0,
            transitions: Transitions::default(),
            candidates: [Candidate::default(); CANDIDATES],
            matches: 0,
            samples: 0,
            explored: 0,
        }
    }
}

/// Somewhere on the calling thread's stack: the stack pointer (one instruction, and no stack
/// slot to make, so a function without a frame keeps none).
#[inline(always)]
fn stack_pointer() -> usize {
    cfg_if::cfg_if! {
        if #[cfg(target_arch = "x86_64")] {
            let sp: usize;
            // SAFETY: reads a register into another; touches no memory, the stack or the flags.
            unsafe {
                core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
            }
            sp
        } else if #[cfg(target_arch = "aarch64")] {
            let sp: usize;
            // SAFETY: as above.
            unsafe {
                core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
            }
            sp
        } else {
            // The address of a local: on the stack too, at the cost of a stack slot.
            let marker = 0u8;
            core::hint::black_box(&marker) as *const u8 as usize
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hakmem {} (mode {}, stats {:?})",
            self.policy, self.mode, self.level
        )?;
        writeln!(
            f,
            "  lifecycle {}  threshold {}  transitions {}",
            self.lifecycle.name(),
            Bytes(self.threshold),
            self.lifecycle_transitions
        )?;
        let (leaders, n) = self.leaders();
        if n > 0 {
            let t = &self.transitions;
            writeln!(
                f,
                "  learning matches {}  samples {}  explored {}  survivors {n}/{CANDIDATES}",
                self.matches, self.samples, self.explored
            )?;
            writeln!(
                f,
                "  transitions converged {}  idle {}  timed out {}  canaries {} (adopted {}, \
                 rolled back {})  degraded {}  shifted {}",
                t.converged,
                t.idle,
                t.timed_out,
                t.canaries,
                t.adopted,
                t.rolled_back,
                t.degraded,
                t.shifted
            )?;
            f.write_str("  ratings")?;
            for c in &leaders[..n] {
                write!(f, "  {} {}", Bytes(c.threshold), c.rating)?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  system  allocs {:>12}  frees {:>12}",
            self.system_allocs, self.system_frees
        )?;
        writeln!(
            f,
            "  pool    allocs {:>12}  frees {:>12}",
            self.pool_allocs, self.pool_frees
        )?;
        writeln!(
            f,
            "  pool    held   {:>12}  dirty {:>12}  purged {}",
            self.pool_held_bytes, self.pool_dirty_bytes, self.pool_purged_bytes
        )?;
        writeln!(
            f,
            "  mmap    allocs {:>12}  frees {:>12}  mremaps {}",
            self.mmap_allocs, self.mmap_frees, self.mremaps
        )?;
        writeln!(
            f,
            "  cache   hits   {:>12}  misses {:>11}  evictions {}  decayed {}",
            self.bigcache_hits,
            self.bigcache_misses,
            self.bigcache_evictions,
            self.bigcache_decayed
        )?;
        writeln!(
            f,
            "  madvise calls  {:>12}  bytes {:>12}  thp advised {}",
            self.madvise_calls, self.madvise_bytes, self.thp_advised
        )?;
        write!(
            f,
            "  munmap  calls  {:>12}  bytes {:>12}  refused {}",
            self.munmap_calls, self.munmap_bytes, self.munmap_refused
        )
    }
}
