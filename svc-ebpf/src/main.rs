//! cgroup/sock_addr programs that implement Kubernetes Services at the
//! socket: one short function per hook over the helpers in `lb4`.
//!
//! - `connect4` (TCP, connected UDP) and `sendmsg4` (unconnected UDP)
//!   rewrite a frontend destination to a backend;
//! - `recvmsg4` (UDP replies) and `getpeername4` rewrite a backend address
//!   back to the frontend the application asked for.
#![no_std]
#![no_main]
// The program macros hand each entry point its context by value.
#![expect(clippy::needless_pass_by_value, reason = "aya-ebpf's program signature")]

mod lb4;
mod maps;

use aya_ebpf::{helpers::generated::bpf_set_retval, macros::cgroup_sock_addr, programs::SockAddrContext};
use lb4::Verdict;
use svc_common::{errno, proto};

/// Return value that lets the syscall proceed.
const ALLOW: i32 = 1;
/// Return value that fails the syscall (with the errno from bpf_set_retval).
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub(crate) fn svc_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: valid context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    match protocol {
        p if p == u32::from(proto::TCP) => forward(&ctx, proto::TCP, Hook::Connect),
        p if p == u32::from(proto::UDP) => forward(&ctx, proto::UDP, Hook::Connect),
        _ => ALLOW,
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn svc_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward(&ctx, proto::UDP, Hook::Sendmsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub(crate) fn svc_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub(crate) fn svc_getpeer4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    ALLOW
}

/// Which forward hook runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Connect,
    Sendmsg,
}

/// Destination rewrite shared by connect4 and sendmsg4.
#[inline(always)]
fn forward(ctx: &SockAddrContext, protocol: u8, hook: Hook) -> i32 {
    let key = lb4::frontend_key(ctx, protocol);
    match lb4::select(ctx, &key) {
        Verdict::Pass => {
            if hook == Hook::Connect && protocol == proto::UDP {
                lb4::forget_connected(ctx);
            }
            ALLOW
        }
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
            lb4::set_addr(ctx, backend.addr, backend.port);
            ALLOW
        }
    }
}

/// Source rewrite shared by recvmsg4 and getpeername4.
#[inline(always)]
fn reverse(ctx: &SockAddrContext) {
    if let Some((addr, port)) = lb4::recall_frontend(ctx) {
        lb4::set_addr(ctx, addr, port);
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
