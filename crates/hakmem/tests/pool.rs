//! The small-object pool (FAST and BALANCED): cross-thread frees, thread exit with live blocks,
//! memory given back after a churn, `fork` while other threads allocate, several instances in
//! one thread, realloc and zeroing. The misuse the pool detects is tested with the other death
//! tests, in the mode the features select (tests/misuse.rs; the table in docs/reliability.md).
//!
//! The pool's own figures are read from `Stats` (BALANCED keeps them: `pool_held_bytes`, …);
//! FAST is used where only behaviour is checked.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{alloc_until, child_value, run_child};
use hakmem::mode::{Balanced, Fast};
use hakmem::Allocator;

/// One size in each of the pool's 56 classes (the class's largest), and one just above the
/// previous class.
fn class_sizes() -> Vec<usize> {
    let mut sizes = Vec::new();
    for c in 0..56usize {
        let size = if c < 8 {
            (c + 1) * 16
        } else {
            let b = 7 + (c - 8) / 4;
            let k = (c - 8) % 4 + 1;
            (1 << b) + k * (1 << (b - 2))
        };
        let prev = sizes.last().copied().unwrap_or(0);
        sizes.push(prev + 1);
        sizes.push(size);
    }
    sizes
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn fill(p: *mut u8, size: usize, seed: u8) {
    for i in [0, size / 2, size - 1] {
        // SAFETY: `i < size`, inside the block.
        unsafe { p.add(i).write(seed ^ i as u8) };
    }
}

fn holds(p: *const u8, size: usize, seed: u8) -> bool {
    // SAFETY: `i < size`, inside the block.
    [0, size / 2, size - 1]
        .iter()
        .all(|&i| unsafe { p.add(i).read() } == seed ^ i as u8)
}

/// A block crossing threads.
#[derive(Clone, Copy)]
struct Sent(usize, usize, u8);

/// Blocks of every class allocated on thread A, checked and freed on thread B; then A allocates
/// the same sizes again and gets (a good part of) the same memory back: the remote frees were
/// collected by the owner.
#[test]
fn cross_thread_frees_come_back_to_the_owner() {
    static A: Allocator<Fast> = Allocator::new();
    let sizes = class_sizes();
    let (to_b, from_a) = mpsc::channel::<Vec<Sent>>();
    let (to_a, from_b) = mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let mut first = HashSet::new();
        let mut blocks = Vec::new();
        for round in 0..4u8 {
            for &size in &sizes {
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc(layout(size)) };
                assert!(!p.is_null());
                fill(p, size, round);
                first.insert(p as usize);
                blocks.push(Sent(p as usize, size, round));
            }
        }
        to_b.send(blocks).unwrap();
        from_b.recv().unwrap();
        let mut again = 0;
        let mut second = Vec::new();
        for _ in 0..4 {
            for &size in &sizes {
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc(layout(size)) };
                assert!(!p.is_null());
                again += usize::from(first.contains(&(p as usize)));
                second.push((p, size));
            }
        }
        for (p, size) in second {
            // SAFETY: allocated above with this layout.
            unsafe { A.dealloc(p, layout(size)) };
        }
        (again, first.len())
    });
    let blocks = from_a.recv().unwrap();
    for Sent(p, size, seed) in blocks {
        assert!(
            holds(p as *const u8, size, seed),
            "block of {size} B corrupted in transit"
        );
        // SAFETY: allocated by A with this layout, handed over.
        unsafe { A.dealloc(p as *mut u8, layout(size)) };
    }
    to_a.send(()).unwrap();
    let (again, total) = owner.join().unwrap();
    assert!(
        again * 2 >= total,
        "only {again} of {total} blocks freed remotely were reused by their owner"
    );
}

