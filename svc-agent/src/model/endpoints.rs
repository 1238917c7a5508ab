//! Which endpoints of a Service port are usable, following kube-proxy's
//! `CategorizeEndpoints`: ready endpoints, else serving-and-terminating
//! ones (KEP-1669); node-local subsets for `internalTrafficPolicy: Local`;
//! node preference when every endpoint carries a node hint and one names
//! this node (`PreferSameNode`), else zone preference when every endpoint
//! carries a zone hint and one names this zone.

use std::{collections::BTreeMap, net::SocketAddr};

use super::{
    NodeContext, Proto,
    objects::{IpFamily, SliceObj, SlicePortObj},
};

/// One endpoint of one Service port, with the facts the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) ready: bool,
    pub(crate) serving: bool,
    pub(crate) terminating: bool,
    pub(crate) node_name: Option<&'a str>,
    /// Zones this endpoint is hinted for; `None` when it has no hint.
    pub(crate) zones: Option<Vec<&'a str>>,
    /// Nodes this endpoint is hinted for; `None` when it has no hint.
    pub(crate) nodes: Option<Vec<&'a str>>,
}

/// `spec.trafficDistribution`, as far as the hints it implies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distribution {
    /// Unset (or unknown): only hints that are present count.
    Any,
    /// `PreferSameZone`, or its older name `PreferClose`.
    SameZone,
    /// `PreferSameNode` (the EndpointSlice controller hints both the
    /// endpoint's node and its zone).
    SameNode,
}

impl Distribution {
    /// From `spec.trafficDistribution`.
    pub(crate) fn of(value: Option<&str>) -> Self {
        match value {
            Some("PreferClose" | "PreferSameZone") => Self::SameZone,
            Some("PreferSameNode") => Self::SameNode,
            _ => Self::Any,
        }
    }
}

/// Endpoints of the Service port named `port_name` with protocol `proto`,
/// from every slice of address family `family` (each family of a
/// dual-stack Service uses only its own slices, as kube-proxy's
/// per-family proxiers do). The backend port is the slice's port with the
/// Service port's name: that is how a named `targetPort` resolves.
///
/// With a `distribution` preference, an endpoint without hints is treated
/// as hinted for its own `zone` (and, for `PreferSameNode`, its own
/// `nodeName`), which is what the EndpointSlice controller would write
/// (the manifest source has none).
pub(crate) fn collect<'a>(
    slices: &[&'a SliceObj],
    port_name: &str,
    proto: Proto,
    distribution: Distribution,
    family: IpFamily,
) -> Vec<Endpoint<'a>> {
    let zone_from_endpoint = distribution != Distribution::Any;
    let node_from_endpoint = distribution == Distribution::SameNode;
    // Keyed by address so an endpoint listed by two slices (a slice being
    // replaced) counts once; a ready copy wins over a not-ready one.
    let mut by_addr: BTreeMap<SocketAddr, Endpoint<'a>> = BTreeMap::new();
    for slice in slices {
        if slice.family != Some(family) {
            continue;
        }
        let Some(port) = slice_port(&slice.ports, port_name, proto) else {
            continue;
        };
        for ep in &slice.endpoints {
            // kube-proxy's endpointslice cache: ready and serving are true
            // unless explicitly false, each on its own; terminating only
            // when explicitly true.
            let ready = ep.ready.unwrap_or(true);
            let serving = ep.serving.unwrap_or(true);
            let terminating = ep.terminating.unwrap_or(false);
            let hinted = ep
                .hint_zones()
                .map(|zones| zones.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
                .filter(|zones| !zones.is_empty());
            let zones = hinted.or_else(|| if zone_from_endpoint { ep.zone.as_deref().map(|z| vec![z]) } else { None });
            let hinted_nodes = ep
                .hint_nodes()
                .map(|nodes| nodes.iter().map(AsRef::as_ref).collect::<Vec<&str>>())
                .filter(|nodes| !nodes.is_empty());
            let nodes = hinted_nodes
                .or_else(|| if node_from_endpoint { ep.node_name.as_deref().map(|n| vec![n]) } else { None });
            // An address of the other family in this slice is malformed:
            // not used.
            if let Some(ip) = ep.address.filter(|ip| IpFamily::of(*ip) == family) {
                let endpoint = Endpoint {
                    addr: SocketAddr::new(ip, port),
                    ready,
                    serving,
                    terminating,
                    node_name: ep.node_name.as_deref(),
                    zones: zones.clone(),
                    nodes: nodes.clone(),
                };
                match by_addr.get(&endpoint.addr) {
                    Some(existing) if existing.ready || !endpoint.ready => {}
                    _ => {
                        by_addr.insert(endpoint.addr, endpoint);
                    }
                }
            }
        }
    }
    by_addr.into_values().collect()
}

