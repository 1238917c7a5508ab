//! Every address the bench uses, derived from a service's index, so that the
//! orchestrator, the workers and the rule generators agree without passing
//! lists around.
//!
//! ```text
//! 10.96.0.0/12   Service VIPs: 10.96.0.10 bulk, 10.96.0.11 UDP, 10.96.1.0 + i service i
//! 10.64.0.0/12   backends: one address per endpoint, all local in the bench
//!                netns through one `local` route (AnyIP), so a single
//!                listener on 0.0.0.0 serves every endpoint
//! 10.64.0.0/10   the "cluster CIDR" of the kube-proxy layouts (masquerade rules)
//! 10.127.255.1   the client's own address (on lo, inside the cluster CIDR,
//!                as a pod's would be, so no connection is masqueraded)
//! ```
//!
//! IPv6 mirrors it: every IPv4 address a.b.c.d above has the twin
//! `fd00::a.b.c.d` (the IPv4 bits in the last 32 bits), so the same index
//! gives the same Service in either family and the v6 ranges are the v4
//! ones with 96 more prefix bits (`fd00::a60:0/108` for 10.96.0.0/12).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// Range the VIPs come from (the agent's `--service-cidr`).
pub(crate) const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The IPv6 twin of [`SERVICE_CIDR`].
pub(crate) const SERVICE_CIDR6: &str = "fd00::a60:0/108";
/// Routed (not local) via lo in the bench netns: an untranslated connect
/// goes nowhere, and netfilter's OUTPUT hook sees a routable packet to DNAT.
pub(crate) const SERVICE_ROUTE: &str = "10.96.0.0/12";
/// Made local (AnyIP) in the bench netns: every endpoint address accepts.
pub(crate) const BACKEND_ROUTE: &str = "10.64.0.0/12";
/// The IPv6 twin of [`BACKEND_ROUTE`].
pub(crate) const BACKEND_ROUTE6: &str = "fd00::a40:0/108";
/// kube-proxy's `--cluster-cidr` in the generated layouts.
pub(crate) const CLUSTER_CIDR: &str = "10.64.0.0/10";
/// The IPv6 twin of [`CLUSTER_CIDR`].
pub(crate) const CLUSTER_CIDR6: &str = "fd00::a40:0/106";
/// The client's address (a "pod" address).
pub(crate) const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 127, 255, 1);
/// Namespace of every bench Service.
pub(crate) const NAMESPACE: &str = "bench";
/// Port name of every bench Service port.
pub(crate) const PORT_NAME: &str = "p";

/// Service port of the connect-latency Services.
pub(crate) const SERVICE_PORT: u16 = 80;
/// Backend port: accept() then close().
pub(crate) const BACKEND_PORT: u16 = 8080;
/// Backend port of the bulk Service: reads and discards.
pub(crate) const SINK_PORT: u16 = 9090;
/// Service port of the UDP Service (exercises sendmsg4/recvmsg4).
pub(crate) const UDP_PORT: u16 = 53;
/// Backend port of the UDP Service: echoes.
pub(crate) const UDP_BACKEND_PORT: u16 = 5353;

/// VIP of the bulk-throughput Service.
pub(crate) const BULK_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// VIP of the UDP Service.
pub(crate) const UDP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// A VIP no mode translates: connecting to it must fail.
pub(crate) const UNUSED_VIP: Ipv4Addr = Ipv4Addr::new(10, 111, 255, 254);
/// The one backend of the bulk and UDP Services.
pub(crate) const EXTRA_BACKEND: Ipv4Addr = Ipv4Addr::new(10, 79, 255, 1);

const VIP_BASE: u32 = u32::from_be_bytes([10, 96, 1, 0]);
const BACKEND_BASE: u32 = u32::from_be_bytes([10, 64, 1, 0]);
/// Endpoints added by the single-change measurement (never connected to).
const CHURN_BASE: u32 = u32::from_be_bytes([10, 80, 0, 0]);

/// VIP of service `i`.
pub(crate) fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(VIP_BASE + i)
}

