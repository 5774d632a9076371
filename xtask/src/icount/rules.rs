//! The machine-independent rules (i)–(viii) of docs/zero-overhead.md: each compares figures of
//! one run with each other or with a budget far from any noise, so it holds whatever the
//! toolchain, CPU or glibc. Comparisons are exact, on the counts of [`OPS`](super::OPS)
//! operations, but for a learning mode on a path its learner routes ([`CONTESTED_PATHS`]),
//! whose count moves with the times the learner measured ([`CONTESTED_TOLERANCE_PCT`]).

use std::fmt;

use super::figures::Figures;
use super::{per_op, OPS};
use crate::test::MODES;

/// Rule (v): the most instructions a 2 MiB alloc+free pair may cost per operation.
pub const BUDGET_IR: u64 = 100;
/// The path rule (v) is about.
pub const BUDGET_PATH: &str = "vm_pair";
/// The compiled modes rule (v) binds.
pub const BUDGET_MODES: [&str; 2] = ["balanced", "fast"];

/// Rule (vi): the path it is about (`alloc` + `dealloc` of 32 B).
pub const POOL_PATH: &str = "tiny_pair";
/// Rule (vi): the most instructions FAST's 32-byte pair may cost per operation.
pub const POOL_BUDGET_IR: u64 = 60;
/// Rule (vi): each pool mode and the reference allocator it may cost no more than.
pub const POOL_PEERS: [(&str, &str); 2] = [("fast", "jemalloc"), ("balanced", "mimalloc")];

/// Rules (vii) and (viii): the mode the learning modes are held against (LEARNING is BALANCED
/// plus learning; RESEARCH is LEARNING plus its profile, poisoning and never freezing).
pub const LEARNING_TWIN: &str = "balanced";
/// Rules (vii) and (viii): the path they are about.
pub const LEARNING_PATH: &str = "tiny_pair";
/// Rule (vii): the most instructions learning may add to LEARNING's 32-byte pair.
pub const LEARNING_BUDGET_IR: u64 = 15;
/// Rule (viii): the most instructions RESEARCH may add to BALANCED's 32-byte pair.
pub const RESEARCH_BUDGET_IR: u64 = 60;
/// The modes that learn the threshold.
pub const LEARNING_MODES: [&str; 2] = ["learning", "research"];
/// The paths whose requests a learning mode's learner routes (512 KiB and more).
pub const CONTESTED_PATHS: [&str; 1] = ["vm_pair"];
/// Rule (i)'s allowance, in percent, for a learning mode on a contested path.
pub const CONTESTED_TOLERANCE_PCT: u64 = 5;

/// Whether `contender`'s count on `path` depends on what a learner measured.
pub fn contested(path: &str, contender: &str) -> bool {
    CONTESTED_PATHS.contains(&path)
        && LEARNING_MODES
            .iter()
            .any(|m| contender == *m || contender == twin(m))
}

/// The paths where RESEARCH's poisoning fills system blocks of 1 KiB with glibc's `memset`,
/// whose loop count depends on the block's address modulo 32: the same code measured from
/// another checkout path (whose length shifts what the harness puts on the heap first) moves
/// by ~3% there.
pub const POISONED_PATHS: [&str; 2] = ["small_pair", "small_fill"];
/// The baseline's allowance, in percent, for RESEARCH and its twin on a poisoned path.
pub const POISONED_TOLERANCE_PCT: u64 = 5;

/// Whether `contender`'s count on `path` depends on where the heap puts its blocks.
pub fn poisoned(path: &str, contender: &str) -> bool {
    POISONED_PATHS.contains(&path) && (contender == "research" || contender == twin("research"))
}

/// What a benchmark's teardown records when `Runtime::peek()` found nothing read.
pub const UNTOUCHED: &str = "untouched";

/// The bench id of `mode`'s runtime twin.
pub fn twin(mode: &str) -> String {
    format!("runtime_{mode}")
}

