//! `cargo xtask preload [--mode M] [--check]`: the preload library (`crates/hakmem-preload`),
//! built once per mode and copied to `<target>/preload/MODE/libhakmem_preload.so`, and its check
//! (docs/preload.md, "The check"): the C test, the contract, python3, git and the learning
//! modes' log, first without the library (the reference), then under every selected mode and a
//! debug build. stderr must match the reference's but for the workload's `allocator: …` line,
//! checked on its own. Every child loses `HAKMEM_LOG` and `HAKMEM_REPORT` unless a run sets one,
//! and runs in its own process group, killed with it after [`CHILD_TIMEOUT`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{self, run_timed, Finished};

/// The library's modes: its cargo features (as `hakmem`'s), in build order.
pub const MODES: [&str; 6] = [
    "minimal", "fast", "balanced", "learning", "research", "runtime",
];

/// The `HAKMEM_MODE` the check gives the runtime build (not the default, so that the check sees
/// the variable arrive).
pub const RUNTIME_CHECK_MODE: &str = "fast";

/// hakmem's log (`1`: stderr; a path: appended to it) and RESEARCH's report at exit: removed
/// from every child unless a run sets one on purpose.
pub const LOG_VAR: &str = "HAKMEM_LOG";
pub const REPORT_VAR: &str = "HAKMEM_REPORT";

/// A child that runs longer is killed (with its process group) and its run fails.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

pub const LIBRARY: &str = "libhakmem_preload.so";

/// Where the release library of `mode` is copied.
pub fn library_path(mode: &str) -> PathBuf {
    cmd::target_dir().join("preload").join(mode).join(LIBRARY)
}

/// The `cargo build` arguments for `mode` (release, or the dev profile).
pub fn cargo_args(mode: &str, release: bool) -> Vec<&str> {
    let mut args = vec!["build", "--quiet", "--release", "-p", "hakmem-preload"];
    args.retain(|a| release || *a != "--release");
    args.extend(["--no-default-features", "--features", mode]);
    args
}

/// Builds the library of `mode` and copies it to [`library_path`] (a debug build: to
/// `<target>/preload/debug-MODE/`) under a temporary name, then a rename (a process that has the
/// old file mapped keeps it). Prints `MODE PATH (N s)` on stderr; returns the path.
pub fn build(mode: &str, release: bool) -> Result<PathBuf, String> {
    let profile = if release { "release" } else { "debug" };
    let built = cmd::target_dir().join(profile).join(LIBRARY);
    let dest = match release {
        true => library_path(mode),
        false => library_path(&format!("debug-{mode}")),
    };
    let took = cmd::build_and_copy(&cargo_args(mode, release), &built, &dest)?;
    let (shown, took) = (dest.display(), cmd::seconds(took));
    eprintln!("preload: built {mode:<8} ({profile}) {shown} ({took} s)");
    Ok(dest)
}

/// Builds the release libraries of `modes`; their paths, in order.
pub fn build_all(modes: &[&str]) -> Result<Vec<PathBuf>, String> {
    modes.iter().map(|mode| build(mode, true)).collect()
}

/// `cargo xtask preload [--mode M] [--check]`: builds the libraries and prints each path on
/// stdout; with `check`, then runs the check with one debug build too (BALANCED, or the first
/// mode asked for: its debug assertions and re-entry guard under the same workloads).
/// `Ok(false)` if a check failed.
pub fn run(modes: &[&str], check: bool) -> Result<bool, String> {
    let paths = build_all(modes)?;
    for path in &paths {
        println!("{}", path.display());
    }
    if !check {
        return Ok(true);
    }
    let mut contenders: Vec<Contender> = modes
        .iter()
        .zip(paths)
        .map(|(mode, path)| Contender::hakmem(mode, path))
        .collect();
    let debug_mode = debug_mode(modes);
    let mut debug = Contender::hakmem(debug_mode, build(debug_mode, false)?);
    debug.name += " (debug build)";
    debug.release = false;
    contenders.push(debug);
    check_all(&contenders)
}

/// The mode of the check's debug build: balanced if it is among `modes`, else the first.
pub fn debug_mode<'a>(modes: &[&'a str]) -> &'a str {
    match modes.contains(&"balanced") {
        true => "balanced",
        false => modes.first().copied().unwrap_or("balanced"),
    }
}

// ---- the check -------------------------------------------------------------------------------

/// One way of running the workloads: glibc (no library) or a hakmem mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contender {
    /// `glibc` or the mode's name.
    pub name: String,
    /// `LD_PRELOAD` (none for glibc).
    pub library: Option<PathBuf>,
    /// `HAKMEM_MODE` (the runtime build only).
    pub hakmem_mode: Option<&'static str>,
    /// The mode `hakmem_mode()` must report (`None`: not hakmem).
    pub expected_mode: Option<&'static str>,
    /// A release build (whose code the no-panic walk checks).
    pub release: bool,
}

impl Contender {
    /// The reference: no library.
    pub fn glibc() -> Contender {
        Contender {
            name: "glibc".into(),
            library: None,
            hakmem_mode: None,
            expected_mode: None,
            release: true,
        }
    }

