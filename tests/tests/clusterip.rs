//! ClusterIP translation from a client in the agent's cgroup: spreading,
//! UDP reply addresses, per-protocol backends, named ports, selector-less
//! Services, what is not translated, and allocated addresses.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use svc_tests::{
    Proto, SYNC_TIMEOUT, TestEnv, UNREACHABLE, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    scenarios::set,
};

#[test]
fn tcp_spreads_over_all_backends() -> Result<()> {
    let mut env = TestEnv::new(3, &[Proto::Tcp(8080)])?;
    let yaml = multi(&[
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("", 80, "8080")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("", 8080)], &env.endpoints(&[1, 2, 3])),
    ]);
    env.manifests.write("web.yaml", &yaml)?;
    env.start_agent()?;

    let vip = addr("10.96.0.10:80");
    let n = 300;
    let out = env.tcp(vip, n)?;
    // Uniform choice: each backend's count is Binomial(300, 1/3) (mean 100,
    // sd 8.2); bounds [60, 143].
    out.assert_fair_share(n, &["b1", "b2", "b3"]);
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "{out}");
    // getpeername() shows the Service address, not the backend.
    assert_eq!(out.peers.len(), 1, "{out}");
    assert_eq!(out.peers.get("10.96.0.10:80"), Some(&n), "{out}");
    Ok(())
}

#[test]
fn udp_reply_source_is_cluster_ip() -> Result<()> {
    let mut env = TestEnv::new(3, &[Proto::Udp(5353)])?;
    let yaml = multi(&[
        &service("default", "dns", Some("10.96.0.11"), &[SvcPort::udp("dns", 53, "5353")]),
        &endpoint_slice("default", "dns-1", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[1, 2, 3])),
    ]);
    env.manifests.write("dns.yaml", &yaml)?;
    env.start_agent()?;
    let vip = addr("10.96.0.11:53");

    let n = 60;
    let out = env.udp(vip, n, false)?;
    assert_eq!(out.total_ok(), n, "every datagram must be answered: {out}");
    // recvfrom() must show the Service address, or resolvers drop replies.
    assert_eq!(out.sources.len(), 1, "{out}");
    assert_eq!(out.sources.get("10.96.0.11:53"), Some(&n), "{out}");
    // Unconnected UDP is translated per datagram: with 60 datagrams every
    // backend answers unless the choice is sticky (P(miss) = 3*(2/3)^60 ~ 1e-10).
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "{out}");

    let n = 30;
    let out = env.udp(vip, n, true)?;
    assert_eq!(out.total_ok(), n, "{out}");
    assert_eq!(out.peers.len(), 1, "{out}");
    assert_eq!(out.peers.get("10.96.0.11:53"), Some(&n), "{out}");
    assert!(out.backends().is_subset(&set(&["b1", "b2", "b3"])), "{out}");
    Ok(())
}

#[test]
fn tcp_and_udp_same_port_use_own_backends() -> Result<()> {
    // Every backend serves both protocols, so a mix-up would be answered.
    let mut env = TestEnv::new(3, &[Proto::Tcp(5353), Proto::Udp(5353)])?;
    let svc = service(
        "default",
        "dns",
        Some("10.96.0.53"),
        &[SvcPort::tcp("dns-tcp", 53, "5353"), SvcPort::udp("dns", 53, "5353")],
    );
    let tcp_slice =
        endpoint_slice("default", "dns-tcp", "dns", &[SlicePort::tcp("dns-tcp", 5353)], &env.endpoints(&[1, 2]));
    let udp_slice = endpoint_slice("default", "dns-udp", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[3]));
    env.manifests.write("dns.yaml", &multi(&[&svc, &tcp_slice, &udp_slice]))?;
    env.start_agent()?;
    let vip = addr("10.96.0.53:53");

    let tcp = env.tcp(vip, 100)?;
    assert_eq!(tcp.total_ok(), 100, "{tcp}");
    // Both TCP backends show up (P(miss one) = 2^-99).
    assert_eq!(tcp.backends(), set(&["b1", "b2"]), "{tcp}");

    let udp = env.udp(vip, 30, false)?;
    assert_eq!(udp.total_ok(), 30, "{udp}");
    assert_eq!(udp.backends(), set(&["b3"]), "{udp}");
    let udp = env.udp(vip, 10, true)?;
    assert_eq!(udp.total_ok(), 10, "{udp}");
    assert_eq!(udp.backends(), set(&["b3"]), "{udp}");
    Ok(())
}

