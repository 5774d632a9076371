//! Resizing: in place where the block's backend allows (a pool block that still fits its class,
//! `realloc` of a system block staying small, the mapping itself for a large block staying
//! large), else a move.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use super::classify::Then;
use super::large::round_up;
use super::small::out_of_memory;
use super::{Allocator, Kind, Mapping, SystemBlock};
use crate::bigcache::{self, Meta};
use crate::header::{self, HEADER_SIZE};
use crate::os;
use crate::policy::{Config, Policy};
use crate::site::Site;
use crate::stats::Event;
use crate::system;

impl<P: Policy> Allocator<P> {
    /// Resizes the block at `ptr` to `new_size` bytes aligned to `align`: in place where its
    /// kind allows, else by a move that copies what both blocks hold. `old` is the size the
    /// block was allocated with where the caller knows it (`GlobalAlloc::realloc`); without
    /// it (C's `realloc`) the block's capacity is what is kept. The pointer is classified once.
    ///
    /// # Safety
    /// `ptr` is null (then this allocates) or a live block of this allocator, aligned to
    /// `align` and holding at least `old` bytes where given; `align` is a power of two; the
    /// caller holds the re-entry guard.
    #[inline(always)]
    pub(super) unsafe fn reallocate(
        &self,
        ptr: *mut u8,
        align: usize,
        old: Option<usize>,
        new_size: usize,
    ) -> *mut u8 {
        let cfg = P::config();
        let Ok(new) = Layout::from_size_align(new_size, align) else {
            return out_of_memory();
        };
        let Some(user) = NonNull::new(ptr) else {
            // SAFETY: realloc of nothing is an allocation of a valid layout.
            return unsafe { self.allocate(new, Site::NONE, false) };
        };
        // What the block holds for the program, if it has to move. (Each caller passes a
        // constant kind of `old`, so one branch remains.)
        // SAFETY: a live block of ours holding at least `old` bytes where given (caller).
        let kept = unsafe {
            match old {
                Some(old) => match self.classify(cfg, user, Resize { old, new }) {
                    Some(p) => return p.as_ptr(),
                    None => old,
                },
                None => match self.classify(cfg, user, ResizeUnsized { new }) {
                    Ok(p) => return p.as_ptr(),
                    Err(capacity) => capacity,
                },
            }
        };
        // Move: new block, copy what both hold, free the old one.
        // SAFETY: `new` is valid.
        let moved = unsafe { self.allocate(new, Site::NONE, false) };
        if !moved.is_null() {
            // SAFETY: both blocks are live, distinct, and hold at least the copied length; the
            // old one holds `kept` bytes, as `deallocate` requires.
            unsafe {
                ptr::copy_nonoverlapping(ptr, moved, kept.min(new_size));
                self.deallocate(ptr, kept);
            }
        }
        moved
    }

    /// A system block resized by `realloc`, if it stays small and has the plain offset (which
    /// `realloc` keeps); `None` means "move it".
    ///
    /// # Safety
    /// `block` is live; `new` is its layout after the resize.
    unsafe fn resize_system(
        &self,
        cfg: &Config,
        block: SystemBlock,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        if !self.is_small(cfg, new) || block.offset != HEADER_SIZE {
            return None;
        }
        let len = new.size().checked_add(HEADER_SIZE)?;
        if len > isize::MAX as usize {
            return None;
        }
        // SAFETY: a live malloc block (caller); on failure it stays valid (and we move instead,
        // which fails the same way and returns null).
        let base = NonNull::new(unsafe { system::realloc(block.base.as_ptr(), len) })?;
        // SAFETY: realloc kept the header bytes and 16-alignment, and the block is `len` long.
        unsafe {
            let user = base.add(HEADER_SIZE);
            header::set_len(user, len);
            Some(user)
        }
    }

