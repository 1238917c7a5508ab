//! A Service and its EndpointSlices -> the frontends to program.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use super::{
    DesiredFrontend, DesiredService, FrontendKind, HealthCheck, IpCidr, NodeContext, Proto, Scope, ServicePortKey,
    SourceRanges, endpoints,
    objects::{IpFamily, ServiceObj, SliceObj},
};

/// Labels that hand a Service to another proxy, or mark it headless; such
/// Services are not programmed (kube-proxy's list filter).
pub(crate) const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// See [`LABEL_SERVICE_PROXY_NAME`].
pub(crate) const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub(crate) const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// Largest timeout the API server accepts (one day).
pub(crate) const MAX_AFFINITY_TIMEOUT: i32 = 86_400;

/// Why a Service cannot be translated. The Service is skipped: whatever
/// was programmed for it before stays in effect (like a rejected edit),
/// the error is logged once, and every other Service is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ModelError {
    /// No `spec`.
    #[error("service has no spec")]
    MissingSpec,
    /// A cluster IP that is not an address.
    #[error("invalid clusterIP {0:?}")]
    InvalidClusterIp(String),
    /// A Service that should have a cluster IP has none.
    #[error("service has no clusterIP")]
    MissingClusterIp,
    /// An external or load-balancer IP that is not an address.
    #[error("invalid {field} {value:?}")]
    InvalidIp {
        /// Field path.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A port number outside 1..=65535.
    #[error("port {name:?}: {field} {value} is out of range")]
    InvalidPort {
        /// Port name.
        name: String,
        /// Field.
        field: &'static str,
        /// Value.
        value: i32,
    },
    /// Session affinity timeout outside 1..=86400.
    #[error("sessionAffinityConfig.clientIP.timeoutSeconds {0} is out of range 1..=86400")]
    InvalidAffinityTimeout(i32),
}

