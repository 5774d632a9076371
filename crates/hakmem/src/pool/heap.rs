//! A heap: one thread's spans in one pool. Only its thread touches it. When the thread exits,
//! its empty spans go back to the region and the heap, with the spans that still hold blocks,
//! becomes an *orphan*: the next thread to need a heap inherits it whole, or a running thread
//! that is out of spans takes its spans over.
//!
//! Per class, the heap has a *current* span, which the fast path pops from (the region's dummy
//! span, always empty, when there is none), and a list of its other spans of that class, partly
//! or fully used. When the current span runs dry the heap refills, cheapest first:
//!
//! 1. blocks other threads freed into the current span (its remote stack);
//! 2. fresh blocks carved from the current span's untouched tail;
//! 3. up to [`ROTATE`] spans from the front of the class's list (each sent to the back if it has
//!    nothing to give), collecting their remote frees;
//! 4. an empty span: the heap's cached one of that kind, else a free one from the region;
//! 5. before the region grows, the spans of an orphaned heap, all of them, taken over (its slot
//!    given back), and back to 4 if none of them serves;
//! 6. a fresh span carved from the region.
//!
//! A span that is not current and empties out on a local free is checked (its free list must
//! hold exactly its carved blocks: a double free shows as a mismatch) and retired: kept as the
//! heap's cached span of its kind if that slot is free, else given back to the region.
//!
//! A thread with no heap in the region whose first act there is to free a block of an orphan
//! inherits that orphan (`thread::claim`, [`Region::claim_orphan`]).
//!
//! Why orphans rather than single abandoned spans (docs/pool.md, "Thread exit"): a thread that
//! replaces one that exited (a pool of workers, a thread per request) inherits spans of the
//! classes it is about to use, whose pages are resident, and frees of the blocks it is handed
//! are local; adopting spans one by one, in no order, would leave it to take fresh spans and
//! touch fresh pages first.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::class::{self, CLASSES, KINDS};
use super::region::Region;
use super::span::{Block, Span};

/// Spans of the class's list examined per refill.
const ROTATE: usize = 4;

/// Orphan state: the slot's index is in the region's orphan stack (perhaps stale: the heap was
/// claimed meanwhile, and whoever pops it skips it).
pub(crate) const IN_ORPHANS: u8 = 1;
/// Orphan state: the slot's thread exited and nobody has taken the heap since.
pub(crate) const ORPHANED: u8 = 2;

/// One thread's spans in one region.
#[repr(C)]
pub(crate) struct Heap {
    /// The current span of each class (the region's dummy span when none).
    direct: [Cell<*mut Span>; CLASSES],
    /// Front of each class's list of other spans.
    head: [Cell<*mut Span>; CLASSES],
    /// Back of each class's list.
    tail: [Cell<*mut Span>; CLASSES],
    /// An empty span kept per kind.
    cache: [Cell<*mut Span>; KINDS],
    /// Link of the region's stacks of heap slots (free slots, orphans; a slot is in one at most).
    link: AtomicU32,
    /// [`IN_ORPHANS`] and [`ORPHANED`]: where the slot stands as an orphan
    /// ([`Region::orphan_heap`], [`Region::adopt_orphan`], [`Region::claim_orphan`]).
    orphan: AtomicU8,
    /// Blocks handed out and taken back through this heap, where the policy counts them: its
    /// thread's plain stores (atomics only so that [`Region::counts`] may read them from another
    /// thread). Never reset: a slot's later threads add to them, so the sum over the slots is
    /// every count ever made.
    allocs: AtomicU64,
    frees: AtomicU64,
}

impl Heap {
    // Per-class and per-kind slots, by an index the pool's invariants keep in bounds, without a
    // bounds check that could panic (`class::bounded`).

    /// The current span slot of `class`.
    #[inline(always)]
    fn direct(&self, class: usize) -> &Cell<*mut Span> {
        &self.direct[class::bounded(class, CLASSES)]
    }

