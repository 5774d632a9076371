//! The command line of `cargo xtask bench-matrix` ([`Args`], parsed by clap) and the choice of
//! scenarios and contenders it resolves to ([`Options`]).
//!
//! Later options override earlier ones (`--full --reps 5` runs 5, `--reps 5 --full` runs 11);
//! `--smoke` sets one repetition and `--scale 0.05` unless `--reps`/`--scale` say otherwise.

use std::path::PathBuf;

use super::run::ScenarioInfo;
use super::{Contender, CONTENDERS};
use crate::cmd;

/// Repetitions of `--quick` (the default).
pub const QUICK_REPS: u32 = 5;
/// Repetitions of `--full`.
pub const FULL_REPS: u32 = 11;
/// The `--scale` of `--smoke`.
pub const SMOKE_SCALE: f64 = 0.05;
/// What `--allocators` accepts besides the contenders' names: all five runtime twins.
pub const RUNTIME_GROUP: &str = "runtime";

/// The wall-clock matrix of every mode, runtime twin and peer allocator over the scenarios
///
/// 13 contenders (minimal, fast, balanced, learning, research; their
/// runtime twins runtime-minimal … runtime-research, i.e. bench-runtime with HAKMEM_MODE set;
/// glibc, mimalloc, jemalloc) × the scenarios of `bench --list`.
///
/// Builds one release `bench` binary per allocator (hakmem-benches, a cargo feature each) into
/// <target>/bench-matrix/bin/, then runs every repetition of every cell in a fresh process,
/// interleaved: for each repetition, for each scenario, every contender, the contender order
/// shuffled each time (fixed seed). A failed run is reported and the matrix goes on (exit status
/// 1 at the end). Writes results.csv, samples.csv, results.json, report.md and matrix.svg to the
/// output directory and prints the report's tables. A bad option or name exits with status 2.
///
/// Then the C programs section: the programs of benches/c/ (cc -O2 -pthread), each run in a
/// fresh process under every selected contender's LD_PRELOAD library (hakmem's preload
/// library, glibc with none, Debian's libmimalloc / libjemalloc), interleaved and shuffled the
/// same way; their whole-process wall time and peak RSS go to report.md, results.json, c.csv
/// and matrix.svg.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// 5 repetitions per cell (the default)
    #[arg(long, overrides_with_all = ["full", "reps"])]
    quick: bool,
    /// 11 repetitions per cell
    #[arg(long, overrides_with_all = ["quick", "reps"])]
    full: bool,
    /// N repetitions per cell
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..),
          overrides_with_all = ["quick", "full"])]
    reps: Option<u32>,
    /// Only these scenarios (names from `bench --list`)
    #[arg(long, value_name = "a,b", value_parser = names)]
    scenarios: Option<Names>,
    /// Only these contenders; `runtime` = all five runtime twins
    #[arg(long, value_name = "a,b", value_parser = contenders)]
    allocators: Option<Contenders>,
    /// Output directory [default: <target>/bench-matrix]
    #[arg(long, value_name = "DIR", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    out: Option<String>,
    /// 1 repetition at --scale 0.05, into <target>/bench-matrix/smoke unless --out says otherwise
    /// (cargo xtask test runs this)
    #[arg(long)]
    smoke: bool,
    /// Shrink every scenario's and C program's iteration counts (0 < F <= 1)
    #[arg(long, value_name = "F", value_parser = scale)]
    scale: Option<f64>,
    /// Use the binaries already in <target>/bench-matrix/bin/ (and the preload libraries in
    /// <target>/preload/, the C programs in <target>/bench-matrix/c/bin/)
    #[arg(long)]
    no_build: bool,
    /// Add the real-program row: python3 round-tripping a large JSON document
    /// (PYTHONMALLOC=malloc), whole-process wall time under each selected contender (hakmem
    /// through its preload library, glibc, Debian's libmimalloc / libjemalloc where installed),
    /// with ratios to glibc and to Debian's mimalloc; writes real.csv and a section of report.md
    #[arg(long, overrides_with = "real_only")]
    real: bool,
    /// The real-program row alone (real.csv, real.md)
    #[arg(long, overrides_with = "real")]
    real_only: bool,
    /// The C programs section alone (benches/c/ under each contender's LD_PRELOAD library):
    /// writes c.md, c.csv, c.json and c.svg
    #[arg(long, overrides_with = "no_c", conflicts_with_all = ["real", "real_only"])]
    c_only: bool,
    /// Skip the C programs section (part of every run otherwise)
    #[arg(long, overrides_with = "c_only")]
    no_c: bool,
}

