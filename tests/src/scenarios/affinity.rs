//! `sessionAffinity: ClientIP`: the client identity at the socket layer is
//! the network namespace, so each client pod (and the node's host network)
//! keeps its own backend per service port until `timeoutSeconds` pass
//! without a new connection, or until that backend leaves.
//!
//! Most checks use [`PODS`] client pods at once: a fresh pick equals the
//! old pin with probability 1/3 (3 backends) per pod, so "no pod moved"
//! happens by chance with probability 3^-13 = 6.3e-7 < 1e-6, and one
//! sleep past the timeout suffices (instead of retrying one client).

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{only_backend, pinned_backend, wait_affinity_timeout, wait_backends, web_slice};
use crate::{
    AffinityEntry, Dial, NodeEnv, Proto, addr,
    k8s::{Affinity, PortSpec, ServiceSpec},
    source::Source,
};

/// Client pods used where one pod's chance outcome is not conclusive.
pub const PODS: u8 = 13;

const VIP: &str = "10.96.1.10";
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 53;

fn vip_tcp() -> SocketAddrV4 {
    addr(&format!("{VIP}:{TCP_PORT}"))
}

fn vip_udp() -> SocketAddrV4 {
    addr(&format!("{VIP}:{UDP_PORT}"))
}

/// Service `web`: TCP 80 -> 8080 and UDP 53 -> 5353, with `affinity`.
fn web(affinity: Affinity) -> String {
    ServiceSpec::new("default", "web")
        .cluster_ip(VIP)
        .port(PortSpec::tcp("http", TCP_PORT, "8080"))
        .port(PortSpec::udp("dns", UDP_PORT, "5353"))
        .affinity(affinity)
        .yaml()
}

/// An environment with `backends` backends serving TCP 8080 and UDP 5353,
/// `pods` client pods, Service `web` with `affinity` over backends
/// `initial`, and the agent started with `agent_args`.
fn setup(
    source: Box<dyn Source>,
    dial: Dial,
    backends: u8,
    pods: u8,
    affinity: Affinity,
    initial: &[u8],
    agent_args: &[&str],
) -> Result<NodeEnv> {
    let mut env = NodeEnv::new(source, backends, pods, &[Proto::Tcp(8080), Proto::Udp(5353)])?.dialing(dial);
    env.apply("web-svc", &web(affinity))?;
    env.apply("web-slice", &web_slice(&env, initial))?;
    env.start_agent(agent_args)?;
    Ok(env)
}

/// `b<i>` -> its TCP backend address as `status` prints it.
fn backend_addr(env: &NodeEnv, name: &str, port: u16) -> Result<String> {
    let i: u8 = name.strip_prefix('b').and_then(|n| n.parse().ok()).with_context(|| format!("backend {name:?}"))?;
    Ok(env.topo.backend(i).addr(port).to_string())
}

/// Every pod connects `count` times; each must reach a single backend.
fn pin_all(env: &NodeEnv, count: u32) -> Result<BTreeMap<u8, String>> {
    (1..=PODS).map(|c| Ok((c, pinned_backend(&env.pod(c), vip_tcp(), count)?))).collect()
}

