//! Where the IPv4 address of a call lives in `struct bpf_sock_addr`.
//!
//! An `AF_INET` socket has it in `user_ip4`. An `AF_INET6` socket that
//! talks to an IPv4 peer uses the v4-mapped form `::ffff:a.b.c.d` (Java's
//! default, .NET dual-mode sockets), which the v6 hooks see in `user_ip6`.
//! Both are served from the same IPv4 tables; only the access differs, so
//! the helpers in `lb4` are generic over [`Ip4Access`] and each hook picks
//! its implementation. (The verifier rejects any access to `user_ip4` from
//! a v6 hook and to `user_ip6` from a v4 one: monomorphising keeps each
//! program to its own fields.)

use aya_ebpf::programs::SockAddrContext;
use svc_common::Backend4;

/// Reads and writes the IPv4 address and port of a call.
pub(crate) trait Ip4Access {
    /// The destination (forward hooks) or peer (reverse hooks), or `None`
    /// when the call is not addressed to an IPv4 peer.
    fn read(ctx: &SockAddrContext) -> Option<Backend4>;

    /// Rewrites the address and port (both in network order).
    fn write(ctx: &SockAddrContext, addr: [u8; 4], port: u16);
}

/// An `AF_INET` socket: `user_ip4`.
pub(crate) struct Inet;

impl Ip4Access for Inet {
    #[inline(always)]
    fn read(ctx: &SockAddrContext) -> Option<Backend4> {
        // SAFETY: valid context. user_ip4 holds the address in network
        // order: its in-memory bytes are the octets.
        let sa = unsafe { &*ctx.sock_addr };
        Some(Backend4 { addr: sa.user_ip4.to_ne_bytes(), port: sa.user_port as u16, _pad: 0 })
    }

    #[inline(always)]
    fn write(ctx: &SockAddrContext, addr: [u8; 4], port: u16) {
        // SAFETY: as above; user_ip4/user_port are writable in every v4 hook we use.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip4 = u32::from_ne_bytes(addr);
        sa.user_port = u32::from(port);
    }
}

/// An `AF_INET6` socket with a v4-mapped peer: the last word of
/// `user_ip6`, when the first three are `0, 0, 0x0000ffff`.
pub(crate) struct Mapped;

/// The third word of a v4-mapped address, as it sits in memory.
const MAPPED_PREFIX_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl Ip4Access for Mapped {
    #[inline(always)]
    fn read(ctx: &SockAddrContext) -> Option<Backend4> {
        // SAFETY: valid context; user_ip6 is readable in every v6 hook.
        let sa = unsafe { &*ctx.sock_addr };
        // One load per word: the context only allows 4-byte accesses here.
        let (w0, w1, w2, w3) = (sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]);
        if w0 != 0 || w1 != 0 || w2 != MAPPED_PREFIX_WORD {
            return None;
        }
        Some(Backend4 { addr: w3.to_ne_bytes(), port: sa.user_port as u16, _pad: 0 })
    }

    #[inline(always)]
    fn write(ctx: &SockAddrContext, addr: [u8; 4], port: u16) {
        // SAFETY: as above; the prefix words already hold the mapped prefix
        // (read() checked them), so only the IPv4 word changes.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip6[3] = u32::from_ne_bytes(addr);
        sa.user_port = u32::from(port);
    }
}
