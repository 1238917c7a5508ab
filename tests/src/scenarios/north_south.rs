//! North-south: clients outside the node reach NodePort, external and
//! load-balancer addresses through the TC programs on node A's uplink
//! ([`crate::outside`]). Node A runs the agent (`--devices up0`); node B
//! only routes to its pods, so a B pod is reachable from outside only
//! through A's translation, and its reply only comes back because A gave
//! it A's own address as source (SNAT).
//!
//! Backends run `serve --echo-peer`: each TCP answer names the backend and
//! the client address it saw, which is how source preservation (ETP Local)
//! and SNAT (ETP Cluster, remote backend) are told apart.

use std::{collections::BTreeSet, net::SocketAddrV4};

use anyhow::{Result, ensure};

use super::{SETTLE, set};
use crate::{
    NODE_NAME, NodeEnv, Outcome, Proto, Server,
    k8s::{EndpointSpec, PortSpec, ServiceSpec, SlicePort, endpoint_slice_spec},
    outside::{NODE_A_LAN_IP, NODE_B_NAME, OUTSIDE_IP, Outside, UPLINK},
    poll_outcome, poll_until,
    source::Source,
};

const NODE_PORT: u16 = 30090;
const UDP_NODE_PORT: u16 = 30091;

/// Node A with `a_pods` backends (a1.., on A) and node B with `b_pods`
/// (bb1.., on B), all serving TCP 8080 with `--echo-peer` and UDP 5353;
/// the agent on A runs with `--devices up0`.
struct World {
    _servers: Vec<Server>,
    outside: Outside,
    env: NodeEnv,
}

impl World {
    fn new(source: Box<dyn Source>, a_pods: u8, b_pods: u8) -> Result<Self> {
        let env = NodeEnv::new(source, a_pods, 1, &[])?;
        let outside = Outside::new(&env.topo, b_pods)?;
        let ports = [Proto::Tcp(8080), Proto::Udp(5353)];
        let mut servers = Vec::new();
        for i in 1..=a_pods {
            servers.push(env.topo.backend(i).serve_echo_peer(&format!("a{i}"), &ports)?);
        }
        for i in 1..=b_pods {
            servers.push(outside.b_pod(i).serve_echo_peer(&format!("bb{i}"), &ports)?);
        }
        Ok(Self { _servers: servers, outside, env })
    }

    fn start(&mut self) -> Result<()> {
        self.env.start_agent(&["--devices", UPLINK]).map(drop)
    }

    /// Endpoints: A's pods on this node, B's on node B.
    fn endpoints(&self, a: &[u8], b: &[u8]) -> Vec<EndpointSpec> {
        let on_a = a.iter().map(|&i| EndpointSpec::new(self.env.topo.backend(i).ip()).node(NODE_NAME));
        let on_b = b.iter().map(|&i| EndpointSpec::new(self.outside.b_pod(i).ip()).node(NODE_B_NAME));
        on_a.chain(on_b).collect()
    }

    /// Service `web` (TCP 80 -> 8080 on NODE_PORT, UDP 53 -> 5353 on
    /// UDP_NODE_PORT) of type `type_`, with these endpoints.
    /// (A LoadBalancer Service gets the TCP port only: API servers before
    /// 1.26 refuse mixed protocols there.)
    fn apply(&self, svc: ServiceSpec, endpoints: &[EndpointSpec]) -> Result<()> {
        let load_balancer = svc.type_.as_deref() == Some("LoadBalancer");
        let svc = svc.port(PortSpec::tcp("http", 80, "8080").node_port(NODE_PORT));
        let svc = if load_balancer { svc } else { svc.port(PortSpec::udp("dns", 53, "5353").node_port(UDP_NODE_PORT)) };
        let ports = [SlicePort::tcp("http", 8080), SlicePort::udp("dns", 5353)];
        self.env.apply("web-svc", &svc.yaml())?;
        self.env.apply("web-slice", &endpoint_slice_spec("default", "web-1", "web", &ports, endpoints))
    }

    /// `count` TCP connects from outside to `to`.
    fn tcp(&self, to: SocketAddrV4, count: u32) -> Result<Outcome> {
        self.outside.client().tcp(to, count)
    }
}

fn web(type_: &str, cluster_ip: &str) -> ServiceSpec {
    ServiceSpec::new("default", "web").type_(type_).cluster_ip(cluster_ip)
}

/// The (backend, client address it saw) pairs of `out`'s answers.
fn seen(out: &Outcome) -> BTreeSet<(String, String)> {
    out.ok
        .keys()
        .filter_map(|reply| {
            let (who, peer) = reply.split_once(' ')?;
            Some((who.split(':').next()?.to_owned(), peer.to_owned()))
        })
        .collect()
}

/// Polls from outside until every one of `count` connects to `to`
/// succeeds and the backends that answered are exactly `backends`.
fn expect_backends(world: &World, to: SocketAddrV4, count: u32, backends: &[&str]) -> Result<Outcome> {
    let want = set(backends);
    let mut last = None;
    poll_outcome(
        SETTLE,
        || {
            let out = world.tcp(to, count)?;
            last = Some(out.clone());
            Ok(out)
        },
        |out| out.total_ok() == count && out.backends() == want,
    )?;
    Ok(last.expect("polled at least once"))
}

