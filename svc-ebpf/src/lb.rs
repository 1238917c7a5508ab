//! Lookup helpers shared by every hook and both families: frontend
//! lookup, backend selection (random or by session affinity) and reverse
//! translation. Generic over [`Family`] (which maps) and [`Client`] (who
//! asks: a socket, or a packet from outside the node); the hooks read the
//! call's address (`crate::addr`) and pass it in.
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
    helpers::generated::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::SockAddrContext,
};
use svc_common::{AffinityKey, fe_flags};

use crate::{
    family::{Family, FrontendView},
    maps::SVC_CONFIG,
};

/// What a forward hook should do with the socket address.
pub(crate) enum Verdict<B> {
    /// Not a frontend (or not for this client): leave the call alone.
    Pass,
    /// A frontend without a usable backend: fail the call.
    Refuse,
    /// Rewrite the destination to this backend (of this service port).
    Translate(Pick<B>),
    /// This client is served by the frontend's outside-only twin
    /// ([`Admit::Twin`]): look that one up instead.
    Twin,
    /// This client may not reach the frontend ([`Admit::Deny`]).
    Deny,
}

/// The backend a frontend's selection chose, with the frontend's
/// service-port id and whether the frontend owns the backend's reverse
/// entry (an inline backend whose `owned` bit is set: `connect()` need not
/// look it up). The id and the flag share one `u32` (the agent keeps
/// service-port ids below 2^31: svc-agent writer/ids.rs,
/// `MAX_SERVICE_PORT_ID`): connect6's frame is at the verifier's limit,
/// and a wider verdict pushed it over.
#[derive(Clone, Copy)]
pub(crate) struct Pick<B> {
    pub(crate) backend: B,
    id_and_owned: u32,
}

impl<B> Pick<B> {
    const OWNED: u32 = 1 << 31;

    #[inline(always)]
    fn new(backend: B, svc_id: u32, owned: bool) -> Self {
        Self { backend, id_and_owned: (svc_id & !Self::OWNED) | if owned { Self::OWNED } else { 0 } }
    }

    /// The frontend's service-port id.
    #[inline(always)]
    pub(crate) const fn svc_id(&self) -> u32 {
        self.id_and_owned & !Self::OWNED
    }

    /// The frontend owns the backend's reverse entry.
    #[inline(always)]
    pub(crate) const fn owned(&self) -> bool {
        self.id_and_owned & Self::OWNED != 0
    }
}

