//! Datapath measurements at one size: every mode set up side by side,
//! verified, then timed in shuffled rounds (every (mode, target) cell once
//! per round, same target sequence for every mode in a round); medians
//! across rounds. Then bulk throughput, and the in-kernel cost of each of
//! our programs with `kernel.bpf_stats_enabled` on.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Result, bail};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};

use crate::{
    addressing::{BULK_VIP, Family, SERVICE_PORT, Topology, UDP_PORT, UDP_VIP},
    bpf,
    config::{Config, DatapathSize},
    modes::{Ctx, Mode, ModeEnv},
    profile,
    protocol::{BulkStats, ConnectPlan, ConnectStats, Request, Response, Target},
    results::{BpfResult, BulkCell, Cell, DatapathResult, Profile},
    stats::{Summary, median},
};

/// The targets a size times.
fn targets(size: &DatapathSize) -> Vec<Target> {
    let mut out = Target::TCP.to_vec();
    if size.udp {
        out.extend(Target::UDP);
    }
    out
}

/// Sets up every mode of `size`, measures, tears down.
pub(crate) fn run(cfg: &Config, size: &DatapathSize, ctx: &Ctx, profile: bool) -> Result<DatapathResult> {
    let topo = Topology { services: size.services, endpoints: cfg.datapath_endpoints };
    let mut envs = Vec::new();
    for &mode in &size.modes {
        eprintln!("bench: datapath {} services{}: setting up {}", topo.services, ct_note(size), mode.label());
        let mut env = ModeEnv::setup(mode, &topo, ctx, size.ipv6(), size.conntrack)?;
        for &family in size.families.iter().filter(|f| mode.serves(**f)) {
            env.verify(&topo, family)?;
        }
        eprintln!("bench:   programmed in {:.2} s, verified", env.setup_secs);
        envs.push(env);
    }
    let setup_secs = envs.iter().map(|e| (e.mode, e.setup_secs)).collect();

    // The cells: every (mode, family, target) the size measures.
    let size_targets = targets(size);
    let keys: Vec<(usize, Family, Target)> = envs
        .iter()
        .enumerate()
        .flat_map(|(m, env)| {
            let size_targets = &size_targets;
            size.families
                .iter()
                .filter(|f| env.mode.serves(**f))
                .flat_map(move |&f| size_targets.iter().map(move |&t| (m, f, t)))
        })
        .collect();
    // Each round measures every cell with `chunks` short bursts, the modes
    // interleaved in a fresh shuffled order for every burst: slow drifts in
    // the machine's load (other work on a shared machine) hit every mode
    // alike instead of whichever cell ran then.
    let mut rounds: Vec<Vec<ConnectStats>> = vec![Vec::new(); keys.len()];
    let mut conntrack_peak = vec![0u64; envs.len()];
    // The modes whose namespace tracks connections.
    let tracks = |mode: Mode| Mode::BASELINES.contains(&mode) || size.conntrack;
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + u64::from(topo.services));
    let chunks = cfg.chunks.max(1);
    for round in 0..cfg.rounds {
        let mut merged: Vec<ConnectStats> = vec![ConnectStats::default(); keys.len()];
        let mut groups: Vec<(Family, Target)> =
            size.families.iter().flat_map(|&f| size_targets.iter().map(move |&t| (f, t))).collect();
        groups.shuffle(&mut rng);
        for (family, target) in groups {
            for _ in 0..chunks {
                let seed: u64 = rng.random();
                let mut order: Vec<usize> =
                    (0..keys.len()).filter(|&k| keys[k].1 == family && keys[k].2 == target).collect();
                order.shuffle(&mut rng);
                for k in order {
                    let env = &mut envs[keys[k].0];
                    let plan = ConnectPlan {
                        topology: topo,
                        target,
                        family,
                        direct: env.mode == Mode::Direct,
                        node: None,
                        seed,
                        count: cfg.connects / chunks,
                        max_millis: cfg.cell_max_millis / u64::from(chunks),
                        warmup: cfg.warmup / chunks,
                        getpeername: false,
                        raw: true,
                    };
                    merge(&mut merged[k], connect(env, plan)?);
                }
            }
        }
        for (k, stats) in merged.into_iter().enumerate() {
            let (env, family, target) = (&envs[keys[k].0], keys[k].1, keys[k].2);
            let what = format!("{} ({}, {})", env.mode.label(), family.label(), target.label());
            rounds[k].push(summarise(stats, &what)?);
        }
        for (i, env) in envs.iter().enumerate() {
            if tracks(env.mode)
                && let Some(n) = env.netns.read_sysctl("net/netfilter/nf_conntrack_count").and_then(|s| s.parse().ok())
            {
                conntrack_peak[i] = conntrack_peak[i].max(n);
            }
        }
        eprintln!("bench:   round {}/{} done", round + 1, cfg.rounds);
    }
    let cells: Vec<Cell> =
        rounds.into_iter().zip(&keys).map(|(r, &(m, family, target))| cell(envs[m].mode, family, target, r)).collect();

    // Bulk transfers and the programs' own cost do not depend on
    // conntrack: measured in the conntrack-free sizes only.
    let bulk = if size.conntrack { Vec::new() } else { bulk(cfg, &mut envs, &mut rng)? };
    let bpf = match envs.iter_mut().find(|e| e.mode == Mode::Ours) {
        Some(env) if !size.conntrack => Some(bpf_costs(cfg, env, &topo, &size.families)?),
        _ => None,
    };
    let profiles = if profile { overhead_profiles(&mut envs, &topo, &cells_ref(&cells), ctx) } else { Vec::new() };
    let conntrack_peak =
        envs.iter().zip(conntrack_peak).filter(|(e, _)| tracks(e.mode)).map(|(e, n)| (e.mode, n)).collect();
    eprintln!("bench: datapath {} services: tearing down", topo.services);
    drop(envs);
    Ok(DatapathResult {
        services: topo.services,
        conntrack: size.conntrack,
        endpoints: topo.endpoints,
        modes: size.modes.clone(),
        families: size.families.clone(),
        setup_secs,
        cells,
        bulk,
        bpf,
        conntrack_peak,
        profiles,
    })
}

