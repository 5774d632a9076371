//! BigCache: freed large blocks kept per call site and size class, handed back on the next
//! matching request instead of `munmap` + `mmap` + a page fault per page.
//!
//! A request of 512 KiB or more rounds up to its class (512 KiB, 1, 2, 3, 4, 6, 8, 16 MiB, then
//! powers of two up to 4 GiB, as far as the mode's cap holds one block of the class:
//! [`class_for`]) and is mapped as a *class block*: one header page, then exactly the class's
//! bytes, so the user pointer is page-aligned and any cached block of the class serves any
//! request of the class with an alignment up to a page (and, for THP, the user region can be
//! 2 MiB-aligned).
//!
//! The table has [`SITE_SLOTS`] × 16 classes × [`WAYS`] slots; a slot holds a cached block's
//! user address or 0. Taking swaps a slot to 0; putting swaps 0 for the address with a
//! compare-exchange: lock-free, and two threads only meet on the same slot. A byte cap bounds
//! what the cache holds (the C original had none: 256 × 8 slots could pin gigabytes); blocks
//! not reused within the mode's decay period are released by time ([`BigCache::decay`]).
//!
//! When memory runs out the allocator drains the cache before it retries ([`BigCache::drain`]).
//! A failing program may do that on every request (glibc's own tests allocate terabytes in a
//! loop), so a drain costs in proportion to what the cache holds: nothing when it holds nothing
//! (the byte count says so), and otherwise a look at one flag per site slot (set by every put,
//! a plain store), then the 256 slots of each flagged site only — not a walk over all 65,536.
//!
//! While a block is cached its header is tagged freed, so a second free of it is reported as a
//! double free. The word just before the header (the header page is ours) is the block's
//! [`Meta`]: its class and how many bytes may be dirty, so that `alloc_zeroed` clears only those,
//! and, while it is cached, its decay stamp.
//!
//! The free policy's "recent reuse of the size class" is a per-class score: a hit sets it to
//! [`SCORE_MAX`], each block put lowers it by one. A class with no hit in its last `SCORE_MAX`
//! puts is WARM: its blocks are cached after `MADV_FREE`, so the kernel may take their pages
//! back if it needs them.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::header::HEADER_SIZE;
#[cfg(doc)]
use crate::site::Site;
use crate::site::SITE_SLOTS;

/// The size classes, in bytes: SPEC's eight up to 16 MiB, then powers of two up to 4 GiB (16 in
/// all: a class index is masked into bounds with one `and`). A mode caches a class only if one
/// block of it fits its byte cap ([`class_for`]).
pub(crate) const CLASSES: [usize; 16] = [
    512 << 10,
    1 << 20,
    2 << 20,
    3 << 20,
    4 << 20,
    6 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
    128 << 20,
    256 << 20,
    512 << 20,
    1 << 30,
    2 << 30,
    4 << 30,
];

/// The class indexes' mask (`CLASSES.len() - 1`): `class & MASK` is how an index that is always
/// in bounds tells the compiler so, without a panic path.
pub(crate) const MASK: usize = CLASSES.len() - 1;

static_assertions::const_assert!(CLASSES.len().is_power_of_two());

/// The classes up to 16 MiB, looked up by table; above, powers of two.
const TABLE_CLASSES: usize = 8;

/// The header page every class block is laid out for (4 KiB).
pub(crate) const HEADER_PAGE: usize = 4096;

/// The mapping length of the smallest block the cache holds: the smallest class plus the header
/// page (4 KiB, the page size every class block is laid out for). A byte cap below it holds
/// nothing ([`Config::validate`](crate::Config::validate) refuses one).
pub(crate) const SMALLEST_BLOCK: usize = CLASSES[0] + HEADER_PAGE;

/// Slots per (site, class).
pub(crate) const WAYS: usize = 16;

/// Puts that stay HOT after a hit of their class.
const SCORE_MAX: u32 = 64;

/// A class of the table ([`CLASS_OF`]): an enum, not a `u8`, so that the compiler knows a class
/// loaded from the table is below [`TABLE_CLASSES`] and drops the masks and bounds checks that
/// follow (one `and` and two moves on the large path's hit).
#[derive(Clone, Copy)]
#[repr(u8)]
enum TableClass {
    C0,
    C1,
    C2,
    C3,
    C4,
    C5,
    C6,
    C7,
}

