//! One family's reverse-owner entries, mirrored: what each backend's
//! entry holds, how a pair's change moves it, and when it is deleted.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use svc_common::{Backend4, Backend6, BackendRevKey, BackendRevKey6};

use crate::{
    dataplane::{
        family::{Backend, RevKey},
        table::{GraceStamp, Table},
    },
    fast_hash::FastMap,
};

/// One family's owner-map key, and the frontend type its values hold. The
/// mirror is kept per family so that an IPv4 entry costs an IPv4 key and
/// value (32 bytes), not the 20-byte IPv6 shape: at 1M backends the mirror
/// was the agent's largest allocation.
pub(super) trait RevFamily: Copy + Eq + std::hash::Hash + std::fmt::Debug {
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
pub(super) struct Stamp(pub(super) u64);

impl Stamp {
    /// "Not lost": the owner lists its backend.
    pub(super) const LISTED: Self = Self(u64::MAX);
}

/// A backend as the agent tracks it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner<F> {
    /// The frontend in the map, if `mapped`.
    pub(super) frontend: F,
    /// Frontends currently listing the backend (the owner included).
    pub(super) users: u32,
    /// Whether the map has the entry; if not (the map was full, or the
    /// write failed) the backend's sockets keep storage.
    pub(super) mapped: bool,
    /// Whether it is in the lingering queue.
    pub(super) queued: bool,
    /// When the owner stopped listing it ([`Stamp::LISTED`]: it lists it;
    /// entries written ahead of their frontends start as lost, and an
    /// unmapped backend counts as lost from the start).
    pub(super) lost_at: Stamp,
}

impl<F: Copy + Eq> Owner<F> {
    /// A pinned entry taken over at a restart: lost until a frontend
    /// that lists it is adopted.
    pub(super) const fn adopted(frontend: F, lost_at: Stamp) -> Self {
        Self { frontend, users: 0, mapped: true, queued: false, lost_at }
    }

    pub(super) fn is_owner(&self, frontend: F) -> bool {
        self.mapped && self.frontend == frontend
    }
}

/// What the families share: the one capacity both maps count against
/// (docs/maps.md), and the clock.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) start: Instant,
    pub(super) linger: Duration,
    pub(super) capacity: usize,
    /// Entries in the maps (both families).
    pub(super) in_map: usize,
    /// Whether the "map full" warning was logged since the map last had room.
    pub(super) full_warned: bool,
}

impl Shared {
    pub(super) fn stamp(&self, t: Instant) -> Stamp {
        Stamp(u64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX - 1))
    }

    /// When an entry lost at `lost_at` may be deleted.
    pub(super) fn due(&self, lost_at: Stamp) -> Stamp {
        let linger = u64::try_from(self.linger.as_nanos()).unwrap_or(u64::MAX);
        Stamp(lost_at.0.saturating_add(linger))
    }
}

/// One family's owner entries, mirrored.
#[derive(Debug)]
pub(super) struct Family<K, F> {
    pub(super) entries: FastMap<K, Owner<F>>,
    /// Entries that may become deletable, with the time they may (in
    /// that order: one linger for all).
    pub(super) lingering: VecDeque<(Stamp, K)>,
    /// Keys deleted since the last ended grace period, stamped at the
    /// delete: re-creating one waits until the stamp is covered (readers validate a copy by finding
    /// the same element again, so an element must not come back under its
    /// key while a reader may hold it).
    pub(super) deleted: FastMap<K, GraceStamp>,
    /// Entries [`Change::Prepare`] created and counted as mapped whose
    /// write waits for [`Self::flush`], with their frontends: one batch
    /// syscall per [`REVERSE_BATCH`] entries instead of one each (a cold
    /// start at 100k Services writes 1M).
    unwritten: Vec<(K, F)>,
}

/// Entries per batch write: enough to make the syscall's own cost
/// vanish, few enough that the staging arrays stay small.
const REVERSE_BATCH: usize = 4096;