/// One benchmark's count and what its teardown recorded (empty: nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub ir: u64,
    pub config: String,
}

/// One path and mode: the compiled policy and its runtime twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub path: String,
    pub mode: &'static str,
    pub compiled: Probe,
    pub runtime: Probe,
}

/// The rows of `figures`, path by path, mode by mode, and the ids that should be there but are
/// not (a path measured without all ten policies).
pub fn rows(figures: &Figures) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for path in &figures.paths {
        for mode in MODES {
            let mut probe = |id: &str| {
                let key = format!("{path}/{id}");
                match figures.ir.get(&key) {
                    Some(&ir) => Some(Probe {
                        ir,
                        config: figures.config.get(&key).cloned().unwrap_or_default(),
                    }),
                    None => {
                        missing.push(key);
                        None
                    }
                }
            };
            let compiled = probe(mode);
            let runtime = probe(&twin(mode));
            if let (Some(compiled), Some(runtime)) = (compiled, runtime) {
                rows.push(Row {
                    path: path.clone(),
                    mode,
                    compiled,
                    runtime,
                });
            }
        }
    }
    (rows, missing)
}

/// A rule's verdict with its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the rule says, then the figures.
    pub text: String,
    pub ok: bool,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok { "ok" } else { "FAILED" };
        write!(f, "rule: {} — {verdict}", self.text)
    }
}

/// The five rules over `rows`; `missing` (ids not measured) fails rule (i).
pub fn rules(rows: &[Row], missing: &[String]) -> Vec<Rule> {
    let nothing = if rows.is_empty() {
        "; nothing was measured"
    } else {
        ""
    };
    let both = |r: &Row| (per_op(r.compiled.ir), per_op(r.runtime.ir));

    // (i)
    let exceeds = |r: &Row| {
        if contested(&r.path, r.mode) {
            u128::from(r.compiled.ir) * 100
                > u128::from(r.runtime.ir) * u128::from(100 + CONTESTED_TOLERANCE_PCT)
        } else {
            r.compiled.ir > r.runtime.ir
        }
    };
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| exceeds(r))
        .map(|r| {
            let (c, rt) = both(r);
            format!("{} {}: {c:.1} > {rt:.1}", r.path, r.mode)
        })
        .collect();
    let mut figures = if bad.is_empty() {
        match rows
            .iter()
            .min_by_key(|r| i128::from(r.runtime.ir) - i128::from(r.compiled.ir))
        {
            Some(r) => {
                let (c, rt) = both(r);
                format!(", tightest {} {} {c:.1} ≤ {rt:.1}", r.path, r.mode)
            }
            None => String::new(),
        }
    } else {
        format!("; violated by {}", bad.join(", "))
    };
    if !missing.is_empty() {
        figures += &format!("; not measured: {}", missing.join(", "));
    }
    let first = Rule {
        text: format!(
            "(i) compiled Ir/op ≤ runtime Ir/op for every path and mode (learning and research on \
             vm_pair: within {CONTESTED_TOLERANCE_PCT}%): {}/{} hold{figures}{nothing}",
            rows.len() - bad.len(),
            rows.len()
        ),
        ok: bad.is_empty() && missing.is_empty() && !rows.is_empty(),
    };

    // (ii)
    let minimal: Vec<&Row> = rows.iter().filter(|r| r.mode == "minimal").collect();
    let figures: Vec<String> = (minimal.iter())
        .map(|r| {
            let (c, rt) = both(r);
            let op = if r.compiled.ir < r.runtime.ir {
                "<"
            } else {
                "≮"
            };
            format!("{} {c:.1} {op} {rt:.1}", r.path)
        })
        .collect();
    let figures = match figures.is_empty() {
        true => "no minimal rows measured".to_owned(),
        false => figures.join(", "),
    };
    let second = Rule {
        text: format!("(ii) minimal: compiled Ir/op < runtime Ir/op on every path: {figures}"),
        ok: !minimal.is_empty() && minimal.iter().all(|r| r.compiled.ir < r.runtime.ir),
    };

    // (iii) and (iv): what each benchmark's teardown recorded.
    let [third, fourth] = [
        (
            "(iii) every compiled benchmark left the runtime configuration untouched",
            false,
        ),
        (
            "(iv) every runtime benchmark read HAKMEM_MODE and got its mode",
            true,
        ),
    ]
    .map(|(what, runtime)| {
        let bad: Vec<String> = (rows.iter())
            .filter_map(|r| {
                let (probe, expected, id) = match runtime {
                    false => (&r.compiled, UNTOUCHED.to_owned(), r.mode.to_owned()),
                    true => (&r.runtime, format!("read:{}", r.mode), twin(r.mode)),
                };
                let seen = match probe.config.as_str() {
                    s if s == expected => return None,
                    "" => "no record".to_owned(),
                    s => format!("`{s}`"),
                };
                Some(format!("{}/{id} {seen}", r.path))
            })
            .collect();
        Rule {
            text: verdict_text(what, rows.len(), &bad, nothing),
            ok: bad.is_empty() && !rows.is_empty(),
        }
    });

    // (v)
    let budget = u128::from(BUDGET_IR) * u128::from(OPS);
    let mut figures = Vec::new();
    let mut fifth_ok = true;
    for mode in BUDGET_MODES {
        let row = rows
            .iter()
            .find(|r| r.path == BUDGET_PATH && r.mode == mode);
        let Some(r) = row else {
            fifth_ok = false;
            figures.push(format!("{mode} not measured"));
            continue;
        };
        let within = u128::from(r.compiled.ir) <= budget;
        fifth_ok &= within;
        let (ir, op) = (per_op(r.compiled.ir), if within { "≤" } else { ">" });
        figures.push(format!("{mode} {ir:.1} {op} {BUDGET_IR}"));
    }
    let fifth = Rule {
        text: format!(
            "(v) BALANCED and FAST {BUDGET_PATH} (2 MiB) ≤ {BUDGET_IR} Ir/op (compiled): {}",
            figures.join(", ")
        ),
        ok: fifth_ok,
    };

    vec![first, second, third, fourth, fifth]
}

