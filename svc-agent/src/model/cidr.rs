//! An IP prefix of either family (`--service-cidr`, `--nodeport-addresses`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use super::IpFamily;

/// A prefix such as `10.96.0.0/16` or `fd00:96::/108`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Address width of a family, in bits.
const fn bits(family: IpFamily) -> u32 {
    match family {
        IpFamily::V4 => 32,
        IpFamily::V6 => 128,
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: IpFamily, n: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

impl IpCidr {
    /// Builds a prefix; host bits of `addr` are cleared.
    pub(crate) fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let family = IpFamily::of(addr);
        (u32::from(prefix_len) <= bits(family))
            .then(|| Self { network: from_u128(family, to_u128(addr) & mask(family, prefix_len)), prefix_len })
    }

    /// Its family.
    /// The network address.
    pub(crate) fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub(crate) fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub(crate) fn family(&self) -> IpFamily {
        IpFamily::of(self.network)
    }

    /// Number of addresses in the prefix (saturating at `u128::MAX`).
    pub(crate) fn size(&self) -> u128 {
        let host_bits = bits(self.family()) - u32::from(self.prefix_len);
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }

    /// Whether `ip` is inside.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of(ip) == self.family() && to_u128(ip) & mask(self.family(), self.prefix_len) == to_u128(self.network)
    }

    /// The address at `offset` from the network address (`offset < size()`).
    pub(crate) fn nth(&self, offset: u128) -> Option<IpAddr> {
        (offset < self.size()).then(|| from_u128(self.family(), to_u128(self.network) + offset))
    }
}

fn mask(family: IpFamily, prefix_len: u8) -> u128 {
    let width = bits(family);
    let all = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    if prefix_len == 0 { 0 } else { all & !(all >> u32::from(prefix_len)) }
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let len: u8 = len.parse().map_err(|e| format!("{s:?}: prefix length: {e}"))?;
        Self::new(addr, len).ok_or_else(|| format!("{s:?}: prefix length must be at most {}", bits(IpFamily::of(addr))))
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// `--service-cidr`: one prefix per family, comma-separated, like
/// kube-apiserver's `--service-cluster-ip-range` (the first is the
/// primary family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCidrs(Vec<IpCidr>);

impl ServiceCidrs {
    /// The prefix of `family`, if configured.
    pub(crate) fn of(&self, family: IpFamily) -> Option<IpCidr> {
        self.0.iter().copied().find(|c| c.family() == family)
    }

    /// The primary family (the first prefix's).
    pub(crate) fn primary(&self) -> IpFamily {
        self.0[0].family()
    }
}

impl FromStr for ServiceCidrs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cidrs = s.split(',').map(|c| c.trim().parse::<IpCidr>()).collect::<Result<Vec<_>, _>>()?;
        match cidrs.as_slice() {
            [_] => Ok(Self(cidrs)),
            [a, b] if a.family() != b.family() => Ok(Self(cidrs)),
            _ => Err(format!("{s:?}: want one prefix, or one IPv4 and one IPv6 prefix")),
        }
    }
}

impl fmt::Display for ServiceCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_contains() {
        let c: IpCidr = "10.96.3.4/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/16");
        assert!(c.contains(ip("10.96.255.1")));
        assert!(!c.contains(ip("10.97.0.1")));
        assert!(!c.contains(ip("::ffff:10.96.0.1")), "families never mix");
        assert_eq!(c.size(), 65_536);
        assert_eq!(c.nth(65_535), Some(ip("10.96.255.255")));
        assert_eq!(c.nth(65_536), None);
    }

    #[test]
    fn ipv6_prefixes() {
        let c: IpCidr = "fd00:96::7/108".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:96::/108");
        assert_eq!(c.size(), 1 << 20);
        assert!(c.contains(ip("fd00:96::f:ffff")));
        assert!(!c.contains(ip("fd00:96::10:0")));
        assert_eq!(c.nth(10), Some(ip("fd00:96::a")));
        assert_eq!("::/0".parse::<IpCidr>().unwrap().size(), u128::MAX);
    }

    #[test]
    fn rejects_garbage() {
        assert!("10.96.0.0".parse::<IpCidr>().is_err());
        assert!("10.96.0.0/33".parse::<IpCidr>().is_err());
        assert!("fd00::/129".parse::<IpCidr>().is_err());
        assert!("10.96.0/16".parse::<IpCidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<IpCidr>().unwrap().size(), 1 << 32);
    }

    #[test]
    fn service_cidrs_one_per_family() {
        let both: ServiceCidrs = "10.96.0.0/16,fd00:96::/108".parse().unwrap();
        assert_eq!(both.primary(), IpFamily::V4);
        assert_eq!(both.of(IpFamily::V6).unwrap().to_string(), "fd00:96::/108");
        let v6: ServiceCidrs = "fd00:96::/108".parse().unwrap();
        assert_eq!((v6.primary(), v6.of(IpFamily::V4)), (IpFamily::V6, None));
        assert!("10.96.0.0/16,10.97.0.0/16".parse::<ServiceCidrs>().is_err());
        assert!("10.96.0.0/16,fd00::/108,fd01::/108".parse::<ServiceCidrs>().is_err());
    }
}
