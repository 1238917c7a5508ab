//! `sock_release`: a connected UDP socket's datagram entry goes with the
//! socket.
//!
//! Every translated UDP `connect()` records `(socket cookie, backend) ->
//! frontend` in the LRU datagram map (`SVC_REVNAT_SK`, `SVC_REVNAT6`): the
//! UDP reset and `recvfrom()` read it. A DNS client makes one such socket
//! per query, so without this hook the map fills with entries of closed
//! sockets, and from then on every `connect()` pays for the LRU evicting
//! one (measured: about 500 ns in the kernel per UDP connect with the map
//! empty, 900 ns once full). Deleting the entry here, where the socket's
//! peer is still its backend, keeps the map as small as the number of open
//! sockets. (Cilium's `cil_sock_release` does the same for its socket
//! reverse-NAT map.)
//!
//! Unconnected sockets are left alone: their entries are per datagram
//! peer, which the socket does not know any more, and the LRU ages them.

use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_get_socket_cookie, programs::SockContext};
use svc_common::proto;

use crate::{
    addr,
    family::{Family, V4, V6},
};

/// `AF_INET`, `AF_INET6` of include/linux/socket.h.
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// Drops the datagram entry of the released socket, if it is a connected
/// UDP socket (its peer: the backend its `connect()` was sent to).
#[inline(always)]
pub(crate) fn forget_connected_datagram(ctx: &SockContext) {
    let sk = ctx.sock;
    // SAFETY: fields of the context's socket, readable at sock_release.
    let (protocol, state, family, port) = unsafe { ((*sk).protocol, (*sk).state, (*sk).family, (*sk).dst_port) };
    if protocol != u32::from(proto::UDP) || state != crate::TCP_ESTABLISHED {
        return;
    }
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if family == AF_INET {
        // SAFETY: as above.
        V4::forget_datagram(cookie, addr::backend4(unsafe { (*sk).dst_ip4 }, port));
    } else if family == AF_INET6 {
        // SAFETY: as above, one 4-byte load per word.
        let w = unsafe { [(*sk).dst_ip6[0], (*sk).dst_ip6[1], (*sk).dst_ip6[2], (*sk).dst_ip6[3]] };
        // A v4-mapped peer was translated through the IPv4 maps.
        if addr::is_mapped(&w) {
            V4::forget_datagram(cookie, addr::backend4(w[3], port));
        } else {
            V6::forget_datagram(cookie, addr::backend6(&w, port));
        }
    }
}
