//! `--source kube`: Services and EndpointSlices created, updated and
//! deleted through a real API server reach the dataplane within 1 s.
//!
//! Each change is timed from just before its API write until a client in
//! the test cgroup observes it (short probes, polled); a larger run then
//! confirms the new state, so a lucky probe cannot make a broken dataplane
//! pass. Probes during endpoint changes must all succeed: updates are atomic.

use std::{collections::BTreeSet, time::Instant};

use anyhow::Result;
use svc_tests::{
    IN_SYNC, Proto, UNREACHABLE, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, service},
    kube_env::{API_POLL, KubeEnv, assert_within_budget, count_in_log, metric_value},
    poll_outcome, poll_until,
    scenarios::set,
};

fn web_service() -> String {
    service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "http")])
}

fn web_slice(name: &str, endpoints: &[Endpoint]) -> String {
    endpoint_slice("default", name, "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

/// `svc_agent_sync_latency_seconds_count`: changes whose event-to-map time
/// the agent recorded.
fn latency_samples(env: &KubeEnv) -> Result<f64> {
    let text = env.metrics()?;
    Ok(metric_value(&text, "svc_agent_sync_latency_seconds_count")
        .unwrap_or_else(|| panic!("no svc_agent_sync_latency_seconds_count in /metrics:\n{text}")))
}

#[test]
fn endpoint_changes_follow_the_api_within_1s() -> Result<()> {
    let mut env = KubeEnv::new(4, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&web_service())?;
    env.api.apply_yaml(&web_slice("web-1", &env.endpoints(&[1, 2, 3])))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 60)?;
    assert_eq!(out.total_ok(), 60, "{out}");
    // P(a backend gets none of 60) = 3*(2/3)^60 ~ 1e-10.
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "initial: {out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "named targetPort http -> 8080: {out}");
    assert_eq!(out.peers.get("10.96.0.10:80"), Some(&60), "getpeername shows the ClusterIP: {out}");
    let samples_before = latency_samples(&env)?;

    // Add b4: every probe connect must succeed while the set changes.
    let start = Instant::now();
    env.api.apply_yaml(&web_slice("web-1", &env.endpoints(&[1, 2, 3, 4])))?;
    poll_outcome(
        API_POLL,
        || env.tcp(vip, 20),
        |probe| {
            assert_eq!(probe.total_errors(), 0, "connect failed during an update: {probe}");
            probe.count_backend("b4") > 0
        },
    )?;
    assert_within_budget("endpoint added", start.elapsed());
    let out = env.tcp(vip, 200)?;
    assert_eq!(out.total_ok(), 200, "{out}");
    // P(some backend gets none of 200) = 4*(3/4)^200 ~ 1e-25.
    assert_eq!(out.backends(), set(&["b1", "b2", "b3", "b4"]), "after the add: {out}");

    // Remove b2.
    let start = Instant::now();
    env.api.apply_yaml(&web_slice("web-1", &env.endpoints(&[1, 3, 4])))?;
    poll_outcome(
        API_POLL,
        || env.tcp(vip, 40),
        |probe| {
            assert_eq!(probe.total_errors(), 0, "connect failed during an update: {probe}");
            probe.count_backend("b2") == 0
        },
    )?;
    assert_within_budget("endpoint removed", start.elapsed());
    let out = env.tcp(vip, 200)?;
    assert_eq!(out.total_ok(), 200, "{out}");
    assert_eq!(out.backends(), set(&["b1", "b3", "b4"]), "after the removal: {out}");

    // No endpoint ready: refused (not the unreachable route's error: the
    // frontend stays and rejects, as kube-proxy does).
    let not_ready: Vec<Endpoint> = [1, 3, 4].iter().map(|&i| Endpoint::not_ready(env.topo.backend(i).ip())).collect();
    let start = Instant::now();
    env.api.apply_yaml(&web_slice("web-1", &not_ready))?;
    poll_outcome(API_POLL, || env.tcp(vip, 5), |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    assert_within_budget("endpoints not ready", start.elapsed());
    let out = env.tcp(vip, 20)?;
    assert_eq!(out.errors.get("ECONNREFUSED"), Some(&20), "{out}");

    // Ready again.
    let start = Instant::now();
    env.api.apply_yaml(&web_slice("web-1", &env.endpoints(&[1, 3])))?;
    poll_outcome(API_POLL, || env.tcp(vip, 5), |o| o.total_ok() == 5)?;
    assert_within_budget("endpoints ready again", start.elapsed());

    // A second slice of the same Service: backends are the union.
    let start = Instant::now();
    env.api.apply_yaml(&web_slice("web-2", &env.endpoints(&[2])))?;
    poll_outcome(
        API_POLL,
        || env.tcp(vip, 20),
        |probe| {
            assert_eq!(probe.total_errors(), 0, "connect failed during an update: {probe}");
            probe.count_backend("b2") > 0
        },
    )?;
    assert_within_budget("second slice", start.elapsed());
    let out = env.tcp(vip, 100)?;
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "two slices: {out}");

    // Deleting the slices leaves the Service without endpoints: refused.
    let start = Instant::now();
    env.api.delete_slice("default", "web-1")?;
    env.api.delete_slice("default", "web-2")?;
    poll_outcome(API_POLL, || env.tcp(vip, 5), |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    assert_within_budget("slices deleted", start.elapsed());
    let frontends = env.agent().frontends()?;
    let web: Vec<_> = frontends.iter().filter(|f| f.name == "web").collect();
    assert_eq!(web.len(), 1, "the Service keeps its frontend: {frontends:?}");
    assert!(web[0].backends.is_empty(), "{frontends:?}");

    // Every change above was recorded in the event-to-map histogram and
    // logged at debug level.
    // (The histogram is written just after the maps: poll for it.)
    let recorded = poll_until(API_POLL, || Ok(latency_samples(&env)? >= samples_before + 7.0));
    let samples = latency_samples(&env)?;
    assert!(recorded.is_ok(), "latency samples {samples_before} -> {samples}: fewer than the changes");
    let agent = env.agent();
    let logged = count_in_log(agent, "event to map latency");
    assert!(logged >= count_in_log(agent, IN_SYNC), "not every batch logged its latency");
    Ok(())
}

#[test]
fn service_changes_follow_the_api_within_1s() -> Result<()> {
    let mut env = KubeEnv::new(3, &[Proto::Tcp(8080), Proto::Tcp(8081), Proto::Udp(5353)])?;
    // Nothing of ours exists yet: the agent syncs the server's own
    // `kubernetes` Service only.
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "before the create: {out}");

    // Create the Service, then its slice.
    let start = Instant::now();
    env.api.apply_yaml(&service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]))?;
    env.api.apply_yaml(&endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080)],
        &env.endpoints(&[1, 2]),
    ))?;
    poll_outcome(API_POLL, || env.tcp(vip, 5), |o| o.total_ok() == 5)?;
    assert_within_budget("Service created", start.elapsed());
    let out = env.tcp(vip, 60)?;
    assert_eq!(out.backends(), set(&["b1", "b2"]), "{out}");

    // Update: a UDP port on the same Service, with its own backend.
    let dns = addr("10.96.0.10:53");
    let start = Instant::now();
    env.api.apply_yaml(&service(
        "default",
        "web",
        Some("10.96.0.10"),
        &[SvcPort::tcp("http", 80, "8080"), SvcPort::udp("dns", 53, "5353")],
    ))?;
    env.api.apply_yaml(&endpoint_slice(
        "default",
        "web-dns",
        "web",
        &[SlicePort::udp("dns", 5353)],
        &env.endpoints(&[3]),
    ))?;
    poll_outcome(API_POLL, || env.udp(dns, 3, false), |o| o.total_ok() == 3)?;
    assert_within_budget("UDP port added", start.elapsed());
    let out = env.udp(dns, 20, false)?;
    assert_eq!(out.ok.get("b3:5353"), Some(&20), "{out}");
    assert_eq!(out.sources.get("10.96.0.10:53"), Some(&20), "replies come from the ClusterIP: {out}");

    // Update: the TCP port moves from 80 to 8000 and to targetPort 8081
    // (the slice follows, as the EndpointSlice controller would update it).
    let moved = addr("10.96.0.10:8000");
    let start = Instant::now();
    env.api.apply_yaml(&service(
        "default",
        "web",
        Some("10.96.0.10"),
        &[SvcPort::tcp("http", 8000, "8081"), SvcPort::udp("dns", 53, "5353")],
    ))?;
    env.api.apply_yaml(&endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8081)],
        &env.endpoints(&[1, 2]),
    ))?;
    poll_until(API_POLL, || {
        // Two API writes (the Service, then its slice): done when both
        // show, the new port and the new target port.
        let new = env.tcp(moved, 3)?;
        let old = env.tcp(vip, 3)?;
        Ok(new.total_ok() == 3 && new.reply_ports() == BTreeSet::from([8081]) && old.all_failed_with(UNREACHABLE))
    })?;
    assert_within_budget("Service port changed", start.elapsed());
    let out = env.tcp(moved, 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([8081]), "new targetPort: {out}");

    // Delete: nothing of the Service stays translated (its slices stay, as
    // they may in Kubernetes for a moment).
    let start = Instant::now();
    env.api.delete_service("default", "web")?;
    poll_until(API_POLL, || {
        Ok(env.tcp(moved, 3)?.all_failed_with(UNREACHABLE) && env.udp(dns, 3, false)?.all_failed_with(UNREACHABLE))
    })?;
    assert_within_budget("Service deleted", start.elapsed());
    let frontends = env.agent().frontends()?;
    assert!(frontends.iter().all(|f| f.name != "web"), "stale frontends: {frontends:?}");
    let out = env.tcp(moved, 20)?;
    assert!(out.all_failed_with(UNREACHABLE), "{out}");
    assert_eq!(out.total_errors(), 20, "{out}");

    // The agent never lost its readiness while following changes.
    assert_eq!(env.readyz()?, 200);
    Ok(())
}
