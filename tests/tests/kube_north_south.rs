//! North-south through the Kubernetes source: the scenarios of
//! `north_south.rs` with the objects created through a real kube-apiserver
//! (v1.20: it validates `healthCheckNodePort` and the node port range).

use anyhow::Result;
use svc_tests::{apiserver::kube_source, scenarios::north_south};

#[test]
fn node_port_from_outside_reaches_pods_on_both_nodes() -> Result<()> {
    north_south::node_port_from_outside_reaches_pods_on_both_nodes(kube_source()?)
}

#[test]
fn external_traffic_policy_local_from_outside() -> Result<()> {
    north_south::external_traffic_policy_local_from_outside(kube_source()?)
}

#[test]
fn load_balancer_and_external_ips_from_outside() -> Result<()> {
    north_south::load_balancer_and_external_ips_from_outside(kube_source()?)
}

#[test]
fn health_check_node_port() -> Result<()> {
    north_south::health_check_node_port(kube_source()?)
}

#[test]
fn affinity_for_an_outside_client() -> Result<()> {
    north_south::affinity_for_an_outside_client(kube_source()?)
}

#[test]
fn udp_flow_to_a_removed_backend_moves() -> Result<()> {
    north_south::udp_flow_to_a_removed_backend_moves(kube_source()?)
}

#[test]
fn load_balancer_source_ranges() -> Result<()> {
    north_south::load_balancer_source_ranges(kube_source()?)
}
