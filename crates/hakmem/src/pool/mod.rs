//! The pool: hakmem's own thread-local small-object allocator (every built-in mode but MINIMAL;
//! any policy with `Config::pool`). docs/pool.md has the design and the figures.
//!
//! - **Classes** ([`class`]): 56 size classes, 16 B to 512 KiB, no header: a block is found by
//!   its address alone.
//! - **Region** ([`region`]): each pool reserves one 16 GiB range of address space on first use;
//!   a pointer is a pool block iff `(ptr - base) >> 34 == 0`, and its span's descriptor is one
//!   table load away. All of the pool's shared state lives in the region, so pools never mix.
//! - **Spans** ([`span`]): a span serves one class; its free list is intrusive (the link lives
//!   in the free block), fresh blocks are carved from its untouched tail, frees from other
//!   threads go to its lock-free remote stack, collected by the owner.
//! - **Heaps** ([`heap`]): one per thread per pool, holding the thread's spans; an exited
//!   thread's heap, if it still holds spans, is an orphan that the next thread inherits whole
//!   (or a running thread takes over before the region grows); empty spans go back to the
//!   region, kept per class they served (and past a few MiB back to the OS).
//! - **Threads** ([`thread`]): a const `thread_local!` without destructor holds the heap of the
//!   pool used last (the fast slot) and up to 8 per-pool entries; thread exit is a pthread key.
//!
//! The fast paths (inlined into the allocator):
//!
//! - alloc ([`Pool::alloc_fast`]): size and alignment checks, the class (a table load up to
//!   1 KiB), the fast slot's region compared with this pool's, the class's current span, pop its
//!   free list, count (level `Full`: one `inc` in the heap). A miss makes no call here: the
//!   allocator continues out of line with [`Pool::alloc_missed`].
//! - free: the region check, the table load, the span's owner compared with the fast slot's
//!   heap, a double-free check against the list head, push, count (level `Full`), and a branch
//!   taken only when a span that is not current empties.
//!
//! Nothing takes a lock: `fork` in any state leaves a usable pool in the child.

mod class;
mod heap;
mod region;
mod span;
mod thread;

use core::alloc::Layout;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use region::{Counts, Usage};

use heap::Heap;
use region::Region;
use span::{Span, CACHED, FREE, OWNED};

/// The largest request the pool serves.
pub(crate) const MAX_SIZE: usize = class::MAX_SIZE;

/// [`Pool::base`] before the region is reserved. Like [`DISABLED`], it is never within 16 GiB
/// below a user-space address, so the region check fails on it for every pointer.
const NOT_MAPPED: usize = 1 << 63;
/// [`Pool::base`] when the region could not be reserved: the pool serves nothing.
const DISABLED: usize = (1 << 63) | (1 << 62);

/// The per-instance pool: the base address of its region, reserved on first use.
pub(crate) struct Pool {
    base: AtomicUsize,
}

/// A pool block, found by its address. (Two words, so that it travels in registers.)
#[derive(Clone, Copy)]
pub(crate) struct PoolBlock {
    ptr: NonNull<u8>,
    span: *const Span,
}

impl PoolBlock {
    /// The block's address.
    #[inline(always)]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The block's usable size: its class's size (0 for an address that is no block, which the
    /// free path then reports).
    #[inline(always)]
    pub(crate) fn size(&self) -> usize {
        // SAFETY: descriptors are always readable (committed metadata, never unmapped).
        unsafe { (*self.span).block_size.load(Ordering::Relaxed) as usize }
    }
}

impl Pool {
    pub(crate) const fn new() -> Self {
        Pool {
            base: AtomicUsize::new(NOT_MAPPED),
        }
    }

