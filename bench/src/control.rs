//! Control-plane measurements: cold programming through the agent (start
//! to `dataplane in sync`, with RSS and map memory) against loading the
//! equivalent kube-proxy rules with iptables-restore and nft -f; and the
//! latency of single endpoint additions (manifest rename -> visible in the
//! frontend map).

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    addressing::{SERVICE_PORT, ServiceSpec, Topology, vip},
    agent::{self, Agent, AgentConfig},
    bpf::{self, Frontends},
    cgroup::Cgroup,
    config::Config,
    manifests,
    modes::{Ctx, Loader, agent_capacity_flags},
    netns::Netns,
    results::{AgentRun, ChurnResult, ColdResult, ColdSystem, ControlResult},
    sys,
};

/// Every cold programming run and the churn measurement.
pub(crate) fn run(cfg: &Config, ctx: &Ctx, errors: &mut Vec<String>) -> ControlResult {
    let mut result = ControlResult {
        kube_source: "measured at 1k and 10k Services (section \"Control plane: the Kubernetes source\"); not at \
                      100k: writing 200k objects through this API server takes longer than this bench's budget"
            .into(),
        ..ControlResult::default()
    };
    let cgroup = match Cgroup::create(&format!("{}-cp", ctx.run_id)) {
        Ok(c) => c,
        Err(e) => {
            errors.push(format!("control plane: {e:#}"));
            return result;
        }
    };
    // Per loader: the largest size loaded so far and its time (None: killed).
    let mut previous: Vec<(Loader, u32, Option<f64>)> = Vec::new();
    for &services in &cfg.control_sizes {
        let topo = Topology { services, endpoints: cfg.control_endpoints };
        let reps = if services <= cfg.reps_up_to { cfg.cold_reps } else { 1 };
        match ours(cfg, ctx, &topo, &cgroup, reps) {
            Ok((cold, churn)) => {
                result.cold.push(cold);
                result.churn.extend(churn);
            }
            Err(e) => {
                eprintln!("bench: cold programming (ours) at {services} services FAILED: {e:#}");
                errors.push(format!("cold programming (ours) at {services} services: {e:#}"));
            }
        }
        if services == cfg.target_services
            && let Some((services, endpoints, changes)) = cfg.shared
        {
            match crate::shared::run(ctx, &cgroup, services, endpoints, changes) {
                Ok(shared) => result.shared = Some(shared),
                Err(e) => {
                    eprintln!("bench: shared backends FAILED: {e:#}");
                    errors.push(format!("shared backends: {e:#}"));
                }
            }
        }
        let services_list: Vec<ServiceSpec> = topo.all().collect();
        for loader in [Loader::IptablesLegacy, Loader::IptablesNft, Loader::Nft] {
            match baseline(cfg, ctx, &topo, &services_list, loader, reps, &mut previous) {
                Ok(r) => result.cold.push(r),
                Err(e) => {
                    eprintln!("bench: cold programming ({}) at {services} services FAILED: {e:#}", loader.label());
                    errors.push(format!("cold programming ({}) at {services} services: {e:#}", loader.label()));
                }
            }
        }
    }
    for &services in &cfg.kube_sizes {
        let topo = Topology { services, endpoints: cfg.control_endpoints };
        match crate::kube::run(ctx, &cgroup, &topo, cfg.kube_changes, cfg.kube_rate) {
            Ok(r) => result.kube.push(r),
            Err(e) => {
                eprintln!("bench: kubernetes source at {services} services FAILED: {e:#}");
                errors.push(format!("kubernetes source at {services} services: {e:#}"));
            }
        }
    }
    result
}

/// The agent from start to in sync, `reps` times on fresh pins; the churn
/// measurement runs on the last agent of the churn size.
fn ours(
    cfg: &Config,
    ctx: &Ctx,
    topo: &Topology,
    cgroup: &Cgroup,
    reps: u32,
) -> Result<(ColdResult, Option<ChurnResult>)> {
    let source = ctx.dir("cp-manifests")?;
    let bytes = manifests::write_all(&source, topo, false)?;
    let flags = agent_capacity_flags(topo, false);
    let mut runs = Vec::new();
    let mut agent_runs = Vec::new();
    let mut churn = None;
    for rep in 0..reps {
        eprintln!(
            "bench: cold programming, ours, {} services x {} endpoints, run {}",
            topo.services,
            topo.endpoints,
            rep + 1
        );
        let cfg_agent = AgentConfig {
            bin: ctx.agent_bin.clone(),
            source: source.clone(),
            cgroup: cgroup.path().to_owned(),
            bpffs: agent::pin_dir(&ctx.run_id, &format!("cp{rep}")),
            extra: flags.clone(),
            wrapper: Vec::new(),
            devices: "none".into(),
            netns: None,
        };
        let (mut agent, run) = cold_agent(&cfg_agent, topo, 0)?;
        eprintln!("bench:   in sync after {:.3} s, peak RSS {} MiB", run.total_secs, run.rss_peak_kib / 1024);
        runs.push(Some(run.total_secs));
        agent_runs.push(run);
        if rep + 1 == reps
            && let Some(&(_, changes)) = cfg.churn.iter().find(|(s, _)| *s == topo.services)
        {
            churn = Some(measure_churn(changes, ctx, topo, &source, &cfg_agent.bpffs, &mut agent)?);
        }
        agent.stop(Duration::from_secs(10));
    }
    let _ = std::fs::remove_dir_all(&source);
    Ok((
        ColdResult {
            system: ColdSystem::OursManifest,
            services: topo.services,
            endpoints: topo.endpoints,
            runs,
            timeout_secs: 0,
            skipped: None,
            input_bytes: bytes,
            agent: agent_runs,
            agent_flags: flags,
        },
        churn,
    ))
}

