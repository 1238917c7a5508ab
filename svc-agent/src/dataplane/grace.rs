//! RCU grace periods on a helper thread, so that the writer does not sit
//! out one (7-22 ms here) at the end of every batch: it asks for one,
//! carries on, and waits only where it must (a key written again before
//! the grace period that follows its last write has ended).
//!
//! Grace periods are numbered in the order they are asked for, 1, 2, ...
//! Number `n` has ended once a grace period that *started after* the n-th
//! request has finished: every program run that began before the request
//! is over. Requests that pile up while one runs are served by the next
//! one together (it starts after all of them).

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use aya::maps::{ArrayOfMaps, MapData};
use svc_common::names;

use super::{maps::table_error, table::TableError};

/// How long a failed grace period waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The helper thread's handle, owned by the writer's maps. Dropping it
/// stops the thread after the grace period it is in.
#[derive(Debug)]
pub(crate) struct GraceThread {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Woken after each grace period (the control loop waits on it).
    ended: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct State {
    /// Requests so far.
    asked: u64,
    /// Requests served by a started grace period (ended or failed).
    taken: u64,
    /// Requests whose grace period has ended.
    ended: u64,
    /// The last attempt's error, if it failed, with the last request it
    /// was to serve (those requests are served again, after
    /// [`RETRY_AFTER`]; until that attempt starts, waits for them fail).
    failed: Option<(u64, TableError)>,
    stop: bool,
}

impl GraceThread {
    /// Starts the thread; a grace period is one update of entry 0 of
    /// `outer` (SVC_GRACE) with `inner`, which the kernel answers only
    /// after every running program has finished (docs/maps.md).
    pub(crate) fn spawn(mut outer: ArrayOfMaps<MapData>, inner: MapData) -> std::io::Result<Self> {
        Self::spawn_with(move || outer.set(0, &inner, 0).map_err(|e| table_error(names::GRACE, "update", &e)))
    }

    /// Starts the thread with `grace_period` as the blocking wait (the
    /// map update; unit tests pass their own).
    fn spawn_with(grace_period: impl FnMut() -> Result<(), TableError> + Send + 'static) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        std::thread::Builder::new().name("grace".into()).spawn(move || worker.serve(grace_period))?;
        Ok(Self { shared })
    }

    /// Asks for a grace period; returns its number.
    pub(crate) fn ask(&self) -> u64 {
        let mut state = self.shared.lock();
        state.asked += 1;
        self.shared.changed.notify_all();
        state.asked
    }

    /// The number of the last request asked for.
    pub(crate) fn asked(&self) -> u64 {
        self.shared.lock().asked
    }

    /// The number of the last request whose grace period has ended.
    pub(crate) fn ended(&self) -> u64 {
        self.shared.lock().ended
    }

    /// Returns once grace period `n` (already asked for) has ended, or
    /// with the error of the grace period that was to serve it.
    pub(crate) fn wait(&self, n: u64) -> Result<(), TableError> {
        let mut state = self.shared.lock();
        loop {
            if state.ended >= n {
                return Ok(());
            }
            if let Some((serving, e)) = &state.failed
                && *serving >= n
            {
                return Err(e.clone());
            }
            state = self.shared.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Notified after each grace period.
    pub(crate) fn signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.shared.ended)
    }
}

impl Drop for GraceThread {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters, consistent after every statement.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn serve(&self, mut grace_period: impl FnMut() -> Result<(), TableError>) {
        let mut state = self.lock();
        loop {
            while state.taken == state.asked && !state.stop {
                state = self.changed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            // Every request so far was made before this grace period starts.
            let serving = state.asked;
            state.taken = serving;
            // A wait from now on is answered by this attempt.
            state.failed = None;
            drop(state);
            let started = Instant::now();
            let result = grace_period();
            tracing::trace!(us = started.elapsed().as_micros() as u64, "grace period");
            state = self.lock();
            let failed = result.is_err();
            match result {
                Ok(()) => {
                    state.ended = serving;
                    state.failed = None;
                }
                Err(e) => {
                    tracing::error!("grace period failed, retrying: {e}");
                    state.failed = Some((serving, e));
                    // Not served: the next attempt serves them.
                    state.taken = state.ended;
                }
            }
            self.changed.notify_all();
            self.ended.notify_one();
            if failed {
                // Not at once (a failing update would fail again), and not
                // sooner for a new request.
                let retry_at = Instant::now() + RETRY_AFTER;
                loop {
                    let left = retry_at.saturating_duration_since(Instant::now());
                    if state.stop || left.is_zero() {
                        break;
                    }
                    state = self.changed.wait_timeout(state, left).map_or_else(|e| e.into_inner().0, |(s, _)| s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A grace period the test ends by sending its result; `started`
    /// tells the test that one began.
    fn scripted() -> (GraceThread, mpsc::Sender<Result<(), TableError>>, mpsc::Receiver<()>) {
        let (finish, results) = mpsc::channel::<Result<(), TableError>>();
        let (began, started) = mpsc::channel();
        let thread = GraceThread::spawn_with(move || {
            began.send(()).ok();
            results.recv().unwrap_or(Ok(()))
        })
        .expect("thread starts");
        (thread, finish, started)
    }

    fn failure() -> TableError {
        TableError { map: names::GRACE, op: "update", detail: "injected".into(), full: false }
    }

    #[test]
    fn requests_made_while_one_runs_are_served_together_by_the_next() {
        let (grace, finish, started) = scripted();
        assert_eq!(grace.ask(), 1);
        started.recv().unwrap();
        // Asked while 1 runs: 1 cannot serve them (it started before).
        assert_eq!((grace.ask(), grace.ask()), (2, 3));
        finish.send(Ok(())).unwrap();
        grace.wait(1).unwrap();
        assert_eq!(grace.ended(), 1, "the running grace period serves only what was asked before it");
        started.recv().unwrap();
        finish.send(Ok(())).unwrap();
        grace.wait(3).unwrap();
        assert_eq!(grace.ended(), 3, "one grace period served 2 and 3");
        assert!(started.try_recv().is_err(), "and no third one ran");
    }

    #[test]
    fn a_failure_fails_the_waits_it_was_to_serve_and_is_retried() {
        let (grace, finish, started) = scripted();
        grace.ask();
        started.recv().unwrap();
        finish.send(Err(failure())).unwrap();
        assert_eq!(grace.wait(1), Err(failure()));
        assert_eq!(grace.ended(), 0);
        // Retried without a further request, after RETRY_AFTER, and not
        // sooner for a new one.
        let failed_at = Instant::now();
        assert_eq!(grace.ask(), 2);
        started.recv().unwrap();
        assert!(failed_at.elapsed() >= RETRY_AFTER / 2, "retried at once");
        // A wait from now on waits for the retry.
        assert_eq!(grace.ask(), 3);
        finish.send(Ok(())).unwrap();
        grace.wait(2).unwrap();
        assert_eq!(grace.ended(), 2, "the retry served 1 and 2");
        // 3 was asked after the retry started: the next one serves it,
        // and the stale failure does not fail it.
        started.recv().unwrap();
        finish.send(Ok(())).unwrap();
        assert_eq!(grace.wait(3), Ok(()));
    }

    #[test]
    fn the_control_loop_is_signalled_after_each_grace_period() {
        let (grace, finish, started) = scripted();
        let signal = grace.signal();
        grace.ask();
        started.recv().unwrap();
        finish.send(Ok(())).unwrap();
        grace.wait(1).unwrap();
        let waiter = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // A stored permit: `notified` completes at once.
        waiter.block_on(signal.notified());
    }
}
