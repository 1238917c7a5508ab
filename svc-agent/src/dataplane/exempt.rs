//! Exempt pods' cgroups in `SVC_EXEMPT` (`svc_common::exempt`): the socket
//! hooks leave these pods' calls to Service addresses alone.
//!
//! The controller hands over the complete list of exempt pods whenever it
//! changes; this thread finds each pod's cgroup the way kubelet names it
//! (under `--kubelet-cgroup-root`, cgroupfs or systemd driver, any QoS
//! class), and makes the map hold exactly those cgroups. A pod whose
//! cgroup does not exist yet (kubelet creates it when it starts the pod)
//! is looked for again every [`RETRY`]. Until the first list arrives the
//! pinned entries stay as an earlier agent left them, like every other
//! pinned state across a restart.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    time::Duration,
};

use aya::maps::{Array, HashMap, MapData};
use svc_common::{Config, ExemptPod as ExemptValue, names};

use super::{maps::open_pinned_map, pins::PinLayout};
use crate::{
    error::{Error, Result},
    metrics::Metrics,
    model::ExemptPod,
};

/// How often pods without a cgroup are looked for again.
const RETRY: Duration = Duration::from_secs(1);

/// Where kubelet puts pod cgroups, for both cgroup drivers and every QoS
/// class: `kubepods[/burstable|/besteffort]/pod<uid>` (cgroupfs), or
/// `kubepods.slice[/kubepods-<qos>.slice]/kubepods[-<qos>]-pod<uid_>.slice`
/// (systemd, with the uid's dashes as underscores).
fn pod_cgroup_candidates(root: &Path, uid: &str) -> [PathBuf; 6] {
    let systemd_uid = uid.replace('-', "_");
    [
        root.join("kubepods").join(format!("pod{uid}")),
        root.join("kubepods/burstable").join(format!("pod{uid}")),
        root.join("kubepods/besteffort").join(format!("pod{uid}")),
        root.join("kubepods.slice").join(format!("kubepods-pod{systemd_uid}.slice")),
        root.join("kubepods.slice/kubepods-burstable.slice").join(format!("kubepods-burstable-pod{systemd_uid}.slice")),
        root.join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{systemd_uid}.slice")),
    ]
}

/// The pod's cgroup and its id (the cgroup v2 directory's inode number,
/// which is what `bpf_get_current_ancestor_cgroup_id` returns).
fn find_pod_cgroup(root: &Path, uid: &str) -> Option<(PathBuf, u64)> {
    pod_cgroup_candidates(root, uid)
        .into_iter()
        .find_map(|path| std::fs::metadata(&path).ok().filter(std::fs::Metadata::is_dir).map(|m| (path, m.ino())))
}

/// The map value naming a pod (names cut to the fields).
fn value_of(pod: &ExemptPod) -> ExemptValue {
    let mut value: ExemptValue = bytemuck::Zeroable::zeroed();
    super::writer::copy_name(&mut value.namespace, &pod.namespace);
    super::writer::copy_name(&mut value.name, &pod.name);
    value
}

/// The pinned `SVC_EXEMPT` and the count in `SVC_CONFIG`.
struct ExemptTable {
    map: HashMap<MapData, u64, ExemptValue>,
    config: Array<MapData, Config>,
    written: BTreeMap<u64, ExemptValue>,
}

impl ExemptTable {
    fn open(layout: &PinLayout) -> Result<Self> {
        let map: HashMap<MapData, u64, ExemptValue> =
            HashMap::try_from(open_pinned_map(layout, names::EXEMPT)?).map_err(|e| Error::map(names::EXEMPT, e))?;
        let config =
            Array::try_from(open_pinned_map(layout, names::CONFIG)?).map_err(|e| Error::map(names::CONFIG, e))?;
        let written = map.iter().filter_map(std::result::Result::ok).collect();
        Ok(Self { map, config, written })
    }

    /// Makes the map hold exactly `want`, then records its size for the
    /// programs (so a first entry is counted only once it is there, and the
    /// last one's removal is seen before the walk stops).
    fn apply(&mut self, want: &BTreeMap<u64, ExemptValue>) {
        for (id, value) in want {
            if self.written.get(id) == Some(value) {
                continue;
            }
            match self.map.insert(id, value, 0) {
                Ok(()) => {
                    tracing::info!(
                        "pod {}/{} (cgroup id {id}) is exempt from socket translation",
                        super::writer::name_str(&value.namespace),
                        super::writer::name_str(&value.name)
                    );
                    self.written.insert(*id, *value);
                }
                Err(e) => tracing::error!("exempting cgroup {id}: writing {}: {e}", names::EXEMPT),
            }
        }
        let stale: Vec<u64> = self.written.keys().filter(|id| !want.contains_key(id)).copied().collect();
        for id in stale {
            match self.map.remove(&id) {
                Ok(()) => {
                    tracing::info!("cgroup id {id} is translated again");
                    self.written.remove(&id);
                }
                Err(e) => tracing::warn!("un-exempting cgroup {id}: deleting from {}: {e}", names::EXEMPT),
            }
        }
        let count = u32::try_from(self.written.len()).unwrap_or(u32::MAX);
        let result = self.config.get(&0, 0).and_then(|mut c| {
            c.exempt_cgroups = count;
            self.config.set(0, c, 0)
        });
        if let Err(e) = result {
            tracing::error!("recording the exempt cgroup count in {}: {e}", names::CONFIG);
        }
    }
}

