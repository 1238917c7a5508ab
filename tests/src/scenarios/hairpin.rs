//! Hairpin: a backend pod that is also a client of its own Service (a
//! client process in the backend's network namespace, joined to the
//! node's cgroup, as a second container of the pod) lands on a backend,
//! possibly itself, and sees the Service address as its peer. kube-proxy
//! needs hairpin masquerading for this; at the socket the destination is
//! simply the pod's own address.

use std::net::SocketAddrV4;

use anyhow::{Result, ensure};

use super::{set, wait_backends, web_slice};
use crate::{
    At, NodeEnv, Proto, addr,
    k8s::{PortSpec, ServiceSpec},
    source::Source,
};

const VIP: &str = "10.96.6.10";

fn tcp() -> SocketAddrV4 {
    addr(&format!("{VIP}:80"))
}

fn udp() -> SocketAddrV4 {
    addr(&format!("{VIP}:53"))
}

/// A single-backend Service reached from that backend: itself, TCP and
/// UDP, with the Service address as peer and reply source.
pub fn backend_reaches_itself_through_its_service(source: Box<dyn Source>) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 0, &[Proto::Tcp(8080), Proto::Udp(5353)])?;
    let svc = ServiceSpec::new("default", "web")
        .cluster_ip(VIP)
        .port(PortSpec::tcp("http", 80, "8080"))
        .port(PortSpec::udp("dns", 53, "5353"));
    env.apply("web-svc", &svc.yaml())?;
    env.apply("web-slice", &web_slice(&env, &[1]))?;
    env.start_agent(&[])?;

    let me = env.client(At::Backend(1));
    let out = me.tcp(tcp(), 20)?;
    ensure!(out.ok.get("b1:8080") == Some(&20), "{out}");
    ensure!(out.peers.get(&tcp().to_string()) == Some(&20), "getpeername: {out}");
    let out = me.udp(udp(), 10, false)?;
    ensure!(out.ok.get("b1:5353") == Some(&10), "{out}");
    ensure!(out.sources.get(&udp().to_string()) == Some(&10), "recvfrom source: {out}");

    // The other backends, not in the Service, are reached only once added:
    // the client really goes through the Service.
    env.apply("web-slice", &web_slice(&env, &[1, 2, 3]))?;
    let backends: Vec<_> = (1..=3).map(|i| env.topo.backend(i).addr(8080)).collect();
    wait_backends(env.agent(), &tcp().to_string(), "TCP", &backends)?;
    // From b2: itself and the others, all three (P(one missing) = 3 *
    // (2/3)^60 = 1.1e-10), every connect answered.
    let out = env.client(At::Backend(2)).tcp(tcp(), 60)?;
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2", "b3"]), "{out}");
    Ok(())
}