/// Eight threads pass blocks around a ring for many rounds (every free remote), checking every
/// block; in the end the pool holds a bounded amount of memory.
#[test]
fn many_threads_free_each_others_blocks() {
    static A: Allocator<Balanced> = Allocator::new();
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;
    const PER_ROUND: usize = 500;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Vec<Sent>>()).unzip();
    let barrier = Arc::new(Barrier::new(THREADS));
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let next = txs[(t + 1) % THREADS].clone();
        let barrier = barrier.clone();
        handles.push(thread::spawn(move || {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
            for round in 0..ROUNDS {
                let mut batch = Vec::with_capacity(PER_ROUND);
                for _ in 0..PER_ROUND {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let size = 1 + (x % 2048) as usize;
                    // SAFETY: non-zero size.
                    let p = unsafe { A.alloc(layout(size)) };
                    assert!(!p.is_null());
                    let seed = (round * 7 + t) as u8;
                    fill(p, size, seed);
                    batch.push(Sent(p as usize, size, seed));
                }
                next.send(batch).unwrap();
                for Sent(p, size, seed) in rx.recv().unwrap() {
                    assert!(holds(p as *const u8, size, seed), "block corrupted");
                    // SAFETY: a live block of A with this layout, handed over.
                    unsafe { A.dealloc(p as *mut u8, layout(size)) };
                }
            }
            barrier.wait();
        }));
    }
    drop(txs);
    for h in handles {
        h.join().unwrap();
    }
    let s = A.stats();
    // Live at any time: at most 2 batches per thread (≈ 16 × 500 × 1 KiB = 8 MiB); the pool
    // must not have kept the 40 rounds' worth (160 MiB).
    assert!(
        s.pool_held_bytes < 64 << 20,
        "the pool holds {} MiB after the threads exited\n{s}",
        s.pool_held_bytes >> 20
    );
}

