//! `cargo xtask large [--check]`: the measured acceptance of the large-block work (BigCache,
//! batched release, the free policy, THP, realloc without copying; docs/large-blocks.md).
//! Builds the probe `large` (benches/src/bin/large.rs), measures checks (a)–(g) each in a fresh
//! process ([`METHOD`] says how), prints the table `| check | figure | target | verdict |` and
//! writes it to `<target>/large/large.md` with the strace and callgrind outputs beside it.
//! `--check` turns a failed check into exit status 1.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::cmd;
use crate::matrix::report::md_table;

pub const STRACE_MISSING: &str =
    "strace is required to count system calls: apt-get install strace (.ci/run installs it)";
pub const VALGRIND_MISSING: &str =
    "valgrind is required to count instructions: apt-get install valgrind (.ci/run installs it)";

/// Iterations of the measured loop in (a).
pub const N_FAULTS: u64 = 300;
/// Iterations of the shorter strace run in (b).
pub const N_SHORT: u64 = 100;
/// Iterations of the longer strace run in (b).
pub const N_LONG: u64 = 300;
/// "Zero" per iteration: below this.
pub const ZERO_BELOW: f64 = 0.05;
/// MINIMAL's faults per 2 MiB iteration: at least this (512 pages, mapped afresh).
pub const MINIMAL_FAULTS: f64 = 500.0;
/// MINIMAL's system calls per iteration: at least this (mmap + munmap).
pub const MINIMAL_SYSCALLS: f64 = 2.0;
/// BALANCED's cache cap (`Config::BALANCED.bigcache_bytes`, 256 MiB) plus 2 MiB of slack, in
/// KiB: the RSS it may keep in (c).
pub const KEPT_LIMIT_KIB: i64 = (256 + 2) * 1024;
/// Blocks released in (d), and their size.
pub const RELEASE_BLOCKS: u64 = 1000;
pub const RELEASE_SIZE: u64 = 256 * 1024;
/// At most one release call per this many blocks in (d).
pub const BLOCKS_PER_CALL: u64 = 10;
/// Faults to touch a cold 2 MiB block under THP in (e): at most this.
pub const THP_FAULTS: u64 = 8;
/// The doublings measured in (f)(ii), in MiB: (from, to), each against a baseline (from, from).
pub const GROW_SMALL: (u64, u64) = (2, 4);
pub const GROW_LARGE: (u64, u64) = (32, 64);
/// (f)(ii): the large doubling may cost less than this many times the small one.
pub const COPY_RATIO: i128 = 2;
/// (h): the growth measured, in MiB, and the most page faults one doubling may take under THP
/// (a 2 MiB-aligned grown range faults once per huge page: 16 for 32 → 64 MiB; 4 KiB pages
/// would take 8,192).
pub const GROW_FAULTS_RANGE: (u64, u64) = (2, 64);
pub const GROW_FAULTS: u64 = 64;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its letter and what it measures.
    pub name: String,
    /// What was measured (or why nothing could be).
    pub figure: String,
    /// What it should be.
    pub target: String,
    pub ok: bool,
}

impl Check {
    fn new(name: impl Into<String>, figure: String, target: &str, ok: bool) -> Check {
        Check {
            name: name.into(),
            figure,
            target: target.to_owned(),
            ok,
        }
    }

    fn verdict(&self) -> &'static str {
        if self.ok {
            "ok"
        } else {
            "FAILED"
        }
    }
}

// ---- pure parts --------------------------------------------------------------------------------

/// An `strace -c` summary: calls per system call, and the `total` line's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub calls: Vec<(String, u64)>,
    pub total: u64,
}

