//! The pure model: Kubernetes objects in, frontends and backend lists out.
//!
//! Nothing here does I/O; every rule of "which address translates to which
//! backends" lives here and is unit tested without privileges.

mod cidr;
mod endpoints;
mod node;
pub(crate) mod objects;
pub(crate) mod opt_out;
mod service;
mod store;

use std::{fmt, net::SocketAddr, sync::Arc};

pub(crate) use cidr::{IpCidr, ServiceCidrs};
pub(crate) use node::NodeContext;
pub(crate) use objects::{IpFamily, ServiceObj, SliceObj};
pub(crate) use opt_out::{ExemptPod, NamespaceObj, OptOuts, PodObj};
pub(crate) use service::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, desired_service};
pub(crate) use store::{Dirty, LABEL_SERVICE_NAME, Store};

/// Namespace and name of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key.
    pub(crate) fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
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
pub(crate) enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IANA number, as stored in the maps.
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::Tcp => svc_common::proto::TCP,
            Self::Udp => svc_common::proto::UDP,
        }
    }

    /// From the IANA number.
    pub(crate) const fn from_number(n: u8) -> Option<Self> {
        match n {
            svc_common::proto::TCP => Some(Self::Tcp),
            svc_common::proto::UDP => Some(Self::Udp),
            _ => None,
        }
    }

    /// Kubernetes spelling.
    pub(crate) const fn as_str(self) -> &'static str {
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
pub(crate) struct ServicePortKey {
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
pub(crate) enum FrontendKind {
    /// `spec.clusterIPs`.
    ClusterIp,
    /// `nodeIP:nodePort`.
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
}

/// Which clients a frontend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub(crate) enum Scope {
    /// Every client: sockets on this node (the socket hooks), and clients
    /// outside the node unless an [`Scope::External`] twin exists.
    #[default]
    All,
    /// Clients outside the node only (the TC programs):
    /// `externalTrafficPolicy: Local` gives them this node's endpoints
    /// while in-cluster clients keep the cluster-wide ones, as kube-proxy
    /// short-circuits pod traffic to the cluster chain.
    External,
}

/// One address the dataplane translates, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredFrontend {
    /// Frontend address.
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: Proto,
    /// Address kind.
    pub kind: FrontendKind,
    /// Only for sockets in the host network namespace (`127.0.0.1:nodePort`).
    pub host_ns_only: bool,
    /// Which clients it serves.
    pub scope: Scope,
    /// The Service port this frontend belongs to.
    pub port: ServicePortKey,
    /// `spec.ports[].port`, kept for display.
    pub service_port: u16,
    /// Backends, sorted and without duplicates; empty refuses.
    pub backends: Arc<[SocketAddr]>,
    /// Session affinity timeout in seconds; 0 when affinity is off.
    pub affinity_timeout: u32,
    /// A [`Scope::All`] frontend with a [`Scope::External`] twin for
    /// clients outside the node (`externalTrafficPolicy: Local`).
    pub external_twin: bool,
    /// `loadBalancerSourceRanges` restrict it for clients outside the node
    /// (the ranges: [`DesiredService::source_ranges`]).
    pub source_restricted: bool,
}

/// A `healthCheckNodePort` this node serves (`externalTrafficPolicy:
/// Local`), and what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    /// The port.
    pub node_port: u16,
    /// Ready endpoints on this node (terminating ones do not count, as in
    /// kube-proxy): 200 when there is one, 503 otherwise.
    pub local_endpoints: u32,
}

/// `loadBalancerSourceRanges` of one load-balancer frontend: only clients
/// in `ranges` may reach it from outside the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceRanges {
    /// The load-balancer frontend.
    pub frontend: SocketAddr,
    /// Its protocol.
    pub proto: Proto,
    /// The allowed client prefixes.
    pub ranges: Arc<[IpCidr]>,
}

/// Everything one Service wants programmed (possibly nothing: headless,
/// ExternalName, owned by another proxy).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DesiredService {
    /// Frontends, sorted by (address, protocol, scope).
    pub frontends: Vec<DesiredFrontend>,
    /// Ports that are not translated (SCTP: no socket hook covers it), as
    /// `name/SCTP:port`, for a log line.
    pub untranslated_ports: Vec<String>,
    /// Its health check node port, if this node serves one.
    pub health_check: Option<HealthCheck>,
    /// Source restrictions of its load-balancer frontends (none: open).
    pub source_ranges: Vec<SourceRanges>,
}

#[cfg(test)]
mod tests;
