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

use svc_common::{Backend4, Backend6, BackendRevKey, BackendRevKey6};

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

/// One family's owner-map key, and the frontend type its values hold. The
/// mirror is kept per family so that an IPv4 entry costs an IPv4 key and
/// value (32 bytes), not the 20-byte IPv6 shape: at 1M backends the mirror
/// was the agent's largest allocation.
trait RevFamily: Copy + Eq + std::hash::Hash + std::fmt::Debug {
    type Frontend: Copy + Eq + std::fmt::Debug;
    fn rev_key(self) -> RevKey;
    fn backend(frontend: Self::Frontend) -> Backend;
}

impl RevFamily for BackendRevKey {
    type Frontend = Backend4;
    fn rev_key(self) -> RevKey {
        RevKey::V4(self)
    }
    fn backend(frontend: Backend4) -> Backend {
        Backend::V4(frontend)
    }
}

impl RevFamily for BackendRevKey6 {
    type Frontend = Backend6;
    fn rev_key(self) -> RevKey {
        RevKey::V6(self)
    }
    fn backend(frontend: Backend6) -> Backend {
        Backend::V6(frontend)
    }
}

/// A point in time as nanoseconds since the agent's start ([`Shared::start`]):
/// 8 bytes where an `Option<Instant>` takes 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(u64);

impl Stamp {
    /// "Not lost": the owner lists its backend.
    const LISTED: Self = Self(u64::MAX);
}

/// A backend as the agent tracks it.
#[derive(Debug, Clone, Copy)]
struct Owner<F> {
    /// The frontend in the map, if `mapped`.
    frontend: F,
    /// Frontends currently listing the backend (the owner included).
    users: u32,
    /// Whether the map has the entry; if not (the map was full, or the
    /// write failed) the backend's sockets keep storage.
    mapped: bool,
    /// Whether it is in the lingering queue.
    queued: bool,
    /// When the owner stopped listing it ([`Stamp::LISTED`]: it lists it;
    /// entries written ahead of their frontends start as lost, and an
    /// unmapped backend counts as lost from the start).
    lost_at: Stamp,
}

impl<F: Copy + Eq> Owner<F> {
    /// A pinned entry taken over at a restart: lost until a frontend
    /// that lists it is adopted.
    const fn adopted(frontend: F, lost_at: Stamp) -> Self {
        Self { frontend, users: 0, mapped: true, queued: false, lost_at }
    }

    fn is_owner(&self, frontend: F) -> bool {
        self.mapped && self.frontend == frontend
    }
}

/// What the families share: the one capacity both maps count against
/// (docs/maps.md), and the clock.
#[derive(Debug)]
struct Shared {
    start: Instant,
    linger: Duration,
    capacity: usize,
    /// Entries in the maps (both families).
    in_map: usize,
    /// Whether the "map full" warning was logged since the map last had room.
    full_warned: bool,
}

impl Shared {
    fn stamp(&self, t: Instant) -> Stamp {
        Stamp(u64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX - 1))
    }

    /// When an entry lost at `lost_at` may be deleted.
    fn due(&self, lost_at: Stamp) -> Stamp {
        let linger = u64::try_from(self.linger.as_nanos()).unwrap_or(u64::MAX);
        Stamp(lost_at.0.saturating_add(linger))
    }
}

/// One family's owner entries, mirrored.
#[derive(Debug)]
struct Family<K, F> {
    entries: HashMap<K, Owner<F>>,
    /// Entries that may become deletable, with the time they may (in
    /// that order: one linger for all).
    lingering: VecDeque<(Stamp, K)>,
    /// Keys deleted since the last grace period: re-creating one waits for
    /// a grace period first (readers validate a copy by finding the same
    /// element again, so an element must not come back under its key
    /// while a reader may hold it).
    deleted: HashSet<K>,
}

/// What a pair does to its backend's entry.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// A batch wants the pair: create the entry if none covers the backend.
    Prepare,
    /// A frontend lists the backend.
    Add,
    /// A frontend stopped listing it.
    Remove,
}

