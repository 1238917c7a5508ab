//! The dataplane: the pinned programs and maps, and the writer that keeps
//! the maps equal to the model.
//!
//! - [`pins`]: where everything lives under `--bpffs`.
//! - [`loader`]: load, pin and attach the programs (adopting pinned maps).
//! - [`devices`]: the devices the TC (north-south) programs run on.
//! - [`maps`]: the maps as a [`Table`] for the writer, and read access for
//!   `status`.
//! - [`grace`]: RCU grace periods on a helper thread.
//! - [`writer`]: diff desired against programmed state and apply it with
//!   the update protocol of docs/maps.md.
//! - [`exempt`]: the cgroups of pods that opt out of socket translation.
//! - [`cleanup`]: detach and unpin.

pub(crate) mod cleanup;
pub(crate) mod devices;
pub(crate) mod encode;
pub(crate) mod exempt;
pub(crate) mod family;
pub(crate) mod flows;
pub(crate) mod grace;
pub(crate) mod loader;
pub(crate) mod maps;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) mod pins;
pub(crate) mod self_check;
pub(crate) mod source_ranges;
pub(crate) mod table;
pub(crate) mod trace;
pub(crate) mod udp_reset;
pub(crate) mod writer;

pub(crate) use table::Table;
pub(crate) use writer::Writer;
