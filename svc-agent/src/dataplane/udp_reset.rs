//! Resetting connected UDP sockets whose backend was removed.
//!
//! kube-proxy flushes conntrack entries so that a UDP client does not keep
//! sending into the void after its endpoint left. Here the translation
//! lives in the socket itself, so the equivalent is to destroy the socket
//! (SOCK_DESTROY): the application sees ECONNABORTED, and its next
//! `connect()` picks a current backend. TCP connections are left alone.
//!
//! Only sockets this dataplane translated are touched: a socket qualifies
//! if it is connected to the removed backend *and* `SVC_REVNAT_SK` says it
//! reached that backend through this frontend (a client that connected to
//! the pod IP directly keeps its socket). Sockets live in the clients'
//! network namespaces, found through the processes of the attached cgroup.
//!
//! The same removals drop the north-south UDP flows of those backends
//! (`super::flows`).

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use aya::maps::{HashMap, MapData};
use svc_common::{Backend6, RevNatKey, RevNatKey6, RevNatValue, names};

use super::{
    family::{Backend, FrontendKey},
    maps::open_pinned_map,
    pins::PinLayout,
};
use crate::{
    error::{Error, Result},
    metrics::Metrics,
    sys::sock_diag,
};

/// A UDP frontend and the backends it stopped using.
pub(crate) type Removed = (FrontendKey, Vec<Backend>);

/// Both families' reverse-translation maps: which frontend a (socket,
/// backend) pair stands for.
struct RevNat {
    v4: HashMap<MapData, RevNatKey, RevNatValue>,
    v6: HashMap<MapData, RevNatKey6, Backend6>,
}

impl RevNat {
    /// The frontend address socket `cookie` reached `backend` through.
    fn frontend(&self, cookie: u64, backend: Backend) -> Option<std::net::SocketAddr> {
        match backend {
            Backend::V4(backend) => {
                let v = self.v4.get(&RevNatKey { cookie, backend }, 0).ok()?;
                Some(super::encode::socket_addr(v.addr, v.port).into())
            }
            Backend::V6(backend) => {
                let v = self.v6.get(&RevNatKey6 { cookie, backend, _pad: 0 }, 0).ok()?;
                Some(super::encode::socket_addr6(v.addr, v.port).into())
            }
        }
    }
}

/// What one reset round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Sockets destroyed.
    pub destroyed: u64,
    /// Sockets that qualified but could not be destroyed.
    pub failed_sockets: u64,
    /// Client network namespaces that could not be entered or listed.
    pub failed_namespaces: u64,
    /// Processes of the cgroup this agent cannot see (it runs in another
    /// PID namespace: the DaemonSet needs `hostPID: true`).
    pub invisible_processes: u64,
}

/// Starts the background thread that resets sockets; send it what each
/// batch removed. Resetting can take a while on a busy node (it visits
/// every client network namespace), so it never delays map updates.
/// Failures are logged at warn level and counted in `metrics`.
pub(crate) fn spawn(layout: &PinLayout, cgroup: PathBuf, metrics: Arc<Metrics>) -> Result<mpsc::Sender<Vec<Removed>>> {
    let revnat = RevNat {
        v4: HashMap::try_from(open_pinned_map(layout, names::REV_NAT)?).map_err(|e| Error::map(names::REV_NAT, e))?,
        v6: HashMap::try_from(open_pinned_map(layout, names::REV_NAT6)?).map_err(|e| Error::map(names::REV_NAT6, e))?,
    };
    let mut flows = super::flows::FlowTable::open(layout)?;
    let (tx, rx) = mpsc::channel::<Vec<Removed>>();
    std::thread::Builder::new()
        .name("udp-reset".into())
        .spawn(move || {
            while let Ok(mut removed) = rx.recv() {
                while let Ok(more) = rx.try_recv() {
                    removed.extend(more);
                }
                let flows_dropped = flows.forget_backends(&removed);
                if flows_dropped > 0 {
                    metrics.udp_flows_dropped.inc_by(flows_dropped as u64);
                    tracing::info!(flows = flows_dropped, "dropped north-south UDP flows of removed backends");
                }
                match reset(&cgroup, &revnat, &removed) {
                    Ok(outcome) => report(&outcome, &metrics),
                    Err(e) => {
                        metrics.udp_reset_failed("cgroup", 1);
                        tracing::warn!("resetting UDP sockets of removed backends: reading {}: {e}", cgroup.display());
                    }
                }
            }
        })
        .map_err(|e| Error::io("starting the udp-reset thread", e))?;
    Ok(tx)
}

