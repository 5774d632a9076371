//! The large-block path: fresh mappings, BigCache, the free policy (HOT, WARM, COLD), huge
//! pages, and giving memory back when it runs out.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use super::small::out_of_memory;
use super::{Allocator, Mapping, MAX_SYSTEM_ALIGN};
use crate::batch::Released;
use crate::bigcache::{self, BigCache, Meta, CLASSES, MASK, SWEEPS_PER_DECAY};
use crate::header::{self, Method};
use crate::os::{self, Advice, Unmapped};
use crate::policy::{Config, FreePolicy, Policy, Thp};
use crate::site::{Path, Site};
use crate::stats::Event;

/// A large request the kernel would not map is offered to the system allocator below this size
/// (`Allocator::large_from_system`). A terabyte the kernel refuses is in no heap either, and
/// asking costs a failed request glibc's price on top of ours (`malloc(3 TiB)` in a loop is
/// glibc's own test); sanitizer allocators even abort on such sizes (AddressSanitizer above
/// 1 TiB) instead of returning null.
const SYSTEM_FALLBACK_MAX: usize = 1 << 40;

/// Blocks of at least this size get `MADV_HUGEPAGE` under [`Thp::Auto`], with their user
/// region aligned to it.
pub(super) const THP_AUTO_MIN: usize = 2 << 20;

impl<P: Policy> Allocator<P> {
    /// The large path: a BigCache hit where the mode has one, else a fresh mapping. Kept free of
    /// calls on the hit path of the classes up to 16 MiB, so that it needs no register saving;
    /// the larger classes (and caps below 16 MiB) take [`Self::alloc_class`] out of line.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(never)]
    pub(super) unsafe fn alloc_large(
        &self,
        cfg: &Config,
        layout: Layout,
        site_slot: usize,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        let page = os::page_size();
        // A request BigCache can serve is mapped as a block of its class (see `bigcache`).
        if let Some(cache) = self.cache(cfg) {
            if layout.align() <= page {
                if let Some(class) = bigcache::table_class(layout.size(), cfg.bigcache_bytes) {
                    // SAFETY: as this function's; `class` is `layout`'s.
                    return unsafe {
                        self.alloc_cached(cfg, cache, class, layout, site_slot, site_id, zeroed)
                    };
                }
                if layout.size() >= bigcache::CLASSES[0] {
                    // SAFETY: as this function's.
                    return unsafe {
                        self.alloc_class(cfg, cache, layout, site_slot, site_id, zeroed)
                    };
                }
            }
        }
        // SAFETY: `layout` is valid and the guard held (caller).
        unsafe { self.map_large(cfg, layout, site_id, None, zeroed) }
    }

    /// [`Self::alloc_large`] beyond its table: a class above 16 MiB (as far as the cap holds one),
    /// or none.
    ///
    /// # Safety
    /// As [`Self::allocate`]; `layout.align()` is at most a page.
    #[inline(never)]
    unsafe fn alloc_class(
        &self,
        cfg: &Config,
        cache: &BigCache,
        layout: Layout,
        site_slot: usize,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: as this function's; the class, if any, is `layout`'s.
        unsafe {
            match bigcache::class_for(layout.size(), cfg.bigcache_bytes) {
                Some(class) => {
                    self.alloc_cached(cfg, cache, class, layout, site_slot, site_id, zeroed)
                }
                None => self.map_large(cfg, layout, site_id, None, zeroed),
            }
        }
    }

