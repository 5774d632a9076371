//! The entry points without a `Layout` (`usable_size`, `free`, `realloc_ptr`: what a C shim
//! needs), for every policy: every block kind (pool blocks of every class and served alignment,
//! plain and over-aligned system blocks, fresh mappings, BigCache class blocks,
//! huge-page-aligned mappings), null, zero sizes, moves across pool classes, out of the pool and
//! across the mmap threshold, frees from other threads, failures that leave the block alone, and
//! misuse reports.

mod common;

use common::alloc_until;

use std::alloc::{GlobalAlloc, Layout};

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::{Allocator, Policy, Site};

/// Sizes on every path: small, around FAST/BALANCED's threshold (512 KiB), around MINIMAL's
/// (2 MiB), BigCache classes and beyond them.
const SIZES: [usize; 11] = [
    0,
    1,
    100,
    4096,
    (512 << 10) - 1,
    512 << 10,
    (1 << 20) + 5,
    2 << 20,
    (3 << 20) + 1,
    (16 << 20) + 1,
    40 << 20,
];

const ALIGNS: [usize; 5] = [1, 16, 64, 4096, 1 << 21];

/// The offsets a pattern covers: every byte of a small block; of a large one, every 4093rd byte
/// and the last 64 (byte by byte would dominate a debug test run).
fn offsets(n: usize) -> impl Iterator<Item = usize> {
    let step = if n <= 64 << 10 { 1 } else { 4093 };
    (0..n).step_by(step).chain(n.saturating_sub(64)..n)
}

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in offsets(n) {
        // SAFETY: the caller's block holds `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

/// Whether the first `n` bytes of `p` still hold what `fill(p, filled, seed)` wrote.
fn holds(p: *const u8, filled: usize, n: usize, seed: u8) -> bool {
    offsets(filled)
        .filter(|&i| i < n)
        // SAFETY: the caller's block holds `n` bytes.
        .all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

fn usable_and_free<P: Policy>(a: &Allocator<P>) {
    // SAFETY: null is allowed by both.
    unsafe {
        assert_eq!(a.usable_size(std::ptr::null()), 0);
        a.free(std::ptr::null_mut());
    }
    for size in SIZES {
        for align in ALIGNS {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: `alloc_at` accepts any valid layout, zero-sized ones included.
            let p = unsafe { a.alloc_at(layout, Site::NONE) };
            assert!(!p.is_null(), "{}: {size} B align {align}", P::NAME);
            assert_eq!(p as usize % align, 0);
            // SAFETY: a live block of `a`.
            let usable = unsafe { a.usable_size(p) };
            assert!(usable >= size, "{}: usable {usable} < {size}", P::NAME);
            // Every usable byte is the caller's: writing all of them must be harmless.
            fill(p, usable, 3);
            // SAFETY: a live block of `a`, freed once.
            unsafe { a.free(p) };
        }
    }
}

fn realloc_keeps_contents<P: Policy>(a: &Allocator<P>) {
    // Grow and shrink across both thresholds and the BigCache classes.
    let steps = [
        1usize,
        100,
        5000,
        600 << 10,
        (1 << 20) + 7,
        9 << 20,
        40 << 20,
        (2 << 20) + 3,
        700 << 10,
        3000,
        33,
    ];
    // SAFETY: realloc of null is an allocation; every later pointer is the live result.
    unsafe {
        let mut p = a.realloc_ptr(std::ptr::null_mut(), steps[0]);
        assert!(!p.is_null());
        fill(p, steps[0], 9);
        for w in steps.windows(2) {
            let (old, new) = (w[0], w[1]);
            let q = a.realloc_ptr(p, new);
            assert!(!q.is_null(), "{}: {old} -> {new}", P::NAME);
            assert_eq!(q as usize % 16, 0);
            assert!(
                holds(q, old, old.min(new), 9),
                "{}: {old} -> {new}",
                P::NAME
            );
            assert!(a.usable_size(q) >= new);
            fill(q, new, 9);
            p = q;
        }
        // Failure: null, and the block is intact.
        for huge in [usize::MAX, isize::MAX as usize, 1 << 50] {
            assert!(a.realloc_ptr(p, huge).is_null(), "{}: {huge}", P::NAME);
        }
        assert!(holds(p, 33, 33, 9));
        // A zero size gives a unique block.
        let z = a.realloc_ptr(p, 0);
        assert!(!z.is_null());
        a.free(z);
        // An over-aligned block moves into a 16-aligned one, contents kept.
        let layout = Layout::from_size_align(100, 4096).unwrap();
        let p = a.alloc(layout);
        fill(p, 100, 1);
        let q = a.realloc_ptr(p, 5000);
        assert!(!q.is_null() && holds(q, 100, 100, 1));
        a.free(q);
    }
}

fn mixes_with_global_alloc<P: Policy>(a: &Allocator<P>) {
    // Blocks from `GlobalAlloc` can be freed without their layout, and blocks resized by
    // `realloc_ptr` can go back through `dealloc` with a layout of their usable size.
    for size in [24usize, 3 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: valid layouts; each block is freed once.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null() && holds_zero(p, size));
            a.free(p);
            let p = a.realloc_ptr(std::ptr::null_mut(), size);
            let usable = a.usable_size(p);
            a.dealloc(p, Layout::from_size_align(usable, 16).unwrap());
        }
    }
}

