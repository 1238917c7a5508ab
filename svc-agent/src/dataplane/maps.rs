//! The pinned maps, typed: written by the writer through [`Table`], read by
//! `status`.

use std::io;

use aya::{
    Ebpf,
    maps::{ArrayOfMaps, HashMap, IterableMap as _, Map, MapData, MapError},
};
use svc_common::{
    AffinityKey, AffinityValue, Backend4, BackendIndexKey, Frontend, FrontendKey4, RevNatKey, RevNatValue, ServiceMeta,
    SlotKey, names,
};

use super::{
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
    meta: HashMap<MapData, u32, ServiceMeta>,
    capacity: Capacity,
    /// SVC_GRACE and the map stored in it (only a writer has them).
    grace: Option<(ArrayOfMaps<MapData>, MapData)>,
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
        let mut maps = Self::from_maps(
            take(names::FRONTENDS)?,
            take(names::BACKENDS)?,
            take(names::BACKEND_INDEX)?,
            take(names::META)?,
        )?;
        maps.grace = Some((outer, inner));
        Ok(maps)
    }

    /// Opens the pinned maps (agent not necessarily running).
    pub(crate) fn open_pinned(layout: &PinLayout) -> Result<Self> {
        Self::from_maps(
            open_pinned_map(layout, names::FRONTENDS)?,
            open_pinned_map(layout, names::BACKENDS)?,
            open_pinned_map(layout, names::BACKEND_INDEX)?,
            open_pinned_map(layout, names::META)?,
        )
    }

    fn from_maps(frontends: Map, slots: Map, index: Map, meta: Map) -> Result<Self> {
        let frontends = typed(frontends, names::FRONTENDS)?;
        let slots = typed(slots, names::BACKENDS)?;
        let index = typed(index, names::BACKEND_INDEX)?;
        let meta = typed(meta, names::META)?;
        let capacity = Capacity {
            frontends: max_entries(&frontends, names::FRONTENDS)?,
            slots: max_entries(&slots, names::BACKENDS)?,
            index: max_entries(&index, names::BACKEND_INDEX)?,
            meta: max_entries(&meta, names::META)?,
        };
        Ok(Self { frontends, slots, index, meta, capacity, grace: None })
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
}

impl ProgramMaps {
    /// Opens the pinned LRU maps.
    pub(crate) fn open_pinned(layout: &PinLayout) -> Result<Self> {
        Ok(Self {
            affinity: typed(open_pinned_map(layout, names::AFFINITY)?, names::AFFINITY)?,
            revnat: typed(open_pinned_map(layout, names::REV_NAT)?, names::REV_NAT)?,
        })
    }
}

fn table_error(map: &'static str, op: &'static str, err: &MapError) -> TableError {
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

impl Table for BpfMaps {
    fn put_frontend(&mut self, key: &FrontendKey4, value: &Frontend) -> Result<(), TableError> {
        self.frontends.insert(key, value, 0).map_err(|e| table_error(names::FRONTENDS, "insert", &e))
    }
    fn delete_frontend(&mut self, key: &FrontendKey4) -> Result<(), TableError> {
        ignore_missing(self.frontends.remove(key), names::FRONTENDS)
    }
    fn put_slot(&mut self, key: &SlotKey, backend: &Backend4) -> Result<(), TableError> {
        self.slots.insert(key, backend, 0).map_err(|e| table_error(names::BACKENDS, "insert", &e))
    }
    fn delete_slot(&mut self, key: &SlotKey) -> Result<(), TableError> {
        ignore_missing(self.slots.remove(key), names::BACKENDS)
    }
    /// One BPF_MAP_UPDATE_BATCH syscall per set instead of one per slot:
    /// cold programming writes hundreds of thousands of slots.
    fn put_slots(&mut self, slots: &[(SlotKey, Backend4)]) -> Result<(), TableError> {
        use std::os::fd::AsFd as _;
        let keys: Vec<SlotKey> = slots.iter().map(|(k, _)| *k).collect();
        let values: Vec<Backend4> = slots.iter().map(|(_, v)| *v).collect();
        let fd = self.slots.map().fd().as_fd();
        crate::sys::map_update_batch(fd, bytemuck::cast_slice(&keys), bytemuck::cast_slice(&values), slots.len() as u32)
            .map_err(|(_, e)| TableError {
                map: names::BACKENDS,
                op: "insert",
                full: matches!(e.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)),
                detail: e.to_string(),
            })
    }
    fn put_index(&mut self, key: &BackendIndexKey, slot: u32) -> Result<(), TableError> {
        self.index.insert(key, slot, 0).map_err(|e| table_error(names::BACKEND_INDEX, "insert", &e))
    }
    fn delete_index(&mut self, key: &BackendIndexKey) -> Result<(), TableError> {
        ignore_missing(self.index.remove(key), names::BACKEND_INDEX)
    }
    fn put_meta(&mut self, svc_id: u32, meta: &ServiceMeta) -> Result<(), TableError> {
        self.meta.insert(svc_id, meta, 0).map_err(|e| table_error(names::META, "insert", &e))
    }
    fn delete_meta(&mut self, svc_id: u32) -> Result<(), TableError> {
        ignore_missing(self.meta.remove(&svc_id), names::META)
    }
    /// `maybe_wait_bpf_programs()`: an update of a map-in-map returns only
    /// after an RCU grace period (every running program has finished).
    fn synchronize(&mut self) -> Result<(), TableError> {
        let Some((outer, inner)) = &mut self.grace else {
            return Err(TableError {
                map: names::GRACE,
                op: "update",
                detail: "maps opened read-only (no grace map)".into(),
                full: false,
            });
        };
        outer.set(0, inner, 0).map_err(|e| table_error(names::GRACE, "update", &e))
    }
    fn dump(&self) -> Result<TableDump, TableError> {
        Ok(TableDump {
            frontends: dump_map(&self.frontends, names::FRONTENDS)?,
            slots: dump_map(&self.slots, names::BACKENDS)?,
            index: dump_map(&self.index, names::BACKEND_INDEX)?,
            meta: dump_map(&self.meta, names::META)?,
        })
    }
    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