/// NodePort from outside, `externalTrafficPolicy: Cluster`: pods on A and
/// on B both serve; A's pods see the client's own address, B's see node
/// A's (SNAT: without it B's reply would go to the client directly and be
/// dropped as an unknown connection); UDP and `dig` work; `status` shows
/// the devices and the flows.
pub fn node_port_from_outside_reaches_pods_on_both_nodes(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 2, 1)?;
    world.apply(web("NodePort", "10.96.9.10"), &world.endpoints(&[1, 2], &[1]))?;
    world.start()?;
    let node_port = SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT);
    // 45 connects reach all three backends (P(one missing) < 3 * (2/3)^45 < 1e-7).
    let out = expect_backends(&world, node_port, 45, &["a1", "a2", "bb1"])?;
    let want: BTreeSet<(String, String)> = [
        ("a1".to_owned(), OUTSIDE_IP.to_string()),
        ("a2".to_owned(), OUTSIDE_IP.to_string()),
        ("bb1".to_owned(), NODE_A_LAN_IP.to_string()),
    ]
    .into();
    ensure!(seen(&out) == want, "client addresses the backends saw: {:?}, want {want:?}", seen(&out));

    let udp = SocketAddrV4::new(NODE_A_LAN_IP, UDP_NODE_PORT);
    let out = world.outside.client().udp(udp, 30, false)?;
    ensure!(out.total_ok() == 30, "UDP from outside to {udp}: {out}");
    ensure!(out.sources.get(&udp.to_string()) == Some(&30), "UDP replies must come from {udp}: {out}");

    let status = world.env.agent().status_json()?;
    let devices = &status["north_south"]["devices"];
    ensure!(
        devices.as_array().is_some_and(|d| d.len() == 1
            && d[0]["name"] == UPLINK
            && d[0]["snat_address"] == NODE_A_LAN_IP.to_string()
            && d[0]["programs"].as_array().is_some_and(|p| p.len() == 2)),
        "status north_south.devices: {devices}"
    );
    ensure!(status["north_south"]["flow_entries"].as_u64().unwrap_or(0) > 0, "no flows in status: {status}");
    // The programs' counters (`SVC_NS_STATS`, what the metrics report):
    // new flows and tracked packets were counted, nothing was dropped.
    let counts = ns_stats(world.env.agent())?;
    ensure!(counts[0] >= 45 && counts[1] > 0, "new_flow and translated counters: {counts:?}");
    ensure!(counts[2..7].iter().all(|&n| n == 0), "no drop counted: {counts:?}");
    Ok(())
}

/// The TC programs' counters (`svc_common::ns_stat` order), summed over
/// CPUs, as `bpftool` dumps the pinned per-CPU map.
fn ns_stats(agent: &crate::Agent) -> Result<Vec<u64>> {
    let pin = agent.pin_dir().join("maps/SVC_NS_STATS");
    let out = crate::cmd::run(std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&pin))?;
    let dump: serde_json::Value = serde_json::from_str(&out)?;
    let mut counts = vec![0u64; 9];
    for entry in dump.as_array().into_iter().flatten() {
        let entry = entry.get("formatted").unwrap_or(entry);
        let Some(slot) = entry["key"].as_u64().and_then(|k| usize::try_from(k).ok()) else { continue };
        let sum: u64 = entry["values"].as_array().into_iter().flatten().filter_map(|v| v["value"].as_u64()).sum();
        if let Some(c) = counts.get_mut(slot) {
            *c = sum;
        }
    }
    Ok(counts)
}

/// Real clients from outside: `curl` over TCP and `dig` over UDP and TCP.
pub fn real_clients_from_outside(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 1)?;
    let _http = world.env.topo.backend(1).serve_http("web-a1", 8081)?;
    let _dns = world.outside.b_pod(1).serve_dns("dns-bb1", 5300)?;
    let svc = web("NodePort", "10.96.9.20")
        .port(PortSpec::tcp("curl", 81, "8081").node_port(30092))
        .port(PortSpec::udp("dig", 54, "5300").node_port(30093))
        .port(PortSpec::tcp("dig-tcp", 54, "5300").node_port(30093));
    let endpoints = [EndpointSpec::new(world.env.topo.backend(1).ip()).node(NODE_NAME)];
    let dns_endpoints = [EndpointSpec::new(world.outside.b_pod(1).ip()).node(NODE_B_NAME)];
    world.env.apply("web-svc", &svc.yaml())?;
    world.env.apply(
        "curl-slice",
        &endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("curl", 8081)], &endpoints),
    )?;
    world.env.apply(
        "dig-slice",
        &endpoint_slice_spec(
            "default",
            "web-2",
            "web",
            &[SlicePort::udp("dig", 5300), SlicePort::tcp("dig-tcp", 5300)],
            &dns_endpoints,
        ),
    )?;
    world.start()?;
    let client = world.outside.client();
    let url = format!("http://{NODE_A_LAN_IP}:30092/");
    let mut body = String::new();
    poll_until(SETTLE, || {
        body = client.exec("curl", &["-sS", "--max-time", "2", &url]).unwrap_or_default();
        Ok(body.trim() == "web-a1:8081")
    })
    .map_err(|e| e.context(format!("curl {url}: {body:?}")))?;
    for tcp in [false, true] {
        let mut args = vec!["+short", "+time=1", "+tries=2", "-p", "30093", "@198.51.100.10", "TXT", "svc.test"];
        if tcp {
            args.push("+tcp");
        }
        let answer = client.exec("dig", &args)?;
        ensure!(answer.trim() == "\"dns-bb1\"", "dig (tcp: {tcp}) from outside answered {answer:?}");
    }
    Ok(())
}

