//! What connected sockets show when Services share a backend: the
//! reverse-owner map (`svc_common::reverse`) answers getpeername() for
//! sockets of the backend's first frontend without per-socket storage, so
//! these check that every other socket still shows exactly what it asked
//! for: a second Service over the same backend, a direct connect to the
//! backend, and sockets that stay open while the Services around them
//! change (one is added, the owner is removed).

use std::net::SocketAddr;

use anyhow::{Result, ensure};

use super::NOT_TRANSLATED;
use crate::{
    Dial, NodeEnv, Proto, addr,
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
