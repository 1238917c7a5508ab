//! `internalTrafficPolicy: Local` through the manifest source (scenarios
//! in `svc_tests::scenarios::traffic_policy`).

use anyhow::Result;
use svc_tests::{scenarios::traffic_policy, source::manifests};

#[test]
fn local_policy_uses_only_this_nodes_endpoints() -> Result<()> {
    traffic_policy::local_policy_uses_only_this_nodes_endpoints(manifests()?)
}

#[test]
fn local_policy_falls_back_to_local_terminating() -> Result<()> {
    traffic_policy::local_policy_falls_back_to_local_terminating(manifests()?)
}