/// `externalTrafficPolicy: Local`: from outside only A's pods serve and
/// they see the client's address; in-cluster clients still reach every
/// endpoint; with no endpoint on A, outside connects fail (dropped).
pub fn external_traffic_policy_local_from_outside(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 2, 1)?;
    let svc = || web("NodePort", "10.96.9.30").external_traffic_policy("Local");
    world.apply(svc(), &world.endpoints(&[1, 2], &[1]))?;
    world.start()?;
    let node_port = SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT);
    // 30 connects reach both local backends (P(one missing) = 2 * 2^-30).
    let out = expect_backends(&world, node_port, 30, &["a1", "a2"])?;
    let want: BTreeSet<(String, String)> =
        [("a1".to_owned(), OUTSIDE_IP.to_string()), ("a2".to_owned(), OUTSIDE_IP.to_string())].into();
    ensure!(seen(&out) == want, "ETP Local from outside: {:?}, want {want:?}", seen(&out));
    // A pod on A still gets the cluster-wide set, B's pod included
    // (P(bb1 missing in 30) = (2/3)^30 < 1e-5; polled).
    poll_outcome(SETTLE, || world.env.pod(1).tcp(node_port, 30), |o| o.count_backend("bb1") > 0)?;

    world.apply(svc(), &world.endpoints(&[], &[1]))?;
    poll_until(SETTLE, || Ok(world.tcp(node_port, 1)?.total_ok() == 0))?;
    let out = world.tcp(node_port, 3)?;
    ensure!(out.total_ok() == 0 && !out.errors.is_empty(), "no local endpoint: outside connects must fail: {out}");
    let counts = ns_stats(world.env.agent())?;
    ensure!(counts[2] >= 3, "the drops are counted as no_backend: {counts:?}");
    Ok(())
}

/// LoadBalancer ingress and external IPs routed to node A reach the
/// backends from outside; other ports of those addresses are not ours.
pub fn load_balancer_and_external_ips_from_outside(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 1)?;
    // The LAN routes 203.0.113.0/24 to A (as a router announcing the
    // load balancer's addresses would); A does not hold them.
    let svc = web("LoadBalancer", "10.96.9.40").external_ip("203.0.113.41").lb_ingress("203.0.113.40", None);
    world.apply(svc, &world.endpoints(&[1], &[1]))?;
    world.start()?;
    for ip in ["203.0.113.40", "203.0.113.41"] {
        let to: SocketAddrV4 = format!("{ip}:80").parse()?;
        // 30 connects reach both (P(one missing) = 2 * 2^-30).
        expect_backends(&world, to, 30, &["a1", "bb1"])?;
    }
    Ok(())
}

/// The north-south path survives the agent: with the agent SIGKILLed,
/// outside clients are still served (the TC links, the flow table and the
/// frontends are pinned), and a restarted agent takes over.
pub fn flows_survive_an_agent_restart(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 1)?;
    world.apply(web("NodePort", "10.96.9.50"), &world.endpoints(&[1], &[1]))?;
    world.start()?;
    let node_port = SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT);
    expect_backends(&world, node_port, 30, &["a1", "bb1"])?;
    world.env.agent_mut().kill()?;
    let out = world.tcp(node_port, 20)?;
    ensure!(out.total_ok() == 20, "with the agent killed, the pinned path must serve: {out}");
    world.env.agent_mut().restart()?;
    expect_backends(&world, node_port, 30, &["a1", "bb1"])?;
    Ok(())
}

