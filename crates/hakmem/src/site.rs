//! Call sites: who allocates. The C original used the call-site address as "an implicit purpose
//! label"; BigCache keeps blocks per site, and RESEARCH profiles per site.

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

#[cfg(test)]
mod tests {
    use super::*;

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