/// Threads allocate, hand their blocks to the main thread and exit; the main thread frees them
/// (into spans whose owner is gone). Cycle after cycle, each new thread inherits the last one's
/// heap and collects those frees, so the pool does not grow with the number of cycles.
#[test]
fn exited_threads_spans_are_adopted() {
    static A: Allocator<Balanced> = Allocator::new();
    const CYCLES: usize = 30;
    const BLOCKS: usize = 20_000;
    let mut held = Vec::new();
    for cycle in 0..CYCLES {
        let blocks = thread::spawn(move || {
            (0..BLOCKS)
                .map(|i| {
                    let size = 16 + (i % 7) * 24;
                    // SAFETY: non-zero size.
                    let p = unsafe { A.alloc(layout(size)) };
                    assert!(!p.is_null());
                    fill(p, size, cycle as u8);
                    Sent(p as usize, size, cycle as u8)
                })
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap();
        // The thread is gone: its heap, holding live blocks, is an orphan.
        for Sent(p, size, seed) in blocks {
            assert!(holds(p as *const u8, size, seed));
            // SAFETY: a live block of A.
            unsafe { A.dealloc(p as *mut u8, layout(size)) };
        }
        held.push(A.stats().pool_held_bytes);
    }
    // One cycle's blocks: 20 000 × ~88 B ≈ 1.7 MiB. Without inheritance the pool would hold about
    // 30 times that by the end.
    let last = *held.last().unwrap();
    assert!(
        last <= 3 * held[0].max(1 << 20),
        "held bytes grow with the cycles: {held:?}"
    );
}

/// The block sizes of the classes FAST serves from the pool: every class but the largest
/// (512 KiB, FAST's mmap threshold), every second entry of [`class_sizes`].
fn class_block_sizes() -> Vec<usize> {
    class_sizes()
        .into_iter()
        .skip(1)
        .step_by(2)
        .take(55)
        .collect()
}

/// A thread that exits holding blocks of every pool class leaves its heap whole to the next thread:
/// that thread's first block of each class is the next block of the span the first thread was
/// allocating from (docs/pool.md, "Thread exit"). Adopting the exited thread's spans one by one,
/// a few per refill, gave most classes a fresh span instead.
#[test]
fn a_new_thread_inherits_an_exited_threads_spans() {
    static A: Allocator<Fast> = Allocator::new();
    let sizes = class_block_sizes();
    assert_eq!(sizes.len(), 55);
    // A thread that allocates one block of each class, keeps them and exits.
    let one_of_each = || -> Vec<usize> {
        thread::spawn(|| {
            class_block_sizes()
                .into_iter()
                // SAFETY: non-zero size; kept live (freed at the end).
                .map(|size| unsafe { A.alloc(layout(size)) } as usize)
                .collect()
        })
        .join()
        .unwrap()
    };
    let first = one_of_each();
    let second = one_of_each();
    let mut apart = Vec::new();
    for ((&size, &a), &b) in sizes.iter().zip(&first).zip(&second) {
        if b != a + size {
            apart.push(size);
        }
    }
    assert!(
        apart.is_empty(),
        "the second thread's block does not follow the first's in these classes: {apart:?}"
    );
    for (i, &size) in sizes.iter().enumerate() {
        // SAFETY: live blocks of A with this layout, freed once.
        unsafe {
            A.dealloc(first[i] as *mut u8, layout(size));
            A.dealloc(second[i] as *mut u8, layout(size));
        }
    }
}

/// A thread whose first act in the pool is to free a block an exited thread left inherits that
/// thread's heap, not whichever orphan the region would hand out next: the thread that replaces
/// an exited one and frees what it left frees locally (docs/pool.md, "Thread exit"). The claimed
/// heap's entry stays in the orphan stack, stale, and is skipped; orphaned again at the
/// claimer's exit, it is inherited from there.
#[test]
fn a_thread_freeing_an_orphans_block_first_inherits_that_orphan() {
    static A: Allocator<Fast> = Allocator::new();
    // Two threads, alive at once (so each has a heap of its own), allocate ten 64 B blocks each
    // and keep them; each exits when told: two orphans whose current spans go on after them.
    let start = || {
        let (go, wait) = mpsc::channel::<()>();
        let (tell, ready) = mpsc::channel::<Vec<usize>>();
        let t = thread::spawn(move || {
            let blocks = (0..10)
                // SAFETY: non-zero size; kept live (freed at the end).
                .map(|_| unsafe { A.alloc(layout(64)) } as usize)
                .collect();
            tell.send(blocks).unwrap();
            wait.recv().unwrap();
        });
        (ready.recv().unwrap(), go, t)
    };
    let (first, go_first, t_first) = start();
    let (second, go_second, t_second) = start();
    go_first.send(()).unwrap();
    t_first.join().unwrap();
    go_second.send(()).unwrap();
    t_second.join().unwrap(); // the second orphan is on top of the orphan stack
    let next = |blocks: &[usize]| blocks[blocks.len() - 1] + 64;
    // Frees one of the first orphan's blocks, then allocates one.
    let first_0 = first[0];
    let claimed = thread::spawn(move || {
        // SAFETY: a live block of A with this layout.
        unsafe { A.dealloc(first_0 as *mut u8, layout(64)) };
        // SAFETY: non-zero size; kept live.
        unsafe { A.alloc(layout(64)) as usize }
    })
    .join()
    .unwrap();
    assert_eq!(
        claimed,
        next(&first),
        "the freeing thread's block follows the first orphan's (the second's would be {:#x})",
        next(&second)
    );
    // A thread that allocates first inherits the orphan on top: the second. It stays alive
    // (holding that heap) while the next one …
    let (inherited, go_on, t_inherited) = {
        let (go, wait) = mpsc::channel::<()>();
        let (tell, ready) = mpsc::channel::<usize>();
        let t = thread::spawn(move || {
            // SAFETY: non-zero size; kept live.
            tell.send(unsafe { A.alloc(layout(64)) } as usize).unwrap();
            wait.recv().unwrap();
        });
        (ready.recv().unwrap(), go, t)
    };
    assert_eq!(inherited, next(&second));
    // … meets the first orphan's stale entry, orphaned again by the claimer's exit: its block
    // follows the claimer's.
    // SAFETY: non-zero size; kept live.
    let again = thread::spawn(|| unsafe { A.alloc(layout(64)) as usize })
        .join()
        .unwrap();
    go_on.send(()).unwrap();
    t_inherited.join().unwrap();
    assert_eq!(again, claimed + 64);
    for p in first[1..]
        .iter()
        .chain(&second)
        .chain([&claimed, &inherited, &again])
    {
        // SAFETY: live blocks of A with this layout, freed once.
        unsafe { A.dealloc(*p as *mut u8, layout(64)) };
    }
}

/// A thread exits holding spans whose blocks another thread then frees; a thread that was
/// already running, and is out of spans, takes the orphan's spans over rather than growing the
/// pool: what the pool has carved (held + dirty) does not change.
#[test]
fn a_running_thread_takes_over_an_orphan_before_the_pool_grows() {
    static A: Allocator<Balanced> = Allocator::new();
    let carved = || {
        let s = A.stats();
        (s.pool_held_bytes + s.pool_dirty_bytes, s.pool_purged_bytes)
    };
    let (go, wait) = mpsc::channel::<()>();
    let runner = thread::spawn(move || {
        // A heap of its own first, with one 32 B block.
        // SAFETY: non-zero size.
        let mine = unsafe { A.alloc(layout(32)) };
        wait.recv().unwrap();
        // Now 1 KiB blocks, a class this heap has no span of.
        let before = carved();
        let blocks: Vec<usize> = (0..32)
            // SAFETY: non-zero size.
            .map(|_| unsafe { A.alloc(layout(1024)) } as usize)
            .collect();
        let after = carved();
        for p in blocks {
            // SAFETY: live blocks of A with this layout.
            unsafe { A.dealloc(p as *mut u8, layout(1024)) };
        }
        // SAFETY: as above.
        unsafe { A.dealloc(mine, layout(32)) };
        (before, after)
    });
    // An exiting thread leaves 2 MiB of 1 KiB blocks in its spans (an orphan) …
    let blocks: Vec<usize> = thread::spawn(|| {
        (0..2048)
            // SAFETY: non-zero size.
            .map(|_| unsafe { A.alloc(layout(1024)) } as usize)
            .collect()
    })
    .join()
    .unwrap();
    // … which this thread (without a heap in A) frees: remote frees into the orphan's spans.
    for p in blocks {
        // SAFETY: live blocks of A with this layout.
        unsafe { A.dealloc(p as *mut u8, layout(1024)) };
    }
    go.send(()).unwrap();
    let (before, after) = runner.join().unwrap();
    assert!(
        before.0 >= 2 << 20,
        "the orphan's spans are held: {before:?}"
    );
    assert_eq!(
        after, before,
        "(held + dirty, purged) bytes before and after the running thread's 1 KiB blocks"
    );
}

/// A thread exits with live blocks that another thread frees later, while the first thread's
/// heap is an orphan (then inherited); the blocks stay intact and frees after the exit are fine.
#[test]
fn blocks_outlive_their_thread() {
    static A: Allocator<Fast> = Allocator::new();
    let sizes = class_sizes();
    let blocks = thread::spawn(move || {
        sizes
            .iter()
            .map(|&size| {
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc(layout(size)) };
                fill(p, size, 0x5A);
                Sent(p as usize, size, 0x5A)
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    // Another thread allocates meanwhile (and inherits the exited thread's heap).
    thread::spawn(|| {
        for &size in &class_sizes() {
            // SAFETY: non-zero size; freed with its layout.
            unsafe {
                let p = A.alloc(layout(size));
                fill(p, size, 1);
                A.dealloc(p, layout(size));
            }
        }
    })
    .join()
    .unwrap();
    thread::spawn(move || {
        for Sent(p, size, seed) in blocks {
            assert!(
                holds(p as *const u8, size, seed),
                "{size} B block lost its contents"
            );
            // SAFETY: a live block of A.
            unsafe { A.dealloc(p as *mut u8, layout(size)) };
        }
    })
    .join()
    .unwrap();
}

/// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[ignore = "child process of memory_goes_back_to_the_os_after_a_churn"]
fn child_churn() {
    static A: Allocator<Balanced> = Allocator::new();
    const BYTES: usize = 256 << 20;
    let before = rss();
    let mut peak = 0;
    for size in [64usize, 1000, 24_000, 200_000] {
        let n = BYTES / size;
        let mut blocks = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: non-zero size.
            let p = unsafe { A.alloc(layout(size)) };
            assert!(!p.is_null());
            // SAFETY: touch every page of the block.
            unsafe {
                for off in (0..size).step_by(4096) {
                    p.add(off).write(i as u8);
                }
            }
            blocks.push(p);
        }
        peak = peak.max(rss());
        for p in blocks {
            // SAFETY: allocated above with this layout.
            unsafe { A.dealloc(p, layout(size)) };
        }
    }
    let after = rss();
    let s = A.stats();
    println!(
        "before={} peak={} after={} purged={} held={} dirty={}",
        before >> 20,
        peak >> 20,
        after >> 20,
        s.pool_purged_bytes >> 20,
        s.pool_held_bytes >> 20,
        s.pool_dirty_bytes >> 20
    );
}

/// 256 MiB of blocks of one size, touched and freed, for four sizes in four span kinds: the
/// resident set rises by the churn and falls back once the blocks are freed (empty spans beyond
/// a few MiB are returned with `MADV_DONTNEED`).
#[test]
#[cfg_attr(
    hakmem_sanitizer,
    ignore = "AddressSanitizer's quarantine keeps the test's own freed memory (its lists of \
              blocks) resident: the resident set is not the pool's"
)]
fn memory_goes_back_to_the_os_after_a_churn() {
    let out = run_child("child_churn", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mib = |k| -> usize { child_value(&out, k).unwrap().parse().unwrap() };
    let (before, peak, after) = (mib("before"), mib("peak"), mib("after"));
    assert!(
        peak >= before + 200,
        "the churn was resident: {before} → {peak} MiB"
    );
    assert!(
        after <= before + 24,
        "RSS {before} MiB before, {peak} MiB at the peak, {after} MiB after freeing everything"
    );
    assert!(mib("purged") >= 700, "purged {} MiB", mib("purged"));
    // What stays held: each class's current span and one empty span kept per kind.
    assert!(
        mib("held") <= 16,
        "held {} MiB after freeing everything",
        mib("held")
    );
}

/// `fork` while four threads allocate and free through the pool: the child allocates and frees
/// through the same pool (from the forking thread's heap and a new thread's) and exits 0.
#[test]
fn fork_while_other_threads_allocate() {
    static A: Allocator<Fast> = Allocator::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut live = [(std::ptr::null_mut::<u8>(), 0usize); 64];
                let mut i = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let slot = &mut live[i % 64];
                    let size = 1 + (i * 37) % 3000;
                    // SAFETY: each slot's block is freed once, with the layout it was made with.
                    unsafe {
                        if !slot.0.is_null() {
                            A.dealloc(slot.0, layout(slot.1));
                        }
                        *slot = (A.alloc(layout(size)), size);
                    }
                    i += 1;
                }
                for (p, size) in live {
                    if !p.is_null() {
                        // SAFETY: as above.
                        unsafe { A.dealloc(p, layout(size)) };
                    }
                }
            })
        })
        .collect();
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(5));
        // SAFETY: the child only uses the pool (lock-free), a raw thread and `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child_after_fork(&A);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut status = 0;
        loop {
            // SAFETY: our child's pid and a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: our child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung");
            }
            thread::sleep(Duration::from_millis(2));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

