//! Elo strategy selection: the candidate mmap thresholds, their cost samples, the matches that
//! rate them, ε-greedy exploration and pruning (SPEC §4; docs/learning.md).
//!
//! A *strategy* is a candidate threshold: a contested request (at least [`CONTESTED`] bytes) of
//! `size` bytes goes to the system allocator when `size < THRESHOLDS[s]`, else to the large
//! path. A *sample* is the measured cost of one contested allocation routed by one strategy
//! ([`Sample`]: CPU time, page faults and the bytes its block holds). A *match* pits two
//! survivors against each other once each has [`MIN_SAMPLES`] fresh samples: the cheaper one on
//! the weighted cost wins, a difference within noise is a draw, and both ratings take the
//! standard Elo update. Until every candidate has played [`COVERAGE`] matches the pairings are
//! Swiss (the least-played candidate against the least-played one rated closest to it); then the
//! top [`SURVIVORS`] survive and every match is the leader (the best-rated survivor) against its
//! strongest contender (the next best).
//!
//! Everything here is plain data driven by its caller (the learner, under its lock): no clock,
//! no atomics, a seedable xorshift for the random choices, so every rule is unit-tested.

/// Number of candidate thresholds.
pub(crate) const CANDIDATES: usize = 12;

/// The candidate thresholds: geometric from 512 KiB to 32 MiB (ratio 64^(1/11) ≈ 1.46), each
/// rounded to 4 KiB.
pub(crate) const THRESHOLDS: [usize; CANDIDATES] = [
    512 << 10,
    748 << 10,
    1092 << 10,
    1592 << 10,
    2324 << 10,
    3392 << 10,
    4948 << 10,
    7220 << 10,
    10540 << 10,
    15384 << 10,
    22452 << 10,
    32 << 20,
];

/// The smallest candidate: every request below it takes the small-object path whatever the
/// strategy, so only requests from here up are *contested* (routed by the learner).
pub(crate) const CONTESTED: usize = THRESHOLDS[0];

/// Candidates left after pruning.
pub(crate) const SURVIVORS: usize = 6;
/// Every rating starts here.
pub(crate) const INITIAL_RATING: f64 = 1500.0;
/// The Elo K-factor: the most a rating moves in one match.
pub(crate) const K: f64 = 32.0;
/// The share of samples served by a uniformly random survivor (exploration).
pub(crate) const EPSILON: f64 = 0.1;
/// Fresh samples each side of a match needs before the match is played.
pub(crate) const MIN_SAMPLES: u32 = 50;
/// Matches every candidate plays before the field is pruned.
pub(crate) const COVERAGE: u32 = 4;
/// Two costs within this fraction of their mean are a draw …
pub(crate) const DRAW_MARGIN: f64 = 0.02;
/// … as are two within this many standard errors of their difference: noise decides nothing.
pub(crate) const DRAW_SE: f64 = 2.0;
/// The weights of CPU time, page faults and bytes held in the cost.
pub(crate) const WEIGHTS: [f64; 3] = [0.4, 0.3, 0.3];
/// Samples after which a learning period's normalisation scales are fixed.
pub(crate) const SCALE_SAMPLES: u32 = 240;

/// One cost sample: `[CPU µs, page faults, bytes held]` of one contested allocation.
pub(crate) type Sample = [f64; 3];

/// The index of the candidate whose threshold is the largest not above `threshold` (the first
/// one if none is): where learning starts for a mode whose configured threshold is `threshold`.
pub(crate) const fn start_index(threshold: usize) -> usize {
    let mut i = CANDIDATES - 1;
    while i > 0 && THRESHOLDS[i] > threshold {
        i -= 1;
    }
    i
}

/// `s` as an index into a per-candidate table. Every strategy the learner passes around (a
/// leader, a side of a match, a thread's strategy, the frozen one) is below [`CANDIDATES`], but
/// most are read back from state the compiler cannot see through: unchanged then, else clamped
/// to the last candidate, which lets the compiler drop the bounds check, whose panic path the
/// allocator must not reach (docs/preload.md). A move and a conditional move where the check
/// was a branch.
#[inline(always)]
pub(crate) const fn index(s: usize) -> usize {
    debug_assert!(s < CANDIDATES);
    if s < CANDIDATES {
        s
    } else {
        CANDIDATES - 1
    }
}

/// The threshold of strategy `s` (below [`CANDIDATES`]; see [`index`]).
#[inline(always)]
pub(crate) const fn threshold(s: usize) -> usize {
    THRESHOLDS[index(s)]
}