    /// The library of `mode` at `path` (the runtime build runs with `HAKMEM_MODE=`
    /// [`RUNTIME_CHECK_MODE`]).
    pub fn hakmem(mode: &str, path: PathBuf) -> Contender {
        if mode == "runtime" {
            return Contender::runtime(path, RUNTIME_CHECK_MODE);
        }
        Contender {
            name: mode.to_owned(),
            library: Some(path),
            hakmem_mode: None,
            expected_mode: Some(MODES.iter().find(|m| **m == mode).copied().unwrap_or("?")),
            release: true,
        }
    }

    /// The runtime library at `path` with `HAKMEM_MODE=mode`.
    pub fn runtime(path: PathBuf, mode: &'static str) -> Contender {
        Contender {
            name: format!("runtime (HAKMEM_MODE={mode})"),
            library: Some(path),
            hakmem_mode: Some(mode),
            expected_mode: Some(mode),
            release: true,
        }
    }

    /// `program args…` from the workspace root under this contender: `LD_PRELOAD` set (or
    /// removed), `HAKMEM_MODE` set (or removed), `HAKMEM_LOG` and `HAKMEM_REPORT` removed.
    pub fn command<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Command {
        let mut c = cmd::command(program, args, self.hakmem_mode);
        match &self.library {
            Some(lib) => c.env("LD_PRELOAD", lib),
            None => c.env_remove("LD_PRELOAD"),
        };
        c.env_remove(LOG_VAR).env_remove(REPORT_VAR);
        c
    }
}

/// The last non-empty lines of `text` (at most `n`), for failure messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// stderr without the workload's `allocator: …` line; and that line's value, if there is one.
/// hakmem's own lines (`hakmem: …`) stay: the library must be silent unless asked.
pub fn split_stderr(stderr: &str) -> (String, Option<String>) {
    let mut rest = String::new();
    let mut allocator = None;
    for line in stderr.lines() {
        if let Some(v) = line.strip_prefix("allocator: ") {
            allocator = Some(v.trim().to_owned());
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    (rest, allocator)
}

/// The first line where `a` and `b` differ, shown for a failure message.
pub fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for n in 1.. {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => return "identical".to_owned(),
            (x, y) => {
                return format!(
                    "line {n}: reference {:?}, got {:?}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                )
            }
        }
    }
    unreachable!()
}

/// What a workload must see in a run, compared with the reference run.
pub fn judge(
    finished: &Finished,
    reference: Option<&Finished>,
    allocator_line: Option<&str>,
) -> Result<(), String> {
    if !finished.status.success() {
        return Err(format!(
            "{}: {}",
            finished.status,
            tail(&(finished.stdout.clone() + &finished.stderr), 3)
        ));
    }
    if finished.stderr.contains("ERROR: ld.so:") {
        let why = tail(&finished.stderr, 1);
        return Err(format!("the library was not loaded: {why}"));
    }
    let (rest, allocator) = split_stderr(&finished.stderr);
    if let Some(want) = allocator_line {
        if allocator.as_deref() != Some(want) {
            return Err(format!(
                "it reports `allocator: {}`, expected `allocator: {want}`",
                allocator.as_deref().unwrap_or("<nothing>")
            ));
        }
    }
    if let Some(reference) = reference {
        if finished.stdout != reference.stdout {
            return Err(format!(
                "stdout differs from glibc's: {}",
                first_difference(&reference.stdout, &finished.stdout)
            ));
        }
        let (ref_rest, _) = split_stderr(&reference.stderr);
        if rest != ref_rest {
            return Err(format!(
                "stderr differs from glibc's: {}",
                first_difference(&ref_rest, &rest)
            ));
        }
    }
    Ok(())
}

// ---- panics --------------------------------------------------------------------------------

/// The functions the library exports.
pub const EXPORTS: [&str; 12] = [
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "hakmem_mode",
];

/// Functions C calls back that the library registers at run time (not exports, but entered
/// from C all the same): the pool's thread-exit destructor (a pthread key's). Absent from the
/// modes without a pool, where the walk simply finds nothing to start from.
pub const CALLBACKS: [&str; 1] = ["hakmem::pool::thread::on_exit"];

/// Where the walk stops: hakmem's diagnostics (a misuse report formats its line and aborts; a
/// warning formats into a stack buffer) and the abort that an `extern "C"` function's unwind
/// guard calls.
const WALK_STOPS: [&str; 2] = ["hakmem::diag::", "core::panicking::panic_cannot_unwind"];

/// Whether a function's name says it panics (or leads to a panic).
fn is_panic(name: &str) -> bool {
    name.contains("panic") || name.contains("_fail") || name.contains("begin_unwind")
}

/// Walks the direct calls and tail jumps of `disassembly` (`objdump -d -C`) from `roots` and
/// returns the panicking functions it reaches, each as `caller -> callee`, not walking into
/// [`WALK_STOPS`] nor through PLT stubs (`name@plt`: calls into another library, whose last
/// jump goes to the resolver stub that objdump labels with whatever symbol precedes `.plt`).
pub fn panics_reachable(disassembly: &str, roots: &[&str]) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut calls: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in disassembly.lines() {
        // `0000000000001234 <name>:` starts a function.
        if let Some(name) = line
            .strip_suffix(">:")
            .and_then(|l| l.split_once(" <"))
            .filter(|(addr, _)| addr.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|(_, name)| name)
        {
            current = Some(name);
            calls.entry(name).or_default();
            continue;
        }
        // `  12ab:\tcall   5678 <callee+0x10>` (or jmp): a direct call or jump.
        let Some(caller) = current.filter(|name| !name.ends_with("@plt")) else {
            continue;
        };
        let mut words = line.split_whitespace().skip(1);
        let Some(op) = words.next() else { continue };
        if !(op.starts_with("call") || op.starts_with("jmp")) {
            continue;
        }
        let Some(target) = line.split_once(" <").and_then(|(_, t)| t.strip_suffix('>')) else {
            continue;
        };
        let callee = match target.rsplit_once("+0x") {
            Some((name, off)) if off.chars().all(|c| c.is_ascii_hexdigit()) => name,
            _ => target,
        };
        if callee != caller {
            calls.entry(caller).or_default().insert(callee);
        }
    }
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = roots.to_vec();
    while let Some(f) = stack.pop() {
        if !seen.insert(f) {
            continue;
        }
        for &g in calls.get(f).into_iter().flatten() {
            if WALK_STOPS.iter().any(|stop| g.starts_with(stop)) {
                continue;
            }
            if is_panic(g) {
                found.push(format!("{f} -> {g}"));
            } else {
                stack.push(g);
            }
        }
    }
    found
}

