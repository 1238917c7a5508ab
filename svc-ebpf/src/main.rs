//! cgroup/sock_addr programs that implement Kubernetes Services at the
//! socket: one short function per hook over the helpers in `lb4`.
//!
//! - `connect4` (TCP, connected UDP) and `sendmsg4` (unconnected UDP)
//!   rewrite a frontend destination to a backend;
//! - `recvmsg4` (UDP replies) and `getpeername4` rewrite a backend address
//!   back to the frontend the application asked for;
//! - `connect6`, `recvmsg6` and `getpeername6` do the same for `AF_INET6`
//!   sockets talking to IPv4 Services through v4-mapped addresses
//!   (`::ffff:a.b.c.d`), with the same IPv4 tables ([`addr`]). Unconnected
//!   v4-mapped datagrams need no `sendmsg6`: the kernel sends them through
//!   the IPv4 path, where `sendmsg4` translates them.
#![no_std]
#![no_main]
// The program macros hand each entry point its context by value.
#![expect(clippy::needless_pass_by_value, reason = "aya-ebpf's program signature")]

mod addr;
mod lb4;
mod maps;

use addr::{Inet, Ip4Access, Mapped};
use aya_ebpf::{helpers::generated::bpf_set_retval, macros::cgroup_sock_addr, programs::SockAddrContext};
use lb4::Verdict;
use svc_common::{errno, proto};

/// Return value that lets the syscall proceed.
const ALLOW: i32 = 1;
/// Return value that fails the syscall (with the errno from bpf_set_retval).
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub(crate) fn svc_connect4(ctx: SockAddrContext) -> i32 {
    connect::<Inet>(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn svc_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward::<Inet>(&ctx, proto::UDP, Hook::Sendmsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub(crate) fn svc_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse::<Inet>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub(crate) fn svc_getpeer4(ctx: SockAddrContext) -> i32 {
    reverse::<Inet>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub(crate) fn svc_connect6(ctx: SockAddrContext) -> i32 {
    connect::<Mapped>(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub(crate) fn svc_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse::<Mapped>(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub(crate) fn svc_getpeer6(ctx: SockAddrContext) -> i32 {
    reverse::<Mapped>(&ctx);
    ALLOW
}

/// connect(): TCP and UDP sockets; other protocols are left alone.
#[inline(always)]
fn connect<A: Ip4Access>(ctx: &SockAddrContext) -> i32 {
    // SAFETY: valid context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    match protocol {
        p if p == u32::from(proto::TCP) => forward::<A>(ctx, proto::TCP, Hook::Connect),
        p if p == u32::from(proto::UDP) => forward::<A>(ctx, proto::UDP, Hook::Connect),
        _ => ALLOW,
    }
}

/// Which forward hook runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Connect,
    Sendmsg,
}

/// Destination rewrite shared by the connect and sendmsg hooks.
#[inline(always)]
fn forward<A: Ip4Access>(ctx: &SockAddrContext, protocol: u8, hook: Hook) -> i32 {
    let Some(key) = lb4::frontend_key::<A>(ctx, protocol) else {
        // Not an IPv4 peer (a native IPv6 address): nothing to translate.
        return pass(ctx, protocol, hook);
    };
    match lb4::select(ctx, &key) {
        Verdict::Pass => pass(ctx, protocol, hook),
        Verdict::Refuse => {
            // kube-proxy REJECTs: the caller sees ECONNREFUSED, not EPERM.
            // SAFETY: helper available to cgroup sock_addr programs.
            unsafe { bpf_set_retval(-errno::ECONNREFUSED) };
            REJECT
        }
        Verdict::Translate(backend) => {
            if hook == Hook::Connect {
                lb4::remember_connected(ctx, &key, backend);
            }
            // Datagrams are remembered per (socket, backend); connected UDP
            // too, so that the agent can find sockets of a removed backend.
            if protocol == proto::UDP {
                lb4::remember_datagram(ctx, &key, backend);
            }
            A::write(ctx, backend.addr, backend.port);
            ALLOW
        }
    }
}

/// The call is not to a frontend. A UDP socket connecting elsewhere drops
/// the translation of an earlier connect, so that its new peer is never
/// shown as a Service address.
#[inline(always)]
fn pass(ctx: &SockAddrContext, protocol: u8, hook: Hook) -> i32 {
    if hook == Hook::Connect && protocol == proto::UDP {
        lb4::forget_connected(ctx);
    }
    ALLOW
}

/// Source rewrite shared by the recvmsg and getpeername hooks.
#[inline(always)]
fn reverse<A: Ip4Access>(ctx: &SockAddrContext) {
    if let Some((addr, port)) = lb4::recall_frontend::<A>(ctx) {
        A::write(ctx, addr, port);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// The kernel requires a GPL-compatible license for several helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
