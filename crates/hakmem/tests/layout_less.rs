//! The entry points without a `Layout` (`usable_size`, `free`, `realloc_ptr`: what a C shim
//! needs), for every policy: every block kind (plain and over-aligned system blocks, fresh
//! mappings, BigCache class blocks, huge-page-aligned mappings), null, zero sizes, moves across
//! the mmap threshold, failures that leave the block alone, and misuse reports.

mod common;

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

fn holds_zero(p: *const u8, n: usize) -> bool {
    // SAFETY: the caller's block holds `n` bytes.
    offsets(n).all(|i| unsafe { p.add(i).read() } == 0)
}

fn every_entry_point<P: Policy>() {
    let a: &'static Allocator<P> = Box::leak(Box::new(Allocator::new()));
    usable_and_free(a);
    realloc_keeps_contents(a);
    mixes_with_global_alloc(a);
}

#[test]
fn minimal() {
    every_entry_point::<Minimal>();
}

#[test]
fn fast() {
    every_entry_point::<Fast>();
}

#[test]
fn balanced() {
    every_entry_point::<Balanced>();
}

#[test]
fn learning() {
    every_entry_point::<Learning>();
}

#[test]
fn research() {
    every_entry_point::<Research>();
}

#[test]
fn runtime() {
    every_entry_point::<Runtime>();
}

// ---- misuse: each in a child process, which must abort with one line --------------------------

#[test]
#[ignore = "run by free_reports_misuse in a child process"]
fn child_double_free_without_layout() {
    static A: Allocator<Balanced> = Allocator::new();
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
    ] {
        let out = common::run_child(name, &[]);
        assert_eq!(common::signal(&out), Some(6), "{name}: SIGABRT");
        let lines = common::hakmem_lines(&out);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].contains(needle), "{name}: {lines:?}");
    }
}