/// What a client makes of a frontend it found ([`Client::admit`]).
pub(crate) enum Admit {
    /// Serve it.
    Serve,
    /// Not for this client: leave the call alone.
    Pass,
    /// Look up its outside-only twin instead.
    Twin,
    /// Refused by policy (`loadBalancerSourceRanges`).
    Deny,
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
/// (An out-parameter: a frontend value moved through return values would
/// be copied on the stack more than once, past the 512-byte limit.)
#[inline(always)]
fn lookup_frontend<F: Family>(key: &F::Key, out: &mut MaybeUninit<F::Frontend>) -> Lookup {
    for _ in 0..FRONTEND_ATTEMPTS {
        let Some(element) = F::frontend_ptr(key) else {
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
        if F::frontend_ptr(key) == Some(element) {
            return Lookup::Found;
        }
    }
    Lookup::Unstable
}

/// Who is being served: the frontend kinds that apply to it, and its
/// identity for session affinity.
pub(crate) trait Client {
    /// Whether a frontend with these [`fe_flags`] serves this client.
    fn accepts(&self, flags: u32) -> bool;
    /// What to do with a frontend with these [`fe_flags`]: by default,
    /// serve it if [`Self::accepts`] it.
    #[inline(always)]
    fn admit(&self, flags: u32) -> Admit {
        if self.accepts(flags) { Admit::Serve } else { Admit::Pass }
    }
    /// The client's identity in [`AffinityKey::netns_cookie`].
    fn affinity_id(&self) -> u64;
}

/// A socket on this node: every frontend, except that host-netns-only
/// ones (`127.0.0.1:nodePort`) apply to sockets of the host network
/// namespace only, and none to an exempt pod's sockets. Its identity is
/// its network namespace (a pod).
impl Client for SockAddrContext {
    #[inline(always)]
    fn accepts(&self, flags: u32) -> bool {
        if flags & fe_flags::HOST_NS_ONLY == 0 {
            return true;
        }
        let host = SVC_CONFIG.get(0).map(|c| c.host_netns_cookie);
        host == Some(self.affinity_id())
    }

    /// An exempt pod's socket (`crate::exempt`) is left alone, checked
    /// only once the destination is known to be a frontend.
    #[inline(always)]
    fn admit(&self, flags: u32) -> Admit {
        if !self.accepts(flags) || crate::exempt::caller_is_exempt() { Admit::Pass } else { Admit::Serve }
    }

    #[inline(always)]
    fn affinity_id(&self) -> u64 {
        // SAFETY: plain helper call on our context.
        unsafe { bpf_get_netns_cookie(self.sock_addr.cast()) }
    }
}

/// Decides the fate of a `connect()`/`sendmsg()` (or a new flow) to `key`.
#[inline(always)]
pub(crate) fn select<F: Family, C: Client>(client: &C, key: &F::Key) -> Verdict<F::Backend> {
    let mut copy = MaybeUninit::<F::Frontend>::uninit();
    match lookup_frontend::<F>(key, &mut copy) {
        Lookup::Missing => return Verdict::Pass,
        Lookup::Unstable => return Verdict::Refuse,
        Lookup::Found => {}
    }
    // SAFETY: `Found` means every byte was written.
    let fe = unsafe { copy.assume_init_ref() };
    match client.admit(fe.flags()) {
        Admit::Serve => {}
        Admit::Pass => return Verdict::Pass,
        Admit::Twin => return Verdict::Twin,
        Admit::Deny => return Verdict::Deny,
    }
    if fe.count() == 0 {
        return Verdict::Refuse;
    }
    // The set of a frontend copy is complete for the whole run (the agent
    // deletes retired sets only after a grace period): a missing slot is a
    // broken invariant, refused rather than guessed around.
    match pick::<F, C>(client, fe) {
        Some((backend, owned)) => Verdict::Translate(Pick::new(backend, fe.svc_id(), owned)),
        None => Verdict::Refuse,
    }
}

/// A backend of `fe`, and whether `fe` is known to own it.
#[inline(always)]
fn pick<F: Family, C: Client>(client: &C, fe: &F::Frontend) -> Option<(F::Backend, bool)> {
    if fe.affinity_timeout() == 0 {
        return random_backend::<F>(fe);
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = AffinityKey { netns_cookie: client.affinity_id(), svc_id: fe.svc_id(), _pad: 0 };
    // A pinned backend's index is not known: its owner is looked up.
    let (backend, owned) = match affine_backend::<F>(&key, fe, now) {
        Some(b) => (b, false),
        None => random_backend::<F>(fe)?,
    };
    F::pin(key, backend, now);
    Some((backend, owned))
}

/// The backend this client is pinned to, if the pin is fresh and the backend
/// is still in the frontend's current set. Membership is always checked,
/// even when the entry names the current set: LRU elements are reused at
/// once, so a copy can mix two entries, and only a member of this
/// Service's set may come out of it.
#[inline(always)]
fn affine_backend<F: Family>(key: &AffinityKey, fe: &F::Frontend, now: u64) -> Option<F::Backend> {
    let (backend, last_used_ns) = F::affinity(key)?;
    let timeout_ns = u64::from(fe.affinity_timeout()) * 1_000_000_000;
    // Saturating: a pin another CPU refreshed after this run read the
    // clock is fresh, not 2^64 ns old.
    if now.saturating_sub(last_used_ns) > timeout_ns {
        return None;
    }
    if !is_member::<F>(fe, backend) {
        return None;
    }
    Some(backend)
}

/// Whether `backend` is in the frontend's current set: a scan of the inline
/// backends, or the membership map for a large set.
#[inline(always)]
fn is_member<F: Family>(fe: &F::Frontend, backend: F::Backend) -> bool {
    if fe.inline_sized() {
        let count = fe.count() as usize;
        for i in 0..<F::Frontend as FrontendView<F::Backend>>::INLINE {
            if i >= count {
                return false;
            }
            if fe.inline_at(i) == Some(backend) {
                return true;
            }
        }
        return false;
    }
    F::indexed(fe.set_id(), backend)
}

#[inline(always)]
fn random_backend<F: Family>(fe: &F::Frontend) -> Option<(F::Backend, bool)> {
    // One read of the count, checked: a panicking path (division by zero)
    // would not pass the verifier.
    let count = fe.count();
    // SAFETY: plain helper call.
    let slot = unsafe { bpf_get_prandom_u32() }.checked_rem(count)?;
    // The same `count` decides inline or not (one read: the verifier then
    // sees slot < count <= INLINE).
    if count as usize <= <F::Frontend as FrontendView<F::Backend>>::INLINE {
        return Some((fe.inline_at(slot as usize)?, fe.owns_inline(slot as usize)));
    }
    Some((F::slot(fe.set_id(), slot)?, false))
}

/// The frontend (address and port) this socket asked for when it reached
/// the peer it now reports, if it was translated: its own storage, else
/// (UDP) the datagram map, else (a connected socket) the peer's reverse
/// owner. `connected`: the socket has a peer (getpeername; recvmsg on a
/// connected UDP socket), so the owner entry may apply to it.
#[inline(always)]
pub(crate) fn recall_frontend<F: Family>(
    ctx: &SockAddrContext,
    peer: F::Backend,
    proto: u8,
    connected: bool,
) -> Option<F::Backend> {
    if let Some((frontend, backend)) = F::connected(ctx)
        && backend == peer
    {
        return Some(frontend);
    }
    // Datagrams are remembered per (socket, backend): this also answers
    // for a reply queued before the socket connected elsewhere.
    if proto != svc_common::proto::TCP
        && let Some(frontend) = F::datagram_frontend(ctx, peer)
    {
        return Some(frontend);
    }
    if !connected {
        return None;
    }
    let owner = F::reverse_owner(peer, proto)?;
    // An accepted socket's peer is a client this node did not translate
    // (`crate::accepted`), even if its address and port are a backend's.
    if proto == svc_common::proto::TCP && F::has_listener(ctx) {
        return None;
    }
    Some(owner)
}

/// Records, at `connect()`, what the reverse hooks need to show `asked`
/// for a socket now aimed at `peer` (`svc_common::reverse`): nothing when
/// the peer's reverse owner answers `asked` and the socket was not bound
/// beforehand (an accepted socket's peer may look like it otherwise:
/// `crate::accepted`), else the pair in the socket's storage (dropping an
/// earlier connect's, which must not shadow it). Also for a connect that
/// is not translated (`asked == peer`): a peer with an owner entry is
/// remembered as itself, so the socket is not shown the owner.
#[inline(never)]
pub(crate) fn remember_connect<F: Family>(ctx: &SockAddrContext, asked: F::Backend, peer: F::Backend, proto: u8) {
    let translated = asked != peer;
    // A bound socket keeps storage (`crate::accepted`). Its check comes
    // first: connect6's frame leaves no room for more state across the
    // lookup under the verifier's combined stack limit.
    let store = (translated && crate::accepted::is_bound(ctx))
        || match F::reverse_owner(peer, proto) {
            Some(owner) => owner != asked || !translated,
            None => translated,
        };
    if store {
        F::remember_connected(ctx, asked, peer);
    } else {
        F::forget_connected(ctx);
    }
}

/// [`remember_connect`] for a translated connect whose frontend says it
/// owns the backend's entry ([`Pick::owned`]; the agent sets that only
/// while `SVC_BE_REV[backend]` names the frontend): the lookup's answer is
/// known, which spares a cache miss or two on a large map. (A separate
/// path, not a parameter: connect6's frame has no room for one more.)
#[inline(always)]
pub(crate) fn remember_owned_connect<F: Family>(ctx: &SockAddrContext, asked: F::Backend, peer: F::Backend, proto: u8) {
    if crate::accepted::is_bound(ctx) {
        remember_connect::<F>(ctx, asked, peer, proto);
    } else {
        F::forget_connected(ctx);
    }
}