/// `healthCheckNodePort` with `externalTrafficPolicy: Local`, as a cloud
/// load balancer probes it: 200 with the number of ready endpoints on this
/// node, 503 with none; upstream's "should fail health check node port if
/// there are only terminating endpoints": a local endpoint that is
/// terminating (even if still serving) does not count.
pub fn health_check_node_port(source: Box<dyn Source>) -> Result<()> {
    const HC_PORT: u16 = 32100;
    let mut world = World::new(source, 2, 1)?;
    let svc = || {
        web("LoadBalancer", "10.96.9.60")
            .external_traffic_policy("Local")
            .health_check_node_port(HC_PORT)
            .lb_ingress("203.0.113.60", None)
    };
    world.apply(svc(), &world.endpoints(&[1], &[1]))?;
    world.start()?;
    let client = world.outside.client();
    let url = format!("http://{NODE_A_LAN_IP}:{HC_PORT}/");
    // (status code, body) of one probe.
    let probe = || -> Result<(String, String)> {
        let out = client.exec("curl", &["-sS", "--max-time", "2", "-w", "\n%{http_code}", &url])?;
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        Ok((code.to_owned(), body.to_owned()))
    };
    let expect = |code: &str, count: u32| -> Result<()> {
        let mut last = (String::new(), String::new());
        poll_until(SETTLE, || {
            last = probe().unwrap_or_default();
            Ok(last.0 == code && last.1.contains(&format!("\"localEndpoints\":{count}")))
        })
        .map_err(|e| e.context(format!("health check {url}: want {code} with {count} local; last {last:?}")))?;
        ensure!(
            last.1.contains("\"namespace\":\"default\"") && last.1.contains("\"name\":\"web\""),
            "health check body names the Service: {}",
            last.1
        );
        Ok(())
    };
    expect("200", 1)?;
    world.apply(svc(), &world.endpoints(&[1, 2], &[1]))?;
    expect("200", 2)?;
    // Only terminating local endpoints (still serving): unhealthy.
    let terminating: Vec<EndpointSpec> = [1, 2]
        .iter()
        .map(|&i| EndpointSpec::new(world.env.topo.backend(i).ip()).node(NODE_NAME).terminating_serving())
        .chain(world.endpoints(&[], &[1]))
        .collect();
    world.apply(svc(), &terminating)?;
    expect("503", 0)?;
    world.apply(svc(), &world.endpoints(&[], &[1]))?;
    expect("503", 0)?;
    // Back to ready, then the Service gone: the port closes.
    world.apply(svc(), &world.endpoints(&[2], &[1]))?;
    expect("200", 1)?;
    world.env.delete("web-svc")?;
    poll_until(SETTLE, || Ok(probe().is_err()))
        .map_err(|e| e.context("the health check port must close with its Service"))?;
    Ok(())
}

/// `sessionAffinity: ClientIP` for a client outside the node: keyed by its
/// address, so all its connections stick to one backend (of three), and
/// `status` shows the entry under the address-derived identity.
pub fn affinity_for_an_outside_client(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 2, 1)?;
    let svc = web("NodePort", "10.96.9.70").affinity(crate::k8s::Affinity::ClientIp(None));
    world.apply(svc, &world.endpoints(&[1, 2], &[1]))?;
    world.start()?;
    let node_port = SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT);
    let mut first = None;
    poll_outcome(
        SETTLE,
        || {
            let out = world.tcp(node_port, 20)?;
            first = Some(out.clone());
            Ok(out)
        },
        |o| o.total_ok() == 20,
    )?;
    let out = first.expect("polled");
    // Without affinity, 20 connects over 3 backends hit one only with
    // probability 3 * 3^-20 < 1e-9.
    ensure!(out.backends().len() == 1, "affinity from outside: all connects on one backend: {out}");
    let pinned = world.env.agent().affinity()?;
    let id = (1u64 << 63) | u64::from(u32::from(OUTSIDE_IP));
    ensure!(
        pinned.iter().any(|a| a.netns_cookie == id && a.name == "web"),
        "status must show the outside client's pin (identity {id:#x}): {pinned:?}"
    );
    Ok(())
}

/// A backend removed while a UDP flow from outside runs: the flow is
/// dropped from the table (kube-proxy's conntrack cleanup), so the same
/// client socket's next datagrams go to a remaining backend.
pub fn udp_flow_to_a_removed_backend_moves(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 2, 0)?;
    world.apply(web("NodePort", "10.96.9.80"), &world.endpoints(&[1, 2], &[]))?;
    world.start()?;
    let udp = SocketAddrV4::new(NODE_A_LAN_IP, UDP_NODE_PORT);
    // One connected socket, fixed source port: one flow for the session.
    let session = world.outside.client().udp_session(udp, 400, 40_123, false)?;
    let rounds = session.until(SETTLE, |r| r.ok.is_some())?;
    let first = rounds.last().and_then(|r| r.ok.clone()).unwrap_or_default();
    let (gone, stays) = if first.starts_with("a1") { (1, 2) } else { (2, 1) };
    world.apply(web("NodePort", "10.96.9.80"), &world.endpoints(&[stays], &[]))?;
    let want = format!("a{stays}:");
    session
        .until(SETTLE, |r| r.ok.as_deref().is_some_and(|ok| ok.starts_with(&want)))
        .map_err(|e| e.context(format!("after a{gone} was removed the flow must move to a{stays}")))?;
    let status = world.env.agent().status_json()?;
    ensure!(status["north_south"]["flows"].as_u64().unwrap_or(0) >= 1, "the moved flow is tracked: {status}");
    Ok(())
}

