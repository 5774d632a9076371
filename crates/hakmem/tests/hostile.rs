//! Hostile layouts, for every policy: sizes near `isize::MAX`, sizes whose header or page
//! rounding overflows, alignments up to 1 GiB, requests the kernel must refuse. Every failure is
//! a null pointer (never a panic or an abort) and leaves the allocator working.

use std::alloc::{GlobalAlloc, Layout};

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::{Allocator, Policy};

fn refuses<P: Policy>(a: &Allocator<P>, size: usize, align: usize) {
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: a valid layout with a non-zero size.
    let p = unsafe { a.alloc(layout) };
    assert!(
        p.is_null(),
        "{}: {size} bytes align {align} should fail",
        P::NAME
    );
    // SAFETY: as above.
    let p = unsafe { a.alloc_zeroed(layout) };
    assert!(
        p.is_null(),
        "{}: zeroed {size} bytes align {align} should fail",
        P::NAME
    );
}

fn serves<P: Policy>(a: &Allocator<P>, size: usize, align: usize) {
    let layout = Layout::from_size_align(size, align).unwrap();
    for zeroed in [false, true] {
        // SAFETY: a valid layout with a non-zero size.
        let p = unsafe {
            if zeroed {
                a.alloc_zeroed(layout)
            } else {
                a.alloc(layout)
            }
        };
        assert!(!p.is_null(), "{}: {size} bytes align {align}", P::NAME);
        assert_eq!(
            p as usize % align,
            0,
            "{}: {p:p} not aligned to {align}",
            P::NAME
        );
        // SAFETY: `p` holds `size` bytes.
        unsafe {
            if zeroed {
                assert_eq!(p.read(), 0);
                assert_eq!(p.add(size - 1).read(), 0);
            }
            p.write(1);
            p.add(size - 1).write(2);
            a.dealloc(p, layout);
        }
    }
}

fn hostile<P: Policy>() {
    let a = Allocator::<P>::new();
    let max = isize::MAX as usize;
    // Near isize::MAX, with every alignment class of the routing.
    refuses(&a, max - 15, 16);
    refuses(&a, max, 1);
    refuses(&a, max - 4095, 4096);
    refuses(&a, (max - (1 << 30)) & !((1 << 30) - 1), 1 << 30);
    // size + header overflows isize, then usize after page rounding.
    refuses(&a, max - 8, 1);
    refuses(&a, max - 100, 8);
    // Fits the arithmetic, but no machine maps 64 TiB.
    refuses(&a, 1 << 46, 16);
    refuses(&a, 1 << 46, 1 << 21);
    // Huge alignments are served, on both sides of the threshold.
    serves(&a, 1, 1 << 30);
    serves(&a, 3 << 20, 1 << 30);
    serves(&a, 100, 1 << 16);
    serves(&a, 100, 4096);
    serves(&a, 5000, 8192);
    // The allocator still works, and realloc to an impossible size fails without harm.
    let layout = Layout::from_size_align(1000, 8).unwrap();
    // SAFETY: valid layout; the block is freed below.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        p.write_bytes(7, 1000);
        assert!(
            a.realloc(p, layout, max - 7).is_null(),
            "{}: realloc to isize::MAX",
            P::NAME
        );
        assert!(
            a.realloc(p, layout, 1 << 46).is_null(),
            "{}: realloc to 64 TiB",
            P::NAME
        );
        assert_eq!(
            p.add(999).read(),
            7,
            "{}: failed realloc kept the block",
            P::NAME
        );
        a.dealloc(p, layout);
    }
}

#[test]
fn hostile_minimal() {
    hostile::<Minimal>();
}

#[test]
fn hostile_fast() {
    hostile::<Fast>();
}

#[test]
fn hostile_balanced() {
    hostile::<Balanced>();
}

#[test]
fn hostile_learning() {
    hostile::<Learning>();
}

#[test]
fn hostile_research() {
    hostile::<Research>();
}

#[test]
fn hostile_runtime() {
    hostile::<Runtime>();
}

/// `alloc_at` accepts a zero-sized layout (it is our API, not `GlobalAlloc`'s) and gives
/// distinct, freeable blocks.
#[test]
fn zero_sized_alloc_at() {
    let a = Allocator::<Balanced>::new();
    let layout = Layout::from_size_align(0, 1).unwrap();
    // SAFETY: `alloc_at` allows zero sizes; both blocks are freed.
    unsafe {
        let p = a.alloc_at(layout, hakmem::Site::caller());
        let q = a.alloc_at(layout, hakmem::Site::caller());
        assert!(!p.is_null() && !q.is_null() && p != q);
        a.dealloc(p, layout);
        a.dealloc(q, layout);
    }
}
