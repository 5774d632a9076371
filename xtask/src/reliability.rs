//! `cargo xtask sanitizers` and `cargo xtask fuzz` (docs/reliability.md): the hakmem tests under
//! AddressSanitizer (one nightly build with the `runtime` feature, run once per mode) and under
//! valgrind memcheck (the BALANCED build's test binaries), and the cargo-fuzz target. Both
//! sanitizer runs shrink the long tests; the ordinary per-mode runs check them at full size.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cmd;
use crate::test::MODES;

/// Shadow-model sequences per policy in the AddressSanitizer run.
pub const ASAN_QUICKCHECK_TESTS: &str = "100";
/// `HAKMEM_TEST_SCALE` of the AddressSanitizer run.
pub const ASAN_SCALE: &str = "0.25";
/// Shadow-model sequences per policy under memcheck.
pub const MEMCHECK_QUICKCHECK_TESTS: &str = "20";
/// `HAKMEM_TEST_SCALE` under memcheck (about 50 times slower than native).
pub const MEMCHECK_SCALE: &str = "0.05";
/// The valgrind suppressions, relative to the workspace root.
pub const SUPPRESSIONS: &str = "xtask/valgrind.supp";
/// The default length of a fuzz run, in seconds.
pub const FUZZ_DEFAULT_SECS: u64 = 60;

const NIGHTLY_MISSING: &str = "the AddressSanitizer and fuzz runs need the nightly toolchain: \
                               rustup toolchain install nightly (.ci/run installs it)";

/// `rustup run nightly cargo args…` from the workspace root, `HAKMEM_MODE` removed.
fn nightly_cargo(args: &[&str]) -> Command {
    let mut all = vec!["run", "nightly", "cargo"];
    all.extend_from_slice(args);
    cmd::command("rustup", &all, None)
}

