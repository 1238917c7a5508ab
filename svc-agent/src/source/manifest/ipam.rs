//! Cluster IPs and node ports for manifest Services that have none, as the
//! API server would allocate them, and *sticky*: once a Service has an
//! address or port, it keeps it for as long as the Service exists, whatever
//! other objects appear (an explicit `clusterIP` or `nodePort` that another
//! Service already holds is refused, as the API server refuses it). A first
//! allocation is derived from the Service's namespace and name (and port
//! name), probing forward on collisions; the agent seeds the allocations
//! from the pinned dataplane at start, so they survive restarts too.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    ops::RangeInclusive,
    sync::Arc,
};

use crate::model::{Ipv4Cidr, ServiceKey, ServiceObj};

/// Allocations in force: kept while their Service (port) exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sticky {
    /// Allocated cluster IPs.
    pub cluster_ips: HashMap<ServiceKey, Ipv4Addr>,
    /// Allocated node ports, per Service and port name.
    pub node_ports: HashMap<(ServiceKey, String), u16>,
}

/// Gives every Service that needs a cluster IP one from `cidr`, and drops
/// (with an error line) Services whose explicit cluster IP lies outside it
/// or is allocated to another Service, as the API server refuses them.
pub(super) fn assign_cluster_ips(services: &mut Vec<Arc<ServiceObj>>, cidr: Ipv4Cidr, sticky: &mut Sticky) {
    let needing: HashSet<ServiceKey> = services.iter().filter(|s| needs_ip(s)).map(|s| s.key.clone()).collect();
    sticky.cluster_ips.retain(|key, ip| needing.contains(key) && cidr.contains(*ip));
    let held: HashMap<Ipv4Addr, ServiceKey> = sticky.cluster_ips.iter().map(|(k, ip)| (*ip, k.clone())).collect();
    services.retain(|svc| match explicit_v4(svc) {
        Some(ip) if !cidr.contains(ip) => {
            tracing::error!("Service {} skipped: clusterIP {ip} is not in the service range {cidr}", svc.key);
            false
        }
        Some(ip) if held.contains_key(&ip) => {
            tracing::error!("Service {} skipped: clusterIP {ip} is already allocated to {}", svc.key, held[&ip]);
            false
        }
        _ => true,
    });
    let mut taken: HashSet<Ipv4Addr> = services.iter().filter_map(|s| explicit_v4(s)).collect();
    taken.extend(held.keys());
    // `services` is sorted by (namespace, name): first allocations resolve
    // collisions the same way on every run.
    for svc in services.iter_mut().filter(|s| needs_ip(s)) {
        let ip = match sticky.cluster_ips.get(&svc.key) {
            Some(ip) => *ip,
            None => {
                let Some(ip) = allocate(cidr, &svc.key.to_string(), &taken) else {
                    tracing::error!("Service {} skipped: service range {cidr} is full", svc.key);
                    continue;
                };
                taken.insert(ip);
                sticky.cluster_ips.insert(svc.key.clone(), ip);
                tracing::debug!("Service {}: allocated clusterIP {ip}", svc.key);
                ip
            }
        };
        let svc = Arc::make_mut(svc);
        svc.cluster_ip = Some(ip.to_string().into());
        svc.cluster_ips = vec![ip.to_string().into()];
    }
    services.retain(|s| !needs_ip(s));
}

