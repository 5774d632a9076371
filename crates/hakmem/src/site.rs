//! Call sites: who allocates. The C original used the call-site address as "an implicit purpose
//! label"; BigCache keeps blocks per site, and RESEARCH profiles per site ([`Profile`]).
//!
//! `GlobalAlloc` has no caller: its blocks carry [`Site::NONE`]. BigCache keys blocks by (site,
//! size class), so those are kept per size class; the profile gives them one row per power-of-two
//! size range instead of lumping them together (SPEC §4: "a site derived from the size class").

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Number of slots call sites are hashed into.
pub const SITE_SLOTS: usize = 256;

/// Identifies the code that asked for memory.
///
/// ```
/// use hakmem::{Allocator, Site, mode::Balanced};
/// use core::alloc::{GlobalAlloc, Layout};
///
/// static A: Allocator<Balanced> = Allocator::new();
/// let layout = Layout::from_size_align(1 << 20, 16).unwrap();
/// unsafe {
///     let p = A.alloc_at(layout, Site::caller());
///     assert!(!p.is_null());
///     A.dealloc(p, layout);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site(u64);

impl Site {
    /// "No particular site": the `GlobalAlloc` path, which has no caller. BigCache keeps blocks
    /// per (site, size class), so the large blocks of this site are kept per size class.
    pub const NONE: Site = Site(0);

    /// The site of the code calling this function (its source location, via `#[track_caller]`).
    /// Costs one address computation; nothing is looked up.
    #[track_caller]
    #[inline(always)]
    pub fn caller() -> Site {
        Site(core::panic::Location::caller() as *const _ as usize as u64)
    }

    /// A site from any 64-bit id the caller chooses (a hash of a purpose, a return address, …).
    /// `from_raw(0)` is [`Site::NONE`].
    pub const fn from_raw(raw: u64) -> Site {
        Site(raw)
    }

    /// The raw 64-bit id.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The id stored in block headers: the raw id folded to 32 bits. Ids below 2³² are kept
    /// as they are, so `Site::from_raw(s.id32() as u64).id32() == s.id32()`.
    #[inline(always)]
    pub(crate) const fn id32(self) -> u32 {
        (self.0 ^ (self.0 >> 32)) as u32
    }

    /// The slot of this site in tables of [`SITE_SLOTS`] entries (Fibonacci hashing of `id32`).
    #[inline(always)]
    pub(crate) const fn slot(self) -> usize {
        ((self.id32().wrapping_mul(0x9E37_79B9)) >> (32 - SITE_SLOTS.trailing_zeros())) as usize
    }
}

/// The path a request took, as the per-site profile counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// The system allocator.
    System = 0,
    /// The small-object pool.
    Pool = 1,
    /// A fresh mapping.
    Mmap = 2,
    /// A block BigCache handed back.
    Cached = 3,
}

/// The ids of the size-range rows of `GlobalAlloc` requests: this tag, then log2 of the size.
const SIZE_RANGE_TAG: u32 = 0xFFFF_FF00;

/// One row of the profile.
struct Row {
    /// The first site (its 32-bit id) that landed here; 0 while empty. Sites hashing to the same
    /// slot share the row.
    site: AtomicU32,
    allocs: AtomicU64,
    bytes: AtomicU64,
    paths: [AtomicU64; 4],
}

/// RESEARCH's per-site profile: for each of [`SITE_SLOTS`] rows, the allocations, the bytes asked
/// for and the path each took. Relaxed atomics: a snapshot is approximate while threads allocate.
pub(crate) struct Profile {
    rows: [Row; SITE_SLOTS],
}

impl Profile {
    pub(crate) const fn new() -> Profile {
        Profile {
            rows: [const {
                Row {
                    site: AtomicU32::new(0),
                    allocs: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    paths: [const { AtomicU64::new(0) }; 4],
                }
            }; SITE_SLOTS],
        }
    }

