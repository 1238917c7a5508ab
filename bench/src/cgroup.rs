//! A child cgroup v2 directory for the agent to attach to (never the root:
//! only the bench's own client process joins it).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cleanup::{self, Guard};

/// The cgroup v2 mount point, found as the agent finds it.
pub(crate) fn cgroup2_mount() -> Result<PathBuf> {
    svc_common::host::cgroup2_mount().context("finding the cgroup v2 mount")
}

/// A child cgroup, removed (its processes killed) on drop.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
    _guard: Guard,
}

impl Cgroup {
    pub(crate) fn create(name: &str) -> Result<Self> {
        let path = cgroup2_mount()?.join(name);
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { _guard: cleanup::register(cleanup::Resource::Cgroup(path.clone())), path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Moves the calling process into the cgroup at `path`.
pub(crate) fn join(path: &Path) -> Result<()> {
    let procs = path.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).with_context(|| format!("write {}", procs.display()))
}
