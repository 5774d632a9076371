//! A pool's region: one reservation of [`REGION`] bytes of address space holding everything the
//! pool owns, so that "is this a pool block?" is one subtraction and one shift.
//!
//! ```text
//!  base
//!  | dummy span | header | heaps ………… | span table ………… | descriptors ………… | spans ……………………… |
//!  0            64       4 KiB         2 MiB              4 MiB              20 MiB            16 GiB
//! ```
//!
//! - The **span table** has one 8-byte entry per 64 KiB page of the region: the offset from
//!   `base` of the descriptor of the span covering that page. Zero (never written) points at the
//!   dummy span at offset 0, which is never owned, has an empty free list and reads as
//!   [`INVALID`]: a wild pointer into the region is caught, not followed.
//! - **Descriptors** ([`Span`]) are indexed by the span's first page.
//! - **Heaps** ([`Heap`]), one per thread using the pool, are claimed from a lock-free stack.
//! - **Spans** are carved from the data area by a bump offset, and kept in lock-free stacks per
//!   kind once empty: *dirty* (pages still resident, reused first) up to [`DIRTY_MAX`] bytes,
//!   then *clean* (returned to the OS with `MADV_DONTNEED`).
//!
//! The reservation is `PROT_NONE`; the metadata is made accessible at once and the data area in
//! [`COMMIT_CHUNK`] steps as the bump offset grows, so the kernel charges only what was used.
//! Nothing here takes a lock: every shared field is an atomic, every stack a tagged Treiber
//! stack, so `fork` can happen at any instruction.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::class::{self, CLASSES, KINDS};
use super::heap::{Heap, IN_ORPHANS, ORPHANED};
use super::span::{Span, CACHED, FREE, INVALID};
use crate::os::{self, Advice};

/// log2 of [`REGION`].
const REGION_SHIFT: u32 = 34;
/// The size of a region: the most memory one pool can hand out.
pub(crate) const REGION: usize = 1 << REGION_SHIFT;
/// log2 of the span table's granule (a region page).
pub(crate) const PAGE_SHIFT: u32 = 16;
/// Region pages, table entries.
pub(crate) const PAGES: usize = REGION >> PAGE_SHIFT;

const HEADER_OFF: usize = 64;
const HEAPS_OFF: usize = 4096;
const TABLE_OFF: usize = 2 << 20;
const DESCS_OFF: usize = TABLE_OFF + PAGES * 8;
/// Where the spans begin.
const DATA_OFF: usize = DESCS_OFF + PAGES * core::mem::size_of::<Span>();
/// How many heaps (threads using the pool at once) a region holds.
pub(crate) const MAX_HEAPS: usize = (TABLE_OFF - HEAPS_OFF) / core::mem::size_of::<Heap>();

/// The alignment of a region's base. Spans start at multiples of 64 KiB from the base, and the
/// pool serves alignments up to 64 KiB on that promise (`class::of_aligned`), so the base must be
/// at least 64 KiB-aligned; 2 MiB (the x86-64 huge-page size, which the kernel itself picks for
/// large anonymous mappings on recent kernels) also lets the 4 MiB spans be backed by huge pages.
/// `mmap` promises only page alignment (valgrind, and kernels before 6.7, give exactly that).
pub(crate) const REGION_ALIGN: usize = 2 << 20;

/// The data area is made accessible in steps of this many bytes.
const COMMIT_CHUNK: usize = 4 << 20;
/// Span memory past this much is advised huge pages (where the policy asks for them); the
/// first [`HUGE_AFTER`] bytes are not: a small program's pool stays small pages.
const HUGE_AFTER: usize = 16 << 20;
/// Empty spans kept resident (dirty) per region, at least; up to the bytes the heaps hold if that
/// is more. Beyond, released spans are purged.
pub(crate) const DIRTY_MAX: usize = 8 << 20;

