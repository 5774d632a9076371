//! The C programs section of the matrix (docs/benchmarks.md, "C programs"): our own programs in
//! `benches/c/`, each the kind of load of a published allocator benchmark, compiled with
//! `cc -O2 -pthread` and run in a fresh process under each contender's `LD_PRELOAD` library (the
//! columns of [`real::columns`]: hakmem's preload library, none for glibc, Debian's mimalloc and
//! jemalloc), interleaved and shuffled as the rest of the matrix. Per run, the whole-process wall
//! time (spawn to exit, reaped by `wait4`) and peak RSS (the program's VmHWM); per cell, their
//! medians, spreads and ratios to mimalloc (Debian), or to glibc where mimalloc (Debian) did not
//! run.
//!
//! The contract with a program (benches/c/common.h): `PROGRAM [SCALE]` exits 0 and prints one
//! line, `PROGRAM checksum=HEX16 hakmem_mode=MODE|none allocator=NAME peak_rss_kib=N`; the mode
//! and allocator must be the column's, and the checksum the same in every run of the program.
//! The peak RSS is the program's own because `wait4`'s `ru_maxrss` is not: it keeps the peak of
//! the address space the child had before its exec, a share of ours (about 6 MiB).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use super::real::{self, Column};
use super::report::{csv_field, fmt_kib, fmt_ratio, md_table};
use super::run::{schedule, RUN_TIMEOUT};
use super::stats::{geomean, median, min_max, ratio};
use super::svg::Groups;
use super::{Contender, Options};
use crate::cmd;

/// One program of `benches/c/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// Its name: the binary's, and the first word of its result line.
    pub name: &'static str,
    /// Its source file in `benches/c/`.
    pub source: &'static str,
    /// Extra `cc` flags (the 4-thread build of shbench).
    pub defines: &'static [&'static str],
    /// The published benchmark whose kind of load it reproduces.
    pub kind: &'static str,
}

const fn program(
    name: &'static str,
    source: &'static str,
    defines: &'static [&'static str],
    kind: &'static str,
) -> Program {
    Program {
        name,
        source,
        defines,
        kind,
    }
}

/// The programs, in report order.
pub const PROGRAMS: [Program; 8] = [
    program(
        "churn",
        "churn.c",
        &[],
        "glibc-simple: one thread, random sizes, random slots",
    ),
    program(
        "shbench",
        "shbench.c",
        &[],
        "sh6bench / sh8bench, 2 threads",
    ),
    program(
        "shbench-4",
        "shbench.c",
        &["-DTHREADS=4", "-DPROGRAM=\"shbench-4\""],
        "sh6bench / sh8bench, 4 threads",
    ),
    program(
        "xmalloc",
        "xmalloc.c",
        &[],
        "xmalloc-test: producers allocate, consumers free",
    ),
    program(
        "larson",
        "larson.c",
        &[],
        "larson: arrays passed to the next thread generation",
    ),
    program(
        "cache-thrash",
        "cache-thrash.c",
        &[],
        "cache-thrash / cache-scratch: false sharing",
    ),
    program(
        "cfrac",
        "cfrac.c",
        &[],
        "cfrac / espresso: small short-lived objects, realloc",
    ),
    program(
        "malloc-large",
        "malloc-large.c",
        &[],
        "malloc-large: 2–32 MiB blocks, touched",
    ),
];

/// The flags every program is compiled with (its `defines` follow).
pub const CFLAGS: [&str; 4] = ["-O2", "-pthread", "-Wall", "-Wextra"];

/// The column the ratios are taken against.
pub const BASELINE: &str = "mimalloc (Debian)";
/// The column they are taken against when [`BASELINE`] did not run (not installed, or not
/// selected).
pub const FALLBACK: &str = "glibc";

/// `benches/c`: the sources.
pub fn source_dir() -> PathBuf {
    cmd::workspace_root().join("benches").join("c")
}

/// Where the programs are compiled: `<target>/bench-matrix/c/bin`.
pub fn bin_dir() -> PathBuf {
    cmd::target_dir().join("bench-matrix").join("c").join("bin")
}

/// The `cc` arguments that compile `p` into `dir`.
pub fn cc_args(p: &Program, sources: &Path, dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = CFLAGS.iter().map(OsString::from).collect();
    args.extend(p.defines.iter().map(OsString::from));
    args.push("-o".into());
    args.push(dir.join(p.name).into());
    args.push(sources.join(p.source).into());
    // dlsym (in libc itself since glibc 2.34; libdl before).
    args.push("-ldl".into());
    args
}

/// Compiles every program into `dir` (`cc` from `PATH`).
pub fn compile(dir: &Path) -> Result<(), String> {
    cmd::create_dir(dir)?;
    let started = Instant::now();
    for p in &PROGRAMS {
        let status = Command::new("cc")
            .args(cc_args(p, &source_dir(), dir))
            .status()
            .map_err(|e| format!("cc is needed (apt-get install gcc): {e}"))?;
        if !status.success() {
            return Err(format!("cc failed on benches/c/{}: {status}", p.source));
        }
    }
    println!(
        "c: compiled {} programs into {} ({} s)",
        PROGRAMS.len(),
        dir.display(),
        cmd::seconds(started.elapsed())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run

/// A program's result line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultLine {
    pub program: String,
    pub checksum: String,
    pub hakmem_mode: String,
    pub allocator: String,
    pub peak_rss_kib: u64,
}

/// Parses a program's stdout: one line, `PROGRAM checksum=HEX16 hakmem_mode=MODE
/// allocator=NAME peak_rss_kib=N` (the keys in any order, each once, nothing else).
pub fn parse_line(stdout: &str) -> Result<ResultLine, String> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines.as_slice() else {
        return Err(format!("expected one line on stdout, got {}", lines.len()));
    };
    let mut words = line.split_whitespace();
    let program = words.next().unwrap_or_default().to_owned();
    const KEYS: [&str; 4] = ["checksum", "hakmem_mode", "allocator", "peak_rss_kib"];
    let mut values: [Option<String>; 4] = Default::default();
    for field in words {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("`{field}` is not key=value in `{line}`"))?;
        let i = (KEYS.iter().position(|k| *k == key))
            .ok_or_else(|| format!("unknown key `{key}` in `{line}`"))?;
        if values[i].replace(value.to_owned()).is_some() {
            return Err(format!("`{key}` given twice in `{line}`"));
        }
    }
    let [Some(checksum), Some(hakmem_mode), Some(allocator), Some(rss)] = values else {
        return Err(format!("incomplete result line `{line}`"));
    };
    if checksum.len() != 16 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("checksum `{checksum}` is not 16 hex digits"));
    }
    let peak_rss_kib = match rss.parse::<u64>() {
        Ok(k) if k > 0 => k,
        _ => {
            return Err(format!(
                "peak_rss_kib `{rss}` is not a positive whole number"
            ))
        }
    };
    Ok(ResultLine {
        program,
        checksum,
        hakmem_mode,
        allocator,
        peak_rss_kib,
    })
}

