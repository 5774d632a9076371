//! Batch release: released large blocks are collected and returned to the OS together (one
//! flush per 256 blocks or 4 MiB), instead of one TLB shootdown per block.
//!
//! This is the call point only: for now every block is unmapped at once, which is correct and
//! is what MINIMAL does. The batching arrives with the large-block work.

use core::ptr::NonNull;

use crate::os;

/// The per-instance batch of blocks waiting to be released.
pub(crate) struct Batch(());

impl Batch {
    pub(crate) const fn new() -> Self {
        Batch(())
    }

    /// Releases the mapping `[base, base + len)`, now or with the next flush.
    ///
    /// # Safety
    /// The range must be a whole mapping of ours that nothing refers to any more.
    #[inline]
    pub(crate) unsafe fn release(&self, base: NonNull<u8>, len: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { os::unmap(base, len) }
    }
}
