//! Misuse death tests, in the mode the cargo features select (`Hakmem` is this binary's global
//! allocator; `cargo xtask test` runs it once per mode): each case runs in a child process,
//! which must end with SIGABRT and exactly one line of hakmem's, naming the pointer and the
//! problem (`double free`, `invalid pointer`, `corrupted header`).
//!
//! Blocks with a header in every mode are used everywhere: over-aligned small blocks (4 KiB
//! alignment: the system allocator behind a header, a page into the `malloc` chunk), large
//! blocks (mmap-backed; with BigCache a freed one stays mapped), pointers hakmem never returned.
//! Plain small blocks are used only in the modes without a pool (MINIMAL, LEARNING, RESEARCH):
//! where the mode has a pool, small blocks may have no header, and what can be detected there is
//! the pool's to say (docs/reliability.md).
//!
//! Not under AddressSanitizer: it reports the allocator's read of a freed block's header itself.
#![cfg(not(hakmem_sanitizer))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{child_value, hakmem_lines, run_child, signal};
use hakmem::{Hakmem, Policy, Selected};

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

const MIB: usize = 1 << 20;

/// The block each child misuses, named by `MISUSE_BLOCK`.
fn block_layout() -> Layout {
    match std::env::var("MISUSE_BLOCK").as_deref() {
        // The system path in every mode (below every threshold), with a header a page into the
        // malloc chunk: past what glibc writes into a freed chunk.
        Ok("aligned") => Layout::from_size_align(64 << 10, 4096).unwrap(),
        // A plain small block (modes without a pool only).
        Ok("small") => Layout::from_size_align(100, 16).unwrap(),
        // A large block: at or above every mode's threshold; a BigCache class block where the
        // mode has BigCache.
        Ok("large") => Layout::from_size_align(2 * MIB, 16).unwrap(),
        // Large, beyond BigCache's classes: released to the OS at once when freed.
        Ok("huge") => Layout::from_size_align(32 * MIB, 16).unwrap(),
        other => panic!("MISUSE_BLOCK={other:?}"),
    }
}

