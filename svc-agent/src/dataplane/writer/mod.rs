//! Diff desired against programmed state and apply it, one Service at a
//! time, with the update protocol of docs/maps.md:
//!
//! 1. write a *new* backend set (slots, and membership entries when the
//!    frontend has session affinity) under a fresh set id;
//! 2. switch each frontend to it with one map update (a racing `connect()`
//!    sees the whole old set or the whole new one);
//! 3. then delete frontends nobody wants (an address another Service of
//!    the batch takes over is replaced instead), and retire the sets
//!    nobody points at; the batch ends by asking for an RCU grace period
//!    (run on a helper thread, [`super::grace`]), and the retired sets are
//!    deleted once it has ended.
//!
//! A frontend key is written again only after a grace period asked for
//! after its last write has ended, which is what lets the programs
//! validate their frontend copies (docs/maps.md).
//!
//! A Service whose update cannot be applied (a map is full, a frontend
//! address belongs to another Service) keeps its previous state, is
//! logged by name, and is retried after later changes; no other Service
//! is touched.
//!
//! Modules: [`capacity`] (refusing what cannot fit), [`sets`] (backend-set
//! lifecycle and grace periods), [`journal`] (undo), [`adopt`] (pinned
//! state after a restart), [`refusal`] (why a Service was refused).

mod adopt;
mod capacity;
mod ids;
mod journal;
mod refusal;
mod reverse;
mod sets;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use litemap::LiteMap;

use svc_common::{ServiceMeta, fe_flags};

pub(crate) use self::refusal::{Conflict, Refusal};
use self::{
    ids::IdAllocator,
    journal::Journal,
    sets::{BackendSet, needs_index},
};
use super::{
    encode::{backend_value, desired_key},
    family::{Backend, FrontendKey, FrontendValue, Header, IndexKey, RevKey, SlotRef},
    table::{GraceStamp, Table, TableError},
};
use crate::{
    fast_hash::FastMap,
    model::{DesiredFrontend, DesiredService, FrontendKind, Scope, ServiceKey, ServicePortKey},
};

/// What one Service has in the maps. Sorted vectors, not B-trees: a
/// Service has a handful of each, and the agent holds one of these per
/// Service (a B-tree node alone is 11 slots of 152-byte frontend values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceState {
    /// Exactly as written to SVC_FRONTENDS.
    frontends: LiteMap<FrontendKey, FrontendValue>,
    /// Service ports (SVC_META entries) it owns.
    ports: LiteMap<ServicePortKey, ()>,
}

impl ServiceState {
    /// The backend sets it owns: exactly those its frontends point at (an
    /// update releases the others when it commits).
    fn set_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.frontends.values().map(FrontendValue::set_id).filter(|&id| id != 0)
    }
}

/// A service port's id and names in SVC_META.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortEntry {
    id: u32,
    meta: ServiceMeta,
}

/// A Service that could not be (fully) programmed, kept for a retry.
#[derive(Debug, Clone)]
struct Pending {
    desired: DesiredService,
    reason: Refusal,
}

/// Entries found in pinned maps that nothing refers to (a crash between
/// steps of the protocol); removed once the first full sync is applied.
#[derive(Debug, Default)]
struct Orphans {
    slots: Vec<SlotRef>,
    index: Vec<IndexKey>,
    meta: Vec<u32>,
}

/// Frontend addresses changing hands within one batch: an address that one
/// Service gives up and another takes is *replaced* (one map update), never
/// deleted and re-added, so connects to it are translated throughout.
#[derive(Debug, Default)]
struct Handover {
    /// Addresses a Service of this batch gives up (removed, or no longer
    /// among its frontends), with that Service.
    releasing: FastMap<FrontendKey, ServiceKey>,
    /// Addresses wanted by a Service of this batch (or one waiting for a
    /// retry), with that Service.
    claimed: FastMap<FrontendKey, ServiceKey>,
    /// Addresses left in the map for their new owner, with the set their
    /// value still points at (kept until the new owner's write replaces
    /// it, even by a mid-batch grace period); deleted at the end of
    /// the batch if no one took them.
    left: Vec<(FrontendKey, u32)>,
}

