//! A span: a run of blocks of one size class, and its 64-byte descriptor.
//!
//! The descriptor lives in the region's descriptor table, never in the span itself, so blocks
//! carry no header and a span's memory can be returned to the OS while its descriptor stays.
//!
//! Ownership: a span in use belongs to one thread's heap (`heap`). Only that thread touches the
//! `Cell` fields: it allocates from `free` (the next pointer lives in the free block itself),
//! frees onto `local`, and carves fresh blocks from the untouched tail (`carved` of its class's
//! capacity so far). Any other thread frees by pushing the block onto `remote` (a lock-free
//! stack the owner takes whole). `used` counts the blocks on neither list: handed out, or freed
//! remotely and not yet collected; the heap's current span of a class carries one extra count,
//! so that only a span that is not current can empty out on the free path.
//!
//! Two lists, as mimalloc's pages have: the owner's frees go onto `local`, which becomes the free
//! list only when `free` runs dry. With one list, a free followed by an allocation of the same
//! class reads back the link it just wrote, through the list head it just wrote: two
//! store-to-load forwardings in a row on every alloc+free pair, a cost in time that instruction
//! counts do not show (docs/pool.md, "Spans and free lists"). With two, allocation walks links
//! written long before.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};

use static_assertions::const_assert_eq;

use super::class;
use super::heap::Heap;
use super::report;

/// A free block: its first word links it to the next free block.
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

/// [`Span::state`]: not a span (the region's metadata, or never carved).
pub(crate) const INVALID: u8 = 0;
/// [`Span::state`]: empty, in one of the region's free stacks.
pub(crate) const FREE: u8 = 1;
/// [`Span::state`]: empty, kept by a heap for its next span of the same kind.
pub(crate) const CACHED: u8 = 2;
/// [`Span::state`]: in use by the heap in [`Span::heap`] (which may be an orphan: its thread
/// gone, the heap waiting for the next one).
pub(crate) const OWNED: u8 = 3;

/// A span's descriptor.
#[repr(C, align(64))]
pub(crate) struct Span {
    /// Owner only: the free list blocks are allocated from.
    pub(crate) free: Cell<*mut Block>,
    /// Owner only: the blocks the owner freed since `free` last ran dry.
    pub(crate) local: Cell<*mut Block>,
    /// The owning heap; null unless [`OWNED`].
    pub(crate) heap: AtomicPtr<Heap>,
    /// Blocks freed by other threads, waiting for the owner.
    pub(crate) remote: AtomicPtr<Block>,
    /// Owner only: the heap's list of the class's other spans.
    pub(crate) prev: Cell<*mut Span>,
    /// Owner only: as `prev`.
    pub(crate) next: Cell<*mut Span>,
    /// Owner only: blocks on neither `free` nor `local` (plus one while the span is its heap's
    /// current span). A span holds at most [`class::MAX_CAPACITY`] blocks.
    pub(crate) used: Cell<u16>,
    /// Owner only: blocks carved so far (from the start of the span).
    pub(crate) carved: Cell<u16>,
    /// The class's block size.
    pub(crate) block_size: AtomicU32,
    /// Link of the region's lock-free stacks (a span index + 1, or 0).
    pub(crate) link: AtomicU32,
    /// The size class (written by the owner; read by any thread checking a free).
    pub(crate) class: AtomicU8,
    /// The span kind; fixed when the span is first carved from the region.
    pub(crate) kind: Cell<u8>,
    /// One of [`INVALID`], [`FREE`], [`CACHED`], [`OWNED`].
    pub(crate) state: AtomicU8,
    _pad: u8,
}

const_assert_eq!(core::mem::size_of::<Span>(), 64);

impl Span {
    /// Pops a block off the free list; when that has run dry, the owner's list becomes the free
    /// list first (in line: a few instructions each time a list runs out, where a call to the
    /// slow path cost ~60). Null if both are empty.
    ///
    /// # Safety
    /// The caller owns the span (or it is the region's never-owned dummy, whose lists are
    /// empty).
    #[inline(always)]
    pub(crate) unsafe fn pop(&self) -> *mut Block {
        let mut block = self.free.get();
        if block.is_null() {
            block = self.local.replace(ptr::null_mut());
            if block.is_null() {
                return block;
            }
        }
        // SAFETY: a block on either list is a free block of this span: its first word is the
        // link.
        self.free.set(unsafe { (*block).next });
        self.used.set(self.used.get() + 1);
        block
    }

    /// Pushes `block` onto the owner's list; returns the new `used` count (0: the span emptied).
    /// A block already at the head of the list is a double free, reported.
    ///
    /// # Safety
    /// The caller owns the span; `block` is a block of it that was handed out.
    #[inline(always)]
    pub(crate) unsafe fn push_local(&self, block: *mut Block) -> u16 {
        let head = self.local.get();
        if head == block {
            report::double_free("free", block.cast());
        }
        // SAFETY: the block is ours again; its first word becomes the link.
        unsafe { (*block).next = head };
        self.local.set(block);
        // An owned span with nothing out is retired at once (or is current: one extra count).
        debug_assert!(
            self.used.get() > 0,
            "free into an owned span with no block out"
        );
        let used = self.used.get() - 1;
        self.used.set(used);
        used
    }

