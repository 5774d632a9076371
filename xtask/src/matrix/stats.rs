//! The statistics of the matrix, all pure: median, spread, geometric mean, ratios, and the
//! summary of each cell (scenario × contender) from its runs.

use super::run::{Plan, Record, Sample};
use super::{Contender, BASELINE};

/// The median: the middle value, or the mean of the two middle values of an even count.
/// `None` for no values. NaNs sort last.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The smallest and the largest value.
pub fn min_max(xs: &[f64]) -> Option<(f64, f64)> {
    let first = *xs.first()?;
    Some(
        xs.iter()
            .fold((first, first), |(lo, hi), &x| (lo.min(x), hi.max(x))),
    )
}

/// The geometric mean of positive values (`None` if there are none or one is not positive).
pub fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|&x| x.is_nan() || x <= 0.0) {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// `num / den` when both exist and `den` is positive and finite.
pub fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 && d.is_finite() && n.is_finite() => Some(n / d),
        _ => None,
    }
}

/// One cell of the matrix: the runs of one contender in one scenario, summarized.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub scenario: String,
    pub contender: &'static Contender,
    /// The successful runs, in repetition order.
    pub samples: Vec<Sample>,
    /// Why each failed run failed.
    pub failures: Vec<String>,
    /// Median ns/op over the samples.
    pub median_ns: Option<f64>,
    pub min_ns: Option<f64>,
    pub max_ns: Option<f64>,
    /// Median page faults per op.
    pub faults_per_op: Option<f64>,
    /// The largest peak RSS of the samples.
    pub peak_rss_kib: Option<u64>,
    /// `median_ns` / the [`BASELINE`]'s `median_ns` in the same scenario.
    pub vs_baseline: Option<f64>,
    /// For a runtime twin: `median_ns` / its compiled mode's `median_ns`.
    pub runtime_vs_compiled: Option<f64>,
}

impl Cell {
    /// A cell's own figures from its samples (the ratios are filled in by [`summarize`]).
    pub fn new(
        scenario: &str,
        contender: &'static Contender,
        samples: Vec<Sample>,
        failures: Vec<String>,
    ) -> Cell {
        let ns: Vec<f64> = samples.iter().map(Sample::ns_per_op).collect();
        let faults: Vec<f64> = samples.iter().map(Sample::faults_per_op).collect();
        let spread = min_max(&ns);
        Cell {
            scenario: scenario.to_owned(),
            contender,
            median_ns: median(&ns),
            min_ns: spread.map(|s| s.0),
            max_ns: spread.map(|s| s.1),
            faults_per_op: median(&faults),
            peak_rss_kib: samples.iter().map(|s| s.maxrss_kib).max(),
            samples,
            failures,
            vs_baseline: None,
            runtime_vs_compiled: None,
        }
    }
}

/// The cells, scenario by scenario, each in contender order, with their ratios.
pub fn summarize(plan: &Plan, records: &[Record]) -> Vec<Cell> {
    let mut cells = Vec::with_capacity(plan.scenarios.len() * plan.contenders.len());
    for (si, scenario) in plan.scenarios.iter().enumerate() {
        for (ci, contender) in plan.contenders.iter().enumerate() {
            let mut mine: Vec<&Record> = records
                .iter()
                .filter(|r| r.slot.scenario == si && r.slot.contender == ci)
                .collect();
            mine.sort_by_key(|r| r.slot.rep);
            let samples = mine.iter().filter_map(|r| r.result.clone().ok()).collect();
            let failures = mine.iter().filter_map(|r| r.result.clone().err()).collect();
            cells.push(Cell::new(&scenario.name, contender, samples, failures));
        }
    }
    let medians: Vec<(String, &str, Option<f64>)> = cells
        .iter()
        .map(|c| (c.scenario.clone(), c.contender.name, c.median_ns))
        .collect();
    let median_of = |scenario: &str, name: &str| {
        medians
            .iter()
            .find(|m| m.0 == scenario && m.1 == name)
            .and_then(|m| m.2)
    };
    for cell in &mut cells {
        cell.vs_baseline = ratio(cell.median_ns, median_of(&cell.scenario, BASELINE));
        cell.runtime_vs_compiled = cell
            .contender
            .compiled
            .and_then(|c| ratio(cell.median_ns, median_of(&cell.scenario, c)));
    }
    cells
}

/// The cell of `contender` in `scenario`.
pub fn find<'a>(cells: &'a [Cell], scenario: &str, contender: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.scenario == scenario && c.contender.name == contender)
}

/// A compiled mode against its runtime twin: their medians per scenario and the geometric mean
/// of runtime/compiled over the scenarios where both have one.
#[derive(Debug, Clone, PartialEq)]
pub struct ModePair {
    pub mode: &'static str,
    /// `(scenario, compiled median, runtime median)` for every scenario of the plan.
    pub medians: Vec<(String, Option<f64>, Option<f64>)>,
    pub geomean: Option<f64>,
    /// How many scenarios the geometric mean is over.
    pub geomean_over: usize,
}

impl ModePair {
    /// The compiled and runtime medians in `scenario`.
    pub fn get(&self, scenario: &str) -> (Option<f64>, Option<f64>) {
        self.medians
            .iter()
            .find(|m| m.0 == scenario)
            .map_or((None, None), |m| (m.1, m.2))
    }
}

