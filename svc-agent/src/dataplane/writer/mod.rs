//! Diff desired against programmed state and apply it, one Service at a
//! time, with the update protocol of docs/maps.md:
//!
//! 1. write a *new* backend set (slots, and membership entries when the
//!    frontend has session affinity) under a fresh set id;
//! 2. switch each frontend to it with one map update (atomic for a
//!    racing `connect()`: it sees the whole old set or the whole new one);
//! 3. only then delete frontends and sets nobody points at any more.
//!
//! A Service whose update cannot be applied (a map is full, a frontend
//! address belongs to another Service) keeps its previous state, is
//! logged by name, and is retried after later changes; no other Service
//! is touched.

mod adopt;
mod ids;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use litemap::LiteMap;

use svc_common::{Backend4, BackendIndexKey, Frontend, FrontendKey4, INLINE_BACKENDS, ServiceMeta, SlotKey, fe_flags};

use self::ids::IdAllocator;
use super::table::{Table, TableError};
use crate::model::{
    DesiredFrontend, DesiredService, FrontendKind, ServiceKey, ServicePortKey, backend_value, frontend_key,
};

/// A backend set under one set id: up to `INLINE_BACKENDS` backends live
/// in the frontend values themselves, larger sets in `backends.len()`
/// slots of SVC_BACKENDS. Sets belong to one Service (never shared), so a
/// Service's update only ever touches its own sets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BackendSet {
    backends: Vec<Backend4>,
    indexed: bool,
}

impl BackendSet {
    /// Whether the set lives in frontend values rather than in slots.
    fn is_inline(&self) -> bool {
        self.backends.len() <= INLINE_BACKENDS
    }
}

/// Affinity membership entries are only needed for sets in slots; inline
/// sets are scanned by the programs.
fn needs_index(fe: &DesiredFrontend) -> bool {
    fe.affinity_timeout != 0 && fe.backends.len() > INLINE_BACKENDS
}

/// What one Service has in the maps. Sorted vectors, not B-trees: a
/// Service has a handful of each, and the agent holds one of these per
/// Service (a B-tree node alone is 11 slots of 152-byte frontend values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceState {
    /// Exactly as written to SVC_FRONTENDS.
    frontends: LiteMap<FrontendKey4, Frontend>,
    /// Service ports (SVC_META entries) it owns.
    ports: LiteMap<ServicePortKey, ()>,
}

impl ServiceState {
    /// The backend sets it owns: exactly those its frontends point at (an
    /// update releases the others when it commits).
    fn set_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.frontends.values().map(|f| f.set_id).filter(|&id| id != 0)
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
    reason: String,
}

/// Entries found in pinned maps that nothing refers to (a crash between
/// steps of the protocol); removed once the first full sync is applied.
#[derive(Debug, Default)]
struct Orphans {
    slots: Vec<SlotKey>,
    index: Vec<BackendIndexKey>,
    meta: Vec<u32>,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Services whose frontends were written or changed.
    pub changed: usize,
    /// Services removed from the maps.
    pub removed: usize,
    /// Services not (fully) programmed, with the reason.
    pub refused: Vec<(ServiceKey, String)>,
    /// UDP frontends and the backends they no longer use: connected UDP
    /// sockets aimed at those must be reset (kube-proxy flushes conntrack).
    pub udp_removed: Vec<(FrontendKey4, Vec<Backend4>)>,
}

/// Programmed state and the maps it lives in.
#[derive(Debug)]
pub struct Writer<T: Table> {
    table: T,
    services: HashMap<ServiceKey, ServiceState>,
    owners: HashMap<FrontendKey4, ServiceKey>,
    sets: HashMap<u32, BackendSet>,
    ports: HashMap<ServicePortKey, PortEntry>,
    set_ids: IdAllocator,
    svc_ids: IdAllocator,
    used_slots: u64,
    used_index: u64,
    pending: BTreeMap<ServiceKey, Pending>,
    orphans: Orphans,
    /// Collected during a batch, handed out in its report.
    udp_removed: Vec<(FrontendKey4, Vec<Backend4>)>,
}

