//! Node ports for manifest Services that have none, as kube-apiserver
//! allocates them from `--service-node-port-range`, sticky like the
//! cluster IPs (module `ipam`): one per port of a NodePort Service, or of
//! a LoadBalancer Service unless `allocateLoadBalancerNodePorts: false`,
//! and the `healthCheckNodePort` of a LoadBalancer Service with
//! `externalTrafficPolicy: Local`. Both come from the one range and never
//! collide. Node ports are seeded from the pinned frontends at start;
//! health-check ports are not pinned, so a restart derives them again
//! (the same, unless the Services around them changed).

use std::{
    collections::{HashMap, HashSet},
    ops::RangeInclusive,
    sync::Arc,
};

use super::ipam::{Sticky, fnv1a};
use crate::model::{ServiceKey, ServiceObj};

/// The slot name of a Service's health-check node port in
/// [`Sticky::node_ports`]: not a port name (those are DNS labels).
const HEALTH_CHECK: &str = "#healthCheckNodePort";

/// Whether `svc`'s ports get node ports.
fn wants_ports(svc: &ServiceObj) -> bool {
    let t = svc.type_.as_deref();
    t == Some("NodePort") || (t == Some("LoadBalancer") && svc.allocate_lb_node_ports != Some(false))
}

/// Whether `svc` gets a health-check node port (the API server's rule:
/// LoadBalancer with `externalTrafficPolicy: Local`).
fn wants_health_check(svc: &ServiceObj) -> bool {
    svc.type_.as_deref() == Some("LoadBalancer") && svc.external_traffic_policy.as_deref() == Some("Local")
}

/// Every node-port slot of `svc` (slot name, the value it has).
fn slots(svc: &ServiceObj) -> Vec<(String, Option<i32>)> {
    let mut out = Vec::new();
    if wants_ports(svc) {
        out.extend(svc.ports.iter().map(|p| (p.name.to_string(), p.node_port)));
    }
    if wants_health_check(svc) {
        out.push((HEALTH_CHECK.to_owned(), svc.health_check_node_port));
    }
    out
}

fn set_slot(svc: &mut ServiceObj, slot: &str, value: Option<i32>) {
    if slot == HEALTH_CHECK {
        svc.health_check_node_port = value;
    } else if let Some(port) = svc.ports.iter_mut().find(|p| &*p.name == slot) {
        port.node_port = value;
    }
}

fn unset(n: Option<i32>) -> bool {
    n.is_none_or(|n| n == 0)
}

fn what(slot: &str) -> String {
    if slot == HEALTH_CHECK { "healthCheckNodePort".into() } else { format!("port {slot}") }
}