    /// A block of `class` from the cache, else a fresh mapping of the class.
    ///
    /// # Safety
    /// As [`Self::allocate`]; `class` is `layout`'s, for an alignment within a page.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn alloc_cached(
        &self,
        cfg: &Config,
        cache: &BigCache,
        class: usize,
        layout: Layout,
        site_slot: usize,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        let page = os::page_size();
        // (The mask is a no-op, a class being below 16, that drops the bounds check.)
        let len = page + CLASSES[class & MASK];
        if let Some(user) = cache.take(class, site_slot, len) {
            self.count(cfg, Event::CacheHit, 1);
            self.record(cfg, site_id, layout.size(), Path::Cached);
            // SAFETY: a cached class block: mapped, `len` long, its header page ours.
            unsafe {
                header::write(user.sub(page), len, page, Method::Cached, site_id);
                if zeroed {
                    // Only what a previous owner may have written is not zero.
                    let dirty = Meta::read(user).dirty().min(layout.size());
                    ptr::write_bytes(user.as_ptr(), 0, dirty);
                }
            }
            return user.as_ptr();
        }
        self.count(cfg, Event::CacheMiss, 1);
        // SAFETY: `layout` is valid and the guard held (caller); `class` is `layout`'s, for an
        // alignment within a page.
        unsafe { self.map_large(cfg, layout, site_id, Some(class), zeroed) }
    }

    /// Maps a fresh large block: of its BigCache class if it has one, 2 MiB-aligned for huge
    /// pages where THP applies. If the kernel will not map it, the system allocator may still
    /// serve it ([`Self::large_from_system`]).
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[inline(never)]
    unsafe fn map_large(
        &self,
        cfg: &Config,
        layout: Layout,
        site_id: u32,
        class: Option<usize>,
        zeroed: bool,
    ) -> *mut u8 {
        // A miss is a slow path: where what the cache holds decays (here, not in
        // `alloc_large`, whose hit path then makes no call and saves no register).
        self.decay_tick(cfg);
        let page = os::page_size();
        // (The mask is a no-op, a class being below 16, that drops the bounds check.)
        let size = class.map_or(layout.size(), |c| CLASSES[c & MASK]);
        let huge = cfg.thp != Thp::Off && size >= THP_AUTO_MIN && layout.align() <= page;
        // Huge-page candidates get their user region 2 MiB-aligned, the header in the page
        // before it: one extra page, and the kernel can back the region with huge pages.
        let (align, offset) = if huge || class.is_some() {
            (if huge { THP_AUTO_MIN } else { page }, page)
        } else {
            (layout.align(), header::offset_for(layout.align(), page))
        };
        let Some((base, len)) = (match map_block(size, align, offset, page) {
            Some(mapping) => Some(mapping),
            // Out of memory: release what the caches hold and try once more.
            None if self.may_reclaim(cfg) && self.reclaim(cfg) => {
                map_block(size, align, offset, page)
            }
            None => None,
        }) else {
            // SAFETY: `layout` is valid and the guard held (caller).
            return unsafe { self.large_from_system(cfg, layout, site_id, zeroed) };
        };
        self.count(cfg, Event::MmapAlloc, 1);
        self.record(cfg, site_id, layout.size(), Path::Mmap);
        let advise_thp = match cfg.thp {
            Thp::Off => false,
            Thp::Auto => huge,
            Thp::On => true,
        };
        // SAFETY: `[base, base + len)` is the mapping just made, `offset` a power of two from 16
        // to a page (`offset_for`, or the page) with `base + offset` 16-aligned. Fresh pages
        // are zero, so `zeroed` needs no memset (and the metadata word of a page-offset mapping
        // reads "no class"; a class block's says its class, nothing dirty).
        unsafe {
            if advise_thp && os::advise(base, len, Advice::HugePage) {
                self.count(cfg, Event::ThpAdvised, 1);
            }
            let user = header::write(base, len, offset, Method::Mmap, site_id);
            if class.is_some() {
                Meta::new(class, 0).write(user);
            }
            user.as_ptr()
        }
    }

    /// A large request the kernel would not map: served by the system allocator (with a header,
    /// freed by it later like any system block) if its alignment allows and it is below
    /// [`SYSTEM_FALLBACK_MAX`], else null with `ENOMEM`. When the address space is what ran out
    /// (`RLIMIT_AS`), glibc may still hold freed memory in its heap that no `mmap` can reach —
    /// what glibc's own `malloc` would serve.
    ///
    /// # Safety
    /// As [`Self::allocate`].
    #[cold]
    #[inline(never)]
    unsafe fn large_from_system(
        &self,
        cfg: &Config,
        layout: Layout,
        site_id: u32,
        zeroed: bool,
    ) -> *mut u8 {
        if layout.align() > MAX_SYSTEM_ALIGN || layout.size() >= SYSTEM_FALLBACK_MAX {
            return out_of_memory();
        }
        let site = Site::from_raw(u64::from(site_id));
        // SAFETY: the alignment is one the system path serves (tested just above).
        unsafe { self.alloc_system(cfg, layout, site, zeroed) }
    }

    /// Frees a large block: into BigCache when the mode has it and the block fits — HOT as it
    /// is, or WARM (after `MADV_FREE`) when its class has not been reused lately — else out to
    /// the OS (COLD), in batches where the mode batches. `written` bounds the bytes the program
    /// may have written (the layout's size). The HOT path makes no call.
    ///
    /// Inlined into [`Self::classify_by_header`], the one caller, so that the block's fields
    /// stay in registers.
    ///
    /// # Safety
    /// `block` describes a live mapping of ours, released now (its length still to be checked).
    #[inline(always)]
    pub(super) unsafe fn free_mapping(&self, cfg: &Config, block: Mapping, written: usize) {
        let Mapping {
            user,
            len,
            offset,
            site,
        } = block;
        self.count(cfg, Event::MmapFree, 1);
        // SAFETY: the block is ours and no longer used by the program; from here on only the
        // cache or the OS owns it. A page-offset mapping has its metadata word in its header
        // page.
        unsafe {
            header::mark_freed(user, offset);
            if offset == os::page_size() {
                // A class block (one header page, then exactly a class's bytes) says so in its
                // metadata word; one compare checks both the class and the header's length
                // (written together: a stray write that changed either must not reach the
                // cache or `munmap`).
                let meta = Meta::read(user);
                let consistent = offset + meta.class_bytes() == len;
                match self.cache(cfg) {
                    Some(cache) if consistent => {
                        let class = meta.class_unchecked();
                        if cfg.free_policy == FreePolicy::Adaptive && !cache.is_hot(class) {
                            return self.cache_warm(cfg, cache, class, user, len, site);
                        }
                        meta.with_dirty(meta.dirty().max(written)).write(user);
                        if self.cache_put(cfg, cache, class, user, len, site) {
                            return;
                        }
                    }
                    _ if !consistent && (meta.class().is_some() || !block.fits()) => {
                        // (`classify` recognised it by its tag alone.)
                        header::bad_length(user, "free", len);
                    }
                    _ => {}
                }
            }
            self.release_mapping(cfg, user, offset, len)
        }
    }

    /// Caches a class block WARM: advised `MADV_FREE` first, so the kernel may take its pages if
    /// it needs them (what it does not take keeps its contents: all of it counts as dirty).
    ///
    /// # Safety
    /// As [`Self::free_mapping`], for a class block of `class` tagged freed.
    #[inline(never)]
    unsafe fn cache_warm(
        &self,
        cfg: &Config,
        cache: &BigCache,
        class: usize,
        user: NonNull<u8>,
        len: usize,
        site: u32,
    ) {
        // (The mask is a no-op, a class being below 16, that drops the bounds check.)
        let capacity = CLASSES[class & MASK];
        // SAFETY: the user region is whole pages of the block's mapping, unused now; its dirty
        // word is in its header page.
        unsafe {
            if os::advise(user, capacity, Advice::Free) {
                self.count(cfg, Event::MadviseCall, 1);
                self.count(cfg, Event::MadviseBytes, capacity as u64);
            }
            // (Its class and split flag kept.)
            Meta::read(user).with_dirty(capacity).write(user);
            if self.cache_put(cfg, cache, class, user, len, site) {
                return;
            }
            self.release_mapping(cfg, user, os::page_size(), len)
        }
    }

    /// Puts a freed class block into BigCache under the cap; counts an eviction if it does not
    /// fit (the caller then releases it).
    ///
    /// # Safety
    /// As [`BigCache::put`].
    #[inline(always)]
    unsafe fn cache_put(
        &self,
        cfg: &Config,
        cache: &BigCache,
        class: usize,
        user: NonNull<u8>,
        len: usize,
        site: u32,
    ) -> bool {
        let slot = Site::from_raw(u64::from(site)).slot();
        // SAFETY: a freed class block of `class`, `len` long, its metadata written and
        // nothing else referring to it (caller): `BigCache::put`'s contract.
        if unsafe { cache.put(class, slot, user, len, cfg.bigcache_bytes) } {
            return true;
        }
        self.count(cfg, Event::CacheEvict, 1);
        false
    }

    /// Whether the mode keeps anything [`Self::reclaim`] could release (a constant for a
    /// compiled mode, so MINIMAL's failure paths carry no call).
    #[inline(always)]
    pub(super) fn may_reclaim(&self, cfg: &Config) -> bool {
        self.cache(cfg).is_some() || self.batch(cfg).is_some()
    }

    /// Memory has run out: returns every block BigCache holds and every pending release to the
    /// OS, so that the failed request can be tried again. Returns whether anything was
    /// released. Off the hot path: only a failed `mmap` or `malloc` calls it.
    #[cold]
    #[inline(never)]
    pub(super) fn reclaim(&self, cfg: &Config) -> bool {
        let mut released = 0u64;
        if let Some(cache) = self.cache(cfg) {
            let page = os::page_size();
            cache.drain(page, |user, len| {
                // SAFETY: a drained block is a whole mapping of ours (one header page before
                // `user`) that only the cache referred to, and the cache no longer does.
                let unmapped = unsafe { os::unmap(user.sub(page), len) };
                debug_assert!(
                    unmapped != Unmapped::Invalid,
                    "a cached block's length is its class's"
                );
                self.count(cfg, Event::CacheEvict, 1);
                self.count_released(cfg, Released::one(unmapped, len));
                released += 1;
            });
        }
        if let Some(batch) = self.batch(cfg) {
            let done = batch.flush_now();
            self.count_released(cfg, done);
            released += done.calls;
        }
        released > 0
    }

    /// Releases what BigCache has held unused for the mode's decay period, if a sweep is due
    /// ([`BigCache::sweep_due`]). For slow paths only (a cache miss, a pool refill): reads
    /// nothing but the cache's byte count unless the cache holds something, and the clock only
    /// then.
    #[inline(always)]
    pub(super) fn decay_tick(&self, cfg: &Config) {
        if cfg.bigcache_decay_ms == 0 {
            return;
        }
        if let Some(cache) = self.cache(cfg) {
            if !cache.is_empty() {
                self.decay_sweep(cfg, cache);
            }
        }
    }

    /// [`Self::decay_tick`]'s sweep: releases the blocks cached more than the decay period
    /// ago, then flushes the pending batch, so that an idle program holds nothing of its large
    /// blocks.
    #[cold]
    #[inline(never)]
    fn decay_sweep(&self, cfg: &Config, cache: &BigCache) {
        let interval = u64::from(cfg.bigcache_decay_ms).div_ceil(u64::from(SWEEPS_PER_DECAY));
        let Some(generation) = cache.sweep_due(os::coarse_millis(), interval) else {
            return;
        };
        let page = os::page_size();
        // SAFETY: every block in the cache is a class block with a one-page header (`cache_put`
        // puts nothing else).
        unsafe {
            cache.decay(page, generation, |user, len| {
                // SAFETY: a block taken out of the cache: a whole mapping of ours (one header
                // page before `user`) that nothing refers to any more.
                let unmapped = os::unmap(user.sub(page), len);
                debug_assert!(unmapped != Unmapped::Invalid);
                self.count(cfg, Event::CacheDecay, 1);
                self.count_released(cfg, Released::one(unmapped, len));
            });
        }
        if let Some(batch) = self.batch(cfg) {
            let done = batch.flush_now();
            self.count_released(cfg, done);
        }
    }

    /// Returns the mapping of the block at `user` (`offset` bytes in, `len` long) to the OS:
    /// batched where the mode batches, else at once. A mapping the kernel cannot split at the
    /// map-count limit stays mapped with its pages released ([`Unmapped::Kept`]); a range it
    /// refuses as such cannot have been the mapping's: reported as a corrupted header.
    ///
    /// # Safety
    /// The mapping is a whole mapping of ours that nothing refers to any more.
    #[inline(never)]
    unsafe fn release_mapping(&self, cfg: &Config, user: NonNull<u8>, offset: usize, len: usize) {
        // SAFETY: `user - offset` is the mapping's base and `len` its length (caller).
        unsafe {
            let base = user.sub(offset);
            match (cfg.free_policy, self.batch(cfg)) {
                (FreePolicy::Adaptive, Some(batch)) => {
                    let done = batch.release(base, len);
                    self.count_released(cfg, done);
                }
                _ => {
                    let unmapped = os::unmap(base, len);
                    if unmapped == Unmapped::Invalid {
                        header::bad_length(user, "free", len);
                    }
                    self.count_released(cfg, Released::one(unmapped, len));
                }
            }
        }
    }

    /// Counts what a release to the OS did (one `munmap`, or a batch's).
    #[inline(always)]
    pub(super) fn count_released(&self, cfg: &Config, done: Released) {
        self.count(cfg, Event::MunmapCall, done.calls);
        self.count(cfg, Event::MunmapBytes, done.bytes);
        self.count(cfg, Event::MunmapRefused, done.refused);
    }
}

