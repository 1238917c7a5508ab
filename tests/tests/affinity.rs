//! `sessionAffinity: ClientIP` through the manifest source. The scenarios
//! live in `svc_tests::scenarios::affinity` (also run through the
//! Kubernetes source); each states why its assertions cannot pass on a
//! dataplane without the behaviour.

use anyhow::Result;
use svc_tests::{scenarios::affinity, source::manifests};

// Affinity from `AF_INET` and (v4-mapped) `AF_INET6` sockets.
svc_tests::dial_tests! { svc_tests::source::manifests;
    svc_tests::scenarios::affinity::each_client_keeps_its_own_backend => each_client_keeps_its_own_backend,
    svc_tests::scenarios::affinity::pinned_backend_leaving_repicks_at_once => pinned_backend_leaving_repicks_at_once,
}

#[test]
fn timeout_expires_without_new_connections() -> Result<()> {
    affinity::timeout_expires_without_new_connections(manifests()?)
}

#[test]
fn new_connections_extend_the_timeout() -> Result<()> {
    affinity::new_connections_extend_the_timeout(manifests()?)
}

#[test]
fn pins_survive_an_agent_restart() -> Result<()> {
    affinity::pins_survive_an_agent_restart(manifests()?)
}

#[test]
fn switching_affinity_applies_to_new_connections() -> Result<()> {
    affinity::switching_affinity_applies_to_new_connections(manifests()?)
}

#[test]
fn affinity_map_is_bounded() -> Result<()> {
    affinity::affinity_map_is_bounded(manifests()?)
}
