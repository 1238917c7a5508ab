//! The writer's family-neutral view of the map types: one key, value and
//! backend type covering the IPv4 maps (`SVC_*`) and the IPv6 maps
//! (`SVC_*6`). The writer handles a dual-stack Service as one unit (one
//! update, one refusal); the [`super::Table`] implementations send each
//! entry to its family's map. Set ids and service-port ids are shared by
//! both families, so an id names one thing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use svc_common::{
    Backend4, Backend6, BackendRevKey, BackendRevKey6, Frontend, Frontend6, FrontendKey4, FrontendKey6, FrontendOf,
    INLINE_BACKENDS, INLINE_BACKENDS6, SlotKey, port_be, port_host,
};

use crate::model::{Proto, Scope};

/// An address family: the model's (one enum for the concept).
pub(crate) use crate::model::IpFamily as Family;

/// How many backends a frontend value of `family` holds inline.
pub(crate) const fn inline_limit(family: Family) -> usize {
    match family {
        Family::V4 => INLINE_BACKENDS,
        Family::V6 => INLINE_BACKENDS6,
    }
}

/// The kernel encoding of a [`Scope`] (`svc_common::scope`).
const fn scope_byte(scope: Scope) -> u8 {
    match scope {
        Scope::All => svc_common::scope::ALL,
        Scope::External => svc_common::scope::EXTERNAL,
    }
}

/// A frontend map key of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FrontendKey {
    /// SVC_FRONTENDS.
    V4(FrontendKey4),
    /// SVC_FRONTENDS6.
    V6(FrontendKey6),
}

impl FrontendKey {
    /// The key of `addr`/`proto` in `scope`.
    pub(crate) fn new(addr: SocketAddr, proto: Proto, scope: Scope) -> Self {
        let (port, proto, scope) = (port_be(addr.port()), proto.number(), scope_byte(scope));
        match addr.ip() {
            IpAddr::V4(ip) => Self::V4(FrontendKey4 { addr: ip.octets(), port, proto, scope }),
            IpAddr::V6(ip) => Self::V6(FrontendKey6 { addr: ip.octets(), port, proto, scope }),
        }
    }

    /// The same address, port and protocol in `scope`.
    pub(crate) const fn with_scope(mut self, scope: Scope) -> Self {
        match &mut self {
            Self::V4(k) => k.scope = scope_byte(scope),
            Self::V6(k) => k.scope = scope_byte(scope),
        }
        self
    }

    /// Who the frontend is for.
    pub(crate) const fn scope(&self) -> Scope {
        let scope = match self {
            Self::V4(k) => k.scope,
            Self::V6(k) => k.scope,
        };
        if scope == svc_common::scope::EXTERNAL { Scope::External } else { Scope::All }
    }

    /// Its family.
    pub(crate) const fn family(&self) -> Family {
        match self {
            Self::V4(_) => Family::V4,
            Self::V6(_) => Family::V6,
        }
    }

    /// IANA protocol number.
    pub(crate) const fn proto(&self) -> u8 {
        match self {
            Self::V4(k) => k.proto,
            Self::V6(k) => k.proto,
        }
    }

    /// The address and port.
    pub(crate) fn socket_addr(&self) -> SocketAddr {
        match self {
            Self::V4(k) => SocketAddr::new(Ipv4Addr::from(k.addr).into(), port_host(k.port)),
            Self::V6(k) => SocketAddr::new(Ipv6Addr::from(k.addr).into(), port_host(k.port)),
        }
    }
}

/// A backend of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Backend {
    /// In SVC_FRONTENDS values and SVC_BACKENDS.
    V4(Backend4),
    /// In SVC_FRONTENDS6 values and SVC_BACKENDS6.
    V6(Backend6),
}

impl Backend {
    /// The map value for `addr`.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let port = port_be(addr.port());
        match addr.ip() {
            IpAddr::V4(ip) => Self::V4(Backend4 { addr: ip.octets(), port, _pad: 0 }),
            IpAddr::V6(ip) => Self::V6(Backend6 { addr: ip.octets(), port, _pad: 0 }),
        }
    }

    /// Its family.
    pub(crate) const fn family(&self) -> Family {
        match self {
            Self::V4(_) => Family::V4,
            Self::V6(_) => Family::V6,
        }
    }

    /// The address and port.
    pub(crate) fn socket_addr(&self) -> SocketAddr {
        match self {
            Self::V4(b) => SocketAddr::new(Ipv4Addr::from(b.addr).into(), port_host(b.port)),
            Self::V6(b) => SocketAddr::new(Ipv6Addr::from(b.addr).into(), port_host(b.port)),
        }
    }
}

