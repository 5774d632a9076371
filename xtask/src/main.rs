//! `cargo xtask`: project automation for hakmem, std only.
//!
//! - `cargo xtask test [--no-icount] [--no-matrix] [--no-large] [--no-preload]
//!   [--no-sanitizers] [--fuzz[=SECS]]`: the project's one test command (CI runs it via `.ci/run`).
//! - `cargo xtask sanitizers [--asan] [--memcheck]`: the hakmem tests under AddressSanitizer
//!   and valgrind memcheck ([`reliability`]).
//! - `cargo xtask fuzz [--time SECS] [-- LIBFUZZER_ARGS]`: the cargo-fuzz target.
//! - `cargo xtask preload [--mode M] [--check]`: the preload library, one `.so` per mode, and its
//!   check under `LD_PRELOAD` ([`preload`]).
//! - `cargo xtask icount [--bless] [--baseline FILE] [--no-run] [--self-test]`: the
//!   instruction-count regression check of every mode's hot paths ([`icount`]).
//! - `cargo xtask large [--check]`: the measured acceptance of the large-block path (faults,
//!   system calls, RSS, THP, realloc without copying; [`large`]).
//! - `cargo xtask bench-compare A B`: whether two matrix runs agree within their spreads.
//! - `cargo xtask bench-matrix [OPTIONS]`: the wall-clock matrix of every mode, runtime twin and
//!   peer allocator over the scenarios ([`matrix`]).
//! - `cargo xtask help`: usage.
//!
//! `cargo xtask` is an alias (`.cargo/config.toml`) for `cargo run --quiet --package xtask --`.

mod cmd;
mod icount;
mod large;
mod matrix;
mod preload;
mod reliability;
mod test;

use std::process::ExitCode;

