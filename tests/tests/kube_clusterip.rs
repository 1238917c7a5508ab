//! `--source kube`: ClusterIP translation of objects read from a real API
//! server (the scenarios of clusterip.rs, through the API, from `AF_INET`
//! and v4-mapped `AF_INET6` sockets), the address the server allocates,
//! and what kube-proxy's server-side filters keep out of the dataplane.

use std::{collections::BTreeSet, time::Instant};

use anyhow::{Context as _, Result};
use svc_tests::{
    Proto, UNREACHABLE, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
    kube_env::{API_POLL, KubeEnv, assert_within_budget, with_labels},
    poll_outcome,
    scenarios::set,
};

svc_tests::family_tests! { svc_tests::apiserver::kube_source;
    svc_tests::scenarios::clusterip::tcp_spreads_and_shows_the_cluster_ip => tcp_spreads_and_shows_the_cluster_ip,
    svc_tests::scenarios::clusterip::udp_replies_come_from_the_cluster_ip => udp_replies_come_from_the_cluster_ip,
    svc_tests::scenarios::clusterip::tcp_and_udp_on_one_port_use_their_own_backends
        => tcp_and_udp_on_one_port_use_their_own_backends,
    svc_tests::scenarios::clusterip::named_target_ports => named_target_ports,
    svc_tests::scenarios::clusterip::headless_and_external_name_are_not_translated
        => headless_and_external_name_are_not_translated,
}

/// The address the API server allocates is the one programmed, beside the
/// server's own `kubernetes` Service (no endpoints without a
/// controller-manager: refused); outside the agent's cgroup nothing is
/// translated.
#[test]
fn allocated_cluster_ip_is_programmed() -> Result<()> {
    let mut env = KubeEnv::new(2, &[Proto::Tcp(8080)])?;
    env.api.apply_yaml(&multi(&[
        &service("apps", "auto", None, &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("apps", "auto-1", "auto", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[2])),
    ]))?;
    env.start_agent()?;

    let auto = env.api.get("v1", "Service", Some("apps"), "auto")?;
    let ip = auto["spec"]["clusterIP"].as_str().with_context(|| format!("no clusterIP allocated: {auto}"))?;
    let auto_vip = addr(&format!("{ip}:80"));
    let out = env.tcp(auto_vip, 10)?;
    assert_eq!(out.ok.get("b2:8080"), Some(&10), "allocated {auto_vip}: {out}");
    assert_eq!(out.peers.get(&auto_vip.to_string()), Some(&10), "{out}");

    let mut frontends: Vec<String> = env
        .agent()
        .frontends()?
        .iter()
        .map(|f| format!("{}/{} {} {} {}", f.namespace, f.name, f.address, f.protocol, f.backends.len()))
        .collect();
    frontends.sort();
    let mut expected = vec!["default/kubernetes 10.96.0.1:443 TCP 0".to_owned(), format!("apps/auto {auto_vip} TCP 1")];
    expected.sort();
    assert_eq!(frontends, expected, "status frontends");

    let out = env.topo.tcp(None, auto_vip, 10)?;
    assert!(out.all_failed_with(UNREACHABLE), "outside the cgroup: {out}");
    Ok(())
}

/// Headless and ExternalName Services, Services owned by another proxy and
/// slices of headless Services: none is programmed. The label filters work
/// server-side (kube-proxy's selector), so a label added to a programmed
/// object makes the server send a deletion, and removing it brings it back.
#[test]
fn filtered_objects_are_not_translated() -> Result<()> {
    let mut env = KubeEnv::new(2, &[Proto::Tcp(8080)])?;
    let one = env.endpoints(&[1]);
    let web_svc = service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "8080")]);
    let web_slice = endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[2]));
    let other_svc = with_labels(
        &service("default", "other", Some("10.96.0.30"), &[SvcPort::tcp("http", 80, "8080")]),
        &[("service.kubernetes.io/service-proxy-name", "some-other-proxy")],
    );
    env.api.apply_yaml(&multi(&[
        &web_svc,
        &web_slice,
        &service("default", "headless", Some("None"), &[SvcPort::tcp("http", 80, "8080")]),
        // The EndpointSlice controller labels a headless Service's slices.
        &with_labels(
            &endpoint_slice("default", "headless-1", "headless", &[SlicePort::tcp("http", 8080)], &one),
            &[("service.kubernetes.io/headless", "")],
        ),
        &other_svc,
        &endpoint_slice("default", "other-1", "other", &[SlicePort::tcp("http", 8080)], &one),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: external\n  namespace: default\nspec:\n  type: ExternalName\n  externalName: db.example.com\n",
    ]))?;
    env.start_agent()?;

    let names: BTreeSet<String> =
        env.agent().frontends()?.into_iter().map(|f| format!("{}/{}", f.namespace, f.name)).collect();
    assert_eq!(names, set(&["default/kubernetes", "default/web"]), "frontends in status");
    let web = addr("10.96.0.10:80");
    let out = env.tcp(web, 5)?;
    assert_eq!(out.ok.get("b2:8080"), Some(&5), "control: web is translated: {out}");
    let out = env.tcp(addr("10.96.0.30:80"), 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "Service of another proxy: {out}");

    // web moves to another proxy: the label takes it out of the watch.
    let start = Instant::now();
    env.api.apply_yaml(&with_labels(&web_svc, &[("service.kubernetes.io/service-proxy-name", "some-other-proxy")]))?;
    poll_outcome(API_POLL, || env.tcp(web, 3), |o| o.all_failed_with(UNREACHABLE))?;
    assert_within_budget("proxy-name label added", start.elapsed());
    // ...and comes back without it.
    let start = Instant::now();
    env.api.apply_yaml(&web_svc)?;
    poll_outcome(API_POLL, || env.tcp(web, 3), |o| o.total_ok() == 3)?;
    assert_within_budget("proxy-name label removed", start.elapsed());

    // A slice labeled headless is filtered the same way: web loses its
    // only endpoints (refused), then gets them back.
    let start = Instant::now();
    env.api.apply_yaml(&with_labels(&web_slice, &[("service.kubernetes.io/headless", "")]))?;
    poll_outcome(API_POLL, || env.tcp(web, 3), |o| o.all_failed_with(&["ECONNREFUSED"]))?;
    assert_within_budget("headless label on the slice", start.elapsed());
    let start = Instant::now();
    env.api.apply_yaml(&web_slice)?;
    poll_outcome(API_POLL, || env.tcp(web, 3), |o| o.ok.get("b2:8080") == Some(&3))?;
    assert_within_budget("headless label removed from the slice", start.elapsed());

    // The other proxy's Service never showed up.
    let out = env.tcp(addr("10.96.0.30:80"), 5)?;
    assert!(out.all_failed_with(UNREACHABLE), "Service of another proxy: {out}");
    Ok(())
}
