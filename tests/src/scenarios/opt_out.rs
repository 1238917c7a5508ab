//! Per-pod and per-namespace opt-out of socket translation
//! (`svc.dataplane.io/socket-lb: disabled`, docs/opt-out.md), through
//! either source: pods' cgroups laid out as kubelet makes them (cgroupfs
//! and systemd drivers) under the agent's cgroup, clients inside them.
//!
//! An exempt pod's connect to a ClusterIP is not translated: it ends as an
//! untranslated connect does in this topology (the node has no route to
//! the Service range), or at a mesh-like sidecar that an iptables
//! `REDIRECT` in the pod sends it to, which then sees the ClusterIP as the
//! original destination. A sibling pod, and the same pod once the
//! annotation is gone, reaches the backend.

use anyhow::{Context as _, Result, ensure};

use super::{NOT_TRANSLATED, SETTLE};
use crate::{
    Cgroup, Client, Dial, NODE_NAME, NodeEnv, Proto, SERVICE_RANGE, addr,
    k8s::{PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec, multi, namespace, pod},
    poll_until,
    source::Source,
};

/// Uids the manifest source writes (an API server assigns its own).
const UID_EXEMPT: &str = "0b7c1f5e-1111-4a4a-9c9c-000000000001";
const UID_SIBLING: &str = "0b7c1f5e-2222-4a4a-9c9c-000000000002";
const UID_IN_MESH: &str = "0b7c1f5e-3333-4a4a-9c9c-000000000003";

/// The cgroup of container `ctr` of a pod with `uid`, as kubelet's
/// cgroupfs driver lays it out (BestEffort QoS).
fn cgroupfs_container(root: &Cgroup, uid: &str, ctr: &str) -> Result<Cgroup> {
    root.child(&format!("kubepods/besteffort/pod{uid}/{ctr}"))
}

/// The same with the systemd driver (Burstable QoS).
fn systemd_container(root: &Cgroup, uid: &str, ctr: &str) -> Result<Cgroup> {
    let uid = uid.replace('-', "_");
    root.child(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ctr}.scope"
    ))
}

/// The node, Service `default/web` (10.96.0.10:80 -> b1:8080) and its
/// slice; the agent is not started.
fn node_with_web(source: Box<dyn Source>, dial: Dial) -> Result<NodeEnv> {
    let env = NodeEnv::new(source, 1, 1, &[Proto::Tcp(8080)])?.dialing(dial);
    let svc = ServiceSpec::new("default", "web")
        .cluster_ip(&env.service_ip("10.96.0.10"))
        .port(PortSpec::tcp("http", 80, "8080"));
    env.apply("web-svc", &svc.yaml())?;
    env.apply(
        "web-1",
        &endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1])),
    )?;
    Ok(env)
}

/// Waits until `status` lists exactly `want` (sorted `namespace/name`).
fn wait_exempt(env: &NodeEnv, want: &[&str]) -> Result<()> {
    let mut last = Vec::new();
    let done = poll_until(SETTLE, || {
        last = env.agent().exempt_pods()?;
        last.sort();
        Ok(last == want)
    });
    done.map(drop).with_context(|| format!("status lists exempt pods {last:?}, expected {want:?}"))
}

fn assert_translated(client: &Client<'_>, what: &str) -> Result<()> {
    let out = client.tcp(addr("10.96.0.10:80"), 5)?;
    ensure!(out.count_backend("b1") == 5, "{what}: translated to b1: {out}");
    Ok(())
}

fn assert_not_translated(client: &Client<'_>, what: &str) -> Result<()> {
    let out = client.tcp(addr("10.96.0.10:80"), 3)?;
    ensure!(out.all_failed_with(NOT_TRANSLATED), "{what}: not translated: {out}");
    Ok(())
}

