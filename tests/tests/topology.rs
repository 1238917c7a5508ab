//! Topology-aware routing through the manifest source and `--zone`
//! (scenarios in `svc_tests::scenarios::topology`).

use anyhow::Result;
use svc_tests::{scenarios::topology, source::manifests};

#[test]
fn hints_for_this_zone_are_preferred() -> Result<()> {
    topology::hints_for_this_zone_are_preferred(manifests()?)
}

#[test]
fn prefer_close_uses_endpoint_zones() -> Result<()> {
    topology::prefer_close_uses_endpoint_zones(manifests()?)
}

#[test]
fn prefer_same_node_then_zone() -> Result<()> {
    topology::prefer_same_node_then_zone(manifests()?)
}
