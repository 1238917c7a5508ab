//! What the model needs to know about the node it runs on.

use std::net::IpAddr;

/// This node, as far as Service translation cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeContext {
    /// Node name (matches `endpoints[].nodeName`).
    pub name: String,
    /// Zone (matches `endpoints[].hints.forZones[].name`), if known.
    pub zone: Option<String>,
    /// Local addresses of both families, for `nodeIP:nodePort` frontends.
    pub addresses: Vec<IpAddr>,
}
