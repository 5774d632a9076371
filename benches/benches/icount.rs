//! Instruction counts of hakmem's hot paths: iai-callgrind library benchmarks, run and checked
//! by `cargo xtask icount` (docs/regression-analysis.md).
//!
//! Every path is measured for every policy type — the five compiled modes and `Runtime` in each
//! of the five modes (`HAKMEM_MODE` set per benchmark through iai-callgrind's environment
//! configuration; iai-callgrind clears the rest of the environment) — and, on the small-object
//! paths, for glibc (`std::alloc::System`), mimalloc and jemalloc (configured by
//! [`JEMALLOC_CONF`]) as reference rows. Each
//! allocator is a `static` value used through `GlobalAlloc`; the bench binary's own global
//! allocator stays glibc's and is never called inside the measured function. In FAST and
//! BALANCED, LEARNING and RESEARCH the pairs up to 256 KiB go through the small-object pool; [`Batch`], [`Fill`] and
//! [`RemoteFree`] exercise what a pair does not (a deep free list, carving and new spans, a free
//! from another thread).
//!
//! A benchmark is one process under callgrind. Its setup function (not counted) warms the
//! allocator with [`OPS`] operations of the path and prepares what the operation needs; the
//! measured function then runs [`OPS`] operations, so `Ir / OPS` is the steady-state cost of
//! one operation (loop included; a periodic event such as a learning tick every 1024
//! allocations is counted at its average rate). The teardown (not counted) frees what is left
//! and records whether the runtime configuration was read, for `cargo xtask icount`'s rules.
//!
//! Adding a path is one line in `paths!` at the bottom: `name: OpType;` (`name: OpType, peers;`
//! adds the reference rows). A new kind of operation is a new [`Op`] type.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::Allocator;
use iai_callgrind::{
    library_benchmark, library_benchmark_group, main, Callgrind, LibraryBenchmarkConfig,
};
use mimalloc::MiMalloc;
use tikv_jemallocator::Jemalloc;

/// Operations per measured function (and per warm-up). A power of two, so that an event every
/// 1024 allocations happens the same number of times in every benchmark.
pub const OPS: usize = 1024;

/// Where the teardown records what `Runtime::peek()` said (`cargo xtask icount` sets it; without
/// it nothing is recorded).
const CONFIG_DIR_VAR: &str = "HAKMEM_ICOUNT_CONFIG_DIR";

static MINIMAL: Allocator<Minimal> = Allocator::new();
static FAST: Allocator<Fast> = Allocator::new();
static BALANCED: Allocator<Balanced> = Allocator::new();
static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();
static RUNTIME: Allocator<Runtime> = Allocator::new();
static GLIBC: System = System;
static MIMALLOC: MiMalloc = MiMalloc;
static JEMALLOC: Jemalloc = Jemalloc;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// One hot path: how to warm it, the measured operation, and the clean-up.
pub trait Op {
    /// What the setup hands to the measured function and that to the teardown.
    type State;
    /// Warms `a` (not counted) and prepares [`OPS`] operations.
    fn setup<A: GlobalAlloc + Sync>(a: &'static A) -> Self::State;
    /// Runs [`OPS`] operations: the counted part.
    fn run<A: GlobalAlloc>(a: &A, state: Self::State) -> Self::State;
    /// Frees what is left (not counted).
    fn teardown<A: GlobalAlloc>(a: &A, state: Self::State);
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).expect("a valid layout")
}

#[cold]
#[inline(never)]
fn failed(size: usize) -> ! {
    eprintln!("icount: an allocation of {size} bytes failed");
    std::process::abort()
}

/// `alloc` + `dealloc` of `SIZE` bytes (align 16).
pub struct Pair<const SIZE: usize>;

impl<const SIZE: usize> Op for Pair<SIZE> {
    type State = ();

    fn setup<A: GlobalAlloc + Sync>(a: &'static A) {
        Self::run(a, ());
    }