// ---- pool blocks (FAST, BALANCED, and the runtime twin when its mode has the pool) -------------

/// The pool's class sizes (docs/pool.md): multiples of 16 up to 128 B, then four per doubling
/// up to 512 KiB.
fn pool_classes() -> Vec<usize> {
    (0..56usize)
        .map(|c| {
            if c < 8 {
                (c + 1) * 16
            } else {
                let b = 7 + (c - 8) / 4;
                (1 << b) + ((c - 8) % 4 + 1) * (1 << (b - 2))
            }
        })
        .collect()
}

/// The usable size of the pool block serving `size` bytes at `align`: the smallest class that
/// holds it and whose size is a multiple of the alignment (every class is 16-aligned).
fn pool_usable(size: usize, align: usize) -> usize {
    pool_classes()
        .into_iter()
        .find(|&c| c >= size.max(1) && c % align.max(16) == 0)
        .expect("a pool size")
}

/// Every class (its smallest and largest request), at every alignment the pool serves: the
/// block is a pool block (its usable size is its class's, where a header block's would be the
/// request), every usable byte can be written, and `free` takes it back (the same block comes
/// back for the same request).
fn pool_blocks_by_address<P: Policy>(a: &Allocator<P>) {
    let classes = pool_classes();
    let mut sizes = vec![0usize];
    for (i, &c) in classes.iter().enumerate() {
        sizes.push(if i == 0 { 1 } else { classes[i - 1] + 1 });
        sizes.push(c);
    }
    sizes.retain(|&s| s < 512 << 10); // the threshold: 512 KiB itself is a mapping
    for &size in &sizes {
        for align in [1usize, 16, 64, 4096, 65536] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a valid layout; every block is written within its usable size and freed
            // once.
            unsafe {
                let p = a.alloc_at(layout, Site::NONE);
                assert!(
                    !p.is_null() && p as usize % align == 0,
                    "{size} B at {align}"
                );
                let usable = a.usable_size(p);
                assert_eq!(
                    usable,
                    pool_usable(size, align),
                    "{}: {size} B at {align} is a pool block of its class",
                    P::NAME
                );
                fill(p, usable, size as u8);
                assert!(holds(p, usable, usable, size as u8));
                a.free(p);
                let (back, others) = alloc_until(p, || a.alloc_at(layout, Site::NONE));
                assert!(back, "{}: {size} B at {align}: freed to the pool", P::NAME);
                a.free(p);
                others.into_iter().for_each(|q| a.free(q));
            }
        }
    }
}