static_assertions::const_assert!(core::mem::size_of::<Header>() <= HEAPS_OFF - HEADER_OFF);
static_assertions::const_assert!(DESCS_OFF + PAGES * 64 == DATA_OFF);
static_assertions::const_assert!(DATA_OFF % (1 << PAGE_SHIFT) == 0 && DATA_OFF % 4096 == 0);
static_assertions::const_assert!(MAX_HEAPS >= 256);
// `Header::dirty_mask` has a bit per class.
static_assertions::const_assert!(CLASSES < 64);
static_assertions::const_assert!(REGION_ALIGN % (1 << PAGE_SHIFT) == 0);
// Commits cover whole 2 MiB huge pages.
static_assertions::const_assert!(
    REGION_ALIGN % (2 << 20) == 0 && DATA_OFF % (2 << 20) == 0 && COMMIT_CHUNK % (2 << 20) == 0
);

/// A lock-free stack of indices (span pages or heap slots) linked through an `AtomicU32` of each
/// element. The head packs a 32-bit tag, bumped by every change, against ABA.
#[repr(transparent)]
struct Stack(AtomicU64);

impl Stack {
    fn push(&self, index: u32, link: &AtomicU32) {
        let mut head = self.0.load(Ordering::Relaxed);
        loop {
            link.store(head as u32, Ordering::Relaxed);
            let new = (((head >> 32) + 1) << 32) | u64::from(index + 1);
            match self
                .0
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Pops an index; `link(i)` is element `i`'s link (always readable: elements are never
    /// unmapped, so a stale read only makes the exchange fail).
    fn pop<'a>(&self, link: impl Fn(u32) -> &'a AtomicU32) -> Option<u32> {
        let mut head = self.0.load(Ordering::Acquire);
        loop {
            let top = head as u32;
            if top == 0 {
                return None;
            }
            let next = link(top - 1).load(Ordering::Relaxed);
            let new = (((head >> 32) + 1) << 32) | u64::from(next);
            match self
                .0
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(top - 1),
                Err(now) => head = now,
            }
        }
    }
}

/// The region's shared state, at offset [`HEADER_OFF`].
#[repr(C)]
struct Header {
    /// Empty spans with resident pages, per class they last served.
    dirty: [Stack; CLASSES],
    /// Bit `c` set: `dirty[c]` may hold a span (a hint for [`Region::reuse`]'s scan: set after
    /// every push, cleared by a pop that finds the stack empty, so a race can only leave a span
    /// to its own class until the next push).
    dirty_mask: AtomicU64,
    /// Empty spans returned to the OS, per kind.
    clean: [Stack; KINDS],
    /// Heap slots of exited threads that still hold spans (*orphans*), for the next thread to
    /// inherit whole.
    orphans: Stack,
    /// Empty heap slots given back.
    heaps: Stack,
    /// Heap slots handed out fresh so far.
    heap_count: AtomicU32,
    /// Offset of the first never-carved byte of the data area.
    bump: AtomicUsize,
    /// Offset up to which the region is read-write.
    committed: AtomicUsize,
    /// Bytes of spans in the dirty stacks.
    dirty_bytes: AtomicUsize,
    /// Bytes of spans out of the free stacks: held by heaps (in use or cached), orphans included.
    held_bytes: AtomicUsize,
    /// Bytes returned to the OS so far.
    purged_bytes: AtomicU64,
    /// Span memory is advised `MADV_HUGEPAGE` as it is committed (the policy's THP advice).
    huge: AtomicBool,
    /// [`DEAD`] once the allocator is gone (see `Pool`'s drop), plus the number of exiting
    /// threads leaving their heaps here at this moment ([`Region::begin_leave`]).
    life: AtomicUsize,
}

/// [`Header::life`]'s flag: the allocator is gone.
const DEAD: usize = 1 << (usize::BITS - 1);

/// A handle on a region: its base address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    base: usize,
}

/// Figures for [`crate::Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub held_bytes: u64,
    pub dirty_bytes: u64,
    pub purged_bytes: u64,
}

/// Pool blocks handed out and taken back, counted per heap ([`Region::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub allocs: u64,
    pub frees: u64,
}

