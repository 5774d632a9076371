//! The workloads of hakmem's benchmark matrix (SPEC §5), shared by the wall-clock bench binary
//! (`benches/src/bin/bench.rs`, one allocator per build, through `#[global_allocator]`) and the
//! instruction-count benches (through an `Allocator<P>` value).
//!
//! Every scenario is a function generic over the allocator, `A: GlobalAlloc + Sync`, that runs
//! once and returns how many operations it did; [`run`] picks one by name. Inputs come from a
//! fixed-seed xorshift generator, so every run does the same work. Large blocks are touched one
//! byte per 4 KiB page, as the C original's benchmarks did: a cached block costs the touch, a
//! fresh mapping costs a page fault per page.
//!
//! ```
//! use hakmem_scenarios::{run, Params, Global};
//! let ops = run("tiny", &Global, &Params { scale: 0.001, threads: 2 }).unwrap();
//! assert_eq!(ops, 1000);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::mpsc;

/// Alignment of every block the scenarios ask for (what a `Vec<u64>` or a C `malloc` needs).
const ALIGN: usize = 8;
const PAGE: usize = 4096;

/// A scenario of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The name used on command lines and in reports.
    pub name: &'static str,
    /// One line: what it does and what it stresses.
    pub about: &'static str,
    /// Whether a first, unmeasured pass should bring the allocator to steady state. `false`
    /// for scenarios that measure a cold process.
    pub warmup: bool,
}

