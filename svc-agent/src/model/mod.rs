//! The pure model: Kubernetes objects in, frontends and backend lists out.
//!
//! Nothing here does I/O; every rule of "which address translates to which
//! backends" lives here and is unit tested without privileges.

mod cidr;
mod endpoints;
mod node;
pub mod objects;
mod service;
mod store;

use std::{fmt, net::Ipv4Addr, net::SocketAddrV4, sync::Arc};

pub use cidr::Ipv4Cidr;
pub use node::NodeContext;
pub use objects::{ServiceObj, SliceObj};
pub use service::{
    DEFAULT_AFFINITY_TIMEOUT, LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, MAX_AFFINITY_TIMEOUT, ModelError,
    desired_service,
};
pub use store::{Dirty, LABEL_SERVICE_NAME, Store};

/// Namespace and name of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Transport protocol of a Service port that the socket hooks translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IANA number, as stored in the maps.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => svc_common::proto::TCP,
            Self::Udp => svc_common::proto::UDP,
        }
    }

    /// From the IANA number.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            svc_common::proto::TCP => Some(Self::Tcp),
            svc_common::proto::UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// Kubernetes spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of one Service, the unit kube-proxy calls a ServicePortName:
/// every frontend of it shares backends and session affinity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortKey {
    /// The Service.
    pub service: ServiceKey,
    /// `spec.ports[].name` (may be empty for a single-port Service).
    pub port_name: String,
    /// Protocol.
    pub proto: Proto,
}

impl fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port_name, self.proto)
    }
}

/// Which kind of Service address a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKind {
    /// `spec.clusterIPs`.
    ClusterIp,
    /// `nodeIP:nodePort`.
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

impl FrontendKind {
    /// Display name (as in `kubectl get svc` TYPE column).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::ExternalIp => "ExternalIP",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One address the dataplane translates, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFrontend {
    /// Frontend address.
    pub addr: SocketAddrV4,
    /// Protocol.
    pub proto: Proto,
    /// Address kind.
    pub kind: FrontendKind,
    /// Only for sockets in the host network namespace (`127.0.0.1:nodePort`).
    pub host_ns_only: bool,
    /// The Service port this frontend belongs to.
    pub port: ServicePortKey,
    /// `spec.ports[].port`, kept for display.
    pub service_port: u16,
    /// Backends, sorted and without duplicates; empty refuses.
    pub backends: Arc<[SocketAddrV4]>,
    /// Session affinity timeout in seconds; 0 when affinity is off.
    pub affinity_timeout: u32,
}

/// Everything one Service wants programmed (possibly nothing: headless,
/// ExternalName, owned by another proxy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredService {
    /// Frontends, sorted by (address, protocol).
    pub frontends: Vec<DesiredFrontend>,
    /// Ports that are not translated (SCTP: no socket hook covers it), as
    /// `name/SCTP:port`, for a log line.
    pub untranslated_ports: Vec<String>,
}

/// A frontend's map key in the model's terms.
pub fn frontend_key(addr: SocketAddrV4, proto: Proto) -> svc_common::FrontendKey4 {
    svc_common::FrontendKey4 {
        addr: addr.ip().octets(),
        port: svc_common::port_be(addr.port()),
        proto: proto.number(),
        _pad: 0,
    }
}

/// A backend's map value in the model's terms.
pub fn backend_value(addr: SocketAddrV4) -> svc_common::Backend4 {
    svc_common::Backend4 { addr: addr.ip().octets(), port: svc_common::port_be(addr.port()), _pad: 0 }
}

/// A map address back in the model's terms.
pub fn socket_addr(addr: [u8; 4], port_be: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), svc_common::port_host(port_be))
}

#[cfg(test)]
mod tests;
