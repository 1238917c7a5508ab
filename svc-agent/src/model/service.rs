//! A Service and its EndpointSlices -> the frontends to program.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::Arc,
};

use super::{
    DesiredFrontend, DesiredService, FrontendKind, NodeContext, Proto, ServicePortKey, endpoints,
    objects::{ServiceObj, SliceObj},
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
    if cluster_ips.v4.is_empty() && !cluster_ips.any {
        return Err(ModelError::MissingClusterIp);
    }
    let external_ips = parse_ips(svc.external_ips.iter().map(AsRef::as_ref), "spec.externalIPs")?;
    let lb_ips = if svc_type == "LoadBalancer" { load_balancer_ips(svc)? } else { Vec::new() };
    let node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
    let affinity_timeout = affinity_timeout(svc)?;
    let internal_local = svc.internal_traffic_policy.as_deref() == Some("Local");
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
        let eps = endpoints::collect(slices, &name, proto, distribution);
        let categorized = endpoints::categorize(&eps, node);
        let internal: Arc<[SocketAddrV4]> =
            if internal_local { categorized.local.into() } else { categorized.cluster.clone().into() };
        // In-cluster clients of external addresses go to cluster-wide
        // endpoints whatever externalTrafficPolicy says (kube-proxy
        // short-circuits pod traffic to the cluster chain).
        let external: Arc<[SocketAddrV4]> = categorized.cluster.into();
        let port_key = ServicePortKey { service: svc.key.clone(), port_name: name.clone(), proto };
        let mut add = |addr: Ipv4Addr, fe_port: u16, kind, host_ns_only, backends: &Arc<[SocketAddrV4]>| {
            frontends.push(DesiredFrontend {
                addr: SocketAddrV4::new(addr, fe_port),
                proto,
                kind,
                host_ns_only,
                port: port_key.clone(),
                service_port,
                backends: Arc::clone(backends),
                affinity_timeout,
            });
        };
        for ip in &cluster_ips.v4 {
            add(*ip, service_port, FrontendKind::ClusterIp, false, &internal);
        }
        for ip in &external_ips {
            add(*ip, service_port, FrontendKind::ExternalIp, false, &external);
        }
        for ip in &lb_ips {
            add(*ip, service_port, FrontendKind::LoadBalancer, false, &external);
        }
        if node_ports && let Some(node_port) = port.node_port.filter(|p| *p != 0) {
            let node_port = port_number(&name, "nodePort", node_port)?;
            for ip in &node.addresses {
                add(*ip, node_port, FrontendKind::NodePort, false, &external);
            }
            add(Ipv4Addr::LOCALHOST, node_port, FrontendKind::NodePort, true, &external);
        }
    }
    frontends.sort_by_key(|f| (f.addr, f.proto));
    frontends.dedup_by(|a, b| (a.addr, a.proto) == (b.addr, b.proto));
    Ok(DesiredService { frontends, untranslated_ports })
}

struct ClusterIps {
    v4: Vec<Ipv4Addr>,
    /// Any cluster IP at all (IPv6-only Services have no v4 frontends yet).
    any: bool,
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
        return Ok(ClusterIps { v4: Vec::new(), any: true, is_headless: true });
    }
    let mut v4 = Vec::new();
    for ip in &raw {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => v4.push(ip),
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(_) => return Err(ModelError::InvalidClusterIp((*ip).to_owned())),
        }
    }
    Ok(ClusterIps { v4, any: !raw.is_empty(), is_headless: false })
}

fn parse_ips<'a>(values: impl Iterator<Item = &'a str>, field: &'static str) -> Result<Vec<Ipv4Addr>, ModelError> {
    let mut out = Vec::new();
    for value in values {
        match value.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => out.push(ip),
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(_) => return Err(ModelError::InvalidIp { field, value: value.to_owned() }),
        }
    }
    Ok(out)
}

/// Ingress IPs, except those with `ipMode: Proxy` (KEP-1860: traffic must
/// really go through the load balancer).
fn load_balancer_ips(svc: &ServiceObj) -> Result<Vec<Ipv4Addr>, ModelError> {
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
