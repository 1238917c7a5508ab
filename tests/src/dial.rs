//! How a scenario's Service addresses are reached. Scenarios are written
//! with IPv4 Service addresses (`10.96.0.10`) and take a [`Dial`]:
//! - [`Dial::Inet`]: as written, from `AF_INET` sockets;
//! - [`Dial::Mapped`]: the same IPv4 Services from `AF_INET6` sockets
//!   through `::ffff:a.b.c.d` (what Java, .NET dual-mode sockets and many
//!   Go and Node programs do);
//! - [`Dial::Ipv6`]: IPv6 Services instead: every Service address
//!   `10.96.a.b` becomes `fd00:96::a:b` ([`service_ip6`]), the endpoints
//!   the backends' IPv6 addresses, and clients dial the IPv6 address.
//!
//! Whatever the dial, the addresses a client reports are written back in
//! the scenario's IPv4 terms ([`Dial::as_ipv4`]), so one assertion serves
//! every family; an address outside the mapping fails the test.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
};

use anyhow::{Result, bail};

use crate::Outcome;

/// The socket family a client uses for an IPv4 destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dial {
    /// An `AF_INET` socket.
    #[default]
    Inet,
    /// An `AF_INET6` socket and the v4-mapped address.
    Mapped,
    /// IPv6 Services: [`service_ip6`] of every Service address.
    Ipv6,
}

/// The IPv6 Service address standing for IPv4 Service address `ip` of
/// the scenarios: `10.96.a.b` -> `fd00:96::a:b` (inside the tests' IPv6
/// service range `fd00:96::/108` for `a < 16`). Other addresses stay IPv4.
pub fn service_ip6(ip: Ipv4Addr) -> Option<Ipv6Addr> {
    let [first, second, a, b] = ip.octets();
    ((first, second) == (10, 96) && a < 16).then(|| Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, a.into(), b.into()))
}

/// The inverse of [`service_ip6`].
fn service_ip4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let (a, b) = (u8::try_from(s[6]).ok()?, u8::try_from(s[7]).ok()?);
    (s[..6] == [0xfd00, 0x96, 0, 0, 0, 0]).then_some(Ipv4Addr::new(10, 96, a, b))
}

impl Dial {
    /// The address the client passes to connect()/sendto().
    pub fn target(self, to: SocketAddrV4) -> SocketAddr {
        match self {
            Self::Inet => to.into(),
            Self::Mapped => SocketAddrV6::new(to.ip().to_ipv6_mapped(), to.port(), 0, 0).into(),
            Self::Ipv6 => match service_ip6(*to.ip()) {
                Some(ip) => SocketAddrV6::new(ip, to.port(), 0, 0).into(),
                None => to.into(),
            },
        }
    }

    /// A Service address of the scenario as this dial's Service has it
    /// (what `status` shows): the IPv6 one for [`Dial::Ipv6`], else as is.
    pub fn service_addr(self, to: SocketAddrV4) -> SocketAddr {
        match self {
            Self::Ipv6 => self.target(to),
            Self::Inet | Self::Mapped => to.into(),
        }
    }

    /// The datagram map (`(socket cookie, backend) -> frontend`) that this
    /// dial's UDP translations are recorded in: a v4-mapped peer's go to
    /// the IPv4 one.
    pub fn datagram_map(self) -> &'static str {
        match self {
            Self::Inet | Self::Mapped => svc_common::names::REV_NAT,
            Self::Ipv6 => svc_common::names::REV_NAT6,
        }
    }

    /// A Service address of the scenario (`10.96.0.10`) as this dial's
    /// Service has it, for the YAML; other values (`None`) unchanged.
    pub fn service_ip(self, ip: &str) -> String {
        match (self, ip.parse::<Ipv4Addr>().ok().and_then(service_ip6)) {
            (Self::Ipv6, Some(v6)) => v6.to_string(),
            _ => ip.to_owned(),
        }
    }

    /// [`Self::target`] for any destination: an IPv6 one is dialled as it
    /// is, whatever the dial.
    pub fn target_any(self, to: SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(v4) => self.target(v4),
            SocketAddr::V6(_) => to,
        }
    }

    /// `out` with its getpeername() and recvfrom() addresses written as
    /// IPv4 (`10.96.0.10:80`), so that one assertion serves both families.
    /// For [`Dial::Mapped`] every such address must be v4-mapped: an
    /// `AF_INET6` socket reports its IPv4 peers that way, and one that is
    /// not (an untranslated native IPv6 peer) is an error here.
    pub fn as_ipv4(self, mut out: Outcome) -> Result<Outcome> {
        let back: fn(Ipv6Addr) -> Option<Ipv4Addr> = match self {
            Self::Inet => return Ok(out),
            Self::Mapped => |ip| ip.to_ipv4_mapped(),
            Self::Ipv6 => service_ip4,
        };
        out.peers = unmap(out.peers, back)?;
        out.sources = unmap(out.sources, back)?;
        Ok(out)
    }
}

