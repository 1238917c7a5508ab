//! Clients outside the node, for the north-south (TC) path: a LAN that
//! node A (the [`NodeTopology`] node, where the agent runs) and a second
//! node B share with an outside client, as on a real cluster network.
//!
//! ```text
//!   lan netns: br0 198.51.100.1/24 (the outside client)
//!     la  <-> up0 of node A  198.51.100.10/24   (UPLINK: --devices up0)
//!     lb  <-> up0 of node B  198.51.100.20/24
//!     route 203.0.113.0/24 via 198.51.100.10 (external and LB IPs, as a
//!       router announcing them would), unreachable 10.96.0.0/12
//!   node A: route 10.246.0.0/16 via 198.51.100.20 (B's pods); A's backend
//!     pods: route 198.51.100.0/24 via their gateway
//!   node B (forwarding): vb<i> 10.246.i.1/24 <-> pod eth0 10.246.i.2/24
//!     (pods: routes 198.51.100.0/24 and 10.0.0.0/8 via 10.246.i.1);
//!     route 10.244.0.0/15 via 198.51.100.10 (A's pods: pod-to-pod
//!     across nodes, as a CNI routes it)
//! ```
//!
//! Nothing has a default route. Node B runs no agent: it is only a
//! router to its pods, so a packet for a B pod from A reaches it only as
//! A sends it, and a B pod's reply goes to whatever source A gave it.

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::{Backend, Cgroup, Client, Dial, Netns, NodeTopology, SERVICE_RANGE};

/// The outside client's address.
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Node A's address on the LAN (a NodePort address).
pub const NODE_A_LAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Node B's address on the LAN.
pub const NODE_B_LAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// Node A's LAN device: the agent's `--devices`.
pub const UPLINK: &str = "up0";
/// `--node-name` for endpoints on node B.
pub const NODE_B_NAME: &str = "node-b";

/// The LAN, node B and its pods, around a [`NodeTopology`].
#[derive(Debug)]
pub struct Outside {
    lan: Netns,
    node_b: Netns,
    b_pods: Vec<Backend>,
    /// The outside client's cgroup: no agent attaches to it, so its
    /// sockets are never translated.
    cgroup: Cgroup,
}

impl Outside {
    /// Connects `node_a` to a new LAN with a node B holding `n_b_pods` pods
    /// (10.246.i.2).
    pub fn new(node_a: &NodeTopology, n_b_pods: u8) -> Result<Self> {
        let lan = Netns::new()?;
        let node_b = Netns::new()?;
        let a = node_a.node().netns();
        for (ns, cmds) in [
            (
                &lan,
                vec![
                    "link add br0 type bridge".to_owned(),
                    format!("addr add {OUTSIDE_IP}/24 dev br0"),
                    "link set br0 up".to_owned(),
                    format!("route add unreachable {SERVICE_RANGE}"),
                ],
            ),
            (a, vec![format!("link add {UPLINK} type veth peer name la netns {}", lan.name())]),
            (&node_b, vec![format!("link add {UPLINK} type veth peer name lb netns {}", lan.name())]),
        ] {
            for c in cmds {
                ns.ip(&c.split(' ').collect::<Vec<_>>())?;
            }
        }
        for port in ["la", "lb"] {
            lan.ip(&["link", "set", port, "master", "br0", "up"])?;
        }
        lan.ip(&["route", "add", "203.0.113.0/24", "via", &NODE_A_LAN_IP.to_string()])?;
        a.ip(&["addr", "add", &format!("{NODE_A_LAN_IP}/24"), "dev", UPLINK])?;
        a.ip(&["link", "set", UPLINK, "up"])?;
        a.ip(&["route", "add", "10.246.0.0/16", "via", &NODE_B_LAN_IP.to_string()])?;
        for backend in node_a.backend_pods() {
            let gateway = gateway_of(backend.ip());
            backend.netns().ip(&["route", "add", "198.51.100.0/24", "via", &gateway.to_string()])?;
        }
        crate::cmd::run(&mut node_b.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]))?;
        node_b.ip(&["addr", "add", &format!("{NODE_B_LAN_IP}/24"), "dev", UPLINK])?;
        node_b.ip(&["link", "set", UPLINK, "up"])?;
        node_b.ip(&["route", "add", "10.244.0.0/15", "via", &NODE_A_LAN_IP.to_string()])?;
        let mut b_pods = Vec::new();
        for i in 1..=n_b_pods {
            let pod = Netns::new()?;
            let (link, ip) = (format!("vb{i}"), Ipv4Addr::new(10, 246, i, 2));
            let gateway = gateway_of(ip);
            node_b.ip(&["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", pod.name()])?;
            node_b.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &link])?;
            node_b.ip(&["link", "set", &link, "up"])?;
            pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            pod.ip(&["link", "set", "eth0", "up"])?;
            pod.ip(&["route", "add", "198.51.100.0/24", "via", &gateway.to_string()])?;
            pod.ip(&["route", "add", "10.0.0.0/8", "via", &gateway.to_string()])?;
            b_pods.push(Backend::from_parts(pod, ip));
        }
        Ok(Self { lan, node_b, b_pods, cgroup: Cgroup::new()? })
    }

    /// The outside client.
    pub fn client(&self) -> Client<'_> {
        Client::new(&self.lan, &self.cgroup, "outside client", Dial::Inet)
    }

    /// Pod `i` of node B (10.246.i.2), counting from 1.
    pub fn b_pod(&self, i: u8) -> &Backend {
        &self.b_pods[usize::from(i) - 1]
    }

    /// The LAN namespace (the outside client's).
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// Node B's namespace.
    pub fn node_b(&self) -> &Netns {
        &self.node_b
    }
}

