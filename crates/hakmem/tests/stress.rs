//! Multi-threaded stress in the mode the cargo features select: `hakmem::Hakmem` is this
//! binary's global allocator and serves every block, so `cargo xtask test` runs it once per
//! mode (each compiled mode, and `runtime`).
//!
//! In the manner of mimalloc's `test-stress`: 8 lanes, each running 4 worker threads one after
//! another (32 threads in all, at most 8 at a time, on a 2-core machine), 1.2 M operations in
//! total: allocations of 8 B – 4 MiB (log-uniform, mostly small, all three paths: pool or system,
//! the threshold's crossing, mmap and BigCache), frees, reallocs and exchanges through a shared
//! transfer array, so that most blocks are freed by a thread other than the one that allocated
//! them. A worker that exits leaves what it holds to an orphanage (or frees it), and workers
//! that start adopt orphans: blocks outlive the thread (and the thread cache) that made them.
//! Every block carries a pattern derived from its id, checked before every free and realloc.
//! At the end every block allocated has been freed exactly once.
//!
//! `HAKMEM_TEST_SCALE` shrinks the run (the sanitizer and valgrind runs use it).

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::{pattern, scaled, Rng};
use hakmem::Hakmem;

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

const LANES: usize = 8;
const GENERATIONS: usize = 4;
const TRANSFER_SLOTS: usize = 512;
const LOCAL_MAX: usize = 96;
const TOTAL_OPS: u64 = 1_200_000;
const MIN_SIZE: usize = 8;
const MAX_SIZE: usize = 4 << 20;

/// A live block: where it is, its layout, and the id its pattern derives from.
struct Obj {
    ptr: *mut u8,
    layout: Layout,
    id: u64,
}

// SAFETY: an `Obj` is the sole owner of its block; handing it to another thread hands over the
// block (freeing it there is the cross-thread free under test).
unsafe impl Send for Obj {}

/// What all workers share.
struct Shared {
    /// The transfer array: each slot holds a boxed `Obj` or null; a worker swaps one of its
    /// blocks in and takes over whatever was there.
    slots: Vec<AtomicPtr<Obj>>,
    /// Blocks left behind by exited workers, one bundle per worker.
    orphans: Mutex<Vec<Vec<Obj>>>,
    next_id: AtomicU64,
    allocated: AtomicU64,
    freed: AtomicU64,
    ops: AtomicU64,
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=899 => rng.log_uniform(MIN_SIZE, 1 << 10),
        900..=996 => rng.log_uniform(1 << 10, 256 << 10),
        _ => rng.log_uniform(256 << 10, MAX_SIZE),
    }
}

fn align(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=79 => 8,
        80..=94 => 16,
        _ => 1 << (5 + rng.below(8)), // 32 .. 4096
    }
}

