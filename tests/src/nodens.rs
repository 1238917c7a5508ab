//! A test node: a network namespace standing in for the node's host network.
//! The agent runs in it in the DaemonSet's shape (`nsenter --net` into the
//! node namespace, then the pod launcher of [`crate::deployed::Deployed`]: its own
//! mount namespace with only the DaemonSet's volumes and the source's
//! files), so the node's addresses and "the host network namespace" are the
//! test's, never the machine's. Pods hang off it on veth pairs, as on a real node:
//!
//! ```text
//!   node netns (agent, host-network clients)        backend pod i (1..=B)
//!     lo 127.0.0.1, 10.250.0.10/32 (NODE_IP)
//!     vb<i> 10.244.i.1/24  <------------------->    eth0 10.244.i.2/24
//!     vc<c> 10.245.c.1/24  <------------------->    client pod c (1..=C)
//!     unreachable 10.96.0.0/12, ip_forward=1          eth0 10.245.c.2/24
//!                                                   pods: 10.0.0.0/8 via the node,
//!                                                         unreachable 10.96.0.0/12
//! ```
//!
//! No namespace has a default route: addresses outside 10.0.0.0/8 (the
//! external and load-balancer IPs the tests use, 203.0.113.0/24) fail with
//! ENETUNREACH unless translated, and untranslated Service addresses fail
//! with EHOSTUNREACH.
//!
//! [`NodeEnv`] adds the cgroup(s), the agent(s) and a [`Source`]. A second
//! agent with another node name and its own cgroup, in the same node
//! namespace, stands in for a second node's dataplane: a client joined to
//! that cgroup is "a pod on the other node" for internalTrafficPolicy and
//! terminating-endpoint cases (those only look at the node name).

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{
    Agent, Backend, Cgroup, Dial, Netns, Outcome, Proto, SERVICE_RANGE, SERVICE_RANGE6, SYNC_TIMEOUT, Server, bins,
    cmd, k8s::EndpointSpec, names, source::Source,
};

/// The node's own address (on its `lo`, like a node IP on a dummy device).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 10);

/// The node's own IPv6 address (on its `lo`).
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 0x10);

/// `--node-name` of the agent in [`NodeEnv`]; endpoints with this
/// `nodeName` are local.
pub const NODE_NAME: &str = "test-node";

/// Per-operation timeout of the clients (connect, read, recvfrom).
const CLIENT_TIMEOUT_MS: &str = "1000";

/// The node namespace and its pods.
#[derive(Debug)]
pub struct NodeTopology {
    backends: Vec<Backend>,
    pods: Vec<Backend>,
    /// The node namespace, as a `Backend` so that it can run servers too.
    node: Backend,
}

