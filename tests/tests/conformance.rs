//! The Kubernetes e2e Service cases (test/e2e/network/service.go and
//! conntrack.go) that apply to a socket-level dataplane, replayed through
//! the manifest source. Test names follow the upstream names; the README's
//! conformance table maps each upstream test to its test here, or says why
//! it does not apply. The steps live in `svc_tests::scenarios::conformance`
//! (also run through the Kubernetes source).

use anyhow::Result;
use svc_tests::{
    scenarios::conformance::{self as c, ItpCase, TypeChange, UdpCycle, Via},
    source::manifests,
};

#[test]
fn should_serve_a_basic_endpoint_from_pods() -> Result<()> {
    c::serves_a_basic_endpoint_from_pods(manifests()?)
}

#[test]
fn should_serve_multiport_endpoints_from_pods() -> Result<()> {
    c::serves_multiport_endpoints_from_pods(manifests()?)
}

#[test]
fn should_be_updated_after_adding_or_deleting_ports() -> Result<()> {
    c::updated_after_adding_or_deleting_ports(manifests()?)
}

#[test]
fn should_serve_endpoints_on_same_port_and_different_protocols() -> Result<()> {
    c::serves_endpoints_on_same_port_and_different_protocols(manifests()?)
}

#[test]
fn should_serve_endpoints_on_same_port_and_different_protocol_for_internal_traffic_on_type_load_balancer() -> Result<()>
{
    c::serves_same_port_different_protocols_on_load_balancer(manifests()?)
}

#[test]
fn should_preserve_source_pod_ip_for_traffic_thru_service_cluster_ip() -> Result<()> {
    c::preserves_source_pod_ip(manifests()?)
}

#[test]
fn should_allow_pods_to_hairpin_back_to_themselves_through_services() -> Result<()> {
    c::allows_pods_to_hairpin_back_to_themselves(manifests()?)
}

#[test]
fn should_be_able_to_up_and_down_services() -> Result<()> {
    c::up_and_down_services(manifests()?)
}

#[test]
fn should_work_after_the_service_has_been_recreated() -> Result<()> {
    c::works_after_the_service_has_been_recreated(manifests()?)
}

#[test]
fn should_work_after_restarting_kube_proxy() -> Result<()> {
    c::works_after_restarting_the_agent(manifests()?)
}

#[test]
fn should_be_able_to_create_a_functioning_node_port_service() -> Result<()> {
    c::creates_a_functioning_node_port_service(manifests()?)
}

#[test]
fn should_be_possible_to_connect_to_a_service_via_external_ip_when_the_external_ip_is_not_assigned_to_a_node()
-> Result<()> {
    c::connects_via_external_ip_not_assigned_to_a_node(manifests()?)
}

#[test]
fn should_be_able_to_update_service_type_to_node_port_listening_on_same_port_number_but_different_protocols()
-> Result<()> {
    c::updates_service_type_to_node_port_on_same_port_different_protocols(manifests()?)
}

#[test]
fn should_be_able_to_change_the_type_from_external_name_to_cluster_ip() -> Result<()> {
    c::changes_service_type(manifests()?, TypeChange::ExternalNameToClusterIp)
}

#[test]
fn should_be_able_to_change_the_type_from_external_name_to_node_port() -> Result<()> {
    c::changes_service_type(manifests()?, TypeChange::ExternalNameToNodePort)
}

#[test]
fn should_be_able_to_change_the_type_from_cluster_ip_to_external_name() -> Result<()> {
    c::changes_service_type(manifests()?, TypeChange::ClusterIpToExternalName)
}

#[test]
fn should_be_able_to_change_the_type_from_node_port_to_external_name() -> Result<()> {
    c::changes_service_type(manifests()?, TypeChange::NodePortToExternalName)
}

#[test]
fn should_release_node_ports_on_delete() -> Result<()> {
    c::releases_node_ports_on_delete(manifests()?)
}

#[test]
fn should_be_rejected_when_no_endpoints_exist() -> Result<()> {
    c::rejected_when_no_endpoints_exist(manifests()?)
}

#[test]
fn should_be_rejected_for_evicted_pods_no_endpoints_exist() -> Result<()> {
    c::rejected_for_evicted_pods(manifests()?)
}

#[test]
fn should_be_able_to_connect_to_terminating_and_unready_endpoints_if_publish_not_ready_addresses_is_true() -> Result<()>
{
    c::terminating_unready_endpoints_with_publish_not_ready(manifests()?, true)
}

#[test]
fn should_not_be_able_to_connect_to_terminating_and_unready_endpoints_if_publish_not_ready_addresses_is_false()
-> Result<()> {
    c::terminating_unready_endpoints_with_publish_not_ready(manifests()?, false)
}

