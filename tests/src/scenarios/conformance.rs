//! Replays of the Kubernetes e2e cases (test/e2e/network/service.go and
//! conntrack.go) that apply to a socket-level dataplane, one function per
//! upstream test, named after it. The README's conformance table maps
//! upstream names to these and says why the others do not apply.
//!
//! Upstream runs pods on nodes of a real cluster and checks reachability
//! with curl/agnhost. Here a "pod" is a network namespace on the test node
//! (see [`NodeEnv`]), a "pod on another node" is a client in the cgroup of
//! a second agent with that node's name (same network, other dataplane),
//! and a "pod being deleted" is its EndpointSlice entry changing as the
//! EndpointSlice controller would change it. Upstream's "eventually"
//! (KubeProxyLagTimeout) becomes a poll of [`SETTLE`], and every check
//! that a backend is *not* used keeps that backend's server running, so a
//! stale translation would be answered.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use anyhow::{Result, ensure};

use super::{
    NOT_TRANSLATED, SETTLE, affinity::PODS, assert_refused, only_backend, pinned_backend, poll_tcp, set,
    traffic_policy::OTHER_NODE, wait_affinity_timeout, wait_backends, wait_frontend,
};
use crate::{
    At, Client, NODE_IP, NODE_NAME, NodeEnv, Outcome, Proto, addr,
    k8s::{Affinity, EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    poll_outcome,
    session::{self, Round, UdpSession},
    source::Source,
};

/// Which address of a Service a case reaches it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `clusterIP:port`.
    ClusterIp,
    /// `nodeIP:nodePort` of this node.
    NodePort,
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// A TCP slice for Service `service` (slice `<service>-1`, port `http`).
fn tcp_slice(service: &str, port: u16, endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec("default", &format!("{service}-1"), service, &[SlicePort::tcp("http", port)], endpoints)
}

/// Every one of `count` connects answered by one of `backends`, and each
/// of them at least once.
fn reaches(out: &Outcome, count: u32, backends: &[&str]) -> bool {
    out.total_ok() == count && out.backends() == set(backends)
}

/// `client` reaches exactly `backends` at `to` (60 connects: missing one of
/// up to 3 uniform backends has probability 3 * (2/3)^60 = 1.1e-10),
/// polling first so that a just-applied change is awaited.
fn expect_tcp(client: &Client<'_>, to: SocketAddrV4, backends: &[&str]) -> Result<()> {
    poll_tcp(client, to, 60, |o| reaches(o, 60, backends))
}

/// `client`'s connects to `to` are not translated (the route's error).
fn expect_untranslated(client: &Client<'_>, to: SocketAddrV4) -> Result<()> {
    poll_tcp(client, to, 3, |o| o.all_failed_with(NOT_TRANSLATED))?;
    let out = client.tcp(to, 10)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "{to} still translated: {out}");
    Ok(())
}

