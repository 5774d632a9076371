//! `cargo xtask bench-compare A B`: do two runs of the matrix agree?
//!
//! Reads `results.csv` from the two output directories and, for every cell (scenario ×
//! contender) that both measured, says whether the medians agree within the spread the reports
//! themselves show: run B's median lies inside run A's min–max, or run A's inside run B's. Wall
//! clocks on these VMs drift, so this is the honest test of a report's stability: a difference
//! between contenders smaller than the spread is no difference, and a cell whose medians move
//! by more than the spread between two runs is a cell to distrust.

use std::path::Path;

/// One row of results.csv: the figures this comparison needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub scenario: String,
    pub allocator: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Parses results.csv (header `scenario,allocator,reps,median_ns_per_op,min_ns_per_op,
/// max_ns_per_op,…`). Cells without figures (every run failed) are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty results.csv")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("results.csv has no column {name}"))
    };
    let (s, a, med, lo, hi) = (
        col("scenario")?,
        col("allocator")?,
        col("median_ns_per_op")?,
        col("min_ns_per_op")?,
        col("max_ns_per_op")?,
    );
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(median), Some(min), Some(max)) = (num(med), num(lo), num(hi)) {
            rows.push(Row {
                scenario: f[s].to_owned(),
                allocator: f[a].to_owned(),
                median,
                min,
                max,
            });
        }
    }
    Ok(rows)
}

/// A cell measured by both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: Row,
    pub b: Row,
}

impl Pair {
    /// Whether either run's median lies within the other's min–max.
    pub fn agrees(&self) -> bool {
        let within = |x: f64, r: &Row| r.min <= x && x <= r.max;
        within(self.b.median, &self.a) || within(self.a.median, &self.b)
    }

    /// B's median relative to A's, in percent.
    pub fn change_pct(&self) -> f64 {
        (self.b.median / self.a.median - 1.0) * 100.0
    }
}

/// The cells of `a` that `b` also has, paired, in `a`'s order.
pub fn pair(a: &[Row], b: &[Row]) -> Vec<Pair> {
    a.iter()
        .filter_map(|ra| {
            b.iter()
                .find(|rb| rb.scenario == ra.scenario && rb.allocator == ra.allocator)
                .map(|rb| Pair {
                    a: ra.clone(),
                    b: rb.clone(),
                })
        })
        .collect()
}

/// The report: a summary line, then the cells that disagree.
pub fn report(a_name: &str, b_name: &str, pairs: &[Pair]) -> String {
    let agree = pairs.iter().filter(|p| p.agrees()).count();
    let mut out = format!(
        "{agree} of {} cells agree: the median of one run lies within the other's min–max \
         ({a_name} vs {b_name}).\n",
        pairs.len()
    );
    let bad: Vec<&Pair> = pairs.iter().filter(|p| !p.agrees()).collect();
    if !bad.is_empty() {
        out.push_str(
            "\n| scenario | allocator | A median (min–max) | B median (min–max) | B vs A |\n",
        );
        out.push_str("|---|---|--:|--:|--:|\n");
        for p in bad {
            out.push_str(&format!(
                "| {} | {} | {:.1} ({:.1}–{:.1}) | {:.1} ({:.1}–{:.1}) | {:+.1}% |\n",
                p.a.scenario,
                p.a.allocator,
                p.a.median,
                p.a.min,
                p.a.max,
                p.b.median,
                p.b.min,
                p.b.max,
                p.change_pct()
            ));
        }
    }
    out
}

/// Compares the runs in two output directories; prints the report. `Err` if a file is
/// unreadable or the runs share no cell.
pub fn run(a: &Path, b: &Path) -> Result<(), String> {
    let read = |dir: &Path| {
        let path = dir.join("results.csv");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse_csv(&text).map_err(|e| format!("{}: {e}", path.display()))
    };
    let pairs = pair(&read(a)?, &read(b)?);
    if pairs.is_empty() {
        return Err("the two runs have no cell in common".into());
    }
    print!(
        "{}",
        report(&a.display().to_string(), &b.display().to_string(), &pairs)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "scenario,allocator,reps,median_ns_per_op,min_ns_per_op,max_ns_per_op,faults_per_op\n\
        vm,fast,3,100.0,90.0,110.0,0\n\
        tiny,fast,3,10.0,9.0,11.0,0\n\
        tiny,glibc,3,,,,0\n";

    #[test]
    fn parses_and_skips_failed_cells() {
        let rows = parse_csv(A).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            Row {
                scenario: "vm".into(),
                allocator: "fast".into(),
                median: 100.0,
                min: 90.0,
                max: 110.0
            }
        );
        assert!(parse_csv("scenario,allocator\nvm,fast\n").is_err());
    }

    #[test]
    fn agreement_is_a_median_within_the_other_spread() {
        let a = parse_csv(A).unwrap();
        let b = parse_csv(
            "scenario,allocator,median_ns_per_op,min_ns_per_op,max_ns_per_op\n\
             vm,fast,108.0,107.0,109.0\n\
             tiny,fast,14.0,13.0,15.0\n\
             mixed,fast,1.0,1.0,1.0\n",
        )
        .unwrap();
        let pairs = pair(&a, &b);
        assert_eq!(pairs.len(), 2, "only cells both runs have");
        assert!(pairs[0].agrees(), "108 lies within 90–110");
        assert!(
            !pairs[1].agrees(),
            "14 is outside 9–11 and 10 outside 13–15"
        );
        assert!((pairs[1].change_pct() - 40.0).abs() < 1e-9);
        let text = report("a", "b", &pairs);
        assert!(text.starts_with("1 of 2 cells agree"), "{text}");
        assert!(text.contains("| tiny | fast |"), "{text}");
    }
}