/// In the forked child: allocate and free through the pool on this thread and on a new one
/// (made with `pthread_create`, not std), then `_exit`.
fn child_after_fork(a: &'static Allocator<Fast>) -> ! {
    extern "C" fn work(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `&'static Allocator<Fast>` passed below.
        let a = unsafe { &*(arg as *const Allocator<Fast>) };
        std::ptr::null_mut::<libc::c_void>().wrapping_add(usize::from(!churn(a)))
    }
    fn churn(a: &Allocator<Fast>) -> bool {
        let mut live = [std::ptr::null_mut::<u8>(); 256];
        for round in 0..20usize {
            for (i, slot) in live.iter_mut().enumerate() {
                let size = 1 + (i * 131 + round) % 4000;
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout(size)) };
                if p.is_null() {
                    return false;
                }
                fill(p, size, i as u8);
                *slot = p;
            }
            for (i, &p) in live.iter().enumerate() {
                let size = 1 + (i * 131 + round) % 4000;
                if !holds(p, size, i as u8) {
                    return false;
                }
                // SAFETY: allocated just above with this layout.
                unsafe { a.dealloc(p, layout(size)) };
            }
        }
        true
    }
    let mut ok = churn(a);
    let mut tid: libc::pthread_t = 0;
    let arg = a as *const Allocator<Fast> as *mut libc::c_void;
    // SAFETY: a valid thread handle out-pointer and a C entry point with its argument.
    if unsafe { libc::pthread_create(&mut tid, std::ptr::null(), work, arg) } == 0 {
        let mut ret = std::ptr::null_mut();
        // SAFETY: the thread just made.
        unsafe { libc::pthread_join(tid, &mut ret) };
        ok &= ret.is_null();
    } else {
        ok = false;
    }
    // SAFETY: ends the child without running the parent's atexit handlers or test harness.
    unsafe { libc::_exit(if ok { 0 } else { 1 }) }
}

