//! The kernel encoding of the model's addresses: map keys and values are
//! octets and big-endian ports (`svc_common`), the model speaks
//! `SocketAddrV4`. Only the dataplane (and `status`, which reads it)
//! converts.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::model::Proto;

/// A frontend's map key.
pub(crate) fn frontend_key(addr: SocketAddrV4, proto: Proto) -> svc_common::FrontendKey4 {
    svc_common::FrontendKey4 {
        addr: addr.ip().octets(),
        port: svc_common::port_be(addr.port()),
        proto: proto.number(),
        _pad: 0,
    }
}

/// A backend's map value.
pub(crate) fn backend_value(addr: SocketAddrV4) -> svc_common::Backend4 {
    svc_common::Backend4 { addr: addr.ip().octets(), port: svc_common::port_be(addr.port()), _pad: 0 }
}

/// A map address back as a socket address.
pub(crate) fn socket_addr(addr: [u8; 4], port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), svc_common::port_host(port_be))
}