/// Undo information for one Service's update.
#[derive(Debug, Default)]
struct Journal {
    new_sets: Vec<u32>,
    new_ports: Vec<ServicePortKey>,
    old_meta: Vec<(ServicePortKey, PortEntry)>,
    frontends: Vec<(FrontendKey4, Option<Frontend>)>,
}

impl<T: Table> Writer<T> {
    /// Takes over whatever `table` already holds (pinned state from a
    /// previous run, or nothing).
    pub fn adopt(table: T) -> Result<Self, TableError> {
        adopt::adopt(table)
    }

    /// The maps.
    pub fn table(&self) -> &T {
        &self.table
    }

    /// Services that currently have frontends in the maps.
    pub fn programmed_services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Services waiting for a retry.
    pub fn pending_services(&self) -> impl Iterator<Item = &ServiceKey> {
        self.pending.keys()
    }

    /// Number of frontends in the maps.
    pub fn frontend_count(&self) -> usize {
        self.owners.len()
    }

    /// Applies a batch: `Some(desired)` programs a Service, `None` removes
    /// it. Additions and changes go first and removals last, so that an
    /// address moving between Services, or a restart's stale entries, never
    /// leave a gap; then Services waiting on a conflict are retried.
    pub fn apply(&mut self, batch: Vec<(ServiceKey, Option<DesiredService>)>) -> BatchReport {
        let mut report = BatchReport::default();
        let (upserts, removals): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|(_, d)| d.as_ref().is_some_and(|d| !d.frontends.is_empty()));
        // Grow once, not by doubling: each doubling briefly holds both tables.
        self.services.reserve(upserts.len());
        self.owners.reserve(upserts.len());
        self.sets.reserve(upserts.len());
        self.ports.reserve(upserts.len());
        let mut attempted = BTreeSet::new();
        for (key, desired) in upserts {
            let desired = desired.unwrap_or_default();
            self.pending.remove(&key);
            self.upsert_and_track(&key, desired, &mut report);
            attempted.insert(key);
        }
        for (key, _) in removals {
            self.pending.remove(&key);
            if self.remove_service(&key) {
                report.removed += 1;
            }
        }
        // Removals may have freed addresses or capacity: retry what waits.
        let retry: Vec<ServiceKey> = self.pending.keys().cloned().collect();
        for key in retry {
            let Some(pending) = self.pending.remove(&key) else { continue };
            let before = pending.reason.clone();
            report.refused.retain(|(k, _)| k != &key);
            self.upsert_and_track(&key, pending.desired, &mut report);
            // A Service still stuck for the reason it was reported with in
            // an earlier batch is not reported again (no log flood).
            if !attempted.contains(&key) && self.pending.get(&key).is_some_and(|p| p.reason == before) {
                report.refused.retain(|(k, _)| k != &key);
            }
        }
        report.udp_removed = std::mem::take(&mut self.udp_removed);
        report
    }

    /// Deletes entries that were orphaned in the pinned maps. Call once the
    /// first complete desired state has been applied.
    pub fn remove_orphans(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        let counts = (orphans.slots.len(), orphans.index.len(), orphans.meta.len());
        let mut set_ids = BTreeSet::new();
        for slot in orphans.slots {
            log_delete(self.table.delete_slot(&slot));
            set_ids.insert(slot.set_id);
        }
        for id in set_ids {
            self.set_ids.release(id);
        }
        for key in orphans.index {
            log_delete(self.table.delete_index(&key));
        }
        for id in orphans.meta {
            log_delete(self.table.delete_meta(id));
            self.svc_ids.release(id);
        }
        if counts != (0, 0, 0) {
            tracing::info!(
                slots = counts.0,
                index = counts.1,
                meta = counts.2,
                "removed orphaned entries left in the pinned maps"
            );
        }
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
    fn upsert(&mut self, key: &ServiceKey, desired: &DesiredService) -> Result<UpsertOutcome, String> {
        let mut conflicts = Vec::new();
        let mut wanted: BTreeMap<FrontendKey4, &DesiredFrontend> = BTreeMap::new();
        for fe in &desired.frontends {
            let fk = frontend_key(fe.addr, fe.proto);
            match self.owners.get(&fk) {
                Some(owner) if owner != key => {
                    conflicts.push(format!("{} {} is already used by {owner}", fe.proto, fe.addr));
                }
                _ => {
                    wanted.insert(fk, fe);
                }
            }
        }
        self.check_capacity(key, &wanted)?;

        let mut journal = Journal::default();
        match self.write_frontends(key, &wanted, &mut journal) {
            Ok(values) => {
                let changed = !journal.frontends.is_empty();
                self.commit(key, values, journal);
                let conflict = (!conflicts.is_empty()).then(|| conflicts.join("; "));
                Ok(UpsertOutcome { changed, conflict })
            }
            Err(err) => {
                self.rollback(journal);
                Err(err.to_string())
            }
        }
    }

    /// Refuses an update up front when it cannot fit, counting the old and
    /// the new backend sets that coexist during the switch.
    fn check_capacity(
        &self,
        key: &ServiceKey,
        wanted: &BTreeMap<FrontendKey4, &DesiredFrontend>,
    ) -> Result<(), String> {
        let cap = self.table.capacity();
        let current = self.services.get(key);
        let new_frontends = wanted.keys().filter(|k| !current.is_some_and(|c| c.frontends.contains_key(*k))).count();
        if self.owners.len() + new_frontends > cap.frontends as usize {
            return Err(format!(
                "SVC_FRONTENDS is full ({} of {} entries used, {new_frontends} more needed)",
                self.owners.len(),
                cap.frontends
            ));
        }
        let exists = |backends: &[Backend4], indexed: bool| {
            current
                .into_iter()
                .flat_map(ServiceState::set_ids)
                .filter_map(|id| self.sets.get(&id))
                .any(|s| s.indexed == indexed && s.backends == backends)
        };
        let mut seen = BTreeSet::new();
        let (mut slots, mut index) = (0u64, 0u64);
        for fe in wanted.values().filter(|fe| fe.backends.len() > INLINE_BACKENDS) {
            let backends: Vec<Backend4> = fe.backends.iter().map(|b| backend_value(*b)).collect();
            let indexed = needs_index(fe);
            if !exists(&backends, indexed) && seen.insert((backends, indexed)) {
                slots += fe.backends.len() as u64;
                if indexed {
                    index += fe.backends.len() as u64;
                }
            }
        }
        if self.used_slots + slots > u64::from(cap.slots) {
            return Err(format!(
                "SVC_BACKENDS is full ({} of {} slots used, up to {slots} more needed during the update)",
                self.used_slots, cap.slots
            ));
        }
        if self.used_index + index > u64::from(cap.index) {
            return Err(format!("SVC_BE_INDEX is full ({} of {} entries used)", self.used_index, cap.index));
        }
        let new_ports = wanted.values().map(|fe| &fe.port).collect::<BTreeSet<_>>();
        let new_ports = new_ports.into_iter().filter(|p| !self.ports.contains_key(*p)).count();
        if self.ports.len() + new_ports > cap.meta as usize {
            return Err(format!("SVC_META is full ({} of {} service ports)", self.ports.len(), cap.meta));
        }
        Ok(())
    }

    /// Steps 1 and 2: new sets and metadata, then frontend switches.
    fn write_frontends(
        &mut self,
        key: &ServiceKey,
        wanted: &BTreeMap<FrontendKey4, &DesiredFrontend>,
        journal: &mut Journal,
    ) -> Result<LiteMap<FrontendKey4, Frontend>, TableError> {
        let current = self.services.get(key).cloned().unwrap_or_default();
        let mut values = LiteMap::with_capacity(wanted.len());
        for (fk, fe) in wanted {
            let svc_id = self.ensure_port(fe, journal)?;
            let backends: Vec<Backend4> = fe.backends.iter().map(|b| backend_value(*b)).collect();
            let set_id = if backends.is_empty() {
                0
            } else {
                self.find_or_create_set(&current, backends.as_slice(), needs_index(fe), journal)?
            };
            let mut value = Frontend {
                svc_id,
                set_id,
                count: fe.backends.len() as u32,
                affinity_timeout: fe.affinity_timeout,
                flags: flags(fe),
                _pad: 0,
                inline: Default::default(),
            };
            if value.is_inline() {
                value.inline[..backends.len()].copy_from_slice(&backends);
            }
            let old = current.frontends.get(fk).copied();
            if old != Some(value) {
                self.table.put_frontend(fk, &value)?;
                journal.frontends.push((*fk, old));
            }
            values.insert(*fk, value);
        }
        Ok(values)
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

    /// Reuses a set this Service already points at (or created in this
    /// update) with exactly these backends, else writes a new one.
    fn find_or_create_set(
        &mut self,
        current: &ServiceState,
        backends: &[Backend4],
        indexed: bool,
        journal: &mut Journal,
    ) -> Result<u32, TableError> {
        let candidates = current.set_ids().chain(journal.new_sets.iter().copied());
        for id in candidates {
            if let Some(set) = self.sets.get(&id)
                && set.indexed == indexed
                && set.backends == backends
            {
                return Ok(id);
            }
        }
        let id = self.set_ids.allocate().ok_or_else(|| exhausted("backend set ids"))?;
        // Registered before writing so a partial write is rolled back too.
        let set = BackendSet { backends: backends.to_vec(), indexed };
        let inline = set.is_inline();
        self.sets.insert(id, set);
        journal.new_sets.push(id);
        if inline {
            // The backends travel in the frontend values: nothing to write.
            return Ok(id);
        }
        self.used_slots += backends.len() as u64;
        if indexed {
            self.used_index += backends.len() as u64;
        }
        let slots: Vec<(SlotKey, Backend4)> =
            backends.iter().enumerate().map(|(slot, b)| (SlotKey { set_id: id, slot: slot as u32 }, *b)).collect();
        self.table.put_slots(&slots)?;
        if indexed {
            for (key, backend) in &slots {
                self.table.put_index(&BackendIndexKey { set_id: id, backend: *backend }, key.slot)?;
            }
        }
        Ok(id)
    }

    /// Step 3 for a successful update: record the new frontends, delete the
    /// ones no longer wanted, then sets and names nothing points at.
    fn commit(&mut self, key: &ServiceKey, values: LiteMap<FrontendKey4, Frontend>, journal: Journal) {
        let mut state = self.services.remove(key).unwrap_or_default();
        for (fk, old) in &state.frontends {
            let now = values.get(fk).map_or(0, |v| v.set_id);
            self.note_udp_removed(fk, old.set_id, now);
        }
        for fk in state.frontends.keys().filter(|k| !values.contains_key(*k)) {
            log_delete(self.table.delete_frontend(fk));
            self.owners.remove(fk);
        }
        for fk in values.keys() {
            self.owners.insert(*fk, key.clone());
        }
        let owned_sets: BTreeSet<u32> = state.set_ids().chain(journal.new_sets).collect();
        state.ports.extend(journal.new_ports.into_iter().map(|p| (p, ())));
        let live_sets: BTreeSet<u32> = values.values().map(|v| v.set_id).collect();
        let live_ports: BTreeSet<u32> = values.values().map(|v| v.svc_id).collect();
        state.frontends = values;
        self.release_unused(&mut state, &owned_sets, &live_sets, &live_ports);
        if !state.frontends.is_empty() {
            self.services.insert(key.clone(), state);
        }
    }

    /// Deletes every frontend of a Service, then its sets and names.
    fn remove_service(&mut self, key: &ServiceKey) -> bool {
        let Some(mut state) = self.services.remove(key) else {
            return false;
        };
        for (fk, old) in &state.frontends {
            log_delete(self.table.delete_frontend(fk));
            self.owners.remove(fk);
            self.note_udp_removed(fk, old.set_id, 0);
        }
        let owned_sets: BTreeSet<u32> = state.set_ids().collect();
        state.frontends.clear();
        self.release_unused(&mut state, &owned_sets, &BTreeSet::new(), &BTreeSet::new());
        true
    }

    /// Deletes the sets of `owned_sets` and the port names of a Service
    /// that are not in use.
    fn release_unused(
        &mut self,
        state: &mut ServiceState,
        owned_sets: &BTreeSet<u32>,
        live_sets: &BTreeSet<u32>,
        live_ports: &BTreeSet<u32>,
    ) {
        for &id in owned_sets.difference(live_sets) {
            self.delete_set(id);
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
    fn note_udp_removed(&mut self, fk: &FrontendKey4, before: u32, after: u32) {
        if fk.proto != svc_common::proto::UDP || before == after {
            return;
        }
        let backends = |id: u32| self.sets.get(&id).map_or(&[][..], |s| s.backends.as_slice());
        let (before, after) = (backends(before), backends(after));
        let gone: Vec<Backend4> = before.iter().filter(|b| !after.contains(b)).copied().collect();
        if !gone.is_empty() {
            self.udp_removed.push((*fk, gone));
        }
    }

    fn delete_set(&mut self, id: u32) {
        let (backends, indexed) = match self.sets.remove(&id) {
            Some(set) if !set.is_inline() => (set.backends, set.indexed),
            _ => (Vec::new(), false),
        };
        for (slot, backend) in backends.iter().enumerate() {
            log_delete(self.table.delete_slot(&SlotKey { set_id: id, slot: slot as u32 }));
            if indexed {
                log_delete(self.table.delete_index(&BackendIndexKey { set_id: id, backend: *backend }));
            }
        }
        self.used_slots -= backends.len() as u64;
        if indexed {
            self.used_index -= backends.len() as u64;
        }
        self.set_ids.release(id);
    }

    /// Undoes a failed update in reverse order.
    fn rollback(&mut self, journal: Journal) {
        for (fk, old) in journal.frontends.into_iter().rev() {
            let restored = match old {
                Some(value) => self.table.put_frontend(&fk, &value),
                None => self.table.delete_frontend(&fk),
            };
            log_delete(restored);
        }
        for id in journal.new_sets {
            self.delete_set(id);
        }
        for (port, old) in journal.old_meta.into_iter().rev() {
            log_delete(self.table.put_meta(old.id, &old.meta));
            self.ports.insert(port, old);
        }
        for port in journal.new_ports {
            if let Some(entry) = self.ports.remove(&port) {
                log_delete(self.table.delete_meta(entry.id));
                self.svc_ids.release(entry.id);
            }
        }
    }
}

struct UpsertOutcome {
    changed: bool,
    conflict: Option<String>,
}

fn exhausted(what: &str) -> TableError {
    TableError { map: "agent", op: "allocate", detail: format!("no free {what}"), full: true }
}

/// Deletes and restores are best effort: the kernel only fails them for
/// reasons that a retry would not fix; say so and carry on.
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
    kind | host | indexed
}

/// SVC_META value for a service port.
pub fn service_meta(port: &ServicePortKey, service_port: u16) -> ServiceMeta {
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
fn copy_name(dst: &mut [u8], src: &str) {
    let n = src.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&src.as_bytes()[..n]);
}

/// A NUL-padded name back as a string.
pub fn name_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests;
