//! Reverse owners (SVC_BE_REV, SVC_BE_REV6; `svc_common::reverse`): per
//! backend (address, port, protocol), the one frontend that connected
//! sockets without their own storage reached it through.
//!
//! The rules, which keep `getpeername()` exact:
//! - the first frontend to list a backend becomes its owner (a ClusterIP
//!   before other kinds within one batch); later ones never replace it,
//!   their sockets keep storage;
//! - an owner entry never changes value: it is deleted once its backend
//!   has been out of the owner's set *and* out of every other set for the
//!   linger time (an open socket may still rely on it), and only then can
//!   another frontend own the backend;
//! - outside-only twins are not sockets' frontends and own nothing.
//!
//! The writer reports, per batch, each changed Service's (backend,
//! frontend) pairs before and after ([`pairs`]); this tracks how many
//! frontends list each backend, so one endpoint change costs the changed
//! Services' pairs, not a pass over every Service.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{ServiceState, sets::BackendSet};
use crate::{
    dataplane::{
        family::{Backend, RevKey},
        table::{Table, TableError},
    },
    model::Scope,
};

/// How long an owner entry outlives its backend's last use by the owner
/// (and by everyone else): a TCP connection translated without storage
/// shows its frontend for at least this long after its endpoint left
/// the Service.
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_secs(3600);

/// One backend listed by one frontend: the backend's key, the frontend's
/// address, and whether the frontend is a ClusterIP (preferred owner).
pub(super) type Pair = (RevKey, Backend, bool);

/// The pairs a Service's programmed frontends contribute.
pub(super) fn pairs(state: &ServiceState, sets: &HashMap<u32, BackendSet>, out: &mut Vec<Pair>) {
    for (fk, fe) in state.frontends.iter() {
        if fk.scope() != Scope::All || fe.set_id() == 0 {
            continue;
        }
        let Some(set) = sets.get(&fe.set_id()) else { continue };
        let frontend = fk.as_backend();
        let preferred = fe.is_cluster_ip();
        out.extend(set.backends.iter().map(|b| (RevKey::new(*b, fk.proto()), frontend, preferred)));
    }
}

/// An owner entry as the agent tracks it.
#[derive(Debug, Clone, Copy)]
struct Owner {
    /// The frontend in the map.
    frontend: Backend,
    /// Frontends currently listing the backend (the owner included).
    users: u32,
    /// When the owner stopped listing it (`None`: it lists it).
    lost_at: Option<Instant>,
}

/// The owner entries, mirrored.
#[derive(Debug)]
pub(super) struct ReverseOwners {
    entries: HashMap<RevKey, Owner>,
    /// Entries that may become deletable, with the time they may: checked
    /// in order, dropped if the entry changed since.
    lingering: VecDeque<(Instant, RevKey)>,
    /// Keys deleted since the last grace period: re-creating one waits for
    /// a grace period first (readers validate a copy by finding the same
    /// element again, so an element must not come back under its key
    /// while a reader may hold it).
    deleted: HashSet<RevKey>,
    linger: Duration,
    capacity: usize,
    /// Whether the "map full" warning was logged since the map last had room.
    full_warned: bool,
}

impl ReverseOwners {
    /// Takes over the pinned entries; `programmed` are the pairs of the
    /// adopted Services. Entries whose owner no longer lists its backend
    /// linger from now.
    pub(super) fn adopt(
        table: &mut impl Table,
        pinned: Vec<(RevKey, Backend)>,
        programmed: Vec<Pair>,
        capacity: u32,
        now: Instant,
    ) -> Self {
        let mut owners = Self {
            entries: pinned
                .into_iter()
                .map(|(k, frontend)| (k, Owner { frontend, users: 0, lost_at: Some(now) }))
                .collect(),
            lingering: VecDeque::new(),
            deleted: HashSet::new(),
            linger: DEFAULT_LINGER,
            capacity: capacity as usize,
            full_warned: false,
        };
        owners.add(table, programmed);
        let lost: Vec<RevKey> = owners.entries.iter().filter(|(_, o)| o.lost_at.is_some()).map(|(k, _)| *k).collect();
        owners.lingering.extend(lost.into_iter().map(|k| (now + owners.linger, k)));
        owners
    }

