//! Endpoints -> EndpointSlices, as Kubernetes' EndpointSlice mirroring
//! controller does for Services without a selector (the classic "external
//! database" pattern): only when the Service exists and has no selector.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};

use crate::model::{
    IpFamily, ServiceKey, ServiceObj, SliceObj,
    objects::{EndpointObj, SlicePortObj},
};

const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Slices for every mirrorable Endpoints object.
pub(super) fn mirror_endpoints<'a>(
    services: &[Arc<ServiceObj>],
    endpoints: impl Iterator<Item = &'a Endpoints>,
) -> Vec<Arc<SliceObj>> {
    let selectorless: HashMap<&ServiceKey, bool> = services.iter().map(|s| (&s.key, !s.has_selector)).collect();
    let mut out = Vec::new();
    for ep in endpoints {
        let key = ServiceKey::new(
            ep.metadata.namespace.as_deref().unwrap_or("default"),
            ep.metadata.name.as_deref().unwrap_or_default(),
        );
        let skip = ep.metadata.labels.as_ref().is_some_and(|l| l.get(LABEL_SKIP_MIRROR).is_some_and(|v| v == "true"));
        match selectorless.get(&key) {
            Some(true) if !skip => out.extend(mirror_one(&key, ep)),
            Some(true) => {}
            Some(false) => {
                tracing::debug!("Endpoints {key} ignored: its Service has a selector, so its EndpointSlices are used");
            }
            None => tracing::debug!("Endpoints {key} ignored: no Service {key}"),
        }
    }
    out
}

/// One slice per subset and address family (a subset is one set of
/// ports; a slice holds one family, as the mirroring controller writes).
fn mirror_one(key: &ServiceKey, ep: &Endpoints) -> Vec<Arc<SliceObj>> {
    let mut out = Vec::new();
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let ready = subset.addresses.iter().flatten().map(|a| endpoint(a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false));
        let endpoints: Vec<EndpointObj> = ready.chain(not_ready).filter(|e| e.address.is_some()).collect();
        let ports: Vec<SlicePortObj> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| SlicePortObj {
                name: p.name.as_deref().unwrap_or("").into(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").into(),
                port: Some(p.port),
            })
            .collect();
        for (family, suffix) in [(IpFamily::V4, ""), (IpFamily::V6, "-v6")] {
            let of_family: Vec<EndpointObj> =
                endpoints.iter().filter(|e| e.address.is_some_and(|ip| IpFamily::of(ip) == family)).cloned().collect();
            if of_family.is_empty() && (family == IpFamily::V6 || !endpoints.is_empty()) {
                continue;
            }
            out.push(Arc::new(SliceObj {
                namespace: key.namespace.as_str().into(),
                name: format!("{}-mirror-{i}{suffix}", key.name).into(),
                service: Some(key.name.as_str().into()),
                family: Some(family),
                ports: ports.clone(),
                endpoints: of_family,
                trigger_time: ep
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::model::objects::ANNOTATION_TRIGGER_TIME))
                    .and_then(|t| crate::model::objects::parse_trigger_time(t)),
            }));
        }
    }
    out
}

fn endpoint(addr: &EndpointAddress, ready: bool) -> EndpointObj {
    EndpointObj {
        address: addr.ip.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_canonical()),
        ready: Some(ready),
        serving: Some(ready),
        terminating: None,
        node_name: addr.node_name.as_deref().map(Into::into),
        zone: None,
        hints: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::core::v1::{EndpointPort as CorePort, EndpointSubset, Service, ServiceSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn service(name: &str, selector: bool) -> Arc<ServiceObj> {
        let svc = Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("db".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                selector: selector.then(|| BTreeMap::from([("app".to_owned(), name.to_owned())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(ServiceObj::from(&svc))
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
        assert_eq!(slice.service.as_deref(), Some("mysql"));
        assert_eq!(slice.endpoints.len(), 2);
        assert_eq!(slice.endpoints[0].ready, Some(true));
        assert_eq!(slice.endpoints[1].ready, Some(false));
        assert_eq!(slice.ports[0].port, Some(3306));
    }
}
