//! An in-memory [`Table`] with the kernel maps' semantics that matter to
//! the writer (capacity limits, idempotent deletes), for unit tests of the
//! diff and update protocol without privileges.

use std::collections::BTreeMap;

use svc_common::ServiceMeta;

use super::{
    family::{Backend, Family, FrontendKey, FrontendValue, IndexKey, RevKey, SlotRef},
    table::{Capacity, Table, TableDump, TableError},
};

/// Every operation, in order, so tests can check the update protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// put_frontend.
    PutFrontend(FrontendKey, FrontendValue),
    /// delete_frontend.
    DeleteFrontend(FrontendKey),
    /// put_slot.
    PutSlot(SlotRef, Backend),
    /// delete_slot.
    DeleteSlot(SlotRef),
    /// put_index.
    PutIndex(IndexKey),
    /// delete_index.
    DeleteIndex(IndexKey),
    /// put_meta.
    PutMeta(u32),
    /// delete_meta.
    DeleteMeta(u32),
    /// ask_grace: a grace period asked for.
    GraceAsked,
    /// A grace period ended (at once when asked, unless graces are held).
    Grace,
}

/// Maps held in `BTreeMap`s, both families in one (each family's map has
/// the capacity; a family's entries count against it alone, as in the
/// kernel).
#[derive(Debug, Clone)]
pub(crate) struct MemoryTable {
    /// SVC_FRONTENDS and SVC_FRONTENDS6.
    pub frontends: BTreeMap<FrontendKey, FrontendValue>,
    /// SVC_BACKENDS and SVC_BACKENDS6.
    pub slots: BTreeMap<SlotRef, Backend>,
    /// SVC_BE_INDEX and SVC_BE_INDEX6.
    pub index: BTreeMap<IndexKey, u32>,
    /// SVC_META.
    pub meta: BTreeMap<u32, ServiceMeta>,
    /// SVC_BE_REV and SVC_BE_REV6.
    pub reverse: BTreeMap<RevKey, Backend>,
    /// Capacities.
    pub capacity: Capacity,
    /// Operation log.
    pub ops: Vec<Op>,
    /// Inserts into this map fail (as the kernel's would, e.g. ENOMEM),
    /// to exercise rollbacks the capacity check cannot predict.
    pub failing_map: Option<&'static str>,
    /// Frontend deletes fail (best-effort deletes the writer repairs).
    pub failing_frontend_deletes: bool,
    /// Reverse-owner inserts that succeed before the rest fail (ENOMEM):
    /// a batch the kernel stops halfway through.
    pub reverse_inserts_left: Option<usize>,
    /// Grace periods asked for end only when the writer waits for them or
    /// the test ends them ([`Self::end_graces`]), as on a busy node where
    /// one outlasts the next batch.
    pub hold_graces: bool,
    graces_asked: u64,
    graces_ended: u64,
    stamped: bool,
}

impl MemoryTable {
    /// Empty maps with the given capacities.
    pub(crate) fn new(capacity: Capacity) -> Self {
        Self {
            frontends: BTreeMap::new(),
            slots: BTreeMap::new(),
            index: BTreeMap::new(),
            meta: BTreeMap::new(),
            reverse: BTreeMap::new(),
            capacity,
            ops: Vec::new(),
            failing_map: None,
            failing_frontend_deletes: false,
            reverse_inserts_left: None,
            hold_graces: false,
            graces_asked: 0,
            graces_ended: 0,
            stamped: false,
        }
    }

    /// Ends every grace period asked for.
    pub(crate) fn end_graces(&mut self) {
        self.end_graces_through(self.graces_asked);
    }

    /// Ends grace periods up to number `n`.
    pub(crate) fn end_graces_through(&mut self, n: u64) {
        if self.graces_ended < n.min(self.graces_asked) {
            self.graces_ended = n.min(self.graces_asked);
            self.ops.push(Op::Grace);
        }
    }
}

fn put<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    (cap, name, family): (u32, &'static str, fn(&K) -> Family),
    failing: Option<&'static str>,
    k: K,
    v: V,
) -> Result<(), TableError> {
    if failing == Some(name) {
        return Err(TableError { map: name, op: "insert", detail: "injected failure (ENOMEM)".into(), full: false });
    }
    let used = map.keys().filter(|key| family(key) == family(&k)).count();
    if !map.contains_key(&k) && used >= cap as usize {
        return Err(TableError { map: name, op: "insert", detail: "map full (E2BIG)".into(), full: true });
    }
    map.insert(k, v);
    Ok(())
}

