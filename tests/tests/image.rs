//! The agent's OCI image (deploy/image/build.sh), built from the binary
//! under test and run with podman in the DaemonSet's shape
//! (`svc_tests::podman`): it translates real connects of the test's
//! clients, `status` works from inside the container, `/readyz` answers on
//! the host network, and a container SIGKILLed and started again adopts the
//! pins (the dataplane serving throughout).

use std::net::SocketAddr;

use anyhow::{Context as _, Result, ensure};
use svc_tests::{
    Proto, SYNC_TIMEOUT, TestEnv, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{free_port, http_get},
    podman::{AgentContainer, Image},
    poll_until,
    scenarios::set,
};

fn readyz(metrics: SocketAddr) -> Result<bool> {
    Ok(http_get(metrics, "/readyz").is_ok_and(|(code, _)| code == 200))
}

#[test]
fn the_image_runs_in_the_daemonset_shape_and_a_restart_adopts_the_pins() -> Result<()> {
    let env = TestEnv::new(2, &[Proto::Tcp(8080)])?;
    env.manifests.write(
        "web.yaml",
        &multi(&[
            &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]),
            &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[1, 2])),
        ]),
    )?;
    let image = Image::build()?;
    eprintln!("image {}: {:.1} MiB", image.reference, image.size_bytes as f64 / (1024.0 * 1024.0));
    ensure!(image.size_bytes > 0, "podman reports no size for {}", image.reference);

    let port = free_port()?;
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // The manifest directory stands in for the API server: mounted like a
    // ConfigMap volume would be, at its own path.
    let manifests = env.manifests.path().display().to_string();
    let cgroup = AgentContainer::container_path(env.cgroup.path())?.display().to_string();
    let args: Vec<String> = [
        "run",
        "--source",
        &manifests,
        "--cgroup",
        &cgroup,
        "--metrics-addr",
        &metrics.to_string(),
        "--devices",
        "none",
        "--node-name",
        "test-node",
        "--self-check-interval",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut agent = AgentContainer::run(&image, &args, &[env.manifests.path()])?;
    poll_until(SYNC_TIMEOUT, || readyz(metrics)).context("/readyz of the container never answered 200")?;

    let vip = addr("10.96.0.10:80");
    let out = env.tcp(vip, 40)?;
    // P(a backend gets none of 40) = 2 * 2^-40.
    ensure!(out.total_ok() == 40 && out.backends() == set(&["b1", "b2"]), "translated by the container: {out}");
    ensure!(out.peers.get("10.96.0.10:80") == Some(&40), "getpeername shows the ClusterIP: {out}");

    let pins = agent.pin_dir().display().to_string();
    let status = agent.exec(&["/usr/local/bin/svc-agent", "status", "-o", "json", "--bpffs", &pins])?;
    ensure!(status.contains("\"address\": \"10.96.0.10:80\""), "status from inside the container: {status}");
    let check =
        agent.exec(&["/usr/local/bin/svc-agent", "status", "--check", "--bpffs", &pins, "--cgroup", &cgroup])?;
    ensure!(check.starts_with("ok:"), "status --check inside the container: {check}");

    // SIGKILL: the pinned dataplane keeps serving with no agent at all.
    agent.kill()?;
    let out = env.tcp(vip, 10)?;
    ensure!(out.total_ok() == 10, "no agent running, pins serving: {out}");
    agent.start()?;
    poll_until(SYNC_TIMEOUT, || readyz(metrics)).context("/readyz after the restart")?;
    let logs = agent.logs();
    ensure!(logs.contains("adopted pinned dataplane state"), "the restarted container adopts the pins:\n{logs}");
    let out = env.tcp(vip, 20)?;
    ensure!(out.total_ok() == 20, "after the restart: {out}");
    drop(agent);
    Ok(())
}
