//! The modes compared, each in its own network namespace with its own
//! worker process: direct (no Service), our dataplane (the agent attached
//! to a child cgroup the worker joins), and kube-proxy's iptables (nft and
//! legacy backends) and nftables layouts.

pub(crate) mod iptables;
pub(crate) mod nftables;
mod worker;

use std::{
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

pub(crate) use self::worker::Worker;
use crate::{
    addressing::{self, Family, ServiceSpec, Topology, UDP_PORT, UDP_VIP, UNUSED_VIP},
    agent::{self, Agent, AgentConfig},
    cgroup::Cgroup,
    cleanup, manifests,
    netns::Netns,
    protocol::{Request, Response, VerifyPlan, VerifyTarget},
    sys,
};

/// A datapath mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// Connect straight to a backend: no Service at all.
    Direct,
    /// Our socket-level dataplane.
    Ours,
    /// kube-proxy's iptables layout, iptables-nft backend (Debian's default).
    IptablesNft,
    /// kube-proxy's iptables layout, iptables-legacy backend.
    IptablesLegacy,
    /// kube-proxy's nftables layout.
    Nftables,
}

impl Mode {
    pub(crate) const ALL: [Self; 5] =
        [Self::Direct, Self::Ours, Self::IptablesNft, Self::IptablesLegacy, Self::Nftables];
    /// The baselines overhead is compared against.
    pub(crate) const BASELINES: [Self; 3] = [Self::IptablesNft, Self::IptablesLegacy, Self::Nftables];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct (no service)",
            Self::Ours => "ours (eBPF, socket)",
            Self::IptablesNft => "kube-proxy iptables (nft backend)",
            Self::IptablesLegacy => "kube-proxy iptables (legacy backend)",
            Self::Nftables => "kube-proxy nftables",
        }
    }

    /// Whether this mode translates connects of `family`: every mode
    /// serves IPv4 Services from either socket family (a v4-mapped connect
    /// is IPv4 on the wire, so netfilter's `ip` tables see it); only ours,
    /// direct and the nftables layout (which has its `ip6` table) are set up
    /// for IPv6 Services.
    pub(crate) fn serves(self, family: Family) -> bool {
        family != Family::Ipv6 || matches!(self, Self::Direct | Self::Ours | Self::Nftables)
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Ours => "ours",
            Self::IptablesNft => "ipt-nft",
            Self::IptablesLegacy => "ipt-legacy",
            Self::Nftables => "nft",
        }
    }
}

/// A ruleset loader: the command and the file format it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Loader {
    IptablesNft,
    IptablesLegacy,
    Nft,
}

impl Loader {
    /// The loader of a netfilter mode.
    pub(crate) fn of(mode: Mode) -> Option<Self> {
        match mode {
            Mode::IptablesNft => Some(Self::IptablesNft),
            Mode::IptablesLegacy => Some(Self::IptablesLegacy),
            Mode::Nftables => Some(Self::Nft),
            Mode::Direct | Mode::Ours => None,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::IptablesNft => "iptables-nft-restore",
            Self::IptablesLegacy => "iptables-legacy-restore",
            Self::Nft => "nft -f",
        }
    }

    /// The kube-proxy layout of `services` in this loader's input format;
    /// `ipv6`: also their IPv6 twins (the nftables layout only).
    pub(crate) fn ruleset(self, services: &[ServiceSpec], ipv6: bool) -> String {
        match self {
            Self::IptablesNft | Self::IptablesLegacy => iptables::ruleset(services),
            Self::Nft => nftables::ruleset(services, ipv6),
        }
    }

    fn command(self, file: &Path, noflush: bool) -> Result<Command> {
        Ok(match self {
            Self::IptablesNft | Self::IptablesLegacy => {
                let bin = if self == Self::IptablesNft { "iptables-nft-restore" } else { "iptables-legacy-restore" };
                let mut cmd = Command::new(bin);
                if noflush {
                    cmd.arg("--noflush");
                }
                cmd.stdin(std::fs::File::open(file)?);
                cmd
            }
            Self::Nft => {
                let mut cmd = Command::new("nft");
                cmd.arg("-f").arg(file).stdin(Stdio::null());
                cmd
            }
        })
    }

