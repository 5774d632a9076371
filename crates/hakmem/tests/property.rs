//! Shadow-model property tests: random sequences of alloc / alloc_zeroed / realloc / dealloc,
//! run against every policy type in one process, checked against a model of what each live
//! block must hold.
//!
//! Checked after every operation: the pointer is non-null and aligned, no two live blocks
//! overlap, zeroed blocks read zero, and every block still holds the pattern written into it
//! (through realloc, up to the smaller size). Sizes are log-uniform from 1 B to 8 MiB, so both
//! the system and the mmap path (and their crossings in realloc) are exercised; alignments run
//! from 1 B to 64 KiB.
//!
//! The pool's own model (`shadow_model_pool_*`: FAST, BALANCED and the runtime twin, which uses the
//! pool when `HAKMEM_MODE` is fast or balanced) draws sizes class by class across all 56 of the
//! pool's classes and out of it, with more blocks live at once.
//!
//! `QUICKCHECK_TESTS` sets the number of sequences per policy (default 1000).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::{Allocator, Policy, Site};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

const MAX_SIZE_LOG2: u32 = 23; // 8 MiB
const MAX_ALIGN_LOG2: u32 = 16; // 64 KiB
const MAX_LIVE: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
        zeroed: bool,
        at_site: bool,
    },
    Realloc {
        slot: usize,
        size: usize,
    },
    Free {
        slot: usize,
    },
}

/// Log-uniform in 1 ..= 8 MiB.
fn size(g: &mut Gen) -> usize {
    let bits = u32::arbitrary(g) % (MAX_SIZE_LOG2 + 1);
    let low = 1usize << bits >> 1;
    low + usize::arbitrary(g) % (low.max(1))
}

fn align(g: &mut Gen) -> usize {
    // Mostly ordinary alignments, sometimes large ones.
    let bits = if bool::arbitrary(g) {
        u32::arbitrary(g) % 5
    } else {
        u32::arbitrary(g) % (MAX_ALIGN_LOG2 + 1)
    };
    1 << bits
}

/// The block size of the pool's class `c` (16 B … 512 KiB; docs/pool.md).
fn class_size(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let b = 7 + (c - 8) / 4;
        (1 << b) + ((c - 8) % 4 + 1) * (1 << (b - 2))
    }
}

/// Sizes for the pool: every one of its 56 classes equally likely (anywhere in the class, or
/// exactly on its edges), and one in six out of the pool (512 KiB – 4 MiB), so that realloc
/// crosses classes and leaves and re-enters the pool.
fn pool_size(g: &mut Gen) -> usize {
    let c = usize::arbitrary(g) % 56;
    let (low, high) = (if c == 0 { 0 } else { class_size(c - 1) }, class_size(c));
    match u8::arbitrary(g) % 6 {
        0 => (512 << 10) + usize::arbitrary(g) % (7 << 19),
        1 => high,
        2 => low + 1,
        _ => low + 1 + usize::arbitrary(g) % (high - low),
    }
}

/// Alignments for the pool: mostly ordinary, sometimes up to 4 KiB (the pool serves them from
/// classes whose size is a multiple of the alignment).
fn pool_align(g: &mut Gen) -> usize {
    if u8::arbitrary(g) % 4 == 0 {
        1 << (5 + u32::arbitrary(g) % 8)
    } else {
        1 << (u32::arbitrary(g) % 5)
    }
}

