//! `--source kube`: an object the agent cannot decode costs only that
//! object. The API server's EndpointSlice v1 stand-in does not validate,
//! so it stores slices whose fields have the wrong types; the agent must
//! skip them, say so once by name, count them, keep following every other
//! change, and keep the last good state of what the bad object replaced,
//! also across a relist.

use std::{collections::BTreeSet, time::Instant};

use anyhow::Result;
use svc_tests::{
    Proto, SYNC_TIMEOUT, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, service},
    kube_env::{API_POLL, KubeEnv, assert_within_budget, count_in_log, metric_value},
    poll_outcome,
    scenarios::set,
};

const UNDECODABLE_SLICES: &str = r#"svc_agent_undecodable_objects_total{kind="EndpointSlice"}"#;

fn svc(name: &str, ip: &str) -> String {
    service("default", name, Some(ip), &[SvcPort::tcp("http", 80, "http")])
}

fn slice(name: &str, service: &str, endpoints: &[Endpoint]) -> String {
    endpoint_slice("default", name, service, &[SlicePort::tcp("http", 8080)], endpoints)
}

/// The malformed slices of the report: wrong types everywhere, and
/// `endpoints` that is not a list at all.
fn bad_slices() -> String {
    r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "bad-types", "namespace": "default", "labels": {"kubernetes.io/service-name": "other"}},
  "addressType": "IPv4",
  "endpoints": [{"addresses": ["not-an-ip"], "conditions": {"ready": "yes"}}],
  "ports": [{"name": "http", "port": "eighty", "protocol": "TCP"}]}
---
{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
  "metadata": {"name": "bad-list", "namespace": "default", "labels": {"kubernetes.io/service-name": "other"}},
  "addressType": "IPv4",
  "endpoints": "10.244.1.2",
  "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
"#
    .to_owned()
}

/// Gives `web` these backends through a good slice, waits (within the API
/// budget) until clients see exactly them, and confirms.
fn change_web(env: &KubeEnv, backends: &[u8], what: &str) -> Result<()> {
    let web = addr("10.96.0.10:80");
    let want: BTreeSet<String> = backends.iter().map(|i| format!("b{i}")).collect();
    let start = Instant::now();
    env.api.apply_yaml(&slice("web-1", "web", &env.endpoints(backends)))?;
    poll_outcome(API_POLL, || env.tcp(web, 10), |o| o.backends() == want)?;
    assert_within_budget(what, start.elapsed());
    let out = env.tcp(web, 40)?;
    assert_eq!((out.total_ok(), out.backends()), (40, want), "{what}: {out}");
    Ok(())
}

/// `other` is still served by b3 only (its last good slice).
fn assert_other_kept(env: &KubeEnv, what: &str) -> Result<()> {
    let out = env.tcp(addr("10.96.0.20:80"), 20)?;
    assert_eq!((out.total_ok(), out.backends()), (20, set(&["b3"])), "{what}: {out}");
    Ok(())
}

fn undecodable(env: &KubeEnv) -> Result<f64> {
    let text = env.metrics()?;
    Ok(metric_value(&text, UNDECODABLE_SLICES)
        .unwrap_or_else(|| panic!("no {UNDECODABLE_SLICES} in /metrics:\n{text}")))
}

#[test]
fn an_undecodable_slice_costs_only_itself() -> Result<()> {
    let mut env = KubeEnv::new(3, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&svc("web", "10.96.0.10"))?;
    env.api.apply_yaml(&slice("web-1", "web", &env.endpoints(&[1])))?;
    env.api.apply_yaml(&svc("other", "10.96.0.20"))?;
    env.api.apply_yaml(&slice("other-1", "other", &env.endpoints(&[3])))?;
    env.start_agent()?;
    assert_eq!(env.tcp(addr("10.96.0.10:80"), 10)?.backends(), set(&["b1"]));
    assert_eq!(undecodable(&env)?, 0.0, "the series exists at zero before any bad object");

    // The bad slices arrive; then the good slice of another Service changes.
    env.api.apply_yaml(&bad_slices())?;
    change_web(&env, &[2], "a good slice changed after bad ones arrived")?;
    // The Service the bad slices name keeps its good slice's backend.
    assert_other_kept(&env, "after the bad slices")?;

    // Reported once each, by name, and counted.
    let agent = env.agent();
    assert_eq!(count_in_log(agent, "EndpointSlice default/bad-types cannot be decoded"), 1, "{}", agent.log());
    assert_eq!(count_in_log(agent, "EndpointSlice default/bad-list cannot be decoded"), 1, "{}", agent.log());
    assert_eq!(undecodable(&env)?, 2.0);
    assert_eq!(count_in_log(env.agent(), "watch failed"), 0, "a bad object must not break the watch");

    // A good slice that turns bad: its last good version stays in effect.
    let bad_other = slice("other-1", "other", &env.endpoints(&[3])).replace("port: 8080", "port: eighty");
    assert_ne!(bad_other, slice("other-1", "other", &env.endpoints(&[3])), "the edit must apply");
    env.api.apply_yaml(&bad_other)?;
    env.agent().wait_for_log("EndpointSlice default/other-1 cannot be decoded", API_POLL)?;
    assert_other_kept(&env, "its good slice turned bad")?;

    // A relist (the API server restarts) lists the bad objects again:
    // they are neither stale nor deleted, and not reported again.
    env.api.stop()?;
    env.api.start(false)?;
    env.agent().wait_for_log("listed EndpointSlices count=1 undecodable=3", SYNC_TIMEOUT * 4)?;
    change_web(&env, &[1, 2], "a change after the relist")?;
    assert_other_kept(&env, "kept across the relist")?;
    assert_eq!(undecodable(&env)?, 3.0, "still the same three objects: not counted again");

    // Deleting the bad objects changes nothing else.
    env.api.delete_slice("default", "bad-types")?;
    env.api.delete_slice("default", "bad-list")?;
    change_web(&env, &[3], "a change after the bad objects were deleted")?;
    assert_other_kept(&env, "after deleting the bad objects")?;

    // Fixing the last one: it decodes again and is followed.
    env.api.apply_yaml(&slice("other-1", "other", &env.endpoints(&[1])))?;
    let other = addr("10.96.0.20:80");
    poll_outcome(API_POLL, || env.tcp(other, 10), |o| o.backends() == set(&["b1"]))?;
    env.agent().wait_for_log("EndpointSlice default/other-1 decodes again", API_POLL)?;
    Ok(())
}
