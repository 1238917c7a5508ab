//! kube-proxy's metric families from the real agent: a real EndpointSlice
//! change whose `endpoints.kubernetes.io/last-change-trigger-time` lies
//! 3 s in the past is counted in the 3-4 s bucket of
//! `svc_agent_network_programming_duration_seconds`, and the sync and
//! change families move with it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, ensure};
use svc_tests::{
    Agent, Proto, SYNC_TIMEOUT, TestEnv, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{free_port, http_get, metric_value},
    poll_until,
};

/// `web`'s slice with a trigger-time annotation `ago` in the past (whole
/// seconds: the annotation is RFC 3339 without fractions).
fn slice_changed(env: &TestEnv, backends: &[u8], ago: Duration) -> Result<String> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() - ago.as_secs();
    let at = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs)?)?.to_string();
    let slice = endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(backends));
    Ok(slice.replacen(
        "  labels:\n",
        &format!("  annotations:\n    endpoints.kubernetes.io/last-change-trigger-time: \"{at}\"\n  labels:\n"),
        1,
    ))
}

fn metrics(at: SocketAddr) -> Result<String> {
    let (status, body) = http_get(at, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

#[test]
fn network_programming_latency_of_a_real_change_lands_in_its_bucket() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    let svc = service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]);
    env.manifests.write("web.yaml", &multi(&[&svc, &slice_changed(&env, &[1], Duration::ZERO)?]))?;
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let agent = Agent::start_with_args(&env.manifests, &env.cgroup, &["--metrics-addr", &at.to_string()])?;
    let agent = env.agent_slot().insert(agent);
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let value = |text: &str, name: &str| metric_value(text, name).with_context(|| format!("no {name} in:\n{text}"));
    let before = metrics(at)?;
    let (le3, le4) = (
        "svc_agent_network_programming_duration_seconds_bucket{le=\"3.0\"}",
        "svc_agent_network_programming_duration_seconds_bucket{le=\"4.0\"}",
    );
    let (le3_before, le4_before) = (value(&before, le3)?, value(&before, le4)?);
    let changes_before = value(&before, "svc_agent_sync_proxy_rules_endpoint_changes_total")?;

    // The change: b2 joins, triggered 3 s ago (so 3 s plus our latency).
    env.manifests.write("web.yaml", &multi(&[&svc, &slice_changed(&env, &[1, 2], Duration::from_secs(3))?]))?;
    poll_until(Duration::from_secs(5), || Ok(value(&metrics(at)?, le4)? > le4_before))?;
    let after = metrics(at)?;
    ensure!(value(&after, le3)? == le3_before, "counted below 3 s:\n{after}");
    ensure!(value(&after, le4)? == le4_before + 1.0, "not counted once in le=4:\n{after}");
    ensure!(value(&after, "svc_agent_sync_proxy_rules_endpoint_changes_total")? > changes_before, "{after}");
    ensure!(value(&after, "svc_agent_sync_proxy_rules_endpoint_changes_pending")? == 0.0, "{after}");
    let last = value(&after, "svc_agent_sync_proxy_rules_last_timestamp_seconds")?;
    let queued = value(&after, "svc_agent_sync_proxy_rules_last_queued_timestamp_seconds")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    ensure!((now - last).abs() < 10.0 && queued <= last + 0.001, "last {last}, queued {queued}, now {now}");
    // And the change is in the dataplane.
    let out = env.tcp(addr("10.96.0.10:80"), 40)?;
    ensure!(out.count_backend("b2") > 0, "{out}");
    Ok(())
}
