//! Many connects racing many Service changes, as production has them:
//! four client threads connect round-robin to 200 ClusterIPs while every
//! Service's backends are replaced again and again, crossing the 16-backend
//! line between sets kept in the frontend value and sets kept in slots.
//!
//! Every backend answers with its own address, and each Service has its
//! own /24 of backends, so the client checks each connect: it must be
//! answered by a backend of the Service it asked for. Refused, failed or
//! misrouted connects are counted and must all be zero.
//!
//! The test's power: on the code before the grace-period protocol, two
//! quick updates of a Service with more than 16 backends made `select`
//! give up after two slot misses, and this test saw refused connects
//! (docs/testing.md records the run).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde::Deserialize;
use svc_tests::{
    Agent, Cgroup, ManifestDir, SYNC_TIMEOUT, Topology,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{count_in_log, wait_for_count},
    pool::AddressPool,
    require_root,
};

/// Services, each with its own pool of backends.
const SERVICES: u8 = 200;
/// Backends per pool: sets range over 1..=POOL, across INLINE_BACKENDS (16).
const POOL: u8 = 40;
/// Rounds of changing every Service.
const BURSTS: usize = 40;

#[derive(Debug, Deserialize)]
struct ChurnReport {
    connects: u64,
    right: u64,
    wrong: u64,
    wrong_examples: Vec<String>,
    errors: std::collections::BTreeMap<String, u64>,
}

fn vip(i: u8) -> String {
    format!("10.96.100.{i}")
}

fn services() -> String {
    let docs: Vec<String> = (1..=SERVICES)
        .map(|i| service("default", &format!("churn-{i}"), Some(&vip(i)), &[SvcPort::tcp("http", 80, "http")]))
        .collect();
    multi(&docs.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Round `burst` of Service `i`'s backends: a window of the pool whose
/// size and position move every round (sizes 1..=POOL, so sets go back
/// and forth between inline and slots).
fn slices(burst: usize) -> String {
    let docs: Vec<String> = (1..=SERVICES)
        .map(|i| {
            let n = 1 + (burst * 7 + usize::from(i) * 13) % usize::from(POOL);
            let start = burst * 3 + usize::from(i);
            let endpoints: Vec<Endpoint> = (0..n)
                .map(|k| {
                    let j = 1 + ((start + k) % usize::from(POOL)) as u8;
                    Endpoint::ready(*AddressPool::addr(i, j).ip())
                })
                .collect();
            endpoint_slice(
                "default",
                &format!("churn-{i}"),
                &format!("churn-{i}"),
                &[SlicePort::tcp("http", svc_tests::pool::POOL_PORT)],
                &endpoints,
            )
        })
        .collect();
    multi(&docs.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn connects_racing_burst_updates_of_hundreds_of_services_all_land_right() -> Result<()> {
    require_root();
    let cgroup = Cgroup::new()?;
    let topo = Topology::new(1)?;
    let _pool = AddressPool::new(topo.client())?;
    let manifests = ManifestDir::new()?;
    manifests.write("services.yaml", &services())?;
    manifests.write("slices.yaml", &slices(0))?;
    let mut agent = Agent::start(&manifests, &cgroup)?;
    agent.wait_in_sync(SYNC_TIMEOUT)?;

    let mut client = spawn_churn_client(&topo, &cgroup)?;
    let mut stdout = BufReader::new(client.stdout.take().context("client stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    assert_eq!(line.trim(), "started", "churn client: {line:?}");

    // Each burst replaces every Service's backends; the next one is
    // written once the agent has applied something since the last.
    let mut applied = count_in_log(&agent, "dataplane in sync");
    for burst in 1..=BURSTS {
        manifests.write("slices.yaml", &slices(burst))?;
        applied += 1;
        wait_for_count(&mut agent, "dataplane in sync", applied, Duration::from_secs(20))?;
        applied = count_in_log(&agent, "dataplane in sync");
    }
    drop(client.stdin.take());
    line.clear();
    stdout.read_line(&mut line)?;
    let status = client.wait()?;
    assert!(status.success(), "churn client failed: {status}");
    let report: ChurnReport = serde_json::from_str(&line).with_context(|| format!("churn report {line:?}"))?;
    eprintln!("{report:?}");

    assert!(report.connects >= 1000, "the clients barely ran, the race was not exercised: {report:?}");
    assert_eq!(report.wrong, 0, "connects answered by another Service's backend: {:?}", report.wrong_examples);
    assert!(report.errors.is_empty(), "refused or failed connects during the churn: {:?}", report.errors);
    assert_eq!(report.right, report.connects);
    let changed = count_in_log(&agent, "dataplane in sync");
    assert!(changed >= BURSTS, "only {changed} applies for {BURSTS} bursts");
    Ok(())
}

fn spawn_churn_client(topo: &Topology, cgroup: &Cgroup) -> Result<std::process::Child> {
    let mut args: Vec<String> = vec!["churn".into(), "--threads".into(), "4".into()];
    args.extend(["--cgroup".into(), cgroup.path().display().to_string()]);
    for i in 1..=SERVICES {
        args.extend(["--target".into(), format!("{}:80={}", vip(i), AddressPool::prefix(i))]);
    }
    let mut command: Command = topo.client().testkit(&args)?;
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn().context("spawn svc-testkit churn")?;
    // Keep stdin open (the client stops at EOF); flush nothing.
    child.stdin.as_mut().context("client stdin")?.flush()?;
    Ok(child)
}
