//! The pinned maps, typed: written by the writer through [`Table`], read by
//! `status`.

use std::io;

use aya::{
    Ebpf,
    maps::{ArrayOfMaps, HashMap, IterableMap as _, Map, MapData, MapError},
};
use svc_common::{
    AffinityKey, AffinityValue, AffinityValue6, Backend4, Backend6, BackendIndexKey, BackendIndexKey6, BackendRevKey,
    BackendRevKey6, Frontend, Frontend6, FrontendKey4, FrontendKey6, RevNatKey, RevNatKey6, RevNatValue, ServiceMeta,
    SlotKey, names,
};

use super::{
    family::{Backend, Family, FrontendKey, FrontendValue, IndexKey, RevKey, SlotRef},
    grace::GraceThread,
    pins::PinLayout,
    table::{Capacity, Table, TableDump, TableError},
};
use crate::error::{Error, Result};

/// The maps the writer owns.
#[derive(Debug)]
pub(crate) struct BpfMaps {
    frontends: HashMap<MapData, FrontendKey4, Frontend>,
    slots: HashMap<MapData, SlotKey, Backend4>,
    index: HashMap<MapData, BackendIndexKey, u32>,
    frontends6: HashMap<MapData, FrontendKey6, Frontend6>,
    slots6: HashMap<MapData, SlotKey, Backend6>,
    index6: HashMap<MapData, BackendIndexKey6, u32>,
    meta: HashMap<MapData, u32, ServiceMeta>,
    reverse: HashMap<MapData, BackendRevKey, Backend4>,
    reverse6: HashMap<MapData, BackendRevKey6, Backend6>,
    capacity: Capacity,
    /// The thread that waits out grace periods on SVC_GRACE (only a
    /// writer has one).
    grace: Option<GraceThread>,
    /// Something was stamped since the last grace period was asked for.
    stamped: bool,
}

fn typed<K: aya::Pod, V: aya::Pod>(map: Map, name: &str) -> Result<HashMap<MapData, K, V>> {
    HashMap::try_from(map).map_err(|e| Error::map(name, e))
}

fn max_entries<K: aya::Pod, V: aya::Pod>(map: &HashMap<MapData, K, V>, name: &str) -> Result<u32> {
    let info = map.map().info().map_err(|e| Error::map(name, e))?;
    Ok(info.max_entries())
}

impl BpfMaps {
    /// Takes the writer's maps out of a freshly loaded object.
    pub(crate) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| Error::MissingInObject(format!("map {name}")));
        let outer = ArrayOfMaps::try_from(take(names::GRACE)?).map_err(|e| Error::map(names::GRACE, e))?;
        let Map::Array(inner) = take(names::GRACE_INNER)? else {
            return Err(Error::MissingInObject(format!("array map {}", names::GRACE_INNER)));
        };
        let mut maps = Self::from_maps(&mut take)?;
        let thread = GraceThread::spawn(outer, inner).map_err(|e| Error::io("starting the grace-period thread", e))?;
        maps.grace = Some(thread);
        Ok(maps)
    }

    /// Opens the pinned maps (agent not necessarily running).
    pub(crate) fn open_pinned(layout: &PinLayout) -> Result<Self> {
        Self::from_maps(&mut |name| open_pinned_map(layout, name))
    }

    fn from_maps(take: &mut impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let frontends = typed(take(names::FRONTENDS)?, names::FRONTENDS)?;
        let slots = typed(take(names::BACKENDS)?, names::BACKENDS)?;
        let index = typed(take(names::BACKEND_INDEX)?, names::BACKEND_INDEX)?;
        let frontends6 = typed(take(names::FRONTENDS6)?, names::FRONTENDS6)?;
        let slots6 = typed(take(names::BACKENDS6)?, names::BACKENDS6)?;
        let index6 = typed(take(names::BACKEND_INDEX6)?, names::BACKEND_INDEX6)?;
        let meta = typed(take(names::META)?, names::META)?;
        let reverse = typed(take(names::BACKEND_REV)?, names::BACKEND_REV)?;
        let reverse6 = typed(take(names::BACKEND_REV6)?, names::BACKEND_REV6)?;
        // Both families' maps are created with the same sizes; the smaller
        // one bounds them (pins from an older agent may differ).
        let capacity = Capacity {
            frontends: max_entries(&frontends, names::FRONTENDS)?.min(max_entries(&frontends6, names::FRONTENDS6)?),
            slots: max_entries(&slots, names::BACKENDS)?.min(max_entries(&slots6, names::BACKENDS6)?),
            index: max_entries(&index, names::BACKEND_INDEX)?.min(max_entries(&index6, names::BACKEND_INDEX6)?),
            meta: max_entries(&meta, names::META)?,
            reverse: max_entries(&reverse, names::BACKEND_REV)?.min(max_entries(&reverse6, names::BACKEND_REV6)?),
        };
        Ok(Self {
            frontends,
            slots,
            index,
            frontends6,
            slots6,
            index6,
            meta,
            reverse,
            reverse6,
            capacity,
            grace: None,
            stamped: false,
        })
    }
}