    /// Sets the linger time (also for entries already lingering).
    pub(super) fn set_linger(&mut self, linger: Duration) {
        let old = self.linger;
        for (due, _) in &mut self.lingering {
            *due = due.checked_sub(old).map_or(*due, |lost| lost + linger);
        }
        self.linger = linger;
    }

    /// Number of owner entries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Applies one batch's change: `before` and `after` are the changed
    /// Services' pairs. New owners are written, then lingering entries
    /// that are due are deleted.
    pub(super) fn update(&mut self, table: &mut impl Table, mut before: Vec<Pair>, mut after: Vec<Pair>, now: Instant) {
        // A pair is (backend, frontend): unique in the whole writer, since
        // a frontend address has one owner Service and lists a backend once.
        let key = |p: &Pair| (p.0, p.1);
        before.sort_unstable_by_key(key);
        after.sort_unstable_by_key(key);
        let (mut gone, mut new) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < before.len() || j < after.len() {
            match (before.get(i), after.get(j)) {
                (Some(b), Some(a)) if key(b) == key(a) => (i, j) = (i + 1, j + 1),
                (Some(b), Some(a)) if key(b) < key(a) => {
                    gone.push(*b);
                    i += 1;
                }
                (Some(b), None) => {
                    gone.push(*b);
                    i += 1;
                }
                (_, Some(a)) => {
                    new.push(*a);
                    j += 1;
                }
                (None, None) => break,
            }
        }
        self.add(table, new);
        self.remove(gone, now);
        self.sweep(table, now);
    }

    fn add(&mut self, table: &mut impl Table, mut pairs: Vec<Pair>) {
        // Within one backend, a ClusterIP first: it becomes the owner.
        pairs.sort_unstable_by_key(|p| (p.0, !p.2, p.1));
        for (key, frontend, _) in pairs {
            if let Some(owner) = self.entries.get_mut(&key) {
                owner.users += 1;
                if owner.frontend == frontend {
                    owner.lost_at = None;
                }
                continue;
            }
            if self.entries.len() >= self.capacity {
                // Sockets reaching this backend keep their own storage:
                // slower, never wrong.
                if !self.full_warned {
                    tracing::warn!(
                        capacity = self.capacity,
                        "the reverse-owner map is full: new backends' connected sockets keep per-socket storage (raise --max-reverse-owners)"
                    );
                    self.full_warned = true;
                }
                continue;
            }
            if self.deleted.contains(&key) {
                if let Err(e) = table.synchronize() {
                    tracing::warn!("no grace period, backend left without an owner entry: {e}");
                    continue;
                }
                self.deleted.clear();
            }
            match table.put_reverse(&key, &frontend) {
                Ok(()) => {
                    self.entries.insert(key, Owner { frontend, users: 1, lost_at: None });
                }
                Err(e) => log_put_failure(&e),
            }
        }
    }

    fn remove(&mut self, pairs: Vec<Pair>, now: Instant) {
        for (key, frontend, _) in pairs {
            // Not tracked: its entry could not be written (full map).
            let Some(owner) = self.entries.get_mut(&key) else { continue };
            owner.users = owner.users.saturating_sub(1);
            if owner.frontend == frontend {
                owner.lost_at = Some(now);
            }
            if let Some(lost_at) = owner.lost_at
                && owner.users == 0
            {
                self.lingering.push_back((lost_at.max(now) + self.linger, key));
            }
        }
    }

    /// Deletes the entries whose linger is over and that nobody uses.
    fn sweep(&mut self, table: &mut impl Table, now: Instant) {
        while let Some(&(due, key)) = self.lingering.front() {
            // Pushed in time order (one linger for all): the first entry
            // not yet due ends the sweep.
            if due > now {
                break;
            }
            self.lingering.pop_front();
            let Some(owner) = self.entries.get(&key) else { continue };
            let Some(lost_at) = owner.lost_at else { continue };
            if owner.users > 0 || lost_at + self.linger > now {
                continue;
            }
            match table.delete_reverse(&key) {
                Ok(()) => {
                    self.entries.remove(&key);
                    self.deleted.insert(key);
                    self.full_warned = false;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// A grace period has passed: deleted keys may come back.
    pub(super) fn grace_passed(&mut self) {
        self.deleted.clear();
    }
}

fn log_put_failure(e: &TableError) {
    // Not fatal: the socket keeps storage instead.
    tracing::warn!("reverse owner not written (connected sockets keep per-socket storage): {e}");
}