impl TableClass {
    const fn of(class: usize) -> TableClass {
        match class {
            0 => TableClass::C0,
            1 => TableClass::C1,
            2 => TableClass::C2,
            3 => TableClass::C3,
            4 => TableClass::C4,
            5 => TableClass::C5,
            6 => TableClass::C6,
            _ => TableClass::C7,
        }
    }
}

/// `CLASS_OF[(size - 1) >> 19]`: the class of sizes 1 ..= 16 MiB, by 512 KiB steps.
static CLASS_OF: [TableClass; 32] = {
    let mut table = [TableClass::C0; 32];
    let mut step = 0;
    while step < 32 {
        let top = (step + 1) << 19; // the largest size of this step
        let mut c = 0;
        while CLASSES[c] < top {
            c += 1;
        }
        table[step] = TableClass::of(c);
        step += 1;
    }
    table
};

static_assertions::const_assert_eq!(TABLE_CLASSES, 8);

/// The class serving a request of `size` bytes, or `None` (below 512 KiB or above 4 GiB).
#[cfg(test)]
fn class_of(size: usize) -> Option<usize> {
    class_for(size, usize::MAX)
}

/// The class serving `size` bytes in a cache capped at `cap` bytes: [`class_of`], if one block
/// of the class (its bytes plus the header page) fits the cap; else the request is no class
/// block (it could never be cached, and rounding it up would only waste address space). Up to
/// 16 MiB one table load, the cap's test folded away for a compiled mode's cap; no call (the
/// large path's hit stays free of calls, and so of register saving).
#[inline(always)]
pub(crate) fn class_for(size: usize, cap: usize) -> Option<usize> {
    if let Some(class) = table_class(size, cap) {
        return Some(class);
    }
    if size < CLASSES[0] {
        return None;
    }
    let class = if size <= CLASSES[TABLE_CLASSES - 1] {
        CLASS_OF[(size - 1) >> 19] as usize
    } else {
        // 16 MiB + 1 ..= 32 MiB needs 25 bits (its `size - 1`), and is class TABLE_CLASSES.
        TABLE_CLASSES + (usize::BITS - (size - 1).leading_zeros()) as usize - 25
    };
    let bytes = *CLASSES.get(class)?;
    (bytes + HEADER_PAGE <= cap).then_some(class)
}

/// [`class_for`]'s fast part: the class of 512 KiB ..= 16 MiB, by one compare and one table
/// load, where the cap holds the largest of them (folded away for a compiled mode's cap);
/// `None` for anything else, which [`class_for`] then decides.
#[inline(always)]
pub(crate) fn table_class(size: usize, cap: usize) -> Option<usize> {
    let table_max = CLASSES[TABLE_CLASSES - 1];
    (size.wrapping_sub(CLASSES[0]) <= table_max - CLASSES[0] && table_max + HEADER_PAGE <= cap)
        .then(|| CLASS_OF[(size - 1) >> 19] as usize)
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
    /// The decay's generation: how many sweeps have run. The first sweep that finds a block
    /// cached stamps its metadata word with the generation ([`Meta::stamp`]); a later one
    /// releases it once the stamp is [`SWEEPS_PER_DECAY`] generations old.
    generation: AtomicU32,
    /// When the next sweep is due ([`crate::os::coarse_millis`]); 0 before the first.
    next_sweep: AtomicU64,
}

/// Sweeps per decay period: a sweep runs at most once every `decay / SWEEPS_PER_DECAY`, and a
/// block is released by the sweep that finds it stamped `SWEEPS_PER_DECAY` generations ago:
/// stamped by a sweep after it was cached, so at least `SWEEPS_PER_DECAY` intervals, the whole
/// period, after it was cached.
pub(crate) const SWEEPS_PER_DECAY: u32 = 8;

impl BigCache {
    pub(crate) const fn new() -> Self {
        BigCache {
            slots: [const { [const { [const { AtomicUsize::new(0) }; WAYS] }; CLASSES.len()] };
                SITE_SLOTS],
            occupied: [const { AtomicBool::new(false) }; SITE_SLOTS],
            held: AtomicUsize::new(0),
            score: [const { AtomicU32::new(0) }; CLASSES.len()],
            generation: AtomicU32::new(0),
            next_sweep: AtomicU64::new(0),
        }
    }

