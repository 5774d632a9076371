//! `cargo xtask bench-compare A B`: do two runs of the matrix agree? For every cell both
//! measured: is one run's median inside the other's min–max, in ns/op (`results.csv`) and
//! relative to mimalloc's run of the same scenario and repetition (`samples.csv`), which cancels
//! the host's drift (docs/benchmarks.md).

use std::path::Path;

use super::report::md_table;

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

/// Per cell, the paired ratios of its runs to the baseline's: each run's ns/op divided by the
/// baseline's run of the same scenario and repetition. From samples.csv (`scenario,allocator,
/// rep,ns_per_op,…`); cells are summarised like results.csv's (median, min, max). The baseline
/// itself is left out.
pub fn paired(samples_csv: &str, baseline: &str) -> Result<Vec<Row>, String> {
    let mut lines = samples_csv.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty samples.csv")?
        .split(',')
        .collect();
    if header.get(..4) != Some(&["scenario", "allocator", "rep", "ns_per_op"][..]) {
        return Err(format!("samples.csv: unexpected header {header:?}"));
    }
    let mut runs: Vec<(String, String, String, f64)> = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let ns = f
            .get(3)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("samples.csv: bad line {line:?}"))?;
        runs.push((f[0].to_owned(), f[1].to_owned(), f[2].to_owned(), ns));
    }
    let base = |scenario: &str, rep: &str| {
        runs.iter()
            .find(|r| r.1 == baseline && r.0 == scenario && r.2 == rep)
            .map(|r| r.3)
            .filter(|&ns| ns > 0.0)
    };
    let mut cells: Vec<(String, String, Vec<f64>)> = Vec::new();
    for (scenario, allocator, rep, ns) in runs.iter().filter(|r| r.1 != baseline) {
        let Some(b) = base(scenario, rep) else {
            continue;
        };
        match cells
            .iter_mut()
            .find(|c| &c.0 == scenario && &c.1 == allocator)
        {
            Some(c) => c.2.push(ns / b),
            None => cells.push((scenario.clone(), allocator.clone(), vec![ns / b])),
        }
    }
    Ok(cells
        .into_iter()
        .map(|(scenario, allocator, ratios)| {
            let (min, max) = super::stats::min_max(&ratios).expect("at least one ratio");
            Row {
                scenario,
                allocator,
                median: super::stats::median(&ratios).expect("non-empty"),
                min,
                max,
            }
        })
        .collect())
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

/// The report of one comparison: a summary line, then the cells that disagree.
pub fn report(what: &str, unit: &str, pairs: &[Pair]) -> String {
    let bad: Vec<&Pair> = pairs.iter().filter(|p| !p.agrees()).collect();
    let out = format!(
        "{what}: {} of {} cells agree (one run's median within the other's min–max).\n",
        pairs.len() - bad.len(),
        pairs.len()
    );
    if bad.is_empty() {
        return out;
    }
    let n = |x: f64| match x >= 100.0 {
        true => format!("{x:.0}"),
        false => format!("{x:.3}"),
    };
    let cell = |r: &Row| format!("{} ({}–{})", n(r.median), n(r.min), n(r.max));
    let header = [
        "scenario",
        "allocator",
        "A median (min–max)",
        "B median (min–max)",
        "B vs A",
    ]
    .map(|h| h.replace("(min–max)", &format!("(min–max), {unit}")));
    let rows: Vec<Vec<String>> = (bad.iter())
        .map(|p| {
            let change = format!("{:+.1}%", p.change_pct());
            vec![
                p.a.scenario.clone(),
                p.a.allocator.clone(),
                cell(&p.a),
                cell(&p.b),
                change,
            ]
        })
        .collect();
    out + "\n" + &md_table(&header, &[false, false, true, true, true], &rows)
}

/// Compares the runs in two output directories; prints both reports. `Err` if a file is
/// unreadable or the runs share no cell.
pub fn run(a: &Path, b: &Path) -> Result<(), String> {
    let read = |dir: &Path, name: &str| crate::cmd::read(&dir.join(name));
    let absolute = pair(
        &parse_csv(&read(a, "results.csv")?)?,
        &parse_csv(&read(b, "results.csv")?)?,
    );
    if absolute.is_empty() {
        return Err("the two runs have no cell in common".into());
    }
    println!("{} vs {}\n", a.display(), b.display());
    print!("{}", report("absolute (ns/op)", "ns/op", &absolute));
    let relative = pair(
        &paired(&read(a, "samples.csv")?, super::BASELINE)?,
        &paired(&read(b, "samples.csv")?, super::BASELINE)?,
    );
    println!();
    print!(
        "{}",
        report(
            &format!(
                "paired with {} (× its run of the same scenario and repetition)",
                super::BASELINE
            ),
            "×",
            &relative
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_divide_by_the_same_repetition() {
        let samples = "scenario,allocator,rep,ns_per_op,faults_per_op,maxrss_kib\n\
            vm,mimalloc,1,10.0,0,1\n\
            vm,fast,1,20.0,0,1\n\
            vm,mimalloc,2,20.0,0,1\n\
            vm,fast,2,40.0,0,1\n\
            vm,mimalloc,3,5.0,0,1\n\
            vm,fast,3,15.0,0,1\n\
            tiny,fast,1,1.0,0,1\n";
        let rows = paired(samples, "mimalloc").unwrap();
        // Drift doubled both in repetition 2: the ratio stays 2; tiny has no baseline run.
        let want =
            r#"[Row { scenario: "vm", allocator: "fast", median: 2.0, min: 2.0, max: 3.0 }]"#;
        assert_eq!(format!("{rows:?}"), want);
        assert!(paired("a,b\n", "mimalloc").is_err());
    }

    const A: &str =
        "scenario,allocator,reps,median_ns_per_op,min_ns_per_op,max_ns_per_op,faults_per_op\n\
        vm,fast,3,100.0,90.0,110.0,0\n\
        tiny,fast,3,10.0,9.0,11.0,0\n\
        tiny,glibc,3,,,,0\n";

    #[test]
    fn parses_skips_failed_cells_and_agrees_on_a_median_within_the_other_spread() {
        let rows = parse_csv(A).unwrap();
        assert_eq!(rows.len(), 2);
        let want =
            r#"Row { scenario: "vm", allocator: "fast", median: 100.0, min: 90.0, max: 110.0 }"#;
        assert_eq!(format!("{:?}", rows[0]), want);
        assert!(parse_csv("scenario,allocator\nvm,fast\n").is_err());
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
        let text = report("absolute", "ns/op", &pairs);
        assert!(text.starts_with("absolute: 1 of 2 cells agree"), "{text}");
        assert!(text.contains("| tiny     | fast      |"), "{text}");
    }
}
