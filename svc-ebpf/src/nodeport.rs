//! North-south: packets that enter the node from outside, to a NodePort,
//! external or load-balancer address (Cilium's `nodeport.h` shape, written
//! for this map layout). The TC programs on the node's devices (`tc_in`
//! on ingress, `tc_out` on egress) share these helpers:
//!
//! - a packet of a tracked flow (`SVC_FLOWS`, one entry per direction) is
//!   rewritten as its entry says;
//! - a new packet to a frontend gets a backend from the same helpers as
//!   the socket hooks ([`lb::select`]), with outside clients' rules (only
//!   external kinds; the `scope::EXTERNAL` twin first), and two flow
//!   entries; when the backend is reached through one of the node's own
//!   devices (another node), the source becomes that device's address and
//!   a port from [`snat_ports`] (SNAT), so the reply comes back here;
//! - a rewritten packet whose source changed is redirected out of the
//!   device the FIB names (the stack would drop a forwarded packet with a
//!   local source address); one with only a new destination goes on up
//!   the stack, which routes it to the (local) backend.
//!
//! IPv4 only, no IP options or fragments (passed untouched). docs/north-south.md.

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST,
        TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup as FibParams,
    },
    helpers::generated::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect_neigh},
    programs::TcContext,
};
use svc_common::{Backend4, FlowKey4, FlowValue4, fe_flags, flow_flags, proto, scope, snat_ports};

use crate::{
    family::{Family, V4},
    lb::{self, Client, Verdict},
    maps::{SVC_DEVICES, SVC_FLOWS},
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const AF_INET: u8 = 2;
/// IPv4 header field offsets (from the start of the IP header).
const IP_CSUM: usize = 10;
const IP_SADDR: usize = 12;
const IP_DADDR: usize = 16;
/// TCP flag bits (byte 13 of the header).
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
/// The TC verdicts, as the programs return them (the bindings' constant
/// type differs between targets).
#[allow(clippy::unnecessary_cast, reason = "u32 in some targets' bindings")]
const PASS: i32 = TC_ACT_OK as i32;
#[allow(clippy::unnecessary_cast, reason = "u32 in some targets' bindings")]
const DROP: i32 = TC_ACT_SHOT as i32;
/// SNAT port attempts before the packet is dropped.
const SNAT_ATTEMPTS: u16 = 8;

/// The fixed part of an IPv4 header, as on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
}

/// What the programs need of a packet.
#[derive(Clone, Copy)]
struct Packet {
    /// Its tuple, the flow table's key.
    key: FlowKey4,
    /// Offset of the L4 header.
    l4: usize,
    /// TCP flags (0 for UDP).
    tcp_flags: u8,
}

impl Packet {
    /// An IPv4 TCP or UDP packet's tuple, or `None` for anything else
    /// (other protocols, IP options are fine, fragments are not).
    #[inline(always)]
    fn parse(ctx: &TcContext) -> Option<Self> {
        let eth_proto: u16 = ctx.load(12).ok()?;
        if u16::from_be(eth_proto) != ETH_P_IP {
            return None;
        }
        let ip: Ipv4Hdr = ctx.load(ETH_HLEN).ok()?;
        let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
        // More-fragments or a fragment offset: not one the tuple describes.
        if ip.ver_ihl >> 4 != 4 || ihl < 20 || u16::from_be(ip.frag_off) & 0x3fff != 0 {
            return None;
        }
        if ip.proto != proto::TCP && ip.proto != proto::UDP {
            return None;
        }
        let l4 = ETH_HLEN + ihl;
        let ports: [u16; 2] = ctx.load(l4).ok()?;
        let tcp_flags = if ip.proto == proto::TCP { ctx.load::<u8>(l4 + 13).ok()? } else { 0 };
        let key = FlowKey4 {
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: ports[0],
            dport: ports[1],
            proto: ip.proto,
            _pad: [0; 3],
        };
        Some(Self { key, l4, tcp_flags })
    }