impl NodeTopology {
    /// A dual-stack node with `n_backends` backend pods (10.244.i.2,
    /// fd00:244:i::2) and `n_pods` client pods (10.245.c.2, fd00:245:c::2).
    pub fn new(n_backends: u8, n_pods: u8) -> Result<Self> {
        if n_backends > 200 || n_pods > 200 {
            bail!("NodeTopology::new: at most 200 backends and 200 pods");
        }
        let node = Backend::dual_stack(Netns::new()?, NODE_IP, NODE_IP6);
        // Pods reach each other through the node, as through a CNI bridge
        // (routing on before any link exists: switching IPv6 forwarding on
        // later resets the links' neighbour state). The node's ICMP errors
        // (a pod's untranslated connect to an address nobody routes) are
        // not rate limited, so they fail fast every time instead of timing
        // out after a burst.
        cmd::run(&mut node.netns().exec(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.icmp_ratemask=0",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.icmp.ratelimit=0",
        ]))?;
        // Each namespace is configured with one `ip -batch` (an `ip`
        // process per command made a 16-pod node take seconds). IPv6
        // addresses skip duplicate address detection (`nodad`): usable at
        // once, and no other host can hold them.
        let mut node_cmds = vec![
            format!("addr add {NODE_IP}/32 dev lo"),
            format!("route add unreachable {SERVICE_RANGE}"),
            format!("addr add {NODE_IP6}/128 dev lo nodad"),
            format!("route add unreachable {SERVICE_RANGE6}"),
        ];
        let mut pods: Vec<(Netns, Ipv4Addr, Ipv6Addr, String, String, String)> = Vec::new();
        for (second, count, prefix) in [(244u8, n_backends, "vb"), (245, n_pods, "vc")] {
            // fd00:244:i::/64 and fd00:245:c::/64, mirroring 10.244/10.245.
            let second6 = u16::from_str_radix(&second.to_string(), 16).unwrap_or_default();
            for i in 1..=count {
                let netns = Netns::new()?;
                let (link, gateway) = (format!("{prefix}{i}"), format!("10.{second}.{i}.1"));
                let gateway6 = Ipv6Addr::new(0xfd00, second6, u16::from(i), 0, 0, 0, 0, 1);
                let ip6 = Ipv6Addr::new(0xfd00, second6, u16::from(i), 0, 0, 0, 0, 2);
                // Created in the node namespace with the peer moved straight
                // into the pod: nothing ever exists in the root namespace.
                // Fixed MACs and permanent IPv6 neighbour entries on both
                // ends: a first connect through a fresh veth otherwise lost
                // its SYN to neighbour discovery now and then.
                let (node_mac, pod_mac) = (mac(second, i, 1), mac(second, i, 2));
                node_cmds.push(format!(
                    "link add {link} address {node_mac} type veth peer name eth0 address {pod_mac} netns {}",
                    netns.name()
                ));
                node_cmds.push(format!("addr add {gateway}/24 dev {link}"));
                node_cmds.push(format!("addr add {gateway6}/64 dev {link} nodad"));
                node_cmds.push(format!("link set {link} up"));
                node_cmds.push(format!("neigh replace {ip6} lladdr {pod_mac} dev {link} nud permanent"));
                pods.push((netns, Ipv4Addr::new(10, second, i, 2), ip6, gateway, format!("{gateway6}"), node_mac));
            }
        }
        batch(node.netns(), &node_cmds)?;
        for (netns, ip, ip6, gateway, gateway6, node_mac) in &pods {
            batch(
                netns,
                &[
                    format!("addr add {ip}/24 dev eth0"),
                    format!("addr add {ip6}/64 dev eth0 nodad"),
                    "link set eth0 up".to_owned(),
                    format!("neigh replace {gateway6} lladdr {node_mac} dev eth0 nud permanent"),
                    format!("route add unreachable {SERVICE_RANGE}"),
                    format!("route add 10.0.0.0/8 via {gateway}"),
                    format!("route add unreachable {SERVICE_RANGE6}"),
                    format!("route add fd00::/8 via {gateway6}"),
                ],
            )?;
        }
        let mut pods: Vec<Backend> =
            pods.into_iter().map(|(netns, ip, ip6, ..)| Backend::dual_stack(netns, ip, ip6)).collect();
        let client_pods = pods.split_off(usize::from(n_backends));
        Ok(Self { backends: pods, pods: client_pods, node })
    }

    /// The node namespace (its `ip()` is [`NODE_IP`]); `serve` runs a
    /// server on the node's host network.
    pub fn node(&self) -> &Backend {
        &self.node
    }

    /// Backend pod `i` (10.244.i.2), counting from 1.
    pub fn backend(&self, i: u8) -> &Backend {
        nth(&self.backends, i, "backend")
    }

    /// Every backend pod.
    pub fn backend_pods(&self) -> &[Backend] {
        &self.backends
    }

    /// Client pod `c` (10.245.c.2), counting from 1.
    pub fn pod(&self, c: u8) -> &Backend {
        nth(&self.pods, c, "client pod")
    }

    /// Adds `ip`/32 to the node (on `lo`), as when a node gains an address.
    pub fn add_node_address(&self, ip: Ipv4Addr) -> Result<()> {
        self.node.netns().ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]).map(drop)
    }

    /// Removes an address added with [`Self::add_node_address`].
    pub fn remove_node_address(&self, ip: Ipv4Addr) -> Result<()> {
        self.node.netns().ip(&["addr", "del", &format!("{ip}/32"), "dev", "lo"]).map(drop)
    }
}

/// A locally administered MAC for end `end` of pod `i`'s veth in 10.`net`.
fn mac(net: u8, i: u8, end: u8) -> String {
    format!("02:00:0a:{net:02x}:{i:02x}:{end:02x}")
}