/// `client`'s connects to `to` are refused (a frontend without backends).
fn expect_refused(client: &Client<'_>, to: SocketAddrV4) -> Result<()> {
    poll_tcp(client, to, 3, |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    assert_refused(&client.tcp(to, 10)?, &format!("{to}"))
}

// ---------------------------------------------------------------------------
// Endpoints and ports

/// "should serve a basic endpoint from pods": pods come and go, the
/// Service follows (no endpoint: refused).
pub fn serves_a_basic_endpoint_from_pods(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.10:80");
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?;
    let svc =
        ServiceSpec::new("default", "endpoint-test2").cluster_ip("10.96.7.10").port(PortSpec::tcp("http", 80, "8080"));
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("endpoint-test2", 8080, &[]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_refused(&pod, vip)?;
    for (endpoints, backends) in [(&[1][..], &["b1"][..]), (&[1, 2], &["b1", "b2"]), (&[2], &["b2"])] {
        env.apply("slice", &tcp_slice("endpoint-test2", 8080, &env.endpoints(endpoints)))?;
        expect_tcp(&pod, vip, backends)?;
    }
    env.apply("slice", &tcp_slice("endpoint-test2", 8080, &[]))?;
    expect_refused(&pod, vip)
}

/// Backends serving both container ports, so a port mix-up is answered.
fn multiport_env(source: Box<dyn Source>) -> Result<NodeEnv> {
    NodeEnv::new(source, 2, 1, &[Proto::Tcp(100), Proto::Tcp(101)])
}

/// The EndpointSlices the controller writes for pods with different named
/// ports: one slice per port set.
fn multiport_slices(env: &NodeEnv, service: &str, pod1: bool, pod2: bool) -> String {
    let one = endpoint_slice_spec(
        "default",
        &format!("{service}-a"),
        service,
        &[SlicePort::tcp("portname1", 100)],
        &if pod1 { env.endpoints(&[1]) } else { Vec::new() },
    );
    let two = endpoint_slice_spec(
        "default",
        &format!("{service}-b"),
        service,
        &[SlicePort::tcp("portname2", 101)],
        &if pod2 { env.endpoints(&[2]) } else { Vec::new() },
    );
    crate::k8s::multi(&[&one, &two])
}

/// "should serve multiport endpoints from pods": port 80 -> named port
/// svc1 (100, only on pod1), port 81 -> svc2 (101, only on pod2).
pub fn serves_multiport_endpoints_from_pods(source: Box<dyn Source>) -> Result<()> {
    let (p80, p81) = (addr("10.96.7.11:80"), addr("10.96.7.11:81"));
    let mut env = multiport_env(source)?;
    let svc = ServiceSpec::new("default", "multi-endpoint-test")
        .cluster_ip("10.96.7.11")
        .port(PortSpec::tcp("portname1", 80, "svc1"))
        .port(PortSpec::tcp("portname2", 81, "svc2"));
    env.apply("svc", &svc.yaml())?;
    env.apply("slices", &multiport_slices(&env, "multi-endpoint-test", true, true))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let out = pod.tcp(p80, 20)?;
    ensure!(out.ok.get("b1:100") == Some(&20), "{p80}: {out}");
    let out = pod.tcp(p81, 20)?;
    ensure!(out.ok.get("b2:101") == Some(&20), "{p81}: {out}");

    env.apply("slices", &multiport_slices(&env, "multi-endpoint-test", false, true))?;
    expect_refused(&pod, p80)?;
    let out = pod.tcp(p81, 20)?;
    ensure!(out.ok.get("b2:101") == Some(&20), "{p81}: {out}");
    env.apply("slices", &multiport_slices(&env, "multi-endpoint-test", false, false))?;
    expect_refused(&pod, p81)
}

/// "should be updated after adding or deleting ports".
pub fn updated_after_adding_or_deleting_ports(source: Box<dyn Source>) -> Result<()> {
    let (p80, p81) = (addr("10.96.7.12:80"), addr("10.96.7.12:81"));
    let mut env = multiport_env(source)?;
    let one = ServiceSpec::new("default", "edit-port-test").cluster_ip("10.96.7.12").port(PortSpec::tcp(
        "portname1",
        80,
        "svc1",
    ));
    let two = one.clone().port(PortSpec::tcp("portname2", 81, "svc2"));
    env.apply("svc", &one.yaml())?;
    env.apply("slices", &multiport_slices(&env, "edit-port-test", true, true))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let out = pod.tcp(p80, 10)?;
    ensure!(out.ok.get("b1:100") == Some(&10), "{out}");
    expect_untranslated(&pod, p81)?;

    env.apply("svc", &two.yaml())?;
    poll_tcp(&pod, p81, 3, |o| o.ok.get("b2:101") == Some(&3))?;
    let out = pod.tcp(p80, 10)?;
    ensure!(out.ok.get("b1:100") == Some(&10), "{out}");

    env.apply("svc", &one.yaml())?;
    expect_untranslated(&pod, p81)?;
    let out = pod.tcp(p80, 10)?;
    ensure!(out.ok.get("b1:100") == Some(&10), "{out}");
    Ok(())
}

/// "should serve endpoints on same port and different protocols": TCP and
/// UDP 80, then TCP only, then UDP only.
pub fn serves_endpoints_on_same_port_and_different_protocols(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.13:80");
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080), Proto::Udp(8080)])?;
    let base = ServiceSpec::new("default", "multiprotocol-test").cluster_ip("10.96.7.13");
    let tcp = PortSpec::tcp("tcp-port", 80, "8080");
    let udp = PortSpec::udp("udp-port", 80, "8080");
    let slice = endpoint_slice_spec(
        "default",
        "multiprotocol-test-1",
        "multiprotocol-test",
        &[SlicePort::tcp("tcp-port", 8080), SlicePort::udp("udp-port", 8080)],
        &env.endpoints(&[1]),
    );
    env.apply("svc", &base.clone().port(tcp.clone()).port(udp.clone()).yaml())?;
    env.apply("slice", &slice)?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    ensure!(pod.tcp(vip, 5)?.ok.get("b1:8080") == Some(&5), "TCP");
    ensure!(pod.udp(vip, 5, true)?.ok.get("b1:8080") == Some(&5), "UDP");

    env.apply("svc", &base.clone().port(tcp).yaml())?;
    poll_outcome(SETTLE, || pod.udp(vip, 1, true), |o| o.all_failed_with(NOT_TRANSLATED))?;
    ensure!(pod.tcp(vip, 5)?.ok.get("b1:8080") == Some(&5), "TCP after dropping UDP");

    env.apply("svc", &base.port(udp).yaml())?;
    expect_untranslated(&pod, vip)?;
    ensure!(pod.udp(vip, 5, true)?.ok.get("b1:8080") == Some(&5), "UDP after dropping TCP");
    Ok(())
}

/// "should serve endpoints on same port and different protocol for
/// internal traffic on Type LoadBalancer": named target ports, one
/// container port for both protocols, reached by the cluster IP.
pub fn serves_same_port_different_protocols_on_load_balancer(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.14:80");
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(100), Proto::Udp(100)])?;
    let svc = ServiceSpec::new("default", "multiprotocol-lb-test")
        .type_("LoadBalancer")
        .cluster_ip("10.96.7.14")
        .port(PortSpec::tcp("portname1", 80, "svc1").node_port(30310))
        .port(PortSpec::udp("portname2", 80, "svc2").node_port(30310));
    let slice = endpoint_slice_spec(
        "default",
        "multiprotocol-lb-test-1",
        "multiprotocol-lb-test",
        &[SlicePort::tcp("portname1", 100), SlicePort::udp("portname2", 100)],
        &env.endpoints(&[1]),
    );
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &slice)?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    ensure!(pod.tcp(vip, 5)?.ok.get("b1:100") == Some(&5), "TCP");
    ensure!(pod.udp(vip, 5, false)?.ok.get("b1:100") == Some(&5), "UDP");
    ensure!(pod.tcp(at(NODE_IP, 30310), 5)?.ok.get("b1:100") == Some(&5), "TCP NodePort");
    ensure!(pod.udp(at(NODE_IP, 30310), 5, true)?.ok.get("b1:100") == Some(&5), "UDP NodePort");
    Ok(())
}

/// "should preserve source pod IP for traffic thru service cluster IP":
/// the backend sees each pod's own address (no SNAT at the socket).
pub fn preserves_source_pod_ip(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.15:8080");
    let mut env = NodeEnv::new(source, 1, 2, &[])?;
    let server = env.topo.backend(1).serve_echo_peer("echo-sourceip", &[Proto::Tcp(8080)])?;
    env.servers.push(server);
    let svc =
        ServiceSpec::new("default", "sourceip-test").cluster_ip("10.96.7.15").port(PortSpec::tcp("http", 8080, "8080"));
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("sourceip-test", 8080, &env.endpoints(&[1])))?;
    env.start_agent(&[])?;
    for c in 1..=2 {
        let out = env.pod(c).tcp(vip, 5)?;
        let want = format!("echo-sourceip:8080 {}", env.topo.pod(c).ip());
        ensure!(out.ok.get(&want) == Some(&5), "pod {c}: want {want:?}: {out}");
    }
    Ok(())
}