const USAGE: &str = "\
cargo xtask: project automation for hakmem

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    test [--no-icount] [--no-matrix] [--no-large] [--no-preload] [--no-sanitizers]
         [--fuzz[=SECS]]
        The project's one test command (CI runs it through .ci/run). Every step runs even if
        an earlier one failed: cargo fmt --check; clippy -D warnings (workspace, all features;
        hakmem, default features); cargo test -p hakmem for each compiled mode (minimal, fast,
        balanced, learning, research) with HAKMEM_MODE set to it; for the runtime feature;
        cargo test --workspace --all-features; the hakmem tests under AddressSanitizer and
        under valgrind memcheck (sanitizers); the matrix smoke run (bench-matrix --smoke);
        the instruction-count check (icount --self-test); the large-block check (large
        --check); the preload check (preload --check); and, only with --fuzz, a fuzz run. Ends
        with a summary and the line `xtask test: N passed, M failed`; exit status 0 only if
        all passed.
            --no-icount      skip the instruction-count check (it needs valgrind)
            --no-matrix      skip the matrix smoke run (it builds nine release binaries)
            --no-large       skip the large-block check (it needs strace and valgrind)
            --no-preload     skip the preload check (it needs cc, python3 and git)
            --no-sanitizers  skip the AddressSanitizer and memcheck runs (nightly, valgrind)
            --fuzz[=SECS]    add a fuzz run of SECS seconds (default 60) at the end

    sanitizers [--asan] [--memcheck]
        The hakmem tests under AddressSanitizer (one nightly build with -Zsanitizer=address
        and the runtime feature, run once per mode with HAKMEM_MODE set to it) and under
        valgrind memcheck (the BALANCED build's test binaries, the pool tests one test per
        process; invalid reads or writes, uninitialised values and leaks not in
        xtask/valgrind.supp fail). Long tests run shrunk (QUICKCHECK_TESTS,
        HAKMEM_TEST_SCALE). Without options, both. Needs the nightly toolchain and valgrind.
            --asan          only the AddressSanitizer run
            --memcheck      only the memcheck run

    fuzz [--time SECS] [-- LIBFUZZER_ARGS...]
        Runs the cargo-fuzz target `ops` (fuzz/: operation sequences against every mode,
        checked against a shadow model) for SECS seconds (default 60) on one core, with the
        nightly toolchain; installs cargo-fuzz into <target>/tools first if it is missing.
        The corpus grows in fuzz/corpus/ops; a failing input lands in fuzz/artifacts/ops.
        Arguments after `--` go to libFuzzer (e.g. -jobs=1, -rss_limit_mb=4096).

    icount [--bless] [--baseline FILE] [--no-run] [--self-test]
        The instruction-count regression check. Installs iai-callgrind-runner 0.16.1 into
        <target>/tools if it is missing (cargo install, ~95 s once), runs the iai-callgrind
        benches (benches/benches/icount.rs: every compiled mode, every runtime twin and, on
        the small-object paths, glibc/mimalloc/jemalloc, over each hot path, the pool's
        included), and compares every Ir count with the committed baseline
        benches/baselines/icount.json: exit status 1 if
        one is more than 2% above it (or missing from it), when the run's rustc, CPU, glibc
        and valgrind are the baseline's; otherwise the comparison is a warning. Always checks
        the machine-independent rules (compiled <= runtime twin on every path; MINIMAL
        strictly less; compiled runs never read HAKMEM_MODE; BALANCED and FAST 2 MiB pair
        <= 100 Ir/op; the pool's: FAST 32 B pair <= 60 Ir/op and <= jemalloc's, BALANCED's
        <= mimalloc's, in the same run; learning adds <= 15 Ir/op to LEARNING's 32 B pair,
        against LEARNING with learning off) and prints each with its figures. Writes
        <target>/icount/{measured.json, report.md, regression-analysis.md}. Needs valgrind.
            --bless          rewrite the baseline and docs/regression-analysis.md from this
                             run instead of comparing (the rules are still checked)
            --baseline FILE  compare with (or bless) FILE instead of the committed baseline
            --no-run         use the last run's <target>/icount/measured.json
            --self-test      then prove the check can fail: lower the baseline by 10% in a
                             temporary copy, run `icount --no-run --baseline COPY`, and
                             require exit status 1 with every checked figure flagged

    large [--check]
        The measured acceptance of the large-block path. Builds benches' `large` probe
        (release) and measures, each in a fresh process: (a) page faults and (b) system calls
        (strace -c, N=300 minus N=100) per 2 MiB alloc/touch/free at steady state: BALANCED
        and FAST 0, MINIMAL >= 500 faults and >= 2 calls; (c) RSS kept after 300 x 2 MiB
        were freed, BALANCED: <= 64 MiB + 2 MiB; (d) madvise + munmap calls to release 1000
        x 256 KiB: <= 100; (e) faults to touch a cold 2 MiB block, RESEARCH and BALANCED:
        <= 8 where the kernel's THP is always or madvise; (f) realloc growth: mremap seen by
        strace, and callgrind Ir of one 32 -> 64 MiB doubling < 2x one of 2 -> 4 MiB (no
        copy); (g) alloc_zeroed of a recycled dirty block reads zeros. Prints the table and
        writes target/large/large.md. Needs strace and valgrind (apt-get install strace
        valgrind).
            --check         exit with status 1 if a check fails

    bench-matrix [--quick | --full | --reps N] [--scenarios a,b] [--allocators a,b]
                 [--out DIR] [--smoke] [--scale F] [--no-build] [--real | --real-only]
        The wall-clock matrix: 13 contenders (minimal, fast, balanced, learning, research;
        their runtime twins runtime-minimal … runtime-research, i.e. bench-runtime with
        HAKMEM_MODE set; glibc, mimalloc, jemalloc) × the scenarios of `bench --list`. Builds
        one release `bench` binary per allocator (hakmem-benches, a cargo feature each) into
        <target>/bench-matrix/bin/, then runs every repetition of every cell in a fresh
        process, interleaved: for each repetition, for each scenario, every contender, the
        contender order rotated by one each repetition. A failed run is reported and the
        matrix goes on (exit status 1 at the end). Writes results.csv, results.json,
        report.md and matrix.svg to the output directory and prints the report's tables.
            --quick            5 repetitions per cell (the default)
            --full             11 repetitions per cell
            --reps N           N repetitions per cell
            --scenarios a,b    only these scenarios (names from `bench --list`)
            --allocators a,b   only these contenders; `runtime` = all five runtime twins
            --out DIR          output directory (default <target>/bench-matrix)
            --smoke            1 repetition at --scale 0.05, into <target>/bench-matrix/smoke
                               unless --out says otherwise (cargo xtask test runs this)
            --scale F          shrink every scenario's iteration counts (0 < F <= 1)
            --no-build         use the binaries already in <target>/bench-matrix/bin/
                               (and the preload libraries in <target>/preload/)
            --real             add the real-program row: python3 round-tripping a large
                               JSON document (PYTHONMALLOC=malloc), whole-process wall time
                               under each selected contender — hakmem modes and runtime twins
                               through their preload library (cargo xtask preload), glibc,
                               and Debian's libmimalloc / libjemalloc preload libraries where
                               installed (apt-get install libmimalloc2.0 libjemalloc2) — with
                               ratios to glibc and to Debian's mimalloc; writes real.csv and
                               a section of report.md. --scale shrinks its document too.
            --real-only        the real-program row alone (real.csv, real.md)
        A bad option or name exits with status 2.

    preload [--mode M] [--check]
        Builds the preload library (crates/hakmem-preload; LD_PRELOAD it to make hakmem the
        malloc of any program) once per mode — minimal, fast, balanced, learning, research,
        runtime — each with `cargo build --release -p hakmem-preload --no-default-features
        --features M`, copies it to <target>/preload/M/libhakmem_preload.so and prints that
        path, one line per mode (build progress goes to stderr). docs/preload.md.
            --mode M        only mode M
            --check         then run the check: no export of a release library (nor the
                            pool's thread-exit destructor) reaches a panic, from its objdump
                            disassembly; the C test (crates/hakmem-preload/tests/
                            preload_test.c, compiled with cc: glibc's own allocations, TLS,
                            threads, pthread keys, fork, misuse, exit, a malloc/free storm),
                            the contract (tests/conformance.c: every entry point's results
                            and errno, realloc, calloc, alignment, usable sizes, exhaustion
                            under RLIMIT_AS, a free at the map-count limit), python3
                            round-tripping a large JSON document and git (init, add 1,000
                            files, commit, log, gc), first without the library, then under
                            each mode (runtime with HAKMEM_MODE=fast) and a debug build
                            (balanced, or M): the C programs must pass with nothing on
                            stderr, and python3 and git must print exactly what they print
                            without the library, hakmem writing nothing of its own. Then
                            the learning modes' log (LEARNING, RESEARCH, runtime with
                            HAKMEM_MODE=learning): silent without HAKMEM_LOG, on stderr with
                            HAKMEM_LOG=1, appended to the file HAKMEM_LOG=PATH names. Prints
                            the cost of a failed malloc(3 TiB) per contender (a report).
                            HAKMEM_LOG and HAKMEM_REPORT are removed from every child's
                            environment. Every child is killed after 180 s. Exit status 1 if
                            a run failed. Needs cc, python3, git and objdump.

    bench-compare DIR_A DIR_B
        Do two runs of the matrix agree? For every cell, whether one run's median lies within
        the other's min-max: in ns/op (results.csv), and relative to mimalloc with each run
        paired with mimalloc's run of the same scenario and repetition (samples.csv), which
        cancels the host's drift. Lists the cells that do not agree.

    help, -h, --help
        Print this text.