impl Summary {
    /// Calls of `syscall` (0 if it does not appear).
    pub fn calls_of(&self, syscall: &str) -> u64 {
        self.calls
            .iter()
            .filter(|(name, _)| name == syscall)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Parses the table `strace -c` writes. Its columns are right-aligned under the header
/// (`% time  seconds  usecs/call  calls  errors syscall`) and the errors column is blank where
/// there are none (and older versions leave `usecs/call` blank on the `total` line), so the
/// calls of a line are the token that ends where the header's `calls` ends.
pub fn parse_strace_summary(text: &str) -> Option<Summary> {
    let mut lines = text.lines();
    let header = lines.find(|l| l.contains("calls") && l.contains("syscall"))?;
    let calls_end = header.find("calls")? + "calls".len();
    let mut calls = Vec::new();
    let mut total = None;
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('-') {
            continue;
        }
        let name = trimmed.split_whitespace().next_back()?;
        let n = tokens(line)
            .find(|&(_, end)| end == calls_end)
            .and_then(|(token, _)| token.parse::<u64>().ok())?;
        if name == "total" {
            total = Some(n);
        } else {
            calls.push((name.to_owned(), n));
        }
    }
    Some(Summary {
        calls,
        total: total?,
    })
}

/// The whitespace-separated tokens of `line` with the byte offset each ends at.
fn tokens(line: &str) -> impl Iterator<Item = (&str, usize)> {
    let mut rest = 0;
    std::iter::from_fn(move || {
        let tail = &line[rest..];
        let start = rest + tail.find(|c: char| !c.is_whitespace())?;
        let len = line[start..]
            .find(char::is_whitespace)
            .unwrap_or(line.len() - start);
        rest = start + len;
        Some((&line[start..rest], rest))
    })
}

/// The value of `key` in a `key=value key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `(long − short) / (n_long − n_short)`: the cost of one iteration, start-up and exit cancelled.
pub fn per_iteration(short: u64, long: u64, n_short: u64, n_long: u64) -> f64 {
    (i128::from(long) - i128::from(short)) as f64
        / (i128::from(n_long) - i128::from(n_short)) as f64
}

/// Whether a caching mode (BALANCED, FAST) is where (a) and (b) want it: no faults, no calls.
pub fn is_zero(per_iter: f64) -> bool {
    per_iter < ZERO_BELOW
}

/// (a) for `mode`: caching modes fault 0 times per iteration, MINIMAL ≥ 500.
pub fn faults_ok(mode: &str, per_iter: f64) -> bool {
    match mode {
        "minimal" => per_iter >= MINIMAL_FAULTS,
        _ => is_zero(per_iter),
    }
}

/// (b) for `mode`: caching modes make no system call per iteration, MINIMAL ≥ 2.
pub fn syscalls_ok(mode: &str, per_iter: f64) -> bool {
    match mode {
        "minimal" => per_iter >= MINIMAL_SYSCALLS,
        _ => is_zero(per_iter),
    }
}

/// (c): the RSS kept after everything was freed is within the cap plus slack.
pub fn kept_ok(kept_kib: i64) -> bool {
    kept_kib <= KEPT_LIMIT_KIB
}

/// (d): at most one release call per [`BLOCKS_PER_CALL`] blocks.
pub fn release_ok(calls: u64, blocks: u64) -> bool {
    calls * BLOCKS_PER_CALL <= blocks
}

/// (e): `Some(faults ≤ 8)` where the kernel can give huge pages (`always`, `madvise`), `None`
/// (not applicable) where it cannot.
pub fn thp_ok(thp_enabled: &str, faults: u64) -> Option<bool> {
    match thp_enabled {
        "always" | "madvise" => Some(faults <= THP_FAULTS),
        _ => None,
    }
}

/// (h): `Some(most faults of one doubling ≤ 64)` where the kernel can give huge pages, `None`
/// (not applicable) where it cannot.
pub fn grow_faults_ok(thp_enabled: &str, most_faults: u64) -> Option<bool> {
    match thp_enabled {
        "always" | "madvise" => Some(most_faults <= GROW_FAULTS),
        _ => None,
    }
}

/// (f)(ii): the net instructions of the large doubling are below twice those of the small one
/// (which must be positive: a realloc costs something).
pub fn no_copy(ir_small: i128, ir_large: i128) -> bool {
    ir_small > 0 && ir_large < COPY_RATIO * ir_small
}

/// `16492 KiB (16.1 MiB)`.
pub fn kib_label(kib: i64) -> String {
    format!("{kib} KiB ({:.1} MiB)", kib as f64 / 1024.0)
}

/// The markdown table of `checks`.
pub fn table(checks: &[Check]) -> String {
    let header = ["check", "figure", "target", "verdict"].map(str::to_owned);
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.figure.clone(),
                c.target.clone(),
                c.verdict().into(),
            ]
        })
        .collect();
    md_table(&header, &[], &rows)
}