    /// Offset of the L4 checksum.
    #[inline(always)]
    const fn l4_csum(&self) -> usize {
        if self.key.proto == proto::TCP { self.l4 + 16 } else { self.l4 + 6 }
    }

    /// l4_csum_replace flags: UDP's checksum may be absent (zero) and
    /// must stay so.
    #[inline(always)]
    const fn l4_flags(&self) -> u64 {
        if self.key.proto == proto::UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 }
    }
}

/// A client outside the node: only the kinds of address that face
/// outside, never a ClusterIP or the host-only loopback frontend; its
/// affinity identity is its address (kube-proxy's ClientIP), tagged with
/// the top bit so it never equals a socket's network-namespace cookie.
struct Outside {
    addr: [u8; 4],
}

impl Client for Outside {
    #[inline(always)]
    fn accepts(&self, flags: u32) -> bool {
        let external = fe_flags::KIND_NODE_PORT | fe_flags::KIND_EXTERNAL_IP | fe_flags::KIND_LOAD_BALANCER;
        flags & external != 0 && flags & fe_flags::HOST_NS_ONLY == 0
    }

    #[inline(always)]
    fn affinity_id(&self) -> u64 {
        (1 << 63) | u64::from(u32::from_be_bytes(self.addr))
    }
}

/// The ingress program: tracked flows (both a client's packets and the
/// replies to SNATed ones arrive here), else new flows to frontends.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext) -> i32 {
    let Some(pkt) = Packet::parse(ctx) else { return PASS };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(entry) = tracked(&pkt, now) {
        return rewrite(ctx, &pkt, &entry, true);
    }
    new_flow(ctx, &pkt, now)
}

/// The egress program: replies of local backends to outside clients get
/// the frontend back as their source.
#[inline(always)]
pub(crate) fn egress(ctx: &TcContext) -> i32 {
    let Some(pkt) = Packet::parse(ctx) else { return PASS };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    match tracked(&pkt, now) {
        Some(entry) => rewrite(ctx, &pkt, &entry, false),
        None => PASS,
    }
}

/// The live entry for this packet's tuple, refreshed (last packet, TCP
/// state) and copied out; an expired one counts as absent.
#[inline(always)]
fn tracked(pkt: &Packet, now: u64) -> Option<FlowValue4> {
    let ptr = SVC_FLOWS.get_ptr_mut(pkt.key)?;
    // SAFETY: the element stays valid for this run (RCU); a concurrent
    // reuse of an LRU element can only make this copy stale, and every
    // field is then checked like any other entry's.
    let mut entry = unsafe { *ptr };
    if entry.expired(pkt.key.proto, now) {
        return None;
    }
    let mut flags = entry.flags;
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        flags |= flow_flags::CLOSING;
    }
    if entry.flags & flow_flags::REPLY != 0 && entry.flags & flow_flags::SEEN_REPLY == 0 {
        flags |= flow_flags::SEEN_REPLY;
        mark_replied(&entry, pkt.key.proto, now);
    }
    entry.flags = flags;
    entry.last_seen_ns = now;
    // SAFETY: as above; a plain store of the refreshed copy.
    unsafe {
        (*ptr).flags = flags;
        (*ptr).last_seen_ns = now;
    }
    Some(entry)
}

/// The first reply of a flow: its original-direction entry (the reverse
/// of what the reply becomes) learns that the flow is established.
#[inline(always)]
fn mark_replied(reply: &FlowValue4, proto: u8, now: u64) {
    let original = FlowKey4 {
        saddr: reply.daddr,
        daddr: reply.saddr,
        sport: reply.dport,
        dport: reply.sport,
        proto,
        _pad: [0; 3],
    };
    if let Some(ptr) = SVC_FLOWS.get_ptr_mut(original) {
        // SAFETY: valid element for this run; plain stores.
        unsafe {
            (*ptr).flags |= flow_flags::SEEN_REPLY;
            (*ptr).last_seen_ns = now;
        }
    }
}