/// A non-empty comma-separated list of names.
#[derive(Debug, Clone, PartialEq)]
struct Names(Vec<String>);

/// The contenders `--allocators` selected, in report order.
#[derive(Debug, Clone, PartialEq)]
struct Contenders(Vec<&'static Contender>);

fn names(text: &str) -> Result<Names, String> {
    let list = split_list(text);
    if list.is_empty() {
        return Err("names nothing".into());
    }
    Ok(Names(list))
}

fn contenders(text: &str) -> Result<Contenders, String> {
    select_contenders(&split_list(text)).map(Contenders)
}

fn scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err("expected a number in (0, 1]".into()),
    }
}

/// What `cargo xtask bench-matrix …` asked for, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Repetitions of every cell.
    pub reps: u32,
    /// `--scale F` passed to every run (`None`: the bench's full size).
    pub scale: Option<f64>,
    /// `--scenarios` as given (`None`: every scenario the bench lists).
    pub scenarios: Option<Vec<String>>,
    /// The selected contenders, in report order.
    pub contenders: Vec<&'static Contender>,
    /// `--out DIR` (`None`: [`Options::out_dir`]'s default).
    pub out: Option<PathBuf>,
    /// Build the binaries (`false` with `--no-build`).
    pub build: bool,
    /// `--smoke` was given.
    pub smoke: bool,
    /// The real-program row ([`super::real`]): `--real` adds it, `--real-only` runs it alone.
    pub real: RealRow,
    /// The C programs section ([`super::cprog`]): on by default, `--no-c` skips it, `--c-only`
    /// runs it alone.
    pub c: CSection,
}

/// Whether the matrix runs its C programs section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CSection {
    /// After the scenarios (the default).
    #[default]
    With,
    /// No (`--no-c`).
    Off,
    /// Instead of the scenarios (`--c-only`).
    Only,
}

/// Whether the matrix runs its real-program row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RealRow {
    /// No (the default).
    #[default]
    Off,
    /// After the scenarios (`--real`).
    With,
    /// Instead of them (`--real-only`).
    Only,
}

impl From<Args> for Options {
    fn from(a: Args) -> Options {
        let reps = match (a.reps, a.full, a.quick) {
            (Some(n), _, _) => n,
            (None, true, _) => FULL_REPS,
            (None, false, true) => QUICK_REPS,
            _ if a.smoke => 1,
            _ => QUICK_REPS,
        };
        Options {
            reps,
            scale: a.scale.or(a.smoke.then_some(SMOKE_SCALE)),
            scenarios: a.scenarios.map(|n| n.0),
            contenders: a
                .allocators
                .map_or_else(|| CONTENDERS.iter().collect(), |c| c.0),
            out: a.out.map(PathBuf::from),
            build: !a.no_build,
            smoke: a.smoke,
            real: match (a.real, a.real_only) {
                (true, _) => RealRow::With,
                (_, true) => RealRow::Only,
                _ => RealRow::Off,
            },
            c: match (a.c_only, a.no_c) {
                (true, _) => CSection::Only,
                (_, true) => CSection::Off,
                _ => CSection::With,
            },
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Args::default().into()
    }
}

impl Options {
    /// What `cargo xtask test` runs: `--smoke`.
    pub fn smoke() -> Options {
        Args {
            smoke: true,
            ..Args::default()
        }
        .into()
    }

