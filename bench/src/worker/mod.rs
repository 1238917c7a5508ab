//! `svc-bench worker`: one process per mode, living in that mode's netns
//! (and, for our dataplane, in the cgroup the agent attached to). It runs
//! the backends as threads and executes the orchestrator's requests, one
//! JSON line in, one JSON line out.
//!
//! A process rather than a thread because cgroup v2 membership is per
//! process: the eBPF programs apply to sockets created by processes in the
//! cgroup, and the direct and netfilter modes must run outside it.

mod backends;
pub(crate) mod client;

use std::{
    io::{BufRead as _, Write as _},
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    cgroup,
    protocol::{Request, Response},
    sys,
};

/// Options of `svc-bench worker` (set by the orchestrator).
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// /run/netns/NAME to enter.
    #[arg(long)]
    netns: PathBuf,
    /// cgroup v2 directory to join first.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// CPU for the client loop.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// CPU for the accept loop.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// Run no backends: a client only (the north-south bench's outside
    /// client, whose namespace holds no endpoint addresses).
    #[arg(long)]
    client_only: bool,
}

pub(crate) fn main(args: &WorkerArgs) -> Result<()> {
    // Before any thread exists: threads inherit the namespace. setns(2)
    // leaves the host's /sys (and so the cgroup files) visible, unlike
    // `ip netns exec`.
    sys::enter_netns(&args.netns)?;
    // The backends' sockets are created before joining the cgroup: a
    // socket belongs to its creator's cgroup at creation, so the backends
    // stay outside the eBPF programs' reach (the UDP echo's replies would
    // otherwise run sendmsg4 and blur its per-call cost); only the
    // client's sockets, created after joining, are translated.
    let (recorder, recorded) = if args.client_only {
        backends::none()
    } else {
        backends::start(args.server_cpu).context("starting the backends")?
    };
    if let Some(cg) = &args.cgroup {
        cgroup::join(cg)?;
    }
    sys::pin_to_cpu(args.client_cpu);

    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    reply(&mut stdout, &Response::Ready)?;
    for line in stdin.lock().lines() {
        let line = line?;
        let request: Request = serde_json::from_str(&line).with_context(|| format!("bad request {line}"))?;
        let response = match request {
            Request::Quit => return Ok(()),
            Request::Verify(plan) => match client::verify(&plan, &recorder, &recorded) {
                Ok(()) => Response::Verified,
                Err(e) => Response::Error(format!("{e:#}")),
            },
            Request::Connect(plan) => Response::Connect(client::connect_loop(&plan)),
            Request::Bulk { target, millis } => match client::bulk(target, millis) {
                Ok(stats) => Response::Bulk(stats),
                Err(e) => Response::Error(format!("{e:#}")),
            },
            Request::Udp { target, count } => match client::udp_round_trips(target, count) {
                Ok(()) => Response::Done,
                Err(e) => Response::Error(format!("{e:#}")),
            },
            Request::Record => {
                while recorded.try_recv().is_ok() {}
                recorder.set(true);
                Response::Done
            }
            Request::Recorded { count } => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let mut reached = Vec::new();
                while reached.len() < count as usize {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match recorded.recv_timeout(left) {
                        Ok(addr) => reached.push(addr),
                        Err(_) => break,
                    }
                }
                recorder.set(false);
                Response::Reached(reached)
            }
        };
        reply(&mut stdout, &response)?;
    }
    Ok(())
}

fn reply(out: &mut std::io::Stdout, response: &Response) -> Result<()> {
    let mut line = serde_json::to_string(response)?;
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}
