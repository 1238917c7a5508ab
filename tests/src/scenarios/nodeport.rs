//! NodePort, external IPs and load-balancer IPs for in-cluster clients:
//! `nodeIP:nodePort` on every local address of the node, following address
//! changes, `127.0.0.1:nodePort` only from the host network namespace, and
//! `spec.externalIPs` / `status.loadBalancer.ingress[].ip` (except
//! `ipMode: Proxy`) translated straight to the backends.
//!
//! Where "not translated" must be told apart from "translated", a decoy
//! server listens on the node port in the namespace the untranslated
//! connection would reach: it answers `decoy:PORT`, which no backend does.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::Instant,
};

use anyhow::{Result, ensure};

use super::{NOT_TRANSLATED, poll_tcp, set, traffic_policy::OTHER_NODE, wait_frontend};
use crate::{
    Dial, NODE_IP, NODE_NAME, NodeEnv, Proto, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    source::Source,
};

const TCP_NODE_PORT: u16 = 30080;
const UDP_NODE_PORT: u16 = 30053;

fn at(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Service `web` of type NodePort (TCP 80 -> 8080 on `node_port`) with
/// backends b1 and b2.
fn apply_tcp_node_port(env: &NodeEnv, cluster_ip: &str, node_port: u16) -> Result<()> {
    let svc = ServiceSpec::new("default", "web")
        .type_("NodePort")
        .cluster_ip(cluster_ip)
        .port(PortSpec::tcp("http", 80, "8080").node_port(node_port))
        .yaml();
    let slice =
        endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2]));
    env.apply("web-svc", &svc)?;
    env.apply("web-slice", &slice)
}

/// Every port's connects all answered by backends `b1`/`b2` (no decoy).
fn all_backends(out: &crate::Outcome, count: u32) -> bool {
    out.total_ok() == count && out.backends().is_subset(&set(&["b1", "b2"]))
}

/// `nodeIP:nodePort` works from pods and the host network on every node
/// address, `127.0.0.1:nodePort` only from the host network; TCP and UDP.
pub fn node_port_on_node_addresses_and_host_loopback(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080), Proto::Udp(5353)])?.dialing(dial);
    let svc = ServiceSpec::new("default", "web")
        .type_("NodePort")
        .cluster_ip("10.96.4.10")
        .port(PortSpec::tcp("http", 80, "8080").node_port(TCP_NODE_PORT))
        .port(PortSpec::udp("dns", 53, "5353").node_port(UDP_NODE_PORT))
        .yaml();
    let slice = endpoint_slice_spec(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)],
        &env.endpoints(&[1, 2]),
    );
    env.apply("web-svc", &svc)?;
    env.apply("web-slice", &slice)?;
    let decoys = [Proto::Tcp(TCP_NODE_PORT), Proto::Udp(UDP_NODE_PORT)];
    let _pod_decoy = env.topo.pod(1).serve("decoy", &decoys)?;
    let _node_decoy = env.topo.node().serve("decoy", &decoys)?;
    env.start_agent(&[])?;

    // One NodePort frontend per node address (lo's NODE_IP, the pod-side
    // gateways) plus the host-only 127.0.0.1.
    let want: BTreeSet<String> = [NODE_IP, Ipv4Addr::LOCALHOST]
        .into_iter()
        .chain((1..=2).map(|i| Ipv4Addr::new(10, 244, i, 1)))
        .chain([Ipv4Addr::new(10, 245, 1, 1)])
        .map(|ip| at(ip, TCP_NODE_PORT).to_string())
        .collect();
    let got: BTreeSet<String> = env
        .agent()
        .frontends()?
        .into_iter()
        .filter(|f| f.kind == "NodePort" && f.protocol == "TCP")
        .map(|f| f.address)
        .collect();
    ensure!(got == want, "NodePort frontends: {got:?}, want {want:?}");

    let node_port = at(NODE_IP, TCP_NODE_PORT);
    // 30 connects reach both backends (P(one missing) = 2 * 2^-30).
    let out = env.pod(1).tcp(node_port, 30)?;
    ensure!(all_backends(&out, 30) && out.backends().len() == 2, "pod -> {node_port}: {out}");
    ensure!(out.peers.get(&node_port.to_string()) == Some(&30), "getpeername: {out}");
    let gateway = at(Ipv4Addr::new(10, 245, 1, 1), TCP_NODE_PORT);
    let out = env.pod(1).tcp(gateway, 10)?;
    ensure!(all_backends(&out, 10), "pod -> {gateway}: {out}");

    let loopback = at(Ipv4Addr::LOCALHOST, TCP_NODE_PORT);
    for to in [node_port, loopback] {
        let out = env.host().tcp(to, 10)?;
        ensure!(all_backends(&out, 10), "host -> {to}: {out}");
        ensure!(out.peers.get(&to.to_string()) == Some(&10), "getpeername: {out}");
    }
    // From a pod, 127.0.0.1 is the pod's own loopback: untouched.
    let out = env.pod(1).tcp(loopback, 5)?;
    ensure!(out.backends() == set(&["decoy"]) && out.total_ok() == 5, "pod -> {loopback}: {out}");

    let udp_node_port = at(NODE_IP, UDP_NODE_PORT);
    let udp_loopback = at(Ipv4Addr::LOCALHOST, UDP_NODE_PORT);
    let out = env.pod(1).udp(udp_node_port, 20, false)?;
    ensure!(all_backends(&out, 20), "pod -> udp {udp_node_port}: {out}");
    ensure!(out.sources.get(&udp_node_port.to_string()) == Some(&20), "recvfrom source: {out}");
    let out = env.host().udp(udp_loopback, 10, false)?;
    ensure!(all_backends(&out, 10), "host -> udp {udp_loopback}: {out}");
    ensure!(out.sources.get(&udp_loopback.to_string()) == Some(&10), "recvfrom source: {out}");
    let out = env.pod(1).udp(udp_loopback, 5, true)?;
    ensure!(out.backends() == set(&["decoy"]) && out.total_ok() == 5, "pod -> udp {udp_loopback}: {out}");

    let out = env.pod(1).tcp(addr("10.96.4.10:80"), 10)?;
    ensure!(all_backends(&out, 10), "ClusterIP: {out}");
    Ok(())
}