    /// `--out`, or `<target>/bench-matrix` (`<target>/bench-matrix/smoke` for `--smoke`, so that
    /// `cargo xtask test` does not overwrite the last real matrix).
    pub fn out_dir(&self) -> PathBuf {
        match &self.out {
            Some(dir) => dir.clone(),
            None if self.smoke => cmd::target_dir().join("bench-matrix").join("smoke"),
            None => cmd::target_dir().join("bench-matrix"),
        }
    }
}

/// `a,b, c` → `["a", "b", "c"]` (empty items dropped).
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The contenders named in `names` (or all five runtime twins for `runtime`), in report order,
/// each once; an error names the unknown one and the accepted names.
pub fn select_contenders(names: &[String]) -> Result<Vec<&'static Contender>, String> {
    if names.is_empty() {
        return Err("names nothing".into());
    }
    let mut wanted = [false; CONTENDERS.len()];
    for name in names {
        if name == RUNTIME_GROUP {
            for (w, c) in wanted.iter_mut().zip(&CONTENDERS) {
                *w |= c.is_runtime();
            }
            continue;
        }
        match CONTENDERS.iter().position(|c| c.name == name) {
            Some(i) => wanted[i] = true,
            None => {
                let accepted: Vec<&str> = CONTENDERS.iter().map(|c| c.name).collect();
                return Err(format!(
                    "unknown allocator `{name}`; accepted: {}, or `{RUNTIME_GROUP}` for all five \
                     runtime twins",
                    accepted.join(", ")
                ));
            }
        }
    }
    Ok(CONTENDERS
        .iter()
        .zip(wanted)
        .filter(|(_, w)| *w)
        .map(|(c, _)| c)
        .collect())
}

/// The scenarios of `listed` (what `bench --list` printed) that `wanted` names, in listed order;
/// all of them for `None`.
pub fn select_scenarios(
    listed: &[ScenarioInfo],
    wanted: Option<&[String]>,
) -> Result<Vec<ScenarioInfo>, String> {
    let Some(wanted) = wanted else {
        return Ok(listed.to_vec());
    };
    if let Some(name) = wanted
        .iter()
        .find(|n| !listed.iter().any(|s| &s.name == *n))
    {
        let accepted: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "unknown scenario `{name}` in --scenarios; accepted (from bench --list): {}",
            accepted.join(", ")
        ));
    }
    Ok(listed
        .iter()
        .filter(|s| wanted.contains(&s.name))
        .cloned()
        .collect())
}