    /// Pushes `block` onto the remote stack (any thread). The block last pushed being pushed again
    /// is a double free, reported.
    ///
    /// # Safety
    /// `block` is a handed-out block of this span, which is owned.
    #[inline]
    pub(crate) unsafe fn push_remote(&self, block: *mut Block) {
        let mut head = self.remote.load(Ordering::Relaxed);
        loop {
            if head == block {
                report::double_free("free", block.cast());
            }
            // SAFETY: the block is being freed: its first word becomes the link, published by
            // the release exchange below.
            unsafe { (*block).next = head };
            match self.remote.compare_exchange_weak(
                head,
                block,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Moves the remote stack onto the free list. Returns whether any block came.
    ///
    /// # Safety
    /// The caller owns the span.
    pub(crate) unsafe fn collect(&self) -> bool {
        let list = self.remote.swap(ptr::null_mut(), Ordering::Acquire);
        if list.is_null() {
            return false;
        }
        // Count the blocks and find the tail; more blocks than are out is a double free (and a
        // cycle would be one), so the walk is bounded.
        let out = u32::from(self.used.get());
        let mut n = 1u32;
        let mut tail = list;
        // SAFETY: every block on the remote stack was pushed with its link written before the
        // release exchange that the acquire swap above synchronises with.
        unsafe {
            while !(*tail).next.is_null() {
                if n >= out {
                    report::double_free("free", list.cast());
                }
                tail = (*tail).next;
                n += 1;
            }
            (*tail).next = self.free.get();
        }
        if n > out {
            report::double_free("free", list.cast());
        }
        self.free.set(list);
        // (At most `out`, a `u16`.)
        self.used.set((out - n) as u16);
        true
    }

    /// Whether [`Span::pop`] has a block without carving (on the free list or the owner's).
    #[inline]
    pub(crate) fn has_free(&self) -> bool {
        !self.free.get().is_null() || !self.local.get().is_null()
    }

    /// Whether the span can hand out a block (a free one, or one not yet carved).
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.has_free() || self.carved.get() < self.capacity()
    }

    /// Blocks that fit in the span: its class's capacity.
    #[inline]
    fn capacity(&self) -> u16 {
        let c = class::bounded(self.class.load(Ordering::Relaxed) as usize, class::CLASSES);
        class::CAPACITY[c]
    }

    /// Carves up to a page's worth (at least 4) of fresh blocks onto the empty free list (the
    /// owner's list is empty too: freed blocks are reused first). Returns whether any were left
    /// to carve.
    ///
    /// # Safety
    /// The caller owns the span; `start` is its first byte and the span is committed.
    pub(crate) unsafe fn carve(&self, start: usize) -> bool {
        debug_assert!(self.free.get().is_null() && self.local.get().is_null());
        let size = self.block_size.load(Ordering::Relaxed) as usize;
        let carved = self.carved.get();
        let left = self.capacity() - carved;
        if left == 0 {
            return false;
        }
        if size < class::MIN_ALIGN {
            // SAFETY: the caller owns the span, so `init` set it up for a class, whose blocks
            // are at least 16 bytes. Said to the compiler, this drops the check for a division
            // by zero (a panic path) at no cost.
            unsafe { core::hint::unreachable_unchecked() }
        }
        // (At most `left`, a `u16`.)
        let n = left.min((4096 / size).max(4) as u16);
        let first = start + carved as usize * size;
        // SAFETY: blocks `carved .. carved + n` lie inside the span and nothing uses them; each
        // gets the link to the next, the last a null.
        unsafe {
            for i in 0..n as usize - 1 {
                let b = (first + i * size) as *mut Block;
                (*b).next = (first + (i + 1) * size) as *mut Block;
            }
            (*((first + (n as usize - 1) * size) as *mut Block)).next = ptr::null_mut();
        }
        self.free.set(first as *mut Block);
        self.carved.set(carved + n);
        true
    }

    /// Sets the span up for `class`, owned by `heap`, nothing carved.
    ///
    /// # Safety
    /// The caller has just taken the span from a free stack or a cache: nobody else refers to it.
    pub(crate) unsafe fn init(&self, class: usize, heap: *mut Heap) {
        debug_assert_eq!(self.kind.get() as usize, class::kind(class));
        debug_assert!(self.remote.load(Ordering::Relaxed).is_null());
        let c = class::bounded(class, class::CLASSES);
        self.free.set(ptr::null_mut());
        self.local.set(ptr::null_mut());
        self.used.set(0);
        self.carved.set(0);
        self.block_size.store(class::SIZES[c], Ordering::Relaxed);
        self.prev.set(ptr::null_mut());
        self.next.set(ptr::null_mut());
        self.class.store(class as u8, Ordering::Relaxed);
        self.heap.store(heap, Ordering::Relaxed);
        self.state.store(OWNED, Ordering::Relaxed);
    }

    /// Checks an emptied span (`used == 0`, nothing remote): its two lists must hold exactly the
    /// carved blocks. Longer lists (or a cycle) mean a block was freed twice; reported.
    ///
    /// # Safety
    /// The caller owns the span.
    pub(crate) unsafe fn check_empty(&self) {
        debug_assert_eq!(self.used.get(), 0);
        let carved = u32::from(self.carved.get());
        let mut n = 0u32;
        for head in [self.free.get(), self.local.get()] {
            let mut b = head;
            while !b.is_null() {
                n += 1;
                if n > carved {
                    report::double_free("free", b.cast());
                }
                // SAFETY: a block on one of the span's lists; its first word is the link.
                b = unsafe { (*b).next };
            }
        }
        if n != carved {
            report::double_free("free", self.local.get().cast());
        }
    }
}
