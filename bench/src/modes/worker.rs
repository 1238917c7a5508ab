//! The orchestrator's handle on a worker process (`svc-bench worker`).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cleanup::{self, Guard},
    modes::Ctx,
    netns::Netns,
    protocol::{Request, Response},
    sys,
};

/// A running worker; killed on drop.
#[derive(Debug)]
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _guard: Guard,
}

impl Worker {
    /// Starts a worker in `netns` (and in `cgroup`, joined before it enters
    /// the namespace) and waits until its backends listen.
    pub(crate) fn spawn(netns: &Netns, cgroup: Option<&Path>, ctx: &Ctx) -> Result<Self> {
        Self::spawn_with(netns, cgroup, ctx, false)
    }

    /// A worker that runs no backends (a client only).
    pub(crate) fn client(netns: &Netns, ctx: &Ctx) -> Result<Self> {
        Self::spawn_with(netns, None, ctx, true)
    }

    fn spawn_with(netns: &Netns, cgroup: Option<&Path>, ctx: &Ctx, client_only: bool) -> Result<Self> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .arg("--netns")
            .arg(netns.path())
            .args(["--client-cpu", &ctx.client_cpu.to_string(), "--server-cpu", &ctx.server_cpu.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(cg) = cgroup {
            cmd.arg("--cgroup").arg(cg);
        }
        if client_only {
            cmd.arg("--client-only");
        }
        sys::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().context("spawn worker")?;
        let guard = cleanup::register(cleanup::Resource::Process(child.id()));
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        let mut worker = Self { child, stdin, stdout, _guard: guard };
        match worker.read()? {
            Response::Ready => Ok(worker),
            other => bail!("worker in {} did not start: {other:?}", netns.name()),
        }
    }

    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `request` and waits for the answer.
    pub(crate) fn call(&mut self, request: &Request) -> Result<Response> {
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).context("worker stdin")?;
        self.stdin.flush()?;
        self.read()
    }

    fn read(&mut self) -> Result<Response> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.try_wait().ok().flatten();
            bail!("worker exited ({status:?})");
        }
        serde_json::from_str(&line).with_context(|| format!("bad worker answer {line}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
