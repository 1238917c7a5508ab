//! Services with more endpoints than fit inline in the frontend value
//! (`INLINE_BACKENDS`, 16) keep their backends in `SVC_BACKENDS` slots and,
//! with session affinity, membership entries in `SVC_BE_INDEX`: the same
//! behaviour through the programs' other path.

use std::collections::BTreeSet;

use anyhow::Result;
use svc_tests::{
    Proto, TestEnv, addr,
    k8s::{Affinity, PortSpec, ServiceSpec, SlicePort, endpoint_slice},
    poll_outcome,
};

const BACKENDS: u8 = 20;

fn web(env: &TestEnv, affinity: Affinity, backends: &[u8]) -> String {
    let svc = ServiceSpec::new("default", "web").cluster_ip("10.96.0.10").port(PortSpec::tcp("http", 80, "8080"));
    let slice = endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(backends));
    format!("{}\n---\n{slice}", svc.affinity(affinity).yaml())
}

fn names(range: impl Iterator<Item = u8>) -> BTreeSet<String> {
    range.map(|i| format!("b{i}")).collect()
}

#[test]
fn large_backend_set_spreads_and_follows_changes() -> Result<()> {
    let mut env = TestEnv::new(BACKENDS, &[Proto::Tcp(8080)])?;
    let all: Vec<u8> = (1..=BACKENDS).collect();
    env.manifests.write("web.yaml", &web(&env, Affinity::Unset, &all))?;
    env.start_agent()?;
    let fe = env.agent().frontends()?;
    let web_fe = fe.iter().find(|f| f.address == "10.96.0.10:80").expect("frontend programmed");
    assert_eq!(web_fe.backends.len(), usize::from(BACKENDS), "{web_fe:?}");

    // 400 connects over 20 backends: each is missed with probability
    // (19/20)^400 = 1.2e-9, so "every backend answers" fails a correct
    // dataplane with probability < 2.5e-8.
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 400)?;
    assert_eq!(out.total_ok(), 400, "{out}");
    assert_eq!(out.backends(), names(1..=BACKENDS), "{out}");

    // Two endpoints leave (their servers keep running): a new set of 18
    // slots replaces the old one, and they get no more connections.
    let remaining: Vec<u8> = (3..=BACKENDS).collect();
    env.manifests.write("web.yaml", &web(&env, Affinity::Unset, &remaining))?;
    poll_outcome(svc_tests::SYNC_TIMEOUT, || env.tcp(vip, 40), |o| o.backends().is_subset(&names(3..=BACKENDS)))?;
    let out = env.tcp(vip, 400)?;
    assert_eq!(out.backends(), names(3..=BACKENDS), "{out}");
    // The old set's 20 slots go once the grace period the batch asked
    // for has ended, with no further event to wake the agent.
    svc_tests::poll_until(svc_tests::SYNC_TIMEOUT, || {
        Ok(env.agent().map_entries(svc_common::names::BACKENDS)? == u64::from(BACKENDS) - 2)
    })?;
    Ok(())
}

#[test]
fn large_backend_set_keeps_affinity_and_repicks_when_the_pin_leaves() -> Result<()> {
    let mut env = TestEnv::new(BACKENDS, &[Proto::Tcp(8080)])?;
    let all: Vec<u8> = (1..=BACKENDS).collect();
    env.manifests.write("web.yaml", &web(&env, Affinity::ClientIp(None), &all))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 30)?;
    assert_eq!(out.backends().len(), 1, "one client keeps one backend: {out}");
    let pinned: u8 = out.backends().first().expect("a backend")[1..].parse()?;

    // Another endpoint leaves: the set changes (new slots), the pin stays
    // (found through the membership entries of the new set).
    let other = if pinned == 1 { 2 } else { 1 };
    let without_other: Vec<u8> = all.iter().copied().filter(|i| *i != other).collect();
    env.manifests.write("web.yaml", &web(&env, Affinity::ClientIp(None), &without_other))?;
    svc_tests::poll_until(svc_tests::SYNC_TIMEOUT, || {
        Ok(env.agent().frontends()?.iter().any(|f| f.backends.len() == usize::from(BACKENDS) - 1))
    })?;
    let out = env.tcp(vip, 30)?;
    assert_eq!(out.backends(), names([pinned].into_iter()), "pin kept across an unrelated change: {out}");

    // The pinned endpoint leaves: a fresh pick at once, never the old one.
    let without_pinned: Vec<u8> = without_other.iter().copied().filter(|i| *i != pinned).collect();
    env.manifests.write("web.yaml", &web(&env, Affinity::ClientIp(None), &without_pinned))?;
    poll_outcome(svc_tests::SYNC_TIMEOUT, || env.tcp(vip, 5), |o| !o.backends().contains(&format!("b{pinned}")))?;
    let out = env.tcp(vip, 30)?;
    assert_eq!(out.backends().len(), 1, "the new pin holds: {out}");
    assert!(!out.backends().contains(&format!("b{pinned}")), "{out}");
    Ok(())
}
