//! Empty host-side library so that `svc-agent` can name this crate as a
//! build dependency (cargo then rebuilds the agent when the programs change).
#![no_std]
