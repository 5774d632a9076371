//! `cargo xtask overhead [--check]`: zero-overhead evidence from callgrind instruction counts.
//!
//! For each size in [`SIZES`] and each compiled mode, the probe `pairs` (benches/src/bin/pairs.rs)
//! runs under `valgrind --tool=callgrind` twice per policy — the compiled policy (`pairs MODE SIZE
//! N`, `HAKMEM_MODE` removed) and its runtime twin (`pairs runtime SIZE N`, `HAKMEM_MODE=MODE`) —
//! once with [`N_SMALL`] and once with [`N_LARGE`] alloc+free pairs. The difference of the two
//! instruction totals divided by the difference of N is the cost of one pair, with start-up and
//! exit cancelled out. Callgrind counts are deterministic, so one run of each suffices.
//!
//! At each size it also runs [`LEARNING_TWIN`] — LEARNING with `evolution: Evolution::Off`, a
//! policy of the probe — so that what learning itself costs LEARNING is measured apart from what
//! LEARNING's other settings (full statistics, no pool) cost next to BALANCED.
//!
//! The results go to stdout and to `target/overhead/overhead.md` as a markdown table, followed by
//! the rules a zero-overhead design must satisfy (see [`rules`] and [`learning_rule`]); `--check`
//! turns a broken rule into exit status 1.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::process::Command;

use crate::cmd;
use crate::test::MODES;

/// The block sizes measured: a small-class size and a large (mapped) one.
pub const SIZES: [usize; 2] = [32, 2 * 1024 * 1024];
/// Pairs in the shorter run.
pub const N_SMALL: u64 = 1_000;
/// Pairs in the longer run.
pub const N_LARGE: u64 = 11_000;

/// Rule (v): the most instructions a 2 MiB alloc+free pair may cost in the caching modes.
pub const LARGE_PAIR_BUDGET: u64 = 100;
/// The block size rule (v) is about.
pub const LARGE_PAIR_SIZE: usize = 2 * 1024 * 1024;
/// The compiled modes rule (v) binds.
pub const LARGE_PAIR_MODES: [&str; 2] = ["balanced", "fast"];

/// The probe's policy that is LEARNING with `evolution: Evolution::Off`.
pub const LEARNING_TWIN: &str = "learning-off";
/// Rule (vi): the most instructions learning may add to a small pair of LEARNING (issue 4,
/// acceptance 3), measured against [`LEARNING_TWIN`].
pub const LEARNING_BUDGET: u64 = 15;
/// The block size rule (vi) is about.
pub const LEARNING_SIZE: usize = 32;

/// What the probe prints when `Allocator<Runtime>`'s configuration was never read.
pub const UNTOUCHED: &str = "runtime-config=untouched";
/// The beginning of the probe's one line of output.
const CONFIG_PREFIX: &str = "runtime-config=";

/// The error when valgrind cannot be started.
pub const VALGRIND_MISSING: &str =
    "valgrind is required to count instructions: apt-get install valgrind (.ci/run installs it)";

/// One policy at one size: the callgrind totals of the two runs and what each printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `Ir` total of the run with [`N_SMALL`] pairs.
    pub ir_small: u64,
    /// `Ir` total of the run with [`N_LARGE`] pairs.
    pub ir_large: u64,
    /// The `runtime-config=` line of the [`N_SMALL`] run, then of the [`N_LARGE`] run.
    pub config: [String; 2],
}

impl Probe {
    /// Instructions of `N_LARGE − N_SMALL` pairs: exact, for comparisons.
    pub fn delta(&self) -> i128 {
        i128::from(self.ir_large) - i128::from(self.ir_small)
    }

    /// Instructions per pair.
    pub fn per_pair(&self) -> f64 {
        per_pair(self.ir_small, self.ir_large)
    }
}

/// `(ir_large − ir_small) / (N_LARGE − N_SMALL)`.
pub fn per_pair(ir_small: u64, ir_large: u64) -> f64 {
    (i128::from(ir_large) - i128::from(ir_small)) as f64 / (N_LARGE - N_SMALL) as f64
}

