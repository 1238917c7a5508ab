//! North-south through the manifest source: clients outside the node
//! (scenarios in `svc_tests::scenarios::north_south`).

use anyhow::Result;
use svc_tests::{scenarios::north_south, source::manifests};

#[test]
fn node_port_from_outside_reaches_pods_on_both_nodes() -> Result<()> {
    north_south::node_port_from_outside_reaches_pods_on_both_nodes(manifests()?)
}

#[test]
fn real_clients_from_outside() -> Result<()> {
    north_south::real_clients_from_outside(manifests()?)
}

#[test]
fn external_traffic_policy_local_from_outside() -> Result<()> {
    north_south::external_traffic_policy_local_from_outside(manifests()?)
}

#[test]
fn load_balancer_and_external_ips_from_outside() -> Result<()> {
    north_south::load_balancer_and_external_ips_from_outside(manifests()?)
}

#[test]
fn flows_survive_an_agent_restart() -> Result<()> {
    north_south::flows_survive_an_agent_restart(manifests()?)
}

#[test]
fn health_check_node_port() -> Result<()> {
    north_south::health_check_node_port(manifests()?)
}

#[test]
fn affinity_for_an_outside_client() -> Result<()> {
    north_south::affinity_for_an_outside_client(manifests()?)
}

#[test]
fn udp_flow_to_a_removed_backend_moves() -> Result<()> {
    north_south::udp_flow_to_a_removed_backend_moves(manifests()?)
}

#[test]
fn udp_flow_survives_an_agent_restart() -> Result<()> {
    north_south::udp_flow_survives_an_agent_restart(manifests()?)
}

#[test]
fn closed_flows_leave_the_table() -> Result<()> {
    north_south::closed_flows_leave_the_table(manifests()?)
}

#[test]
fn refuses_devices_it_cannot_serve() -> Result<()> {
    north_south::refuses_devices_it_cannot_serve(manifests()?)
}

#[test]
fn load_balancer_source_ranges() -> Result<()> {
    north_south::load_balancer_source_ranges(manifests()?)
}

#[test]
fn path_mtu_discovery_through_a_smaller_pod_link() -> Result<()> {
    north_south::path_mtu_discovery_through_a_smaller_pod_link(manifests()?)
}

#[test]
fn tcp_transfer_survives_an_agent_restart() -> Result<()> {
    north_south::tcp_transfer_survives_an_agent_restart(manifests()?)
}

#[test]
fn path_mtu_discovery_to_a_pod_on_another_node() -> Result<()> {
    north_south::path_mtu_discovery_to_a_pod_on_another_node(manifests()?)
}

#[test]
fn path_mtu_discovery_for_replies_to_a_far_client() -> Result<()> {
    north_south::path_mtu_discovery_for_replies_to_a_far_client(manifests()?)
}

#[test]
fn udp_port_unreachable_reaches_the_client() -> Result<()> {
    north_south::udp_port_unreachable_reaches_the_client(manifests()?)
}

#[test]
fn outside_connects_racing_node_port_churn() -> Result<()> {
    north_south::outside_connects_racing_node_port_churn(manifests()?)
}
