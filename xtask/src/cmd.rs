//! Helpers shared by the xtask commands: where the workspace is, which cargo to run, how child
//! processes are started (from the workspace root, with `HAKMEM_MODE` cleared) and how long
//! things took.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable that picks the mode of `Allocator<Runtime>`. Removed from every child's
/// environment unless a step sets it on purpose, so the caller's shell cannot leak into a check.
pub const MODE_VAR: &str = "HAKMEM_MODE";

/// The workspace root: the parent of this crate's manifest directory, fixed at compile time.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the xtask crate lives one level below the workspace root")
}

/// The cargo to run: `$CARGO` (set by `cargo run`, so the same toolchain) or else `cargo`.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The target directory: `$CARGO_TARGET_DIR` (relative to the workspace root, where cargo runs)
/// or else `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// `program args…`, to run from the workspace root with `HAKMEM_MODE` removed from its
/// environment (or set to `mode`).
pub fn command<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    mode: Option<&str>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(workspace_root());
    match mode {
        Some(mode) => cmd.env(MODE_VAR, mode),
        None => cmd.env_remove(MODE_VAR),
    };
    cmd
}

/// `cargo args…` (see [`command`]).
pub fn cargo<S: AsRef<OsStr>>(args: &[S], mode: Option<&str>) -> Command {
    command(cargo_program(), args, mode)
}

/// How `cargo args…` is shown to a person: `[HAKMEM_MODE=m ]cargo args…`.
pub fn show_cargo(args: &[&str], mode: Option<&str>) -> String {
    let prefix = mode.map(|m| format!("{MODE_VAR}={m} ")).unwrap_or_default();
    format!("{prefix}cargo {}", args.join(" "))
}

/// Runs `cmd` with inherited stdio; `Err` describes why it did not succeed.
pub fn run_inherited(cmd: &mut Command, what: &str) -> Result<(), String> {
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{what}: {status}")),
        Err(e) => Err(format!("{what}: could not start: {e}")),
    }
}

/// The first line that `program args…` (`line`, split at spaces) prints on stdout, trimmed;
/// `unknown` if it does not start or fails.
pub fn first_line(line: &str) -> String {
    let mut words = line.split(' ');
    let program = words.next().unwrap_or_default();
    let out = command(program, &words.collect::<Vec<_>>(), None).output();
    let text = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => String::new(),
    };
    let first = text.lines().next().map(str::trim);
    first.unwrap_or("unknown").to_owned()
}

/// Runs `cargo args…` (a build), then copies `built` to `dest` under a temporary name and renames
/// it (a process that has the old file mapped keeps it); how long the build took.
pub fn build_and_copy(args: &[&str], built: &Path, dest: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    run_inherited(&mut cargo(args, None), "cargo build")
        .map_err(|e| format!("{e} ({})", show_cargo(args, None)))?;
    let took = start.elapsed();
    create_dir(dest.parent().expect("a file in a directory"))?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(built, &tmp)
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), dest.display()))?;
    Ok(took)
}

/// Whether `program` can be started at all (it is on `PATH`): tried with `--version`.
pub fn is_installed(program: &str) -> bool {
    match Command::new(program).arg("--version").output() {
        Ok(_) => true,
        Err(e) => e.kind() != ErrorKind::NotFound,
    }
}

/// Builds the release probe binary `name` of `hakmem-benches` and makes `<target>/<out>`;
/// returns the binary's path and that directory. `tool` prefixes the progress line.
pub fn build_probe(tool: &str, name: &str, out: &str) -> Result<(PathBuf, PathBuf), String> {
    let args = ["build", "--release", "-p", "hakmem-benches", "--bin", name];
    println!("{tool}: building the probe: {}", show_cargo(&args, None));
    run_inherited(&mut cargo(&args, None), "cargo build of the probe")?;
    let target = target_dir();
    let bin = target
        .join("release")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        return Err(format!(
            "the probe was built but {} does not exist",
            bin.display()
        ));
    }
    let out_dir = target.join(out);
    create_dir(&out_dir)?;
    Ok((bin, out_dir))
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

