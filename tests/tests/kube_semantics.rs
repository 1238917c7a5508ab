//! The Service semantics of issue 4 through the Kubernetes source: the same
//! scenarios as the manifest-source tests (`affinity.rs`, `conditions.rs`,
//! `nodeport.rs`, `topology.rs`, `hairpin.rs`, `conformance.rs`), with the
//! objects created through a real kube-apiserver (one per test).
//!
//! Left out, because the v1.20 API server drops or rejects the field they
//! depend on (they stay covered through the manifest source):
//! internalTrafficPolicy (1.22+), trafficDistribution (1.30+),
//! `status.loadBalancer.ingress[].ipMode` (1.29+), and mixed TCP/UDP ports
//! on a LoadBalancer Service (1.26+).

use anyhow::Result;
use svc_tests::{
    Dial,
    apiserver::kube_source,
    scenarios::{
        affinity, conditions,
        conformance::{self as c, TypeChange, Via},
        dual_stack, hairpin, nodeport, topology,
    },
};

#[test]
fn affinity_each_client_keeps_its_own_backend() -> Result<()> {
    affinity::each_client_keeps_its_own_backend(kube_source()?, Dial::Inet)
}

#[test]
fn affinity_timeout_expires_without_new_connections() -> Result<()> {
    affinity::timeout_expires_without_new_connections(kube_source()?)
}

#[test]
fn affinity_pinned_backend_leaving_repicks_at_once() -> Result<()> {
    affinity::pinned_backend_leaving_repicks_at_once(kube_source()?, Dial::Inet)
}

#[test]
fn affinity_switching_applies_to_new_connections() -> Result<()> {
    affinity::switching_affinity_applies_to_new_connections(kube_source()?)
}

#[test]
fn conditions_ready_or_unset_endpoints_are_used() -> Result<()> {
    conditions::ready_or_unset_endpoints_are_used(kube_source()?)
}

#[test]
fn conditions_terminating_fallback_and_refusal() -> Result<()> {
    conditions::terminating_fallback_and_refusal(kube_source()?)
}

#[test]
fn nodeport_on_node_addresses_and_host_loopback() -> Result<()> {
    nodeport::node_port_on_node_addresses_and_host_loopback(kube_source()?, Dial::Inet)
}

#[test]
fn nodeport_follows_node_address_changes() -> Result<()> {
    nodeport::node_port_follows_node_address_changes(kube_source()?)
}

#[test]
fn external_and_load_balancer_ips_reach_backends() -> Result<()> {
    nodeport::external_and_load_balancer_ips_reach_backends(kube_source()?, Dial::Inet)
}

#[test]
fn topology_hints_for_the_node_zone_are_preferred() -> Result<()> {
    topology::hints_for_this_zone_are_preferred(kube_source()?)
}

#[test]
fn zone_flag_wins_over_the_node_label() -> Result<()> {
    topology::zone_flag_wins_over_the_node_label(kube_source()?)
}

#[test]
fn hairpin_backend_reaches_itself_through_its_service() -> Result<()> {
    hairpin::backend_reaches_itself_through_its_service(kube_source()?)
}

#[test]
fn conformance_session_affinity_node_port() -> Result<()> {
    c::session_affinity_works(kube_source()?, Via::NodePort)
}

#[test]
fn conformance_service_proxy_name_label() -> Result<()> {
    c::implements_label(kube_source()?, "service.kubernetes.io/service-proxy-name", "foo-bar")
}

#[test]
fn conformance_headless_label() -> Result<()> {
    c::implements_label(kube_source()?, "service.kubernetes.io/headless", "")
}

#[test]
fn conformance_type_external_name_to_cluster_ip() -> Result<()> {
    c::changes_service_type(kube_source()?, TypeChange::ExternalNameToClusterIp)
}

#[test]
fn conformance_type_node_port_to_external_name() -> Result<()> {
    c::changes_service_type(kube_source()?, TypeChange::NodePortToExternalName)
}

// IPv6 and dual-stack (the API server runs with IPv6DualStack and a
// service range per family).

#[test]
fn dual_stack_ipv6_cluster_ip() -> Result<()> {
    dual_stack::ipv6_cluster_ip(kube_source()?)
}

#[test]
fn dual_stack_families_use_their_own_slices() -> Result<()> {
    dual_stack::dual_stack_families_use_their_own_slices(kube_source()?)
}

#[test]
fn dual_stack_ipv6_node_port_external_and_load_balancer_ips() -> Result<()> {
    dual_stack::ipv6_node_port_external_and_load_balancer_ips(kube_source()?)
}

#[test]
fn dual_stack_ipv6_affinity() -> Result<()> {
    dual_stack::ipv6_affinity(kube_source()?)
}

#[test]
fn dual_stack_real_clients_reach_ipv6_services() -> Result<()> {
    dual_stack::real_clients_reach_ipv6_services(kube_source()?)
}

#[test]
fn dual_stack_ipv6_udp_socket_to_removed_backend_is_reset() -> Result<()> {
    dual_stack::ipv6_udp_socket_to_removed_backend_is_reset(kube_source()?)
}
