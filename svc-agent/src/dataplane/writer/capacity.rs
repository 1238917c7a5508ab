//! Refusing an update up front when it cannot fit.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Refusal, ServiceState, Writer, backend_values,
    sets::{in_slots, needs_index},
};
use crate::{
    dataplane::{
        family::{Backend, FrontendKey},
        table::Table,
    },
    model::{DesiredFrontend, ServiceKey},
};

impl<T: Table> Writer<T> {
    /// Refuses an update that cannot fit, counting the old and the new
    /// backend sets that coexist during the switch. Retired sets still
    /// hold their slots; if only they are in the way, a grace period frees
    /// them first.
    pub(super) fn check_capacity(
        &mut self,
        key: &ServiceKey,
        wanted: &BTreeMap<FrontendKey, &DesiredFrontend>,
    ) -> Result<(), Refusal> {
        match self.capacity_shortfall(key, wanted) {
            Err(_) if !self.retired.is_empty() => {
                self.settle_now();
                self.capacity_shortfall(key, wanted)
            }
            other => other,
        }
    }

    fn capacity_shortfall(
        &self,
        key: &ServiceKey,
        wanted: &BTreeMap<FrontendKey, &DesiredFrontend>,
    ) -> Result<(), Refusal> {
        let cap = self.table.capacity();
        let current = self.services.get(key);
        let new_frontends =
            wanted.keys().filter(|k| !current.is_some_and(|c| c.frontends.contains_key(*k))).count() as u64;
        let full = |map, unit, used: u64, capacity: u32, needed: u64| {
            if used + needed > u64::from(capacity) {
                Err(Refusal::Full { map, unit, used, capacity: u64::from(capacity), needed })
            } else {
                Ok(())
            }
        };
        full("SVC_FRONTENDS", "entries", self.owners.len() as u64, cap.frontends, new_frontends)?;
        let exists = |backends: &[Backend], indexed: bool| {
            current
                .into_iter()
                .flat_map(ServiceState::set_ids)
                .filter_map(|id| self.sets.get(&id))
                .any(|s| s.indexed == indexed && s.backends == backends)
        };
        let mut seen = BTreeSet::new();
        let (mut slots, mut index) = (0u64, 0u64);
        for fe in wanted.values().filter(|fe| in_slots(fe)) {
            let backends = backend_values(fe);
            let indexed = needs_index(fe);
            if !exists(&backends, indexed) && seen.insert((backends, indexed)) {
                slots += fe.backends.len() as u64;
                if indexed {
                    index += fe.backends.len() as u64;
                }
            }
        }
        full("SVC_BACKENDS", "slots", self.used_slots, cap.slots, slots)?;
        full("SVC_BE_INDEX", "entries", self.used_index, cap.index, index)?;
        let new_ports = wanted.values().map(|fe| &fe.port).collect::<BTreeSet<_>>();
        let new_ports = new_ports.into_iter().filter(|p| !self.ports.contains_key(*p)).count() as u64;
        full("SVC_META", "service ports", self.ports.len() as u64, cap.meta, new_ports)
    }
}
