//! BigCache: freed large blocks kept per call site and size class, handed back on the next
//! matching request instead of `munmap` + `mmap` + a page fault per page.
//!
//! A request of 512 KiB – 16 MiB rounds up to its class (512 KiB, 1, 2, 3, 4, 6, 8, 16 MiB) and
//! is mapped as a *class block*: one header page, then exactly the class's bytes, so the user
//! pointer is page-aligned and any cached block of the class serves any request of the class
//! with an alignment up to a page (and, for THP, the user region can be 2 MiB-aligned).
//!
//! The table has [`SITE_SLOTS`] × 8 classes × [`WAYS`] slots; a slot holds a cached block's
//! user address or 0. Taking swaps a slot to 0; putting swaps 0 for the address with a
//! compare-exchange: lock-free, and two threads only meet on the same slot. A byte cap bounds
//! what the cache holds (the C original had none: 256 × 8 slots could pin gigabytes).
//!
//! When memory runs out the allocator drains the cache before it retries ([`BigCache::drain`]).
//! A failing program may do that on every request (glibc's own tests allocate terabytes in a
//! loop), so a drain costs in proportion to what the cache holds: nothing when it holds nothing
//! (the byte count says so), and otherwise a look at one flag per site slot (set by every put,
//! a plain store), then the 128 slots of each flagged site only — not a walk over all 32,768.
//!
//! While a block is cached its header is tagged freed, so a second free of it is reported as a
//! double free. The word just before the header (the header page is ours) is the block's
//! [`Meta`]: its class and how many bytes may be dirty, so that `alloc_zeroed` clears only those.
//!
//! The free policy's "recent reuse of the size class" is a per-class score: a hit sets it to
//! [`SCORE_MAX`], each block put lowers it by one. A class with no hit in its last `SCORE_MAX`
//! puts is WARM: its blocks are cached after `MADV_FREE`, so the kernel may take their pages
//! back if it needs them.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::header::HEADER_SIZE;
#[cfg(doc)]
use crate::site::Site;
use crate::site::SITE_SLOTS;

/// The size classes, in bytes.
pub(crate) const CLASSES: [usize; 8] = [
    512 << 10,
    1 << 20,
    2 << 20,
    3 << 20,
    4 << 20,
    6 << 20,
    8 << 20,
    16 << 20,
];

/// The mapping length of the smallest block the cache holds: the smallest class plus the header
/// page (4 KiB, the page size every class block is laid out for). A byte cap below it holds
/// nothing ([`Config::validate`](crate::Config::validate) refuses one).
pub(crate) const SMALLEST_BLOCK: usize = CLASSES[0] + 4096;

/// Slots per (site, class).
pub(crate) const WAYS: usize = 16;

/// Puts that stay HOT after a hit of their class.
const SCORE_MAX: u32 = 64;

/// `CLASS_OF[(size - 1) >> 19]`: the class of sizes 1 ..= 16 MiB, by 512 KiB steps.
const CLASS_OF: [u8; 32] = {
    let mut table = [0u8; 32];
    let mut step = 0;
    while step < 32 {
        let top = (step + 1) << 19; // the largest size of this step
        let mut c = 0;
        while CLASSES[c] < top {
            c += 1;
        }
        table[step] = c as u8;
        step += 1;
    }
    table
};

/// The class serving a request of `size` bytes, or `None` (below 512 KiB or above 16 MiB).
#[inline(always)]
pub(crate) fn class_of(size: usize) -> Option<usize> {
    if size < CLASSES[0] || size > CLASSES[7] {
        return None;
    }
    Some(CLASS_OF[(size - 1) >> 19] as usize)
}

/// The class of a block whose user region is exactly `capacity` bytes, or `None`.
#[inline(always)]
pub(crate) fn class_of_capacity(capacity: usize) -> Option<usize> {
    // `get`, not indexing: no panic path (a class is always in bounds).
    class_of(capacity).filter(|&c| CLASSES.get(c) == Some(&capacity))
}

