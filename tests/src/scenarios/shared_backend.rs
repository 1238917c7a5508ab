//! What connected sockets show when Services share a backend: the
//! reverse-owner map (`svc_common::reverse`) answers getpeername() for
//! sockets of the backend's first frontend without per-socket storage, so
//! these check that every other socket still shows exactly what it asked
//! for: a second Service over the same backend, a direct connect to the
//! backend, and sockets that stay open while the Services around them
//! change (one is added, the owner is removed). And the server side: an
//! accepted socket whose client happens to dial from a backend's address
//! and port shows that client, not the Service owning the pair.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Result, ensure};

use super::NOT_TRANSLATED;
use crate::{
    At, Dial, NodeEnv, Proto, addr,
    k8s::{PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec, multi},
    poll_outcome,
    session::{Held, HeldRound},
    source::Source,
};

/// Service `name` at `ip`: TCP 80 and UDP 53, both to backend 1
/// (TCP 8080, UDP 5353).
fn service(env: &NodeEnv, name: &str, ip: &str) -> String {
    let svc = ServiceSpec::new("default", name)
        .cluster_ip(&env.service_ip(ip))
        .port(PortSpec::tcp("http", 80, "8080"))
        .port(PortSpec::udp("dns", 53, "5353"));
    let ports = [SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)];
    let slice = endpoint_slice_spec("default", &format!("{name}-1"), name, &ports, &env.endpoints(&[1]));
    multi(&[&svc.yaml(), &slice])
}

/// What `to` looks like in getpeername() of this dial's sockets.
fn shown(dial: Dial, to: SocketAddr) -> String {
    dial.target_any(to).to_string()
}

fn check(round: &HeldRound, want: &str, what: &str, udp: bool) -> Result<()> {
    ensure!(round.peer == want, "{what}: getpeername() shows {} instead of {want} ({round:?})", round.peer);
    if udp {
        ensure!(round.ok.starts_with("b1"), "{what}: no reply from b1 ({round:?})");
        ensure!(round.source == want, "{what}: recvfrom() shows {} instead of {want} ({round:?})", round.source);
    } else {
        // (Only the first round of a held TCP socket reads a greeting.)
        ensure!(round.ok.is_empty() || round.ok.starts_with("b1"), "{what}: no greeting from b1 ({round:?})");
    }
    Ok(())
}

