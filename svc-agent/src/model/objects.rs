//! The parts of Services and EndpointSlices the model reads, held compactly.
//!
//! Sources convert Kubernetes objects into these at their boundary, so the
//! store and the model never hold full objects: a k8s-openapi EndpointSlice
//! costs several hundred bytes per endpoint (object references, metadata,
//! optional fields), these about a tenth of that, and an agent on a large
//! cluster holds every endpoint of every Service. Values are kept raw where
//! the model validates them (addresses, port numbers), so every rule and
//! every error message stays in the model.

use std::net::IpAddr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME, ServiceKey};

/// A Service, as far as translation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceObj {
    /// Namespace and name.
    pub key: ServiceKey,
    /// Whether the object has a `spec` at all.
    pub has_spec: bool,
    /// Labelled `service.kubernetes.io/service-proxy-name` or
    /// `service.kubernetes.io/headless`: not ours to program.
    pub excluded_by_label: bool,
    /// `spec.type` (None: ClusterIP).
    pub type_: Option<Box<str>>,
    /// `spec.clusterIP`.
    pub cluster_ip: Option<Box<str>>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<Box<str>>,
    /// `spec.ipFamilies` (`IPv4`, `IPv6`), for a source that allocates
    /// cluster IPs.
    pub ip_families: Vec<Box<str>>,
    /// `spec.ipFamilyPolicy` (`SingleStack`, `PreferDualStack`,
    /// `RequireDualStack`), likewise.
    pub ip_family_policy: Option<Box<str>>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Box<str>>,
    /// `status.loadBalancer.ingress[]`: (ip, `ipMode: Proxy`).
    pub lb_ingress: Vec<(Box<str>, bool)>,
    /// `spec.ports`.
    pub ports: Vec<ServicePortObj>,
    /// `spec.sessionAffinity`.
    pub session_affinity: Option<Box<str>>,
    /// `spec.sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub affinity_timeout: Option<i32>,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: Option<Box<str>>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<Box<str>>,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<i32>,
    /// `spec.loadBalancerSourceRanges`.
    pub lb_source_ranges: Vec<Box<str>>,
    /// `spec.trafficDistribution`.
    pub traffic_distribution: Option<Box<str>>,
    /// `spec.selector` is set and not empty (Endpoints mirroring skips these).
    pub has_selector: bool,
    /// `spec.allocateLoadBalancerNodePorts`.
    pub allocate_lb_node_ports: Option<bool>,
}

/// One `spec.ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePortObj {
    /// `name` (empty if unset).
    pub name: Box<str>,
    /// `protocol` (TCP if unset).
    pub protocol: Box<str>,
    /// `port`.
    pub port: i32,
    /// `nodePort`.
    pub node_port: Option<i32>,
}

/// An EndpointSlice, as far as translation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceObj {
    /// Namespace.
    pub namespace: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// The `kubernetes.io/service-name` label.
    pub service: Option<Box<str>>,
    /// `addressType`: `IPv4` or `IPv6`; `None` for `FQDN` (never used).
    pub family: Option<IpFamily>,
    /// `ports`.
    pub ports: Vec<SlicePortObj>,
    /// `endpoints`.
    pub endpoints: Vec<EndpointObj>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation:
    /// when the change this version carries happened (the EndpointSlice
    /// controller sets it), for kube-proxy's network programming latency.
    pub trigger_time: Option<std::time::SystemTime>,
}

/// The EndpointSlice controller's annotation of when a change was triggered.
pub(crate) const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An RFC 3339 timestamp (the annotation's format), if it is one.
pub(crate) fn parse_trigger_time(value: &str) -> Option<std::time::SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = value.parse().ok()?;
    Some(std::time::SystemTime::from(ts))
}

/// One `ports[]` entry of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlicePortObj {
    /// `name` (empty if unset).
    pub name: Box<str>,
    /// `protocol` (TCP if unset).
    pub protocol: Box<str>,
    /// `port`.
    pub port: Option<i32>,
}

/// One `endpoints[]` entry of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointObj {
    /// `addresses[0]`, if an address. The API defines the addresses as
    /// fungible ("clients may choose to only use the first element") and
    /// kube-proxy uses only the first; one inline address instead of a
    /// list saves a heap block per endpoint.
    pub address: Option<IpAddr>,
    /// `conditions.ready`.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
    /// `nodeName`.
    pub node_name: Option<Box<str>>,
    /// `zone`.
    pub zone: Option<Box<str>>,
    /// `hints`, boxed: few endpoints carry them, and inline they made
    /// every endpoint 88 bytes instead of 64 (the endpoints are a large
    /// share of the agent's memory at 100k and more).
    pub hints: Option<Box<EndpointHints>>,
}

/// An endpoint's topology hints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct EndpointHints {
    /// `forZones[].name` (None: no zone hints).
    pub zones: Option<Vec<Box<str>>>,
    /// `forNodes[].name` (None: no node hints).
    pub nodes: Option<Vec<Box<str>>>,
}

impl EndpointObj {
    /// `hints.forZones[].name`.
    pub(crate) fn hint_zones(&self) -> Option<&[Box<str>]> {
        self.hints.as_ref()?.zones.as_deref()
    }

