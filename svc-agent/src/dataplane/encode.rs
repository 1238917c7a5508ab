//! The kernel encoding of the model's addresses: map keys and values are
//! octets and big-endian ports (`svc_common`, through the family-neutral
//! types of [`super::family`]); the model speaks socket addresses. Only
//! the dataplane (and `status`, which reads it) converts.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::family::{Backend, FrontendKey};
use crate::model::DesiredFrontend;
#[cfg(test)]
use crate::model::{Proto, Scope};

/// The map key of a frontend for every client.
#[cfg(test)]
pub(crate) fn frontend_key(addr: impl Into<SocketAddr>, proto: Proto) -> FrontendKey {
    FrontendKey::new(addr.into(), proto, Scope::All)
}

/// A desired frontend's map key.
pub(crate) fn desired_key(fe: &DesiredFrontend) -> FrontendKey {
    FrontendKey::new(fe.addr, fe.proto, fe.scope)
}

/// A backend's map value.
pub(crate) fn backend_value(addr: impl Into<SocketAddr>) -> Backend {
    Backend::new(addr.into())
}

/// An IPv4 map address back as a socket address.
pub(crate) fn socket_addr(addr: [u8; 4], port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), svc_common::port_host(port_be))
}

/// An IPv6 map address back as a socket address.
pub(crate) fn socket_addr6(addr: [u8; 16], port_be: u16) -> SocketAddrV6 {
    SocketAddrV6::new(Ipv6Addr::from(addr), svc_common::port_host(port_be), 0, 0)
}
