//! [`Allocator<P>`]: the one hot path, written once against a [`Policy`].
//!
//! Every decision reads `P::config()`. For a compiled mode that is a constant, so each
//! `if cfg.feature` below is resolved at compile time and a disabled feature leaves no
//! instruction; for [`Runtime`](crate::mode::Runtime) each is a load and a branch.
//!
//! Routing (SPEC §4): a request below the mmap threshold (and aligned to at most a page) goes to
//! the small-object path — the pool where the mode has one and it serves the size, else the
//! system allocator with a 16-byte header; anything else is a large block: BigCache where the
//! mode has it, else a fresh mapping. Frees route by the block's header.

use core::alloc::{GlobalAlloc, Layout};
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::batch::{Batch, Released};
use crate::bigcache::{self, BigCache, Meta, CLASSES};
use crate::elo::CONTESTED;
use crate::header::{self, Block, Method, HEADER_SIZE};
use crate::learner::Learner;
use crate::os::{self, Advice, Unmapped};
use crate::policy::{Config, Evolution, FreePolicy, Policy, StatsLevel, Thp};
use crate::pool::{self, Pool};
use crate::reentry::Guard;
use crate::report;
use crate::site::{Path, Profile, Site, SiteStat};
use crate::stats::{Counters, Event, Lifecycle, Stats};
use crate::system;

/// The largest alignment the system path serves; larger ones always take the mmap path.
const MAX_SYSTEM_ALIGN: usize = 4096;

// A plain `malloc` block must already be aligned for the header and the user pointer after it.
static_assertions::const_assert!(system::MALLOC_ALIGN >= HEADER_SIZE);

/// A large request the kernel would not map is offered to the system allocator below this size
/// (`Allocator::large_from_system`). A terabyte the kernel refuses is in no heap either, and
/// asking costs a failed request glibc's price on top of ours (`malloc(3 TiB)` in a loop is
/// glibc's own test); sanitizer allocators even abort on such sizes (AddressSanitizer above
/// 1 TiB) instead of returning null.
const SYSTEM_FALLBACK_MAX: usize = 1 << 40;

/// Blocks of at least this size get `MADV_HUGEPAGE` under [`Thp::Auto`], with their user
/// region aligned to it.
const THP_AUTO_MIN: usize = 2 << 20;

/// Byte written over freed and fresh small blocks when the policy poisons.
const POISON_FREED: u8 = 0xDF;
const POISON_FRESH: u8 = 0xA5;
/// Poisoning covers system blocks below this size: the small objects. Larger ones — which a
/// learning mode's strategy may send to the system allocator — are left alone, so that what the
/// learner measures is the strategy's cost, not the debugging's.
const POISON_BELOW: usize = CONTESTED;

/// A memory allocator whose behaviour is the policy `P`.
///
/// Each instance owns its state (caches, ratings, counters), so several policies can live side
/// by side in one process. Use it as the global allocator, usually through the [`Hakmem`]
/// alias, which names the mode chosen by cargo feature:
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
    counters: Counters,
    learner: Learner,
    sites: Profile,
    cache: BigCache,
    batch: Batch,
    pool: Pool,
    _policy: PhantomData<fn() -> P>,
}

impl<P: Policy> Allocator<P> {
    /// A new allocator with empty caches. `const`, so it can initialise a `static`.
    pub const fn new() -> Self {
        Allocator {
            counters: Counters::new(),
            learner: Learner::new(),
            sites: Profile::new(),
            cache: BigCache::new(),
            batch: Batch::new(),
            pool: Pool::new(),
            _policy: PhantomData,
        }
    }

    /// A snapshot of this allocator's state and counters. Never allocates.
    pub fn stats(&self) -> Stats {
        let cfg = P::config();
        let mut stats = self.counters.snapshot(
            P::NAME,
            cfg.mode,
            cfg.stats,
            self.lifecycle(cfg),
            self.threshold(cfg),
        );
        if cfg.stats >= StatsLevel::Counters {
            if let Some(usage) = self.pool.usage() {
                stats.pool_held_bytes = usage.held_bytes;
                stats.pool_dirty_bytes = usage.dirty_bytes;
                stats.pool_purged_bytes = usage.purged_bytes;
            }
        }
        if cfg.evolution.learns() {
            let l = self.learner.snapshot();
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
        let on = P::config().stats >= StatsLevel::PerSite;
        self.sites.rows().filter(move |_| on)
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
        // SAFETY: forwarded from the caller.
        unsafe { self.allocate(layout, site, false) }
    }

    // ---- entry points without a `Layout` (what a C `malloc` shim needs) ----------------------
    //
    // C's `free(p)`, `realloc(p, n)` and `malloc_usable_size(p)` know only the pointer. Every
    // block says what it is by itself — a pool block by its address, any other by its header —
    // so these route by block kind, like mimalloc's `mi_free` / `mi_usable_size` and jemalloc's
    // `dallocx` / `sallocx`. They cost a little more than the `GlobalAlloc` methods only where
    // a `Layout` would have said something (the bytes written to a large block).

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
        // SAFETY: forwarded from the caller.
        unsafe { self.capacity(P::config(), user, "usable_size") }
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
        // Pool blocks have no header: they are recognised by address, first (no `Layout` says
        // the block is too large to be one).
        if cfg.pool {
            if let Some(block) = self.pool.block(user) {
                // SAFETY: a live block of our pool (caller; misuse is reported where it shows).
                unsafe { self.free_pool(cfg, user, block) };
                return;
            }
        }
        // SAFETY: a live header block of ours has a readable header.
        match unsafe { header::plain_system(user) } {
            // SAFETY: the header says: a plain system block based at `base`.
            Some((base, capacity)) => unsafe {
                self.free_system(cfg, user, base, capacity, HEADER_SIZE, capacity)
            },
            // SAFETY: forwarded.
            None => unsafe { self.free_unsized(cfg, user) },
        }
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
        const ALIGN: usize = crate::system::MALLOC_ALIGN;
        let _guard = Guard::enter();
        let old_size = match NonNull::new(ptr) {
            // SAFETY: forwarded from the caller.
            Some(user) => unsafe { self.capacity(P::config(), user, "realloc") },
            None => 0,
        };
        // SAFETY: a capacity is a size the block holds, so it is a valid size with a 16-byte
        // alignment (blocks never come near `isize::MAX`); the block is live.
        unsafe {
            let old = Layout::from_size_align_unchecked(old_size, ALIGN);
            self.reallocate(ptr, old, new_size)
        }
    }