/// "should allow pods to hairpin back to themselves through services".
pub fn allows_pods_to_hairpin_back_to_themselves(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.16:8080");
    let mut env = NodeEnv::new(source, 1, 0, &[Proto::Tcp(8080)])?;
    let svc =
        ServiceSpec::new("default", "hairpin-test").cluster_ip("10.96.7.16").port(PortSpec::tcp("http", 8080, "8080"));
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("hairpin-test", 8080, &env.endpoints(&[1])))?;
    env.start_agent(&[])?;
    let out = env.client(At::Backend(1)).tcp(vip, 10)?;
    ensure!(out.ok.get("b1:8080") == Some(&10), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------------
// Service lifecycle and type changes

fn simple_service(name: &str, ip: &str) -> ServiceSpec {
    ServiceSpec::new("default", name).cluster_ip(ip).port(PortSpec::tcp("http", 80, "8080"))
}

/// "should be able to up and down services".
pub fn up_and_down_services(source: Box<dyn Source>) -> Result<()> {
    let (vip1, vip2, vip3) = (addr("10.96.7.21:80"), addr("10.96.7.22:80"), addr("10.96.7.23:80"));
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    for (name, ip, backend) in [("up-down-1", "10.96.7.21", 1), ("up-down-2", "10.96.7.22", 2)] {
        env.apply(name, &simple_service(name, ip).yaml())?;
        env.apply(&format!("{name}-slice"), &tcp_slice(name, 8080, &env.endpoints(&[backend])))?;
    }
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_tcp(&pod, vip1, &["b1"])?;
    expect_tcp(&pod, vip2, &["b2"])?;

    env.delete("up-down-1")?;
    env.delete("up-down-1-slice")?;
    expect_untranslated(&pod, vip1)?;
    expect_tcp(&pod, vip2, &["b2"])?;

    env.apply("up-down-3", &simple_service("up-down-3", "10.96.7.23").yaml())?;
    env.apply("up-down-3-slice", &tcp_slice("up-down-3", 8080, &env.endpoints(&[3])))?;
    expect_tcp(&pod, vip3, &["b3"])?;
    expect_tcp(&pod, vip2, &["b2"])
}

/// "should work after the service has been recreated".
pub fn works_after_the_service_has_been_recreated(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.24:80");
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080)])?;
    let svc = simple_service("service-deletion", "10.96.7.24").yaml();
    env.apply("svc", &svc)?;
    env.apply("slice", &tcp_slice("service-deletion", 8080, &env.endpoints(&[1])))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_tcp(&pod, vip, &["b1"])?;
    env.delete("svc")?;
    expect_untranslated(&pod, vip)?;
    env.apply("svc", &svc)?;
    expect_tcp(&pod, vip, &["b1"])
}

/// "should work after restarting kube-proxy": the agent is killed (the
/// pinned dataplane keeps serving), restarted, and still follows changes.
pub fn works_after_restarting_the_agent(source: Box<dyn Source>) -> Result<()> {
    let (vip1, vip2) = (addr("10.96.7.25:80"), addr("10.96.7.26:80"));
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    env.apply("svc1", &simple_service("restart-proxy-1", "10.96.7.25").yaml())?;
    env.apply("slice1", &tcp_slice("restart-proxy-1", 8080, &env.endpoints(&[1, 2])))?;
    env.apply("svc2", &simple_service("restart-proxy-2", "10.96.7.26").yaml())?;
    env.apply("slice2", &tcp_slice("restart-proxy-2", 8080, &env.endpoints(&[3])))?;
    env.start_agent(&[])?;
    expect_tcp(&env.pod(1), vip1, &["b1", "b2"])?;
    expect_tcp(&env.pod(1), vip2, &["b3"])?;

    env.agent_mut().kill()?;
    expect_tcp(&env.pod(1), vip1, &["b1", "b2"])?;
    env.agent_mut().restart()?;
    env.agent_mut().wait_in_sync(crate::SYNC_TIMEOUT)?;
    expect_tcp(&env.pod(1), vip1, &["b1", "b2"])?;
    expect_tcp(&env.pod(1), vip2, &["b3"])?;
    env.apply("slice2", &tcp_slice("restart-proxy-2", 8080, &env.endpoints(&[2, 3])))?;
    expect_tcp(&env.pod(1), vip2, &["b2", "b3"])
}

/// "should be able to create a functioning NodePort service": cluster IP
/// and node IP:nodePort, from a pod and from the node.
pub fn creates_a_functioning_node_port_service(source: Box<dyn Source>) -> Result<()> {
    let (vip, node_port) = (addr("10.96.7.27:80"), at(NODE_IP, 30320));
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(9376)])?;
    let svc = ServiceSpec::new("default", "nodeport-test")
        .type_("NodePort")
        .cluster_ip("10.96.7.27")
        .port(PortSpec::tcp("http", 80, "9376").node_port(30320));
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("nodeport-test", 9376, &env.endpoints(&[1, 2])))?;
    env.start_agent(&[])?;
    expect_tcp(&env.pod(1), vip, &["b1", "b2"])?;
    expect_tcp(&env.pod(1), node_port, &["b1", "b2"])?;
    expect_tcp(&env.host(), node_port, &["b1", "b2"])
}

/// "should be possible to connect to a service via ExternalIP when the
/// external IP is not assigned to a node" (203.0.113.250, as upstream).
pub fn connects_via_external_ip_not_assigned_to_a_node(source: Box<dyn Source>) -> Result<()> {
    let external = addr("203.0.113.250:80");
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(9376)])?;
    let svc = ServiceSpec::new("default", "externalip-test")
        .cluster_ip("10.96.7.28")
        .external_ip("203.0.113.250")
        .port(PortSpec::tcp("http", 80, "9376"));
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("externalip-test", 9376, &env.endpoints(&[1, 2])))?;
    env.start_agent(&[])?;
    expect_tcp(&env.pod(1), external, &["b1", "b2"])?;
    expect_tcp(&env.pod(1), addr("10.96.7.28:80"), &["b1", "b2"])
}