impl BpfMaps {
    fn grace(&self) -> Result<&GraceThread, TableError> {
        self.grace.as_ref().ok_or_else(|| TableError {
            map: names::GRACE,
            op: "update",
            detail: "maps opened read-only (no grace map)".into(),
            full: false,
        })
    }
}

/// Opens one pinned map.
pub(crate) fn open_pinned_map(layout: &PinLayout, name: &str) -> Result<Map> {
    let path = layout.map(name);
    if !path.exists() {
        return Err(Error::NotPinned(layout.root().to_owned()));
    }
    let data = MapData::from_pin(&path).map_err(|e| Error::map(name, e))?;
    Map::from_map_data(data).map_err(|e| Error::map(name, e))
}

/// The LRU maps the programs write, read for `status`.
#[derive(Debug)]
pub(crate) struct ProgramMaps {
    /// SVC_AFFINITY.
    pub affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    /// SVC_REVNAT_SK.
    pub revnat: HashMap<MapData, RevNatKey, RevNatValue>,
    /// SVC_AFFINITY6.
    pub affinity6: HashMap<MapData, AffinityKey, AffinityValue6>,
    /// SVC_REVNAT6.
    pub revnat6: HashMap<MapData, RevNatKey6, Backend6>,
    /// SVC_FLOWS.
    pub flows: HashMap<MapData, svc_common::FlowKey4, svc_common::FlowValue4>,
    /// SVC_DEVICES (written by the loader, read here).
    pub devices: HashMap<MapData, u32, svc_common::DeviceInfo>,
    /// SVC_EXEMPT (written by `dataplane::exempt`, read here).
    pub exempt: HashMap<MapData, u64, svc_common::ExemptPod>,
}

impl ProgramMaps {
    /// Opens the pinned LRU maps.
    pub(crate) fn open_pinned(layout: &PinLayout) -> Result<Self> {
        Ok(Self {
            affinity: typed(open_pinned_map(layout, names::AFFINITY)?, names::AFFINITY)?,
            revnat: typed(open_pinned_map(layout, names::REV_NAT)?, names::REV_NAT)?,
            affinity6: typed(open_pinned_map(layout, names::AFFINITY6)?, names::AFFINITY6)?,
            revnat6: typed(open_pinned_map(layout, names::REV_NAT6)?, names::REV_NAT6)?,
            flows: typed(open_pinned_map(layout, names::FLOWS)?, names::FLOWS)?,
            devices: typed(open_pinned_map(layout, names::DEVICES)?, names::DEVICES)?,
            exempt: typed(open_pinned_map(layout, names::EXEMPT)?, names::EXEMPT)?,
        })
    }
}

pub(super) fn table_error(map: &'static str, op: &'static str, err: &MapError) -> TableError {
    let errno = match err {
        MapError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    let full = matches!(errno, Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM));
    let detail = match errno {
        Some(n) => format!("{err} ({})", io::Error::from_raw_os_error(n)),
        None => err.to_string(),
    };
    TableError { map, op, detail, full }
}

fn ignore_missing(result: Result<(), MapError>, map: &'static str) -> Result<(), TableError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(table_error(map, "delete", &e)),
    }
}

fn dump_map<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, TableError> {
    map.iter().collect::<Result<Vec<_>, _>>().map_err(|e| table_error(name, "iterate", &e))
}

/// The `(set_id, backend)` index key in its family's map.
fn index_keys(key: &IndexKey) -> std::result::Result<BackendIndexKey, BackendIndexKey6> {
    match key.backend {
        Backend::V4(backend) => Ok(BackendIndexKey { set_id: key.set_id, backend }),
        Backend::V6(backend) => Err(BackendIndexKey6 { set_id: key.set_id, backend }),
    }
}

/// A slot write whose backend is not of the slot's family: the writer
/// never does this.
fn mixed_families(map: &'static str) -> TableError {
    TableError { map, op: "insert", detail: "backend of the other address family".into(), full: false }
}