/// Two pool instances in one thread, interleaved: a block freed into one is never handed out by
/// the other, each reuses its own, and each frees only its own.
#[test]
fn two_instances_never_mix_blocks() {
    static A: Allocator<Fast> = Allocator::new();
    static B: Allocator<Fast> = Allocator::new();
    static C: Allocator<Balanced> = Allocator::new();
    let all: [&dyn GlobalAlloc; 3] = [&A, &B, &C];
    let mut owned: Vec<HashSet<usize>> = vec![HashSet::new(); 3];
    let mut live = Vec::new();
    for round in 0..3u8 {
        for &size in &class_sizes() {
            for (i, a) in all.iter().enumerate() {
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout(size)) };
                assert!(!p.is_null());
                fill(p, size, round ^ i as u8);
                owned[i].insert(p as usize);
                live.push((i, p, size, round ^ i as u8));
            }
            // Free into A, then allocate from B and C: they must not get A's block.
            // SAFETY: non-zero size; `p` freed with its layout.
            unsafe {
                let p = A.alloc(layout(size));
                A.dealloc(p, layout(size));
                for (i, other) in all.iter().enumerate().skip(1) {
                    let q = other.alloc(layout(size));
                    assert_ne!(p, q, "instance {i} handed out a block just freed into A");
                    other.dealloc(q, layout(size));
                }
                let (back, others) = alloc_until(p, || A.alloc(layout(size)));
                assert!(back, "A reuses its own block");
                A.dealloc(p, layout(size));
                others.into_iter().for_each(|q| A.dealloc(q, layout(size)));
            }
        }
    }
    assert!(owned[0].is_disjoint(&owned[1]) && owned[0].is_disjoint(&owned[2]));
    assert!(owned[1].is_disjoint(&owned[2]));
    for (i, p, size, seed) in live {
        assert!(
            holds(p, size, seed),
            "instance {i}'s block of {size} B disturbed"
        );
        // SAFETY: allocated by `all[i]` with this layout.
        unsafe { all[i].dealloc(p, layout(size)) };
    }
}

