//! Liveness, with kube-proxy's healthz semantics: the agent is unhealthy
//! when a change it received has waited longer than `--healthz-timeout`
//! without being programmed (the control loop is stuck, or far behind).
//! An idle agent is healthy however long nothing happens.
//!
//! Sources call [`Health::queued`] for every event; the control loop calls
//! [`Health::batch_started`] when it takes the queued events and
//! [`Health::batch_done`] when they are programmed.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Shared between the sources, the control loop and `/healthz`.
#[derive(Debug)]
pub(crate) struct Health {
    /// Times are nanoseconds since `epoch`, plus one (0 means "none").
    epoch: Instant,
    /// The oldest event queued and not yet taken by the control loop.
    oldest_queued: AtomicU64,
    /// When the batch being programmed was received (its oldest event).
    in_progress: AtomicU64,
    timeout: Duration,
}

impl Health {
    /// Unhealthy once a change waits longer than `timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { epoch: Instant::now(), oldest_queued: AtomicU64::new(0), in_progress: AtomicU64::new(0), timeout }
    }

    fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A source queued an event at `at`.
    pub(crate) fn queued(&self, at: Instant) {
        // Keeps the oldest: only an empty record takes a new time.
        let _unchanged_if_older_pending =
            self.oldest_queued.compare_exchange(0, self.stamp(at), Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The control loop took every queued event; the oldest was received
    /// at `oldest`.
    pub(crate) fn batch_started(&self, oldest: Instant) {
        self.in_progress.store(self.stamp(oldest), Ordering::Release);
        self.oldest_queued.store(0, Ordering::Release);
    }

    /// The batch is programmed.
    pub(crate) fn batch_done(&self) {
        self.in_progress.store(0, Ordering::Release);
    }

    /// How long the oldest unprogrammed change has waited at `now`, if any.
    pub(crate) fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        let oldest = [self.oldest_queued.load(Ordering::Acquire), self.in_progress.load(Ordering::Acquire)]
            .into_iter()
            .filter(|t| *t != 0)
            .min()?;
        let at = self.epoch + Duration::from_nanos(oldest - 1);
        Some(now.saturating_duration_since(at))
    }

    /// `Err(waited)` when a change has waited longer than the timeout.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Duration> {
        match self.oldest_wait(now) {
            Some(waited) if waited > self.timeout => Err(waited),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[test]
    fn idle_is_healthy_and_a_change_waiting_too_long_is_not() {
        let health = Health::new(TIMEOUT);
        let t0 = health.epoch;
        assert_eq!(health.check(t0 + Duration::from_secs(3600)), Ok(()), "nothing queued: healthy forever");

        health.queued(t0 + Duration::from_secs(1));
        health.queued(t0 + Duration::from_secs(30));
        assert_eq!(health.check(t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(
            health.check(t0 + Duration::from_secs(62)),
            Err(Duration::from_secs(61)),
            "the oldest queued event counts, not the newest"
        );
    }

    #[test]
    fn a_batch_stuck_in_programming_is_unhealthy() {
        let health = Health::new(TIMEOUT);
        let t0 = health.epoch;
        health.queued(t0);
        health.batch_started(t0);
        // Taken from the queue, but never programmed: still waiting.
        assert_eq!(health.check(t0 + Duration::from_secs(61)), Err(Duration::from_secs(61)));
        health.batch_done();
        assert_eq!(health.check(t0 + Duration::from_secs(61)), Ok(()));
    }

    #[test]
    fn events_arriving_during_a_batch_are_still_tracked() {
        let health = Health::new(TIMEOUT);
        let t0 = health.epoch;
        health.batch_started(t0);
        health.queued(t0 + Duration::from_secs(10));
        health.batch_done();
        assert_eq!(health.oldest_wait(t0 + Duration::from_secs(20)), Some(Duration::from_secs(10)));
        assert!(health.check(t0 + Duration::from_secs(71)).is_err());
    }
}