/// Address of endpoint `j` of service `i` when every service has `per` endpoints.
pub(crate) fn backend(i: u32, j: u32, per: u32) -> Ipv4Addr {
    Ipv4Addr::from(BACKEND_BASE + i * per + j)
}

/// The north-south bench's node ports: service `i` has `NODE_PORT_BASE + i`
/// (10k Services need a wider range than the default 30000-32767: the
/// agent gets `--service-node-port-range` [`NODE_PORT_RANGE`], as an API
/// server would need `--service-node-port-range`; kube-proxy's layouts do
/// not care), the bulk Service [`BULK_NODE_PORT`].
pub(crate) const NODE_PORT_BASE: u16 = 20_000;
pub(crate) const BULK_NODE_PORT: u16 = 19_999;
pub(crate) const NODE_PORT_RANGE: &str = "19000-32767";

/// Node port of service `i`.
pub(crate) fn node_port(i: u32) -> u16 {
    NODE_PORT_BASE + u16::try_from(i).expect("the north-south bench has at most 12,767 Services")
}

/// Address of the endpoint added by change number `k`.
pub(crate) fn churn_backend(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(CHURN_BASE + k)
}

/// The IPv6 twin of an IPv4 bench address: `fd00::a.b.c.d`.
pub(crate) fn twin6(v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from((0xfd00u128 << 112) | u128::from(u32::from(v4)))
}

/// The socket family a client connects with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Family {
    /// AF_INET to an IPv4 Service.
    #[default]
    Inet,
    /// AF_INET6 to an IPv4 Service (`::ffff:a.b.c.d`, Java's default).
    Mapped,
    /// AF_INET6 to an IPv6 Service (the IPv6 twin of the same Service).
    Ipv6,
}

impl Family {
    pub(crate) const ALL: [Self; 3] = [Self::Inet, Self::Mapped, Self::Ipv6];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Inet => "IPv4 (AF_INET)",
            Self::Mapped => "IPv4 from AF_INET6 (v4-mapped)",
            Self::Ipv6 => "IPv6",
        }
    }

    /// What a client of this family dials for the IPv4 bench address `v4`.
    pub(crate) fn dial(self, v4: SocketAddrV4) -> SocketAddr {
        let ip = match self {
            Self::Inet => IpAddr::V4(*v4.ip()),
            Self::Mapped => IpAddr::V6(v4.ip().to_ipv6_mapped()),
            Self::Ipv6 => IpAddr::V6(twin6(*v4.ip())),
        };
        SocketAddr::new(ip, v4.port())
    }

    /// The address a backend sees accepting a connection this family
    /// dialled to the IPv4 bench address `v4`: a v4-mapped connection is
    /// IPv4 on the wire, so the backend's AF_INET listener takes it.
    pub(crate) fn accepted(self, v4: SocketAddrV4) -> SocketAddr {
        match self {
            Self::Inet | Self::Mapped => SocketAddr::V4(v4),
            Self::Ipv6 => SocketAddr::new(IpAddr::V6(twin6(*v4.ip())), v4.port()),
        }
    }
}

/// Name of service `i`.
pub(crate) fn service_name(i: u32) -> String {
    format!("svc-{i}")
}

/// Transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// Lower case, as iptables and nft spell it.
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// Upper case, as Kubernetes spells it.
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// One Service port with its endpoints, the unit every layout is built from.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSpec {
    pub(crate) name: String,
    pub(crate) vip: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) proto: Proto,
    pub(crate) backends: Vec<SocketAddrV4>,
    /// Type NodePort with this node port (the north-south bench), else
    /// ClusterIP.
    pub(crate) node_port: Option<u16>,
}

impl ServiceSpec {
    /// kube-proxy's ServicePortName string: `namespace/name:port`.
    pub(crate) fn port_name(&self) -> String {
        format!("{NAMESPACE}/{}:{PORT_NAME}", self.name)
    }
}

/// The Services of one size: the two fixed ones (bulk, UDP) first, then
/// `count` services with `per` endpoints each, in index order (so the last
/// one is the last rule of kube-proxy's KUBE-SERVICES chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Topology {
    pub(crate) services: u32,
    pub(crate) endpoints: u32,
}