    /// The usable bytes of `user`, by block kind: a pool block's class size (checked live), a
    /// header block's capacity. `op` names the caller for misuse reports.
    ///
    /// # Safety
    /// `user` is a live block of this allocator (or a misuse to be reported).
    #[inline(always)]
    unsafe fn capacity(&self, cfg: &Config, user: NonNull<u8>, op: &str) -> usize {
        if cfg.pool {
            if let Some(size) = self.pool.usable_size(user, op) {
                return size;
            }
        }
        // SAFETY: a live header block of ours has a readable header; `read` aborts on
        // anything else.
        unsafe {
            match header::plain_system(user) {
                Some((_, capacity)) => capacity,
                None => header::read(user, op).capacity(),
            }
        }
    }

    /// Frees a block the one-compare path does not know, with all of its capacity counted as
    /// written (no `Layout` says less).
    ///
    /// # Safety
    /// As [`Self::free_other`].
    #[inline(never)]
    unsafe fn free_unsized(&self, cfg: &Config, user: NonNull<u8>) {
        // A bad header is reported by `free_other`'s full decode, as for `dealloc`.
        // SAFETY: forwarded.
        let written = unsafe { header::decode(user) }.map_or(0, |block| block.capacity());
        // SAFETY: forwarded.
        unsafe { self.free_other(cfg, user, written) }
    }