#[test]
fn should_fallback_to_terminating_endpoints_when_there_are_no_ready_endpoints_with_internal_traffic_policy_cluster()
-> Result<()> {
    c::falls_back_to_terminating_endpoints(manifests()?, false)
}

#[test]
fn should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_internal_traffic_policy_local()
-> Result<()> {
    c::falls_back_to_terminating_endpoints(manifests()?, true)
}

#[test]
fn should_fallback_to_terminating_endpoints_when_there_are_no_ready_endpoints_with_external_traffic_policy_cluster()
-> Result<()> {
    c::falls_back_to_terminating_endpoints_by_node_port(manifests()?, false)
}

#[test]
fn should_fallback_to_local_terminating_endpoints_when_there_are_no_ready_endpoints_with_external_traffic_policy_local()
-> Result<()> {
    c::falls_back_to_terminating_endpoints_by_node_port(manifests()?, true)
}

#[test]
fn should_respect_internal_traffic_policy_local_pod_to_pod() -> Result<()> {
    c::respects_internal_traffic_policy_local(manifests()?, ItpCase::PodToPod)
}

#[test]
fn should_respect_internal_traffic_policy_local_pod_host_network_to_pod() -> Result<()> {
    c::respects_internal_traffic_policy_local(manifests()?, ItpCase::HostNetworkToPod)
}

#[test]
fn should_respect_internal_traffic_policy_local_pod_and_node_to_pod_host_network() -> Result<()> {
    c::respects_internal_traffic_policy_local(manifests()?, ItpCase::PodAndNodeToHostNetworkPod)
}

#[test]
fn should_have_session_affinity_work_for_service_with_type_cluster_ip() -> Result<()> {
    c::session_affinity_works(manifests()?, Via::ClusterIp)
}

#[test]
fn should_have_session_affinity_timeout_work_for_service_with_type_cluster_ip() -> Result<()> {
    c::session_affinity_timeout_works(manifests()?, Via::ClusterIp)
}

#[test]
fn should_be_able_to_switch_session_affinity_for_service_with_type_cluster_ip() -> Result<()> {
    c::switches_session_affinity(manifests()?, Via::ClusterIp)
}

#[test]
fn should_have_session_affinity_work_for_node_port_service() -> Result<()> {
    c::session_affinity_works(manifests()?, Via::NodePort)
}

#[test]
fn should_have_session_affinity_timeout_work_for_node_port_service() -> Result<()> {
    c::session_affinity_timeout_works(manifests()?, Via::NodePort)
}

#[test]
fn should_be_able_to_switch_session_affinity_for_node_port_service() -> Result<()> {
    c::switches_session_affinity(manifests()?, Via::NodePort)
}

#[test]
fn should_implement_service_kubernetes_io_service_proxy_name() -> Result<()> {
    c::implements_label(manifests()?, "service.kubernetes.io/service-proxy-name", "foo-bar")
}

#[test]
fn should_implement_service_kubernetes_io_headless() -> Result<()> {
    c::implements_label(manifests()?, "service.kubernetes.io/headless", "")
}

#[test]
fn conntrack_should_be_able_to_preserve_udp_traffic_when_server_pod_cycles_for_a_node_port_service() -> Result<()> {
    c::preserves_udp_traffic_when_server_pod_cycles(manifests()?, UdpCycle::NodePort)
}

#[test]
fn conntrack_should_be_able_to_preserve_udp_traffic_when_server_pod_cycles_for_a_cluster_ip_service() -> Result<()> {
    c::preserves_udp_traffic_when_server_pod_cycles(manifests()?, UdpCycle::ClusterIp)
}

#[test]
fn conntrack_should_be_able_to_preserve_udp_traffic_when_server_pod_cycles_for_a_cluster_ip_service_with_internal_traffic_policy_set_to_local()
-> Result<()> {
    c::preserves_udp_traffic_when_server_pod_cycles(manifests()?, UdpCycle::ClusterIpLocal)
}

#[test]
fn conntrack_should_be_able_to_preserve_udp_traffic_when_server_pod_cycles_for_a_cluster_ip_service_and_client_is_host_network()
-> Result<()> {
    c::preserves_udp_traffic_when_server_pod_cycles(manifests()?, UdpCycle::ClusterIpHostClient)
}

#[test]
fn conntrack_should_be_able_to_preserve_udp_traffic_when_initial_unready_endpoints_get_ready() -> Result<()> {
    c::preserves_udp_traffic_when_initial_unready_endpoints_get_ready(manifests()?)
}
