//! IPv6 and dual-stack Services through either source, on the dual-stack
//! node topology (every pod and the node have an IPv4 and an IPv6
//! address; `fd00:96::/108` is the IPv6 service range, unreachable from
//! pods and the node unless translated).
//!
//! Every backend serves both families on one socket, so a family mix-up
//! (an IPv6 frontend translated to an IPv4 slice's backend) would be
//! answered; each check names the backends its family's slices hold.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, SocketAddrV6},
};

use anyhow::{Result, ensure};

use super::{NOT_TRANSLATED, assert_refused, pinned_backend, poll_tcp, set};
use crate::{
    Dial, NODE_IP, NODE_IP6, NodeEnv, Proto, addr,
    k8s::{Affinity, EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec, multi},
    source::Source,
};

fn v6(s: &str) -> SocketAddr {
    s.parse::<SocketAddrV6>().unwrap_or_else(|e| panic!("{s}: {e}")).into()
}

/// Slice `NAME` of Service `service` (TCP `http` 8080, UDP `dns` 5353).
fn slice(service: &str, name: &str, endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec(
        "default",
        name,
        service,
        &[SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)],
        endpoints,
    )
}

/// Service `web` with ports `http` (TCP 80 -> 8080) and `dns` (UDP 53 ->
/// 5353).
fn web() -> ServiceSpec {
    ServiceSpec::new("default", "web").port(PortSpec::tcp("http", 80, "8080")).port(PortSpec::udp("dns", 53, "5353"))
}

fn node_env(source: Box<dyn Source>, backends: u8) -> Result<NodeEnv> {
    NodeEnv::new(source, backends, 2, &[Proto::Tcp(8080), Proto::Udp(5353)])
}

/// An IPv6-only ClusterIP Service: TCP spreads over its backends and
/// getpeername() shows `[ClusterIP]:port`; UDP replies come from the
/// ClusterIP (unconnected and connected); with no ready endpoint it
/// refuses; an address next to it is not translated.
pub fn ipv6_cluster_ip(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 3)?;
    let svc = web().cluster_ip("fd00:96::10").ip_families("SingleStack", &["IPv6"]);
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &env.endpoints6(&[1, 2, 3]))]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let (tcp, udp) = (v6("[fd00:96::10]:80"), v6("[fd00:96::10]:53"));

    let n = 150;
    let out = pod.tcp(tcp, n)?;
    // Binomial(150, 1/3) per backend: bounds of assert_fair_share.
    out.assert_fair_share(n, &["b1", "b2", "b3"]);
    ensure!(out.peers.get("[fd00:96::10]:80") == Some(&n), "getpeername shows the ClusterIP: {out}");
    let out = pod.udp(udp, 60, false)?;
    ensure!(out.total_ok() == 60 && out.sources.get("[fd00:96::10]:53") == Some(&60), "recvfrom: {out}");
    // Per datagram: P(a backend misses all 60) = 3 * (2/3)^60 ~ 1e-10.
    ensure!(out.backends() == set(&["b1", "b2", "b3"]), "{out}");
    let out = pod.udp(udp, 10, true)?;
    ensure!(out.total_ok() == 10 && out.peers.get("[fd00:96::10]:53") == Some(&10), "connected UDP: {out}");

    let out = pod.tcp(v6("[fd00:96::11]:80"), 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "not a frontend: {out}");

    let not_ready: Vec<EndpointSpec> = env.endpoints6(&[1, 2, 3]).into_iter().map(|e| e.ready(false)).collect();
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &not_ready)]))?;
    poll_tcp(&pod, tcp, 3, |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    assert_refused(&pod.tcp(tcp, 10)?, "no ready endpoint")?;
    assert_refused(&pod.udp(udp, 5, false)?, "udp sendto, no ready endpoint")?;
    Ok(())
}