// ---- measuring ---------------------------------------------------------------------------------

/// Where the probe is and where its outputs go.
struct Probe {
    bin: PathBuf,
    out_dir: PathBuf,
}

impl Probe {
    /// Runs `large args…`; its one line of output.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let shown = format!("large {}", args.join(" "));
        output_line(cmd::command(&self.bin, args, None), &shown)
    }

    /// Runs `strace -f -c [-e trace=…] -o FILE large args…`; its summary.
    fn strace(&self, trace: Option<&str>, args: &[&str]) -> Result<Summary, String> {
        let file = self.out_dir.join(format!("strace.{}.txt", file_stem(args)));
        let mut all: Vec<OsString> = vec!["-f".into(), "-c".into()];
        if let Some(trace) = trace {
            all.push("-e".into());
            all.push(format!("trace={trace}").into());
        }
        all.push("-o".into());
        all.push(file.clone().into());
        all.push(self.bin.clone().into());
        all.extend(args.iter().map(OsString::from));
        let shown = format!(
            "strace -f -c {}-o {} large {}",
            trace.map(|t| format!("-e trace={t} ")).unwrap_or_default(),
            file.display(),
            args.join(" ")
        );
        output_line(cmd::command("strace", &all, None), &shown)?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("`{shown}`: cannot read {}: {e}", file.display()))?;
        parse_strace_summary(&text)
            .ok_or_else(|| format!("`{shown}`: no `strace -c` table in {}", file.display()))
    }

    /// Runs `valgrind --tool=callgrind large args…`; the instructions it counted.
    fn callgrind(&self, args: &[&str]) -> Result<u64, String> {
        let mut out_file = OsString::from("--callgrind-out-file=");
        out_file.push(
            self.out_dir
                .join(format!("callgrind.{}.out", file_stem(args))),
        );
        let mut all: Vec<OsString> =
            vec!["--tool=callgrind".into(), out_file, self.bin.clone().into()];
        all.extend(args.iter().map(OsString::from));
        let shown = format!("valgrind --tool=callgrind large {}", args.join(" "));
        let out = cmd::command("valgrind", &all, None)
            .output()
            .map_err(|e| format!("`{shown}` could not start: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "`{shown}` failed ({}): {}",
                out.status,
                stderr.trim()
            ));
        }
        cmd::parse_collected(&stderr)
            .ok_or_else(|| format!("`{shown}`: no `Collected : N` line on valgrind's stderr"))
    }
}

/// `grow-balanced-2-4-no-touch` for `["grow", "balanced", "2", "4", "--no-touch"]`.
fn file_stem(args: &[&str]) -> String {
    args.iter()
        .map(|a| a.trim_start_matches('-').replace('/', "_"))
        .collect::<Vec<_>>()
        .join("-")
}

/// How each figure is measured, for `large.md` (`large` is `<target>/release/large`).
const METHOD: &str = "\
- (a) `large steady P 300`: page faults (getrusage) over 300 iterations of alloc 2 MiB / write \
  one byte per 4 KiB page / free, after 20 unmeasured ones, divided by 300.
- (b) `strace -f -c -o F large steady P N` for N = 100 and 300: (calls(300) − calls(100)) / 200 \
  from the `total` line, so start-up and exit cancel.
- (c) `large resident balanced`: RSS (/proc/self/statm) after 300 live 2 MiB blocks, every page \
  touched, were freed, minus RSS before.
- (d) `strace -f -c -e trace=madvise,munmap -o F large release 1000 262144` (BALANCED with a \
  128 KiB threshold, so 256 KiB blocks are mapped but below every cache class).
- (e) `large thp-cold P`: faults to touch every page of one fresh 2 MiB block.
- (f) `strace -f -c -o F large grow balanced 2 64`; and `valgrind --tool=callgrind large grow \
  balanced A B --no-touch` for (A, B) = (2, 4), (2, 2), (32, 64), (32, 32): one doubling each, \
  net of the run without one.
- (g) `large zeroed balanced`: a 2 MiB block filled with 0xAB and freed, then `alloc_zeroed` of \
  2 MiB from the same site, every byte checked.
