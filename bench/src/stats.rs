//! Percentiles and medians.

use serde::{Deserialize, Serialize};

/// Distribution of one round's samples, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) mean: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Nearest-rank percentiles.
    pub(crate) fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let pct = |p: f64| {
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1] as f64
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Self {
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            mean: sum as f64 / samples.len() as f64,
            max: *samples.last().unwrap_or(&0) as f64,
        }
    }

    /// Field-wise median over rounds.
    pub(crate) fn median_of(rounds: &[Self]) -> Self {
        Self {
            p50: median(rounds.iter().map(|s| s.p50)),
            p90: median(rounds.iter().map(|s| s.p90)),
            p99: median(rounds.iter().map(|s| s.p99)),
            mean: median(rounds.iter().map(|s| s.mean)),
            max: rounds.iter().map(|s| s.max).fold(0.0, f64::max),
        }
    }
}

/// Median of `values` (mean of the middle two for an even count); 0 if empty.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

/// Nearest-rank percentile of unsorted `values`.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s: Vec<u64> = (1..=100).rev().collect();
        let sum = Summary::of(&mut s);
        assert_eq!((sum.p50, sum.p90, sum.p99, sum.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 50.0), 3.0);
    }
}