/// Logs and counts a round.
fn report(outcome: &Outcome, metrics: &Metrics) {
    if outcome.destroyed > 0 {
        metrics.udp_resets.inc_by(outcome.destroyed);
        tracing::info!(sockets = outcome.destroyed, "reset connected UDP sockets of removed backends");
    }
    if outcome.failed_sockets > 0 {
        metrics.udp_reset_failed("socket", outcome.failed_sockets);
        tracing::warn!(sockets = outcome.failed_sockets, "could not reset connected UDP sockets of removed backends");
    }
    if outcome.failed_namespaces > 0 {
        metrics.udp_reset_failed("netns", outcome.failed_namespaces);
        tracing::warn!(
            namespaces = outcome.failed_namespaces,
            "could not enter or list client network namespaces to reset UDP sockets"
        );
    }
    if outcome.invisible_processes > 0 {
        metrics.udp_reset_failed("invisible_process", outcome.invisible_processes);
        tracing::warn!(
            processes = outcome.invisible_processes,
            "processes of the attached cgroup are not visible to the agent (another PID namespace: \
             run it with hostPID), so their UDP sockets cannot be reset"
        );
    }
}

/// Destroys the qualifying sockets in every client netns.
fn reset(cgroup: &Path, revnat: &RevNat, removed: &[Removed]) -> io::Result<Outcome> {
    // backend -> the frontends that stopped using it
    let mut wanted: BTreeMap<Backend, Vec<FrontendKey>> = BTreeMap::new();
    for (frontend, backends) in removed {
        for b in backends {
            wanted.entry(*b).or_default().push(*frontend);
        }
    }
    let mut outcome = Outcome::default();
    let (namespaces, invisible) = client_namespaces(cgroup)?;
    outcome.invisible_processes = invisible;
    for netns in namespaces {
        let sockets = match in_netns(&netns, sock_diag::connected_udp_sockets) {
            Ok(Ok(s)) => s,
            // The process exited meanwhile: nothing to reset there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Ok(Err(e)) | Err(e) => {
                tracing::debug!(netns = %netns.display(), "listing UDP sockets: {e}");
                outcome.failed_namespaces += 1;
                continue;
            }
        };
        let doomed: Vec<sock_diag::UdpSocket> = sockets
            .into_iter()
            .filter(|s| {
                let backend = super::encode::backend_value(s.peer);
                let Some(frontends) = wanted.get(&backend) else { return false };
                revnat.frontend(s.cookie, backend).is_some_and(|rev| frontends.iter().any(|f| f.socket_addr() == rev))
            })
            .collect();
        if doomed.is_empty() {
            continue;
        }
        let count = doomed.len() as u64;
        let Ok(results) = in_netns(&netns, move || doomed.iter().map(sock_diag::destroy).collect::<Vec<_>>()) else {
            outcome.failed_sockets += count;
            continue;
        };
        for result in results {
            match result {
                Ok(()) => outcome.destroyed += 1,
                Err(e) => {
                    tracing::debug!("destroying a UDP socket: {e}");
                    outcome.failed_sockets += 1;
                }
            }
        }
    }
    tracing::debug!(backends = ?wanted.keys().map(Backend::socket_addr).collect::<Vec<_>>(), ?outcome, "udp reset");
    Ok(outcome)
}

/// One `/proc/<pid>/ns/net` per distinct network namespace among the
/// processes of `cgroup` and its descendants, and how many of those
/// processes are outside this agent's PID namespace (`cgroup.procs` shows
/// them as 0).
fn client_namespaces(cgroup: &Path) -> io::Result<(Vec<PathBuf>, u64)> {
    let mut pids = Vec::new();
    collect_pids(cgroup, &mut pids)?;
    let invisible = pids.iter().filter(|pid| **pid == 0).count() as u64;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pid in pids.into_iter().filter(|pid| *pid != 0) {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if let Ok(meta) = fs::metadata(&path)
            && seen.insert((meta.dev(), meta.ino()))
        {
            out.push(path);
        }
    }
    Ok((out, invisible))
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) -> io::Result<()> {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            // A child cgroup vanishing meanwhile is fine.
            if let Err(e) = collect_pids(&entry.path(), pids)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::debug!("reading {}: {e}", entry.path().display());
            }
        }
    }
    Ok(())
}

/// Runs `f` on a short-lived thread that has joined the network namespace
/// at `netns` (setns affects only the calling thread).
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let file = fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                use std::os::fd::AsRawFd as _;
                // SAFETY: a valid namespace fd; only this thread changes netns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("netns worker panicked"))?
    })
}
