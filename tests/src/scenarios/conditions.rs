//! Endpoint conditions: `ready` (unset counts as ready) endpoints are used;
//! when none is ready, those that are `serving` and `terminating`
//! (KEP-1669); otherwise the frontend refuses. Every backend in these
//! scenarios runs, so using an endpoint that should be skipped is answered
//! and shows up in the replies.

use std::net::SocketAddrV4;

use anyhow::{Result, ensure};

use super::{assert_refused, poll_tcp, set, wait_backends};
use crate::{
    NodeEnv, Proto, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    source::Source,
};

const VIP: &str = "10.96.2.10:80";

fn vip() -> SocketAddrV4 {
    addr(VIP)
}

fn setup(source: Box<dyn Source>, endpoints: impl Fn(&NodeEnv) -> Vec<EndpointSpec>) -> Result<NodeEnv> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?;
    let svc = ServiceSpec::new("default", "web").cluster_ip("10.96.2.10").port(PortSpec::tcp("http", 80, "8080"));
    env.apply("web-svc", &svc.yaml())?;
    env.apply("web-slice", &slice(&endpoints(&env)))?;
    env.start_agent(&[])?;
    Ok(env)
}

fn slice(endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

fn ep(env: &NodeEnv, i: u8) -> EndpointSpec {
    EndpointSpec::new(env.topo.backend(i).ip())
}

/// Ready and condition-less endpoints are used, not-ready ones are not.
pub fn ready_or_unset_endpoints_are_used(source: Box<dyn Source>) -> Result<()> {
    let env = setup(source, |env| vec![ep(env, 1), ep(env, 2).ready(true), ep(env, 3).ready(false)])?;
    let out = env.pod(1).tcp(vip(), 60)?;
    ensure!(out.total_ok() == 60, "{out}");
    // Both usable endpoints answer (P(one missing) = 2 * 2^-60); the
    // not-ready b3 never does.
    ensure!(out.backends() == set(&["b1", "b2"]), "{out}");
    Ok(())
}

/// With no ready endpoint, serving+terminating ones are used (and only
/// those); once one is ready again, only ready ones; with neither, refused.
pub fn terminating_fallback_and_refusal(source: Box<dyn Source>) -> Result<()> {
    let all_down = |env: &NodeEnv| {
        vec![
            // Shutting down gracefully, still serving: the fallback.
            ep(env, 1).terminating_serving(),
            // Terminating and no longer serving.
            ep(env, 2).ready(false).serving(false).terminating(true),
            // `serving` unset means serving, whatever `ready` says (as
            // kube-proxy's EndpointSlice cache reads it): the fallback too.
            ep(env, 3).ready(false).terminating(true),
        ]
    };
    let env = setup(source, all_down)?;
    let agent = env.agent();
    let out = env.pod(1).tcp(vip(), 30)?;
    // P(one of the two missing from 30) = 2 * 2^-30.
    ensure!(out.total_ok() == 30 && out.backends() == set(&["b1", "b3"]), "terminating fallback: {out}");

    // b2 becomes ready (a new Pod): the terminating b1 is no longer used.
    env.apply("web-slice", &slice(&[ep(&env, 1).terminating_serving(), ep(&env, 2).ready(true)]))?;
    wait_backends(agent, VIP, "TCP", &[env.topo.backend(2).addr(8080)])?;
    let out = env.pod(1).tcp(vip(), 30)?;
    ensure!(out.total_ok() == 30 && out.backends() == set(&["b2"]), "ready beats terminating: {out}");

    // Nothing ready, nothing serving: the frontend stays and refuses.
    env.apply(
        "web-slice",
        &slice(&[ep(&env, 1).ready(false).serving(false).terminating(true), ep(&env, 2).ready(false)]),
    )?;
    poll_tcp(&env.pod(1), vip(), 3, |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    let out = env.pod(1).tcp(vip(), 20)?;
    assert_refused(&out, "no ready or serving endpoint")?;
    Ok(())
}
