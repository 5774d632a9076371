//! The real-program row of the matrix (`--real`, `--real-only`; docs/benchmarks.md): python3
//! round-tripping a large JSON document, its whole-process wall time under each contender's
//! preload library (glibc: none; mimalloc and jemalloc: Debian's, when installed, so their
//! columns say `(Debian)`), interleaved and shuffled as in the rest of the matrix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::report::{csv_field, fmt_kib, fmt_ratio, md_table};
use super::run::schedule;
use super::stats::{median, min_max, ratio};
use super::{Contender, Options};
use crate::{cmd, preload};

/// The workload's records at full size (`--scale F` multiplies it).
pub const RECORDS: usize = 20_000;

/// A run that takes longer is killed and counted as failed.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Where Debian's preload libraries are looked for, and their file names.
const LIB_DIRS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
];

/// The Debian library (and its package) of a peer contender.
fn peer_library(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "mimalloc" => Some(("libmimalloc.so.2", "libmimalloc2.0")),
        "jemalloc" => Some(("libjemalloc.so.2", "libjemalloc2")),
        _ => None,
    }
}

/// The first of `dirs` that holds `file`.
pub fn find_library(dirs: &[&str], file: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| Path::new(d).join(file))
        .find(|p| p.is_file())
}

/// How one column of the row runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (`mimalloc (Debian)` for a Debian library), `LD_PRELOAD` and `HAKMEM_MODE`.
    pub run: preload::Contender,
    /// What the workload's `allocator:` line must say (`None`: not checked).
    pub allocator: Option<String>,
    /// Why it is not run (a peer library that is not installed).
    pub missing: Option<String>,
}

/// The row's columns for the selected contenders, in their order. `library` gives the path of a
/// hakmem preload library for a mode (built, or expected to exist with `--no-build`).
pub fn columns(
    contenders: &[&'static Contender],
    library: &dyn Fn(&str) -> PathBuf,
) -> Vec<Column> {
    contenders
        .iter()
        .map(|c| {
            let mut col = Column {
                run: preload::Contender {
                    hakmem_mode: c.mode,
                    ..preload::Contender::glibc()
                },
                allocator: None,
                missing: None,
            };
            col.run.name = c.name.to_owned();
            if let Some((file, package)) = peer_library(c.name) {
                col.run.name = format!("{} (Debian)", c.name);
                match find_library(&LIB_DIRS, file) {
                    Some(path) => col.run.library = Some(path),
                    None => {
                        col.missing = Some(format!("{file} not found (apt-get install {package})"))
                    }
                }
            } else if c.name == "glibc" {
                col.allocator = Some("not hakmem".to_owned());
            } else {
                col.run.library = Some(library(c.bin));
                let mode = c.mode.or(c.compiled).unwrap_or(c.name);
                col.allocator = Some(format!("hakmem {mode}"));
            }
            col
        })
        .collect()
}

/// The hakmem preload libraries the selected contenders need (one per compiled mode, and the
/// runtime library for the twins), built unless `opts.build` is off (then they must exist), and
/// the columns that run them.
pub fn prepare_columns(opts: &Options) -> Result<Vec<Column>, String> {
    let modes: Vec<&str> = (super::binaries_for(&opts.contenders).into_iter())
        .filter(|b| b.feature.is_some_and(|f| f.starts_with("hakmem-")))
        .map(|b| b.name)
        .collect();
    if opts.build {
        preload::build_all(&modes)?;
    } else if let Some(m) = modes.iter().find(|m| !preload::library_path(m).is_file()) {
        return Err(format!(
            "--no-build: {} does not exist; run `cargo xtask preload` or drop --no-build",
            preload::library_path(m).display()
        ));
    }
    Ok(columns(&opts.contenders, &preload::library_path))
}

/// One run's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RealSample {
    pub secs: f64,
    pub faults: u64,
    pub maxrss_kib: u64,
}

