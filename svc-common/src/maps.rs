//! Names, keys and values of every map the dataplane pins.

use bytemuck::{Pod, Zeroable};

/// Names of the maps as pinned under `<bpffs>/maps/` and shown by
/// `bpftool map list`. The kernel keeps 15 bytes of a map name.
pub mod names {
    /// Frontend (service address) -> [`super::Frontend`].
    pub const FRONTENDS: &str = "SVC_FRONTENDS";
    /// (backend set, slot) -> [`super::Backend4`].
    pub const BACKENDS: &str = "SVC_BACKENDS";
    /// (backend set, backend) -> slot; membership test for session affinity.
    pub const BACKEND_INDEX: &str = "SVC_BE_INDEX";
    /// (client netns, service port) -> pinned backend.
    pub const AFFINITY: &str = "SVC_AFFINITY";
    /// (socket, backend) -> frontend, for recvmsg/getpeername.
    pub const REV_NAT: &str = "SVC_REVNAT_SK";
    /// Service port id -> names, for `svc-agent status`.
    pub const META: &str = "SVC_META";
    /// Single-entry runtime configuration written by the agent.
    pub const CONFIG: &str = "SVC_CONFIG";
    /// Per-socket storage: the translation of a connected socket.
    pub const SOCK_XLAT: &str = "SVC_SOCK_XLAT";
    /// Agent-private (not pinned): updating it waits for an RCU grace
    /// period. Holds [`GRACE_INNER`].
    pub const GRACE: &str = "SVC_GRACE";
    /// The inner map stored in [`GRACE`].
    pub const GRACE_INNER: &str = "SVC_GRACE_IN";
    /// IPv6 frontend -> [`super::Frontend6`].
    pub const FRONTENDS6: &str = "SVC_FRONTENDS6";
    /// (backend set, slot) -> [`super::Backend6`].
    pub const BACKENDS6: &str = "SVC_BACKENDS6";
    /// (backend set, IPv6 backend) -> slot.
    pub const BACKEND_INDEX6: &str = "SVC_BE_INDEX6";
    /// (client netns, service port) -> pinned IPv6 backend.
    pub const AFFINITY6: &str = "SVC_AFFINITY6";
    /// (socket, IPv6 backend) -> frontend.
    pub const REV_NAT6: &str = "SVC_REVNAT6";
    /// Per-socket storage: the translation of a connected IPv6 socket.
    pub const SOCK_XLAT6: &str = "SVC_SOCK_XLAT6";
    /// North-south flow table: [`super::FlowKey4`] -> [`super::FlowValue4`].
    pub const FLOWS: &str = "SVC_FLOWS";
    /// ifindex -> [`super::DeviceInfo`] of the TC devices.
    pub const DEVICES: &str = "SVC_DEVICES";
    /// The TC programs' packet counters (per-CPU, [`super::ns_stat`]).
    pub const NS_STATS: &str = "SVC_NS_STATS";
    /// `loadBalancerSourceRanges` (LPM trie, [`super::SourceRangeData`]).
    pub const LB_SOURCES: &str = "SVC_LB_SRC";
    /// The socket programs, in attach order (pinned under `<bpffs>/progs/`):
    /// the IPv4 hooks, then the v6 hooks (native IPv6 peers, and v4-mapped
    /// ones of `AF_INET6` sockets), then the cgroup/sock_release hook that
    /// drops a closed connected UDP socket's datagram entry.
    pub const SOCK_PROGRAMS: [&str; 9] = [
        "svc_connect4",
        "svc_sendmsg4",
        "svc_recvmsg4",
        "svc_getpeer4",
        "svc_connect6",
        "svc_sendmsg6",
        "svc_recvmsg6",
        "svc_getpeer6",
        "svc_release",
    ];
    /// The translation trace's ring buffer (`svc-agent trace`).
    pub const TRACE: &str = "SVC_TRACE";
    /// `[0]`: the pid of the running `svc-agent trace`, or 0 (no events).
    pub const TRACE_ON: &str = "SVC_TRACE_ON";
    /// Cgroup id -> [`super::ExemptPod`]: sockets the hooks leave alone.
    pub const EXEMPT: &str = "SVC_EXEMPT";
    /// The socket programs' counters (per-CPU, [`super::exempt::sock_stat`]).
    pub const SOCK_STATS: &str = "SVC_SOCK_STATS";
    /// [`crate::BackendRevKey`] -> the frontend ([`super::Backend4`]) that
    /// sockets without storage reached that backend through
    /// ([`crate::reverse`]).
    pub const BACKEND_REV: &str = "SVC_BE_REV";
    /// [`crate::BackendRevKey6`] -> [`super::Backend6`].
    pub const BACKEND_REV6: &str = "SVC_BE_REV6";
    /// All pinned maps, in the order `cleanup` and `status` walk them.
    pub const ALL: [&str; 24] = [
        FRONTENDS,
        BACKENDS,
        BACKEND_INDEX,
        AFFINITY,
        REV_NAT,
        META,
        CONFIG,
        SOCK_XLAT,
        FRONTENDS6,
        BACKENDS6,
        BACKEND_INDEX6,
        AFFINITY6,
        REV_NAT6,
        SOCK_XLAT6,
        FLOWS,
        DEVICES,
        NS_STATS,
        LB_SOURCES,
        TRACE,
        TRACE_ON,
        EXEMPT,
        SOCK_STATS,
        BACKEND_REV,
        BACKEND_REV6,
    ];
}

