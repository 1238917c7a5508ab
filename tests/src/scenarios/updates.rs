//! Changes reach the dataplane within 1 s, through either source and for
//! every [`Dial`] (IPv4 Services from both socket families, and the same
//! Services as IPv6 Services); a frontend without usable endpoints refuses.
//!
//! Each change is timed from just before its write until a client pod
//! observes it (short probes, polled); a larger run then confirms the new
//! state, so a lucky probe cannot make a broken dataplane pass. Probes
//! during endpoint changes must all succeed: updates are atomic.

use std::{collections::BTreeSet, net::SocketAddrV4, time::Instant};

use anyhow::{Result, ensure};

use super::{NOT_TRANSLATED, SETTLE, assert_refused, set};
use crate::{
    Client, Dial, NodeEnv, Outcome, Proto, addr,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec, multi},
    poll_outcome, poll_until,
    source::Source,
};

/// The agent's budget for a change, from the write until clients see it.
pub const BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// Prints how long `what` took to reach the clients and fails if that is
/// over [`BUDGET`].
fn within_budget(what: &str, start: Instant) -> Result<()> {
    let took = start.elapsed();
    eprintln!("{what}: observed {took:?} after the write");
    ensure!(took <= BUDGET, "{what}: clients saw it only {took:?} after the write (budget {BUDGET:?})");
    Ok(())
}

