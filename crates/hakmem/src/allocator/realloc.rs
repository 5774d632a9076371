//! Resizing: in place where the block's backend allows (a pool block that still fits its class,
//! `realloc` of a system block staying small, the mapping itself for a large block staying
//! large), else a move.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use super::classify::Then;
use super::large::{round_up, THP_AUTO_MIN};
use super::small::out_of_memory;
use super::{Allocator, Kind, Mapping, SystemBlock};
use crate::batch::Released;
use crate::bigcache::{self, Meta, CLASSES, MASK};
use crate::header::{self, HEADER_SIZE};
use crate::os::{self, Advice};
use crate::policy::{Config, Policy, Thp};
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
            if block.class().is_some() {
                // It may have been written past its new size: when it is freed, the layout
                // will not say so, so count all of it as dirty now.
                // SAFETY: a class block has its metadata word in its header page.
                unsafe {
                    let meta = Meta::read(block.user);
                    meta.with_dirty(block.capacity()).write(block.user);
                }
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
        if new.align() > page || block.is_split() {
            // mremap keeps page alignment only, and refuses a range of two kernel mappings.
            return None;
        }
        if block.offset == page {
            // SAFETY: a live page-offset mapping of ours, growing (checked above).
            if let Some(user) = unsafe { self.grow_into_cached(cfg, &block, new) } {
                return Some(user);
            }
        }
        // The kernel grows it: to its class where it has one (so that it stays cacheable, and
        // grows in place until the class is full), 2 MiB-aligned where huge pages apply.
        let class = match self.cache(cfg) {
            Some(_) if block.offset == page => bigcache::class_for(new.size(), cfg.bigcache_bytes),
            _ => None,
        };
        let capacity = class.map_or(new.size(), |c| CLASSES[c & MASK]);
        let len = round_up(capacity.checked_add(block.offset)?, page)?;
        let huge = cfg.thp != Thp::Off && capacity >= THP_AUTO_MIN;
        // SAFETY: the block's mapping is ours and `block.len` long (checked above); pages move,
        // the header with them.
        let base = unsafe {
            if huge {
                grow_aligned(base, block.len, len, block.offset)
            } else {
                os::remap(base, block.len, len)
            }
        }?;
        self.count(cfg, Event::Mremap, 1);
        // SAFETY: the header (and a page-offset mapping's metadata word) moved with the
        // mapping, at the same offset; `[base, base + len)` is the grown mapping.
        unsafe {
            let user = base.add(block.offset);
            header::set_len(user, len);
            // (The advice stays with a mapping that moves or grows, but a block that was below
            // 2 MiB never had it.)
            if huge && os::advise(base, len, Advice::HugePage) {
                self.count(cfg, Event::ThpAdvised, 1);
            }
            if block.offset == page {
                // The block may have become, or stopped being, a class block; what the program
                // wrote before is dirty, the new pages are zero.
                Meta::new(class, block.capacity()).write(user);
            }
            Some(user)
        }
    }

    /// Grows a page-offset block into a cached block of its new class, or of a larger one
    /// within [`GROW_FIT`] times the new size: the block's pages are moved (`mremap` to a fixed
    /// address) over the head of the cached one, whose other pages — already faulted in — become
    /// the room it grows into. A loop that grows a block to 64 MiB, frees it and starts again
    /// so faults nothing after its first round. `None`: no such block cached (or the kernel
    /// refused the move; the cached block is then released).
    ///
    /// # Safety
    /// `block` is a live page-offset mapping of ours, checked, growing to `new`.
    unsafe fn grow_into_cached(
        &self,
        cfg: &Config,
        block: &Mapping,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        let cache = self.cache(cfg)?;
        let page = os::page_size();
        let first = bigcache::class_for(new.size(), cfg.bigcache_bytes)?;
        let slot = Site::from_raw(u64::from(block.site)).slot();
        let most = new.size().saturating_mul(GROW_FIT);
        let (user, class) = cache.take_fit(first, most, slot, page)?;
        let len = page + CLASSES[class & MASK];
        debug_assert!(
            block.len < len,
            "a growing block is smaller than its new class"
        );
        // SAFETY: the cached block is ours now (taken), a whole mapping of `len` bytes with a
        // one-page header; the growing block is a whole mapping (caller) disjoint from it.
        unsafe {
            let base = user.sub(page);
            if !os::remap_to(block.base(), block.len, block.len, base) {
                // The kernel may have unmapped the cached block's head before it refused:
                // release all of it (a hole in the range is fine for munmap).
                let unmapped = os::unmap(base, len);
                self.count(cfg, Event::CacheEvict, 1);
                self.count_released(cfg, Released::one(unmapped, len));
                return None;
            }
            self.count(cfg, Event::CacheHit, 1);
            self.count(cfg, Event::Mremap, 1);
            // The growing block's header page now heads the mapping: its length becomes the
            // cached block's, and all of its room may hold a previous owner's bytes.
            header::set_len(user, len);
            Meta::new(Some(class), len - page).split().write(user);
            Some(user)
        }
    }
}