    /// Whether the cache holds nothing (one relaxed load).
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.held.load(Ordering::Relaxed) == 0
    }

    /// The slots of (site slot, class). The masks are no-ops (a site slot is below
    /// [`SITE_SLOTS`], a class below 16) that let the compiler drop the bounds checks.
    #[inline(always)]
    fn bucket(&self, class: usize, slot: usize) -> &[AtomicUsize; WAYS] {
        &self.slots[slot & (SITE_SLOTS - 1)][class & MASK]
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
                self.score[class & MASK].store(SCORE_MAX, Ordering::Relaxed);
                return NonNull::new(user as *mut u8);
            }
        }
        None
    }

    /// Takes a cached block for the site in slot `site_slot` of the smallest class from `first`
    /// on whose bytes are at most `most` (for a block that grows: room ahead, within a bound on
    /// waste). Returns its user address and class. Empty slots are only loaded, so a miss costs
    /// loads, not locked swaps.
    pub(crate) fn take_fit(
        &self,
        first: usize,
        most: usize,
        site_slot: usize,
        page: usize,
    ) -> Option<(NonNull<u8>, usize)> {
        for (class, &bytes) in CLASSES.iter().enumerate().skip(first) {
            if bytes > most {
                break;
            }
            for slot in self.bucket(class, site_slot) {
                if slot.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let user = slot.swap(0, Ordering::Acquire);
                if let Some(user) = NonNull::new(user as *mut u8) {
                    self.held.fetch_sub(page + bytes, Ordering::Relaxed);
                    self.score[class & MASK].store(SCORE_MAX, Ordering::Relaxed);
                    return Some((user, class));
                }
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
                    let user = slot.swap(0, Ordering::Acquire);
                    if let Some(user) = NonNull::new(user as *mut u8) {
                        self.held.fetch_sub(len, Ordering::Relaxed);
                        release(user, len);
                    }
                }
            }
        }
        visited
    }
}

impl BigCache {
    /// Starts a decay sweep if one is due at `now` (milliseconds, [`crate::os::coarse_millis`])
    /// with sweeps `interval` apart: returns the new generation to sweep with, or `None` (not
    /// due, or another thread took this one).
    #[cold]
    pub(crate) fn sweep_due(&self, now: u64, interval: u64) -> Option<u32> {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return None;
        }
        self.next_sweep
            .compare_exchange(due, now + interval, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(
            self.generation
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1),
        )
    }

    /// One decay sweep of generation `generation` ([`BigCache::sweep_due`]). A block cached
    /// since the last sweep (its metadata word unstamped: every put writes the word afresh) is
    /// stamped with the generation; a block stamped [`SWEEPS_PER_DECAY`] or more generations
    /// ago is taken out and handed to `release` (user address, mapping length); the others are
    /// put back. The free path so writes no stamp and reads no clock. Like
    /// [`BigCache::drain`], it looks only into the sites whose flag is set. Returns the number
    /// of blocks released.
    ///
    /// # Safety
    /// Every cached block is a class block with its metadata word in its header page.
    #[cold]
    pub(crate) unsafe fn decay(
        &self,
        page: usize,
        generation: u32,
        mut release: impl FnMut(NonNull<u8>, usize),
    ) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut released = 0;
        for (flag, site) in self.occupied.iter().zip(&self.slots) {
            // Taken as a drain takes it (see there); set again below if the site still holds a
            // block, so a flag is never lost while its site holds one.
            if !flag.load(Ordering::Relaxed) || !flag.swap(false, Ordering::Acquire) {
                continue;
            }
            let mut kept = false;
            for (bucket, class_bytes) in site.iter().zip(CLASSES) {
                let len = page + class_bytes;
                for (way, slot) in bucket.iter().enumerate() {
                    if slot.load(Ordering::Relaxed) == 0 {
                        continue;
                    }
                    let Some(user) = NonNull::new(slot.swap(0, Ordering::Acquire) as *mut u8)
                    else {
                        continue;
                    };
                    // SAFETY: a cached block, now ours (the swap took it), with its metadata
                    // word in its header page (caller).
                    let meta = unsafe { Meta::read(user) };
                    match meta.stamp() {
                        // Cached since the last sweep (a put clears the stamp): its age counts
                        // from now.
                        // SAFETY: as above.
                        0 => unsafe { meta.with_stamp(stamp_of(generation)).write(user) },
                        stamp if age(stamp_of(generation), stamp) >= SWEEPS_PER_DECAY => {
                            self.held.fetch_sub(len, Ordering::Relaxed);
                            release(user, len);
                            released += 1;
                            continue;
                        }
                        _ => {}
                    }
                    // Young: back into its bucket (this way if still empty, else another).
                    let back = user.as_ptr() as usize;
                    let kept_it = bucket.iter().cycle().skip(way).take(WAYS).any(|slot| {
                        slot.compare_exchange(0, back, Ordering::Release, Ordering::Relaxed)
                            .is_ok()
                    });
                    if kept_it {
                        kept = true;
                    } else {
                        self.held.fetch_sub(len, Ordering::Relaxed);
                        release(user, len);
                        released += 1;
                    }
                }
            }
            if kept {
                flag.store(true, Ordering::Release);
            }
        }
        released
    }
}