/// The bucket of a contested request of `size` bytes: how many candidates beyond the first lie
/// at or below it (0 ..= 11). Two requests in one bucket are routed alike by every strategy.
#[inline]
pub(crate) fn bucket(size: usize) -> usize {
    THRESHOLDS[1..].iter().take_while(|&&t| t <= size).count()
}

/// xorshift64* (Vigna): small, fast, seedable; good enough to pick strategies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is replaced, xorshift needs a non-zero state).
    pub(crate) const fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Running moments of samples: count, sums and sums of products, so that the mean and variance
/// of the weighted cost can be computed for any normalisation afterwards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tally {
    n: u32,
    sum: Sample,
    prod: [Sample; 3],
}

impl Tally {
    pub(crate) const EMPTY: Tally = Tally {
        n: 0,
        sum: [0.0; 3],
        prod: [[0.0; 3]; 3],
    };

    pub(crate) fn add(&mut self, x: &Sample) {
        self.n += 1;
        for i in 0..3 {
            self.sum[i] += x[i];
            for j in 0..3 {
                self.prod[i][j] += x[i] * x[j];
            }
        }
    }

    pub(crate) fn n(&self) -> u32 {
        self.n
    }

    /// The mean of each component (zeros when empty).
    pub(crate) fn mean(&self) -> Sample {
        if self.n == 0 {
            return [0.0; 3];
        }
        self.sum.map(|s| s / f64::from(self.n))
    }

    /// The mean and the (population) variance of the weighted cost [`cost`] of the samples.
    pub(crate) fn cost(&self, scales: &Sample) -> (f64, f64) {
        if self.n == 0 {
            return (0.0, 0.0);
        }
        let w = coefficients(scales);
        let n = f64::from(self.n);
        let mean = self.mean();
        let mut var = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                let cov = self.prod[i][j] / n - mean[i] * mean[j];
                var += w[i] * w[j] * cov;
            }
        }
        let m = (0..3).map(|i| w[i] * mean[i]).sum();
        (m, var.max(0.0))
    }
}

/// `WEIGHTS[i] / scales[i]`, 0 where a scale is 0 (a component that never varied from zero
/// tells no strategy from another).
fn coefficients(scales: &Sample) -> Sample {
    let mut w = [0.0; 3];
    for i in 0..3 {
        if scales[i] > 0.0 {
            w[i] = WEIGHTS[i] / scales[i];
        }
    }
    w
}

/// The weighted cost of a sample: Σ WEIGHTS[i] · x[i] / scales[i]. With each scale the mean of
/// its component over all samples, an average sample costs 1 and each weight is the share of
/// the cost its component carries.
pub(crate) fn cost(x: &Sample, scales: &Sample) -> f64 {
    let w = coefficients(scales);
    (0..3).map(|i| w[i] * x[i]).sum()
}

/// The expected score of a player rated `ra` against one rated `rb`.
pub(crate) fn expected(ra: f64, rb: f64) -> f64 {
    1.0 / (1.0 + 10f64.powf((rb - ra) / 400.0))
}

/// The standard Elo update after a game A scored `score_a` in (1 win, ½ draw, 0 loss).
pub(crate) fn update(ra: f64, rb: f64, score_a: f64) -> (f64, f64) {
    let ea = expected(ra, rb);
    (
        ra + K * (score_a - ea),
        rb + K * ((1.0 - score_a) - (1.0 - ea)),
    )
}

/// The score of A against B from their samples: 1 if A is cheaper beyond noise, 0 if dearer,
/// ½ otherwise; with both mean costs.
pub(crate) fn judge(a: &Tally, b: &Tally, scales: &Sample) -> (f64, f64, f64) {
    let (ca, va) = a.cost(scales);
    let (cb, vb) = b.cost(scales);
    let se = (va / f64::from(a.n.max(1)) + vb / f64::from(b.n.max(1))).sqrt();
    let margin = (DRAW_MARGIN * (ca + cb) / 2.0).max(DRAW_SE * se);
    let score = if (ca - cb).abs() <= margin {
        0.5
    } else if ca < cb {
        1.0
    } else {
        0.0
    };
    (score, ca, cb)
}

/// A match just played.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Played {
    /// The two sides.
    pub home: usize,
    pub away: usize,
    /// The home side's score: 1, ½ or 0.
    pub score: f64,
    /// Mean weighted costs of the two sides.
    pub costs: (f64, f64),
    /// The field was pruned after this match.
    pub pruned: bool,
    /// The leader after this match, if it changed.
    pub new_leader: Option<usize>,
}