/// The frontends of `svc`, with backends from `slices` (the Service's
/// EndpointSlices), as seen from `node`.
pub(crate) fn desired_service(
    svc: &ServiceObj,
    slices: &[&SliceObj],
    node: &NodeContext,
) -> Result<DesiredService, ModelError> {
    if !svc.has_spec {
        return Err(ModelError::MissingSpec);
    }
    if svc.excluded_by_label {
        return Ok(DesiredService::default());
    }
    let svc_type = svc.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Ok(DesiredService::default());
    }
    let cluster_ips = cluster_ips(svc)?;
    if cluster_ips.is_headless {
        return Ok(DesiredService::default());
    }
    if cluster_ips.ips.is_empty() {
        return Err(ModelError::MissingClusterIp);
    }
    // The Service's families are those of its cluster IPs (kube-proxy runs
    // one proxier per family, and each takes the Services with a cluster
    // IP of its family). Its other addresses count only in those families.
    let mut families: Vec<IpFamily> = cluster_ips.ips.iter().map(|ip| IpFamily::of(*ip)).collect();
    families.sort_unstable();
    families.dedup();
    let external_ips = parse_ips(svc.external_ips.iter().map(AsRef::as_ref), "spec.externalIPs")?;
    let lb_ips = if svc_type == "LoadBalancer" { load_balancer_ips(svc)? } else { Vec::new() };
    let node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
    let affinity_timeout = affinity_timeout(svc)?;
    let internal_local = svc.internal_traffic_policy.as_deref() == Some("Local");
    // kube-proxy's ExternalPolicyForExternalIP/NodePort: `Local` applies
    // to NodePort and LoadBalancer Services (external IPs of other types
    // ignore it, as the API server rejects the field there).
    let external_local = svc.external_traffic_policy.as_deref() == Some("Local") && node_ports;
    // The same condition as `source_ranges` below, which builds the ranges.
    let restricted = svc_type == "LoadBalancer" && !svc.lb_source_ranges.is_empty();
    let distribution = endpoints::Distribution::of(svc.traffic_distribution.as_deref());

    let mut frontends = Vec::new();
    let mut untranslated_ports = Vec::new();
    for port in &svc.ports {
        let name = port.name.to_string();
        let proto = match &*port.protocol {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            // SCTP has no socket-level hook here; kube-proxy handles it per
            // packet. Skip the port, keep the others, and say so.
            other => {
                untranslated_ports.push(format!("{name}/{other}:{}", port.port));
                continue;
            }
        };
        let service_port = port_number(&name, "port", port.port)?;
        let node_port =
            port.node_port.filter(|p| node_ports && *p != 0).map(|p| port_number(&name, "nodePort", p)).transpose()?;
        let port_key = ServicePortKey { service: svc.key.clone(), port_name: name.clone(), proto };
        for &family in &families {
            let eps = endpoints::collect(slices, &name, proto, distribution, family);
            let categorized = endpoints::categorize(&eps, node);
            // In-cluster clients of external addresses go to cluster-wide
            // endpoints whatever externalTrafficPolicy says (kube-proxy
            // short-circuits pod traffic to the cluster chain).
            let external: Arc<[SocketAddr]> = categorized.cluster.into();
            // One list for both unless internalTrafficPolicy differs: the
            // first sync holds every Service's lists at once.
            let local: Arc<[SocketAddr]> = categorized.local.into();
            let internal: Arc<[SocketAddr]> = if internal_local { Arc::clone(&local) } else { Arc::clone(&external) };
            let mut add =
                |addr: IpAddr, fe_port: u16, kind: FrontendKind, host_ns_only: bool, backends: &Arc<[SocketAddr]>| {
                    // Clients outside the node reach external addresses only
                    // (never a ClusterIP or the host-only loopback one); with
                    // `externalTrafficPolicy: Local` they get this node's
                    // endpoints (none: their packets are dropped).
                    let twin = external_local && kind != FrontendKind::ClusterIp && !host_ns_only;
                    let fe = DesiredFrontend {
                        addr: SocketAddr::new(addr, fe_port),
                        proto,
                        kind,
                        host_ns_only,
                        scope: Scope::All,
                        port: port_key.clone(),
                        service_port,
                        backends: Arc::clone(backends),
                        affinity_timeout,
                        external_twin: twin,
                        source_restricted: restricted && kind == FrontendKind::LoadBalancer,
                    };
                    if twin {
                        frontends.push(DesiredFrontend {
                            scope: Scope::External,
                            backends: Arc::clone(&local),
                            external_twin: false,
                            ..fe.clone()
                        });
                    }
                    frontends.push(fe);
                };
            let of_family = |ips: &[IpAddr]| ips.iter().copied().filter(|ip| IpFamily::of(*ip) == family).collect();
            let (cluster, external_ips, lb_ips): (Vec<_>, Vec<_>, Vec<_>) =
                (of_family(&cluster_ips.ips), of_family(&external_ips), of_family(&lb_ips));
            for ip in cluster {
                add(ip, service_port, FrontendKind::ClusterIp, false, &internal);
            }
            for ip in external_ips {
                add(ip, service_port, FrontendKind::ExternalIp, false, &external);
            }
            for ip in lb_ips {
                add(ip, service_port, FrontendKind::LoadBalancer, false, &external);
            }
            if let Some(node_port) = node_port {
                let node_addresses: Vec<IpAddr> = of_family(&node.addresses);
                for ip in node_addresses {
                    add(ip, node_port, FrontendKind::NodePort, false, &external);
                }
                let loopback = match family {
                    IpFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                add(loopback, node_port, FrontendKind::NodePort, true, &external);
            }
        }
    }
    frontends.sort_by_key(|f| (f.addr, f.proto, f.scope));
    frontends.dedup_by(|a, b| (a.addr, a.proto, a.scope) == (b.addr, b.proto, b.scope));
    let health_check = match svc.health_check_node_port {
        Some(port) if external_local && port != 0 => Some(HealthCheck {
            node_port: port_number("", "healthCheckNodePort", port)?,
            local_endpoints: local_ready_endpoints(svc, slices, node, families[0]),
        }),
        _ => None,
    };
    let source_ranges = source_ranges(svc, svc_type, &frontends)?;
    Ok(DesiredService { frontends, untranslated_ports, health_check, source_ranges })
}

