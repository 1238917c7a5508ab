//! ClusterIP translation seen from a client pod: spreading, the addresses
//! getpeername() and recvfrom() show, per-protocol backends on one port,
//! named target ports, and the Services that are not translated. Each
//! scenario runs through either source and for every [`Dial`]: an
//! `AF_INET` client, an `AF_INET6` one dialling `::ffff:<ClusterIP>`, or
//! the same Services as IPv6 Services (`fd00:96::a:b` for `10.96.a.b`,
//! IPv6 endpoints).
//!
//! Every backend serves every port a scenario uses, so a wrong backend or
//! port mapping is answered (and shows in the reply) instead of failing.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};

use super::{NOT_TRANSLATED, set};
use crate::{
    Dial, NodeEnv, Proto, addr,
    k8s::{PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec, multi},
    source::Source,
};

/// TCP connects spread uniformly over the backends, and getpeername()
/// shows the ClusterIP, never the backend.
pub fn tcp_spreads_and_shows_the_cluster_ip(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let svc = ServiceSpec::new("default", "web")
        .cluster_ip(&env.service_ip("10.96.0.10"))
        .port(PortSpec::tcp("", 80, "8080"));
    let slice = endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("", 8080)], &env.endpoints(&[1, 2, 3]));
    env.apply("web", &multi(&[&svc.yaml(), &slice]))?;
    env.start_agent(&[])?;

    let n = 300;
    let out = env.pod(1).tcp(addr("10.96.0.10:80"), n)?;
    // Uniform choice: each backend's count is Binomial(300, 1/3) (mean 100,
    // sd 8.2); bounds [60, 143].
    out.assert_fair_share(n, &["b1", "b2", "b3"]);
    ensure!(out.reply_ports() == BTreeSet::from([8080]), "{out}");
    ensure!(out.peers.len() == 1 && out.peers.get("10.96.0.10:80") == Some(&n), "getpeername: {out}");
    Ok(())
}

/// UDP replies come from the ClusterIP (resolvers drop others), over an
/// unconnected socket (translated per datagram) and connected ones. A
/// connected socket's datagram entry goes with the socket (`svc_release`),
/// so a resolver's socket-per-query does not fill the map.
pub fn udp_replies_come_from_the_cluster_ip(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Udp(5353)])?.dialing(dial);
    let svc = ServiceSpec::new("default", "dns")
        .cluster_ip(&env.service_ip("10.96.0.11"))
        .port(PortSpec::udp("dns", 53, "5353"));
    let slice =
        endpoint_slice_spec("default", "dns-1", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[1, 2, 3]));
    env.apply("dns", &multi(&[&svc.yaml(), &slice]))?;
    env.start_agent(&[])?;
    let vip = addr("10.96.0.11:53");
    let pod = env.pod(1);

    let n = 60;
    let out = pod.udp(vip, n, false)?;
    ensure!(out.total_ok() == n, "every datagram must be answered: {out}");
    ensure!(out.sources.len() == 1 && out.sources.get("10.96.0.11:53") == Some(&n), "recvfrom: {out}");
    // Unconnected UDP is translated per datagram: with 60 datagrams every
    // backend answers unless the choice is sticky (P(miss) = 3*(2/3)^60 ~ 1e-10).
    ensure!(out.backends() == set(&["b1", "b2", "b3"]), "{out}");
    // The closed unconnected socket left one entry per backend it sent to
    // (its peers are unknown at close; the LRU ages them): this also shows
    // the count reads the map this dial's translations go to.
    let datagrams = dial.datagram_map();
    let left = env.agent().map_entries(datagrams)?;
    ensure!(left == 3, "{datagrams} after the unconnected socket closed: {left} entries, expected 3");

    let n = 30;
    let out = pod.udp(vip, n, true)?;
    ensure!(out.total_ok() == n, "{out}");
    ensure!(out.peers.len() == 1 && out.peers.get("10.96.0.11:53") == Some(&n), "getpeername: {out}");
    ensure!(out.sources.get("10.96.0.11:53") == Some(&n), "recvfrom: {out}");
    ensure!(out.backends().is_subset(&set(&["b1", "b2", "b3"])), "{out}");
    // Thirty sockets, each connected and closed (the client has exited):
    // none of their entries is left.
    let after = env.agent().map_entries(datagrams)?;
    ensure!(after == left, "{datagrams} after {n} connected sockets closed: {after} entries, expected {left}");
    Ok(())
}

