//! The real agent (release build), run with its own pin directory against
//! a manifest directory; its stderr is read line by line and each line is
//! timestamped on arrival, so "started -> `dataplane in sync`" is measured
//! from the outside without touching the agent.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cleanup::{self, Guard},
    sys,
};

/// The line the agent logs once its source is programmed (docs/cli.md).
pub(crate) const IN_SYNC: &str = "dataplane in sync";

/// How the agent is started.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) bin: PathBuf,
    pub(crate) source: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) bpffs: PathBuf,
    pub(crate) extra: Vec<String>,
    /// `--devices` (the socket-path measurements: `none`, the agent then
    /// leaves the machine's devices untouched).
    pub(crate) devices: String,
    /// Run in this network namespace (`/run/netns/NAME`) instead of the
    /// bench's (the north-south bench: the node's namespace).
    pub(crate) netns: Option<PathBuf>,
    /// Run under this wrapper (e.g. `perf record ... --`).
    pub(crate) wrapper: Vec<OsString>,
}

/// A running agent; SIGKILLed and its pins cleaned up on drop.
#[derive(Debug)]
pub(crate) struct Agent {
    child: Child,
    pub(crate) started: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
    tail: Arc<Mutex<Vec<String>>>,
    pid: u32,
    _pins: Guard,
    _process: Guard,
}

impl Agent {
    pub(crate) fn start(cfg: &AgentConfig) -> Result<Self> {
        std::fs::create_dir_all(&cfg.bpffs).with_context(|| format!("mkdir {}", cfg.bpffs.display()))?;
        let pins = cleanup::register(cleanup::Resource::Pins { agent: cfg.bin.clone(), dir: cfg.bpffs.clone() });
        let mut cmd = if cfg.wrapper.is_empty() {
            Command::new(&cfg.bin)
        } else {
            let mut c = Command::new(&cfg.wrapper[0]);
            c.args(&cfg.wrapper[1..]).arg(&cfg.bin);
            c
        };
        cmd.arg("run")
            .arg("--source")
            .arg(&cfg.source)
            .arg("--cgroup")
            .arg(&cfg.cgroup)
            .arg("--bpffs")
            .arg(&cfg.bpffs)
            .arg("--service-cidr")
            .arg(format!("{},{}", crate::addressing::SERVICE_CIDR, crate::addressing::SERVICE_CIDR6))
            .args(["--node-name", "bench-node"])
            .arg("--devices")
            .arg(&cfg.devices)
            // Its probe writes a transient frontend: the bench counts them.
            .args(["--self-check-interval", "0"])
            .args(&cfg.extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Held open until the child has exec'd (in_netns' contract).
        let netns = cfg
            .netns
            .as_ref()
            .map(|p| std::fs::File::open(p).with_context(|| format!("open {}", p.display())))
            .transpose()?;
        if let Some(ns) = &netns {
            sys::in_netns(&mut cmd, ns);
        }
        sys::die_with_parent(&mut cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawn {}", cfg.bin.display()))?;
        let pid = child.id();
        let process = cleanup::register(cleanup::Resource::Process(pid));
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, lines) = mpsc::channel();
        let tail = Arc::new(Mutex::new(Vec::new()));
        let tail_w = Arc::clone(&tail);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let now = Instant::now();
                let line = strip_ansi(&line);
                if let Ok(mut t) = tail_w.lock() {
                    t.push(line.clone());
                    if t.len() > 40 {
                        t.remove(0);
                    }
                }
                if tx.send((now, line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, started, lines, tail, pid, _pins: pins, _process: process })
    }

    /// The pid of the agent itself, also when it runs under a wrapper.
    pub(crate) fn agent_pid(&self) -> u32 {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid)).unwrap_or_default();
        children.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(self.pid)
    }

    /// Waits for a log line containing `needle`; returns when it arrived and the line.
    pub(crate) fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(Instant, String)> {
        let mut lines = self.wait_collect(needle, timeout)?;
        Ok(lines.pop().expect("wait_collect returns at least the matching line"))
    }

    /// Waits for a log line containing `needle`; returns every line read
    /// on the way, the matching one last.
    pub(crate) fn wait_collect(&mut self, needle: &str, timeout: Duration) -> Result<Vec<(Instant, String)>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok((at, line)) => {
                    let found = line.contains(needle);
                    seen.push((at, line));
                    if found {
                        return Ok(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        bail!("agent exited ({status}) before logging {needle:?}; last lines:\n{}", self.tail());
                    }
                    if Instant::now() >= deadline {
                        bail!("agent did not log {needle:?} within {timeout:?}; last lines:\n{}", self.tail());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("agent closed its log before {needle:?}; last lines:\n{}", self.tail());
                }
            }
        }
    }

    /// Lines logged so far and not yet consumed by [`Self::wait_for`].
    pub(crate) fn drain(&mut self) -> Vec<(Instant, String)> {
        self.lines.try_iter().collect()
    }

    /// The `apply_us` of every batch logged since the last drain, in ms.
    pub(crate) fn drain_apply_ms(&mut self) -> Vec<f64> {
        self.drain()
            .iter()
            .filter(|(_, line)| line.contains(IN_SYNC))
            .filter_map(|(_, line)| field(line, "apply_us"))
            .map(|us| us as f64 / 1e3)
            .collect()
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn tail(&self) -> String {
        self.tail.lock().map(|t| t.join("\n")).unwrap_or_default()
    }

    /// SIGTERM to the agent (a wrapper like perf then writes its data and
    /// exits with it), wait up to `timeout`, SIGKILL if needed.
    pub(crate) fn stop(mut self, timeout: Duration) {
        sys::kill(self.agent_pid(), libc::SIGTERM);
        let done = sys::wait_until(timeout, Duration::from_millis(20), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !done {
            sys::kill(self.agent_pid(), libc::SIGKILL);
            reap(&mut self.child);
        } else if let Err(e) = self.child.wait() {
            eprintln!("bench: reaping the agent: {e}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Under a wrapper the agent is the wrapper's child: kill it first.
        let agent = self.agent_pid();
        if agent != self.pid {
            sys::kill(agent, libc::SIGKILL);
        }
        reap(&mut self.child);
    }
}

/// Kills and reaps a child, best effort (it may have exited already).
fn reap(child: &mut Child) {
    if let Err(e) = child.kill()
        && e.kind() != std::io::ErrorKind::InvalidInput
    {
        eprintln!("bench: killing process {}: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("bench: reaping process {}: {e}", child.id());
    }
}

/// `key=value` field of a tracing line, as a number.
pub(crate) fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The pin directory for a run.
pub(crate) fn pin_dir(run_id: &str, what: &str) -> PathBuf {
    Path::new("/sys/fs/bpf").join(format!("{run_id}-{what}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_and_ansi() {
        let line = "\u{1b}[2m2026\u{1b}[0m INFO dataplane in sync services=12 frontends=14 apply_us=345";
        let clean = super::strip_ansi(line);
        assert!(clean.starts_with("2026 INFO"));
        assert_eq!(super::field(&clean, "apply_us"), Some(345));
        assert_eq!(super::field(&clean, "services"), Some(12));
        assert_eq!(super::field(&clean, "nope"), None);
    }
}