fn nth<'a>(list: &'a [Backend], i: u8, what: &str) -> &'a Backend {
    usize::from(i)
        .checked_sub(1)
        .and_then(|idx| list.get(idx))
        .unwrap_or_else(|| panic!("{what} {i} does not exist (1..={})", list.len()))
}

/// Runs `commands` (one `ip` command line each, without `ip`) in `netns`
/// with a single `ip -batch`; fails on the first failing command.
fn batch(netns: &Netns, commands: &[String]) -> Result<()> {
    let path = Path::new(names::TMP_DIR).join(format!("{}-ip-batch", names::unique_name()));
    std::fs::write(&path, commands.join("\n") + "\n").with_context(|| format!("write {}", path.display()))?;
    let _file = TempFile(path.clone());
    netns.ip(&["-batch", &path.to_string_lossy()]).map(drop)
}

/// Extra fields of a testkit client report that [`Outcome`] leaves out.
#[derive(Debug, Deserialize)]
struct ReportExtra {
    #[serde(default)]
    netns_cookie: u64,
}

/// A place to run test clients from: a network namespace, joined to the
/// cgroup of one node's agent.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    netns: &'a Netns,
    cgroup: &'a Cgroup,
    label: &'static str,
    dial: Dial,
}

impl<'a> Client<'a> {
    /// A client in `netns` joined to `cgroup`.
    pub(crate) fn new(netns: &'a Netns, cgroup: &'a Cgroup, label: &'static str, dial: Dial) -> Self {
        Self { netns, cgroup, label, dial }
    }
}

impl Client<'_> {
    /// This client, dialling as `dial` says (addresses still reported as
    /// IPv4, see [`Dial::as_ipv4`]).
    #[must_use]
    pub fn dialing(self, dial: Dial) -> Self {
        Self { dial, ..self }
    }

    /// `count` sequential TCP connects to `to`.
    pub fn tcp(&self, to: impl Into<SocketAddr>, count: u32) -> Result<Outcome> {
        Ok(self.run("tcp", to.into(), count, &[])?.0)
    }

    /// `count` sequential TCP connects to `to`, each from a socket bound
    /// to `source_port` first (as a client that picks its port does).
    pub fn tcp_from_port(&self, to: impl Into<SocketAddr>, count: u32, source_port: u16) -> Result<Outcome> {
        Ok(self.run("tcp", to.into(), count, &["--source-port", &source_port.to_string()])?.0)
    }

    /// `count` UDP datagrams to `to`: over one unconnected socket, or one
    /// connected socket per datagram.
    pub fn udp(&self, to: impl Into<SocketAddr>, count: u32, connected: bool) -> Result<Outcome> {
        let extra: &[&str] = if connected { &["--connected"] } else { &[] };
        Ok(self.run("udp", to.into(), count, extra)?.0)
    }

    /// A UDP session to `to` from this client: one connected socket bound
    /// to `source_port` (0: any), `rounds` datagrams 20 ms apart, opening a
    /// new socket (same port) after an error when `reconnect`.
    pub fn udp_session(
        &self,
        to: impl Into<SocketAddr>,
        rounds: u32,
        source_port: u16,
        reconnect: bool,
    ) -> Result<crate::session::UdpSession> {
        let (to_s, count_s, port_s) =
            (self.dial.target_any(to.into()).to_string(), rounds.to_string(), source_port.to_string());
        let cgroup = self.cgroup.path().to_string_lossy().into_owned();
        let mut args = vec!["udp-session", "--to", &to_s, "--count", &count_s, "--interval-ms", "20"];
        args.extend(["--timeout-ms", "200", "--source-port", &port_s, "--cgroup", &cgroup]);
        if reconnect {
            args.push("--reconnect");
        }
        crate::session::UdpSession::spawn(self.netns.testkit(&args)?)
    }

    /// One connected socket to `to` from this client (TCP, or UDP with
    /// `udp`), held open: see [`crate::session::Held`].
    pub fn hold(
        &self,
        to: impl Into<SocketAddr>,
        udp: bool,
    ) -> Result<(crate::session::Held, crate::session::HeldRound)> {
        let to_s = self.dial.target_any(to.into()).to_string();
        let cgroup = self.cgroup.path().to_string_lossy().into_owned();
        let mut args = vec!["hold", "--to", &to_s, "--cgroup", &cgroup];
        if udp {
            args.push("--udp");
        }
        crate::session::Held::spawn(self.netns.testkit(&args)?)
    }

    /// Runs `program` with `args` as this client (its network namespace
    /// and cgroup), e.g. `dig` or `curl`; returns what it printed, or an
    /// error with its output if it failed.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let cgroup = self.cgroup.path().to_string_lossy().into_owned();
        let mut argv = vec!["exec", "--cgroup", &cgroup, "--", program];
        argv.extend_from_slice(args);
        cmd::run(&mut self.netns.testkit(&argv)?).with_context(|| format!("{program} in {}", self.label))
    }

    /// The client's network namespace cookie: its identity for session
    /// affinity, as `status` shows it.
    pub fn netns_cookie(&self) -> Result<u64> {
        let cookie = self.run("tcp", SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9).into(), 0, &[])?.1;
        if cookie == 0 {
            bail!("{}: svc-testkit could not read its netns cookie", self.label);
        }
        Ok(cookie)
    }

    fn run(&self, mode: &str, to: SocketAddr, count: u32, extra: &[&str]) -> Result<(Outcome, u64)> {
        let to_s = self.dial.target_any(to).to_string();
        let count_s = count.to_string();
        let cgroup = self.cgroup.path().to_string_lossy().into_owned();
        let mut args = vec![mode, "--to", &to_s, "--count", &count_s, "--timeout-ms", CLIENT_TIMEOUT_MS];
        args.extend(["--cgroup", &cgroup]);
        args.extend_from_slice(extra);
        let stdout = cmd::run(&mut self.netns.testkit(&args)?)
            .with_context(|| format!("{mode} client in {} to {to_s}", self.label))?;
        let outcome: Outcome =
            serde_json::from_str(&stdout).with_context(|| format!("parse svc-testkit {mode} output: {stdout}"))?;
        let extra: ReportExtra =
            serde_json::from_str(&stdout).with_context(|| format!("parse svc-testkit {mode} output: {stdout}"))?;
        if outcome.cgroup != self.cgroup.relative() {
            bail!("{} client ran in cgroup {:?}, not {:?}", self.label, outcome.cgroup, self.cgroup.relative());
        }
        // An IPv6 destination is dialled as it is, and reported as it is.
        let outcome = if to.is_ipv4() { self.dial.as_ipv4(outcome)? } else { outcome };
        Ok((outcome, extra.netns_cookie))
    }
}

