//! The regression check: every count of a run against the baseline's, failing when one is more
//! than [`TOLERANCE_PCT`]% above it (the contested and poisoned paths: their own allowance). It
//! is enforced only when the run's environment (rustc, CPU, glibc, valgrind) is the baseline's;
//! otherwise it is a warning. The reference rows (the peer allocators) are shown, never checked.

use std::collections::BTreeSet;

use super::figures::{split_id, Figures};
use super::rules::{contested, poisoned, CONTESTED_TOLERANCE_PCT, POISONED_TOLERANCE_PCT};
use super::show_per_op;
use crate::matrix::report::md_table;
use crate::test::MODES;

/// How far above the baseline a count may be, in percent.
pub const TOLERANCE_PCT: u64 = 2;

/// The reference contenders: informational rows, never checked.
pub const PEERS: [&str; 3] = ["glibc", "mimalloc", "jemalloc"];

/// The verdict on one benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// At most [`TOLERANCE_PCT`]% above the baseline (or below it).
    Within,
    /// More than [`TOLERANCE_PCT`]% above the baseline.
    Regressed,
    /// Measured, but not in the baseline.
    New,
    /// In the baseline, but not measured.
    Gone,
}

/// One benchmark: its count now and in the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `path/contender`.
    pub id: String,
    pub current: Option<u64>,
    pub baseline: Option<u64>,
}

impl Line {
    pub fn status(&self) -> Status {
        let tolerance = match split_id(&self.id) {
            Some((path, who)) if contested(path, who) => CONTESTED_TOLERANCE_PCT,
            Some((path, who)) if poisoned(path, who) => POISONED_TOLERANCE_PCT,
            _ => TOLERANCE_PCT,
        };
        match (self.current, self.baseline) {
            (Some(c), Some(b)) if exceeds_by(c, b, tolerance) => Status::Regressed,
            (Some(_), Some(_)) => Status::Within,
            (Some(_), None) => Status::New,
            (None, _) => Status::Gone,
        }
    }

    /// `(current − baseline) / baseline` in percent.
    pub fn change_pct(&self) -> Option<f64> {
        match (self.current, self.baseline) {
            (Some(c), Some(b)) if b > 0 => Some((c as f64 - b as f64) / b as f64 * 100.0),
            _ => None,
        }
    }

    /// Whether this is a reference row (a peer allocator), never checked.
    pub fn is_reference(&self) -> bool {
        split_id(&self.id).is_some_and(|(_, who)| PEERS.contains(&who))
    }
}

/// Whether `current` is more than `pct`% above `baseline` (exact integer test).
pub fn exceeds_by(current: u64, baseline: u64, pct: u64) -> bool {
    u128::from(current) * 100 > u128::from(baseline) * u128::from(100 + pct)
}

/// The order of contenders in the tables: the modes, the modes' twins, the peers, anything
/// else.
pub fn contender_rank(contender: &str) -> (usize, String) {
    let twins = MODES.map(|m| format!("runtime_{m}"));
    let rank = MODES
        .iter()
        .position(|m| *m == contender)
        .or_else(|| twins.iter().position(|t| t == contender).map(|i| i + 6))
        .or_else(|| PEERS.iter().position(|p| *p == contender).map(|i| i + 11))
        .unwrap_or(usize::MAX);
    (rank, contender.to_owned())
}