impl FrontendKey {
    /// The frontend's address and port as a backend-shaped value (what
    /// SVC_BE_REV holds).
    pub(crate) fn as_backend(&self) -> Backend {
        match self {
            Self::V4(k) => Backend::V4(Backend4 { addr: k.addr, port: k.port, _pad: 0 }),
            Self::V6(k) => Backend::V6(Backend6 { addr: k.addr, port: k.port, _pad: 0 }),
        }
    }
}

/// A reverse-owner key (SVC_BE_REV, SVC_BE_REV6): a backend and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RevKey {
    /// SVC_BE_REV.
    V4(BackendRevKey),
    /// SVC_BE_REV6.
    V6(BackendRevKey6),
}

impl RevKey {
    /// The key of `backend` for `proto` (an IANA number).
    pub(crate) const fn new(backend: Backend, proto: u8) -> Self {
        match backend {
            Backend::V4(b) => Self::V4(BackendRevKey { addr: b.addr, port: b.port, proto, _pad: 0 }),
            Backend::V6(b) => Self::V6(BackendRevKey6 { addr: b.addr, port: b.port, proto, _pad: 0 }),
        }
    }
}

/// A slot of a large backend set, in its family's slots map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SlotRef {
    /// Which slots map.
    pub family: Family,
    /// The key in it.
    pub key: SlotKey,
}

/// A membership entry (session affinity on a set in slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IndexKey {
    /// Backend set id.
    pub set_id: u32,
    /// The member (its family picks the map).
    pub backend: Backend,
}

/// A frontend map value of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrontendValue {
    /// SVC_FRONTENDS.
    V4(Frontend),
    /// SVC_FRONTENDS6.
    V6(Frontend6),
}

/// The header fields every frontend value has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Service-port id.
    pub svc_id: u32,
    /// Backend set id (0: no backends).
    pub set_id: u32,
    /// Number of backends.
    pub count: u32,
    /// Affinity timeout in seconds (0: off).
    pub affinity_timeout: u32,
    /// `fe_flags` bits.
    pub flags: u32,
}

/// A mask of the `n` lowest bits.
const fn low_bits(n: usize) -> u32 {
    if n >= 32 { u32::MAX } else { (1 << n) - 1 }
}

fn build<B: Copy + Default, const N: usize>(
    h: Header,
    backends: &[Backend],
    unwrap: fn(&Backend) -> Option<B>,
) -> FrontendOf<B, N> {
    let mut inline = [B::default(); N];
    if backends.len() <= N {
        for (slot, b) in inline.iter_mut().zip(backends) {
            // The writer only gives a frontend backends of its own family.
            *slot = unwrap(b).unwrap_or_default();
        }
    }
    FrontendOf {
        svc_id: h.svc_id,
        set_id: h.set_id,
        count: h.count,
        affinity_timeout: h.affinity_timeout,
        flags: h.flags,
        owned: 0,
        inline,
    }
}

/// Reads one field of either variant.
macro_rules! field {
    ($self:expr, $f:ident) => {
        match $self {
            FrontendValue::V4(v) => v.$f,
            FrontendValue::V6(v) => v.$f,
        }
    };
}

/// Calls one predicate of either variant.
macro_rules! predicate {
    ($self:expr, $f:ident) => {
        match $self {
            FrontendValue::V4(v) => v.$f(),
            FrontendValue::V6(v) => v.$f(),
        }
    };
}

impl FrontendValue {
    /// The value for a frontend of `family` with `header` and `backends`
    /// (inline when they fit; `header.count` is their number).
    pub(crate) fn new(family: Family, header: Header, backends: &[Backend]) -> Self {
        match family {
            Family::V4 => Self::V4(build::<Backend4, INLINE_BACKENDS>(header, backends, |b| match b {
                Backend::V4(b) => Some(*b),
                Backend::V6(_) => None,
            })),
            Family::V6 => Self::V6(build::<Backend6, INLINE_BACKENDS6>(header, backends, |b| match b {
                Backend::V6(b) => Some(*b),
                Backend::V4(_) => None,
            })),
        }
    }

