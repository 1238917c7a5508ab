//! The real `svc-agent`, run against a test's manifest dir and cgroup with
//! its own pin dir. Drop kills it, runs `svc-agent cleanup` and removes the
//! pin dir; it prints the agent's log to stderr, which libtest shows only
//! when the test fails.

use std::{
    ffi::OsString,
    fs::File,
    io::Write as _,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::{
    Cgroup, ManifestDir, bins, cmd,
    deployed::{Deployed, PodShape},
    names,
};

/// The line the agent logs once its source is programmed (docs/cli.md).
pub const IN_SYNC: &str = "dataplane in sync";

/// One entry of `status -o json`'s `frontends` (docs/cli.md).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Frontend {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub port_name: String,
    pub kind: String,
    /// `all`, or `outside` for a frontend only clients outside the node
    /// get (externalTrafficPolicy: Local).
    #[serde(default)]
    pub scope: String,
    pub address: String,
    pub protocol: String,
    #[serde(default)]
    pub backends: Vec<String>,
}

impl Frontend {
    /// `address` parsed; `None` if the agent printed something else.
    pub fn addr(&self) -> Option<SocketAddrV4> {
        self.address.parse().ok()
    }
}

/// One entry of `status -o json`'s `affinity` (docs/cli.md): which backend
/// a client network namespace is pinned to for one service port.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AffinityEntry {
    pub netns_cookie: u64,
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub port_name: String,
    pub backend: String,
    pub idle_seconds: f64,
}

#[derive(Debug)]
pub struct Agent {
    bin: PathBuf,
    args: Vec<OsString>,
    pin_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Length of the log when the current process was started: waits look
    /// only at what this run logged.
    start_offset: usize,
    /// The DaemonSet-shaped launcher `bin` points at, if any (kept for the
    /// agent's lifetime; dropped after it).
    _pod: Option<Deployed>,
}

impl Agent {
    /// `svc-agent run --source DIR --cgroup CGROUP --bpffs PINDIR
    /// --service-cidr 10.96.0.0/16 --node-name test-node`, run as the
    /// DaemonSet runs it ([`Deployed`]); `status` and `cleanup` too.
    pub fn start(source: &ManifestDir, cgroup: &Cgroup) -> Result<Self> {
        Self::start_with_args(source, cgroup, &[])
    }

    /// As [`Self::start`], with `extra` appended to the command line.
    pub fn start_with_args(source: &ManifestDir, cgroup: &Cgroup, extra: &[&str]) -> Result<Self> {
        let pod = Deployed::new(&bins::agent_bin()?, &[source.path()])?;
        Self::start_in(pod, source, cgroup, extra)
    }

    /// As [`Self::start_with_args`], in a given pod shape.
    pub fn start_in_shape(source: &ManifestDir, cgroup: &Cgroup, shape: PodShape) -> Result<Self> {
        let pod = Deployed::with_shape(&bins::agent_bin()?, &[source.path()], shape)?;
        Self::start_in(pod, source, cgroup, &[])
    }

    fn start_in(pod: Deployed, source: &ManifestDir, cgroup: &Cgroup, extra: &[&str]) -> Result<Self> {
        let bin = pod.path();
        let name = names::unique_name();
        let pin_dir = Path::new(names::BPFFS).join(&name);
        let log_path = Path::new(names::TMP_DIR).join(format!("{name}-agent.log"));
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--source".into(),
            source.path().into(),
            "--cgroup".into(),
            cgroup.path().into(),
            "--bpffs".into(),
            pin_dir.clone().into(),
            "--service-cidr".into(),
            "10.96.0.0/16".into(),
            "--node-name".into(),
            "test-node".into(),
            // This agent shares the machine's network namespace: its TC
            // programs must never touch the machine's own devices.
            "--devices".into(),
            "none".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        let mut agent = Self { bin, args, pin_dir, log_path, child: None, start_offset: 0, _pod: Some(pod) };
        agent.spawn()?;
        Ok(agent)
    }