/// TCP and UDP on the same Service port, each with its own backends.
pub fn tcp_and_udp_on_one_port_use_their_own_backends(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(5353), Proto::Udp(5353)])?.dialing(dial);
    let svc = ServiceSpec::new("kube-system", "dns")
        .cluster_ip(&env.service_ip("10.96.0.53"))
        .port(PortSpec::tcp("dns-tcp", 53, "5353"))
        .port(PortSpec::udp("dns", 53, "5353"));
    let tcp_slice = endpoint_slice_spec(
        "kube-system",
        "dns-tcp",
        "dns",
        &[SlicePort::tcp("dns-tcp", 5353)],
        &env.endpoints(&[1, 2]),
    );
    let udp_slice =
        endpoint_slice_spec("kube-system", "dns-udp", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[3]));
    env.apply("dns", &multi(&[&svc.yaml(), &tcp_slice, &udp_slice]))?;
    env.start_agent(&[])?;
    let vip = addr("10.96.0.53:53");
    let pod = env.pod(1);

    let tcp = pod.tcp(vip, 100)?;
    // Both TCP backends show up (P(miss one) = 2^-99).
    ensure!(tcp.total_ok() == 100 && tcp.backends() == set(&["b1", "b2"]), "{tcp}");
    let udp = pod.udp(vip, 30, false)?;
    ensure!(udp.total_ok() == 30 && udp.backends() == set(&["b3"]), "{udp}");
    let udp = pod.udp(vip, 10, true)?;
    ensure!(udp.total_ok() == 10 && udp.backends() == set(&["b3"]), "{udp}");
    ensure!(udp.peers.get("10.96.0.53:53") == Some(&10), "getpeername: {udp}");
    Ok(())
}

/// Named target ports resolve through each slice's port names, also for
/// a Service whose ports map to different container ports.
pub fn named_target_ports(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080), Proto::Tcp(9090)])?.dialing(dial);
    let web = ServiceSpec::new("default", "web")
        .cluster_ip(&env.service_ip("10.96.0.10"))
        .port(PortSpec::tcp("http", 80, "http"));
    let web_slice =
        endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2, 3]));
    let two = ServiceSpec::new("default", "multi")
        .cluster_ip(&env.service_ip("10.96.0.21"))
        .port(PortSpec::tcp("http", 80, "http"))
        .port(PortSpec::tcp("admin", 81, "admin"));
    let two_slice = endpoint_slice_spec(
        "default",
        "multi-1",
        "multi",
        &[SlicePort::tcp("admin", 9090), SlicePort::tcp("http", 8080)],
        &env.endpoints(&[1, 2]),
    );
    env.apply("web", &multi(&[&web.yaml(), &web_slice]))?;
    env.apply("multi", &multi(&[&two.yaml(), &two_slice]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);

    for (to, port, backends) in [
        ("10.96.0.10:80", 8080, &["b1", "b2", "b3"][..]),
        ("10.96.0.21:80", 8080, &["b1", "b2"]),
        ("10.96.0.21:81", 9090, &["b1", "b2"]),
    ] {
        let out = pod.tcp(addr(to), 30)?;
        ensure!(out.total_ok() == 30, "{to}: {out}");
        ensure!(out.reply_ports() == BTreeSet::from([port]), "{to} -> {port}: {out}");
        ensure!(out.backends().is_subset(&set(backends)), "{to}: {out}");
    }
    Ok(())
}

/// A headless and an ExternalName Service, each with an EndpointSlice
/// that would be used if it were (wrongly) programmed, beside a regular
/// one: only the regular one has frontends and is translated.
pub fn headless_and_external_name_are_not_translated(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let slice = |service: &str| {
        endpoint_slice_spec(
            "default",
            &format!("{service}-1"),
            service,
            &[SlicePort::tcp("http", 8080)],
            &env.endpoints(&[1]),
        )
    };
    let port = || PortSpec::tcp("http", 80, "8080");
    let headless = ServiceSpec::new("default", "headless").cluster_ip("None").port(port());
    let external = ServiceSpec::new("default", "external").external_name("db.example.com").port(port());
    let web = ServiceSpec::new("default", "web").cluster_ip(&env.service_ip("10.96.0.10")).port(port());
    for (unit, spec) in [("headless", &headless), ("external", &external), ("web", &web)] {
        env.apply(unit, &multi(&[&spec.yaml(), &slice(&spec.name)]))?;
    }
    env.start_agent(&[])?;

    let names: BTreeSet<String> =
        env.agent().frontends()?.into_iter().map(|f| format!("{}/{}", f.namespace, f.name)).collect();
    // (The API server's own `default/kubernetes` may be there too.)
    ensure!(
        names.contains("default/web") && !names.contains("default/headless") && !names.contains("default/external"),
        "frontends in status: {names:?}"
    );
    // Control: the regular Service is translated...
    let out = env.pod(1).tcp(addr("10.96.0.10:80"), 5)?;
    ensure!(out.ok.get("b1:8080") == Some(&5), "{out}");
    // ...and an address that is no frontend is left alone.
    let out = env.pod(1).tcp(addr("10.96.0.99:80"), 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "{out}");
    Ok(())
}
