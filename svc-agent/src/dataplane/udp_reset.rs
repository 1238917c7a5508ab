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

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::mpsc,
};

use aya::maps::{HashMap, MapData};
use svc_common::{Backend4, FrontendKey4, RevNatKey, RevNatValue, names};

use super::{maps::open_pinned_map, pins::PinLayout};
use crate::{
    error::{Error, Result},
    model::socket_addr,
    sys::sock_diag,
};

/// A UDP frontend and the backends it stopped using.
pub type Removed = (FrontendKey4, Vec<Backend4>);

/// Starts the background thread that resets sockets; send it what each
/// batch removed. Resetting can take a while on a busy node (it visits
/// every client network namespace), so it never delays map updates.
pub fn spawn(layout: &PinLayout, cgroup: PathBuf) -> Result<mpsc::Sender<Vec<Removed>>> {
    let revnat: HashMap<MapData, RevNatKey, RevNatValue> =
        HashMap::try_from(open_pinned_map(layout, names::REV_NAT)?).map_err(|e| Error::map(names::REV_NAT, e))?;
    let (tx, rx) = mpsc::channel::<Vec<Removed>>();
    std::thread::Builder::new()
        .name("udp-reset".into())
        .spawn(move || {
            while let Ok(mut removed) = rx.recv() {
                while let Ok(more) = rx.try_recv() {
                    removed.extend(more);
                }
                match reset(&cgroup, &revnat, &removed) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sockets = n, "reset connected UDP sockets of removed backends"),
                    Err(e) => tracing::warn!("resetting UDP sockets of removed backends: {e}"),
                }
            }
        })
        .map_err(|e| Error::io("starting the udp-reset thread", e))?;
    Ok(tx)
}

/// Destroys the qualifying sockets in every client netns; returns how many.
fn reset(cgroup: &Path, revnat: &HashMap<MapData, RevNatKey, RevNatValue>, removed: &[Removed]) -> io::Result<usize> {
    // backend -> the frontends that stopped using it
    let mut wanted: BTreeMap<Backend4, Vec<FrontendKey4>> = BTreeMap::new();
    for (frontend, backends) in removed {
        for b in backends {
            wanted.entry(*b).or_default().push(*frontend);
        }
    }
    let mut destroyed = 0;
    for netns in client_namespaces(cgroup)? {
        let sockets = match in_netns(&netns, sock_diag::connected_udp_sockets) {
            Ok(Ok(s)) => s,
            // The process may have exited meanwhile.
            Ok(Err(e)) | Err(e) => {
                tracing::debug!(netns = %netns.display(), "listing UDP sockets: {e}");
                continue;
            }
        };
        let doomed: Vec<sock_diag::UdpSocket> = sockets
            .into_iter()
            .filter(|s| {
                let backend = crate::model::backend_value(s.peer);
                let Some(frontends) = wanted.get(&backend) else { return false };
                revnat
                    .get(&RevNatKey { cookie: s.cookie, backend }, 0)
                    .is_ok_and(|rev| frontends.iter().any(|f| f.addr == rev.addr && f.port == rev.port))
            })
            .collect();
        if doomed.is_empty() {
            continue;
        }
        let results = in_netns(&netns, move || doomed.iter().map(sock_diag::destroy).collect::<Vec<_>>())?;
        for result in results {
            match result {
                Ok(()) => destroyed += 1,
                Err(e) => tracing::debug!("destroying a UDP socket: {e}"),
            }
        }
    }
    tracing::debug!(backends = ?wanted.keys().map(|b| socket_addr(b.addr, b.port)).collect::<Vec<_>>(), destroyed, "udp reset");
    Ok(destroyed)
}

/// One `/proc/<pid>/ns/net` per distinct network namespace among the
/// processes of `cgroup` and its descendants.
fn client_namespaces(cgroup: &Path) -> io::Result<Vec<PathBuf>> {
    let mut pids = Vec::new();
    collect_pids(cgroup, &mut pids)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        if let Ok(meta) = fs::metadata(&path)
            && seen.insert((meta.dev(), meta.ino()))
        {
            out.push(path);
        }
    }
    Ok(out)
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) -> io::Result<()> {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            // A child cgroup vanishing meanwhile is fine.
            let _ = collect_pids(&entry.path(), pids);
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
