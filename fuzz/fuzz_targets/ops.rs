//! Operation sequences against every mode: each input is decoded (`arbitrary`) into a list of
//! alloc / alloc_zeroed / alloc_at / realloc / free operations and run, one after another,
//! against all six policies (the five compiled modes and `Runtime`, which is BALANCED here),
//! each checked against a shadow model after every operation:
//!
//! - every request of at most 8 MiB aligned to at most 1 MiB succeeds, aligned;
//! - no two live blocks overlap;
//! - `alloc_zeroed` gives zeros;
//! - every live block keeps the pattern written into it (realloc: up to the smaller size).
//!
//! FAST, BALANCED and `Runtime` serve every request below 512 KiB aligned to at most 64 KiB from
//! the pool (docs/pool.md). Two operations are there for it: a *remote free* hands a block to
//! another thread, which checks and frees it at the next flush (a push on its span's remote
//! stack, collected later by the owner), and a *burst* allocates up to 256 blocks of one size at
//! once (filling spans, taking new ones) and frees them in an order the input picks, or lets the
//! other thread free them — so spans empty out, are cached, given back to the region and reused.
//!
//! A violated rule panics, which libFuzzer reports as a crash with the input that caused it.
//! Run it with `cargo xtask fuzz` (docs/reliability.md).

#![no_main]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::thread;

use arbitrary::Arbitrary;
use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::{Allocator, Policy, Site};
use libfuzzer_sys::fuzz_target;

const MAX_LIVE: usize = 32;

/// A size, log-uniform in 1 B ..= 8 MiB: `2^(bits % 24)` plus a fraction of that.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Size {
    bits: u8,
    low: u32,
}

impl Size {
    fn bytes(self) -> usize {
        let base = 1usize << (self.bits % 24);
        base + self.low as usize % base
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Alloc {
        size: Size,
        /// log2 of the alignment, 0 ..= 20 (1 B ..= 1 MiB).
        align: u8,
        zeroed: bool,
        /// 0: `GlobalAlloc::alloc`; otherwise `alloc_at` with this site.
        site: u8,
    },
    Realloc {
        slot: u8,
        size: Size,
    },
    Free {
        slot: u8,
    },
    /// Hands the block to another thread, which frees it at the next `Flush` (or at the end).
    FreeRemote {
        slot: u8,
    },
    /// Another thread checks and frees the blocks handed to it.
    Flush,
    /// `count % 64 + 1` times 4 blocks of one size (at most 16 KiB), all live at once, then
    /// freed: `order` 0 in order, 1 in reverse, 2 every other one first, 3 by another thread.
    /// (Their first and last 8 bytes carry the pattern: a burst is about spans, not bytes.)
    Burst {
        size: Size,
        count: u8,
        order: u8,
    },
}

/// A live block in the model.
#[derive(Clone, Copy)]
struct Live {
    ptr: *mut u8,
    layout: Layout,
    seed: u8,
}

/// The offsets written and checked: both ends fully and a sparse stride between, so that an
/// 8 MiB block costs a few hundred bytes.
fn probes(size: usize) -> impl Iterator<Item = usize> {
    let edge = size.min(64);
    let stride = (size / 64).max(509) | 1;
    (0..edge)
        .chain((edge..size.saturating_sub(64)).step_by(stride))
        .chain(size.saturating_sub(64).max(edge)..size)
}

fn pattern(seed: u8, at: usize) -> u8 {
    seed ^ (at as u8).wrapping_mul(31) ^ (at >> 12) as u8
}

fn check_block(ptr: *mut u8, layout: Layout, what: &str) {
    assert!(!ptr.is_null(), "{what}: null for {layout:?}");
    assert_eq!(
        ptr as usize % layout.align(),
        0,
        "{what}: {ptr:p} for {layout:?}"
    );
}

/// A block crossing threads.
struct Sent(Live);
// SAFETY: a block is memory the receiving thread may use and free; nothing else refers to it.
unsafe impl Send for Sent {}

/// Work for the other thread, and where to say it is done.
type Job = (Box<dyn FnOnce() + Send>, SyncSender<()>);

/// Runs `job` on the other thread — one thread for the whole run, which never allocates from
/// the allocators under test, so every free it makes is a remote one — and waits for it. (A
/// panic there aborts the process: libFuzzer reports it.)
fn on_other_thread(job: impl FnOnce() + Send + 'static) {
    static OTHER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    let other = OTHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::spawn(move || {
            for (job, done) in rx {
                job();
                done.send(()).unwrap();
            }
        });
        Mutex::new(tx)
    });
    let (done, wait) = mpsc::sync_channel(1);
    other.lock().unwrap().send((Box::new(job), done)).unwrap();
    wait.recv().unwrap();
}

