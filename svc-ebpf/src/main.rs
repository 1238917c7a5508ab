//! cgroup/sock_addr programs that implement Kubernetes Services at the
//! socket: one short function per hook over the helpers in `lb`.
//!
//! - `connect4` (TCP, connected UDP) and `sendmsg4` (unconnected UDP)
//!   rewrite a frontend destination to a backend;
//! - `recvmsg4` (UDP replies) and `getpeername4` rewrite a backend address
//!   back to the frontend the application asked for;
//! - `connect6`, `sendmsg6`, `recvmsg6` and `getpeername6` do the same for
//!   `AF_INET6` sockets: a v4-mapped peer (`::ffff:a.b.c.d`) with the IPv4
//!   maps, any other with the IPv6 maps ([`addr`], [`family`]). A v4-mapped
//!   unconnected datagram never reaches `sendmsg6`: the kernel sends it
//!   through its IPv4 path, where `sendmsg4` translates it.
//!
//! `release` (cgroup/sock_release) drops a closed connected UDP socket's
//! datagram entry ([`release`]).
//!
//! `tc_in` and `tc_out` (TC, on the node's devices) translate packets of
//! clients outside the node ([`nodeport`]).
#![no_std]
#![no_main]
// The program macros hand each entry point its context by value.
#![expect(clippy::needless_pass_by_value, reason = "aya-ebpf's program signature")]

mod accepted;
mod addr;
mod exempt;
mod family;
mod lb;
mod maps;
mod nodeport;
mod release;
mod trace;

use addr::{Access, Inet, Mapped, Native};
use aya_ebpf::{
    helpers::generated::bpf_set_retval,
    macros::{cgroup_sock, cgroup_sock_addr, classifier},
    programs::{SockAddrContext, SockContext, TcContext},
};
use family::{Family, V4, V6};
use lb::Verdict;
use svc_common::{errno, proto, scope, trace_hook, trace_verdict};

/// Return value that lets the syscall proceed.
const ALLOW: i32 = 1;
/// Return value that fails the syscall (with the errno from bpf_set_retval).
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub(crate) fn svc_connect4(ctx: SockAddrContext) -> i32 {
    match protocol(&ctx) {
        Some(p) => forward::<V4, Inet>(&ctx, <Inet as Access<V4>>::read(&ctx), p, Hook::Connect),
        None => ALLOW,
    }
}