impl<K: RevFamily, F: Copy + Eq + std::fmt::Debug> Family<K, F>
where
    K: RevFamily<Frontend = F>,
{
    fn new() -> Self {
        Self { entries: HashMap::new(), lingering: VecDeque::new(), deleted: HashSet::new() }
    }

    /// Applies one pair's change; `fresh` gets the keys `Prepare` created.
    fn change(
        &mut self,
        shared: &mut Shared,
        table: &mut impl Table,
        change: Change,
        (key, frontend): (K, F),
        now: Stamp,
        fresh: &mut Vec<RevKey>,
    ) {
        match (change, self.entries.get_mut(&key)) {
            (Change::Prepare, Some(_)) => {}
            (Change::Prepare, None) => {
                // Nothing lists it yet: it counts as unused until the
                // batch's update counts its users (a refused Service leaves
                // it unused, and it lingers).
                self.create(shared, table, key, frontend, 0, now);
                fresh.push(key.rev_key());
            }
            (Change::Add, Some(owner)) => {
                owner.users += 1;
                if owner.is_owner(frontend) {
                    owner.lost_at = Stamp::LISTED;
                }
            }
            (Change::Add, None) => self.create(shared, table, key, frontend, 1, Stamp::LISTED),
            (Change::Remove, Some(owner)) => {
                owner.users = owner.users.saturating_sub(1);
                if owner.is_owner(frontend) {
                    owner.lost_at = now;
                }
                if owner.users == 0 && owner.lost_at != Stamp::LISTED {
                    self.queue(shared, key, now);
                }
            }
            (Change::Remove, None) => {}
        }
    }

    /// Tracks a new backend, writing its entry if the map has room.
    fn create(&mut self, shared: &mut Shared, table: &mut impl Table, key: K, frontend: F, users: u32, lost_at: Stamp) {
        let mapped = self.write(shared, table, key, frontend);
        if mapped {
            shared.in_map += 1;
        }
        // An unmapped backend counts as lost from the start: it never has
        // an owner to lose.
        let lost_at = if mapped || lost_at != Stamp::LISTED { lost_at } else { shared.stamp(Instant::now()) };
        self.entries.insert(key, Owner { frontend, users, mapped, queued: false, lost_at });
    }

    /// Writes one entry; false if it could not be (its sockets keep storage).
    fn write(&mut self, shared: &mut Shared, table: &mut impl Table, key: K, frontend: F) -> bool {
        if shared.in_map >= shared.capacity {
            if !shared.full_warned {
                tracing::warn!(
                    capacity = shared.capacity,
                    "the reverse-owner map is full: new backends' connected sockets keep per-socket storage (raise --max-reverse-owners)"
                );
                shared.full_warned = true;
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
        match table.put_reverse(&key.rev_key(), &K::backend(frontend)) {
            Ok(()) => true,
            Err(e) => {
                // Not fatal: the sockets keep storage instead.
                tracing::warn!("reverse owner not written (connected sockets keep per-socket storage): {e}");
                false
            }
        }
    }

    /// Puts an entry in the lingering queue (once).
    fn queue(&mut self, shared: &Shared, key: K, now: Stamp) {
        let Some(owner) = self.entries.get_mut(&key) else { return };
        if owner.queued {
            return;
        }
        owner.queued = true;
        let since = if owner.lost_at == Stamp::LISTED { now } else { owner.lost_at.max(now) };
        self.lingering.push_back((shared.due(since), key));
    }

    /// Queues the entries of `keys` (this family's) that nobody uses.
    fn queue_unused(&mut self, shared: &Shared, keys: impl Iterator<Item = K>, now: Stamp) {
        for key in keys {
            if self.entries.get(&key).is_some_and(|o| o.users == 0) {
                self.queue(shared, key, now);
            }
        }
    }

    /// Deletes the entries whose linger is over and that nobody uses.
    fn sweep(&mut self, shared: &mut Shared, table: &mut impl Table, now: Stamp) {
        let mut retry = Vec::new();
        while let Some(&(due, key)) = self.lingering.front() {
            // Pushed in time order: the first entry not yet due ends the sweep.
            if due > now {
                break;
            }
            self.lingering.pop_front();
            let Some(owner) = self.entries.get_mut(&key) else { continue };
            owner.queued = false;
            if owner.lost_at == Stamp::LISTED || owner.users > 0 {
                continue;
            }
            if shared.due(owner.lost_at) > now {
                retry.push(key);
                continue;
            }
            if owner.mapped {
                if let Err(e) = table.delete_reverse(&key.rev_key()) {
                    tracing::warn!("{e}");
                    retry.push(key);
                    continue;
                }
                shared.in_map -= 1;
                self.deleted.insert(key);
                shared.full_warned = false;
            }
            self.entries.remove(&key);
        }
        for key in retry {
            self.queue(shared, key, now);
        }
        // A mass removal can queue every entry: give that memory back.
        if self.lingering.is_empty() {
            self.lingering.shrink_to(64);
        }
    }
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
        fresh: &mut Vec<RevKey>,
    ) {
        let shared = &mut self.shared;
        match pair {
            (RevKey::V4(k), Backend::V4(f)) => self.v4.change(shared, table, change, (k, f), now, fresh),
            (RevKey::V6(k), Backend::V6(f)) => self.v6.change(shared, table, change, (k, f), now, fresh),
            // A frontend lists backends of its own family only.
            _ => debug_assert!(false, "mixed-family pair {pair:?}"),
        }
    }

    /// Writes the entries of backends that no entry covers yet, ahead of
    /// the frontend writes that list them (`desired`: what the batch
    /// wants), and returns their keys for [`Self::settle`]. Within the
    /// batch a ClusterIP goes first (it becomes the owner), then the batch's
    /// order. No list of the batch's pairs is built: at 100k backends that
    /// list was the cold start's largest transient allocation.
    pub(super) fn prepare<'a>(
        &mut self,
        table: &mut impl Table,
        desired: impl Iterator<Item = &'a DesiredService> + Clone,
        now: Instant,
    ) -> Vec<RevKey> {
        let now = self.shared.stamp(now);
        let mut fresh = Vec::new();
        for (cluster_ip, services) in [(true, desired.clone()), (false, desired)] {
            for service in services {
                for_each_desired_pair(service, cluster_ip, |key, frontend| {
                    self.change(table, Change::Prepare, (key, frontend), now, &mut fresh);
                });
            }
        }
        fresh
    }

    /// Counts a batch's change in users: `before` and `after` are the
    /// changed Services' pairs.
    pub(super) fn update(&mut self, table: &mut impl Table, before: Vec<Pair>, after: Vec<Pair>, now: Instant) {
        let (gone, mut new) = diff(before, after);
        self.add(table, &mut new);
        let now = self.shared.stamp(now);
        for (key, frontend, _) in gone {
            self.change(table, Change::Remove, (key, frontend), now, &mut Vec::new());
        }
    }

    /// Ends a batch: entries [`Self::prepare`] created (`fresh`) that
    /// nobody uses start lingering, and those that are due are deleted.
    pub(super) fn settle(&mut self, table: &mut impl Table, fresh: &[RevKey], now: Instant) {
        let now = self.shared.stamp(now);
        let v4 = fresh.iter().filter_map(|k| if let RevKey::V4(k) = k { Some(*k) } else { None });
        self.v4.queue_unused(&self.shared, v4, now);
        let v6 = fresh.iter().filter_map(|k| if let RevKey::V6(k) = k { Some(*k) } else { None });
        self.v6.queue_unused(&self.shared, v6, now);
        self.v4.sweep(&mut self.shared, table, now);
        self.v6.sweep(&mut self.shared, table, now);
    }

    /// Counts new users (pairs no earlier batch counted). Within one
    /// backend a ClusterIP goes first: if no entry covers it yet, it
    /// becomes the owner.
    pub(super) fn add(&mut self, table: &mut impl Table, pairs: &mut [Pair]) {
        pairs.sort_unstable_by_key(|p| (p.0, !p.2, p.1));
        for &mut (key, frontend, _) in pairs {
            self.change(table, Change::Add, (key, frontend), Stamp::LISTED, &mut Vec::new());
        }
    }

    /// A grace period has passed: deleted keys may come back.
    pub(super) fn grace_passed(&mut self) {
        self.v4.deleted.clear();
        self.v6.deleted.clear();
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