/// What to do with one Service: decided once, by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceUpdate {
    /// Program exactly these frontends (never empty).
    Program(DesiredService),
    /// Remove everything the Service has in the maps.
    Remove,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BatchReport {
    /// Services whose frontends were written or changed.
    pub changed: usize,
    /// Services removed from the maps.
    pub removed: usize,
    /// Services not (fully) programmed, with the reason.
    pub refused: Vec<(ServiceKey, Refusal)>,
}

/// UDP frontends and the backends they no longer use: connected UDP
/// sockets aimed at those must be reset (kube-proxy flushes conntrack).
pub(crate) type UdpRemoved = Vec<(FrontendKey, Vec<Backend>)>;

/// Programmed state and the maps it lives in.
#[derive(Debug)]
pub(crate) struct Writer<T: Table> {
    table: T,
    services: FastMap<ServiceKey, ServiceState>,
    owners: FastMap<FrontendKey, ServiceKey>,
    sets: FastMap<u32, BackendSet>,
    ports: FastMap<ServicePortKey, PortEntry>,
    set_ids: IdAllocator,
    svc_ids: IdAllocator,
    used_slots: u64,
    used_index: u64,
    pending: BTreeMap<ServiceKey, Pending>,
    orphans: Orphans,
    /// Sets in slots that no frontend points at, deleted once a grace
    /// period asked for after their retirement has ended (their slots and
    /// ids stay taken until then).
    retired: Vec<sets::Retired>,
    /// Frontend keys written since the last ended grace period, stamped
    /// at their last write: writing one again first waits until the
    /// stamp is covered (docs/maps.md, readers
    /// and element reuse).
    written: FastMap<FrontendKey, GraceStamp>,
    /// The current batch's address hand-overs.
    handover: Handover,
    /// Collected during a batch.
    udp_removed: UdpRemoved,
    /// Earlier batches' removals, stamped before their batch asked for its
    /// grace period: handed out once that covers them
    /// ([`Self::take_udp_removed`]), so that no program that copied the
    /// old frontend can still connect a socket to a removed backend after
    /// the reset looked for them.
    udp_held: Vec<(GraceStamp, (FrontendKey, Vec<Backend>))>,
    /// SVC_BE_REV's entries.
    reverse: reverse::ReverseOwners,
    /// Frontend keys whose value in the map may differ from this writer's
    /// record: a best-effort write (a rollback, a delete) failed, or an
    /// adopted value claimed owner entries the map does not hold. Made to
    /// match at the start of the next batch ([`Self::repair_stray`]); until
    /// then such a value could, for one, keep `owned` bits whose entries
    /// a sweep deletes, and its sockets would show the wrong peer.
    stray: BTreeSet<FrontendKey>,
}

impl<T: Table> Writer<T> {
    /// Takes over whatever `table` already holds (pinned state from a
    /// previous run, or nothing).
    pub(crate) fn adopt(table: T) -> Result<Self, TableError> {
        adopt::adopt(table)
    }