/// `create_dir_all`, its error naming the directory.
pub fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `text` to `path`, creating its directory; the error names the file.
pub fn write(path: &Path, text: impl AsRef<[u8]>) -> Result<(), String> {
    create_dir(path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads `path` (lossily as UTF-8); the error names the file.
pub fn read(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// How a child ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Starts `cmd` in its own process group with stdin closed and stdout/stderr written to
/// `<stem>.out` and `<stem>.err`: the child, when it started, and the two paths.
fn spawn_to_files(
    mut cmd: Command,
    stem: &Path,
) -> Result<(std::process::Child, Instant, PathBuf, PathBuf), String> {
    let out_path = stem.with_extension("out");
    let err_path = stem.with_extension("err");
    let create =
        |p: &Path| File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    cmd.stdin(Stdio::null())
        .stdout(create(&out_path)?)
        .stderr(create(&err_path)?)
        .process_group(0);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("could not start {:?}: {e}", cmd.get_program()))?;
    Ok((child, start, out_path, err_path))
}

/// Runs `cmd` in its own process group with stdin closed and stdout/stderr written to
/// `<stem>.out` and `<stem>.err` (files, not pipes: a grandchild that outlives the child cannot
/// block us). Past `timeout`, the whole group is killed and this is an error.
pub fn run_timed(cmd: Command, stem: &Path, timeout: Duration) -> Result<Finished, String> {
    let (mut child, start, out_path, err_path) = spawn_to_files(cmd, stem)?;
    let mut nap = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() >= timeout => {
                // The group is the child's pid: kill everything it started, then reap it.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "killed after {} s (hung?); output in {}",
                    seconds(timeout),
                    out_path.display()
                ));
            }
            Ok(None) => {
                thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    };
    let took = start.elapsed();
    Ok(Finished {
        status,
        stdout: read(&out_path)?,
        stderr: read(&err_path)?,
        took,
    })
}

/// What the kernel accounted to a child that ended (`wait4`): its own figures, not its children's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set (`ru_maxrss`), KiB. It includes the peak of the address space the child
    /// had before its exec: a spawned child starts on a share or a copy of ours.
    pub maxrss_kib: u64,
    /// Minor + major page faults.
    pub faults: u64,
}

/// [`run_timed`], but the child is reaped by `wait4` in a thread of its own, which blocks until
/// it ends (no polling: `took` is its wall time from spawn to exit, to the microsecond), and
/// its resource usage comes back with it.
pub fn run_measured(
    cmd: Command,
    stem: &Path,
    timeout: Duration,
) -> Result<(Finished, Usage), String> {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::mpsc;

    let (child, start, out_path, err_path) = spawn_to_files(cmd, stem)?;
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let mut status = 0;
        // SAFETY: rusage is plain data, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = loop {
            // SAFETY: status and usage are valid for writes; pid is our child, not yet reaped.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if r == pid {
                break Ok((status, usage, Instant::now()));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                break Err(format!("wait4 failed: {e}"));
            }
        };
        let _ = tx.send(reaped);
    });
    let reaped = match rx.recv_timeout(timeout) {
        Ok(reaped) => reaped,
        Err(_) => {
            // The group is the child's pid: kill everything it started; the waiter reaps it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let _ = waiter.join();
            return Err(format!(
                "killed after {} s (hung?); output in {}",
                seconds(timeout),
                out_path.display()
            ));
        }
    };
    let _ = waiter.join();
    drop(child);
    let (status, usage, end) = reaped?;
    let usage = Usage {
        maxrss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        faults: u64::try_from(usage.ru_minflt + usage.ru_majflt).unwrap_or(0),
    };
    let finished = Finished {
        status: ExitStatus::from_raw(status),
        stdout: read(&out_path)?,
        stderr: read(&err_path)?,
        took: end - start,
    };
    Ok((finished, usage))
}

/// Seconds with one decimal, e.g. `12.3`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// `doc` with the text between `<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME
/// -->` (each on a line of its own) replaced by `body`: a generator rewrites its block and leaves
/// the prose around it alone.
pub fn splice(doc: &str, name: &str, body: &str) -> Result<String, String> {
    let begin = format!("<!-- BEGIN generated: {name} -->\n");
    let end = format!("<!-- END generated: {name} -->");
    let missing = |marker: &str| format!("the document has no `{}` marker", marker.trim());
    let start = doc.find(&begin).ok_or_else(|| missing(&begin))? + begin.len();
    let stop = start + doc[start..].find(&end).ok_or_else(|| missing(&end))?;
    Ok(format!("{}{body}{}", &doc[..start], &doc[stop..]))
}