/// `, conntrack active` for such a size (log lines).
fn ct_note(size: &DatapathSize) -> &'static str {
    if size.conntrack { ", conntrack active" } else { "" }
}

/// A round of one cell, its bursts merged: fails if more than 0.1 % of
/// its connects failed, else summarises the raw samples (and drops them).
pub(crate) fn summarise(mut stats: ConnectStats, what: &str) -> Result<ConnectStats> {
    if u64::from(stats.errors) * 1000 > u64::from(stats.samples + stats.errors) {
        bail!(
            "{what}: {} of {} connects failed, first: {}",
            stats.errors,
            stats.samples + stats.errors,
            stats.first_error.unwrap_or_default()
        );
    }
    stats.connect = Summary::of(&mut stats.raw_connect);
    stats.cycle = Summary::of(&mut stats.raw_cycle);
    stats.raw_connect = Vec::new();
    stats.raw_cycle = Vec::new();
    Ok(stats)
}

/// Adds one burst's results to a cell's round.
pub(crate) fn merge(into: &mut ConnectStats, burst: ConnectStats) {
    into.samples += burst.samples;
    into.errors += burst.errors;
    if into.first_error.is_none() {
        into.first_error = burst.first_error;
    }
    into.wall_ns += burst.wall_ns;
    into.client_cpu_ns += burst.client_cpu_ns;
    into.process_cpu_ns += burst.process_cpu_ns;
    into.slow += burst.slow;
    into.raw_connect.extend(burst.raw_connect);
    into.raw_cycle.extend(burst.raw_cycle);
}

/// The IPv4 cells' p50s (the profiles are taken for those).
fn cells_ref(cells: &[Cell]) -> Vec<(Mode, Target, f64)> {
    cells.iter().filter(|c| c.family == Family::Inet).map(|c| (c.mode, c.target, c.connect.p50)).collect()
}

