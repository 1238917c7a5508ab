//! The writer's view of the maps: a handful of typed put/delete operations
//! on family-neutral types ([`super::family`]); each entry goes to its
//! family's map. The real implementation is [`super::maps::BpfMaps`]; unit
//! tests use [`super::memory::MemoryTable`], which enforces the same
//! capacities.

use std::sync::Arc;

use svc_common::ServiceMeta;

use super::family::{Backend, FrontendKey, FrontendValue, IndexKey, RevKey, SlotRef};

/// A failed map operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{map}: {op} failed: {detail}")]
pub(crate) struct TableError {
    /// Map name.
    pub map: &'static str,
    /// Operation.
    pub op: &'static str,
    /// Kernel's answer.
    pub detail: String,
    /// The map is full (E2BIG/ENOSPC/ENOMEM from an insert).
    pub full: bool,
}

/// When something was written, deleted or retired: the number of the last
/// grace period asked for before it ([`Table::stamp`]). A program may
/// still hold what was there before until a grace period asked for
/// *later* has ended; this type holds that rule, so that every user of a
/// stamp (key rewrites, retired sets, deleted reverse owners, UDP
/// removals) applies the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GraceStamp(u64);

impl GraceStamp {
    /// Whether the grace periods ended so far (`ended`:
    /// [`Table::graces_ended`]) cover it.
    pub(crate) fn is_covered(self, ended: u64) -> bool {
        ended > self.0
    }

    /// The first grace period that covers it.
    fn covering(self) -> u64 {
        self.0 + 1
    }
}

/// Everything in the writer-owned maps, for adopting pinned state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableDump {
    /// SVC_FRONTENDS and SVC_FRONTENDS6.
    pub frontends: Vec<(FrontendKey, FrontendValue)>,
    /// SVC_BACKENDS and SVC_BACKENDS6.
    pub slots: Vec<(SlotRef, Backend)>,
    /// SVC_BE_INDEX and SVC_BE_INDEX6.
    pub index: Vec<(IndexKey, u32)>,
    /// SVC_META.
    pub meta: Vec<(u32, ServiceMeta)>,
    /// SVC_BE_REV and SVC_BE_REV6: backend -> owner frontend.
    pub reverse: Vec<(RevKey, Backend)>,
}

/// Capacities of the writer-owned maps. The writer counts both families
/// against one capacity (each family's map is created with it: one flag
/// bounds them together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    /// SVC_FRONTENDS max_entries.
    pub frontends: u32,
    /// SVC_BACKENDS max_entries.
    pub slots: u32,
    /// SVC_BE_INDEX max_entries.
    pub index: u32,
    /// SVC_META max_entries.
    pub meta: u32,
    /// SVC_BE_REV max_entries.
    pub reverse: u32,
}

/// Typed operations on the maps the agent writes. Deleting a missing key
/// succeeds (deletes are idempotent).
pub(crate) trait Table {
    /// Inserts or replaces a frontend (one atomic map update).
    fn put_frontend(&mut self, key: &FrontendKey, value: &FrontendValue) -> Result<(), TableError>;
    /// Removes a frontend.
    fn delete_frontend(&mut self, key: &FrontendKey) -> Result<(), TableError>;
    /// Writes one backend slot (`backend` of the slot's family).
    fn put_slot(&mut self, key: &SlotRef, backend: &Backend) -> Result<(), TableError>;
    /// Removes one backend slot.
    fn delete_slot(&mut self, key: &SlotRef) -> Result<(), TableError>;
    /// Writes the slots of a new set, all of one family (one batch where
    /// the kernel allows).
    fn put_slots(&mut self, slots: &[(SlotRef, Backend)]) -> Result<(), TableError> {
        slots.iter().try_for_each(|(key, backend)| self.put_slot(key, backend))
    }
    /// Writes one membership entry.
    fn put_index(&mut self, key: &IndexKey, slot: u32) -> Result<(), TableError>;
    /// Removes one membership entry.
    fn delete_index(&mut self, key: &IndexKey) -> Result<(), TableError>;
    /// Writes a service port's names.
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError>;
    /// Removes a service port's names.
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError>;
    /// Names `frontend` (an address of the same family) as the reverse
    /// owner of `key`'s backend (`svc_common::reverse`).
    fn put_reverse(&mut self, key: &RevKey, frontend: &Backend) -> Result<(), TableError>;
    /// Writes reverse owners, all of one family (one batch where the
    /// kernel allows). On an error, how many of the first pairs, in order,
    /// were written before it (none where the call failed as a whole), and
    /// the error.
    fn put_reverses(&mut self, pairs: &[(RevKey, Backend)]) -> Result<(), (usize, TableError)> {
        for (written, (key, frontend)) in pairs.iter().enumerate() {
            self.put_reverse(key, frontend).map_err(|e| (written, e))?;
        }
        Ok(())
    }
    /// Removes a reverse owner.
    fn delete_reverse(&mut self, key: &RevKey) -> Result<(), TableError>;
    /// Asks for an RCU grace period without waiting for it, and returns
    /// its number (1, 2, ... in the order asked). Grace period `n` has
    /// ended once every program run that started before the n-th request
    /// has finished. Clears the mark of [`Self::mark_stamped`] (every
    /// implementation must: the next batch asks only for new stamps).
    fn ask_grace(&mut self) -> Result<u64, TableError>;
    /// The number of the last grace period asked for (0: none yet). A
    /// write stamped with it is covered by any later grace period.
    fn graces_asked(&self) -> u64;
    /// The number of the last grace period that has ended.
    fn graces_ended(&self) -> u64;
    /// Returns once grace period `n` (already asked for) has ended.
    fn wait_grace(&mut self, n: u64) -> Result<(), TableError>;
    /// Notified whenever a grace period ends (`None`: this table's grace
    /// periods end only when waited for).
    fn grace_signal(&self) -> Option<Arc<tokio::sync::Notify>>;
    /// Records that something was written, deleted or retired that needs
    /// a grace period; cleared by [`Self::ask_grace`].
    fn mark_stamped(&mut self);
    /// Whether something was stamped since the last grace period was asked
    /// for (the end of a batch then asks for one).
    fn stamped_since_ask(&self) -> bool;
    /// Stamps something written, deleted or retired now (it needs a grace
    /// period).
    fn stamp(&mut self) -> GraceStamp {
        self.mark_stamped();
        self.current_stamp()
    }
    /// The stamp of now, for what rides on writes stamped already (a
    /// batch's UDP removals).
    fn current_stamp(&self) -> GraceStamp {
        GraceStamp(self.graces_asked())
    }
    /// Returns once every program run that started before the call has
    /// finished.
    fn synchronize(&mut self) -> Result<(), TableError> {
        let n = self.ask_grace()?;
        self.wait_grace(n)
    }
    /// Returns once `stamp` is covered: no program still runs that could
    /// have read what was there before.
    fn wait_grace_after(&mut self, stamp: GraceStamp) -> Result<(), TableError> {
        if stamp.is_covered(self.graces_ended()) {
            return Ok(());
        }
        if self.graces_asked() <= stamp.0 {
            self.ask_grace()?;
        }
        self.wait_grace(stamp.covering())
    }
    /// Reads everything back.
    fn dump(&self) -> Result<TableDump, TableError>;
    /// Map capacities.
    fn capacity(&self) -> Capacity;
}