/// "should be able to update service type to NodePort listening on same
/// port number but different protocols".
pub fn updates_service_type_to_node_port_on_same_port_different_protocols(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.29:80");
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(9376), Proto::Udp(9376)])?;
    let name = "nodeport-update-service";
    let slice = endpoint_slice_spec(
        "default",
        "nodeport-update-service-1",
        name,
        &[SlicePort::tcp("tcp-port", 9376), SlicePort::udp("udp-port", 9376)],
        &env.endpoints(&[1, 2]),
    );
    let tcp = PortSpec::tcp("tcp-port", 80, "9376");
    let cluster_ip = ServiceSpec::new("default", name).cluster_ip("10.96.7.29").port(tcp.clone());
    let node_port = cluster_ip.clone().type_("NodePort");
    let tcp_only = ServiceSpec { ports: vec![tcp.clone().node_port(30330)], ..node_port.clone() };
    let both = tcp_only.clone().port(PortSpec::udp("udp-port", 80, "9376").node_port(30331));
    env.apply("svc", &cluster_ip.yaml())?;
    env.apply("slice", &slice)?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_tcp(&pod, vip, &["b1", "b2"])?;

    env.apply("svc", &tcp_only.yaml())?;
    expect_tcp(&pod, at(NODE_IP, 30330), &["b1", "b2"])?;
    expect_tcp(&pod, vip, &["b1", "b2"])?;

    env.apply("svc", &both.yaml())?;
    let udp_node_port = at(NODE_IP, 30331);
    poll_outcome(SETTLE, || pod.udp(udp_node_port, 3, false), |o| o.total_ok() == 3)?;
    for to in [vip, udp_node_port] {
        // 30 datagrams reach both (P(one missing) = 2 * 2^-30).
        let out = pod.udp(to, 30, false)?;
        ensure!(reaches(&out, 30, &["b1", "b2"]), "UDP {to}: {out}");
    }
    expect_tcp(&pod, at(NODE_IP, 30330), &["b1", "b2"])
}

/// The four "should be able to change the type from X to Y" cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeChange {
    ExternalNameToClusterIp,
    ExternalNameToNodePort,
    ClusterIpToExternalName,
    NodePortToExternalName,
}

/// "should be able to change the type from ExternalName to ClusterIP",
/// "... ExternalName to NodePort", "... ClusterIP to ExternalName",
/// "... NodePort to ExternalName": an ExternalName Service is never
/// translated (DNS only); the other types are.
pub fn changes_service_type(source: Box<dyn Source>, change: TypeChange) -> Result<()> {
    const NODE_PORT: u16 = 30340;
    let (vip, node_port) = (addr("10.96.7.30:80"), at(NODE_IP, NODE_PORT));
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(9376)])?;
    let name = "type-change";
    let external = ServiceSpec::new("default", name)
        .external_name("externalsvc.default.svc.cluster.local")
        .port(PortSpec::tcp("http", 80, "9376"));
    let cluster_ip = ServiceSpec::new("default", name).cluster_ip("10.96.7.30").port(PortSpec::tcp("http", 80, "9376"));
    let nodeport = ServiceSpec::new("default", name)
        .type_("NodePort")
        .cluster_ip("10.96.7.30")
        .port(PortSpec::tcp("http", 80, "9376").node_port(NODE_PORT));
    let (from, to) = match change {
        TypeChange::ExternalNameToClusterIp => (&external, &cluster_ip),
        TypeChange::ExternalNameToNodePort => (&external, &nodeport),
        TypeChange::ClusterIpToExternalName => (&cluster_ip, &external),
        TypeChange::NodePortToExternalName => (&nodeport, &external),
    };
    env.apply("svc", &from.yaml())?;
    env.apply("slice", &tcp_slice(name, 9376, &env.endpoints(&[1, 2])))?;
    // Untranslated node port connections reach the node: a decoy answers.
    let _decoy = env.topo.node().serve("decoy", &[Proto::Tcp(NODE_PORT)])?;
    env.start_agent(&[])?;
    let pod = env.pod(1);

    let check = |spec: &ServiceSpec| -> Result<()> {
        if spec.external_name.is_some() {
            expect_untranslated(&pod, vip)?;
            poll_tcp(&pod, node_port, 5, |o| reaches(o, 5, &["decoy"]))?;
            ensure!(
                env.agent().frontends()?.iter().all(|f| f.name != name),
                "ExternalName Service programmed: {:?}",
                env.agent().frontends()?
            );
        } else {
            expect_tcp(&pod, vip, &["b1", "b2"])?;
            if spec.type_.as_deref() == Some("NodePort") {
                expect_tcp(&pod, node_port, &["b1", "b2"])?;
            } else {
                poll_tcp(&pod, node_port, 5, |o| reaches(o, 5, &["decoy"]))?;
            }
        }
        Ok(())
    };
    check(from)?;
    env.apply("svc", &to.yaml())?;
    check(to)
}

