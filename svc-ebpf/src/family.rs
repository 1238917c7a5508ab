//! The two address families' maps behind one interface, so that the
//! lookup helpers in `lb` are written once: [`V4`] (the `SVC_*` maps,
//! also serving v4-mapped peers of `AF_INET6` sockets) and [`V6`] (the
//! `SVC_*6` maps). Each hook is monomorphised for one family, so every
//! program only references its own maps.

use aya_ebpf::{helpers::generated::bpf_get_socket_cookie, programs::SockAddrContext};
use svc_common::{
    AffinityKey, AffinityValue, AffinityValue6, Backend4, Backend6, BackendIndexKey, BackendIndexKey6, BackendRevKey,
    BackendRevKey6, Frontend, Frontend6, FrontendKey4, FrontendKey6, FrontendOf, RevNatKey, RevNatKey6, RevNatValue,
    SlotKey, SockXlat, SockXlat6,
};

use crate::maps::{
    SVC_AFFINITY, SVC_AFFINITY6, SVC_BACKENDS, SVC_BACKENDS6, SVC_BE_INDEX, SVC_BE_INDEX6, SVC_BE_REV, SVC_BE_REV6,
    SVC_FRONTENDS, SVC_FRONTENDS6, SVC_REVNAT_SK, SVC_REVNAT6, SVC_SOCK_XLAT, SVC_SOCK_XLAT6,
};

/// Read access to a frontend value, whatever its backend type and inline
/// capacity.
pub(crate) trait FrontendView<B> {
    fn svc_id(&self) -> u32;
    fn set_id(&self) -> u32;
    fn count(&self) -> u32;
    fn affinity_timeout(&self) -> u32;
    /// [`svc_common::fe_flags`] bits.
    fn flags(&self) -> u32;
    fn inline_sized(&self) -> bool;
    /// Inline backend `i`, if `i` is within the inline array.
    fn inline_at(&self, i: usize) -> Option<B>;
    /// Whether this frontend owns inline backend `i`'s reverse entry.
    fn owns_inline(&self, i: usize) -> bool;
    /// Capacity of the inline array.
    const INLINE: usize;
}

impl<B: Copy, const N: usize> FrontendView<B> for FrontendOf<B, N> {
    #[inline(always)]
    fn svc_id(&self) -> u32 {
        self.svc_id
    }
    #[inline(always)]
    fn set_id(&self) -> u32 {
        self.set_id
    }
    #[inline(always)]
    fn count(&self) -> u32 {
        self.count
    }
    #[inline(always)]
    fn affinity_timeout(&self) -> u32 {
        self.affinity_timeout
    }
    #[inline(always)]
    fn flags(&self) -> u32 {
        self.flags
    }
    #[inline(always)]
    fn inline_sized(&self) -> bool {
        self.is_inline()
    }
    #[inline(always)]
    fn owns_inline(&self, i: usize) -> bool {
        Self::owns_inline(self, i)
    }
    #[inline(always)]
    fn inline_at(&self, i: usize) -> Option<B> {
        self.inline.get(i).copied()
    }
    const INLINE: usize = N;
}

/// One family's keys, values and maps.
pub(crate) trait Family {
    /// Frontend map key.
    type Key: Copy;
    /// A backend (or frontend) address and port.
    type Backend: Copy + PartialEq;
    /// Frontend map value.
    type Frontend: FrontendView<Self::Backend>;

