//! BigCache: freed large blocks kept per call site and size class, handed back on the next
//! matching request instead of `munmap` + `mmap` + page faults.
//!
//! This is the call point only: the cache holds nothing yet, so every lookup misses and every
//! offered block goes on to the free policy. The table of sites × size classes, its byte cap and
//! eviction arrive with the large-block work (issue "Large blocks").

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::header::Block;
use crate::site::Site;

/// The per-instance cache.
pub(crate) struct BigCache(());

impl BigCache {
    pub(crate) const fn new() -> Self {
        BigCache(())
    }

    /// A cached block fit for `layout` at `site`, with its header rewritten, or `None`.
    #[inline(always)]
    pub(crate) fn take(&self, _layout: Layout, _site: Site, _zeroed: bool) -> Option<NonNull<u8>> {
        None
    }

    /// Offers a freed block to the cache; gives it back if the cache will not keep it.
    #[inline(always)]
    pub(crate) fn put(&self, block: Block) -> Result<(), Block> {
        Err(block)
    }
}
