//! `internalTrafficPolicy: Local`: ClusterIP traffic goes only to endpoints
//! whose `nodeName` is this node (falling back to local serving and
//! terminating ones), none local refuses; NodePort and external addresses
//! are not restricted by it. A second agent with another node name (its
//! own cgroup, see [`NodeEnv::start_peer_agent`]) shows that "local" is
//! decided per node.

use std::net::SocketAddrV4;

use anyhow::{Result, ensure};

use super::{assert_refused, set, wait_backends};
use crate::{
    At, NODE_IP, NODE_NAME, NodeEnv, Proto, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    source::Source,
};

const VIP: &str = "10.96.3.10:80";
const NODE_PORT: u16 = 30200;
/// The other node's name.
pub const OTHER_NODE: &str = "other-node";

fn vip() -> SocketAddrV4 {
    addr(VIP)
}

fn node_port() -> SocketAddrV4 {
    SocketAddrV4::new(NODE_IP, NODE_PORT)
}

fn service() -> String {
    ServiceSpec::new("default", "web")
        .type_("NodePort")
        .cluster_ip("10.96.3.10")
        .port(PortSpec::tcp("http", 80, "8080").node_port(NODE_PORT))
        .internal_traffic_policy("Local")
        .yaml()
}

fn slice(endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

fn ep(env: &NodeEnv, i: u8, node: &str) -> EndpointSpec {
    EndpointSpec::new(env.topo.backend(i).ip()).node(node)
}

fn setup(source: Box<dyn Source>, endpoints: impl Fn(&NodeEnv) -> Vec<EndpointSpec>) -> Result<(NodeEnv, usize)> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    env.apply("web-svc", &service())?;
    env.apply("web-slice", &slice(&endpoints(&env)))?;
    env.start_agent(&[])?;
    let other = env.start_peer_agent(OTHER_NODE)?;
    Ok((env, other))
}

/// Local endpoints only, for pods and the host network alike; the other
/// node uses its own; NodePort keeps every endpoint; none local refuses.
pub fn local_policy_uses_only_this_nodes_endpoints(source: Box<dyn Source>) -> Result<()> {
    let (env, other) = setup(source, |env| vec![ep(env, 1, NODE_NAME), ep(env, 2, OTHER_NODE), ep(env, 3, NODE_NAME)])?;

    // 60 connects: both local endpoints answer (P(one missing) = 2 *
    // 2^-60), the remote b2 never does.
    for at in [At::Pod(1), At::Host] {
        let out = env.client(at).tcp(vip(), 60)?;
        ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b3"]), "{at:?} on {NODE_NAME}: {out}");
    }
    let out = env.client_on(other, At::Pod(1)).tcp(vip(), 20)?;
    ensure!(out.total_ok() == 20 && out.backends() == set(&["b2"]), "pod on {OTHER_NODE}: {out}");
    // internalTrafficPolicy does not apply to NodePort: all three
    // (P(one missing) = 3 * (2/3)^60 = 1.1e-10).
    let out = env.pod(1).tcp(node_port(), 60)?;
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2", "b3"]), "NodePort: {out}");

    // No local endpoint left: ClusterIP refuses here, NodePort still works.
    env.apply("web-slice", &slice(&[ep(&env, 2, OTHER_NODE)]))?;
    wait_backends::<SocketAddrV4>(env.agent(), VIP, "TCP", &[])?;
    assert_refused(&env.pod(1).tcp(vip(), 10)?, "ClusterIP with no local endpoint")?;
    assert_refused(&env.host().tcp(vip(), 10)?, "ClusterIP with no local endpoint, host network")?;
    let out = env.pod(1).tcp(node_port(), 10)?;
    ensure!(out.total_ok() == 10 && out.backends() == set(&["b2"]), "NodePort: {out}");
    Ok(())
}

/// With no local ready endpoint, local serving+terminating ones are used
/// (not remote ready ones); without those either, refused.
pub fn local_policy_falls_back_to_local_terminating(source: Box<dyn Source>) -> Result<()> {
    let (env, other) =
        setup(source, |env| vec![ep(env, 1, NODE_NAME).terminating_serving(), ep(env, 2, OTHER_NODE).ready(true)])?;

    let out = env.pod(1).tcp(vip(), 20)?;
    ensure!(out.total_ok() == 20 && out.backends() == set(&["b1"]), "local terminating fallback: {out}");
    let out = env.client_on(other, At::Pod(1)).tcp(vip(), 20)?;
    ensure!(out.total_ok() == 20 && out.backends() == set(&["b2"]), "pod on {OTHER_NODE}: {out}");

    env.apply(
        "web-slice",
        &slice(&[ep(&env, 1, NODE_NAME).ready(false).serving(false).terminating(true), ep(&env, 2, OTHER_NODE)]),
    )?;
    wait_backends::<SocketAddrV4>(env.agent(), VIP, "TCP", &[])?;
    assert_refused(&env.pod(1).tcp(vip(), 10)?, "local endpoint terminating and not serving")?;
    Ok(())
}
