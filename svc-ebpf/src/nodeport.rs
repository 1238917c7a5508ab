//! North-south: packets that enter the node from outside, to a NodePort,
//! external or load-balancer address (Cilium's `nodeport.h` shape, written
//! for this map layout). The TC programs on the node's devices (`tc_in`
//! on ingress, `tc_out` on egress) share these helpers:
//!
//! - a packet of a tracked flow (`SVC_FLOWS`, one entry per direction) is
//!   rewritten as its entry says;
//! - a new packet to a frontend gets a backend from the same helpers as
//!   the socket hooks ([`lb::select`]), with outside clients' rules (only
//!   external kinds; the `scope::EXTERNAL` twin where the frontend announces one), and two flow
//!   entries; when the backend is reached through one of the node's own
//!   devices (another node), the source becomes that device's address and
//!   a port from [`snat_ports`] (SNAT), so the reply comes back here;
//! - a rewritten packet whose source changed is redirected out of the
//!   device the FIB names (the stack would drop a forwarded packet with a
//!   local source address); one with only a new destination goes on up
//!   the stack, which routes it to the (local) backend.
//!
//! IPv4 over Ethernet only; fragments and other protocols pass untouched.
//! docs/north-south.md.

use aya_ebpf::btf_maps::lpm_trie::Key;
use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST,
        TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC, bpf_fib_lookup as FibParams,
    },
    helpers::generated::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect_neigh},
    programs::TcContext,
};
use svc_common::{
    Backend4, FlowKey4, FlowValue4, SourceRangeData, fe_flags, flow_flags, ns_stat, proto, scope, snat_ports,
    source_range,
};

use crate::{
    family::{Family, V4},
    lb::{self, Admit, Client, Verdict},
    maps::{SVC_DEVICES, SVC_FLOWS, SVC_LB_SRC, SVC_NS_STATS},
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
const TCP_ACK: u8 = 0x10;
/// The TC verdicts, as the programs return them (the bindings' constant
/// type differs between targets): a translated packet goes on (`PASS`,
/// tcx's TCX_PASS); one that is not ours goes to the next program on the
/// device (`NEXT`, TCX_NEXT: a CNI's programs keep running); `DROP`.
#[allow(clippy::unnecessary_cast, reason = "u32 in some targets' bindings")]
const PASS: i32 = TC_ACT_OK as i32;
const NEXT: i32 = TC_ACT_UNSPEC;
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

/// A client outside the node, by the tuple of its packet: only the kinds
/// of address that face outside, never a ClusterIP or the host-only
/// loopback frontend; the outside-only twin where the frontend has one
/// (`externalTrafficPolicy: Local`); `loadBalancerSourceRanges` where the
/// frontend is restricted. Its affinity identity is its address
/// (kube-proxy's ClientIP), tagged with the top bit so it never equals a
/// socket's network-namespace cookie.
struct Outside {
    key: FlowKey4,
    /// Looking up the twin already (it has no twin of its own).
    in_twin: bool,
}

impl Client for Outside {
    #[inline(always)]
    fn accepts(&self, flags: u32) -> bool {
        let external = fe_flags::KIND_NODE_PORT | fe_flags::KIND_EXTERNAL_IP | fe_flags::KIND_LOAD_BALANCER;
        flags & external != 0 && flags & fe_flags::HOST_NS_ONLY == 0
    }

    #[inline(always)]
    fn admit(&self, flags: u32) -> Admit {
        if !self.accepts(flags) {
            return Admit::Pass;
        }
        if flags & fe_flags::EXTERNAL_TWIN != 0 && !self.in_twin {
            return Admit::Twin;
        }
        if flags & fe_flags::SOURCE_RANGES != 0 && !source_allowed(&self.key) {
            return Admit::Deny;
        }
        Admit::Serve
    }

    #[inline(always)]
    fn affinity_id(&self) -> u64 {
        (1 << 63) | u64::from(u32::from_be_bytes(self.key.saddr))
    }
}

/// The ingress program: tracked flows (both a client's packets and the
/// replies to SNATed ones arrive here), else new flows to frontends.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext) -> i32 {
    let Some(pkt) = Packet::parse(ctx) else { return icmp_error(ctx, true).unwrap_or_else(untracked) };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(entry) = tracked(&pkt, now) {
        return rewrite(ctx, &pkt, &entry, true, ns_stat::TRANSLATED);
    }
    new_flow(ctx, &pkt, now)
}

