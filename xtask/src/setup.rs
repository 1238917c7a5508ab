//! `cargo xtask setup`: makes a fresh machine of this project's kind able
//! to build and test, idempotently (a second run only checks).
//!
//! What and why (details in docs/toolchain.md):
//! - Debian packages: LLVM 22 (for bpf-linker), bpftool, iproute2, ...
//! - the `svc-bpf` rustup toolchain: Debian's rustc-web (LLVM 22) with its
//!   prebuilt `core` for bpfel-unknown-none, extracted (not installed: it
//!   conflicts with rustup) and linked into rustup. rustup's nightly has no
//!   rust-src here and cannot download one, and Debian's 1.96 library
//!   sources do not compile with that nightly;
//! - bpf-linker 0.13 built against LLVM 22;
//! - a bpffs mount at /sys/fs/bpf.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages the build and the tests need.
const PACKAGES: &[&str] = &[
    // bpf-linker links against LLVM 22 (same major as the BPF rustc).
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    // Debian's cargo (part of the BPF toolchain) needs libgit2.
    "libgit2-1.5",
    // Rewrites the extracted rustc's library search path.
    "patchelf",
    // Tests: network namespaces, veth, inspecting programs and maps.
    "iproute2",
    "bpftool",
    // Real clients in the tests: dig (UDP and TCP DNS, checks the reply's
    // source address) and curl.
    "bind9-dnsutils",
    "curl",
    // Bench: kube-proxy's iptables and nftables layouts as baselines, and
    // profiles of where time goes (software cpu-clock events; this machine
    // has no hardware counters).
    "iptables",
    "nftables",
    "linux-perf",
    // The agent's OCI image, built and run without a Docker daemon
    // (deploy/image/build.sh, tests/tests/image.rs). runc, not crun: crun
    // refuses this machine's hybrid cgroup layout.
    "podman",
    "runc",
    "ca-certificates",
];

/// The rustup toolchain name svc-agent's build.rs builds the programs with.
const BPF_TOOLCHAIN: &str = "svc-bpf";
/// Debian packages that make up that toolchain, all at one version.
const BPF_TOOLCHAIN_DEBS: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev", "libstd-rust-web-dev-bpf"];
/// LLVM major version shared by that rustc and bpf-linker.
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step.
pub(crate) fn setup() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup installs packages and mounts bpffs: run it as root");
    }
    let mut apt = Apt::default();
    apt.install(PACKAGES)?;
    bpf_toolchain(&mut apt)?;
    bpf_linker()?;
    // The Dockerfile's build stage cannot mount bpffs and needs none.
    if std::env::var_os("SVC_SETUP_SKIP_BPFFS").is_none() {
        mount_bpffs()?;
    }
    Ok(())
}

/// Builds (once, about 6 minutes) or reuses the cached kube-apiserver that
/// the Kubernetes-source tests run (scripts/apiserver/build.sh; it also
/// installs etcd). 0.2 s when cached.
pub(crate) fn apiserver() -> anyhow::Result<()> {
    cmd::run(&mut Command::new(cmd::workspace_root().join("scripts/apiserver/build.sh")))
        .context("building kube-apiserver for the Kubernetes-source tests (scripts/apiserver/build.sh)")
}

/// apt-get, with `update` run at most once and only when something is missing.
#[derive(Debug, Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> anyhow::Result<()> {
        if !self.updated {
            eprintln!("setup: apt-get update");
            cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        Ok(())
    }

    fn install(&mut self, packages: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.update()?;
        eprintln!("setup: apt-get install {}", missing.join(" "));
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/svc-dataplane")
}