    /// The mmap threshold in effect.
    #[inline(always)]
    fn threshold(&self, cfg: &Config) -> usize {
        if cfg.evolution.learns() {
            self.learner.threshold(cfg.threshold)
        } else {
            cfg.threshold
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
    fn profile(&self, cfg: &Config, site: u32, size: usize, path: Path) {
        if cfg.stats >= StatsLevel::PerSite {
            self.sites.record(site, size, path);
        }
    }

    /// Counts an allocation `event` (a `Full`-level one) and, in the per-site profile, its site
    /// and path: the profile's test nested in the counter's, so that a runtime twin whose level
    /// counts neither pays one test.
    #[inline(always)]
    fn count_alloc(&self, cfg: &Config, event: Event, site: Site, size: usize, path: Path) {
        debug_assert_eq!(event.level(), StatsLevel::Full);
        if cfg.stats >= StatsLevel::Full {
            self.counters.add(event, 1);
            self.profile(cfg, site.id32(), size, path);
        }
    }

    fn lifecycle(&self, cfg: &Config) -> Lifecycle {
        match cfg.evolution {
            Evolution::Off => Lifecycle::Off,
            Evolution::Frozen => Lifecycle::Frozen,
            Evolution::LearnThenFreeze | Evolution::LearnForever => self.learner.lifecycle(),
        }
    }

    /// Counts `event` if the policy's statistics level keeps it.
    #[inline(always)]
    fn count(&self, cfg: &Config, event: Event, n: u64) {
        // Every event's level is above `None`, so `None` counts nothing.
        if cfg.stats >= event.level() {
            self.counters.add(event, n);
        }
    }

    // ---- the hot path ------------------------------------------------------------------------

    /// # Safety
    /// `layout` is a valid layout; the caller holds the re-entry guard.
    #[inline(always)]
    unsafe fn allocate(&self, layout: Layout, site: Site, zeroed: bool) -> *mut u8 {
        let cfg = P::config();
        if cfg.pool {
            if let Some(p) = self
                .pool
                .alloc(layout, zeroed, self.threshold(cfg), || cfg.thp != Thp::Off)
            {
                self.count_alloc(cfg, Event::PoolAlloc, site, layout.size(), Path::Pool);
                if cfg.poison && !zeroed {
                    // SAFETY: the block holds `layout.size()` bytes.
                    unsafe { ptr::write_bytes(p.as_ptr(), POISON_FRESH, layout.size()) };
                }
                return p.as_ptr();
            }
        }
        if cfg.evolution.learns() {
            // A learning mode: count the allocation (a tick every 1,024 of this thread's).
            // Below the smallest candidate threshold every strategy agrees: small. The rest is
            // contested: the learner routes it.
            self.learner.tick(cfg);
            if layout.size() >= CONTESTED || layout.align() > MAX_SYSTEM_ALIGN {
                // SAFETY: forwarded.
                return unsafe { self.alloc_contested(cfg, layout, site, zeroed) };
            }
        } else if !self.is_small(cfg, layout) {
            // SAFETY: forwarded.
            // (The site's slot and id are computed here, where `Site::NONE` is a constant.)
            return unsafe { self.alloc_large(cfg, layout, site.slot(), site.id32(), zeroed) };
        }
        // SAFETY: forwarded; the alignment is within what the system path serves.
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
        layout: Layout,
        site: Site,
        zeroed: bool,
    ) -> *mut u8 {
        let align_ok = layout.align() <= MAX_SYSTEM_ALIGN;
        if layout.size() >= CONTESTED && self.learner.route(cfg, layout.size(), align_ok) {
            // SAFETY: forwarded; `route` chose the system path only for an alignment it serves.
            return unsafe { self.alloc_system(cfg, layout, site, zeroed) };
        }
        // SAFETY: forwarded.
        let user = unsafe { self.alloc_large(cfg, layout, site.slot(), site.id32(), zeroed) };
        if cfg.stats >= StatsLevel::PerSite {
            if let Some(user) = NonNull::new(user) {
                // SAFETY: a block just allocated: its header is ours and valid.
                let path = match unsafe { header::read(user, "alloc") }.method {
                    Method::Cached => Some(Path::Cached),
                    Method::Mmap => Some(Path::Mmap),
                    // Not mapped after all: the system path counted it.
                    Method::System => None,
                };
                if let Some(path) = path {
                    self.profile(cfg, site.id32(), layout.size(), path);
                }
            }
        }
        user
    }

    /// `written` bounds the bytes the program may have written (the layout's size, or the
    /// capacity where no layout is known): never more than the block's capacity, so above the
    /// pool's largest class it tells that the block is no pool block.
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator; the caller holds the re-entry guard.
    #[inline(always)]
    unsafe fn deallocate(&self, ptr: *mut u8, written: usize) {
        let cfg = P::config();
        debug_assert!(!ptr.is_null());
        // SAFETY: blocks are never null (caller).
        let user = unsafe { NonNull::new_unchecked(ptr) };
        if cfg.pool {
            if written > pool::MAX_SIZE {
                // Larger than any pool block (or plain system block, below the threshold of a
                // pool mode): a mapping, recognised by the next compare (any other block is
                // decoded in full there).
                // SAFETY: forwarded.
                return unsafe { self.free_other(cfg, user, written) };
            }
            // Pool blocks have no header: they are recognised by address, first.
            if let Some(block) = self.pool.block(user) {
                // SAFETY: a live block of our pool (caller).
                return unsafe { self.free_pool(cfg, user, block) };
            }
        }
        // SAFETY: a live header block of ours has a readable header.
        match unsafe { header::plain_system(user) } {
            // The commonest block, recognised with one compare.
            // SAFETY: the header says: a plain system block based at `base`.
            Some((base, capacity)) => unsafe {
                self.free_system(cfg, user, base, capacity, HEADER_SIZE, written)
            },
            // SAFETY: forwarded.
            None => unsafe { self.free_other(cfg, user, written) },
        }
    }

    /// Frees the pool block `block` at `user` (poisoned first where the policy poisons).
    ///
    /// # Safety
    /// `block` is [`Pool::block`] of `user`, a live block of this allocator's pool (misuse is
    /// reported where the pool can see it: docs/pool.md).
    #[inline(always)]
    unsafe fn free_pool(&self, cfg: &Config, user: NonNull<u8>, block: pool::PoolBlock) {
        if cfg.poison {
            // SAFETY: a live pool block of `block.size()` bytes, released now.
            unsafe { ptr::write_bytes(user.as_ptr(), POISON_FREED, block.size()) };
        }
        // SAFETY: forwarded.
        unsafe { self.pool.free(block) };
        self.count(cfg, Event::PoolFree, 1);
    }

    /// # Safety
    /// The contract of [`GlobalAlloc::realloc`]; the caller holds the re-entry guard.
    #[inline(always)]
    unsafe fn reallocate(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let cfg = P::config();
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return out_of_memory();
        };
        let Some(user) = NonNull::new(ptr) else {
            // SAFETY: realloc of nothing is an allocation.
            return unsafe { self.allocate(new_layout, Site::NONE, false) };
        };
        match cfg.pool.then(|| self.pool.block(user)).flatten() {
            // A pool block stays put while the new size fits and still needs more than half of
            // it (else it moves to a smaller class, or out of the pool).
            Some(block) => {
                if new_size <= block.size() && new_size > block.size() / 2 {
                    return ptr;
                }
            }
            None => {
                // SAFETY: not a pool block, so a header block of ours (checked: aborts if not).
                let block = unsafe { header::read(user, "realloc") };
                // SAFETY: `block` is live and `new_layout` valid.
                if let Some(p) = unsafe { self.resize_in_place(cfg, &block, new_layout) } {
                    return p.as_ptr();
                }
            }
        }
        // Move: new block, copy what both hold, free the old one.
        // SAFETY: `new_layout` is valid.
        let new = unsafe { self.allocate(new_layout, Site::NONE, false) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and hold at least the copied length.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.deallocate(ptr, layout.size());
            }
        }
        new
    }