    /// Counts an allocation of `size` bytes by the site with 32-bit id `site` (0: `GlobalAlloc`,
    /// profiled by the power-of-two range of `size`) that took `path`.
    #[inline]
    pub(crate) fn record(&self, site: u32, size: usize, path: Path) {
        let id = if site == 0 {
            SIZE_RANGE_TAG | (usize::BITS - 1 - (size | 1).leading_zeros())
        } else {
            site
        };
        let row = &self.rows[Site::from_raw(u64::from(id)).slot()];
        if row.site.load(Ordering::Relaxed) == 0 {
            let _ = row
                .site
                .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed);
        }
        row.allocs.fetch_add(1, Ordering::Relaxed);
        row.bytes.fetch_add(size as u64, Ordering::Relaxed);
        row.paths[path as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The rows that counted something.
    pub(crate) fn rows(&self) -> impl Iterator<Item = SiteStat> + '_ {
        self.rows.iter().enumerate().filter_map(|(slot, row)| {
            let allocs = row.allocs.load(Ordering::Relaxed);
            if allocs == 0 {
                return None;
            }
            let id = row.site.load(Ordering::Relaxed);
            let path = |p: Path| row.paths[p as usize].load(Ordering::Relaxed);
            Some(SiteStat {
                slot,
                site: if id & SIZE_RANGE_TAG == SIZE_RANGE_TAG {
                    SiteKey::SizeRange(id & 0xFF)
                } else {
                    SiteKey::Caller(id)
                },
                allocs,
                bytes: row.bytes.load(Ordering::Relaxed),
                system: path(Path::System),
                pool: path(Path::Pool),
                mmap: path(Path::Mmap),
                cached: path(Path::Cached),
            })
        })
    }
}

/// Who a row of the per-site profile counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SiteKey {
    /// Requests of a [`Site`] (its id folded to 32 bits, as block headers keep it; other sites
    /// hashing to the same slot are counted with it).
    Caller(u32),
    /// `GlobalAlloc` requests (no caller) of `2^k ..= 2^(k+1) − 1` bytes.
    SizeRange(u32),
}

/// One row of RESEARCH's per-site profile ([`Allocator::sites`](crate::Allocator::sites)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteStat {
    /// The row, `0..SITE_SLOTS`.
    pub slot: usize,
    /// Whose requests it counts.
    pub site: SiteKey,
    /// Allocations.
    pub allocs: u64,
    /// Bytes requested.
    pub bytes: u64,
    /// Allocations served by the system allocator, the pool, a fresh mapping, BigCache.
    pub system: u64,
    /// See [`SiteStat::system`].
    pub pool: u64,
    /// See [`SiteStat::system`].
    pub mmap: u64,
    /// See [`SiteStat::system`].
    pub cached: u64,
}

impl Site {
    /// The 32-bit id block headers and the profile keep (see [`SiteKey::Caller`]).
    pub const fn id(self) -> u32 {
        self.id32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    #[test]
    fn profile_counts_per_site_and_per_size_range() {
        let p = Box::new(Profile::new());
        let (a, b) = (Site::from_raw(0x1111), Site::from_raw(0x2222));
        p.record(a.id32(), 100, Path::System);
        p.record(a.id32(), 3 << 20, Path::Mmap);
        p.record(a.id32(), 3 << 20, Path::Cached);
        p.record(b.id32(), 64, Path::System);
        p.record(0, 1 << 20, Path::Mmap);
        p.record(0, (1 << 21) - 1, Path::System);
        p.record(0, 48, Path::System);
        let rows: Vec<SiteStat> = p.rows().collect();
        let find = |k: SiteKey| *rows.iter().find(|r| r.site == k).unwrap();
        let ra = find(SiteKey::Caller(0x1111));
        assert_eq!((ra.allocs, ra.bytes), (3, 100 + (6 << 20)));
        assert_eq!((ra.system, ra.mmap, ra.cached, ra.pool), (1, 1, 1, 0));
        assert_eq!(find(SiteKey::Caller(0x2222)).allocs, 1);
        let mib = find(SiteKey::SizeRange(20));
        assert_eq!(
            (mib.allocs, mib.mmap, mib.system),
            (2, 1, 1),
            "1 MiB ..= 2 MiB - 1"
        );
        assert_eq!(find(SiteKey::SizeRange(5)).allocs, 1, "48 B");
        assert_eq!(rows.len(), 4);
    }

    #[test]
    fn caller_sites_differ_per_location() {
        let a = Site::caller();
        let b = Site::caller();
        assert_ne!(a, b);
        let same = || Site::caller();
        assert_eq!(same(), same());
    }

    #[test]
    fn fold_and_slots() {
        let s = Site::from_raw(0xDEAD_BEEF_1234_5678);
        assert_eq!(Site::from_raw(s.id32() as u64).id32(), s.id32());
        let mut used = [false; SITE_SLOTS];
        for i in 0..SITE_SLOTS as u64 {
            used[Site::from_raw(0x5555_0000 + i * 48).slot()] = true;
        }
        // Consecutive, evenly spaced ids (like code addresses) spread over most slots.
        assert!(used.iter().filter(|&&u| u).count() > SITE_SLOTS / 2);
    }
}
