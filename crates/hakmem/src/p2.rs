//! The P² streaming quantile estimator (Jain & Chlamtac, CACM 1985): one quantile of a stream
//! in five markers, constant memory and time, nothing allocated. The evolution lifecycle uses it
//! for the p99 of the cost samples.

/// An estimate of the `p`-quantile of everything [`P2::add`]ed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct P2 {
    p: f64,
    count: u64,
    /// Marker heights.
    q: [f64; 5],
    /// Marker positions (1-based ranks).
    n: [f64; 5],
    /// Desired positions, and their increments per observation.
    want: [f64; 5],
    step: [f64; 5],
}

impl P2 {
    /// An empty estimator of the `p`-quantile (`0 < p < 1`).
    pub(crate) const fn new(p: f64) -> P2 {
        P2 {
            p,
            count: 0,
            q: [0.0; 5],
            n: [1.0, 2.0, 3.0, 4.0, 5.0],
            want: [1.0, 1.0 + 2.0 * p, 1.0 + 4.0 * p, 3.0 + 2.0 * p, 5.0],
            step: [0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0],
        }
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Adds one observation.
    pub(crate) fn add(&mut self, x: f64) {
        if self.count < 5 {
            self.q[self.count as usize] = x;
            self.count += 1;
            if self.count == 5 {
                sort(&mut self.q);
            }
            return;
        }
        self.count += 1;
        let q = &mut self.q;
        // The cell x falls in; the extremes move to take it.
        let k = if x < q[0] {
            q[0] = x;
            0
        } else if x >= q[4] {
            q[4] = x;
            3
        } else {
            (1..5).find(|&i| x < q[i]).map_or(3, |i| i - 1)
        };
        for i in k + 1..5 {
            self.n[i] += 1.0;
        }
        for i in 0..5 {
            self.want[i] += self.step[i];
        }
        // Move the three middle markers toward their desired positions, one rank at a time.
        for i in 1..4 {
            let d = self.want[i] - self.n[i];
            if (d >= 1.0 && self.n[i + 1] - self.n[i] > 1.0)
                || (d <= -1.0 && self.n[i - 1] - self.n[i] < -1.0)
            {
                let d = d.signum();
                let parabolic = self.parabolic(i, d);
                self.q[i] = if self.q[i - 1] < parabolic && parabolic < self.q[i + 1] {
                    parabolic
                } else {
                    self.linear(i, d)
                };
                self.n[i] += d;
            }
        }
    }

    fn parabolic(&self, i: usize, d: f64) -> f64 {
        let (q, n) = (&self.q, &self.n);
        q[i] + d / (n[i + 1] - n[i - 1])
            * ((n[i] - n[i - 1] + d) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                + (n[i + 1] - n[i] - d) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
    }

    fn linear(&self, i: usize, d: f64) -> f64 {
        let j = if d > 0.0 { i + 1 } else { i - 1 };
        self.q[i] + d * (self.q[j] - self.q[i]) / (self.n[j] - self.n[i])
    }

    /// The estimate, or `None` before the first observation. With fewer than five observations
    /// it is the exact quantile of those (nearest rank).
    pub(crate) fn estimate(&self) -> Option<f64> {
        match self.count {
            0 => None,
            c if c < 5 => {
                let mut few = self.q;
                let c = c as usize;
                sort(&mut few[..c]);
                let rank = (self.p * c as f64).ceil() as usize;
                Some(few[rank.clamp(1, c) - 1])
            }
            _ => Some(self.q[2]),
        }
    }
}

/// Insertion sort of at most five values.
fn sort(v: &mut [f64]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v[j] < v[j - 1] {
            v.swap(j, j - 1);
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elo::Rng;
    use std::vec::Vec;

    /// The exact p-quantile (nearest rank) of `xs`.
    fn exact(xs: &mut [f64], p: f64) -> f64 {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let rank = (p * xs.len() as f64).ceil() as usize;
        xs[rank - 1]
    }

    /// P²'s p99 of `n` draws of `draw` is within 5% of the exact p99 of the same draws.
    fn check(name: &str, n: usize, mut draw: impl FnMut(&mut Rng) -> f64) {
        let mut rng = Rng::new(0xC0FFEE);
        let mut est = P2::new(0.99);
        let mut xs = Vec::with_capacity(n);
        for _ in 0..n {
            let x = draw(&mut rng);
            est.add(x);
            xs.push(x);
        }
        let got = est.estimate().unwrap();
        let want = exact(&mut xs, 0.99);
        let err = (got / want - 1.0).abs();
        assert!(
            err < 0.05,
            "{name}: P² {got} vs exact {want} ({:.2}%)",
            err * 100.0
        );
    }

    #[test]
    fn p99_within_five_percent_on_known_distributions() {
        for n in [2_000, 20_000, 200_000] {
            check("uniform", n, |r| r.unit());
            check("exponential", n, |r| -(1.0 - r.unit()).ln());
            // Normal by Box–Muller, shifted positive.
            check("normal", n, |r| {
                let (u, v) = (1.0 - r.unit(), r.unit());
                10.0 + (-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos()
            });
            check("lognormal", n, |r| {
                let (u, v) = (1.0 - r.unit(), r.unit());
                ((-2.0 * u.ln()).sqrt() * (2.0 * core::f64::consts::PI * v).cos() * 0.5).exp()
            });
            // Bimodal, like page-fault costs: mostly cheap, 3% dear.
            check("bimodal", n, |r| {
                let base = 1.0 + 0.1 * r.unit();
                if r.unit() < 0.03 {
                    base + 50.0
                } else {
                    base
                }
            });
        }
    }

    #[test]
    fn few_observations_are_exact() {
        let mut est = P2::new(0.99);
        assert_eq!(est.estimate(), None);
        for x in [3.0, 1.0, 2.0] {
            est.add(x);
        }
        assert_eq!(est.estimate(), Some(3.0));
        assert_eq!(est.count(), 3);
        let mut median = P2::new(0.5);
        for x in [5.0, 1.0, 4.0, 2.0] {
            median.add(x);
        }
        assert_eq!(median.estimate(), Some(2.0));
    }

    #[test]
    fn a_constant_stream_estimates_the_constant() {
        let mut est = P2::new(0.99);
        for _ in 0..1000 {
            est.add(7.5);
        }
        assert_eq!(est.estimate(), Some(7.5));
    }
}
