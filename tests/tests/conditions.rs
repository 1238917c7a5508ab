//! Endpoint conditions through the manifest source (scenarios in
//! `svc_tests::scenarios::conditions`).

use anyhow::Result;
use svc_tests::{scenarios::conditions, source::manifests};

#[test]
fn ready_or_unset_endpoints_are_used() -> Result<()> {
    conditions::ready_or_unset_endpoints_are_used(manifests()?)
}

#[test]
fn terminating_fallback_and_refusal() -> Result<()> {
    conditions::terminating_fallback_and_refusal(manifests()?)
}
