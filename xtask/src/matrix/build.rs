//! Building the `bench` binaries (one `cargo build` per allocator, each copied out of
//! `<target>/release` before the next build overwrites it) and describing the machine the
//! matrix ran on (date, CPU, cores, rustc, glibc) for the reports.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{bin_path, Binary};
use crate::cmd;

/// `cargo build` arguments for `bin` (`--no-default-features` alone for glibc).
pub fn cargo_args(bin: &Binary) -> Vec<&'static str> {
    let mut args = vec![
        "build",
        "--quiet",
        "--release",
        "-p",
        "hakmem-benches",
        "--bin",
        "bench",
        "--no-default-features",
    ];
    if let Some(feature) = bin.feature {
        args.extend(["--features", feature]);
    }
    args
}

/// Says, before the first build, what the builds are and that jemalloc's C build is slow once.
pub fn note_before_builds(needed: &[&Binary]) {
    let names: Vec<&str> = needed.iter().map(|b| b.name).collect();
    println!(
        "build: {} bench binaries ({}); cargo rebuilds only what changed",
        needed.len(),
        names.join(", ")
    );
    if needed.iter().any(|b| b.name == "jemalloc") {
        println!("build: note: jemalloc's C build takes ~80 s the first time");
    }
}

/// Builds `bin` (the `n`-th of `total`), copies it into `bin_dir`, prints one progress line and
/// returns how long the build took.
pub fn build(bin: &Binary, n: usize, total: usize, bin_dir: &Path) -> Result<Duration, String> {
    let feature = bin.feature.unwrap_or("no feature: glibc");
    print!("build [{n}/{total}] bench-{} ({feature}) … ", bin.name);
    let _ = std::io::stdout().flush();
    let built = cmd::target_dir().join("release");
    let built = built.join(format!("bench{}", std::env::consts::EXE_SUFFIX));
    let took = cmd::build_and_copy(&cargo_args(bin), &built, &bin_path(bin_dir, bin.name))?;
    println!("{} s", cmd::seconds(took));
    Ok(took)
}

/// What the reports say about the machine and the toolchain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `date -u +%FT%TZ`.
    pub date: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    pub cores: usize,
    /// `rustc -V`.
    pub rustc: String,
    /// The first line of `ldd --version`.
    pub glibc: String,
}

impl Machine {
    /// The report's first lines: `- date: …`, `- machine: …` and `- command: …`.
    pub fn markdown(&self, command: &str) -> String {
        let m = self;
        format!(
            "- date: {}\n- machine: {}, {} cores; {}; glibc: {}\n- command: `{command}`\n",
            m.date, m.cpu, m.cores, m.rustc, m.glibc
        )
    }

    /// Asks the system; what cannot be found reads `unknown`.
    pub fn describe() -> Machine {
        Machine {
            date: cmd::first_line("date -u +%FT%TZ"),
            cpu: cpu(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            rustc: cmd::first_line("rustc -V"),
            glibc: cmd::first_line("ldd --version"),
        }
    }
}

/// This machine's CPU model, or `unknown`.
pub fn cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into())
}

/// The first `model name` (x86) or `Model`/`CPU part` line's value of a /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "cpu model"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::binary;

    #[test]
    fn glibc_is_built_without_features_and_the_cpu_model_is_read() {
        let args = cargo_args(binary("glibc").unwrap());
        assert!(args.ends_with(&["--bin", "bench", "--no-default-features"]));
        let args = cargo_args(binary("fast").unwrap());
        assert!(args.ends_with(&["--no-default-features", "--features", "hakmem-fast"]));
        assert!(args.contains(&"--release"));
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }
}