/// One BPF_MAP_UPDATE_BATCH syscall for many entries.
fn update_batch<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), (usize, TableError)>
where
    K: aya::Pod + bytemuck::Pod,
    V: aya::Pod + bytemuck::Pod,
{
    use std::os::fd::AsFd as _;
    let fd = map.map().fd().as_fd();
    crate::sys::map_update_batch(fd, bytemuck::cast_slice(keys), bytemuck::cast_slice(values), keys.len() as u32)
        .map_err(|(written, e)| {
            let error = TableError {
                map: name,
                op: "insert",
                full: matches!(e.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)),
                detail: e.to_string(),
            };
            (written as usize, error)
        })
}

/// The pairs as one family's keys and values (`of` picks them out), or
/// `None` if any pair is of another family.
fn one_family<P, K, V>(pairs: &[P], of: impl Fn(&P) -> Option<(K, V)>) -> Option<(Vec<K>, Vec<V>)> {
    pairs.iter().map(of).collect::<Option<Vec<_>>>().map(|kv| kv.into_iter().unzip())
}

impl Table for BpfMaps {
    fn put_frontend(&mut self, key: &FrontendKey, value: &FrontendValue) -> Result<(), TableError> {
        match (key, value) {
            (FrontendKey::V4(k), FrontendValue::V4(v)) => {
                self.frontends.insert(k, v, 0).map_err(|e| table_error(names::FRONTENDS, "insert", &e))
            }
            (FrontendKey::V6(k), FrontendValue::V6(v)) => {
                self.frontends6.insert(k, v, 0).map_err(|e| table_error(names::FRONTENDS6, "insert", &e))
            }
            _ => Err(mixed_families(names::FRONTENDS)),
        }
    }
    fn delete_frontend(&mut self, key: &FrontendKey) -> Result<(), TableError> {
        match key {
            FrontendKey::V4(k) => ignore_missing(self.frontends.remove(k), names::FRONTENDS),
            FrontendKey::V6(k) => ignore_missing(self.frontends6.remove(k), names::FRONTENDS6),
        }
    }
    fn put_slot(&mut self, key: &SlotRef, backend: &Backend) -> Result<(), TableError> {
        match (key.family, backend) {
            (Family::V4, Backend::V4(b)) => {
                self.slots.insert(key.key, b, 0).map_err(|e| table_error(names::BACKENDS, "insert", &e))
            }
            (Family::V6, Backend::V6(b)) => {
                self.slots6.insert(key.key, b, 0).map_err(|e| table_error(names::BACKENDS6, "insert", &e))
            }
            _ => Err(mixed_families(names::BACKENDS)),
        }
    }
    fn delete_slot(&mut self, key: &SlotRef) -> Result<(), TableError> {
        match key.family {
            Family::V4 => ignore_missing(self.slots.remove(&key.key), names::BACKENDS),
            Family::V6 => ignore_missing(self.slots6.remove(&key.key), names::BACKENDS6),
        }
    }
    /// One BPF_MAP_UPDATE_BATCH syscall per set instead of one per slot:
    /// cold programming writes hundreds of thousands of slots.
    fn put_slots(&mut self, slots: &[(SlotRef, Backend)]) -> Result<(), TableError> {
        let v4 = one_family(slots, |slot| match slot {
            (k, Backend::V4(b)) if k.family == Family::V4 => Some((k.key, *b)),
            _ => None,
        });
        if let Some((keys, values)) = v4 {
            return update_batch(&self.slots, names::BACKENDS, &keys, &values).map_err(|(_, e)| e);
        }
        let v6 = one_family(slots, |slot| match slot {
            (k, Backend::V6(b)) if k.family == Family::V6 => Some((k.key, *b)),
            _ => None,
        });
        match v6 {
            Some((keys, values)) => update_batch(&self.slots6, names::BACKENDS6, &keys, &values).map_err(|(_, e)| e),
            None => Err(mixed_families(names::BACKENDS)),
        }
    }
    fn put_index(&mut self, key: &IndexKey, slot: u32) -> Result<(), TableError> {
        match index_keys(key) {
            Ok(k) => self.index.insert(k, slot, 0).map_err(|e| table_error(names::BACKEND_INDEX, "insert", &e)),
            Err(k) => self.index6.insert(k, slot, 0).map_err(|e| table_error(names::BACKEND_INDEX6, "insert", &e)),
        }
    }
    fn delete_index(&mut self, key: &IndexKey) -> Result<(), TableError> {
        match index_keys(key) {
            Ok(k) => ignore_missing(self.index.remove(&k), names::BACKEND_INDEX),
            Err(k) => ignore_missing(self.index6.remove(&k), names::BACKEND_INDEX6),
        }
    }
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError> {
        self.meta.insert(svc_id, meta, 0).map_err(|e| table_error(names::META, "insert", &e))
    }
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError> {
        ignore_missing(self.meta.remove(&svc_id), names::META)
    }
    fn put_reverse(&mut self, key: &RevKey, frontend: &Backend) -> Result<(), TableError> {
        match (key, frontend) {
            (RevKey::V4(k), Backend::V4(f)) => {
                self.reverse.insert(k, f, 0).map_err(|e| table_error(names::BACKEND_REV, "insert", &e))
            }
            (RevKey::V6(k), Backend::V6(f)) => {
                self.reverse6.insert(k, f, 0).map_err(|e| table_error(names::BACKEND_REV6, "insert", &e))
            }
            _ => Err(mixed_families(names::BACKEND_REV)),
        }
    }
    /// One BPF_MAP_UPDATE_BATCH syscall for the lot: a cold start writes
    /// an entry per backend.
    fn put_reverses(&mut self, pairs: &[(RevKey, Backend)]) -> Result<(), (usize, TableError)> {
        let v4 = one_family(pairs, |pair| match pair {
            (RevKey::V4(k), Backend::V4(f)) => Some((*k, *f)),
            _ => None,
        });
        if let Some((keys, values)) = v4 {
            return update_batch(&self.reverse, names::BACKEND_REV, &keys, &values);
        }
        let v6 = one_family(pairs, |pair| match pair {
            (RevKey::V6(k), Backend::V6(f)) => Some((*k, *f)),
            _ => None,
        });
        match v6 {
            Some((keys, values)) => update_batch(&self.reverse6, names::BACKEND_REV6, &keys, &values),
            None => Err((0, mixed_families(names::BACKEND_REV))),
        }
    }
    fn delete_reverse(&mut self, key: &RevKey) -> Result<(), TableError> {
        match key {
            RevKey::V4(k) => ignore_missing(self.reverse.remove(k), names::BACKEND_REV),
            RevKey::V6(k) => ignore_missing(self.reverse6.remove(k), names::BACKEND_REV6),
        }
    }
    fn ask_grace(&mut self) -> Result<u64, TableError> {
        let n = self.grace()?.ask();
        self.stamped = false;
        Ok(n)
    }
    fn mark_stamped(&mut self) {
        self.stamped = true;
    }
    fn stamped_since_ask(&self) -> bool {
        self.stamped
    }
    fn graces_asked(&self) -> u64 {
        self.grace.as_ref().map_or(0, GraceThread::asked)
    }
    fn graces_ended(&self) -> u64 {
        self.grace.as_ref().map_or(0, GraceThread::ended)
    }
    fn wait_grace(&mut self, n: u64) -> Result<(), TableError> {
        self.grace()?.wait(n)
    }
    fn grace_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.grace.as_ref().map(GraceThread::signal)
    }
    fn dump(&self) -> Result<TableDump, TableError> {
        let mut frontends: Vec<(FrontendKey, FrontendValue)> = dump_map(&self.frontends, names::FRONTENDS)?
            .into_iter()
            .map(|(k, v)| (FrontendKey::V4(k), FrontendValue::V4(v)))
            .collect();
        frontends.extend(
            dump_map(&self.frontends6, names::FRONTENDS6)?
                .into_iter()
                .map(|(k, v)| (FrontendKey::V6(k), FrontendValue::V6(v))),
        );
        let mut slots: Vec<(SlotRef, Backend)> = dump_map(&self.slots, names::BACKENDS)?
            .into_iter()
            .map(|(key, b)| (SlotRef { family: Family::V4, key }, Backend::V4(b)))
            .collect();
        slots.extend(
            dump_map(&self.slots6, names::BACKENDS6)?
                .into_iter()
                .map(|(key, b)| (SlotRef { family: Family::V6, key }, Backend::V6(b))),
        );
        let mut index: Vec<(IndexKey, u32)> = dump_map(&self.index, names::BACKEND_INDEX)?
            .into_iter()
            .map(|(k, slot)| (IndexKey { set_id: k.set_id, backend: Backend::V4(k.backend) }, slot))
            .collect();
        index.extend(
            dump_map(&self.index6, names::BACKEND_INDEX6)?
                .into_iter()
                .map(|(k, slot)| (IndexKey { set_id: k.set_id, backend: Backend::V6(k.backend) }, slot)),
        );
        let mut reverse: Vec<(RevKey, Backend)> = dump_map(&self.reverse, names::BACKEND_REV)?
            .into_iter()
            .map(|(k, f)| (RevKey::V4(k), Backend::V4(f)))
            .collect();
        reverse.extend(
            dump_map(&self.reverse6, names::BACKEND_REV6)?.into_iter().map(|(k, f)| (RevKey::V6(k), Backend::V6(f))),
        );
        Ok(TableDump { frontends, slots, index, meta: dump_map(&self.meta, names::META)?, reverse })
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
