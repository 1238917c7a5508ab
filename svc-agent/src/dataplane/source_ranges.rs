//! `loadBalancerSourceRanges` in `SVC_LB_SRC` (an LPM trie; the layout
//! is in `svc_common::SourceRangeData`): the TC programs drop a new flow
//! from outside the node to a restricted load-balancer frontend unless
//! the client is in one of its ranges.
//!
//! The controller hands over the complete wanted set after each batch that
//! changed it; this writes what is missing and deletes what is no longer
//! wanted. It runs after the batch's frontends are written, so a new
//! load-balancer address is open to every client for that moment; a
//! removed restriction goes with its frontend. IPv4 only, as the TC path.
//! In-cluster clients (the socket path) are not restricted: at `connect()`
//! an unbound socket's source address is not chosen yet (written in
//! docs/north-south.md).

use std::{collections::BTreeMap, net::IpAddr};

use aya::maps::{MapData, lpm_trie::Key, lpm_trie::LpmTrie};
use svc_common::{SourceRangeData, names, port_be, source_range};

use super::{maps::open_pinned_map, pins::PinLayout};
use crate::{
    error::{Error, Result},
    model::SourceRanges as Wanted,
};

/// One trie entry: (prefix length, data) -> value.
type Entry = ((u32, SourceRangeData), u8);

/// The pinned `SVC_LB_SRC` and what it holds.
pub(crate) struct SourceRangeTable {
    map: LpmTrie<MapData, SourceRangeData, u8>,
    written: BTreeMap<(u32, SourceRangeData), u8>,
}

impl SourceRangeTable {
    /// Opens the pinned map and reads what an earlier agent left in it.
    pub(crate) fn open(layout: &PinLayout) -> Result<Self> {
        let map: LpmTrie<MapData, SourceRangeData, u8> = LpmTrie::try_from(open_pinned_map(layout, names::LB_SOURCES)?)
            .map_err(|e| Error::map(names::LB_SOURCES, e))?;
        let written = map
            .iter()
            .filter_map(std::result::Result::ok)
            .map(|(key, value)| ((key.prefix_len(), key.data()), value))
            .collect();
        Ok(Self { map, written })
    }

    /// Makes the map hold exactly `wanted`; logs (and keeps going past)
    /// entries the kernel refuses.
    pub(crate) fn apply<'a>(&mut self, wanted: impl Iterator<Item = &'a Wanted>) {
        let want: BTreeMap<(u32, SourceRangeData), u8> = wanted.flat_map(entries).collect();
        for (&(prefix, data), &value) in &want {
            if self.written.get(&(prefix, data)) == Some(&value) {
                continue;
            }
            match self.map.insert(&Key::new(prefix, data), value, 0) {
                Ok(()) => {
                    self.written.insert((prefix, data), value);
                }
                Err(e) => tracing::error!("loadBalancerSourceRanges: writing {names}: {e}", names = names::LB_SOURCES),
            }
        }
        let stale: Vec<(u32, SourceRangeData)> =
            self.written.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for (prefix, data) in stale {
            match self.map.remove(&Key::new(prefix, data)) {
                Ok(()) => {
                    self.written.remove(&(prefix, data));
                }
                Err(e) => tracing::warn!("loadBalancerSourceRanges: deleting from {}: {e}", names::LB_SOURCES),
            }
        }
    }
}

/// The trie entries of one restricted frontend: its DENY marker and one
/// ALLOW entry per IPv4 range (an IPv6 frontend has none: the TC path is
/// IPv4 only).
fn entries(w: &Wanted) -> Vec<Entry> {
    let IpAddr::V4(frontend) = w.frontend.ip() else { return Vec::new() };
    let base = SourceRangeData {
        addr: frontend.octets(),
        port: port_be(w.frontend.port()),
        proto: w.proto.number(),
        _pad: 0,
        client: [0; 4],
    };
    let mut out = vec![((source_range::FRONTEND_BITS, base), source_range::DENY)];
    for range in w.ranges.iter() {
        if let IpAddr::V4(net) = range.network() {
            let prefix = source_range::FRONTEND_BITS + u32::from(range.prefix_len());
            out.push(((prefix, SourceRangeData { client: net.octets(), ..base }), source_range::ALLOW));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Proto;

    #[test]
    fn a_restricted_frontend_has_a_marker_and_one_entry_per_range() {
        let w = Wanted {
            frontend: "203.0.113.10:80".parse().unwrap(),
            proto: Proto::Tcp,
            ranges: ["198.51.100.0/24".parse().unwrap(), "192.0.2.7/32".parse().unwrap()].into(),
        };
        let got = entries(&w);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0.0, 64);
        assert_eq!(got[0].1, source_range::DENY);
        assert_eq!((got[1].0.0, got[1].0.1.client, got[1].1), (88, [198, 51, 100, 0], source_range::ALLOW));
        assert_eq!((got[2].0.0, got[2].0.1.client), (96, [192, 0, 2, 7]));
        assert!(got.iter().all(|e| e.0.1.addr == [203, 0, 113, 10] && e.0.1.port == 80u16.to_be()));
    }
}
