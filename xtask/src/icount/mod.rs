//! `cargo xtask icount`: the instruction-count regression check (its `--help` says what it
//! does). Installs the runner ([`ensure_runner`]), runs `benches/benches/icount.rs` and reads
//! each benchmark's `Ir` from iai-callgrind's JSON summary lines and what its teardown recorded
//! of the runtime configuration ([`measure`]), compares with the baseline ([`compare`]), checks
//! the [`rules`] and writes the reports ([`report`]). `--self-test` lowers the baseline by 10% in
//! a temporary copy and requires `cargo xtask icount --no-run --baseline COPY` to fail.

pub mod compare;
pub mod figures;
pub mod report;
pub mod rules;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;

use crate::cmd;
use compare::Comparison;
use figures::{Environment, Figures};

/// Operations per benchmark (`OPS` of benches/benches/icount.rs).
pub const OPS: u64 = 1024;

/// The `iai-callgrind` version of benches/Cargo.toml; its runner must be exactly this version.
pub const RUNNER_VERSION: &str = "0.16.1";

/// The benchmark target.
const BENCH: &str = "icount";

/// Where a benchmark's teardown records what it saw of the runtime configuration.
const CONFIG_DIR_VAR: &str = "HAKMEM_ICOUNT_CONFIG_DIR";

/// How much the self-test lowers the baseline: to this percentage.
const SELF_TEST_PERCENT: u64 = 90;

/// Instructions per operation of a benchmark's count.
pub fn per_op(ir: u64) -> f64 {
    ir as f64 / OPS as f64
}

/// A count as Ir/op for tables: one decimal, or digits grouped by thousands from 10,000 up.
pub fn show_per_op(ir: u64) -> String {
    let x = per_op(ir);
    if x >= 9_999.95 {
        crate::matrix::report::group_thousands(x.round() as u64)
    } else {
        format!("{x:.1}")
    }
}

/// The committed baseline, relative to the workspace root.
pub const BASELINE: &str = "benches/baselines/icount.json";
/// The regression analysis: prose, and the blocks [`report::regression_blocks`] fills.
pub const DOC: &str = "docs/regression-analysis.md";

/// The options of `cargo xtask icount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Options {
    /// Rewrite the baseline and docs/regression-analysis.md's generated blocks from this run
    /// instead of comparing (the rules are still checked)
    #[arg(long, conflicts_with = "self_test")]
    pub bless: bool,
    /// Compare with (or bless) FILE instead of the committed baseline
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Use the last run's <target>/icount/measured.json instead of running the benchmarks
    #[arg(long)]
    pub no_run: bool,
    /// Then prove the check can fail: lower the baseline by 10% in a temporary copy, run
    /// `icount --no-run --baseline COPY`, and require exit status 1 with every checked figure
    /// flagged
    #[arg(long)]
    pub self_test: bool,
}

/// `<target>/icount`.
fn out_dir() -> PathBuf {
    cmd::target_dir().join("icount")
}

/// The run's figures as written by the last run.
fn measured_path() -> PathBuf {
    out_dir().join("measured.json")
}

