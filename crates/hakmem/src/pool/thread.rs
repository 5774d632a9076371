//! The thread-local side of the pool: which heap this thread uses in which pool, and what
//! happens when the thread exits.
//!
//! The state ([`with`]) is native TLS without a destructor: `fs:`-relative, never allocating,
//! never "destroyed". It holds a *fast slot* (the
//! region base and heap of the pool this thread used last: the fast paths compare against it)
//! and [`ENTRIES`] (base, heap) pairs, one per pool this thread has a heap in. A pool met while
//! all entries are taken (by live pools) gets no heap in this thread: its small requests go to
//! the system allocator and its frees of pool blocks take the remote path, which is always
//! correct.
//!
//! Thread exit is hooked with a pthread key created once per process, with a destructor, and set
//! to a non-null value by each thread when it makes its first heap. `pthread_setspecific` may
//! `calloc` (glibc, for keys past the first 32): when hakmem *is* `malloc` (the preload library)
//! that re-enters the allocator. So the thread's state says "hooked" *before* the call, the heap
//! is already in place (the re-entrant allocation is served from it, and does not try to hook
//! again), and the debug re-entry guard is lowered around the call. glibc runs key destructors
//! after the thread's `thread_local!` destructors, so blocks those free are taken back before
//! the heap is left (`Heap::leave`); anything freed or allocated after it goes the remote and
//! system ways.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering};

use super::heap::{Heap, IN_ORPHANS, ORPHANED};
use super::region::Region;
use crate::reentry;

/// Pools one thread can have a heap in.
pub(crate) const ENTRIES: usize = 8;

/// The fast slot's heap when there is none: never a real heap and never a span's owner (spans
/// of no heap say null), so the free path's owner check fails on it.
pub(crate) const NO_HEAP: *mut Heap = NonNull::<Heap>::dangling().as_ptr();

/// [`NO_HEAP`]'s address (a heap's alignment), for the preload build's TLS image.
#[cfg_attr(
    not(all(feature = "preload", target_arch = "x86_64", target_os = "linux")),
    allow(dead_code)
)]
const NO_HEAP_ADDR: usize = core::mem::align_of::<Heap>();

/// The thread has not hooked its exit yet.
const FRESH: usize = 0;
/// The exit hook is set (or being set, or could not be).
const HOOKED: usize = 1;
/// The thread is exiting and its heaps are left: no new heap.
const EXITED: usize = 2;

/// One thread's pool state.
#[repr(C)]
pub(crate) struct ThreadCache {
    /// The fast slot: region base of the pool used last (0: none) …
    pub(crate) base: Cell<usize>,
    /// … and this thread's heap in it ([`NO_HEAP`]: none).
    pub(crate) heap: Cell<*mut Heap>,
    /// (region base, heap) for every pool this thread has a heap in; base 0 is a free entry.
    entries: [Cell<(usize, *mut Heap)>; ENTRIES],
    /// A region this thread is known to have no heap in (0: none): a thread that only frees
    /// into a pool (a consumer) finds out once, not on every free.
    none: Cell<usize>,
    /// [`FRESH`], [`HOOKED`] or [`EXITED`] (a word: the type has no padding, [`with`]).
    state: Cell<usize>,
}

impl ThreadCache {
    /// The state of a thread that has not used the pool: `base` 0, `heap` [`NO_HEAP`], the
    /// rest zero (the preload build's TLS image, [`with`]).
    #[cfg_attr(
        all(feature = "preload", target_arch = "x86_64", target_os = "linux"),
        allow(dead_code)
    )]
    const fn new() -> Self {
        ThreadCache {
            base: Cell::new(0),
            heap: Cell::new(NO_HEAP),
            entries: [const { Cell::new((0, ptr::null_mut())) }; ENTRIES],
            none: Cell::new(0),
            state: Cell::new(FRESH),
        }
    }
}

crate::tls::thread_state! {
    /// Runs `f` on this thread's pool state (no call to reach it in the preload library:
    /// [`crate::tls`]).
    pub(crate) static with: ThreadCache = ThreadCache::new(),
        image [0, NO_HEAP_ADDR], symbol "__hakmem_pool_thread_cache";
}

