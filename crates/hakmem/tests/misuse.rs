//! Misuse death tests, in the mode the cargo features select (`cargo xtask test` runs this binary
//! once per mode): each case runs in a child process, which must end with SIGABRT and exactly
//! one line of hakmem's, naming the pointer and the problem (`double free`, `invalid pointer`,
//! `corrupted header`). docs/reliability.md has the table: case by mode, with the messages.
//!
//! The misused blocks come from `MISUSE`, an instance of `Hakmem` (the selected mode) that only
//! the misuse touches, so that the pool's spans hold the test's blocks alone. Small blocks are
//! what the mode makes of them: in FAST and BALANCED (and `Runtime` in those modes) pool blocks,
//! which have no header — the pool's own checks answer (docs/pool.md); elsewhere system blocks
//! behind a 16-byte header. Large blocks have a header in every mode. Cases that only make sense
//! for one kind of block run only where the mode has it: the header checks (underflow,
//! overwritten fields) on header blocks, the pool's span checks on pool blocks.
//!
//! Not under AddressSanitizer: it reports the allocator's read of a freed block's header itself.
#![cfg(not(hakmem_sanitizer))]

mod common;

use std::alloc::{GlobalAlloc, Layout};

use common::{child_value, hakmem_lines, run_child, signal};
use hakmem::{Hakmem, Policy, Selected};

#[global_allocator]
static GLOBAL: Hakmem = Hakmem::new();

/// The allocator the children misuse (the same mode as the global one).
static MISUSE: Hakmem = Hakmem::new();

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// Whether small blocks are pool blocks in this mode (in a `Runtime` build: in the mode
/// `HAKMEM_MODE` names, which the children inherit).
fn pool() -> bool {
    Selected::config().pool
}

/// The block each child misuses, named by `MISUSE_BLOCK`.
fn block_layout() -> Layout {
    match std::env::var("MISUSE_BLOCK").as_deref() {
        // A plain small block: behind a header on the system path, or a pool block.
        Ok("small") => Layout::from_size_align(100, 16).unwrap(),
        // Small and aligned to 4 KiB: on the system path its header is a page into the malloc
        // chunk, past what glibc writes into a freed chunk; in the pool, a 64 KiB-class block.
        Ok("aligned") => Layout::from_size_align(64 << 10, 4096).unwrap(),
        // A large block: at or above every mode's threshold; a BigCache class block where the
        // mode has BigCache.
        Ok("large") => Layout::from_size_align(2 * MIB, 16).unwrap(),
        // Large, beyond every class the mode's cap lets BigCache hold (a class is cached only if
        // one block of it fits): released to the OS at once when freed.
        Ok("huge") => {
            let size = (Selected::config().bigcache_bytes + MIB).max(32 * MIB);
            Layout::from_size_align(size, 16).unwrap()
        }
        other => panic!("MISUSE_BLOCK={other:?}"),
    }
}

/// Allocates the block named by `MISUSE_BLOCK`, between two neighbours (leaked) that keep it
/// away from the system allocator's top chunk.
fn misused_block() -> (*mut u8, Layout) {
    let layout = block_layout();
    // SAFETY: a valid layout with a non-zero size; the neighbours are leaked on purpose.
    let p = unsafe {
        std::hint::black_box(MISUSE.alloc(layout));
        let p = MISUSE.alloc(layout);
        std::hint::black_box(MISUSE.alloc(layout));
        p
    };
    assert!(!p.is_null());
    // SAFETY: `p` holds `layout.size()` bytes.
    unsafe { p.write_bytes(0x5A, layout.size()) };
    (p, layout)
}

/// Runs `free` on this thread, or on a thread of its own with `MISUSE_THREAD=other` (a thread
/// that has allocated nothing from `MISUSE`: for the pool, a remote free).
fn on_freeing_thread(free: impl FnOnce() + Send + 'static) {
    match std::env::var("MISUSE_THREAD").as_deref() {
        Ok("other") => std::thread::spawn(free).join().unwrap(),
        Ok("same") | Err(_) => free(),
        Ok(other) => panic!("MISUSE_THREAD={other}"),
    }
}

/// A pointer that crosses threads.
#[derive(Clone, Copy)]
struct Ptr(*mut u8);
// SAFETY: only an address; the children misuse it on purpose.
unsafe impl Send for Ptr {}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_double_free() {
    let (p, layout) = misused_block();
    println!("ptr={p:p}");
    let p = Ptr(p);
    on_freeing_thread(move || {
        let p = p;
        // SAFETY: deliberately broken: the second free.
        unsafe {
            MISUSE.dealloc(p.0, layout);
            MISUSE.dealloc(p.0, layout);
        }
    });
}