/// Parses the workload's `records=N faults=F maxrss_kib=K` line (the last line of stdout).
pub fn parse_stats(stdout: &str) -> Result<(u64, u64), String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("records="))
        .ok_or("no `records=… faults=… maxrss_kib=…` line")?;
    let mut faults = None;
    let mut rss = None;
    for field in line.split_whitespace() {
        let (k, v) = field
            .split_once('=')
            .ok_or(format!("bad field `{field}`"))?;
        let n = v
            .parse::<u64>()
            .map_err(|_| format!("`{field}` is not a number"))?;
        match k {
            "faults" => faults = Some(n),
            "maxrss_kib" => rss = Some(n),
            _ => {}
        }
    }
    match (faults, rss) {
        (Some(f), Some(r)) => Ok((f, r)),
        _ => Err(format!("incomplete stats line `{line}`")),
    }
}

/// One column's runs, summarized.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub column: Column,
    pub samples: Vec<RealSample>,
    pub failures: Vec<String>,
}

impl Summary {
    fn secs(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.secs).collect()
    }

    pub fn median(&self) -> Option<f64> {
        median(&self.secs())
    }

    fn faults(&self) -> Option<f64> {
        median(
            &self
                .samples
                .iter()
                .map(|x| x.faults as f64)
                .collect::<Vec<_>>(),
        )
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        self.samples.iter().map(|x| x.maxrss_kib).max()
    }
}

/// The records of a run at `scale`.
pub fn records(scale: Option<f64>) -> usize {
    match scale {
        Some(f) => ((RECORDS as f64 * f).round() as usize).max(500),
        None => RECORDS,
    }
}

/// Runs the row: builds what it needs (unless `opts.build` is off), runs every repetition
/// interleaved, and returns the summaries.
pub fn run(opts: &Options, out: &Path) -> Result<Vec<Summary>, String> {
    let python = preload::python()?;
    let script = preload::tests_dir().join("json_roundtrip.py");
    let columns = prepare_columns(opts)?;
    let records = records(opts.scale).to_string();
    let runs_dir = out.join("real-runs");
    cmd::create_dir(&runs_dir)?;
    let mut summaries: Vec<Summary> = columns
        .iter()
        .map(|c| Summary {
            column: c.clone(),
            samples: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    let runnable: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].missing.is_none())
        .collect();
    let slots = schedule(opts.reps, 1, runnable.len());
    let total = slots.len();
    println!();
    println!(
        "real: python3 {} --records {records} (PYTHONMALLOC=malloc), {} contenders × {} \
         repetitions",
        script.display(),
        runnable.len(),
        opts.reps
    );
    for (i, slot) in slots.iter().enumerate() {
        let k = runnable[slot.contender];
        let col = &columns[k];
        print!(
            "[{:>w$}/{total}] python-json × {} (rep {}/{}) … ",
            i + 1,
            col.run.name,
            slot.rep + 1,
            opts.reps,
            w = total.to_string().len()
        );
        let mut command = col.run.command(
            &python,
            &[
                script.as_os_str(),
                "--records".as_ref(),
                records.as_ref(),
                "--stats".as_ref(),
            ],
        );
        command.envs(preload::PYTHON_ENV);
        let stem = runs_dir.join(format!("{}-{}", cmd::slug(&col.run.name), slot.rep + 1));
        let result = cmd::run_timed(command, &stem, TIMEOUT).and_then(|f| {
            preload::judge(&f, None, col.allocator.as_deref())?;
            let (faults, maxrss_kib) = parse_stats(&f.stdout)?;
            Ok(RealSample {
                secs: f.took.as_secs_f64(),
                faults,
                maxrss_kib,
            })
        });
        match result {
            Ok(s) => {
                println!("{:.3} s", s.secs);
                summaries[k].samples.push(s);
            }
            Err(e) => {
                println!("FAILED: {e}");
                summaries[k].failures.push(e);
            }
        }
    }
    Ok(summaries)
}

fn median_of(summaries: &[Summary], name: &str) -> Option<f64> {
    summaries
        .iter()
        .find(|s| s.column.run.name == name)
        .and_then(Summary::median)
}