/// What [`heap_of`] found.
pub(crate) enum Mine {
    /// This thread's heap in the region.
    Heap(*mut Heap),
    /// None: the thread has no heap there, known since an earlier free.
    None,
    /// None, found out now: the caller settles it with [`claim_or_remember`].
    FirstMiss,
}

/// This thread's heap in `region`, if it has one (for a free). The pool found becomes the fast
/// slot.
#[inline(always)]
pub(crate) fn heap_of(region: Region) -> Mine {
    with(|t| {
        let base = region.base();
        if t.base.get() == base {
            return Mine::Heap(t.heap.get());
        }
        if t.none.get() == base {
            return Mine::None;
        }
        match t.entries.iter().map(Cell::get).find(|&(b, _)| b == base) {
            Some((_, heap)) => {
                t.base.set(base);
                t.heap.set(heap);
                Mine::Heap(heap)
            }
            None => Mine::FirstMiss,
        }
    })
}

/// After [`heap_of`] said [`Mine::FirstMiss`], for a free into a span `owner` owns: a thread
/// whose free goes to an orphan's span inherits that orphan, which becomes the fast slot;
/// otherwise the pool is remembered as one this thread has no heap in, and its later frees
/// there make no claim (a consumer's remote frees cost what they did).
///
/// # Safety
/// `owner` was read from an owned span of `region`: null, or a heap slot of it.
#[cold]
#[inline(never)]
pub(crate) unsafe fn claim_or_remember(region: Region, owner: *mut Heap) -> Option<*mut Heap> {
    // SAFETY: as this function's.
    let claimed = unsafe { claim(region, owner) };
    if claimed.is_none() {
        with(|t| t.none.set(region.base()));
    }
    claimed
}

/// This thread's heap in `region`, made if it has none (which may fail: the thread is exiting,
/// all entries are taken by live pools, or the region has no heap slot left). The pool found
/// becomes the fast slot.
pub(crate) fn heap_in(region: Region) -> Option<*mut Heap> {
    with(|t| {
        let base = region.base();
        if t.base.get() == base {
            return Some(t.heap.get());
        }
        let free = match entry(t, base) {
            Ok(heap) => {
                t.base.set(base);
                t.heap.set(heap);
                return Some(heap);
            }
            Err(free) => free,
        };
        if t.state.get() == EXITED {
            return None;
        }
        let i = free?;
        let (heap, inherited) = region.claim_heap()?;
        if !inherited {
            // SAFETY: just claimed: ours alone.
            unsafe { Heap::init(heap, region) };
        }
        // A dead pool's heap is dropped with its entry (its region is never used again).
        install(t, i, base, heap);
        Some(heap)
    })
}

/// This thread's heap in the region at `base` from its entries, or else the first entry free
/// for one (empty, or a dead pool's).
fn entry(t: &ThreadCache, base: usize) -> Result<*mut Heap, Option<usize>> {
    let mut free = None;
    for (i, e) in t.entries.iter().enumerate() {
        let (b, heap) = e.get();
        if b == base {
            return Ok(heap);
        }
        if free.is_none() {
            // SAFETY: bases in the entries are regions (never unmapped).
            if b == 0 || unsafe { Region::at(b) }.is_dead() {
                free = Some(i);
            }
        }
    }
    Err(free)
}

/// Makes `heap` this thread's heap in the region at `base`: entry `i` (free), the fast slot;
/// hooks the thread's exit if it is not yet.
fn install(t: &ThreadCache, i: usize, base: usize, heap: *mut Heap) {
    debug_assert!(i < ENTRIES);
    // (`i` comes from `entry`, in bounds; the `min` says so to the compiler, so that no bounds
    // check, and no panic path, is left here: the preload check walks this code.)
    t.entries[i.min(ENTRIES - 1)].set((base, heap));
    t.base.set(base);
    t.heap.set(heap);
    if t.none.get() == base {
        t.none.set(0);
    }
    if t.state.get() == FRESH {
        hook_exit(t);
    }
}

