//! Everything a run measured, written as JSON (bench/results/) and turned
//! into the report. Numbers in the report come only from here.

use serde::{Deserialize, Serialize};

use crate::{
    addressing::Family,
    bpf::{MapMemory, ProgStats},
    config::Config,
    modes::{Loader, Mode},
    protocol::{BulkStats, ConnectStats, Target},
    stats::Summary,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) started_at: String,
    pub(crate) duration_secs: f64,
    pub(crate) command: String,
    pub(crate) machine: Machine,
    pub(crate) config: Config,
    pub(crate) datapath: Vec<DatapathResult>,
    pub(crate) control: ControlResult,
    /// Outside clients through NodePorts (absent in results written
    /// before the north-south bench existed).
    #[serde(default)]
    pub(crate) north_south: Vec<NorthSouthResult>,
    pub(crate) profiles: Vec<Profile>,
    /// Phases that failed (the run continues with the next phase and exits
    /// non-zero).
    pub(crate) errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpu_model: String,
    pub(crate) cpus: usize,
    pub(crate) memory_mib: u64,
    pub(crate) kernel: String,
    pub(crate) os: String,
    pub(crate) hypervisor: Option<String>,
    pub(crate) tools: Vec<(String, String)>,
    pub(crate) nf_conntrack_max: Option<String>,
    pub(crate) ipvs_available: bool,
    pub(crate) hw_counters: bool,
    /// Full commit hash of the tree the bench ran from.
    pub(crate) agent_commit: Option<String>,
    /// Whether that tree had changes not in the commit (None: unknown).
    #[serde(default)]
    pub(crate) dirty: Option<bool>,
    /// /proc/loadavg when the run started and ended: other work on the
    /// machine during the run shows here.
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
}

/// One (mode, client family, target) cell of a datapath size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cell {
    pub(crate) mode: Mode,
    #[serde(default)]
    pub(crate) family: Family,
    pub(crate) target: Target,
    pub(crate) rounds: Vec<ConnectStats>,
    /// Field-wise medians across rounds.
    pub(crate) connect: Summary,
    pub(crate) cycle: Summary,
    pub(crate) conns_per_sec: f64,
    pub(crate) client_cpu_ns_per_conn: f64,
    pub(crate) process_cpu_ns_per_conn: f64,
    pub(crate) samples: u64,
    pub(crate) errors: u64,
    pub(crate) slow: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BulkCell {
    pub(crate) mode: Mode,
    pub(crate) rounds: Vec<BulkStats>,
    pub(crate) gbit_per_sec: f64,
    pub(crate) client_cpu_secs_per_gib: f64,
}

/// In-kernel cost of one program in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProgCost {
    pub(crate) program: String,
    pub(crate) scenario: String,
    pub(crate) calls: u64,
    pub(crate) ns_per_call: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BpfResult {
    pub(crate) costs: Vec<ProgCost>,
    pub(crate) programs: Vec<ProgStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DatapathResult {
    pub(crate) services: u32,
    /// Conntrack was active in every mode's namespace (`DatapathSize::conntrack`).
    #[serde(default)]
    pub(crate) conntrack: bool,
    pub(crate) endpoints: u32,
    pub(crate) modes: Vec<Mode>,
    #[serde(default)]
    pub(crate) families: Vec<Family>,
    /// Seconds to program each mode for this size (agent: start to in sync).
    pub(crate) setup_secs: Vec<(Mode, f64)>,
    pub(crate) cells: Vec<Cell>,
    pub(crate) bulk: Vec<BulkCell>,
    pub(crate) bpf: Option<BpfResult>,
    /// Highest nf_conntrack_count seen after a round, per netfilter mode.
    pub(crate) conntrack_peak: Vec<(Mode, u64)>,
    /// Profiles taken because the connect-overhead target was missed.
    pub(crate) profiles: Vec<Profile>,
}

/// An outside client through NodePorts at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NorthSouthResult {
    pub(crate) services: u32,
    pub(crate) endpoints: u32,
    pub(crate) modes: Vec<Mode>,
    pub(crate) setup_secs: Vec<(Mode, f64)>,
    /// Connect latency and rate per (mode, target); family IPv4.
    pub(crate) cells: Vec<Cell>,
    pub(crate) bulk: Vec<BulkCell>,
    /// Our TC programs' cost per run (one run per packet) in each scenario.
    pub(crate) tc: Vec<ProgCost>,
    /// Highest nf_conntrack_count in the node namespace, per netfilter mode.
    pub(crate) conntrack_peak: Vec<(Mode, u64)>,
    /// Measurements that failed (the rest of the section stands).
    #[serde(default)]
    pub(crate) failures: Vec<String>,
}