/// A UDP flow from outside keeps its backend and keeps being answered
/// while the agent is SIGKILLed and restarted (the pinned flow table and
/// TC links serve on their own; the restarted agent adopts them).
pub fn udp_flow_survives_an_agent_restart(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 2, 1)?;
    world.apply(web("NodePort", "10.96.9.90"), &world.endpoints(&[1, 2], &[1]))?;
    world.start()?;
    let udp = SocketAddrV4::new(NODE_A_LAN_IP, UDP_NODE_PORT);
    let session = world.outside.client().udp_session(udp, 1_000, 40_124, false)?;
    let rounds = session.until(SETTLE, |r| r.ok.is_some())?;
    let backend = rounds.last().and_then(|r| r.ok.clone()).unwrap_or_default();
    let check = |what: &str, n: usize| -> Result<()> {
        for _ in 0..n {
            let round = session.next()?;
            ensure!(round.ok.as_deref() == Some(backend.as_str()), "{what}: the flow left {backend}: {round:?}");
        }
        Ok(())
    };
    check("before the kill", 10)?;
    world.env.agent_mut().kill()?;
    check("with the agent killed", 25)?;
    world.env.agent_mut().restart()?;
    world.env.agent_mut().wait_for_log("dataplane in sync", SETTLE)?;
    check("after the restart", 25)?;
    Ok(())
}

/// Flow entries go away: a closed TCP connection's entries (FIN seen:
/// 10 s lifetime) are swept (`--flow-sweep-interval 1`).
pub fn closed_flows_leave_the_table(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 0)?;
    world.apply(web("NodePort", "10.96.9.95"), &world.endpoints(&[1], &[]))?;
    world.env.start_agent(&["--devices", UPLINK, "--flow-sweep-interval", "1"])?;
    let node_port = SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT);
    expect_backends(&world, node_port, 5, &["a1"])?;
    let entries = || -> Result<u64> {
        Ok(world.env.agent().status_json()?["north_south"]["flow_entries"].as_u64().unwrap_or(u64::MAX))
    };
    ensure!(entries()? >= 2, "a connection from outside leaves flow entries");
    // 10 s closing lifetime + one sweep; polled for up to 20 s.
    poll_until(std::time::Duration::from_secs(20), || Ok(entries()? == 0))
        .map_err(|e| e.context("closed flows must leave the table after their lifetime"))?;
    Ok(())
}

/// `--devices` naming a device the programs cannot parse (no Ethernet
/// header: loopback, tunnels) or one that does not exist stops the start
/// with a message naming it.
pub fn refuses_devices_it_cannot_serve(source: Box<dyn Source>) -> Result<()> {
    let mut env = NodeEnv::new(source, 1, 0, &[])?;
    ensure!(env.start_agent(&["--devices", "lo"]).is_err(), "--devices lo must fail the start");
    let log = env.agent().log();
    ensure!(log.contains("\"lo\" is not an Ethernet device"), "--devices lo: the log must say why: {log}");
    // A flag given again wins: now a device that does not exist.
    let agent = env.agent_mut();
    if agent.is_running() {
        agent.kill()?;
    }
    agent.restart_with(&["--devices", "nosuchdev0"])?;
    agent
        .wait_for_log("no device \"nosuchdev0\"", SETTLE)
        .map_err(|e| e.context("--devices nosuchdev0 must fail the start, naming it"))?;
    Ok(())
}

/// `loadBalancerSourceRanges` for clients outside the node: the client
/// reaches the load-balancer IP while it is in a range and is dropped
/// (counted) while it is not; the node port of the same Service stays
/// open (kube-proxy restricts the load-balancer addresses); without
/// ranges it is open again.
pub fn load_balancer_source_ranges(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 0)?;
    let lb_ip: SocketAddrV4 = "203.0.113.70:80".parse()?;
    let svc = || web("LoadBalancer", "10.96.9.75").lb_ingress("203.0.113.70", None);
    world.apply(
        svc().lb_source_range(&format!("{OUTSIDE_IP}/32")).lb_source_range("192.0.2.0/24"),
        &world.endpoints(&[1], &[]),
    )?;
    world.start()?;
    expect_backends(&world, lb_ip, 5, &["a1"])?;
    // Another range only: the client is outside it.
    world.apply(svc().lb_source_range("198.51.100.128/25"), &world.endpoints(&[1], &[]))?;
    poll_until(SETTLE, || Ok(world.tcp(lb_ip, 1)?.total_ok() == 0))?;
    let out = world.tcp(lb_ip, 3)?;
    ensure!(out.total_ok() == 0, "a client outside loadBalancerSourceRanges must not reach {lb_ip}: {out}");
    let counts = ns_stats(world.env.agent())?;
    ensure!(counts[8] >= 3, "the drops are counted as source_range: {counts:?}");
    expect_backends(&world, SocketAddrV4::new(NODE_A_LAN_IP, NODE_PORT), 5, &["a1"])?;
    world.apply(svc(), &world.endpoints(&[1], &[]))?;
    expect_backends(&world, lb_ip, 5, &["a1"])?;
    Ok(())
}