/// Starts an agent and measures it until in sync; returns it still running.
/// `others`: frontends the source has besides `topo`'s (the API server's
/// own `default/kubernetes` Service).
pub(crate) fn cold_agent(cfg: &AgentConfig, topo: &Topology, others: usize) -> Result<(Agent, AgentRun)> {
    let mut agent = Agent::start(cfg)?;
    let sampler = RssSampler::start(agent.agent_pid());
    let lines = agent.wait_collect(agent::IN_SYNC, Duration::from_secs(1800))?;
    let samples = sampler.stop();
    let pid = agent.agent_pid();
    let peak = samples.iter().map(|(_, r)| *r).max().unwrap_or(0).max(sys::proc_status_kib(pid, "VmHWM").unwrap_or(0));
    let since = |t: Instant| (t - agent.started).as_secs_f64();
    let at = |needle: &str| lines.iter().find(|(_, l)| l.contains(needle)).map(|(t, _)| *t);
    // RSS at a moment: the first sample taken after it.
    let rss_at =
        |t: Option<Instant>| t.and_then(|t| samples.iter().find(|(s, _)| *s >= t).map(|(_, r)| *r)).unwrap_or(0);
    let attached = at("programs loaded, attached and pinned");
    let loaded = at("manifest source loaded").or_else(|| at(crate::kube::SOURCE_SYNCED));
    let (synced, line) = lines.last().cloned().context("no in-sync line")?;

    let frontends = Frontends::open(&cfg.bpffs)?;
    let count = frontends.len();
    let want = topo.service_ports() as usize + others;
    let last = frontends.get(vip(topo.services - 1), SERVICE_PORT).map(|f| f.count);
    if count != want || last != Some(topo.endpoints) {
        bail!(
            "after sync the agent has {count} frontends (want {want}), the last Service has {last:?} backends (want {}); its log ends:\n{}",
            topo.endpoints,
            agent.tail()
        );
    }
    let rss_synced = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    // VmHWM again: the agent may still have allocated after the sample.
    let peak = peak.max(rss_synced).max(sys::proc_status_kib(pid, "VmHWM").unwrap_or(0));
    let run = AgentRun {
        total_secs: since(synced),
        attach_secs: attached.map(since),
        source_secs: loaded.map(since),
        apply_secs: agent::field(&line, "apply_us").map(|us| us as f64 / 1e6),
        rss_peak_kib: peak,
        rss_at_phases_kib: vec![
            ("programs attached".into(), rss_at(attached)),
            ("source loaded".into(), rss_at(loaded)),
            ("in sync".into(), rss_synced),
        ],
        maps: bpf::map_memory(&cfg.bpffs)?,
        frontends: count,
    };
    Ok((agent, run))
}