/// The per-instance cache.
pub(crate) struct BigCache {
    slots: [[[AtomicUsize; WAYS]; CLASSES.len()]; SITE_SLOTS],
    /// Per site slot: set by every `put` into the site's slots (a store, no read-modify-write:
    /// one instruction on the free path), cleared only by [`BigCache::drain`] as it empties the
    /// site's slots. A site holding a block always has its flag set (or a `put` about to set
    /// it). Only drains read it.
    occupied: [AtomicBool; SITE_SLOTS],
    /// Bytes held (mapping lengths).
    held: AtomicUsize,
    /// Recent reuse per class.
    score: [AtomicU32; CLASSES.len()],
}

impl BigCache {
    pub(crate) const fn new() -> Self {
        BigCache {
            slots: [const { [const { [const { AtomicUsize::new(0) }; WAYS] }; CLASSES.len()] };
                SITE_SLOTS],
            occupied: [const { AtomicBool::new(false) }; SITE_SLOTS],
            held: AtomicUsize::new(0),
            score: [const { AtomicU32::new(0) }; CLASSES.len()],
        }
    }

    /// The slots of (site slot, class). The masks are no-ops (a site slot is below
    /// [`SITE_SLOTS`], a class below 8) that let the compiler drop the bounds checks.
    #[inline(always)]
    fn bucket(&self, class: usize, slot: usize) -> &[AtomicUsize; WAYS] {
        &self.slots[slot & (SITE_SLOTS - 1)][class & (CLASSES.len() - 1)]
    }

    /// Takes a cached block of `class` for the site in slot `site_slot` ([`Site::slot`]): its
    /// user address. The block keeps its mapping, its header page and its metadata word; the
    /// caller rewrites the header.
    #[inline(always)]
    pub(crate) fn take(&self, class: usize, site_slot: usize, len: usize) -> Option<NonNull<u8>> {
        // Swapping straight away (no load first) is the cheapest hit; a miss costs a few more
        // locked instructions, next to the `mmap` it leads to.
        for slot in self.bucket(class, site_slot) {
            let user = slot.swap(0, Ordering::Acquire);
            if user != 0 {
                self.held.fetch_sub(len, Ordering::Relaxed);
                // A hit makes the class HOT for its next SCORE_MAX puts.
                self.score[class].store(SCORE_MAX, Ordering::Relaxed);
                return NonNull::new(user as *mut u8);
            }
        }
        None
    }

    /// Whether `class` has been reused recently (HOT) and lowers its score by one put; a cold
    /// class's blocks are WARM: advised `MADV_FREE` before they are cached.
    #[inline(always)]
    pub(crate) fn is_hot(&self, class: usize) -> bool {
        // `get`, not indexing: no panic path on the free path (a class is always in bounds;
        // if it were not, "cold" would be a safe answer).
        let Some(score) = self.score.get(class) else {
            return false;
        };
        let s = score.load(Ordering::Relaxed);
        if s == 0 {
            return false;
        }
        score.store(s - 1, Ordering::Relaxed);
        true
    }

