//! Running the matrix: `bench-BIN --list`, one process per repetition of a cell, the
//! interleaved schedule, and the parsing of the bench's one line of output.
//!
//! The contract with `benches/src/bin/bench.rs`: `bench SCENARIO [--scale F]` prints exactly
//! `allocator=NAME scenario=NAME ops=U64 ns=U64 faults=U64 maxrss_kib=U64 threads=U64` and exits
//! 0, NAME being the contender's name (`runtime-fast` for `bench-runtime` with
//! `HAKMEM_MODE=fast`); anything else fails that one run, which is recorded and the matrix goes
//! on.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::report::fmt_ns;
use super::{bin_path, Contender};
use crate::cmd;

/// A run that takes longer than this is killed and counted as failed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A scenario as `bench --list` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScenarioInfo {
    pub name: String,
    /// Its one-line description.
    pub about: String,
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub ops: u64,
    /// Wall time of the measured part.
    pub ns: u64,
    /// Minor + major page faults during it.
    pub faults: u64,
    /// The process's peak RSS.
    pub maxrss_kib: u64,
    pub threads: u64,
}

impl Sample {
    pub fn ns_per_op(&self) -> f64 {
        self.ns as f64 / self.ops as f64
    }

    pub fn faults_per_op(&self) -> f64 {
        self.faults as f64 / self.ops as f64
    }
}

/// The bench's line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchLine {
    pub allocator: String,
    pub scenario: String,
    pub sample: Sample,
}

/// Parses `allocator=… scenario=… ops=… ns=… faults=… maxrss_kib=… threads=…` (any order, every
/// key once, nothing else; `ops` must not be 0).
pub fn parse_line(line: &str) -> Result<BenchLine, String> {
    let mut text: [Option<&str>; 2] = [None; 2];
    let mut nums: [Option<u64>; 5] = [None; 5];
    const TEXT: [&str; 2] = ["allocator", "scenario"];
    const NUMS: [&str; 5] = ["ops", "ns", "faults", "maxrss_kib", "threads"];
    for field in line.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("`{field}` is not key=value"))?;
        if let Some(i) = TEXT.iter().position(|k| *k == key) {
            if text[i].replace(value).is_some() {
                return Err(format!("`{key}` given twice"));
            }
        } else if let Some(i) = NUMS.iter().position(|k| *k == key) {
            let n = value
                .parse::<u64>()
                .map_err(|_| format!("`{key}={value}` is not a whole number"))?;
            if nums[i].replace(n).is_some() {
                return Err(format!("`{key}` given twice"));
            }
        } else {
            return Err(format!("unknown key `{key}`"));
        }
    }
    let missing = TEXT
        .iter()
        .zip(text.iter().map(Option::is_none))
        .chain(NUMS.iter().zip(nums.iter().map(Option::is_none)))
        .filter(|(_, m)| *m)
        .map(|(k, _)| *k)
        .collect::<Vec<_>>();
    if !missing.is_empty() {
        return Err(format!("missing {}", missing.join(", ")));
    }
    let n = |i: usize| nums[i].unwrap_or_default();
    if n(0) == 0 {
        return Err("ops=0".to_owned());
    }
    Ok(BenchLine {
        allocator: text[0].unwrap_or_default().to_owned(),
        scenario: text[1].unwrap_or_default().to_owned(),
        sample: Sample {
            ops: n(0),
            ns: n(1),
            faults: n(2),
            maxrss_kib: n(3),
            threads: n(4),
        },
    })
}

/// Parses `bench --list`: `NAME<TAB>description` per line.
pub fn parse_list(text: &str) -> Result<Vec<ScenarioInfo>, String> {
    let mut list: Vec<ScenarioInfo> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, about) = line.split_once('\t').unwrap_or((line, ""));
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains(',') {
            return Err(format!("bad scenario line `{line}`"));
        }
        if list.iter().any(|s| s.name == name) {
            return Err(format!("scenario `{name}` listed twice"));
        }
        list.push(ScenarioInfo {
            name: name.to_owned(),
            about: about.trim().to_owned(),
        });
    }
    if list.is_empty() {
        return Err("no scenarios listed".to_owned());
    }
    Ok(list)
}

/// Runs `bin --list`.
pub fn list_scenarios(bin: &Path) -> Result<Vec<ScenarioInfo>, String> {
    let out = cmd::command(bin, &["--list"], None)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start: {e}"))?;
    if !out.status.success() {
        let last = last_line(&String::from_utf8_lossy(&out.stderr));
        return Err(format!("{}{last}", out.status));
    }
    parse_list(&String::from_utf8_lossy(&out.stdout))
}

