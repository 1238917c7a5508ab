//! Endpoints -> EndpointSlices, as Kubernetes' EndpointSlice mirroring
//! controller does for Services without a selector (the classic "external
//! database" pattern): only when the Service exists and has no selector.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{
    api::{
        core::v1::{EndpointAddress, Endpoints, Service},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::model::LABEL_SERVICE_NAME;

const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MIRROR_CONTROLLER: &str = "endpointslicemirroring-controller.k8s.io";
const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Slices for every mirrorable Endpoints object.
pub(super) fn mirror_endpoints<'a>(
    services: &[Service],
    endpoints: impl Iterator<Item = &'a Endpoints>,
) -> Vec<EndpointSlice> {
    let selectorless: HashMap<(&str, &str), bool> = services
        .iter()
        .map(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or_default();
            let no_selector = s.spec.as_ref().is_none_or(|sp| sp.selector.as_ref().is_none_or(BTreeMap::is_empty));
            ((ns, name), no_selector)
        })
        .collect();
    let mut out = Vec::new();
    for ep in endpoints {
        let ns = ep.metadata.namespace.as_deref().unwrap_or("default");
        let name = ep.metadata.name.as_deref().unwrap_or_default();
        let skip = ep.metadata.labels.as_ref().is_some_and(|l| l.get(LABEL_SKIP_MIRROR).is_some_and(|v| v == "true"));
        match selectorless.get(&(ns, name)) {
            Some(true) if !skip => out.extend(mirror_one(ns, name, ep)),
            Some(true) => {}
            Some(false) => tracing::debug!(
                "Endpoints {ns}/{name} ignored: its Service has a selector, so its EndpointSlices are used"
            ),
            None => tracing::debug!("Endpoints {ns}/{name} ignored: no Service {ns}/{name}"),
        }
    }
    out
}

/// One slice per subset (a subset is one set of ports).
fn mirror_one(namespace: &str, name: &str, ep: &Endpoints) -> Vec<EndpointSlice> {
    ep.subsets
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, subset)| {
            let ready = subset.addresses.iter().flatten().map(|a| endpoint(a, true));
            let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false));
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-mirror-{i}")),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(BTreeMap::from([
                        (LABEL_SERVICE_NAME.to_owned(), name.to_owned()),
                        (LABEL_MANAGED_BY.to_owned(), MIRROR_CONTROLLER.to_owned()),
                    ])),
                    ..Default::default()
                },
                address_type: "IPv4".to_owned(),
                endpoints: Some(
                    ready.chain(not_ready).filter(|e| e.addresses[0].parse::<std::net::Ipv4Addr>().is_ok()).collect(),
                ),
                ports: Some(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| EndpointPort {
                            name: p.name.clone(),
                            port: Some(p.port),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
            }
        })
        .collect()
}

fn endpoint(addr: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![addr.ip.clone()],
        conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(ready), terminating: None }),
        node_name: addr.node_name.clone(),
        hostname: addr.hostname.clone(),
        target_ref: addr.target_ref.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EndpointPort as CorePort, EndpointSubset, ServiceSpec};

    use super::*;

    fn service(name: &str, selector: bool) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("db".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                selector: selector.then(|| BTreeMap::from([("app".to_owned(), name.to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoints(name: &str) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("db".into()), ..Default::default() },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress { ip: "192.0.2.10".into(), ..Default::default() }]),
                not_ready_addresses: Some(vec![EndpointAddress { ip: "192.0.2.11".into(), ..Default::default() }]),
                ports: Some(vec![CorePort { name: Some("mysql".into()), port: 3306, ..Default::default() }]),
            }]),
        }
    }

    #[test]
    fn mirrors_selectorless_services_only() {
        let services = [service("mysql", false), service("web", true)];
        let eps = [endpoints("mysql"), endpoints("web"), endpoints("orphan")];
        let slices = mirror_endpoints(&services, eps.iter());
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice.metadata.labels.as_ref().unwrap()[LABEL_SERVICE_NAME], "mysql");
        let eps = slice.endpoints.as_ref().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(eps[1].conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(3306));
    }
}