/// One table row: a mode at a size, compiled and as the runtime twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub size: usize,
    pub mode: &'static str,
    pub compiled: Probe,
    pub runtime: Probe,
}

/// The total valgrind reports on stderr as `==PID== Collected : 123456` (the last such line).
pub fn parse_collected(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|line| {
            let rest = strip_pid(line).trim_start().strip_prefix("Collected")?;
            let number = rest.trim_start().strip_prefix(':')?.trim();
            let digits: String = number.chars().filter(|&c| c != ',').collect();
            digits.parse().ok()
        })
        .next_back()
}

/// `line` without valgrind's `==PID==` prefix.
fn strip_pid(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("==") else {
        return line;
    };
    match rest.find("==") {
        Some(end) if rest[..end].bytes().all(|b| b.is_ascii_digit()) => &rest[end + 2..],
        _ => line,
    }
}

/// The probe's `runtime-config=…` line.
pub fn parse_config(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(CONFIG_PREFIX))
        .map(str::to_owned)
}

/// `32 B`, `4 KiB`, `2 MiB`.
pub fn size_label(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

/// A rule's verdict with its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the rule says, then the figures.
    pub text: String,
    pub ok: bool,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok" } else { "FAILED" };
        write!(f, "rule: {} — {verdict}", self.text)
    }
}

/// The learning modes, and the smallest request their learner routes (and measures): at and
/// above it their instruction count depends on the costs the learner measured (times), so two
/// runs may take different paths.
pub const LEARNING_MODES: [&str; 2] = ["learning", "research"];
/// See [`LEARNING_MODES`].
pub const CONTESTED: usize = 512 * 1024;
/// Rule (i)'s tolerance, in percent, for a learning mode at a contested size.
pub const CONTESTED_TOLERANCE_PCT: i128 = 5;

/// Whether `r` is a learning mode at a size its learner routes.
fn contested(r: &Row) -> bool {
    LEARNING_MODES.contains(&r.mode) && r.size >= CONTESTED
}