/// Checks that no export of the library at `lib` can reach a panic (outside [`WALK_STOPS`]),
/// from its disassembly (`objdump`, binutils).
pub fn check_panic_free(lib: &Path) -> Result<(), String> {
    let text = disassemble(lib)?;
    // Exports with identical code share one address and one label (memalign is shown as
    // aligned_alloc), so only the four that cannot be folded together must appear: a guard
    // against a disassembly this walk cannot read, which would pass vacuously.
    let missing: Vec<&str> = ["malloc", "free", "calloc", "realloc"]
        .into_iter()
        .filter(|e| !text.contains(&format!(" <{e}>:\n")))
        .collect();
    if !missing.is_empty() {
        let missing = missing.join(", ");
        return Err(format!("exports not found in the disassembly: {missing}"));
    }
    let roots: Vec<&str> = EXPORTS.iter().chain(&CALLBACKS).copied().collect();
    match panics_reachable(&text, &roots) {
        found if found.is_empty() => Ok(()),
        found => Err(format!("a panic is reachable: {}", found.join("; "))),
    }
}

/// The disassembly of `lib` (`objdump -d -C`, binutils).
fn disassemble(lib: &Path) -> Result<String, String> {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn", "-C"])
        .arg(lib)
        .output()
        .map_err(|e| format!("objdump is needed (apt-get install binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!("objdump failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The exports whose own code is their fast path: what they do without calling out.
pub const FAST_PATH_EXPORTS: [&str; 2] = ["malloc", "free"];

/// What a fast path must not call: the general-dynamic TLS lookup (a `thread_local!` in a
/// shared object) and `errno`'s address (a saved and restored `errno`).
pub const FAST_PATH_FORBIDDEN: [&str; 2] = ["__tls_get_addr", "__errno_location"];

/// The instructions of `export`'s own body in `disassembly` (`objdump -d`) that mention one of
/// [`FAST_PATH_FORBIDDEN`] (a call through the PLT or the GOT), each as `export: instruction`;
/// `None` if the export is not in the disassembly. Slow paths are out-of-line functions
/// (`#[cold]`, `#[inline(never)]`), so what the body itself calls is what every call pays.
pub fn fast_path_offences(disassembly: &str, export: &str) -> Option<Vec<String>> {
    let start = format!(" <{export}>:");
    let mut lines = disassembly.lines().skip_while(|l| !l.ends_with(&start));
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.trim().is_empty() && !l.ends_with(">:"))
            .filter(|l| FAST_PATH_FORBIDDEN.iter().any(|f| l.contains(f)))
            .map(|l| {
                format!(
                    "{export}: {}",
                    l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
                )
            })
            .collect(),
    )
}

/// Checks that the library's `malloc` and `free` ([`FAST_PATH_EXPORTS`]) call neither
/// `__tls_get_addr` nor `__errno_location` from their own code (docs/preload.md, "Thread-local
/// state").
pub fn check_fast_paths(lib: &Path) -> Result<(), String> {
    let text = disassemble(lib)?;
    let mut offences = Vec::new();
    for export in FAST_PATH_EXPORTS {
        match fast_path_offences(&text, export) {
            Some(found) => offences.extend(found),
            None => return Err(format!("`{export}` not found in the disassembly")),
        }
    }
    if offences.is_empty() {
        Ok(())
    } else {
        Err(format!("a fast path calls out: {}", offences.join("; ")))
    }
}

/// The python3 to run: what `python3` on `PATH` really is (`sys.executable`), so that a
/// wrapper (pyenv's shims are shell scripts) does not run under the library too.
pub fn python() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .env_remove("LD_PRELOAD")
        .output()
        .map_err(|e| format!("python3 is needed (apt-get install python3): {e}"))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || path.is_empty() {
        return Err("python3 did not say where it is (sys.executable)".to_owned());
    }
    Ok(PathBuf::from(path))
}

