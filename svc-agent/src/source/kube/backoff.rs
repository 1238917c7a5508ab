//! Exponential backoff with jitter for reconnecting to the API server.

use std::time::Duration;

use rand::Rng as _;

/// 100 ms doubling to 10 s, each delay jittered by up to +-20 % so that a
/// fleet of agents does not relist in lockstep after an API server restart.
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(10);

impl Backoff {
    pub(super) const fn new() -> Self {
        Self { next: FIRST }
    }

    /// The delay to wait now.
    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        base.mul_f64(rand::rng().random_range(0.8..1.2))
    }

    /// Back to the first delay after a success.
    pub(super) fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        for _ in 0..20 {
            assert!(b.next_delay() <= MAX.mul_f64(1.2));
        }
        assert!(b.next_delay() >= MAX.mul_f64(0.8));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
