//! Which endpoints of a Service port are usable, following kube-proxy's
//! `CategorizeEndpoints`: ready endpoints, else serving-and-terminating
//! ones (KEP-1669); node-local subsets for `internalTrafficPolicy: Local`;
//! zone preference when every endpoint carries a zone hint.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{NodeContext, Proto};

/// One endpoint of one Service port, with the facts the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddrV4,
    pub(crate) ready: bool,
    pub(crate) serving: bool,
    pub(crate) terminating: bool,
    pub(crate) node_name: Option<String>,
    /// Zones this endpoint is hinted for; `None` when it has no hint.
    pub(crate) zones: Option<Vec<String>>,
}

/// Endpoints of the Service port named `port_name` with protocol `proto`,
/// from every IPv4 slice. The backend port is the slice's port with the
/// Service port's name: that is how a named `targetPort` resolves.
///
/// With `zone_from_endpoint` (trafficDistribution: PreferClose), an endpoint
/// without hints is treated as hinted for its own `zone`, which is what the
/// EndpointSlice controller would write (the manifest source has none).
pub(crate) fn collect(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Proto,
    zone_from_endpoint: bool,
) -> Vec<Endpoint> {
    // Keyed by address so an endpoint listed by two slices (a slice being
    // replaced) counts once; a ready copy wins over a not-ready one.
    let mut by_addr: BTreeMap<SocketAddrV4, Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice_port(slice, port_name, proto) else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let cond = ep.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            // "If nil, consumers should defer to the ready condition."
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let hinted = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|zones| zones.iter().map(|z| z.name.clone()).collect::<Vec<_>>())
                .filter(|zones| !zones.is_empty());
            let zones = hinted.or_else(|| zone_from_endpoint.then(|| ep.zone.clone().map(|z| vec![z])).flatten());
            for address in &ep.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                let endpoint = Endpoint {
                    addr: SocketAddrV4::new(ip, port),
                    ready,
                    serving,
                    terminating,
                    node_name: ep.node_name.clone(),
                    zones: zones.clone(),
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
fn slice_port(slice: &EndpointSlice, name: &str, proto: Proto) -> Option<u16> {
    slice.ports.as_ref()?.iter().find_map(|p| {
        let p_name = p.name.as_deref().unwrap_or("");
        let p_proto = p.protocol.as_deref().unwrap_or("TCP");
        (p_name == name && p_proto == proto.as_str())
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
    pub(crate) cluster: Vec<SocketAddrV4>,
    /// For `internalTrafficPolicy: Local`: usable endpoints on this node.
    pub(crate) local: Vec<SocketAddrV4>,
}

/// Applies the readiness fallback, locality and topology rules.
pub(crate) fn categorize(endpoints: &[Endpoint], node: &NodeContext) -> Categorized {
    let use_topology = can_use_topology(endpoints, node);
    let zone_ok = |ep: &Endpoint| {
        !use_topology || ep.zones.as_ref().is_some_and(|z| node.zone.as_ref().is_some_and(|nz| z.contains(nz)))
    };
    let is_local = |ep: &Endpoint| ep.node_name.as_deref() == Some(node.name.as_str());

    let cluster = usable(endpoints, |ep| zone_ok(ep), |_| true);
    let local = usable(endpoints, is_local, is_local);
    Categorized { cluster, local }
}

/// Ready endpoints passing `ready_filter`; if there are none, the
/// serving-and-terminating ones passing `fallback_filter`.
fn usable(
    endpoints: &[Endpoint],
    ready_filter: impl Fn(&Endpoint) -> bool,
    fallback_filter: impl Fn(&Endpoint) -> bool,
) -> Vec<SocketAddrV4> {
    let ready: Vec<_> = endpoints.iter().filter(|ep| ep.ready && ready_filter(ep)).map(|ep| ep.addr).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.iter().filter(|ep| ep.serving && ep.terminating && fallback_filter(ep)).map(|ep| ep.addr).collect()
}

/// Zone preference applies only when this node's zone is known, every ready
/// endpoint has a zone hint, and at least one is hinted for this zone
/// (otherwise kube-proxy ignores hints rather than black-holing traffic).
fn can_use_topology(endpoints: &[Endpoint], node: &NodeContext) -> bool {
    let Some(zone) = node.zone.as_ref() else {
        return false;
    };
    let mut any_here = false;
    for ep in endpoints.iter().filter(|ep| ep.ready) {
        let Some(zones) = ep.zones.as_ref() else {
            return false;
        };
        any_here |= zones.contains(zone);
    }
    any_here
}