/// The workloads' directory: `crates/hakmem-preload/tests`.
pub fn tests_dir() -> PathBuf {
    cmd::workspace_root()
        .join("crates")
        .join("hakmem-preload")
        .join("tests")
}

/// The JSON records of the check's python run (a 5 MB document).
pub const CHECK_RECORDS: &str = "10000";

/// The environment every python run gets, with or without the library.
pub const PYTHON_ENV: [(&str, &str); 2] = [("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0")];

/// The flags of the C test programs (the TLS library has its own).
const CFLAGS: [&str; 6] = ["-O2", "-g", "-fno-builtin", "-pthread", "-Wall", "-Wextra"];

/// Compiles into `dir` the C test, its TLS library (`preload_test.c` with `-DTLS_LIB -shared`)
/// and the conformance program; their paths, in that order.
fn compile_c_programs(dir: &Path) -> Result<[PathBuf; 3], String> {
    let tls_flags = ["-O2", "-fPIC", "-shared", "-DTLS_LIB"];
    let programs = [
        (&CFLAGS[..], "preload_test", "preload_test.c"),
        (&tls_flags[..], "libpreload_test_tls.so", "preload_test.c"),
        (&CFLAGS[..], "conformance", "conformance.c"),
    ];
    let out = programs.map(|(_, name, _)| dir.join(name));
    for ((flags, _, source), out) in programs.iter().zip(&out) {
        let source = tests_dir().join(source);
        let shown = format!(
            "{} -o {} {}",
            flags.join(" "),
            out.display(),
            source.display()
        );
        eprintln!("preload check: cc {shown}");
        let status = Command::new("cc")
            .args(*flags)
            .args([OsStr::new("-o"), out.as_os_str(), source.as_os_str()])
            .status()
            .map_err(|e| format!("cc is needed (apt-get install gcc): {e}"))?;
        if !status.success() {
            return Err(format!("cc failed: {status}"));
        }
    }
    Ok(out)
}

/// The last line of a passing conformance run starts with this, and says `0 failed`.
const CONFORMANCE_TALLY: &str = "conformance: ";

/// The conformance program's measurement line: ns per failed `malloc(3 TiB)`.
const FAILED_MALLOC_NS: &str = "failed-malloc-ns:";

/// The figure of the `failed-malloc-ns: N` line in `stdout`, if there is one.
pub fn failed_malloc_ns(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(FAILED_MALLOC_NS))
        .and_then(|v| v.trim().parse().ok())
}

/// What a conformance run must show: exit 0, `conformance: N passed, 0 failed` last, nothing
/// on stderr. On failure, the failed sections and the first failed checks.
fn judge_contract(f: &Finished) -> Result<(), String> {
    let last = f.stdout.lines().last().unwrap_or_default();
    if !f.status.success() || !last.starts_with(CONFORMANCE_TALLY) || !last.ends_with(" 0 failed") {
        let sections: Vec<&str> = f
            .stdout
            .lines()
            .filter(|l| l.starts_with("FAILED "))
            .map(|l| l.split(" (").next().unwrap_or(l))
            .collect();
        let checks: Vec<&str> = f
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .collect();
        return Err(format!(
            "{}; {}; failed sections: [{}]; {}",
            f.status,
            if last.starts_with(CONFORMANCE_TALLY) {
                last
            } else {
                "it did not finish"
            },
            sections.join(", "),
            checks.join(" | ")
        ));
    }
    silent(f, "")
}

/// `Err` with the last lines of a stderr that must be empty (`when`: the condition, if any).
fn silent(f: &Finished, when: &str) -> Result<(), String> {
    match f.stderr.is_empty() {
        true => Ok(()),
        false => Err(format!("stderr is not empty{when}: {}", tail(&f.stderr, 2))),
    }
}

/// The failed-malloc table: contender, ns per failed `malloc(3 TiB)`, ratio to glibc's.
pub fn failed_malloc_table(rows: &[(String, Option<u64>)]) -> String {
    let glibc = rows
        .iter()
        .find(|(name, _)| name == "glibc")
        .and_then(|(_, ns)| *ns);
    let mut out = format!(
        "{:<30} {:>12} {:>9}\n",
        "contender", "ns per call", "x glibc"
    );
    for (name, ns) in rows {
        let (ns, ratio) = match (ns, glibc) {
            (Some(ns), Some(g)) if g > 0 => {
                (ns.to_string(), format!("{:.2}", *ns as f64 / g as f64))
            }
            (Some(ns), _) => (ns.to_string(), "-".to_owned()),
            (None, _) => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!("{name:<30} {ns:>12} {ratio:>9}\n"));
    }
    out
}

