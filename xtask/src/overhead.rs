//! `cargo xtask overhead [--check]`: zero-overhead evidence from callgrind instruction counts.
//!
//! For each size in [`SIZES`] and each compiled mode, the probe `pairs` (benches/src/bin/pairs.rs)
//! runs under `valgrind --tool=callgrind` twice per policy — the compiled policy (`pairs MODE SIZE
//! N`, `HAKMEM_MODE` removed) and its runtime twin (`pairs runtime SIZE N`, `HAKMEM_MODE=MODE`) —
//! once with [`N_SMALL`] and once with [`N_LARGE`] alloc+free pairs. The difference of the two
//! instruction totals divided by the difference of N is the cost of one pair, with start-up and
//! exit cancelled out. Callgrind counts are deterministic, so one run of each suffices.
//!
//! The peers ([`PEERS`]: glibc, mimalloc, jemalloc, used directly as `GlobalAlloc` values) run
//! through the same probe at the same sizes, so that hakmem's figures stand side by side with
//! theirs.
//!
//! The results go to stdout and to `target/overhead/overhead.md` as markdown tables, followed by
//! the rules a zero-overhead design must satisfy (see [`rules`]) and the pool's rule (see
//! [`pool_rule`]); `--check` turns a broken rule into exit status 1.

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

/// The peers measured the same way (`pairs PEER SIZE N`, the probe built with feature `peers`),
/// as `GlobalAlloc` values: glibc's `malloc` (`std::alloc::System`), mimalloc, jemalloc.
pub const PEERS: [&str; 3] = ["glibc", "mimalloc", "jemalloc"];

/// Rule (vi): the block size the pool's rule is about.
pub const POOL_PAIR_SIZE: usize = 32;
/// Rule (vi): the most instructions FAST's 32-byte pair may cost (SPEC §6: jemalloc's 60).
pub const POOL_PAIR_BUDGET: u64 = 60;

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

/// The rules:
/// (i) for every size and mode the compiled policy costs no more than its runtime twin;
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
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.compiled.delta() > r.runtime.delta())
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
            "(i) compiled Ir/pair ≤ runtime Ir/pair for every size and mode: {}/{} hold{figures}{nothing}",
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

/// One peer at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub size: usize,
    pub peer: &'static str,
    pub probe: Probe,
}

/// Rule (vi), the pool's acceptance: at [`POOL_PAIR_SIZE`], compiled FAST costs at most
/// [`POOL_PAIR_BUDGET`] instructions per pair and no more than jemalloc, compiled BALANCED no
/// more than mimalloc (exact comparisons of the two runs' differences).
pub fn pool_rule(rows: &[Row], peers: &[PeerRow]) -> Rule {
    let mode = |m: &str| {
        rows.iter()
            .find(|r| r.size == POOL_PAIR_SIZE && r.mode == m)
            .map(|r| &r.compiled)
    };
    let peer = |p: &str| {
        peers
            .iter()
            .find(|r| r.size == POOL_PAIR_SIZE && r.peer == p)
            .map(|r| &r.probe)
    };
    let budget = i128::from(POOL_PAIR_BUDGET) * i128::from(N_LARGE - N_SMALL);
    let mut figures = Vec::new();
    let mut ok = true;
    let mut check =
        |what: String, ours: Option<&Probe>, bound: Option<(i128, String)>| match (ours, bound) {
            (Some(p), Some((limit, name))) => {
                let within = p.delta() <= limit;
                ok &= within;
                let op = if within { "≤" } else { ">" };
                figures.push(format!("{what} {:.1} {op} {name}", p.per_pair()));
            }
            _ => {
                ok = false;
                figures.push(format!("{what}: not measured"));
            }
        };
    let with_peer =
        |p: &str| peer(p).map(|probe| (probe.delta(), format!("{p} {:.1}", probe.per_pair())));
    check(
        "fast".into(),
        mode("fast"),
        Some((budget, POOL_PAIR_BUDGET.to_string())),
    );
    check("fast".into(), mode("fast"), with_peer("jemalloc"));
    check("balanced".into(), mode("balanced"), with_peer("mimalloc"));
    Rule {
        text: format!(
            "(vi) {} pair (compiled): FAST ≤ {POOL_PAIR_BUDGET} Ir and ≤ jemalloc, BALANCED ≤ mimalloc: {}",
            size_label(POOL_PAIR_SIZE),
            figures.join(", ")
        ),
        ok,
    }
}