/// Default capacities. All are overridable on the agent's command line;
/// hash maps are created with `BPF_F_NO_PREALLOC`, so an unused capacity
/// costs no kernel memory (the LRU maps are preallocated by the kernel).
pub mod capacity {
    /// Frontends (service address x port x protocol).
    pub const FRONTENDS: u32 = 65_536;
    /// Backend slots, counted over all sets. An update holds the old and the
    /// new set of one Service at once. (The bucket array is allocated for
    /// the capacity: 8 bytes per slot of capacity.)
    pub const BACKENDS: u32 = 262_144;
    /// Membership entries (only written for frontends with session affinity).
    pub const BACKEND_INDEX: u32 = 262_144;
    /// Affinity entries (clients x services with affinity); LRU.
    pub const AFFINITY: u32 = 65_536;
    /// Reverse translation entries (UDP: socket x backend); LRU, so
    /// preallocated by the kernel (about 72 bytes each: a ~48-byte element
    /// header, the 16-byte key and the 8-byte value). Connected sockets
    /// keep their translation in socket storage instead.
    pub const REV_NAT: u32 = 65_536;
    /// Service ports.
    pub const META: u32 = 65_536;
    /// North-south flow entries (two per flow); LRU, preallocated (about
    /// 100 bytes each).
    pub const FLOWS: u32 = 131_072;
    /// TC devices.
    pub const DEVICES: u32 = 64;
    /// `loadBalancerSourceRanges` entries (one per range and frontend, plus
    /// one per restricted frontend).
    pub const LB_SOURCES: u32 = 16_384;
    /// Bytes of the translation trace's ring buffer (a power of two; about
    /// 3,000 events).
    pub const TRACE_BYTES: u32 = 256 * 1024;
    /// Reverse owners (one per distinct backend address x port x protocol,
    /// kept a linger time after the backend leaves its owner;
    /// `crate::reverse`). A backend beyond it costs its sockets storage.
    pub const BACKEND_REV: u32 = 65_536;
    /// Exempt pod cgroups (`svc.dataplane.io/socket-lb: disabled`); a node
    /// runs at most a few hundred pods.
    pub const EXEMPT: u32 = 4096;
}

/// The service address a socket asked for: the frontend map's key.
///
/// `addr` and `port` are in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct FrontendKey4 {
    /// Destination IPv4 address, as octets (network order; `bpftool map
    /// dump` prints it as `[10,96,0,10]`).
    pub addr: [u8; 4],
    /// Destination port (network byte order).
    pub port: u16,
    /// IANA protocol number ([`crate::proto`]).
    pub proto: u8,
    /// [`scope`]: who the frontend is for.
    pub scope: u8,
}