    #[inline(always)]
    fn run<A: GlobalAlloc>(a: &A, (): ()) {
        let layout = layout(SIZE);
        for _ in 0..OPS {
            // SAFETY: a non-zero size; the block is freed with its layout.
            unsafe {
                let p = a.alloc(layout);
                if p.is_null() {
                    failed(SIZE);
                }
                a.dealloc(black_box(p), layout);
            }
        }
    }

    fn teardown<A: GlobalAlloc>(_: &A, (): ()) {}
}

/// `realloc` of a live `FROM`-byte block to `TO` bytes; the blocks are allocated by the setup
/// and freed by the teardown.
pub struct Realloc<const FROM: usize, const TO: usize>;

impl<const FROM: usize, const TO: usize> Realloc<FROM, TO> {
    fn blocks<A: GlobalAlloc>(a: &A) -> Vec<*mut u8> {
        (0..OPS)
            .map(|_| {
                // SAFETY: a non-zero size.
                let p = unsafe { a.alloc(layout(FROM)) };
                if p.is_null() {
                    failed(FROM);
                }
                p
            })
            .collect()
    }
}

impl<const FROM: usize, const TO: usize> Op for Realloc<FROM, TO> {
    type State = Vec<*mut u8>;

    fn setup<A: GlobalAlloc + Sync>(a: &'static A) -> Vec<*mut u8> {
        // One unmeasured round first, so that the measured one finds a warm heap.
        let warm = Self::run(a, Self::blocks(a));
        Self::teardown(a, warm);
        Self::blocks(a)
    }

    #[inline(always)]
    fn run<A: GlobalAlloc>(a: &A, mut blocks: Vec<*mut u8>) -> Vec<*mut u8> {
        for p in blocks.iter_mut() {
            // SAFETY: `*p` is a live block of `a` with layout `layout(FROM)`.
            *p = unsafe { a.realloc(black_box(*p), layout(FROM), TO) };
        }
        blocks
    }

    fn teardown<A: GlobalAlloc>(a: &A, blocks: Vec<*mut u8>) {
        for p in blocks {
            if p.is_null() {
                failed(TO);
            }
            // SAFETY: `realloc` returned a live block of `TO` bytes.
            unsafe { a.dealloc(p, layout(TO)) };
        }
    }
}

/// An allocation of `size` bytes (align 16), aborting on failure.
#[inline(always)]
fn alloc_or_abort<A: GlobalAlloc>(a: &A, size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { a.alloc(layout(size)) };
    if p.is_null() {
        failed(size);
    }
    p
}

/// [`OPS`] allocations of `SIZE` bytes, then [`OPS`] frees of them in the same order: a deep
/// free list rather than one block going back and forth (in the pool: pops and pushes down a
/// list of 1,024 blocks). One operation is one allocation and one free; the setup runs one whole
/// batch first, so the measured one finds the blocks the first freed.
pub struct Batch<const SIZE: usize>;

impl<const SIZE: usize> Op for Batch<SIZE> {
    /// Room for the batch's pointers (allocated by the setup, through the bench's own allocator).
    type State = Vec<*mut u8>;

    fn setup<A: GlobalAlloc + Sync>(a: &'static A) -> Vec<*mut u8> {
        Self::run(a, vec![std::ptr::null_mut(); OPS])
    }

    #[inline(always)]
    fn run<A: GlobalAlloc>(a: &A, mut slots: Vec<*mut u8>) -> Vec<*mut u8> {
        for slot in slots.iter_mut() {
            *slot = alloc_or_abort(a, SIZE);
        }
        for &p in slots.iter() {
            // SAFETY: `p` was allocated just above with this layout and is freed once.
            unsafe { a.dealloc(black_box(p), layout(SIZE)) };
        }
        slots
    }

    fn teardown<A: GlobalAlloc>(_: &A, _: Vec<*mut u8>) {}
}

/// [`OPS`] allocations of `SIZE` bytes that stay live (the teardown frees them): a growing live
/// set. In the pool at 1 KiB (64 blocks to a 64 KiB span) that is carving fresh blocks from a
/// span's untouched end, a page at a time, and taking a new span every 64 allocations. One
/// operation is one allocation. The setup fills and frees once first, so the measured fill
/// finds the spans (or chunks) that freeing left behind, as a program whose live set grows and
/// shrinks does.
pub struct Fill<const SIZE: usize>;