#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn svc_sendmsg4(ctx: SockAddrContext) -> i32 {
    forward::<V4, Inet>(&ctx, <Inet as Access<V4>>::read(&ctx), proto::UDP, Hook::Sendmsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub(crate) fn svc_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse::<V4, Inet>(&ctx, <Inet as Access<V4>>::read(&ctx), Hook::Recvmsg);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub(crate) fn svc_getpeer4(ctx: SockAddrContext) -> i32 {
    reverse::<V4, Inet>(&ctx, <Inet as Access<V4>>::read(&ctx), Hook::Getpeername);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub(crate) fn svc_connect6(ctx: SockAddrContext) -> i32 {
    let Some(p) = protocol(&ctx) else { return ALLOW };
    // One read decides the family (and is the destination for v4-mapped).
    match <Mapped as Access<V4>>::read(&ctx) {
        Some(dst) => forward::<V4, Mapped>(&ctx, Some(dst), p, Hook::Connect),
        None => forward::<V6, Native>(&ctx, <Native as Access<V6>>::read(&ctx), p, Hook::Connect),
    }
}

#[cgroup_sock_addr(sendmsg6)]
pub(crate) fn svc_sendmsg6(ctx: SockAddrContext) -> i32 {
    forward::<V6, Native>(&ctx, <Native as Access<V6>>::read(&ctx), proto::UDP, Hook::Sendmsg)
}

#[cgroup_sock_addr(recvmsg6)]
pub(crate) fn svc_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse6(&ctx, Hook::Recvmsg);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub(crate) fn svc_getpeer6(ctx: SockAddrContext) -> i32 {
    reverse6(&ctx, Hook::Getpeername);
    ALLOW
}

#[cgroup_sock(sock_release)]
pub(crate) fn svc_release(ctx: SockContext) -> i32 {
    release::forget_connected_datagram(&ctx);
    ALLOW
}

#[classifier]
pub(crate) fn svc_tc_in(ctx: TcContext) -> i32 {
    nodeport::ingress(&ctx)
}

#[classifier]
pub(crate) fn svc_tc_out(ctx: TcContext) -> i32 {
    nodeport::egress(&ctx)
}

/// The socket's protocol, if it is one the hooks translate.
#[inline(always)]
fn protocol(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: valid context.
    let protocol = unsafe { (*ctx.sock_addr).protocol };
    match protocol {
        p if p == u32::from(proto::TCP) => Some(proto::TCP),
        p if p == u32::from(proto::UDP) => Some(proto::UDP),
        _ => None,
    }
}

/// `TCP_ESTABLISHED` of include/net/tcp_states.h: also the state the
/// kernel gives a connected UDP socket.
pub(crate) const TCP_ESTABLISHED: u32 = 1;

/// Whether the call's socket is connected.
#[inline(always)]
fn is_connected(ctx: &SockAddrContext) -> bool {
    // SAFETY: valid context; `sk` is always set for sock_addr programs.
    unsafe { (*(*ctx.sock_addr).__bindgen_anon_1.sk).state == TCP_ESTABLISHED }
}

/// Which hook runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Connect,
    Sendmsg,
    Recvmsg,
    Getpeername,
}

impl Hook {
    /// Its [`trace_hook`] value for family `F` (an AF_INET6 socket's
    /// v4-mapped peer is traced as the IPv4 hook whose maps served it).
    #[inline(always)]
    fn trace_id<F: Family>(self) -> u8 {
        let v4 = F::TRACE_FAMILY == 4;
        match (self, v4) {
            (Self::Connect, true) => trace_hook::CONNECT4,
            (Self::Sendmsg, true) => trace_hook::SENDMSG4,
            (Self::Recvmsg, true) => trace_hook::RECVMSG4,
            (Self::Getpeername, true) => trace_hook::GETPEER4,
            (Self::Connect, false) => trace_hook::CONNECT6,
            (Self::Sendmsg, false) => trace_hook::SENDMSG6,
            (Self::Recvmsg, false) => trace_hook::RECVMSG6,
            (Self::Getpeername, false) => trace_hook::GETPEER6,
        }
    }
}

/// Destination rewrite shared by the connect and sendmsg hooks; `dst` is
/// the call's destination as read through `A` (the caller reads it once).
#[inline(always)]
fn forward<F: Family, A: Access<F>>(ctx: &SockAddrContext, dst: Option<F::Backend>, protocol: u8, hook: Hook) -> i32 {
    let Some(dst) = dst else {
        // Not an address of this kind: nothing to translate.
        return ALLOW;
    };
    let key = F::key(dst, protocol, scope::ALL);
    match lb::select::<F, SockAddrContext>(ctx, &key) {
        Verdict::Pass => {
            // A socket connecting elsewhere (a UDP socket's new peer, a TCP
            // socket after a failed connect) drops the translation of an
            // earlier connect, and one connecting straight to a backend
            // address is remembered as such: its peer is never shown as a
            // Service address. (Each family's storage is consulted only for
            // peers of that family, and every connect to one either
            // overwrites or drops it.)
            if hook == Hook::Connect {
                lb::remember_connect::<F>(ctx, dst, dst, protocol);
            }
            ALLOW
        }
        // (Twin and Deny are outside clients' verdicts; sockets never
        // get them.)
        Verdict::Refuse | Verdict::Twin | Verdict::Deny => {
            if trace::on() {
                let what = trace::What::new(hook.trace_id::<F>(), protocol, trace_verdict::REFUSED, 0);
                trace::emit::<F>(ctx, what, &dst, core::ptr::null());
            }
            // kube-proxy REJECTs: the caller sees ECONNREFUSED, not EPERM.
            // SAFETY: helper available to cgroup sock_addr programs.
            unsafe { bpf_set_retval(-errno::ECONNREFUSED) };
            REJECT
        }
        Verdict::Translate(pick) => {
            let (backend, svc_id) = (pick.backend, pick.svc_id());
            if trace::on() {
                let what = trace::What::new(hook.trace_id::<F>(), protocol, trace_verdict::TRANSLATED, svc_id);
                trace::emit::<F>(ctx, what, &dst, &raw const backend);
            }
            if hook == Hook::Connect {
                if pick.owned() {
                    lb::remember_owned_connect::<F>(ctx, dst, backend, protocol);
                } else {
                    lb::remember_connect::<F>(ctx, dst, backend, protocol);
                }
            }
            // Datagrams are remembered per (socket, backend); connected UDP
            // too, so that the agent can find sockets of a removed backend.
            if protocol == proto::UDP {
                F::remember_datagram(ctx, backend, dst);
            }
            A::write(ctx, &backend);
            ALLOW
        }
    }
}

/// Source rewrite shared by the recvmsg and getpeername hooks; `peer` is
/// the address the call reports, as read through `A`.
#[inline(always)]
fn reverse<F: Family, A: Access<F>>(ctx: &SockAddrContext, peer: Option<F::Backend>, hook: Hook) {
    let Some(peer) = peer else { return };
    // (UDP-Lite and others: as UDP, through the datagram map.)
    let proto = protocol(ctx).unwrap_or(proto::UDP);
    // getpeername() reports a connected socket's peer; recvmsg() the
    // sender of a datagram, which is the peer if the socket is connected.
    let connected = hook == Hook::Getpeername || is_connected(ctx);
    if let Some(frontend) = lb::recall_frontend::<F>(ctx, peer, proto, connected) {
        if trace::on() {
            let what = trace::What::new(hook.trace_id::<F>(), proto, trace_verdict::TRANSLATED, 0);
            trace::emit::<F>(ctx, what, &peer, &raw const frontend);
        }
        A::write(ctx, &frontend);
    }
}

/// The v6 reverse hooks: a v4-mapped peer through the IPv4 maps, any other
/// through the IPv6 ones (one read decides).
#[inline(always)]
fn reverse6(ctx: &SockAddrContext, hook: Hook) {
    match <Mapped as Access<V4>>::read(ctx) {
        Some(peer) => reverse::<V4, Mapped>(ctx, Some(peer), hook),
        None => reverse::<V6, Native>(ctx, <Native as Access<V6>>::read(ctx), hook),
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
