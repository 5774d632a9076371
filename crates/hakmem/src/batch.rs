//! Batch release (the COLD end of the free policy): released mmap blocks are collected and
//! returned to the OS together, when 256 blocks or 4 MiB have accumulated, instead of one system
//! call (and one TLB shootdown) per block.
//!
//! A flush sorts the pending blocks by address and unmaps each run of adjacent mappings with
//! one `munmap`: the kernel tends to place consecutive mappings next to each other, so a burst of
//! releases costs a handful of calls. Blocks under 64 KiB are released at once.
//!
//! The pending list is guarded by a try-lock that never waits: a thread that finds it taken
//! releases its block directly. So releasing never blocks, and a lock left held across `fork`
//! (by a thread that does not exist in the child) only turns batching off in that child.

use core::cell::UnsafeCell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::os;

/// Blocks per flush.
pub(crate) const MAX_BLOCKS: usize = 256;
/// Bytes per flush.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Smaller blocks are released at once.
pub(crate) const MIN_BLOCK: usize = 64 << 10;

struct Pending {
    ranges: [(usize, usize); MAX_BLOCKS],
    count: usize,
    bytes: usize,
}

/// The per-instance batch of blocks waiting to be released.
pub(crate) struct Batch {
    busy: AtomicBool,
    pending: UnsafeCell<Pending>,
}

// SAFETY: `pending` is only accessed by the thread that holds `busy`.
unsafe impl Sync for Batch {}

/// What a release did, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// `munmap` calls made now.
    pub calls: u64,
    /// Bytes they released.
    pub bytes: u64,
    /// Calls the kernel refused at the map-count limit ([`os::Unmapped::Kept`]: pages released,
    /// range left mapped; not in `bytes`).
    pub refused: u64,
}

impl Released {
    /// One call over `len` bytes that ended as `unmapped` says.
    pub(crate) fn one(unmapped: os::Unmapped, len: usize) -> Released {
        let kept = unmapped == os::Unmapped::Kept;
        Released {
            calls: 1,
            bytes: if kept { 0 } else { len as u64 },
            refused: u64::from(kept),
        }
    }
}

impl core::ops::AddAssign for Released {
    fn add_assign(&mut self, other: Released) {
        self.calls += other.calls;
        self.bytes += other.bytes;
        self.refused += other.refused;
    }
}

impl Batch {
    pub(crate) const fn new() -> Self {
        Batch {
            busy: AtomicBool::new(false),
            pending: UnsafeCell::new(Pending {
                ranges: [(0, 0); MAX_BLOCKS],
                count: 0,
                bytes: 0,
            }),
        }
    }

    /// Releases the mapping `[base, base + len)`, now or with the next flush.
    ///
    /// # Safety
    /// The range must be a whole mapping of ours that nothing refers to any more.
    pub(crate) unsafe fn release(&self, base: NonNull<u8>, len: usize) -> Released {
        if len < MIN_BLOCK || self.busy.swap(true, Ordering::Acquire) {
            // SAFETY: forwarded from the caller.
            // An invalid range (only a corrupted length makes one) is left mapped: releasing
            // must not panic, and the block is lost either way.
            return Released::one(unsafe { os::unmap(base, len) }, len);
        }
        // SAFETY: we hold `busy`, so `pending` is ours alone.
        let pending = unsafe { &mut *self.pending.get() };
        // There is always a free entry (a full list is flushed at once); `get_mut` only keeps
        // a panic path out of the free path.
        let Some(entry) = pending.ranges.get_mut(pending.count) else {
            self.busy.store(false, Ordering::Release);
            // SAFETY: forwarded from the caller.
            return Released::one(unsafe { os::unmap(base, len) }, len);
        };
        *entry = (base.as_ptr() as usize, len);
        pending.count += 1;
        pending.bytes += len;
        if pending.count < MAX_BLOCKS && pending.bytes < MAX_BYTES {
            self.busy.store(false, Ordering::Release);
            return Released::default();
        }
        // SAFETY: we hold `busy`.
        unsafe { self.take_and_flush() }
    }

    /// Releases every pending block now (when memory has run out). A batch that another thread
    /// holds at this moment is left alone: that thread flushes or adds to it.
    #[cold]
    pub(crate) fn flush_now(&self) -> Released {
        if self.busy.swap(true, Ordering::Acquire) {
            return Released::default();
        }
        // SAFETY: we hold `busy`, so `pending` is ours alone.
        if unsafe { (*self.pending.get()).count } == 0 {
            self.busy.store(false, Ordering::Release);
            return Released::default();
        }
        // SAFETY: we hold `busy`.
        unsafe { self.take_and_flush() }
    }

    /// Takes the pending list, lets others in, and flushes it outside the lock.
    ///
    /// # Safety
    /// The caller holds `busy`; this releases it.
    unsafe fn take_and_flush(&self) -> Released {
        // SAFETY: we hold `busy` (caller), so `pending` is ours alone.
        let pending = unsafe { &mut *self.pending.get() };
        let mut ranges = [(0usize, 0usize); MAX_BLOCKS];
        let count = pending.count.min(MAX_BLOCKS);
        ranges[..count].copy_from_slice(&pending.ranges[..count]);
        pending.count = 0;
        pending.bytes = 0;
        self.busy.store(false, Ordering::Release);
        // SAFETY: every range was handed to us by `release`'s caller as an unused mapping.
        unsafe { flush(&mut ranges[..count]) }
    }
}