impl<const SIZE: usize> Op for Fill<SIZE> {
    type State = Vec<*mut u8>;

    fn setup<A: GlobalAlloc + Sync>(a: &'static A) -> Vec<*mut u8> {
        let warm = Self::run(a, vec![std::ptr::null_mut(); OPS]);
        Self::teardown(a, warm);
        vec![std::ptr::null_mut(); OPS]
    }

    #[inline(always)]
    fn run<A: GlobalAlloc>(a: &A, mut slots: Vec<*mut u8>) -> Vec<*mut u8> {
        for slot in slots.iter_mut() {
            *slot = alloc_or_abort(a, SIZE);
        }
        slots
    }

    fn teardown<A: GlobalAlloc>(a: &A, slots: Vec<*mut u8>) {
        for p in slots {
            // SAFETY: `run` allocated `p` with this layout; it is freed once.
            unsafe { a.dealloc(p, layout(SIZE)) };
        }
    }
}

/// A thread that allocates [`OPS`] blocks of a size through an allocator each time it is asked,
/// hands their addresses over, and waits for the next request (it stays alive, as a producer
/// does, until the teardown lets it go).
pub struct Producer {
    requests: mpsc::Sender<()>,
    blocks: mpsc::Receiver<Vec<usize>>,
    thread: thread::JoinHandle<()>,
}

impl Producer {
    fn start<A: GlobalAlloc + Sync>(a: &'static A, size: usize) -> Producer {
        let (requests, asked) = mpsc::channel::<()>();
        let (handed, blocks) = mpsc::channel();
        let thread = thread::spawn(move || {
            for () in asked {
                let made: Vec<usize> = (0..OPS).map(|_| alloc_or_abort(a, size) as usize).collect();
                if handed.send(made).is_err() {
                    return;
                }
            }
        });
        Producer {
            requests,
            blocks,
            thread,
        }
    }

    /// [`OPS`] live blocks the producer allocated.
    fn produce(&self) -> Vec<usize> {
        self.requests.send(()).expect("the producer is alive");
        self.blocks.recv().expect("the producer answers")
    }

    fn stop(self) {
        drop(self.requests);
        self.thread.join().expect("the producer exits cleanly");
    }
}

/// `dealloc` of `SIZE`-byte blocks another thread allocated (and is still alive): a cross-thread
/// free. In the pool, a push on the owning span's remote stack (one CAS); in glibc and jemalloc a
/// push into the freeing thread's cache. One operation is one free; callgrind counts the bench
/// thread only, so the producer's allocations are not in the figure. The setup runs one round
/// first (the producer allocates, the bench thread frees), so both threads are warm and the
/// producer's second batch comes from what the first round freed.
pub struct RemoteFree<const SIZE: usize>;

impl<const SIZE: usize> Op for RemoteFree<SIZE> {
    /// The producer and the blocks it handed over (freed by the measured function; dangling
    /// afterwards).
    type State = (Producer, Vec<usize>);

    fn setup<A: GlobalAlloc + Sync>(a: &'static A) -> (Producer, Vec<usize>) {
        let producer = Producer::start(a, SIZE);
        let first = producer.produce();
        let (producer, _) = Self::run(a, (producer, first));
        let blocks = producer.produce();
        (producer, blocks)
    }

    #[inline(always)]
    fn run<A: GlobalAlloc>(a: &A, state: (Producer, Vec<usize>)) -> (Producer, Vec<usize>) {
        for &p in state.1.iter() {
            // SAFETY: the producer allocated `p` with this layout and never frees it; this is
            // its one free.
            unsafe { a.dealloc(black_box(p as *mut u8), layout(SIZE)) };
        }
        state
    }

    fn teardown<A: GlobalAlloc>(_: &A, (producer, _): (Producer, Vec<usize>)) {
        producer.stop();
    }
}

/// What a benchmark hands from its setup to its measured function and on to its teardown.
pub struct Input<A: 'static, S> {
    alloc: &'static A,
    /// `path.contender`, the name of the teardown's record.
    id: &'static str,
    state: S,
}