/// Every scenario, in report order.
pub const SCENARIOS: [Scenario; 10] = [
    Scenario { name: "json", about: "64 KiB alloc + touch + free, 1,000 times (C original: JSON parser)", warmup: true },
    Scenario { name: "mir", about: "256 KiB alloc + touch + free, 100 times (C original: compiler IR)", warmup: true },
    Scenario { name: "vm", about: "2 MiB alloc + touch + free, 100 times (C original: VM heap; BigCache's case)", warmup: true },
    Scenario { name: "mixed", about: "64 live slots, 10,000 replacements, sizes log-uniform 16 B - 4 MiB, touched", warmup: true },
    Scenario { name: "vm-cold", about: "100 live 2 MiB blocks in a fresh process, every page touched (first-touch faults; THP)", warmup: false },
    Scenario { name: "tiny", about: "32 B alloc + free, 1,000,000 times (the small-object hot path)", warmup: true },
    Scenario { name: "small", about: "1,000 live objects 16 B - 4 KiB: alloc all, free all, 300 rounds", warmup: true },
    Scenario { name: "realloc-grow", about: "1 KiB grown to 64 MiB by doubling realloc, new half touched, 8 times", warmup: true },
    Scenario { name: "larson", about: "threads replace objects 16 B - 1 KiB in arrays passed to the next thread each round (cross-thread frees)", warmup: true },
    Scenario { name: "xmalloc", about: "producer threads allocate 16 B - 512 B, consumer threads free (all frees remote)", warmup: true },
];

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Multiplies every iteration count (1.0 = the matrix's sizes; smoke runs use less).
    pub scale: f64,
    /// Threads for the threaded scenarios (larson, xmalloc): the available cores.
    pub threads: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            scale: 1.0,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl Params {
    /// `base` iterations scaled, at least 1.
    fn n(&self, base: u64) -> u64 {
        ((base as f64 * self.scale) as u64).max(1)
    }
}

/// Runs the scenario `name` once with `a`. Returns the number of operations done, or `None`
/// for an unknown name.
pub fn run<A: GlobalAlloc + Sync>(name: &str, a: &A, p: &Params) -> Option<u64> {
    Some(match name {
        "json" => cycle(a, 64 << 10, p.n(1000)),
        "mir" => cycle(a, 256 << 10, p.n(100)),
        "vm" => cycle(a, 2 << 20, p.n(100)),
        "mixed" => mixed(a, p.n(10_000)),
        "vm-cold" => vm_cold(a, p.n(100)),
        "tiny" => tiny(a, p.n(1_000_000)),
        "small" => small(a, p.n(300)),
        "realloc-grow" => realloc_grow(a, p.n(8)),
        "larson" => larson(a, p.threads.max(2), p.n(10)),
        "xmalloc" => xmalloc(a, (p.threads / 2).max(1), p.n(200_000)),
        _ => return None,
    })
}

/// The global allocator (whatever `#[global_allocator]` the binary has) as a value, so that the
/// same scenario code runs through it or through an `Allocator<P>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

// SAFETY: forwards every call to the global allocator, which upholds the contract.
unsafe impl GlobalAlloc for Global {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { std::alloc::alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { std::alloc::dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { std::alloc::alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { std::alloc::realloc(ptr, layout, new_size) }
    }
}

/// A fixed-seed xorshift64 generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Log-uniform in `[2^lo, 2^hi)`.
    pub fn log_uniform(&mut self, lo: u32, hi: u32) -> usize {
        let bits = lo + (self.next_u64() % u64::from(hi - lo)) as u32;
        (1usize << bits) + (self.next_u64() as usize & ((1usize << bits) - 1))
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, ALIGN).expect("scenario sizes are small")
}

/// Allocates `size` bytes from `a`, ending the process if it fails (as std does).
pub fn alloc<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    let layout = layout(size);
    // SAFETY: non-zero size.
    let p = unsafe { a.alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    p
}

/// Frees a block of `size` bytes from [`alloc`].
///
/// # Safety
/// `p` came from `alloc(a, size)` (or a realloc to `size`) and is not used afterwards.
pub unsafe fn free<A: GlobalAlloc>(a: &A, p: *mut u8, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { a.dealloc(p, layout(size)) }
}

/// Writes one byte per 4 KiB page of `[p + from, p + to)`.
///
/// # Safety
/// `p` holds at least `to` bytes.
pub unsafe fn touch(p: *mut u8, from: usize, to: usize) {
    for off in (from..to).step_by(PAGE) {
        // SAFETY: `off < to`, inside the block.
        unsafe { p.add(off).write_volatile(off as u8) };
    }
}

/// `n` times: allocate `size` bytes, touch every page, free. (json, mir, vm)
pub fn cycle<A: GlobalAlloc>(a: &A, size: usize, n: u64) -> u64 {
    for _ in 0..n {
        let p = alloc(a, size);
        // SAFETY: `p` holds `size` bytes and is freed once.
        unsafe {
            touch(p, 0, size);
            free(a, black_box(p), size);
        }
    }
    n
}

/// One allocation and free of 32 bytes, `n` times. (tiny)
pub fn tiny<A: GlobalAlloc>(a: &A, n: u64) -> u64 {
    for _ in 0..n {
        let p = alloc(a, 32);
        // SAFETY: freed once, right away.
        unsafe { free(a, black_box(p), 32) };
    }
    n
}

/// 64 slots, `n` replacements with log-uniform sizes 16 B – 4 MiB, each block touched. (mixed)
pub fn mixed<A: GlobalAlloc>(a: &A, n: u64) -> u64 {
    let mut rng = Rng::new(0x5EED_0001);
    let mut slots = [(std::ptr::null_mut::<u8>(), 0usize); 64];
    for _ in 0..n {
        let slot = &mut slots[(rng.next_u64() % 64) as usize];
        if !slot.0.is_null() {
            // SAFETY: the slot's block, freed once.
            unsafe { free(a, slot.0, slot.1) };
        }
        let size = rng.log_uniform(4, 22);
        let p = alloc(a, size);
        // SAFETY: `p` holds `size` bytes.
        unsafe { touch(p, 0, size) };
        *slot = (p, size);
    }
    for (p, size) in slots {
        if !p.is_null() {
            // SAFETY: each live block once.
            unsafe { free(a, p, size) };
        }
    }
    n
}

/// `n` blocks of 2 MiB allocated and fully touched while all live, then freed. (vm-cold)
pub fn vm_cold<A: GlobalAlloc>(a: &A, n: u64) -> u64 {
    const SIZE: usize = 2 << 20;
    let blocks: Vec<*mut u8> = (0..n)
        .map(|_| {
            let p = alloc(a, SIZE);
            // SAFETY: `p` holds SIZE bytes.
            unsafe { touch(p, 0, SIZE) };
            p
        })
        .collect();
    for p in blocks {
        // SAFETY: each block once.
        unsafe { free(a, p, SIZE) };
    }
    n
}

/// `rounds` times: 1,000 objects of 16 B – 4 KiB allocated, first byte written, all freed.
/// Returns alloc+free pairs. (small)
pub fn small<A: GlobalAlloc>(a: &A, rounds: u64) -> u64 {
    const LIVE: usize = 1000;
    let mut rng = Rng::new(0x5EED_0002);
    let mut live = vec![(std::ptr::null_mut::<u8>(), 0usize); LIVE];
    for _ in 0..rounds {
        for slot in live.iter_mut() {
            let size = rng.log_uniform(4, 12);
            let p = alloc(a, size);
            // SAFETY: `p` holds at least one byte.
            unsafe { p.write(size as u8) };
            *slot = (p, size);
        }
        for &(p, size) in live.iter() {
            // SAFETY: each block once.
            unsafe { free(a, p, size) };
        }
    }
    rounds * LIVE as u64
}

/// `n` times: a 1 KiB block grown to 64 MiB by doubling `realloc`, the new half touched each
/// time. Returns reallocs. (realloc-grow)
pub fn realloc_grow<A: GlobalAlloc>(a: &A, n: u64) -> u64 {
    const START: usize = 1 << 10;
    const END: usize = 64 << 20;
    let mut reallocs = 0;
    for _ in 0..n {
        let mut size = START;
        let mut p = alloc(a, size);
        // SAFETY: `p` holds `size` bytes; every realloc keeps the block's layout in step.
        unsafe {
            touch(p, 0, size);
            while size < END {
                let q = a.realloc(p, layout(size), size * 2);
                if q.is_null() {
                    std::alloc::handle_alloc_error(layout(size * 2));
                }
                p = q;
                touch(p, size, size * 2);
                size *= 2;
                reallocs += 1;
            }
            free(a, p, size);
        }
    }
    reallocs
}

/// Larson-style server churn: `threads` threads, `rounds` rounds; in each round every thread
/// replaces random objects (16 B – 1 KiB) of an array of 1,000 that the previous round's
/// neighbour filled, so most frees are of blocks another thread allocated. Returns replacements.
pub fn larson<A: GlobalAlloc + Sync>(a: &A, threads: usize, rounds: u64) -> u64 {
    const SLOTS: usize = 1000;
    const OPS: u64 = 5000;
    // Pointers travel between threads as addresses.
    let mut arrays: Vec<Vec<(usize, usize)>> = vec![vec![(0, 0); SLOTS]; threads];
    for round in 0..rounds {
        arrays.rotate_left(1);
        std::thread::scope(|s| {
            for (t, array) in arrays.iter_mut().enumerate() {
                s.spawn(move || {
                    let mut rng = Rng::new(0x1A25_0000 + round * 64 + t as u64);
                    for _ in 0..OPS {
                        let slot = &mut array[(rng.next_u64() % SLOTS as u64) as usize];
                        if slot.0 != 0 {
                            // SAFETY: the slot's block, freed once.
                            unsafe { free(a, slot.0 as *mut u8, slot.1) };
                        }
                        let size = 16 + (rng.next_u64() % 1009) as usize;
                        let p = alloc(a, size);
                        // SAFETY: `p` holds `size` bytes.
                        unsafe { p.write(size as u8) };
                        *slot = (p as usize, size);
                    }
                });
            }
        });
    }
    for (p, size) in arrays.into_iter().flatten() {
        if p != 0 {
            // SAFETY: each live block once.
            unsafe { free(a, p as *mut u8, size) };
        }
    }
    threads as u64 * rounds * OPS
}

/// xmalloc-style producer/consumer: `pairs` producer threads allocate `n` objects each (16 B –
/// 512 B, first byte written) and hand them, 64 at a time, to a consumer thread that checks and
/// frees them. Every free is remote. Returns objects.
pub fn xmalloc<A: GlobalAlloc + Sync>(a: &A, pairs: usize, n: u64) -> u64 {
    const BATCH: usize = 64;
    std::thread::scope(|s| {
        for pair in 0..pairs {
            let (tx, rx) = mpsc::sync_channel::<[(usize, usize); BATCH]>(16);
            s.spawn(move || {
                let mut rng = Rng::new(0xC0FFEE + pair as u64);
                let mut batch = [(0, 0); BATCH];
                let mut filled = 0;
                for _ in 0..n {
                    let size = 16 + (rng.next_u64() % 497) as usize;
                    let p = alloc(a, size);
                    // SAFETY: `p` holds `size` bytes.
                    unsafe { p.write(size as u8) };
                    batch[filled] = (p as usize, size);
                    filled += 1;
                    if filled == BATCH {
                        tx.send(batch).expect("consumer alive");
                        filled = 0;
                    }
                }
                for &(p, size) in &batch[..filled] {
                    // SAFETY: the remainder, never sent: freed here once.
                    unsafe { free(a, p as *mut u8, size) };
                }
            });
            s.spawn(move || {
                for batch in rx {
                    for (p, size) in batch {
                        let p = p as *mut u8;
                        // SAFETY: a live block of `size` bytes handed over by the producer.
                        unsafe {
                            assert_eq!(p.read(), size as u8, "xmalloc: block corrupted in transit");
                            free(a, p, size);
                        }
                    }
                }
            });
        }
    });
    pairs as u64 * n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_runs_and_names_are_unique() {
        let p = Params {
            scale: 0.01,
            threads: 2,
        };
        for s in SCENARIOS {
            let ops = run(s.name, &std::alloc::System, &p).unwrap();
            assert!(ops > 0, "{}", s.name);
        }
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
        assert!(run("nope", &std::alloc::System, &p).is_none());
    }

    #[test]
    fn full_scale_counts() {
        // The counts the matrix reports per op (scale 1) without running the big ones.
        let p = Params {
            scale: 1.0,
            threads: 4,
        };
        assert_eq!(p.n(1000), 1000);
        assert_eq!(Params { scale: 0.0001, ..p }.n(100), 1);
        assert_eq!(realloc_grow(&std::alloc::System, 1), 16);
        assert_eq!(larson(&std::alloc::System, 2, 1), 2 * 5000);
        assert_eq!(xmalloc(&std::alloc::System, 2, 1000), 2000);
    }

    #[test]
    fn log_uniform_stays_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let s = rng.log_uniform(4, 22);
            assert!((16..4 << 20).contains(&s), "{s}");
        }
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
    }
}