    /// The frontend key of a destination, in `scope` (`svc_common::scope`).
    fn key(dst: Self::Backend, proto: u8, scope: u8) -> Self::Key;
    /// The frontend element at `key` (a pointer: the caller copies it).
    fn frontend_ptr(key: &Self::Key) -> Option<*const Self::Frontend>;
    /// Slot `slot` of a large set.
    fn slot(set_id: u32, slot: u32) -> Option<Self::Backend>;
    /// Whether `backend` has a membership entry in set `set_id`.
    fn indexed(set_id: u32, backend: Self::Backend) -> bool;
    /// The pinned backend and its last use.
    fn affinity(key: &AffinityKey) -> Option<(Self::Backend, u64)>;
    /// Pins `backend` (best effort).
    fn pin(key: AffinityKey, backend: Self::Backend, now: u64);
    /// The frontend that connected sockets without storage reached
    /// `backend` through (`svc_common::reverse`), if it has one.
    fn reverse_owner(backend: Self::Backend, proto: u8) -> Option<Self::Backend>;
    /// Whether a TCP listener holds this socket's local address and port
    /// of this family (`crate::accepted`).
    fn has_listener(ctx: &SockAddrContext) -> bool;
    /// This connected socket's (frontend, backend).
    fn connected(ctx: &SockAddrContext) -> Option<(Self::Backend, Self::Backend)>;
    /// Records this connected socket's translation.
    fn remember_connected(ctx: &SockAddrContext, frontend: Self::Backend, backend: Self::Backend);
    /// Drops this socket's translation, if any.
    fn forget_connected(ctx: &SockAddrContext);
    /// The frontend that `(this socket, backend)` stands for.
    fn datagram_frontend(ctx: &SockAddrContext, backend: Self::Backend) -> Option<Self::Backend>;
    /// Records that `(this socket, backend)` stands for `frontend`.
    fn remember_datagram(ctx: &SockAddrContext, backend: Self::Backend, frontend: Self::Backend);
    /// Drops the entry of `(socket cookie, backend)`, if any.
    fn forget_datagram(cookie: u64, backend: Self::Backend);
    /// [`svc_common::TraceEvent::family`].
    const TRACE_FAMILY: u8;
    /// Writes an address as a trace event holds it (16 bytes, IPv4 in the
    /// first 4, the rest zero) and its port.
    ///
    /// # Safety
    /// Both pointers must be valid for writes.
    unsafe fn trace_write(b: &Self::Backend, addr: *mut [u8; 16], port: *mut u16);
}

/// The socket's cookie.
#[inline(always)]
pub(crate) fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: plain helper call on our context.
    unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) }
}

/// A copy of the value at `key` in an agent-written hash map, kept only
/// if a second lookup finds the same element: an element can be freed
/// and reused under a reader (the protocol of `lb`'s frontend copies;
/// owner entries are never rewritten, only deleted after a linger).
macro_rules! stable_copy {
    ($map:expr, $key:expr) => {{
        match $map.get_ptr($key) {
            None => None,
            Some(element) => {
                // SAFETY: valid for the program's run (RCU); a reuse is
                // detected by the second lookup.
                let value = unsafe { *element };
                if $map.get_ptr($key) == Some(element) { Some(value) } else { None }
            }
        }
    }};
}

/// Writes `value` to a connected socket's storage (creating it), also
/// over an earlier translation of the same (UDP) socket.
macro_rules! remember_in_storage {
    ($map:expr, $ctx:expr, $value:expr) => {{
        let mut value = $value;
        // SAFETY: the context's socket is valid for the helper.
        let slot = unsafe { $map.get_or_insert_ptr_mut($ctx, Some(&mut value)) };
        if !slot.is_null() {
            // SAFETY: non-null storage of this socket.
            unsafe { *slot = value };
        }
    }};
}

/// Deletes a socket's storage entry if it has one.
macro_rules! forget_in_storage {
    ($map:expr, $ctx:expr) => {{
        // SAFETY: the context's socket is valid for the helpers.
        unsafe {
            if !$map.get_ptr_mut($ctx).is_null() {
                #[expect(
                    clippy::let_underscore_must_use,
                    reason = "the storage was just seen: a failed delete leaves a translation the next connect overwrites"
                )]
                let _ = $map.delete((*$ctx.sock_addr).__bindgen_anon_1.sk);
            }
        }
    }};
}

/// IPv4: the `SVC_*` maps.
pub(crate) struct V4;

impl Family for V4 {
    type Key = FrontendKey4;
    type Backend = Backend4;
    type Frontend = Frontend;
    const TRACE_FAMILY: u8 = 4;

