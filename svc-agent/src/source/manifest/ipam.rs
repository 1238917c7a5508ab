//! Cluster IPs and node ports for manifest Services that have none, as the
//! API server would allocate them, but *stable*: the value is derived from
//! the Service's namespace and name (and port name), so it survives agent
//! restarts and edits of other files. Collisions probe forward
//! deterministically.

use std::{collections::HashSet, net::Ipv4Addr, ops::RangeInclusive, sync::Arc};

use crate::model::{Ipv4Cidr, ServiceObj};

/// Gives every Service that needs a cluster IP one from `cidr`, and drops
/// (with an error line) Services whose explicit cluster IP lies outside it,
/// as the API server refuses them.
pub(super) fn assign_cluster_ips(services: &mut Vec<Arc<ServiceObj>>, cidr: Ipv4Cidr) {
    services.retain(|svc| match explicit_v4(svc) {
        Some(ip) if !cidr.contains(ip) => {
            tracing::error!("Service {} skipped: clusterIP {ip} is not in the service range {cidr}", svc.key);
            false
        }
        _ => true,
    });
    let mut taken: HashSet<Ipv4Addr> = services.iter().filter_map(|s| explicit_v4(s)).collect();
    // `services` is sorted by (namespace, name): collisions between
    // allocations resolve the same way on every run.
    for svc in services.iter_mut().filter(|s| needs_ip(s)) {
        let Some(ip) = allocate(cidr, &svc.key.to_string(), &taken) else {
            tracing::error!("Service {} skipped: service range {cidr} is full", svc.key);
            continue;
        };
        taken.insert(ip);
        tracing::debug!("Service {}: allocated clusterIP {ip}", svc.key);
        let svc = Arc::make_mut(svc);
        svc.cluster_ip = Some(ip.to_string().into());
        svc.cluster_ips = vec![ip.to_string().into()];
    }
    services.retain(|s| !needs_ip(s));
}

/// Gives every NodePort and LoadBalancer Service port without a
/// `nodePort` one from `range` (kube-apiserver's
/// `--service-node-port-range`, default 30000-32767).
pub(super) fn assign_node_ports(services: &mut [Arc<ServiceObj>], range: &RangeInclusive<u16>) {
    let wants = |svc: &ServiceObj| {
        let t = svc.type_.as_deref();
        // LoadBalancer allocates unless allocateLoadBalancerNodePorts is false.
        t == Some("NodePort") || (t == Some("LoadBalancer") && svc.allocate_lb_node_ports != Some(false))
    };
    let mut taken: HashSet<u16> = services
        .iter()
        .filter(|s| wants(s))
        .flat_map(|s| s.ports.iter())
        .filter_map(|p| p.node_port.and_then(|n| u16::try_from(n).ok()))
        .collect();
    let size = u64::from(range.end().saturating_sub(*range.start())) + 1;
    for svc in services.iter_mut().filter(|s| wants(s)) {
        if svc.ports.iter().all(|p| p.node_port.is_some_and(|n| n != 0)) {
            continue;
        }
        let svc = Arc::make_mut(svc);
        let key = svc.key.to_string();
        for port in svc.ports.iter_mut().filter(|p| p.node_port.is_none_or(|n| n == 0)) {
            let start = fnv1a(format!("{key}/{}", port.name).as_bytes()) % size;
            let free = (0..size).map(|i| *range.start() + ((start + i) % size) as u16).find(|p| !taken.contains(p));
            match free {
                Some(node_port) => {
                    taken.insert(node_port);
                    tracing::debug!("Service {key}: allocated nodePort {node_port}");
                    port.node_port = Some(i32::from(node_port));
                }
                None => tracing::error!("Service {key}: node port range {range:?} is full"),
            }
        }
    }
}

fn explicit_v4(svc: &ServiceObj) -> Option<Ipv4Addr> {
    svc.cluster_ip.as_deref()?.parse().ok()
}

/// A Service needs an address unless it has one, is headless, or is an
/// ExternalName alias.
fn needs_ip(svc: &ServiceObj) -> bool {
    if !svc.has_spec {
        return false;
    }
    let has_ip =
        svc.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()) || svc.cluster_ips.iter().any(|ip| !ip.is_empty());
    !has_ip && svc.type_.as_deref() != Some("ExternalName")
}