/// Samples the agent's RSS every 2 ms while it programs (to place memory
/// in phases; VmHWM gives only the peak).
struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (Arc::clone(&stop), Arc::clone(&samples));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = sys::proc_status_kib(pid, "VmRSS")
                    && let Ok(mut v) = out.lock()
                {
                    v.push((Instant::now(), rss));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self { stop, samples, thread }
    }

    fn stop(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// kube-proxy's layout loaded into a fresh namespace, `reps` times.
fn baseline(
    cfg: &Config,
    ctx: &Ctx,
    topo: &Topology,
    services: &[ServiceSpec],
    loader: Loader,
    reps: u32,
    previous: &mut Vec<(Loader, u32, Option<f64>)>,
) -> Result<ColdResult> {
    let mut result = ColdResult {
        system: ColdSystem::Baseline(loader),
        services: topo.services,
        endpoints: topo.endpoints,
        runs: Vec::new(),
        timeout_secs: cfg.baseline_timeout_secs,
        skipped: None,
        input_bytes: 0,
        agent: Vec::new(),
        agent_flags: Vec::new(),
    };
    // Skip what cannot finish: killed at a smaller size, or a smaller
    // size's time scaled linearly by the size ratio (optimistic: these
    // loads grow faster than linearly) already exceeds the timeout.
    if let Some((_, size, took)) = previous.iter().rev().find(|(l, _, _)| *l == loader) {
        let timeout = cfg.baseline_timeout_secs as f64;
        match took {
            None => {
                result.skipped = Some(format!("killed after {timeout} s at {size} Services"));
                return Ok(result);
            }
            Some(t) if t * f64::from(topo.services) / f64::from(*size) > timeout => {
                result.skipped = Some(format!(
                    "{t:.1} s at {size} Services scaled linearly to {} Services exceeds the {timeout} s timeout",
                    topo.services
                ));
                return Ok(result);
            }
            Some(_) => {}
        }
    }
    let file = ctx.dir("cp-rules")?.join("rules");
    let text = loader.ruleset(services, false);
    result.input_bytes = text.len() as u64;
    std::fs::write(&file, text).context("writing rules")?;
    for rep in 0..reps {
        eprintln!(
            "bench: cold programming, {}, {} services x {} endpoints, run {}",
            loader.label(),
            topo.services,
            topo.endpoints,
            rep + 1
        );
        let netns = Netns::create(format!("{}-cp", ctx.run_id))?;
        let took = loader.load(&netns, &file, Duration::from_secs(cfg.baseline_timeout_secs), true)?;
        match took {
            Some(d) => eprintln!("bench:   {:.3} s", d.as_secs_f64()),
            None => eprintln!("bench:   still running after {} s, killed", cfg.baseline_timeout_secs),
        }
        result.runs.push(took.map(|d| d.as_secs_f64()));
        drop(netns);
        // Repeat only short loads: a 20 s+ load varies little relative to
        // itself, and repeating it would dominate the run time.
        if took.is_none_or(|d| d > Duration::from_secs(20)) {
            break;
        }
    }
    let last = result.runs.last().copied().flatten();
    let took = if result.runs.iter().any(Option::is_none) { None } else { last };
    previous.push((loader, topo.services, took));
    let _ = std::fs::remove_file(&file);
    Ok(result)
}

/// Single-endpoint additions, one at a time: a new EndpointSlice file with
/// one endpoint for service `k % n` is renamed into the manifest dir (from
/// a staging dir outside it, so the agent's watcher sees only the rename),
/// and the frontend map is polled until that Service's backend count grows.
pub(crate) fn measure_churn(
    changes: u32,
    ctx: &Ctx,
    topo: &Topology,
    source: &Path,
    bpffs: &Path,
    agent: &mut Agent,
) -> Result<ChurnResult> {
    eprintln!("bench: single-change latency, {changes} changes at {} services", topo.services);
    let staging = ctx.dir("cp-staging")?;
    let frontends = Frontends::open(bpffs)?;
    let mut result = ChurnResult {
        services: topo.services,
        endpoints: topo.endpoints,
        changes,
        debounce_ms: manifest_debounce_ms(),
        ..ChurnResult::default()
    };
    agent.drain();
    let pid = agent.agent_pid();
    result.rss_before_kib = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    let cpu_before = sys::proc_cpu_secs(pid);
    for k in 0..changes {
        let i = k % topo.services;
        let want = topo.endpoints + 1 + k / topo.services;
        let (tmp, dest) = manifests::churn_file(&staging, topo, i, k)?;
        let dest = source.join(dest.file_name().context("churn file name")?);
        let start = Instant::now();
        std::fs::rename(&tmp, &dest).with_context(|| format!("rename into {}", dest.display()))?;
        let seen = sys::wait_until(Duration::from_secs(10), Duration::from_micros(100), || {
            frontends.get(vip(i), SERVICE_PORT).is_some_and(|f| f.count >= want)
        });
        if seen {
            result.latency_ms.push(start.elapsed().as_secs_f64() * 1e3);
        } else {
            result.failures += 1;
        }
        // The agent's own processing time of this change.
        std::thread::sleep(Duration::from_millis(1));
        result.apply_ms.extend(agent.drain_apply_ms());
    }
    result.rss_after_kib = sys::proc_status_kib(pid, "VmRSS").unwrap_or(0);
    result.agent_cpu_secs = sys::proc_cpu_secs(pid) - cpu_before;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(result)
}

/// The manifest source's debounce, read from the agent's source (a
/// constant the agent does not report), if the checkout is at hand.
fn manifest_debounce_ms() -> Option<f64> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../svc-agent/src/source/manifest/watch.rs");
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.contains("const DEBOUNCE"))?;
    let ms = line.split("from_millis(").nth(1)?.split(')').next()?.trim().parse().ok()?;
    Some(ms)
}
