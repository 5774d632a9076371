//! Helpers shared by the integration tests: running one `#[ignore]`d test of the current test
//! binary in a child process, for what must be seen from outside (stderr, an abort, the
//! environment read once per process).

#![allow(dead_code)] // each test binary uses part of it

use std::process::{Command, Output};

/// Runs the ignored test `name` of this test binary alone in a child process, with `env` set
/// (a `None` value removes the variable). `HAKMEM_MODE` is removed unless `env` sets it.
pub fn run_child(name: &str, env: &[(&str, Option<&str>)]) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd.env_remove("HAKMEM_MODE").env("RUST_BACKTRACE", "0");
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.output().expect("run the test binary")
}

/// The signal that ended the child, if any.
pub fn signal(out: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal()
}

/// The child's stderr lines written by hakmem.
pub fn hakmem_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("hakmem: "))
        .map(str::to_owned)
        .collect()
}

/// The value the child printed as `key=value` (libtest may have printed other text before it
/// on the same line).
pub fn child_value(out: &Output, key: &str) -> Option<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tag = format!("{key}=");
    let start = stdout.find(&tag)? + tag.len();
    Some(
        stdout[start..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned(),
    )
}