/// One [`ModePair`] per runtime twin in the plan whose compiled mode is in it too.
pub fn mode_pairs(plan: &Plan, cells: &[Cell]) -> Vec<ModePair> {
    plan.contenders
        .iter()
        .filter_map(|twin| {
            let mode = twin.compiled?;
            plan.contenders.iter().find(|c| c.name == mode)?;
            let medians: Vec<_> = plan
                .scenarios
                .iter()
                .map(|s| {
                    let m = |name: &str| find(cells, &s.name, name).and_then(|c| c.median_ns);
                    (s.name.clone(), m(mode), m(twin.name))
                })
                .collect();
            let ratios: Vec<f64> = medians
                .iter()
                .filter_map(|(_, c, r)| ratio(*r, *c))
                .collect();
            Some(ModePair {
                mode,
                geomean: geomean(&ratios),
                geomean_over: ratios.len(),
                medians,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::contender;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn median_spread_geomean_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0]), Some(4.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, 100.0]), Some(50.5));
        assert_eq!(median(&[5.0, 5.0, 1.0, 9.0, 5.0]), Some(5.0));
        assert_eq!(min_max(&[]), None);
        assert_eq!(min_max(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(geomean(&[]), None);
        assert!(close(geomean(&[2.0, 8.0]).unwrap(), 4.0));
        assert!(close(geomean(&[1.1, 1.1, 1.1]).unwrap(), 1.1));
        assert_eq!(geomean(&[1.0, 0.0]), None);
        assert_eq!(geomean(&[1.0, -2.0]), None);
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), None), None);
    }

    #[test]
    fn a_cell_summarizes_its_samples() {
        let c = Cell::new(
            "vm",
            contender("fast").unwrap(),
            vec![
                Sample::of(100, 300, 10, 900),
                Sample::of(100, 100, 30, 1000),
                Sample::of(100, 200, 20, 800),
            ],
            vec!["exit status: 1".into()],
        );
        assert_eq!(c.median_ns, Some(2.0));
        assert_eq!((c.min_ns, c.max_ns), (Some(1.0), Some(3.0)));
        assert_eq!(c.faults_per_op, Some(0.2));
        assert_eq!(c.peak_rss_kib, Some(1000));
        let empty = Cell::new("vm", contender("fast").unwrap(), vec![], vec!["x".into()]);
        assert_eq!((empty.median_ns, empty.peak_rss_kib), (None, None));
    }

    /// A plan of two scenarios and all contenders where contender `k` takes `(k + 1) × base` ns
    /// per op (base 10 in `a`, 20 in `b`), except one failing cell.
    fn plan_and_records() -> (Plan, Vec<Record>) {
        let plan = Plan::of(2, None, &["a", "b"]);
        let records = plan.records(|slot, name| {
            let base = 10 * (slot.scenario as u64 + 1);
            let ns = base * (slot.contender as u64 + 1) * 10 + u64::from(slot.rep);
            match slot.scenario == 1 && name == "jemalloc" {
                true => Err("signal: 11 (SIGSEGV)".to_owned()),
                false => Ok(Sample::of(10, ns, 0, 100)),
            }
        });
        (plan, records)
    }

    #[test]
    fn ratios_against_the_baseline_and_the_compiled_mode() {
        let (plan, records) = plan_and_records();
        let cells = summarize(&plan, &records);
        assert_eq!(cells.len(), 26);
        assert_eq!(cells[0].scenario, "a");
        assert_eq!(cells[0].contender.name, "minimal");
        assert_eq!(cells[13].scenario, "b");
        let mi = find(&cells, "a", "mimalloc").unwrap();
        assert_eq!(mi.vs_baseline, Some(1.0));
        // fast = contender 1 → 20.05 ns/op; mimalloc = contender 11 → 120.05 ns/op.
        let fast = find(&cells, "a", "fast").unwrap();
        assert!(close(fast.median_ns.unwrap(), 20.05));
        assert!(close(fast.vs_baseline.unwrap(), 20.05 / 120.05));
        assert_eq!(fast.runtime_vs_compiled, None);
        let twin = find(&cells, "a", "runtime-fast").unwrap();
        assert!(close(twin.runtime_vs_compiled.unwrap(), 70.05 / 20.05));
        let je = find(&cells, "b", "jemalloc").unwrap();
        assert_eq!((je.samples.len(), je.failures.len()), (0, 2));
        assert_eq!(je.vs_baseline, None);

        let pairs = mode_pairs(&plan, &cells);
        let modes: Vec<_> = pairs.iter().map(|p| p.mode).collect();
        assert_eq!(
            modes,
            ["minimal", "fast", "balanced", "learning", "research"]
        );
        let fast = &pairs[1];
        assert_eq!(fast.geomean_over, 2);
        let (c, r) = fast.get("b");
        assert!(close(c.unwrap(), 40.05) && close(r.unwrap(), 140.05));
        let expected = ((70.05_f64 / 20.05) * (140.05 / 40.05)).sqrt();
        assert!(close(fast.geomean.unwrap(), expected));
        assert_eq!(fast.get("zzz"), (None, None));
        let (mut plan, records) = plan_and_records();
        // Only the twins and mimalloc: no compiled mode to compare with.
        plan.contenders.retain(|c| c.is_runtime());
        let cells = summarize(&plan, &records);
        assert!(mode_pairs(&plan, &cells).is_empty());
    }
}
