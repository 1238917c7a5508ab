//! A full map refuses one Service, names it, and leaves every other
//! Service serving; the refused Service is programmed once it fits. (The
//! frontend map is the one small Services fill: their backends live in the
//! frontend values; the slot map's limit is covered by the writer's unit
//! tests.)

use anyhow::Result;
use svc_tests::{
    Agent, Cgroup, ManifestDir, Proto, SYNC_TIMEOUT, Topology, UNREACHABLE, addr, is_warning,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
    poll_outcome,
};

fn web(name: &str, ip: &str, endpoints: &[Endpoint]) -> String {
    multi(&[
        &service("default", name, Some(ip), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", &format!("{name}-1"), name, &[SlicePort::tcp("http", 8080)], endpoints),
    ])
}

#[test]
fn full_frontend_map_refuses_only_the_service_that_does_not_fit() -> Result<()> {
    svc_tests::require_root();
    let cgroup = Cgroup::new()?;
    let topo = Topology::new(3)?;
    let _servers =
        (1..=3).map(|i| topo.backend(i).serve(&format!("b{i}"), &[Proto::Tcp(8080)])).collect::<Result<Vec<_>>>()?;
    let ep = |i: u8| Endpoint::ready(topo.backend(i).ip());
    let manifests = ManifestDir::new()?;
    // Room for one frontend: "a" (first in name order) takes it.
    manifests.write("a.yaml", &web("a", "10.96.0.20", &[ep(1), ep(2)]))?;
    manifests.write("b.yaml", &web("b", "10.96.0.21", &[ep(3)]))?;
    let mut agent = Agent::start_with_args(&manifests, &cgroup, &["--max-frontends", "1"])?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;

    let refusal = agent.wait_for_log_line(SYNC_TIMEOUT, |l| {
        is_warning(l) && l.contains("default/b") && l.contains("SVC_FRONTENDS is full")
    })?;
    assert!(!refusal.contains("default/a"), "only b is refused: {refusal}");
    let a = addr("10.96.0.20:80");
    let b = addr("10.96.0.21:80");
    let out = topo.tcp(Some(&cgroup), a, 40)?;
    assert_eq!(out.total_ok(), 40, "a keeps serving: {out}");
    assert_eq!(out.backends(), ["b1", "b2"].map(str::to_owned).into(), "{out}");
    let out = topo.tcp(Some(&cgroup), b, 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "b is not programmed at all: {out}");

    // a leaves: the pending Service b now fits and is applied by the retry.
    manifests.remove("a.yaml")?;
    poll_outcome(SYNC_TIMEOUT, || topo.tcp(Some(&cgroup), b, 5), |o| o.ok.get("b3:8080") == Some(&5))?;
    let out = topo.tcp(Some(&cgroup), a, 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "a is gone: {out}");
    Ok(())
}
