//! Backend sets: created whole under a fresh id, shared by the frontends of
//! one Service that have identical backends, and deleted only after an RCU
//! grace period once nothing points at them (docs/maps.md).

use svc_common::SlotKey;

use super::{Journal, ServiceState, Writer, log_delete};
use crate::{
    dataplane::{
        family::{Backend, Family, IndexKey, SlotRef, inline_limit},
        table::{GraceStamp, Table, TableError},
    },
    model::DesiredFrontend,
};

/// A backend set under one set id, of one family: up to that family's
/// inline limit the backends live in the frontend values themselves,
/// larger sets in `backends.len()` slots of its slots map. Sets belong to
/// one Service (never shared), so a Service's update only ever touches
/// its own sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BackendSet {
    pub(super) family: Family,
    pub(super) backends: Vec<Backend>,
    pub(super) indexed: bool,
}

impl BackendSet {
    /// Whether the set lives in frontend values rather than in slots.
    pub(super) fn is_inline(&self) -> bool {
        self.backends.len() <= inline_limit(self.family)
    }

    /// Slot `slot` of this set (id `id`).
    fn slot(&self, id: u32, slot: usize) -> SlotRef {
        SlotRef { family: self.family, key: SlotKey { set_id: id, slot: slot as u32 } }
    }
}

/// A set in slots that no frontend points at any more.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retired {
    pub(super) set_id: u32,
    /// When it retired: it is deleted once that is covered.
    pub(super) retired: GraceStamp,
}

/// The family of a frontend (and so of its backends).
pub(super) fn family(fe: &DesiredFrontend) -> Family {
    Family::of(fe.addr.ip())
}

/// Whether a frontend's backends go to slots rather than inline.
pub(super) fn in_slots(fe: &DesiredFrontend) -> bool {
    fe.backends.len() > inline_limit(family(fe))
}

/// Affinity membership entries are only needed for sets in slots; inline
/// sets are scanned by the programs.
pub(super) fn needs_index(fe: &DesiredFrontend) -> bool {
    fe.affinity_timeout != 0 && in_slots(fe)
}

impl<T: Table> Writer<T> {
    /// Reuses a set this Service already points at (or created in this
    /// update) with exactly these backends, else writes a new one.
    pub(super) fn find_or_create_set(
        &mut self,
        current: &ServiceState,
        family: Family,
        backends: &[Backend],
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
        let id = self.set_ids.allocate().ok_or_else(|| super::exhausted("backend set ids"))?;
        // Registered before writing so a partial write is rolled back too.
        let set = BackendSet { family, backends: backends.to_vec(), indexed };
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
        let slots: Vec<(SlotRef, Backend)> = backends
            .iter()
            .enumerate()
            .map(|(slot, b)| (SlotRef { family, key: SlotKey { set_id: id, slot: slot as u32 } }, *b))
            .collect();
        self.table.put_slots(&slots)?;
        if indexed {
            for (key, backend) in &slots {
                self.table.put_index(&IndexKey { set_id: id, backend: *backend }, key.key.slot)?;
            }
        }
        Ok(id)
    }

    /// No frontend points at set `id` any more. An inline set has nothing
    /// in the maps and goes at once; a set in slots may still be read by a
    /// program that copied a frontend just before its switch, so it waits
    /// for a grace period asked for after now ([`Self::reap`]).
    pub(super) fn retire_set(&mut self, id: u32) {
        match self.sets.get(&id) {
            Some(set) if !set.is_inline() => {
                let retired = self.table.stamp();
                self.retired.push(Retired { set_id: id, retired });
            }
            _ => {
                self.sets.remove(&id);
                self.set_ids.release(id);
            }
        }
    }

    /// Ends a batch: asks for a grace period that follows everything it
    /// wrote, without waiting for it, and deletes what earlier grace
    /// periods have freed. The next batch waits only where it writes a
    /// key again before that grace period has ended.
    pub(super) fn end_batch(&mut self) {
        if self.table.stamped_since_ask()
            && let Err(e) = self.table.ask_grace()
        {
            // Nothing is deleted without a grace period; the next batch
            // asks again.
            tracing::error!("asking for a grace period failed, retired backend sets kept: {e}");
        }
        self.reap();
    }

    /// Waits for a grace period that follows everything written so far,
    /// then deletes the retired sets: their room is needed now.
    pub(super) fn settle_now(&mut self) {
        if let Err(e) = self.table.synchronize() {
            tracing::error!("waiting for a grace period failed, retired backend sets kept: {e}");
            return;
        }
        self.reap();
    }

    /// Deletes the retired sets whose grace period has ended, and forgets
    /// the writes it covered (those keys may be written again at once).
    pub(crate) fn reap(&mut self) {
        let ended = self.table.graces_ended();
        self.written.retain(|_, stamp| !stamp.is_covered(ended));
        if self.written.is_empty() && self.written.capacity() > 1024 {
            // A cold batch wrote every key: give that memory back.
            self.written = crate::fast_hash::FastMap::default();
        }
        self.reverse.grace_ended(ended);
        // A set that an address left for its new owner still points at
        // waits until that address is replaced (a mid-batch settle, for
        // capacity, must not open a gap).
        let in_use: std::collections::HashSet<u32> = self
            .handover
            .left
            .iter()
            .filter(|(fk, _)| !self.owners.contains_key(fk))
            .map(|(_, set_id)| *set_id)
            .collect();
        let (gone, kept): (Vec<Retired>, Vec<Retired>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| r.retired.is_covered(ended) && !in_use.contains(&r.set_id));
        self.retired = kept;
        for retired in gone {
            self.delete_set(retired.set_id);
        }
    }

    /// Whether retired sets, held UDP removals or the record of recent
    /// writes wait for a grace period to end (the control loop then calls [`Self::reap`]
    /// when one does).
    pub(crate) fn awaits_grace(&self) -> bool {
        !self.retired.is_empty() || !self.written.is_empty() || !self.udp_held.is_empty() || self.reverse.awaits_grace()
    }

    /// Notified whenever a grace period ends.
    pub(crate) fn grace_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.table.grace_signal()
    }

    fn delete_set(&mut self, id: u32) {
        let Some(set) = self.sets.remove(&id).filter(|s| !s.is_inline()) else {
            self.set_ids.release(id);
            return;
        };
        let (backends, indexed) = (&set.backends, set.indexed);
        for (slot, backend) in backends.iter().enumerate() {
            log_delete(self.table.delete_slot(&set.slot(id, slot)));
            if indexed {
                log_delete(self.table.delete_index(&IndexKey { set_id: id, backend: *backend }));
            }
        }
        self.used_slots -= backends.len() as u64;
        if indexed {
            self.used_index -= backends.len() as u64;
        }
        self.set_ids.release(id);
    }
}
