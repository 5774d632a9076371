//! `learning WORKLOAD POLICY [MAX_ALLOCS] [EVERY]`: a trace of the learner — lifecycle,
//! threshold, ratings over time — on one of the learning workloads of `hakmem-scenarios`
//! (docs/learning.md shows its output).
//!
//! WORKLOAD is `steady` (small blocks with one large block of 640 KiB – 5 MiB per 256
//! allocations) or `cheapest` (520 KiB and 1 MiB blocks by turns, glibc's mmap threshold pinned
//! at 768 KiB: one candidate, 748 KiB, is clearly cheapest). POLICY is `learning` or `research`.
//! Every allocation goes through a static `Allocator<POLICY>`; the probe's own output goes
//! through glibc.
//!
//! It runs rounds of the workload until MAX_ALLOCS allocations (default 3,000,000) or, for
//! `learning`, until the lifecycle is FROZEN; prints a line every EVERY allocations (default
//! 100,000) and at every lifecycle change, then the allocator's statistics report.

use std::process::ExitCode;

use hakmem::mode::{Learning, Research};
use hakmem::{Allocator, Lifecycle, Policy, Stats};
use hakmem_scenarios::learning::{cheapest_round, steady_round, CHEAPEST_GLIBC_MMAP_THRESHOLD};

static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();

const USAGE: &str = "usage: learning steady|cheapest learning|research [MAX_ALLOCS] [EVERY]";

/// One trace line.
fn line(allocs: u64, s: &Stats) -> String {
    let (leaders, n) = s.leaders();
    let top: Vec<String> = leaders[..n.min(3)]
        .iter()
        .map(|c| format!("{} KiB:{}", c.threshold >> 10, c.rating))
        .collect();
    format!(
        "{allocs:>9}  {:<6}  {:>6} KiB  {:>7}  {:>7}  {:>2}/12  {}",
        s.lifecycle.name(),
        s.threshold >> 10,
        s.matches,
        s.samples,
        n,
        top.join(" ")
    )
}

fn trace<P: Policy>(
    a: &'static Allocator<P>,
    round: fn(&Allocator<P>, u64) -> u64,
    max: u64,
    every: u64,
) {
    println!(
        "{:>9}  {:<6}  {:>10}  {:>7}  {:>7}  {:>5}  best ratings",
        "allocs", "state", "threshold", "matches", "samples", "alive"
    );
    let (mut allocs, mut next, mut r) = (0u64, every, 0u64);
    let mut last = a.stats().lifecycle;
    println!("{}", line(0, &a.stats()));
    while allocs < max {
        allocs += round(a, r);
        r += 1;
        let s = a.stats();
        if s.lifecycle != last || allocs >= next {
            println!("{}", line(allocs, &s));
            next = allocs + every;
        }
        last = s.lifecycle;
        if P::NAME == "learning" && s.lifecycle == Lifecycle::Frozen {
            break;
        }
    }
    println!();
    println!("{}", a.stats());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (workload, policy) = match (args.first(), args.get(1)) {
        (Some(w), Some(p)) => (w.as_str(), p.as_str()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let number = |i: usize, default: u64| match args.get(i) {
        None => Some(default),
        Some(v) => v.replace('_', "").parse().ok(),
    };
    let (Some(max), Some(every)) = (number(2, 3_000_000), number(3, 100_000)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if workload == "cheapest" {
        // SAFETY: mallopt only changes glibc's tuning; called before any thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, CHEAPEST_GLIBC_MMAP_THRESHOLD as i32);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        }
    }
    match (workload, policy) {
        ("steady", "learning") => trace(&LEARNING, steady_round, max, every),
        ("steady", "research") => trace(&RESEARCH, steady_round, max, every),
        ("cheapest", "learning") => trace(&LEARNING, cheapest_round, max, every),
        ("cheapest", "research") => trace(&RESEARCH, cheapest_round, max, every),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
