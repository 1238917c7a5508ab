//! The writer's view of the maps: a handful of typed put/delete operations.
//! The real implementation is [`super::maps::BpfMaps`]; unit tests use
//! [`super::memory::MemoryTable`], which enforces the same capacities.

use svc_common::{Backend4, BackendIndexKey, Frontend, FrontendKey4, ServiceMeta, SlotKey};

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

/// Everything in the writer-owned maps, for adopting pinned state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableDump {
    /// SVC_FRONTENDS.
    pub frontends: Vec<(FrontendKey4, Frontend)>,
    /// SVC_BACKENDS.
    pub slots: Vec<(SlotKey, Backend4)>,
    /// SVC_BE_INDEX.
    pub index: Vec<(BackendIndexKey, u32)>,
    /// SVC_META.
    pub meta: Vec<(u32, ServiceMeta)>,
}

/// Capacities of the writer-owned maps.
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
}

/// Typed operations on the maps the agent writes. Deleting a missing key
/// succeeds (deletes are idempotent).
pub(crate) trait Table {
    /// Inserts or replaces a frontend (one atomic map update).
    fn put_frontend(&mut self, key: &FrontendKey4, value: &Frontend) -> Result<(), TableError>;
    /// Removes a frontend.
    fn delete_frontend(&mut self, key: &FrontendKey4) -> Result<(), TableError>;
    /// Writes one backend slot.
    fn put_slot(&mut self, key: &SlotKey, backend: &Backend4) -> Result<(), TableError>;
    /// Removes one backend slot.
    fn delete_slot(&mut self, key: &SlotKey) -> Result<(), TableError>;
    /// Writes the slots of a new set (one batch where the kernel allows).
    fn put_slots(&mut self, slots: &[(SlotKey, Backend4)]) -> Result<(), TableError> {
        slots.iter().try_for_each(|(key, backend)| self.put_slot(key, backend))
    }
    /// Writes one membership entry.
    fn put_index(&mut self, key: &BackendIndexKey, slot: u32) -> Result<(), TableError>;
    /// Removes one membership entry.
    fn delete_index(&mut self, key: &BackendIndexKey) -> Result<(), TableError>;
    /// Writes a service port's names.
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError>;
    /// Removes a service port's names.
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError>;
    /// Returns once every program run that started before the call has
    /// finished (an RCU grace period).
    fn synchronize(&mut self) -> Result<(), TableError>;
    /// Reads everything back.
    fn dump(&self) -> Result<TableDump, TableError>;
    /// Map capacities.
    fn capacity(&self) -> Capacity;
}