/// An exempt pod is not translated while its sibling is; an exempt
/// namespace covers its pods (systemd layout); removing the annotations
/// takes effect for new connections without a restart; status lists the
/// exempt pods and the programs count what they skipped.
pub fn exempt_pods_follow_their_annotations(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let mut env = node_with_web(source, dial)?;
    env.apply("mesh-ns", &namespace("mesh", Some("disabled")))?;
    let pods = |exempt_annotation: Option<&str>| {
        multi(&[
            &pod("default", "exempt", UID_EXEMPT, NODE_NAME, exempt_annotation),
            &pod("default", "sibling", UID_SIBLING, NODE_NAME, None),
            &pod("mesh", "in-mesh", UID_IN_MESH, NODE_NAME, None),
        ])
    };
    env.apply("pods", &pods(Some("disabled")))?;
    let uid = |ns, name, written| env.source().pod_uid(ns, name, written);
    let root = env.kubelet_root();
    let exempt = cgroupfs_container(root, &uid("default", "exempt", UID_EXEMPT)?, "app")?;
    let sibling = cgroupfs_container(root, &uid("default", "sibling", UID_SIBLING)?, "app")?;
    let in_mesh = systemd_container(root, &uid("mesh", "in-mesh", UID_IN_MESH)?, "app")?;
    env.start_agent(&[])?;
    wait_exempt(&env, &["default/exempt", "mesh/in-mesh"])?;

    assert_not_translated(&env.pod_in(1, &exempt), "annotated pod")?;
    assert_translated(&env.pod_in(1, &sibling), "its sibling")?;
    assert_not_translated(&env.pod_in(1, &in_mesh), "pod of an annotated namespace")?;
    let skipped = env.agent().sock_stat(svc_common::exempt::sock_stat::EXEMPT)?;
    ensure!(skipped >= 6, "SVC_SOCK_STATS counts the skipped connects: {skipped}");

    // The pod's annotation goes: new connections are translated.
    env.apply("pods", &pods(None))?;
    wait_exempt(&env, &["mesh/in-mesh"])?;
    assert_translated(&env.pod_in(1, &exempt), "pod without the annotation")?;
    // The namespace's goes too.
    env.apply("mesh-ns", &namespace("mesh", None))?;
    wait_exempt(&env, &[])?;
    assert_translated(&env.pod_in(1, &in_mesh), "pod of a namespace without the annotation")?;
    drop((exempt, sibling, in_mesh));
    Ok(())
}

/// A mesh-like pod: an iptables `REDIRECT` sends its TCP to the Service
/// range to a local sidecar that reads `SO_ORIGINAL_DST`. Exempt, the
/// sidecar sees the ClusterIP; not exempt, the connect was already
/// translated at the socket, so the rule never matched and the backend
/// answered.
pub fn a_mesh_sidecar_sees_the_cluster_ip_only_when_exempt(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    const SIDECAR_PORT: u16 = 15001;
    let mut env = node_with_web(source, dial)?;
    env.apply("pods", &pod("default", "meshed", UID_EXEMPT, NODE_NAME, Some("disabled")))?;
    let uid = env.source().pod_uid("default", "meshed", UID_EXEMPT)?;
    let meshed = cgroupfs_container(env.kubelet_root(), &uid, "app")?;
    let pod_ns = env.topo.pod(1);
    let _sidecar = pod_ns.serve_original_dst("sidecar", SIDECAR_PORT)?;
    // The pod routes the ClusterIP (as a pod with a default route does; the
    // test pods have an `unreachable` route for the Service range): an
    // untranslated connect then reaches the sidecar through the REDIRECT,
    // and nothing without it.
    pod_ns.netns().ip(&["route", "add", "10.96.0.10/32", "dev", "lo"])?;
    crate::cmd::run(&mut pod_ns.netns().exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        SERVICE_RANGE,
        "-j",
        "REDIRECT",
        "--to-ports",
        &SIDECAR_PORT.to_string(),
    ]))?;
    env.start_agent(&[])?;
    wait_exempt(&env, &["default/meshed"])?;

    let out = env.pod_in(1, &meshed).tcp(addr("10.96.0.10:80"), 3)?;
    ensure!(
        out.ok.get(&format!("sidecar:{SIDECAR_PORT} 10.96.0.10:80")) == Some(&3),
        "exempt: the sidecar sees the ClusterIP as the original destination: {out}"
    );
    env.apply("pods", &pod("default", "meshed", UID_EXEMPT, NODE_NAME, None))?;
    wait_exempt(&env, &[])?;
    let out = env.pod_in(1, &meshed).tcp(addr("10.96.0.10:80"), 3)?;
    ensure!(out.count_backend("b1") == 3, "not exempt: translated at the socket, the backend answers: {out}");
    drop(meshed);
    Ok(())
}