fn web_slice(name: &str, endpoints: &[EndpointSpec]) -> String {
    endpoint_slice_spec("default", name, "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

/// Polls probes of `count` connects until `done`; every probe connect
/// must succeed (an endpoint change never fails a connect).
fn poll_atomic(pod: &Client<'_>, vip: SocketAddrV4, count: u32, done: impl Fn(&Outcome) -> bool) -> Result<()> {
    let failed = std::cell::RefCell::new(None);
    poll_outcome(
        SETTLE,
        || pod.tcp(vip, count),
        |probe| {
            if probe.total_errors() > 0 {
                failed.borrow_mut().get_or_insert_with(|| probe.to_string());
            }
            done(probe)
        },
    )?;
    let failed = failed.into_inner();
    ensure!(failed.is_none(), "a connect failed during an update: {failed:?}");
    Ok(())
}

/// Endpoints added, removed, not ready, ready again, split over two
/// slices, and deleted; the Service keeps its frontend throughout.
pub fn endpoint_changes_apply_within_1s(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 4, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let svc = ServiceSpec::new("default", "web")
        .cluster_ip(&env.service_ip("10.96.0.10"))
        .port(PortSpec::tcp("http", 80, "http"));
    env.apply("web-svc", &svc.yaml())?;
    env.apply("web-1", &web_slice("web-1", &env.endpoints(&[1, 2, 3])))?;
    env.start_agent(&[])?;
    let vip = addr("10.96.0.10:80");
    let pod = env.pod(1);
    let out = pod.tcp(vip, 60)?;
    // P(a backend gets none of 60) = 3*(2/3)^60 ~ 1e-10.
    ensure!(out.total_ok() == 60 && out.backends() == set(&["b1", "b2", "b3"]), "initial: {out}");
    ensure!(out.reply_ports() == BTreeSet::from([8080]), "named targetPort http -> 8080: {out}");
    ensure!(out.peers.get("10.96.0.10:80") == Some(&60), "getpeername shows the ClusterIP: {out}");

    let start = Instant::now();
    env.apply("web-1", &web_slice("web-1", &env.endpoints(&[1, 2, 3, 4])))?;
    poll_atomic(&pod, vip, 20, |probe| probe.count_backend("b4") > 0)?;
    within_budget("endpoint added", start)?;
    let out = pod.tcp(vip, 200)?;
    // P(some backend gets none of 200) = 4*(3/4)^200 ~ 1e-25.
    ensure!(out.total_ok() == 200 && out.backends() == set(&["b1", "b2", "b3", "b4"]), "after the add: {out}");

    // A probe of 40 misses a still-present b2 with p = (3/4)^40 ~ 1e-5;
    // the 200-connect confirmation catches that anyway.
    let start = Instant::now();
    env.apply("web-1", &web_slice("web-1", &env.endpoints(&[1, 3, 4])))?;
    poll_atomic(&pod, vip, 40, |probe| probe.count_backend("b2") == 0)?;
    within_budget("endpoint removed", start)?;
    let out = pod.tcp(vip, 200)?;
    ensure!(out.total_ok() == 200 && out.backends() == set(&["b1", "b3", "b4"]), "after the removal: {out}");

    // No endpoint ready: refused (not the route's error: the frontend
    // stays and rejects, as kube-proxy does).
    let not_ready: Vec<EndpointSpec> = env.endpoints(&[1, 3, 4]).into_iter().map(|e| e.ready(false)).collect();
    let start = Instant::now();
    env.apply("web-1", &web_slice("web-1", &not_ready))?;
    poll_outcome(SETTLE, || pod.tcp(vip, 5), |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    within_budget("endpoints not ready", start)?;
    assert_refused(&pod.tcp(vip, 20)?, "no endpoint ready")?;

    let start = Instant::now();
    env.apply("web-1", &web_slice("web-1", &env.endpoints(&[1, 3])))?;
    poll_outcome(SETTLE, || pod.tcp(vip, 5), |o| o.total_ok() == 5)?;
    within_budget("endpoints ready again", start)?;

    // A second slice of the same Service: the backends are the union.
    let start = Instant::now();
    env.apply("web-2", &web_slice("web-2", &env.endpoints(&[2])))?;
    poll_atomic(&pod, vip, 20, |probe| probe.count_backend("b2") > 0)?;
    within_budget("second slice", start)?;
    let out = pod.tcp(vip, 100)?;
    ensure!(out.backends() == set(&["b1", "b2", "b3"]), "two slices: {out}");

    // Deleting the slices leaves the Service without endpoints: refused.
    let start = Instant::now();
    env.delete("web-1")?;
    env.delete("web-2")?;
    poll_outcome(SETTLE, || pod.tcp(vip, 5), |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    within_budget("slices deleted", start)?;
    let frontends = env.agent().frontends()?;
    let web: Vec<_> = frontends.iter().filter(|f| f.name == "web").collect();
    ensure!(web.len() == 1 && web[0].backends.is_empty(), "the Service keeps its frontend: {frontends:?}");
    Ok(())
}

/// A Service created, given a UDP port, moved to another port and target
/// port, and deleted (its slices stay, as they may in Kubernetes for a
/// moment): nothing of it stays translated.
pub fn service_changes_apply_within_1s(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 3, 1, &[Proto::Tcp(8080), Proto::Tcp(8081), Proto::Udp(5353)])?.dialing(dial);
    env.start_agent(&[])?;
    let vip = addr("10.96.0.10:80");
    let pod = env.pod(1);
    let out = pod.tcp(vip, 5)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "before the create: {out}");

    let web = ServiceSpec::new("default", "web").cluster_ip(&env.service_ip("10.96.0.10"));
    let start = Instant::now();
    env.apply("web-svc", &web.clone().port(PortSpec::tcp("http", 80, "8080")).yaml())?;
    env.apply("web-1", &web_slice("web-1", &env.endpoints(&[1, 2])))?;
    poll_outcome(SETTLE, || pod.tcp(vip, 5), |o| o.total_ok() == 5)?;
    within_budget("Service created", start)?;
    let out = pod.tcp(vip, 60)?;
    ensure!(out.backends() == set(&["b1", "b2"]), "{out}");

    let dns = addr("10.96.0.10:53");
    let dns_slice =
        endpoint_slice_spec("default", "web-dns", "web", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[3]));
    let start = Instant::now();
    let with_dns = web.clone().port(PortSpec::tcp("http", 80, "8080")).port(PortSpec::udp("dns", 53, "5353"));
    env.apply("web-svc", &with_dns.yaml())?;
    env.apply("web-dns", &dns_slice)?;
    poll_outcome(SETTLE, || pod.udp(dns, 3, false), |o| o.total_ok() == 3)?;
    within_budget("UDP port added", start)?;
    let out = pod.udp(dns, 20, false)?;
    ensure!(out.ok.get("b3:5353") == Some(&20), "{out}");
    ensure!(out.sources.get("10.96.0.10:53") == Some(&20), "replies come from the ClusterIP: {out}");

    // The TCP port moves from 80 to 8000 and to targetPort 8081 (the slice
    // follows, as the EndpointSlice controller would update it).
    let moved = addr("10.96.0.10:8000");
    let start = Instant::now();
    let moved_svc = web.port(PortSpec::tcp("http", 8000, "8081")).port(PortSpec::udp("dns", 53, "5353"));
    env.apply("web-svc", &moved_svc.yaml())?;
    env.apply(
        "web-1",
        &endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8081)], &env.endpoints(&[1, 2])),
    )?;
    poll_until(SETTLE, || {
        // Two writes: done when both show.
        let new = pod.tcp(moved, 3)?;
        let old = pod.tcp(vip, 3)?;
        Ok(new.total_ok() == 3 && new.reply_ports() == BTreeSet::from([8081]) && old.all_failed_with(NOT_TRANSLATED))
    })?;
    within_budget("Service port changed", start)?;
    let out = pod.tcp(moved, 30)?;
    ensure!(out.total_ok() == 30 && out.reply_ports() == BTreeSet::from([8081]), "new targetPort: {out}");

    let start = Instant::now();
    env.delete("web-svc")?;
    poll_until(SETTLE, || {
        Ok(pod.tcp(moved, 3)?.all_failed_with(NOT_TRANSLATED)
            && pod.udp(dns, 3, false)?.all_failed_with(NOT_TRANSLATED))
    })?;
    within_budget("Service deleted", start)?;
    let frontends = env.agent().frontends()?;
    ensure!(frontends.iter().all(|f| f.name != "web"), "stale frontends: {frontends:?}");
    let out = pod.tcp(moved, 20)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED) && out.total_errors() == 20, "{out}");
    Ok(())
}

