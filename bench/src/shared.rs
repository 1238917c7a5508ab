//! The shared-backends shape: many Services over one set of endpoints (a
//! common case: several Services selecting one Deployment; Cilium's
//! issue #44310 shows how it can go wrong). Every Service has its own
//! EndpointSlice listing the same endpoints, as Kubernetes writes them.
//! Measured: cold programming, agent and map memory, and single endpoint
//! additions to one of those Services (which must cost what the change
//! touches, not the number of Services sharing the endpoints).

use std::time::Duration;

use anyhow::Result;

use crate::{
    addressing::{ServiceSpec, Topology},
    agent::{self, AgentConfig},
    cgroup::Cgroup,
    control::{cold_agent, measure_churn},
    manifests,
    modes::{Ctx, agent_capacity_flags},
    results::SharedResult,
};

/// `services` Services, each with the same `endpoints` endpoints.
pub(crate) fn run(ctx: &Ctx, cgroup: &Cgroup, services: u32, endpoints: u32, changes: u32) -> Result<SharedResult> {
    let topo = Topology { services, endpoints };
    let shared = topo.service(0).backends;
    let list: Vec<ServiceSpec> = Topology::extras()
        .into_iter()
        .chain((0..services).map(|i| ServiceSpec { backends: shared.clone(), ..topo.service(i) }))
        .collect();
    let source = ctx.dir("cp-shared")?;
    let bytes = manifests::write_services(&source, &list, false)?;
    // Slots for every Service's own set; reverse owners for the few
    // distinct endpoints only (the default is plenty).
    let mut flags = agent_capacity_flags(&topo, false);
    if let Some(i) = flags.iter().position(|f| f == "--max-reverse-owners") {
        flags.drain(i..i + 2);
    }
    eprintln!("bench: shared backends, {services} services over one set of {endpoints} endpoints");
    let cfg = AgentConfig {
        bin: ctx.agent_bin.clone(),
        source: source.clone(),
        cgroup: cgroup.path().to_owned(),
        bpffs: agent::pin_dir(&ctx.run_id, "shared"),
        extra: flags.clone(),
        wrapper: Vec::new(),
        devices: "none".into(),
        netns: None,
    };
    let (mut agent, run) = cold_agent(&cfg, &topo, 0)?;
    eprintln!("bench:   in sync after {:.3} s, peak RSS {} MiB", run.total_secs, run.rss_peak_kib / 1024);
    let churn = measure_churn(changes, ctx, &topo, &source, &cfg.bpffs, &mut agent);
    agent.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&source);
    Ok(SharedResult { services, endpoints, input_bytes: bytes, run, churn: churn?, agent_flags: flags })
}
