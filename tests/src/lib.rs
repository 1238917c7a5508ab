//! Harness for the end-to-end tests: real programs, real kernel, real sockets.
//!
//! Every object a test creates (network namespaces, cgroups, temp dirs, pin
//! dirs, processes) is owned by an RAII guard and removed in `Drop`, also when
//! the test panics. Names are `svct-<pid>-<n>`, unique per process and per
//! object, so parallel tests never collide and [`sweep_stale`] can remove
//! what a killed earlier run left behind.
//!
//! Running: as root, with `svc-agent` built (`cargo build -p svc-agent`) or
//! `SVC_AGENT_BIN` pointing at it; `svc-testkit` is found next to the test
//! executable's profile dir or through `SVC_TESTKIT_BIN`. Clients run
//! `svc-testkit --netns NAME ...` rather than `ip netns exec`, because
//! `ip netns exec` remounts /sys and so hides the cgroup2 mount the client
//! must join.
//!
//! Two set-ups: [`TestEnv`] (client namespace as the hub, agent in the
//! host namespace) for ClusterIP basics, and [`NodeEnv`] (a node namespace
//! the agent runs in, with backend and client pods on veth pairs, and
//! optionally a second agent standing in for another node) for everything
//! that depends on the node: NodePort, host-network clients, node names
//! and zones. [`scenarios`] holds the Service-semantics scenarios, written
//! against a [`source::Source`] so both agent sources run them.

mod agent;
pub mod apiserver;
mod bins;
mod cgroup;
mod cmd;
pub mod deployed;
mod dial;
mod env;
pub mod k8s;
pub mod kube_env;
mod manifests;
mod names;
mod netns;
mod nodens;
mod outcome;
pub mod outside;
pub mod podman;
pub mod pool;
pub mod scenarios;
pub mod session;
pub mod source;
pub mod stats;
mod topology;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

pub use crate::{
    agent::{AffinityEntry, Agent, Frontend, IN_SYNC},
    bins::{agent_bin, testkit_bin},
    cgroup::{Cgroup, cgroup2_mount},
    dial::{Dial, service_ip6},
    env::{SYNC_TIMEOUT, TestEnv},
    manifests::ManifestDir,
    names::{sweep_stale, unique_name},
    netns::{Netns, netns_names},
    nodens::{At, Client, NODE_IP, NODE_IP6, NODE_NAME, NodeEnv, NodeTopology},
    outcome::{Outcome, UNREACHABLE},
    topology::{Backend, Proto, SERVICE_RANGE, SERVICE_RANGE6, Server, Topology},
};

/// Panics unless running as root: these tests need namespaces, cgroups and
/// BPF, and must fail loudly rather than skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "svc-tests need root (network namespaces, cgroups, BPF); euid is {euid}. \
         Run them as root, e.g. through `cargo xtask test`."
    );
}

/// Calls `check` every 10 ms until it returns `Ok(true)`; returns the time
/// that took. Fails when `timeout` passes first, or at once when `check`
/// fails (a harness error, not a "not yet").
pub fn poll_until(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `"a.b.c.d:port"` as a socket address; panics on a typo in a test.
pub fn addr(s: &str) -> std::net::SocketAddrV4 {
    s.parse().unwrap_or_else(|e| panic!("bad address {s:?} in test: {e}"))
}

/// True for an agent log line at WARN or ERROR level (tracing's fmt output
/// names the level on every line).
pub fn is_warning(line: &str) -> bool {
    line.contains("WARN") || line.contains("ERROR")
}

/// [`poll_until`] over client runs: repeats `probe` until `done` holds for
/// its outcome; on timeout the error shows the last outcome.
pub fn poll_outcome(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Outcome>,
    done: impl Fn(&Outcome) -> bool,
) -> Result<Duration> {
    let mut last = None;
    let res = poll_until(timeout, || {
        let outcome = probe()?;
        let ok = done(&outcome);
        last = Some(outcome);
        Ok(ok)
    });
    res.with_context(|| match &last {
        Some(o) => format!("last probe: {o}"),
        None => "no probe ran".to_owned(),
    })
}

/// As [`dial_tests!`], plus `ipv6::NAME`: the scenario with IPv6 Services
/// ([`Dial::Ipv6`]), for scenarios that take their Service addresses from
/// `NodeEnv::service_ip` and their endpoints from `NodeEnv::endpoints`.
#[macro_export]
macro_rules! family_tests {
    ($source:path; $($scenario:path => $name:ident),* $(,)?) => {
        $crate::dial_tests! { $source; $($scenario => $name),* }
        mod ipv6 {
            $(
                #[test]
                fn $name() -> ::anyhow::Result<()> {
                    $scenario($source()?, $crate::Dial::Ipv6)
                }
            )*
        }
    };
}

/// `#[test]`s that run each `scenario(source()?, dial)` for both IPv4
/// dials: `inet::NAME` from `AF_INET` sockets and `v4_mapped::NAME` from
/// `AF_INET6` sockets dialling `::ffff:a.b.c.d`.
///
/// ```ignore
/// svc_tests::dial_tests! { svc_tests::source::manifests;
///     svc_tests::scenarios::clusterip::named_target_ports => named_target_ports,
/// }
/// ```
#[macro_export]
macro_rules! dial_tests {
    ($source:path; $($scenario:path => $name:ident),* $(,)?) => {
        mod inet {
            $(
                #[test]
                fn $name() -> ::anyhow::Result<()> {
                    $scenario($source()?, $crate::Dial::Inet)
                }
            )*
        }
        mod v4_mapped {
            $(
                #[test]
                fn $name() -> ::anyhow::Result<()> {
                    $scenario($source()?, $crate::Dial::Mapped)
                }
            )*
        }
    };
}
