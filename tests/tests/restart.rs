//! The pinned dataplane outlives the agent; a restarted agent reconciles
//! with what changed while it was down; `cleanup` removes everything.

use std::path::Path;

use anyhow::Result;
use svc_tests::{
    Proto, SYNC_TIMEOUT, TestEnv, UNREACHABLE, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
    scenarios::set,
};

/// Service NAME on CLUSTER_IP:80 -> 8080 with one slice.
fn svc_with_slice(name: &str, cluster_ip: &str, endpoints: &[Endpoint]) -> String {
    multi(&[
        &service("default", name, Some(cluster_ip), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", &format!("{name}-1"), name, &[SlicePort::tcp("http", 8080)], endpoints),
    ])
}

/// Every non-directory under `dir` (pinned maps, programs, links).
fn pinned_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(pinned_files(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn sigkill_keeps_serving_and_restart_reconciles() -> Result<()> {
    let mut env = TestEnv::new(3, &[Proto::Tcp(8080)])?;
    let web = addr("10.96.0.10:80");
    let gone = addr("10.96.0.12:80");
    let new = addr("10.96.0.13:80");
    env.manifests.write("web.yaml", &svc_with_slice("web", "10.96.0.10", &env.endpoints(&[1, 2, 3])))?;
    env.manifests.write("gone.yaml", &svc_with_slice("gone", "10.96.0.12", &env.endpoints(&[1])))?;
    env.start_agent()?;
    let out = env.tcp(web, 60)?;
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "web: {out}");
    let out = env.tcp(gone, 5)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&5), "gone: {out}");

    // The dataplane keeps serving the pinned state without the agent.
    env.agent().kill()?;
    let out = env.tcp(web, 60)?;
    assert_eq!(out.total_ok(), 60, "agent down: {out}");
    // P(a backend gets none of 60) = 3*(2/3)^60 ~ 1e-10.
    assert_eq!(out.backends(), set(&["b1", "b2", "b3"]), "agent down: {out}");
    assert_eq!(out.peers.get("10.96.0.10:80"), Some(&60), "agent down: {out}");

    // Changes while the agent is down.
    env.manifests.write("web.yaml", &svc_with_slice("web", "10.96.0.10", &env.endpoints(&[1, 2])))?;
    env.manifests.remove("gone.yaml")?;
    env.manifests.write("new.yaml", &svc_with_slice("new", "10.96.0.13", &env.endpoints(&[2])))?;

    let agent = env.agent();
    agent.restart()?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;

    let out = env.tcp(new, 10)?;
    assert_eq!(out.ok.get("b2:8080"), Some(&10), "new Service: {out}");
    let out = env.tcp(gone, 10)?;
    assert!(out.all_failed_with(UNREACHABLE), "deleted Service: {out}");
    let out = env.tcp(web, 200)?;
    assert_eq!(out.total_ok(), 200, "{out}");
    assert_eq!(out.backends(), set(&["b1", "b2"]), "removed endpoint b3: {out}");

    // Exactly the expected frontends: nothing stale survived the restart.
    let mut frontends: Vec<_> = env
        .agent()
        .frontends()?
        .into_iter()
        .map(|f| {
            let mut backends = f.backends.clone();
            backends.sort();
            (f.namespace, f.name, f.kind, f.address, f.protocol, backends)
        })
        .collect();
    frontends.sort();
    let expected = |name: &str, address: &str, backends: &[&str]| {
        (
            "default".to_owned(),
            name.to_owned(),
            "ClusterIP".to_owned(),
            address.to_owned(),
            "TCP".to_owned(),
            backends.iter().map(|&b| b.to_owned()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        frontends,
        vec![
            expected("new", "10.96.0.13:80", &["10.244.2.2:8080"]),
            expected("web", "10.96.0.10:80", &["10.244.1.2:8080", "10.244.2.2:8080"]),
        ],
        "status frontends after the restart"
    );

    // cleanup: stop the agent (its own link fds would keep the programs
    // attached), then detach and unpin. Check first that there is something
    // to remove, so the checks after it can fail.
    let pin_dir = env.agent().pin_dir().to_owned();
    assert!(!pinned_files(&pin_dir).is_empty(), "nothing pinned in {}", pin_dir.display());
    assert!(!env.cgroup.attached_programs()?.is_empty(), "no programs attached to {}", env.cgroup.path().display());
    env.agent().kill()?;
    env.agent().cleanup()?;
    let left = pinned_files(&pin_dir);
    assert!(left.is_empty(), "pins left after cleanup: {left:?}");
    let attached = env.cgroup.attached_programs()?;
    assert!(attached.is_empty(), "programs attached after cleanup: {attached:?}");
    let out = env.tcp(web, 10)?;
    assert!(out.all_failed_with(UNREACHABLE), "after cleanup: {out}");
    Ok(())
}

/// A restarted agent checks what it adopts: pins of another map layout
/// version are refused with a reason (never misread), and `--max-*` flags
/// that pinned maps cannot honour are reported instead of ignored.
#[test]
fn adoption_checks_the_layout_version_and_reports_fixed_capacities() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    env.manifests.write("web.yaml", &svc_with_slice("web", "10.96.0.10", &env.endpoints(&[1])))?;
    env.start_agent()?;
    env.agent().kill()?;

    env.agent().restart_with(&["--max-frontends", "1024"])?;
    env.agent().wait_in_sync(SYNC_TIMEOUT)?;
    let warned = env.agent().log_since_start();
    assert!(
        warned.contains("--max-frontends 1024 does not apply: the pinned SVC_FRONTENDS keeps its 65536 entries"),
        "{warned}"
    );
    env.agent().kill()?;

    // Pins from an agent with another layout: CONFIG says version 99.
    let config = env.agent().pin_dir().join("maps/SVC_CONFIG");
    let mut value: Vec<String> = vec!["0".into(); 16];
    value[8] = "99".into();
    let mut args = vec!["map", "update", "pinned", config.to_str().unwrap(), "key", "0", "0", "0", "0", "value"];
    args.extend(value.iter().map(String::as_str));
    let out = std::process::Command::new("bpftool").args(&args).output()?;
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    env.agent().restart()?;
    svc_tests::poll_until(SYNC_TIMEOUT, || Ok(!env.agent().is_running()))?;
    let refused = env.agent().log_since_start();
    assert!(
        refused.contains("the pinned maps have layout version 99, this agent writes version"),
        "the agent must refuse, saying why: {refused}"
    );
    // The old dataplane was left alone: still serving.
    let out = env.tcp(addr("10.96.0.10:80"), 5)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&5), "{out}");
    Ok(())
}
