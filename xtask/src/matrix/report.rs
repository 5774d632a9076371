//! The matrix's reports: `results.csv` (one row per cell), `results.json` (the cells, every run,
//! the metadata; serde) and `report.md` (the tables), plus the number formatting they share.
//! Everything here is pure.

use serde::Serialize;

use super::build::Machine;
use super::run::{Plan, Record, Sample, ScenarioInfo};
use super::stats::{self, Cell, ModePair};
use super::BASELINE;

/// The scenarios of the compiled-vs-runtime table: the C original's (`vm`) and the hot path.
pub const PAIR_SCENARIOS: [&str; 2] = ["vm", "tiny"];

/// What the reports say about the run besides the cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub machine: Machine,
    pub reps: u32,
    pub scale: Option<f64>,
    /// The command line, as a person would type it.
    pub command: String,
    pub build_secs: f64,
    pub run_secs: f64,
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// `1234567` → `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// ns/op for people: `1,234` from 100 up, `12.3` from 10, `1.23` below.
pub fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "?".to_owned()
    } else if ns >= 99.95 {
        group_thousands(ns.round() as u64)
    } else if ns >= 9.995 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.2}")
    }
}

/// A ratio: `0.87×` (`12.3×` from 10 up).
pub fn fmt_ratio(r: f64) -> String {
    if r >= 9.995 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A relative difference: `+3.4%`, `-12.0%`.
pub fn fmt_pct(fraction: f64) -> String {
    format!("{:+.1}%", fraction * 100.0)
}

/// Page faults per op: `0`, `3.2e-4`, `0.52`, `12.5`, `1,024`.
pub fn fmt_faults(f: f64) -> String {
    if f == 0.0 {
        "0".to_owned()
    } else if f < 0.01 {
        format!("{f:.1e}")
    } else if f < 10.0 {
        format!("{f:.2}")
    } else if f < 100.0 {
        format!("{f:.1}")
    } else {
        group_thousands(f.round() as u64)
    }
}

/// A size given in KiB: `812 KiB`, `12.3 MiB`, `1.25 GiB`.
pub fn fmt_kib(kib: u64) -> String {
    let k = kib as f64;
    if kib < 1024 {
        format!("{kib} KiB")
    } else if kib < 1024 * 1024 {
        format!("{:.1} MiB", k / 1024.0)
    } else {
        format!("{:.2} GiB", k / (1024.0 * 1024.0))
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// The CSV header of `results.csv`.
pub const CSV_HEADER: &str = "scenario,allocator,reps,median_ns_per_op,min_ns_per_op,\
max_ns_per_op,faults_per_op,peak_rss_kib,vs_mimalloc,runtime_vs_compiled,failures";

/// A CSV field: quoted (with `"` doubled) if it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A number for a machine-read file (`precision` decimals; empty for none).
fn num(x: Option<f64>, precision: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.precision$}"),
        _ => String::new(),
    }
}

/// `results.csv`: one row per cell, in report order.
pub fn csv(cells: &[Cell]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for c in cells {
        let row = [
            csv_field(&c.scenario),
            csv_field(c.contender.name),
            c.samples.len().to_string(),
            num(c.median_ns, 3),
            num(c.min_ns, 3),
            num(c.max_ns, 3),
            num(c.faults_per_op, 6),
            c.peak_rss_kib.map(|k| k.to_string()).unwrap_or_default(),
            num(c.vs_baseline, 4),
            num(c.runtime_vs_compiled, 4),
            c.failures.len().to_string(),
        ];
        out += &row.join(",");
        out.push('\n');
    }
    out
}

/// `samples.csv`: one row per successful run (`rep` counts from 1), for analyses that pair
/// runs measured close together in time (`cargo xtask bench-compare`).
pub fn samples_csv(plan: &Plan, records: &[Record]) -> String {
    let mut out = String::from("scenario,allocator,rep,ns_per_op,faults_per_op,maxrss_kib\n");
    for r in records {
        if let Ok(sample) = &r.result {
            out += &format!(
                "{},{},{},{:.3},{:.6},{}\n",
                csv_field(&plan.scenarios[r.slot.scenario].name),
                csv_field(plan.contenders[r.slot.contender].name),
                r.slot.rep + 1,
                sample.ns_per_op(),
                sample.faults_per_op(),
                sample.maxrss_kib
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// JSON

/// `results.json`.
#[derive(Serialize)]
struct Results<'a> {
    meta: MetaJson<'a>,
    scenarios: &'a [ScenarioInfo],
    contenders: Vec<ContenderJson>,
    cells: Vec<CellJson<'a>>,
    /// The C programs section ([`super::cprog::json`]), when it ran: a key of its own, so that
    /// `cells` keeps one shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    c_programs: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct MetaJson<'a> {
    date: &'a str,
    cpu: &'a str,
    nproc: usize,
    rustc: &'a str,
    glibc: &'a str,
    reps: u32,
    scale: f64,
    command: &'a str,
    baseline: &'a str,
    build_seconds: f64,
    run_seconds: f64,
}

#[derive(Serialize)]
struct ContenderJson {
    name: &'static str,
    binary: String,
    hakmem_mode: Option<&'static str>,
    compiled: Option<&'static str>,
}

/// A cell's figures (non-finite numbers are written as `null`) and its runs.
#[derive(Serialize)]
struct CellJson<'a> {
    scenario: &'a str,
    allocator: &'static str,
    reps: usize,
    median_ns_per_op: Option<f64>,
    min_ns_per_op: Option<f64>,
    max_ns_per_op: Option<f64>,
    faults_per_op: Option<f64>,
    peak_rss_kib: Option<u64>,
    vs_mimalloc: Option<f64>,
    runtime_vs_compiled: Option<f64>,
    failures: usize,
    samples: Vec<RunJson<'a>>,
}

/// One run of a cell (`rep` counts from 1).
#[derive(Serialize)]
#[serde(untagged)]
enum RunJson<'a> {
    Ok {
        rep: u32,
        allocator: Option<&'a str>,
        #[serde(flatten)]
        sample: &'a Sample,
    },
    Failed {
        rep: u32,
        error: &'a str,
    },
}

/// `results.json`: metadata, scenarios, contenders, every cell with its runs, and the C programs
/// section under `c_programs` if it ran.
pub fn json(
    meta: &Meta,
    plan: &Plan,
    cells: &[Cell],
    records: &[Record],
    c_programs: Option<serde_json::Value>,
) -> String {
    let m = &meta.machine;
    let mut cell_json = Vec::with_capacity(cells.len());
    for (si, scenario) in plan.scenarios.iter().enumerate() {
        for (ci, contender) in plan.contenders.iter().enumerate() {
            let Some(c) = stats::find(cells, &scenario.name, contender.name) else {
                continue;
            };
            let mut runs: Vec<&Record> = records
                .iter()
                .filter(|r| r.slot.scenario == si && r.slot.contender == ci)
                .collect();
            runs.sort_by_key(|r| r.slot.rep);
            let samples = runs
                .iter()
                .map(|r| match &r.result {
                    Ok(sample) => RunJson::Ok {
                        rep: r.slot.rep + 1,
                        allocator: r.allocator.as_deref(),
                        sample,
                    },
                    Err(error) => RunJson::Failed {
                        rep: r.slot.rep + 1,
                        error,
                    },
                })
                .collect();
            cell_json.push(CellJson {
                scenario: &c.scenario,
                allocator: c.contender.name,
                reps: c.samples.len(),
                median_ns_per_op: c.median_ns,
                min_ns_per_op: c.min_ns,
                max_ns_per_op: c.max_ns,
                faults_per_op: c.faults_per_op,
                peak_rss_kib: c.peak_rss_kib,
                vs_mimalloc: c.vs_baseline,
                runtime_vs_compiled: c.runtime_vs_compiled,
                failures: c.failures.len(),
                samples,
            });
        }
    }
    let results = Results {
        meta: MetaJson {
            date: &m.date,
            cpu: &m.cpu,
            nproc: m.cores,
            rustc: &m.rustc,
            glibc: &m.glibc,
            reps: meta.reps,
            scale: meta.scale.unwrap_or(1.0),
            command: &meta.command,
            baseline: BASELINE,
            build_seconds: round3(meta.build_secs),
            run_seconds: round3(meta.run_secs),
        },
        scenarios: &plan.scenarios,
        contenders: plan
            .contenders
            .iter()
            .map(|c| ContenderJson {
                name: c.name,
                binary: format!("bench-{}", c.bin),
                hakmem_mode: c.mode,
                compiled: c.compiled,
            })
            .collect(),
        cells: cell_json,
        c_programs,
    };
    serde_json::to_string_pretty(&results).expect("plain data serializes") + "\n"
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// A markdown table with padded columns (`|` in a cell escaped); `right[i]` right-aligns
/// column `i`.
pub fn md_table(header: &[String], right: &[bool], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|row| row.iter().map(|c| c.replace('|', "\\|")).collect())
        .collect();
    let mut width: Vec<usize> = rows[0].iter().map(|h| h.chars().count().max(3)).collect();
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let right = |i: usize| right.get(i).copied().unwrap_or(false);
    let line = |row: &[String]| {
        let mut s = String::from("|");
        for (i, w) in width.iter().enumerate() {
            let cell = row.get(i).map_or("", String::as_str);
            let pad = " ".repeat(w - cell.chars().count());
            s += &match right(i) {
                true => format!(" {pad}{cell} |"),
                false => format!(" {cell}{pad} |"),
            };
        }
        s + "\n"
    };
    let rule: Vec<String> = (width.iter().enumerate())
        .map(|(i, &w)| match right(i) {
            true => format!("{}:", "-".repeat(w - 1)),
            false => "-".repeat(w),
        })
        .collect();
    let mut out = line(&rows[0]) + &line(&rule);
    for row in &rows[1..] {
        out += &line(row);
    }
    out
}

/// ` (2 failed)` when some runs of the cell failed.
fn failed_note(c: &Cell) -> String {
    if c.failures.is_empty() {
        String::new()
    } else {
        format!(" ({} failed)", c.failures.len())
    }
}

/// A table with one row per scenario and one column per contender, `cell` filling each.
fn scenario_table(plan: &Plan, cells: &[Cell], cell: impl Fn(&Cell) -> String) -> String {
    let mut header = vec!["scenario".to_owned()];
    header.extend(plan.contenders.iter().map(|c| c.name.to_owned()));
    let right: Vec<bool> = header.iter().enumerate().map(|(i, _)| i > 0).collect();
    let rows: Vec<Vec<String>> =
        plan.scenarios
            .iter()
            .map(|s| {
                let mut row = vec![s.name.clone()];
                row.extend(plan.contenders.iter().map(|c| {
                    match stats::find(cells, &s.name, c.name) {
                        Some(x) if x.samples.is_empty() => "FAILED".to_owned(),
                        Some(x) => cell(x) + &failed_note(x),
                        None => "-".to_owned(),
                    }
                }));
                row
            })
            .collect();
    md_table(&header, &right, &rows)
}

/// `1,234 (0.87×)`: the median and its ratio to mimalloc.
pub fn time_cell(c: &Cell) -> String {
    let median = c.median_ns.map_or_else(|| "?".to_owned(), fmt_ns);
    match c.vs_baseline {
        Some(r) => format!("{median} ({})", fmt_ratio(r)),
        None => median,
    }
}

/// `1,200–1,300`: the spread of the cell.
pub fn spread_cell(c: &Cell) -> String {
    match (c.min_ns, c.max_ns) {
        (Some(lo), Some(hi)) => format!("{}–{}", fmt_ns(lo), fmt_ns(hi)),
        _ => "?".to_owned(),
    }
}

/// `0.52 · 12.3 MiB`: median faults per op and peak RSS.
pub fn memory_cell(c: &Cell) -> String {
    let faults = c.faults_per_op.map_or_else(|| "?".to_owned(), fmt_faults);
    let rss = c.peak_rss_kib.map_or_else(|| "?".to_owned(), fmt_kib);
    format!("{faults} · {rss}")
}

/// `+100 ns (+2.9%)`: what the runtime twin costs more than its compiled mode.
pub fn overhead_cell(compiled: Option<f64>, runtime: Option<f64>) -> String {
    match (compiled, runtime) {
        (Some(c), Some(r)) if c > 0.0 => {
            let d = r - c;
            let sign = if d < 0.0 { "-" } else { "+" };
            format!("{sign}{} ns ({})", fmt_ns(d.abs()), fmt_pct(d / c))
        }
        _ => "n/a".to_owned(),
    }
}

/// The compiled-vs-runtime table (one row per mode pair).
pub fn pairs_table(plan: &Plan, pairs: &[ModePair]) -> String {
    let mut header = vec!["mode".to_owned()];
    let mut right = vec![false];
    for s in PAIR_SCENARIOS {
        header.extend([
            format!("{s} compiled ns/op"),
            format!("{s} runtime ns/op"),
            format!("{s} runtime overhead"),
        ]);
        right.extend([true; 3]);
    }
    let n = plan.scenarios.len();
    header.push(format!("runtime/compiled, geomean of {n} scenarios"));
    right.push(true);
    let rows: Vec<Vec<String>> = pairs
        .iter()
        .map(|p| {
            let mut row = vec![p.mode.to_owned()];
            for s in PAIR_SCENARIOS {
                let (c, r) = p.get(s);
                let show = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), fmt_ns);
                row.extend([show(c), show(r), overhead_cell(c, r)]);
            }
            row.push(match p.geomean {
                Some(g) if p.geomean_over == plan.scenarios.len() => fmt_pct(g - 1.0),
                Some(g) => format!("{} (of {})", fmt_pct(g - 1.0), p.geomean_over),
                None => "n/a".to_owned(),
            });
            row
        })
        .collect();
    md_table(&header, &right, &rows)
}