/// `: LINE` for the last non-empty line of `text`, or nothing.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default()
}

/// The command line of one run: `SCENARIO [--scale F]`.
pub fn run_args(scenario: &str, scale: Option<f64>) -> Vec<String> {
    let mut args = vec![scenario.to_owned()];
    if let Some(f) = scale {
        args.extend(["--scale".to_owned(), f.to_string()]);
    }
    args
}

/// Runs `bin SCENARIO [--scale F]` once (with `HAKMEM_MODE=mode` or without it), its output
/// kept at `stem`.{out,err}, killing it after `timeout`, and parses its line.
pub fn run_one(
    bin: &Path,
    scenario: &str,
    mode: Option<&str>,
    scale: Option<f64>,
    timeout: Duration,
    stem: &Path,
) -> Result<BenchLine, String> {
    let command = cmd::command(bin, &run_args(scenario, scale), mode);
    let cmd::Finished {
        status,
        stdout,
        stderr,
        ..
    } = cmd::run_timed(command, stem, timeout)?;
    if !status.success() {
        return Err(format!("{status}{}", last_line(&stderr)));
    }
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let [line] = lines.as_slice() else {
        let (n, last) = (lines.len(), last_line(&stdout));
        return Err(format!("expected one line on stdout, got {n}{last}"));
    };
    let parsed = parse_line(line).map_err(|e| format!("bad bench line ({e}): {line}"))?;
    if parsed.scenario != scenario {
        let reported = &parsed.scenario;
        return Err(format!(
            "asked for scenario {scenario}, bench reported {reported}"
        ));
    }
    Ok(parsed)
}

/// What the matrix runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub reps: u32,
    pub scale: Option<f64>,
    pub scenarios: Vec<ScenarioInfo>,
    pub contenders: Vec<&'static Contender>,
}

impl Plan {
    /// Runs in all.
    pub fn runs(&self) -> usize {
        self.reps as usize * self.scenarios.len() * self.contenders.len()
    }
}

/// One slot of the schedule: indices into [`Plan`]'s lists; `rep` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub rep: u32,
    pub scenario: usize,
    pub contender: usize,
}

/// The order of the runs: for each repetition, for each scenario, every contender, in an order
/// shuffled afresh for each (repetition, scenario) by a fixed-seed generator (the same schedule
/// every time). Shuffled, not rotated: a rotation keeps every contender right after the same one
/// in every repetition, and a run is not independent of the one before it. A process that
/// faulted in and returned much memory in 4 KiB pages (MINIMAL on `malloc-large`, say) makes the
/// next process's huge-page faults slow on these VMs; under a rotation FAST, always after
/// MINIMAL, paid that in every repetition (docs/benchmarks.md).
pub fn schedule(reps: u32, scenarios: usize, contenders: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(reps as usize * scenarios * contenders);
    // xorshift64*, fixed seed.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |bound: usize| -> usize {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    };
    let mut order: Vec<usize> = (0..contenders).collect();
    for rep in 0..reps {
        for scenario in 0..scenarios {
            // Fisher–Yates.
            for i in (1..contenders).rev() {
                order.swap(i, next(i + 1));
            }
            slots.extend(order.iter().map(|&contender| Slot {
                rep,
                scenario,
                contender,
            }));
        }
    }
    slots
}

/// One run's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub slot: Slot,
    /// What the bench said it was (`None` if it failed).
    pub allocator: Option<String>,
    pub result: Result<Sample, String>,
}

