//! `bench SCENARIO [--scale F]`: one repetition of one scenario, in this process, through the
//! global allocator this build was made with; `bench --list` lists the scenarios.
//!
//! Built once per contender by `cargo xtask bench-matrix` (see benches/Cargo.toml's features:
//! `hakmem-<mode>`, `mimalloc`, `jemalloc`, or none for glibc). A scenario that wants a steady
//! state gets one unmeasured pass first. Prints one line:
//!
//! ```text
//! allocator=NAME scenario=NAME ops=U64 ns=U64 faults=U64 maxrss_kib=U64 threads=U64
//! ```
//!
//! `ns` is the wall time of the measured pass, `faults` the minor + major page faults during
//! it (all threads), `maxrss_kib` the process's peak resident set.

use std::process::ExitCode;
use std::time::Instant;

use hakmem_scenarios::{Global, Params, SCENARIOS};

cfg_if::cfg_if! {
    if #[cfg(any(
        feature = "hakmem-minimal",
        feature = "hakmem-fast",
        feature = "hakmem-balanced",
        feature = "hakmem-learning",
        feature = "hakmem-research",
        feature = "hakmem-runtime",
    ))] {
        #[global_allocator]
        static GLOBAL: hakmem::Hakmem = hakmem::Hakmem::new();

        fn allocator() -> String {
            let s = GLOBAL.stats();
            if s.policy == "runtime" {
                format!("runtime-{}", s.mode)
            } else {
                s.policy.to_owned()
            }
        }
    } else if #[cfg(feature = "mimalloc")] {
        #[global_allocator]
        static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

        fn allocator() -> String {
            "mimalloc".to_owned()
        }
    } else if #[cfg(feature = "jemalloc")] {
        #[global_allocator]
        static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

        fn allocator() -> String {
            "jemalloc".to_owned()
        }
    } else {
        fn allocator() -> String {
            "glibc".to_owned()
        }
    }
}

/// Page faults so far and the peak RSS, for the whole process.
fn usage() -> (u64, u64) {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ((ru.ru_minflt + ru.ru_majflt) as u64, ru.ru_maxrss as u64)
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("bench: {msg}\nusage: bench SCENARIO [--scale F] | bench --list");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for s in SCENARIOS {
            println!("{}\t{}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    let mut params = Params::default();
    let scenario = match args.as_slice() {
        [s] => s,
        [s, flag, f] if flag == "--scale" => match f.parse::<f64>() {
            Ok(scale) if scale > 0.0 && scale <= 1.0 => {
                params.scale = scale;
                s
            }
            _ => return usage_error(&format!("--scale takes a number in (0, 1], not {f:?}")),
        },
        _ => return usage_error("expected one scenario"),
    };
    let Some(info) = SCENARIOS.iter().find(|s| s.name == scenario) else {
        let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        return usage_error(&format!(
            "unknown scenario {scenario:?} (one of {})",
            names.join(", ")
        ));
    };
    if info.warmup {
        hakmem_scenarios::run(info.name, &Global, &params);
    }
    let (faults0, _) = usage();
    let start = Instant::now();
    let ops = hakmem_scenarios::run(info.name, &Global, &params).expect("a known scenario");
    let ns = start.elapsed().as_nanos();
    let (faults1, maxrss_kib) = usage();
    println!(
        "allocator={} scenario={} ops={ops} ns={ns} faults={} maxrss_kib={maxrss_kib} threads={}",
        allocator(),
        info.name,
        faults1 - faults0,
        params.threads
    );
    ExitCode::SUCCESS
}