/// Where a client runs, on a given node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The node's host network namespace (a hostNetwork pod, or a process
    /// on the node).
    Host,
    /// Client pod `c`.
    Pod(u8),
    /// Inside backend pod `i` (a backend that is also a client: hairpin).
    Backend(u8),
}

/// `svc-testkit relay`: `127.0.0.1:PORT` in the node namespace forwarded
/// to the host's `127.0.0.1:PORT`. Killed on Drop.
#[derive(Debug)]
struct Relay(Child);

impl Relay {
    fn start(node: &Netns, port: u16) -> Result<Self> {
        let port_s = port.to_string();
        let mut command = Command::new(bins::testkit_bin()?);
        command.args(["relay", "--listen-netns", node.name(), "--port", &port_s]).stdout(Stdio::piped());
        cmd::die_with_parent(&mut command);
        let mut child = command.spawn().context("spawn svc-testkit relay")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let relay = Self(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            if let Err(e) = BufReader::new(stdout).read_line(&mut line) {
                line = format!("(reading its stdout failed: {e})");
            }
            // The test may have stopped waiting (timed out): then no one
            // is left to tell.
            drop(tx.send(line));
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(line) if line.trim() == "ready" => Ok(relay),
            other => bail!("svc-testkit relay of port {port} into {}: not ready ({other:?})", node.name()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        cmd::reap(&mut self.0);
    }
}

/// A file removed on Drop.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            eprintln!("svc-tests: removing {}: {e}", self.0.display());
        }
    }
}