#[test]
fn named_target_port() -> Result<()> {
    // Backends serve both ports, so a wrong port mapping is answered too
    // and shows up in the reply's port.
    let mut env = TestEnv::new(3, &[Proto::Tcp(8080), Proto::Tcp(9090)])?;
    let web = multi(&[
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "http")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2, 3])),
    ]);
    let multi_port = multi(&[
        &service(
            "default",
            "multi",
            Some("10.96.0.21"),
            &[SvcPort::tcp("http", 80, "http"), SvcPort::tcp("admin", 81, "admin")],
        ),
        &endpoint_slice(
            "default",
            "multi-1",
            "multi",
            &[SlicePort::tcp("admin", 9090), SlicePort::tcp("http", 8080)],
            &env.endpoints(&[1, 2]),
        ),
    ]);
    env.manifests.write("web.yaml", &web)?;
    env.manifests.write("multi.yaml", &multi_port)?;
    env.start_agent()?;

    let out = env.tcp(addr("10.96.0.10:80"), 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "web:80 -> http=8080: {out}");

    let out = env.tcp(addr("10.96.0.21:80"), 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "multi:80 -> http=8080: {out}");
    assert!(out.backends().is_subset(&set(&["b1", "b2"])), "{out}");

    let out = env.tcp(addr("10.96.0.21:81"), 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([9090]), "multi:81 -> admin=9090: {out}");
    assert!(out.backends().is_subset(&set(&["b1", "b2"])), "{out}");
    Ok(())
}

/// The classic "external database" pattern: no selector, hand-written
/// `Endpoints`; the not-ready address must not be used.
const MYSQL: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: mysql
  namespace: default
spec:
  clusterIP: 10.96.0.20
  ports:
  - protocol: TCP
    port: 3306
    targetPort: 3306
---
apiVersion: v1
kind: Endpoints
metadata:
  name: mysql
  namespace: default
subsets:
- addresses:
  - ip: 10.244.1.2
  - ip: 10.244.2.2
  notReadyAddresses:
  - ip: 10.244.3.2
  ports:
  - port: 3306
    protocol: TCP
"#;

#[test]
fn selectorless_service_with_manual_endpoints() -> Result<()> {
    let mut env = TestEnv::new(3, &[Proto::Tcp(3306)])?;
    env.manifests.write("mysql.yaml", MYSQL)?;
    env.start_agent()?;

    let out = env.tcp(addr("10.96.0.20:3306"), 60)?;
    assert_eq!(out.total_ok(), 60, "{out}");
    // Both ready addresses answer (P(miss one) = 2^-59), the not-ready never.
    assert_eq!(out.backends(), set(&["b1", "b2"]), "{out}");
    assert_eq!(out.peers.get("10.96.0.20:3306"), Some(&60), "{out}");
    Ok(())
}

/// A translated Service beside a headless and an ExternalName one, both
/// with endpoints that would be used if they were (wrongly) programmed.
const MIXED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  selector: {app: headless}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-1
  namespace: default
  labels: {kubernetes.io/service-name: headless}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.2"]}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: default}
spec:
  type: ExternalName
  externalName: db.example.com
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: external-1
  namespace: default
  labels: {kubernetes.io/service-name: external}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.2"]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 8080}]
endpoints: [{addresses: ["10.244.1.2"]}]
"#;

#[test]
fn headless_and_external_name_not_translated() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    env.manifests.write("mixed.yaml", MIXED)?;
    env.start_agent()?;

    let names: BTreeSet<String> =
        env.agent().frontends()?.into_iter().map(|f| format!("{}/{}", f.namespace, f.name)).collect();
    assert_eq!(names, set(&["default/web"]), "frontends in status");

    // Control: the regular Service is translated...
    let out = env.tcp(addr("10.96.0.10:80"), 5)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&5), "{out}");
    // ...and an address that is no frontend is left alone: the client's
    // unreachable route answers, not a backend.
    let out = env.tcp(addr("10.96.0.99:80"), 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "{out}");
    Ok(())
}

#[test]
fn service_without_cluster_ip_gets_stable_address() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    let yaml = multi(&[
        &service("default", "auto", None, &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", "auto-1", "auto", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2])),
    ]);
    env.manifests.write("auto.yaml", &yaml)?;
    env.start_agent()?;

    let allocated = |env: &mut TestEnv| -> Result<std::net::SocketAddrV4> {
        let frontends = env.agent().frontends()?;
        let f = frontends
            .iter()
            .find(|f| f.namespace == "default" && f.name == "auto" && f.protocol == "TCP")
            .with_context(|| format!("no frontend for default/auto in {frontends:?}"))?;
        f.addr().with_context(|| format!("bad address {:?}", f.address))
    };
    let vip = allocated(&mut env)?;
    let [a, b, ..] = vip.ip().octets();
    assert_eq!((a, b, vip.port()), (10, 96, 80), "{vip} not in 10.96.0.0/16 port 80");

    let out = env.tcp(vip, 20)?;
    assert_eq!(out.total_ok(), 20, "{out}");
    assert_eq!(out.peers.get(&vip.to_string()), Some(&20), "{out}");

    let agent = env.agent();
    agent.kill()?;
    agent.restart()?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let again = allocated(&mut env)?;
    assert_eq!(again, vip, "address changed across a restart");
    let out = env.tcp(vip, 20)?;
    assert_eq!(out.total_ok(), 20, "{out}");
    Ok(())
}
