//! The agent's side of the north-south flow table (`SVC_FLOWS`,
//! docs/north-south.md): sweeping expired entries, and dropping the UDP
//! flows of removed backends (kube-proxy's conntrack cleanup: a UDP client
//! would otherwise keep sending to a backend that is gone until its flow
//! times out). TCP flows keep their backend, as with conntrack.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use aya::maps::{HashMap, MapData, PerCpuArray};
use svc_common::{FlowKey4, FlowValue4, exempt::sock_stat, flow_flags, names, ns_stat, proto};

use super::{encode::socket_addr, family::Backend, maps::open_pinned_map, pins::PinLayout, udp_reset::Removed};
use crate::{
    error::{Error, Result},
    metrics::Metrics,
    sys,
};

/// The pinned flow table.
pub(crate) struct FlowTable {
    map: HashMap<MapData, FlowKey4, FlowValue4>,
}

impl FlowTable {
    /// Opens the pinned `SVC_FLOWS`.
    pub(crate) fn open(layout: &PinLayout) -> Result<Self> {
        let map = HashMap::try_from(open_pinned_map(layout, names::FLOWS)?).map_err(|e| Error::map(names::FLOWS, e))?;
        Ok(Self { map })
    }

    /// Deletes every entry expired at `now_ns`; returns how many. Each is
    /// read again just before its delete and kept if a packet refreshed
    /// it (or a new flow took its key) since the scan; the window left
    /// between that read and the delete is one syscall wide.
    pub(crate) fn sweep(&mut self, now_ns: u64) -> usize {
        let expired: Vec<(FlowKey4, u64)> = self
            .map
            .iter()
            .filter_map(std::result::Result::ok)
            .filter(|(k, v)| v.expired(k.proto, now_ns))
            .map(|(k, v)| (k, v.last_seen_ns))
            .collect();
        let mut swept = 0;
        for (key, seen) in &expired {
            let unchanged = self.map.get(key, 0).is_ok_and(|v| v.last_seen_ns == *seen);
            if unchanged && self.map.remove(key).is_ok() {
                swept += 1;
            }
        }
        swept
    }

    /// Deletes the UDP flows (both directions) from a frontend in `removed`
    /// to one of the backends it stopped using; returns how many flows.
    pub(crate) fn forget_backends(&mut self, removed: &[Removed]) -> usize {
        let gone = |frontend: SocketAddr, backend: SocketAddr| {
            removed.iter().any(|(fe, backends)| {
                fe.proto() == proto::UDP
                    && fe.socket_addr() == frontend
                    && backends.iter().any(|b| matches!(b, Backend::V4(_)) && b.socket_addr() == backend)
            })
        };
        let doomed: Vec<(FlowKey4, FlowValue4)> = self
            .map
            .iter()
            .filter_map(std::result::Result::ok)
            .filter(|(k, v)| {
                k.proto == proto::UDP
                    && v.flags & flow_flags::REPLY == 0
                    && gone(socket_addr(k.daddr, k.dport).into(), socket_addr(v.daddr, v.dport).into())
            })
            .collect();
        for (key, value) in &doomed {
            let reply = FlowKey4 {
                saddr: value.daddr,
                daddr: value.saddr,
                sport: value.dport,
                dport: value.sport,
                proto: key.proto,
                _pad: [0; 3],
            };
            // The original first: the programs recreate a missing reply
            // entry from a packet of the original direction, never the
            // original from a reply. Either may be gone already (LRU
            // eviction, expiry): a failed delete leaves nothing to undo.
            drop(self.map.remove(key));
            drop(self.map.remove(&reply));
        }
        doomed.len()
    }
}

/// How often the TC programs' packet counters are copied into the metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the housekeeping thread: every second it copies the programs'
/// counters (`SVC_NS_STATS`, `SVC_SOCK_STATS`) into the metrics; every
/// `interval` (`--flow-sweep-interval`) it deletes expired flow entries
/// (the programs already ignore them; the sweep returns their space
/// before the LRU has to evict live ones) and switches off the trace of a
/// tracer that is gone.
pub(crate) fn spawn_sweeper(layout: &PinLayout, interval: Duration, metrics: Arc<Metrics>) -> Result<()> {
    let mut table = FlowTable::open(layout)?;
    let mut trace = super::trace::TraceSwitch::open(layout)?;
    let stats: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(open_pinned_map(layout, names::NS_STATS)?).map_err(|e| Error::map(names::NS_STATS, e))?;
    let sock_stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open_pinned_map(layout, names::SOCK_STATS)?)
        .map_err(|e| Error::map(names::SOCK_STATS, e))?;
    std::thread::Builder::new()
        .name("flow-sweep".into())
        .spawn(move || {
            // Counters survive agent restarts (the map is pinned): the
            // first read is the baseline, only growth is counted.
            let mut seen = read_stats(&stats, ns_stat::COUNT);
            let mut sock_seen = read_stats(&sock_stats, sock_stat::COUNT);
            let mut since_sweep = Duration::ZERO;
            loop {
                std::thread::sleep(STATS_INTERVAL);
                let now = read_stats(&stats, ns_stat::COUNT);
                for (slot, (new, old)) in now.iter().zip(&seen).enumerate() {
                    metrics.north_south(slot as u32, new.saturating_sub(*old));
                }
                seen = now;
                let sock_now = read_stats(&sock_stats, sock_stat::COUNT);
                let skipped =
                    sock_now[sock_stat::EXEMPT as usize].saturating_sub(sock_seen[sock_stat::EXEMPT as usize]);
                metrics.socket_lb_skipped.inc_by(skipped);
                sock_seen = sock_now;
                since_sweep += STATS_INTERVAL;
                if since_sweep >= interval {
                    since_sweep = Duration::ZERO;
                    // (The same housekeeping turns off a dead tracer's trace.)
                    super::trace::clear_stale(&mut trace);
                    let swept = table.sweep(sys::monotonic_ns());
                    metrics.flows_expired.inc_by(swept as u64);
                    if swept > 0 {
                        tracing::debug!(entries = swept, "swept expired north-south flow entries");
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting the flow-sweep thread", e))?;
    Ok(())
}

/// The first `count` counters of a per-CPU array, summed over CPUs (0
/// where unreadable).
fn read_stats(stats: &PerCpuArray<MapData, u64>, count: u32) -> Vec<u64> {
    (0..count).map(|slot| stats.get(&slot, 0).map_or(0, |per_cpu| per_cpu.iter().sum())).collect()
}