/// "should release NodePorts on delete": after the Service is gone its
/// node port serves nothing, and a new Service can take it.
pub fn releases_node_ports_on_delete(source: Box<dyn Source>) -> Result<()> {
    const NODE_PORT: u16 = 30350;
    let node_port = at(NODE_IP, NODE_PORT);
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?;
    let reuse = |name: &str, ip: &str| {
        ServiceSpec::new("default", name)
            .type_("NodePort")
            .cluster_ip(ip)
            .port(PortSpec::tcp("http", 80, "8080").node_port(NODE_PORT))
    };
    env.apply("svc", &reuse("nodeport-reuse", "10.96.7.31").yaml())?;
    env.apply("slice", &tcp_slice("nodeport-reuse", 8080, &env.endpoints(&[1])))?;
    let _decoy = env.topo.node().serve("decoy", &[Proto::Tcp(NODE_PORT)])?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_tcp(&pod, node_port, &["b1"])?;

    env.delete("svc")?;
    poll_tcp(&pod, node_port, 5, |o| reaches(o, 5, &["decoy"]))?;
    wait_frontend(env.agent(), &node_port.to_string(), "TCP", false)?;

    env.apply("svc2", &reuse("nodeport-reuse-2", "10.96.7.32").yaml())?;
    env.apply("slice2", &tcp_slice("nodeport-reuse-2", 8080, &env.endpoints(&[2])))?;
    expect_tcp(&pod, node_port, &["b2"])
}

// ---------------------------------------------------------------------------
// Refusals and unready / terminating endpoints

/// "should be rejected when no endpoints exist": no EndpointSlice at all.
pub fn rejected_when_no_endpoints_exist(source: Box<dyn Source>) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(80)])?;
    env.apply(
        "svc",
        &ServiceSpec::new("default", "no-pods").cluster_ip("10.96.7.40").port(PortSpec::tcp("", 80, "80")).yaml(),
    )?;
    env.start_agent(&[])?;
    expect_refused(&env.pod(1), addr("10.96.7.40:80"))
}

/// "should be rejected for evicted pods (no endpoints exist)": a
/// publishNotReadyAddresses Service whose slice lists no endpoints.
pub fn rejected_for_evicted_pods(source: Box<dyn Source>) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(80)])?;
    env.apply(
        "svc",
        &ServiceSpec::new("default", "evicted-pods").cluster_ip("10.96.7.41").port(PortSpec::tcp("", 80, "80")).yaml(),
    )?;
    env.apply(
        "slice",
        &endpoint_slice_spec("default", "evicted-pods-1", "evicted-pods", &[SlicePort::tcp("", 80)], &[]),
    )?;
    env.start_agent(&[])?;
    expect_refused(&env.pod(1), addr("10.96.7.41:80"))
}

/// "should (not) be able to connect to terminating and unready endpoints
/// if PublishNotReadyAddresses is true (false)". With publishNotReady the
/// EndpointSlice controller reports the terminating, unready endpoint as
/// `ready: true`; without it as not ready and not serving. Checked by
/// cluster IP and this node's node port (the other node's node port is
/// wire traffic, outside a socket-level dataplane).
pub fn terminating_unready_endpoints_with_publish_not_ready(source: Box<dyn Source>, publish: bool) -> Result<()> {
    let (vip, node_port) = (addr("10.96.7.42:80"), at(NODE_IP, 30360));
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(80)])?;
    let svc = ServiceSpec::new("default", "svc-tolerate-unready")
        .type_("NodePort")
        .cluster_ip("10.96.7.42")
        .port(PortSpec::tcp("http", 80, "80").node_port(30360));
    let ep = EndpointSpec::new(env.topo.backend(1).ip()).node(NODE_NAME);
    let serving = ep.clone().ready(true);
    let terminating = ep.ready(publish).serving(false).terminating(true);
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("svc-tolerate-unready", 80, &[serving]))?;
    env.start_agent(&[])?;
    expect_tcp(&env.pod(1), vip, &["b1"])?;

    env.apply("slice", &tcp_slice("svc-tolerate-unready", 80, &[terminating]))?;
    if publish {
        wait_backends(env.agent(), "10.96.7.42:80", "TCP", &[env.topo.backend(1).addr(80)])?;
        for to in [vip, node_port] {
            expect_tcp(&env.pod(1), to, &["b1"])?;
        }
    } else {
        for to in [vip, node_port] {
            expect_refused(&env.pod(1), to)?;
        }
    }
    Ok(())
}

/// "should fallback to terminating endpoints when there are no ready
/// endpoints with internalTrafficPolicy=Cluster" (`local: false`) and
/// "should fallback to local terminating endpoints when there are no ready
/// endpoints with internalTrafficPolicy=Local" (`local: true`). The only
/// endpoint is terminating (still serving) on this node; a pod here and a
/// pod on the other node connect.
pub fn falls_back_to_terminating_endpoints(source: Box<dyn Source>, local: bool) -> Result<()> {
    let vip = addr("10.96.7.43:80");
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(80)])?;
    let svc = ServiceSpec::new("default", "svc-proxy-terminating")
        .cluster_ip("10.96.7.43")
        .port(PortSpec::tcp("http", 80, "80"));
    let svc = if local { svc.internal_traffic_policy("Local") } else { svc };
    let ep = EndpointSpec::new(env.topo.backend(1).ip()).node(NODE_NAME);
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("svc-proxy-terminating", 80, std::slice::from_ref(&ep)))?;
    env.start_agent(&[])?;
    let other = env.start_peer_agent(OTHER_NODE)?;
    expect_tcp(&env.pod(1), vip, &["b1"])?;

    // The pod is deleted: terminating, still serving during its grace period.
    env.apply("slice", &tcp_slice("svc-proxy-terminating", 80, &[ep.terminating_serving()]))?;
    expect_tcp(&env.pod(1), vip, &["b1"])?;
    let remote = env.client_on(other, At::Pod(1));
    if local { expect_refused(&remote, vip) } else { expect_tcp(&remote, vip, &["b1"]) }
}