/// Maps a block for `size` bytes after an `offset`-byte lead-in such that `base + offset` is
/// aligned to `align`. Returns the base and the mapping length, or `None` if the size overflows
/// or the kernel refuses.
///
/// A zero-byte request maps one byte's worth: with a page-sized `offset`, `base + offset` would
/// otherwise be the end of the mapping, the address of whatever the kernel maps next (the
/// pool's region, say, which would then claim the block as its own).
fn map_block(
    size: usize,
    align: usize,
    offset: usize,
    page: usize,
) -> Option<(NonNull<u8>, usize)> {
    let len = round_up(size.max(1).checked_add(offset)?, page)?;
    if align <= page {
        return Some((os::map(len)?, len));
    }
    // Over-aligned: map enough to slide the block to an aligned spot, then trim both ends.
    debug_assert_eq!(offset, page);
    let span = len.checked_add(align - page)?;
    if span > isize::MAX as usize {
        return None;
    }
    let raw = os::map(span)?;
    let raw_addr = raw.as_ptr() as usize;
    let user_addr = (raw_addr + offset).next_multiple_of(align);
    let head = user_addr - offset - raw_addr;
    let tail = span - head - len;
    // SAFETY: `[raw, raw + span)` is our fresh mapping; head and tail are whole pages of it
    // (all addresses involved are page multiples) outside the kept `[base, base + len)`.
    unsafe {
        let base = raw.add(head);
        // (Whole pages inside our fresh mapping: the kernel does not refuse them.)
        if head > 0 {
            let _ = os::unmap(raw, head);
        }
        if tail > 0 {
            let _ = os::unmap(base.add(len), tail);
        }
        Some((base, len))
    }
}

