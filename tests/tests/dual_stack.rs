//! IPv6 and dual-stack Services through the manifest source (scenarios in
//! `svc_tests::scenarios::dual_stack`, also run through the Kubernetes
//! source in `kube_semantics.rs`).

use anyhow::Result;
use svc_tests::{scenarios::dual_stack as d, source::manifests};

#[test]
fn ipv6_cluster_ip() -> Result<()> {
    d::ipv6_cluster_ip(manifests()?)
}

#[test]
fn dual_stack_families_use_their_own_slices() -> Result<()> {
    d::dual_stack_families_use_their_own_slices(manifests()?)
}

#[test]
fn ipv6_node_port_external_and_load_balancer_ips() -> Result<()> {
    d::ipv6_node_port_external_and_load_balancer_ips(manifests()?)
}

#[test]
fn ipv6_affinity() -> Result<()> {
    d::ipv6_affinity(manifests()?)
}

#[test]
fn real_clients_reach_ipv6_services() -> Result<()> {
    d::real_clients_reach_ipv6_services(manifests()?)
}

#[test]
fn ipv6_udp_socket_to_removed_backend_is_reset() -> Result<()> {
    d::ipv6_udp_socket_to_removed_backend_is_reset(manifests()?)
}
