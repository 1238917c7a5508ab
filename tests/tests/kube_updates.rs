//! `--source kube`: Services and EndpointSlices created, updated and
//! deleted through a real API server reach the dataplane within 1 s (the
//! scenarios of `svc_tests::scenarios::updates`, from `AF_INET` and
//! v4-mapped `AF_INET6` sockets), and every change is recorded in the
//! event-to-map histogram.

use anyhow::Result;
use svc_tests::{
    IN_SYNC, Proto, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, service},
    kube_env::{API_POLL, KubeEnv, count_in_log, metric_value},
    poll_outcome, poll_until,
};

svc_tests::family_tests! { svc_tests::apiserver::kube_source;
    svc_tests::scenarios::updates::endpoint_changes_apply_within_1s => endpoint_changes_apply_within_1s,
    svc_tests::scenarios::updates::service_changes_apply_within_1s => service_changes_apply_within_1s,
    svc_tests::scenarios::updates::no_ready_endpoints_refuse => no_ready_endpoints_refuse,
}

fn web_slice(endpoints: &[Endpoint]) -> String {
    endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], endpoints)
}

/// `svc_agent_sync_latency_seconds_count`: changes whose event-to-map time
/// the agent recorded.
fn latency_samples(env: &KubeEnv) -> Result<f64> {
    let text = env.metrics()?;
    Ok(metric_value(&text, "svc_agent_sync_latency_seconds_count")
        .unwrap_or_else(|| panic!("no svc_agent_sync_latency_seconds_count in /metrics:\n{text}")))
}

/// Each of a few endpoint changes is recorded in the event-to-map
/// histogram and logged at debug level.
#[test]
fn every_change_is_recorded_in_the_latency_histogram() -> Result<()> {
    let mut env = KubeEnv::new(3, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]))?;
    env.api.apply_yaml(&web_slice(&env.endpoints(&[1])))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    let samples_before = latency_samples(&env)?;
    for backends in [&[1, 2][..], &[2, 3], &[3]] {
        env.api.apply_yaml(&web_slice(&env.endpoints(backends)))?;
        let last = format!("b{}", backends[backends.len() - 1]);
        poll_outcome(API_POLL, || env.tcp(vip, 20), |o| o.count_backend(&last) > 0 && o.total_ok() == 20)?;
    }
    // (The histogram is written just after the maps: poll for it.)
    let recorded = poll_until(API_POLL, || Ok(latency_samples(&env)? >= samples_before + 3.0));
    let samples = latency_samples(&env)?;
    assert!(recorded.is_ok(), "latency samples {samples_before} -> {samples}: fewer than the changes");
    let agent = env.agent();
    let logged = count_in_log(agent, "event to map latency");
    assert!(logged >= count_in_log(agent, IN_SYNC), "not every batch logged its latency");
    // The agent never lost its readiness while following changes.
    assert_eq!(env.readyz()?, 200);
    Ok(())
}
