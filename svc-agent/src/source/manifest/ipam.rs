//! Cluster IPs for manifest Services that have none (node ports: module
//! `node_ports`), as the API server would allocate them, and *sticky*: once a Service has an
//! address or port, it keeps it for as long as the Service exists, whatever
//! other objects appear (an explicit `clusterIP` or `nodePort` that another
//! Service already holds is refused, as the API server refuses it). A first
//! allocation is derived from the Service's namespace and name (and port
//! name), probing forward on collisions; the agent seeds the allocations
//! from the pinned dataplane at start, so they survive restarts too.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::{
    fast_hash::{FastMap, FastSet},
    model::{IpCidr, IpFamily, ServiceCidrs, ServiceKey, ServiceObj},
};

/// Allocations in force: kept while their Service (port) exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sticky {
    /// Allocated cluster IPs, per Service and family.
    pub cluster_ips: HashMap<(ServiceKey, IpFamily), IpAddr>,
    /// Allocated node ports, per Service and port name.
    pub node_ports: HashMap<(ServiceKey, String), u16>,
}

/// The families a Service gets cluster IPs in, in its order, as
/// kube-apiserver decides them (`spec.ipFamilyPolicy`, `spec.ipFamilies`),
/// given the configured ranges; `None` for Services without cluster IPs
/// (headless, ExternalName); an error for what the API server rejects.
fn families(svc: &ServiceObj, cidrs: &ServiceCidrs) -> Result<Option<Vec<IpFamily>>, String> {
    if !svc.has_spec || svc.type_.as_deref() == Some("ExternalName") || explicit(svc).is_none() {
        return Ok(None);
    }
    // A cluster IP that is not an address is the model's to reject (with
    // the Service's name); nothing is allocated around it.
    let mut raw = svc.cluster_ips.iter().map(AsRef::as_ref).chain(svc.cluster_ip.as_deref());
    if raw.any(|ip| !ip.is_empty() && ip.parse::<IpAddr>().is_err()) {
        return Ok(None);
    }
    let given: Vec<IpFamily> = explicit(svc).unwrap_or_default().iter().map(|ip| IpFamily::of(*ip)).collect();
    if given.len() > 2 || (given.len() == 2 && given[0] == given[1]) {
        return Err("clusterIPs must be one address, or one per family".into());
    }
    let mut requested: Vec<IpFamily> = Vec::new();
    for name in &svc.ip_families {
        let family = IpFamily::parse(name).ok_or_else(|| format!("unknown ipFamilies entry {name:?}"))?;
        if requested.contains(&family) {
            return Err(format!("ipFamilies lists {name} twice"));
        }
        requested.push(family);
    }
    // ipFamilies and clusterIPs agree position by position.
    if let Some(i) = (0..given.len().min(requested.len())).find(|&i| given[i] != requested[i]) {
        return Err(format!("ipFamilies[{i}] is {:?} but clusterIPs[{i}] is {:?}", requested[i], given[i]));
    }
    let mut order = given.clone();
    order.extend(requested.iter().copied().filter(|f| !given.contains(f)));
    let configured = |f: &IpFamily| cidrs.of(*f).is_some();
    let other = |f: IpFamily| if f == IpFamily::V4 { IpFamily::V6 } else { IpFamily::V4 };
    let primary = order.first().copied().unwrap_or(cidrs.primary());
    let dual = [primary, other(primary)];
    let wanted: Vec<IpFamily> = match svc.ip_family_policy.as_deref() {
        // Two given addresses and no policy: the API server defaults the
        // policy to RequireDualStack.
        None if given.len() == 2 => dual.to_vec(),
        None | Some("SingleStack") if order.len() == 2 => {
            return Err("SingleStack with two families (ipFamilies or clusterIPs)".into());
        }
        None | Some("SingleStack") => vec![primary],
        Some("PreferDualStack") if configured(&primary) => dual.into_iter().filter(configured).collect(),
        Some("PreferDualStack" | "RequireDualStack") => dual.to_vec(),
        Some(other) => return Err(format!("unknown ipFamilyPolicy {other:?}")),
    };
    if let Some(missing) = wanted.iter().find(|f| !configured(f)) {
        return Err(format!("no --service-cidr for {missing:?}"));
    }
    Ok(Some(wanted))
}

