//! Changes to the manifests reach the dataplane within 1 s, refusing and
//! cgroup scoping.
//!
//! Latency is measured from just before the manifest write until a client
//! observes the change, by polling with short probes; each poll result is
//! then confirmed with a larger run, so an early lucky probe cannot make a
//! broken dataplane pass.

use std::time::{Duration, Instant};

use anyhow::Result;
use svc_tests::{
    Proto, TestEnv, UNREACHABLE, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
    poll_outcome,
    scenarios::set,
};

/// The agent's update budget.
const BUDGET: Duration = Duration::from_secs(1);
/// How long to keep polling, so a slow agent reports its real latency.
const POLL: Duration = Duration::from_secs(5);

fn web_service() -> String {
    service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")])
}

fn web_slice(endpoints: &[Endpoint]) -> String {
    endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

#[test]
fn endpoint_add_remove_applies_within_1s() -> Result<()> {
    let mut env = TestEnv::new(4, &[Proto::Tcp(8080)])?;
    env.manifests.write("web-svc.yaml", &web_service())?;
    env.manifests.write("web-slice.yaml", &web_slice(&env.endpoints(&[1, 2, 3])))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 60)?;
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "before the add: {out}");

    // Add b4. Every probe connect must succeed: updates are atomic.
    let start = Instant::now();
    env.manifests.write("web-slice.yaml", &web_slice(&env.endpoints(&[1, 2, 3, 4])))?;
    poll_outcome(
        POLL,
        || env.tcp(vip, 20),
        |probe| {
            assert_eq!(probe.total_errors(), 0, "connect failed during an update: {probe}");
            probe.count_backend("b4") > 0
        },
    )?;
    let took = start.elapsed();
    eprintln!("endpoint add observed after {took:?}");
    assert!(took <= BUDGET, "new endpoint got traffic only after {took:?}");
    let out = env.tcp(vip, 200)?;
    assert_eq!(out.total_ok(), 200, "{out}");
    // P(some backend gets none of 200) = 4*(3/4)^200 ~ 1e-25.
    assert_eq!(out.backends(), set(&["b1", "b2", "b3", "b4"]), "after the add: {out}");

    // Remove b2. A probe of 40 misses a still-present b2 with p = (3/4)^40
    // ~ 1e-5; the 200-connect confirmation below catches that anyway.
    let start = Instant::now();
    env.manifests.write("web-slice.yaml", &web_slice(&env.endpoints(&[1, 3, 4])))?;
    poll_outcome(
        POLL,
        || env.tcp(vip, 40),
        |probe| {
            assert_eq!(probe.total_errors(), 0, "connect failed during an update: {probe}");
            probe.count_backend("b2") == 0
        },
    )?;
    let took = start.elapsed();
    eprintln!("endpoint removal observed after {took:?}");
    assert!(took <= BUDGET, "removed endpoint still got traffic after {took:?}");
    let out = env.tcp(vip, 200)?;
    assert_eq!(out.total_ok(), 200, "{out}");
    assert_eq!(out.backends(), set(&["b1", "b3", "b4"]), "after the removal: {out}");
    Ok(())
}

#[test]
fn deleted_service_is_no_longer_translated() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    env.manifests.write("web-svc.yaml", &web_service())?;
    env.manifests.write("web-slice.yaml", &web_slice(&env.endpoints(&[1, 2])))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 10)?;
    assert_eq!(out.total_ok(), 10, "before the delete: {out}");

    // Only the Service goes; its slice stays, as it may in Kubernetes for a
    // moment. Without the Service nothing may be translated.
    let start = Instant::now();
    env.manifests.remove("web-svc.yaml")?;
    poll_outcome(POLL, || env.tcp(vip, 5), |o| o.all_failed_with(UNREACHABLE))?;
    let took = start.elapsed();
    eprintln!("Service deletion observed after {took:?}");
    assert!(took <= BUDGET, "deleted Service still translated after {took:?}");

    let out = env.tcp(vip, 50)?;
    assert!(out.all_failed_with(UNREACHABLE), "after the delete: {out}");
    assert_eq!(out.total_errors(), 50, "{out}");
    let frontends = env.agent().frontends()?;
    assert!(frontends.iter().all(|f| f.name != "web"), "stale frontend: {frontends:?}");
    Ok(())
}

#[test]
fn no_ready_endpoints_refuses() -> Result<()> {
    // The backends run, so using a not-ready endpoint would be answered.
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080), Proto::Udp(5353)])?;
    let not_ready: Vec<Endpoint> = (1..=2).map(|i| Endpoint::not_ready(env.topo.backend(i).ip())).collect();
    let svc = service(
        "default",
        "web",
        Some("10.96.0.10"),
        &[SvcPort::tcp("http", 80, "8080"), SvcPort::udp("dns", 53, "5353")],
    );
    let slice = endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)],
        &not_ready,
    );
    env.manifests.write("web.yaml", &multi(&[&svc, &slice]))?;
    env.start_agent()?;

    // ECONNREFUSED (not the unreachable route's error): the frontend exists
    // and refuses, as kube-proxy's REJECT does.
    let tcp = env.tcp(addr("10.96.0.10:80"), 10)?;
    assert_eq!(tcp.errors.get("ECONNREFUSED"), Some(&10), "tcp connect: {tcp}");
    assert_eq!(tcp.total_ok(), 0, "{tcp}");
    let udp = env.udp(addr("10.96.0.10:53"), 5, false)?;
    assert_eq!(udp.errors.get("ECONNREFUSED"), Some(&5), "udp sendto: {udp}");
    assert_eq!(udp.total_ok(), 0, "{udp}");
    let udp = env.udp(addr("10.96.0.10:53"), 5, true)?;
    assert_eq!(udp.errors.get("ECONNREFUSED"), Some(&5), "udp connect: {udp}");

    let frontends = env.agent().frontends()?;
    let web: Vec<_> = frontends.iter().filter(|f| f.name == "web").collect();
    assert_eq!(web.len(), 2, "one frontend per port: {frontends:?}");
    assert!(web.iter().all(|f| f.backends.is_empty()), "{frontends:?}");
    Ok(())
}

#[test]
fn outside_cgroup_not_translated() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080), Proto::Udp(8080)])?;
    let svc = service(
        "default",
        "web",
        Some("10.96.0.10"),
        &[SvcPort::tcp("http", 80, "8080"), SvcPort::udp("udp", 80, "8080")],
    );
    let slice = endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("udp", 8080)],
        &env.endpoints(&[1]),
    );
    env.manifests.write("web.yaml", &multi(&[&svc, &slice]))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");

    // Control: inside the cgroup both protocols are translated.
    let inside = env.tcp(vip, 10)?;
    assert_eq!(inside.ok.get("b1:8080"), Some(&10), "{inside}");
    let inside = env.udp(vip, 10, false)?;
    assert_eq!(inside.ok.get("b1:8080"), Some(&10), "{inside}");

    // Same namespace, outside the cgroup: untouched.
    let outside = env.topo.tcp(None, vip, 10)?;
    assert!(outside.all_failed_with(UNREACHABLE), "{outside}");
    let outside = env.topo.udp(None, vip, 10, false)?;
    assert!(outside.all_failed_with(UNREACHABLE), "{outside}");
    Ok(())
}