/// A node, its source, agent(s) and servers. Fields drop in declaration
/// order: agents (and their pins) first, then servers, then the network,
/// then the cgroups.
#[derive(Debug)]
pub struct NodeEnv {
    /// `agents[k]` serves node `k`; 0 is [`NODE_NAME`].
    agents: Vec<Agent>,
    /// Relays of [`Source::loopback_ports`] into the node namespace.
    relays: Vec<Relay>,
    /// Backend `i`'s server is named `b<i>`.
    pub servers: Vec<Server>,
    /// The node launcher script and the pod shape it runs the agent in.
    launcher: Option<(TempFile, crate::deployed::Deployed)>,
    source: Box<dyn Source>,
    pub topo: NodeTopology,
    /// `cgroups[k]` holds node `k`'s pods; node 0's exists from the start.
    cgroups: Vec<Cgroup>,
    /// Extra agent arguments for node 0 (e.g. `--zone`), set before start.
    node_args: Vec<OsString>,
    /// How this env's clients dial (default: `AF_INET`).
    dial: Dial,
}

impl NodeEnv {
    /// A node with `n_backends` backends, each running a server `b<i>` on
    /// `ports` (none if `ports` is empty), and `n_pods` client pods;
    /// objects go to `source`.
    pub fn new(source: Box<dyn Source>, n_backends: u8, n_pods: u8, ports: &[Proto]) -> Result<Self> {
        crate::require_root();
        let cgroup = Cgroup::new()?;
        let topo = NodeTopology::new(n_backends, n_pods)?;
        let servers = if ports.is_empty() {
            Vec::new()
        } else {
            (1..=n_backends).map(|i| topo.backend(i).serve(&format!("b{i}"), ports)).collect::<Result<Vec<_>>>()?
        };
        Ok(Self {
            agents: Vec::new(),
            relays: Vec::new(),
            servers,
            launcher: None,
            source,
            topo,
            cgroups: vec![cgroup],
            node_args: Vec::new(),
            dial: Dial::Inet,
        })
    }

    /// This env, its clients dialling as `dial` says.
    #[must_use]
    pub fn dialing(self, dial: Dial) -> Self {
        Self { dial, ..self }
    }

    /// Creates or replaces the objects of `unit` (see [`Source::apply`]).
    pub fn apply(&self, unit: &str, yaml: &str) -> Result<()> {
        self.source.apply(unit, yaml)
    }

    /// Deletes the objects of `unit`.
    pub fn delete(&self, unit: &str) -> Result<()> {
        self.source.delete(unit)
    }

    /// Sets this node's zone; call before [`Self::start_agent`].
    pub fn set_zone(&mut self, zone: &str) -> Result<()> {
        let args = self.source.node_zone(NODE_NAME, zone)?;
        self.node_args.extend(args);
        Ok(())
    }

    /// Starts the agent of node 0 ([`NODE_NAME`]) inside the node namespace
    /// with `extra` arguments, and waits until it is in sync.
    pub fn start_agent(&mut self, extra: &[&str]) -> Result<&Agent> {
        if !self.agents.is_empty() {
            bail!("start_agent: node 0's agent already runs");
        }
        let mut args = self.node_args.clone();
        args.extend(extra.iter().map(OsString::from));
        self.spawn_agent(0, NODE_NAME, &args)?;
        Ok(&self.agents[0])
    }

    /// Starts the agent of another node (`node_name`), with its own cgroup,
    /// in the same node namespace; returns the node's index for
    /// [`Self::client_on`]. Node 0's agent must run already.
    pub fn start_peer_agent(&mut self, node_name: &str) -> Result<usize> {
        if self.agents.is_empty() {
            bail!("start_peer_agent: start node 0's agent first");
        }
        let node = self.cgroups.len();
        self.cgroups.push(Cgroup::new()?);
        self.spawn_agent(node, node_name, &[])?;
        Ok(node)
    }

    fn spawn_agent(&mut self, node: usize, node_name: &str, extra: &[OsString]) -> Result<()> {
        if self.relays.is_empty() {
            for port in self.source.loopback_ports() {
                self.relays.push(Relay::start(self.topo.node().netns(), port)?);
            }
        }
        let launcher = self.launcher()?;
        let mut args = self.source.agent_args();
        args.extend(["--node-name".into(), node_name.into()]);
        args.extend(extra.iter().cloned());
        let mut agent = Agent::start_with(launcher, &self.cgroups[node], &args)?;
        let res = agent.wait_in_sync(SYNC_TIMEOUT);
        self.agents.push(agent);
        res.map(drop)
    }

