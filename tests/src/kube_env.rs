//! `KubeEnv`: [`crate::TestEnv`]'s setup (a cgroup, a topology with a server
//! on every backend, the agent in the DaemonSet's shape) with a real API
//! server as the source (`svc-agent run --source kube --kubeconfig ...`),
//! and the agent's
//! `/readyz` and `/metrics` on a loopback port. Fields drop in declaration
//! order: the agent stops before the network, the cgroup and the server go.
//!
//! [`InCluster`] runs the agent as a pod would: no kubeconfig, a service
//! account token and CA at the in-cluster path (in a private mount
//! namespace) and `KUBERNETES_SERVICE_HOST`/`_PORT` naming the server.

use std::{
    ffi::OsString,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    Agent, Cgroup, Outcome, Proto, SYNC_TIMEOUT, Server, Topology, agent_bin, apiserver::ApiServer, cmd, k8s::Endpoint,
    names, source::Source as _,
};

/// The `--node-name` the tests give the agent.
pub const KUBE_NODE_NAME: &str = "test-node";

#[derive(Debug)]
pub struct KubeEnv {
    agent: Option<Agent>,
    /// The DaemonSet's shape the agent runs in (the API server's directory
    /// mounted for the kubeconfig and certificates).
    pod: Option<crate::deployed::Deployed>,
    /// Backend i's server is named `b<i>`.
    pub servers: Vec<Server>,
    pub topo: Topology,
    pub cgroup: Cgroup,
    pub api: ApiServer,
    metrics: SocketAddr,
}

impl KubeEnv {
    /// A fresh API server, and `n_backends` backends each serving `ports`.
    pub fn new(n_backends: u8, ports: &[Proto]) -> Result<Self> {
        Self::with_api(ApiServer::new()?, n_backends, ports)
    }

    /// As [`Self::new`], on a given server.
    pub fn with_api(api: ApiServer, n_backends: u8, ports: &[Proto]) -> Result<Self> {
        crate::require_root();
        let cgroup = Cgroup::new()?;
        let topo = Topology::new(n_backends)?;
        let servers =
            (1..=n_backends).map(|i| topo.backend(i).serve(&format!("b{i}"), ports)).collect::<Result<Vec<_>>>()?;
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        Ok(Self { agent: None, pod: None, servers, topo, cgroup, api, metrics })
    }

    /// Starts the agent on this env's API server (kubeconfig) without
    /// waiting for anything.
    pub fn spawn_agent(&mut self) -> Result<&mut Agent> {
        let mut args = self.api.agent_args();
        args.extend(self.common_args());
        if self.pod.is_none() {
            let mounts = self.api.agent_mounts();
            let refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
            self.pod = Some(crate::deployed::Deployed::new(&agent_bin()?, &refs)?);
        }
        let launcher = self.pod.as_ref().map(crate::deployed::Deployed::path).expect("just set");
        let agent = Agent::start_with(launcher, &self.cgroup, &args)?;
        Ok(self.agent.insert(agent))
    }

    /// Starts the agent through `launcher` (see [`InCluster`]), with no
    /// kubeconfig: the in-cluster configuration applies.
    pub fn spawn_agent_in_cluster(&mut self, launcher: &InCluster) -> Result<&mut Agent> {
        let mut args: Vec<OsString> = vec!["--source".into(), "kube".into()];
        args.extend(self.common_args());
        let agent = Agent::start_with(launcher.path(), &self.cgroup, &args)?;
        Ok(self.agent.insert(agent))
    }

    fn common_args(&self) -> Vec<OsString> {
        // This agent shares the machine's network namespace: its TC
        // programs must never touch the machine's own devices.
        ["--node-name", KUBE_NODE_NAME, "--devices", "none", "--metrics-addr"]
            .into_iter()
            .map(OsString::from)
            .chain([self.metrics.to_string().into()])
            .collect()
    }

    /// [`Self::spawn_agent`], then waits for `dataplane in sync`.
    pub fn start_agent(&mut self) -> Result<&mut Agent> {
        let agent = self.spawn_agent()?;
        agent.wait_in_sync(SYNC_TIMEOUT)?;
        Ok(agent)
    }

    /// The agent started by [`Self::spawn_agent`] or [`Self::start_agent`].
    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("KubeEnv::agent() before the agent was started")
    }

    /// Disjoint borrows, for a client thread running beside the agent and
    /// server steps of a test.
    pub fn parts(&mut self) -> (&mut Agent, &mut ApiServer, &Topology, &Cgroup) {
        let agent = self.agent.as_mut().expect("KubeEnv::parts() before the agent was started");
        (agent, &mut self.api, &self.topo, &self.cgroup)
    }

    /// Ready endpoints for the given backends (10.244.i.2).
    pub fn endpoints(&self, backends: &[u8]) -> Vec<Endpoint> {
        backends.iter().map(|&i| Endpoint::ready(self.topo.backend(i).ip())).collect()
    }

    /// TCP connects from the client namespace, inside the test cgroup.
    pub fn tcp(&self, to: SocketAddrV4, count: u32) -> Result<Outcome> {
        self.topo.tcp(Some(&self.cgroup), to, count).with_context(|| format!("tcp client to {to}"))
    }

    /// UDP datagrams from the client namespace, inside the test cgroup.
    pub fn udp(&self, to: SocketAddrV4, count: u32, connected: bool) -> Result<Outcome> {
        self.topo.udp(Some(&self.cgroup), to, count, connected).with_context(|| format!("udp client to {to}"))
    }

    /// The HTTP status of the agent's `/readyz`.
    pub fn readyz(&self) -> Result<u16> {
        Ok(http_get(self.metrics, "/readyz")?.0)
    }

    /// The agent's `/metrics` (Prometheus text).
    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http_get(self.metrics, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(body)
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `GET path` over HTTP/1.0; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("read the answer to GET {path}"))?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// The value of the sample `name` (full name with labels, as printed) in
/// Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How many lines of the agent's current run contain `needle`.
pub fn count_in_log(agent: &Agent, needle: &str) -> usize {
    agent.log_since_start().lines().filter(|l| l.contains(needle)).count()
}

