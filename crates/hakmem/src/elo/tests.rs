//! The ratings, the matches and the league, checked against hand-computed cases.

use super::*;

/// A sample costing `c` on every component.
fn flat(c: f64) -> Sample {
    [c, c, c]
}

#[test]
fn thresholds_are_geometric_512_kib_to_32_mib() {
    assert_eq!(THRESHOLDS[0], 512 << 10);
    assert_eq!(THRESHOLDS[CANDIDATES - 1], 32 << 20);
    let ratio = 64f64.powf(1.0 / 11.0);
    for (i, &t) in THRESHOLDS.iter().enumerate() {
        let ideal = (512 << 10) as f64 * ratio.powi(i as i32);
        assert!(
            (t as f64 / ideal - 1.0).abs() < 0.002,
            "{i}: {t} vs {ideal}"
        );
        assert_eq!(t % 4096, 0);
    }
    assert_eq!(
        start_index(2 << 20),
        3,
        "a 2 MiB threshold starts at 1592 KiB"
    );
    assert_eq!(start_index(0), 0);
    assert_eq!(start_index(usize::MAX), CANDIDATES - 1);
    assert_eq!(bucket(CONTESTED), 0);
    assert_eq!(bucket(THRESHOLDS[1] - 1), 0);
    assert_eq!(bucket(THRESHOLDS[1]), 1);
    assert_eq!(bucket(1 << 40), CANDIDATES - 1);
}

#[test]
fn elo_update_is_the_standard_one() {
    assert!((expected(1500.0, 1500.0) - 0.5).abs() < 1e-12);
    assert!((expected(1900.0, 1500.0) - 1.0 / 1.1).abs() < 1e-12);
    assert_eq!(update(1500.0, 1500.0, 1.0), (1516.0, 1484.0));
    assert_eq!(update(1500.0, 1500.0, 0.5), (1500.0, 1500.0));
    let (a, b) = update(1600.0, 1400.0, 0.0);
    assert!((a + b - 3000.0).abs() < 1e-9, "zero-sum");
    assert!((1600.0 - a - 32.0 * expected(1600.0, 1400.0)).abs() < 1e-9);
}

#[test]
fn tally_weighs_and_normalises() {
    let mut t = Tally::EMPTY;
    t.add(&[10.0, 0.0, 100.0]);
    t.add(&[30.0, 0.0, 300.0]);
    assert_eq!(t.mean(), [20.0, 0.0, 200.0]);
    // Scales = the means: an average sample costs 0.4 + 0.3 (0 faults) ... the fault term
    // drops out (scale 0), CPU and bytes count by their weights.
    let (m, v) = t.cost(&[20.0, 0.0, 200.0]);
    assert!((m - 0.7).abs() < 1e-12, "{m}");
    // Each sample's cost is 0.35 or 1.05: variance 0.35².
    assert!((v - 0.35 * 0.35).abs() < 1e-12, "{v}");
    assert!((cost(&[10.0, 5.0, 100.0], &[20.0, 0.0, 200.0]) - 0.35).abs() < 1e-12);
}

#[test]
fn judge_needs_a_real_difference() {
    let mut a = Tally::EMPTY;
    let mut b = Tally::EMPTY;
    for i in 0..50 {
        let noise = if i % 2 == 0 { 0.2 } else { -0.2 };
        a.add(&flat(1.0 + noise));
        b.add(&flat(1.01 - noise));
    }
    assert_eq!(judge(&a, &b, &flat(1.0)).0, 0.5, "1% apart: a draw");
    let mut c = Tally::EMPTY;
    for _ in 0..50 {
        c.add(&flat(2.0));
    }
    assert_eq!(judge(&a, &c, &flat(1.0)).0, 1.0);
    assert_eq!(judge(&c, &a, &flat(1.0)).0, 0.0);
}

/// Feeds `league` samples until a match is played: strategy `s` costs `costs(s)`.
fn play_one(league: &mut League, costs: &dyn Fn(usize) -> f64) -> Played {
    for _ in 0..100_000 {
        let s = league.choose();
        if let Some(p) = league.record(s, &flat(costs(s))) {
            return p;
        }
    }
    panic!("no match played");
}

/// A league in its first learning period, led by candidate 3.
fn league(seed: u64) -> League {
    let mut l = League::new(seed, 3);
    l.reset(3);
    l
}

#[test]
fn ratings_move_the_cheaper_rises_the_dearer_falls() {
    let mut league = league(7);
    let (home, away) = league.pairing();
    assert_ne!(home, away);
    let cheap = |s: usize| if s == away { 1.0 } else { 3.0 };
    let p = play_one(&mut league, &cheap);
    assert_eq!((p.home, p.away, p.score), (home, away, 0.0));
    assert_eq!(league.rating(away), 1516.0, "the cheaper rises");
    assert_eq!(league.rating(home), 1484.0, "the dearer falls");
    assert_eq!(league.leader(), away, "the best rated leads");
    assert_eq!(league.played, 1);
}