/// Extracts Debian's rustc-web + prebuilt BPF `core` into the cache and
/// links it as the `svc-bpf` rustup toolchain.
fn bpf_toolchain(apt: &mut Apt) -> anyhow::Result<()> {
    let current = cache_dir().join("rust-bpf");
    if toolchain_ok(&current) {
        return link_toolchain(&current);
    }
    apt.update()?;
    let version = candidate_version("rustc-web")?;
    eprintln!("setup: extracting Debian rustc-web {version} (with BPF core) into {}", current.display());
    let work = cache_dir().join("rust-bpf-download");
    remove_if_present(&work);
    fs::create_dir_all(&work)?;
    let mut specs: Vec<String> = BPF_TOOLCHAIN_DEBS.iter().map(|p| format!("{p}={version}")).collect();
    // The host standard library's runtime package is named after the version.
    let std_runtime = output_line(
        Command::new("apt-cache").args(["depends", &format!("libstd-rust-web-dev={version}")]),
        "libstd-rust-web-1.",
    )?;
    specs.push(format!("{std_runtime}={version}"));
    cmd::run(Command::new("apt-get").current_dir(&work).arg("download").args(&specs))?;
    let staging = work.join("root");
    for deb in fs::read_dir(&work)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        }
    }
    let usr = staging.join("usr");
    for bin in ["rustc", "rustdoc"] {
        // Debian's binaries find librustc_driver through the system's
        // library path; ours lives beside them.
        cmd::run(
            Command::new("patchelf")
                .args(["--set-rpath", "$ORIGIN/../lib/x86_64-linux-gnu"])
                .arg(usr.join("bin").join(bin)),
        )?;
    }
    remove_if_present(&current);
    fs::rename(&usr, &current).with_context(|| format!("moving the toolchain to {}", current.display()))?;
    remove_if_present(&work);
    if !toolchain_ok(&current) {
        bail!("the extracted toolchain in {} does not work (see above)", current.display());
    }
    link_toolchain(&current)
}

fn toolchain_ok(dir: &Path) -> bool {
    let rustc = dir.join("bin/rustc");
    let has_bpf_core = dir.join("lib/rustlib/bpfel-unknown-none/lib").is_dir();
    let version = Command::new(&rustc).arg("-vV").output();
    has_bpf_core
        && version.is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!("LLVM version: {LLVM_MAJOR}."))
        })
}

fn link_toolchain(dir: &Path) -> anyhow::Result<()> {
    let link = PathBuf::from(std::env::var_os("RUSTUP_HOME").unwrap_or_else(|| {
        std::env::var_os("HOME").map_or_else(|| "/root/.rustup".into(), |h| PathBuf::from(h).join(".rustup").into())
    }))
    .join("toolchains")
    .join(BPF_TOOLCHAIN);
    if fs::canonicalize(&link).ok() == fs::canonicalize(dir).ok() {
        return Ok(());
    }
    cmd::run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN]).arg(dir))
}

fn candidate_version(package: &str) -> anyhow::Result<String> {
    let policy = cmd::output(Command::new("apt-cache").args(["policy", package]))?;
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_owned)
        .with_context(|| format!("no installable version of {package} in the apt sources"))
}

fn output_line(cmd: &mut Command, needle: &str) -> anyhow::Result<String> {
    let out = cmd::output(cmd)?;
    out.split_whitespace()
        .find(|w| w.starts_with(needle))
        .map(|w| w.trim_start_matches(['<', '|']).trim_end_matches('>').to_owned())
        .with_context(|| format!("{cmd:?} does not mention {needle}"))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    eprintln!("setup: cargo install bpf-linker@{BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR}, about 90 s)");
    cmd::run(
        cmd::cargo()
            // Without it bpf-linker's build script finds LLVM 14 first.
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .args(["install", "--locked", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--no-default-features"])
            .args(["--features", &format!("llvm-{LLVM_MAJOR}")]),
    )
}

fn mount_bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at /sys/fs/bpf");
    fs::create_dir_all("/sys/fs/bpf")?;
    cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Removes a directory tree that may not exist (a leftover of an
/// interrupted setup, or nothing).
fn remove_if_present(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("xtask: removing {}: {e}", dir.display());
    }
}