/// Two Services over one backend, a direct connect to it, and sockets
/// held across a Service being added and the backend's owner being
/// removed: every connected socket (TCP, connected UDP) shows what it
/// dialled.
pub fn sockets_show_what_they_dialled(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080), Proto::Udp(5353)])?.dialing(dial);
    env.apply("a", &service(&env, "a", "10.96.0.30"))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);
    let a = addr("10.96.0.30:80");
    let a_udp = addr("10.96.0.30:53");
    let b = addr("10.96.0.31:80");
    let b_udp = addr("10.96.0.31:53");
    let (want_a, want_a_udp) = (shown(dial, a.into()), shown(dial, a_udp.into()));
    let (want_b, want_b_udp) = (shown(dial, b.into()), shown(dial, b_udp.into()));
    let direct = env.backend_addr(1, 8080);
    let want_direct = shown(dial, direct);

    // Service a alone: its sockets (which keep no storage of their own,
    // as a is the backend's owner) show a.
    let (mut tcp_a, first) = pod.hold(a, false)?;
    check(&first, &want_a, "TCP to a", false)?;
    let (mut udp_a, first) = pod.hold(a_udp, true)?;
    check(&first, &want_a_udp, "connected UDP to a", true)?;
    let (mut tcp_direct, first): (Held, HeldRound) = pod.hold(direct, false)?;
    check(&first, &want_direct, "TCP straight to the backend", false)?;

    // Service b over the same backend.
    env.apply("b", &service(&env, "b", "10.96.0.31"))?;
    poll_outcome(super::SETTLE, || pod.tcp(b, 1), |o| o.total_ok() == 1)?;
    let (mut tcp_b, first) = pod.hold(b, false)?;
    check(&first, &want_b, "TCP to b (shared backend)", false)?;
    let (mut udp_b, first) = pod.hold(b_udp, true)?;
    check(&first, &want_b_udp, "connected UDP to b (shared backend)", true)?;
    let (_, first) = pod.hold(a, false)?;
    check(&first, &want_a, "a new TCP socket to a", false)?;
    let (_, first) = pod.hold(direct, false)?;
    check(&first, &want_direct, "a new TCP socket straight to the backend", false)?;
    check(&tcp_a.again()?, &want_a, "the TCP socket to a, after b appeared", false)?;
    check(&udp_a.again()?, &want_a_udp, "the UDP socket to a, after b appeared", true)?;
    check(&tcp_direct.again()?, &want_direct, "the direct socket, after b appeared", false)?;

    // The owner's Service goes away: sockets that relied on its entry
    // still show a (the entry lingers); b's and the direct ones are as before.
    env.delete("a")?;
    poll_outcome(super::SETTLE, || pod.tcp(a, 1), |o| o.all_failed_with(NOT_TRANSLATED))?;
    check(&tcp_a.again()?, &want_a, "the TCP socket to a, after a was removed", false)?;
    check(&tcp_b.again()?, &want_b, "the TCP socket to b, after a was removed", false)?;
    check(&udp_b.again()?, &want_b_udp, "the UDP socket to b, after a was removed", true)?;
    check(&tcp_direct.again()?, &want_direct, "the direct socket, after a was removed", false)?;
    let (_, first) = pod.hold(b, false)?;
    check(&first, &want_b, "a new TCP socket to b, after a was removed", false)?;
    let (_, first) = pod.hold(direct, false)?;
    check(&first, &want_direct, "a new direct socket, after a was removed", false)?;
    Ok(())
}

/// A server under the hooks (client pod 1, in the agent's cgroup) reached
/// by a client in backend pod 1 that binds source port 9090 first: the
/// client's address and port are then backend 1's 9090, whose reverse-owner
/// entry answers Service c. getpeername() of the accepted socket must show
/// the client as it is (`crate::accepted` in the programs): the socket is
/// the server side, never translated by this node.
pub fn accepted_socket_shows_its_client(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    // Service c: TCP 81 to backend 1's port 9090, where nothing listens
    // (the client binds it): only c's reverse-owner entry matters here.
    let svc =
        ServiceSpec::new("default", "c").cluster_ip(&env.service_ip("10.96.0.32")).port(PortSpec::tcp("p", 81, "9090"));
    let slice = endpoint_slice_spec("default", "c-1", "c", &[SlicePort::tcp("p", 9090)], &env.endpoints(&[1]));
    env.apply("c", &multi(&[&svc.yaml(), &slice]))?;
    env.start_agent(&[])?;
    // c is programmed: its connects reach backend 1's closed port 9090.
    let c = addr("10.96.0.32:81");
    poll_outcome(super::SETTLE, || env.pod(1).tcp(c, 1), |o| o.errors.contains_key("ECONNREFUSED"))?;

    let (server_pod, client_pod) = (env.topo.pod(1), env.topo.backend(1));
    // AF_INET for the IPv4 dial; dual-stack `::` for the others (the
    // v4-mapped accepted sockets of `Dial::Mapped`).
    let bind = if dial == Dial::Inet { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let _server = server_pod.serve_echo_peer_in("srv", 7070, env.kubelet_root(), bind)?;
    let (to, client_ip): (SocketAddr, IpAddr) = if dial == Dial::Ipv6 {
        (server_pod.addr6(7070).into(), client_pod.ip6().into())
    } else {
        (server_pod.addr(7070).into(), client_pod.ip().into())
    };
    let out = env.client(At::Backend(1)).tcp_from_port(to, 1, 9090)?;
    let want = format!("srv:7070 {client_ip}");
    ensure!(
        out.ok.get(&want) == Some(&1),
        "the accepted socket of a client dialling from backend 1's port 9090 must show {client_ip}, \
         not Service c (got {out:?})"
    );
    Ok(())
}