/// The rules:
/// (i) for every size and mode the compiled policy costs no more than its runtime twin (a
/// learning mode at a contested size: no more than [`CONTESTED_TOLERANCE_PCT`]% more, since
/// which path its learner takes depends on measured times);
/// (ii) for `minimal` it costs strictly less (the runtime twin's flag checks are visible);
/// (iii) every compiled run leaves the runtime configuration untouched;
/// (iv) every runtime run read `HAKMEM_MODE` and got its mode;
/// (v) BALANCED and FAST, compiled, spend at most [`LARGE_PAIR_BUDGET`] instructions on a 2 MiB
/// pair (a BigCache hit on each side; mmap + munmap cost more).
pub fn rules(rows: &[Row]) -> Vec<Rule> {
    let nothing = if rows.is_empty() {
        "; nothing was measured"
    } else {
        ""
    };
    let both = |r: &Row| (r.compiled.per_pair(), r.runtime.per_pair());

    // (i)
    let exceeds = |r: &Row| {
        if contested(r) {
            r.compiled.delta() * 100 > r.runtime.delta() * (100 + CONTESTED_TOLERANCE_PCT)
        } else {
            r.compiled.delta() > r.runtime.delta()
        }
    };
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| exceeds(r))
        .map(|r| {
            let (c, rt) = both(r);
            format!("{} {}: {c:.1} > {rt:.1}", size_label(r.size), r.mode)
        })
        .collect();
    let figures = if bad.is_empty() {
        match rows
            .iter()
            .min_by_key(|r| r.runtime.delta() - r.compiled.delta())
        {
            Some(r) => {
                let (c, rt) = both(r);
                format!(
                    ", tightest {} {} {c:.1} ≤ {rt:.1}",
                    size_label(r.size),
                    r.mode
                )
            }
            None => String::new(),
        }
    } else {
        format!("; violated by {}", bad.join(", "))
    };
    let first = Rule {
        text: format!(
            "(i) compiled Ir/pair ≤ runtime Ir/pair for every size and mode (learning and \
             research at ≥ 512 KiB: within {CONTESTED_TOLERANCE_PCT}%): {}/{} hold{figures}{nothing}",
            rows.len() - bad.len(),
            rows.len()
        ),
        ok: bad.is_empty() && !rows.is_empty(),
    };

    // (ii)
    let minimal: Vec<&Row> = rows.iter().filter(|r| r.mode == "minimal").collect();
    let figures: Vec<String> = minimal
        .iter()
        .map(|r| {
            let (c, rt) = both(r);
            let op = if r.compiled.delta() < r.runtime.delta() {
                "<"
            } else {
                "≮"
            };
            format!("{} {c:.1} {op} {rt:.1}", size_label(r.size))
        })
        .collect();
    let second = Rule {
        text: format!(
            "(ii) minimal: compiled Ir/pair < runtime Ir/pair: {}",
            if figures.is_empty() {
                "no minimal rows measured".to_owned()
            } else {
                figures.join(", ")
            }
        ),
        ok: !minimal.is_empty()
            && minimal
                .iter()
                .all(|r| r.compiled.delta() < r.runtime.delta()),
    };

    // (iii) and (iv)
    let lines = |expect: &dyn Fn(&Row) -> String, probe: fn(&Row) -> &Probe| {
        let mut bad = Vec::new();
        for r in rows {
            for (line, n) in probe(r).config.iter().zip([N_SMALL, N_LARGE]) {
                if *line != expect(r) {
                    bad.push(format!(
                        "{} {} N={n} printed `{line}`",
                        size_label(r.size),
                        r.mode
                    ));
                }
            }
        }
        bad
    };
    let runs = 2 * rows.len();
    let bad = lines(&|_| UNTOUCHED.to_owned(), |r| &r.compiled);
    let third = Rule {
        text: verdict_text(
            &format!("(iii) every compiled run printed `{UNTOUCHED}`"),
            runs,
            &bad,
            nothing,
        ),
        ok: bad.is_empty() && !rows.is_empty(),
    };
    let bad = lines(&|r| format!("{CONFIG_PREFIX}read:{}", r.mode), |r| {
        &r.runtime
    });
    let fourth = Rule {
        text: verdict_text(
            &format!("(iv) every runtime run printed `{CONFIG_PREFIX}read:MODE` for its MODE"),
            runs,
            &bad,
            nothing,
        ),
        ok: bad.is_empty() && !rows.is_empty(),
    };

    // (v)
    let budget = i128::from(LARGE_PAIR_BUDGET) * i128::from(N_LARGE - N_SMALL);
    let mut figures = Vec::new();
    let mut fifth_ok = true;
    for mode in LARGE_PAIR_MODES {
        match rows
            .iter()
            .find(|r| r.size == LARGE_PAIR_SIZE && r.mode == mode)
        {
            Some(r) => {
                let within = r.compiled.delta() <= budget;
                fifth_ok &= within;
                let op = if within { "≤" } else { ">" };
                figures.push(format!(
                    "{mode} {:.1} {op} {LARGE_PAIR_BUDGET}",
                    r.compiled.per_pair()
                ));
            }
            None => {
                fifth_ok = false;
                figures.push(format!("{mode} not measured"));
            }
        }
    }
    let fifth = Rule {
        text: format!(
            "(v) BALANCED and FAST {} pair ≤ {LARGE_PAIR_BUDGET} Ir (compiled): {}",
            size_label(LARGE_PAIR_SIZE),
            figures.join(", ")
        ),
        ok: fifth_ok,
    };

    vec![first, second, third, fourth, fifth]
}

