//! The translation trace (`svc-agent trace`, docs/cli.md): while
//! `SVC_TRACE_ON[0]` holds a tracer's pid, the socket programs write one
//! [`TraceEvent`] per translation (or refusal) to the `SVC_TRACE` ring
//! buffer; while it holds 0 they write nothing (one array lookup per call).

use bytemuck::{Pod, Zeroable};

/// One translation, as a socket program saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TraceEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub time_ns: u64,
    /// The caller's network namespace cookie.
    pub netns_cookie: u64,
    /// The caller's cgroup v2 id (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// The socket's cookie (`SO_COOKIE`).
    pub socket_cookie: u64,
    /// [`trace_hook`].
    pub hook: u8,
    /// IANA protocol number.
    pub proto: u8,
    /// [`trace_verdict`].
    pub verdict: u8,
    /// 4 or 6: how many bytes of [`Self::addr`] and [`Self::to`] count.
    pub family: u8,
    /// The Service port (forward hooks; 0 for the reverse ones).
    pub svc_id: u32,
    /// What the call named: the frontend (forward hooks) or the backend the
    /// socket reports (reverse hooks).
    pub addr: [u8; 16],
    /// What it became: the backend (forward), the frontend (reverse); zero
    /// for a refusal.
    pub to: [u8; 16],
    /// Ports of `addr` and `to`, network byte order.
    pub port: u16,
    pub to_port: u16,
    /// Always zero.
    pub _pad: u32,
}

const _: () = assert!(size_of::<TraceEvent>() == 80);

/// Values of [`TraceEvent::hook`].
pub mod trace_hook {
    pub const CONNECT4: u8 = 1;
    pub const SENDMSG4: u8 = 2;
    pub const RECVMSG4: u8 = 3;
    pub const GETPEER4: u8 = 4;
    pub const CONNECT6: u8 = 5;
    pub const SENDMSG6: u8 = 6;
    pub const RECVMSG6: u8 = 7;
    pub const GETPEER6: u8 = 8;
    /// Names, by value (index 0 unused).
    pub const NAMES: [&str; 9] =
        ["?", "connect4", "sendmsg4", "recvmsg4", "getpeername4", "connect6", "sendmsg6", "recvmsg6", "getpeername6"];
}

/// Values of [`TraceEvent::verdict`].
pub mod trace_verdict {
    /// Rewritten (forward: to a backend; reverse: back to the frontend).
    pub const TRANSLATED: u8 = 1;
    /// A frontend without a usable backend: the call failed with
    /// ECONNREFUSED.
    pub const REFUSED: u8 = 2;
}