impl Table for MemoryTable {
    fn put_frontend(&mut self, key: &FrontendKey, value: &FrontendValue) -> Result<(), TableError> {
        let map = (self.capacity.frontends, "SVC_FRONTENDS", FrontendKey::family as fn(&FrontendKey) -> Family);
        put(&mut self.frontends, map, self.failing_map, *key, *value)?;
        self.ops.push(Op::PutFrontend(*key, *value));
        Ok(())
    }
    fn delete_frontend(&mut self, key: &FrontendKey) -> Result<(), TableError> {
        if self.failing_frontend_deletes {
            return Err(TableError {
                map: "SVC_FRONTENDS",
                op: "delete",
                detail: "injected failure".into(),
                full: false,
            });
        }
        self.frontends.remove(key);
        self.ops.push(Op::DeleteFrontend(*key));
        Ok(())
    }
    fn put_slot(&mut self, key: &SlotRef, backend: &Backend) -> Result<(), TableError> {
        let map = (self.capacity.slots, "SVC_BACKENDS", (|k: &SlotRef| k.family) as fn(&SlotRef) -> Family);
        put(&mut self.slots, map, self.failing_map, *key, *backend)?;
        self.ops.push(Op::PutSlot(*key, *backend));
        Ok(())
    }
    fn delete_slot(&mut self, key: &SlotRef) -> Result<(), TableError> {
        self.slots.remove(key);
        self.ops.push(Op::DeleteSlot(*key));
        Ok(())
    }
    fn put_index(&mut self, key: &IndexKey, slot: u32) -> Result<(), TableError> {
        let map = (self.capacity.index, "SVC_BE_INDEX", (|k: &IndexKey| k.backend.family()) as fn(&IndexKey) -> Family);
        put(&mut self.index, map, self.failing_map, *key, slot)?;
        self.ops.push(Op::PutIndex(*key));
        Ok(())
    }
    fn delete_index(&mut self, key: &IndexKey) -> Result<(), TableError> {
        self.index.remove(key);
        self.ops.push(Op::DeleteIndex(*key));
        Ok(())
    }
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError> {
        let map = (self.capacity.meta, "SVC_META", (|_: &u32| Family::V4) as fn(&u32) -> Family);
        put(&mut self.meta, map, self.failing_map, svc_id, *meta)?;
        self.ops.push(Op::PutMeta(svc_id));
        Ok(())
    }
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError> {
        self.meta.remove(&svc_id);
        self.ops.push(Op::DeleteMeta(svc_id));
        Ok(())
    }
    // (Not in `ops`: the frontend/set protocol tests read that log.)
    fn put_reverse(&mut self, key: &RevKey, frontend: &Backend) -> Result<(), TableError> {
        let family = |k: &RevKey| match k {
            RevKey::V4(_) => Family::V4,
            RevKey::V6(_) => Family::V6,
        };
        let map = (self.capacity.reverse, "SVC_BE_REV", family as fn(&RevKey) -> Family);
        if let Some(left) = &mut self.reverse_inserts_left {
            if *left == 0 {
                return Err(TableError {
                    map: map.1,
                    op: "insert",
                    detail: "injected failure (ENOMEM)".into(),
                    full: false,
                });
            }
            *left -= 1;
        }
        put(&mut self.reverse, map, self.failing_map, *key, *frontend)
    }
    fn delete_reverse(&mut self, key: &RevKey) -> Result<(), TableError> {
        self.reverse.remove(key);
        Ok(())
    }
    fn ask_grace(&mut self) -> Result<u64, TableError> {
        self.graces_asked += 1;
        self.stamped = false;
        self.ops.push(Op::GraceAsked);
        if !self.hold_graces {
            self.end_graces();
        }
        Ok(self.graces_asked)
    }
    fn graces_asked(&self) -> u64 {
        self.graces_asked
    }
    fn mark_stamped(&mut self) {
        self.stamped = true;
    }
    fn stamped_since_ask(&self) -> bool {
        self.stamped
    }
    fn graces_ended(&self) -> u64 {
        self.graces_ended
    }
    fn wait_grace(&mut self, n: u64) -> Result<(), TableError> {
        assert!(n <= self.graces_asked, "waiting for grace period {n}, never asked for");
        // The grace period serving `n` serves every request before it.
        self.end_graces_through(n);
        Ok(())
    }
    fn grace_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    fn dump(&self) -> Result<TableDump, TableError> {
        Ok(TableDump {
            frontends: self.frontends.iter().map(|(k, v)| (*k, *v)).collect(),
            slots: self.slots.iter().map(|(k, v)| (*k, *v)).collect(),
            index: self.index.iter().map(|(k, v)| (*k, *v)).collect(),
            meta: self.meta.iter().map(|(k, v)| (*k, *v)).collect(),
            reverse: self.reverse.iter().map(|(k, v)| (*k, *v)).collect(),
        })
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