impl Shared {
    fn alloc(&self, rng: &mut Rng) -> Obj {
        let layout = Layout::from_size_align(size(rng), align(rng)).unwrap();
        let zeroed = rng.below(8) == 0;
        // SAFETY: a valid layout with a non-zero size.
        let ptr = unsafe {
            if zeroed {
                GLOBAL.alloc_zeroed(layout)
            } else {
                GLOBAL.alloc(layout)
            }
        };
        assert!(!ptr.is_null(), "null for {layout:?}");
        assert_eq!(ptr as usize % layout.align(), 0, "{ptr:p} for {layout:?}");
        if zeroed {
            // SAFETY: `ptr` holds `layout.size()` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            // The ends fully, every page in between.
            let nonzero = (0..layout.size().min(64))
                .chain((0..layout.size()).step_by(4096))
                .chain(layout.size().saturating_sub(64)..layout.size())
                .find(|&i| bytes[i] != 0);
            assert_eq!(
                nonzero, None,
                "alloc_zeroed({layout:?}) = {ptr:p}: not zero"
            );
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { pattern::fill(ptr, layout.size(), id) };
        self.allocated.fetch_add(1, Ordering::Relaxed);
        Obj { ptr, layout, id }
    }

    fn check(&self, o: &Obj) {
        // SAFETY: a live block of `o.layout.size()` bytes.
        if let Err(e) = unsafe { pattern::check(o.ptr, o.layout.size(), o.id, o.layout.size()) } {
            let stats = GLOBAL.stats();
            panic!("{} ({}): {e}", stats.policy, stats.mode);
        }
    }

    fn free(&self, o: Obj) {
        self.check(&o);
        // SAFETY: a live block of GLOBAL with this layout, freed once (the `Obj` is consumed).
        unsafe { GLOBAL.dealloc(o.ptr, o.layout) };
        self.freed.fetch_add(1, Ordering::Relaxed);
    }

    fn realloc(&self, o: &mut Obj, rng: &mut Rng) {
        self.check(o);
        let new_size = size(rng);
        // SAFETY: a live block with its layout; a non-zero new size that does not overflow.
        let p = unsafe { GLOBAL.realloc(o.ptr, o.layout, new_size) };
        assert!(!p.is_null(), "realloc {:?} -> {new_size}", o.layout);
        assert_eq!(p as usize % o.layout.align(), 0);
        let kept = o.layout.size().min(new_size);
        // SAFETY: the new block holds `new_size >= kept` bytes.
        if let Err(e) = unsafe { pattern::check(p, o.layout.size(), o.id, kept) } {
            panic!("realloc {} -> {new_size} lost data: {e}", o.layout.size());
        }
        o.ptr = p;
        o.layout = Layout::from_size_align(new_size, o.layout.align()).unwrap();
        o.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `p` holds `new_size` bytes.
        unsafe { pattern::fill(p, new_size, o.id) };
    }

    /// Puts `o` into a random transfer slot and returns the block that was there.
    fn exchange(&self, o: Obj, rng: &mut Rng) -> Option<Obj> {
        let boxed = Box::into_raw(Box::new(o));
        let prev = self.slots[rng.below(TRANSFER_SLOTS)].swap(boxed, Ordering::AcqRel);
        // SAFETY: a non-null slot value is a `Box<Obj>` some worker put there and nobody else
        // can take any more (the swap took it out).
        (!prev.is_null()).then(|| *unsafe { Box::from_raw(prev) })
    }
}

/// One worker thread: adopts orphans, runs `ops` operations, then exits holding its blocks
/// (leaving them to the orphanage) or frees them.
fn worker(shared: &Shared, seed: u64, ops: u64) {
    let mut rng = Rng::new(seed);
    let mut local: Vec<Obj> = shared.orphans.lock().unwrap().pop().unwrap_or_default();
    for o in &local {
        shared.check(o);
    }
    let mut done = 0;
    while done < ops {
        let r = rng.below(100);
        if r < 40 || local.is_empty() {
            if local.len() >= LOCAL_MAX {
                let victim = local.swap_remove(rng.below(local.len()));
                shared.free(victim);
                done += 1;
            }
            local.push(shared.alloc(&mut rng));
        } else if r < 65 {
            let victim = local.swap_remove(rng.below(local.len()));
            shared.free(victim);
        } else if r < 75 {
            let i = rng.below(local.len());
            shared.realloc(&mut local[i], &mut rng);
        } else {
            let mine = local.swap_remove(rng.below(local.len()));
            if let Some(theirs) = shared.exchange(mine, &mut rng) {
                shared.check(&theirs);
                if rng.below(2) == 0 {
                    shared.free(theirs); // most likely another thread's block
                    done += 1;
                } else {
                    local.push(theirs);
                }
            }
        }
        done += 1;
    }
    if rng.below(2) == 0 {
        shared.orphans.lock().unwrap().push(local);
    } else {
        let n = local.len() as u64;
        for o in local {
            shared.free(o);
        }
        done += n;
    }
    shared.ops.fetch_add(done, Ordering::Relaxed);
}

#[test]
fn threads_hand_blocks_to_each_other() {
    let shared = Arc::new(Shared {
        slots: (0..TRANSFER_SLOTS)
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect(),
        orphans: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
        allocated: AtomicU64::new(0),
        freed: AtomicU64::new(0),
        ops: AtomicU64::new(0),
    });
    let total = scaled(TOTAL_OPS);
    let per_worker = total / (LANES * GENERATIONS) as u64 + 1;
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                // One worker after another: each new one starts while the other lanes' workers
                // run, and may adopt what an exited one left.
                for generation in 0..GENERATIONS {
                    let shared = Arc::clone(&shared);
                    let seed = (lane * GENERATIONS + generation) as u64;
                    thread::spawn(move || worker(&shared, seed, per_worker))
                        .join()
                        .expect("worker");
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.join().expect("lane");
    }
    // Whatever is left in the array and the orphanage is freed here, by yet another thread.
    for slot in &shared.slots {
        let p = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: as in `exchange`.
            shared.free(*unsafe { Box::from_raw(p) });
        }
    }
    let orphans = std::mem::take(&mut *shared.orphans.lock().unwrap());
    for o in orphans.into_iter().flatten() {
        shared.free(o);
    }
    let (allocated, freed) = (
        shared.allocated.load(Ordering::Relaxed),
        shared.freed.load(Ordering::Relaxed),
    );
    assert_eq!(allocated, freed, "every block freed exactly once");
    let ops = shared.ops.load(Ordering::Relaxed);
    assert!(ops >= total, "{ops} operations, expected at least {total}");
    println!(
        "stress ({}): {ops} operations, {allocated} blocks, {} threads",
        GLOBAL.stats().policy,
        LANES * GENERATIONS
    );
}

/// The checker the stress relies on sees one changed byte anywhere, and a realloc's kept prefix
/// is checked against the old size's pattern.
#[test]
fn the_pattern_check_catches_a_changed_byte() {
    for size in [8usize, 9, 15, 16, 17, 100, 4096, 1 << 20] {
        let mut block = vec![0u8; size];
        // SAFETY: `block` holds `size` bytes.
        unsafe { pattern::fill(block.as_mut_ptr(), size, 42) };
        // SAFETY: as above.
        let check = |b: &[u8], upto| unsafe { pattern::check(b.as_ptr(), size, 42, upto) };
        assert_eq!(check(&block, size), Ok(()));
        for i in [
            0,
            7,
            8,
            size / 2,
            size.saturating_sub(9),
            size - 8,
            size - 1,
        ] {
            if i >= size {
                continue;
            }
            let mut bad = block.clone();
            bad[i] ^= 0x10;
            let err = check(&bad, size).unwrap_err();
            assert!(err.contains(&format!("at byte {i}:")), "{size}: {err}");
            assert_eq!(
                check(&bad, i),
                Ok(()),
                "only the first {i} bytes are checked"
            );
        }
        // SAFETY: as above.
        assert!(unsafe { pattern::check(block.as_ptr(), size, 43, size) }.is_err());
    }
}