/// The Service's explicit cluster IPs (empty: none given); `None` when
/// headless. Unparsable values are left to the model, which rejects them.
fn explicit(svc: &ServiceObj) -> Option<Vec<IpAddr>> {
    let mut raw: Vec<&str> = svc.cluster_ips.iter().map(AsRef::as_ref).collect();
    if raw.is_empty()
        && let Some(ip) = svc.cluster_ip.as_deref()
    {
        raw.push(ip);
    }
    if raw.contains(&"None") {
        return None;
    }
    Some(raw.into_iter().filter_map(|ip| ip.parse::<IpAddr>().ok()).map(|ip| ip.to_canonical()).collect())
}

/// Gives every Service the cluster IPs its families need, from `cidrs`,
/// and drops (with an error line) Services the API server would refuse: an
/// explicit cluster IP outside its family's range or allocated to another
/// Service, a family without a range, a full range.
pub(super) fn assign_cluster_ips(services: &mut Vec<Arc<ServiceObj>>, cidrs: &ServiceCidrs, sticky: &mut Sticky) {
    let mut plans: FastMap<ServiceKey, (Vec<IpFamily>, Vec<IpAddr>)> = FastMap::default();
    services.retain(|svc| match families(svc, cidrs) {
        Ok(Some(wanted)) => {
            plans.insert(svc.key.clone(), (wanted, explicit(svc).unwrap_or_default()));
            true
        }
        Ok(None) => true,
        Err(reason) => {
            tracing::error!("Service {} skipped: {reason}", svc.key);
            false
        }
    });
    let needs = |key: &ServiceKey, family: IpFamily| {
        plans.get(key).is_some_and(|(wanted, given)| {
            wanted.contains(&family) && !given.iter().any(|ip| IpFamily::of(*ip) == family)
        })
    };
    sticky
        .cluster_ips
        .retain(|(key, family), ip| needs(key, *family) && cidrs.of(*family).is_some_and(|cidr| cidr.contains(*ip)));
    let held: FastMap<IpAddr, ServiceKey> = sticky.cluster_ips.iter().map(|((k, _), ip)| (*ip, k.clone())).collect();
    services.retain(|svc| {
        let Some((_, given)) = plans.get(&svc.key) else { return true };
        for ip in given {
            match cidrs.of(IpFamily::of(*ip)) {
                Some(cidr) if !cidr.contains(*ip) => {
                    tracing::error!("Service {} skipped: clusterIP {ip} is not in the service range {cidr}", svc.key);
                    return false;
                }
                Some(_) if held.contains_key(ip) => {
                    tracing::error!("Service {} skipped: clusterIP {ip} is already allocated to {}", svc.key, held[ip]);
                    return false;
                }
                _ => {}
            }
        }
        true
    });
    let mut taken: FastSet<IpAddr> =
        services.iter().filter_map(|s| plans.get(&s.key)).flat_map(|(_, given)| given.iter().copied()).collect();
    taken.extend(held.keys());
    // `services` is sorted by (namespace, name): first allocations resolve
    // collisions the same way on every run.
    services.retain_mut(|svc| {
        let Some((wanted, given)) = plans.get(&svc.key) else { return true };
        let mut ips = Vec::with_capacity(wanted.len());
        for &family in wanted {
            if let Some(ip) = given.iter().find(|ip| IpFamily::of(**ip) == family) {
                ips.push(*ip);
                continue;
            }
            let slot = (svc.key.clone(), family);
            let ip = match sticky.cluster_ips.get(&slot) {
                Some(ip) => *ip,
                None => {
                    let Some(cidr) = cidrs.of(family) else { return false };
                    let Some(ip) = allocate(cidr, &svc.key.to_string(), &taken) else {
                        tracing::error!("Service {} skipped: service range {cidr} is full", svc.key);
                        return false;
                    };
                    taken.insert(ip);
                    sticky.cluster_ips.insert(slot, ip);
                    tracing::debug!("Service {}: allocated clusterIP {ip}", svc.key);
                    ip
                }
            };
            ips.push(ip);
        }
        if ips != *given {
            let svc = Arc::make_mut(svc);
            svc.cluster_ip = Some(ips[0].to_string().into());
            svc.cluster_ips = ips.iter().map(|ip| ip.to_string().into()).collect();
            svc.ip_families = wanted.iter().map(|f| if *f == IpFamily::V4 { "IPv4" } else { "IPv6" }.into()).collect();
        }
        true
    });
}

/// The first free address at or after hash(key), skipping the network
/// address, the first host address (kube-apiserver reserves it for the
/// `kubernetes` Service) and the last address.
fn allocate(cidr: IpCidr, key: &str, taken: &FastSet<IpAddr>) -> Option<IpAddr> {
    let size = cidr.size();
    if size < 4 {
        return None;
    }
    let usable = size - 3;
    let start = u128::from(fnv1a(key.as_bytes())) % usable;
    (0..usable).map(|i| 2 + (start + i) % usable).filter_map(|offset| cidr.nth(offset)).find(|ip| !taken.contains(ip))
}

