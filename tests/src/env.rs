//! `TestEnv`: the usual end-to-end setup in one guard: a cgroup, a topology
//! with a server on every backend, a manifest dir and (once started) the
//! agent. Fields drop in declaration order, so the agent is stopped and
//! cleaned up before the network and the cgroup go away.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Context as _, Result};

use crate::{Agent, Cgroup, Dial, ManifestDir, Outcome, Proto, Server, Topology, k8s::Endpoint};

/// How long the agent may take to program its first state.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct TestEnv {
    agent: Option<Agent>,
    /// Backend i's server is named `b<i>`.
    pub servers: Vec<Server>,
    pub manifests: ManifestDir,
    pub topo: Topology,
    pub cgroup: Cgroup,
    /// How [`Self::tcp`] and [`Self::udp`] dial (default: `AF_INET`).
    pub dial: Dial,
}

impl TestEnv {
    /// `n_backends` backends, each running a server `b<i>` on `ports`.
    pub fn new(n_backends: u8, ports: &[Proto]) -> Result<Self> {
        crate::require_root();
        let cgroup = Cgroup::new()?;
        let topo = Topology::new(n_backends)?;
        let servers =
            (1..=n_backends).map(|i| topo.backend(i).serve(&format!("b{i}"), ports)).collect::<Result<Vec<_>>>()?;
        Ok(Self { agent: None, servers, manifests: ManifestDir::new()?, topo, cgroup, dial: Dial::Inet })
    }

    /// Starts the agent on this env's manifests and cgroup and waits for
    /// `dataplane in sync`.
    pub fn start_agent(&mut self) -> Result<&mut Agent> {
        let agent = Agent::start(&self.manifests, &self.cgroup)?;
        let agent = self.agent.insert(agent);
        agent.wait_in_sync(SYNC_TIMEOUT)?;
        Ok(agent)
    }

    /// As [`Self::start_agent`], in another pod shape than the DaemonSet's.
    pub fn start_agent_in_shape(&mut self, shape: crate::deployed::PodShape) -> Result<&mut Agent> {
        let agent = Agent::start_in_shape(&self.manifests, &self.cgroup, shape)?;
        let agent = self.agent.insert(agent);
        agent.wait_in_sync(SYNC_TIMEOUT)?;
        Ok(agent)
    }

    /// Where this env keeps its agent, for one started with other
    /// arguments ([`Agent::start_with_args`]): dropped with the env, before
    /// the network and the cgroup.
    pub fn agent_slot(&mut self) -> &mut Option<Agent> {
        &mut self.agent
    }

    /// The agent started by [`Self::start_agent`].
    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("TestEnv::agent() before start_agent()")
    }

    /// Ready endpoints for the given backends (10.244.i.2).
    pub fn endpoints(&self, backends: &[u8]) -> Vec<Endpoint> {
        backends.iter().map(|&i| Endpoint::ready(self.topo.backend(i).ip())).collect()
    }

    /// TCP connects from the client namespace, inside the test cgroup,
    /// dialled as [`Self::dial`] says; addresses reported as IPv4.
    pub fn tcp(&self, to: SocketAddrV4, count: u32) -> Result<Outcome> {
        let out = self.topo.tcp(Some(&self.cgroup), self.dial.target(to), count);
        self.dial.as_ipv4(out.with_context(|| format!("tcp client to {to} ({:?})", self.dial))?)
    }

    /// UDP datagrams from the client namespace, inside the test cgroup,
    /// dialled as [`Self::dial`] says; addresses reported as IPv4.
    pub fn udp(&self, to: SocketAddrV4, count: u32, connected: bool) -> Result<Outcome> {
        let out = self.topo.udp(Some(&self.cgroup), self.dial.target(to), count, connected);
        self.dial.as_ipv4(out.with_context(|| format!("udp client to {to} ({:?})", self.dial))?)
    }
}