    // ---- the small-object path (system allocator + header) -----------------------------------

    /// # Safety
    /// `layout.align() <= MAX_SYSTEM_ALIGN`.
    #[inline(always)]
    unsafe fn alloc_system(
        &self,
        cfg: &Config,
        layout: Layout,
        site: Site,
        zeroed: bool,
    ) -> *mut u8 {
        debug_assert!(layout.align() <= MAX_SYSTEM_ALIGN);
        let offset = header::offset_for(layout.align(), MAX_SYSTEM_ALIGN);
        // A length past `PTRDIFF_MAX` (saturated, not wrapped) is one the system allocator
        // refuses, like any it cannot serve: no test of our own on this path.
        let len = layout.size().saturating_add(offset);
        // SAFETY: forwarded; the alignment is a power of two ≥ 16 when used.
        let base = match NonNull::new(unsafe { system_alloc(offset, len, zeroed) }) {
            Some(base) => base,
            // Out of memory: what the caches hold may be what the system allocator lacks.
            // (`ENOMEM` is set there if it still fails: one call site on this path.)
            // SAFETY: as above.
            None => match unsafe { self.system_after_reclaim(cfg, offset, len, zeroed) } {
                Some(base) => base,
                None => return ptr::null_mut(),
            },
        };
        self.count_alloc(cfg, Event::SystemAlloc, site, layout.size(), Path::System);
        // SAFETY: `base` holds `len = size + offset` bytes and is aligned to `offset` (malloc
        // gives 16, posix_memalign gives `offset`), so `base + offset` is 16-aligned.
        let user = unsafe { header::write(base, len, offset, Method::System, site.id32()) };
        // `calloc` zeroed the plain blocks; `posix_memalign` zeroes nothing.
        let fill = if zeroed {
            (offset != HEADER_SIZE).then_some(0)
        } else {
            cfg.poison.then_some(POISON_FRESH)
        };
        if let Some(byte) = fill {
            // SAFETY: `user` holds `layout.size()` writable bytes.
            unsafe { poison(user, byte, layout.size()) };
        }
        user.as_ptr()
    }

    /// `capacity` comes from the header; `written` bounds what the program may have written.
    ///
    /// # Safety
    /// `user` is a live system block with this base and offset, released now.
    #[inline(always)]
    unsafe fn free_system(
        &self,
        cfg: &Config,
        user: NonNull<u8>,
        base: NonNull<u8>,
        capacity: usize,
        offset: usize,
        written: usize,
    ) {
        // SAFETY: the block is live until `free`; poisoning covers its usable bytes only, once
        // the header's length is known to fit the malloc block (it is the one field nothing
        // else checks, and poisoning is the one use of it here).
        unsafe {
            if cfg.poison {
                let usable = system::usable_size(base.as_ptr());
                if capacity < written || usable.is_some_and(|u| capacity > u.saturating_sub(offset))
                {
                    header::bad_length(user, "free", capacity.wrapping_add(offset));
                }
                poison(user, POISON_FREED, capacity);
            }
            header::mark_freed(user, offset);
            system::free(base.as_ptr());
        }
        self.count(cfg, Event::SystemFree, 1);
    }

    /// Frees any block the one-compare path does not: mappings (class blocks recognised by one
    /// more compare), over-aligned system blocks, and anything else, which is decoded in full.
    ///
    /// # Safety
    /// `user` is a live block of this allocator (or a misuse to be reported).
    #[inline(never)]
    unsafe fn free_other(&self, cfg: &Config, user: NonNull<u8>, written: usize) {
        // BigCache's class blocks (4 KiB-offset mappings) are recognised with one compare.
        if user.as_ptr() as usize % HEADER_SIZE == 0 && os::page_size() == 4096 {
            // SAFETY: aligned; a live block of ours has a readable header.
            if let Some((len, site)) = unsafe { header::page_mapping(user) } {
                // SAFETY: the header says: a mapping of ours, one page before `user`.
                return unsafe { self.free_mapping(cfg, user, len, 4096, site, written) };
            }
        }
        // SAFETY: forwarded.
        unsafe { self.free_decoded(cfg, user, written) }
    }

    /// Frees any other block after decoding and validating its header (a bad header ends the
    /// process with a message).
    ///
    /// # Safety
    /// `user` is a live block of this allocator (or a misuse to be reported).
    #[inline(never)]
    unsafe fn free_decoded(&self, cfg: &Config, user: NonNull<u8>, written: usize) {
        // SAFETY: forwarded; `read` aborts on anything but a valid header.
        let block = unsafe { header::read(user, "free") };
        match block.method {
            // SAFETY: the header says the system allocator owns it.
            Method::System => unsafe {
                self.free_system(
                    cfg,
                    user,
                    block.base,
                    block.capacity(),
                    block.offset,
                    written,
                )
            },
            // SAFETY: the header says it is a mapping of ours.
            Method::Mmap | Method::Cached => unsafe {
                self.free_mapping(cfg, user, block.len, block.offset, block.site, written)
            },
        }
    }