/// Runs the whole schedule, one progress line per run. Contenders whose binary is in `broken`
/// (its build failed) are not run: their runs are recorded as failed.
pub fn run_all(plan: &Plan, bin_dir: &Path, broken: &[&str]) -> Vec<Record> {
    let slots = schedule(plan.reps, plan.scenarios.len(), plan.contenders.len());
    let total = slots.len();
    let width = total.to_string().len();
    let mut records = Vec::with_capacity(total);
    for (i, slot) in slots.into_iter().enumerate() {
        let scenario = &plan.scenarios[slot.scenario].name;
        let contender = plan.contenders[slot.contender];
        print!(
            "[{:>width$}/{total}] {scenario} × {} (rep {}/{}) … ",
            i + 1,
            contender.name,
            slot.rep + 1,
            plan.reps
        );
        let _ = std::io::stdout().flush();
        let outcome = if broken.contains(&contender.bin) {
            Err(format!("bench-{} did not build", contender.bin))
        } else {
            let bin = bin_path(bin_dir, contender.bin);
            let stem = bin_dir.with_file_name("last-run");
            run_one(
                &bin,
                scenario,
                contender.mode,
                plan.scale,
                RUN_TIMEOUT,
                &stem,
            )
            .and_then(|line| {
                // A binary built with the wrong allocator, or a twin that did not see its
                // HAKMEM_MODE, would otherwise pass for the contender.
                if line.allocator == contender.name {
                    Ok(line)
                } else {
                    Err(format!(
                        "bench reported allocator={}, expected {}",
                        line.allocator, contender.name
                    ))
                }
            })
        };
        let record = match outcome {
            Ok(line) => {
                println!("{} ns/op", fmt_ns(line.sample.ns_per_op()));
                Record {
                    slot,
                    allocator: Some(line.allocator),
                    result: Ok(line.sample),
                }
            }
            Err(e) => {
                println!("FAILED: {e}");
                Record {
                    slot,
                    allocator: None,
                    result: Err(e),
                }
            }
        };
        records.push(record);
    }
    records
}

#[cfg(test)]
impl Plan {
    /// Every contender over `scenarios` (without descriptions).
    pub fn of(reps: u32, scale: Option<f64>, scenarios: &[&str]) -> Plan {
        let scenarios = (scenarios.iter())
            .map(|n| ScenarioInfo {
                name: n.to_string(),
                about: String::new(),
            })
            .collect();
        let contenders = super::CONTENDERS.iter().collect();
        Plan {
            reps,
            scale,
            scenarios,
            contenders,
        }
    }

    /// Every run of the schedule, `run` giving each slot's outcome.
    pub fn records(&self, run: impl Fn(Slot, &str) -> Result<Sample, String>) -> Vec<Record> {
        let slots = schedule(self.reps, self.scenarios.len(), self.contenders.len());
        (slots.into_iter())
            .map(|slot| {
                let name = self.contenders[slot.contender].name;
                let result = run(slot, name);
                let allocator = result.is_ok().then(|| name.to_owned());
                Record {
                    slot,
                    allocator,
                    result,
                }
            })
            .collect()
    }
}

#[cfg(test)]
impl Sample {
    /// `ns` over `ops` operations, one thread.
    pub fn of(ops: u64, ns: u64, faults: u64, maxrss_kib: u64) -> Sample {
        let threads = 1;
        Sample {
            ops,
            ns,
            faults,
            maxrss_kib,
            threads,
        }
    }
}