/// Takes `owner`, the heap of a span a block this thread frees belongs to, as this thread's heap
/// in `region` if it is an orphan and this thread has none there (and may make one): the
/// thread that replaces an exited one, and first frees what that one left, inherits exactly its
/// heap, and those frees are local. The pool found becomes the fast slot.
///
/// Takes `owner` as this thread's heap in `region` if it is an orphan and this thread has none
/// there (and may make one); a plain load first.
///
/// # Safety
/// `owner` was read from an owned span of `region`: null, or a heap slot of it.
#[inline(always)]
unsafe fn claim(region: Region, owner: *mut Heap) -> Option<*mut Heap> {
    if owner.is_null() {
        return None;
    }
    debug_assert!(region.is_heap_slot(owner));
    // SAFETY: a heap slot of the region (caller): in its metadata, never unmapped.
    if unsafe { (*owner).orphan().load(Ordering::Relaxed) } != IN_ORPHANS | ORPHANED {
        return None;
    }
    // SAFETY: as this function's.
    unsafe { claim_slow(region, owner) }
}

/// [`claim`] once `owner` looked orphaned.
///
/// # Safety
/// As [`claim`]'s, `owner` not null.
#[cold]
#[inline(never)]
unsafe fn claim_slow(region: Region, owner: *mut Heap) -> Option<*mut Heap> {
    with(|t| {
        let base = region.base();
        if t.state.get() == EXITED {
            return None;
        }
        let Err(free) = entry(t, base) else {
            debug_assert!(false, "claim: the thread has a heap in the region");
            return None;
        };
        let i = free?;
        // SAFETY: a heap slot of the region (caller).
        if !unsafe { region.claim_orphan(owner) } {
            return None;
        }
        install(t, i, base, owner);
        Some(owner)
    })
}

/// `pthread_key_t` + 1 of the exit hook; 0 before it is made, `u32::MAX` if it could not be.
static KEY: AtomicU32 = AtomicU32::new(0);

/// Arranges for [`on_exit`] to run when this thread exits.
fn hook_exit(t: &ThreadCache) {
    t.state.set(HOOKED);
    let Some(key) = exit_key() else {
        return;
    };
    let value = t as *const ThreadCache as *const c_void;
    // The call may allocate (see the module docs): re-entry is expected here and served.
    // SAFETY: a key of ours; the value is only compared against null by glibc.
    reentry::allow(|| unsafe { libc::pthread_setspecific(key, value) });
}

/// The process-wide key whose destructor is [`on_exit`].
fn exit_key() -> Option<libc::pthread_key_t> {
    match KEY.load(Ordering::Acquire) {
        0 => {}
        u32::MAX => return None,
        k => return Some(k - 1),
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the C signature.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_exit)) } != 0 {
        let _ = KEY.compare_exchange(0, u32::MAX, Ordering::AcqRel, Ordering::Acquire);
        return exit_key_after_race();
    }
    match KEY.compare_exchange(0, key + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(key),
        Err(_) => {
            // Another thread made one first: use it, drop ours (never set by anyone).
            // SAFETY: our key, unused.
            unsafe { libc::pthread_key_delete(key) };
            exit_key_after_race()
        }
    }
}

fn exit_key_after_race() -> Option<libc::pthread_key_t> {
    match KEY.load(Ordering::Acquire) {
        0 | u32::MAX => None,
        k => Some(k - 1),
    }
}

/// The exit hook: leaves every heap of this thread to its region (`Heap::leave`).
unsafe extern "C" fn on_exit(_: *mut c_void) {
    let _guard = reentry::Guard::enter();
    with(|t| {
        t.state.set(EXITED);
        t.base.set(0);
        t.heap.set(NO_HEAP);
        t.none.set(0);
        for e in &t.entries {
            let (base, heap) = e.replace((0, ptr::null_mut()));
            if base == 0 {
                continue;
            }
            // SAFETY: entries hold regions (never unmapped) and this thread's heaps in them;
            // between `begin_leave` and `end_leave` the region's span memory is not purged
            // (`Region::kill`).
            unsafe {
                let region = Region::at(base);
                if region.begin_leave() {
                    Heap::leave(heap, region);
                    region.end_leave();
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preload_image_is_the_initial_state() {
        assert_eq!(NO_HEAP as usize, NO_HEAP_ADDR);
        assert!(crate::tls::is_image(
            &ThreadCache::new(),
            Some([0, NO_HEAP_ADDR])
        ));
        let mut moved = ThreadCache::new();
        moved.state = Cell::new(HOOKED);
        assert!(!crate::tls::is_image(&moved, Some([0, NO_HEAP_ADDR])));
    }
}
