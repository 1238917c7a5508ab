//! Command line (contract: docs/cli.md and ../shared/docs/spec.md).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use svc_common::capacity;

use crate::model::ServiceCidrs;

/// Default pin directory.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/svc";

/// Socket-level Kubernetes Service dataplane agent.
#[derive(Debug, Parser)]
#[command(name = "svc-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, attach and pin the programs, then keep the maps in sync with
    /// the source until stopped (stopping leaves the dataplane serving).
    Run(Box<RunArgs>),
    /// Print frontends, backends and affinity entries from the pinned maps.
    Status(StatusArgs),
    /// Detach the programs and remove every pin.
    Cleanup(CleanupArgs),
    /// Stream the socket programs' translations (connect, sendmsg,
    /// recvmsg, getpeername) while it runs, like `cilium monitor -t
    /// trace-sock`.
    Trace(TraceArgs),
    /// The self-check's probe (internal): wait for a line on stdin, then
    /// connect to ADDR.
    #[command(hide = true)]
    ProbeConnect { addr: std::net::SocketAddrV4 },
}

/// `svc-agent run`. A flag given twice takes its last value (as with
/// kube-proxy's flags), so a wrapper can append overrides.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct RunArgs {
    /// `kube` for the Kubernetes API, or a directory of YAML/JSON manifests.
    #[arg(long)]
    pub source: String,
    /// kubeconfig for `--source kube` (default: in-cluster, then $KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (for internalTrafficPolicy and the Node object).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// This node's zone, for topology-aware routing with `--source DIR`
    /// (the Kubernetes source reads the Node's zone label).
    #[arg(long)]
    pub zone: Option<String>,
    /// cgroup v2 directory to attach to (default: the cgroup v2 mount).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The cgroup v2 directory kubelet's `kubepods` hierarchy is under
    /// (kubelet's `--cgroup-root`, as seen by the agent), where the pods
    /// that opt out of socket translation are looked for (default: `--cgroup`).
    #[arg(long)]
    pub kubelet_cgroup_root: Option<PathBuf>,
    /// bpffs directory for pins.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Ranges for Services without `spec.clusterIP` (`--source DIR` only):
    /// one CIDR per family, comma-separated, the first the primary family
    /// (as kube-apiserver's `--service-cluster-ip-range`), e.g.
    /// `10.96.0.0/16,fd00:96::/108`.
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: ServiceCidrs,
    /// Range for NodePort ports without `nodePort` (`--source DIR` only).
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Which local addresses are node addresses for NodePort: `primary`
    /// (the default-route interfaces' addresses, else every interface's),
    /// or comma-separated CIDRs. Dummy interfaces (IPVS's kube-ipvs0) never
    /// count.
    #[arg(long, default_value = "primary")]
    pub nodeport_addresses: crate::source::node::NodePortAddresses,
    /// Devices whose incoming packets are translated for clients outside
    /// the node (TC programs): comma-separated names, `auto` (the
    /// default-route devices) or `none`.
    #[arg(long, default_value = "auto")]
    pub devices: crate::dataplane::devices::DeviceSelection,
    /// How often expired north-south flow entries are deleted.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub flow_sweep_interval: u64,
    /// How long a backend's reverse-owner entry (SVC_BE_REV) outlives the
    /// backend's removal from its Services: a TCP connection translated
    /// without per-socket storage shows its ClusterIP in getpeername() for
    /// at least this long after its endpoint left (docs/maps.md).
    /// (At most 30 days.)
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
    pub reverse_linger: u64,
    /// Serve Prometheus metrics, /readyz and /healthz here.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// /healthz fails once a received change has waited this many seconds
    /// without being programmed (kube-proxy: twice its sync period).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub healthz_timeout: u64,
    /// How often the agent runs its self-check (`status --check`; /readyz
    /// and `svc_agent_self_check_*` show the result); 0: never.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub self_check_interval: u64,
    /// Map capacities.
    #[command(flatten)]
    pub capacity: CapacityArgs,
}

fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?}: expected FIRST-LAST"))?;
    let a: u16 = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let b: u16 = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("{s:?}: expected 1 <= FIRST <= LAST"));
    }
    Ok(a..=b)
}

/// Map capacities (used when the maps are created; pinned maps keep theirs).
#[derive(Debug, Clone, Copy, Args)]
pub struct CapacityArgs {
    /// Frontends (address x port x protocol).
    #[arg(long, default_value_t = capacity::FRONTENDS)]
    pub max_frontends: u32,
    /// Backend slots over all sets (an update briefly holds old and new set).
    #[arg(long, default_value_t = capacity::BACKENDS)]
    pub max_backends: u32,
    /// Reverse-owner entries (SVC_BE_REV, SVC_BE_REV6): backends whose
    /// connected sockets need no per-socket storage; beyond it they keep
    /// storage (slower, never wrong).
    #[arg(long, default_value_t = capacity::BACKEND_REV)]
    pub max_reverse_owners: u32,
    /// Backend membership entries (session-affinity frontends only).
    #[arg(long, default_value_t = capacity::BACKEND_INDEX)]
    pub max_backend_index: u32,
    /// Session affinity entries (LRU).
    #[arg(long, default_value_t = capacity::AFFINITY)]
    pub max_affinity: u32,
    /// Reverse translation entries (LRU).
    #[arg(long, default_value_t = capacity::REV_NAT)]
    pub max_revnat: u32,
    /// Service ports.
    #[arg(long, default_value_t = capacity::META)]
    pub max_services: u32,
    /// North-south flow table entries, two per flow (LRU).
    #[arg(long, default_value_t = capacity::FLOWS)]
    pub max_flows: u32,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// One JSON document (docs/cli.md).
    Json,
}

/// `svc-agent status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// bpffs directory the agent pins to.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Instead: check that the programs run where they should (pins,
    /// attachment at `--cgroup`, a probe connect from a child cgroup) and
    /// exit non-zero with the reasons if not (docs/cli.md).
    #[arg(long)]
    pub check: bool,
    /// The cgroup the agent attaches to, for `--check` (default: the
    /// cgroup v2 mount, as `run`).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

/// `svc-agent trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// bpffs directory the agent pins to.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// Only this Service's frontends (`namespace/name`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
    /// Only sockets of this cgroup (its directory; the exact cgroup, not
    /// its descendants).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Only this protocol.
    #[arg(long, value_enum)]
    pub protocol: Option<TraceProto>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// One line per event, or one JSON object per line.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `--protocol` of `trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TraceProto {
    Tcp,
    Udp,
}

impl TraceProto {
    /// The IANA number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => svc_common::proto::TCP,
            Self::Udp => svc_common::proto::UDP,
        }
    }
}

/// `svc-agent cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// bpffs directory the agent pins to.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
}

impl From<&CapacityArgs> for crate::dataplane::loader::MapSizes {
    fn from(args: &CapacityArgs) -> Self {
        Self {
            frontends: args.max_frontends,
            backends: args.max_backends,
            reverse_owners: args.max_reverse_owners,
            backend_index: args.max_backend_index,
            affinity: args.max_affinity,
            revnat: args.max_revnat,
            services: args.max_services,
            flows: args.max_flows,
        }
    }
}