/// The workloads of hakmem's learning tests and trace (docs/learning.md): each is a
/// *round* of allocations, repeated by the caller until the learner has decided.
pub mod learning {
    use std::alloc::GlobalAlloc;
    use std::hint::black_box;

    use super::{alloc, free, touch};

    /// Allocations in one round of [`steady_round`].
    pub const STEADY_ROUND: u64 = 256;
    /// The contested sizes [`steady_round`] cycles through (one per round).
    pub const STEADY_SIZES: [usize; 4] = [640 << 10, 1536 << 10, 3 << 20, 5 << 20];

    /// A steady workload: 255 small blocks (16 B – 4 KiB, allocated and freed in turn) and one
    /// large block (640 KiB, 1.5, 3 or 5 MiB by turns, every page touched, freed at once).
    /// Returns the allocations made: [`STEADY_ROUND`].
    pub fn steady_round<A: GlobalAlloc>(a: &A, round: u64) -> u64 {
        let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..STEADY_ROUND - 1 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = 16 + (x % 4081) as usize;
            let p = alloc(a, size);
            // SAFETY: `p` holds `size` bytes; freed once.
            unsafe {
                p.write_volatile(x as u8);
                free(a, black_box(p), size);
            }
        }
        let size = STEADY_SIZES[(round % STEADY_SIZES.len() as u64) as usize];
        let p = alloc(a, size);
        // SAFETY: as above.
        unsafe {
            touch(p, 0, size);
            free(a, black_box(p), size);
        }
        STEADY_ROUND
    }

    /// Allocations in one round of [`cheapest_round`].
    pub const CHEAPEST_ROUND: u64 = 16;
    /// The two contested sizes of [`cheapest_round`].
    pub const CHEAPEST_SIZES: [usize; 2] = [520 << 10, 1 << 20];
    /// The `M_MMAP_THRESHOLD` glibc must be pinned at (`mallopt`, or the environment variable
    /// `MALLOC_MMAP_THRESHOLD_`) for [`cheapest_round`]: between its two sizes.
    pub const CHEAPEST_GLIBC_MMAP_THRESHOLD: usize = 768 << 10;
    /// The `M_TRIM_THRESHOLD` for [`cheapest_round`]: high, so that glibc keeps its heap.
    pub const CHEAPEST_GLIBC_TRIM_THRESHOLD: usize = 64 << 20;

    /// A workload with one clearly cheapest threshold, 748 KiB: blocks of 520 KiB and 1 MiB by
    /// turns, every page touched, freed at once, with 7 small blocks after each. With glibc's
    /// mmap threshold pinned at 768 KiB (and its trimming off), glibc keeps a freed 520 KiB block
    /// in its heap but maps and unmaps every 1 MiB block (256 page faults each time), while
    /// BigCache hands a 1 MiB block back without a fault but holds 520 KiB in a 1 MiB class
    /// block. So 1 MiB belongs to the large path (fewer faults) and 520 KiB to the system (fewer
    /// bytes): the threshold between them, 748 KiB, is the one candidate that does both. Returns
    /// the allocations made: [`CHEAPEST_ROUND`].
    pub fn cheapest_round<A: GlobalAlloc>(a: &A, round: u64) -> u64 {
        for size in CHEAPEST_SIZES {
            let p = alloc(a, size);
            // SAFETY: `p` holds `size` bytes; freed once.
            unsafe {
                touch(p, 0, size);
                free(a, black_box(p), size);
            }
            for i in 0..CHEAPEST_ROUND / 2 - 1 {
                let small = 16 + ((round + i) % 64) as usize * 16;
                let q = alloc(a, small);
                // SAFETY: as above.
                unsafe {
                    q.write_volatile(1);
                    free(a, black_box(q), small);
                }
            }
        }
        CHEAPEST_ROUND
    }

    /// The size of [`shifted_round`].
    pub const SHIFTED_SIZE: usize = 600 << 10;
    /// The `M_MMAP_THRESHOLD` glibc is pinned at for [`shifted_round`]: below its size.
    pub const SHIFTED_GLIBC_MMAP_THRESHOLD: usize = 512 << 10;
    /// The `M_TRIM_THRESHOLD` for [`shifted_round`]: glibc's default, so that its heap does not
    /// keep a free chunk big enough for the block.
    pub const SHIFTED_GLIBC_TRIM_THRESHOLD: usize = 128 << 10;

    /// The workload [`cheapest_round`] shifts to: 600 KiB blocks only (every page touched,
    /// freed at once, 7 small blocks after each), with glibc's mmap threshold pinned at 512 KiB
    /// and its heap trimmed, so that glibc maps and unmaps every one of them (150 faults) while
    /// BigCache hands them back: now only the smallest candidate, 512 KiB, sends them to the
    /// large path. Returns the allocations made: [`CHEAPEST_ROUND`].
    pub fn shifted_round<A: GlobalAlloc>(a: &A, round: u64) -> u64 {
        for half in 0..2 {
            let p = alloc(a, SHIFTED_SIZE);
            // SAFETY: `p` holds `SHIFTED_SIZE` bytes; freed once.
            unsafe {
                touch(p, 0, SHIFTED_SIZE);
                free(a, black_box(p), SHIFTED_SIZE);
            }
            for i in 0..CHEAPEST_ROUND / 2 - 1 {
                let small = 16 + ((round + i + half) % 64) as usize * 16;
                let q = alloc(a, small);
                // SAFETY: as above.
                unsafe {
                    q.write_volatile(1);
                    free(a, black_box(q), small);
                }
            }
        }
        CHEAPEST_ROUND
    }

    /// Allocations in one round of [`vm_pairs_round`].
    pub const VM_PAIRS_ROUND: u64 = 16;

    /// 2 MiB allocated and freed at once, untouched, [`VM_PAIRS_ROUND`] times: the `vm_pair`
    /// path of the instruction-count benches as a workload (all of it contested, nothing to tell
    /// the candidates apart but CPU time and a page of bytes). Returns the allocations made.
    pub fn vm_pairs_round<A: GlobalAlloc>(a: &A, _round: u64) -> u64 {
        for _ in 0..VM_PAIRS_ROUND {
            let p = alloc(a, 2 << 20);
            // SAFETY: freed once, right away.
            unsafe { free(a, black_box(p), 2 << 20) };
        }
        VM_PAIRS_ROUND
    }
}