- (h) `large grow P 2 64` in a fresh process: page faults (getrusage) of each doubling, the \
  `realloc` and the touching of one byte per 4 KiB page of its new half; the most of one doubling.
";

/// Runs `command`; the last line it printed on stdout, or why there is none.
fn output_line(mut command: Command, shown: &str) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("`{shown}` could not start: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").trim();
        return Err(format!("`{shown}` failed ({}): {last}", out.status));
    }
    stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("`{shown}` printed nothing"))
}

/// `key` of `line`, parsed.
fn get<T: std::str::FromStr>(line: &str, key: &str) -> Result<T, String> {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no `{key}=` in the probe's line `{line}`"))
}

/// A check that could not be measured: failed, saying why.
fn unmeasured(name: &str, target: &str, why: String) -> Check {
    Check::new(name, format!("not measured: {why}"), target, false)
}

/// Every check, in table order.
fn measure(probe: &Probe) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |name: &str, target: &str, result: Result<(String, bool), String>| {
        let check = match result {
            Ok((figure, ok)) => Check::new(name, figure, target, ok),
            Err(why) => unmeasured(name, target, why),
        };
        println!(
            "large: {} — {}: {}",
            check.name,
            check.verdict(),
            check.figure
        );
        checks.push(check);
    };
    let upper = |m: &str| m.to_uppercase();

    // (a) and (b): what MINIMAL must reach, and the zero of the caching modes.
    let targets = |mode| match mode {
        "minimal" => ["≥ 500 (mapped afresh)", "≥ 2 (mmap + munmap)"],
        _ => ["0 (< 0.05)"; 2],
    };
    for mode in ["balanced", "fast", "minimal"] {
        let n = N_FAULTS.to_string();
        let result = probe.run(&["steady", mode, &n]).and_then(|line| {
            let f: f64 = get(&line, "faults_per_iter")?;
            Ok((format!("{f:.3}"), faults_ok(mode, f)))
        });
        let name = format!("(a) 2 MiB steady state: faults/iteration, {}", upper(mode));
        push(&name, targets(mode)[0], result);
    }
    for mode in ["balanced", "fast", "minimal"] {
        let (short, long) = (N_SHORT.to_string(), N_LONG.to_string());
        let result = probe
            .strace(None, &["steady", mode, &short])
            .and_then(|s| Ok((s, probe.strace(None, &["steady", mode, &long])?)))
            .map(|(s, l)| {
                let per = per_iteration(s.total, l.total, N_SHORT, N_LONG);
                (
                    format!(
                        "{per:.2} (({} − {}) / {})",
                        l.total,
                        s.total,
                        N_LONG - N_SHORT
                    ),
                    syscalls_ok(mode, per),
                )
            });
        let what = "(b) 2 MiB steady state: system calls/iteration (strace -c)";
        let name = format!("{what}, {}", upper(mode));
        push(&name, targets(mode)[1], result);
    }

    // (c)
    let result = probe.run(&["resident", "balanced"]).and_then(|line| {
        let kept: i64 = get(&line, "kept_kib")?;
        let peak: i64 = get(&line, "rss_peak_kib")?;
        let figure = format!("{} (peak {})", kib_label(kept), kib_label(peak));
        Ok((figure, kept_ok(kept)))
    });
    let name = "(c) RSS kept after 300 × 2 MiB freed, BALANCED";
    push(name, "≤ 258 MiB (256 MiB cap + 2 MiB)", result);

    // (d)
    let (blocks, size) = (RELEASE_BLOCKS.to_string(), RELEASE_SIZE.to_string());
    let result = probe
        .strace(Some("madvise,munmap"), &["release", &blocks, &size])
        .map(|s| {
            let (madvise, munmap) = (s.calls_of("madvise"), s.calls_of("munmap"));
            let calls = madvise + munmap;
            let figure = format!("{calls} (madvise {madvise}, munmap {munmap})");
            (figure, release_ok(calls, RELEASE_BLOCKS))
        });
    let name = format!("(d) release of {RELEASE_BLOCKS} × 256 KiB (balanced-128k)");
    let target = format!("≤ {}", RELEASE_BLOCKS / BLOCKS_PER_CALL);
    push(&(name + ": madvise + munmap calls"), &target, result);

    // (e)
    for (mode, thp) in [("research", "THP on"), ("balanced", "THP auto")] {
        let result = probe.run(&["thp-cold", mode]).and_then(|line| {
            let faults: u64 = get(&line, "faults")?;
            let enabled = field(&line, "thp_enabled").unwrap_or("?");
            let aligned = match field(&line, "aligned_2m") {
                Some("true") => "2 MiB-aligned",
                _ => "not 2 MiB-aligned",
            };
            Ok(match thp_ok(enabled, faults) {
                Some(ok) => (format!("{faults} (thp_enabled={enabled}, {aligned})"), ok),
                None => (
                    format!(
                        "n/a: THP disabled by the kernel (thp_enabled={enabled}; {faults} faults)"
                    ),
                    true,
                ),
            })
        });
        let name = format!(
            "(e) cold 2 MiB block: faults to touch it, {} ({thp})",
            upper(mode)
        );
        push(&name, "≤ 8 (THP always/madvise)", result);
    }

    // (f)(i)
    let (from, to) = (GROW_SMALL.0.to_string(), GROW_LARGE.1.to_string());
    let result = probe
        .strace(None, &["grow", "balanced", &from, &to])
        .map(|s| {
            let mremap = s.calls_of("mremap");
            (format!("{mremap} mremap calls"), mremap >= 1)
        });
    let name = format!("(f) realloc {from} → {to} MiB by doubling, BALANCED: strace");
    push(&name, "≥ 1 mremap", result);

    // (f)(ii)
    let net = |(from, to): (u64, u64)| -> Result<i128, String> {
        let (f, t) = (from.to_string(), to.to_string());
        let grown = probe.callgrind(&["grow", "balanced", &f, &t, "--no-touch"])?;
        let base = probe.callgrind(&["grow", "balanced", &f, &f, "--no-touch"])?;
        Ok(i128::from(grown) - i128::from(base))
    };
    let result = net(GROW_SMALL).and_then(|small| Ok((small, net(GROW_LARGE)?)));
    let result = result.map(|(small, large)| {
        let ratio = match small > 0 {
            true => format!("×{:.2}", large as f64 / small as f64),
            false => "ratio undefined".to_owned(),
        };
        let ((a, b), (c, d)) = (GROW_LARGE, GROW_SMALL);
        let figure = format!("{a} → {b} MiB: {large} Ir, {c} → {d} MiB: {small} Ir ({ratio})");
        (figure, no_copy(small, large))
    });
    let name =
        "(f) realloc copies nothing, BALANCED: callgrind Ir of one doubling, net of no realloc";
    push(name, "32 → 64 MiB < 2 × 2 → 4 MiB (a copy: ~16×)", result);

    // (g)
    let result = probe.run(&["zeroed", "balanced"]).map(|line| {
        let zero = field(&line, "zero_ok") == Some("true");
        let zero_text = if zero { "all zero" } else { "NOT all zero" };
        let block = match field(&line, "same_block") {
            Some("true") => "the same",
            _ => "a different",
        };
        (format!("{zero_text}, {block} block came back"), zero)
    });
    let name = "(g) alloc_zeroed after a 0xAB-filled 2 MiB block was freed, BALANCED";
    push(name, "all zero", result);

    // (h)
    let (from, to) = (
        GROW_FAULTS_RANGE.0.to_string(),
        GROW_FAULTS_RANGE.1.to_string(),
    );
    for mode in ["fast", "balanced"] {
        let result = probe.run(&["grow", mode, &from, &to]).and_then(|line| {
            let reallocs: u64 = get(&line, "reallocs")?;
            let faults: u64 = get(&line, "faults")?;
            let most: u64 = get(&line, "most_faults")?;
            let enabled = field(&line, "thp_enabled").unwrap_or("?");
            let figure = format!(
                "at most {most} per doubling ({faults} in {reallocs} doublings; \
                 thp_enabled={enabled})"
            );
            Ok(match grow_faults_ok(enabled, most) {
                Some(ok) => (figure, ok),
                None => (format!("n/a: THP disabled by the kernel; {figure}"), true),
            })
        });
        let name = format!(
            "(h) realloc {from} → {to} MiB by doubling, touching each new half: page faults, {}",
            upper(mode)
        );
        push(
            &name,
            &format!("≤ {GROW_FAULTS} per doubling (THP always/madvise)"),
            result,
        );
    }

    checks
}