/// A dual-stack Service (RequireDualStack) with one slice per family:
/// each family's ClusterIP reaches exactly its own slice's backends, from
/// `AF_INET`, `AF_INET6` and v4-mapped `AF_INET6` sockets alike; `status`
/// shows both frontends.
pub fn dual_stack_families_use_their_own_slices(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 4)?;
    let svc = web().cluster_ips(&["10.96.0.20", "fd00:96::20"]).ip_families("RequireDualStack", &["IPv4", "IPv6"]);
    env.apply(
        "web",
        &multi(&[
            &svc.yaml(),
            &slice("web", "web-v4", &env.endpoints(&[1, 2])),
            &slice("web", "web-v6", &env.endpoints6(&[3, 4])),
        ]),
    )?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    // 60 connects: P(one of two backends missed) = 2 * 2^-60.
    for (to, backends) in [(addr("10.96.0.20:80").into(), ["b1", "b2"]), (v6("[fd00:96::20]:80"), ["b3", "b4"])] {
        let out = pod.tcp(to, 60)?;
        ensure!(out.total_ok() == 60 && out.backends() == set(&backends), "{to}: {out}");
        ensure!(out.peers.get(&to.to_string()) == Some(&60), "{to}: getpeername: {out}");
        let udp = SocketAddr::new(to.ip(), 53);
        let out = pod.udp(udp, 30, false)?;
        ensure!(out.total_ok() == 30 && out.backends() == set(&backends), "{udp}: {out}");
        ensure!(out.sources.get(&udp.to_string()) == Some(&30), "{udp}: recvfrom: {out}");
    }
    let mapped = pod.dialing(Dial::Mapped).tcp(addr("10.96.0.20:80"), 20)?;
    ensure!(mapped.total_ok() == 20 && mapped.backends().is_subset(&set(&["b1", "b2"])), "v4-mapped: {mapped}");
    let addresses: BTreeSet<String> =
        env.agent().frontends()?.into_iter().filter(|f| f.name == "web").map(|f| f.address).collect();
    let want: BTreeSet<String> =
        ["10.96.0.20:53", "10.96.0.20:80", "[fd00:96::20]:53", "[fd00:96::20]:80"].map(str::to_owned).into();
    ensure!(addresses == want, "status frontends: {addresses:?}");
    Ok(())
}

/// IPv6 NodePort on the node's IPv6 address (from a pod) and on `[::1]`
/// (from the host network namespace only), IPv6 external and
/// load-balancer IPs; a dual-stack NodePort also on the IPv4 ones.
pub fn ipv6_node_port_external_and_load_balancer_ips(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 2)?;
    let svc = ServiceSpec::new("default", "web")
        .type_("LoadBalancer")
        .cluster_ips(&["fd00:96::30", "10.96.0.30"])
        .ip_families("RequireDualStack", &["IPv6", "IPv4"])
        .port(PortSpec::tcp("http", 80, "8080").node_port(30090))
        .external_ip("2001:db8::20")
        .lb_ingress("2001:db8::10", None);
    env.apply(
        "web",
        &multi(&[
            &svc.yaml(),
            &endpoint_slice_spec("default", "web-v6", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints6(&[1])),
            &endpoint_slice_spec("default", "web-v4", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[2])),
        ]),
    )?;
    env.start_agent(&[])?;
    let node_port6 = SocketAddr::new(NODE_IP6.into(), 30090);
    let loopback6 = v6("[::1]:30090");
    for (client, to, backend) in [
        (env.pod(1), node_port6, "b1"),
        (env.pod(1), v6("[2001:db8::20]:80"), "b1"),
        (env.pod(1), v6("[2001:db8::10]:80"), "b1"),
        (env.host(), loopback6, "b1"),
        (env.pod(1), SocketAddr::new(NODE_IP.into(), 30090), "b2"),
    ] {
        let out = client.tcp(to, 10)?;
        ensure!(out.ok.get(&format!("{backend}:8080")) == Some(&10), "{to}: {out}");
        ensure!(out.peers.get(&to.to_string()) == Some(&10), "{to}: getpeername: {out}");
    }
    // [::1]:nodePort is the host's alone: a pod's ::1 is its own.
    let out = env.pod(1).tcp(loopback6, 3)?;
    ensure!(out.total_ok() == 0, "a pod's [::1]:nodePort must not be translated: {out}");
    Ok(())
}

/// `sessionAffinity: ClientIP` on an IPv6 Service of 10 backends (more
/// than an IPv6 frontend holds inline: slots and membership entries in the
/// IPv6 maps): each client pod keeps its backend, and a pinned backend
/// that leaves is replaced at once.
pub fn ipv6_affinity(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 10)?;
    let all: Vec<u8> = (1..=10).collect();
    let svc = web().cluster_ip("fd00:96::40").ip_families("SingleStack", &["IPv6"]).affinity(Affinity::ClientIp(None));
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &env.endpoints6(&all))]))?;
    env.start_agent(&[])?;
    let vip = v6("[fd00:96::40]:80");
    // Without affinity 15 connects all land on one of 10 backends with
    // probability 10^-14.
    let first = pinned_backend(&env.pod(1), vip, 15)?;
    pinned_backend(&env.pod(2), vip, 15)?;
    let entries = env.agent().affinity()?;
    ensure!(entries.len() >= 2, "status shows the IPv6 pins: {entries:?}");
    let index = |name: &str| name.trim_start_matches('b').parse::<u8>().unwrap_or(0);
    let rest: Vec<u8> = all.iter().copied().filter(|i| *i != index(&first)).collect();
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &env.endpoints6(&rest))]))?;
    poll_tcp(&env.pod(1), vip, 5, |o| o.total_ok() == 5 && o.count_backend(&first) == 0)?;
    let moved = pinned_backend(&env.pod(1), vip, 15)?;
    ensure!(moved != first, "pod 1 left its removed backend {first}");
    Ok(())
}

