//! Rebuilding the writer's view from pinned maps after a restart. Nothing
//! is deleted here: the source has not spoken yet, and the dataplane must
//! keep serving exactly what it served until the first sync is applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{BackendSet, Handover, IdAllocator, Orphans, PortEntry, ServiceState, Writer, name_str};
use crate::{
    dataplane::{
        family::{Backend, Family, FrontendKey, IndexKey, RevKey},
        table::{Table, TableError},
    },
    fast_hash::FastMap,
    model::{Proto, ServiceKey, ServicePortKey},
};

pub(super) fn adopt<T: Table>(table: T) -> Result<Writer<T>, TableError> {
    let dump = table.dump()?;

    let mut ports: FastMap<ServicePortKey, PortEntry> = FastMap::default();
    let mut port_by_id: HashMap<u32, ServicePortKey> = HashMap::new();
    for (id, meta) in &dump.meta {
        let Some(proto) = Proto::from_number(meta.proto) else { continue };
        let port = ServicePortKey {
            service: ServiceKey::new(name_str(&meta.namespace), name_str(&meta.name)),
            port_name: name_str(&meta.port_name),
            proto,
        };
        port_by_id.insert(*id, port.clone());
        ports.insert(port, PortEntry { id: *id, meta: *meta });
    }

    let mut slots: BTreeMap<(u32, Family), Vec<(u32, Backend)>> = BTreeMap::new();
    for (slot, backend) in &dump.slots {
        slots.entry((slot.key.set_id, slot.family)).or_default().push((slot.key.slot, *backend));
    }

    let mut services: FastMap<ServiceKey, ServiceState> = FastMap::default();
    let mut owners = FastMap::default();
    let mut sets: FastMap<u32, BackendSet> = FastMap::default();
    for (fk, fe) in &dump.frontends {
        // A frontend without names can only come from a crash mid-update;
        // file it under a name no source produces so the first sync
        // removes it.
        let owner = port_by_id
            .get(&fe.svc_id())
            .map_or_else(|| ServiceKey::new("", format!("unnamed-svc-id-{}", fe.svc_id())), |p| p.service.clone());
        let state = services.entry(owner.clone()).or_default();
        state.frontends.insert(*fk, *fe);
        if let Some(port) = port_by_id.get(&fe.svc_id()) {
            state.ports.insert(port.clone(), ());
        }
        if fe.set_id() != 0 {
            let family = fk.family();
            sets.entry(fe.set_id()).or_insert_with(|| {
                let backends = if fe.is_inline() {
                    fe.inline_backends()
                } else {
                    let mut members = slots.get(&(fe.set_id(), family)).cloned().unwrap_or_default();
                    members.sort_unstable();
                    members.into_iter().map(|(_, b)| b).collect()
                };
                BackendSet { family, backends, indexed: fe.is_indexed() }
            });
        }
        owners.insert(*fk, owner);
    }

    let set_ids = IdAllocator::with_used(slots.keys().map(|(id, _)| *id).chain(sets.keys().copied()));
    let referenced_ports: std::collections::HashSet<u32> = dump.frontends.iter().map(|(_, fe)| fe.svc_id()).collect();
    let orphans = Orphans {
        // Slots of a set no frontend points at, or of the other family
        // than the frontends that use that set id.
        slots: dump
            .slots
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| sets.get(&k.key.set_id).is_none_or(|s| s.is_inline() || s.family != k.family))
            .collect(),
        index: dump
            .index
            .iter()
            .map(|(k, _)| *k)
            .filter(|k: &IndexKey| sets.get(&k.set_id).is_none_or(|s| !s.indexed || s.family != k.backend.family()))
            .collect(),
        meta: dump.meta.iter().map(|(id, _)| *id).filter(|id| !referenced_ports.contains(id)).collect(),
    };
    for id in &orphans.meta {
        if let Some(port) = port_by_id.get(id) {
            ports.remove(port);
        }
    }
    let used_slots = sets.values().filter(|s| !s.is_inline()).map(|s| s.backends.len() as u64).sum();
    let used_index = sets.values().filter(|s| s.indexed).map(|s| s.backends.len() as u64).sum();
    if !services.is_empty() {
        tracing::info!(
            services = services.len(),
            frontends = owners.len(),
            sets = sets.len(),
            "adopted pinned dataplane state; it keeps serving until the source is synced"
        );
    }
    let stray = distrust_owned_bits(&mut services, &dump.reverse);
    let mut table = table;
    let mut programmed = Vec::new();
    for state in services.values() {
        super::reverse::pairs(state, &sets, &mut programmed);
    }
    let capacity = table.capacity().reverse;
    let reverse =
        super::reverse::ReverseOwners::adopt(&mut table, dump.reverse, programmed, capacity, std::time::Instant::now());
    Ok(Writer {
        table,
        services,
        owners,
        sets,
        ports,
        set_ids,
        svc_ids: IdAllocator::with_used_up_to(dump.meta.iter().map(|(id, _)| *id), super::ids::MAX_SERVICE_PORT_ID),
        used_slots,
        used_index,
        pending: BTreeMap::new(),
        orphans,
        retired: Vec::new(),
        written: FastMap::default(),
        handover: Handover::default(),
        udp_removed: Vec::new(),
        udp_held: Vec::new(),
        reverse,
        stray,
    })
}

/// Clears, in the adopted record, `owned` bits that the pinned owner
/// entries do not confirm (a value a failed write left behind, or pins
/// tampered with), and returns those frontends' keys: the first batch
/// rewrites them (`Writer::repair_stray`). A cleared bit only costs a
/// lookup; a wrong one would show sockets the wrong peer.
fn distrust_owned_bits(
    services: &mut FastMap<ServiceKey, ServiceState>,
    reverse: &[(RevKey, Backend)],
) -> BTreeSet<FrontendKey> {
    let owners: HashMap<RevKey, Backend> = reverse.iter().copied().collect();
    let mut stray = BTreeSet::new();
    for state in services.values_mut() {
        for (fk, value) in state.frontends.iter_mut() {
            let confirmed =
                super::owned_bits(fk, &value.inline_backends(), |key, frontend| owners.get(&key) == Some(&frontend));
            let kept = value.owned() & confirmed;
            if kept != value.owned() {
                *value = value.with_owned(kept);
                stray.insert(*fk);
            }
        }
    }
    stray
}