    /// A script that runs the agent, in the DaemonSet's shape, inside the
    /// node namespace.
    fn launcher(&mut self) -> Result<PathBuf> {
        if let Some((file, _)) = &self.launcher {
            return Ok(file.0.clone());
        }
        let mounts = self.source.agent_mounts();
        let pod = crate::deployed::Deployed::new(
            &bins::agent_bin()?,
            &mounts.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        )?;
        let path = Path::new(names::TMP_DIR).join(format!("{}-agent-in-node.sh", names::unique_name()));
        let script = format!(
            "#!/bin/sh\nexec nsenter --net=/run/netns/{} -- '{}' \"$@\"\n",
            self.topo.node().netns().name(),
            pod.path().display()
        );
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
        let file = TempFile(path.clone());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
        self.launcher = Some((file, pod));
        Ok(path)
    }

    /// Node 0's agent.
    pub fn agent(&self) -> &Agent {
        self.agents.first().expect("NodeEnv::agent() before start_agent()")
    }

    /// Node 0's agent, mutably (restart, log waits).
    pub fn agent_mut(&mut self) -> &mut Agent {
        self.agents.first_mut().expect("NodeEnv::agent_mut() before start_agent()")
    }

    /// A client on node 0.
    pub fn client(&self, at: At) -> Client<'_> {
        self.client_on(0, at)
    }

    /// A client on node `node` (0, or an index from
    /// [`Self::start_peer_agent`]).
    pub fn client_on(&self, node: usize, at: At) -> Client<'_> {
        let cgroup = self.cgroups.get(node).unwrap_or_else(|| panic!("node {node} has no agent"));
        let (netns, label) = match at {
            At::Host => (self.topo.node().netns(), "node host network"),
            At::Pod(c) => (self.topo.pod(c).netns(), "client pod"),
            At::Backend(i) => (self.topo.backend(i).netns(), "backend pod"),
        };
        Client { netns, cgroup, label, dial: self.dial }
    }

    /// Client pod `c` on node 0.
    pub fn pod(&self, c: u8) -> Client<'_> {
        self.client(At::Pod(c))
    }

    /// Node 0's cgroup, which its agent attaches to and where it looks for
    /// pod cgroups (its `--kubelet-cgroup-root` default).
    pub fn kubelet_root(&self) -> &Cgroup {
        &self.cgroups[0]
    }

    /// Client pod `c` on node 0, its processes in `cgroup` (a pod's cgroup
    /// under [`Self::kubelet_root`]).
    pub fn pod_in<'a>(&'a self, c: u8, cgroup: &'a Cgroup) -> Client<'a> {
        Client { netns: self.topo.pod(c).netns(), cgroup, label: "client pod", dial: self.dial }
    }

    /// Where this env's objects go.
    pub fn source(&self) -> &dyn Source {
        self.source.as_ref()
    }

    /// The host network namespace of node 0.
    pub fn host(&self) -> Client<'_> {
        self.client(At::Host)
    }

    /// Endpoints (no conditions: ready) for the given backends: their
    /// IPv6 addresses when this env dials [`Dial::Ipv6`].
    pub fn endpoints(&self, backends: &[u8]) -> Vec<EndpointSpec> {
        if self.dial == Dial::Ipv6 {
            return self.endpoints6(backends);
        }
        backends.iter().map(|&i| EndpointSpec::new(self.topo.backend(i).ip())).collect()
    }

    /// How this env's clients dial.
    pub fn dial(&self) -> Dial {
        self.dial
    }

    /// Backend `i`'s address on `port` in this env's Services: IPv6 when
    /// it dials [`Dial::Ipv6`].
    pub fn backend_addr(&self, i: u8, port: u16) -> SocketAddr {
        let backend = self.topo.backend(i);
        if self.dial == Dial::Ipv6 { backend.addr6(port).into() } else { backend.addr(port).into() }
    }

    /// A Service address of the scenario as this env's Services have it
    /// ([`Dial::service_ip`]).
    pub fn service_ip(&self, ip: &str) -> String {
        self.dial.service_ip(ip)
    }

    /// IPv6 endpoints (no conditions: ready) for the given backends, for
    /// an `addressType: IPv6` slice.
    pub fn endpoints6(&self, backends: &[u8]) -> Vec<EndpointSpec> {
        backends.iter().map(|&i| EndpointSpec::new(self.topo.backend(i).ip6())).collect()
    }
}