/// The egress program: replies of local backends to outside clients get
/// the frontend back as their source.
#[inline(always)]
pub(crate) fn egress(ctx: &TcContext) -> i32 {
    let Some(pkt) = Packet::parse(ctx) else { return icmp_error(ctx, false).unwrap_or_else(untracked) };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    match tracked(&pkt, now) {
        Some(entry) => rewrite(ctx, &pkt, &entry, false, ns_stat::TRANSLATED),
        None => NEXT,
    }
}

/// An ICMP error about a packet of a tracked flow (fragmentation needed,
/// port unreachable, time exceeded). Its quote is the packet as
/// translated, which its original sender never sent, so the flow entry of
/// the quote's reverse tuple (the entry the answer to the quoted packet
/// would match) says what the quote must become: source = the entry's
/// destination, destination = the entry's source; the error then goes to
/// the entry's destination. Three cases are ours:
/// - leaving the node (`tc_out`), about a client's packet to a local
///   backend (a reply entry without SNAT): the node or the backend
///   complains to the client, whose quote gets the frontend back;
/// - arriving (`tc_in`) at our SNAT address, about a client's packet to a
///   backend on another node (a reply entry with SNAT): sent on to the
///   client, redirected like a SNATed reply;
/// - arriving (`tc_in`) at a frontend, about a reply the client's side
///   could not take (an original entry; a router with a smaller MTU
///   towards the client): sent on to the backend, whose quote gets its own
///   reply back (backend -> its client address or our SNAT address).
///
/// When the quoted packet's destination sent the error itself (a backend's
/// port unreachable), its source becomes the frontend the client knows.
/// `None`: not such a packet.
#[inline(always)]
fn icmp_error(ctx: &TcContext, ingress: bool) -> Option<i32> {
    const ICMP: u8 = 1;
    const DEST_UNREACH: u8 = 3;
    const TIME_EXCEEDED: u8 = 11;
    let eth_proto: u16 = ctx.load(12).ok()?;
    if u16::from_be(eth_proto) != ETH_P_IP {
        return None;
    }
    let outer: Ipv4Hdr = ctx.load(ETH_HLEN).ok()?;
    if outer.proto != ICMP || u16::from_be(outer.frag_off) & 0x3fff != 0 {
        return None;
    }
    let icmp = ETH_HLEN + usize::from(outer.ver_ihl & 0x0f) * 4;
    let icmp_type: u8 = ctx.load(icmp).ok()?;
    if icmp_type != DEST_UNREACH && icmp_type != TIME_EXCEEDED {
        return None;
    }
    let inner_ip = icmp + 8;
    let inner: Ipv4Hdr = ctx.load(inner_ip).ok()?;
    let inner_ihl = usize::from(inner.ver_ihl & 0x0f) * 4;
    // An error goes back to the quoted packet's sender.
    if inner_ihl < 20 || (inner.proto != proto::TCP && inner.proto != proto::UDP) || inner.saddr != outer.daddr {
        return None;
    }
    let inner_l4 = inner_ip + inner_ihl;
    let ports: [u16; 2] = ctx.load(inner_l4).ok()?;
    let ptr = SVC_FLOWS.get_ptr(reverse(inner.saddr, inner.daddr, ports[0], ports[1], inner.proto))?;
    // SAFETY: copied out at once.
    let entry = unsafe { *ptr };
    let (reply, snat) = (entry.flags & flow_flags::REPLY != 0, entry.flags & flow_flags::SNAT != 0);
    if ingress == (reply && !snat) {
        return None;
    }
    let quote = Quote { icmp_csum: icmp + 2, ip_csum: inner_ip + IP_CSUM };
    let ok = quote.addr(ctx, inner_ip + IP_SADDR, inner.saddr, entry.daddr)
        && quote.addr(ctx, inner_ip + IP_DADDR, inner.daddr, entry.saddr)
        && ctx.load::<u16>(quote.ip_csum).is_ok_and(|check| quote.field(ctx, inner.check, check))
        && quote.port(ctx, inner_l4, ports[0], entry.dport)
        && quote.port(ctx, inner_l4 + 2, ports[1], entry.sport)
        && outer_addr(ctx, ETH_HLEN + IP_DADDR, outer.daddr, entry.daddr)
        && (!reply || outer.saddr != inner.daddr || outer_addr(ctx, ETH_HLEN + IP_SADDR, outer.saddr, entry.saddr));
    if !ok {
        return Some(drop_for(ns_stat::DROP_REWRITE));
    }
    count(ns_stat::TRANSLATED);
    if !(ingress && reply) {
        return Some(PASS);
    }
    // To the client, from a source that may now be this node's own
    // address: out of the FIB's device directly, as a SNATed reply goes.
    let Some(ifindex) = fib_ifindex(ctx, [0; 4], entry.daddr) else { return Some(drop_for(ns_stat::DROP_NO_ROUTE)) };
    // SAFETY: plain helper call (the neighbour is looked up by the helper).
    Some(unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 })
}

