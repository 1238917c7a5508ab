//! kube-proxy flushes UDP conntrack entries when an endpoint goes away, so
//! a client's next datagram is NATed to a live endpoint. At the socket
//! layer the translation lives in the connected socket: the agent resets
//! (SOCK_DESTROY) connected UDP sockets that were translated to the removed
//! backend, so they do not keep sending into the void. Sockets connected
//! to that backend directly (not through the Service) are left alone.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use svc_tests::{
    Dial, Proto, TestEnv, addr,
    deployed::PodShape,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    session::{Round, UdpSession},
};

/// A session from the client namespace, inside the test cgroup.
struct Session;

impl Session {
    /// A session to `to`, dialled as the env says.
    fn start(env: &TestEnv, to: &str, rounds: u32) -> Result<UdpSession> {
        let to = env.dial.target(addr(to)).to_string();
        let to = to.as_str();
        let cgroup = env.cgroup.path().to_string_lossy().into_owned();
        let count = rounds.to_string();
        let args = ["udp-session", "--to", to, "--count", &count, "--interval-ms", "20", "--timeout-ms", "200"];
        UdpSession::spawn(env.topo.client().testkit(&[&args[..], &["--cgroup", &cgroup]].concat())?)
    }
}

fn dns(env: &TestEnv, backends: &[u8]) -> String {
    multi(&[
        &service("default", "dns", Some("10.96.0.11"), &[SvcPort::udp("dns", 53, "5353")]),
        &endpoint_slice("default", "dns-1", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(backends)),
    ])
}

/// Runs in the DaemonSet's shape (tests/src/deployed.rs), as every agent
/// of these tests: its own mount namespace, the DaemonSet's PID setting.
#[test]
fn connected_udp_socket_to_removed_backend_is_reset() -> Result<()> {
    removed_backend_resets(Dial::Inet)
}

/// The same for an `AF_INET6` socket connected to `::ffff:<ClusterIP>`
/// (the agent lists both families' sockets).
#[test]
fn connected_udp_socket_to_removed_backend_is_reset_v4_mapped() -> Result<()> {
    removed_backend_resets(Dial::Mapped)
}

fn removed_backend_resets(dial: Dial) -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Udp(5353)])?;
    env.dial = dial;
    let slice = dns;
    env.manifests.write("dns.yaml", &slice(&env, &[1, 2]))?;
    env.start_agent()?;

    // A long-lived socket through the Service (3 s of rounds), and one to
    // the same backend directly, which the reset must not touch.
    let via_service = Session::start(&env, "10.96.0.11:53", 150)?;
    let first = via_service.next()?;
    let Some(reply) = first.ok else { bail!("first round through the Service failed: {first:?}") };
    let (pinned, other) = if reply.starts_with("b1:") { (1u8, 2u8) } else { (2, 1) };
    let direct = Session::start(&env, &env.topo.backend(pinned).addr(5353).to_string(), 150)?;
    ensure!(direct.next()?.ok.is_some(), "direct session works");

    // The pinned backend leaves the Service; its server keeps running, so
    // a socket that is not reset would keep getting its replies.
    env.manifests.write("dns.yaml", &slice(&env, &[other]))?;
    let removed_at = Instant::now();

    let rounds = via_service.rest();
    let pinned_name = format!("b{pinned}:5353");
    let late_replies: Vec<&Round> = rounds
        .iter()
        .filter(|r| r.ok.as_deref() == Some(&pinned_name) && r.seen > removed_at + Duration::from_secs(1))
        .collect();
    ensure!(
        late_replies.is_empty(),
        "the socket kept talking to the removed backend: {} replies more than 1 s after the removal, first {:?}",
        late_replies.len(),
        late_replies.first()
    );
    let reset = rounds.iter().find(|r| r.seen > removed_at && r.error.is_some());
    let reset =
        reset.with_context(|| format!("the socket was never reset ({} rounds after the removal)", rounds.len()))?;
    ensure!(
        matches!(reset.error.as_deref(), Some("ECONNABORTED" | "EDESTADDRREQ")),
        "reset shows as an aborted/disconnected socket: {reset:?}"
    );

    let direct_rounds = direct.rest();
    let direct_late = direct_rounds
        .iter()
        .filter(|r| r.seen > removed_at + Duration::from_secs(1) && r.ok.as_deref() == Some(&pinned_name))
        .count();
    ensure!(direct_late > 0, "a socket connected to the pod directly must not be reset: {direct_rounds:?}");
    ensure!(direct_rounds.iter().all(|r| r.error.is_none()), "direct socket saw errors: {direct_rounds:?}");

    // New sockets go to the remaining backend.
    let out = env.udp(addr("10.96.0.11:53"), 10, true)?;
    ensure!(out.by_backend().get(&format!("b{other}")) == Some(&10), "{out}");
    Ok(())
}

/// Without `hostPID` the agent cannot see the client processes, so it
/// cannot reach their sockets: it must say so at warn level (and count
/// it), not fail silently.
#[test]
fn an_agent_that_cannot_see_the_clients_says_so() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Udp(5353)])?;
    env.manifests.write("dns.yaml", &dns(&env, &[1, 2]))?;
    let mut shape = PodShape::from_daemonset()?;
    shape.host_pid = false;
    env.start_agent_in_shape(shape)?;
    let session = Session::start(&env, "10.96.0.11:53", 100)?;
    let first = session.next()?;
    ensure!(first.ok.is_some(), "first round through the Service: {first:?}");
    env.manifests.write("dns.yaml", &dns(&env, &[2]))?;
    env.agent()
        .wait_for_log("processes of the attached cgroup are not visible to the agent", Duration::from_secs(10))?;
    let line = env.agent().log_since_start();
    let line = line.lines().find(|l| l.contains("not visible to the agent")).unwrap_or_default();
    ensure!(line.contains(" WARN "), "reported at warn level: {line}");
    Ok(())
}