/// The stamp of a sweep's generation in a metadata word: 1 ..= 255 (0 is "not stamped yet").
fn stamp_of(generation: u32) -> u8 {
    (generation % 255) as u8 + 1
}

/// How many sweeps apart two stamps are, modulo 255. A block is released at 8, long before the
/// stamps wrap (every sweep looks at every cached block).
fn age(now: u8, then: u8) -> u32 {
    (u32::from(now) + 255 - u32::from(then)) % 255
}

/// A class block's metadata word, in its header page just below the header: its class (so the
/// free path need not derive it), whether its mapping is split ([`Meta::split`]), its decay
/// stamp while cached, and how many bytes from the user pointer may have been written since the
/// block was last known to be zero (so `alloc_zeroed` clears only those). A fresh mapping reads
/// 0: "not a class block".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta(usize);

const CLASS_SHIFT: u32 = usize::BITS - 8;

/// Where a metadata word keeps its decay stamp: the byte below the class ([`Meta::stamp`]).
const STAMP_SHIFT: u32 = CLASS_SHIFT - 8;

/// The dirty count's bits (below the stamp: up to 256 TiB).
const DIRTY: usize = (1 << STAMP_SHIFT) - 1;

/// The top byte: the class code (1 ..= 16) and the split flag.
const CLASS_BITS: usize = !((1 << CLASS_SHIFT) - 1);

/// The top byte's high bit: the block's mapping is two kernel mappings ([`Meta::split`]).
const SPLIT: usize = 0x80 << CLASS_SHIFT;

/// What [`Meta::class_bytes`] says for a word that names no class: a length no block has, so
/// that `offset + class_bytes == len` holds for class blocks only (a zero-sized block's mapping
/// is exactly its offset long).
const NOT_A_CLASS: usize = 1 << 62;

/// `CLASSES[code - 1]` for the class codes 1 ..= 16 of a metadata word's top byte, with or
/// without the split flag, [`NOT_A_CLASS`] for every other value it can take.
static CLASS_BYTES_BY_CODE: [usize; 256] = {
    let mut table = [NOT_A_CLASS; 256];
    let mut class = 0;
    while class < CLASSES.len() {
        table[class + 1] = CLASSES[class];
        table[(class + 1) | 0x80] = CLASSES[class];
        class += 1;
    }
    table
};

impl Meta {
    /// The metadata of a block of `class` (or of no class) with `dirty` bytes, unstamped.
    #[inline(always)]
    pub(crate) fn new(class: Option<usize>, dirty: usize) -> Meta {
        debug_assert!(dirty <= DIRTY);
        Meta(class.map_or(0, |c| (c + 1) << CLASS_SHIFT) | dirty)
    }

    /// The block's class, if it is a class block.
    #[inline(always)]
    pub(crate) fn class(self) -> Option<usize> {
        ((self.0 >> CLASS_SHIFT) & 0x7F).checked_sub(1)
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
        // (The split flag, 0x80, is a multiple of 16: the mask drops it.)
        ((self.0 >> CLASS_SHIFT) - 1) & MASK
    }

    /// The same metadata, of a block whose mapping is now two kernel mappings: a block that
    /// grew into a cached one (`Allocator::grow_into_cached`) is the growing block's pages moved
    /// over the cached block's head, which the kernel does not merge with the rest. `mremap`
    /// refuses a range that spans two mappings, so such a block grows beyond its class by a
    /// move; everything else (`munmap`, `madvise`, the cache) spans mappings. The flag stays
    /// with the block for its life ([`Meta::with_dirty`] keeps it).
    #[inline(always)]
    pub(crate) fn split(self) -> Meta {
        Meta(self.0 | SPLIT)
    }