    /// Loads `file` into `netns`, returning how long the command ran, or
    /// `None` if it was still running after `timeout` (then killed).
    /// `noflush`: `iptables-restore --noflush`, as kube-proxy calls it
    /// (timed for cold programming; the datapath setup, into an empty
    /// namespace, loads the same rules without it, which iptables-nft does
    /// much faster).
    pub(crate) fn load(self, netns: &Netns, file: &Path, timeout: Duration, noflush: bool) -> Result<Option<Duration>> {
        let ns = netns.open()?;
        let mut cmd = self.command(file, noflush)?;
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        sys::in_netns(&mut cmd, &ns);
        sys::die_with_parent(&mut cmd);
        let start = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawn {}", self.label()))?;
        let guard = cleanup::register(cleanup::Resource::Process(child.id()));
        loop {
            if let Some(status) = child.try_wait()? {
                let took = start.elapsed();
                guard.disarm();
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    bail!("{} of {} failed ({status}): {}", self.label(), file.display(), err.trim());
                }
                return Ok(Some(took));
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                guard.disarm();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A 16-character base32 hash of `s`, the shape of kube-proxy's chain-name
/// hashes (which use SHA-256; any stable hash gives the same rules).
pub(crate) fn chain_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| s.bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    (0..16)
        .map(|i| {
            let bits = if i < 12 { a >> (i * 5) } else { b >> ((i - 12) * 5) };
            char::from(ALPHABET[(bits & 31) as usize])
        })
        .collect()
}

/// What every mode setup needs.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) agent_bin: PathBuf,
    pub(crate) run_id: String,
    pub(crate) tmp: PathBuf,
    pub(crate) client_cpu: usize,
    pub(crate) server_cpu: usize,
}

impl Ctx {
    /// A fresh directory under the run's temp dir.
    pub(crate) fn dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.tmp.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(dir)
    }
}

/// Agent flags for a size: the defaults where they fit, larger maps only
/// where the size needs them (an update needs room for old and new sets).
/// `dual_stack`: both families count against the one budget the flags set
/// (docs/maps.md), so the need doubles.
pub(crate) fn agent_capacity_flags(topo: &Topology, dual_stack: bool) -> Vec<String> {
    let families = if dual_stack { 2 } else { 1 };
    let ports = u64::from(topo.service_ports()) * families;
    let slots = topo.total_endpoints() * families;
    let mut flags = Vec::new();
    let fit =
        |need: u64, default: u32| -> Option<u64> { (need > u64::from(default)).then(|| need.next_power_of_two()) };
    if let Some(n) = fit(ports + 1024, svc_common::capacity::FRONTENDS) {
        flags.extend(["--max-frontends".to_owned(), n.to_string()]);
    }
    if let Some(n) = fit(ports + 1024, svc_common::capacity::META) {
        flags.extend(["--max-services".to_owned(), n.to_string()]);
    }
    if let Some(n) = fit(slots + 65_536, svc_common::capacity::BACKENDS) {
        flags.extend(["--max-backends".to_owned(), n.to_string()]);
    }
    // Every endpoint is a distinct backend: each gets a reverse owner.
    if let Some(n) = fit(slots + 1024, svc_common::capacity::BACKEND_REV) {
        flags.extend(["--max-reverse-owners".to_owned(), n.to_string()]);
    }
    flags
}

/// A table whose only rule matches on `ct state`: that is what registers
/// conntrack's hooks in a network namespace (CNI plugins and NetworkPolicy
/// rules do the same on a real node), so every packet of every mode is
/// tracked. It accepts everything.
const CONNTRACK_ON: &str = "table inet svc_bench_conntrack {\n\
    chain output {\n\
        type filter hook output priority 0; policy accept;\n\
        ct state established,related,new accept\n\
    }\n\
    chain input {\n\
        type filter hook input priority 0; policy accept;\n\
        ct state established,related,new accept\n\
    }\n\
}\n";

