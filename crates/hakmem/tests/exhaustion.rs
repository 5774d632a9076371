//! Running out of memory, in the mode the cargo features select (`Hakmem` is this binary's
//! global allocator; `cargo xtask test` runs it once per mode). Each case runs in a child
//! process whose address space is capped with `RLIMIT_AS` a little above what it already uses,
//! so `mmap` and `malloc` really fail; the test harness itself is never limited.
//!
//! - Allocations return null — never a crash, never an abort — on every path (large, small,
//!   zeroed, realloc, which also keeps the old block), and the allocator serves again once
//!   memory is freed: nearly as much as before, also in another size class (cached blocks must
//!   not keep the address space to themselves).
//! - Through std, a failed allocation reaches `handle_alloc_error`: `try_reserve` returns an
//!   error, and `Vec::with_capacity` ends the process with std's message and SIGABRT.
//!
//! Not under AddressSanitizer (`--cfg hakmem_sanitizer`): its shadow memory needs terabytes of
//! address space, so `RLIMIT_AS` cannot be lowered there.
#![cfg(not(hakmem_sanitizer))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{child_value, run_child, signal};
use hakmem::Hakmem;

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

const MIB: usize = 1 << 20;
/// Address space allowed beyond what the child uses when it sets the limit.
const HEADROOM: usize = 256 * MIB;

/// The address space this process has mapped, in bytes (`/proc/self/statm`, first field).
fn vm_size() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Lowers this process's soft `RLIMIT_AS` to `bytes`.
fn limit_address_space(bytes: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer; then a valid limit (the hard limit unchanged).
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut lim), 0);
        lim.rlim_cur = bytes as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &lim), 0);
    }
}

/// Allocates blocks of `layout` until one is null (at most `max`), each stamped with its id;
/// returns how many it got. Panics if none failed.
fn until_null(blocks: &mut Vec<(*mut u8, Layout, u64)>, layout: Layout, max: usize) -> usize {
    assert!(
        blocks.capacity() - blocks.len() >= max,
        "reserved beforehand"
    );
    for n in 0..max {
        // SAFETY: a valid layout with a non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        if p.is_null() {
            return n;
        }
        let id = blocks.len() as u64 + 1;
        // SAFETY: `p` holds `layout.size() >= 16` bytes; the first and last 8 are written.
        unsafe {
            p.cast::<u64>().write(id);
            p.add(layout.size() - 8)
                .cast::<[u8; 8]>()
                .write_unaligned(id.to_le_bytes());
        }
        blocks.push((p, layout, id));
    }
    panic!("{max} blocks of {layout:?} and still no null");
}

/// Checks and frees every block; returns the bytes freed.
fn free_all(blocks: &mut Vec<(*mut u8, Layout, u64)>) -> usize {
    let mut bytes = 0;
    for (p, layout, id) in blocks.drain(..) {
        // SAFETY: a live block of GLOBAL with this layout, stamped by `until_null`.
        unsafe {
            assert_eq!(p.cast::<u64>().read(), id);
            let tail = p.add(layout.size() - 8).cast::<[u8; 8]>().read_unaligned();
            assert_eq!(u64::from_le_bytes(tail), id);
            GLOBAL.dealloc(p, layout);
        }
        bytes += layout.size();
    }
    bytes
}

#[test]
#[ignore = "child process of allocation_fails_with_null_and_recovers"]
fn child_exhaust() {
    let large = Layout::from_size_align(3 * MIB, 16).unwrap();
    // A size class of its own (BigCache's 6 MiB: no rounding up), so that cached 3 MiB blocks
    // cannot serve it.
    let other_class = Layout::from_size_align(6 * MIB, 16).unwrap();
    let small = Layout::from_size_align(48 << 10, 16).unwrap();
    let mut blocks = Vec::with_capacity(1 << 16);
    limit_address_space(vm_size() + HEADROOM);

    // 1. Large blocks until the kernel refuses.
    let large_n = until_null(&mut blocks, large, 1000);
    // Every other large path fails the same way, and a failed realloc keeps its block.
    let (p, layout, id) = blocks[0];
    // SAFETY: valid layouts; a live block with its layout; the results are checked for null.
    unsafe {
        assert!(GLOBAL.alloc_zeroed(large).is_null(), "alloc_zeroed");
        let aligned = Layout::from_size_align(3 * MIB, 1 << 21).unwrap();
        assert!(GLOBAL.alloc(aligned).is_null(), "over-aligned");
        assert!(GLOBAL.realloc(p, layout, 64 * MIB).is_null(), "realloc");
        assert_eq!(
            p.cast::<u64>().read(),
            id,
            "a failed realloc keeps the block"
        );
    }
    // 2. Small blocks (the system allocator, or the pool) until it refuses too.
    let small_n = until_null(&mut blocks, small, 60_000);
    let held = blocks.len();
    // 3. Everything freed: large blocks of another size class (BigCache's blocks are of the
    // first class: they must not keep the address space from the second).
    free_all(&mut blocks);
    let again_n = until_null(&mut blocks, other_class, 1000);
    free_all(&mut blocks);
    // 4. And small blocks again.
    let small_again_n = until_null(&mut blocks, small, 60_000);
    free_all(&mut blocks);
    println!(
        "large={large_n} small={small_n} held={held} large_mib={} again_mib={} small_again={small_again_n}",
        large_n * large.size() / MIB,
        again_n * other_class.size() / MIB,
    );
}

#[test]
fn allocation_fails_with_null_and_recovers() {
    let out = run_child("child_exhaust", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    let value = |key| -> usize { child_value(&out, key).unwrap().parse().unwrap() };
    let (large, small) = (value("large"), value("small"));
    let (before, again, small_again) =
        (value("large_mib"), value("again_mib"), value("small_again"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("large=").map(|at| &l[at..]));
    println!(
        "exhaustion ({}): {}",
        GLOBAL.stats().policy,
        line.unwrap_or("?")
    );
    assert!(
        large >= 16,
        "{large} large blocks in {HEADROOM} bytes of headroom"
    );
    assert!(
        small >= 1,
        "the small path had room after the large one failed"
    );
    // Once everything is freed, another size class gets the address space back: all the large
    // blocks had, less at most two blocks of 6 MiB (rounding, alignment slack).
    assert!(
        again + 12 >= before,
        "{again} MiB of another size class, {before} MiB of large blocks before"
    );
    assert!(
        small_again >= small,
        "{small_again} small blocks, {small} before"
    );
}

#[test]
#[ignore = "child process of std_reaches_handle_alloc_error"]
fn child_vec_exhaust() {
    let mut v: Vec<u8> = Vec::new();
    limit_address_space(vm_size() + 64 * MIB);
    assert!(v.try_reserve(1 << 30).is_err());
    println!("try_reserve=error");
    // Beyond the limit: the allocator returns null, std calls `handle_alloc_error`, whose
    // default prints its message and aborts.
    let big: Vec<u8> = Vec::with_capacity(1 << 30);
    println!("not_reached={}", big.capacity());
}

#[test]
fn std_reaches_handle_alloc_error() {
    let out = run_child("child_vec_exhaust", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(child_value(&out, "try_reserve").as_deref(), Some("error"));
    assert_eq!(signal(&out), Some(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("memory allocation of 1073741824 bytes failed"),
        "std's message: {stderr}"
    );
    assert_eq!(child_value(&out, "not_reached"), None);
}
