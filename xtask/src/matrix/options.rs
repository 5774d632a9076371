//! The command line of `cargo xtask bench-matrix` and the choice of scenarios and contenders.
//!
//! Everything here is pure: [`parse`] turns the arguments after `bench-matrix` into [`Options`]
//! (or a [`UsageError`] naming the bad argument and the accepted values), and
//! [`select_scenarios`] checks `--scenarios` against what a bench binary's `--list` printed.

use std::fmt;
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

/// What `cargo xtask bench-matrix …` asked for.
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

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: QUICK_REPS,
            scale: None,
            scenarios: None,
            contenders: CONTENDERS.iter().collect(),
            out: None,
            build: true,
            smoke: false,
            real: RealRow::Off,
        }
    }
}

impl Options {
    /// What `cargo xtask test` runs: `--smoke`.
    pub fn smoke() -> Options {
        Options {
            reps: 1,
            scale: Some(SMOKE_SCALE),
            smoke: true,
            ..Options::default()
        }
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

/// A parsed `bench-matrix` command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Help,
    Run(Options),
}

/// A rejected `bench-matrix` command line (or `--scenarios` value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    UnknownOption(String),
    MissingValue(&'static str),
    BadValue {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    UnknownAllocator(String),
    UnknownScenario {
        name: String,
        accepted: Vec<String>,
    },
    Empty(&'static str),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownOption(o) => write!(
                f,
                "unknown option `{o}` for `bench-matrix`; accepted: --quick, --full, --reps N, \
                 --scale F, --scenarios a,b, --allocators a,b, --out DIR, --smoke, --no-build, \
                 --real, --real-only, --help"
            ),
            UsageError::MissingValue(o) => write!(f, "`{o}` needs a value"),
            UsageError::BadValue {
                option,
                value,
                expected,
            } => write!(f, "`{option} {value}`: expected {expected}"),
            UsageError::UnknownAllocator(a) => {
                let names: Vec<&str> = CONTENDERS.iter().map(|c| c.name).collect();
                write!(
                    f,
                    "unknown allocator `{a}` in --allocators; accepted: {}, or `{RUNTIME_GROUP}` \
                     for all five runtime twins",
                    names.join(", ")
                )
            }
            UsageError::UnknownScenario { name, accepted } => write!(
                f,
                "unknown scenario `{name}` in --scenarios; accepted (from bench --list): {}",
                accepted.join(", ")
            ),
            UsageError::Empty(o) => write!(f, "`{o}` names nothing"),
        }
    }
}