/// Writes an executable shell script (for tests that need a fake bench).
#[cfg(test)]
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "allocator=fast scenario=vm ops=100 ns=123456 faults=512 maxrss_kib=4096 threads=2";

    #[test]
    fn parses_the_bench_line_and_the_list_and_rejects_bad_ones() {
        let p = parse_line(LINE).unwrap();
        assert_eq!(p.allocator, "fast");
        assert_eq!(p.scenario, "vm");
        let want = Sample::of(100, 123_456, 512, 4096);
        assert_eq!(p.sample, Sample { threads: 2, ..want });
        assert_eq!(p.sample.ns_per_op(), 1234.56);
        assert_eq!(p.sample.faults_per_op(), 5.12);
        // Any order, surrounding blanks.
        let shuffled =
            "  threads=1 ns=5 ops=5 scenario=tiny faults=0 maxrss_kib=1 allocator=glibc\n";
        assert_eq!(parse_line(shuffled).unwrap().sample.ns_per_op(), 1.0);
        // `…` stands for `allocator=a scenario=b`; each line, then why it is refused.
        const BAD: &str = "
 | missing allocator, scenario, ops, ns, faults, maxrss_kib, threads
… ops=1 ns=1 faults=1 maxrss_kib=1 | missing threads
… ops=0 ns=1 faults=1 maxrss_kib=1 threads=1 | ops=0
… ops=1 ns=-1 faults=1 maxrss_kib=1 threads=1 | `ns=-1` is not a whole number
… ops=1 ns=1 faults=1 maxrss_kib=1 threads=1 x=2 | unknown key `x`
… ops=1 ops=1 ns=1 faults=1 maxrss_kib=1 threads=1 | `ops` given twice
hello | `hello` is not key=value";
        for case in BAD.lines().skip(1) {
            let (line, why) = case.split_once(" | ").unwrap();
            let line = line.replace('…', "allocator=a scenario=b");
            assert_eq!(parse_line(&line), Err(why.to_owned()), "{line}");
        }
        let list = parse_list("json\tC original's JSON\nvm\t2 MiB\n\ntiny\n").unwrap();
        let names: Vec<_> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["json", "vm", "tiny"]);
        assert_eq!(list[0].about, "C original's JSON");
        assert_eq!(list[2].about, "");
        assert!(parse_list("").is_err());
        assert!(parse_list("a\tx\na\ty\n").is_err());
        assert!(parse_list("two words\tx\n").is_err());
    }

    #[test]
    fn schedule_interleaves_and_shuffles_and_runs_report_failures() {
        let s = schedule(3, 2, 4);
        assert_eq!(s.len(), 24);
        let order = |rep: u32, scenario: usize| -> Vec<usize> {
            s.iter()
                .filter(|x| x.rep == rep && x.scenario == scenario)
                .map(|x| x.contender)
                .collect()
        };
        // Every (repetition, scenario) runs each contender once, …
        for rep in 0..3 {
            for scenario in 0..2 {
                let mut o = order(rep, scenario);
                o.sort_unstable();
                assert_eq!(o, [0, 1, 2, 3]);
            }
        }
        // … the same schedule every time, …
        assert_eq!(schedule(3, 2, 4), s);
        // … and over repetitions no contender always follows the same one (13 contenders,
        // 5 repetitions, as the default matrix).
        let big = schedule(5, 1, 13);
        for c in 0..13 {
            let before: std::collections::BTreeSet<Option<usize>> = (0..5)
                .map(|rep| {
                    let o: Vec<usize> = big
                        .iter()
                        .filter(|x| x.rep == rep)
                        .map(|x| x.contender)
                        .collect();
                    let at = o.iter().position(|&x| x == c).unwrap();
                    at.checked_sub(1).map(|i| o[i])
                })
                .collect();
            assert!(
                before.len() > 1,
                "contender {c} always runs after {before:?}"
            );
        }
        // Repetition by repetition: all of rep 0 before any of rep 1.
        assert!(s[..8].iter().all(|x| x.rep == 0));
        // Every cell exactly `reps` times.
        for scenario in 0..2 {
            for contender in 0..4 {
                let n = s
                    .iter()
                    .filter(|x| x.scenario == scenario && x.contender == contender)
                    .count();
                assert_eq!(n, 3);
            }
        }
        assert_eq!(run_args("vm", None), ["vm"]);
        assert_eq!(run_args("vm", Some(0.05)), ["vm", "--scale", "0.05"]);
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bench-fake");
        write_script(
            &bin,
            "case \"$1\" in\n\
             ok) echo \"allocator=${HAKMEM_MODE:-none} scenario=ok ops=10 ns=100 faults=1 maxrss_kib=7 threads=1\" ;;\n\
             noisy) i=0; while [ $i -lt 3000 ]; do echo 'log line log line log line log line' >&2; i=$((i+1)); done;\n\
                    echo 'allocator=x scenario=noisy ops=1 ns=1 faults=0 maxrss_kib=1 threads=1' ;;\n\
             crash) echo 'bench: boom' >&2; exit 3 ;;\n\
             two) echo a; echo b ;;\n\
             slow) sleep 5 ;;\n\
             esac\n",
        );
        let long = Duration::from_secs(30);
        let stem = dir.join("run");
        let run_one = |bin: &Path, scenario, mode, scale, timeout| {
            run_one(bin, scenario, mode, scale, timeout, &stem)
        };
        let ok = run_one(&bin, "ok", Some("fast"), None, long).unwrap();
        assert_eq!(ok.allocator, "fast");
        assert_eq!(ok.sample.ns_per_op(), 10.0);
        let ok = run_one(&bin, "ok", None, Some(0.5), long).unwrap();
        assert_eq!(ok.allocator, "none");
        assert!(run_one(&bin, "noisy", None, None, long).is_ok());
        let err = run_one(&bin, "crash", None, None, long).unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.ends_with(": bench: boom"),
            "{err}"
        );
        let err = run_one(&bin, "two", None, None, long).unwrap_err();
        assert!(
            err.starts_with("expected one line on stdout, got 2"),
            "{err}"
        );
        let err = run_one(&bin, "slow", None, None, Duration::from_millis(100)).unwrap_err();
        assert!(err.starts_with("killed after 0.1 s"), "{err}");
        let missing = run_one(&dir.join("nope"), "ok", None, None, long).unwrap_err();
        assert!(missing.starts_with("could not start"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