/// How the command was typed: `cargo xtask bench-matrix ARGS…`, an argument single-quoted when
/// the shell would split or expand it.
pub fn command_line(args: &[String]) -> String {
    let mut line = String::from("cargo xtask bench-matrix");
    for arg in args {
        line.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c));
        if plain {
            line += arg;
        } else {
            line += &format!("'{}'", arg.replace('\'', "'\\''"));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        let argv = std::iter::once("bench-matrix").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.args.into())
    }

    fn opts(args: &[&str]) -> Options {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn names(o: &Options) -> Vec<&str> {
        o.contenders.iter().map(|c| c.name).collect()
    }

    #[test]
    fn defaults_repetitions_the_real_row_smoke_and_allocators() {
        let o = opts(&[]);
        assert_eq!(o, Options::default());
        assert_eq!((o.reps, o.scale, o.contenders.len()), (5, None, 13));
        assert!(o.build && !o.smoke && o.scenarios.is_none() && o.out.is_none());
        // argv => repetitions, real row.
        const CASES: &str = "
            => 5 Off
            --quick => 5 Off
            --full => 11 Off
            --reps=7 => 7 Off
            --full --reps 5 => 5 Off
            --reps 5 --full => 11 Off
            --full --quick => 5 Off
            --smoke => 1 Off
            --smoke --reps 2 => 2 Off
            --full --full => 11 Off
            --real => 5 With
            --real-only --reps 3 => 3 Only
            --real-only --real => 5 With
            --real --real-only => 5 Only";
        // argv => the C section.
        const C_CASES: &str = "
            => With
            --smoke => With
            --full => With
            --no-c => Off
            --c-only => Only
            --c-only --reps 2 => Only
            --no-c --c-only => Only
            --c-only --no-c => Off
            --no-c --no-c => Off
            --c-only --c-only => Only";
        for case in CASES.trim().lines().map(str::trim) {
            let (args, want) = case.split_once("=> ").unwrap();
            let o = opts(&args.split_whitespace().collect::<Vec<_>>());
            assert_eq!(format!("{} {:?}", o.reps, o.real), want, "{args}");
        }
        for case in C_CASES.trim().lines().map(str::trim) {
            let (args, want) = case.split_once("=> ").unwrap();
            let o = opts(&args.split_whitespace().collect::<Vec<_>>());
            assert_eq!(format!("{:?}", o.c), want, "{args}");
        }
        assert_eq!(Options::smoke().c, CSection::With);
        let o = opts(&["--smoke"]);
        assert_eq!((o.reps, o.scale, o.smoke), (1, Some(0.05), true));
        assert_eq!(o, Options::smoke());
        assert!(o.out_dir().ends_with("bench-matrix/smoke"));
        assert!(opts(&[]).out_dir().ends_with("bench-matrix"));
        assert_eq!(opts(&["--smoke", "--scale", "0.5"]).scale, Some(0.5));
        assert_eq!(opts(&["--out", "x/y"]).out_dir(), PathBuf::from("x/y"));
        assert!(!opts(&["--no-build"]).build);
        assert_eq!(
            names(&opts(&["--allocators", "jemalloc,fast, fast"])),
            ["fast", "jemalloc"]
        );
        let twins = opts(&["--allocators=runtime,mimalloc"]);
        assert_eq!(names(&twins)[..2], ["runtime-minimal", "runtime-fast"]);
        assert_eq!(names(&twins).len(), 6);
        assert_eq!(names(&twins)[5], "mimalloc");
    }

    #[test]
    fn bad_names_and_values_are_refused_and_the_command_line_is_shell_quoted() {
        let listed = super::super::run::Plan::of(1, None, &["json", "vm", "tiny"]).scenarios;
        let o = opts(&["--scenarios", "tiny,json"]);
        assert_eq!(o.scenarios, Some(vec!["tiny".into(), "json".into()]));
        let picked = select_scenarios(&listed, o.scenarios.as_deref()).unwrap();
        let picked: Vec<_> = picked.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(picked, ["json", "tiny"]);
        assert_eq!(select_scenarios(&listed, None).unwrap(), listed);
        assert_eq!(
            select_scenarios(&listed, Some(&["vmm".to_owned()])).unwrap_err(),
            "unknown scenario `vmm` in --scenarios; accepted (from bench --list): json, vm, tiny"
        );
        let text = parse(&["--allocators", "fast,tcmalloc"])
            .unwrap_err()
            .to_string();
        assert!(text.contains("`tcmalloc`") && text.contains("runtime-research, glibc"));
        assert!(parse(&["--fast"]).is_err());
        assert!(parse(&["--reps"]).is_err());
        for bad in ["0", "-1", "x", ""] {
            assert!(parse(&["--reps", bad]).is_err(), "--reps {bad}");
        }
        for bad in ["0", "1.5", "nan", "-0.1"] {
            assert!(parse(&["--scale", bad]).is_err(), "--scale {bad}");
        }
        assert!(parse(&["--scenarios", " , "]).is_err());
        assert!(parse(&["--allocators="]).is_err());
        assert!(parse(&["--out="]).is_err());
        assert!(parse(&["--smoke=1"]).is_err());
        assert!(parse(&["--reps", "2", "extra"]).is_err());
        assert!(parse(&["--real=1"]).is_err());
        // The C section alone cannot be combined with the real-program row.
        for bad in [
            &["--c-only", "--real-only"][..],
            &["--real", "--c-only"],
            &["--c-only=1"],
            &["--no-c=yes"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(opts(&["--no-c", "--real-only"]).real, RealRow::Only);
        let args = ["--scenarios", "vm,tiny", "--out", "my dir", "it's"].map(String::from);
        assert_eq!(
            command_line(&args),
            "cargo xtask bench-matrix --scenarios vm,tiny --out 'my dir' 'it'\\''s'"
        );
        assert_eq!(command_line(&[]), "cargo xtask bench-matrix");
    }
}