    /// With `owned` as its reverse-owner bits (only inline backends have
    /// them: zero for a set in slots).
    pub(crate) fn with_owned(mut self, owned: u32) -> Self {
        let inline = self.is_inline();
        match &mut self {
            Self::V4(v) => v.owned = if inline { owned & low_bits(INLINE_BACKENDS) } else { 0 },
            Self::V6(v) => v.owned = if inline { owned & low_bits(INLINE_BACKENDS6) } else { 0 },
        }
        self
    }
    /// The reverse-owner bits.
    pub(crate) fn owned(&self) -> u32 {
        field!(self, owned)
    }

    /// Service-port id.
    pub(crate) fn svc_id(&self) -> u32 {
        field!(self, svc_id)
    }
    /// Backend set id.
    pub(crate) fn set_id(&self) -> u32 {
        field!(self, set_id)
    }
    /// Number of backends.
    pub(crate) fn count(&self) -> u32 {
        field!(self, count)
    }
    /// Affinity timeout in seconds.
    pub(crate) fn affinity_timeout(&self) -> u32 {
        field!(self, affinity_timeout)
    }
    /// Backends inline (not in slots).
    pub(crate) fn is_inline(&self) -> bool {
        predicate!(self, is_inline)
    }
    /// A ClusterIP frontend.
    pub(crate) fn is_cluster_ip(&self) -> bool {
        predicate!(self, is_cluster_ip)
    }
    /// A NodePort frontend.
    pub(crate) fn is_node_port(&self) -> bool {
        predicate!(self, is_node_port)
    }
    /// An external IP.
    pub(crate) fn is_external_ip(&self) -> bool {
        predicate!(self, is_external_ip)
    }
    /// A load-balancer IP.
    pub(crate) fn is_load_balancer(&self) -> bool {
        predicate!(self, is_load_balancer)
    }
    /// Its set has membership entries.
    pub(crate) fn is_indexed(&self) -> bool {
        predicate!(self, is_indexed)
    }

    /// The inline backends (when [`Self::is_inline`]).
    pub(crate) fn inline_backends(&self) -> Vec<Backend> {
        let n = self.count() as usize;
        match self {
            Self::V4(v) => v.inline.iter().take(n).map(|b| Backend::V4(*b)).collect(),
            Self::V6(v) => v.inline.iter().take(n).map(|b| Backend::V6(*b)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_backends_round_trip_in_both_families() {
        for addr in ["10.96.0.10:80", "[fd00:96::10]:80"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(FrontendKey::new(addr, Proto::Udp, Scope::All).socket_addr(), addr);
            assert_eq!(Backend::new(addr).socket_addr(), addr);
        }
        let v6: SocketAddr = "[fd00::1]:53".parse().unwrap();
        assert_eq!(FrontendKey::new(v6, Proto::Tcp, Scope::All).family(), Family::V6);
        assert_eq!(FrontendKey::new(v6, Proto::Tcp, Scope::All).proto(), svc_common::proto::TCP);
    }

    #[test]
    fn values_are_inline_up_to_their_family_limit() {
        let header = |count| Header { svc_id: 1, set_id: 2, count, affinity_timeout: 0, flags: 0 };
        let v6: Vec<Backend> =
            (1..=8u16).map(|i| Backend::new(SocketAddr::new("fd00::1".parse().unwrap(), i))).collect();
        let value = FrontendValue::new(Family::V6, header(8), &v6);
        assert!(value.is_inline());
        assert_eq!(value.inline_backends(), v6);
        let nine: Vec<Backend> =
            (1..=9u16).map(|i| Backend::new(SocketAddr::new("fd00::1".parse().unwrap(), i))).collect();
        let value = FrontendValue::new(Family::V6, header(9), &nine);
        assert!(!value.is_inline(), "IPv6 holds {INLINE_BACKENDS6} inline");
        let v4: Vec<Backend> = (1..=9u16).map(|i| Backend::new(SocketAddr::new([10, 0, 0, 1].into(), i))).collect();
        assert!(FrontendValue::new(Family::V4, header(9), &v4).is_inline(), "IPv4 holds {INLINE_BACKENDS} inline");
    }
}
