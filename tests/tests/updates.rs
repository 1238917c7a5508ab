//! Changes to the manifests reach the dataplane within 1 s, and refusing
//! (the scenarios of `svc_tests::scenarios::updates`, also run through the
//! Kubernetes source), from `AF_INET` and (v4-mapped) `AF_INET6` sockets
//! and with IPv6 Services; and cgroup scoping.

use anyhow::Result;
use svc_tests::{
    Proto, TestEnv, UNREACHABLE, addr,
    k8s::{SlicePort, SvcPort, endpoint_slice, multi, service},
};

svc_tests::family_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::updates::endpoint_changes_apply_within_1s => endpoint_changes_apply_within_1s,
    svc_tests::scenarios::updates::service_changes_apply_within_1s => service_changes_apply_within_1s,
    svc_tests::scenarios::updates::no_ready_endpoints_refuse => no_ready_endpoints_refuse,
}

#[test]
fn outside_cgroup_not_translated() -> Result<()> {
    let mut env = TestEnv::new(1, &[Proto::Tcp(8080), Proto::Udp(8080)])?;
    let svc = service(
        "default",
        "web",
        Some("10.96.0.10"),
        &[SvcPort::tcp("http", 80, "8080"), SvcPort::udp("udp", 80, "8080")],
    );
    let slice = endpoint_slice(
        "default",
        "web-1",
        "web",
        &[SlicePort::tcp("http", 8080), SlicePort::udp("udp", 8080)],
        &env.endpoints(&[1]),
    );
    env.manifests.write("web.yaml", &multi(&[&svc, &slice]))?;
    env.start_agent()?;
    let vip = addr("10.96.0.10:80");

    // Control: inside the cgroup both protocols are translated.
    let inside = env.tcp(vip, 10)?;
    assert_eq!(inside.ok.get("b1:8080"), Some(&10), "{inside}");
    let inside = env.udp(vip, 10, false)?;
    assert_eq!(inside.ok.get("b1:8080"), Some(&10), "{inside}");

    // Same namespace, outside the cgroup: untouched.
    let outside = env.topo.tcp(None, vip, 10)?;
    assert!(outside.all_failed_with(UNREACHABLE), "{outside}");
    let outside = env.topo.udp(None, vip, 10, false)?;
    assert!(outside.all_failed_with(UNREACHABLE), "{outside}");
    Ok(())
}
