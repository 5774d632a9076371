//! TinyPool: hakmem's own thread-local small-object pool (FAST and BALANCED).
//!
//! This is the call point only: the pool serves nothing yet, so small requests go on to the
//! system allocator. Size classes, segments, thread-local free lists and remote frees arrive
//! with the pool work (issue "A thread-local small-object pool").

use core::alloc::Layout;
use core::ptr::NonNull;

/// The per-instance pool.
pub(crate) struct Pool(());

impl Pool {
    pub(crate) const fn new() -> Self {
        Pool(())
    }

    /// A pool block for `layout`, or `None` when the pool does not serve it.
    #[inline(always)]
    pub(crate) fn alloc(&self, _layout: Layout, _zeroed: bool) -> Option<NonNull<u8>> {
        None
    }

    /// Whether `ptr` is a pool block (pool blocks carry no header).
    #[inline(always)]
    pub(crate) fn owns(&self, _ptr: NonNull<u8>) -> bool {
        false
    }

    /// The usable bytes of a pool block (its size class).
    ///
    /// The layout-less entry points (`Allocator::usable_size`, `free`, `realloc_ptr`) ask this
    /// of every block [`Pool::owns`].
    #[inline(always)]
    pub(crate) fn usable_size(&self, _ptr: NonNull<u8>) -> usize {
        debug_assert!(false, "the pool owns no block yet");
        0
    }

    /// Returns a pool block.
    ///
    /// # Safety
    /// `ptr` must be a live block of this pool ([`Pool::owns`]).
    #[inline(always)]
    pub(crate) unsafe fn free(&self, _ptr: NonNull<u8>) {
        debug_assert!(false, "the pool owns no block yet");
    }
}