    #[inline(always)]
    unsafe fn trace_write(b: &Backend4, addr: *mut [u8; 16], port: *mut u16) {
        let [a, b1, c, d] = b.addr;
        // SAFETY: the caller's pointers are valid for writes.
        unsafe {
            addr.write([a, b1, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            port.write(b.port);
        }
    }

    #[inline(always)]
    fn key(dst: Backend4, proto: u8, scope: u8) -> FrontendKey4 {
        FrontendKey4 { addr: dst.addr, port: dst.port, proto, scope }
    }
    #[inline(always)]
    fn frontend_ptr(key: &FrontendKey4) -> Option<*const Frontend> {
        SVC_FRONTENDS.get_ptr(key)
    }
    #[inline(always)]
    fn slot(set_id: u32, slot: u32) -> Option<Backend4> {
        // SAFETY: copied out at once.
        unsafe { SVC_BACKENDS.get(SlotKey { set_id, slot }).copied() }
    }
    #[inline(always)]
    fn indexed(set_id: u32, backend: Backend4) -> bool {
        // SAFETY: only tests presence.
        unsafe { SVC_BE_INDEX.get(BackendIndexKey { set_id, backend }) }.is_some()
    }
    #[inline(always)]
    fn affinity(key: &AffinityKey) -> Option<(Backend4, u64)> {
        // SAFETY: copied out at once.
        unsafe { SVC_AFFINITY.get(key).copied() }.map(|v| (v.backend, v.last_used_ns))
    }
    #[inline(always)]
    fn pin(key: AffinityKey, backend: Backend4, now: u64) {
        #[expect(
            clippy::let_underscore_must_use,
            reason = "best effort: if the LRU insert fails, this connection simply has no affinity recorded"
        )]
        let _ = SVC_AFFINITY.insert(key, AffinityValue { backend, last_used_ns: now }, 0);
    }
    #[inline(always)]
    fn reverse_owner(backend: Backend4, proto: u8) -> Option<Backend4> {
        let key = BackendRevKey { addr: backend.addr, port: backend.port, proto, _pad: 0 };
        stable_copy!(SVC_BE_REV, &key)
    }
    #[inline(always)]
    fn has_listener(ctx: &SockAddrContext) -> bool {
        crate::accepted::has_listener4(ctx)
    }
    #[inline(always)]
    fn connected(ctx: &SockAddrContext) -> Option<(Backend4, Backend4)> {
        // SAFETY: the context's socket is valid for the helper; copied out at once.
        unsafe { SVC_SOCK_XLAT.get_ptr_mut(ctx).as_ref().copied() }.map(|x| (x.frontend, x.backend))
    }
    #[inline(always)]
    fn remember_connected(ctx: &SockAddrContext, frontend: Backend4, backend: Backend4) {
        remember_in_storage!(SVC_SOCK_XLAT, ctx, SockXlat { frontend, backend });
    }
    #[inline(always)]
    fn forget_connected(ctx: &SockAddrContext) {
        forget_in_storage!(SVC_SOCK_XLAT, ctx);
    }
    #[inline(always)]
    fn datagram_frontend(ctx: &SockAddrContext, backend: Backend4) -> Option<Backend4> {
        let key = RevNatKey { cookie: cookie(ctx), backend };
        // SAFETY: copied out at once.
        unsafe { SVC_REVNAT_SK.get(key).copied() }.map(|v| Backend4 { addr: v.addr, port: v.port, _pad: 0 })
    }
    #[inline(always)]
    fn remember_datagram(ctx: &SockAddrContext, backend: Backend4, frontend: Backend4) {
        let key = RevNatKey { cookie: cookie(ctx), backend };
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
    #[inline(always)]
    fn forget_datagram(cookie: u64, backend: Backend4) {
        #[expect(clippy::let_underscore_must_use, reason = "no entry (a socket never translated) is the usual case")]
        let _ = SVC_REVNAT_SK.remove(RevNatKey { cookie, backend });
    }
}

/// IPv6: the `SVC_*6` maps.
pub(crate) struct V6;

impl Family for V6 {
    type Key = FrontendKey6;
    type Backend = Backend6;
    type Frontend = Frontend6;
    const TRACE_FAMILY: u8 = 6;

    #[inline(always)]
    unsafe fn trace_write(b: &Backend6, addr: *mut [u8; 16], port: *mut u16) {
        // SAFETY: the caller's pointers are valid for writes.
        unsafe {
            addr.write(b.addr);
            port.write(b.port);
        }
    }

