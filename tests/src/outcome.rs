//! What a `svc-testkit tcp|udp` run observed, parsed from its JSON report.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::Deserialize;

/// Errors a connect or sendto to an untranslated ClusterIP gets from the
/// client namespace's `unreachable 10.96.0.0/12` route.
pub const UNREACHABLE: &[&str] = &["EHOSTUNREACH", "ENETUNREACH"];

/// Counters from one client run. `ok` is keyed by reply (`NAME:PORT`),
/// `errors` by errno name, `peers` by getpeername() address, `sources` by
/// recvfrom() source address.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Outcome {
    pub ok: BTreeMap<String, u32>,
    pub errors: BTreeMap<String, u32>,
    pub peers: BTreeMap<String, u32>,
    pub sources: BTreeMap<String, u32>,
    /// The client's cgroup v2 path while it ran (`/svct-...`, or `/`).
    pub cgroup: String,
}

impl Outcome {
    pub fn total_ok(&self) -> u32 {
        self.ok.values().sum()
    }

    pub fn total_errors(&self) -> u32 {
        self.errors.values().sum()
    }

    /// Replies per backend name (the `NAME` of `NAME:PORT`), all ports summed.
    pub fn by_backend(&self) -> BTreeMap<String, u32> {
        let mut map = BTreeMap::new();
        for (reply, n) in &self.ok {
            let name = reply.split_once(':').map_or(reply.as_str(), |(n, _)| n);
            *map.entry(name.to_owned()).or_insert(0) += n;
        }
        map
    }

    /// The backend names that answered.
    pub fn backends(&self) -> BTreeSet<String> {
        self.by_backend().into_keys().collect()
    }

    /// Replies from backend `name` (any port).
    pub fn count_backend(&self, name: &str) -> u32 {
        self.by_backend().get(name).copied().unwrap_or(0)
    }

    /// The ports named in the replies (the port each backend accepted on).
    pub fn reply_ports(&self) -> BTreeSet<u16> {
        self.ok.keys().filter_map(|r| r.rsplit_once(':')?.1.parse().ok()).collect()
    }

    /// Panics unless all `n` attempts succeeded, exactly `expected` backends
    /// answered, and each got a fair share: every count is Binomial(n, 1/k),
    /// and a correct (uniform) dataplane puts any backend outside the bounds
    /// with probability < 1e-6 (exact binomial tails, union bound), while one
    /// that favours a backend does not stay inside them.
    pub fn assert_fair_share(&self, n: u32, expected: &[&str]) {
        assert_eq!(self.total_ok(), n, "every attempt must succeed: {self}");
        let want: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(self.backends(), want, "{self}");
        let k = u32::try_from(expected.len()).expect("few backends");
        let (lo, hi) = crate::stats::fair_share_bounds(n, k, 1e-6);
        for (backend, count) in self.by_backend() {
            assert!((lo..=hi).contains(&count), "{backend} got {count} of {n}, outside [{lo}, {hi}]: {self}");
        }
    }

    /// True when nothing succeeded and every error is one of `errnos`.
    pub fn all_failed_with(&self, errnos: &[&str]) -> bool {
        self.total_ok() == 0 && self.total_errors() > 0 && self.errors.keys().all(|e| errnos.contains(&e.as_str()))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok={:?} errors={:?} peers={:?} sources={:?} cgroup={}",
            self.ok, self.errors, self.peers, self.sources, self.cgroup
        )
    }
}