/// realloc_ptr of pool blocks: in place while the new size fits the class and needs more than
/// half of it; otherwise a move (to a smaller or larger class, out of the pool into a mapping,
/// and back) that keeps the contents and gives the old block back to the pool: the largest
/// class's block (usable size exactly the pool's largest) is taken back by the pool, not sent
/// to the mapping path.
fn pool_realloc<P: Policy>(a: &Allocator<P>) {
    // SAFETY: every pointer is the live result of the previous call.
    unsafe {
        let p = a.realloc_ptr(std::ptr::null_mut(), 100);
        assert_eq!(a.usable_size(p), 112);
        fill(p, 100, 5);
        assert_eq!(a.realloc_ptr(p, 112), p, "fits its class");
        assert_eq!(a.realloc_ptr(p, 57), p, "still more than half of 112");
        let q = a.realloc_ptr(p, 50);
        assert_ne!(q, p, "to the 64 B class");
        assert_eq!(a.usable_size(q), 64);
        assert!(holds(q, 100, 50, 5));
        let (back, others) = alloc_until(p, || a.realloc_ptr(std::ptr::null_mut(), 100));
        assert!(back, "the 112 B block went back to the pool");
        a.free(p);
        others.into_iter().for_each(|q| a.free(q));
        // Up through the classes, out of the pool, and back.
        let mut p = q;
        let mut len = 50;
        for (new, usable) in [
            (1000, 1024),
            (300_000, 327_680),
            ((512 << 10) - 1, 512 << 10),
        ] {
            let n = a.realloc_ptr(p, new);
            assert!(!n.is_null());
            assert_eq!(a.usable_size(n), usable, "{new} B");
            assert!(holds(n, len, len, 5), "{len} -> {new} B");
            fill(n, new, 5);
            p = n;
            len = new;
        }
        let top = p;
        let out = a.realloc_ptr(top, 600 << 10);
        assert!(!out.is_null() && out != top);
        assert!(a.usable_size(out) >= 600 << 10);
        assert!(holds(out, len, len, 5), "out of the pool");
        let (back, others) = alloc_until(top, || a.realloc_ptr(std::ptr::null_mut(), 500_000));
        assert!(back, "the pool took its largest block back");
        a.free(top);
        others.into_iter().for_each(|q| a.free(q));
        let back = a.realloc_ptr(out, 200);
        assert_eq!(a.usable_size(back), 224, "back into the pool");
        assert!(holds(back, 200, 200, 5));
        a.free(back);
        // An over-aligned pool block reallocates too, contents kept.
        let al = a.alloc(Layout::from_size_align(3000, 4096).unwrap());
        assert_eq!(a.usable_size(al), 4096);
        fill(al, 3000, 8);
        let moved = a.realloc_ptr(al, 5000);
        assert!(holds(moved, 3000, 3000, 8));
        a.free(moved);
    }
}