/// "should fallback to terminating endpoints when there are no ready
/// endpoints with externallTrafficPolicy=Cluster" (sic) and "... local
/// terminating endpoints ... with externalTrafficPolicy=Local": the
/// in-cluster part, a pod reaching its own node's node port, which uses the
/// terminating endpoint whatever the policy. (Upstream's other clients
/// reach another node's node port over the wire: external traffic.)
pub fn falls_back_to_terminating_endpoints_by_node_port(source: Box<dyn Source>, etp_local: bool) -> Result<()> {
    let node_port = at(NODE_IP, 30370);
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(80)])?;
    let svc = ServiceSpec::new("default", "svc-proxy-terminating")
        .type_("NodePort")
        .cluster_ip("10.96.7.44")
        .port(PortSpec::tcp("http", 80, "80").node_port(30370));
    let svc = if etp_local { svc.external_traffic_policy("Local") } else { svc };
    let ep = EndpointSpec::new(env.topo.backend(1).ip()).node(NODE_NAME);
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("svc-proxy-terminating", 80, std::slice::from_ref(&ep)))?;
    env.start_agent(&[])?;
    expect_tcp(&env.pod(1), node_port, &["b1"])?;
    env.apply("slice", &tcp_slice("svc-proxy-terminating", 80, &[ep.terminating_serving()]))?;
    wait_backends(env.agent(), &node_port.to_string(), "TCP", &[env.topo.backend(1).addr(80)])?;
    expect_tcp(&env.pod(1), node_port, &["b1"])?;
    expect_tcp(&env.host(), node_port, &["b1"])
}

// ---------------------------------------------------------------------------
// internalTrafficPolicy=Local

/// The clients of "should respect internalTrafficPolicy=Local ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItpCase {
    /// "Pod to Pod".
    PodToPod,
    /// "Pod (hostNetwork: true) to Pod".
    HostNetworkToPod,
    /// "Pod and Node, to Pod (hostNetwork: true)": the backend runs on the
    /// node's host network (endpoint address = node IP).
    PodAndNodeToHostNetworkPod,
}

/// "should respect internalTrafficPolicy=Local Pod to Pod", "... Pod
/// (hostNetwork: true) to Pod", "... Pod and Node, to Pod (hostNetwork:
/// true)": the one endpoint is on this node; clients here reach it five
/// times in a row, clients on the other node are refused every time.
pub fn respects_internal_traffic_policy_local(source: Box<dyn Source>, case: ItpCase) -> Result<()> {
    let vip = addr("10.96.7.45:80");
    let host_backend = case == ItpCase::PodAndNodeToHostNetworkPod;
    let port = if host_backend { 10180 } else { 8080 };
    let mut env = NodeEnv::new(source, 1, 1, if host_backend { &[] } else { &[Proto::Tcp(8080)] })?;
    let (endpoint_ip, expected) = if host_backend {
        let server = env.topo.node().serve(NODE_NAME, &[Proto::Tcp(port)])?;
        env.servers.push(server);
        (NODE_IP, NODE_NAME)
    } else {
        (env.topo.backend(1).ip(), "b1")
    };
    let target = port.to_string();
    let svc = ServiceSpec::new("default", "svc-itp")
        .cluster_ip("10.96.7.45")
        .port(PortSpec::tcp("http", 80, &target))
        .internal_traffic_policy("Local");
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &tcp_slice("svc-itp", port, &[EndpointSpec::new(endpoint_ip).node(NODE_NAME)]))?;
    env.start_agent(&[])?;
    let other = env.start_peer_agent(OTHER_NODE)?;
    let clients: &[At] = match case {
        ItpCase::PodToPod => &[At::Pod(1)],
        ItpCase::HostNetworkToPod => &[At::Host],
        ItpCase::PodAndNodeToHostNetworkPod => &[At::Pod(1), At::Host],
    };
    for &c in clients {
        for _ in 0..5 {
            let out = env.client(c).tcp(vip, 1)?;
            ensure!(only_backend(&out).as_deref() == Some(expected), "{c:?} on {NODE_NAME}: {out}");
            assert_refused(&env.client_on(other, c).tcp(vip, 1)?, &format!("{c:?} on {OTHER_NODE}"))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Session affinity

fn affinity_service(name: &str, via: Via, affinity: Affinity) -> String {
    let svc = ServiceSpec::new("default", name).cluster_ip("10.96.7.50").affinity(affinity);
    match via {
        Via::ClusterIp => svc.port(PortSpec::tcp("", 80, "9376")),
        Via::NodePort => svc.type_("NodePort").port(PortSpec::tcp("", 80, "9376").node_port(30380)),
    }
    .yaml()
}

fn affinity_target(via: Via) -> SocketAddrV4 {
    match via {
        Via::ClusterIp => addr("10.96.7.50:80"),
        Via::NodePort => at(NODE_IP, 30380),
    }
}

fn affinity_env(source: Box<dyn Source>, pods: u8, via: Via, affinity: Affinity) -> Result<NodeEnv> {
    let name = match via {
        Via::ClusterIp => "affinity-clusterip",
        Via::NodePort => "affinity-nodeport",
    };
    let mut env = NodeEnv::new(source, 3, pods, &[Proto::Tcp(9376)])?;
    env.apply("svc", &affinity_service(name, via, affinity))?;
    env.apply(
        "slice",
        &endpoint_slice_spec(
            "default",
            &format!("{name}-1"),
            name,
            &[SlicePort::tcp("", 9376)],
            &env.endpoints(&[1, 2, 3]),
        ),
    )?;
    env.start_agent(&[])?;
    // Upstream first checks that the Service is reachable.
    poll_tcp(&env.pod(1), addr("10.96.7.50:80"), 1, |o| o.total_ok() == 1)?;
    Ok(env)
}

/// "should have session affinity work for service with type clusterIP" and
/// "... for NodePort service": 15 responses in a row from one backend
/// (upstream's AffinityConfirmCount; chance without affinity 3^-14).
pub fn session_affinity_works(source: Box<dyn Source>, via: Via) -> Result<()> {
    let env = affinity_env(source, 1, via, Affinity::ClientIp(None))?;
    let backend = pinned_backend(&env.pod(1), affinity_target(via), 15)?;
    if via == Via::NodePort {
        // Affinity belongs to the service port: the cluster IP gives the
        // same backend as the node port.
        let again = pinned_backend(&env.pod(1), addr("10.96.7.50:80"), 5)?;
        ensure!(again == backend, "cluster IP gave {again}, node port {backend}");
    }
    Ok(())
}

/// "should have session affinity timeout work for service with type
/// clusterIP" and "... for NodePort service": sticky before the timeout
/// (2 s here; upstream 125 s), a fresh pick after it. Upstream retries one
/// client up to 10 times; [`PODS`] clients after one sleep decide with a
/// false-failure probability of 3^-13 = 6.3e-7.
pub fn session_affinity_timeout_works(source: Box<dyn Source>, via: Via) -> Result<()> {
    let env = affinity_env(source, PODS, via, Affinity::ClientIp(Some(2)))?;
    let to = affinity_target(via);
    wait_affinity_timeout(env.agent(), &to.to_string(), "TCP", 2)?;
    let before: Vec<String> = (1..=PODS).map(|c| pinned_backend(&env.pod(c), to, 15)).collect::<Result<_>>()?;
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let after: Vec<String> = (1..=PODS).map(|c| pinned_backend(&env.pod(c), to, 1)).collect::<Result<_>>()?;
    ensure!(before != after, "session is sticky after reaching the timeout: {before:?}");
    Ok(())
}

/// "should be able to switch session affinity for service with type
/// clusterIP" and "... for NodePort service": ClientIP -> None (responses
/// from more than one backend; chance of one in 60 without affinity: 3 *
/// 3^-60) -> ClientIP (15 in a row from one).
pub fn switches_session_affinity(source: Box<dyn Source>, via: Via) -> Result<()> {
    let name = match via {
        Via::ClusterIp => "affinity-clusterip",
        Via::NodePort => "affinity-nodeport",
    };
    let env = affinity_env(source, 1, via, Affinity::ClientIp(None))?;
    let to = affinity_target(via);
    env.apply("svc", &affinity_service(name, via, Affinity::None))?;
    wait_affinity_timeout(env.agent(), &to.to_string(), "TCP", 0)?;
    let out = env.pod(1).tcp(to, 60)?;
    ensure!(out.total_ok() == 60 && out.backends().len() > 1, "affinity should not hold: {out}");
    env.apply("svc", &affinity_service(name, via, Affinity::ClientIp(None)))?;
    wait_affinity_timeout(env.agent(), &to.to_string(), "TCP", 10_800)?;
    pinned_backend(&env.pod(1), to, 15).map(drop)
}

// ---------------------------------------------------------------------------
// Labels

/// "should implement service.kubernetes.io/service-proxy-name" and
/// "... service.kubernetes.io/headless": a Service created with the label
/// is never up; one toggled is down while labelled and up otherwise.
pub fn implements_label(source: Box<dyn Source>, label: &str, value: &str) -> Result<()> {
    let (disabled, toggled) = (addr("10.96.7.60:80"), addr("10.96.7.61:80"));
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(9376)])?;
    let svc_disabled = ServiceSpec::new("default", "service-disabled")
        .cluster_ip("10.96.7.60")
        .port(PortSpec::tcp("", 80, "9376"))
        .label(label, value);
    let svc_toggled =
        ServiceSpec::new("default", "service-toggled").cluster_ip("10.96.7.61").port(PortSpec::tcp("", 80, "9376"));
    for (unit, name, backend) in [("disabled", "service-disabled", 1), ("toggled", "service-toggled", 2)] {
        let slice = endpoint_slice_spec(
            "default",
            &format!("{name}-1"),
            name,
            &[SlicePort::tcp("", 9376)],
            &env.endpoints(&[backend]),
        );
        env.apply(&format!("{unit}-slice"), &slice)?;
    }
    env.apply("disabled", &svc_disabled.yaml())?;
    env.apply("toggled", &svc_toggled.yaml())?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    expect_tcp(&pod, toggled, &["b2"])?;
    expect_untranslated(&pod, disabled)?;

    env.apply("toggled", &svc_toggled.clone().label(label, value).yaml())?;
    expect_untranslated(&pod, toggled)?;
    env.apply("toggled", &svc_toggled.yaml())?;
    expect_tcp(&pod, toggled, &["b2"])?;
    expect_untranslated(&pod, disabled)?;
    expect_untranslated(&env.host(), disabled)
}