/// What the runs of `c` must report: `hakmem_mode=` (a mode, or `none`) and `allocator=`.
pub fn expected(c: &Contender) -> (&'static str, &'static str) {
    match c.name {
        "glibc" => ("none", "glibc"),
        "mimalloc" | "jemalloc" => ("none", c.name),
        _ => (c.mode.or(c.compiled).unwrap_or(c.name), "hakmem"),
    }
}

/// One successful run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The repetition, from 1.
    pub rep: u32,
    /// Whole-process wall time, spawn to exit.
    pub seconds: f64,
    /// The program's peak RSS (its VmHWM).
    pub maxrss_kib: u64,
    /// Its minor + major page faults (`wait4`).
    pub faults: u64,
    pub checksum: String,
}

/// Runs `bin [SCALE]` under `col` and judges it; the output kept at `stem`.{out,err}.
fn run_one(
    bin: &Path,
    col: &Col,
    scale: Option<f64>,
    rep: u32,
    stem: &Path,
) -> Result<Sample, String> {
    let args: Vec<String> = scale.map(|f| f.to_string()).into_iter().collect();
    let command = col.column.run.command(bin, &args);
    let (f, usage) = cmd::run_measured(command, stem, RUN_TIMEOUT)?;
    if !f.status.success() {
        let last = f.stderr.lines().rev().find(|l| !l.trim().is_empty());
        let last = last.map(|l| format!(": {}", l.trim())).unwrap_or_default();
        return Err(format!("{}{last}", f.status));
    }
    let line = parse_line(&f.stdout)?;
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned());
    if Some(&line.program) != name.as_ref() {
        return Err(format!("it reported program {}", line.program));
    }
    let (mode, allocator) = expected(col.contender);
    if line.hakmem_mode != mode || line.allocator != allocator {
        return Err(format!(
            "it reported hakmem_mode={} allocator={}, expected hakmem_mode={mode} \
             allocator={allocator} (the library was not loaded?)",
            line.hakmem_mode, line.allocator
        ));
    }
    Ok(Sample {
        rep,
        seconds: f.took.as_secs_f64(),
        maxrss_kib: line.peak_rss_kib,
        faults: usage.faults,
        checksum: line.checksum,
    })
}

// ---------------------------------------------------------------------------------------------
// The section

/// A column of the section: the contender and how it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Col {
    pub contender: &'static Contender,
    pub column: Column,
}

impl Col {
    /// Its name in the reports (`mimalloc (Debian)` for a Debian library).
    pub fn name(&self) -> &str {
        &self.column.run.name
    }
}

/// The runs of one program under one column.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Indices into [`Section::programs`] and [`Section::columns`].
    pub program: usize,
    pub column: usize,
    /// The successful runs, in repetition order.
    pub samples: Vec<Sample>,
    /// The failed runs: repetition (from 1) and why.
    pub failures: Vec<(u32, String)>,
}

impl Cell {
    fn seconds(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.seconds).collect()
    }

    fn rss(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.maxrss_kib as f64).collect()
    }

    /// Median wall time, s.
    pub fn median_secs(&self) -> Option<f64> {
        median(&self.seconds())
    }

    /// Min–max wall time, s.
    pub fn spread_secs(&self) -> Option<(f64, f64)> {
        min_max(&self.seconds())
    }

    /// Median peak RSS, KiB.
    pub fn median_rss(&self) -> Option<f64> {
        median(&self.rss())
    }

    /// Min–max peak RSS, KiB.
    pub fn spread_rss(&self) -> Option<(f64, f64)> {
        min_max(&self.rss())
    }

    /// Median page faults.
    pub fn median_faults(&self) -> Option<f64> {
        median(
            &self
                .samples
                .iter()
                .map(|s| s.faults as f64)
                .collect::<Vec<_>>(),
        )
    }
}

/// Everything the section measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub programs: Vec<Program>,
    pub columns: Vec<Col>,
    /// Program by program, each in column order (a column that was not run has no runs).
    pub cells: Vec<Cell>,
    pub reps: u32,
    pub scale: Option<f64>,
    /// How long the runs took, s.
    pub seconds: f64,
}

/// A column's geometric means over the programs of its ratios to the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geomean {
    pub time: Option<f64>,
    pub rss: Option<f64>,
    /// Over how many programs (those where both the column and the baseline have a median).
    pub over: usize,
}

impl Section {
    /// A section with no runs yet: a cell for every program and column.
    pub fn new(programs: Vec<Program>, columns: Vec<Col>, reps: u32, scale: Option<f64>) -> Self {
        let cells = (0..programs.len())
            .flat_map(|p| {
                (0..columns.len()).map(move |column| Cell {
                    program: p,
                    column,
                    samples: Vec::new(),
                    failures: Vec::new(),
                })
            })
            .collect();
        Section {
            programs,
            columns,
            cells,
            reps,
            scale,
            seconds: 0.0,
        }
    }

    /// The cell of program `p` and column `k`.
    pub fn cell(&self, p: usize, k: usize) -> &Cell {
        &self.cells[p * self.columns.len() + k]
    }