/// The ratings, the samples not yet used by a match, and who plays whom.
#[derive(Clone, Debug)]
pub(crate) struct League {
    rating: [f64; CANDIDATES],
    matches: [u32; CANDIDATES],
    /// Bit `s` set: candidate `s` survives.
    alive: u16,
    pruned: bool,
    leader: usize,
    /// The current match.
    home: usize,
    away: usize,
    /// Bit `t` of `met[s]`: `s` and `t` have played each other (Swiss pairing avoids rematches).
    met: [u16; CANDIDATES],
    pending: [Tally; CANDIDATES],
    /// Every sample of this learning period (the normalisation scales).
    all: Tally,
    scales: Option<Sample>,
    rng: Rng,
    /// Strategy choices made, and how many of them explored (cumulative).
    pub choices: u64,
    pub explored: u64,
    /// Matches played (cumulative).
    pub played: u64,
}

const ALL_ALIVE: u16 = (1 << CANDIDATES) - 1;

impl League {
    pub(crate) const fn new(seed: u64, leader: usize) -> League {
        League {
            rating: [INITIAL_RATING; CANDIDATES],
            matches: [0; CANDIDATES],
            alive: ALL_ALIVE,
            pruned: false,
            leader,
            home: leader,
            away: if leader == 0 { 1 } else { 0 },
            met: [0; CANDIDATES],
            pending: [Tally::EMPTY; CANDIDATES],
            all: Tally::EMPTY,
            scales: None,
            rng: Rng::new(seed),
            choices: 0,
            explored: 0,
            played: 0,
        }
    }

    /// Starts a new learning period led by `leader`: every candidate back at the initial
    /// rating, no samples. The random generator and the cumulative counts go on.
    pub(crate) fn reset(&mut self, leader: usize) {
        debug_assert!(leader < CANDIDATES);
        self.rating = [INITIAL_RATING; CANDIDATES];
        self.matches = [0; CANDIDATES];
        self.met = [0; CANDIDATES];
        self.alive = ALL_ALIVE;
        self.pruned = false;
        self.pending = [Tally::EMPTY; CANDIDATES];
        self.all = Tally::EMPTY;
        self.scales = None;
        self.leader = leader;
        self.pair();
    }

    pub(crate) fn leader(&self) -> usize {
        index(self.leader)
    }

    /// The two sides of the current match.
    #[cfg(test)]
    pub(crate) fn pairing(&self) -> (usize, usize) {
        (self.home, self.away)
    }

    pub(crate) fn rating(&self, s: usize) -> f64 {
        self.rating[index(s)]
    }

    pub(crate) fn matches(&self, s: usize) -> u32 {
        self.matches[index(s)]
    }

    pub(crate) fn alive(&self, s: usize) -> bool {
        self.alive & (1 << s) != 0
    }

    pub(crate) fn alive_mask(&self) -> u16 {
        self.alive
    }

    /// Whether the field has been pruned (every candidate has been rated).
    pub(crate) fn pruned(&self) -> bool {
        self.pruned
    }

    /// Samples recorded in this learning period.
    pub(crate) fn samples(&self) -> u32 {
        self.all.n
    }

    /// The normalisation scales: the mean of each component over this period's samples, fixed
    /// once [`SCALE_SAMPLES`] are in.
    pub(crate) fn scales(&self) -> Sample {
        self.scales.unwrap_or_else(|| self.all.mean())
    }

    /// The scales once fixed.
    pub(crate) fn fixed_scales(&self) -> Option<Sample> {
        self.scales
    }

    /// The generator, for other random choices of the learner.
    pub(crate) fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// ε-greedy: the strategy to serve the next sample. With probability [`EPSILON`] a uniformly
    /// random survivor (exploration); otherwise one side of the current match — after pruning,
    /// the leader or its strongest contender — at even odds, so that the match fills up whatever
    /// rhythm the workload has.
    pub(crate) fn choose(&mut self) -> usize {
        self.choices += 1;
        if self.rng.unit() < EPSILON {
            self.explored += 1;
            let k = self.rng.below(self.alive.count_ones() as usize);
            return nth_set_bit(self.alive, k);
        }
        if self.rng.next_u64() & 1 == 0 {
            self.home
        } else {
            self.away
        }
    }

    /// Records a sample of strategy `s`; plays the current match once both sides have
    /// [`MIN_SAMPLES`] fresh samples.
    pub(crate) fn record(&mut self, s: usize, x: &Sample) -> Option<Played> {
        debug_assert!(s < CANDIDATES);
        self.all.add(x);
        if self.scales.is_none() && self.all.n >= SCALE_SAMPLES {
            self.scales = Some(self.all.mean());
        }
        if !self.alive(s) {
            return None; // a pruned strategy still serving a thread that has not noticed yet
        }
        self.pending[index(s)].add(x);
        let (h, a) = (index(self.home), index(self.away));
        if self.pending[h].n >= MIN_SAMPLES && self.pending[a].n >= MIN_SAMPLES {
            Some(self.play())
        } else {
            None
        }
    }

