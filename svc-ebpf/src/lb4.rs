//! Shared IPv4 lookup helpers for the socket hooks: frontend lookup, backend
//! selection (random or by session affinity) and reverse translation.
//!
//! Reading map values safely (docs/maps.md, "Readers and element reuse"):
//! since kernel 6.1 a hash element that an update or delete frees can be
//! handed to the very next insert on that CPU, while a program on another
//! CPU still reads it. So:
//! - a frontend is *copied* and kept only if a second lookup of its key
//!   returns the same element ([`lookup_frontend`]); the agent never writes
//!   one key twice within an RCU grace period, which makes the copy a
//!   complete version and bounds the retries;
//! - backend slots are read in place: the agent deletes a retired set only
//!   after a grace period, so a set reached through a frontend copy stays
//!   intact while this program runs;
//! - LRU entries (written by the programs themselves) are copied out at
//!   once, and an affinity entry's backend is used only after checking that
//!   it is a member of the frontend's current set.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::generated::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
};
use svc_common::{
    AffinityKey, AffinityValue, Backend4, BackendIndexKey, Frontend, FrontendKey4, INLINE_BACKENDS, RevNatKey,
    RevNatValue, SlotKey, SockXlat,
};

use crate::{
    addr::Ip4Access,
    maps::{SVC_AFFINITY, SVC_BACKENDS, SVC_BE_INDEX, SVC_CONFIG, SVC_FRONTENDS, SVC_REVNAT_SK, SVC_SOCK_XLAT},
};

/// What a forward hook should do with the socket address.
pub(crate) enum Verdict {
    /// Not a frontend (or not for this client): leave the call alone.
    Pass,
    /// A frontend without a usable backend: fail the call.
    Refuse,
    /// Rewrite the destination to this backend.
    Translate(Backend4),
}

/// The destination of the call as a frontend key, if it is an IPv4 one.
#[inline(always)]
pub(crate) fn frontend_key<A: Ip4Access>(ctx: &SockAddrContext, proto: u8) -> Option<FrontendKey4> {
    let dst = A::read(ctx)?;
    Some(FrontendKey4 { addr: dst.addr, port: dst.port, proto, _pad: 0 })
}

/// How a frontend lookup ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// No frontend at this key.
    Missing,
    /// `out` holds a consistent copy of the frontend.
    Found,
    /// The element changed under every attempt (the agent's grace periods
    /// rule this out; refused rather than trusting a torn copy).
    Unstable,
}

/// Attempts at a stable frontend copy. One write of the key can overlap a
/// program run (the agent waits a grace period before writing it again),
/// so the second attempt always sees a settled element.
const FRONTEND_ATTEMPTS: usize = 2;

/// Copies the frontend at `key` into `out`, as one complete version of it.
/// (An out-parameter: a 152-byte value moved through return values would
/// be copied on the stack more than once, past the 512-byte limit.)
#[inline(always)]
fn lookup_frontend(key: &FrontendKey4, out: &mut MaybeUninit<Frontend>) -> Lookup {
    for _ in 0..FRONTEND_ATTEMPTS {
        let Some(element) = SVC_FRONTENDS.get_ptr(key) else {
            return Lookup::Missing;
        };
        // SAFETY: the pointer is valid for the program's run (RCU); its
        // contents may be rewritten if the element is reused, which the
        // second lookup detects. The copy writes every byte of `out`.
        unsafe { core::ptr::copy_nonoverlapping(element, out.as_mut_ptr(), 1) };
        // The element still holds `key` now, and held it at the first
        // lookup: it was not freed in between (that would take two writes
        // of `key` within one grace period), so the copy is intact. (This
        // relies on the copy's loads completing before the second lookup's,
        // as x86's TSO order gives; a weakly ordered CPU would need a read
        // barrier here, like a seqlock's.)
        if SVC_FRONTENDS.get_ptr(key) == Some(element) {
            return Lookup::Found;
        }
    }
    Lookup::Unstable
}

