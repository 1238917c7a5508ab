//! The north-south bench's namespaces for one mode: an outside client, the
//! node (where our TC programs or kube-proxy's rules run) and the pods
//! behind it, joined by veth pairs, with addresses only from the
//! benchmarking range 198.18.0.0/15 and the bench's own 10.0.0.0/8 ranges:
//!
//! ```text
//!   client:  x0 198.18.0.1/24; route 10.64.0.0/12 via 198.18.0.2 (direct
//!            mode dials the endpoints through the node, as a routed pod
//!            network allows)
//!   node:    n0 198.18.0.2/24 (the NodePort address: --devices n0,
//!            --nodeport-addresses 198.18.0.2/32), p0 10.250.0.1/30,
//!            route 10.64.0.0/12 via 10.250.0.2, forwarding on
//!   pods:    e0 10.250.0.2/30, local 10.64.0.0/12 dev lo (every endpoint
//!            address: one listener serves them all, as in the socket
//!            bench), route 198.18.0.0/24 via 10.250.0.1
//! ```
//!
//! Nothing has a default route and no namespace has a device outside these
//! three, so no packet leaves them.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{
    addressing::{BACKEND_ROUTE, EXTRA_BACKEND, twin6},
    netns::Netns,
};

/// The outside client's address.
pub(crate) const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The node's address on the client's network: the NodePort address.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The node's uplink (our TC programs' device).
pub(crate) const UPLINK: &str = "n0";

/// The three namespaces of one mode; deleted on drop.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) client: Netns,
    pub(crate) node: Netns,
    pub(crate) pods: Netns,
}

impl Network {
    /// Creates `PREFIX-c`, `PREFIX-n` and `PREFIX-p`.
    pub(crate) fn create(prefix: &str) -> Result<Self> {
        let net = Self {
            client: Netns::bare(format!("{prefix}-c"))?,
            node: Netns::bare(format!("{prefix}-n"))?,
            pods: Netns::bare(format!("{prefix}-p"))?,
        };
        let (client, node, pods) = (&net.client, &net.node, &net.pods);
        client.ip(&["link", "add", "x0", "type", "veth", "peer", "name", UPLINK, "netns", node.name()])?;
        node.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "e0", "netns", pods.name()])?;
        let client_cidr = format!("{CLIENT_IP}/24");
        let node_cidr = format!("{NODE_IP}/24");
        let node_ip = NODE_IP.to_string();
        let echo6 = format!("{}/128", twin6(EXTRA_BACKEND));
        for (ns, cmds) in [
            (
                client,
                vec![
                    vec!["addr", "add", client_cidr.as_str(), "dev", "x0"],
                    vec!["link", "set", "x0", "up"],
                    vec!["route", "add", BACKEND_ROUTE, "via", node_ip.as_str()],
                ],
            ),
            (
                node,
                vec![
                    vec!["addr", "add", node_cidr.as_str(), "dev", UPLINK],
                    vec!["link", "set", UPLINK, "up"],
                    vec!["addr", "add", "10.250.0.1/30", "dev", "p0"],
                    vec!["link", "set", "p0", "up"],
                    vec!["route", "add", BACKEND_ROUTE, "via", "10.250.0.2"],
                ],
            ),
            (
                pods,
                vec![
                    vec!["addr", "add", "10.250.0.2/30", "dev", "e0"],
                    vec!["link", "set", "e0", "up"],
                    vec!["route", "add", "local", BACKEND_ROUTE, "dev", "lo"],
                    vec!["route", "add", "198.18.0.0/24", "via", "10.250.0.1"],
                    // The UDP echo binds its IPv6 twin too (see Netns::create).
                    vec!["-6", "addr", "add", echo6.as_str(), "dev", "lo", "nodad"],
                ],
            ),
        ] {
            for args in cmds {
                ns.ip(&args)?;
            }
        }
        node.sysctl("net.ipv4.ip_forward", "1")?;
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
        pods.sysctl("net.core.somaxconn", "65535")?;
        pods.sysctl("net.ipv4.tcp_max_syn_backlog", "65535")?;
        Ok(net)
    }
}
