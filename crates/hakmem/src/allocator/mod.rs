//! [`Allocator<P>`]: the one hot path, written once against a [`Policy`].
//!
//! Every decision reads `P::config()`, and every optional component is reached through an
//! accessor that asks both the configuration (is it on?) and the policy's
//! [`Parts`](crate::parts::Parts) (is it there?). For a compiled mode both answers are
//! constants, so each `if let Some(cache) = self.cache(cfg)` below is resolved at compile time:
//! a disabled feature leaves neither an instruction nor a byte. For
//! [`Runtime`](crate::mode::Runtime), which holds every component, each is a load and a branch.
//!
//! Routing (SPEC §4): a request below the mmap threshold (and aligned to at most a page) goes to
//! the small-object path ([`small`]) — the pool where the mode has one and it serves the size,
//! else the system allocator with a 16-byte header; anything else is a large block ([`large`]):
//! BigCache where the mode has it, else a fresh mapping. A learning mode's request of at least
//! 512 KiB is contested: its learner routes it. The pool's fast path is inlined and makes no
//! call; its miss, and everything the pool does not take, continue out of line
//! ([`Allocator::allocate`]). A freed or resized pointer is
//! classified once ([`Allocator::classify`]) and handed to the path its [`Kind`] names;
//! resizing lives in [`realloc`].

mod classify;
mod large;
mod realloc;
mod small;

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::batch::Batch;
use crate::bigcache::BigCache;
use crate::elo::CONTESTED;
use crate::header;
use crate::learner::Learner;
use crate::parts::slot::Slot;
use crate::parts::{Parts, SlotOf};
use crate::policy::{self, Config, Evolution, Policy, StatsLevel, Thp};
use crate::pool::{Pool, PoolBlock};
use crate::reentry::Guard;
use crate::report;
use crate::site::{Path, Profile, Site, SiteStat};
use crate::stats::{Counters, Event, Lifecycle, Stats};
use classify::{Capacity, Free};

/// The largest alignment the system path serves; larger ones always take the mmap path.
const MAX_SYSTEM_ALIGN: usize = 4096;

/// A memory allocator whose behaviour is the policy `P`.
///
/// Each instance owns its state (caches, ratings, counters), so several policies can live side
/// by side in one process; it holds only the components `P`'s [`Parts`] name, so MINIMAL's is
/// a few bytes. Use it as the global allocator, usually through the [`Hakmem`] alias, which
/// names the mode chosen by cargo feature:
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: hakmem::Hakmem = hakmem::Hakmem::new();
/// ```
///
/// or as a value of its own:
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use hakmem::{mode::Fast, Allocator};
///
/// static FAST: Allocator<Fast> = Allocator::new();
/// let layout = Layout::new::<[u64; 4]>();
/// unsafe {
///     let p = FAST.alloc(layout);
///     assert!(!p.is_null());
///     FAST.dealloc(p, layout);
/// }
/// ```
///
/// [`Hakmem`]: crate::Hakmem
pub struct Allocator<P: Policy> {
    counters: SlotOf<<P::Parts as Parts>::Counters, Counters>,
    learner: SlotOf<<P::Parts as Parts>::Learner, Learner>,
    sites: SlotOf<<P::Parts as Parts>::Sites, Profile>,
    cache: SlotOf<<P::Parts as Parts>::BigCache, BigCache>,
    batch: SlotOf<<P::Parts as Parts>::Batch, Batch>,
    pool: SlotOf<<P::Parts as Parts>::Pool, Pool>,
    _policy: PhantomData<fn() -> P>,
}

/// What a pointer handed back to the allocator is, found by [`Allocator::classify`].
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// A block of the pool (no header; found by its address).
    Pool(&'a Pool, PoolBlock),
    /// A block of the system allocator behind a header.
    System(SystemBlock),
    /// A mapping of ours (fresh, or handed out by BigCache) behind a header.
    Mapping(Mapping),
}