/// Values of [`FrontendKey4::scope`] / [`FrontendKey6::scope`].
pub mod scope {
    /// Every client: the socket hooks only look these up, and so do the TC
    /// programs when there is no [`EXTERNAL`] entry.
    pub const ALL: u8 = 0;
    /// Clients outside the node only (the TC programs): written where their
    /// backends differ from the in-cluster ones (`externalTrafficPolicy:
    /// Local`: only this node's endpoints).
    pub const EXTERNAL: u8 = 1;
}

/// IPv4 backend sets up to this size live inside the [`Frontend`] value
/// itself: a connect then costs one hash lookup, and changing the set is
/// one map update. Larger sets live in `SVC_BACKENDS`.
pub const INLINE_BACKENDS: usize = 16;

/// The same for IPv6 ([`Frontend6`]): fewer, because the programs copy a
/// frontend onto their 512-byte stack and an IPv6 backend takes 20 bytes.
pub const INLINE_BACKENDS6: usize = 8;

/// What a frontend resolves to, for backends of type `B` with up to `N`
/// inline. Replaced as a whole by one map update, which is what makes a
/// backend-set change atomic for a racing `connect()` (the programs read a
/// validated copy; docs/maps.md, readers and element reuse).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrontendOf<B, const N: usize> {
    /// Service-port id: shared by every frontend of one Service port and
    /// protocol (ClusterIP, NodePort, external IPs); keys [`ServiceMeta`]
    /// and [`AffinityKey`].
    pub svc_id: u32,
    /// The version of the backend set this frontend currently uses: unique
    /// while live; for sets in `SVC_BACKENDS` also their [`SlotKey::set_id`].
    pub set_id: u32,
    /// Number of backends in the set; 0 refuses the connection.
    pub count: u32,
    /// `sessionAffinity: ClientIP` timeout in seconds; 0 means no affinity.
    pub affinity_timeout: u32,
    /// [`fe_flags`] bits.
    pub flags: u32,
    /// Bit `i` set: this frontend is the reverse owner of inline backend
    /// `i` (`SVC_BE_REV[backend] ==` this frontend's address and port,
    /// `crate::reverse`), so a socket translated to it needs no storage
    /// and `connect()` skips the reverse-owner lookup. Set by the agent
    /// only while that holds; zero (the value before this field had a
    /// meaning) means "look it up", so older values stay correct.
    pub owned: u32,
    /// The backends themselves when `count <= N` (unused entries zero);
    /// otherwise unused.
    pub inline: [B; N],
}

/// An IPv4 frontend (`SVC_FRONTENDS`).
pub type Frontend = FrontendOf<Backend4, INLINE_BACKENDS>;
/// An IPv6 frontend (`SVC_FRONTENDS6`).
pub type Frontend6 = FrontendOf<Backend6, INLINE_BACKENDS6>;