    fn cell_mut(&mut self, p: usize, k: usize) -> &mut Cell {
        let n = self.columns.len();
        &mut self.cells[p * n + k]
    }

    /// The column the ratios are to: mimalloc (Debian) if it is selected and installed, else
    /// glibc if it is selected, else none.
    pub fn baseline(&self) -> Option<usize> {
        let find = |name: &str| {
            (self.columns.iter()).position(|c| c.name() == name && c.column.missing.is_none())
        };
        find(BASELINE).or_else(|| find(FALLBACK))
    }

    /// The ratios of `cell`'s medians (time, peak RSS) to the baseline's in the same program.
    pub fn ratios(&self, cell: &Cell) -> (Option<f64>, Option<f64>) {
        let Some(b) = self.baseline() else {
            return (None, None);
        };
        let base = self.cell(cell.program, b);
        (
            ratio(cell.median_secs(), base.median_secs()),
            ratio(cell.median_rss(), base.median_rss()),
        )
    }

    /// Column `k`'s geometric means of its ratios over the programs.
    pub fn geomean(&self, k: usize) -> Geomean {
        let (mut time, mut rss) = (Vec::new(), Vec::new());
        for p in 0..self.programs.len() {
            if let (Some(t), Some(r)) = self.ratios(self.cell(p, k)) {
                time.push(t);
                rss.push(r);
            }
        }
        Geomean {
            time: geomean(&time),
            rss: geomean(&rss),
            over: time.len(),
        }
    }

    /// Fails every run whose checksum is not the one most runs of its program printed (the
    /// programs do the same work whatever the allocator).
    pub fn check_checksums(&mut self) {
        let n = self.columns.len();
        for p in 0..self.programs.len() {
            let cells = &mut self.cells[p * n..(p + 1) * n];
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for s in cells.iter().flat_map(|c| &c.samples) {
                match counts.iter_mut().find(|(sum, _)| *sum == s.checksum) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((&s.checksum, 1)),
                }
            }
            // The most frequent; the first seen of equals.
            let Some(&(reference, _)) = counts.iter().rev().max_by_key(|(_, count)| *count) else {
                continue;
            };
            let reference = reference.to_owned();
            for cell in cells.iter_mut() {
                let (good, bad): (Vec<Sample>, Vec<Sample>) = std::mem::take(&mut cell.samples)
                    .into_iter()
                    .partition(|s| s.checksum == reference);
                cell.samples = good;
                for s in bad {
                    let why = format!(
                        "checksum {}, where the other runs of the program printed {reference}",
                        s.checksum
                    );
                    cell.failures.push((s.rep, why));
                }
                cell.failures.sort_by_key(|f| f.0);
            }
        }
    }

    /// Whether every run succeeded (a peer that is not installed is not a failure).
    pub fn all_ok(&self) -> bool {
        self.cells.iter().all(|c| c.failures.is_empty())
    }

    /// Runs in all.
    pub fn runs(&self) -> usize {
        let runnable = self.columns.iter().filter(|c| c.column.missing.is_none());
        runnable.count() * self.programs.len() * self.reps as usize
    }
}

/// Runs the section: prepares the preload libraries and the programs (unless `opts.build` is
/// off), then every repetition of every cell, interleaved and shuffled. Runs' output goes to
/// `<out>/c-runs/`.
pub fn run(opts: &Options, out: &Path) -> Result<Section, String> {
    let columns = real::prepare_columns(opts)?;
    let bins = bin_dir();
    if opts.build {
        compile(&bins)?;
    } else if let Some(p) = PROGRAMS.iter().find(|p| !bins.join(p.name).is_file()) {
        return Err(format!(
            "--no-build: {} does not exist; drop --no-build to compile the C programs",
            bins.join(p.name).display()
        ));
    }
    run_columns(opts, columns, &bins, out)
}

/// Runs every program of `bins` under `columns` (one per selected contender, in order).
pub fn run_columns(
    opts: &Options,
    columns: Vec<Column>,
    bins: &Path,
    out: &Path,
) -> Result<Section, String> {
    let columns = (opts.contenders.iter().copied())
        .zip(columns)
        .map(|(contender, column)| Col { contender, column })
        .collect();
    let mut section = Section::new(PROGRAMS.to_vec(), columns, opts.reps, opts.scale);
    let runs_dir = out.join("c-runs");
    cmd::create_dir(&runs_dir)?;
    let runnable: Vec<usize> = (0..section.columns.len())
        .filter(|&k| section.columns[k].column.missing.is_none())
        .collect();
    let slots = schedule(opts.reps, section.programs.len(), runnable.len());
    let total = slots.len();
    let scale = opts.scale.map_or("1".to_owned(), |f| f.to_string());
    println!();
    println!(
        "c: {} programs × {} contenders × {} repetitions (scale {scale}), under LD_PRELOAD",
        section.programs.len(),
        runnable.len(),
        opts.reps
    );
    let started = Instant::now();
    for (i, slot) in slots.iter().enumerate() {
        let (p, k) = (slot.scenario, runnable[slot.contender]);
        let (program, col) = (&section.programs[p], &section.columns[k]);
        print!(
            "[{:>w$}/{total}] {} × {} (rep {}/{}) … ",
            i + 1,
            program.name,
            col.name(),
            slot.rep + 1,
            opts.reps,
            w = total.to_string().len()
        );
        let _ = std::io::stdout().flush();
        let stem = runs_dir.join(format!("{}--{}", program.name, cmd::slug(col.name())));
        let bin = bins.join(program.name);
        let result = run_one(&bin, col, opts.scale, slot.rep + 1, &stem);
        let cell = section.cell_mut(p, k);
        match result {
            Ok(s) => {
                println!("{:.3} s, {}", s.seconds, fmt_kib(s.maxrss_kib));
                cell.samples.push(s);
            }
            Err(e) => {
                println!("FAILED: {e}");
                cell.failures.push((slot.rep + 1, e));
            }
        }
    }
    section.seconds = started.elapsed().as_secs_f64();
    section.check_checksums();
    Ok(section)
}