    /// `BIN run --cgroup CGROUP --bpffs PINDIR ARGS...`: `bin` is the agent
    /// binary or a launcher that execs it with the arguments it is given
    /// (e.g. inside a node's network namespace); `status` and `cleanup` run
    /// through it too. `args` name the source and everything else
    /// (`--source DIR|kube ...`, `--node-name`, ...).
    pub fn start_with(bin: PathBuf, cgroup: &Cgroup, args: &[OsString]) -> Result<Self> {
        let name = names::unique_name();
        let pin_dir = Path::new(names::BPFFS).join(&name);
        let log_path = Path::new(names::TMP_DIR).join(format!("{name}-agent.log"));
        let mut all: Vec<OsString> =
            vec!["run".into(), "--cgroup".into(), cgroup.path().into(), "--bpffs".into(), pin_dir.clone().into()];
        all.extend(args.iter().cloned());
        let mut agent = Self { bin, args: all, pin_dir, log_path, child: None, start_offset: 0, _pod: None };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("open {}", self.log_path.display()))?;
        self.start_offset = usize::try_from(log.metadata()?.len())?;
        // A launcher script runs through /bin/sh rather than being exec'd:
        // a script written moments ago can still be open for writing in a
        // child another test thread is forking (its fd lives until that
        // child's exec), and exec'ing it then fails with ETXTBSY.
        let mut command = if is_sh_script(&self.bin) {
            let mut sh = Command::new("/bin/sh");
            sh.arg(&self.bin);
            sh
        } else {
            Command::new(&self.bin)
        };
        command
            .args(&self.args)
            .env("RUST_LOG", "info,svc_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd::die_with_parent(&mut command);
        let child = command.spawn().with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The agent binary, or the launcher that runs it in its pod shape
    /// (`status` and `cleanup` go through it too).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The pins of this agent.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the agent process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn note(&self, text: &str) {
        if let Ok(mut f) = File::options().append(true).open(&self.log_path)
            && let Err(e) = writeln!(f, "=== svc-tests: {text} ===")
        {
            eprintln!("svc-tests: writing to {}: {e}", self.log_path.display());
        }
    }

