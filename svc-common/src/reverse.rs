//! The reverse owner of a backend: which frontend a connected socket that
//! reached this backend *without its own storage* asked for.
//!
//! Connected sockets (TCP, connected UDP) must see the frontend in
//! `getpeername()`/`recvmsg()`. Giving every translated socket its own
//! storage (`SVC_SOCK_XLAT`) costs an allocation per `connect()`, the
//! largest part of the hook's cost. Most backends are reached through one
//! frontend only, so the agent names, per backend, one frontend in
//! `SVC_BE_REV` (its *owner*, preferably the ClusterIP), and the hooks
//! keep storage only where that entry would not answer right:
//! - a socket translated to backend B for frontend F keeps no storage
//!   when `SVC_BE_REV[B] == F`, and keeps `(F, B)` otherwise (B shared by
//!   several frontends, or not listed yet);
//! - a socket connecting to B *directly* (not a frontend) while
//!   `SVC_BE_REV[B]` exists keeps `(B, B)`, so that it is not shown F;
//! - the reverse hooks answer from the socket's storage first, then from
//!   `SVC_BE_REV` (connected sockets only).
//!
//! A frontend also says which of its inline backends it owns
//! (`FrontendOf::owned`), so that `connect()` need not look them up.
//!
//! An owner entry never changes value; the agent deletes it only after its
//! backend has left the owner's set for a linger time (a socket that
//! relied on it may still be open: docs/maps.md).

use bytemuck::{Pod, Zeroable};

/// `SVC_BE_REV` key: a backend address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct BackendRevKey {
    /// Backend IPv4 address, as octets.
    pub addr: [u8; 4],
    /// Backend port (network byte order).
    pub port: u16,
    /// IANA protocol number ([`crate::proto`]).
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}

/// `SVC_BE_REV6` key: [`BackendRevKey`] with a 16-byte address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct BackendRevKey6 {
    /// Backend IPv6 address, as octets.
    pub addr: [u8; 16],
    /// Backend port (network byte order).
    pub port: u16,
    /// IANA protocol number ([`crate::proto`]).
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}

const _: () = {
    assert!(size_of::<BackendRevKey>() == 8);
    assert!(size_of::<BackendRevKey6>() == 20);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, and bytemuck::Pod proves no padding.
    unsafe impl aya::Pod for super::BackendRevKey {}
    unsafe impl aya::Pod for super::BackendRevKey6 {}
}