/// The first free address at or after hash(key), skipping the network
/// address, the first host address (kube-apiserver reserves it for the
/// `kubernetes` Service) and the last address.
fn allocate(cidr: Ipv4Cidr, key: &str, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let size = cidr.size();
    if size < 4 {
        return None;
    }
    let usable = size - 3;
    let start = fnv1a(key.as_bytes()) % usable;
    (0..usable).map(|i| 2 + (start + i) % usable).filter_map(|offset| cidr.nth(offset)).find(|ip| !taken.contains(ip))
}

/// FNV-1a: tiny, and stable across Rust releases (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

    use super::*;

    fn svc_with(name: &str, ip: Option<&str>, type_: Option<&str>, node_port: Option<Option<i32>>) -> Arc<ServiceObj> {
        let svc = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ip.map(Into::into),
                type_: type_.map(Into::into),
                ports: node_port.map(|np| {
                    vec![ServicePort { name: Some("http".into()), port: 80, node_port: np, ..Default::default() }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(ServiceObj::from(&svc))
    }

    fn svc(name: &str, ip: Option<&str>) -> Arc<ServiceObj> {
        svc_with(name, ip, None, None)
    }

    fn ip_of(svc: &ServiceObj) -> Ipv4Addr {
        svc.cluster_ip.as_deref().unwrap().parse().unwrap()
    }

    #[test]
    fn allocation_is_stable_and_independent_of_other_services() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let mut alone = vec![svc("web", None)];
        assign_cluster_ips(&mut alone, cidr);
        let mut crowd = vec![svc("a", None), svc("b", Some("10.96.0.10")), svc("web", None), svc("z", None)];
        assign_cluster_ips(&mut crowd, cidr);
        assert_eq!(ip_of(&alone[0]), ip_of(&crowd[2]));
        assert!(cidr.contains(ip_of(&alone[0])));
        assert_eq!(ip_of(&crowd[1]), Ipv4Addr::new(10, 96, 0, 10));
    }

    #[test]
    fn collisions_probe_forward_and_reserved_addresses_are_skipped() {
        let cidr: Ipv4Cidr = "10.96.0.0/30".parse().unwrap(); // one usable address: .2
        let mut services = vec![svc("a", None), svc("b", None)];
        assign_cluster_ips(&mut services, cidr);
        // Only one fits; the other is dropped with an error, not given a
        // reserved or duplicate address.
        assert_eq!(services.len(), 1);
        assert_eq!(ip_of(&services[0]), Ipv4Addr::new(10, 96, 0, 2));
    }

    #[test]
    fn explicit_ip_outside_range_is_refused() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let mut services = vec![svc("in", Some("10.96.1.1")), svc("out", Some("192.168.1.1"))];
        assign_cluster_ips(&mut services, cidr);
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].key.name, "in");
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let headless = svc("h", Some("None"));
        let ext = svc_with("e", None, Some("ExternalName"), None);
        let mut services = vec![Arc::clone(&headless), Arc::clone(&ext)];
        assign_cluster_ips(&mut services, cidr);
        assert_eq!(services, vec![headless, ext]);
    }

    #[test]
    fn node_ports_are_allocated_stably_in_range_and_explicit_ones_kept() {
        let node_port = |s: &ServiceObj| s.ports[0].node_port.unwrap();
        let range = 30_000..=32_767;
        let mut alone = vec![svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None))];
        assign_node_ports(&mut alone, &range);
        let taken = node_port(&alone[0]);
        let mut crowd = vec![
            svc_with("a", Some("10.96.0.8"), Some("NodePort"), Some(Some(taken))),
            svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None)),
        ];
        assign_node_ports(&mut crowd, &range);
        assert!(range.contains(&(taken as u16)));
        assert_eq!(node_port(&crowd[0]), taken, "explicit node port kept");
        assert_ne!(node_port(&crowd[1]), taken, "a collision probes forward");

        let mut cluster_ip = vec![svc_with("plain", Some("10.96.0.7"), None, Some(None))];
        assign_node_ports(&mut cluster_ip, &range);
        assert_eq!(cluster_ip[0].ports[0].node_port, None, "ClusterIP Services get no node port");
    }
}
