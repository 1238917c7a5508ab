//! Facts about the host the userspace crates (agent, tests, bench) all
//! need, found one way.

use std::{io, path::PathBuf};

/// The cgroup v2 mount point, from /proc/mounts: `/sys/fs/cgroup` on a
/// unified host, `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    cgroup2_mount_in(&mounts)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup2 file system in /proc/mounts"))
}

/// The first cgroup2 mount point in a /proc/mounts text.
pub fn cgroup2_mount_in(mounts: &str) -> Option<&str> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then_some(dir)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_unified_hierarchy_on_hybrid_hosts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(super::cgroup2_mount_in(hybrid), Some("/sys/fs/cgroup/unified"));
        assert_eq!(super::cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
    }
}
