//! NodePort, external IPs and load-balancer IPs through the manifest
//! source (scenarios in `svc_tests::scenarios::nodeport`); reaching them
//! from `AF_INET` and (v4-mapped) `AF_INET6` sockets.

use anyhow::Result;
use svc_tests::{scenarios::nodeport, source::manifests};

svc_tests::dial_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::nodeport::node_port_on_node_addresses_and_host_loopback
        => node_port_on_node_addresses_and_host_loopback,
    svc_tests::scenarios::nodeport::external_and_load_balancer_ips_reach_backends
        => external_and_load_balancer_ips_reach_backends,
}

#[test]
fn node_port_follows_node_address_changes() -> Result<()> {
    nodeport::node_port_follows_node_address_changes(manifests()?)
}

#[test]
fn proxy_mode_ingress_ips_are_not_translated() -> Result<()> {
    nodeport::proxy_mode_ingress_ips_are_not_translated(manifests()?)
}

#[test]
fn node_port_addresses_exclude_dummies_and_follow_cidrs() -> Result<()> {
    nodeport::node_port_addresses_exclude_dummies_and_follow_cidrs(manifests()?)
}