    /// A pool block for `layout`, or `None` when the pool does not serve it: `size >= limit` (the
    /// policy's mmap threshold) or above [`MAX_SIZE`], an alignment above 64 KiB, or no memory.
    /// `huge` (does the policy advise transparent huge pages?) is asked once, on the slow path
    /// that reserves the region: the region's span memory is then advised `MADV_HUGEPAGE` as it
    /// is committed. (A closure, so that a runtime policy's fast path does not read it.)
    /// With `count`, the block is counted in the thread's heap ([`Pool::counts`]).
    ///
    /// The allocator composes the same steps itself, the miss out of line, and zeroes (or
    /// poisons) the block once, whichever step served it.
    #[cfg(test)]
    pub(crate) fn alloc(
        &self,
        layout: Layout,
        zeroed: bool,
        limit: usize,
        huge: impl Fn() -> bool,
        count: bool,
    ) -> Option<NonNull<u8>> {
        if !Pool::takes(layout.size(), limit) {
            return None;
        }
        let block = self
            .alloc_fast(layout, count)
            .or_else(|| self.alloc_missed(layout, huge, count))?;
        if zeroed {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(block.as_ptr(), 0, layout.size()) };
        }
        Some(block)
    }

    /// Whether the pool takes a request of `size` bytes under `limit` (the policy's mmap
    /// threshold); it declines the others at once.
    #[inline(always)]
    pub(crate) fn takes(size: usize, limit: usize) -> bool {
        size < limit.min(MAX_SIZE + 1)
    }

    /// The fast path alone, for a request the pool [`takes`](Pool::takes): a block of
    /// `layout`'s class from the current span, or `None` when the request is over-aligned or the
    /// span has no free block, for the caller to go on with [`Pool::alloc_missed`] (out of line,
    /// so that this path makes no call). The block is not zeroed.
    #[inline(always)]
    pub(crate) fn alloc_fast(&self, layout: Layout, count: bool) -> Option<NonNull<u8>> {
        if layout.align() > class::MIN_ALIGN {
            return None;
        }
        NonNull::new(self.pop(class::of(layout.size()), count)).map(NonNull::cast)
    }

    /// After [`Pool::alloc_fast`] missed: the slow path (a refill, an over-aligned class, the
    /// first use of the pool or of the thread). The block is not zeroed.
    pub(crate) fn alloc_missed(
        &self,
        layout: Layout,
        huge: impl Fn() -> bool,
        count: bool,
    ) -> Option<NonNull<u8>> {
        if layout.align() <= class::MIN_ALIGN {
            self.alloc_slow(class::of(layout.size()), huge, count)
        } else {
            self.alloc_aligned(layout, huge, count)
        }
    }

    /// A block of `class` from this thread's heap's current span when this pool is the fast
    /// slot's and the span has a free block, else null.
    #[inline(always)]
    fn pop(&self, class: usize, count: bool) -> *mut span::Block {
        let base = self.base.load(Ordering::Relaxed);
        thread::with(|t| {
            if t.base.get() == base {
                let heap = t.heap.get();
                // SAFETY: the fast slot holds this thread's heap in the region at `base`.
                unsafe {
                    let block = Heap::pop(heap, class);
                    if count && !block.is_null() {
                        (*heap).count_alloc();
                    }
                    block
                }
            } else {
                ptr::null_mut()
            }
        })
    }

    /// A block of `class`: [`Pool::pop`], else the slow path.
    #[inline(always)]
    fn alloc_class(
        &self,
        class: usize,
        huge: impl Fn() -> bool,
        count: bool,
    ) -> Option<NonNull<u8>> {
        match NonNull::new(self.pop(class, count)) {
            Some(b) => Some(b.cast()),
            None => self.alloc_slow(class, huge, count),
        }
    }

    /// An over-aligned request (16 < align ≤ 64 KiB): a class whose size is a multiple of the
    /// alignment.
    #[cold]
    #[inline(never)]
    fn alloc_aligned(
        &self,
        layout: Layout,
        huge: impl Fn() -> bool,
        count: bool,
    ) -> Option<NonNull<u8>> {
        self.alloc_class(
            class::of_aligned(layout.size(), layout.align())?,
            huge,
            count,
        )
    }

    /// Reserves the region or makes the thread's heap if need be, then refills.
    #[cold]
    #[inline(never)]
    fn alloc_slow(
        &self,
        class: usize,
        huge: impl Fn() -> bool,
        count: bool,
    ) -> Option<NonNull<u8>> {
        let region = self.region(huge)?;
        let heap = thread::heap_in(region)?;
        // SAFETY: this thread's heap in `region`.
        let block = NonNull::new(unsafe { (*heap).refill(region, class) })?;
        if count {
            // SAFETY: as above.
            unsafe { (*heap).count_alloc() };
        }
        Some(block.cast())
    }

    /// The region, reserved now (with `huge()` as its THP advice) if it is not yet.
    fn region(&self, huge: impl Fn() -> bool) -> Option<Region> {
        match self.base.load(Ordering::Acquire) {
            DISABLED => None,
            NOT_MAPPED => self.reserve(huge()),
            // SAFETY: any other value was published by `reserve`.
            base => Some(unsafe { Region::at(base) }),
        }
    }

    /// First use: reserves a region and publishes it. Racing threads each reserve one; the loser
    /// unmaps its own, so nobody waits (and a `fork` cannot leave a half-made region).
    #[cold]
    fn reserve(&self, huge: bool) -> Option<Region> {
        let new = Region::reserve(huge);
        let want = new.map_or(DISABLED, Region::base);
        match self
            .base
            .compare_exchange(NOT_MAPPED, want, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => new,
            Err(now) => {
                if let Some(r) = new {
                    // SAFETY: never published: nothing refers to it.
                    unsafe { r.unreserve() };
                }
                // SAFETY: published by the winner.
                (now != DISABLED).then(|| unsafe { Region::at(now) })
            }
        }
    }

    /// The pool block at `ptr`, if `ptr` lies in this pool's region. One subtraction, one
    /// shift, one table load.
    #[inline(always)]
    pub(crate) fn block(&self, ptr: NonNull<u8>) -> Option<PoolBlock> {
        let base = self.base.load(Ordering::Relaxed);
        let page = (ptr.as_ptr() as usize).wrapping_sub(base) >> region::PAGE_SHIFT;
        if page >= region::PAGES {
            return None;
        }
        // SAFETY: `page` is inside the region, so `base` is a region's.
        let region = unsafe { Region::at(base) };
        Some(PoolBlock {
            ptr,
            span: region.span_of_page(page),
        })
    }

    /// The region of a pool that has handed out blocks.
    ///
    /// # Safety
    /// The pool's region is reserved.
    #[inline(always)]
    unsafe fn region_unchecked(&self) -> Region {
        // SAFETY: the region is reserved (caller), so `base` is its published address.
        unsafe { Region::at(self.base.load(Ordering::Relaxed)) }
    }

    /// Returns a pool block: onto its span's free list if this thread owns the span (the fast
    /// path), else onto the span's remote stack. With `count`, the free is counted in this
    /// thread's heap in the pool; `false` if it has none (a thread that only frees into this
    /// pool), for the caller to count it elsewhere.
    ///
    /// # Safety
    /// `b` is a live block of this pool (misuse is reported where it shows; docs/pool.md).
    #[inline(always)]
    pub(crate) unsafe fn free(&self, b: PoolBlock, count: bool) -> bool {
        // SAFETY: descriptors are always readable.
        let span = unsafe { &*b.span };
        let mine = thread::with(|t| t.heap.get());
        if span.heap.load(Ordering::Relaxed) == mine {
            // SAFETY: this thread's heap owns the span; the block is one of its blocks, handed
            // out (caller).
            unsafe {
                if count {
                    (*mine).count_free();
                }
                if span.push_local(b.ptr.as_ptr().cast()) == 0 {
                    (*mine).emptied(self.region_unchecked(), span);
                }
            }
            true
        } else {
            // SAFETY: `b` is a block of this pool, released now (caller): `free_slow` checks
            // the rest.
            unsafe { self.free_slow(b, count) }
        }
    }

    /// The usable size of `b` (a [`Pool::block`] of this pool), checked live, for callers
    /// without a `Layout` (C's `malloc_usable_size` and `realloc`): an address in the region that
    /// is no live block ends the process with a message naming `op`.
    pub(crate) fn checked_size(&self, b: PoolBlock, op: &str) -> usize {
        // SAFETY: a block address in the region: it is reserved.
        check_live(unsafe { self.region_unchecked() }, b, op);
        b.size()
    }

    /// Whether a block that holds `size` bytes may be a pool block: not above the largest
    /// class. (A caller that knows a lower bound of a block's size skips the region check of
    /// anything larger.)
    #[inline(always)]
    pub(crate) const fn may_hold(size: usize) -> bool {
        size <= MAX_SIZE
    }

    /// The blocks counted out and back (`count` of [`Pool::alloc`] and [`Pool::free`]) by every
    /// heap so far; zero if the region is not reserved.
    pub(crate) fn counts(&self) -> Counts {
        match self.base.load(Ordering::Acquire) {
            NOT_MAPPED | DISABLED => Counts::default(),
            // SAFETY: published by `reserve`.
            base => unsafe { Region::at(base) }.counts(),
        }
    }

    /// The region's memory figures, if it is reserved.
    pub(crate) fn usage(&self) -> Option<Usage> {
        match self.base.load(Ordering::Acquire) {
            NOT_MAPPED | DISABLED => None,
            // SAFETY: published by `reserve`.
            base => Some(unsafe { Region::at(base) }.usage()),
        }
    }
}