/// Path-MTU discovery through a translated flow: the link from node A to
/// its pod has a smaller MTU (1280) than the path from the client, so A
/// answers the client's full-size segments with ICMP "fragmentation
/// needed" quoting the translated packet (client -> pod). The egress
/// program rewrites the quote back to the node port, the client's TCP
/// finds its connection and lowers its segment size, and an upload of
/// 256 KiB completes. (Without the rewrite the client ignores the error
/// and retransmits full-size segments until curl gives up.)
pub fn path_mtu_discovery_through_a_smaller_pod_link(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 0)?;
    let _http = world.env.topo.backend(1).serve_http("up-a1", 8082)?;
    // Only A's side of the pod link: the pod still advertises MSS 1460.
    world.env.topo.node().netns().ip(&["link", "set", "vb1", "mtu", "1280"])?;
    let endpoint = EndpointSpec::new(world.env.topo.backend(1).ip()).node(NODE_NAME);
    let upload = Upload::new(&mut world, "10.96.9.99", 30094, endpoint, 256 * 1024)?;
    let out = upload.run(&world, &["--max-time", "10"]);
    drop(upload);
    let out = out?;
    ensure!(out.trim() == "up-a1:8082 received 262144", "upload through a 1280-byte pod link: {out:?}");
    Ok(())
}

/// Path-MTU discovery through a SNATed flow: node B's link to its pod has
/// the smaller MTU, so B answers the client's full-size segments (as A
/// forwarded them, from A's address) with ICMP "fragmentation needed" to
/// A, quoting A:port -> pod. The ingress program finds the flow by the
/// quote, rewrites it to the client's own tuple and sends the error on to
/// the client, whose TCP lowers its segment size: the upload completes.
/// (Without it the error ends in A's stack, which has no such socket.)
pub fn path_mtu_discovery_to_a_pod_on_another_node(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 0, 1)?;
    let _http = world.outside.b_pod(1).serve_http("up-bb1", 8082)?;
    world.outside.node_b().ip(&["link", "set", "vb1", "mtu", "1280"])?;
    let endpoint = EndpointSpec::new(world.outside.b_pod(1).ip()).node(NODE_B_NAME);
    let upload = Upload::new(&mut world, "10.96.9.97", 30096, endpoint, 256 * 1024)?;
    let out = upload.run(&world, &["--max-time", "10"]);
    drop(upload);
    let out = out?;
    ensure!(out.trim() == "up-bb1:8082 received 262144", "upload through node B's 1280-byte pod link: {out:?}");
    Ok(())
}

/// Path-MTU discovery for replies: a client behind a router whose link to
/// it has a smaller MTU downloads 256 KiB through the node port, once from
/// a pod on A and once from a pod on B (SNATed). The router answers the
/// full-size replies with ICMP "fragmentation needed" to the frontend
/// (the replies' source), quoting frontend -> client; the ingress program
/// sends it on to the backend with the quote the backend's own reply had,
/// and the backend lowers its segment size. (Without it the error ends
/// in A's stack and the download stalls.)
pub fn path_mtu_discovery_for_replies_to_a_far_client(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 1)?;
    let far = crate::outside::FarClient::new(&world.outside, &world.env.topo)?;
    let _a = world.env.topo.backend(1).serve_http("down-a1", 8082)?;
    let _b = world.outside.b_pod(1).serve_http("down-bb1", 8082)?;
    let svc = web("NodePort", "10.96.9.96")
        .port(PortSpec::tcp("down-a", 82, "8082").node_port(30097))
        .port(PortSpec::tcp("down-b", 83, "8082").node_port(30098));
    world.env.apply("web-svc", &svc.yaml())?;
    let a = EndpointSpec::new(world.env.topo.backend(1).ip()).node(NODE_NAME);
    let b = EndpointSpec::new(world.outside.b_pod(1).ip()).node(NODE_B_NAME);
    // One slice per port, each with its own endpoint.
    world
        .env
        .apply("down-a", &endpoint_slice_spec("default", "web-a", "web", &[SlicePort::tcp("down-a", 8082)], &[a]))?;
    world
        .env
        .apply("down-b", &endpoint_slice_spec("default", "web-b", "web", &[SlicePort::tcp("down-b", 8082)], &[b]))?;
    world.start()?;
    // Both downloads run whatever the first gives, so each case shows.
    let mut failed = Vec::new();
    for (node_port, who) in [(30097, "a1 (on node A)"), (30098, "bb1 (on node B, SNATed)")] {
        let url = format!("http://{NODE_A_LAN_IP}:{node_port}/bytes/262144");
        let args = ["-sS", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "10", url.as_str()];
        let got = far.client().exec("curl", &args).unwrap_or_else(|e| format!("{e:#}"));
        if got.trim() != "262144" {
            failed.push(format!("download from {who}: {got:?}"));
        }
    }
    ensure!(failed.is_empty(), "to the far client behind a 1280-byte link: {failed:?}");
    Ok(())
}