/// A thread keeps heaps in 8 pools; a ninth pool's requests in that thread are served by the
/// system path (correctly), while the other threads use it as usual.
#[test]
fn a_ninth_pool_in_one_thread_falls_back_to_the_system() {
    static POOLS: [Allocator<Balanced>; 9] = [const { Allocator::new() }; 9];
    if std::env::var_os("HAKMEM_TEST_UNDER_VALGRIND").is_some() {
        // Valgrind's address space holds six 16 GiB regions (docs/reliability.md).
        println!("skipped under valgrind: nine pools need nine regions");
        return;
    }
    thread::spawn(|| {
        let blocks: Vec<_> = POOLS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout(100)) };
                fill(p, 100, i as u8);
                p
            })
            .collect();
        for (i, a) in POOLS.iter().enumerate() {
            let held = a.stats().pool_held_bytes;
            if i < 8 {
                assert!(held > 0, "pool {i} serves this thread");
            } else {
                assert_eq!(held, 0, "the ninth pool has no heap in this thread");
            }
        }
        for (i, (a, p)) in POOLS.iter().zip(blocks).enumerate() {
            assert!(holds(p, 100, i as u8));
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout(100)) };
        }
    })
    .join()
    .unwrap();
    // Another thread: the ninth pool serves it.
    thread::spawn(|| {
        // SAFETY: non-zero size; freed with its layout.
        unsafe {
            let p = POOLS[8].alloc(layout(100));
            assert!(POOLS[8].stats().pool_held_bytes > 0);
            POOLS[8].dealloc(p, layout(100));
        }
    })
    .join()
    .unwrap();
}

