//! The pinned dataplane outlives the agent; a restarted agent reconciles
//! with what changed while it was down (the scenario of
//! `svc_tests::scenarios::restart`, also run through the Kubernetes
//! source); adoption checks what it adopts; `cleanup` removes everything.

use std::path::Path;

use anyhow::Result;
use svc_tests::{
    Proto, SYNC_TIMEOUT, TestEnv, UNREACHABLE, addr,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
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

svc_tests::family_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::restart::sigkill_keeps_serving_and_restart_reconciles
        => sigkill_keeps_serving_and_restart_reconciles,
}

/// `cleanup` detaches and unpins everything: stop the agent (its own link
/// fds would keep the programs attached), then clean up. Checks first that
/// there is something to remove, so the checks after it can fail.
#[test]
fn cleanup_removes_every_pin_and_program() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080)])?;
    let web = addr("10.96.0.10:80");
    env.manifests.write("web.yaml", &svc_with_slice("web", "10.96.0.10", &env.endpoints(&[1])))?;
    env.start_agent()?;
    let out = env.tcp(web, 5)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&5), "before cleanup: {out}");

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