// ---------------------------------------------------------------------------------------------
// Reports

/// `0.123`: seconds for the tables.
pub fn fmt_secs(s: f64) -> String {
    format!("{s:.3}")
}

/// A table with one row per program and one column per column that ran, `cell` filling each,
/// and a last row `last`, if any.
fn table(
    s: &Section,
    cell: impl Fn(&Cell) -> String,
    last: Option<(String, &dyn Fn(usize) -> String)>,
) -> String {
    let shown: Vec<usize> = (0..s.columns.len())
        .filter(|&k| s.columns[k].column.missing.is_none())
        .collect();
    let mut header = vec!["program".to_owned()];
    header.extend(shown.iter().map(|&k| s.columns[k].name().to_owned()));
    let right: Vec<bool> = (0..header.len()).map(|i| i > 0).collect();
    let mut rows: Vec<Vec<String>> = (0..s.programs.len())
        .map(|p| {
            let mut row = vec![s.programs[p].name.to_owned()];
            row.extend(shown.iter().map(|&k| {
                let c = s.cell(p, k);
                match (c.samples.is_empty(), c.failures.len()) {
                    (true, _) => "FAILED".to_owned(),
                    (false, 0) => cell(c),
                    (false, n) => format!("{} ({n} failed)", cell(c)),
                }
            }));
            row
        })
        .collect();
    if let Some((label, f)) = last {
        let mut row = vec![label];
        row.extend(shown.iter().map(|&k| f(k)));
        rows.push(row);
    }
    md_table(&header, &right, &rows)
}

/// `0.123 (0.87×)`, `12.3 MiB (1.05×)`: a median and its ratio to the baseline.
fn with_ratio(value: String, r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{value} ({})", fmt_ratio(r)),
        None => value,
    }
}

/// The geomean row's cell: `0.95×`, `0.95× (of 7)`, or `—`.
fn geomean_cell(g: Option<f64>, over: usize, programs: usize) -> String {
    match g {
        Some(g) if over == programs => fmt_ratio(g),
        Some(g) => format!("{} (of {over})", fmt_ratio(g)),
        None => "—".to_owned(),
    }
}

/// What the section says about the baseline: which column the ratios are to, and why.
fn baseline_note(s: &Section) -> String {
    let mimalloc = s.columns.iter().find(|c| c.name() == BASELINE);
    let missing = mimalloc.and_then(|c| c.column.missing.clone());
    let to = |b: &str| format!("the ratios in parentheses are to {b}'s median in the same program");
    match (s.baseline().map(|b| s.columns[b].name()), missing) {
        (Some(BASELINE), _) => format!(
            "In parentheses: the ratio to {BASELINE}'s median in the same program (below 1× is \
             faster or smaller)."
        ),
        (Some(b), Some(why)) => format!("{BASELINE} is not installed ({why}), so {}.", to(b)),
        (Some(b), None) => format!("{BASELINE} was not selected, so {}.", to(b)),
        (None, _) => format!("Neither {BASELINE} nor {FALLBACK} ran, so there are no ratios."),
    }
}

