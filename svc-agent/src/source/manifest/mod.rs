//! `--source DIR`: Services, EndpointSlices and Endpoints (and Pods and
//! Namespaces, for the socket-translation opt-out) read from YAML or JSON
//! manifests, re-read when files change.
//!
//! This source plays the API server's part for what the dataplane needs:
//! it allocates cluster IPs for Services that have none (`ipam`) and
//! mirrors selector-less Services' Endpoints into EndpointSlices
//! (`mirror`). A file that fails to parse is reported by name and its last
//! good content stays in effect, the way a failed `kubectl apply` leaves
//! the cluster unchanged; the other files always apply.

pub(crate) mod ipam;
mod mirror;
mod node_ports;
mod parse;
mod watch;

use std::{
    collections::BTreeMap,
    fs,
    ops::RangeInclusive,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use k8s_openapi::api::core::v1::Endpoints;
pub(crate) use parse::{ParseError, ParsedFile, parse_manifest};
pub(crate) use watch::spawn;

use crate::model::{NamespaceObj, PodObj, ServiceCidrs, ServiceKey, ServiceObj, SliceObj};

/// What the manifest source allocates, standing in for the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// `--service-cidr`: cluster IPs for Services without one.
    pub service_cidr: ServiceCidrs,
    /// `--service-node-port-range`: node ports for NodePort/LoadBalancer
    /// ports without one.
    pub node_ports: RangeInclusive<u16>,
    /// Allocations already in force (from the pinned dataplane at start).
    pub previous: ipam::Sticky,
}

/// Re-reading this many files is bulk work whose freed memory is returned
/// to the kernel afterwards ([`crate::sys::trim_heap`]).
const BULK_FILES: usize = 16;

/// What identifies a file version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// Last content that parsed (None if the file never parsed).
    objects: Option<ParsedFile>,
}

/// The directory's objects as of the last [`ManifestDir::reload`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Services, with cluster IPs and node ports allocated where missing.
    pub services: Vec<Arc<ServiceObj>>,
    /// EndpointSlices, including those mirrored from Endpoints.
    pub slices: Vec<Arc<SliceObj>>,
    /// Pods (taken to run on this node), by namespace and name.
    pub pods: Vec<Arc<PodObj>>,
    /// Namespaces, by name.
    pub namespaces: Vec<Arc<NamespaceObj>>,
}

/// Reads and caches a manifest directory.
#[derive(Debug)]
pub(crate) struct ManifestDir {
    dir: PathBuf,
    allocation: Allocation,
    /// Allocations in force, kept across re-reads.
    sticky: ipam::Sticky,
    files: BTreeMap<PathBuf, FileState>,
}

