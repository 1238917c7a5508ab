//! Self-tests of the harness (no agent needed): the topology really connects
//! client and backends, untranslated ClusterIP traffic fails fast without
//! leaving the client namespace, clients really join their cgroup, and the
//! guards remove everything.

use std::{
    net::SocketAddrV4,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Result;
use svc_tests::{
    Cgroup, ManifestDir, Netns, Proto, Topology, UNREACHABLE, cgroup2_mount, netns_names, require_root, sweep_stale,
};

#[test]
fn client_reaches_each_backend_directly() -> Result<()> {
    require_root();
    let topo = Topology::new(2)?;
    let _servers = [
        topo.backend(1).serve("b1", &[Proto::Tcp(8080), Proto::Udp(8080)])?,
        topo.backend(2).serve("b2", &[Proto::Tcp(8080), Proto::Udp(8080)])?,
    ];
    for (i, name) in [(1, "b1"), (2, "b2")] {
        let to = topo.backend(i).addr(8080);
        let reply = format!("{name}:8080");

        let tcp = topo.tcp(None, to, 10)?;
        assert_eq!(tcp.ok.get(&reply), Some(&10), "tcp to {to}: {tcp}");
        assert_eq!(tcp.total_errors(), 0, "tcp to {to}: {tcp}");
        assert_eq!(tcp.peers.get(&to.to_string()), Some(&10), "tcp to {to}: {tcp}");

        let udp = topo.udp(None, to, 10, false)?;
        assert_eq!(udp.ok.get(&reply), Some(&10), "udp to {to}: {udp}");
        assert_eq!(udp.sources.get(&to.to_string()), Some(&10), "udp to {to}: {udp}");

        let conn = topo.udp(None, to, 10, true)?;
        assert_eq!(conn.ok.get(&reply), Some(&10), "connected udp to {to}: {conn}");
        assert_eq!(conn.peers.get(&to.to_string()), Some(&10), "connected udp to {to}: {conn}");
    }
    Ok(())
}

#[test]
fn untranslated_cluster_ip_fails_fast() -> Result<()> {
    require_root();
    let topo = Topology::new(1)?;
    let to: SocketAddrV4 = "10.96.0.10:80".parse()?;

    let start = Instant::now();
    let tcp = topo.tcp(None, to, 5)?;
    let elapsed = start.elapsed();
    assert!(tcp.all_failed_with(UNREACHABLE), "tcp to {to}: {tcp}");
    assert_eq!(tcp.total_errors(), 5, "{tcp}");
    // A dropped SYN would take the whole 1 s connect timeout per attempt.
    assert!(elapsed < Duration::from_secs(1), "5 connects took {elapsed:?}");

    let udp = topo.udp(None, to, 5, false)?;
    assert!(udp.all_failed_with(UNREACHABLE), "udp to {to}: {udp}");
    Ok(())
}

#[test]
fn testkit_joins_the_cgroup() -> Result<()> {
    require_root();
    let topo = Topology::new(1)?;
    let _server = topo.backend(1).serve("b1", &[Proto::Tcp(8080)])?;
    let cgroup = Cgroup::new()?;
    let to = topo.backend(1).addr(8080);

    let inside = topo.tcp(Some(&cgroup), to, 1)?;
    assert_eq!(inside.cgroup, cgroup.relative(), "{inside}");
    assert_eq!(inside.total_ok(), 1, "{inside}");

    let outside = topo.tcp(None, to, 1)?;
    assert_ne!(outside.cgroup, cgroup.relative(), "{outside}");
    Ok(())
}

#[test]
fn guards_remove_everything_on_drop() -> Result<()> {
    require_root();
    let topo = Topology::new(2)?;
    let server = topo.backend(1).serve("b1", &[Proto::Tcp(8080)])?;
    let cgroup = Cgroup::new()?;
    // A process that would outlive the test if Cgroup's Drop did not kill it.
    let mut sleeper = Command::new("sleep").arg("600").spawn()?;
    cgroup.add_pid(sleeper.id())?;
    let manifests = ManifestDir::new()?;
    manifests.write("a.yaml", "kind: Service\n")?;

    let netns: Vec<String> = std::iter::once(topo.client())
        .chain(topo.backends().iter().map(svc_tests::Backend::netns))
        .map(|n| n.name().to_owned())
        .collect();
    let (cg_path, dir) = (cgroup.path().to_owned(), manifests.path().to_owned());
    let listed = netns_names()?;
    for n in &netns {
        assert!(listed.iter().any(|l| l == n), "{n} missing from: {listed:?}");
    }
    assert!(cg_path.is_dir() && dir.join("a.yaml").is_file());
    // Atomic writes leave no temp file behind.
    assert!(!dir.join(".a.yaml.tmp").exists());

    drop(server);
    drop(topo);
    drop(cgroup);
    drop(manifests);
    // Cgroup's Drop SIGKILLed the sleeper; reap it.
    let status = sleeper.wait()?;
    assert!(!status.success(), "sleep was not killed: {status}");

    let listed = netns_names()?;
    for n in &netns {
        assert!(!listed.iter().any(|l| l == n), "netns {n} left behind: {listed:?}");
    }
    assert!(!cg_path.exists(), "cgroup {} left behind", cg_path.display());
    assert!(!dir.exists(), "manifest dir {} left behind", dir.display());
    Ok(())
}

#[test]
fn guards_clean_up_when_a_test_panics() -> Result<()> {
    require_root();
    let mut names = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::new(1).expect("topology");
        let cgroup = Cgroup::new().expect("cgroup");
        names = Some((topo.client().name().to_owned(), cgroup.path().to_owned()));
        panic!("deliberate panic inside a test body");
    }));
    assert!(result.is_err());
    let (netns, cg_path) = names.expect("body ran");
    let listed = netns_names()?;
    assert!(!listed.contains(&netns), "netns {netns} left behind: {listed:?}");
    assert!(!cg_path.exists(), "cgroup {} left behind", cg_path.display());
    Ok(())
}

#[test]
fn sweep_removes_objects_of_dead_processes_only() -> Result<()> {
    require_root();
    // pid_max + 1 can never be a running process.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?.trim().parse()?;
    let stale = format!("svct-{}-0", pid_max + 1);
    let live = Netns::new()?;

    let status = Command::new("ip").args(["netns", "add", &stale]).status()?;
    assert!(status.success());
    let stale_cgroup = cgroup2_mount()?.join(&stale);
    std::fs::create_dir(&stale_cgroup)?;
    let stale_pins = Path::new("/sys/fs/bpf").join(&stale);
    std::fs::create_dir(&stale_pins)?;
    let stale_tmp = Path::new("/tmp").join(&stale);
    std::fs::create_dir(&stale_tmp)?;

    sweep_stale();

    let listed = netns_names()?;
    assert!(!listed.contains(&stale), "stale netns kept: {listed:?}");
    assert!(listed.iter().any(|l| l == live.name()), "live netns {} swept: {listed:?}", live.name());
    assert!(!stale_cgroup.exists(), "stale cgroup kept");
    assert!(!stale_pins.exists(), "stale pin dir kept");
    assert!(!stale_tmp.exists(), "stale temp dir kept");
    Ok(())
}