/// The section of report.md (`##` level; `c.md` of `--c-only` puts it under its own title).
pub fn markdown(s: &Section) -> String {
    let mut md = String::from("## C programs under LD_PRELOAD\n\n");
    let base = s.baseline().map(|b| s.columns[b].name().to_owned());
    let n = s.programs.len();
    let scale = match s.scale {
        Some(f) => {
            format!("at scale {f} (iteration counts shrunk: a smoke run, not a measurement)")
        }
        None => "at full size".to_owned(),
    };
    md += &format!(
        "{} runs: {n} programs × {} contenders × {} repetitions, {scale}; {:.1} s.\n\n",
        s.runs(),
        s.columns
            .iter()
            .filter(|c| c.column.missing.is_none())
            .count(),
        s.reps,
        s.seconds
    );
    let geo_label = |what: &str| match &base {
        Some(b) => format!("geomean, {what} ÷ {b}"),
        None => "geomean".to_owned(),
    };
    md += "### Wall time, s\n\n";
    let time_geo = |k: usize| {
        let g = s.geomean(k);
        geomean_cell(g.time, g.over, n)
    };
    md += &table(
        s,
        |c| with_ratio(c.median_secs().map_or("?".into(), fmt_secs), s.ratios(c).0),
        base.is_some()
            .then(|| (geo_label("time"), &time_geo as &dyn Fn(usize) -> String)),
    );
    md += "\n### Spread (min–max s)\n\n";
    md += &table(
        s,
        |c| match c.spread_secs() {
            Some((lo, hi)) => format!("{}–{}", fmt_secs(lo), fmt_secs(hi)),
            None => "?".into(),
        },
        None,
    );
    md += "\n### Peak RSS\n\n";
    let rss_geo = |k: usize| {
        let g = s.geomean(k);
        geomean_cell(g.rss, g.over, n)
    };
    md += &table(
        s,
        |c| {
            let rss = c
                .median_rss()
                .map_or("?".into(), |k| fmt_kib(k.round() as u64));
            with_ratio(rss, s.ratios(c).1)
        },
        base.is_some()
            .then(|| (geo_label("peak RSS"), &rss_geo as &dyn Fn(usize) -> String)),
    );
    md += &format!(
        "\nOur own C programs (`benches/c/`, `cc -O2 -pthread`), each reproducing the kind of \
         load of a published allocator benchmark (below), every run a fresh process with the \
         contender's library in `LD_PRELOAD`: hakmem's preload library (`cargo xtask preload`; \
         the runtime twins: the runtime library with `HAKMEM_MODE`), none for glibc, Debian's \
         libmimalloc2.0 and libjemalloc2 for mimalloc and jemalloc (other builds than the \
         crates of the tables above). Wall time is the whole process's, spawn to exit; peak \
         RSS the program's own high-water mark (VmHWM). Medians over {} interleaved \
         repetition{} (the contender order is shuffled each repetition); the min–max spread is what \
         to compare a difference against. {} The geomean row is the geometric mean of those ratios over the programs. \
         A run fails on a non-zero exit, a signal, a block found overwritten, a checksum other \
         than the other runs', or a `hakmem_mode`/`allocator` other than the column's.\n\n",
        s.reps,
        if s.reps == 1 { "" } else { "s" },
        baseline_note(s)
    );
    let header: Vec<String> = ["program", "kind of load (published benchmark)", "source"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = (s.programs.iter())
        .map(|p| {
            let mut source = format!("benches/c/{}", p.source);
            if !p.defines.is_empty() {
                source += &format!(" {}", p.defines[0]);
            }
            vec![p.name.to_owned(), p.kind.to_owned(), source]
        })
        .collect();
    md += &md_table(&header, &[false, false, false], &rows);
    for c in &s.columns {
        if let Some(why) = &c.column.missing {
            md += &format!(
                "\n{}: not run — {why}; `apt-get install libmimalloc2.0 libjemalloc2` installs \
                 both peers.\n",
                c.name()
            );
        }
    }
    md
}

/// `c.csv`: one row per cell.
pub fn csv(s: &Section) -> String {
    let mut out = String::from(
        "program,allocator,library,reps,median_s,min_s,max_s,median_peak_rss_kib,\
         min_peak_rss_kib,max_peak_rss_kib,faults,time_vs_baseline,rss_vs_baseline,baseline,\
         failures,not_run\n",
    );
    let num = |x: Option<f64>, p: usize| x.map(|v| format!("{v:.p$}")).unwrap_or_default();
    let base = s.baseline().map(|b| s.columns[b].name().to_owned());
    for c in &s.cells {
        let col = &s.columns[c.column];
        let (time, rss) = s.ratios(c);
        let library = col.column.run.library.as_ref();
        let row = [
            csv_field(s.programs[c.program].name),
            csv_field(col.name()),
            csv_field(&library.map(|p| p.display().to_string()).unwrap_or_default()),
            c.samples.len().to_string(),
            num(c.median_secs(), 4),
            num(c.spread_secs().map(|x| x.0), 4),
            num(c.spread_secs().map(|x| x.1), 4),
            num(c.median_rss(), 0),
            num(c.spread_rss().map(|x| x.0), 0),
            num(c.spread_rss().map(|x| x.1), 0),
            num(c.median_faults(), 0),
            num(time, 4),
            num(rss, 4),
            csv_field(base.as_deref().unwrap_or("")),
            c.failures.len().to_string(),
            csv_field(col.column.missing.as_deref().unwrap_or("")),
        ];
        out += &row.join(",");
        out.push('\n');
    }
    out
}

/// The section in results.json (its `c_programs` key) and c.json.
#[derive(Serialize)]
struct Json<'a> {
    baseline: Option<&'a str>,
    reps: u32,
    scale: f64,
    run_seconds: f64,
    programs: Vec<ProgramJson<'a>>,
    contenders: Vec<ContenderJson<'a>>,
    cells: Vec<CellJson<'a>>,
    geomean: Vec<GeomeanJson<'a>>,
}

#[derive(Serialize)]
struct ProgramJson<'a> {
    name: &'a str,
    source: String,
    cflags: Vec<&'a str>,
    kind: &'a str,
}

#[derive(Serialize)]
struct ContenderJson<'a> {
    name: &'a str,
    contender: &'a str,
    ld_preload: Option<String>,
    hakmem_mode: Option<&'a str>,
    not_run: Option<&'a str>,
}

#[derive(Serialize)]
struct CellJson<'a> {
    program: &'a str,
    allocator: &'a str,
    reps: usize,
    median_s: Option<f64>,
    min_s: Option<f64>,
    max_s: Option<f64>,
    median_peak_rss_kib: Option<f64>,
    min_peak_rss_kib: Option<f64>,
    max_peak_rss_kib: Option<f64>,
    faults: Option<f64>,
    time_vs_baseline: Option<f64>,
    rss_vs_baseline: Option<f64>,
    failures: usize,
    samples: Vec<RunJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RunJson<'a> {
    Ok(&'a Sample),
    Failed { rep: u32, error: &'a str },
}

#[derive(Serialize)]
struct GeomeanJson<'a> {
    allocator: &'a str,
    time_vs_baseline: Option<f64>,
    rss_vs_baseline: Option<f64>,
    over: usize,
}

/// The section as a JSON value (results.json's `c_programs`, c.json).
pub fn json(s: &Section) -> serde_json::Value {
    let cflags = |p: &Program| CFLAGS.iter().chain(p.defines).copied().collect();
    let cells = (s.cells.iter())
        .filter(|c| s.columns[c.column].column.missing.is_none())
        .map(|c| {
            let (time, rss) = s.ratios(c);
            let mut samples: Vec<(u32, RunJson)> = (c.samples.iter())
                .map(|x| (x.rep, RunJson::Ok(x)))
                .chain(c.failures.iter().map(|(rep, e)| {
                    (
                        *rep,
                        RunJson::Failed {
                            rep: *rep,
                            error: e,
                        },
                    )
                }))
                .collect();
            samples.sort_by_key(|x| x.0);
            CellJson {
                program: s.programs[c.program].name,
                allocator: s.columns[c.column].name(),
                reps: c.samples.len(),
                median_s: c.median_secs(),
                min_s: c.spread_secs().map(|x| x.0),
                max_s: c.spread_secs().map(|x| x.1),
                median_peak_rss_kib: c.median_rss(),
                min_peak_rss_kib: c.spread_rss().map(|x| x.0),
                max_peak_rss_kib: c.spread_rss().map(|x| x.1),
                faults: c.median_faults(),
                time_vs_baseline: time,
                rss_vs_baseline: rss,
                failures: c.failures.len(),
                samples: samples.into_iter().map(|x| x.1).collect(),
            }
        })
        .collect();
    let value = Json {
        baseline: s.baseline().map(|b| s.columns[b].name()),
        reps: s.reps,
        scale: s.scale.unwrap_or(1.0),
        run_seconds: (s.seconds * 1000.0).round() / 1000.0,
        programs: (s.programs.iter())
            .map(|p| ProgramJson {
                name: p.name,
                source: format!("benches/c/{}", p.source),
                cflags: cflags(p),
                kind: p.kind,
            })
            .collect(),
        contenders: (s.columns.iter())
            .map(|c| ContenderJson {
                name: c.name(),
                contender: c.contender.name,
                ld_preload: c
                    .column
                    .run
                    .library
                    .as_ref()
                    .map(|p| p.display().to_string()),
                hakmem_mode: c.column.run.hakmem_mode,
                not_run: c.column.missing.as_deref(),
            })
            .collect(),
        cells,
        geomean: (0..s.columns.len())
            .filter(|&k| s.columns[k].column.missing.is_none())
            .map(|k| {
                let g = s.geomean(k);
                GeomeanJson {
                    allocator: s.columns[k].name(),
                    time_vs_baseline: g.time,
                    rss_vs_baseline: g.rss,
                    over: g.over,
                }
            })
            .collect(),
    };
    serde_json::to_value(value).expect("plain data serializes")
}

