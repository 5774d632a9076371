//! `pairs POLICY SIZE N`: runs N alloc+free pairs of SIZE bytes through a static
//! `Allocator<POLICY>` (or a peer allocator) and checks whether the runtime configuration was
//! consulted.
//!
//! A probe for `cargo xtask overhead`, which runs it under callgrind twice with different N and
//! divides the difference of the instruction totals by the difference of N: the instructions of
//! one pair, with start-up and exit cancelled out. POLICY is `minimal`, `fast`, `balanced`,
//! `learning`, `research` or `runtime` (whose mode comes from `HAKMEM_MODE`), or a peer used the
//! same way, as a `GlobalAlloc` value: `glibc` (`std::alloc::System`), and with feature `peers`
//! `mimalloc` and `jemalloc`.
//!
//! Output: one line, `runtime-config=untouched` or `runtime-config=read:<mode>`.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::process::ExitCode;

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research, Runtime};
use hakmem::Allocator;

static MINIMAL: Allocator<Minimal> = Allocator::new();
static FAST: Allocator<Fast> = Allocator::new();
static BALANCED: Allocator<Balanced> = Allocator::new();
static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();
static RUNTIME: Allocator<Runtime> = Allocator::new();

/// The measured loop: one monomorphized copy per policy and peer.
#[inline(never)]
fn pairs<A: GlobalAlloc>(a: &A, layout: Layout, n: u64) {
    for _ in 0..n {
        // SAFETY: `layout` has a non-zero size; the block is freed with the same layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "allocation of {} bytes failed", layout.size());
            a.dealloc(black_box(p), layout);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [policy, size, n] = args.as_slice() else {
        eprintln!("usage: pairs POLICY SIZE N   (POLICY: minimal|fast|balanced|learning|research|runtime|glibc|mimalloc|jemalloc)");
        return ExitCode::from(2);
    };
    let (Ok(size), Ok(n)) = (size.parse::<usize>(), n.parse::<u64>()) else {
        eprintln!("pairs: SIZE and N must be non-negative integers");
        return ExitCode::from(2);
    };
    let Ok(layout) = Layout::from_size_align(size.max(1), 16) else {
        eprintln!("pairs: bad size {size}");
        return ExitCode::from(2);
    };
    match policy.as_str() {
        "minimal" => pairs(&MINIMAL, layout, n),
        "fast" => pairs(&FAST, layout, n),
        "balanced" => pairs(&BALANCED, layout, n),
        "learning" => pairs(&LEARNING, layout, n),
        "research" => pairs(&RESEARCH, layout, n),
        "runtime" => pairs(&RUNTIME, layout, n),
        "glibc" => pairs(&std::alloc::System, layout, n),
        #[cfg(feature = "peers")]
        "mimalloc" => pairs(&mimalloc::MiMalloc, layout, n),
        #[cfg(feature = "peers")]
        "jemalloc" => pairs(&tikv_jemallocator::Jemalloc, layout, n),
        other => {
            eprintln!("pairs: unknown policy {other:?}");
            return ExitCode::from(2);
        }
    }
    match Runtime::peek() {
        None => println!("runtime-config=untouched"),
        Some(mode) => println!("runtime-config=read:{mode}"),
    }
    ExitCode::SUCCESS
}
