//! `svc-agent trace` on the real agent (in its pod shape): a traced
//! connect produces exactly its events (connect4 to a backend of the
//! Service, the getpeername4 that maps it back, a refused connect to a
//! Service without endpoints), with the client's cgroup and one socket
//! cookie per connection; with no trace running the programs write
//! nothing (a trace prints what is pending when it starts, and prints
//! nothing after connects made while none ran); a killed tracer's switch
//! is turned off by the agent.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use svc_tests::{
    Agent, Proto, SYNC_TIMEOUT, TestEnv, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    poll_until,
};

/// `svc-agent trace -o json ARGS` through the agent's launcher, returned
/// once it said it is tracing.
fn spawn_trace(agent: &Agent, args: &[&str]) -> Result<Child> {
    let mut child = Command::new(agent.bin())
        .args(["trace", "-o", "json", "--bpffs"])
        .arg(agent.pin_dir())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn svc-agent trace")?;
    let stderr = child.stderr.take().context("trace stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().context("trace exited before tracing")??;
        if line.contains("tracing translations") {
            break;
        }
    }
    Ok(child)
}

/// The events a finished trace printed.
fn events(child: Child) -> Result<Vec<Value>> {
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "trace failed: {}", out.status);
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("trace line {l:?}")))
        .collect()
}

/// `SVC_TRACE_ON[0]`, through bpftool.
fn switch(agent: &Agent) -> Result<u64> {
    let path = agent.pin_dir().join("maps").join("SVC_TRACE_ON");
    let out = Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&path).output()?;
    let dump: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("bpftool dump of {path:?}"))?;
    dump[0]["formatted"]["value"].as_u64().with_context(|| format!("no value in {dump}"))
}

#[test]
fn a_traced_connect_produces_exactly_its_events_and_an_idle_agent_writes_none() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    let web = service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]);
    let empty = service("default", "empty", Some("10.96.0.11"), &[SvcPort::tcp("http", 80, "8080")]);
    let slice = endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2]));
    env.manifests.write("svc.yaml", &multi(&[&web, &empty, &slice]))?;
    let agent = Agent::start_with_args(&env.manifests, &env.cgroup, &["--flow-sweep-interval", "1"])?;
    env.agent_slot().insert(agent).wait_in_sync(SYNC_TIMEOUT)?;
    let cgroup_id = std::fs::metadata(env.cgroup.path())?.ino();

    // No trace: connects write nothing (the next trace would print it).
    ensure!(env.tcp(addr("10.96.0.10:80"), 5)?.total_ok() == 5);
    let idle = events(spawn_trace(env.agent(), &["--timeout", "1"])?)?;
    ensure!(idle.is_empty(), "events written while no trace ran: {idle:?}");

    // A trace: one connect to web, one to the Service without endpoints.
    let tracer = spawn_trace(env.agent(), &["--timeout", "2"])?;
    let ok = env.tcp(addr("10.96.0.10:80"), 1)?;
    ensure!(ok.total_ok() == 1, "{ok}");
    let refused = env.tcp(addr("10.96.0.11:80"), 1)?;
    ensure!(refused.errors.get("ECONNREFUSED") == Some(&1), "{refused}");
    let seen = events(tracer)?;
    let connects: Vec<&Value> = seen.iter().filter(|e| e["hook"] == "connect4").collect();
    ensure!(connects.len() == 2, "two connects, two connect4 events: {seen:#?}");
    let (fwd, no) = (connects[0], connects[1]);
    ensure!(fwd["verdict"] == "translated" && fwd["from"] == "10.96.0.10:80", "{fwd}");
    let backend = fwd["to"].as_str().context("translated without a backend")?;
    ensure!(["10.244.1.2:8080", "10.244.2.2:8080"].contains(&backend), "{fwd}");
    ensure!(fwd["service"] == "default/web:http" && fwd["protocol"] == "tcp", "{fwd}");
    ensure!(no["verdict"] == "refused" && no["from"] == "10.96.0.11:80" && no["to"].is_null(), "{no}");
    ensure!(no["service"] == "default/empty:http", "{no}");
    for e in [fwd, no] {
        ensure!(e["cgroup_id"].as_u64() == Some(cgroup_id), "the client's cgroup {cgroup_id}: {e}");
        ensure!(e["netns_cookie"] == fwd["netns_cookie"] && e["netns_cookie"].as_u64() > Some(0), "{e}");
    }
    ensure!(fwd["socket_cookie"] != no["socket_cookie"], "two sockets, two cookies: {seen:#?}");
    // Anything else is the web socket's reverse translation (getpeername).
    for e in seen.iter().filter(|e| e["hook"] != "connect4") {
        ensure!(e["hook"] == "getpeername4" && e["socket_cookie"] == fwd["socket_cookie"], "unexpected event {e}");
        ensure!(e["from"] == backend && e["to"] == "10.96.0.10:80", "{e}");
    }
    ensure!(switch(env.agent())? == 0, "the trace did not switch itself off");

    // And nothing again once it ended.
    ensure!(env.tcp(addr("10.96.0.10:80"), 5)?.total_ok() == 5);
    let after = events(spawn_trace(env.agent(), &["--timeout", "1"])?)?;
    ensure!(after.is_empty(), "events written after the trace ended: {after:?}");

    // A killed tracer: the agent switches its trace off.
    let mut killed = spawn_trace(env.agent(), &[])?;
    ensure!(switch(env.agent())? != 0);
    killed.kill()?;
    killed.wait()?;
    poll_until(Duration::from_secs(5), || Ok(switch(env.agent())? == 0))
        .context("the agent did not switch off a dead tracer's trace")?;
    Ok(())
}