/// A packet of no tracked flow: if it is for a frontend that serves
/// outside clients, pick a backend, record the flow, translate.
#[inline(always)]
fn new_flow(ctx: &TcContext, pkt: &Packet, now: u64) -> i32 {
    let k = &pkt.key;
    let client = Outside { addr: k.saddr };
    let dst = Backend4 { addr: k.daddr, port: k.dport, _pad: 0 };
    // The outside-only twin (externalTrafficPolicy: Local) first.
    let mut verdict = lb::select::<V4, Outside>(&client, &V4::key(dst, k.proto, scope::EXTERNAL));
    if matches!(verdict, Verdict::Pass) {
        verdict = lb::select::<V4, Outside>(&client, &V4::key(dst, k.proto, scope::ALL));
    }
    let (backend, svc_id) = match verdict {
        Verdict::Pass => return PASS,
        // No usable backend (none at all, or none on this node for
        // externalTrafficPolicy: Local): dropped, as kube-proxy does for
        // the latter (it rejects the former; an ICMP error is future work).
        Verdict::Refuse => return DROP,
        Verdict::Translate(b) => b,
    };
    let syn = if pkt.tcp_flags & TCP_SYN != 0 { flow_flags::TCP_SYN } else { 0 };
    // The source the backend sees: the client's own, or (backend behind
    // one of the node's devices: another node) that device's address and
    // a free port.
    let (src, sport, snat) = match snat_source(ctx, backend.addr) {
        Some(addr) => match claim_port(k, addr, &backend, svc_id, syn, now) {
            Some(port) => (addr, port, flow_flags::SNAT),
            None => return DROP,
        },
        None => {
            let reply_key = FlowKey4 {
                saddr: backend.addr,
                daddr: k.saddr,
                sport: backend.port,
                dport: k.sport,
                proto: k.proto,
                _pad: [0; 3],
            };
            let reply = reply_value(k, svc_id, flow_flags::REPLY | syn, now);
            if SVC_FLOWS.insert(reply_key, reply, 0).is_err() {
                return DROP;
            }
            (k.saddr, k.sport, 0)
        }
    };
    let original = FlowValue4 {
        saddr: src,
        daddr: backend.addr,
        sport,
        dport: backend.port,
        flags: snat | syn,
        svc_id,
        _pad: 0,
        last_seen_ns: now,
    };
    if SVC_FLOWS.insert(k, original, 0).is_err() {
        return DROP;
    }
    rewrite(ctx, pkt, &original, true)
}

/// The reply-direction entry of the flow `original` opened: replies leave
/// as if from the frontend, to the client.
#[inline(always)]
fn reply_value(original: &FlowKey4, svc_id: u32, flags: u32, now: u64) -> FlowValue4 {
    FlowValue4 {
        saddr: original.daddr,
        daddr: original.saddr,
        sport: original.dport,
        dport: original.sport,
        flags,
        svc_id,
        _pad: 0,
        last_seen_ns: now,
    }
}

/// The SNAT source address for a backend at `addr`: the address of the
/// node device the FIB sends it through, if that is one of ours (another
/// node behind it); `None` when it is reached otherwise (a local pod).
#[inline(always)]
fn snat_source(ctx: &TcContext, addr: [u8; 4]) -> Option<[u8; 4]> {
    let ifindex = fib_ifindex(ctx, [0; 4], addr)?;
    // SAFETY: the map value is copied out at once.
    let device = unsafe { SVC_DEVICES.get(ifindex) }.copied()?;
    (device.addr4 != [0; 4]).then_some(device.addr4)
}

