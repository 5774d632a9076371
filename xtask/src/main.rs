//! `cargo xtask`: project automation for hakmem.
//!
//! The command line is [`Cli`], parsed by clap; `cargo xtask help` and `cargo xtask COMMAND
//! --help` print the help generated from the doc comments below. The commands: `test` (the one
//! CI runs through `.ci/run`), `sanitizers` and `fuzz` ([`reliability`]), `preload`
//! ([`preload`]), `icount` ([`icount`]), `large` ([`large`]), `bench-matrix` and
//! `bench-compare` ([`matrix`]).
//!
//! `cargo xtask` is an alias (`.cargo/config.toml`) for `cargo run --quiet --package xtask --`.

mod cmd;
mod icount;
mod large;
mod matrix;
mod preload;
mod reliability;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// What `cargo xtask help` prints after the commands.
const ENVIRONMENT: &str = "\
Environment:
  CARGO             the cargo to run (default: cargo)
  CARGO_TARGET_DIR  where the probes are built, tools/, icount/, large/ and bench-matrix/
                    written (default: target)
  HAKMEM_MODE       removed from every child's environment unless a step sets it";

/// cargo xtask: project automation for hakmem
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// A command and its options.
#[derive(Debug, PartialEq, Subcommand)]
enum Command {
    /// The project's one test command (CI runs it through .ci/run)
    ///
    /// Every step runs even if an earlier one failed: cargo fmt --check; clippy -D warnings
    /// (workspace, all features; hakmem, default features); cargo test -p hakmem for each
    /// compiled mode (minimal, fast, balanced, learning, research) with HAKMEM_MODE set to it;
    /// for the runtime feature; cargo test --workspace --all-features; the hakmem tests under
    /// AddressSanitizer and under valgrind memcheck (sanitizers); the matrix smoke run
    /// (bench-matrix --smoke); the instruction-count check (icount --self-test); the large-block
    /// check (large --check); the preload check (preload --check); and, only with --fuzz, a fuzz
    /// run. Ends with a summary and the line `xtask test: N passed, M failed`; exit status 0
    /// only if all passed.
    Test(TestArgs),
    /// The hakmem tests under AddressSanitizer and valgrind memcheck (without options, both)
    ///
    /// AddressSanitizer: one nightly build with -Zsanitizer=address and the runtime feature, run
    /// once per mode with HAKMEM_MODE set to it. memcheck: the BALANCED build's test binaries,
    /// the pool tests one test per process; invalid reads or writes, uninitialised values and
    /// leaks not in xtask/valgrind.supp fail. Long tests run shrunk (QUICKCHECK_TESTS,
    /// HAKMEM_TEST_SCALE). Needs the nightly toolchain and valgrind.
    Sanitizers {
        /// Only the AddressSanitizer run
        #[arg(long)]
        asan: bool,
        /// Only the memcheck run
        #[arg(long)]
        memcheck: bool,
    },
    /// Runs the cargo-fuzz target `ops` on one core, with the nightly toolchain
    ///
    /// The target runs operation sequences against every mode, checked against a shadow model
    /// (fuzz/). Installs cargo-fuzz into <target>/tools first if it is missing. The corpus grows
    /// in fuzz/corpus/ops; a failing input lands in fuzz/artifacts/ops.
    Fuzz {
        /// Seconds to run
        #[arg(long, value_name = "SECS", default_value_t = reliability::FUZZ_DEFAULT_SECS,
              value_parser = clap::value_parser!(u64).range(1..))]
        time: u64,
        /// Arguments for libFuzzer (e.g. -jobs=1, -rss_limit_mb=4096)
        #[arg(last = true, value_name = "LIBFUZZER_ARGS")]
        extra: Vec<String>,
    },
    /// Builds the preload library (crates/hakmem-preload) once per mode; docs/preload.md
    ///
    /// LD_PRELOAD the library to make hakmem the malloc of any program. Each mode (minimal,
    /// fast, balanced, learning, research, runtime) is built with `cargo build --release -p
    /// hakmem-preload --no-default-features --features M`, copied to
    /// <target>/preload/M/libhakmem_preload.so, and that path printed, one line per mode (build
    /// progress goes to stderr).
    Preload {
        /// Only mode M
        #[arg(long, value_name = "M",
              value_parser = clap::builder::PossibleValuesParser::new(preload::MODES))]
        mode: Option<String>,
        /// Then run the check: no export of a release library reaches a panic (objdump); the C
        /// test (crates/hakmem-preload/tests/preload_test.c), the contract
        /// (tests/conformance.c), python3 round-tripping a large JSON document and git, first
        /// without the library, then under each mode and a debug build: the C programs must
        /// pass with nothing on stderr, python3 and git must print exactly what they print
        /// without the library. Then the learning modes' log (HAKMEM_LOG unset, 1, a path),
        /// and the cost of a failed malloc(3 TiB) per contender. Every child is killed after
        /// 180 s. Needs cc, python3, git and objdump.
        #[arg(long)]
        check: bool,
    },
    /// The instruction-count regression check of every mode's hot paths (needs valgrind)
    ///
    /// Installs iai-callgrind-runner into <target>/tools if it is missing, runs the
    /// iai-callgrind benches (benches/benches/icount.rs: every compiled mode, every runtime
    /// twin and, on the small-object paths, glibc/mimalloc/jemalloc) and compares every Ir
    /// count with the committed baseline benches/baselines/icount.json: exit status 1 if one is
    /// more than 2% above it (or missing from it), when the run's rustc, CPU, glibc and valgrind
    /// are the baseline's; otherwise the comparison is a warning. Always checks the
    /// machine-independent rules (docs/zero-overhead.md) and prints each with its figures.
    /// Writes <target>/icount/{measured.json, report.md, regression-analysis.md}.
    Icount(icount::Options),
    /// The measured acceptance of the large-block path (needs strace and valgrind)
    ///
    /// Builds benches' `large` probe (release) and measures, each in a fresh process: page
    /// faults and system calls per 2 MiB alloc/touch/free at steady state, RSS kept after
    /// 300 x 2 MiB were freed, the calls to release 1000 x 256 KiB, faults to touch a cold 2 MiB
    /// block under THP, realloc growth without copying (mremap, callgrind Ir), and
    /// alloc_zeroed of a recycled dirty block. Prints the table and writes
    /// <target>/large/large.md (docs/large-blocks.md).
    Large {
        /// Exit with status 1 if a check fails
        #[arg(long)]
        check: bool,
    },
    BenchMatrix(matrix::options::Args),
    /// Do two runs of the matrix agree?
    ///
    /// For every cell, whether one run's median lies within the other's min-max: in ns/op
    /// (results.csv), and relative to mimalloc with each run paired with mimalloc's run of the
    /// same scenario and repetition (samples.csv), which cancels the host's drift. Lists the
    /// cells that do not agree.
    BenchCompare {
        /// The first run's output directory
        dir_a: PathBuf,
        /// The second run's output directory
        dir_b: PathBuf,
    },
}