impl Topology {
    /// The fixed Services every mode carries.
    pub(crate) fn extras() -> [ServiceSpec; 2] {
        [
            ServiceSpec {
                name: "bulk".into(),
                vip: BULK_VIP,
                port: SERVICE_PORT,
                proto: Proto::Tcp,
                backends: vec![SocketAddrV4::new(EXTRA_BACKEND, SINK_PORT)],
                node_port: None,
            },
            ServiceSpec {
                name: "udp".into(),
                vip: UDP_VIP,
                port: UDP_PORT,
                proto: Proto::Udp,
                backends: vec![SocketAddrV4::new(EXTRA_BACKEND, UDP_BACKEND_PORT)],
                node_port: None,
            },
        ]
    }

    /// Service `i`.
    pub(crate) fn service(&self, i: u32) -> ServiceSpec {
        ServiceSpec {
            name: service_name(i),
            vip: vip(i),
            port: SERVICE_PORT,
            proto: Proto::Tcp,
            backends: (0..self.endpoints)
                .map(|j| SocketAddrV4::new(backend(i, j, self.endpoints), BACKEND_PORT))
                .collect(),
            node_port: None,
        }
    }

    /// Every Service, extras first, as the north-south bench has them:
    /// service `i` and the bulk Service also of type NodePort
    /// ([`node_port`], [`BULK_NODE_PORT`]); the UDP one stays ClusterIP.
    pub(crate) fn with_node_ports(&self) -> Vec<ServiceSpec> {
        let mut all: Vec<ServiceSpec> = self.all().collect();
        for svc in &mut all {
            svc.node_port = if svc.vip == BULK_VIP {
                Some(BULK_NODE_PORT)
            } else if svc.vip == UDP_VIP {
                None
            } else {
                Some(node_port(u32::from(svc.vip) - VIP_BASE))
            };
        }
        all
    }

    /// Every Service, extras first.
    pub(crate) fn all(&self) -> impl Iterator<Item = ServiceSpec> + '_ {
        Self::extras().into_iter().chain((0..self.services).map(|i| self.service(i)))
    }

    /// Number of Service ports including the extras.
    pub(crate) fn service_ports(&self) -> u32 {
        self.services + 2
    }

    /// Number of endpoints including the extras'.
    pub(crate) fn total_endpoints(&self) -> u64 {
        u64::from(self.services) * u64::from(self.endpoints) + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_sizes_stay_inside_their_ranges() {
        // 100k services x 10 endpoints must fit 10.64.0.0/12 and 10.96.0.0/12.
        let last_backend = backend(99_999, 9, 10);
        assert!(u32::from(last_backend) < u32::from(Ipv4Addr::new(10, 80, 0, 0)));
        assert!(u32::from(vip(99_999)) < u32::from(Ipv4Addr::new(10, 112, 0, 0)));
        assert_ne!(vip(0), BULK_VIP);
        assert!(u32::from(UNUSED_VIP) > u32::from(vip(99_999)));
    }

    #[test]
    fn node_ports_fit_their_range() {
        let topo = Topology { services: 10_000, endpoints: 3 };
        let all = topo.with_node_ports();
        let ports: Vec<u16> = all.iter().filter_map(|s| s.node_port).collect();
        assert_eq!(ports.len(), 10_001);
        assert_eq!(all.last().and_then(|s| s.node_port), Some(29_999));
        assert!(ports.iter().all(|p| (19_000..=32_767).contains(p)));
        assert!(all.iter().any(|s| s.vip == UDP_VIP && s.node_port.is_none()));
    }

    #[test]
    fn ipv6_twins_keep_the_ipv4_bits() {
        assert_eq!(twin6(Ipv4Addr::new(10, 96, 1, 0)), "fd00::a60:100".parse::<Ipv6Addr>().unwrap());
        let v4 = SocketAddrV4::new(vip(3), SERVICE_PORT);
        assert_eq!(Family::Mapped.dial(v4).to_string(), "[::ffff:10.96.1.3]:80");
        assert_eq!(Family::Mapped.accepted(v4), SocketAddr::V4(v4));
        assert_eq!(Family::Ipv6.dial(v4).to_string(), "[fd00::a60:103]:80");
    }
}
