//! `learning WORKLOAD POLICY [MAX_ALLOCS] [EVERY]`: a trace of the learner — lifecycle,
//! threshold, ratings over time — on the learning workloads of `hakmem-scenarios`
//! (docs/learning.md shows its output).
//!
//! WORKLOAD is
//! - `steady`: small blocks with one large block of 640 KiB – 5 MiB per 256 allocations;
//! - `cheapest`: 520 KiB and 1 MiB blocks by turns, glibc's mmap threshold pinned at 768 KiB:
//!   one candidate, 748 KiB, is clearly cheapest;
//! - `shift`: `cheapest` until LEARNING freezes, then 600 KiB blocks with glibc pinned at 512
//!   KiB (now 512 KiB is cheapest) until it has frozen again: FROZEN → LEARN → CANARY → FROZEN;
//! - `vm`: 2 MiB allocated and freed, untouched (icount's `vm_pair`), for MAX_ALLOCS whatever
//!   the lifecycle does: whether a frozen learner stays frozen on a perfectly steady workload.
//!
//! POLICY is `learning` or `research`. Every allocation goes through a static
//! `Allocator<POLICY>`; the probe's own output goes through glibc. It stops after MAX_ALLOCS
//! allocations (default 3,000,000) or, for `learning`, once the workload's last phase has
//! frozen; prints a line every EVERY allocations (default 100,000) and at every lifecycle
//! change, then the allocator's statistics report.

use std::process::ExitCode;

use hakmem::mode::{Learning, Research};
use hakmem::{Allocator, Lifecycle, Policy, Stats};
use hakmem_scenarios::learning::{
    cheapest_round, shifted_round, steady_round, vm_pairs_round, CHEAPEST_GLIBC_MMAP_THRESHOLD,
    CHEAPEST_GLIBC_TRIM_THRESHOLD, SHIFTED_GLIBC_MMAP_THRESHOLD, SHIFTED_GLIBC_TRIM_THRESHOLD,
};

static LEARNING: Allocator<Learning> = Allocator::new();
static RESEARCH: Allocator<Research> = Allocator::new();

const USAGE: &str = "usage: learning steady|cheapest|shift learning|research [MAX_ALLOCS] [EVERY]";

/// One phase of a workload: its round, glibc's mmap and trim thresholds to pin first (if any),
/// and whether it runs to MAX_ALLOCS whatever the lifecycle does.
struct Phase<P: Policy> {
    round: fn(&Allocator<P>, u64) -> u64,
    glibc: Option<(usize, usize)>,
    to_the_end: bool,
}

/// Pins glibc's mmap and trim thresholds.
fn pin_glibc((mmap, trim): (usize, usize)) {
    // SAFETY: mallopt only changes glibc's tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap as i32);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim as i32);
    }
}

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

fn trace<P: Policy>(a: &'static Allocator<P>, phases: &[Phase<P>], max: u64, every: u64) {
    println!(
        "{:>9}  {:<6}  {:>10}  {:>7}  {:>7}  {:>5}  best ratings",
        "allocs", "state", "threshold", "matches", "samples", "alive"
    );
    let (mut allocs, mut next, mut r) = (0u64, every, 0u64);
    let mut last = a.stats().lifecycle;
    println!("{}", line(0, &a.stats()));
    for (i, phase) in phases.iter().enumerate() {
        if let Some(tuning) = phase.glibc {
            pin_glibc(tuning);
        }
        if i > 0 {
            println!("{:>9}  -- the workload shifts --", allocs);
        }
        let transitions = a.stats().lifecycle_transitions;
        while allocs < max {
            allocs += (phase.round)(a, r);
            r += 1;
            let s = a.stats();
            if s.lifecycle != last || allocs >= next {
                println!("{}", line(allocs, &s));
                next = allocs + every;
            }
            last = s.lifecycle;
            if P::NAME == "learning"
                && !phase.to_the_end
                && s.lifecycle == Lifecycle::Frozen
                && s.lifecycle_transitions > transitions
            {
                break;
            }
        }
    }
    println!();
    println!("{}", a.stats());
}

fn phases<P: Policy>(workload: &str) -> Option<Vec<Phase<P>>> {
    let cheapest = Phase {
        round: cheapest_round,
        glibc: Some((CHEAPEST_GLIBC_MMAP_THRESHOLD, CHEAPEST_GLIBC_TRIM_THRESHOLD)),
        to_the_end: false,
    };
    Some(match workload {
        "steady" => vec![Phase {
            round: steady_round,
            glibc: None,
            to_the_end: false,
        }],
        "vm" => vec![Phase {
            round: vm_pairs_round,
            glibc: None,
            to_the_end: true,
        }],
        "cheapest" => vec![cheapest],
        "shift" => vec![
            cheapest,
            Phase {
                round: shifted_round,
                glibc: Some((SHIFTED_GLIBC_MMAP_THRESHOLD, SHIFTED_GLIBC_TRIM_THRESHOLD)),
                to_the_end: false,
            },
        ],
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| match args.get(i) {
        None => Some(default),
        Some(v) => v.replace('_', "").parse().ok(),
    };
    let (Some(workload), Some(policy), Some(max), Some(every)) = (
        args.first(),
        args.get(1),
        number(2, 3_000_000),
        number(3, 100_000),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let ok = match policy.as_str() {
        "learning" => phases(workload).map(|p| trace(&LEARNING, &p, max, every)),
        "research" => phases(workload).map(|p| trace(&RESEARCH, &p, max, every)),
        _ => None,
    };
    if ok.is_none() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