/// When our p50 connect overhead over direct exceeds the 1 us target,
/// profiles both modes on that target (best effort: a failed profile is
/// reported, not fatal).
fn overhead_profiles(envs: &mut [ModeEnv], topo: &Topology, p50: &[(Mode, Target, f64)], ctx: &Ctx) -> Vec<Profile> {
    let get = |m: Mode, t: Target| p50.iter().find(|(mm, tt, _)| *mm == m && *tt == t).map(|x| x.2);
    let mut out = Vec::new();
    for target in Target::TCP {
        let (Some(ours), Some(direct)) = (get(Mode::Ours, target), get(Mode::Direct, target)) else { continue };
        if ours - direct <= crate::report::CONNECT_TARGET_NS {
            continue;
        }
        for mode in [Mode::Direct, Mode::Ours] {
            let Some(env) = envs.iter_mut().find(|e| e.mode == mode) else { continue };
            eprintln!("bench:   connect overhead target missed; profiling {} ({})", mode.label(), target.label());
            match profile::connect_loop(ctx, env, topo, target) {
                Ok(p) => out.push(p),
                Err(e) => eprintln!("bench:   profile failed: {e:#}"),
            }
        }
        if let [direct, ours] = out.as_mut_slice() {
            profile::diff(ours, direct);
        }
        break;
    }
    out
}

fn connect(env: &mut ModeEnv, plan: ConnectPlan) -> Result<ConnectStats> {
    match env.worker.call(&Request::Connect(plan))? {
        Response::Connect(stats) => Ok(stats),
        other => bail!("{}: unexpected answer {other:?}", env.mode.label()),
    }
}

pub(crate) fn cell(mode: Mode, family: Family, target: Target, rounds: Vec<ConnectStats>) -> Cell {
    let per = |f: &dyn Fn(&ConnectStats) -> f64| median(rounds.iter().filter(|r| r.samples > 0).map(f));
    Cell {
        mode,
        family,
        target,
        connect: Summary::median_of(&rounds.iter().map(|r| r.connect).collect::<Vec<_>>()),
        cycle: Summary::median_of(&rounds.iter().map(|r| r.cycle).collect::<Vec<_>>()),
        conns_per_sec: per(&|r| f64::from(r.samples) / (r.wall_ns as f64 / 1e9)),
        client_cpu_ns_per_conn: per(&|r| r.client_cpu_ns as f64 / f64::from(r.samples)),
        process_cpu_ns_per_conn: per(&|r| r.process_cpu_ns as f64 / f64::from(r.samples)),
        samples: rounds.iter().map(|r| u64::from(r.samples)).sum(),
        errors: rounds.iter().map(|r| u64::from(r.errors)).sum(),
        slow: rounds.iter().map(|r| u64::from(r.slow)).sum(),
        rounds,
    }
}

/// One long-lived connection per mode and round, modes shuffled.
fn bulk(cfg: &Config, envs: &mut [ModeEnv], rng: &mut StdRng) -> Result<Vec<BulkCell>> {
    bulk_rounds(
        cfg,
        envs,
        rng,
        |env| env.mode,
        |env| {
            let target = if env.mode == Mode::Direct {
                Topology::extras()[0].backends[0]
            } else {
                SocketAddrV4::new(BULK_VIP, SERVICE_PORT)
            }
            .into();
            match env.worker.call(&Request::Bulk { target, millis: cfg.bulk_millis })? {
                Response::Bulk(stats) => Ok(Some(stats)),
                other => bail!("{} bulk: {other:?}", env.mode.label()),
            }
        },
    )
}

/// `cfg.bulk_rounds` rounds of one `transfer` per environment, in a fresh
/// shuffled order each round (`None`: it failed and was recorded, its
/// round is missing), summarised per mode (the north-south section's too).
pub(crate) fn bulk_rounds<E>(
    cfg: &Config,
    envs: &mut [E],
    rng: &mut StdRng,
    mode: fn(&E) -> Mode,
    mut transfer: impl FnMut(&mut E) -> Result<Option<BulkStats>>,
) -> Result<Vec<BulkCell>> {
    let mut per_mode = vec![Vec::new(); envs.len()];
    for _ in 0..cfg.bulk_rounds {
        let mut order: Vec<usize> = (0..envs.len()).collect();
        order.shuffle(rng);
        for i in order {
            per_mode[i].extend(transfer(&mut envs[i])?);
        }
    }
    Ok(envs.iter().zip(per_mode).map(|(env, rounds)| bulk_cell(mode(env), rounds)).collect())
}