    /// Caches the block at `user` (mapping length `len`) for the site in slot `site_slot`
    /// ([`Site::slot`]), unless that would exceed
    /// `cap` bytes or the (site, class) slots are full. Returns whether it was kept; if not, the
    /// caller still owns the block.
    ///
    /// # Safety
    /// `user` is a freed class block of `class` whose header is already tagged freed; if kept,
    /// nothing but the cache refers to it any more.
    #[inline(always)]
    pub(crate) unsafe fn put(
        &self,
        class: usize,
        site_slot: usize,
        user: NonNull<u8>,
        len: usize,
        cap: usize,
    ) -> bool {
        if self.held.fetch_add(len, Ordering::Relaxed) + len > cap {
            self.held.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        let addr = user.as_ptr() as usize;
        for slot in self.bucket(class, site_slot) {
            if slot
                .compare_exchange(0, addr, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                // Release: a drain that takes the flag sees the block in its slot.
                self.occupied[site_slot & (SITE_SLOTS - 1)].store(true, Ordering::Release);
                return true;
            }
        }
        self.held.fetch_sub(len, Ordering::Relaxed);
        false
    }
}

impl BigCache {
    /// Takes every cached block out of the cache and hands each to `release` (user address,
    /// mapping length): for when memory has run out and the cache must give back what it
    /// holds. Lock-free like `take`: blocks put meanwhile may stay. Costs in proportion to what
    /// the cache holds (the module docs); returns the number of sites it looked into.
    #[cold]
    pub(crate) fn drain(&self, page: usize, mut release: impl FnMut(NonNull<u8>, usize)) -> usize {
        if self.held.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut visited = 0;
        // (Zipped, not indexed: no panic path.)
        for (flag, site) in self.occupied.iter().zip(&self.slots) {
            // Acquire: pairs with `put`'s release, so every block put before the flag was set
            // is found in its slot below (a flag set again meanwhile stays for the next drain).
            if !flag.load(Ordering::Relaxed) || !flag.swap(false, Ordering::Acquire) {
                continue;
            }
            visited += 1;
            for (bucket, class_bytes) in site.iter().zip(CLASSES) {
                let len = page + class_bytes;
                for slot in bucket {
                    if slot.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    if let Some(user) = NonNull::new(slot.swap(0, Ordering::Acquire) as *mut u8) {
                        self.held.fetch_sub(len, Ordering::Relaxed);
                        release(user, len);
                    }
                }
            }
        }
        visited
    }
}

/// A class block's metadata word, in its header page just below the header: its class (so the
/// free path need not derive it) and how many bytes from the user pointer may have been
/// written since the block was last known to be zero (so `alloc_zeroed` clears only those).
/// A fresh mapping reads 0: "not a class block".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta(usize);

const CLASS_SHIFT: u32 = usize::BITS - 8;

/// What [`Meta::class_bytes`] says for a word that names no class: a length no block has, so
/// that `offset + class_bytes == len` holds for class blocks only (a zero-sized block's mapping
/// is exactly its offset long).
const NOT_A_CLASS: usize = 1 << 62;

/// `CLASSES[code - 1]` for the class codes 1 ..= 8 of a metadata word, [`NOT_A_CLASS`] for
/// every other value its top byte can take.
static CLASS_BYTES_BY_CODE: [usize; 256] = {
    let mut table = [NOT_A_CLASS; 256];
    let mut class = 0;
    while class < CLASSES.len() {
        table[class + 1] = CLASSES[class];
        class += 1;
    }
    table
};

impl Meta {
    /// The metadata of a block of `class` (or of no class) with `dirty` bytes.
    #[inline(always)]
    pub(crate) fn new(class: Option<usize>, dirty: usize) -> Meta {
        debug_assert!(dirty < 1 << CLASS_SHIFT);
        Meta(class.map_or(0, |c| (c + 1) << CLASS_SHIFT) | dirty)
    }

    /// The block's class, if it is a class block.
    #[inline(always)]
    pub(crate) fn class(self) -> Option<usize> {
        (self.0 >> CLASS_SHIFT).checked_sub(1)
    }

    /// The bytes of the block's class, or [`NOT_A_CLASS`] if it is no class block (or the word
    /// is not one this module wrote): one table load, no branch.
    #[inline(always)]
    pub(crate) fn class_bytes(self) -> usize {
        CLASS_BYTES_BY_CODE[self.0 >> CLASS_SHIFT]
    }

    /// The block's class, for a word whose [`Meta::class_bytes`] is a class's.
    #[inline(always)]
    pub(crate) fn class_unchecked(self) -> usize {
        debug_assert!(self.class_bytes() != NOT_A_CLASS, "meta {:#x}", self.0);
        ((self.0 >> CLASS_SHIFT) - 1) & (CLASSES.len() - 1)
    }

    /// The same block's metadata with `dirty` bytes.
    #[inline(always)]
    pub(crate) fn with_dirty(self, dirty: usize) -> Meta {
        debug_assert!(dirty < 1 << CLASS_SHIFT);
        Meta(self.0 & !((1 << CLASS_SHIFT) - 1) | dirty)
    }

