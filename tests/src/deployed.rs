//! The agent as the DaemonSet runs it (`deploy/base/30-daemonset.yaml`): its
//! own mount namespace whose root holds nothing but the image's files (the
//! host's /usr and /etc/ssl, read-only, stand in for them: the image is
//! Debian's slim one with `ca-certificates`, see the Dockerfile), a fresh /proc and /sys, the
//! host's /dev (a privileged container gets the host's devices), and
//! exactly the DaemonSet's hostPath volumes at their mount paths; the host
//! PID namespace only if the DaemonSet says `hostPID: true`, else its own;
//! the host network (`hostNetwork: true`). Paths the tests give it are
//! translated as the DaemonSet's mounts place them (the host cgroup
//! hierarchy is at `/host/sys/fs/cgroup`), and the test's manifest
//! directory is mounted at its own path, like a ConfigMap volume.
//!
//! The shape is read from the DaemonSet file itself, so a change there
//! changes what every test runs under.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde_yaml::Value;

use crate::{apiserver::deploy_dir, cmd, names};

/// What the DaemonSet gives the agent's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodShape {
    /// `spec.hostPID`.
    pub host_pid: bool,
    /// hostPath volumes: (host path, mount path, read-only).
    pub volumes: Vec<(PathBuf, PathBuf, bool)>,
}

impl PodShape {
    /// Read from `deploy/base/30-daemonset.yaml`.
    pub fn from_daemonset() -> Result<Self> {
        let path = deploy_dir().join("30-daemonset.yaml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let ds: Value = serde_yaml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let spec = &ds["spec"]["template"]["spec"];
        let host_pid = spec["hostPID"].as_bool().unwrap_or(false);
        let container = &spec["containers"][0];
        let mut volumes = Vec::new();
        for mount in container["volumeMounts"].as_sequence().into_iter().flatten() {
            let name = mount["name"].as_str().context("volumeMount without a name")?;
            let volume = spec["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"].as_str() == Some(name))
                .with_context(|| format!("no volume {name}"))?;
            let Some(host) = volume["hostPath"]["path"].as_str() else {
                bail!("volume {name} is not a hostPath: the test shape knows only hostPath volumes");
            };
            let at = mount["mountPath"].as_str().context("volumeMount without mountPath")?;
            volumes.push((host.into(), at.into(), mount["readOnly"].as_bool().unwrap_or(false)));
        }
        Ok(Self { host_pid, volumes })
    }

    /// Where a host path appears inside the container, through the
    /// volumes (the longest matching host path wins).
    pub fn container_path(&self, host: &Path) -> Option<PathBuf> {
        self.volumes
            .iter()
            .filter_map(|(src, dst, _)| host.strip_prefix(src).ok().map(|rest| (src, dst.join(rest))))
            .max_by_key(|(src, _)| src.as_os_str().len())
            .map(|(_, path)| path)
    }
}

/// A launcher script that runs `svc-agent ARGS...` in the DaemonSet's
/// shape; removed with its directory on Drop.
#[derive(Debug)]
pub struct Deployed {
    dir: PathBuf,
    shape: PodShape,
}

impl Deployed {
    /// The DaemonSet's shape, with `extra_dirs` (the manifest directory)
    /// mounted at their own paths.
    pub fn new(agent: &Path, extra_dirs: &[&Path]) -> Result<Self> {
        Self::with_shape(agent, extra_dirs, PodShape::from_daemonset()?)
    }

    /// As [`Self::new`], in another shape (e.g. without `hostPID`, to show
    /// what the agent does when it lacks something).
    pub fn with_shape(agent: &Path, extra_dirs: &[&Path], shape: PodShape) -> Result<Self> {
        let dir = Path::new(names::TMP_DIR).join(format!("{}-pod", names::unique_name()));
        std::fs::create_dir_all(dir.join("root")).with_context(|| format!("mkdir {}", dir.display()))?;
        let launcher = Self { dir, shape };
        let mut mounts = String::new();
        for (src, dst, ro) in &launcher.shape.volumes {
            mounts.push_str(&bind(src, dst, *ro));
        }
        for extra in extra_dirs {
            mounts.push_str(&bind(extra, extra, false));
        }
        // Paths the harness passes as arguments, as the container sees them.
        let mut rewrites = String::new();
        for (src, dst, _) in &launcher.shape.volumes {
            if src != dst {
                rewrites.push_str(&format!("    {}*) a={}\"${{a#{}}}\";;\n", quote(src), quote(dst), quote(src)));
            }
        }
        let pid = if launcher.shape.host_pid { "" } else { "--pid --fork --kill-child" };
        let script = format!(
            r#"#!/bin/sh
# svc-tests: svc-agent in the DaemonSet's shape (tests/src/deployed.rs).
exec unshare --mount --propagation private {pid} -- /bin/sh -c '
set -e
root=$1; shift
mount -t tmpfs -o mode=0755 svc-pod-root "$root"
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/usr" "$root/old"
ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"; ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"
mount --bind /usr "$root/usr"; mount -o remount,bind,ro "$root/usr"
mkdir -p "$root/etc/ssl"; mount --rbind /etc/ssl "$root/etc/ssl"; mount -o remount,bind,ro "$root/etc/ssl"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
{mounts}touch "$root/svc-agent"; mount --bind {agent} "$root/svc-agent"
cd "$root"; pivot_root . old; umount -l /old; rmdir /old
n=$#; i=0
while [ $i -lt $n ]; do
  a=$1; shift
  case $a in
{rewrites}  esac
  set -- "$@" "$a"; i=$((i+1))
done
exec /svc-agent "$@"' svc-pod {root} "$@"
"#,
            agent = quote(agent),
            root = quote(&launcher.dir.join("root")),
        );
        cmd::write_script(&launcher.path(), &script)?;
        Ok(launcher)
    }

    /// The launcher (use it as the agent binary).
    pub fn path(&self) -> PathBuf {
        self.dir.join("svc-agent-in-pod")
    }

    /// The shape it runs.
    pub fn shape(&self) -> &PodShape {
        &self.shape
    }

    /// Arguments as given, for [`crate::Agent::start_with`].
    pub fn args(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }
}

impl Drop for Deployed {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("svc-tests: removing {}: {e}", self.dir.display());
        }
    }
}

/// Shell lines that bind-mount `src` at `dst` inside the new root.
fn bind(src: &Path, dst: &Path, read_only: bool) -> String {
    let target = format!("\"$root\"{}", quote(dst));
    // Recursive, as container runtimes mount hostPath volumes (on a hybrid
    // host the cgroup v2 hierarchy is a submount of /sys/fs/cgroup).
    let mut lines = format!("mkdir -p {target}; mount --rbind {} {target}\n", quote(src));
    if read_only {
        lines.push_str(&format!("mount -o remount,bind,ro {target}\n"));
    }
    lines
}

/// `path` as a word of the script: test paths are plain (no blanks or
/// shell characters), which is checked rather than escaped, since the
/// inner script is itself single-quoted.
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(
        !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@:%,=".contains(c)),
        "test paths are plain: {text:?}"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_comes_from_the_daemonset() {
        let shape = PodShape::from_daemonset().unwrap();
        assert!(shape.volumes.iter().any(|(src, dst, _)| src == Path::new("/sys/fs/bpf") && dst == src));
        assert_eq!(
            shape.container_path(Path::new("/sys/fs/cgroup/svct-1")),
            Some(PathBuf::from("/host/sys/fs/cgroup/svct-1"))
        );
    }
}