/// Dropped instances give their memory back and never disturb live ones (their regions stay
/// reserved, so a later instance cannot be confused with them). (12 of them; fewer at a lower
/// `HAKMEM_TEST_SCALE`: each keeps 16 GiB of address space, and valgrind's holds six.)
#[test]
fn dropped_instances_do_not_disturb_others() {
    static KEEP: Allocator<Fast> = Allocator::new();
    // SAFETY: non-zero size.
    let kept = unsafe { KEEP.alloc(layout(100)) };
    fill(kept, 100, 7);
    for round in 0..common::scaled(12).max(2) as u8 {
        let a = Allocator::<Balanced>::new();
        let blocks: Vec<_> = class_sizes()
            .into_iter()
            .map(|size| {
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout(size)) };
                fill(p, size, round);
                (p, size)
            })
            .collect();
        assert!(a.stats().pool_held_bytes > 0);
        for (p, size) in blocks {
            assert!(holds(p, size, round));
            // SAFETY: allocated above with this layout.
            unsafe { a.dealloc(p, layout(size)) };
        }
        // A thread that used this instance exits after it is gone.
        drop(a);
    }
    assert!(holds(kept, 100, 7));
    // SAFETY: allocated above.
    unsafe { KEEP.dealloc(kept, layout(100)) };
}