/// Each client (its network namespace) keeps one backend, per service
/// port and for TCP, connected and unconnected UDP alike; clients are
/// pinned independently; `status` shows one entry per client.
pub fn each_client_keeps_its_own_backend(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let env = setup(source, dial, 3, PODS, Affinity::ClientIp(None), &[1, 2, 3], &[])?;

    // 15 connects in a row, as the upstream affinity check: without
    // affinity all 15 land on one of 3 backends with probability 3^-14.
    let pinned = pin_all(&env, 15)?;
    let host = pinned_backend(&env.host(), vip_tcp(), 15)?;

    // UDP is another service port: its own pin, shared by unconnected
    // (per-datagram) and connected sockets of the same client.
    for client in [env.pod(1), env.host()] {
        let unconnected = client.udp(vip_udp(), 15, false)?;
        let udp = only_backend(&unconnected).with_context(|| format!("unconnected UDP not pinned: {unconnected}"))?;
        ensure!(unconnected.sources.keys().all(|s| *s == vip_udp().to_string()), "{unconnected}");
        let connected = client.udp(vip_udp(), 10, true)?;
        ensure!(only_backend(&connected) == Some(udp.clone()), "connected UDP not on {udp}: {connected}");
    }

    // The dataplane keys affinity by client network namespace: `status`
    // lists one TCP entry per client, naming the backend it observed.
    let entries = env.agent().affinity()?;
    let mut clients: Vec<(String, u64, &String)> = Vec::new();
    for (c, backend) in &pinned {
        clients.push((format!("pod {c}"), env.pod(*c).netns_cookie()?, backend));
    }
    clients.push(("host".to_owned(), env.host().netns_cookie()?, &host));
    for (who, cookie, backend) in &clients {
        let tcp: Vec<&AffinityEntry> =
            entries.iter().filter(|e| e.netns_cookie == *cookie && e.port_name == "http").collect();
        let want = backend_addr(&env, backend, 8080)?;
        ensure!(
            tcp.len() == 1 && tcp[0].backend == want && tcp[0].name == "web" && tcp[0].namespace == "default",
            "{who} (netns cookie {cookie}) reached {want}, status affinity says {tcp:?}; all: {entries:?}"
        );
    }
    let table = env.agent().status_table()?;
    ensure!(
        table.contains("CLIENT NETNS") && table.contains(&clients[0].1.to_string()),
        "status table lacks the affinity section: {table}"
    );

    // Independent picks: with per-client affinity, all 14 clients on one
    // backend has probability 3 * 3^-14 = 2.1e-7; with one shared pin
    // (affinity keyed by service only) it is certain.
    let distinct: std::collections::BTreeSet<&String> = clients.iter().map(|(_, _, b)| *b).collect();
    ensure!(distinct.len() > 1, "every client got the same backend: {clients:?}");
    Ok(())
}

/// After `timeoutSeconds` without a new connection the next connection is
/// a fresh pick (then pinned again); `status` reports the idle time.
pub fn timeout_expires_without_new_connections(source: Box<dyn Source>) -> Result<()> {
    const TIMEOUT: u64 = 2;
    let env = setup(source, Dial::Inet, 3, PODS, Affinity::ClientIp(Some(TIMEOUT as u32)), &[1, 2, 3], &[])?;
    wait_affinity_timeout(env.agent(), &vip_tcp().to_string(), "TCP", TIMEOUT)?;

    let before = pin_all(&env, 3)?;
    let idle_since = Instant::now();
    // Past the timeout by a margin the kernel clock cannot miss.
    thread::sleep(Duration::from_secs(TIMEOUT) + Duration::from_millis(500));

    let idle_floor = (TIMEOUT as f64) + 0.4;
    let entries = env.agent().affinity()?;
    let tcp: Vec<&AffinityEntry> = entries.iter().filter(|e| e.port_name == "http").collect();
    ensure!(tcp.len() == usize::from(PODS), "one entry per pod expected: {entries:?}");
    ensure!(
        tcp.iter().all(|e| e.idle_seconds >= idle_floor),
        "after {:?} idle, status shows {entries:?}",
        idle_since.elapsed()
    );

    let after: BTreeMap<u8, String> =
        (1..=PODS).map(|c| Ok((c, pinned_backend(&env.pod(c), vip_tcp(), 1)?))).collect::<Result<_>>()?;
    // Each pod's first connection after the timeout is a uniform pick: all
    // 13 equal to their old pin has probability 3^-13 = 6.3e-7.
    ensure!(before != after, "no pod got a fresh pick after the {TIMEOUT}s timeout: {before:?}");
    // ...and is pinned again.
    for (c, backend) in &after {
        let again = pinned_backend(&env.pod(*c), vip_tcp(), 3)?;
        ensure!(&again == backend, "pod {c}: fresh pick {backend} not kept (then {again})");
    }
    Ok(())
}

