//! `--source kube` when the API server or the agent goes away: the
//! dataplane keeps serving the last state; a reconnecting agent relists and
//! removes what is gone only once that list is complete; an agent started
//! before the API server waits for it; a restarted agent reconciles.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use svc_tests::{
    Outcome, Proto, SYNC_TIMEOUT, UNREACHABLE, addr,
    apiserver::ApiServer,
    k8s::{Endpoint, SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{API_POLL, KubeEnv, assert_within_budget, count_in_log, wait_for_count},
    poll_outcome, poll_until,
    scenarios::set,
};

/// Service NAME on CLUSTER_IP:80 -> 8080 with one slice.
fn svc_with_slice(name: &str, cluster_ip: &str, endpoints: &[Endpoint]) -> String {
    multi(&[
        &service("default", name, Some(cluster_ip), &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("default", &format!("{name}-1"), name, &[SlicePort::tcp("http", 8080)], endpoints),
    ])
}

/// Sorted `namespace/name address backends` of the agent's frontends.
fn frontends(env: &mut KubeEnv) -> Result<Vec<String>> {
    let mut all: Vec<String> = env
        .agent()
        .frontends()?
        .into_iter()
        .map(|f| {
            let mut backends = f.backends;
            backends.sort();
            format!("{}/{} {} [{}]", f.namespace, f.name, f.address, backends.join(","))
        })
        .collect();
    all.sort();
    Ok(all)
}

/// One client run of the background prober.
#[derive(Debug)]
struct Probe {
    at: Instant,
    target: &'static str,
    out: Outcome,
}

/// The API server stops (the dataplane keeps serving the last state, and
/// the agent keeps retrying), then comes back on a store that holds only
/// some of the objects, as after restoring an older etcd backup: the agent
/// relists, and only then removes the Service that is gone and applies the
/// endpoints that changed; the Services still there never stop working.
#[test]
fn apiserver_outage_then_partial_store() -> Result<()> {
    let mut env = KubeEnv::new(3, &[Proto::Tcp(8080)])?;
    let (keep, gone, changed) = (addr("10.96.0.10:80"), addr("10.96.0.12:80"), addr("10.96.0.13:80"));
    env.api.apply_yaml(&svc_with_slice("keep", "10.96.0.10", &env.endpoints(&[1, 2])))?;
    env.api.apply_yaml(&svc_with_slice("gone", "10.96.0.12", &env.endpoints(&[3])))?;
    env.api.apply_yaml(&svc_with_slice("changed", "10.96.0.13", &env.endpoints(&[1])))?;
    env.start_agent()?;
    let out = env.tcp(keep, 40)?;
    assert_eq!(out.backends(), set(&["b1", "b2"]), "keep: {out}");
    assert_eq!(env.tcp(gone, 5)?.ok.get("b3:8080"), Some(&5), "gone");
    assert_eq!(env.tcp(changed, 5)?.ok.get("b1:8080"), Some(&5), "changed");

    // The store the server comes back with, prepared on a second server:
    // `keep` as it is, `changed` with other endpoints, no `gone`.
    let mut seed = ApiServer::new()?;
    seed.apply_yaml(&svc_with_slice("keep", "10.96.0.10", &env.endpoints(&[1, 2])))?;
    seed.apply_yaml(&svc_with_slice("changed", "10.96.0.13", &env.endpoints(&[2])))?;
    seed.stop()?;

    let listed_before = count_in_log(env.agent(), "listed Services");
    let slices_listed_before = count_in_log(env.agent(), "listed EndpointSlices");
    let stop = AtomicBool::new(false);
    let (agent, api, topo, cgroup) = env.parts();
    let (timeline, probes) = thread::scope(|s| {
        // Clients throughout: three connects to each Service per round.
        let prober = s.spawn(|| -> Result<Vec<Probe>> {
            let mut probes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (target, to) in [("keep", keep), ("gone", gone), ("changed", changed)] {
                    let at = Instant::now();
                    let out = topo.tcp(Some(cgroup), to, 3).with_context(|| format!("probe {target}"))?;
                    probes.push(Probe { at, target, out });
                }
            }
            Ok(probes)
        });
        let steps = (|| -> Result<(Instant, Instant, Instant)> {
            let stopped = Instant::now();
            api.stop()?;
            // The agent notices (its watches fail) and keeps retrying.
            agent.wait_for_log("watch failed, keeping the last state", Duration::from_secs(15))?;
            thread::sleep(Duration::from_secs(2));
            api.replace_store_with(seed)?;
            let starting = Instant::now();
            api.start(false)?;
            // Each kind relists on its own (independent backoffs).
            wait_for_count(agent, "listed Services", listed_before + 1, SYNC_TIMEOUT)
                .context("the agent did not relist Services after the API server came back")?;
            wait_for_count(agent, "listed EndpointSlices", slices_listed_before + 1, SYNC_TIMEOUT)
                .context("the agent did not relist EndpointSlices after the API server came back")?;
            let relisted = Instant::now();
            Ok((stopped, starting, relisted))
        })();
        // Let the prober see the state after the relist too.
        if steps.is_ok() {
            // Only a wait: the probes' record is what the test judges.
            if let Err(e) =
                poll_until(SYNC_TIMEOUT, || Ok(topo.tcp(Some(cgroup), gone, 1)?.all_failed_with(UNREACHABLE)))
            {
                eprintln!("the removed Service still answered after the relist (see the probes): {e:#}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let probes = prober.join().expect("prober thread panicked");
        (steps, probes)
    });
    let (stopped, starting, relisted) = timeline?;
    let probes = probes?;

    // `keep` never failed, from before the outage until after the relist.
    let keep_probes: Vec<&Probe> = probes.iter().filter(|p| p.target == "keep").collect();
    let during_outage = keep_probes.iter().filter(|p| p.at > stopped && p.at < starting).count();
    assert!(during_outage >= 5, "only {during_outage} probes while the API server was down: the check has no teeth");
    for p in &keep_probes {
        assert_eq!(p.out.total_ok(), 3, "keep failed {:?} after the API server stopped: {}", p.at - stopped, p.out);
    }
    // `gone` and `changed` kept their last state while the server was down
    // and until it was started again (nothing to list before that).
    for p in probes.iter().filter(|p| p.at < starting) {
        let expected = match p.target {
            "gone" => "b3:8080",
            "changed" => "b1:8080",
            _ => continue,
        };
        assert_eq!(p.out.ok.get(expected), Some(&3), "{} {:?} after the stop: {}", p.target, p.at - stopped, p.out);
    }
    // The agent removed `gone` only in a batch after the relist completed.
    let log = env.agent().log_since_start();
    let lines: Vec<&str> = log.lines().collect();
    let relist_line = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("listed Services"))
        .nth(listed_before)
        .map(|(i, _)| i)
        .context("no relist in the log")?;
    let removal_line = lines
        .iter()
        .position(|l| l.contains("dataplane in sync") && !l.contains("removed=0"))
        .context("the agent never logged a removal")?;
    assert!(removal_line > relist_line, "removal logged before the relist completed:\n{log}");
    eprintln!(
        "outage: API server down {:?}; relist {:?} after start.sh began",
        starting - stopped,
        relisted.saturating_duration_since(starting)
    );

    // After the relist: `gone` is not translated, `changed` uses its new
    // endpoint, `keep` is unchanged.
    let out = env.tcp(gone, 10)?;
    assert!(out.all_failed_with(UNREACHABLE), "gone after the relist: {out}");
    let out = env.tcp(changed, 10)?;
    assert_eq!(out.ok.get("b2:8080"), Some(&10), "changed after the relist: {out}");
    let out = env.tcp(keep, 40)?;
    assert_eq!(out.backends(), set(&["b1", "b2"]), "keep after the relist: {out}");
    assert_eq!(
        frontends(&mut env)?,
        vec![
            "default/changed 10.96.0.13:80 [10.244.2.2:8080]".to_owned(),
            "default/keep 10.96.0.10:80 [10.244.1.2:8080,10.244.2.2:8080]".to_owned(),
            "default/kubernetes 10.96.0.1:443 []".to_owned(),
        ],
        "status frontends after the relist"
    );

    // The watches are live again: a new Service follows within the budget.
    let fresh = addr("10.96.0.14:80");
    let start = Instant::now();
    env.api.apply_yaml(&svc_with_slice("fresh", "10.96.0.14", &env.endpoints(&[3])))?;
    poll_outcome(API_POLL, || env.tcp(fresh, 3), |o| o.ok.get("b3:8080") == Some(&3))?;
    assert_within_budget("Service created after the reconnect", start.elapsed());
    // Readiness never dropped: the dataplane served throughout.
    assert_eq!(env.readyz()?, 200, "/readyz after the outage");
    Ok(())
}

/// The agent starts while the API server is down: it does not exit or
/// program anything, is not ready, and syncs once the server is up.
#[test]
fn agent_started_before_the_apiserver() -> Result<()> {
    let mut env = KubeEnv::new(2, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&svc_with_slice("web", "10.96.0.10", &env.endpoints(&[1, 2])))?;
    env.api.stop()?;
    let web = addr("10.96.0.10:80");

    env.spawn_agent()?;
    env.agent().wait_for_log("watch failed, keeping the last state", Duration::from_secs(15))?;
    thread::sleep(Duration::from_secs(2));
    assert!(env.agent().is_running(), "the agent exited while the API server was down");
    assert_eq!(env.readyz()?, 503, "/readyz before the first sync");
    assert_eq!(count_in_log(env.agent(), "dataplane in sync"), 0, "programmed without a source");
    let out = env.tcp(web, 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "nothing may be programmed yet: {out}");

    let starting = Instant::now();
    env.api.start(false)?;
    env.agent().wait_in_sync(SYNC_TIMEOUT)?;
    eprintln!("in sync {:?} after start.sh began", starting.elapsed());
    assert_eq!(env.readyz()?, 200, "/readyz after the first sync");
    let out = env.tcp(web, 60)?;
    assert_eq!(out.total_ok(), 60, "{out}");
    assert_eq!(out.backends(), set(&["b1", "b2"]), "{out}");

    let other = addr("10.96.0.11:80");
    let start = Instant::now();
    env.api.apply_yaml(&svc_with_slice("other", "10.96.0.11", &env.endpoints(&[2])))?;
    poll_outcome(API_POLL, || env.tcp(other, 3), |o| o.ok.get("b2:8080") == Some(&3))?;
    assert_within_budget("Service created after the late start", start.elapsed());
    Ok(())
}

// The restart assertions of restart.rs with API objects.
svc_tests::family_tests! { svc_tests::apiserver::kube_source;
    svc_tests::scenarios::restart::sigkill_keeps_serving_and_restart_reconciles
        => sigkill_keeps_serving_and_restart_reconciles,
}

/// "dataplane in sync" means the listed objects are programmed: each
/// kind's listing reaches the controller before the source announces that
/// kind as listed. (A large EndpointSlice list used to arrive just after
/// the announcement: the sync programmed every Service without endpoints,
/// and the endpoints followed in a second batch; at a restart, pinned
/// backends were removed and put back.)
#[test]
fn the_first_sync_carries_every_listed_slice() -> Result<()> {
    // The size at which the late listing showed every time (the bench's
    // 1k x 10; the endpoints are only looked at, never dialled).
    const SERVICES: usize = 1000;
    let mut env = KubeEnv::new(1, &[Proto::Tcp(8080)])?;
    let endpoints: Vec<Endpoint> = (1..=10).map(|i| Endpoint::ready(std::net::Ipv4Addr::new(10, 250, 0, i))).collect();
    for i in 0..SERVICES {
        let ip = format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250);
        env.api.apply_yaml(&svc_with_slice(&format!("s{i}"), &ip, &endpoints))?;
    }
    env.start_agent()?;
    // A listing that arrives after the sync shows as a later batch that
    // changes Services (bounded wait: after the sync nothing changes).
    let second = wait_for_count(env.agent(), "dataplane in sync", 2, Duration::from_secs(3));
    let log = env.agent().log_since_start();
    let late: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dataplane in sync"))
        .skip(1)
        .filter(|l| !l.contains(" changed=0 "))
        .collect();
    assert!(late.is_empty(), "objects programmed after the sync ({second:?}): {late:#?}");
    let without: Vec<String> =
        frontends(&mut env)?.into_iter().filter(|f| f.starts_with("default/s") && f.ends_with("[]")).collect();
    assert!(without.is_empty(), "Services without their endpoint: {without:?}");
    Ok(())
}