/// The python3 script of the logging check. Its first part makes only small allocations
/// (`PYTHONMALLOC=malloc`: each object is a `malloc`), none contested, so that LEARNING's
/// learner freezes as idle after three windows (a `LEARN -> FROZEN` line, every time, in ~0.1 s);
/// the second allocates blocks of contested sizes, from which RESEARCH's learner logs its new
/// leaders within a few hundred allocations (and LEARNING's sees a shift).
pub const LOG_SCRIPT: &str = "\
import random
keep = [bytes(100) for _ in range(60000)]
r = random.Random(1)
for i in range(8000):
    b = bytearray(r.choice((600000, 800000, 1200000, 3000000)))
";

/// The prefix of the learner's log lines.
pub const LEARNING_LOG: &str = "hakmem: learning:";

/// What a logging run must show: exit 0; with `log_on_stderr`, one line of the learner's log at
/// least on stderr and nothing but hakmem's lines; without, an empty stderr.
fn judge_log(f: &Finished, log_on_stderr: bool) -> Result<(), String> {
    if !f.status.success() {
        return Err(format!("{}: {}", f.status, tail(&f.stderr, 2)));
    }
    if log_on_stderr {
        if !f.stderr.lines().any(|l| l.starts_with(LEARNING_LOG)) {
            return Err(format!(
                "no `{LEARNING_LOG} …` line on stderr with {LOG_VAR}=1 (stderr: {:?})",
                tail(&f.stderr, 2)
            ));
        }
        if let Some(other) = f.stderr.lines().find(|l| !l.starts_with("hakmem: ")) {
            return Err(format!("stderr holds more than hakmem's log: {other:?}"));
        }
        Ok(())
    } else {
        silent(f, &format!(" without {LOG_VAR}=1"))
    }
}

/// The contenders whose learner logs: LEARNING and RESEARCH builds among `contenders`, and the
/// runtime build (if there is one) with `HAKMEM_MODE=learning`.
pub fn log_contenders(contenders: &[Contender]) -> Vec<Contender> {
    let mut out: Vec<Contender> = contenders
        .iter()
        .filter(|c| c.hakmem_mode.is_none())
        .filter(|c| matches!(c.expected_mode, Some("learning" | "research")))
        .cloned()
        .collect();
    if let Some(runtime) = contenders.iter().find(|c| c.hakmem_mode.is_some()) {
        if let Some(lib) = &runtime.library {
            let mut c = Contender::runtime(lib.clone(), "learning");
            c.release = runtime.release;
            out.push(c);
        }
    }
    out
}

/// The logging check of `c`: the script without `HAKMEM_LOG` (silent), with `HAKMEM_LOG=1`
/// (the log on stderr) and with `HAKMEM_LOG=PATH` (the log appended to PATH, stderr silent).
fn check_log(c: &Contender, python: &Path, dir: &Path, tally: &mut Tally) {
    let slug = cmd::slug(&c.name);
    let run = |workload: &str, log: Option<&Path>| {
        let mut command = c.command(python, &["-c", LOG_SCRIPT]);
        command.envs(PYTHON_ENV);
        if let Some(value) = log {
            command.env(LOG_VAR, value);
        }
        let stem = dir.join(format!("{workload}-{slug}"));
        run_timed(command, &stem, CHILD_TIMEOUT)
    };
    let result = run("quiet", None).and_then(|f| judge_log(&f, false).map(|()| f.took));
    tally.add("quiet", c, result);
    let result =
        run("log", Some(Path::new("1"))).and_then(|f| judge_log(&f, true).map(|()| f.took));
    tally.add("log", c, result);
    // A file that already holds a line: the log is appended after it.
    let file = dir.join(format!("log-file-{slug}.log"));
    const FIRST: &str = "an earlier line\n";
    let result = cmd::write(&file, FIRST)
        .and_then(|()| run("log-file", Some(&file)))
        .and_then(|f| {
            judge_log(&f, false)?;
            let text = cmd::read(&file)?;
            let Some(appended) = text.strip_prefix(FIRST) else {
                return Err(format!(
                    "{} does not start with its earlier line: the log was not appended",
                    file.display()
                ));
            };
            if !appended.lines().any(|l| l.starts_with(LEARNING_LOG)) {
                return Err(format!(
                    "no `{LEARNING_LOG} …` line in {} with {LOG_VAR}=PATH",
                    file.display()
                ));
            }
            Ok(f.took)
        });
    tally.add("log-file", c, result);
}