/// A system block: `user` is `offset` bytes past `base`, the `malloc` block, and holds
/// `capacity` bytes.
#[derive(Clone, Copy)]
struct SystemBlock {
    user: NonNull<u8>,
    base: NonNull<u8>,
    capacity: usize,
    offset: usize,
}

/// A mapping: `user` is `offset` bytes into it, `len` its length as the header says (checked
/// where it is used: a page mapping is recognised by its tag alone), `site` its allocating site.
#[derive(Clone, Copy)]
struct Mapping {
    user: NonNull<u8>,
    len: usize,
    offset: usize,
    site: u32,
}

impl Mapping {
    /// The bytes usable from `user` on.
    #[inline(always)]
    fn capacity(&self) -> usize {
        self.len.wrapping_sub(self.offset)
    }

    /// Whether the header's length can be this mapping's (whole pages, past the offset).
    #[inline(always)]
    fn fits(&self) -> bool {
        header::is_mapping(self.user, self.offset, self.len)
    }

    /// Ends the process unless the header's length [`fits`](Self::fits): a stray write must
    /// reach neither `mremap` nor a copy.
    #[inline(always)]
    fn check(&self, op: &str) {
        if !self.fits() {
            header::bad_length(self.user, op, self.len);
        }
    }
}

impl<P: Policy> Allocator<P> {
    /// A new allocator with empty caches. `const`, so it can initialise a `static`.
    ///
    /// Fails to compile if `P`'s configuration is invalid or uses a component its parts leave
    /// out ([`Policy`]).
    pub const fn new() -> Self {
        const { policy::check::<P>() };
        Allocator {
            counters: Slot::NEW,
            learner: Slot::NEW,
            sites: Slot::NEW,
            cache: Slot::NEW,
            batch: Slot::NEW,
            pool: Slot::NEW,
            _policy: PhantomData,
        }
    }

    // ---- the components, where the configuration turns them on --------------------------------

    /// The pool, if the mode uses one.
    #[inline(always)]
    fn pool(&self, cfg: &Config) -> Option<&Pool> {
        self.pool.when(cfg.pool)
    }

    /// BigCache, if the mode uses it.
    #[inline(always)]
    fn cache(&self, cfg: &Config) -> Option<&BigCache> {
        self.cache.when(cfg.bigcache)
    }

    /// The release batch, if the mode batches.
    #[inline(always)]
    fn batch(&self, cfg: &Config) -> Option<&Batch> {
        self.batch.when(cfg.batch_madvise)
    }

    /// The learner, if the mode learns its threshold.
    #[inline(always)]
    fn learner(&self, cfg: &Config) -> Option<&Learner> {
        self.learner.when(cfg.evolution.learns())
    }

    /// The per-site profile, if the mode keeps one.
    #[inline(always)]
    fn profile(&self, cfg: &Config) -> Option<&Profile> {
        self.sites.when(cfg.stats >= StatsLevel::PerSite)
    }

    /// The counters, if the mode counts events of `level`.
    #[inline(always)]
    fn counters(&self, cfg: &Config, level: StatsLevel) -> Option<&Counters> {
        self.counters.when(cfg.stats >= level)
    }

    // ---- what the program asks ---------------------------------------------------------------