/// Real clients: `curl` to both addresses of a dual-stack Service (`-4`
/// and `-6`), and `dig` over UDP and TCP to a DNS server behind an IPv6
/// Service (dig checks that the reply comes from the address it asked).
pub fn real_clients_reach_ipv6_services(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 2)?;
    let servers = [
        env.topo.backend(1).serve_dns("dns1", 5300)?,
        env.topo.backend(2).serve_dns("dns2", 5300)?,
        env.topo.backend(1).serve_http("web1", 8081)?,
        env.topo.backend(2).serve_http("web2", 8081)?,
    ];
    let http = ServiceSpec::new("default", "web")
        .cluster_ips(&["10.96.0.50", "fd00:96::50"])
        .ip_families("PreferDualStack", &["IPv4", "IPv6"])
        .port(PortSpec::tcp("http", 80, "8081"));
    let dns = ServiceSpec::new("default", "dns")
        .cluster_ip("fd00:96::53")
        .ip_families("SingleStack", &["IPv6"])
        .port(PortSpec::udp("dns", 53, "5300"))
        .port(PortSpec::tcp("dns-tcp", 53, "5300"));
    let dns_slice = endpoint_slice_spec(
        "default",
        "dns-v6",
        "dns",
        &[SlicePort::udp("dns", 5300), SlicePort::tcp("dns-tcp", 5300)],
        &env.endpoints6(&[1, 2]),
    );
    env.apply(
        "web",
        &multi(&[
            &http.yaml(),
            &endpoint_slice_spec("default", "web-v4", "web", &[SlicePort::tcp("http", 8081)], &env.endpoints(&[1])),
            &endpoint_slice_spec("default", "web-v6", "web", &[SlicePort::tcp("http", 8081)], &env.endpoints6(&[2])),
        ]),
    )?;
    env.apply("dns", &multi(&[&dns.yaml(), &dns_slice]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    for (flag, url, backend) in [("-4", "http://10.96.0.50/", "web1"), ("-6", "http://[fd00:96::50]/", "web2")] {
        let body = pod.exec("curl", &["-sS", "--max-time", "5", flag, url])?;
        ensure!(body.trim() == format!("{backend}:8081"), "curl {flag} {url}: {body:?}");
    }
    for transport in ["+notcp", "+tcp"] {
        let answer = pod.exec(
            "dig",
            &["@fd00:96::53", "-p", "53", transport, "+short", "+tries=1", "+time=2", "TXT", "svc.test"],
        )?;
        let answer = answer.trim().trim_matches('"');
        ensure!(answer == "dns1" || answer == "dns2", "dig {transport}: {answer:?}");
    }
    drop(servers);
    Ok(())
}

/// A connected UDP socket to an IPv6 Service is reset when its backend
/// leaves (the agent finds it through `SVC_REVNAT6` and destroys it over
/// `AF_INET6` sock_diag); one connected to that backend directly is not.
pub fn ipv6_udp_socket_to_removed_backend_is_reset(source: Box<dyn Source>) -> Result<()> {
    let mut env = node_env(source, 2)?;
    let svc = web().cluster_ip("fd00:96::60").ip_families("SingleStack", &["IPv6"]);
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &env.endpoints6(&[1, 2]))]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let via_service = pod.udp_session(v6("[fd00:96::60]:53"), 150, 0, false)?;
    let first = via_service.next()?;
    let Some(reply) = first.ok else { anyhow::bail!("first round through the Service failed: {first:?}") };
    let (pinned, other) = if reply.starts_with("b1:") { (1u8, 2u8) } else { (2, 1) };
    let direct = pod.udp_session(SocketAddr::from(env.topo.backend(pinned).addr6(5353)), 150, 0, false)?;
    ensure!(direct.next()?.ok.is_some(), "direct session works");

    // The pinned backend leaves; its server keeps answering, so a socket
    // that is not reset would keep getting replies from it.
    env.apply("web", &multi(&[&svc.yaml(), &slice("web", "web-v6", &env.endpoints6(&[other]))]))?;
    let removed_at = std::time::Instant::now();
    let rounds = via_service.rest();
    let pinned_name = format!("b{pinned}:5353");
    let late = rounds
        .iter()
        .filter(|r| r.ok.as_deref() == Some(&pinned_name) && r.seen > removed_at + std::time::Duration::from_secs(1))
        .count();
    ensure!(late == 0, "the socket kept talking to the removed backend: {late} late replies");
    let reset = rounds.iter().find(|r| r.seen > removed_at && r.error.is_some());
    ensure!(
        reset.is_some_and(|r| matches!(r.error.as_deref(), Some("ECONNABORTED" | "EDESTADDRREQ"))),
        "the socket was never reset: {reset:?}"
    );
    let direct_rounds = direct.rest();
    ensure!(direct_rounds.iter().all(|r| r.error.is_none()), "the direct socket was reset: {direct_rounds:?}");
    Ok(())
}
