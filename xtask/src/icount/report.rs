//! Tables and documents made from a run: the compiled-vs-runtime table (the C original's
//! regression table, measured), the reference table, and `regression-analysis.md`.

use super::compare::PEERS;
use super::figures::{Environment, Figures};
use super::rules::{Row, Rule, UNTOUCHED};
use super::{per_op, show_per_op};
use crate::cmd;
use crate::matrix::report::md_table;
use crate::matrix::stats::min_max;
use crate::test::MODES;

/// `+18.9%`; two decimals where one would round a real difference to zero (`+0.02%`).
pub fn pct(p: f64) -> String {
    let digits = if p != 0.0 && p.abs() < 0.05 { 2 } else { 1 };
    format!("{p:+.digits$}%")
}

/// `+28.0 (+18.9%)`.
pub fn overhead_cell(compiled: u64, runtime: u64) -> String {
    let (c, r) = (per_op(compiled), per_op(runtime));
    if compiled > 0 {
        format!("{:+.1} ({})", r - c, pct((r - c) / c * 100.0))
    } else {
        format!("{:+.1} (n/a)", r - c)
    }
}

/// Per mode and path: compiled and runtime Ir/op, the twin's overhead, and whether the compiled
/// benchmark read the runtime configuration. Mode-major, like the C original's table.
pub fn regression_table(rows: &[Row]) -> String {
    let header: Vec<String> = "mode|path|compiled Ir/op|runtime Ir/op|runtime overhead (Ir, %)|\
                               compiled reads runtime config?"
        .split('|')
        .map(str::to_owned)
        .collect();
    let right = [false, false, true, true, true, false];
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by_key(|r| MODES.iter().position(|m| *m == r.mode));
    let cells: Vec<Vec<String>> = sorted
        .iter()
        .map(|r| {
            let reads = match r.compiled.config.as_str() {
                UNTOUCHED => "no".to_owned(),
                "" => "no record".to_owned(),
                seen => format!("yes ({seen})"),
            };
            vec![
                r.mode.to_owned(),
                r.path.clone(),
                show_per_op(r.compiled.ir),
                show_per_op(r.runtime.ir),
                overhead_cell(r.compiled.ir, r.runtime.ir),
                reads,
            ]
        })
        .collect();
    md_table(&header, &right, &cells)
}

/// At a glance: one row per mode, one column per path, `compiled / runtime` Ir/op.
pub fn summary_table(figures: &Figures, rows: &[Row]) -> String {
    let mut header = vec!["mode".to_owned()];
    header.extend(figures.paths.iter().cloned());
    let right: Vec<bool> = header.iter().enumerate().map(|(i, _)| i > 0).collect();
    let cells: Vec<Vec<String>> = MODES
        .iter()
        .map(|mode| {
            let mut row = vec![mode.to_string()];
            row.extend(figures.paths.iter().map(|path| {
                rows.iter()
                    .find(|r| r.mode == *mode && &r.path == path)
                    .map_or("-".to_owned(), |r| {
                        let (c, rt) = (show_per_op(r.compiled.ir), show_per_op(r.runtime.ir));
                        format!("{c} / {rt}")
                    })
            }));
            row
        })
        .collect();
    md_table(&header, &right, &cells)
}

