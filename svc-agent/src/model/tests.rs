//! Model rules, each from YAML as a user would write it.

use std::net::{Ipv4Addr, SocketAddr};

use std::sync::Arc;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{service::ModelError, *};

/// A Service from YAML, reduced as the sources reduce it.
fn svc(yaml: &str) -> ServiceObj {
    ServiceObj::from(&serde_yaml::from_str::<Service>(yaml).expect("test Service parses"))
}

/// An EndpointSlice from YAML, reduced as the sources reduce it.
fn slice(yaml: &str) -> SliceObj {
    SliceObj::from(&serde_yaml::from_str::<EndpointSlice>(yaml).expect("test EndpointSlice parses"))
}

fn node() -> NodeContext {
    NodeContext {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        addresses: vec![Ipv4Addr::new(192, 0, 2, 10).into()],
    }
}

fn desired(svc: &ServiceObj, slices: &[SliceObj]) -> DesiredService {
    let refs: Vec<&SliceObj> = slices.iter().collect();
    desired_service(svc, &refs, &node()).expect("model accepts the Service")
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// (frontend, proto, backends) triples, for compact assertions.
fn summary(d: &DesiredService) -> Vec<(String, Proto, Vec<String>)> {
    d.frontends
        .iter()
        .map(|f| (f.addr.to_string(), f.proto, f.backends.iter().map(ToString::to_string).collect()))
        .collect()
}

const WEB: &str = "
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: http}]
";

const WEB_SLICE: &str = "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.1.2]
- addresses: [10.244.2.2]
  conditions: {ready: true}
- addresses: [10.244.3.2]
  conditions: {ready: false}
";

#[test]
fn cluster_ip_uses_ready_endpoints_and_the_slice_port_for_a_named_target_port() {
    let d = desired(&svc(WEB), &[slice(WEB_SLICE)]);
    assert_eq!(
        summary(&d),
        vec![("10.96.0.10:80".into(), Proto::Tcp, vec!["10.244.1.2:8080".into(), "10.244.2.2:8080".into()])]
    );
    let fe = &d.frontends[0];
    assert_eq!((fe.kind, fe.service_port, fe.affinity_timeout), (FrontendKind::ClusterIp, 80, 0));
    assert_eq!(fe.port.port_name, "http");
}

#[test]
fn multi_port_and_same_port_on_two_protocols_are_separate_frontends() {
    let s = svc("
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}
  - {name: metrics, port: 9153, protocol: TCP}
");
    let udp = slice(
        "
metadata: {name: dns-udp, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns, port: 5353, protocol: UDP}]
endpoints: [{addresses: [10.244.3.2]}]
",
    );
    let tcp = slice(
        "
metadata: {name: dns-tcp, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{name: dns-tcp, port: 5353, protocol: TCP}, {name: metrics, port: 9153, protocol: TCP}]
endpoints: [{addresses: [10.244.1.2]}, {addresses: [10.244.2.2]}]
",
    );
    let d = desired(&s, &[udp, tcp]);
    assert_eq!(
        summary(&d),
        vec![
            ("10.96.0.53:53".into(), Proto::Tcp, vec!["10.244.1.2:5353".into(), "10.244.2.2:5353".into()]),
            ("10.96.0.53:53".into(), Proto::Udp, vec!["10.244.3.2:5353".into()]),
            ("10.96.0.53:9153".into(), Proto::Tcp, vec!["10.244.1.2:9153".into(), "10.244.2.2:9153".into()]),
        ]
    );
}

#[test]
fn only_the_first_address_of_an_endpoint_is_used() {
    // As kube-proxy: an endpoint's addresses are fungible, the first counts.
    let web = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.2, 10.244.1.3]}, {addresses: [10.244.2.2]}]
",
    );
    let d = desired(&svc(WEB), &[web]);
    assert_eq!(
        summary(&d),
        vec![("10.96.0.10:80".into(), Proto::Tcp, vec!["10.244.1.2:8080".into(), "10.244.2.2:8080".into()])]
    );
}

