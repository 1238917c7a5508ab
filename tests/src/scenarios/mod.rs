//! End-to-end scenarios for the Service semantics of ../shared/docs/spec.md
//! (issue 4), written against a [`Source`](crate::source::Source) so that
//! the same steps and assertions run through the manifest source
//! (`tests/tests/*.rs`) and through the Kubernetes API server.
//!
//! Every scenario builds its own [`NodeEnv`](crate::NodeEnv) (node
//! namespace, pods, cgroup, agent), and every assertion can fail on a
//! broken dataplane: a translation that should not happen is answered by a
//! decoy server or fails with the route's error, a stale backend is still
//! running and would answer, and statistical checks state their
//! false-failure probability (always below 1e-6).
//!
//! Addresses: cluster IPs in 10.96.0.0/16 and node ports in 30000-32767,
//! so that an API server with the default ranges accepts them too.

pub mod affinity;
pub mod clusterip;
pub mod conditions;
pub mod conformance;
pub mod dual_stack;
pub mod hairpin;
pub mod nodeport;
pub mod north_south;
pub mod opt_out;
pub mod restart;
pub mod shared_backend;
pub mod topology;
pub mod traffic_policy;
pub mod updates;

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::{
    Agent, Client, NodeEnv, Outcome,
    k8s::{SlicePort, endpoint_slice_spec},
    poll_outcome, poll_until,
};

/// How long a change may take to show up. The agent's budget is 1 s (and
/// NodePort address changes add up to 1 s of polling); polls run longer
/// so that a slow agent fails with what it did instead of a timeout.
pub const SETTLE: Duration = Duration::from_secs(5);

/// How an untranslated connection from a pod to an address the node does
/// not have ends. Unlike the client topology's local `unreachable` route,
/// the answer here is an ICMP error from the node, and the kernel's ICMP
/// budget is global to the machine (net.ipv4.icmp_msgs_per_sec, shared by
/// every namespace), so under a parallel test run some attempts time out
/// instead. Either way nothing reached a backend, which is what the checks
/// are about: a translated connection would have been answered.
pub const NOT_TRANSLATED: &[&str] = &["EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT"];

/// EndpointSlice `default/web-1` of Service `web`: ports `http` (TCP
/// 8080) and `dns` (UDP 5353) on the given backends.
pub fn web_slice(env: &NodeEnv, backends: &[u8]) -> String {
    endpoint_slice_spec(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)],
        &env.endpoints(backends),
    )
}

/// The backend names as a set.
pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// The one backend that answered all of `out`, if every attempt succeeded
/// and they all reached the same backend.
pub fn only_backend(out: &Outcome) -> Option<String> {
    let backends = out.backends();
    (out.total_errors() == 0 && out.total_ok() > 0 && backends.len() == 1).then(|| backends.into_iter().next())?
}

/// `count` TCP connects from `client` that must all succeed and reach one
/// backend; returns it.
pub fn pinned_backend(client: &Client<'_>, to: impl Into<SocketAddr>, count: u32) -> Result<String> {
    let to = to.into();
    let out = client.tcp(to, count)?;
    only_backend(&out).with_context(|| format!("{count} connects to {to} did not all reach one backend: {out}"))
}

/// Polls `client`'s TCP connects to `to` (in probes of `probe` connects)
/// until `done` holds for one probe.
pub fn poll_tcp(
    client: &Client<'_>,
    to: impl Into<SocketAddr>,
    probe: u32,
    done: impl Fn(&Outcome) -> bool,
) -> Result<()> {
    let to = to.into();
    poll_outcome(SETTLE, || client.tcp(to, probe), done).map(drop)
}

/// Waits until `status` shows `address` (`ip:port`, protocol `proto`) with
/// exactly `backends` (as `ip:port` strings, any order).
pub fn wait_backends<A: ToString>(agent: &Agent, address: &str, proto: &str, backends: &[A]) -> Result<()> {
    let want: BTreeSet<String> = backends.iter().map(ToString::to_string).collect();
    let mut last = None;
    poll_until(SETTLE, || {
        let fe = agent.frontends()?.into_iter().find(|f| f.address == address && f.protocol == proto);
        let ok = fe.as_ref().is_some_and(|f| f.backends.iter().cloned().collect::<BTreeSet<_>>() == want);
        last = Some(fe);
        Ok(ok)
    })
    .with_context(|| format!("status never showed {proto} {address} -> {want:?}; last: {last:?}"))
    .map(drop)
}

/// Waits until `status` shows the frontend `address`/`proto` with session
/// affinity timeout `seconds` (0: affinity off).
pub fn wait_affinity_timeout(agent: &Agent, address: &str, proto: &str, seconds: u64) -> Result<()> {
    let mut last = None;
    poll_until(SETTLE, || {
        let status = agent.status_json()?;
        let timeout = status["frontends"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["address"] == address && f["protocol"] == proto)
            .and_then(|f| f["affinity_timeout_seconds"].as_u64());
        last = timeout;
        Ok(timeout == Some(seconds))
    })
    .with_context(|| format!("status never showed {proto} {address} with affinity {seconds}s; last: {last:?}"))
    .map(drop)
}

/// Waits until `status` has (`present`) or lacks a frontend `address`/`proto`.
pub fn wait_frontend(agent: &Agent, address: &str, proto: &str, present: bool) -> Result<()> {
    poll_until(SETTLE, || {
        let found = agent.frontends()?.iter().any(|f| f.address == address && f.protocol == proto);
        Ok(found == present)
    })
    .with_context(|| format!("status never {} {proto} {address}", if present { "showed" } else { "dropped" }))
    .map(drop)
}

/// Fails unless `out` is all ECONNREFUSED: a frontend without usable
/// backends (kube-proxy's REJECT), not an untranslated address.
pub fn assert_refused(out: &Outcome, what: &str) -> Result<()> {
    if !out.all_failed_with(&["ECONNREFUSED"]) {
        bail!("{what}: expected every attempt to fail with ECONNREFUSED: {out}");
    }
    Ok(())
}
