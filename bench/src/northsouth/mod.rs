//! North-south at one size: a client outside the node connects to
//! `nodeIP:nodePort` of Services whose endpoints are pods behind the node
//! (every Service a NodePort, `externalTrafficPolicy: Cluster`), through
//! each mode's node: direct (the endpoint dialled, routed by the node: no
//! Service), ours (the agent's TC programs on the node's uplink), and
//! kube-proxy's iptables (both backends) and nftables NodePort layouts.
//! Measured as the socket-path datapath is: connect latency and rate in
//! shuffled, interleaved rounds (last and random Service), bulk throughput
//! over one connection, then our TC programs' cost per packet with
//! `kernel.bpf_stats_enabled` on.

mod topology;

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Result, bail};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};

use self::topology::{NODE_IP, Network, UPLINK};
use crate::{
    addressing::{BULK_NODE_PORT, EXTRA_BACKEND, Family, NODE_PORT_RANGE, SINK_PORT, Topology},
    agent::{self, Agent, AgentConfig},
    bpf,
    cgroup::Cgroup,
    config::Config,
    datapath::{bulk_rounds, cell, merge, summarise},
    manifests,
    modes::{Ctx, Loader, Mode, Worker, agent_capacity_flags},
    protocol::{ConnectPlan, ConnectStats, Request, Response, Target},
    results::{Cell, NorthSouthResult, ProgCost},
};

const TARGETS: [Target; 2] = [Target::Last, Target::Random];
/// `--max-flows` of the north-south agent.
const MAX_FLOWS: u32 = 1 << 19;

/// One mode's node, set up and ready to measure.
#[derive(Debug)]
struct NodeEnv {
    mode: Mode,
    /// The outside client.
    client: Worker,
    /// The backends (in the pods namespace).
    pods: Worker,
    agent: Option<(Agent, AgentConfig, Cgroup)>,
    setup_secs: f64,
    // Dropped last: the workers and the agent live in it.
    net: Network,
}

impl NodeEnv {
    fn setup(mode: Mode, topo: &Topology, ctx: &Ctx) -> Result<Self> {
        let net = Network::create(&format!("{}-ns{}", ctx.run_id, mode.short()))?;
        let services = topo.with_node_ports();
        let mut agent = None;
        let setup_secs = match mode {
            Mode::Direct => 0.0,
            Mode::Ours => {
                // The socket programs attach to a cgroup nobody is in: only
                // the TC programs see this traffic.
                let cgroup = Cgroup::create(&format!("{}-ns", ctx.run_id))?;
                let source = ctx.dir("ns-manifests")?;
                manifests::write_services(&source, &services, false)?;
                let mut extra = agent_capacity_flags(topo, false);
                extra.extend(
                    ["--nodeport-addresses", &format!("{NODE_IP}/32"), "--service-node-port-range", NODE_PORT_RANGE]
                        .map(str::to_owned),
                );
                // Room for every flow of the connect rounds (two entries
                // each, closed ones kept 10 s), so that LRU eviction never
                // enters the measurements (docs/north-south.md, "Sizing the
                // flow table").
                extra.extend(["--max-flows".to_owned(), MAX_FLOWS.to_string()]);
                let cfg = AgentConfig {
                    bin: ctx.agent_bin.clone(),
                    source,
                    cgroup: cgroup.path().to_owned(),
                    bpffs: agent::pin_dir(&ctx.run_id, "ns"),
                    extra,
                    devices: UPLINK.to_owned(),
                    netns: Some(net.node.path()),
                    wrapper: Vec::new(),
                };
                let mut a = Agent::start(&cfg)?;
                let (at, _) = a.wait_for(agent::IN_SYNC, Duration::from_secs(900))?;
                let secs = (at - a.started).as_secs_f64();
                agent = Some((a, cfg, cgroup));
                secs
            }
            Mode::IptablesNft | Mode::IptablesLegacy | Mode::Nftables => {
                let loader = Loader::of(mode).expect("a netfilter mode");
                let file = ctx.dir(&format!("ns-rules-{}", mode.short()))?.join("rules");
                std::fs::write(&file, loader.ruleset(&services, false))?;
                let took = loader.load(&net.node, &file, Duration::from_secs(1800), false)?;
                let _ = std::fs::remove_file(&file);
                match took {
                    Some(t) => t.as_secs_f64(),
                    None => bail!("{} did not finish within 30 min", loader.label()),
                }
            }
        };
        let pods = Worker::spawn(&net.pods, None, ctx)?;
        let client = Worker::client(&net.client, ctx)?;
        Ok(Self { mode, client, pods, agent, setup_secs, net })
    }