/// An address added to the node gets NodePort frontends within the agent's
/// address poll; a removed one loses them.
pub fn node_port_follows_node_address_changes(source: Box<dyn Source>) -> Result<()> {
    const NODE_PORT: u16 = 30081;
    let new_ip = Ipv4Addr::new(10, 250, 0, 20);
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?;
    apply_tcp_node_port(&env, "10.96.4.20", NODE_PORT)?;
    // Between the address appearing and the agent programming it, the
    // node itself answers: the decoy, never mistaken for a backend.
    let _node_decoy = env.topo.node().serve("decoy", &[Proto::Tcp(NODE_PORT)])?;
    env.start_agent(&[])?;
    let to = at(new_ip, NODE_PORT);

    // Not a node address yet: the node has no route for it.
    let out = env.pod(1).tcp(to, 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "before the address exists: {out}");

    let start = Instant::now();
    env.topo.add_node_address(new_ip)?;
    poll_tcp(&env.pod(1), to, 3, |o| all_backends(o, 3))?;
    eprintln!("NodePort on a new node address after {:?}", start.elapsed());
    wait_frontend(env.agent(), &to.to_string(), "TCP", true)?;
    let out = env.pod(1).tcp(to, 30)?;
    ensure!(all_backends(&out, 30) && out.backends().len() == 2, "after the add: {out}");

    let start = Instant::now();
    env.topo.remove_node_address(new_ip)?;
    poll_tcp(&env.pod(1), to, 3, |o| o.all_failed_with(NOT_TRANSLATED))?;
    eprintln!("NodePort gone from a removed node address after {:?}", start.elapsed());
    wait_frontend(env.agent(), &to.to_string(), "TCP", false)?;
    // The other addresses were never affected.
    let out = env.pod(1).tcp(at(NODE_IP, NODE_PORT), 10)?;
    ensure!(all_backends(&out, 10), "NODE_IP after the removal: {out}");
    Ok(())
}

/// `spec.externalIPs` and `status.loadBalancer.ingress[].ip` go straight to
/// the backends for pods and the host network, whatever
/// `externalTrafficPolicy` says; other ports of those addresses are left
/// alone; dropping the addresses stops the translation.
pub fn external_and_load_balancer_ips_reach_backends(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let lb_ip = addr("203.0.113.10:80");
    let external_ip = addr("203.0.113.20:80");
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let base = ServiceSpec::new("default", "web")
        .type_("LoadBalancer")
        .cluster_ip("10.96.4.30")
        .port(PortSpec::tcp("http", 80, "8080").node_port(30082))
        .external_traffic_policy("Local");
    let full = base.clone().external_ip("203.0.113.20").lb_ingress("203.0.113.10", None);
    let endpoints = [
        EndpointSpec::new(env.topo.backend(1).ip()).node(NODE_NAME),
        EndpointSpec::new(env.topo.backend(2).ip()).node(OTHER_NODE),
    ];
    env.apply("web-svc", &full.yaml())?;
    env.apply(
        "web-slice",
        &endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &endpoints),
    )?;
    env.start_agent(&[])?;

    let kinds: BTreeSet<(String, String)> = env.agent().frontends()?.into_iter().map(|f| (f.address, f.kind)).collect();
    ensure!(
        kinds.contains(&(lb_ip.to_string(), "LoadBalancer".to_owned()))
            && kinds.contains(&(external_ip.to_string(), "ExternalIP".to_owned())),
        "frontends: {kinds:?}"
    );
    for to in [lb_ip, external_ip] {
        // Both endpoints, though only b1 is local: externalTrafficPolicy
        // does not restrict in-cluster clients (P(one missing) = 2 * 2^-30).
        let out = env.pod(1).tcp(to, 30)?;
        ensure!(all_backends(&out, 30) && out.backends().len() == 2, "pod -> {to}: {out}");
        ensure!(out.peers.get(&to.to_string()) == Some(&30), "getpeername: {out}");
        let out = env.host().tcp(to, 10)?;
        ensure!(all_backends(&out, 10), "host -> {to}: {out}");
    }
    // Another port of the same address is not a frontend: no namespace
    // routes 203.0.113.0/24.
    let out = env.pod(1).tcp(addr("203.0.113.20:81"), 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "203.0.113.20:81 must not be translated: {out}");

    env.apply("web-svc", &base.yaml())?;
    for to in [lb_ip, external_ip] {
        poll_tcp(&env.pod(1), to, 3, |o| o.all_failed_with(NOT_TRANSLATED))?;
    }
    let out = env.pod(1).tcp(at(NODE_IP, 30082), 10)?;
    ensure!(all_backends(&out, 10), "NodePort after dropping the external addresses: {out}");
    Ok(())
}

