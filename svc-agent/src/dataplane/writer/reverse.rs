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
        encode::{backend_value, desired_key},
        family::{Backend, RevKey},
        table::Table,
    },
    model::{DesiredService, FrontendKind, Scope},
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

/// The pairs of the frontends a batch wants to program: their entries
/// are written before any of those frontends, so that from the moment a
/// connect can reach a backend through a frontend, a direct connect to
/// the backend is marked (`svc_common::reverse`).
pub(super) fn desired_pairs(desired: &DesiredService, out: &mut Vec<Pair>) {
    for fe in desired.frontends.iter().filter(|fe| fe.scope == Scope::All) {
        let frontend = desired_key(fe).as_backend();
        let preferred = fe.kind == FrontendKind::ClusterIp;
        let proto = fe.proto.number();
        out.extend(fe.backends.iter().map(|b| (RevKey::new(backend_value(*b), proto), frontend, preferred)));
    }
}

/// A backend as the agent tracks it.
#[derive(Debug, Clone, Copy)]
struct Owner {
    /// The frontend in the map; `None`: the backend has no entry (the map
    /// was full, or the write failed) and its sockets keep storage.
    frontend: Option<Backend>,
    /// Frontends currently listing the backend (the owner included).
    users: u32,
    /// When the owner stopped listing it (`None`: it lists it; entries
    /// written ahead of their frontends start as lost).
    lost_at: Option<Instant>,
    /// Whether it is in the lingering queue.
    queued: bool,
}