impl<B: Pod, const N: usize> Default for FrontendOf<B, N>
where
    Self: Pod,
{
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// The flag predicates are the one place where [`FrontendOf::flags`] is
/// decoded (as Cilium's `lb4_svc_is_*` helpers), for the programs, the
/// writer, adoption and `status` alike.
impl<B, const N: usize> FrontendOf<B, N> {
    /// How many backends fit inline.
    pub const INLINE: usize = N;

    /// Whether this frontend is known to own inline backend `i`
    /// ([`FrontendOf::owned`]).
    #[inline(always)]
    #[must_use]
    pub const fn owns_inline(&self, i: usize) -> bool {
        i < 32 && self.owned & (1 << i) != 0
    }

    /// Whether the backends are in [`FrontendOf::inline`] rather than in
    /// the slots map.
    #[inline(always)]
    #[must_use]
    pub const fn is_inline(&self) -> bool {
        self.count as usize <= N
    }

    /// A ClusterIP address.
    #[inline(always)]
    #[must_use]
    pub const fn is_cluster_ip(&self) -> bool {
        self.flags & fe_flags::KIND_CLUSTER_IP != 0
    }

    /// `nodeIP:nodePort` (including `127.0.0.1:nodePort`).
    #[inline(always)]
    #[must_use]
    pub const fn is_node_port(&self) -> bool {
        self.flags & fe_flags::KIND_NODE_PORT != 0
    }

    /// A `spec.externalIPs` address.
    #[inline(always)]
    #[must_use]
    pub const fn is_external_ip(&self) -> bool {
        self.flags & fe_flags::KIND_EXTERNAL_IP != 0
    }

    /// A load-balancer ingress address.
    #[inline(always)]
    #[must_use]
    pub const fn is_load_balancer(&self) -> bool {
        self.flags & fe_flags::KIND_LOAD_BALANCER != 0
    }

    /// Translated only for sockets of the host network namespace.
    #[inline(always)]
    #[must_use]
    pub const fn is_host_ns_only(&self) -> bool {
        self.flags & fe_flags::HOST_NS_ONLY != 0
    }

    /// Its set in slots has membership entries in the index map.
    #[inline(always)]
    #[must_use]
    pub const fn is_indexed(&self) -> bool {
        self.flags & fe_flags::INDEXED != 0
    }
}

// SAFETY: #[repr(C)]; six u32 then an array of a Pod type whose size is a
// multiple of 4 (both backends: 8 and 20 bytes, alignment <= 4), so there
// is no padding anywhere (the size asserts below check it), and every bit
// pattern is valid.
unsafe impl Zeroable for Frontend {}
// SAFETY: as above.
unsafe impl Pod for Frontend {}
// SAFETY: as above.
unsafe impl Zeroable for Frontend6 {}
// SAFETY: as above.
unsafe impl Pod for Frontend6 {}

/// Bits of [`Frontend::flags`].
pub mod fe_flags {
    /// The frontend is a ClusterIP address.
    pub const KIND_CLUSTER_IP: u32 = 1 << 0;
    /// The frontend is `nodeIP:nodePort`.
    pub const KIND_NODE_PORT: u32 = 1 << 1;
    /// The frontend is a `spec.externalIPs` address.
    pub const KIND_EXTERNAL_IP: u32 = 1 << 2;
    /// The frontend is a `status.loadBalancer.ingress[].ip` address.
    pub const KIND_LOAD_BALANCER: u32 = 1 << 3;
    /// Only sockets in the host network namespace are translated
    /// (`127.0.0.1:nodePort`).
    pub const HOST_NS_ONLY: u32 = 1 << 8;
    /// The set carries a [`super::BackendIndexKey`] entry per backend
    /// (affinity on a set too large to be inline; inline sets are scanned).
    pub const INDEXED: u32 = 1 << 9;
    /// `loadBalancerSourceRanges` restrict it: clients outside the node
    /// reach it only from a range `SVC_LB_SRC` allows (the programs look
    /// the trie up only then).
    pub const SOURCE_RANGES: u32 = 1 << 10;
    /// Set on a [`super::scope::ALL`] frontend that has a
    /// [`super::scope::EXTERNAL`] twin (`externalTrafficPolicy: Local`):
    /// clients outside the node are served by the twin. (One lookup for
    /// every other frontend, two only for these.)
    pub const EXTERNAL_TWIN: u32 = 1 << 11;
}

/// One slot of a backend set. A set is `count` consecutive slots written
/// before any frontend points at it and deleted only after none does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SlotKey {
    /// Backend set id, allocated by the agent, never reused while live.
    pub set_id: u32,
    /// 0..count.
    pub slot: u32,
}

/// A backend address (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Backend4 {
    /// IPv4 address, as octets.
    pub addr: [u8; 4],
    /// Port (network byte order).
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