/// ICMP port unreachable from a backend reaches the client as the
/// frontend's: UDP to a node port whose endpoint has no listener, on A
/// (the error leaves through the egress program) and on B (it arrives at
/// A's SNAT address, through the ingress program). The quote gets the
/// client's own tuple and the error the frontend as its source, so the
/// client's connected socket reports ECONNREFUSED, as it would talking to
/// the pod directly. (Untranslated, the error quotes a tuple the client
/// never sent, and every datagram times out.)
pub fn udp_port_unreachable_reaches_the_client(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 1, 1)?;
    let svc = web("NodePort", "10.96.9.95")
        .port(PortSpec::udp("closed-a", 54, "5399").node_port(30099))
        .port(PortSpec::udp("closed-b", 55, "5399").node_port(30100));
    world.env.apply("web-svc", &svc.yaml())?;
    let a = EndpointSpec::new(world.env.topo.backend(1).ip()).node(NODE_NAME);
    let b = EndpointSpec::new(world.outside.b_pod(1).ip()).node(NODE_B_NAME);
    let slice = |name: &str, port: &str, ep: EndpointSpec| {
        endpoint_slice_spec("default", name, "web", &[SlicePort::udp(port, 5399)], &[ep])
    };
    world.env.apply("closed-a", &slice("web-a", "closed-a", a))?;
    world.env.apply("closed-b", &slice("web-b", "closed-b", b))?;
    world.start()?;
    let mut failed = Vec::new();
    for (node_port, who) in [(30099, "a1 (on node A)"), (30100, "bb1 (on node B, SNATed)")] {
        let to = SocketAddrV4::new(NODE_A_LAN_IP, node_port);
        let out = world.outside.client().udp(to, 3, true)?;
        if out.errors.get("ECONNREFUSED") != Some(&3) {
            failed.push(format!("{who}: {out:?}"));
        }
    }
    ensure!(failed.is_empty(), "UDP to a closed port behind the node port: {failed:?}");
    Ok(())
}

/// A TCP transfer from outside in flight while the agent is SIGKILLed and
/// restarted: a rate-limited 512 KiB upload (about 4 s) through the node
/// port to a pod on node B (SNATed) completes, byte for byte.
pub fn tcp_transfer_survives_an_agent_restart(source: Box<dyn Source>) -> Result<()> {
    let mut world = World::new(source, 0, 1)?;
    let _http = world.outside.b_pod(1).serve_http("up-bb1", 8082)?;
    let endpoint = EndpointSpec::new(world.outside.b_pod(1).ip()).node(NODE_B_NAME);
    let upload = Upload::new(&mut world, "10.96.9.98", 30095, endpoint, 512 * 1024)?;
    let (out, restarted) = std::thread::scope(|scope| {
        let (world, upload) = (&mut world, &upload);
        let (env, outside) = (&mut world.env, &world.outside);
        let running = scope.spawn(move || upload.run_as(outside, &["--max-time", "30", "--limit-rate", "128K"]));
        let restarted = (|| -> Result<()> {
            std::thread::sleep(std::time::Duration::from_secs(1));
            env.agent_mut().kill()?;
            std::thread::sleep(std::time::Duration::from_secs(1));
            env.agent_mut().restart()?;
            env.agent_mut().wait_for_log("dataplane in sync", SETTLE).map(drop)
        })();
        (running.join(), restarted)
    });
    restarted?;
    let out = out.map_err(|_| anyhow::anyhow!("the upload thread panicked"))??;
    ensure!(out.trim() == "up-bb1:8082 received 524288", "upload across the agent's restart: {out:?}");
    Ok(())
}

/// An upload through node port `node_port` (Service `web`, TCP 82 ->
/// 8082 on `endpoint`, whose `serve --http` answers with the bytes it
/// received): the agent started, a file of `size` bytes written (removed
/// on drop).
struct Upload {
    file: std::path::PathBuf,
    url: String,
}

impl Upload {
    fn new(world: &mut World, cluster_ip: &str, node_port: u16, endpoint: EndpointSpec, size: usize) -> Result<Self> {
        let svc = web("NodePort", cluster_ip).port(PortSpec::tcp("upload", 82, "8082").node_port(node_port));
        world.env.apply("web-svc", &svc.yaml())?;
        let slice = endpoint_slice_spec("default", "web-1", "web", &[SlicePort::tcp("upload", 8082)], &[endpoint]);
        world.env.apply("up-slice", &slice)?;
        world.start()?;
        let file = std::path::Path::new(crate::names::TMP_DIR).join(format!("{}-upload", crate::names::unique_name()));
        std::fs::write(&file, vec![0x5a_u8; size])?;
        Ok(Self { file, url: format!("http://{NODE_A_LAN_IP}:{node_port}/") })
    }

    /// `curl -T` from the outside client, with `extra` options; its output.
    fn run(&self, world: &World, extra: &[&str]) -> Result<String> {
        self.run_as(&world.outside, extra)
    }