#[test]
fn the_cheapest_candidate_ends_up_leading_and_pruning_keeps_six() {
    // Cost grows with the distance from candidate 8.
    let cost = |s: usize| 1.0 + (s as f64 - 8.0).abs() * 0.25;
    for seed in 1..=20 {
        let mut league = league(seed);
        let mut pruned_at = None;
        for m in 0..200 {
            let p = play_one(&mut league, &cost);
            if p.pruned {
                pruned_at = Some(m);
            }
        }
        let at = pruned_at.expect("the field was pruned");
        assert!(
            at + 1 >= CANDIDATES * COVERAGE as usize / 2,
            "{seed}: not before everyone played: {at}"
        );
        assert!(league.pruned());
        assert_eq!(league.alive_mask().count_ones() as usize, SURVIVORS);
        assert_eq!(league.leader(), 8, "{seed}");
        for s in [7, 8, 9] {
            assert!(
                league.alive(s),
                "{seed}: {s} survives: {:012b}",
                league.alive_mask()
            );
        }
        for s in [0, 1] {
            assert!(
                !league.alive(s),
                "{seed}: {s} is pruned: {:012b}",
                league.alive_mask()
            );
        }
        // The survivors are cheaper on average than the pruned.
        let mean = |alive: bool| {
            let v: std::vec::Vec<f64> = (0..CANDIDATES)
                .filter(|&s| league.alive(s) == alive)
                .map(cost)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(true) < mean(false) - 0.5, "{seed}");
        assert!(league.rating(8) > INITIAL_RATING);
    }
}

#[test]
fn exploration_happens_at_epsilon() {
    let mut league = league(1234);
    let mut counts = [0u32; CANDIDATES];
    let n = 100_000;
    for _ in 0..n {
        counts[league.choose()] += 1;
    }
    let rate = league.explored as f64 / league.choices as f64;
    assert!((rate - EPSILON).abs() < 0.005, "explored {rate}");
    // Exploration reaches every candidate; the match gets the rest, half each.
    let (h, a) = league.pairing();
    for (s, &k) in counts.iter().enumerate() {
        let share = f64::from(k) / n as f64;
        let expect = EPSILON / CANDIDATES as f64
            + if s == h || s == a {
                (1.0 - EPSILON) / 2.0
            } else {
                0.0
            };
        assert!((share - expect).abs() < 0.01, "{s}: {share} vs {expect}");
    }
}

#[test]
fn equal_strategies_draw_and_the_leader_stays() {
    let mut league = league(99);
    let same = |_: usize| 1.0;
    for _ in 0..40 {
        let p = play_one(&mut league, &same);
        assert_eq!(p.score, 0.5);
    }
    assert_eq!(league.leader(), 3);
    assert!((0..CANDIDATES).all(|s| league.rating(s) == INITIAL_RATING));
    assert!(league.pruned());
    assert!(league.alive(3), "the leader survives a tie");
    let (h, _) = league.pairing();
    assert_eq!(h, 3, "after pruning the leader plays every match");
}

#[test]
fn swiss_pairing_rates_everyone_before_pruning() {
    let mut league = league(3);
    let cost = |s: usize| 1.0 + s as f64 * 0.1;
    for _ in 0..CANDIDATES * COVERAGE as usize / 2 - 1 {
        play_one(&mut league, &cost);
        assert!(!league.pruned());
    }
    // Pairing by fewest matches: everyone has played COVERAGE matches when the field is cut.
    let p = play_one(&mut league, &cost);
    assert!(p.pruned);
    assert!((0..CANDIDATES).all(|s| league.matches(s) == COVERAGE));
}

#[test]
fn reset_starts_a_new_period() {
    let mut league = league(5);
    play_one(&mut league, &|s| s as f64 + 1.0);
    league.reset(6);
    assert_eq!(league.leader(), 6);
    let (h, a) = league.pairing();
    assert_ne!(h, a);
    assert_eq!(league.samples(), 0);
    assert!(!league.pruned() && league.alive_mask() == ALL_ALIVE);
    assert_eq!(league.played, 1, "cumulative counts go on");
}

#[test]
fn rng_is_seedable_and_uniform() {
    let mut a = Rng::new(3);
    let mut b = Rng::new(3);
    assert_eq!(a.next_u64(), b.next_u64());
    let mut hist = [0u32; 6];
    for _ in 0..60_000 {
        hist[a.below(6)] += 1;
    }
    assert!(
        hist.iter().all(|&h| (9_400..10_600).contains(&h)),
        "{hist:?}"
    );
    assert!((0..1000).map(|_| a.unit()).all(|u| (0.0..1.0).contains(&u)));
    assert_eq!(nth_set_bit(0b1011_0000, 2), 7);
}