/// Allocates the block named by `MISUSE_BLOCK`, with neighbours that keep it away from the
/// system allocator's top chunk.
fn misused_block() -> (*mut u8, Layout) {
    let layout = block_layout();
    // SAFETY: a valid layout with a non-zero size; the neighbours are leaked on purpose.
    let p = unsafe {
        std::hint::black_box(GLOBAL.alloc(layout));
        let p = GLOBAL.alloc(layout);
        std::hint::black_box(GLOBAL.alloc(layout));
        p
    };
    assert!(!p.is_null());
    // SAFETY: `p` holds `layout.size()` bytes.
    unsafe { p.write_bytes(0x5A, layout.size()) };
    (p, layout)
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_double_free() {
    let (p, layout) = misused_block();
    println!("ptr={p:p}");
    // SAFETY: deliberately broken: the second free.
    unsafe {
        GLOBAL.dealloc(p, layout);
        GLOBAL.dealloc(p, layout);
    }
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_stack_pointer() {
    let mut local = [0u128; 4];
    let p = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
    println!("ptr={p:p}");
    // SAFETY: deliberately broken: a pointer hakmem never returned.
    unsafe { GLOBAL.dealloc(p, Layout::from_size_align(16, 16).unwrap()) };
    std::hint::black_box(&mut local);
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_foreign_heap_pointer() {
    // SAFETY: a plain malloc; deliberately broken: freed through hakmem.
    unsafe {
        let p = libc::malloc(256).cast::<u8>();
        assert!(!p.is_null());
        println!("ptr={p:p}");
        GLOBAL.dealloc(p, Layout::from_size_align(256, 16).unwrap());
    }
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_interior_pointer() {
    let (p, layout) = misused_block();
    // SAFETY: deliberately broken: a pointer into the block, not its start.
    unsafe {
        let inner = p.add(64);
        println!("ptr={inner:p}");
        GLOBAL.dealloc(inner, layout);
    }
}

/// Overwrites bytes just before the block, as a buffer underflow would: `MISUSE_AT` bytes
/// before the user pointer, `MISUSE_LEN` of them, with `MISUSE_BYTE`.
#[test]
#[ignore = "child process of the misuse tests"]
fn child_underflow() {
    let env = |k: &str| -> usize { std::env::var(k).unwrap().parse().unwrap() };
    let (at, len, byte) = (env("MISUSE_AT"), env("MISUSE_LEN"), env("MISUSE_BYTE"));
    let (p, layout) = misused_block();
    println!("ptr={p:p}");
    // SAFETY: deliberately broken: the header (16 bytes before `p`, inside the block's
    // allocation) is overwritten.
    unsafe {
        p.sub(at).write_bytes(byte as u8, len);
        GLOBAL.dealloc(p, layout);
    }
}

/// Runs `child` with `env`, expects SIGABRT and one hakmem line naming `free(<ptr>)` and
/// `problem`; returns the line.
fn expect_abort(child: &str, env: &[(&str, &str)], problem: &str) -> String {
    let mut vars: Vec<(&str, Option<&str>)> = env.iter().map(|&(k, v)| (k, Some(v))).collect();
    // A Runtime child reads the same mode as this process.
    let mode = std::env::var("HAKMEM_MODE").ok();
    vars.push(("HAKMEM_MODE", mode.as_deref()));
    let out = run_child(child, &vars);
    let what = format!("{child} {env:?}");
    let ptr = child_value(&out, "ptr").unwrap_or_else(|| panic!("{what}: no pointer printed"));
    assert_eq!(
        signal(&out),
        Some(libc::SIGABRT),
        "{what}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = hakmem_lines(&out);
    assert_eq!(lines.len(), 1, "{what}: {lines:?}");
    let line = lines.into_iter().next().unwrap();
    assert!(
        line.contains(&format!("free({ptr})")),
        "{what}: names the pointer: {line}"
    );
    assert!(line.contains(problem), "{what}: names {problem:?}: {line}");
    line
}

/// The blocks with a header in this mode, whatever the size (see the module docs).
fn header_blocks() -> Vec<&'static str> {
    let mut blocks = vec!["aligned", "large"];
    if !Selected::config().pool {
        blocks.push("small");
    }
    blocks
}

#[test]
fn double_free_aborts() {
    let cfg = Selected::config();
    expect_abort(
        "child_double_free",
        &[("MISUSE_BLOCK", "aligned")],
        "double free",
    );
    if cfg.bigcache {
        // The freed block is in the cache, still mapped, its header tagged freed.
        expect_abort(
            "child_double_free",
            &[("MISUSE_BLOCK", "large")],
            "double free",
        );
    }
    if !cfg.pool {
        // glibc keeps its free-list links in the 16 bytes before a plain block (where the
        // header was): the freed tag is gone, so the second free is an invalid pointer, and the
        // message says a released block is one cause.
        let line = expect_abort(
            "child_double_free",
            &[("MISUSE_BLOCK", "small")],
            "invalid pointer",
        );
        assert!(line.contains("already released"), "{line}");
    }
}

/// A block released to the OS has no header left to read: a second free faults (SIGSEGV),
/// it does not go on silently. (Every mode's blocks above BigCache's largest class, and, in a
/// mode without BigCache, every large block.)
#[test]
fn double_free_of_an_unmapped_block_faults() {
    let mut blocks = vec!["huge"];
    if !Selected::config().bigcache {
        blocks.push("large");
    }
    let mode = std::env::var("HAKMEM_MODE").ok();
    for block in blocks {
        let out = run_child(
            "child_double_free",
            &[
                ("MISUSE_BLOCK", Some(block)),
                ("HAKMEM_MODE", mode.as_deref()),
            ],
        );
        assert_eq!(
            signal(&out),
            Some(libc::SIGSEGV),
            "{block}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn foreign_pointers_abort() {
    expect_abort("child_free_stack_pointer", &[], "invalid pointer");
    expect_abort("child_free_foreign_heap_pointer", &[], "invalid pointer");
    for block in ["aligned", "large"] {
        expect_abort(
            "child_free_interior_pointer",
            &[("MISUSE_BLOCK", block)],
            "invalid pointer",
        );
    }
}

/// An underflow that reaches the tag (the header's last 4 bytes, right before the block)
/// destroys the magic: nothing tells the block from a foreign pointer any more, and the
/// message names a header overwritten as one cause.
#[test]
fn smashed_header_aborts() {
    for block in header_blocks() {
        let line = expect_abort(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "16"),
                ("MISUSE_LEN", "16"),
                ("MISUSE_BYTE", "65"),
            ],
            "invalid pointer",
        );
        assert!(line.contains("header overwritten"), "{line}");
    }
}

/// A header whose magic survived but whose other fields did not is a corrupted header: the
/// method and offset bytes (a stray write into the tag's low half), or the length (a stray
/// write 9-16 bytes before the block). A length only matters where it is used to release
/// memory: large blocks in every mode, and small blocks where the mode poisons freed memory.
#[test]
fn corrupted_header_aborts() {
    for block in header_blocks() {
        // The tag's two low bytes: log2(offset) and the method.
        expect_abort(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "4"),
                ("MISUSE_LEN", "2"),
                ("MISUSE_BYTE", "119"),
            ],
            "corrupted header",
        );
    }
    let mut len_checked = vec!["large"];
    if Selected::config().poison && !Selected::config().pool {
        len_checked.extend(["small", "aligned"]);
    }
    for block in len_checked {
        // The length's high bytes.
        expect_abort(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "12"),
                ("MISUSE_LEN", "4"),
                ("MISUSE_BYTE", "17"),
            ],
            "corrupted header",
        );
    }
}
