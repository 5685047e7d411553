//! Walker's alias method: O(1) draws from a fixed discrete distribution.

use rand::Rng;

/// A sampling table built once from non-negative weights (Vose's construction).
#[derive(Debug, Clone)]
pub(crate) struct Alias {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Alias {
    /// Builds the table. An empty slice gives an empty table, which must not be sampled.
    /// Weights must be finite and non-negative with a positive sum.
    pub(crate) fn new(weights: &[f64]) -> Alias {
        let n = weights.len();
        if n == 0 {
            return Alias { prob: Vec::new(), alias: Vec::new() };
        }
        assert!(u32::try_from(n).is_ok(), "alias table too large");
        let total: f64 = weights.iter().sum();
        assert!(
            total.is_finite() && total > 0.0 && weights.iter().all(|w| *w >= 0.0),
            "alias weights must be non-negative with a positive, finite sum"
        );
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] = (scaled[l] + scaled[s]) - 1.0;
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is 1 up to rounding and keeps its default probability of 1.
        Alias { prob, alias }
    }

    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let i = rng.random_range(0..self.prob.len());
        if rng.random::<f64>() < self.prob[i] { i } else { self.alias[i] as usize }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn frequencies_follow_weights() {
        let weights = [1.0, 0.0, 3.0, 6.0];
        let table = Alias::new(&weights);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0usize; 4];
        let n = 100_000;
        for _ in 0..n {
            counts[table.sample(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0, "a zero weight is never drawn");
        for (c, w) in counts.iter().zip(weights) {
            let expected = w / 10.0;
            let got = *c as f64 / n as f64;
            assert!((got - expected).abs() < 0.01, "{counts:?}");
        }
    }
}