/// The far client's address (behind [`FarClient`]'s router).
pub const FAR_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The far client's router on the LAN.
const FAR_ROUTER_LAN_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);

/// A client one router away from the LAN, behind a link with a smaller
/// MTU than the LAN's: a router's ICMP "fragmentation needed" for full-size
/// replies is what path-MTU discovery towards it depends on.
///
/// ```text
///   lan br0 -- router: rl 198.51.100.30/24 | rf 192.0.2.1/24, MTU 1280
///                       (on the router's side only: the client still
///                        advertises MSS 1460)
///             far client: eth0 192.0.2.2/24; routes 198.51.100.0/24 and
///                         203.0.113.0/24 via 192.0.2.1
///   node A and its pods: route 192.0.2.0/24 via the router / the gateway
/// ```
#[derive(Debug)]
pub struct FarClient {
    far: Netns,
    _router: Netns,
    cgroup: Cgroup,
}

impl FarClient {
    /// Builds the router and the far client on `outside`'s LAN, and the
    /// routes back on `node_a` and its pods.
    pub fn new(outside: &Outside, node_a: &NodeTopology) -> Result<Self> {
        let router = Netns::new()?;
        let far = Netns::new()?;
        outside.lan.ip(&["link", "add", "lr", "type", "veth", "peer", "name", "rl", "netns", router.name()])?;
        outside.lan.ip(&["link", "set", "lr", "master", "br0", "up"])?;
        router.ip(&["link", "add", "rf", "type", "veth", "peer", "name", "eth0", "netns", far.name()])?;
        let via = "192.0.2.1";
        for (ns, cmds) in [
            (
                &router,
                vec![
                    format!("addr add {FAR_ROUTER_LAN_IP}/24 dev rl"),
                    "link set rl up".to_owned(),
                    format!("addr add {via}/24 dev rf"),
                    "link set rf mtu 1280".to_owned(),
                    "link set rf up".to_owned(),
                    format!("route add 203.0.113.0/24 via {NODE_A_LAN_IP}"),
                ],
            ),
            (
                &far,
                vec![
                    format!("addr add {FAR_CLIENT_IP}/24 dev eth0"),
                    "link set eth0 up".to_owned(),
                    format!("route add 198.51.100.0/24 via {via}"),
                    format!("route add 203.0.113.0/24 via {via}"),
                    format!("route add unreachable {SERVICE_RANGE}"),
                ],
            ),
        ] {
            for c in cmds {
                ns.ip(&c.split(' ').collect::<Vec<_>>())?;
            }
        }
        crate::cmd::run(&mut router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]))?;
        node_a.node().netns().ip(&["route", "add", "192.0.2.0/24", "via", &FAR_ROUTER_LAN_IP.to_string()])?;
        for backend in node_a.backend_pods() {
            backend.netns().ip(&["route", "add", "192.0.2.0/24", "via", &gateway_of(backend.ip()).to_string()])?;
        }
        Ok(Self { far, _router: router, cgroup: Cgroup::new()? })
    }

    /// The far client.
    pub fn client(&self) -> Client<'_> {
        Client::new(&self.far, &self.cgroup, "far client", Dial::Inet)
    }
}

/// x.y.z.1 for a pod at x.y.z.2.
fn gateway_of(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = ip.octets();
    Ipv4Addr::new(a, b, c, 1)
}