    /// A mapping resized in place — shrunk, or grown by `mremap` (which may move its pages, the
    /// header with them) — if it stays large; `None` means "move it".
    ///
    /// # Safety
    /// `block` is live (its length checked here); `new` is its layout after the resize.
    unsafe fn resize_mapping(
        &self,
        cfg: &Config,
        block: Mapping,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        block.check("realloc");
        if self.is_small(cfg, new) {
            return None;
        }
        let page = os::page_size();
        let base = block.base();
        if new.size() <= block.capacity() {
            // Shrink in place: a cacheable block keeps its class; any other gives its whole
            // unused pages back.
            if let Some(class) = block.class() {
                // It may have been written past its new size: when it is freed, the layout
                // will not say so, so count all of it as dirty now.
                // SAFETY: a class block has its metadata word in its header page.
                unsafe { Meta::new(Some(class), block.capacity()).write(block.user) };
            } else {
                let len = round_up(new.size() + block.offset, page)?;
                if len < block.len {
                    // SAFETY: the tail is whole pages of the block's mapping (checked above),
                    // unused now; shrinking never moves the mapping.
                    unsafe { os::remap(base, block.len, len) }?;
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
        // SAFETY: the block's mapping is ours and `len` long (checked above); pages move, the
        // header with them.
        let base = unsafe { os::remap(base, block.len, len) }?;
        self.count(cfg, Event::Mremap, 1);
        // SAFETY: the header (and a page-offset mapping's metadata word) moved with the
        // mapping, at the same offset.
        unsafe {
            let user = base.add(block.offset);
            header::set_len(user, len);
            if block.offset == page {
                // The block may have become, or stopped being, a class block; what the program
                // wrote before is dirty, the new pages are zero.
                let class = bigcache::class_of_capacity(len - page);
                Meta::new(class, block.capacity()).write(user);
            }
            Some(user)
        }
    }
}

/// Resize a block that holds `old` bytes in place to `new`, if its kind allows; `None`
/// means "move it".
#[derive(Clone, Copy)]
struct Resize {
    old: usize,
    new: Layout,
}

impl<P: Policy> Then<P> for Resize {
    type Output = Option<NonNull<u8>>;

    fn op(&self) -> &'static str {
        "realloc"
    }

    #[inline(always)]
    fn size(&self) -> Option<usize> {
        Some(self.old)
    }

    #[inline(always)]
    unsafe fn then(self, a: &Allocator<P>, cfg: &Config, kind: Kind<'_>) -> Self::Output {
        // SAFETY: forwarded: the live block `kind` describes.
        unsafe { a.resize_in_place(cfg, kind, self.new) }
    }
}

/// [`Resize`] without a `Layout` (C's `realloc`): the pool's address is checked to be a live
/// block, and `Err` carries the block's capacity, all of which moves.
#[derive(Clone, Copy)]
struct ResizeUnsized {
    new: Layout,
}

impl<P: Policy> Then<P> for ResizeUnsized {
    type Output = Result<NonNull<u8>, usize>;

    fn op(&self) -> &'static str {
        "realloc"
    }

    fn size(&self) -> Option<usize> {
        None
    }

    unsafe fn then(self, a: &Allocator<P>, cfg: &Config, kind: Kind<'_>) -> Self::Output {
        let capacity = match kind {
            Kind::Pool(pool, block) => pool.checked_size(block, "realloc"),
            Kind::System(block) => block.capacity,
            // (Checked by `resize_mapping` before anything uses it.)
            Kind::Mapping(block) => block.capacity(),
        };
        // SAFETY: forwarded: the live block `kind` describes.
        unsafe { a.resize_in_place(cfg, kind, self.new) }.ok_or(capacity)
    }
}

impl<P: Policy> Allocator<P> {
    /// The block of `kind` resized to `new` where it is, if its kind allows: a pool block
    /// stays put while the new size fits and still needs more than half of it (else it moves
    /// to a smaller class, or out of the pool); system blocks and mappings as their backend
    /// allows. `None` means "move it".
    ///
    /// # Safety
    /// `kind` describes a live block of ours.
    #[inline(always)]
    unsafe fn resize_in_place(
        &self,
        cfg: &Config,
        kind: Kind<'_>,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        // SAFETY: the live block its kind describes (caller).
        unsafe {
            match kind {
                Kind::Pool(_, block) => {
                    let size = block.size();
                    (new.size() <= size && new.size() > size / 2).then_some(block.ptr())
                }
                Kind::System(block) => self.resize_system(cfg, block, new),
                Kind::Mapping(block) => self.resize_mapping(cfg, block, new),
            }
        }
    }
}

impl Mapping {
    /// The mapping's first byte.
    #[inline(always)]
    fn base(&self) -> NonNull<u8> {
        // SAFETY: `offset` bytes before `user` is the mapping's base, inside it.
        unsafe { self.user.sub(self.offset) }
    }

    /// The block's BigCache class, if it is a class block (one header page, then exactly a
    /// class's bytes, and its metadata word says so).
    fn class(&self) -> Option<usize> {
        if self.offset != os::page_size() {
            return None;
        }
        // SAFETY: a one-page offset mapping has its metadata word in its header page.
        unsafe { Meta::read(self.user) }.class()
    }
}