#[test]
fn services_without_translation() {
    for yaml in [
        "metadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}",
        "metadata: {name: e}\nspec: {type: ExternalName, externalName: db.example.com}",
        "metadata: {name: p, labels: {service.kubernetes.io/service-proxy-name: other}}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}",
        "metadata: {name: l, labels: {service.kubernetes.io/headless: ''}}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}",
    ] {
        assert!(desired(&svc(yaml), &[]).frontends.is_empty(), "{yaml}");
    }
}

#[test]
fn no_endpoints_means_a_refusing_frontend() {
    let d = desired(&svc(WEB), &[]);
    assert_eq!(summary(&d), vec![("10.96.0.10:80".into(), Proto::Tcp, vec![])]);
}

#[test]
fn terminating_serving_endpoints_are_a_fallback_only() {
    let s = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.244.2.2], conditions: {ready: false, serving: false, terminating: true}}
- {addresses: [10.244.3.2], conditions: {ready: false}}
- {addresses: [10.244.4.2], conditions: {ready: false, terminating: true}}
",
    );
    let d = desired(&svc(WEB), std::slice::from_ref(&s));
    assert_eq!(
        summary(&d)[0].2,
        vec!["10.244.1.2:8080".to_owned(), "10.244.4.2:8080".to_owned()],
        "only serving+terminating; serving unset means serving, whatever ready says (as kube-proxy)"
    );
    let mut with_ready = s;
    with_ready.endpoints[2].ready = Some(true);
    let d = desired(&svc(WEB), &[with_ready]);
    assert_eq!(summary(&d)[0].2, vec!["10.244.3.2:8080".to_owned()], "a ready endpoint wins over the fallback");
}

#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
    let s = svc("
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, internalTrafficPolicy: Local, externalIPs: [198.51.100.7], ports: [{name: http, port: 80}]}
");
    let eps = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], nodeName: node-a}
- {addresses: [10.244.2.2], nodeName: node-b}
",
    );
    let d = desired(&s, std::slice::from_ref(&eps));
    assert_eq!(summary(&d)[0], ("10.96.0.10:80".into(), Proto::Tcp, vec!["10.244.1.2:8080".into()]));
    assert_eq!(summary(&d)[1].2.len(), 2, "external IPs are not restricted by the internal policy");

    let mut remote_only = eps;
    remote_only.endpoints.remove(0);
    let d = desired(&s, &[remote_only]);
    assert!(summary(&d)[0].2.is_empty(), "no local endpoint refuses");
}

#[test]
fn node_port_load_balancer_and_external_ips() {
    let s = svc("
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalIPs: [198.51.100.7]
  externalTrafficPolicy: Local
  ports: [{name: http, port: 80, nodePort: 30080}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.5}, {ip: 203.0.113.6, ipMode: Proxy}]
");
    let d = desired(&s, &[slice(WEB_SLICE)]);
    let kinds = |scope: Scope| -> Vec<(String, FrontendKind, bool)> {
        d.frontends.iter().filter(|f| f.scope == scope).map(|f| (f.addr.to_string(), f.kind, f.host_ns_only)).collect()
    };
    assert_eq!(
        kinds(Scope::All),
        vec![
            ("10.96.0.10:80".into(), FrontendKind::ClusterIp, false),
            ("127.0.0.1:30080".into(), FrontendKind::NodePort, true),
            ("192.0.2.10:30080".into(), FrontendKind::NodePort, false),
            ("198.51.100.7:80".into(), FrontendKind::ExternalIp, false),
            ("203.0.113.5:80".into(), FrontendKind::LoadBalancer, false),
        ]
    );
    assert!(
        d.frontends.iter().filter(|f| f.scope == Scope::All).all(|f| f.backends.len() == 2),
        "eTP=Local does not restrict in-cluster clients"
    );
    // Clients outside the node get this node's endpoints only (none here:
    // the slice names no node), on every address that faces outside.
    assert_eq!(
        kinds(Scope::External),
        vec![
            ("192.0.2.10:30080".into(), FrontendKind::NodePort, false),
            ("198.51.100.7:80".into(), FrontendKind::ExternalIp, false),
            ("203.0.113.5:80".into(), FrontendKind::LoadBalancer, false),
        ]
    );
    assert!(d.frontends.iter().filter(|f| f.scope == Scope::External).all(|f| f.backends.is_empty()));
    // Exactly the all-clients frontends with a twin announce it (the
    // programs look the twin up only then).
    let announced: Vec<String> =
        d.frontends.iter().filter(|f| f.external_twin).map(|f| format!("{}/{:?}", f.addr, f.scope)).collect();
    assert_eq!(announced, ["192.0.2.10:30080/All", "198.51.100.7:80/All", "203.0.113.5:80/All"]);
}