impl ManifestDir {
    /// A reader for `dir`; nothing is read yet.
    pub(crate) fn new(dir: impl Into<PathBuf>, allocation: Allocation) -> Self {
        let sticky = allocation.previous.clone();
        Self { dir: dir.into(), allocation, sticky, files: BTreeMap::new() }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads changed files and returns the merged objects.
    pub(crate) fn reload(&mut self) -> std::io::Result<Snapshot> {
        let present = manifest_files(&self.dir)?;
        self.files.retain(|path, _| {
            let keep = present.contains_key(path);
            if !keep {
                tracing::info!(file = %path.display(), "manifest removed");
            }
            keep
        });
        let changed: Vec<(PathBuf, Stamp)> = present
            .into_iter()
            .filter(|(path, stamp)| self.files.get(path).is_none_or(|f| f.stamp != *stamp))
            .collect();
        let bulk = changed.len() >= BULK_FILES;
        for ((path, stamp), parsed) in parse_all(changed) {
            let previous = self.files.remove(&path).and_then(|f| f.objects);
            let objects = match parsed {
                Ok(parsed) => Some(parsed),
                Err(err) => {
                    tracing::error!(
                        file = %path.display(),
                        "manifest {} skipped: {err}{}",
                        path.display(),
                        if previous.is_some() { " (keeping its last good content)" } else { "" }
                    );
                    previous
                }
            };
            self.files.insert(path, FileState { stamp, objects });
        }
        if bulk {
            crate::sys::trim_heap();
        }
        Ok(self.merge())
    }

    /// Combines every file's objects into one consistent view.
    fn merge(&mut self) -> Snapshot {
        let mut services: BTreeMap<ServiceKey, Arc<ServiceObj>> = BTreeMap::new();
        let mut slices: BTreeMap<(String, String), Arc<SliceObj>> = BTreeMap::new();
        let mut endpoints: BTreeMap<(String, String), &Endpoints> = BTreeMap::new();
        let mut pods: BTreeMap<(String, String), Arc<PodObj>> = BTreeMap::new();
        let mut namespaces: BTreeMap<(String, String), Arc<NamespaceObj>> = BTreeMap::new();
        for (path, state) in &self.files {
            let Some(parsed) = &state.objects else { continue };
            for svc in &parsed.services {
                let key = (svc.key.namespace.clone(), svc.key.name.clone());
                insert_unique(&mut services, svc.key.clone(), &key, Arc::clone(svc), "Service", path);
            }
            for slice in &parsed.slices {
                let key = (slice.namespace.to_string(), slice.name.to_string());
                insert_unique(&mut slices, key.clone(), &key, Arc::clone(slice), "EndpointSlice", path);
            }
            for ep in &parsed.endpoints {
                let key = key_of(&ep.metadata);
                insert_unique(&mut endpoints, key.clone(), &key, ep, "Endpoints", path);
            }
            for pod in &parsed.pods {
                let key = (pod.namespace.to_string(), pod.name.to_string());
                insert_unique(&mut pods, key.clone(), &key, Arc::clone(pod), "Pod", path);
            }
            for ns in &parsed.namespaces {
                let key = (String::new(), ns.name.to_string());
                insert_unique(&mut namespaces, key.clone(), &key, Arc::clone(ns), "Namespace", path);
            }
        }
        // Shared with the file cache: only Services that get an address or
        // a node port allocated are copied.
        let mut services: Vec<Arc<ServiceObj>> = services.into_values().collect();
        ipam::assign_cluster_ips(&mut services, &self.allocation.service_cidr, &mut self.sticky);
        node_ports::assign_node_ports(&mut services, &self.allocation.node_ports, &mut self.sticky);
        let mut slices: Vec<Arc<SliceObj>> = slices.into_values().collect();
        slices.extend(mirror::mirror_endpoints(&services, endpoints.into_values()));
        Snapshot {
            services,
            slices,
            pods: pods.into_values().collect(),
            namespaces: namespaces.into_values().collect(),
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_else(|| "default".to_owned()), meta.name.clone().unwrap_or_default())
}

/// Keeps the first definition of an object and reports duplicates by file.
fn insert_unique<K: Ord, T>(
    map: &mut BTreeMap<K, T>,
    key: K,
    name: &(String, String),
    obj: T,
    kind: &str,
    path: &Path,
) {
    if map.contains_key(&key) {
        tracing::warn!(
            file = %path.display(),
            "{kind} {}/{} is defined more than once; keeping the first definition (files are read in name order)",
            name.0,
            name.1
        );
        return;
    }
    map.insert(key, obj);
}

/// `*.yaml`, `*.yml` and `*.json` directly in `dir`, skipping hidden files
/// (editors and atomic writers use them for temporaries).
fn manifest_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_manifest = [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext));
        if name.starts_with('.') || !is_manifest {
            continue;
        }
        // Follow symlinks (ConfigMap volumes are symlinks into ..data).
        let Ok(meta) = fs::metadata(&path) else { continue };
        if !meta.is_file() {
            continue;
        }
        out.insert(path, Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() });
    }
    Ok(out)
}

/// Parses files on every CPU: YAML parsing dominates a cold start with
/// thousands of Services.
fn parse_all(files: Vec<(PathBuf, Stamp)>) -> Vec<((PathBuf, Stamp), Result<ParsedFile, ParseError>)> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(files.len().max(1));
    if workers <= 1 {
        return files
            .into_iter()
            .map(|f| {
                let parsed = read_and_parse(&f.0);
                (f, parsed)
            })
            .collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|f| (f.clone(), read_and_parse(&f.0))).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn read_and_parse(path: &Path) -> Result<ParsedFile, ParseError> {
    let text = fs::read_to_string(path).map_err(|e| ParseError::Read(e.to_string()))?;
    let parsed = parse_manifest(&text)?;
    for problem in &parsed.problems {
        tracing::error!(file = %path.display(), "manifest {}: {problem}", path.display());
    }
    Ok(parsed)
}