/// A load-balancer ingress IP with `ipMode: Proxy` (KEP-1860) is not
/// translated: traffic must really go through the load balancer. (Needs an
/// API server of 1.29 or later to keep the field.)
pub fn proxy_mode_ingress_ips_are_not_translated(source: Box<dyn Source>) -> Result<()> {
    let (vip_mode, proxy_mode) = (addr("203.0.113.10:80"), addr("203.0.113.11:80"));
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?;
    let svc = ServiceSpec::new("default", "web")
        .type_("LoadBalancer")
        .cluster_ip("10.96.4.31")
        .port(PortSpec::tcp("http", 80, "8080").node_port(30083))
        .lb_ingress("203.0.113.10", Some("VIP"))
        .lb_ingress("203.0.113.11", Some("Proxy"));
    env.apply("web-svc", &svc.yaml())?;
    env.apply(
        "web-slice",
        &endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2])),
    )?;
    env.start_agent(&[])?;
    let out = env.pod(1).tcp(vip_mode, 10)?;
    ensure!(all_backends(&out, 10), "ipMode VIP {vip_mode}: {out}");
    let out = env.pod(1).tcp(proxy_mode, 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "ipMode Proxy {proxy_mode} must not be translated: {out}");
    ensure!(
        env.agent().frontends()?.iter().all(|f| f.address != proxy_mode.to_string()),
        "a frontend for {proxy_mode}"
    );
    Ok(())
}

/// kube-proxy's `--nodeport-addresses`: IPVS's `kube-ipvs0` (holding
/// ClusterIPs) is never a node address; a CIDR list keeps only the local
/// addresses inside it. The node namespace has no default route, so
/// `primary` means every other interface's addresses. (This kernel has no
/// `dummy` driver, so `kube-ipvs0` is made an `ifb` device and excluded by
/// its name; the driver rule, which excludes every dummy device, is unit
/// tested in svc-agent/src/source/node.rs.)
pub fn node_port_addresses_exclude_dummies_and_follow_cidrs(source: Box<dyn Source>) -> Result<()> {
    const NODE_PORT: u16 = 30082;
    let (ipvs_ip, extra_ip) = (Ipv4Addr::new(10, 96, 44, 44), Ipv4Addr::new(10, 250, 0, 30));
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080)])?;
    let node = env.topo.node().netns();
    node.ip(&["link", "add", "kube-ipvs0", "type", "ifb"])?;
    node.ip(&["addr", "add", &format!("{ipvs_ip}/32"), "dev", "kube-ipvs0"])?;
    env.topo.add_node_address(extra_ip)?;
    apply_tcp_node_port(&env, "10.96.4.30", NODE_PORT)?;
    env.start_agent(&[])?;
    let node_ports = |env: &NodeEnv| -> Result<BTreeSet<String>> {
        let frontends = env.agent().frontends()?;
        Ok(frontends.into_iter().filter(|f| f.kind == "NodePort").map(|f| f.address).collect())
    };
    let have = node_ports(&env)?;
    for ip in [NODE_IP, extra_ip, Ipv4Addr::LOCALHOST] {
        ensure!(have.contains(&at(ip, NODE_PORT).to_string()), "{ip} is a node address: {have:?}");
    }
    ensure!(!have.contains(&at(ipvs_ip, NODE_PORT).to_string()), "{ipvs_ip} is on kube-ipvs0: {have:?}");
    let out = env.pod(1).tcp(at(NODE_IP, NODE_PORT), 10)?;
    ensure!(all_backends(&out, 10), "NODE_IP: {out}");

    // Only NODE_IP's range: the extra address is no longer one.
    let only = format!("{NODE_IP}/32");
    env.agent_mut().kill()?;
    env.agent_mut().restart_with(&["--nodeport-addresses", &only])?;
    env.agent_mut().wait_in_sync(crate::SYNC_TIMEOUT)?;
    let have = node_ports(&env)?;
    let want: BTreeSet<String> =
        [NODE_IP, Ipv4Addr::LOCALHOST].iter().map(|ip| at(*ip, NODE_PORT).to_string()).collect();
    ensure!(have == want, "--nodeport-addresses {NODE_IP}/32: {have:?}");
    Ok(())
}