/// Paths that have reference rows: every compiled mode and every peer, Ir/op. Empty if no path
/// has peers.
pub fn reference_table(figures: &Figures) -> String {
    let columns: Vec<&str> = MODES.iter().chain(PEERS.iter()).copied().collect();
    let mut header = vec!["path".to_owned()];
    header.extend(columns.iter().map(|c| c.to_string()));
    let right: Vec<bool> = header.iter().enumerate().map(|(i, _)| i > 0).collect();
    let rows: Vec<Vec<String>> = figures
        .paths
        .iter()
        .filter(|p| PEERS.iter().any(|peer| figures.get(p, peer).is_some()))
        .map(|p| {
            let mut row = vec![p.clone()];
            row.extend(
                columns
                    .iter()
                    .map(|c| figures.get(p, c).map_or("-".to_owned(), show_per_op)),
            );
            row
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    md_table(&header, &right, &rows)
}

/// `a–b` of the twins' overhead over `rows`, in Ir/op and in percent.
fn overhead_range(rows: &[&Row]) -> Option<String> {
    let diffs: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.compiled.ir > 0)
        .map(|r| {
            let (c, rt) = (per_op(r.compiled.ir), per_op(r.runtime.ir));
            (rt - c, (rt - c) / c * 100.0)
        })
        .collect();
    let (lo, hi) = min_max(&diffs.iter().map(|d| d.0).collect::<Vec<_>>())?;
    let (plo, phi) = min_max(&diffs.iter().map(|d| d.1).collect::<Vec<_>>())?;
    let span = |lo: String, hi: String| match lo == hi {
        true => lo,
        false => format!("{lo} to {hi}"),
    };
    let ir = span(format!("{lo:.1}"), format!("{hi:.1}"));
    Some(format!("{ir} Ir/op ({})", span(pct(plo), pct(phi))))
}

/// The environment as one sentence.
pub fn environment_line(env: &Environment) -> String {
    format!(
        "{}, {}, CPU {}, glibc: {}",
        env.rustc, env.valgrind, env.cpu, env.glibc
    )
}

/// The generated blocks of `regression-analysis.md`, by marker name (the prose around them lives
/// in docs/regression-analysis.md): the run's provenance, the two tables, the rules, the
/// overhead ranges and the reference table.
pub fn regression_blocks(
    figures: &Figures,
    rows: &[Row],
    rules: &[Rule],
    date: &str,
    invoked_as: &str,
) -> Vec<(&'static str, String)> {
    let measured = format!(
        "Measured {date} by `{invoked_as}` ({}).\n",
        environment_line(&figures.env)
    );
    let rules: String = rules.iter().map(|rule| format!("- {rule}\n")).collect();
    let mut reading = String::new();
    let all: Vec<&Row> = rows.iter().collect();
    if let Some(range) = overhead_range(&all) {
        reading += &format!(
            "- Over every path and mode the runtime twin executes {range} more than the \
             compiled mode: the C original's regression, made exact and kept from coming back \
             (rules i and ii). A compiled process never even reads `HAKMEM_MODE` (rule iii).\n"
        );
    }
    for mode in MODES {
        let of_mode: Vec<&Row> = rows.iter().filter(|r| r.mode == mode).collect();
        if let Some(range) = overhead_range(&of_mode) {
            reading += &format!("- {}: the twin pays {range}.\n", mode.to_uppercase());
        }
    }
    let largest = rows.iter().filter(|r| r.compiled.ir > 0).max_by(|a, b| {
        let ratio = |r: &Row| r.runtime.ir as f64 / r.compiled.ir as f64;
        ratio(a).total_cmp(&ratio(b))
    });
    if let Some(r) = largest {
        reading += &format!(
            "- The largest relative overhead: {} {}, {}.\n",
            r.mode.to_uppercase(),
            r.path,
            overhead_cell(r.compiled.ir, r.runtime.ir)
        );
    }
    let reference = match reference_table(figures) {
        t if t.is_empty() => "(no reference allocator was measured)\n".to_owned(),
        t => t,
    };
    vec![
        ("icount-measured", measured),
        ("icount-summary", summary_table(figures, rows)),
        ("icount-regression", regression_table(rows)),
        ("icount-rules", rules),
        ("icount-reading", reading),
        ("icount-reference", reference),
    ]
}

/// `doc` (docs/regression-analysis.md's text) with every generated block rewritten.
pub fn regression_analysis(doc: &str, blocks: &[(&str, String)]) -> Result<String, String> {
    blocks.iter().try_fold(doc.to_owned(), |doc, (name, body)| {
        cmd::splice(&doc, name, body)
    })
}

#[cfg(test)]
mod tests {
    use super::super::rules::{pool_rule, rows, rules, Probe};
    use super::super::OPS;
    use super::*;

    fn figures() -> Figures {
        let mut entries = Vec::new();
        for (i, mode) in MODES.iter().enumerate() {
            let base = 148 + i as u64;
            entries.push((format!("tiny_pair/{mode}"), base));
            entries.push((format!("tiny_pair/runtime_{mode}"), base + 28));
        }
        entries.push(("tiny_pair/jemalloc".into(), 70));
        entries.push(("tiny_pair/mimalloc".into(), 150));
        let mut f = Figures::of(&entries);
        for mode in MODES {
            f.config
                .insert(format!("tiny_pair/{mode}"), UNTOUCHED.to_owned());
            f.config
                .insert(format!("tiny_pair/runtime_{mode}"), format!("read:{mode}"));
        }
        f
    }

    #[test]
    fn overhead_cells() {
        assert_eq!(overhead_cell(148 * OPS, 176 * OPS), "+28.0 (+18.9%)");
        assert_eq!(overhead_cell(100 * OPS, 100 * OPS), "+0.0 (+0.0%)");
        assert_eq!(overhead_cell(0, OPS), "+1.0 (n/a)");
        assert_eq!(
            overhead_cell(131_467 * OPS, 131_491 * OPS),
            "+24.0 (+0.02%)"
        );
    }

    #[test]
    fn the_regression_table_lists_every_mode_of_every_path() {
        let (rows, _) = rows(&figures());
        let table = regression_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 5);
        assert!(lines[2].starts_with("| minimal  | tiny_pair |"), "{table}");
        assert!(lines[2].contains("148.0 |") && lines[2].contains("176.0 |"));
        assert!(
            lines[2].contains("+28.0 (+18.9%) |")
                && lines[2].ends_with("| no                             |")
        );
        let mut bad = rows.clone();
        bad[1].compiled = Probe {
            ir: 1,
            config: "read:fast".into(),
        };
        assert!(regression_table(&bad).contains("| yes (read:fast) "));
    }

    #[test]
    fn the_summary_has_a_row_per_mode_and_a_column_per_path() {
        let f = figures();
        let (rows, _) = rows(&f);
        let table = summary_table(&f, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 5);
        assert_eq!(lines[0], "| mode     |     tiny_pair |");
        assert_eq!(lines[4], "| balanced | 150.0 / 178.0 |");
    }

    #[test]
    fn the_reference_table() {
        let f = figures();
        let table = reference_table(&f);
        assert!(table.starts_with("| path "), "{table}");
        assert!(table.contains("| tiny_pair |   148.0 | 149.0 |"), "{table}");
        assert!(table.contains("-"), "glibc was not measured: {table}");
        let mut no_peers = f;
        no_peers.ir.retain(|id, _| !id.ends_with("malloc"));
        assert_eq!(reference_table(&no_peers), "");
    }

    #[test]
    fn the_blocks_fill_the_committed_document() {
        let f = figures();
        let (rows, missing) = rows(&f);
        let mut rules = rules(&rows, &missing);
        rules.push(pool_rule(&f));
        let blocks = regression_blocks(
            &f,
            &rows,
            &rules,
            "2026-11-24",
            "cargo xtask icount --bless",
        );
        let get = |name: &str| &blocks.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get("icount-measured")
            .starts_with("Measured 2026-11-24 by `cargo xtask icount --bless` (rustc 1.95.0,"));
        assert_eq!(get("icount-regression"), &regression_table(&rows));
        assert!(
            get("icount-rules").contains("- rule: (vi) the pool: tiny_pair (32 B) FAST ≤ 60 Ir/op")
        );
        let reading = get("icount-reading");
        assert!(reading.contains("runtime twin executes 28.0 Ir/op (+18.4% to +18.9%) more"));
        assert!(reading.contains("- FAST: the twin pays 28.0 Ir/op (+18.8%).\n"));
        assert!(reading
            .ends_with("- The largest relative overhead: MINIMAL tiny_pair, +28.0 (+18.9%).\n"));

        let doc = std::fs::read_to_string(cmd::workspace_root().join(super::super::DOC)).unwrap();
        let md = regression_analysis(&doc, &blocks).unwrap();
        assert!(md.contains("## What the C original measured"));
        assert!(md.contains(&format!(
            "<!-- BEGIN generated: icount-regression -->\n{}<!-- END generated: icount-regression -->",
            regression_table(&rows)
        )));
        assert!(md.contains("rule (vi), the pool's acceptance"));
        assert_eq!(regression_analysis(&md, &blocks).unwrap(), md, "idempotent");
    }
}