/// The setup of every benchmark: warms `alloc` on `O`'s path.
pub fn setup<O: Op, A: GlobalAlloc + Sync>(
    alloc: &'static A,
    id: &'static str,
) -> Input<A, O::State> {
    let state = O::setup(alloc);
    Input { alloc, id, state }
}

/// The measured function of every benchmark: `O`'s operation, [`OPS`] times.
#[inline(always)]
pub fn measure<O: Op, A: GlobalAlloc>(input: Input<A, O::State>) -> Input<A, O::State> {
    let Input { alloc, id, state } = input;
    let state = O::run(alloc, state);
    Input { alloc, id, state }
}

/// The teardown of every benchmark: frees what is left and writes `<dir>/<path.contender>`,
/// containing `untouched` if the runtime configuration (`HAKMEM_MODE`) was never read in this
/// process, else `read:MODE`.
pub fn teardown<O: Op, A: GlobalAlloc>(input: Input<A, O::State>) {
    O::teardown(input.alloc, input.state);
    let seen = match Runtime::peek() {
        None => "untouched".to_owned(),
        Some(mode) => format!("read:{mode}"),
    };
    if let Some(dir) = std::env::var_os(CONFIG_DIR_VAR) {
        let file = std::path::Path::new(&dir).join(input.id);
        if let Err(e) = std::fs::write(&file, seen) {
            eprintln!("icount: cannot write {}: {e}", file.display());
            std::process::exit(1);
        }
    }
}

/// The configuration of a runtime twin: `HAKMEM_MODE=mode`.
pub fn runtime(mode: &str) -> LibraryBenchmarkConfig {
    let mut config = LibraryBenchmarkConfig::default();
    config.env("HAKMEM_MODE", mode);
    config
}

/// jemalloc's configuration in its benchmarks (`_RJEM_MALLOC_CONF`, the variable of
/// tikv-jemallocator's `_rjem_`-prefixed build): its experimental time-based tcache GC off.
/// With it on (the default of jemalloc 5.3.1), every 64 KiB allocated jemalloc reads the clock
/// and collects its thread cache only if 10 ms have passed since the last time; under valgrind
/// that depends on how loaded the machine is, so one binary's count would too. Off, it collects
/// one bin per 64 KiB event as jemalloc 5.3.0 did, without a clock: the same count every run
/// (docs/zero-overhead.md).
pub const JEMALLOC_CONF: &str = "experimental_tcache_gc:false";

/// The configuration of a jemalloc benchmark: `_RJEM_MALLOC_CONF=`[`JEMALLOC_CONF`].
pub fn jemalloc_config() -> LibraryBenchmarkConfig {
    let mut config = LibraryBenchmarkConfig::default();
    config.env("_RJEM_MALLOC_CONF", JEMALLOC_CONF);
    config
}

extern "C" {
    /// jemalloc's `mallctl`, as tikv-jemalloc-sys links it (prefixed `_rjem_`).
    #[link_name = "_rjem_mallctl"]
    fn jemalloc_mallctl(
        name: *const std::ffi::c_char,
        oldp: *mut std::ffi::c_void,
        oldlenp: *mut usize,
        newp: *mut std::ffi::c_void,
        newlen: usize,
    ) -> std::ffi::c_int;
}

