//! Shared IPv4 lookup helpers for the socket hooks: frontend lookup, backend
//! selection (random or by session affinity) and reverse translation.
//!
//! Map values are read in place through the pointer a lookup returns: the
//! agent never modifies an entry, it replaces it (a new element), and with
//! `BPF_F_NO_PREALLOC` the old element stays intact until the program has
//! finished (RCU). So every value read here is one consistent version,
//! without copying a whole frontend (152 bytes) onto the stack. LRU entries
//! (which the programs themselves update) are copied out at once.

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
};
use svc_common::{
    AffinityKey, AffinityValue, Backend4, BackendIndexKey, Frontend, FrontendKey4, INLINE_BACKENDS, RevNatKey,
    RevNatValue, SlotKey, SockXlat, fe_flags,
};

use crate::maps::{SVC_AFFINITY, SVC_BACKENDS, SVC_BE_INDEX, SVC_CONFIG, SVC_FRONTENDS, SVC_REVNAT_SK, SVC_SOCK_XLAT};

/// What a forward hook should do with the socket address.
pub(crate) enum Verdict {
    /// Not a frontend (or not for this client): leave the call alone.
    Pass,
    /// A frontend without a usable backend: fail the call.
    Refuse,
    /// Rewrite the destination to this backend (of service port `svc_id`).
    Translate(Backend4, u32),
}

/// The destination of the call as a frontend key.
#[inline(always)]
pub(crate) fn frontend_key(ctx: &SockAddrContext, proto: u8) -> FrontendKey4 {
    // user_ip4 holds the address in network order: its in-memory bytes are
    // the octets.
    let dst = sock_addr(ctx);
    FrontendKey4 { addr: dst.addr, port: dst.port, proto, _pad: 0 }
}

/// Rewrites the destination (forward) or source (reverse) address of the call.
#[inline(always)]
pub(crate) fn set_addr(ctx: &SockAddrContext, addr: [u8; 4], port: u16) {
    // SAFETY: as above; user_ip4/user_port are writable in every hook we use.
    let sa = unsafe { &mut *ctx.sock_addr };
    sa.user_ip4 = u32::from_ne_bytes(addr);
    sa.user_port = u32::from(port);
}

#[inline(always)]
fn lookup_frontend(key: &FrontendKey4) -> Option<&'static Frontend> {
    // SAFETY: read in place, never written by the programs (module docs).
    unsafe { SVC_FRONTENDS.get(key) }
}

/// Frontends marked host-netns-only (`127.0.0.1:nodePort`) only apply to
/// sockets of the host network namespace.
#[inline(always)]
fn applies_to(ctx: &SockAddrContext, fe: &Frontend) -> bool {
    if fe.flags & fe_flags::HOST_NS_ONLY == 0 {
        return true;
    }
    // SAFETY: plain helper call on our context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    let host = SVC_CONFIG.get(0).map(|c| c.host_netns_cookie);
    host == Some(netns)
}

/// Decides the fate of a `connect()`/`sendmsg()` to `key`.
#[inline(always)]
pub(crate) fn select(ctx: &SockAddrContext, key: &FrontendKey4) -> Verdict {
    let Some(mut fe) = lookup_frontend(key) else {
        return Verdict::Pass;
    };
    if !applies_to(ctx, fe) {
        return Verdict::Pass;
    }
    // A slot can only be missing if the agent retired the set between our
    // frontend lookup and our slot lookup; the frontend then already points
    // at the complete new set, so one more round sees it.
    for _ in 0..2 {
        if fe.count == 0 {
            return Verdict::Refuse;
        }
        if let Some(b) = pick(ctx, fe) {
            return Verdict::Translate(b, fe.svc_id);
        }
        fe = match lookup_frontend(key) {
            Some(fe) => fe,
            None => return Verdict::Pass,
        };
    }
    Verdict::Refuse
}

#[inline(always)]
fn pick(ctx: &SockAddrContext, fe: &Frontend) -> Option<Backend4> {
    if fe.affinity_timeout == 0 {
        return random_backend(fe);
    }
    // SAFETY: plain helper calls on our context.
    let (netns_cookie, now) = unsafe { (bpf_get_netns_cookie(ctx.sock_addr.cast()), bpf_ktime_get_ns()) };
    let key = AffinityKey { netns_cookie, svc_id: fe.svc_id, _pad: 0 };
    let backend = match affine_backend(&key, fe, now) {
        Some(b) => b,
        None => random_backend(fe)?,
    };
    let value = AffinityValue { backend, set_id: fe.set_id, _pad: 0, last_used_ns: now };
    // Best effort: if the LRU insert fails, this connection simply has no
    // affinity recorded.
    let _ = SVC_AFFINITY.insert(key, value, 0);
    Some(backend)
}

