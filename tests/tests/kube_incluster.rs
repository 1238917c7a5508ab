//! `--source kube` as the DaemonSet runs it: in-cluster configuration (a
//! service account token and the cluster CA at the in-cluster path, the
//! server named by `KUBERNETES_SERVICE_HOST`/`_PORT`, no kubeconfig),
//! against an API server that enforces RBAC with exactly the roles in
//! `deploy/`: the agent syncs, follows changes and reads its Node, with no
//! permission error.

use std::time::Instant;

use anyhow::{Result, ensure};
use svc_tests::{
    Proto, SYNC_TIMEOUT, addr,
    apiserver::{ApiServer, Authz, deploy_dir},
    is_warning,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{API_POLL, InCluster, KUBE_NODE_NAME, KubeEnv, assert_within_budget},
    poll_outcome,
    source::Source as _,
};

const NAMESPACE: &str = "svc-dataplane";
const SERVICE_ACCOUNT: &str = "svc-agent";

/// `kubectl auth can-i VERB RESOURCE -A` as the agent's service account.
fn agent_can(api: &ApiServer, verb: &str, resource: &str) -> Result<bool> {
    let user = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["auth", "can-i", verb, resource, "--all-namespaces", "--as", &user])
        .output()?;
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ensure!(answer == "yes" || answer == "no", "kubectl auth can-i {verb} {resource}: {answer:?} {out:?}");
    Ok(answer == "yes")
}

#[test]
fn in_cluster_config_with_the_deploy_rbac() -> Result<()> {
    let api = ApiServer::with_authz(Authz::Rbac)?;
    // What an operator applies, for real: the server validates every object
    // (nothing runs the DaemonSet: there is no controller-manager).
    let applied = api.kubectl(&["apply", "-k", &deploy_dir().display().to_string()])?;
    for object in [
        "namespace/svc-dataplane",
        "serviceaccount/svc-agent",
        "clusterrole.rbac.authorization.k8s.io/svc-agent",
        "clusterrolebinding.rbac.authorization.k8s.io/svc-agent",
        "configmap/svc-agent-apiserver",
        "daemonset.apps/svc-agent",
    ] {
        ensure!(applied.contains(&format!("{object} created")), "{object} not created by kubectl apply:\n{applied}");
    }

    // RBAC is enforced, and grants the agent what it needs and no more.
    for (verb, resource) in [
        ("list", "services"),
        ("watch", "services"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("watch", "nodes"),
        ("watch", "pods"),
        ("list", "namespaces"),
    ] {
        ensure!(agent_can(&api, verb, resource)?, "the agent may not {verb} {resource}");
    }
    for (verb, resource) in
        [("get", "services"), ("create", "services"), ("get", "pods"), ("list", "secrets"), ("update", "nodes")]
    {
        ensure!(!agent_can(&api, verb, resource)?, "the agent may {verb} {resource}: RBAC not enforced or too wide");
    }

    let launcher = InCluster::new(&api, NAMESPACE, SERVICE_ACCOUNT)?;
    let mut env = KubeEnv::with_api(api, 2, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&multi(&[
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1])),
    ]))?;
    // The agent's Node, with a zone label (read through `get`/`watch nodes`).
    env.api.node_zone(KUBE_NODE_NAME, "zone-a")?;

    env.spawn_agent_in_cluster(&launcher)?;
    let port = env.api.port()?;
    let agent = env.agent();
    agent.wait_in_sync(SYNC_TIMEOUT)?;
    let line = agent.wait_for_log_line(SYNC_TIMEOUT, |l| l.contains("kubernetes source"))?;
    ensure!(
        line.contains("config=in-cluster service account") && line.contains(&format!("https://127.0.0.1:{port}")),
        "not the in-cluster configuration: {line}"
    );
    agent.wait_for_log(r#"node zone changed zone=Some("zone-a")"#, SYNC_TIMEOUT)?;

    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 10)?;
    assert_eq!(out.ok.get("b1:8080"), Some(&10), "{out}");
    assert_eq!(env.readyz()?, 200, "/readyz");

    // The watches run with the service account too.
    let start = Instant::now();
    env.api.apply_yaml(&endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080)],
        &env.endpoints(&[2]),
    ))?;
    poll_outcome(API_POLL, || env.tcp(vip, 3), |o| o.ok.get("b2:8080") == Some(&3))?;
    assert_within_budget("endpoint change (in-cluster)", start.elapsed());

    // A missing permission would show as a 403 warning; the server's CA is
    // verified (kube-rs warns when verification is skipped).
    let log = env.agent().log_since_start();
    let warnings: Vec<&str> = log.lines().filter(|l| is_warning(l)).collect();
    assert!(warnings.is_empty(), "warnings in the agent log: {warnings:#?}");
    Ok(())
}