/// `report.md`: the header, the time table with its spread and memory tables, and the
/// compiled-vs-runtime table, each with a paragraph saying what it shows.
pub fn markdown(meta: &Meta, plan: &Plan, cells: &[Cell]) -> String {
    let reps = meta.reps;
    let scale = match meta.scale {
        Some(f) => format!("scale {f} (iteration counts shrunk: a smoke run, not a measurement)"),
        None => "full size".to_owned(),
    };
    let baseline_in = plan.contenders.iter().any(|c| c.name == BASELINE);
    let mut md = String::from("# hakmem benchmark matrix\n\n");
    md += &meta.machine.markdown(&meta.command);
    md += &format!(
        "- {} runs: {} scenarios × {} contenders × {reps} repetitions, {scale}; \
         run time {:.1} s, builds {:.1} s\n\n",
        plan.runs(),
        plan.scenarios.len(),
        plan.contenders.len(),
        meta.run_secs,
        meta.build_secs
    );
    let spread_note = format!(
        "Medians over {reps} interleaved repetition{} (each a fresh process; the contender order \
         is shuffled each repetition, so host drift hits all alike). The min–max of a cell is \
         the spread to compare a difference against: the host drifts by up to ~1.8× over minutes, \
         so only ratios within one run mean anything.",
        if reps == 1 { "" } else { "s" }
    );

    md += "## Time per operation\n\n";
    md += &scenario_table(plan, cells, time_cell);
    md += "\n";
    md += &if baseline_in {
        "Median wall-clock ns per operation of the measured pass, and in parentheses its ratio \
         to mimalloc's median in the same scenario (below 1× is faster than mimalloc). "
            .to_owned()
    } else {
        "Median wall-clock ns per operation of the measured pass (mimalloc was not selected, so \
         no ratios). "
            .to_owned()
    };
    md += &spread_note;
    md += "\n\n### Spread (min–max ns/op)\n\n";
    md += &scenario_table(plan, cells, spread_cell);
    md += "\n### Page faults per op · peak RSS\n\n";
    md += &scenario_table(plan, cells, memory_cell);
    md += "\nMedian minor + major page faults per operation during the measured pass, and the \
           largest peak resident set of the process over the repetitions (it includes the \
           unmeasured warm-up pass).\n\n";

    md += "## Compiled vs runtime (the C original's regression table, measured by us)\n\n";
    let pairs = stats::mode_pairs(plan, cells);
    if pairs.is_empty() {
        md += "n/a: select a compiled mode and its runtime twin (e.g. `--allocators \
               fast,runtime-fast`).\n";
    } else {
        md += &pairs_table(plan, &pairs);
        md += "\nEach compiled mode (its features fixed at compile time, disabled ones costing \
               nothing) against its runtime twin (`bench-runtime` with `HAKMEM_MODE=<mode>`: the \
               same hot path with a load, a compare and a branch per decision, and entry points \
               that are not inlined: the C original's design, whose own report measured MINIMAL 5% slower once modes existed). `vm` is the C \
               original's scenario (2 MiB blocks), `tiny` the small-object hot path, where a \
               flag check weighs most. The overhead is runtime − compiled; the last column is \
               the geometric mean of runtime/compiled over all scenarios, as a difference. ";
        md += &spread_note;
        md += "\n";
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::run::Sample;

    #[test]
    fn numbers_csv_fields_and_tables_for_people() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_ns(1234.4), "1,234");
        assert_eq!(fmt_ns(100.0), "100");
        assert_eq!(fmt_ns(99.96), "100");
        assert_eq!(fmt_ns(12.34), "12.3");
        assert_eq!(fmt_ns(8.126), "8.13");
        assert_eq!(fmt_ns(f64::NAN), "?");
        assert_eq!(fmt_ratio(0.8712), "0.87×");
        assert_eq!(fmt_ratio(12.34), "12.3×");
        assert_eq!(fmt_pct(0.034), "+3.4%");
        assert_eq!(fmt_pct(-0.12), "-12.0%");
        assert_eq!(fmt_faults(0.0), "0");
        assert_eq!(fmt_faults(0.00032), "3.2e-4");
        assert_eq!(fmt_faults(0.5), "0.50");
        assert_eq!(fmt_faults(12.54), "12.5");
        assert_eq!(fmt_faults(1024.0), "1,024");
        assert_eq!(fmt_kib(812), "812 KiB");
        assert_eq!(fmt_kib(12_595), "12.3 MiB");
        assert_eq!(fmt_kib(1_310_720), "1.25 GiB");
        assert_eq!(overhead_cell(Some(100.0), Some(103.0)), "+3.00 ns (+3.0%)");
        assert_eq!(overhead_cell(Some(3400.0), Some(3300.0)), "-100 ns (-2.9%)");
        assert_eq!(overhead_cell(None, Some(1.0)), "n/a");
        assert_eq!(csv_field("vm"), "vm");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");
        let t = md_table(
            &["a".into(), "bb".into()],
            &[false, true],
            &[vec!["xxxx".into(), "1".into()]],
        );
        assert_eq!(t, "| a    |  bb |\n| ---- | --: |\n| xxxx |   1 |\n");
    }

    /// Two scenarios (`vm`, `tiny`), every contender, two repetitions; jemalloc fails in tiny.
    fn fixture() -> (Meta, Plan, Vec<Cell>, Vec<Record>) {
        let mut plan = Plan::of(2, Some(0.05), &["vm", "tiny"]);
        for s in &mut plan.scenarios {
            s.about = format!("{}, \"quoted\"", s.name);
        }
        let records = plan.records(|slot, name| {
            if slot.scenario == 1 && name == "jemalloc" {
                return Err("exit status: 2: bench: \"tiny\" broke".to_owned());
            }
            let ns = if name.starts_with("runtime-") {
                110
            } else {
                100
            };
            let ns = ns * 10 * (slot.scenario as u64 * 9 + 1) + u64::from(slot.rep);
            Ok(Sample::of(10, ns, 5, 2048))
        });
        let cells = stats::summarize(&plan, &records);
        let meta = Meta {
            machine: Machine {
                date: "2026-11-23T12:00:00Z".into(),
                cpu: "AMD EPYC".into(),
                cores: 2,
                rustc: "rustc 1.95.0".into(),
                glibc: "ldd (GNU libc) 2.36".into(),
            },
            reps: 2,
            scale: Some(0.05),
            command: "cargo xtask bench-matrix --smoke".into(),
            build_secs: 1.0,
            run_secs: 2.0,
        };
        (meta, plan, cells, records)
    }

    #[test]
    fn csv_json_and_markdown_of_a_run() {
        let (_, _, cells, _) = fixture();
        let text = csv(&cells);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 26);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "vm,minimal,2,100.050,100.000,100.100,0.500000,2048,1.0000,,0"
        );
        assert!(lines[6].starts_with("vm,runtime-minimal,2,110.050,"));
        assert!(lines[6].ends_with(",1.1000,1.1000,0"), "{}", lines[6]);
        assert_eq!(lines[26], "tiny,jemalloc,0,,,,,,,,2");
        assert!(lines.iter().all(|l| l.split(',').count() == 11));
        let (meta, plan, cells, records) = fixture();
        let text = json(&meta, &plan, &cells, &records, None);
        for needle in [
            "\"date\": \"2026-11-23T12:00:00Z\"",
            "\"nproc\": 2",
            "\"scale\": 0.05",
            "\"command\": \"cargo xtask bench-matrix --smoke\"",
            "\"about\": \"vm, \\\"quoted\\\"\"",
            "\"hakmem_mode\": \"fast\"",
            "\"binary\": \"bench-runtime\"",
            "\"runtime_vs_compiled\": null",
            "\"error\": \"exit status: 2: bench: \\\"tiny\\\" broke\"",
            "\"maxrss_kib\": 2048",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).expect("well-formed JSON");
        let cells = v["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 26);
        assert_eq!(cells[0]["samples"][1]["ns"], 1001);
        assert!(cells[25]["median_ns_per_op"].is_null());
        assert!(v.get("c_programs").is_none(), "no C section, no key");
        let c = serde_json::json!({ "baseline": "mimalloc (Debian)", "cells": [] });
        let all = stats::summarize(&plan, &records);
        let text = json(&meta, &plan, &all, &records, Some(c));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["c_programs"]["baseline"], "mimalloc (Debian)");
        assert_eq!(
            v["cells"].as_array().unwrap().len(),
            26,
            "the cells keep their shape"
        );
        let (meta, plan, cells, _) = fixture();
        let md = markdown(&meta, &plan, &cells);
        assert!(
            md.contains("- machine: AMD EPYC, 2 cores; rustc 1.95.0; glibc: ldd (GNU libc) 2.36")
        );
        assert!(md.contains("- command: `cargo xtask bench-matrix --smoke`"));
        let vm = md.lines().find(|l| l.starts_with("| vm ")).unwrap();
        assert!(
            vm.contains("|   100 (1.00×) |") && vm.contains("110 (1.10×)"),
            "{vm}"
        );
        assert!(md.contains("FAILED"));
        assert!(md.contains("100–100"));
        assert!(md.contains("0.50 · 2.0 MiB"));
        // Compiled vs runtime: vm 100.05 vs 110.05 ns, +10.0 ns (+10.0%).
        let row = md
            .lines()
            .find(|l| l.starts_with("| minimal "))
            .expect("a minimal row");
        assert!(row.contains("+10.0 ns (+10.0%)"), "{row}");
        assert!(row.trim_end().ends_with("+10.0% |"), "{row}");
        assert!(md.contains("interleaved"));
    }
}