/// "Is this backend in this set?", for session affinity: an affinity entry
/// stays valid across set changes as long as its backend is still a member.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct BackendIndexKey {
    /// Backend set id.
    pub set_id: u32,
    /// The member.
    pub backend: Backend4,
}

/// Session affinity is per client and service port, as kube-proxy's
/// `recent` lists are per service port. The client is its network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AffinityKey {
    /// `bpf_get_netns_cookie()` of the connecting socket.
    pub netns_cookie: u64,
    /// [`Frontend::svc_id`].
    pub svc_id: u32,
    /// Always zero.
    pub _pad: u32,
}

/// The backend a client is pinned to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AffinityValue {
    /// The pinned backend (used only while it is a member of the
    /// frontend's current set, checked on every use).
    pub backend: Backend4,
    /// `bpf_ktime_get_ns()` of the last connection (CLOCK_MONOTONIC).
    pub last_used_ns: u64,
}

/// The translation of a connected socket (TCP, connected UDP), kept in the
/// socket's own storage (`SVC_SOCK_XLAT`, BPF_MAP_TYPE_SK_STORAGE): it is
/// found through the socket without hashing and freed with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockXlat {
    /// The frontend the application connected to.
    pub frontend: Backend4,
    /// The backend it was translated to.
    pub backend: Backend4,
}

/// Reverse translation key: which socket talked to which backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RevNatKey {
    /// `bpf_get_socket_cookie()`.
    pub cookie: u64,
    /// The backend the socket was sent to.
    pub backend: Backend4,
}

/// Reverse translation value: the frontend the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RevNatValue {
    /// Frontend address, as octets.
    pub addr: [u8; 4],
    /// Frontend port (network byte order).
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

/// An IPv6 frontend key (`SVC_FRONTENDS6`): [`FrontendKey4`] with a
/// 16-byte address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct FrontendKey6 {
    /// Destination IPv6 address, as octets (network order).
    pub addr: [u8; 16],
    /// Destination port (network byte order).
    pub port: u16,
    /// IANA protocol number ([`crate::proto`]).
    pub proto: u8,
    /// [`scope`].
    pub scope: u8,
}

/// An IPv6 backend address (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct Backend6 {
    /// IPv6 address, as octets.
    pub addr: [u8; 16],
    /// Port (network byte order).
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

/// [`BackendIndexKey`] for IPv6 sets (`SVC_BE_INDEX6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct BackendIndexKey6 {
    /// Backend set id.
    pub set_id: u32,
    /// The member.
    pub backend: Backend6,
}

/// [`AffinityValue`] for IPv6 (`SVC_AFFINITY6`, keyed by [`AffinityKey`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct AffinityValue6 {
    /// The pinned backend (checked for membership on every use).
    pub backend: Backend6,
    /// Always zero.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` of the last connection (CLOCK_MONOTONIC).
    pub last_used_ns: u64,
}

/// [`SockXlat`] of an IPv6 socket with a native IPv6 peer (`SVC_SOCK_XLAT6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockXlat6 {
    /// The frontend the application connected to.
    pub frontend: Backend6,
    /// The backend it was translated to.
    pub backend: Backend6,
}

/// [`RevNatKey`] for IPv6 (`SVC_REVNAT6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RevNatKey6 {
    /// `bpf_get_socket_cookie()`.
    pub cookie: u64,
    /// The backend the socket was sent to.
    pub backend: Backend6,
    /// Always zero.
    pub _pad: u32,
}

/// Longest namespace or Service name Kubernetes accepts, plus a NUL.
pub const NAME_LEN: usize = 64;
/// Longest port name Kubernetes accepts (IANA service name), plus a NUL.
pub const PORT_NAME_LEN: usize = 16;

/// Human names of a service port, for `svc-agent status` and for adopting
/// pinned state after a restart. Never read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ServiceMeta {
    /// Namespace, NUL-padded.
    pub namespace: [u8; NAME_LEN],
    /// Service name, NUL-padded.
    pub name: [u8; NAME_LEN],
    /// Service port name, NUL-padded (empty for an unnamed port).
    pub port_name: [u8; PORT_NAME_LEN],
    /// Service port (host byte order).
    pub port: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 5],
}