#[test]
fn topology_hints_prefer_this_zone_only_when_every_endpoint_has_one() {
    let hinted = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], zone: zone-a, hints: {forZones: [{name: zone-a}]}}
- {addresses: [10.244.2.2], zone: zone-b, hints: {forZones: [{name: zone-b}]}}
",
    );
    assert_eq!(summary(&desired(&svc(WEB), std::slice::from_ref(&hinted)))[0].2, vec!["10.244.1.2:8080".to_owned()]);

    let mut partly = hinted.clone();
    partly.endpoints[1].hints.get_or_insert_default().zones = None;
    assert_eq!(summary(&desired(&svc(WEB), &[partly]))[0].2.len(), 2, "a missing hint disables zone preference");

    let mut elsewhere = hinted;
    for ep in &mut elsewhere.endpoints {
        ep.hints.get_or_insert_default().zones = Some(vec!["zone-z".into()]);
    }
    assert_eq!(summary(&desired(&svc(WEB), &[elsewhere]))[0].2.len(), 2, "no endpoint for our zone: use all");
}

#[test]
fn prefer_close_uses_endpoint_zones_without_hints() {
    let s = svc("
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, trafficDistribution: PreferClose, ports: [{name: http, port: 80}]}
");
    let eps = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], zone: zone-a}
- {addresses: [10.244.2.2], zone: zone-b}
",
    );
    assert_eq!(summary(&desired(&s, std::slice::from_ref(&eps)))[0].2, vec!["10.244.1.2:8080".to_owned()]);
    assert_eq!(summary(&desired(&svc(WEB), &[eps]))[0].2.len(), 2, "without PreferClose zones are ignored");
}

#[test]
fn prefer_same_zone_is_prefer_close_and_prefer_same_node_prefers_this_node() {
    let with = |distribution: &str| {
        svc(&format!(
            "metadata: {{name: web, namespace: default}}\nspec: {{clusterIP: 10.96.0.10, trafficDistribution: {distribution}, ports: [{{name: http, port: 80}}]}}"
        ))
    };
    // node() is "node-a" in zone-a.
    let eps = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.244.1.2], zone: zone-a, nodeName: node-a}
- {addresses: [10.244.2.2], zone: zone-a, nodeName: other}
- {addresses: [10.244.3.2], zone: zone-b, nodeName: far}
",
    );
    let backends = |s: &ServiceObj, e: &SliceObj| summary(&desired(s, std::slice::from_ref(e)))[0].2.clone();
    let zone_a = vec!["10.244.1.2:8080".to_owned(), "10.244.2.2:8080".to_owned()];
    assert_eq!(backends(&with("PreferSameZone"), &eps), zone_a);
    assert_eq!(backends(&with("PreferClose"), &eps), zone_a);
    assert_eq!(backends(&with("PreferSameNode"), &eps), vec!["10.244.1.2:8080".to_owned()]);

    // No endpoint on this node: PreferSameNode falls back to the zone.
    let mut elsewhere = eps.clone();
    elsewhere.endpoints[0].node_name = Some("gone".into());
    assert_eq!(backends(&with("PreferSameNode"), &elsewhere), zone_a);

    // Written hints (forNodes) win over the endpoint's own node name.
    let mut hinted = eps;
    for ep in &mut hinted.endpoints {
        ep.hints.get_or_insert_default().nodes = Some(vec!["other".into()]);
    }
    hinted.endpoints[0].hints.get_or_insert_default().nodes = Some(vec!["node-a".into()]);
    hinted.endpoints[2].hints.get_or_insert_default().nodes = Some(vec!["node-a".into()]);
    let got = backends(&svc(WEB), &hinted);
    assert_eq!(got, vec!["10.244.1.2:8080".to_owned(), "10.244.3.2:8080".to_owned()], "forNodes hints apply");
}