/// The owner entries, mirrored.
#[derive(Debug)]
pub(super) struct ReverseOwners {
    entries: HashMap<RevKey, Owner>,
    /// Entries that may become deletable, with the time they may.
    lingering: VecDeque<(Instant, RevKey)>,
    /// Keys deleted since the last grace period: re-creating one waits for
    /// a grace period first (readers validate a copy by finding the same
    /// element again, so an element must not come back under its key
    /// while a reader may hold it).
    deleted: HashSet<RevKey>,
    linger: Duration,
    capacity: usize,
    /// Entries in the map (those with a frontend).
    in_map: usize,
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
        let in_map = pinned.len();
        let entries = pinned
            .into_iter()
            .map(|(k, f)| (k, Owner { frontend: Some(f), users: 0, lost_at: Some(now), queued: false }))
            .collect();
        let mut owners = Self {
            entries,
            lingering: VecDeque::new(),
            deleted: HashSet::new(),
            linger: DEFAULT_LINGER,
            capacity: capacity as usize,
            in_map,
            full_warned: false,
        };
        owners.add(table, programmed);
        let idle: Vec<RevKey> =
            owners.entries.iter().filter(|(_, o)| o.users == 0 && o.lost_at.is_some()).map(|(k, _)| *k).collect();
        for key in idle {
            owners.queue(key, now);
        }
        owners
    }

    /// Sets the linger time (also for entries already lingering).
    pub(super) fn set_linger(&mut self, linger: Duration) {
        let old = self.linger;
        for (due, _) in &mut self.lingering {
            *due = due.checked_sub(old).and_then(|lost| lost.checked_add(linger)).unwrap_or(*due);
        }
        self.linger = linger;
    }

    /// Number of owner entries in the map.
    pub(super) fn len(&self) -> usize {
        self.in_map
    }

    /// Writes the entries of backends that no entry covers yet, ahead of
    /// the frontend writes that list them (`pairs`: what the batch wants).
    pub(super) fn prepare(&mut self, table: &mut impl Table, mut pairs: Vec<Pair>, now: Instant) {
        pairs.retain(|p| !self.entries.contains_key(&p.0));
        // Within one backend, a ClusterIP first: it becomes the owner.
        pairs.sort_unstable_by_key(|p| (p.0, !p.2, p.1));
        pairs.dedup_by_key(|p| p.0);
        for (key, frontend, _) in pairs {
            // Nothing lists it yet: it lingers until the batch's update
            // counts its users (a refused Service leaves it unused).
            self.create(table, key, frontend, 0, Some(now));
            self.queue(key, now);
        }
    }

    /// Applies one batch's change: `before` and `after` are the changed
    /// Services' pairs. Then lingering entries that are due are deleted.
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
        pairs.sort_unstable_by_key(|p| (p.0, !p.2, p.1));
        for (key, frontend, _) in pairs {
            match self.entries.get_mut(&key) {
                Some(owner) => {
                    owner.users += 1;
                    if owner.frontend == Some(frontend) {
                        owner.lost_at = None;
                    }
                }
                None => self.create(table, key, frontend, 1, None),
            }
        }
    }

    /// Tracks a new backend, writing its entry if the map has room.
    fn create(&mut self, table: &mut impl Table, key: RevKey, frontend: Backend, users: u32, lost_at: Option<Instant>) {
        let written = self.write(table, key, frontend);
        if written {
            self.in_map += 1;
        }
        let frontend = written.then_some(frontend);
        // An untracked backend counts as lost from the start: it never
        // has an owner to lose.
        let lost_at = if frontend.is_none() { Some(lost_at.unwrap_or_else(Instant::now)) } else { lost_at };
        self.entries.insert(key, Owner { frontend, users, lost_at, queued: false });
    }

    /// Writes one entry; false if it could not be (its sockets keep storage).
    fn write(&mut self, table: &mut impl Table, key: RevKey, frontend: Backend) -> bool {
        if self.in_map >= self.capacity {
            if !self.full_warned {
                tracing::warn!(
                    capacity = self.capacity,
                    "the reverse-owner map is full: new backends' connected sockets keep per-socket storage (raise --max-reverse-owners)"
                );
                self.full_warned = true;
            }
            return false;
        }
        if self.deleted.contains(&key) {
            if let Err(e) = table.synchronize() {
                tracing::warn!("no grace period, backend left without an owner entry: {e}");
                return false;
            }
            self.deleted.clear();
        }
        match table.put_reverse(&key, &frontend) {
            Ok(()) => true,
            Err(e) => {
                // Not fatal: the sockets keep storage instead.
                tracing::warn!("reverse owner not written (connected sockets keep per-socket storage): {e}");
                false
            }
        }
    }

    fn remove(&mut self, pairs: Vec<Pair>, now: Instant) {
        for (key, frontend, _) in pairs {
            let Some(owner) = self.entries.get_mut(&key) else { continue };
            owner.users = owner.users.saturating_sub(1);
            if owner.frontend == Some(frontend) {
                owner.lost_at = Some(now);
            }
            if owner.users == 0 && owner.lost_at.is_some() {
                self.queue(key, now);
            }
        }
    }

    /// Puts an entry in the lingering queue (once).
    fn queue(&mut self, key: RevKey, now: Instant) {
        let Some(owner) = self.entries.get_mut(&key) else { return };
        if owner.queued {
            return;
        }
        owner.queued = true;
        let since = owner.lost_at.map_or(now, |t| t.max(now));
        self.lingering.push_back((since.checked_add(self.linger).unwrap_or(since), key));
    }

    /// Deletes the entries whose linger is over and that nobody uses.
    fn sweep(&mut self, table: &mut impl Table, now: Instant) {
        let mut retry = Vec::new();
        while let Some(&(due, key)) = self.lingering.front() {
            // Pushed in time order (one linger for all): the first entry
            // not yet due ends the sweep.
            if due > now {
                break;
            }
            self.lingering.pop_front();
            let Some(owner) = self.entries.get_mut(&key) else { continue };
            owner.queued = false;
            let Some(lost_at) = owner.lost_at else { continue };
            if owner.users > 0 {
                continue;
            }
            if lost_at.checked_add(self.linger).is_none_or(|t| t > now) {
                retry.push(key);
                continue;
            }
            if owner.frontend.is_some() {
                if let Err(e) = table.delete_reverse(&key) {
                    tracing::warn!("{e}");
                    retry.push(key);
                    continue;
                }
                self.in_map -= 1;
                self.deleted.insert(key);
                self.full_warned = false;
            }
            self.entries.remove(&key);
        }
        for key in retry {
            self.queue(key, now);
        }
    }

    /// A grace period has passed: deleted keys may come back.
    pub(super) fn grace_passed(&mut self) {
        self.deleted.clear();
    }
}
