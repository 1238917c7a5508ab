//! NodePort, external IPs and load-balancer IPs through the manifest
//! source (scenarios in `svc_tests::scenarios::nodeport`).

use anyhow::Result;
use svc_tests::{scenarios::nodeport, source::manifests};

#[test]
fn node_port_on_node_addresses_and_host_loopback() -> Result<()> {
    nodeport::node_port_on_node_addresses_and_host_loopback(manifests()?)
}

#[test]
fn node_port_follows_node_address_changes() -> Result<()> {
    nodeport::node_port_follows_node_address_changes(manifests()?)
}

#[test]
fn external_and_load_balancer_ips_reach_backends() -> Result<()> {
    nodeport::external_and_load_balancer_ips_reach_backends(manifests()?)
}

#[test]
fn proxy_mode_ingress_ips_are_not_translated() -> Result<()> {
    nodeport::proxy_mode_ingress_ips_are_not_translated(manifests()?)
}

#[test]
fn node_port_addresses_exclude_dummies_and_follow_cidrs() -> Result<()> {
    nodeport::node_port_addresses_exclude_dummies_and_follow_cidrs(manifests()?)
}