/// Checks and frees `blocks` on the other thread.
fn free_remotely<P: Policy>(a: &'static Allocator<P>, blocks: Vec<Sent>) {
    if blocks.is_empty() {
        return;
    }
    on_other_thread(move || {
        for Sent(b) in blocks {
            holds(&b, P::NAME);
            // SAFETY: a live block of `a` with its layout, freed once.
            unsafe { a.dealloc(b.ptr, b.layout) };
        }
    });
}

/// A burst (see [`Op::Burst`]); `live` are the blocks live meanwhile.
fn burst<P: Policy>(a: &'static Allocator<P>, live: &[Live], size: Size, count: u8, order: u8) {
    let size = size.bytes().min(16 << 10);
    let layout = Layout::from_size_align(size, 8).unwrap();
    let n = (count as usize % 64 + 1) * 4;
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: a valid layout with a non-zero size.
        let ptr = unsafe { a.alloc(layout) };
        check_block(ptr, layout, P::NAME);
        let seed = i as u8 ^ count;
        fill_ends(ptr, size, seed);
        blocks.push(Live { ptr, layout, seed });
    }
    let all: Vec<Live> = live.iter().chain(blocks.iter()).copied().collect();
    disjoint(&all, P::NAME);
    match order % 4 {
        0 => {}
        1 => blocks.reverse(),
        2 => {
            let (even, odd): (Vec<_>, Vec<_>) = blocks
                .into_iter()
                .enumerate()
                .partition(|(i, _)| i % 2 == 0);
            blocks = even.into_iter().chain(odd).map(|(_, b)| b).collect();
        }
        _ => {
            let blocks: Vec<Sent> = blocks.into_iter().map(Sent).collect();
            return on_other_thread(move || free_burst(a, blocks));
        }
    }
    free_burst(a, blocks.into_iter().map(Sent).collect());
}