/// Rule (vi), the pool's acceptance: on [`POOL_PATH`], compiled FAST costs at most
/// [`POOL_BUDGET_IR`] Ir/op and no more than jemalloc, compiled BALANCED no more than mimalloc
/// ([`POOL_PEERS`]). The peers' counts are the reference rows of the same run (`figures`); a
/// missing figure fails the rule.
pub fn pool_rule(figures: &Figures) -> Rule {
    let get = |who: &str| figures.get(POOL_PATH, who);
    let mut parts = Vec::new();
    let mut ok = true;
    // `bound`: the limit and how to show it, or the name of the peer that was not measured.
    let mut check = |mode: &str, bound: Result<(u64, String), &str>| {
        let Some(ours) = get(mode) else {
            ok = false;
            parts.push(format!("{mode} not measured"));
            return;
        };
        match bound {
            Ok((limit, shown)) => {
                let within = ours <= limit;
                ok &= within;
                let op = if within { "≤" } else { ">" };
                parts.push(format!("{mode} {:.1} {op} {shown}", per_op(ours)));
            }
            Err(peer) => {
                ok = false;
                parts.push(format!("{peer} not measured"));
            }
        }
    };
    let budget = (POOL_BUDGET_IR * OPS, POOL_BUDGET_IR.to_string());
    check("fast", Ok(budget));
    for (mode, peer) in POOL_PEERS {
        let bound = get(peer).map(|p| (p, format!("{peer} {:.1}", per_op(p))));
        check(mode, bound.ok_or(peer));
    }
    Rule {
        text: format!(
            "(vi) the pool: {POOL_PATH} (32 B) FAST ≤ {POOL_BUDGET_IR} Ir/op and ≤ jemalloc, \
             BALANCED ≤ mimalloc (compiled, same run): {}",
            parts.join(", ")
        ),
        ok,
    }
}