/// A block freed, another block of the same size freed, then the first again; then everything
/// else is freed and more blocks are taken, so that in the pool the first span is no longer
/// current and empties out (where the pool counts its free list).
#[test]
#[ignore = "child process of the misuse tests"]
fn child_double_free_later() {
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: deliberately broken: `p` is freed again after another free.
    unsafe {
        let blocks: Vec<*mut u8> = (0..2000).map(|_| MISUSE.alloc(layout)).collect();
        let p = blocks[10];
        println!("ptr={p:p}");
        MISUSE.dealloc(p, layout);
        MISUSE.dealloc(blocks[11], layout);
        MISUSE.dealloc(p, layout);
        for (i, &b) in blocks.iter().enumerate() {
            if i != 10 && i != 11 {
                MISUSE.dealloc(b, layout);
            }
        }
        let more: Vec<*mut u8> = (0..4000).map(|_| MISUSE.alloc(layout)).collect();
        std::hint::black_box(more);
    }
}

/// Every block of a pool span freed (the span goes back to the heap's cache or the region),
/// then one of them again.
#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_into_empty_span() {
    let layout = Layout::from_size_align(7000, 8).unwrap(); // class 7168: 9 per 64 KiB span
                                                            // SAFETY: deliberately broken: the first block is freed twice.
    unsafe {
        let blocks: Vec<*mut u8> = (0..40).map(|_| MISUSE.alloc(layout)).collect();
        for &b in &blocks {
            MISUSE.dealloc(b, layout);
        }
        println!("ptr={:p}", blocks[0]);
        MISUSE.dealloc(blocks[0], layout);
    }
}

#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_stack_pointer() {
    let mut local = [0u128; 4];
    let p = local.as_mut_ptr().wrapping_add(2).cast::<u8>();
    println!("ptr={p:p}");
    // SAFETY: deliberately broken: a pointer hakmem never returned.
    unsafe { MISUSE.dealloc(p, Layout::from_size_align(16, 16).unwrap()) };
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
        MISUSE.dealloc(p, Layout::from_size_align(256, 16).unwrap());
    }
}

/// A pointer 64 bytes into the block, freed on the thread `MISUSE_THREAD` names.
#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_interior_pointer() {
    let (p, layout) = misused_block();
    let inner = Ptr(p.wrapping_add(64));
    println!("ptr={:p}", inner.0);
    on_freeing_thread(move || {
        let inner = inner;
        // SAFETY: deliberately broken: a pointer into the block, not its start.
        unsafe { MISUSE.dealloc(inner.0, layout) };
    });
}

/// An address 1 GiB past a small block: in a pool mode, inside the pool's 16 GiB region but in
/// no span (never carved).
#[test]
#[ignore = "child process of the misuse tests"]
fn child_free_wild_pool_pointer() {
    let (p, layout) = misused_block();
    let wild = p.wrapping_add(GIB);
    println!("ptr={wild:p}");
    // SAFETY: deliberately broken: an address hakmem never handed out.
    unsafe { MISUSE.dealloc(wild, layout) };
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
        MISUSE.dealloc(p, layout);
    }
}

/// Whether the hakmem line must name the very pointer the child printed, or just a pointer.
#[derive(Clone, Copy, PartialEq)]
enum Names {
    ThePointer,
    /// The pool's count of a span's free list names the block where the count went wrong,
    /// which need not be the one freed twice.
    APointer,
}

/// Runs `child` with `env`, expects SIGABRT and one hakmem line `hakmem: free(<ptr>): <problem>`
/// (the message starts with `problem`: the whole message where it is fixed); returns the line.
fn expect_abort(child: &str, env: &[(&str, &str)], problem: &str, names: Names) -> String {
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
    let named = match names {
        Names::ThePointer => format!("hakmem: free({ptr}): "),
        Names::APointer => "hakmem: free(0x".to_owned(),
    };
    assert!(
        line.starts_with(&named),
        "{what}: names the pointer: {line}"
    );
    let message = line.split_once("): ").map_or("", |(_, m)| m);
    assert!(
        message.starts_with(problem),
        "{what}: names {problem:?}: {line}"
    );
    println!("{what}: {line}");
    line
}

/// `expect_abort` for a case that names its pointer.
fn expect(child: &str, env: &[(&str, &str)], problem: &str) -> String {
    expect_abort(child, env, problem, Names::ThePointer)
}

