//! The test network: one client namespace and N backend namespaces, each
//! backend on its own veth pair to the client. Nothing touches the root
//! namespace.
//!
//! ```text
//!   client netns                       backend netns i (i = 1..=N)
//!   veth<i> 10.244.i.1/24  <------->  eth0 10.244.i.2/24
//!   unreachable 10.96.0.0/12           (no default route)
//!   (no default route)
//! ```
//!
//! The `unreachable` route makes an untranslated connect to a ClusterIP fail
//! at once (EHOSTUNREACH) instead of leaving the namespace or timing out.

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{Cgroup, Netns, Outcome, cmd};

/// The service range the client cannot reach without translation.
pub const SERVICE_RANGE: &str = "10.96.0.0/12";

/// The IPv6 service range of the node topology (`--service-cidr`'s IPv6
/// half in the tests): every untranslated address in it is unreachable.
pub const SERVICE_RANGE6: &str = "fd00:96::/108";

/// How long a backend server may take to bind its ports.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-operation timeout of the test clients (connect, read, recvfrom).
const CLIENT_TIMEOUT_MS: &str = "1000";

/// A port for [`Backend::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp(u16),
    Udp(u16),
}

#[derive(Debug)]
pub struct Topology {
    client: Netns,
    backends: Vec<Backend>,
}

/// Backend `i`: its own namespace, address 10.244.i.2.
#[derive(Debug)]
pub struct Backend {
    netns: Netns,
    ip: Ipv4Addr,
    /// Its IPv6 address, in a dual-stack topology.
    ip6: Option<Ipv6Addr>,
}

/// A running `svc-testkit serve`; killed on Drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
}

