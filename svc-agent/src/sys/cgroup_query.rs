//! BPF_PROG_QUERY on a cgroup: which programs run at one of its hooks
//! (aya 0.14 has no public query for cgroup socket hooks).

use std::{fs::File, io, os::fd::AsRawFd as _};

/// The cgroup socket hooks of `enum bpf_attach_type`, by the program
/// that the agent attaches there (`svc_common::names::SOCK_PROGRAMS`).
pub(crate) fn attach_type(program: &str) -> Option<u32> {
    Some(match program {
        "svc_connect4" => 10, // BPF_CGROUP_INET4_CONNECT
        "svc_connect6" => 11, // BPF_CGROUP_INET6_CONNECT
        "svc_sendmsg4" => 14, // BPF_CGROUP_UDP4_SENDMSG
        "svc_sendmsg6" => 15, // BPF_CGROUP_UDP6_SENDMSG
        "svc_recvmsg4" => 19, // BPF_CGROUP_UDP4_RECVMSG
        "svc_recvmsg6" => 20, // BPF_CGROUP_UDP6_RECVMSG
        "svc_getpeer4" => 29, // BPF_CGROUP_INET4_GETPEERNAME
        "svc_getpeer6" => 30, // BPF_CGROUP_INET6_GETPEERNAME
        "svc_release" => 34,  // BPF_CGROUP_INET_SOCK_RELEASE
        _ => return None,
    })
}

/// Ids of the programs at `cgroup`'s hook `attach_type`: attached there
/// (`effective: false`), or every program that runs for its sockets,
/// inherited ones included (`effective: true`, BPF_F_QUERY_EFFECTIVE).
pub(crate) fn program_ids(cgroup: &File, attach_type: u32, effective: bool) -> io::Result<Vec<u32>> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_F_QUERY_EFFECTIVE: u32 = 1;
    // union bpf_attr, query member (up to prog_cnt; the tail the kernel
    // knows beyond it must be zero, so it is spelled out).
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
    }
    let mut capacity = 16usize;
    loop {
        let mut ids = vec![0u32; capacity];
        let mut attr = Query {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            query_flags: if effective { BPF_F_QUERY_EFFECTIVE } else { 0 },
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: capacity as u32,
            pad: 0,
        };
        // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_QUERY and
        // `ids` holds `prog_cnt` u32s.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, &raw mut attr, size_of::<Query>()) };
        if rc == 0 {
            ids.truncate(attr.prog_cnt as usize);
            return Ok(ids);
        }
        let err = io::Error::last_os_error();
        // ENOSPC: more programs than room; prog_cnt says how many.
        if err.raw_os_error() == Some(libc::ENOSPC) && (attr.prog_cnt as usize) > capacity {
            capacity = attr.prog_cnt as usize;
            continue;
        }
        return Err(err);
    }
}