/// Reads a figures file, with its path in any error.
pub fn read_figures(path: &Path) -> Result<Figures, String> {
    Figures::from_json(&cmd::read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether `.crates.toml` (cargo install's record) lists the runner at [`RUNNER_VERSION`].
pub fn records_runner(crates_toml: &str) -> bool {
    crates_toml.contains(&format!("\"iai-callgrind-runner {RUNNER_VERSION} ("))
}

/// The runner in `<target>/tools/bin`, installed first if it is missing or of another version.
pub fn ensure_runner() -> Result<PathBuf, String> {
    let root = cmd::target_dir().join("tools");
    let exe = std::env::consts::EXE_SUFFIX;
    let bin = root.join("bin").join(format!("iai-callgrind-runner{exe}"));
    let installed = || {
        bin.is_file()
            && std::fs::read_to_string(root.join(".crates.toml")).is_ok_and(|t| records_runner(&t))
    };
    if installed() {
        return Ok(bin);
    }
    let root_arg = root.to_string_lossy().into_owned();
    let mut args = vec!["install", "--locked", "--force", "--root", &root_arg];
    args.extend(["--version", RUNNER_VERSION, "iai-callgrind-runner"]);
    println!(
        "icount: iai-callgrind-runner {RUNNER_VERSION} is not in {}: installing it (it takes \
         ~95 s on 2 cores, once per target directory):\nicount: $ {}",
        root.display(),
        cmd::show_cargo(&args, None)
    );
    let start = Instant::now();
    let mut install = cmd::cargo(&args, None);
    // Build in cargo's own temporary directory, not in the workspace's target.
    install.env_remove("CARGO_TARGET_DIR");
    cmd::run_inherited(&mut install, "cargo install iai-callgrind-runner")?;
    let took = cmd::seconds(start.elapsed());
    println!("icount: installed iai-callgrind-runner in {took} s");
    match installed() {
        true => Ok(bin),
        false => Err(format!(
            "cargo install succeeded but {} (version {RUNNER_VERSION}) is not there",
            bin.display()
        )),
    }
}

/// The `Ir` count and the `path/contender` id of one JSON summary line of iai-callgrind.
pub fn parse_summary(line: &str) -> Result<(String, u64), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let path = v
        .get("function_name")
        .and_then(Value::as_str)
        .ok_or("no `function_name`")?;
    let id = v.get("id").and_then(Value::as_str).ok_or("no `id`")?;
    let ir = v
        .get("profiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|profile| {
            profile
                .pointer("/summaries/total/summary/Callgrind/Ir/metrics")
                .and_then(new_metric)
        })
        .ok_or_else(|| format!("{path}/{id}: no callgrind `Ir` figure of this run"))?;
    Ok((format!("{path}/{id}"), ir))
}

/// The new value of an iai-callgrind metric: `{"Left": new}` or `{"Both": [new, old]}` (a
/// `{"Right": old}` has no new value).
fn new_metric(metrics: &Value) -> Option<u64> {
    let int = |v: &Value| v.get("Int").and_then(Value::as_u64);
    if let Some(new) = metrics.get("Left") {
        return int(new);
    }
    metrics.get("Both")?.get(0).and_then(int)
}

/// Runs the benchmarks; the figures of this run.
fn measure(runner: &Path, env: Environment) -> Result<Figures, String> {
    let config_dir = out_dir().join("config");
    let _ = std::fs::remove_dir_all(&config_dir);
    cmd::create_dir(&config_dir)?;
    let args = ["bench", "-p", "hakmem-benches", "--bench", BENCH];
    let args = [&args[..], &["--", "--output-format=json"]].concat();
    println!(
        "icount: $ IAI_CALLGRIND_RUNNER={} {}",
        runner.display(),
        cmd::show_cargo(&args, None)
    );
    let mut bench = cmd::cargo(&args, None);
    // The caller's iai-callgrind settings (baselines, output format …) must not change the run.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("IAI_CALLGRIND_") {
            bench.env_remove(key);
        }
    }
    bench
        .env("IAI_CALLGRIND_RUNNER", runner)
        .env(CONFIG_DIR_VAR, &config_dir)
        .stdout(Stdio::piped());
    let mut child = bench
        .spawn()
        .map_err(|e| format!("cargo bench could not start: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut figures = Figures {
        env,
        ..Figures::default()
    };
    let mut problems = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo bench's output: {e}"))?;
        if !line.trim_start().starts_with('{') {
            println!("{line}");
            continue;
        }
        match parse_summary(&line) {
            Ok((id, count)) => {
                println!("icount: {id:<28} {:>10.1} Ir/op", per_op(count));
                figures.insert(&id, count)?;
            }
            Err(e) => problems.push(e),
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo bench: {e}"))?;
    if !status.success() {
        return Err(format!("cargo bench failed ({status})"));
    }
    if let Some(first) = problems.first() {
        return Err(format!(
            "{} summary lines could not be read; the first: {first}",
            problems.len()
        ));
    }
    if figures.ir.is_empty() {
        return Err("cargo bench reported no benchmark".into());
    }
    for id in figures.ir.keys() {
        let file = config_dir.join(id.replacen('/', ".", 1));
        if let Ok(seen) = std::fs::read_to_string(&file) {
            figures.config.insert(id.clone(), seen.trim().to_owned());
        }
    }
    Ok(figures)
}

/// Runs `cargo xtask icount` with `opts`: `Ok(true)` if every check passed (and, with
/// `--self-test`, the tampered check failed as it must); `Err` if something could not be done.
/// `invoked_as` is the command recorded in the reports.
pub fn run(opts: &Options, invoked_as: &str) -> Result<bool, String> {
    let start = Instant::now();
    let root = cmd::workspace_root();
    let figures = if opts.no_run {
        let path = measured_path();
        println!(
            "icount: --no-run: the figures of the last run, {}",
            path.display()
        );
        read_figures(&path)?
    } else {
        if !cmd::is_installed("valgrind") {
            return Err(crate::large::VALGRIND_MISSING.to_owned());
        }
        let runner = ensure_runner()?;
        let figures = measure(&runner, Environment::detect())?;
        cmd::write(&measured_path(), figures.to_json())?;
        figures
    };
    let env_line = report::environment_line(&figures.env);
    println!(
        "icount: {} benchmarks measured with {env_line}",
        figures.ir.len()
    );

    let (rows, missing) = rules::rows(&figures);
    let mut rules = rules::rules(&rows, &missing);
    rules.push(rules::pool_rule(&figures));
    rules.push(rules::learning_rule(&figures));
    rules.push(rules::research_rule(&figures));
    let rules_ok = rules.iter().all(|r| r.ok);
    let baseline_path = opts.baseline.clone().unwrap_or_else(|| root.join(BASELINE));
    let date = cmd::first_line("date -u +%F");
    let doc = cmd::read(&root.join(DOC))?;
    let blocks = report::regression_blocks(&figures, &rows, &rules, &date, invoked_as);
    let analysis = report::regression_analysis(&doc, &blocks).map_err(|e| format!("{DOC}: {e}"))?;

    let mut md = format!("# cargo xtask icount\n\n`{invoked_as}`, {date}, {env_line}.\n\n");
    let compared = if opts.bless {
        let mut blessed = figures.clone();
        blessed.config.clear();
        cmd::write(&baseline_path, blessed.to_json())?;
        println!(
            "icount: --bless: wrote {} ({} figures)",
            baseline_path.display(),
            blessed.ir.len()
        );
        if opts.baseline.is_none() {
            cmd::write(&root.join(DOC), &analysis)?;
            println!("icount: --bless: wrote {DOC}");
        }
        md += &format!("Blessed: wrote {}.\n\n", baseline_path.display());
        true
    } else {
        let baseline = read_figures(&baseline_path).map_err(|e| {
            format!("{e}\n(to create or refresh the baseline: cargo xtask icount --bless)")
        })?;
        let comparison = Comparison::new(&figures, &baseline);
        println!("\nicount: against the baseline {}", baseline_path.display());
        if !comparison.enforced() {
            println!("icount: WARNING: this run's environment differs from the baseline's:");
            for (what, here, there) in &comparison.env_differences {
                println!("icount:     {what}: {here:?} here, {there:?} in the baseline");
            }
            println!(
                "icount: WARNING: the {}% comparison is shown, not enforced (a count from another \
                 toolchain, CPU or glibc is not a regression of the code); the machine-independent \
                 rules still are. `cargo xtask icount --bless` on this machine makes it the \
                 reference.",
                compare::TOLERANCE_PCT
            );
        }
        println!();
        let table = comparison.table();
        print!("{table}");
        println!("\nicount: {}", comparison.summary());
        if comparison.enforced() && !comparison.failures().is_empty() {
            println!(
                "icount: a figure above the baseline is a regression to fix; a new, gone or \
                 intended change of figures is accepted with `cargo xtask icount --bless` \
                 (commit the baseline with the change that explains it)"
            );
        }
        md += &format!(
            "## Against the baseline ({})\n\n{table}\n{}\n\n",
            baseline_path.display(),
            comparison.summary()
        );
        comparison.ok()
    };

    // Each table on stdout and in report.md under one title.
    let mut section = |title: &str, body: &str| {
        print!("\nicount: {title}:\n\n{body}");
        md += &format!("## {title}\n\n{body}\n");
    };
    section(
        "Compiled modes against their runtime twins (Ir/op)",
        &report::regression_table(&rows),
    );
    let reference = report::reference_table(&figures);
    if !reference.is_empty() {
        let title = "Reference allocators (never compared with the baseline; rule vi reads them)";
        section(title, &reference);
    }
    let rules_list: String = rules.iter().map(|rule| format!("- {rule}\n")).collect();
    section("Rules", &rules_list);

    let mut ok = rules_ok && compared;
    if !rules_ok {
        println!("icount: a machine-independent rule FAILED (listed above)");
    }
    if !compared {
        let pct = compare::TOLERANCE_PCT;
        println!("icount: FAILED: a figure is more than {pct}% above the baseline");
    }
    if opts.self_test {
        // Before the reports are written: the tampered run writes its own.
        ok &= self_test(&figures, &baseline_path)?;
    }

    let out = out_dir();
    let (report_md, analysis_md) = (out.join("report.md"), out.join("regression-analysis.md"));
    cmd::write(&report_md, &md)?;
    cmd::write(&analysis_md, &analysis)?;
    let took = cmd::seconds(start.elapsed());
    let (report_md, analysis_md) = (report_md.display(), analysis_md.display());
    println!("icount: wrote {report_md} and {analysis_md} ({took} s)");
    Ok(ok)
}

/// Proves the check can fail: lowers the baseline by 10% in a temporary copy and runs
/// `cargo xtask icount --no-run --baseline COPY` (this very program), which must exit with
/// status 1 having flagged every checked figure. `Ok(true)` if it did.
fn self_test(figures: &Figures, baseline_path: &Path) -> Result<bool, String> {
    let baseline = read_figures(baseline_path)?;
    // A baseline from another environment is not enforced: then this run's figures are lowered.
    let same_env = baseline.env == figures.env;
    let what = match same_env {
        true => format!("the baseline {}", baseline_path.display()),
        false => "this run's own figures (the baseline's environment differs)".to_owned(),
    };
    let source = if same_env { &baseline } else { figures };
    let tampered = source.scaled(SELF_TEST_PERCENT);
    let expected = Comparison::new(figures, &tampered);
    let checked = expected.failures().len();
    let dir = std::env::temp_dir().join(format!("hakmem-icount-self-test-{}", std::process::id()));
    let copy = dir.join("icount.json");
    cmd::write(&copy, tampered.to_json())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut args: Vec<OsString> = ["icount", "--no-run", "--baseline"].map(Into::into).into();
    args.push(copy.clone().into());
    println!(
        "\nicount: --self-test: {what} lowered by {}% into {}; running `cargo xtask icount \
         --no-run --baseline {}`, which must fail:",
        100 - SELF_TEST_PERCENT,
        copy.display(),
        copy.display()
    );
    let out = cmd::command(&exe, &args, None)
        .output()
        .map_err(|e| format!("{} could not start: {e}", exe.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("icount: ") && (l.contains("baseline") || l.contains("FAILED")))
    {
        println!("icount: --self-test:   | {line}");
    }
    let flagged = format!(
        "icount: {checked} of {checked} figures more than {}% above the baseline",
        compare::TOLERANCE_PCT
    );
    let proved = out.status.code() == Some(1) && checked > 0 && stdout.contains(&flagged);
    if proved {
        println!("icount: --self-test: ok: it exited with status 1 and flagged all {checked}");
    } else {
        println!(
            "icount: --self-test: FAILED: expected exit status 1 and `{flagged}`; got {} \
             (output follows)\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(proved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_runner_ops_and_the_committed_baseline() {
        // Abridged from a real line of `cargo bench --bench icount -- --output-format=json`.
        let first_run = r#"{"function_name":"tiny_pair","id":"minimal","module_path":"icount::tiny_pair::tiny_pair","profiles":[{"summaries":{"total":{"regressions":[],"summary":{"Callgrind":{"Dr":{"diffs":null,"metrics":{"Left":{"Int":40971}}},"Ir":{"diffs":null,"metrics":{"Left":{"Int":151580}}}}}}}}]}"#;
        assert_eq!(
            parse_summary(first_run),
            Ok(("tiny_pair/minimal".to_owned(), 151_580))
        );
        let again = first_run.replace(
            r#"{"Left":{"Int":151580}}"#,
            r#"{"Both":[{"Int":151581},{"Int":151580}]}"#,
        );
        assert_eq!(
            parse_summary(&again),
            Ok(("tiny_pair/minimal".to_owned(), 151_581))
        );
        let old_only = first_run.replace(r#""Left":{"Int":151580}"#, r#""Right":{"Int":151580}"#);
        assert!(parse_summary(&old_only)
            .unwrap_err()
            .contains("no callgrind `Ir`"));
        assert!(parse_summary("{}").unwrap_err().contains("function_name"));
        assert!(parse_summary("nope").is_err());
        assert_eq!(show_per_op(148 * OPS), "148.0");
        assert_eq!(show_per_op(835 * OPS + 102), "835.1");
        assert_eq!(show_per_op(131_467 * OPS), "131,467");
        assert_eq!(show_per_op(9_999 * OPS), "9999.0");
        let toml = "[v1]\n\"iai-callgrind-runner 0.16.1 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"iai-callgrind-runner\"]\n";
        assert!(records_runner(toml));
        assert!(!records_runner(&toml.replace("0.16.1", "0.16.0")));
        assert!(!records_runner(&toml.replace("0.16.1", "0.16.10")));
        assert!(!records_runner(""));
        let root = cmd::workspace_root();
        let bench = std::fs::read_to_string(root.join("benches/benches/icount.rs")).unwrap();
        assert!(
            bench.contains(&format!("pub const OPS: usize = {OPS};")),
            "benches/benches/icount.rs must run OPS = {OPS} operations"
        );
        assert!(bench.contains(&format!("\"{CONFIG_DIR_VAR}\"")));
        let manifest = std::fs::read_to_string(root.join("benches/Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("iai-callgrind = \"={RUNNER_VERSION}\"")),
            "the runner must be the library's exact version"
        );
        let doc = std::fs::read_to_string(root.join(DOC)).unwrap();
        assert!(doc.contains(&format!("divided by the {OPS} operations")));
        let baseline = read_figures(&cmd::workspace_root().join(BASELINE)).unwrap();
        let (rows, missing) = rules::rows(&baseline);
        assert!(missing.is_empty(), "{missing:?}");
        assert!(rows.len() >= 30, "every mode of at least six paths");
        // Its text is exactly what --bless writes: sorted, one entry per line.
        let text = std::fs::read_to_string(cmd::workspace_root().join(BASELINE)).unwrap();
        assert_eq!(text, baseline.to_json());
    }
}