    /// Whether the block's mapping is split ([`Meta::split`]).
    #[inline(always)]
    pub(crate) fn is_split(self) -> bool {
        self.0 & SPLIT != 0
    }

    /// The same block's metadata with `dirty` bytes, unstamped (the block is about to be
    /// cached afresh); its class and split flag are kept.
    #[inline(always)]
    pub(crate) fn with_dirty(self, dirty: usize) -> Meta {
        debug_assert!(dirty <= DIRTY);
        Meta(self.0 & CLASS_BITS | dirty)
    }

    /// Bytes that may be dirty.
    #[inline(always)]
    pub(crate) fn dirty(self) -> usize {
        self.0 & DIRTY
    }

    /// The decay stamp of a cached block: 0 until the first sweep that finds it cached, then
    /// that sweep's ([`BigCache::decay`]).
    #[inline(always)]
    pub(crate) fn stamp(self) -> u8 {
        (self.0 >> STAMP_SHIFT) as u8
    }

    /// The same metadata with decay stamp `stamp`.
    #[inline(always)]
    pub(crate) fn with_stamp(self, stamp: u8) -> Meta {
        Meta(self.0 & !(0xFF << STAMP_SHIFT) | usize::from(stamp) << STAMP_SHIFT)
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
        assert_eq!(class_of((16 << 20) + 1), Some(8));
        assert_eq!(class_of(64 << 20), Some(9));
        assert_eq!(class_of((64 << 20) + 1), Some(10));
        assert_eq!(class_of(1 << 30), Some(13));
        assert_eq!(class_of(4 << 30), Some(MASK));
        assert_eq!(class_of((4 << 30) + 1), None);
        for size in (512usize << 10..=4 << 30).step_by(400_093) {
            let c = class_of(size).unwrap();
            assert!(
                CLASSES[c] >= size && (c == 0 || CLASSES[c - 1] < size),
                "{size}"
            );
        }
    }

    #[test]
    fn the_cap_bounds_the_classes() {
        let cap = 64 << 20;
        assert_eq!(class_for(2 << 20, cap), Some(2));
        assert_eq!(
            class_for(24 << 20, cap),
            Some(8),
            "16 MiB < 24 MiB <= 32 MiB"
        );
        assert_eq!(
            class_for(64 << 20, cap),
            None,
            "64 MiB plus its header page is over a 64 MiB cap"
        );
        assert_eq!(class_for(64 << 20, (64 << 20) + HEADER_PAGE), Some(9));
        assert_eq!(class_for(2 << 20, 1 << 20), None, "a cap below the class");
        assert_eq!(class_for(100, usize::MAX), None);
        for size in (512usize << 10..=4 << 30).step_by(10_000_019) {
            for cap in [SMALLEST_BLOCK, 16 << 20, 1 << 30, usize::MAX] {
                let expected = class_of(size).filter(|&c| CLASSES[c] + HEADER_PAGE <= cap);
                assert_eq!(class_for(size, cap), expected, "{size} under {cap}");
            }
        }
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
    fn sweeps_are_due_once_per_interval() {
        let cache = Box::new(BigCache::new());
        assert_eq!(
            cache.sweep_due(1000, 125),
            Some(1),
            "the first is due at once"
        );
        assert_eq!(cache.sweep_due(1100, 125), None, "not before the interval");
        assert_eq!(cache.sweep_due(1125, 125), Some(2));
        assert_eq!(
            cache.sweep_due(9000, 125),
            Some(3),
            "one per check, however late"
        );
        assert_eq!(cache.generation.load(Ordering::Relaxed), 3);
    }

    /// A block is stamped by the first sweep that finds it cached and released by the sweep
    /// that finds the stamp `SWEEPS_PER_DECAY` generations old, not before; a block
    /// taken and cached again is young again.
    #[test]
    fn decay_releases_blocks_not_reused_for_a_period() {
        let cache = Box::new(BigCache::new());
        // Stand-ins for class blocks: only their metadata words (below the user address) are
        // written and read, zero (unstamped) at first.
        let layout = std::alloc::Layout::from_size_align(3 * 4096, 4096).unwrap();
        // SAFETY: a valid layout; freed at the end.
        let memory = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!memory.is_null());
        // SAFETY: both "user" addresses leave their metadata word inside `memory`.
        let (a, b) = unsafe {
            (
                NonNull::new_unchecked(memory.add(4096)),
                NonNull::new_unchecked(memory.add(2 * 4096)),
            )
        };
        let site = Site::NONE.slot();
        let len = |class: usize| 4096 + CLASSES[class];
        let mut released = std::vec::Vec::new();
        // SAFETY: the metadata words live in `memory`; nothing else of the blocks is touched.
        unsafe {
            assert!(cache.put(2, site, a, len(2), usize::MAX));
            // Sweep 1 stamps a; b is cached after it.
            assert_eq!(cache.decay(4096, 1, |u, _| released.push(u)), 0);
            assert!(cache.put(5, site, b, len(5), usize::MAX));
            for generation in 2..=SWEEPS_PER_DECAY {
                assert_eq!(cache.decay(4096, generation, |u, _| released.push(u)), 0);
            }
            assert!(released.is_empty(), "a kept for a whole period of sweeps");
            let next = 1 + SWEEPS_PER_DECAY;
            assert_eq!(cache.decay(4096, next, |u, _| released.push(u)), 1);
            assert_eq!(released, [a]);
            assert_eq!(
                cache.held.load(Ordering::Relaxed),
                len(5),
                "b is still held"
            );
            // b, stamped by sweep 2, is taken and cached again (a put writes its metadata word
            // afresh, unstamped, as the free path does): young again.
            assert_eq!(
                cache.take(5, site, len(5)),
                Some(b),
                "and still in its slot"
            );
            assert_ne!(Meta::read(b).stamp(), 0);
            Meta::read(b).with_dirty(0).write(b);
            assert!(cache.put(5, site, b, len(5), usize::MAX));
            for generation in next + 1..=next + SWEEPS_PER_DECAY {
                assert_eq!(
                    cache.decay(4096, generation, |u, _| released.push(u)),
                    0,
                    "reused"
                );
            }
            let last = next + 1 + SWEEPS_PER_DECAY;
            assert_eq!(cache.decay(4096, last, |u, _| released.push(u)), 1);
            assert_eq!(released, [a, b]);
            assert!(cache.is_empty());
            std::alloc::dealloc(memory, layout);
        }
    }