/// How much larger than a growing block's new size a cached block it grows into may be
/// ([`Allocator::grow_into_cached`]). A growing block tends to keep growing (a vector doubling),
/// and the room is memory the cache held anyway; the bound keeps a block that stops growing
/// from pinning much more than it uses: at most three more doublings' worth.
const GROW_FIT: usize = 8;

/// Grows the mapping `[base, base + old_len)` to `new_len` bytes such that its region after the
/// `offset`-byte header (a page-offset block) or the mapping itself (any other) starts on a
/// 2 MiB boundary, where huge pages can back it: in place if it is aligned already and the
/// address space after it is free, else moved and grown in one `mremap` to a fixed address in
/// a range reserved for it (one call: if the kernel refuses, the block is where it was, as a
/// failed `realloc` requires). Falls back to a plain `mremap` if the reservation fails.
///
/// # Safety
/// As [`os::remap`].
unsafe fn grow_aligned(
    base: NonNull<u8>,
    old_len: usize,
    new_len: usize,
    offset: usize,
) -> Option<NonNull<u8>> {
    let page = os::page_size();
    let lead = if offset == page { page } else { 0 };
    // SAFETY: the caller's contract (a whole mapping of ours that may move); the reservation
    // is ours, its pages outside the moved mapping unused.
    unsafe {
        if os::under_memcheck() {
            // It can lose the grown part of a fixed-address growth (os::under_memcheck).
            return os::remap(base, old_len, new_len);
        }
        if (base.as_ptr() as usize + lead) % THP_AUTO_MIN == 0
            && os::grow_in_place(base, old_len, new_len)
        {
            return Some(base);
        }
        let span = new_len.checked_add(THP_AUTO_MIN)?;
        let Some(raw) = os::reserve_writable(span) else {
            return os::remap(base, old_len, new_len);
        };
        let raw_addr = raw.as_ptr() as usize;
        let head = (raw_addr + lead).next_multiple_of(THP_AUTO_MIN) - lead - raw_addr;
        let target = raw.add(head);
        if !os::remap_to(base, old_len, new_len, target) {
            // (Our reservation, partly unmapped by the kernel perhaps: holes are fine.)
            let _ = os::unmap(raw, span);
            return os::remap(base, old_len, new_len);
        }
        // The reservation's ends, whole pages outside the moved mapping.
        if head > 0 {
            let _ = os::unmap(raw, head);
        }
        let tail = span - head - new_len;
        if tail > 0 {
            let _ = os::unmap(target.add(new_len), tail);
        }
        Some(target)
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
        self.meta().and_then(Meta::class)
    }

    /// Whether the block's mapping is two kernel mappings ([`Meta::split`]).
    fn is_split(&self) -> bool {
        self.meta().is_some_and(Meta::is_split)
    }

    /// The metadata word of a page-offset mapping.
    fn meta(&self) -> Option<Meta> {
        if self.offset != os::page_size() {
            return None;
        }
        // SAFETY: a one-page offset mapping has its metadata word in its header page.
        Some(unsafe { Meta::read(self.user) })
    }
}