/// The options of `cargo xtask test`: which optional steps to skip or add.
#[derive(Debug, PartialEq, clap::Args)]
struct TestArgs {
    /// Skip the instruction-count check (it needs valgrind)
    #[arg(long)]
    no_icount: bool,
    /// Skip the matrix smoke run (it builds nine release binaries and the preload libraries,
    /// and compiles the C programs)
    #[arg(long)]
    no_matrix: bool,
    /// Skip the large-block check (it needs strace and valgrind)
    #[arg(long)]
    no_large: bool,
    /// Skip the preload check (it needs cc, python3 and git)
    #[arg(long)]
    no_preload: bool,
    /// Skip the AddressSanitizer and memcheck runs (nightly, valgrind)
    #[arg(long)]
    no_sanitizers: bool,
    /// Add a fuzz run of SECS seconds (default 60) at the end
    #[arg(long, value_name = "SECS", num_args = 0..=1, require_equals = true,
          default_missing_value = "60", value_parser = clap::value_parser!(u64).range(1..))]
    fuzz: Option<u64>,
}

impl TestArgs {
    fn selection(&self) -> test::Selection {
        test::Selection {
            icount: !self.no_icount,
            matrix: !self.no_matrix,
            large: !self.no_large,
            preload: !self.no_preload,
            sanitizers: !self.no_sanitizers,
            fuzz: self.fuzz,
        }
    }
}

