//! `svc-agent cleanup`.

use crate::{
    cli::CleanupArgs,
    dataplane::{cleanup, pins::PinLayout},
    error::Result,
};

pub(super) fn cleanup(args: &CleanupArgs) -> Result<()> {
    let layout = PinLayout::new(&args.bpffs);
    let removed = cleanup::cleanup(&layout)?;
    tracing::info!(
        links = removed.links,
        pins = removed.pins,
        "detached and unpinned everything under {}",
        layout.root().display()
    );
    Ok(())
}
