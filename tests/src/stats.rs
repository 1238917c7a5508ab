//! Bounds for "fair share" assertions, computed exactly from the binomial
//! distribution, so a correct uniform dataplane fails a test with a known,
//! tiny probability.

/// ln(k!) for every k in 0..=n.
fn ln_factorials(n: u32) -> Vec<f64> {
    let mut v = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0_f64;
    v.push(acc);
    for k in 1..=n {
        acc += f64::from(k).ln();
        v.push(acc);
    }
    v
}

/// P(X = k) for X ~ Binomial(n, p), for every k in 0..=n.
fn binomial_pmf(n: u32, p: f64) -> Vec<f64> {
    let lf = ln_factorials(n);
    let n_us = n as usize;
    (0..=n_us)
        .map(|k| {
            let (kf, nf) = (k as f64, f64::from(n));
            (lf[n_us] - lf[k] - lf[n_us - k] + kf * p.ln() + (nf - kf) * (1.0 - p).ln()).exp()
        })
        .collect()
}

/// The interval `[lo, hi]` that X ~ Binomial(n, p) leaves with probability at
/// most `alpha` (at most `alpha / 2` on each side).
pub fn binomial_bounds(n: u32, p: f64, alpha: f64) -> (u32, u32) {
    let pmf = binomial_pmf(n, p);
    let side = alpha / 2.0;
    let mut lo = 0;
    let mut below = 0.0;
    for (k, &pk) in (0_u32..).zip(&pmf) {
        if below + pk > side {
            lo = k;
            break;
        }
        below += pk;
    }
    let mut hi = n;
    let mut above = 0.0;
    for (k, &pk) in (0..=n).rev().zip(pmf.iter().rev()) {
        if above + pk > side {
            hi = k;
            break;
        }
        above += pk;
    }
    (lo, hi)
}

/// Bounds for each backend's count when `n` connections spread uniformly
/// over `backends` backends, such that a correct dataplane puts ANY backend
/// outside them with probability below `alpha` (union bound over backends).
pub fn fair_share_bounds(n: u32, backends: u32, alpha: f64) -> (u32, u32) {
    binomial_bounds(n, 1.0 / f64::from(backends), alpha / f64::from(backends))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmf_sums_to_one() {
        let total: f64 = binomial_pmf(300, 1.0 / 3.0).iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn bounds_for_300_over_3() {
        // Checked independently (Python, exact integer binomials): with
        // alpha 1e-6/3 per backend the interval is [60, 143].
        assert_eq!(fair_share_bounds(300, 3, 1e-6), (60, 143));
    }
}
