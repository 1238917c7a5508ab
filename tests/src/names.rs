//! Unique object names (`svct-<pid>-<n>`) and removal of objects that a
//! killed earlier run left behind.

use std::{
    path::Path,
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::{agent, cgroup, cmd, netns};

/// Prefix of every object the harness creates.
pub(crate) const PREFIX: &str = "svct-";

/// Directory for temp files and dirs (manifest dirs, agent logs).
pub(crate) const TMP_DIR: &str = "/tmp";

/// Directory under which agents get their pin dirs.
pub(crate) const BPFFS: &str = "/sys/fs/bpf";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A name no other object of this or any live test process has:
/// `svct-<pid>-<n>`. The first call in a process also runs [`sweep_stale`].
pub fn unique_name() -> String {
    SWEEP.call_once(sweep_stale);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The pid encoded in a harness name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// True when `name` is a harness name whose process no longer runs.
fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !cmd::pid_alive(pid))
}

/// Removes leftover `svct-<pid>-*` pin dirs, network namespaces, cgroups and
/// temp files whose `<pid>` is not a running process. Best effort: failures
/// are printed, not returned, so a sweep never hides the real test result.
pub fn sweep_stale() {
    // Pins first: they may keep programs attached to the stale cgroups.
    for name in dir_names(Path::new(BPFFS)) {
        if is_stale(&name) {
            agent::destroy_pins(&Path::new(BPFFS).join(&name));
        }
    }
    match netns::netns_names() {
        Ok(names) => names.iter().filter(|n| is_stale(n)).for_each(|n| netns::destroy(n)),
        Err(e) => eprintln!("svc-tests sweep: {e:#}"),
    }
    match cgroup::cgroup2_mount() {
        Ok(root) => {
            for name in dir_names(&root) {
                if is_stale(&name) {
                    cgroup::destroy(&root.join(&name));
                }
            }
        }
        Err(e) => eprintln!("svc-tests sweep: {e:#}"),
    }
    for name in dir_names(Path::new(TMP_DIR)) {
        if is_stale(&name) {
            let path = Path::new(TMP_DIR).join(&name);
            let res = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = res {
                eprintln!("svc-tests sweep: remove {}: {e}", path.display());
            }
        }
    }
}

/// Names of the entries of `dir` that start with [`PREFIX`].
fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_harness_names_only() {
        assert_eq!(owner_pid("svct-123-4"), Some(123));
        assert_eq!(owner_pid("svct-123-4-agent.log"), Some(123));
        assert_eq!(owner_pid("svc"), None);
        assert_eq!(owner_pid("svct-x-1"), None);
    }
}