fn conntrack_on(netns: &Netns, ctx: &Ctx) -> Result<()> {
    let file = ctx.dir("conntrack")?.join(format!("{}.nft", netns.name()));
    std::fs::write(&file, CONNTRACK_ON)?;
    Loader::Nft
        .load(netns, &file, Duration::from_secs(60), true)?
        .context("nft did not load the conntrack table within 60 s")?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// One mode, set up for one size and ready to measure.
#[derive(Debug)]
pub(crate) struct ModeEnv {
    pub(crate) mode: Mode,
    pub(crate) worker: Worker,
    /// Our agent and its cgroup (ours only).
    pub(crate) agent: Option<(Agent, AgentConfig, Cgroup)>,
    /// How long programming the mode took (agent start to in sync, or the
    /// restore command), for the record.
    pub(crate) setup_secs: f64,
    // Dropped last: the worker and agent live in it.
    pub(crate) netns: Netns,
}

impl ModeEnv {
    /// Creates the namespace, programs the Services, starts the worker.
    /// `ipv6`: the Services are dual-stack (ours, nftables); `conntrack`:
    /// connection tracking is switched on in the namespace first.
    pub(crate) fn setup(mode: Mode, topo: &Topology, ctx: &Ctx, ipv6: bool, conntrack: bool) -> Result<Self> {
        let netns = Netns::create(format!("{}-{}", ctx.run_id, mode.short()))?;
        if conntrack {
            conntrack_on(&netns, ctx)?;
        }
        let services: Vec<ServiceSpec> = topo.all().collect();
        let mut agent = None;
        let setup_secs;
        match mode {
            Mode::Direct => setup_secs = 0.0,
            Mode::Ours => {
                let cgroup = Cgroup::create(&format!("{}-dp", ctx.run_id))?;
                let source = ctx.dir("dp-manifests")?;
                manifests::write_all(&source, topo, ipv6)?;
                let cfg = AgentConfig {
                    bin: ctx.agent_bin.clone(),
                    source,
                    cgroup: cgroup.path().to_owned(),
                    bpffs: agent::pin_dir(&ctx.run_id, "dp"),
                    extra: agent_capacity_flags(topo, ipv6),
                    wrapper: Vec::new(),
                    devices: "none".into(),
                    netns: None,
                };
                let mut a = Agent::start(&cfg)?;
                let (at, _) = a.wait_for(agent::IN_SYNC, Duration::from_secs(900))?;
                setup_secs = (at - a.started).as_secs_f64();
                agent = Some((a, cfg, cgroup));
            }
            Mode::IptablesNft | Mode::IptablesLegacy | Mode::Nftables => {
                let loader = Loader::of(mode).expect("a netfilter mode");
                let file = ctx.dir(&format!("rules-{}", mode.short()))?.join("rules");
                std::fs::write(&file, loader.ruleset(&services, ipv6))?;
                let took = loader
                    .load(&netns, &file, Duration::from_secs(1800), false)?
                    .with_context(|| format!("{} did not finish within 30 min", loader.label()))?;
                let _ = std::fs::remove_file(&file);
                setup_secs = took.as_secs_f64();
            }
        }
        let cgroup = agent.as_ref().map(|(_, cfg, _): &(Agent, AgentConfig, Cgroup)| cfg.cgroup.clone());
        let worker = Worker::spawn(&netns, cgroup.as_deref(), ctx)?;
        Ok(Self { mode, worker, agent, setup_secs, netns })
    }

    /// Fails loudly unless this mode translates connects of `family`
    /// correctly: the last and the first Service reach (all of) their own
    /// backends, an untranslated address fails, UDP replies come back from
    /// the VIP.
    pub(crate) fn verify(&mut self, topo: &Topology, family: Family) -> Result<()> {
        let mut targets = Vec::new();
        let expect = |b: &[SocketAddrV4]| b.iter().map(|b| family.accepted(*b)).collect::<Vec<_>>();
        for i in [topo.services - 1, 0] {
            let svc = topo.service(i);
            if self.mode == Mode::Direct {
                targets.extend(svc.backends.iter().map(|b| VerifyTarget {
                    addr: family.dial(*b),
                    expect: expect(std::slice::from_ref(b)),
                    connects: 1,
                }));
            } else {
                targets.push(VerifyTarget {
                    addr: family.dial(SocketAddrV4::new(svc.vip, svc.port)),
                    expect: expect(&svc.backends),
                    connects: 20 * svc.backends.len() as u32,
                });
            }
        }
        let udp = if self.mode == Mode::Direct {
            Topology::extras()[1].backends[0]
        } else {
            SocketAddrV4::new(UDP_VIP, UDP_PORT)
        };
        let plan = VerifyPlan {
            targets,
            unused: family.dial(SocketAddrV4::new(UNUSED_VIP, addressing::SERVICE_PORT)),
            udp: family.dial(udp),
        };
        match self.worker.call(&Request::Verify(plan))? {
            Response::Verified => Ok(()),
            Response::Error(e) => bail!("{} is not translating {} correctly: {e}", self.mode.label(), family.label()),
            other => bail!("unexpected answer {other:?}"),
        }
    }
}
