//! How a test client dials an IPv4 address: from an `AF_INET` socket, or
//! from an `AF_INET6` socket through the v4-mapped form `::ffff:a.b.c.d`
//! (what Java, .NET dual-mode sockets and many Go and Node programs do).
//! Scenarios take a [`Dial`] so that the same steps and assertions run for
//! both.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4, SocketAddrV6},
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
}

impl Dial {
    /// The address the client passes to connect()/sendto().
    pub fn target(self, to: SocketAddrV4) -> SocketAddr {
        match self {
            Self::Inet => to.into(),
            Self::Mapped => SocketAddrV6::new(to.ip().to_ipv6_mapped(), to.port(), 0, 0).into(),
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
        if self == Self::Mapped {
            out.peers = unmap(out.peers)?;
            out.sources = unmap(out.sources)?;
        }
        Ok(out)
    }
}

fn unmap(addresses: BTreeMap<String, u32>) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for (address, count) in addresses {
        let v4 = match address.parse::<SocketAddr>() {
            Ok(SocketAddr::V6(v6)) => v6.ip().to_ipv4_mapped().map(|ip| SocketAddrV4::new(ip, v6.port())),
            _ => None,
        };
        let Some(v4) = v4 else {
            bail!("an AF_INET6 client reported {address:?}, not a v4-mapped address");
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
}