    /// A snapshot of this allocator's state and counters. Never allocates.
    pub fn stats(&self) -> Stats {
        let cfg = P::config();
        let (lifecycle, threshold) = (self.lifecycle(cfg), self.threshold(cfg));
        let snapshot =
            |c: &Counters| c.snapshot(P::NAME, cfg.mode, cfg.stats, lifecycle, threshold);
        let mut stats = match self.counters.get() {
            Some(counters) => snapshot(counters),
            None => snapshot(&Counters::new()),
        };
        if let (Some(pool), true) = (self.pool(cfg), cfg.stats >= StatsLevel::Counters) {
            if cfg.stats >= StatsLevel::Full {
                // Counted in each thread's heap (the shared counters hold only frees by threads
                // with no heap in the pool).
                let counts = pool.counts();
                stats.pool_allocs = stats.pool_allocs.wrapping_add(counts.allocs);
                stats.pool_frees = stats.pool_frees.wrapping_add(counts.frees);
            }
            if let Some(usage) = pool.usage() {
                stats.pool_held_bytes = usage.held_bytes;
                stats.pool_dirty_bytes = usage.dirty_bytes;
                stats.pool_purged_bytes = usage.purged_bytes;
            }
        }
        if let Some(learner) = self.learner(cfg) {
            let l = learner.snapshot();
            stats.candidates = l.candidates;
            stats.transitions = l.transitions;
            stats.lifecycle_transitions = l.transitions.total();
            stats.matches = l.matches;
            stats.samples = l.samples;
            stats.explored = l.explored;
        }
        stats
    }