    /// SIGKILL the agent and reap it (the pinned dataplane stays).
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("agent is not running");
        };
        child.kill().context("kill agent")?;
        child.wait().context("wait for agent")?;
        self.note("agent SIGKILLed");
        Ok(())
    }

    /// Starts the agent again with the same arguments, appending to the same
    /// log. The previous process must have been killed (or have exited).
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("restart: agent still running; kill() it first");
        }
        self.child = None;
        self.note("restarting agent");
        self.spawn()
    }

    /// As [`Self::restart`], with `extra` appended to the command line from
    /// now on.
    pub fn restart_with(&mut self, extra: &[&str]) -> Result<()> {
        self.args.extend(extra.iter().map(OsString::from));
        self.restart()
    }

    /// `svc-agent status --bpffs PINDIR -o json`.
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = cmd::run(Command::new(&self.bin).args(["status", "-o", "json", "--bpffs"]).arg(&self.pin_dir))?;
        serde_json::from_str(&out).with_context(|| format!("parse status -o json: {out}"))
    }

    /// `svc-agent status --bpffs PINDIR` (the table).
    pub fn status_table(&self) -> Result<String> {
        cmd::run(Command::new(&self.bin).args(["status", "--bpffs"]).arg(&self.pin_dir))
    }

    /// The `frontends` of [`Self::status_json`].
    pub fn frontends(&self) -> Result<Vec<Frontend>> {
        let status = self.status_json()?;
        let frontends = status.get("frontends").with_context(|| format!("status json has no `frontends`: {status}"))?;
        serde_json::from_value(frontends.clone()).with_context(|| format!("parse status frontends: {frontends}"))
    }

    /// The `affinity` entries of [`Self::status_json`].
    pub fn affinity(&self) -> Result<Vec<AffinityEntry>> {
        let status = self.status_json()?;
        let entries = status.get("affinity").with_context(|| format!("status json has no `affinity`: {status}"))?;
        serde_json::from_value(entries.clone()).with_context(|| format!("parse status affinity: {entries}"))
    }

    /// The `exempt_pods` of [`Self::status_json`], as `namespace/name`.
    pub fn exempt_pods(&self) -> Result<Vec<String>> {
        let status = self.status_json()?;
        let pods =
            status["exempt_pods"].as_array().with_context(|| format!("status json has no `exempt_pods`: {status}"))?;
        Ok(pods
            .iter()
            .map(|p| format!("{}/{}", p["namespace"].as_str().unwrap_or("?"), p["name"].as_str().unwrap_or("?")))
            .collect())
    }

    /// Entries in the pinned map `name`, as `svc-agent status` counts them.
    pub fn map_entries(&self, name: &str) -> Result<u64> {
        let status = self.status_json()?;
        let row = status["maps"].as_array().and_then(|rows| rows.iter().find(|r| r["name"].as_str() == Some(name)));
        row.and_then(|r| r["entries"].as_u64()).with_context(|| format!("no map {name} in {status}"))
    }

    /// Slot `slot` of the pinned per-CPU `SVC_SOCK_STATS`, summed over
    /// CPUs (read with bpftool, as an operator would).
    pub fn sock_stat(&self, slot: u32) -> Result<u64> {
        let path = self.pin_dir.join("maps").join(svc_common::names::SOCK_STATS);
        let out = cmd::run(Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&path))?;
        let dump: serde_json::Value = serde_json::from_str(&out).with_context(|| format!("bpftool dump: {out}"))?;
        let entry = dump
            .as_array()
            .and_then(|entries| entries.iter().find(|e| e["formatted"]["key"].as_u64() == Some(u64::from(slot))))
            .with_context(|| format!("no slot {slot} in {out}"))?;
        let values = entry["formatted"]["values"].as_array().with_context(|| format!("no per-CPU values: {entry}"))?;
        Ok(values.iter().filter_map(|v| v["value"].as_u64()).sum())
    }

    /// `svc-agent cleanup --bpffs PINDIR`.
    pub fn cleanup(&self) -> Result<()> {
        cmd::run(Command::new(&self.bin).arg("cleanup").arg("--bpffs").arg(&self.pin_dir))?;
        Ok(())
    }

    /// The whole log, all runs.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// What the current (or last) run logged.
    pub fn log_since_start(&self) -> String {
        let log = self.log();
        log.get(self.start_offset..).unwrap_or(&log).to_owned()
    }

    /// Waits until this run logs a line for which `pred` holds; returns it.
    /// Fails at once if the agent exits.
    pub fn wait_for_log_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let start = Instant::now();
        loop {
            let log = self.log_since_start();
            if let Some(line) = log.lines().find(|l| pred(l)) {
                return Ok(line.to_owned());
            }
            if !self.is_running() {
                bail!("agent exited before logging the expected line; log:\n{log}");
            }
            if start.elapsed() > timeout {
                bail!("agent did not log the expected line within {timeout:?}; log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until this run logs `substring`; returns the time it took.
    pub fn wait_for_log(&mut self, substring: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        self.wait_for_log_line(timeout, |l| l.contains(substring))
            .with_context(|| format!("waiting for {substring:?} in the agent log"))?;
        Ok(start.elapsed())
    }

    /// Waits until this run logs `dataplane in sync`.
    pub fn wait_in_sync(&mut self, timeout: Duration) -> Result<Duration> {
        self.wait_for_log(IN_SYNC, timeout)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            cmd::reap(&mut child);
        }
        // libtest shows captured stderr only for failing tests.
        eprintln!(
            "----- svc-agent log ({}) -----\n{}----- end of svc-agent log -----",
            self.log_path.display(),
            self.log()
        );
        destroy_pins(&self.pin_dir);
        if let Err(e) = std::fs::remove_file(&self.log_path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("svc-tests: removing {}: {e}", self.log_path.display());
        }
    }
}

/// `svc-agent cleanup --bpffs DIR` (if the agent binary is found), then
/// removes whatever is left of DIR. Best effort; failures are printed.
pub(crate) fn destroy_pins(dir: &Path) {
    if let Ok(bin) = bins::agent_bin()
        && let Err(e) = cmd::output(Command::new(bin).arg("cleanup").arg("--bpffs").arg(dir))
    {
        eprintln!("svc-tests: svc-agent cleanup --bpffs {}: {e}", dir.display());
    }
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        eprintln!("svc-tests: removing {}: {e}", dir.display());
    }
}

/// Whether `path` is a `#!/bin/sh` script (the harness's launchers).
fn is_sh_script(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 9];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && &head == b"#!/bin/sh"
}
