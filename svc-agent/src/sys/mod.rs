//! The few system facts and calls the agent needs that aya does not cover.

pub(crate) mod cgroup_query;
pub(crate) mod sock_diag;

use std::{
    ffi::CString,
    fs, io,
    os::{fd::FromRawFd as _, fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::Path,
};

/// `statfs.f_type` of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The cgroup v2 mount point (shared with the tests and the bench).
pub(crate) use svc_common::host::cgroup2_mount;

/// Whether `path` (or its closest existing ancestor) is on a bpffs mount.
pub(crate) fn is_on_bpffs(path: &Path) -> io::Result<bool> {
    let mut probe = path;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let c = CString::new(probe.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, reason = "f_type's width differs between libcs")]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The network namespace cookie of the calling thread's namespace, the
/// same number `bpf_get_netns_cookie()` returns in the programs.
pub(crate) fn current_netns_cookie() -> io::Result<u64> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd and out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Returns free heap memory to the kernel after bulk work (the parse of a
/// cold start, a large batch): mimalloc otherwise keeps freed pages cached
/// for reuse, tens of MiB after a cold start with 10k Services. A few
/// milliseconds; called only after such work.
pub(crate) fn trim_heap() {
    // SAFETY: mi_collect has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
pub(crate) fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes into the struct we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Detaches the bpf_link pinned at `path` from its hook, even if another
/// process still holds it open (BPF_LINK_DETACH). aya 0.14 only detaches
/// links it created itself, and `cleanup` must work on a crashed agent's
/// pins, so this is the one raw bpf(2) use in the agent.
pub(crate) fn detach_pinned_link(path: &Path) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;

    // union bpf_attr, obj_get member. The kernel rejects non-zero bytes
    // past the fields it knows, so the tail padding is spelled out.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let mut attr = ObjGet { pathname: c.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, pad: 0 };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_OBJ_GET.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &raw mut attr, size_of::<ObjGet>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };

    // union bpf_attr, link_detach member: link_fd.
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    let mut attr = LinkDetach { link_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32 };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_DETACH.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_DETACH, &raw mut attr, size_of::<LinkDetach>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Addresses of both families configured on this network namespace's
/// interfaces, with the interface each is on; except loopback ones (127/8,
/// ::1) and IPv6 link-local ones (fe80::/10: not reachable as
/// `nodeIP:nodePort` without a zone).
pub(crate) fn local_addresses() -> io::Result<Vec<(String, std::net::IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur walks the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of at least sa_family.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            let ip: Option<std::net::IpAddr> = match family {
                libc::AF_INET => {
                    // SAFETY: AF_INET addresses are sockaddr_in.
                    let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                    Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
                }
                libc::AF_INET6 => {
                    // SAFETY: AF_INET6 addresses are sockaddr_in6.
                    let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                    let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                    (!ip.is_unicast_link_local()).then_some(ip.into())
                }
                _ => None,
            };
            if let Some(ip) = ip.filter(|ip| !ip.is_loopback()) {
                // SAFETY: ifa_name is a NUL-terminated interface name.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
                if !out.contains(&(name.clone(), ip)) {
                    out.push((name, ip));
                }
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable_by_key(|(_, ip)| *ip);
    Ok(out)
}

/// The index of interface `name` in this network namespace.
pub(crate) fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The link-layer type of interface `name` (`ARPHRD_*`: 1 is Ethernet),
/// from SIOCGIFHWADDR in this network namespace.
pub(crate) fn link_type(name: &str) -> Option<u16> {
    const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
    let req = interface_ioctl(name, SIOCGIFHWADDR, |_| {})?;
    // SAFETY: on success the kernel filled the hardware-address union member.
    Some(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Runs interface ioctl `request` on `name` (an `ifreq` named `name`,
/// completed by `fill`) over a throwaway socket; the `ifreq` the kernel
/// answered with, or `None` if the call failed.
fn interface_ioctl(name: &str, request: libc::c_ulong, fill: impl FnOnce(&mut libc::ifreq)) -> Option<libc::ifreq> {
    // SAFETY: a zeroed ifreq we fill below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    fill(&mut req);
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a valid socket and a valid ifreq (whose data pointer, where
    // `fill` set one, outlives the call).
    let rc = unsafe { libc::ioctl(fd, request, &raw mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(req)
}

/// The name of interface `ifindex` in this network namespace.
pub(crate) fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as the call needs.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// The kernel driver behind an interface (`ethtool -i`: "dummy", "veth",
/// "virtio_net", ...), or `None` if it does not say.
pub(crate) fn interface_driver(name: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    // struct ethtool_drvinfo (linux/ethtool.h).
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    let mut info: DrvInfo = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    interface_ioctl(name, SIOCETHTOOL, |req| req.ifr_ifru.ifru_data = (&raw mut info).cast())?;
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

/// The interfaces that hold an IPv4 and those that hold an IPv6 default
/// route in this network namespace (`/proc/net/route`, destination and
/// mask 0; `/proc/net/ipv6_route`, `::/0` on a device other than `lo`,
/// where the kernel keeps unreachable defaults).
pub(crate) fn default_route_interfaces() -> io::Result<DefaultRoutes> {
    let v4 = default_route_interfaces_in(&fs::read_to_string("/proc/net/route")?);
    // A kernel without IPv6 has no such file: no IPv6 default route.
    let v6 = fs::read_to_string("/proc/net/ipv6_route").map(|t| default_route6_interfaces_in(&t)).unwrap_or_default();
    Ok(DefaultRoutes { v4, v6 })
}

/// Interfaces holding a default route, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DefaultRoutes {
    /// IPv4 default route.
    pub v4: Vec<String>,
    /// IPv6 default route.
    pub v6: Vec<String>,
}

/// The IPv6 default-route interfaces of a `/proc/net/ipv6_route` table.
fn default_route6_interfaces_in(table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [dest, prefix, .., iface] = fields[..]
            && fields.len() == 10
            && dest.bytes().all(|b| b == b'0')
            && prefix == "00"
            && iface != "lo"
            && !out.iter().any(|o| o == iface)
        {
            out.push(iface.to_owned());
        }
    }
    out
}

/// [`default_route_interfaces`] of a `/proc/net/route` table.
fn default_route_interfaces_in(table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [iface, dest, _gateway, _flags, _refcnt, _use, _metric, mask, ..] = fields[..]
            && dest == "00000000"
            && mask == "00000000"
            && !out.iter().any(|o| o == iface)
        {
            out.push(iface.to_owned());
        }
    }
    out
}

/// Writes `count` key/value pairs into a map with one BPF_MAP_UPDATE_BATCH
/// call (aya 0.14 has no batch API). `keys` and `values` are the packed
/// arrays. Returns how many were written before an error, with the error
/// ([`written_before_error`]).
pub(crate) fn map_update_batch(
    map: std::os::fd::BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> Result<(), (u32, io::Error)> {
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    // union bpf_attr, batch member.
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut attr = Batch {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: std::os::fd::AsRawFd::as_raw_fd(&map) as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_UPDATE_BATCH and
    // the arrays hold `count` packed keys and values of the map's sizes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_BATCH, &raw mut attr, size_of::<Batch>()) };
    if rc < 0 { Err((written_before_error(attr.count, count), io::Error::last_os_error())) } else { Ok(()) }
}

/// How many elements a failed BPF_MAP_UPDATE_BATCH wrote, from the count
/// the kernel left (`reported`) for `asked` elements. The kernel writes the
/// count back only from its per-element loop: a call refused before it (a
/// bad map, a denied call, an allocation failure on older kernels) leaves
/// the count passed in, which does not mean "all written": none was.
fn written_before_error(reported: u32, asked: u32) -> u32 {
    if reported < asked { reported } else { 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_refused_as_a_whole_wrote_nothing() {
        assert_eq!(super::written_before_error(3, 4096), 3, "stopped at the fourth element");
        assert_eq!(super::written_before_error(0, 4096), 0);
        assert_eq!(super::written_before_error(4096, 4096), 0, "the count passed in, left as it was");
    }

    #[test]
    fn ipv6_default_routes_skip_lo() {
        let table = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        assert_eq!(super::default_route6_interfaces_in(table), vec!["eth0".to_owned()]);
    }

    #[test]
    fn default_route_interfaces_come_from_the_route_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth1\t00000000\t01020AC0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(super::default_route_interfaces_in(table), vec!["eth0".to_owned(), "eth1".to_owned()]);
        assert!(super::default_route_interfaces_in("Iface\tDestination\n").is_empty());
    }
}