/// Measures, prints the table, writes `large.md`. `Ok(all checks hold)`; `Err` if the tools or
/// the probe are missing.
pub fn run(invoked_as: &str) -> Result<bool, String> {
    let start = Instant::now();
    if !cmd::is_installed("strace") {
        return Err(STRACE_MISSING.to_owned());
    }
    if !cmd::is_installed("valgrind") {
        return Err(VALGRIND_MISSING.to_owned());
    }
    let (bin, out_dir) = cmd::build_probe("large", "large", "large")?;

    let checks = measure(&Probe {
        bin,
        out_dir: out_dir.clone(),
    });
    let table = table(&checks);
    let held = checks.iter().filter(|c| c.ok).count();
    let verdict = format!("{held}/{} checks hold", checks.len());
    print!("\n{table}");
    println!("\nlarge: {verdict}");

    let first = cmd::first_line;
    let (date, rustc, kernel) = (first("date -u +%F"), first("rustc -V"), first("uname -r"));
    let (strace, valgrind) = (first("strace -V"), first("valgrind --version"));
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unavailable".to_owned());
    let md = format!(
        "# Large blocks: measured acceptance\n\n\
         Measured {date} by `{invoked_as}` with {rustc}, kernel {kernel} (THP: {thp}), \
         {strace}, {valgrind}; every figure from a fresh process of \
         `target/release/large` (benches/src/bin/large.rs).\n\n\
         {table}\n{verdict}.\n\nHow each figure is measured:\n\n{METHOD}"
    );
    let md_path = out_dir.join("large.md");
    cmd::write(&md_path, md)?;
    println!(
        "large: wrote {} ({} s)",
        md_path.display(),
        cmd::seconds(start.elapsed())
    );
    Ok(checks.iter().all(|c| c.ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `strace -f -c -o FILE large steady minimal 300` (strace 6.1), abridged: 300 + 20
    /// warm-up iterations of mmap + munmap, plus start-up.
    const STEADY_MINIMAL_300: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 94.33    0.056430         175       322           munmap
  5.16    0.003087           9       333           mmap
  0.14    0.000085          21         4           openat
  0.00    0.000000           0         1         1 access
------ ----------- ----------- --------- --------- ------------------
100.00    0.059825          84       660         1 total
";

    /// `strace -f -c -e trace=madvise,munmap -o FILE large release 1000 262144`.
    const RELEASE: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
100.00    0.026581         415        64           munmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.026581         415        64           total
";

    #[test]
    fn strace_summaries_verdicts_probe_fields_and_the_table() {
        let s = parse_strace_summary(STEADY_MINIMAL_300).unwrap();
        assert_eq!(s.total, 660);
        assert_eq!(s.calls.len(), 4);
        assert_eq!(s.calls_of("munmap"), 322);
        assert_eq!(s.calls_of("mmap"), 333);
        // The errors column is not the calls column.
        assert_eq!(s.calls_of("access"), 1);
        assert_eq!(s.calls_of("mremap"), 0);
        assert_eq!(s.calls.iter().map(|c| c.1).sum::<u64>(), s.total);

        let r = parse_strace_summary(RELEASE).unwrap();
        assert_eq!(r.total, 64);
        assert_eq!(r.calls, [("munmap".to_owned(), 64)]);
        assert_eq!(r.calls_of("madvise"), 0);
        // strace 4.x leaves usecs/call blank on the total line.
        let old = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 60.00    0.000012           1        12         3 mmap
------ ----------- ----------- --------- --------- ----------------
100.00    0.000020                    27         3 total
";
        let s = parse_strace_summary(old).unwrap();
        assert_eq!(s.total, 27);
        assert_eq!(s.calls_of("mmap"), 12);
        assert_eq!(parse_strace_summary(""), None);
        assert_eq!(parse_strace_summary("strace: exec: No such file"), None);
        // A header but no total line (strace killed before writing it).
        let cut: String = RELEASE.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse_strace_summary(&cut), None);
        // The real figures of MINIMAL: 305 calls for N = 100, 705 for N = 300.
        assert_eq!(per_iteration(305, 705, N_SHORT, N_LONG), 2.0);
        // BALANCED: 69 and 69.
        assert_eq!(per_iteration(69, 69, N_SHORT, N_LONG), 0.0);
        assert_eq!(per_iteration(79, 69, N_SHORT, N_LONG), -0.05);
        assert_eq!(per_iteration(69, 79, 100, 300), 0.05);
        assert!(faults_ok("balanced", 0.0) && faults_ok("fast", 0.049));
        assert!(!faults_ok("fast", 0.05) && !faults_ok("balanced", 512.0));
        assert!(faults_ok("minimal", 512.0) && faults_ok("minimal", 500.0));
        assert!(!faults_ok("minimal", 0.0) && !faults_ok("minimal", 499.9));

        assert!(syscalls_ok("balanced", 0.0) && !syscalls_ok("balanced", 0.05));
        assert!(!syscalls_ok("fast", 2.0));
        assert!(syscalls_ok("minimal", 2.0) && !syscalls_ok("minimal", 1.995));

        assert!(kept_ok(16_492) && kept_ok(258 * 1024) && !kept_ok(258 * 1024 + 1));
        assert!(kept_ok(-100));

        assert!(release_ok(64, 1000) && release_ok(100, 1000));
        assert!(!release_ok(101, 1000) && !release_ok(2000, 1000));

        assert_eq!(thp_ok("madvise", 1), Some(true));
        assert_eq!(thp_ok("always", 8), Some(true));
        assert_eq!(thp_ok("madvise", 9), Some(false));
        assert_eq!(thp_ok("always", 512), Some(false));
        assert_eq!(thp_ok("never", 512), None);
        assert_eq!(thp_ok("unavailable", 512), None);

        assert_eq!(grow_faults_ok("madvise", 16), Some(true));
        assert_eq!(grow_faults_ok("always", 64), Some(true));
        assert_eq!(grow_faults_ok("madvise", 65), Some(false));
        assert_eq!(grow_faults_ok("madvise", 8192), Some(false));
        assert_eq!(grow_faults_ok("never", 8192), None);

        // Measured: 136 Ir for 2 → 4 MiB, 121 for 32 → 64 MiB (mremap both times).
        assert!(no_copy(136, 121));
        assert!(no_copy(136, 271) && !no_copy(136, 272));
        // A copy of 32 MiB against one of 2 MiB.
        assert!(!no_copy(150_000, 2_400_000));
        assert!(!no_copy(0, 0) && !no_copy(-5, 3));
        let line = "rss_before_kib=1784 rss_peak_kib=617452 rss_after_kib=18276 kept_kib=16492";
        assert_eq!(field(line, "kept_kib"), Some("16492"));
        assert_eq!(field(line, "rss_peak_kib"), Some("617452"));
        assert_eq!(field(line, "kib"), None);
        assert_eq!(field(line, "rss"), None);
        assert_eq!(get::<i64>(line, "kept_kib"), Ok(16_492));
        assert!(get::<i64>("faults=x", "faults").is_err());
        assert_eq!(
            field(
                "faults=1 thp_enabled=madvise aligned_2m=true",
                "thp_enabled"
            ),
            Some("madvise")
        );
        let checks = vec![
            Check::new("(a) x", "0.000".into(), "0 (< 0.05)", true),
            Check::new("(b) a | b", "2.00".into(), "≥ 2", false),
        ];
        let t = table(&checks);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].split(" | ").count(), 4);
        assert!(lines[0].starts_with("| check ") && lines[0].ends_with("| verdict |"));
        assert!(lines[1].starts_with("| -----"));
        assert!(lines[2].ends_with("| ok      |"));
        assert!(lines[3].contains("a \\| b") && lines[3].ends_with("| FAILED  |"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{t}");
        assert_eq!(
            file_stem(&["grow", "balanced", "2", "4", "--no-touch"]),
            "grow-balanced-2-4-no-touch"
        );
        assert_eq!(file_stem(&["steady", "a/b", "100"]), "steady-a_b-100");
        let c = unmeasured("(g) z", "all zero", "`large zeroed balanced` failed".into());
        assert!(!c.ok);
        assert_eq!(c.verdict(), "FAILED");
        assert!(c.figure.starts_with("not measured: "));
    }
}