/// Rule (vii), learning's acceptance: on [`LEARNING_PATH`], compiled LEARNING costs at most
/// [`LEARNING_BUDGET_IR`] Ir/op more than [`LEARNING_TWIN`] (BALANCED) in the same run. A missing
/// figure fails.
pub fn learning_rule(figures: &Figures) -> Rule {
    over_twin(figures, "vii", "learning", LEARNING_BUDGET_IR)
}

/// Rule (viii): on [`LEARNING_PATH`], compiled RESEARCH costs at most [`RESEARCH_BUDGET_IR`]
/// Ir/op more than [`LEARNING_TWIN`] (BALANCED) in the same run. A missing figure fails.
pub fn research_rule(figures: &Figures) -> Rule {
    over_twin(figures, "viii", "research", RESEARCH_BUDGET_IR)
}

/// Rule `numeral`: `mode` costs at most `budget` Ir/op more than [`LEARNING_TWIN`] on
/// [`LEARNING_PATH`].
fn over_twin(figures: &Figures, numeral: &str, mode: &str, budget: u64) -> Rule {
    let get = |who: &str| figures.get(LEARNING_PATH, who);
    let what = format!(
        "({numeral}) {mode} adds ≤ {budget} Ir/op to {LEARNING_TWIN}'s {LEARNING_PATH} (32 B; \
         compiled, same run)"
    );
    let (Some(cost), Some(twin)) = (get(mode), get(LEARNING_TWIN)) else {
        let absent: Vec<&str> = [mode, LEARNING_TWIN]
            .into_iter()
            .filter(|who| get(who).is_none())
            .collect();
        return Rule {
            text: format!("{what}: {} not measured", absent.join(" and ")),
            ok: false,
        };
    };
    let ok = u128::from(cost) <= u128::from(twin) + u128::from(budget * OPS);
    let (cost, twin) = (per_op(cost), per_op(twin));
    let op = if ok { "≤" } else { ">" };
    Rule {
        text: format!(
            "{what}: {mode} {cost:.1} − {LEARNING_TWIN} {twin:.1} = {:+.1} {op} {budget}",
            cost - twin
        ),
        ok,
    }
}