/// `n` rounded up to a multiple of the power of two `to`, or `None` on overflow.
#[inline(always)]
pub(super) fn round_up(n: usize, to: usize) -> Option<usize> {
    debug_assert!(to.is_power_of_two());
    Some(n.checked_add(to - 1)? & !(to - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HEADER_SIZE;

    #[test]
    fn round_up_overflows_to_none() {
        assert_eq!(round_up(1, 4096), Some(4096));
        assert_eq!(round_up(4096, 4096), Some(4096));
        assert_eq!(round_up(usize::MAX - 10, 4096), None);
    }

    #[test]
    fn map_block_aligns_the_user_pointer() {
        let page = os::page_size();
        for align in [page * 2, 1 << 21] {
            let (base, len) = map_block(100, align, page, page).unwrap();
            assert_eq!((base.as_ptr() as usize + page) % align, 0);
            assert_eq!(len, 2 * page);
            // SAFETY: the mapping just made.
            assert_eq!(unsafe { os::unmap(base, len) }, Unmapped::Done);
        }
    }

    #[test]
    fn a_zero_byte_block_lies_inside_its_mapping() {
        let page = os::page_size();
        for (align, offset) in [(16, HEADER_SIZE), (page, page), (1 << 21, page)] {
            let (base, len) = map_block(0, align, offset, page).unwrap();
            let (base_addr, user) = (base.as_ptr() as usize, base.as_ptr() as usize + offset);
            assert_eq!(user % align, 0);
            assert!(user < base_addr + len, "align {align}: {len} B mapping");
            // SAFETY: the mapping just made.
            assert_eq!(unsafe { os::unmap(base, len) }, Unmapped::Done);
        }
    }
}