/// `loadBalancerSourceRanges` of a LoadBalancer Service, for each of its
/// load-balancer frontends (the addresses kube-proxy's firewall chain
/// covers); the ranges of each frontend's family.
fn source_ranges(
    svc: &ServiceObj,
    svc_type: &str,
    frontends: &[DesiredFrontend],
) -> Result<Vec<SourceRanges>, ModelError> {
    if svc_type != "LoadBalancer" || svc.lb_source_ranges.is_empty() {
        return Ok(Vec::new());
    }
    let ranges: Vec<IpCidr> = svc
        .lb_source_ranges
        .iter()
        .map(|r| {
            r.trim()
                .parse::<IpCidr>()
                .map_err(|_| ModelError::InvalidIp { field: "spec.loadBalancerSourceRanges", value: r.to_string() })
        })
        .collect::<Result<_, _>>()?;
    Ok(frontends
        .iter()
        .filter(|fe| fe.kind == FrontendKind::LoadBalancer && fe.scope == Scope::All)
        .map(|fe| SourceRanges {
            frontend: fe.addr,
            proto: fe.proto,
            ranges: ranges.iter().filter(|r| r.family() == IpFamily::of(fe.addr.ip())).copied().collect(),
        })
        .collect())
}

/// Distinct ready endpoint addresses on this node over the Service's
/// ports, in its primary family (kube-proxy's LocalReadyEndpoints).
fn local_ready_endpoints(svc: &ServiceObj, slices: &[&SliceObj], node: &NodeContext, family: IpFamily) -> u32 {
    let mut ips = std::collections::BTreeSet::new();
    for port in &svc.ports {
        let Some(proto) = (match &*port.protocol {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            _ => None,
        }) else {
            continue;
        };
        let eps = endpoints::collect(slices, &port.name, proto, endpoints::Distribution::Any, family);
        ips.extend(eps.iter().filter(|ep| ep.ready && ep.node_name == Some(node.name.as_str())).map(|ep| ep.addr.ip()));
    }
    u32::try_from(ips.len()).unwrap_or(u32::MAX)
}

struct ClusterIps {
    /// At most one per family (the API server's rule; extra ones ignored).
    ips: Vec<IpAddr>,
    is_headless: bool,
}

fn cluster_ips(svc: &ServiceObj) -> Result<ClusterIps, ModelError> {
    let mut raw: Vec<&str> = svc.cluster_ips.iter().map(AsRef::as_ref).collect();
    if raw.is_empty()
        && let Some(ip) = svc.cluster_ip.as_deref()
    {
        raw.push(ip);
    }
    let raw: Vec<&str> = raw.into_iter().filter(|ip| !ip.is_empty()).collect();
    if raw.contains(&"None") {
        return Ok(ClusterIps { ips: Vec::new(), is_headless: true });
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in &raw {
        let Ok(ip) = ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            return Err(ModelError::InvalidClusterIp((*ip).to_owned()));
        };
        if !ips.iter().any(|have| IpFamily::of(*have) == IpFamily::of(ip)) {
            ips.push(ip);
        }
    }
    Ok(ClusterIps { ips, is_headless: false })
}

fn parse_ips<'a>(values: impl Iterator<Item = &'a str>, field: &'static str) -> Result<Vec<IpAddr>, ModelError> {
    values
        .map(|value| {
            // v4-mapped addresses are the IPv4 addresses they map.
            value
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| ModelError::InvalidIp { field, value: value.to_owned() })
        })
        .collect()
}

/// Ingress IPs, except those with `ipMode: Proxy` (KEP-1860: traffic must
/// really go through the load balancer).
fn load_balancer_ips(svc: &ServiceObj) -> Result<Vec<IpAddr>, ModelError> {
    let ips = svc.lb_ingress.iter().filter(|(_, proxy_mode)| !proxy_mode).map(|(ip, _)| ip.as_ref());
    parse_ips(ips, "status.loadBalancer.ingress[].ip")
}

fn affinity_timeout(svc: &ServiceObj) -> Result<u32, ModelError> {
    if svc.session_affinity.as_deref() != Some("ClientIP") {
        return Ok(0);
    }
    match svc.affinity_timeout {
        None => Ok(DEFAULT_AFFINITY_TIMEOUT),
        Some(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => Ok(t.unsigned_abs()),
        Some(t) => Err(ModelError::InvalidAffinityTimeout(t)),
    }
}

fn port_number(name: &str, field: &'static str, value: i32) -> Result<u16, ModelError> {
    u16::try_from(value).ok().filter(|p| *p != 0).ok_or_else(|| ModelError::InvalidPort {
        name: name.to_owned(),
        field,
        value,
    })
}