    /// RESEARCH's per-site profile (statistics level `PerSite`): one row per call site that
    /// allocated (hashed into [`SITE_SLOTS`](crate::SITE_SLOTS) rows), and for `GlobalAlloc`,
    /// which has no caller, one per power-of-two size range. Empty at other levels. Never
    /// allocates.
    pub fn sites(&self) -> impl Iterator<Item = SiteStat> + '_ {
        self.profile(P::config())
            .into_iter()
            .flat_map(Profile::rows)
    }

    /// Asks for this allocator's report — its [`stats`](Self::stats) and, with the per-site
    /// profile (RESEARCH), the heaviest sites — to be written when the process exits, if the
    /// environment says `HAKMEM_REPORT=1`. It goes to stderr, or to the file `HAKMEM_LOG`
    /// names. Returns whether it will be: `false` without the variable, or when an allocator
    /// was registered before (one per process is reported). Never allocates.
    ///
    /// `&'static self`: the report reads the allocator after `main` returns, so it must live
    /// that long — a `static` (the `#[global_allocator]`, typically) or a leaked box.
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: hakmem::Hakmem = hakmem::Hakmem::new();
    ///
    /// fn main() {
    ///     GLOBAL.report_at_exit(); // HAKMEM_REPORT=1 ./program: the report at exit
    ///     // …
    /// }
    /// ```
    pub fn report_at_exit(&'static self) -> bool {
        report::register(self)
    }

    /// Allocates like [`GlobalAlloc::alloc`], attributing the block to `site` (BigCache keeps
    /// large blocks per site; RESEARCH profiles per site). Free it with
    /// [`GlobalAlloc::dealloc`] or resize it with [`GlobalAlloc::realloc`].
    ///
    /// Returns null when memory cannot be had; never panics or aborts for that.
    ///
    /// # Safety
    /// The contract of [`GlobalAlloc::alloc`], except that a zero-sized `layout` is allowed (it
    /// gets a unique block).
    #[inline]
    pub unsafe fn alloc_at(&self, layout: Layout, site: Site) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: `layout` is valid (a `Layout` cannot be otherwise) and the guard is held:
        // `allocate`'s whole contract.
        unsafe { self.allocate(layout, site, false) }
    }

    // ---- entry points without a `Layout` (what a C `malloc` shim needs) ----------------------
    //
    // C's `free(p)`, `realloc(p, n)` and `malloc_usable_size(p)` know only the pointer. Every
    // block says what it is by itself — a pool block by its address, any other by its header —
    // so these classify it like the `GlobalAlloc` methods, only without a size to skip the pool's
    // check with (mimalloc's `mi_free` / `mi_usable_size`, jemalloc's `dallocx` / `sallocx`).

    /// The number of bytes usable from `ptr` on: at least the size it was allocated (or last
    /// reallocated) with. `0` for null. Never allocates.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use hakmem::{mode::Balanced, Allocator};
    ///
    /// static A: Allocator<Balanced> = Allocator::new();
    /// unsafe {
    ///     let p = A.alloc(Layout::from_size_align(100, 8).unwrap());
    ///     assert!(A.usable_size(p) >= 100);
    ///     A.free(p);
    ///     assert_eq!(A.usable_size(core::ptr::null()), 0);
    /// }
    /// ```
    ///
    /// # Safety
    /// `ptr` is null or a live block of this allocator. Misuse that can be seen ends the process
    /// with a message: an address in the pool that is no live block (an interior pointer, a
    /// block of an emptied span), a pointer with no valid header (never allocated here, or
    /// already freed).
    #[inline]
    pub unsafe fn usable_size(&self, ptr: *const u8) -> usize {
        let Some(user) = NonNull::new(ptr.cast_mut()) else {
            return 0;
        };
        let _guard = Guard::enter();
        // SAFETY: a live block of ours or a misuse to be reported (caller): `classify`'s
        // contract.
        unsafe { self.classify(P::config(), user, Capacity { op: "usable_size" }) }
    }

    /// Frees `ptr` without its `Layout`, like C's `free`: a no-op for null.
    ///
    /// # Safety
    /// `ptr` is null or a live block of this allocator (from any of its allocation methods),
    /// not used after this call. Misuse the pool or the header can reveal (a double free, a
    /// foreign pointer; docs/pool.md lists what the pool sees) ends the process with a message.
    #[inline]
    pub unsafe fn free(&self, ptr: *mut u8) {
        let Some(user) = NonNull::new(ptr) else {
            return;
        };
        let _guard = Guard::enter();
        let cfg = P::config();
        // SAFETY: a live block of ours, released now (caller); with no `Layout`, everything
        // its kind says it holds counts as written.
        unsafe { self.classify(cfg, user, Free { written: None }) }
    }

    /// Resizes `ptr` to `new_size` bytes without its `Layout`, like C's `realloc`: the contents
    /// up to the smaller of the two sizes are kept; a null `ptr` allocates. The result is
    /// aligned to 16 bytes (C's `realloc` promises no more), whatever `ptr`'s alignment was.
    /// On failure it returns null and `ptr` stays valid. `new_size == 0` gives a unique
    /// zero-sized block (C's `realloc(p, 0)`, which frees, is the shim's business).
    ///
    /// # Safety
    /// `ptr` is null or a live block of this allocator; if the result is not null, `ptr` is no
    /// longer valid.
    #[inline]
    pub unsafe fn realloc_ptr(&self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: null or a live block of ours (caller), 16-aligned like every block; without
        // a `Layout`, no size is claimed for it; the guard is held.
        unsafe { self.reallocate(ptr, crate::system::MALLOC_ALIGN, None, new_size) }
    }

    // ---- the hot path ------------------------------------------------------------------------

    /// # Safety
    /// `layout` is a valid layout; the caller holds the re-entry guard.
    #[inline(always)]
    unsafe fn allocate(&self, layout: Layout, site: Site, zeroed: bool) -> *mut u8 {
        let cfg = P::config();
        if self.learner(cfg).is_some() && Learner::due() {
            // A learning mode counts every allocation: a tick every 1,024 of this thread's.
            // SAFETY: as this function's.
            return unsafe { self.allocate_after_tick(layout, site, zeroed) };
        }
        // SAFETY: as this function's.
        unsafe { self.allocate_now(cfg, layout, site, zeroed) }
    }

    /// [`Self::allocate`] when this thread's tick is due: the tick, then the allocation. Out of
    /// line, so that the hot path keeps no state across the call.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[cold]
    #[inline(never)]
    unsafe fn allocate_after_tick(&self, layout: Layout, site: Site, zeroed: bool) -> *mut u8 {
        let cfg = P::config();
        if let Some(learner) = self.learner(cfg) {
            learner.tick(cfg);
        }
        // SAFETY: as this function's.
        unsafe { self.allocate_now(cfg, layout, site, zeroed) }
    }

    /// [`Self::allocate`] past the tick: the pool's fast path, or the rest out of line.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(always)]
    unsafe fn allocate_now(
        &self,
        cfg: &Config,
        layout: Layout,
        site: Site,
        zeroed: bool,
    ) -> *mut u8 {
        if let Some(pool) = self.pool(cfg) {
            if Pool::takes(layout.size(), self.pool_limit(cfg)) {
                let count = self.counts_pool(cfg);
                if let Some(p) = pool.alloc_fast(layout, count) {
                    return self.pool_served(cfg, p, layout, site, zeroed, count);
                }
                // SAFETY: as this function's.
                return unsafe { self.allocate_missed(layout, site, zeroed) };
            }
        }
        // SAFETY: as this function's.
        unsafe { self.allocate_unpooled(cfg, layout, site, zeroed) }
    }

    /// [`Self::allocate`] where the pool takes the request but its fast path did not serve it:
    /// the pool's slow path (a refill, an over-aligned request, the first use of the pool or of
    /// a thread), else as if there were no pool. Out of line, so that the fast path makes no
    /// call and saves no register.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(never)]
    unsafe fn allocate_missed(&self, layout: Layout, site: Site, zeroed: bool) -> *mut u8 {
        let cfg = P::config();
        if let Some(pool) = self.pool(cfg) {
            // A refill is a slow path a program that only allocates small blocks still takes:
            // where what BigCache holds decays.
            self.decay_tick(cfg);
            let (huge, count) = (|| cfg.thp != Thp::Off, self.counts_pool(cfg));
            if let Some(p) = pool.alloc_missed(layout, huge, count) {
                return self.pool_served(cfg, p, layout, site, zeroed, count);
            }
        }
        // SAFETY: as this function's.
        unsafe { self.allocate_unpooled(cfg, layout, site, zeroed) }
    }

    /// [`Self::allocate`] for a request the pool does not serve: a learning mode routes the
    /// contested ones, other modes go by the threshold.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(always)]
    unsafe fn allocate_unpooled(
        &self,
        cfg: &Config,
        layout: Layout,
        site: Site,
        zeroed: bool,
    ) -> *mut u8 {
        if let Some(learner) = self.learner(cfg) {
            // Below the smallest candidate threshold every strategy agrees: small. The rest is
            // contested: the learner routes it.
            if layout.size() >= CONTESTED || layout.align() > MAX_SYSTEM_ALIGN {
                // SAFETY: `layout` is valid and the guard held (caller).
                return unsafe { self.alloc_contested(cfg, learner, layout, site, zeroed) };
            }
        } else if !self.is_small(cfg, layout) {
            // (The site's slot and id are computed here, where `Site::NONE` is a constant.)
            // SAFETY: `layout` is valid and the guard held (caller).
            return unsafe { self.alloc_large(cfg, layout, site.slot(), site.id32(), zeroed) };
        }
        // SAFETY: small, so aligned to at most `MAX_SYSTEM_ALIGN` (`is_small`, or the test
        // just above).
        unsafe { self.alloc_system(cfg, layout, site, zeroed) }
    }

    /// A request of a learning mode that is not small straight away: contested (at least 512
    /// KiB) ones are routed by the learner (which measures them); smaller ones with an alignment
    /// above a page are large blocks whatever the threshold.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(never)]
    unsafe fn alloc_contested(
        &self,
        cfg: &Config,
        learner: &Learner,
        layout: Layout,
        site: Site,
        zeroed: bool,
    ) -> *mut u8 {
        let align_ok = layout.align() <= MAX_SYSTEM_ALIGN;
        if layout.size() >= CONTESTED && learner.route(cfg, layout.size(), align_ok) {
            // SAFETY: `route` chose the system path only for an alignment it serves.
            return unsafe { self.alloc_system(cfg, layout, site, zeroed) };
        }
        // SAFETY: `layout` is valid and the guard held (caller).
        unsafe { self.alloc_large(cfg, layout, site.slot(), site.id32(), zeroed) }
    }

    /// `written` bounds the bytes the program may have written (the layout's size): never
    /// more than the block's capacity.
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator holding at least `written` bytes, released now;
    /// the caller holds the re-entry guard.
    #[inline(always)]
    unsafe fn deallocate(&self, ptr: *mut u8, written: usize) {
        let cfg = P::config();
        debug_assert!(!ptr.is_null());
        // SAFETY: blocks are never null (caller).
        let user = unsafe { NonNull::new_unchecked(ptr) };
        // SAFETY: a live block of ours holding at least `written` bytes (caller), released
        // now; each path gets the block its kind describes.
        unsafe {
            self.classify(
                cfg,
                user,
                Free {
                    written: Some(written),
                },
            )
        }
    }

    // ---- shared helpers ----------------------------------------------------------------------

    /// The mmap threshold in effect.
    #[inline(always)]
    fn threshold(&self, cfg: &Config) -> usize {
        match self.learner(cfg) {
            Some(learner) => learner.threshold(cfg.threshold),
            None => cfg.threshold,
        }
    }

    /// Whether `layout` takes the small-object path (else it is a large, mmap-backed block) by
    /// the threshold in effect.
    #[inline(always)]
    fn is_small(&self, cfg: &Config, layout: Layout) -> bool {
        layout.size() < self.threshold(cfg) && layout.align() <= MAX_SYSTEM_ALIGN
    }

    /// Counts an allocation in RESEARCH's per-site profile.
    #[inline(always)]
    fn record(&self, cfg: &Config, site: u32, size: usize, path: Path) {
        if let Some(profile) = self.profile(cfg) {
            profile.record(site, size, path);
        }
    }

    /// Counts an allocation `event` (a `Full`-level one) and, in the per-site profile, its site
    /// and path: the profile's test nested in the counter's, so that a runtime twin whose level
    /// counts neither pays one test.
    #[inline(always)]
    fn count_alloc(&self, cfg: &Config, event: Event, site: Site, size: usize, path: Path) {
        debug_assert_eq!(event.level(), StatsLevel::Full);
        if let Some(counters) = self.counters(cfg, StatsLevel::Full) {
            counters.add(event, 1);
            self.record(cfg, site.id32(), size, path);
        }
    }

    /// Counts `event` if the policy's statistics level keeps it.
    #[inline(always)]
    fn count(&self, cfg: &Config, event: Event, n: u64) {
        if let Some(counters) = self.counters(cfg, event.level()) {
            counters.add(event, n);
        }
    }

    fn lifecycle(&self, cfg: &Config) -> Lifecycle {
        match (cfg.evolution, self.learner(cfg)) {
            (Evolution::Frozen, _) => Lifecycle::Frozen,
            (_, Some(learner)) => learner.lifecycle(),
            _ => Lifecycle::Off,
        }
    }
}

impl<P: Policy> Default for Allocator<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Policy> core::fmt::Debug for Allocator<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Allocator")
            .field("policy", &P::NAME)
            .finish_non_exhaustive()
    }
}

// SAFETY: every block returned is live, aligned to `layout.align()` and at least `layout.size()`
// bytes long until it is freed (system blocks by malloc's contract plus the header offset,
// pool blocks by their class, large blocks by their private mapping); failures return null;
// nothing here unwinds.
unsafe impl<P: Policy> GlobalAlloc for Allocator<P> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: `layout` is valid and the guard is held.
        unsafe { self.allocate(layout, Site::NONE, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: `layout` is valid and the guard is held.
        unsafe { self.allocate(layout, Site::NONE, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _guard = Guard::enter();
        // SAFETY: `ptr` is a live block of this allocator allocated with `layout` (caller), so
        // it holds at least `layout.size()` bytes; the guard is held.
        unsafe { self.deallocate(ptr, layout.size()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: null or a live block of ours allocated with `layout` (caller), so aligned to
        // `layout.align()` and holding `layout.size()` bytes; the guard is held.
        unsafe { self.reallocate(ptr, layout.align(), Some(layout.size()), new_size) }
    }
}
