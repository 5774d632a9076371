//! A set of instruction counts — a run's, or the committed baseline's — with the environment it
//! was measured in, and its JSON file: serde_json's pretty form, sorted, one `"path/contender":
//! Ir` entry per line, for people to diff and merge (docs/zero-overhead.md). A run's file also
//! has `"config"`: per benchmark, what its teardown found (`untouched` or `read:MODE`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::OPS;
use crate::cmd;

/// What the figures depend on besides the code: a different value of any of these can move a
/// count without the code having changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// `rustc -V`: the code generator.
    pub rustc: String,
    /// The CPU model: glibc picks its `memcpy`/`memset` variants by CPU features.
    pub cpu: String,
    /// `ldd --version`'s first line: glibc's `malloc`, `free` and `realloc` are measured too.
    pub glibc: String,
    /// `valgrind --version`.
    pub valgrind: String,
}

impl Environment {
    /// This machine's.
    pub fn detect() -> Environment {
        Environment {
            rustc: cmd::first_line("rustc -V"),
            cpu: crate::matrix::build::cpu(),
            glibc: cmd::first_line("ldd --version"),
            valgrind: cmd::first_line("valgrind --version"),
        }
    }

    /// `(name, self's value, other's value)` for every field that differs.
    pub fn differences(&self, other: &Environment) -> Vec<(&'static str, String, String)> {
        [
            ("rustc", &self.rustc, &other.rustc),
            ("CPU", &self.cpu, &other.cpu),
            ("glibc", &self.glibc, &other.glibc),
            ("valgrind", &self.valgrind, &other.valgrind),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| (name, a.clone(), b.clone()))
        .collect()
    }
}

/// Instruction counts by benchmark id (`path/contender`), each the `Ir` of [`OPS`] operations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(flatten)]
    pub env: Environment,
    /// The paths in the benchmarks' order (for tables; the counts are keyed by id). A file
    /// without it gets the paths of its counts.
    #[serde(default)]
    pub paths: Vec<String>,
    pub ir: BTreeMap<String, u64>,
    /// What each benchmark's teardown found: `untouched` or `read:MODE` (empty in a baseline).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// The file: the figures after what they count.
#[derive(Serialize, Deserialize)]
struct File<'a> {
    #[serde(default)]
    about: &'a str,
    ops: u64,
    #[serde(flatten)]
    figures: Figures,
}

/// The `about` line of a baseline file.
const ABOUT: &str = "callgrind Ir of `ops` operations per benchmark of benches/benches/icount.rs; \
                     checked by cargo xtask icount, rewritten by cargo xtask icount --bless \
                     (docs/regression-analysis.md)";

/// `path/contender` → `(path, contender)`.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

impl Figures {
    /// Adds the count of `id` (`path/contender`), its path after those already known.
    pub fn insert(&mut self, id: &str, ir: u64) -> Result<(), String> {
        let (path, _) = split_id(id).ok_or(format!("`{id}` is not `path/contender`"))?;
        if !self.paths.iter().any(|p| p == path) {
            self.paths.push(path.to_owned());
        }
        self.ir.insert(id.to_owned(), ir);
        Ok(())
    }

    /// The count of `path/contender`.
    pub fn get(&self, path: &str, contender: &str) -> Option<u64> {
        self.ir.get(&format!("{path}/{contender}")).copied()
    }

    /// The JSON file: sorted, one entry per line; `config` only if there is one.
    pub fn to_json(&self) -> String {
        let file = File {
            about: ABOUT,
            ops: OPS,
            figures: self.clone(),
        };
        serde_json::to_string_pretty(&file).expect("plain data serializes") + "\n"
    }

    /// Reads a file written by [`Figures::to_json`]; it must count [`OPS`] operations.
    pub fn from_json(text: &str) -> Result<Figures, String> {
        let file: File =
            serde_json::from_str(text).map_err(|e| format!("not a figures file: {e}"))?;
        if file.ops != OPS {
            return Err(format!(
                "`ops` is {}, the benchmarks run {OPS} operations: the file is from another \
                 version of the benchmarks (bless it again)",
                file.ops
            ));
        }
        let mut figures = file.figures;
        for (id, n) in std::mem::take(&mut figures.ir) {
            figures.insert(&id, n).map_err(|e| format!("`ir`: {e}"))?;
        }
        Ok(figures)
    }

