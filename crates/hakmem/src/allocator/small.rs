//! The small-object path: the pool where the mode has one, else the system allocator behind a
//! 16-byte header; and the one way an allocation fails ([`out_of_memory`]).

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use super::{Allocator, SystemBlock, MAX_SYSTEM_ALIGN};
use crate::elo::CONTESTED;
use crate::header::{self, Method, HEADER_SIZE};
use crate::os;
use crate::policy::{Config, Policy, StatsLevel};
use crate::pool::{Pool, PoolBlock};
use crate::site::{Path, Site};
use crate::stats::Event;
use crate::system;

// A plain `malloc` block must already be aligned for the header and the user pointer after it.
static_assertions::const_assert!(system::MALLOC_ALIGN >= HEADER_SIZE);

/// Byte written over freed and fresh small blocks when the policy poisons.
const POISON_FREED: u8 = 0xDF;
const POISON_FRESH: u8 = 0xA5;

impl<P: Policy> Allocator<P> {
    /// Whether the pool counts its blocks in each thread's heap (statistics level `Full`).
    #[inline(always)]
    pub(super) fn counts_pool(&self, cfg: &Config) -> bool {
        self.counters(cfg, StatsLevel::Full).is_some()
    }

    /// What follows a pool allocation, whichever path served it: the zeroing it asks for, or
    /// the poison where the policy poisons, and the per-site profile where the policy keeps one
    /// (`counted`: the pool counted the block, [`Self::counts_pool`]).
    #[inline(always)]
    pub(super) fn pool_served(
        &self,
        cfg: &Config,
        p: NonNull<u8>,
        layout: Layout,
        site: Site,
        zeroed: bool,
        counted: bool,
    ) -> *mut u8 {
        if counted {
            // (The profile's test nested in the counter's, as in `count_alloc`.)
            self.record(cfg, site.id32(), layout.size(), Path::Pool);
        }
        let fill = if zeroed {
            Some(0)
        } else {
            cfg.poison.then_some(POISON_FRESH)
        };
        if let Some(byte) = fill {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(p.as_ptr(), byte, layout.size()) };
        }
        p.as_ptr()
    }

    /// The size from which the pool declines a request: the mmap threshold in effect, except in
    /// a learning mode, where it is where the contested range begins (the learned threshold
    /// never falls below it, and the pool's classes reach it): a constant, so that the pool's
    /// fast path does not read the learner, and every contested request is the learner's.
    #[inline(always)]
    pub(super) fn pool_limit(&self, cfg: &Config) -> usize {
        static_assertions::const_assert!(CONTESTED <= crate::pool::MAX_SIZE + 1);
        match self.learner(cfg) {
            Some(_) => CONTESTED,
            None => self.threshold(cfg),
        }
    }

    /// Frees the pool block `block` (poisoned first where the policy poisons).
    ///
    /// # Safety
    /// `block` is [`Pool::block`] of a live block of `pool`, released now (misuse is reported
    /// where the pool can see it: docs/pool.md).
    #[inline(always)]
    pub(super) unsafe fn free_pool(&self, cfg: &Config, pool: &Pool, block: PoolBlock) {
        if cfg.poison {
            // SAFETY: a live pool block of `block.size()` bytes (caller), released now.
            unsafe { ptr::write_bytes(block.ptr().as_ptr(), POISON_FREED, block.size()) };
        }
        let counters = self.counters(cfg, StatsLevel::Full);
        // SAFETY: `block` is `pool`'s block of a live allocation, released now and not used
        // again (caller): `Pool::free`'s contract.
        let counted = unsafe { pool.free(block, counters.is_some()) };
        if let (Some(counters), false) = (counters, counted) {
            // A thread with no heap in the pool: the shared counters count it.
            counters.add(Event::PoolFree, 1);
        }
    }

    /// A system block with a header for `layout`; on failure, retried once after the caches
    /// are released.
    ///
    /// # Safety
    /// `layout.align() <= MAX_SYSTEM_ALIGN`.
    #[inline(always)]
    pub(super) unsafe fn alloc_system(
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
        // SAFETY: `offset` is 16 or the alignment, a power of two ≤ 4096 (`offset_for`): a
        // valid `posix_memalign` alignment.
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
        match fill {
            // Zeros always, the poison pattern only below the policy's limit.
            Some(byte) if byte == 0 || layout.size() < cfg.poison_below => {
                // SAFETY: `user` holds `layout.size()` writable bytes.
                unsafe { fill_bytes(user, byte, layout.size()) };
            }
            _ => {}
        }
        user.as_ptr()
    }

    /// Frees a system block; `written` bounds what the program may have written.
    ///
    /// # Safety
    /// `block` describes a live system block of ours, released now.
    #[inline(always)]
    pub(super) unsafe fn free_system(&self, cfg: &Config, block: SystemBlock, written: usize) {
        let SystemBlock {
            user,
            base,
            capacity,
            offset,
        } = block;
        // SAFETY: the block is live until `free` (caller); poisoning covers its usable bytes
        // only, once the header's length is known to fit the malloc block (it is the one field
        // nothing else checks, and poisoning is the one use of it here).
        unsafe {
            if cfg.poison {
                let usable = system::usable_size(base.as_ptr());
                if capacity < written || usable.is_some_and(|u| capacity > u.saturating_sub(offset))
                {
                    header::bad_length(user, "free", capacity.wrapping_add(offset));
                }
                if capacity < cfg.poison_below {
                    fill_bytes(user, POISON_FREED, capacity);
                }
            }
            header::mark_freed(user, offset);
            system::free(base.as_ptr());
        }
        self.count(cfg, Event::SystemFree, 1);
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
            // SAFETY: `offset` is 16 or a power of two ≤ 4096 (caller): a valid alignment.
            if let Some(base) = NonNull::new(unsafe { system_alloc(offset, len, zeroed) }) {
                return Some(base);
            }
        }
        out_of_memory();
        None
    }
}

/// The one way an allocation fails: null, with `errno = ENOMEM` (glibc's contract for every
/// allocating entry point; the Rust path sets it too, so both behave alike). Nothing else in
/// hakmem changes `errno` (`os`), so this is the value the caller sees.
#[cold]
#[inline(never)]
pub(super) fn out_of_memory() -> *mut u8 {
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

/// Writes `byte` over the `len` bytes at `user`. Out of line: only the policy's `poison`
/// branch and over-aligned zeroed blocks call it.
///
/// # Safety
/// `user` holds `len` writable bytes.
#[inline(never)]
unsafe fn fill_bytes(user: NonNull<u8>, byte: u8, len: usize) {
    // SAFETY: `user` holds `len` writable bytes (caller).
    unsafe { ptr::write_bytes(user.as_ptr(), byte, len) };
}
