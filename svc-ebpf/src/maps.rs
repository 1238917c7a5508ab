//! The pinned maps, as BTF map definitions so `bpftool map dump` prints
//! field names. Keys, values and default capacities live in `svc-common`;
//! the agent resizes them at load time. Layout and update protocol:
//! `docs/maps.md`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, SkStorage},
    macros::btf_map,
};
use svc_common::{
    AffinityKey, AffinityValue, AffinityValue6, Backend4, Backend6, BackendIndexKey, BackendIndexKey6, BackendRevKey,
    BackendRevKey6, Config, DeviceInfo, FlowKey4, FlowValue4, Frontend, Frontend6, FrontendKey4, FrontendKey6,
    RevNatKey, RevNatKey6, RevNatValue, ServiceMeta, SlotKey, SockXlat, SockXlat6, capacity,
};

/// No preallocation: unused capacity costs nothing. (Freed elements are
/// *not* kept until readers finish: since 6.1 the next insert on the same
/// CPU may reuse one at once; lb4.rs reads values with that in mind.)
const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
pub(crate) static SVC_FRONTENDS: HashMap<FrontendKey4, Frontend, { capacity::FRONTENDS as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_BACKENDS: HashMap<SlotKey, Backend4, { capacity::BACKENDS as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_BE_INDEX: HashMap<BackendIndexKey, u32, { capacity::BACKEND_INDEX as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_AFFINITY: LruHashMap<AffinityKey, AffinityValue, { capacity::AFFINITY as usize }> =
    LruHashMap::new();

#[btf_map]
pub(crate) static SVC_REVNAT_SK: LruHashMap<RevNatKey, RevNatValue, { capacity::REV_NAT as usize }> = LruHashMap::new();

/// Written and read by the agent only; defined here so that it is created,
/// pinned and typed (BTF) together with the others.
#[btf_map]
pub(crate) static SVC_META: HashMap<u32, ServiceMeta, { capacity::META as usize }, NO_PREALLOC> = HashMap::new();

#[btf_map]
pub(crate) static SVC_CONFIG: Array<Config, 1> = Array::new();

/// Connected sockets remember their translation in their own storage:
/// reading it back (getpeername, recvmsg) follows a pointer from the
/// socket, and it goes away with the socket (no LRU to fill).
#[btf_map]
pub(crate) static SVC_SOCK_XLAT: SkStorage<SockXlat> = SkStorage::new();

/// Backend -> the frontend that connected sockets without storage reached
/// it through (written by the agent; `svc_common::reverse`).
#[btf_map]
pub(crate) static SVC_BE_REV: HashMap<BackendRevKey, Backend4, { capacity::BACKEND_REV as usize }, NO_PREALLOC> =
    HashMap::new();

// IPv6: the same maps with 16-byte addresses, sized by the same flags.

#[btf_map]
pub(crate) static SVC_BE_REV6: HashMap<BackendRevKey6, Backend6, { capacity::BACKEND_REV as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_FRONTENDS6: HashMap<FrontendKey6, Frontend6, { capacity::FRONTENDS as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_BACKENDS6: HashMap<SlotKey, Backend6, { capacity::BACKENDS as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_BE_INDEX6: HashMap<BackendIndexKey6, u32, { capacity::BACKEND_INDEX as usize }, NO_PREALLOC> =
    HashMap::new();

#[btf_map]
pub(crate) static SVC_AFFINITY6: LruHashMap<AffinityKey, AffinityValue6, { capacity::AFFINITY as usize }> =
    LruHashMap::new();

/// (socket, backend) -> the frontend address and port it stands for.
#[btf_map]
pub(crate) static SVC_REVNAT6: LruHashMap<RevNatKey6, Backend6, { capacity::REV_NAT as usize }> = LruHashMap::new();

#[btf_map]
pub(crate) static SVC_SOCK_XLAT6: SkStorage<SockXlat6> = SkStorage::new();

// North-south (the TC programs).

/// The flow table: one entry per direction of every translated flow.
#[btf_map]
pub(crate) static SVC_FLOWS: LruHashMap<FlowKey4, FlowValue4, { capacity::FLOWS as usize }> = LruHashMap::new();

/// The devices the TC programs run on, by ifindex (written by the agent).
#[btf_map]
pub(crate) static SVC_DEVICES: HashMap<u32, DeviceInfo, { capacity::DEVICES as usize }> = HashMap::new();

/// `loadBalancerSourceRanges` of load-balancer frontends (written by the agent).
#[btf_map]
pub(crate) static SVC_LB_SRC: LpmTrie<svc_common::SourceRangeData, u8, { capacity::LB_SOURCES as usize }> =
    LpmTrie::new();

/// Packet counters of the TC programs, by `svc_common::ns_stat` slot.
#[btf_map]
pub(crate) static SVC_NS_STATS: PerCpuArray<u64, { svc_common::ns_stat::COUNT as usize }> = PerCpuArray::new();

/// Never read by the programs. The agent updates entry 0 (with
/// `SVC_GRACE_IN`) to wait for an RCU grace period: the kernel waits for
/// all running programs before a map-in-map update returns (the same trick
/// the kernel's own selftests use). Agent-private, not pinned.
#[btf_map]
pub(crate) static SVC_GRACE: ArrayOfMaps<Array<u32, 1>, 1> = ArrayOfMaps::new();

/// The inner map the agent stores in `SVC_GRACE`.
#[btf_map]
pub(crate) static SVC_GRACE_IN: Array<u32, 1> = Array::new();

/// The translation trace (`svc-agent trace`): events, and `[0]` the pid of
/// the tracer (0: none; the programs then write nothing).
#[btf_map]
pub(crate) static SVC_TRACE: RingBuf<svc_common::TraceEvent, { capacity::TRACE_BYTES as usize }> = RingBuf::new();
#[btf_map]
pub(crate) static SVC_TRACE_ON: Array<u32, 1> = Array::new();

/// Cgroups whose sockets are not translated (written by the agent;
/// `svc_common::exempt`).
#[btf_map]
pub(crate) static SVC_EXEMPT: HashMap<u64, svc_common::ExemptPod, { capacity::EXEMPT as usize }, NO_PREALLOC> =
    HashMap::new();

/// Counters of the socket programs, by `svc_common::exempt::sock_stat` slot.
#[btf_map]
pub(crate) static SVC_SOCK_STATS: PerCpuArray<u64, { svc_common::exempt::sock_stat::COUNT as usize }> =
    PerCpuArray::new();