/// Checksum offsets of an ICMP error's quote: the ICMP checksum covers the
/// quote's bytes, the quoted IP header has its own. (The quoted L4
/// checksum is left alone: no stack checks it in an error.)
struct Quote {
    icmp_csum: usize,
    ip_csum: usize,
}

impl Quote {
    /// Replaces a quoted address (both checksums).
    #[inline(always)]
    fn addr(&self, ctx: &TcContext, offset: usize, from: [u8; 4], to: [u8; 4]) -> bool {
        if from == to {
            return true;
        }
        let (old, new) = (u64::from(u32::from_ne_bytes(from)), u64::from(u32::from_ne_bytes(to)));
        ctx.l3_csum_replace(self.ip_csum, old, new, 4).is_ok()
            && ctx.l4_csum_replace(self.icmp_csum, old, new, 4).is_ok()
            && ctx.store(offset, &to, 0).is_ok()
    }

    /// Accounts, in the ICMP checksum, for a quoted 2-byte field that
    /// changes (or changed) from `from` to `to`.
    #[inline(always)]
    fn field(&self, ctx: &TcContext, from: u16, to: u16) -> bool {
        from == to || ctx.l4_csum_replace(self.icmp_csum, u64::from(from), u64::from(to), 2).is_ok()
    }

    /// Replaces a quoted port (the ICMP checksum).
    #[inline(always)]
    fn port(&self, ctx: &TcContext, offset: usize, from: u16, to: u16) -> bool {
        from == to || (self.field(ctx, from, to) && ctx.store(offset, &to, 0).is_ok())
    }
}

/// Replaces an address of the outer IP header (its checksum; ICMP has no
/// pseudo-header).
#[inline(always)]
fn outer_addr(ctx: &TcContext, offset: usize, from: [u8; 4], to: [u8; 4]) -> bool {
    if from == to {
        return true;
    }
    let (old, new) = (u64::from(u32::from_ne_bytes(from)), u64::from(u32::from_ne_bytes(to)));
    ctx.l3_csum_replace(ETH_HLEN + IP_CSUM, old, new, 4).is_ok() && ctx.store(offset, &to, 0).is_ok()
}

/// Adds one to counter `slot` (`svc_common::ns_stat`) of this CPU.
#[inline(always)]
fn count(slot: u32) {
    if let Some(counter) = SVC_NS_STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's own slot; programs do not migrate mid-run.
        unsafe { *counter += 1 };
    }
}

/// A packet the programs cannot track: counted, passed on.
#[inline(always)]
fn untracked() -> i32 {
    count(ns_stat::UNTRACKED);
    NEXT
}

/// A packet dropped for `reason` (a `ns_stat` slot).
#[inline(always)]
fn drop_for(reason: u32) -> i32 {
    count(reason);
    DROP
}

