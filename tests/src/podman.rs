//! The agent's OCI image, built by `deploy/image/build.sh` and run with
//! podman in the DaemonSet's shape (`deploy/base/30-daemonset.yaml`, read
//! through [`PodShape`]): privileged, host network, the host PID namespace
//! as `hostPID` says, exactly its hostPath volumes.
//!
//! How podman must be told to run here, and why:
//! - `--runtime runc`: crun refuses this machine's hybrid cgroup layout
//!   (cgroup v1 controllers beside a cgroup2 mount holding `hugetlb`);
//! - `--cgroup-manager cgroupfs --events-backend file`: no systemd;
//! - explicit `--ulimit`s: as root, podman asks for RLIMIT_NOFILE 1048576
//!   and its own RLIMIT_NPROC, and raising a hard limit needs
//!   CAP_SYS_RESOURCE, which this machine's capability bounding set lacks.
//!   The container gets the file limit the tests run with, and 4096
//!   processes (the agent runs a dozen threads).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{agent::destroy_pins, cmd, deployed::PodShape, names};

/// `podman` with the flags this machine needs (module docs).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
    c
}

/// An image built from the binary under test; removed on Drop.
#[derive(Debug)]
pub struct Image {
    /// `localhost/NAME:test`.
    pub reference: String,
    /// Its size, as podman reports it.
    pub size_bytes: u64,
}

impl Image {
    /// `deploy/image/build.sh BINARY REFERENCE` with the agent under test.
    pub fn build() -> Result<Self> {
        let script = crate::apiserver::deploy_dir().join("../image/build.sh");
        let reference = format!("localhost/{}:test", names::unique_name());
        let out = cmd::run(Command::new(&script).arg(crate::agent_bin()?).arg(&reference))?;
        let size_bytes = out.trim().parse().with_context(|| format!("build.sh printed {out:?}, not a size"))?;
        Ok(Self { reference, size_bytes })
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Err(e) = cmd::run(podman().args(["rmi", "-f", &self.reference])) {
            eprintln!("svc-tests: removing image {}: {e:#}", self.reference);
        }
    }
}

/// A container running `svc-agent ARGS` from an [`Image`]; Drop removes it
/// (SIGKILL), its pins and its log.
#[derive(Debug)]
pub struct AgentContainer {
    name: String,
    image: String,
    args: Vec<String>,
    /// Host directories mounted read-only at their own path (as a
    /// ConfigMap volume would be).
    mounts: Vec<PathBuf>,
    shape: PodShape,
    pin_dir: PathBuf,
}

impl AgentContainer {
    /// Starts `svc-agent ARGS --bpffs <pins>` in the DaemonSet's shape,
    /// plus `mounts` (read-only, at their own paths). Host paths in `args`
    /// are passed as they are: translate them with [`Self::container_path`].
    pub fn run(image: &Image, args: &[String], mounts: &[&Path]) -> Result<Self> {
        let shape = PodShape::from_daemonset()?;
        let name = names::unique_name();
        let pin_dir = Path::new(names::BPFFS).join(&name);
        let mounts = mounts.iter().map(|p| p.to_path_buf()).collect();
        let mut me = Self { name, image: image.reference.clone(), args: args.to_vec(), mounts, shape, pin_dir };
        me.start()?;
        Ok(me)
    }

    /// Where a host path appears inside the container.
    pub fn container_path(host: &Path) -> Result<PathBuf> {
        PodShape::from_daemonset()?
            .container_path(host)
            .with_context(|| format!("{} is on none of the DaemonSet's volumes", host.display()))
    }

    /// The pin directory (a host path, also the container's: bpffs is
    /// mounted at its own path).
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Starts (again) a container of this name.
    pub fn start(&mut self) -> Result<()> {
        let mut c = podman();
        c.args(["run", "-d", "--name", &self.name, "--privileged", "--network", "host"]);
        if self.shape.host_pid {
            c.args(["--pid", "host"]);
        }
        // SAFETY: getrlimit with a valid out-pointer.
        let mut files = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut files) } != 0 {
            bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
        }
        c.arg(format!("--ulimit=nofile={}:{}", files.rlim_max, files.rlim_max)).arg("--ulimit=nproc=4096:4096");
        for (host, at, read_only) in &self.shape.volumes {
            let ro = if *read_only { ":ro" } else { "" };
            c.arg("-v").arg(format!("{}:{}{ro}", host.display(), at.display()));
        }
        for dir in &self.mounts {
            c.arg("-v").arg(format!("{}:{}:ro", dir.display(), dir.display()));
        }
        c.arg(&self.image).args(&self.args).arg("--bpffs").arg(&self.pin_dir);
        cmd::run(&mut c)?;
        Ok(())
    }

    /// SIGKILLs and removes the container (its pins stay, as a crashed
    /// pod's do).
    pub fn kill(&self) -> Result<()> {
        cmd::run(podman().args(["rm", "--force", "--ignore", &self.name]))?;
        Ok(())
    }

    /// `podman exec NAME ARGS`: runs a command inside the container.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        cmd::run(podman().args(["exec", &self.name]).args(args))
    }

    /// The container's output so far.
    pub fn logs(&self) -> String {
        let out = podman().args(["logs", &self.name]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default()
    }
}

impl Drop for AgentContainer {
    fn drop(&mut self) {
        eprintln!("----- agent container log -----\n{}----- end -----", self.logs());
        if let Err(e) = self.kill() {
            eprintln!("svc-tests: removing container {}: {e:#}", self.name);
        }
        destroy_pins(&self.pin_dir);
    }
}
