//! `svc-agent status --check` and the agent's periodic self-check, on the
//! real agent in its pod shape: healthy, it passes (pins, attachment at
//! the configured cgroup, a probe connect from a child cgroup translated)
//! and /readyz is 200; pointed at another cgroup, every program is
//! reported not attached; with connect4's link detached behind the
//! agent's back (bpftool), the check fails naming connect4, the probe
//! fails too, /readyz turns 503 with the reason and the metrics say so; a
//! restart of the agent repairs it.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use svc_tests::{
    Agent, Cgroup, Proto, SYNC_TIMEOUT, TestEnv,
    kube_env::{free_port, http_get, metric_value},
    poll_until,
};

/// `status --check [--cgroup CGROUP]` through the agent's launcher: (exit
/// success, stdout).
fn check(agent: &Agent, cgroup: &std::path::Path) -> Result<(bool, String)> {
    let out = Command::new(agent.bin())
        .args(["status", "--check", "--bpffs"])
        .arg(agent.pin_dir())
        .arg("--cgroup")
        .arg(cgroup)
        .output()
        .context("run status --check")?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn self_check_passes_and_catches_a_program_detached_behind_the_agents_back() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    let cgroup = env.cgroup.path().to_owned();
    let at = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let args = ["--metrics-addr", &at.to_string(), "--self-check-interval", "1"];
    let agent = Agent::start_with_args(&env.manifests, &env.cgroup, &args)?;
    let agent = env.agent_slot().insert(agent);
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let metric = |name: &str| -> Result<f64> {
        let (_, body) = http_get(at, "/metrics")?;
        metric_value(&body, name).with_context(|| format!("no {name}"))
    };

    let (ok, out) = check(agent, &cgroup)?;
    ensure!(
        ok && out.starts_with(&format!("ok: {} programs", svc_common::names::SOCK_PROGRAMS.len())),
        "a healthy agent fails its check:\n{out}"
    );
    poll_until(Duration::from_secs(5), || Ok(metric("svc_agent_self_checks_total")? >= 1.0))?;
    ensure!(metric("svc_agent_self_check_ok")? == 1.0);
    let (status, body) = http_get(at, "/readyz")?;
    ensure!(status == 200, "/readyz {status}: {body}");

    // Another cgroup: nothing of ours is attached there.
    let other = Cgroup::new()?;
    let (ok, out) = check(agent, other.path())?;
    ensure!(
        !ok && out.matches("[not_attached]").count() == svc_common::names::SOCK_PROGRAMS.len(),
        "checked against another cgroup:\n{out}"
    );

    // connect4's link detached behind the agent's back.
    let link = agent.pin_dir().join("links").join("svc_connect4");
    let detached = Command::new("bpftool").args(["link", "detach", "pinned"]).arg(&link).output()?;
    ensure!(detached.status.success(), "bpftool link detach: {}", String::from_utf8_lossy(&detached.stderr));
    let (ok, out) = check(agent, &cgroup)?;
    ensure!(!ok, "a detached connect4 passes the check:\n{out}");
    ensure!(out.contains("[not_attached] svc_connect4"), "{out}");
    ensure!(out.contains("[probe]"), "the probe connect was translated without connect4:\n{out}");
    ensure!(out.lines().count() == 2, "only connect4 and the probe are wrong:\n{out}");
    poll_until(Duration::from_secs(5), || Ok(http_get(at, "/readyz")?.0 == 503))?;
    let (_, body) = http_get(at, "/readyz")?;
    ensure!(body.contains("svc_connect4"), "/readyz does not say why: {body}");
    ensure!(metric("svc_agent_self_check_ok")? == 0.0);
    ensure!(metric("svc_agent_self_check_problems{reason=\"not_attached\"}")? == 1.0);
    ensure!(metric("svc_agent_self_check_problems{reason=\"probe\"}")? == 1.0);

    // A restart attaches afresh: the check passes again.
    agent.kill()?;
    agent.restart()?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let (ok, out) = check(agent, &cgroup)?;
    ensure!(ok, "after the restart:\n{out}");
    Ok(())
}
