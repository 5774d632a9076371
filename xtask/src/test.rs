//! `cargo xtask test`: the project's one test command, the one CI runs (through `.ci/run`); its
//! steps are listed by `cargo xtask test --help`. Every step runs even after one fails.

use std::time::{Duration, Instant};

use crate::cmd;
use crate::icount;
use crate::large;
use crate::matrix;
use crate::preload;
use crate::reliability;

/// The compiled modes, each a cargo feature of `hakmem` and a value of `HAKMEM_MODE`.
pub const MODES: [&str; 5] = ["minimal", "fast", "balanced", "learning", "research"];

/// One step of `cargo xtask test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What the progress line and the summary call it.
    pub title: String,
    /// What it runs.
    pub action: Action,
}

/// What a [`Step`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `cargo args…`, with `HAKMEM_MODE` set to `mode` or removed.
    Cargo {
        args: Vec<&'static str>,
        mode: Option<&'static str>,
    },
    // The rest run their `cargo xtask` command in this process (their titles name it).
    Matrix,
    Icount,
    Large,
    Preload,
    Asan,
    Memcheck,
    Fuzz(u64),
}

impl Action {
    /// An in-process step's title: what it checks and the command it stands for (the cargo
    /// steps are titled where they are made).
    fn title(&self) -> String {
        use Action::*;
        match self {
            Cargo { args, mode } => cmd::show_cargo(args, *mode),
            Asan => "AddressSanitizer, every mode (cargo xtask sanitizers --asan)".into(),
            Memcheck => "valgrind memcheck, BALANCED (cargo xtask sanitizers --memcheck)".into(),
            Matrix => "matrix smoke run (cargo xtask bench-matrix --smoke)".into(),
            Icount => "instruction counts (cargo xtask icount --self-test)".into(),
            Large => "large-block check (cargo xtask large --check)".into(),
            Preload => "preload check (cargo xtask preload --check)".into(),
            Fuzz(secs) => format!("fuzz run, {secs} s (cargo xtask fuzz --time {secs})"),
        }
    }
}

/// Which of the optional steps run (the rest always do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub icount: bool,
    pub matrix: bool,
    pub large: bool,
    pub preload: bool,
    /// The AddressSanitizer and memcheck runs.
    pub sanitizers: bool,
    /// A fuzz run of this many seconds (not in CI).
    pub fuzz: Option<u64>,
}

impl Selection {
    #[cfg(test)]
    /// What `cargo xtask test` runs without options, i.e. what CI runs.
    pub const ALL_CI: Selection = Selection {
        icount: true,
        matrix: true,
        large: true,
        preload: true,
        sanitizers: true,
        fuzz: None,
    };
}

/// The steps, in order: the cargo steps, then the selected optional ones, the fuzz run last.
pub fn steps(sel: Selection) -> Vec<Step> {
    let cargo = |title: String, args: &'static str, mode: Option<&'static str>| {
        let mut args: Vec<&'static str> = args.split(' ').collect();
        args.extend(mode);
        let action = Action::Cargo { args, mode };
        Step { title, action }
    };
    let per_mode = "test -p hakmem --no-default-features --features";
    let mut steps = vec![
        cargo("cargo fmt --all --check".into(), "fmt --all --check", None),
        cargo(
            "cargo clippy --workspace --all-targets --all-features".into(),
            "clippy --workspace --all-targets --all-features -- -D warnings",
            None,
        ),
        cargo(
            "cargo clippy -p hakmem --all-targets (default features)".into(),
            "clippy -p hakmem --all-targets -- -D warnings",
            None,
        ),
    ];
    for mode in MODES {
        let title = format!("cargo test -p hakmem (feature {mode}, HAKMEM_MODE={mode})");
        steps.push(cargo(title, per_mode, Some(mode)));
    }
    steps.push(cargo(
        "cargo test -p hakmem (feature runtime, HAKMEM_MODE unset)".into(),
        "test -p hakmem --no-default-features --features runtime",
        None,
    ));
    steps.push(cargo(
        "cargo test --workspace --all-features (HAKMEM_MODE unset)".into(),
        "test --workspace --all-features",
        None,
    ));
    use Action::*;
    let optional = [
        (sel.sanitizers, Asan),
        (sel.sanitizers, Memcheck),
        (sel.matrix, Matrix),
        (sel.icount, Icount),
        (sel.large, Large),
        (sel.preload, Preload),
    ];
    let fuzz = sel.fuzz.map(|secs| (true, Fuzz(secs)));
    for (_, action) in optional.into_iter().chain(fuzz).filter(|o| o.0) {
        let title = action.title();
        steps.push(Step { title, action });
    }
    steps
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Failed, with the reason.
    Failed(String),
    Skipped,
}

