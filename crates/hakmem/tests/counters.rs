//! The counters under threads: every mode that counts gives exact figures once its threads have
//! joined. Each thread counts the pool's events in its own heap with plain stores, and the other
//! events in shards of atomics; a lost update (two threads' plain stores to one counter, a shard
//! written without an atomic) shows as a total below what the threads did.
//!
//! Four producers allocate small blocks of varied sizes (the pool's path, or the system's in a
//! policy without a pool) and large ones (BigCache's path), free half of the small ones
//! themselves and hand the rest to a consumer thread that never allocates (so it has no heap in
//! the pool: its frees are counted in the shared counters).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;
use std::thread;

use hakmem::mode::{Balanced, Learning, Research, Runtime};
use hakmem::parts::{Off, On, Parts};
use hakmem::{Allocator, Config, Policy, Stats, StatsLevel};

const PRODUCERS: usize = 4;
/// Rounds per producer; each allocates [`SMALL_PER_ROUND`] small blocks and one large one.
const ROUNDS: usize = 400;
const SMALL_PER_ROUND: usize = 32;
/// Large blocks: BigCache's 2 MiB class.
const LARGE: usize = 2 << 20;

/// A block sent to the consumer.
struct Block(*mut u8, Layout);
// SAFETY: a block is owned by one thread at a time: the producer gives it up when it sends it.
unsafe impl Send for Block {}

/// What the threads did: small and large blocks allocated and freed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Done {
    allocs: u64,
    frees: u64,
    large_allocs: u64,
    large_frees: u64,
}

/// Runs the producers and the consumer on `a`, joins them, and says what they did.
fn exercise<P: Policy>(a: &'static Allocator<P>) -> Done {
    let (tx, rx) = mpsc::channel::<Block>();
    let consumer = thread::spawn(move || {
        let mut n = 0u64;
        for Block(p, layout) in rx {
            // SAFETY: a live block of `a`, allocated with `layout`, given up by its producer.
            unsafe { a.dealloc(p, layout) };
            n += 1;
        }
        n
    });
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut local = 0u64;
                let mut blocks = Vec::with_capacity(SMALL_PER_ROUND);
                for round in 0..ROUNDS {
                    for i in 0..SMALL_PER_ROUND {
                        let size = 16 + (i * 97 + round * 31 + t * 7) % 4000;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: non-zero size.
                        let p = unsafe { a.alloc(layout) };
                        assert!(!p.is_null());
                        blocks.push(Block(p, layout));
                    }
                    for (i, b) in blocks.drain(..).enumerate() {
                        if i % 2 == 0 {
                            // SAFETY: a live block of `a`, allocated with `b.1`.
                            unsafe { a.dealloc(b.0, b.1) };
                            local += 1;
                        } else {
                            tx.send(b).unwrap();
                        }
                    }
                    let layout = Layout::from_size_align(LARGE, 16).unwrap();
                    // SAFETY: non-zero size; freed at once with its layout.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        a.dealloc(p, layout);
                    }
                }
                local
            })
        })
        .collect();
    drop(tx);
    let local: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let remote = consumer.join().unwrap();
    let rounds = (PRODUCERS * ROUNDS) as u64;
    let small = rounds * SMALL_PER_ROUND as u64;
    assert_eq!(local + remote, small, "every small block was freed");
    Done {
        allocs: small + rounds,
        frees: local + remote + rounds,
        large_allocs: rounds,
        large_frees: rounds,
    }
}

/// What the counters say the threads did, as far as `s.level` counts (what it does not count is
/// taken from `done`).
fn counted(s: &Stats, done: &Done) -> Done {
    if s.level >= StatsLevel::Full {
        // Every allocation took one path; a learning mode's large ones, routed by the learner,
        // may be the system's.
        Done {
            allocs: s.pool_allocs + s.system_allocs + s.bigcache_hits + s.bigcache_misses,
            frees: s.pool_frees + s.system_frees + s.mmap_frees,
            large_allocs: done.large_allocs,
            large_frees: done.large_frees,
        }
    } else {
        Done {
            allocs: done.allocs,
            frees: done.frees,
            large_allocs: s.bigcache_hits + s.bigcache_misses,
            large_frees: s.mmap_frees,
        }
    }
}

fn check<P: Policy>(a: &'static Allocator<P>) {
    let done = exercise(a);
    let s = a.stats();
    if s.level > StatsLevel::None {
        assert_eq!(counted(&s, &done), done, "{}: {s}", P::NAME);
    }
}

#[test]
fn balanced_counts_exactly_under_threads() {
    static A: Allocator<Balanced> = Allocator::new();
    check(&A);
}

#[test]
fn learning_counts_exactly_under_threads() {
    static A: Allocator<Learning> = Allocator::new();
    check(&A);
    assert!(
        A.stats().pool_allocs > 0,
        "LEARNING's small blocks are the pool's"
    );
}

#[test]
fn research_counts_exactly_under_threads() {
    static A: Allocator<Research> = Allocator::new();
    check(&A);
    assert!(
        A.stats().pool_allocs > 0,
        "RESEARCH's small blocks are the pool's"
    );
}

/// The runtime twin, in whatever mode `HAKMEM_MODE` names (`cargo xtask test` runs this file
/// under each).
#[test]
fn runtime_counts_exactly_under_threads() {
    static A: Allocator<Runtime> = Allocator::new();
    check(&A);
}

/// Every small allocation through the system path: counted in the shared counters alone.
struct SystemCounting;

/// BigCache, the batch and the counters.
struct CacheAndCounters;
impl Parts for CacheAndCounters {
    type BigCache = On;
    type Batch = On;
    type Learner = Off;
    type Sites = Off;
    type Pool = Off;
    type Counters = On;
}

impl Policy for SystemCounting {
    const NAME: &'static str = "system-counting";
    type Parts = CacheAndCounters;
    const CONFIG: Config = Config {
        pool: false,
        stats: StatsLevel::Full,
        ..Config::BALANCED
    };
}

#[test]
fn counting_without_a_pool_is_exact_under_threads() {
    static A: Allocator<SystemCounting> = Allocator::new();
    check(&A);
    assert!(A.stats().system_allocs > 0);
}
