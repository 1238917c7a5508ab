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

mod head_first;
pub(crate) mod ipam;
mod merge;
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

pub(crate) use parse::{ParseError, ParsedFile, parse_manifest};
pub(crate) use watch::spawn;

use merge::Merged;

use crate::{
    model::{NamespaceObj, PodObj, ServiceCidrs, ServiceObj, SliceObj},
    source::Change,
};

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
    /// The path, as the merged definitions hold it.
    path: Arc<Path>,
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

/// What one re-read changed, as the source hands it on.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Services (with addresses and node ports allocated).
    pub services: Vec<Change<Arc<ServiceObj>>>,
    /// EndpointSlices, including those mirrored from Endpoints.
    pub slices: Vec<Change<Arc<SliceObj>>>,
    /// Every Pod, if any changed (few objects: resent whole).
    pub pods: Option<Vec<Arc<PodObj>>>,
    /// Every Namespace, if any changed.
    pub namespaces: Option<Vec<Arc<NamespaceObj>>>,
}

impl Changes {
    /// Whether nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && self.pods.is_none() && self.namespaces.is_none()
    }
}

/// Reads and caches a manifest directory.
#[derive(Debug)]
pub(crate) struct ManifestDir {
    dir: PathBuf,
    allocation: Allocation,
    /// Allocations in force, kept across re-reads.
    sticky: ipam::Sticky,
    files: BTreeMap<PathBuf, FileState>,
    merged: Merged,
    /// The Services as handed on: addresses and node ports allocated.
    services: Vec<Arc<ServiceObj>>,
    /// EndpointSlices mirrored from Endpoints.
    mirrored: Vec<Arc<SliceObj>>,
}

impl ManifestDir {
    /// A reader for `dir`; nothing is read yet.
    pub(crate) fn new(dir: impl Into<PathBuf>, allocation: Allocation) -> Self {
        let sticky = allocation.previous.clone();
        Self {
            dir: dir.into(),
            allocation,
            sticky,
            files: BTreeMap::new(),
            merged: Merged::new(),
            services: Vec::new(),
            mirrored: Vec::new(),
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads changed files and returns what changed. Only the changed
    /// files' objects are merged again; what is derived from every Service
    /// (allocations, mirrored Endpoints) is recomputed only when a Service
    /// or an Endpoints changed.
    pub(crate) fn reload(&mut self) -> std::io::Result<Changes> {
        let present = manifest_files(&self.dir)?;
        let gone: Vec<PathBuf> = self.files.keys().filter(|p| !present.contains_key(*p)).cloned().collect();
        Ok(self.merge_files(gone, present))
    }

    /// Re-reads only `paths` (manifest files of the directory that an
    /// event named), without listing the directory: a re-read costs the
    /// files that changed, not every file there.
    pub(crate) fn reload_files(&mut self, paths: impl IntoIterator<Item = PathBuf>) -> Changes {
        let (mut present, mut gone) = (BTreeMap::new(), Vec::new());
        for path in paths {
            match stamp_of(&path) {
                Some(stamp) => {
                    present.insert(path, stamp);
                }
                None if self.files.contains_key(&path) => gone.push(path),
                None => {}
            }
        }
        self.merge_files(gone, present)
    }

    /// Merges the files that are `gone` and those `present` whose stamp
    /// changed.
    fn merge_files(&mut self, gone: Vec<PathBuf>, present: BTreeMap<PathBuf, Stamp>) -> Changes {
        for path in gone {
            tracing::info!(file = %path.display(), "manifest removed");
            if let Some(state) = self.files.remove(&path) {
                self.merged.replace(&state.path, state.objects.as_ref(), None);
            }
        }
        let changed: Vec<(PathBuf, Stamp)> = present
            .into_iter()
            .filter(|(path, stamp)| self.files.get(path).is_none_or(|f| f.stamp != *stamp))
            .collect();
        let bulk = changed.len() >= BULK_FILES;
        for ((path, stamp), parsed) in parse_all(changed) {
            let previous = self.files.remove(&path);
            let shared = previous.as_ref().map_or_else(|| merge::shared_path(&path), |f| Arc::clone(&f.path));
            let previous = previous.and_then(|f| f.objects);
            let objects = match parsed {
                Ok(parsed) => {
                    self.merged.replace(&shared, previous.as_ref(), Some(&parsed));
                    Some(parsed)
                }
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
            self.files.insert(path, FileState { stamp, path: shared, objects });
        }
        if bulk {
            crate::sys::trim_heap();
        }
        self.changes()
    }

    /// Hands on what the definitions' changes mean.
    fn changes(&mut self) -> Changes {
        let mut out = Changes::default();
        let services_changed = !self.merged.services.take_changes().is_empty();
        if services_changed {
            // Allocation looks at every Service (an explicit address may
            // be taken); unchanged ones are shared, so the delta is cheap.
            let mut services = self.merged.services.in_force_sorted();
            ipam::assign_cluster_ips(&mut services, &self.allocation.service_cidr, &mut self.sticky);
            node_ports::assign_node_ports(&mut services, &self.allocation.node_ports, &mut self.sticky);
            out.services = merge::delta(&self.services, &services, |s| (&s.key.namespace, &s.key.name));
            self.services = services;
        }
        out.slices = merge::as_source_changes(self.merged.slices.take_changes());
        let endpoints_changed = !self.merged.endpoints.take_changes().is_empty();
        if services_changed || endpoints_changed {
            let endpoints = self.merged.endpoints.in_force_sorted();
            let mirrored = mirror::mirror_endpoints(&self.services, endpoints.iter().map(|e| &**e));
            out.slices.extend(merge::delta(&self.mirrored, &mirrored, |s| (&s.namespace, &s.name)));
            self.mirrored = mirrored;
        }
        if !self.merged.pods.take_changes().is_empty() {
            out.pods = Some(self.merged.pods.in_force_sorted());
        }
        if !self.merged.namespaces.take_changes().is_empty() {
            out.namespaces = Some(self.merged.namespaces.in_force_sorted());
        }
        out
    }

    /// Every object in force, as of the last [`Self::reload`].
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut slices = self.merged.slices.in_force_sorted();
        slices.extend(self.mirrored.iter().cloned());
        Snapshot {
            services: self.services.clone(),
            slices,
            pods: self.merged.pods.in_force_sorted(),
            namespaces: self.merged.namespaces.in_force_sorted(),
        }
    }
}

/// Whether a file name is one the source reads: `*.yaml`, `*.yml`,
/// `*.json`, not hidden.
fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext))
}

/// `*.yaml`, `*.yml` and `*.json` directly in `dir`, skipping hidden files
/// (editors and atomic writers use them for temporaries).
fn manifest_files(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Stamp>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !is_manifest_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        if let Some(stamp) = stamp_of(&path) {
            out.insert(path, stamp);
        }
    }
    Ok(out)
}

/// The stamp of a regular file (following symlinks: ConfigMap volumes are
/// symlinks into `..data`), `None` if there is none.
fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok().filter(fs::Metadata::is_file)?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
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

#[cfg(test)]
mod tests;