/// Runs the check for `contenders` (glibc, the reference, is added first). `Ok(false)` if any
/// run failed; `Err` if the check could not run at all (no `cc`, no python3, no git).
pub fn check_all(contenders: &[Contender]) -> Result<bool, String> {
    let started = Instant::now();
    let dir = cmd::target_dir().join("preload").join("check");
    let _ = std::fs::remove_dir_all(&dir);
    cmd::create_dir(&dir)?;
    let [exe, tls, conformance] = &compile_c_programs(&dir)?;
    let python = python()?;
    if !cmd::is_installed("git") {
        return Err("git is needed (apt-get install git)".to_owned());
    }
    eprintln!(
        "preload check: python {}; {}; outputs in {}",
        python.display(),
        cmd::first_line("git --version"),
        dir.display()
    );
    let mut all = vec![Contender::glibc()];
    all.extend(contenders.iter().cloned());
    let mut tally = Tally::default();

    // No export reaches a panic (the release builds' code, from their disassembly).
    for c in contenders.iter().filter(|c| c.release) {
        if let Some(lib) = &c.library {
            let start = Instant::now();
            let result = check_panic_free(lib).map(|()| start.elapsed());
            tally.add("no-panic", c, result);
            let start = Instant::now();
            let result = check_fast_paths(lib).map(|()| start.elapsed());
            tally.add("fast-path", c, result);
        }
    }

    // The C test and the contract: glibc first (the programs' expectations must hold there).
    let mut failed_malloc = Vec::with_capacity(all.len());
    for c in &all {
        let run = |workload: &str, program: &Path, args: &[&OsStr]| {
            let mut command = c.command(program, args);
            command.current_dir(&dir);
            let stem = dir.join(format!("{workload}-{}", cmd::slug(&c.name)));
            run_timed(command, &stem, CHILD_TIMEOUT)
        };
        // The C test checks everything itself; its expected mode is its second argument.
        let expected = OsStr::new(c.expected_mode.unwrap_or("glibc"));
        let result = run("c", exe, &[tls.as_os_str(), expected]).and_then(|f| {
            judge(&f, None, None)?;
            let last = f.stdout.lines().last().unwrap_or_default();
            if !last.starts_with("preload_test: all ") {
                return Err(format!("it did not finish: last line {last:?}"));
            }
            silent(&f, "").map(|()| f.took)
        });
        tally.add("c-test", c, result);
        let result = run("contract", conformance, &[]).and_then(|f| {
            failed_malloc.push((c.name.clone(), failed_malloc_ns(&f.stdout)));
            judge_contract(&f).map(|()| f.took)
        });
        tally.add("contract", c, result);
    }

    // python3 and git: the reference (glibc) first, then every mode against it.
    let script = tests_dir().join("json_roundtrip.py");
    let git_script = tests_dir().join("git_workload.sh");
    let mut references: [Option<Finished>; 2] = [None, None];
    for c in &all {
        let slug = cmd::slug(&c.name);
        let records = ["--records", CHECK_RECORDS].map(OsStr::new);
        let mut python_run = c.command(&python, &[script.as_os_str(), records[0], records[1]]);
        python_run.envs(PYTHON_ENV);
        let repo_dir = dir.join(format!("git-{slug}"));
        cmd::create_dir(&repo_dir)?;
        let git_run = c.command(Path::new("sh"), &[&git_script, &repo_dir]);
        // What each reports on its `allocator:` line: git only whether hakmem is loaded.
        let python_says = c
            .expected_mode
            .map_or("not hakmem".into(), |m| format!("hakmem {m}"));
        let git_says = c.library.as_ref().map_or("not hakmem", |_| "hakmem");
        let runs = [
            ("python", python_run, python_says.as_str()),
            ("git", git_run, git_says),
        ];
        for ((workload, command, allocator), reference) in runs.into_iter().zip(&mut references) {
            let stem = dir.join(format!("{workload}-{slug}"));
            let result = run_timed(command, &stem, CHILD_TIMEOUT).and_then(|f| {
                judge(&f, reference.as_ref(), Some(allocator))?;
                let took = f.took;
                reference.get_or_insert(f);
                Ok(took)
            });
            tally.add(workload, c, result);
        }
        if references.iter().any(Option::is_none) {
            eprintln!("preload check: the reference run (glibc) failed; nothing to compare with");
            tally.failed += 1;
            break;
        }
    }
    // The learning modes' log: silent unless asked, and where it is asked to go.
    for c in log_contenders(contenders) {
        check_log(&c, &python, &dir, &mut tally);
    }

    eprintln!(
        "preload check: the cost of a failed malloc(3 TiB), conformance.c section 9 \
         (a report, not a check):"
    );
    for line in failed_malloc_table(&failed_malloc).lines() {
        eprintln!("  {line}");
    }
    eprintln!(
        "preload check: {} runs, {} failed, {} s",
        tally.runs,
        tally.failed,
        cmd::seconds(started.elapsed())
    );
    Ok(tally.failed == 0)
}

/// Runs and failures so far.
#[derive(Default)]
struct Tally {
    runs: usize,
    failed: usize,
}