/// A mode's bulk rounds, summarised.
fn bulk_cell(mode: Mode, rounds: Vec<BulkStats>) -> BulkCell {
    BulkCell {
        mode,
        gbit_per_sec: median(rounds.iter().map(|r| r.bytes as f64 * 8.0 / r.wall_ns as f64)),
        client_cpu_secs_per_gib: median(
            rounds.iter().map(|r| r.client_cpu_ns as f64 / 1e9 / (r.bytes as f64 / f64::from(1u32 << 30))),
        ),
        rounds,
    }
}

/// Runs scenarios with `kernel.bpf_stats_enabled` on and divides each
/// program's run-time delta by its run-count delta.
fn bpf_costs(cfg: &Config, env: &mut ModeEnv, topo: &Topology, families: &[Family]) -> Result<BpfResult> {
    let Some((_, agent_cfg, _)) = &env.agent else { bail!("ours has no agent") };
    let bpffs = agent_cfg.bpffs.clone();
    let _stats = bpf::enable_stats()?;
    let mut costs = Vec::new();
    // (scenario, client family, connect target or UDP, dial the backend
    // directly, with a trace running)
    let mut scenarios: Vec<(&str, Family, Option<Target>, bool, bool)> = vec![
        ("TCP connect to the last Service (+ getpeername)", Family::Inet, Some(Target::Last), false, false),
        (
            "TCP connect to the last Service (+ getpeername), `svc-agent trace` running",
            Family::Inet,
            Some(Target::Last),
            false,
            true,
        ),
        ("TCP connect to random Services (+ getpeername)", Family::Inet, Some(Target::Random), false, false),
        ("TCP connect to a non-Service address (backend directly)", Family::Inet, Some(Target::Random), true, false),
        ("UDP sendto + recvfrom via the VIP, unconnected socket", Family::Inet, None, false, false),
        (
            "DNS-like UDP query via the VIP (socket, connect, send, recv, close)",
            Family::Inet,
            Some(Target::Query),
            false,
            false,
        ),
    ];
    if families.contains(&Family::Mapped) {
        scenarios.extend([
            (
                "AF_INET6 TCP connect to the last IPv4 Service, v4-mapped (+ getpeername)",
                Family::Mapped,
                Some(Target::Last),
                false,
                false,
            ),
            ("AF_INET6 UDP sendto + recvfrom via the v4-mapped VIP", Family::Mapped, None, false, false),
        ]);
    }
    if families.contains(&Family::Ipv6) {
        scenarios.extend([
            ("TCP connect to the last IPv6 Service (+ getpeername)", Family::Ipv6, Some(Target::Last), false, false),
            ("TCP connect to random IPv6 Services (+ getpeername)", Family::Ipv6, Some(Target::Random), false, false),
            ("UDP sendto + recvfrom via the IPv6 VIP, unconnected socket", Family::Ipv6, None, false, false),
        ]);
    }
    for (scenario, family, target, direct, traced) in scenarios {
        let tracing = if traced { Some(bpf::Tracing::start(&bpffs)?) } else { None };
        let before = bpf::program_stats(&bpffs)?;
        match target {
            Some(target) => {
                let plan = ConnectPlan {
                    topology: *topo,
                    target,
                    family,
                    direct,
                    node: None,
                    seed: 7,
                    count: cfg.bpf_stat_calls,
                    max_millis: 60_000,
                    warmup: 0,
                    getpeername: true,
                    raw: false,
                };
                connect(env, plan)?;
            }
            None => {
                let req = Request::Udp {
                    target: family.dial(SocketAddrV4::new(UDP_VIP, UDP_PORT)),
                    count: cfg.bpf_stat_calls,
                };
                match env.worker.call(&req)? {
                    Response::Done => {}
                    other => bail!("UDP exercise: {other:?}"),
                }
            }
        }
        let after = bpf::program_stats(&bpffs)?;
        drop(tracing);
        costs.extend(bpf::cost_deltas(&before, &after, scenario));
    }
    std::thread::sleep(Duration::from_millis(10));
    Ok(BpfResult { costs, programs: bpf::program_stats(&bpffs)? })
}