/// The pool's two messages.
const POOL_DOUBLE_FREE: &str = "double free detected (pool block)";
const POOL_INVALID: &str = "invalid pointer (inside hakmem's pool but not a block it handed out)";
/// The header checks' messages (the fixed ones).
const DOUBLE_FREE: &str = "double free detected";
const NO_HEADER: &str = "invalid pointer (no hakmem header: not allocated by hakmem, already \
                         released, or header overwritten)";

/// The blocks with a header in this mode (see the module docs).
fn header_blocks() -> Vec<&'static str> {
    if pool() {
        vec!["large"]
    } else {
        vec!["small", "aligned", "large"]
    }
}

#[test]
fn double_free_aborts() {
    for thread in ["same", "other"] {
        for block in ["small", "aligned"] {
            let env = [("MISUSE_BLOCK", block), ("MISUSE_THREAD", thread)];
            if pool() {
                // The block is at the head of its span's free list (owner) or remote stack.
                expect("child_double_free", &env, POOL_DOUBLE_FREE);
            } else if block == "aligned" {
                // The header, a page into the malloc chunk, is still there, tagged freed.
                let line = expect("child_double_free", &env, DOUBLE_FREE);
                assert!(line.ends_with(DOUBLE_FREE), "{line}");
            } else {
                // glibc keeps its free-list links in the 16 bytes before a plain block (where
                // the header was): the freed tag is gone, so the second free is an invalid
                // pointer, and the message says a released block is one cause.
                expect("child_double_free", &env, NO_HEADER);
            }
        }
    }
    if Selected::config().bigcache {
        // The freed block is in the cache, still mapped, its header tagged freed.
        let line = expect(
            "child_double_free",
            &[("MISUSE_BLOCK", "large")],
            DOUBLE_FREE,
        );
        assert!(line.ends_with(DOUBLE_FREE), "{line}");
    }
}

/// A double free with another free in between. The pool finds it when the span empties out
/// (its free list holds more blocks than were carved); a header block's header is gone.
#[test]
fn later_double_free_aborts() {
    if pool() {
        expect_abort(
            "child_double_free_later",
            &[],
            POOL_DOUBLE_FREE,
            Names::APointer,
        );
        expect("child_free_into_empty_span", &[], POOL_DOUBLE_FREE);
    } else {
        expect("child_double_free_later", &[], NO_HEADER);
    }
}

/// A block released to the OS has no header left to read: a second free faults (SIGSEGV),
/// it does not go on silently. (Every mode's blocks above the largest class its cap lets
/// BigCache hold, and, in a mode without BigCache, every large block.)
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
    expect("child_free_stack_pointer", &[], NO_HEADER);
    expect("child_free_foreign_heap_pointer", &[], NO_HEADER);
    for block in ["small", "aligned", "large"] {
        if pool() && block != "large" {
            // Checked on a remote free only (the owner's fast path does not check the block
            // boundary: docs/reliability.md).
            expect(
                "child_free_interior_pointer",
                &[("MISUSE_BLOCK", block), ("MISUSE_THREAD", "other")],
                POOL_INVALID,
            );
        } else {
            for thread in ["same", "other"] {
                expect(
                    "child_free_interior_pointer",
                    &[("MISUSE_BLOCK", block), ("MISUSE_THREAD", thread)],
                    NO_HEADER,
                );
            }
        }
    }
    if pool() {
        expect(
            "child_free_wild_pool_pointer",
            &[("MISUSE_BLOCK", "small")],
            POOL_INVALID,
        );
    }
}

/// An underflow that reaches the tag (the header's last 4 bytes, right before the block)
/// destroys the magic: nothing tells the block from a foreign pointer any more, and the
/// message names a header overwritten as one cause.
#[test]
fn smashed_header_aborts() {
    for block in header_blocks() {
        expect(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "16"),
                ("MISUSE_LEN", "16"),
                ("MISUSE_BYTE", "65"),
            ],
            NO_HEADER,
        );
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
        expect(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "4"),
                ("MISUSE_LEN", "2"),
                ("MISUSE_BYTE", "119"),
            ],
            "corrupted header (tag 0x",
        );
    }
    let mut len_checked = vec!["large"];
    if Selected::config().poison && !pool() {
        len_checked.extend(["small", "aligned"]);
    }
    for block in len_checked {
        // The length's high bytes.
        expect(
            "child_underflow",
            &[
                ("MISUSE_BLOCK", block),
                ("MISUSE_AT", "12"),
                ("MISUSE_LEN", "4"),
                ("MISUSE_BYTE", "17"),
            ],
            "corrupted header (length 0x",
        );
    }
}