/// What a pair does to its backend's entry.
#[derive(Debug, Clone, Copy)]
pub(super) enum Change {
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
    pub(super) fn new() -> Self {
        Self {
            entries: FastMap::default(),
            lingering: VecDeque::new(),
            deleted: FastMap::default(),
            unwritten: Vec::new(),
        }
    }

    /// Applies one pair's change; `fresh` gets the keys `Prepare` created.
    pub(super) fn change(
        &mut self,
        shared: &mut Shared,
        table: &mut impl Table,
        change: Change,
        (key, frontend): (K, F),
        now: Stamp,
        fresh: &mut Vec<K>,
    ) {
        match (change, self.entries.get_mut(&key)) {
            (Change::Prepare, Some(_)) => {}
            (Change::Prepare, None) => {
                // Nothing lists it yet: it counts as unused until the
                // batch's update counts its users (a refused Service leaves
                // it unused, and it lingers).
                self.create_ahead(shared, table, key, frontend, now);
                fresh.push(key);
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

    /// [`Self::create`] for an entry written ahead of its frontends
    /// (unused, lost since `now`), its write left to [`Self::flush`]
    /// where nothing else must come first: a key deleted in a grace
    /// period that has not ended, or a full map, takes the one-by-one way.
    fn create_ahead(&mut self, shared: &mut Shared, table: &mut impl Table, key: K, frontend: F, now: Stamp) {
        if shared.in_map >= shared.capacity || self.deleted.contains_key(&key) {
            return self.create(shared, table, key, frontend, 0, now);
        }
        shared.in_map += 1;
        self.entries.insert(key, Owner { frontend, users: 0, mapped: true, queued: false, lost_at: now });
        self.unwritten.push((key, frontend));
    }

    /// Writes the entries [`Self::create_ahead`] left, in batches. An entry
    /// the kernel refuses is unmapped, as [`Self::write`] leaves it.
    pub(super) fn flush(&mut self, shared: &mut Shared, table: &mut impl Table) {
        let unwritten = std::mem::take(&mut self.unwritten);
        let mut pairs = Vec::with_capacity(unwritten.len().min(REVERSE_BATCH));
        let (mut refused, mut last_error) = (0, None);
        for chunk in unwritten.chunks(REVERSE_BATCH) {
            pairs.clear();
            pairs.extend(chunk.iter().map(|&(key, frontend)| (key.rev_key(), K::backend(frontend))));
            let Err((written, e)) = table.put_reverses(&pairs) else { continue };
            for (key, _) in chunk.get(written..).unwrap_or_default() {
                if let Some(owner) = self.entries.get_mut(key) {
                    owner.mapped = false;
                    shared.in_map -= 1;
                    refused += 1;
                }
            }
            last_error = Some(e);
        }
        if let Some(e) = last_error {
            // Not fatal: their sockets keep storage instead. Once per batch,
            // not per chunk.
            tracing::warn!(refused, "reverse owners not written (connected sockets keep per-socket storage): {e}");
        }
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
        if let Some(&stamp) = self.deleted.get(&key) {
            if let Err(e) = table.wait_grace_after(stamp) {
                tracing::warn!("no grace period, backend left without an owner entry: {e}");
                return false;
            }
            self.grace_ended(table.graces_ended());
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
    pub(super) fn queue_unused(&mut self, shared: &Shared, keys: impl Iterator<Item = K>, now: Stamp) {
        for key in keys {
            if self.entries.get(&key).is_some_and(|o| o.users == 0) {
                self.queue(shared, key, now);
            }
        }
    }

    /// Grace period `ended` has ended: keys deleted before it was asked
    /// for may come back.
    pub(super) fn grace_ended(&mut self, ended: u64) {
        self.deleted.retain(|_, stamp| !stamp.is_covered(ended));
    }

    /// Deletes the entries whose linger is over and that nobody uses.
    pub(super) fn sweep(&mut self, shared: &mut Shared, table: &mut impl Table, now: Stamp) {
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
                self.deleted.insert(key, table.stamp());
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