/// Rule (vi): at [`LEARNING_SIZE`], compiled LEARNING spends at most [`LEARNING_BUDGET`]
/// instructions per pair more than [`LEARNING_TWIN`] (the same policy without learning). `twins`
/// holds the twin's probe per size. The figure against BALANCED is printed beside it.
pub fn learning_rule(rows: &[Row], twins: &[(usize, Probe)]) -> Rule {
    let compiled = |mode: &str| {
        rows.iter()
            .find(|r| r.size == LEARNING_SIZE && r.mode == mode)
            .map(|r| &r.compiled)
    };
    let twin = twins
        .iter()
        .find(|(size, _)| *size == LEARNING_SIZE)
        .map(|(_, p)| p);
    let size = size_label(LEARNING_SIZE);
    let (Some(learning), Some(twin)) = (compiled("learning"), twin) else {
        return Rule {
            text: format!(
                "(vi) learning adds ≤ {LEARNING_BUDGET} Ir to a {size} pair of LEARNING \
                 (vs {LEARNING_TWIN}): not measured"
            ),
            ok: false,
        };
    };
    let budget = i128::from(LEARNING_BUDGET) * i128::from(N_LARGE - N_SMALL);
    let added = learning.delta() - twin.delta();
    let ok = added <= budget;
    let per_pair = added as f64 / (N_LARGE - N_SMALL) as f64;
    let balanced = compiled("balanced")
        .map(|b| {
            let d = (learning.delta() - b.delta()) as f64 / (N_LARGE - N_SMALL) as f64;
            format!("; vs balanced {d:+.1}")
        })
        .unwrap_or_default();
    Rule {
        text: format!(
            "(vi) learning adds ≤ {LEARNING_BUDGET} Ir to a {size} pair of LEARNING (vs \
             {LEARNING_TWIN}): learning {:.1} − {LEARNING_TWIN} {:.1} = {per_pair:+.1} {} \
             {LEARNING_BUDGET}{balanced}",
            learning.per_pair(),
            twin.per_pair(),
            if ok { "≤" } else { ">" },
        ),
        ok,
    }
}

/// `what: k/n runs[; not: …]`.
fn verdict_text(what: &str, runs: usize, bad: &[String], nothing: &str) -> String {
    let mut text = format!("{what}: {}/{runs} runs", runs - bad.len());
    if !bad.is_empty() {
        text += &format!("; not: {}", bad.join(", "));
    }
    text + nothing
}

/// The markdown table of `rows`, numbers right-aligned, one decimal.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "size",
        "mode",
        "compiled Ir/pair",
        "runtime Ir/pair",
        "runtime overhead (Ir, %)",
        "compiled reads runtime config?",
    ];
    let right = [false, false, true, true, true, false];
    let mut cells: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for r in rows {
        let (c, rt) = (r.compiled.per_pair(), r.runtime.per_pair());
        let overhead = if c > 0.0 {
            format!("{:+.1} ({:+.1}%)", rt - c, (rt - c) / c * 100.0)
        } else {
            format!("{:+.1} (n/a)", rt - c)
        };
        let reads = match r.compiled.config[0].as_str() {
            UNTOUCHED => "no".to_owned(),
            line => format!("yes ({})", line.strip_prefix(CONFIG_PREFIX).unwrap_or(line)),
        };
        cells.push([
            size_label(r.size),
            r.mode.to_owned(),
            format!("{c:.1}"),
            format!("{rt:.1}"),
            overhead,
            reads,
        ]);
    }
    let mut width = [0; 6];
    for row in &cells {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 6]| {
        let mut s = String::from("|");
        for ((cell, &w), &r) in row.iter().zip(&width).zip(&right) {
            s += &if r {
                format!(" {cell:>w$} |")
            } else {
                format!(" {cell:<w$} |")
            };
        }
        s + "\n"
    };
    let mut out = line(&cells[0]);
    out += "|";
    for (&w, &r) in width.iter().zip(&right) {
        out += &if r {
            format!(" {}: |", "-".repeat(w - 1))
        } else {
            format!(" {} |", "-".repeat(w))
        };
    }
    out += "\n";
    for row in &cells[1..] {
        out += &line(row);
    }
    out
}

