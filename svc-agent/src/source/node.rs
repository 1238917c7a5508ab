//! This node's addresses for `nodeIP:nodePort`, polled so that NodePort
//! frontends follow address changes at run time (an address added to or
//! removed from an interface shows up within one interval).
//!
//! Which local addresses count is kube-proxy's `--nodeport-addresses`:
//! `primary` (the default, as kube-proxy's nftables mode): the addresses of
//! the interfaces that hold the default route, or, on a node without one,
//! of every interface; or a list of CIDRs: the local addresses inside them.
//! Either way, addresses on dummy interfaces are never node addresses:
//! IPVS-mode leftovers (`kube-ipvs0` holds every ClusterIP) and other
//! dummy devices would otherwise turn Service or unrelated addresses into
//! node ports and fill the frontend map.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use super::{EventSender, SourceEvent};
use crate::{
    model::IpCidr,
    sys::{self, DefaultRoutes},
};

/// How often the interface addresses are re-read. getifaddrs costs a few
/// microseconds; a second is well inside what NodePort users notice.
const POLL: Duration = Duration::from_secs(1);

/// IPVS mode's dummy interface (also excluded by its driver).
const IPVS_DEVICE: &str = "kube-ipvs0";

/// `--nodeport-addresses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The default-route interfaces' addresses (else every interface's).
    Primary,
    /// Local addresses inside these ranges.
    Cidrs(Vec<IpCidr>),
}