    /// `hints.forNodes[].name`.
    pub(crate) fn hint_nodes(&self) -> Option<&[Box<str>]> {
        self.hints.as_ref()?.nodes.as_deref()
    }
}

/// An IP family, as Services and EndpointSlices name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IpFamily {
    /// `IPv4`.
    V4,
    /// `IPv6`.
    V6,
}

impl IpFamily {
    /// From `IPv4`/`IPv6`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Self::V4),
            "IPv6" => Some(Self::V6),
            _ => None,
        }
    }

    /// The family of an address.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

fn boxed(s: &str) -> Box<str> {
    s.into()
}

fn opt(s: Option<&String>) -> Option<Box<str>> {
    s.map(|s| boxed(s))
}

impl From<&Service> for ServiceObj {
    fn from(svc: &Service) -> Self {
        let meta = &svc.metadata;
        let labels = meta.labels.as_ref();
        let spec = svc.spec.as_ref();
        let strings = |v: Option<&Vec<String>>| v.into_iter().flatten().map(|s| boxed(s)).collect();
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        Self {
            key: ServiceKey::new(
                meta.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                meta.name.clone().unwrap_or_default(),
            ),
            has_spec: spec.is_some(),
            excluded_by_label: labels
                .is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME) || l.contains_key(LABEL_HEADLESS)),
            type_: opt(spec.and_then(|s| s.type_.as_ref())),
            cluster_ip: opt(spec.and_then(|s| s.cluster_ip.as_ref())),
            cluster_ips: strings(spec.and_then(|s| s.cluster_ips.as_ref())),
            ip_families: strings(spec.and_then(|s| s.ip_families.as_ref())),
            ip_family_policy: opt(spec.and_then(|s| s.ip_family_policy.as_ref())),
            external_ips: strings(spec.and_then(|s| s.external_ips.as_ref())),
            lb_ingress: ingress
                .into_iter()
                .flatten()
                .filter_map(|i| Some((boxed(i.ip.as_ref()?), i.ip_mode.as_deref() == Some("Proxy"))))
                .collect(),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| ServicePortObj {
                    name: boxed(p.name.as_deref().unwrap_or("")),
                    protocol: boxed(p.protocol.as_deref().unwrap_or("TCP")),
                    port: p.port,
                    node_port: p.node_port,
                })
                .collect(),
            session_affinity: opt(spec.and_then(|s| s.session_affinity.as_ref())),
            affinity_timeout: spec
                .and_then(|s| s.session_affinity_config.as_ref())
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds),
            internal_traffic_policy: opt(spec.and_then(|s| s.internal_traffic_policy.as_ref())),
            external_traffic_policy: opt(spec.and_then(|s| s.external_traffic_policy.as_ref())),
            health_check_node_port: spec.and_then(|s| s.health_check_node_port),
            lb_source_ranges: strings(spec.and_then(|s| s.load_balancer_source_ranges.as_ref())),
            traffic_distribution: opt(spec.and_then(|s| s.traffic_distribution.as_ref())),
            has_selector: spec.and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty()),
            allocate_lb_node_ports: spec.and_then(|s| s.allocate_load_balancer_node_ports),
        }
    }
}

impl From<&EndpointSlice> for SliceObj {
    fn from(slice: &EndpointSlice) -> Self {
        let meta = &slice.metadata;
        Self {
            namespace: boxed(meta.namespace.as_deref().unwrap_or("default")),
            name: boxed(meta.name.as_deref().unwrap_or("")),
            service: opt(meta.labels.as_ref().and_then(|l| l.get(LABEL_SERVICE_NAME))),
            family: IpFamily::parse(&slice.address_type),
            trigger_time: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_TRIGGER_TIME))
                .and_then(|t| parse_trigger_time(t)),
            ports: slice
                .ports
                .iter()
                .flatten()
                .map(|p| SlicePortObj {
                    name: boxed(p.name.as_deref().unwrap_or("")),
                    protocol: boxed(p.protocol.as_deref().unwrap_or("TCP")),
                    port: p.port,
                })
                .collect(),
            endpoints: slice
                .endpoints
                .iter()
                .flatten()
                .map(|ep| {
                    let cond = ep.conditions.as_ref();
                    EndpointObj {
                        // A v4-mapped address is the IPv4 address it maps
                        // (so it counts as IPv4, never as a native IPv6 one).
                        address: ep
                            .addresses
                            .first()
                            .and_then(|a| a.parse::<IpAddr>().ok())
                            .map(|ip| ip.to_canonical()),
                        ready: cond.and_then(|c| c.ready),
                        serving: cond.and_then(|c| c.serving),
                        terminating: cond.and_then(|c| c.terminating),
                        node_name: opt(ep.node_name.as_ref()),
                        zone: opt(ep.zone.as_ref()),
                        hints: ep.hints.as_ref().map(|h| {
                            Box::new(EndpointHints {
                                zones: h.for_zones.as_ref().map(|z| z.iter().map(|z| boxed(&z.name)).collect()),
                                nodes: h.for_nodes.as_ref().map(|n| n.iter().map(|n| boxed(&n.name)).collect()),
                            })
                        }),
                    }
                })
                .collect(),
        }
    }
}

// Every endpoint of every slice is one of these: keep it small.
const _: () = assert!(size_of::<EndpointObj>() <= 64);
