//! An IPv4 prefix (`--service-cidr`).

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// An IPv4 prefix such as `10.96.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// Builds a prefix; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then(|| Self { network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)), prefix_len })
    }

    /// Number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// The address at `offset` from the network address (`offset < size()`).
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + offset as u32))
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix_len)) }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{s:?}: prefix length: {e}"))?;
        Self::new(addr, len).ok_or_else(|| format!("{s:?}: prefix length must be at most 32"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        let c: Ipv4Cidr = "10.96.3.4/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 96, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 97, 0, 1)));
        assert_eq!(c.size(), 65_536);
        assert_eq!(c.nth(65_535), Some(Ipv4Addr::new(10, 96, 255, 255)));
        assert_eq!(c.nth(65_536), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0/16".parse::<Ipv4Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().size(), 1 << 32);
    }
}