impl Pool {
    /// Frees a block whose span this thread's fast slot does not own: checks it, then frees it
    /// locally if this thread's heap in the pool owns the span after all, else remotely.
    ///
    /// # Safety
    /// As [`Pool::free`].
    #[cold]
    #[inline(never)]
    unsafe fn free_slow(&self, b: PoolBlock, count: bool) -> bool {
        // SAFETY: `b` is in the region (found by `block`).
        let region = unsafe { self.region_unchecked() };
        check_live(region, b, "free");
        // SAFETY: checked live: an owned span of the region.
        let span = unsafe { &*b.span };
        let block = b.ptr.as_ptr().cast();
        let mine = match thread::heap_of(region) {
            thread::Mine::Heap(heap) => Some(heap),
            thread::Mine::None => None,
            // SAFETY: as this function's (out of line: nothing here stays live across it).
            thread::Mine::FirstMiss => return unsafe { self.free_first_miss(b, count) },
        };
        // SAFETY: as this function's; `mine` is this thread's heap in the region, if any.
        unsafe { free_to(region, span, block, mine, count) }
    }

    /// [`Pool::free_slow`] for a thread that just found it has no heap in the pool: it inherits
    /// the span's owner if that is an orphan (`thread::claim_or_remember`), and frees.
    ///
    /// # Safety
    /// As [`Pool::free_slow`], `b` checked live.
    #[cold]
    #[inline(never)]
    unsafe fn free_first_miss(&self, b: PoolBlock, count: bool) -> bool {
        // SAFETY: `b` is in the region; checked live: an owned span of it.
        let (region, span) = unsafe { (self.region_unchecked(), &*b.span) };
        // SAFETY: the owner of an owned span of the region.
        let mine = unsafe { thread::claim_or_remember(region, span.heap.load(Ordering::Acquire)) };
        // SAFETY: as this function's; `mine` is this thread's heap in the region, if any.
        unsafe { free_to(region, span, b.ptr.as_ptr().cast(), mine, count) }
    }
}