    /// The maps.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &T {
        &self.table
    }

    /// Services that currently have frontends in the maps.
    pub(crate) fn programmed_services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Services waiting for a retry, with the reason.
    pub(crate) fn pending_services(&self) -> impl Iterator<Item = (&ServiceKey, &Refusal)> {
        self.pending.iter().map(|(key, p)| (key, &p.reason))
    }

    /// The ClusterIP address of every programmed Service (for a source
    /// that allocates addresses to keep them across restarts).
    pub(crate) fn programmed_cluster_ips(&self) -> Vec<(ServiceKey, std::net::IpAddr)> {
        let mut out = Vec::new();
        for (key, state) in &self.services {
            for (fk, _) in state.frontends.iter().filter(|(_, fe)| fe.is_cluster_ip()) {
                let entry = (key.clone(), fk.socket_addr().ip());
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }

    /// The node port of every programmed Service port, by port name.
    pub(crate) fn programmed_node_ports(&self) -> Vec<(ServiceKey, String, u16)> {
        let names: HashMap<u32, &ServicePortKey> = self.ports.iter().map(|(port, e)| (e.id, port)).collect();
        let mut out: Vec<(ServiceKey, String, u16)> = Vec::new();
        for (key, state) in &self.services {
            for (fk, fe) in state.frontends.iter().filter(|(_, fe)| fe.is_node_port()) {
                let Some(port) = names.get(&fe.svc_id()) else { continue };
                let entry = (key.clone(), port.port_name.clone(), fk.socket_addr().port());
                if !out.contains(&entry) {
                    out.push(entry);
                }
            }
        }
        out
    }

    /// Number of frontends in the maps.
    pub(crate) fn frontend_count(&self) -> usize {
        self.owners.len()
    }

    /// Number of reverse-owner entries (SVC_BE_REV, SVC_BE_REV6).
    pub(crate) fn reverse_owner_count(&self) -> usize {
        self.reverse.len()
    }

    /// How long a reverse-owner entry outlives its backend's last use
    /// ([`reverse::DEFAULT_LINGER`] unless set).
    pub(crate) fn set_reverse_linger(&mut self, linger: std::time::Duration) {
        self.reverse.set_linger(linger);
    }

    /// The (backend, frontend) pairs of these Services as programmed now.
    fn reverse_pairs<'a>(&self, keys: impl Iterator<Item = &'a ServiceKey>) -> Vec<reverse::Pair> {
        let mut out = Vec::new();
        for key in keys {
            if let Some(state) = self.services.get(key) {
                reverse::pairs(state, &self.sets, &mut out);
            }
        }
        out
    }

    /// Applies a batch of updates. Additions and changes go first and
    /// removals last, and addresses
    /// that change hands within the batch are replaced in place, so that a
    /// moving address, or a restart's stale entries, never leave a gap;
    /// then Services waiting on a conflict are retried. The batch ends by
    /// asking for a grace period, after which retired sets are deleted
    /// ([`Self::reap`]).
    pub(crate) fn apply(&mut self, batch: Vec<(ServiceKey, ServiceUpdate)>) -> BatchReport {
        let mut report = BatchReport::default();
        let mut removals: Vec<ServiceKey> = Vec::new();
        // Collected in place, into the batch's own buffer: a cold start's
        // batch is every Service, and a second list of them was a few MiB
        // of its peak.
        let upserts: Vec<(ServiceKey, DesiredService)> = batch
            .into_iter()
            .filter_map(|(key, update)| match update {
                // An empty Program is a removal (the controller sends none).
                ServiceUpdate::Program(desired) if !desired.frontends.is_empty() => Some((key, desired)),
                ServiceUpdate::Program(_) | ServiceUpdate::Remove => {
                    removals.push(key);
                    None
                }
            })
            .collect();
        self.repair_stray();
        self.handover = self.plan_handover(&upserts, &removals);
        // Every Service this batch can change: its own, and those waiting
        // for a retry.
        let touched: BTreeSet<ServiceKey> =
            upserts.iter().map(|(k, _)| k).chain(&removals).chain(self.pending.keys()).cloned().collect();
        let reverse_before = self.reverse_pairs(touched.iter());
        // Owner entries for backends no entry covers yet go first.
        let wanted = upserts.iter().map(|(_, d)| d).chain(self.pending.values().map(|p| &p.desired));
        let fresh_owners = self.reverse.prepare(&mut self.table, wanted, std::time::Instant::now());
        // Grow once, not by doubling: each doubling briefly holds both tables.
        self.services.reserve(upserts.len());
        self.owners.reserve(upserts.len());
        self.sets.reserve(upserts.len());
        self.ports.reserve(upserts.len());
        let mut attempted = BTreeSet::new();
        for (key, desired) in upserts {
            self.pending.remove(&key);
            self.upsert_and_track(&key, desired, &mut report);
            attempted.insert(key);
        }
        for key in removals {
            self.pending.remove(&key);
            if self.remove_service(&key) {
                report.removed += 1;
            }
        }
        // Removals may have freed addresses or capacity: retry what waits.
        self.retry_pending(&attempted, &mut report);
        for (fk, _) in std::mem::take(&mut self.handover).left {
            if !self.owners.contains_key(&fk) {
                self.write_best_effort(&fk, None);
            }
        }
        // Sets an address hand-over kept alive may be all that keeps a
        // refused Service out: once they are gone, it gets their room
        // (after a moment without the address: the map could not hold both
        // sets at once).
        if !self.retired.is_empty() && self.pending.values().any(|p| p.reason.is_full()) {
            let retired = self.retired.len();
            self.settle_now();
            if self.retired.len() < retired {
                self.retry_pending(&attempted, &mut report);
            }
        }
        // The users of every entry, and lingering entries that are due.
        let now = std::time::Instant::now();
        if reverse_before.is_empty() {
            // Only additions (the cold start): counted Service by Service,
            // without the list of every pair (100k at 10k Services).
            let mut pairs = Vec::new();
            for state in touched.iter().filter_map(|key| self.services.get(key)) {
                pairs.clear();
                reverse::pairs(state, &self.sets, &mut pairs);
                self.reverse.add(&mut self.table, &mut pairs);
            }
        } else {
            let reverse_after = self.reverse_pairs(touched.iter());
            self.reverse.update(&mut self.table, reverse_before, reverse_after, now);
        }
        self.reverse.settle(&mut self.table, &fresh_owners, now);
        let stamp = self.table.current_stamp();
        self.end_batch();
        self.udp_held.extend(self.udp_removed.drain(..).map(|removed| (stamp, removed)));
        report
    }

    /// The UDP removals whose batch's grace period has ended.
    pub(crate) fn take_udp_removed(&mut self) -> UdpRemoved {
        let ended = self.table.graces_ended();
        let (due, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.udp_held).into_iter().partition(|(stamp, _)| stamp.is_covered(ended));
        self.udp_held = held;
        due.into_iter().map(|(_, removed)| removed).collect()
    }

    /// Tries every waiting Service again.
    fn retry_pending(&mut self, attempted: &BTreeSet<ServiceKey>, report: &mut BatchReport) {
        let retry: Vec<ServiceKey> = self.pending.keys().cloned().collect();
        for key in retry {
            let Some(pending) = self.pending.remove(&key) else { continue };
            let before = pending.reason.clone();
            report.refused.retain(|(k, _)| k != &key);
            self.upsert_and_track(&key, pending.desired, report);
            // A Service still stuck for the reason it was reported with in
            // an earlier batch is not reported again (no log flood).
            if !attempted.contains(&key) && self.pending.get(&key).is_some_and(|p| p.reason == before) {
                report.refused.retain(|(k, _)| k != &key);
            }
        }
    }

    /// Which addresses change hands in this batch.
    fn plan_handover(&self, upserts: &[(ServiceKey, DesiredService)], removals: &[ServiceKey]) -> Handover {
        let mut plan = Handover::default();
        let waiting = self.pending.iter().map(|(k, p)| (k, &p.desired));
        for (key, desired) in upserts.iter().map(|(k, d)| (k, d)).chain(waiting) {
            for fe in &desired.frontends {
                plan.claimed.entry(desired_key(fe)).or_insert_with(|| key.clone());
            }
        }
        let changing = upserts.iter().map(|(k, d)| (k, Some(d))).chain(removals.iter().map(|k| (k, None)));
        for (key, desired) in changing {
            let Some(state) = self.services.get(key) else { continue };
            let keeps: HashSet<FrontendKey> = desired.into_iter().flat_map(|d| &d.frontends).map(desired_key).collect();
            for fk in state.frontends.keys().filter(|fk| !keeps.contains(*fk)) {
                plan.releasing.insert(*fk, key.clone());
            }
        }
        plan
    }

    /// Deletes entries that were orphaned in the pinned maps. Call once the
    /// first complete desired state has been applied.
    pub(crate) fn remove_orphans(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        let counts = (orphans.slots.len(), orphans.index.len(), orphans.meta.len());
        if counts == (0, 0, 0) {
            return;
        }
        // A program that started before the adoption could still read them.
        if let Err(e) = self.table.synchronize() {
            tracing::error!("waiting for a grace period failed, orphaned entries kept: {e}");
            return;
        }
        let mut set_ids = BTreeSet::new();
        for slot in orphans.slots {
            log_delete(self.table.delete_slot(&slot));
            set_ids.insert(slot.key.set_id);
        }
        // An orphan slot can carry the id of a live set (an inline set, or
        // one of the other family): that id stays taken.
        for id in set_ids.into_iter().filter(|id| !self.sets.contains_key(id)) {
            self.set_ids.release(id);
        }
        for key in orphans.index {
            log_delete(self.table.delete_index(&key));
        }
        for id in orphans.meta {
            log_delete(self.table.delete_meta(id));
            self.svc_ids.release(id);
        }
        tracing::info!(
            slots = counts.0,
            index = counts.1,
            meta = counts.2,
            "removed orphaned entries left in the pinned maps"
        );
    }

    fn upsert_and_track(&mut self, key: &ServiceKey, desired: DesiredService, report: &mut BatchReport) {
        match self.upsert(key, &desired) {
            Ok(outcome) => {
                if outcome.changed {
                    report.changed += 1;
                }
                if let Some(reason) = outcome.conflict {
                    report.refused.push((key.clone(), reason.clone()));
                    self.pending.insert(key.clone(), Pending { desired, reason });
                }
            }
            Err(reason) => {
                report.refused.push((key.clone(), reason.clone()));
                self.pending.insert(key.clone(), Pending { desired, reason });
            }
        }
    }

    /// Programs one Service. On error nothing of this Service changed.
    fn upsert(&mut self, key: &ServiceKey, desired: &DesiredService) -> Result<UpsertOutcome, Refusal> {
        let mut conflicts = Vec::new();
        let mut taken = Vec::new();
        let mut wanted: BTreeMap<FrontendKey, &DesiredFrontend> = BTreeMap::new();
        for fe in &desired.frontends {
            let fk = desired_key(fe);
            // An outside-only twin belongs with its address: where another
            // Service owns the address (reported once, for that entry),
            // the twin is not written either.
            if fk.scope() == Scope::External {
                let all = fk.with_scope(Scope::All);
                if let Some(owner) = self.owners.get(&all)
                    && owner != key
                    && self.handover.releasing.get(&all) != Some(owner)
                {
                    continue;
                }
            }
            match self.owners.get(&fk) {
                Some(owner) if owner != key && self.handover.releasing.get(&fk) == Some(owner) => {
                    taken.push((fk, owner.clone()));
                    wanted.insert(fk, fe);
                }
                Some(owner) if owner != key => {
                    conflicts.push(Conflict { frontend: format!("{} {}", fe.proto, fe.addr), owner: owner.clone() });
                }
                _ => {
                    wanted.insert(fk, fe);
                }
            }
        }
        self.check_capacity(key, &wanted)?;
        for (fk, owner) in taken {
            self.give_up(&owner, &fk);
        }

        let mut journal = Journal::default();
        match self.write_frontends(key, &wanted, &mut journal) {
            Ok(values) => {
                let changed = !journal.frontends.is_empty();
                self.commit(key, values, journal);
                let conflict = (!conflicts.is_empty()).then_some(Refusal::Conflict(conflicts));
                Ok(UpsertOutcome { changed, conflict })
            }
            Err(err) => {
                self.rollback(journal);
                Err(err.into())
            }
        }
    }

    /// `owner` hands address `fk` over to another Service of this batch:
    /// it leaves `owner`'s state without being deleted from the map (the
    /// new owner's write replaces it), and the sets only it used retire.
    fn give_up(&mut self, owner: &ServiceKey, fk: &FrontendKey) {
        let Some(state) = self.services.get_mut(owner) else { return };
        let Some(old) = state.frontends.remove(fk) else { return };
        let still_used = state.set_ids().any(|id| id == old.set_id());
        let empty = state.frontends.is_empty();
        self.owners.remove(fk);
        // Until the taker's write lands (or if it fails), the address is
        // nobody's: the end of the batch deletes it unless it was taken.
        self.handover.left.push((*fk, old.set_id()));
        self.note_udp_removed(fk, old.set_id(), 0);
        if old.set_id() != 0 && !still_used {
            self.retire_set(old.set_id());
        }
        if empty && let Some(mut state) = self.services.remove(owner) {
            self.release_unused(&mut state, &BTreeSet::new(), &BTreeSet::new(), &BTreeSet::new());
        }
    }

    /// Steps 1 and 2: new sets and metadata, then frontend switches.
    fn write_frontends(
        &mut self,
        key: &ServiceKey,
        wanted: &BTreeMap<FrontendKey, &DesiredFrontend>,
        journal: &mut Journal,
    ) -> Result<LiteMap<FrontendKey, FrontendValue>, TableError> {
        let current = self.services.get(key).cloned().unwrap_or_default();
        let mut values = LiteMap::with_capacity(wanted.len());
        for (fk, fe) in wanted {
            let svc_id = self.ensure_port(fe, journal)?;
            let backends = backend_values(fe);
            let set_id = if backends.is_empty() {
                0
            } else {
                self.find_or_create_set(&current, fk.family(), backends.as_slice(), needs_index(fe), journal)?
            };
            let header = Header {
                svc_id,
                set_id,
                count: fe.backends.len() as u32,
                affinity_timeout: fe.affinity_timeout,
                flags: flags(fe),
            };
            let value = FrontendValue::new(fk.family(), header, &backends).with_owned(self.owned_mask(fk, &backends));
            let old = current.frontends.get(fk).copied();
            if old != Some(value) {
                self.write_frontend(fk, Some(&value))?;
                journal.frontends.push((*fk, old));
            }
            values.insert(*fk, value);
        }
        Ok(values)
    }

    /// Writes (`Some`) or deletes (`None`) one frontend. A key written again
    /// before a grace period asked for after its last write has ended
    /// waits for one first: a program may still hold the element the last
    /// write freed, and the kernel may hand that element to this write.
    fn write_frontend(&mut self, fk: &FrontendKey, value: Option<&FrontendValue>) -> Result<(), TableError> {
        if let Some(&stamp) = self.written.get(fk) {
            self.table.wait_grace_after(stamp)?;
        }
        match value {
            Some(value) => self.table.put_frontend(fk, value)?,
            None => self.table.delete_frontend(fk)?,
        }
        let stamp = self.table.stamp();
        self.written.insert(*fk, stamp);
        Ok(())
    }

    /// The `owned` bits of a frontend at `fk` with `backends` inline, from
    /// the mirror (whose entries are written before any frontend that
    /// lists them, `ReverseOwners::prepare`).
    fn owned_mask(&self, fk: &FrontendKey, backends: &[Backend]) -> u32 {
        owned_bits(fk, backends, |key, frontend| self.reverse.owns(key, frontend))
    }

    /// Writes or deletes one frontend where a failure cannot be undone (a
    /// rollback, a delete): logged, and the key is repaired later.
    fn write_best_effort(&mut self, fk: &FrontendKey, value: Option<&FrontendValue>) {
        if let Err(e) = self.write_frontend(fk, value) {
            tracing::warn!("{e} (repaired at the next batch)");
            self.stray.insert(*fk);
        }
    }

    /// Makes every stray key's value in the map what this writer records
    /// for it (its owner's value, or none).
    fn repair_stray(&mut self) {
        for fk in std::mem::take(&mut self.stray) {
            let wanted = self
                .owners
                .get(&fk)
                .and_then(|owner| self.services.get(owner))
                .and_then(|s| s.frontends.get(&fk))
                .copied();
            self.write_best_effort(&fk, wanted.as_ref());
        }
    }

    /// The id of a service port, writing its names when new or changed.
    fn ensure_port(&mut self, fe: &DesiredFrontend, journal: &mut Journal) -> Result<u32, TableError> {
        let meta = service_meta(&fe.port, fe.service_port);
        if let Some(entry) = self.ports.get(&fe.port) {
            if entry.meta == meta {
                return Ok(entry.id);
            }
            let old = entry.clone();
            self.table.put_meta(old.id, &meta)?;
            journal.old_meta.push((fe.port.clone(), old.clone()));
            self.ports.insert(fe.port.clone(), PortEntry { id: old.id, meta });
            return Ok(old.id);
        }
        let id = self.svc_ids.allocate().ok_or_else(|| exhausted("service port ids"))?;
        if let Err(e) = self.table.put_meta(id, &meta) {
            self.svc_ids.release(id);
            return Err(e);
        }
        self.ports.insert(fe.port.clone(), PortEntry { id, meta });
        journal.new_ports.push(fe.port.clone());
        Ok(id)
    }

    /// Step 3 for a successful update: record the new frontends, delete the
    /// ones no longer wanted (unless another Service of this batch takes
    /// them over), then retire sets and names nothing points at.
    fn commit(&mut self, key: &ServiceKey, values: LiteMap<FrontendKey, FrontendValue>, journal: Journal) {
        let mut state = self.services.remove(key).unwrap_or_default();
        for (fk, old) in &state.frontends {
            let now = values.get(fk).map_or(0, FrontendValue::set_id);
            self.note_udp_removed(fk, old.set_id(), now);
        }
        let dropped: Vec<(FrontendKey, u32)> =
            state.frontends.iter().filter(|(k, _)| !values.contains_key(*k)).map(|(k, v)| (*k, v.set_id())).collect();
        for (fk, set_id) in dropped {
            self.drop_frontend(key, &fk, set_id);
        }
        for fk in values.keys() {
            self.owners.insert(*fk, key.clone());
        }
        let owned_sets: BTreeSet<u32> = state.set_ids().chain(journal.new_sets).collect();
        state.ports.extend(journal.new_ports.into_iter().map(|p| (p, ())));
        let live_sets: BTreeSet<u32> = values.values().map(FrontendValue::set_id).collect();
        let live_ports: BTreeSet<u32> = values.values().map(FrontendValue::svc_id).collect();
        state.frontends = values;
        self.release_unused(&mut state, &owned_sets, &live_sets, &live_ports);
        if !state.frontends.is_empty() {
            self.services.insert(key.clone(), state);
        }
    }

    /// `key` no longer has frontend `fk`: delete it, or leave it in place
    /// when another Service of this batch claims it.
    fn drop_frontend(&mut self, key: &ServiceKey, fk: &FrontendKey, set_id: u32) {
        self.owners.remove(fk);
        match self.handover.claimed.get(fk) {
            Some(claimant) if claimant != key => self.handover.left.push((*fk, set_id)),
            _ => self.write_best_effort(fk, None),
        }
    }

    /// Deletes every frontend of a Service, then its sets and names.
    fn remove_service(&mut self, key: &ServiceKey) -> bool {
        let Some(mut state) = self.services.remove(key) else {
            return false;
        };
        let frontends: Vec<(FrontendKey, u32)> = state.frontends.iter().map(|(k, v)| (*k, v.set_id())).collect();
        for (fk, set_id) in frontends {
            self.drop_frontend(key, &fk, set_id);
            self.note_udp_removed(&fk, set_id, 0);
        }
        let owned_sets: BTreeSet<u32> = state.set_ids().collect();
        state.frontends.clear();
        self.release_unused(&mut state, &owned_sets, &BTreeSet::new(), &BTreeSet::new());
        true
    }

    /// Retires the sets of `owned_sets` and deletes the port names of a
    /// Service that are not in use.
    fn release_unused(
        &mut self,
        state: &mut ServiceState,
        owned_sets: &BTreeSet<u32>,
        live_sets: &BTreeSet<u32>,
        live_ports: &BTreeSet<u32>,
    ) {
        for &id in owned_sets.difference(live_sets) {
            self.retire_set(id);
        }
        let dead_ports: Vec<ServicePortKey> = state
            .ports
            .keys()
            .filter(|p| self.ports.get(*p).is_none_or(|e| !live_ports.contains(&e.id)))
            .cloned()
            .collect();
        for port in dead_ports {
            state.ports.remove(&port);
            if let Some(entry) = self.ports.remove(&port) {
                log_delete(self.table.delete_meta(entry.id));
                self.svc_ids.release(entry.id);
            }
        }
    }

    /// Records the backends a UDP frontend stopped using (set 0: none).
    fn note_udp_removed(&mut self, fk: &FrontendKey, before: u32, after: u32) {
        if fk.proto() != svc_common::proto::UDP || before == after {
            return;
        }
        let backends = |id: u32| self.sets.get(&id).map_or(&[][..], |s| s.backends.as_slice());
        let (before, after) = (backends(before), backends(after));
        let gone: Vec<Backend> = before.iter().filter(|b| !after.contains(b)).copied().collect();
        if !gone.is_empty() {
            self.udp_removed.push((*fk, gone));
        }
    }
}