/// The chart's panel: per program, each column's median time ÷ the baseline's (no panel
/// without a baseline).
pub fn bars(s: &Section) -> Option<Groups> {
    let b = s.baseline()?;
    let shown: Vec<usize> = (0..s.columns.len())
        .filter(|&k| s.columns[k].column.missing.is_none())
        .collect();
    let groups = (0..s.programs.len())
        .map(|p| {
            let ratios = shown.iter().map(|&k| s.ratios(s.cell(p, k)).0).collect();
            (s.programs[p].name.to_owned(), ratios)
        })
        .collect();
    let base = s.columns[b].name().to_owned();
    Some(Groups {
        caption: format!("C programs under LD_PRELOAD: whole-process time ÷ {base}"),
        baseline: base,
        contenders: shown.iter().map(|&k| s.columns[k].contender).collect(),
        labels: shown
            .iter()
            .map(|&k| s.columns[k].name().to_owned())
            .collect(),
        groups,
    })
}

/// Prints the section's failed runs, one line per cell.
pub fn print_failures(s: &Section) {
    for c in s.cells.iter().filter(|c| !c.failures.is_empty()) {
        let (n, (rep, first)) = (c.failures.len(), &c.failures[0]);
        let cell = format!(
            "{} × {}",
            s.programs[c.program].name,
            s.columns[c.column].name()
        );
        println!("bench-matrix: C {cell}: {n} failed run(s), first (rep {rep}): {first}");
    }
}

