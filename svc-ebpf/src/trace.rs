//! The translation trace: one [`TraceEvent`] per translation or refusal
//! to `SVC_TRACE`, only while `svc-agent trace` runs (`SVC_TRACE_ON`), so
//! an idle agent pays one array lookup per call.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_netns_cookie, bpf_ktime_get_ns},
    programs::SockAddrContext,
};

use crate::{
    family::{self, Family},
    maps::{SVC_TRACE, SVC_TRACE_ON},
};

/// Whether a trace runs.
#[inline(always)]
pub(crate) fn on() -> bool {
    SVC_TRACE_ON.get(0).is_some_and(|pid| *pid != 0)
}

/// What an event says besides its addresses, packed into one argument:
/// BPF functions take at most five.
#[derive(Clone, Copy)]
pub(crate) struct What(u64);

impl What {
    #[inline(always)]
    pub(crate) fn new(hook: u8, proto: u8, verdict: u8, svc_id: u32) -> Self {
        Self(u64::from(hook) | u64::from(proto) << 8 | u64::from(verdict) << 16 | u64::from(svc_id) << 32)
    }
}

/// Writes one event (best effort: a full ring buffer drops it, as
/// `cilium monitor` loses events under load); `to` is null for a
/// refusal. Call only when [`on`]. Not inlined: the hooks have no stack
/// to spare (connect6 copies an IPv6 frontend onto its 512 bytes), and a
/// BPF function call gets a frame of its own.
#[inline(never)]
pub(crate) fn emit<F: Family>(ctx: &SockAddrContext, what: What, from: &F::Backend, to: *const F::Backend) {
    let (hook, proto, verdict, svc_id) =
        (what.0 as u8, (what.0 >> 8) as u8, (what.0 >> 16) as u8, (what.0 >> 32) as u32);
    let Some(mut entry) = SVC_TRACE.reserve(0) else { return };
    let e = entry.as_mut_ptr();
    // Written field by field into the ring buffer's memory: the hooks have
    // no stack to spare for a whole event (connect6 copies an IPv6
    // frontend onto its 512 bytes).
    // SAFETY: `e` points at a reserved, writable TraceEvent; every field
    // is written before the submit; plain helper calls on our context.
    unsafe {
        (&raw mut (*e).time_ns).write(bpf_ktime_get_ns());
        (&raw mut (*e).netns_cookie).write(bpf_get_netns_cookie(ctx.sock_addr.cast()));
        (&raw mut (*e).cgroup_id).write(bpf_get_current_cgroup_id());
        (&raw mut (*e).socket_cookie).write(family::cookie(ctx));
        (&raw mut (*e).hook).write(hook);
        (&raw mut (*e).proto).write(proto);
        (&raw mut (*e).verdict).write(verdict);
        (&raw mut (*e).family).write(F::TRACE_FAMILY);
        (&raw mut (*e).svc_id).write(svc_id);
        (&raw mut (*e)._pad).write(0);
        F::trace_write(from, &raw mut (*e).addr, &raw mut (*e).port);
        match to.as_ref() {
            Some(to) => F::trace_write(to, &raw mut (*e).to, &raw mut (*e).to_port),
            None => {
                (&raw mut (*e).to).write([0; 16]);
                (&raw mut (*e).to_port).write(0);
            }
        }
    }
    entry.submit(0);
}