/// Measures, prints the table and the rules, writes `overhead.md`. `Ok(all rules hold)`; `Err`
/// if something could not be measured. `invoked_as` is the command recorded in `overhead.md`.
pub fn run(invoked_as: &str) -> Result<bool, String> {
    if !cmd::is_installed("valgrind") {
        return Err(VALGRIND_MISSING.to_owned());
    }
    let (bin, out_dir) = cmd::build_probe("overhead", "pairs", "overhead")?;

    println!(
        "overhead: Ir/pair = (Ir(N={N_LARGE}) - Ir(N={N_SMALL})) / {} under valgrind --tool=callgrind",
        N_LARGE - N_SMALL
    );
    let mut rows = Vec::new();
    for size in SIZES {
        for mode in MODES {
            let compiled = measure(&bin, &out_dir, mode, None, size)?;
            let runtime = measure(&bin, &out_dir, "runtime", Some(mode), size)?;
            println!(
                "overhead: {:>6} {mode:<8}  compiled {:>7.1}  runtime {:>7.1} Ir/pair",
                size_label(size),
                compiled.per_pair(),
                runtime.per_pair()
            );
            rows.push(Row {
                size,
                mode,
                compiled,
                runtime,
            });
        }
    }

    let mut twins = Vec::new();
    for size in SIZES {
        let twin = measure(&bin, &out_dir, LEARNING_TWIN, None, size)?;
        println!(
            "overhead: {:>6} {LEARNING_TWIN}  compiled {:>7.1} Ir/pair",
            size_label(size),
            twin.per_pair()
        );
        twins.push((size, twin));
    }

    let table = table(&rows);
    let mut rules = rules(&rows);
    rules.push(learning_rule(&rows, &twins));
    let twin_lines: Vec<String> = twins
        .iter()
        .map(|(size, twin)| {
            let learning = rows
                .iter()
                .find(|r| r.size == *size && r.mode == "learning")
                .map(|r| r.compiled.per_pair());
            format!(
                "{} {LEARNING_TWIN} (LEARNING, evolution Off): {:.1} Ir/pair{}",
                size_label(*size),
                twin.per_pair(),
                learning
                    .map(|l| format!(
                        "; LEARNING {l:.1}, learning adds {:+.1}",
                        l - twin.per_pair()
                    ))
                    .unwrap_or_default()
            )
        })
        .collect();
    println!();
    print!("{table}");
    println!();
    for line in &twin_lines {
        println!("{line}");
    }
    println!();
    for rule in &rules {
        println!("{rule}");
    }

    let date = cmd::first_line(Command::new("date").args(["-u", "+%F"]))
        .unwrap_or_else(|| "unknown date".into());
    let rustc = cmd::first_line(&mut cmd::command("rustc", &["-V"], None))
        .unwrap_or_else(|| "rustc ?".into());
    let valgrind = cmd::first_line(Command::new("valgrind").arg("--version"))
        .unwrap_or_else(|| "valgrind ?".into());
    let mut md = format!(
        "# Instructions per alloc+free pair: compiled modes vs. their runtime twins\n\n\
         Measured {date} with {rustc} and {valgrind} by `{invoked_as}`: per pair = \
         (Ir(N={N_LARGE}) − Ir(N={N_SMALL})) / {} of `valgrind --tool=callgrind \
         target/release/pairs POLICY SIZE N`.\n\n",
        N_LARGE - N_SMALL
    );
    md += &table;
    md += "\n";
    for line in &twin_lines {
        md += &format!("{line}  \n");
    }
    md += "\n";
    for rule in &rules {
        md += &format!("- {rule}\n");
    }
    let md_path = out_dir.join("overhead.md");
    std::fs::write(&md_path, md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    println!();
    println!("overhead: wrote {}", md_path.display());

    Ok(rules.iter().all(|r| r.ok))
}

/// Runs `pairs POLICY SIZE N` under callgrind for both N (two valgrinds at once).
fn measure(
    bin: &Path,
    out_dir: &Path,
    policy: &str,
    mode: Option<&str>,
    size: usize,
) -> Result<Probe, String> {
    let label = match mode {
        Some(mode) => format!("{policy}-{mode}"),
        None => policy.to_owned(),
    };
    let once = |n: u64| -> Result<(u64, String), String> {
        let mut out_file = OsString::from("--callgrind-out-file=");
        out_file.push(out_dir.join(format!("callgrind.{label}.{size}.{n}.out")));
        let args: Vec<OsString> = vec![
            "--tool=callgrind".into(),
            out_file,
            bin.into(),
            policy.into(),
            size.to_string().into(),
            n.to_string().into(),
        ];
        let shown = format!(
            "{}valgrind {}",
            mode.map(|m| format!("{}={m} ", cmd::MODE_VAR))
                .unwrap_or_default(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = cmd::command("valgrind", &args, mode)
            .output()
            .map_err(|e| format!("`{shown}` could not start: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "`{shown}` failed ({}):\n{stdout}{stderr}",
                out.status
            ));
        }
        let ir = parse_collected(&stderr).ok_or_else(|| {
            format!("`{shown}`: no `Collected : N` line on valgrind's stderr:\n{stderr}")
        })?;
        let config = parse_config(&stdout).ok_or_else(|| {
            format!("`{shown}`: the probe printed no `{CONFIG_PREFIX}` line:\n{stdout}")
        })?;
        Ok((ir, config))
    };
    let (small, large) = std::thread::scope(|s| {
        let small = s.spawn(|| once(N_SMALL));
        let large = once(N_LARGE);
        (
            small
                .join()
                .unwrap_or_else(|_| Err("a measuring thread panicked".into())),
            large,
        )
    });
    let ((ir_small, config_small), (ir_large, config_large)) = (small?, large?);
    if ir_large <= ir_small {
        return Err(format!(
            "{label} {size}: Ir(N={N_LARGE}) = {ir_large} is not above Ir(N={N_SMALL}) = {ir_small}"
        ));
    }
    Ok(Probe {
        ir_small,
        ir_large,
        config: [config_small, config_large],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDERR: &str = "==4176== Callgrind, a call-graph generating cache profiler\n\
        ==4176== Command: ./target/release/pairs minimal 32 1000\n\
        ==4176== \n\
        ==4176== Events    : Ir\n\
        ==4176== Collected : 441048\n\
        ==4176== \n\
        ==4176== I   refs:      441,048\n";

    #[test]
    fn parses_the_collected_line() {
        assert_eq!(parse_collected(STDERR), Some(441_048));
        assert_eq!(parse_collected("Collected : 12"), Some(12));
        assert_eq!(
            parse_collected("==1== Collected : 1,234,567"),
            Some(1_234_567)
        );
        assert_eq!(
            parse_collected("==1== Events    : Ir\n==1== I   refs: 5"),
            None
        );
        assert_eq!(parse_collected("==1== Collected : lots"), None);
        assert_eq!(parse_collected(""), None);
    }

    #[test]
    fn parses_the_config_line() {
        assert_eq!(
            parse_config("runtime-config=untouched\n").as_deref(),
            Some(UNTOUCHED)
        );
        assert_eq!(
            parse_config("noise\n runtime-config=read:fast \n").as_deref(),
            Some("runtime-config=read:fast")
        );
        assert_eq!(parse_config("nothing here\n"), None);
    }

    #[test]
    fn per_pair_cancels_start_up() {
        assert_eq!(per_pair(441_048, 441_048 + 148 * 10_000), 148.0);
        assert_eq!(per_pair(1_000_000, 1_000_000 + 1_780_005), 178.0005);
        assert_eq!(per_pair(5, 5), 0.0);
        assert_eq!(per_pair(10_000, 0), -1.0);
        assert_eq!(format!("{:.1}", per_pair(0, 1_940_123)), "194.0");
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(32), "32 B");
        assert_eq!(size_label(2_097_152), "2 MiB");
        assert_eq!(size_label(4096), "4 KiB");
        assert_eq!(size_label(1500), "1500 B");
    }

    /// A probe costing `ir_per_pair` per pair that printed `config` on both runs.
    fn probe(ir_per_pair: u64, config: &str) -> Probe {
        let ir_small = 400_000 + ir_per_pair * N_SMALL;
        Probe {
            ir_small,
            ir_large: ir_small + ir_per_pair * (N_LARGE - N_SMALL),
            config: [config.to_owned(), config.to_owned()],
        }
    }

    fn row(size: usize, mode: &'static str, compiled: u64, runtime: u64) -> Row {
        Row {
            size,
            mode,
            compiled: probe(compiled, UNTOUCHED),
            runtime: probe(runtime, &format!("runtime-config=read:{mode}")),
        }
    }

    fn good_rows() -> Vec<Row> {
        vec![
            row(32, "minimal", 148, 178),
            row(32, "research", 194, 226),
            row(2_097_152, "minimal", 300, 330),
            row(2_097_152, "fast", 94, 94),
            row(2_097_152, "balanced", 100, 120),
        ]
    }

    fn verdicts(rows: &[Row]) -> Vec<bool> {
        rules(rows).iter().map(|r| r.ok).collect()
    }

    #[test]
    fn all_rules_hold_on_good_figures() {
        let rules = rules(&good_rows());
        assert!(rules.iter().all(|r| r.ok), "{rules:#?}");
        assert_eq!(
            rules[0].to_string(),
            "rule: (i) compiled Ir/pair ≤ runtime Ir/pair for every size and mode (learning and \
             research at ≥ 512 KiB: within 5%): 5/5 hold, tightest 2 MiB fast 94.0 ≤ 94.0 — ok"
        );
        assert_eq!(
            rules[1].to_string(),
            "rule: (ii) minimal: compiled Ir/pair < runtime Ir/pair: 32 B 148.0 < 178.0, \
             2 MiB 300.0 < 330.0 — ok"
        );
        assert!(rules[2].to_string().ends_with("10/10 runs — ok"));
        assert!(rules[3].to_string().ends_with("10/10 runs — ok"));
        assert_eq!(
            rules[4].to_string(),
            "rule: (v) BALANCED and FAST 2 MiB pair ≤ 100 Ir (compiled): balanced 100.0 ≤ 100, \
             fast 94.0 ≤ 100 — ok"
        );
    }

    #[test]
    fn caching_modes_must_keep_the_2_mib_pair_within_budget() {
        // Before BigCache: every 2 MiB pair is mmap + munmap.
        let mut rows = good_rows();
        rows[4] = row(2_097_152, "balanced", 143, 173);
        assert_eq!(verdicts(&rows), [true, true, true, true, false]);
        assert!(rules(&rows)[4]
            .to_string()
            .ends_with("balanced 143.0 > 100, fast 94.0 ≤ 100 — FAILED"));
        // One instruction over in 10 000 pairs is enough: the comparison is exact.
        let mut rows = good_rows();
        rows[3].compiled.ir_large += 1;
        rows[3].runtime.ir_large += 1;
        rows[4].compiled.ir_large += 1;
        assert_eq!(verdicts(&rows), [true, true, true, true, false]);
        // Only the 2 MiB rows count; a missing one fails.
        let mut rows = good_rows();
        rows.push(row(32, "fast", 148, 178));
        rows.remove(3);
        assert_eq!(verdicts(&rows), [true, true, true, true, false]);
        assert!(rules(&rows)[4].text.ends_with("fast not measured"));
        // MINIMAL and the runtime twins are not bound by it.
        let mut rows = good_rows();
        rows[2] = row(2_097_152, "minimal", 300, 500);
        rows[3].runtime = probe(500, "runtime-config=read:fast");
        assert!(rules(&rows)[4].ok);
    }

    #[test]
    fn a_compiled_mode_dearer_than_its_twin_fails_rule_one() {
        let mut rows = good_rows();
        rows[1] = row(32, "research", 227, 226);
        assert_eq!(verdicts(&rows), [false, true, true, true, true]);
        let text = rules(&rows)[0].to_string();
        assert!(
            text.contains("4/5 hold; violated by 32 B research: 227.0 > 226.0 — FAILED"),
            "{text}"
        );
        // One instruction in 10 000 pairs is enough: comparisons are exact.
        rows[1].compiled.ir_large =
            rows[1].runtime.ir_large - rows[1].runtime.ir_small + rows[1].compiled.ir_small + 1;
        assert_eq!(verdicts(&rows), [false, true, true, true, true]);
    }

    #[test]
    fn learning_modes_at_contested_sizes_have_a_tolerance() {
        let mut rows = good_rows();
        // 4% over the runtime twin at 2 MiB: within the tolerance; 6%: not.
        rows.push(row(2_097_152, "learning", 728, 700));
        assert!(rules(&rows)[0].ok, "{}", rules(&rows)[0]);
        rows.push(row(2_097_152, "research", 742, 700));
        assert!(!rules(&rows)[0].ok);
        assert!(rules(&rows)[0]
            .text
            .contains("violated by 2 MiB research: 742.0 > 700.0"));
        // At 32 B, below what the learner routes, exactly as every other mode.
        let mut rows = good_rows();
        rows.push(row(32, "learning", 156, 155));
        assert!(!rules(&rows)[0].ok);
    }

    #[test]
    fn minimal_must_be_strictly_cheaper() {
        let mut rows = good_rows();
        rows[2] = row(2_097_152, "minimal", 330, 330);
        assert_eq!(verdicts(&rows), [true, false, true, true, true]);
        assert!(rules(&rows)[1].text.contains("2 MiB 330.0 ≮ 330.0"));
        let no_minimal: Vec<Row> = good_rows()
            .into_iter()
            .filter(|r| r.mode != "minimal")
            .collect();
        assert_eq!(verdicts(&no_minimal), [true, false, true, true, true]);
    }

    #[test]
    fn config_lines_are_checked_on_every_run() {
        let mut rows = good_rows();
        rows[0].compiled.config[1] = "runtime-config=read:balanced".into();
        assert_eq!(verdicts(&rows), [true, true, false, true, true]);
        assert!(rules(&rows)[2].text.contains(
            "9/10 runs; not: 32 B minimal N=11000 printed `runtime-config=read:balanced`"
        ));

        let mut rows = good_rows();
        rows[1].runtime.config[0] = "runtime-config=read:balanced".into();
        assert_eq!(verdicts(&rows), [true, true, true, false, true]);
        let mut rows = good_rows();
        rows[3].runtime.config = [UNTOUCHED.into(), UNTOUCHED.into()];
        assert_eq!(verdicts(&rows), [true, true, true, false, true]);
    }

    #[test]
    fn learning_may_add_fifteen_instructions_to_a_small_pair() {
        let mut rows = good_rows();
        rows.push(row(32, "learning", 160, 190));
        rows.push(row(32, "balanced", 148, 179));
        let twin = |ir| {
            vec![
                (32, probe(ir, UNTOUCHED)),
                (2_097_152, probe(300, UNTOUCHED)),
            ]
        };
        let rule = learning_rule(&rows, &twin(145));
        assert!(rule.ok, "{rule}");
        assert_eq!(
            rule.to_string(),
            "rule: (vi) learning adds ≤ 15 Ir to a 32 B pair of LEARNING (vs learning-off): \
             learning 160.0 − learning-off 145.0 = +15.0 ≤ 15; vs balanced +12.0 — ok"
        );
        // One instruction more in 10 000 pairs fails: the comparison is exact.
        let mut over = twin(145);
        over[0].1.ir_large -= 1;
        assert!(!learning_rule(&rows, &over).ok);
        // Unmeasured fails.
        assert!(!learning_rule(&rows, &[]).ok);
        assert!(!learning_rule(&good_rows(), &twin(145)).ok);
    }

    #[test]
    fn nothing_measured_fails_every_rule() {
        assert_eq!(verdicts(&[]), [false; 5]);
    }

    #[test]
    fn table_is_markdown() {
        let table = table(&good_rows());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 5);
        assert!(
            lines[0].starts_with("| size ")
                && lines[0].ends_with("| compiled reads runtime config? |")
        );
        assert!(lines[1].starts_with("| ----") && lines[1].contains(": |"));
        assert!(lines
            .iter()
            .all(|l| l.starts_with('|') && l.ends_with('|') && l.len() == lines[0].len()));
        assert!(lines[2].contains("| 32 B ") && lines[2].contains("| minimal "));
        assert!(lines[2].contains("148.0 |") && lines[2].contains("178.0 |"));
        assert!(
            lines[2].contains("+30.0 (+20.3%) |")
                && lines[2].ends_with("| no                             |")
        );
    }
}
