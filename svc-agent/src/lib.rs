//! svc-agent: keeps the socket-level Service dataplane in sync with the
//! cluster's Services and EndpointSlices.
//!
//! The layers, in the direction data flows:
//!
//! - [`source`]: where desired state comes from (a manifest directory, or
//!   the Kubernetes API). Sources only produce Kubernetes objects.
//! - [`model`]: pure translation of objects into frontends and backend
//!   lists (no I/O, unit tested without privileges).
//! - [`dataplane`]: loads and pins the programs, and writes the model into
//!   the maps by diffing against what is programmed.
//! - [`controller`]: the loop that ties them together.
//! - [`cmd`]: the `run`, `status` and `cleanup` subcommands.

pub mod cli;
pub mod cmd;
pub(crate) mod controller;
pub(crate) mod dataplane;
pub(crate) mod error;
pub(crate) mod fast_hash;
pub(crate) mod health;
pub(crate) mod health_check;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod source;
pub(crate) mod sys;

pub use error::Error;
