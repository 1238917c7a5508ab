//! What the bench ran on, read from the machine (never typed in).

use std::process::Command;

use crate::{results::Machine, sys};

pub(crate) fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned()))
        .unwrap_or_default();
    let lscpu = sys::run(&mut Command::new("lscpu")).unwrap_or_default();
    let hypervisor = lscpu.lines().find_map(|l| l.strip_prefix("Hypervisor vendor:").map(|v| v.trim().to_owned()));
    let tools = [
        ("iptables", vec!["iptables", "--version"]),
        ("nft", vec!["nft", "--version"]),
        ("perf", vec!["perf", "--version"]),
        ("rustc", vec!["rustc", "--version"]),
    ]
    .into_iter()
    .map(|(name, cmd)| {
        let v = sys::run(Command::new(cmd[0]).args(&cmd[1..]))
            .map_or_else(|_| "not available".into(), |s| s.trim().to_owned());
        (name.to_owned(), v)
    })
    .collect();
    Machine {
        cpu_model,
        cpus: sys::online_cpus(),
        memory_mib,
        kernel: sys::read_sysctl("kernel/osrelease").unwrap_or_default(),
        os,
        hypervisor,
        tools,
        nf_conntrack_max: sys::read_sysctl("net/netfilter/nf_conntrack_max").ok(),
        ipvs_available: ipvs_available(),
        hw_counters: hw_counters(),
        agent_commit: sys::run(Command::new("git").args(["rev-parse", "HEAD"]))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()),
        // Tracked files changed, or untracked ones not ignored: the numbers
        // belong to no commit.
        dirty: sys::run(Command::new("git").args(["status", "--porcelain"])).ok().map(|s| !s.trim().is_empty()),
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
    }
}

/// The first three fields of /proc/loadavg.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// IPVS needs CONFIG_IP_VS: present if the proc file exists or the module loads.
fn ipvs_available() -> bool {
    std::path::Path::new("/proc/net/ip_vs").exists()
        || Command::new("modprobe").args(["-q", "ip_vs"]).status().is_ok_and(|s| s.success())
}

/// Whether `perf stat -e instructions` counts anything (no PMU in most VMs).
fn hw_counters() -> bool {
    Command::new("perf").args(["stat", "-x,", "-e", "instructions", "true"]).output().is_ok_and(|o| {
        let err = String::from_utf8_lossy(&o.stderr);
        o.status.success() && !err.contains("not supported") && !err.contains("not counted")
    })
}