/// Runtime configuration, a single entry at key 0 of `SVC_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// `netns_cookie` of the host network namespace, for
    /// [`fe_flags::HOST_NS_ONLY`] frontends.
    pub host_netns_cookie: u64,
    /// Layout version of these maps ([`LAYOUT_VERSION`]); the agent refuses
    /// to adopt pins with another version.
    pub layout_version: u32,
    /// Entries in `SVC_EXEMPT`; 0 spares the hooks the cgroup walk
    /// ([`crate::exempt`]).
    pub exempt_cgroups: u32,
}

/// Bump when any key or value above changes shape or meaning.
/// 4: `SockXlat` and `RevNatValue` lost their unread `svc_id`,
/// `AffinityValue` its unread `set_id`.
/// 5: the IPv6 maps (`*6`).
/// 6: frontend keys carry a [`scope`]; the north-south maps.
/// 7: `SVC_LB_SRC`, and a ninth north-south counter.
/// 8: `SVC_EXEMPT`, `SVC_SOCK_STATS` and [`Config::exempt_cgroups`].
/// 9: `SVC_BE_REV` and `SVC_BE_REV6` (translated sockets keep storage
/// only where these do not answer); later within 9, [`FrontendOf::owned`],
/// whose zero keeps the meaning the field had before (unused), so pins
/// of either agent stay correct under the other's programs.
pub const LAYOUT_VERSION: u32 = 9;

const _: () = {
    assert!(size_of::<FrontendKey4>() == 8);
    assert!(size_of::<Frontend>() == 24 + 8 * INLINE_BACKENDS);
    assert!(size_of::<SlotKey>() == 8);
    assert!(size_of::<Backend4>() == 8);
    assert!(size_of::<BackendIndexKey>() == 12);
    assert!(size_of::<AffinityKey>() == 16);
    assert!(size_of::<AffinityValue>() == 16);
    assert!(size_of::<RevNatKey>() == 16);
    assert!(size_of::<RevNatValue>() == 8);
    assert!(size_of::<ServiceMeta>() == 152);
    assert!(size_of::<Config>() == 16);
    assert!(size_of::<SockXlat>() == 16);
    assert!(size_of::<FrontendKey6>() == 20);
    assert!(size_of::<Backend6>() == 20);
    assert!(size_of::<Frontend6>() == 24 + 20 * INLINE_BACKENDS6);
    assert!(size_of::<BackendIndexKey6>() == 24);
    assert!(size_of::<AffinityValue6>() == 32);
    assert!(size_of::<SockXlat6>() == 40);
    assert!(size_of::<RevNatKey6>() == 32);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is #[repr(C)], Copy, and bytemuck::Pod proves it
    // has no padding bytes and is valid for any bit pattern.
    unsafe impl aya::Pod for super::FrontendKey4 {}
    unsafe impl aya::Pod for super::Frontend {}
    unsafe impl aya::Pod for super::SlotKey {}
    unsafe impl aya::Pod for super::Backend4 {}
    unsafe impl aya::Pod for super::BackendIndexKey {}
    unsafe impl aya::Pod for super::AffinityKey {}
    unsafe impl aya::Pod for super::AffinityValue {}
    unsafe impl aya::Pod for super::RevNatKey {}
    unsafe impl aya::Pod for super::RevNatValue {}
    unsafe impl aya::Pod for super::ServiceMeta {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SockXlat {}
    unsafe impl aya::Pod for super::FrontendKey6 {}
    unsafe impl aya::Pod for super::Frontend6 {}
    unsafe impl aya::Pod for super::Backend6 {}
    unsafe impl aya::Pod for super::BackendIndexKey6 {}
    unsafe impl aya::Pod for super::AffinityValue6 {}
    unsafe impl aya::Pod for super::SockXlat6 {}
    unsafe impl aya::Pod for super::RevNatKey6 {}
}
