//! An in-memory [`Table`] with the kernel maps' semantics that matter to
//! the writer (capacity limits, idempotent deletes), for unit tests of the
//! diff and update protocol without privileges.

use std::collections::BTreeMap;

use svc_common::{Backend4, BackendIndexKey, Frontend, FrontendKey4, ServiceMeta, SlotKey};

use super::table::{Capacity, Table, TableDump, TableError};

/// Every operation, in order, so tests can check the update protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// put_frontend.
    PutFrontend(FrontendKey4, Frontend),
    /// delete_frontend.
    DeleteFrontend(FrontendKey4),
    /// put_slot.
    PutSlot(SlotKey, Backend4),
    /// delete_slot.
    DeleteSlot(SlotKey),
    /// put_index.
    PutIndex(BackendIndexKey),
    /// delete_index.
    DeleteIndex(BackendIndexKey),
    /// put_meta.
    PutMeta(u32),
    /// delete_meta.
    DeleteMeta(u32),
    /// synchronize: a grace period.
    Grace,
}

/// Maps held in `BTreeMap`s.
#[derive(Debug, Clone)]
pub(crate) struct MemoryTable {
    /// SVC_FRONTENDS.
    pub frontends: BTreeMap<FrontendKey4, Frontend>,
    /// SVC_BACKENDS.
    pub slots: BTreeMap<SlotKey, Backend4>,
    /// SVC_BE_INDEX.
    pub index: BTreeMap<BackendIndexKey, u32>,
    /// SVC_META.
    pub meta: BTreeMap<u32, ServiceMeta>,
    /// Capacities.
    pub capacity: Capacity,
    /// Operation log.
    pub ops: Vec<Op>,
    /// Inserts into this map fail (as the kernel's would, e.g. ENOMEM),
    /// to exercise rollbacks the capacity check cannot predict.
    pub failing_map: Option<&'static str>,
}

impl MemoryTable {
    /// Empty maps with the given capacities.
    pub(crate) fn new(capacity: Capacity) -> Self {
        Self {
            frontends: BTreeMap::new(),
            slots: BTreeMap::new(),
            index: BTreeMap::new(),
            meta: BTreeMap::new(),
            capacity,
            ops: Vec::new(),
            failing_map: None,
        }
    }
}

fn put<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    cap: u32,
    name: &'static str,
    failing: Option<&'static str>,
    k: K,
    v: V,
) -> Result<(), TableError> {
    if failing == Some(name) {
        return Err(TableError { map: name, op: "insert", detail: "injected failure (ENOMEM)".into(), full: false });
    }
    if !map.contains_key(&k) && map.len() >= cap as usize {
        return Err(TableError { map: name, op: "insert", detail: "map full (E2BIG)".into(), full: true });
    }
    map.insert(k, v);
    Ok(())
}

impl Table for MemoryTable {
    fn put_frontend(&mut self, key: &FrontendKey4, value: &Frontend) -> Result<(), TableError> {
        put(&mut self.frontends, self.capacity.frontends, "SVC_FRONTENDS", self.failing_map, *key, *value)?;
        self.ops.push(Op::PutFrontend(*key, *value));
        Ok(())
    }
    fn delete_frontend(&mut self, key: &FrontendKey4) -> Result<(), TableError> {
        self.frontends.remove(key);
        self.ops.push(Op::DeleteFrontend(*key));
        Ok(())
    }
    fn put_slot(&mut self, key: &SlotKey, backend: &Backend4) -> Result<(), TableError> {
        put(&mut self.slots, self.capacity.slots, "SVC_BACKENDS", self.failing_map, *key, *backend)?;
        self.ops.push(Op::PutSlot(*key, *backend));
        Ok(())
    }
    fn delete_slot(&mut self, key: &SlotKey) -> Result<(), TableError> {
        self.slots.remove(key);
        self.ops.push(Op::DeleteSlot(*key));
        Ok(())
    }
    fn put_index(&mut self, key: &BackendIndexKey, slot: u32) -> Result<(), TableError> {
        put(&mut self.index, self.capacity.index, "SVC_BE_INDEX", self.failing_map, *key, slot)?;
        self.ops.push(Op::PutIndex(*key));
        Ok(())
    }
    fn delete_index(&mut self, key: &BackendIndexKey) -> Result<(), TableError> {
        self.index.remove(key);
        self.ops.push(Op::DeleteIndex(*key));
        Ok(())
    }
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError> {
        put(&mut self.meta, self.capacity.meta, "SVC_META", self.failing_map, svc_id, *meta)?;
        self.ops.push(Op::PutMeta(svc_id));
        Ok(())
    }
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError> {
        self.meta.remove(&svc_id);
        self.ops.push(Op::DeleteMeta(svc_id));
        Ok(())
    }
    fn synchronize(&mut self) -> Result<(), TableError> {
        self.ops.push(Op::Grace);
        Ok(())
    }
    fn dump(&self) -> Result<TableDump, TableError> {
        Ok(TableDump {
            frontends: self.frontends.iter().map(|(k, v)| (*k, *v)).collect(),
            slots: self.slots.iter().map(|(k, v)| (*k, *v)).collect(),
            index: self.index.iter().map(|(k, v)| (*k, *v)).collect(),
            meta: self.meta.iter().map(|(k, v)| (*k, *v)).collect(),
        })
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