/// FNV-1a: tiny, and stable across Rust releases (std's hasher is not).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
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

    fn ip_of(svc: &ServiceObj) -> IpAddr {
        svc.cluster_ip.as_deref().unwrap().parse().unwrap()
    }

    fn cidrs(s: &str) -> ServiceCidrs {
        s.parse().unwrap()
    }

    #[test]
    fn allocation_is_stable_and_independent_of_other_services() {
        let cidr = cidrs("10.96.0.0/16");
        let mut alone = vec![svc("web", None)];
        assign_cluster_ips(&mut alone, &cidr, &mut Sticky::default());
        let mut crowd = vec![svc("a", None), svc("b", Some("10.96.0.10")), svc("web", None), svc("z", None)];
        assign_cluster_ips(&mut crowd, &cidr, &mut Sticky::default());
        assert_eq!(ip_of(&alone[0]), ip_of(&crowd[2]));
        assert!(cidr.of(IpFamily::V4).unwrap().contains(ip_of(&alone[0])));
        assert_eq!(ip_of(&crowd[1]), "10.96.0.10".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn collisions_probe_forward_and_reserved_addresses_are_skipped() {
        let cidr = cidrs("10.96.0.0/30"); // one usable address: .2
        let mut services = vec![svc("a", None), svc("b", None)];
        assign_cluster_ips(&mut services, &cidr, &mut Sticky::default());
        // Only one fits; the other is dropped with an error, not given a
        // reserved or duplicate address.
        assert_eq!(services.len(), 1);
        assert_eq!(ip_of(&services[0]), "10.96.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn explicit_ip_outside_range_is_refused() {
        let cidr = cidrs("10.96.0.0/16");
        let mut services = vec![svc("in", Some("10.96.1.1")), svc("out", Some("192.168.1.1"))];
        assign_cluster_ips(&mut services, &cidr, &mut Sticky::default());
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].key.name, "in");
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let cidr = cidrs("10.96.0.0/16");
        let headless = svc("h", Some("None"));
        let ext = svc_with("e", None, Some("ExternalName"), None);
        let mut services = vec![Arc::clone(&headless), Arc::clone(&ext)];
        assign_cluster_ips(&mut services, &cidr, &mut Sticky::default());
        assert_eq!(services, vec![headless, ext]);
    }

    #[test]
    fn a_running_service_keeps_its_address_whatever_appears() {
        let cidr = cidrs("10.96.0.0/16");
        let mut sticky = Sticky::default();
        let mut first = vec![svc("web", None)];
        assign_cluster_ips(&mut first, &cidr, &mut sticky);
        let web_ip = ip_of(&first[0]);

        // A Service that sorts first and hashes to the same address, and
        // one asking explicitly for web's address, appear later.
        let mut crowd = vec![svc("web", None), svc("thief", Some(&web_ip.to_string()))];
        for name in 0..2000 {
            crowd.push(svc(&format!("a{name}"), None));
        }
        crowd.sort_by(|a, b| a.key.cmp(&b.key));
        assign_cluster_ips(&mut crowd, &cidr, &mut sticky);
        let web = crowd.iter().find(|s| s.key.name == "web").unwrap();
        assert_eq!(ip_of(web), web_ip, "the running Service keeps its address");
        assert!(crowd.iter().all(|s| s.key.name != "thief"), "the explicit claim is refused");
        let ips: std::collections::HashSet<IpAddr> = crowd.iter().map(|s| ip_of(s)).collect();
        assert_eq!(ips.len(), crowd.len(), "no duplicates");

        // A restart seeded with what was programmed allocates the same.
        let mut seeded = sticky.clone();
        let mut again = crowd.clone();
        assign_cluster_ips(&mut again, &cidr, &mut seeded);
        assert_eq!(again, crowd);

        // Deleted, the address is released.
        let mut none = vec![];
        assign_cluster_ips(&mut none, &cidr, &mut sticky);
        assert!(sticky.cluster_ips.is_empty());
    }

    fn dual(name: &str, policy: Option<&str>, families: &[&str], ips: &[&str]) -> Arc<ServiceObj> {
        let mut obj = (*svc(name, None)).clone();
        obj.ip_family_policy = policy.map(Into::into);
        obj.ip_families = families.iter().map(|f| (*f).into()).collect();
        obj.cluster_ips = ips.iter().map(|ip| (*ip).into()).collect();
        obj.cluster_ip = ips.first().map(|ip| (*ip).into());
        Arc::new(obj)
    }

    fn families_of(svc: &ServiceObj) -> Vec<IpFamily> {
        svc.cluster_ips.iter().map(|ip| IpFamily::of(ip.parse().unwrap())).collect()
    }

    #[test]
    fn families_follow_the_policy_as_the_api_server_does() {
        let both = cidrs("10.96.0.0/16,fd00:96::/108");
        let mut services = vec![
            dual("a-single", None, &[], &[]),
            dual("b-single6", Some("SingleStack"), &["IPv6"], &[]),
            dual("c-prefer", Some("PreferDualStack"), &[], &[]),
            dual("d-require6", Some("RequireDualStack"), &["IPv6", "IPv4"], &[]),
            dual("e-one-given", Some("RequireDualStack"), &[], &["fd00:96::77"]),
        ];
        assign_cluster_ips(&mut services, &both, &mut Sticky::default());
        let got: Vec<Vec<IpFamily>> = services.iter().map(|s| families_of(s)).collect();
        use IpFamily::{V4, V6};
        assert_eq!(got, vec![vec![V4], vec![V6], vec![V4, V6], vec![V6, V4], vec![V6, V4]]);
        assert_eq!(services[4].cluster_ips[0].as_ref(), "fd00:96::77", "the given address stays first");
        let v6 = both.of(V6).unwrap();
        assert!(v6.contains(services[1].cluster_ips[0].parse().unwrap()));

        // Single-stack cluster: PreferDualStack gets one family,
        // RequireDualStack and a family without a range are refused.
        let v4_only = cidrs("10.96.0.0/16");
        let mut services = vec![
            dual("prefer", Some("PreferDualStack"), &[], &[]),
            dual("require", Some("RequireDualStack"), &[], &[]),
            dual("six", None, &["IPv6"], &[]),
        ];
        assign_cluster_ips(&mut services, &v4_only, &mut Sticky::default());
        assert_eq!(services.len(), 1);
        assert_eq!(families_of(&services[0]), vec![V4]);
    }

    #[test]
    fn each_family_keeps_its_address() {
        let both = cidrs("10.96.0.0/16,fd00:96::/108");
        let mut sticky = Sticky::default();
        let mut first = vec![dual("web", Some("RequireDualStack"), &[], &[])];
        assign_cluster_ips(&mut first, &both, &mut sticky);
        let mut again = vec![dual("web", Some("RequireDualStack"), &[], &[])];
        assign_cluster_ips(&mut again, &both, &mut sticky);
        assert_eq!(first, again);
        assert_eq!(sticky.cluster_ips.len(), 2);
        // Going single-stack releases the second family.
        let mut single = vec![dual("web", Some("SingleStack"), &[], &[])];
        assign_cluster_ips(&mut single, &both, &mut sticky);
        assert_eq!(sticky.cluster_ips.len(), 1);
        assert_eq!(single[0].cluster_ips, first[0].cluster_ips[..1].to_vec());
    }

    #[test]
    fn what_the_api_server_rejects_is_skipped_not_rewritten() {
        let v4_only = cidrs("10.96.0.0/16");
        let both = cidrs("10.96.0.0/16,fd00:96::/108");
        for (cidrs, svc) in [
            // A given IPv6 address without an IPv6 range.
            (&v4_only, dual("prefer6", Some("PreferDualStack"), &[], &["fd00::10"])),
            // ipFamilies disagrees with the given address.
            (&both, dual("mismatch", Some("SingleStack"), &["IPv6"], &["10.96.0.5"])),
            // SingleStack with two addresses.
            (&both, dual("two", Some("SingleStack"), &[], &["10.96.0.5", "fd00:96::5"])),
            // Two addresses of one family.
            (&both, dual("same", None, &[], &["10.96.0.5", "10.96.0.6"])),
        ] {
            let mut services = vec![svc.clone()];
            assign_cluster_ips(&mut services, cidrs, &mut Sticky::default());
            assert!(
                services.is_empty(),
                "{} must be skipped, got {:?}",
                svc.key,
                services.first().map(|s| &s.cluster_ips)
            );
        }
        // Given addresses of both families keep their order and values.
        let mut services = vec![dual("both", Some("RequireDualStack"), &[], &["fd00:96::5", "10.96.0.5"])];
        assign_cluster_ips(&mut services, &both, &mut Sticky::default());
        assert_eq!(services[0].cluster_ips, vec![Box::from("fd00:96::5"), Box::from("10.96.0.5")]);
    }
}