    fn run_as(&self, outside: &Outside, extra: &[&str]) -> Result<String> {
        let path = self.file.to_string_lossy().into_owned();
        let mut args = vec!["-sS", "-H", "Expect:", "-T", &path, &self.url];
        args.extend_from_slice(extra);
        outside.client().exec("curl", &args)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.file) {
            eprintln!("svc-tests: removing {}: {e}", self.file.display());
        }
    }
}

/// Outside connects racing churn of many NodePort Services, as the socket
/// path's churn test (tests/tests/churn.rs) has it for ClusterIPs: 100
/// NodePort Services, each with its own /24 of an address pool behind
/// node A (every address answers with itself), four outside client
/// threads connecting round-robin to every node port, while each burst
/// replaces every Service's backends (1 to 40 of its pool, across the
/// 16-backend line between inline sets and slots). Every answer must come
/// from the pool of the Service whose node port was dialled; no connect
/// may fail. New flows choose from whatever set the frontend holds at
/// that moment (the TC programs share the socket path's validated copy);
/// a connection in flight keeps its backend, which keeps answering.
pub fn outside_connects_racing_node_port_churn(source: Box<dyn Source>) -> Result<()> {
    use std::io::{BufRead as _, BufReader};

    use crate::{
        k8s::multi,
        kube_env::{count_in_log, wait_for_count},
        pool::{AddressPool, POOL_PORT},
    };
    const SERVICES: u8 = 100;
    const POOL: u8 = 40;
    const BURSTS: usize = 40;
    let node_port = |i: u8| 31_000 + u16::from(i);
    let mut world = World::new(source, 0, 0)?;
    let pool = AddressPool::new(world.env.topo.node().netns())?;
    pool.netns().ip(&["route", "add", "198.51.100.0/24", "via", "10.249.0.1"])?;
    let services: Vec<String> = (1..=SERVICES)
        .map(|i| {
            ServiceSpec::new("default", &format!("ns-churn-{i}"))
                .type_("NodePort")
                .cluster_ip(&format!("10.96.101.{i}"))
                .port(PortSpec::tcp("http", 80, "8080").node_port(node_port(i)))
                .yaml()
        })
        .collect();
    world.env.apply("ns-churn-services", &multi(&services.iter().map(String::as_str).collect::<Vec<_>>()))?;
    let slices = |burst: usize| {
        let docs: Vec<String> = (1..=SERVICES)
            .map(|i| {
                let n = 1 + (burst * 7 + usize::from(i) * 13) % usize::from(POOL);
                let start = burst * 3 + usize::from(i);
                let endpoints: Vec<EndpointSpec> = (0..n)
                    .map(|k| {
                        let j = 1 + ((start + k) % usize::from(POOL)) as u8;
                        EndpointSpec::new(*AddressPool::addr(i, j).ip()).node(NODE_NAME)
                    })
                    .collect();
                let name = format!("ns-churn-{i}");
                endpoint_slice_spec("default", &name, &name, &[SlicePort::tcp("http", POOL_PORT)], &endpoints)
            })
            .collect();
        multi(&docs.iter().map(String::as_str).collect::<Vec<_>>())
    };
    world.env.apply("ns-churn-slices", &slices(0))?;
    world.start()?;

    let cgroup = crate::Cgroup::new()?;
    let mut args: Vec<String> = vec!["churn".into(), "--threads".into(), "4".into()];
    args.extend(["--cgroup".into(), cgroup.path().display().to_string()]);
    for i in 1..=SERVICES {
        args.extend(["--target".into(), format!("{NODE_A_LAN_IP}:{}={}", node_port(i), AddressPool::prefix(i))]);
    }
    let mut command = world.outside.lan().testkit(&args)?;
    command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    // Closing its stdin stops the client: dropping `client` on an early
    // return does (as in tests/tests/churn.rs).
    let mut client = command.spawn()?;
    let mut stdout = BufReader::new(client.stdout.take().ok_or_else(|| anyhow::anyhow!("churn client stdout"))?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    ensure!(line.trim() == "started", "churn client: {line:?}");

    let agent = world.env.agent_mut();
    let mut applied = count_in_log(agent, "dataplane in sync");
    for burst in 1..=BURSTS {
        world.env.apply("ns-churn-slices", &slices(burst))?;
        let agent = world.env.agent_mut();
        applied += 1;
        wait_for_count(agent, "dataplane in sync", applied, std::time::Duration::from_secs(20))?;
        applied = count_in_log(agent, "dataplane in sync");
    }
    drop(client.stdin.take());
    line.clear();
    stdout.read_line(&mut line)?;
    let status = client.wait()?;
    ensure!(status.success(), "churn client failed: {status}");
    let report: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("churn report {line:?}: {e}"))?;
    let connects = report["connects"].as_u64().unwrap_or(0);
    ensure!(connects >= 1000, "the clients barely ran, the race was not exercised: {report}");
    ensure!(report["wrong"].as_u64() == Some(0), "answered by another Service's backend: {report}");
    ensure!(report["errors"].as_object().is_some_and(serde_json::Map::is_empty), "failed connects: {report}");
    ensure!(report["right"].as_u64() == Some(connects), "{report}");
    Ok(())
}