impl Op {
    fn generate(g: &mut Gen, size: fn(&mut Gen) -> usize, align: fn(&mut Gen) -> usize) -> Op {
        match u8::arbitrary(g) % 8 {
            0..=3 => Op::Alloc {
                size: size(g),
                align: align(g),
                zeroed: bool::arbitrary(g),
                at_site: bool::arbitrary(g),
            },
            4 | 5 => Op::Realloc {
                slot: usize::arbitrary(g),
                size: size(g),
            },
            _ => Op::Free {
                slot: usize::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        Op::generate(g, size, align)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Op>> {
        match *self {
            Op::Alloc {
                size,
                align,
                zeroed,
                at_site,
            } => Box::new(size.shrink().filter(|&s| s > 0).map(move |size| Op::Alloc {
                size,
                align,
                zeroed,
                at_site,
            })),
            Op::Realloc { slot, size } => Box::new(
                size.shrink()
                    .filter(|&s| s > 0)
                    .map(move |size| Op::Realloc { slot, size }),
            ),
            Op::Free { .. } => quickcheck::empty_shrinker(),
        }
    }
}

/// A sequence with the pool's size distribution ([`pool_size`], [`pool_align`]).
#[derive(Clone, Debug)]
struct PoolOps(Vec<Op>);

impl Arbitrary for PoolOps {
    fn arbitrary(g: &mut Gen) -> PoolOps {
        let len = usize::arbitrary(g) % (2 * g.size());
        PoolOps(
            (0..len)
                .map(|_| Op::generate(g, pool_size, pool_align))
                .collect(),
        )
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = PoolOps>> {
        Box::new(self.0.shrink().map(PoolOps))
    }
}

/// A live block in the model.
struct Live {
    ptr: *mut u8,
    layout: Layout,
    seed: u8,
}

/// The offsets of a block of `size` bytes that are written and checked: both ends fully, and a
/// sparse stride through the middle (so that large blocks are touched on a bounded number of
/// pages, keeping a thousand sequences fast).
fn probe_offsets(size: usize) -> impl Iterator<Item = usize> {
    let edge = size.min(64);
    let stride = (size / 48).max(4093) | 1;
    (0..edge)
        .chain((edge..size.saturating_sub(64)).step_by(stride))
        .chain(size.saturating_sub(64).max(edge)..size)
}

fn pattern(seed: u8, offset: usize) -> u8 {
    seed ^ (offset as u8).wrapping_mul(31) ^ (offset >> 12) as u8
}

/// # Safety
/// `ptr` holds `size` writable bytes.
unsafe fn fill(ptr: *mut u8, size: usize, seed: u8) {
    for i in probe_offsets(size) {
        // SAFETY: `i < size`.
        unsafe { ptr.add(i).write(pattern(seed, i)) };
    }
}

/// # Safety
/// `ptr` holds `size` readable bytes.
unsafe fn holds(ptr: *const u8, size: usize, seed: u8) -> Option<usize> {
    // SAFETY: `i < size`.
    probe_offsets(size).find(|&i| unsafe { ptr.add(i).read() } != pattern(seed, i))
}

/// # Safety
/// `ptr` holds `size` readable bytes.
unsafe fn is_zero(ptr: *const u8, size: usize) -> bool {
    // The first 8 KiB fully (header-adjacent bytes are where a bug would show), then the probes.
    // SAFETY: all offsets are below `size`.
    (0..size.min(8192)).all(|i| unsafe { ptr.add(i).read() } == 0)
        && probe_offsets(size).all(|i| unsafe { ptr.add(i).read() } == 0)
}

/// Runs `ops` against `a`, checking the model after each. Frees everything at the end.
fn run<P: Policy>(a: &Allocator<P>, ops: &[Op]) -> Result<(), String> {
    run_with(a, ops, MAX_LIVE)
}

/// [`run`] with at most `max_live` blocks live at once.
fn run_with<P: Policy>(a: &Allocator<P>, ops: &[Op], max_live: usize) -> Result<(), String> {
    let mut live: Vec<Live> = Vec::new();
    let mut result = Ok(());
    for (step, op) in ops.iter().enumerate() {
        result = apply(a, &mut live, op, step as u8, max_live)
            .map_err(|e| format!("step {step} ({op:?}): {e}"));
        if result.is_err() {
            break;
        }
        result = check_disjoint(&live).map_err(|e| format!("after step {step} ({op:?}): {e}"));
        if result.is_err() {
            break;
        }
    }
    for b in live.drain(..) {
        // SAFETY: every live block came from `a` with this layout.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
    result
}

fn apply<P: Policy>(
    a: &Allocator<P>,
    live: &mut Vec<Live>,
    op: &Op,
    step: u8,
    max_live: usize,
) -> Result<(), String> {
    match *op {
        Op::Alloc {
            size,
            align,
            zeroed,
            at_site,
        } => {
            if live.len() >= max_live {
                return Ok(());
            }
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size; blocks are freed with the same layout.
            let ptr = unsafe {
                match (zeroed, at_site) {
                    (true, _) => a.alloc_zeroed(layout),
                    (false, true) => a.alloc_at(layout, Site::caller()),
                    (false, false) => a.alloc(layout),
                }
            };
            check_block(ptr, layout)?;
            // SAFETY: `ptr` holds `size` bytes.
            if zeroed && !unsafe { is_zero(ptr, size) } {
                return Err(format!(
                    "alloc_zeroed({size}, {align}) returned non-zero memory"
                ));
            }
            let seed = step.wrapping_mul(13).wrapping_add(size as u8);
            // SAFETY: as above.
            unsafe { fill(ptr, size, seed) };
            live.push(Live { ptr, layout, seed });
        }
        Op::Realloc { slot, size } => {
            if live.is_empty() {
                return Ok(());
            }
            let slot = slot % live.len();
            let old_ptr = live[slot].ptr;
            let old_layout = live[slot].layout;
            let old_seed = live[slot].seed;
            // SAFETY: a live block of `a` with its layout; non-zero new size.
            let ptr = unsafe { a.realloc(old_ptr, old_layout, size) };
            let layout = Layout::from_size_align(size, old_layout.align()).unwrap();
            check_block(ptr, layout)?;
            // The old block is gone: the model tracks the new one from here, even if a check
            // below fails (so the clean-up frees the right pointer).
            let seed = old_seed.wrapping_add(1);
            live[slot] = Live { ptr, layout, seed };
            let kept = old_layout.size().min(size);
            // The probes of the old size below `kept` must have survived the move.
            for i in probe_offsets(old_layout.size()).filter(|&i| i < kept) {
                // SAFETY: `i < kept <= size`.
                let got = unsafe { ptr.add(i).read() };
                if got != pattern(old_seed, i) {
                    return Err(format!(
                        "realloc {} -> {size} (align {}) lost byte {i}: {got:#04x}",
                        old_layout.size(),
                        layout.align()
                    ));
                }
            }
            // SAFETY: `ptr` holds `size` bytes.
            unsafe { fill(ptr, size, seed) };
        }
        Op::Free { slot } => {
            if live.is_empty() {
                return Ok(());
            }
            let b = live.swap_remove(slot % live.len());
            // SAFETY: `b.ptr` holds `b.layout.size()` bytes.
            if let Some(i) = unsafe { holds(b.ptr, b.layout.size(), b.seed) } {
                return Err(format!(
                    "block of {} bytes corrupted at byte {i} before free",
                    b.layout.size()
                ));
            }
            // SAFETY: a live block of `a` with its layout.
            unsafe { a.dealloc(b.ptr, b.layout) };
        }
    }
    // Every block still holds its pattern.
    for b in live.iter() {
        // SAFETY: live blocks hold their size.
        if let Some(i) = unsafe { holds(b.ptr, b.layout.size(), b.seed) } {
            return Err(format!(
                "live block of {} bytes corrupted at byte {i}",
                b.layout.size()
            ));
        }
    }
    Ok(())
}

fn check_block(ptr: *mut u8, layout: Layout) -> Result<(), String> {
    if ptr.is_null() {
        return Err(format!(
            "null for {} bytes align {}",
            layout.size(),
            layout.align()
        ));
    }
    if ptr as usize % layout.align() != 0 {
        return Err(format!("{ptr:p} not aligned to {}", layout.align()));
    }
    Ok(())
}

fn check_disjoint(live: &[Live]) -> Result<(), String> {
    let mut ranges = BTreeMap::new();
    for b in live {
        ranges.insert(b.ptr as usize, b.ptr as usize + b.layout.size());
    }
    if ranges.len() != live.len() {
        return Err("two live blocks share an address".into());
    }
    let mut prev_end = 0;
    for (&start, &end) in &ranges {
        if start < prev_end {
            return Err(format!("live blocks overlap at {start:#x}"));
        }
        prev_end = end;
    }
    Ok(())
}

fn tests() -> u64 {
    std::env::var("QUICKCHECK_TESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

macro_rules! shadow_model {
    ($name:ident, $policy:ty) => {
        #[test]
        fn $name() {
            static A: Allocator<$policy> = Allocator::new();
            fn prop(ops: Vec<Op>) -> TestResult {
                match run(&A, &ops) {
                    Ok(()) => TestResult::passed(),
                    Err(e) => TestResult::error(e),
                }
            }
            QuickCheck::new()
                .tests(tests())
                .max_tests(tests() * 2)
                .quickcheck(prop as fn(Vec<Op>) -> TestResult);
        }
    };
}

shadow_model!(shadow_model_minimal, Minimal);
shadow_model!(shadow_model_fast, Fast);
shadow_model!(shadow_model_balanced, Balanced);
shadow_model!(shadow_model_learning, Learning);
shadow_model!(shadow_model_research, Research);
shadow_model!(shadow_model_runtime, Runtime);

/// The pool's shadow model: sizes across every class and out of the pool, alignments up to
/// 4 KiB, up to 64 live blocks (so that spans fill, empty and are reused), realloc across
/// classes and in and out of the pool, alloc_zeroed of recycled blocks.
///
/// They run in the test runs of the pool's modes (features `fast`, `balanced`, `runtime`, and
/// the default): the other modes' runs would repeat them unchanged.
macro_rules! shadow_model_pool {
    ($name:ident, $policy:ty) => {
        #[test]
        #[cfg_attr(
            not(any(feature = "fast", feature = "balanced", feature = "runtime")),
            ignore = "run by the test runs of the pool's modes"
        )]
        fn $name() {
            static A: Allocator<$policy> = Allocator::new();
            fn prop(ops: PoolOps) -> TestResult {
                match run_with(&A, &ops.0, 64) {
                    Ok(()) => TestResult::passed(),
                    Err(e) => TestResult::error(e),
                }
            }
            // Half as many sequences as the other models: each is longer, with more live blocks.
            QuickCheck::new()
                .tests(tests() / 2)
                .max_tests(tests())
                .quickcheck(prop as fn(PoolOps) -> TestResult);
        }
    };
}

shadow_model_pool!(shadow_model_pool_fast, Fast);
shadow_model_pool!(shadow_model_pool_balanced, Balanced);
shadow_model_pool!(shadow_model_pool_runtime, Runtime);

/// All six policies in one process, their blocks interleaved: allocations of one never disturb
/// another, and each frees only its own.
#[test]
fn six_policies_side_by_side() {
    static MINIMAL: Allocator<Minimal> = Allocator::new();
    static FAST: Allocator<Fast> = Allocator::new();
    static BALANCED: Allocator<Balanced> = Allocator::new();
    static LEARNING: Allocator<Learning> = Allocator::new();
    static RESEARCH: Allocator<Research> = Allocator::new();
    static RUNTIME: Allocator<Runtime> = Allocator::new();
    let all: [&dyn GlobalAlloc; 6] = [&MINIMAL, &FAST, &BALANCED, &LEARNING, &RESEARCH, &RUNTIME];
    let sizes = [24usize, 1000, 70_000, 600 << 10, 3 << 20];
    let mut blocks = Vec::new();
    for round in 0..4u8 {
        for (i, a) in all.iter().enumerate() {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, 16).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { a.alloc(layout) };
                check_block(p, layout).unwrap();
                let seed = round ^ (i as u8) << 4 ^ size as u8;
                // SAFETY: `p` holds `size` bytes.
                unsafe { fill(p, size, seed) };
                blocks.push((i, p, layout, seed));
            }
        }
    }
    let live: Vec<Live> = blocks
        .iter()
        .map(|&(_, ptr, layout, seed)| Live { ptr, layout, seed })
        .collect();
    check_disjoint(&live).unwrap();
    for (i, p, layout, seed) in blocks {
        // SAFETY: `p` holds `layout.size()` bytes.
        assert_eq!(unsafe { holds(p, layout.size(), seed) }, None, "policy {i}");
        // SAFETY: allocated by `all[i]` with `layout`.
        unsafe { all[i].dealloc(p, layout) };
    }
    assert!(
        BALANCED.stats().mmap_allocs >= 8,
        "BALANCED counts its large blocks: {}",
        BALANCED.stats()
    );
    assert_eq!(
        MINIMAL.stats().mmap_allocs,
        0,
        "MINIMAL keeps no statistics"
    );
    // Every allocation took one path, each counted: the pool (the three small sizes; the system
    // path where the pool could not reserve its region, as under valgrind, whose address space
    // holds only a few 16 GiB regions), the system path or BigCache for the contested 600 KiB,
    // BigCache for 3 MiB.
    let s = LEARNING.stats();
    let n = (4 * sizes.len()) as u64;
    assert_eq!(
        (
            s.pool_allocs + s.system_allocs + s.bigcache_hits + s.bigcache_misses,
            s.pool_frees + s.system_frees + s.mmap_frees
        ),
        (n, n),
        "LEARNING counts every allocation and free: {s}"
    );
}

/// RESEARCH poisons fresh small blocks (0xA5) so uninitialised reads stand out; `alloc_zeroed`
/// still gives zeros.
#[test]
fn research_poisons_fresh_small_blocks() {
    static RESEARCH: Allocator<Research> = Allocator::new();
    for align in [8, 64] {
        let layout = Layout::from_size_align(300, align).unwrap();
        // SAFETY: valid layout; both blocks are freed with it.
        unsafe {
            let p = RESEARCH.alloc(layout);
            let z = RESEARCH.alloc_zeroed(layout);
            assert!((0..300).all(|i| p.add(i).read() == 0xA5), "align {align}");
            assert!((0..300).all(|i| z.add(i).read() == 0), "align {align}");
            RESEARCH.dealloc(p, layout);
            RESEARCH.dealloc(z, layout);
        }
    }
}
