//! Bounded memory: 10 M operations of churn in BALANCED keep the resident set within the live
//! set plus the caches' caps plus 16 MiB.
//!
//! BALANCED is this binary's global allocator (whatever the features), so the whole process —
//! the churn, its bookkeeping and the test harness — runs on it, and `/proc/self/statm` sees
//! nothing else. A table of 4096 slots is churned: each operation picks a slot and frees its
//! block or allocates one (8 B – 4 MiB, mostly small, touching every page), so the live set
//! wanders around half the slots while 10 M operations go through every path (the pool below
//! 512 KiB, BigCache hits, WARM and COLD releases, batches). Every 64 Ki operations the resident
//! set is read and must stay within
//!
//! ```text
//! RSS at the start + live bytes + BigCache's cap + the pool's cap + 16 MiB
//! ```
//!
//! - BigCache's cap: `Config::BALANCED.bigcache_bytes` (256 MiB).
//! - The pool's cap, from docs/pool.md ("Memory: bounds") and `crates/hakmem/src/pool/`: the
//!   region keeps at most 8 MiB of empty spans resident, or as many bytes as its heaps hold if
//!   that is more (`DIRTY_MAX`; beyond, freed spans are purged with `MADV_DONTNEED`), and each
//!   thread's heap keeps, besides its live blocks, the
//!   current span of every class it uses (partly used, its pages resident once touched) and one
//!   empty span per kind. One thread churns here (the harness's spans predate the start
//!   figure), so the cap is 8 MiB + one span per class (32 × 64 KiB + 12 × 512 KiB + 12 × 4 MiB
//!   = 56 MiB) + one span per kind (64 KiB + 512 KiB + 4 MiB) = 68.56 MiB, plus, when the heaps
//!   hold more than 8 MiB of spans, what they hold beyond 8 MiB (read from
//!   `Stats::pool_held_bytes` at each sample). What the pool does
//!   *not* cap is the free room in a thread's other partly used spans (fragmentation, as in any
//!   allocator); the test prints the pool's gauges to show how much that was.
//!
//! The slack covers the pending batch (4 MiB at most), the pool's metadata, and page rounding
//! of live blocks. The pool's dirty spans are also checked against their cap at every sample
//! (`Stats::pool_dirty_bytes` ≤ max(8 MiB, `Stats::pool_held_bytes`), BALANCED gauges).
//!
//! The test is the same in every build, so it runs in the build whose only mode feature is
//! `balanced` (the default build, and `cargo xtask test`'s BALANCED step), and is ignored in the
//! others. Not under AddressSanitizer (its quarantine holds freed memory on purpose); under
//! valgrind (`HAKMEM_TEST_UNDER_VALGRIND`, set by `cargo xtask sanitizers --memcheck`) the
//! resident set is valgrind's, so only the churn and its checks run.
#![cfg(not(hakmem_sanitizer))]

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::time::Instant;

use common::{rss, scaled, Rng};
use hakmem::mode::Balanced;
use hakmem::{Allocator, Config};

#[global_allocator]
static GLOBAL: Allocator<Balanced> = Allocator::new();

const MIB: usize = 1 << 20;
const OPS: u64 = 10_000_000;
const SLOTS: usize = 4096;
const SLACK: usize = 16 * MIB;
const SAMPLE_EVERY: u64 = 1 << 16;
/// The pool's largest class: smaller requests are the pool's in BALANCED.
const POOL_MAX: usize = 512 << 10;
/// Empty spans a pool region keeps resident at least (docs/pool.md; `region::DIRTY_MAX`); up to
/// what its heaps hold if that is more.
const POOL_DIRTY_MAX: usize = 8 * MIB;

/// The pool's span length for a class of `size` bytes (docs/pool.md, "Classes").
fn span_len(size: usize) -> usize {
    match size {
        0..=8192 => 64 << 10,
        8193..=65536 => 512 << 10,
        _ => 4 * MIB,
    }
}

/// The pool's 56 class sizes: multiples of 16 up to 128 B, then four per doubling up to 512 KiB.
fn pool_classes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (1..=8).map(|k| k * 16).collect();
    for b in 7..19 {
        sizes.extend((1..=4).map(|k| (1 << b) + k * (1 << (b - 2))));
    }
    assert_eq!((sizes.len(), sizes.last()), (56, Some(&POOL_MAX)));
    sizes
}

/// What the pool may keep beyond its live blocks with one thread allocating (see the module
/// docs): the region's dirty spans, the thread's current span of every class and its empty span
/// of every kind.
fn pool_cap() -> usize {
    let current: usize = pool_classes().into_iter().map(span_len).sum();
    let cached: usize = [64 << 10, 512 << 10, 4 * MIB].iter().sum();
    POOL_DIRTY_MAX + current + cached
}

fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=899 => rng.log_uniform(8, 1 << 10),
        900..=996 => rng.log_uniform(1 << 10, 256 << 10),
        _ => rng.log_uniform(256 << 10, 4 * MIB),
    }
}