/// The slice's port number for the Service port `(name, proto)`.
fn slice_port(ports: &[SlicePortObj], name: &str, proto: Proto) -> Option<u16> {
    ports.iter().find_map(|p| {
        (&*p.name == name && &*p.protocol == proto.as_str())
            .then_some(p.port)
            .flatten()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
    })
}

/// The two endpoint sets kube-proxy derives for a Service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Categorized {
    /// For `Cluster` traffic policy (and in-cluster clients of external
    /// addresses): usable endpoints, zone-filtered when hints allow.
    pub(crate) cluster: Vec<SocketAddr>,
    /// For `internalTrafficPolicy: Local`: usable endpoints on this node.
    pub(crate) local: Vec<SocketAddr>,
}

/// Applies the readiness fallback, locality and topology rules.
pub(crate) fn categorize(endpoints: &[Endpoint<'_>], node: &NodeContext) -> Categorized {
    let mode = topology_mode(endpoints, node);
    let topology_ok = |ep: &Endpoint<'_>| match mode {
        Topology::None => true,
        Topology::Node => ep.nodes.as_ref().is_some_and(|n| n.contains(&node.name.as_str())),
        Topology::Zone => ep.zones.as_ref().is_some_and(|z| node.zone.as_deref().is_some_and(|nz| z.contains(&nz))),
    };
    let is_local = |ep: &Endpoint<'_>| ep.node_name == Some(node.name.as_str());

    let cluster = usable(endpoints, |ep| topology_ok(ep), |_| true);
    let local = usable(endpoints, is_local, is_local);
    Categorized { cluster, local }
}

/// Ready endpoints passing `ready_filter`; if there are none, the
/// serving-and-terminating ones passing `fallback_filter`.
fn usable(
    endpoints: &[Endpoint<'_>],
    ready_filter: impl Fn(&Endpoint<'_>) -> bool,
    fallback_filter: impl Fn(&Endpoint<'_>) -> bool,
) -> Vec<SocketAddr> {
    let ready: Vec<_> = endpoints.iter().filter(|ep| ep.ready && ready_filter(ep)).map(|ep| ep.addr).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.iter().filter(|ep| ep.serving && ep.terminating && fallback_filter(ep)).map(|ep| ep.addr).collect()
}

/// Which hints filter the cluster-wide endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    None,
    Zone,
    Node,
}

/// kube-proxy's `topologyModeFromHints`: node hints apply when every ready
/// endpoint has one and at least one names this node; else zone hints,
/// when this node's zone is known, every ready endpoint has one and at
/// least one names this zone; else none (kube-proxy ignores hints rather
/// than black-holing traffic).
fn topology_mode(endpoints: &[Endpoint<'_>], node: &NodeContext) -> Topology {
    let ready = || endpoints.iter().filter(|ep| ep.ready);
    let all_have = |hints: fn(&Endpoint<'_>) -> bool| ready().all(hints) && ready().next().is_some();
    if all_have(|ep| ep.nodes.is_some())
        && ready().any(|ep| ep.nodes.as_ref().is_some_and(|n| n.contains(&node.name.as_str())))
    {
        return Topology::Node;
    }
    let Some(zone) = node.zone.as_deref() else {
        return Topology::None;
    };
    if all_have(|ep| ep.zones.is_some()) && ready().any(|ep| ep.zones.as_ref().is_some_and(|z| z.contains(&zone))) {
        return Topology::Zone;
    }
    Topology::None
}
