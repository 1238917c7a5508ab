//! North-south (TC) map types: the flow table of packets that enter the
//! node from outside (`SVC_FLOWS`) and the devices the TC programs run on
//! (`SVC_DEVICES`). docs/north-south.md has the design.

use bytemuck::{Pod, Zeroable};

/// One direction of a flow as it is on the wire: the key of `SVC_FLOWS`.
/// Addresses are octets and ports network byte order, as in the packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey4 {
    /// Source address.
    pub saddr: [u8; 4],
    /// Destination address.
    pub daddr: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: [u8; 3],
}

/// What to do with a packet of one direction of a tracked flow: rewrite
/// its addresses and ports to these. Each flow has two entries: the
/// original direction (client -> frontend becomes [SNAT address ->]
/// backend) and the reply direction (backend -> client or SNAT address
/// becomes frontend -> client).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowValue4 {
    /// New source address.
    pub saddr: [u8; 4],
    /// New destination address.
    pub daddr: [u8; 4],
    /// New source port.
    pub sport: u16,
    /// New destination port.
    pub dport: u16,
    /// [`flow_flags`] bits.
    pub flags: u32,
    /// The Service port ([`crate::FrontendOf::svc_id`]), for `status`
    /// and for dropping the flows of a removed backend.
    pub svc_id: u32,
    /// Always zero.
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` of the last packet in either direction seen by
    /// this entry (CLOCK_MONOTONIC).
    pub last_seen_ns: u64,
}

/// Bits of [`FlowValue4::flags`].
pub mod flow_flags {
    /// The entry translates the reply direction.
    pub const REPLY: u32 = 1 << 0;
    /// The source is rewritten to this node's address (a backend on
    /// another node, `externalTrafficPolicy: Cluster`).
    pub const SNAT: u32 = 1 << 1;
    /// A TCP SYN opened the flow.
    pub const TCP_SYN: u32 = 1 << 2;
    /// A reply packet was seen (TCP: the handshake completed).
    pub const SEEN_REPLY: u32 = 1 << 3;
    /// A FIN or RST was seen: the flow is closing.
    pub const CLOSING: u32 = 1 << 4;
}

/// Flow lifetimes after the last packet, in seconds (Cilium's defaults:
/// its `bpf-ct-timeout-*` settings). An expired entry is treated as absent
/// by the programs and deleted by the agent's sweep.
pub mod flow_timeout {
    /// An established TCP flow.
    pub const TCP_ESTABLISHED: u64 = 21_600;
    /// A TCP flow that has not seen a reply yet.
    pub const TCP_SYN: u64 = 60;
    /// A TCP flow after FIN or RST.
    pub const TCP_CLOSING: u64 = 10;
    /// A UDP flow.
    pub const UDP: u64 = 60;
}

impl FlowValue4 {
    /// Seconds this entry lives after its last packet.
    #[inline(always)]
    #[must_use]
    pub const fn lifetime_secs(&self, proto: u8) -> u64 {
        if proto != crate::proto::TCP {
            return flow_timeout::UDP;
        }
        if self.flags & flow_flags::CLOSING != 0 {
            flow_timeout::TCP_CLOSING
        } else if self.flags & flow_flags::SEEN_REPLY != 0 {
            flow_timeout::TCP_ESTABLISHED
        } else {
            flow_timeout::TCP_SYN
        }
    }

    /// Whether the entry has expired at `now_ns`. A `last_seen_ns` after
    /// `now_ns` is not: a program on another CPU that read the clock later
    /// refreshed the entry while this one ran (both directions of a busy
    /// flow are refreshed by every packet, on whichever CPU it arrives), and
    /// a wrapping difference there would call a live flow expired: its
    /// packet would leave untranslated and the connection be reset.
    #[inline(always)]
    #[must_use]
    pub const fn expired(&self, proto: u8, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_seen_ns) > self.lifetime_secs(proto) * 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_refreshed_after_the_readers_clock_is_live() {
        let entry = FlowValue4 { last_seen_ns: 1_000_000_500, flags: flow_flags::SEEN_REPLY, ..Default::default() };
        // Another CPU refreshed it 500 ns after this reader's clock.
        assert!(!entry.expired(crate::proto::TCP, 1_000_000_000));
        assert!(!entry.expired(crate::proto::TCP, 1_000_000_500 + 21_600 * 1_000_000_000));
        assert!(entry.expired(crate::proto::TCP, 1_000_000_501 + 21_600 * 1_000_000_000));
        let udp = FlowValue4 { last_seen_ns: 10, ..Default::default() };
        assert!(!udp.expired(crate::proto::UDP, 5));
        assert!(udp.expired(crate::proto::UDP, 11 + 60 * 1_000_000_000));
    }
}

/// The data of a `SVC_LB_SRC` key (an LPM trie: `prefix_len` bits of it
/// count): a load-balancer frontend, then a client address prefix. The
/// agent writes, per frontend with `loadBalancerSourceRanges`, a marker
/// with prefix length 64 (the frontend alone) and value
/// [`source_range::DENY`], and one entry per range with prefix length
/// 64 + its length and value [`source_range::ALLOW`]: a lookup with the
/// full 96 bits finds the longest match, so an allowed client gets ALLOW,
/// any other client of a restricted frontend DENY, and a frontend without
/// ranges nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct SourceRangeData {
    /// Frontend address.
    pub addr: [u8; 4],
    /// Frontend port (network byte order).
    pub port: u16,
    /// IANA protocol number.
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
    /// Client address (the range's network).
    pub client: [u8; 4],
}

/// Values of `SVC_LB_SRC`.
pub mod source_range {
    /// The frontend's marker: clients in none of its ranges are dropped.
    pub const DENY: u8 = 0;
    /// A range of allowed clients.
    pub const ALLOW: u8 = 1;
    /// Bits of a key that name the frontend.
    pub const FRONTEND_BITS: u32 = 64;
}

/// The TC programs' packet counters: one slot each of `SVC_NS_STATS` (a
/// per-CPU array of `u64`), summed over CPUs by the agent for its metrics.
pub mod ns_stat {
    /// The first packet of a new flow, translated.
    pub const NEW_FLOW: u32 = 0;
    /// A packet of a tracked flow, translated.
    pub const TRANSLATED: u32 = 1;
    /// Dropped: the frontend has no usable backend for outside clients.
    pub const DROP_NO_BACKEND: u32 = 2;
    /// Dropped: no free SNAT port for the backend.
    pub const DROP_NO_SNAT_PORT: u32 = 3;
    /// Dropped: the backend (or the client, for a reply) has no route.
    pub const DROP_NO_ROUTE: u32 = 4;
    /// Dropped: the flow table refused an entry.
    pub const DROP_FLOW_TABLE: u32 = 5;
    /// Dropped: rewriting the packet failed.
    pub const DROP_REWRITE: u32 = 6;
    /// Passed untouched because the programs cannot track it (IP
    /// fragments, IPv4 packets of other protocols, non-IPv4).
    pub const UNTRACKED: u32 = 7;
    /// Dropped: the client is outside the frontend's
    /// `loadBalancerSourceRanges`.
    pub const DROP_SOURCE_RANGE: u32 = 8;
    /// Number of slots.
    pub const COUNT: u32 = 9;
    /// The metric label of each slot: `result` for new_flow, translated
    /// and untracked, the `reason` of a drop for the others.
    pub const NAMES: [&str; COUNT as usize] = [
        "new_flow",
        "translated",
        "no_backend",
        "no_snat_port",
        "no_route",
        "flow_table",
        "rewrite",
        "untracked",
        "source_range",
    ];
}

/// A device the TC programs run on (`SVC_DEVICES`, keyed by ifindex).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct DeviceInfo {
    /// The device's IPv4 address: the source of SNATed packets it sends
    /// (all zero: none, no SNAT through this device).
    pub addr4: [u8; 4],
    /// Always zero.
    pub _pad: u32,
}

/// The source ports SNAT uses, `[first, first + count)`: above the
/// kernel's default ephemeral range (32768-60999), so they do not collide
/// with the node's own connections.
pub mod snat_ports {
    /// First port.
    pub const FIRST: u16 = 61_000;
    /// Number of ports.
    pub const COUNT: u16 = 4_536;
}

const _: () = {
    assert!(size_of::<FlowKey4>() == 16);
    assert!(size_of::<FlowValue4>() == 32);
    assert!(size_of::<DeviceInfo>() == 8);
    assert!(size_of::<SourceRangeData>() == 12);
    assert!(snat_ports::FIRST as u32 + snat_ports::COUNT as u32 == 65_536);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, no padding (bytemuck::Pod proves it).
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::FlowValue4 {}
    unsafe impl aya::Pod for super::DeviceInfo {}
    unsafe impl aya::Pod for super::SourceRangeData {}
}