    #[inline(always)]
    fn key(dst: Backend6, proto: u8, scope: u8) -> FrontendKey6 {
        FrontendKey6 { addr: dst.addr, port: dst.port, proto, scope }
    }
    #[inline(always)]
    fn frontend_ptr(key: &FrontendKey6) -> Option<*const Frontend6> {
        SVC_FRONTENDS6.get_ptr(key)
    }
    #[inline(always)]
    fn slot(set_id: u32, slot: u32) -> Option<Backend6> {
        // SAFETY: copied out at once.
        unsafe { SVC_BACKENDS6.get(SlotKey { set_id, slot }).copied() }
    }
    #[inline(always)]
    fn indexed(set_id: u32, backend: Backend6) -> bool {
        // SAFETY: only tests presence.
        unsafe { SVC_BE_INDEX6.get(BackendIndexKey6 { set_id, backend }) }.is_some()
    }
    #[inline(always)]
    fn affinity(key: &AffinityKey) -> Option<(Backend6, u64)> {
        // SAFETY: copied out at once.
        unsafe { SVC_AFFINITY6.get(key).copied() }.map(|v| (v.backend, v.last_used_ns))
    }
    #[inline(always)]
    fn pin(key: AffinityKey, backend: Backend6, now: u64) {
        #[expect(
            clippy::let_underscore_must_use,
            reason = "best effort: if the LRU insert fails, this connection simply has no affinity recorded"
        )]
        let _ = SVC_AFFINITY6.insert(key, AffinityValue6 { backend, _pad: 0, last_used_ns: now }, 0);
    }
    #[inline(always)]
    fn reverse_owner(backend: Backend6, proto: u8) -> Option<Backend6> {
        let key = BackendRevKey6 { addr: backend.addr, port: backend.port, proto, _pad: 0 };
        stable_copy!(SVC_BE_REV6, &key)
    }
    #[inline(always)]
    fn has_listener(ctx: &SockAddrContext) -> bool {
        crate::accepted::has_listener6(ctx)
    }
    #[inline(always)]
    fn connected(ctx: &SockAddrContext) -> Option<(Backend6, Backend6)> {
        // SAFETY: the context's socket is valid for the helper; copied out at once.
        unsafe { SVC_SOCK_XLAT6.get_ptr_mut(ctx).as_ref().copied() }.map(|x| (x.frontend, x.backend))
    }
    #[inline(always)]
    fn remember_connected(ctx: &SockAddrContext, frontend: Backend6, backend: Backend6) {
        remember_in_storage!(SVC_SOCK_XLAT6, ctx, SockXlat6 { frontend, backend });
    }
    #[inline(always)]
    fn forget_connected(ctx: &SockAddrContext) {
        forget_in_storage!(SVC_SOCK_XLAT6, ctx);
    }
    #[inline(always)]
    fn datagram_frontend(ctx: &SockAddrContext, backend: Backend6) -> Option<Backend6> {
        let key = RevNatKey6 { cookie: cookie(ctx), backend, _pad: 0 };
        // SAFETY: copied out at once.
        unsafe { SVC_REVNAT6.get(key).copied() }
    }
    #[inline(always)]
    fn remember_datagram(ctx: &SockAddrContext, backend: Backend6, frontend: Backend6) {
        let key = RevNatKey6 { cookie: cookie(ctx), backend, _pad: 0 };
        // SAFETY: copied out at once.
        if unsafe { SVC_REVNAT6.get(key).copied() } != Some(frontend) {
            #[expect(
                clippy::let_underscore_must_use,
                reason = "best effort: without the entry recvfrom() shows the backend address (docs/maps.md, limits)"
            )]
            let _ = SVC_REVNAT6.insert(key, frontend, 0);
        }
    }
    #[inline(always)]
    fn forget_datagram(cookie: u64, backend: Backend6) {
        #[expect(clippy::let_underscore_must_use, reason = "no entry (a socket never translated) is the usual case")]
        let _ = SVC_REVNAT6.remove(RevNatKey6 { cookie, backend, _pad: 0 });
    }
}
