//! Time-based release: a process that freed 600 MiB of large blocks and then only allocates
//! small ones is back under 16 MiB resident once BALANCED's decay period
//! (`Config::bigcache_decay_ms`) has passed, without any call asking for it; and not before
//! the period: until then BigCache keeps what it cached, for reuse.
//!
//! BALANCED is this binary's global allocator, so `/proc/self/statm` sees the whole process.
//! The large blocks come through `alloc_at` from a few call sites, so that BigCache can keep up
//! to its cap of them (through `GlobalAlloc` alone, one site, it keeps 16 per class). After the
//! free, the test allocates batches of small blocks (new ones, so the pool refills: a slow path,
//! where the decay is checked) and sleeps a twentieth of the period between batches.
//!
//! Like memory_bound, it runs in the build whose only mode feature is `balanced`. Under
//! valgrind (`HAKMEM_TEST_UNDER_VALGRIND`) the resident set is valgrind's: the blocks are fewer
//! and only the release itself (the `bigcache_decayed` counter) is checked.
#![cfg(not(hakmem_sanitizer))]

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use common::{rss, Rng};
use hakmem::mode::Balanced;
use hakmem::{Allocator, Config, Site};

#[global_allocator]
static GLOBAL: Allocator<Balanced> = Allocator::new();

const MIB: usize = 1 << 20;
/// Freed large bytes.
const FREED: usize = 600 * MIB;
/// Where the resident set must return to.
const SMALL_FOOTPRINT: usize = 16 * MIB;
/// Small blocks allocated between pauses: a pool span's worth of 32-byte blocks.
const BATCH: usize = 2048;

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
fn freed_large_blocks_are_released_after_the_decay_period() {
    let under_valgrind = std::env::var_os("HAKMEM_TEST_UNDER_VALGRIND").is_some();
    let decay = Duration::from_millis(u64::from(Config::BALANCED.bigcache_decay_ms));
    let freed = if under_valgrind { FREED / 8 } else { FREED };
    let start_rss = rss();

    // 600 MiB of large blocks, every page touched, from 8 sites, sizes 1–32 MiB.
    let mut rng = Rng::new(0xDECA1);
    let mut blocks = Vec::new();
    let mut total = 0;
    while total < freed {
        let size = rng.log_uniform(MIB, 32 * MIB);
        let layout = Layout::from_size_align(size, 16).unwrap();
        let site = Site::from_raw(1 + rng.below(8) as u64);
        // SAFETY: a valid, non-zero layout.
        let p = unsafe { GLOBAL.alloc_at(layout, site) };
        assert!(!p.is_null());
        // SAFETY: `p` holds `size` bytes.
        unsafe {
            for at in (0..size).step_by(4096) {
                p.add(at).write(1);
            }
        }
        blocks.push((p, layout));
        total += size;
    }
    let peak_rss = rss();
    for (p, layout) in blocks {
        // SAFETY: each block once, with its layout.
        unsafe { GLOBAL.dealloc(p, layout) };
    }
    let freed_at = Instant::now();
    let after_free = rss();
    let cap = Config::BALANCED.bigcache_bytes;
    println!(
        "decay: RSS at start {} MiB, with {} MiB live {} MiB, after the free {} MiB (cap {} \
         MiB, decay {} ms)",
        start_rss / MIB,
        total / MIB,
        peak_rss / MIB,
        after_free / MIB,
        cap / MIB,
        decay.as_millis()
    );
    if !under_valgrind {
        assert!(
            after_free > start_rss + cap / 2,
            "BigCache should keep (up to its cap) what was freed: {} MiB resident",
            after_free / MIB
        );
    }

    // Only small allocations from now on: a batch of new 32-byte blocks (a pool span's worth),
    // then a pause of a twentieth of the period.
    let small = Layout::from_size_align(32, 8).unwrap();
    // Room for every batch up front (one large block), so that the vector's own growth does
    // not go through the pool's larger classes.
    let mut kept_small = Vec::with_capacity(BATCH * 4 * 20);
    let mut checked_half = false;
    let released_after = loop {
        for _ in 0..BATCH {
            // SAFETY: a valid, non-zero layout.
            let p = unsafe { GLOBAL.alloc(small) };
            assert!(!p.is_null());
            kept_small.push(p);
        }
        let elapsed = freed_at.elapsed();
        let now = rss();
        let decayed = GLOBAL.stats().bigcache_decayed;
        if elapsed < decay / 2 {
            assert_eq!(decayed, 0, "released after {elapsed:?}, before the period");
        } else if !checked_half && !under_valgrind {
            checked_half = true;
            println!("decay: after {elapsed:?}: RSS {} MiB", now / MIB);
        }
        let done = if under_valgrind {
            decayed > 0
        } else {
            now < SMALL_FOOTPRINT
        };
        if done {
            assert!(
                elapsed >= decay,
                "released after {elapsed:?}, before the period"
            );
            break elapsed;
        }
        assert!(
            elapsed < 4 * decay,
            "after {elapsed:?} ({} decay periods) still {} MiB resident, {decayed} blocks \
             released by the decay",
            elapsed.as_secs_f64() / decay.as_secs_f64(),
            now / MIB
        );
        std::thread::sleep(decay / 20);
    };
    let stats = GLOBAL.stats();
    println!(
        "decay: {} MiB resident {released_after:?} after the free ({} blocks released by the \
         decay, {} evicted)",
        rss() / MIB,
        stats.bigcache_decayed,
        stats.bigcache_evictions
    );
    for p in kept_small {
        // SAFETY: each small block once.
        unsafe { GLOBAL.dealloc(p, small) };
    }
}