fn nightly_available() -> bool {
    nightly_cargo(&["--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host's target triple (`rustc -vV`), so that `-Zsanitizer` instruments the tests and not
/// the build scripts and proc macros.
fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV printed no host".to_owned())
}

/// The AddressSanitizer run: one nightly build, the tests once per mode. `Ok(false)` if a mode
/// failed.
pub fn asan() -> Result<bool, String> {
    if !nightly_available() {
        return Err(NIGHTLY_MISSING.to_owned());
    }
    let host = host_triple()?;
    let target_dir = cmd::target_dir().join("asan");
    let target_dir = target_dir.to_string_lossy().into_owned();
    let mut args: Vec<&str> = "test -p hakmem --no-default-features --features runtime --tests"
        .split(' ')
        .collect();
    args.extend(["--target", &host, "--target-dir", &target_dir]);
    let rustflags = "-Zsanitizer=address --cfg hakmem_sanitizer";
    let shown = format!(
        "RUSTFLAGS=\"{rustflags}\" cargo +nightly {}",
        args.join(" ")
    );
    println!("asan: building: {shown} --no-run");
    let start = Instant::now();
    let mut build = nightly_cargo(&args);
    build.arg("--no-run").env("RUSTFLAGS", rustflags);
    cmd::run_inherited(&mut build, "the AddressSanitizer build")?;
    println!("asan: built in {} s", cmd::seconds(start.elapsed()));
    let mut failed = Vec::new();
    for mode in MODES {
        println!(
            "asan: HAKMEM_MODE={mode} QUICKCHECK_TESTS={ASAN_QUICKCHECK_TESTS} \
             HAKMEM_TEST_SCALE={ASAN_SCALE} {shown}"
        );
        let mut run = nightly_cargo(&args);
        run.env("RUSTFLAGS", rustflags)
            .env(cmd::MODE_VAR, mode)
            .env("QUICKCHECK_TESTS", ASAN_QUICKCHECK_TESTS)
            .env("HAKMEM_TEST_SCALE", ASAN_SCALE)
            .env("ASAN_OPTIONS", "detect_leaks=1");
        let context = "cargo test under AddressSanitizer";
        run_one("asan", mode.to_owned(), &mut run, context, &mut failed);
    }
    if !failed.is_empty() {
        println!("asan: failed in {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}

/// The test binaries of `cargo test args…` (built if needed): (name, path).
fn test_binaries(args: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let mut all = args.to_vec();
    all.extend(["--no-run", "--message-format=json"]);
    let out = cmd::cargo(&all, None)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo {}: {}", all.join(" "), out.status));
    }
    let mut bins: Vec<(String, PathBuf)> = (String::from_utf8_lossy(&out.stdout).lines())
        .filter_map(test_executable)
        .map(|path| (binary_name(&path), path))
        .collect();
    bins.sort();
    Ok(bins)
}

/// The tests of a test binary (`--list --format terse`: `name: test` lines), ignored ones
/// included (they report themselves ignored).
fn list_tests(binary: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(binary)
        .args(["--list", "--format", "terse"])
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list: {}", binary.display(), out.status));
    }
    Ok(parse_test_list(&String::from_utf8_lossy(&out.stdout)))
}

/// The test names in `--list --format terse` output.
fn parse_test_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// The part of a line of cargo's `--message-format=json` that names a test binary.
#[derive(serde::Deserialize)]
struct Artifact {
    reason: String,
    profile: Option<Profile>,
    executable: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Profile {
    test: bool,
}

/// The executable of a test binary's `compiler-artifact` message; `None` for any other line.
fn test_executable(line: &str) -> Option<PathBuf> {
    let a: Artifact = serde_json::from_str(line).ok()?;
    let is_test = a.reason == "compiler-artifact" && a.profile.is_some_and(|p| p.test);
    a.executable.filter(|_| is_test)
}

/// `fork` for `…/deps/fork-0123abcd`.
fn binary_name(path: &Path) -> String {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    match stem.rsplit_once('-') {
        Some((name, _hash)) => name.to_owned(),
        None => stem.into_owned(),
    }
}

/// The test binaries memcheck runs one test per process: every pool reserves 16 GiB of address
/// space for good (regions are never unmapped), valgrind's address space holds six such
/// regions, and the pool tests make more than thirty pools in all.
pub const ONE_TEST_PER_PROCESS: [&str; 1] = ["pool"];

/// The valgrind arguments for one test binary, or one test of it. The fork tests' children end
/// with `_exit` holding what the parent's other threads had allocated; in a child that is all
/// unreachable, so their leak check is off (their reads and writes are still checked): the
/// `fork` binary's, and a test whose name starts with `fork`.
pub fn memcheck_args(binary: &str, test: Option<&str>, suppressions: &Path) -> Vec<String> {
    let forks = binary == "fork" || test.is_some_and(|t| t.starts_with("fork"));
    let leak_check = if forks { "no" } else { "full" };
    vec![
        "--tool=memcheck".into(),
        "--quiet".into(),
        "--error-exitcode=99".into(),
        format!("--leak-check={leak_check}"),
        "--show-leak-kinds=definite,possible".into(),
        "--errors-for-leak-kinds=definite,possible".into(),
        format!("--suppressions={}", suppressions.display()),
    ]
}

/// The memcheck run over the BALANCED build's test binaries. `Ok(false)` if one failed.
pub fn memcheck() -> Result<bool, String> {
    if !cmd::is_installed("valgrind") {
        return Err(crate::large::VALGRIND_MISSING.to_owned());
    }
    let args: Vec<&str> = "test -p hakmem --no-default-features --features balanced --tests"
        .split(' ')
        .collect();
    println!("memcheck: building: {}", cmd::show_cargo(&args, None));
    let bins = test_binaries(&args)?;
    let suppressions = cmd::workspace_root().join(SUPPRESSIONS);
    let mut failed = Vec::new();
    let total = Instant::now();
    for (name, path) in &bins {
        let tests = if ONE_TEST_PER_PROCESS.contains(&name.as_str()) {
            list_tests(path)?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        for test in tests {
            let mut vg = memcheck_args(name, test.as_deref(), &suppressions);
            vg.push(path.display().to_string());
            vg.extend(test.iter().flat_map(|t| ["--exact".to_owned(), t.clone()]));
            vg.push("-q".into());
            println!(
                "memcheck: QUICKCHECK_TESTS={MEMCHECK_QUICKCHECK_TESTS} \
                 HAKMEM_TEST_SCALE={MEMCHECK_SCALE} HAKMEM_TEST_UNDER_VALGRIND=1 valgrind {}",
                vg.join(" ")
            );
            let mut run = cmd::command("valgrind", &vg, None);
            run.env("QUICKCHECK_TESTS", MEMCHECK_QUICKCHECK_TESTS)
                .env("HAKMEM_TEST_SCALE", MEMCHECK_SCALE)
                .env("HAKMEM_TEST_UNDER_VALGRIND", "1");
            let what = format!(
                "{name}{}",
                test.map(|t| format!(" {t}")).unwrap_or_default()
            );
            run_one("memcheck", what, &mut run, "valgrind", &mut failed);
        }
    }
    println!(
        "memcheck: {} test binaries in {} s{}",
        bins.len(),
        cmd::seconds(total.elapsed()),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(", "))
        }
    );
    Ok(failed.is_empty() && !bins.is_empty())
}

/// Runs one sanitizer run of `what` (a mode, a test binary), its output shown, then prints
/// `TOOL: WHAT: ok|FAILED (N s)`; a failure is added to `failed`.
fn run_one(tool: &str, what: String, run: &mut Command, context: &str, failed: &mut Vec<String>) {
    let start = Instant::now();
    let result = cmd::run_inherited(run, context);
    println!(
        "{tool}: {what}: {} ({} s)",
        if result.is_ok() { "ok" } else { "FAILED" },
        cmd::seconds(start.elapsed())
    );
    if result.is_err() {
        failed.push(what);
    }
}

/// Where `cargo xtask fuzz` installs cargo-fuzz when it is not on `PATH`.
fn tools_dir() -> PathBuf {
    cmd::target_dir().join("tools")
}

/// `PATH` with `<target>/tools/bin` in front.
fn path_with_tools() -> std::ffi::OsString {
    let mut dirs = vec![tools_dir().join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn cargo_fuzz_available() -> bool {
    nightly_cargo(&["fuzz", "--version"])
        .env("PATH", path_with_tools())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the fuzz target `ops` for `secs` seconds (plus `extra` libFuzzer arguments), installing
/// cargo-fuzz first if it is missing. `Ok(false)` if the fuzzer found a failure.
pub fn fuzz(secs: u64, extra: &[String]) -> Result<bool, String> {
    if !nightly_available() {
        return Err(NIGHTLY_MISSING.to_owned());
    }
    if !cargo_fuzz_available() {
        let root = tools_dir();
        println!(
            "fuzz: cargo-fuzz is not installed; installing it into {} \
             (cargo install cargo-fuzz --locked --root {}; about 2 minutes)",
            root.display(),
            root.display()
        );
        let root = root.to_string_lossy().into_owned();
        let args = ["install", "cargo-fuzz", "--locked", "--root", root.as_str()];
        cmd::run_inherited(&mut cmd::cargo(&args, None), "cargo install cargo-fuzz")?;
    }
    let max_time = format!("-max_total_time={secs}");
    let mut args = vec!["fuzz", "run", "ops", "--", max_time.as_str()];
    args.extend(extra.iter().map(String::as_str));
    println!("fuzz: cargo +nightly {}", args.join(" "));
    let start = Instant::now();
    let mut run = nightly_cargo(&args);
    run.env("PATH", path_with_tools());
    let result = cmd::run_inherited(&mut run, "cargo fuzz run");
    let corpus = cmd::workspace_root().join("fuzz/corpus/ops");
    let entries = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    let verdict = if result.is_ok() {
        "no failure"
    } else {
        "FAILED"
    };
    println!(
        "fuzz: {verdict} after {} s; corpus {} ({entries} inputs); crashes, if any, in \
         fuzz/artifacts/ops",
        cmd::seconds(start.elapsed()),
        corpus.display()
    );
    Ok(result.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_their_lists_and_the_memcheck_arguments() {
        assert_eq!(
            binary_name(Path::new("/t/debug/deps/fork-0123abcd")),
            "fork"
        );
        assert_eq!(
            binary_name(Path::new("/t/debug/deps/memory_bound-99")),
            "memory_bound"
        );
        let line = r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/deps/x-1","fresh":true}"#;
        assert_eq!(test_executable(line), Some(PathBuf::from("/t/deps/x-1")));
        assert_eq!(test_executable(&line.replace("true}", "false}")), None);
        assert_eq!(
            test_executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(test_executable("Compiling x"), None);
        let supp = Path::new("/s");
        let no = "--leak-check=no".to_owned();
        assert!(memcheck_args("fork", None, supp).contains(&no));
        assert!(
            memcheck_args("pool", Some("fork_while_other_threads_allocate"), supp).contains(&no)
        );
        assert!(!memcheck_args("pool", Some("aligned_requests"), supp).contains(&no));
        let args = memcheck_args("stress", None, supp);
        assert!(args.contains(&"--leak-check=full".to_owned()));
        assert!(args.contains(&"--error-exitcode=99".to_owned()));
        assert!(args.contains(&"--suppressions=/s".to_owned()));
        let listed = "a_ninth_pool: test\nchild_churn: test\nbench_x: bench\n\n";
        assert_eq!(parse_test_list(listed), ["a_ninth_pool", "child_churn"]);
        assert_eq!(ONE_TEST_PER_PROCESS, ["pool"]);
        assert!(cmd::workspace_root().join(SUPPRESSIONS).is_file());
    }
}