/// Waits until the agent's current run has logged `needle` on at least `n`
/// lines; returns the time it took. Fails at once if the agent exits.
pub fn wait_for_count(agent: &mut Agent, needle: &str, n: usize, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if count_in_log(agent, needle) >= n {
            return Ok(start.elapsed());
        }
        if !agent.is_running() {
            bail!("agent exited before logging {needle:?} {n} times; log:\n{}", agent.log_since_start());
        }
        if start.elapsed() > timeout {
            bail!("agent did not log {needle:?} {n} times within {timeout:?}; log:\n{}", agent.log_since_start());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A launcher that runs `svc-agent` as inside a pod: in a private mount
/// namespace, a tmpfs on /run holds `secrets/kubernetes.io/serviceaccount/`
/// {`token`, `ca.crt`, `namespace`}; `KUBERNETES_SERVICE_HOST`/`_PORT`
/// name the API server; no kubeconfig is reachable (`KUBECONFIG` unset,
/// `HOME` empty). Nothing changes outside that namespace. The directory
/// is removed on Drop.
#[derive(Debug)]
pub struct InCluster {
    dir: PathBuf,
}

impl InCluster {
    /// Service account `namespace/name` of `api`, with a token from the
    /// TokenRequest API (`kubectl create token`), valid for an hour.
    pub fn new(api: &ApiServer, namespace: &str, service_account: &str) -> Result<Self> {
        let dir = Path::new("/tmp").join(names::unique_name());
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let launcher = Self { dir };
        let sa = launcher.dir.join("sa");
        std::fs::create_dir_all(&sa)?;
        std::fs::create_dir_all(launcher.dir.join("home"))?;
        let token = api.kubectl(&["create", "token", service_account, "-n", namespace, "--duration", "1h"])?;
        std::fs::write(sa.join("token"), token.trim())?;
        std::fs::copy(api.ca_cert(), sa.join("ca.crt")).with_context(|| format!("copy {}", api.ca_cert().display()))?;
        std::fs::write(sa.join("namespace"), namespace)?;
        let script = format!(
            r#"#!/bin/sh
# svc-tests: svc-agent as inside a pod (see tests/src/kube_env.rs).
export KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT={port} HOME={home}
unset KUBECONFIG
exec unshare --mount --propagation private -- /bin/sh -c '
set -e
mount -t tmpfs -o mode=0755,size=1m svc-tests-sa /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount
cp "$1"/token "$1"/ca.crt "$1"/namespace /run/secrets/kubernetes.io/serviceaccount/
shift
exec "$0" "$@"' {agent} {sa} "$@"
"#,
            port = api.port()?,
            home = shell_quote(&launcher.dir.join("home")),
            agent = shell_quote(&agent_bin()?),
            sa = shell_quote(&sa),
        );
        cmd::write_script(&launcher.path(), &script)?;
        Ok(launcher)
    }

    /// The launcher script (use it as the agent binary).
    pub fn path(&self) -> PathBuf {
        self.dir.join("svc-agent-in-pod")
    }

    /// The service account token.
    pub fn token(&self) -> Result<String> {
        let path = self.dir.join("sa/token");
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    }
}

impl Drop for InCluster {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("svc-tests: removing {}: {e}", self.dir.display());
        }
    }
}

/// `path` single-quoted for sh.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The agent's budget for a change written through the API, measured from
/// just before the write until a client sees it.
pub const API_BUDGET: Duration = Duration::from_secs(1);

/// How long a test keeps polling for a change, so that a slow agent
/// reports its real latency instead of a bare timeout.
pub const API_POLL: Duration = Duration::from_secs(5);

/// Prints how long `what` took to reach the clients and fails if that is
/// over [`API_BUDGET`].
pub fn assert_within_budget(what: &str, took: Duration) {
    eprintln!("{what}: observed {took:?} after the API write");
    assert!(took <= API_BUDGET, "{what}: clients saw it only {took:?} after the API write (budget {API_BUDGET:?})");
}

/// `yaml` (one object from [`crate::k8s`]'s builders) with `labels` added
/// to its `metadata.labels`.
pub fn with_labels(yaml: &str, labels: &[(&str, &str)]) -> String {
    let entries: String = labels.iter().map(|(key, value)| format!("    {key}: \"{value}\"\n")).collect();
    assert!(yaml.contains("metadata:\n"), "with_labels: no `metadata:` line in\n{yaml}");
    if yaml.contains("\n  labels:\n") {
        yaml.replacen("\n  labels:\n", &format!("\n  labels:\n{entries}"), 1)
    } else {
        yaml.replacen("metadata:\n", &format!("metadata:\n  labels:\n{entries}"), 1)
    }
}