    /// A connect plan of this mode: node ports at the node's address, or
    /// (direct) the endpoints themselves.
    fn plan(
        &self,
        topo: &Topology,
        target: Target,
        seed: u64,
        count: u32,
        max_millis: u64,
        warmup: u32,
    ) -> ConnectPlan {
        let direct = self.mode == Mode::Direct;
        ConnectPlan {
            topology: *topo,
            target,
            family: Family::Inet,
            direct,
            node: (!direct).then_some(NODE_IP),
            seed,
            count,
            max_millis,
            warmup,
            getpeername: false,
            raw: true,
        }
    }

    fn connect(&mut self, plan: &ConnectPlan) -> Result<ConnectStats> {
        match self.client.call(&Request::Connect(plan.clone()))? {
            Response::Connect(stats) => Ok(stats),
            other => bail!("{}: unexpected answer {other:?}", self.mode.label()),
        }
    }

    /// Fails loudly unless connects from outside reach every endpoint of
    /// the last and the first Service and nothing else (a node port that
    /// is not translated reaches no pod: the node's own stack answers).
    fn verify(&mut self, topo: &Topology) -> Result<()> {
        for i in [topo.services - 1, 0] {
            let svc = topo.service(i);
            let mut plan = self.plan(topo, Target::Last, 1, 20 * topo.endpoints, 10_000, 0);
            plan.topology.services = i + 1;
            plan.raw = false;
            expect(self.pods.call(&Request::Record)?, "record")?;
            let stats = self.connect(&plan)?;
            let Response::Reached(reached) = self.pods.call(&Request::Recorded { count: plan.count })? else {
                bail!("{}: the pods' worker did not answer with what it recorded", self.mode.label());
            };
            let label = self.mode.label();
            if stats.errors > 0 {
                bail!("{label}: {} connects to Service {i} failed: {:?}", stats.errors, stats.first_error);
            }
            if reached.len() != plan.count as usize {
                bail!("{label}: {} of {} connects to Service {i} reached a pod", reached.len(), plan.count);
            }
            for b in &svc.backends {
                if !reached.contains(&(*b).into()) {
                    bail!("{label}: no connect to Service {i} reached its endpoint {b}: {reached:?}");
                }
            }
            if let Some(r) = reached.iter().find(|r| !svc.backends.iter().any(|b| std::net::SocketAddr::V4(*b) == **r))
            {
                bail!("{label}: a connect to Service {i} reached {r}, not one of its endpoints");
            }
        }
        Ok(())
    }
}

fn expect(r: Response, what: &str) -> Result<()> {
    match r {
        Response::Done => Ok(()),
        other => bail!("{what}: unexpected answer {other:?}"),
    }
}

/// Sets up every mode at `services` Services, measures, tears down.
pub(crate) fn run(cfg: &Config, services: u32, ctx: &Ctx) -> Result<NorthSouthResult> {
    let topo = Topology { services, endpoints: cfg.datapath_endpoints };
    let mut envs = Vec::new();
    for mode in Mode::ALL {
        eprintln!("bench: north-south {services} services: setting up {}", mode.label());
        let mut env = NodeEnv::setup(mode, &topo, ctx)?;
        env.verify(&topo)?;
        eprintln!("bench:   programmed in {:.2} s, verified", env.setup_secs);
        envs.push(env);
    }
    let mut rng = StdRng::seed_from_u64(0x5eed_1000 + u64::from(services));
    let cells = connect_rounds(cfg, &topo, &mut envs, &mut rng)?;
    let mut failures = Vec::new();
    let bulk = bulk(cfg, &mut envs, &mut rng, &mut failures)?;
    let tc = match envs.iter_mut().find(|e| e.mode == Mode::Ours) {
        Some(env) => tc_costs(cfg, env, &topo, &mut failures)?,
        None => Vec::new(),
    };
    let conntrack_peak = envs
        .iter()
        .filter(|e| Mode::BASELINES.contains(&e.mode))
        .filter_map(|e| {
            e.net.node.read_sysctl("net/netfilter/nf_conntrack_count").and_then(|s| s.parse().ok()).map(|n| (e.mode, n))
        })
        .collect();
    eprintln!("bench: north-south {services} services: tearing down");
    let setup_secs = envs.iter().map(|e| (e.mode, e.setup_secs)).collect();
    drop(envs);
    Ok(NorthSouthResult {
        services,
        endpoints: topo.endpoints,
        modes: Mode::ALL.to_vec(),
        setup_secs,
        cells,
        bulk,
        tc,
        conntrack_peak,
        failures,
    })
}