    // ---- the large-block path (mmap, BigCache, free policy, THP) -----------------------------

    /// The large path: a BigCache hit where the mode has one, else a fresh mapping. Kept free of
    /// calls on the hit path, so that it needs no register saving.
    #[inline(never)]
    unsafe fn alloc_large(
        &self,
        cfg: &Config,
        layout: Layout,
        site_slot: usize,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        let page = os::page_size();
        // A request BigCache can serve is mapped as a block of its class (see `bigcache`).
        let class = if cfg.bigcache && layout.align() <= page {
            bigcache::class_of(layout.size())
        } else {
            None
        };
        if let Some(class) = class {
            let len = page + CLASSES[class];
            if let Some(user) = self.cache.take(class, site_slot, len) {
                self.count(cfg, Event::CacheHit, 1);
                // SAFETY: a cached class block: mapped, `len` long, its header page ours.
                unsafe {
                    header::write(user.sub(page), len, page, Method::Cached, site_id);
                    if zeroed {
                        // Only what a previous owner may have written is not zero.
                        let dirty = Meta::read(user).dirty().min(layout.size());
                        ptr::write_bytes(user.as_ptr(), 0, dirty);
                    }
                }
                return user.as_ptr();
            }
            self.count(cfg, Event::CacheMiss, 1);
        }
        // SAFETY: forwarded.
        unsafe { self.map_large(cfg, layout, site_id, class, zeroed) }
    }

    /// Maps a fresh large block: of its BigCache class if it has one, 2 MiB-aligned for huge
    /// pages where THP applies. If the kernel will not map it, the system allocator may still
    /// serve it ([`Self::large_from_system`]).
    #[inline(never)]
    unsafe fn map_large(
        &self,
        cfg: &Config,
        layout: Layout,
        site_id: u32,
        class: Option<usize>,
        zeroed: bool,
    ) -> *mut u8 {
        let page = os::page_size();
        let size = class.map_or(layout.size(), |c| CLASSES[c]);
        let huge = cfg.thp != Thp::Off && size >= THP_AUTO_MIN && layout.align() <= page;
        // Huge-page candidates get their user region 2 MiB-aligned, the header in the page
        // before it: one extra page, and the kernel can back the region with huge pages.
        let (align, offset) = if huge || class.is_some() {
            (if huge { THP_AUTO_MIN } else { page }, page)
        } else {
            (layout.align(), header::offset_for(layout.align(), page))
        };
        let Some((base, len)) = (match map_block(size, align, offset, page) {
            Some(mapping) => Some(mapping),
            // Out of memory: release what the caches hold and try once more.
            None if self.may_reclaim(cfg) && self.reclaim(cfg) => {
                map_block(size, align, offset, page)
            }
            None => None,
        }) else {
            // SAFETY: forwarded.
            return unsafe { self.large_from_system(cfg, layout, site_id, zeroed) };
        };
        self.count(cfg, Event::MmapAlloc, 1);
        let advise_thp = match cfg.thp {
            Thp::Off => false,
            Thp::Auto => huge,
            Thp::On => true,
        };
        // SAFETY: `[base, base + len)` is the mapping just made. Fresh pages are zero, so
        // `zeroed` needs no memset (and the metadata word of a page-offset mapping reads "no
        // class"; a class block's says its class, nothing dirty).
        unsafe {
            if advise_thp && os::advise(base, len, Advice::HugePage) {
                self.count(cfg, Event::ThpAdvised, 1);
            }
            let user = header::write(base, len, offset, Method::Mmap, site_id);
            if class.is_some() {
                Meta::new(class, 0).write(user);
            }
            user.as_ptr()
        }
    }

    /// A large request the kernel would not map: served by the system allocator (with a header,
    /// freed by it later like any system block) if its alignment allows and it is below
    /// [`SYSTEM_FALLBACK_MAX`], else null with `ENOMEM`. When the address space is what ran out
    /// (`RLIMIT_AS`), glibc may still hold freed memory in its heap that no `mmap` can reach —
    /// what glibc's own `malloc` would serve.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[cold]
    #[inline(never)]
    unsafe fn large_from_system(
        &self,
        cfg: &Config,
        layout: Layout,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        if layout.align() > MAX_SYSTEM_ALIGN || layout.size() >= SYSTEM_FALLBACK_MAX {
            return out_of_memory();
        }
        let site = Site::from_raw(u64::from(site_id));
        // SAFETY: forwarded; the alignment is one the system path serves.
        unsafe { self.alloc_system(cfg, layout, site, zeroed) }
    }