/// The exit status of a check: `Ok(true)` passed, `Ok(false)` failed (after `failed` is printed,
/// unless empty), `Err` could not run (printed as `error: …`).
fn exit(result: Result<bool, String>, failed: &str) -> ExitCode {
    match result {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) if !failed.is_empty() => eprintln!("{failed}"),
        Ok(false) => {}
        Err(e) => eprintln!("error: {e}"),
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = Cli::parse().command else {
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    match command {
        Command::Test(t) => exit(Ok(test::run(t.selection())), ""),
        Command::Sanitizers { asan, memcheck } => {
            let both = !asan && !memcheck;
            let mut ok = true;
            for (on, name, run) in [
                (asan, "AddressSanitizer", reliability::asan as fn() -> _),
                (memcheck, "memcheck", reliability::memcheck),
            ] {
                if on || both {
                    let result = run();
                    match result {
                        Ok(true) => println!("xtask sanitizers: {name}: ok"),
                        Ok(false) => println!("xtask sanitizers: {name}: FAILED"),
                        Err(_) => {}
                    }
                    ok &= exit(result, "") == ExitCode::SUCCESS;
                }
            }
            exit(Ok(ok), "")
        }
        Command::Fuzz { time, extra } => exit(reliability::fuzz(time, &extra), ""),
        Command::Preload { mode, check } => {
            let modes: Vec<&str> = match &mode {
                Some(m) => vec![m.as_str()],
                None => preload::MODES.to_vec(),
            };
            let failed = "xtask preload: a check failed (listed above)";
            exit(preload::run(&modes, check), failed)
        }
        Command::Icount(opts) => {
            let invoked_as = format!("cargo xtask {}", args.join(" "));
            match icount::run(&opts, &invoked_as) {
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
                ok => exit(ok, "xtask icount: FAILED (see above)"),
            }
        }
        Command::Large { check } => {
            let invoked_as = match check {
                true => "cargo xtask large --check",
                false => "cargo xtask large",
            };
            let result = large::run(invoked_as).map(|ok| ok || !check);
            exit(result, "xtask large: a check failed (--check)")
        }
        Command::BenchMatrix(a) => {
            let line = matrix::options::command_line(&args[1..]);
            match matrix::run(&a.into(), &line) {
                Err(matrix::Error::Usage(e)) => {
                    eprintln!("xtask bench-matrix: {e}");
                    ExitCode::from(2)
                }
                Err(matrix::Error::Failed(e)) => exit(Err(e), ""),
                Ok(ok) => {
                    let failed = "xtask bench-matrix: some builds or runs failed (listed above)";
                    exit(Ok(ok), failed)
                }
            }
        }
        Command::BenchCompare { dir_a, dir_b } => {
            exit(matrix::compare::run(&dir_a, &dir_b).map(|()| true), "")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Command>, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).map(|c| c.command)
    }

    fn ok(args: &[&str]) -> Command {
        parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .unwrap()
    }

    fn is_help(args: &[&str]) -> bool {
        parse(args).is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp)
    }

    #[test]
    fn the_definition_is_consistent_and_help_is_everywhere() {
        Cli::command().debug_assert();
        assert!(matches!(parse(&[]), Ok(None)));
        let helps = "--help|-h|help|help icount|test --help|bench-matrix --full -h|large --help|\
                     bench-compare --help";
        for args in helps.split('|') {
            assert!(is_help(&args.split(' ').collect::<Vec<_>>()), "{args}");
        }
        let help = Cli::command().render_long_help().to_string();
        for command in ["test", "sanitizers", "fuzz", "preload", "icount", "large"] {
            assert!(
                help.contains(&format!("\n  {command} ")),
                "{command}: {help}"
            );
        }
        assert!(help.contains("bench-matrix") && help.contains("bench-compare"));
        assert!(help.contains("CARGO_TARGET_DIR") && !help.contains("overhead"));
    }

    #[test]
    fn commands_parse_to_their_options() {
        let sel = |args: &[&str]| match ok(args) {
            Command::Test(t) => t.selection(),
            other => panic!("{other:?}"),
        };
        let all = test::Selection::ALL_CI;
        assert_eq!(sel(&["test"]), all);
        let some = sel(&["test", "--no-matrix", "--no-icount"]);
        assert!(!some.icount && !some.matrix && some.large && some.preload && some.sanitizers);
        assert_eq!(some.fuzz, None);
        let other = sel(&["test", "--no-large", "--no-preload", "--no-sanitizers"]);
        assert!(!other.large && !other.preload && !other.sanitizers && other.icount);
        assert_eq!(sel(&["test", "--fuzz"]).fuzz, Some(60));
        assert_eq!(sel(&["test", "--fuzz=600"]).fuzz, Some(600));
        // argv => the command, as Debug shows it.
        const OK: &str = r#"
sanitizers --memcheck => Sanitizers { asan: false, memcheck: true }
fuzz => Fuzz { time: 60, extra: [] }
fuzz --time 600 -- -jobs=1 => Fuzz { time: 600, extra: ["-jobs=1"] }
large --check => Large { check: true }
bench-compare a b => BenchCompare { dir_a: "a", dir_b: "b" }
preload => Preload { mode: None, check: false }
preload --check --mode runtime => Preload { mode: Some("runtime"), check: true }
preload --mode=fast => Preload { mode: Some("fast"), check: false }
icount => Icount(Options { bless: false, baseline: None, no_run: false, self_test: false })
icount --bless => Icount(Options { bless: true, baseline: None, no_run: false, self_test: false })
icount --self-test --baseline /b.json --no-run => Icount(Options { bless: false, baseline: Some("/b.json"), no_run: true, self_test: true })"#;
        for case in OK.lines().skip(1) {
            let (args, want) = case.split_once(" => ").unwrap();
            let args: Vec<&str> = args.split(' ').collect();
            assert_eq!(format!("{:?}", ok(&args)), want);
        }
        const ERR: &str = "test --fuzz=0, test --check, fuzz --time, large --no-large, \
            bench-compare a, bench-compare a b c, overhead, bogus, preload --mode, \
            preload --fast, icount --baseline, icount --baseline --bless, \
            icount --bless --self-test, icount --check";
        for args in ERR.split(", ") {
            let args: Vec<&str> = args.split(' ').collect();
            assert!(parse(&args).is_err(), "{args:?}");
        }
        let err = parse(&["preload", "--mode", "turbo"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("minimal, fast, balanced"), "{err}");
        let matrix = |args: &[&str]| match ok(args) {
            Command::BenchMatrix(a) => matrix::Options::from(a),
            other => panic!("{other:?}"),
        };
        assert_eq!(matrix(&["bench-matrix"]), matrix::Options::default());
        assert_eq!(
            matrix(&["bench-matrix", "--smoke"]),
            matrix::Options::smoke()
        );
        let o = matrix(&[
            "bench-matrix",
            "--scenarios",
            "json,mir",
            "--allocators",
            "fast,mimalloc",
            "--reps",
            "21",
        ]);
        assert_eq!(o.reps, 21);
        assert_eq!(o.contenders.len(), 2);
        let err = parse(&["bench-matrix", "--allocators", "tcmalloc"]).unwrap_err();
        assert!(err.to_string().contains("unknown allocator `tcmalloc`"));
    }
}
