//! An address pool: one namespace that owns a whole /16 as local addresses
//! (`ip route add local 10.250.0.0/16 dev lo`) with one server on port
//! 8080 that answers each connection with the address it was reached on.
//! Hundreds of Services can then have tens of distinct backends each, and
//! a client can tell from the answer exactly which backend served it.
//!
//! ```text
//!   client netns                      pool netns
//!   vpool 10.249.0.1/30  <-------->  eth0 10.249.0.2/30
//!   10.250.0.0/16 via 10.249.0.2      local 10.250.0.0/16 dev lo
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Result;

use crate::{Backend, Netns, Proto, Server};

/// The pool's range: backend `j` of pool `i` is 10.250.i.j.
pub const POOL_RANGE: &str = "10.250.0.0/16";
/// The port the pool's server answers on.
pub const POOL_PORT: u16 = 8080;

#[derive(Debug)]
pub struct AddressPool {
    _server: Server,
    backend: Backend,
}

impl AddressPool {
    /// A pool reachable from `client`.
    pub fn new(client: &Netns) -> Result<Self> {
        let netns = Netns::new()?;
        client.ip(&["link", "add", "vpool", "type", "veth", "peer", "name", "eth0", "netns", netns.name()])?;
        client.ip(&["addr", "add", "10.249.0.1/30", "dev", "vpool"])?;
        client.ip(&["link", "set", "vpool", "up"])?;
        client.ip(&["route", "add", POOL_RANGE, "via", "10.249.0.2"])?;
        netns.ip(&["addr", "add", "10.249.0.2/30", "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", "local", POOL_RANGE, "dev", "lo"])?;
        let backend = Backend::from_parts(netns, Ipv4Addr::new(10, 249, 0, 2));
        let server = backend.spawn_server("pool", &[Proto::Tcp(POOL_PORT)], &["--reply-local"])?;
        Ok(Self { _server: server, backend })
    }

    /// Backend `j` of pool `i`.
    pub fn addr(pool: u8, j: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 250, pool, j), POOL_PORT)
    }

    /// What every answer from pool `i` starts with.
    pub fn prefix(pool: u8) -> String {
        format!("10.250.{pool}.")
    }

    /// The pool's namespace.
    pub fn netns(&self) -> &Netns {
        self.backend.netns()
    }
}
