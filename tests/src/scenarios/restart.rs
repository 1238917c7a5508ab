//! The pinned dataplane outlives the agent: a SIGKILLed agent leaves it
//! serving, and the restarted agent reconciles with what changed while it
//! was down (through either source, for every [`Dial`]).

use anyhow::{Result, ensure};

use super::{NOT_TRANSLATED, set};
use crate::{
    Dial, NodeEnv, Proto, SYNC_TIMEOUT, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    source::Source,
};

/// Service NAME on CLUSTER_IP:80 -> 8080 with one slice, as two units
/// (`NAME-svc`, `NAME-slice`) so that each can be deleted on its own.
fn apply_web_like(env: &NodeEnv, name: &str, cluster_ip: &str, endpoints: &[EndpointSpec]) -> Result<()> {
    let svc = ServiceSpec::new("default", name)
        .cluster_ip(&env.service_ip(cluster_ip))
        .port(PortSpec::tcp("http", 80, "8080"));
    env.apply(&format!("{name}-svc"), &svc.yaml())?;
    let slice = endpoint_slice_spec("default", &format!("{name}-1"), name, &[SlicePort::tcp("http", 8080)], endpoints);
    env.apply(&format!("{name}-slice"), &slice)
}

/// SIGKILL the agent: connects keep working on the pinned state. While it
/// is down, a Service loses an endpoint, one is deleted, one is created;
/// the restarted agent applies all three and leaves nothing stale.
pub fn sigkill_keeps_serving_and_restart_reconciles(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let (web, gone, new) = (addr("10.96.0.10:80"), addr("10.96.0.12:80"), addr("10.96.0.13:80"));
    apply_web_like(&env, "web", "10.96.0.10", &env.endpoints(&[1, 2, 3]))?;
    apply_web_like(&env, "gone", "10.96.0.12", &env.endpoints(&[1]))?;
    env.start_agent(&[])?;
    let out = env.pod(1).tcp(web, 60)?;
    ensure!(out.backends() == set(&["b1", "b2", "b3"]), "web: {out}");

    env.agent_mut().kill()?;
    let out = env.pod(1).tcp(web, 60)?;
    // P(a backend gets none of 60) = 3*(2/3)^60 ~ 1e-10.
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2", "b3"]), "agent down: {out}");
    ensure!(out.peers.get("10.96.0.10:80") == Some(&60), "agent down, getpeername: {out}");
    let out = env.pod(1).tcp(gone, 5)?;
    ensure!(out.ok.get("b1:8080") == Some(&5), "agent down: {out}");

    // Changes while the agent is down.
    apply_web_like(&env, "web", "10.96.0.10", &env.endpoints(&[1, 2]))?;
    env.delete("gone-svc")?;
    env.delete("gone-slice")?;
    apply_web_like(&env, "new", "10.96.0.13", &env.endpoints(&[2]))?;

    let agent = env.agent_mut();
    agent.restart()?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let pod = env.pod(1);
    let out = pod.tcp(new, 10)?;
    ensure!(out.ok.get("b2:8080") == Some(&10), "new Service: {out}");
    let out = pod.tcp(gone, 10)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "deleted Service: {out}");
    let out = pod.tcp(web, 200)?;
    ensure!(out.total_ok() == 200 && out.backends() == set(&["b1", "b2"]), "removed endpoint b3: {out}");

    // Exactly the expected frontends (besides an API server's own
    // `default/kubernetes`): nothing stale survived the restart.
    let mut frontends: Vec<String> = env
        .agent()
        .frontends()?
        .into_iter()
        .filter(|f| f.name != "kubernetes")
        .map(|f| {
            let mut backends = f.backends;
            backends.sort();
            format!("{}/{} {} {} {} [{}]", f.namespace, f.name, f.kind, f.address, f.protocol, backends.join(","))
        })
        .collect();
    frontends.sort();
    let (b1, b2) = (env.backend_addr(1, 8080), env.backend_addr(2, 8080));
    let mut web_backends = [b1.to_string(), b2.to_string()];
    web_backends.sort();
    let service = |a: &str| env.dial().service_addr(addr(a)).to_string();
    let want = [
        format!("default/new ClusterIP {} TCP [{b2}]", service("10.96.0.13:80")),
        format!("default/web ClusterIP {} TCP [{}]", service("10.96.0.10:80"), web_backends.join(",")),
    ];
    ensure!(frontends == want, "status frontends after the restart: {frontends:?}, want {want:?}");
    Ok(())
}