/// Checks the ends of a burst's blocks and frees them.
fn free_burst<P: Policy>(a: &Allocator<P>, blocks: Vec<Sent>) {
    for Sent(b) in blocks {
        holds_ends(&b, P::NAME);
        // SAFETY: a live block of `a` with its layout, freed once.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
}

/// The live blocks: those of this thread and those handed to another one.
fn all_live(live: &[Live], remote: &[Sent]) -> Vec<Live> {
    live.iter()
        .chain(remote.iter().map(|s| &s.0))
        .copied()
        .collect()
}

fn run<P: Policy>(a: &'static Allocator<P>, ops: &[Op]) {
    let mut live: Vec<Live> = Vec::new();
    // Blocks handed to another thread, not yet freed (still live).
    let mut remote: Vec<Sent> = Vec::new();
    for (step, &op) in ops.iter().enumerate() {
        let step_seed = step as u8;
        match op {
            Op::Alloc {
                size,
                align,
                zeroed,
                site,
            } => {
                if live.len() + remote.len() >= MAX_LIVE {
                    continue;
                }
                let layout = Layout::from_size_align(size.bytes(), 1 << (align % 21)).unwrap();
                // SAFETY: a valid layout with a non-zero size.
                let ptr = unsafe {
                    match (zeroed, site) {
                        (true, _) => a.alloc_zeroed(layout),
                        (false, 0) => a.alloc(layout),
                        (false, s) => a.alloc_at(layout, Site::from_raw(u64::from(s))),
                    }
                };
                check_block(ptr, layout, P::NAME);
                if zeroed {
                    for at in probes(layout.size()) {
                        // SAFETY: `at < size`.
                        let byte = unsafe { ptr.add(at).read() };
                        assert_eq!(byte, 0, "{}: alloc_zeroed({layout:?}) byte {at}", P::NAME);
                    }
                }
                let seed = step_seed.wrapping_mul(13) ^ layout.size() as u8;
                fill(ptr, layout.size(), seed);
                live.push(Live { ptr, layout, seed });
            }
            Op::Realloc { slot, size } => {
                if live.is_empty() {
                    continue;
                }
                let i = slot as usize % live.len();
                let (old, new_size) = (&live[i], size.bytes());
                holds(old, P::NAME);
                // SAFETY: a live block of `a` with its layout; a non-zero new size.
                let ptr = unsafe { a.realloc(old.ptr, old.layout, new_size) };
                let layout = Layout::from_size_align(new_size, old.layout.align()).unwrap();
                check_block(ptr, layout, P::NAME);
                let kept = old.layout.size().min(new_size);
                for at in probes(old.layout.size()).filter(|&at| at < kept) {
                    // SAFETY: `at < kept <= new_size`.
                    let byte = unsafe { ptr.add(at).read() };
                    assert_eq!(
                        byte,
                        pattern(old.seed, at),
                        "{}: realloc {:?} -> {new_size} lost byte {at}",
                        P::NAME,
                        old.layout
                    );
                }
                let seed = old.seed.wrapping_add(1);
                fill(ptr, new_size, seed);
                live[i] = Live { ptr, layout, seed };
            }
            Op::Free { slot } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(slot as usize % live.len());
                holds(&b, P::NAME);
                // SAFETY: a live block of `a` with its layout, freed once.
                unsafe { a.dealloc(b.ptr, b.layout) };
            }
            Op::FreeRemote { slot } => {
                if live.is_empty() {
                    continue;
                }
                remote.push(Sent(live.swap_remove(slot as usize % live.len())));
            }
            Op::Flush => free_remotely(a, std::mem::take(&mut remote)),
            Op::Burst { size, count, order } => {
                burst(a, &all_live(&live, &remote), size, count, order)
            }
        }
        disjoint(&all_live(&live, &remote), P::NAME);
    }
    free_remotely(a, remote);
    for b in live {
        holds(&b, P::NAME);
        // SAFETY: as above.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
}

/// The offsets a burst's blocks carry their pattern at.
fn ends(size: usize) -> impl Iterator<Item = usize> {
    (0..size.min(8)).chain(size.saturating_sub(8).max(8)..size)
}

fn fill_ends(ptr: *mut u8, size: usize, seed: u8) {
    for at in ends(size) {
        // SAFETY: `ptr` holds `size` bytes and `at < size`.
        unsafe { ptr.add(at).write(pattern(seed, at)) };
    }
}

fn holds_ends(b: &Live, policy: &str) {
    for at in ends(b.layout.size()) {
        // SAFETY: a live block of `b.layout.size()` bytes, `at` below it.
        let byte = unsafe { b.ptr.add(at).read() };
        assert_eq!(
            byte,
            pattern(b.seed, at),
            "{policy}: burst block {:p} {:?} corrupted at byte {at}",
            b.ptr,
            b.layout
        );
    }
}

fn fill(ptr: *mut u8, size: usize, seed: u8) {
    for at in probes(size) {
        // SAFETY: `ptr` holds `size` bytes and `at < size`.
        unsafe { ptr.add(at).write(pattern(seed, at)) };
    }
}

fn holds(b: &Live, policy: &str) {
    for at in probes(b.layout.size()) {
        // SAFETY: a live block of `b.layout.size()` bytes, `at` below it.
        let byte = unsafe { b.ptr.add(at).read() };
        assert_eq!(
            byte,
            pattern(b.seed, at),
            "{policy}: block {:p} {:?} corrupted at byte {at}",
            b.ptr,
            b.layout
        );
    }
}

fn disjoint(live: &[Live], policy: &str) {
    let ranges: BTreeMap<usize, usize> = live
        .iter()
        .map(|b| (b.ptr as usize, b.ptr as usize + b.layout.size()))
        .collect();
    assert_eq!(
        ranges.len(),
        live.len(),
        "{policy}: two live blocks share an address"
    );
    let mut end = 0;
    for (&start, &stop) in &ranges {
        assert!(start >= end, "{policy}: live blocks overlap at {start:#x}");
        end = stop;
    }
}

static MINIMAL: Allocator<Minimal> = Allocator::new();
static FAST: Allocator<Fast> = Allocator::new();
static BALANCED: Allocator<Balanced> = Allocator::new();
static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();
static RUNTIME: Allocator<Runtime> = Allocator::new();

fuzz_target!(|ops: Vec<Op>| {
    run(&MINIMAL, &ops);
    run(&FAST, &ops);
    run(&BALANCED, &ops);
    run(&LEARNING, &ops);
    run(&RESEARCH, &ops);
    run(&RUNTIME, &ops);
});