#[test]
#[cfg_attr(
    not(all(
        feature = "balanced",
        not(any(
            feature = "minimal",
            feature = "fast",
            feature = "learning",
            feature = "research",
            feature = "runtime"
        ))
    )),
    ignore = "the same in every build: runs in the build whose only mode feature is balanced"
)]
fn churn_keeps_rss_within_the_caps() {
    let start = Instant::now();
    let ops = scaled(OPS);
    let mut slots: Vec<Option<(*mut u8, Layout, u64)>> = vec![None; SLOTS];
    let mut rng = Rng::new(0xB0_0B);
    let bigcache_cap = Config::BALANCED.bigcache_bytes;
    let caps = bigcache_cap + pool_cap();
    let check_rss = std::env::var_os("HAKMEM_TEST_UNDER_VALGRIND").is_none();
    let baseline = rss();
    let (mut live, mut peak_live, mut peak_rss, mut worst_excess) = (0usize, 0, 0, 0isize);
    // Live bytes in the pool, and the most the pool held beyond them (spans held by heaps).
    let (mut pool_live, mut worst_pool_extra, mut peak_dirty) = (0usize, 0isize, 0u64);
    // How far the pool's dirty cap is above 8 MiB (the heaps' spans beyond it), last sampled.
    let mut dirty_beyond = 0usize;
    for op in 0..ops {
        let slot = &mut slots[rng.below(SLOTS)];
        match slot.take() {
            Some((p, layout, id)) => {
                // SAFETY: a live block of GLOBAL with this layout, stamped below.
                unsafe {
                    assert_eq!(p.cast::<u64>().read_unaligned(), id, "block {p:p}");
                    GLOBAL.dealloc(p, layout);
                }
                live -= layout.size();
                if layout.size() < POOL_MAX {
                    pool_live -= layout.size();
                }
            }
            None => {
                let layout = Layout::from_size_align(size(&mut rng), 8).unwrap();
                // SAFETY: a valid layout with a non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null(), "{layout:?}");
                // Touch every page (the first 8 bytes carry the id), as a program would.
                // SAFETY: `p` holds `layout.size() >= 8` bytes.
                unsafe {
                    p.cast::<u64>().write_unaligned(op);
                    for at in (4096..layout.size()).step_by(4096) {
                        p.add(at).write(op as u8);
                    }
                }
                *slot = Some((p, layout, op));
                live += layout.size();
                if layout.size() < POOL_MAX {
                    pool_live += layout.size();
                }
                peak_live = peak_live.max(live);
            }
        }
        if op % SAMPLE_EVERY == SAMPLE_EVERY - 1 {
            let stats = GLOBAL.stats();
            let dirty_cap = stats.pool_held_bytes.max(POOL_DIRTY_MAX as u64);
            assert!(
                stats.pool_dirty_bytes <= dirty_cap,
                "the pool keeps {} bytes of empty spans, its cap is {dirty_cap} (max of \
                 {POOL_DIRTY_MAX} and the {} bytes its heaps hold)",
                stats.pool_dirty_bytes,
                stats.pool_held_bytes
            );
            dirty_beyond = (stats.pool_held_bytes as usize).saturating_sub(POOL_DIRTY_MAX);
            peak_dirty = peak_dirty.max(stats.pool_dirty_bytes);
            worst_pool_extra =
                worst_pool_extra.max(stats.pool_held_bytes as isize - pool_live as isize);
        }
        if check_rss && op % SAMPLE_EVERY == SAMPLE_EVERY - 1 {
            let now = rss();
            peak_rss = peak_rss.max(now);
            let excess = now as isize - (baseline + live) as isize;
            worst_excess = worst_excess.max(excess);
            assert!(
                now <= baseline + live + caps + dirty_beyond + SLACK,
                "after {op} operations: RSS {} MiB > start {} MiB + live {} MiB + caps {} MiB \
                 (BigCache {} MiB, pool {:.2} MiB + {} MiB held beyond 8 MiB) + {} MiB",
                now / MIB,
                baseline / MIB,
                live / MIB,
                caps / MIB,
                bigcache_cap / MIB,
                pool_cap() as f64 / MIB as f64,
                dirty_beyond / MIB,
                SLACK / MIB
            );
        }
    }
    for (p, layout, _) in slots.into_iter().flatten() {
        // SAFETY: a live block of GLOBAL with this layout.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    println!(
        "memory bound: {ops} operations in {:.1} s; RSS start {} MiB, peak {} MiB; live peak \
         {} MiB; worst RSS - start - live = {} MiB (bound: caps {:.2} MiB = BigCache {} MiB + \
         pool {:.2} MiB, + {} MiB); pool: spans held beyond its live bytes at most {} MiB, \
         dirty at most {} MiB",
        start.elapsed().as_secs_f64(),
        baseline / MIB,
        peak_rss / MIB,
        peak_live / MIB,
        worst_excess / MIB as isize,
        caps as f64 / MIB as f64,
        bigcache_cap / MIB,
        pool_cap() as f64 / MIB as f64,
        SLACK / MIB,
        worst_pool_extra / MIB as isize,
        peak_dirty / MIB as u64,
    );
}