/// Frees `block` of the owned `span`: locally if `mine` (this thread's heap in `region`, if
/// any) owns the span, else onto its remote stack. Returns whether the thread has a heap there.
///
/// # Safety
/// `block` is a handed-out block of `span`, checked live; `mine` is this thread's heap.
#[inline(always)]
unsafe fn free_to(
    region: Region,
    span: &Span,
    block: *mut span::Block,
    mine: Option<*mut Heap>,
    count: bool,
) -> bool {
    if let (Some(mine), true) = (mine, count) {
        // SAFETY: this thread's heap in the region.
        unsafe { (*mine).count_free() };
    }
    match mine {
        Some(mine) if span.heap.load(Ordering::Relaxed) == mine => {
            // SAFETY: as in `Pool::free`.
            unsafe {
                if span.push_local(block) == 0 {
                    (*mine).emptied(region, span);
                }
            }
        }
        // SAFETY: a handed-out block of an owned span (caller, checked).
        _ => unsafe { span.push_remote(block) },
    }
    mine.is_some()
}

/// Reports (and ends the process) unless `b` is a block boundary in a span in use.
fn check_live(region: Region, b: PoolBlock, op: &str) {
    // SAFETY: descriptors are always readable.
    let span = unsafe { &*b.span };
    match span.state.load(Ordering::Acquire) {
        OWNED => {}
        FREE | CACHED => report::double_free(op, b.ptr.as_ptr()),
        _ => report::invalid(op, b.ptr.as_ptr()),
    }
    let off = (b.ptr.as_ptr() as usize).wrapping_sub(region.start(span));
    if class::block_index(span.class.load(Ordering::Relaxed) as usize, off).is_none() {
        report::invalid(op, b.ptr.as_ptr());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let base = *self.base.get_mut();
        if base != NOT_MAPPED && base != DISABLED {
            // SAFETY: a published region; the allocator is gone, so are its blocks (dropping an
            // allocator with live blocks leaves them dangling, as for any allocator).
            unsafe { Region::at(base).kill() };
        }
    }
}