/// Reserves [`REGION`] bytes at a [`REGION_ALIGN`] boundary: reserves that much more, then gives
/// back the pages before the boundary and after the region.
fn reserve_aligned() -> Option<NonNull<u8>> {
    let page = os::page_size();
    let extra = REGION_ALIGN.saturating_sub(page);
    let raw = os::reserve(REGION + extra)?;
    let head = align_gap(raw.as_ptr() as usize, REGION_ALIGN);
    debug_assert!(head <= extra && head % page == 0);
    // SAFETY: `[raw, raw + REGION + extra)` is our fresh reservation; the head and the tail are
    // whole pages of it outside the kept `[raw + head, raw + head + REGION)`.
    unsafe {
        let base = raw.add(head);
        // (Whole pages inside our fresh reservation: the kernel does not refuse them.)
        if head > 0 {
            let _ = os::unmap(raw, head);
        }
        if extra > head {
            let _ = os::unmap(base.add(REGION), extra - head);
        }
        Some(base)
    }
}

/// How far `addr` is below the next multiple of the power of two `align` (0 if it is one).
fn align_gap(addr: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    addr.wrapping_neg() & (align - 1)
}

impl Region {
    /// The region at `base`.
    ///
    /// # Safety
    /// `base` came from [`Region::reserve`] (regions are never unmapped).
    #[inline(always)]
    pub(crate) const unsafe fn at(base: usize) -> Region {
        Region { base }
    }

    #[inline(always)]
    pub(crate) fn base(self) -> usize {
        self.base
    }

    /// Reserves and sets up a new region; `None` if the kernel refuses. With `huge`, its span
    /// memory is advised `MADV_HUGEPAGE` as it is committed ([`Region::commit_to`]).
    pub(crate) fn reserve(huge: bool) -> Option<Region> {
        let base = reserve_aligned()?;
        // SAFETY: the metadata is whole pages at the start of our fresh reservation.
        if !unsafe { os::commit(base, DATA_OFF) } {
            // SAFETY: our reservation, never handed out. (Whole pages of it: the kernel does
            // not refuse them.)
            let _ = unsafe { os::unmap(base, REGION) };
            return None;
        }
        let region = Region {
            base: base.as_ptr() as usize,
        };
        // Everything else starts as zero: empty stacks, the dummy span INVALID and unowned.
        let h = region.header();
        h.bump.store(DATA_OFF, Ordering::Relaxed);
        h.committed.store(DATA_OFF, Ordering::Relaxed);
        h.huge.store(huge, Ordering::Relaxed);
        Some(region)
    }

    /// Unmaps a region nothing has used (lost a race to be the pool's region).
    ///
    /// # Safety
    /// Nothing refers to the region.
    pub(crate) unsafe fn unreserve(self) {
        // SAFETY: forwarded: the whole reservation, unused. (Whole pages of it: the kernel does
        // not refuse them.)
        let _ = unsafe { os::unmap(NonNull::new_unchecked(self.base as *mut u8), REGION) };
    }