/// The reverse of a tuple: the key of the other direction's entry, whose
/// packets look like `v` turned around.
#[inline(always)]
const fn reverse(saddr: [u8; 4], daddr: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey4 {
    FlowKey4 { saddr: daddr, daddr: saddr, sport: dport, dport: sport, proto, _pad: [0; 3] }
}

/// The live entry for this packet's tuple, refreshed (last packet, TCP
/// state, in both directions' entries) and copied out. An expired entry,
/// or a closing one that a new SYN reuses, counts as absent.
#[inline(always)]
fn tracked(pkt: &Packet, now: u64) -> Option<FlowValue4> {
    let k = &pkt.key;
    let ptr = SVC_FLOWS.get_ptr_mut(pkt.key)?;
    // SAFETY: the element stays valid for this run (RCU); a concurrent
    // reuse of an LRU element can only make this copy stale, and every
    // field is then checked like any other entry's.
    let entry = unsafe { *ptr };
    if entry.expired(k.proto, now) {
        return None;
    }
    let syn_only = pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if syn_only && entry.flags & flow_flags::CLOSING != 0 {
        return None;
    }
    let mut bits = 0;
    if pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        bits |= flow_flags::CLOSING;
    }
    if entry.flags & flow_flags::REPLY != 0 {
        bits |= flow_flags::SEEN_REPLY;
    }
    // SAFETY: as above. Only the new bits are or-ed into the live element
    // (not the copy written back), so a concurrent update's bits stay.
    unsafe {
        (*ptr).flags |= bits;
        (*ptr).last_seen_ns = now;
    }
    // The other direction lives as long as this one: a one-way flow (UDP
    // to a NodePort, no replies) must not lose its reply entry, which
    // holds its SNAT port. An evicted reply entry is recreated from the
    // original direction (it is this packet's tuple turned around); if
    // another flow took its key meanwhile, this flow starts over. A
    // missing original is never recreated from a reply: the agent deletes
    // a flow original first (a removed UDP backend), and a reply still in
    // flight must not bring it back.
    let peer_key = reverse(entry.saddr, entry.daddr, entry.sport, entry.dport, k.proto);
    match SVC_FLOWS.get_ptr_mut(peer_key) {
        // SAFETY: a valid element for this run; plain stores of new bits.
        Some(peer) => unsafe {
            (*peer).flags |= bits;
            (*peer).last_seen_ns = now;
        },
        None if entry.flags & flow_flags::REPLY != 0 => {}
        None => {
            let peer = FlowValue4 {
                saddr: k.daddr,
                daddr: k.saddr,
                sport: k.dport,
                dport: k.sport,
                flags: (entry.flags ^ flow_flags::REPLY) | bits,
                svc_id: entry.svc_id,
                _pad: 0,
                last_seen_ns: now,
            };
            if SVC_FLOWS.insert(peer_key, peer, u64::from(BPF_NOEXIST)).is_err() {
                return None;
            }
        }
    }
    Some(FlowValue4 { flags: entry.flags | bits, last_seen_ns: now, ..entry })
}

/// Whether `loadBalancerSourceRanges` let this client reach this
/// destination: the longest match of (destination, client) in
/// `SVC_LB_SRC` is an allowed range, or nothing (no ranges).
#[inline(always)]
fn source_allowed(k: &FlowKey4) -> bool {
    let data = SourceRangeData { addr: k.daddr, port: k.dport, proto: k.proto, _pad: 0, client: k.saddr };
    let key = Key::new(source_range::FRONTEND_BITS + 32, data);
    SVC_LB_SRC.get(&key).copied() != Some(source_range::DENY)
}

/// Writes `value` at `key` unless a live flow other than one ending there
/// holds it: an expired or closing entry, or one that already turns into
/// `value`'s destination (the same flow's old reply entry), is replaced.
#[inline(always)]
fn claim(key: FlowKey4, value: FlowValue4, now: u64) -> bool {
    if let Some(ptr) = SVC_FLOWS.get_ptr(key) {
        // SAFETY: copied out at once.
        let old = unsafe { *ptr };
        let same = old.saddr == value.saddr && old.sport == value.sport && old.daddr == value.daddr;
        if !old.expired(key.proto, now) && old.flags & flow_flags::CLOSING == 0 && !same {
            return false;
        }
    }
    SVC_FLOWS.insert(key, value, 0).is_ok()
}