/// Every (mode, target) cell once per round in short bursts, the modes in
/// a fresh shuffled order for every burst (as the socket-path datapath).
fn connect_rounds(cfg: &Config, topo: &Topology, envs: &mut [NodeEnv], rng: &mut StdRng) -> Result<Vec<Cell>> {
    let keys: Vec<(usize, Target)> = (0..envs.len()).flat_map(|m| TARGETS.map(|t| (m, t))).collect();
    let mut rounds: Vec<Vec<ConnectStats>> = vec![Vec::new(); keys.len()];
    let chunks = cfg.chunks.max(1);
    for round in 0..cfg.rounds {
        let mut merged = vec![ConnectStats::default(); keys.len()];
        let mut targets = TARGETS;
        targets.shuffle(rng);
        for target in targets {
            for _ in 0..chunks {
                let seed: u64 = rng.random();
                let mut order: Vec<usize> = (0..keys.len()).filter(|&k| keys[k].1 == target).collect();
                order.shuffle(rng);
                for k in order {
                    let env = &mut envs[keys[k].0];
                    let plan = env.plan(
                        topo,
                        target,
                        seed,
                        cfg.connects / chunks,
                        cfg.cell_max_millis / u64::from(chunks),
                        cfg.warmup / chunks,
                    );
                    merge(&mut merged[k], env.connect(&plan)?);
                }
            }
        }
        for (k, stats) in merged.into_iter().enumerate() {
            let what = format!("north-south {} ({})", envs[keys[k].0].mode.label(), keys[k].1.label());
            rounds[k].push(summarise(stats, &what)?);
        }
        eprintln!("bench:   north-south round {}/{} done", round + 1, cfg.rounds);
    }
    Ok(rounds.into_iter().zip(&keys).map(|(r, &(m, t))| cell(envs[m].mode, Family::Inet, t, r)).collect())
}

/// The bulk target of a mode: the bulk Service's node port, or (direct)
/// its endpoint.
fn bulk_target(mode: Mode) -> SocketAddrV4 {
    if mode == Mode::Direct {
        SocketAddrV4::new(EXTRA_BACKEND, SINK_PORT)
    } else {
        SocketAddrV4::new(NODE_IP, BULK_NODE_PORT)
    }
}

/// One long-lived connection per mode and round, modes shuffled.
/// A failed transfer is recorded in `failures` (its round is missing).
fn bulk(
    cfg: &Config,
    envs: &mut [NodeEnv],
    rng: &mut StdRng,
    failures: &mut Vec<String>,
) -> Result<Vec<crate::results::BulkCell>> {
    bulk_rounds(
        cfg,
        envs,
        rng,
        |env| env.mode,
        |env| {
            let target = bulk_target(env.mode).into();
            Ok(match env.client.call(&Request::Bulk { target, millis: cfg.bulk_millis })? {
                Response::Bulk(stats) => Some(stats),
                // Recorded, and the section keeps what it measured.
                other => {
                    failures.push(format!("north-south {} bulk: {other:?}", env.mode.label()));
                    None
                }
            })
        },
    )
}

/// Our TC programs' run time per run (one run per packet on the uplink)
/// in each scenario, with `kernel.bpf_stats_enabled` on.
/// A failed transfer is recorded in `failures`.
fn tc_costs(cfg: &Config, env: &mut NodeEnv, topo: &Topology, failures: &mut Vec<String>) -> Result<Vec<ProgCost>> {
    let Some((_, agent_cfg, _)) = &env.agent else { bail!("ours has no agent") };
    let bpffs = agent_cfg.bpffs.clone();
    let _stats = bpf::enable_stats()?;
    let mut costs = Vec::new();
    for (scenario, target, direct) in [
        ("TCP connect + close to the last Service's node port", Some(Target::Last), false),
        ("TCP connect + close to random Services' node ports", Some(Target::Random), false),
        ("TCP connect + close to an endpoint directly (routed, not a Service)", Some(Target::Random), true),
        ("bulk transfer through the bulk Service's node port", None, false),
    ] {
        let before = bpf::tc_program_stats(&bpffs, UPLINK)?;
        match target {
            Some(target) => {
                let mut plan = env.plan(topo, target, 7, cfg.bpf_stat_calls, 60_000, 0);
                plan.raw = false;
                if direct {
                    plan.direct = true;
                    plan.node = None;
                }
                env.connect(&plan)?;
            }
            None => {
                let target = bulk_target(Mode::Ours).into();
                match env.client.call(&Request::Bulk { target, millis: cfg.bulk_millis })? {
                    Response::Bulk(_) => {}
                    other => failures.push(format!("north-south ours bulk (bpf_stats): {other:?}")),
                }
            }
        }
        let after = bpf::tc_program_stats(&bpffs, UPLINK)?;
        costs.extend(bpf::cost_deltas(&before, &after, scenario));
    }
    Ok(costs)
}
