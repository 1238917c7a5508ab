//! Where the address of a call lives in `struct bpf_sock_addr`, and which
//! family's maps serve it.
//!
//! An `AF_INET` socket has it in `user_ip4` ([`Inet`]). An `AF_INET6`
//! socket that talks to an IPv4 peer uses the v4-mapped form
//! `::ffff:a.b.c.d` (Java's default, .NET dual-mode sockets), which the v6
//! hooks see in `user_ip6` ([`Mapped`]): served from the IPv4 maps, like
//! `Inet`. Any other IPv6 address is native ([`Native`]), served from the
//! IPv6 maps. The helpers in `lb` are generic over [`Access`], and each
//! hook tries the accesses that apply to it. (The verifier rejects any
//! access to `user_ip4` from a v6 hook and to `user_ip6` from a v4 one:
//! monomorphising keeps each program to its own fields.)

use aya_ebpf::programs::SockAddrContext;
use svc_common::{Backend4, Backend6};

use crate::family::{Family, V4, V6};

/// Reads and writes the address and port of a call, for family `F`.
pub(crate) trait Access<F: Family> {
    /// The destination (forward hooks) or peer (reverse hooks), or `None`
    /// when the call's address is not of this kind.
    fn read(ctx: &SockAddrContext) -> Option<F::Backend>;

    /// Rewrites the address and port (both in network order).
    fn write(ctx: &SockAddrContext, to: &F::Backend);
}

/// An `AF_INET` socket: `user_ip4`.
pub(crate) struct Inet;

impl Access<V4> for Inet {
    #[inline(always)]
    fn read(ctx: &SockAddrContext) -> Option<Backend4> {
        // SAFETY: valid context.
        let sa = unsafe { &*ctx.sock_addr };
        Some(backend4(sa.user_ip4, sa.user_port as u16))
    }

    #[inline(always)]
    fn write(ctx: &SockAddrContext, to: &Backend4) {
        // SAFETY: as above; user_ip4/user_port are writable in every v4 hook we use.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip4 = u32::from_ne_bytes(to.addr);
        sa.user_port = u32::from(to.port);
    }
}

/// An `AF_INET6` socket with a v4-mapped peer: the last word of
/// `user_ip6`, when the first three are `0, 0, 0x0000ffff`.
pub(crate) struct Mapped;

/// The third word of a v4-mapped address, as it sits in memory.
const MAPPED_PREFIX_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The four words of `user_ip6`, one 4-byte load each (the only access
/// the context allows there).
#[inline(always)]
fn ip6_words(ctx: &SockAddrContext) -> [u32; 4] {
    // SAFETY: valid context; user_ip6 is readable in every v6 hook.
    let sa = unsafe { &*ctx.sock_addr };
    [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]]
}

/// Whether an IPv6 address's words (as they sit in memory) are v4-mapped.
#[inline(always)]
pub(crate) fn is_mapped(w: &[u32; 4]) -> bool {
    w[0] == 0 && w[1] == 0 && w[2] == MAPPED_PREFIX_WORD
}

#[inline(always)]
fn port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: valid context.
    unsafe { (*ctx.sock_addr).user_port as u16 }
}

impl Access<V4> for Mapped {
    #[inline(always)]
    fn read(ctx: &SockAddrContext) -> Option<Backend4> {
        let w = ip6_words(ctx);
        if !is_mapped(&w) {
            return None;
        }
        Some(backend4(w[3], port(ctx)))
    }

    #[inline(always)]
    fn write(ctx: &SockAddrContext, to: &Backend4) {
        // SAFETY: as above; the prefix words already hold the mapped prefix
        // (read() checked them), so only the IPv4 word changes.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip6[3] = u32::from_ne_bytes(to.addr);
        sa.user_port = u32::from(to.port);
    }
}

/// An IPv4 address from its word as it sits in memory (network order: its
/// in-memory bytes are the octets), and a port in network order.
#[inline(always)]
pub(crate) fn backend4(word: u32, port: u16) -> Backend4 {
    Backend4 { addr: word.to_ne_bytes(), port, _pad: 0 }
}

/// An IPv6 address from its words as they sit in memory (network order),
/// and a port in network order.
#[inline(always)]
pub(crate) fn backend6(w: &[u32; 4], port: u16) -> Backend6 {
    let mut addr = [0u8; 16];
    for (i, word) in w.iter().enumerate() {
        let bytes = word.to_ne_bytes();
        addr[i * 4] = bytes[0];
        addr[i * 4 + 1] = bytes[1];
        addr[i * 4 + 2] = bytes[2];
        addr[i * 4 + 3] = bytes[3];
    }
    Backend6 { addr, port, _pad: 0 }
}

/// An `AF_INET6` socket with a native IPv6 peer: all of `user_ip6`.
pub(crate) struct Native;

impl Access<V6> for Native {
    #[inline(always)]
    fn read(ctx: &SockAddrContext) -> Option<Backend6> {
        let w = ip6_words(ctx);
        if is_mapped(&w) {
            return None;
        }
        Some(backend6(&w, port(ctx)))
    }

    #[inline(always)]
    fn write(ctx: &SockAddrContext, to: &Backend6) {
        // SAFETY: as above; user_ip6/user_port are writable in every v6 hook we use.
        let sa = unsafe { &mut *ctx.sock_addr };
        for i in 0..4 {
            let b = &to.addr[i * 4..i * 4 + 4];
            sa.user_ip6[i] = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        }
        sa.user_port = u32::from(to.port);
    }
}