    /// The front of `class`'s list.
    #[inline(always)]
    fn head(&self, class: usize) -> &Cell<*mut Span> {
        &self.head[class::bounded(class, CLASSES)]
    }

    /// The back of `class`'s list.
    #[inline(always)]
    fn tail(&self, class: usize) -> &Cell<*mut Span> {
        &self.tail[class::bounded(class, CLASSES)]
    }

    /// The empty span kept for `kind`.
    #[inline(always)]
    fn cache(&self, kind: usize) -> &Cell<*mut Span> {
        &self.cache[class::bounded(kind, KINDS)]
    }

    /// The link of the region's stacks of heap slots.
    pub(crate) fn link(&self) -> &AtomicU32 {
        &self.link
    }

    /// The slot's orphan state ([`IN_ORPHANS`], [`ORPHANED`]).
    pub(crate) fn orphan(&self) -> &AtomicU8 {
        &self.orphan
    }

    /// Counts a block handed out.
    #[inline(always)]
    pub(crate) fn count_alloc(&self) {
        bump(&self.allocs);
    }

    /// Counts a block taken back.
    #[inline(always)]
    pub(crate) fn count_free(&self) {
        bump(&self.frees);
    }

    /// The blocks counted out and back so far (`allocs`, `frees`).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.allocs.load(Ordering::Relaxed),
            self.frees.load(Ordering::Relaxed),
        )
    }

    /// Sets up a freshly claimed heap slot: no spans. (Its counts stay: see `allocs`.)
    ///
    /// # Safety
    /// `heap` was just claimed from `region`: nobody else refers to it.
    pub(crate) unsafe fn init(heap: *mut Heap, region: Region) {
        // SAFETY: the slot is ours (caller); every field is plain data.
        let h = unsafe { &*heap };
        for c in 0..CLASSES {
            h.direct[c].set(region.dummy());
            h.head[c].set(ptr::null_mut());
            h.tail[c].set(ptr::null_mut());
        }
        for k in 0..KINDS {
            h.cache[k].set(ptr::null_mut());
        }
    }

    /// The fast path: a block of `class` from the current span, or null.
    ///
    /// # Safety
    /// `heap` is the calling thread's heap.
    #[inline(always)]
    pub(crate) unsafe fn pop(heap: *mut Heap, class: usize) -> *mut Block {
        debug_assert!(class < CLASSES);
        // SAFETY: the caller's own heap; `class` is in bounds; the current span is owned by this
        // heap or is the dummy, whose free list is always empty.
        unsafe {
            let span = (*heap).direct.get_unchecked(class).get();
            (*span).pop()
        }
    }

    /// The slow path of [`Heap::pop`]: refills the class's current span (see the module docs)
    /// and pops. Null when the region is out of spans.
    ///
    /// # Safety
    /// `self` is the calling thread's heap in `region`.
    #[inline(never)]
    pub(crate) unsafe fn refill(&self, region: Region, class: usize) -> *mut Block {
        debug_assert!(class < CLASSES);
        if class >= CLASSES {
            // SAFETY: `class` came from `class::of` or `class::of_aligned`, below `CLASSES` (the
            // fast path indexes with it unchecked too). Said to the compiler, this drops the
            // bounds checks below at no cost: refill runs every few allocations.
            unsafe { core::hint::unreachable_unchecked() }
        }
        let me = self as *const Heap as *mut Heap;
        let cur = self.direct(class).get();
        // SAFETY: all spans reached here are owned by this heap (the current one and those in
        // its lists), or taken from the region's stacks, which hands them to us alone.
        unsafe {
            if cur != region.dummy() {
                let s = &*cur;
                // (Called after a miss on the fast slot, the list may have blocks.)
                if s.has_free() || s.collect() || s.carve(region.start(s)) {
                    return s.pop();
                }
            }
            for _ in 0..ROTATE {
                let Some(s) = self.pop_front(class) else {
                    break;
                };
                let s = &*s;
                s.collect();
                if s.has_room() {
                    self.install(region, class, s);
                    return take(region, s);
                }
                self.push_back(class, s);
            }
            let kind = class::kind(class);
            let s = loop {
                let cached = self.cache(kind).replace(ptr::null_mut());
                if !cached.is_null() {
                    break cached;
                }
                if let Some(s) = region.reuse(class) {
                    break s;
                }
                // Before the region grows: an orphan's spans (which may bring empty ones too).
                let Some(orphan) = region.adopt_orphan() else {
                    match region.fresh(kind) {
                        Some(s) => break s,
                        None => return ptr::null_mut(),
                    }
                };
                if let Some(s) = self.take_over(region, orphan, class) {
                    self.install(region, class, s);
                    return take(region, s);
                }
            };
            let s = &*s;
            s.init(class, me);
            self.install(region, class, s);
            take(region, s)
        }
    }

    /// Makes `s` (owned, in no list) the current span of `class`; the previous one goes to the
    /// back of the list, or is retired if it is empty.
    unsafe fn install(&self, region: Region, class: usize, s: &Span) {
        s.used.set(s.used.get() + 1);
        let old = self.direct(class).replace(s as *const Span as *mut Span);
        if old != region.dummy() {
            // SAFETY: the previous current span is owned by this heap.
            unsafe {
                let old = &*old;
                old.used.set(old.used.get() - 1);
                if old.used.get() == 0 {
                    old.check_empty();
                    self.retire(region, old);
                } else {
                    self.push_back(class, old);
                }
            }
        }
    }

    /// A span that is not current emptied out on a local free: check it, take it out of its
    /// list, retire it.
    ///
    /// # Safety
    /// `self` is the calling thread's heap in `region`; `s` is one of its spans, not current,
    /// with `used == 0`.
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn emptied(&self, region: Region, s: &Span) {
        let class = s.class.load(Ordering::Relaxed) as usize;
        // SAFETY: forwarded: an empty span of ours.
        unsafe {
            s.check_empty();
            if core::ptr::eq(self.direct(class).get(), s) {
                // The current span's extra count went too: more frees than blocks handed out.
                let last = s.local.get();
                super::report::double_free("free", last.cast());
            }
            self.unlink(class, s);
            self.retire(region, s);
        }
    }

    /// An empty span leaves use: cached if the kind's slot is free, else back to the region.
    unsafe fn retire(&self, region: Region, s: &Span) {
        let kind = s.kind.get() as usize;
        if self.cache(kind).get().is_null() {
            region.cache(s);
            self.cache(kind).set(s as *const Span as *mut Span);
        } else {
            // SAFETY: ours, empty, in no list.
            unsafe { region.release(s as *const Span as *mut Span) };
        }
    }

    /// The thread exits: empty spans (cached ones too) go back to the region; the heap, if it
    /// still holds spans with blocks in use, becomes an orphan (its current spans stay current,
    /// its lists stay), else its slot is given back.
    ///
    /// # Safety
    /// `heap` is the exiting thread's heap in `region`; the thread uses it no more.
    pub(crate) unsafe fn leave(heap: *mut Heap, region: Region) {
        // SAFETY: the exiting thread's own heap and spans.
        unsafe {
            let h = &*heap;
            let mut holds = false;
            for c in 0..CLASSES {
                let cur = h.direct[c].get();
                if cur != region.dummy() {
                    let s = &*cur;
                    s.collect();
                    // (A current span counts one extra use.)
                    if s.used.get() == 1 {
                        s.used.set(0);
                        s.check_empty();
                        h.direct[c].set(region.dummy());
                        region.release(cur);
                    } else {
                        holds = true;
                    }
                }
                let mut p = h.head[c].get();
                while !p.is_null() {
                    let s = &*p;
                    p = s.next.get();
                    s.collect();
                    if s.used.get() == 0 {
                        s.check_empty();
                        h.unlink(c, s);
                        region.release(s as *const Span as *mut Span);
                    } else {
                        holds = true;
                    }
                }
            }
            // The cached empty spans go back too: an orphan holds only spans with blocks in use,
            // so a program whose threads free what they allocate leaves none.
            for k in 0..KINDS {
                let s = h.cache[k].replace(ptr::null_mut());
                if !s.is_null() {
                    region.release(s);
                }
            }
            // A slot still (stale) in the orphan stack cannot join the free slots' stack, which
            // shares its link: it becomes an orphan again, empty.
            if holds || h.orphan.load(Ordering::Acquire) & IN_ORPHANS != 0 {
                region.orphan_heap(heap);
            } else {
                region.release_heap(heap);
            }
        }
    }

    /// Takes over every span of `orphan` (adopted from the region): those its blocks' frees have
    /// emptied are retired, the others join this heap's lists, except the first of `class` with
    /// room, which is returned (owned, in no list) for the caller to install. The orphan's slot is
    /// given back.
    ///
    /// # Safety
    /// `self` is the calling thread's heap in `region`; `orphan` was just adopted from it.
    unsafe fn take_over(&self, region: Region, orphan: *mut Heap, class: usize) -> Option<&Span> {
        let me = self as *const Heap as *mut Heap;
        let mut found: Option<&Span> = None;
        // SAFETY: the orphan and its spans are ours now (adopted); its spans are owned spans.
        unsafe {
            let o = &*orphan;
            for c in 0..CLASSES {
                let cur = o.direct[c].replace(region.dummy());
                if cur != region.dummy() {
                    // Not current any more: drop its extra use, then as any listed span.
                    (*cur).used.set((*cur).used.get() - 1);
                    o.push_back(c, &*cur);
                }
                while let Some(p) = o.pop_front(c) {
                    let s = &*p;
                    s.heap.store(me, Ordering::Relaxed);
                    s.collect();
                    if s.used.get() == 0 {
                        s.check_empty();
                        self.retire(region, s);
                    } else if c == class && found.is_none() && s.has_room() {
                        found = Some(s);
                    } else {
                        self.push_back(c, s);
                    }
                }
            }
            // (Orphans keep no cached span: `leave` gave those back.)
            debug_assert!(o.cache.iter().all(|c| c.get().is_null()));
            region.release_heap(orphan);
        }
        found
    }

    fn pop_front(&self, class: usize) -> Option<*mut Span> {
        let s = self.head(class).get();
        if s.is_null() {
            return None;
        }
        // SAFETY: a span in our list.
        unsafe { self.unlink(class, &*s) };
        Some(s)
    }

    fn push_back(&self, class: usize, s: &Span) {
        let tail = self.tail(class).get();
        s.prev.set(tail);
        s.next.set(ptr::null_mut());
        let p = s as *const Span as *mut Span;
        if tail.is_null() {
            self.head(class).set(p);
        } else {
            // SAFETY: the tail is a span in our list.
            unsafe { (*tail).next.set(p) };
        }
        self.tail(class).set(p);
    }

    /// # Safety
    /// `s` is in the list of `class`.
    unsafe fn unlink(&self, class: usize, s: &Span) {
        let (prev, next) = (s.prev.get(), s.next.get());
        // SAFETY: neighbours in our list are our spans.
        unsafe {
            if prev.is_null() {
                self.head(class).set(next);
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.tail(class).set(prev);
            } else {
                (*next).prev.set(prev);
            }
        }
        s.prev.set(ptr::null_mut());
        s.next.set(ptr::null_mut());
    }
}

/// Adds one to a counter only the calling thread writes: a plain load and store, no atomic
/// read-modify-write.
#[inline(always)]
fn bump(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// Pops from the span just installed, carving first if it has no free block.
///
/// # Safety
/// The caller owns `s`, which has room.
unsafe fn take(region: Region, s: &Span) -> *mut Block {
    // SAFETY: forwarded.
    unsafe {
        if !s.has_free() {
            s.carve(region.start(s));
        }
        s.pop()
    }
}