/// `real.csv`: one row per column.
pub fn csv(summaries: &[Summary]) -> String {
    let glibc = median_of(summaries, "glibc");
    let mimalloc = median_of(summaries, "mimalloc (Debian)");
    let mut out = String::from(
        "allocator,library,reps,median_s,min_s,max_s,vs_glibc,vs_mimalloc_debian,faults,\
         peak_rss_kib,failures,not_run\n",
    );
    let num = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_default();
    for s in summaries {
        let spread = min_max(&s.secs());
        let library = s.column.run.library.as_ref();
        let row = [
            csv_field(&s.column.run.name),
            csv_field(&library.map(|p| p.display().to_string()).unwrap_or_default()),
            s.samples.len().to_string(),
            num(s.median(), 4),
            num(spread.map(|x| x.0), 4),
            num(spread.map(|x| x.1), 4),
            num(ratio(s.median(), glibc), 4),
            num(ratio(s.median(), mimalloc), 4),
            num(s.faults(), 0),
            s.peak_rss_kib().map(|k| k.to_string()).unwrap_or_default(),
            s.failures.len().to_string(),
            csv_field(s.column.missing.as_deref().unwrap_or("")),
        ];
        out += &row.join(",");
        out.push('\n');
    }
    out
}

/// The markdown section.
pub fn markdown(summaries: &[Summary], reps: u32, records: usize) -> String {
    let glibc = median_of(summaries, "glibc");
    let mimalloc = median_of(summaries, "mimalloc (Debian)");
    let mut md = String::from("## Real program: python3 JSON round trip (`--real`)\n\n");
    let header = "allocator|median s|min–max s|vs glibc|vs mimalloc (Debian)|page faults|peak RSS";
    let header: Vec<String> = header.split('|').map(String::from).collect();
    let mut rows = Vec::new();
    for s in summaries.iter().filter(|s| s.column.missing.is_none()) {
        let failed = match s.failures.len() {
            0 => String::new(),
            n => format!(" ({n} failed)"),
        };
        rows.push(vec![
            s.column.run.name.clone(),
            s.median()
                .map_or("—".to_owned(), |m| format!("{m:.3}{failed}")),
            min_max(&s.secs()).map_or("—".to_owned(), |(lo, hi)| format!("{lo:.3}–{hi:.3}")),
            ratio(s.median(), glibc).map_or("—".to_owned(), fmt_ratio),
            ratio(s.median(), mimalloc).map_or("—".to_owned(), fmt_ratio),
            s.faults().map_or("—".to_owned(), |f| format!("{f:.0}")),
            s.peak_rss_kib().map_or("—".to_owned(), fmt_kib),
        ]);
    }
    md += &md_table(&header, &[false, true, true, true, true, true, true], &rows);
    md += &format!(
        "\nWhole-process wall time of `python3 crates/hakmem-preload/tests/json_roundtrip.py \
         --records {records}` with `PYTHONMALLOC=malloc` (every Python object through `malloc`), \
         median over {reps} interleaved repetition{}; hakmem through `LD_PRELOAD` of its preload \
         library (`cargo xtask preload`), mimalloc and jemalloc through Debian's preload \
         libraries (other builds than the crates of the tables above). Page faults and peak RSS \
         are the workload's own `getrusage`.\n",
        if reps == 1 { "" } else { "s" }
    );
    for s in summaries {
        if let Some(why) = &s.column.missing {
            md += &format!("\n{}: not run — {why}.\n", s.column.run.name);
        }
    }
    md
}

/// Whether every run of the row succeeded (a peer that is not installed is not a failure).
pub fn all_ok(summaries: &[Summary]) -> bool {
    summaries.iter().all(|s| s.failures.is_empty())
}