/// The backend this client is pinned to, if the pin is fresh and the backend
/// is still in the frontend's current set.
#[inline(always)]
fn affine_backend(key: &AffinityKey, fe: &Frontend, now: u64) -> Option<Backend4> {
    // SAFETY: copied out at once.
    let entry = unsafe { SVC_AFFINITY.get(key).copied() }?;
    let timeout_ns = u64::from(fe.affinity_timeout) * 1_000_000_000;
    if now.wrapping_sub(entry.last_used_ns) > timeout_ns {
        return None;
    }
    if entry.set_id != fe.set_id && !is_member(fe, entry.backend) {
        return None;
    }
    Some(entry.backend)
}

/// Whether `backend` is in the frontend's current set: a scan of the inline
/// backends, or the membership map for a large set.
#[inline(always)]
fn is_member(fe: &Frontend, backend: Backend4) -> bool {
    if fe.is_inline() {
        let count = fe.count as usize;
        for i in 0..INLINE_BACKENDS {
            if i >= count {
                return false;
            }
            if fe.inline[i] == backend {
                return true;
            }
        }
        return false;
    }
    let member = BackendIndexKey { set_id: fe.set_id, backend };
    // SAFETY: only tests presence.
    unsafe { SVC_BE_INDEX.get(member) }.is_some()
}

#[inline(always)]
fn random_backend(fe: &Frontend) -> Option<Backend4> {
    // One read of the count, checked: a panicking path (division by zero)
    // would not pass the verifier.
    let count = fe.count;
    // SAFETY: plain helper call.
    let slot = unsafe { bpf_get_prandom_u32() }.checked_rem(count)?;
    if count as usize <= INLINE_BACKENDS {
        // The bound check is for the verifier: slot < count <= INLINE.
        return fe.inline.get(slot as usize).copied();
    }
    // SAFETY: copied out at once.
    unsafe { SVC_BACKENDS.get(SlotKey { set_id: fe.set_id, slot }).copied() }
}

/// The current destination (forward hooks) or peer (reverse hooks).
#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) -> Backend4 {
    // SAFETY: valid context.
    let sa = unsafe { &*ctx.sock_addr };
    Backend4 { addr: sa.user_ip4.to_ne_bytes(), port: sa.user_port as u16, _pad: 0 }
}

/// A connected socket (TCP, connected UDP) remembers its translation in its
/// own storage, for getpeername and recvmsg.
#[inline(always)]
pub(crate) fn remember_connected(ctx: &SockAddrContext, frontend: &FrontendKey4, backend: Backend4, svc_id: u32) {
    let mut xlat =
        SockXlat { frontend: Backend4 { addr: frontend.addr, port: frontend.port, _pad: 0 }, backend, svc_id };
    // SAFETY: the context's socket is valid for the helper.
    let slot = unsafe { SVC_SOCK_XLAT.get_or_insert_ptr_mut(ctx, Some(&mut xlat)) };
    if !slot.is_null() {
        // A socket connected again (UDP) overwrites its old translation.
        // SAFETY: non-null storage of this socket.
        unsafe { *slot = xlat };
    }
}

/// A connect to a non-frontend drops an earlier translation of the same
/// (UDP) socket, so its new peer is never shown as a Service address.
#[inline(always)]
pub(crate) fn forget_connected(ctx: &SockAddrContext) {
    // SAFETY: the context's socket is valid for the helpers.
    unsafe {
        if !SVC_SOCK_XLAT.get_ptr_mut(ctx).is_null() {
            let _ = SVC_SOCK_XLAT.delete((*ctx.sock_addr).__bindgen_anon_1.sk);
        }
    }
}

/// A datagram (UDP sendmsg, and connected UDP for the agent's socket reset)
/// remembers which frontend its backend stands for, keyed by socket and
/// backend: one unconnected socket can talk to many Services.
#[inline(always)]
pub(crate) fn remember_datagram(ctx: &SockAddrContext, frontend: &FrontendKey4, backend: Backend4, svc_id: u32) {
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = RevNatKey { cookie, backend };
    let value = RevNatValue { addr: frontend.addr, port: frontend.port, _pad: 0, svc_id };
    // sendmsg runs per datagram: skip the write when nothing changed.
    // SAFETY: copied out at once.
    if unsafe { SVC_REVNAT_SK.get(key).copied() } != Some(value) {
        let _ = SVC_REVNAT_SK.insert(key, value, 0);
    }
}

/// The frontend (address, port) this socket asked for when it reached the
/// peer it now reports, if it was translated.
#[inline(always)]
pub(crate) fn recall_frontend(ctx: &SockAddrContext) -> Option<([u8; 4], u16)> {
    let peer = sock_addr(ctx);
    // SAFETY: the context's socket is valid for the helper; copied out at once.
    let connected = unsafe { SVC_SOCK_XLAT.get_ptr_mut(ctx).as_ref().copied() };
    if let Some(x) = connected
        && x.backend == peer
    {
        return Some((x.frontend.addr, x.frontend.port));
    }
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: copied out at once.
    unsafe { SVC_REVNAT_SK.get(RevNatKey { cookie, backend: peer }).map(|v| (v.addr, v.port)) }
}