/// The timeout counts from the last connection, not the first: clients
/// that keep connecting keep their backend well past `timeoutSeconds`.
pub fn new_connections_extend_the_timeout(source: Box<dyn Source>) -> Result<()> {
    const TIMEOUT: u64 = 3;
    const GAP: Duration = Duration::from_secs(1);
    let env = setup(source, Dial::Inet, 3, PODS, Affinity::ClientIp(Some(TIMEOUT as u32)), &[1, 2, 3], &[])?;
    wait_affinity_timeout(env.agent(), &vip_tcp().to_string(), "TCP", TIMEOUT)?;

    let first = Instant::now();
    let mut last_use: BTreeMap<u8, Instant> = BTreeMap::new();
    let mut pins = BTreeMap::new();
    for c in 1..=PODS {
        pins.insert(c, pinned_backend(&env.pod(c), vip_tcp(), 1)?);
        last_use.insert(c, Instant::now());
    }
    // Rounds 1 s apart until 4 s after the first pick: with a timeout
    // counted from the first connection, the last rounds would be fresh
    // picks (all 13 pods unchanged: 3^-13).
    while first.elapsed() < Duration::from_secs(TIMEOUT + 1) {
        thread::sleep(GAP);
        for c in 1..=PODS {
            let gap = last_use[&c].elapsed();
            // The premise of the check, not the dataplane: a pod idle for
            // longer than the timeout may rightly move.
            if gap >= Duration::from_millis(TIMEOUT * 1000 - 500) {
                bail!("test machine too slow: pod {c} idle {gap:?} between connects (timeout {TIMEOUT}s)");
            }
            let now = pinned_backend(&env.pod(c), vip_tcp(), 1)?;
            last_use.insert(c, Instant::now());
            ensure!(now == pins[&c], "pod {c} moved from {} to {now} after {:?}", pins[&c], first.elapsed());
        }
    }
    Ok(())
}

/// If the pinned backend leaves, the very next connection is a fresh pick;
/// endpoint changes that keep it leave every pin alone.
pub fn pinned_backend_leaving_repicks_at_once(source: Box<dyn Source>, dial: Dial) -> Result<()> {
    let env = setup(source, dial, 4, PODS, Affinity::ClientIp(None), &[1, 2, 3], &[])?;
    let vip = vip_tcp().to_string();
    let agent = env.agent();
    let addrs = |backends: &[u8]| backends.iter().map(|&i| env.topo.backend(i).addr(8080)).collect::<Vec<_>>();

    let pins = pin_all(&env, 5)?;

    // Adding b4 changes the set but keeps every pinned backend: a
    // dataplane that dropped pins on any change would move each pod with
    // probability 3/4 (all 13 staying: 4^-13).
    env.apply("web-slice", &web_slice(&env, &[1, 2, 3, 4]))?;
    wait_backends(agent, &vip, "TCP", &addrs(&[1, 2, 3, 4]))?;
    let kept = pin_all(&env, 5)?;
    ensure!(kept == pins, "pins changed when b4 was added: before {pins:?}, after {kept:?}");

    // Remove pod 1's backend. Its server keeps running, so a stale pin
    // would still be answered.
    let gone = pins[&1].clone();
    let gone_index: u8 = gone[1..].parse()?;
    let remaining: Vec<u8> = (1..=4).filter(|i| *i != gone_index).collect();
    env.apply("web-slice", &web_slice(&env, &remaining))?;
    wait_backends(agent, &vip, "TCP", &addrs(&remaining))?;
    for (c, old) in &pins {
        let now = pinned_backend(&env.pod(*c), vip_tcp(), 5)?;
        if *old == gone {
            ensure!(now != gone, "pod {c} still reaches removed backend {gone}");
        } else {
            ensure!(&now == old, "pod {c} moved from {old} to {now} though {old} stayed");
        }
    }
    Ok(())
}