    /// Frees a large block (the mapping `len` bytes long, `offset` bytes before `user`): into
    /// BigCache when the mode has it and the block fits — HOT as it is, or WARM (after
    /// `MADV_FREE`) when its class has not been reused lately — else out to the OS (COLD), in
    /// batches where the mode batches. `written` bounds the bytes the program may have written
    /// (the layout's size). The HOT path makes no call.
    ///
    /// # Safety
    /// `user` is a live mmap-backed block with this mapping, released now.
    #[inline(never)]
    unsafe fn free_mapping(
        &self,
        cfg: &Config,
        user: NonNull<u8>,
        len: usize,
        offset: usize,
        site: u32,
        written: usize,
    ) {
        self.count(cfg, Event::MmapFree, 1);
        // SAFETY: the block is ours and no longer used by the program; from here on only the
        // cache or the OS owns it. A class block has its dirty word in its header page.
        unsafe {
            header::mark_freed(user, offset);
            if offset == os::page_size() {
                // A class block (one header page, then exactly a class's bytes) says so in its
                // metadata word; one compare checks both the class and the header's length
                // (written together: a stray write that changed either must not reach the
                // cache or `munmap`).
                let meta = Meta::read(user);
                let consistent = offset + meta.class_bytes() == len;
                if cfg.bigcache && consistent {
                    let class = meta.class_unchecked();
                    if cfg.free_policy == FreePolicy::Adaptive && !self.cache.is_hot(class) {
                        return self.cache_warm(cfg, class, user, len, site);
                    }
                    meta.with_dirty(meta.dirty().max(written)).write(user);
                    if self.cache_put(cfg, class, user, len, site) {
                        return;
                    }
                } else if !consistent
                    && (meta.class().is_some() || !header::is_mapping(user, offset, len))
                {
                    // (`page_mapping` recognised it by its tag alone.)
                    header::bad_length(user, "free", len);
                }
            }
            self.release_mapping(cfg, user, offset, len)
        }
    }

    /// Caches a class block WARM: advised `MADV_FREE` first, so the kernel may take its pages if
    /// it needs them (what it does not take keeps its contents: all of it counts as dirty).
    ///
    /// # Safety
    /// As [`Self::free_mapping`], for a class block of `class` tagged freed.
    #[inline(never)]
    unsafe fn cache_warm(
        &self,
        cfg: &Config,
        class: usize,
        user: NonNull<u8>,
        len: usize,
        site: u32,
    ) {
        // (The mask is a no-op, a class being below 8, that drops the bounds check.)
        let capacity = CLASSES[class & (CLASSES.len() - 1)];
        // SAFETY: the user region is whole pages of the block's mapping, unused now; its dirty
        // word is in its header page.
        unsafe {
            if os::advise(user, capacity, Advice::Free) {
                self.count(cfg, Event::MadviseCall, 1);
                self.count(cfg, Event::MadviseBytes, capacity as u64);
            }
            Meta::new(Some(class), capacity).write(user);
            if self.cache_put(cfg, class, user, len, site) {
                return;
            }
            self.release_mapping(cfg, user, os::page_size(), len)
        }
    }

    /// Puts a freed class block into BigCache under the cap; counts an eviction if it does not
    /// fit (the caller then releases it).
    ///
    /// # Safety
    /// As [`BigCache::put`].
    #[inline(always)]
    unsafe fn cache_put(
        &self,
        cfg: &Config,
        class: usize,
        user: NonNull<u8>,
        len: usize,
        site: u32,
    ) -> bool {
        let slot = Site::from_raw(u64::from(site)).slot();
        // SAFETY: forwarded from the caller.
        if unsafe { self.cache.put(class, slot, user, len, cfg.bigcache_bytes) } {
            return true;
        }
        self.count(cfg, Event::CacheEvict, 1);
        false
    }

    /// The system allocator failed: retries once after [`Self::reclaim`], where the mode has
    /// caches to release; `None` (with `errno = ENOMEM`, [`out_of_memory`]) if it fails again.
    /// Out of line, so that the hot path only carries the call.
    ///
    /// # Safety
    /// As [`system_alloc`].
    #[cold]
    #[inline(never)]
    unsafe fn system_after_reclaim(
        &self,
        cfg: &Config,
        offset: usize,
        len: usize,
        zeroed: bool,
    ) -> Option<NonNull<u8>> {
        if self.may_reclaim(cfg) && self.reclaim(cfg) {
            // SAFETY: forwarded from the caller.
            if let Some(base) = NonNull::new(unsafe { system_alloc(offset, len, zeroed) }) {
                return Some(base);
            }
        }
        out_of_memory();
        None
    }

    /// Whether the mode keeps anything [`Self::reclaim`] could release (a constant for a
    /// compiled mode, so MINIMAL's failure paths carry no call).
    #[inline(always)]
    fn may_reclaim(&self, cfg: &Config) -> bool {
        cfg.bigcache || cfg.batch_madvise
    }

    /// Memory has run out: returns every block BigCache holds and every pending release to the
    /// OS, so that the failed request can be tried again. Returns whether anything was
    /// released. Off the hot path: only a failed `mmap` or `malloc` calls it.
    #[cold]
    #[inline(never)]
    fn reclaim(&self, cfg: &Config) -> bool {
        let mut released = 0u64;
        if cfg.bigcache {
            let page = os::page_size();
            self.cache.drain(page, |user, len| {
                // SAFETY: a drained block is a whole mapping of ours (one header page before
                // `user`) that only the cache referred to, and the cache no longer does.
                let unmapped = unsafe { os::unmap(user.sub(page), len) };
                debug_assert!(
                    unmapped != Unmapped::Invalid,
                    "a cached block's length is its class's"
                );
                self.count(cfg, Event::CacheEvict, 1);
                self.count_released(cfg, Released::one(unmapped, len));
                released += 1;
            });
        }
        if cfg.batch_madvise {
            let done = self.batch.flush_now();
            self.count_released(cfg, done);
            released += done.calls;
        }
        released > 0
    }

