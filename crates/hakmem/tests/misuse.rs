//! Misuse caught by the header check ends the process with SIGABRT and one line naming the
//! pointer and the problem. Each case runs in a child process. (The full catalogue of death
//! tests belongs to the reliability work; these pin down the messages of the core.)

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{child_value, hakmem_lines, run_child, signal};
use hakmem::mode::{Minimal, Research};
use hakmem::Allocator;

static MINIMAL: Allocator<Minimal> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();

fn allocator() -> &'static dyn GlobalAlloc {
    match std::env::var("MISUSE_POLICY").as_deref() {
        Ok("research") => &RESEARCH,
        _ => &MINIMAL,
    }
}

fn report(p: *mut u8) {
    println!("ptr={p:p}");
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_corrupt_header() {
    let a = allocator();
    let size: usize = std::env::var("MISUSE_SIZE").unwrap().parse().unwrap();
    let layout = Layout::from_size_align(size, 16).unwrap();
    // SAFETY: deliberately broken: the header before the block is overwritten, as a buffer
    // underflow would.
    unsafe {
        let p = a.alloc(layout);
        report(p);
        p.sub(4).write_bytes(0x41, 4);
        a.dealloc(p, layout);
    }
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_stack_pointer() {
    let mut local = [0u128; 4];
    let p = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
    report(p);
    // SAFETY: deliberately broken: a pointer hakmem never returned.
    unsafe { allocator().dealloc(p, Layout::from_size_align(16, 16).unwrap()) };
    std::hint::black_box(&mut local);
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_double_free_large() {
    // The freed tag survives where nothing writes over the header after the first free. An
    // over-aligned system block has its header a page into the malloc chunk, past the bytes
    // glibc's free lists write, so the second free finds the tag intact. (A plain block's header
    // is where glibc keeps its free-list pointers: a second free of one is reported as an
    // invalid pointer; see docs/design.md.)
    let a = allocator();
    let layout = Layout::from_size_align(64 << 10, 4096).unwrap();
    // SAFETY: deliberately broken: the second free.
    unsafe {
        let keep = a.alloc(layout); // keeps the first block away from glibc's top chunk
        let p = a.alloc(layout);
        let guard = a.alloc(layout);
        report(p);
        a.dealloc(p, layout);
        a.dealloc(p, layout);
        std::hint::black_box((keep, guard));
    }
}

fn expect_abort(child: &str, policy: &str, size: &str, problem: &str) {
    let out = run_child(
        child,
        &[("MISUSE_POLICY", Some(policy)), ("MISUSE_SIZE", Some(size))],
    );
    let ptr = child_value(&out, "ptr").expect("child printed its pointer");
    assert_eq!(
        signal(&out),
        Some(libc::SIGABRT),
        "{child}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = hakmem_lines(&out);
    assert_eq!(lines.len(), 1, "{child}: {lines:?}");
    assert!(
        lines[0].contains(&format!("free({ptr})")),
        "{child}: names the pointer: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(problem),
        "{child}: names {problem:?}: {}",
        lines[0]
    );
}

#[test]
fn corrupted_header_aborts() {
    for policy in ["minimal", "research"] {
        // Small (system) and large (mmap) blocks.
        for size in ["100", "4194304"] {
            expect_abort("child_corrupt_header", policy, size, "invalid pointer");
        }
    }
}

#[test]
fn foreign_pointer_aborts() {
    for policy in ["minimal", "research"] {
        expect_abort("child_free_stack_pointer", policy, "0", "invalid pointer");
    }
}

#[test]
fn double_free_aborts() {
    expect_abort("child_double_free_large", "minimal", "0", "double free");
}
