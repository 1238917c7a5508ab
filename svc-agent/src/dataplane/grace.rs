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
    /// [`RETRY_AFTER`]).
    failed: Option<(u64, TableError)>,
    stop: bool,
}

impl GraceThread {
    /// Starts the thread; a grace period is one update of entry 0 of
    /// `outer` (SVC_GRACE) with `inner`, which the kernel answers only
    /// after every running program has finished (docs/maps.md).
    pub(crate) fn spawn(outer: ArrayOfMaps<MapData>, inner: MapData) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        std::thread::Builder::new().name("grace".into()).spawn(move || worker.serve(outer, &inner))?;
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

    fn serve(&self, mut outer: ArrayOfMaps<MapData>, inner: &MapData) {
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
            drop(state);
            let started = Instant::now();
            let result = outer.set(0, inner, 0);
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
                    state.failed = Some((serving, table_error(names::GRACE, "update", &e)));
                    // Not served: the next attempt serves them.
                    state.taken = state.ended;
                }
            }
            self.changed.notify_all();
            self.ended.notify_one();
            if failed {
                // Not at once: a failing update would fail again.
                state = self.changed.wait_timeout(state, RETRY_AFTER).map_or_else(|e| e.into_inner().0, |(s, _)| s);
            }
        }
    }
}