/// Unmaps `ranges`, one call per run of adjacent ranges.
///
/// # Safety
/// Every range is a whole, unused mapping of ours; no two overlap.
unsafe fn flush(ranges: &mut [(usize, usize)]) -> Released {
    sort_by_start(ranges);
    let mut done = Released::default();
    let mut i = 0;
    while i < ranges.len() {
        let (start, mut end) = (ranges[i].0, ranges[i].0 + ranges[i].1);
        i += 1;
        while i < ranges.len() && ranges[i].0 == end {
            end += ranges[i].1;
            i += 1;
        }
        debug_assert!(start != 0);
        // SAFETY: a run of adjacent unused mappings of ours is unmapped as one range.
        // (An invalid range is left mapped, as in `Batch::release`.)
        let unmapped = unsafe { os::unmap(NonNull::new_unchecked(start as *mut u8), end - start) };
        done += Released::one(unmapped, end - start);
    }
    done
}

/// Sorts `ranges` by start address: a heapsort, in place, with no panic path (core's sorts can
/// panic on an inconsistent order, and a release path must not be able to).
fn sort_by_start(ranges: &mut [(usize, usize)]) {
    let n = ranges.len();
    for root in (0..n / 2).rev() {
        sift_down(ranges, root, n);
    }
    for end in (1..n).rev() {
        exchange(ranges, 0, end);
        sift_down(ranges, 0, end);
    }
}

/// Moves `heap[root]` down the max-heap `heap[..end]` (by start address) to its place.
fn sift_down(heap: &mut [(usize, usize)], mut root: usize, end: usize) {
    loop {
        let left = 2 * root + 1;
        let right = left + 1;
        let Some(&l) = heap.get(left).filter(|_| left < end) else {
            return;
        };
        let (child, c) = match heap.get(right) {
            Some(&r) if right < end && r.0 > l.0 => (right, r),
            _ => (left, l),
        };
        let Some(&parent) = heap.get(root) else {
            return;
        };
        if parent.0 >= c.0 {
            return;
        }
        exchange(heap, root, child);
        root = child;
    }
}

/// Swaps `heap[a]` and `heap[b]` (both in bounds; `slice::swap` would keep a panic path).
fn exchange(heap: &mut [(usize, usize)], a: usize, b: usize) {
    if let (Some(&x), Some(&y)) = (heap.get(a), heap.get(b)) {
        if let Some(slot) = heap.get_mut(a) {
            *slot = y;
        }
        if let Some(slot) = heap.get_mut(b) {
            *slot = x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_blocks_flush_in_one_call() {
        let page = os::page_size();
        let block = 64 * page; // 256 KiB with 4 KiB pages
                               // One mapping cut into 16 adjacent blocks, released in a scrambled order.
        let n = (MAX_BYTES / block).max(2);
        let base = os::map(n * block).unwrap().as_ptr() as usize;
        let batch = Batch::new();
        let mut total = Released::default();
        for i in (0..n)
            .rev()
            .step_by(2)
            .chain((0..n).rev().skip(1).step_by(2))
        {
            // SAFETY: each block is a distinct, unused part of our mapping.
            let r = unsafe {
                batch.release(NonNull::new((base + i * block) as *mut u8).unwrap(), block)
            };
            total.calls += r.calls;
            total.bytes += r.bytes;
        }
        assert_eq!(
            total,
            Released {
                calls: 1,
                bytes: (n * block) as u64,
                refused: 0,
            },
            "one flush, one call"
        );
    }

    #[test]
    fn ranges_sort_by_start() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for n in [0usize, 1, 2, 3, 7, 64, 255, 256] {
            let mut ranges: std::vec::Vec<(usize, usize)> = (0..n)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed % 1000) as usize, i)
                })
                .collect();
            let mut want = ranges.clone();
            want.sort_by_key(|r| r.0);
            sort_by_start(&mut ranges);
            let starts: std::vec::Vec<usize> = ranges.iter().map(|r| r.0).collect();
            let want_starts: std::vec::Vec<usize> = want.iter().map(|r| r.0).collect();
            assert_eq!(starts, want_starts, "n = {n}");
            let mut ids: std::vec::Vec<usize> = ranges.iter().map(|r| r.1).collect();
            ids.sort_unstable();
            assert!(ids.iter().copied().eq(0..n), "a permutation");
        }
    }

    #[test]
    fn flush_now_releases_what_is_pending() {
        let batch = Batch::new();
        let block = os::map(MIN_BLOCK).unwrap();
        // SAFETY: an unused mapping of ours.
        let now = unsafe { batch.release(block, MIN_BLOCK) };
        assert_eq!(now, Released::default(), "pending");
        let done = batch.flush_now();
        assert_eq!((done.calls, done.bytes), (1, MIN_BLOCK as u64));
        assert_eq!(batch.flush_now(), Released::default(), "nothing left");
    }

    #[test]
    fn small_blocks_and_a_busy_batch_release_at_once() {
        let page = os::page_size();
        let batch = Batch::new();
        let small = os::map(page).unwrap();
        // SAFETY: an unused mapping of ours.
        assert_eq!(unsafe { batch.release(small, page) }.calls, 1);
        batch.busy.store(true, Ordering::Relaxed);
        let big = os::map(MIN_BLOCK).unwrap();
        // SAFETY: as above.
        let released = unsafe { batch.release(big, MIN_BLOCK) };
        assert_eq!(released.calls, 1, "never waits for the lock");
    }
}
