//! Instruction counts of hakmem's hot paths: iai-callgrind library benchmarks, run and checked
//! by `cargo xtask icount` (docs/regression-analysis.md).
//!
//! Every path is measured for every policy type — the five compiled modes and `Runtime` in each
//! of the five modes (`HAKMEM_MODE` set per benchmark through iai-callgrind's environment
//! configuration; iai-callgrind clears the rest of the environment) — and, on the small-object
//! pairs, for glibc (`std::alloc::System`), mimalloc and jemalloc as reference rows. Each
//! allocator is a `static` value used through `GlobalAlloc`; the bench binary's own global
//! allocator stays glibc's and is never called inside the measured function.
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
    fn setup<A: GlobalAlloc>(a: &A) -> Self::State;
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

    fn setup<A: GlobalAlloc>(a: &A) {
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

    fn setup<A: GlobalAlloc>(a: &A) -> Vec<*mut u8> {
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

/// What a benchmark hands from its setup to its measured function and on to its teardown.
pub struct Input<A: 'static, S> {
    alloc: &'static A,
    /// `path.contender`, the name of the teardown's record.
    id: &'static str,
    state: S,
}

/// The setup of every benchmark: warms `alloc` on `O`'s path.
pub fn setup<O: Op, A: GlobalAlloc>(alloc: &'static A, id: &'static str) -> Input<A, O::State> {
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

/// `path!(name: Op)` defines the benchmark `name` (a group of the same name) with one bench id
/// per policy: `minimal` … `research`, `runtime_minimal` … `runtime_research`; `path!(name: Op,
/// peers)` adds `glibc`, `mimalloc` and `jemalloc`.
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
                setup = setup::<$op, _>, teardown = teardown::<$op, _>)]
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
            fn $name<A: GlobalAlloc>(input: Input<A, <$op as Op>::State>) -> Input<A, <$op as Op>::State> {
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
}