    /// Bytes that may be dirty.
    #[inline(always)]
    pub(crate) fn dirty(self) -> usize {
        self.0 & ((1 << CLASS_SHIFT) - 1)
    }

    /// Reads the metadata of the block at `user`.
    ///
    /// # Safety
    /// `user` is a mapping with a one-page offset (its header page holds the word).
    #[inline(always)]
    pub(crate) unsafe fn read(user: NonNull<u8>) -> Meta {
        // SAFETY: the header page lies before `user`; the word sits below the header.
        Meta(unsafe { user.cast::<usize>().sub(HEADER_SIZE / 8 + 1).read() })
    }

    /// Writes it (see [`Meta::read`]).
    ///
    /// # Safety
    /// As [`Meta::read`]; the block is ours.
    #[inline(always)]
    pub(crate) unsafe fn write(self, user: NonNull<u8>) {
        // SAFETY: as in `read`.
        unsafe { user.cast::<usize>().sub(HEADER_SIZE / 8 + 1).write(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Site;
    use std::boxed::Box;

    #[test]
    fn classes_round_up() {
        assert_eq!(class_of(1), None);
        assert_eq!(class_of((512 << 10) - 1), None);
        assert_eq!(class_of(512 << 10), Some(0));
        assert_eq!(class_of((512 << 10) + 1), Some(1));
        assert_eq!(class_of(1 << 20), Some(1));
        assert_eq!(class_of((2 << 20) + 1), Some(3));
        assert_eq!(class_of(5 << 20), Some(5));
        assert_eq!(class_of(7 << 20), Some(6));
        assert_eq!(class_of(9 << 20), Some(7));
        assert_eq!(class_of(16 << 20), Some(7));
        assert_eq!(class_of((16 << 20) + 1), None);
        for size in (512usize << 10..=16 << 20).step_by(4093) {
            let c = class_of(size).unwrap();
            assert!(
                CLASSES[c] >= size && (c == 0 || CLASSES[c - 1] < size),
                "{size}"
            );
        }
        assert_eq!(class_of_capacity(3 << 20), Some(3));
        assert_eq!(class_of_capacity((3 << 20) - 4096), None);
    }

    #[test]
    fn take_put_cap_and_sites() {
        let cache = Box::new(BigCache::new());
        let (a, b) = (Site::from_raw(1).slot(), Site::from_raw(2).slot());
        assert_ne!(a, b);
        let user = |n: usize| NonNull::new((n << 12) as *mut u8).unwrap();
        // SAFETY: the cache never dereferences these addresses (nor do the puts below).
        unsafe {
            assert!(cache.put(2, a, user(1), 100, 250));
            assert!(cache.put(2, a, user(2), 100, 250));
            assert!(!cache.put(2, a, user(3), 100, 250), "over the cap");
        }
        assert_eq!(cache.held.load(Ordering::Relaxed), 200);
        assert_eq!(
            cache.take(2, b, 100),
            None,
            "another site's blocks stay apart"
        );
        assert_eq!(cache.take(1, a, 100), None, "another class");
        assert_eq!(cache.take(2, a, 100), Some(user(1)));
        assert_eq!(cache.take(2, a, 100), Some(user(2)));
        assert_eq!(cache.take(2, a, 100), None);
        assert_eq!(cache.held.load(Ordering::Relaxed), 0);
        // WAYS slots per (site, class), then full.
        for i in 0..WAYS {
            // SAFETY: as above.
            assert!(unsafe { cache.put(0, a, user(10 + i), 1, usize::MAX) });
        }
        // SAFETY: as above.
        let kept = unsafe { cache.put(0, a, user(99), 1, usize::MAX) };
        assert!(!kept, "bucket full");
        assert_eq!(cache.held.load(Ordering::Relaxed), WAYS);
    }

    #[test]
    fn drain_empties_every_slot() {
        let cache = Box::new(BigCache::new());
        let user = |n: usize| NonNull::new((n << 12) as *mut u8).unwrap();
        let (a, b) = (Site::from_raw(1).slot(), Site::from_raw(2).slot());
        // SAFETY: never dereferenced.
        unsafe {
            assert!(cache.put(0, a, user(1), 4096 + CLASSES[0], usize::MAX));
            assert!(cache.put(7, b, user(2), 4096 + CLASSES[7], usize::MAX));
        }
        let mut released = std::vec::Vec::new();
        let visited = cache.drain(4096, |u, len| released.push((u, len)));
        released.sort();
        assert_eq!(
            released,
            [(user(1), 4096 + CLASSES[0]), (user(2), 4096 + CLASSES[7])]
        );
        assert_eq!(visited, 2, "the two sites that held a block, no other");
        assert_eq!(cache.held.load(Ordering::Relaxed), 0);
        assert_eq!(cache.take(0, a, 1), None);
    }

    /// A failing program drains on every failed request: an empty cache, or one whose blocks
    /// were all taken again, costs no walk over the table.
    #[test]
    fn a_drain_costs_what_the_cache_holds() {
        let cache = Box::new(BigCache::new());
        let mut released = 0;
        assert_eq!(cache.drain(4096, |_, _| released += 1), 0, "empty: no site");
        let user = |n: usize| NonNull::new((n << 12) as *mut u8).unwrap();
        let sites: std::vec::Vec<usize> = (0..5).map(|i| Site::from_raw(i).slot()).collect();
        // SAFETY: never dereferenced.
        unsafe {
            for (i, &site) in sites.iter().enumerate() {
                assert!(cache.put(i % 8, site, user(i + 1), 10, usize::MAX));
            }
        }
        // Taken back: nothing held, so the stale bits are not even looked at.
        for (i, &site) in sites.iter().enumerate() {
            assert!(cache.take(i % 8, site, 10).is_some());
        }
        assert_eq!(cache.drain(4096, |_, _| released += 1), 0, "held nothing");
        // SAFETY: never dereferenced.
        unsafe { assert!(cache.put(3, sites[3], user(9), 10, usize::MAX)) };
        // Five sites were put into since the last drain that looked; one holds a block.
        assert_eq!(cache.drain(4096, |_, _| released += 1), 5);
        assert_eq!(released, 1);
        // SAFETY: never dereferenced.
        unsafe { assert!(cache.put(6, sites[4], user(10), 10, usize::MAX)) };
        assert_eq!(
            cache.drain(4096, |_, _| released += 1),
            1,
            "flags cleared by the drain"
        );
        assert_eq!(released, 2);
    }

    #[test]
    fn meta_round_trip() {
        for class in [None, Some(0), Some(7)] {
            for dirty in [0, 1, 16 << 20] {
                let m = Meta::new(class, dirty);
                assert_eq!((m.class(), m.dirty()), (class, dirty));
                let m = m.with_dirty(5);
                assert_eq!((m.class(), m.dirty()), (class, 5));
            }
        }
        assert_eq!(Meta(0).class(), None, "a fresh mapping is no class block");
        assert_eq!(Meta(0).class_bytes(), NOT_A_CLASS);
        for (class, &bytes) in CLASSES.iter().enumerate() {
            let m = Meta::new(Some(class), 123);
            assert_eq!((m.class_bytes(), m.class_unchecked()), (bytes, class));
        }
        assert_eq!(
            Meta(200 << CLASS_SHIFT).class_bytes(),
            NOT_A_CLASS,
            "not a word we write"
        );
    }

    #[test]
    fn reuse_score() {
        let cache = Box::new(BigCache::new());
        assert!(!cache.is_hot(3), "no reuse yet: warm");
        // SAFETY: never dereferenced.
        unsafe { assert!(cache.put(3, Site::NONE.slot(), NonNull::dangling(), 1, 10)) };
        assert!(cache.take(3, Site::NONE.slot(), 1).is_some());
        assert!(!cache.is_hot(2), "per class");
        for _ in 0..SCORE_MAX {
            assert!(cache.is_hot(3));
        }
        assert!(
            !cache.is_hot(3),
            "a hit keeps a class hot for SCORE_MAX puts"
        );
    }
}
