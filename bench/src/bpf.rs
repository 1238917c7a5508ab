//! Reading the agent's pinned programs and maps from the outside: frontend
//! lookups (is a change visible yet?), per-program run time and verifier
//! statistics, and each map's kernel memory.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{HashMap, Map, MapData, MapInfo},
    programs::ProgramInfo,
};
use serde::{Deserialize, Serialize};
use svc_common::{Frontend, FrontendKey4, names};

/// Program names as pinned under `<bpffs>/progs/` (docs/maps.md).
pub(crate) const PROGRAMS: [&str; 9] = names::SOCK_PROGRAMS;

/// The pinned SVC_FRONTENDS map.
#[derive(Debug)]
pub(crate) struct Frontends(HashMap<MapData, FrontendKey4, Frontend>);

impl Frontends {
    pub(crate) fn open(bpffs: &Path) -> Result<Self> {
        let path = bpffs.join("maps").join(names::FRONTENDS);
        let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
        let map = Map::from_map_data(data).context("SVC_FRONTENDS")?;
        Ok(Self(HashMap::try_from(map).context("SVC_FRONTENDS type")?))
    }

    /// The frontend for TCP `vip:port`, if programmed.
    pub(crate) fn get(&self, vip: std::net::Ipv4Addr, port: u16) -> Option<Frontend> {
        let key = FrontendKey4 {
            addr: vip.octets(),
            port: svc_common::port_be(port),
            proto: svc_common::proto::TCP,
            scope: svc_common::scope::ALL,
        };
        self.0.get(&key, 0).ok()
    }

    /// Number of frontends.
    pub(crate) fn len(&self) -> usize {
        self.0.keys().filter(Result::is_ok).count()
    }
}

/// One program's kernel statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ProgStats {
    pub(crate) name: String,
    pub(crate) run_time_ns: u64,
    pub(crate) run_count: u64,
    pub(crate) verified_insns: Option<u32>,
    pub(crate) xlated_bytes: Option<u32>,
    pub(crate) jited_bytes: u32,
}

/// Statistics of every pinned program.
pub(crate) fn program_stats(bpffs: &Path) -> Result<Vec<ProgStats>> {
    PROGRAMS
        .iter()
        .map(|name| {
            let path = bpffs.join("progs").join(name);
            let info = ProgramInfo::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
            Ok(prog_stats(name, &info))
        })
        .collect()
}

/// Statistics of the TC programs attached to `device` (through their
/// link pins, `<bpffs>/links/svc_tc_{in,out}-DEVICE`, docs/north-south.md).
pub(crate) fn tc_program_stats(bpffs: &Path, device: &str) -> Result<Vec<ProgStats>> {
    ["svc_tc_in", "svc_tc_out"]
        .iter()
        .map(|name| {
            let path = bpffs.join("links").join(format!("{name}-{device}"));
            let link = aya::programs::links::PinnedLink::from_pin(&path)
                .with_context(|| format!("open {}", path.display()))?;
            let id = aya::programs::links::FdLink::from(link).info().context("link info")?.program_id();
            let info = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| p.id() == id)
                .with_context(|| format!("program {id} of {}", path.display()))?;
            Ok(prog_stats(name, &info))
        })
        .collect()
}

fn prog_stats(name: &str, info: &ProgramInfo) -> ProgStats {
    ProgStats {
        name: name.to_owned(),
        run_time_ns: info.run_time().as_nanos() as u64,
        run_count: info.run_count(),
        verified_insns: info.verified_instruction_count(),
        xlated_bytes: info.size_translated(),
        jited_bytes: info.size_jitted(),
    }
}

/// Each program's cost in one scenario: its run-time delta over its
/// run-count delta between two readings (programs that did not run are
/// left out).
pub(crate) fn cost_deltas(before: &[ProgStats], after: &[ProgStats], scenario: &str) -> Vec<crate::results::ProgCost> {
    before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| {
            let calls = a.run_count.saturating_sub(b.run_count);
            (calls > 0).then(|| crate::results::ProgCost {
                program: a.name.clone(),
                scenario: scenario.to_owned(),
                calls,
                ns_per_call: a.run_time_ns.saturating_sub(b.run_time_ns) as f64 / calls as f64,
            })
        })
        .collect()
}

/// One map's kernel memory (`memlock` in its fdinfo) and size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MapMemory {
    pub(crate) name: String,
    pub(crate) memlock_bytes: u64,
    pub(crate) max_entries: u32,
}

/// Memory of every pinned map.
pub(crate) fn map_memory(bpffs: &Path) -> Result<Vec<MapMemory>> {
    names::ALL
        .iter()
        .map(|name| {
            let path = bpffs.join("maps").join(name);
            let info = MapInfo::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
            let fd = info.fd().with_context(|| format!("fd of {name}"))?;
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
            let memlock = fdinfo
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Ok(MapMemory { name: (*name).to_owned(), memlock_bytes: memlock, max_entries: info.max_entries() })
        })
        .collect()
}

/// Turns on `kernel.bpf_stats_enabled` and restores the old value when the
/// guard drops (also on failure or Ctrl-C). Off during latency rounds:
/// the accounting itself costs time on every program run.
pub(crate) fn enable_stats() -> Result<crate::cleanup::Guard> {
    const KEY: &str = "kernel/bpf_stats_enabled";
    let old = crate::sys::read_sysctl(KEY)?;
    let guard = crate::cleanup::register(crate::cleanup::Resource::Sysctl { path: KEY.into(), old });
    crate::sys::write_sysctl(KEY, "1")?;
    Ok(guard)
}

/// A trace running (as `svc-agent trace` runs one) for as long as this
/// lives: `SVC_TRACE_ON[0]` holds this process's pid and a thread drains
/// `SVC_TRACE`, so the programs pay for writing every event.
pub(crate) struct Tracing {
    switch: aya::maps::Array<MapData, u32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    drain: Option<std::thread::JoinHandle<u64>>,
}

impl Tracing {
    pub(crate) fn start(bpffs: &Path) -> Result<Self> {
        let open = |name: &str| -> Result<Map> {
            let path = bpffs.join("maps").join(name);
            Map::from_map_data(MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?)
                .context(name.to_owned())
        };
        let mut switch: aya::maps::Array<MapData, u32> = aya::maps::Array::try_from(open(names::TRACE_ON)?)?;
        let mut ring: aya::maps::RingBuf<MapData> = aya::maps::RingBuf::try_from(open(names::TRACE)?)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let drain = std::thread::spawn(move || {
            let mut events = 0u64;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                while ring.next().is_some() {
                    events += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            events
        });
        switch.set(0, std::process::id(), 0)?;
        Ok(Self { switch, stop, drain: Some(drain) })
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(e) = self.switch.set(0, 0, 0) {
            eprintln!("bench: switching the trace off: {e}");
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}