/// Gives every NodePort and LoadBalancer Service port without a
/// `nodePort` one from `range` (kube-apiserver's
/// `--service-node-port-range`, default 30000-32767). An explicit node
/// port that another Service's allocation holds is dropped from that port
/// (with an error line), as the API server refuses it.
pub(super) fn assign_node_ports(services: &mut [Arc<ServiceObj>], range: &RangeInclusive<u16>, sticky: &mut Sticky) {
    let wants = |svc: &ServiceObj| {
        let t = svc.type_.as_deref();
        // LoadBalancer allocates unless allocateLoadBalancerNodePorts is false.
        t == Some("NodePort") || (t == Some("LoadBalancer") && svc.allocate_lb_node_ports != Some(false))
    };
    let unset = |n: Option<i32>| n.is_none_or(|n| n == 0);
    let needing: HashSet<(ServiceKey, String)> = services
        .iter()
        .filter(|s| wants(s))
        .flat_map(|s| s.ports.iter().filter(|p| unset(p.node_port)).map(|p| (s.key.clone(), p.name.to_string())))
        .collect();
    sticky.node_ports.retain(|key, port| needing.contains(key) && range.contains(port));
    let held: HashMap<u16, (ServiceKey, String)> = sticky.node_ports.iter().map(|(k, p)| (*p, k.clone())).collect();
    // Explicit node ports that an allocation holds are refused.
    for svc in services.iter_mut().filter(|s| wants(s)) {
        let clash = |n: Option<i32>| n.and_then(|n| u16::try_from(n).ok()).is_some_and(|n| held.contains_key(&n));
        if svc.ports.iter().any(|p| clash(p.node_port)) {
            let svc = Arc::make_mut(svc);
            for port in svc.ports.iter_mut().filter(|p| clash(p.node_port)) {
                let n = port.node_port.unwrap_or_default();
                let owner = &held[&(n as u16)];
                tracing::error!(
                    "Service {} port {}: nodePort {n} is already allocated to {} port {}; no node port",
                    svc.key,
                    port.name,
                    owner.0,
                    owner.1
                );
                port.node_port = None;
            }
        }
    }
    let mut taken: HashSet<u16> = services
        .iter()
        .filter(|s| wants(s))
        .flat_map(|s| s.ports.iter())
        .filter_map(|p| p.node_port.and_then(|n| u16::try_from(n).ok()))
        .collect();
    taken.extend(held.keys());
    let size = u64::from(range.end().saturating_sub(*range.start())) + 1;
    for svc in services.iter_mut().filter(|s| wants(s)) {
        let key = svc.key.clone();
        if !svc.ports.iter().any(|p| unset(p.node_port) && needing.contains(&(key.clone(), p.name.to_string()))) {
            continue;
        }
        let svc = Arc::make_mut(svc);
        for port in svc.ports.iter_mut().filter(|p| unset(p.node_port)) {
            let name = (key.clone(), port.name.to_string());
            if !needing.contains(&name) {
                // It had an explicit port that was refused above.
                continue;
            }
            if let Some(node_port) = sticky.node_ports.get(&name) {
                port.node_port = Some(i32::from(*node_port));
                continue;
            }
            let start = fnv1a(format!("{key}/{}", port.name).as_bytes()) % size;
            let free = (0..size).map(|i| *range.start() + ((start + i) % size) as u16).find(|p| !taken.contains(p));
            match free {
                Some(node_port) => {
                    taken.insert(node_port);
                    sticky.node_ports.insert(name, node_port);
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
        assign_cluster_ips(&mut alone, cidr, &mut Sticky::default());
        let mut crowd = vec![svc("a", None), svc("b", Some("10.96.0.10")), svc("web", None), svc("z", None)];
        assign_cluster_ips(&mut crowd, cidr, &mut Sticky::default());
        assert_eq!(ip_of(&alone[0]), ip_of(&crowd[2]));
        assert!(cidr.contains(ip_of(&alone[0])));
        assert_eq!(ip_of(&crowd[1]), Ipv4Addr::new(10, 96, 0, 10));
    }

    #[test]
    fn collisions_probe_forward_and_reserved_addresses_are_skipped() {
        let cidr: Ipv4Cidr = "10.96.0.0/30".parse().unwrap(); // one usable address: .2
        let mut services = vec![svc("a", None), svc("b", None)];
        assign_cluster_ips(&mut services, cidr, &mut Sticky::default());
        // Only one fits; the other is dropped with an error, not given a
        // reserved or duplicate address.
        assert_eq!(services.len(), 1);
        assert_eq!(ip_of(&services[0]), Ipv4Addr::new(10, 96, 0, 2));
    }

    #[test]
    fn explicit_ip_outside_range_is_refused() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let mut services = vec![svc("in", Some("10.96.1.1")), svc("out", Some("192.168.1.1"))];
        assign_cluster_ips(&mut services, cidr, &mut Sticky::default());
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].key.name, "in");
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let headless = svc("h", Some("None"));
        let ext = svc_with("e", None, Some("ExternalName"), None);
        let mut services = vec![Arc::clone(&headless), Arc::clone(&ext)];
        assign_cluster_ips(&mut services, cidr, &mut Sticky::default());
        assert_eq!(services, vec![headless, ext]);
    }

    #[test]
    fn node_ports_are_allocated_stably_in_range_and_explicit_ones_kept() {
        let node_port = |s: &ServiceObj| s.ports[0].node_port.unwrap();
        let range = 30_000..=32_767;
        let mut alone = vec![svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None))];
        assign_node_ports(&mut alone, &range, &mut Sticky::default());
        let taken = node_port(&alone[0]);
        let mut crowd = vec![
            svc_with("a", Some("10.96.0.8"), Some("NodePort"), Some(Some(taken))),
            svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None)),
        ];
        assign_node_ports(&mut crowd, &range, &mut Sticky::default());
        assert!(range.contains(&(taken as u16)));
        assert_eq!(node_port(&crowd[0]), taken, "explicit node port kept");
        assert_ne!(node_port(&crowd[1]), taken, "a collision probes forward");

        let mut cluster_ip = vec![svc_with("plain", Some("10.96.0.7"), None, Some(None))];
        assign_node_ports(&mut cluster_ip, &range, &mut Sticky::default());
        assert_eq!(cluster_ip[0].ports[0].node_port, None, "ClusterIP Services get no node port");
    }

    #[test]
    fn a_running_service_keeps_its_address_whatever_appears() {
        let cidr: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        let mut sticky = Sticky::default();
        let mut first = vec![svc("web", None)];
        assign_cluster_ips(&mut first, cidr, &mut sticky);
        let web_ip = ip_of(&first[0]);

        // A Service that sorts first and hashes to the same address, and
        // one asking explicitly for web's address, appear later.
        let mut crowd = vec![svc("web", None), svc("thief", Some(&web_ip.to_string()))];
        for name in 0..2000 {
            crowd.push(svc(&format!("a{name}"), None));
        }
        crowd.sort_by(|a, b| a.key.cmp(&b.key));
        assign_cluster_ips(&mut crowd, cidr, &mut sticky);
        let web = crowd.iter().find(|s| s.key.name == "web").unwrap();
        assert_eq!(ip_of(web), web_ip, "the running Service keeps its address");
        assert!(crowd.iter().all(|s| s.key.name != "thief"), "the explicit claim is refused");
        let ips: HashSet<Ipv4Addr> = crowd.iter().map(|s| ip_of(s)).collect();
        assert_eq!(ips.len(), crowd.len(), "no duplicates");

        // A restart seeded with what was programmed allocates the same.
        let mut seeded = sticky.clone();
        let mut again = crowd.clone();
        assign_cluster_ips(&mut again, cidr, &mut seeded);
        assert_eq!(again, crowd);

        // Deleted, the address is released.
        let mut none = vec![];
        assign_cluster_ips(&mut none, cidr, &mut sticky);
        assert!(sticky.cluster_ips.is_empty());
    }

    #[test]
    fn a_running_node_port_is_kept_and_an_explicit_clash_refused() {
        let node_port = |s: &ServiceObj| s.ports[0].node_port;
        let range = 30_000..=32_767;
        let mut sticky = Sticky::default();
        let mut first = vec![svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None))];
        assign_node_ports(&mut first, &range, &mut sticky);
        let web_port = node_port(&first[0]).unwrap();
        let mut later = vec![
            svc_with("a", Some("10.96.0.8"), Some("NodePort"), Some(Some(web_port))),
            svc_with("web", Some("10.96.0.9"), Some("NodePort"), Some(None)),
        ];
        assign_node_ports(&mut later, &range, &mut sticky);
        assert_eq!(node_port(&later[1]), Some(web_port), "kept");
        assert_eq!(node_port(&later[0]), None, "the explicit clash gets no node port");
    }
}