    fn play(&mut self) -> Played {
        let (h, a) = (index(self.home), index(self.away));
        let (score, ch, ca) = judge(&self.pending[h], &self.pending[a], &self.scales());
        (self.rating[h], self.rating[a]) = update(self.rating[h], self.rating[a], score);
        self.matches[h] += 1;
        self.matches[a] += 1;
        self.met[h] |= 1 << a;
        self.met[a] |= 1 << h;
        self.pending[h] = Tally::EMPTY;
        self.pending[a] = Tally::EMPTY;
        self.played += 1;
        let mut pruned = false;
        if !self.pruned && (0..CANDIDATES).all(|s| self.matches[s] >= COVERAGE) {
            self.prune();
            pruned = true;
        }
        let best = self.best();
        let new_leader = (best != self.leader).then_some(best);
        self.leader = best;
        self.pair();
        Played {
            home: h,
            away: a,
            score,
            costs: (ch, ca),
            pruned,
            new_leader,
        }
    }

    /// Candidates ordered best first: rating, then the leader, then the smaller index.
    fn ranked(&self) -> [usize; CANDIDATES] {
        let mut order: [usize; CANDIDATES] = core::array::from_fn(|i| i);
        let key = |s: usize| (self.rating[s], s == self.leader);
        // Insertion sort: 12 entries, stable (equal keys keep index order).
        for i in 1..CANDIDATES {
            let mut j = i;
            while j > 0 && better(key(order[j]), key(order[j - 1])) {
                order.swap(j, j - 1);
                j -= 1;
            }
        }
        order
    }

    /// Keeps the best [`SURVIVORS`].
    fn prune(&mut self) {
        let mut alive = 0u16;
        for &s in self
            .ranked()
            .iter()
            .filter(|&&s| self.alive(s))
            .take(SURVIVORS)
        {
            alive |= 1 << s;
        }
        self.alive = alive;
        self.pruned = true;
    }

    /// The best-rated survivor (the leader keeps its place on a tie).
    fn best(&self) -> usize {
        self.ranked()
            .into_iter()
            .find(|&s| self.alive(s))
            .unwrap_or(self.leader)
    }

    /// Pairs the next match. Before pruning (Swiss): the survivor that has played least
    /// against the least-played other it has not met yet, rated closest to it, so that every
    /// candidate gets rated against its peers. After: the leader against the best-rated other
    /// survivor. Ties are broken at random.
    fn pair(&mut self) {
        let alive = self.alive;
        if self.pruned {
            self.home = self.leader;
            self.away = self.pick(alive & !(1 << self.leader), |l, s| -l.rating[s]);
        } else {
            let home = self.pick(alive, |l, s| f64::from(l.matches[s]));
            let (r, met) = (self.rating[home], self.met[home]);
            self.home = home;
            self.away = self.pick(alive & !(1 << home), |l, s| {
                let again = f64::from(u8::from(met & (1 << s) != 0));
                f64::from(l.matches[s]) * 1e9 + again * 1e6 + (l.rating[s] - r).abs()
            });
        }
    }

    /// The candidate of `among` with the smallest `key`, ties at random (`home` if none).
    fn pick(&mut self, among: u16, key: impl Fn(&League, usize) -> f64) -> usize {
        let mut ties = 0u16;
        let mut best = f64::INFINITY;
        for s in (0..CANDIDATES).filter(|&s| among & (1 << s) != 0) {
            let k = key(self, s);
            if k < best {
                best = k;
                ties = 1 << s;
            } else if k == best {
                ties |= 1 << s;
            }
        }
        if ties == 0 {
            return index(self.home);
        }
        let k = self.rng.below(ties.count_ones() as usize);
        index(nth_set_bit(ties, k))
    }
}

/// Whether key `a` ranks before key `b`: higher rating, then being the leader.
fn better(a: (f64, bool), b: (f64, bool)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 && !b.1)
}

/// The index of the `k`-th set bit of `mask` (`k` below its population).
fn nth_set_bit(mask: u16, k: usize) -> usize {
    let mut m = mask;
    for _ in 0..k {
        m &= m - 1;
    }
    debug_assert!(m != 0);
    m.trailing_zeros() as usize
}

#[cfg(test)]
mod tests;
