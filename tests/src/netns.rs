//! Named network namespaces (`ip netns`), removed with everything running in
//! them on Drop.

use std::{
    ffi::OsStr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{bins, cmd, names};

/// A named network namespace with `lo` up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new() -> Result<Self> {
        let name = names::unique_name();
        cmd::ip(&["netns", "add", &name])?;
        // From here on Drop removes it, also if the next step fails.
        let netns = Self { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`: configure this namespace without entering it.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }

    /// `ip netns exec NAME ARGS...`. Note that `ip netns exec` remounts /sys,
    /// so the program does not see the cgroup2 or bpffs mounts; use
    /// [`Self::testkit`] for clients that join a cgroup.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// `svc-testkit --netns NAME ARGS...`: the testkit enters the namespace
    /// itself (after joining a cgroup if asked).
    pub fn testkit<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Command> {
        let mut cmd = Command::new(bins::testkit_bin()?);
        cmd.args(["--netns", &self.name]).args(args);
        Ok(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}

/// Exact names of all named network namespaces (tests run in parallel, so
/// callers must not substring-match: `svct-1-1` is inside `svct-1-11`).
pub fn netns_names() -> Result<Vec<String>> {
    let out = cmd::ip(&["netns", "list"])?;
    // Lines look like "NAME" or "NAME (id: 3)".
    Ok(out.lines().filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect())
}

/// Kills every process in namespace `name`, then deletes it. Best effort;
/// failures are printed.
pub(crate) fn destroy(name: &str) {
    if let Err(e) = try_destroy(name) {
        eprintln!("svc-tests: removing netns {name}: {e:#}");
    }
}

fn pids(name: &str) -> Result<Vec<i32>> {
    let out = cmd::ip(&["netns", "pids", name])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

fn try_destroy(name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = pids(name)?;
        if live.is_empty() {
            break;
        }
        live.into_iter().for_each(cmd::kill9);
        if Instant::now() > deadline {
            bail!("processes still in netns {name} after 5 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    cmd::ip(&["netns", "del", name])?;
    Ok(())
}
