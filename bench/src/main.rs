//! `svc-bench`: measures the dataplane against kube-proxy's iptables and
//! nftables layouts on this machine, in one run, and writes the results
//! (JSON) and the report generated from them. `cargo xtask bench` builds
//! the release agent and runs this.
//!
//! Layout: `datapath` (connect latency, bulk, program cost) and `control`
//! (cold programming, single changes, memory) drive the `modes`, each in
//! its own `netns` with a `worker` process; `report` renders `results`.
// The report is written with `writeln!` into Strings (which cannot fail)
// in hundreds of places, and teardown is best effort by design.
#![expect(
    clippy::let_underscore_must_use,
    reason = "writeln! into a String cannot fail; bench teardown is best effort"
)]

mod addressing;
mod agent;
mod bpf;
mod cgroup;
mod cleanup;
mod config;
mod control;
mod datapath;
mod kube;
mod machine;
mod manifests;
mod modes;
mod netns;
mod northsouth;
mod profile;
mod protocol;
mod report;
mod results;
mod shared;
mod stats;
mod sys;
mod worker;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    agent::AgentConfig,
    config::Config,
    modes::Ctx,
    results::{ColdSystem, Results},
};

#[derive(Debug, Parser)]
#[command(name = "svc-bench", about = "Benchmarks against kube-proxy's iptables and nftables layouts")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every measurement and write results and report (root only).
    Run(RunArgs),
    /// Re-render the report from a results file.
    Report {
        /// A results JSON file.
        #[arg(long)]
        results: PathBuf,
        /// Where to write the report.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the kube-proxy layout the bench loads for a size.
    Rules {
        /// iptables or nftables.
        #[arg(long, value_parser = ["iptables", "nftables"])]
        layout: String,
        #[arg(long)]
        services: u32,
        #[arg(long, default_value_t = 3)]
        endpoints: u32,
    },
    /// Profile the agent's cold programming at one size (prints the
    /// profile as JSON; what `run` does for a missed target).
    ProfileAgent {
        /// The release svc-agent binary.
        #[arg(long)]
        agent: PathBuf,
        #[arg(long)]
        services: u32,
        #[arg(long, default_value_t = 10)]
        endpoints: u32,
    },
    /// Internal: the per-mode client and backends.
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The release svc-agent binary.
    #[arg(long)]
    agent: PathBuf,
    /// Small sizes and few rounds (a smoke run of every path).
    #[arg(long)]
    quick: bool,
    /// Output directory: REPORT.md and results/ go here.
    #[arg(long)]
    out: PathBuf,
    /// Never run perf, even for missed targets.
    #[arg(long)]
    no_profile: bool,
    /// Run only this phase (a partial run for development: the report
    /// says which phases are missing).
    #[arg(long, value_enum)]
    only: Option<Phase>,
}