/// The markdown table of the peers: one row per peer, one column per size.
pub fn peer_table(peers: &[PeerRow]) -> String {
    let mut sizes: Vec<usize> = peers.iter().map(|p| p.size).collect();
    sizes.dedup();
    let mut out = String::from("| peer |");
    for &size in &sizes {
        out += &format!(" {} Ir/pair |", size_label(size));
    }
    out += "\n| ---- |";
    for _ in &sizes {
        out += " ---: |";
    }
    out += "\n";
    for name in PEERS {
        if !peers.iter().any(|p| p.peer == name) {
            continue;
        }
        out += &format!("| {name} |");
        for &size in &sizes {
            match peers.iter().find(|p| p.peer == name && p.size == size) {
                Some(p) => out += &format!(" {:.1} |", p.probe.per_pair()),
                None => out += " – |",
            }
        }
        out += "\n";
    }
    out
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
    let (bin, out_dir) = cmd::build_probe("overhead", "pairs", &["peers"], "overhead")?;

    println!(
        "overhead: Ir/pair = (Ir(N={N_LARGE}) - Ir(N={N_SMALL})) / {} under valgrind --tool=callgrind",
        N_LARGE - N_SMALL
    );
    let mut rows = Vec::new();
    let mut peers = Vec::new();
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
        for peer in PEERS {
            let probe = measure(&bin, &out_dir, peer, None, size)?;
            println!(
                "overhead: {:>6} {peer:<8}  (peer)   {:>7.1} Ir/pair",
                size_label(size),
                probe.per_pair()
            );
            peers.push(PeerRow { size, peer, probe });
        }
    }

    let table = table(&rows);
    let peer_table = peer_table(&peers);
    let mut rules = rules(&rows);
    rules.push(pool_rule(&rows, &peers));
    println!();
    print!("{table}");
    println!();
    print!("{peer_table}");
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
    md += "\nThe peers, measured the same way as `GlobalAlloc` values:\n\n";
    md += &peer_table;
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

    fn peer(size: usize, peer: &'static str, ir: u64) -> PeerRow {
        PeerRow {
            size,
            peer,
            probe: probe(ir, UNTOUCHED),
        }
    }

    fn pool_rows() -> (Vec<Row>, Vec<PeerRow>) {
        let rows = vec![
            row(32, "fast", 42, 60),
            row(32, "balanced", 42, 60),
            row(2_097_152, "fast", 90, 120),
        ];
        let peers = vec![
            peer(32, "glibc", 138),
            peer(32, "mimalloc", 74),
            peer(32, "jemalloc", 63),
            peer(2_097_152, "glibc", 307),
        ];
        (rows, peers)
    }

    #[test]
    fn pool_rule_holds_on_good_figures() {
        let (rows, peers) = pool_rows();
        let rule = pool_rule(&rows, &peers);
        assert!(rule.ok, "{rule}");
        assert_eq!(
            rule.to_string(),
            "rule: (vi) 32 B pair (compiled): FAST ≤ 60 Ir and ≤ jemalloc, BALANCED ≤ mimalloc: \
             fast 42.0 ≤ 60, fast 42.0 ≤ jemalloc 63.0, balanced 42.0 ≤ mimalloc 74.0 — ok"
        );
    }

    #[test]
    fn pool_rule_fails_over_budget_over_a_peer_or_unmeasured() {
        let (mut rows, peers) = pool_rows();
        rows[0] = row(32, "fast", 61, 70);
        let rule = pool_rule(&rows, &peers);
        assert!(
            !rule.ok
                && rule
                    .text
                    .contains("fast 61.0 > 60, fast 61.0 ≤ jemalloc 63.0")
        );
        let (rows, mut peers) = pool_rows();
        peers[1] = peer(32, "mimalloc", 41);
        let rule = pool_rule(&rows, &peers);
        assert!(!rule.ok && rule.text.contains("balanced 42.0 > mimalloc 41.0"));
        let (rows, mut peers) = pool_rows();
        peers.retain(|p| p.peer != "jemalloc");
        assert!(pool_rule(&rows, &peers).text.contains("fast: not measured"));
        assert!(!pool_rule(&rows, &peers).ok);
        assert!(!pool_rule(&[], &[]).ok);
        // One instruction over in 10 000 pairs is enough: the comparison is exact.
        let (mut rows, peers) = pool_rows();
        rows[1].compiled.ir_large += 32 * (N_LARGE - N_SMALL) + 1;
        assert!(!pool_rule(&rows, &peers).ok);
    }

    #[test]
    fn peer_table_is_markdown() {
        let (_, peers) = pool_rows();
        let table = peer_table(&peers);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| peer | 32 B Ir/pair | 2 MiB Ir/pair |");
        assert_eq!(lines[1], "| ---- | ---: | ---: |");
        assert_eq!(lines[2], "| glibc | 138.0 | 307.0 |");
        assert_eq!(lines[3], "| mimalloc | 74.0 | – |");
        assert_eq!(lines.len(), 5);
    }

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
            "rule: (i) compiled Ir/pair ≤ runtime Ir/pair for every size and mode: 5/5 hold, \
             tightest 2 MiB fast 94.0 ≤ 94.0 — ok"
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
