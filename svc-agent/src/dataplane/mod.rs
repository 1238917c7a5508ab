//! The dataplane: the pinned programs and maps, and the writer that keeps
//! the maps equal to the model.
//!
//! - [`pins`]: where everything lives under `--bpffs`.
//! - [`loader`]: load, pin and attach the programs (adopting pinned maps).
//! - [`maps`]: the maps as a [`Table`] for the writer, and read access for
//!   `status`.
//! - [`writer`]: diff desired against programmed state and apply it with
//!   the update protocol of docs/maps.md.
//! - [`cleanup`]: detach and unpin.

pub mod cleanup;
pub mod loader;
pub mod maps;
pub mod memory;
pub mod pins;
pub mod table;
pub mod udp_reset;
pub mod writer;

pub use table::{Table, TableDump, TableError};
pub use writer::Writer;