/// Gives every slot without a node port one from `range`. An explicit
/// node port that another Service's allocation holds is dropped from that
/// slot (with an error line), as the API server refuses it.
pub(super) fn assign_node_ports(services: &mut [Arc<ServiceObj>], range: &RangeInclusive<u16>, sticky: &mut Sticky) {
    let needing: HashSet<(ServiceKey, String)> = services
        .iter()
        .flat_map(|s| slots(s).into_iter().filter(|(_, n)| unset(*n)).map(|(slot, _)| (s.key.clone(), slot)))
        .collect();
    sticky.node_ports.retain(|key, port| needing.contains(key) && range.contains(port));
    let held: HashMap<u16, (ServiceKey, String)> = sticky.node_ports.iter().map(|(k, p)| (*p, k.clone())).collect();
    let as_port = |n: Option<i32>| n.and_then(|n| u16::try_from(n).ok());
    // Explicit node ports that an allocation holds are refused.
    for svc in services.iter_mut() {
        let clashes: Vec<(String, u16)> = slots(svc)
            .into_iter()
            .filter_map(|(slot, n)| as_port(n).filter(|n| held.contains_key(n)).map(|n| (slot, n)))
            .collect();
        if clashes.is_empty() {
            continue;
        }
        let svc = Arc::make_mut(svc);
        for (slot, n) in clashes {
            let (owner, owner_slot) = &held[&n];
            tracing::error!(
                "Service {} {}: nodePort {n} is already allocated to {owner} {}; no node port",
                svc.key,
                what(&slot),
                what(owner_slot)
            );
            set_slot(svc, &slot, None);
        }
    }
    let mut taken: HashSet<u16> = services.iter().flat_map(|s| slots(s)).filter_map(|(_, n)| as_port(n)).collect();
    taken.extend(held.keys());
    let size = u64::from(range.end().saturating_sub(*range.start())) + 1;
    for svc in services.iter_mut() {
        let key = svc.key.clone();
        let open: Vec<String> = slots(svc)
            .into_iter()
            .filter(|(slot, n)| unset(*n) && needing.contains(&(key.clone(), slot.clone())))
            .map(|(slot, _)| slot)
            .collect();
        if open.is_empty() {
            continue;
        }
        let svc = Arc::make_mut(svc);
        for slot in open {
            let name = (key.clone(), slot);
            if let Some(node_port) = sticky.node_ports.get(&name) {
                set_slot(svc, &name.1, Some(i32::from(*node_port)));
                continue;
            }
            let start = fnv1a(format!("{key}/{}", name.1).as_bytes()) % size;
            let free = (0..size).map(|i| *range.start() + ((start + i) % size) as u16).find(|p| !taken.contains(p));
            match free {
                Some(node_port) => {
                    taken.insert(node_port);
                    tracing::debug!("Service {key}: allocated {} nodePort {node_port}", what(&name.1));
                    set_slot(svc, &name.1, Some(i32::from(node_port)));
                    sticky.node_ports.insert(name, node_port);
                }
                None => tracing::error!("Service {key}: node port range {range:?} is full"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

    use super::*;

    fn svc_with(name: &str, type_: Option<&str>, node_port: Option<i32>) -> Arc<ServiceObj> {
        svc_full(name, type_, node_port, None, None)
    }

    fn svc_full(
        name: &str,
        type_: Option<&str>,
        node_port: Option<i32>,
        etp: Option<&str>,
        health: Option<i32>,
    ) -> Arc<ServiceObj> {
        let svc = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.9".into()),
                type_: type_.map(Into::into),
                ports: Some(vec![ServicePort { name: Some("http".into()), port: 80, node_port, ..Default::default() }]),
                external_traffic_policy: etp.map(Into::into),
                health_check_node_port: health,
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(ServiceObj::from(&svc))
    }

    fn node_port(s: &ServiceObj) -> Option<i32> {
        s.ports[0].node_port
    }

    #[test]
    fn node_ports_are_allocated_stably_in_range_and_explicit_ones_kept() {
        let range = 30_000..=32_767;
        let mut alone = vec![svc_with("web", Some("NodePort"), None)];
        assign_node_ports(&mut alone, &range, &mut Sticky::default());
        let taken = node_port(&alone[0]).unwrap();
        let mut crowd = vec![svc_with("a", Some("NodePort"), Some(taken)), svc_with("web", Some("NodePort"), None)];
        assign_node_ports(&mut crowd, &range, &mut Sticky::default());
        assert!(range.contains(&(taken as u16)));
        assert_eq!(node_port(&crowd[0]), Some(taken), "explicit node port kept");
        assert_ne!(node_port(&crowd[1]), Some(taken), "a collision probes forward");

        let mut cluster_ip = vec![svc_with("plain", None, None)];
        assign_node_ports(&mut cluster_ip, &range, &mut Sticky::default());
        assert_eq!(node_port(&cluster_ip[0]), None, "ClusterIP Services get no node port");
    }

    #[test]
    fn a_running_node_port_is_kept_and_an_explicit_clash_refused() {
        let range = 30_000..=32_767;
        let mut sticky = Sticky::default();
        let mut first = vec![svc_with("web", Some("NodePort"), None)];
        assign_node_ports(&mut first, &range, &mut sticky);
        let web_port = node_port(&first[0]).unwrap();
        let mut later = vec![svc_with("a", Some("NodePort"), Some(web_port)), svc_with("web", Some("NodePort"), None)];
        assign_node_ports(&mut later, &range, &mut sticky);
        assert_eq!(node_port(&later[1]), Some(web_port), "kept");
        assert_eq!(node_port(&later[0]), None, "the explicit clash gets no node port");
    }

    #[test]
    fn load_balancers_with_local_policy_get_a_health_check_node_port() {
        let range = 30_000..=30_001;
        let mut services = vec![
            svc_full("local", Some("LoadBalancer"), None, Some("Local"), None),
            svc_full("cluster", Some("LoadBalancer"), None, Some("Cluster"), None),
            svc_full("np-local", Some("NodePort"), Some(30_000), Some("Local"), None),
        ];
        let mut sticky = Sticky::default();
        assign_node_ports(&mut services, &range, &mut sticky);
        let local = &services[0];
        // The range holds two ports; np-local holds one explicitly, so
        // `local` gets the other for its port, its health check none.
        assert_eq!(node_port(local), Some(30_001));
        assert_eq!(local.health_check_node_port, None, "the range is full: {local:?}");
        assert_eq!(services[1].health_check_node_port, None, "Cluster policy: no health check");
        assert_eq!(services[2].health_check_node_port, None, "NodePort type: no health check");

        let range = 30_000..=32_767;
        let mut services = vec![svc_full("local", Some("LoadBalancer"), None, Some("Local"), None)];
        assign_node_ports(&mut services, &range, &mut Sticky::default());
        let (port, health) = (node_port(&services[0]).unwrap(), services[0].health_check_node_port.unwrap());
        assert_ne!(port, health);
        assert!(range.contains(&(health as u16)));

        // An explicit health-check port is kept; one another allocation
        // holds is refused.
        let mut sticky = Sticky::default();
        let mut services = vec![svc_full("local", Some("LoadBalancer"), None, Some("Local"), Some(31_000))];
        assign_node_ports(&mut services, &range, &mut sticky);
        assert_eq!(services[0].health_check_node_port, Some(31_000));
        let held = node_port(&services[0]).unwrap();
        // (The manifests are read again: `local` without its allocation.)
        let mut later = vec![
            svc_full("local", Some("LoadBalancer"), None, Some("Local"), Some(31_000)),
            svc_full("thief", Some("LoadBalancer"), Some(32_000), Some("Local"), Some(held)),
        ];
        assign_node_ports(&mut later, &range, &mut sticky);
        assert_eq!(later[1].health_check_node_port, None, "the clash with an allocated port is refused");
    }
}