/// Claims a free SNAT port for `original` -> `backend` by inserting the
/// reply-direction entry under it (BPF_NOEXIST: a port in use by another
/// flow to the same backend is skipped).
#[inline(always)]
fn claim_port(original: &FlowKey4, addr: [u8; 4], backend: &Backend4, svc_id: u32, syn: u32, now: u64) -> Option<u16> {
    // SAFETY: plain helper call.
    let start = unsafe { bpf_get_prandom_u32() } as u16 % snat_ports::COUNT;
    let reply = reply_value(original, svc_id, flow_flags::REPLY | flow_flags::SNAT | syn, now);
    for i in 0..SNAT_ATTEMPTS {
        let port = (snat_ports::FIRST + (start + i) % snat_ports::COUNT).to_be();
        let reply_key = FlowKey4 {
            saddr: backend.addr,
            daddr: addr,
            sport: backend.port,
            dport: port,
            proto: original.proto,
            _pad: [0; 3],
        };
        if SVC_FLOWS.insert(reply_key, reply, u64::from(BPF_NOEXIST)).is_ok() {
            return Some(port);
        }
    }
    None
}

/// The device the FIB sends `daddr` through (from this packet's device).
#[inline(always)]
fn fib_ifindex(ctx: &TcContext, saddr: [u8; 4], daddr: [u8; 4]) -> Option<u32> {
    // SAFETY: plain data.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    // SAFETY: valid context.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(saddr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(daddr);
    // SAFETY: helper on our context with a correctly sized buffer.
    let rc = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), &raw mut params, size_of::<FibParams>() as i32, 0) };
    // NO_NEIGH still names the device (the redirect resolves the neighbour).
    (rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) || rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH)).then_some(params.ifindex)
}

/// Rewrites the packet to `to`'s addresses and ports (checksums fixed up),
/// then delivers it: redirected out of the FIB's device when the source
/// changed at ingress, else on its way.
#[inline(always)]
fn rewrite(ctx: &TcContext, pkt: &Packet, to: &FlowValue4, ingress: bool) -> i32 {
    let k = &pkt.key;
    let ok = rewrite_addr(ctx, pkt, ETH_HLEN + IP_SADDR, k.saddr, to.saddr)
        && rewrite_addr(ctx, pkt, ETH_HLEN + IP_DADDR, k.daddr, to.daddr)
        && rewrite_port(ctx, pkt, pkt.l4, k.sport, to.sport)
        && rewrite_port(ctx, pkt, pkt.l4 + 2, k.dport, to.dport);
    if !ok {
        return DROP;
    }
    if !ingress || (k.saddr == to.saddr && k.sport == to.sport) {
        return PASS;
    }
    match fib_ifindex(ctx, to.saddr, to.daddr) {
        // SAFETY: plain helper call; no next-hop parameters (it looks the
        // neighbour up itself).
        Some(ifindex) => unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 },
        None => DROP,
    }
}

/// Replaces a 4-byte address at `offset` (IP and pseudo-header checksums).
#[inline(always)]
fn rewrite_addr(ctx: &TcContext, pkt: &Packet, offset: usize, from: [u8; 4], to: [u8; 4]) -> bool {
    if from == to {
        return true;
    }
    let (old, new) = (u64::from(u32::from_ne_bytes(from)), u64::from(u32::from_ne_bytes(to)));
    let l4_flags = pkt.l4_flags() | u64::from(BPF_F_PSEUDO_HDR) | 4;
    ctx.l4_csum_replace(pkt.l4_csum(), old, new, l4_flags).is_ok()
        && ctx.l3_csum_replace(ETH_HLEN + IP_CSUM, old, new, 4).is_ok()
        && ctx.store(offset, &to, 0).is_ok()
}

/// Replaces a port at `offset` (L4 checksum).
#[inline(always)]
fn rewrite_port(ctx: &TcContext, pkt: &Packet, offset: usize, from: u16, to: u16) -> bool {
    if from == to {
        return true;
    }
    ctx.l4_csum_replace(pkt.l4_csum(), u64::from(from), u64::from(to), pkt.l4_flags() | 2).is_ok()
        && ctx.store(offset, &to, 0).is_ok()
}
