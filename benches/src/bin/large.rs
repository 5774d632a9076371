//! `large SUBCOMMAND …`: probes of hakmem's large-block path, for `cargo xtask large`.
//!
//! Every allocation goes through a static `Allocator<P>` (the process's global
//! allocator stays glibc's, so the probe's own `Vec`s and `String`s do not disturb what is
//! measured). Each subcommand prints one line of `key=value` pairs on stdout:
//!
//! - `steady POLICY N`: 20 unmeasured warm-up iterations, then N of: allocate 2 MiB (align 16),
//!   write one byte per 4 KiB page, free. `faults_per_iter=F`: page faults (getrusage, minor +
//!   major) over the N iterations divided by N.
//! - `resident POLICY`: RSS before, with 300 live 2 MiB blocks every page of which was
//!   touched, and after all were freed: `rss_before_kib=… rss_peak_kib=… rss_after_kib=…
//!   kept_kib=…` (kept = after − before).
//! - `release N SIZE`: with the policy `balanced-128k` (BALANCED with a 128 KiB threshold),
//!   allocates N blocks of SIZE bytes, all live, one byte per page touched, then frees them
//!   all: `blocks=N`. `cargo xtask large` runs it under `strace -c` to count the releases.
//! - `thp-cold POLICY`: one 2 MiB block in a fresh process, every page touched: `faults=F`
//!   (of the touching), `thp_enabled=…` (the kernel's mode) and `aligned_2m=true|false`.
//! - `grow POLICY FROM_MIB TO_MIB [--no-touch]`: allocates FROM_MIB MiB, touches every page,
//!   grows by doubling `realloc` up to TO_MIB MiB (touching each new half), frees:
//!   `reallocs=K faults=F most_faults=M thp_enabled=…` (F: page faults of the K doublings,
//!   each `realloc` and the touching of its new half; M: the most of one doubling).
//!   `--no-touch` touches nothing (for instruction counts: only `realloc` differs between two
//!   runs).
//! - `zeroed POLICY`: allocates 2 MiB, fills it with 0xAB, frees it, then `alloc_zeroed` of
//!   2 MiB from the same site: `zero_ok=true|false same_block=true|false`.
//!
//! POLICY is `minimal`, `fast`, `balanced`, `learning` or `research`. Exit status 2 on a bad
//! command line, 1 if an allocation fails.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::process::ExitCode;

use hakmem::mode::{Balanced, Fast, Learning, Minimal, Research};
use hakmem::{Allocator, Config, Policy};

static MINIMAL: Allocator<Minimal> = Allocator::new();
static FAST: Allocator<Fast> = Allocator::new();
static BALANCED: Allocator<Balanced> = Allocator::new();
static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();

/// BALANCED with a 128 KiB mmap threshold, so that 256 KiB blocks — below BigCache's smallest
/// class — are mapped and go through the batched release.
struct Balanced128k;

impl Policy for Balanced128k {
    const NAME: &'static str = "balanced-128k";
    type Parts = hakmem::parts::Balanced;
    const CONFIG: Config = Config {
        threshold: 128 << 10,
        ..Config::BALANCED
    };
}

static BALANCED_128K: Allocator<Balanced128k> = Allocator::new();

const MIB: usize = 1 << 20;
/// The block size of `steady`, `resident`, `thp-cold` and `zeroed`.
const BLOCK: usize = 2 * MIB;
/// One byte is written per this many bytes ("per page").
const PAGE: usize = 4096;
/// Unmeasured iterations before `steady` measures.
const WARM_UP: u64 = 20;
/// Live blocks in `resident`.
const RESIDENT_BLOCKS: usize = 300;

const USAGE: &str = "\
usage: large steady POLICY N
       large resident POLICY
       large release N SIZE
       large thp-cold POLICY
       large grow POLICY FROM_MIB TO_MIB [--no-touch]
       large zeroed POLICY
POLICY: minimal|fast|balanced|learning|research";

/// Why the probe stopped.
enum Failure {
    /// A bad command line (exit status 2).
    Usage(String),
    /// Something failed while running (exit status 1).
    Run(String),
}

type Outcome = Result<String, Failure>;

/// Minor plus major page faults of this process so far.
fn faults() -> u64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    (usage.ru_minflt + usage.ru_majflt) as u64
}

/// Resident set size in KiB (`/proc/self/statm`: resident pages × page size).
fn rss_kib() -> Result<u64, Failure> {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .map_err(|e| Failure::Run(format!("cannot read /proc/self/statm: {e}")))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| Failure::Run(format!("unexpected /proc/self/statm: {statm:?}")))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page / 1024)
}