/// `what: k/n benchmarks[; not: …]`.
fn verdict_text(what: &str, n: usize, bad: &[String], nothing: &str) -> String {
    let mut text = format!("{what}: {}/{n} benchmarks", n - bad.len());
    if !bad.is_empty() {
        text += &format!("; not: {}", bad.join(", "));
    }
    text + nothing
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe costing `per_op` per operation that recorded `config`.
    fn probe(per_op: u64, config: &str) -> Probe {
        Probe {
            ir: per_op * OPS,
            config: config.to_owned(),
        }
    }

    fn row(path: &str, mode: &'static str, compiled: u64, runtime: u64) -> Row {
        Row {
            path: path.to_owned(),
            mode,
            compiled: probe(compiled, UNTOUCHED),
            runtime: probe(runtime, &format!("read:{mode}")),
        }
    }

    fn good_rows() -> Vec<Row> {
        vec![
            row("tiny_pair", "minimal", 148, 176),
            row("tiny_pair", "research", 181, 206),
            row("vm_pair", "minimal", 87, 241),
            row("vm_pair", "fast", 94, 94),
            row("vm_pair", "balanced", 100, 136),
        ]
    }

    /// Asserts that of the five rules over `rows` only rule `failing` fails (`None`: none), its
    /// text containing `fragment`.
    fn only_fails(rows: &[Row], failing: Option<usize>, fragment: &str) {
        let rules = rules(rows, &[]);
        let failed: Vec<usize> = (0..5).filter(|&i| !rules[i].ok).collect();
        assert_eq!(failed, Vec::from_iter(failing), "{rules:#?}");
        let text = &rules[failing.unwrap_or(0)].text;
        assert!(text.contains(fragment), "{text}");
    }

    #[test]
    fn all_rules_hold_on_good_figures_and_each_fails_on_its_own() {
        let rules = rules(&good_rows(), &[]);
        assert!(rules.iter().all(|r| r.ok), "{rules:#?}");
        assert_eq!(
            rules[0].to_string(),
            "rule: (i) compiled Ir/op ≤ runtime Ir/op for every path and mode (learning and \
             research on vm_pair: within 5%): 5/5 hold, tightest vm_pair fast 94.0 ≤ 94.0 — ok"
        );
        assert_eq!(
            rules[1].to_string(),
            "rule: (ii) minimal: compiled Ir/op < runtime Ir/op on every path: \
             tiny_pair 148.0 < 176.0, vm_pair 87.0 < 241.0 — ok"
        );
        assert!(rules[2]
            .to_string()
            .ends_with("untouched: 5/5 benchmarks — ok"));
        assert!(rules[3]
            .to_string()
            .ends_with("its mode: 5/5 benchmarks — ok"));
        assert_eq!(
            rules[4].to_string(),
            "rule: (v) BALANCED and FAST vm_pair (2 MiB) ≤ 100 Ir/op (compiled): \
             balanced 100.0 ≤ 100, fast 94.0 ≤ 100 — ok"
        );
        let nothing = super::rules(&[], &[]);
        assert!(
            nothing.iter().all(|r| !r.ok),
            "nothing measured fails every rule"
        );
        // (v): the 2 MiB pair over budget (every pair an mmap + munmap), by one instruction in
        // 1024 operations (comparisons are exact); a missing vm_pair row fails; MINIMAL and the
        // runtime twins are not bound by it.
        let mut rows = good_rows();
        rows[4] = row("vm_pair", "balanced", 143, 173);
        only_fails(&rows, Some(4), "balanced 143.0 > 100, fast 94.0 ≤ 100");
        let mut rows = good_rows();
        rows[4].compiled.ir = BUDGET_IR * OPS + 1;
        rows[4].runtime.ir = rows[4].compiled.ir + 1;
        only_fails(&rows, Some(4), "balanced 100.0 > 100");
        let mut rows = good_rows();
        rows.push(row("tiny_pair", "fast", 148, 178));
        rows.remove(3);
        only_fails(&rows, Some(4), "fast not measured");
        let mut rows = good_rows();
        rows[2] = row("vm_pair", "minimal", 300, 500);
        rows[3].runtime = probe(500, "read:fast");
        only_fails(&rows, None, "");
        // (i): a compiled mode dearer than its twin, by one instruction too.
        let mut rows = good_rows();
        rows[1] = row("tiny_pair", "research", 207, 206);
        let violated = "4/5 hold; violated by tiny_pair research: 207.0 > 206.0";
        only_fails(&rows, Some(0), violated);
        rows[1].compiled.ir = rows[1].runtime.ir + 1;
        only_fails(&rows, Some(0), "violated by tiny_pair research");
        // (ii): MINIMAL not strictly cheaper, or not measured.
        let mut rows = good_rows();
        rows[2] = row("vm_pair", "minimal", 241, 241);
        only_fails(&rows, Some(1), "vm_pair 241.0 ≮ 241.0");
        let mut rows = good_rows();
        rows.retain(|r| r.mode != "minimal");
        only_fails(&rows, Some(1), "no minimal rows measured");
        // (iii) and (iv): the configuration records of every benchmark.
        let mut rows = good_rows();
        rows[0].compiled.config = "read:balanced".into();
        let not = "4/5 benchmarks; not: tiny_pair/minimal `read:balanced`";
        only_fails(&rows, Some(2), not);
        for (i, config) in [(1, "read:balanced"), (3, UNTOUCHED), (3, "")] {
            let mut rows = good_rows();
            rows[i].runtime.config = config.into();
            let seen = if config.is_empty() {
                "no record"
            } else {
                config
            };
            only_fails(&rows, Some(3), seen);
        }
        let missing = ["json_pair/runtime_fast".to_owned()];
        let rules = super::rules(&good_rows(), &missing);
        assert!(!rules[0].ok);
        assert!(rules[0]
            .text
            .ends_with("; not measured: json_pair/runtime_fast"));
        assert!(rules[1..].iter().all(|r| r.ok));
        // 4% over the twin on vm_pair: allowed; 6%: not; a path the learner does not route,
        // and a mode that does not learn, stay exact.
        let mut rows = good_rows();
        rows.push(row("vm_pair", "learning", 728, 700));
        only_fails(&rows, None, "");
        rows.push(row("vm_pair", "research", 742, 700));
        only_fails(
            &rows,
            Some(0),
            "violated by vm_pair research: 742.0 > 700.0",
        );
        for extra in [
            row("tiny_pair", "learning", 156, 155),
            row("vm_pair", "balanced", 101, 100),
        ] {
            let mut rows = good_rows();
            rows.push(extra);
            only_fails(&rows, Some(0), "violated by");
        }
        assert!(contested("vm_pair", "runtime_research") && !contested("vm_pair", "fast"));
        assert!(!contested("tiny_pair", "learning"));
    }
    /// Figures with the tiny pair of LEARNING and RESEARCH (counts of `OPS` operations) and
    /// BALANCED (per operation).
    fn learning_figures(learning: u64, research: u64, balanced: u64) -> Figures {
        let mut f = pool_figures(45, balanced, 68, 75);
        f.ir.insert(format!("{LEARNING_PATH}/learning"), learning);
        f.ir.insert(format!("{LEARNING_PATH}/research"), research);
        f
    }

    #[test]
    fn the_learning_rules_allow_fifteen_and_sixty_instructions_over_balanced() {
        let f = learning_figures(61 * OPS, 106 * OPS, 46);
        let (learning, research) = (learning_rule(&f), research_rule(&f));
        assert!(learning.ok && research.ok, "{learning} {research}");
        assert_eq!(
            learning.to_string(),
            "rule: (vii) learning adds ≤ 15 Ir/op to balanced's tiny_pair (32 B; compiled, same \
             run): learning 61.0 − balanced 46.0 = +15.0 ≤ 15 — ok"
        );
        assert_eq!(
            research.to_string(),
            "rule: (viii) research adds ≤ 60 Ir/op to balanced's tiny_pair (32 B; compiled, same \
             run): research 106.0 − balanced 46.0 = +60.0 ≤ 60 — ok"
        );
        // One instruction more in 1,024 operations fails: the comparison is exact.
        let f = learning_figures(61 * OPS + 1, 106 * OPS + 1, 46);
        assert!(!learning_rule(&f).ok && !research_rule(&f).ok);
        let mut f = learning_figures(50 * OPS, 90 * OPS, 46);
        f.ir.remove(&format!("{LEARNING_PATH}/{LEARNING_TWIN}"));
        let rule = learning_rule(&f);
        assert!(
            !rule.ok && rule.text.ends_with("balanced not measured"),
            "{rule}"
        );
        f.ir.remove(&format!("{LEARNING_PATH}/research"));
        let rule = research_rule(&f);
        assert!(
            !rule.ok && rule.text.ends_with("research and balanced not measured"),
            "{rule}"
        );
    }

    /// Figures with the tiny pair of FAST, BALANCED and the two peers rule (vi) reads.
    fn pool_figures(fast: u64, balanced: u64, jemalloc: u64, mimalloc: u64) -> Figures {
        let who = [
            ("fast", fast),
            ("balanced", balanced),
            ("jemalloc", jemalloc),
        ];
        let who = who
            .into_iter()
            .chain([("mimalloc", mimalloc), ("glibc", 140)]);
        Figures::of(
            &who.map(|(w, n)| (format!("{POOL_PATH}/{w}"), n))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_pool_rule_holds_on_good_figures_and_fails_over_budget_over_a_peer_or_unmeasured() {
        let rule = pool_rule(&pool_figures(45, 46, 68, 75));
        assert!(rule.ok, "{rule}");
        assert_eq!(
            rule.to_string(),
            "rule: (vi) the pool: tiny_pair (32 B) FAST ≤ 60 Ir/op and ≤ jemalloc, BALANCED ≤ \
             mimalloc (compiled, same run): fast 45.0 ≤ 60, fast 45.0 ≤ jemalloc 68.0, \
             balanced 46.0 ≤ mimalloc 75.0 — ok"
        );
        // The bounds are inclusive.
        assert!(pool_rule(&pool_figures(60, 75, 60, 75)).ok);
        // fast balanced jemalloc mimalloc | what the rule says.
        const CASES: &str = "
            61 46 68 75 | fast 61.0 > 60, fast 61.0 ≤ jemalloc 68.0
            55 46 54 75 | fast 55.0 ≤ 60, fast 55.0 > jemalloc 54.0
            45 148 68 75 | balanced 148.0 > mimalloc 75.0";
        for case in CASES.trim().lines() {
            let (figures, want) = case.split_once(" | ").unwrap();
            let n: Vec<u64> = figures
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            let rule = pool_rule(&pool_figures(n[0], n[1], n[2], n[3]));
            assert!(!rule.ok && rule.text.contains(want), "{rule}");
        }
        // One instruction over in 1024 operations is enough: the comparison is exact.
        let mut f = pool_figures(45, 46, 68, 75);
        f.ir.insert(format!("{POOL_PATH}/balanced"), 75 * OPS + 1);
        assert!(!pool_rule(&f).ok);
        // A missing mode or peer fails.
        for who in ["jemalloc", "fast"] {
            let mut f = pool_figures(45, 46, 68, 75);
            f.ir.remove(&format!("{POOL_PATH}/{who}"));
            let rule = pool_rule(&f);
            let want = format!("{who} not measured");
            assert!(!rule.ok && rule.text.contains(&want), "{rule}");
        }
        // Figures of another path do not count.
        let mut f = pool_figures(45, 46, 68, 75);
        f.ir = (f.ir.into_iter())
            .map(|(k, v)| (k.replace(POOL_PATH, "small_pair"), v))
            .collect();
        assert!(!pool_rule(&f).ok);
    }

    #[test]
    fn rows_pair_each_mode_with_its_twin() {
        use super::super::figures::Environment;
        let mut figures = Figures {
            env: Environment::default(),
            paths: vec!["tiny_pair".into()],
            ir: Default::default(),
            config: Default::default(),
        };
        for (i, mode) in MODES.iter().enumerate() {
            figures
                .ir
                .insert(format!("tiny_pair/{mode}"), 100 + i as u64);
            figures
                .ir
                .insert(format!("tiny_pair/runtime_{mode}"), 200 + i as u64);
            figures
                .config
                .insert(format!("tiny_pair/{mode}"), UNTOUCHED.into());
        }
        figures.ir.insert("tiny_pair/glibc".into(), 50);
        let (rows, missing) = rows(&figures);
        assert!(missing.is_empty());
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[2].mode, "balanced");
        assert_eq!((rows[2].compiled.ir, rows[2].runtime.ir), (102, 202));
        assert_eq!(rows[2].compiled.config, UNTOUCHED);
        assert_eq!(rows[2].runtime.config, "");

        figures.ir.remove("tiny_pair/runtime_fast");
        let (rows, missing) = super::rows(&figures);
        assert_eq!(rows.len(), 4);
        assert_eq!(missing, ["tiny_pair/runtime_fast"]);
    }
}
