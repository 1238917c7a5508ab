//! Where the time goes, for targets that are missed: `perf record` with the
//! software `cpu-clock` event (this machine has no hardware counters), flat
//! profiles by symbol and by shared object.

use std::{
    ffi::OsString,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    addressing::Topology,
    agent::AgentConfig,
    cleanup,
    control::cold_agent,
    modes::{Ctx, ModeEnv},
    protocol::{ConnectPlan, Request, Target},
    results::Profile,
    sys,
};

/// Sampling frequency (Hz) of every profile.
const FREQ: &str = "4999";

/// Whether `perf record` works here.
pub(crate) fn available() -> bool {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The agent's cold programming of `topo`, run under `perf record`.
pub(crate) fn agent_cold(ctx: &Ctx, mut cfg: AgentConfig, topo: &Topology) -> Result<Profile> {
    let data = ctx.tmp.join("perf-agent.data");
    cfg.wrapper = ["perf", "record", "-q", "-e", "cpu-clock", "-F", FREQ, "-o"]
        .into_iter()
        .map(OsString::from)
        .chain([data.clone().into_os_string(), "--".into()])
        .collect();
    let (agent, run) = cold_agent(&cfg, topo, 0)?;
    agent.stop(Duration::from_secs(60));
    let (top, by_dso) = report(&data)?;
    let _ = std::fs::remove_file(&data);
    Ok(Profile {
        title: format!(
            "agent cold programming, {} services x {} endpoints ({:.2} s under perf)",
            topo.services, topo.endpoints, run.total_secs
        ),
        method: format!(
            "perf record -e cpu-clock -F {FREQ} -- svc-agent run ... (whole process, user and kernel), flat profile"
        ),
        top,
        by_dso,
        note: None,
        delta_vs: None,
        delta: Vec::new(),
    })
}

/// The whole machine while `env`'s client runs a connect loop to `target`.
pub(crate) fn connect_loop(ctx: &Ctx, env: &mut ModeEnv, topo: &Topology, target: Target) -> Result<Profile> {
    let data = ctx.tmp.join(format!("perf-{}.data", env.mode.short()));
    let secs = 3u64;
    let mut perf = Command::new("perf");
    // Only the worker (client and backends, user and kernel, softirqs in
    // their context): other work on the machine stays out of the profile.
    perf.args(["record", "-q", "-e", "cpu-clock", "-F", FREQ, "-p", &env.worker.pid().to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::die_with_parent(&mut perf);
    let mut child = perf.spawn().context("spawn perf")?;
    let guard = cleanup::register(cleanup::Resource::Process(child.id()));
    let plan = ConnectPlan {
        topology: *topo,
        target,
        family: crate::addressing::Family::Inet,
        direct: env.mode == crate::modes::Mode::Direct,
        node: None,
        seed: 11,
        // Enough for the duration at any rate seen here (the sequence is
        // generated up front).
        count: 1_000_000,
        max_millis: secs * 1000,
        warmup: 0,
        getpeername: false,
        raw: false,
    };
    let answer = env.worker.call(&Request::Connect(plan));
    let _ = child.wait();
    guard.disarm();
    answer?;
    let (top, by_dso) = report(&data)?;
    let _ = std::fs::remove_file(&data);
    Ok(Profile {
        title: format!("{}: connect loop to the {}, {} services", env.mode.label(), target.label(), topo.services),
        method: format!(
            "perf record -e cpu-clock -F {FREQ} -p <worker> for {secs} s while its client loops (client and backend \
             threads, user and kernel), flat profile"
        ),
        top,
        by_dso,
        note: None,
        delta_vs: None,
        delta: Vec::new(),
    })
}

type Top = Vec<(f64, String, String)>;

/// Fills `p.delta` with the symbols whose share of samples grew most
/// against `reference` (e.g. ours against direct: where the extra time goes).
pub(crate) fn diff(p: &mut Profile, reference: &Profile) {
    let share = |prof: &Profile, sym: &str| prof.top.iter().find(|(_, _, s)| s == sym).map_or(0.0, |t| t.0);
    let mut delta: Vec<(f64, String)> = p
        .top
        .iter()
        .map(|(pct, _, sym)| (pct - share(reference, sym), sym.clone()))
        .filter(|(d, _)| *d > 0.0)
        .collect();
    delta.sort_by(|a, b| b.0.total_cmp(&a.0));
    delta.truncate(15);
    p.delta = delta;
    p.delta_vs = Some(reference.title.clone());
}

/// Flat profile by symbol (everything above 0.05%) and by shared object.
fn report(data: &Path) -> Result<(Top, Vec<(f64, String)>)> {
    let by_sym = sys::run(
        Command::new("perf")
            .args(["report", "-q", "--stdio", "--no-children", "--sort", "dso,sym", "--percent-limit", "0.05", "-i"])
            .arg(data),
    )?;
    let top = by_sym
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let pct = parts.next()?.trim_end_matches('%').parse().ok()?;
            let dso = parts.next()?.to_owned();
            let _kind = parts.next()?;
            let sym: Vec<&str> = parts.collect();
            Some((pct, dso, sym.join(" ")))
        })
        .collect();
    let by_dso = sys::run(
        Command::new("perf")
            .args(["report", "-q", "--stdio", "--no-children", "--sort", "dso", "--percent-limit", "0.5", "-i"])
            .arg(data),
    )?
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace();
        Some((parts.next()?.trim_end_matches('%').parse().ok()?, parts.next()?.to_owned()))
    })
    .collect();
    Ok((top, by_dso))
}