    #[inline(always)]
    fn header(self) -> &'static Header {
        // SAFETY: the header lies in the committed metadata of a live region (never unmapped),
        // and is only accessed through atomics.
        unsafe { &*((self.base + HEADER_OFF) as *const Header) }
    }

    /// The dummy span: never owned, its free list always empty.
    #[inline(always)]
    pub(crate) fn dummy(self) -> *mut Span {
        self.base as *mut Span
    }

    /// The descriptor of the span covering region page `page` (`< PAGES`), or the dummy span.
    #[inline(always)]
    pub(crate) fn span_of_page(self, page: usize) -> *const Span {
        debug_assert!(page < PAGES);
        let entry = (self.base + TABLE_OFF + page * 8) as *const AtomicU64;
        // SAFETY: the table lies in the committed metadata and holds one entry per page of the
        // region; entries are written before any block of their span is handed out.
        let desc = unsafe { (*entry).load(Ordering::Relaxed) } as usize;
        (self.base + desc) as *const Span
    }

    /// The first byte of `span`'s memory.
    #[inline]
    pub(crate) fn start(self, span: *const Span) -> usize {
        self.base + ((self.index(span) as usize) << PAGE_SHIFT)
    }

    /// `span`'s first page (its index in the stacks).
    #[inline]
    fn index(self, span: *const Span) -> u32 {
        ((span as usize - self.base - DESCS_OFF) >> 6) as u32
    }

    #[inline]
    fn span(self, index: u32) -> &'static Span {
        // SAFETY: descriptors lie in the committed metadata, one per page, zero-initialised
        // (a valid `Span`), shared through atomics and the ownership protocol of `span`.
        unsafe { &*((self.base + DESCS_OFF + (index as usize) * 64) as *const Span) }
    }

    fn heap_at(self, index: u32) -> *mut Heap {
        (self.base + HEAPS_OFF + index as usize * core::mem::size_of::<Heap>()) as *mut Heap
    }

    /// A heap slot for a new thread, or `None` if [`MAX_HEAPS`] are in use. An orphan, if there
    /// is one, is inherited whole (the flag says so): its spans become the new thread's. Else an
    /// empty slot, which the caller sets up ([`Heap::init`]).
    pub(crate) fn claim_heap(self) -> Option<(*mut Heap, bool)> {
        if let Some(heap) = self.adopt_orphan() {
            return Some((heap, true));
        }
        let h = self.header();
        if let Some(i) = h.heaps.pop(|i| self.heap_link(i)) {
            return Some((self.heap_at(i), false));
        }
        let mut n = h.heap_count.load(Ordering::Relaxed);
        loop {
            if n as usize >= MAX_HEAPS {
                return None;
            }
            match h
                .heap_count
                .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some((self.heap_at(n), false)),
                Err(now) => n = now,
            }
        }
    }

    /// The link of heap slot `i`.
    fn heap_link(self, i: u32) -> &'static AtomicU32 {
        // SAFETY: heap slots lie in the committed metadata (never unmapped), each with its link.
        unsafe { (*self.heap_at(i)).link() }
    }

    /// The index of `heap`, a heap slot of this region.
    fn heap_index(self, heap: *mut Heap) -> u32 {
        ((heap as usize - self.base - HEAPS_OFF) / core::mem::size_of::<Heap>()) as u32
    }

    /// Gives an empty heap slot back (its thread exited holding no span, or its spans went to
    /// another heap).
    ///
    /// # Safety
    /// `heap` came from [`Region::claim_heap`] or [`Region::adopt_orphan`], holds no span, and
    /// nothing uses it any more.
    pub(crate) unsafe fn release_heap(self, heap: *mut Heap) {
        // SAFETY: a heap slot of this region (caller).
        debug_assert_eq!(unsafe { (*heap).orphan().load(Ordering::Relaxed) }, 0);
        let i = self.heap_index(heap);
        self.header().heaps.push(i, self.heap_link(i));
    }

    /// Leaves a heap to the next thread (its thread exited). It holds spans, or it is still in
    /// the orphan stack from an earlier orphanhood (claimed from there by a free,
    /// [`Region::claim_orphan`]), and then it is only marked orphaned again.
    ///
    /// A heap's orphan state ([`IN_ORPHANS`], [`ORPHANED`]) lets a thread take a *given* orphan
    /// (the one whose block it frees) out of a lock-free stack it cannot unlink from: the claim
    /// clears `ORPHANED`, and the stale entry is skipped by whoever pops it.
    ///
    /// # Safety
    /// `heap` came from [`Region::claim_heap`], [`Region::adopt_orphan`] or
    /// [`Region::claim_orphan`] and its thread uses it no more.
    pub(crate) unsafe fn orphan_heap(self, heap: *mut Heap) {
        // SAFETY: a heap slot of this region (caller).
        let state = unsafe { (*heap).orphan() };
        let mut s = state.load(Ordering::Acquire);
        loop {
            if s & IN_ORPHANS != 0 {
                // Still in the stack: orphaned again, where a popper will find it (or, if a
                // popper takes it out first, the exchange fails and it is pushed below).
                match state.compare_exchange(
                    s,
                    IN_ORPHANS | ORPHANED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return,
                    Err(now) => s = now,
                }
            } else {
                // Not in the stack: nobody else touches the state until the push publishes it.
                state.store(IN_ORPHANS | ORPHANED, Ordering::Release);
                let i = self.heap_index(heap);
                self.header().orphans.push(i, self.heap_link(i));
                return;
            }
        }
    }

    /// An orphaned heap, now the caller's (the state's release/acquire pair, and the stack's,
    /// hand over its thread-owned fields and those of its spans). Entries of heaps claimed
    /// meanwhile are dropped.
    pub(crate) fn adopt_orphan(self) -> Option<*mut Heap> {
        loop {
            let i = self.header().orphans.pop(|i| self.heap_link(i))?;
            let heap = self.heap_at(i);
            // SAFETY: a heap slot of this region.
            let state = unsafe { (*heap).orphan() };
            let mut s = state.load(Ordering::Acquire);
            loop {
                // Orphaned: ours. Claimed meanwhile: out of the stack now, skipped.
                let next = if s & ORPHANED != 0 {
                    0
                } else {
                    s & !IN_ORPHANS
                };
                match state.compare_exchange(s, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) if s & ORPHANED != 0 => return Some(heap),
                    Ok(_) => break,
                    Err(now) => s = now,
                }
            }
        }
    }

    /// Takes the orphaned heap `heap` (the owner of a block the caller frees) if it still is
    /// one; its stack entry stays, stale. `false` if it is not an orphan (any more).
    ///
    /// # Safety
    /// `heap` is a heap slot of this region.
    pub(crate) unsafe fn claim_orphan(self, heap: *mut Heap) -> bool {
        // SAFETY: a heap slot of this region (caller).
        let state = unsafe { (*heap).orphan() };
        state
            .compare_exchange(
                IN_ORPHANS | ORPHANED,
                IN_ORPHANS,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Whether `heap` is a slot of this region's heap area (debug assertions).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub(crate) fn is_heap_slot(self, heap: *mut Heap) -> bool {
        let off = (heap as usize).wrapping_sub(self.base + HEAPS_OFF);
        off % core::mem::size_of::<Heap>() == 0
            && off / core::mem::size_of::<Heap>()
                < self.header().heap_count.load(Ordering::Acquire) as usize
    }

    /// An empty span for `class` from the free stacks, not yet set up for it: a dirty one that
    /// last served `class`, a dirty one of another class of the same kind, or a clean one.
    ///
    /// Dirty spans are kept per class because a span's resident pages are those its blocks were
    /// carved from: served to the same class again, it finds the pages a similar demand touched
    /// before, where another class (or a fresh span) would touch new ones, a page fault each
    /// (docs/pool.md, "Reuse by class").
    pub(crate) fn reuse(self, class: usize) -> Option<*mut Span> {
        let h = self.header();
        let kind = class::kind(class);
        let len = class::span_len(kind);
        let link = |i| &self.span(i).link;
        let pop = |c: usize| {
            let got = h.dirty[c].pop(link);
            if got.is_none() {
                h.dirty_mask.fetch_and(!(1 << c), Ordering::Relaxed);
            }
            got
        };
        let class = class::bounded(class, CLASSES);
        let dirty = pop(class).or_else(|| {
            // Another class's dirty span of the same kind: the first one the mask shows.
            let range = class::classes_of(kind);
            let of_kind = ((1u64 << range.end) - 1) & !((1u64 << range.start) - 1);
            let mut mask = h.dirty_mask.load(Ordering::Relaxed) & of_kind & !(1 << class);
            while mask != 0 {
                let c = mask.trailing_zeros() as usize;
                if let Some(i) = pop(c) {
                    return Some(i);
                }
                mask &= mask - 1;
            }
            None
        });
        let span = if let Some(i) = dirty {
            h.dirty_bytes.fetch_sub(len, Ordering::Relaxed);
            self.span(i)
        } else {
            self.span(h.clean[class::bounded(kind, KINDS)].pop(link)?)
        };
        Some(self.hand_out(span, kind))
    }

    /// A span of `kind` freshly carved from the data area. `None` when the region is full (or
    /// the kernel refuses to commit more).
    pub(crate) fn fresh(self, kind: usize) -> Option<*mut Span> {
        let span = self.carve(kind)?;
        Some(self.hand_out(span, kind))
    }

    /// Counts a free span as held.
    fn hand_out(self, span: &Span, kind: usize) -> *mut Span {
        debug_assert_eq!(span.state.load(Ordering::Relaxed), FREE);
        debug_assert_eq!(span.kind.get() as usize, kind);
        self.header()
            .held_bytes
            .fetch_add(class::span_len(kind), Ordering::Relaxed);
        span as *const Span as *mut Span
    }

    /// Carves a fresh span of `kind` from the data area.
    fn carve(self, kind: usize) -> Option<&'static Span> {
        let h = self.header();
        let len = class::span_len(kind);
        let mut off = h.bump.load(Ordering::Relaxed);
        loop {
            let end = off.checked_add(len).filter(|&end| end <= REGION)?;
            self.commit_to(end)?;
            match h
                .bump
                .compare_exchange_weak(off, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => off = now,
            }
        }
        let first = off >> PAGE_SHIFT;
        let desc = DESCS_OFF + first * 64;
        for page in first..(off + len) >> PAGE_SHIFT {
            let entry = (self.base + TABLE_OFF + page * 8) as *const AtomicU64;
            // SAFETY: a table entry of this region; this span's pages are ours alone.
            unsafe { (*entry).store(desc as u64, Ordering::Relaxed) };
        }
        let span = self.span(first as u32);
        debug_assert_eq!(span.state.load(Ordering::Relaxed), INVALID);
        span.kind.set(kind as u8);
        span.state.store(FREE, Ordering::Relaxed);
        Some(span)
    }

    /// Makes the region read-write up to offset `end`.
    fn commit_to(self, end: usize) -> Option<()> {
        let h = self.header();
        let done = h.committed.load(Ordering::Acquire);
        if end <= done {
            return Some(());
        }
        let target = end.next_multiple_of(COMMIT_CHUNK).min(REGION);
        // SAFETY: `[done, target)` is whole pages of our reservation; racing committers make
        // overlapping ranges accessible, which is idempotent.
        let ok = unsafe {
            os::commit(
                NonNull::new_unchecked((self.base + done) as *mut u8),
                target - done,
            )
        };
        if !ok {
            return None;
        }
        let huge_from = done.max(DATA_OFF + HUGE_AFTER);
        if h.huge.load(Ordering::Relaxed) && target > huge_from {
            // The range starts and ends on 2 MiB boundaries (`DATA_OFF`, `HUGE_AFTER` and
            // `COMMIT_CHUNK` are multiples of it, the base is `REGION_ALIGN`-aligned), so whole
            // huge pages can back it. Advice only: refused where THP is off, which changes
            // nothing.
            // SAFETY: whole pages of our reservation, just made accessible.
            let _ = unsafe {
                os::advise(
                    NonNull::new_unchecked((self.base + huge_from) as *mut u8),
                    target - huge_from,
                    Advice::HugePage,
                )
            };
        }
        h.committed.fetch_max(target, Ordering::Release);
        Some(())
    }

    /// Takes back an empty span: dirty while the dirty stacks hold less than [`DIRTY_MAX`]
    /// bytes or than the heaps hold (a pool that empties and refills spans in waves reuses them
    /// resident), else returned to the OS.
    ///
    /// # Safety
    /// The caller owned `span`, which is empty, and gives it up.
    pub(crate) unsafe fn release(self, span: *mut Span) {
        // SAFETY: the caller owns it until the push below.
        let span = unsafe { &*span };
        let h = self.header();
        let kind = class::bounded(span.kind.get() as usize, KINDS);
        let len = class::span_len(kind);
        span.heap.store(core::ptr::null_mut(), Ordering::Relaxed);
        span.free.set(core::ptr::null_mut());
        span.local.set(core::ptr::null_mut());
        span.carved.set(0);
        span.state.store(FREE, Ordering::Relaxed);
        let held = h.held_bytes.fetch_sub(len, Ordering::Relaxed) - len;
        let limit = DIRTY_MAX.max(held);
        if h.dirty_bytes.fetch_add(len, Ordering::Relaxed) + len <= limit {
            // (Every span released has served a class: `Heap::refill` sets up each span it
            // acquires.)
            let class = class::bounded(span.class.load(Ordering::Relaxed) as usize, CLASSES);
            debug_assert_eq!(class::kind(class), kind);
            h.dirty[class].push(self.index(span), &span.link);
            h.dirty_mask.fetch_or(1 << class, Ordering::Relaxed);
            return;
        }
        h.dirty_bytes.fetch_sub(len, Ordering::Relaxed);
        // SAFETY: ours, empty, given up (caller).
        unsafe { self.purge_span(span, kind) };
        // The pool shrank: dirty spans beyond the lower bound go too.
        while h.dirty_bytes.load(Ordering::Relaxed) > limit {
            let Some(index) = self.pop_dirty() else {
                break;
            };
            let s = self.span(index);
            let kind = class::bounded(s.kind.get() as usize, KINDS);
            h.dirty_bytes
                .fetch_sub(class::span_len(kind), Ordering::Relaxed);
            // SAFETY: popped from a dirty stack: free, empty, ours alone now.
            unsafe { self.purge_span(s, kind) };
        }
    }

    /// A dirty span, of whichever class the mask shows first.
    fn pop_dirty(self) -> Option<u32> {
        let h = self.header();
        let mut mask = h.dirty_mask.load(Ordering::Relaxed);
        while mask != 0 {
            let c = mask.trailing_zeros() as usize;
            let c = class::bounded(c, CLASSES);
            if let Some(i) = h.dirty[c].pop(|i| &self.span(i).link) {
                return Some(i);
            }
            h.dirty_mask.fetch_and(!(1 << c), Ordering::Relaxed);
            mask &= mask - 1;
        }
        None
    }

    /// Returns a free span's memory to the OS (`MADV_DONTNEED`) and pushes it on the clean stack
    /// of its kind.
    ///
    /// # Safety
    /// The caller owns `span`, which is free (empty, in no stack), of `kind`.
    unsafe fn purge_span(self, span: &Span, kind: usize) {
        let len = class::span_len(kind);
        // SAFETY: the span's memory is whole pages of our committed data area, empty (caller).
        unsafe {
            let start = NonNull::new_unchecked(self.start(span) as *mut u8);
            os::advise(start, len, Advice::DontNeed);
        }
        self.header()
            .purged_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        self.header().clean[kind].push(self.index(span), &span.link);
    }

    /// Marks an empty span kept by a heap (for its next span of the same kind).
    pub(crate) fn cache(self, span: &Span) {
        span.heap.store(core::ptr::null_mut(), Ordering::Relaxed);
        span.free.set(core::ptr::null_mut());
        span.local.set(core::ptr::null_mut());
        span.carved.set(0);
        span.state.store(CACHED, Ordering::Relaxed);
    }

    /// Whether the allocator owning this region is gone.
    #[inline]
    pub(crate) fn is_dead(self) -> bool {
        self.header().life.load(Ordering::Acquire) & DEAD != 0
    }

    /// An exiting thread is about to leave its heap here (walk its spans, push them to the
    /// region's stacks): `false` if the allocator is gone, and then it must not. Else the
    /// region's span memory stays as it is until the matching [`Region::end_leave`]: a `kill`
    /// meanwhile leaves the purge to the last thread out.
    pub(crate) fn begin_leave(self) -> bool {
        let h = self.header();
        if h.life.fetch_add(1, Ordering::Acquire) & DEAD == 0 {
            return true;
        }
        self.end_leave();
        false
    }

    /// The thread that called [`Region::begin_leave`] (successfully or not) is done with the
    /// region; the last one out of a killed region purges it.
    pub(crate) fn end_leave(self) {
        if self.header().life.fetch_sub(1, Ordering::AcqRel) == DEAD | 1 {
            // SAFETY: the region is dead and no thread is inside it any more.
            unsafe { self.purge() };
        }
    }

    /// Called when the allocator is dropped: marks the region dead and returns all its span
    /// memory to the OS. The reservation itself stays (other threads may still hold this region's
    /// heaps in their caches, and must find them dead rather than unmapped).
    ///
    /// Threads exiting at the same moment may be walking their heaps' spans (`Heap::leave`),
    /// whose free lists live in the span memory: purging it under them would turn their lists
    /// into zeros and their walk into a false "double free" report. So the death and the count
    /// of leaving threads share one atomic word ([`Header::life`]): a thread enters only while
    /// the region is alive (`begin_leave`), and the memory is purged by whoever brings the word
    /// to "dead, nobody inside": this call if nobody is, else the last thread to leave. A thread
    /// that enters after the death backs out without touching anything, and a second purge
    /// (such a thread bringing the count back to zero) only advises pages nobody uses.
    ///
    /// # Safety
    /// No block of the region is in use any more.
    pub(crate) unsafe fn kill(self) {
        if self.header().life.fetch_or(DEAD, Ordering::AcqRel) == 0 {
            // SAFETY: dead now, and nobody inside.
            unsafe { self.purge() };
        }
    }

    /// Returns the data area up to the bump offset to the OS.
    ///
    /// # Safety
    /// The region is dead and no thread is leaving a heap in it.
    unsafe fn purge(self) {
        let h = self.header();
        debug_assert!(h.life.load(Ordering::Relaxed) & DEAD != 0);
        let end = h.bump.load(Ordering::Relaxed);
        if end > DATA_OFF {
            // SAFETY: the data area up to the bump offset is committed and, the allocator gone
            // and nobody leaving a heap, unused.
            unsafe {
                os::advise(
                    NonNull::new_unchecked((self.base + DATA_OFF) as *mut u8),
                    end - DATA_OFF,
                    Advice::DontNeed,
                );
            }
        }
    }

    /// The blocks every heap slot ever handed out and took back where the policy counts them
    /// (`Heap::counts`), summed: exact once the threads counting are quiescent.
    pub(crate) fn counts(self) -> Counts {
        let n = self.header().heap_count.load(Ordering::Acquire);
        (0..n).fold(Counts::default(), |sum, i| {
            // SAFETY: slots below `heap_count` were handed out: in the committed metadata, never
            // unmapped.
            let (allocs, frees) = unsafe { (*self.heap_at(i)).counts() };
            Counts {
                allocs: sum.allocs.wrapping_add(allocs),
                frees: sum.frees.wrapping_add(frees),
            }
        })
    }

    /// The figures for [`crate::Stats`].
    pub(crate) fn usage(self) -> Usage {
        let h = self.header();
        Usage {
            held_bytes: h.held_bytes.load(Ordering::Relaxed) as u64,
            dirty_bytes: h.dirty_bytes.load(Ordering::Relaxed) as u64,
            purged_bytes: h.purged_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_gap_reaches_the_next_boundary() {
        let a = REGION_ALIGN;
        assert_eq!(align_gap(0x7f00_0000_0000, a), 0);
        assert_eq!(align_gap(0x5b08_b000, a), 0x17_5000);
        assert_eq!(align_gap(0x1005_f37000, 1 << 16), 0x9000);
        assert_eq!(align_gap(a + 4096, a), a - 4096);
    }

    /// Valgrind places a 16 GiB reservation at page alignment only (`0x59c8b000` here): the
    /// pool's aligned requests relied on the kernel's huge-page alignment of large mappings.
    #[test]
    fn regions_are_aligned_for_every_class_alignment() {
        let regions: [Region; 3] = core::array::from_fn(|_| Region::reserve(false).unwrap());
        for r in regions {
            assert_eq!(r.base() % REGION_ALIGN, 0, "{:#x}", r.base());
            // SAFETY: never published, nothing refers to it.
            unsafe { r.unreserve() };
        }
    }
}