ENVIRONMENT:
    CARGO              the cargo to run (default: cargo)
    CARGO_TARGET_DIR   where the probes are built, tools/, icount/, large/ and
                       bench-matrix/ written (default: target)
    HAKMEM_MODE        removed from every child's environment unless a step sets it
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
enum Cli {
    Help,
    Test(test::Selection),
    Sanitizers {
        asan: bool,
        memcheck: bool,
    },
    Fuzz {
        secs: u64,
        extra: Vec<String>,
    },
    Icount(icount::Options),
    Large {
        check: bool,
    },
    Preload {
        modes: Vec<&'static str>,
        check: bool,
    },
    BenchMatrix(matrix::Options),
    BenchCompare(std::path::PathBuf, std::path::PathBuf),
}

/// Why a command line was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CliError {
    UnknownCommand(String),
    UnknownOption {
        command: &'static str,
        option: String,
    },
    BenchMatrix(matrix::UsageError),
    Usage(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::UnknownCommand(c) => write!(f, "unknown command `{c}`"),
            CliError::UnknownOption { command, option } => {
                write!(f, "unknown option `{option}` for `{command}`")
            }
            CliError::BenchMatrix(e) => write!(f, "{e}"),
            CliError::Usage(e) => write!(f, "{e}"),
        }
    }
}

