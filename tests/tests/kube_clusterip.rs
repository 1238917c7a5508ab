//! `--source kube`: ClusterIP translation of objects read from a real API
//! server (the manifest-source assertions of clusterip.rs, through the API),
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

#[test]
fn api_objects_are_translated() -> Result<()> {
    // Every backend serves every port, so a wrong mapping is answered and
    // shows in the reply.
    let ports = [Proto::Tcp(8080), Proto::Tcp(9090), Proto::Tcp(5353), Proto::Udp(5353)];
    let mut env = KubeEnv::new(3, &ports)?;
    let all = env.endpoints(&[1, 2, 3]);
    env.api.apply_yaml(&multi(&[
        // Named targetPort, resolved through the slice's port names.
        &service("default", "web", Some("10.96.0.10"), &[SvcPort::tcp("http", 80, "http")]),
        &endpoint_slice("default", "web-1", "web", &[SlicePort::tcp("http", 8080)], &all),
        &service(
            "default",
            "multi",
            Some("10.96.0.21"),
            &[SvcPort::tcp("http", 80, "http"), SvcPort::tcp("admin", 81, "admin")],
        ),
        &endpoint_slice(
            "default",
            "multi-1",
            "multi",
            &[SlicePort::tcp("admin", 9090), SlicePort::tcp("http", 8080)],
            &env.endpoints(&[1, 2]),
        ),
        // TCP and UDP on the same port, each with its own backends.
        &service(
            "kube-system",
            "dns",
            Some("10.96.0.53"),
            &[SvcPort::tcp("dns-tcp", 53, "5353"), SvcPort::udp("dns", 53, "5353")],
        ),
        &endpoint_slice("kube-system", "dns-tcp", "dns", &[SlicePort::tcp("dns-tcp", 5353)], &env.endpoints(&[1, 2])),
        &endpoint_slice("kube-system", "dns-udp", "dns", &[SlicePort::udp("dns", 5353)], &env.endpoints(&[3])),
        // No clusterIP: the API server allocates one.
        &service("apps", "auto", None, &[SvcPort::tcp("http", 80, "8080")]),
        &endpoint_slice("apps", "auto-1", "auto", &[SlicePort::tcp("http", 8080)], &env.endpoints(&[2])),
    ]))?;
    env.start_agent()?;

    // TCP spreads uniformly; getpeername() shows the ClusterIP.
    let vip = addr("10.96.0.10:80");
    let n = 300;
    let out = env.tcp(vip, n)?;
    out.assert_fair_share(n, &["b1", "b2", "b3"]);
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "http -> 8080: {out}");
    assert_eq!(out.peers.get("10.96.0.10:80"), Some(&n), "{out}");

    // Multi-port: each port through its own name.
    let out = env.tcp(addr("10.96.0.21:80"), 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([8080]), "multi:80 -> http=8080: {out}");
    let out = env.tcp(addr("10.96.0.21:81"), 30)?;
    assert_eq!(out.total_ok(), 30, "{out}");
    assert_eq!(out.reply_ports(), BTreeSet::from([9090]), "multi:81 -> admin=9090: {out}");
    assert!(out.backends().is_subset(&set(&["b1", "b2"])), "{out}");

    // Same port, both protocols, own backends; UDP replies come from the
    // ClusterIP (unconnected: recvfrom; connected: getpeername).
    let dns = addr("10.96.0.53:53");
    let tcp = env.tcp(dns, 100)?;
    assert_eq!(tcp.total_ok(), 100, "{tcp}");
    assert_eq!(tcp.backends(), set(&["b1", "b2"]), "{tcp}");
    let udp = env.udp(dns, 30, false)?;
    assert_eq!(udp.ok.get("b3:5353"), Some(&30), "{udp}");
    assert_eq!(udp.sources.get("10.96.0.53:53"), Some(&30), "{udp}");
    let udp = env.udp(dns, 10, true)?;
    assert_eq!(udp.ok.get("b3:5353"), Some(&10), "{udp}");
    assert_eq!(udp.peers.get("10.96.0.53:53"), Some(&10), "{udp}");

    // The address the API server allocated is the one programmed.
    let auto = env.api.get("v1", "Service", Some("apps"), "auto")?;
    let ip = auto["spec"]["clusterIP"].as_str().with_context(|| format!("no clusterIP allocated: {auto}"))?;
    let auto_vip = addr(&format!("{ip}:80"));
    let out = env.tcp(auto_vip, 10)?;
    assert_eq!(out.ok.get("b2:8080"), Some(&10), "allocated {auto_vip}: {out}");
    assert_eq!(out.peers.get(&auto_vip.to_string()), Some(&10), "{out}");

    // Exactly these frontends (plus the server's own `kubernetes` Service,
    // which has no endpoints without a controller-manager: refused).
    let mut frontends: Vec<String> = env
        .agent()
        .frontends()?
        .iter()
        .map(|f| format!("{}/{} {} {} {}", f.namespace, f.name, f.address, f.protocol, f.backends.len()))
        .collect();
    frontends.sort();
    let mut expected = vec![
        "default/kubernetes 10.96.0.1:443 TCP 0".to_owned(),
        "default/web 10.96.0.10:80 TCP 3".to_owned(),
        "default/multi 10.96.0.21:80 TCP 2".to_owned(),
        "default/multi 10.96.0.21:81 TCP 2".to_owned(),
        "kube-system/dns 10.96.0.53:53 TCP 2".to_owned(),
        "kube-system/dns 10.96.0.53:53 UDP 1".to_owned(),
        format!("apps/auto {auto_vip} TCP 1"),
    ];
    expected.sort();
    assert_eq!(frontends, expected, "status frontends");

    // Outside the agent's cgroup nothing is translated.
    let out = env.topo.tcp(None, vip, 10)?;
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
