//! A child cgroup v2 directory per test: the agent attaches its programs to
//! it and the test's clients join it. Never the root cgroup.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, names};

/// The cgroup v2 mount point, found as the agent finds it.
pub fn cgroup2_mount() -> Result<PathBuf> {
    svc_common::host::cgroup2_mount().context("finding the cgroup v2 mount")
}

/// A child of the cgroup v2 root. Drop kills its processes and removes it.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    /// Path relative to the cgroup2 mount, as /proc/PID/cgroup shows it.
    relative: String,
}

impl Cgroup {
    pub fn new() -> Result<Self> {
        let root = cgroup2_mount()?;
        let name = names::unique_name();
        let path = root.join(&name);
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path, relative: format!("/{name}") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup's path as `/proc/PID/cgroup` prints it (`0::<relative>`).
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// A descendant at `relative` (intermediate directories created too),
    /// e.g. a pod's cgroup as kubelet lays it out. Drop removes it; the
    /// directories above it go with this cgroup.
    pub fn child(&self, relative: &str) -> Result<Self> {
        let path = self.path.join(relative);
        std::fs::create_dir_all(&path).with_context(|| format!("mkdir -p {}", path.display()))?;
        Ok(Self { path, relative: format!("{}/{relative}", self.relative) })
    }

    /// Moves process `pid` into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).with_context(|| format!("write {pid} to {}", procs.display()))
    }

    /// The BPF programs attached to this cgroup, as `bpftool -j cgroup show`
    /// lists them (each object has at least `id`, `attach_type`, `name`).
    pub fn attached_programs(&self) -> Result<Vec<serde_json::Value>> {
        let out = cmd::run(Command::new("bpftool").args(["-j", "cgroup", "show"]).arg(&self.path))?;
        // bpftool prints nothing at all for a cgroup without programs.
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).with_context(|| format!("parse bpftool output: {out}"))
    }

    /// The pids currently in this cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        pids(&self.path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        destroy(&self.path);
    }
}

fn pids(path: &Path) -> Result<Vec<i32>> {
    let procs = path.join("cgroup.procs");
    let text = std::fs::read_to_string(&procs).with_context(|| format!("read {}", procs.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills every process in the cgroup at `path`, waits until it is empty and
/// removes it. Best effort; failures are printed.
pub(crate) fn destroy(path: &Path) {
    if let Err(e) = try_destroy(path) {
        eprintln!("svc-tests: removing cgroup {}: {e:#}", path.display());
    }
}

fn try_destroy(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    // Child cgroups first (the agent's self-check makes one per probe; a
    // killed agent can leave it behind).
    for entry in std::fs::read_dir(path).with_context(|| format!("read {}", path.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            try_destroy(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = pids(path)?;
        if live.is_empty() {
            break;
        }
        live.into_iter().for_each(cmd::kill9);
        if Instant::now() > deadline {
            bail!("processes still in the cgroup after 5 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    // rmdir can fail briefly with EBUSY while killed tasks finish exiting.
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e).context("rmdir"),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}