/// A contender's name as a file-name part: `runtime (HAKMEM_MODE=fast)` → `runtime-fast`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for word in name
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty() && *w != "HAKMEM_MODE")
    {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_run_from_the_root_without_the_mode() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
        let shown = show_cargo(&["fmt", "--all", "--check"], None);
        assert_eq!(shown, "cargo fmt --all --check");
        let shown = show_cargo(&["test", "-p", "hakmem"], Some("fast"));
        assert_eq!(shown, "HAKMEM_MODE=fast cargo test -p hakmem");
        let cmd = cargo(&["test"], None);
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(envs, [(OsStr::new(MODE_VAR), None)]);
        let cmd = cargo(&["test"], Some("research"));
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(envs, [(OsStr::new(MODE_VAR), Some(OsStr::new("research")))]);
    }

    const STDERR: &str = "==4176== Callgrind, a call-graph generating cache profiler\n\
        ==4176== Command: ./target/release/large grow minimal 2 4 --no-touch\n\
        ==4176== \n\
        ==4176== Events    : Ir\n\
        ==4176== Collected : 441048\n\
        ==4176== \n\
        ==4176== I   refs:      441,048\n";

    #[test]
    fn parsing_splicing_and_seconds() {
        assert_eq!(parse_collected(STDERR), Some(441_048));
        assert_eq!(parse_collected("Collected : 12"), Some(12));
        let grouped = parse_collected("==1== Collected : 1,234,567");
        assert_eq!(grouped, Some(1_234_567));
        for none in [
            "==1== Events    : Ir\n==1== I   refs: 5",
            "==1== Collected : lots",
            "",
        ] {
            assert_eq!(parse_collected(none), None, "{none}");
        }
        let doc = "prose\n<!-- BEGIN generated: t -->\nold\n<!-- END generated: t -->\nmore\n";
        assert_eq!(
            splice(doc, "t", "new\n").unwrap(),
            "prose\n<!-- BEGIN generated: t -->\nnew\n<!-- END generated: t -->\nmore\n"
        );
        assert!(splice(doc, "u", "x")
            .unwrap_err()
            .contains("BEGIN generated: u"));
        let open = "<!-- BEGIN generated: t -->\nold\n";
        assert!(splice(open, "t", "x")
            .unwrap_err()
            .contains("END generated: t"));
        assert_eq!(seconds(Duration::from_millis(12_345)), "12.3");
        assert_eq!(seconds(Duration::ZERO), "0.0");
    }

    #[test]
    fn a_measured_child_reports_its_time_status_and_peak_rss() {
        use std::os::unix::process::ExitStatusExt;
        let dir = std::env::temp_dir().join(format!("xtask-measured-{}", std::process::id()));
        create_dir(&dir).unwrap();
        let stem = dir.join("run");
        let sh = |script: &str| {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        };
        let long = Duration::from_secs(30);
        // python3 holding 64 MiB: its peak RSS is at least that (the shell's children are not).
        let grow = "import time; b = bytearray(64 << 20); time.sleep(0.1); print(len(b))";
        let mut c = Command::new("python3");
        c.args(["-c", grow]);
        let (f, usage) = run_measured(c, &stem, long).unwrap();
        assert!(f.status.success() && f.stdout == "67108864\n", "{f:?}");
        assert!(usage.maxrss_kib >= 64 << 10, "{usage:?}");
        assert!(usage.faults > 1000, "{usage:?}");
        assert!(f.took >= Duration::from_millis(100), "{:?}", f.took);
        let (f, _) = run_measured(sh("echo oops >&2; exit 3"), &stem, long).unwrap();
        assert_eq!((f.status.code(), f.stderr.as_str()), (Some(3), "oops\n"));
        let (f, _) = run_measured(sh("kill -SEGV $$"), &stem, long).unwrap();
        assert_eq!(f.status.signal(), Some(libc::SIGSEGV));
        // A hung child and its group are killed at the timeout.
        let started = Instant::now();
        let err = run_measured(sh("sleep 30 & sleep 30"), &stem, Duration::from_millis(200));
        assert!(err.unwrap_err().starts_with("killed after 0.2 s"));
        assert!(started.elapsed() < Duration::from_secs(10));
        let err = run_measured(Command::new("/nonexistent/x"), &stem, long).unwrap_err();
        assert!(err.starts_with("could not start"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