// ---------------------------------------------------------------------------
// Conntrack (conntrack.go): UDP clients that keep sending while backends
// change. Upstream's client pod sends from one fixed source port (12345)
// again and again, so that a stale conntrack entry for that flow would
// keep steering it to the old backend. The socket-level counterpart of a
// stale conntrack entry is a connected socket that keeps its translation:
// so the client here is one connected UDP socket on source port 12345,
// kept for as long as it works (like a long-lived resolver socket), with
// a new socket on the same port only after an error. A dataplane that left
// the socket aimed at the removed backend (whose server keeps running)
// fails these tests; this one resets the socket (the client sees
// ECONNABORTED, then reconnects and reaches a live backend).

/// Upstream's client source port.
const UDP_SOURCE_PORT: u16 = 12345;

/// A UDP probe: one new connected socket, one datagram.
fn udp_probe(client: &Client<'_>, to: SocketAddrV4) -> Result<Outcome> {
    client.udp(to, 1, true)
}

/// Reads the session until `backend` answers, then requires the next 10
/// rounds answered by it too; returns every round read.
fn session_reaches(session: &UdpSession, backend: &str) -> Result<Vec<Round>> {
    let want = format!("{backend}:80");
    let mut rounds = session.until(SETTLE, |r| r.ok.as_deref() == Some(want.as_str()))?;
    for _ in 0..10 {
        let round = session.next()?;
        ensure!(round.ok.as_deref() == Some(want.as_str()), "{want} then {round:?}");
        rounds.push(round);
    }
    Ok(rounds)
}