/// Misuse reports: one line, then abort (as the header checks do).
mod report {
    use crate::diag;

    /// A block freed twice.
    #[cold]
    #[inline(never)]
    pub(crate) fn double_free(op: &str, ptr: *mut u8) -> ! {
        diag::fatal(format_args!(
            "{op}({ptr:p}): double free detected (pool block)"
        ))
    }

    /// An address in the pool's region that is not a block in use.
    #[cold]
    #[inline(never)]
    pub(crate) fn invalid(op: &str, ptr: *mut u8) -> ! {
        diag::fatal(format_args!(
            "{op}({ptr:p}): invalid pointer (inside hakmem's pool but not a block it handed out)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Pool {
        fn usable_size(&self, ptr: NonNull<u8>, op: &str) -> Option<usize> {
            self.block(ptr).map(|b| self.checked_size(b, op))
        }
    }

    #[test]
    fn usable_size_from_the_address_alone() {
        let a = Pool::new();
        let b = Pool::new();
        let l = |size| Layout::from_size_align(size, 8).unwrap();
        let p = a.alloc(l(100), false, usize::MAX, || false, true).unwrap();
        assert_eq!(a.usable_size(p, "usable_size"), Some(112));
        assert_eq!(b.usable_size(p, "usable_size"), None, "not b's block");
        let big = a
            .alloc(l(300_000), true, usize::MAX, || false, true)
            .unwrap();
        assert_eq!(a.usable_size(big, "usable_size"), Some(327_680));
        assert!(a
            .alloc(l(MAX_SIZE + 1), false, usize::MAX, || false, true)
            .is_none());
        assert!(
            a.alloc(l(1000), false, 1000, || false, true).is_none(),
            "at the limit: not the pool's"
        );
        let mut local = 0u64;
        assert_eq!(
            a.usable_size(NonNull::from(&mut local).cast(), "usable_size"),
            None
        );
        // SAFETY: blocks of `a`, freed once.
        unsafe {
            assert!(a.free(a.block(p).unwrap(), true));
            assert!(a.free(a.block(big).unwrap(), false));
        }
        assert_eq!(
            a.counts(),
            Counts {
                allocs: 2,
                frees: 1
            }
        );
        let held = a.usage().unwrap().held_bytes;
        assert!(held > 0 && b.usage().is_none());
    }
}
