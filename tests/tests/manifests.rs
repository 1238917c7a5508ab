//! Broken manifests are reported by name and skipped; the rest applies.

use std::time::Duration;

use anyhow::Result;
use svc_tests::{
    Agent, Cgroup, ManifestDir, Proto, SYNC_TIMEOUT, TestEnv, addr, is_warning,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    require_root,
};

/// How long after `dataplane in sync` the report may still appear.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

fn web(env: &TestEnv) -> String {
    multi(&[
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1])),
    ])
}

#[test]
fn malformed_file_reported_and_others_apply() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    env.manifests.write("good.yaml", &web(&env))?;
    // Not YAML at all: an unclosed flow sequence.
    env.manifests.write("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: [name: broken\n")?;
    env.start_agent()?;

    let line = env.agent().wait_for_log_line(REPORT_TIMEOUT, |l| is_warning(l) && l.contains("bad.yaml"))?;
    assert!(!line.contains("good.yaml"), "good.yaml reported as broken: {line}");

    let out = env.tcp(addr("10.96.0.10:80"), 10)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&10), "good.yaml's Service: {out}");
    Ok(())
}

#[test]
fn invalid_object_reported_and_others_in_file_apply() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    let broken = service("default", "broken-ip", Some("10.96.0.300"), &[SvcPort::tcp("http", 80, "8080")]);
    // The broken object first, so an agent that stops at it fails the test.
    env.manifests.write("mixed.yaml", &multi(&[&broken, &web(&env)]))?;
    env.start_agent()?;

    env.agent().wait_for_log_line(REPORT_TIMEOUT, |l| is_warning(l) && l.contains("broken-ip"))?;

    let out = env.tcp(addr("10.96.0.10:80"), 10)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&10), "valid Service beside it: {out}");
    let frontends = env.agent().frontends()?;
    assert!(frontends.iter().all(|f| f.name != "broken-ip"), "invalid Service programmed: {frontends:?}");
    assert!(frontends.iter().any(|f| f.name == "web"), "{frontends:?}");
    Ok(())
}

/// The agent's own reads (opening the directory and files) must not wake
/// its watcher: after a change it re-reads once and then rests. (notify
/// reports inotify's IN_OPEN; an agent that woke on it re-read forever.)
#[test]
fn agent_rests_after_a_change() -> Result<()> {
    const REREAD: &str = "manifest directory re-read";
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    env.manifests.write("web.yaml", &web(&env))?;
    env.start_agent()?;
    let moved = multi(&[
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[2])),
    ]);
    env.manifests.write("web.yaml", &moved)?;
    env.agent().wait_for_log_line(REPORT_TIMEOUT, |l| l.contains(REREAD) && l.contains("changed=true"))?;
    assert_eq!(env.tcp(addr("10.96.0.10:80"), 5)?.ok.get("b2:8080"), Some(&5));

    let mut rereads = || env.agent().log_since_start().lines().filter(|l| l.contains(REREAD)).count();
    let before = rereads();
    std::thread::sleep(Duration::from_secs(2));
    let after = rereads();
    // At most one periodic rescan (every 5 s) may fall in the window.
    assert!(after - before <= 1, "{} re-reads in 2 s with nothing changing", after - before);
    Ok(())
}

/// Allocated cluster IPs are sticky: a Service keeps its address when
/// another Service appears that sorts first and wants the same one (here
/// the range has a single usable address), and across a restart.
#[test]
fn an_allocated_cluster_ip_never_moves_to_another_service() -> Result<()> {
    require_root();
    let cgroup = Cgroup::new()?;
    let manifests = ManifestDir::new()?;
    let web = |name: &str| service("default", name, None, &[SvcPort::tcp("http", 80, "8080")]);
    manifests.write("web.yaml", &web("web"))?;
    // 10.96.3.0/30: .0 network, .1 reserved, .3 last: only .2 is usable.
    let mut agent = Agent::start_with_args(&manifests, &cgroup, &["--service-cidr", "10.96.3.0/30"])?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let owner_of_2 = |agent: &Agent| -> Result<Vec<String>> {
        Ok(agent.frontends()?.into_iter().filter(|f| f.address == "10.96.3.2:80").map(|f| f.name).collect())
    };
    assert_eq!(owner_of_2(&agent)?, vec!["web".to_owned()]);

    // "a-first" sorts before "web" and would get the only address on a
    // fresh allocation; it must not take it from the running Service.
    manifests.write("a.yaml", &web("a-first"))?;
    agent.wait_for_log("Service default/a-first skipped: service range 10.96.3.0/30 is full", SYNC_TIMEOUT)?;
    assert_eq!(owner_of_2(&agent)?, vec!["web".to_owned()], "the running Service kept its address");

    // Nor across a restart, where both are seen at once.
    agent.kill()?;
    agent.restart()?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    assert_eq!(owner_of_2(&agent)?, vec!["web".to_owned()], "kept across a restart (seeded from the pins)");
    assert!(agent.log_since_start().contains("Service default/a-first skipped: service range 10.96.3.0/30 is full"));
    Ok(())
}

/// A ConfigMap volume, as the kubelet updates it: every file is a symlink
/// into `..data`, itself a symlink to a timestamped directory, and an
/// update swaps `..data` in one rename. No event names a manifest file,
/// so the agent must re-read the whole directory.
#[test]
fn a_configmap_style_update_is_picked_up() -> Result<()> {
    let mut env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    let dir = env.manifests.path().to_owned();
    let yaml = |env: &TestEnv, backends: &[u8]| {
        multi(&[
            &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]),
            &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(backends)),
        ])
    };
    let version = |name: &str, yaml: &str| -> Result<()> {
        std::fs::create_dir(dir.join(name))?;
        std::fs::write(dir.join(name).join("web.yaml"), yaml)?;
        std::os::unix::fs::symlink(name, dir.join("..data_tmp"))?;
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data"))?;
        Ok(())
    };
    version("..2026_12_03_1", &yaml(&env, &[1]))?;
    std::os::unix::fs::symlink("..data/web.yaml", dir.join("web.yaml"))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");
    assert_eq!(env.tcp(vip, 10)?.ok.get("b1:8080"), Some(&10));

    version("..2026_12_03_2", &yaml(&env, &[2]))?;
    // Within the 5 s rescan, which would find the change with no event:
    // this is the event's re-read.
    svc_tests::poll_outcome(Duration::from_secs(3), || env.tcp(vip, 5), |o| o.ok.get("b2:8080") == Some(&5))?;
    Ok(())
}
