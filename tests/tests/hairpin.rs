//! Hairpin through the manifest source (scenario in
//! `svc_tests::scenarios::hairpin`).

use anyhow::Result;
use svc_tests::{scenarios::hairpin, source::manifests};

#[test]
fn backend_reaches_itself_through_its_service() -> Result<()> {
    hairpin::backend_reaches_itself_through_its_service(manifests()?)
}
