//! `cargo xtask bench-matrix` (docs/benchmarks.md): one `bench` binary per allocator, every
//! repetition of every cell in a fresh process, interleaved and shuffled so that host drift hits
//! all contenders alike; a cell's figure is the median over its repetitions, min–max its spread.
//! Then, the same way, the C programs of `benches/c/` under each contender's `LD_PRELOAD`
//! library ([`cprog`]), and with `--real` a python3 workload ([`real`]).

pub mod build;
pub mod compare;
pub mod cprog;
pub mod options;
pub mod real;
pub mod report;
pub mod run;
pub mod stats;
pub mod svg;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd;

pub use options::{CSection, Options, RealRow};

/// A `bench` binary: `bench-NAME`, built with `--features FEATURE` (none: glibc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary {
    pub name: &'static str,
    pub feature: Option<&'static str>,
}

/// Every binary the matrix can build, in build order.
pub const BINARIES: [Binary; 9] = [
    bin("minimal", Some("hakmem-minimal")),
    bin("fast", Some("hakmem-fast")),
    bin("balanced", Some("hakmem-balanced")),
    bin("learning", Some("hakmem-learning")),
    bin("research", Some("hakmem-research")),
    bin("runtime", Some("hakmem-runtime")),
    bin("glibc", None),
    bin("mimalloc", Some("mimalloc")),
    bin("jemalloc", Some("jemalloc")),
];

const fn bin(name: &'static str, feature: Option<&'static str>) -> Binary {
    Binary { name, feature }
}

/// One column of the matrix: a binary, and for a runtime twin the `HAKMEM_MODE` it runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contender {
    pub name: &'static str,
    /// The [`Binary`] it runs.
    pub bin: &'static str,
    /// `HAKMEM_MODE` (runtime twins only; every other run has it removed).
    pub mode: Option<&'static str>,
    /// For a runtime twin: the compiled contender it is compared with.
    pub compiled: Option<&'static str>,
}

impl Contender {
    pub fn is_runtime(&self) -> bool {
        self.mode.is_some()
    }
}

const fn own(name: &'static str) -> Contender {
    Contender {
        name,
        bin: name,
        mode: None,
        compiled: None,
    }
}

const fn twin(name: &'static str, mode: &'static str) -> Contender {
    Contender {
        name,
        bin: "runtime",
        mode: Some(mode),
        compiled: Some(mode),
    }
}

/// The contenders, in report order.
pub const CONTENDERS: [Contender; 13] = [
    own("minimal"),
    own("fast"),
    own("balanced"),
    own("learning"),
    own("research"),
    twin("runtime-minimal", "minimal"),
    twin("runtime-fast", "fast"),
    twin("runtime-balanced", "balanced"),
    twin("runtime-learning", "learning"),
    twin("runtime-research", "research"),
    own("glibc"),
    own("mimalloc"),
    own("jemalloc"),
];

/// The contender every cell's ratio is taken against.
pub const BASELINE: &str = "mimalloc";

/// The contender called `name`.
#[cfg(test)]
pub fn contender(name: &str) -> Option<&'static Contender> {
    CONTENDERS.iter().find(|c| c.name == name)
}

/// The binary called `name`.
#[cfg(test)]
pub fn binary(name: &str) -> Option<&'static Binary> {
    BINARIES.iter().find(|b| b.name == name)
}

/// The binaries `contenders` need, in build order.
pub fn binaries_for(contenders: &[&Contender]) -> Vec<&'static Binary> {
    BINARIES
        .iter()
        .filter(|b| contenders.iter().any(|c| c.bin == b.name))
        .collect()
}

/// Where the binaries are copied: `<target>/bench-matrix/bin`.
pub fn bin_dir() -> PathBuf {
    cmd::target_dir().join("bench-matrix").join("bin")
}

