//! Listing and destroying connected UDP sockets of one network namespace
//! through NETLINK_SOCK_DIAG (`ss -K` does the same; the kernel here has
//! CONFIG_INET_DIAG_DESTROY). No maintained crate offers SOCK_DESTROY, so
//! the few structures involved are spelled out here, from
//! include/uapi/linux/inet_diag.h and sock_diag.h.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// UDP sockets report TCP_ESTABLISHED once connected.
const TCP_ESTABLISHED: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

/// `struct inet_diag_sockid` (ports and addresses in network order).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [[u8; 4]; 4],
    dst: [[u8; 4]; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

/// `struct inet_diag_msg` (the part we read).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

#[repr(C)]
struct Request {
    header: NlMsgHdr,
    body: InetDiagReqV2,
}

/// A connected UDP socket of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpSocket {
    /// Peer address; a v4-mapped peer of an `AF_INET6` socket as IPv4
    /// (the dataplane serves it with the IPv4 maps).
    pub peer: SocketAddr,
    /// `bpf_get_socket_cookie()` of the socket.
    pub cookie: u64,
    family: u8,
    id: InetDiagSockId,
}

/// The peer in a sock_diag id of `family`, v4-mapped ones unmapped.
fn peer(family: u8, id: &InetDiagSockId) -> Option<IpAddr> {
    match i32::from(family) {
        libc::AF_INET => Some(Ipv4Addr::from(id.dst[0]).into()),
        libc::AF_INET6 => Some(Ipv6Addr::from(*id.dst.as_flattened().as_array::<16>()?).to_canonical()),
        _ => None,
    }
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, kind: u16, flags: u16, body: InetDiagReqV2) -> io::Result<()> {
    let request = Request { header: NlMsgHdr { len: size_of::<Request>() as u32, kind, flags, seq: 1, pid: 0 }, body };
    // SAFETY: request is a plain repr(C) value of the given size.
    let sent = unsafe { libc::send(fd.as_raw_fd(), (&raw const request).cast(), size_of::<Request>(), 0) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// Every connected UDP socket in the calling thread's network namespace,
/// of both families.
pub(crate) fn connected_udp_sockets() -> io::Result<Vec<UdpSocket>> {
    let mut out = connected_udp_sockets_of(libc::AF_INET as u8)?;
    out.extend(connected_udp_sockets_of(libc::AF_INET6 as u8)?);
    Ok(out)
}

fn connected_udp_sockets_of(family: u8) -> io::Result<Vec<UdpSocket>> {
    let fd = netlink_socket()?;
    let request =
        InetDiagReqV2 { family, protocol: libc::IPPROTO_UDP as u8, states: 1 << TCP_ESTABLISHED, ..Default::default() };
    send(&fd, SOCK_DIAG_BY_FAMILY, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, request)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = recv(&fd, &mut buf)?;
        let mut offset = 0;
        while offset + size_of::<NlMsgHdr>() <= n {
            // SAFETY: bounds checked above; read_unaligned copes with any alignment.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
            let len = header.len as usize;
            if len < size_of::<NlMsgHdr>() || offset + len > n {
                return Err(io::Error::other("truncated sock_diag reply"));
            }
            match header.kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => return Err(netlink_error(&buf[offset..offset + len])),
                SOCK_DIAG_BY_FAMILY if len >= size_of::<NlMsgHdr>() + size_of::<InetDiagMsg>() => {
                    // SAFETY: length checked; plain data.
                    let msg: InetDiagMsg =
                        unsafe { std::ptr::read_unaligned(buf[offset + size_of::<NlMsgHdr>()..].as_ptr().cast()) };
                    if let Some(ip) = peer(family, &msg.id) {
                        out.push(UdpSocket {
                            peer: SocketAddr::new(ip, u16::from_be_bytes(msg.id.dport)),
                            cookie: u64::from(msg.id.cookie[0]) | (u64::from(msg.id.cookie[1]) << 32),
                            family,
                            id: msg.id,
                        });
                    }
                }
                _ => {}
            }
            offset += (len + 3) & !3;
        }
    }
}

/// Destroys one socket (its owner sees ECONNABORTED on the next call).
pub(crate) fn destroy(socket: &UdpSocket) -> io::Result<()> {
    let fd = netlink_socket()?;
    let request = InetDiagReqV2 {
        family: socket.family,
        protocol: libc::IPPROTO_UDP as u8,
        states: u32::MAX,
        id: socket.id,
        ..Default::default()
    };
    send(&fd, SOCK_DESTROY, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, request)?;
    let mut buf = vec![0u8; 4096];
    let n = recv(&fd, &mut buf)?;
    match netlink_error(&buf[..n]) {
        e if e.raw_os_error() == Some(0) => Ok(()),
        // Closed meanwhile: nothing left to do.
        e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        e => Err(e),
    }
}

/// The errno carried by an NLMSG_ERROR message (0 for an ACK).
fn netlink_error(message: &[u8]) -> io::Error {
    let at = size_of::<NlMsgHdr>();
    if message.len() < at + 4 {
        return io::Error::other("short netlink error message");
    }
    let errno = i32::from_ne_bytes([message[at], message[at + 1], message[at + 2], message[at + 3]]);
    io::Error::from_raw_os_error(-errno)
}

const _: () = {
    assert!(size_of::<InetDiagSockId>() == 48);
    assert!(size_of::<InetDiagReqV2>() == 56);
    assert!(size_of::<InetDiagMsg>() == 72);
};

#[cfg(test)]
mod tests {
    use super::*;

    fn id_with_dst(dst: [u8; 16]) -> InetDiagSockId {
        let mut id = InetDiagSockId::default();
        for (word, chunk) in id.dst.iter_mut().zip(dst.chunks_exact(4)) {
            word.copy_from_slice(chunk);
        }
        id
    }

    #[test]
    fn peers_of_both_families() {
        let v4 = id_with_dst([10, 96, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(peer(libc::AF_INET as u8, &v4), Some(Ipv4Addr::new(10, 96, 0, 10).into()));
        // A v4-mapped peer is served by the IPv4 maps: reported as IPv4.
        let mapped = id_with_dst(Ipv4Addr::new(10, 244, 1, 2).to_ipv6_mapped().octets());
        assert_eq!(peer(libc::AF_INET6 as u8, &mapped), Some(Ipv4Addr::new(10, 244, 1, 2).into()));
        let native: Ipv6Addr = "fd00::1".parse().unwrap();
        assert_eq!(peer(libc::AF_INET6 as u8, &id_with_dst(native.octets())), Some(native.into()));
    }
}