/// Our agent's side of a cold programming run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AgentRun {
    /// Start -> `dataplane in sync`.
    pub(crate) total_secs: f64,
    /// Start -> programs loaded, attached and pinned.
    pub(crate) attach_secs: Option<f64>,
    /// Start -> the source loaded (manifest: files read and parsed;
    /// kube: every kind listed).
    pub(crate) source_secs: Option<f64>,
    /// The agent's own `apply_us` of the first sync (model + map writes).
    pub(crate) apply_secs: Option<f64>,
    pub(crate) rss_peak_kib: u64,
    /// RSS when each phase ended (KiB): attached, source loaded, in sync.
    pub(crate) rss_at_phases_kib: Vec<(String, u64)>,
    pub(crate) maps: Vec<MapMemory>,
    pub(crate) frontends: usize,
}

/// One system's cold programming at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ColdResult {
    pub(crate) system: ColdSystem,
    pub(crate) services: u32,
    pub(crate) endpoints: u32,
    /// Seconds per repetition; `None`: killed at the timeout.
    pub(crate) runs: Vec<Option<f64>>,
    pub(crate) timeout_secs: u64,
    /// Why it was not run.
    pub(crate) skipped: Option<String>,
    pub(crate) input_bytes: u64,
    pub(crate) agent: Vec<AgentRun>,
    pub(crate) agent_flags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ColdSystem {
    OursManifest,
    Baseline(Loader),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ChurnResult {
    pub(crate) services: u32,
    pub(crate) endpoints: u32,
    pub(crate) changes: u32,
    pub(crate) failures: u32,
    /// Milliseconds from the rename into the manifest dir to the frontend
    /// showing the new backend count.
    pub(crate) latency_ms: Vec<f64>,
    /// The agent's `apply_us` per change, in milliseconds.
    pub(crate) apply_ms: Vec<f64>,
    /// The manifest source's debounce (source code), for the breakdown.
    pub(crate) debounce_ms: Option<f64>,
    /// Agent VmRSS before the first change and after the last (KiB).
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
    /// Agent CPU time (user + system) spent over all changes, seconds.
    pub(crate) agent_cpu_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ControlResult {
    pub(crate) cold: Vec<ColdResult>,
    pub(crate) churn: Vec<ChurnResult>,
    pub(crate) kube_source: String,
    /// The shared-backends shape (absent from older results).
    #[serde(default)]
    pub(crate) shared: Option<SharedResult>,
    /// The Kubernetes source through a real API server (absent from
    /// older results).
    #[serde(default)]
    pub(crate) kube: Vec<KubeResult>,
}

/// The Kubernetes source at one size (`crate::kube`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KubeResult {
    pub(crate) services: u32,
    pub(crate) endpoints: u32,
    /// The objects' YAML size.
    pub(crate) input_bytes: u64,
    /// Writing every object to the API server (before the agent starts).
    pub(crate) load_secs: f64,
    /// The cold start (`source_secs`: start -> every kind listed).
    pub(crate) run: AgentRun,
    /// Endpoint additions, and the rate asked for (per second).
    pub(crate) changes: u32,
    pub(crate) rate: u32,
    pub(crate) achieved_rate: f64,
    /// API write (server-side apply) -> map visible, per change.
    pub(crate) latency_ms: Vec<f64>,
    /// The write's own share (until the API server answered).
    pub(crate) write_ms: Vec<f64>,
    /// The agent's `apply_us` of each batch during the changes.
    #[serde(default)]
    pub(crate) apply_ms: Vec<f64>,
    pub(crate) failures: u32,
    pub(crate) agent_flags: Vec<String>,
}

/// Many Services over one set of endpoints (`crate::shared`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SharedResult {
    pub(crate) services: u32,
    /// Endpoints of the one set every Service lists.
    pub(crate) endpoints: u32,
    pub(crate) input_bytes: u64,
    pub(crate) run: AgentRun,
    /// Single endpoint additions to one Service at a time.
    pub(crate) churn: ChurnResult,
    pub(crate) agent_flags: Vec<String>,
}

/// A profile of where time goes, for a missed target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) title: String,
    pub(crate) method: String,
    /// (percent, shared object, symbol)
    pub(crate) top: Vec<(f64, String, String)>,
    pub(crate) by_dso: Vec<(f64, String)>,
    pub(crate) note: Option<String>,
    /// Symbols whose share of samples grew most against a reference
    /// profile (`delta_vs`): percentage points, symbol.
    pub(crate) delta_vs: Option<String>,
    pub(crate) delta: Vec<(f64, String)>,
}