impl Topology {
    pub fn new(n_backends: u8) -> Result<Self> {
        if n_backends == 0 || n_backends > 254 {
            bail!("Topology::new: 1..=254 backends, not {n_backends}");
        }
        let client = Netns::new()?;
        client.ip(&["route", "add", "unreachable", SERVICE_RANGE])?;
        let mut backends = Vec::new();
        for i in 1..=n_backends {
            backends.push(Backend::new(&client, i)?);
        }
        Ok(Self { client, backends })
    }

    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// Backend `i`, counting from 1 like the addresses (10.244.i.2).
    pub fn backend(&self, i: u8) -> &Backend {
        let idx = usize::from(i)
            .checked_sub(1)
            .filter(|&idx| idx < self.backends.len())
            .unwrap_or_else(|| panic!("backend {i} does not exist (1..={})", self.backends.len()));
        &self.backends[idx]
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// `count` sequential TCP connects from the client namespace to `to`,
    /// from inside `cgroup` when given.
    pub fn tcp(&self, cgroup: Option<&Cgroup>, to: impl Into<SocketAddr>, count: u32) -> Result<Outcome> {
        self.run_client("tcp", cgroup, to.into(), count, &[])
    }

    /// `count` UDP datagrams from the client namespace to `to`: over one
    /// unconnected socket, or one connected socket per datagram.
    pub fn udp(
        &self,
        cgroup: Option<&Cgroup>,
        to: impl Into<SocketAddr>,
        count: u32,
        connected: bool,
    ) -> Result<Outcome> {
        let extra: &[&str] = if connected { &["--connected"] } else { &[] };
        self.run_client("udp", cgroup, to.into(), count, extra)
    }

    fn run_client(
        &self,
        mode: &str,
        cgroup: Option<&Cgroup>,
        to: SocketAddr,
        count: u32,
        extra: &[&str],
    ) -> Result<Outcome> {
        let to = to.to_string();
        let count = count.to_string();
        let mut args = vec![mode, "--to", &to, "--count", &count];
        args.extend(["--timeout-ms", CLIENT_TIMEOUT_MS]);
        let cgroup_path;
        if let Some(cg) = cgroup {
            cgroup_path = cg.path().to_string_lossy().into_owned();
            args.extend(["--cgroup", &cgroup_path]);
        }
        args.extend_from_slice(extra);
        let stdout = cmd::run(&mut self.client.testkit(&args)?)?;
        serde_json::from_str(&stdout).with_context(|| format!("parse svc-testkit {mode} output: {stdout}"))
    }
}

impl Backend {
    fn new(client: &Netns, i: u8) -> Result<Self> {
        let netns = Netns::new()?;
        let veth = format!("veth{i}");
        // Created inside the client namespace, peer moved straight into the
        // backend namespace: no interface ever exists in the root namespace.
        client.ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", netns.name()])?;
        client.ip(&["addr", "add", &format!("10.244.{i}.1/24"), "dev", &veth])?;
        client.ip(&["link", "set", &veth, "up"])?;
        netns.ip(&["addr", "add", &format!("10.244.{i}.2/24"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        Ok(Self { netns, ip: Ipv4Addr::new(10, 244, i, 2), ip6: None })
    }

    /// A namespace whose links and addresses were set up elsewhere (e.g. a
    /// pod attached to a node namespace, or the node itself), with `ip` its
    /// address; it owns the namespace (removed on Drop) and can `serve`.
    pub(crate) fn from_parts(netns: Netns, ip: Ipv4Addr) -> Self {
        Self { netns, ip, ip6: None }
    }

    /// As [`Self::from_parts`], with an IPv6 address too.
    pub(crate) fn dual_stack(netns: Netns, ip: Ipv4Addr, ip6: Ipv6Addr) -> Self {
        Self { netns, ip, ip6: Some(ip6) }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Its IPv6 address (dual-stack topologies only).
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6.unwrap_or_else(|| panic!("{} has no IPv6 address", self.netns.name()))
    }

    /// `[ip6]:port` of this backend.
    pub fn addr6(&self, port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip6(), port, 0, 0)
    }

    /// `ip:port` of this backend.
    pub fn addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, port)
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Starts `svc-testkit serve` answering `name:PORT` on `ports`; returns
    /// once every port is bound.
    pub fn serve(&self, name: &str, ports: &[Proto]) -> Result<Server> {
        self.spawn_server(name, ports, &[])
    }

    /// A DNS server on UDP and TCP `port` whose every answer is one TXT
    /// record `name` (for `dig`).
    pub fn serve_dns(&self, name: &str, port: u16) -> Result<Server> {
        self.spawn_server(name, &[Proto::Tcp(port), Proto::Udp(port)], &["--dns"])
    }

    /// An HTTP/1.0 server on TCP `port` answering every request with
    /// `name:PORT` (for `curl`).
    pub fn serve_http(&self, name: &str, port: u16) -> Result<Server> {
        self.spawn_server(name, &[Proto::Tcp(port)], &["--http"])
    }

    /// As [`Self::serve`], with `--echo-peer`: TCP replies are
    /// `name:PORT CLIENT_IP`, showing the source address the server saw.
    pub fn serve_echo_peer(&self, name: &str, ports: &[Proto]) -> Result<Server> {
        self.spawn_server(name, ports, &["--echo-peer"])
    }

    /// As [`Self::serve_echo_peer`] on TCP `port`, bound to `bind` and
    /// joined to `cgroup` first: a server under the hooks, so the client
    /// address it answers is what getpeername() of its accepted socket
    /// shows through them.
    pub fn serve_echo_peer_in(&self, name: &str, port: u16, cgroup: &Cgroup, bind: IpAddr) -> Result<Server> {
        let (cgroup, bind) = (cgroup.path().to_string_lossy().into_owned(), bind.to_string());
        self.spawn_server(name, &[Proto::Tcp(port)], &["--echo-peer", "--cgroup", &cgroup, "--bind", &bind])
    }

    /// A mesh-like sidecar proxy on TCP `port`: it answers `name:PORT
    /// ORIGINAL_DST`, the destination the client connected to before an
    /// iptables `REDIRECT` sent it here (`SO_ORIGINAL_DST`).
    pub fn serve_original_dst(&self, name: &str, port: u16) -> Result<Server> {
        // IPv4 only: SO_ORIGINAL_DST is an IPv4 socket option.
        self.spawn_server(name, &[Proto::Tcp(port)], &["--original-dst", "--bind", "0.0.0.0"])
    }

    pub(crate) fn spawn_server(&self, name: &str, ports: &[Proto], flags: &[&str]) -> Result<Server> {
        let mut args: Vec<String> =
            ["serve", "--name", name].into_iter().chain(flags.iter().copied()).map(str::to_owned).collect();
        for p in ports {
            let (flag, port) = match *p {
                Proto::Tcp(port) => ("--tcp", port),
                Proto::Udp(port) => ("--udp", port),
            };
            args.extend([flag.to_owned(), port.to_string()]);
        }
        let mut command = self.netns.testkit(&args)?;
        command.stdout(Stdio::piped());
        cmd::die_with_parent(&mut command);
        let mut child = command.spawn().context("spawn svc-testkit serve")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let server = Server { child };
        // Read `ready` on a thread so a hung server cannot hang the test.
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
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.trim() == "ready" => Ok(server),
            Ok(line) => {
                bail!("svc-testkit serve {name} in {}: said {line:?}, not ready (see stderr)", self.netns.name())
            }
            Err(_) => bail!("svc-testkit serve {name}: not ready within {READY_TIMEOUT:?}"),
        }
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        cmd::reap(&mut self.child);
    }
}