/// An allocator dropped while threads that used it exit: their exit hooks walk their heaps'
/// spans (free lists that live in the span memory) while the drop returns that memory to the
/// OS. The region's life word (dead flag and count of leaving threads, `Region::kill`) keeps
/// the purge until the last hook is out; without it a hook could read zeroed lists mid-walk and
/// report a false double free. A race: this test makes the interleaving likely, not certain
/// (the argument is in `Region::kill`'s docs).
#[test]
fn dropping_an_allocator_while_its_threads_exit() {
    const THREADS: usize = 4;
    for round in 0..common::scaled(64).max(2) {
        let a = Box::into_raw(Box::new(Allocator::<Fast>::new())) as usize;
        let used = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let used = Arc::clone(&used);
                thread::spawn(move || {
                    // SAFETY: the box lives until every thread has passed the barrier.
                    let a = unsafe { &*(a as *const Allocator<Fast>) };
                    // Blocks of several classes, some freed in another order than allocated,
                    // so that each span has a free list to walk at exit.
                    let blocks: Vec<_> = (0..2000)
                        .map(|i| {
                            let size = 16 + (i * 37 + t * 11 + round as usize) % 2000;
                            // SAFETY: non-zero size.
                            (unsafe { a.alloc(layout(size)) }, size)
                        })
                        .collect();
                    for (i, &(p, size)) in blocks.iter().enumerate().rev() {
                        if i % 3 != 0 {
                            // SAFETY: allocated above with this layout, freed once.
                            unsafe { a.dealloc(p, layout(size)) };
                        }
                    }
                    for &(p, size) in blocks.iter().step_by(3) {
                        // SAFETY: as above (the other third).
                        unsafe { a.dealloc(p, layout(size)) };
                    }
                    used.wait();
                    // The thread exits now: its exit hook leaves its heap.
                })
            })
            .collect();
        used.wait();
        // SAFETY: every block is freed and no thread uses the allocator any more (their exit
        // hooks reach the region through their own thread-locals, not through it).
        drop(unsafe { Box::from_raw(a as *mut Allocator<Fast>) });
        for t in threads {
            t.join().unwrap();
        }
    }
}

/// realloc within a class stays in place; to another class, or out of the pool (large) and
/// back, it moves and keeps the contents; alloc_zeroed of a recycled block reads zero.
#[test]
fn realloc_and_zeroing() {
    static A: Allocator<Fast> = Allocator::new();
    let l = |size| Layout::from_size_align(size, 16).unwrap();
    // SAFETY: every block is used within its size and freed (or reallocated) with its layout.
    unsafe {
        let p = A.alloc(l(20));
        p.write_bytes(0xAB, 20);
        assert_eq!(A.realloc(p, l(20), 32), p, "20 → 32 B fits its 32 B class");
        assert_eq!(
            A.realloc(p, l(32), 17),
            p,
            "32 → 17 B still needs more than half"
        );
        let q = A.realloc(p, l(17), 1000);
        assert_ne!(q, p);
        assert!((0..17).all(|i| q.add(i).read() == 0xAB));
        q.write_bytes(0xCD, 1000);
        let r = A.realloc(q, l(1000), 100);
        assert_ne!(r, q, "1000 → 100 B moves to a smaller class");
        assert!((0..100).all(|i| r.add(i).read() == 0xCD));
        let big = A.realloc(r, l(100), 3 << 20);
        assert!((0..100).all(|i| big.add(i).read() == 0xCD));
        big.add((3 << 20) - 1).write(1);
        let back = A.realloc(big, l(3 << 20), 200);
        assert!((0..100).all(|i| back.add(i).read() == 0xCD));
        A.dealloc(back, l(200));

        for &size in &class_sizes() {
            let p = A.alloc(l(size));
            p.write_bytes(0xFF, size);
            A.dealloc(p, l(size));
            // Every block comes zeroed, the dirty one just freed included.
            let (back, others) = alloc_until(p, || {
                let z = A.alloc_zeroed(l(size));
                assert!(
                    (0..size).all(|i| z.add(i).read() == 0),
                    "{size} B not zeroed"
                );
                z
            });
            assert!(back, "the block just freed comes back");
            A.dealloc(p, l(size));
            others.into_iter().for_each(|z| A.dealloc(z, l(size)));
        }
    }
}

/// Alignments above 16 are served from classes whose size is a multiple of the alignment.
#[test]
fn aligned_requests() {
    static A: Allocator<Fast> = Allocator::new();
    for align in [32usize, 64, 256, 4096, 16384, 65536] {
        for size in [1usize, 100, align, 3 * align + 5, 200_000] {
            let l = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size; freed with its layout.
            unsafe {
                let p = A.alloc(l);
                assert!(
                    !p.is_null() && p as usize % align == 0,
                    "{size} B at {align}"
                );
                p.write_bytes(1, size);
                A.dealloc(p, l);
            }
        }
    }
}