/// The setup of a jemalloc benchmark: checks that jemalloc took [`JEMALLOC_CONF`] (a
/// configuration that did not arrive would silently bring the clock back), then [`setup`].
pub fn setup_jemalloc<O: Op>(
    alloc: &'static Jemalloc,
    id: &'static str,
) -> Input<Jemalloc, O::State> {
    let mut on = true;
    let mut len = std::mem::size_of::<bool>();
    // SAFETY: a NUL-terminated name of a `bool` option; `on` and `len` describe a `bool`.
    let rc = unsafe {
        jemalloc_mallctl(
            c"opt.experimental_tcache_gc".as_ptr(),
            (&mut on as *mut bool).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 || on {
        eprintln!(
            "icount: jemalloc did not take _RJEM_MALLOC_CONF={JEMALLOC_CONF} (mallctl {rc}, \
             experimental_tcache_gc {on})"
        );
        std::process::abort();
    }
    setup::<O, _>(alloc, id)
}

/// `path!(name: Op)` defines the benchmark `name` (a group of the same name) with one bench id
/// per policy: `minimal` … `research`, `runtime_minimal` … `runtime_research`;
/// `path!(name: Op, peers)` adds `glibc`, `mimalloc` and `jemalloc`.
macro_rules! path {
    ($name:ident: $op:ty) => {
        path!(@emit $name: $op; []);
    };
    ($name:ident: $op:ty, peers) => {
        path!(@emit $name: $op; [
            #[bench::glibc(args = (&GLIBC, concat!(stringify!($name), ".glibc")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::mimalloc(args = (&MIMALLOC, concat!(stringify!($name), ".mimalloc")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::jemalloc(args = (&JEMALLOC, concat!(stringify!($name), ".jemalloc")),
                config = jemalloc_config(), setup = setup_jemalloc::<$op>, teardown = teardown::<$op, _>)]
        ]);
    };
    (@emit $name:ident: $op:ty; [$($peers:tt)*]) => {
        // The group must be a top-level name for `main!`: the module `$name` holds the
        // benchmark function and re-exports its group's items.
        pub mod $name {
            use super::*;
            pub use self::group::{
                __compare_by_id, __get_config, __run, __run_setup, __run_teardown, __BENCHES,
            };

            #[library_benchmark]
            #[bench::minimal(args = (&MINIMAL, concat!(stringify!($name), ".minimal")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::fast(args = (&FAST, concat!(stringify!($name), ".fast")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::balanced(args = (&BALANCED, concat!(stringify!($name), ".balanced")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::learning(args = (&LEARNING, concat!(stringify!($name), ".learning")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::research(args = (&RESEARCH, concat!(stringify!($name), ".research")),
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::runtime_minimal(args = (&RUNTIME, concat!(stringify!($name), ".runtime_minimal")),
                config = runtime("minimal"), setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::runtime_fast(args = (&RUNTIME, concat!(stringify!($name), ".runtime_fast")),
                config = runtime("fast"), setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::runtime_balanced(args = (&RUNTIME, concat!(stringify!($name), ".runtime_balanced")),
                config = runtime("balanced"), setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::runtime_learning(args = (&RUNTIME, concat!(stringify!($name), ".runtime_learning")),
                config = runtime("learning"), setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            #[bench::runtime_research(args = (&RUNTIME, concat!(stringify!($name), ".runtime_research")),
                config = runtime("research"), setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
            $($peers)*
            fn $name<A: GlobalAlloc + Sync>(input: Input<A, <$op as Op>::State>) -> Input<A, <$op as Op>::State> {
                measure::<$op, A>(input)
            }

            library_benchmark_group!(name = group; benchmarks = $name);
        }
    };
}

/// `paths! { name: Op; … }` defines every path (see [`path!`]) and `main!` over all of them.
macro_rules! paths {
    ($($name:ident: $op:ty $(, $peers:ident)?;)+) => {
        $(path!($name: $op $(, $peers)?);)+

        main!(
            // Instructions are the figure: no cache simulation (faster, and no cache metrics that
            // would depend on a simulated cache rather than on the code).
            config = LibraryBenchmarkConfig::default()
                .pass_through_env(CONFIG_DIR_VAR)
                .tool(Callgrind::with_args(["--cache-sim=no"]));
            library_benchmark_groups = $($name),+
        );
    };
}

// The hot paths, one line each, in the order of the tables.
paths! {
    tiny_pair: Pair<32>, peers;
    small_pair: Pair<{ KIB }>, peers;
    json_pair: Pair<{ 64 * KIB }>;
    mir_pair: Pair<{ 256 * KIB }>;
    vm_pair: Pair<{ 2 * MIB }>;
    realloc_grow: Realloc<{ KIB }, { 64 * KIB }>;
    tiny_batch: Batch<32>, peers;
    small_fill: Fill<{ KIB }>, peers;
    tiny_remote_free: RemoteFree<32>, peers;
}