#[test]
fn session_affinity_timeouts() {
    let base = "metadata: {name: web}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]";
    let with = |extra: &str| svc(&format!("{base}, {extra}}}"));
    assert_eq!(desired(&with("sessionAffinity: ClientIP"), &[]).frontends[0].affinity_timeout, 10_800);
    assert_eq!(
        desired(&with("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}"), &[])
            .frontends[0]
            .affinity_timeout,
        5
    );
    assert_eq!(desired(&with("sessionAffinity: None"), &[]).frontends[0].affinity_timeout, 0);
    let bad = with("sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}");
    assert_eq!(desired_service(&bad, &[], &node()), Err(ModelError::InvalidAffinityTimeout(0)));
}

#[test]
fn malformed_services_are_errors_not_panics() {
    let bad_ip = svc("metadata: {name: x}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}");
    assert_eq!(desired_service(&bad_ip, &[], &node()), Err(ModelError::InvalidClusterIp("10.96.0.300".into())));
    let bad_port = svc("metadata: {name: x}\nspec: {clusterIP: 10.96.0.3, ports: [{name: p, port: 70000}]}");
    assert!(matches!(desired_service(&bad_port, &[], &node()), Err(ModelError::InvalidPort { .. })));
    let bad_ext = svc("metadata: {name: x}\nspec: {clusterIP: 10.96.0.3, externalIPs: [nope], ports: [{port: 80}]}");
    assert!(matches!(desired_service(&bad_ext, &[], &node()), Err(ModelError::InvalidIp { .. })));
    let no_ip = svc("metadata: {name: x}\nspec: {ports: [{port: 80}]}");
    assert_eq!(desired_service(&no_ip, &[], &node()), Err(ModelError::MissingClusterIp));
    let no_spec = svc("metadata: {name: x}");
    assert_eq!(desired_service(&no_spec, &[], &node()), Err(ModelError::MissingSpec));
}

#[test]
fn sctp_ports_are_skipped_and_ipv6_slices_ignored() {
    let s = svc("
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}, {name: s, port: 90, protocol: SCTP}]}
");
    let v6 = slice(
        "
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ['fd00::1']}]
",
    );
    let d = desired(&s, &[v6, slice(WEB_SLICE)]);
    assert_eq!(d.frontends.len(), 1);
    assert_eq!(d.frontends[0].backends.len(), 2);
    assert_eq!(d.untranslated_ports, vec!["s/SCTP:90".to_owned()], "reported for a log line");
}

#[test]
fn an_endpoint_in_two_slices_counts_once_and_ready_wins() {
    let mut second = slice(WEB_SLICE);
    second.name = "web-2".into();
    second.endpoints[2].ready = Some(true);
    let d = desired(&svc(WEB), &[slice(WEB_SLICE), second]);
    assert_eq!(
        d.frontends[0].backends.iter().copied().collect::<Vec<_>>(),
        vec![a("10.244.1.2:8080"), a("10.244.2.2:8080"), a("10.244.3.2:8080")]
    );
}

/// What one store call marks.
fn marked(call: impl FnOnce(&mut Dirty)) -> Vec<ServiceKey> {
    let mut dirty = Dirty::new();
    call(&mut dirty);
    dirty.into_iter().collect()
}