    /// A copy with every count multiplied by `percent` / 100, rounded down (the self-test lowers
    /// a baseline by 10% with `percent` = 90).
    pub fn scaled(&self, percent: u64) -> Figures {
        let mut copy = self.clone();
        for n in copy.ir.values_mut() {
            *n = (u128::from(*n) * u128::from(percent) / 100) as u64;
        }
        copy
    }
}

#[cfg(test)]
impl Figures {
    /// Test figures: `(path/contender, Ir per operation)`, the paths in their order, measured in
    /// one fixed environment.
    pub fn of<S: AsRef<str>>(entries: &[(S, u64)]) -> Figures {
        let mut f = Figures {
            env: Environment {
                rustc: "rustc 1.95.0".into(),
                cpu: "AMD EPYC".into(),
                glibc: "glibc 2.36".into(),
                valgrind: "valgrind-3.19.0".into(),
            },
            ..Figures::default()
        };
        for (id, per_op) in entries {
            f.insert(id.as_ref(), per_op * OPS).unwrap();
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Figures::of::<&str>(&[]).env
    }

    fn figures() -> Figures {
        let mut ir = BTreeMap::new();
        ir.insert("tiny_pair/minimal".to_owned(), 151_580);
        ir.insert("tiny_pair/runtime_minimal".to_owned(), 180_224);
        ir.insert("vm_pair/fast".to_owned(), 83_968);
        Figures {
            env: env(),
            paths: vec!["tiny_pair".into(), "vm_pair".into()],
            ir,
            config: BTreeMap::new(),
        }
    }

    #[test]
    fn the_file_round_trips_and_rejects_other_shapes_scaling_and_environments() {
        let f = figures();
        let text = f.to_json();
        assert_eq!(Figures::from_json(&text), Ok(f.clone()));
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|l| l.contains("\"ir\"")).unwrap();
        assert_eq!(lines[at + 1], "    \"tiny_pair/minimal\": 151580,");
        assert_eq!(lines[at + 2], "    \"tiny_pair/runtime_minimal\": 180224,");
        assert_eq!(lines[at + 3], "    \"vm_pair/fast\": 83968");
        assert_eq!(lines[at + 4], "  }");
        assert!(!text.contains("\"config\""));
        assert!(text.contains("\"ops\": 1024,"));

        let mut with_config = f;
        with_config
            .config
            .insert("tiny_pair/minimal".into(), "untouched".into());
        let text = with_config.to_json();
        assert!(text
            .contains("  },\n  \"config\": {\n    \"tiny_pair/minimal\": \"untouched\"\n  }\n}\n"));
        assert_eq!(Figures::from_json(&text), Ok(with_config));
        let text = figures().to_json();
        let err = Figures::from_json(&text.replace("\"ops\": 1024", "\"ops\": 1000")).unwrap_err();
        assert!(err.contains("another version"), "{err}");
        let err = Figures::from_json(&text.replace("tiny_pair/minimal", "tiny")).unwrap_err();
        assert!(err.contains("not `path/contender`"), "{err}");
        assert!(Figures::from_json("{").is_err());
        let err = Figures::from_json(&text.replace("\"cpu\"", "\"gpu\"")).unwrap_err();
        assert!(err.contains("missing field `cpu`"), "{err}");
        let text = figures().to_json().replace(
            "  \"paths\": [\n    \"tiny_pair\",\n    \"vm_pair\"\n  ],\n",
            "",
        );
        assert!(!text.contains("paths"));
        let f = Figures::from_json(&text).unwrap();
        assert_eq!(f.paths, ["tiny_pair", "vm_pair"]);
        let lowered = figures().scaled(90);
        assert_eq!(lowered.get("tiny_pair", "minimal"), Some(136_422));
        assert_eq!(lowered.get("vm_pair", "fast"), Some(75_571));
        assert_eq!(lowered.env, env());
        let mut other = env();
        assert!(env().differences(&other).is_empty());
        other.cpu = "Intel Xeon".into();
        assert_eq!(
            env().differences(&other),
            [("CPU", "AMD EPYC".to_owned(), "Intel Xeon".to_owned())]
        );
    }
}