fn parse(args: &[String]) -> Result<Cli, CliError> {
    let Some((command, options)) = args.split_first() else {
        return Ok(Cli::Help);
    };
    let is_help = |a: &String| matches!(a.as_str(), "-h" | "--help");
    let unknown = |command: &'static str, option: &String| CliError::UnknownOption {
        command,
        option: option.clone(),
    };
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Cli::Help),
        "test" => {
            let mut sel = test::Selection::ALL_CI;
            for option in options {
                match option.as_str() {
                    "--no-icount" => sel.icount = false,
                    "--no-matrix" => sel.matrix = false,
                    "--no-large" => sel.large = false,
                    "--no-preload" => sel.preload = false,
                    "--no-sanitizers" => sel.sanitizers = false,
                    "--fuzz" => sel.fuzz = Some(reliability::FUZZ_DEFAULT_SECS),
                    _ if option.starts_with("--fuzz=") => {
                        sel.fuzz = Some(seconds(&option["--fuzz=".len()..])?)
                    }
                    _ if is_help(option) => return Ok(Cli::Help),
                    _ => return Err(unknown("test", option)),
                }
            }
            Ok(Cli::Test(sel))
        }
        "sanitizers" => {
            let (mut asan, mut memcheck) = (false, false);
            for option in options {
                match option.as_str() {
                    "--asan" => asan = true,
                    "--memcheck" => memcheck = true,
                    _ if is_help(option) => return Ok(Cli::Help),
                    _ => return Err(unknown("sanitizers", option)),
                }
            }
            if !asan && !memcheck {
                (asan, memcheck) = (true, true);
            }
            Ok(Cli::Sanitizers { asan, memcheck })
        }
        "fuzz" => {
            let mut secs = reliability::FUZZ_DEFAULT_SECS;
            let mut rest = options.iter();
            while let Some(option) = rest.next() {
                match option.as_str() {
                    "--time" => {
                        let value = rest.next().ok_or_else(|| {
                            CliError::Usage("--time takes a number of seconds".into())
                        })?;
                        secs = seconds(value)?;
                    }
                    "--" => {
                        return Ok(Cli::Fuzz {
                            secs,
                            extra: rest.cloned().collect(),
                        })
                    }
                    _ if is_help(option) => return Ok(Cli::Help),
                    _ => return Err(unknown("fuzz", option)),
                }
            }
            Ok(Cli::Fuzz {
                secs,
                extra: Vec::new(),
            })
        }
        "preload" => parse_preload(options),
        "icount" => match icount::parse(options) {
            Ok(Some(opts)) => Ok(Cli::Icount(opts)),
            Ok(None) => Ok(Cli::Help),
            Err(e) => Err(CliError::Usage(e)),
        },
        "overhead" => Err(CliError::Usage(
            "`cargo xtask overhead` is now part of `cargo xtask icount`".into(),
        )),
        "large" => {
            let mut check = false;
            for option in options {
                match option.as_str() {
                    "--check" => check = true,
                    _ if is_help(option) => return Ok(Cli::Help),
                    _ => return Err(unknown("large", option)),
                }
            }
            Ok(Cli::Large { check })
        }
        "bench-matrix" => match matrix::options::parse(options) {
            Ok(matrix::Parsed::Help) => Ok(Cli::Help),
            Ok(matrix::Parsed::Run(opts)) => Ok(Cli::BenchMatrix(opts)),
            Err(e) => Err(CliError::BenchMatrix(e)),
        },
        "bench-compare" => match options {
            [a, b] if !a.starts_with('-') && !b.starts_with('-') => {
                Ok(Cli::BenchCompare(a.into(), b.into()))
            }
            [o] | [o, _] | [_, o] if is_help(o) => Ok(Cli::Help),
            _ => Err(CliError::Usage(
                "bench-compare takes two result directories".into(),
            )),
        },
        _ => Err(CliError::UnknownCommand(command.clone())),
    }
}