/// Pins survive the agent going away and coming back: the affinity map is
/// pinned, and the restarted agent adopts service-port ids and backend sets
/// instead of renumbering them (a new id would orphan every pin; each pod
/// keeping its backend by chance: 3^-13).
pub fn pins_survive_an_agent_restart(source: Box<dyn Source>) -> Result<()> {
    let mut env = setup(source, Dial::Inet, 3, PODS, Affinity::ClientIp(None), &[1, 2, 3], &[])?;
    let pins = pin_all(&env, 5)?;
    env.agent_mut().kill()?;
    ensure!(pin_all(&env, 3)? == pins, "pins changed while the agent was down");
    env.agent_mut().restart()?;
    env.agent_mut().wait_in_sync(crate::SYNC_TIMEOUT)?;
    ensure!(pin_all(&env, 3)? == pins, "pins changed across the restart");
    Ok(())
}

/// Turning affinity off spreads new connections again; turning it back on
/// pins them again.
pub fn switching_affinity_applies_to_new_connections(source: Box<dyn Source>) -> Result<()> {
    let env = setup(source, Dial::Inet, 3, 1, Affinity::ClientIp(None), &[1, 2, 3], &[])?;
    let vip = vip_tcp().to_string();
    pinned_backend(&env.pod(1), vip_tcp(), 15)?;

    env.apply("web-svc", &web(Affinity::None))?;
    wait_affinity_timeout(env.agent(), &vip, "TCP", 0)?;
    // Uniform again: all 60 on one backend has probability 3 * 3^-60.
    let spread = env.pod(1).tcp(vip_tcp(), 60)?;
    ensure!(spread.total_ok() == 60 && spread.backends().len() > 1, "affinity still on: {spread}");

    env.apply("web-svc", &web(Affinity::ClientIp(None)))?;
    wait_affinity_timeout(env.agent(), &vip, "TCP", u64::from(DEFAULT_TIMEOUT))?;
    pinned_backend(&env.pod(1), vip_tcp(), 15)?;
    pinned_backend(&env.host(), vip_tcp(), 15)?;
    Ok(())
}

/// Kubernetes' default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: u32 = 10_800;

/// The affinity map is an LRU of `--max-affinity` entries: more clients
/// than entries still connect (old entries are evicted), and `status` and
/// bpftool show the bound.
pub fn affinity_map_is_bounded(source: Box<dyn Source>) -> Result<()> {
    const CAPACITY: u32 = 4;
    const CLIENTS: u8 = 8;
    let env = setup(source, Dial::Inet, 3, CLIENTS, Affinity::ClientIp(None), &[1, 2, 3], &["--max-affinity", "4"])?;
    for c in 1..=CLIENTS {
        let out = env.pod(c).tcp(vip_tcp(), 5)?;
        ensure!(out.total_ok() == 5, "pod {c}: {out}");
    }
    let status = env.agent().status_json()?;
    let row = status["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "SVC_AFFINITY")
        .with_context(|| format!("no SVC_AFFINITY row in {status}"))?;
    ensure!(row["max_entries"] == CAPACITY, "{row}");
    let entries = status["affinity"].as_array().map_or(0, Vec::len);
    ensure!(entries > 0 && entries <= CAPACITY as usize, "{entries} affinity entries for capacity {CAPACITY}");

    let pin = env.agent().pin_dir().join("maps/SVC_AFFINITY");
    let out = crate::cmd::run(Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(&pin))?;
    let info: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("bpftool: {out}"))?;
    ensure!(info["type"] == "lru_hash" && info["max_entries"] == CAPACITY, "{info}");
    Ok(())
}
