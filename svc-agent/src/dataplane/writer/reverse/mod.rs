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

mod family;

use std::time::{Duration, Instant};

use svc_common::{Backend4, Backend6, BackendRevKey, BackendRevKey6};

use self::family::{Change, Family, Owner, Shared, Stamp};

use super::{ServiceState, sets::BackendSet};
use crate::{
    dataplane::{
        encode::{backend_value, desired_key},
        family::{Backend, RevKey},
        table::Table,
    },
    fast_hash::FastMap,
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
pub(super) fn pairs(state: &ServiceState, sets: &FastMap<u32, BackendSet>, out: &mut Vec<Pair>) {
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

/// Calls `f` with each (backend, frontend) of the frontends a batch wants
/// to program, of one preference (`cluster_ip`): their entries are
/// written before any of those frontends, so that from the moment a
/// connect can reach a backend through a frontend, a direct connect to
/// the backend is marked (`svc_common::reverse`).
fn for_each_desired_pair(desired: &DesiredService, cluster_ip: bool, mut f: impl FnMut(RevKey, Backend)) {
    for fe in desired.frontends.iter().filter(|fe| fe.scope == Scope::All) {
        if (fe.kind == FrontendKind::ClusterIp) != cluster_ip {
            continue;
        }
        let frontend = desired_key(fe).as_backend();
        let proto = fe.proto.number();
        for b in fe.backends.iter() {
            f(RevKey::new(backend_value(*b), proto), frontend);
        }
    }
}

/// The keys of the entries a batch's [`ReverseOwners::prepare`] created,
/// per family: at a cold start with 100k IPv4 backends, an 8-byte key each
/// (a [`RevKey`] takes 24).
#[derive(Debug, Default)]
pub(super) struct Fresh {
    v4: Vec<BackendRevKey>,
    v6: Vec<BackendRevKey6>,
}

/// The owner entries of both families, mirrored.
#[derive(Debug)]
pub(super) struct ReverseOwners {
    v4: Family<BackendRevKey, Backend4>,
    v6: Family<BackendRevKey6, Backend6>,
    shared: Shared,
}

impl ReverseOwners {
    /// Takes over the pinned entries; `programmed` are the pairs of the
    /// adopted Services. Entries whose owner no longer lists its backend
    /// linger from now.
    pub(super) fn adopt(
        table: &mut impl Table,
        pinned: Vec<(RevKey, Backend)>,
        mut programmed: Vec<Pair>,
        capacity: u32,
        now: Instant,
    ) -> Self {
        let shared =
            Shared { start: now, linger: DEFAULT_LINGER, capacity: capacity as usize, in_map: 0, full_warned: false };
        let mut owners = Self { v4: Family::new(), v6: Family::new(), shared };
        let lost = owners.shared.stamp(now);
        for (key, frontend) in pinned {
            let fresh = match (key, frontend) {
                (RevKey::V4(k), Backend::V4(f)) => owners.v4.entries.insert(k, Owner::adopted(f, lost)).is_none(),
                (RevKey::V6(k), Backend::V6(f)) => owners.v6.entries.insert(k, Owner::adopted(f, lost)).is_none(),
                // A value of the other family is not ours to interpret.
                _ => false,
            };
            owners.shared.in_map += usize::from(fresh);
        }
        owners.add(table, &mut programmed);
        let idle4: Vec<_> =
            owners.v4.entries.iter().filter(|(_, o)| o.lost_at != Stamp::LISTED).map(|(k, _)| *k).collect();
        let idle6: Vec<_> =
            owners.v6.entries.iter().filter(|(_, o)| o.lost_at != Stamp::LISTED).map(|(k, _)| *k).collect();
        owners.v4.queue_unused(&owners.shared, idle4.into_iter(), lost);
        owners.v6.queue_unused(&owners.shared, idle6.into_iter(), lost);
        owners
    }

    /// Sets the linger time (also for entries already lingering).
    pub(super) fn set_linger(&mut self, linger: Duration) {
        let (old, new) = (self.shared.linger.as_nanos(), linger.as_nanos());
        let shift = |due: &mut Stamp| {
            let lost = u128::from(due.0).saturating_sub(old);
            due.0 = u64::try_from(lost.saturating_add(new)).unwrap_or(u64::MAX);
        };
        self.v4.lingering.iter_mut().for_each(|(due, _)| shift(due));
        self.v6.lingering.iter_mut().for_each(|(due, _)| shift(due));
        self.shared.linger = linger;
    }

    /// Whether `frontend` (an address and port) owns `key`'s entry in the
    /// map: a socket it translates to that backend needs no storage. It
    /// stays so while the frontend lists the backend (an entry never
    /// changes value and is deleted only once nobody lists its backend),
    /// which is what lets the frontend say so itself (`Frontend::owned`).
    pub(super) fn owns(&self, key: RevKey, frontend: Backend) -> bool {
        match (key, frontend) {
            (RevKey::V4(k), Backend::V4(f)) => self.v4.entries.get(&k).is_some_and(|o| o.is_owner(f)),
            (RevKey::V6(k), Backend::V6(f)) => self.v6.entries.get(&k).is_some_and(|o| o.is_owner(f)),
            _ => false,
        }
    }

    /// Number of owner entries in the maps.
    pub(super) fn len(&self) -> usize {
        self.shared.in_map
    }

    /// One pair's change, in its family.
    fn change(
        &mut self,
        table: &mut impl Table,
        change: Change,
        pair: (RevKey, Backend),
        now: Stamp,
        fresh: &mut Fresh,
    ) {
        let shared = &mut self.shared;
        match pair {
            (RevKey::V4(k), Backend::V4(f)) => self.v4.change(shared, table, change, (k, f), now, &mut fresh.v4),
            (RevKey::V6(k), Backend::V6(f)) => self.v6.change(shared, table, change, (k, f), now, &mut fresh.v6),
            // A frontend lists backends of its own family only.
            _ => debug_assert!(false, "mixed-family pair {pair:?}"),
        }
    }

    /// Writes the entries of backends that no entry covers yet, ahead of
    /// the frontend writes that list them (`desired`: what the batch
    /// wants; batched, [`Family::flush`]), and returns their keys for [`Self::settle`]. Within the
    /// batch a ClusterIP goes first (it becomes the owner), then the batch's
    /// order. No list of the batch's pairs is built: at 100k backends that
    /// list was the cold start's largest transient allocation.
    pub(super) fn prepare<'a>(
        &mut self,
        table: &mut impl Table,
        desired: impl Iterator<Item = &'a DesiredService> + Clone,
        now: Instant,
    ) -> Fresh {
        let now = self.shared.stamp(now);
        let mut fresh = Fresh::default();
        for (cluster_ip, services) in [(true, desired.clone()), (false, desired)] {
            for service in services {
                for_each_desired_pair(service, cluster_ip, |key, frontend| {
                    self.change(table, Change::Prepare, (key, frontend), now, &mut fresh);
                });
            }
        }
        self.v4.flush(&mut self.shared, table);
        self.v6.flush(&mut self.shared, table);
        fresh
    }

    /// Counts a batch's change in users: `before` and `after` are the
    /// changed Services' pairs.
    pub(super) fn update(&mut self, table: &mut impl Table, before: Vec<Pair>, after: Vec<Pair>, now: Instant) {
        let (gone, mut new) = diff(before, after);
        self.add(table, &mut new);
        let now = self.shared.stamp(now);
        for (key, frontend, _) in gone {
            self.change(table, Change::Remove, (key, frontend), now, &mut Fresh::default());
        }
    }

    /// Ends a batch: entries [`Self::prepare`] created (`fresh`) that
    /// nobody uses start lingering, and those that are due are deleted.
    pub(super) fn settle(&mut self, table: &mut impl Table, fresh: &Fresh, now: Instant) {
        let now = self.shared.stamp(now);
        self.v4.queue_unused(&self.shared, fresh.v4.iter().copied(), now);
        self.v6.queue_unused(&self.shared, fresh.v6.iter().copied(), now);
        self.v4.sweep(&mut self.shared, table, now);
        self.v6.sweep(&mut self.shared, table, now);
    }

    /// Counts new users (pairs no earlier batch counted). Within one
    /// backend a ClusterIP goes first: if no entry covers it yet, it
    /// becomes the owner.
    pub(super) fn add(&mut self, table: &mut impl Table, pairs: &mut [Pair]) {
        pairs.sort_unstable_by_key(|p| (p.0, !p.2, p.1));
        for &mut (key, frontend, _) in pairs {
            self.change(table, Change::Add, (key, frontend), Stamp::LISTED, &mut Fresh::default());
        }
    }

    /// Grace period `ended` has ended: keys deleted before it was asked
    /// for may come back.
    pub(super) fn grace_ended(&mut self, ended: u64) {
        self.v4.grace_ended(ended);
        self.v6.grace_ended(ended);
    }

    /// Whether deleted keys wait for a grace period to end.
    pub(super) fn awaits_grace(&self) -> bool {
        !self.v4.deleted.is_empty() || !self.v6.deleted.is_empty()
    }
}

/// The pairs in `before` only (gone) and in `after` only (new).
fn diff(mut before: Vec<Pair>, mut after: Vec<Pair>) -> (Vec<Pair>, Vec<Pair>) {
    // A pair is (backend, frontend): unique in the whole writer, since a
    // frontend address has one owner Service and lists a backend once.
    let key = |p: &Pair| (p.0, p.1);
    before.sort_unstable_by_key(key);
    after.sort_unstable_by_key(key);
    let (mut gone, mut new) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
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
    (gone, new)
}