/// Endpoints that exist but are not ready are never used (their servers
/// run, so using one would be answered): TCP connects, unconnected UDP
/// sends and UDP connects all fail with ECONNREFUSED, and `status` shows
/// both frontends with no backend.
pub fn no_ready_endpoints_refuse(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = NodeEnv::new(source, 2, 1, &[Proto::Tcp(8080), Proto::Udp(5353)])?.dialing(dial);
    let not_ready: Vec<EndpointSpec> = env.endpoints(&[1, 2]).into_iter().map(|e| e.ready(false)).collect();
    let svc = ServiceSpec::new("default", "web")
        .cluster_ip(&env.service_ip("10.96.0.10"))
        .port(PortSpec::tcp("http", 80, "8080"))
        .port(PortSpec::udp("dns", 53, "5353"));
    let slice = endpoint_slice_spec(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)],
        &not_ready,
    );
    env.apply("web", &multi(&[&svc.yaml(), &slice]))?;
    env.start_agent(&[])?;
    let pod = env.pod(1);

    assert_refused(&pod.tcp(addr("10.96.0.10:80"), 10)?, "tcp connect")?;
    assert_refused(&pod.udp(addr("10.96.0.10:53"), 5, false)?, "udp sendto")?;
    assert_refused(&pod.udp(addr("10.96.0.10:53"), 5, true)?, "udp connect")?;
    let frontends = env.agent().frontends()?;
    let web: Vec<_> = frontends.iter().filter(|f| f.name == "web").collect();
    ensure!(web.len() == 2 && web.iter().all(|f| f.backends.is_empty()), "one empty frontend per port: {frontends:?}");
    Ok(())
}
