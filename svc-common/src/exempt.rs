//! Per-pod opt-out of socket translation (`svc.dataplane.io/socket-lb:
//! disabled`): the cgroups whose sockets the hooks leave alone.
//!
//! The agent writes one [`ExemptPod`] per exempt pod into `SVC_EXEMPT`,
//! keyed by the pod's cgroup id (the inode of its cgroup v2 directory),
//! and the number of entries into [`super::Config::exempt_cgroups`]. The
//! connect and sendmsg hooks, for a destination that is a frontend, walk
//! the calling task's cgroup and its ancestors ([`MAX_DEPTH`] levels) and
//! pass the call through untouched when one is exempt; with no entries
//! they do not walk at all.

use bytemuck::{Pod, Zeroable};

use crate::NAME_LEN;

/// Cgroup levels below the root that the programs look at. kubelet's pod
/// cgroups sit at depth 2-4 (`kubepods[/qos]/pod<uid>`, or the systemd
/// slices), their containers one below; 16 leaves room for a kubelet
/// under a nested `--cgroup-root`.
pub const MAX_DEPTH: i32 = 16;

/// Who an exempt cgroup belongs to, for `svc-agent status`. Never read by
/// the programs (they only test the key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ExemptPod {
    /// The pod's namespace, NUL-padded (cut at [`NAME_LEN`]).
    pub namespace: [u8; NAME_LEN],
    /// The pod's name, NUL-padded (cut at [`NAME_LEN`]).
    pub name: [u8; NAME_LEN],
}

/// Counters of the socket programs (`SVC_SOCK_STATS`, per-CPU).
pub mod sock_stat {
    /// A connect or sendmsg to a frontend from an exempt cgroup, left
    /// untranslated.
    pub const EXEMPT: u32 = 0;
    /// Number of slots.
    pub const COUNT: u32 = 1;
}

const _: () = assert!(size_of::<ExemptPod>() == 2 * NAME_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], Copy, and bytemuck::Pod proves it has no padding
    // bytes and is valid for any bit pattern.
    unsafe impl aya::Pod for super::ExemptPod {}
}