/// The path of `bench-NAME` in `dir`.
pub fn bin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("bench-{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Why `cargo xtask bench-matrix` stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad command line (an unknown scenario is only known once a binary lists them): exit 2.
    Usage(String),
    /// Something else (a binary missing with `--no-build`, an output not writable): exit 1.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) | Error::Failed(m) => f.write_str(m),
        }
    }
}

/// Builds what is needed, runs the matrix and writes the reports. `Ok(true)` if every build and
/// every run succeeded; `Ok(false)` if some failed (they are reported, and the rest still ran).
/// `command_line` is recorded in the reports.
pub fn run(opts: &Options, command_line: &str) -> Result<bool, Error> {
    run_in(opts, &bin_dir(), command_line)
}

/// [`run`] with the binaries in `bins`.
pub fn run_in(opts: &Options, bins: &Path, command_line: &str) -> Result<bool, Error> {
    if opts.real == RealRow::Only {
        return real::run_only(opts, command_line);
    }
    if opts.c == CSection::Only {
        return cprog::run_only(opts, command_line);
    }
    let started = Instant::now();
    let needed = binaries_for(&opts.contenders);
    let out = opts.out_dir();

    // The first binary's `--list` says which scenarios exist; it is read right after that
    // binary is built, so that a bad `--scenarios` is refused before the rest are built.
    let mut build_failures: Vec<(&str, String)> = Vec::new();
    let mut build_secs = 0.0;
    if opts.build {
        build::note_before_builds(&needed);
    }
    let mut scenarios: Option<Vec<run::ScenarioInfo>> = None;
    let mut list_error = None;
    for (i, b) in needed.iter().enumerate() {
        let path = bin_path(bins, b.name);
        if opts.build {
            match build::build(b, i + 1, needed.len(), bins) {
                Ok(took) => build_secs += took.as_secs_f64(),
                Err(e) => {
                    println!("FAILED: {e}");
                    build_failures.push((b.name, e));
                    continue;
                }
            }
        } else if !path.is_file() {
            return Err(Error::Failed(format!(
                "--no-build: {} does not exist; run without --no-build to build it",
                path.display()
            )));
        }
        if scenarios.is_none() {
            match run::list_scenarios(&path) {
                Ok(list) => {
                    let chosen = options::select_scenarios(&list, opts.scenarios.as_deref())
                        .map_err(Error::Usage)?;
                    scenarios = Some(chosen);
                }
                Err(e) => list_error = Some(format!("bench-{} --list: {e}", b.name)),
            }
        }
    }
    if opts.build {
        println!(
            "build: {} binaries in {build_secs:.1} s ({} failed)",
            needed.len(),
            build_failures.len()
        );
    }
    let Some(scenarios) = scenarios else {
        return Err(Error::Failed(format!(
            "no binary could list the scenarios{}",
            list_error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    };

    let broken: Vec<&str> = build_failures.iter().map(|(b, _)| *b).collect();
    let plan = run::Plan {
        reps: opts.reps,
        scale: opts.scale,
        scenarios,
        contenders: opts.contenders.clone(),
    };
    let run_started = Instant::now();
    let samples = run::run_all(&plan, bins, &broken);
    let run_secs = run_started.elapsed().as_secs_f64();

    let cells = stats::summarize(&plan, &samples);
    let meta = report::Meta {
        machine: build::Machine::describe(),
        reps: opts.reps,
        scale: opts.scale,
        command: command_line.to_owned(),
        build_secs,
        run_secs,
    };
    cmd::create_dir(&out).map_err(Error::Failed)?;
    let mut md = report::markdown(&meta, &plan, &cells);
    // The C programs (unless `--no-c`): after the scenarios, in the same report.
    let mut c_ok = true;
    let mut c_section = None;
    if opts.c == CSection::With {
        match cprog::run(opts, &out) {
            Ok(section) => {
                md += "\n";
                md += &cprog::markdown(&section);
                cmd::write(&out.join("c.csv"), cprog::csv(&section)).map_err(Error::Failed)?;
                c_ok = section.all_ok();
                c_section = Some(section);
            }
            Err(e) => {
                println!("bench-matrix: the C programs section FAILED: {e}");
                md += &format!("\n## C programs under LD_PRELOAD\n\nFAILED: {e}\n");
                c_ok = false;
            }
        }
    }
    // The real-program row (`--real`): after the scenarios, in the same report.
    let mut real_ok = true;
    if opts.real == RealRow::With {
        match real::run(opts, &out) {
            Ok(summaries) => {
                md += "\n";
                md += &real::markdown(&summaries, opts.reps, real::records(opts.scale));
                cmd::write(&out.join("real.csv"), real::csv(&summaries)).map_err(Error::Failed)?;
                real_ok = real::all_ok(&summaries);
            }
            Err(e) => {
                println!("bench-matrix: the real-program row FAILED: {e}");
                real_ok = false;
            }
        }
    }
    let groups = c_section.as_ref().and_then(cprog::bars);
    let chart = svg::chart(&plan, &cells, groups.as_ref()).map_err(Error::Failed)?;
    let c_json = c_section.as_ref().map(cprog::json);
    let files = [
        ("results.csv", report::csv(&cells)),
        ("samples.csv", report::samples_csv(&plan, &samples)),
        (
            "results.json",
            report::json(&meta, &plan, &cells, &samples, c_json),
        ),
        ("report.md", md.clone()),
        ("matrix.svg", chart),
    ];
    for (name, text) in &files {
        cmd::write(&out.join(name), text).map_err(Error::Failed)?;
    }

    print!("\n{md}\n");
    let failed_runs: usize = cells.iter().map(|c| c.failures.len()).sum();
    for (b, e) in &build_failures {
        println!("bench-matrix: build of bench-{b} FAILED: {e}");
    }
    for c in cells.iter().filter(|c| !c.failures.is_empty()) {
        let (n, first) = (c.failures.len(), &c.failures[0]);
        let cell = format!("{} × {}", c.scenario, c.contender.name);
        println!("bench-matrix: {cell}: {n} failed run(s): {first}");
    }
    if let Some(section) = &c_section {
        cprog::print_failures(section);
        println!(
            "bench-matrix: the C programs: {} runs in {:.1} s",
            section.runs(),
            section.seconds
        );
    }
    println!(
        "bench-matrix: {} runs ({failed_runs} failed) in {run_secs:.1} s, builds \
         {build_secs:.1} s, total {:.1} s; wrote {} (results.csv, samples.csv, results.json, \
         report.md, matrix.svg{})",
        plan.runs(),
        started.elapsed().as_secs_f64(),
        out.display(),
        if c_section.is_some() { ", c.csv" } else { "" }
    );
    Ok(build_failures.is_empty() && failed_runs == 0 && c_ok && real_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contender_runs_a_known_binary() {
        for c in CONTENDERS {
            assert!(binary(c.bin).is_some(), "{}", c.name);
            if let Some(compiled) = c.compiled {
                assert!(contender(compiled).is_some_and(|k| !k.is_runtime()));
                assert_eq!(c.name, format!("runtime-{compiled}"));
            }
        }
        assert!(contender(BASELINE).is_some());
    }

    /// A fake `bench` for every binary: `vm` and `tiny` work (`bench-jemalloc tiny` fails), the
    /// runtime twin reports its `HAKMEM_MODE`.
    fn fake_bins(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for b in BINARIES {
            let name = if b.name == "runtime" {
                "runtime-$HAKMEM_MODE".to_owned()
            } else {
                b.name.to_owned()
            };
            let fail = if b.name == "jemalloc" {
                "[ \"$1\" = tiny ] && { echo 'bench: fake crash' >&2; exit 134; }\n"
            } else {
                ""
            };
            run::write_script(
                &bin_path(dir, b.name),
                &format!(
                    "if [ \"$1\" = --list ]; then printf 'vm\\t2 MiB\\ntiny\\t32 B\\n'; exit 0; fi\n\
                     {fail}\
                     echo \"allocator={name} scenario=$1 ops=100 ns=${{#3}}000 faults=3 maxrss_kib=900 threads=1\"\n"
                ),
            );
        }
    }

    #[test]
    fn only_needed_binaries_are_built_and_the_whole_matrix_runs_against_fake_benches() {
        let dir = std::env::temp_dir().join(format!("xtask-matrix-{}", std::process::id()));
        let bins = dir.join("bin");
        fake_bins(&bins);
        let out = dir.join("out");
        let opts = Options {
            reps: 2,
            scale: Some(0.5),
            build: false,
            out: Some(out.clone()),
            c: CSection::Off,
            ..Options::default()
        };
        // bench-jemalloc fails in tiny: reported, the rest still runs, the result is `false`.
        assert_eq!(
            run_in(&opts, &bins, "cargo xtask bench-matrix --no-build"),
            Ok(false)
        );
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * 13);
        // `--scale 0.5` reached the bench: `${#3}` is its length, 3 → 3000 ns / 100 ops.
        assert!(
            csv.contains("\nvm,runtime-fast,2,30.000,30.000,30.000,0.030000,900,1.0000,1.0000,0\n")
        );
        assert!(csv.contains("\ntiny,jemalloc,0,,,,,,,,2\n"));
        let json = std::fs::read_to_string(out.join("results.json")).unwrap();
        assert!(
            json.contains("\"allocator\": \"runtime-learning\""),
            "HAKMEM_MODE reached the twin"
        );
        assert!(json.contains("\"allocator\": \"glibc\""));
        assert!(std::fs::read_to_string(out.join("report.md"))
            .unwrap()
            .contains("| research "));
        assert!(std::fs::read_to_string(out.join("matrix.svg"))
            .unwrap()
            .starts_with("<svg"));

        let only = Options {
            scenarios: Some(vec!["vm".into()]),
            contenders: options::select_contenders(&["fast".into(), "mimalloc".into()]).unwrap(),
            ..opts.clone()
        };
        assert_eq!(run_in(&only, &bins, "x"), Ok(true));
        let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3);
        // A twin that reports another name than its contender's fails.
        let wrong = Options {
            contenders: options::select_contenders(&["runtime-fast".into()]).unwrap(),
            ..only.clone()
        };
        std::fs::copy(bin_path(&bins, "glibc"), bin_path(&bins, "runtime")).unwrap();
        assert_eq!(run_in(&wrong, &bins, "x"), Ok(false));
        let json = std::fs::read_to_string(out.join("results.json")).unwrap();
        assert!(json.contains("bench reported allocator=glibc, expected runtime-fast"));

        let bad = Options {
            scenarios: Some(vec!["vm".into(), "vmm".into()]),
            ..opts.clone()
        };
        let err = run_in(&bad, &bins, "x").unwrap_err();
        assert_eq!(
            err,
            Error::Usage(
                "unknown scenario `vmm` in --scenarios; accepted (from bench --list): vm, tiny"
                    .into()
            )
        );
        let err = run_in(&opts, &dir.join("nowhere"), "x").unwrap_err();
        assert!(matches!(err, Error::Failed(m) if m.starts_with("--no-build: ")));
        std::fs::remove_dir_all(&dir).unwrap();
        let picked = [
            contender("runtime-fast").unwrap(),
            contender("jemalloc").unwrap(),
            contender("runtime-research").unwrap(),
        ];
        let names: Vec<_> = binaries_for(&picked).iter().map(|b| b.name).collect();
        assert_eq!(names, ["runtime", "jemalloc"]);
        let all: Vec<&Contender> = CONTENDERS.iter().collect();
        assert_eq!(binaries_for(&all).len(), BINARIES.len());
    }
}