    /// Returns the mapping of the block at `user` (`offset` bytes in, `len` long) to the OS:
    /// batched where the mode batches, else at once. A mapping the kernel cannot split at the
    /// map-count limit stays mapped with its pages released ([`Unmapped::Kept`]); a range it
    /// refuses as such cannot have been the mapping's: reported as a corrupted header.
    ///
    /// # Safety
    /// The mapping is a whole mapping of ours that nothing refers to any more.
    #[inline(never)]
    unsafe fn release_mapping(&self, cfg: &Config, user: NonNull<u8>, offset: usize, len: usize) {
        // SAFETY: forwarded from the caller.
        unsafe {
            let base = user.sub(offset);
            match cfg.free_policy {
                FreePolicy::Adaptive if cfg.batch_madvise => {
                    let done = self.batch.release(base, len);
                    self.count_released(cfg, done);
                }
                FreePolicy::Immediate | FreePolicy::Adaptive => {
                    let unmapped = os::unmap(base, len);
                    if unmapped == Unmapped::Invalid {
                        header::bad_length(user, "free", len);
                    }
                    self.count_released(cfg, Released::one(unmapped, len));
                }
            }
        }
    }

    /// Counts what a release to the OS did (one `munmap`, or a batch's).
    #[inline(always)]
    fn count_released(&self, cfg: &Config, done: Released) {
        self.count(cfg, Event::MunmapCall, done.calls);
        self.count(cfg, Event::MunmapBytes, done.bytes);
        self.count(cfg, Event::MunmapRefused, done.refused);
    }

    /// Resizes `block` without moving its contents by hand, if its backend allows: `realloc`
    /// for a system block staying small, the mapping itself (in place or by `mremap`) for a
    /// large block staying large. `None` means "move it".
    ///
    /// # Safety
    /// `block` is live; `new` is its layout after the resize.
    unsafe fn resize_in_place(
        &self,
        cfg: &Config,
        block: &Block,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        let small = self.is_small(cfg, new);
        match block.method {
            Method::System if small && block.offset == HEADER_SIZE => {
                let len = new.size().checked_add(HEADER_SIZE)?;
                if len > isize::MAX as usize {
                    return None;
                }
                // SAFETY: a live malloc block; on failure it stays valid (and we move instead,
                // which fails the same way and returns null).
                let base = NonNull::new(unsafe { system::realloc(block.base.as_ptr(), len) })?;
                // SAFETY: realloc kept the header bytes and 16-alignment.
                unsafe {
                    let user = base.add(HEADER_SIZE);
                    header::set_len(user, len);
                    Some(user)
                }
            }
            Method::Mmap | Method::Cached if !small => {
                let page = os::page_size();
                if new.size() <= block.capacity() {
                    // Shrink in place: a cacheable block keeps its class; any other gives its
                    // whole unused pages back.
                    if let Some(class) = cacheable(block) {
                        // It may have been written past its new size: when it is freed, the
                        // layout will not say so, so count all of it as dirty now.
                        // SAFETY: a class block has its metadata word in its header page.
                        unsafe { Meta::new(Some(class), block.capacity()).write(block.user) };
                    } else {
                        let len = round_up(new.size() + block.offset, page)?;
                        if len < block.len {
                            // SAFETY: the tail is whole pages of the block's mapping, unused
                            // now; shrinking never moves the mapping.
                            unsafe { os::remap(block.base, block.len, len) }?;
                            // SAFETY: the header is unmoved.
                            unsafe { header::set_len(block.user, len) };
                        }
                    }
                    return Some(block.user);
                }
                if new.align() > page {
                    return None; // mremap keeps page alignment only
                }
                let len = round_up(new.size().checked_add(block.offset)?, page)?;
                // SAFETY: the block's mapping is ours; pages move, the header moves with them.
                let base = unsafe { os::remap(block.base, block.len, len) }?;
                self.count(cfg, Event::Mremap, 1);
                // SAFETY: the header (and a page-offset mapping's metadata word) moved with the
                // mapping, at the same offset.
                unsafe {
                    let user = base.add(block.offset);
                    header::set_len(user, len);
                    if block.offset == page {
                        // The block may have become, or stopped being, a class block; what
                        // the program wrote before is dirty, the new pages are zero.
                        let class = bigcache::class_of_capacity(len - page);
                        Meta::new(class, block.capacity()).write(user);
                    }
                    Some(user)
                }
            }
            _ => None,
        }
    }
}

