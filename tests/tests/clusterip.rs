//! ClusterIP translation through the manifest source, from `AF_INET` and
//! (v4-mapped) `AF_INET6` sockets, and the same with IPv6 Services: the
//! scenarios of
//! `svc_tests::scenarios::clusterip` (also run through the Kubernetes
//! source), plus what only the manifest source does: mirroring
//! hand-written Endpoints and allocating stable addresses.

use anyhow::{Context as _, Result};
use svc_tests::{
    Dial, Proto, SYNC_TIMEOUT, TestEnv, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    scenarios::set,
};

svc_tests::family_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::clusterip::tcp_spreads_and_shows_the_cluster_ip => tcp_spreads_and_shows_the_cluster_ip,
    svc_tests::scenarios::clusterip::udp_replies_come_from_the_cluster_ip => udp_replies_come_from_the_cluster_ip,
    svc_tests::scenarios::clusterip::tcp_and_udp_on_one_port_use_their_own_backends
        => tcp_and_udp_on_one_port_use_their_own_backends,
    svc_tests::scenarios::clusterip::named_target_ports => named_target_ports,
    svc_tests::scenarios::clusterip::headless_and_external_name_are_not_translated
        => headless_and_external_name_are_not_translated,
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
    selectorless_service(Dial::Inet)
}

#[test]
fn selectorless_service_with_manual_endpoints_v4_mapped() -> Result<()> {
    selectorless_service(Dial::Mapped)
}

fn selectorless_service(dial: Dial) -> Result<()> {
    let mut env = TestEnv::new(3, &[Proto::Tcp(3306)])?;
    env.dial = dial;
    env.manifests.write("mysql.yaml", MYSQL)?;
    env.start_agent()?;

    let out = env.tcp(addr("10.96.0.20:3306"), 60)?;
    assert_eq!(out.total_ok(), 60, "{out}");
    // Both ready addresses answer (P(miss one) = 2^-59), the not-ready never.
    assert_eq!(out.backends(), set(&["b1", "b2"]), "{out}");
    assert_eq!(out.peers.get("10.96.0.20:3306"), Some(&60), "{out}");
    Ok(())
}

#[test]
fn service_without_cluster_ip_gets_stable_address() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    // Dialled from AF_INET6 (v4-mapped): the allocated address serves both.
    env.dial = Dial::Mapped;
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
