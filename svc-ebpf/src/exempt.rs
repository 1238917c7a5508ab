//! Sockets of exempt pods (`svc_common::exempt`): the hooks leave their
//! calls to frontends alone, so that a sidecar proxy or a sandbox sees the
//! Service address the application asked for.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use svc_common::exempt::{MAX_DEPTH, sock_stat};

use crate::maps::{SVC_CONFIG, SVC_EXEMPT, SVC_SOCK_STATS};

/// Whether the calling task's cgroup, or one of its ancestors, is exempt
/// (and if so, counts the call). Only asked for a destination that is a
/// frontend, and a walk only happens while some pod is exempt. The task's
/// cgroup stands for the socket's: in a pod they are the same (a socket
/// passed to a process of another cgroup is judged by its user). Not
/// inlined: its loop gets a frame of its own, off the hooks' stack.
#[inline(never)]
pub(crate) fn caller_is_exempt() -> bool {
    if SVC_CONFIG.get(0).is_none_or(|c| c.exempt_cgroups == 0) {
        return false;
    }
    // Level 0 is the root cgroup, never exempt.
    for level in 1..=MAX_DEPTH {
        // SAFETY: plain helper call (available to cgroup programs).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            // Past the task's own cgroup.
            return false;
        }
        if SVC_EXEMPT.get_ptr(id).is_some() {
            if let Some(count) = SVC_SOCK_STATS.get_ptr_mut(sock_stat::EXEMPT) {
                // SAFETY: this CPU's slot; programs do not migrate mid-run.
                unsafe { *count += 1 };
            }
            return true;
        }
    }
    false
}