impl FromStr for NodePortAddresses {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "primary" {
            return Ok(Self::Primary);
        }
        let cidrs = s
            .split(',')
            .map(|c| c.trim().parse::<IpCidr>().map_err(|e| format!("{c:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if cidrs.is_empty() {
            return Err("want `primary` or comma-separated CIDRs".into());
        }
        Ok(Self::Cidrs(cidrs))
    }
}

impl fmt::Display for NodePortAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Cidrs(cidrs) => {
                let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// One local address and what the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalAddress {
    /// Interface name.
    pub interface: String,
    /// Its driver (`dummy` for dummy devices), if known.
    pub driver: Option<String>,
    /// The address.
    pub ip: IpAddr,
}

/// The node addresses among `local`, given the interfaces holding a
/// default route. `primary` is decided per family: the IPv4 addresses of
/// the interfaces with an IPv4 default route (all IPv4 addresses when there
/// is none), and likewise for IPv6. Pure: unit-tested below.
pub(crate) fn select(rule: &NodePortAddresses, local: &[LocalAddress], default_route: &DefaultRoutes) -> Vec<IpAddr> {
    let eligible = |a: &&LocalAddress| a.interface != IPVS_DEVICE && a.driver.as_deref() != Some("dummy");
    let mut out: Vec<IpAddr> = match rule {
        NodePortAddresses::Primary => {
            let mut out = Vec::new();
            for (v6, routes) in [(false, &default_route.v4), (true, &default_route.v6)] {
                let of_family: Vec<&LocalAddress> =
                    local.iter().filter(eligible).filter(|a| a.ip.is_ipv6() == v6).collect();
                let on_default: Vec<IpAddr> =
                    of_family.iter().filter(|a| routes.contains(&a.interface)).map(|a| a.ip).collect();
                out.extend(if on_default.is_empty() { of_family.iter().map(|a| a.ip).collect() } else { on_default });
            }
            out
        }
        NodePortAddresses::Cidrs(cidrs) => {
            local.iter().filter(eligible).filter(|a| cidrs.iter().any(|c| c.contains(a.ip))).map(|a| a.ip).collect()
        }
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Current node addresses (logged, not fatal, on error).
pub(crate) fn current_addresses(rule: &NodePortAddresses) -> Vec<IpAddr> {
    let local = match sys::local_addresses() {
        Ok(local) => local,
        Err(e) => {
            tracing::warn!("cannot list local addresses, NodePort frontends limited to 127.0.0.1 and ::1: {e}");
            return Vec::new();
        }
    };
    let local: Vec<LocalAddress> = local
        .into_iter()
        .map(|(interface, ip)| LocalAddress { driver: sys::interface_driver(&interface), interface, ip })
        .collect();
    let default_route = sys::default_route_interfaces().unwrap_or_else(|e| {
        tracing::debug!("reading the default route: {e}");
        DefaultRoutes::default()
    });
    select(rule, &local, &default_route)
}

/// Polls the addresses and reports changes until the controller is gone.
pub(crate) fn spawn(rule: NodePortAddresses, initial: Vec<IpAddr>, events: EventSender) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = initial;
        loop {
            tokio::time::sleep(POLL).await;
            let now = current_addresses(&rule);
            if now != last {
                tracing::info!(old = ?last, new = ?now, "node addresses changed");
                if !events.send(SourceEvent::NodeAddresses(now.clone())) {
                    return;
                }
                last = now;
            }
            if events.is_closed() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, driver: Option<&str>, ip: &str) -> LocalAddress {
        LocalAddress { interface: interface.into(), driver: driver.map(Into::into), ip: ip.parse().unwrap() }
    }

    fn node() -> Vec<LocalAddress> {
        vec![
            addr("eth0", Some("virtio_net"), "192.0.2.10"),
            addr("eth1", Some("virtio_net"), "198.51.100.7"),
            addr("kube-ipvs0", Some("dummy"), "10.96.0.10"),
            addr("dummy0", Some("dummy"), "203.0.113.1"),
            addr("cni0", Some("bridge"), "10.244.0.1"),
        ]
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn routes(v4: &[&str], v6: &[&str]) -> DefaultRoutes {
        let names = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        DefaultRoutes { v4: names(v4), v6: names(v6) }
    }

    #[test]
    fn primary_is_the_default_route_interfaces_and_never_dummies() {
        let got = select(&NodePortAddresses::Primary, &node(), &routes(&["eth0"], &[]));
        assert_eq!(got, ips(&["192.0.2.10"]));
        // No default route: every interface but the dummies.
        let got = select(&NodePortAddresses::Primary, &node(), &routes(&[], &[]));
        assert_eq!(got, ips(&["10.244.0.1", "192.0.2.10", "198.51.100.7"]));
        // IPVS's device is excluded by name too (a driver we cannot read).
        let mut odd = node();
        odd[2].driver = None;
        assert!(!select(&NodePortAddresses::Primary, &odd, &routes(&[], &[])).contains(&"10.96.0.10".parse().unwrap()));
    }

    #[test]
    fn primary_is_decided_per_family() {
        let mut local = node();
        local.push(addr("eth0", Some("virtio_net"), "2001:db8::10"));
        local.push(addr("eth1", Some("virtio_net"), "2001:db8:1::7"));
        // IPv4 default via eth0, IPv6 default via eth1: each family its own.
        let got = select(&NodePortAddresses::Primary, &local, &routes(&["eth0"], &["eth1"]));
        assert_eq!(got, ips(&["192.0.2.10", "2001:db8:1::7"]));
        // Only an IPv6 default route: every IPv4 address still counts.
        let got = select(&NodePortAddresses::Primary, &local, &routes(&[], &["eth0"]));
        assert_eq!(got, ips(&["10.244.0.1", "192.0.2.10", "198.51.100.7", "2001:db8::10"]));
    }

    #[test]
    fn cidrs_pick_local_addresses_inside_them() {
        let rule: NodePortAddresses = "198.51.100.0/24, 10.0.0.0/8".parse().unwrap();
        assert_eq!(select(&rule, &node(), &routes(&["eth0"], &[])), ips(&["10.244.0.1", "198.51.100.7"]));
        assert_eq!(rule.to_string(), "198.51.100.0/24,10.0.0.0/8");
        assert_eq!("primary".parse::<NodePortAddresses>(), Ok(NodePortAddresses::Primary));
        assert!("nonsense".parse::<NodePortAddresses>().is_err());
    }
}