/// Starts the thread; the returned sender takes each new list of exempt
/// pods.
pub(crate) fn spawn(layout: &PinLayout, root: PathBuf, metrics: Arc<Metrics>) -> Result<mpsc::Sender<Vec<ExemptPod>>> {
    let mut table = ExemptTable::open(layout)?;
    let (tx, rx) = mpsc::channel::<Vec<ExemptPod>>();
    std::thread::Builder::new()
        .name("exempt".into())
        .spawn(move || {
            let mut wanted: Option<Vec<ExemptPod>> = None;
            let mut missing: BTreeSet<(String, String)> = BTreeSet::new();
            loop {
                match rx.recv_timeout(RETRY) {
                    Ok(mut pods) => {
                        // Only the newest list matters.
                        while let Ok(newer) = rx.try_recv() {
                            pods = newer;
                        }
                        wanted = Some(pods);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if missing.is_empty() {
                            continue;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                let Some(pods) = &wanted else { continue };
                let want = resolve(&root, pods, &mut missing);
                if want != table.written {
                    table.apply(&want);
                }
                metrics.set_exempt_pods(pods.len() - missing.len(), missing.len());
            }
        })
        .map_err(|e| Error::io("starting the exempt thread", e))?;
    Ok(tx)
}

/// The map entries for `pods`; `missing` is updated to the pods without a
/// cgroup, each logged when it goes missing and when it is found.
fn resolve(root: &Path, pods: &[ExemptPod], missing: &mut BTreeSet<(String, String)>) -> BTreeMap<u64, ExemptValue> {
    let mut want = BTreeMap::new();
    let mut now_missing = BTreeSet::new();
    for pod in pods {
        let key = (pod.namespace.clone(), pod.name.clone());
        match find_pod_cgroup(root, &pod.uid) {
            Some((path, id)) => {
                if missing.contains(&key) {
                    tracing::info!("found the cgroup of exempt pod {}/{}: {}", pod.namespace, pod.name, path.display());
                }
                want.insert(id, value_of(pod));
            }
            None => {
                if !missing.contains(&key) {
                    tracing::warn!(
                        "pod {}/{} opts out of socket translation, but no cgroup for uid {} exists under {} \
                         (kubelet's cgroupfs and systemd layouts); looking again every {}s",
                        pod.namespace,
                        pod.name,
                        pod.uid,
                        root.display(),
                        RETRY.as_secs()
                    );
                }
                now_missing.insert(key);
            }
        }
    }
    *missing = now_missing;
    want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_layouts_for_both_drivers_and_every_qos_class() {
        let paths = pod_cgroup_candidates(Path::new("/sys/fs/cgroup"), "1a2b-3c");
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/kubepods/pod1a2b-3c",
                "/sys/fs/cgroup/kubepods/burstable/pod1a2b-3c",
                "/sys/fs/cgroup/kubepods/besteffort/pod1a2b-3c",
                "/sys/fs/cgroup/kubepods.slice/kubepods-pod1a2b_3c.slice",
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b_3c.slice",
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b_3c.slice",
            ]
        );
    }

    #[test]
    fn a_pod_is_found_in_a_directory_tree_and_missing_ones_are_tracked() {
        let root = std::env::temp_dir().join(format!("svc-exempt-test-{}", std::process::id()));
        let dir = root.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podaa_bb.slice");
        std::fs::create_dir_all(&dir).unwrap();
        let pods = [
            ExemptPod { namespace: "n".into(), name: "found".into(), uid: "aa-bb".into() },
            ExemptPod { namespace: "n".into(), name: "not-yet".into(), uid: "cc-dd".into() },
        ];
        let mut missing = BTreeSet::new();
        let want = resolve(&root, &pods, &mut missing);
        let ino = std::fs::metadata(&dir).unwrap().ino();
        assert_eq!(want.keys().copied().collect::<Vec<_>>(), [ino]);
        assert_eq!(&want[&ino].name[..5], b"found");
        assert_eq!(missing.into_iter().collect::<Vec<_>>(), [("n".to_owned(), "not-yet".to_owned())]);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
