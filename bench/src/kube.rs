//! The Kubernetes source, the production path, through a real
//! kube-apiserver (v1.20.2 with etcd on loopback: scripts/apiserver, run by
//! the end-to-end harness's `ApiServer` guard). The objects are written
//! first; then the agent starts with `--source kube`. Measured:
//! - start -> `dataplane in sync`, split at the source's `kubernetes
//!   source synced` line: before it the programs are loaded and every kind
//!   listed (the API server's share, with our decoding of what it sends),
//!   after it the model and the maps (ours alone);
//! - the agent's peak RSS;
//! - API write -> map visible for single endpoint additions at a steady
//!   rate (100 per second): the write is a server-side apply, so the
//!   latency includes the API server's write and its watch delivery (the
//!   write's own share is reported beside it).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use svc_tests::apiserver::ApiServer;

use crate::{
    addressing::{SERVICE_PORT, Topology, vip},
    agent::{self, AgentConfig},
    bpf::Frontends,
    cgroup::Cgroup,
    control::cold_agent,
    manifests,
    modes::{Ctx, agent_capacity_flags},
    results::KubeResult,
    sys,
};

/// The line the Kubernetes source logs once every kind is listed.
pub(crate) const SOURCE_SYNCED: &str = "kubernetes source synced";

/// The API server's own `default/kubernetes` Service: one more frontend.
const KUBERNETES_SERVICE: usize = 1;

/// One size: load the API server, start the agent, measure.
pub(crate) fn run(ctx: &Ctx, cgroup: &Cgroup, topo: &Topology, changes: u32, rate: u32) -> Result<KubeResult> {
    eprintln!(
        "bench: kubernetes source, {} services x {} endpoints: starting kube-apiserver",
        topo.services, topo.endpoints
    );
    let api = ApiServer::new().context("kube-apiserver (scripts/apiserver)")?;
    let staging = ctx.dir("kube-objects")?;
    let input_bytes = manifests::write_all(&staging, topo, false)?;
    let load = Instant::now();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&staging)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        api.apply_yaml(&text).with_context(|| format!("applying {}", file.display()))?;
    }
    let load_secs = load.elapsed().as_secs_f64();
    eprintln!("bench:   {} files written to the API server in {load_secs:.1} s", files.len());

    let flags = agent_capacity_flags(topo, false);
    let mut extra = vec!["--kubeconfig".to_owned(), api.kubeconfig().display().to_string()];
    extra.extend(flags.iter().cloned());
    let cfg = AgentConfig {
        bin: ctx.agent_bin.clone(),
        source: PathBuf::from("kube"),
        cgroup: cgroup.path().to_owned(),
        bpffs: agent::pin_dir(&ctx.run_id, "kube"),
        extra,
        wrapper: Vec::new(),
        devices: "none".into(),
        netns: None,
    };
    let (mut agent, run) = cold_agent(&cfg, topo, KUBERNETES_SERVICE)?;
    eprintln!("bench:   in sync after {:.3} s, peak RSS {} MiB", run.total_secs, run.rss_peak_kib / 1024);

    eprintln!("bench:   {changes} endpoint additions at {rate} per second");
    let frontends = Frontends::open(&cfg.bpffs)?;
    let period = Duration::from_secs(1) / rate.max(1);
    let (mut latency_ms, mut write_ms, mut apply_ms, mut failures) = (Vec::new(), Vec::new(), Vec::new(), 0u32);
    let churn_start = Instant::now();
    for k in 0..changes {
        let i = k % topo.services;
        let want = topo.endpoints + 1 + k / topo.services;
        let (tmp, _) = manifests::churn_file(&staging, topo, i, k)?;
        let text = std::fs::read_to_string(&tmp)?;
        std::fs::remove_file(&tmp)?;
        // Steady rate: change k is due at k periods after the first.
        if let Some(wait) = (churn_start + period * k).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let start = Instant::now();
        api.apply_yaml(&text).with_context(|| format!("churn change {k}"))?;
        write_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let seen = sys::wait_until(Duration::from_secs(10), Duration::from_micros(100), || {
            frontends.get(vip(i), SERVICE_PORT).is_some_and(|f| f.count >= want)
        });
        if seen {
            latency_ms.push(start.elapsed().as_secs_f64() * 1e3);
        } else {
            failures += 1;
        }
        apply_ms.extend(agent.drain_apply_ms());
    }
    let churn_secs = churn_start.elapsed().as_secs_f64();
    agent.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&staging);
    Ok(KubeResult {
        services: topo.services,
        endpoints: topo.endpoints,
        input_bytes,
        load_secs,
        run,
        changes,
        rate,
        achieved_rate: f64::from(changes) / churn_secs.max(1e-9),
        latency_ms,
        write_ms,
        apply_ms,
        failures,
        agent_flags: flags,
    })
}