/// Runs the steps; `true` if all passed.
pub fn run(sel: Selection) -> bool {
    let Selection {
        icount,
        matrix,
        large,
        preload,
        sanitizers,
        ..
    } = sel;
    let steps = steps(sel);
    let total = steps.len();
    let mut results: Vec<(String, Outcome, Duration)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let tag = format!("[{}/{total}]", i + 1);
        println!("\n{tag} {} …", step.title);
        let start = Instant::now();
        let result = match &step.action {
            Action::Cargo { args, mode } => {
                println!(
                    "{:w$} $ {}",
                    "",
                    cmd::show_cargo(args, *mode),
                    w = tag.len()
                );
                cmd::run_inherited(&mut cmd::cargo(args, *mode), "cargo")
            }
            Action::Matrix => verdict(
                matrix::run(
                    &matrix::Options::smoke(),
                    "cargo xtask test (its matrix step: cargo xtask bench-matrix --smoke)",
                )
                .map_err(|e| e.to_string()),
                "some matrix builds or runs failed",
            ),
            Action::Icount => verdict(
                icount::run(
                    &icount::Options {
                        self_test: true,
                        ..icount::Options::default()
                    },
                    "cargo xtask test (its icount step: cargo xtask icount --self-test)",
                ),
                "an instruction-count check failed",
            ),
            Action::Large => verdict(
                large::run("cargo xtask test (its large-block step: cargo xtask large --check)"),
                "a large-block check failed",
            ),
            Action::Preload => verdict(preload::run(&preload::MODES, true), "a preload run failed"),
            Action::Asan => verdict(reliability::asan(), "a mode failed under AddressSanitizer"),
            Action::Memcheck => verdict(reliability::memcheck(), "a test failed under memcheck"),
            Action::Fuzz(secs) => verdict(reliability::fuzz(*secs, &[]), "the fuzzer failed"),
        };
        let took = start.elapsed();
        let outcome = match result {
            Ok(()) => {
                println!("{tag} ok ({} s)", cmd::seconds(took));
                Outcome::Passed
            }
            Err(why) => {
                println!("{tag} FAILED ({why}; {} s)", cmd::seconds(took));
                Outcome::Failed(why)
            }
        };
        results.push((step.title.clone(), outcome, took));
    }
    let skipped = [
        (matrix, "matrix smoke run", "--no-matrix"),
        (icount, "instruction counts", "--no-icount"),
        (large, "large-block check", "--no-large"),
        (preload, "preload check", "--no-preload"),
        (
            sanitizers,
            "AddressSanitizer and memcheck runs",
            "--no-sanitizers",
        ),
    ];
    for (_, what, flag) in skipped.into_iter().filter(|(on, ..)| !on) {
        println!("\n[--] {what} skipped ({flag})");
        results.push((what.to_owned(), Outcome::Skipped, Duration::ZERO));
    }
    print!("\n{}", summary(&results));
    let (passed, failed) = counts(&results);
    println!("xtask test: {passed} passed, {failed} failed");
    failed == 0
}

/// A step's result from a check's `Ok(passed)` / `Err(why)`.
fn verdict(result: Result<bool, String>, failed: &str) -> Result<(), String> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(failed.to_owned()),
        Err(e) => {
            eprintln!("error: {e}");
            Err(e)
        }
    }
}

