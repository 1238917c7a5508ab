//! The agent's side of the north-south flow table (`SVC_FLOWS`,
//! docs/north-south.md): sweeping expired entries, and dropping the UDP
//! flows of removed backends (kube-proxy's conntrack cleanup: a UDP client
//! would otherwise keep sending to a backend that is gone until its flow
//! times out). TCP flows keep their backend, as with conntrack.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use aya::maps::{HashMap, MapData};
use svc_common::{FlowKey4, FlowValue4, flow_flags, names, proto};

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

    /// Deletes every entry expired at `now_ns`; returns how many.
    pub(crate) fn sweep(&mut self, now_ns: u64) -> usize {
        let expired: Vec<FlowKey4> = self
            .map
            .iter()
            .filter_map(std::result::Result::ok)
            .filter(|(k, v)| v.expired(k.proto, now_ns))
            .map(|(k, _)| k)
            .collect();
        expired.iter().filter(|k| self.map.remove(k).is_ok()).count()
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
            // Either may be gone already (LRU eviction, expiry): a failed
            // delete leaves nothing to undo.
            drop(self.map.remove(&reply));
            drop(self.map.remove(key));
        }
        doomed.len()
    }
}

/// Starts the sweeper thread, deleting expired entries every `interval`
/// (`--flow-sweep-interval`): the programs already ignore them; the sweep
/// returns their space before the LRU has to evict live ones.
pub(crate) fn spawn_sweeper(layout: &PinLayout, interval: Duration, metrics: Arc<Metrics>) -> Result<()> {
    let mut table = FlowTable::open(layout)?;
    std::thread::Builder::new()
        .name("flow-sweep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let swept = table.sweep(sys::monotonic_ns());
                metrics.flows_expired.inc_by(swept as u64);
                if swept > 0 {
                    tracing::debug!(entries = swept, "swept expired north-south flow entries");
                }
            }
        })
        .map_err(|e| Error::io("starting the flow-sweep thread", e))?;
    Ok(())
}