/// `preload [--mode M] [--check]`.
fn parse_preload(options: &[String]) -> Result<Cli, CliError> {
    let mut modes: Vec<&'static str> = preload::MODES.to_vec();
    let mut check = false;
    let mut it = options.iter();
    while let Some(option) = it.next() {
        let (flag, inline) = match option.split_once('=') {
            Some((f, v)) if f == "--mode" => (f, Some(v.to_owned())),
            _ => (option.as_str(), None),
        };
        match flag {
            "--check" => check = true,
            "--mode" => {
                let Some(value) = inline.or_else(|| it.next().cloned()) else {
                    return Err(CliError::Usage("`--mode` needs a value".into()));
                };
                let Some(mode) = preload::MODES.iter().find(|m| **m == value) else {
                    return Err(CliError::Usage(format!(
                        "unknown mode `{value}` for `preload --mode`; accepted: {}",
                        preload::MODES.join(", ")
                    )));
                };
                modes = vec![mode];
            }
            "-h" | "--help" => return Ok(Cli::Help),
            _ => {
                return Err(CliError::UnknownOption {
                    command: "preload",
                    option: option.clone(),
                })
            }
        }
    }
    Ok(Cli::Preload { modes, check })
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<u64, CliError> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(secs),
        _ => Err(CliError::Usage(format!(
            "`{text}` is not a positive number of seconds"
        ))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok(Cli::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Cli::Test(sel)) => {
            if test::run(sel) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Cli::Sanitizers { asan, memcheck }) => {
            let mut ok = true;
            for (on, name, run) in [
                (asan, "AddressSanitizer", reliability::asan as fn() -> _),
                (memcheck, "memcheck", reliability::memcheck),
            ] {
                if !on {
                    continue;
                }
                match run() {
                    Ok(true) => println!("xtask sanitizers: {name}: ok"),
                    Ok(false) => {
                        println!("xtask sanitizers: {name}: FAILED");
                        ok = false;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Cli::Fuzz { secs, extra }) => match reliability::fuzz(secs, &extra) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Cli::Preload { modes, check }) => match preload::run(&modes, check) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("xtask preload: a check failed (listed above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("xtask preload: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Cli::Icount(opts)) => {
            let invoked_as = format!("cargo xtask {}", args.join(" "));
            match icount::run(&opts, &invoked_as) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("xtask icount: FAILED (see above)");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Ok(Cli::Large { check }) => {
            let invoked_as = if check {
                "cargo xtask large --check"
            } else {
                "cargo xtask large"
            };
            match large::run(invoked_as) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) if check => {
                    eprintln!("xtask large: a check failed (--check)");
                    ExitCode::FAILURE
                }
                Ok(false) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Cli::BenchMatrix(opts)) => {
            let line = matrix::options::command_line(&args[1..]);
            match matrix::run(&opts, &line) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("xtask bench-matrix: some builds or runs failed (listed above)");
                    ExitCode::FAILURE
                }
                Err(matrix::Error::Usage(e)) => {
                    eprintln!("xtask bench-matrix: {e}");
                    ExitCode::from(2)
                }
                Err(matrix::Error::Failed(e)) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Cli::BenchCompare(a, b)) => match matrix::compare::run(&a, &b) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask bench-compare: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e @ CliError::BenchMatrix(_)) => {
            eprintln!("xtask bench-matrix: {e}\n(cargo xtask help describes every option)");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("xtask: {e}\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Cli, CliError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn preload_modes_and_check() {
        assert_eq!(
            parse_strs(&["preload"]),
            Ok(Cli::Preload {
                modes: preload::MODES.to_vec(),
                check: false
            })
        );
        let one = Ok(Cli::Preload {
            modes: vec!["runtime"],
            check: true,
        });
        assert_eq!(
            parse_strs(&["preload", "--check", "--mode", "runtime"]),
            one
        );
        assert_eq!(parse_strs(&["preload", "--mode=runtime", "--check"]), one);
        assert!(matches!(
            parse_strs(&["preload", "--mode", "turbo"]),
            Err(CliError::Usage(m)) if m.contains("accepted: minimal, fast, balanced")
        ));
        assert!(matches!(
            parse_strs(&["preload", "--mode"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse_strs(&["preload", "--fast"]),
            Err(CliError::UnknownOption {
                command: "preload",
                ..
            })
        ));
        assert_eq!(parse_strs(&["preload", "-h"]), Ok(Cli::Help));
        assert!(
            USAGE.contains("\n    preload [--mode M] [--check]\n")
                && USAGE.contains("--no-preload")
        );
    }

    #[test]
    fn commands_and_options() {
        assert_eq!(parse_strs(&[]), Ok(Cli::Help));
        assert_eq!(parse_strs(&["help"]), Ok(Cli::Help));
        assert_eq!(parse_strs(&["--help"]), Ok(Cli::Help));
        assert_eq!(parse_strs(&["-h"]), Ok(Cli::Help));
        let all = test::Selection::ALL_CI;
        assert_eq!(parse_strs(&["test"]), Ok(Cli::Test(all)));
        assert_eq!(
            parse_strs(&["test", "--no-icount"]),
            Ok(Cli::Test(test::Selection {
                icount: false,
                ..all
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--no-matrix", "--no-icount"]),
            Ok(Cli::Test(test::Selection {
                icount: false,
                matrix: false,
                ..all
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--no-large"]),
            Ok(Cli::Test(test::Selection {
                large: false,
                ..all
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--no-sanitizers", "--fuzz"]),
            Ok(Cli::Test(test::Selection {
                sanitizers: false,
                fuzz: Some(60),
                ..all
            }))
        );
        assert_eq!(
            parse_strs(&["test", "--fuzz=600"]),
            Ok(Cli::Test(test::Selection {
                fuzz: Some(600),
                ..all
            }))
        );
        assert!(parse_strs(&["test", "--fuzz=0"]).is_err());
        assert_eq!(
            parse_strs(&["sanitizers"]),
            Ok(Cli::Sanitizers {
                asan: true,
                memcheck: true
            })
        );
        assert_eq!(
            parse_strs(&["sanitizers", "--memcheck"]),
            Ok(Cli::Sanitizers {
                asan: false,
                memcheck: true
            })
        );
        assert_eq!(
            parse_strs(&["fuzz"]),
            Ok(Cli::Fuzz {
                secs: 60,
                extra: vec![]
            })
        );
        assert_eq!(
            parse_strs(&["fuzz", "--time", "600", "--", "-jobs=1"]),
            Ok(Cli::Fuzz {
                secs: 600,
                extra: vec!["-jobs=1".into()]
            })
        );
        assert!(parse_strs(&["fuzz", "--time"]).is_err());
        assert!(USAGE.contains("\n    sanitizers [--asan] [--memcheck]\n"));
        assert!(USAGE.contains("\n    fuzz [--time SECS]"));
        assert_eq!(parse_strs(&["large"]), Ok(Cli::Large { check: false }));
        assert_eq!(
            parse_strs(&["large", "--check"]),
            Ok(Cli::Large { check: true })
        );
        assert_eq!(parse_strs(&["large", "--help"]), Ok(Cli::Help));
        assert!(USAGE.contains("\n    large [--check]\n") && USAGE.contains("--no-large"));
        assert_eq!(
            parse_strs(&["bench-matrix"]),
            Ok(Cli::BenchMatrix(matrix::Options::default()))
        );
        assert_eq!(
            parse_strs(&["bench-matrix", "--smoke"]),
            Ok(Cli::BenchMatrix(matrix::Options::smoke()))
        );
        assert_eq!(parse_strs(&["bench-matrix", "--help"]), Ok(Cli::Help));
        assert_eq!(parse_strs(&["test", "--help"]), Ok(Cli::Help));
        assert_eq!(
            parse_strs(&["icount"]),
            Ok(Cli::Icount(icount::Options::default()))
        );
        assert_eq!(
            parse_strs(&["icount", "--bless"]),
            Ok(Cli::Icount(icount::Options {
                bless: true,
                ..icount::Options::default()
            }))
        );
        assert_eq!(parse_strs(&["icount", "--help"]), Ok(Cli::Help));
        assert!(
            USAGE.contains("\n    icount [--bless] [--baseline FILE] [--no-run] [--self-test]\n")
        );
        assert!(USAGE.contains("--no-icount") && !USAGE.contains("overhead"));
    }

    #[test]
    fn rejects_unknown_commands_and_options() {
        assert_eq!(
            parse_strs(&["bogus"]),
            Err(CliError::UnknownCommand("bogus".into()))
        );
        assert_eq!(
            parse_strs(&["test", "--check"]),
            Err(CliError::UnknownOption {
                command: "test",
                option: "--check".into()
            })
        );
        let err = parse_strs(&["icount", "--fast"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown option `--fast` for `icount`");
        let err = parse_strs(&["overhead", "--check"]).unwrap_err();
        assert!(err.to_string().contains("now part of `cargo xtask icount`"));
        let err = parse_strs(&["large", "--no-large"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown option `--no-large` for `large`");
        assert_eq!(
            parse_strs(&["bogus"]).unwrap_err().to_string(),
            "unknown command `bogus`"
        );
        let err = parse_strs(&["bench-matrix", "--allocators", "tcmalloc"]).unwrap_err();
        assert!(matches!(err, CliError::BenchMatrix(_)));
        assert!(err.to_string().contains("unknown allocator `tcmalloc`"));
    }

    #[test]
    fn bench_compare_takes_two_directories() {
        assert_eq!(
            parse_strs(&["bench-compare", "a", "b"]),
            Ok(Cli::BenchCompare("a".into(), "b".into()))
        );
        assert!(matches!(
            parse_strs(&["bench-compare", "a"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse_strs(&["bench-compare", "a", "b", "c"]),
            Err(CliError::Usage(_))
        ));
        assert_eq!(parse_strs(&["bench-compare", "--help"]), Ok(Cli::Help));
    }
}