    #[test]
    fn take_fit_takes_the_smallest_class_within_the_bound() {
        let cache = Box::new(BigCache::new());
        let user = |n: usize| NonNull::new((n << 12) as *mut u8).unwrap();
        let site = Site::NONE.slot();
        // SAFETY: never dereferenced.
        unsafe {
            assert!(cache.put(9, site, user(1), 4096 + CLASSES[9], usize::MAX));
            assert!(cache.put(11, site, user(2), 4096 + CLASSES[11], usize::MAX));
        }
        assert_eq!(
            cache.take_fit(2, 32 << 20, site, 4096),
            None,
            "64 MiB is over 32"
        );
        assert_eq!(
            cache.take_fit(2, 1 << 30, site, 4096),
            Some((user(1), 9)),
            "the smaller first"
        );
        assert_eq!(cache.take_fit(10, 1 << 30, site, 4096), Some((user(2), 11)));
        assert!(cache.is_empty());
    }

    #[test]
    fn stamps_and_ages_wrap_around() {
        assert_eq!((stamp_of(0), stamp_of(254), stamp_of(255)), (1, 255, 1));
        for generation in [0u32, 5, 250, 254, 1000, u32::MAX - 3] {
            for later in 0..20 {
                let (now, then) = (
                    stamp_of(generation.wrapping_add(later)),
                    stamp_of(generation),
                );
                if generation.checked_add(later).is_some() {
                    assert_eq!(age(now, then), later, "{generation} + {later}");
                }
            }
        }
        let m = Meta::new(Some(3), 12345).with_stamp(200);
        assert_eq!((m.class(), m.dirty(), m.stamp()), (Some(3), 12345, 200));
        assert_eq!(m.with_dirty(7).stamp(), 0, "a put unstamps");
        assert_eq!(m.with_dirty(7).class(), Some(3));
        let split = Meta::new(Some(15), 99).split();
        assert!(split.is_split() && !Meta::new(Some(15), 99).is_split());
        assert_eq!(
            (split.class(), split.class_unchecked(), split.class_bytes()),
            (Some(15), 15, CLASSES[15])
        );
        assert!(split.with_dirty(1).is_split(), "for the block's life");
        assert!(split.with_stamp(9).is_split());
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
        unsafe {
            assert!(cache.put(
                3,
                Site::NONE.slot(),
                NonNull::new(4096 as *mut u8).unwrap(),
                1,
                10
            ))
        };
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