/// The phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Datapath,
    NorthSouth,
    Control,
    /// The Kubernetes source through a real API server.
    Kube,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Worker(args) => worker::main(&args),
        Cmd::Report { results, out } => rerender(&results, &out),
        Cmd::Run(args) => run(&args),
        Cmd::ProfileAgent { agent, services, endpoints } => profile_agent(&agent, services, endpoints),
        Cmd::Rules { layout, services, endpoints } => {
            let topo = addressing::Topology { services, endpoints };
            let all: Vec<_> = topo.all().collect();
            let loader = if layout.starts_with("nftables") { modes::Loader::Nft } else { modes::Loader::IptablesNft };
            print!("{}", loader.ruleset(&all, layout == "nftables-dual-stack"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("svc-bench: {e:#}");
            cleanup::undo_all();
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench creates network namespaces, cgroups and BPF pins: run it as root");
    }
    for tool in ["ip", "iptables-nft-restore", "iptables-legacy-restore", "nft"] {
        if sys::run(std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            bail!("{tool} is missing (cargo xtask setup installs it)");
        }
    }
    cleanup::install_signal_handler();
    let mut cfg = if args.quick { Config::quick() } else { Config::full() };
    if let Some(only) = args.only {
        if only != Phase::Datapath {
            cfg.datapath_sizes.clear();
        }
        if only != Phase::NorthSouth {
            cfg.north_south_sizes.clear();
        }
        if only != Phase::Control {
            cfg.control_sizes.clear();
            cfg.churn.clear();
            cfg.shared = None;
        }
        if only != Phase::Control && only != Phase::Kube {
            cfg.kube_sizes.clear();
        }
    }
    let run_id = sys::run_id();
    let tmp = std::env::temp_dir().join(&run_id);
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = cleanup::register(cleanup::Resource::Dir(tmp.clone()));
    let cpus = sys::online_cpus();
    let ctx = Ctx {
        agent_bin: args.agent.canonicalize().with_context(|| format!("agent binary {}", args.agent.display()))?,
        run_id,
        tmp,
        client_cpu: cpus.saturating_sub(1),
        server_cpu: 0,
    };
    let start = Instant::now();
    let started_at = sys::utc_string(sys::unix_now());
    let machine = machine::describe();
    let profile = !args.no_profile && profile::available();

    // A failed phase is recorded and the run goes on, so that a long run
    // still reports what it measured; the exit status is non-zero.
    let mut errors = Vec::new();
    let mut datapath = Vec::new();
    for size in &cfg.datapath_sizes {
        match datapath::run(&cfg, size, &ctx, profile) {
            Ok(r) => datapath.push(r),
            Err(e) => {
                eprintln!("bench: datapath at {} services FAILED: {e:#}", size.services);
                errors.push(format!("datapath at {} services: {e:#}", size.services));
            }
        }
    }
    let mut north_south = Vec::new();
    for &services in &cfg.north_south_sizes {
        match northsouth::run(&cfg, services, &ctx) {
            Ok(r) => {
                errors.extend(r.failures.iter().map(|f| format!("north-south at {services} services: {f}")));
                north_south.push(r);
            }
            Err(e) => {
                eprintln!("bench: north-south at {services} services FAILED: {e:#}");
                errors.push(format!("north-south at {services} services: {e:#}"));
            }
        }
    }
    let control = control::run(&cfg, &ctx, &mut errors);
    let mut profiles = Vec::new();
    if profile {
        control_profiles(&cfg, &ctx, &control, &mut profiles);
    }

    let mut machine = machine;
    machine.loadavg_end = machine::loadavg();
    let results = Results {
        started_at: started_at.clone(),
        duration_secs: start.elapsed().as_secs_f64(),
        command: if cfg.quick { "cargo xtask bench --quick".into() } else { "cargo xtask bench".into() },
        machine,
        config: cfg,
        datapath,
        control,
        north_south,
        profiles,
        errors,
    };
    write_outputs(&results, &args.out, &started_at)?;
    cleanup::undo_all();
    if !results.errors.is_empty() {
        bail!("{} phase(s) failed (see the report): {}", results.errors.len(), results.errors.join("; "));
    }
    Ok(())
}

fn profile_agent(agent: &Path, services: u32, endpoints: u32) -> Result<()> {
    cleanup::install_signal_handler();
    let run_id = sys::run_id();
    let tmp = std::env::temp_dir().join(&run_id);
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = cleanup::register(cleanup::Resource::Dir(tmp.clone()));
    let ctx = Ctx { agent_bin: agent.canonicalize()?, run_id, tmp, client_cpu: 1, server_cpu: 0 };
    let p = agent_profile(&ctx, &addressing::Topology { services, endpoints })?;
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}

/// The agent's cold programming of `topo` under perf, with its own
/// cgroup, manifests and pins.
fn agent_profile(ctx: &Ctx, topo: &addressing::Topology) -> Result<results::Profile> {
    let cgroup = cgroup::Cgroup::create(&format!("{}-prof", ctx.run_id))?;
    let source = ctx.dir("prof-manifests")?;
    manifests::write_all(&source, topo, false)?;
    let agent_cfg = AgentConfig {
        bin: ctx.agent_bin.clone(),
        source,
        cgroup: cgroup.path().to_owned(),
        bpffs: agent::pin_dir(&ctx.run_id, "prof"),
        extra: modes::agent_capacity_flags(topo, false),
        wrapper: Vec::new(),
        devices: "none".into(),
        netns: None,
    };
    profile::agent_cold(ctx, agent_cfg, topo)
}

/// Profiles the agent's cold programming at the target size if it missed
/// the time or memory target (best effort).
fn control_profiles(cfg: &Config, ctx: &Ctx, control: &results::ControlResult, out: &mut Vec<results::Profile>) {
    let Some(c) =
        control.cold.iter().find(|c| c.system == ColdSystem::OursManifest && c.services == cfg.target_services)
    else {
        return;
    };
    let slow = c.runs.iter().flatten().any(|s| *s > report::COLD_TARGET_SECS);
    let big = c.agent.iter().any(|a| a.rss_peak_kib as f64 / 1024.0 > report::RSS_TARGET_MIB);
    if !slow && !big {
        return;
    }
    eprintln!("bench: cold programming target missed at {} services; profiling the agent", c.services);
    let topo = addressing::Topology { services: c.services, endpoints: c.endpoints };
    match agent_profile(ctx, &topo) {
        Ok(p) => out.push(p),
        Err(e) => eprintln!("bench: profiling failed: {e:#}"),
    }
}

fn write_outputs(results: &Results, out: &Path, started_at: &str) -> Result<()> {
    let dir = out.join("results");
    std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    let stamp = started_at.replace(':', "");
    let name = if results.config.quick { format!("quick-{stamp}.json") } else { format!("{stamp}.json") };
    std::fs::write(dir.join(&name), &json)?;
    std::fs::write(dir.join("latest.json"), &json)?;
    let report = report::render(results, &format!("results/{name}"));
    std::fs::write(out.join("REPORT.md"), report)?;
    eprintln!(
        "bench: done in {:.1} min; wrote {} and {}",
        results.duration_secs / 60.0,
        out.join("REPORT.md").display(),
        dir.join(&name).display()
    );
    Ok(())
}

fn rerender(results: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let parsed: Results = serde_json::from_str(&text).context("parse results")?;
    let name = results.file_name().map_or_else(|| "results.json".into(), |n| n.to_string_lossy().into_owned());
    std::fs::write(out, report::render(&parsed, &format!("results/{name}")))?;
    Ok(())
}
