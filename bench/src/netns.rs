//! The bench's network namespaces: one per mode, identical apart from the
//! mode's rules, so that conntrack (which iptables and nftables switch on
//! in their namespace) never runs under the direct and eBPF measurements,
//! and each layout is loaded once per size instead of once per round.

use std::{fs::File, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    addressing::{BACKEND_ROUTE, BACKEND_ROUTE6, CLIENT_ADDR, EXTRA_BACKEND, SERVICE_CIDR6, SERVICE_ROUTE, twin6},
    cleanup::{self, Guard},
    sys,
};

/// A named network namespace with the bench's addressing; deleted (with
/// every rule in it) on drop.
#[derive(Debug)]
pub(crate) struct Netns {
    name: String,
    _guard: Guard,
}

impl Netns {
    /// Creates `name` and sets it up:
    /// - `lo` up, and `local 10.64.0.0/12 dev lo`: every endpoint address
    ///   is local, one listener on 0.0.0.0 serves them all;
    /// - the client address 10.127.255.1/32 on `lo` and the route
    ///   `10.96.0.0/12 dev lo src 10.127.255.1`: a VIP is routable
    ///   (netfilter's OUTPUT hook needs a route before it can DNAT), but an
    ///   untranslated SYN loops back to an address that is not local and is
    ///   dropped (no forwarding), so the connect times out; nothing ever
    ///   leaves the namespace (no other device, no default route). This
    ///   kernel has no dummy device (CONFIG_DUMMY unset), hence `lo`;
    /// - the same for IPv6 with the twins (`local fd00::a40:0/108`, the
    ///   client's `fd00::a7f:ff01`, `fd00::a60:0/108` routed via `lo`), and
    ///   the UDP echo's `fd00::a4f:ff01` assigned to `lo`: unlike IPv4, an
    ///   IPv6 bind() needs an assigned address, a local route is not enough;
    /// - more ephemeral ports and a longer accept queue, so neither limits
    ///   a connect loop.
    pub(crate) fn create(name: String) -> Result<Self> {
        let netns = Self::bare(name)?;
        let client = format!("{CLIENT_ADDR}/32");
        let client_src = CLIENT_ADDR.to_string();
        let client6_src = twin6(CLIENT_ADDR).to_string();
        let client6 = format!("{client6_src}/128");
        let echo6 = format!("{}/128", twin6(EXTRA_BACKEND));
        for args in [
            vec!["route", "add", "local", BACKEND_ROUTE, "dev", "lo"],
            vec!["addr", "add", &client, "dev", "lo"],
            vec!["route", "add", SERVICE_ROUTE, "dev", "lo", "src", &client_src],
            vec!["-6", "route", "add", "local", BACKEND_ROUTE6, "dev", "lo"],
            vec!["-6", "addr", "add", &client6, "dev", "lo", "nodad"],
            vec!["-6", "addr", "add", &echo6, "dev", "lo", "nodad"],
            vec!["-6", "route", "add", SERVICE_CIDR6, "dev", "lo", "src", &client6_src],
        ] {
            netns.ip(&args)?;
        }
        for (key, value) in [
            ("net.ipv4.ip_local_port_range", "1024 65000"),
            ("net.core.somaxconn", "65535"),
            ("net.ipv4.tcp_max_syn_backlog", "65535"),
        ] {
            netns.sysctl(key, value)?;
        }
        Ok(netns)
    }

    /// A namespace `name` with only `lo`, up (the north-south topology
    /// builds on it).
    pub(crate) fn bare(name: String) -> Result<Self> {
        sys::run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { _guard: cleanup::register(cleanup::Resource::Netns(name.clone())), name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Sets a sysctl of this namespace (`key` in sysctl's dotted form).
    pub(crate) fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        sys::run(
            Command::new("ip").args(["netns", "exec", &self.name, "sysctl", "-q", "-w"]).arg(format!("{key}={value}")),
        )
        .map(drop)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for setns(2).
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Opens the namespace file (for [`sys::in_netns`]).
    pub(crate) fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("open {}", self.path().display()))
    }

    /// `ip -n NAME ARGS`.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<String> {
        sys::run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A sysctl of this namespace (`ip netns exec NAME cat /proc/sys/...`).
    pub(crate) fn read_sysctl(&self, path: &str) -> Option<String> {
        sys::run(Command::new("ip").args(["netns", "exec", &self.name, "cat"]).arg(format!("/proc/sys/{path}")))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}