/// `cargo xtask bench-matrix --real-only`: the row alone, written to `real.csv` and `real.md`
/// in the output directory.
pub fn run_only(opts: &Options, command_line: &str) -> Result<bool, super::Error> {
    let out = opts.out_dir();
    cmd::create_dir(&out).map_err(super::Error::Failed)?;
    let summaries = run(opts, &out).map_err(super::Error::Failed)?;
    let machine = super::build::Machine::describe();
    let mut md = String::from("# hakmem: the real-program row\n\n");
    md += &(machine.markdown(command_line) + "\n");
    md += &markdown(&summaries, opts.reps, records(opts.scale));
    cmd::write(&out.join("real.csv"), csv(&summaries)).map_err(super::Error::Failed)?;
    cmd::write(&out.join("real.md"), &md).map_err(super::Error::Failed)?;
    print!("\n{md}");
    Ok(all_ok(&summaries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::contender;

    #[test]
    fn columns_stats_and_the_section_compared_with_glibc_and_mimalloc() {
        let picked =
            ["fast", "runtime-learning", "glibc", "mimalloc"].map(|n| contender(n).unwrap());
        let cols = columns(&picked, &|m| PathBuf::from(format!("/lib/{m}.so")));
        assert_eq!(cols[0].run.library, Some(PathBuf::from("/lib/fast.so")));
        assert_eq!(cols[0].allocator.as_deref(), Some("hakmem fast"));
        assert_eq!(cols[1].run.library, Some(PathBuf::from("/lib/runtime.so")));
        assert_eq!(cols[1].run.hakmem_mode, Some("learning"));
        assert_eq!(cols[1].allocator.as_deref(), Some("hakmem learning"));
        assert_eq!(
            (cols[2].run.library.clone(), cols[2].allocator.as_deref()),
            (None, Some("not hakmem"))
        );
        assert_eq!(cols[3].run.name, "mimalloc (Debian)");
        assert!(cols[3].run.library.is_some() != cols[3].missing.is_some());
        assert!(find_library(&["/nonexistent"], "libmimalloc.so.2").is_none());
        assert_eq!(
            parse_stats("records 5\nsummary {}\nrecords=5 faults=123 maxrss_kib=4567\n"),
            Ok((123, 4567))
        );
        assert!(parse_stats("records 5\n").is_err());
        assert!(parse_stats("records=5 faults=x maxrss_kib=1\n").is_err());
        assert!(parse_stats("records=5 maxrss_kib=1\n").is_err());
        assert_eq!(records(None), RECORDS);
        assert_eq!(records(Some(0.5)), RECORDS / 2);
        assert_eq!(records(Some(0.0001)), 500);
        // A column's name, why it was not run, its runs' seconds and failures.
        let summary = |name: &str, missing: Option<&str>, secs: &[f64], failures: &[&str]| {
            let run = preload::Contender {
                name: name.to_owned(),
                ..preload::Contender::glibc()
            };
            let missing = missing.map(str::to_owned);
            let column = Column {
                run,
                allocator: None,
                missing,
            };
            let sample = |&secs| RealSample {
                secs,
                faults: 10,
                maxrss_kib: 2048,
            };
            let samples = secs.iter().map(sample).collect();
            let failures = failures.iter().map(|f| f.to_string()).collect();
            Summary {
                column,
                samples,
                failures,
            }
        };
        let summaries = [
            summary("fast", None, &[1.0, 1.2, 0.9], &[]),
            summary("glibc", None, &[2.0], &["boom"]),
            summary("mimalloc (Debian)", None, &[0.5], &[]),
            summary(
                "jemalloc (Debian)",
                Some("libjemalloc.so.2 not found"),
                &[],
                &[],
            ),
        ];
        let md = markdown(&summaries, 3, 1000);
        let fast = md.lines().find(|l| l.starts_with("| fast ")).unwrap();
        assert!(
            fast.contains(" 1.000 |") && fast.contains(" 0.900–1.200 |"),
            "{md}"
        );
        assert!(md.contains("0.50×") && md.contains("2.00×"), "{md}");
        assert!(md.contains("2.000 (1 failed)"), "{md}");
        assert!(md.contains("jemalloc (Debian): not run — libjemalloc.so.2 not found."));
        let csv = csv(&summaries);
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("fast,,3,1.0000,0.9000,1.2000,0.5000,2.0000,10,2048,0,"));
        assert!(!all_ok(&summaries));
        let python = preload::python().unwrap();
        let out = std::process::Command::new(python)
            .arg(preload::tests_dir().join("json_roundtrip.py"))
            .args(["--records", "300", "--stats"])
            .envs(preload::PYTHON_ENV)
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (faults, rss) = parse_stats(&stdout).unwrap();
        assert!(faults > 0 && rss > 1000, "{stdout}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("allocator: not hakmem"));
    }
}