/// Parses the arguments after `bench-matrix`. Later options override earlier ones (`--full
/// --reps 5` runs 5); `--smoke` sets one repetition and `--scale 0.05` unless `--reps`/`--scale`
/// say otherwise. Values are given as `--opt VALUE` or `--opt=VALUE`.
pub fn parse(args: &[String]) -> Result<Parsed, UsageError> {
    let mut opts = Options::default();
    let mut reps: Option<u32> = None;
    let mut preset: Option<u32> = None;
    let mut scale: Option<f64> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |option: &'static str| -> Result<String, UsageError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().ok_or(UsageError::MissingValue(option)),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => preset = Some(QUICK_REPS),
            "--full" => preset = Some(FULL_REPS),
            "--smoke" => opts.smoke = true,
            "--no-build" => opts.build = false,
            "--real" => opts.real = RealRow::With,
            "--real-only" => opts.real = RealRow::Only,
            "--reps" => {
                let v = value("--reps")?;
                match v.parse::<u32>() {
                    Ok(n) if n >= 1 => {
                        reps = Some(n);
                    }
                    _ => {
                        return Err(UsageError::BadValue {
                            option: "--reps",
                            value: v,
                            expected: "a whole number ≥ 1",
                        })
                    }
                }
            }
            "--scale" => {
                let v = value("--scale")?;
                match v.parse::<f64>() {
                    Ok(f) if f > 0.0 && f <= 1.0 => scale = Some(f),
                    _ => {
                        return Err(UsageError::BadValue {
                            option: "--scale",
                            value: v,
                            expected: "a number in (0, 1]",
                        })
                    }
                }
            }
            "--scenarios" => {
                let list = split_list(&value("--scenarios")?);
                if list.is_empty() {
                    return Err(UsageError::Empty("--scenarios"));
                }
                opts.scenarios = Some(list);
            }
            "--allocators" => {
                opts.contenders = select_contenders(&split_list(&value("--allocators")?))?;
            }
            "--out" => {
                let v = value("--out")?;
                if v.is_empty() {
                    return Err(UsageError::Empty("--out"));
                }
                opts.out = Some(PathBuf::from(v));
            }
            _ => return Err(UsageError::UnknownOption(arg.clone())),
        }
        // A `--flag=value` form of a flag that takes no value.
        if inline.is_some()
            && matches!(
                flag,
                "--quick"
                    | "--full"
                    | "--smoke"
                    | "--no-build"
                    | "--real"
                    | "--real-only"
                    | "-h"
                    | "--help"
            )
        {
            return Err(UsageError::UnknownOption(arg.clone()));
        }
        // `--reps N` after `--full` wins, and `--full` after `--reps N` wins: the later one.
        if matches!(flag, "--quick" | "--full") {
            reps = None;
        } else if flag == "--reps" {
            preset = None;
        }
    }
    opts.reps = match (reps, preset) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) if opts.smoke => 1,
        (None, None) => QUICK_REPS,
    };
    opts.scale = scale.or(if opts.smoke { Some(SMOKE_SCALE) } else { None });
    Ok(Parsed::Run(opts))
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
/// each once.
pub fn select_contenders(names: &[String]) -> Result<Vec<&'static Contender>, UsageError> {
    if names.is_empty() {
        return Err(UsageError::Empty("--allocators"));
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
            None => return Err(UsageError::UnknownAllocator(name.clone())),
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
) -> Result<Vec<ScenarioInfo>, UsageError> {
    let Some(wanted) = wanted else {
        return Ok(listed.to_vec());
    };
    for name in wanted {
        if !listed.iter().any(|s| &s.name == name) {
            return Err(UsageError::UnknownScenario {
                name: name.clone(),
                accepted: listed.iter().map(|s| s.name.clone()).collect(),
            });
        }
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

    fn parse_strs(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn opts(args: &[&str]) -> Options {
        match parse_strs(args) {
            Ok(Parsed::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn names(o: &Options) -> Vec<&str> {
        o.contenders.iter().map(|c| c.name).collect()
    }

    #[test]
    fn defaults_are_quick_with_everything() {
        let o = opts(&[]);
        assert_eq!(o, Options::default());
        assert_eq!(o.reps, 5);
        assert_eq!(o.scale, None);
        assert_eq!(o.contenders.len(), 13);
        assert!(o.build && !o.smoke && o.scenarios.is_none() && o.out.is_none());
    }

    #[test]
    fn repetitions() {
        assert_eq!(opts(&["--quick"]).reps, 5);
        assert_eq!(opts(&["--full"]).reps, 11);
        assert_eq!(opts(&["--reps", "5"]).reps, 5);
        assert_eq!(opts(&["--reps=7"]).reps, 7);
        assert_eq!(opts(&["--full", "--reps", "5"]).reps, 5);
        assert_eq!(opts(&["--reps", "5", "--full"]).reps, 11);
        assert_eq!(opts(&["--smoke"]).reps, 1);
        assert_eq!(opts(&["--smoke", "--reps", "2"]).reps, 2);
    }

    #[test]
    fn smoke_is_one_small_repetition() {
        let o = opts(&["--smoke"]);
        assert_eq!((o.reps, o.scale, o.smoke), (1, Some(0.05), true));
        assert_eq!(o, Options::smoke());
        assert!(o.out_dir().ends_with("bench-matrix/smoke"));
        assert!(opts(&[]).out_dir().ends_with("bench-matrix"));
        assert_eq!(opts(&["--smoke", "--scale", "0.5"]).scale, Some(0.5));
        assert_eq!(opts(&["--out", "x/y"]).out_dir(), PathBuf::from("x/y"));
        assert!(!opts(&["--no-build"]).build);
    }

    #[test]
    fn the_real_row() {
        assert_eq!(opts(&[]).real, RealRow::Off);
        assert_eq!(opts(&["--real"]).real, RealRow::With);
        assert_eq!(opts(&["--real-only", "--reps", "3"]).real, RealRow::Only);
        assert_eq!(opts(&["--real-only", "--real"]).real, RealRow::With);
        assert_eq!(
            parse_strs(&["--real=1"]),
            Err(UsageError::UnknownOption("--real=1".into()))
        );
    }

    #[test]
    fn allocators_in_report_order_and_the_runtime_group() {
        assert_eq!(
            names(&opts(&["--allocators", "jemalloc,fast, fast"])),
            ["fast", "jemalloc"]
        );
        assert_eq!(
            names(&opts(&["--allocators=runtime,mimalloc"])),
            [
                "runtime-minimal",
                "runtime-fast",
                "runtime-balanced",
                "runtime-learning",
                "runtime-research",
                "mimalloc"
            ]
        );
    }

    #[test]
    fn scenarios_are_checked_against_the_list() {
        let listed: Vec<ScenarioInfo> = ["json", "vm", "tiny"]
            .iter()
            .map(|n| ScenarioInfo {
                name: n.to_string(),
                about: String::new(),
            })
            .collect();
        let o = opts(&["--scenarios", "tiny,json"]);
        assert_eq!(o.scenarios, Some(vec!["tiny".into(), "json".into()]));
        let picked = select_scenarios(&listed, o.scenarios.as_deref()).unwrap();
        let picked: Vec<_> = picked.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(picked, ["json", "tiny"]);
        assert_eq!(select_scenarios(&listed, None).unwrap(), listed);
        let err = select_scenarios(&listed, Some(&["vmm".to_owned()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown scenario `vmm` in --scenarios; accepted (from bench --list): json, vm, tiny"
        );
    }

    #[test]
    fn errors_name_the_culprit_and_the_accepted_values() {
        let err = parse_strs(&["--allocators", "fast,tcmalloc"]).unwrap_err();
        assert_eq!(err, UsageError::UnknownAllocator("tcmalloc".into()));
        let text = err.to_string();
        assert!(text.contains("`tcmalloc`") && text.contains("runtime-research, glibc"));
        let err = parse_strs(&["--fast"]).unwrap_err();
        assert!(err.to_string().starts_with("unknown option `--fast`"));
        assert!(err.to_string().contains("--allocators a,b"));
        assert_eq!(
            parse_strs(&["--reps"]),
            Err(UsageError::MissingValue("--reps"))
        );
        for bad in ["0", "-1", "x", ""] {
            assert!(matches!(
                parse_strs(&["--reps", bad]),
                Err(UsageError::BadValue {
                    option: "--reps",
                    ..
                })
            ));
        }
        for bad in ["0", "1.5", "nan", "-0.1"] {
            assert!(matches!(
                parse_strs(&["--scale", bad]),
                Err(UsageError::BadValue {
                    option: "--scale",
                    ..
                })
            ));
        }
        assert_eq!(
            parse_strs(&["--scenarios", " , "]),
            Err(UsageError::Empty("--scenarios"))
        );
        assert_eq!(
            parse_strs(&["--allocators="]),
            Err(UsageError::Empty("--allocators"))
        );
        assert_eq!(
            parse_strs(&["--smoke=1"]),
            Err(UsageError::UnknownOption("--smoke=1".into()))
        );
        assert_eq!(
            parse_strs(&["--reps", "2", "extra"]),
            Err(UsageError::UnknownOption("extra".into()))
        );
    }

    #[test]
    fn the_command_line_is_shell_quoted() {
        let args = ["--scenarios", "vm,tiny", "--out", "my dir", "it's"].map(String::from);
        assert_eq!(
            command_line(&args),
            "cargo xtask bench-matrix --scenarios vm,tiny --out 'my dir' 'it'\\''s'"
        );
        assert_eq!(command_line(&[]), "cargo xtask bench-matrix");
    }

    #[test]
    fn help_anywhere() {
        assert_eq!(parse_strs(&["--help"]), Ok(Parsed::Help));
        assert_eq!(parse_strs(&["--full", "-h"]), Ok(Parsed::Help));
    }
}
