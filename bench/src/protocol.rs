//! What the orchestrator asks a worker (one JSON line on its stdin) and
//! what the worker answers (one JSON line on its stdout).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    addressing::{Family, Topology},
    stats::Summary,
};

/// Which Service each connect targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Target {
    /// The last Service (the last rule of KUBE-SERVICES: iptables' worst case).
    Last,
    /// A uniformly random Service per connect.
    Random,
    /// UDP request/response over one unconnected socket to the UDP
    /// Service (sendmsg + recvmsg per round trip).
    Datagram,
    /// A DNS-like query to the UDP Service, as glibc's resolver sends
    /// one: socket(), connect(), send(), recv(), close().
    Query,
}

impl Target {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Last => "last service",
            Self::Random => "random services",
            Self::Datagram => "UDP round trips",
            Self::Query => "DNS-like UDP queries",
        }
    }

    /// Whether it times UDP exchanges rather than TCP connects.
    pub(crate) fn is_udp(self) -> bool {
        matches!(self, Self::Datagram | Self::Query)
    }

    /// The TCP targets every size measures.
    pub(crate) const TCP: [Self; 2] = [Self::Last, Self::Random];
    /// The UDP targets (sizes with `udp`).
    pub(crate) const UDP: [Self; 2] = [Self::Datagram, Self::Query];
}

/// A timed connect loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ConnectPlan {
    pub(crate) topology: Topology,
    pub(crate) target: Target,
    /// The client's socket family (and so which twin of the Service).
    #[serde(default)]
    pub(crate) family: Family,
    /// Connect to a backend of the chosen Service instead of its VIP.
    pub(crate) direct: bool,
    /// Connect to the chosen Service's node port at this node address
    /// instead of its VIP (the north-south bench's outside client).
    #[serde(default)]
    pub(crate) node: Option<Ipv4Addr>,
    /// Seed of the target sequence (the same for every mode in a round).
    pub(crate) seed: u64,
    /// Connects to time.
    pub(crate) count: u32,
    /// Stop early after this long (slow baselines at large sizes).
    pub(crate) max_millis: u64,
    /// Untimed connects first.
    pub(crate) warmup: u32,
    /// Also call getpeername() on each connected socket (exercises getpeer4).
    pub(crate) getpeername: bool,
    /// Return every sample (the orchestrator merges chunks of a cell).
    pub(crate) raw: bool,
}

/// One VIP (or backend) to check before timing anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VerifyTarget {
    pub(crate) addr: SocketAddr,
    /// Backends a connect may land on (every one must be hit).
    pub(crate) expect: Vec<SocketAddr>,
    pub(crate) connects: u32,
}

/// Correctness checks of one mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VerifyPlan {
    pub(crate) targets: Vec<VerifyTarget>,
    /// An address no mode translates: a connect must fail.
    pub(crate) unused: SocketAddr,
    /// A UDP address whose reply must come back from that same address.
    pub(crate) udp: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    Verify(VerifyPlan),
    Connect(ConnectPlan),
    /// One long-lived connection sending for `millis`.
    Bulk {
        target: SocketAddr,
        millis: u64,
    },
    /// `count` UDP request/replies over one unconnected socket.
    Udp {
        target: SocketAddr,
        count: u32,
    },
    /// Start recording which endpoint address the backends' accepted
    /// connections reached (the north-south verification: its client is
    /// another worker).
    Record,
    /// Wait until `count` accepts were recorded (at most 2 s: an accept
    /// may trail its client's connect), stop recording, answer
    /// [`Response::Reached`].
    Recorded {
        count: u32,
    },
    Quit,
}

/// Result of a connect loop.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ConnectStats {
    pub(crate) samples: u32,
    pub(crate) errors: u32,
    pub(crate) first_error: Option<String>,
    /// Duration of connect() alone.
    pub(crate) connect: Summary,
    /// socket() + connect() + close().
    pub(crate) cycle: Summary,
    pub(crate) wall_ns: u64,
    /// user + system time of the client thread.
    pub(crate) client_cpu_ns: u64,
    /// CPU time of the whole worker process (client, backends, and the
    /// softirqs run in their context).
    pub(crate) process_cpu_ns: u64,
    /// connect() calls slower than 10 ms (a dropped SYN shows up here).
    pub(crate) slow: u32,
    /// Every connect() and cycle duration (ns), when the plan asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) raw_connect: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) raw_cycle: Vec<u64>,
}

/// Result of a bulk transfer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BulkStats {
    pub(crate) bytes: u64,
    pub(crate) wall_ns: u64,
    pub(crate) client_cpu_ns: u64,
    pub(crate) process_cpu_ns: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    Ready,
    Verified,
    Connect(ConnectStats),
    Bulk(BulkStats),
    Reached(Vec<SocketAddr>),
    Done,
    Error(String),
}