impl Tally {
    /// Counts one run and reports it: `[workload] contender  ok (N s)` or `FAILED: why`.
    fn add(&mut self, workload: &str, c: &Contender, result: Result<Duration, String>) {
        let outcome = match &result {
            Ok(took) => format!("ok ({} s)", cmd::seconds(*took)),
            Err(why) => format!("FAILED: {why}"),
        };
        eprintln!("{:<10} {:<30} {outcome}", format!("[{workload}]"), c.name);
        self.runs += 1;
        self.failed += usize::from(result.is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `c` gives `var` in a child's environment: `Some(None)` if it removes it.
    fn env(c: &Contender, var: &str) -> Option<Option<String>> {
        let cmd = c.command(Path::new("true"), &[] as &[&str]);
        let found = cmd.get_envs().find(|(k, _)| *k == var);
        found.map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    /// `sh -c script`, its output kept at `stem`.{out,err}.
    fn run_sh(stem: &Path, script: &str) -> Finished {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        run_timed(c, stem, Duration::from_secs(30)).unwrap()
    }

    #[test]
    fn libraries_live_per_mode_and_contenders_preload_set_the_mode_and_lose_the_log_and_report() {
        let p = library_path("fast");
        assert!(p.ends_with("preload/fast/libhakmem_preload.so"), "{p:?}");
        let tail = "-p hakmem-preload --no-default-features --features fast";
        assert_eq!(cargo_args("fast", true)[3..].join(" "), tail);
        assert_eq!(cargo_args("fast", false)[2..].join(" "), tail);
        assert!(library_path("debug-fast").ends_with("preload/debug-fast/libhakmem_preload.so"));
        assert_eq!(debug_mode(&["fast", "balanced"]), "balanced");
        assert_eq!(debug_mode(&["fast"]), "fast");
        let c = Contender::hakmem("runtime", PathBuf::from("/x/lib.so"));
        assert_eq!(c.expected_mode, Some(RUNTIME_CHECK_MODE));
        assert_eq!(cmd::slug(&c.name), format!("runtime-{RUNTIME_CHECK_MODE}"));
        assert_eq!(env(&c, "LD_PRELOAD"), Some(Some("/x/lib.so".into())));
        assert_eq!(
            env(&c, cmd::MODE_VAR),
            Some(Some(RUNTIME_CHECK_MODE.into()))
        );
        assert_eq!(env(&Contender::glibc(), "LD_PRELOAD"), Some(None));
        let fast = Contender::hakmem("fast", "/y".into());
        assert_eq!(fast.expected_mode, Some("fast"));
        for c in [Contender::glibc(), fast] {
            for var in [LOG_VAR, REPORT_VAR] {
                assert_eq!(env(&c, var), Some(None), "{var} for {}", c.name);
            }
        }
        let r = Contender::runtime("/r.so".into(), "learning");
        assert_eq!(r.name, "runtime (HAKMEM_MODE=learning)");
        assert_eq!(
            (r.hakmem_mode, r.expected_mode),
            (Some("learning"), Some("learning"))
        );
    }

    #[test]
    fn stderr_contract_and_log_runs_are_judged_on_their_output() {
        let (rest, allocator) =
            split_stderr("allocator: hakmem fast\nhakmem: lifecycle LEARN\nwarning: x\n");
        assert_eq!(allocator.as_deref(), Some("hakmem fast"));
        assert_eq!(rest, "hakmem: lifecycle LEARN\nwarning: x\n");
        for (a, b, want) in [
            ("a\nb\n", "a\nb\n", "identical"),
            ("a\nb\n", "a\nc\n", "line 2: reference \"b\", got \"c\""),
            (
                "a\n",
                "a\nextra\n",
                "line 2: reference \"<end>\", got \"extra\"",
            ),
        ] {
            assert_eq!(first_difference(a, b), want);
        }
        let all: Vec<Contender> = MODES
            .iter()
            .map(|m| Contender::hakmem(m, format!("/{m}.so").into()))
            .collect();
        let names: Vec<String> = log_contenders(&all).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["learning", "research", "runtime (HAKMEM_MODE=learning)"]
        );
        let only_fast = [Contender::hakmem("fast", "/f.so".into())];
        assert!(log_contenders(&only_fast).is_empty());
        let dir = std::env::temp_dir().join(format!("xtask-contract-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |script: &str| run_sh(&dir.join("c"), script);
        let ok = run("echo 'ok 1 x (3 checks)'; echo 'failed-malloc-ns: 1500'; \
                      echo 'conformance: 3 passed, 0 failed'");
        assert_eq!(judge_contract(&ok), Ok(()));
        assert_eq!(failed_malloc_ns(&ok.stdout), Some(1500));
        let noisy = run("echo 'conformance: 3 passed, 0 failed'; echo 'hakmem: learning: x' >&2");
        let why = judge_contract(&noisy).unwrap_err();
        assert!(
            why.contains("stderr is not empty: hakmem: learning: x"),
            "{why}"
        );
        let failing = run("echo 'FAILED 8 free at the limit (1 of 3 checks failed)'; \
                           echo 'FAIL [8 free] f:1: `x`' >&2; \
                           echo 'conformance: 2 passed, 1 failed'; exit 1");
        let why = judge_contract(&failing).unwrap_err();
        assert!(
            why.contains("conformance: 2 passed, 1 failed")
                && why.contains("[FAILED 8 free at the limit]")
                && why.ends_with("FAIL [8 free] f:1: `x`"),
            "{why}"
        );
        assert_eq!(failed_malloc_ns(&failing.stdout), None);
        std::fs::remove_dir_all(&dir).unwrap();
        let table = failed_malloc_table(&[
            ("glibc".into(), Some(1000)),
            ("fast".into(), Some(20000)),
            ("minimal".into(), None),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[1].starts_with("glibc") && lines[1].ends_with("1000      1.00"),
            "{table}"
        );
        assert!(lines[2].ends_with("20000     20.00"), "{table}");
        assert!(lines[3].ends_with("-         -"), "{table}");
        let dir = std::env::temp_dir().join(format!("xtask-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |script: &str| run_sh(&dir.join("l"), script);
        let logged = run("echo 'hakmem: learning: LEARN -> FROZEN' >&2");
        assert_eq!(judge_log(&logged, true), Ok(()));
        assert!(judge_log(&logged, false)
            .unwrap_err()
            .starts_with("stderr is not empty"));
        let silent = run("true");
        assert_eq!(judge_log(&silent, false), Ok(()));
        assert!(judge_log(&silent, true)
            .unwrap_err()
            .starts_with("no `hakmem: learning:"));
        let mixed = run("echo 'hakmem: learning: x' >&2; echo 'Traceback' >&2");
        assert!(judge_log(&mixed, true)
            .unwrap_err()
            .contains("more than hakmem's log"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn panics_are_found_through_calls_and_tail_jumps() {
        let dis = "\
0000000000001000 <malloc>:
    1000:\tcall   1100 <helper>
    1004:\tjmp    1008 <malloc+0x8>
    1008:\tcall   1300 <core::panicking::panic_cannot_unwind>
0000000000001100 <helper>:
    1100:\tjmp    1200 <core::slice::index::slice_index_fail>
    1104:\tcall   1400 <hakmem::diag::fatal>
0000000000001200 <core::slice::index::slice_index_fail>:
    1200:\tcall   1210 <core::panicking::panic_fmt>
0000000000001400 <hakmem::diag::fatal>:
    1400:\tcall   1200 <core::slice::index::slice_index_fail>
0000000000001500 <free>:
    1500:\tcall   *%rax
    1502:\tcall   1600 <__tls_get_addr@plt>
    1507:\tret
0000000000001600 <__tls_get_addr@plt>:
    1600:\tjmp    *0x28ba(%rip)        # 4a800 <__tls_get_addr@GLIBC_2.3>
    1606:\tpush   $0x1
    160b:\tjmp    1700 <std::alloc::rust_oom+0x10>
0000000000001700 <std::alloc::rust_oom>:
    1700:\tcall   1200 <core::slice::index::slice_index_fail>
";
        assert_eq!(
            panics_reachable(dis, &["malloc", "free"]),
            ["helper -> core::slice::index::slice_index_fail"]
        );
        assert!(
            panics_reachable(dis, &["free"]).is_empty(),
            "a PLT stub is not followed into the symbol objdump names its resolver jump by"
        );
    }

    #[test]
    fn fast_paths_are_judged_on_the_exports_own_code() {
        let dis = "\
0000000000001000 <malloc>:
    1000:\tmov    %fs:0x0,%rcx
    1009:\tjae    1020 <malloc+0x20>
    100b:\tcall   1100 <hakmem_preload::enomem>

0000000000001100 <hakmem_preload::enomem>:
    1100:\tcall   *0x454db(%rip)        # 584b8 <__errno_location@GLIBC_2.2.5>
0000000000001500 <free>:
    1500:\tlea    0x4563b(%rip),%rdi        # 58480 <_DYNAMIC+0x1c0>
    1507:\tcall   1600 <__tls_get_addr@plt>
    150c:\tret
";
        assert_eq!(fast_path_offences(dis, "malloc"), Some(vec![]));
        assert_eq!(
            fast_path_offences(dis, "free"),
            Some(vec!["free: call 1600 <__tls_get_addr@plt>".to_owned()])
        );
        assert_eq!(
            fast_path_offences(dis, "hakmem_preload::enomem").map(|v| v.len()),
            Some(1)
        );
        assert_eq!(fast_path_offences(dis, "calloc"), None);
    }

    #[test]
    fn a_hung_child_and_its_group_are_killed() {
        let dir = std::env::temp_dir().join(format!("xtask-preload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The shell forks a sleeper that keeps stdout open, then waits for it.
        let mut c = Command::new("sh");
        c.args(["-c", "echo started; sleep 30 & wait"]);
        let start = Instant::now();
        let err = run_timed(c, &dir.join("hung"), Duration::from_millis(300)).unwrap_err();
        assert!(err.starts_with("killed after 0.3 s"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; exit 3"]);
        let f = run_timed(c, &dir.join("ok"), Duration::from_secs(30)).unwrap();
        assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("out\n", "err\n"));
        assert_eq!(f.status.code(), Some(3));
        let why = judge(&f, None, None).unwrap_err();
        assert!(
            why.contains("exit status: 3") && why.ends_with("out | err"),
            "{why}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