/// Pool blocks made on one thread are measured, resized and freed without a layout on another
/// (the remote path), and blocks freed that way come back to their owner.
fn pool_blocks_cross_threads<P: Policy>(a: &'static Allocator<P>) {
    let sizes = [16usize, 100, 1000, 24_000, 300_000];
    let made = std::thread::spawn(move || {
        sizes
            .iter()
            .map(|&size| {
                // SAFETY: a valid size; the block crosses to the other thread as an address.
                let p = unsafe { a.realloc_ptr(std::ptr::null_mut(), size) };
                fill(p, size, 7);
                p as usize
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    // The owner has exited; its heap is an orphan, the blocks still live.
    for (&size, &p) in sizes.iter().zip(&made) {
        let p = p as *mut u8;
        // SAFETY: live blocks of `a`, each resized or freed once.
        unsafe {
            assert_eq!(a.usable_size(p), pool_usable(size, 16));
            assert!(holds(p, size, size, 7));
            if size == 1000 {
                let q = a.realloc_ptr(p, 2000);
                assert!(holds(q, size, size, 7));
                a.free(q);
            } else {
                a.free(p);
            }
        }
    }
    // And from a live owner to another thread.
    // SAFETY: a valid size; freed once, on the other thread.
    let p = unsafe { a.realloc_ptr(std::ptr::null_mut(), 48) } as usize;
    std::thread::spawn(move || {
        // SAFETY: a live block of `a`.
        unsafe {
            assert_eq!(a.usable_size(p as *const u8), 48);
            a.free(p as *mut u8);
        }
    })
    .join()
    .unwrap();
}

/// `a` is a test's own static: the pool's blocks outlive the threads that made them, and a
/// leaked box would be a leak to valgrind's memcheck.
fn pool_entry_points<P: Policy>(a: &'static Allocator<P>) {
    if !P::config().pool {
        return; // MINIMAL (or the runtime twin in MINIMAL)
    }
    pool_blocks_by_address(a);
    pool_realloc(a);
    pool_blocks_cross_threads(a);
}

// One allocator per mode for this file's tests, the pool's and the others': each pool reserves a
// 16 GiB region, and valgrind's address space holds six (docs/reliability.md), so that
// `cargo xtask sanitizers --memcheck` runs these tests as they are.
static MINIMAL: Allocator<Minimal> = Allocator::new();
static FAST: Allocator<Fast> = Allocator::new();
static BALANCED: Allocator<Balanced> = Allocator::new();
static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();
static RUNTIME: Allocator<Runtime> = Allocator::new();

#[test]
fn fast_pool_blocks() {
    pool_entry_points(&FAST);
}

#[test]
fn balanced_pool_blocks() {
    pool_entry_points(&BALANCED);
}

#[test]
fn learning_pool_blocks() {
    pool_entry_points(&LEARNING);
}

#[test]
fn research_pool_blocks() {
    pool_entry_points(&RESEARCH);
}

/// The runtime twin with the pool when `HAKMEM_MODE` names a pool mode (unset: BALANCED).
#[test]
fn runtime_pool_blocks() {
    pool_entry_points(&RUNTIME);
}

fn holds_zero(p: *const u8, n: usize) -> bool {
    // SAFETY: the caller's block holds `n` bytes.
    offsets(n).all(|i| unsafe { p.add(i).read() } == 0)
}

fn every_entry_point<P: Policy>(a: &'static Allocator<P>) {
    usable_and_free(a);
    realloc_keeps_contents(a);
    mixes_with_global_alloc(a);
}

#[test]
fn minimal() {
    every_entry_point(&MINIMAL);
}

#[test]
fn fast() {
    every_entry_point(&FAST);
}

#[test]
fn balanced() {
    every_entry_point(&BALANCED);
}

#[test]
fn learning() {
    every_entry_point(&LEARNING);
}

#[test]
fn research() {
    every_entry_point(&RESEARCH);
}

#[test]
fn runtime() {
    every_entry_point(&RUNTIME);
}

// ---- misuse: each in a child process, which must abort with one line --------------------------

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_double_free_without_layout() {
    static A: Allocator<Minimal> = Allocator::new();
    let layout = Layout::from_size_align(100, 64).unwrap();
    // SAFETY: deliberate misuse: the second free must be reported (the over-aligned block's
    // header survives the first).
    unsafe {
        let p = A.alloc(layout);
        A.free(p);
        A.free(p);
    }
}

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_pool_double_free_without_layout() {
    static A: Allocator<Balanced> = Allocator::new();
    // SAFETY: deliberate misuse: the second free of a pool block (no header) must be reported.
    unsafe {
        let p = A.realloc_ptr(std::ptr::null_mut(), 100);
        A.free(p);
        A.free(p);
    }
}

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_pool_usable_size_of_interior_pointer() {
    static A: Allocator<Fast> = Allocator::new();
    // SAFETY: deliberate misuse: an address inside a pool block is no block.
    unsafe {
        let p = A.realloc_ptr(std::ptr::null_mut(), 100);
        A.usable_size(p.add(16));
    }
}

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_pool_realloc_of_interior_pointer() {
    static A: Allocator<Fast> = Allocator::new();
    // SAFETY: deliberate misuse, as above, through realloc.
    unsafe {
        let p = A.realloc_ptr(std::ptr::null_mut(), 1000);
        A.realloc_ptr(p.add(512), 2000);
    }
}

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_usable_size_of_foreign_pointer() {
    static A: Allocator<Balanced> = Allocator::new();
    let on_stack = [0u128; 4];
    // SAFETY: deliberate misuse: 16 readable bytes precede the pointer, but no header.
    unsafe { A.usable_size(on_stack.as_ptr().add(2).cast()) };
}

#[test]
fn free_reports_misuse() {
    for (name, needle) in [
        (
            "child_double_free_without_layout",
            "): double free detected",
        ),
        (
            "child_usable_size_of_foreign_pointer",
            "hakmem: usable_size(0x",
        ),
        (
            "child_pool_double_free_without_layout",
            "): double free detected (pool block)",
        ),
        (
            "child_pool_usable_size_of_interior_pointer",
            "hakmem: usable_size(0x",
        ),
        (
            "child_pool_realloc_of_interior_pointer",
            "hakmem: realloc(0x",
        ),
    ] {
        if cfg!(hakmem_sanitizer) && name == "child_double_free_without_layout" {
            // A system block: AddressSanitizer reports hakmem's read of the freed block's header
            // (its own malloc's memory) before hakmem can (misuse.rs is off there for the same
            // reason). The pool's cases are in hakmem's own region, which ASan does not track.
            continue;
        }
        let out = common::run_child(name, &[]);
        assert_eq!(common::signal(&out), Some(6), "{name}: SIGABRT");
        let lines = common::hakmem_lines(&out);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].contains(needle), "{name}: {lines:?}");
    }
}
