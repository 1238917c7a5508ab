//! Whether a TCP socket was accepted (the server side of a connection):
//! its peer is a client, which this node never translated, so the
//! reverse-owner map (`svc_common::reverse`) must not answer for it (a
//! client may dial from an address and port that is also a backend, as
//! clients that reuse their listening port do). An accepted socket's local
//! port has a listener in its network namespace; a socket this node
//! translated without storage was unbound at `connect()` (bound ones keep
//! storage, `lb::remember_connect`), and the kernel never autobinds a
//! connecting socket to a port a listener holds.

use aya_ebpf::{
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock, bpf_sock_tuple},
    helpers::generated::{bpf_sk_lookup_tcp, bpf_sk_release},
    programs::SockAddrContext,
};

/// `struct bpf_sock_tuple`'s IPv4 member.
#[repr(C)]
struct Tuple4 {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
}

/// `struct bpf_sock_tuple`'s IPv6 member.
#[repr(C)]
struct Tuple6 {
    saddr: [u32; 4],
    daddr: [u32; 4],
    sport: u16,
    dport: u16,
}

/// The call's socket.
#[inline(always)]
fn sock(ctx: &SockAddrContext) -> *mut bpf_sock {
    // SAFETY: valid context; `sk` is always set for sock_addr programs.
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }
}

/// Whether the socket already has a local port (bound before `connect()`).
#[inline(always)]
pub(crate) fn is_bound(ctx: &SockAddrContext) -> bool {
    // SAFETY: a field of the context's socket.
    unsafe { (*sock(ctx)).src_port != 0 }
}

/// Whether a TCP listener holds the socket's local IPv4 address and port
/// (a lookup from the unspecified remote `0.0.0.0:0` matches no
/// established socket, only a listener).
#[inline(always)]
pub(crate) fn has_listener4(ctx: &SockAddrContext) -> bool {
    let sk = sock(ctx);
    // SAFETY: fields of the context's socket; src_port is in host order.
    let (addr, port) = unsafe { ((*sk).src_ip4, (*sk).src_port as u16) };
    let mut tuple = Tuple4 { saddr: 0, daddr: addr, sport: 0, dport: port.to_be() };
    lookup(ctx, (&raw mut tuple).cast(), size_of::<Tuple4>())
}

/// [`has_listener4`] for an IPv6 local address.
#[inline(always)]
pub(crate) fn has_listener6(ctx: &SockAddrContext) -> bool {
    let sk = sock(ctx);
    // SAFETY: fields of the context's socket, one 4-byte load each.
    let (addr, port) = unsafe {
        let ip = &(*sk).src_ip6;
        ([ip[0], ip[1], ip[2], ip[3]], (*sk).src_port as u16)
    };
    let mut tuple = Tuple6 { saddr: [0; 4], daddr: addr, sport: 0, dport: port.to_be() };
    lookup(ctx, (&raw mut tuple).cast(), size_of::<Tuple6>())
}

#[inline(always)]
fn lookup(ctx: &SockAddrContext, tuple: *mut bpf_sock_tuple, size: usize) -> bool {
    // SAFETY: `tuple` points at `size` bytes on this program's stack; a
    // found socket is released at once.
    unsafe {
        let found = bpf_sk_lookup_tcp(ctx.sock_addr.cast(), tuple, size as u32, BPF_F_CURRENT_NETNS as u64, 0);
        if found.is_null() {
            return false;
        }
        bpf_sk_release(found.cast());
    }
    true
}
