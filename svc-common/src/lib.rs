//! Map keys and values shared by `svc-ebpf` (kernel side) and `svc-agent`
//! (userspace side).
//!
//! Every type is `#[repr(C)]`, has explicit padding fields (so `bytemuck::Pod`
//! proves there are no hidden bytes the kernel would hash) and a size assert.
//! Addresses are stored as octets and ports in **network byte order**,
//! exactly the bytes the socket hooks read from `struct bpf_sock_addr`, so
//! the programs never swap bytes. The agent converts at its edge
//! ([`port_be`], [`port_host`]).
//!
//! The design (who writes, who reads, why updates are atomic) is in
//! `docs/maps.md`.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod exempt;
pub mod flows;
#[cfg(feature = "user")]
pub mod host;
pub mod maps;
pub mod reverse;
pub mod trace;

pub use exempt::ExemptPod;
pub use flows::*;
pub use maps::*;
pub use reverse::{BackendRevKey, BackendRevKey6};
pub use trace::*;

/// A port in network byte order, as the low 16 bits of `bpf_sock_addr.user_port`.
#[inline]
#[must_use]
pub const fn port_be(port: u16) -> u16 {
    port.to_be()
}

/// A port held in network byte order, back in host order.
#[inline]
#[must_use]
pub const fn port_host(be: u16) -> u16 {
    u16::from_be(be)
}

/// IANA protocol numbers used in [`FrontendKey4::proto`].
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP (accepted from manifests, not translated at the socket layer yet).
    pub const SCTP: u8 = 132;
}

/// Errno values the programs hand to `bpf_set_retval`.
pub mod errno {
    /// `connect()`/`sendmsg()` to a frontend with no usable backend.
    pub const ECONNREFUSED: i32 = 111;
}