/// How many steps passed and how many failed (skipped ones count as neither).
pub fn counts(results: &[(String, Outcome, Duration)]) -> (usize, usize) {
    let passed = results.iter().filter(|r| r.1 == Outcome::Passed).count();
    let failed = results
        .iter()
        .filter(|r| matches!(r.1, Outcome::Failed(_)))
        .count();
    (passed, failed)
}

/// The summary table: step, result, seconds; a total at the bottom.
pub fn summary(results: &[(String, Outcome, Duration)]) -> String {
    let width = results
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max("step".len());
    let mut out = format!("{:width$}  {:7}  {:>7}\n", "step", "result", "seconds");
    for (title, outcome, took) in results {
        let (result, secs) = match outcome {
            Outcome::Passed => ("ok", cmd::seconds(*took)),
            Outcome::Failed(_) => ("FAILED", cmd::seconds(*took)),
            Outcome::Skipped => ("skipped", "-".to_owned()),
        };
        out += &format!("{title:width$}  {result:7}  {secs:>7}\n");
    }
    let all: Duration = results.iter().map(|r| r.2).sum();
    out += &format!("{:width$}  {:7}  {:>7}\n", "total", "", cmd::seconds(all));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_in_order_as_selected_and_their_summary() {
        use Action::*;
        let all = steps(Selection::ALL_CI);
        assert!(matches!(
            &all[9].action,
            Cargo { args, .. } if args[..2] == ["test", "--workspace"]
        ));
        // Only the per-mode tests set the mode; clippy denies warnings.
        let mut with_mode = Vec::new();
        for step in &all {
            match &step.action {
                Cargo {
                    args,
                    mode: Some(m),
                } => {
                    let want = format!("test -p hakmem --no-default-features --features {m}");
                    assert_eq!(args.join(" "), want);
                    with_mode.push(*m);
                }
                Cargo { args, .. } if args[0] == "clippy" => {
                    assert!(args.ends_with(&["--", "-D", "warnings"]), "{args:?}")
                }
                _ => {}
            }
        }
        assert_eq!(with_mode, MODES);
        // The ten cargo steps always run; the optional ones follow, as selected (`toggled`: from
        // what CI runs).
        for (toggled, optional) in [
            ("", "Asan Memcheck Matrix Icount Large Preload"),
            ("icount", "Asan Memcheck Matrix Large Preload"),
            ("matrix", "Asan Memcheck Icount Large Preload"),
            ("large", "Asan Memcheck Matrix Icount Preload"),
            ("preload", "Asan Memcheck Matrix Icount Large"),
            ("icount matrix large", "Asan Memcheck Preload"),
            ("icount matrix large preload sanitizers", ""),
            ("sanitizers fuzz", "Matrix Icount Large Preload Fuzz(30)"),
        ] {
            let on = |step| !toggled.split(' ').any(|o| o == step);
            let selection = Selection {
                icount: on("icount"),
                matrix: on("matrix"),
                large: on("large"),
                preload: on("preload"),
                sanitizers: on("sanitizers"),
                fuzz: (!on("fuzz")).then_some(30),
            };
            let got: Vec<String> = steps(selection)[10..]
                .iter()
                .map(|s| format!("{:?}", s.action))
                .collect();
            assert_eq!(got.join(" "), optional, "{toggled}");
        }
        let results = vec![
            ("a".to_owned(), Outcome::Passed, Duration::from_millis(1500)),
            (
                "bb".to_owned(),
                Outcome::Failed("exit status: 101".into()),
                Duration::from_millis(240),
            ),
            (
                "instruction counts".to_owned(),
                Outcome::Skipped,
                Duration::ZERO,
            ),
        ];
        assert_eq!(counts(&results), (1, 1));
        let table = summary(&results);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[1].starts_with("a ") && lines[1].contains("ok") && lines[1].ends_with("1.5"));
        assert!(lines[2].contains("FAILED") && lines[2].ends_with("0.2"));
        assert!(lines[3].contains("skipped") && lines[3].ends_with('-'));
        assert!(lines[4].starts_with("total") && lines[4].ends_with("1.7"));
    }
}
