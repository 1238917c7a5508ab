//! Topology-aware routing: with topology hints on every endpoint (or
//! `trafficDistribution: PreferClose`), endpoints hinted for this node's
//! zone are preferred; otherwise, or when none is hinted for this zone,
//! all endpoints are used. The zone comes from `--zone` (manifest source)
//! or the Node's `topology.kubernetes.io/zone` label (Kubernetes source),
//! through [`Source::node_zone`].

use std::net::SocketAddrV4;

use anyhow::{Result, ensure};

use super::{SETTLE, set};
use crate::{
    At, NODE_NAME, NodeEnv, Proto, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    poll_outcome,
    source::Source,
};

const VIP: &str = "10.96.5.10:80";
const ZONE: &str = "zone-a";

fn vip() -> SocketAddrV4 {
    addr(VIP)
}

fn service(prefer_close: bool) -> String {
    service_with(if prefer_close { Some("PreferClose") } else { None })
}

fn service_with(distribution: Option<&str>) -> String {
    let svc = ServiceSpec::new("default", "web").cluster_ip("10.96.5.10").port(PortSpec::tcp("http", 80, "8080"));
    match distribution {
        Some(d) => svc.traffic_distribution(d),
        None => svc,
    }
    .yaml()
}

fn slice(endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

fn ep(env: &NodeEnv, i: u8) -> EndpointSpec {
    EndpointSpec::new(env.topo.backend(i).ip())
}

fn setup(
    source: Box<dyn Source>,
    prefer_close: bool,
    endpoints: impl Fn(&NodeEnv) -> Vec<EndpointSpec>,
) -> Result<NodeEnv> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    env.set_zone(ZONE)?;
    env.apply("web-svc", &service(prefer_close))?;
    env.apply("web-slice", &slice(&endpoints(&env)))?;
    env.start_agent(&[])?;
    Ok(env)
}

/// Polls until 60 connects reach exactly `backends` (each present: the
/// chance of missing one of up to 3 uniform backends in 60 connects is
/// below 3 * (2/3)^60 = 1.1e-10), so a change is awaited, then confirmed.
fn expect_backends(env: &NodeEnv, at: At, backends: &[&str]) -> Result<()> {
    let want = set(backends);
    poll_outcome(SETTLE, || env.client(at).tcp(vip(), 60), |o| o.total_ok() == 60 && o.backends() == want)?;
    Ok(())
}

/// Hints for this zone win when every endpoint has hints; an endpoint
/// without hints, or no endpoint hinted for this zone, means all.
pub fn hints_for_this_zone_are_preferred(source: Box<dyn Source>) -> Result<()> {
    let env = setup(source, false, |env| {
        vec![ep(env, 1).hints(&[ZONE]), ep(env, 2).hints(&[ZONE, "zone-b"]), ep(env, 3).hints(&["zone-b"])]
    })?;
    // 60 connects: both zone-a endpoints answer (P(one missing) = 2 *
    // 2^-60), the zone-b one never does.
    for at in [At::Pod(1), At::Host] {
        let out = env.client(at).tcp(vip(), 60)?;
        ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2"]), "{at:?} in {ZONE}: {out}");
    }

    // One endpoint without hints: kube-proxy ignores hints altogether.
    env.apply("web-slice", &slice(&[ep(&env, 1).hints(&[ZONE]), ep(&env, 2).hints(&[ZONE]), ep(&env, 3)]))?;
    expect_backends(&env, At::Pod(1), &["b1", "b2", "b3"])?;

    // Back to zone-a only, then hints that all name other zones: using
    // them would leave this node with nothing, so all are used.
    env.apply(
        "web-slice",
        &slice(&[ep(&env, 1).hints(&[ZONE]), ep(&env, 2).hints(&["zone-b"]), ep(&env, 3).hints(&["zone-b"])]),
    )?;
    expect_backends(&env, At::Pod(1), &["b1"])?;
    env.apply(
        "web-slice",
        &slice(&[ep(&env, 1).hints(&["zone-b"]), ep(&env, 2).hints(&["zone-c"]), ep(&env, 3).hints(&["zone-b"])]),
    )?;
    expect_backends(&env, At::Pod(1), &["b1", "b2", "b3"])?;
    Ok(())
}

/// `trafficDistribution: PreferClose` on endpoints without hints (nothing
/// wrote them: no EndpointSlice controller behind the manifest source)
/// prefers endpoints whose `zone` is this node's; without PreferClose an
/// endpoint's zone alone changes nothing.
pub fn prefer_close_uses_endpoint_zones(source: Box<dyn Source>) -> Result<()> {
    let zoned = |env: &NodeEnv| vec![ep(env, 1).zone(ZONE), ep(env, 2).zone("zone-b"), ep(env, 3).zone(ZONE)];
    let env = setup(source, true, zoned)?;
    // As above: b1 and b3 both answer, b2 (zone-b) never.
    let out = env.pod(1).tcp(vip(), 60)?;
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b3"]), "PreferClose in {ZONE}: {out}");

    env.apply("web-svc", &service(false))?;
    expect_backends(&env, At::Pod(1), &["b1", "b2", "b3"])?;
    Ok(())
}

/// `trafficDistribution: PreferSameNode` prefers the endpoints on this node
/// (by their `nodeName`, as the EndpointSlice controller's `forNodes`
/// hints would say), and `PreferSameZone` is the new name of PreferClose.
pub fn prefer_same_node_then_zone(source: Box<dyn Source>) -> Result<()> {
    let placed = |env: &NodeEnv| {
        vec![
            ep(env, 1).zone(ZONE).node(NODE_NAME),
            ep(env, 2).zone(ZONE).node("other-node"),
            ep(env, 3).zone("zone-b").node("far-node"),
        ]
    };
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    env.set_zone(ZONE)?;
    env.apply("web-svc", &service_with(Some("PreferSameNode")))?;
    env.apply("web-slice", &slice(&placed(&env)))?;
    env.start_agent(&[])?;
    let out = env.pod(1).tcp(vip(), 60)?;
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1"]), "PreferSameNode on {NODE_NAME}: {out}");

    env.apply("web-svc", &service_with(Some("PreferSameZone")))?;
    expect_backends(&env, At::Pod(1), &["b1", "b2"])?;
    Ok(())
}

/// `--zone` wins over the Node's `topology.kubernetes.io/zone` label (the
/// Kubernetes source then does not watch the Node at all).
pub fn zone_flag_wins_over_the_node_label(source: Box<dyn Source>) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    // The Node says zone-b (with the manifest source: an earlier --zone).
    env.set_zone("zone-b")?;
    env.apply("web-svc", &service(false))?;
    env.apply(
        "web-slice",
        &slice(&[ep(&env, 1).hints(&[ZONE]), ep(&env, 2).hints(&[ZONE]), ep(&env, 3).hints(&["zone-b"])]),
    )?;
    env.start_agent(&["--zone", ZONE])?;
    // Both zone-a endpoints answer (P(one missing) = 2 * 2^-60), b3 never.
    let out = env.pod(1).tcp(vip(), 60)?;
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2"]), "--zone {ZONE} must win: {out}");
    Ok(())
}