fn unmap(addresses: BTreeMap<String, u32>, back: fn(Ipv6Addr) -> Option<Ipv4Addr>) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for (address, count) in addresses {
        let v4 = match address.parse::<SocketAddr>() {
            Ok(SocketAddr::V6(v6)) => back(*v6.ip()).map(|ip| SocketAddrV4::new(ip, v6.port())),
            _ => None,
        };
        let Some(v4) = v4 else {
            bail!("an AF_INET6 client reported {address:?}, not an address this dial stands for");
        };
        *out.entry(v4.to_string()).or_insert(0) += count;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_target_and_back() {
        let to: SocketAddrV4 = "10.96.0.10:80".parse().unwrap();
        assert_eq!(Dial::Mapped.target(to).to_string(), "[::ffff:10.96.0.10]:80");
        assert_eq!(Dial::Inet.target(to).to_string(), "10.96.0.10:80");
        let out = Outcome {
            peers: BTreeMap::from([("[::ffff:10.96.0.10]:80".to_owned(), 3)]),
            sources: BTreeMap::from([("[::ffff:10.96.0.11]:53".to_owned(), 2)]),
            ..Outcome::default()
        };
        let v4 = Dial::Mapped.as_ipv4(out.clone()).unwrap();
        assert_eq!(v4.peers, BTreeMap::from([("10.96.0.10:80".to_owned(), 3)]));
        assert_eq!(v4.sources, BTreeMap::from([("10.96.0.11:53".to_owned(), 2)]));
        // An AF_INET client's report is left as it is.
        assert_eq!(Dial::Inet.as_ipv4(out.clone()).unwrap(), out);
    }

    #[test]
    fn a_native_ipv6_peer_is_not_taken_for_ipv4() {
        let out = Outcome { peers: BTreeMap::from([("[fd00::1]:80".to_owned(), 1)]), ..Outcome::default() };
        assert!(Dial::Mapped.as_ipv4(out).is_err());
        let out = Outcome { peers: BTreeMap::from([("10.96.0.10:80".to_owned(), 1)]), ..Outcome::default() };
        assert!(Dial::Mapped.as_ipv4(out).is_err(), "an AF_INET6 socket never reports a bare IPv4 address");
    }

    #[test]
    fn ipv6_services_stand_for_the_scenarios_ipv4_ones() {
        let to: SocketAddrV4 = "10.96.7.10:80".parse().unwrap();
        assert_eq!(Dial::Ipv6.target(to).to_string(), "[fd00:96::7:a]:80");
        assert_eq!(Dial::Ipv6.service_ip("10.96.0.53"), "fd00:96::35");
        assert_eq!(Dial::Ipv6.service_ip("None"), "None");
        assert_eq!(Dial::Inet.service_ip("10.96.0.53"), "10.96.0.53");
        let out = Outcome {
            peers: BTreeMap::from([("[fd00:96::7:a]:80".to_owned(), 2)]),
            sources: BTreeMap::from([("[fd00:96::35]:53".to_owned(), 1)]),
            ..Outcome::default()
        };
        let v4 = Dial::Ipv6.as_ipv4(out).unwrap();
        assert_eq!(v4.peers, BTreeMap::from([("10.96.7.10:80".to_owned(), 2)]));
        assert_eq!(v4.sources, BTreeMap::from([("10.96.0.53:53".to_owned(), 1)]));
        // A backend's address (an untranslated reply) is not a Service's.
        let out = Outcome { sources: BTreeMap::from([("[fd00:244:1::2]:53".to_owned(), 1)]), ..Outcome::default() };
        assert!(Dial::Ipv6.as_ipv4(out).is_err());
    }
}