/// The kernel encoding of a frontend's backends.
fn backend_values(fe: &DesiredFrontend) -> Vec<Backend> {
    fe.backends.iter().map(|b| backend_value(*b)).collect()
}

struct UpsertOutcome {
    changed: bool,
    conflict: Option<Refusal>,
}

fn exhausted(what: &str) -> TableError {
    TableError { map: "agent", op: "allocate", detail: format!("no free {what}"), full: true }
}

/// Deletes and restores are best effort: the kernel only fails them for
/// reasons that a retry would not fix; say so and carry on.
/// The `owned` bits of a frontend at `fk` listing `backends`: bit i where
/// `owns(backend i's reverse key, fk's address)`. Only sockets look the
/// entries up, through frontends of scope All; the others get none.
fn owned_bits(fk: &FrontendKey, backends: &[Backend], owns: impl Fn(RevKey, Backend) -> bool) -> u32 {
    if fk.scope() != Scope::All {
        return 0;
    }
    let frontend = fk.as_backend();
    backends
        .iter()
        .take(32)
        .enumerate()
        .filter(|(_, b)| owns(RevKey::new(**b, fk.proto()), frontend))
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

fn log_delete(result: Result<(), TableError>) {
    if let Err(e) = result {
        tracing::warn!("{e}");
    }
}

fn flags(fe: &DesiredFrontend) -> u32 {
    let kind = match fe.kind {
        FrontendKind::ClusterIp => fe_flags::KIND_CLUSTER_IP,
        FrontendKind::NodePort => fe_flags::KIND_NODE_PORT,
        FrontendKind::ExternalIp => fe_flags::KIND_EXTERNAL_IP,
        FrontendKind::LoadBalancer => fe_flags::KIND_LOAD_BALANCER,
    };
    let host = if fe.host_ns_only { fe_flags::HOST_NS_ONLY } else { 0 };
    let indexed = if needs_index(fe) { fe_flags::INDEXED } else { 0 };
    let twin = if fe.external_twin { fe_flags::EXTERNAL_TWIN } else { 0 };
    let restricted = if fe.source_restricted { fe_flags::SOURCE_RANGES } else { 0 };
    kind | host | indexed | twin | restricted
}

/// SVC_META value for a service port.
pub(crate) fn service_meta(port: &ServicePortKey, service_port: u16) -> ServiceMeta {
    let mut meta: ServiceMeta = bytemuck::Zeroable::zeroed();
    copy_name(&mut meta.namespace, &port.service.namespace);
    copy_name(&mut meta.name, &port.service.name);
    copy_name(&mut meta.port_name, &port.port_name);
    meta.port = service_port;
    meta.proto = port.proto.number();
    meta
}

/// Copies a name, NUL-padded; Kubernetes names always fit (63 bytes,
/// 15 for port names), longer ones are cut.
pub(crate) fn copy_name(dst: &mut [u8], src: &str) {
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
}

/// A NUL-padded name back as a string.
pub(crate) fn name_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod grace_tests;
#[cfg(test)]
mod reverse_tests;
#[cfg(test)]
mod tests;