/// The bracketed (selected) value of the kernel's THP mode, or `unavailable`.
fn thp_enabled() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let start = s.find('[')? + 1;
            let end = start + s[start..].find(']')?;
            Some(s[start..end].to_owned())
        })
        .unwrap_or_else(|| "unavailable".to_owned())
}

/// Writes one byte in every page of `[p, p + len)`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
unsafe fn touch(p: *mut u8, len: usize) {
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len` (caller).
        unsafe { p.add(off).write_volatile(1) };
        off += PAGE;
    }
}

fn layout(size: usize) -> Result<Layout, Failure> {
    Layout::from_size_align(size, 16).map_err(|_| Failure::Usage(format!("bad size {size}")))
}

/// `a.alloc(layout)`, or an error naming the size.
///
/// # Safety
/// `layout` has a non-zero size.
unsafe fn alloc<P: Policy>(a: &Allocator<P>, layout: Layout) -> Result<*mut u8, Failure> {
    // SAFETY: forwarded.
    let p = unsafe { a.alloc(layout) };
    if p.is_null() {
        Err(Failure::Run(format!(
            "allocation of {} bytes failed",
            layout.size()
        )))
    } else {
        Ok(p)
    }
}

/// One iteration of `steady`: allocate, touch, free.
///
/// # Safety
/// `layout` has a non-zero size.
#[inline(never)]
unsafe fn cycle<P: Policy>(a: &Allocator<P>, layout: Layout) -> Result<(), Failure> {
    // SAFETY: forwarded; the block is touched within its size and freed with its layout.
    unsafe {
        let p = alloc(a, layout)?;
        touch(p, layout.size());
        a.dealloc(black_box(p), layout);
    }
    Ok(())
}

fn steady<P: Policy>(a: &Allocator<P>, n: u64) -> Outcome {
    if n == 0 {
        return Err(Failure::Usage("steady: N must be at least 1".into()));
    }
    let layout = layout(BLOCK)?;
    for _ in 0..WARM_UP {
        // SAFETY: the layout is 2 MiB.
        unsafe { cycle(a, layout)? };
    }
    let before = faults();
    for _ in 0..n {
        // SAFETY: as above.
        unsafe { cycle(a, layout)? };
    }
    let after = faults();
    let per_iter = after.saturating_sub(before) as f64 / n as f64;
    Ok(format!("faults_per_iter={per_iter:.3}"))
}

fn resident<P: Policy>(a: &Allocator<P>) -> Outcome {
    let layout = layout(BLOCK)?;
    // Allocated before the first reading, so that the probe's own vector is not counted.
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(RESIDENT_BLOCKS);
    let before = rss_kib()?;
    for _ in 0..RESIDENT_BLOCKS {
        // SAFETY: the layout is 2 MiB; the block is touched within its size.
        unsafe {
            let p = alloc(a, layout)?;
            touch(p, BLOCK);
            blocks.push(p);
        }
    }
    let peak = rss_kib()?;
    for p in blocks.drain(..) {
        // SAFETY: a live block of `a` with this layout.
        unsafe { a.dealloc(p, layout) };
    }
    let after = rss_kib()?;
    let kept = after as i64 - before as i64;
    Ok(format!(
        "rss_before_kib={before} rss_peak_kib={peak} rss_after_kib={after} kept_kib={kept}"
    ))
}

fn release(n: usize, size: usize) -> Outcome {
    if size == 0 {
        return Err(Failure::Usage("release: SIZE must be at least 1".into()));
    }
    let a = &BALANCED_128K;
    let layout = layout(size)?;
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: the layout is non-zero; the block is touched within its size.
        unsafe {
            let p = alloc(a, layout)?;
            touch(p, size);
            blocks.push(p);
        }
    }
    for p in blocks.drain(..) {
        // SAFETY: a live block of `a` with this layout.
        unsafe { a.dealloc(p, layout) };
    }
    Ok(format!("blocks={n}"))
}

fn thp_cold<P: Policy>(a: &Allocator<P>) -> Outcome {
    let layout = layout(BLOCK)?;
    // SAFETY: the layout is 2 MiB; the block is touched within its size and freed.
    unsafe {
        let p = alloc(a, layout)?;
        let before = faults();
        touch(p, BLOCK);
        let after = faults();
        let aligned = p as usize % BLOCK == 0;
        a.dealloc(black_box(p), layout);
        Ok(format!(
            "faults={} thp_enabled={} aligned_2m={aligned}",
            after.saturating_sub(before),
            thp_enabled()
        ))
    }
}

fn grow<P: Policy>(a: &Allocator<P>, from_mib: usize, to_mib: usize, touching: bool) -> Outcome {
    if from_mib == 0 || to_mib < from_mib {
        return Err(Failure::Usage(
            "grow: need 1 <= FROM_MIB <= TO_MIB".to_owned(),
        ));
    }
    let (from, to) = (from_mib * MIB, to_mib * MIB);
    let mut layout = layout(from)?;
    let mut reallocs = 0u32;
    let (mut faults, mut most_faults) = (0u64, 0u64);
    // SAFETY: every block is used within its current size and freed with its current layout.
    unsafe {
        let mut p = alloc(a, layout)?;
        if touching {
            touch(p, from);
        }
        while layout.size() < to {
            let before = self::faults();
            let new_size = (layout.size() * 2).min(to);
            let q = a.realloc(black_box(p), layout, new_size);
            if q.is_null() {
                a.dealloc(p, layout);
                return Err(Failure::Run(format!(
                    "realloc from {} to {new_size} bytes failed",
                    layout.size()
                )));
            }
            if touching {
                touch(q.add(layout.size()), new_size - layout.size());
            }
            let these = self::faults() - before;
            faults += these;
            most_faults = most_faults.max(these);
            reallocs += 1;
            p = q;
            layout = Layout::from_size_align_unchecked(new_size, 16);
        }
        a.dealloc(black_box(p), layout);
    }
    Ok(format!(
        "reallocs={reallocs} faults={faults} most_faults={most_faults} thp_enabled={}",
        thp_enabled()
    ))
}

fn zeroed<P: Policy>(a: &Allocator<P>) -> Outcome {
    let layout = layout(BLOCK)?;
    // SAFETY: both blocks are used within their 2 MiB and freed with their layout. Both come
    // from the `GlobalAlloc` entry points, so they share a site (`Site::NONE`).
    unsafe {
        let p = alloc(a, layout)?;
        std::ptr::write_bytes(p, 0xAB, BLOCK);
        a.dealloc(black_box(p), layout);
        let q = a.alloc_zeroed(layout);
        if q.is_null() {
            return Err(Failure::Run("alloc_zeroed of 2 MiB failed".into()));
        }
        let bytes = std::slice::from_raw_parts(q, BLOCK);
        let zero_ok = bytes.iter().all(|&b| b == 0);
        let same_block = q == p;
        a.dealloc(q, layout);
        Ok(format!("zero_ok={zero_ok} same_block={same_block}"))
    }
}

/// Runs `$f(&STATIC, args…)` for the allocator named `$policy`.
macro_rules! by_policy {
    ($policy:expr, $f:ident ( $($arg:expr),* )) => {
        match $policy {
            "minimal" => $f(&MINIMAL $(, $arg)*),
            "fast" => $f(&FAST $(, $arg)*),
            "balanced" => $f(&BALANCED $(, $arg)*),
            "learning" => $f(&LEARNING $(, $arg)*),
            "research" => $f(&RESEARCH $(, $arg)*),
            other => Err(Failure::Usage(format!("unknown policy {other:?}"))),
        }
    };
}

fn number<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, Failure> {
    s.parse()
        .map_err(|_| Failure::Usage(format!("{what} must be a non-negative integer, not {s:?}")))
}

fn dispatch(args: &[String]) -> Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["steady", policy, n] => {
            let n = number("N", n)?;
            by_policy!(*policy, steady(n))
        }
        ["resident", policy] => by_policy!(*policy, resident()),
        ["release", n, size] => release(number("N", n)?, number("SIZE", size)?),
        ["thp-cold", policy] => by_policy!(*policy, thp_cold()),
        ["grow", policy, from, to, rest @ ..] => {
            let touching = match rest {
                [] => true,
                ["--no-touch"] => false,
                _ => return Err(Failure::Usage(format!("grow: unexpected {rest:?}"))),
            };
            let (from, to) = (number("FROM_MIB", from)?, number("TO_MIB", to)?);
            by_policy!(*policy, grow(from, to, touching))
        }
        ["zeroed", policy] => by_policy!(*policy, zeroed()),
        _ => Err(Failure::Usage("bad command line".into())),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(why)) => {
            eprintln!("large: {why}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(why)) => {
            eprintln!("large: {why}");
            ExitCode::FAILURE
        }
    }
}