/// After `removed_at` (backend `gone` left the Service), the flow must not
/// be answered by it once a second has passed.
fn ensure_left(rounds: &[Round], gone: &str, removed_at: Instant) -> Result<()> {
    let gone = format!("{gone}:80");
    let late = rounds.iter().filter(|r| r.ok.as_deref() == Some(gone.as_str()) && r.seen > removed_at + SECOND).count();
    ensure!(late == 0, "{late} rounds still answered by the removed {gone}: {:?}", session::summary(rounds));
    Ok(())
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

/// The variants of "should be able to preserve UDP traffic when server pod
/// cycles for a ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpCycle {
    /// "... NodePort service" (this node's address).
    NodePort,
    /// "... ClusterIP service".
    ClusterIp,
    /// "... ClusterIP service and client is hostNetwork".
    ClusterIpHostClient,
    /// "... ClusterIP service with InternalTrafficPolicy set to Local".
    ClusterIpLocal,
}

/// Preserve UDP traffic when the server pod cycles: the client sends
/// before any endpoint exists, then reaches backend 1, then (backend 2
/// added, backend 1 deleted) backend 2. For `ClusterIpLocal`, backend 2 is
/// on the other node (never used here) and a third, local backend is
/// created after backend 1 is gone (upstream regression 126934).
pub fn preserves_udp_traffic_when_server_pod_cycles(source: Box<dyn Source>, variant: UdpCycle) -> Result<()> {
    let node_port = at(NODE_IP, 30390);
    let vip = addr("10.96.7.70:80");
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Udp(80)])?;
    let svc = ServiceSpec::new("default", "svc-udp").cluster_ip("10.96.7.70");
    let svc = match variant {
        UdpCycle::NodePort => svc.type_("NodePort").port(PortSpec::udp("udp", 80, "80").node_port(30390)),
        UdpCycle::ClusterIpLocal => svc.port(PortSpec::udp("udp", 80, "80")).internal_traffic_policy("Local"),
        UdpCycle::ClusterIp | UdpCycle::ClusterIpHostClient => svc.port(PortSpec::udp("udp", 80, "80")),
    };
    let slice = |endpoints: &[EndpointSpec]| {
        endpoint_slice_spec("default", "svc-udp-1", "svc-udp", &[SlicePort::udp("udp", 80)], endpoints)
    };
    let ips: Vec<Ipv4Addr> = (1..=3).map(|i| env.topo.backend(i).ip()).collect();
    let ep = |i: u8, node: &str| EndpointSpec::new(ips[usize::from(i) - 1]).node(node);
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &slice(&[]))?;
    env.start_agent(&[])?;
    let client = env.client(if variant == UdpCycle::ClusterIpHostClient { At::Host } else { At::Pod(1) });
    let to = if variant == UdpCycle::NodePort { node_port } else { vip };

    // No endpoint yet: every try is refused at once.
    let out = udp_probe(&client, to)?;
    ensure!(out.all_failed_with(&["ECONNREFUSED"]), "before any endpoint: {out}");
    // 1500 rounds of 20 ms: longer than the test.
    let session = client.udp_session(to, 1500, UDP_SOURCE_PORT, true)?;
    session.until(SETTLE, |r| r.error.as_deref() == Some("ECONNREFUSED"))?;

    env.apply("slice", &slice(&[ep(1, NODE_NAME)]))?;
    session_reaches(&session, "b1")?;

    if variant == UdpCycle::ClusterIpLocal {
        // A remote endpoint joins: the flow stays on b1.
        env.apply("slice", &slice(&[ep(1, NODE_NAME), ep(2, OTHER_NODE)]))?;
        let rounds = session.until(SETTLE, |_| true)?;
        ensure!(rounds[0].ok.as_deref() == Some("b1:80"), "b1 kept: {:?}", session::summary(&rounds));
        // b1 deleted: the only endpoint is remote, so the local policy
        // refuses (b1's server still runs: a stale translation would
        // answer).
        env.apply("slice", &slice(&[ep(2, OTHER_NODE)]))?;
        let removed_at = Instant::now();
        let rounds = session.until(SETTLE, |r| r.error.as_deref() == Some("ECONNREFUSED"))?;
        ensure_left(&rounds, "b1", removed_at)?;
        env.apply("slice", &slice(&[ep(3, NODE_NAME), ep(2, OTHER_NODE)]))?;
        let rounds = session_reaches(&session, "b3")?;
        ensure_left(&rounds, "b1", removed_at)
    } else {
        // b2 created, then b1 deleted (its server keeps running).
        env.apply("slice", &slice(&[ep(1, NODE_NAME), ep(2, NODE_NAME)]))?;
        env.apply("slice", &slice(&[ep(2, NODE_NAME)]))?;
        let removed_at = Instant::now();
        let rounds = session_reaches(&session, "b2")?;
        ensure_left(&rounds, "b1", removed_at)
    }
}

/// "should be able to preserve UDP traffic when initial unready endpoints
/// get ready".
pub fn preserves_udp_traffic_when_initial_unready_endpoints_get_ready(source: Box<dyn Source>) -> Result<()> {
    let vip = addr("10.96.7.71:80");
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Udp(80)])?;
    let svc = ServiceSpec::new("default", "svc-udp").cluster_ip("10.96.7.71").port(PortSpec::udp("udp", 80, "80"));
    let ip = env.topo.backend(1).ip();
    let slice = |ready: bool| {
        endpoint_slice_spec(
            "default",
            "svc-udp-1",
            "svc-udp",
            &[SlicePort::udp("udp", 80)],
            &[EndpointSpec::new(ip).ready(ready)],
        )
    };
    env.apply("svc", &svc.yaml())?;
    env.apply("slice", &slice(false))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let out = pod.udp(vip, 3, true)?;
    ensure!(out.all_failed_with(&["ECONNREFUSED"]), "unready endpoint used: {out}");
    let session = pod.udp_session(vip, 1500, UDP_SOURCE_PORT, true)?;
    session.until(SETTLE, |r| r.error.as_deref() == Some("ECONNREFUSED"))?;
    env.apply("slice", &slice(true))?;
    session_reaches(&session, "b1").map(|_| ())
}