#[test]
fn store_tracks_which_services_changed() {
    let mut store = Store::default();
    let web = Arc::new(svc(WEB));
    assert_eq!(marked(|d| store.upsert_service(Arc::clone(&web), d)).len(), 1);
    assert!(marked(|d| store.upsert_service(Arc::new(svc(WEB)), d)).is_empty(), "an identical object is not a change");
    let dirty = marked(|d| store.upsert_slice(Arc::new(slice(WEB_SLICE)), d));
    assert_eq!(dirty, vec![ServiceKey::new("default", "web")]);
    assert_eq!(store.slices_of(&ServiceKey::new("default", "web")).len(), 1);

    // A slice relabelled to another Service dirties both.
    let mut moved = slice(WEB_SLICE);
    moved.service = Some("api".into());
    let dirty = marked(|d| store.upsert_slice(Arc::new(moved), d));
    assert_eq!(dirty, vec![ServiceKey::new("default", "api"), ServiceKey::new("default", "web")]);
    assert!(store.slices_of(&ServiceKey::new("default", "web")).is_empty());

    // A complete listing removes what it does not contain.
    assert_eq!(marked(|d| store.replace_services(vec![], &[], d)).len(), 1);
    assert_eq!(store.service_count(), 0);
    let dirty = marked(|d| store.replace_slices(vec![], &[], d));
    assert_eq!(dirty, vec![ServiceKey::new("default", "api")]);

    // An ignoring sink keeps nothing, and the store still changes.
    let mut ignored = Dirty::ignored();
    store.upsert_service(Arc::clone(&web), &mut ignored);
    assert!(ignored.is_empty());
    assert_eq!(store.service_count(), 1);
}

#[test]
fn a_listing_keeps_what_it_could_not_decode() {
    let mut store = Store::default();
    store.upsert_service(Arc::new(svc(WEB)), &mut Dirty::new());
    store.upsert_slice(Arc::new(slice(WEB_SLICE)), &mut Dirty::new());
    let web = ServiceKey::new("default", "web");
    let (ns, name) = (store.slices_of(&web)[0].namespace.to_string(), store.slices_of(&web)[0].name.to_string());

    // The relist has both objects, but neither decodes: nothing changes.
    let kept_svc = [("default".to_owned(), "web".to_owned())];
    assert!(marked(|d| store.replace_services(vec![], &kept_svc, d)).is_empty());
    assert!(marked(|d| store.replace_slices(vec![], &[(ns, name)], d)).is_empty());
    assert_eq!(store.service_count(), 1);
    assert_eq!(store.slices_of(&web).len(), 1);
}

const DUAL: &str = "
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  clusterIPs: [10.96.0.10, 'fd00:96::10']
  externalIPs: [203.0.113.7, '2001:db8::7']
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
";

const WEB_SLICE6: &str = "
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: ['fd00:244:1::2']
- addresses: ['10.244.9.9']
";

fn dual_node() -> NodeContext {
    NodeContext {
        name: "node-a".into(),
        zone: None,
        addresses: vec![Ipv4Addr::new(192, 0, 2, 10).into(), "2001:db8:1::10".parse().unwrap()],
    }
}

#[test]
fn a_dual_stack_service_has_each_family_with_its_own_slices() {
    let refs = [slice(WEB_SLICE), slice(WEB_SLICE6)];
    let refs: Vec<&SliceObj> = refs.iter().collect();
    let d = desired_service(&svc(DUAL), &refs, &dual_node()).unwrap();
    let v4 = vec!["10.244.1.2:8080".to_owned(), "10.244.2.2:8080".to_owned()];
    // An IPv4 address listed in an IPv6 slice is malformed: never used.
    let v6 = vec!["[fd00:244:1::2]:8080".to_owned()];
    let want: Vec<(String, Proto, Vec<String>)> = [
        ("10.96.0.10:80", &v4),
        ("127.0.0.1:30080", &v4),
        ("192.0.2.10:30080", &v4),
        ("203.0.113.7:80", &v4),
        ("[::1]:30080", &v6),
        ("[2001:db8::7]:80", &v6),
        ("[2001:db8:1::10]:30080", &v6),
        ("[fd00:96::10]:80", &v6),
    ]
    .into_iter()
    .map(|(fe, backends)| (fe.to_owned(), Proto::Tcp, backends.clone()))
    .collect();
    assert_eq!(summary(&d), want);
    let loopbacks: Vec<bool> = d.frontends.iter().map(|f| f.host_ns_only).collect();
    assert_eq!(loopbacks, [false, true, false, false, true, false, false, false]);
}