/// The one way an allocation fails: null, with `errno = ENOMEM` (glibc's contract for every
/// allocating entry point; the Rust path sets it too, so both behave alike). Nothing else in
/// hakmem changes `errno` (`os`), so this is the value the caller sees.
#[cold]
#[inline(never)]
fn out_of_memory() -> *mut u8 {
    os::set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// `malloc(len)` (`calloc` if `zeroed`) for the plain 16-byte offset, else
/// `posix_memalign(offset, len)`. Null on failure.
///
/// # Safety
/// `offset` is [`HEADER_SIZE`] or a power of two ≥ 16 (a valid `posix_memalign` alignment).
#[inline(always)]
unsafe fn system_alloc(offset: usize, len: usize, zeroed: bool) -> *mut u8 {
    // SAFETY: plain C allocation; the alignment is valid (caller).
    unsafe {
        if offset == HEADER_SIZE {
            system::alloc(len, zeroed)
        } else {
            system::alloc_aligned(offset, len)
        }
    }
}

/// Maps a block for `size` bytes after an `offset`-byte lead-in such that `base + offset` is
/// aligned to `align`. Returns the base and the mapping length, or `None` if the size overflows
/// or the kernel refuses.
///
/// A zero-byte request maps one byte's worth: with a page-sized `offset`, `base + offset` would
/// otherwise be the end of the mapping, the address of whatever the kernel maps next (the
/// pool's region, once: `usable_size` then took the block for a pool block).
fn map_block(
    size: usize,
    align: usize,
    offset: usize,
    page: usize,
) -> Option<(NonNull<u8>, usize)> {
    let len = round_up(size.max(1).checked_add(offset)?, page)?;
    if align <= page {
        return Some((os::map(len)?, len));
    }
    // Over-aligned: map enough to slide the block to an aligned spot, then trim both ends.
    debug_assert_eq!(offset, page);
    let span = len.checked_add(align - page)?;
    if span > isize::MAX as usize {
        return None;
    }
    let raw = os::map(span)?;
    let raw_addr = raw.as_ptr() as usize;
    let user_addr = (raw_addr + offset).next_multiple_of(align);
    let head = user_addr - offset - raw_addr;
    let tail = span - head - len;
    // SAFETY: `[raw, raw + span)` is our fresh mapping; head and tail are whole pages of it
    // (all addresses involved are page multiples) outside the kept `[base, base + len)`.
    unsafe {
        let base = raw.add(head);
        // (Whole pages inside our fresh mapping: the kernel does not refuse them.)
        if head > 0 {
            let _ = os::unmap(raw, head);
        }
        if tail > 0 {
            let _ = os::unmap(base.add(len), tail);
        }
        Some((base, len))
    }
}

/// The BigCache class of a large block, if it is a class block (one header page, then exactly
/// a class's bytes, and its metadata word says so).
fn cacheable(block: &Block) -> Option<usize> {
    if block.offset != os::page_size() {
        return None;
    }
    // SAFETY: a one-page offset mapping has its metadata word in its header page.
    unsafe { Meta::read(block.user) }.class()
}

/// Writes `byte` over the `len` bytes at `user`: zeros always, the poison pattern only below
/// [`POISON_BELOW`]. Out of line, so that the size test stays inside the policy's `poison`
/// branch.
///
/// # Safety
/// `user` holds `len` writable bytes.
#[inline(never)]
unsafe fn poison(user: NonNull<u8>, byte: u8, len: usize) {
    if byte == 0 || len < POISON_BELOW {
        // SAFETY: forwarded from the caller.
        unsafe { ptr::write_bytes(user.as_ptr(), byte, len) };
    }
}

/// `n` rounded up to a multiple of the power of two `to`, or `None` on overflow.
#[inline(always)]
fn round_up(n: usize, to: usize) -> Option<usize> {
    debug_assert!(to.is_power_of_two());
    Some(n.checked_add(to - 1)? & !(to - 1))
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
// large blocks by their private mapping); failures return null; nothing here unwinds.
unsafe impl<P: Policy> GlobalAlloc for Allocator<P> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: forwarded from the caller.
        unsafe { self.allocate(layout, Site::NONE, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: forwarded from the caller.
        unsafe { self.allocate(layout, Site::NONE, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _guard = Guard::enter();
        // SAFETY: forwarded from the caller: `ptr` is a live block of this allocator.
        unsafe { self.deallocate(ptr, layout.size()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _guard = Guard::enter();
        // SAFETY: forwarded from the caller.
        unsafe { self.reallocate(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_overflows_to_none() {
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(usize::MAX - 10, 4096), None);
    }

    #[test]
    fn map_block_aligns_the_user_pointer() {
        let page = os::page_size();
        for align in [page * 2, 1 << 21] {
            let (base, len) = map_block(100, align, page, page).unwrap();
            assert_eq!((base.as_ptr() as usize + page) % align, 0);
            assert_eq!(len, 2 * page);
            // SAFETY: the mapping just made.
            assert_eq!(unsafe { os::unmap(base, len) }, Unmapped::Done);
        }
    }

    #[test]
    fn a_zero_byte_block_lies_inside_its_mapping() {
        let page = os::page_size();
        for (align, offset) in [(16, HEADER_SIZE), (page, page), (1 << 21, page)] {
            let (base, len) = map_block(0, align, offset, page).unwrap();
            let (base_addr, user) = (base.as_ptr() as usize, base.as_ptr() as usize + offset);
            assert_eq!(user % align, 0);
            assert!(user < base_addr + len, "align {align}: {len} B mapping");
            // SAFETY: the mapping just made.
            assert_eq!(unsafe { os::unmap(base, len) }, Unmapped::Done);
        }
    }
}