/// Frontends marked host-netns-only (`127.0.0.1:nodePort`) only apply to
/// sockets of the host network namespace.
#[inline(always)]
fn applies_to(ctx: &SockAddrContext, fe: &Frontend) -> bool {
    if !fe.is_host_ns_only() {
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
    let mut copy = MaybeUninit::<Frontend>::uninit();
    match lookup_frontend(key, &mut copy) {
        Lookup::Missing => return Verdict::Pass,
        Lookup::Unstable => return Verdict::Refuse,
        Lookup::Found => {}
    }
    // SAFETY: `Found` means every byte was written.
    let fe = unsafe { copy.assume_init_ref() };
    if !applies_to(ctx, fe) {
        return Verdict::Pass;
    }
    if fe.count == 0 {
        return Verdict::Refuse;
    }
    // The set of a frontend copy is complete for the whole run (the agent
    // deletes retired sets only after a grace period): a missing slot is a
    // broken invariant, refused rather than guessed around.
    match pick(ctx, fe) {
        Some(b) => Verdict::Translate(b),
        None => Verdict::Refuse,
    }
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
    let value = AffinityValue { backend, last_used_ns: now };
    #[expect(
        clippy::let_underscore_must_use,
        reason = "best effort: if the LRU insert fails, this connection simply has no affinity recorded"
    )]
    let _ = SVC_AFFINITY.insert(key, value, 0);
    Some(backend)
}

/// The backend this client is pinned to, if the pin is fresh and the backend
/// is still in the frontend's current set. Membership is always checked,
/// even when the entry names the current set: LRU elements are reused at
/// once, so a copy can mix two entries, and only a member of this
/// Service's set may come out of it.
#[inline(always)]
fn affine_backend(key: &AffinityKey, fe: &Frontend, now: u64) -> Option<Backend4> {
    // SAFETY: copied out at once.
    let entry = unsafe { SVC_AFFINITY.get(key).copied() }?;
    let timeout_ns = u64::from(fe.affinity_timeout) * 1_000_000_000;
    if now.wrapping_sub(entry.last_used_ns) > timeout_ns {
        return None;
    }
    if !is_member(fe, entry.backend) {
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

/// A connected socket (TCP, connected UDP) remembers its translation in its
/// own storage, for getpeername and recvmsg.
#[inline(always)]
pub(crate) fn remember_connected(ctx: &SockAddrContext, frontend: &FrontendKey4, backend: Backend4) {
    let mut xlat = SockXlat { frontend: Backend4 { addr: frontend.addr, port: frontend.port, _pad: 0 }, backend };
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
            #[expect(
                clippy::let_underscore_must_use,
                reason = "the storage was just seen: a failed delete leaves a translation the next connect overwrites"
            )]
            let _ = SVC_SOCK_XLAT.delete((*ctx.sock_addr).__bindgen_anon_1.sk);
        }
    }
}

/// A datagram (UDP sendmsg, and connected UDP for the agent's socket reset)
/// remembers which frontend its backend stands for, keyed by socket and
/// backend: one unconnected socket can talk to many Services.
#[inline(always)]
pub(crate) fn remember_datagram(ctx: &SockAddrContext, frontend: &FrontendKey4, backend: Backend4) {
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let key = RevNatKey { cookie, backend };
    let value = RevNatValue { addr: frontend.addr, port: frontend.port, _pad: 0 };
    // sendmsg runs per datagram: skip the write when nothing changed.
    // SAFETY: copied out at once.
    if unsafe { SVC_REVNAT_SK.get(key).copied() } != Some(value) {
        #[expect(
            clippy::let_underscore_must_use,
            reason = "best effort: without the entry recvfrom() shows the backend address (docs/maps.md, limits)"
        )]
        let _ = SVC_REVNAT_SK.insert(key, value, 0);
    }
}

/// The frontend (address, port) this socket asked for when it reached the
/// peer it now reports, if it was translated.
#[inline(always)]
pub(crate) fn recall_frontend<A: Ip4Access>(ctx: &SockAddrContext) -> Option<([u8; 4], u16)> {
    let peer = A::read(ctx)?;
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