/// The ids of both figure sets, path by path in the run's order (then the baseline's), each path's
/// contenders in [`contender_rank`] order.
pub fn ordered_ids(current: &Figures, baseline: &Figures) -> Vec<String> {
    let mut paths: Vec<&String> = current.paths.iter().collect();
    for p in &baseline.paths {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    let ids: BTreeSet<&String> = current.ir.keys().chain(baseline.ir.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let mut of_path: Vec<(&str, &String)> = ids
            .iter()
            .filter_map(|id| match split_id(id) {
                Some((p, who)) if p == path => Some((who, *id)),
                _ => None,
            })
            .collect();
        of_path.sort_by_key(|(who, _)| contender_rank(who));
        out.extend(of_path.into_iter().map(|(_, id)| id.clone()));
    }
    out
}

/// A run against a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub lines: Vec<Line>,
    /// `(what, in this run, in the baseline)` for every environment field that differs.
    pub env_differences: Vec<(&'static str, String, String)>,
}

impl Comparison {
    pub fn new(current: &Figures, baseline: &Figures) -> Comparison {
        let lines = ordered_ids(current, baseline)
            .into_iter()
            .map(|id| Line {
                current: current.ir.get(&id).copied(),
                baseline: baseline.ir.get(&id).copied(),
                id,
            })
            .collect();
        Comparison {
            lines,
            env_differences: current.env.differences(&baseline.env),
        }
    }

    /// Whether the check decides the verdict: the environments are the same.
    pub fn enforced(&self) -> bool {
        self.env_differences.is_empty()
    }

    /// The checked lines that are not within the tolerance (regressed, new or gone).
    pub fn failures(&self) -> Vec<&Line> {
        self.lines
            .iter()
            .filter(|l| !l.is_reference() && l.status() != Status::Within)
            .collect()
    }

    /// Whether the check passes: nothing failed, or it is not enforced.
    pub fn ok(&self) -> bool {
        !self.enforced() || self.failures().is_empty()
    }

    /// The markdown table: benchmark, Ir/op now and in the baseline, change, verdict.
    pub fn table(&self) -> String {
        let header = ["benchmark", "Ir/op", "baseline Ir/op", "change", "check"]
            .map(str::to_owned)
            .to_vec();
        let right = [false, true, true, true, false];
        let show = |n: Option<u64>| n.map_or("-".to_owned(), show_per_op);
        let rows: Vec<Vec<String>> = self
            .lines
            .iter()
            .map(|l| {
                let check = match (l.status(), l.is_reference()) {
                    (Status::Within, false) => "ok".to_owned(),
                    (Status::Regressed, false) => {
                        format!("REGRESSED (> +{TOLERANCE_PCT}%)")
                    }
                    (Status::New, _) => "NEW: not in the baseline".to_owned(),
                    (Status::Gone, _) => "GONE: not measured".to_owned(),
                    (_, true) => "reference (not checked)".to_owned(),
                };
                vec![
                    l.id.clone(),
                    show(l.current),
                    show(l.baseline),
                    l.change_pct()
                        .map_or("-".to_owned(), |p| format!("{p:+.2}%")),
                    check,
                ]
            })
            .collect();
        md_table(&header, &right, &rows)
    }

    /// One line: how many checked figures failed, and whether that decides anything.
    pub fn summary(&self) -> String {
        let checked = self.lines.iter().filter(|l| !l.is_reference()).count();
        let count = |s: Status| self.failures().iter().filter(|l| l.status() == s).count();
        let mut text = format!(
            "{} of {checked} figures more than {TOLERANCE_PCT}% above the baseline",
            count(Status::Regressed)
        );
        for (status, what) in [
            (Status::New, "not in the baseline"),
            (Status::Gone, "in the baseline but not measured"),
        ] {
            let n = count(status);
            if n > 0 {
                text += &format!(", {n} {what}");
            }
        }
        let reference = self.lines.len() - checked;
        if reference > 0 {
            text += &format!(" ({reference} reference rows not checked)");
        }
        if !self.enforced() {
            text += "; NOT ENFORCED: the environment differs from the baseline's";
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines more than the tolerance above the baseline, reference rows included.
    fn regressed(c: &Comparison) -> usize {
        c.lines
            .iter()
            .filter(|l| l.status() == Status::Regressed)
            .count()
    }

    const BASE: [(&str, u64); 4] = [
        ("tiny_pair/minimal", 148),
        ("tiny_pair/runtime_minimal", 176),
        ("tiny_pair/mimalloc", 74),
        ("vm_pair/fast", 82),
    ];

    #[test]
    fn two_percent_is_the_limit_exactly() {
        for (current, baseline, want) in [
            (102, 100, false),
            (103, 100, true),
            (90, 100, false),
            (10_200, 10_000, false),
            (10_201, 10_000, true),
            (0, 0, false),
            (1, 0, true),
        ] {
            let got = exceeds_by(current, baseline, TOLERANCE_PCT);
            assert_eq!(got, want, "{current} against {baseline}");
        }
    }

    /// A line of `id` measuring `current` against a baseline of 10,000.
    fn line(id: &str, current: u64) -> Line {
        Line {
            id: id.to_owned(),
            current: Some(current),
            baseline: Some(10_000),
        }
    }

    #[test]
    fn learning_modes_on_vm_pair_and_research_on_a_poisoned_path_are_allowed_five_percent() {
        use Status::{Regressed, Within};
        for (id, current, want) in [
            ("small_fill/research", 10_500, Within),
            ("small_pair/runtime_research", 10_500, Within),
            ("small_pair/research", 10_501, Regressed),
            ("tiny_pair/research", 10_201, Regressed),
            ("small_fill/minimal", 10_201, Regressed),
            ("vm_pair/learning", 10_500, Within),
            ("vm_pair/runtime_research", 10_501, Regressed),
            ("vm_pair/balanced", 10_201, Regressed),
            ("tiny_pair/learning", 10_201, Regressed),
        ] {
            assert_eq!(line(id, current).status(), want, "{id}");
        }
        assert!(contender_rank("research") < contender_rank("runtime_minimal"));
    }

    #[test]
    fn regressions_new_and_gone_figures_fail_where_enforced_in_path_and_contender_order() {
        let c = Comparison::new(&Figures::of(&BASE), &Figures::of(&BASE));
        assert!(c.ok() && c.enforced() && c.failures().is_empty());
        assert_eq!(
            c.summary(),
            "0 of 3 figures more than 2% above the baseline (1 reference rows not checked)"
        );
        let base = Figures::of(&BASE);
        let c = Comparison::new(&base, &base.scaled(90));
        assert!(!c.ok());
        assert_eq!(c.failures().len(), 3);
        assert_eq!(regressed(&c), 4, "the reference row too, unchecked");
        assert!(c.summary().starts_with("3 of 3 figures more than 2% above"));
        let table = c.table();
        assert!(table.contains("| tiny_pair/minimal "), "{table}");
        assert!(table.contains("+11.11% | REGRESSED (> +2%)"), "{table}");
        assert!(table.contains("reference (not checked)"), "{table}");
        let mut now = BASE.to_vec();
        now.retain(|(id, _)| *id != "vm_pair/fast");
        now.push(("tiny_pair/fast", 149));
        let c = Comparison::new(&Figures::of(&now), &Figures::of(&BASE));
        let failed: Vec<(&str, Status)> = c
            .failures()
            .iter()
            .map(|l| (l.id.as_str(), l.status()))
            .collect();
        assert_eq!(
            failed,
            [
                ("tiny_pair/fast", Status::New),
                ("vm_pair/fast", Status::Gone)
            ]
        );
        assert!(!c.ok());
        assert!(c
            .summary()
            .contains(", 1 not in the baseline, 1 in the baseline but not measured"));
        let base = Figures::of(&BASE);
        let mut other = base.scaled(50);
        other.env.cpu = "Intel Xeon".into();
        let c = Comparison::new(&base, &other);
        assert!(!c.enforced());
        assert_eq!(c.failures().len(), 3);
        assert!(c.ok());
        assert!(c
            .summary()
            .ends_with("NOT ENFORCED: the environment differs from the baseline's"));
        assert_eq!(
            c.env_differences,
            [("CPU", "AMD EPYC".to_owned(), "Intel Xeon".to_owned())]
        );
        let mut worse = BASE.to_vec();
        worse[2].1 = 200;
        let c = Comparison::new(&Figures::of(&worse), &Figures::of(&BASE));
        assert!(c.ok());
        assert_eq!(regressed(&c), 1);
        let ids = [
            ("tiny_pair/jemalloc", 1),
            ("tiny_pair/runtime_fast", 1),
            ("tiny_pair/fast", 1),
            ("tiny_pair/minimal", 1),
            ("tiny_pair/runtime_minimal", 1),
            ("small_pair/minimal", 1),
        ];
        let f = Figures::of(&ids);
        assert_eq!(
            ordered_ids(&f, &Figures::of(&[("pool/minimal", 1)])),
            [
                "tiny_pair/minimal",
                "tiny_pair/fast",
                "tiny_pair/runtime_minimal",
                "tiny_pair/runtime_fast",
                "tiny_pair/jemalloc",
                "small_pair/minimal",
                "pool/minimal"
            ]
        );
    }
}