/// A packet of no tracked flow: if it is for a frontend that serves
/// outside clients, pick a backend, record the flow, translate.
#[inline(always)]
fn new_flow(ctx: &TcContext, pkt: &Packet, now: u64) -> i32 {
    let k = &pkt.key;
    let dst = Backend4 { addr: k.daddr, port: k.dport, _pad: 0 };
    let mut client = Outside { key: *k, in_twin: false };
    let mut verdict = lb::select::<V4, Outside>(&client, &V4::key(dst, k.proto, scope::ALL));
    if matches!(verdict, Verdict::Twin) {
        client.in_twin = true;
        verdict = match lb::select::<V4, Outside>(&client, &V4::key(dst, k.proto, scope::EXTERNAL)) {
            Verdict::Pass => Verdict::Refuse,
            other => other,
        };
    }
    let (backend, svc_id) = match verdict {
        Verdict::Pass => return NEXT,
        Verdict::Deny => return drop_for(ns_stat::DROP_SOURCE_RANGE),
        // No usable backend (none at all, or none on this node for
        // externalTrafficPolicy: Local; or a twin announced but missing,
        // which must not fall back to other nodes' endpoints): dropped, as
        // kube-proxy does for the latter (it rejects the former; an ICMP
        // error is future work).
        Verdict::Refuse | Verdict::Twin => return drop_for(ns_stat::DROP_NO_BACKEND),
        Verdict::Translate(pick) => (pick.backend, pick.svc_id()),
    };
    let syn = if pkt.tcp_flags & TCP_SYN != 0 { flow_flags::TCP_SYN } else { 0 };
    // The source the backend sees: the client's own, or (backend behind
    // one of the node's devices: another node) that device's address and
    // a free port. The reply entry is claimed first: it is what can clash.
    let Ok(snat_addr) = snat_source(ctx, backend.addr) else { return drop_for(ns_stat::DROP_NO_ROUTE) };
    let (src, sport, snat) = match snat_addr {
        Some(addr) => match claim_port(k, addr, &backend, svc_id, syn, now) {
            Some(port) => (addr, port, flow_flags::SNAT),
            None => return drop_for(ns_stat::DROP_NO_SNAT_PORT),
        },
        None => {
            let reply = reply_value(k, svc_id, flow_flags::REPLY | syn, now);
            if !claim(reverse(k.saddr, backend.addr, k.sport, backend.port, k.proto), reply, now) {
                return drop_for(ns_stat::DROP_FLOW_TABLE);
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
        // Release the reply entry just claimed (if that fails too, it
        // expires).
        #[expect(clippy::let_underscore_must_use, reason = "best effort; the entry expires anyway")]
        let _ = SVC_FLOWS.remove(reverse(src, backend.addr, sport, backend.port, k.proto));
        return drop_for(ns_stat::DROP_FLOW_TABLE);
    }
    rewrite(ctx, pkt, &original, true, ns_stat::NEW_FLOW)
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
/// `Err`: the backend has no route from here (the packet is dropped).
#[inline(always)]
fn snat_source(ctx: &TcContext, addr: [u8; 4]) -> Result<Option<[u8; 4]>, ()> {
    let ifindex = fib_ifindex(ctx, [0; 4], addr).ok_or(())?;
    // SAFETY: the map value is copied out at once.
    let Some(device) = unsafe { SVC_DEVICES.get(ifindex) }.copied() else { return Ok(None) };
    Ok((device.addr4 != [0; 4]).then_some(device.addr4))
}

/// Claims a free SNAT port for `original` -> `backend` by claiming the
/// reply-direction entry under it (a port a live flow to the same backend
/// holds is skipped).
#[inline(always)]
fn claim_port(original: &FlowKey4, addr: [u8; 4], backend: &Backend4, svc_id: u32, syn: u32, now: u64) -> Option<u16> {
    // SAFETY: plain helper call.
    let start = unsafe { bpf_get_prandom_u32() } as u16 % snat_ports::COUNT;
    let reply = reply_value(original, svc_id, flow_flags::REPLY | flow_flags::SNAT | syn, now);
    for i in 0..SNAT_ATTEMPTS {
        let port = (snat_ports::FIRST + (start + i) % snat_ports::COUNT).to_be();
        if claim(reverse(addr, backend.addr, port, backend.port, original.proto), reply, now) {
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
/// changed at ingress, else on its way. Counts it under `slot` when done.
#[inline(always)]
fn rewrite(ctx: &TcContext, pkt: &Packet, to: &FlowValue4, ingress: bool, slot: u32) -> i32 {
    let k = &pkt.key;
    let ok = rewrite_addr(ctx, pkt, ETH_HLEN + IP_SADDR, k.saddr, to.saddr)
        && rewrite_addr(ctx, pkt, ETH_HLEN + IP_DADDR, k.daddr, to.daddr)
        && rewrite_port(ctx, pkt, pkt.l4, k.sport, to.sport)
        && rewrite_port(ctx, pkt, pkt.l4 + 2, k.dport, to.dport);
    if !ok {
        return drop_for(ns_stat::DROP_REWRITE);
    }
    if !ingress || (k.saddr == to.saddr && k.sport == to.sport) {
        count(slot);
        return PASS;
    }
    let Some(ifindex) = fib_ifindex(ctx, to.saddr, to.daddr) else { return drop_for(ns_stat::DROP_NO_ROUTE) };
    count(slot);
    // SAFETY: plain helper call; no next-hop parameters (it looks the
    // neighbour up itself).
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
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