/// `cargo xtask bench-matrix --c-only`: the section alone, written to `c.md`, `c.csv`, `c.json`
/// and `c.svg` in the output directory.
pub fn run_only(opts: &Options, command_line: &str) -> Result<bool, super::Error> {
    let failed = super::Error::Failed;
    let out = opts.out_dir();
    cmd::create_dir(&out).map_err(failed)?;
    let section = run(opts, &out).map_err(failed)?;
    let machine = super::build::Machine::describe();
    let mut md = String::from("# hakmem: C programs under LD_PRELOAD\n\n");
    md += &(machine.markdown(command_line) + "\n");
    md += &markdown(&section);
    let json = serde_json::to_string_pretty(&json(&section)).expect("plain data serializes");
    cmd::write(&out.join("c.csv"), csv(&section)).map_err(failed)?;
    cmd::write(&out.join("c.json"), json + "\n").map_err(failed)?;
    cmd::write(&out.join("c.md"), &md).map_err(failed)?;
    if let Some(groups) = bars(&section) {
        let title = format!(
            "Median whole-process time relative to {} (log scale; below 1 = faster), {} \
             interleaved repetition(s){}",
            groups.baseline,
            section.reps,
            section
                .scale
                .map(|f| format!(", scale {f} (smoke)"))
                .unwrap_or_default()
        );
        let chart = super::svg::groups_chart(&title, &groups).map_err(failed)?;
        cmd::write(&out.join("c.svg"), chart).map_err(failed)?;
    }
    print!("\n{md}\n");
    print_failures(&section);
    println!(
        "bench-matrix: {} C runs in {:.1} s; wrote {} (c.md, c.csv, c.json{})",
        section.runs(),
        section.seconds,
        out.display(),
        if bars(&section).is_some() {
            ", c.svg"
        } else {
            ""
        }
    );
    Ok(section.all_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::contender;
    use crate::matrix::options::select_contenders;

    /// Columns for `names`, the Debian peers installed at a fixed path unless `missing` names
    /// them.
    fn cols(names: &[&str], missing: &[&str]) -> Vec<Col> {
        let picked: Vec<&'static Contender> = names.iter().map(|n| contender(n).unwrap()).collect();
        let columns = real::columns(&picked, &|m| PathBuf::from(format!("/lib/{m}.so")));
        (picked.into_iter().zip(columns))
            .map(|(contender, mut column)| {
                if let Some(file) = ["mimalloc", "jemalloc"]
                    .iter()
                    .find(|p| **p == contender.name)
                    .map(|p| format!("lib{p}.so.2"))
                {
                    column.missing = missing
                        .contains(&contender.name)
                        .then(|| format!("{file} not found (apt-get install …)"));
                    column.run.library = column
                        .missing
                        .is_none()
                        .then(|| PathBuf::from(format!("/usr/lib/{file}")));
                }
                Col { contender, column }
            })
            .collect()
    }

    fn sample(rep: u32, seconds: f64, maxrss_kib: u64, checksum: &str) -> Sample {
        Sample {
            rep,
            seconds,
            maxrss_kib,
            faults: 100,
            checksum: checksum.to_owned(),
        }
    }

    const SUM: &str = "00000000000000aa";

    /// churn and shbench under fast, glibc, mimalloc (Debian) and jemalloc (Debian); `missing`
    /// peers not installed. fast: churn 0.11 s / 2000 KiB, shbench 0.05 s / 1500 KiB (one run
    /// failed); glibc: churn 0.2 s / 1000 KiB, every shbench run failed; mimalloc: 0.1 s /
    /// 1000 KiB in both.
    fn section(missing: &[&str]) -> Section {
        let columns = cols(&["fast", "glibc", "mimalloc", "jemalloc"], missing);
        let mut s = Section::new(PROGRAMS[..2].to_vec(), columns, 3, None);
        // (program, column, [(seconds, peak RSS)]).
        type Runs<'a> = (usize, usize, &'a [(f64, u64)]);
        let runs: [Runs; 5] = [
            (0, 0, &[(0.10, 2000), (0.12, 2000), (0.11, 2000)]),
            (0, 1, &[(0.2, 1000)]),
            (0, 2, &[(0.1, 1000), (0.1, 1000), (0.1, 1000)]),
            (1, 0, &[(0.05, 1500)]),
            (1, 2, &[(0.1, 1000)]),
        ];
        for (p, k, xs) in runs {
            if s.columns[k].column.missing.is_some() {
                continue;
            }
            let cell = s.cell_mut(p, k);
            for (i, &(secs, rss)) in xs.iter().enumerate() {
                cell.samples.push(sample(i as u32 + 1, secs, rss, SUM));
            }
        }
        s.cell_mut(1, 0)
            .failures
            .push((2, "signal: 11 (SIGSEGV)".into()));
        s.cell_mut(1, 1)
            .failures
            .push((1, "exit status: 1: boom".into()));
        s.seconds = 1.5;
        s
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn result_lines_are_parsed_and_checked_strictly() {
        let line = "churn checksum=00000000deadbeef hakmem_mode=fast allocator=hakmem \
                    peak_rss_kib=1234\n";
        let want = ResultLine {
            program: "churn".into(),
            checksum: "00000000deadbeef".into(),
            hakmem_mode: "fast".into(),
            allocator: "hakmem".into(),
            peak_rss_kib: 1234,
        };
        assert_eq!(parse_line(line), Ok(want.clone()));
        let shuffled = "\nchurn allocator=hakmem peak_rss_kib=1234 hakmem_mode=fast \
                        checksum=00000000deadbeef\n\n";
        assert_eq!(parse_line(shuffled), Ok(want));
        // `…` stands for `x checksum=00000000deadbeef hakmem_mode=none`; each output, then why
        // it is refused.
        const BAD: &str = "
 | expected one line on stdout, got 0
a\\nb | expected one line on stdout, got 2
… allocator=glibc | incomplete result line `…`
… allocator=glibc peak_rss_kib=0 | peak_rss_kib `0` is not a positive whole number
… allocator=glibc peak_rss_kib=x | peak_rss_kib `x` is not a positive whole number
… allocator=glibc peak_rss_kib=1 allocator=glibc | `allocator` given twice in `…`
… allocator=glibc peak_rss_kib=1 size=3 | unknown key `size` in `…`
… allocator=glibc peak_rss_kib=1 oops | `oops` is not key=value in `…`
x checksum=abc hakmem_mode=none allocator=glibc peak_rss_kib=1 | checksum `abc` is not 16 hex \
digits";
        for case in BAD.lines().skip(1) {
            let (out, why) = case.split_once(" | ").unwrap();
            let out = out
                .replace("\\n", "\n")
                .replace('…', "x checksum=00000000deadbeef hakmem_mode=none");
            let why = why.replace('…', out.trim());
            assert_eq!(parse_line(&out), Err(why), "{out}");
        }
        let expect = |name| expected(contender(name).unwrap());
        assert_eq!(expect("fast"), ("fast", "hakmem"));
        assert_eq!(expect("runtime-learning"), ("learning", "hakmem"));
        assert_eq!(expect("glibc"), ("none", "glibc"));
        assert_eq!(expect("jemalloc"), ("none", "jemalloc"));
        let p = PROGRAMS.iter().find(|p| p.name == "shbench-4").unwrap();
        let args = cc_args(p, Path::new("/src"), Path::new("/bin"));
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args.join(" "),
            "-O2 -pthread -Wall -Wextra -DTHREADS=4 -DPROGRAM=\"shbench-4\" -o /bin/shbench-4 \
             /src/shbench.c -ldl"
        );
        for p in &PROGRAMS {
            assert!(source_dir().join(p.source).is_file(), "{}", p.source);
        }
    }

    #[test]
    fn ratios_geomeans_and_the_baseline_fallback() {
        let s = section(&["jemalloc"]);
        assert_eq!(s.baseline(), Some(2));
        assert_eq!(s.runs(), 2 * 3 * 3);
        let (time, rss) = s.ratios(s.cell(0, 0));
        assert!(close(time, 1.1) && close(rss, 2.0));
        assert_eq!(s.ratios(s.cell(1, 1)), (None, None));
        let g = s.geomean(0);
        assert_eq!(g.over, 2);
        assert!(close(g.time, (1.1f64 * 0.5).sqrt()) && close(g.rss, 3f64.sqrt()));
        let g = s.geomean(1);
        assert_eq!(g.over, 1);
        assert!(close(g.time, 2.0) && close(g.rss, 1.0));
        assert!(!s.all_ok());
        // mimalloc not installed: the ratios are to glibc.
        let s = section(&["mimalloc", "jemalloc"]);
        assert_eq!(s.baseline(), Some(1));
        assert!(close(s.ratios(s.cell(0, 0)).0, 0.55));
        assert!(baseline_note(&s).contains("is not installed (libmimalloc.so.2 not found"));
        // Neither: no ratios.
        let mut s = section(&[]);
        s.columns.retain(|c| c.contender.name == "fast");
        s.cells.retain(|c| c.column == 0);
        assert_eq!(s.baseline(), None);
        assert_eq!(s.geomean(0).time, None);
        assert!(markdown(&s).contains("there are no ratios"));
        assert!(bars(&s).is_none());
    }

    #[test]
    fn a_checksum_other_than_the_programs_fails_its_run() {
        let mut s = section(&[]);
        s.cell_mut(0, 2).samples[1].checksum = "00000000000000bb".into();
        s.cell_mut(1, 0).samples[0].checksum = "00000000000000cc".into();
        s.check_checksums();
        let mi = s.cell(0, 2);
        assert_eq!(mi.samples.len(), 2);
        let why = "checksum 00000000000000bb, where the other runs of the program printed \
                   00000000000000aa";
        assert_eq!(mi.failures, [(2, why.to_owned())]);
        // shbench: one run says cc, one aa; the first seen of equals wins.
        let fast = s.cell(1, 0);
        assert_eq!((fast.samples.len(), fast.failures.len()), (1, 1));
        assert_eq!(fast.failures[0].0, 2);
        assert_eq!(s.cell(1, 2).samples.len(), 0);
    }

    #[test]
    fn markdown_csv_json_and_bars_of_a_section() {
        let s = section(&["jemalloc"]);
        let md = markdown(&s);
        let row = |table: &str, name: &str| -> String {
            let at = md.find(table).unwrap();
            let line = md[at..]
                .lines()
                .find(|l| l.starts_with(&format!("| {name} ")));
            line.unwrap().to_owned()
        };
        let churn = row("### Wall time", "churn");
        assert!(churn.contains(" 0.110 (1.10×) |"), "{churn}");
        assert!(churn.contains(" 0.200 (2.00×) |"), "{churn}");
        let shbench = row("### Wall time", "shbench");
        assert!(shbench.contains("0.050 (0.50×) (1 failed)") && shbench.contains("FAILED"));
        let geo = row("### Wall time", "geomean, time ÷ mimalloc (Debian)");
        assert!(
            geo.contains(" 0.74× |") && geo.contains(" 2.00× (of 1) |"),
            "{geo}"
        );
        assert!(row("### Spread", "churn").contains(" 0.100–0.120 |"));
        let rss = row("### Peak RSS", "churn");
        assert!(
            rss.contains("2.0 MiB (2.00×)") && rss.contains("1000 KiB (1.00×)"),
            "{rss}"
        );
        let geo = row("### Peak RSS", "geomean, peak RSS ÷ mimalloc (Debian)");
        assert!(geo.contains(" 1.73× |"), "{geo}");
        assert!(
            !md.contains("| jemalloc"),
            "a peer that is not installed has no column"
        );
        assert!(md.contains(
            "jemalloc (Debian): not run — libjemalloc.so.2 not found (apt-get install …); \
             `apt-get install libmimalloc2.0 libjemalloc2` installs both peers."
        ));
        assert!(md.contains("the ratio to mimalloc (Debian)'s median"));

        let csv = csv(&s);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 2 * 4);
        assert!(lines.iter().all(|l| l.split(',').count() == 16));
        assert_eq!(
            lines[1],
            "churn,fast,/lib/fast.so,3,0.1100,0.1000,0.1200,2000,2000,2000,100,1.1000,2.0000,\
             mimalloc (Debian),0,"
        );
        assert!(lines[6].starts_with("shbench,glibc,,0,,,,,,,,,,mimalloc (Debian),1,"));
        assert!(lines[8].ends_with(",0,libjemalloc.so.2 not found (apt-get install …)"));

        let v = json(&s);
        assert_eq!(v["baseline"], "mimalloc (Debian)");
        assert_eq!(v["cells"].as_array().unwrap().len(), 2 * 3);
        assert_eq!(v["programs"][1]["cflags"][0], "-O2");
        assert!(v["contenders"][3]["not_run"].is_string());
        let fast_shbench = &v["cells"][3];
        assert_eq!(fast_shbench["allocator"], "fast");
        assert_eq!(fast_shbench["samples"][0]["maxrss_kib"], 1500);
        assert_eq!(fast_shbench["samples"][1]["error"], "signal: 11 (SIGSEGV)");
        assert_eq!(v["geomean"][1]["over"], 1);

        let g = bars(&s).unwrap();
        assert_eq!(g.labels, ["fast", "glibc", "mimalloc (Debian)"]);
        assert_eq!(g.groups.len(), 2);
        assert!(close(g.groups[0].1[0], 1.1) && g.groups[1].1[1].is_none());
        let svg = super::super::svg::groups_chart("title", &g).unwrap();
        assert!(svg.contains("shbench") && svg.contains("mimalloc (Debian)"));
    }

    #[test]
    fn the_programs_compile_run_check_themselves_and_a_missing_library_is_caught() {
        let dir = std::env::temp_dir().join(format!("xtask-cprog-{}", std::process::id()));
        let bins = dir.join("bin");
        compile(&bins).unwrap();
        let opts = Options {
            reps: 1,
            scale: Some(0.01),
            contenders: select_contenders(&["fast".into(), "glibc".into(), "mimalloc".into()])
                .unwrap(),
            ..Options::default()
        };
        // A hakmem column whose library does not exist: ld.so says so and runs the program on
        // glibc, whose line then says `hakmem_mode=none allocator=glibc`.
        let columns = real::columns(&opts.contenders, &|m| dir.join(format!("{m}.so")));
        let s = run_columns(&opts, columns, &bins, &dir.join("out")).unwrap();
        assert!(!s.all_ok());
        for (p, program) in PROGRAMS.iter().enumerate() {
            let fast = s.cell(p, 0);
            assert!(fast.samples.is_empty());
            assert!(
                fast.failures[0].1.starts_with(
                    "it reported hakmem_mode=none allocator=glibc, expected hakmem_mode=fast \
                     allocator=hakmem"
                ),
                "{:?}",
                fast.failures
            );
            let glibc = s.cell(p, 1);
            assert_eq!(
                glibc.samples.len(),
                1,
                "{}: {:?}",
                program.name,
                glibc.failures
            );
            assert!(glibc.samples[0].maxrss_kib > 0 && glibc.samples[0].seconds > 0.0);
            // Debian's mimalloc, where it is installed, did the same work.
            if s.columns[2].column.missing.is_none() {
                let mi = s.cell(p, 2);
                assert_eq!(mi.samples[0].checksum, glibc.samples[0].checksum);
            }
        }
        // A bad scale is refused by the program itself.
        let out = Command::new(bins.join("churn")).arg("2").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