#[test]
fn a_single_stack_service_ignores_addresses_of_the_other_family() {
    let single = DUAL
        .replace("ipFamilyPolicy: RequireDualStack", "ipFamilyPolicy: SingleStack")
        .replace("clusterIPs: [10.96.0.10, 'fd00:96::10']", "clusterIPs: ['fd00:96::10']");
    let refs = [slice(WEB_SLICE), slice(WEB_SLICE6)];
    let refs: Vec<&SliceObj> = refs.iter().collect();
    let d = desired_service(&svc(&single), &refs, &dual_node()).unwrap();
    assert!(d.frontends.iter().all(|f| f.addr.is_ipv6()), "{:?}", summary(&d));
    assert!(d.frontends.iter().all(|f| f.backends.iter().all(SocketAddr::is_ipv6)));
    assert_eq!(d.frontends.len(), 4, "ClusterIP, external IP, node address, ::1: {:?}", summary(&d));
}

#[test]
fn v4_mapped_addresses_are_ipv4() {
    // In an IPv6 slice, a v4-mapped address is an IPv4 one: not used by
    // the IPv6 frontend (it would be rewritten to an address sendmsg6
    // cannot reach); a v4-mapped external IP is the IPv4 external IP.
    let s = svc("
metadata: {name: web, namespace: default}
spec:
  clusterIPs: ['fd00:96::10']
  externalIPs: ['::ffff:203.0.113.9']
  ports: [{name: http, port: 80, targetPort: http}]
");
    let mapped = slice(
        "
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: ['::ffff:10.244.1.2']
- addresses: ['fd00:244:1::2']
",
    );
    let d = desired(&s, &[mapped]);
    assert_eq!(summary(&d), vec![("[fd00:96::10]:80".into(), Proto::Tcp, vec!["[fd00:244:1::2]:8080".into()])]);
}

#[test]
fn health_check_node_port_counts_ready_local_endpoints() {
    let lb = |etp: &str| {
        svc(&format!(
            "
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalTrafficPolicy: {etp}
  healthCheckNodePort: 32100
  ports: [{{name: http, port: 80, nodePort: 30080}}]
"
        ))
    };
    let eps = slice(
        "
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.2], nodeName: node-a}
- {addresses: [10.244.2.2], nodeName: node-a, conditions: {ready: false, serving: true, terminating: true}}
- {addresses: [10.244.3.2], nodeName: node-b}
",
    );
    let d = desired(&lb("Local"), std::slice::from_ref(&eps));
    assert_eq!(
        d.health_check,
        Some(HealthCheck { node_port: 32100, local_endpoints: 1 }),
        "terminating ones do not count"
    );
    assert_eq!(desired(&lb("Cluster"), &[eps]).health_check, None, "only externalTrafficPolicy: Local serves one");
}

#[test]
fn load_balancer_source_ranges_restrict_load_balancer_ips_only() {
    let lb = |ranges: &str| {
        svc(&format!(
            "
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalIPs: [198.51.100.7]
  loadBalancerSourceRanges: [{ranges}]
  ports: [{{name: http, port: 80, nodePort: 30080}}]
status:
  loadBalancer:
    ingress: [{{ip: 203.0.113.5}}]
"
        ))
    };
    let d = desired(&lb("192.0.2.0/24, 198.51.100.1/32"), &[slice(WEB_SLICE)]);
    assert_eq!(d.source_ranges.len(), 1, "only the load-balancer IP: {:?}", d.source_ranges);
    assert_eq!(d.source_ranges[0].frontend, a("203.0.113.5:80"));
    assert_eq!(d.source_ranges[0].ranges.len(), 2);
    // Only that frontend is marked restricted (the programs consult the
    // ranges only for marked frontends).
    let marked: Vec<SocketAddr> = d.frontends.iter().filter(|f| f.source_restricted).map(|f| f.addr).collect();
    assert_eq!(marked, [a("203.0.113.5:80")]);
    let refs: Vec<&SliceObj> = vec![];
    assert!(desired_service(&lb("not-a-cidr"), &refs, &node()).is_err(), "an invalid range is a model error");
}
