//! Classification: the one place that knows what a pointer handed back to the allocator can be
//! (mimalloc's `mi_free_ex` is the model). Every path that takes a pointer — `dealloc`, `free`,
//! `realloc`, `usable_size` — calls [`Allocator::classify`] with what it wants done ([`Then`]),
//! and gets that done with the pointer's [`Kind`].

use core::ptr::NonNull;

use super::{Allocator, Kind, Mapping, SystemBlock};
use crate::header::{self, Method, HEADER_SIZE};
use crate::os;
use crate::policy::{Config, Policy};
use crate::pool::Pool;

/// What to do with a pointer once [`Allocator::classify`] knows its [`Kind`].
///
/// A trait rather than a closure, so that each step of the classification hands over to it
/// inline (`#[inline(always)]` below) and the out-of-line step takes it by value, in registers.
pub(super) trait Then<P: Policy>: Sized {
    /// What it returns.
    type Output;

    /// The operation, as misuse reports name it ("free", "realloc", …).
    fn op(&self) -> &'static str;

    /// A lower bound of the bytes the block holds, where the caller knows one (the `Layout`'s
    /// size): above the pool's largest class, the pool's check is skipped.
    fn size(&self) -> Option<usize>;

    /// Does it.
    ///
    /// # Safety
    /// `kind` is what [`Allocator::classify`] found `user` to be, with the caller's contract.
    unsafe fn then(self, a: &Allocator<P>, cfg: &Config, kind: Kind<'_>) -> Self::Output;
}

impl<P: Policy> Allocator<P> {
    /// Finds out what `user` is and hands that to `then`, in this order:
    ///
    /// 1. a pool block, by its address (no header to read), unless [`Then::size`] is above the
    ///    pool's largest class; in a pool mode such a block is most likely a mapping, so step 2
    ///    is skipped too;
    /// 2. a plain system block (16-byte offset), by one compare of its header's tag;
    /// 3. out of line ([`Self::classify_by_header`]): a page-offset mapping (BigCache's class
    ///    blocks, huge-page blocks) by one more compare, anything else by decoding the header in
    ///    full, which ends the process with a message if it is not a live one of ours.
    ///
    /// A page mapping's length is not checked here: the paths that use it check it
    /// ([`Mapping::check`], and the free path against the block's class).
    ///
    /// # Safety
    /// `user` is a live block of this allocator, or a misuse to be reported; plus `then`'s
    /// contract.
    #[inline(always)]
    pub(super) unsafe fn classify<T: Then<P>>(
        &self,
        cfg: &Config,
        user: NonNull<u8>,
        then: T,
    ) -> T::Output {
        let mut header_first = false;
        if let Some(pool) = self.pool(cfg) {
            if then.size().map_or(true, Pool::may_hold) {
                if let Some(block) = pool.block(user) {
                    // SAFETY: the pool's block at `user` (caller's contract forwarded).
                    return unsafe { then.then(self, cfg, Kind::Pool(pool, block)) };
                }
            } else {
                header_first = true;
            }
        }
        if !header_first {
            // SAFETY: not a pool block, so a header block of ours (caller): its header is
            // readable.
            if let Some((base, capacity)) = unsafe { header::plain_system(user) } {
                let offset = HEADER_SIZE;
                let block = SystemBlock {
                    user,
                    base,
                    capacity,
                    offset,
                };
                // SAFETY: the header says: a plain system block based at `base`.
                return unsafe { then.then(self, cfg, Kind::System(block)) };
            }
        }
        // SAFETY: no pool block (step 1 found none, or the size rules it out), so a header
        // block of ours or a misuse (caller).
        unsafe { self.classify_by_header(user, then) }
    }

    /// Step 3 of [`Self::classify`]: a block with a header that is not a plain system block.
    ///
    /// # Safety
    /// As [`Self::classify`], for a pointer that is no pool block.
    #[inline(never)]
    unsafe fn classify_by_header<T: Then<P>>(&self, user: NonNull<u8>, then: T) -> T::Output {
        let cfg = P::config();
        if user.as_ptr() as usize % HEADER_SIZE == 0 && os::page_size() == 4096 {
            // SAFETY: aligned, and a header block of ours has a readable header (caller).
            if let Some((len, site)) = unsafe { header::page_mapping(user) } {
                let block = Mapping {
                    user,
                    len,
                    offset: 4096,
                    site,
                };
                // SAFETY: the tag says: a mapping of ours, one page before `user`.
                return unsafe { then.then(self, cfg, Kind::Mapping(block)) };
            }
        }
        // SAFETY: as above; `read` ends the process on anything but a valid header.
        let block = unsafe { header::read(user, then.op()) };
        let kind = match block.method {
            Method::System => Kind::System(SystemBlock {
                user,
                base: block.base,
                capacity: block.capacity(),
                offset: block.offset,
            }),
            Method::Mmap | Method::Cached => Kind::Mapping(Mapping {
                user,
                len: block.len,
                offset: block.offset,
                site: block.site,
            }),
        };
        // SAFETY: the validated header says what it is.
        unsafe { then.then(self, cfg, kind) }
    }
}

/// Free the block. `written` bounds the bytes the program may have written (the `Layout`'s
/// size); without one (C's `free`), all the block holds counts as written.
///
/// Safety of [`Then::then`]: the block is live and released now.
#[derive(Clone, Copy)]
pub(super) struct Free {
    pub written: Option<usize>,
}

impl<P: Policy> Then<P> for Free {
    type Output = ();

    #[inline(always)]
    fn op(&self) -> &'static str {
        "free"
    }

    #[inline(always)]
    fn size(&self) -> Option<usize> {
        self.written
    }

    #[inline(always)]
    unsafe fn then(self, a: &Allocator<P>, cfg: &Config, kind: Kind<'_>) {
        // SAFETY: each path gets the live block its kind describes, released now (caller).
        unsafe {
            match kind {
                Kind::Pool(pool, block) => a.free_pool(cfg, pool, block),
                Kind::System(block) => {
                    a.free_system(cfg, block, self.written.unwrap_or(block.capacity))
                }
                Kind::Mapping(block) => {
                    a.free_mapping(cfg, block, self.written.unwrap_or(block.capacity()))
                }
            }
        }
    }
}

/// The usable bytes of the block: a pool block's class size (checked live), a header block's
/// capacity (a mapping's length checked). `op` names the caller for misuse reports.
#[derive(Clone, Copy)]
pub(super) struct Capacity {
    pub op: &'static str,
}

impl<P: Policy> Then<P> for Capacity {
    type Output = usize;

    #[inline(always)]
    fn op(&self) -> &'static str {
        self.op
    }

    #[inline(always)]
    fn size(&self) -> Option<usize> {
        None
    }

    #[inline(always)]
    unsafe fn then(self, _: &Allocator<P>, _: &Config, kind: Kind<'_>) -> usize {
        match kind {
            Kind::Pool(pool, block) => pool.checked_size(block, self.op),
            Kind::System(block) => block.capacity,
            Kind::Mapping(block) => {
                block.check(self.op);
                block.capacity()
            }
        }
    }
}
